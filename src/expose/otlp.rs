//! OTLP push: the same per-agent and per-group gauges as `/metrics`, sent to
//! an OpenTelemetry collector on the pusher's own schedule.
//!
//! Owns the `otlp:` pipeline: turning one published snapshot into OTLP data
//! points through the OpenTelemetry SDK (observable gauges whose callbacks read
//! that snapshot, collected by a [`ManualReader`]), the `opentelemetry-otlp`
//! exporter (HTTP/protobuf or gRPC), and the push loop. The loop runs in its
//! own task: it reads the latest published snapshot, never calls GSE, and never
//! holds anything the poll loop or a scrape waits on. Collection runs on a
//! blocking thread; each push is bounded by `otlp.timeout`.
//!
//! A push is split into requests of [`AGENTS_PER_REQUEST`] agents (the first
//! also carries the per-group families), which keeps each request under a
//! collector's default gRPC message limit and the push's memory small. Each
//! request builds a fresh meter provider sized to its part and drops it
//! afterwards, so an agent that left the snapshot has no data point in the next
//! push (the SDK's own rule, that an observable gauge reports only what its
//! callback observed, gives the same result) and nothing is held between
//! pushes. Retries with exponential backoff and jitter are the exporter's
//! ([`RetryPolicy::recommended`]: HTTP 429/502/503/504 and retryable gRPC
//! codes, within the push's deadline); each push counts once in
//! `gse_exporter_otlp_exports_total{result}`.
//!
//! Metric names, label rules and values come from [`super::table`] and
//! [`super::agents`]; `metric_deny` and `per_agent_metrics` apply here as
//! they do to `/metrics`. Header values are secrets: never logged.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::metrics::{AsyncInstrument, MeterProvider as _};
use opentelemetry::{Key, KeyValue, StringValue, Value};
use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::tonic_types::transport::ClientTlsConfig;
use opentelemetry_otlp::{
    MetricExporter, Protocol, RetryPolicy, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Stream, Temporality,
};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::agents::{AGENT_GAUGES, INFO_LABELS, agent_labels, topology_labels};
use super::table::{
    AGENT_INFO, AGENT_LABELS, AGENT_TOPOLOGY_INFO, AGENT_VERSIONS, AGENTS, CLOUD_AGENTS,
    DISCOVERY_SKIPPED, GROUP_GAUGES, MetricDef, PARENT_AGENTS,
};
use super::{Exposition, Published, deny_set, is_denied};
use crate::config::{Config, OtlpConfig, OtlpProtocol, hide_credentials};
use crate::model::SKIP_REASONS;
use crate::snapshot::{AgentRow, AgentState, GroupSnapshot, Placement, Snapshot, StateCounts};

/// The `group` label of the per-group gauges, as the table names it.
const GROUP_LABEL: &str = AGENT_LABELS[0];

/// The instrumentation scope of every exported metric.
pub(crate) const SCOPE: &str = "gse_exporter";

/// Why OTLP data could not be built or sent.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// The exporter could not be built from the configuration.
    #[error("cannot build the OTLP exporter: {0}")]
    Build(String),
    /// Collecting the snapshot into data points failed.
    #[error("cannot collect OTLP data points: {0}")]
    Collect(String),
    /// The collector did not accept the push (after retries).
    #[error("OTLP push failed: {0}")]
    Export(String),
    /// The push did not finish within `otlp.timeout`.
    #[error("OTLP push timed out after {0:?}")]
    Timeout(Duration),
}

/// The resource of this process: `service.name`, `service.version`,
/// `service.instance.id`, then the configured attributes (which win).
pub(crate) fn resource(config: &OtlpConfig, instance_id: &str) -> Resource {
    let extra = config
        .resource_attributes
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()));
    Resource::builder_empty()
        .with_service_name("gse_exporter")
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", instance_id.to_string()),
        ])
        .with_attributes(extra)
        .build()
}

/// The `service.instance.id` of a process: host name and listen port, stable
/// across restarts of the same instance (so its series continue).
pub(crate) fn instance_id(hostname: Option<String>, port: u16) -> String {
    format!("{}:{port}", hostname.unwrap_or_else(|| "localhost".into()))
}

