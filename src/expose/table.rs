//! The metric table: every family's name, type, help text and label names,
//! declared once.
//!
//! The text encoders, the OTLP push and `docs/metrics.md` (checked by a test)
//! all follow it; nothing else spells a metric or label name. Also holds the
//! rules that read each per-group gauge from a group.

use crate::snapshot::GroupSnapshot;

/// How a metric behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A monotonically increasing total (name ends in `_total`).
    Counter,
    /// A histogram (`_bucket`, `_sum`, `_count`).
    Histogram,
}

/// One row of the metric table.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    /// Full name as it appears in the exposition.
    pub name: &'static str,
    /// HELP text.
    pub(crate) help: &'static str,
    /// Type.
    pub kind: Kind,
    /// Label names; `+extra` stands for the group's configured labels.
    pub labels: &'static [&'static str],
}

/// The labels every per-agent family carries, in order; `+extra` stands for
/// the group's configured labels and CMDB host labels.
pub(crate) const AGENT_LABELS: &[&str] = &[
    "group",
    "bk_biz_id",
    "bk_cloud_id",
    "ip",
    "bk_agent_id",
    "+extra",
];

impl MetricDef {
    /// This family's label names paired with `values`, in the table's order.
    pub(crate) fn labels<'a, const N: usize>(
        &self,
        values: [&'a str; N],
    ) -> [(&'static str, &'a str); N] {
        debug_assert_eq!(self.labels.len(), N, "{}: label values", self.name);
        std::array::from_fn(|i| (self.labels[i], values[i]))
    }
}

macro_rules! metric {
    ($id:ident, $name:literal, $kind:ident, [$($label:literal),*], $help:literal) => {
        #[doc = $help]
        pub(crate) const $id: MetricDef = MetricDef { name: $name, help: $help, kind: Kind::$kind, labels: &[$($label),*] };
    };
    ($id:ident, $name:literal, $kind:ident, $labels:expr, $help:literal) => {
        #[doc = $help]
        pub(crate) const $id: MetricDef = MetricDef { name: $name, help: $help, kind: Kind::$kind, labels: $labels };
    };
}

metric!(
    AGENT_ONLINE,
    "gse_agent_online",
    Gauge,
    AGENT_LABELS,
    "Whether GSE reports the agent alive (1) or not (0: offline or unknown to GSE), as of the last successful poll."
);
metric!(
    AGENT_HEARTBEAT_AGE,
    "gse_agent_heartbeat_age_seconds",
    Gauge,
    AGENT_LABELS,
    "Seconds since the agent's last heartbeat as of the poll: from GSE 2.0's report_time, or for GSE 1.x since the exporter last saw the agent alive."
);
metric!(
    AGENT_HEARTBEAT_TIMESTAMP,
    "gse_agent_heartbeat_timestamp_seconds",
    Gauge,
    AGENT_LABELS,
    "Unix time of the agent's last heartbeat known to the exporter: GSE 2.0's report_time, or for GSE 1.x the last poll that saw the agent alive."
);
metric!(
    AGENT_INFO,
    "gse_agent_info",
    Gauge,
    &[
        "group",
        "bk_biz_id",
        "bk_cloud_id",
        "ip",
        "bk_agent_id",
        "+extra",
        "version",
        "parent_ip"
    ],
    "Agent facts from GSE (version, upstream parent); value is always 1."
);
metric!(
    AGENT_TOPOLOGY_INFO,
    "gse_agent_topology_info",
    Gauge,
    &[
        "group",
        "bk_biz_id",
        "bk_cloud_id",
        "ip",
        "bk_agent_id",
        "+extra",
        "bk_biz_name",
        "bk_set_name",
        "bk_module_name",
        "operator",
        "bk_bak_operator"
    ],
    "Where CMDB puts the agent's host (business, set and module names; several sets or modules: each distinct name once, sorted, joined by commas) and its maintainers, as of the last CMDB refresh, for groups with cmdb.topology; value is always 1."
);
metric!(
    AGENT_STATUS_CODE,
    "gse_agent_status_code",
    Gauge,
    AGENT_LABELS,
    "GSE 2.0 status code as reported (2 = running); -2 when GSE does not know the agent (both APIs)."
);
metric!(
    AGENTS,
    "gse_agents",
    Gauge,
    ["group", "bk_biz_id", "state"],
    "Agents of the group per state (online, offline, not_found, unknown = not asked successfully within stale_after)."
);
metric!(
    AGENT_VERSIONS,
    "gse_agent_versions",
    Gauge,
    ["group", "bk_biz_id", "version"],
    "Agents GSE knows in the group, per agent version (empty = unknown)."
);
metric!(
    PARENT_AGENTS,
    "gse_parent_agents",
    Gauge,
    ["group", "bk_biz_id", "parent_ip", "state"],
    "Agents of the group GSE knows behind each upstream parent (a GSE proxy or server: parent_ip of the info call), online or offline."
);
metric!(
    CLOUD_AGENTS,
    "gse_cloud_agents",
    Gauge,
    ["group", "bk_biz_id", "bk_cloud_id", "state"],
    "Agents of the group per BlueKing cloud area and state (online, offline, not_found, unknown)."
);
metric!(
    UP,
    "gse_up",
    Gauge,
    ["group"],
    "Whether every GSE request of the group's last poll cycle succeeded (1) or the exporter is blind to some of it (0)."
);
metric!(
    BUILD_INFO,
    "gse_exporter_build_info",
    Gauge,
    ["version", "revision", "branch", "rustc_version"],
    "Build of the running exporter; value is always 1."
);
metric!(
    API_REQUESTS,
    "gse_exporter_api_requests_total",
    Counter,
    ["api", "result"],
    "GSE API requests by call and result."
);
metric!(
    API_DURATION,
    "gse_exporter_api_request_duration_seconds",
    Histogram,
    ["api"],
    "Duration of GSE API requests, one attempt each."
);
metric!(
    API_RETRIES,
    "gse_exporter_api_retries_total",
    Counter,
    ["api"],
    "GSE API requests that were attempts after the first for their batch."
);
metric!(
    POLL_DURATION,
    "gse_exporter_poll_duration_seconds",
    Gauge,
    ["group"],
    "Seconds the group's part of the last poll cycle took."
);
metric!(
    POLL_INTERVAL,
    "gse_exporter_poll_interval_seconds",
    Gauge,
    ["group"],
    "Configured poll interval of the group in seconds."
);
metric!(
    LAST_POLL_SUCCESS,
    "gse_exporter_last_poll_success_timestamp_seconds",
    Gauge,
    ["group"],
    "Unix time of the last poll cycle in which every request of the group succeeded."
);
metric!(
    RATE_LIMIT_WAIT,
    "gse_exporter_rate_limit_wait_seconds_total",
    Counter,
    [],
    "Seconds requests spent waiting for the exporter's own GSE rate limit."
);
metric!(
    BODY_BYTES,
    "gse_exporter_metrics_body_bytes",
    Gauge,
    ["encoding"],
    "Size of the previous cached /metrics body (Prometheus text format) per encoding."
);

