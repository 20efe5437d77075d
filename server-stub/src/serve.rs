//! `ums-stub serve`: the accept loop. TLS with a handshake timeout, HTTP/1.1 with header and
//! request timeouts, a bound on open connections, and graceful shutdown: on the shutdown signal it
//! stops accepting, lets requests in flight finish (up to 30 s), then returns.
//!
//! [`spawn`] runs the same server inside another program's tokio runtime on a listener it bound,
//! often on port 0 (tests and rigs start it through `ums_stub::testing`, feature `testing`):
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let mut settings = ums_stub::config::Settings::load(dir.path().join("data"), None)?;
//! settings.hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = ums_stub::serve::spawn(settings, listener).await?;
//! println!("port {}, UMS ID {}", server.port(), server.ums_id_fingerprint());
//! server.stop().await?;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Extension;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use onboard_protocol::Fingerprint;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tower::ServiceBuilder;

use crate::cluster::HEARTBEAT_EVERY;
use crate::config::Settings;
use crate::connections::{Refused, Sources};
use crate::http::{Peer, Shared, router_with};
use crate::rate_limit::RateLimiter;
use crate::stub::Stub;
use crate::tls::ServerTls;

const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The most bytes of request head hyper buffers, and the most header lines.
const MAX_HEAD_BYTES: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// How often, at most, the server logs that every connection slot is in use (it makes room, or
/// waits for it).
const FULL_REPORT_EVERY: Duration = Duration::from_secs(60);

/// Connections the kernel queues for the accept loop. Rust's and tokio's default is 128: hundreds
/// of devices booting together overflow it, and each SYN dropped is retried only after a second.
/// The kernel caps it at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 1024;

/// A listener on `addr` with a queue of [`LISTEN_BACKLOG`] connections. Call it inside a tokio
/// runtime.
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The metrics and health listener on `addr` (`metrics_listen`), if set.
pub fn listen_metrics(addr: Option<SocketAddr>) -> anyhow::Result<Option<TcpListener>> {
    addr.map(|addr| {
        listen(addr).with_context(|| {
            format!("cannot listen on {addr} for metrics (metrics_listen, --metrics-listen)")
        })
    })
    .transpose()
}

/// Serves HTTPS on `listener` until `shutdown` completes, renewing the TLS leaf before it expires;
/// and metrics and health on `metrics_listen` of the settings, if set.
pub async fn run(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: ServerTls,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics = listen_metrics(shared.stub.settings.metrics_listen)?;
    run_with_metrics(shared, listener, metrics, tls, shutdown).await
}

