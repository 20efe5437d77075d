//! Reveals and exports are audited by the key use case before any key is shown, alike on every
//! surface: the local command line, and the admin API routes the Web App calls with its session
//! (a token's reveals and exports are in `admin_api`). When the audit line cannot be written,
//! nothing is shown. No audit line holds a key value.

use std::path::Path;

use onboard_protocol::admin::{AuditEntryView, CallerView, KeyView, NewAccount, Page, Right};
use reqwest::StatusCode;
use serde_json::json;
use ums_stub::accounts::Granter;
use ums_stub::store::Actor;

use crate::server::TestServer;
use crate::util::DataDir;

/// From now on every new audit line fails to be written; the rest of the database is untouched.
fn refuse_audit_lines(database: &Path) {
    rusqlite::Connection::open(database)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit
             BEGIN SELECT RAISE(ABORT, 'the audit log refuses lines'); END;",
        )
        .unwrap();
}

/// Audit lines are written again.
fn allow_audit_lines(database: &Path) {
    rusqlite::Connection::open(database)
        .unwrap()
        .execute_batch("DROP TRIGGER refuse_audit")
        .unwrap();
}

/// The (event, actor, detail) of the lines of reveals and exports, oldest first.
fn shown_lines<'a>(lines: impl Iterator<Item = (&'a str, &'a str, &'a str)>) -> Vec<String> {
    let mut shown: Vec<String> = lines
        .filter(|(event, _, _)| matches!(*event, "keys.reveal" | "keys.export"))
        .map(|(event, actor, detail)| format!("{event} {actor}: {detail}"))
        .collect();
    shown.sort();
    shown
}

#[test]
fn the_command_line_shows_and_exports_no_key_it_cannot_audit_first() {
    let dir = DataDir::new();
    dir.ok(&["keys", "create", "one-time", "--quantity", "3"]);
    let values: Vec<String> = dir.list(&["--show"]).into_iter().map(|k| k.key).collect();
    let database = dir.path().join("ums-stub.db");
    refuse_audit_lines(&database);
    // Reads still work: a masked list writes no line.
    assert!(dir.list(&[]).iter().all(|key| !key.shown));
    let stick = dir.scratch().join("stick.xml");
    let stick_arg = stick.to_str().unwrap();
    for args in [
        &["keys", "list", "--show"][..],
        &["keys", "list", "--show", "--json"],
        &["keys", "export", "2", "3", "--out", stick_arg],
        &["keys", "export", "--out", stick_arg],
    ] {
        let output = dir.run(args);
        assert_eq!(output.status.code(), Some(1), "{args:?} went through");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        for value in &values {
            assert!(
                !said.contains(value.as_str()),
                "{args:?} showed a key: {said}"
            );
        }
    }
    assert!(!stick.exists(), "an export nobody can trace was written");
    allow_audit_lines(&database);
    let log: Page<AuditEntryView> = serde_json::from_str(&dir.ok(&["audit", "--json"])).unwrap();
    let lines = || {
        log.items
            .iter()
            .map(|e| (e.event.as_str(), e.actor.as_str(), e.detail.as_str()))
    };
    assert_eq!(shown_lines(lines()), ["keys.reveal cli: key(s) 1 to 3"]);
    // Audited again, the same commands go through, each leaving its line first.
    dir.ok(&["keys", "export", "2", "3", "--out", stick_arg]);
    assert!(stick.exists());
    let log: Page<AuditEntryView> = serde_json::from_str(&dir.ok(&["audit", "--json"])).unwrap();
    let lines = log
        .items
        .iter()
        .map(|e| (e.event.as_str(), e.actor.as_str(), e.detail.as_str()));
    assert_eq!(
        shown_lines(lines),
        [
            "keys.export cli: 2 key(s) to a key file: 2, 3",
            "keys.reveal cli: key(s) 1 to 3",
        ]
    );
    let text = serde_json::to_string(&log.items).unwrap();
    assert!(values.iter().all(|value| !text.contains(value.as_str())));
}

#[tokio::test]
async fn a_web_app_session_s_reveals_and_exports_are_audited_first_as_its_account() {
    let server = TestServer::start_with(|_| {}).await;
    let keys = server.shared.stub.keys();
    let ids = keys
        .create_one_time(2, "", Box::new(|_| {}), &Actor::cli())
        .await
        .unwrap();
    let values: Vec<String> = keys
        .reveal(&ids)
        .await
        .unwrap()
        .into_iter()
        .map(|key| key.key)
        .collect();
    server
        .shared
        .stub
        .accounts()
        .create(
            NewAccount {
                name: "web".to_owned(),
                password: "web password 123".to_owned(),
                rights: vec![Right::KeysRead, Right::KeysReveal, Right::KeysExport],
            },
            &Granter::cli(),
        )
        .await
        .unwrap();
    // Signed in as the Web App is: a session cookie and its CSRF token.
    let client = server.client(None);
    let login = client
        .post(server.url("/api/v1/session"))
        .json(&json!({"name": "web", "password": "web password 123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let me: CallerView = login.json().await.unwrap();
    let csrf = me.csrf_token.unwrap();
    let post = |path: &str, body: serde_json::Value| {
        client
            .post(server.url(path))
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf)
            .json(&body)
            .send()
    };
    // The key page's "Show keys", then its Export.
    let reveal = || post("/api/v1/keys/reveal", json!({"ids": ids}));
    let export = || post("/api/v1/keys/export", json!({"format": "text"}));
    let shown = reveal().await.unwrap();
    assert_eq!(shown.status(), StatusCode::OK);
    let shown: Vec<KeyView> = shown.json().await.unwrap();
    assert_eq!(
        shown.into_iter().map(|key| key.key).collect::<Vec<_>>(),
        values
    );
    let file = export().await.unwrap();
    assert_eq!(file.status(), StatusCode::OK);
    let file = file.text().await.unwrap();
    assert!(values.iter().all(|value| file.contains(value.as_str())));
    let audit = server.audit().await;
    let web = || {
        audit
            .iter()
            .filter(|line| line.actor == "web")
            .map(|e| (e.event.as_str(), e.actor.as_str(), e.detail.as_str()))
    };
    let expected = [
        "keys.export web: 2 key(s) to a key file: 1, 2",
        "keys.reveal web: key(s) 1, 2",
    ];
    assert_eq!(shown_lines(web()), expected);

    // With no audit line possible, the session is shown nothing.
    let database = server.shared.stub.settings.database_file();
    refuse_audit_lines(&database);
    for (what, answer) in [
        ("reveal", reveal().await.unwrap()),
        ("export", export().await.unwrap()),
    ] {
        let status = answer.status();
        let body = answer.text().await.unwrap();
        assert!(status.is_server_error(), "{what}: {status} {body}");
        for value in &values {
            assert!(
                !body.contains(value.as_str()),
                "{what} showed a key: {body}"
            );
        }
    }
    allow_audit_lines(&database);
    let audit = server.audit().await;
    let web = audit
        .iter()
        .filter(|line| line.actor == "web")
        .map(|e| (e.event.as_str(), e.actor.as_str(), e.detail.as_str()));
    assert_eq!(shown_lines(web), expected);
    let text = format!("{audit:?}");
    assert!(values.iter().all(|value| !text.contains(value.as_str())));
    server.stop().await;
}