/// The HTTP endpoint: `/v1/metrics` is added to a URL without a path.
pub(crate) fn http_endpoint(endpoint: &str) -> String {
    match reqwest::Url::parse(endpoint) {
        Ok(url) if url.path() == "/" || url.path().is_empty() => {
            format!("{}/v1/metrics", endpoint.trim_end_matches('/'))
        }
        _ => endpoint.to_string(),
    }
}

/// Builds the exporter for a configuration (gRPC needs a Tokio runtime).
/// `cause` keeps why the last HTTP request of a push got no answer.
pub fn exporter(config: &OtlpConfig, cause: &LastCause) -> Result<MetricExporter, OtlpError> {
    let built = match config.protocol {
        OtlpProtocol::HttpProtobuf => MetricExporter::builder()
            .with_http()
            .with_http_client(PushClient {
                inner: http_client(config)?,
                cause: cause.clone(),
            })
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(http_endpoint(&config.endpoint))
            .with_timeout(config.timeout)
            .with_headers(
                config
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.expose().to_string()))
                    .collect(),
            )
            .with_retry_policy(RetryPolicy::recommended())
            .build(),
        OtlpProtocol::Grpc => {
            let mut builder = MetricExporter::builder()
                .with_tonic()
                .with_endpoint(config.endpoint.clone())
                .with_timeout(config.timeout)
                .with_metadata(metadata(config)?)
                .with_retry_policy(RetryPolicy::recommended());
            if config.endpoint.starts_with("https://") {
                builder = builder.with_tls_config(ClientTlsConfig::new().with_native_roots());
            }
            builder.build()
        }
    };
    built.map_err(|e| OtlpError::Build(e.to_string()))
}

/// The HTTP client of a push: the upstream clients' (no redirect followed:
/// opentelemetry's own followed ten, carrying the push and every header but
/// `Authorization` wherever a reply pointed, and after a 301 or 302 sent an
/// empty GET there that counted as a successful push).
fn http_client(config: &OtlpConfig) -> Result<reqwest::Client, OtlpError> {
    crate::upstream::client_builder(config.timeout)
        .build()
        .map_err(|e| OtlpError::Build(format!("the HTTP client: {e}")))
}

/// Why the last HTTP request of a push got no answer (refused, a name not
/// found, a TLS failure), or nothing: opentelemetry reports each of them
/// only as "network error".
#[derive(Debug, Clone, Default)]
pub struct LastCause(Arc<parking_lot::Mutex<Option<String>>>);

impl LastCause {
    fn take(&self) -> Option<String> {
        self.0.lock().take()
    }
}

/// The push's HTTP client: reqwest's, keeping each failure's cause.
#[derive(Debug)]
struct PushClient {
    inner: reqwest::Client,
    cause: LastCause,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for PushClient {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<bytes::Bytes>,
    ) -> Result<opentelemetry_http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        // Without the URL: it is the configured endpoint, said apart.
        let sent = self.inner.send_bytes(request).await.map_err(|err| {
            match err.downcast::<reqwest::Error>() {
                Ok(err) => Box::new((*err).without_url()),
                Err(err) => err,
            }
        });
        *self.cause.0.lock() = sent
            .as_ref()
            .err()
            .map(|err| crate::upstream::error_chain(err.as_ref()));
        sent
    }
}

fn metadata(config: &OtlpConfig) -> Result<MetadataMap, OtlpError> {
    use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
    let mut headers = HeaderMap::new();
    for (name, value) in &config.headers {
        // Validated with the config; the value itself is never shown.
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| OtlpError::Build(format!("invalid header name {name:?}")))?;
        let value = HeaderValue::from_str(value.expose())
            .map_err(|_| OtlpError::Build(format!("invalid value of header {name}")))?;
        headers.insert(name, value);
    }
    Ok(MetadataMap::from_headers(headers))
}

/// Agents per OTLP request: about 1.1 MB of protobuf at the usual label
/// sizes, well under the 4 MiB a collector's gRPC receiver takes by default,
/// and a bound on the memory one request costs.
pub(crate) const AGENTS_PER_REQUEST: usize = 2000;

