//! Distributed UMS with real processes: two `ums-stub serve` on one PostgreSQL database (a
//! throwaway cluster) and a fleet of `onboard-agent enroll` from one stick that lists both servers.

use std::path::Path;
use std::process::Stdio;

use onboard_protocol::UnitId;
use onboard_protocol::admin::{DeviceView, KeyStatus, KeyView, Page};
use onboard_tests::postgres::PgCluster;
use onboard_tests::programs::{Programs, Signal, send_signal};
use ums_stub::testing::ServeProcess;

use crate::util::{enroll_all, programs};

/// Runs `ums-stub` on `data` with `config`; its standard output.
fn cli(programs: &Programs, data: &Path, config: &Path, args: &[&str]) -> String {
    let output = programs
        .ums_stub()
        .arg("--data-dir")
        .arg(data)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "ums-stub {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Two `ums-stub serve` on the database `url`, sharing a cluster secret, with their data
/// directories and config file under `root`.
struct Pair {
    config: std::path::PathBuf,
    a_data: std::path::PathBuf,
    b_data: std::path::PathBuf,
    a: ServeProcess,
    b: ServeProcess,
}

fn two_servers(programs: &Programs, root: &Path, url: &str) -> Pair {
    let secret = root.join("cluster.secret");
    let config = root.join("ums-stub.toml");
    std::fs::write(
        &config,
        format!(
            "database = \"{url}\"\ncluster_secret_file = \"{}\"\n",
            secret.display()
        ),
    )
    .unwrap();
    let (a_data, b_data) = (root.join("a"), root.join("b"));
    cli(
        programs,
        &a_data,
        &config,
        &[
            "cluster-secret",
            "create",
            "--out",
            secret.to_str().unwrap(),
        ],
    );
    let serve = |data: &Path| {
        programs
            .serve()
            .data_dir(data)
            .config(&config)
            .start()
            .unwrap()
    };
    let (a, b) = (serve(&a_data), serve(&b_data));
    Pair {
        config,
        a_data,
        b_data,
        a,
        b,
    }
}

#[test]
fn two_servers_on_one_database_enroll_one_fleet_and_survive_one_killed() {
    let cluster = PgCluster::start();
    let programs = programs();
    let root = tempfile::tempdir().unwrap();
    let Pair {
        config,
        a_data,
        b_data,
        a,
        b,
    } = two_servers(&programs, root.path(), &cluster.database());

    // 100 one-time keys on a stick naming A first, then B.
    cli(
        &programs,
        &a_data,
        &config,
        &["keys", "create", "one-time", "--quantity", "100"],
    );
    let stick = root.path().join("STICK");
    std::fs::create_dir_all(&stick).unwrap();
    let file = stick.join("icg.xml");
    cli(
        &programs,
        &a_data,
        &config,
        &[
            "keys",
            "export",
            "--out",
            file.to_str().unwrap(),
            "--server",
            &a.addr().to_string(),
            "--server",
            &b.addr().to_string(),
        ],
    );

    // 150 devices race for them, 16 at a time; A is killed while they do.
    let killer = {
        let pid = a.pid();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(1500));
            let _ = send_signal(pid, Signal::SIGKILL);
        })
    };
    let devices = root.path().join("devices");
    let outputs = enroll_all(&programs, &devices, 150, 16, &[file.to_str().unwrap()]);
    killer.join().unwrap();
    let _ = a.kill();
    let enrolled = outputs
        .iter()
        .filter(|output| output.status.code() == Some(0))
        .count();
    assert_eq!(enrolled, 100, "every key enrolled one device, no more");

    // Counted in the database, through B's side.
    let keys: Page<KeyView> = serde_json::from_str(&cli(
        &programs,
        &b_data,
        &config,
        &["keys", "list", "--json"],
    ))
    .unwrap();
    assert_eq!(keys.items.len(), 100);
    assert!(
        keys.items
            .iter()
            .all(|key| key.usage_count == 1 && key.status == KeyStatus::Used),
        "each key used exactly once"
    );
    let listed: Page<DeviceView, UnitId> = serde_json::from_str(&cli(
        &programs,
        &b_data,
        &config,
        &["devices", "list", "--json"],
    ))
    .unwrap();
    assert_eq!(listed.items.len(), 100);

    // The fifty devices left without a key tried every key: thousands of attempts raced.
    let audit: Page<serde_json::Value, i64> = serde_json::from_str(&cli(
        &programs,
        &b_data,
        &config,
        &["audit", "--json", "--limit", "1000000"],
    ))
    .unwrap();
    let attempts = audit
        .items
        .iter()
        .filter(|line| line["event"] == "enroll")
        .count();
    assert!(attempts >= 5000, "{attempts} enrollment attempts");

    // The status table: A stopped beating (shown once its heartbeat is older than 30 s would take
    // too long here), B runs with the Main UMS ID that A made.
    let servers: Vec<serde_json::Value> = serde_json::from_str(&cli(
        &programs,
        &b_data,
        &config,
        &["servers", "list", "--json"],
    ))
    .unwrap();
    assert_eq!(servers.len(), 2, "{servers:?}");
    let b_row = servers
        .iter()
        .find(|row| {
            row["host_name"]
                .as_str()
                .unwrap()
                .ends_with(&format!(":{}", b.addr().port()))
        })
        .unwrap();
    assert_eq!(b_row["server_status"], "Running");
    assert_eq!(b_row["ums_id_status"], "In sync");
    let a_row = servers.iter().find(|row| row != &b_row).unwrap();
    assert_eq!(a_row["ums_id_status"], "Main UMS ID");
    assert_eq!(a_row["fingerprint"], b_row["fingerprint"]);
    drop(b);
}

