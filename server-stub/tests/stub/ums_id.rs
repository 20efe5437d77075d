//! The UMS ID: created once, shown, exported, moved between servers, independent of the
//! database and the host name.

use std::fs;

use onboard_protocol::Fingerprint;
use onboard_protocol::admin::UmsIdView;

use crate::util::{DataDir, mode};

#[test]
fn created_at_first_use_and_stable_afterwards() {
    let dir = DataDir::new();
    let raw = dir.ok(&["ums-id", "show", "--json"]);
    let shown: UmsIdView = serde_json::from_str(&raw).unwrap();
    let fingerprint: Fingerprint = shown.fingerprint;
    assert_eq!(shown.parts, fingerprint.parts());
    assert_eq!(shown.short, fingerprint.short());
    assert_eq!(shown.communication_token, fingerprint.parts()[2]);
    let created_at: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert!(
        created_at["created_at"].as_str().unwrap().ends_with('Z'),
        "created_at is RFC 3339 in UTC: {raw}"
    );
    assert_eq!(
        dir.fingerprint(),
        fingerprint.to_string(),
        "a second run shows the same UMS ID"
    );

    let text = dir.ok(&["ums-id", "show"]);
    for part in fingerprint.parts() {
        assert!(text.contains(&part), "{text}");
    }
    assert!(text.contains(&fingerprint.short()));

    assert_eq!(mode(&dir.path()), 0o700);
    assert_eq!(mode(&dir.path().join("ums-id")), 0o700);
    assert_eq!(mode(&dir.path().join("ums-id/ums-id.key.pem")), 0o600);
}

