//! Finding and reading the key files on one stick, treating everything on it as hostile.
//!
//! Where: the top of the stick and one level of folders below it. What: files named
//! (in any case, as FAT shows them) `icg.xml`, `icg.html`, `icg.htm` and `icg.txt` first, then any
//! other `*.xml`, `*.html`, `*.htm` or `*.txt` that turns out to be a key file. Top-level files
//! come before files in folders; otherwise the order is the names' above, then the paths'.
//!
//! How: symbolic links are not followed at all, neither to files nor to folders, so no link can
//! lead off the stick; each file is opened with `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC` and checked
//! with `fstat` before a byte is read: regular files only (a FIFO, device or folder is refused
//! without blocking), on the stick's own file system (a mount or a race leading elsewhere is
//! refused), no bigger than the limit, and at most limit + 1 bytes are ever read. A file that
//! cannot be read (a stick pulled out mid-read), is not a key file or is malformed is reported with
//! its path (and line, where there is one) and skipped; the other files still count. Nothing here
//! panics on what it finds, and no report holds a key value.

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, FileType, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use onboard_protocol::{Format, KeyFile, KeyFileError, Limits, Position, Reason};

/// The names the UMS gives its exports, in the order they are tried (matched in any case).
pub const KEY_FILE_NAMES: [&str; 4] = ["icg.xml", "icg.html", "icg.htm", "icg.txt"];

/// The extensions of other files that may hold a key file (matched in any case).
pub const KEY_FILE_EXTENSIONS: [&str; 4] = ["xml", "html", "htm", "txt"];

/// A key file read from a stick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundKeyFile {
    /// Where it is.
    pub path: PathBuf,
    /// The format its bytes are in.
    pub format: Format,
    /// Its size in bytes.
    pub size: u64,
    /// What it holds.
    pub key_file: KeyFile,
}

/// Why a file (or folder) on a stick was skipped.
#[derive(Debug, thiserror::Error)]
pub enum FileProblem {
    /// A symbolic link: never followed.
    #[error("a symbolic link; links are not followed, so that none can lead off the stick")]
    SymbolicLink,
    /// Not a regular file.
    #[error("a {0}, not a regular file")]
    NotRegular(&'static str),
    /// On another file system than the stick.
    #[error("on another file system than the stick; only files on the stick itself are read")]
    OffStick,
    /// Bigger than the limit.
    #[error("{size} bytes or more, larger than the limit of {limit} bytes")]
    TooLarge {
        /// Its size, or how much was read before the limit was passed.
        size: u64,
        /// The limit.
        limit: usize,
    },
    /// Gone between listing and reading (a stick pulled out, a file deleted).
    #[error("vanished while being read (stick pulled out?)")]
    Vanished,
    /// An I/O error.
    #[error("cannot be read (stick pulled out or damaged?)")]
    Unreadable(#[source] io::Error),
    /// Not a key file, or a malformed one (the message names the line and column).
    #[error(transparent)]
    KeyFile(KeyFileError),
    /// More candidate files than are read from one stick.
    #[error(
        "{found} files that may be key files; only the first {MAX_CANDIDATES} (UMS export names \
         first, then the top of the stick) are read"
    )]
    TooManyFiles {
        /// How many were found.
        found: usize,
    },
}

/// The most files read from one stick as possible key files: a stick full of `.txt` files must
/// not keep the agent reading.
pub const MAX_CANDIDATES: usize = 32;

/// The most folders at the top of a stick whose files are listed.
pub const MAX_FOLDERS: usize = 64;

/// A file or folder skipped, and why.
#[derive(Debug)]
pub struct Problem {
    /// The file or folder.
    pub path: PathBuf,
    /// Why it was skipped.
    pub problem: FileProblem,
    /// Whether it is worth a warning: false only for a file that merely has a key file's
    /// extension (a `readme.txt`) and is plainly not one.
    pub notable: bool,
}

impl Problem {
    /// The place in the file at fault, when the reader named one.
    pub fn position(&self) -> Option<Position> {
        match &self.problem {
            FileProblem::KeyFile(error) => error.position,
            _ => None,
        }
    }

    /// What is wrong, without the path, with every cause.
    pub fn reason(&self) -> String {
        let mut text = self.problem.to_string();
        let mut source = std::error::Error::source(&self.problem);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason())
    }
}

/// What one stick holds: the key files, best first, and what was skipped.
#[derive(Debug, Default)]
pub struct Discovery {
    /// Key files read, in the order they are to be used.
    pub key_files: Vec<FoundKeyFile>,
    /// Files and folders skipped, with the reason.
    pub problems: Vec<Problem>,
}

