//! schemathesis against the served OpenAPI document of a server with the default settings, with
//! every check on, over two seeds, each on a fresh server with an all-rights token and with a
//! read-only one: no 5xx, every answer matches its schema, every status is documented, invalid
//! input is refused and valid input accepted (no 422 for schema-valid data but the three refusals
//! `tests/schemathesis/hooks.py` names and checks).
//!
//! schemathesis comes from PyPI (`pip install -r server-stub/tests/schemathesis/requirements.txt`;
//! `.ci/run` does it). The program is `$ONBOARD_SCHEMATHESIS`, else `schemathesis` on the PATH.
//! `ONBOARD_SCHEMATHESIS_EXAMPLES` sets the examples per operation of the fuzzing phase (default
//! 10), `ONBOARD_SCHEMATHESIS_SEEDS` the seeds (comma-separated; default [`SEEDS`]).
//!
//! The test-rig routes (tag `test-rig`) are not served on the devices' port, and the document
//! served there (`/api/v1/openapi.json`) holds the admin API only: the first runs never see them.
//! A second run, with every check on as well, fuzzes them on the control listener of a server in
//! test-rig mode, from the document that listener serves (`/rig/v1/openapi.json`).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use ums_stub::accounts::Granter;

use onboard_protocol::admin::{NewAccount, NewToken, Right};
use ums_stub::store::Actor;

use crate::server::{Device, TestServer, enroll};

/// The seeds of the runs, each with both tokens: the one the project ran first, and another.
const SEEDS: &str = "20261130,1";

