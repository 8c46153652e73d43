//! The command line: flags in the Prometheus style, environment variables for
//! everything that may be secret or deployment-specific, and subcommands.
//!
//! Owns only the definition and parsing of arguments (every flag names its
//! default and environment variable in `--help`; completions and the man page
//! are generated from this definition); what each mode does is in `main.rs`
//! and the library modules.

use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{Parser, Subcommand, ValueEnum};

/// Exports the liveness of BlueKing GSE agents to Prometheus.
#[derive(Debug, Parser)]
#[command(
    name = "gse_exporter",
    version = crate::model::build::VERSION,
    long_version = crate::model::build::LONG_VERSION,
    about,
    long_about = None
)]
pub struct Cli {
    /// Configuration file (YAML; default: none, needed except with --demo).
    #[arg(long = "config.file", env = "GSE_EXPORTER_CONFIG", value_name = "PATH")]
    pub config_file: Option<PathBuf>,

    /// Validate the configuration file, print every problem, and exit (non-zero on problems).
    #[arg(
        long = "config.check",
        env = "GSE_EXPORTER_CONFIG_CHECK",
        value_parser = BoolishValueParser::new(),
        requires = "config_file"
    )]
    pub config_check: bool,

    /// Address to serve /metrics on: `HOST:PORT` (a host name is resolved once, at start) or `:PORT` (every interface).
    #[arg(
        long = "web.listen-address",
        env = "GSE_EXPORTER_LISTEN_ADDRESS",
        default_value = ":10909"
    )]
    pub listen_address: String,

    /// Path of the metrics endpoint (letters, digits, `-_.~/`; not `/` or under `/-/`).
    #[arg(
        long = "web.telemetry-path",
        env = "GSE_EXPORTER_TELEMETRY_PATH",
        default_value = "/metrics",
        value_parser = parse_telemetry_path
    )]
    pub telemetry_path: String,

    /// Web configuration file (exporter-toolkit format): TLS, client certificates, basic auth (default: none, plain HTTP without auth).
    #[arg(
        long = "web.config.file",
        env = "GSE_EXPORTER_WEB_CONFIG_FILE",
        value_name = "PATH"
    )]
    pub web_config_file: Option<PathBuf>,

    /// Most concurrent /metrics requests; more get 503 (0: no limit; at most 100000).
    #[arg(
        long = "web.max-requests",
        env = "GSE_EXPORTER_WEB_MAX_REQUESTS",
        default_value_t = 40,
        value_parser = count(0, MAX_WEB_COUNT)
    )]
    pub(crate) max_requests: usize,

    /// Most open HTTP connections (1 to 100000); at the cap the one idle the longest is closed to make room.
    #[arg(
        long = "web.max-connections",
        env = "GSE_EXPORTER_WEB_MAX_CONNECTIONS",
        default_value_t = 512,
        value_parser = clap::value_parser!(u32).range(1..=MAX_WEB_COUNT as i64)
    )]
    pub(crate) max_connections: u32,

    /// Time a client has for the TLS handshake, each request's headers and a request body (100ms to 1h).
    #[arg(
        long = "web.read-timeout",
        env = "GSE_EXPORTER_WEB_READ_TIMEOUT",
        default_value = "10s",
        value_parser = parse_timeout
    )]
    pub(crate) read_timeout: std::time::Duration,

    /// Answer `POST /-/reload` (as Prometheus' flag of the same name; SIGHUP always reloads).
    #[arg(
        long = "web.enable-lifecycle",
        env = "GSE_EXPORTER_WEB_ENABLE_LIFECYCLE",
        value_parser = BoolishValueParser::new()
    )]
    pub(crate) enable_lifecycle: bool,

    /// Log level.
    #[arg(long = "log.level", env = "GSE_EXPORTER_LOG_LEVEL", value_enum, default_value_t = LogLevel::Info, global = true)]
    pub log_level: LogLevel,

    /// Log format.
    #[arg(long = "log.format", env = "GSE_EXPORTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Logfmt, global = true)]
    pub log_format: LogFormat,

    /// This process's shard of the agents, from 0 (default: the config's `sharding`, else 0).
    #[arg(long, env = "GSE_EXPORTER_SHARD", requires = "total_shards", value_parser = clap::value_parser!(u32).range(0..MAX_SHARDS as i64))]
    pub(crate) shard: Option<u32>,

    /// Number of shards the agents are split into (default: the config's `sharding`, else 1).
    #[arg(long = "total-shards", env = "GSE_EXPORTER_TOTAL_SHARDS", value_parser = clap::value_parser!(u32).range(1..=MAX_SHARDS as i64))]
    pub(crate) total_shards: Option<u32>,

    /// Take the shard from the host name's trailing ordinal (StatefulSet pod `gse-exporter-3` is shard 3).
    #[arg(
        long = "shard.from-hostname",
        env = "GSE_EXPORTER_SHARD_FROM_HOSTNAME",
        value_parser = BoolishValueParser::new(),
        conflicts_with = "shard",
        requires = "total_shards"
    )]
    pub(crate) shard_from_hostname: bool,

    /// Run against the built-in GSE simulator (no GSE or config needed).
    #[arg(
        long,
        env = "GSE_EXPORTER_DEMO",
        value_parser = BoolishValueParser::new(),
        conflicts_with = "config_file"
    )]
    pub demo: bool,

    /// Agents in the demo fleet (1 to 2000000).
    #[arg(
        long = "demo.agents",
        env = "GSE_EXPORTER_DEMO_AGENTS",
        default_value_t = 3000,
        value_parser = count(1, MAX_AGENTS)
    )]
    pub demo_agents: usize,

    /// Mode other than exporting.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The shard named by the flags, if any.
