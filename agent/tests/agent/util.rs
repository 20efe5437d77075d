//! Shared helpers: key files made with the protocol crate's writers, fake sysfs trees, the binary
//! run with throwaway state, and waiting with deadlines instead of sleeps.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ums_stub::testing::{Signal, send_signal};

use onboard_protocol::{Fingerprint, FirstAuthKey, Format, KeyEntry, KeyFile, Server, UnitId};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_onboard-agent");

/// How long anything in these tests may take before the test fails instead of hanging.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// The UMS ID fingerprint in the test key files.
pub(crate) const FINGERPRINT: &str =
    "3f1a9c0e5b7d2468ace013579bdf2468a1b2c3d4e5f60718293a4b5c6d7e8f90";

/// Key values, distinctive enough to grep any output for.
pub(crate) const ONE_TIME: [&str; 3] = [
    "40512337860129621",
    "40512337860129622",
    "40512337860129623",
];
pub(crate) const BOUND: &str = "77120954388310452";
pub(crate) const BOUND_ELSEWHERE: &str = "77120954388310499";
pub(crate) const MASS: &str = "Rollout-Spring-2026-secret";

/// The unit ID the key files bind a key to.
pub(crate) const MY_UNIT: &str = "00E0C5540B8B";
pub(crate) const OTHER_UNIT: &str = "00E0C5540B8C";

pub(crate) fn unit(text: &str) -> UnitId {
    text.parse().unwrap()
}

fn key(value: &str) -> FirstAuthKey {
    FirstAuthKey::new(value).unwrap()
}

/// A key file with a key bound to [`MY_UNIT`], one bound to [`OTHER_UNIT`], three one-time keys
/// and a mass key.
pub(crate) fn full_key_file() -> KeyFile {
    let keys = vec![
        KeyEntry::one_time(key(ONE_TIME[0])),
        KeyEntry::device_bound(key(BOUND_ELSEWHERE), unit(OTHER_UNIT)),
        KeyEntry::mass(key(MASS)),
        KeyEntry::one_time(key(ONE_TIME[1])),
        KeyEntry::device_bound(key(BOUND), unit(MY_UNIT)),
        KeyEntry::one_time(key(ONE_TIME[2])),
    ];
    key_file(keys)
}

/// A key file holding `keys`, for the test server and UMS ID.
pub(crate) fn key_file(keys: Vec<KeyEntry>) -> KeyFile {
    KeyFile::new(
        // Loopback, port 1: nothing listens, so a daemon that tries these keys is refused at once
        // and no test ever sends traffic off the machine.
        vec![Server::new("127.0.0.1", 1).unwrap()],
        FINGERPRINT.parse::<Fingerprint>().unwrap(),
        keys,
        None,
    )
}

/// Writes [`full_key_file`] in `format` to `path`, creating folders.
pub(crate) fn write_key_file(path: &Path, format: Format) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, full_key_file().write(format)).unwrap();
}

/// Every key value of the test key files, to check that none leaks.
pub(crate) fn secrets() -> Vec<&'static str> {
    let mut all = ONE_TIME.to_vec();
    all.extend([BOUND, BOUND_ELSEWHERE, MASS]);
    all
}

pub(crate) fn assert_no_secret(text: &str) {
    for secret in secrets() {
        assert!(!text.contains(secret), "a key value leaked: {text}");
    }
}

/// A throwaway home for the binary: an empty config file and a state directory.
pub(crate) struct Sandbox {
    pub(crate) dir: tempfile::TempDir,
}

impl Sandbox {
    pub(crate) fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agent.toml"), "").unwrap();
        Sandbox { dir }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn state_dir(&self) -> PathBuf {
        self.path().join("state")
    }

    pub(crate) fn config(&self) -> PathBuf {
        self.path().join("agent.toml")
    }

    /// The binary with this sandbox's config and state directory.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .env_remove("ONBOARD_AGENT_CONFIG")
            .env_remove("RUST_LOG")
            .arg("--config")
            .arg(self.config())
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(args);
        command
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}

/// Standard output of a run that must exit with `code`.
pub(crate) fn expect_code(output: &Output, code: i32) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    stdout
}

/// A running `onboard-agent run`, its standard error read line by line.
pub(crate) struct Running {
    pid: u32,
    lines: mpsc::Receiver<String>,
    exited: mpsc::Receiver<ExitStatus>,
    stopped: bool,
    /// Every line read so far.
    pub(crate) log: Vec<String>,
}

