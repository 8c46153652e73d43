//! `gse_exporter node` against a fake GSE home on loopback: a process named
//! like the real agent (a copy of Python named `gse_agent`, so its `comm`
//! and `/proc/<pid>/exe` read as the agent's) that listens on the IPC socket
//! and accepts without ever reading, holds a TCP connection to a listener
//! standing in for the data server, two plugins (copies of `sleep`) with pid
//! files, and a procinfo file listing them. Each check is shown healthy,
//! then broken in each way, through the exit status and row of `--once`
//! and the metric on `/metrics` of a running node mode. Every wait has a
//! deadline; nothing sleeps a fixed time.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::binary::{Binary, run_to_end};
use crate::common::{Sample, mkfifo, parse, wait_until};
use serde_json::Value as Json;

const DEADLINE: Duration = Duration::from_secs(15);

/// The fake agent: binds the IPC socket, accepts connections and never
/// reads them (`--no-accept`: never accepts), and holds one connection to
/// the data server. Prints `ready` once set up.
const FAKE_AGENT: &str = r#"
import os, socket, sys, time
args = sys.argv[1:]
ipc = upstream = None
accept = True
while args:
    flag = args.pop(0)
    if flag == "--ipc": ipc = args.pop(0)
    elif flag == "--upstream": upstream = args.pop(0)
    elif flag == "--no-accept": accept = False
    else: sys.exit("unknown flag " + flag)
held = []
if upstream:
    host, port = upstream.rsplit(":", 1)
    held.append(socket.create_connection((host, int(port))))
server = None
if ipc:
    if os.path.exists(ipc):
        os.unlink(ipc)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(ipc)
    server.listen(0)
print("ready", flush=True)
while True:
    if server is not None and accept:
        conn, _ = server.accept()
        held.append(conn)
    else:
        time.sleep(3600)
"#;

/// A GSE home in a temporary directory (GSE 2.0 layout).
pub(crate) struct FakeHome {
    dir: tempfile::TempDir,
}

