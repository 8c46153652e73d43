//! `gse_exporter node`: why an agent is offline, from the host itself.
//!
//! Runs next to the GSE agent and reads `/proc` and the filesystem directly
//! (it never runs another program): the agent process ([`agent`]), its IPC
//! socket ([`ipc`], queues from [`sockdiag`]), its TCP connections to the GSE
//! servers ([`upstream`]), the plugins it hosts ([`procinfo`]) and its
//! version. The results become `gse_node_*` metrics ([`metrics`]) written to
//! a node_exporter textfile ([`textfile`]) and served on its own `/metrics`
//! ([`serve`]) on a schedule, or one table or JSON document with `--once`
//! ([`output`]).
//!
//! Owns the flags of the mode, turning them into [`Options`], one round of
//! checks ([`check`]) and the loop. Self-contained: nothing here uses the
//! exporter's configuration, poller or server, and it needs no GSE
//! credentials.

mod agent;
mod ipc;
pub mod metrics;
mod output;
mod procinfo;
mod serve;
mod sockdiag;
mod textfile;
mod upstream;

use std::io::Write;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::builder::BoolishValueParser;
use serde::Serialize;
use tokio::sync::watch;

pub use crate::procfs::ProcError;
pub use output::Output;
pub use textfile::TextfileError;

use agent::{Generation, Layout, Restarts};
use upstream::Port;

/// Options of `gse_exporter node`.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// Check once, print the result and exit: 0 healthy, 1 unhealthy, 2 unknown or error.
    #[arg(long, env = "GSE_NODE_ONCE", value_parser = BoolishValueParser::new())]
    pub once: bool,
    /// Output of --once.
    #[arg(long, short, env = "GSE_NODE_OUTPUT", value_enum, default_value_t = Output::Table, requires = "once")]
    pub output: Output,
    /// GSE's install root; the agent lives in its agent/ directory.
    #[arg(
        long = "gse.home",
        env = "GSE_NODE_HOME",
        default_value = "/usr/local/gse",
        value_name = "PATH"
    )]
    pub home: PathBuf,
    /// GSE's run directory (pid files; GSE 2.0 creates it).
    #[arg(
        long = "gse.run-dir",
        env = "GSE_NODE_RUN_DIR",
        default_value = "/var/run/gse",
        value_name = "PATH"
    )]
    pub run_dir: PathBuf,
    /// GSE's data directory (GSE 2.0 creates it).
    #[arg(
        long = "gse.data-dir",
        env = "GSE_NODE_DATA_DIR",
        default_value = "/var/lib/gse",
        value_name = "PATH"
    )]
    pub data_dir: PathBuf,
    /// File holding the agent's version (default: <gse.home>/agent/VERSION).
    #[arg(
        long = "gse.version-file",
        env = "GSE_NODE_VERSION_FILE",
        value_name = "PATH"
    )]
    pub version_file: Option<PathBuf>,
    /// The agent's procinfo file of hosted plugins (default: <gse.home>/agent/etc/procinfo.json).
    #[arg(
        long = "procinfo.path",
        env = "GSE_NODE_PROCINFO_PATH",
        value_name = "PATH"
    )]
    pub procinfo: Option<PathBuf>,
    /// The agent's IPC socket (`dataipc` of its configuration).
    #[arg(
        long = "ipc.path",
        env = "GSE_NODE_IPC_PATH",
        default_value = "/var/run/ipc.state.report",
        value_name = "PATH"
    )]
    pub ipc_path: PathBuf,
    /// Connect to the IPC socket (and close at once) to see that it accepts.
    #[arg(long = "ipc.connect", env = "GSE_NODE_IPC_CONNECT", default_value = "true", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub ipc_connect: bool,
    /// IPC bytes queued (both ways) above which the socket counts as stuck.
    #[arg(
        long = "ipc.max-queue-bytes",
        env = "GSE_NODE_IPC_MAX_QUEUE_BYTES",
        default_value_t = 0
    )]
    pub max_queue_bytes: u64,
    /// A GSE server port the agent must be connected to, `PORT` or `ROLE:PORT`
    /// (repeat, or separate with commas; default: by generation, 1.x task:48668,data:58625,
    /// 2.0 cluster:28668,data:28625).
    #[arg(long = "upstream.port", env = "GSE_NODE_UPSTREAM_PORT", value_delimiter = ',', value_name = "[ROLE:]PORT", value_parser = parse_port)]
    pub upstream_ports: Vec<(String, u16)>,
    /// This host's IP as GSE knows it, the `ip` label joining the API view
    /// (default: the source address of this host's default route).
    #[arg(long = "host.ip", env = "GSE_NODE_HOST_IP", value_name = "IP")]
    pub host_ip: Option<IpAddr>,
    /// This host's BlueKing cloud area id, the `bk_cloud_id` label.
    #[arg(
        long = "host.cloud-id",
        env = "GSE_NODE_HOST_CLOUD_ID",
        default_value_t = 0
    )]
    pub cloud_id: u32,
    /// Where procfs is mounted.
    #[arg(
        long = "path.procfs",
        env = "GSE_NODE_PROCFS",
        default_value = "/proc",
        value_name = "PATH"
    )]
    pub procfs: PathBuf,
    /// Time between rounds of checks.
    #[arg(long = "check.interval", env = "GSE_NODE_CHECK_INTERVAL", default_value = "15s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Write the metrics to this node_exporter textfile-collector file (`*.prom`) after each round (default: none, no file).
    #[arg(
        long = "textfile.path",
        env = "GSE_NODE_TEXTFILE_PATH",
        value_name = "PATH"
    )]
    pub textfile: Option<PathBuf>,
    /// Serve /metrics here (`:PORT` listens on every interface; empty: do not serve).
    #[arg(
        long = "web.listen-address",
        env = "GSE_NODE_LISTEN_ADDRESS",
        default_value = ":10910"
    )]
    pub listen_address: String,
}

