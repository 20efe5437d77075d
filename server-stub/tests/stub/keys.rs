//! Key commands: behaviour, refusals, and a round trip through an export.

use std::fs;

use onboard_protocol::admin::{AuditEntryView, KeyStatus, KeyView, Page};
use onboard_protocol::{Format, KeyFile, KeyKind, Limits, UnitId};

use crate::util::{DataDir, mode};

fn ids(keys: &[KeyView]) -> Vec<i64> {
    keys.iter().map(|k| k.id).collect()
}

#[test]
fn one_time_keys_are_17_digit_unique_and_listed_masked() {
    let dir = DataDir::new();
    let said = dir.ok(&[
        "keys",
        "create",
        "one-time",
        "--quantity",
        "50",
        "--comment",
        "lab rack 3",
    ]);
    assert!(
        said.contains("Created 50 one-time keys: IDs 1 to 50"),
        "{said}"
    );
    let shown = dir.list(&["--show"]);
    assert_eq!(shown.len(), 50);
    let values: std::collections::HashSet<&str> = shown.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(values.len(), 50, "unique");
    assert!(
        values
            .iter()
            .all(|v| v.len() == 17 && v.bytes().all(|b| b.is_ascii_digit()))
    );
    let first = &shown[0];
    assert_eq!(first.kind, KeyKind::OneTime);
    assert_eq!(first.status, KeyStatus::Active);
    assert_eq!(first.usage_count, 0);
    assert_eq!(first.usage_date, None);
    assert_eq!(first.unit_id, None);
    assert!(first.shown);
    assert_eq!(first.comment, "lab rack 3");

    let masked = dir.list(&[]);
    let secret = first.key.as_str();
    assert!(!masked[0].shown);
    assert_eq!(masked[0].key, format!("*************{}", &secret[13..]));
    let table = dir.ok(&["keys", "list"]);
    for column in [
        "Unit ID",
        "Key",
        "Status",
        "Usage date",
        "Usage count",
        "Type",
        "Comment",
    ] {
        assert!(table.contains(column), "{table}");
    }
    assert!(
        !values.iter().any(|v| table.contains(v)),
        "the table masks keys"
    );
    assert!(dir.ok(&["keys", "list", "--show"]).contains(secret));

    for bad in ["0", "1000001"] {
        let refused = dir.fails(&["keys", "create", "one-time", "--quantity", bad]);
        assert!(
            refused.contains("quantity must be from 1 to 1000000"),
            "{refused}"
        );
    }
    assert_eq!(dir.list(&[]).len(), 50);
}

#[test]
fn device_bound_keys_from_the_command_line_and_csv() {
    let dir = DataDir::new();
    dir.ok(&[
        "keys",
        "create",
        "device-bound",
        "--unit-id",
        "00:e0:c5:54:0b:8b",
        "--unit-id",
        "00-E0-C5-54-0B-8C",
    ]);
    let csv = dir.scratch().join("units.csv");
    fs::write(
        &csv,
        "Unit ID;Location\r\n00e0c5540b8d;hall\r\n\"00:E0:C5:54:0B:8E\";desk\r\n",
    )
    .unwrap();
    dir.ok(&[
        "keys",
        "create",
        "device-bound",
        "--import",
        csv.to_str().unwrap(),
        "--comment",
        "imported",
    ]);
    let bound = dir.list(&["--type", "device-bound"]);
    let units: Vec<&str> = bound
        .iter()
        .map(|k| k.unit_id.as_ref().unwrap().as_str())
        .collect();
    assert_eq!(
        units,
        [
            "00E0C5540B8B",
            "00E0C5540B8C",
            "00E0C5540B8D",
            "00E0C5540B8E"
        ]
    );
    let one = dir.list(&["--unit-id", "00:E0:C5:54:0B:8D"]);
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].comment, "imported");

    // Bad and repeated rows are all reported by line, and nothing is created.
    fs::write(
        &csv,
        "00e0c5540b90\nbogus\n00:e0:c5:54:0b:90\n00e0c5540b91\n",
    )
    .unwrap();
    let refused = dir.fails(&[
        "keys",
        "create",
        "device-bound",
        "--import",
        csv.to_str().unwrap(),
    ]);
    assert!(refused.contains("units.csv"), "{refused}");
    assert!(
        refused.contains("line 2: \"bogus\" is not a unit ID"),
        "{refused}"
    );
    assert!(
        refused.contains("line 3: 00E0C5540B90 repeats line 1"),
        "{refused}"
    );
    assert_eq!(dir.list(&[]).len(), 4, "nothing was created");
    let refused = dir.fails(&[
        "keys",
        "create",
        "device-bound",
        "--unit-id",
        "00e0c5540b92",
        "--unit-id",
        "nope",
    ]);
    assert!(refused.contains("line 2"), "{refused}");
    assert_eq!(dir.list(&[]).len(), 4);
    let missing = dir.fails(&["keys", "create", "device-bound", "--import", "/no/such.csv"]);
    assert!(missing.contains("/no/such.csv"), "{missing}");
}

