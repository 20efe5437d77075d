//! Writing files that hold secrets: mode 0600 from the first byte, written whole or not at all.
//!
//! Each file is written to a temporary file in the same folder, fsynced, then moved into place
//! (refusing to replace an existing file unless told to), and the folder is fsynced so the rename
//! survives a crash. A reader never sees a half-written file.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why a file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The target exists and replacing it was not asked for.
    #[error("{} already exists (use --force to replace it)", .0.display())]
    Exists(PathBuf),
    /// Any I/O failure, with the path it happened on.
    #[error("cannot write {}", path.display())]
    Io {
        /// The file or folder at fault.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

/// Writes `bytes` to `path` with mode 0600, atomically. With `replace` false, an existing file is
/// left alone and [`WriteError::Exists`] returned.
pub fn write_private(path: &Path, bytes: &[u8], replace: bool) -> Result<(), WriteError> {
    let io = |source| WriteError::Io {
        path: path.to_owned(),
        source,
    };
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    if !replace && path.exists() {
        return Err(WriteError::Exists(path.to_owned()));
    }
    // tempfile creates the file with mode 0600.
    let mut temp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(&folder)
        .map_err(|source| WriteError::Io {
            path: folder.clone(),
            source,
        })?;
    temp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    temp.write_all(bytes).map_err(io)?;
    temp.as_file().sync_all().map_err(io)?;
    if replace {
        temp.persist(path).map_err(|error| io(error.error))?;
    } else {
        // Fails rather than replace a file that appeared since the check above.
        temp.persist_noclobber(path).map_err(|error| {
            if error.error.kind() == std::io::ErrorKind::AlreadyExists {
                WriteError::Exists(path.to_owned())
            } else {
                io(error.error)
            }
        })?;
    }
    sync_folder(&folder).map_err(|source| WriteError::Io {
        path: folder,
        source,
    })
}

/// Fsyncs a folder so a rename or creation in it is durable.
pub fn sync_folder(folder: &Path) -> std::io::Result<()> {
    fs::File::open(folder)?.sync_all()
}

/// Creates `folder` (and its parents) with mode 0700 when it does not exist yet.
pub fn create_private_dir(folder: &Path) -> Result<(), WriteError> {
    if folder.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(folder)
        .map_err(|source| WriteError::Io {
            path: folder.to_owned(),
            source,
        })?;
    // The new entry in the parent must survive a power cut too.
    match folder.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => {
            sync_folder(parent).map_err(|source| WriteError::Io {
                path: parent.to_owned(),
                source,
            })
        }
        _ => Ok(()),
    }
}

use std::os::unix::fs::DirBuilderExt as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_0600_and_refuses_to_replace_without_leave() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.pem");
        write_private(&path, b"one", false).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let refused = write_private(&path, b"two", false).unwrap_err();
        assert!(matches!(refused, WriteError::Exists(_)), "{refused}");
        assert!(refused.to_string().contains("--force"));
        assert_eq!(
            fs::read(&path).unwrap(),
            b"one",
            "the existing file is untouched"
        );
        write_private(&path, b"two", true).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn names_the_path_when_the_folder_is_missing() {
        let error =
            write_private(Path::new("/nonexistent-folder/x/key.pem"), b"x", false).unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent-folder/x"),
            "{error}"
        );
    }
}