pub fn sharding(
    cli: &Cli,
    hostname: impl FnOnce() -> Option<String>,
) -> Result<Option<crate::model::Sharding>, String> {
    let Some(total) = cli.total_shards else {
        return Ok(None);
    };
    let shard = if cli.shard_from_hostname {
        let name = hostname().ok_or("--shard.from-hostname: the host name is unknown")?;
        ordinal_of(&name).ok_or_else(|| {
            format!("--shard.from-hostname: host name {name:?} does not end in -<ordinal>")
        })?
    } else {
        cli.shard.unwrap_or(0)
    };
    if shard >= total {
        return Err(format!(
            "shard {shard} must be below --total-shards {total}"
        ));
    }
    Ok(Some(crate::model::Sharding { shard, total }))
}

fn parse_telemetry_path(text: &str) -> Result<String, String> {
    crate::http::check_telemetry_path(text)
        .map(|()| text.to_string())
        .map_err(str::to_string)
}

/// Most agents of the demo and the simulator.
const MAX_AGENTS: u64 = 2_000_000;
/// Most open connections or concurrent scrapes.
const MAX_WEB_COUNT: u64 = 100_000;
/// Most shards (as the configuration's `sharding.total_shards`).
const MAX_SHARDS: u32 = 10_000;

/// A duration between `min` and `max`, or a rule naming both.
fn duration_between(
    text: &str,
    min: std::time::Duration,
    max: std::time::Duration,
) -> Result<std::time::Duration, String> {
    let range = || {
        let show = |d| humantime::format_duration(d).to_string();
        format!("must be between {} and {}", show(min), show(max))
    };
    match humantime::parse_duration(text) {
        Ok(d) if (min..=max).contains(&d) => Ok(d),
        Ok(_) => Err(range()),
        Err(_) => Err(format!("not a duration (examples: 5s, 500ms); {}", range())),
    }
}

fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    use std::time::Duration;
    duration_between(text, Duration::from_millis(100), Duration::from_secs(3600))
}

fn latency(text: &str) -> Result<std::time::Duration, String> {
    duration_between(
        text,
        std::time::Duration::ZERO,
        std::time::Duration::from_secs(3600),
    )
}

/// A whole number from `min` to `max`.
fn count(min: u64, max: u64) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync {
    move |text| match text.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n as usize),
        _ => Err(format!("must be a whole number from {min} to {max}")),
    }
}

/// A share of the fleet, from 0 to 1.
fn share(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err("must be a number from 0 to 1".into()),
    }
}

/// Agents per minute, from 0 to a million.
fn per_minute(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(x) if (0.0..=1e6).contains(&x) => Ok(x),
        _ => Err("must be a number from 0 to 1000000".into()),
    }
}

