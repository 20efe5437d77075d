//! schemathesis against the served OpenAPI document of a server with the default settings, with
//! every check on, once with an all-rights token and once with a read-only one: no 5xx, every
//! answer matches its schema, every status is documented, invalid input is refused and valid
//! input accepted.
//!
//! schemathesis comes from PyPI (`pip install -r server-stub/tests/schemathesis/requirements.txt`;
//! `.ci/run` does it). The program is `$ONBOARD_SCHEMATHESIS`, else `schemathesis` on the PATH.
//! `ONBOARD_SCHEMATHESIS_EXAMPLES` sets the examples per operation of the fuzzing phase (default
//! 10).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use ums_stub::accounts::Granter;

use onboard_protocol::admin::{NewAccount, NewToken, Right};
use ums_stub::store::Actor;

use crate::server::{Device, TestServer, enroll};

/// The whole run may take this long.
const RUN_LIMIT: Duration = Duration::from_secs(900);

fn program() -> String {
    std::env::var("ONBOARD_SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".to_owned())
}

async fn token_for(server: &TestServer, name: &str, rights: &[Right]) -> String {
    let accounts = server.shared.stub.accounts();
    accounts
        .create(
            NewAccount {
                name: name.to_owned(),
                password: "schemathesis password".to_owned(),
                rights: rights.to_vec(),
            },
            &Granter::cli(),
        )
        .await
        .unwrap();
    accounts
        .create_token(
            NewToken {
                account: name.to_owned(),
                name: "schemathesis".to_owned(),
                rights: None,
                expires_days: None,
            },
            &Granter::cli(),
        )
        .await
        .unwrap()
        .token
}

/// Writes the configuration of one run into `dir`. With `all_rights`, an operation that answers
/// only 401 or 403 is a failure; a read-only token is meant to get 403 on every write.
fn config(
    dir: &Path,
    ca: &Path,
    token: &str,
    examples: &str,
    all_rights: bool,
) -> std::path::PathBuf {
    let hooks = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis/hooks.py");
    let text = format!(
        r#"
tls-verify = "{ca}"
seed = 20261130
workers = 1
headers = {{ Authorization = "Bearer {token}" }}
hooks = "{hooks}"
[warnings]
fail-on = {fail_on}
[cache]
enabled = false
[generation]
max-examples = {examples}
database = "none"
with-security-parameters = false
[phases.stateful]
max-steps = 10
# Creating a million keys in one request, and then exporting them all, is slow by design (and
# slower in a debug build); every other operation keeps the 10 s limit of --checks all.
[[operations]]
include-name = "POST /api/v1/keys"
checks.max_response_time = 180.0
[[operations]]
include-name = "POST /api/v1/keys/export"
checks.max_response_time = 180.0
# A CSV body's rows cannot be described by a JSON Schema: an empty or malformed file is refused
# with 422, which this check would count as a valid body refused. The refusals are tested in
# admin_api::refusals_name_the_field_and_are_problems.
[[operations]]
include-name = "POST /api/v1/keys/import"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]
"#,
        ca = ca.display(),
        fail_on = if all_rights {
            r#"["missing_auth"]"#
        } else {
            "[]"
        },
    );
    let path = dir.join("schemathesis.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_nothing_with_an_all_rights_and_a_read_only_token() {
    let server = TestServer::start_with(|_| {}).await;
    // Something to list, get and page through: keys of each type and an enrolled device.
    let keys = server.shared.stub.keys();
    let cli = Actor::cli();
    let ids = keys
        .create_one_time(5, "seed", Box::new(|_| {}), &cli)
        .await
        .unwrap();
    keys.create_device_bound(
        &["00E0C5540B8B".parse().unwrap()],
        "seed",
        Box::new(|_| {}),
        &cli,
    )
    .await
    .unwrap();
    let value = keys.reveal(&ids[..1]).await.unwrap().remove(0).key;
    let client = server.client(None);
    assert!(
        enroll(&client, &server, &Device::numbered(1), &value)
            .await
            .status
            .is_success()
    );

    let all = token_for(&server, "schemathesis-all-rights", &Right::ALL).await;
    let read_only = token_for(
        &server,
        "schemathesis-read-only",
        &[Right::KeysRead, Right::DevicesRead, Right::AuditRead],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ums-id.crt");
    std::fs::write(&ca, server.shared.stub.ums_id.certificate_pem()).unwrap();
    let examples =
        std::env::var("ONBOARD_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "10".to_owned());
    let schema = server.url(ums_stub::http::admin::openapi::OPENAPI_PATH);

    for (label, token) in [("all rights", &all), ("read-only", &read_only)] {
        let config = config(dir.path(), &ca, token, &examples, token == &all);
        // coreutils' timeout bounds the run: a hung fuzzer fails the test instead of CI.
        let mut command = std::process::Command::new("timeout");
        command
            .arg(RUN_LIMIT.as_secs().to_string())
            .arg(program())
            .arg("--config-file")
            .arg(&config)
            .args(["run", &schema, "--checks", "all", "--url", &server.url("")])
            .args(["--phases", "examples,coverage,fuzzing,stateful"])
            .args(["--request-timeout", "30", "--no-color"])
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .unwrap();
        assert_ne!(
            output.status.code(),
            Some(127),
            "cannot run {}: install it with pip install -r \
             server-stub/tests/schemathesis/requirements.txt (bash .ci/run does), or name it in \
             ONBOARD_SCHEMATHESIS",
            program()
        );
        assert_ne!(
            output.status.code(),
            Some(124),
            "schemathesis ({label}) ran over {RUN_LIMIT:?}"
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let summary: String = stdout
            .lines()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        eprintln!("schemathesis ({label}):\n{summary}");
        assert!(
            output.status.success(),
            "schemathesis ({label}) found problems:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!stdout.contains(token.as_str()));
    }
    server.stop().await;
}
