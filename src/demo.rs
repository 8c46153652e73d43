//! `--demo`: the built-in simulator plus a configuration that polls it.
//!
//! Owns only the demo fleet's shape (three groups of one simulated fleet, one
//! of them on GSE 1.x) and the YAML it generates; the exporter then runs
//! exactly as in production, through [`crate::config::Config::parse`].

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::config::{Config, ConfigError};
use gse_sim::{self as sim, AgentTruth, RunningSim, SimOptions};

/// Options of the demo fleet.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Agents in the simulated fleet.
    pub agents: usize,
    /// Poll interval.
    pub interval: Duration,
}

/// A running demo: the simulator and the configuration that polls it.
#[derive(Debug)]
pub struct Demo {
    /// The simulator (kept alive as long as the demo).
    pub sim: RunningSim,
    /// The generated configuration.
    pub config: Config,
}

/// Starts the simulator on loopback and builds the demo configuration.
pub async fn start(options: &DemoOptions) -> std::io::Result<Demo> {
    let sim_options = SimOptions {
        agents: options.agents,
        churn_per_minute: (options.agents as f64 / 200.0).max(3.0),
        latency: Duration::from_millis(40),
        ..SimOptions::default()
    };
    let sim = sim::start(sim_options.clone(), SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let yaml = demo_yaml(&sim, &sim_options, options.interval);
    let config = Config::parse(&yaml, Path::new("."))
        .map_err(|e: ConfigError| std::io::Error::other(e.to_string()))?;
    Ok(Demo { sim, config })
}

/// The demo configuration: `web-prod` (v2, half the fleet), `db-legacy` (v1,
/// a fifth) and `batch` (v2, the rest, with an extra label).
pub(crate) fn demo_yaml(sim: &RunningSim, options: &SimOptions, interval: Duration) -> String {
    let truth = sim.truth();
    let half = truth.len() / 2;
    let fifth = truth.len() / 5;
    let mut yaml = format!(
        "gse:\n  api: v2\n  v1_url: {v1}\n  v2_url: {v2}\n  app_code: {code}\n  app_secret: {secret}\n  \
         batch_size: 500\n  rate_limit: {{ requests_per_second: 20, burst: 10 }}\n\
         interval: {interval}\ninfo_interval: 1m\ngroups:\n",
        v1 = sim.v1_url(),
        v2 = sim.v2_url(),
        code = options.app_code,
        secret = options.app_secret,
        interval = humantime::format_duration(interval),
    );
    group_yaml(
        &mut yaml,
        "web-prod",
        2,
        "v2",
        "web",
        &truth[..half],
        AgentTruth::v2_id,
    );
    group_yaml(
        &mut yaml,
        "db-legacy",
        3,
        "v1",
        "db",
        &truth[half..half + fifth],
        AgentTruth::hosts_key,
    );
    group_yaml(
        &mut yaml,
        "batch",
        5,
        "v2",
        "batch",
        &truth[half + fifth..],
        AgentTruth::v2_id,
    );
    yaml
}

fn group_yaml(
    yaml: &mut String,
    name: &str,
    biz: i64,
    api: &str,
    tier: &str,
    agents: &[AgentTruth],
    key: fn(&AgentTruth) -> String,
) {
    let _ = write!(
        yaml,
        "  - name: {name}\n    bk_biz_id: {biz}\n    gse_api: {api}\n    labels: {{ tier: {tier} }}\n    hosts:\n"
    );
    for agent in agents {
        let _ = writeln!(yaml, "      - \"{}\"", key(agent));
    }
}
