//! The admin API over HTTPS against an in-process server with the default settings: the rights
//! matrix (every route × every single right), tokens, sessions with CSRF, login limits, reveals,
//! what the database holds, and the committed OpenAPI document.

use onboard_protocol::admin::{
    AccountView, CallerView, CreatedKeys, CreatedToken, KeyView, NewAccount, NewToken, Page, Right,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use ums_stub::accounts::{AccountAdmin, Granter};
use ums_stub::rights::Operation;
use ums_stub::store::{Actor, TokenRow};

use crate::server::{Device, TestServer, enroll};

/// A body for a request.
#[derive(Clone)]
pub(crate) enum Sent {
    None,
    Json(Value),
    Csv(&'static str),
}

/// Every admin route that needs a right, with a request that is valid for it.
fn routes() -> Vec<(Method, &'static str, Sent, Operation)> {
    use Operation::*;
    let ids = || Sent::Json(json!({"ids": [1]}));
    vec![
        (Method::GET, "/api/v1/keys", Sent::None, ListKeys),
        (
            Method::POST,
            "/api/v1/keys",
            Sent::Json(json!({"type": "one-time", "quantity": 1})),
            CreateKeys,
        ),
        (
            Method::POST,
            "/api/v1/keys/import",
            Sent::Csv("unit id\n00E0C5AA0001\n"),
            CreateKeys,
        ),
        (Method::GET, "/api/v1/keys/1", Sent::None, GetKey),
        (
            Method::PATCH,
            "/api/v1/keys/1",
            Sent::Json(json!({"comment": "lab"})),
            EditKey,
        ),
        (Method::POST, "/api/v1/keys/activate", ids(), ActivateKeys),
        (
            Method::POST,
            "/api/v1/keys/deactivate",
            ids(),
            DeactivateKeys,
        ),
        (
            Method::POST,
            "/api/v1/keys/export",
            Sent::Json(json!({"format": "text"})),
            ExportKeys,
        ),
        (
            Method::POST,
            "/api/v1/keys/export/check",
            Sent::Json(json!({"servers": [{"host": "127.0.0.1", "port": 1}]})),
            ExportKeys,
        ),
        (Method::POST, "/api/v1/keys/reveal", ids(), RevealKeys),
        (
            Method::POST,
            "/api/v1/keys/change",
            Sent::Json(json!({"action": "activate", "ids": [1]})),
            ActivateKeys,
        ),
        (
            Method::POST,
            "/api/v1/keys/change",
            Sent::Json(json!({"action": "deactivate", "filter": {"comment": "none has it"}})),
            DeactivateKeys,
        ),
        (
            Method::POST,
            "/api/v1/keys/change",
            Sent::Json(json!({"action": "delete", "filter": {"comment": "none has it"}})),
            DeleteKeys,
        ),
        (
            Method::GET,
            "/api/v1/keys/export/servers",
            Sent::None,
            ExportKeys,
        ),
        (
            Method::POST,
            "/api/v1/keys/delete",
            Sent::Json(json!({"ids": [999_999]})),
            DeleteKeys,
        ),
        (
            Method::DELETE,
            "/api/v1/keys/999999",
            Sent::None,
            DeleteKeys,
        ),
        (Method::GET, "/api/v1/devices", Sent::None, ListDevices),
        (
            Method::GET,
            "/api/v1/devices/00E0C5FFFFFF",
            Sent::None,
            GetDevice,
        ),
        (
            Method::DELETE,
            "/api/v1/devices/00E0C5FFFFFF",
            Sent::None,
            DeleteDevice,
        ),
        (
            Method::POST,
            "/api/v1/devices/00E0C5FFFFFF/commands",
            Sent::Json(json!({"command": "renew-now"})),
            SendDeviceCommand,
        ),
        (Method::GET, "/api/v1/audit", Sent::None, ReadAudit),
        (Method::GET, "/api/v1/ums-id", Sent::None, ShowUmsId),
        (
            Method::GET,
            "/api/v1/ums-id/certificate",
            Sent::None,
            ShowUmsId,
        ),
        (Method::GET, "/api/v1/servers", Sent::None, ShowUmsId),
        (Method::GET, "/api/v1/accounts", Sent::None, ManageAccounts),
        (
            Method::POST,
            "/api/v1/accounts",
            Sent::Json(
                json!({"name": "made-in-matrix", "password": "long enough secret", "rights": ["server:admin"]}),
            ),
            ManageAccounts,
        ),
        (
            Method::GET,
            "/api/v1/accounts/nobody",
            Sent::None,
            ManageAccounts,
        ),
        (
            Method::PATCH,
            "/api/v1/accounts/nobody",
            Sent::Json(json!({"rights": ["audit:read"]})),
            ManageAccounts,
        ),
        (
            Method::DELETE,
            "/api/v1/accounts/nobody",
            Sent::None,
            ManageAccounts,
        ),
        (Method::GET, "/api/v1/tokens", Sent::None, ManageAccounts),
        (
            Method::POST,
            "/api/v1/tokens",
            Sent::Json(json!({"account": "nobody"})),
            ManageAccounts,
        ),
        (
            Method::DELETE,
            "/api/v1/tokens/nothing",
            Sent::None,
            ManageAccounts,
        ),
    ]
}

/// A request with optional bearer token.
pub(crate) async fn send(
    client: &reqwest::Client,
    server: &TestServer,
    method: Method,
    path: &str,
    body: &Sent,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = client.request(method, server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request = match body {
        Sent::None => request,
        Sent::Json(value) => request.json(value),
        Sent::Csv(text) => request.header("content-type", "text/csv").body(*text),
    };
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

fn accounts(server: &TestServer) -> AccountAdmin {
    server.shared.stub.accounts()
}

/// An account with `rights` and a token for it.
pub(crate) async fn account_with_token(
    server: &TestServer,
    name: &str,
    rights: &[Right],
) -> String {
    let admin = accounts(server);
    admin
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
    admin
        .create_token(
            NewToken {
                account: name.to_owned(),
                name: "test".to_owned(),
                rights: None,
                expires_days: None,
            },
            &Granter::cli(),
        )
        .await
        .unwrap()
        .token
}

#[tokio::test]
async fn every_route_answers_each_right_as_the_rights_table_says() {
    let server = TestServer::start_with(|_| {}).await;
    let client = server.client(None);
    let everything = account_with_token(&server, "root", &Right::ALL).await;
    // A key with ID 1 for the routes that name one.
    let (status, _) = send(
        &client,
        &server,
        Method::POST,
        "/api/v1/keys",
        &Sent::Json(json!({"type": "one-time", "quantity": 2})),
        Some(&everything),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    // The matrix covers every operation of the OpenAPI document but the session's.
    let document: Value = serde_json::from_str(&ums_stub::http::admin::openapi::json()).unwrap();
    let mut documented = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if path != "/api/v1/session" {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    let table = routes();
    for (method, path) in &documented {
        assert!(
            table.iter().any(|(m, p, ..)| m.as_str() == method
                && (p == path
                    || path.contains('{') && p.starts_with(&path[..path.find('{').unwrap()]))),
            "{method} {path} is missing from the rights matrix"
        );
    }

    for right in Right::ALL {
        let token = account_with_token(
            &server,
            &format!("only-{}", right.as_str().replace(':', "-")),
            &[right],
        )
        .await;
        for (method, path, body, operation) in routes() {
            let (status, answer) =
                send(&client, &server, method.clone(), path, &body, Some(&token)).await;
            if operation.right() == right {
                assert!(
                    status.is_success()
                        || status == StatusCode::NOT_FOUND
                        || status == StatusCode::CONFLICT,
                    "{method} {path} with {right}: {status} {answer}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {path} with {right}: {answer}"
                );
                assert_eq!(answer["code"], "forbidden");
            }
        }
    }
    // Without credentials, or with a forged token: 401 everywhere.
    for (method, path, body, _) in routes() {
        let (status, answer) = send(&client, &server, method.clone(), path, &body, None).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path}: {answer}"
        );
        assert_eq!(answer["code"], "unauthorized");
        let (status, _) = send(
            &client,
            &server,
            method.clone(),
            path,
            &body,
            Some("umst_000000000000_not-a-token"),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} forged");
    }
    server.stop().await;
}

#[tokio::test]
async fn expired_and_revoked_tokens_are_refused() {
    let server = TestServer::start_with(|_| {}).await;
    let client = server.client(None);
    let token = account_with_token(&server, "ops", &[Right::KeysRead]).await;
    let (status, _) = send(
        &client,
        &server,
        Method::GET,
        "/api/v1/keys",
        &Sent::None,
        Some(&token),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // The token's public ID with another secret: refused.
    let (id, secret) = token["umst_".len()..].split_once('_').unwrap();
    let other_secret: String = secret
        .chars()
        .map(|c| if c == 'A' { 'B' } else { 'A' })
        .collect();
    let wrong = format!("umst_{id}_{other_secret}");
    let (status, _) = send(
        &client,
        &server,
        Method::GET,
        "/api/v1/keys",
        &Sent::None,
        Some(&wrong),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a known ID with a wrong secret"
    );

    // An expired token, as it would be a day after its last day.
    let expired = "umst_0123456789ab_expired-token-value";
    let digest: [u8; 32] = {
        use sha2::Digest;
        sha2::Sha256::digest(expired.as_bytes()).into()
    };
    let now = time::OffsetDateTime::now_utc();
    // With a valid MAC: only its expiry refuses it.
    let mut row = TokenRow {
        id: "0123456789ab".to_owned(),
        digest,
        account: "ops".to_owned(),
        name: "old".to_owned(),
        rights: vec![Right::KeysRead],
        created_at: now - time::Duration::days(31),
        expires_at: Some(now - time::Duration::days(1)),
        mac: None,
    };
    row.mac = Some(server.shared.stub.rows.token(&row));
    server
        .shared
        .stub
        .store
        .create_token(&row, &Actor::cli())
        .await
        .unwrap();
    let (status, answer) = send(
        &client,
        &server,
        Method::GET,
        "/api/v1/keys",
        &Sent::None,
        Some(expired),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");

    // Revoked over the API by an administrator.
    let root = account_with_token(&server, "root", &[Right::ServerAdmin]).await;
    let id = token.split('_').nth(1).unwrap().to_owned();
    let (status, _) = send(
        &client,
        &server,
        Method::DELETE,
        &format!("/api/v1/tokens/{id}"),
        &Sent::None,
        Some(&root),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = send(
        &client,
        &server,
        Method::GET,
        "/api/v1/keys",
        &Sent::None,
        Some(&token),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let audit = server.audit().await;
    assert!(
        audit.iter().any(|line| line.event == "tokens.revoke"
            && line.actor == "root"
            && line.source == "127.0.0.1"),
        "{audit:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_token_holds_only_rights_its_account_still_holds() {
    let server = TestServer::start_with(|_| {}).await;
    let client = server.client(None);
    let root = account_with_token(&server, "root", &Right::ALL).await;
    account_with_token(&server, "ops", &[Right::KeysRead, Right::AuditRead]).await;

    // A token cannot ask for more than its account holds.
    let (status, answer) = send(
        &client,
        &server,
        Method::POST,
        "/api/v1/tokens",
        &Sent::Json(json!({"account": "ops", "rights": ["keys:reveal"]})),
        Some(&root),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(
        answer["detail"].as_str().unwrap().contains("rights"),
        "{answer}"
    );

    let (status, answer) = send(
        &client,
        &server,
        Method::POST,
        "/api/v1/tokens",
        &Sent::Json(json!({"account": "ops", "rights": ["keys:read", "audit:read"], "expires_days": 30, "name": "script"})),
        Some(&root),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let created: CreatedToken = serde_json::from_value(answer).unwrap();
    assert!(created.token.starts_with("umst_"));
    assert!(created.view.expires_at.is_some());
    let (status, _) = send(
        &client,
        &server,
        Method::GET,
        "/api/v1/audit",
        &Sent::None,
        Some(&created.token),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // The account loses audit:read: so does its token, at once.
    let (status, _) = send(
        &client,
        &server,
        Method::PATCH,
        "/api/v1/accounts/ops",
        &Sent::Json(json!({"rights": ["keys:read"]})),
        Some(&root),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(
        &client,
        &server,
        Method::GET,
        "/api/v1/audit",
        &Sent::None,
        Some(&created.token),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, me) = send(
        &client,
        &server,
        Method::GET,
        "/api/v1/session",
        &Sent::None,
        Some(&created.token),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let me: CallerView = serde_json::from_value(me).unwrap();
    assert_eq!(me.rights, vec![Right::KeysRead]);
    assert_eq!(me.csrf_token, None);

    // Deleted with its account.
    let (status, _) = send(
        &client,
        &server,
        Method::DELETE,
        "/api/v1/accounts/ops",
        &Sent::None,
        Some(&root),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = send(
        &client,
        &server,
        Method::GET,
        "/api/v1/keys",
        &Sent::None,
        Some(&created.token),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn no_list_carries_a_clear_key_and_every_reveal_is_audited() {
    let server = TestServer::start_with(|_| {}).await;
    let client = server.client(None);
    let writer = account_with_token(&server, "writer", &[Right::KeysRead, Right::KeysWrite]).await;
    let revealer = account_with_token(&server, "revealer", &[Right::KeysReveal]).await;
    let (status, created) = send(
        &client,
        &server,
        Method::POST,
        "/api/v1/keys",
        &Sent::Json(json!({"type": "mass", "password": "Rollout-Secret-2026"})),
        Some(&writer),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let created: CreatedKeys = serde_json::from_value(created).unwrap();
    send(
        &client,
        &server,
        Method::POST,
        "/api/v1/keys",
        &Sent::Json(json!({"type": "device-bound", "unit_ids": ["00:e0:c5:54:0b:8b"]})),
        Some(&writer),
    )
    .await;
    let clear: Vec<String> = server
        .shared
        .stub
        .keys()
        .reveal(&[1, 2])
        .await
        .unwrap()
        .into_iter()
        .map(|view| view.key)
        .collect();

    for path in [
        "/api/v1/keys",
        "/api/v1/keys/1",
        "/api/v1/keys/2",
        "/api/v1/keys?type=mass&total=true",
    ] {
        let (status, answer) = send(
            &client,
            &server,
            Method::GET,
            path,
            &Sent::None,
            Some(&writer),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let text = answer.to_string();
        for value in &clear {
            assert!(!text.contains(value.as_str()), "{path} shows a key: {text}");
        }
    }
    let (_, page) = send(
        &client,
        &server,
        Method::GET,
        "/api/v1/keys?total=true",
        &Sent::None,
        Some(&writer),
    )
    .await;
    let page: Page<KeyView> = serde_json::from_value(page).unwrap();
    assert_eq!(page.total, Some(2));
    assert!(page.items.iter().all(|key| !key.shown));

    // A duplicate typed value is a conflict.
    let (status, answer) = send(
        &client,
        &server,
        Method::POST,
        "/api/v1/keys",
        &Sent::Json(json!({"type": "mass", "password": "Rollout-Secret-2026"})),
        Some(&writer),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(!answer.to_string().contains("Rollout-Secret-2026"));

    let (status, shown) = send(
        &client,
        &server,
        Method::POST,
        "/api/v1/keys/reveal",
        &Sent::Json(json!({"ids": created.ids})),
        Some(&revealer),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let shown: Vec<KeyView> = serde_json::from_value(shown).unwrap();
    assert_eq!(shown[0].key, "Rollout-Secret-2026");
    assert!(shown[0].shown);
    let audit = server.audit().await;
    let reveal = audit
        .iter()
        .rev()
        .find(|line| line.event == "keys.reveal")
        .expect("the reveal is audited");
    assert_eq!(reveal.actor, "revealer");
    assert_eq!(reveal.key_id, Some(created.ids[0]));
    assert!(audit.iter().all(|line| !line.detail.contains("Rollout")));
    server.stop().await;
}

#[tokio::test]
async fn tokens_and_passwords_are_stored_only_as_hashes() {
    let server = TestServer::start_with(|_| {}).await;
    let password = "correct horse battery staple";
    let admin = accounts(&server);
    admin
        .create(
            NewAccount {
                name: "jane".to_owned(),
                password: password.to_owned(),
                rights: vec![Right::AuditRead],
            },
            &Granter::cli(),
        )
        .await
        .unwrap();
    let token = admin
        .create_token(
            NewToken {
                account: "jane".to_owned(),
                name: String::new(),
                rights: None,
                expires_days: Some(1),
            },
            &Granter::cli(),
        )
        .await
        .unwrap()
        .token;
    let client = server.client(None);
    let login = client
        .post(server.url("/api/v1/session"))
        .json(&json!({"name": "jane", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let cookie = login
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let session = cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned();

    let stored = server
        .shared
        .stub
        .store
        .account("jane")
        .await
        .unwrap()
        .unwrap();
    assert!(
        stored.password_hash.starts_with("$argon2id$"),
        "argon2id PHC string"
    );
    let mut bytes = Vec::new();
    for suffix in ["", "-wal"] {
        let file = server.data_dir().join(format!("ums-stub.db{suffix}"));
        if let Ok(read) = std::fs::read(&file) {
            bytes.extend(read);
        }
    }
    assert!(!bytes.is_empty());
    let holds = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(holds("jane"), "the account is in the file read");
    for secret in [password, token.as_str(), session.as_str()] {
        assert!(!holds(secret), "the database holds a secret in the clear");
    }
    let secret_part = token.splitn(3, '_').nth(2).unwrap();
    assert!(!holds(secret_part));
    server.stop().await;
}

#[tokio::test]
async fn a_session_needs_its_csrf_token_for_writes_and_ends_when_its_account_changes() {
    let server = TestServer::start_with(|_| {}).await;
    let client = server.client(None);
    let admin = accounts(&server);
    admin
        .create(
            NewAccount {
                name: "web".to_owned(),
                password: "web password 123".to_owned(),
                rights: vec![Right::KeysRead, Right::KeysWrite],
            },
            &Granter::cli(),
        )
        .await
        .unwrap();
    let wrong = client
        .post(server.url("/api/v1/session"))
        .json(&json!({"name": "web", "password": "not the password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get("set-cookie").is_none());

    let login = client
        .post(server.url("/api/v1/session"))
        .json(&json!({"name": "web", "password": "web password 123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let set_cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    for flag in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Max-Age=28800",
        "Path=/",
    ] {
        assert!(set_cookie.contains(flag), "{set_cookie} lacks {flag}");
    }
    let me: CallerView = login.json().await.unwrap();
    let csrf = me.csrf_token.clone().expect("a CSRF token");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();

    let with_cookie = |method: Method, path: &str| {
        client
            .request(method, server.url(path))
            .header("cookie", cookie.clone())
    };
    let read = with_cookie(Method::GET, "/api/v1/keys")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK, "reads need no CSRF token");
    let body = json!({"type": "one-time", "quantity": 1});
    let forged = with_cookie(Method::POST, "/api/v1/keys")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        forged.status(),
        StatusCode::FORBIDDEN,
        "a write without the CSRF token"
    );
    let wrong_csrf = with_cookie(Method::POST, "/api/v1/keys")
        .header("x-csrf-token", "0".repeat(csrf.len()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_csrf.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        server
            .shared
            .stub
            .keys()
            .count(&Default::default())
            .await
            .unwrap(),
        0
    );
    let written = with_cookie(Method::POST, "/api/v1/keys")
        .header("x-csrf-token", &csrf)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(written.status(), StatusCode::CREATED);

    // A change to the account ends its sessions.
    admin
        .edit(
            "web",
            onboard_protocol::admin::EditAccount {
                rights: Some(vec![Right::KeysRead]),
                password: None,
            },
            &Granter::cli(),
        )
        .await
        .unwrap();
    let after = with_cookie(Method::GET, "/api/v1/keys")
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);

    // Logout ends a session too.
    let login = client
        .post(server.url("/api/v1/session"))
        .json(&json!({"name": "web", "password": "web password 123"}))
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let me: CallerView = login.json().await.unwrap();
    let out = client
        .delete(server.url("/api/v1/session"))
        .header("cookie", &cookie)
        .header("x-csrf-token", me.csrf_token.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    let gone = client
        .get(server.url("/api/v1/keys"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::UNAUTHORIZED);
    let events: Vec<String> = server
        .audit()
        .await
        .into_iter()
        .map(|l| format!("{} {} {}", l.event, l.actor, l.outcome))
        .collect();
    for expected in [
        "session.login - unauthorized",
        "session.login web ok",
        "session.logout web ok",
        "accounts.edit cli ok",
    ] {
        assert!(
            events.iter().any(|e| e == expected),
            "{expected}: {events:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn failed_logins_are_limited_per_account_with_the_default_settings() {
    let server = TestServer::start_with(|_| {}).await;
    let client = server.client(None);
    accounts(&server)
        .create(
            NewAccount {
                name: "target".to_owned(),
                password: "the real password".to_owned(),
                rights: vec![Right::AuditRead],
            },
            &Granter::cli(),
        )
        .await
        .unwrap();
    let login = |password: &'static str| {
        client
            .post(server.url("/api/v1/session"))
            .json(&json!({"name": "target", "password": password}))
            .send()
    };
    for attempt in 0..10 {
        let answer = login("guess guess guess").await.unwrap();
        assert_eq!(
            answer.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}"
        );
    }
    let limited = login("the real password").await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().get("retry-after").is_some());
    server.stop().await;
}

#[tokio::test]
async fn nobody_can_lock_an_administrator_out_from_another_address() {
    let server = TestServer::start_with(|_| {}).await;
    accounts(&server)
        .create(
            NewAccount {
                name: "admin".to_owned(),
                password: "the real password".to_owned(),
                rights: vec![Right::ServerAdmin],
            },
            &Granter::cli(),
        )
        .await
        .unwrap();
    let login = |client: &reqwest::Client, password: &str| {
        client
            .post(server.ip_url("/api/v1/session"))
            .json(&json!({"name": "admin", "password": password}))
            .send()
    };
    // Fifty wrong logins for admin from 127.0.0.2: the first ten are checked, the rest refused.
    let attacker = server.client_from("127.0.0.2".parse().unwrap());
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..50 {
        let answer = login(&attacker, "guess guess guess").await.unwrap();
        *statuses.entry(answer.status().as_u16()).or_insert(0) += 1;
    }
    assert_eq!(
        statuses,
        std::collections::BTreeMap::from([(401, 10), (429, 40)])
    );
    // The right password from 127.0.0.1 signs in at once, however often the account signed in.
    let admin = server.client_from("127.0.0.1".parse().unwrap());
    for _ in 0..12 {
        let answer = login(&admin, "the real password").await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
    }
    // And the right password from the attacker's address is still refused for the window.
    let answer = login(&attacker, "the real password").await.unwrap();
    assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
    server.stop().await;
}

#[tokio::test]
async fn login_attempts_are_limited_per_account_and_per_address_behind_a_proxy() {
    let server = TestServer::start_with(|settings| {
        settings.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let client = server.client(None);
    for name in ["target", "other"] {
        accounts(&server)
            .create(
                NewAccount {
                    name: name.to_owned(),
                    password: "the real password".to_owned(),
                    rights: vec![Right::AuditRead],
                },
                &Granter::cli(),
            )
            .await
            .unwrap();
    }
    let login = |name: &'static str, password: &'static str, from: String| {
        client
            .post(server.url("/api/v1/session"))
            .header("x-forwarded-for", from)
            .json(&json!({"name": name, "password": password}))
            .send()
    };
    // Ten guesses at one account from one client behind the proxy: that client is held for
    // that account, even with the right password ...
    for n in 0..10 {
        let answer = login("target", "guess guess guess", "198.51.100.1".to_owned())
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "guess {n}");
    }
    let held = login("target", "the real password", "198.51.100.1".to_owned())
        .await
        .unwrap();
    assert_eq!(held.status(), StatusCode::TOO_MANY_REQUESTS, "per account");
    // ... but the account's owner behind the same proxy is not: the client address counts.
    let owner = login("target", "the real password", "198.51.100.200".to_owned())
        .await
        .unwrap();
    assert_eq!(owner.status(), StatusCode::OK);
    // Thirty guesses from one address at made-up names: the address is held, for every account.
    for n in 0..30 {
        let name: &'static str = Box::leak(format!("nobody{n}").into_boxed_str());
        login(name, "guess guess guess", "192.0.2.9".to_owned())
            .await
            .unwrap();
    }
    let held = login("other", "the real password", "192.0.2.9".to_owned())
        .await
        .unwrap();
    assert_eq!(held.status(), StatusCode::TOO_MANY_REQUESTS, "per address");
    server.stop().await;
}

#[tokio::test]
async fn the_last_account_with_server_admin_cannot_be_demoted_or_deleted() {
    let server = TestServer::start_with(|_| {}).await;
    let client = server.client(None);
    let root = account_with_token(&server, "root", &[Right::ServerAdmin, Right::AuditRead]).await;
    for (method, body) in [
        (Method::PATCH, Sent::Json(json!({"rights": ["audit:read"]}))),
        (Method::DELETE, Sent::None),
    ] {
        let (status, answer) = send(
            &client,
            &server,
            method.clone(),
            "/api/v1/accounts/root",
            &body,
            Some(&root),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{method}: {answer}");
        assert!(answer["detail"].as_str().unwrap().contains("last account"));
    }
    // A password change is no demotion.
    let (status, _) = send(
        &client,
        &server,
        Method::PATCH,
        "/api/v1/accounts/root",
        &Sent::Json(json!({"password": "a brand new password"})),
        Some(&root),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // The new password ended root's token; a fresh one from the server machine.
    let root = accounts(&server)
        .create_token(
            NewToken {
                account: "root".to_owned(),
                name: "after".to_owned(),
                rights: None,
                expires_days: None,
            },
            &Granter::cli(),
        )
        .await
        .unwrap()
        .token;
    // With a second administrator, the first may go.
    account_with_token(&server, "deputy", &[Right::ServerAdmin]).await;
    let (status, _) = send(
        &client,
        &server,
        Method::DELETE,
        "/api/v1/accounts/root",
        &Sent::None,
        Some(&root),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    server.stop().await;
}

#[tokio::test]
async fn refusals_name_the_field_and_are_problems() {
    let server = TestServer::start_with(|_| {}).await;
    let client = server.client(None);
    let root = account_with_token(&server, "root", &Right::ALL).await;
    // Key 1, a one-time key, for the edits below.
    let (created, _) = send(
        &client,
        &server,
        Method::POST,
        "/api/v1/keys",
        &Sent::Json(json!({"type": "one-time", "quantity": 1})),
        Some(&root),
    )
    .await;
    assert_eq!(created, StatusCode::CREATED);
    let table: &[(Method, &str, Sent, &str)] = &[
        (
            Method::POST,
            "/api/v1/keys",
            Sent::Json(json!({"type": "one-time", "quantity": 0})),
            "quantity",
        ),
        (
            Method::POST,
            "/api/v1/keys",
            Sent::Json(json!({"type": "one-time", "quantity": 1, "usage_limit": 3})),
            "usage_limit",
        ),
        (
            Method::POST,
            "/api/v1/keys",
            Sent::Json(
                json!({"type": "device-bound", "unit_ids": ["00E0C5540B8B"], "usage_limit": 3}),
            ),
            "usage_limit",
        ),
        (
            Method::POST,
            "/api/v1/keys",
            Sent::Json(json!({"type": "mass", "usage_limit": 0})),
            "usage_limit",
        ),
        (
            Method::POST,
            "/api/v1/keys",
            Sent::Json(json!({"type": "mass", "usage_limit": -2})),
            "usage_limit",
        ),
        (
            Method::POST,
            "/api/v1/keys",
            Sent::Json(json!({"type": "mass", "folder": "Sites/Berlin"})),
            "folder",
        ),
        (
            Method::POST,
            "/api/v1/keys",
            Sent::Json(json!({"type": "one-time", "quantity": 1, "folder": "/Sites//Berlin"})),
            "folder",
        ),
        (
            Method::POST,
            "/api/v1/keys",
            Sent::Json(json!({"type": "one-time", "quantity": 1, "expires_at": "in 30 days"})),
            "expires_at",
        ),
        (
            Method::POST,
            "/api/v1/keys",
            Sent::Json(json!({"type": "one-time", "quantity": 1, "not_before": 1_700_000_000})),
            "not_before",
        ),
        (
            Method::PATCH,
            "/api/v1/keys/1",
            Sent::Json(json!({"usage_limit": 3})),
            "usage_limit",
        ),
        (
            Method::PATCH,
            "/api/v1/keys/1",
            Sent::Json(json!({"expires_at": "never"})),
            "expires_at",
        ),
        (
            Method::PATCH,
            "/api/v1/keys/1",
            Sent::Json(json!({"folder": "/"})),
            "folder",
        ),
        (
            Method::GET,
            "/api/v1/keys?expires_before=soon",
            Sent::None,
            "expires_before",
        ),
        (
            Method::GET,
            "/api/v1/keys?status=spent",
            Sent::None,
            "not_yet_valid",
        ),
        (
            Method::GET,
            "/api/v1/devices?folder=Sites",
            Sent::None,
            "folder",
        ),
        (
            Method::POST,
            "/api/v1/keys",
            Sent::Json(json!({"type": "device-bound", "unit_ids": ["nope"]})),
            "unit ID",
        ),
        (Method::POST, "/api/v1/keys", Sent::Csv("x"), "body"),
        (Method::GET, "/api/v1/keys?limit=10001", Sent::None, "limit"),
        (Method::GET, "/api/v1/keys?colour=red", Sent::None, "query"),
        (Method::GET, "/api/v1/keys/abc", Sent::None, "path"),
        (
            Method::POST,
            "/api/v1/keys/activate",
            Sent::Json(json!({"ids": []})),
            "ids",
        ),
        (
            Method::POST,
            "/api/v1/keys/export",
            Sent::Json(json!({"servers": [{"host": "bad host/"}]})),
            "server",
        ),
        (
            Method::POST,
            "/api/v1/accounts",
            Sent::Json(json!({"name": "x", "password": "short", "rights": ["audit:read"]})),
            "password",
        ),
        (
            Method::POST,
            "/api/v1/accounts",
            Sent::Json(
                json!({"name": "x y", "password": "long enough pass", "rights": ["audit:read"]}),
            ),
            "name",
        ),
        (
            Method::POST,
            "/api/v1/accounts",
            Sent::Json(json!({"name": "x", "password": "long enough pass", "rights": []})),
            "rights",
        ),
        (
            Method::POST,
            "/api/v1/keys",
            Sent::Json(json!({"type": "one-time", "quantity": 100_001})),
            "at most 100000 keys per request",
        ),
        (
            Method::PATCH,
            "/api/v1/accounts/root",
            Sent::Json(json!({})),
            "rights, password",
        ),
        (
            Method::PATCH,
            "/api/v1/accounts/root",
            Sent::Json(json!([null, null])),
            "object",
        ),
        (
            Method::POST,
            "/api/v1/keys/import",
            Sent::Csv("not a unit id\n"),
            "body",
        ),
    ];
    for (method, path, body, field) in table {
        let (status, answer) =
            send(&client, &server, method.clone(), path, body, Some(&root)).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{method} {path}: {answer}"
        );
        assert_eq!(answer["code"], "invalid");
        assert!(
            answer["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(field),
            "{method} {path}: {answer} should name {field}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn keys_carry_a_lifetime_a_usage_limit_and_a_folder_over_the_api() {
    let server = TestServer::start_with(|_| {}).await;
    let client = server.client(None);
    let root = account_with_token(&server, "root", &Right::ALL).await;
    let call = |method: Method, path: String, body: Sent| {
        let (client, server, root) = (&client, &server, &root);
        async move { send(client, server, method, &path, &body, Some(root)).await }
    };
    let soon = "2999-01-01T00:00:00Z";
    let past = "2001-01-01T00:00:00Z";
    let (status, made) = call(
        Method::POST,
        "/api/v1/keys".to_owned(),
        Sent::Json(
            json!({"type": "mass", "usage_limit": 10, "expires_at": soon,
            "folder": "/Sites/Berlin", "comment": "rollout"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let mass = made["ids"][0].as_i64().unwrap();
    let (status, made) = call(
        Method::POST,
        "/api/v1/keys".to_owned(),
        Sent::Json(json!({"type": "one-time", "quantity": 2, "expires_at": past})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let expired: Vec<i64> = serde_json::from_value::<CreatedKeys>(made).unwrap().ids;
    let (status, made) = call(
        Method::POST,
        "/api/v1/keys/import?not_before=2999-01-01T00%3A00%3A00Z&folder=%2FSites%2FHamburg"
            .to_owned(),
        Sent::Csv("00E0C5540B8B\n"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let early = made["ids"][0].as_i64().unwrap();

    let (_, one) = call(Method::GET, format!("/api/v1/keys/{mass}"), Sent::None).await;
    let one: KeyView = serde_json::from_value(one).unwrap();
    assert_eq!(
        (
            one.status.as_str(),
            one.usage_limit,
            one.folder.as_ref().map(|f| f.as_str())
        ),
        ("active", Some(10), Some("/Sites/Berlin"))
    );
    assert_eq!(one.expires_at.unwrap().year(), 2999);
    let listed = |query: &'static str| {
        let call = &call;
        async move {
            let (status, page) =
                call(Method::GET, format!("/api/v1/keys?{query}"), Sent::None).await;
            assert_eq!(status, StatusCode::OK, "{query}: {page}");
            let page: Page<KeyView> = serde_json::from_value(page).unwrap();
            page.items.iter().map(|key| key.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(listed("status=expired").await, expired);
    assert_eq!(listed("status=not_yet_valid").await, [early]);
    assert_eq!(listed("status=active").await, [mass]);
    assert_eq!(listed("expires_before=2100-01-01T00:00:00Z").await, expired);
    assert_eq!(listed("expires_after=2100-01-01T00:00:00Z").await, [mass]);

    // An expired key is never exported: named, it is refused; all exportable keys leave it out.
    let (status, refused) = call(
        Method::POST,
        "/api/v1/keys/export".to_owned(),
        Sent::Json(json!({"ids": [expired[0]], "format": "text"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(
        refused["detail"].as_str().unwrap().contains("is expired"),
        "{refused}"
    );
    let (status, file) = call(
        Method::POST,
        "/api/v1/keys/export".to_owned(),
        Sent::Json(json!({"format": "xml"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{file}");
    let file = onboard_protocol::KeyFile::parse(
        file.as_str().unwrap().as_bytes(),
        &onboard_protocol::Limits::default(),
    )
    .unwrap();
    assert_eq!(
        (
            file.keys.len(),
            file.count(onboard_protocol::KeyKind::OneTime)
        ),
        (2, 0),
        "the mass key and the key not valid yet"
    );

    // An edit changes what it names, clears what is null, and keeps the rest.
    let (status, edited) = call(
        Method::PATCH,
        format!("/api/v1/keys/{}", expired[0]),
        Sent::Json(json!({"expires_at": null, "folder": "/Sites/Bonn"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    let edited: KeyView = serde_json::from_value(edited).unwrap();
    assert_eq!(
        (
            edited.status.as_str(),
            edited.expires_at,
            edited.folder.as_ref().map(|f| f.as_str())
        ),
        ("active", None, Some("/Sites/Bonn"))
    );
    let (status, edited) = call(
        Method::PATCH,
        format!("/api/v1/keys/{mass}"),
        Sent::Json(json!({"usage_limit": null, "comment": "no limit"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    let edited: KeyView = serde_json::from_value(edited).unwrap();
    assert_eq!(
        (
            edited.usage_limit,
            edited.comment.as_str(),
            edited.expires_at.map(|at| at.year())
        ),
        (None, "no limit", Some(2999))
    );

    // A device lands in its key's folder; the devices list shows it and filters by it.
    let [value] = server
        .shared
        .stub
        .keys()
        .reveal(&[mass])
        .await
        .unwrap()
        .try_into()
        .unwrap();
    let device = Device::new("00E0C5540B99");
    assert_eq!(
        enroll(&client, &server, &device, &value.key).await.status,
        StatusCode::OK
    );
    for (query, count) in [
        ("?folder=/Sites", 1),
        ("?folder=/Sites/Berlin", 1),
        ("?folder=/Site", 0),
        ("", 1),
    ] {
        let (status, page) = call(
            Method::GET,
            format!(
                "/api/v1/devices{query}{}total=true",
                if query.is_empty() { "?" } else { "&" }
            ),
            Sent::None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["total"], count, "{query}: {page}");
        if count == 1 {
            assert_eq!(page["items"][0]["folder"], "/Sites/Berlin", "{page}");
        }
    }
    server.stop().await;
}

#[test]
fn the_committed_openapi_document_is_what_the_code_generates() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json"))
        .expect("server-stub/openapi.json");
    // The whole document: the admin API and the test-rig control routes.
    let generated = ums_stub::rig::control::json();
    assert!(
        committed == generated,
        "server-stub/openapi.json is stale: run `cargo run -p ums-stub -- openapi > server-stub/openapi.json`"
    );
    let document: Value = serde_json::from_str(&generated).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
}

#[tokio::test]
async fn the_first_account_comes_from_the_command_line_and_the_rest_over_the_api() {
    let server = TestServer::start_with(|_| {}).await;
    let data_dir = server.data_dir().to_owned();
    let run = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(crate::util::BIN)
            .env_remove("UMS_STUB_DATA_DIR")
            .env_remove("UMS_STUB_CONFIG")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let made = run(
        &[
            "admins",
            "create",
            "first",
            "--rights",
            "server:admin,keys:read",
            "--password-stdin",
        ],
        "first admin password\n",
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let short = run(
        &[
            "admins",
            "create",
            "weak",
            "--rights",
            "audit:read",
            "--password-stdin",
        ],
        "short\n",
    );
    assert_eq!(short.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&short.stderr).contains("password"));
    assert!(!String::from_utf8_lossy(&short.stderr).contains("short\n"));
    let token = run(
        &["tokens", "create", "--admin", "first", "--name", "rig"],
        "",
    );
    assert!(token.status.success());
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("umst_"));
    let listed = run(&["tokens", "list"], "");
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(listed.contains("rig") && !listed.contains(&token));

    let client = server.client(None);
    let (status, account) = send(
        &client,
        &server,
        Method::POST,
        "/api/v1/accounts",
        &Sent::Json(
            json!({"name": "second", "password": "second password", "rights": ["keys:read"]}),
        ),
        Some(&token),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{account}");
    let account: AccountView = serde_json::from_value(account).unwrap();
    assert_eq!(account.rights, vec![Right::KeysRead]);
    let (status, _) = send(
        &client,
        &server,
        Method::POST,
        "/api/v1/accounts",
        &Sent::Json(
            json!({"name": "second", "password": "second password", "rights": ["keys:read"]}),
        ),
        Some(&token),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let listed = run(&["admins", "list", "--json"], "");
    let page: Page<AccountView, String> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(
        page.items
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>(),
        ["first", "second"]
    );
    let audit = server.audit().await;
    assert!(
        audit
            .iter()
            .any(|l| l.event == "accounts.create" && l.actor == "cli")
    );
    assert!(
        audit
            .iter()
            .any(|l| l.event == "accounts.create" && l.actor == "first" && l.source == "127.0.0.1")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_device_enrolls_with_a_key_exported_over_the_api() {
    let server = TestServer::start_with(|_| {}).await;
    let client = server.client(None);
    // The first account comes from the server machine; the rig's account and token over the API.
    let admin = account_with_token(&server, "admin", &Right::ALL).await;
    let (status, _) = send(
        &client,
        &server,
        Method::POST,
        "/api/v1/accounts",
        &Sent::Json(json!({"name": "rig", "password": "rig password 1234", "rights": ["keys:read", "keys:write", "keys:export", "devices:read", "audit:read"]})),
        Some(&admin),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, token) = send(
        &client,
        &server,
        Method::POST,
        "/api/v1/tokens",
        &Sent::Json(json!({"account": "rig", "name": "rig", "expires_days": 1})),
        Some(&admin),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let root = token["token"].as_str().unwrap().to_owned();
    let (status, created) = send(
        &client,
        &server,
        Method::POST,
        "/api/v1/keys",
        &Sent::Json(json!({"type": "one-time", "quantity": 1, "comment": "rig"})),
        Some(&root),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let created: CreatedKeys = serde_json::from_value(created).unwrap();
    let response = client
        .post(server.url("/api/v1/keys/export"))
        .bearer_auth(&root)
        .json(&json!({"ids": created.ids, "servers": [{"host": "localhost", "port": server.port}], "format": "xml"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("icg.xml")
    );
    let file =
        onboard_protocol::KeyFile::parse(&response.bytes().await.unwrap(), &Default::default())
            .unwrap();
    assert_eq!(file.ums_id, server.running().ums_id_fingerprint());
    let device = Device::numbered(7);
    let answer = enroll(
        &client,
        &server,
        &device,
        file.keys[0].key().expose_secret(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let (_, devices) = send(
        &client,
        &server,
        Method::GET,
        "/api/v1/devices?total=true",
        &Sent::None,
        Some(&root),
    )
    .await;
    assert_eq!(devices["total"], 1);
    assert_eq!(devices["items"][0]["unit_id"], device.unit_id);
    let (status, _) = send(
        &client,
        &server,
        Method::GET,
        &format!("/api/v1/devices/{}", device.unit_id),
        &Sent::None,
        Some(&root),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, audit) = send(
        &client,
        &server,
        Method::GET,
        &format!("/api/v1/audit?unit_id={}&outcome=ok", device.unit_id),
        &Sent::None,
        Some(&root),
    )
    .await;
    assert_eq!(audit["items"][0]["event"], "enroll", "{audit}");
    let (_, exports) = send(
        &client,
        &server,
        Method::GET,
        "/api/v1/audit?actor=rig",
        &Sent::None,
        Some(&root),
    )
    .await;
    let events: Vec<&str> = exports["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["keys.create", "keys.export"]);
    let (_, key) = send(
        &client,
        &server,
        Method::GET,
        &format!("/api/v1/keys/{}", created.ids[0]),
        &Sent::None,
        Some(&root),
    )
    .await;
    assert_eq!(key["status"], "used");
    server.stop().await;
}

#[tokio::test]
async fn the_command_line_drives_a_remote_server_pinning_its_ums_id() {
    let server = TestServer::start_with(|_| {}).await;
    let token = account_with_token(&server, "rig", &Right::ALL).await;
    let scratch = tempfile::tempdir().unwrap();
    let token_file = scratch.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let url = server.url("");
    let fingerprint = server.running().ums_id_fingerprint().to_string();
    let remote = |pin: &str, args: &[&str]| {
        let pin = pin.to_owned();
        let mut command = std::process::Command::new(crate::util::BIN);
        command
            .env_remove("UMS_STUB_DATA_DIR")
            .env_remove("UMS_STUB_CONFIG")
            // No data directory on this side: everything goes over the API.
            .args(["--data-dir", "/nonexistent/ums-stub"])
            .args(["--server", &url, "--token-file"])
            .arg(&token_file)
            .args(["--fingerprint", &pin])
            .args(args);
        async move {
            tokio::task::spawn_blocking(move || command.output().unwrap())
                .await
                .unwrap()
        }
    };
    let ok = |output: std::process::Output| {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let created = ok(remote(
        &fingerprint,
        &[
            "keys",
            "create",
            "one-time",
            "--quantity",
            "3",
            "--comment",
            "remote",
        ],
    )
    .await);
    assert!(created.contains("IDs 1 to 3"), "{created}");
    ok(remote(&fingerprint, &["keys", "deactivate", "3"]).await);
    let page: Page<KeyView> =
        serde_json::from_str(&ok(remote(&fingerprint, &["keys", "list", "--json"]).await)).unwrap();
    assert_eq!(page.total, Some(3));
    assert_eq!(
        page.items[2].status,
        onboard_protocol::admin::KeyStatus::Inactive
    );
    assert!(page.items.iter().all(|key| !key.shown));
    let shown: Page<KeyView> = serde_json::from_str(&ok(remote(
        &fingerprint,
        &["keys", "list", "--json", "--show", "--status", "active"],
    )
    .await))
    .unwrap();
    assert_eq!(shown.items.len(), 2);
    assert!(
        shown
            .items
            .iter()
            .all(|key| key.shown && key.key.len() == 17)
    );
    let stick = scratch.path().join("icg.txt");
    let exported = ok(remote(
        &fingerprint,
        &[
            "keys",
            "export",
            "--format",
            "text",
            "--out",
            stick.to_str().unwrap(),
            "--server",
            "ums.example:9443",
        ],
    )
    .await);
    assert!(exported.contains("2 keys"), "{exported}");
    let file =
        onboard_protocol::KeyFile::parse(&std::fs::read(&stick).unwrap(), &Default::default())
            .unwrap();
    assert_eq!(file.keys.len(), 2);
    assert_eq!(crate::util::mode(&stick), 0o600);
    let ums_id: onboard_protocol::admin::UmsIdView =
        serde_json::from_str(&ok(
            remote(&fingerprint, &["ums-id", "show", "--json"]).await
        ))
        .unwrap();
    assert_eq!(ums_id.fingerprint.to_string(), fingerprint);
    let audit = ok(remote(&fingerprint, &["audit", "--actor", "rig"]).await);
    assert!(
        audit.contains("keys.create") && audit.contains("keys.export"),
        "{audit}"
    );
    ok(remote(&fingerprint, &["devices", "list"]).await);

    // Another UMS ID pinned: refused before any request is sent.
    let before = server.audit().await.len();
    let other = "00".repeat(32);
    let refused = remote(&other, &["keys", "create", "one-time", "--quantity", "1"]).await;
    assert_eq!(refused.status.code(), Some(1));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("UMS ID"), "{message}");
    assert!(!message.contains(&token));
    assert_eq!(server.audit().await.len(), before);
    assert_eq!(
        server
            .shared
            .stub
            .keys()
            .count(&Default::default())
            .await
            .unwrap(),
        3
    );
    // A command that needs the server machine says so.
    let local_only = remote(&fingerprint, &["admins", "list"]).await;
    assert!(String::from_utf8_lossy(&local_only.stderr).contains("server machine"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_the_log_at_trace_level() {
    use std::io::Write;
    let dir = crate::util::DataDir::new();
    let password = "first-password-Zq81";
    let mut create = dir
        .command(&[
            "admins",
            "create",
            "root",
            "--rights",
            "keys:read,keys:write,keys:reveal,keys:export,server:admin",
            "--password-stdin",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    create
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    assert!(create.wait().unwrap().success());
    let token_file = dir.scratch().join("root.token");
    dir.ok(&[
        "tokens",
        "create",
        "--admin",
        "root",
        "--out",
        token_file.to_str().unwrap(),
    ]);
    assert_eq!(crate::util::mode(&token_file), 0o600);
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    let crt = dir.scratch().join("ums-id.crt");
    dir.ok(&["ums-id", "export", "--out", crt.to_str().unwrap()]);

    let log = dir.scratch().join("serve.log");
    let serve = ums_stub::testing::ServeCommand::program(dir.command(&[]))
        .hosts(&["localhost"])
        .env("RUST_LOG", "trace")
        .stderr(std::fs::File::create(&log).unwrap())
        .start()
        .unwrap();
    let port = serve.port();
    let base = format!("https://localhost:{port}");
    let der = pem::parse(std::fs::read(&crt).unwrap())
        .unwrap()
        .into_contents();
    let client = crate::server::pinned_client(&der, None);

    let mass = "Mass-Secret-Value-4711";
    let bearer = |method: Method, path: &str| {
        client
            .request(method, format!("{base}{path}"))
            .bearer_auth(&token)
    };
    let created: CreatedKeys = bearer(Method::POST, "/api/v1/keys")
        .json(&json!({"type": "mass", "password": mass}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    bearer(Method::POST, "/api/v1/keys")
        .json(&json!({"type": "one-time", "quantity": 3}))
        .send()
        .await
        .unwrap();
    let shown: Vec<KeyView> = bearer(Method::POST, "/api/v1/keys/reveal")
        .json(&json!({"ids": [created.ids[0], 2, 3, 4]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let export = bearer(Method::POST, "/api/v1/keys/export")
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(export.contains(mass));
    let second_token: CreatedToken = bearer(Method::POST, "/api/v1/tokens")
        .json(&json!({"account": "root", "rights": ["keys:read"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let wrong = "wrong-password-Yx72";
    client
        .post(format!("{base}/api/v1/session"))
        .json(&json!({"name": "root", "password": wrong}))
        .send()
        .await
        .unwrap();
    let login = client
        .post(format!("{base}/api/v1/session"))
        .json(&json!({"name": "root", "password": password}))
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
    let second_password = "second-password-Wv33";
    let made = client
        .post(format!("{base}/api/v1/accounts"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .json(&json!({"name": "second", "password": second_password, "rights": ["keys:read"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), StatusCode::CREATED);
    let third_password = "third-password-Uu19";
    let edited = client
        .patch(format!("{base}/api/v1/accounts/second"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .json(&json!({"password": third_password}))
        .send()
        .await
        .unwrap();
    assert_eq!(edited.status(), StatusCode::OK);

    serve.terminate().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("TRACE"), "the log is at trace level");
    assert!(text.lines().count() > 50, "{} lines", text.lines().count());
    let session = cookie.split_once('=').unwrap().1.to_owned();
    let mut secrets = vec![
        password.to_owned(),
        wrong.to_owned(),
        second_password.to_owned(),
        third_password.to_owned(),
        token.clone(),
        token.splitn(3, '_').nth(2).unwrap().to_owned(),
        second_token.token.clone(),
        second_token.token.splitn(3, '_').nth(2).unwrap().to_owned(),
        session,
        csrf,
    ];
    secrets.extend(shown.into_iter().map(|key| key.key));
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "the trace log holds a secret ({} chars)",
            secret.len()
        );
    }
}

#[tokio::test]
async fn keys_filter_by_comment_text_and_the_audit_log_pages_newest_first() {
    let server = TestServer::start_with(|_| {}).await;
    let client = server.client(None);
    let root = account_with_token(&server, "root", &Right::ALL).await;
    for (quantity, comment) in [(3, "Lab Floor 2"), (2, "office")] {
        let (status, _) = send(
            &client,
            &server,
            Method::POST,
            "/api/v1/keys",
            &Sent::Json(json!({"type": "one-time", "quantity": quantity, "comment": comment})),
            Some(&root),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    for (text, count) in [
        ("lab", 3),
        ("FLOOR 2", 3),
        ("office", 2),
        ("o", 5),
        ("basement", 0),
    ] {
        let (_, page) = send(
            &client,
            &server,
            Method::GET,
            &format!(
                "/api/v1/keys?comment={}&total=true",
                text.replace(' ', "%20")
            ),
            &Sent::None,
            Some(&root),
        )
        .await;
        assert_eq!(page["total"], count, "{text}");
    }
    let audit_ids = |page: &Value| -> Vec<i64> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|line| line["id"].as_i64().unwrap())
            .collect()
    };
    let (_, oldest) = send(
        &client,
        &server,
        Method::GET,
        "/api/v1/audit",
        &Sent::None,
        Some(&root),
    )
    .await;
    let mut all = audit_ids(&oldest);
    assert!(all.len() >= 3, "{oldest}");
    all.reverse();
    let (_, first) = send(
        &client,
        &server,
        Method::GET,
        "/api/v1/audit?order=newest&limit=2",
        &Sent::None,
        Some(&root),
    )
    .await;
    assert_eq!(audit_ids(&first), all[..2]);
    let after = first["next_after"].as_i64().unwrap();
    let (_, second) = send(
        &client,
        &server,
        Method::GET,
        &format!("/api/v1/audit?order=newest&limit=2&after={after}"),
        &Sent::None,
        Some(&root),
    )
    .await;
    assert_eq!(audit_ids(&second), all[2..all.len().min(4)]);
    server.stop().await;
}

#[tokio::test]
async fn every_answer_forbids_caching_sniffing_and_plain_http_and_the_cookie_is_host_only() {
    let server = TestServer::start_with(|_| {}).await;
    let client = server.client(None);
    accounts(&server)
        .create(
            NewAccount {
                name: "web".to_owned(),
                password: "the real password".to_owned(),
                rights: vec![Right::KeysRead],
            },
            &Granter::cli(),
        )
        .await
        .unwrap();
    let token = account_with_token(&server, "reader", &[Right::KeysRead]).await;
    let login = client
        .post(server.url("/api/v1/session"))
        .json(&json!({"name": "web", "password": "the real password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("__Host-ums_session="), "{cookie}");
    for part in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.to_ascii_lowercase().contains("domain="), "{cookie}");
    let mut answers = vec![("login", login)];
    for (what, path, bearer) in [
        ("a page of keys", "/api/v1/keys", Some(&token)),
        ("a refusal", "/api/v1/keys", None),
        ("the OpenAPI document", "/api/v1/openapi.json", None),
        ("an unknown route", "/api/v1/nothing-here", Some(&token)),
        ("the Web App", "/", None),
    ] {
        let mut request = client.get(server.url(path));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        answers.push((what, request.send().await.unwrap()));
    }
    for (what, answer) in &answers {
        let headers = answer.headers();
        let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            header("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{what}"
        );
        let hsts = header("strict-transport-security").unwrap_or_default();
        assert!(hsts.starts_with("max-age=31536000"), "{what}: {hsts}");
        if *what != "the Web App" {
            assert_eq!(
                header("cache-control").as_deref(),
                Some("no-store"),
                "{what}"
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_refused_admin_request_and_every_token_s_change_are_audited_with_who_and_what() {
    let server = TestServer::start_with(|_| {}).await;
    let client = server.client(None);
    let token = account_with_token(&server, "reader", &[Right::KeysRead]).await;
    let (status, _) = send(
        &client,
        &server,
        Method::DELETE,
        "/api/v1/keys/7",
        &Sent::None,
        Some(&token),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let audit = server.audit().await;
    let refused: Vec<_> = audit
        .iter()
        .filter(|line| line.event == "api.forbidden")
        .collect();
    assert_eq!(refused.len(), 1, "{audit:?}");
    assert_eq!(refused[0].actor, "reader");
    assert_eq!(refused[0].outcome, "forbidden");
    // The token is public ID and secret: the line names the token by its name and public ID.
    let id = token.split('_').nth(1).unwrap();
    assert_eq!(
        refused[0].detail,
        format!("DELETE /api/v1/keys/7; via token test ({id})")
    );
    assert!(!refused[0].detail.contains(&token));
    // So does every other line a token's request writes.
    let writer = account_with_token(&server, "writer", &[Right::KeysWrite]).await;
    let (status, _) = send(
        &client,
        &server,
        Method::POST,
        "/api/v1/keys",
        &Sent::Json(json!({"type": "one-time", "quantity": 2})),
        Some(&writer),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let created = server
        .audit()
        .await
        .into_iter()
        .rev()
        .find(|line| line.event == "keys.create")
        .unwrap();
    assert_eq!(created.actor, "writer");
    assert!(
        created.detail.ends_with(&format!(
            "; via token test ({})",
            writer.split('_').nth(1).unwrap()
        )),
        "{}",
        created.detail
    );
    server.stop().await;
}

#[tokio::test]
async fn a_failed_login_names_only_an_account_that_exists_and_a_csrf_refusal_names_its_session() {
    let server = TestServer::start_with(|_| {}).await;
    let client = server.client(None);
    accounts(&server)
        .create(
            NewAccount {
                name: "admin".to_owned(),
                password: "the real password".to_owned(),
                rights: vec![Right::KeysRead, Right::KeysWrite],
            },
            &Granter::cli(),
        )
        .await
        .unwrap();
    let login = |name: &str, password: &str| {
        client
            .post(server.url("/api/v1/session"))
            .json(&json!({"name": name, "password": password}))
            .send()
    };
    // A password typed into the name field (it would make a valid account name) is not recorded.
    let answer = login("Winter2025", "admin").await.unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    let answer = login("admin", "guess guess guess").await.unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    let failed: Vec<String> = server
        .audit()
        .await
        .into_iter()
        .filter(|line| line.event == "session.login")
        .map(|line| line.detail)
        .collect();
    assert_eq!(failed, ["", "failed login as admin"]);

    // A write with the session cookie but without its CSRF token: 403, audited as the account.
    let session = login("admin", "the real password").await.unwrap();
    assert_eq!(session.status(), StatusCode::OK);
    let cookie = session.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let refused = client
        .post(server.url("/api/v1/keys"))
        .header("cookie", cookie)
        .json(&json!({"type": "one-time", "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let line = server
        .audit()
        .await
        .into_iter()
        .rev()
        .find(|line| line.event == "api.forbidden")
        .unwrap();
    assert_eq!(
        (line.actor.as_str(), line.detail.as_str()),
        ("admin", "POST /api/v1/keys")
    );
    server.stop().await;
}

#[tokio::test]
async fn the_export_check_probes_each_server_from_here_and_says_which_keys_can_go() {
    use onboard_protocol::admin::{ExportCheck, ServerReach};
    let server = TestServer::start_with(|_| {}).await;
    let other = TestServer::start_with(|_| {}).await;
    let client = server.client(None);
    let token = account_with_token(&server, "exporter", &[Right::KeysExport]).await;
    let admin = server.shared.stub.keys();
    let ids = admin
        .create_one_time(4, "", Box::new(|_| {}), &Actor::cli())
        .await
        .unwrap();
    let used = admin.get(ids[1], true).await.unwrap().key;
    assert_eq!(
        enroll(&client, &server, &Device::numbered(1), &used)
            .await
            .status,
        StatusCode::OK
    );
    admin.deactivate(&ids[2..3], &Actor::cli()).await.unwrap();
    // A port that takes the connection and closes it: TCP, but no TLS.
    let not_tls = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let not_tls_port = not_tls.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = not_tls.accept().await {
            drop(stream);
        }
    });
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let audit_before = server.audit().await.len();

    let request = json!({
        "ids": [ids[0], ids[1], ids[2], ids[0]],
        "servers": [
            {"host": "localhost", "port": server.port},
            {"host": "127.0.0.1", "port": closed_port},
            {"host": "127.0.0.1", "port": other.port},
            {"host": "127.0.0.1", "port": not_tls_port},
            {"host": "no-such-host.invalid", "port": 8443},
        ],
    });
    let started = std::time::Instant::now();
    let (status, body) = send(
        &client,
        &server,
        Method::POST,
        "/api/v1/keys/export/check",
        &Sent::Json(request),
        Some(&token),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "probes run at once, each bounded"
    );
    let check: ExportCheck = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(check.fingerprint, server.running().ums_id_fingerprint());
    let reach: Vec<(String, u16, ServerReach)> = check
        .servers
        .iter()
        .map(|server| (server.host.clone(), server.port, server.reach))
        .collect();
    assert_eq!(
        reach,
        [
            ("localhost".to_owned(), server.port, ServerReach::Ok),
            (
                "127.0.0.1".to_owned(),
                closed_port,
                ServerReach::Unreachable
            ),
            ("127.0.0.1".to_owned(), other.port, ServerReach::PinMismatch),
            ("127.0.0.1".to_owned(), not_tls_port, ServerReach::TlsFailed),
            (
                "no-such-host.invalid".to_owned(),
                8443,
                ServerReach::Unreachable
            ),
        ],
        "{body}"
    );
    assert!(check.servers[1].detail.contains("refused"), "{body}");
    assert!(
        check.servers[2].detail.contains(&check.fingerprint.short()),
        "{body}"
    );
    // Each key once, in the request's order.
    let keys: Vec<(i64, &str, bool)> = check
        .keys
        .iter()
        .map(|key| (key.id, key.status.as_str(), key.exportable))
        .collect();
    assert_eq!(
        keys,
        [
            (ids[0], "active", true),
            (ids[1], "used", false),
            (ids[2], "inactive", false),
        ]
    );
    assert!(check.keys[1].reason.as_deref().unwrap().contains("used"));
    assert_eq!((check.exportable, check.refused), (1, 2));
    // No key was shown, so nothing is audited as a reveal or an export; and no key value is in
    // the answer.
    let audit = server.audit().await;
    assert_eq!(audit.len(), audit_before, "{audit:#?}");
    for id in &ids {
        let value = admin.get(*id, true).await.unwrap().key;
        assert!(!body.to_string().contains(&value));
    }

    // No IDs: every active key, counted; no servers: the configured public address.
    let (status, body) = send(
        &client,
        &server,
        Method::POST,
        "/api/v1/keys/export/check",
        &Sent::Json(json!({})),
        Some(&token),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let check: ExportCheck = serde_json::from_value(body.clone()).unwrap();
    assert!(check.keys.is_empty());
    assert_eq!((check.exportable, check.refused), (2, 0), "{body}");
    let public = &server.shared.stub.settings.public_server;
    assert_eq!(check.servers.len(), 1);
    assert_eq!(
        (check.servers[0].host.as_str(), check.servers[0].port),
        (public.host(), public.port())
    );
    // An ID no key has is refused as the export refuses it, naming it.
    let (status, body) = send(
        &client,
        &server,
        Method::POST,
        "/api/v1/keys/export/check",
        &Sent::Json(json!({"ids": [ids[0], 999_999]})),
        Some(&token),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("999999"),
        "{body}"
    );
    // A server field that cannot be written is refused, naming the field.
    let (status, body) = send(
        &client,
        &server,
        Method::POST,
        "/api/v1/keys/export/check",
        &Sent::Json(json!({"servers": [{"host": "a b"}]})),
        Some(&token),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("servers"),
        "{body}"
    );
    // keys:read alone may not ask.
    let reader = account_with_token(&server, "reader", &[Right::KeysRead]).await;
    let (status, _) = send(
        &client,
        &server,
        Method::POST,
        "/api/v1/keys/export/check",
        &Sent::Json(json!({})),
        Some(&reader),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    other.stop().await;
    server.stop().await;
}
