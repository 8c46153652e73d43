//! The poll cycle: which hosts to ask for, in which batches, at what pace,
//! with which retries, and how the answers become the next snapshot.
//!
//! Owns batching, the cycle deadline, retries with backoff and jitter, the
//! memory of last known agent records and info, and building [`Snapshot`]s.
//! It never renders text and never serves HTTP; the GSE wire format belongs to
//! [`crate::upstream::gse`], what is kept per agent to [`record`].

mod memory;
pub(crate) mod record;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use tokio::time::Instant;

use crate::config::{Config, GroupConfig, V1_MAX_BATCH, V2_MAX_BATCH, deny_set};
use crate::discovery::{Discovery, ResolvedGroup};
use crate::model::{ApiVersion, HostEntry, Key, KeyLabel, unix_seconds};
use crate::pacing::Pacers;
use crate::snapshot::{
    AGENTS_PER_SEGMENT, AgentRow, AgentState, GroupSnapshot, HEARTBEAT_FAMILIES, Placement,
    Snapshot, StateCounts, count_state,
};
use crate::telemetry::Telemetry;
use crate::upstream::GseError;
use crate::upstream::gse::{Call, GseClient, Info, Reply, Status, tenant_sent};
use memory::Memory;
use record::{AgentInfo, Interner, Observation, Refresh, stale_cutoff};

/// A group's agents counted per parent and per cloud area while its
/// snapshot is built (hashing the shared parent strings, sorted at the end).
#[derive(Default)]
struct PlacementCounts {
    parents: rustc_hash::FxHashMap<Arc<str>, StateCounts>,
    clouds: rustc_hash::FxHashMap<i64, StateCounts>,
}

impl PlacementCounts {
    /// Counts one agent: in its cloud area when known, behind its parent when
    /// GSE knows the agent (online or offline) and named one.
    fn add(
        &mut self,
        cloud: Option<i64>,
        info: Option<&AgentInfo>,
        state: AgentState,
        strings: &Interner,
    ) {
        if let Some(cloud) = cloud {
            self.clouds.entry(cloud).or_default().add(state);
        }
        let known = matches!(state, AgentState::Online | AgentState::Offline);
        if let Some(parent) = info
            .map(|info| info.parent_ip(strings))
            .filter(|p| known && !p.is_empty())
        {
            self.parents.entry(parent.clone()).or_default().add(state);
        }
    }

    fn finish(self) -> Placement {
        let mut parents: Vec<_> = self.parents.into_iter().collect();
        parents.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut clouds: Vec<_> = self.clouds.into_iter().collect();
        clouds.sort_unstable_by_key(|c| c.0);
        Placement { parents, clouds }
    }
}

/// Share of the interval a cycle may use before unfinished batches count as failed.
const CYCLE_BUDGET: f64 = 0.9;

/// When a slot's heartbeat is refreshed (see [`Refresh`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No group that lists the agent exports its heartbeat.
    Unread,
    /// In cycles of this parity: the parity of the agent's run of
    /// [`AGENTS_PER_SEGMENT`] in its group (a byte in all).
    Run {
        /// Odd runs, odd cycles.
        odd: bool,
    },
}

/// Whether anything exported reads the heartbeat of each group's agents:
/// its per-agent series (on `/metrics` and OTLP alike), unless
/// `metric_deny` removes both heartbeat families. The group counts read no
/// heartbeat, and `query` polls once, when every info is asked anyway.
fn heartbeat_read(config: &Config) -> Vec<bool> {
    let deny = deny_set(&config.metric_deny);
    let denied = |name: &str| deny.as_ref().is_some_and(|set| set.is_match(name));
    let exported = !HEARTBEAT_FAMILIES.iter().all(|name| denied(name));
    config
        .groups
        .iter()
        .map(|group| group.per_agent_metrics && exported)
        .collect()
}

