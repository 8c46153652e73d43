//! The published picture of one cycle: immutable once built.
//!
//! Owns the data types of a snapshot (groups, agent rows and records, counts
//! per state and version) and the pure counting rules on them. The poller
//! builds a [`Snapshot`]; `expose` renders it; nothing changes it after. No
//! I/O and no text formatting here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::model::{DiscoveryStatus, IpLabel, KeyLabel, Sharding, Topology};

/// Where an agent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentState {
    /// GSE says it is alive.
    Online,
    /// GSE knows it and says it is not alive.
    Offline,
    /// GSE does not know it.
    NotFound,
    /// GSE could not be asked for longer than `stale_after`.
    Unknown,
}

impl AgentState {
    /// Every state in label order.
    pub(crate) const ALL: [AgentState; 4] = [
        AgentState::Online,
        AgentState::Offline,
        AgentState::NotFound,
        AgentState::Unknown,
    ];

    /// The `state` label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            AgentState::Online => "online",
            AgentState::Offline => "offline",
            AgentState::NotFound => "not_found",
            AgentState::Unknown => "unknown",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// GSE 2.0's own code for an agent it does not know; used for both APIs.
pub(crate) const STATUS_NOT_FOUND: i64 = -2;

/// The per-agent families whose values are an [`AgentRecord`]'s heartbeat
/// (`heartbeat_age`, `heartbeat_at`), by name: when `metric_deny` removes
/// both, nothing exported reads the heartbeat and the poller does not ask
/// GSE again for it (the exposition layer's tests check these are the
/// families that read it).
pub(crate) const HEARTBEAT_FAMILIES: [&str; 2] = [
    "gse_agent_heartbeat_age_seconds",
    "gse_agent_heartbeat_timestamp_seconds",
];

/// Agents of a group per segment of the per-agent body: a segment of a
/// family is the lines of this many agents in the group's order, re-rendered
/// and compressed only when its text changed. The poller refreshes
/// heartbeats by runs of this many agents, so a cycle changes about half the
/// heartbeat segments, not all of them every other cycle.
pub(crate) const AGENTS_PER_SEGMENT: usize = 2048;

/// What the exporter last learned of one agent (shared by every group that has it).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRecord {
    /// Online, offline or not found (never unknown: that is derived from age).
    pub state: AgentState,
    /// GSE 2.0 status code, or -2 when not found; `None` for a known v1 agent.
    pub status_code: Option<i64>,
    /// Agent version ("" when unknown), shared between agents.
    pub version: Arc<str>,
    /// Upstream proxy or server ("" when unknown), shared between agents.
    pub parent_ip: Arc<str>,
    /// Unix time of the last heartbeat known: GSE 2.0's `report_time`, else
    /// when the exporter last saw the agent alive.
    pub heartbeat_at: Option<f64>,
    /// Seconds from `heartbeat_at` to `observed_at`.
    pub heartbeat_age: Option<f64>,
    /// When GSE last answered for this agent.
    pub observed_at: SystemTime,
    /// When the agent was last seen alive.
    pub last_seen_alive: Option<SystemTime>,
}

/// One agent as exported: its label values and its record. The strings are
/// shared with the poller's memory (read them as `&str`).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRow {
    /// `bk_cloud_id` label ("" when unknown).
    pub bk_cloud_id: Arc<str>,
    /// `ip` label ("" when unknown).
    pub ip: IpLabel,
    /// `bk_agent_id` label ("" when unknown).
    pub bk_agent_id: KeyLabel,
    /// Values of the group's CMDB labels (`GroupSnapshot::host_label_names`).
    pub host_labels: Arc<[String]>,
    /// Where CMDB puts the host, for groups with topology (None: CMDB has
    /// not listed it), shared between agents.
    pub topology: Option<Arc<Topology>>,
    /// What is known of it.
    pub record: AgentRecord,
}

/// Agents per state, in [`AgentState::ALL`] order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts(pub [u64; 4]);

impl StateCounts {
    /// Counts one more agent in a state.
    pub(crate) fn add(&mut self, state: AgentState) {
        self.0[state.index()] += 1;
    }
    /// Agents in a state.
    pub(crate) fn get(&self, state: AgentState) -> u64 {
        self.0[state.index()]
    }
}

