//! The `gse_node_*` metric families, declared once in [`TABLE`], and the
//! rendering of one [`Report`] into the Prometheus text format (0.0.4) that
//! both outputs use: the node_exporter textfile and `/metrics`.
//!
//! Owns names, help texts, types and label names, and the rules of the
//! format that node_exporter's textfile collector also enforces: one HELP and
//! TYPE per family, every sample of a family together, no timestamps, escaped
//! label values, no header for a family without samples. Every series carries
//! the host labels `bk_cloud_id` and `ip` so that rules can join it to the
//! API view (`gse_agent_online`). Never gathers anything itself.

use std::fmt::Write as _;

use super::Report;
use super::agent::ProcessState;
use super::ipc::{Queues, SocketState};
use super::procinfo::{FileState, PluginState};
use super::upstream::UpstreamState;

/// Metric types used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Goes up and down.
    Gauge,
    /// Only goes up (resets when the process restarts).
    Counter,
}

impl Kind {
    /// The `# TYPE` word.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        }
    }
}

/// One metric family.
#[derive(Debug, PartialEq, Eq)]
pub struct Family {
    /// Full name.
    pub name: &'static str,
    /// HELP text.
    pub help: &'static str,
    /// Type.
    pub kind: Kind,
    /// Label names besides [`HOST_LABELS`], in order.
    pub labels: &'static [&'static str],
}

/// Labels every `gse_node_*` series carries first: where the agent lives, as
/// GSE names it.
pub const HOST_LABELS: [&str; 2] = ["bk_cloud_id", "ip"];

macro_rules! families {
    ($($id:ident: $name:literal, $kind:ident, [$($label:literal),*], $help:literal;)*) => {
        $(const $id: Family = Family {
            name: $name,
            help: $help,
            kind: Kind::$kind,
            labels: &[$($label),*],
        };)*
        /// Every family, in output order.
        pub const TABLE: &[&Family] = &[$(&$id),*];
    };
}

families! {
    AGENT_PROCESS: "gse_node_agent_process", Gauge, ["state"],
        "Whether a gse_agent process of the GSE home runs: 1 for the current state (running, not_running, or unknown when other users' processes are hidden from the exporter).";
    AGENT_PROCESSES: "gse_node_agent_processes", Gauge, [],
        "gse_agent processes of the GSE home (master and workers). Absent when unknown.";
    AGENT_START_TIME: "gse_node_agent_start_time_seconds", Gauge, [],
        "Start time of the agent's main process, Unix seconds. Absent when it does not run.";
    AGENT_RESTARTS: "gse_node_agent_restarts_total", Counter, [],
        "Times the agent's main process was seen replaced (a new pid or start time) since this exporter started.";
    AGENT_MEMORY: "gse_node_agent_resident_memory_bytes", Gauge, [],
        "Resident memory of the agent's processes, bytes. Absent when it does not run.";
    AGENT_CPU: "gse_node_agent_cpu_seconds_total", Counter, [],
        "User and system CPU time of the agent's processes, seconds. Absent when it does not run.";
    AGENT_INFO: "gse_node_agent_info", Gauge, ["generation", "version"],
        "The GSE home as the node sees it: generation (1.x, 2.0, unknown) from its layout, version from its version file (empty when unknown). Always 1.";
    IPC_SOCKET: "gse_node_ipc_socket", Gauge, ["state"],
        "The agent's IPC socket: 1 for the current state (ok, missing, not_socket, refused, not_accepting, unknown).";
    IPC_CONNECTIONS: "gse_node_ipc_connections", Gauge, [],
        "Connections open on the IPC socket (collectors connected). From sock_diag or /proc/net/unix; absent when neither shows the socket.";
    IPC_BACKLOG: "gse_node_ipc_backlog", Gauge, [],
        "Connections waiting for the agent to accept them on the IPC socket. sock_diag only.";
    IPC_QUEUE: "gse_node_ipc_queue_bytes", Gauge, ["direction"],
        "Bytes queued on the agent's ends of the IPC connections: receive = sent by collectors, not read by the agent; send = memory of bytes the agent sent, not read by collectors. sock_diag only.";
    UPSTREAM: "gse_node_upstream", Gauge, ["state"],
        "The agent's connections to its GSE servers: 1 for the current state (connected to every configured port, disconnected, unknown when its sockets cannot be read).";
    UPSTREAM_CONNECTIONS: "gse_node_upstream_connections", Gauge, ["port", "role"],
        "Established TCP connections from the agent to a configured server port. Absent when unknown.";
    UPSTREAM_CONNECTION: "gse_node_upstream_connection_info", Gauge, ["port", "role", "remote"],
        "One established connection from the agent to a server port, with the server's address. Always 1.";
    PROCINFO: "gse_node_procinfo", Gauge, ["state"],
        "The agent's procinfo file of hosted plugins: 1 for the current state (ok, missing, invalid, unreadable).";
    PLUGIN: "gse_node_plugin", Gauge, ["plugin", "state"],
        "A plugin the procinfo file lists: 1 for its current state (running, not_running, unknown).";
    CHECK_DURATION: "gse_node_check_duration_seconds", Gauge, [],
        "How long the last round of checks took, seconds.";
    LAST_CHECK: "gse_node_last_check_timestamp_seconds", Gauge, [],
        "When the last round of checks finished, Unix seconds.";
}

