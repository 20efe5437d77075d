//! Real peers: `openssl` and `curl` enrolling against `ums-stub serve`, SIGKILL during a burst of
//! enrollments, and the systemd unit checked by `systemd-analyze verify`.

use std::path::Path;
use std::process::Command;

use onboard_protocol::UnitId;
use onboard_protocol::admin::{DeviceView, KeyStatus, Page};

use ums_stub::testing::{ServeCommand, ServeProcess};

use crate::util::DataDir;

/// `ums-stub serve` over `dir` as a process on a free port (`ums_stub::testing`).
pub(crate) fn serve(dir: &DataDir) -> ServeProcess {
    ServeCommand::program(dir.command(&[]))
        .stderr(std::process::Stdio::null())
        .start()
        .unwrap()
}

fn run(program: &str, args: &[&str], dir: &Path) -> Vec<u8> {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} could not run ({e}); scripts/test installs it"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Makes a key and CSR with openssl; `newkey` as `openssl req -newkey` takes it.
fn openssl_csr(work: &Path, newkey: &[&str], name: &str) {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let mut args = vec![
        "req",
        "-new",
        "-nodes",
        "-keyout",
        &key,
        "-subj",
        "/CN=device",
        "-outform",
        "DER",
        "-out",
        &csr,
    ];
    args.extend_from_slice(newkey);
    run("openssl", &args, work);
    run(
        "openssl",
        &["base64", "-in", &csr, "-out", &format!("{name}.b64")],
        work,
    );
}

/// POSTs a CSR with curl; returns the HTTP status and the body.
fn curl_enroll(work: &Path, port: u16, unit: &str, key: &str, name: &str) -> (u16, Vec<u8>) {
    let output = Command::new("curl")
        .args([
            "-sS",
            "--cacert",
            "ums-id.crt",
            "-u",
            &format!("{unit}:{key}"),
            "-H",
            "Content-Type: application/pkcs10",
            "--data-binary",
            &format!("@{name}.b64"),
            "-o",
            &format!("{name}.answer"),
            "-w",
            "%{http_code}",
            &format!("https://localhost:{port}/.well-known/est/simpleenroll"),
        ])
        .current_dir(work)
        .output()
        .unwrap_or_else(|e| panic!("curl could not run ({e}); scripts/test installs it"));
    assert!(
        output.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let status = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap();
    (
        status,
        std::fs::read(work.join(format!("{name}.answer"))).unwrap(),
    )
}

/// Reads a certs-only answer with openssl and checks it certifies `name`.key for `unit`.
fn check_with_openssl(work: &Path, name: &str, unit: &str) {
    run(
        "openssl",
        &[
            "base64",
            "-d",
            "-in",
            &format!("{name}.answer"),
            "-out",
            &format!("{name}.p7"),
        ],
        work,
    );
    let printed = run(
        "openssl",
        &[
            "pkcs7",
            "-inform",
            "DER",
            "-in",
            &format!("{name}.p7"),
            "-print_certs",
            "-out",
            &format!("{name}.crt"),
        ],
        work,
    );
    let _ = printed;
    let subject = String::from_utf8(run(
        "openssl",
        &["x509", "-in", &format!("{name}.crt"), "-noout", "-subject"],
        work,
    ))
    .unwrap();
    assert!(
        subject.replace(' ', "").contains(&format!("CN={unit}")),
        "{subject}"
    );
    let verified = run(
        "openssl",
        &[
            "verify",
            "-CAfile",
            "ums-id.crt",
            "-purpose",
            "sslclient",
            &format!("{name}.crt"),
        ],
        work,
    );
    assert!(String::from_utf8_lossy(&verified).contains("OK"));
    let cert_key = run(
        "openssl",
        &["x509", "-in", &format!("{name}.crt"), "-noout", "-pubkey"],
        work,
    );
    let own_key = run(
        "openssl",
        &["pkey", "-in", &format!("{name}.key"), "-pubout"],
        work,
    );
    assert_eq!(
        cert_key, own_key,
        "the certificate certifies the key openssl made"
    );
}

#[test]
fn openssl_and_curl_enroll_with_the_exported_ums_id() {
    let dir = DataDir::new();
    dir.ok(&["keys", "create", "one-time", "--quantity", "1"]);
    dir.ok(&["keys", "create", "mass"]);
    let keys = dir.list(&["--show"]);
    let (one_time, mass) = (keys[0].key.as_str(), keys[1].key.as_str());
    let work = dir.scratch();
    dir.ok(&[
        "ums-id",
        "export",
        "--out",
        work.join("ums-id.crt").to_str().unwrap(),
    ]);
    let server = serve(&dir);

    // An RSA-3072 device with the one-time key.
    openssl_csr(work, &["-newkey", "rsa:3072"], "rsa");
    let (status, _) = curl_enroll(work, server.port(), "00E0C5540B8B", one_time, "rsa");
    assert_eq!(status, 200);
    check_with_openssl(work, "rsa", "00E0C5540B8B");

    // A P-256 device: the used one-time key is refused with its problem code, the mass key works.
    openssl_csr(
        work,
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "ec",
    );
    let (status, body) = curl_enroll(work, server.port(), "00E0C5540B8C", one_time, "ec");
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, problem["code"].as_str().unwrap()),
        (403, "key_used")
    );
    let (status, _) = curl_enroll(work, server.port(), "00E0C5540B8C", mass, "ec");
    assert_eq!(status, 200);
    check_with_openssl(work, "ec", "00E0C5540B8C");

    // The UMS ID chain from cacerts, read by openssl.
    let cacerts = run(
        "curl",
        &[
            "-sS",
            "--cacert",
            "ums-id.crt",
            &format!(
                "https://127.0.0.1:{}/.well-known/est/cacerts",
                server.port()
            ),
        ],
        work,
    );
    std::fs::write(work.join("cacerts.b64"), cacerts).unwrap();
    run(
        "openssl",
        &["base64", "-d", "-in", "cacerts.b64", "-out", "cacerts.p7"],
        work,
    );
    let chain = String::from_utf8(run(
        "openssl",
        &[
            "pkcs7",
            "-inform",
            "DER",
            "-in",
            "cacerts.p7",
            "-print_certs",
        ],
        work,
    ))
    .unwrap();
    assert!(chain.contains("UMS ID"), "{chain}");
    assert!(
        server.terminate().unwrap().success(),
        "SIGTERM stops the server cleanly"
    );
}

