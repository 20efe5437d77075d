//! Shared builders for the format tests.

use std::path::PathBuf;

use onboard_protocol::{Fingerprint, FirstAuthKey, KeyEntry, KeyFile, Server};
use time::macros::datetime;

/// The fingerprint every fixture pins.
pub(crate) const FIXTURE_FINGERPRINT: &str =
    "3f1a9c0e5b7d2468ace013579bdf2468a1b2c3d4e5f60718293a4b5c6d7e8f90";

/// The model the fixtures hold: two servers, one key of each kind (the mass password needs
/// escaping in every markup).
pub(crate) fn fixture_model() -> KeyFile {
    KeyFile::new(
        vec![
            Server::new("ums.example.com", 8443).unwrap(),
            Server::new("192.0.2.10", 8443).unwrap(),
        ],
        FIXTURE_FINGERPRINT.parse::<Fingerprint>().unwrap(),
        vec![
            KeyEntry::one_time(FirstAuthKey::new("40512337860129621").unwrap()),
            KeyEntry::device_bound(
                FirstAuthKey::new("77120954388310452").unwrap(),
                "00:E0:C5:54:0B:8B".parse().unwrap(),
            ),
            KeyEntry::mass(FirstAuthKey::new("Rollout & <Spring> \"2026\"").unwrap()),
        ],
        Some(datetime!(2026-11-22 10:00:00 UTC)),
    )
}

/// The folder of committed fixtures.
pub(crate) fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A one-time-key file of `count` keys with 17-digit values.
pub(crate) fn many_one_time_keys(count: usize) -> KeyFile {
    let keys = (0..count)
        .map(|i| {
            KeyEntry::one_time(
                FirstAuthKey::new(format!("{:017}", 10_000_000_000_000_000u64 + i as u64)).unwrap(),
            )
        })
        .collect();
    KeyFile::new(
        vec![Server::new("ums.example.com", 8443).unwrap()],
        FIXTURE_FINGERPRINT.parse().unwrap(),
        keys,
        None,
    )
}
