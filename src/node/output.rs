//! What `gse_exporter node --once` prints, and its exit status: one row per
//! check (and per hosted plugin) with a status and a sentence, as an aligned
//! table or as one JSON object holding the rows and every detail of the
//! report.
//!
//! Owns the verdict: a check is `ok`, `failed`, `unknown` (this process
//! could not tell) or `skipped`; the whole is `healthy` (exit 0) when no
//! check failed or is unknown, `unhealthy` (exit 1) when one failed, and
//! `unknown` (exit 2, like any other error) when none failed but one could
//! not be told. The `layout` and `version` rows inform and never count.

use std::fmt::Write as _;

use clap::ValueEnum;
use serde::Serialize;

use super::Report;
use super::agent::ProcessState;
use super::ipc::{Queues, SocketState};
use super::procinfo::{FileState, PluginState};
use super::upstream::UpstreamState;

/// Output formats of `--once`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns and a summary line, for people.
    Table,
    /// One JSON object: the verdict, the rows, and the full report.
    Json,
}

/// The status of one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    Ok,
    Failed,
    Unknown,
    Skipped,
    /// Informational rows (`layout`, `version`).
    Info,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "FAILED",
            Status::Unknown => "unknown",
            Status::Skipped => "skipped",
            Status::Info => "info",
        }
    }
}

/// One row of the output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Row {
    pub check: String,
    pub status: Status,
    pub detail: String,
}

/// The whole verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Verdict {
    Healthy,
    Unhealthy,
    Unknown,
}

impl Verdict {
    /// The exit status of `--once`.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Healthy => 0,
            Verdict::Unhealthy => 1,
            Verdict::Unknown => 2,
        }
    }
}

/// The rows of a report.
pub(crate) fn rows(report: &Report) -> Vec<Row> {
    let mut rows = vec![
        layout_row(report),
        process_row(report),
        ipc_row(report),
        upstream_row(report),
        procinfo_row(report),
    ];
    for plugin in &report.hosting.plugins {
        let (status, detail) = match (plugin.state, plugin.pid) {
            (PluginState::Running, Some(pid)) => (Status::Ok, format!("running, pid {pid}")),
            (PluginState::Running, None) => (Status::Ok, "running".into()),
            (PluginState::NotRunning, _) => (Status::Failed, "not running".into()),
            (PluginState::Unknown, _) => (
                Status::Unknown,
                "not visible; other users' processes are hidden from this process".into(),
            ),
        };
        rows.push(row(&format!("plugin {}", plugin.name), status, detail));
    }
    let version = match &report.layout.version {
        Some(v) => format!("{v} (from {})", report.layout.version_file.display()),
        None => format!(
            "unknown: {}",
            report
                .layout
                .version_note
                .as_deref()
                .unwrap_or("no version file")
        ),
    };
    rows.push(row("version", Status::Info, version));
    rows
}

/// The verdict over the rows.
pub(crate) fn verdict(rows: &[Row]) -> Verdict {
    if rows.iter().any(|r| r.status == Status::Failed) {
        Verdict::Unhealthy
    } else if rows.iter().any(|r| r.status == Status::Unknown) {
        Verdict::Unknown
    } else {
        Verdict::Healthy
    }
}

/// Longest detail of a row, in bytes (escapes included).
const MAX_DETAIL_BYTES: usize = 1024;

fn row(check: &str, status: Status, detail: String) -> Row {
    Row {
        check: check.to_string(),
        status,
        detail: shown(&detail),
    }
}

/// A detail as a row shows it: control characters escaped, so a path or a
/// name holding a line break cannot print a row of its own (a directory
/// named `…\nprocess   ok…\nhealthy` forged both), and cut at
/// [`MAX_DETAIL_BYTES`] with its full length said.
fn shown(detail: &str) -> String {
    let mut out = String::with_capacity(detail.len().min(MAX_DETAIL_BYTES));
    for c in detail.chars() {
        let start = out.len();
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > MAX_DETAIL_BYTES {
            out.truncate(start);
            out.push_str(&format!("… ({} bytes)", detail.len()));
            break;
        }
    }
    out
}

fn with_note(mut detail: String, note: &Option<String>) -> String {
    if let Some(note) = note {
        detail.push_str("; ");
        detail.push_str(note);
    }
    detail
}

