//! Caps on connections, so that one host holding connections open (with no TLS bytes, or idle
//! after the handshake) cannot starve devices elsewhere or run the server out of file descriptors.
//!
//! Three caps: connections open in all (never more than the file limit allows, leaving room for
//! the database and logs), connections open per source, and handshakes in progress per source. A
//! source is an address, or an IPv6 /64, as for the guess limits; trusted proxies (a gateway all
//! devices come through) are held only to the total. A connection over its source's cap is closed
//! at once, before any TLS work; a handshake over its source's cap waits for a slot (within the
//! handshake time-out), so a burst of devices behind one address queues rather than fails. At start
//! `serve` raises its soft limit on open files to the hard limit.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::rate_limit::source_group;

/// File descriptors kept free for the database, its WAL, the TLS files and logging.
const RESERVED_FILES: u64 = 64;

/// Caps on connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open in all (lowered to what the file limit allows).
    pub total: usize,
    /// Connections one source may hold open.
    pub per_source: usize,
    /// TLS handshakes one source may have in progress.
    pub handshakes_per_source: usize,
    /// How long a connection must have been in its handshake before a newer one from its source
    /// may close it to make room: a device's own handshake takes milliseconds and is never cut.
    pub evict_after: std::time::Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            total: 4096,
            per_source: 256,
            handshakes_per_source: 64,
            evict_after: std::time::Duration::from_secs(1),
        }
    }
}

impl ConnectionLimits {
    /// The total, lowered so that open connections never use the last [`RESERVED_FILES`] of a
    /// soft limit of `file_limit` descriptors.
    pub fn total_within(&self, file_limit: u64) -> usize {
        let room = file_limit.saturating_sub(RESERVED_FILES).max(1);
        self.total.min(usize::try_from(room).unwrap_or(usize::MAX))
    }
}

/// Raises the soft limit on open files to the hard limit; the soft limit in force afterwards.
pub fn raise_file_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!("cannot raise the limit on open files: {error}");
            file_limit()
        }
    }
}

/// The soft limit on open files now.
pub fn file_limit() -> u64 {
    rlimit::Resource::NOFILE
        .get()
        .map_or(1024, |(soft, _hard)| soft)
}

/// One source's open connections, its handshake slots, and how to close those of its connections
/// still in their handshake, oldest first.
#[derive(Debug)]
struct SourceState {
    open: usize,
    handshakes: Arc<Semaphore>,
    unfinished: VecDeque<(u64, std::time::Instant, oneshot::Sender<()>)>,
}

/// Open connections and handshakes in progress, by source.
#[derive(Debug)]
pub struct Sources {
    limits: ConnectionLimits,
    trusted: Vec<ipnet::IpNet>,
    states: Mutex<HashMap<IpAddr, SourceState>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// Why a connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The source holds as many connections as it may.
    TooManyConnections,
}

/// A connection counted against its source; uncounted when dropped.
#[derive(Debug)]
pub struct Admitted {
    sources: Arc<Sources>,
    group: Option<IpAddr>,
    id: u64,
    handshakes: Option<Arc<Semaphore>>,
    evicted: Option<oneshot::Receiver<()>>,
}