/// [`run`], with the metrics and health routes ([`crate::metrics`]) on `metrics` if given (bound
/// by the caller, which may want to say where).
pub async fn run_with_metrics(
    shared: Arc<Shared>,
    listener: TcpListener,
    metrics: Option<TcpListener>,
    tls: ServerTls,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let acceptor = TlsAcceptor::from(tls.config.clone());
    let leaf = tls.leaf.clone();
    let renewal = tokio::spawn(renew_leaf(shared.clone(), tls));
    let pruning = tokio::spawn(prune_audit(shared.clone()));
    let name = format!(
        "{}:{}",
        shared.stub.settings.public_server.host(),
        listener.local_addr()?.port()
    );
    // Sessions do not outlive a server: those a crash left recorded as held here are released.
    shared.connector.set_server(name.clone());
    match shared.stub.store.release_devices(&name, false).await {
        Ok(0) => {}
        Ok(released) => tracing::info!(
            released,
            "devices recorded online here before the start are offline"
        ),
        Err(error) => tracing::warn!("cannot release the devices recorded online here: {error}"),
    }
    let beating = tokio::spawn(heartbeat(shared.clone(), name));
    let delivering = tokio::spawn(crate::connector::deliver_commands(
        shared.connector.clone(),
        shared.stub.store.clone(),
    ));
    let connector = shared.connector.clone();
    let store = shared.stub.store.clone();
    let limits = shared.stub.settings.connections;
    let limits = crate::connections::ConnectionLimits {
        total: limits.total_within(crate::connections::file_limit()),
        ..limits
    };
    let sources = Sources::new(limits, shared.stub.settings.trusted_proxies.clone());
    let shutting_down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let observing = metrics.map(|metrics| {
        let counted = sources.clone();
        tokio::spawn(crate::metrics::serve(
            metrics,
            crate::metrics::Live {
                metrics: shared.metrics.clone(),
                store: shared.stub.store.clone(),
                connector: shared.connector.clone(),
                connections: Arc::new(move || counted.open()),
                sync: shared.stub.sync,
                shutting_down: shutting_down.clone(),
                rig: shared.rig.clone(),
            },
        ))
    });
    // Test-rig mode: the rig presents the leaf for its rotation drill, and closes connector
    // sessions as its plan says.
    let rig = shared.rig.clone();
    let closing_sessions = rig.as_ref().map(|rig| {
        rig.serve_leaf(leaf.clone());
        tokio::spawn(crate::rig::layer::close_sessions(
            rig.clone(),
            shared.connector.clone(),
        ))
    });
    // In test-rig mode only: the fault plan, inside the headers every answer carries.
    let app = router_with(shared, |routes| match &rig {
        Some(rig) => routes.layer(axum::middleware::from_fn_with_state(
            rig.clone(),
            crate::rig::layer::apply,
        )),
        None => routes,
    });
    // Set once the server stops: each connection finishes its request in flight, then closes.
    let draining = tokio::sync::watch::channel(false).0;
    // When the server last reported making room at the total, or waiting for it.
    let mut reported_full: Option<tokio::time::Instant> = None;
    tokio::pin!(shutdown);
    'accepting: loop {
        let (tcp, addr) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!("accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Over its source's caps, a connection is closed before any TLS work. At the total with
        // nothing to close, a light source's waits (and those behind it in the listen queue)
        // until one can make room; a crowding source's is closed.
        let mut admitted = loop {
            let admitted = sources.admit(addr.ip());
            let at_total = match &admitted {
                Ok(admitted) => admitted.made_room_at_total(),
                Err(refused) => *refused == Refused::Full,
            };
            if at_total && reported_full.is_none_or(|at| at.elapsed() >= FULL_REPORT_EVERY) {
                reported_full = Some(tokio::time::Instant::now());
                tracing::warn!(
                    connections = limits.total,
                    "every connection slot is in use: handshakes stalled for over {:?} give way, \
                     busiest source first; new connections wait while none has",
                    limits.evict_after
                );
            }
            match admitted {
                Ok(admitted) => break admitted,
                Err(Refused::TooManyConnections) => {
                    tracing::debug!(%addr, "connection closed: the source holds its share");
                    drop(tcp);
                    continue 'accepting;
                }
                // A stalled handshake may come of age meanwhile: ask again now and then.
                Err(Refused::Full) => tokio::select! {
                    () = &mut shutdown => break 'accepting,
                    () = sources.closed() => {}
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                },
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let mut drain = draining.subscribe();
        // In test-rig mode, a switch that closes this connection with no answer (a lost answer).
        let kill = rig
            .as_ref()
            .map(|_| crate::rig::layer::ConnectionKill::new());
        let task = async move {
            // The time-out covers the wait for a handshake slot and the handshake, shorter the
            // fuller the server; a newer connection may close this one meanwhile (from its own
            // source at its cap, or from anywhere at the total when its source is the busiest).
            let handshake_timeout = admitted.handshake_timeout();
            let eviction = admitted.eviction();
            // Each stage's future is boxed, so a connection holds only the stage it is at: the
            // many waiting for their handshake do not each carry an HTTP connection's worth.
            let handshake = tokio::select! {
                result = Box::pin(tokio::time::timeout(handshake_timeout, async {
                    let _slot = admitted.handshake_slot().await;
                    acceptor.accept(tcp).await
                })) => Some(result),
                () = eviction => None,
            };
            let Some(handshake) = handshake else {
                tracing::debug!(%addr, "connection closed: a newer one needed the room");
                return;
            };
            admitted.handshake_done();
            // The HTTP stage, boxed: see the handshake above.
            Box::pin(async move {
                let tls = match handshake {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        tracing::debug!(%addr, "TLS handshake failed: {error}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%addr, "TLS handshake timed out");
                        return;
                    }
                };
                let client_certificate = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|cert| cert.as_ref().to_vec());
                let service = ServiceBuilder::new()
                    .layer(Extension(Peer {
                        addr,
                        client_certificate,
                    }))
                    .option_layer(kill.clone().map(Extension))
                    .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                        axum::http::StatusCode::REQUEST_TIMEOUT,
                        REQUEST_TIMEOUT,
                    ))
                    .service(app);
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(MAX_HEAD_BYTES)
                    .max_headers(MAX_HEADERS)
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service))
                    // The device connector's WebSocket; once upgraded, the session holds a slot of
                    // its own budget and this connection's slot is given back.
                    .with_upgrades();
                let mut connection = Box::pin(connection);
                let killed = async {
                    match &kill {
                        Some(kill) => kill.pulled().await,
                        None => std::future::pending().await,
                    }
                };
                let result = tokio::select! {
                    result = connection.as_mut() => result,
                    // Dropped mid-request: the socket closes without the answer.
                    () = killed => {
                        tracing::debug!(%addr, "connection dropped by the test rig");
                        return;
                    }
                    () = async { let _ = drain.wait_for(|draining| *draining).await; } => {
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                };
                if let Err(error) = result {
                    tracing::debug!(%addr, "connection ended: {error}");
                }
                drop(admitted);
            })
            .await;
        };
        tokio::spawn(task);
    }
    drop(listener);
    shutting_down.store(true, std::sync::atomic::Ordering::Relaxed);
    renewal.abort();
    pruning.abort();
    beating.abort();
    delivering.abort();
    if let Some(closing) = closing_sessions {
        closing.abort();
    }
    // Held requests go on, so that they finish with the others in flight.
    if let Some(rig) = &rig {
        rig.release_held();
    }
    tracing::info!("shutting down: waiting for requests in flight");
    let requests = async {
        draining.send_replace(true);
        // Every connection is uncounted when it ends.
        let all_closed = async {
            while sources.open() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        if tokio::time::timeout(DRAIN_TIMEOUT, all_closed)
            .await
            .is_err()
        {
            tracing::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; closing them");
        }
    };
    tokio::join!(requests, connector.close_all(DRAIN_TIMEOUT));
    // Every device this server held is offline now, recorded at once rather than one by one.
    if let Err(error) = store.release_devices(connector.server(), true).await {
        tracing::warn!("cannot record this server's devices offline: {error}");
    }
    if let Some(observing) = observing {
        observing.abort();
    }
    Ok(())
}