fn parse_port(text: &str) -> Result<(String, u16), String> {
    let (role, port) = match text.rsplit_once(':') {
        Some((role, port)) => (role.trim(), port),
        None => ("port", text),
    };
    let valid_role = !role.is_empty()
        && role.len() <= 32
        && role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid_role {
        return Err(format!(
            "role {role:?}: use letters, digits, - and _ (at most 32)"
        ));
    }
    match port.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok((role.to_string(), p)),
        _ => Err(format!("{port:?} is not a port (1-65535)")),
    }
}

/// Refuses a role and port given twice: each would be checked and exported
/// again, the same series twice on `/metrics` and in the textfile (which
/// node_exporter then complains of at every scrape).
fn once_each(ports: &[(String, u16)]) -> Result<(), NodeError> {
    let mut seen = std::collections::HashSet::new();
    match ports.iter().find(|port| !seen.insert(*port)) {
        Some((role, port)) => Err(NodeError::PortTwice {
            role: role.clone(),
            port: *port,
        }),
        None => Ok(()),
    }
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d >= Duration::from_millis(100) && d <= Duration::from_secs(86_400) => Ok(d),
        Ok(_) => Err("must be between 100ms and 24h".into()),
        Err(_) => Err("not a duration (examples: 15s, 1m)".into()),
    }
}

/// Why the node mode could not run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// `/proc` cannot be read at all.
    #[error(transparent)]
    Proc(#[from] ProcError),
    /// The textfile cannot be written.
    #[error(transparent)]
    Textfile(#[from] TextfileError),
    /// A `--upstream.port` given twice (it would export the same series twice).
    #[error("--upstream.port {role}:{port}: given twice (each role and port once)")]
    PortTwice {
        /// The role.
        role: String,
        /// The port.
        port: u16,
    },
    /// The listen address does not parse.
    #[error("{0}")]
    ListenAddress(String),
    /// The listen address cannot be bound.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// Neither output is enabled.
    #[error("nothing to do: pass --once, --textfile.path, or a --web.listen-address")]
    NoOutput,
    /// Printing the result failed.
    #[error("writing the output: {0}")]
    Write(#[from] std::io::Error),
}

/// The host labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Host {
    pub bk_cloud_id: String,
    pub ip: String,
}

/// Everything a round of checks needs, resolved from [`NodeArgs`].
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub home: PathBuf,
    pub run_dir: PathBuf,
    pub data_dir: PathBuf,
    pub version_file: PathBuf,
    pub procinfo: PathBuf,
    pub ipc_path: PathBuf,
    pub ipc_connect: bool,
    pub max_queue_bytes: u64,
    /// Empty: by generation.
    pub ports: Vec<Port>,
    pub host: Host,
    pub procfs: PathBuf,
}

