//! The device connector (ARCHITECTURE §11): once enrolled, the device holds one WebSocket to
//! `/device/v1/connect` on the first reachable server of its list, over mutual TLS with its
//! certificate and pinned to its UMS ID as every other request.
//!
//! - **Keep-alive**: a WebSocket ping every [`ConnectorSettings::ping`]; no pong within
//!   [`ConnectorSettings::timeout`] (or any read failing) ends the session. Between pings the task
//!   sleeps: no timer fires and nothing polls.
//! - **Reconnection**: through the servers in order, then a backoff with jitter that grows while
//!   no server takes the device or sessions end before their first ping, and starts over after a
//!   session that lasted; a `503`'s `Retry-After` is honoured, and after a server going away
//!   (stopping) the wait is drawn from up to 30 s, so a fleet does not come back at once.
//! - **Commands** (`renew-now`, `inventory-now`) are handed to the daemon as [`Report::Command`];
//!   the daemon owns the state and does the work over the usual routes.
//! - **Refusal**: a server that no longer honours the certificate (the device was deleted) answers
//!   the upgrade with `certificate_not_current`. From the server that issued or last renewed the
//!   certificate that is final: the daemon turns the device orphaned and the connector waits until
//!   it is enrolled again. From another server (which may hold an older copy of the database) it
//!   is passed over like a server that is down.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use onboard_protocol::connector::{Command, MAX_FRAME_BYTES, Push};
use onboard_protocol::routes::DEVICE_CONNECT;
use onboard_protocol::{Problem, ProblemCode, Server};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::enroll::Enroller;
use crate::lifecycle::{BackoffPolicy, backoff};
use crate::state::AgentState;
use crate::tls::{self, PinnedVerifier};

/// How the connector keeps its session alive and comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectorSettings {
    /// How often to ping (`connector_ping_seconds`).
    pub ping: Duration,
    /// How long to wait for the network: to connect, for the upgrade, for a pong.
    pub timeout: Duration,
    /// Waiting between rounds over the servers.
    pub backoff: BackoffPolicy,
}

impl Default for ConnectorSettings {
    fn default() -> Self {
        ConnectorSettings {
            ping: Duration::from_secs(120),
            timeout: Duration::from_secs(30),
            backoff: BackoffPolicy::default(),
        }
    }
}

/// What the connector tells the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A session is open with `server`.
    Connected {
        /// `host:port`.
        server: String,
    },
    /// The session with `server` ended.
    Disconnected {
        /// `host:port`.
        server: String,
        /// Why, for the log.
        reason: String,
    },
    /// The server asks for this.
    Command(Command),
    /// `server` no longer honours this device's certificate.
    NotHonoured {
        /// `host:port`.
        server: String,
        /// What it said (never key material).
        detail: String,
    },
}

/// Why a server could not be connected to.
enum Refusal {
    /// The certificate is not (or no longer) an enrolled device's there.
    NotHonoured(String),
    /// Anything else: try the next server, then back off (at least `wait`, a `Retry-After`).
    Fault {
        detail: String,
        wait: Option<Duration>,
    },
}

fn fault(detail: impl Into<String>) -> Refusal {
    Refusal::Fault {
        detail: detail.into(),
        wait: None,
    }
}

/// How a session ended.
struct Ended {
    /// Why, for the log.
    reason: String,
    /// How long it was held.
    lasted: Duration,
    /// Whether the server closed it going away (it is stopping).
    going_away: bool,
}

