//! A real monitoring stack around an in-process exporter: Prometheus with the
//! shipped rules, Alertmanager with the shipped routing, and a webhook
//! receiver that records every notification.
//!
//! Time is compressed 60 times: the rule groups evaluate every 1s instead of
//! 1m, so every `for:` of the shipped rules, and the Alertmanager
//! `group_wait` / `group_interval` / `repeat_interval`, are divided by 60.
//! Nothing else of the shipped files changes (expressions, labels, routing,
//! grouping and inhibit rules stay as they are).
//!
//! Prometheus and Alertmanager run as child processes with their storage in a
//! temporary directory; both are killed when the [`Stack`] is dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::routing::post;
use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;
use tempfile::TempDir;
use tokio::task::JoinHandle;

use super::wait_until;

/// How much faster than production the stack runs (1m evaluation -> 1s).
pub const TIME_SCALE: u64 = 60;

/// The `site` target label of every target the stack scrapes (the site
/// label of the mixin, `_config.siteLabel`).
pub const E2E_SITE: &str = "e2e";

/// How long to wait for a process to become ready.
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Files in `dir` whose name ends in `suffix`, sorted.
pub fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.to_str().is_some_and(|s| s.ends_with(suffix)))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *{suffix} in {}", dir.display());
    files
}

/// The shipped rule files (`alerts/*.rules.yml`).
pub fn rule_files() -> Vec<PathBuf> {
    files_with_suffix(&repo_root().join("alerts"), ".rules.yml")
}

/// Metrics that the shipped assets already name but the exporter does not
/// expose yet. tests/drift.rs fails for any other unexposed name, and fails
/// for an entry here once it is exposed or no longer named.
pub const NOT_YET_EXPOSED: &[&str] = &[];

/// The shipped dashboards (`dashboards/*.json`).
pub fn dashboard_files() -> Vec<PathBuf> {
    files_with_suffix(&repo_root().join("dashboards"), ".json")
}

