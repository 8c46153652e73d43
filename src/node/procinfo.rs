//! The process-hosting check: the plugins listed in the agent's procinfo
//! file (`proccfg`, default `<home>/agent/etc/procinfo.json`) and whether
//! each of them runs.
//!
//! GSE does not document the file. It holds the processes registered for
//! hosting through GSE's process management (`operate_proc`: `proc_name`,
//! `setup_path`, `pid_path`); the agent's own replies spell these keys in
//! camelCase inside a `value` array (`procName`, `setupPath`, `pidPath`, as
//! bk-nodeman's GSE mock data shows). Both spellings are read, as a `value`
//! array or a bare array. A plugin runs when its pid file names a live
//! process of that name, or else when a process has its name and (when its
//! executable path is readable) lives under the plugin's setup path.
//!
//! Owns parsing the file (bounded: 4 MiB, 256 plugins, 128-byte names) and
//! the per-plugin verdict; reads processes only through [`crate::procfs`].

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::procfs::{ProcStat, Procfs, comm_of, open_regular, read_bounded};

const MAX_FILE_BYTES: u64 = 4 << 20;
/// Most plugins reported (each is a label value).
pub(crate) const MAX_PLUGINS: usize = 256;
const MAX_NAME_BYTES: usize = 128;

/// What the procinfo file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FileState {
    /// Read and understood.
    Ok,
    /// No file: the agent hosts nothing.
    Missing,
    /// Not JSON of a known shape, too large, or too many plugins.
    Invalid,
    /// Not readable by this process.
    Unreadable,
}

impl FileState {
    pub const ALL: [FileState; 4] = [
        FileState::Ok,
        FileState::Missing,
        FileState::Invalid,
        FileState::Unreadable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Ok => "ok",
            FileState::Missing => "missing",
            FileState::Invalid => "invalid",
            FileState::Unreadable => "unreadable",
        }
    }
}

/// Whether one plugin runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PluginState {
    Running,
    NotRunning,
    /// Not visible, but other users' processes are hidden from this process.
    Unknown,
}

impl PluginState {
    pub const ALL: [PluginState; 3] = [
        PluginState::Running,
        PluginState::NotRunning,
        PluginState::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PluginState::Running => "running",
            PluginState::NotRunning => "not_running",
            PluginState::Unknown => "unknown",
        }
    }
}

/// One hosted plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Plugin {
    pub name: String,
    pub state: PluginState,
    pub pid: Option<u32>,
    pub pid_file: Option<PathBuf>,
}

/// The process-hosting check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Hosting {
    pub path: PathBuf,
    pub state: FileState,
    pub plugins: Vec<Plugin>,
    pub note: Option<String>,
}

/// One entry of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    name: String,
    pid_file: Option<PathBuf>,
    /// Where the plugin's executable lives.
    setup_path: Option<PathBuf>,
}

/// Reads the file at `path` and checks each plugin against `processes`.
pub(crate) fn check(
    procfs: &Procfs,
    path: &Path,
    processes: &[ProcStat],
    sees_all: bool,
) -> Hosting {
    let hosting = |state, plugins, note: Option<String>| Hosting {
        path: path.to_path_buf(),
        state,
        plugins,
        note,
    };
    let text = match read_limited(path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return hosting(FileState::Missing, Vec::new(), None);
        }
        Err(e) if e.kind() == ErrorKind::InvalidData => {
            return hosting(FileState::Invalid, Vec::new(), Some(e.to_string()));
        }
        Err(e) => {
            let note = format!("cannot read {}: {e}", path.display());
            return hosting(FileState::Unreadable, Vec::new(), Some(note));
        }
    };
    let entries = match parse(&text) {
        Ok(entries) => entries,
        Err(why) => {
            let note = format!("{}: {why}", path.display());
            return hosting(FileState::Invalid, Vec::new(), Some(note));
        }
    };
    let plugins = entries
        .into_iter()
        .map(|e| plugin(procfs, e, processes, sees_all))
        .collect();
    hosting(FileState::Ok, plugins, None)
}

fn read_limited(path: &Path) -> std::io::Result<String> {
    let file = open_regular(path)?;
    let size = file.metadata()?.len();
    if size > MAX_FILE_BYTES {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!(
                "{} is {size} bytes, more than the {MAX_FILE_BYTES} read",
                path.display()
            ),
        ));
    }
    let mut text = String::new();
    use std::io::Read;
    file.take(MAX_FILE_BYTES).read_to_string(&mut text)?;
    Ok(text)
}

