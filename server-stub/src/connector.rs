//! The device connector's server side (ARCHITECTURE §11): the WebSocket sessions of enrolled
//! devices on this server.
//!
//! - **A budget of its own**: a session holds a slot of [`SessionLimits::max`], not one of the
//!   connection caps of [`crate::connections`] (the HTTP connection it was upgraded from gives its
//!   slot back), so idle devices cannot starve enrollment or the admin API, nor the reverse.
//! - **A share per source**: one source (an address or IPv6 /64) holds at most a sixteenth of the
//!   budget ([`crate::admission::session_room`]), so a host holding a mass key cannot enroll and
//!   connect units until every slot is its own; trusted proxies are held to the budget only.
//! - **One session per device**: a device that connects again (after a network change, say)
//!   replaces its old session, which is closed; only once its certificate has been found current,
//!   so a refused one (an old certificate of the unit) never touches the live session.
//! - **Online and last seen live in the store** (several servers may hold sessions): a session
//!   marks its device online on this server when it opens and offline, last seen then, when it ends.
//! - **Commands** (`ums-stub devices send`) are queued in the store for the server holding the
//!   device's session; [`deliver_commands`] takes this server's every [`COMMAND_POLL`] and pushes
//!   them. Deleting a connected device queues `disconnect`, which closes its session; its
//!   certificate is no longer a device's, so it is not let back in.
//! - **Idle**: ping and pong are the device's (every 120 s by default); a session silent for
//!   [`SessionLimits::idle`] is closed. Buffers are small: an idle session costs a few KiB.
//! - **Shutdown**: [`Sessions::close_all`] sends every device a Close frame (going away) and waits
//!   for the sessions to end, within the server's drain bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use onboard_protocol::UnitId;
use onboard_protocol::connector::{Command, Push};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::rate_limit::source_group;
use crate::store::{DISCONNECT, SessionRef, Store};

/// How often a server takes the commands queued for its sessions.
pub const COMMAND_POLL: Duration = Duration::from_secs(1);

/// Caps on device sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Sessions held at once (lowered to what the file limit leaves).
    pub max: usize,
    /// A session that sends nothing for this long is closed.
    pub idle: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max: 10_000,
            idle: Duration::from_secs(300),
        }
    }
}

/// What a session is told.
#[derive(Debug)]
enum Order {
    Push(Command),
    Close(&'static str),
}

/// The sessions this server holds.
#[derive(Debug)]
pub struct Sessions {
    server: OnceLock<String>,
    max: usize,
    budget: Arc<Semaphore>,
    trusted: Vec<ipnet::IpNet>,
    /// Sessions held by source (trusted proxies not counted).
    by_source: Mutex<HashMap<IpAddr, usize>>,
    idle: Duration,
    open: Mutex<HashMap<UnitId, Entry>>,
    next_id: AtomicU64,
    closing: watch::Sender<bool>,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    orders: mpsc::Sender<Order>,
}

impl Sessions {
    /// No sessions yet, under `limits`, the budget lowered to fit `file_limit` descriptors beside
    /// `connections` HTTP connections; `trusted` proxies are held to the budget only.
    pub fn new(
        limits: SessionLimits,
        file_limit: u64,
        connections: usize,
        trusted: Vec<ipnet::IpNet>,
    ) -> Arc<Sessions> {
        let room = file_limit
            .saturating_sub(connections as u64)
            .saturating_sub(64)
            .max(1);
        let max = limits.max.min(usize::try_from(room).unwrap_or(usize::MAX));
        Arc::new(Sessions {
            server: OnceLock::new(),
            max,
            budget: Arc::new(Semaphore::new(max)),
            trusted,
            by_source: Mutex::new(HashMap::new()),
            idle: limits.idle,
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            closing: watch::channel(false).0,
        })
    }

    /// Names this server as its heartbeat does; sessions are recorded under it.
    pub fn set_server(&self, name: String) {
        let _ = self.server.set(name);
    }

    /// This server's name.
    pub fn server(&self) -> &str {
        self.server.get().map_or("-", String::as_str)
    }

    /// How many sessions may be held at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// How many are held now.
    pub fn connected(&self) -> usize {
        self.lock().len()
    }

