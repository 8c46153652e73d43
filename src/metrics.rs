//! The metric table, the exporter's self-telemetry, and the snapshot encoder.
//!
//! Every metric name, type and help text is declared once in [`TABLE`]; the
//! encoder and `docs/metrics.md` (checked by a test) follow it. Encoding goes
//! through `prometheus-client`'s text encoders (Prometheus 0.0.4 and
//! OpenMetrics) with one collector that walks a [`Snapshot`]. This module never
//! calls GSE and never changes state; it is run once per snapshot, not per scrape.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::gse::Call;
use crate::state::{AgentState, GroupSnapshot, Snapshot};

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
    pub help: &'static str,
    /// Type.
    pub kind: Kind,
    /// Label names; `+extra` stands for the group's configured labels.
    pub labels: &'static [&'static str],
}

const AGENT_LABELS: &[&str] = &[
    "group",
    "bk_biz_id",
    "bk_cloud_id",
    "ip",
    "bk_agent_id",
    "+extra",
];

macro_rules! metric {
    ($id:ident, $name:literal, $kind:ident, [$($label:literal),*], $help:literal) => {
        #[doc = $help]
        pub const $id: MetricDef = MetricDef { name: $name, help: $help, kind: Kind::$kind, labels: &[$($label),*] };
    };
    ($id:ident, $name:literal, $kind:ident, $labels:expr, $help:literal) => {
        #[doc = $help]
        pub const $id: MetricDef = MetricDef { name: $name, help: $help, kind: Kind::$kind, labels: $labels };
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
    ["version", "revision", "rustc_version"],
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
    HTTP_REJECTED,
    "gse_exporter_http_requests_rejected_total",
    Counter,
    ["reason"],
    "Connections and requests the HTTP server turned away, by reason: unauthorized, rate_limited, too_many_scrapes, too_many_connections, tls_handshake."
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
    AGENT_INFO,
    AGENT_STATUS_CODE,
    AGENTS,
    AGENT_VERSIONS,
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
    RELOAD_SUCCESS,
    RELOAD_TIMESTAMP,
    HTTP_REJECTED,
    OTLP_EXPORTS,
    SHARD_ORDINAL,
    TOTAL_SHARDS,
];

/// A per-group gauge whose only label is `group`: its value for a group (None: no sample).
pub type GroupValue = fn(&GroupSnapshot) -> Option<f64>;

fn flag(b: bool) -> f64 {
    f64::from(u8::from(b))
}

/// The per-group gauges labelled by `group` alone, in exposition order, with
/// the rule that reads each from a group (shared with the OTLP push).
pub const GROUP_GAUGES: [(&MetricDef, GroupValue); 8] = [
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
];

/// Reasons a discovered host is skipped, as `reason` label values.
pub const SKIP_REASONS: [&str; 2] = [
    crate::discovery::SKIP_NO_ADDRESS,
    crate::discovery::SKIP_NO_IPV4_FOR_V1,
];

/// Buckets of the API request histogram, in seconds.
const API_BUCKETS: [f64; 11] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

type ApiLabels = [(&'static str, &'static str); 1];
type ApiResultLabels = [(&'static str, &'static str); 2];

/// The exporter's own counters and histograms, updated by the poller.
#[derive(Debug)]
pub struct Telemetry {
    api_requests: Family<ApiResultLabels, Counter>,
    api_duration: Family<ApiLabels, Histogram, fn() -> Histogram>,
    api_retries: Family<ApiLabels, Counter>,
    rate_limit_wait: Counter<f64, AtomicU64>,
    body_bytes: Family<[(&'static str, &'static str); 1], Gauge>,
    reload_success: Gauge,
    reload_timestamp: Gauge<f64, AtomicU64>,
    http_rejected: Family<[(&'static str, &'static str); 1], Counter>,
    otlp_exports: Family<[(&'static str, &'static str); 1], Counter>,
    otlp_enabled: AtomicBool,
}

/// Why the HTTP server turned a client away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Missing or wrong basic-auth credentials.
    Unauthorized,
    /// Over the web configuration's `rate_limit`.
    RateLimited,
    /// Over `--web.max-requests` concurrent scrapes.
    TooManyScrapes,
    /// Over `--web.max-connections` open connections.
    TooManyConnections,
    /// A TLS handshake failed or timed out.
    TlsHandshake,
}