/// Samples per family, in [`TABLE`] order.
struct Samples {
    host: [String; 2],
    lines: Vec<String>,
    by_family: Vec<Vec<usize>>,
}

impl Samples {
    fn new(report: &Report) -> Samples {
        Samples {
            host: [report.host.bk_cloud_id.clone(), report.host.ip.clone()],
            lines: Vec::new(),
            by_family: vec![Vec::new(); TABLE.len()],
        }
    }

    /// Adds a sample; `values` are the family's own labels, in order.
    fn add(&mut self, family: &'static Family, values: &[&str], value: f64) {
        debug_assert_eq!(
            values.len(),
            family.labels.len(),
            "{}: label values do not match the table",
            family.name
        );
        let index = TABLE
            .iter()
            .position(|f| std::ptr::eq(*f, family))
            .expect("every family is in TABLE");
        let mut line = String::with_capacity(96);
        line.push_str(family.name);
        line.push('{');
        let names = HOST_LABELS.iter().chain(family.labels);
        let values = self
            .host
            .iter()
            .map(String::as_str)
            .chain(values.iter().copied());
        for (i, (name, value)) in names.zip(values).enumerate() {
            if i > 0 {
                line.push(',');
            }
            let _ = write!(line, "{name}=\"{}\"", escape_label(value));
        }
        let _ = write!(line, "}} {}", format_value(value));
        self.by_family[index].push(self.lines.len());
        self.lines.push(line);
    }

    fn state_set<S: Copy + PartialEq>(
        &mut self,
        family: &'static Family,
        prefix: &[&str],
        all: &[S],
        current: S,
        name: impl Fn(S) -> &'static str,
    ) {
        for &state in all {
            let mut values = prefix.to_vec();
            values.push(name(state));
            self.add(family, &values, f64::from(u8::from(state == current)));
        }
    }

    fn finish(self) -> String {
        let mut out = String::new();
        for (family, indexes) in TABLE.iter().zip(&self.by_family) {
            if indexes.is_empty() {
                continue;
            }
            let _ = writeln!(out, "# HELP {} {}", family.name, escape_help(family.help));
            let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind.as_str());
            for &i in indexes {
                out.push_str(&self.lines[i]);
                out.push('\n');
            }
        }
        out
    }
}

/// Renders a report in the Prometheus text format.
pub(crate) fn render(report: &Report) -> String {
    let mut s = Samples::new(report);
    agent(&mut s, report);
    ipc(&mut s, report);
    upstream(&mut s, report);
    hosting(&mut s, report);
    s.add(&CHECK_DURATION, &[], report.duration_seconds);
    s.add(&LAST_CHECK, &[], report.checked_at);
    s.finish()
}

