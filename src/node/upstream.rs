//! The upstream check: established TCP connections from the agent process
//! to its GSE servers' ports (data, cluster/task), with their remote
//! addresses.
//!
//! Owns matching the agent's socket inodes (`/proc/<pid>/fd/*` links
//! `socket:[N]`) against the TCP tables of the agent's network namespace
//! (`/proc/<pid>/net/tcp` and `tcp6`). Listing another user's `fd`
//! directory needs `CAP_DAC_READ_SEARCH` and reading its links
//! `CAP_SYS_PTRACE`; without them the state is `unknown`, never
//! "disconnected". Never decides whether the agent runs.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::Serialize;

use super::agent::{AgentProcess, ProcessState};
use crate::procfs::Procfs;

/// The TCP state `ESTABLISHED` in `/proc/net/tcp`.
const TCP_ESTABLISHED: &str = "01";
/// Most descriptors examined per process.
const MAX_FDS: usize = 1 << 20;
/// Largest TCP table read.
const MAX_TABLE_BYTES: u64 = 256 << 20;
/// Longest line of a TCP table read (the kernel's are 150 bytes); a longer
/// one is skipped.
const MAX_LINE_BYTES: u64 = 4096;

/// A server port to look for, with what it is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Port {
    pub port: u16,
    /// `data`, `cluster`, `task`, or what the user called it.
    pub name: String,
}

/// Whether the agent is connected upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum UpstreamState {
    /// At least one established connection to every configured port.
    Connected,
    /// Some configured port has none (or the agent does not run).
    Disconnected,
    /// The agent's sockets cannot be read by this process.
    Unknown,
}

impl UpstreamState {
    pub const ALL: [UpstreamState; 3] = [
        UpstreamState::Connected,
        UpstreamState::Disconnected,
        UpstreamState::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamState::Connected => "connected",
            UpstreamState::Disconnected => "disconnected",
            UpstreamState::Unknown => "unknown",
        }
    }
}

/// Established connections to one port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct PortConnections {
    pub port: u16,
    pub name: String,
    pub remotes: Vec<SocketAddr>,
}

/// The upstream check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Upstream {
    pub state: UpstreamState,
    pub ports: Vec<PortConnections>,
    pub note: Option<String>,
}

/// Looks for the agent's established connections to `ports`.
pub(crate) fn check(procfs: &Procfs, agent: &AgentProcess, ports: &[Port]) -> Upstream {
    let empty = || {
        ports
            .iter()
            .map(|p| PortConnections {
                port: p.port,
                name: p.name.clone(),
                remotes: Vec::new(),
            })
            .collect::<Vec<_>>()
    };
    let unknown = |note: String| Upstream {
        state: UpstreamState::Unknown,
        ports: empty(),
        note: Some(note),
    };
    let main = match (agent.state, &agent.main) {
        (ProcessState::Running, Some(main)) => main.pid,
        (ProcessState::Unknown, _) => return unknown("the agent process cannot be seen".into()),
        _ => {
            return Upstream {
                state: UpstreamState::Disconnected,
                ports: empty(),
                note: Some("the agent does not run".into()),
            };
        }
    };
    let inodes = match socket_inodes(procfs, &agent.pids) {
        Ok(inodes) => inodes,
        Err(note) => return unknown(note),
    };
    let wanted =
        |c: &TcpConn| inodes.contains(&c.inode) && ports.iter().any(|p| p.port == c.remote.port());
    let mut conns = Vec::new();
    for table in ["tcp", "tcp6"] {
        let path = procfs.pid_path(main, &format!("net/{table}"));
        match read_table(&path, wanted) {
            Ok(found) => conns.extend(found),
            Err(e) if e.kind() == ErrorKind::NotFound && table == "tcp6" => {}
            Err(e) => return unknown(format!("cannot read {}: {e}", path.display())),
        }
    }
    let ports: Vec<PortConnections> = ports
        .iter()
        .map(|p| {
            let mut remotes: Vec<SocketAddr> = conns
                .iter()
                .filter(|c| c.remote.port() == p.port && inodes.contains(&c.inode))
                .map(|c| canonical(c.remote))
                .collect();
            remotes.sort();
            remotes.dedup();
            PortConnections {
                port: p.port,
                name: p.name.clone(),
                remotes,
            }
        })
        .collect();
    let all = ports.iter().all(|p| !p.remotes.is_empty());
    let missing: Vec<String> = ports
        .iter()
        .filter(|p| p.remotes.is_empty())
        .map(|p| format!("{} ({})", p.port, p.name))
        .collect();
    Upstream {
        state: if all {
            UpstreamState::Connected
        } else {
            UpstreamState::Disconnected
        },
        note: (!missing.is_empty())
            .then(|| format!("no established connection to {}", missing.join(", "))),
        ports,
    }
}

/// IPv4-mapped IPv6 addresses shown as IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The established connections in the TCP table at `path` that `wanted`
/// keeps. Read a line at a time, never whole: a busy host's table (every
/// connection of the agent's network namespace) runs to hundreds of MB.
/// Only a regular file is read (`/proc`'s are; a FIFO in a `--path.procfs`
/// would wait for a writer), at most [`MAX_TABLE_BYTES`] of it.
fn read_table(
    path: &std::path::Path,
    wanted: impl Fn(&TcpConn) -> bool,
) -> std::io::Result<Vec<TcpConn>> {
    use std::io::{BufRead, Read};
    let file = crate::procfs::open_regular(path)?;
    let mut reader = std::io::BufReader::new(file.take(MAX_TABLE_BYTES));
    let (mut line, mut conns, mut header) = (Vec::new(), Vec::new(), true);
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE_BYTES)
            .read_until(b'\n', &mut line)?;
        if read == 0 {
            return Ok(conns);
        }
        if !line.ends_with(b"\n") && read as u64 == MAX_LINE_BYTES {
            reader.skip_until(b'\n')?;
            continue;
        }
        if std::mem::take(&mut header) {
            continue;
        }
        if let Some(conn) = std::str::from_utf8(&line).ok().and_then(parse_tcp_line)
            && wanted(&conn)
        {
            conns.push(conn);
        }
    }
}

