//! Wiring of one running exporter: the poll loop, the published exposition,
//! the HTTP server, the OTLP pusher and reloads on SIGHUP, with a shutdown
//! handle.
//!
//! Owns task lifetimes and the schedule of cycles. Never half-alive: a task
//! that panics or ends before it is asked to stop ends the whole exporter
//! ([`Exporter::run_until`] names the task), and a shutdown is over within
//! [`SHUTDOWN_DEADLINE`] whatever a task is waiting on. No GSE wire format,
//! metric text or HTTP routing lives here; tests start exporters through this
//! module exactly as the binary does.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::config::web::WebConfigFile;
use crate::config::{Config, ConfigError};
use crate::expose::{Published, Rows, otlp};
use crate::http::{self as server, AppState, Gate, Limits, Reload};
use crate::model::Sharding;
use crate::poller::Poller;
use crate::telemetry::Telemetry;
use crate::upstream::GseError;

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
    /// The web configuration file is invalid.
    #[error("web configuration: {}", .0.problems().join("; "))]
    WebConfig(#[from] ConfigError),
    /// The telemetry path cannot be served.
    #[error("--web.telemetry-path {path:?}: {rule}")]
    TelemetryPath {
        /// The path given.
        path: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// SIGHUP could not be listened for.
    #[error("cannot listen for SIGHUP: {0}")]
    Signal(std::io::Error),
}

/// A task of a running exporter that ended before it was asked to stop:
/// the exporter is then stopped as a whole, never left half-alive.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The task panicked.
    #[error("the {task} task panicked: {message}")]
    Panicked {
        /// Which task: http, poll, otlp or reload.
        task: &'static str,
        /// The panic's message.
        message: String,
    },
    /// The task returned although nothing asked it to stop.
    #[error("the {task} task ended on its own")]
    Ended {
        /// Which task.
        task: &'static str,
    },
}

/// The longest a shutdown takes: tasks still running then are aborted.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(4);

/// How to run an exporter.
#[derive(Debug, Clone)]
pub struct ExporterOptions {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Path of the metrics endpoint.
    pub telemetry_path: String,
    /// The configuration file, re-read on reload (none in the demo).
    pub config_file: Option<PathBuf>,
    /// Sharding from the command line, which wins over the file's.
    pub sharding: Option<Sharding>,
    /// The exporter-toolkit web configuration (TLS, basic auth), if any.
    pub web_config_file: Option<PathBuf>,
    /// HTTP server limits.
    pub limits: Limits,
    /// Called after each publish, once the previous body is dropped: the
    /// binary hands its allocator's memory back to the system here.
    pub after_publish: Option<fn()>,
    /// Reload the configuration file on SIGHUP (the binary does).
    pub reload_on_sighup: bool,
}

impl Default for ExporterOptions {
    fn default() -> Self {
        ExporterOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            telemetry_path: "/metrics".into(),
            config_file: None,
            sharding: None,
            web_config_file: None,
            limits: Limits::default(),
            after_publish: None,
            reload_on_sighup: false,
        }
    }
}

/// This host's name: `$HOSTNAME`, else the kernel's.
pub fn hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
}

/// The longest one reload may take to read and check the files; past it the
/// reload fails (and its result, should it ever come, is dropped).
const RELOAD_DEADLINE: Duration = Duration::from_secs(30);

/// The outcome of one reload, shared by every request it answered.
pub type ReloadOutcome = Result<(), Arc<ConfigError>>;

/// Re-reads the configuration file and hands a valid one to the poller; a bad
/// file is rejected and the running configuration stays.
///
/// Reloads run one at a time on the exporter's reload task. Requests that
/// arrive while one runs (HTTP or SIGHUP, in storms) are answered together by
/// the next one, which starts after all of them: so a reload never answers
/// with a file older than the request, and an older read never overwrites a
/// newer one.
#[derive(Debug)]
pub struct Reloader {
    path: Option<PathBuf>,
    sharding: Option<Sharding>,
    config: watch::Sender<Arc<Config>>,
    published: Arc<Published>,
    /// Requests so far.
    requested: watch::Sender<u64>,
    /// The last request answered, and how.
    answered: watch::Sender<(u64, ReloadOutcome)>,
}