/// One request of a push: the per-group families and/or a range of the
/// exported agents (in snapshot order, groups with `per_agent_metrics` only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    /// Whether the per-group families are in this request.
    pub(crate) groups: bool,
    /// Which exported agents are in this request.
    pub(crate) agents: Range<usize>,
}

impl Part {
    /// Everything in one request.
    #[cfg(test)]
    pub(crate) fn whole(snapshot: &Snapshot) -> Part {
        Part {
            groups: true,
            agents: 0..exported_agents(snapshot),
        }
    }

    /// The requests of one push: the first carries the per-group families,
    /// each at most `per_request` agents.
    pub(crate) fn split(snapshot: &Snapshot, per_request: usize) -> Vec<Part> {
        let total = exported_agents(snapshot);
        let per_request = per_request.max(1);
        let mut parts: Vec<Part> = (0..total.div_ceil(per_request).max(1))
            .map(|i| Part {
                groups: i == 0,
                agents: i * per_request..((i + 1) * per_request).min(total),
            })
            .collect();
        if let Some(first) = parts.first_mut() {
            first.groups = true;
        }
        parts
    }
}

/// Agents with per-agent data points.
pub(crate) fn exported_agents(snapshot: &Snapshot) -> usize {
    per_agent(snapshot).map(|g| g.agents.len()).sum()
}

/// Collects one part of a snapshot into OTLP data points: every family
/// `/metrics` has from the snapshot (per-agent ones only for groups with
/// `per_agent_metrics`), minus `metric_deny`.
pub(crate) fn collect<T: Send + Sync + 'static>(
    source: Arc<T>,
    snapshot_of: fn(&T) -> &Snapshot,
    resource: Resource,
    part: Part,
) -> Result<ResourceMetrics, OtlpError> {
    let plan = Plan::new(snapshot_of(&source), &part);
    let limits = plan.limits.clone();
    let reader = Arc::new(ManualReader::builder().build());
    let provider = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(SharedReader(reader.clone()))
        .with_view(move |i| {
            let limit = limits.get(i.name()).copied()?;
            Stream::builder()
                .with_cardinality_limit(limit.max(1))
                .build()
                .ok()
        })
        .build();
    let meter = provider.meter(SCOPE);
    let shared = Arc::new(Frame::new(source, snapshot_of, part.agents));
    let mut gauges = Vec::new();
    for family in plan.families {
        let frame = shared.clone();
        let gauge = meter
            .f64_observable_gauge(family.def.name)
            .with_description(family.def.help)
            .with_callback(move |out| frame.observe(family.kind, out))
            .build();
        gauges.push(gauge);
    }
    let mut metrics = ResourceMetrics::default();
    let collected = reader.collect(&mut metrics);
    drop(gauges);
    let _ = provider.shutdown();
    collected.map_err(|e| OtlpError::Collect(e.to_string()))?;
    Ok(metrics)
}

/// The SDK takes readers by value; the pusher keeps a handle to collect.
#[derive(Debug)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// What one gauge reads from the snapshot.
#[derive(Debug, Clone, Copy)]
enum FamilyKind {
    /// `AGENT_GAUGES[i]`.
    Agent(usize),
    /// `gse_agent_info`.
    AgentInfo,
    /// `gse_agent_topology_info`.
    AgentTopology,
    /// `GROUP_GAUGES[i]`.
    Group(usize),
    /// `gse_agents` by state.
    States,
    /// `gse_agent_versions`.
    Versions,
    /// `gse_parent_agents` (false) or `gse_cloud_agents` (true).
    Placement(bool),
    /// `gse_exporter_discovery_hosts_skipped`.
    Skipped,
}

#[derive(Debug, Clone, Copy)]
struct Family {
    def: &'static MetricDef,
    kind: FamilyKind,
}

/// The families to register and the series count of each (its cardinality limit).
struct Plan {
    families: Vec<Family>,
    limits: Arc<HashMap<&'static str, usize>>,
}

