//! Rights that mean what they say, and a database that is not the admin, over HTTPS against an
//! in-process server: every pair (caller's right, right given) for accounts and tokens, exports
//! needing `keys:export` on the API and the remote command line, a new password ending tokens,
//! rows written straight into the SQLite file granting nothing, a server not in sync refusing
//! logins and admin writes, and the last-admin guard under racing deletions.

use onboard_protocol::admin::{NewAccount, NewToken, Right};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Digest;
use ums_stub::accounts::Granter;
use ums_stub::store::Actor;

use crate::server::TestServer;

/// An account made on the server machine, and a token for it with `token_rights` (all of the
/// account's by default).
async fn account(
    server: &TestServer,
    name: &str,
    rights: &[Right],
    token_rights: Option<&[Right]>,
) -> String {
    let accounts = server.shared.stub.accounts();
    accounts
        .create(
            NewAccount {
                name: name.to_owned(),
                password: format!("{name} password 123"),
                rights: rights.to_vec(),
            },
            &Granter::cli(),
        )
        .await
        .unwrap();
    token(server, name, token_rights).await
}

async fn token(server: &TestServer, name: &str, rights: Option<&[Right]>) -> String {
    server
        .shared
        .stub
        .accounts()
        .create_token(
            NewToken {
                account: name.to_owned(),
                name: "test".to_owned(),
                rights: rights.map(<[Right]>::to_vec),
                expires_days: None,
            },
            &Granter::cli(),
        )
        .await
        .unwrap()
        .token
}

