//! Unix socket queues from the kernel's `NETLINK_SOCK_DIAG` interface, the
//! source of `ss -x`: one dump request for every `AF_UNIX` socket of this
//! network namespace with its state, the file it is bound to (`UDIAG_SHOW_VFS`)
//! and its queue lengths (`UDIAG_SHOW_RQLEN`).
//!
//! Owns encoding the request and decoding the reply, by hand and bounds
//! checked, over a `socket2` socket: no `unsafe` here, and nothing beyond a
//! plain netlink socket is needed (no capability; unprivileged users may
//! dump unix sockets). Never interprets what the queues mean for GSE (that
//! is [`super::ipc`]'s).
//!
//! Queue semantics (`net/unix/diag.c`, `sk_diag_show_rqlen`): for a listening
//! socket `rqueue` is the number of connections waiting to be accepted and
//! `wqueue` the backlog limit; for a connected one `rqueue` is the bytes
//! waiting to be read and `wqueue` the memory charged for bytes written that
//! the peer has not read yet (skb truesize, so above the payload).

use std::io::Read;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

const AF_NETLINK: i32 = 16;
const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x100 | 0x200;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const AF_UNIX: u8 = 1;
const UDIAG_SHOW_VFS: u32 = 0x2;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_VFS: u16 = 1;
const UNIX_DIAG_RQLEN: u16 = 4;
const NLMSG_HDRLEN: usize = 16;
const UNIX_DIAG_MSG_LEN: usize = 16;

/// The kernel's `TCP_LISTEN`, reused for unix sockets.
pub(crate) const STATE_LISTEN: u8 = 10;
/// The kernel's `TCP_ESTABLISHED`, reused for connected unix sockets.
pub(crate) const STATE_ESTABLISHED: u8 = 1;

/// Most reply bytes read for one dump (a host with 100k unix sockets needs
/// about 6 MiB).
const MAX_REPLY_BYTES: usize = 64 << 20;

/// One unix socket as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnixSocket {
    /// `SOCK_STREAM` 1, `SOCK_DGRAM` 2, `SOCK_SEQPACKET` 5.
    pub kind: u8,
    /// [`STATE_LISTEN`], [`STATE_ESTABLISHED`], or another TCP state number.
    pub state: u8,
    /// The socket's inode (as in `/proc/<pid>/fd` links `socket:[N]`).
    pub inode: u32,
    /// The bound file's inode and device (major, minor), when bound to a path.
    pub vfs: Option<(u32, (u32, u32))>,
    /// `(rqueue, wqueue)`, see the module documentation.
    pub queues: Option<(u32, u32)>,
}

/// Why the dump failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DiagError {
    /// The netlink socket could not be made or used (no `AF_NETLINK` in a
    /// sandbox, an old kernel without unix diag).
    #[error("sock_diag netlink socket: {0}")]
    Io(#[from] std::io::Error),
    /// The kernel answered with an error code.
    #[error("sock_diag: the kernel answered errno {0}")]
    Kernel(i32),
    /// The reply does not parse.
    #[error("sock_diag: malformed reply ({0})")]
    Malformed(&'static str),
    /// The reply is larger than [`MAX_REPLY_BYTES`] or took too long.
    #[error("sock_diag: reply too large or too slow")]
    Unbounded,
}

/// Dumps every unix socket of this network namespace.
pub(crate) fn dump_unix(timeout: Duration) -> Result<Vec<UnixSocket>, DiagError> {
    let socket = Socket::new(
        Domain::from(AF_NETLINK),
        Type::DGRAM,
        Some(Protocol::from(NETLINK_SOCK_DIAG)),
    )?;
    socket.set_read_timeout(Some(timeout))?;
    // No address: netlink sends to the kernel (port id 0) by default.
    socket.send(&request(1))?;
    let deadline = Instant::now() + timeout;
    let mut sockets = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0usize;
    loop {
        let n = (&socket).read(&mut buf)?;
        total += n;
        if total > MAX_REPLY_BYTES || Instant::now() > deadline {
            return Err(DiagError::Unbounded);
        }
        if parse_batch(&buf[..n], &mut sockets)? {
            return Ok(sockets);
        }
    }
}

/// `nlmsghdr` + `unix_diag_req` asking for every state, with VFS and RQLEN.
fn request(seq: u32) -> Vec<u8> {
    let len = (NLMSG_HDRLEN + 24) as u32;
    let mut out = Vec::with_capacity(len as usize);
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    out.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
    out.push(AF_UNIX); // sdiag_family
    out.push(0); // sdiag_protocol
    out.extend_from_slice(&0u16.to_ne_bytes()); // pad
    out.extend_from_slice(&u32::MAX.to_ne_bytes()); // udiag_states: all
    out.extend_from_slice(&0u32.to_ne_bytes()); // udiag_ino
    out.extend_from_slice(&(UDIAG_SHOW_VFS | UDIAG_SHOW_RQLEN).to_ne_bytes());
    out.extend_from_slice(&u32::MAX.to_ne_bytes()); // udiag_cookie: none
    out.extend_from_slice(&u32::MAX.to_ne_bytes());
    out
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Parses one datagram of netlink messages into `out`; true at `NLMSG_DONE`.
fn parse_batch(mut bytes: &[u8], out: &mut Vec<UnixSocket>) -> Result<bool, DiagError> {
    while bytes.len() >= NLMSG_HDRLEN {
        let len = u32_at(bytes, 0).ok_or(DiagError::Malformed("header"))? as usize;
        let kind = u16_at(bytes, 4).ok_or(DiagError::Malformed("header"))?;
        if len < NLMSG_HDRLEN || len > bytes.len() {
            return Err(DiagError::Malformed("message length"));
        }
        let payload = &bytes[NLMSG_HDRLEN..len];
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = u32_at(payload, 0).ok_or(DiagError::Malformed("error"))? as i32;
                if errno != 0 {
                    return Err(DiagError::Kernel(-errno));
                }
            }
            SOCK_DIAG_BY_FAMILY => out.push(parse_socket(payload)?),
            _ => {}
        }
        bytes = &bytes[align4(len).min(bytes.len())..];
    }
    Ok(false)
}