fn socket_inodes(procfs: &Procfs, pids: &[u32]) -> Result<HashSet<u64>, String> {
    let mut inodes = HashSet::new();
    for &pid in pids {
        let dir = procfs.pid_path(pid, "fd");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => continue, // exited meanwhile
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                return Err(format!(
                    "cannot list {}: {e} (another user's process: needs CAP_DAC_READ_SEARCH \
                     and CAP_SYS_PTRACE)",
                    dir.display()
                ));
            }
            Err(e) => return Err(format!("cannot list {}: {e}", dir.display())),
        };
        for (n, entry) in entries.flatten().enumerate() {
            if n >= MAX_FDS {
                return Err(format!(
                    "more than {MAX_FDS} descriptors in {}",
                    dir.display()
                ));
            }
            match std::fs::read_link(entry.path()) {
                Ok(target) => {
                    if let Some(inode) = socket_inode(&target.to_string_lossy()) {
                        inodes.insert(inode);
                    }
                }
                Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                    return Err(format!(
                        "cannot read {}: {e} (another user's process: needs CAP_SYS_PTRACE)",
                        entry.path().display()
                    ));
                }
                Err(_) => {} // closed meanwhile
            }
        }
    }
    Ok(inodes)
}

/// `socket:[12345]` -> 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// One established TCP connection of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpConn {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub inode: u64,
}

/// An established connection from a line of a `/proc/net/tcp` or `tcp6`
/// table; `None` for any other line, or one that does not parse.
fn parse_tcp_line(line: &str) -> Option<TcpConn> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 10 || f[3] != TCP_ESTABLISHED {
        return None;
    }
    Some(TcpConn {
        local: parse_addr(f[1])?,
        remote: parse_addr(f[2])?,
        inode: f[9].parse().ok()?,
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits `:PORT` (IPv6). The kernel prints
/// each 32-bit word of the address as a number in host byte order.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word =
        |hex: &str| -> Option<[u8; 4]> { Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes()) };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(addr.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn tcp_tables_parse_on_this_machine_s_byte_order() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let local = client.local_addr().unwrap();
        let conns = read_table(Path::new("/proc/self/net/tcp"), |_| true).unwrap();
        assert!(
            conns
                .iter()
                .any(|c| c.local == local && c.remote.port() == port),
            "{conns:?}"
        );
    }

    #[test]
    fn ipv6_and_mapped_addresses_parse() {
        // ::ffff:10.0.0.5 port 28625, as printed on little-endian machines.
        let mapped = if cfg!(target_endian = "little") {
            "0000000000000000FFFF00000500000A:6FD1"
        } else {
            "00000000000000000000FFFF0A000005:6FD1"
        };
        let addr = parse_addr(mapped).unwrap();
        assert_eq!(canonical(addr), "10.0.0.5:28625".parse().unwrap());
        assert_eq!(parse_addr("zz:1"), None);
        assert_eq!(parse_addr("0100007F"), None);
        assert_eq!(parse_addr("0100007F:FFFFF"), None);
        assert_eq!(socket_inode("socket:[42]"), Some(42));
        assert_eq!(socket_inode("pipe:[42]"), None);
        for junk in [
            "  0: short line",
            "  1: 0100007F:1F90 0100007F:6FD1 01 x x x x x x notanumber",
        ] {
            assert_eq!(parse_tcp_line(junk), None);
        }
    }

    const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

    fn tcp_line(n: usize, remote_port: u16, inode: u64) -> String {
        format!(
            "{n:4}: 0100007F:1F90 0100007F:{remote_port:04X} 01 00000000:00000000 00:00000000 00000000 0 0 {inode} 1 0000000000000000 20 4 30 10 -1\n"
        )
    }

    /// A table is read a line at a time and keeps only what is wanted; a
    /// line longer than any the kernel writes is skipped, not grown into.
    #[test]
    fn a_large_table_keeps_only_the_wanted_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tcp");
        let mut text = String::from(HEADER);
        for n in 0..100_000 {
            text.push_str(&tcp_line(n, 80, 1_000_000 + n as u64));
        }
        text.push_str(&"x".repeat(1 << 20));
        text.push('\n');
        text.push_str(&tcp_line(7, 48668, 42));
        std::fs::write(&path, text).unwrap();
        let conns = read_table(&path, |c| c.inode == 42).unwrap();
        assert_eq!(conns.len(), 1, "{conns:?}");
        assert_eq!(conns[0].remote.port(), 48668);
    }

    /// Only a regular file is read: `/dev/zero` was read to the 256 MiB
    /// cap, and a FIFO waited for a writer for ever.
    #[test]
    fn a_table_that_is_not_a_regular_file_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("tcp");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        for path in [Path::new("/dev/zero"), fifo.as_path()] {
            let (done, result) = std::sync::mpsc::channel();
            let owned = path.to_path_buf();
            std::thread::spawn(move || done.send(read_table(&owned, |_| true).map(|c| c.len())));
            let got = result
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("returned within 10 s");
            let err = got.expect_err("refused");
            assert!(
                err.to_string().contains("not a regular file"),
                "{path:?}: {err}"
            );
        }
    }
}