/// The poller: configuration, client, pacing, and what it remembers between cycles.
#[derive(Debug)]
pub(crate) struct Poller {
    config: Arc<Config>,
    client: GseClient,
    pacers: Pacers,
    telemetry: Arc<Telemetry>,
    /// The (API, tenant) pairs of the groups, each with its [`Memory`] at
    /// the same index in `memory`.
    spaces: Vec<Space>,
    /// What is known of each listed agent, one table set per space.
    memory: Vec<Memory>,
    /// Versions, parents and cloud ids, shared between agents (behind a
    /// lock so that batches absorbed while others are in flight can number
    /// new strings, and a cycle dropped half-way leaves it whole).
    strings: parking_lot::Mutex<Interner>,
    /// Last cycle's host lists and each group's slots in its space's memory.
    plan: Plan,
    /// Whether anything exported reads the heartbeat of each group's
    /// agents (in the order of the configuration's groups).
    heartbeat_read: Vec<bool>,
    last_success: HashMap<String, f64>,
    discovery: Discovery,
    cycles: u64,
    progress: Arc<Progress>,
}

/// Whose agents one [`Memory`] holds: an API and the tenant its calls
/// carry. An agent id listed in two spaces is two agents (two tenants may
/// use the same id), asked for in separate batches, so that every request
/// carries exactly one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Space {
    api: ApiVersion,
    /// `X-Bk-Tenant-Id` of the calls (none for GSE 1.x, which sends none).
    tenant: Option<Arc<str>>,
}

impl Space {
    fn of(group: &GroupConfig) -> Space {
        Space {
            api: group.api,
            tenant: tenant_sent(group.api, group.tenant_id.as_deref()).map(Arc::from),
        }
    }
}

/// Each group's hosts as slots of its space's [`Memory`], kept while the
/// host lists are the same lists.
#[derive(Debug, Default)]
struct Plan {
    lists: Vec<(Space, Arc<Vec<HostEntry>>)>,
    slots: Vec<Vec<u32>>,
}

impl Plan {
    fn is_for(&self, lists: &[(Space, Arc<Vec<HostEntry>>)]) -> bool {
        lists.len() == self.lists.len()
            && lists
                .iter()
                .zip(&self.lists)
                .all(|(a, b)| a.0 == b.0 && Arc::ptr_eq(&a.1, &b.1))
    }
}

/// GSE batches planned and finished so far, for a progress display (the
/// counts only grow; the info phase adds its batches when it starts).
#[derive(Debug, Default)]
pub(crate) struct Progress {
    planned: AtomicU64,
    finished: AtomicU64,
}

impl Progress {
    /// Batches planned so far.
    pub(crate) fn planned(&self) -> u64 {
        self.planned.load(Ordering::Relaxed)
    }

    /// Batches finished so far (answered or failed, after retries).
    pub(crate) fn finished(&self) -> u64 {
        self.finished.load(Ordering::Relaxed)
    }
}

/// One batch of one call: slots of its space's memory and their keys.
struct Batch {
    space: usize,
    call: Call,
    slots: Vec<u32>,
    keys: Vec<Key>,
}

/// The batches of one call, made as they are sent.
struct Planned<'a> {
    count: usize,
    batches: Box<dyn Iterator<Item = Batch> + Send + 'a>,
}

/// The outcome of one batch, after retries: an answer per slot, in order.
struct Done<T> {
    space: usize,
    call: Call,
    slots: Vec<u32>,
    result: Result<Reply<T>, GseError>,
    finished: Instant,
}

/// What one cycle learned besides the answers, by space and slot.
struct CycleOutcome {
    /// When the cycle started.
    started: Instant,
    /// The status batch failed: the agent keeps its last observation.
    failed: Vec<Vec<bool>>,
    /// The status answer changed the agent's state or status code.
    changed: Vec<Vec<bool>>,
    /// When the last batch holding the slot finished, in seconds from the
    /// cycle's start (status and info batches alike; 4 bytes a slot).
    finished: Vec<Vec<f32>>,
    errors: Vec<(Call, GseError)>,
    batches: usize,
}

impl CycleOutcome {
    fn new(memory: &[Memory], started: Instant) -> CycleOutcome {
        CycleOutcome {
            started,
            failed: memory.iter().map(|m| vec![false; m.len()]).collect(),
            changed: memory.iter().map(|m| vec![false; m.len()]).collect(),
            finished: memory.iter().map(|m| vec![0.0; m.len()]).collect(),
            errors: Vec::new(),
            batches: 0,
        }
    }

    /// Counts a finished batch, marks when its slots were done, and returns
    /// its space.
    fn count<T>(&mut self, batch: &Done<T>) -> usize {
        self.batches += 1;
        let at = batch.finished.duration_since(self.started).as_secs_f32();
        for &slot in &batch.slots {
            let time = &mut self.finished[batch.space][slot as usize];
            *time = time.max(at);
        }
        batch.space
    }
}

