//! The state directory and atomic writes into it.
//!
//! Every file the agent persists is written whole or not at all: a temp file in the same
//! directory, fsynced, given its mode, renamed over the target, and the directory fsynced so the
//! rename itself survives a power cut. Thin clients lose power without warning.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A persisted file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}", path.display())]
pub struct WriteError {
    /// The file (or directory) at fault.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Creates the state directory (mode 0700, parents as needed) if it is missing.
pub fn ensure_dir(dir: &Path) -> Result<(), WriteError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| WriteError {
            path: dir.to_owned(),
            source,
        })
}

/// Writes `bytes` to `dir/name` atomically with `mode`, creating `dir` if needed.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<(), WriteError> {
    ensure_dir(dir)?;
    let target = dir.join(name);
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let fail = |path: &Path| {
        let path = path.to_owned();
        move |source| WriteError { path, source }
    };
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temp)
            .map_err(fail(&temp))?;
        file.write_all(bytes).map_err(fail(&temp))?;
        // The umask may have narrowed the mode at creation; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(fail(&temp))?;
        file.sync_all().map_err(fail(&temp))?;
        fs::rename(&temp, &target).map_err(fail(&target))?;
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(fail(dir))
    })();
    if result.is_err() {
        // Best effort: a leftover temp file is harmless, but tidy is better.
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_files_with_the_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a/b");
        write_atomically(&state, "x.json", b"one", 0o600).unwrap();
        write_atomically(&state, "x.json", b"two", 0o600).unwrap();
        assert_eq!(fs::read(state.join("x.json")).unwrap(), b"two");
        let mode = fs::metadata(state.join("x.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let names: Vec<_> = fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.json")]);
    }

    #[test]
    fn a_directory_that_cannot_be_made_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, b"").unwrap();
        let error = write_atomically(&blocker.join("sub"), "x", b"", 0o600).unwrap_err();
        assert!(error.to_string().contains("file/sub"), "{error}");
    }
}