/// A file that may be a key file, found by listing a stick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Where it is.
    pub path: PathBuf,
    /// The file type the directory listing gave (not following links).
    pub file_type: FileType,
    /// Its position among [`KEY_FILE_NAMES`], or `None` for another name with a key-file extension.
    pub named: Option<usize>,
    /// 0 at the top of the stick, 1 in a folder.
    pub depth: u8,
}

/// Whether `name` may be a key file: `Some(Some(rank))` for a UMS export name, `Some(None)` for
/// another name with a key-file extension, `None` otherwise.
pub fn classify(name: &OsStr) -> Option<Option<usize>> {
    let lower = name.to_string_lossy().to_lowercase();
    if let Some(rank) = KEY_FILE_NAMES.iter().position(|known| *known == lower) {
        return Some(Some(rank));
    }
    let extension = Path::new(&lower).extension()?.to_str()?;
    KEY_FILE_EXTENSIONS.contains(&extension).then_some(None)
}

/// Reads every key file on the stick at `stick`.
pub fn discover(stick: &Path, limits: &Limits) -> Discovery {
    let mut discovery = Discovery::default();
    let stick_device = match fs::symlink_metadata(stick) {
        Ok(meta) if meta.file_type().is_symlink() => {
            discovery
                .problems
                .push(problem(stick, FileProblem::SymbolicLink, true));
            return discovery;
        }
        Ok(meta) => meta.dev(),
        Err(error) => {
            discovery
                .problems
                .push(problem(stick, io_problem(error), true));
            return discovery;
        }
    };
    for candidate in list_candidates(stick, &mut discovery.problems) {
        match read_candidate(&candidate, Some(stick_device), limits) {
            Ok(found) => discovery.key_files.push(found),
            Err(skipped) => discovery.problems.push(skipped),
        }
    }
    discovery
}

/// Lists the files on a stick that may be key files, best first; folders that cannot be listed
/// go to `problems`.
pub fn list_candidates(stick: &Path, problems: &mut Vec<Problem>) -> Vec<Candidate> {
    let mut candidates = Vec::new();
    let mut folders = Vec::new();
    list_folder(stick, 0, &mut candidates, Some(&mut folders), problems);
    folders.sort();
    folders.truncate(MAX_FOLDERS);
    for folder in folders {
        list_folder(&folder, 1, &mut candidates, None, problems);
    }
    candidates.sort_by(|a, b| {
        (a.named.is_none(), a.depth, a.named, &a.path).cmp(&(
            b.named.is_none(),
            b.depth,
            b.named,
            &b.path,
        ))
    });
    if candidates.len() > MAX_CANDIDATES {
        problems.push(problem(
            stick,
            FileProblem::TooManyFiles {
                found: candidates.len(),
            },
            true,
        ));
        candidates.truncate(MAX_CANDIDATES);
    }
    candidates
}

fn list_folder(
    folder: &Path,
    depth: u8,
    candidates: &mut Vec<Candidate>,
    mut folders: Option<&mut Vec<PathBuf>>,
    problems: &mut Vec<Problem>,
) {
    let entries = match fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(error) => {
            problems.push(problem(folder, io_problem(error), true));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                // The listing broke off (the stick went away): report it, keep what was listed.
                problems.push(problem(folder, io_problem(error), true));
                return;
            }
        };
        let path = entry.path();
        let file_type = match entry.file_type() {
            Ok(file_type) => file_type,
            Err(error) => {
                problems.push(problem(&path, io_problem(error), true));
                continue;
            }
        };
        if let Some(named) = classify(&entry.file_name()) {
            candidates.push(Candidate {
                path,
                file_type,
                named,
                depth,
            });
        } else if file_type.is_dir()
            && let Some(folders) = folders.as_deref_mut()
        {
            folders.push(path);
        }
    }
}

/// Reads one candidate: refused at once when the listing already shows it is no regular file,
/// else read as [`read_key_file`] does.
pub fn read_candidate(
    candidate: &Candidate,
    stick_device: Option<u64>,
    limits: &Limits,
) -> Result<FoundKeyFile, Problem> {
    let named = candidate.named.is_some();
    if let Some(refusal) = refuse_type(&candidate.file_type) {
        return Err(problem(&candidate.path, refusal, true));
    }
    read_file(&candidate.path, stick_device, limits).map_err(|skipped| {
        // Another name with a key-file extension that is plainly not a key file is no news.
        let plainly_not = matches!(
            &skipped,
            FileProblem::KeyFile(error) if is_plainly_not_a_key_file(&error.reason)
        );
        let notable = named || !plainly_not;
        problem(&candidate.path, skipped, notable)
    })
}

