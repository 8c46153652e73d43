//! Helpers shared by the integration tests: a simulator, an exporter polling
//! it, scraping, a small exposition parser, and waiting with deadlines.
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gse_exporter::config::Config;
use gse_exporter::run::{Exporter, ExporterOptions};
use gse_sim::{self as sim, AgentTruth, RunningSim, SimOptions};

pub mod binary;
pub mod stack;
pub mod tls;

/// Serves `app` on a loopback port of its own for the rest of the test;
/// its address.
pub async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Makes a FIFO at `path` (`mkfifo`).
pub fn mkfifo(path: &std::path::Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(made.success(), "mkfifo {}", path.display());
}

/// Loopback, any free port.
pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Starts a simulator with these options.
pub async fn start_sim(options: SimOptions) -> RunningSim {
    sim::start(options, loopback())
        .await
        .expect("simulator starts")
}

/// One group of a test configuration.
pub struct GroupSpec<'a> {
    pub name: &'a str,
    pub bk_biz_id: i64,
    pub api: &'a str,
    pub agents: &'a [AgentTruth],
    pub labels: &'a str,
}

impl<'a> GroupSpec<'a> {
    /// The group most tests poll: `web`, business 2, GSE 2.0, no labels.
    pub fn web(agents: &'a [AgentTruth]) -> GroupSpec<'a> {
        GroupSpec {
            name: "web",
            bk_biz_id: 2,
            api: "v2",
            agents,
            labels: "",
        }
    }
}

/// The `gse:` block pointing at a simulator; `extra` adds lines under `gse:`.
pub fn gse_block(sim: &RunningSim, extra: &str) -> String {
    format!(
        "gse:\n  api: v2\n  v1_url: {}\n  v2_url: {}\n  app_code: gse-exporter\n  app_secret: sim-secret\n{extra}",
        sim.v1_url(),
        sim.v2_url()
    )
}

/// A configuration YAML with groups taken from the simulator's fleet.
pub fn config_yaml(sim: &RunningSim, gse_extra: &str, top: &str, groups: &[GroupSpec]) -> String {
    let mut yaml = gse_block(sim, gse_extra);
    yaml.push_str(top);
    yaml.push_str("groups:\n");
    for g in groups {
        yaml.push_str(&format!(
            "  - name: {}\n    bk_biz_id: {}\n    gse_api: {}\n    labels: {{{}}}\n    hosts:\n",
            g.name, g.bk_biz_id, g.api, g.labels
        ));
        for agent in g.agents {
            let key = if g.api == "v1" {
                agent.hosts_key()
            } else {
                agent.v2_id()
            };
            yaml.push_str(&format!("      - \"{key}\"\n"));
        }
    }
    yaml
}

/// YAML to append after `config_yaml`'s groups: a group discovered from the
/// simulator's CMDB (gateway API) and the top-level `cmdb:` block.
pub fn cmdb_group_yaml(sim: &RunningSim, name: &str, bk_biz_id: i64, extra: &str) -> String {
    format!(
        "  - name: {name}\n    bk_biz_id: {bk_biz_id}\n    cmdb: {{}}\n{extra}cmdb:\n  url: {}\n  refresh_interval: 1s\n  rate_limit: {{ requests_per_second: 100, burst: 10 }}\n",
        sim.cmdb_gateway_url()
    )
}

/// A group item (under `groups:`) whose hosts come from a hosts file in
/// `dir` listing `agents` by agent id, so that the hosts-file families
/// have samples.
pub fn hosts_file_group_yaml(
    dir: &Path,
    name: &str,
    bk_biz_id: i64,
    agents: &[gse_sim::AgentTruth],
) -> String {
    format!(
        "  - name: {name}\n    bk_biz_id: {bk_biz_id}\n    hosts_file: {}\n",
        write_hosts_file(dir, name, agents).display()
    )
}

/// Writes `DIR/NAME.hosts` listing `agents` by agent id (GSE 2.0 keys).
pub fn write_hosts_file(dir: &Path, name: &str, agents: &[gse_sim::AgentTruth]) -> PathBuf {
    let file = dir.join(format!("{name}.hosts"));
    let ids: String = agents.iter().map(|a| format!("{}\n", a.v2_id())).collect();
    std::fs::write(&file, ids).unwrap();
    file
}

/// Fenced blocks of a Markdown file in a language (`yaml`, `text`).
pub fn blocks<'a>(markdown: &'a str, language: &str) -> Vec<&'a str> {
    let fence = format!("```{language}\n");
    markdown
        .split(fence.as_str())
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .collect()
}

/// The command lines of an `sh` block: comments (a `#` after a space) and
/// blank lines dropped, a line ending in `\\` joined to the next.
pub fn command_lines(block: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut continued = false;
    for line in block.lines() {
        let line = line.split(" #").next().unwrap_or_default().trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (line, continues) = match line.strip_suffix('\\') {
            Some(head) => (head.trim_end(), true),
            None => (line, false),
        };
        match lines.last_mut() {
            Some(last) if continued => {
                last.push(' ');
                last.push_str(line);
            }
            _ => lines.push(line.to_string()),
        }
        continued = continues;
    }
    lines
}