impl Options {
    fn from_args(args: &NodeArgs) -> Options {
        let agent = args.home.join("agent");
        Options {
            home: args.home.clone(),
            run_dir: args.run_dir.clone(),
            data_dir: args.data_dir.clone(),
            version_file: args
                .version_file
                .clone()
                .unwrap_or_else(|| agent.join("VERSION")),
            procinfo: args
                .procinfo
                .clone()
                .unwrap_or_else(|| agent.join("etc/procinfo.json")),
            ipc_path: args.ipc_path.clone(),
            ipc_connect: args.ipc_connect,
            max_queue_bytes: args.max_queue_bytes,
            ports: args
                .upstream_ports
                .iter()
                .map(|(name, port)| Port {
                    port: *port,
                    name: name.clone(),
                })
                .collect(),
            host: Host {
                bk_cloud_id: args.cloud_id.to_string(),
                ip: args
                    .host_ip
                    .or_else(default_route_address)
                    .map(|ip| ip.to_canonical().to_string())
                    .unwrap_or_default(),
            },
            procfs: args.procfs.clone(),
        }
    }

    /// The configured ports, or the generation's defaults (bk-nodeman's
    /// `GSE_PORT_DEFAULT_VALUE` and `GSE_V2_PORT_DEFAULT_VALUE`).
    fn ports_for(&self, generation: Generation) -> Vec<Port> {
        if !self.ports.is_empty() {
            return self.ports.clone();
        }
        let defaults: &[(&str, u16)] = match generation {
            Generation::V1 => &[("task", 48668), ("data", 58625)],
            Generation::V2 | Generation::Unknown => &[("cluster", 28668), ("data", 28625)],
        };
        defaults
            .iter()
            .map(|(name, port)| Port {
                port: *port,
                name: (*name).to_string(),
            })
            .collect()
    }
}

/// The source address the kernel picks for the default route (a UDP
/// "connect" sends nothing).
fn default_route_address() -> Option<IpAddr> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// One round of checks.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub host: Host,
    /// Unix seconds when the round finished.
    pub checked_at: f64,
    pub duration_seconds: f64,
    pub layout: Layout,
    pub process: agent::AgentProcess,
    pub ipc: ipc::Ipc,
    pub upstream: upstream::Upstream,
    pub hosting: procinfo::Hosting,
    pub max_queue_bytes: u64,
}

/// Runs every check once.
pub(crate) fn check(options: &Options, restarts: &mut Restarts) -> Result<Report, NodeError> {
    let started = Instant::now();
    let procfs = crate::procfs::Procfs::new(&options.procfs);
    let kernel = procfs.kernel()?;
    let processes = procfs.processes()?;
    let layout = agent::layout(
        &options.home,
        &options.run_dir,
        &options.data_dir,
        &options.version_file,
    );
    let process = agent::check(&procfs, &kernel, &processes, &options.home, restarts);
    let main = process.main.as_ref().map(|m| m.pid);
    let ipc = ipc::check(&procfs, &options.ipc_path, options.ipc_connect, main);
    let ports = options.ports_for(layout.generation);
    let upstream = upstream::check(&procfs, &process, &ports);
    let sees_all = procfs.sees_other_users(&processes);
    let hosting = procinfo::check(&procfs, &options.procinfo, &processes, sees_all);
    Ok(Report {
        host: options.host.clone(),
        checked_at: unix_now(),
        duration_seconds: started.elapsed().as_secs_f64(),
        layout,
        process,
        ipc,
        upstream,
        hosting,
        max_queue_bytes: options.max_queue_bytes,
    })
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Runs the mode: one check printed (`--once`), or the loop until `stop`
/// resolves. Returns the exit status.
pub async fn run(
    args: &NodeArgs,
    out: &mut (dyn Write + Send),
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<u8, NodeError> {
    once_each(&args.upstream_ports)?;
    let options = Options::from_args(args);
    if args.once {
        let report = check(&options, &mut Restarts::default())?;
        // `--once --textfile.path` writes the file once (checking its name),
        // for a cron job; it was ignored without a word.
        if let Some(path) = &args.textfile {
            textfile::write(path, &metrics::render(&report))?;
        }
        let rows = output::rows(&report);
        let text = match args.output {
            Output::Table => output::table(&report, &rows),
            Output::Json => output::json(&report, &rows),
        };
        out.write_all(text.as_bytes())?;
        out.flush()?;
        return Ok(output::verdict(&rows).exit_code());
    }
    let listener = match args.listen_address.trim() {
        "" => None,
        text => {
            let addr = crate::http::parse_listen_address(text).map_err(NodeError::ListenAddress)?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| NodeError::Listen { addr, source })?;
            Some(listener)
        }
    };
    if let Some(path) = &args.textfile {
        textfile::validate(path)?;
    } else if listener.is_none() {
        return Err(NodeError::NoOutput);
    }
    tracing::info!(
        home = %options.home.display(),
        ipc = %options.ipc_path.display(),
        procinfo = %options.procinfo.display(),
        ip = %options.host.ip,
        bk_cloud_id = %options.host.bk_cloud_id,
        "checking the GSE agent of this host"
    );
    // The first round before serving, so /metrics is never empty.
    let mut restarts = Restarts::default();
    let first = check(&options, &mut restarts)?;
    let body = metrics::render(&first);
    if let Some(path) = &args.textfile {
        textfile::write(path, &body)?;
    }
    log_round(&first);
    let (publish, published) = watch::channel(Arc::new(body));
    let (stop_tx, mut stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        stop.await;
        let _ = stop_tx.send(true);
    });
    let server = listener.map(|listener| {
        let addr = listener.local_addr().ok();
        tracing::info!(addr = %addr.map_or_else(String::new, |a| a.to_string()), "gse_exporter listening");
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(serve::serve(listener, published, async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        }))
    });
    let mut ticker = tokio::time::interval(args.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop_rx.wait_for(|s| *s) => break,
        }
        let opts = options.clone();
        let Some(result) = round(&mut restarts, move |r| check(&opts, r)).await else {
            continue;
        };
        match result {
            Ok(report) => {
                let body = metrics::render(&report);
                if let Some(path) = &args.textfile
                    && let Err(e) = textfile::write(path, &body)
                {
                    tracing::error!(error = %e, "cannot write the textfile");
                }
                log_round(&report);
                publish.send_replace(Arc::new(body));
            }
            Err(e) => tracing::error!(error = %e, "checks failed"),
        }
    }
    if let Some(server) = server {
        let _ = server.await;
    }
    Ok(0)
}

