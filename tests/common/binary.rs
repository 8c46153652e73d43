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
        command
            .args(args)
            .arg("--web.listen-address=127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in envs {
            command.env(key, value);
        }
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
    pub fn stop(mut self) -> (ExitStatus, String, String) {
        self.signal("-TERM");
        let status = self.child.wait().expect("the binary exits");
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            let _ = out.read_to_string(&mut stdout);
        }
        (status, self.logs(), stdout)
    }
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