/// Holds the session while the device is enrolled, reporting to `reports`, until `stop` turns
/// true. `states` follows the daemon's state (the servers, the pin, whether enrolled). Each time
/// a session wakes (a ping due, a frame read) `wakeups` counts it, so that idleness can be
/// measured.
pub async fn run(
    enroller: Enroller,
    settings: ConnectorSettings,
    mut states: watch::Receiver<Option<Arc<AgentState>>>,
    reports: mpsc::Sender<Report>,
    mut stop: watch::Receiver<bool>,
    wakeups: Arc<AtomicU64>,
) {
    let mut rounds = 0u32;
    loop {
        if *stop.borrow() {
            return;
        }
        let state = states.borrow_and_update().clone();
        let Some(state) = state.filter(|state| state.phase.is_enrolled()) else {
            // Not enrolled (yet, or any more): wait for a state that is.
            if !changed(&mut states, &mut stop).await {
                return;
            }
            continue;
        };
        let enrolled = match enroller.enrolled(&state) {
            Ok(enrolled) => enrolled,
            Err(error) => {
                tracing::warn!(%error, "the device connector cannot start");
                rounds = rounds.saturating_add(1);
                if !pause(&settings, rounds, None, &mut stop).await {
                    return;
                }
                continue;
            }
        };
        let mut ended: Option<Ended> = None;
        let mut retry_after = None;
        let mut orphaned = false;
        for server in &enrolled.servers {
            let opened = tokio::select! {
                opened = open(&enroller, &enrolled, server, &settings) => opened,
                _ = stop.changed() => return,
            };
            match opened {
                Ok(socket) => {
                    tracing::info!(%server, "device connector connected");
                    let _ = reports
                        .send(Report::Connected {
                            server: server.clone(),
                        })
                        .await;
                    let end = session(socket, &settings, &reports, &mut stop, &wakeups).await;
                    tracing::info!(%server, reason = %end.reason, "device connector disconnected");
                    let _ = reports
                        .send(Report::Disconnected {
                            server: server.clone(),
                            reason: end.reason.clone(),
                        })
                        .await;
                    ended = Some(end);
                    break;
                }
                // Only the server that issued or last renewed the certificate speaks for it:
                // another may hold an older copy of the database.
                Err(Refusal::NotHonoured(detail))
                    if Enroller::speaks_for_the_device(&state, server) =>
                {
                    let _ = reports
                        .send(Report::NotHonoured {
                            server: server.clone(),
                            detail,
                        })
                        .await;
                    orphaned = true;
                    break;
                }
                Err(Refusal::NotHonoured(detail)) => {
                    tracing::warn!(%server, %detail, "device connector refused by a server that did not issue the certificate");
                }
                Err(Refusal::Fault { detail, wait }) => {
                    tracing::warn!(%server, %detail, "device connector cannot connect");
                    retry_after = retry_after.max(wait);
                }
            }
        }
        if *stop.borrow() {
            return;
        }
        if orphaned {
            // The daemon turns the device orphaned; this waits for the state it saves.
            if !changed(&mut states, &mut stop).await {
                return;
            }
            continue;
        }
        // The wait grows while no server takes the device, and while sessions end before their
        // first ping (a server that keeps dropping it, or another device with the same
        // certificate replacing it); after a session that lasted, it starts over.
        rounds = match &ended {
            Some(end) if end.lasted >= settings.ping => 1,
            _ => rounds.saturating_add(1),
        };
        // A server going away closes every session at once: the devices come back spread out.
        let spread = ended
            .as_ref()
            .filter(|end| end.going_away)
            .map(|_| settings.backoff.max.min(GOING_AWAY_SPREAD));
        if !pause(&settings, rounds, spread.or(retry_after), &mut stop).await {
            return;
        }
    }
}

/// After a server closed sessions going away, devices come back within this much (or the
/// longest backoff, if shorter).
const GOING_AWAY_SPREAD: Duration = Duration::from_secs(30);

/// Waits for the daemon's next state; `false` when told to stop (or the daemon is gone).
async fn changed(
    states: &mut watch::Receiver<Option<Arc<AgentState>>>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        changed = states.changed() => changed.is_ok() && !*stop.borrow(),
        changed = stop.changed() => changed.is_ok() && !*stop.borrow(),
    }
}

/// Waits the backoff for `round`, or a draw in `[0, spread]` when given (at least a second);
/// `false` when told to stop meanwhile.
async fn pause(
    settings: &ConnectorSettings,
    round: u32,
    spread: Option<Duration>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let backoff = backoff(&settings.backoff, round, None, crate::clock::jitter());
    let delay = match spread {
        Some(spread) => backoff.max(spread.mul_f64(crate::clock::jitter())),
        None => backoff,
    };
    tracing::debug!(
        delay_ms = delay.as_millis() as u64,
        "device connector reconnects"
    );
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        changed = stop.changed() => changed.is_ok() && !*stop.borrow(),
    }
}

type Socket = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// A small WebSocket: the connector carries pings and short commands only.
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
}

/// Connects to `server`: TCP, the pinned mutual-TLS handshake, the WebSocket upgrade.
async fn open(
    enroller: &Enroller,
    enrolled: &super::Enrolled,
    server: &str,
    settings: &ConnectorSettings,
) -> Result<Socket, Refusal> {
    let server = server_of(server).ok_or_else(|| fault(format!("{server} is not host:port")))?;
    let verifier = PinnedVerifier::new(enrolled.pin.clone(), enroller.clock.clone());
    let config = tls::client_config(verifier.clone(), Some(&enrolled.identity))
        .map_err(|error| fault(format!("cannot set up TLS: {error}")))?;
    let name = rustls::pki_types::ServerName::try_from(server.host().to_owned())
        .map_err(|_| fault(format!("{} is not a host name", server.host())))?;
    let within = |what: &'static str| move |_| fault(format!("{what} timed out"));
    let tcp = tokio::time::timeout(
        settings.timeout,
        TcpStream::connect((server.host(), server.port())),
    )
    .await
    .map_err(within("connecting"))?
    .map_err(|_| fault("cannot connect".to_owned()))?;
    let _ = tcp.set_nodelay(true);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = tokio::time::timeout(settings.timeout, connector.connect(name, tcp))
        .await
        .map_err(within("the TLS handshake"))?
        .map_err(|_| match verifier.take_refusal() {
            Some(refusal) => fault(refusal.to_string()),
            None => fault("the TLS handshake failed".to_owned()),
        })?;
    let request = format!("wss://{server}{DEVICE_CONNECT}")
        .into_client_request()
        .map_err(|_| fault("cannot make the upgrade request".to_owned()))?;
    let upgraded = tokio::time::timeout(
        settings.timeout,
        tokio_tungstenite::client_async_with_config(request, stream, Some(socket_config())),
    )
    .await
    .map_err(within("the WebSocket upgrade"))?;
    match upgraded {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let wait = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            // The body is what came with the head; a problem sent after it is not seen.
            let problem = response
                .body()
                .as_deref()
                .and_then(|body| serde_json::from_slice::<Problem>(body).ok());
            match problem {
                Some(problem) if problem.code == ProblemCode::CertificateNotCurrent => {
                    let detail = problem
                        .detail
                        .as_deref()
                        .map(crate::est_client::clean_detail)
                        .unwrap_or_default();
                    Err(Refusal::NotHonoured(detail))
                }
                // The connector answers 403 for one thing only: a certificate it does not honour.
                None if status == 403 => Err(Refusal::NotHonoured(
                    "the server refused this device's certificate (HTTP 403)".to_owned(),
                )),
                Some(problem) => Err(Refusal::Fault {
                    detail: format!("HTTP {status} {}", problem.code.as_str()),
                    wait,
                }),
                None => Err(Refusal::Fault {
                    detail: format!("HTTP {status}"),
                    wait,
                }),
            }
        }
        Err(_) => Err(fault("the WebSocket upgrade failed".to_owned())),
    }
}