#[test]
fn mass_keys_random_or_typed_and_never_twice() {
    let dir = DataDir::new();
    let said = dir.ok(&["keys", "create", "mass"]);
    assert!(
        said.contains("Created mass-deployment key 1: *************"),
        "{said}"
    );
    dir.ok(&[
        "keys",
        "create",
        "mass",
        "--password",
        "Spring rollout 2026",
        "--comment",
        "wave 1",
    ]);
    let refused = dir.fails(&[
        "keys",
        "create",
        "mass",
        "--password",
        "Spring rollout 2026",
    ]);
    assert!(
        refused.contains("two keys cannot share a password"),
        "{refused}"
    );
    assert!(
        !refused.contains("Spring rollout 2026"),
        "the refusal does not repeat the password"
    );
    // A password equal to an existing generated key is refused too.
    let generated = dir.list(&["--show"])[0].key.clone();
    dir.fails(&["keys", "create", "mass", "--password", &generated]);
    let refused = dir.fails(&["keys", "create", "mass", "--password", " padded"]);
    assert!(refused.contains("white space"), "{refused}");
    // From standard input, so the password is not on a command line.
    let mut child = dir
        .command(&["keys", "create", "mass", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Typed Quietly 42\r\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let mass = dir.list(&["--type", "mass", "--show"]);
    assert_eq!(mass.len(), 3);
    assert_eq!(mass[2].key, "Typed Quietly 42");
    assert_eq!(mass[1].key, "Spring rollout 2026");
    assert_eq!(mass[1].kind, KeyKind::MassDeployment);
}

#[test]
fn edit_activate_deactivate_delete_and_filters() {
    let dir = DataDir::new();
    dir.ok(&["keys", "create", "one-time", "--quantity", "4"]);
    dir.ok(&["keys", "edit", "2", "--comment", "spare"]);
    assert_eq!(dir.list(&[])[1].comment, "spare");
    dir.ok(&["keys", "deactivate", "1", "3"]);
    assert_eq!(ids(&dir.list(&["--status", "inactive"])), [1, 3]);
    assert_eq!(ids(&dir.list(&["--status", "active"])), [2, 4]);
    assert!(dir.list(&["--status", "used"]).is_empty());
    dir.ok(&["keys", "activate", "3"]);
    assert_eq!(ids(&dir.list(&["--status", "active"])), [2, 3, 4]);
    dir.ok(&["keys", "delete", "4"]);
    assert_eq!(ids(&dir.list(&[])), [1, 2, 3]);

    // An unknown ID in a batch changes nothing at all.
    let refused = dir.fails(&["keys", "deactivate", "2", "99"]);
    assert!(
        refused.contains("no key with ID 99; nothing was changed"),
        "{refused}"
    );
    assert_eq!(ids(&dir.list(&["--status", "active"])), [2, 3]);
    dir.fails(&["keys", "delete", "1", "98"]);
    assert_eq!(ids(&dir.list(&[])), [1, 2, 3]);
    dir.fails(&["keys", "edit", "97", "--comment", "x"]);
    let bad_unit = dir.fails(&["keys", "list", "--unit-id", "xyz"]);
    assert!(
        bad_unit.contains("--unit-id") && bad_unit.contains("12 hex digits"),
        "{bad_unit}"
    );
}

#[test]
fn export_round_trips_through_the_protocol_readers() {
    let dir = DataDir::new();
    dir.ok(&["keys", "create", "one-time", "--quantity", "3"]);
    dir.ok(&[
        "keys",
        "create",
        "device-bound",
        "--unit-id",
        "00e0c5540b8b",
    ]);
    dir.ok(&[
        "keys",
        "create",
        "mass",
        "--password",
        "a & b <c> lab rollout",
    ]);
    dir.ok(&["keys", "deactivate", "2"]);
    let listed = dir.list(&["--show"]);
    let fingerprint = dir.fingerprint();

    for (format, name) in [
        ("xml", "icg.xml"),
        ("html", "icg.html"),
        ("text", "icg.txt"),
    ] {
        let out = dir.scratch().join(name);
        let said = dir.ok(&[
            "keys",
            "export",
            "--format",
            format,
            "--out",
            out.to_str().unwrap(),
            "--server",
            "ums.example.com",
            "--server",
            "[fd00::5]:9443",
        ]);
        assert!(
            said.contains("Exported 4 keys (2 one-time, 1 device-bound, 1 mass)"),
            "{said}"
        );
        assert_eq!(mode(&out), 0o600);
        let bytes = fs::read(&out).unwrap();
        assert_eq!(
            Format::detect(&bytes, &Limits::default()).unwrap().as_str(),
            format
        );
        let file = KeyFile::parse(&bytes, &Limits::default()).unwrap();
        assert_eq!(file.ums_id.to_string(), fingerprint);
        let servers: Vec<String> = file.servers.iter().map(ToString::to_string).collect();
        assert_eq!(servers, ["ums.example.com:8443", "[fd00::5]:9443"]);
        // Every active key, with the value `keys list --show` gives; the inactive one is left out.
        let expected: Vec<(&str, &str, Option<&str>)> = listed
            .iter()
            .filter(|k| k.status == KeyStatus::Active)
            .map(|k| {
                (
                    k.kind.as_str(),
                    k.key.as_str(),
                    k.unit_id.as_ref().map(UnitId::as_str),
                )
            })
            .collect();
        let got: Vec<(&str, &str, Option<&str>)> = file
            .keys
            .iter()
            .map(|e| {
                (
                    e.kind().as_str(),
                    e.key().expose_secret(),
                    e.unit_id().map(|u| u.as_str()),
                )
            })
            .collect();
        assert_eq!(got, expected, "{format}");
        assert_eq!(file.count(KeyKind::DeviceBound), 1);

        let again = dir.fails(&[
            "keys",
            "export",
            "--format",
            format,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(
            again.contains("already exists") && again.contains("--force"),
            "{again}"
        );
        assert_eq!(
            fs::read(&out).unwrap(),
            bytes,
            "the refused export left the file alone"
        );
    }

    // Named IDs: exactly those; an inactive or unknown one is refused.
    let out = dir.scratch().join("picked.xml");
    dir.ok(&["keys", "export", "--out", out.to_str().unwrap(), "1", "4"]);
    let picked = KeyFile::parse(&fs::read(&out).unwrap(), &Limits::default()).unwrap();
    assert_eq!(picked.keys.len(), 2);
    let refused = dir.fails(&[
        "keys",
        "export",
        "--out",
        out.to_str().unwrap(),
        "--force",
        "2",
    ]);
    assert!(refused.contains("key 2 is inactive"), "{refused}");
    let refused = dir.fails(&[
        "keys",
        "export",
        "--out",
        out.to_str().unwrap(),
        "--force",
        "1",
        "77",
    ]);
    assert!(refused.contains("no key with ID 77"), "{refused}");
    let refused = dir.fails(&["keys", "export", "--out", "/no/such/folder/icg.xml"]);
    assert!(refused.contains("/no/such/folder"), "{refused}");
}

#[test]
fn export_defaults_to_the_configured_host_and_port_8443() {
    let dir = DataDir::new();
    dir.ok(&["keys", "create", "one-time", "--quantity", "1"]);
    let config = dir.scratch().join("stub.toml");
    fs::write(&config, "public_host = \"ums.corp.example\"\n").unwrap();
    let out = dir.scratch().join("icg.xml");
    dir.ok(&[
        "--config",
        config.to_str().unwrap(),
        "keys",
        "export",
        "--out",
        out.to_str().unwrap(),
    ]);
    let file = KeyFile::parse(&fs::read(&out).unwrap(), &Limits::default()).unwrap();
    assert_eq!(file.servers[0].to_string(), "ums.corp.example:8443");
    let empty = DataDir::new();
    let refused = empty.fails(&["keys", "export", "--out", out.to_str().unwrap(), "--force"]);
    assert!(refused.contains("no key to export"), "{refused}");
}

#[test]
fn every_key_change_is_in_the_audit_log() {
    let dir = DataDir::new();
    dir.ok(&["keys", "create", "one-time", "--quantity", "3"]);
    dir.ok(&["keys", "edit", "2", "--comment", "spare"]);
    dir.ok(&["keys", "deactivate", "1", "3"]);
    dir.ok(&["keys", "activate", "3"]);
    dir.ok(&["keys", "delete", "1"]);
    dir.fails(&["keys", "delete", "99"]);
    let log: Page<AuditEntryView> = serde_json::from_str(&dir.ok(&["audit", "--json"])).unwrap();
    assert_eq!(log.total, Some(5));
    let log = log.items;
    let events: Vec<(&str, Option<i64>, &str)> = log
        .iter()
        .map(|e| (e.event.as_str(), e.key_id, e.detail.as_str()))
        .collect();
    assert_eq!(
        events,
        [
            ("keys.create", None, "IDs 1, 2, 3"),
            ("keys.edit", Some(2), "comment"),
            ("keys.deactivate", None, "IDs 1, 3"),
            ("keys.activate", Some(3), "IDs 3"),
            ("keys.delete", Some(1), "IDs 1"),
        ],
        "a refused change leaves no line"
    );
    assert!(
        log.iter()
            .all(|e| e.actor == "cli" && e.source == "local" && e.outcome == "ok")
    );
    let since: Page<AuditEntryView> =
        serde_json::from_str(&dir.ok(&["audit", "--json", "--since", "2999-01-01T00:00:00Z"]))
            .unwrap();
    assert!(since.items.is_empty());
    assert_eq!(since.total, Some(0));
    let refused = dir.fails(&["audit", "--since", "yesterday"]);
    assert!(refused.contains("RFC 3339"), "{refused}");
}

#[test]
fn local_reveals_and_exports_are_audited_before_anything_is_shown() {
    let dir = DataDir::new();
    dir.ok(&["keys", "create", "one-time", "--quantity", "3"]);
    // A masked list shows nothing and leaves no line; a shown one and an export each leave one.
    dir.list(&[]);
    let shown = dir.list(&["--show"]);
    let out = dir.scratch().join("stick.xml");
    dir.ok(&["keys", "export", "2", "3", "--out", out.to_str().unwrap()]);
    let log: Page<AuditEntryView> = serde_json::from_str(&dir.ok(&["audit", "--json"])).unwrap();
    let lines: Vec<(&str, &str, &str)> = log
        .items
        .iter()
        .filter(|e| e.event != "keys.create")
        .map(|e| (e.event.as_str(), e.actor.as_str(), e.detail.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            ("keys.reveal", "cli", "key(s) 1 to 3"),
            ("keys.export", "cli", "2 key(s) to a key file: 2, 3"),
        ]
    );
    let text = serde_json::to_string(&log.items).unwrap();
    assert!(shown.iter().all(|key| !text.contains(&key.key)));
}

#[test]
fn lists_page_by_keyset_with_a_total() {
    let dir = DataDir::new();
    dir.ok(&["keys", "create", "one-time", "--quantity", "5"]);
    dir.ok(&["keys", "deactivate", "2"]);
    let first = dir.list_page(&["--limit", "2"]);
    assert_eq!(ids(&first.items), [1, 2]);
    assert_eq!((first.next_after, first.total), (Some(2), Some(5)));
    let next = dir.list_page(&["--limit", "2", "--after", "2"]);
    assert_eq!(ids(&next.items), [3, 4]);
    let last = dir.list_page(&["--limit", "2", "--after", "4"]);
    assert_eq!(ids(&last.items), [5]);
    assert_eq!(last.next_after, None, "no page after the last");
    // Filters apply before the page is cut, and the total counts the filter.
    let active = dir.list_page(&["--status", "active", "--limit", "2", "--after", "1"]);
    assert_eq!(ids(&active.items), [3, 4]);
    assert_eq!((active.next_after, active.total), (Some(4), Some(4)));
    // The table says what it left out and how to go on.
    let text = dir.ok(&["keys", "list", "--limit", "2"]);
    assert!(
        text.contains("2 of 5 keys shown; the next page: --after 2"),
        "{text}"
    );
    // The audit log pages the same way, by entry number.
    let audit: Page<AuditEntryView> =
        serde_json::from_str(&dir.ok(&["audit", "--json", "--limit", "1"])).unwrap();
    assert_eq!(audit.items[0].event, "keys.create");
    assert_eq!((audit.next_after, audit.total), (Some(1), Some(2)));
    let rest: Page<AuditEntryView> =
        serde_json::from_str(&dir.ok(&["audit", "--json", "--after", "1", "--actor", "cli"]))
            .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.items[0].event, "keys.deactivate");
    // A limit of 0 or beyond the bound is a wrong command line.
    for bad in ["0", "1000001", "many"] {
        let output = dir.run(&["keys", "list", "--limit", bad]);
        assert_eq!(output.status.code(), Some(2), "--limit {bad}");
    }
}

#[test]
fn keys_with_a_lifetime_a_usage_limit_and_a_folder_from_the_command_line() {
    let dir = DataDir::new();
    dir.ok(&[
        "keys",
        "create",
        "one-time",
        "--quantity",
        "2",
        "--expires-in",
        "30d",
        "--folder",
        "/Sites/Berlin",
    ]);
    dir.ok(&[
        "keys",
        "create",
        "mass",
        "--usage-limit",
        "5",
        "--not-before",
        "2999-01-01T00:00:00Z",
    ]);
    let keys = dir.list(&[]);
    let in_30_days = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    let expires = keys[0].expires_at.unwrap();
    assert!(
        (expires - in_30_days).abs() < time::Duration::minutes(5),
        "{expires}"
    );
    assert_eq!(keys[1].folder.as_ref().unwrap().as_str(), "/Sites/Berlin");
    assert_eq!(
        (keys[2].status, keys[2].usage_limit),
        (KeyStatus::NotYetValid, Some(5))
    );
    let table = dir.ok(&["keys", "list"]);
    assert!(
        table.contains("Expires") && table.contains("/Sites/Berlin"),
        "{table}"
    );
    assert!(
        table.contains("0 of 5") && table.contains("Not yet valid"),
        "{table}"
    );

    let said = dir.ok(&["keys", "edit", "1", "--expires-at", "2001-01-01T00:00:00Z"]);
    assert!(said.contains("status Expired"), "{said}");
    assert_eq!(ids(&dir.list(&["--status", "expired"])), [1]);
    assert_eq!(ids(&dir.list(&["--status", "not-yet-valid"])), [3]);
    assert_eq!(
        ids(&dir.list(&["--expires-before", "2100-01-01T00:00:00Z"])),
        [1, 2]
    );
    assert_eq!(
        ids(&dir.list(&["--expires-after", "2020-01-01T00:00:00Z"])),
        [2]
    );
    let out = dir.scratch().join("icg.xml");
    let refused = dir.fails(&["keys", "export", "--out", out.to_str().unwrap(), "1"]);
    assert!(refused.contains("key 1 is expired"), "{refused}");
    dir.ok(&["keys", "export", "--out", out.to_str().unwrap()]);
    let file = KeyFile::parse(&fs::read(&out).unwrap(), &Limits::default()).unwrap();
    assert_eq!(
        file.keys.len(),
        2,
        "key 2 and the mass key, not the expired one"
    );

    let said = dir.ok(&["keys", "edit", "1", "--never-expires", "--no-folder"]);
    assert!(
        said.contains("expires never, no folder; status Active"),
        "{said}"
    );
    let refused = dir.fails(&["keys", "edit", "1", "--usage-limit", "3"]);
    assert!(
        refused.contains("usage_limit: only mass-deployment keys"),
        "{refused}"
    );
    let said = dir.ok(&["keys", "edit", "3", "--no-usage-limit", "--no-not-before"]);
    assert!(said.contains("no usage limit; status Active"), "{said}");
    // Refused by the command line itself (exit 2): a usage limit on a one-time key, an edit that
    // changes nothing, a folder that is not a path, a duration without a unit.
    for args in [
        &[
            "keys",
            "create",
            "one-time",
            "--quantity",
            "1",
            "--usage-limit",
            "3",
        ][..],
        &["keys", "edit", "1"],
        &[
            "keys",
            "create",
            "one-time",
            "--quantity",
            "1",
            "--folder",
            "Sites",
        ],
        &[
            "keys",
            "create",
            "one-time",
            "--quantity",
            "1",
            "--expires-in",
            "30",
        ],
        &["keys", "edit", "1", "--never-expires", "--expires-in", "1d"],
    ] {
        let output = dir.run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
}
