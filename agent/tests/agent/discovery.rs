//! Key-file discovery on temporary folders standing in for sticks: names and order, links, FIFOs,
//! folders, oversized and malformed files, files and sticks vanishing mid-scan.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;

use onboard_agent::discovery::{self, FileProblem, Problem};
use onboard_agent::sticks;
use onboard_protocol::{Format, Limits};

use crate::util::{DEADLINE, assert_no_secret, write_key_file};

fn names(root: &Path, paths: impl IntoIterator<Item = impl AsRef<Path>>) -> Vec<String> {
    paths
        .into_iter()
        .map(|path| {
            path.as_ref()
                .strip_prefix(root)
                .unwrap()
                .display()
                .to_string()
        })
        .collect()
}

fn problem_for<'a>(problems: &'a [Problem], path: &Path) -> &'a Problem {
    problems
        .iter()
        .find(|problem| problem.path == path)
        .unwrap_or_else(|| panic!("no problem reported for {}: {problems:?}", path.display()))
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo failed");
}

#[test]
fn ums_names_come_first_then_other_key_files_and_other_files_are_reported_quietly() {
    let stick = tempfile::tempdir().unwrap();
    let root = stick.path();
    write_key_file(&root.join("export.html"), Format::Html);
    write_key_file(&root.join("keys/ICG.TXT"), Format::Text);
    write_key_file(&root.join("icg.xml"), Format::Xml);
    write_key_file(&root.join("Icg.Htm"), Format::Html);
    write_key_file(&root.join("deep/er/icg.xml"), Format::Xml);
    std::fs::write(root.join("readme.txt"), "Insert the stick and wait.\n").unwrap();
    std::fs::write(root.join("autorun.inf"), "[autorun]\n").unwrap();

    let found = discovery::discover(root, &Limits::default());
    let paths = found.key_files.iter().map(|file| &file.path);
    // Two levels down is beyond a stick's reach; autorun.inf is no candidate at all.
    assert_eq!(
        names(root, paths),
        ["icg.xml", "Icg.Htm", "keys/ICG.TXT", "export.html"]
    );
    let formats: Vec<Format> = found.key_files.iter().map(|file| file.format).collect();
    assert_eq!(
        formats,
        [Format::Xml, Format::Html, Format::Text, Format::Html]
    );
    assert_eq!(found.key_files[0].key_file.keys.len(), 6);

    assert_eq!(found.problems.len(), 1, "{:?}", found.problems);
    let readme = problem_for(&found.problems, &root.join("readme.txt"));
    assert!(!readme.notable);
    assert!(readme.to_string().contains("not a key file"), "{readme}");
}

#[test]
fn two_key_files_on_one_stick_are_both_found() {
    let mount_root = tempfile::tempdir().unwrap();
    let stick = mount_root.path().join("user/STICK");
    write_key_file(&stick.join("icg.xml"), Format::Xml);
    write_key_file(&stick.join("backup/icg.txt"), Format::Text);
    let scan = sticks::scan_roots(&[mount_root.path().to_owned()], &Limits::default());
    assert_eq!(scan.sticks.len(), 1);
    assert_eq!(scan.sticks[0].path, stick);
    assert_eq!(
        names(&stick, scan.key_files().map(|file| &file.path)),
        ["icg.xml", "backup/icg.txt"]
    );
}

#[test]
fn a_link_leading_off_the_stick_is_refused_and_not_followed() {
    let outside = tempfile::tempdir().unwrap();
    write_key_file(&outside.path().join("icg.xml"), Format::Xml);
    let stick = tempfile::tempdir().unwrap();
    symlink(outside.path().join("icg.xml"), stick.path().join("icg.xml")).unwrap();
    symlink(outside.path(), stick.path().join("keys")).unwrap();

    let found = discovery::discover(stick.path(), &Limits::default());
    assert!(found.key_files.is_empty(), "{:?}", found.key_files);
    let link = problem_for(&found.problems, &stick.path().join("icg.xml"));
    assert!(matches!(link.problem, FileProblem::SymbolicLink));
    assert!(link.notable);
    assert!(
        link.to_string().contains("links are not followed"),
        "{link}"
    );
    // The linked folder is not descended into, so its icg.xml is not even looked at.
    assert_eq!(found.problems.len(), 1, "{:?}", found.problems);

    // Read directly, O_NOFOLLOW refuses the link itself.
    let direct = discovery::read_key_file(&stick.path().join("icg.xml"), None, &Limits::default());
    assert!(matches!(
        direct.unwrap_err().problem,
        FileProblem::SymbolicLink
    ));

    // A stick that is itself a link is refused whole.
    let links = tempfile::tempdir().unwrap();
    symlink(outside.path(), links.path().join("STICK")).unwrap();
    let found = discovery::discover(&links.path().join("STICK"), &Limits::default());
    assert!(found.key_files.is_empty());
    assert!(matches!(
        found.problems[0].problem,
        FileProblem::SymbolicLink
    ));
}

