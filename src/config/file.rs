//! Reading a file the configuration names, bounded: the configuration file,
//! the web configuration, hosts files, PEM files and secret files.
//!
//! Only regular files are read (a FIFO, a device, a directory or a socket is
//! refused before it is opened, and a file is opened without waiting and
//! looked at again through its descriptor, so a read can never wait for a
//! writer or stream for ever), at most a size cap of them, with a cap on the
//! length of a line. Callers that run on the async runtime read through
//! `spawn_blocking`; this module only does the blocking read itself.

use std::io::Read;
use std::path::Path;

use crate::procfs::{file_kind, open_regular};

/// How much of a file may be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileLimits {
    /// Largest file, in bytes.
    pub(crate) max_bytes: u64,
    /// Longest line, in bytes (its line break not counted).
    pub(crate) max_line: usize,
}

/// The exporter's configuration file.
pub(crate) const YAML_FILE: FileLimits = FileLimits {
    max_bytes: 128 << 20,
    max_line: 1 << 20,
};

/// A hosts file: one short host per line.
pub(crate) const HOSTS_FILE: FileLimits = FileLimits {
    max_bytes: 64 << 20,
    max_line: 4096,
};

/// The web configuration, PEM certificates and keys, secret files.
pub(crate) const SMALL_FILE: FileLimits = FileLimits {
    max_bytes: 1 << 20,
    max_line: 64 << 10,
};

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Opening, looking at or reading it failed.
    #[error("cannot be read: {0}")]
    Io(#[from] std::io::Error),
    /// Not a regular file.
    #[error("is {0}, not a regular file")]
    NotRegular(&'static str),
    /// Larger than the cap.
    #[error("is larger than the limit of {max} bytes")]
    TooLarge {
        /// The cap.
        max: u64,
    },
    /// A line longer than the cap.
    #[error("line {line} is longer than the limit of {max} bytes")]
    LineTooLong {
        /// 1-based line number.
        line: usize,
        /// The cap.
        max: usize,
    },
    /// Not UTF-8 text.
    #[error("is not UTF-8 text")]
    NotText,
}

/// The bytes of a regular file within `limits`.
pub(crate) fn read_bytes(path: &Path, limits: FileLimits) -> Result<Vec<u8>, FileError> {
    // Looked at before it is opened: opening a FIFO waits for a writer.
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(FileError::NotRegular(file_kind(meta.file_type())));
    }
    if meta.len() > limits.max_bytes {
        return Err(FileError::TooLarge {
            max: limits.max_bytes,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // Opened without waiting and looked at again through the descriptor:
    // a FIFO swapped in since the look above is refused, not waited on. A
    // file that grows while it is read is cut at the cap, and refused.
    open_regular(path)?
        .take(limits.max_bytes + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limits.max_bytes {
        return Err(FileError::TooLarge {
            max: limits.max_bytes,
        });
    }
    check_lines(&bytes, limits.max_line)?;
    Ok(bytes)
}

/// The text of a regular file within `limits`.
pub(crate) fn read_text(path: &Path, limits: FileLimits) -> Result<String, FileError> {
    String::from_utf8(read_bytes(path, limits)?).map_err(|_| FileError::NotText)
}

fn check_lines(bytes: &[u8], max: usize) -> Result<(), FileError> {
    match bytes
        .split(|b| *b == b'\n')
        .position(|line| line.len() > max)
    {
        Some(index) => Err(FileError::LineTooLong {
            line: index + 1,
            max,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_caps_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let small = FileLimits {
            max_bytes: 100,
            max_line: 10,
        };
        let good = dir.path().join("good");
        std::fs::write(&good, "0:10.0.0.1\nabc\n").unwrap();
        assert_eq!(read_text(&good, small).unwrap(), "0:10.0.0.1\nabc\n");
        let long = dir.path().join("long");
        std::fs::write(&long, "ok\n0123456789x\n").unwrap();
        assert!(matches!(
            read_text(&long, small),
            Err(FileError::LineTooLong { line: 2, max: 10 })
        ));
        let big = dir.path().join("big");
        std::fs::File::create(&big).unwrap().set_len(101).unwrap();
        assert!(matches!(
            read_bytes(&big, small),
            Err(FileError::TooLarge { max: 100 })
        ));
        let err = read_bytes(dir.path(), small).unwrap_err();
        assert_eq!(err.to_string(), "is a directory, not a regular file");
        let err = read_bytes(Path::new("/dev/zero"), small).unwrap_err();
        assert_eq!(err.to_string(), "is a character device, not a regular file");
        let binary = dir.path().join("binary");
        std::fs::write(&binary, [0xff, 0xfe]).unwrap();
        assert!(matches!(read_text(&binary, small), Err(FileError::NotText)));
        assert!(matches!(
            read_bytes(&dir.path().join("missing"), small),
            Err(FileError::Io(_))
        ));
    }

    /// A path flipped between a regular file and a FIFO while it is read
    /// (a symlink replaced over and over) is read or refused, never waited
    /// on: it was looked at by its path, then opened by it, and a FIFO
    /// swapped in between held the reader (a reload) for ever.
    #[test]
    fn a_fifo_swapped_in_after_the_look_is_never_waited_on() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let (regular, fifo) = (dir.path().join("regular"), dir.path().join("fifo"));
        std::fs::write(&regular, "0:10.0.0.1\n").unwrap();
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        let path = dir.path().join("hosts");
        std::os::unix::fs::symlink(&regular, &path).unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flipper = {
            let (stop, path, next) = (stop.clone(), path.clone(), dir.path().join("next"));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for target in [&fifo, &regular] {
                        std::os::unix::fs::symlink(target, &next).unwrap();
                        std::fs::rename(&next, &path).unwrap();
                    }
                }
            })
        };
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let read = (0..20_000)
                .filter(|_| read_bytes(&path, HOSTS_FILE).is_ok())
                .count();
            done.send(read)
        });
        let read = finished.recv_timeout(std::time::Duration::from_secs(60));
        stop.store(true, Ordering::Relaxed);
        flipper.join().unwrap();
        let read = read.expect("20,000 reads within 60 s: none waited on a FIFO");
        assert!(read > 0, "the regular file was never read");
    }
}
