//! Writing the node_exporter textfile-collector file atomically: the body
//! goes to a temporary file in the same directory (a hidden name ending in
//! `.tmp`, which node_exporter ignores, as it reads only `*.prom`), is
//! flushed to disk, and is renamed over the target, so node_exporter never
//! reads half a file ([`crate::outfile`]).
//!
//! Owns the file handling only; what is written is [`super::metrics`]'s.

use std::path::{Path, PathBuf};

/// Why the file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum TextfileError {
    /// The path has no file name or does not end in `.prom`.
    #[error("--textfile.path {0}: node_exporter reads only files ending in .prom")]
    NotProm(PathBuf),
    /// Writing the temporary file or renaming it failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Checks that `path` is usable before the first write.
pub(crate) fn validate(path: &Path) -> Result<(), TextfileError> {
    let is_prom = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".prom") && n != ".prom");
    if is_prom {
        Ok(())
    } else {
        Err(TextfileError::NotProm(path.to_path_buf()))
    }
}

/// Replaces `path` with `body` atomically (a temporary file renamed over
/// it, [`crate::outfile`]). Mode 0644: node_exporter often runs as another
/// user.
pub(crate) fn write(path: &Path, body: &str) -> Result<(), TextfileError> {
    validate(path)?;
    crate::outfile::replace(path, body.as_bytes(), 0o644).map_err(|source| TextfileError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn only_prom_files_are_written_and_nothing_is_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        assert!(validate(&dir.path().join("gse.txt")).is_err());
        assert!(validate(&dir.path().join(".prom")).is_err());
        let target = dir.path().join("gse_node.prom");
        write(&target, "a 1\n").unwrap();
        write(&target, "a 2\n").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "a 2\n");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
        let missing = dir.path().join("no/such/dir/gse_node.prom");
        assert!(matches!(
            write(&missing, "x"),
            Err(TextfileError::Io { .. })
        ));
    }
}