metric!(
    GROUP_HOSTS,
    "gse_exporter_group_hosts",
    Gauge,
    ["group"],
    "Hosts of the group this process polls (after de-duplication and sharding)."
);
metric!(
    DISCOVERY_SUCCESS,
    "gse_exporter_discovery_success",
    Gauge,
    ["group"],
    "Whether the group's last CMDB discovery succeeded (its last good host list is kept when not)."
);
metric!(
    DISCOVERY_LAST_SUCCESS,
    "gse_exporter_discovery_last_success_timestamp_seconds",
    Gauge,
    ["group"],
    "Unix time of the group's last successful CMDB discovery."
);
metric!(
    HOSTS_FILE_READ,
    "gse_exporter_hosts_file_read_success",
    Gauge,
    ["group"],
    "Whether the group's hosts file could be read when it last changed (its last hosts are kept when not)."
);
metric!(
    DISCOVERY_HELD_BACK,
    "gse_exporter_discovery_held_back",
    Gauge,
    ["group"],
    "1 while a CMDB refresh that would shrink the group by cmdb.max_shrink or more is held back."
);
metric!(
    DISCOVERY_SKIPPED,
    "gse_exporter_discovery_hosts_skipped",
    Gauge,
    ["group", "reason"],
    "Discovered hosts that cannot be asked for, by reason."
);
metric!(
    RELOAD_SUCCESS,
    "gse_exporter_config_last_reload_successful",
    Gauge,
    [],
    "Whether the last configuration reload succeeded."
);
metric!(
    RELOAD_TIMESTAMP,
    "gse_exporter_config_last_reload_success_timestamp_seconds",
    Gauge,
    [],
    "Unix time of the last successful configuration load."
);
metric!(
    WEB_CONFIG_SUCCESS,
    "gse_exporter_web_config_last_reload_successful",
    Gauge,
    [],
    "Whether the last change of the web configuration file was applied (0: refused, the last good one stays in force)."
);
metric!(
    HTTP_REJECTED,
    "gse_exporter_http_requests_rejected_total",
    Counter,
    ["reason"],
    "Connections and requests the HTTP server turned away, by reason: unauthorized, rate_limited, too_many_scrapes, too_many_connections, tls_handshake, idle_closed."
);
metric!(
    SHARD_ORDINAL,
    "gse_exporter_shard_ordinal",
    Gauge,
    [],
    "This process's shard, from 0."
);
metric!(
    OTLP_EXPORTS,
    "gse_exporter_otlp_exports_total",
    Counter,
    ["result"],
    "OTLP pushes by result (success, failure), each one push with its retries."
);
metric!(
    PROCESS_CPU,
    "process_cpu_seconds_total",
    Counter,
    [],
    "Total user and system CPU time spent in seconds, as of the last render (once per cycle)."
);
metric!(
    PROCESS_RESIDENT_MEMORY,
    "process_resident_memory_bytes",
    Gauge,
    [],
    "Resident memory size in bytes, as of the last render (once per cycle)."
);
metric!(
    PROCESS_START_TIME,
    "process_start_time_seconds",
    Gauge,
    [],
    "Start time of the process since unix epoch in seconds."
);
metric!(
    PROCESS_OPEN_FDS,
    "process_open_fds",
    Gauge,
    [],
    "Number of open file descriptors, as of the last render (once per cycle)."
);
metric!(
    PROCESS_MAX_FDS,
    "process_max_fds",
    Gauge,
    [],
    "Maximum number of open file descriptors."
);
metric!(
    TOTAL_SHARDS,
    "gse_exporter_total_shards",
    Gauge,
    [],
    "Number of shards the agents are split into."
);

