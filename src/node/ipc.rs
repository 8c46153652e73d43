//! The IPC socket check: the unix socket collectors (bkunifylogbeat,
//! bkmonitorbeat) report through (`dataipc`, default
//! `/var/run/ipc.state.report`): does the path exist, is it a socket, does
//! it accept a connection, and how full are its queues.
//!
//! Owns the connect probe and reading the queues for the sockets bound to
//! that path: from `NETLINK_SOCK_DIAG` ([`super::sockdiag`]) when this
//! process may open a netlink socket and shares the agent's network
//! namespace, else connection counts only from `/proc/net/unix`, which has
//! no queue sizes. Never decides whether the agent is up.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use socket2::{Domain, SockAddr, Socket, Type};

use super::sockdiag::{self, STATE_ESTABLISHED, STATE_LISTEN, UnixSocket};
use crate::procfs::Procfs;

/// What the socket path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SocketState {
    /// A socket that accepted the probe connection (or, without the probe,
    /// a socket with a listener).
    Ok,
    /// Nothing at the path.
    Missing,
    /// Something other than a socket at the path.
    NotSocket,
    /// A socket file nobody listens on (the agent died or re-created it elsewhere).
    Refused,
    /// A listener whose accept queue is full: the agent is not accepting.
    NotAccepting,
    /// The path or the socket cannot be examined by this process.
    Unknown,
}

impl SocketState {
    pub const ALL: [SocketState; 6] = [
        SocketState::Ok,
        SocketState::Missing,
        SocketState::NotSocket,
        SocketState::Refused,
        SocketState::NotAccepting,
        SocketState::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SocketState::Ok => "ok",
            SocketState::Missing => "missing",
            SocketState::NotSocket => "not_socket",
            SocketState::Refused => "refused",
            SocketState::NotAccepting => "not_accepting",
            SocketState::Unknown => "unknown",
        }
    }
}

/// Where the queue numbers came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "source")]
pub(crate) enum Queues {
    /// `NETLINK_SOCK_DIAG`: everything.
    SockDiag {
        /// Connected sockets bound to the path (the agent's ends of collector connections).
        connections: u32,
        /// Connections waiting in the listener's accept queue.
        backlog: u32,
        /// Bytes collectors sent that the agent has not read.
        receive_bytes: u64,
        /// Memory held by bytes the agent sent that collectors have not read.
        send_bytes: u64,
    },
    /// `/proc/net/unix`: connection count only, no queue sizes.
    ProcNetUnix {
        connections: u32,
        /// Why sock_diag was not used.
        reason: String,
    },
    /// Neither source shows the socket.
    Unavailable { reason: String },
}

/// The IPC check's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Ipc {
    pub path: PathBuf,
    pub state: SocketState,
    pub queues: Queues,
    /// Detail for an unexpected state.
    pub note: Option<String>,
}

impl Ipc {
    /// Queued bytes both ways and connections waiting to be accepted, when known.
    pub fn stuck(&self, max_queue_bytes: u64) -> Option<bool> {
        match self.queues {
            Queues::SockDiag {
                backlog,
                receive_bytes,
                send_bytes,
                ..
            } => Some(receive_bytes + send_bytes > max_queue_bytes || backlog > 0),
            _ => None,
        }
    }
}

/// How long the connect probe and the netlink dump may take.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Examines the socket at `path`; `probe` connects to it (and closes at
/// once). `agent` is the agent's main process when it runs: its network
/// namespace's socket table is the one that says whether it listens.
pub(crate) fn check(procfs: &Procfs, path: &Path, probe: bool, agent: Option<u32>) -> Ipc {
    // Followed through a symlink, as a collector connecting to the path is:
    // a link to the live socket read as "not a socket".
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return ipc(path, SocketState::Missing, unavailable("no socket"), None);
        }
        Err(e) => {
            let note = format!("cannot stat {}: {e}", path.display());
            return ipc(path, SocketState::Unknown, unavailable(&note), Some(note));
        }
    };
    if !meta.file_type().is_socket() {
        return ipc(
            path,
            SocketState::NotSocket,
            unavailable("not a socket"),
            None,
        );
    }
    // Queues before the probe, so the probe's own connection is not counted.
    let key = (meta.ino() as u32, sockdiag::dev_major_minor(meta.dev()));
    let (queues, listening) = queues(procfs, path, key, agent);
    let (state, note) = match (probe, listening) {
        (true, _) => connect_probe(path),
        (false, Some(true)) => (SocketState::Ok, None),
        (false, Some(false)) => (
            SocketState::Refused,
            Some("no listener bound to the socket file".into()),
        ),
        // Neither sock_diag nor a socket table could be read: a socket
        // file is not a listener, so this is not "ok".
        (false, None) => (
            SocketState::Unknown,
            Some("whether a listener is bound cannot be told without the connect probe".into()),
        ),
    };
    ipc(path, state, queues, note)
}