fn layout_row(report: &Report) -> Row {
    let l = &report.layout;
    let mut detail = match &l.evidence {
        Some(file) => format!("GSE {} ({})", l.generation.as_str(), file.display()),
        None => format!("no GSE agent layout under {}", l.home.display()),
    };
    let dir = |path: &std::path::Path, exists: bool| {
        format!(
            "{}{}",
            path.display(),
            if exists { "" } else { " (missing)" }
        )
    };
    let _ = write!(
        detail,
        "; run dir {}, data dir {}",
        dir(&l.run_dir, l.run_dir_exists),
        dir(&l.data_dir, l.data_dir_exists)
    );
    row("layout", Status::Info, detail)
}

fn process_row(report: &Report) -> Row {
    let p = &report.process;
    let (status, detail) = match (p.state, &p.main) {
        (ProcessState::Running, Some(main)) => {
            let uptime = (report.checked_at - main.start_time).max(0.0);
            let mut d = format!(
                "gse_agent pid {} ({} process{}), up {}, {} resident, {:.1}s CPU",
                main.pid,
                p.pids.len(),
                if p.pids.len() == 1 { "" } else { "es" },
                humantime::format_duration(std::time::Duration::from_secs(uptime as u64)),
                bytes(p.resident_memory_bytes),
                p.cpu_seconds
            );
            if p.restarts > 0 {
                let _ = write!(d, ", {} restart(s) seen", p.restarts);
            }
            (Status::Ok, d)
        }
        (ProcessState::Unknown, _) => (Status::Unknown, "cannot tell".to_string()),
        _ => (Status::Failed, "no gse_agent process runs".to_string()),
    };
    row("process", status, with_note(detail, &p.note))
}

fn ipc_row(report: &Report) -> Row {
    let ipc = &report.ipc;
    let path = ipc.path.display();
    let queues = match &ipc.queues {
        Queues::SockDiag {
            connections,
            backlog,
            receive_bytes,
            send_bytes,
        } => format!(
            "{connections} connection(s), {backlog} waiting to be accepted, queues {} in / {} out (sock_diag)",
            bytes(*receive_bytes),
            bytes(*send_bytes)
        ),
        Queues::ProcNetUnix {
            connections,
            reason,
        } => format!(
            "{connections} connection(s); queue sizes not available (/proc/net/unix has none; {reason})"
        ),
        Queues::Unavailable { reason } => format!("queues not available ({reason})"),
    };
    let stuck = ipc.stuck(report.max_queue_bytes);
    let (status, head) = match ipc.state {
        SocketState::Ok if stuck == Some(true) => (
            Status::Failed,
            format!("{path}: stuck, the agent is not draining it"),
        ),
        SocketState::Ok => (Status::Ok, format!("{path}: accepts connections")),
        SocketState::Missing => (Status::Failed, format!("{path}: missing")),
        SocketState::NotSocket => (Status::Failed, format!("{path}: not a socket")),
        SocketState::Refused => (Status::Failed, format!("{path}: connection refused")),
        SocketState::NotAccepting => (Status::Failed, format!("{path}: not accepting")),
        SocketState::Unknown => (Status::Unknown, format!("{path}: cannot tell")),
    };
    let detail = match ipc.state {
        SocketState::Missing | SocketState::NotSocket => head,
        _ => format!("{head}; {queues}"),
    };
    row("ipc", status, with_note(detail, &ipc.note))
}

fn upstream_row(report: &Report) -> Row {
    let up = &report.upstream;
    let ports: Vec<String> = up
        .ports
        .iter()
        .map(|p| {
            let remotes: Vec<String> = p.remotes.iter().map(ToString::to_string).collect();
            match remotes.len() {
                0 => format!("{} ({}): none", p.port, p.name),
                _ => format!("{} ({}): {}", p.port, p.name, remotes.join(" ")),
            }
        })
        .collect();
    let status = match up.state {
        UpstreamState::Connected => Status::Ok,
        UpstreamState::Disconnected => Status::Failed,
        UpstreamState::Unknown => Status::Unknown,
    };
    let detail = match up.state {
        UpstreamState::Unknown => String::from("cannot tell"),
        _ => ports.join(", "),
    };
    row("upstream", status, with_note(detail, &up.note))
}

