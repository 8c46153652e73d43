//! The poll cycle: which hosts to ask for, in which batches, at what pace,
//! with which retries, and how the answers become the next snapshot.
//!
//! Owns batching, the cycle deadline, retries with backoff and jitter, the
//! memory of last known agent records and info, and building [`Snapshot`]s.
//! It never renders text and never serves HTTP; the GSE wire format belongs to
//! [`crate::gse`].

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;

use crate::config::{Config, GroupConfig, V1_MAX_BATCH, V2_MAX_BATCH};
use crate::discovery::{Discovery, HostEntry, ResolvedGroup};
use crate::gse::{ApiVersion, Call, GseClient, GseError, Info, Reply, Status};
use crate::metrics::Telemetry;
use crate::pacing::Pacers;
use crate::state::{
    AgentInfo, AgentRecord, AgentRow, AgentState, GroupSnapshot, Interner, Snapshot, StateCounts,
    count, unix_seconds,
};
use rustc_hash::FxHashMap;

/// Share of the interval a cycle may use before unfinished batches count as failed.
const CYCLE_BUDGET: f64 = 0.9;

/// Per-key knowledge of one API, keyed by the query key (the same string as
/// the host entry's key, shared).
type ByKey<T> = FxHashMap<Arc<str>, T>;

/// The poller: configuration, client, pacing, and what it remembers between cycles.
#[derive(Debug)]
pub struct Poller {
    config: Arc<Config>,
    client: GseClient,
    pacers: Pacers,
    telemetry: Arc<Telemetry>,
    /// Last known record per agent, one map per API (`api_slot`).
    records: [ByKey<AgentRecord>; 2],
    /// Last info and when it was fetched, one map per API.
    info: [ByKey<(AgentInfo, SystemTime)>; 2],
    /// Versions, parents and cloud ids, shared between agents.
    strings: Interner,
    /// Last cycle's host lists: while they are the same lists, no record
    /// can have been dropped from them, so forgetting is skipped.
    lists: Vec<Arc<Vec<HostEntry>>>,
    last_success: HashMap<String, f64>,
    discovery: Discovery,
    cycles: u64,
    progress: Arc<Progress>,
}

/// GSE batches planned and finished so far, for a progress display (the
/// counts only grow; the info phase adds its batches when it starts).
#[derive(Debug, Default)]
pub struct Progress {
    planned: AtomicU64,
    finished: AtomicU64,
}

impl Progress {
    /// Batches planned so far.
    pub fn planned(&self) -> u64 {
        self.planned.load(Ordering::Relaxed)
    }

    /// Batches finished so far (answered or failed, after retries).
    pub fn finished(&self) -> u64 {
        self.finished.load(Ordering::Relaxed)
    }
}

fn api_slot(api: ApiVersion) -> usize {
    match api {
        ApiVersion::V1 => 0,
        ApiVersion::V2 => 1,
    }
}

