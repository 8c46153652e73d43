//! The agent process check and the GSE home's layout: which processes are
//! this host's `gse_agent`, its main process, uptime, CPU, memory and
//! restarts seen, which GSE generation the home looks like, and the version
//! the node can read.
//!
//! Owns deciding what counts as the agent (the name `gse_agent`, and when
//! `/proc/<pid>/exe` is readable, an executable under the GSE home) and the
//! restart bookkeeping. Reads processes through [`crate::procfs`]; never
//! looks at sockets.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::procfs::{Kernel, ProcStat, Procfs};

/// The name (`comm`) of the GSE agent's processes, 1.x and 2.0 alike.
pub(crate) const AGENT_COMM: &str = "gse_agent";

/// Whether the agent process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ProcessState {
    /// A `gse_agent` process of this home runs.
    Running,
    /// None runs, and this process can see every user's processes.
    NotRunning,
    /// None is visible, but other users' processes are hidden from this
    /// process (`hidepid`, another PID namespace): it may well run.
    Unknown,
}

impl ProcessState {
    pub const ALL: [ProcessState; 3] = [
        ProcessState::Running,
        ProcessState::NotRunning,
        ProcessState::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProcessState::Running => "running",
            ProcessState::NotRunning => "not_running",
            ProcessState::Unknown => "unknown",
        }
    }
}

/// The agent's main process (the one whose parent is not a `gse_agent`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct MainProcess {
    pub pid: u32,
    /// Unix seconds.
    pub start_time: f64,
    /// `/proc/<pid>/exe`, when readable (needs `CAP_SYS_PTRACE` for another user's process).
    pub exe: Option<String>,
}

/// The process check's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct AgentProcess {
    pub state: ProcessState,
    pub main: Option<MainProcess>,
    /// Every `gse_agent` process of this home (master and workers).
    pub pids: Vec<u32>,
    /// Resident memory of all of them, bytes.
    pub resident_memory_bytes: u64,
    /// CPU time (user + system) of all of them, seconds.
    pub cpu_seconds: f64,
    /// Restarts seen since this exporter started (always 0 with `--once`).
    pub restarts: u64,
    /// Why the state is what it is, when not obvious.
    pub note: Option<String>,
}

/// Counts restarts: a main process other than the last one seen.
#[derive(Debug, Default, Clone)]
pub(crate) struct Restarts {
    last: Option<(u32, u64)>,
    count: u64,
}

impl Restarts {
    /// Records the main process seen now (pid, start ticks); returns the count.
    pub fn observe(&mut self, main: Option<(u32, u64)>) -> u64 {
        if let Some(now) = main {
            if self.last.is_some_and(|last| last != now) {
                self.count += 1;
            }
            self.last = Some(now);
        }
        self.count
    }
}

/// Finds this home's agent processes among `processes`.
pub(crate) fn check(
    procfs: &Procfs,
    kernel: &Kernel,
    processes: &[ProcStat],
    home: &Path,
    restarts: &mut Restarts,
) -> AgentProcess {
    let homes = home_prefixes(home);
    let mut exe_hidden = false;
    let mut elsewhere = Vec::new();
    let mut agents: Vec<&ProcStat> = Vec::new();
    for process in processes.iter().filter(|p| p.comm == AGENT_COMM) {
        match procfs.exe(process.pid) {
            Some(exe) if homes.iter().any(|h| Path::new(&exe).starts_with(h)) => {
                agents.push(process)
            }
            Some(exe) => elsewhere.push(format!("{} ({exe:?})", process.pid)),
            None => {
                exe_hidden = true;
                agents.push(process);
            }
        }
    }
    let main = main_of(&agents);
    let count = restarts.observe(main.map(|m| (m.pid, m.starttime)));
    let Some(main) = main else {
        let sees_all = procfs.sees_other_users(processes);
        let state = if sees_all {
            ProcessState::NotRunning
        } else {
            ProcessState::Unknown
        };
        let mut notes = Vec::new();
        if !sees_all {
            notes.push(
                "no gse_agent visible, but other users' processes are hidden from this process \
                 (/proc mounted with hidepid, or another PID namespace)"
                    .to_string(),
            );
        }
        if !elsewhere.is_empty() {
            notes.push(format!(
                "gse_agent processes of another GSE home: {}",
                listed(&elsewhere)
            ));
        }
        return AgentProcess {
            state,
            main: None,
            pids: Vec::new(),
            resident_memory_bytes: 0,
            cpu_seconds: 0.0,
            restarts: count,
            note: (!notes.is_empty()).then(|| notes.join("; ")),
        };
    };
    AgentProcess {
        state: ProcessState::Running,
        main: Some(MainProcess {
            pid: main.pid,
            start_time: kernel.start_time(main),
            exe: procfs.exe(main.pid),
        }),
        pids: agents.iter().map(|p| p.pid).collect(),
        resident_memory_bytes: agents.iter().map(|p| kernel.rss_bytes(p)).sum(),
        cpu_seconds: agents.iter().map(|p| kernel.cpu_seconds(p)).sum(),
        restarts: count,
        note: exe_hidden.then(|| {
            "executable path unreadable (needs CAP_SYS_PTRACE): any process named gse_agent counts"
                .to_string()
        }),
    }
}