    /// A slot for one more session from `source`, unless the budget or the source's share of it
    /// is spent, or the server is stopping.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Result<SessionSlot, NoSession> {
        if *self.closing.borrow() {
            return Err(NoSession::Stopping);
        }
        let source = source.to_canonical();
        let trusted = self.trusted.iter().any(|net| net.contains(&source));
        let group = (!trusted).then(|| source_group(source));
        let mut by_source = self
            .by_source
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let held = group.map_or(0, |group| by_source.get(&group).copied().unwrap_or(0));
        if !crate::admission::session_room(held, self.max, trusted) {
            return Err(NoSession::SourceShareSpent);
        }
        let permit = self
            .budget
            .clone()
            .try_acquire_owned()
            .map_err(|_| NoSession::BudgetSpent)?;
        if let Some(group) = group {
            *by_source.entry(group).or_insert(0) += 1;
        }
        Ok(SessionSlot {
            sessions: self.clone(),
            group,
            _permit: permit,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<UnitId, Entry>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A number for a new session, to record it in the store under before [`Sessions::register`].
    pub fn next_session(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers session `id` (from [`Sessions::next_session`]) of `unit_id`, replacing (and
    /// closing) one it held before. Register only once the store has found the certificate
    /// current and recorded session `id`: a refused certificate must not close the device's live
    /// session, and the old one, ending, clears nothing of the new one's in the store.
    pub fn register(self: &Arc<Self>, unit_id: &UnitId, id: u64) -> Registered {
        let (orders, received) = mpsc::channel(4);
        let old = self.lock().insert(unit_id.clone(), Entry { id, orders });
        if let Some(old) = old {
            let _ = old
                .orders
                .try_send(Order::Close("replaced by a newer session"));
        }
        Registered {
            sessions: self.clone(),
            unit_id: unit_id.clone(),
            id,
            orders: Some(received),
            released: false,
        }
    }

    /// Whether session `id` is `unit_id`'s registered one.
    pub fn is_current(&self, unit_id: &UnitId, id: u64) -> bool {
        self.lock().get(unit_id).is_some_and(|entry| entry.id == id)
    }

    /// Forgets session `id` of `unit_id`; whether it was still the device's session.
    fn forget(&self, unit_id: &UnitId, id: u64) -> bool {
        let mut open = self.lock();
        if open.get(unit_id).is_some_and(|entry| entry.id == id) {
            open.remove(unit_id);
            true
        } else {
            false
        }
    }

    /// Hands a command taken from the store to the device's session: `disconnect` closes it, the
    /// others are pushed. `false` when this server holds no session of the device (it moved).
    pub fn deliver(&self, unit_id: &UnitId, command: &str) -> bool {
        let order = if command == DISCONNECT {
            Order::Close("the device was deleted")
        } else {
            match command.parse::<Command>() {
                Ok(command) => Order::Push(command),
                Err(error) => {
                    tracing::warn!(%unit_id, %error, "a queued command was dropped");
                    return false;
                }
            }
        };
        match self.lock().get(unit_id) {
            Some(entry) => match entry.orders.try_send(order) {
                Ok(()) => true,
                Err(_) => {
                    tracing::warn!(%unit_id, %command, "a command was dropped: the session is busy");
                    false
                }
            },
            None => false,
        }
    }

    /// Closes every session held now with a Close frame naming `why` (the devices reconnect);
    /// how many were told. The test rig's `close_sessions_every_seconds` calls it.
    pub fn close_every_session(&self, why: &'static str) -> usize {
        self.lock()
            .values()
            .filter(|entry| entry.orders.try_send(Order::Close(why)).is_ok())
            .count()
    }

    /// Closes every session (Close frame, going away) and waits, at most `within`, for them to end.
    pub async fn close_all(&self, within: Duration) {
        self.closing.send_replace(true);
        let held = self.connected();
        if held > 0 {
            tracing::info!(sessions = held, "closing device sessions");
        }
        let ended = tokio::time::timeout(within, async {
            while self.budget.available_permits() < self.max {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        if ended.is_err() {
            tracing::warn!(
                sessions = self.connected(),
                "device sessions still open after {within:?}"
            );
        }
    }

    /// Runs one device's `session` on `socket` until it ends, or its certificate expires at
    /// `expires`; `slot` is its budget slot.
    pub async fn serve(
        self: Arc<Self>,
        mut socket: WebSocket,
        mut session: Registered,
        expires: tokio::time::Instant,
        slot: SessionSlot,
        store: Arc<dyn Store>,
    ) {
        let unit_id = session.unit_id.clone();
        let Some(mut orders) = session.orders.take() else {
            return;
        };
        let mut closing = self.closing.subscribe();
        let expiry = tokio::time::sleep_until(expires);
        let silence = tokio::time::sleep(self.idle);
        tokio::pin!(expiry, silence);
        tracing::debug!(%unit_id, "device connected");
        let reason = loop {
            tokio::select! {
                received = socket.recv() => {
                    // Anything the device sends (a ping, most likely) counts as hearing from it.
                    silence.as_mut().reset(tokio::time::Instant::now() + self.idle);
                    match received {
                        None | Some(Err(_)) => break "the connection ended",
                        Some(Ok(Message::Close(_))) => break "the device closed it",
                        // Pings are answered by the WebSocket layer; nothing else is expected.
                        Some(Ok(_)) => {}
                    }
                }
                () = &mut silence => {
                    close(&mut socket, close_code::POLICY, "idle").await;
                    break "idle";
                }
                order = orders.recv() => match order {
                    Some(Order::Push(command)) => {
                        let frame = serde_json::to_string(&Push { command }).unwrap_or_default();
                        if socket.send(Message::Text(frame.into())).await.is_err() {
                            break "the connection ended";
                        }
                        tracing::info!(%unit_id, %command, "command sent");
                    }
                    Some(Order::Close(why)) => {
                        close(&mut socket, close_code::POLICY, why).await;
                        break why;
                    }
                    None => break "closed",
                },
                () = async { let _ = closing.wait_for(|closing| *closing).await; } => {
                    close(&mut socket, close_code::AWAY, "the server is stopping").await;
                    break "the server is stopping";
                }
                () = &mut expiry => {
                    close(&mut socket, close_code::POLICY, "the device certificate expired").await;
                    break "the certificate expired";
                }
            }
        };
        tracing::debug!(%unit_id, reason, "device disconnected");
        // At shutdown the server releases all its devices at once (serve::run), not one by one.
        let stopping = *self.closing.borrow();
        if session.release()
            && !stopping
            && let Err(error) = store
                .device_offline(&unit_id, self.session_ref(session.id))
                .await
        {
            tracing::warn!(%unit_id, "cannot record the device offline: {error}");
        }
        drop(slot);
    }

    /// Session `id` of this server, as the store records it.
    pub fn session_ref(&self, id: u64) -> SessionRef<'_> {
        SessionRef {
            server: self.server(),
            id: i64::try_from(id).unwrap_or(i64::MAX),
        }
    }
}

/// Why no session slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSession {
    /// The server holds as many sessions as it may.
    BudgetSpent,
    /// The source holds its share of the budget.
    SourceShareSpent,
    /// The server is stopping.
    Stopping,
}

/// A session's slot of the budget and of its source's share; given back when dropped.
#[derive(Debug)]
pub struct SessionSlot {
    sessions: Arc<Sessions>,
    group: Option<IpAddr>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        if let Some(group) = self.group {
            let mut by_source = self
                .sessions
                .by_source
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(held) = by_source.get_mut(&group) {
                *held = held.saturating_sub(1);
                if *held == 0 {
                    by_source.remove(&group);
                }
            }
        }
    }
}

/// A session registered for a device, before and while it runs. Dropped unreleased (an upgrade
/// that never happened), it forgets the registration.
#[derive(Debug)]
pub struct Registered {
    sessions: Arc<Sessions>,
    unit_id: UnitId,
    /// Its number on this server.
    pub id: u64,
    orders: Option<mpsc::Receiver<Order>>,
    released: bool,
}

impl Registered {
    /// Forgets the registration; whether it was still the device's session (no newer one
    /// replaced it).
    pub fn release(&mut self) -> bool {
        if std::mem::replace(&mut self.released, true) {
            return false;
        }
        self.sessions.forget(&self.unit_id, self.id)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.release();
    }
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        socket.send(Message::Close(Some(frame))),
    )
    .await;
}

/// Takes the commands queued for this server's sessions every [`COMMAND_POLL`] and delivers them.
pub async fn deliver_commands(sessions: Arc<Sessions>, store: Arc<dyn Store>) {
    let mut ticks = tokio::time::interval(COMMAND_POLL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match store.take_commands(sessions.server()).await {
            Ok(commands) => {
                for (unit_id, command) in commands {
                    if !sessions.deliver(&unit_id, &command) {
                        tracing::debug!(%unit_id, %command, "the device's session is not here any more");
                    }
                }
            }
            Err(error) => tracing::warn!("cannot take the queued device commands: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn one_source_holds_only_its_share_of_the_sessions() {
        // A budget of 32: a sixteenth, 2, per source.
        let sessions = Sessions::new(
            SessionLimits {
                max: 32,
                idle: Duration::from_secs(60),
            },
            1 << 20,
            4096,
            vec!["10.0.0.1/32".parse().unwrap()],
        );
        let first = sessions.admit(ip("192.0.2.1")).unwrap();
        // The same /64 of IPv6 is one source; IPv4 mapped is IPv4.
        let second = sessions.admit(ip("::ffff:192.0.2.1")).unwrap();
        assert_eq!(
            sessions.admit(ip("192.0.2.1")).unwrap_err(),
            NoSession::SourceShareSpent
        );
        let v6: Vec<_> = ["2001:db8::1", "2001:db8::2"]
            .map(|address| sessions.admit(ip(address)).unwrap())
            .into();
        assert_eq!(
            sessions.admit(ip("2001:db8::ffff")).unwrap_err(),
            NoSession::SourceShareSpent
        );
        // Another host, and a trusted proxy up to the whole budget.
        let elsewhere = sessions.admit(ip("192.0.2.2")).unwrap();
        let proxied: Vec<_> = (0..27)
            .map(|_| sessions.admit(ip("10.0.0.1")).unwrap())
            .collect();
        assert_eq!(
            sessions.admit(ip("10.0.0.1")).unwrap_err(),
            NoSession::BudgetSpent
        );
        // A session ended gives its slot back to its source.
        drop(first);
        drop(proxied);
        assert!(sessions.admit(ip("192.0.2.1")).is_ok());
        drop((second, v6, elsewhere));
        assert!(sessions.by_source.lock().unwrap().is_empty());
    }
}
