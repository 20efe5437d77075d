//! Connection floods against `ums-stub serve` as a process, while a device on another address
//! enrolls: one host holding thousands of idle connections against a server whose file limit
//! starts at systemd's default (1024, soft and hard), and twenty hosts together holding more than
//! the server's total against the caps the systemd unit's limit gives it. The flooders send
//! nothing and reopen every connection the server closes.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use ums_stub::testing::{ServeCommand, ServeProcess};

use crate::server::{Answer, Device, read_answer};
use crate::util::DataDir;

/// Holds one idle connection from `local` to `server`, sending nothing, and opens another each
/// time the server closes it (after 100 ms), until `stop`.
async fn hold(local: IpAddr, server: SocketAddr, stop: Arc<AtomicBool>, opened: Arc<AtomicUsize>) {
    while !stop.load(Ordering::Relaxed) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(local, 0)).unwrap();
        if let Ok(mut stream) = socket.connect(server).await {
            opened.fetch_add(1, Ordering::Relaxed);
            let mut byte = [0u8; 1];
            // Returns when the server closes it (or the test ends).
            tokio::select! {
                _ = stream.read(&mut byte) => {}
                () = async { while !stop.load(Ordering::Relaxed) { tokio::time::sleep(Duration::from_millis(50)).await } } => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `ums-stub serve` on a data directory holding one one-time key, logging at INFO to a file.
struct Served {
    dir: DataDir,
    server: ServeProcess,
    addr: SocketAddr,
    log: PathBuf,
    key: String,
    ums_id: Vec<u8>,
}

impl Served {
    /// Starts it through `sh -c SHELL_PREFIX exec ums-stub …` (a `ulimit` to start under, say),
    /// through `ums_stub::testing`.
    fn start(shell_prefix: &str) -> Self {
        let dir = DataDir::new();
        dir.ok(&["keys", "create", "one-time", "--quantity", "1"]);
        let key = dir.list(&["--show"])[0].key.clone();
        let pem = std::fs::read(dir.path().join("ums-id/ums-id.crt")).unwrap();
        let ums_id = pem::parse(pem).unwrap().into_contents();
        let log = dir.scratch().join("serve.log");
        let server = ServeCommand::program(dir.command(&[]))
            .hosts(&["127.0.0.1"])
            .shell_prefix(shell_prefix)
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(&log).unwrap())
            .start()
            .unwrap();
        Self {
            addr: server.addr(),
            dir,
            server,
            log,
            key,
            ums_id,
        }
    }

    /// What it has logged so far.
    fn logged(&self) -> String {
        read_log(&self.log)
    }

    /// Enrolls a device from 127.0.0.1 on a new connection: the answer and how long it took.
    async fn enroll_a_device(&self) -> (Answer, Duration) {
        let client = crate::server::pinned_client(&self.ums_id, Some("127.0.0.1".parse().unwrap()));
        let device = Device::numbered(1);
        let started = Instant::now();
        let response = client
            .post(format!(
                "https://127.0.0.1:{}{}",
                self.addr.port(),
                onboard_protocol::routes::EST_SIMPLEENROLL
            ))
            .basic_auth(&device.unit_id, Some(&self.key))
            .header("content-type", "application/pkcs10")
            .body(device.csr_base64.clone())
            .send()
            .await
            .unwrap();
        let answer = read_answer(response).await;
        (answer, started.elapsed())
    }

    /// Stops it (SIGTERM) and returns its whole log.
    fn stop(self) -> String {
        let Served {
            dir, server, log, ..
        } = self;
        let _ = server.terminate();
        let logged = read_log(&log);
        drop(dir);
        logged
    }
}

fn read_log(path: &Path) -> String {
    let mut logged = String::new();
    std::fs::File::open(path)
        .unwrap()
        .read_to_string(&mut logged)
        .unwrap();
    logged
}

/// Idle connections from `hosts`, `each` per host, against `server`, reopened when closed. The
/// holders run on a thread of their own, so that the flooder and the device under test do not
/// take turns on one runtime.
struct Flood {
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicUsize>,
    holders: std::thread::JoinHandle<()>,
}

impl Flood {
    fn start(hosts: &[IpAddr], each: usize, server: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicUsize::new(0));
        let hosts = hosts.to_vec();
        let (stopping, counting) = (stop.clone(), opened.clone());
        let holders = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut holders = tokio::task::JoinSet::new();
                for _ in 0..each {
                    for host in &hosts {
                        holders.spawn(hold(*host, server, stopping.clone(), counting.clone()));
                    }
                }
                while holders.join_next().await.is_some() {}
            });
        });
        Self {
            stop,
            opened,
            holders,
        }
    }

    /// Connections opened so far, reopened ones included.
    fn opened(&self) -> usize {
        self.opened.load(Ordering::Relaxed)
    }

    /// Waits until `until` holds, at most `within`; whether it did.
    async fn wait(&self, within: Duration, mut until: impl FnMut(&Self) -> bool) -> bool {
        let deadline = Instant::now() + within;
        while !until(self) {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || self.holders.join().unwrap())
            .await
            .unwrap();
    }
}