fn ipc(path: &Path, state: SocketState, queues: Queues, note: Option<String>) -> Ipc {
    Ipc {
        path: path.to_path_buf(),
        state,
        queues,
        note,
    }
}

fn unavailable(reason: &str) -> Queues {
    Queues::Unavailable {
        reason: reason.to_string(),
    }
}

/// The queues of the sockets bound to the file with `key` (inode, device),
/// and whether one of them listens (`None` when unknown). sock_diag sees
/// this process's network namespace; when it shows no socket bound to the
/// file, the socket table of the agent's namespace (`/proc/<agent>/net/unix`,
/// this process's when the agent does not run) says whether one listens.
/// A stale socket file, bound by nobody, read as "ok" without the probe.
fn queues(
    procfs: &Procfs,
    path: &Path,
    key: (u32, (u32, u32)),
    agent: Option<u32>,
) -> (Queues, Option<bool>) {
    let reason = match sockdiag::dump_unix(TIMEOUT) {
        Ok(all) => {
            let ours: Vec<&UnixSocket> = all.iter().filter(|s| s.vfs == Some(key)).collect();
            if !ours.is_empty() {
                return (
                    from_diag(&ours),
                    Some(ours.iter().any(|s| s.state == STATE_LISTEN)),
                );
            }
            "sock_diag shows no socket bound to this file (stale file, or another network \
             namespace than the agent's)"
                .to_string()
        }
        Err(e) => e.to_string(),
    };
    let table = match agent {
        Some(pid) => procfs.pid_path(pid, "net/unix"),
        None => procfs.path("net/unix"),
    };
    match proc_net_unix(&table, path) {
        Ok((connections, listening)) if listening || connections > 0 => (
            Queues::ProcNetUnix {
                connections,
                reason,
            },
            Some(listening),
        ),
        Ok(_) => (Queues::Unavailable { reason }, Some(false)),
        Err(e) => (
            Queues::Unavailable {
                reason: format!("{reason}; {e}"),
            },
            None,
        ),
    }
}

fn from_diag(ours: &[&UnixSocket]) -> Queues {
    let mut connections = 0;
    let (mut backlog, mut receive_bytes, mut send_bytes) = (0, 0, 0);
    for socket in ours {
        let (r, w) = socket.queues.unwrap_or((0, 0));
        match socket.state {
            STATE_LISTEN => backlog += r,
            STATE_ESTABLISHED => {
                connections += 1;
                receive_bytes += u64::from(r);
                send_bytes += u64::from(w);
            }
            _ => {}
        }
    }
    Queues::SockDiag {
        connections,
        backlog,
        receive_bytes,
        send_bytes,
    }
}

/// Connected sockets and whether a listener is bound to `path`, from a
/// `/proc/net/unix` table `file` (`Num RefCount Protocol Flags Type St Inode Path`).
fn proc_net_unix(file: &Path, path: &Path) -> Result<(u32, bool), String> {
    const SO_ACCEPTCON: u32 = 0x10000;
    const SS_CONNECTED: &str = "03";
    let text = read_unix_table(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    // The path as given, or where its links lead: the table holds the path
    // the socket was bound at.
    let given = path.to_string_lossy();
    let real = std::fs::canonicalize(path).ok();
    let real = real.as_deref().map(Path::to_string_lossy);
    let (mut connections, mut listening) = (0, false);
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            continue;
        }
        let bound = fields[7..].join(" ");
        if bound != given && real.as_deref() != Some(bound.as_str()) {
            continue;
        }
        let flags = u32::from_str_radix(fields[3], 16).unwrap_or(0);
        if flags & SO_ACCEPTCON != 0 {
            listening = true;
        } else if fields[5] == SS_CONNECTED {
            connections += 1;
        }
    }
    Ok((connections, listening))
}