/// Runs `script` as a page's reader would, with bash (`-e`, `pipefail`) in
/// `cwd`, with `envs` added to the environment; fails the test unless it
/// exits with one of `codes`. Returns what it printed.
pub fn bash(script: &str, cwd: &Path, envs: &[(&str, String)], codes: &[i32]) -> String {
    let out = std::process::Command::new("bash")
        .args(["-e", "-o", "pipefail", "-c", script])
        .current_dir(cwd)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.code().is_some_and(|c| codes.contains(&c)),
        "{script}: {:?}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Like [`cmdb_group_yaml`], with `cmdb.topology` on for the group.
pub fn cmdb_topology_group_yaml(
    sim: &RunningSim,
    name: &str,
    bk_biz_id: i64,
    extra: &str,
) -> String {
    cmdb_group_yaml(sim, name, bk_biz_id, extra).replacen("cmdb: {}", "cmdb: { topology: true }", 1)
}

/// Parses configuration text (panics with the problems if invalid).
pub fn parse_config(yaml: &str) -> Config {
    Config::parse(yaml, Path::new(".")).unwrap_or_else(|e| panic!("test config is invalid: {e}"))
}

/// Starts an exporter on loopback.
/// An exporter started from the configuration file at `path`, which its
/// reloads read again.
pub async fn start_from_file(path: &Path) -> Exporter {
    let options = ExporterOptions {
        config_file: Some(path.to_path_buf()),
        ..ExporterOptions::default()
    };
    let config = Config::load(path).unwrap();
    Exporter::start(config, options).await.unwrap()
}

pub async fn start_exporter(config: Config) -> Exporter {
    Exporter::start(config, ExporterOptions::default())
        .await
        .expect("exporter starts")
}

/// Waits until the exporter has published `n` cycles, or panics at the deadline.
pub async fn wait_cycles(exporter: &Exporter, n: u64, deadline: Duration) {
    let mut cycles = exporter.cycles();
    let waited = tokio::time::timeout(deadline, cycles.wait_for(|c| *c >= n)).await;
    assert!(
        waited.is_ok(),
        "exporter did not publish {n} cycles within {deadline:?}"
    );
}

/// Polls `check` until it returns `Some`, or panics at the deadline.
pub async fn wait_until<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GETs `/metrics` in the Prometheus text format.
pub async fn scrape(addr: SocketAddr) -> String {
    let url = format!("http://{addr}/metrics");
    let response = reqwest::get(url).await.expect("scrape succeeds");
    assert!(response.status().is_success());
    response.text().await.expect("body is text")
}

/// One sample of an exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map(String::as_str).unwrap_or("")
    }
}

/// Parses the Prometheus text format (enough for the exporter's own output).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| parse_line(line).unwrap_or_else(|| panic!("unparsable line: {line}")))
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find('{') {
        Some(brace) => (&line[..brace], &line[brace + 1..]),
        None => {
            let (name, value) = line.split_once(' ')?;
            return Some(Sample {
                name: name.into(),
                labels: BTreeMap::new(),
                value: parse_value(value)?,
            });
        }
    };
    let mut labels = BTreeMap::new();
    let mut chars = rest.char_indices().peekable();
    let mut key = String::new();
    loop {
        let (_, c) = chars.next()?;
        match c {
            '}' => break,
            ',' | ' ' => {}
            '=' => {
                chars.next(); // opening quote
                let mut value = String::new();
                loop {
                    let (_, c) = chars.next()?;
                    match c {
                        '\\' => match chars.next()?.1 {
                            'n' => value.push('\n'),
                            other => value.push(other),
                        },
                        '"' => break,
                        other => value.push(other),
                    }
                }
                labels.insert(std::mem::take(&mut key), value);
            }
            other => key.push(other),
        }
    }
    let (idx, _) = chars.next()?;
    Some(Sample {
        name: name.into(),
        labels,
        value: parse_value(rest[idx..].trim())?,
    })
}

fn parse_value(text: &str) -> Option<f64> {
    match text.split_whitespace().next()? {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

/// Samples of one metric.
pub fn samples<'a>(all: &'a [Sample], name: &str) -> Vec<&'a Sample> {
    all.iter().filter(|s| s.name == name).collect()
}

/// The value of the one sample of `name` whose labels include `labels`.
pub fn value(all: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<&Sample> = all
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == *v))
        .collect();
    assert!(
        matching.len() <= 1,
        "{name}{labels:?} matches {} samples",
        matching.len()
    );
    matching.first().map(|s| s.value)
}

/// Per-agent samples keyed by `group/agent id`, or `group/cloud:ip` when the
/// series has no agent id.
pub fn by_agent<'a>(all: &'a [Sample], name: &str) -> BTreeMap<String, &'a Sample> {
    samples(all, name)
        .into_iter()
        .map(|s| {
            let id = match s.label("bk_agent_id") {
                "" => format!("{}:{}", s.label("bk_cloud_id"), s.label("ip")),
                id => id.to_string(),
            };
            (format!("{}/{id}", s.label("group")), s)
        })
        .collect()
}

/// The `by_agent` key of a simulated agent in a group polled through `api`
/// (v1 asks by `cloud:ip`; v2 by agent id where the agent has one).
pub fn agent_key(group: &str, api: &str, agent: &AgentTruth) -> String {
    let id = if api == "v1" {
        agent.hosts_key()
    } else {
        agent.v2_id()
    };
    format!("{group}/{id}")
}

/// The number of cycles the exporter has published so far.
pub fn cycles_now(exporter: &Exporter) -> u64 {
    *exporter.cycles().borrow()
}

/// Waits for `more` cycles past the current one, so that at least `more - 1`
/// whole cycles started after this call; returns the cycle count reached.
pub async fn wait_more_cycles(exporter: &Exporter, more: u64, deadline: Duration) -> u64 {
    let target = cycles_now(exporter) + more;
    wait_cycles(exporter, target, deadline).await;
    target
}

/// GETs a path of the exporter and returns its HTTP status.
pub async fn get_status(addr: SocketAddr, path: &str) -> u16 {
    reqwest::get(format!("http://{addr}{path}"))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .status()
        .as_u16()
}