/// Every metric the exporter can expose, in exposition order.
pub const TABLE: &[MetricDef] = &[
    AGENT_ONLINE,
    AGENT_HEARTBEAT_AGE,
    AGENT_HEARTBEAT_TIMESTAMP,
    AGENT_INFO,
    AGENT_TOPOLOGY_INFO,
    AGENT_STATUS_CODE,
    AGENTS,
    AGENT_VERSIONS,
    PARENT_AGENTS,
    CLOUD_AGENTS,
    UP,
    BUILD_INFO,
    API_REQUESTS,
    API_DURATION,
    API_RETRIES,
    POLL_DURATION,
    POLL_INTERVAL,
    LAST_POLL_SUCCESS,
    RATE_LIMIT_WAIT,
    BODY_BYTES,
    GROUP_HOSTS,
    DISCOVERY_SUCCESS,
    DISCOVERY_LAST_SUCCESS,
    DISCOVERY_HELD_BACK,
    DISCOVERY_SKIPPED,
    HOSTS_FILE_READ,
    RELOAD_SUCCESS,
    RELOAD_TIMESTAMP,
    WEB_CONFIG_SUCCESS,
    HTTP_REJECTED,
    OTLP_EXPORTS,
    SHARD_ORDINAL,
    TOTAL_SHARDS,
    PROCESS_CPU,
    PROCESS_RESIDENT_MEMORY,
    PROCESS_START_TIME,
    PROCESS_OPEN_FDS,
    PROCESS_MAX_FDS,
];

/// A per-group gauge whose only label is `group`: its value for a group (None: no sample).
pub(crate) type GroupValue = fn(&GroupSnapshot) -> Option<f64>;

fn flag(b: bool) -> f64 {
    f64::from(u8::from(b))
}

/// The per-group gauges labelled by `group` alone, in exposition order, with
/// the rule that reads each from a group (shared with the OTLP push).
pub(crate) const GROUP_GAUGES: [(&MetricDef, GroupValue); 9] = [
    (&UP, |g| Some(flag(g.up))),
    (&POLL_DURATION, |g| Some(g.poll_duration)),
    (&POLL_INTERVAL, |g| Some(g.interval)),
    (&LAST_POLL_SUCCESS, |g| g.last_success),
    (
        &GROUP_HOSTS,
        |g| Some(g.counts.0.iter().sum::<u64>() as f64),
    ),
    (&DISCOVERY_SUCCESS, |g| g.discovery.map(|d| flag(d.success))),
    (&DISCOVERY_LAST_SUCCESS, |g| {
        g.discovery.and_then(|d| d.last_success)
    }),
    (&DISCOVERY_HELD_BACK, |g| {
        g.discovery.map(|d| flag(d.held_back))
    }),
    (&HOSTS_FILE_READ, |g| g.hosts_file_read.map(flag)),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topology_labels_are_the_ones_config_reserves() {
        assert_eq!(AGENT_TOPOLOGY_INFO.labels[..6], AGENT_INFO.labels[..6]);
        assert_eq!(
            AGENT_TOPOLOGY_INFO.labels[6..],
            *crate::config::TOPOLOGY_LABELS
        );
    }
}
