//! The OCI image of ums-stub: its configuration and layer read from the layout, then unpacked
//! with umoci and run with runc as its non-root user, a device enrolling against it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use onboard_tests::programs::{Programs, wait_with_deadline};
use serde_json::Value;

use crate::util::{QUICK_AGENT, UNIT, built, require_root, run_ok};

/// The user and group the image runs as.
const USER: &str = "65532";

#[test]
fn the_image_is_the_server_and_its_libraries_configured_to_run_as_non_root() {
    let config = image_config(&built().layout);
    let config = &config["config"];
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/bin/ums-stub"])
    );
    assert_eq!(
        config["Cmd"],
        serde_json::json!(["serve", "--listen", "0.0.0.0:8443"])
    );
    assert_eq!(config["StopSignal"], "SIGTERM");
    assert!(
        config["Volumes"].get("/var/lib/ums-stub").is_some(),
        "{config}"
    );
    assert!(config["ExposedPorts"].get("8443/tcp").is_some(), "{config}");

    // One layer: the binary, shared libraries and their loader, /tmp and the data directory
    // (owned by the image's user): no shell, no CA bundle, nothing else.
    let layers = layers(&built().layout);
    assert_eq!(layers.len(), 1, "{layers:?}");
    let listing = run_ok(Command::new("tar").arg("-tvzf").arg(&layers[0]));
    let mut data_dir_owned = false;
    for line in listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (mode, owner, path) = (fields[0], fields[1], fields[fields.len() - 1]);
        let path = path.trim_end_matches('/');
        let file_name = path.rsplit('/').next().unwrap();
        let allowed =
            mode.starts_with('d') || path == "usr/bin/ums-stub" || file_name.contains(".so");
        assert!(allowed, "the layer holds {line}");
        if path == "var/lib/ums-stub" {
            assert_eq!((mode, owner), ("drwx------", "65532/65532"), "{line}");
            data_dir_owned = true;
        } else {
            assert_eq!(owner, "0/0", "{line}");
        }
    }
    assert!(data_dir_owned, "the layer has /var/lib/ums-stub: {listing}");
}

#[test]
fn the_image_runs_under_runc_as_its_user_enrolls_a_device_and_stops_on_sigterm() {
    require_root("running the image with runc");
    let built = built();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    run_ok(
        Command::new("umoci")
            .args(["unpack", "--image", &built.image()])
            .arg(&bundle),
    );

    // The data directory as a volume from the host (docker run -v DIR:/var/lib/ums-stub), owned
    // by the image's user, in place of the tmpfs umoci mounts for the image's volume. The
    // container keeps its own network namespace; the device enters it to reach the server.
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    run_ok(
        Command::new("chown")
            .arg(format!("{USER}:{USER}"))
            .arg(&data),
    );
    run_ok(Command::new("chmod").arg("0700").arg(&data));
    let config_path = bundle.join("config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    assert_eq!(
        config["process"]["args"],
        serde_json::json!(["/usr/bin/ums-stub", "serve", "--listen", "0.0.0.0:8443"])
    );
    config["process"]["terminal"] = Value::Bool(false);
    config["process"]["env"]
        .as_array_mut()
        .unwrap()
        .push("RUST_LOG=warn".into());
    let mounts = config["mounts"].as_array_mut().unwrap();
    mounts.retain(|mount| mount["destination"] != "/var/lib/ums-stub");
    mounts.push(serde_json::json!({
        "destination": "/var/lib/ums-stub",
        "type": "bind",
        "source": data,
        "options": ["rbind", "rw"],
    }));
    std::fs::write(&config_path, config.to_string()).unwrap();

    let id = format!("ums-stub-test-{}", std::process::id());
    let container = Container::run(&id, &bundle);
    let pid = container.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for field in ["Uid:", "Gid:"] {
        let ids: Vec<&str> = status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(ids, [USER; 4], "the server's {field} {ids:?}");
    }

    // Keys made inside the container, as its user, on its data directory (docker exec).
    container.exec(&["keys", "create", "one-time", "--quantity", "1"]);
    container.exec(&[
        "keys",
        "export",
        "--out",
        "/var/lib/ums-stub/icg.xml",
        "--server",
        "127.0.0.1:8443",
    ]);
    let export = data.join("icg.xml");
    let owner = run_ok(Command::new("stat").args(["-c", "%u:%g"]).arg(&export));
    assert_eq!(owner.trim(), format!("{USER}:{USER}"), "the export's owner");
    let stick = dir.path().join("stick");
    std::fs::create_dir(&stick).unwrap();
    std::fs::copy(&export, stick.join("icg.xml")).unwrap();

    // A device in the container's network namespace enrolls from the stick.
    let Programs::Binaries { agent, .. } = Programs::built().unwrap() else {
        unreachable!("Programs::built gives the binaries")
    };
    let home = dir.path().join("device");
    std::fs::create_dir(&home).unwrap();
    std::fs::write(home.join("agent.toml"), QUICK_AGENT).unwrap();
    run_ok(
        Command::new("nsenter")
            .arg(format!("--net=/proc/{pid}/ns/net"))
            .arg(agent)
            .arg("--config")
            .arg(home.join("agent.toml"))
            .arg("--state-dir")
            .arg(home.join("state"))
            .args(["--unit-id", UNIT, "enroll"])
            .arg(&stick)
            .env("RUST_LOG", "warn"),
    );
    let devices = container.exec(&["devices", "list", "--json"]);
    assert!(devices.contains(UNIT), "{devices}");

    // SIGTERM, the image's stop signal: a graceful shutdown, exit 0.
    let status = container.stop();
    assert!(status.success(), "the server stopped with {status}");
}