#[test]
fn a_fifo_named_icg_xml_is_refused_without_blocking() {
    let stick = tempfile::tempdir().unwrap();
    mkfifo(&stick.path().join("icg.xml"));
    mkfifo(&stick.path().join("keys.txt"));
    write_key_file(&stick.path().join("icg.txt"), Format::Text);

    // Run in a thread so a blocking open fails the test instead of hanging it.
    let (sender, receiver) = mpsc::channel();
    let path = stick.path().to_owned();
    std::thread::spawn(move || {
        let found = discovery::discover(&path, &Limits::default());
        let direct = discovery::read_key_file(&path.join("icg.xml"), None, &Limits::default());
        let _ = sender.send((found, direct));
    });
    let (found, direct) = receiver
        .recv_timeout(DEADLINE)
        .expect("discovery blocked on a FIFO");
    assert_eq!(found.key_files.len(), 1);
    let fifo = problem_for(&found.problems, &stick.path().join("icg.xml"));
    assert!(fifo.to_string().contains("FIFO"), "{fifo}");
    assert!(problem_for(&found.problems, &stick.path().join("keys.txt")).notable);
    // Opened with O_NONBLOCK and refused by fstat.
    let direct = direct.unwrap_err();
    assert!(
        matches!(direct.problem, FileProblem::NotRegular(_)),
        "{direct}"
    );
}

#[test]
fn a_folder_named_icg_xml_is_refused_and_the_rest_still_counts() {
    let stick = tempfile::tempdir().unwrap();
    write_key_file(&stick.path().join("ICG.XML/icg.xml"), Format::Xml);
    write_key_file(&stick.path().join("icg.html"), Format::Html);
    let found = discovery::discover(stick.path(), &Limits::default());
    assert_eq!(
        names(stick.path(), found.key_files.iter().map(|f| &f.path)),
        ["icg.html"]
    );
    let folder = problem_for(&found.problems, &stick.path().join("ICG.XML"));
    assert!(
        folder.to_string().contains("a folder, not a regular file"),
        "{folder}"
    );

    let direct = discovery::read_key_file(&stick.path().join("ICG.XML"), None, &Limits::default());
    assert!(direct.unwrap_err().to_string().contains("folder"));
}

#[test]
fn an_oversized_file_is_refused_unread() {
    let stick = tempfile::tempdir().unwrap();
    // A sparse file of 4 GiB: refused from its size alone, or this test would take a while.
    let huge = std::fs::File::create(stick.path().join("icg.xml")).unwrap();
    huge.set_len(4 << 30).unwrap();
    write_key_file(&stick.path().join("icg.txt"), Format::Text);
    let found = discovery::discover(stick.path(), &Limits::default());
    assert_eq!(found.key_files.len(), 1);
    let big = problem_for(&found.problems, &stick.path().join("icg.xml"));
    assert!(matches!(big.problem, FileProblem::TooLarge { .. }), "{big}");
    assert!(big.to_string().contains("16777216"), "{big}");

    // A real key file over a small limit.
    let limits = Limits {
        max_bytes: 200,
        ..Limits::default()
    };
    let found = discovery::discover(stick.path(), &limits);
    let text = problem_for(&found.problems, &stick.path().join("icg.txt"));
    assert!(text.to_string().contains("limit of 200 bytes"), "{text}");
}

#[test]
fn a_malformed_key_file_is_reported_with_its_line_and_skipped() {
    let stick = tempfile::tempdir().unwrap();
    let good = onboard_protocol::Format::Xml;
    write_key_file(&stick.path().join("keys/icg.xml"), good);
    let mut broken = crate::util::full_key_file().write(Format::Xml);
    broken = broken.replace(
        "<server host=\"127.0.0.1\" port=\"1\"/>",
        "<server host=\"127.0.0.1\" port=\"1x\"/>",
    );
    std::fs::write(stick.path().join("icg.xml"), &broken).unwrap();
    let cut = &crate::util::full_key_file().write(Format::Xml)[..300];
    std::fs::write(stick.path().join("other.xml"), cut).unwrap();

    let found = discovery::discover(stick.path(), &Limits::default());
    assert_eq!(
        names(stick.path(), found.key_files.iter().map(|f| &f.path)),
        ["keys/icg.xml"]
    );
    let port = problem_for(&found.problems, &stick.path().join("icg.xml"));
    assert!(port.notable);
    assert_eq!(
        port.position().map(|position| position.line),
        Some(4),
        "{port}"
    );
    assert!(port.to_string().contains("line 4"), "{port}");
    assert!(port.to_string().contains("port"), "{port}");
    // Another name that is a key file cut short is worth a warning too.
    let cut = problem_for(&found.problems, &stick.path().join("other.xml"));
    assert!(cut.notable, "{cut}");
    for problem in &found.problems {
        assert_no_secret(&problem.to_string());
        assert_no_secret(&format!("{problem:?}"));
    }
}

