//! Noticing that a file changed: the one check behind re-reading a hosts
//! file each cycle and the web configuration on each request.
//!
//! A file is taken as changed when its modification time or length differs
//! from what was seen last, or when it appears or disappears.

use std::path::Path;
use std::time::SystemTime;

/// What was last seen of a file: its modification time and length, or
/// nothing when it could not be looked at.
type Seen = Option<(SystemTime, u64)>;

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
    Some((meta.modified().ok()?, meta.len()))
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
}