/// A container run with `runc run` in the foreground, deleted when dropped.
struct Container {
    id: String,
    runc: Child,
}

impl Container {
    /// Runs the bundle and waits until the server listens.
    fn run(id: &str, bundle: &Path) -> Container {
        let mut runc = Command::new("runc")
            .args(["run", "--bundle"])
            .arg(bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot run runc ({error}); scripts/test installs it (Debian's runc)")
            });
        let mut lines = BufReader::new(runc.stdout.take().unwrap()).lines();
        let container = Container {
            id: id.to_owned(),
            runc,
        };
        loop {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("listening on ") => break,
                Some(Ok(_)) => {}
                _ => panic!("the container ended before the server listened"),
            }
        }
        std::thread::spawn(move || for _ in lines {});
        container
    }

    /// The server's process ID, as seen from this machine.
    fn pid(&self) -> u32 {
        let state: Value =
            serde_json::from_str(&run_ok(Command::new("runc").args(["state", &self.id]))).unwrap();
        state["pid"].as_u64().unwrap() as u32
    }

    /// Runs `ums-stub ARGS` in the container (its user, its data directory); its output.
    fn exec(&self, args: &[&str]) -> String {
        run_ok(
            Command::new("runc")
                .args([
                    "exec",
                    "--env",
                    "RUST_LOG=warn",
                    &self.id,
                    "/usr/bin/ums-stub",
                ])
                .args(args),
        )
    }

    /// Sends SIGTERM and waits for the container's end; its exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        run_ok(Command::new("runc").args(["kill", &self.id, "TERM"]));
        wait_with_deadline(&mut self.runc, Duration::from_secs(40)).unwrap()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .args(["delete", "--force", &self.id])
            .output();
        let _ = self.runc.kill();
        let _ = self.runc.wait();
    }
}

/// The image configuration, through the layout's index and manifest.
fn image_config(layout: &Path) -> Value {
    let manifest = manifest(layout);
    read_blob(layout, manifest["config"]["digest"].as_str().unwrap())
}

/// The layers' blobs, in order.
fn layers(layout: &Path) -> Vec<std::path::PathBuf> {
    manifest(layout)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| blob_path(layout, layer["digest"].as_str().unwrap()))
        .collect()
}

fn manifest(layout: &Path) -> Value {
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(layout.join("index.json")).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "one image in the layout: {index}");
    assert_eq!(
        manifests[0]["annotations"]["org.opencontainers.image.ref.name"],
        env!("CARGO_PKG_VERSION")
    );
    read_blob(layout, manifests[0]["digest"].as_str().unwrap())
}

fn read_blob(layout: &Path, digest: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(blob_path(layout, digest)).unwrap()).unwrap()
}

fn blob_path(layout: &Path, digest: &str) -> std::path::PathBuf {
    let (algorithm, hex) = digest.split_once(':').unwrap();
    layout.join("blobs").join(algorithm).join(hex)
}