/// The entries of a procinfo document.
fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let list = match &doc {
        Value::Array(list) => list,
        Value::Object(map) => match ["value", "proc_infos", "processes"]
            .iter()
            .find_map(|k| map.get(*k))
        {
            Some(Value::Array(list)) => list,
            Some(Value::Null) | None if map.is_empty() => return Ok(Vec::new()),
            _ => return Err("expected an array of processes, or one under \"value\"".into()),
        },
        Value::Null => return Ok(Vec::new()),
        _ => return Err("expected an array of processes, or one under \"value\"".into()),
    };
    if list.len() > MAX_PLUGINS {
        return Err(format!(
            "{} processes listed, more than the {MAX_PLUGINS} reported",
            list.len()
        ));
    }
    let mut entries: Vec<Entry> = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let name = string(item, &["procName", "proc_name", "name"])
            .or_else(|| string(&item["identity"], &["proc_name", "procName"]))
            .or_else(|| string(&item["meta"], &["name"]))
            .ok_or_else(|| format!("process {i} has no procName"))?;
        if name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
            // Quoted cut and escaped: the name may be megabytes, or a secret.
            let start: String = name.chars().take(16).collect();
            return Err(format!(
                "process {i}: a name of {} bytes starting {start:?} is not a plugin name \
                 (at most {MAX_NAME_BYTES} bytes, no control characters)",
                name.len()
            ));
        }
        let pid_file = string(item, &["pidPath", "pid_path"])
            .or_else(|| string(&item["identity"], &["pid_path", "pidPath"]))
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        let setup_path = string(item, &["setupPath", "setup_path"])
            .or_else(|| string(&item["identity"], &["setup_path", "setupPath"]))
            .map(PathBuf::from);
        if !entries.iter().any(|e| e.name == name) {
            entries.push(Entry {
                name,
                pid_file,
                setup_path,
            });
        }
    }
    Ok(entries)
}

fn string(value: &Value, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|k| value.get(*k)?.as_str())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn plugin(procfs: &Procfs, entry: Entry, processes: &[ProcStat], sees_all: bool) -> Plugin {
    let comm = comm_of(&entry.name);
    let from_pid_file = entry
        .pid_file
        .as_deref()
        .and_then(|f| read_bounded(f).ok())
        .and_then(|t| t.trim().parse::<u32>().ok())
        .filter(|pid| procfs.process(*pid).is_some_and(|p| p.comm == comm));
    // Else any process of that name, whose executable (when readable) is
    // under the plugin's setup path: another GSE home's plugin does not count.
    let from_name = || {
        processes
            .iter()
            .filter(|p| p.comm == comm)
            .find(|p| match (procfs.exe(p.pid), &entry.setup_path) {
                (Some(exe), Some(setup)) => Path::new(&exe).starts_with(setup),
                _ => true,
            })
            .map(|p| p.pid)
    };
    let pid = from_pid_file.or_else(from_name);
    let state = match pid {
        Some(_) => PluginState::Running,
        None if sees_all => PluginState::NotRunning,
        None => PluginState::Unknown,
    };
    Plugin {
        name: entry.name,
        state,
        pid,
        pid_file: entry.pid_file,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_and_shapes_parse() {
        let camel = r#"{"value": [
            {"procName": "bkmonitorbeat", "setupPath": "/usr/local/gse/plugins/bin",
             "pidPath": "/var/run/gse/bkmonitorbeat.pid", "funcID": ""},
            {"procName": "bkunifylogbeat", "pidPath": ""}
        ]}"#;
        let entries = parse(camel).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0].pid_file.as_deref(),
            Some(Path::new("/var/run/gse/bkmonitorbeat.pid"))
        );
        assert_eq!(entries[1].pid_file, None);
        let snake = r#"[{"meta": {"name": "basereport"},
                         "identity": {"proc_name": "basereport", "pid_path": "/var/run/gse/basereport.pid"}}]"#;
        assert_eq!(parse(snake).unwrap()[0].name, "basereport");
        assert!(parse("{}").unwrap().is_empty());
        assert!(parse("null").unwrap().is_empty());
    }

    #[test]
    fn careless_files_are_bounded_errors() {
        assert!(parse("{").unwrap_err().starts_with("not JSON"));
        assert!(parse("42").is_err());
        assert!(parse(r#"{"value": 3}"#).is_err());
        assert!(
            parse(r#"[{"setupPath": "/x"}]"#)
                .unwrap_err()
                .contains("no procName")
        );
        let long = format!(r#"[{{"procName": "{}"}}]"#, "x".repeat(3 << 20));
        let err = parse(&long).unwrap_err();
        assert!(err.len() < 200, "an error of {} bytes", err.len());
        assert!(err.contains("a name of 3145728 bytes"), "{err}");
        assert!(parse(r#"[{"procName": "a\nb"}]"#).is_err());
        let many = format!(
            "[{}]",
            vec![r#"{"procName": "p"}"#; MAX_PLUGINS + 1].join(",")
        );
        assert!(parse(&many).unwrap_err().contains("more than"));
        // Duplicates count once.
        assert_eq!(
            parse(r#"[{"procName": "p"}, {"procName": "p"}]"#)
                .unwrap()
                .len(),
            1
        );
    }
}
