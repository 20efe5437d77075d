//! The key-count bound holds, and a file of 1,000,000 keys reads.

use onboard_protocol::{Format, KeyFile, Limits, Reason};

use crate::util::many_one_time_keys;

#[test]
fn more_keys_than_the_limit_are_refused_in_every_format() {
    let limits = Limits {
        max_keys: 10,
        ..Limits::default()
    };
    let file = many_one_time_keys(11);
    for format in Format::ALL {
        let error = KeyFile::parse(file.write(format).as_bytes(), &limits).unwrap_err();
        assert_eq!(error.reason, Reason::TooManyKeys(10), "{format}");
        assert!(
            error.to_string().contains("more than 10 keys"),
            "{format}: {error}"
        );
    }
    let exactly = many_one_time_keys(10);
    for format in Format::ALL {
        assert_eq!(
            KeyFile::parse(exactly.write(format).as_bytes(), &limits)
                .unwrap()
                .keys
                .len(),
            10
        );
    }
}

#[test]
fn a_million_keys_read_under_the_default_key_limit() {
    let file = many_one_time_keys(1_000_000);
    let xml = file.write(Format::Xml);
    let limits = Limits {
        max_bytes: 128 * 1024 * 1024,
        ..Limits::default()
    };
    assert_eq!(limits.max_keys, 1_000_000);
    let parsed = KeyFile::parse(xml.as_bytes(), &limits).unwrap();
    assert_eq!(parsed.keys.len(), 1_000_000);
    assert_eq!(
        parsed.keys[999_999].key().expose_secret(),
        "10000000000999999"
    );
}
