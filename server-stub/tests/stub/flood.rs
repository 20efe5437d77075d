//! A connection flood against `ums-stub serve` as a process whose file limit starts at systemd's
//! default (1024, soft and hard): one host holds thousands of idle connections and reopens every
//! one the server closes, while a device on another address enrolls.

use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use tokio::io::AsyncReadExt;

use crate::server::{Device, read_answer};
use crate::util::{BIN, DataDir};

const IDLE: usize = 3_000;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_host_do_not_starve_a_device_elsewhere() {
    // The flood needs more than 3,000 descriptors of this test process.
    assert!(ums_stub::connections::raise_file_limit() > IDLE as u64 + 200);
    let dir = DataDir::new();
    dir.ok(&["keys", "create", "one-time", "--quantity", "1"]);
    let key = dir.list(&["--show"])[0].key.clone();
    let pem = std::fs::read(dir.path().join("ums-id/ums-id.crt")).unwrap();
    let ums_id = pem::parse(pem).unwrap().into_contents();

    // The server, started under a soft and hard limit of 1024 open files, logging to a file.
    let log = dir.scratch().join("serve.log");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 1024 && exec \"$0\" \"$@\" 2>\"$LOG\"")
        .arg(BIN)
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .args(["serve", "--listen", "127.0.0.1:0", "--host", "127.0.0.1"])
        .env("LOG", &log)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let server: SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("serve printed {line:?}"))
        .parse()
        .unwrap();

    // 3,000 idle connections from 127.0.0.2.
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let flooder: IpAddr = "127.0.0.2".parse().unwrap();
    let mut holders = tokio::task::JoinSet::new();
    for _ in 0..IDLE {
        holders.spawn(hold(flooder, server, stop.clone(), opened.clone()));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while opened.load(Ordering::Relaxed) < IDLE && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(opened.load(Ordering::Relaxed) >= IDLE, "the flood is up");

    // A device on 127.0.0.1 enrolls, on a new connection, in under a second.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ums_id)).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(ums_stub::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .local_address("127.0.0.1".parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    let device = Device::numbered(1);
    let started = Instant::now();
    let response = client
        .post(format!(
            "https://127.0.0.1:{}{}",
            server.port(),
            onboard_protocol::routes::EST_SIMPLEENROLL
        ))
        .basic_auth(&device.unit_id, Some(&key))
        .header("content-type", "application/pkcs10")
        .body(device.csr_base64.clone())
        .send()
        .await
        .unwrap();
    let answer = read_answer(response).await;
    let took = started.elapsed();
    let reopened = opened.load(Ordering::Relaxed) - IDLE;

    stop.store(true, Ordering::Relaxed);
    while holders.join_next().await.is_some() {}
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let mut logged = String::new();
    std::fs::File::open(&log)
        .unwrap()
        .read_to_string(&mut logged)
        .unwrap();

    assert_eq!(
        answer.status,
        reqwest::StatusCode::OK,
        "{:?}",
        answer.problem
    );
    assert!(took < Duration::from_secs(1), "the device took {took:?}");
    assert!(
        reopened > 0,
        "the server closed connections over the source's cap and the flooder reopened them"
    );
    assert!(
        !logged.contains("Too many open files") && !logged.contains("accept failed"),
        "the server ran out of file descriptors: {logged}"
    );
    assert!(logged.contains("open_files=1024"), "{logged}");
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