impl Rejection {
    /// Every reason, for pre-creating the series.
    pub const ALL: [Rejection; 5] = [
        Rejection::Unauthorized,
        Rejection::RateLimited,
        Rejection::TooManyScrapes,
        Rejection::TooManyConnections,
        Rejection::TlsHandshake,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::Unauthorized => "unauthorized",
            Rejection::RateLimited => "rate_limited",
            Rejection::TooManyScrapes => "too_many_scrapes",
            Rejection::TooManyConnections => "too_many_connections",
            Rejection::TlsHandshake => "tls_handshake",
        }
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        let telemetry = Telemetry {
            api_requests: Family::default(),
            api_duration: Family::new_with_constructor(|| Histogram::new(API_BUCKETS)),
            api_retries: Family::default(),
            rate_limit_wait: Counter::default(),
            body_bytes: Family::default(),
            reload_success: Gauge::default(),
            reload_timestamp: Gauge::default(),
            http_rejected: Family::default(),
            otlp_exports: Family::default(),
            otlp_enabled: AtomicBool::new(false),
        };
        for rejection in Rejection::ALL {
            let _ = telemetry
                .http_rejected
                .get_or_create(&[("reason", rejection.label())]);
        }
        telemetry.reload_success.set(1);
        telemetry
            .reload_timestamp
            .set(crate::state::unix_seconds(std::time::SystemTime::now()));
        for call in Call::ALL {
            for result in crate::gse::RESULT_LABELS {
                let _ = telemetry
                    .api_requests
                    .get_or_create(&[("api", call.label()), ("result", result)]);
            }
            let _ = telemetry
                .api_duration
                .get_or_create(&[("api", call.label())]);
            let _ = telemetry
                .api_retries
                .get_or_create(&[("api", call.label())]);
        }
        telemetry
    }
}

impl Telemetry {
    /// Counts one finished request attempt.
    pub fn record_request(&self, call: Call, result: &'static str, elapsed: Duration) {
        let labels = [("api", call.label()), ("result", result)];
        self.api_requests.get_or_create(&labels).inc();
        self.api_duration
            .get_or_create(&[("api", call.label())])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one retry.
    pub fn record_retry(&self, call: Call) {
        self.api_retries
            .get_or_create(&[("api", call.label())])
            .inc();
    }

    /// Adds time spent waiting on the exporter's own rate limit.
    pub fn add_rate_limit_wait(&self, waited: Duration) {
        self.rate_limit_wait.inc_by(waited.as_secs_f64());
    }

    /// Records the size of the body just rendered.
    pub fn set_body_bytes(&self, plain: usize, gzip: usize) {
        let set = |encoding, bytes: usize| {
            let value = i64::try_from(bytes).unwrap_or(i64::MAX);
            self.body_bytes
                .get_or_create(&[("encoding", encoding)])
                .set(value);
        };
        set("identity", plain);
        set("gzip", gzip);
    }

    /// Counts a connection or request the HTTP server turned away.
    pub fn record_rejection(&self, rejection: Rejection) {
        self.http_rejected
            .get_or_create(&[("reason", rejection.label())])
            .inc();
    }

    /// Shows the OTLP push counter (both results from 0) from now on.
    pub fn enable_otlp(&self) {
        for result in ["success", "failure"] {
            let _ = self.otlp_exports.get_or_create(&[("result", result)]);
        }
        self.otlp_enabled.store(true, Ordering::Relaxed);
    }

    /// Counts one finished OTLP push.
    pub fn record_otlp_export(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.otlp_exports.get_or_create(&[("result", result)]).inc();
    }

    /// Records the outcome of a configuration reload.
    pub fn record_reload(&self, success: bool) {
        self.reload_success.set(i64::from(success));
        if success {
            self.reload_timestamp
                .set(crate::state::unix_seconds(std::time::SystemTime::now()));
        }
    }
}

/// Text formats the exporter serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Prometheus,
    /// OpenMetrics text 1.0.0.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Whether a compiled deny list removes a family.
pub fn is_denied(deny: &Option<regex::RegexSet>, def: &MetricDef) -> bool {
    deny.as_ref().is_some_and(|set| set.is_match(def.name))
}

/// Renders everything but the per-agent families (see [`crate::agent_text`])
/// in one format: per-group series and the self-telemetry.
pub fn render(snapshot: Arc<Snapshot>, telemetry: Arc<Telemetry>, format: Format) -> String {
    let mut registry = Registry::default();
    let deny = deny_set(&snapshot.metric_deny);
    registry.register_collector(Box::new(Exposed {
        snapshot,
        telemetry,
        deny,
    }));
    let mut out = String::with_capacity(4096);
    let encoded = match format {
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        }
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
    };
    // Writing into a String cannot fail; a label value is escaped, never rejected.
    debug_assert!(encoded.is_ok());
    out
}

/// Compiles the deny list (validated with the config; a bad pattern denies nothing).
pub fn deny_set(patterns: &[String]) -> Option<regex::RegexSet> {
    if patterns.is_empty() {
        return None;
    }
    regex::RegexSet::new(patterns.iter().map(|p| format!("^(?:{p})$"))).ok()
}

#[derive(Debug)]
struct Exposed {
    snapshot: Arc<Snapshot>,
    telemetry: Arc<Telemetry>,
    deny: Option<regex::RegexSet>,
}

impl Collector for Exposed {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        self.encode_groups(&mut encoder)?;
        self.encode_self(&mut encoder)
    }
}

fn descriptor<'a>(
    encoder: &'a mut DescriptorEncoder,
    def: &'a MetricDef,
    metric_type: MetricType,
) -> Result<prometheus_client::encoding::MetricEncoder<'a>, fmt::Error> {
    let name = def.name.strip_suffix("_total").unwrap_or(def.name);
    encoder.encode_descriptor(name, def.help, None, metric_type)
}