impl Poller {
    /// Builds a poller; the pacing of each GSE endpoint starts full.
    pub(crate) fn new(config: Arc<Config>, telemetry: Arc<Telemetry>) -> Result<Poller, GseError> {
        let gse = &config.gse;
        let client = GseClient::new(gse)?;
        let urls = [gse.v1_url.as_deref(), gse.v2_url.as_deref()];
        let pacers = Pacers::new(
            urls.into_iter().flatten(),
            gse.rate_limit,
            gse.max_in_flight,
        );
        Ok(Poller {
            heartbeat_read: heartbeat_read(&config),
            config,
            client,
            pacers,
            telemetry,
            spaces: Vec::new(),
            memory: Vec::new(),
            strings: Default::default(),
            plan: Plan::default(),
            last_success: HashMap::new(),
            discovery: Discovery::default(),
            cycles: 0,
            progress: Arc::default(),
        })
    }

    /// Never asks CMDB for business names (for `query`, which shows none).
    pub(crate) fn skip_business_names(&mut self) {
        self.discovery.skip_business_names();
    }

    /// The batch counts of this poller's cycles, readable while one runs.
    pub(crate) fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// The configuration being polled.
    pub(crate) fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Runs one complete cycle (status, then info when due) and returns the snapshot.
    pub(crate) async fn run_cycle(&mut self) -> Snapshot {
        let started = Instant::now();
        let deadline = started + self.config.interval.mul_f64(CYCLE_BUDGET);
        let config = self.config.clone();
        let groups = self.discovery.resolve(&config, &self.telemetry).await;
        self.memory.iter_mut().for_each(Memory::restore_tables);
        self.update_plan(&config.groups, &groups);
        let mut outcome = CycleOutcome::new(&self.memory, started);
        self.ask_status(deadline, &mut outcome).await;
        let now = SystemTime::now();
        self.ask_info(deadline, now, &mut outcome).await;
        self.cycles += 1;
        self.log_cycle(&outcome, started.elapsed());
        let elapsed = started.elapsed();
        let slots = std::mem::take(&mut self.plan.slots);
        let groups = config
            .groups
            .iter()
            .zip(&groups)
            .zip(&slots)
            .map(|((group, resolved), slots)| {
                self.group_snapshot(group, resolved, slots, &outcome, elapsed, now)
            })
            .collect();
        self.plan.slots = slots;
        let memory = &self.memory;
        self.strings.get_mut().sweep(|mark| {
            for memory in memory {
                memory.observed.iter().flatten().for_each(|o| o.mark(mark));
                memory.info.iter().flatten().for_each(|i| i.mark(mark));
            }
        });
        Snapshot {
            groups,
            complete: true,
            sharding: config.sharding,
            metric_deny: config.metric_deny.clone(),
        }
    }

    /// Gives every listed host a slot in its space's memory and, when the
    /// lists changed, forgets the agents no list has any more (and the
    /// spaces no group uses).
    fn update_plan(&mut self, configs: &[GroupConfig], groups: &[ResolvedGroup]) {
        let lists: Vec<_> = configs
            .iter()
            .zip(groups)
            .map(|(config, group)| (Space::of(config), group.hosts.clone()))
            .collect();
        if self.plan.is_for(&lists) {
            return;
        }
        self.update_spaces(&lists);
        let mut listed: Vec<_> = self.memory.iter().map(|m| vec![false; m.len()]).collect();
        let mut slots: Vec<Vec<u32>> = lists
            .iter()
            .map(|(space, hosts)| {
                let space = self.space_index(space);
                let memory = &mut self.memory[space];
                memory.reserve(hosts.len().saturating_sub(memory.len()));
                let listed = &mut listed[space];
                hosts
                    .iter()
                    .map(|entry| {
                        let slot = memory.slot(&entry.key);
                        listed.resize(memory.len(), false);
                        listed[slot as usize] = true;
                        slot
                    })
                    .collect()
            })
            .collect();
        for (space, listed) in listed.iter().enumerate() {
            if listed.iter().all(|&l| l) {
                self.memory[space].shrink();
                continue;
            }
            let renumbered = self.memory[space].retain(listed);
            for (group, (group_space, _)) in slots.iter_mut().zip(&lists) {
                if *group_space == self.spaces[space] {
                    for slot in group.iter_mut() {
                        *slot = renumbered[*slot as usize].unwrap_or(u32::MAX);
                    }
                }
            }
        }
        self.plan = Plan { lists, slots };
    }