impl FakeHome {
    pub(crate) fn new() -> FakeHome {
        // Short path: unix socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("gse-node-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let home = FakeHome { dir };
        for d in [
            "gse/agent/bin",
            "gse/agent/etc",
            "gse/plugins/bin",
            "run",
            "data",
        ] {
            std::fs::create_dir_all(home.path(d)).expect("mkdir");
        }
        let python = std::fs::canonicalize("/usr/bin/python3").expect("python3 is installed");
        std::fs::copy(&python, home.agent_binary()).expect("copy python as gse_agent");
        for plugin in ["bkmonitorbeat", "bkunifylogbeat"] {
            std::fs::copy(
                "/bin/sleep",
                home.path(&format!("gse/plugins/bin/{plugin}")),
            )
            .expect("copy sleep as a plugin");
        }
        std::fs::write(home.path("gse/agent/etc/gse_agent.conf"), "{}\n").unwrap();
        std::fs::write(home.path("gse/agent/VERSION"), "2.1.6\n").unwrap();
        std::fs::write(home.path("fake_agent.py"), FAKE_AGENT).unwrap();
        home.write_procinfo();
        home
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn agent_binary(&self) -> PathBuf {
        self.path("gse/agent/bin/gse_agent")
    }

    fn ipc(&self) -> PathBuf {
        self.path("ipc.sock")
    }

    fn procinfo(&self) -> PathBuf {
        self.path("gse/agent/etc/procinfo.json")
    }

    /// The procinfo file as the agent writes it: camelCase in a `value` array.
    fn write_procinfo(&self) {
        let entry = |name: &str| {
            serde_json::json!({
                "procName": name,
                "setupPath": self.path("gse/plugins/bin"),
                "pidPath": self.path(&format!("run/{name}.pid")),
                "funcID": "",
                "instanceID": "",
            })
        };
        let doc = serde_json::json!({"value": [entry("bkmonitorbeat"), entry("bkunifylogbeat")]});
        std::fs::write(self.procinfo(), doc.to_string()).unwrap();
    }

    /// Flags pointing `node` at this home, expecting `port` as the data port.
    fn args(&self, port: u16) -> Vec<String> {
        self.args_for(port, "10.0.0.7", 3)
    }

    /// Like `args`, for the host `ip` in cloud area `cloud`.
    pub(crate) fn args_for(&self, port: u16, ip: &str, cloud: i64) -> Vec<String> {
        vec![
            "node".into(),
            format!("--gse.home={}", self.path("gse").display()),
            format!("--gse.run-dir={}", self.path("run").display()),
            format!("--gse.data-dir={}", self.path("data").display()),
            format!("--ipc.path={}", self.ipc().display()),
            format!("--upstream.port=data:{port}"),
            format!("--host.ip={ip}"),
            format!("--host.cloud-id={cloud}"),
        ]
    }
}

/// A child process killed on drop.
pub(crate) struct Running(Child);

impl Running {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    pub(crate) fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Kills it without reaping: it stays a zombie (state `Z`) until dropped,
    /// as a crashed child of a parent that does not wait for it.
    async fn kill_leaving_zombie(&mut self) {
        let _ = self.0.kill();
        let stat = format!("/proc/{}/stat", self.pid());
        wait_until("the process to become a zombie", DEADLINE, || {
            let zombie = std::fs::read_to_string(&stat).is_ok_and(|s| {
                s.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('Z'))
            });
            async move { zombie.then_some(()) }
        })
        .await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns a program this test just copied into place. While the copy was open
/// for writing, another test's `fork` may have inherited that descriptor
/// (it closes only at that child's `exec`), and the kernel refuses to run a
/// file open for writing (ETXTBSY): such a refusal is retried until the
/// deadline, anything else fails at once.
fn spawn_copied(command: &mut Command) -> std::process::Child {
    let started = std::time::Instant::now();
    loop {
        match command.spawn() {
            Ok(child) => return child,
            Err(e)
                if e.kind() == std::io::ErrorKind::ExecutableFileBusy
                    && started.elapsed() < DEADLINE =>
            {
                std::thread::yield_now();
            }
            Err(e) => panic!("{:?} does not start: {e}", command.get_program()),
        }
    }
}

/// Starts the fake agent and waits for its `ready` line.
pub(crate) fn start_agent(home: &FakeHome, upstream: Option<SocketAddr>, accept: bool) -> Running {
    let mut command = Command::new(home.agent_binary());
    command
        .arg(home.path("fake_agent.py"))
        .arg("--ipc")
        .arg(home.ipc())
        .env("PYTHONHOME", "/usr")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    if let Some(addr) = upstream {
        command.arg("--upstream").arg(addr.to_string());
    }
    if !accept {
        command.arg("--no-accept");
    }
    let mut child = spawn_copied(&mut command);
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(DEADLINE)
        .expect("the fake agent is ready in time");
    assert_eq!(line.trim(), "ready", "fake agent said {line:?}");
    Running(child)
}

/// Starts a plugin (a copy of `sleep`) and writes its pid file.
pub(crate) fn start_plugin(home: &FakeHome, name: &str) -> Running {
    let mut command = Command::new(home.path(&format!("gse/plugins/bin/{name}")));
    command.arg("3600").stdin(Stdio::null());
    let child = spawn_copied(&mut command);
    std::fs::write(
        home.path(&format!("run/{name}.pid")),
        format!("{}\n", child.id()),
    )
    .unwrap();
    Running(child)
}

/// A TCP listener standing in for the GSE data server; keeps what it accepts.
pub(crate) struct DataServer {
    pub(crate) addr: SocketAddr,
    accepted: Arc<Mutex<Vec<TcpStream>>>,
}

impl DataServer {
    pub(crate) fn start() -> DataServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let keep = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                keep.lock().unwrap().push(stream);
            }
        });
        DataServer { addr, accepted }
    }

    /// Closes every accepted connection (the agent's ends go to CLOSE_WAIT).
    fn drop_connections(&self) {
        for stream in self.accepted.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Runs `gse_exporter` with `args`; returns its exit code and stdout.
fn run(args: &[String]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gse_exporter"))
        .args(args)
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

/// `node --once` as a table.
fn once(home: &FakeHome, port: u16) -> (i32, String) {
    let mut args = home.args(port);
    args.push("--once".into());
    run(&args)
}

/// The status and detail of a table row.
fn row<'a>(table: &'a str, check: &str) -> (&'a str, &'a str) {
    for line in table.lines() {
        if let Some(rest) = line.strip_prefix(check)
            && rest.starts_with("  ")
        {
            let rest = rest.trim_start();
            let (status, detail) = rest.split_once("  ").unwrap_or((rest, ""));
            return (status, detail.trim_start());
        }
    }
    panic!("no row {check:?} in:\n{table}");
}

fn assert_row(table: &str, check: &str, status: &str, detail_part: &str) {
    let (got, detail) = row(table, check);
    assert_eq!(got, status, "row {check}:\n{table}");
    assert!(
        detail.contains(detail_part),
        "row {check} lacks {detail_part:?}:\n{table}"
    );
}

async fn scrape(addr: &str) -> Vec<Sample> {
    let body = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    parse(&body)
}

fn value_of(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == *v))
        .map(|s| s.value)
}