impl Running {
    /// Starts `command` (whose standard error is taken over).
    pub(crate) fn start(mut command: Command) -> Running {
        let mut child: Child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (line_sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line_sender.send(line).is_err() {
                    break;
                }
            }
        });
        let pid = child.id();
        let (exit_sender, exited) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = exit_sender.send(child.wait().unwrap());
        });
        Running {
            pid,
            lines,
            exited,
            stopped: false,
            log: Vec::new(),
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for a log line containing every one of `words`; fails at the deadline.
    pub(crate) fn wait_for(&mut self, words: &[&str]) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if words.iter().all(|word| line.contains(word)) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line with {words:?} within {DEADLINE:?}; log so far:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Sends `signal` and waits for the exit; returns the status and the rest of the log.
    pub(crate) fn stop(mut self, signal: Signal) -> (ExitStatus, String) {
        send_signal(self.pid, signal).unwrap();
        let status = self
            .exited
            .recv_timeout(DEADLINE)
            .expect("the agent did not stop in time");
        self.stopped = true;
        // The writer is gone, so this ends.
        while let Ok(line) = self.lines.recv_timeout(DEADLINE) {
            self.log.push(line);
        }
        (status, self.log.join("\n"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A test that failed half-way must not leave the agent behind.
        if !self.stopped && self.exited.try_recv().is_err() {
            let _ = send_signal(self.pid, Signal::SIGKILL);
        }
    }
}

/// Where a fake NIC's device sits.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FakeBus {
    /// A PCI function, by slot number.
    Pci(u8),
    /// A USB adapter, by port number, behind a PCI USB controller.
    Usb(u8),
    /// An SDIO function.
    Sdio,
    /// An SoC's built-in Ethernet (bus `platform`).
    Platform,
    /// A virtio device on a PCI slot, as in a VM.
    Virtio(u8),
}

/// A fake sysfs tree, laid out and linked as the kernel does.
pub(crate) struct FakeSysfs {
    dir: tempfile::TempDir,
}

impl FakeSysfs {
    pub(crate) fn new() -> FakeSysfs {
        let dir = tempfile::tempdir().unwrap();
        for sub in [
            "class/net",
            "devices/virtual/net",
            "bus/pci",
            "bus/usb",
            "bus/sdio",
            "bus/platform",
            "bus/virtio",
        ] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        FakeSysfs { dir }
    }

    pub(crate) fn root(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn root_arg(&self) -> String {
        self.root().display().to_string()
    }

    /// Makes `device` (relative to the root) with its `subsystem` link to `bus`.
    fn device(&self, device: &str, bus: &str) {
        let dir = self.root().join(device);
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("subsystem");
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(up(device).join("bus").join(bus), link).unwrap();
        }
    }

    /// A physical NIC on `bus`.
    pub(crate) fn nic(&self, name: &str, mac: &str, bus: FakeBus, wireless: bool) {
        let device = match bus {
            FakeBus::Pci(slot) => {
                let device = format!("devices/pci0000:00/0000:00:{slot:02x}.0");
                self.device(&device, "pci");
                device
            }
            FakeBus::Usb(port) => {
                self.device("devices/pci0000:00/0000:00:14.0", "pci");
                let device = format!("devices/pci0000:00/0000:00:14.0/usb1/1-{port}/1-{port}:1.0");
                self.device(&device, "usb");
                device
            }
            FakeBus::Sdio => {
                let device = "devices/platform/mmc0/mmc_host/mmc1/mmc1:0001/mmc1:0001:1".to_owned();
                self.device(&device, "sdio");
                device
            }
            FakeBus::Platform => {
                let device = "devices/platform/soc/ff3f0000.ethernet".to_owned();
                self.device(&device, "platform");
                device
            }
            FakeBus::Virtio(slot) => {
                let pci = format!("devices/pci0000:00/0000:00:{slot:02x}.0");
                self.device(&pci, "pci");
                let device = format!("{pci}/virtio{slot}");
                self.device(&device, "virtio");
                device
            }
        };
        let interface = format!("{device}/net/{name}");
        self.interface(&interface, name, mac, "1");
        let leaf = Path::new(&device).file_name().unwrap();
        symlink(
            Path::new("../../..").join(leaf),
            self.root().join(&interface).join("device"),
        )
        .unwrap();
        if wireless {
            std::fs::create_dir(self.root().join(&interface).join("wireless")).unwrap();
            symlink(
                "../../../ieee80211/phy0",
                self.root().join(&interface).join("phy80211"),
            )
            .unwrap();
        }
    }

    /// A virtual interface (loopback, bridge, veth, tun...): no device link.
    pub(crate) fn virtual_nic(&self, name: &str, mac: &str, kind: &str) {
        self.interface(&format!("devices/virtual/net/{name}"), name, mac, kind);
    }

    fn interface(&self, interface: &str, name: &str, mac: &str, kind: &str) {
        let dir = self.root().join(interface);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("address"), format!("{mac}\n")).unwrap();
        std::fs::write(dir.join("type"), format!("{kind}\n")).unwrap();
        symlink(
            up("class/net").join(interface),
            self.root().join("class/net").join(name),
        )
        .unwrap();
    }
}

/// `../` once for each component of `dir`.
fn up(dir: &str) -> PathBuf {
    Path::new(dir).components().map(|_| "..").collect()
}
