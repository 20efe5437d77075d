//! Write then read gives back the same model, in every format.

use onboard_protocol::{
    Fingerprint, FirstAuthKey, Format, KeyEntry, KeyFile, Limits, Server, UnitId,
};
use proptest::prelude::*;
use time::OffsetDateTime;

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,15}(\\.[a-z][a-z0-9-]{0,10}){0,3}",
        (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        Just("fd00::10".to_owned()),
    ]
}

fn server() -> impl Strategy<Value = Server> {
    (host(), 1u16..).prop_map(|(host, port)| Server::new(host, port).unwrap())
}

/// Generated 17-digit keys, and typed passwords with characters every markup must escape.
fn key_value() -> impl Strategy<Value = FirstAuthKey> {
    prop_oneof!["[0-9]{17}", "[!-~àéü€ß]([ !-~àéü€ß]{0,40}[!-~àéü€ß])?",]
        .prop_map(|value| FirstAuthKey::new(value).unwrap())
}

fn unit_id() -> impl Strategy<Value = UnitId> {
    prop_oneof!["[0-9A-F]{12}", "[A-Z0-9]{18}"].prop_map(|text| text.parse().unwrap())
}

fn entry() -> impl Strategy<Value = KeyEntry> {
    prop_oneof![
        key_value().prop_map(KeyEntry::one_time),
        (key_value(), unit_id()).prop_map(|(key, unit)| KeyEntry::device_bound(key, unit)),
        key_value().prop_map(KeyEntry::mass),
    ]
}

fn exported_at() -> impl Strategy<Value = Option<OffsetDateTime>> {
    // Whole seconds from 2000 to 2100, as the writers print them.
    proptest::option::of(
        (946_684_800i64..4_102_444_800)
            .prop_map(|s| OffsetDateTime::from_unix_timestamp(s).unwrap()),
    )
}

fn key_file() -> impl Strategy<Value = KeyFile> {
    (
        proptest::collection::vec(server(), 1..4),
        any::<[u8; 32]>(),
        proptest::collection::vec(entry(), 1..24),
        exported_at(),
    )
        .prop_map(|(servers, fingerprint, keys, exported_at)| {
            KeyFile::new(
                servers,
                Fingerprint::from_bytes(fingerprint),
                keys,
                exported_at,
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn xml_round_trips(file in key_file()) {
        let written = file.write(Format::Xml);
        prop_assert_eq!(Format::detect(written.as_bytes(), &Limits::default()).unwrap(), Format::Xml);
        prop_assert_eq!(KeyFile::parse(written.as_bytes(), &Limits::default()).unwrap(), file);
    }

    #[test]
    fn html_round_trips(file in key_file()) {
        let written = file.write(Format::Html);
        prop_assert_eq!(Format::detect(written.as_bytes(), &Limits::default()).unwrap(), Format::Html);
        prop_assert_eq!(KeyFile::parse(written.as_bytes(), &Limits::default()).unwrap(), file);
    }

    #[test]
    fn text_round_trips(file in key_file()) {
        let written = file.write(Format::Text);
        prop_assert_eq!(Format::detect(written.as_bytes(), &Limits::default()).unwrap(), Format::Text);
        prop_assert_eq!(KeyFile::parse(written.as_bytes(), &Limits::default()).unwrap(), file);
    }

    #[test]
    fn every_format_round_trips_through_utf16(file in key_file()) {
        for format in Format::ALL {
            let mut bytes = vec![0xFF, 0xFE];
            bytes.extend(file.write(format).encode_utf16().flat_map(u16::to_le_bytes));
            prop_assert_eq!(&KeyFile::parse(&bytes, &Limits::default()).unwrap(), &file);
        }
    }
}
