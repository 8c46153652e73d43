//! The published state: the current snapshot's rendered `/metrics` bodies,
//! cached as bytes (plain and gzip), swapped atomically once per cycle, plus
//! readiness.
//!
//! A scrape only clones `Bytes` out of here. The Prometheus text body is
//! rendered when the snapshot is published; the OpenMetrics body is rendered
//! once, by the first scrape that asks for it, and then cached as well.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;

use crate::metrics::{Format, Telemetry, render};
use crate::state::Snapshot;

/// One rendered body in both encodings.
#[derive(Debug, Clone)]
pub struct Body {
    /// Uncompressed.
    pub plain: Bytes,
    /// gzip-compressed.
    pub gzip: Bytes,
}

impl Body {
    fn encode(text: String) -> Body {
        let plain = Bytes::from(text);
        Body {
            gzip: gzip(&plain),
            plain,
        }
    }
}

fn gzip(plain: &[u8]) -> Bytes {
    let mut encoder = GzEncoder::new(Vec::with_capacity(plain.len() / 6), Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(plain);
    Bytes::from(encoder.finish().unwrap_or_default())
}

/// The exposition of one snapshot.
#[derive(Debug)]
pub struct Exposition {
    snapshot: Arc<Snapshot>,
    telemetry: Arc<Telemetry>,
    prometheus: Body,
    openmetrics: OnceLock<Body>,
}

impl Exposition {
    /// Renders a snapshot (Prometheus text now; OpenMetrics on first demand).
    pub fn new(snapshot: Arc<Snapshot>, telemetry: Arc<Telemetry>) -> Exposition {
        let prometheus = Body::encode(render(
            snapshot.clone(),
            telemetry.clone(),
            Format::Prometheus,
        ));
        telemetry.set_body_bytes(prometheus.plain.len(), prometheus.gzip.len());
        Exposition {
            snapshot,
            telemetry,
            prometheus,
            openmetrics: OnceLock::new(),
        }
    }

    /// The body in a format.
    pub fn body(&self, format: Format) -> &Body {
        match format {
            Format::Prometheus => &self.prometheus,
            Format::OpenMetrics => self.openmetrics.get_or_init(|| {
                Body::encode(render(
                    self.snapshot.clone(),
                    self.telemetry.clone(),
                    Format::OpenMetrics,
                ))
            }),
        }
    }

    /// The snapshot behind this exposition.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
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
    pub fn new(telemetry: Arc<Telemetry>) -> Published {
        let empty = Exposition::new(Arc::new(Snapshot::default()), telemetry.clone());
        Published {
            current: ArcSwap::from_pointee(empty),
            ready: AtomicBool::new(false),
            telemetry,
        }
    }

    /// Renders and swaps in a snapshot; ready once a complete one is in.
    pub fn publish(&self, snapshot: Snapshot) {
        let complete = snapshot.complete;
        let exposition = Exposition::new(Arc::new(snapshot), self.telemetry.clone());
        self.current.store(Arc::new(exposition));
        if complete {
            self.ready.store(true, Ordering::Release);
        }
    }

    /// Re-renders the current snapshot (after a reload, so its metrics show at once).
    pub fn refresh(&self) {
        let snapshot = self.current().snapshot.clone();
        let exposition = Exposition::new(snapshot, self.telemetry.clone());
        self.current.store(Arc::new(exposition));
    }

    /// The current exposition.
    pub fn current(&self) -> Arc<Exposition> {
        self.current.load_full()
    }

    /// Whether a complete cycle has been published.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The self-telemetry shared with the poller.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }
}