fn agent(s: &mut Samples, report: &Report) {
    let p = &report.process;
    s.state_set(
        &AGENT_PROCESS,
        &[],
        &ProcessState::ALL,
        p.state,
        ProcessState::as_str,
    );
    if p.state != ProcessState::Unknown {
        s.add(&AGENT_PROCESSES, &[], p.pids.len() as f64);
    }
    if let Some(main) = &p.main {
        s.add(&AGENT_START_TIME, &[], main.start_time);
        s.add(&AGENT_MEMORY, &[], p.resident_memory_bytes as f64);
        s.add(&AGENT_CPU, &[], p.cpu_seconds);
    }
    s.add(&AGENT_RESTARTS, &[], p.restarts as f64);
    let l = &report.layout;
    let version = l.version.as_deref().unwrap_or("");
    s.add(&AGENT_INFO, &[l.generation.as_str(), version], 1.0);
}

fn ipc(s: &mut Samples, report: &Report) {
    let ipc = &report.ipc;
    s.state_set(
        &IPC_SOCKET,
        &[],
        &SocketState::ALL,
        ipc.state,
        SocketState::as_str,
    );
    match &ipc.queues {
        Queues::SockDiag {
            connections,
            backlog,
            receive_bytes,
            send_bytes,
        } => {
            s.add(&IPC_CONNECTIONS, &[], f64::from(*connections));
            s.add(&IPC_BACKLOG, &[], f64::from(*backlog));
            s.add(&IPC_QUEUE, &["receive"], *receive_bytes as f64);
            s.add(&IPC_QUEUE, &["send"], *send_bytes as f64);
        }
        Queues::ProcNetUnix { connections, .. } => {
            s.add(&IPC_CONNECTIONS, &[], f64::from(*connections));
        }
        Queues::Unavailable { .. } => {}
    }
}

fn upstream(s: &mut Samples, report: &Report) {
    let up = &report.upstream;
    s.state_set(
        &UPSTREAM,
        &[],
        &UpstreamState::ALL,
        up.state,
        UpstreamState::as_str,
    );
    if up.state == UpstreamState::Unknown {
        return;
    }
    for port in &up.ports {
        let number = port.port.to_string();
        s.add(
            &UPSTREAM_CONNECTIONS,
            &[&number, &port.name],
            port.remotes.len() as f64,
        );
        for remote in &port.remotes {
            let remote = remote.to_string();
            s.add(&UPSTREAM_CONNECTION, &[&number, &port.name, &remote], 1.0);
        }
    }
}

fn hosting(s: &mut Samples, report: &Report) {
    let h = &report.hosting;
    s.state_set(&PROCINFO, &[], &FileState::ALL, h.state, FileState::as_str);
    for plugin in &h.plugins {
        s.state_set(
            &PLUGIN,
            &[&plugin.name],
            &PluginState::ALL,
            plugin.state,
            PluginState::as_str,
        );
    }
}

/// Integers without a fraction; everything else as Rust prints it (never
/// exponent notation).
fn format_value(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn escape_help(help: &str) -> String {
    help.replace('\\', r"\\").replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_well_formed() {
        let mut names = std::collections::BTreeSet::new();
        for family in TABLE {
            assert!(names.insert(family.name), "{} twice", family.name);
            assert!(family.name.starts_with("gse_node_"));
            assert_eq!(
                family.name.ends_with("_total"),
                family.kind == Kind::Counter,
                "{}: counters and only counters end in _total",
                family.name
            );
            assert!(family.help.ends_with('.'));
            for label in family.labels {
                assert!(!HOST_LABELS.contains(label), "{}: {label}", family.name);
            }
        }
    }

    #[test]
    fn label_values_and_numbers_are_written_safely() {
        assert_eq!(escape_label("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(1_732_979_200.5), "1732979200.5");
    }
}
