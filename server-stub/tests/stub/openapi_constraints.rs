//! What the OpenAPI document states, as the server applies it: every integer member of a request
//! also takes a whole-number float (JSON Schema counts `3.0` as an integer), and a typed
//! mass-deployment key meets the floor (16 characters, a strength estimate) on every surface,
//! with a refusal that says why and never repeats the value.

use onboard_protocol::admin::{CreatedKeys, Right};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::admin_api::{Sent, account_with_token, send};
use crate::server::TestServer;
use crate::util::DataDir;

#[tokio::test]
async fn integers_written_as_whole_number_floats_are_taken() {
    let server = TestServer::start_with(|_| {}).await;
    let client = server.client(None);
    let root = account_with_token(&server, "root", &Right::ALL).await;
    let (status, created) = send(
        &client,
        &server,
        Method::POST,
        "/api/v1/keys",
        &Sent::Json(json!({"type": "one-time", "quantity": 3.0})),
        Some(&root),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let created: CreatedKeys = serde_json::from_value(created).unwrap();
    assert_eq!(created.ids.len(), 3);
    let first = created.ids[0] as f64;
    let table: &[(Method, &str, serde_json::Value, StatusCode)] = &[
        (
            Method::POST,
            "/api/v1/keys/deactivate",
            json!({"ids": [first, first + 1.0]}),
            StatusCode::NO_CONTENT,
        ),
        (
            Method::POST,
            "/api/v1/keys/activate",
            json!({"ids": [first]}),
            StatusCode::NO_CONTENT,
        ),
        (
            Method::POST,
            "/api/v1/keys/reveal",
            json!({"ids": [first]}),
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/api/v1/keys/export",
            json!({"ids": [first], "servers": [{"host": "ums.example", "port": 8443.0}]}),
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/api/v1/tokens",
            json!({"account": "root", "expires_days": 30.0}),
            StatusCode::CREATED,
        ),
        (
            Method::POST,
            "/api/v1/keys/delete",
            json!({"ids": [first]}),
            StatusCode::NO_CONTENT,
        ),
    ];
    for (method, path, body, expected) in table {
        let (status, answer) = send(
            &client,
            &server,
            method.clone(),
            path,
            &Sent::Json(body.clone()),
            Some(&root),
        )
        .await;
        assert_eq!(status, *expected, "{method} {path} {body}: {answer}");
    }
    // A fraction is still no integer, and a whole number still has to fit.
    for body in [
        json!({"type": "one-time", "quantity": 2.5}),
        json!({"type": "one-time", "quantity": -1.0}),
        json!({"type": "one-time", "quantity": "2"}),
    ] {
        let (status, answer) = send(
            &client,
            &server,
            Method::POST,
            "/api/v1/keys",
            &Sent::Json(body.clone()),
            Some(&root),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
    }
    server.stop().await;
}

/// Typed values below the floor, with the words their refusal must hold.
const BELOW_THE_FLOOR: [(&str, &str); 4] = [
    // The dictionary attack's kind of value: a common password, short.
    ("password1234", "at least 16 characters"),
    ("Rollout-2026", "at least 16 characters"),
    // Long enough, but a common password and a sequence, a keyboard row.
    ("password12345678", "too guessable"),
    ("qwertyuiopasdfgh", "too guessable"),
];

#[tokio::test]
async fn the_api_refuses_a_typed_mass_key_below_the_floor_saying_why() {
    let server = TestServer::start_with(|_| {}).await;
    let client = server.client(None);
    let writer = account_with_token(&server, "writer", &[Right::KeysRead, Right::KeysWrite]).await;
    for (password, reason) in BELOW_THE_FLOOR {
        let (status, answer) = send(
            &client,
            &server,
            Method::POST,
            "/api/v1/keys",
            &Sent::Json(json!({"type": "mass", "password": password})),
            Some(&writer),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{password}: {answer}"
        );
        let detail = answer["detail"].as_str().unwrap_or_default();
        assert!(
            detail.starts_with("password: ") && detail.contains(reason),
            "{password}: {answer}"
        );
        assert!(!answer.to_string().contains(password), "{answer}");
    }
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
    // A strong typed value and a random one are taken.
    for body in [
        json!({"type": "mass", "password": "Rollout wave 3, hall B"}),
        json!({"type": "mass"}),
    ] {
        let (status, answer) = send(
            &client,
            &server,
            Method::POST,
            "/api/v1/keys",
            &Sent::Json(body),
            Some(&writer),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }
    server.stop().await;
}

#[test]
fn the_command_line_refuses_a_typed_mass_key_below_the_floor_saying_why() {
    let dir = DataDir::new();
    for (password, reason) in BELOW_THE_FLOOR {
        let refused = dir.fails(&["keys", "create", "mass", "--password", password]);
        assert!(refused.contains(reason), "{password}: {refused}");
        assert!(!refused.contains(password), "{refused}");
    }
    // From standard input too.
    let mut child = dir
        .command(&["keys", "create", "mass", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"iloveyouiloveyou\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("too guessable"), "{said}");
    assert!(!said.contains("iloveyou"), "{said}");
    assert!(dir.list(&[]).is_empty());
}
