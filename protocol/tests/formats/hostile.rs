//! Hostile and broken input: each case refused with the expected reason and position, never a
//! panic or a hang.

use onboard_protocol::{Format, KeyFile, KeyFileError, KeyValueError, Limits, Reason};
use proptest::prelude::*;

use crate::util::fixture_model;

const FP: &str = crate::util::FIXTURE_FINGERPRINT;

fn xml_with(body: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?>\n<first-authentication-keys version=\"1\">\n\
         <ums-id fingerprint=\"{FP}\"/>\n<server host=\"ums.example.com\" port=\"8443\"/>\n{body}\n\
         </first-authentication-keys>\n"
    )
}

fn refuse(bytes: &[u8], limits: &Limits) -> KeyFileError {
    match KeyFile::parse(bytes, limits) {
        Ok(file) => panic!("accepted: {file}"),
        Err(error) => error,
    }
}

/// Asserts the refusal's reason matches and its message names `position` ("line N" or
/// "line N, column M"; empty for a whole-file refusal).
fn check(
    name: &str,
    bytes: &[u8],
    limits: &Limits,
    expected: fn(&Reason) -> bool,
    position: &str,
    message: &str,
) {
    let error = refuse(bytes, limits);
    assert!(
        expected(&error.reason),
        "{name}: unexpected reason {:?}",
        error.reason
    );
    let shown = error.to_string();
    assert!(
        shown.starts_with(position),
        "{name}: {shown:?} should start with {position:?}"
    );
    assert!(
        shown.contains(message),
        "{name}: {shown:?} should say {message:?}"
    );
}

#[test]
fn hostile_inputs_are_refused_with_the_expected_message() {
    let limits = Limits::default();
    let billion_laughs = "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n \
        <!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n \
        <!ENTITY lol9 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">\n]>\n\
        <first-authentication-keys version=\"1\">&lol9;</first-authentication-keys>\n";
    let external_entity = "<?xml version=\"1.0\"?>\n<!DOCTYPE k [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>\n\
        <first-authentication-keys version=\"1\">&x;</first-authentication-keys>";
    let deep = xml_with(&format!(
        "{}{}",
        "<a>".repeat(10_000),
        "</a>".repeat(10_000)
    ));
    let good = fixture_model().write(Format::Xml);
    let truncated_tag = &good[..good.find("<server").unwrap() + 12];
    let truncated_root = &good[..good.rfind("</first").unwrap()];
    let mut garbage = Vec::with_capacity(4096);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..4096 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        garbage.push(state as u8);
    }

    type Case<'a> = (&'a str, Vec<u8>, fn(&Reason) -> bool, &'a str, &'a str);
    let cases: Vec<Case<'_>> = vec![
        ("empty", b"".to_vec(), |r| matches!(r, Reason::Empty), "", "empty"),
        ("billion laughs", billion_laughs.into(), |r| matches!(r, Reason::Doctype), "line 2, column 1", "DOCTYPE"),
        ("external entity", external_entity.into(), |r| matches!(r, Reason::Doctype), "line 2, column 1", "DOCTYPE"),
        (
            "undeclared entity",
            xml_with("<key type=\"mass\" value=\"a&lol;b\"/>").into(),
            |r| matches!(r, Reason::UnknownEntity),
            "line 5",
            "entity reference",
        ),
        ("deeply nested", deep.into(), |r| matches!(r, Reason::TooDeep(32)), "line 5, column 94", "deeper than 32"),
        ("truncated inside a tag", truncated_tag.into(), |r| matches!(r, Reason::Malformed(_)), "line 4", "malformed markup"),
        (
            "truncated before the root closes",
            truncated_root.into(),
            |r| matches!(r, Reason::Truncated(_)),
            "line 9",
            "cut short",
        ),
        (
            "invalid UTF-8",
            [&good.as_bytes()[..60], b"\xC3\x28", &good.as_bytes()[60..]].concat(),
            |r| matches!(r, Reason::InvalidUtf8),
            "line 2, column 22",
            "invalid UTF-8",
        ),
        ("binary garbage", garbage, |r| matches!(r, Reason::InvalidUtf8), "line 1, column 1", "invalid UTF-8"),
        (
            "NUL bytes",
            b"<first-authentication-keys\0version=\"1\"/>".to_vec(),
            |r| matches!(r, Reason::NulCharacter),
            "line 1, column 27",
            "NUL",
        ),
        (
            "another XML document",
            b"<?xml version=\"1.0\"?>\n<project><name>x</name></project>".to_vec(),
            |r| matches!(r, Reason::WrongRoot(name) if name == "project"),
            "line 2, column 1",
            "expected <first-authentication-keys>",
        ),
        (
            "a newer format version",
            xml_with("").replace("version=\"1\">", "version=\"2\">").into(),
            |r| matches!(r, Reason::UnsupportedVersion),
            "line 2",
            "knows version 1",
        ),
        (
            "a control character in a key",
            xml_with("<key type=\"mass\" value=\"ab&#10;cd\"/>").into(),
            |r| matches!(r, Reason::KeyValue(KeyValueError::ControlCharacter)),
            "line 5, column 1",
            "control character",
        ),
        (
            "a device-bound key without unit ID",
            xml_with("<key type=\"device-bound\" value=\"12345678901234567\"/>").into(),
            |r| matches!(r, Reason::KeyEntry(_)),
            "line 5",
            "must name the unit ID",
        ),
        (
            "a bad unit ID",
            xml_with("<key type=\"device-bound\" unit-id=\"00:11\" value=\"12345678901234567\"/>").into(),
            |r| matches!(r, Reason::UnitId),
            "line 5",
            "12 hex digits",
        ),
        (
            "a port out of range",
            xml_with("").replace("port=\"8443\"", "port=\"70000\"").into(),
            |r| matches!(r, Reason::Server(_)),
            "line 4",
            "not a number from 1 to 65535",
        ),
        (
            "no keys",
            xml_with("").into(),
            |r| matches!(r, Reason::NoKeys),
            "",
            "no first-authentication key",
        ),
        (
            "HTML with an internal DTD subset",
            b"<!DOCTYPE html [<!ENTITY x \"y\">]>\n<html data-format=\"onboard-keys\"></html>".to_vec(),
            |r| matches!(r, Reason::Doctype),
            "line 1, column 1",
            "DOCTYPE",
        ),
        (
            "an HTML page that is not an export",
            b"<!DOCTYPE html>\n<html><body><p>Read me</p></body></html>".to_vec(),
            |r| matches!(r, Reason::NotAKeyFile),
            "line 2, column 1",
            "not a key file",
        ),
        (
            "a text block without port",
            format!("Host: ums\nRoot Certificate Fingerprint: {FP}\nFirst-authentication key: 12345678901234567\n").into(),
            |r| matches!(r, Reason::Layout(_)),
            "line 1",
            "no Port: line",
        ),
        (
            "text blocks pinning different UMS IDs",
            format!(
                "Host: a\nPort: 8443\nRoot Certificate Fingerprint: {FP}\nFirst-authentication key: 12345678901234567\n\
                 Host: b\nPort: 8443\nRoot Certificate Fingerprint: {}\nFirst-authentication key: 12345678901234567\n",
                "0".repeat(64)
            )
            .into(),
            |r| matches!(r, Reason::ConflictingFingerprint),
            "line 5",
            "differs from the first",
        ),
        (
            "plain prose",
            b"Dear admin,\nplease find the keys attached.\n".to_vec(),
            |r| matches!(r, Reason::NotAKeyFile),
            "",
            "not a key file",
        ),
    ];
    for (name, bytes, expected, position, message) in cases {
        check(name, &bytes, &limits, expected, position, message);
    }
}