    /// Drops the spaces (and their memory) no list is in, and adds an empty
    /// one for each new space.
    fn update_spaces(&mut self, lists: &[(Space, Arc<Vec<HostEntry>>)]) {
        let spaces = std::mem::take(&mut self.spaces).into_iter();
        (self.spaces, self.memory) = spaces
            .zip(std::mem::take(&mut self.memory))
            .filter(|(space, _)| lists.iter().any(|(s, _)| s == space))
            .unzip();
        for (space, _) in lists {
            if !self.spaces.contains(space) {
                self.spaces.push(space.clone());
                self.memory.push(Memory::default());
            }
        }
    }

    /// The index of a space in use.
    fn space_index(&self, space: &Space) -> usize {
        let found = self.spaces.iter().position(|s| s == space);
        found.expect("every listed space has a memory")
    }

    /// Asks every remembered agent's status; each reply is absorbed, and
    /// dropped, as soon as its batch is done.
    async fn ask_status(&mut self, deadline: Instant, outcome: &mut CycleOutcome) {
        let mut observed: Vec<_> = self
            .memory
            .iter_mut()
            .map(|m| std::mem::take(&mut m.observed))
            .collect();
        let strings = &self.strings;
        let batches = (0..self.spaces.len())
            .map(|space| {
                let all = 0..self.memory[space].len() as u32;
                self.batches(space, all, false)
            })
            .collect();
        self.run_batches(batches, deadline, |done| {
            absorb_status(done, &mut observed, &mut strings.lock(), outcome)
        })
        .await;
        for (memory, observed) in self.memory.iter_mut().zip(observed) {
            memory.observed = observed;
        }
    }

    /// Asks for the info of agents whose info is missing or older than
    /// `info_interval`, and of those whose state changed or whose heartbeat
    /// it carries and is due ([`Observation::wants_info`]).
    async fn ask_info(&mut self, deadline: Instant, now: SystemTime, outcome: &mut CycleOutcome) {
        let due: Vec<Vec<u32>> = (0..self.spaces.len())
            .map(|space| self.info_due(space, now, outcome))
            .collect();
        if due.iter().all(Vec::is_empty) {
            return;
        }
        let mut info: Vec<_> = self
            .memory
            .iter_mut()
            .map(|m| std::mem::take(&mut m.info))
            .collect();
        let strings = &self.strings;
        let batches = due
            .into_iter()
            .enumerate()
            .map(|(space, due)| self.batches(space, due, true))
            .collect();
        self.run_batches(batches, deadline, |done| {
            absorb_info(done, now, &mut info, &mut strings.lock(), outcome)
        })
        .await;
        for (memory, info) in self.memory.iter_mut().zip(info) {
            memory.info = info;
        }
    }

    /// Replaces the configuration from the next cycle on. What is known of
    /// agents still configured is kept, so their series have no gap; the
    /// client and pacing are rebuilt only when the `gse:` block changed.
    ///
    /// The token buckets are kept while the endpoints and the rate limit are
    /// the same, so reloads never refill them: the rate limit holds across
    /// any number of reloads.
    pub(crate) fn set_config(&mut self, config: Arc<Config>) -> Result<(), GseError> {
        let (old, new) = (&self.config.gse, &config.gse);
        if new != old {
            let fresh = Poller::new(config.clone(), self.telemetry.clone())?;
            self.client = fresh.client;
            let same_pace = (&new.v1_url, &new.v2_url, new.rate_limit, new.max_in_flight)
                == (&old.v1_url, &old.v2_url, old.rate_limit, old.max_in_flight);
            if !same_pace {
                self.pacers = fresh.pacers;
            }
        }
        self.heartbeat_read = heartbeat_read(&config);
        self.config = config;
        Ok(())
    }