impl Sources {
    /// Counters under `limits`, exempting `trusted` proxies from the per-source caps.
    pub fn new(limits: ConnectionLimits, trusted: Vec<ipnet::IpNet>) -> Arc<Self> {
        Arc::new(Self {
            limits,
            trusted,
            states: Mutex::new(HashMap::new()),
            next_id: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, SourceState>> {
        self.states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits a connection from `address`, or says why not. At the source's cap, the oldest of
    /// its connections still in the handshake (one sending nothing, perhaps) is closed to make
    /// room: a host holding a shared address's slots with silent connections cannot keep the
    /// devices behind it out. Only a source whose every connection finished its handshake is
    /// refused.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Admitted, Refused> {
        let address = address.to_canonical();
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.trusted.iter().any(|net| net.contains(&address)) {
            return Ok(Admitted {
                sources: self.clone(),
                group: None,
                id,
                handshakes: None,
                evicted: None,
            });
        }
        let group = source_group(address);
        let mut states = self.lock();
        let state = states.entry(group).or_insert_with(|| SourceState {
            open: 0,
            handshakes: Arc::new(Semaphore::new(
                self.limits
                    .handshakes_per_source
                    .min(Semaphore::MAX_PERMITS),
            )),
            unfinished: VecDeque::new(),
        });
        if state.open >= self.limits.per_source {
            // The oldest unfinished handshake, if it has been at it long enough; it is uncounted
            // when its task drops it, a moment later.
            let now = std::time::Instant::now();
            let mut evicted = false;
            while let Some((_, since, _)) = state.unfinished.front() {
                if now.duration_since(*since) < self.limits.evict_after {
                    break;
                }
                if let Some((_, _, evict)) = state.unfinished.pop_front()
                    && evict.send(()).is_ok()
                {
                    evicted = true;
                    break;
                }
            }
            if !evicted {
                return Err(Refused::TooManyConnections);
            }
        }
        state.open += 1;
        let (evict, evicted) = oneshot::channel();
        state
            .unfinished
            .push_back((id, std::time::Instant::now(), evict));
        Ok(Admitted {
            sources: self.clone(),
            group: Some(group),
            id,
            handshakes: Some(state.handshakes.clone()),
            evicted: Some(evicted),
        })
    }

    #[cfg(test)]
    fn open(&self, address: IpAddr) -> usize {
        self.lock()
            .get(&source_group(address))
            .map_or(0, |state| state.open)
    }
}

impl Admitted {
    /// The signal that closes this connection to make room for a newer one from its source (while
    /// it is still in its handshake): completes then, and never for a trusted proxy's.
    pub fn eviction(&mut self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let evicted = self.evicted.take();
        async move {
            let closed = match evicted {
                Some(evicted) => evicted.await.is_ok(),
                None => false,
            };
            if !closed {
                std::future::pending::<()>().await;
            }
        }
    }

    /// The handshake is over: the connection can no longer be closed to make room.
    pub fn handshake_done(&mut self) {
        if let Some(group) = self.group
            && let Some(state) = self.sources.lock().get_mut(&group)
        {
            state.unfinished.retain(|(id, _, _)| *id != self.id);
        }
    }

    /// Waits for one of its source's handshake slots: a burst from one address queues rather than
    /// fails, and at most `handshakes_per_source` of them cost TLS work at once. Hold the slot
    /// for the handshake; a trusted proxy needs none.
    pub async fn handshake_slot(&self) -> Option<OwnedSemaphorePermit> {
        match &self.handshakes {
            Some(slots) => slots.clone().acquire_owned().await.ok(),
            None => None,
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(group) = self.group {
            let mut states = self.sources.lock();
            if let Some(state) = states.get_mut(&group) {
                state.unfinished.retain(|(id, _, _)| *id != self.id);
                state.open = state.open.saturating_sub(1);
                if state.open == 0 {
                    states.remove(&group);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn caps_open_connections_and_queues_handshakes_per_source() {
        let sources = Sources::new(
            ConnectionLimits {
                total: 100,
                per_source: 3,
                handshakes_per_source: 2,
                evict_after: Duration::from_secs(3600),
            },
            vec!["10.0.0.0/8".parse().unwrap()],
        );
        let a = ip("192.0.2.1");
        let mut first = sources.admit(a).unwrap();
        let mut second = sources.admit(a).unwrap();
        let mut third = sources.admit(a).unwrap();
        assert_eq!(sources.open(a), 3);
        // Two handshakes at a time; the third waits for a slot.
        let slot_one = first.handshake_slot().await.unwrap();
        let _slot_two = second.handshake_slot().await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(50), third.handshake_slot()).await;
        assert!(waiting.is_err(), "the third handshake waits");
        drop(slot_one);
        assert!(third.handshake_slot().await.is_some());
        for connection in [&mut first, &mut second, &mut third] {
            connection.handshake_done();
        }
        // Every connection past its handshake: the next one is refused.
        assert_eq!(sources.admit(a).unwrap_err(), Refused::TooManyConnections);
        // Another source is not affected; a trusted proxy is held to no per-source cap.
        assert!(sources.admit(ip("192.0.2.2")).is_ok());
        let proxied: Vec<_> = (0..10)
            .map(|_| sources.admit(ip("10.1.1.1")).unwrap())
            .chain((0..10).map(|_| sources.admit(ip("::ffff:10.1.1.1")).unwrap()))
            .collect();
        assert_eq!(proxied.len(), 20);
        // Closing frees the slot; the last one closed leaves nothing behind.
        drop(first);
        assert_eq!(sources.open(a), 2);
        assert!(sources.admit(a).is_ok());
        drop(second);
        drop(third);
        assert_eq!(sources.open(a), 0);
        assert!(sources.lock().get(&a).is_none());
    }

    #[tokio::test]
    async fn at_the_cap_the_oldest_unfinished_handshake_makes_room() {
        let sources = Sources::new(
            ConnectionLimits {
                total: 100,
                per_source: 2,
                handshakes_per_source: 2,
                evict_after: Duration::from_millis(100),
            },
            Vec::new(),
        );
        let a = ip("192.0.2.1");
        // Two silent connections hold the address's slots.
        let mut silent = sources.admit(a).unwrap();
        let mut also_silent = sources.admit(a).unwrap();
        let (first_closed, second_closed) = (silent.eviction(), also_silent.eviction());
        // While they are young (a device's handshake in progress), a newer one is turned away.
        assert_eq!(sources.admit(a).unwrap_err(), Refused::TooManyConnections);
        tokio::time::sleep(Duration::from_millis(150)).await;
        // A device behind the same address gets in: the oldest silent one is told to close.
        let mut device = sources.admit(a).unwrap();
        tokio::time::timeout(Duration::from_secs(1), first_closed)
            .await
            .expect("the oldest unfinished handshake is closed");
        let still = tokio::time::timeout(Duration::from_millis(50), second_closed).await;
        assert!(still.is_err(), "only one is closed");
        drop(silent);
        // A connection past its handshake is never closed for room.
        device.handshake_done();
        also_silent.handshake_done();
        assert_eq!(sources.admit(a).unwrap_err(), Refused::TooManyConnections);
    }

    #[tokio::test]
    async fn caps_beyond_what_a_semaphore_holds_mean_no_cap() {
        let sources = Sources::new(
            ConnectionLimits {
                total: 100,
                per_source: usize::MAX,
                handshakes_per_source: usize::MAX,
                evict_after: Duration::from_secs(1),
            },
            Vec::new(),
        );
        let admitted = sources.admit(ip("192.0.2.1")).unwrap();
        assert!(admitted.handshake_slot().await.is_some());
    }

    #[test]
    fn the_total_leaves_room_under_the_file_limit() {
        let limits = ConnectionLimits::default();
        assert_eq!(limits.total_within(1024), 960);
        assert_eq!(limits.total_within(1_048_576), 4096);
        assert_eq!(limits.total_within(10), 1);
    }
}