/// A command-line error as clap renders it, with every quoted value (in
/// `'…'` or `"…"`, or after a quote never closed) cut to 80 bytes and escaped as
/// the configuration's problems are: a 5,000-byte flag value was echoed
/// whole.
pub fn bounded_error(rendered: &str) -> String {
    use crate::config::{MAX_QUOTE_BYTES, cut};
    let mut out = String::with_capacity(rendered.len().min(4096));
    let mut rest = rendered;
    while let Some(open) = rest.find(['\'', '"']) {
        let quote = rest[open..].chars().next().unwrap_or('"');
        out.push_str(&rest[..=open]);
        let inner = &rest[open + 1..];
        let close = inner.find(quote).unwrap_or(inner.len());
        out.push_str(&cut(&inner[..close], MAX_QUOTE_BYTES));
        rest = inner.get(close..).unwrap_or_default();
        if let Some(after) = rest.strip_prefix(quote) {
            out.push(quote);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The server limits named by the flags.
pub fn limits(cli: &Cli) -> crate::http::Limits {
    crate::http::Limits {
        read_timeout: cli.read_timeout,
        max_connections: cli.max_connections as usize,
        max_scrapes: cli.max_requests,
        enable_lifecycle: cli.enable_lifecycle,
        ..crate::http::Limits::default()
    }
}

/// The trailing `-N` of a StatefulSet pod name.
pub(crate) fn ordinal_of(hostname: &str) -> Option<u32> {
    let short = hostname.split('.').next()?;
    short.rsplit_once('-')?.1.parse().ok()
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the built-in GSE simulator alone (ESB v1 and gateway v2 paths, with fault knobs).
    Simulate(SimulateArgs),
    /// Poll the configured groups once and print every agent's state
    /// (exit 0 all online, 1 some not, 2 on an error).
    Query(QueryArgs),
    /// Check this host's GSE agent from the host itself (process, IPC socket,
    /// upstream connections, hosted plugins): serve /metrics, write a
    /// node_exporter textfile, or check once (exit 0 healthy, 1 unhealthy, 2 unknown or error).
    Node(crate::node::NodeArgs),
    /// Print a shell completion script to stdout.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print a man page (roff) to stdout: the program's, or a subcommand's;
    /// with --dir, write every page (gse_exporter.1, gse_exporter-query.1, ...) there.
    Man {
        /// The subcommand whose page to print (default: the program's).
        subcommand: Option<String>,
        /// Write every page into this directory instead (default: print one page to stdout).
        #[arg(
            long,
            env = "GSE_EXPORTER_MAN_DIR",
            value_name = "DIR",
            conflicts_with = "subcommand"
        )]
        dir: Option<PathBuf>,
    },
}

/// Options of `query`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// The exporter's configuration file (YAML; default: the one given before `query`, needed either way).
    #[arg(long = "config.file", env = "GSE_EXPORTER_CONFIG", value_name = "PATH")]
    pub config_file: Option<PathBuf>,
    /// Ask only this group (repeat, or separate with commas; default: every group).
    #[arg(
        long,
        env = "GSE_EXPORTER_QUERY_GROUP",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub(crate) group: Vec<String>,
    /// Ask only this host, `cloud:ip` or an agent id, in its one --group's business and API (repeat, or separate with commas; default: the group's own hosts).
    #[arg(
        long,
        env = "GSE_EXPORTER_QUERY_HOST",
        value_name = "HOST",
        value_delimiter = ',',
        requires = "group"
    )]
    pub(crate) host: Vec<String>,
    /// Output format.
    #[arg(
        long,
        short,
        env = "GSE_EXPORTER_QUERY_OUTPUT",
        value_enum,
        default_value_t = crate::query::Output::Table
    )]
    pub output: crate::query::Output,
    /// Show only agents in this state (repeat, or separate with commas; default: every agent).
    #[arg(
        long,
        env = "GSE_EXPORTER_QUERY_FILTER",
        value_enum,
        value_delimiter = ','
    )]
    pub filter: Vec<crate::query::Filter>,
}

impl QueryArgs {
    /// The groups and hosts asked for.
    pub fn selection(&self) -> crate::query::Selection {
        crate::query::Selection {
            groups: self.group.clone(),
            hosts: self.host.clone(),
        }
    }
}