/// Reads a file as text.
pub fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Reads a YAML file.
pub fn read_yaml(path: &Path) -> Yaml {
    serde_yaml_ng::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

/// Parses a Prometheus duration (`90s`, `5m`, `1h30m`, `1d`, `500ms`) in ms.
pub fn duration_ms(text: &str) -> u64 {
    let d = humantime::parse_duration(text).unwrap_or_else(|_| panic!("bad duration {text:?}"));
    d.as_millis() as u64
}

/// `text` divided by [`TIME_SCALE`], as milliseconds (at least 1ms).
fn scaled(text: &str) -> String {
    let ms = (duration_ms(text) / TIME_SCALE).max(1);
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The largest `for:` of the named alerts after scaling, in whole
/// evaluations (1s each), rounded up.
pub fn scaled_for_evaluations(alerts: &[&str]) -> u64 {
    let mut longest = 0;
    for file in rule_files() {
        for group in seq(&read_yaml(&file)["groups"]) {
            for rule in seq(&group["rules"]) {
                let name = rule["alert"].as_str().unwrap_or("");
                if alerts.contains(&name) {
                    let ms = rule["for"].as_str().map_or(0, duration_ms) / TIME_SCALE;
                    longest = longest.max(ms.div_ceil(1000));
                }
            }
        }
    }
    longest
}

fn seq(value: &Yaml) -> &[Yaml] {
    value.as_sequence().map(Vec::as_slice).unwrap_or(&[])
}

fn set(map: &mut Yaml, key: &str, value: String) {
    map.as_mapping_mut()
        .expect("a mapping")
        .insert(Yaml::from(key), Yaml::from(value));
}

/// Writes the shipped rule files into `dir` with every group's `interval`
/// and every rule's `for` divided by [`TIME_SCALE`]; returns their paths.
pub fn write_scaled_rules(dir: &Path) -> Vec<PathBuf> {
    fs::create_dir_all(dir).expect("rules dir");
    let mut written = Vec::new();
    for file in rule_files() {
        let mut rules = read_yaml(&file);
        let groups = rules["groups"]
            .as_sequence_mut()
            .expect("rule file has groups");
        for group in groups {
            if let Some(interval) = group["interval"].as_str().map(scaled) {
                set(group, "interval", interval);
            }
            for rule in group["rules"].as_sequence_mut().expect("group has rules") {
                if let Some(for_) = rule["for"].as_str().map(scaled) {
                    set(rule, "for", for_);
                }
            }
        }
        let out = dir.join(file.file_name().expect("file name"));
        fs::write(&out, serde_yaml_ng::to_string(&rules).expect("YAML")).expect("write rules");
        written.push(out);
    }
    written
}

/// The shipped Alertmanager configuration with each webhook receiver's URLs
/// replaced by `{webhook}/{receiver name}` and the route timers of every
/// route that sets them divided by [`TIME_SCALE`].
pub fn scaled_alertmanager_config(webhook: &str) -> String {
    let mut config = read_yaml(&repo_root().join("deploy/alertmanager/alertmanager.yml"));
    fn scale_route(route: &mut Yaml) {
        for key in ["group_wait", "group_interval", "repeat_interval"] {
            if let Some(value) = route[key].as_str().map(scaled) {
                set(route, key, value);
            }
        }
        if let Some(routes) = route["routes"].as_sequence_mut() {
            routes.iter_mut().for_each(scale_route);
        }
    }
    scale_route(&mut config["route"]);
    for receiver in config["receivers"]
        .as_sequence_mut()
        .expect("receivers")
        .iter_mut()
    {
        let name = receiver["name"]
            .as_str()
            .expect("receiver name")
            .to_string();
        if let Some(hooks) = receiver["webhook_configs"].as_sequence_mut() {
            for hook in hooks {
                set(hook, "url", format!("{webhook}/{name}"));
            }
        }
        for key in receiver.as_mapping().expect("receiver").keys() {
            let key = key.as_str().unwrap_or("");
            assert!(
                matches!(key, "name" | "webhook_configs"),
                "receiver {name} uses {key}; teach the e2e stack to replace it"
            );
        }
    }
    serde_yaml_ng::to_string(&config).expect("YAML")
}

/// Asks the OS for a free loopback port (bind port 0, read it, close).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A child process killed (and reaped) on drop.
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Process {
    /// Starts `program` with `args` plus `--web.listen-address` on a free
    /// port, and waits until `/-/ready` answers 200. Retries on another port
    /// when the process exits early (the port was taken in between).
    async fn start(name: &str, program: &str, args: &[String], dir: &Path) -> Process {
        for attempt in 0..3 {
            let port = free_port();
            let log = dir.join(format!("{name}-{attempt}.log"));
            let log_file = fs::File::create(&log).expect("log file");
            let child = Command::new(program)
                .args(args)
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("log file"))
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run {program} ({e}); install it (Debian: apt-get install \
                         prometheus prometheus-alertmanager, or run scripts/test)"
                    )
                });
            let mut process = Process {
                name: name.to_string(),
                child,
                log,
                url: format!("http://127.0.0.1:{port}"),
            };
            if process.wait_ready().await {
                return process;
            }
        }
        panic!("{name} did not start on three free ports");
    }

    /// True once `/-/ready` answers 200; false if the process exited.
    async fn wait_ready(&mut self) -> bool {
        let ready = format!("{}/-/ready", self.url);
        let end = tokio::time::Instant::now() + READY_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                eprintln!("{} exited with {status}:\n{}", self.name, self.log_text());
                return false;
            }
            if let Ok(response) = reqwest::get(&ready).await
                && response.status().is_success()
            {
                return true;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "{} not ready within {READY_DEADLINE:?}:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its output so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One alert of one webhook notification.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Notified {
    /// The receiver (from the webhook path).
    pub receiver: String,
    /// `firing` or `resolved`.
    pub status: String,
    /// Alertmanager's fingerprint of the alert's labels.
    pub fingerprint: String,
    /// The alert's labels.
    pub labels: BTreeMap<String, String>,
    /// The alert's annotations (`runbook_url`, ...).
    pub annotations: BTreeMap<String, String>,
}

impl Notified {
    /// A label value ("" when absent).
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map(String::as_str).unwrap_or("")
    }

    /// The alert name.
    pub fn alertname(&self) -> &str {
        self.label("alertname")
    }
}

type Received = Arc<Mutex<Vec<(String, Json)>>>;

/// An HTTP server on loopback recording every Alertmanager webhook payload.
pub struct Webhook {
    addr: SocketAddr,
    received: Received,
    task: JoinHandle<()>,
}