/// Where a group's agents sit: behind which upstream parent (a GSE proxy or
/// server, `parent_ip` of the info call) and in which cloud area, with their
/// states, so that a dead proxy or cloud area reads as one outage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    /// Per parent, sorted: agents GSE knows (online, offline) whose last info
    /// named that parent. Agents without a known parent are left out.
    pub parents: Vec<(Arc<str>, StateCounts)>,
    /// Per cloud area (configured, else as GSE knows it), sorted: agents in
    /// every state. Agents whose cloud area is unknown are left out.
    pub clouds: Vec<(i64, StateCounts)>,
}

impl Placement {
    /// The states counted per parent: GSE names a parent only for agents it knows.
    pub const PARENT_STATES: [AgentState; 2] = [AgentState::Online, AgentState::Offline];
}

/// One group after a cycle. (`Default` is for fixtures: an empty group
/// that is down, named "".)
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupSnapshot {
    /// The `group` label.
    pub name: String,
    /// The `bk_biz_id` label.
    pub bk_biz_id: String,
    /// Extra labels, sorted.
    pub labels: Vec<(String, String)>,
    /// Names of per-host CMDB labels (values in `AgentRow::host_labels`).
    pub host_label_names: Vec<String>,
    /// Whether per-agent series are exported for this group.
    pub per_agent_metrics: bool,
    /// The business name, for groups with `cmdb.topology` (whose agents get
    /// a topology series each); "" while CMDB has not named it.
    pub bk_biz_name: Option<Arc<str>>,
    /// Exported agents (online, offline, not found; unknown ones are left out).
    pub agents: Vec<AgentRow>,
    /// Agents per state, unknown included.
    pub counts: StateCounts,
    /// Known agents (online or offline) per version.
    pub versions: BTreeMap<String, u64>,
    /// Agents per upstream parent and per cloud area.
    pub placement: Placement,
    /// Every status batch of the group succeeded in the last cycle.
    pub up: bool,
    /// Seconds the group's part of the last cycle took.
    pub poll_duration: f64,
    /// Configured interval in seconds.
    pub interval: f64,
    /// Unix time of the last cycle in which every batch succeeded.
    pub last_success: Option<f64>,
    /// Discovered hosts that cannot be asked for, by reason.
    pub skipped: BTreeMap<&'static str, u64>,
    /// CMDB discovery state, for groups that use it.
    pub discovery: Option<DiscoveryStatus>,
    /// Whether the group's hosts file could be read when it last changed
    /// (its last hosts are kept when not), for groups that have one.
    pub hosts_file_read: Option<bool>,
}

impl GroupSnapshot {
    /// Counts states and versions over the exported agents plus `unknown` more.
    pub fn tally(&mut self, unknown: u64) {
        let mut counts = StateCounts::default();
        let mut versions = BTreeMap::new();
        for agent in &self.agents {
            count(&mut counts, &mut versions, &agent.record);
        }
        counts.0[AgentState::Unknown.index()] = unknown;
        self.counts = counts;
        self.versions = versions;
    }
}

/// Counts one agent's state, and its version when GSE knows it.
pub(crate) fn count(
    counts: &mut StateCounts,
    versions: &mut BTreeMap<String, u64>,
    record: &AgentRecord,
) {
    count_state(counts, versions, record.state, &record.version);
}

/// Counts an agent in `state`, and its `version` when the agent is known.
pub(crate) fn count_state(
    counts: &mut StateCounts,
    versions: &mut BTreeMap<String, u64>,
    state: AgentState,
    version: &str,
) {
    counts.add(state);
    if matches!(state, AgentState::Online | AgentState::Offline) {
        match versions.get_mut(version) {
            Some(n) => *n += 1,
            None => {
                versions.insert(version.to_string(), 1);
            }
        }
    }
}

/// The whole picture after one cycle.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    /// Groups in configuration order.
    pub groups: Vec<GroupSnapshot>,
    /// Whether at least one complete cycle is behind this snapshot.
    pub complete: bool,
    /// This process's shard.
    pub sharding: Sharding,
    /// Metric families never exposed (patterns, anchored).
    pub metric_deny: Vec<String>,
}