#[test]
fn export_writes_the_certificate_whose_der_has_the_fingerprint() {
    let dir = DataDir::new();
    let out = dir.scratch().join("ums-id.crt");
    dir.ok(&["ums-id", "export", "--out", out.to_str().unwrap()]);
    let pem_text = fs::read_to_string(&out).unwrap();
    assert!(pem_text.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(!pem_text.contains("PRIVATE KEY"));
    let der = pem::parse(&pem_text).unwrap().into_contents();
    assert_eq!(Fingerprint::of_der(&der).to_string(), dir.fingerprint());
    // The certificate names no host: no subjectAltName extension (OID 2.5.29.17).
    assert!(
        !der.windows(5).any(|w| w == [0x06, 0x03, 0x55, 0x1d, 0x11]),
        "the UMS ID names no host"
    );
    let again = dir.fails(&["ums-id", "export", "--out", out.to_str().unwrap()]);
    assert!(
        again.contains("already exists") && again.contains("--force"),
        "{again}"
    );
    dir.ok(&[
        "ums-id",
        "export",
        "--out",
        out.to_str().unwrap(),
        "--force",
    ]);
}

#[test]
fn backup_and_restore_move_the_identity_to_another_server() {
    let old = DataDir::new();
    let fingerprint = old.fingerprint();
    old.ok(&[
        "keys",
        "create",
        "mass",
        "--password",
        "moved along to the new host",
    ]);
    let backup = old.scratch().join("ums-id.backup");
    old.ok(&["ums-id", "backup", "--out", backup.to_str().unwrap()]);
    assert_eq!(mode(&backup), 0o600);
    assert!(fs::read_to_string(&backup).unwrap().contains("PRIVATE KEY"));

    // A fresh server takes the identity before its first use.
    let new = DataDir::new();
    new.ok(&["ums-id", "restore", backup.to_str().unwrap()]);
    assert_eq!(new.fingerprint(), fingerprint);
    // Restoring the same identity again changes nothing.
    assert!(
        new.ok(&["ums-id", "restore", backup.to_str().unwrap()])
            .contains("already in place")
    );

    // The database copied along opens under the restored identity: the keys still unseal.
    fs::copy(
        old.path().join("ums-stub.db"),
        new.path().join("ums-stub.db"),
    )
    .unwrap();
    let keys = new.list(&["--show"]);
    assert_eq!(keys[0].key, "moved along to the new host");

    // A server with its own identity refuses another one without --force.
    let other = DataDir::new();
    let own = other.fingerprint();
    let refused = other.fails(&["ums-id", "restore", backup.to_str().unwrap()]);
    assert!(
        refused.contains("already has another UMS ID") && refused.contains("--force"),
        "{refused}"
    );
    assert_eq!(other.fingerprint(), own, "the refusal changed nothing");
    other.ok(&["ums-id", "restore", backup.to_str().unwrap(), "--force"]);
    assert_eq!(other.fingerprint(), fingerprint);
}

#[test]
fn a_damaged_backup_is_refused_naming_the_file() {
    let dir = DataDir::new();
    let backup = dir.scratch().join("broken.backup");
    fs::write(&backup, "not a backup\n").unwrap();
    let refused = dir.fails(&["ums-id", "restore", backup.to_str().unwrap()]);
    assert!(
        refused.contains("broken.backup") && refused.contains("not a ums-stub UMS ID backup"),
        "{refused}"
    );
    let good = dir.scratch().join("good.backup");
    dir.ok(&["ums-id", "backup", "--out", good.to_str().unwrap()]);
    let text = fs::read_to_string(&good).unwrap();
    // Swap in another key pair's private key: it does not belong to the certificate.
    let other = DataDir::new();
    let other_backup = other.scratch().join("other.backup");
    other.ok(&["ums-id", "backup", "--out", other_backup.to_str().unwrap()]);
    let other_text = fs::read_to_string(&other_backup).unwrap();
    let key = |t: &str| {
        t[t.find("-----BEGIN PRIVATE KEY").unwrap()..t.find("-----BEGIN CERTIFICATE").unwrap()]
            .to_owned()
    };
    fs::write(&backup, text.replace(&key(&text), &key(&other_text))).unwrap();
    let refused = dir.fails(&["ums-id", "restore", backup.to_str().unwrap(), "--force"]);
    assert!(
        refused.contains("does not belong to the certificate"),
        "{refused}"
    );
    assert!(
        !refused.contains("BEGIN"),
        "no key material in the message: {refused}"
    );
}

#[test]
fn survives_deleting_or_restoring_the_database() {
    let dir = DataDir::new();
    let fingerprint = dir.fingerprint();
    dir.ok(&["keys", "create", "one-time", "--quantity", "2"]);
    let saved = dir.scratch().join("db.backup");
    fs::copy(dir.path().join("ums-stub.db"), &saved).unwrap();
    dir.ok(&["keys", "create", "one-time", "--quantity", "3"]);

    fs::remove_file(dir.path().join("ums-stub.db")).unwrap();
    assert_eq!(
        dir.fingerprint(),
        fingerprint,
        "deleting the database keeps the UMS ID"
    );
    assert!(dir.list(&[]).is_empty(), "a new, empty database");

    fs::copy(&saved, dir.path().join("ums-stub.db")).unwrap();
    assert_eq!(
        dir.fingerprint(),
        fingerprint,
        "restoring the database keeps the UMS ID"
    );
    assert_eq!(
        dir.list(&[]).len(),
        2,
        "the restored database holds its keys"
    );
}

#[test]
fn survives_a_host_name_change() {
    let dir = DataDir::new();
    let fingerprint = dir.fingerprint();
    dir.ok(&["keys", "create", "one-time", "--quantity", "1"]);
    let config = dir.path().join("ums-stub.toml");
    let export = |host: &str| {
        fs::write(&config, format!("public_host = \"{host}\"\n")).unwrap();
        let out = dir.scratch().join(format!("{host}.xml"));
        dir.ok(&["keys", "export", "--out", out.to_str().unwrap()]);
        let file = onboard_protocol::KeyFile::parse(&fs::read(&out).unwrap(), &Default::default())
            .unwrap();
        (file.servers[0].to_string(), file.ums_id.to_string())
    };
    assert_eq!(
        export("ums-old.example.com"),
        ("ums-old.example.com:8443".into(), fingerprint.clone())
    );
    assert_eq!(
        export("ums-new.example.com"),
        ("ums-new.example.com:8443".into(), fingerprint.clone())
    );
    assert_eq!(dir.fingerprint(), fingerprint);
}

#[test]
fn a_replacement_cut_short_puts_the_old_identity_back() {
    let dir = DataDir::new();
    let fingerprint = dir.fingerprint();
    // As if `restore --force` died between moving the old identity aside and moving the new one in.
    fs::rename(
        dir.path().join("ums-id"),
        dir.path().join(".ums-id-replaced"),
    )
    .unwrap();
    assert_eq!(
        dir.fingerprint(),
        fingerprint,
        "first use does not create a new UMS ID"
    );
    assert!(!dir.path().join(".ums-id-replaced").exists());
}

#[test]
fn restore_force_mends_a_damaged_identity_and_plain_use_names_the_file() {
    let donor = DataDir::new();
    let fingerprint = donor.fingerprint();
    let backup = donor.scratch().join("good.backup");
    donor.ok(&["ums-id", "backup", "--out", backup.to_str().unwrap()]);

    let dir = DataDir::new();
    dir.fingerprint();
    fs::remove_file(dir.path().join("ums-id/ums-id.json")).unwrap();
    let refused = dir.fails(&["ums-id", "show"]);
    assert!(refused.contains("ums-id.json"), "{refused}");
    let refused = dir.fails(&["ums-id", "restore", backup.to_str().unwrap()]);
    assert!(refused.contains("ums-id.json"), "{refused}");
    dir.ok(&["ums-id", "restore", backup.to_str().unwrap(), "--force"]);
    assert_eq!(dir.fingerprint(), fingerprint);
}

/// A database from before the store recorded its UMS ID: the `store_meta` row removed.
fn forget_the_binding(dir: &DataDir) {
    rusqlite::Connection::open(dir.path().join("ums-stub.db"))
        .unwrap()
        .execute("DELETE FROM store_meta", [])
        .unwrap();
}

#[test]
fn a_database_binds_to_its_ums_id_and_refuses_another() {
    let first = DataDir::new();
    first.ok(&["keys", "create", "one-time", "--quantity", "2"]);
    let made_under = first.fingerprint();
    let backup = first.scratch().join("first.backup");
    first.ok(&["ums-id", "backup", "--out", backup.to_str().unwrap()]);

    // Another UMS ID put in place: the database is refused, naming both and the fix.
    let other = DataDir::new();
    let other_backup = other.scratch().join("other.backup");
    other.ok(&["ums-id", "backup", "--out", other_backup.to_str().unwrap()]);
    first.ok(&[
        "ums-id",
        "restore",
        other_backup.to_str().unwrap(),
        "--force",
    ]);
    let replaced = first.fingerprint();
    for command in [
        &["keys", "list"][..],
        &["devices", "list"],
        &["audit"],
        &["keys", "create", "one-time", "--quantity", "1"],
    ] {
        let refused = first.fails(command);
        assert!(
            refused.contains(&made_under)
                && refused.contains(&replaced)
                && refused.contains("ums-stub ums-id restore"),
            "{command:?}: {refused}"
        );
    }
    // Nothing was changed by the refusals; the UMS ID it was made under opens it again.
    first.ok(&["ums-id", "restore", backup.to_str().unwrap(), "--force"]);
    assert_eq!(first.list(&[]).len(), 2);

    // A database that never recorded its UMS ID is bound only if its keys open under this one.
    forget_the_binding(&first);
    first.ok(&[
        "ums-id",
        "restore",
        other_backup.to_str().unwrap(),
        "--force",
    ]);
    let refused = first.fails(&["keys", "list"]);
    assert!(
        refused.contains("do not open under this server's UMS ID") && refused.contains(&replaced),
        "{refused}"
    );
    first.ok(&["ums-id", "restore", backup.to_str().unwrap(), "--force"]);
    assert_eq!(first.list(&[]).len(), 2, "bound now to the right UMS ID");
    first.ok(&[
        "ums-id",
        "restore",
        other_backup.to_str().unwrap(),
        "--force",
    ]);
    assert!(first.fails(&["keys", "list"]).contains(&made_under));
}