impl Plan {
    fn new(snapshot: &Snapshot, part: &Part) -> Plan {
        let deny = deny_set(&snapshot.metric_deny);
        let mut all = Vec::new();
        let agents = part.agents.len();
        if agents > 0 {
            for (i, (def, _)) in AGENT_GAUGES.iter().enumerate() {
                all.push((*def, FamilyKind::Agent(i), agents));
            }
            all.push((&AGENT_INFO, FamilyKind::AgentInfo, agents));
            let placed = topology_agents(snapshot, &part.agents);
            if placed > 0 {
                all.push((&AGENT_TOPOLOGY_INFO, FamilyKind::AgentTopology, placed));
            }
        }
        if part.groups {
            group_families(snapshot, &mut all);
        }
        let all: Vec<_> = all
            .into_iter()
            .filter(|(def, _, _)| !is_denied(&deny, def))
            .collect();
        Plan {
            limits: Arc::new(all.iter().map(|(d, _, n)| (d.name, *n + 1)).collect()),
            families: all
                .into_iter()
                .map(|(def, kind, _)| Family { def, kind })
                .collect(),
        }
    }
}

/// The per-group families with their series counts.
fn group_families(snapshot: &Snapshot, all: &mut Vec<(&'static MetricDef, FamilyKind, usize)>) {
    let groups = &snapshot.groups;
    let discovering = groups.iter().filter(|g| g.discovery.is_some()).count();
    let states = groups.len() * AgentState::ALL.len();
    all.push((&AGENTS, FamilyKind::States, states));
    let versions = groups.iter().map(|g| g.versions.len()).sum();
    all.push((&AGENT_VERSIONS, FamilyKind::Versions, versions));
    let parents: usize = groups.iter().map(|g| g.placement.parents.len()).sum();
    let parents = parents * Placement::PARENT_STATES.len();
    all.push((&PARENT_AGENTS, FamilyKind::Placement(false), parents));
    let clouds: usize = groups.iter().map(|g| g.placement.clouds.len()).sum();
    let clouds = clouds * AgentState::ALL.len();
    all.push((&CLOUD_AGENTS, FamilyKind::Placement(true), clouds));
    for (i, (def, _)) in GROUP_GAUGES.iter().enumerate() {
        all.push((*def, FamilyKind::Group(i), groups.len()));
    }
    let skipped = discovering * SKIP_REASONS.len();
    all.push((&DISCOVERY_SKIPPED, FamilyKind::Skipped, skipped));
}

fn per_agent(snapshot: &Snapshot) -> impl Iterator<Item = &GroupSnapshot> {
    snapshot.groups.iter().filter(|g| g.per_agent_metrics)
}

/// Agents of `range` (of the exported agents) in groups with topology.
fn topology_agents(snapshot: &Snapshot, range: &Range<usize>) -> usize {
    let mut start = 0;
    let mut placed = 0;
    for g in per_agent(snapshot) {
        let end = start + g.agents.len();
        if g.bk_biz_name.is_some() {
            placed += end.min(range.end).saturating_sub(start.max(range.start));
        }
        start = end;
    }
    placed
}

/// One snapshot pinned for one collection, with each group's attributes and
/// each exported agent's attributes built once and shared by the gauges.
struct Frame<T> {
    source: Arc<T>,
    snapshot_of: fn(&T) -> &Snapshot,
    range: Range<usize>,
    groups: Vec<Vec<KeyValue>>,
    agents: Vec<Vec<KeyValue>>,
}

impl<T> Frame<T> {
    fn new(source: Arc<T>, snapshot_of: fn(&T) -> &Snapshot, range: Range<usize>) -> Frame<T> {
        let snapshot = snapshot_of(&source);
        let groups = snapshot
            .groups
            .iter()
            .map(|g| vec![kv(GROUP_LABEL, &g.name)])
            .collect();
        // Every string is reference-counted (label names and group values
        // once per frame), so the SDK's copies of an attribute set share
        // them instead of copying them.
        let mut interned: HashMap<&str, Arc<str>> = HashMap::new();
        for g in per_agent(snapshot) {
            let first = g.agents.first();
            let names = first.into_iter().flat_map(|a| agent_labels(g, a));
            for (k, _) in names {
                interned.entry(k).or_insert_with(|| Arc::from(k));
            }
            for v in [g.name.as_ref(), g.bk_biz_id.as_ref()]
                .into_iter()
                .chain(g.labels.iter().map(|(_, v)| v.as_ref()))
            {
                interned.entry(v).or_insert_with(|| Arc::from(v));
            }
        }
        let arc = |s: &str| interned.get(s).cloned().unwrap_or_else(|| Arc::from(s));
        let shared_kv = |k: &str, v: &str| {
            KeyValue::new(Key::from(arc(k)), Value::String(StringValue::from(arc(v))))
        };
        let agents = per_agent(snapshot)
            .flat_map(|g| g.agents.iter().map(move |a| agent_labels(g, a)))
            .skip(range.start)
            .take(range.len())
            .map(|labels| sorted(labels.map(|(k, v)| shared_kv(k, v)).collect()))
            .collect();
        Frame {
            source,
            snapshot_of,
            range,
            groups,
            agents,
        }
    }

    /// The exported agents of this frame's range, in the order of `agents`.
    fn rows<'a>(&self, snapshot: &'a Snapshot) -> impl Iterator<Item = &'a AgentRow> + use<'a, T> {
        self.rows_in_groups(snapshot).map(|(_, a)| a)
    }

    /// The same, each with its group.
    fn rows_in_groups<'a>(
        &self,
        snapshot: &'a Snapshot,
    ) -> impl Iterator<Item = (&'a GroupSnapshot, &'a AgentRow)> + use<'a, T> {
        per_agent(snapshot)
            .flat_map(|g| g.agents.iter().map(move |a| (g, a)))
            .skip(self.range.start)
            .take(self.range.len())
    }

    fn observe(&self, kind: FamilyKind, out: &dyn AsyncInstrument<f64>) {
        let snapshot = (self.snapshot_of)(&self.source);
        match kind {
            FamilyKind::Agent(i) => {
                let value = AGENT_GAUGES[i].1;
                for (agent, attrs) in self.rows(snapshot).zip(&self.agents) {
                    if let Some(v) = value(agent) {
                        out.observe(v as f64, attrs);
                    }
                }
            }
            FamilyKind::AgentInfo => {
                for (agent, attrs) in self.rows(snapshot).zip(&self.agents) {
                    let mut attrs = attrs.clone();
                    let [version, parent_ip] = INFO_LABELS;
                    attrs.push(kv(version, &agent.record.version));
                    attrs.push(kv(parent_ip, &agent.record.parent_ip));
                    out.observe(1.0, &sorted(attrs));
                }
            }
            FamilyKind::AgentTopology => {
                for ((g, agent), attrs) in self.rows_in_groups(snapshot).zip(&self.agents) {
                    let Some(biz_name) = &g.bk_biz_name else {
                        continue;
                    };
                    let mut attrs = attrs.clone();
                    let topology = topology_labels(biz_name, agent.topology.as_deref());
                    attrs.extend(topology.iter().map(|(k, v)| kv(k, v)));
                    out.observe(1.0, &sorted(attrs));
                }
            }
            FamilyKind::Group(i) => {
                let value = GROUP_GAUGES[i].1;
                for (g, attrs) in snapshot.groups.iter().zip(&self.groups) {
                    if let Some(v) = value(g) {
                        out.observe(v, attrs);
                    }
                }
            }
            FamilyKind::States => group_pairs(snapshot, out, &AGENTS, |g| {
                AgentState::ALL
                    .iter()
                    .map(|s| (s.label().to_string(), g.counts.get(*s) as f64))
                    .collect()
            }),
            FamilyKind::Versions => group_pairs(snapshot, out, &AGENT_VERSIONS, |g| {
                g.versions
                    .iter()
                    .map(|(v, n)| (v.to_string(), *n as f64))
                    .collect()
            }),
            FamilyKind::Placement(clouds) => observe_placement(snapshot, out, clouds),
            FamilyKind::Skipped => observe_skipped(snapshot, out),
        }
    }
}