/// Reads the key file at `path` with every check of this module; `stick_device`, when given, is
/// the device the file must be on.
pub fn read_key_file(
    path: &Path,
    stick_device: Option<u64>,
    limits: &Limits,
) -> Result<FoundKeyFile, Problem> {
    read_file(path, stick_device, limits).map_err(|skipped| problem(path, skipped, true))
}

fn read_file(
    path: &Path,
    stick_device: Option<u64>,
    limits: &Limits,
) -> Result<FoundKeyFile, FileProblem> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|error| match error.raw_os_error() {
            Some(libc::ELOOP) => FileProblem::SymbolicLink,
            _ => io_problem(error),
        })?;
    let meta = file.metadata().map_err(io_problem)?;
    if let Some(refusal) = refuse_type(&meta.file_type()) {
        return Err(refusal);
    }
    if stick_device.is_some_and(|device| device != meta.dev()) {
        return Err(FileProblem::OffStick);
    }
    let limit = limits.max_bytes;
    if meta.len() > limit as u64 {
        return Err(FileProblem::TooLarge {
            size: meta.len(),
            limit,
        });
    }
    // The file may grow between fstat and read: read one byte past the limit to notice.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&mut file)
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_problem)?;
    if bytes.len() > limit {
        return Err(FileProblem::TooLarge {
            size: bytes.len() as u64,
            limit,
        });
    }
    let format = Format::detect(&bytes, limits).map_err(FileProblem::KeyFile)?;
    let key_file = KeyFile::parse_as(&bytes, format, limits).map_err(FileProblem::KeyFile)?;
    Ok(FoundKeyFile {
        path: path.to_owned(),
        format,
        size: bytes.len() as u64,
        key_file,
    })
}

/// The refusal for anything but a regular file.
fn refuse_type(file_type: &FileType) -> Option<FileProblem> {
    if file_type.is_file() {
        None
    } else if file_type.is_symlink() {
        Some(FileProblem::SymbolicLink)
    } else if file_type.is_dir() {
        Some(FileProblem::NotRegular("folder"))
    } else if file_type.is_fifo() {
        Some(FileProblem::NotRegular("FIFO (named pipe)"))
    } else if file_type.is_block_device() || file_type.is_char_device() {
        Some(FileProblem::NotRegular("device"))
    } else if file_type.is_socket() {
        Some(FileProblem::NotRegular("socket"))
    } else {
        Some(FileProblem::NotRegular("special file"))
    }
}

/// Reasons that say a file is something else altogether, rather than a damaged key file.
fn is_plainly_not_a_key_file(reason: &Reason) -> bool {
    matches!(
        reason,
        Reason::NotAKeyFile
            | Reason::Empty
            | Reason::InvalidUtf8
            | Reason::NulCharacter
            | Reason::WrongRoot(_)
    )
}

fn io_problem(error: io::Error) -> FileProblem {
    if error.kind() == io::ErrorKind::NotFound {
        FileProblem::Vanished
    } else {
        FileProblem::Unreadable(error)
    }
}

fn problem(path: &Path, problem: FileProblem, notable: bool) -> Problem {
    Problem {
        path: path.to_owned(),
        problem,
        notable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_classified_in_any_case() {
        let table: &[(&str, Option<Option<usize>>)] = &[
            ("icg.xml", Some(Some(0))),
            ("ICG.XML", Some(Some(0))),
            ("Icg.Html", Some(Some(1))),
            ("icg.htm", Some(Some(2))),
            ("ICG.TXT", Some(Some(3))),
            ("keys.xml", Some(None)),
            ("README.TXT", Some(None)),
            ("page.HTM", Some(None)),
            ("icg.xml.bak", None),
            ("icg", None),
            ("xml", None),
            ("autorun.inf", None),
        ];
        for (name, expected) in table {
            assert_eq!(classify(OsStr::new(name)), *expected, "{name}");
        }
    }

    #[test]
    fn plain_other_files_are_not_notable_but_damaged_key_files_are() {
        assert!(is_plainly_not_a_key_file(&Reason::NotAKeyFile));
        assert!(!is_plainly_not_a_key_file(&Reason::Doctype));
        assert!(!is_plainly_not_a_key_file(&Reason::NoKeys));
    }
}