/// The most other homes' agent processes a note names; the rest are counted.
const MAX_NAMED_ELSEWHERE: usize = 5;

/// The first [`MAX_NAMED_ELSEWHERE`] of `items`, then how many more.
fn listed(items: &[String]) -> String {
    let mut text = items[..items.len().min(MAX_NAMED_ELSEWHERE)].join(", ");
    if items.len() > MAX_NAMED_ELSEWHERE {
        text.push_str(&format!(" and {} more", items.len() - MAX_NAMED_ELSEWHERE));
    }
    text
}

/// The oldest agent process whose parent is not an agent process.
fn main_of<'a>(agents: &[&'a ProcStat]) -> Option<&'a ProcStat> {
    agents
        .iter()
        .filter(|p| !agents.iter().any(|q| q.pid == p.ppid))
        .min_by_key(|p| (p.starttime, p.pid))
        .copied()
}

/// The GSE home as given and as resolved (symlinked homes are common).
fn home_prefixes(home: &Path) -> Vec<PathBuf> {
    let mut out = vec![home.to_path_buf()];
    if let Ok(real) = fs::canonicalize(home)
        && real != home
    {
        out.push(real);
    }
    out
}

/// Which GSE generation a home looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) enum Generation {
    /// `agent/etc/agent.conf`: GSE 1.x.
    #[serde(rename = "1.x")]
    V1,
    /// `agent/etc/gse_agent.conf` or `agent/bin/run/agent.pid`: GSE 2.0.
    #[serde(rename = "2.0")]
    V2,
    /// Neither.
    #[serde(rename = "unknown")]
    Unknown,
}

impl Generation {
    pub fn as_str(self) -> &'static str {
        match self {
            Generation::V1 => "1.x",
            Generation::V2 => "2.0",
            Generation::Unknown => "unknown",
        }
    }
}

/// What the GSE home on disk says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Layout {
    pub home: PathBuf,
    pub generation: Generation,
    /// The file the generation was read from.
    pub evidence: Option<PathBuf>,
    /// GSE's run directory (pid files, 2.0 default `/var/run/gse`) and whether it exists.
    pub run_dir: PathBuf,
    pub run_dir_exists: bool,
    /// GSE's data directory (2.0 default `/var/lib/gse`) and whether it exists.
    pub data_dir: PathBuf,
    pub data_dir_exists: bool,
    /// The agent version read from `version_file`; `None` when it has none.
    pub version: Option<String>,
    pub version_file: PathBuf,
    /// Why the version is unknown.
    pub version_note: Option<String>,
}

/// Reads the layout of a GSE home.
pub(crate) fn layout(home: &Path, run_dir: &Path, data_dir: &Path, version_file: &Path) -> Layout {
    let agent = home.join("agent");
    let candidates = [
        (agent.join("etc/gse_agent.conf"), Generation::V2),
        (agent.join("bin/run/agent.pid"), Generation::V2),
        (agent.join("etc/agent.conf"), Generation::V1),
    ];
    let found = candidates.into_iter().find(|(path, _)| path.exists());
    let (version, version_note) = match read_version(version_file) {
        Ok(v) => (Some(v), None),
        Err(note) => (None, Some(note)),
    };
    Layout {
        home: home.to_path_buf(),
        generation: found.as_ref().map_or(Generation::Unknown, |(_, g)| *g),
        evidence: found.map(|(path, _)| path),
        run_dir: run_dir.to_path_buf(),
        run_dir_exists: run_dir.is_dir(),
        data_dir: data_dir.to_path_buf(),
        data_dir_exists: data_dir.is_dir(),
        version,
        version_file: version_file.to_path_buf(),
        version_note,
    }
}