#[test]
fn a_file_that_vanishes_between_listing_and_reading_is_reported() {
    let stick = tempfile::tempdir().unwrap();
    write_key_file(&stick.path().join("icg.xml"), Format::Xml);
    write_key_file(&stick.path().join("icg.txt"), Format::Text);
    let mut problems = Vec::new();
    let candidates = discovery::list_candidates(stick.path(), &mut problems);
    assert_eq!(candidates.len(), 2);
    std::fs::remove_file(stick.path().join("icg.xml")).unwrap();

    let results: Vec<_> = candidates
        .iter()
        .map(|candidate| discovery::read_candidate(candidate, None, &Limits::default()))
        .collect();
    let gone = results[0].as_ref().unwrap_err();
    assert!(matches!(gone.problem, FileProblem::Vanished), "{gone}");
    assert!(gone.to_string().contains("stick pulled out"), "{gone}");
    assert!(results[1].is_ok());
}

#[test]
fn a_stick_removed_mid_scan_gives_problems_not_a_panic() {
    let mount_root = tempfile::tempdir().unwrap();
    let stick = mount_root.path().join("STICK");
    write_key_file(&stick.join("icg.xml"), Format::Xml);
    write_key_file(&stick.join("keys/icg.txt"), Format::Text);
    let candidates = sticks::stick_candidates(mount_root.path());
    assert_eq!(candidates, std::slice::from_ref(&stick));
    let mut problems = Vec::new();
    let files = discovery::list_candidates(&stick, &mut problems);
    assert_eq!(files.len(), 2);

    std::fs::remove_dir_all(&stick).unwrap();

    for file in &files {
        let problem = discovery::read_candidate(file, None, &Limits::default()).unwrap_err();
        assert!(
            matches!(problem.problem, FileProblem::Vanished),
            "{problem}"
        );
    }
    let found = discovery::discover(&stick, &Limits::default());
    assert!(found.key_files.is_empty());
    assert!(matches!(found.problems[0].problem, FileProblem::Vanished));
    let scan = sticks::scan_roots(&[mount_root.path().to_owned()], &Limits::default());
    assert!(scan.sticks.is_empty());
}

#[test]
fn a_file_on_another_file_system_than_the_stick_is_refused() {
    let stick = tempfile::tempdir().unwrap();
    write_key_file(&stick.path().join("icg.xml"), Format::Xml);
    let device = std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(stick.path()).unwrap());
    let refused = discovery::read_key_file(
        &stick.path().join("icg.xml"),
        Some(device + 1),
        &Limits::default(),
    )
    .unwrap_err();
    assert!(
        matches!(refused.problem, FileProblem::OffStick),
        "{refused}"
    );
    assert!(
        discovery::read_key_file(
            &stick.path().join("icg.xml"),
            Some(device),
            &Limits::default()
        )
        .is_ok()
    );
}

#[test]
fn a_stick_full_of_candidates_is_read_only_up_to_the_cap() {
    let stick = tempfile::tempdir().unwrap();
    // The real export in a folder, and more `.txt` files at the top than are ever read.
    write_key_file(&stick.path().join("export/icg.xml"), Format::Xml);
    for n in 0..discovery::MAX_CANDIDATES + 10 {
        std::fs::write(
            stick.path().join(format!("notes-{n:03}.txt")),
            "shopping list\n",
        )
        .unwrap();
    }
    let found = discovery::discover(stick.path(), &Limits::default());
    // The UMS export name ranks first, so it is among those read.
    assert_eq!(
        names(stick.path(), found.key_files.iter().map(|file| &file.path)),
        ["export/icg.xml"]
    );
    let capped = problem_for(&found.problems, stick.path());
    assert!(
        matches!(capped.problem, FileProblem::TooManyFiles { found } if found == discovery::MAX_CANDIDATES + 11),
        "{capped:?}"
    );
    assert!(capped.notable);
    // The files past the cap were not read at all: no problem is reported for them.
    let skipped_quietly = found
        .problems
        .iter()
        .filter(|problem| problem.path != stick.path())
        .count();
    assert_eq!(skipped_quietly, discovery::MAX_CANDIDATES - 1);
}

#[test]
fn a_key_file_naming_thousands_of_servers_is_tried_on_the_first_sixteen() {
    let mut file = crate::util::full_key_file();
    file.servers = (0..5_000)
        .map(|n| onboard_protocol::Server::new(format!("ums{n}.example.com"), 8443).unwrap())
        .collect();
    let source = onboard_agent::enroll::KeySource::from_key_file("stick", &file);
    assert_eq!(source.servers.len(), onboard_agent::enroll::MAX_SERVERS);
    assert_eq!(source.servers[0], file.servers[0]);
}