fn procinfo_row(report: &Report) -> Row {
    let h = &report.hosting;
    let path = h.path.display();
    let (status, detail) = match h.state {
        FileState::Ok => {
            let running = h
                .plugins
                .iter()
                .filter(|p| p.state == PluginState::Running)
                .count();
            (
                Status::Ok,
                format!("{path}: {} plugin(s), {running} running", h.plugins.len()),
            )
        }
        FileState::Missing => (
            Status::Skipped,
            format!("{path}: no file, the agent hosts no plugins"),
        ),
        FileState::Invalid => (Status::Unknown, format!("{path}: not understood")),
        FileState::Unreadable => (Status::Unknown, format!("{path}: unreadable")),
    };
    row("procinfo", status, with_note(detail, &h.note))
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The table: a header, the rows, and the verdict line.
pub(crate) fn table(report: &Report, rows: &[Row]) -> String {
    let width = rows.iter().map(|r| r.check.len()).max().unwrap_or(5).max(5);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "host {} (cloud {})",
        if report.host.ip.is_empty() {
            "<ip unknown>"
        } else {
            &report.host.ip
        },
        report.host.bk_cloud_id
    );
    let _ = writeln!(out, "{:width$}  {:8}  DETAIL", "CHECK", "STATUS");
    for r in rows {
        let _ = writeln!(
            out,
            "{:width$}  {:8}  {}",
            r.check,
            r.status.as_str(),
            r.detail
        );
    }
    let v = verdict(rows);
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| r.status == Status::Failed)
        .map(|r| r.check.as_str())
        .collect();
    let unknown: Vec<&str> = rows
        .iter()
        .filter(|r| r.status == Status::Unknown)
        .map(|r| r.check.as_str())
        .collect();
    let _ = match v {
        Verdict::Healthy => writeln!(out, "healthy"),
        Verdict::Unhealthy => writeln!(out, "unhealthy: {} failed", failed.join(", ")),
        Verdict::Unknown => writeln!(out, "unknown: cannot tell {}", unknown.join(", ")),
    };
    out
}

/// The JSON document.
pub(crate) fn json(report: &Report, rows: &[Row]) -> String {
    #[derive(Serialize)]
    struct Doc<'a> {
        verdict: Verdict,
        rows: &'a [Row],
        report: &'a Report,
    }
    let doc = Doc {
        verdict: verdict(rows),
        rows,
        report,
    };
    // Plain data with string keys: serializing cannot fail.
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detail_shows_no_line_break_and_is_cut_with_its_length() {
        let forged = "/tmp/x\nprocess   ok        fine\nhealthy/gse_agent";
        let detail = row("process", Status::Failed, forged.into()).detail;
        assert!(!detail.contains('\n'), "{detail}");
        assert!(detail.contains("/tmp/x\\nprocess"), "{detail}");
        let huge = "\u{7f}".repeat(4 << 20);
        let detail = row("procinfo", Status::Unknown, huge).detail;
        assert!(detail.len() <= MAX_DETAIL_BYTES + 32, "{}", detail.len());
        assert!(detail.ends_with("… (4194304 bytes)"), "{detail}");
        let plain = "10.0.0.1:28668 (data)".to_string();
        assert_eq!(row("upstream", Status::Ok, plain.clone()).detail, plain);
    }

    #[test]
    fn verdicts_follow_the_worst_counted_row() {
        let r = |status| row("x", status, String::new());
        assert_eq!(verdict(&[r(Status::Ok), r(Status::Info)]), Verdict::Healthy);
        assert_eq!(
            verdict(&[r(Status::Ok), r(Status::Skipped)]),
            Verdict::Healthy
        );
        assert_eq!(
            verdict(&[r(Status::Unknown), r(Status::Ok)]),
            Verdict::Unknown
        );
        assert_eq!(
            verdict(&[r(Status::Unknown), r(Status::Failed)]),
            Verdict::Unhealthy
        );
        assert_eq!(Verdict::Unknown.exit_code(), 2);
    }

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(2048), "2.0 KiB");
        assert_eq!(bytes(45 << 20), "45.0 MiB");
    }
}