async fn call(
    client: &reqwest::Client,
    server: &TestServer,
    method: Method,
    path: &str,
    body: Option<Value>,
    token: &str,
) -> (StatusCode, Value) {
    let mut request = client.request(method, server.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn login(client: &reqwest::Client, server: &TestServer, name: &str) -> StatusCode {
    client
        .post(server.url("/api/v1/session"))
        .json(&json!({"name": name, "password": format!("{name} password 123")}))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_gives_no_right_it_does_not_hold_for_every_pair() {
    let server = TestServer::start_with(|_| {}).await;
    let client = server.client(None);
    account(&server, "root", &Right::ALL, None).await;
    for (i, held) in Right::ALL.into_iter().enumerate() {
        // The caller: server:admin (to reach the routes at all) and one more right.
        let caller = token(&server, "root", Some(&[Right::ServerAdmin, held])).await;
        let holds = |right: Right| right == held || right == Right::ServerAdmin;
        for (j, given) in Right::ALL.into_iter().enumerate() {
            let expect = |allowed: bool| {
                if allowed {
                    [StatusCode::OK, StatusCode::CREATED]
                } else {
                    [StatusCode::FORBIDDEN; 2]
                }
            };
            // A new account.
            let (status, answer) = call(
                &client,
                &server,
                Method::POST,
                "/api/v1/accounts",
                Some(json!({"name": format!("made-{i}-{j}"), "password": "long enough secret", "rights": [given]})),
                &caller,
            )
            .await;
            assert!(
                expect(holds(given)).contains(&status),
                "{held} creates an account with {given}: {status} {answer}"
            );
            if status == StatusCode::FORBIDDEN {
                assert_eq!(answer["code"], "forbidden");
                assert!(answer["detail"].as_str().unwrap().contains(given.as_str()));
            }
            // An account that holds audit:read, given `given` beside it.
            server
                .shared
                .stub
                .accounts()
                .create(
                    NewAccount {
                        name: format!("edit-{i}-{j}"),
                        password: "long enough secret".to_owned(),
                        rights: vec![Right::AuditRead],
                    },
                    &Granter::cli(),
                )
                .await
                .unwrap();
            let (status, answer) = call(
                &client,
                &server,
                Method::PATCH,
                &format!("/api/v1/accounts/edit-{i}-{j}"),
                Some(json!({"rights": [Right::AuditRead, given]})),
                &caller,
            )
            .await;
            assert!(
                expect(holds(given) || given == Right::AuditRead).contains(&status),
                "{held} gives {given} to an account: {status} {answer}"
            );
            // A token for an account holding everything.
            let (status, answer) = call(
                &client,
                &server,
                Method::POST,
                "/api/v1/tokens",
                Some(json!({"account": "root", "rights": [given]})),
                &caller,
            )
            .await;
            assert!(
                expect(holds(given)).contains(&status),
                "{held} makes a token with {given}: {status} {answer}"
            );
        }
        // Setting the password of an account is taking it: only with all its rights.
        let (status, answer) = call(
            &client,
            &server,
            Method::PATCH,
            &format!("/api/v1/accounts/edit-{i}-0"),
            Some(json!({"password": "a password to log in with"})),
            &caller,
        )
        .await;
        assert!(
            expect_password(held).contains(&status),
            "{held} sets the password of an account with audit:read: {status} {answer}"
        );
        // A token by default holds all its account's rights: more than the caller has.
        let (status, _) = call(
            &client,
            &server,
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"account": "root"})),
            &caller,
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{held}: a token like root's");
    }
    server.stop().await;
}

/// Setting the password of `edit-{i}-0`: it holds audit:read, and keys:read too when the caller
/// holding keys:read gave it (its first pair); only a caller holding all of that may.
fn expect_password(held: Right) -> [StatusCode; 1] {
    if held == Right::AuditRead {
        [StatusCode::OK]
    } else {
        [StatusCode::FORBIDDEN]
    }
}

#[tokio::test]
async fn an_export_needs_keys_export_over_the_api_and_the_remote_command_line() {
    let server = TestServer::start_with(|_| {}).await;
    let client = server.client(None);
    let writer = account(
        &server,
        "writer",
        &[Right::KeysRead, Right::KeysWrite],
        None,
    )
    .await;
    let exporter = account(&server, "exporter", &[Right::KeysExport], None).await;
    let (status, _) = call(
        &client,
        &server,
        Method::POST,
        "/api/v1/keys",
        Some(json!({"type": "one-time", "quantity": 2})),
        &writer,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let export = Some(json!({"format": "text"}));
    let (status, answer) = call(
        &client,
        &server,
        Method::POST,
        "/api/v1/keys/export",
        export.clone(),
        &writer,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "keys:write exports: {answer}"
    );
    assert!(answer["detail"].as_str().unwrap().contains("keys:export"));
    let (status, answer) = call(
        &client,
        &server,
        Method::POST,
        "/api/v1/keys/export",
        export,
        &exporter,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    // The command line on another machine goes through the same check.
    let scratch = tempfile::tempdir().unwrap();
    let token_file = scratch.path().join("token");
    let url = server.url("");
    let fingerprint = server.running().ums_id_fingerprint().to_string();
    let remote = |token: &str| {
        std::fs::write(&token_file, format!("{token}\n")).unwrap();
        let mut command = std::process::Command::new(crate::util::BIN);
        command
            .env_remove("UMS_STUB_DATA_DIR")
            .env_remove("UMS_STUB_CONFIG")
            .args(["--data-dir", "/nonexistent/ums-stub"])
            .args(["--server", &url, "--token-file"])
            .arg(&token_file)
            .args(["--fingerprint", &fingerprint])
            .args(["keys", "export", "--format", "text", "--out"])
            .arg(scratch.path().join("icg.txt"))
            .args(["--server", "localhost"]);
        async move {
            tokio::task::spawn_blocking(move || command.output().unwrap())
                .await
                .unwrap()
        }
    };
    let refused = remote(&writer).await;
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("keys:export"), "{message}");
    assert!(!scratch.path().join("icg.txt").exists());
    let done = remote(&exporter).await;
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(scratch.path().join("icg.txt").exists());
    server.stop().await;
}

#[tokio::test]
async fn a_new_password_ends_the_accounts_tokens() {
    let server = TestServer::start_with(|_| {}).await;
    let client = server.client(None);
    let root = account(&server, "root", &Right::ALL, None).await;
    let ops = account(&server, "ops", &[Right::KeysRead], None).await;
    let (status, _) = call(&client, &server, Method::GET, "/api/v1/keys", None, &ops).await;
    assert_eq!(status, StatusCode::OK);
    // A change of rights leaves the token (with what the account still holds)...
    let (status, _) = call(
        &client,
        &server,
        Method::PATCH,
        "/api/v1/accounts/ops",
        Some(json!({"rights": ["keys:read", "audit:read"]})),
        &root,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&client, &server, Method::GET, "/api/v1/keys", None, &ops).await;
    assert_eq!(status, StatusCode::OK);
    // ...a new password ends it: whoever knew the old one may have made it.
    let (status, _) = call(
        &client,
        &server,
        Method::PATCH,
        "/api/v1/accounts/ops",
        Some(json!({"password": "a brand new password"})),
        &root,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&client, &server, Method::GET, "/api/v1/keys", None, &ops).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let audit = server.audit().await;
    assert!(
        audit
            .iter()
            .any(|line| line.event == "accounts.edit" && line.detail.contains("1 token(s) ended")),
        "{audit:?}"
    );
    server.stop().await;
}

fn sha256(text: &str) -> Vec<u8> {
    sha2::Sha256::digest(text.as_bytes()).to_vec()
}

#[tokio::test]
async fn rows_written_straight_into_the_database_grant_nothing() {
    let server = TestServer::start_with(|_| {}).await;
    let client = server.client(None);
    let ops = account(&server, "ops", &[Right::KeysRead], None).await;
    let root = account(&server, "root", &Right::ALL, None).await;
    let (status, _) = call(&client, &server, Method::GET, "/api/v1/keys", None, &ops).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(login(&client, &server, "ops").await, StatusCode::OK);
    let database = rusqlite::Connection::open(server.shared.stub.settings.database_file()).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();

    // A new token for root, its MAC copied from a real one.
    let forged = "umst_00000000f00d_a-token-nobody-was-given";
    database
        .execute(
            "INSERT INTO tokens (id, digest, account, name, rights, created_at, mac)
             SELECT '00000000f00d', ?1, 'root', 'forged', 'keys:read,keys:reveal,server:admin', ?2, mac
             FROM tokens WHERE account = 'root'",
            rusqlite::params![sha256(forged), now],
        )
        .unwrap();
    let (status, _) = call(&client, &server, Method::GET, "/api/v1/keys", None, forged).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a forged token");

    // A changed right: the account's token and its password both grant nothing now.
    database
        .execute(
            "UPDATE accounts SET rights = 'keys:read,keys:reveal,keys:export,server:admin'
             WHERE name = 'ops'",
            [],
        )
        .unwrap();
    for path in ["/api/v1/keys", "/api/v1/accounts", "/api/v1/session"] {
        let (status, _) = call(&client, &server, Method::GET, path, None, &ops).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{path} with a changed right"
        );
    }
    assert_eq!(
        login(&client, &server, "ops").await,
        StatusCode::UNAUTHORIZED
    );

    // A new account with a password hash someone knows, its MAC copied from root's.
    database
        .execute(
            "INSERT INTO accounts (name, password_hash, rights, created_at, changed_at, mac)
             SELECT 'intruder', (SELECT password_hash FROM accounts WHERE name = 'ops'),
                    rights, created_at, changed_at, mac FROM accounts WHERE name = 'root'",
            [],
        )
        .unwrap();
    let intruder = client
        .post(server.url("/api/v1/session"))
        .json(&json!({"name": "intruder", "password": "ops password 123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        intruder.status(),
        StatusCode::UNAUTHORIZED,
        "a forged account"
    );

    // A session for root with a cookie someone knows.
    let cookie = "a-session-cookie-nobody-was-given";
    database
        .execute(
            "INSERT INTO sessions (digest, account, created_at, expires_at, mac)
             VALUES (?1, 'root', ?2, ?3, NULL)",
            rusqlite::params![sha256(cookie), now, now + 3600],
        )
        .unwrap();
    let session = client
        .get(server.url("/api/v1/session"))
        .header("cookie", format!("ums_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        session.status(),
        StatusCode::UNAUTHORIZED,
        "a forged session"
    );

    // The real administrator is untouched, and cannot launder a forged row by editing it.
    let (status, answer) = call(
        &client,
        &server,
        Method::PATCH,
        "/api/v1/accounts/ops",
        Some(json!({"rights": ["keys:read"]})),
        &root,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("integrity check")
    );
    let (status, _) = call(
        &client,
        &server,
        Method::DELETE,
        "/api/v1/accounts/ops",
        None,
        &root,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "a forged row can be deleted"
    );
    server.stop().await;
}

/// Someone who can write the database strips every MAC, gives an account every right, puts a
/// password hash they know on another, deletes whatever marks the database as sealed, and waits
/// for a restart: the restarted server signs none of it. Only `admins seal` on the server
/// machine does, listing each row and writing an audit line.
#[tokio::test]
async fn a_restart_seals_no_row_stripped_of_its_mac_and_only_the_seal_command_does() {
    let folder = tempfile::tempdir().unwrap();
    let data = folder.path().join("data");
    let start = || {
        let data = data.clone();
        TestServer::start_with(move |settings| settings.data_dir = data)
    };
    let server = start().await;
    let ops = account(&server, "ops", &[Right::KeysRead], None).await;
    let _root = account(&server, "root", &Right::ALL, None).await;
    let _mole = account(&server, "mole", &[Right::AuditRead], None).await;
    let file = server.shared.stub.settings.database_file();
    server.stop().await;
    {
        let database = rusqlite::Connection::open(&file).unwrap();
        database
            .execute_batch(
                "UPDATE accounts SET mac = NULL;
                 UPDATE tokens SET mac = NULL;
                 UPDATE sessions SET mac = NULL;
                 UPDATE accounts SET rights = 'keys:read,keys:write,keys:reveal,keys:export,devices:read,devices:write,audit:read,server:admin'
                     WHERE name = 'ops';
                 UPDATE accounts SET password_hash = (SELECT password_hash FROM accounts WHERE name = 'mole')
                     WHERE name = 'root';
                 DELETE FROM store_meta WHERE name <> 'ums_id_fingerprint';",
            )
            .unwrap();
    }

    let server = start().await;
    let client = server.client(None);
    assert_eq!(
        login(&client, &server, "ops").await,
        StatusCode::UNAUTHORIZED,
        "an account given every right by hand"
    );
    let root_with_moles_password = client
        .post(server.url("/api/v1/session"))
        .json(&json!({"name": "root", "password": "mole password 123"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(
        root_with_moles_password,
        StatusCode::UNAUTHORIZED,
        "an account with a password hash put there by hand"
    );
    let (status, _) = call(&client, &server, Method::GET, "/api/v1/keys", None, &ops).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a token stripped of its MAC"
    );
    let unsealed = server
        .shared
        .stub
        .store
        .unsealed_admin_rows()
        .await
        .unwrap();
    assert_eq!(
        (unsealed.accounts.len(), unsealed.tokens.len()),
        (3, 3),
        "the start sealed nothing"
    );
    server.stop().await;

    // The administrator on the server machine looks, then seals: now the rows are what the
    // database says, by an audited decision.
    let seal = |args: &[&str]| {
        let output = std::process::Command::new(crate::util::BIN)
            .env_remove("UMS_STUB_DATA_DIR")
            .env_remove("UMS_STUB_CONFIG")
            .arg("--data-dir")
            .arg(&data)
            .args(["admins", "seal"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let listed = seal(&["--dry-run"]);
    assert!(
        listed.contains("ops") && listed.contains("server:admin") && listed.contains("mole"),
        "{listed}"
    );
    assert!(listed.contains("3 account(s) and 3 token(s)"), "{listed}");
    let sealed = seal(&[]);
    assert!(
        sealed.contains("Sealed 3 account(s) and 3 token(s)"),
        "{sealed}"
    );
    assert!(seal(&[]).contains("nothing to seal"));

    let server = start().await;
    let client = server.client(None);
    assert_eq!(login(&client, &server, "ops").await, StatusCode::OK);
    let (status, _) = call(&client, &server, Method::GET, "/api/v1/keys", None, &ops).await;
    assert_eq!(status, StatusCode::OK);
    let log = server
        .shared
        .stub
        .store
        .audit(
            &ums_stub::store::AuditFilter::default(),
            &ums_stub::store::PageRequest::all(),
        )
        .await
        .unwrap();
    let seals: Vec<_> = log
        .iter()
        .filter(|entry| entry.event == "admin-rows.seal")
        .collect();
    assert_eq!(seals.len(), 1, "{seals:?}");
    assert_eq!(
        (seals[0].actor.as_str(), seals[0].source.as_str()),
        ("cli", "local")
    );
    assert!(
        seals[0]
            .detail
            .starts_with("by ums-stub admins seal: accounts [mole (audit:read), ops (")
            && seals[0].detail.contains("root ("),
        "{}",
        seals[0].detail
    );
    server.stop().await;
}

#[tokio::test]
async fn a_server_not_in_sync_refuses_logins_and_admin_writes() {
    let folder = tempfile::tempdir().unwrap();
    let data = folder.path().join("data");
    let (ours, theirs) = (folder.path().join("a"), folder.path().join("b"));
    ums_stub::cluster::ClusterSecret::create(&ours).unwrap();
    ums_stub::cluster::ClusterSecret::create(&theirs).unwrap();
    let start = |secret: std::path::PathBuf| {
        let data = data.clone();
        TestServer::start_with(move |settings| {
            settings.data_dir = data;
            settings.cluster_secret = Some(secret);
        })
    };
    let server = start(ours).await;
    let root = account(&server, "root", &Right::ALL, None).await;
    let client = server.client(None);
    assert_eq!(login(&client, &server, "root").await, StatusCode::OK);
    server.stop().await;

    // The same database, another cluster's secret.
    let server = start(theirs).await;
    assert_eq!(
        server.shared.stub.sync,
        ums_stub::cluster::SyncStatus::NotInSync
    );
    let client = server.client(None);
    assert_eq!(
        login(&client, &server, "root").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let writes = [
        (
            Method::POST,
            "/api/v1/accounts",
            Some(
                json!({"name": "new", "password": "long enough secret", "rights": ["server:admin"]}),
            ),
        ),
        (
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"account": "root"})),
        ),
        (
            Method::PATCH,
            "/api/v1/accounts/root",
            Some(json!({"password": "a password of mine"})),
        ),
        (Method::DELETE, "/api/v1/accounts/root", None),
        (Method::DELETE, "/api/v1/devices/00E0C5FFFFFF", None),
        (
            Method::POST,
            "/api/v1/keys",
            Some(json!({"type": "one-time", "quantity": 1})),
        ),
    ];
    for (method, path, body) in writes {
        let (status, answer) = call(&client, &server, method.clone(), path, body, &root).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {path}: {answer}"
        );
        assert_eq!(answer["code"], "server_not_in_sync");
    }
    // Nor on its machine's command line.
    let accounts = server.shared.stub.accounts();
    let made = accounts
        .create(
            NewAccount {
                name: "local".to_owned(),
                password: "long enough secret".to_owned(),
                rights: vec![Right::ServerAdmin],
            },
            &Granter::cli(),
        )
        .await;
    assert!(
        matches!(made, Err(ums_stub::accounts::AccountError::NotInSync)),
        "{made:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_deletions_leave_one_server_admin_every_time() {
    let server = TestServer::start_with(|_| {}).await;
    let accounts = server.shared.stub.accounts();
    let make = |name: String| {
        let accounts = accounts.clone();
        async move {
            accounts
                .create(
                    NewAccount {
                        name,
                        password: "long enough secret".to_owned(),
                        rights: vec![Right::ServerAdmin],
                    },
                    &Granter::cli(),
                )
                .await
                .unwrap();
        }
    };
    make("admin-0".to_owned()).await;
    let mut survivor = "admin-0".to_owned();
    for round in 1..=100 {
        let newcomer = format!("admin-{round}");
        make(newcomer.clone()).await;
        let deletions = [survivor.clone(), newcomer].map(|name| {
            let accounts = accounts.clone();
            tokio::spawn(async move {
                let deleted = accounts.delete(&name, &Actor::cli()).await;
                (name, deleted.is_ok())
            })
        });
        let mut kept = Vec::new();
        for deletion in deletions {
            let (name, deleted) = deletion.await.unwrap();
            if !deleted {
                kept.push(name);
            }
        }
        assert_eq!(kept.len(), 1, "round {round}: kept {kept:?}");
        survivor = kept.remove(0);
        let listed = accounts
            .list(&ums_stub::store::PageRequest::all())
            .await
            .unwrap();
        assert_eq!(listed.total, Some(1), "round {round}");
    }
    server.stop().await;
}
