//! Writing a file where a flag says (`man --dir`, `simulate --hosts-out`,
//! `node --textfile.path`), whole or not at all.
//!
//! The bytes go to a new temporary file beside the target, created
//! exclusively (so nothing already there, a symlink or a FIFO planted under
//! that name, is opened or followed), are flushed to disk, and the
//! temporary file is renamed over the target. A reader never sees half a
//! file; whatever is at the target (an old file, a FIFO, a symlink) is
//! replaced, never opened or written through, so a FIFO cannot make the
//! write wait for ever and a symlink cannot send it elsewhere; a directory
//! there is an error.
//!
//! Owns only the file handling; what is written is the caller's.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Temporary names tried before giving up (another writer may hold one).
const ATTEMPTS: u32 = 8;

/// The most of the target's name a temporary name repeats: with the dot,
/// the process id, the attempt and `.tmp` it stays within the 255 bytes a
/// file name may have, whatever the target's name.
const NAME_KEPT: usize = 200;

/// Replaces `path` with `bytes`, mode `mode` whatever the umask.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let (tmp, mut file) = create_beside(path, mode)?;
    let written = (|| {
        file.write_all(bytes)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// A new temporary file in `path`'s directory, named after it and hidden.
fn create_beside(path: &Path, mode: u32) -> io::Result<(PathBuf, fs::File)> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "names no file"))?
        .to_string_lossy();
    let name = &name[..name.floor_char_boundary(NAME_KEPT)];
    let pid = std::process::id();
    let mut last = None;
    for attempt in 0..ATTEMPTS {
        let tmp = path.with_file_name(format!(".{name}.{pid}.{attempt}.tmp"));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => last = Some(err),
            Err(err) => return Err(err),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no temporary name left")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Runs `replace` on a thread and fails the test if it has not returned
    /// within a deadline (a FIFO opened for writing would wait for ever).
    fn replace_within_deadline(path: &Path, bytes: &'static [u8]) -> io::Result<()> {
        let (done, result) = mpsc::channel();
        let path = path.to_path_buf();
        std::thread::spawn(move || done.send(replace(&path, bytes, 0o644)));
        result
            .recv_timeout(Duration::from_secs(10))
            .expect("replace returned within 10 s")
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn an_old_file_a_fifo_and_a_symlink_are_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.1");
        fs::write(&old, "old text").unwrap();
        let fifo = dir.path().join("fifo.1");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let victim = dir.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        let link = dir.path().join("link.1");
        std::os::unix::fs::symlink(&victim, &link).unwrap();

        for target in [&old, &fifo, &link] {
            replace_within_deadline(target, b"new text").unwrap();
            let meta = fs::symlink_metadata(target).unwrap();
            assert!(meta.file_type().is_file(), "{target:?} is a regular file");
            assert!(!meta.file_type().is_fifo());
            assert_eq!(meta.permissions().mode() & 0o777, 0o644);
            assert_eq!(fs::read_to_string(target).unwrap(), "new text");
        }
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(names(dir.path()), ["fifo.1", "link.1", "old.1", "victim"]);
    }

    #[test]
    fn a_directory_in_the_way_or_a_missing_parent_is_an_error_leaving_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let taken = dir.path().join("page.1");
        fs::create_dir(&taken).unwrap();
        fs::write(taken.join("inside"), "x").unwrap();
        assert!(replace_within_deadline(&taken, b"text").is_err());
        assert!(replace_within_deadline(&dir.path().join("no/such/page.1"), b"text").is_err());
        assert!(replace_within_deadline(Path::new("/"), b"text").is_err());
        assert_eq!(names(dir.path()), ["page.1"]);
        assert_eq!(names(&taken), ["inside"]);
    }

    #[test]
    fn a_target_named_with_the_most_bytes_a_name_may_have_is_written() {
        let dir = tempfile::tempdir().unwrap();
        for name in [format!("{}.prom", "a".repeat(250)), "é".repeat(127)] {
            let target = dir.path().join(&name);
            replace_within_deadline(&target, b"x 1\n").unwrap();
            assert_eq!(fs::read_to_string(&target).unwrap(), "x 1\n");
        }
        assert_eq!(names(dir.path()).len(), 2);
    }

    #[test]
    fn a_temporary_name_already_taken_is_skipped_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("hosts");
        let victim = dir.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        let planted = dir
            .path()
            .join(format!(".hosts.{}.0.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        replace_within_deadline(&target, b"0:10.0.0.1\n").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "0:10.0.0.1\n");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
    }
}