/// `/proc/net/unix` may be large on a busy host; read up to 64 MiB, and only
/// a regular file (`/proc`'s are; a FIFO in a `--path.procfs` would wait for
/// a writer).
fn read_unix_table(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    crate::procfs::open_regular(path)?
        .take(64 << 20)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// Connects without blocking and closes at once.
fn connect_probe(path: &Path) -> (SocketState, Option<String>) {
    let attempt = |kind: Type| -> std::io::Result<()> {
        let socket = Socket::new(Domain::UNIX, kind, None)?;
        socket.set_nonblocking(true)?;
        socket.connect(&SockAddr::unix(path)?)
    };
    let result = match attempt(Type::STREAM) {
        // A datagram or seqpacket socket at the path.
        Err(e) if e.raw_os_error() == Some(91) => attempt(Type::DGRAM),
        other => other,
    };
    match result {
        Ok(()) => (SocketState::Ok, None),
        Err(e) => match e.kind() {
            ErrorKind::ConnectionRefused => (
                SocketState::Refused,
                Some("connection refused: nobody listens on the socket file".into()),
            ),
            ErrorKind::WouldBlock => (
                SocketState::NotAccepting,
                Some("the accept queue is full: the agent does not accept connections".into()),
            ),
            ErrorKind::NotFound => (SocketState::Missing, None),
            ErrorKind::PermissionDenied => (
                SocketState::Unknown,
                Some(format!(
                    "cannot connect to {}: {e} (connecting needs write permission on the socket file)",
                    path.display()
                )),
            ),
            _ => (
                SocketState::Unknown,
                Some(format!("cannot connect to {}: {e}", path.display())),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "Num       RefCount Protocol Flags    Type St Inode Path\n";

    /// A socket file bound by nobody (its listener closed) in `dir`.
    fn stale_socket(dir: &Path) -> PathBuf {
        let path = dir.join("ipc.state.report");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        path
    }

    /// Why the queues of `ipc` are unavailable; fails if they are known.
    fn unavailable_reason(ipc: &Ipc) -> &str {
        let Queues::Unavailable { reason } = &ipc.queues else {
            panic!("{:?}", ipc.queues)
        };
        reason
    }

    /// Without the probe, a socket file that neither sock_diag nor any
    /// socket table shows bound is unknown: never "ok" for being a socket.
    #[test]
    fn a_stale_socket_file_with_no_socket_table_to_read_is_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let path = stale_socket(dir.path());
        let procfs = Procfs::new(dir.path().join("proc"));
        let ipc = check(&procfs, &path, false, None);
        assert_eq!(ipc.state, SocketState::Unknown, "{ipc:?}");
        let note = ipc.note.as_deref().unwrap_or_default();
        assert!(note.contains("without the connect probe"), "{note}");
        let reason = unavailable_reason(&ipc);
        assert!(reason.contains("cannot read"), "{reason}");
    }

    /// A socket table that is a FIFO is refused at once, not waited on.
    #[test]
    fn a_socket_table_that_is_a_fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc/net")).unwrap();
        let fifo = dir.path().join("proc/net/unix");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        let path = stale_socket(dir.path());
        let (done, result) = std::sync::mpsc::channel();
        let root = dir.path().join("proc");
        std::thread::spawn(move || done.send(check(&Procfs::new(root), &path, false, None)));
        let ipc = result
            .recv_timeout(TIMEOUT * 5)
            .expect("checked within 10 s");
        assert_eq!(ipc.state, SocketState::Unknown, "{ipc:?}");
        let reason = unavailable_reason(&ipc);
        assert!(reason.contains("not a regular file"), "{reason}");
    }

    /// The table holds the path a socket was bound at: a path given through
    /// a symlink is matched by where the link leads, as well as by itself.
    #[test]
    fn a_socket_table_is_matched_by_the_given_or_the_real_path() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.sock");
        std::fs::write(&real, "").unwrap();
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let real = std::fs::canonicalize(&real).unwrap();
        let table = dir.path().join("unix");
        let line = |flags: &str, state: &str, path: &Path| {
            format!(
                "0000000000000000: 00000002 00000000 {flags} 0001 {state} 12345 {}\n",
                path.display()
            )
        };
        std::fs::write(
            &table,
            format!(
                "{HEADER}{}{}{}{}",
                line("00010000", "01", &real),
                line("00000000", "03", &real),
                line("00000000", "03", &link),
                line("00010000", "01", &dir.path().join("other.sock")),
            ),
        )
        .unwrap();
        assert_eq!(proc_net_unix(&table, &link), Ok((2, true)));
        assert_eq!(proc_net_unix(&table, &real), Ok((1, true)));
        let other = dir.path().join("nobody.sock");
        assert_eq!(proc_net_unix(&table, &other), Ok((0, false)));
    }
}
