//! The documentation still matches the project: every link in the README, BENCHMARKS.md and
//! `docs/` leads to a file that exists (and, for a `#part`, to a heading of it), and every
//! `ums-stub` or `onboard-agent` command line in their shell examples is one the programs accept
//! (parsed by their own command-line definitions; nothing is run). The key-file examples are
//! checked against the formats by `protocol/tests/formats`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::Parser;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The pages: the README, BENCHMARKS.md and every page in `docs/`.
fn pages() -> Vec<PathBuf> {
    let root = root();
    let mut pages = vec![root.join("README.md"), root.join("BENCHMARKS.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    assert!(docs.len() >= 5, "docs/ holds the reference pages");
    pages.extend(docs);
    pages
}

/// The page's text outside code blocks and code spans, where links live.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            // Code spans hold examples, not links.
            let mut inside = false;
            for part in line.split('`') {
                if !inside {
                    out.push_str(part);
                }
                inside = !inside;
            }
            out.push('\n');
        }
    }
    out
}

/// Every `[text](target)` and `![alt](target)` of a page's prose.
fn links(text: &str) -> Vec<String> {
    let prose = prose(text);
    let mut found = Vec::new();
    let mut rest = prose.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        match after.find(')') {
            Some(end) => {
                found.push(after[..end].to_owned());
                rest = &after[end..];
            }
            None => break,
        }
    }
    found
}

/// A heading's anchor as GitHub makes it: lower case, punctuation other than `-` and `_`
/// dropped, spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut found = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            found.insert(slug(line.trim_start_matches('#')));
        }
    }
    found
}

#[test]
fn every_link_in_the_documentation_leads_somewhere() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        let dir = page.parent().unwrap();
        for link in links(&text) {
            if link.starts_with("http://") || link.starts_with("https://") {
                continue;
            }
            checked += 1;
            let (file, part) = link.split_once('#').unwrap_or((link.as_str(), ""));
            let target = if file.is_empty() {
                page.clone()
            } else {
                dir.join(file)
            };
            if !target.exists() {
                broken.push(format!("{}: {link} (no such file)", page.display()));
                continue;
            }
            if !part.is_empty() && target.extension().is_some_and(|ext| ext == "md") {
                let headings = anchors(&std::fs::read_to_string(&target).unwrap());
                if !headings.contains(part) {
                    broken.push(format!("{}: {link} (no such heading)", page.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(
        checked >= 20,
        "only {checked} links found: is the reader broken?"
    );
}

/// A command line split as a shell would split simple words: quotes group, `\` escapes nothing
/// special here.
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut started = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                started = true;
            }
            (None, c) if c.is_whitespace() => {
                if started || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (None, c) => word.push(c),
        }
    }
    if started || !word.is_empty() {
        words.push(word);
    }
    words
}

/// The `ums-stub` and `onboard-agent` command lines of a page's shell examples, with where they
/// are.
fn commands(page: &Path, text: &str) -> Vec<(String, Vec<String>)> {
    let mut found = Vec::new();
    let mut shell = false;
    let mut continued = String::new();
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if let Some(tag) = trimmed.strip_prefix("```") {
            shell = !shell && matches!(tag, "sh" | "bash" | "console" | "shell");
            continued.clear();
            continue;
        }
        if !shell {
            continue;
        }
        // A line ending in `\` goes on on the next.
        if let Some(start) = trimmed.strip_suffix('\\') {
            continued.push_str(start);
            continued.push(' ');
            continue;
        }
        let whole = std::mem::take(&mut continued) + trimmed;
        // A comment, and what follows a shell operator, are not this command's.
        let code = whole.split(" #").next().unwrap_or_default();
        for part in code.split("&&").flat_map(|part| part.split(" | ")) {
            let mut all = words(part.trim().trim_start_matches("$ "));
            while all
                .first()
                .is_some_and(|word| word == "sudo" || word.contains('=') && !word.starts_with('-'))
            {
                all.remove(0);
            }
            // Optional parts of a usage line (`[--dry-run]`), and a job sent to the background.
            let mut optional = false;
            all.retain(|word| {
                let keep = !optional && !word.starts_with('[');
                if word.starts_with('[') {
                    optional = true;
                }
                if word.ends_with(']') {
                    optional = false;
                }
                keep && word != "&"
            });
            if all
                .first()
                .is_some_and(|word| word == "ums-stub" || word == "onboard-agent")
                && !part.contains("$(")
                && !part.contains('>')
                && !part.contains('<')
            {
                found.push((format!("{}:{}", page.display(), number + 1), all));
            }
        }
    }
    found
}

#[test]
fn every_command_line_in_the_examples_is_one_the_programs_accept() {
    let mut refused = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for (place, args) in commands(&page, &text) {
            checked += 1;
            let parsed = if args[0] == "ums-stub" {
                ums_stub::cli::Cli::try_parse_from(&args).map(|_| ())
            } else {
                onboard_agent::cli::Cli::try_parse_from(&args).map(|_| ())
            };
            // Asking for help or the version is a way of being accepted.
            if let Err(error) = parsed
                && !matches!(
                    error.kind(),
                    clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
                )
            {
                refused.push(format!("{place}: {}\n  {error}", args.join(" ")));
            }
        }
    }
    assert!(
        refused.is_empty(),
        "command lines the programs refuse:\n{}",
        refused.join("\n")
    );
    assert!(
        checked >= 15,
        "only {checked} command lines found: is the reader broken?"
    );
}

#[test]
fn the_readers_find_links_anchors_and_commands() {
    assert_eq!(
        links("see [a](b.md#c) and `[x](y)` and ![i](s/p.png)"),
        ["b.md#c", "s/p.png"]
    );
    assert_eq!(slug(" Metrics and health"), "metrics-and-health");
    assert_eq!(
        slug("ums-stub serve: EST enrollment"),
        "ums-stub-serve-est-enrollment"
    );
    let page = "```sh\nsudo ums-stub keys list --json  # all\nRUST_LOG=debug onboard-agent status && echo\nls | ums-stub x\nums-stub a \\\n  b [--c D] &\n```\nums-stub not-in-a-block\n";
    let found: Vec<Vec<String>> = commands(Path::new("p"), page)
        .into_iter()
        .map(|(_, args)| args)
        .collect();
    assert_eq!(
        found,
        [
            vec!["ums-stub", "keys", "list", "--json"],
            vec!["onboard-agent", "status"],
            vec!["ums-stub", "x"],
            vec!["ums-stub", "a", "b"]
        ]
    );
    assert_eq!(words("a 'b c' \"d\" ''"), ["a", "b c", "d", ""]);
}
