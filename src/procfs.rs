//! Reading processes from `/proc` by hand: the list of processes with their
//! names, parents, start times, CPU time and resident memory, the kernel
//! constants needed to turn those into seconds and bytes, and whether this
//! process can see other users' processes at all.
//!
//! Owns parsing `/proc/<pid>/stat`, `/proc/stat` (`btime`),
//! `/proc/self/auxv` and `/proc/<pid>/limits`, counting a process's open
//! descriptors, and the visibility test. Used by the node mode (for the GSE
//! agent) and by the exporter's own `process_*` metrics. Never decides what a
//! GSE agent is and never reads sockets (the node mode's). Every read is
//! bounded: a process that vanishes between listing and reading is skipped,
//! never an error.

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Longest `/proc` text file read (a `stat` line is a few hundred bytes).
const MAX_PROC_FILE: u64 = 64 * 1024;
/// Most processes listed; a host with more is reported as such, not scanned
/// without bound.
pub(crate) const MAX_PROCESSES: usize = 1 << 20;

/// The kernel's `TASK_COMM_LEN - 1`: `/proc/<pid>/comm` holds at most this
/// many bytes of the executable's name.
pub(crate) const COMM_LEN: usize = 15;

/// One process as `/proc/<pid>/stat` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// Process id.
    pub pid: u32,
    /// `comm`: the first 15 bytes of the executable's file name.
    pub comm: String,
    /// State letter (`R`, `S`, `Z` zombie, ...).
    pub state: char,
    /// Parent process id.
    pub ppid: u32,
    /// User CPU time in clock ticks.
    pub utime: u64,
    /// System CPU time in clock ticks.
    pub stime: u64,
    /// Start time in clock ticks after boot.
    pub starttime: u64,
    /// Resident set size in pages.
    pub rss_pages: u64,
    /// Owner of `/proc/<pid>` (the process's effective uid while dumpable).
    pub uid: u32,
}

/// Kernel facts needed to convert ticks and pages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Kernel {
    /// Clock ticks per second (`AT_CLKTCK`; 100 on every common build).
    pub ticks_per_second: u64,
    /// Page size in bytes (`AT_PAGESZ`).
    pub page_size: u64,
    /// Boot time, Unix seconds (`btime` of `/proc/stat`).
    pub boot_time: u64,
}

impl Kernel {
    /// Start time of a process as Unix seconds.
    pub fn start_time(&self, stat: &ProcStat) -> f64 {
        self.boot_time as f64 + stat.starttime as f64 / self.ticks_per_second as f64
    }

    /// CPU seconds (user + system) of a process.
    pub fn cpu_seconds(&self, stat: &ProcStat) -> f64 {
        (stat.utime + stat.stime) as f64 / self.ticks_per_second as f64
    }

    /// Resident memory of a process in bytes.
    pub fn rss_bytes(&self, stat: &ProcStat) -> u64 {
        stat.rss_pages.saturating_mul(self.page_size)
    }
}

