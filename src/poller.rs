//! The poll cycle: which hosts to ask for, in which batches, at what pace,
//! with which retries, and how the answers become the next snapshot.
//!
//! Owns batching, the cycle deadline, retries with backoff and jitter, the
//! memory of last known agent records and info, and building [`Snapshot`]s.
//! It never renders text and never serves HTTP; the GSE wire format belongs to
//! [`crate::gse`].

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;

use crate::config::{Config, GroupConfig, V1_MAX_BATCH, V2_MAX_BATCH};
use crate::discovery::{Discovery, ResolvedGroup};
use crate::gse::{ApiVersion, Call, GseClient, GseError, Info, Reply, Status};
use crate::metrics::Telemetry;
use crate::pacing::Pacers;
use crate::state::{AgentRecord, AgentRow, GroupSnapshot, Snapshot, unix_seconds};

/// An agent as GSE is asked for it: the API and the query key.
pub type LookupKey = (ApiVersion, String);

/// Share of the interval a cycle may use before unfinished batches count as failed.
const CYCLE_BUDGET: f64 = 0.9;

/// The poller: configuration, client, pacing, and what it remembers between cycles.
#[derive(Debug)]
pub struct Poller {
    config: Arc<Config>,
    client: GseClient,
    pacers: Pacers,
    telemetry: Arc<Telemetry>,
    records: HashMap<LookupKey, AgentRecord>,
    info: HashMap<LookupKey, (Info, SystemTime)>,
    last_success: HashMap<String, f64>,
    discovery: Discovery,
    cycles: u64,
}

/// One batch of one call.
struct Batch {
    call: Call,
    keys: Vec<String>,
}

/// The outcome of one batch, after retries.
struct Done<T> {
    call: Call,
    keys: Vec<String>,
    result: Result<Reply<T>, GseError>,
    finished: Duration,
}

