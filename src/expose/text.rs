//! The per-group and self-telemetry part of `/metrics`, in either text format.
//!
//! Encoding goes through `prometheus-client`'s text encoders (Prometheus 0.0.4
//! and OpenMetrics) with one collector that walks a [`Snapshot`] and the
//! [`Telemetry`] counters. Names, help texts and label names all come from
//! [`super::table`]. Run once per snapshot, not per scrape; never calls GSE
//! and never changes state.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use super::table::*;
pub(crate) use crate::config::deny_set;
use crate::model::{SKIP_REASONS, build};
use crate::snapshot::{AgentState, GroupSnapshot, Placement, Snapshot, StateCounts};
use crate::telemetry::{BODY_ENCODINGS, OTLP_RESULTS, ProcessStats, Rejection, Telemetry};
use crate::upstream::RESULT_LABELS;
use crate::upstream::gse::Call;

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
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Whether a compiled deny list removes a family.
pub(crate) fn is_denied(deny: &Option<regex::RegexSet>, def: &MetricDef) -> bool {
    deny.as_ref().is_some_and(|set| set.is_match(def.name))
}

/// Renders everything but the per-agent families (see [`super::agents`])
/// in one format: per-group series and the self-telemetry.
pub(crate) fn render(snapshot: Arc<Snapshot>, telemetry: Arc<Telemetry>, format: Format) -> String {
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
                m.encode_family(&def.labels([g.name.as_str()]))?
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
                    let labels = AGENTS.labels([&g.name, &g.bk_biz_id, state.label()]);
                    m.encode_family(&labels)?
                        .encode_gauge(&(g.counts.get(state) as i64))?;
                }
            }
        }
        if !self.denied(&AGENT_VERSIONS) && groups.iter().any(|g| !g.versions.is_empty()) {
            let mut m = descriptor(encoder, &AGENT_VERSIONS, MetricType::Gauge)?;
            for g in groups {
                for (version, count) in &g.versions {
                    let labels = AGENT_VERSIONS.labels([&g.name, &g.bk_biz_id, version]);
                    m.encode_family(&labels)?.encode_gauge(&(*count as i64))?;
                }
            }
        }
        self.placement_family(encoder, &PARENT_AGENTS, &Placement::PARENT_STATES, |g| {
            g.placement
                .parents
                .iter()
                .map(|(parent, counts)| (parent.to_string(), *counts))
                .collect()
        })?;
        self.placement_family(encoder, &CLOUD_AGENTS, &AgentState::ALL, |g| {
            g.placement
                .clouds
                .iter()
                .map(|(cloud, counts)| (cloud.to_string(), *counts))
                .collect()
        })?;
        for (def, value) in GROUP_GAUGES {
            self.group_family(encoder, def, value)?;
        }
        self.encode_discovery(encoder)
    }

    /// A family of per-group counts by one more label and state.
    fn placement_family(
        &self,
        encoder: &mut DescriptorEncoder,
        def: &MetricDef,
        states: &[AgentState],
        rows: impl Fn(&GroupSnapshot) -> Vec<(String, StateCounts)>,
    ) -> Result<(), fmt::Error> {
        let groups: Vec<_> = self.snapshot.groups.iter().map(|g| (g, rows(g))).collect();
        if self.denied(def) || groups.iter().all(|(_, r)| r.is_empty()) {
            return Ok(());
        }
        let mut m = descriptor(encoder, def, MetricType::Gauge)?;
        for (g, rows) in &groups {
            for (value, counts) in rows {
                for state in states {
                    let labels = def.labels([&g.name, &g.bk_biz_id, value, state.label()]);
                    m.encode_family(&labels)?
                        .encode_gauge(&(counts.get(*state) as i64))?;
                }
            }
        }
        Ok(())
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
                m.encode_family(&DISCOVERY_SKIPPED.labels([&g.name, reason]))?
                    .encode_gauge(&(count as i64))?;
            }
        }
        Ok(())
    }

    fn encode_self(&self, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let t = &self.telemetry;
        if !self.denied(&BUILD_INFO) {
            let mut m = descriptor(encoder, &BUILD_INFO, MetricType::Gauge)?;
            let labels =
                BUILD_INFO.labels([build::VERSION, build::REVISION, build::BRANCH, build::RUSTC]);
            m.encode_family(&labels)?.encode_gauge(&1i64)?;
        }
        self.encode_requests(encoder, t)?;
        let plain: [(&MetricDef, MetricType, &dyn EncodeMetric); 4] = [
            (&RATE_LIMIT_WAIT, MetricType::Counter, &t.rate_limit_wait),
            (&RELOAD_SUCCESS, MetricType::Gauge, &t.reload_success),
            (&RELOAD_TIMESTAMP, MetricType::Gauge, &t.reload_timestamp),
            (
                &WEB_CONFIG_SUCCESS,
                MetricType::Gauge,
                &t.web_config_success,
            ),
        ];
        let by_label: [(&MetricDef, MetricType, Series); 3] = [
            (
                &BODY_BYTES,
                MetricType::Gauge,
                each(BODY_ENCODINGS, &t.body_bytes),
            ),
            (
                &HTTP_REJECTED,
                MetricType::Counter,
                each(Rejection::ALL.map(Rejection::label), &t.http_rejected),
            ),
            (
                &OTLP_EXPORTS,
                MetricType::Counter,
                each(OTLP_RESULTS, &t.otlp_exports),
            ),
        ];
        for (def, metric_type, metric) in plain {
            if !self.denied(def) {
                metric.encode(descriptor(encoder, def, metric_type)?)?;
            }
        }
        for (def, metric_type, series) in by_label {
            let hidden = def.name == OTLP_EXPORTS.name && !t.otlp_enabled();
            if !hidden && !self.denied(def) {
                let mut m = descriptor(encoder, def, metric_type)?;
                for (value, metric) in series {
                    metric.encode(m.encode_family(&def.labels([value]))?)?;
                }
            }
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
        self.encode_process(encoder)
    }

    /// The `process_*` families, read from `/proc` now (absent elsewhere).
    fn encode_process(&self, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let Some(p) = ProcessStats::read() else {
            return Ok(());
        };
        let gauges: [(&MetricDef, Option<f64>); 4] = [
            (&PROCESS_RESIDENT_MEMORY, Some(p.resident_bytes as f64)),
            (&PROCESS_START_TIME, Some(p.start_time)),
            (&PROCESS_OPEN_FDS, p.open_fds.map(|n| n as f64)),
            (&PROCESS_MAX_FDS, p.max_fds.map(|n| n as f64)),
        ];
        if !self.denied(&PROCESS_CPU) {
            let cpu: Counter<f64, AtomicU64> = Counter::default();
            cpu.inc_by(p.cpu_seconds);
            cpu.encode(descriptor(encoder, &PROCESS_CPU, MetricType::Counter)?)?;
        }
        for (def, value) in gauges {
            if let Some(value) = value.filter(|_| !self.denied(def)) {
                descriptor(encoder, def, MetricType::Gauge)?.encode_gauge(&value)?;
            }
        }
        Ok(())
    }

    /// The per-call families: requests by result, durations, retries.
    fn encode_requests(
        &self,
        encoder: &mut DescriptorEncoder,
        t: &Telemetry,
    ) -> Result<(), fmt::Error> {
        if !self.denied(&API_REQUESTS) {
            let mut m = descriptor(encoder, &API_REQUESTS, MetricType::Counter)?;
            for (call, counters) in Call::ALL.iter().zip(&t.api_requests) {
                for (result, counter) in RESULT_LABELS.iter().zip(counters) {
                    let labels = API_REQUESTS.labels([call.label(), result]);
                    counter.encode(m.encode_family(&labels)?)?;
                }
            }
        }
        let per_call: [(&MetricDef, MetricType, Vec<&dyn EncodeMetric>); 2] = [
            (
                &API_DURATION,
                MetricType::Histogram,
                t.api_duration
                    .iter()
                    .map(|h| h as &dyn EncodeMetric)
                    .collect(),
            ),
            (
                &API_RETRIES,
                MetricType::Counter,
                t.api_retries
                    .iter()
                    .map(|c| c as &dyn EncodeMetric)
                    .collect(),
            ),
        ];
        for (def, metric_type, metrics) in per_call {
            if !self.denied(def) {
                let mut m = descriptor(encoder, def, metric_type)?;
                for (call, metric) in Call::ALL.iter().zip(metrics) {
                    metric.encode(m.encode_family(&def.labels([call.label()]))?)?;
                }
            }
        }
        Ok(())
    }
}

/// Metrics of one family, each with the value of the family's one label.
type Series<'a> = Vec<(&'a str, &'a dyn EncodeMetric)>;

/// Pairs label values with the metrics they label.
fn each<'a, const N: usize>(
    values: [&'a str; N],
    metrics: &'a [impl EncodeMetric; N],
) -> Series<'a> {
    values
        .into_iter()
        .zip(metrics.iter().map(|m| m as &dyn EncodeMetric))
        .collect()
}
