//! Noticing that a file changed: the one check behind re-reading a hosts
//! file each cycle and the web configuration on each request; and reading a
//! changed file only once it is written whole ([`FileWatch::read_when_still`]).
//!
//! A file is taken as changed when it appears or disappears, when another
//! file takes its name, or when its length, its modification time or its
//! status change time differs from what was seen last. The last is set by
//! the kernel on every write, rename or `utime`: a file written anew at the
//! same length with its old modification time put back (`cp -p`,
//! `rsync -a`, `touch -r`) still changes it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What was last seen of a file (device, inode, length, modification and
/// status change times in nanoseconds), or nothing when it could not be
/// looked at.
type Seen = Option<(u64, u64, u64, i128, i128)>;

/// Watches one file between looks.
#[derive(Debug, Default)]
pub(crate) struct FileWatch {
    last: Option<Seen>,
    /// Since when [`FileWatch::read_when_still`] has found the file being
    /// written, look after look.
    busy_since: Option<Instant>,
}

impl FileWatch {
    /// A watch that has looked at `path` once (so it changes from now on).
    pub(crate) fn seen_now(path: &Path) -> FileWatch {
        FileWatch {
            last: Some(look(path)),
            busy_since: None,
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

    /// Reads `path` with `read` when it changed since the last read, but
    /// only as a whole file: once nothing has written to it for `still` (its
    /// status change time, which every write sets, that far in the past),
    /// and only when it did not change while it was read. Nothing waits: a
    /// file written too recently, or changing under each of a few reads, is
    /// [`Reading::Busy`], and the next look tries again. A file found
    /// written look after look for `patience` (touched every second, or
    /// written for ever) is read without being still, though still only when
    /// it did not change while read: it is not kept out for good. The first
    /// read of a watch does not ask for the file to be still (at start-up
    /// the file was just checked whole). A read that fails is remembered
    /// like one that succeeds: the file is read again once it changes.
    pub(crate) fn read_when_still<T>(
        &mut self,
        path: &Path,
        still: Duration,
        patience: Duration,
        mut read: impl FnMut() -> T,
    ) -> Reading<T> {
        let first = self.last.is_none();
        let waited = self
            .busy_since
            .is_some_and(|since| since.elapsed() >= patience);
        for _ in 0..READS_WHILE_CHANGING {
            let before = look(path);
            if self.last == Some(before) {
                self.busy_since = None;
                return Reading::Unchanged;
            }
            if !first && !waited && written_within(before, still) {
                break;
            }
            let value = read();
            if look(path) == before {
                self.last = Some(before);
                self.busy_since = None;
                return Reading::Read(value);
            }
        }
        self.busy_since.get_or_insert_with(Instant::now);
        Reading::Busy
    }
}

/// Reads of a file that changes under each of them before a look gives up
/// until the next one.
const READS_WHILE_CHANGING: usize = 3;

/// What [`FileWatch::read_when_still`] did.
#[derive(Debug)]
pub(crate) enum Reading<T> {
    /// The file is as it was at the last read: not read.
    Unchanged,
    /// The file changed and was read whole.
    Read(T),
    /// The file changed but was written too recently, or kept changing
    /// while read: not taken (it is read once it is still).
    Busy,
}

/// Whether a file was last written less than `still` ago (it may still be
/// being written). A status change time more than `still` ahead of the clock
/// (the clock was set back) tells nothing: the file is taken as still.
fn written_within(seen: Seen, still: Duration) -> bool {
    let Some((.., changed)) = seen else {
        return false;
    };
    let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) else {
        return false;
    };
    let still = still.as_nanos() as i128;
    (-still..still).contains(&(now.as_nanos() as i128 - changed))
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

    const STILL: Duration = Duration::from_secs(30);

    #[test]
    fn a_changed_file_is_read_once_it_has_gone_unwritten_for_a_while() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts.txt");
        std::fs::write(&path, "0:10.0.0.1\n").unwrap();
        let read = || std::fs::read_to_string(&path).unwrap();
        let mut watch = FileWatch::default();
        // The first read does not ask: the file was just checked whole.
        let first = watch.read_when_still(&path, STILL, STILL, read);
        assert!(
            matches!(first, Reading::Read(ref t) if t == "0:10.0.0.1\n"),
            "{first:?}"
        );
        let again = watch.read_when_still(&path, STILL, STILL, read);
        assert!(matches!(again, Reading::Unchanged), "{again:?}");
        // Written just now: not read while it may still be being written.
        std::fs::write(&path, "0:10.0.0.2\n0:10.0.").unwrap();
        let busy = watch.read_when_still(&path, STILL, STILL, read);
        assert!(matches!(busy, Reading::Busy), "{busy:?}");
        // Once it has been still long enough (here no time at all) it is
        // read, though nothing was read in between.
        let whole = watch.read_when_still(&path, Duration::ZERO, STILL, read);
        assert!(
            matches!(whole, Reading::Read(ref t) if t.ends_with("0:10.0.")),
            "{whole:?}"
        );
    }

    #[test]
    fn a_file_written_look_after_look_is_read_once_patience_runs_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts.txt");
        std::fs::write(&path, "0:10.0.0.1\n").unwrap();
        let read = || std::fs::read_to_string(&path).unwrap();
        let mut watch = FileWatch::default();
        assert!(matches!(
            watch.read_when_still(&path, STILL, STILL, read),
            Reading::Read(_)
        ));
        std::fs::write(&path, "0:10.0.0.2\n").unwrap();
        // No patience: one look that finds it being written is enough.
        let patience = Duration::ZERO;
        let busy = watch.read_when_still(&path, STILL, patience, read);
        assert!(matches!(busy, Reading::Busy), "{busy:?}");
        // Touched again: still being written, but found so for the patience.
        std::fs::File::options()
            .append(true)
            .open(&path)
            .unwrap()
            .set_modified(std::time::SystemTime::now())
            .unwrap();
        let read_anyway = watch.read_when_still(&path, STILL, patience, read);
        assert!(
            matches!(read_anyway, Reading::Read(ref t) if t == "0:10.0.0.2\n"),
            "{read_anyway:?}"
        );
        // And the wait starts again with the next write.
        std::fs::write(&path, "0:10.0.0.3\n").unwrap();
        assert!(matches!(
            watch.read_when_still(&path, STILL, patience, read),
            Reading::Busy
        ));
    }

    #[test]
    fn a_file_that_changes_while_it_is_read_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts.txt");
        std::fs::write(&path, "0:10.0.0.1\n").unwrap();
        let mut watch = FileWatch::default();
        let mut reads = 0;
        let racing = watch.read_when_still(&path, Duration::ZERO, STILL, || {
            reads += 1;
            let mut file = std::fs::File::options().append(true).open(&path).unwrap();
            std::io::Write::write_all(&mut file, b"0:10.0.0.9\n").unwrap();
        });
        assert!(matches!(racing, Reading::Busy), "{racing:?}");
        assert_eq!(reads, READS_WHILE_CHANGING);
        // Not remembered: the next look reads it.
        let next = watch.read_when_still(&path, Duration::ZERO, STILL, || ());
        assert!(matches!(next, Reading::Read(())), "{next:?}");
    }
}