/// Checks the TLS leaf now and then and swaps in a new one in its renewal window. A failure is
/// logged and tried again at the next check: the old leaf stays until it is replaced.
async fn renew_leaf(shared: Arc<Shared>, tls: ServerTls) {
    let mut ticks = tokio::time::interval(tls.leaf.check_every());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let (shared, leaf) = (shared.clone(), tls.leaf.clone());
        let renewed = tokio::task::spawn_blocking(move || {
            leaf.renew_if_due(&shared.stub.ums_id, time::OffsetDateTime::now_utc())
        })
        .await;
        match renewed {
            Ok(Ok(true)) => tracing::info!(
                not_after = %tls.leaf.not_after(),
                "renewed the TLS certificate while running"
            ),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => tracing::error!("cannot renew the TLS certificate: {error:#}"),
            Err(error) => tracing::error!("the TLS renewal task failed: {error}"),
        }
    }
}

/// How often a running server deletes audit lines past their retention.
const PRUNE_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Records this server's heartbeat (its name, UMS ID and sync status) at start and every
/// [`HEARTBEAT_EVERY`], against the database's clock.
async fn heartbeat(shared: Arc<Shared>, name: String) {
    let beat = crate::store::ServerBeat {
        name,
        fingerprint: shared.stub.ums_id.fingerprint(),
        status: shared.stub.sync,
    };
    let mut ticks = tokio::time::interval(HEARTBEAT_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(error) = shared.stub.store.heartbeat(&beat).await {
            tracing::warn!("cannot record the heartbeat: {error}");
        }
    }
}

/// Deletes audit lines older than the retention, and sessions that ended, at start and daily, so
/// neither can grow without bound.
async fn prune_audit(shared: Arc<Shared>) {
    let retention = shared.stub.settings.audit_retention;
    let mut ticks = tokio::time::interval(PRUNE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let before = shared.stub.clock.now() - retention;
        match shared.stub.store.prune_audit(before).await {
            Ok(0) => {}
            Ok(deleted) => {
                tracing::info!(deleted, %before, "deleted audit lines past their retention")
            }
            Err(error) => tracing::warn!("cannot delete old audit lines: {error}"),
        }
        let now = match shared.stub.store.clock().await {
            Ok(now) => now,
            Err(error) => {
                tracing::warn!("cannot read the database's clock: {error}");
                continue;
            }
        };
        match shared.stub.store.prune_sessions(now).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "deleted ended sessions"),
            Err(error) => tracing::warn!("cannot delete ended sessions: {error}"),
        }
    }
}