impl Reload for Reloader {
    fn reload(&self) -> Pin<Box<dyn Future<Output = ReloadOutcome> + Send + '_>> {
        Box::pin(self.reload_now())
    }
}

impl Reloader {
    fn new(
        path: Option<PathBuf>,
        sharding: Option<Sharding>,
        config: watch::Sender<Arc<Config>>,
        published: Arc<Published>,
    ) -> Reloader {
        Reloader {
            path,
            sharding,
            config,
            published,
            requested: watch::Sender::new(0),
            answered: watch::Sender::new((0, Ok(()))),
        }
    }

    /// Asks for a reload without waiting for it; returns the request's number.
    pub fn request(&self) -> u64 {
        let mut number = 0;
        self.requested.send_modify(|n| {
            *n += 1;
            number = *n;
        });
        number
    }

    /// Asks for a reload and waits for one that started after this call.
    /// Unchanged groups keep their state (no gap in their series).
    pub async fn reload_now(&self) -> ReloadOutcome {
        let mut answered = self.answered.subscribe();
        let number = self.request();
        match answered.wait_for(|(n, _)| *n >= number).await {
            Ok(answer) => answer.1.clone(),
            Err(_) => Err(Arc::new(slow_read(
                &self.path,
                "the exporter is shutting down",
            ))),
        }
    }

    /// Runs reloads while requests are unanswered: each covers every
    /// request made before it started.
    async fn answer_requests(&self) {
        loop {
            let wanted = *self.requested.borrow();
            if self.answered.borrow().0 >= wanted {
                return;
            }
            let outcome = self.reload_once().await;
            self.answered
                .send_modify(|answered| *answered = (wanted, outcome));
        }
    }

    async fn reload_once(&self) -> ReloadOutcome {
        let (path, sharding) = (self.path.clone(), self.sharding);
        let load = tokio::task::spawn_blocking(move || load(path.as_deref(), sharding));
        let result = match tokio::time::timeout(RELOAD_DEADLINE, load).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(slow_read(&self.path, "the reload failed")),
            Err(_) => Err(slow_read(&self.path, "reading took longer than 30 s")),
        };
        let telemetry = self.published.telemetry();
        let outcome = match result {
            Ok(config) => {
                telemetry.record_reload(true);
                tracing::info!(groups = config.groups.len(), "configuration reloaded");
                warn_unverified_tls(&config);
                self.config.send_replace(Arc::new(config));
                Ok(())
            }
            Err(err) => {
                telemetry.record_reload(false);
                for problem in err.problems() {
                    tracing::error!(problem = %problem, "configuration reload failed; the running configuration stays");
                }
                Err(Arc::new(err))
            }
        };
        let published = self.published.clone();
        let _ = tokio::task::spawn_blocking(move || published.refresh()).await;
        outcome
    }
}

/// A reload's read that did not finish, as a read error of the file.
fn slow_read(path: &Option<PathBuf>, what: &str) -> ConfigError {
    ConfigError::Read {
        path: path.clone().unwrap_or_default(),
        source: std::io::Error::new(std::io::ErrorKind::TimedOut, what.to_string()).into(),
    }
}

/// Reads and checks the configuration file (blocking).
fn load(path: Option<&std::path::Path>, sharding: Option<Sharding>) -> Result<Config, ConfigError> {
    let path = path.ok_or_else(|| ConfigError::Parse {
        path: "--config.file".into(),
        message: "no configuration file to reload (started with --demo)".into(),
    })?;
    let mut config = Config::load(path)?;
    for_shard(&mut config, sharding);
    Ok(config)
}

/// Sets the shard the flags name, if any, and keeps only the inline hosts
/// this shard polls.
fn for_shard(config: &mut Config, sharding: Option<Sharding>) {
    if let Some(sharding) = sharding {
        config.sharding = sharding;
    }
    let sharding = config.sharding;
    if sharding.total > 1 {
        config.retain_hosts(|key| crate::discovery::owns(sharding, key));
    }
}