impl Exposed {
    fn denied(&self, def: &MetricDef) -> bool {
        is_denied(&self.deny, def)
    }

    /// Encodes one per-group family unless denied or empty.
    fn group_family(
        &self,
        encoder: &mut DescriptorEncoder,
        def: &MetricDef,
        value: impl Fn(&GroupSnapshot) -> Option<f64>,
    ) -> Result<(), fmt::Error> {
        let groups = &self.snapshot.groups;
        if self.denied(def) || !groups.iter().any(|g| value(g).is_some()) {
            return Ok(());
        }
        let mut m = descriptor(encoder, def, MetricType::Gauge)?;
        for g in groups {
            if let Some(v) = value(g) {
                m.encode_family(&[("group", g.name.as_str())])?
                    .encode_gauge(&v)?;
            }
        }
        Ok(())
    }

    fn encode_groups(&self, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let groups = &self.snapshot.groups;
        if !self.denied(&AGENTS) && !groups.is_empty() {
            let mut m = descriptor(encoder, &AGENTS, MetricType::Gauge)?;
            for g in groups {
                for state in AgentState::ALL {
                    let labels = [
                        ("group", g.name.as_str()),
                        ("bk_biz_id", &g.bk_biz_id),
                        ("state", state.label()),
                    ];
                    m.encode_family(&labels)?
                        .encode_gauge(&(g.counts.get(state) as i64))?;
                }
            }
        }
        if !self.denied(&AGENT_VERSIONS) && groups.iter().any(|g| !g.versions.is_empty()) {
            let mut m = descriptor(encoder, &AGENT_VERSIONS, MetricType::Gauge)?;
            for g in groups {
                for (version, count) in &g.versions {
                    let labels = [
                        ("group", g.name.as_str()),
                        ("bk_biz_id", &g.bk_biz_id),
                        ("version", version),
                    ];
                    m.encode_family(&labels)?.encode_gauge(&(*count as i64))?;
                }
            }
        }
        for (def, value) in GROUP_GAUGES {
            self.group_family(encoder, def, value)?;
        }
        self.encode_discovery(encoder)
    }

    fn encode_discovery(&self, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let groups = &self.snapshot.groups;
        let with_discovery = || groups.iter().filter(|g| g.discovery.is_some());
        if self.denied(&DISCOVERY_SKIPPED) || with_discovery().next().is_none() {
            return Ok(());
        }
        let mut m = descriptor(encoder, &DISCOVERY_SKIPPED, MetricType::Gauge)?;
        for g in with_discovery() {
            for reason in SKIP_REASONS {
                let count = g.skipped.get(reason).copied().unwrap_or(0);
                m.encode_family(&[("group", g.name.as_str()), ("reason", reason)])?
                    .encode_gauge(&(count as i64))?;
            }
        }
        Ok(())
    }

    fn encode_self(&self, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let t = &self.telemetry;
        if !self.denied(&BUILD_INFO) {
            let mut m = descriptor(encoder, &BUILD_INFO, MetricType::Gauge)?;
            let labels = [
                ("version", env!("CARGO_PKG_VERSION")),
                (
                    "revision",
                    option_env!("GSE_EXPORTER_REVISION").unwrap_or("unknown"),
                ),
                (
                    "rustc_version",
                    option_env!("GSE_EXPORTER_RUSTC").unwrap_or("unknown"),
                ),
            ];
            m.encode_family(&labels)?.encode_gauge(&1i64)?;
        }
        let families: [(&MetricDef, MetricType, &dyn EncodeMetric); 8] = [
            (&API_REQUESTS, MetricType::Counter, &t.api_requests),
            (&API_DURATION, MetricType::Histogram, &t.api_duration),
            (&API_RETRIES, MetricType::Counter, &t.api_retries),
            (&RATE_LIMIT_WAIT, MetricType::Counter, &t.rate_limit_wait),
            (&BODY_BYTES, MetricType::Gauge, &t.body_bytes),
            (&RELOAD_SUCCESS, MetricType::Gauge, &t.reload_success),
            (&RELOAD_TIMESTAMP, MetricType::Gauge, &t.reload_timestamp),
            (&HTTP_REJECTED, MetricType::Counter, &t.http_rejected),
        ];
        for (def, metric_type, metric) in families {
            if !self.denied(def) {
                metric.encode(descriptor(encoder, def, metric_type)?)?;
            }
        }
        if t.otlp_enabled.load(Ordering::Relaxed) && !self.denied(&OTLP_EXPORTS) {
            let m = descriptor(encoder, &OTLP_EXPORTS, MetricType::Counter)?;
            t.otlp_exports.encode(m)?;
        }
        let sharding = self.snapshot.sharding;
        for (def, value) in [
            (&SHARD_ORDINAL, sharding.shard),
            (&TOTAL_SHARDS, sharding.total),
        ] {
            if !self.denied(def) {
                let mut m = descriptor(encoder, def, MetricType::Gauge)?;
                m.encode_gauge(&i64::from(value))?;
            }
        }
        Ok(())
    }
}