/// Waits until the node's `/metrics` has `name{labels}` satisfying `want`.
async fn wait_metric(
    node: &Binary,
    name: &str,
    labels: &[(&str, &str)],
    want: impl Fn(f64) -> bool,
) {
    let what = format!("{name}{labels:?} on /metrics");
    let want = &want;
    wait_until(&what, DEADLINE, || async move {
        let samples = scrape(&node.addr).await;
        value_of(&samples, name, labels)
            .filter(|v| want(*v))
            .map(|_| ())
    })
    .await;
}

/// Waits until the node reports `state` as the current one of a state set.
async fn wait_state(node: &Binary, name: &str, state: &str) {
    wait_metric(node, name, &[("state", state)], |v| v == 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_check_healthy_then_broken_each_way() {
    let home = FakeHome::new();
    let server = DataServer::start();
    let port = server.addr.port();
    let mut agent = start_agent(&home, Some(server.addr), true);
    let monitor = start_plugin(&home, "bkmonitorbeat");
    let _logs = start_plugin(&home, "bkunifylogbeat");
    let mut args = home.args(port);
    args.push("--check.interval=200ms".into());
    let node = Binary::start(&args, &[]).await;

    // ---- healthy
    let (code, table) = once(&home, port);
    assert_eq!(code, 0, "healthy:\n{table}");
    assert_row(&table, "layout", "info", "GSE 2.0");
    assert_row(
        &table,
        "process",
        "ok",
        &format!("gse_agent pid {}", agent.pid()),
    );
    assert_row(&table, "ipc", "ok", "accepts connections");
    assert_row(&table, "ipc", "ok", "queues 0 B in / 0 B out (sock_diag)");
    assert_row(
        &table,
        "upstream",
        "ok",
        &format!("{port} (data): 127.0.0.1:{port}"),
    );
    assert_row(&table, "procinfo", "ok", "2 plugin(s), 2 running");
    assert_row(
        &table,
        "plugin bkmonitorbeat",
        "ok",
        &format!("pid {}", monitor.pid()),
    );
    assert_row(&table, "version", "info", "2.1.6");
    assert!(table.ends_with("healthy\n"), "{table}");
    wait_state(&node, "gse_node_agent_process", "running").await;
    let samples = scrape(&node.addr).await;
    for s in &samples {
        assert_eq!(
            (s.label("ip"), s.label("bk_cloud_id")),
            ("10.0.0.7", "3"),
            "{s:?}"
        );
    }
    let has = |name: &str, labels: &[(&str, &str)], want: f64| {
        assert_eq!(
            value_of(&samples, name, labels),
            Some(want),
            "{name}{labels:?}"
        );
    };
    has("gse_node_agent_processes", &[], 1.0);
    has(
        "gse_node_agent_info",
        &[("generation", "2.0"), ("version", "2.1.6")],
        1.0,
    );
    has("gse_node_ipc_socket", &[("state", "ok")], 1.0);
    has("gse_node_ipc_queue_bytes", &[("direction", "receive")], 0.0);
    has("gse_node_upstream", &[("state", "connected")], 1.0);
    let port_text = port.to_string();
    has(
        "gse_node_upstream_connections",
        &[("port", &port_text), ("role", "data")],
        1.0,
    );
    let remote = format!("127.0.0.1:{port}");
    has(
        "gse_node_upstream_connection_info",
        &[("remote", &remote)],
        1.0,
    );
    has(
        "gse_node_plugin",
        &[("plugin", "bkmonitorbeat"), ("state", "running")],
        1.0,
    );
    has("gse_node_procinfo", &[("state", "ok")], 1.0);
    has("gse_node_agent_restarts_total", &[], 0.0);
    // Every declared family has samples on a healthy host, and nothing else
    // is exposed (tests/drift.rs relies on this for the rules and dashboards).
    let exposed: std::collections::BTreeSet<&str> =
        samples.iter().map(|s| s.name.as_str()).collect();
    let declared: std::collections::BTreeSet<&str> = gse_exporter::node::metrics::TABLE
        .iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(exposed, declared);
    assert!(value_of(&samples, "gse_node_agent_resident_memory_bytes", &[]).unwrap() > 1e6);

    // ---- IPC: a collector writes, the agent never reads: the queue fills.
    let mut collector = UnixStream::connect(home.ipc()).expect("collector connects");
    collector
        .write_all(&[b'x'; 4096])
        .expect("collector writes");
    let (code, table) = once(&home, port);
    assert_eq!(code, 1, "{table}");
    assert_row(
        &table,
        "ipc",
        "FAILED",
        "stuck, the agent is not draining it",
    );
    assert_row(&table, "ipc", "FAILED", "queues 4.0 KiB in");
    wait_metric(
        &node,
        "gse_node_ipc_queue_bytes",
        &[("direction", "receive")],
        |v| v >= 4096.0,
    )
    .await;
    drop(collector);

    // ---- upstream: the server drops the agent's connection.
    server.drop_connections();
    let (code, table) = once(&home, port);
    assert_eq!(code, 1, "{table}");
    assert_row(
        &table,
        "upstream",
        "FAILED",
        &format!("{port} (data): none"),
    );
    wait_state(&node, "gse_node_upstream", "disconnected").await;
    wait_metric(
        &node,
        "gse_node_upstream_connections",
        &[("port", &port_text)],
        |v| v == 0.0,
    )
    .await;

    // ---- process: the agent dies; its socket file stays behind.
    agent.kill();
    let (code, table) = once(&home, port);
    assert_eq!(code, 1, "{table}");
    assert_row(&table, "process", "FAILED", "no gse_agent process runs");
    assert_row(&table, "ipc", "FAILED", "connection refused");
    assert_row(&table, "upstream", "FAILED", "the agent does not run");
    wait_state(&node, "gse_node_agent_process", "not_running").await;
    wait_state(&node, "gse_node_ipc_socket", "refused").await;

    // ---- back: a new agent is one restart, and everything is healthy again.
    agent = start_agent(&home, Some(server.addr), true);
    let (code, table) = once(&home, port);
    assert_eq!(code, 0, "{table}");
    wait_metric(&node, "gse_node_agent_restarts_total", &[], |v| v == 1.0).await;
    wait_state(&node, "gse_node_upstream", "connected").await;

    // ---- IPC: an agent that stops accepting; its accept queue fills.
    agent.kill();
    agent = start_agent(&home, Some(server.addr), false);
    let mut waiting = Vec::new();
    loop {
        let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        match s.connect(&socket2::SockAddr::unix(home.ipc()).unwrap()) {
            Ok(()) => waiting.push(s),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("connecting to the fake IPC socket: {e}"),
        }
        assert!(waiting.len() < 100, "the accept queue never filled");
    }
    let (code, table) = once(&home, port);
    assert_eq!(code, 1, "{table}");
    assert_row(&table, "ipc", "FAILED", "not accepting");
    wait_state(&node, "gse_node_ipc_socket", "not_accepting").await;
    wait_metric(&node, "gse_node_ipc_backlog", &[], |v| v >= 1.0).await;
    wait_metric(&node, "gse_node_agent_restarts_total", &[], |v| v == 2.0).await;
    drop(waiting);

    // ---- IPC: the socket file is removed, then replaced by a plain file.
    std::fs::remove_file(home.ipc()).unwrap();
    let (code, table) = once(&home, port);
    assert_eq!(code, 1, "{table}");
    assert_row(&table, "ipc", "FAILED", "missing");
    wait_state(&node, "gse_node_ipc_socket", "missing").await;
    std::fs::write(home.ipc(), "not a socket").unwrap();
    let (code, table) = once(&home, port);
    assert_eq!(code, 1, "{table}");
    assert_row(&table, "ipc", "FAILED", "not a socket");
    wait_state(&node, "gse_node_ipc_socket", "not_socket").await;
    agent.kill();
    agent = start_agent(&home, Some(server.addr), true);
    let (code, table) = once(&home, port);
    assert_eq!(code, 0, "{table}");

    // ---- hosting: a plugin dies; a zombie (not yet reaped) does not run.
    let mut monitor = monitor;
    monitor.kill_leaving_zombie().await;
    let (code, table) = once(&home, port);
    assert_eq!(code, 1, "{table}");
    assert_row(&table, "plugin bkmonitorbeat", "FAILED", "not running");
    assert_row(&table, "plugin bkunifylogbeat", "ok", "running");
    assert_row(&table, "procinfo", "ok", "2 plugin(s), 1 running");
    wait_metric(
        &node,
        "gse_node_plugin",
        &[("plugin", "bkmonitorbeat"), ("state", "not_running")],
        |v| v == 1.0,
    )
    .await;

    // ---- hosting: the procinfo file is garbage (nothing else fails: unknown, exit 2).
    std::fs::write(home.procinfo(), "{\"value\": [").unwrap();
    let (code, table) = once(&home, port);
    assert_eq!(code, 2, "{table}");
    assert_row(&table, "procinfo", "unknown", "not JSON");
    assert!(
        table.ends_with("unknown: cannot tell procinfo\n"),
        "{table}"
    );
    wait_state(&node, "gse_node_procinfo", "invalid").await;

    // ---- hosting: no procinfo file at all: the agent hosts nothing.
    std::fs::remove_file(home.procinfo()).unwrap();
    let (code, table) = once(&home, port);
    assert_eq!(code, 0, "{table}");
    assert_row(&table, "procinfo", "skipped", "hosts no plugins");
    wait_state(&node, "gse_node_procinfo", "missing").await;

    let (status, _, _) = node.stop();
    assert!(
        status.success(),
        "the node mode stops cleanly on SIGTERM: {status}"
    );
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_holds_the_verdict_rows_and_details() {
    let home = FakeHome::new();
    let server = DataServer::start();
    let port = server.addr.port();
    let agent = start_agent(&home, Some(server.addr), true);
    let _plugins = [
        start_plugin(&home, "bkmonitorbeat"),
        start_plugin(&home, "bkunifylogbeat"),
    ];
    let mut args = home.args(port);
    args.extend(["--once".into(), "--output=json".into()]);
    let (code, text) = run(&args);
    assert_eq!(code, 0, "{text}");
    let doc: Json = serde_json::from_str(&text).expect("JSON output");
    assert_eq!(doc["verdict"], "healthy");
    assert_eq!(doc["report"]["process"]["state"], "running");
    assert_eq!(doc["report"]["process"]["main"]["pid"], agent.pid());
    let exe = doc["report"]["process"]["main"]["exe"].as_str().unwrap();
    assert_eq!(Path::new(exe), home.agent_binary());
    assert_eq!(doc["report"]["ipc"]["queues"]["source"], "sock_diag");
    assert_eq!(
        doc["report"]["upstream"]["ports"][0]["remotes"][0],
        format!("127.0.0.1:{port}")
    );
    assert_eq!(doc["report"]["layout"]["generation"], "2.0");
    assert_eq!(doc["report"]["hosting"]["plugins"][1]["state"], "running");
    let checks: Vec<&str> = doc["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["check"].as_str().unwrap())
        .collect();
    assert_eq!(
        checks,
        [
            "layout",
            "process",
            "ipc",
            "upstream",
            "procinfo",
            "plugin bkmonitorbeat",
            "plugin bkunifylogbeat",
            "version"
        ]
    );

    drop(agent);
    let (code, text) = run(&args);
    assert_eq!(code, 1, "{text}");
    let doc: Json = serde_json::from_str(&text).expect("JSON output");
    assert_eq!(doc["verdict"], "unhealthy");
    assert_eq!(doc["rows"][1]["status"], "failed");
}

/// The privilege test needs another user's agent: this process must be root
/// (CI is). It runs `node --once` as `nobody` through setpriv(1).
fn as_nobody(caps: &[&str], args: &[String]) -> (i32, String) {
    let mut command = Command::new("setpriv");
    command.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    if !caps.is_empty() {
        let list: Vec<String> = caps.iter().map(|c| format!("+{c}")).collect();
        command.arg(format!("--inh-caps={}", list.join(",")));
        command.arg(format!("--ambient-caps={}", list.join(",")));
    }
    let out = command
        .arg(env!("CARGO_BIN_EXE_gse_exporter"))
        .args(args)
        .output()
        .expect("setpriv runs");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_privileges_unknown_is_reported_never_a_false_down() {
    assert_eq!(
        std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .ok(),
        Some(0),
        "this test starts a root-owned agent and checks it as nobody: run the tests as root"
    );
    let home = FakeHome::new();
    std::fs::set_permissions(home.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = DataServer::start();
    let port = server.addr.port();
    let _agent = start_agent(&home, Some(server.addr), true);
    let _plugins = [
        start_plugin(&home, "bkmonitorbeat"),
        start_plugin(&home, "bkunifylogbeat"),
    ];
    let mut args = home.args(port);
    args.push("--once".into());

    // No capabilities: the process is seen (running, never "down"), its
    // sockets are not, and the socket file (mode 0755, root) refuses the probe.
    let (code, table) = as_nobody(&[], &args);
    assert_eq!(code, 2, "{table}");
    assert_row(&table, "process", "ok", "gse_agent pid");
    assert_row(
        &table,
        "process",
        "ok",
        "executable path unreadable (needs CAP_SYS_PTRACE)",
    );
    assert_row(
        &table,
        "upstream",
        "unknown",
        "needs CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE",
    );
    assert_row(
        &table,
        "ipc",
        "unknown",
        "write permission on the socket file",
    );
    assert_row(&table, "plugin bkmonitorbeat", "ok", "running");

    // One of the two is not enough.
    let (code, table) = as_nobody(&["dac_read_search"], &args);
    assert_eq!(code, 2, "{table}");
    assert_row(&table, "upstream", "unknown", "needs CAP_SYS_PTRACE");
    let (code, table) = as_nobody(&["sys_ptrace"], &args);
    assert_eq!(code, 2, "{table}");
    assert_row(&table, "upstream", "unknown", "CAP_DAC_READ_SEARCH");

    // Both, and no connect probe (the socket's mode does not let nobody
    // connect): every check answers, from sock_diag for the IPC socket.
    args.push("--ipc.connect=false".into());
    let (code, table) = as_nobody(&["dac_read_search", "sys_ptrace"], &args);
    assert_eq!(code, 0, "{table}");
    assert_row(&table, "upstream", "ok", &format!("127.0.0.1:{port}"));
    assert_row(&table, "ipc", "ok", "(sock_diag)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_textfile_is_replaced_atomically_and_passes_promtool() {
    let home = FakeHome::new();
    let server = DataServer::start();
    let port = server.addr.port();
    let _agent = start_agent(&home, Some(server.addr), true);
    let textfile_dir = home.path("textfile");
    std::fs::create_dir_all(&textfile_dir).unwrap();
    let textfile = textfile_dir.join("gse_node.prom");
    let mut args = home.args(port);
    args.push(format!("--textfile.path={}", textfile.display()));
    args.push("--check.interval=100ms".into());
    let node = Binary::start(&args, &[]).await;

    // Each round renames a new file over the old one: the inode changes.
    let first = wait_until("the textfile", DEADLINE, || {
        let inode = std::fs::metadata(&textfile)
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        async move { inode }
    })
    .await;
    wait_until("the textfile to be replaced", DEADLINE, || {
        let inode = std::fs::metadata(&textfile)
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        async move { inode.filter(|i| *i != first) }
    })
    .await;
    let body = std::fs::read_to_string(&textfile).unwrap();
    let entries: Vec<String> = std::fs::read_dir(&textfile_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(entries, ["gse_node.prom"], "only the .prom file is visible");

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/test installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // node_exporter's rules: one HELP and TYPE per family, before its
    // samples, and no timestamps.
    let mut seen = std::collections::BTreeSet::new();
    let mut current = String::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_string();
            assert!(seen.insert(name.clone()), "HELP for {name} twice");
            current = name;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            assert!(
                rest.starts_with(&format!("{current} ")),
                "TYPE out of place: {line}"
            );
        } else {
            let name = line.split(['{', ' ']).next().unwrap();
            assert_eq!(name, current, "sample outside its family: {line}");
            let after_labels = line.rsplit_once('}').map_or(line, |(_, v)| v);
            assert_eq!(
                after_labels.split_whitespace().count(),
                1,
                "timestamp in {line}"
            );
        }
    }
    assert!(seen.len() >= 10, "{seen:?}");
    // The same body is served.
    let served = scrape(&node.addr).await;
    assert!(served.iter().any(|s| s.name == "gse_node_upstream"));
    node.stop();
}

/// A FIFO where the agent's `VERSION`, its procinfo file or a plugin's pid
/// file belongs is named and never waited on: opening one for reading waits
/// for a writer, and held `--once`, the node server and SIGTERM for ever.
#[test]
fn fifos_where_the_agents_files_belong_are_named_and_never_waited_on() {
    let home = FakeHome::new();
    let pid_file = home.path("run/bkmonitorbeat.pid");
    mkfifo(&pid_file);
    let check = |home: &FakeHome| {
        let mut args = home.args(9);
        args.push("--once".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (_, stdout, stderr) = run_to_end(&args, DEADLINE);
        format!("{stdout}{stderr}")
    };
    let out = check(&home);
    assert!(out.contains("bkmonitorbeat"), "{out}");
    for file in [home.path("gse/agent/VERSION"), home.procinfo()] {
        std::fs::remove_file(&file).unwrap();
        mkfifo(&file);
    }
    let out = check(&home);
    for check in ["version", "procinfo"] {
        let (_, detail) = row(&out, check);
        assert!(detail.contains("is a FIFO, not a regular file"), "{out}");
    }
}

/// A socket file nobody listens on (the agent bound it and died) is
/// `refused` with the connect probe and without it, as the shipped systemd
/// unit runs: without the probe it read as "ok" and the verdict healthy.
#[test]
fn a_stale_socket_file_is_refused_with_or_without_the_connect_probe() {
    let home = FakeHome::new();
    drop(std::os::unix::net::UnixListener::bind(home.ipc()).expect("bind the IPC path"));
    for probe in ["true", "false"] {
        let mut args = home.args(9);
        args.extend(["--once".into(), format!("--ipc.connect={probe}")]);
        let (code, out) = run(&args);
        assert_eq!(code, 1, "--ipc.connect={probe}: {out}");
        assert_row(&out, "ipc", "FAILED", "connection refused");
        let json = {
            args.extend(["-o".into(), "json".into()]);
            run(&args).1
        };
        let report: Json = serde_json::from_str(&json).expect("JSON");
        assert_eq!(
            report["report"]["ipc"]["state"], "refused",
            "--ipc.connect={probe}: {json}"
        );
    }
}

/// `--once --textfile.path` writes the textfile once (a cron job's use); it
/// was ignored without a word, even a path node_exporter would never read.
#[test]
fn once_writes_the_textfile_it_is_given() {
    let home = FakeHome::new();
    let textfile = home.path("gse_node.prom");
    let mut args = home.args(9);
    args.extend([
        "--once".into(),
        format!("--textfile.path={}", textfile.display()),
    ]);
    let (code, out) = run(&args);
    assert_eq!(code, 1, "no agent runs: {out}");
    let text = std::fs::read_to_string(&textfile).expect("the textfile is written");
    assert!(
        text.contains("gse_node_last_check_timestamp_seconds"),
        "{text}"
    );
    let mut args = home.args(9);
    args.extend([
        "--once".into(),
        format!("--textfile.path={}", home.path("gse_node.txt").display()),
    ]);
    let (code, out) = run(&args);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("reads only files ending in .prom"), "{out}");
}

/// An IPC path that is a symlink to the live socket is the socket, with the
/// connect probe and without it (it read as "not a socket").
#[test]
fn an_ipc_path_linked_to_the_live_socket_is_ok() {
    let home = FakeHome::new();
    let server = DataServer::start();
    let _agent = start_agent(&home, Some(server.addr), true);
    let link = home.path("ipc.link");
    std::os::unix::fs::symlink(home.ipc(), &link).unwrap();
    for probe in ["true", "false"] {
        let mut args: Vec<String> = home
            .args(server.addr.port())
            .into_iter()
            .filter(|a| !a.starts_with("--ipc.path="))
            .collect();
        args.extend([
            format!("--ipc.path={}", link.display()),
            "--once".into(),
            format!("--ipc.connect={probe}"),
        ]);
        let (_, out) = run(&args);
        assert_row(&out, "ipc", "ok", "accepts connections");
    }
}

#[test]
fn careless_flags_are_clear_errors() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "node",
                "--textfile.path=/tmp/gse_node.txt",
                "--web.listen-address=",
            ],
            "only files ending in .prom",
        ),
        (&["node", "--web.listen-address="], "nothing to do"),
        (
            &["node", "--web.listen-address=nowhere"],
            "is not host:port",
        ),
        (
            &["node", "--once", "--upstream.port=70000"],
            "is not a port",
        ),
        (
            &["node", "--once", "--check.interval=1ms"],
            "between 100ms and 24h",
        ),
        (&["node", "--output=json"], "--once"),
    ];
    for (args, message) in cases {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let (code, text) = run(&args);
        assert_eq!(code, 2, "{args:?}: {text}");
        assert!(
            text.contains(message),
            "{args:?} should say {message:?}: {text}"
        );
    }
}

/// The `gse_exporter node` command lines of the `sh` blocks of a Markdown
/// file, without the program name, a trailing comment or a pipe.
fn documented_commands(file: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
        .expect("the documentation file");
    let mut in_sh = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        let Some(rest) = line.trim().strip_prefix("gse_exporter node") else {
            continue;
        };
        if !in_sh {
            continue;
        }
        let mut args = vec!["node".to_string()];
        args.extend(
            rest.split_whitespace()
                .take_while(|w| !w.starts_with('#') && *w != "|")
                .map(str::to_string),
        );
        out.push(args);
    }
    out
}

/// The check names of a `--once` table.
fn table_checks(table: &str) -> Vec<String> {
    table
        .lines()
        .skip_while(|l| !l.starts_with("CHECK"))
        .skip(1)
        .filter_map(|l| l.split("  ").next())
        .filter(|c| !c.is_empty() && !c.contains(' ') || c.starts_with("plugin "))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_commands_run() {
    let home = FakeHome::new();
    let server = DataServer::start();
    let _agent = start_agent(&home, Some(server.addr), true);
    let _plugins = [
        start_plugin(&home, "bkmonitorbeat"),
        start_plugin(&home, "bkunifylogbeat"),
    ];
    let gse = home.path("gse").display().to_string();
    let run_dir = home.path("run").display().to_string();
    let data_dir = home.path("data").display().to_string();
    let ipc = home.ipc().display().to_string();
    let port = format!("data:{}", server.addr.port());
    let textfile_dir = home.path("textfile");
    std::fs::create_dir_all(&textfile_dir).unwrap();
    let envs = [
        ("GSE_NODE_HOME", gse.as_str()),
        ("GSE_NODE_RUN_DIR", run_dir.as_str()),
        ("GSE_NODE_DATA_DIR", data_dir.as_str()),
        ("GSE_NODE_IPC_PATH", ipc.as_str()),
        ("GSE_NODE_UPSTREAM_PORT", port.as_str()),
        ("GSE_NODE_HOST_IP", "10.0.0.7"),
    ];
    let mut commands = documented_commands("README.md");
    commands.extend(documented_commands("docs/node.md"));
    assert!(commands.len() >= 6, "documented commands: {commands:?}");
    for args in commands {
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                a.replace(
                    "/var/lib/node_exporter/textfile_collector",
                    &textfile_dir.display().to_string(),
                )
            })
            .collect();
        if args.iter().any(|a| a == "--once") {
            let out = Command::new(env!("CARGO_BIN_EXE_gse_exporter"))
                .args(&args)
                .envs(envs)
                .output()
                .expect("the binary runs");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{args:?} on a healthy host:\n{stdout}"
            );
            if args.iter().any(|a| a.contains("json")) {
                let doc: Json = serde_json::from_str(&stdout).expect("JSON");
                assert_eq!(doc["verdict"], "healthy");
            } else {
                assert!(stdout.ends_with("healthy\n"), "{stdout}");
                // The sample in docs/node.md has the rows a real run has.
                let doc = std::fs::read_to_string(
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/node.md"),
                )
                .unwrap();
                let sample = doc.split("```text\n").nth(1).expect("a sample table");
                let sample = &sample[..sample.find("```").unwrap()];
                assert_eq!(table_checks(sample), table_checks(&stdout));
            }
            continue;
        }
        // A daemon: the test's own listen address replaces the documented one.
        let args: Vec<String> = args
            .into_iter()
            .filter(|a| !a.starts_with("--web.listen-address"))
            .collect();
        let node = Binary::start(&args, &envs).await;
        wait_state(&node, "gse_node_agent_process", "running").await;
        wait_state(&node, "gse_node_upstream", "connected").await;
        if let Some(path) = args.iter().find_map(|a| a.strip_prefix("--textfile.path=")) {
            let path = PathBuf::from(path);
            wait_until("the textfile", DEADLINE, || {
                let exists = path.exists();
                async move { exists.then_some(()) }
            })
            .await;
        }
        let (status, _, _) = node.stop();
        assert!(status.success(), "{args:?} stops cleanly: {status}");
    }
}