/// `unix_diag_msg` followed by attributes.
fn parse_socket(payload: &[u8]) -> Result<UnixSocket, DiagError> {
    if payload.len() < UNIX_DIAG_MSG_LEN {
        return Err(DiagError::Malformed("unix_diag_msg"));
    }
    let mut socket = UnixSocket {
        kind: payload[1],
        state: payload[2],
        inode: u32_at(payload, 4).ok_or(DiagError::Malformed("inode"))?,
        vfs: None,
        queues: None,
    };
    let mut attrs = &payload[UNIX_DIAG_MSG_LEN..];
    while attrs.len() >= 4 {
        let len = u16_at(attrs, 0).ok_or(DiagError::Malformed("attribute"))? as usize;
        let kind = u16_at(attrs, 2).ok_or(DiagError::Malformed("attribute"))?;
        if len < 4 || len > attrs.len() {
            return Err(DiagError::Malformed("attribute length"));
        }
        let data = &attrs[4..len];
        match kind {
            UNIX_DIAG_VFS => {
                let ino = u32_at(data, 0).ok_or(DiagError::Malformed("vfs"))?;
                let dev = u32_at(data, 4).ok_or(DiagError::Malformed("vfs"))?;
                // The kernel's internal dev_t: 12 bits major, 20 bits minor.
                socket.vfs = Some((ino, (dev >> 20, dev & 0xf_ffff)));
            }
            UNIX_DIAG_RQLEN => {
                let r = u32_at(data, 0).ok_or(DiagError::Malformed("rqlen"))?;
                let w = u32_at(data, 4).ok_or(DiagError::Malformed("rqlen"))?;
                socket.queues = Some((r, w));
            }
            _ => {}
        }
        attrs = &attrs[align4(len).min(attrs.len())..];
    }
    Ok(socket)
}

/// Major and minor of a `st_dev` as user space sees it (glibc's encoding).
pub(crate) fn dev_major_minor(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::net::{UnixListener, UnixStream};

    fn message(kind: u16, payload: &[u8]) -> Vec<u8> {
        let len = (NLMSG_HDRLEN + payload.len()) as u32;
        let mut out = len.to_ne_bytes().to_vec();
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&[0; 10]);
        out.extend_from_slice(payload);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out
    }

    #[test]
    fn hostile_replies_are_errors_not_panics() {
        let mut out = Vec::new();
        // Truncated header, lengths past the end, short payloads.
        assert!(!parse_batch(&[1, 2, 3], &mut out).unwrap());
        let mut lying = message(SOCK_DIAG_BY_FAMILY, &[0; 16]);
        lying[0] = 200;
        assert!(parse_batch(&lying, &mut out).is_err());
        assert!(parse_batch(&message(SOCK_DIAG_BY_FAMILY, &[0; 3]), &mut out).is_err());
        let mut attr = vec![0u8; 16];
        attr.extend_from_slice(&[40, 0, 1, 0, 0, 0, 0, 0]);
        assert!(parse_batch(&message(SOCK_DIAG_BY_FAMILY, &attr), &mut out).is_err());
        let mut short_vfs = vec![0u8; 16];
        short_vfs.extend_from_slice(&[6, 0, 1, 0, 9, 9]);
        assert!(parse_batch(&message(SOCK_DIAG_BY_FAMILY, &short_vfs), &mut out).is_err());
        let errno = message(NLMSG_ERROR, &(-13i32).to_ne_bytes());
        assert!(matches!(
            parse_batch(&errno, &mut out),
            Err(DiagError::Kernel(13))
        ));
        assert!(parse_batch(&message(NLMSG_DONE, &[0; 4]), &mut out).unwrap());
        assert!(out.is_empty());
    }

    #[test]
    fn a_listener_and_its_unread_bytes_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipc.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let mut client = UnixStream::connect(&path).unwrap();
        let (_server_side, _) = listener.accept().unwrap();
        std::io::Write::write_all(&mut client, &[7u8; 1000]).unwrap();
        let pending = UnixStream::connect(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let key = (meta.ino() as u32, dev_major_minor(meta.dev()));
        let sockets = dump_unix(Duration::from_secs(5)).unwrap();
        let ours: Vec<&UnixSocket> = sockets.iter().filter(|s| s.vfs == Some(key)).collect();
        let listening = ours.iter().find(|s| s.state == STATE_LISTEN).unwrap();
        assert_eq!(
            listening.queues.unwrap().0,
            1,
            "one connection not accepted"
        );
        let accepted = ours.iter().find(|s| s.state == STATE_ESTABLISHED).unwrap();
        assert_eq!(accepted.queues.unwrap().0, 1000, "bytes not read");
        drop(pending);
    }
}