    /// The batches of one call over `slots` of a space, made one at a time
    /// as they are sent, so a batch's keys are copied only when its turn
    /// comes (all of them at once weighed 20 MB at a million agents).
    fn batches<'a>(
        &'a self,
        space: usize,
        slots: impl IntoIterator<Item = u32, IntoIter: ExactSizeIterator + Send + 'a>,
        info: bool,
    ) -> Planned<'a> {
        let api = self.spaces[space].api;
        let cap = match api {
            ApiVersion::V1 => V1_MAX_BATCH,
            ApiVersion::V2 => V2_MAX_BATCH,
        };
        let size = self.config.gse.batch_size.min(cap).max(1);
        let memory = &self.memory[space];
        let call = Call::of(api, info);
        let mut slots = slots.into_iter();
        let count = slots.len().div_ceil(size);
        let batches = std::iter::from_fn(move || {
            let chunk: Vec<u32> = slots.by_ref().take(size).collect();
            (!chunk.is_empty()).then(|| Batch {
                space,
                call,
                keys: chunk.iter().map(|&slot| memory.key(slot).clone()).collect(),
                slots: chunk,
            })
        });
        Planned {
            count,
            batches: Box::new(batches),
        }
    }

    /// The slots of a space whose info is asked this cycle: missing,
    /// older than `info_interval`, or wanted by the agent's observation
    /// ([`Observation::wants_info`]) under its [`Refresh`].
    fn info_due(&self, space: usize, now: SystemTime, outcome: &CycleOutcome) -> Vec<u32> {
        let every = self.config.info_interval;
        let memory = &self.memory[space];
        let phases = self.refresh_phases(space);
        let refresh = |slot: usize| match phases[slot] {
            Phase::Unread => Refresh::Never,
            Phase::Run { odd } => Refresh::Every {
                interval: self.config.interval,
                in_phase: odd == (self.cycles % 2 == 1),
            },
        };
        let due = |slot: usize| {
            let Some(info) = &memory.info[slot] else {
                return true;
            };
            let answered = memory.observed[slot]
                .as_ref()
                .filter(|_| !outcome.failed[space][slot]);
            now.duration_since(info.fetched()).unwrap_or_default() >= every
                || answered.is_some_and(|observed| {
                    observed.wants_info(info, outcome.changed[space][slot], now, refresh(slot))
                })
        };
        (0..memory.len() as u32)
            .filter(|&slot| due(slot as usize))
            .collect()
    }

    /// The heartbeat refresh phase of each slot of a space: the parity of
    /// its run of [`AGENTS_PER_SEGMENT`] agents in the first group that
    /// lists it and reads its heartbeat, or [`Phase::Unread`] when no group
    /// listing it reads it. These are the runs the per-agent body is cut in
    /// while every agent has a row (an agent whose status was never
    /// answered, or is stale, has none and shifts the body's runs after it
    /// a little; the bound holds either way). Made for the cycle (a byte a
    /// slot) and dropped after.
    fn refresh_phases(&self, space: usize) -> Vec<Phase> {
        let mut phases = vec![Phase::Unread; self.memory[space].len()];
        let groups = self.config.groups.iter().zip(&self.plan.slots);
        for ((group, slots), reads) in groups.zip(&self.heartbeat_read) {
            if !reads || self.space_index(&Space::of(group)) != space {
                continue;
            }
            for (at, &slot) in slots.iter().enumerate() {
                if let Some(phase @ Phase::Unread) = phases.get_mut(slot as usize) {
                    let odd = at / AGENTS_PER_SEGMENT % 2 == 1;
                    *phase = Phase::Run { odd };
                }
            }
        }
        phases
    }

    /// Sends the planned batches, each call's at most a window at a time
    /// (pacing decides when each goes; the window only bounds how many are
    /// made ahead), and absorbs each as it is done.
    async fn run_batches<T>(
        &self,
        planned: Vec<Planned<'_>>,
        deadline: Instant,
        mut absorb: impl FnMut(Done<T>),
    ) where
        T: Send + 'static,
        Self: Fetch<T>,
    {
        let progress = &self.progress;
        let total: usize = planned.iter().map(|p| p.count).sum();
        progress.planned.fetch_add(total as u64, Ordering::Relaxed);
        let window = 2 * self.config.gse.max_in_flight.max(1);
        let send = |batch: Batch| async move {
            let fetched = tokio::time::timeout_at(deadline, self.fetch(&batch, deadline));
            let result = fetched.await.unwrap_or(Err(GseError::Timeout));
            progress.finished.fetch_add(1, Ordering::Relaxed);
            Done {
                space: batch.space,
                call: batch.call,
                slots: batch.slots,
                result,
                finished: Instant::now(),
            }
        };
        let mut running = futures::stream::select_all(planned.into_iter().map(|p| {
            futures::stream::iter(p.batches)
                .map(send)
                .buffer_unordered(window)
                .boxed()
        }));
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
            let (permit, waited) = pacer.acquire().await;
            self.telemetry.add_rate_limit_wait(waited);
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

    fn group_snapshot(
        &mut self,
        group: &GroupConfig,
        resolved: &ResolvedGroup,
        slots: &[u32],
        outcome: &CycleOutcome,
        elapsed: Duration,
        now: SystemTime,
    ) -> GroupSnapshot {
        let cutoff = stale_cutoff(now, self.config.stale_after);
        let space = self.space_index(&Space::of(group));
        let memory = &self.memory[space];
        let (failed, finished) = (&outcome.failed[space], &outcome.finished[space]);
        let mut agents = Vec::with_capacity(if group.per_agent_metrics {
            slots.len()
        } else {
            0
        });
        let mut counts = StateCounts::default();
        let mut versions = BTreeMap::new();
        let mut placement = PlacementCounts::default();
        let mut up = true;
        let mut strings = self.strings.lock();
        // The label values of the hosts that have none of their own.
        let blank: Arc<[String]> = vec![String::new(); group.host_label_names().len()].into();
        let mut duration = 0f32;
        for (entry, &slot) in resolved.hosts.iter().zip(slots) {
            let slot = slot as usize;
            up &= !failed[slot];
            duration = duration.max(finished[slot]);
            let info = memory.info[slot].as_ref();
            let cloud = entry
                .bk_cloud_id()
                .or(info.and_then(AgentInfo::bk_cloud_id));
            let Some(observed) = memory.observed[slot]
                .as_ref()
                .filter(|o| !o.is_stale(cutoff))
            else {
                counts.add(AgentState::Unknown);
                placement.add(cloud, None, AgentState::Unknown, &strings);
                continue;
            };
            placement.add(cloud, info, observed.state(), &strings);
            count_state(
                &mut counts,
                &mut versions,
                observed.state(),
                observed.version(info, &strings),
            );
            // Groups without per-agent series keep only their counts, which
            // keeps memory flat at a million agents.
            if group.per_agent_metrics {
                let record = observed.record(info, &strings);
                let mut row = AgentRow::new(entry, info, record, &blank, &mut strings);
                if let Some(id) = answered_id(group.api, entry, observed) {
                    row.bk_agent_id = id;
                }
                agents.push(row);
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
            bk_biz_name: resolved.bk_biz_name.clone(),
            agents,
            counts,
            versions,
            placement: placement.finish(),
            up,
            poll_duration: if resolved.hosts.is_empty() {
                elapsed.as_secs_f64()
            } else {
                f64::from(duration)
            },
            interval: self.config.interval.as_secs_f64(),
            last_success: self.last_success.get(&group.name).copied(),
            skipped: resolved.skipped.clone(),
            discovery: resolved.discovery,
            hosts_file_read: resolved.hosts_file_read,
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

/// Keeps what a status batch says; a failed batch keeps the last observations.
fn absorb_status(
    batch: Done<Status>,
    observed: &mut [Vec<Option<Observation>>],
    strings: &mut Interner,
    outcome: &mut CycleOutcome,
) {
    let space = outcome.count(&batch);
    match batch.result {
        Ok(reply) => {
            let now = SystemTime::now();
            for (&slot, status) in batch.slots.iter().zip(reply.answers) {
                let last = &mut observed[space][slot as usize];
                let alive = last.as_ref().and_then(Observation::last_seen_alive);
                let next = Observation::new(status.as_ref(), alive, now, strings);
                outcome.changed[space][slot as usize] =
                    last.as_ref().is_some_and(|last| next.changed_since(last));
                *last = Some(next);
            }
        }
        Err(err) => {
            for &slot in &batch.slots {
                outcome.failed[space][slot as usize] = true;
            }
            outcome.errors.push((batch.call, err));
        }
    }
}

/// Keeps a batch's info in compact form; a failed batch keeps its last info
/// and is asked for again next cycle.
fn absorb_info(
    batch: Done<Info>,
    now: SystemTime,
    info: &mut [Vec<Option<AgentInfo>>],
    strings: &mut Interner,
    outcome: &mut CycleOutcome,
) {
    let space = outcome.count(&batch);
    match batch.result {
        Ok(reply) => {
            for (&slot, got) in batch.slots.iter().zip(reply.answers) {
                let got = got.unwrap_or_default();
                info[space][slot as usize] = Some(AgentInfo::new(&got, now, strings));
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
        let tenant = self.spaces[batch.space].tenant.as_deref();
        self.attempt(batch.call, base, deadline, || {
            self.client.status(batch.call, base, tenant, &batch.keys)
        })
        .await
    }
}

impl Fetch<Info> for Poller {
    async fn fetch(&self, batch: &Batch, deadline: Instant) -> Result<Reply<Info>, GseError> {
        let base = self.base(batch.call)?;
        let tenant = self.spaces[batch.space].tenant.as_deref();
        self.attempt(batch.call, base, deadline, || {
            self.client.info(batch.call, base, tenant, &batch.keys)
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

/// The agent id GSE 2.0 answered with for a host configured without one
/// (by `cloud:ip`): the key it was asked by, which is the legacy id of an
/// agent not yet upgraded. None when GSE did not answer for it.
fn answered_id(api: ApiVersion, entry: &HostEntry, observed: &Observation) -> Option<KeyLabel> {
    let answered = observed.state() != AgentState::NotFound;
    (api == ApiVersion::V2 && entry.agent_id().is_none() && answered).then(|| entry.key.label())
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
    use crate::upstream::gse::Status;
    use std::collections::BTreeSet;
    use std::path::Path;
    use std::time::UNIX_EPOCH;

    /// A poller of one GSE 2.0 group per entry of `groups` (its number of
    /// agents and `per_agent_metrics`), planned as a cycle would plan it.
    fn planned(groups: &[(usize, bool)], deny: &[&str]) -> Poller {
        let mut yaml = String::from(
            "gse: {api: v2, url: http://127.0.0.1:1/gse, app_code: a, app_secret: b}\n\
             interval: 60s\ninfo_interval: 1h\n",
        );
        yaml += &format!("metric_deny: {deny:?}\ngroups:\n");
        for (g, &(agents, per_agent)) in groups.iter().enumerate() {
            let hosts: Vec<String> = (0..agents).map(|i| format!("\"g{g}a{i}\"")).collect();
            yaml += &format!(
                "  - {{name: g{g}, bk_biz_id: 2, per_agent_metrics: {per_agent}, hosts: [{}]}}\n",
                hosts.join(",")
            );
        }
        let config = Arc::new(Config::parse(&yaml, Path::new(".")).unwrap());
        let mut poller = Poller::new(config.clone(), Arc::default()).unwrap();
        plan(&mut poller, &config, 0);
        poller
    }

    /// Plans the configured hosts plus `more` new ones in the first group.
    fn plan(poller: &mut Poller, config: &Config, more: usize) {
        let resolved: Vec<ResolvedGroup> = config
            .groups
            .iter()
            .enumerate()
            .map(|(g, group)| {
                let extra = (0..if g == 0 { more } else { 0 }).map(|i| crate::model::Host {
                    agent_id: Some(format!("new{i}")),
                    ..group.hosts[0].clone()
                });
                let hosts = group.hosts.iter().cloned().chain(extra);
                let entries = hosts
                    .filter_map(|h| HostEntry::new(&h, group.api, Arc::from([])))
                    .collect();
                ResolvedGroup {
                    hosts: Arc::new(entries),
                    skipped: BTreeMap::new(),
                    discovery: None,
                    hosts_file_read: None,
                    bk_biz_name: None,
                }
            })
            .collect();
        poller.update_plan(&config.groups, &resolved);
    }

    /// Runs one cycle at `now` in which every agent is online (the slots in
    /// `changed` having just changed) and GSE answers every info asked;
    /// returns the slots whose info was asked.
    fn cycle(poller: &mut Poller, now: SystemTime, changed: &[u32]) -> Vec<u32> {
        let online = Status {
            alive: true,
            status_code: Some(2),
            version: None,
            report_time: None,
        };
        let info = Info {
            report_time: Some(unix_seconds(now) - 5.0),
            ..Info::default()
        };
        let strings = poller.strings.get_mut();
        let memory = &mut poller.memory[0];
        for observed in &mut memory.observed {
            *observed = Some(Observation::new(Some(&online), None, now, strings));
        }
        let mut outcome = CycleOutcome::new(&poller.memory, Instant::now());
        for &slot in changed {
            outcome.changed[0][slot as usize] = true;
        }
        let due = poller.info_due(0, now, &outcome);
        let strings = poller.strings.get_mut();
        for &slot in &due {
            poller.memory[0].info[slot as usize] = Some(AgentInfo::new(&info, now, strings));
        }
        poller.cycles += 1;
        due
    }

    /// The run of a group's agent at `at` in the per-agent body.
    fn run(at: u32) -> u32 {
        at / AGENTS_PER_SEGMENT as u32
    }

    #[test]
    fn heartbeats_are_refreshed_by_runs_half_of_them_each_cycle() {
        let agents = 3 * AGENTS_PER_SEGMENT + 100;
        let mut poller = planned(&[(agents, true)], &[]);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        // Cycles start a little late or early, as they do.
        let at = |c: u64| t0 + Duration::from_secs(60 * c) + Duration::from_millis(c % 3 * 4_000);
        assert_eq!(cycle(&mut poller, at(0), &[]).len(), agents, "first: all");
        assert_eq!(size_of::<Phase>(), 1, "a byte a slot, for the cycle");
        let mut last = vec![0u64; agents];
        for c in 1..12 {
            let due = cycle(&mut poller, at(c), &[]);
            // Whole runs of the body, of this cycle's parity: half of them.
            let parity = (c % 2) as u32;
            assert!(due.iter().all(|&slot| run(slot) % 2 == parity), "cycle {c}");
            let runs_due = due.iter().map(|&slot| run(slot)).collect::<BTreeSet<_>>();
            let runs = (0..agents as u32).map(run).filter(|r| r % 2 == parity);
            assert_eq!(
                runs_due,
                runs.collect(),
                "cycle {c}: every run of its parity"
            );
            for &slot in &due {
                last[slot as usize] = c;
            }
            // Never longer than every other cycle.
            assert!(last.iter().all(|&l| c - l <= 1), "cycle {c}");
        }
    }

    #[test]
    fn a_new_agent_and_a_changed_one_are_asked_at_once() {
        let agents = 2 * AGENTS_PER_SEGMENT;
        let mut poller = planned(&[(agents, true)], &[]);
        let config = poller.config.clone();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        let at = |c: u64| t0 + Duration::from_secs(60 * c);
        cycle(&mut poller, at(0), &[]);
        // Cycle 1 refreshes the odd run; slot 5 (even run) changed state.
        let due = cycle(&mut poller, at(1), &[5]);
        assert!(due.contains(&5), "a change is asked at once");
        assert_eq!(due.len(), AGENTS_PER_SEGMENT + 1);
        // Back in its phase next cycle, and after that every other cycle.
        assert!(cycle(&mut poller, at(2), &[]).contains(&5));
        assert!(!cycle(&mut poller, at(3), &[]).contains(&5));
        // A new agent (appended to the group) is asked in the cycle it appears.
        plan(&mut poller, &config, 1);
        let due = cycle(&mut poller, at(4), &[]);
        assert!(due.contains(&(agents as u32)), "new agent asked at once");
        assert_eq!(due.len(), AGENTS_PER_SEGMENT + 1);
    }

    #[test]
    fn heartbeats_no_one_exports_are_not_refreshed() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        let at = |c: u64| t0 + Duration::from_secs(60 * c);
        let asked = |poller: &mut Poller| -> usize {
            (0..6).map(|c| cycle(poller, at(c), &[]).len()).sum()
        };
        let both = [
            "gse_agent_heartbeat_age_seconds",
            "gse_agent_heartbeat_.*_seconds",
        ];
        // Denied both: only the first cycle asks.
        assert_eq!(asked(&mut planned(&[(100, true)], &both)), 100);
        // Exported (one run, even): cycles 0, 2 and 4.
        assert_eq!(asked(&mut planned(&[(100, true)], &[])), 300);
        // No per-agent series in the group: the same.
        assert_eq!(asked(&mut planned(&[(100, false)], &[])), 100);
        // One heartbeat family still exported: every other cycle.
        let one = ["gse_agent_heartbeat_age_seconds"];
        assert_eq!(asked(&mut planned(&[(100, true)], &one)), 300);
        // Two groups: only the one with per-agent series is refreshed.
        let mut two = planned(&[(100, true), (100, false)], &[]);
        assert_eq!(asked(&mut two), 200 + 2 * 100);
    }

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
