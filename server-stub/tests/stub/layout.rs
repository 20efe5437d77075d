//! The layout of `server-stub/src`, held against its imports: every module sits in one declared
//! layer and takes names only from layers below it (or from its own module and those inside it),
//! so no import runs back up and no two modules import each other.
//!
//! The references read are the paths of the code (not of comments, and not of test modules:
//! `#[cfg(test)] mod …`) that start at `crate::`, `super::`, `self::`, or a module the file
//! declares with `mod`. A module not declared below fails the test: place it when you add it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The modules of `server-stub/src` from the top layer down. A module's name stands for it and
/// every module inside it, unless one inside is placed on its own. Modules of one layer do not
/// import each other.
const LAYERS: &[&[&str]] = &[
    // `testing` (feature `testing`): servers for tests, over `serve` like the command line.
    &["cli", "testing"],
    // The test-rig control listener drives a running server's shared state and its actions.
    &["serve", "rig::control"],
    // The test rig's middleware and one-shot actions, over the routes' shared state.
    &["rig::layer", "rig::actions"],
    &["http"],
    // Strict mode's counts, which the metrics listener shows.
    &["servers", "rig::strict"],
    // The metrics listener reads the store, the connector and the UMS ID's sync status.
    &["stub", "metrics"],
    &["accounts", "config"],
    // `rig`: the test rig's controls the routes share (faults, strict mode's counts).
    &[
        "devices",
        "audit",
        "keys",
        "connector",
        "row_mac",
        "probe",
        "rig",
    ],
    // The store: its root (what the rest of the server imports), the database choice, the
    // backends, the flows applied once, the interfaces, and its rows.
    &["store"],
    &["store::database"],
    &["store::sqlite", "store::postgres"],
    &["store::apply"],
    &["store::interface", "store::tx", "store::durability"],
    &["store::rows", "store::query", "store::error"],
    &["tls"],
    &[
        "connections",
        "cluster",
        "ca",
        "login_limit",
        "key_admission",
    ],
    &[
        "rights",
        "unit_ids",
        "claim",
        "key_changes",
        "ums_id",
        "vault",
        "rate_limit",
    ],
    // The pure rules and helpers everything may use.
    &[
        "admission",
        "renewal",
        "random",
        "files",
        "mass_key_floor",
        "rig::faults",
        "rig::clock",
    ],
];

/// The module path of a source file (`store/sqlite/writer.rs` is `store::sqlite::writer`).
fn module_of(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop().unwrap();
    let stem = file.trim_end_matches(".rs");
    if stem != "mod" {
        parts.push(stem.to_owned());
    }
    parts
}

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// The code of a line: without its comment, and nothing of a comment line.
fn code(line: &str) -> &str {
    let trimmed = line.trim_start();
    if trimmed.starts_with("//") {
        return "";
    }
    line.find(" //").map_or(line, |at| &line[..at])
}

/// The code of a file that is not a test: up to its inline test module, if it has one (they
/// stand last); and the names of the test modules it declares in files of their own.
fn non_test(text: &str) -> (String, BTreeSet<String>) {
    let lines: Vec<&str> = text.lines().collect();
    let mut kept = Vec::new();
    let mut tests = BTreeSet::new();
    for (index, line) in lines.iter().enumerate() {
        if line.trim() == "#[cfg(test)]" {
            let next = lines.get(index + 1).map_or("", |next| next.trim());
            if let Some(name) = next.strip_prefix("mod ").and_then(|n| n.strip_suffix(';')) {
                tests.insert(name.to_owned());
                continue;
            }
            if next.starts_with("mod ") && next.ends_with('{') {
                break;
            }
        }
        kept.push(*line);
    }
    (kept.join("\n"), tests)
}