/// Why `/proc` could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The procfs root cannot be listed.
    #[error("cannot list {path}: {source}")]
    List {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A kernel file every Linux has could not be read or parsed.
    #[error("cannot read {path}: {reason}")]
    Kernel {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// More processes than [`MAX_PROCESSES`].
    #[error("more than {MAX_PROCESSES} entries in {0}")]
    TooMany(PathBuf),
}

/// The procfs mount to read (normally `/proc`).
#[derive(Debug, Clone)]
pub(crate) struct Procfs {
    root: PathBuf,
}

impl Procfs {
    pub fn new(root: impl Into<PathBuf>) -> Procfs {
        Procfs { root: root.into() }
    }

    /// `<root>/<relative>`.
    pub fn path(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.root.join(relative)
    }

    /// `<root>/<pid>/<file>`.
    pub fn pid_path(&self, pid: u32, file: &str) -> PathBuf {
        self.root.join(pid.to_string()).join(file)
    }

    /// The kernel constants.
    pub fn kernel(&self) -> Result<Kernel, ProcError> {
        let stat_path = self.path("stat");
        let text = read_bounded(&stat_path).map_err(|e| ProcError::Kernel {
            path: stat_path.clone(),
            reason: e.to_string(),
        })?;
        let boot_time = text
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| ProcError::Kernel {
                path: stat_path,
                reason: "no btime line".into(),
            })?;
        let (ticks, page) = self.auxv();
        Ok(Kernel {
            ticks_per_second: ticks.unwrap_or(100),
            page_size: page.unwrap_or(4096),
            boot_time,
        })
    }

    /// `AT_CLKTCK` and `AT_PAGESZ` from `self/auxv` (pairs of native words).
    fn auxv(&self) -> (Option<u64>, Option<u64>) {
        const AT_PAGESZ: u64 = 6;
        const AT_CLKTCK: u64 = 17;
        // Bounded and only a regular file, as every read here: a FIFO at a
        // hostile `--path.procfs` waited for a writer for ever, and
        // `/dev/zero` was read until memory ran out.
        let Ok(bytes) = read_bounded_bytes(&self.path("self/auxv")) else {
            return (None, None);
        };
        let word = std::mem::size_of::<usize>();
        let value = |chunk: &[u8]| -> u64 {
            match chunk.try_into() {
                Ok(eight) => u64::from_ne_bytes(eight),
                Err(_) => chunk
                    .try_into()
                    .map(|four| u64::from(u32::from_ne_bytes(four)))
                    .unwrap_or(0),
            }
        };
        let (mut ticks, mut page) = (None, None);
        for pair in bytes.chunks_exact(2 * word) {
            let (key, val) = (value(&pair[..word]), value(&pair[word..]));
            match key {
                AT_CLKTCK if val > 0 => ticks = Some(val),
                AT_PAGESZ if val > 0 => page = Some(val),
                0 => break,
                _ => {}
            }
        }
        (ticks, page)
    }

    /// Every live process visible now. Processes that exit while being
    /// read, and zombies, are left out.
    pub fn processes(&self) -> Result<Vec<ProcStat>, ProcError> {
        let entries = fs::read_dir(&self.root).map_err(|source| ProcError::List {
            path: self.root.clone(),
            source,
        })?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if out.len() >= MAX_PROCESSES {
                return Err(ProcError::TooMany(self.root.clone()));
            }
            if let Some(stat) = self.process(pid) {
                out.push(stat);
            }
        }
        out.sort_by_key(|p| p.pid);
        Ok(out)
    }

    /// One live process, or `None` when it is gone, a zombie (exited, not
    /// yet reaped by its parent) or unreadable.
    pub fn process(&self, pid: u32) -> Option<ProcStat> {
        let uid = fs::metadata(self.root.join(pid.to_string())).ok()?.uid();
        let text = read_bounded(&self.pid_path(pid, "stat")).ok()?;
        parse_stat(&text, uid).filter(|p| !matches!(p.state, 'Z' | 'X' | 'x'))
    }

    /// `/proc/<pid>/exe` without the ` (deleted)` of a replaced binary;
    /// `None` when unreadable (another user's process needs `CAP_SYS_PTRACE`).
    pub fn exe(&self, pid: u32) -> Option<String> {
        let target = fs::read_link(self.pid_path(pid, "exe")).ok()?;
        let text = target.to_string_lossy();
        Some(text.strip_suffix(" (deleted)").unwrap_or(&text).to_string())
    }

    /// Open file descriptors of a process (entries of `<pid>/fd`).
    pub fn open_fds(&self, pid: u32) -> Option<u64> {
        let entries = fs::read_dir(self.pid_path(pid, "fd")).ok()?;
        Some(entries.take(MAX_PROCESSES).count() as u64)
    }

    /// The soft limit on open files of a process (`Max open files` of
    /// `<pid>/limits`); `None` when unreadable or unlimited.
    pub fn max_fds(&self, pid: u32) -> Option<u64> {
        let text = read_bounded(&self.pid_path(pid, "limits")).ok()?;
        let line = text.lines().find(|l| l.starts_with("Max open files"))?;
        line["Max open files".len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// Whether other users' processes show up here. Root sees everything;
    /// anyone else sees them unless `/proc` is mounted with `hidepid` (or
    /// this is a separate PID namespace), in which case no process of
    /// another uid is listed.
    pub fn sees_other_users(&self, processes: &[ProcStat]) -> bool {
        let me = fs::metadata(self.path("self")).map(|m| m.uid()).ok();
        me == Some(0) || processes.iter().any(|p| Some(p.uid) != me)
    }
}

/// Reads a small text file, refusing more than [`MAX_PROC_FILE`] bytes and
/// anything but a regular file ([`open_regular`]).
pub(crate) fn read_bounded(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read_bounded_bytes(path)?)
        .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidData, err))
}

