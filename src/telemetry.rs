//! The exporter's own counters: GSE requests, retries, waits on the rate
//! limit, body sizes, reloads, HTTP rejections and OTLP pushes.
//!
//! Owns the numbers only (and reads this process's own from `/proc` for the
//! `process_*` families), indexed by the typed reasons they count ([`Call`],
//! [`RESULT_LABELS`], [`Rejection`]). Metric names, help texts and label names
//! are `expose`'s table; this module never formats text. Every series exists
//! from the start at zero, so rates work from the first scrape.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::model::unix_seconds;
use crate::procfs::Procfs;
use crate::upstream::RESULT_LABELS;
use crate::upstream::gse::Call;

/// Buckets of the API request histogram, in seconds.
const API_BUCKETS: [f64; 11] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The `encoding` values of the body-size gauge, in order.
pub(crate) const BODY_ENCODINGS: [&str; 2] = ["identity", "gzip"];

/// The `result` values of the OTLP push counter, in order.
pub(crate) const OTLP_RESULTS: [&str; 2] = ["success", "failure"];

/// Why the HTTP server turned a client away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
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
    /// An idle connection closed to make room at `--web.max-connections`.
    IdleClosed,
}

impl Rejection {
    /// Every reason, in label order.
    pub(crate) const ALL: [Rejection; 6] = [
        Rejection::Unauthorized,
        Rejection::RateLimited,
        Rejection::TooManyScrapes,
        Rejection::TooManyConnections,
        Rejection::TlsHandshake,
        Rejection::IdleClosed,
    ];

    /// The `reason` label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Rejection::Unauthorized => "unauthorized",
            Rejection::RateLimited => "rate_limited",
            Rejection::TooManyScrapes => "too_many_scrapes",
            Rejection::TooManyConnections => "too_many_connections",
            Rejection::TlsHandshake => "tls_handshake",
            Rejection::IdleClosed => "idle_closed",
        }
    }
}

/// The exporter's own counters and histograms.
#[derive(Debug)]
pub struct Telemetry {
    /// Finished attempts per call (in [`Call::ALL`] order) and result (in
    /// [`RESULT_LABELS`] order).
    pub(crate) api_requests: [Vec<Counter>; 4],
    /// Attempt durations per call.
    pub(crate) api_duration: [Histogram; 4],
    /// Retries per call.
    pub(crate) api_retries: [Counter; 4],
    /// Seconds spent waiting on the exporter's own rate limit.
    pub(crate) rate_limit_wait: Counter<f64, AtomicU64>,
    /// Size of the last rendered body per [`BODY_ENCODINGS`].
    pub(crate) body_bytes: [Gauge; 2],
    /// Whether the last reload succeeded.
    pub(crate) reload_success: Gauge,
    /// Unix time of the last successful reload (or the start).
    pub(crate) reload_timestamp: Gauge<f64, AtomicU64>,
    /// Whether the last change of the web configuration file was applied.
    pub(crate) web_config_success: Gauge,
    /// Rejections per reason, in [`Rejection::ALL`] order.
    pub(crate) http_rejected: [Counter; 6],
    /// OTLP pushes per [`OTLP_RESULTS`].
    pub(crate) otlp_exports: [Counter; 2],
    otlp_enabled: AtomicBool,
}

impl Default for Telemetry {
    fn default() -> Self {
        let telemetry = Telemetry {
            api_requests: std::array::from_fn(|_| {
                RESULT_LABELS.iter().map(|_| Counter::default()).collect()
            }),
            api_duration: std::array::from_fn(|_| Histogram::new(API_BUCKETS)),
            api_retries: Default::default(),
            rate_limit_wait: Counter::default(),
            body_bytes: Default::default(),
            reload_success: Gauge::default(),
            reload_timestamp: Gauge::default(),
            web_config_success: Gauge::default(),
            http_rejected: Default::default(),
            otlp_exports: Default::default(),
            otlp_enabled: AtomicBool::new(false),
        };
        telemetry.reload_success.set(1);
        telemetry.web_config_success.set(1);
        telemetry
            .reload_timestamp
            .set(unix_seconds(SystemTime::now()));
        telemetry
    }
}

fn call_index(call: Call) -> usize {
    Call::ALL.iter().position(|c| *c == call).unwrap_or(0)
}

impl Telemetry {
    /// Counts one finished request attempt (`result` is one of [`RESULT_LABELS`]).
    pub(crate) fn record_request(&self, call: Call, result: &'static str, elapsed: Duration) {
        let call = call_index(call);
        if let Some(i) = RESULT_LABELS.iter().position(|r| *r == result) {
            self.api_requests[call][i].inc();
        }
        self.api_duration[call].observe(elapsed.as_secs_f64());
    }

    /// Counts one retry.
    pub(crate) fn record_retry(&self, call: Call) {
        self.api_retries[call_index(call)].inc();
    }

    /// Adds time spent waiting on the exporter's own rate limit.
    pub(crate) fn add_rate_limit_wait(&self, waited: Duration) {
        self.rate_limit_wait.inc_by(waited.as_secs_f64());
    }

    /// Records the size of the body just rendered.
    pub(crate) fn set_body_bytes(&self, plain: usize, gzip: usize) {
        for (gauge, bytes) in self.body_bytes.iter().zip([plain, gzip]) {
            gauge.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    /// Counts a connection or request the HTTP server turned away.
    pub(crate) fn record_rejection(&self, rejection: Rejection) {
        let i = Rejection::ALL.iter().position(|r| *r == rejection);
        self.http_rejected[i.unwrap_or(0)].inc();
    }

    /// Shows the OTLP push counter (both results from 0) from now on.
    pub(crate) fn enable_otlp(&self) {
        self.otlp_enabled.store(true, Ordering::Relaxed);
    }

    /// Whether OTLP pushes are configured (their counter is shown).
    pub(crate) fn otlp_enabled(&self) -> bool {
        self.otlp_enabled.load(Ordering::Relaxed)
    }

    /// Counts one finished OTLP push.
    pub(crate) fn record_otlp_export(&self, success: bool) {
        self.otlp_exports[usize::from(!success)].inc();
    }

    /// Records whether a changed web configuration file was applied or refused.
    pub(crate) fn record_web_config_reload(&self, applied: bool) {
        self.web_config_success.set(i64::from(applied));
    }

    /// Records the outcome of a configuration reload.
    pub(crate) fn record_reload(&self, success: bool) {
        self.reload_success.set(i64::from(success));
        if success {
            self.reload_timestamp.set(unix_seconds(SystemTime::now()));
        }
    }
}

/// The exporter process as the kernel sees it, for the `process_*` families.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ProcessStats {
    /// User and system CPU seconds.
    pub cpu_seconds: f64,
    /// Resident memory in bytes.
    pub resident_bytes: u64,
    /// Start time, Unix seconds.
    pub start_time: f64,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
}

impl ProcessStats {
    /// This process now; `None` where `/proc` cannot be read (not Linux).
    pub(crate) fn read() -> Option<ProcessStats> {
        let procfs = Procfs::new("/proc");
        let kernel = procfs.kernel().ok()?;
        let pid = std::process::id();
        let stat = procfs.process(pid)?;
        Some(ProcessStats {
            cpu_seconds: kernel.cpu_seconds(&stat),
            resident_bytes: kernel.rss_bytes(&stat),
            start_time: kernel.start_time(&stat),
            open_fds: procfs.open_fds(pid),
            max_fds: procfs.max_fds(pid),
        })
    }
}