/// The module paths a file refers to, resolved against its own path `module` and the modules it
/// declares.
fn references(text: &str, module: &[String]) -> BTreeSet<Vec<String>> {
    let declared: BTreeSet<String> = text
        .lines()
        .map(|line| code(line).trim())
        .filter_map(|line| {
            let rest = line
                .strip_prefix("pub mod ")
                .or_else(|| line.strip_prefix("mod "))
                .or_else(|| line.strip_prefix("pub(crate) mod "))?;
            rest.strip_suffix(';').map(str::to_owned)
        })
        .collect();
    let mut found = BTreeSet::new();
    for line in text.lines().map(code) {
        let bytes = line.as_bytes();
        let mut at = 0;
        while at < line.len() {
            let boundary =
                at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
            let word_end = line[at..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(line.len(), |end| at + end);
            if !boundary || word_end == at {
                at += line[at..].chars().next().map_or(1, char::len_utf8);
                continue;
            }
            // A path: words joined by `::`.
            let mut words = vec![&line[at..word_end]];
            let mut end = word_end;
            while line[end..].starts_with("::") {
                let start = end + 2;
                let next = line[start..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(line.len(), |stop| start + stop);
                if next == start {
                    break;
                }
                words.push(&line[start..next]);
                end = next;
            }
            at = end.max(at + 1);
            // `super::{a, b}` names the module itself.
            let braced = line[end..].starts_with("::{");
            if words.len() < 2 && !(braced && matches!(words[0], "super" | "self")) {
                continue;
            }
            let mut path: Vec<String> = match words[0] {
                "crate" => Vec::new(),
                "self" => module.to_vec(),
                "super" => module[..module.len().saturating_sub(1)].to_vec(),
                child if declared.contains(child) => {
                    let mut path = module.to_vec();
                    path.push(child.to_owned());
                    path
                }
                _ => continue,
            };
            let mut rest = words[1..].iter();
            if words[0] == "super" {
                for word in rest.by_ref() {
                    if *word == "super" {
                        path.pop();
                    } else {
                        path.push((*word).to_owned());
                        break;
                    }
                }
            }
            path.extend(rest.map(|word| (*word).to_owned()));
            if words[0] != "crate" && words[0] != "super" && words[0] != "self" {
                // `child::name`: the child declared here.
                path.truncate(module.len() + 1);
            }
            found.insert(path);
        }
    }
    found
}

/// The layer and declared name a module path belongs to: the longest declared name it starts with.
fn place(path: &[String]) -> Option<(usize, &'static str)> {
    let joined = path.join("::");
    LAYERS
        .iter()
        .enumerate()
        .flat_map(|(layer, names)| names.iter().map(move |name| (layer, *name)))
        .filter(|(_, name)| joined == *name || joined.starts_with(&format!("{name}::")))
        .max_by_key(|(_, name)| name.len())
}

#[test]
fn every_import_in_src_goes_down_the_declared_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    files.sort();
    let mut unplaced = BTreeSet::new();
    let mut upward = Vec::new();
    // Which declared module imports which (to name any loop).
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut test_modules = BTreeSet::new();
    let mut read = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&root).unwrap();
        let module = module_of(relative);
        let (text, tests) = non_test(&std::fs::read_to_string(file).unwrap());
        for name in tests {
            let mut test = module.clone();
            test.push(name);
            test_modules.insert(test);
        }
        read.push((relative.to_owned(), module, text));
    }
    for (relative, module, text) in &read {
        if relative == Path::new("lib.rs")
            || relative == Path::new("main.rs")
            || test_modules.iter().any(|test| module.starts_with(test))
        {
            continue;
        }
        let Some((layer, name)) = place(module) else {
            unplaced.insert(module.join("::"));
            continue;
        };
        for path in references(text, module) {
            if path.is_empty() {
                continue;
            }
            let Some((their_layer, theirs)) = place(&path) else {
                // A path into a module that is not one of src (a crate's items re-exported).
                if root.join(&path[0]).exists() || root.join(format!("{}.rs", path[0])).exists() {
                    unplaced.insert(path.join("::"));
                }
                continue;
            };
            if theirs == name {
                continue;
            }
            edges.entry(name).or_default().insert(theirs);
            if their_layer <= layer {
                upward.push(format!(
                    "{} ({name}, layer {layer}) imports {} ({theirs}, layer {their_layer})",
                    relative.display(),
                    path.join("::"),
                ));
            }
        }
    }
    assert!(
        unplaced.is_empty(),
        "modules placed in no layer of LAYERS: {unplaced:?}"
    );
    assert!(
        upward.is_empty(),
        "imports that do not go down a layer:\n{}",
        upward.join("\n")
    );
    // What the test rests on: it saw the imports it must see.
    for (from, to) in [
        ("store::sqlite", "store::apply"),
        ("store::postgres", "store::apply"),
        ("store::apply", "claim"),
        ("store::apply", "store::tx"),
        ("config", "store"),
        ("row_mac", "store::rows"),
        ("http", "store"),
    ] {
        assert!(
            edges.get(from).is_some_and(|to_all| to_all.contains(to)),
            "{from} is seen importing {to}: {:?}",
            edges.get(from)
        );
    }
}

#[test]
fn the_reader_resolves_every_kind_of_path() {
    let module: Vec<String> = ["store", "sqlite", "writer"].map(str::to_owned).to_vec();
    let text = "mod inner;\n\
                use super::{SqliteTx, audit_in};\n\
                use crate::store::apply;\n\
                // use crate::serve::nothing;\n\
                let x = super::super::rows::Actor::cli(); // crate::http::not_this\n\
                use inner::Thing;\n\
                let y = self::helper();\n\
                use std::sync::Arc;\n";
    let found: Vec<String> = references(text, &module)
        .into_iter()
        .map(|path| path.join("::"))
        .collect();
    assert_eq!(
        found,
        [
            "store::apply",
            "store::rows::Actor::cli",
            "store::sqlite",
            "store::sqlite::writer::helper",
            "store::sqlite::writer::inner"
        ]
    );
    assert_eq!(
        place(&["store".to_owned(), "sqlite".to_owned(), "writer".to_owned()]),
        Some((10, "store::sqlite"))
    );
    assert_eq!(place(&["nowhere".to_owned()]), None);
}