/// Runs one round of checks off the async workers, the restart count going
/// into it and coming back with it. A round that panics (a defect) gives
/// `None` and leaves the count as it was: taken out for the round and not
/// put back, it fell to zero, which Prometheus reads as a counter reset.
async fn round<F>(restarts: &mut Restarts, run: F) -> Option<Result<Report, NodeError>>
where
    F: FnOnce(&mut Restarts) -> Result<Report, NodeError> + Send + 'static,
{
    let mut counted = restarts.clone();
    let ran = tokio::task::spawn_blocking(move || (run(&mut counted), counted)).await;
    match ran {
        Ok((result, counted)) => {
            *restarts = counted;
            Some(result)
        }
        Err(err) => {
            tracing::error!(error = %err, "a round of checks stopped; the next one runs as usual");
            None
        }
    }
}

fn log_round(report: &Report) {
    let rows = output::rows(report);
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| r.status == output::Status::Failed)
        .map(|r| r.check.as_str())
        .collect();
    tracing::debug!(
        verdict = ?output::verdict(&rows),
        failed = %failed.join(","),
        "checked"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A round that panics leaves the restart count where it was; one that
    /// ends gives back the count it kept.
    #[tokio::test]
    async fn a_round_that_panics_keeps_the_restart_count() {
        let mut restarts = Restarts::default();
        restarts.observe(Some((100, 1)));
        assert_eq!(restarts.observe(Some((200, 2))), 1, "one restart");
        let panicked = round(&mut restarts, |_| -> Result<Report, NodeError> {
            panic!("a defect in a check")
        })
        .await;
        assert!(panicked.is_none());
        assert_eq!(restarts.observe(Some((200, 2))), 1, "not reset to zero");
        let ended = round(&mut restarts, |r| {
            r.observe(Some((300, 3)));
            Err(NodeError::NoOutput)
        })
        .await;
        assert!(matches!(ended, Some(Err(_))));
        assert_eq!(
            restarts.observe(Some((300, 3))),
            2,
            "the round's count kept"
        );
    }

    #[test]
    fn ports_and_intervals_are_checked() {
        assert_eq!(parse_port("28625"), Ok(("port".into(), 28625)));
        assert_eq!(parse_port("data:58625"), Ok(("data".into(), 58625)));
        assert!(parse_port("0").is_err());
        assert!(parse_port("data:70000").is_err());
        assert!(parse_port("da ta:1").is_err());
        assert!(parse_port(":1").is_err());
        assert!(parse_interval("50ms").is_err());
        assert!(parse_interval("soon").is_err());
        assert_eq!(parse_interval("1s"), Ok(Duration::from_secs(1)));
    }

    #[test]
    fn a_port_given_twice_is_refused_by_role_and_port() {
        let ports = |texts: &[&str]| -> Vec<(String, u16)> {
            texts.iter().map(|t| parse_port(t).unwrap()).collect()
        };
        let twice = once_each(&ports(&["80", "data:58625", "port:80"])).unwrap_err();
        assert_eq!(
            twice.to_string(),
            "--upstream.port port:80: given twice (each role and port once)"
        );
        assert!(once_each(&ports(&["x:80", "y:80", "80"])).is_ok());
    }
}
