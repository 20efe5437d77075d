//! The committed fixtures read back to the expected model, and the writers reproduce them.
//!
//! Run with `UPDATE_FIXTURES=1` to rewrite the fixtures from the writers after a deliberate change
//! to a format; review the diff before committing it.

use std::fs;

use onboard_protocol::{Format, KeyFile, Limits};

use crate::util::{fixture_model, fixtures_dir};

/// Turns the writer's UTF-8 text into a variant's bytes.
type Encode = fn(&str) -> Vec<u8>;

/// The variants every fixture is also committed in, as (suffix, encoding of the UTF-8 text).
fn variants() -> Vec<(&'static str, Encode)> {
    vec![
        ("crlf", |text| text.replace('\n', "\r\n").into_bytes()),
        ("bom", |text| {
            [&[0xEF, 0xBB, 0xBF][..], text.as_bytes()].concat()
        }),
        ("utf16le", |text| {
            let mut out = vec![0xFF, 0xFE];
            out.extend(
                text.replace('\n', "\r\n")
                    .encode_utf16()
                    .flat_map(u16::to_le_bytes),
            );
            out
        }),
        ("utf16be", |text| {
            let mut out = vec![0xFE, 0xFF];
            out.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
            out
        }),
    ]
}

fn extension(format: Format) -> &'static str {
    match format {
        Format::Xml => "xml",
        Format::Html => "html",
        Format::Text => "txt",
    }
}

#[test]
fn writers_reproduce_the_committed_fixtures() {
    let model = fixture_model();
    let update = std::env::var_os("UPDATE_FIXTURES").is_some();
    for format in Format::ALL {
        let written = model.write(format);
        let path = fixtures_dir().join(format!("icg.{}", extension(format)));
        let mut files = vec![(path, written.clone().into_bytes())];
        for (suffix, transform) in variants() {
            let name = format!("icg-{suffix}.{}", extension(format));
            files.push((fixtures_dir().join(name), transform(&written)));
        }
        for (path, bytes) in files {
            if update {
                fs::write(&path, &bytes).unwrap();
            }
            let committed = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                committed == bytes,
                "{} differs from what the {format} writer produces (UPDATE_FIXTURES=1 rewrites it)",
                path.display()
            );
        }
    }
}

#[test]
fn every_fixture_variant_reads_back_to_the_model() {
    let model = fixture_model();
    let mut read = 0;
    for entry in fs::read_dir(fixtures_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("icg") {
            continue;
        }
        let bytes = fs::read(&path).unwrap();
        let expected_format = match path.extension().unwrap().to_str().unwrap() {
            "xml" => Format::Xml,
            "html" => Format::Html,
            _ => Format::Text,
        };
        assert_eq!(
            Format::detect(&bytes, &Limits::default()).unwrap(),
            expected_format,
            "{name}"
        );
        let parsed =
            KeyFile::parse(&bytes, &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(parsed, model, "{name}");
        read += 1;
    }
    assert_eq!(read, 15, "three formats times five variants");
}

#[test]
fn a_hand_copied_ums_clipboard_text_reads() {
    // The UMS layout as an administrator pastes it into an e-mail: a greeting, no format version,
    // no key types, spacing and case as typed.
    let bytes = fs::read(fixtures_dir().join("ums-clipboard-email.txt")).unwrap();
    let file = KeyFile::parse(&bytes, &Limits::default()).unwrap();
    assert_eq!(file.servers.len(), 1);
    assert_eq!(file.servers[0].host(), "ums.example.com");
    assert_eq!(file.servers[0].port(), 8443);
    assert_eq!(file.ums_id.to_string(), crate::util::FIXTURE_FINGERPRINT);
    assert_eq!(file.keys.len(), 1);
    assert_eq!(file.keys[0].kind(), onboard_protocol::KeyKind::OneTime);
    assert_eq!(file.keys[0].key().expose_secret(), "40512337860129621");
    assert_eq!(file.exported_at, None);
}

/// `docs/key-files.md` shows one example per format; each must parse to the fixture model, so the
/// documentation cannot drift from the formats.
#[test]
fn readme_examples_parse_to_the_fixture_model() {
    let readme =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/key-files.md")).unwrap();
    let section = readme
        .split("<!-- key-file examples: begin -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- key-file examples: end -->").next())
        .expect("docs/key-files.md has a key-file examples section");
    let mut found = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        let Some(tag) = line.strip_prefix("```").filter(|tag| !tag.is_empty()) else {
            continue;
        };
        let body: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .collect();
        let text = body.join("\n") + "\n";
        let format: Format = tag.parse().unwrap();
        let parsed = KeyFile::parse(text.as_bytes(), &Limits::default())
            .unwrap_or_else(|e| panic!("docs/key-files.md {tag} example: {e}"));
        assert_eq!(parsed, fixture_model(), "docs/key-files.md {tag} example");
        assert_eq!(
            text,
            fixture_model().write(format),
            "docs/key-files.md {tag} example is not the writer's output"
        );
        found.push(format);
    }
    assert_eq!(
        found,
        Format::ALL,
        "one docs/key-files.md example per format, in order"
    );
}