/// What one device saw of one attempt.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Certificate(Vec<u8>),
    Refused(String),
    Lost,
}

async fn attempt(
    client: &reqwest::Client,
    port: u16,
    device: &crate::server::Device,
    key: &str,
) -> Seen {
    let sent = client
        .post(format!(
            "https://localhost:{port}/.well-known/est/simpleenroll"
        ))
        .basic_auth(&device.unit_id, Some(key))
        .body(device.csr_base64.clone())
        .send()
        .await;
    let Ok(response) = sent else {
        return Seen::Lost;
    };
    let status = response.status();
    let Ok(body) = response.bytes().await else {
        return Seen::Lost;
    };
    if status == 200 {
        let der = onboard_protocol::est::decode_base64(&body).unwrap();
        Seen::Certificate(
            onboard_protocol::est::parse_certs_only(&der)
                .unwrap()
                .remove(0),
        )
    } else {
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        Seen::Refused(problem["code"].as_str().unwrap().to_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_burst_uses_no_key_twice_and_retries_get_their_certificates() {
    const KEYS: usize = 40;
    let dir = DataDir::new();
    dir.ok(&[
        "keys",
        "create",
        "one-time",
        "--quantity",
        &KEYS.to_string(),
    ]);
    let keys: Vec<String> = dir
        .list(&["--show"])
        .iter()
        .map(|k| k.key.clone())
        .collect();
    // Half the devices lose their race: a rig on loopback raises the failure limit.
    std::fs::write(
        dir.path().join("ums-stub.toml"),
        "max_failures_per_source = 100000\n",
    )
    .unwrap();
    let pem_path = dir.scratch().join("ums-id.crt");
    dir.ok(&["ums-id", "export", "--out", pem_path.to_str().unwrap()]);
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pem_path).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    // Two devices per key, racing for it.
    let devices: Vec<(crate::server::Device, String)> = (0..KEYS * 2)
        .map(|n| (crate::server::Device::numbered(n), keys[n % KEYS].clone()))
        .collect();
    let devices = std::sync::Arc::new(devices);

    let server = serve(&dir);
    let port = server.port();
    let (first_tx, mut first_rx) = tokio::sync::mpsc::channel::<()>(KEYS * 2);
    let mut tasks = Vec::new();
    for index in 0..devices.len() {
        let (client, devices, first_tx) = (client.clone(), devices.clone(), first_tx.clone());
        tasks.push(tokio::spawn(async move {
            let (device, key) = &devices[index];
            let seen = attempt(&client, port, device, key).await;
            if matches!(seen, Seen::Certificate(_)) {
                let _ = first_tx.send(()).await;
            }
            seen
        }));
    }
    // Kill the server as soon as the first certificates are out: the rest are in flight.
    for _ in 0..3 {
        first_rx.recv().await.unwrap();
    }
    tokio::task::spawn_blocking(move || server.kill().unwrap())
        .await
        .unwrap();
    let mut first: Vec<Seen> = Vec::new();
    for task in tasks {
        first.push(task.await.unwrap());
    }
    let lost = first.iter().filter(|s| **s == Seen::Lost).count();
    assert!(lost > 0, "the kill landed mid-burst: {first:?}");

    // Restart on the same data directory; every device retries with its key pair and key.
    let server = serve(&dir);
    let mut second = Vec::new();
    for (device, key) in devices.iter() {
        second.push(attempt(&client, server.port(), device, key).await);
    }
    for (index, (before, after)) in first.iter().zip(&second).enumerate() {
        match (before, after) {
            // An answer already received is given again, unchanged.
            (Seen::Certificate(a), b) => {
                assert_eq!(b, &Seen::Certificate(a.clone()), "device {index}")
            }
            (Seen::Refused(code), b) => {
                assert_eq!(b, &Seen::Refused(code.clone()), "device {index}")
            }
            // A lost answer: the certificate (if the server had committed, the same one) or key_used.
            (Seen::Lost, Seen::Certificate(_)) => {}
            (Seen::Lost, Seen::Refused(code)) => assert_eq!(code, "key_used", "device {index}"),
            (Seen::Lost, Seen::Lost) => {
                panic!("device {index} got no answer from the restarted server")
            }
        }
    }
    // One device per key, no more, no less; the store agrees with what the clients hold.
    for k in 0..KEYS {
        let holders = [k, k + KEYS]
            .iter()
            .filter(|&&d| matches!(second[d], Seen::Certificate(_)))
            .count();
        assert_eq!(holders, 1, "key {k}");
    }
    drop(server);
    let keys_after = dir.list(&[]);
    assert!(
        keys_after
            .iter()
            .all(|k| k.status == KeyStatus::Used && k.usage_count == 1)
    );
    let devices_after: Page<DeviceView, UnitId> =
        serde_json::from_str(&dir.ok(&["devices", "list", "--json"])).unwrap();
    assert_eq!(
        devices_after.items.len(),
        KEYS,
        "usage counts match the certificates issued"
    );
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../systemd/ums-stub.service"
    ))
    .unwrap();
    for line in [
        "Type=notify",
        "StateDirectory=ums-stub",
        "DynamicUser=yes",
        "ExecStart=/usr/bin/ums-stub --config /etc/ums-stub/ums-stub.toml",
        "LimitNOFILE=65536",
    ] {
        assert!(unit.contains(line), "the unit lacks {line}");
    }
    // The unit is verified or the test fails: a missing tool is not a pass.
    let probe = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run systemd-analyze ({error}): install Debian's systemd package \
                 (scripts/test does)"
            )
        });
    assert!(probe.status.success(), "systemd-analyze --version failed");
    // Verify a copy that runs the binary just built (verify checks that ExecStart exists).
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("ums-stub.service");
    std::fs::write(&copy, unit.replace("/usr/bin/ums-stub", crate::util::BIN)).unwrap();
    let output = Command::new("systemd-analyze")
        // The manual pages Documentation= names come with the package (whose test verifies the
        // installed unit, pages and all); here they are not installed.
        .args(["verify", "--man=no", copy.to_str().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    // Messages about other units on the machine are not ours.
    let ours: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("ums-stub.service"))
        .collect();
    assert!(
        output.status.success() && ours.is_empty(),
        "systemd-analyze verify: {said}"
    );
}