/// Opens the data directory of `settings` (creating the UMS ID and database at first use) and
/// builds what [`run`] needs: the routes' shared state, with the rate limits and certificate
/// lifetime of `settings`, and the TLS configuration for `settings.hosts`.
pub async fn prepare(settings: Settings) -> anyhow::Result<(Arc<Shared>, ServerTls)> {
    let stub = Stub::open(settings).await?;
    stub.warn_unsealed_rows().await?;
    let settings = &stub.settings;
    let tls = crate::tls::server_config(
        &settings.data_dir,
        &stub.ums_id,
        &settings.hosts,
        settings.tls_leaf,
        settings.renewal_grace,
        stub.clock.clone(),
    )?;
    let connections = settings
        .connections
        .total_within(crate::connections::file_limit());
    let connector = crate::connector::Sessions::new(
        settings.device_sessions,
        crate::connections::file_limit(),
        connections,
        settings.trusted_proxies.clone(),
    );
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let shared = Arc::new(Shared {
        connector,
        limiter: RateLimiter::new(settings.rate_limits),
        logins: crate::login_limit::LoginLimiter::new(settings.login_limits),
        certificate_lifetime: settings.certificate_lifetime,
        rig: settings
            .test_rig
            .then(|| Arc::new(crate::rig::Rig::new(stub.clock.clone()))),
        strict: settings
            .test_rig
            .then(|| Arc::new(crate::rig::strict::Strict::new(metrics.clone()))),
        stub,
        metrics,
    });
    Ok((shared, tls))
}

/// A server started by [`spawn`]. Dropping it shuts the server down without waiting; [`stop`]
/// waits.
///
/// [`stop`]: Running::stop
pub struct Running {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    leaf: Arc<crate::tls::ServerLeaf>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// Starts a server on `listener` as a task on the current tokio runtime: opens the data directory
/// of `settings` and serves with its host names (`settings.hosts`, which the TLS leaf names),
/// rate limits and certificate lifetime. Returns once the data directory is open (a first start
/// creates the UMS ID) and the server accepts connections.
pub async fn spawn(settings: Settings, listener: TcpListener) -> anyhow::Result<Running> {
    let addr = listener.local_addr()?;
    let metrics = listen_metrics(settings.metrics_listen)?;
    let metrics_addr = metrics.as_ref().map(TcpListener::local_addr).transpose()?;
    let (shared, tls) = prepare(settings).await?;
    let leaf = tls.leaf.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    // A dropped sender also ends the wait: dropping Running shuts the server down.
    let task = tokio::spawn(run_with_metrics(
        shared.clone(),
        listener,
        metrics,
        tls,
        async {
            let _ = stopped.await;
        },
    ));
    Ok(Running {
        addr,
        metrics_addr,
        shared,
        leaf,
        stop,
        task,
    })
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("addr", &self.addr)
            .field("ums_id", &self.ums_id_fingerprint().short())
            .finish_non_exhaustive()
    }
}

impl Running {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where its metrics and health listener listens, when `metrics_listen` was set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The fingerprint of its UMS ID, which devices pin.
    pub fn ums_id_fingerprint(&self) -> Fingerprint {
        self.shared.stub.ums_id.fingerprint()
    }

    /// Its UMS ID certificate, DER: the trust anchor of its TLS chain.
    pub fn ums_id_certificate_der(&self) -> &[u8] {
        self.shared.stub.ums_id.certificate_der()
    }

    /// The TLS leaf it presents now.
    pub fn tls_leaf(&self) -> &Arc<crate::tls::ServerLeaf> {
        &self.leaf
    }

    /// Its test-rig controls (faults, the clock), when started in test-rig mode.
    pub fn rig(&self) -> Option<&Arc<crate::rig::Rig>> {
        self.shared.rig.as_ref()
    }

    /// The state its routes share: the store, the key operations, the rate limiter.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Shuts it down gracefully: stops accepting, lets requests in flight finish (up to 30 s),
    /// and returns what the accept loop returned.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await?
    }
}