/// A running exporter.
#[derive(Debug)]
pub struct Exporter {
    addr: SocketAddr,
    published: Arc<Published>,
    cycles: watch::Receiver<u64>,
    stop: watch::Sender<bool>,
    reloader: Arc<Reloader>,
    tasks: Vec<Task>,
}

/// A named task of the exporter.
#[derive(Debug)]
struct Task {
    name: &'static str,
    handle: JoinHandle<()>,
}

impl Task {
    fn spawn(name: &'static str, future: impl Future<Output = ()> + Send + 'static) -> Task {
        Task {
            name,
            handle: tokio::spawn(future),
        }
    }
}

impl Exporter {
    /// Binds, starts polling at once, and serves.
    pub async fn start(
        mut config: Config,
        options: ExporterOptions,
    ) -> Result<Exporter, StartError> {
        for_shard(&mut config, options.sharding);
        server::check_telemetry_path(&options.telemetry_path).map_err(|rule| {
            StartError::TelemetryPath {
                path: options.telemetry_path.clone(),
                rule,
            }
        })?;
        warn_unverified_tls(&config);
        let web = Arc::new(WebConfigFile::open(options.web_config_file.as_deref())?);
        if web.current().tls.is_some() {
            tracing::info!("TLS is enabled");
        }
        let config = Arc::new(config);
        let telemetry = Arc::new(Telemetry::default());
        let published = Arc::new(Published::new(telemetry.clone()));
        let poller = Poller::new(config.clone(), telemetry)?;
        let (config_tx, config_rx) = watch::channel(config);
        let reloader = Arc::new(Reloader::new(
            options.config_file.clone(),
            options.sharding,
            config_tx,
            published.clone(),
        ));
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
            reloader: reloader.clone(),
            web,
            limits: options.limits,
            gate: Arc::new(Gate::new(&options.limits)),
        };
        let mut tasks = vec![Task::spawn(
            "http",
            serve_until_stopped(listener, state, stopped.clone()),
        )];
        let hangups = if options.reload_on_sighup {
            Some(signal(SignalKind::hangup()).map_err(StartError::Signal)?)
        } else {
            None
        };
        tasks.push(Task::spawn(
            "reload",
            reload_loop(reloader.clone(), hangups, stopped.clone()),
        ));
        let instance_id = otlp::instance_id(hostname(), addr.port());
        tasks.push(Task::spawn(
            "otlp",
            otlp::run(
                published.clone(),
                config_rx.clone(),
                instance_id,
                stopped.clone(),
            ),
        ));
        tasks.push(Task::spawn(
            "poll",
            poll_loop(
                poller,
                published.clone(),
                cycle_tx,
                config_rx,
                stopped,
                options.after_publish,
            ),
        ));
        tracing::info!(%addr, "gse_exporter listening");
        Ok(Exporter {
            addr,
            published,
            cycles,
            stop,
            reloader,
            tasks,
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

    /// The reloader (SIGHUP and `POST /-/reload` use it).
    pub fn reloader(&self) -> Arc<Reloader> {
        self.reloader.clone()
    }

    /// Runs until `stop` resolves, then shuts down; or until a task ends
    /// on its own (a panic, or a return nothing asked for), which then stops
    /// the rest and is returned so that the process can exit non-zero.
    pub async fn run_until(mut self, stop: impl Future<Output = ()>) -> Result<(), TaskError> {
        let ended = {
            let handles = self.tasks.iter_mut().map(|t| &mut t.handle);
            tokio::select! {
                () = stop => None,
                (result, index, _) = futures::future::select_all(handles) => Some((index, result)),
            }
        };
        let Some((index, result)) = ended else {
            self.shutdown().await;
            return Ok(());
        };
        let task = self.tasks.remove(index).name;
        let error = match result {
            Err(err) if err.is_panic() => TaskError::Panicked {
                task,
                message: panic_message(err.into_panic()),
            },
            _ => TaskError::Ended { task },
        };
        tracing::error!(task, error = %error, "a task of the exporter ended; stopping the exporter");
        self.shutdown().await;
        Err(error)
    }

    /// Stops polling and serving and waits for every task to end, at most
    /// [`SHUTDOWN_DEADLINE`]; tasks still running then are aborted.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_DEADLINE;
        for mut task in self.tasks {
            if tokio::time::timeout_at(deadline, &mut task.handle)
                .await
                .is_err()
            {
                tracing::warn!(
                    task = task.name,
                    "still running at the shutdown deadline; aborted"
                );
                task.handle.abort();
            }
        }
    }
}

/// The text of a panic's payload.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map_or_else(|| "(no message)".to_string(), |s| (*s).to_string()),
    }
}