/// [`read_bounded`], for a file that is not text (`self/auxv`).
fn read_bounded_bytes(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open_regular(path)?
        .take(MAX_PROC_FILE)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// What a file that is not a regular file is, for a message ("is a FIFO,
/// not a regular file"); the configuration's file reader says it the same way.
pub(crate) fn file_kind(file_type: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// Linux's `O_NONBLOCK` (the same on x86-64 and arm64).
const O_NONBLOCK: i32 = 0o4000;

/// Opens a file for reading if it is a regular file (as `/proc`'s are), or
/// an `InvalidInput` error saying what it is. Opened without waiting, then
/// looked at through the descriptor: opening a FIFO for reading waits for a
/// writer, and a FIFO where the agent's `VERSION`, procinfo or a plugin's
/// pid file belongs held the node check, its server and SIGTERM for ever.
pub(crate) fn open_regular(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        return Ok(file);
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("is {}, not a regular file", file_kind(kind)),
    ))
}

/// Parses a `/proc/<pid>/stat` line: `pid (comm) state ppid ...`; `comm`
/// may hold spaces and parentheses, so the fields start after the last `)`.
pub(crate) fn parse_stat(text: &str, uid: u32) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let pid = text[..open].trim().parse().ok()?;
    let comm = text[open + 1..close].to_string();
    // Fields from 3 (state) on; field n is at index n - 3.
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(ProcStat {
        pid,
        comm,
        state: fields.first()?.chars().next()?,
        ppid: u32::try_from(field(4)?).ok()?,
        utime: field(14)?,
        stime: field(15)?,
        starttime: field(22)?,
        rss_pages: fields.get(24 - 3)?.parse::<i64>().ok()?.max(0) as u64,
        uid,
    })
}

/// The `comm` a process started from a file named `name` gets.
pub(crate) fn comm_of(name: &str) -> &str {
    let mut end = name.len().min(COMM_LEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let line = "4242 (gse agent) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1234567 100000000 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        let stat = parse_stat(line, 0).expect("parses");
        assert_eq!(stat.pid, 4242);
        assert_eq!(stat.comm, "gse agent) (x)");
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.ppid, 1);
        assert_eq!((stat.utime, stat.stime), (250, 75));
        assert_eq!(stat.starttime, 1234567);
        assert_eq!(stat.rss_pages, 2560);
        assert_eq!(parse_stat("garbage", 0), None);
        assert_eq!(parse_stat("1 (x) S", 0), None);
        assert_eq!(parse_stat(") 1 (", 0), None);
    }

    #[test]
    fn this_process_reads_itself() {
        let procfs = Procfs::new("/proc");
        let kernel = procfs.kernel().expect("kernel facts");
        assert!(kernel.ticks_per_second >= 100 && kernel.page_size >= 4096);
        let me = procfs.process(std::process::id()).expect("own stat");
        assert!(kernel.rss_bytes(&me) > 0);
        let started = kernel.start_time(&me);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(started <= now + 1.0 && started > now - 86_400.0 * 365.0);
        let all = procfs.processes().expect("process list");
        assert!(all.iter().any(|p| p.pid == me.pid));
    }

    #[test]
    fn a_fifo_or_device_for_auxv_gives_the_defaults_at_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("self")).unwrap();
        std::fs::write(dir.path().join("stat"), "cpu 1 2 3\nbtime 1700000000\n").unwrap();
        let auxv = dir.path().join("self/auxv");
        let made = std::process::Command::new("mkfifo").arg(&auxv).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        // Before, this waited for a writer for ever.
        let kernel = Procfs::new(dir.path()).kernel().expect("kernel facts");
        assert_eq!((kernel.ticks_per_second, kernel.page_size), (100, 4096));
        std::fs::remove_file(&auxv).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &auxv).unwrap();
        let kernel = Procfs::new(dir.path()).kernel().expect("kernel facts");
        assert_eq!((kernel.ticks_per_second, kernel.page_size), (100, 4096));
    }

    #[test]
    fn comm_is_cut_at_fifteen_bytes_on_a_char_boundary() {
        assert_eq!(comm_of("bkunifylogbeat"), "bkunifylogbeat");
        assert_eq!(comm_of("bkmonitorbeat_extra"), "bkmonitorbeat_e");
        assert_eq!(comm_of("插件插件插件"), "插件插件插");
    }
}