/// Options of `simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Address to listen on.
    #[arg(
        long = "listen-address",
        env = "GSE_SIM_LISTEN_ADDRESS",
        default_value = "127.0.0.1:8080"
    )]
    pub listen_address: String,
    /// Agents in the fleet (1 to 2000000).
    #[arg(long, env = "GSE_SIM_AGENTS", default_value_t = 2000, value_parser = count(1, MAX_AGENTS))]
    pub agents: usize,
    /// Seed of the fleet.
    #[arg(long, env = "GSE_SIM_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Share of known agents online.
    #[arg(
        long = "online-share",
        env = "GSE_SIM_ONLINE_SHARE",
        default_value_t = 0.95,
        value_parser = share
    )]
    pub online_share: f64,
    /// Share of the fleet GSE does not know.
    #[arg(
        long = "unknown-share",
        env = "GSE_SIM_UNKNOWN_SHARE",
        default_value_t = 0.02,
        value_parser = share
    )]
    pub unknown_share: f64,
    /// Agents whose state flips per minute.
    #[arg(
        long = "churn-per-minute",
        env = "GSE_SIM_CHURN_PER_MINUTE",
        default_value_t = 6.0,
        value_parser = per_minute
    )]
    pub churn_per_minute: f64,
    /// Delay before every GSE reply (e.g. 200ms).
    #[arg(long, env = "GSE_SIM_LATENCY", default_value = "0s", value_parser = latency)]
    pub latency: std::time::Duration,
    /// How often an online agent reports to GSE: its report_time is never older.
    #[arg(long = "report-period", env = "GSE_SIM_REPORT_PERIOD", default_value = "20s", value_parser = humantime::parse_duration)]
    pub report_period: std::time::Duration,
    /// Write every agent's GSE 2.0 query key (agent id, or cloud:ip) to this file, one per line, then serve (default: no file).
    #[arg(long = "hosts-out", env = "GSE_SIM_HOSTS_OUT", value_name = "PATH")]
    pub hosts_out: Option<PathBuf>,
    /// App code the simulator accepts.
    #[arg(
        long = "app-code",
        env = "GSE_SIM_APP_CODE",
        default_value = "gse-exporter"
    )]
    pub app_code: String,
    /// App secret the simulator accepts.
    #[arg(
        long = "app-secret",
        env = "GSE_SIM_APP_SECRET",
        default_value = "sim-secret",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub app_secret: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_errors_quote_values_cut_short() {
        let long = "9".repeat(5000);
        let err =
            Cli::try_parse_from(["gse_exporter", "--web.max-connections", &long]).unwrap_err();
        let shown = bounded_error(&err.render().to_string());
        assert!(shown.len() < 600, "{shown}");
        assert!(shown.contains("'--web.max-connections <"), "{shown}");
        assert!(shown.contains("(5000 bytes)"), "{shown}");
        assert!(shown.contains("\n"), "clap's lines stay lines: {shown}");
        // A quote never closed is a value too.
        let shown = bounded_error(&format!("invalid '{}", "x".repeat(300)));
        assert!(shown.len() < 120, "{shown}");
        assert_eq!(bounded_error("a 'b' \"c\"\n"), "a 'b' \"c\"\n");
    }

    #[test]
    fn statefulset_pod_names_give_their_ordinal() {
        assert_eq!(ordinal_of("gse-exporter-3"), Some(3));
        assert_eq!(
            ordinal_of("gse-exporter-12.gse-exporter-shards.monitoring.svc"),
            Some(12)
        );
        assert_eq!(ordinal_of("gse-exporter"), None);
        let cli = Cli::parse_from(["gse_exporter", "--shard.from-hostname", "--total-shards=3"]);
        let shard = sharding(&cli, || Some("gse-exporter-2".into()))
            .unwrap()
            .unwrap();
        assert_eq!((shard.shard, shard.total), (2, 3));
        assert!(sharding(&cli, || Some("gse-exporter-3".into())).is_err());
    }
}

/// Log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Everything, including each retry.
    Debug,
    /// Start, stop, reloads, and failed cycles.
    Info,
    /// Failed cycles and worse.
    Warn,
    /// Errors only.
    Error,
}

impl LogLevel {
    /// The `tracing` filter directive.
    pub fn directive(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }

    /// The whole filter: this level, with the libraries' own logs held to
    /// what is worth it. rustls warns once per handshake about what a client
    /// sent (an IP address as the server name, which OpenSSL-based clients
    /// send to `https://<ip>:port`), before any auth or limit: at the
    /// default level one client could write a line per connection.
    pub fn filter(self) -> String {
        format!("{},hyper=warn,reqwest=warn,rustls=error", self.directive())
    }
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `key=value` lines.
    Logfmt,
    /// One JSON object per line.
    Json,
}