#[test]
fn a_50_mb_attribute_is_refused_by_size_and_by_field_length() {
    let huge = xml_with(&format!(
        "<key type=\"mass\" value=\"{}\"/>",
        "A".repeat(50 * 1024 * 1024)
    ));
    check(
        "default limits",
        huge.as_bytes(),
        &Limits::default(),
        |r| matches!(r, Reason::TooLarge { limit, .. } if *limit == 16 * 1024 * 1024),
        "",
        "more than the limit of 16777216 bytes",
    );
    let roomy = Limits {
        max_bytes: 64 * 1024 * 1024,
        ..Limits::default()
    };
    check(
        "size limit raised",
        huge.as_bytes(),
        &roomy,
        |r| matches!(r, Reason::FieldTooLong(4096)),
        "line 5, column 1",
        "longer than 4096 bytes",
    );
    let huge_unknown = xml_with(&format!(
        "<note text=\"{}\"/>",
        "A".repeat(50 * 1024 * 1024)
    ));
    check(
        "on an element the reader skips",
        huge_unknown.as_bytes(),
        &roomy,
        |r| matches!(r, Reason::FieldTooLong(4096)),
        "line 5, column 1",
        "longer than 4096 bytes",
    );
}

#[test]
fn a_huge_html_cell_and_text_line_are_refused() {
    let roomy = Limits {
        max_bytes: 64 * 1024 * 1024,
        ..Limits::default()
    };
    let html = fixture_model()
        .write(Format::Html)
        .replace("40512337860129621", &"9".repeat(20 * 1024 * 1024));
    check(
        "html cell",
        html.as_bytes(),
        &roomy,
        |r| matches!(r, Reason::FieldTooLong(4096)),
        "line ",
        "longer than",
    );
    let text = fixture_model()
        .write(Format::Text)
        .replace("40512337860129621", &"9".repeat(20 * 1024 * 1024));
    check(
        "text line",
        text.as_bytes(),
        &roomy,
        |r| matches!(r, Reason::FieldTooLong(4096)),
        "line 12",
        "longer than",
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary bytes: refused or read, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = KeyFile::parse(&bytes, &Limits::default());
    }

    /// A valid export with one byte changed, inserted or cut: refused or read, never a panic.
    #[test]
    fn mutated_exports_never_panic(format_index in 0usize..3, at in any::<prop::sample::Index>(), byte in any::<u8>(), op in 0u8..3) {
        let mut bytes = fixture_model().write(Format::ALL[format_index]).into_bytes();
        let i = at.index(bytes.len());
        match op {
            0 => bytes[i] = byte,
            1 => bytes.insert(i, byte),
            _ => bytes.truncate(i),
        }
        let _ = KeyFile::parse(&bytes, &Limits::default());
    }
}