/// This cycle's distinct lookups, numbered, and each group's hosts by number.
struct Lookups<'a> {
    keys: Vec<(ApiVersion, &'a Arc<str>)>,
    index: FxHashMap<(ApiVersion, &'a str), usize>,
    groups: Vec<Vec<usize>>,
}

impl<'a> Lookups<'a> {
    /// A host in several groups is one lookup.
    fn new(configs: &[GroupConfig], groups: &'a [ResolvedGroup]) -> Lookups<'a> {
        let mut keys = Vec::new();
        let mut index = FxHashMap::default();
        let mut numbered = Vec::with_capacity(groups.len());
        for (config, group) in configs.iter().zip(groups) {
            let numbers = group
                .hosts
                .iter()
                .map(|entry| {
                    *index.entry((config.api, &*entry.key)).or_insert_with(|| {
                        keys.push((config.api, &entry.key));
                        keys.len() - 1
                    })
                })
                .collect();
            numbered.push(numbers);
        }
        Lookups {
            keys,
            index,
            groups: numbered,
        }
    }
}

/// One batch of one call: lookup numbers and their keys.
struct Batch {
    call: Call,
    numbers: Vec<usize>,
    keys: Vec<Arc<str>>,
}

/// The outcome of one batch, after retries.
struct Done<T> {
    call: Call,
    numbers: Vec<usize>,
    keys: Vec<Arc<str>>,
    result: Result<Reply<T>, GseError>,
    finished: Duration,
}

/// What one cycle learned, by lookup number, before it becomes a snapshot.
struct CycleOutcome {
    /// The status batch failed: the agent keeps its last record.
    failed: Vec<bool>,
    /// When the last batch holding the lookup finished.
    finished: Vec<Duration>,
    /// GSE answered for the lookup: `Some(status)`, or `None` = not found.
    answers: Vec<Option<Option<Status>>>,
    errors: Vec<(Call, GseError)>,
    batches: usize,
}

impl CycleOutcome {
    fn new(lookups: usize) -> CycleOutcome {
        CycleOutcome {
            failed: vec![false; lookups],
            finished: vec![Duration::ZERO; lookups],
            answers: vec![None; lookups],
            errors: Vec::new(),
            batches: 0,
        }
    }

    fn mark_finished(&mut self, numbers: &[usize], finished: Duration) {
        for &n in numbers {
            self.finished[n] = self.finished[n].max(finished);
        }
    }
}

impl Poller {
    /// Builds a poller; the pacing of each GSE endpoint starts full.
    pub fn new(config: Arc<Config>, telemetry: Arc<Telemetry>) -> Result<Poller, GseError> {
        let gse = &config.gse;
        let client = GseClient::new(gse)?;
        let urls = [gse.v1_url.as_deref(), gse.v2_url.as_deref()];
        let pacers = Pacers::new(
            urls.into_iter().flatten(),
            gse.requests_per_second,
            gse.burst,
            gse.max_in_flight,
        );
        Ok(Poller {
            config,
            client,
            pacers,
            telemetry,
            records: Default::default(),
            info: Default::default(),
            strings: Interner::default(),
            lists: Vec::new(),
            last_success: HashMap::new(),
            discovery: Discovery::default(),
            cycles: 0,
            progress: Arc::default(),
        })
    }

    /// The batch counts of this poller's cycles, readable while one runs.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// The configuration being polled.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Runs one complete cycle (status, then info when due) and returns the snapshot.
    pub async fn run_cycle(&mut self) -> Snapshot {
        let started = Instant::now();
        let deadline = started + self.config.interval.mul_f64(CYCLE_BUDGET);
        let config = self.config.clone();
        let groups = self.discovery.resolve(&config, &self.telemetry).await;
        let lookups = Lookups::new(&config.groups, &groups);
        let mut outcome = CycleOutcome::new(lookups.keys.len());

        let all = self.batches(&lookups.keys, 0..lookups.keys.len(), false);
        // Each reply is absorbed, and dropped, as soon as its batch is done.
        self.run_batches(all, deadline, |done| absorb_status(done, &mut outcome))
            .await;
        let now = SystemTime::now();
        let due = self.info_due(&lookups.keys, now);
        if !due.is_empty() {
            let batches = self.batches(&lookups.keys, due.into_iter(), true);
            let mut strings = std::mem::take(&mut self.strings);
            let mut fetched = Vec::new();
            self.run_batches(batches, deadline, |done| {
                absorb_info(done, &mut strings, &mut fetched, &mut outcome)
            })
            .await;
            self.strings = strings;
            for (slot, key, info) in fetched {
                self.info[slot].insert(key, (info, now));
            }
        }
        let lists: Vec<_> = groups.iter().map(|g| g.hosts.clone()).collect();
        let changed = lists.len() != self.lists.len()
            || lists
                .iter()
                .zip(&self.lists)
                .any(|(a, b)| !Arc::ptr_eq(a, b));
        self.update_records(&lookups, &mut outcome, now, changed);
        self.lists = lists;
        self.cycles += 1;
        self.log_cycle(&outcome, started.elapsed());
        let elapsed = started.elapsed();
        let groups = config
            .groups
            .iter()
            .zip(&groups)
            .zip(&lookups.groups)
            .map(|((group, resolved), numbers)| {
                self.group_snapshot(group, resolved, numbers, &outcome, elapsed, now)
            })
            .collect();
        self.strings.prune();
        Snapshot {
            groups,
            complete: true,
            sharding: config.sharding,
            metric_deny: config.metric_deny.clone(),
        }
    }

    /// Replaces the configuration from the next cycle on. What is known of
    /// agents still configured is kept, so their series have no gap; the
    /// client and pacing are rebuilt only when the `gse:` block changed.
    pub fn set_config(&mut self, config: Arc<Config>) -> Result<(), GseError> {
        if config.gse != self.config.gse {
            let fresh = Poller::new(config.clone(), self.telemetry.clone())?;
            self.client = fresh.client;
            self.pacers = fresh.pacers;
        }
        self.config = config;
        Ok(())
    }

    fn batches(
        &self,
        keys: &[(ApiVersion, &Arc<str>)],
        numbers: impl Iterator<Item = usize> + Clone,
        info: bool,
    ) -> Vec<Batch> {
        let mut out = Vec::new();
        for api in [ApiVersion::V1, ApiVersion::V2] {
            let cap = if api == ApiVersion::V1 {
                V1_MAX_BATCH
            } else {
                V2_MAX_BATCH
            };
            let size = self.config.gse.batch_size.min(cap).max(1);
            let mine: Vec<usize> = numbers.clone().filter(|&n| keys[n].0 == api).collect();
            out.extend(mine.chunks(size).map(|chunk| Batch {
                call: Call::of(api, info),
                numbers: chunk.to_vec(),
                keys: chunk.iter().map(|&n| keys[n].1.clone()).collect(),
            }));
        }
        out
    }

    fn info_due(&self, keys: &[(ApiVersion, &Arc<str>)], now: SystemTime) -> Vec<usize> {
        let every = self.config.info_interval;
        (0..keys.len())
            .filter(|&n| {
                let (api, key) = keys[n];
                match self.info[api_slot(api)].get(&**key) {
                    Some((_, fetched)) => now.duration_since(*fetched).unwrap_or_default() >= every,
                    None => true,
                }
            })
            .collect()
    }

    async fn run_batches<T>(
        &self,
        batches: Vec<Batch>,
        deadline: Instant,
        mut absorb: impl FnMut(Done<T>),
    ) where
        T: Send + 'static,
        Self: Fetch<T>,
    {
        let started = Instant::now();
        let progress = &self.progress;
        progress
            .planned
            .fetch_add(batches.len() as u64, Ordering::Relaxed);
        let mut running: FuturesUnordered<_> = batches
            .into_iter()
            .map(|batch| async move {
                let fetched = tokio::time::timeout_at(deadline, self.fetch(&batch, deadline));
                let result = fetched.await.unwrap_or(Err(GseError::Timeout));
                progress.finished.fetch_add(1, Ordering::Relaxed);
                Done {
                    call: batch.call,
                    numbers: batch.numbers,
                    keys: batch.keys,
                    result,
                    finished: started.elapsed(),
                }
            })
            .collect();
        while let Some(batch) = running.next().await {
            absorb(batch);
        }
    }

    /// Sends one batch, retrying what may succeed on another attempt.
    async fn attempt<T, F, Fut>(
        &self,
        call: Call,
        base: &str,
        deadline: Instant,
        mut send: F,
    ) -> Result<Reply<T>, GseError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Reply<T>, GseError>>,
    {
        let gse = &self.config.gse;
        let pacer = self
            .pacers
            .for_url(base)
            .ok_or_else(|| GseError::Transport(format!("no pacer for {base}")))?;
        let mut attempt = 0;
        loop {
            let permit = pacer.acquire(&self.telemetry).await;
            let sent = Instant::now();
            let result = send().await;
            drop(permit);
            self.telemetry
                .record_request(call, result_label(&result), sent.elapsed());
            let err = match result {
                Ok(reply) => return Ok(reply),
                Err(err) => err,
            };
            attempt += 1;
            if !err.is_retryable() || attempt >= gse.max_attempts {
                return Err(err);
            }
            let wait = backoff(
                attempt,
                gse.initial_backoff,
                gse.max_backoff,
                err.retry_after(),
            );
            if Instant::now() + wait >= deadline {
                return Err(err);
            }
            tracing::debug!(api = call.label(), attempt, wait_ms = wait.as_millis() as u64, error = %err, "retrying GSE request");
            tokio::time::sleep(wait).await;
            self.telemetry.record_retry(call);
        }
    }

    fn update_records(
        &mut self,
        lookups: &Lookups,
        outcome: &mut CycleOutcome,
        now: SystemTime,
        lists_changed: bool,
    ) {
        for (n, &(api, key)) in lookups.keys.iter().enumerate() {
            if outcome.failed[n] {
                continue; // keeps its last known record
            }
            let Some(status) = outcome.answers[n].take() else {
                continue;
            };
            let slot = api_slot(api);
            let info = self.info[slot].get(&**key).map(|(info, _)| info);
            let strings = &mut self.strings;
            match self.records[slot].get_mut(&**key) {
                Some(record) => {
                    *record =
                        AgentRecord::observe(status.as_ref(), info, Some(record), now, strings)
                }
                None => {
                    let record = AgentRecord::observe(status.as_ref(), info, None, now, strings);
                    self.records[slot].insert(key.clone(), record);
                }
            }
        }
        if !lists_changed {
            return;
        }
        for api in [ApiVersion::V1, ApiVersion::V2] {
            let wanted = |key: &Arc<str>| lookups.index.contains_key(&(api, &**key));
            self.records[api_slot(api)].retain(|key, _| wanted(key));
            self.info[api_slot(api)].retain(|key, _| wanted(key));
        }
    }

    fn group_snapshot(
        &mut self,
        group: &GroupConfig,
        resolved: &ResolvedGroup,
        numbers: &[usize],
        outcome: &CycleOutcome,
        elapsed: Duration,
        now: SystemTime,
    ) -> GroupSnapshot {
        let stale_after = self.config.stale_after;
        let slot = api_slot(group.api);
        let mut agents = Vec::with_capacity(if group.per_agent_metrics {
            numbers.len()
        } else {
            0
        });
        let mut counts = StateCounts::default();
        let mut versions = BTreeMap::new();
        let mut up = true;
        let mut duration = Duration::ZERO;
        for (entry, &n) in resolved.hosts.iter().zip(numbers) {
            up &= !outcome.failed[n];
            duration = duration.max(outcome.finished[n]);
            let Some(record) = self.records[slot]
                .get(&*entry.key)
                .filter(|r| !r.is_stale(now, stale_after))
            else {
                counts.add(AgentState::Unknown);
                continue;
            };
            count(&mut counts, &mut versions, record);
            // Groups without per-agent series keep only their counts, which
            // keeps memory flat at a million agents.
            if group.per_agent_metrics {
                let info = self.info[slot].get(&*entry.key).map(|(info, _)| info);
                agents.push(AgentRow::new(
                    entry,
                    info,
                    record.clone(),
                    &mut self.strings,
                ));
            }
        }
        if up {
            self.last_success
                .insert(group.name.clone(), unix_seconds(now));
        }
        GroupSnapshot {
            name: group.name.clone(),
            bk_biz_id: group.bk_biz_id.to_string(),
            labels: group.labels.clone(),
            host_label_names: group.host_label_names().to_vec(),
            per_agent_metrics: group.per_agent_metrics,
            agents,
            counts,
            versions,
            up,
            poll_duration: if resolved.hosts.is_empty() {
                elapsed
            } else {
                duration
            }
            .as_secs_f64(),
            interval: self.config.interval.as_secs_f64(),
            last_success: self.last_success.get(&group.name).copied(),
            skipped: resolved.skipped.clone(),
            discovery: resolved.discovery,
        }
    }

    fn log_cycle(&self, outcome: &CycleOutcome, elapsed: Duration) {
        let failed = outcome.errors.len();
        if failed == 0 {
            tracing::debug!(
                cycle = self.cycles,
                batches = outcome.batches,
                elapsed_ms = elapsed.as_millis() as u64,
                "poll cycle complete"
            );
            return;
        }
        let (call, first) = &outcome.errors[0];
        tracing::warn!(
            cycle = self.cycles,
            failed_batches = failed,
            batches = outcome.batches,
            first_api = call.label(),
            first_error = %first,
            "poll cycle could not ask GSE for every agent; their last known values are kept"
        );
    }
}

fn absorb_status(batch: Done<Status>, outcome: &mut CycleOutcome) {
    outcome.batches += 1;
    outcome.mark_finished(&batch.numbers, batch.finished);
    match batch.result {
        Ok(mut reply) => {
            for (n, key) in batch.numbers.into_iter().zip(&batch.keys) {
                outcome.answers[n] = Some(reply.agents.remove(&**key));
            }
        }
        Err(err) => {
            for n in batch.numbers {
                outcome.failed[n] = true;
            }
            outcome.errors.push((batch.call, err));
        }
    }
}

/// Keeps a batch's info in compact form; a failed batch keeps its last info
/// and is asked for again next cycle.
fn absorb_info(
    batch: Done<Info>,
    strings: &mut Interner,
    fetched: &mut Vec<(usize, Arc<str>, AgentInfo)>,
    outcome: &mut CycleOutcome,
) {
    let slot = api_slot(api_of(batch.call));
    outcome.batches += 1;
    outcome.mark_finished(&batch.numbers, batch.finished);
    match batch.result {
        Ok(mut reply) => {
            for key in batch.keys {
                let info = reply.agents.remove(&*key).unwrap_or_default();
                fetched.push((slot, key, AgentInfo::new(&info, strings)));
            }
        }
        Err(err) => outcome.errors.push((batch.call, err)),
    }
}

/// How a batch of one kind is sent (status or info).
trait Fetch<T> {
    fn fetch(
        &self,
        batch: &Batch,
        deadline: Instant,
    ) -> impl Future<Output = Result<Reply<T>, GseError>> + Send;
}

impl Fetch<Status> for Poller {
    async fn fetch(&self, batch: &Batch, deadline: Instant) -> Result<Reply<Status>, GseError> {
        let base = self.base(batch.call)?;
        self.attempt(batch.call, base, deadline, || {
            self.client.status(batch.call, base, &batch.keys)
        })
        .await
    }
}

impl Fetch<Info> for Poller {
    async fn fetch(&self, batch: &Batch, deadline: Instant) -> Result<Reply<Info>, GseError> {
        let base = self.base(batch.call)?;
        self.attempt(batch.call, base, deadline, || {
            self.client.info(batch.call, base, &batch.keys)
        })
        .await
    }
}

impl Poller {
    fn base(&self, call: Call) -> Result<&str, GseError> {
        let api = api_of(call);
        self.config
            .gse
            .url_for(api)
            .ok_or_else(|| GseError::Transport(format!("no URL configured for GSE {api}")))
    }
}

fn api_of(call: Call) -> ApiVersion {
    match call {
        Call::V1Status | Call::V1Info => ApiVersion::V1,
        Call::V2State | Call::V2Info => ApiVersion::V2,
    }
}

fn result_label<T>(result: &Result<Reply<T>, GseError>) -> &'static str {
    match result {
        Ok(reply) if reply.none_found => "not_found",
        Ok(_) => "success",
        Err(err) => err.result_label(),
    }
}

/// Exponential backoff with equal jitter, never shorter than what GSE asked for.
fn backoff(attempt: u32, initial: Duration, max: Duration, asked: Option<Duration>) -> Duration {
    let exp = initial
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(max);
    let jitter = exp.mul_f64(0.5 * random_fraction());
    let wait = exp / 2 + jitter;
    asked
        .map_or(wait, |asked| asked.max(wait))
        .min(max.max(asked.unwrap_or_default()))
}

fn random_fraction() -> f64 {
    let bits = RandomState::new().hash_one(std::time::Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let initial = Duration::from_millis(500);
        let max = Duration::from_secs(10);
        for _ in 0..100 {
            let first = backoff(1, initial, max, None);
            assert!(
                first >= Duration::from_millis(250) && first <= initial,
                "{first:?}"
            );
            let late = backoff(10, initial, max, None);
            assert!(late >= Duration::from_secs(5) && late <= max, "{late:?}");
            let asked = backoff(1, initial, max, Some(Duration::from_secs(3)));
            assert_eq!(asked, Duration::from_secs(3));
        }
    }
}
