//! Noticing that a file changed: the one check behind re-reading a hosts
//! file each cycle and the web configuration on each request.
//!
//! A file is taken as changed when it appears or disappears, when another
//! file takes its name, or when its length, its modification time or its
//! status change time differs from what was seen last. The last is set by
//! the kernel on every write, rename or `utime`: a file written anew at the
//! same length with its old modification time put back (`cp -p`,
//! `rsync -a`, `touch -r`) still changes it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What was last seen of a file (device, inode, length, modification and
/// status change times in nanoseconds), or nothing when it could not be
/// looked at.
type Seen = Option<(u64, u64, u64, i128, i128)>;

/// Watches one file between looks.
#[derive(Debug, Default)]
pub(crate) struct FileWatch {
    last: Option<Seen>,
}

impl FileWatch {
    /// A watch that has looked at `path` once (so it changes from now on).
    pub(crate) fn seen_now(path: &Path) -> FileWatch {
        FileWatch {
            last: Some(look(path)),
        }
    }

    /// Whether `path` changed since the last look (always true for the first
    /// look); remembers what it saw.
    pub(crate) fn changed(&mut self, path: &Path) -> bool {
        let now = look(path);
        if self.last == Some(now) {
            return false;
        }
        self.last = Some(now);
        true
    }
}

fn look(path: &Path) -> Seen {
    let meta = std::fs::metadata(path).ok()?;
    let nanos = |secs: i64, nsecs: i64| i128::from(secs) * 1_000_000_000 + i128::from(nsecs);
    Some((
        meta.dev(),
        meta.ino(),
        meta.len(),
        nanos(meta.mtime(), meta.mtime_nsec()),
        nanos(meta.ctime(), meta.ctime_nsec()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_changes_when_written_appears_or_disappears() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts.txt");
        let mut watch = FileWatch::default();
        assert!(watch.changed(&path), "the first look is a change");
        assert!(!watch.changed(&path), "still missing");
        std::fs::write(&path, "0:10.0.0.1\n").unwrap();
        assert!(watch.changed(&path), "appeared");
        assert!(!watch.changed(&path));
        std::fs::write(&path, "0:10.0.0.1\n0:10.0.0.2\n").unwrap();
        assert!(watch.changed(&path), "longer");
        std::fs::remove_file(&path).unwrap();
        assert!(watch.changed(&path), "gone");
        let mut seen = FileWatch::seen_now(&path);
        assert!(!seen.changed(&path));
    }

    #[test]
    fn a_file_replaced_at_the_same_length_with_its_old_time_put_back_changes() {
        // As `cp -p`, `rsync -a` or `touch -r` leave it: the same length and
        // modification time, other bytes.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts.txt");
        std::fs::write(&path, "0:10.0.0.1\n").unwrap();
        let old = std::fs::metadata(&path).unwrap().modified().unwrap();
        let write_as_old = |path: &Path, text: &str| {
            std::fs::write(path, text).unwrap();
            let file = std::fs::File::options().write(true).open(path).unwrap();
            file.set_modified(old).unwrap();
        };
        let mut watch = FileWatch::seen_now(&path);
        // Written in place.
        write_as_old(&path, "0:10.0.0.2\n");
        assert!(watch.changed(&path), "rewritten in place");
        // Another file moved in under the name.
        let other = dir.path().join("hosts.new");
        write_as_old(&other, "0:10.0.0.3\n");
        assert!(!watch.changed(&path));
        std::fs::rename(&other, &path).unwrap();
        assert!(watch.changed(&path), "replaced by another file");
        assert!(!watch.changed(&path));
    }
}
