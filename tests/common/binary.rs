//! The exporter binary as a child process: started with arguments and
//! environment, its address taken from its "listening" log line, its stderr
//! collected for the test to search, and killed when dropped.
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running exporter binary.
pub struct Binary {
    child: Child,
    /// `host:port` it listens on.
    pub addr: String,
    logs: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Binary {
    /// Starts the binary with `args` (plus a loopback listen address) and `envs`.
    pub async fn start(args: &[String], envs: &[(&str, &str)]) -> Binary {
        let mut command = Command::new(env!("CARGO_BIN_EXE_gse_exporter"));
        command.args(args).arg("--web.listen-address=127.0.0.1:0");
        for (key, value) in envs {
            command.env(key, value);
        }
        Binary::spawn(command).await
    }

    /// Starts `command` as it is: an installed copy of the binary, say,
    /// with arguments that give a listen address of port 0.
    pub async fn spawn(mut command: Command) -> Binary {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("the binary starts");
        let logs = Arc::new(Mutex::new(String::new()));
        let reader = collect(child.stderr.take().expect("stderr"), logs.clone());
        let mut binary = Binary {
            child,
            addr: String::new(),
            logs,
            reader: Some(reader),
        };
        binary.addr = super::wait_until(
            "the listen address in the logs",
            Duration::from_secs(20),
            || {
                let found = listen_address(&binary.logs());
                async move { found }
            },
        )
        .await;
        binary
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory in KiB (`VmRSS`), while it runs.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// The most resident memory it has had so far, in KiB (`VmHWM`).
    pub fn peak_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// A field of `/proc/PID/status` given in kB.
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
    }

    /// Everything written to stderr so far.
    pub fn logs(&self) -> String {
        self.logs.lock().expect("log buffer").clone()
    }

    /// Sends a signal (`-TERM`, `-HUP`, …).
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill {signal} failed");
    }

    /// Stops it with SIGTERM; returns its exit status, stderr and stdout.
    pub fn stop(self) -> (ExitStatus, String, String) {
        let (status, _, logs, stdout) = self.stop_timed();
        (status, logs, stdout)
    }

    /// Stops it with SIGTERM; returns its exit status, how long it took to
    /// exit, stderr and stdout. Fails the test if it takes 30 s.
    pub fn stop_timed(mut self) -> (ExitStatus, Duration, String, String) {
        let sent = std::time::Instant::now();
        self.signal("-TERM");
        let status = self.wait_exit(Duration::from_secs(30));
        let took = sent.elapsed();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            let _ = out.read_to_string(&mut stdout);
        }
        (status, took, self.logs(), stdout)
    }

    /// Waits for it to exit on its own; fails the test at the deadline.
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let end = std::time::Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().expect("the binary is waited for") {
                return status;
            }
            assert!(
                std::time::Instant::now() < end,
                "still running after {deadline:?}; logs:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs the binary with `args` to its end; fails the test if it is still
/// running after `deadline`. Returns its status, stdout and stderr.
pub fn run_to_end(args: &[&str], deadline: Duration) -> (ExitStatus, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gse_exporter"))
        .args(args)
        .env_remove("GSE_EXPORTER_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let stdout = std::thread::spawn(move || read_all(out));
    let stderr = std::thread::spawn(move || read_all(err));
    let end = std::time::Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().expect("the binary is waited for") {
            break status;
        }
        if std::time::Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "gse_exporter {args:?} still running after {deadline:?}; stderr:\n{}",
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().unwrap_or_default();
    (status, stdout, stderr.join().unwrap_or_default())
}

fn read_all(pipe: Option<impl Read>) -> String {
    let mut text = String::new();
    if let Some(mut pipe) = pipe {
        let _ = pipe.read_to_string(&mut text);
    }
    text
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(
    mut stderr: impl Read + Send + 'static,
    logs: Arc<Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => logs
                    .lock()
                    .expect("log buffer")
                    .push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    })
}

/// The address of the "listening" line, in logfmt (`addr=…`) or JSON (`"addr":"…"`).
fn listen_address(logs: &str) -> Option<String> {
    let line = logs
        .lines()
        .find(|l| l.contains("gse_exporter listening"))?;
    if let Some(start) = line.find("\"addr\":\"") {
        let rest = &line[start + 8..];
        return Some(rest[..rest.find('"')?].to_string());
    }
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .map(str::to_string)
}

/// Runs `gse_exporter --config.check` on a config (and a web config); returns
/// whether it passed and everything it printed.
pub fn config_check(config: &std::path::Path, web: Option<&std::path::Path>) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gse_exporter"));
    command
        .arg("--config.check")
        .arg(format!("--config.file={}", config.display()));
    if let Some(web) = web {
        command.arg(format!("--web.config.file={}", web.display()));
    }
    let out = command.output().expect("the binary runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), printed)
}
