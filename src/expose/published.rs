//! The published state: the current snapshot's rendered `/metrics` bodies,
//! cached as bytes (plain and gzip), swapped atomically once per cycle, plus
//! readiness.
//!
//! A scrape only clones `Bytes` out of here. The Prometheus text body is
//! rendered when the snapshot is published; the OpenMetrics body is rendered
//! once, by the first scrape that asks for it, and then cached as well.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use bytes::Bytes;

use super::agents;
use super::gzip::Deflated;
use super::text::{Format, deny_set, is_denied, render};
use crate::snapshot::Snapshot;
use crate::telemetry::Telemetry;

/// One rendered body in both encodings. Each is a list of chunks (the
/// per-agent block, shared by both formats, then the rest), so serving it
/// copies nothing and the per-agent block is held once per encoding.
#[derive(Debug, Clone)]
pub struct Body {
    /// Uncompressed, in order.
    pub(crate) plain: Vec<Bytes>,
    /// gzip-compressed, in order (one gzip member).
    pub(crate) gzip: Vec<Bytes>,
}

impl Body {
    /// Bytes of the uncompressed body.
    pub fn plain_len(&self) -> usize {
        self.plain.iter().map(Bytes::len).sum()
    }

    /// Bytes of the gzip body.
    pub fn gzip_len(&self) -> usize {
        self.gzip.iter().map(Bytes::len).sum()
    }
}

/// The exposition of one snapshot.
#[derive(Debug)]
pub struct Exposition {
    snapshot: Arc<Snapshot>,
    telemetry: Arc<Telemetry>,
    agents: Bytes,
    agents_deflated: Deflated,
    prometheus: Body,
    openmetrics: OnceLock<Body>,
}

impl Exposition {
    /// Renders a snapshot (Prometheus text now; OpenMetrics on first demand).
    pub fn new(snapshot: Arc<Snapshot>, telemetry: Arc<Telemetry>) -> Exposition {
        let deny = deny_set(&snapshot.metric_deny);
        let agents = agents::render(&snapshot, &|def| is_denied(&deny, def));
        let agents_deflated = Deflated::head(&agents);
        let agents = Bytes::from(agents);
        let rest = render(snapshot.clone(), telemetry.clone(), Format::Prometheus);
        let prometheus = assemble(&agents, &agents_deflated, rest);
        telemetry.set_body_bytes(prometheus.plain_len(), prometheus.gzip_len());
        Exposition {
            snapshot,
            telemetry,
            agents,
            agents_deflated,
            prometheus,
            openmetrics: OnceLock::new(),
        }
    }

    /// The body in a format.
    pub fn body(&self, format: Format) -> &Body {
        match format {
            Format::Prometheus => &self.prometheus,
            Format::OpenMetrics => self.openmetrics.get_or_init(|| {
                let rest = render(
                    self.snapshot.clone(),
                    self.telemetry.clone(),
                    Format::OpenMetrics,
                );
                assemble(&self.agents, &self.agents_deflated, rest)
            }),
        }
    }

    /// The same snapshot with the self-metrics rendered again; the per-agent
    /// block is reused as it is.
    fn refreshed(&self) -> Exposition {
        let rest = render(
            self.snapshot.clone(),
            self.telemetry.clone(),
            Format::Prometheus,
        );
        let prometheus = assemble(&self.agents, &self.agents_deflated, rest);
        Exposition {
            snapshot: self.snapshot.clone(),
            telemetry: self.telemetry.clone(),
            agents: self.agents.clone(),
            agents_deflated: self.agents_deflated.clone(),
            prometheus,
            openmetrics: OnceLock::new(),
        }
    }

    /// The snapshot behind this exposition.
    pub(crate) fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }
}

fn assemble(agents: &Bytes, deflated: &Deflated, rest: String) -> Body {
    let rest = Bytes::from(rest);
    Body {
        gzip: deflated.gzip_with(&rest),
        plain: vec![agents.clone(), rest],
    }
}

/// What the HTTP server reads: the current exposition and readiness.
#[derive(Debug)]
pub struct Published {
    current: ArcSwap<Exposition>,
    ready: AtomicBool,
    telemetry: Arc<Telemetry>,
}

impl Published {
    /// Starts with an empty snapshot, not ready.
    pub(crate) fn new(telemetry: Arc<Telemetry>) -> Published {
        let empty = Exposition::new(Arc::new(Snapshot::default()), telemetry.clone());
        Published {
            current: ArcSwap::from_pointee(empty),
            ready: AtomicBool::new(false),
            telemetry,
        }
    }

    /// Renders and swaps in a snapshot; ready once a complete one is in.
    pub(crate) fn publish(&self, snapshot: Snapshot) {
        let complete = snapshot.complete;
        let exposition = Exposition::new(Arc::new(snapshot), self.telemetry.clone());
        self.current.store(Arc::new(exposition));
        if complete {
            self.ready.store(true, Ordering::Release);
        }
    }

    /// Renders the self-metrics of the current snapshot again (after a
    /// reload, so its outcome shows at once). A snapshot published meanwhile
    /// is never replaced by an older one.
    pub(crate) fn refresh(&self) {
        let current = self.current.load();
        let refreshed = Arc::new(current.refreshed());
        self.current.compare_and_swap(&*current, refreshed);
    }

    /// The current exposition.
    pub(crate) fn current(&self) -> Arc<Exposition> {
        self.current.load_full()
    }

    /// Whether a complete cycle has been published.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The self-telemetry shared with the poller.
    pub(crate) fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }
}
