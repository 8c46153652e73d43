//! Wiring of one running exporter: the poll loop, the published exposition and
//! the HTTP server, with a shutdown handle.
//!
//! Owns task lifetimes and the schedule of cycles. No GSE wire format, metric
//! text or HTTP routing lives here; tests start exporters through this module
//! exactly as the binary does.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::config::Config;
use crate::exposition::Published;
use crate::gse::GseError;
use crate::metrics::Telemetry;
use crate::poller::Poller;
use crate::server::{self, AppState};

/// Why an exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The GSE client could not be built.
    #[error("cannot build the GSE client: {0}")]
    Client(#[from] GseError),
}

/// How to run an exporter.
#[derive(Debug, Clone)]
pub struct ExporterOptions {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Path of the metrics endpoint.
    pub telemetry_path: String,
}

impl Default for ExporterOptions {
    fn default() -> Self {
        ExporterOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            telemetry_path: "/metrics".into(),
        }
    }
}

/// A running exporter.
#[derive(Debug)]
pub struct Exporter {
    addr: SocketAddr,
    published: Arc<Published>,
    cycles: watch::Receiver<u64>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Exporter {
    /// Binds, starts polling at once, and serves.
    pub async fn start(config: Config, options: ExporterOptions) -> Result<Exporter, StartError> {
        let telemetry = Arc::new(Telemetry::default());
        let published = Arc::new(Published::new(telemetry.clone()));
        let poller = Poller::new(Arc::new(config), telemetry)?;
        let listener =
            TcpListener::bind(options.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: options.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: options.listen,
            source,
        })?;
        let (stop, stopped) = watch::channel(false);
        let (cycle_tx, cycles) = watch::channel(0u64);
        let state = AppState {
            published: published.clone(),
            telemetry_path: options.telemetry_path,
        };
        let http = tokio::spawn(serve_until_stopped(listener, state, stopped.clone()));
        let poll = tokio::spawn(poll_loop(poller, published.clone(), cycle_tx, stopped));
        tracing::info!(%addr, "gse_exporter listening");
        Ok(Exporter {
            addr,
            published,
            cycles,
            stop,
            tasks: vec![http, poll],
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The published state.
    pub fn published(&self) -> &Arc<Published> {
        &self.published
    }

    /// A receiver of the number of cycles published so far.
    pub fn cycles(&self) -> watch::Receiver<u64> {
        self.cycles.clone()
    }

    /// Stops polling and serving, and waits for both to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn serve_until_stopped(
    listener: TcpListener,
    state: AppState,
    mut stopped: watch::Receiver<bool>,
) {
    let shutdown = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    if let Err(err) = server::serve(listener, state, shutdown).await {
        tracing::error!(error = %err, "HTTP server failed");
    }
}

async fn poll_loop(
    mut poller: Poller,
    published: Arc<Published>,
    cycles: watch::Sender<u64>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(poller.config().interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        let snapshot = tokio::select! {
            snapshot = poller.run_cycle() => snapshot,
            _ = stopped.wait_for(|s| *s) => return,
        };
        let target = published.clone();
        // Rendering and gzip are CPU work: keep them off the async workers.
        if tokio::task::spawn_blocking(move || target.publish(snapshot))
            .await
            .is_err()
        {
            tracing::error!("rendering the snapshot failed; the previous one stays published");
            continue;
        }
        cycles.send_modify(|n| *n += 1);
    }
}