/// What one cycle learned, before it becomes a snapshot.
#[derive(Default)]
struct CycleOutcome {
    failed: HashSet<LookupKey>,
    finished: HashMap<LookupKey, Duration>,
    errors: Vec<(Call, GseError)>,
    batches: usize,
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
            records: HashMap::new(),
            info: HashMap::new(),
            last_success: HashMap::new(),
            discovery: Discovery::default(),
            cycles: 0,
        })
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
        let lookups = lookups(&config.groups, &groups);
        let mut outcome = CycleOutcome::default();

        let status = self
            .run_batches(self.batches(&lookups, false), deadline)
            .await;
        let now = SystemTime::now();
        let replies = Self::absorb_status(status, &mut outcome);

        let due = self.info_due(&lookups, now);
        if !due.is_empty() {
            let info = self.run_batches(self.batches(&due, true), deadline).await;
            self.absorb_info(info, now, &mut outcome);
        }
        self.update_records(&lookups, &replies, &outcome.failed, now);
        self.cycles += 1;
        self.log_cycle(&outcome, started.elapsed());
        let elapsed = started.elapsed();
        let groups = config
            .groups
            .iter()
            .zip(&groups)
            .map(|(group, resolved)| self.group_snapshot(group, resolved, &outcome, elapsed, now))
            .collect();
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

    fn batches(&self, lookups: &[LookupKey], info: bool) -> Vec<Batch> {
        let mut out = Vec::new();
        for api in [ApiVersion::V1, ApiVersion::V2] {
            let cap = if api == ApiVersion::V1 {
                V1_MAX_BATCH
            } else {
                V2_MAX_BATCH
            };
            let size = self.config.gse.batch_size.min(cap).max(1);
            let keys: Vec<String> = lookups
                .iter()
                .filter(|(a, _)| *a == api)
                .map(|(_, k)| k.clone())
                .collect();
            out.extend(keys.chunks(size).map(|chunk| Batch {
                call: Call::of(api, info),
                keys: chunk.to_vec(),
            }));
        }
        out
    }

    fn info_due(&self, lookups: &[LookupKey], now: SystemTime) -> Vec<LookupKey> {
        let every = self.config.info_interval;
        lookups
            .iter()
            .filter(|key| match self.info.get(*key) {
                Some((_, fetched)) => now.duration_since(*fetched).unwrap_or_default() >= every,
                None => true,
            })
            .cloned()
            .collect()
    }

    async fn run_batches<T>(&self, batches: Vec<Batch>, deadline: Instant) -> Vec<Done<T>>
    where
        T: Send + 'static,
        Self: Fetch<T>,
    {
        let started = Instant::now();
        let mut running: FuturesUnordered<_> = batches
            .into_iter()
            .map(|batch| async move {
                let fetched = tokio::time::timeout_at(deadline, self.fetch(&batch, deadline));
                let result = fetched.await.unwrap_or(Err(GseError::Timeout));
                Done {
                    call: batch.call,
                    keys: batch.keys,
                    result,
                    finished: started.elapsed(),
                }
            })
            .collect();
        let mut done = Vec::new();
        while let Some(batch) = running.next().await {
            done.push(batch);
        }
        done
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

    fn absorb_status(
        done: Vec<Done<Status>>,
        outcome: &mut CycleOutcome,
    ) -> HashMap<LookupKey, Option<Status>> {
        let mut replies = HashMap::new();
        for batch in done {
            let api = api_of(batch.call);
            outcome.batches += 1;
            note_finished(outcome, api, &batch.keys, batch.finished);
            match batch.result {
                Ok(mut reply) => {
                    for key in batch.keys {
                        let status = reply.agents.remove(&key);
                        replies.insert((api, key), status);
                    }
                }
                Err(err) => {
                    outcome
                        .failed
                        .extend(batch.keys.into_iter().map(|k| (api, k)));
                    outcome.errors.push((batch.call, err));
                }
            }
        }
        replies
    }

    fn absorb_info(&mut self, done: Vec<Done<Info>>, now: SystemTime, outcome: &mut CycleOutcome) {
        for batch in done {
            let api = api_of(batch.call);
            outcome.batches += 1;
            note_finished(outcome, api, &batch.keys, batch.finished);
            match batch.result {
                Ok(mut reply) => {
                    for key in batch.keys {
                        let info = reply.agents.remove(&key).unwrap_or_default();
                        self.info.insert((api, key), (info, now));
                    }
                }
                // Info keeps its last value and is asked for again next cycle.
                Err(err) => outcome.errors.push((batch.call, err)),
            }
        }
    }

    fn update_records(
        &mut self,
        lookups: &[LookupKey],
        replies: &HashMap<LookupKey, Option<Status>>,
        failed: &HashSet<LookupKey>,
        now: SystemTime,
    ) {
        for key in lookups {
            if failed.contains(key) {
                continue; // keeps its last known record
            }
            let Some(status) = replies.get(key) else {
                continue;
            };
            let info = self.info.get(key).map(|(info, _)| info);
            let record = AgentRecord::observe(status.as_ref(), info, self.records.get(key), now);
            self.records.insert(key.clone(), record);
        }
        let wanted: HashSet<&LookupKey> = lookups.iter().collect();
        self.records.retain(|key, _| wanted.contains(key));
        self.info.retain(|key, _| wanted.contains(key));
    }

    fn group_snapshot(
        &mut self,
        group: &GroupConfig,
        resolved: &ResolvedGroup,
        outcome: &CycleOutcome,
        elapsed: Duration,
        now: SystemTime,
    ) -> GroupSnapshot {
        let stale_after = self.config.stale_after;
        let mut agents = Vec::with_capacity(resolved.hosts.len());
        let mut unknown = 0;
        let mut up = true;
        let mut duration = Duration::ZERO;
        for entry in &resolved.hosts {
            let Some(key) = entry.host.query_key(group.api).map(|k| (group.api, k)) else {
                continue;
            };
            up &= !outcome.failed.contains(&key);
            duration = duration.max(outcome.finished.get(&key).copied().unwrap_or_default());
            match self.records.get(&key) {
                Some(record) if !record.is_stale(now, stale_after) => {
                    let info = self.info.get(&key).map(|(info, _)| info);
                    let mut row = AgentRow::new(&entry.host, info, record.clone());
                    row.host_labels = entry.labels.clone();
                    agents.push(row);
                }
                _ => unknown += 1,
            }
        }
        if up {
            self.last_success
                .insert(group.name.clone(), unix_seconds(now));
        }
        let mut snapshot = GroupSnapshot {
            name: group.name.clone(),
            bk_biz_id: group.bk_biz_id.to_string(),
            labels: group.labels.clone(),
            host_label_names: group.host_label_names().to_vec(),
            per_agent_metrics: group.per_agent_metrics,
            agents,
            counts: Default::default(),
            versions: Default::default(),
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
        };
        snapshot.tally(unknown);
        snapshot
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

/// Every distinct (API, key) of every group, in configuration order: a host
/// in several groups is asked for once.
fn lookups(configs: &[GroupConfig], groups: &[ResolvedGroup]) -> Vec<LookupKey> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (config, group) in configs.iter().zip(groups) {
        for entry in &group.hosts {
            if let Some(key) = entry.host.query_key(config.api) {
                let lookup = (config.api, key);
                if seen.insert(lookup.clone()) {
                    out.push(lookup);
                }
            }
        }
    }
    out
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

fn note_finished(outcome: &mut CycleOutcome, api: ApiVersion, keys: &[String], finished: Duration) {
    for key in keys {
        let slot = outcome.finished.entry((api, key.clone())).or_default();
        *slot = (*slot).max(finished);
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