/// Families labelled `group`, `bk_biz_id` and one more label (as `def` names them).
fn group_pairs(
    snapshot: &Snapshot,
    out: &dyn AsyncInstrument<f64>,
    def: &MetricDef,
    values: impl Fn(&GroupSnapshot) -> Vec<(String, f64)>,
) {
    for g in &snapshot.groups {
        for (label_value, v) in values(g) {
            let labels = def.labels([&g.name, &g.bk_biz_id, &label_value]);
            let attrs = labels.iter().map(|(k, v)| kv(k, v)).collect();
            out.observe(v, &sorted(attrs));
        }
    }
}

/// `gse_parent_agents` or `gse_cloud_agents`, as `/metrics` has them.
fn observe_placement(snapshot: &Snapshot, out: &dyn AsyncInstrument<f64>, clouds: bool) {
    let (def, states): (&MetricDef, &[AgentState]) = if clouds {
        (&CLOUD_AGENTS, &AgentState::ALL)
    } else {
        (&PARENT_AGENTS, &Placement::PARENT_STATES)
    };
    for g in &snapshot.groups {
        let rows: Vec<(String, StateCounts)> = if clouds {
            let clouds = g.placement.clouds.iter();
            clouds.map(|(c, n)| (c.to_string(), *n)).collect()
        } else {
            let parents = g.placement.parents.iter();
            parents.map(|(p, n)| (p.to_string(), *n)).collect()
        };
        for (value, counts) in &rows {
            for state in states {
                let labels = def.labels([&g.name, &g.bk_biz_id, value, state.label()]);
                let attrs = labels.iter().map(|(k, v)| kv(k, v)).collect();
                out.observe(counts.get(*state) as f64, &sorted(attrs));
            }
        }
    }
}

