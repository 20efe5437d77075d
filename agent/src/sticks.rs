//! Finding the sticks under the mount roots and reading their key files.
//!
//! A stick is a folder one or two levels below a mount root that holds a key file: `/media/LABEL`
//! as udisks mounts for the system, `/run/media/USER/LABEL` as it mounts for a user, `/mnt/usb` by
//! hand. Which folders are looked at:
//!
//! - a folder right below a root (`D`) is a stick candidate when it is a mount point (another file
//!   system than the root's) or has a file with a key-file name or extension at its top;
//! - otherwise each folder inside `D` is a candidate (`D` is then taken for a user's folder).
//!
//! Each candidate is read as [`discovery::discover`] reads a stick (its top and one level of
//! folders). Symbolic links are never followed, here either. A root that does not exist is passed
//! over quietly: `/run/media` appears only when udisks first mounts something there.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use onboard_protocol::Limits;

use crate::discovery::{self, FoundKeyFile, Problem};

/// What one look over the mount roots found.
#[derive(Debug, Default)]
pub struct Scan {
    /// The sticks holding at least one key file, in root order, then by path.
    pub sticks: Vec<Stick>,
    /// Files and folders skipped on folders that hold no key file, with the reason.
    pub problems: Vec<Problem>,
}

/// A stick and its key files.
#[derive(Debug)]
pub struct Stick {
    /// Where it is mounted.
    pub path: PathBuf,
    /// Its key files, best first.
    pub key_files: Vec<FoundKeyFile>,
    /// Files skipped on it, with the reason.
    pub problems: Vec<Problem>,
}

impl Scan {
    /// Every key file found, stick by stick.
    pub fn key_files(&self) -> impl Iterator<Item = &FoundKeyFile> {
        self.sticks.iter().flat_map(|stick| &stick.key_files)
    }

    /// Every problem, on sticks and elsewhere.
    pub fn all_problems(&self) -> impl Iterator<Item = &Problem> {
        self.sticks
            .iter()
            .flat_map(|stick| &stick.problems)
            .chain(&self.problems)
    }

    /// Whether a look made at once on a hint may be acted on without waiting for the burst of
    /// changes to settle: it found a key file, every key file it found is XML (whose closing tag
    /// proves it whole: a copy cut short does not parse), and nothing it could not read. A stick
    /// mounted appears whole and UMS exports XML by default, so this is the usual case. A text or
    /// HTML file cut short may still read as fewer keys, or a key cut short; then, as when a file
    /// does not read at all, the agent settles and looks again.
    pub fn whole(&self) -> bool {
        self.key_files().next().is_some()
            && self
                .key_files()
                .all(|file| file.format == onboard_protocol::Format::Xml)
            && self.all_problems().next().is_none()
    }
}

/// Looks for sticks under every root and reads their key files.
pub fn scan_roots(roots: &[PathBuf], limits: &Limits) -> Scan {
    let mut scan = Scan::default();
    for root in roots {
        for candidate in stick_candidates(root) {
            let found = discovery::discover(&candidate, limits);
            if found.key_files.is_empty() {
                scan.problems.extend(found.problems);
            } else {
                scan.sticks.push(Stick {
                    path: candidate,
                    key_files: found.key_files,
                    problems: found.problems,
                });
            }
        }
    }
    scan
}

/// The folders under `root` that may be sticks (see the module documentation), sorted.
pub fn stick_candidates(root: &Path) -> Vec<PathBuf> {
    let Ok(root_meta) = fs::metadata(root) else {
        return Vec::new();
    };
    let mut candidates = Vec::new();
    for first in sorted_folders(root) {
        let is_mount = fs::symlink_metadata(&first).is_ok_and(|meta| meta.dev() != root_meta.dev());
        if is_mount || has_key_file_name_on_top(&first) {
            candidates.push(first);
        } else {
            candidates.extend(sorted_folders(&first));
        }
    }
    candidates
}