/// The device connector across two servers on one database: an agent (`run`) holds its session
/// with A, the first server of its stick; `ums-stub devices send` run on B's side reaches it
/// through A; A stopped, the agent moves to B and B shows it online; `devices delete` on A's side
/// disconnects it from B and its certificate is refused: it enrolls again.
#[test]
fn a_command_sent_through_one_server_reaches_a_device_connected_to_the_other() {
    use std::time::{Duration, Instant};

    use crate::util::agent;

    let cluster = PgCluster::start();
    let programs = programs();
    let root = tempfile::tempdir().unwrap();
    let Pair {
        config,
        a_data,
        b_data,
        a,
        b,
    } = two_servers(&programs, root.path(), &cluster.database());
    let ums = |data: &Path, args: &[&str]| cli(&programs, data, &config, args);
    ums(&a_data, &["keys", "create", "mass"]);
    let media = root.path().join("media");
    let stick = media.join("STICK");
    std::fs::create_dir_all(&stick).unwrap();
    ums(
        &a_data,
        &[
            "keys",
            "export",
            "--out",
            stick.join("icg.xml").to_str().unwrap(),
            "--server",
            &a.addr().to_string(),
            "--server",
            &b.addr().to_string(),
        ],
    );
    let devices = root.path().join("devices");
    let mut child = agent(
        &programs,
        &devices,
        0,
        &["run", "--mount-root", media.to_str().unwrap()],
    )
    .env("RUST_LOG", "info")
    .env("NO_COLOR", "1")
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(root.path().join("agent.log")).unwrap())
    .spawn()
    .unwrap();
    let unit = crate::util::unit(0);
    let listed = |data: &Path| -> Option<DeviceView> {
        let listed: Page<DeviceView, UnitId> =
            serde_json::from_str(&ums(data, &["devices", "list", "--json"])).unwrap();
        listed.items.into_iter().next()
    };
    let device = |data: &Path| listed(data).expect("a device");
    let wait = |what: &str, test: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !test() {
            assert!(Instant::now() < deadline, "{what} within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // Servers are named as their heartbeat names them: the public host and the port.
    let on = |port: u16| {
        move |view: &DeviceView| {
            view.online
                && view
                    .connected_to
                    .as_deref()
                    .is_some_and(|name| name.ends_with(&format!(":{port}")))
        }
    };
    let (on_a, on_b) = (on(a.addr().port()), on(b.addr().port()));
    wait("online on A", &|| {
        listed(&b_data).is_some_and(|view| on_a(&view))
    });
    let before = device(&b_data);
    let a_name = before.connected_to.clone().unwrap();

    // Sent on B's side; A holds the session and delivers it; the device renews.
    let sent = ums(&b_data, &["devices", "send", &unit, "renew-now"]);
    assert!(sent.contains(&a_name), "{sent}");
    wait("renewed", &|| device(&b_data).serial != before.serial);

    // A stops: the device moves to B, the next server on its stick.
    let a_addr = a.addr();
    a.terminate().unwrap();
    wait("online on B", &|| on_b(&device(&b_data)));

    // A back (the device stays with B); deleted on A's side: B closes the session, and A, the
    // server the device's certificate came from, refuses that certificate for good. The device,
    // orphaned, enrolls again with the mass key still on its stick: a new certificate, online.
    let renewed = device(&b_data);
    let a = programs
        .serve()
        .data_dir(&a_data)
        .config(&config)
        .listen(a_addr.to_string())
        .start()
        .unwrap();
    ums(&a_data, &["devices", "delete", &unit]);
    wait("enrolled again and online", &|| {
        listed(&b_data).is_some_and(|view| {
            view.online && view.serial != renewed.serial && view.enrolled_at > renewed.enrolled_at
        })
    });
    let log = std::fs::read_to_string(root.path().join("agent.log")).unwrap();
    assert!(log.contains("to=\"orphaned\""), "{log}");
    send_signal(child.id(), Signal::SIGTERM).unwrap();
    let stopped =
        onboard_tests::programs::wait_with_deadline(&mut child, Duration::from_secs(10)).unwrap();
    assert!(stopped.success());
    drop((a, b));
}