impl Webhook {
    /// Serves `POST /{receiver}` on a free loopback port.
    pub async fn start() -> Webhook {
        async fn receive(
            State(received): State<Received>,
            UrlPath(receiver): UrlPath<String>,
            body: String,
        ) -> &'static str {
            let payload: Json = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("webhook payload is not JSON ({e}): {body}"));
            received.lock().unwrap().push((receiver, payload));
            "ok"
        }
        let received = Received::default();
        let app = Router::new()
            .route("/{receiver}", post(receive))
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind(super::loopback())
            .await
            .expect("webhook binds");
        let addr = listener.local_addr().expect("webhook address");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("webhook serves");
        });
        Webhook {
            addr,
            received,
            task,
        }
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every alert of every payload so far, deduplicated by receiver,
    /// status and fingerprint (repeats and group re-sends collapse).
    pub fn notified(&self) -> BTreeSet<Notified> {
        let received = self.received.lock().unwrap();
        let mut out = BTreeSet::new();
        for (receiver, payload) in received.iter() {
            let alerts = payload["alerts"].as_array().expect("payload has alerts");
            for alert in alerts {
                let labels = alert["labels"]
                    .as_object()
                    .expect("alert has labels")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect();
                let annotations = labels_of(&alert["annotations"]);
                out.insert(Notified {
                    receiver: receiver.clone(),
                    status: alert["status"].as_str().expect("status").to_string(),
                    fingerprint: alert["fingerprint"]
                        .as_str()
                        .expect("fingerprint")
                        .to_string(),
                    labels,
                    annotations,
                });
            }
        }
        out
    }

    /// Alerts of this name notified with this status.
    pub fn notified_as(&self, alertname: &str, status: &str) -> Vec<Notified> {
        self.notified()
            .into_iter()
            .filter(|n| n.alertname() == alertname && n.status == status)
            .collect()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An alert as Prometheus or Alertmanager holds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HeldAlert {
    /// Prometheus: `pending` / `firing`; Alertmanager: `active` /
    /// `suppressed` / `unprocessed`.
    pub state: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

impl HeldAlert {
    /// A label value ("" when absent).
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map(String::as_str).unwrap_or("")
    }

    /// The alert name.
    pub fn alertname(&self) -> &str {
        self.label("alertname")
    }
}

fn labels_of(value: &Json) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

async fn get_json(url: &str) -> Json {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status();
    let body = response.text().await.expect("body");
    assert!(status.is_success(), "GET {url}: {status}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {body}"))
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// POSTs a form to a Prometheus API endpoint: its `data`, or its error.
async fn post_form(url: &str, form: &[(&str, &str)]) -> Result<Json, String> {
    let body: Vec<String> = form
        .iter()
        .map(|(k, v)| format!("{k}={}", form_encode(v)))
        .collect();
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.join("&"))
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let text = response.text().await.map_err(|e| e.to_string())?;
    let body: Json =
        serde_json::from_str(&text).map_err(|e| format!("POST {url}: not JSON ({e}): {text}"))?;
    match body["status"].as_str() {
        Some("success") => Ok(body["data"].clone()),
        _ => Err(format!("{}: {}", body["errorType"], body["error"])),
    }
}

/// A running Prometheus.
pub struct Prometheus {
    /// The process.
    pub process: Process,
}