/// The folders (not links to folders) in `dir`, sorted; none when it cannot be listed.
fn sorted_folders(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut folders: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
        .map(|entry| entry.path())
        .collect();
    folders.sort();
    folders
}

fn has_key_file_name_on_top(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .any(|entry| discovery::classify(&entry.file_name()).is_some())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_sticks_with_files_on_top_or_the_folders_of_a_user_folder() {
        let root = tempfile::tempdir().unwrap();
        let make = |path: &str| fs::create_dir_all(root.path().join(path)).unwrap();
        make("LABEL");
        fs::write(root.path().join("LABEL/icg.xml"), b"").unwrap();
        make("user/STICK1/keys");
        make("user/STICK2");
        make("empty");
        std::os::unix::fs::symlink("/", root.path().join("link")).unwrap();
        let names: Vec<String> = stick_candidates(root.path())
            .iter()
            .map(|path| {
                path.strip_prefix(root.path())
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(names, ["LABEL", "user/STICK1", "user/STICK2"]);
        assert!(stick_candidates(&root.path().join("missing")).is_empty());
    }

    #[test]
    fn only_a_look_with_key_files_and_no_problem_is_acted_on_before_settling() {
        let file_as = |stick: &str, format: onboard_protocol::Format| -> FoundKeyFile {
            FoundKeyFile {
                path: PathBuf::from(format!("/media/{stick}/{}", format.default_file_name())),
                format,
                size: 1,
                key_file: onboard_protocol::KeyFile {
                    format_version: 1,
                    exported_at: None,
                    servers: Vec::new(),
                    ums_id: onboard_protocol::Fingerprint::from_bytes([7; 32]),
                    keys: Vec::new(),
                },
            }
        };
        let whole_file = |stick: &str| file_as(stick, onboard_protocol::Format::Xml);
        let problem = |path: &str| Problem {
            path: PathBuf::from(path),
            problem: crate::discovery::FileProblem::SymbolicLink,
            notable: false,
        };
        let stick = |name: &str, key_files: Vec<FoundKeyFile>, problems: Vec<Problem>| Stick {
            path: PathBuf::from(format!("/media/{name}")),
            key_files,
            problems,
        };
        let table: Vec<(&str, Scan, bool)> = vec![
            ("nothing found", Scan::default(), false),
            (
                "a key file, nothing else",
                Scan {
                    sticks: vec![stick("A", vec![whole_file("A")], vec![])],
                    problems: vec![],
                },
                true,
            ),
            (
                "a text key file: cut short, it may still read (fewer keys, a key cut short)",
                Scan {
                    sticks: vec![stick(
                        "A",
                        vec![file_as("A", onboard_protocol::Format::Text)],
                        vec![],
                    )],
                    problems: vec![],
                },
                false,
            ),
            (
                "an HTML key file beside an XML one",
                Scan {
                    sticks: vec![stick(
                        "A",
                        vec![
                            whole_file("A"),
                            file_as("A", onboard_protocol::Format::Html),
                        ],
                        vec![],
                    )],
                    problems: vec![],
                },
                false,
            ),
            (
                "a key file beside a file that cannot be read (it may still be copied)",
                Scan {
                    sticks: vec![stick(
                        "A",
                        vec![whole_file("A")],
                        vec![problem("/media/A/keys.txt")],
                    )],
                    problems: vec![],
                },
                false,
            ),
            (
                "a key file, and a problem on another folder",
                Scan {
                    sticks: vec![stick("A", vec![whole_file("A")], vec![])],
                    problems: vec![problem("/media/B/icg.xml")],
                },
                false,
            ),
            (
                "only problems",
                Scan {
                    sticks: vec![],
                    problems: vec![problem("/media/B/icg.xml")],
                },
                false,
            ),
        ];
        for (what, scan, whole) in table {
            assert_eq!(scan.whole(), whole, "{what}");
        }
    }
}