/// The first lines of `logged` above INFO, for a failure message.
fn warnings(logged: &str) -> String {
    logged
        .lines()
        .filter(|line| line.contains("WARN") || line.contains("ERROR"))
        .take(20)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `logged` shows the server out of file descriptors.
fn out_of_files(logged: &str) -> bool {
    logged.contains("Too many open files") || logged.contains("accept failed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_host_do_not_starve_a_device_elsewhere() {
    const IDLE: usize = 3_000;
    // The flood needs more than 3,000 descriptors of this test process.
    assert!(ums_stub::connections::raise_file_limit() > IDLE as u64 + 200);
    // The server, started under a soft and hard limit of 1024 open files.
    let served = Served::start("ulimit -n 1024 &&");

    // 3,000 idle connections from 127.0.0.2: up, and those over the source's cap closed and
    // reopened.
    let flood = Flood::start(&["127.0.0.2".parse().unwrap()], IDLE, served.addr);
    let up = flood
        .wait(Duration::from_secs(20), |flood| flood.opened() > IDLE)
        .await;

    // A device on 127.0.0.1 enrolls, on a new connection, in under a second.
    let (answer, took) = served.enroll_a_device().await;
    flood.stop().await;
    let logged = served.stop();

    assert!(
        up,
        "the flood is up, and the server closed connections over the source's cap"
    );
    assert_eq!(
        answer.status,
        reqwest::StatusCode::OK,
        "{:?}",
        answer.problem
    );
    assert!(took < Duration::from_secs(1), "the device took {took:?}");
    assert!(
        !out_of_files(&logged),
        "the server ran out of file descriptors: {}",
        warnings(&logged)
    );
    assert!(
        logged.contains("open_files=1024"),
        "{}",
        logged.lines().next().unwrap_or_default()
    );
}

/// Twenty addresses together hold more idle connections than the server's total (the 4096 it
/// holds under the unit's `LimitNOFILE=65536`; here under the hard limit the test inherits, which
/// gives the same caps), so the total fills from many sources, each within its own cap. Once it
/// is full and making room (stalled handshakes of the busiest source give way), a device on
/// another address enrolls at once instead of waiting for handshake time-outs (7 s and more
/// before that rule).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_twenty_hosts_do_not_starve_a_device_elsewhere() {
    const HOSTS: u8 = 20;
    const IDLE: usize = 6_000;
    // The flood needs more than 6,000 descriptors of this test process, and the server as many
    // as its full total takes (4096 connections and 64 spare).
    let files = ums_stub::connections::raise_file_limit();
    assert!(
        files > IDLE as u64 + 300,
        "the hard limit on open files ({files}) is too low for the flood"
    );
    let served = Served::start("");
    let hosts: Vec<IpAddr> = (0..HOSTS)
        .map(|n| IpAddr::from([127, 0, 1, 10 + n]))
        .collect();
    let flood = Flood::start(&hosts, IDLE / usize::from(HOSTS), served.addr);
    // Up, and the server at its total, making room: stalled handshakes give way. Without that
    // rule the line never comes; the device is let try all the same.
    let making_room = flood
        .wait(Duration::from_secs(8), |flood| {
            flood.opened() >= IDLE && served.logged().contains("every connection slot is in use")
        })
        .await;
    let opened = flood.opened();

    let (answer, took) = served.enroll_a_device().await;
    eprintln!("a device enrolled in {took:?} beside the flood from {HOSTS} hosts");
    flood.stop().await;
    let logged = served.stop();

    assert_eq!(
        answer.status,
        reqwest::StatusCode::OK,
        "{:?}",
        answer.problem
    );
    assert!(took < Duration::from_secs(1), "the device took {took:?}");
    assert!(
        making_room,
        "the flood did not fill the server ({opened} opened): {}",
        warnings(&logged)
    );
    assert!(
        logged.contains("connections=4096"),
        "the unit's total: {}",
        logged.lines().next().unwrap_or_default()
    );
    assert!(
        !out_of_files(&logged),
        "the server ran out of file descriptors: {}",
        warnings(&logged)
    );
}

/// Hundreds of devices booting at once: their connections wait in the kernel's queue for the
/// accept loop instead of having their SYN dropped and retried a second later. The listener
/// `ums-stub serve` uses queues `LISTEN_BACKLOG` of them; with the default of 128 most of these
/// would not connect within the deadline.
#[tokio::test]
async fn a_burst_of_connections_waits_in_the_listen_queue_rather_than_being_dropped() {
    const BURST_MAX: usize = 600;
    // The kernel caps the queue at net.core.somaxconn (4096 by default since Linux 5.4); a
    // machine set below what the old queue held cannot tell the two apart.
    let cap: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(4096);
    let burst = BURST_MAX
        .min(cap)
        .min(ums_stub::serve::LISTEN_BACKLOG as usize);
    // Below what the old queue held, the two cannot be told apart: the machine must allow more.
    assert!(
        burst > 129,
        "net.core.somaxconn is {cap}: this test needs more than 129 to tell the listen queue \
         apart (sysctl -w net.core.somaxconn=4096; scripts/test raises it)"
    );
    let listener = ums_stub::serve::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    // Nothing accepts: every connection completes into the queue, or not at all.
    let mut connects = tokio::task::JoinSet::new();
    for _ in 0..burst {
        connects.spawn(async move {
            tokio::time::timeout(
                Duration::from_millis(900),
                tokio::net::TcpStream::connect(addr),
            )
            .await
        });
    }
    let mut connected = Vec::with_capacity(burst);
    while let Some(result) = connects.join_next().await {
        if let Ok(Ok(stream)) = result.unwrap() {
            connected.push(stream);
        }
    }
    assert_eq!(
        connected.len(),
        burst,
        "connections dropped by a full queue"
    );
    drop(listener);
}