/// One run may take this long.
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
    seed: &str,
) -> std::path::PathBuf {
    let hooks = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis/hooks.py");
    let text = format!(
        r#"
tls-verify = "{ca}"
seed = {seed}
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
# The three refusals of schema-valid data that no JSON Schema can state: a typed mass key the
# strength estimate rates too guessable, the rows of a CSV body, and a usage limit for a stored
# key that is not a mass-deployment key. positive_data_acceptance takes a 422 for these three
# operations only, and the hooks' check fails every such 422 that is not that one refusal.
# Creating 100,000 keys in one request, and then exporting every key (or every key a filter
# matches, hundreds of thousands by then) in one, is slow by design (and slower in a debug
# build); every other operation keeps the 10 s limit of --checks all. The change of every key a
# filter matches is not fuzzed: its first deletion with an empty filter deletes every key, and
# the run would test nothing that names one after it (tests/web and admin_api's rights matrix
# test it).
[[operations]]
include-name = "POST /api/v1/keys"
checks.max_response_time = 180.0
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
[[operations]]
include-name = "POST /api/v1/keys/import"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
[[operations]]
include-name = "PATCH /api/v1/keys/{{id}}"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
[[operations]]
include-name = "POST /api/v1/keys/export"
checks.max_response_time = 180.0
[[operations]]
include-name = "POST /api/v1/keys/change"
enabled = false
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

/// A server with something to list, get and page through (keys of each type and an enrolled
/// device), and an all-rights and a read-only token for it.
async fn seeded_server() -> (TestServer, String, String) {
    let server = TestServer::start_with(|_| {}).await;
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
    (server, all, read_only)
}

/// Runs schemathesis with `args` after `run` in `dir`, bounded by [`RUN_LIMIT`]; fails the test
/// naming `label` on any problem found. Returns its standard output.
async fn run_schemathesis(dir: &Path, label: &str, args: Vec<String>) -> String {
    let mut command = std::process::Command::new("timeout");
    command
        .arg(RUN_LIMIT.as_secs().to_string())
        .arg(program())
        .args(args)
        .current_dir(dir)
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
         server-stub/tests/schemathesis/requirements.txt (bash .ci/run does), or name it \
         in ONBOARD_SCHEMATHESIS",
        program()
    );
    assert_ne!(
        output.status.code(),
        Some(124),
        "schemathesis ({label}) ran over {RUN_LIMIT:?}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let summary: Vec<&str> = stdout.lines().rev().take(12).collect();
    eprintln!(
        "schemathesis ({label}):\n{}",
        summary.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    assert!(
        output.status.success(),
        "schemathesis ({label}) found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The configuration of the run on the control listener: no token, no TLS. A plan whose
/// probabilities add up to more than 1 is refused as the hooks check; the one-shot actions
/// answer 409 when they cannot run (positive data may meet that refusal); making the store
/// unavailable and replacing the UMS ID are not fuzzed, since each would change what the rest of
/// the run meets (the rig tests and the fault-injection tests drive them).
fn rig_config(dir: &Path, examples: &str, seed: &str) -> std::path::PathBuf {
    let hooks = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis/hooks.py");
    let text = format!(
        r#"
seed = {seed}
workers = 1
hooks = "{hooks}"
[warnings]
fail-on = []
[cache]
enabled = false
[generation]
max-examples = {examples}
database = "none"
[phases.stateful]
max-steps = 10
[[operations]]
include-name = "PUT /rig/v1/faults"
checks.positive_data_acceptance.expected-statuses = ["2xx", "422"]
[[operations]]
include-name = "POST /rig/v1/actions/expire-certificates"
checks.positive_data_acceptance.expected-statuses = ["2xx", "409"]
[[operations]]
include-name = "POST /rig/v1/actions/replace-ums-id"
enabled = false
[[operations]]
include-name = "POST /rig/v1/actions/store-unavailable"
enabled = false
"#
    );
    let path = dir.join("schemathesis-rig.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_nothing_on_the_test_rig_control_listener() {
    let examples =
        std::env::var("ONBOARD_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "10".to_owned());
    let seeds = std::env::var("ONBOARD_SCHEMATHESIS_SEEDS").unwrap_or_else(|_| SEEDS.to_owned());
    for seed in seeds.split(',').map(str::trim) {
        let server = TestServer::start_with(|settings| settings.test_rig = true).await;
        let controls = ums_stub::rig::control::Control::new(
            server.shared.clone(),
            ums_stub::rig::control::Facts {
                host: "localhost".to_owned(),
                port: server.port,
            },
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind(ums_stub::rig::control::DEFAULT_LISTEN)
            .await
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let control = ums_stub::rig::control::spawn(listener, controls);
        let dir = tempfile::tempdir().unwrap();
        let config = rig_config(dir.path(), &examples, seed);
        let schema = format!("{base}{}", ums_stub::rig::control::RIG_OPENAPI_PATH);
        let args = vec![
            "--config-file".to_owned(),
            config.display().to_string(),
            "run".to_owned(),
            schema,
            "--checks".to_owned(),
            "all".to_owned(),
            "--url".to_owned(),
            base,
            "--phases".to_owned(),
            "examples,coverage,fuzzing,stateful".to_owned(),
            "--request-timeout".to_owned(),
            "30".to_owned(),
            "--no-color".to_owned(),
        ];
        run_schemathesis(dir.path(), &format!("test-rig, seed {seed}"), args).await;
        control.abort();
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_nothing_with_an_all_rights_and_a_read_only_token() {
    let examples =
        std::env::var("ONBOARD_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "10".to_owned());
    let seeds = std::env::var("ONBOARD_SCHEMATHESIS_SEEDS").unwrap_or_else(|_| SEEDS.to_owned());
    for seed in seeds.split(',').map(str::trim) {
        // A fresh server per seed: a run's stateful phase changes accounts and tokens.
        let (server, all, read_only) = seeded_server().await;
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ums-id.crt");
        std::fs::write(&ca, server.shared.stub.ums_id.certificate_pem()).unwrap();
        let schema = server.url(ums_stub::http::admin::openapi::OPENAPI_PATH);
        for (who, token) in [("all rights", &all), ("read-only", &read_only)] {
            let label = format!("{who}, seed {seed}");
            let config = config(dir.path(), &ca, token, &examples, token == &all, seed);
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
                 server-stub/tests/schemathesis/requirements.txt (bash .ci/run does), or name it \
                 in ONBOARD_SCHEMATHESIS",
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
}