/// The first version-looking token (`1.2.3`, `2.1.6-beta.1`) of a small file.
fn read_version(path: &Path) -> Result<String, String> {
    let text = crate::procfs::read_bounded(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{} does not exist", path.display()),
        _ => format!("cannot read {}: {e}", path.display()),
    })?;
    text.split(|c: char| c.is_whitespace() || c == '"' || c == '=' || c == ':')
        .map(|t| t.trim_start_matches(['v', 'V']))
        .find(|t| is_version(t))
        .map(str::to_string)
        .ok_or_else(|| format!("no version in {}", path.display()))
}

/// `N.N[.N...]` optionally followed by `-` or `+` and `[A-Za-z0-9.-]`, at most 64 bytes.
fn is_version(token: &str) -> bool {
    if token.is_empty() || token.len() > 64 {
        return false;
    }
    let core = token.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() >= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-+".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_homes_agents_are_named_up_to_five_then_counted() {
        let items: Vec<String> = (1..=300).map(|n| n.to_string()).collect();
        assert_eq!(listed(&items), "1, 2, 3, 4, 5 and 295 more");
        assert_eq!(listed(&items[..2]), "1, 2");
    }

    fn stat(pid: u32, ppid: u32, start: u64) -> ProcStat {
        ProcStat {
            pid,
            comm: AGENT_COMM.into(),
            state: 'S',
            ppid,
            utime: 0,
            stime: 0,
            starttime: start,
            rss_pages: 0,
            uid: 0,
        }
    }

    #[test]
    fn the_main_process_is_the_oldest_without_an_agent_parent() {
        let (master, worker, stray) = (stat(10, 1, 5), stat(11, 10, 6), stat(30, 1, 9));
        assert_eq!(main_of(&[&worker, &master, &stray]), Some(&master));
        assert_eq!(main_of(&[&worker]), Some(&worker));
        assert_eq!(main_of(&[]), None);
    }

    #[test]
    fn restarts_count_changes_of_the_main_process_only() {
        let mut r = Restarts::default();
        assert_eq!(r.observe(Some((10, 5))), 0);
        assert_eq!(r.observe(Some((10, 5))), 0);
        assert_eq!(r.observe(None), 0);
        assert_eq!(r.observe(Some((12, 9))), 1);
        assert_eq!(r.observe(Some((12, 9))), 1);
        // A reused pid with another start time is a restart too.
        assert_eq!(r.observe(Some((12, 40))), 2);
    }

    #[test]
    fn versions_are_found_in_common_file_shapes() {
        for (text, want) in [
            ("2.1.6\n", Some("2.1.6")),
            ("VERSION=v1.7.22\n", Some("1.7.22")),
            ("{\"version\": \"2.0.3-beta.1\"}", Some("2.0.3-beta.1")),
            ("release 3\n", None),
            (
                "1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19.20.21.22.23.24.25.26",
                None,
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("VERSION");
            fs::write(&file, text).unwrap();
            assert_eq!(read_version(&file).ok().as_deref(), want, "{text:?}");
        }
        let missing = read_version(Path::new("/nonexistent/VERSION")).unwrap_err();
        assert!(missing.contains("does not exist"), "{missing}");
    }

    #[test]
    fn layouts_are_told_apart_by_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path();
        let probe =
            |home: &Path| layout(home, &home.join("run"), &home.join("data"), &home.join("V"));
        assert_eq!(probe(home).generation, Generation::Unknown);
        fs::create_dir_all(home.join("agent/etc")).unwrap();
        fs::write(home.join("agent/etc/agent.conf"), "{}").unwrap();
        assert_eq!(probe(home).generation, Generation::V1);
        fs::write(home.join("agent/etc/gse_agent.conf"), "{}").unwrap();
        let l = probe(home);
        assert_eq!(l.generation, Generation::V2);
        assert_eq!(l.evidence, Some(home.join("agent/etc/gse_agent.conf")));
        assert!(!l.run_dir_exists && l.version.is_none());
    }
}
