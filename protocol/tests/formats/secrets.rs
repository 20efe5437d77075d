//! No `Debug` or `Display` of a key, a key entry, a key file or a refusal shows a key value.

use onboard_protocol::{FirstAuthKey, Format, KeyFile, Limits};

use crate::util::fixture_model;

const SECRETS: [&str; 3] = [
    "40512337860129621",
    "77120954388310452",
    "Rollout & <Spring> \"2026\"",
];

fn assert_hidden(what: &str, shown: &str) {
    for secret in SECRETS {
        assert!(!shown.contains(secret), "{what} shows a key: {shown}");
    }
}

#[test]
fn key_file_and_keys_print_masked() {
    let file = fixture_model();
    assert_hidden("KeyFile Display", &file.to_string());
    assert_hidden("KeyFile Debug", &format!("{file:?}"));
    assert_hidden("KeyFile pretty Debug", &format!("{file:#?}"));
    for entry in &file.keys {
        assert_hidden("KeyEntry Debug", &format!("{entry:?}"));
        assert_hidden("FirstAuthKey Display", &entry.key().to_string());
    }
    assert!(
        format!("{file:?}").contains("*************9621"),
        "the masked form shows the last four digits"
    );
}

#[test]
fn refusals_never_quote_a_key() {
    let limits = Limits::default();
    let good = fixture_model().write(Format::Xml);
    // Break the file around each key in ways that make the reader stop right at it, or put a key
    // where another field belongs.
    let broken = [
        good.replace(
            "value=\"40512337860129621\"",
            "value=\"40512337860129621&x;\"",
        ),
        good.replace(
            "value=\"40512337860129621\"",
            "value=\"40512337860129621&#0;\"",
        ),
        good.replace("type=\"device-bound\"", "type=\"40512337860129621\""),
        good.replace("unit-id=\"00E0C5540B8B\"", "unit-id=\"77120954388310452\""),
        good.replace("host=\"ums.example.com\"", "host=\"40512337860129621 x\""),
        good.replace("version=\"1\"", "version=\"40512337860129621\""),
        good.replace(
            "exported=\"2026-11-22T10:00:00Z\"",
            "exported=\"40512337860129621\"",
        ),
        good.replace(
            "value=\"40512337860129621\"/>",
            "value=\"40512337860129621\" value=\"40512337860129621\"/>",
        ),
        good.replace("\"40512337860129621\"/>", "\"40512337860129621"),
        fixture_model()
            .write(Format::Text)
            .replace("Port: 8443", "Port: 40512337860129621"),
    ];
    for (index, bytes) in broken.iter().enumerate() {
        let error = KeyFile::parse(bytes.as_bytes(), &limits).expect_err("broken file accepted");
        assert_hidden(&format!("refusal {index} Display"), &error.to_string());
        assert_hidden(&format!("refusal {index} Debug"), &format!("{error:?}"));
    }
    let bad_key = FirstAuthKey::new("ab\ncd secret-ish").unwrap_err();
    assert!(!bad_key.to_string().contains("secret-ish"));
}