/// Holds one session until it ends; how it ended.
async fn session(
    socket: Socket,
    settings: &ConnectorSettings,
    reports: &mpsc::Sender<Report>,
    stop: &mut watch::Receiver<bool>,
    wakeups: &AtomicU64,
) -> Ended {
    let opened = Instant::now();
    let (reason, going_away) = hold(socket, settings, reports, stop, wakeups).await;
    Ended {
        reason,
        lasted: opened.elapsed(),
        going_away,
    }
}

/// The loop of [`session`]: why it ended, and whether the server went away.
async fn hold(
    mut socket: Socket,
    settings: &ConnectorSettings,
    reports: &mpsc::Sender<Report>,
    stop: &mut watch::Receiver<bool>,
    wakeups: &AtomicU64,
) -> (String, bool) {
    let mut next_ping = Instant::now() + settings.ping;
    let mut pong_due: Option<Instant> = None;
    let mut first = true;
    loop {
        if !std::mem::take(&mut first) {
            wakeups.fetch_add(1, Ordering::Relaxed);
        }
        let wake = pong_due.unwrap_or(next_ping);
        tokio::select! {
            received = socket.next() => match received {
                None => return ("the server closed the connection".to_owned(), false),
                Some(Err(error)) => return (format!("the connection failed: {}", kind(&error)), false),
                Some(Ok(Message::Pong(_))) => pong_due = None,
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<Push>(&text) {
                    Ok(push) => {
                        tracing::info!(command = %push.command, "command from the server");
                        let _ = reports.send(Report::Command(push.command)).await;
                    }
                    Err(_) => tracing::warn!("the server sent a frame that is not a command"),
                },
                Some(Ok(Message::Close(frame))) => {
                    return match frame {
                        Some(frame) => (
                            format!("the server closed it: {}", crate::est_client::clean_detail(&frame.reason)),
                            frame.code == CloseCode::Away,
                        ),
                        None => ("the server closed it".to_owned(), false),
                    };
                }
                Some(Ok(_)) => {}
            },
            () = tokio::time::sleep_until(wake) => {
                if pong_due.is_some() {
                    return (format!("no pong within {} s", settings.timeout.as_secs()), false);
                }
                let sent = tokio::time::timeout(settings.timeout, socket.send(Message::Ping(Default::default()))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    return ("the ping could not be sent".to_owned(), false);
                }
                let now = Instant::now();
                pong_due = Some(now + settings.timeout);
                next_ping = now + settings.ping;
            }
            _ = stop.changed() => {
                let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
                return ("the agent is stopping".to_owned(), false);
            }
        }
    }
}

/// A server as the state file holds it: `host:port`, an IPv6 host in brackets.
fn server_of(text: &str) -> Option<Server> {
    let (host, port) = text.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host);
    Server::new(host, port.parse().ok()?).ok()
}

/// A WebSocket error's kind, without anything it quotes.
fn kind(error: &tungstenite::Error) -> &'static str {
    match error {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => "closed",
        tungstenite::Error::Io(_) => "I/O error",
        tungstenite::Error::Tls(_) => "TLS error",
        tungstenite::Error::Capacity(_) => "a frame too large",
        tungstenite::Error::Protocol(_) => "a protocol violation",
        _ => "an error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_read_back_as_the_state_file_holds_them() {
        for (host, port) in [("ums.example", 8443), ("192.0.2.7", 443), ("::1", 8443)] {
            let server = Server::new(host, port).unwrap();
            assert_eq!(server_of(&server.to_string()), Some(server));
        }
        assert_eq!(server_of("ums.example"), None);
        assert_eq!(server_of("ums.example:http"), None);
    }
}