/// Answers reload requests one reload at a time, and turns every SIGHUP
/// into a request.
async fn reload_loop(
    reloader: Arc<Reloader>,
    mut hangups: Option<Signal>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut requests = reloader.requested.subscribe();
    loop {
        tokio::select! {
            () = reloader.answer_requests() => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        let hangup = async {
            match hangups.as_mut() {
                Some(signals) => signals.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            signal = hangup => {
                if signal.is_none() {
                    return;
                }
                reloader.request();
            }
            _ = requests.changed() => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}

/// Says loudly, at start and on every reload, that a block trusts any certificate.
fn warn_unverified_tls(config: &Config) {
    for (key, upstreams) in config.unverified_tls() {
        tracing::warn!(
            key,
            "TLS certificate verification is off for {upstreams} ({key}): \
             anyone on the network path can impersonate them"
        );
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

/// Hands a reloaded configuration to the poller, and restarts the schedule
/// when the interval changed.
fn apply(poller: &mut Poller, ticker: &mut tokio::time::Interval, config: Arc<Config>) {
    if config.interval != poller.config().interval {
        *ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + config.interval,
            config.interval,
        );
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    }
    if let Err(err) = poller.set_config(config) {
        tracing::error!(error = %err, "cannot apply the reloaded configuration");
    }
}

async fn poll_loop(
    mut poller: Poller,
    published: Arc<Published>,
    cycles: watch::Sender<u64>,
    mut configs: watch::Receiver<Arc<Config>>,
    mut stopped: watch::Receiver<bool>,
    after_publish: Option<fn()>,
) {
    let mut ticker = tokio::time::interval(poller.config().interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_extra: Option<tokio::time::Instant> = None;
    loop {
        // A reload waiting when a cycle ends is taken before a tick that is
        // due too: picked at random, the tick could win and run one more
        // cycle on the configuration just replaced.
        let reloaded = tokio::select! {
            biased;
            _ = stopped.wait_for(|s| *s) => return,
            Ok(()) = configs.changed() => true,
            _ = ticker.tick() => false,
        };
        if reloaded {
            let config = configs.borrow_and_update().clone();
            apply(&mut poller, &mut ticker, config);
            // A reload polls at once, on the new configuration; but reloads
            // add at most one cycle per interval: in a storm of them the
            // rest wait for the schedule.
            let now = tokio::time::Instant::now();
            if last_extra.is_some_and(|at| now < at + poller.config().interval) {
                continue;
            }
            last_extra = Some(now);
        }
        let snapshot = tokio::select! {
            snapshot = poller.run_cycle() => snapshot,
            _ = stopped.wait_for(|s| *s) => return,
        };
        let target = published.clone();
        // Agent rows outlive rendering only for the OTLP push.
        let rows = match poller.config().otlp {
            Some(_) => Rows::Keep,
            None => Rows::Drop,
        };
        // Rendering and gzip are CPU work: keep them off the async workers.
        let published_one = move || {
            target.publish(snapshot, rows);
            if let Some(release) = after_publish {
                release();
            }
        };
        match tokio::task::spawn_blocking(published_one).await {
            Ok(()) => {}
            // A panic while rendering is this task's panic: never serve an
            // old snapshot as if polling went on.
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(_) => return,
        }
        cycles.send_modify(|n| *n += 1);
    }
}