impl Prometheus {
    /// Starts Prometheus with `config` (its configuration file's text),
    /// keeping its files and log in `dir`; ready when this returns.
    pub async fn start(config: &str, dir: &Path) -> Prometheus {
        let config_path = dir.join("prometheus.yml");
        fs::write(&config_path, config).expect("Prometheus config");
        let args = vec![
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir.join("prom-data").display()),
            "--log.level=warn".to_string(),
        ];
        Prometheus {
            process: Process::start("prometheus", prometheus_binary(), &args, dir).await,
        }
    }

    /// Its base URL.
    pub fn url(&self) -> &str {
        &self.process.url
    }

    /// Runs an instant query: the `data` object, or Prometheus' error.
    pub async fn query(&self, expr: &str) -> Result<Json, String> {
        let url = format!("{}/api/v1/query", self.url());
        post_form(&url, &[("query", expr)]).await
    }

    /// Runs a range query over the last `seconds` with a 1s step.
    pub async fn query_range(&self, expr: &str, seconds: u64) -> Result<Json, String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let url = format!("{}/api/v1/query_range", self.url());
        let (start, end) = ((now - seconds).to_string(), now.to_string());
        let form = [
            ("query", expr),
            ("start", &start),
            ("end", &end),
            ("step", "1"),
        ];
        post_form(&url, &form).await
    }

    /// The number of samples of an instant query (panics on error).
    pub async fn count(&self, expr: &str) -> usize {
        let data = self
            .query(expr)
            .await
            .unwrap_or_else(|e| panic!("{expr}: {e}"));
        data["result"].as_array().map_or(0, Vec::len)
    }

    /// Pending and firing alerts (`/api/v1/alerts`).
    pub async fn alerts(&self) -> Vec<HeldAlert> {
        let body = get_json(&format!("{}/api/v1/alerts", self.url())).await;
        body["data"]["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .map(|a| HeldAlert {
                state: a["state"].as_str().unwrap_or("").to_string(),
                labels: labels_of(&a["labels"]),
            })
            .collect()
    }

    /// `lastEvaluation` of every rule group, by group name.
    pub async fn last_evaluations(&self) -> BTreeMap<String, String> {
        let body = get_json(&format!("{}/api/v1/rules", self.url())).await;
        body["data"]["groups"]
            .as_array()
            .expect("rule groups")
            .iter()
            .map(|g| {
                (
                    g["name"].as_str().unwrap_or("").to_string(),
                    g["lastEvaluation"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// Waits until every rule group has evaluated `n` more times, checking
    /// `check` against the pending and firing alerts at every poll (it
    /// returns a problem to fail with). This is the "quiet period": measured
    /// in evaluation cycles, not wall time.
    pub async fn watch_evaluations<F>(&self, n: usize, mut check: F)
    where
        F: FnMut(&[HeldAlert]) -> Option<String>,
    {
        let start = self.last_evaluations().await;
        let mut seen: BTreeMap<String, (String, usize)> = start
            .into_iter()
            .map(|(group, last)| (group, (last, 0)))
            .collect();
        assert!(!seen.is_empty(), "Prometheus has no rule groups");
        let deadline = Duration::from_secs(n as u64 * 3 + 20);
        let end = tokio::time::Instant::now() + deadline;
        loop {
            let alerts = self.alerts().await;
            if let Some(problem) = check(&alerts) {
                panic!("{problem}; alerts in Prometheus: {alerts:#?}");
            }
            for (group, last) in self.last_evaluations().await {
                let entry = seen.entry(group).or_insert((last.clone(), 0));
                if entry.0 != last {
                    *entry = (last, entry.1 + 1);
                }
            }
            if seen.values().all(|(_, count)| *count >= n) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "rule groups did not evaluate {n} times within {deadline:?}: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A running Alertmanager.
pub struct Alertmanager {
    /// The process.
    pub process: Process,
}

impl Alertmanager {
    /// Its base URL.
    pub fn url(&self) -> &str {
        &self.process.url
    }

    /// Every alert it holds (`/api/v2/alerts`: active, suppressed and
    /// unprocessed, resolved ones excluded).
    pub async fn alerts(&self) -> Vec<HeldAlert> {
        let body = get_json(&format!("{}/api/v2/alerts", self.url())).await;
        body.as_array()
            .expect("alerts")
            .iter()
            .map(|a| HeldAlert {
                state: a["status"]["state"].as_str().unwrap_or("").to_string(),
                labels: labels_of(&a["labels"]),
            })
            .collect()
    }
}

/// Prometheus scraping an exporter as `job="gse_exporter"` every second with
/// the scaled rules, alerting to an Alertmanager with the scaled shipped
/// routing, which notifies a [`Webhook`].
pub struct Stack {
    /// The notification receiver.
    pub webhook: Webhook,
    /// Alertmanager.
    pub alertmanager: Alertmanager,
    /// Prometheus.
    pub prometheus: Prometheus,
    _dir: TempDir,
}

fn prometheus_binary() -> &'static str {
    "prometheus"
}

fn alertmanager_binary() -> &'static str {
    // Debian names it prometheus-alertmanager; upstream alertmanager.
    let debian = Command::new("prometheus-alertmanager")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if debian.is_ok() {
        "prometheus-alertmanager"
    } else {
        "alertmanager"
    }
}

impl Alertmanager {
    /// Starts an Alertmanager with the shipped (scaled) configuration in
    /// `dir`, notifying `webhook`.
    pub async fn start(dir: &Path, webhook: &Webhook) -> Alertmanager {
        let am_config = dir.join("alertmanager.yml");
        fs::write(&am_config, scaled_alertmanager_config(&webhook.url())).expect("AM config");
        let am_args = vec![
            format!("--config.file={}", am_config.display()),
            format!("--storage.path={}", dir.join("am-data").display()),
            "--cluster.listen-address=".to_string(),
            "--log.level=warn".to_string(),
        ];
        Alertmanager {
            process: Process::start("alertmanager", alertmanager_binary(), &am_args, dir).await,
        }
    }

    /// Sends firing alerts with these labels, as Prometheus would
    /// (`POST /api/v2/alerts`).
    pub async fn post(&self, alerts: &[BTreeMap<String, String>]) {
        let body: Vec<Json> = alerts
            .iter()
            .map(|labels| serde_json::json!({ "labels": labels, "annotations": {} }))
            .collect();
        let url = format!("{}/api/v2/alerts", self.url());
        let response = reqwest::Client::new()
            .post(&url)
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        assert!(
            response.status().is_success(),
            "POST {url}: {}",
            response.status()
        );
    }
}

impl Stack {
    /// Starts the stack around an exporter listening on `exporter`, also
    /// scraping each `(job, target)` of `extra` (e.g. `gse_exporter node` as
    /// `gse_node`). Every target carries the site label `site="E2E_SITE"`,
    /// as the multi-site file_sd example sets it.
    pub async fn start(exporter: SocketAddr, extra: &[(&str, &str)]) -> Stack {
        let dir = tempfile::Builder::new()
            .prefix("gse-e2e-")
            .tempdir()
            .expect("temp dir");
        let webhook = Webhook::start().await;
        let alertmanager = Alertmanager::start(dir.path(), &webhook).await;

        let rules_dir = dir.path().join("rules");
        let rule_files: Vec<String> = write_scaled_rules(&rules_dir)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let am_target = alertmanager.url().trim_start_matches("http://").to_string();
        let mut prom_config = serde_json::json!({
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": rule_files,
            "alerting": {
                "alertmanagers": [{ "static_configs": [{ "targets": [am_target] }] }],
            },
            "scrape_configs": [{
                "job_name": "gse_exporter",
                "static_configs": [{
                    "targets": [exporter.to_string()],
                    "labels": { "site": E2E_SITE },
                }],
            }],
        });
        for (job, target) in extra {
            prom_config["scrape_configs"]
                .as_array_mut()
                .expect("scrape_configs")
                .push(serde_json::json!({
                    "job_name": job,
                    "static_configs": [{ "targets": [target], "labels": { "site": E2E_SITE } }],
                }));
        }
        let prometheus = Prometheus::start(
            &serde_yaml_ng::to_string(&prom_config).expect("YAML"),
            dir.path(),
        )
        .await;
        Stack {
            webhook,
            alertmanager,
            prometheus,
            _dir: dir,
        }
    }

    /// Waits until Prometheus has scraped the exporter successfully and
    /// evaluated the recording rules on the result.
    pub async fn wait_scraped(&self) {
        wait_until(
            "Prometheus to scrape the exporter and record gse_group:agents:sum",
            Duration::from_secs(30),
            || async {
                let up = self
                    .prometheus
                    .count(r#"up{job="gse_exporter"} == 1"#)
                    .await;
                let recorded = self.prometheus.count("gse_group:agents:sum").await;
                (up == 1 && recorded > 0).then_some(())
            },
        )
        .await;
    }

    /// Waits until the webhook has received `n` distinct alerts of this
    /// name and status, and returns all of them.
    pub async fn wait_notified(
        &self,
        alertname: &str,
        status: &str,
        n: usize,
        deadline: Duration,
    ) -> Vec<Notified> {
        let what = format!("{n} {status} {alertname} notifications");
        let end = tokio::time::Instant::now() + deadline;
        loop {
            let got = self.webhook.notified_as(alertname, status);
            if got.len() >= n {
                return got;
            }
            if tokio::time::Instant::now() >= end {
                panic!(
                    "timed out waiting for {what}; notified so far: {:#?}\nPrometheus alerts: {:#?}\n\
                     Alertmanager alerts: {:#?}",
                    self.webhook.notified(),
                    self.prometheus.alerts().await,
                    self.alertmanager.alerts().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