fn observe_skipped(snapshot: &Snapshot, out: &dyn AsyncInstrument<f64>) {
    for g in snapshot.groups.iter().filter(|g| g.discovery.is_some()) {
        for reason in SKIP_REASONS {
            let n = g.skipped.get(reason).copied().unwrap_or(0);
            let labels = DISCOVERY_SKIPPED.labels([&g.name, reason]);
            out.observe(n as f64, &labels.map(|(k, v)| kv(k, v)));
        }
    }
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue::new(
        Key::new(key.to_string()),
        Value::String(StringValue::from(value.to_string())),
    )
}

/// Attributes sorted by key: the SDK stores an unsorted set twice.
fn sorted(mut attrs: Vec<KeyValue>) -> Vec<KeyValue> {
    attrs.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
    attrs
}

/// The push loop: pushes the latest complete snapshot every `otlp.interval`
/// while `otlp` is configured, follows reloads, and ends when `stopped` turns
/// true. Never waits on GSE; a push never outlives its timeout.
pub(crate) async fn run(
    published: Arc<Published>,
    mut configs: watch::Receiver<Arc<Config>>,
    instance_id: String,
    mut stopped: watch::Receiver<bool>,
) {
    let mut current: Option<Pusher> = None;
    let mut reloadable = true;
    loop {
        let wanted = configs.borrow_and_update().otlp.clone();
        if current.as_ref().map(|p| &p.config) != wanted.as_ref() {
            current = wanted.and_then(|c| Pusher::start(c, &instance_id, &published));
        }
        let tick = async {
            match current.as_mut() {
                Some(pusher) => pusher.ticker.tick().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick => {}
            changed = configs.changed(), if reloadable => {
                // A closed channel: no more reloads; keep the pipeline as is.
                reloadable = changed.is_ok();
                continue;
            }
            _ = stopped.wait_for(|s| *s) => return,
        }
        if let Some(pusher) = current.as_ref() {
            tokio::select! {
                _ = pusher.push(&published) => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
        }
    }
}

/// A configured pipeline: the exporter, the resource and the schedule.
struct Pusher {
    config: OtlpConfig,
    exporter: Arc<MetricExporter>,
    cause: LastCause,
    resource: Resource,
    ticker: tokio::time::Interval,
}

impl Pusher {
    fn start(config: OtlpConfig, instance_id: &str, published: &Published) -> Option<Pusher> {
        let shown = |text: &str| hide_credentials(text, &config.endpoint);
        let cause = LastCause::default();
        let exporter = match exporter(&config, &cause) {
            Ok(exporter) => exporter,
            Err(err) => {
                tracing::error!(error = %shown(&err.to_string()), "OTLP push disabled");
                return None;
            }
        };
        published.telemetry().enable_otlp();
        let mut ticker = tokio::time::interval(config.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tracing::info!(endpoint = %shown(&config.endpoint), interval = ?config.interval, "OTLP push enabled");
        Some(Pusher {
            resource: resource(&config, instance_id),
            exporter: Arc::new(exporter),
            cause,
            config,
            ticker,
        })
    }

    /// One push of the current snapshot, counted; skipped before the first
    /// complete cycle (there is nothing true to say yet) and while the
    /// current snapshot was published without its agent rows.
    async fn push(&self, published: &Published) {
        if !published.is_ready() {
            return;
        }
        // Published before `otlp` was configured: its agent rows are gone;
        // the next cycle's snapshot keeps them.
        let current = published.current();
        if current.rows_dropped() {
            return;
        }
        let result = self.try_push(current).await;
        published.telemetry().record_otlp_export(result.is_ok());
        match result {
            Ok(()) => tracing::debug!("OTLP push succeeded"),
            Err(err) => {
                let shown = hide_credentials(&err.to_string(), &self.config.endpoint);
                tracing::warn!(error = %shown, "OTLP push failed");
            }
        }
    }

    /// One push within `otlp.timeout`: the exporter's own deadline covers
    /// its retries of one request; this one covers the whole push, and a
    /// collector that never answers.
    async fn try_push(&self, exposition: Arc<Exposition>) -> Result<(), OtlpError> {
        let push = self.push_parts(exposition);
        match tokio::time::timeout(self.config.timeout, push).await {
            Ok(result) => result,
            Err(_) => Err(OtlpError::Timeout(self.config.timeout)),
        }
    }

    /// The requests of one push, one after the other; the first failure ends it.
    async fn push_parts(&self, exposition: Arc<Exposition>) -> Result<(), OtlpError> {
        for part in Part::split(exposition.snapshot(), AGENTS_PER_REQUEST) {
            let (source, resource) = (exposition.clone(), self.resource.clone());
            // Collection is CPU work: keep it off the async workers.
            let metrics = tokio::task::spawn_blocking(move || {
                collect(source, Exposition::snapshot, resource, part)
            })
            .await
            .map_err(|e| OtlpError::Collect(e.to_string()))??;
            let exported = self.exporter.export(&metrics).await;
            exported.map_err(|e| {
                OtlpError::Export(match self.cause.take() {
                    Some(cause) => format!("{e} ({cause})"),
                    None => e.to_string(),
                })
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};

    use super::*;
    use crate::poller::record::Interner;
    use crate::snapshot::{AgentRecord, AgentRow};

    fn group(name: &str, per_agent_metrics: bool, agents: usize) -> GroupSnapshot {
        let agents: Vec<AgentRow> = (0..agents)
            .map(|i| AgentRow {
                bk_cloud_id: "0".into(),
                ip: format!("10.0.0.{i}").as_str().into(),
                bk_agent_id: format!("agent{i}").as_str().into(),
                host_labels: Vec::new().into(),
                topology: None,
                record: AgentRecord::observe(
                    None,
                    None,
                    None,
                    SystemTime::now(),
                    &mut Interner::default(),
                ),
            })
            .collect();
        let mut g = GroupSnapshot {
            name: name.into(),
            bk_biz_id: "2".into(),
            labels: vec![("team".into(), "sre".into())],
            per_agent_metrics,
            agents,
            up: true,
            poll_duration: 0.5,
            interval: 60.0,
            ..GroupSnapshot::default()
        };
        g.tally(0);
        g
    }

    /// A data point as (name, sorted attributes, value).
    type Point = (String, Vec<(String, String)>, f64);

    fn points(metrics: &ResourceMetrics) -> Vec<Point> {
        let mut out = Vec::new();
        for sm in metrics.scope_metrics() {
            assert_eq!(sm.scope().name(), SCOPE);
            for m in sm.metrics() {
                let AggregatedMetrics::F64(MetricData::Gauge(g)) = m.data() else {
                    panic!("{} is not an f64 gauge", m.name());
                };
                for p in g.data_points() {
                    let mut attrs: Vec<(String, String)> = p
                        .attributes()
                        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                        .collect();
                    attrs.sort();
                    out.push((m.name().to_string(), attrs, p.value()));
                }
            }
        }
        out
    }

    fn collect_snapshot(snapshot: Snapshot, per_request: usize) -> Vec<Point> {
        let config = OtlpConfig {
            endpoint: "http://localhost:4318".into(),
            protocol: OtlpProtocol::HttpProtobuf,
            headers: Vec::new(),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            resource_attributes: Vec::new(),
        };
        let mut out = Vec::new();
        for part in Part::split(&snapshot, per_request) {
            let source = Arc::new(snapshot.clone());
            let resource = resource(&config, "h:1");
            out.extend(points(&collect(source, |s| s, resource, part).unwrap()));
        }
        out
    }

    #[test]
    fn per_agent_points_follow_per_agent_metrics_and_deny_removes_families() {
        let snapshot = Snapshot {
            groups: vec![group("web", true, 3), group("batch", false, 2)],
            complete: true,
            metric_deny: vec!["gse_up".into(), "gse_agent_heartbeat_.*".into()],
            ..Snapshot::default()
        };
        let points = collect_snapshot(snapshot, 2);
        let named = |name: &str| points.iter().filter(|p| p.0 == name).count();
        assert_eq!(named("gse_agent_online"), 3, "web agents only");
        assert_eq!(named("gse_agent_info"), 3);
        assert_eq!(named("gse_agent_status_code"), 3, "not found: -2");
        assert_eq!(named("gse_agents"), 2 * 4);
        assert_eq!(named("gse_up"), 0, "denied");
        assert_eq!(named("gse_exporter_poll_duration_seconds"), 2);
        let online = points.iter().find(|p| p.0 == "gse_agent_online").unwrap();
        let keys: Vec<&str> = online.1.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "bk_agent_id",
                "bk_biz_id",
                "bk_cloud_id",
                "group",
                "ip",
                "team"
            ]
        );
        assert_eq!(online.2, 0.0);
        let not_found = (
            "gse_agents".to_string(),
            vec![
                ("bk_biz_id".to_string(), "2".to_string()),
                ("group".to_string(), "web".to_string()),
                ("state".to_string(), "not_found".to_string()),
            ],
            3.0,
        );
        assert!(points.contains(&not_found), "{points:?}");
    }

    #[test]
    fn a_large_fleet_is_not_cut_at_the_sdk_default_cardinality_limit() {
        let snapshot = Snapshot {
            groups: vec![group("web", true, 2500)],
            complete: true,
            ..Snapshot::default()
        };
        let points = collect_snapshot(snapshot, usize::MAX);
        let online = points.iter().filter(|p| p.0 == "gse_agent_online");
        assert_eq!(online.count(), 2500);
        assert!(
            !points
                .iter()
                .any(|p| p.1.iter().any(|(k, _)| k == "otel.metric.overflow"))
        );
    }

    #[test]
    fn a_push_is_split_into_requests_with_the_group_families_in_the_first() {
        let snapshot = Snapshot {
            groups: vec![group("web", true, 5), group("batch", false, 3)],
            ..Snapshot::default()
        };
        let parts: Vec<(bool, Range<usize>)> = Part::split(&snapshot, 2)
            .into_iter()
            .map(|p| (p.groups, p.agents))
            .collect();
        assert_eq!(parts, [(true, 0..2), (false, 2..4), (false, 4..5)]);
        let none = Snapshot {
            groups: vec![group("batch", false, 3)],
            ..Snapshot::default()
        };
        assert_eq!(Part::split(&none, 2), [Part::whole(&none)]);
        assert_eq!(Part::whole(&none).agents, 0..0);
    }

    #[test]
    fn a_bare_http_endpoint_gets_the_metrics_path() {
        assert_eq!(http_endpoint("http://c:4318"), "http://c:4318/v1/metrics");
        assert_eq!(
            http_endpoint("https://c/otlp/v1/metrics"),
            "https://c/otlp/v1/metrics"
        );
    }
}
