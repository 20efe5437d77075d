//! Caps on connections, so that hosts holding connections open (with no TLS bytes, or idle after
//! the handshake) cannot starve devices elsewhere or run the server out of file descriptors.
//!
//! Three caps: connections open in all (never more than the file limit allows, leaving room for
//! the database and logs), connections open per source (at most a sixteenth of the total), and
//! handshakes in progress per source. A source is an address, or an IPv6 /64, as for the guess
//! limits; trusted proxies (a gateway all devices come through) are held only to the total. Which
//! connection gets in, which one still in its handshake gives way for it, and how long its
//! handshake may take is [`crate::admission`]'s rule; [`Sources`] keeps the counts it reads and
//! applies its answer. A connection over its source's cap is closed at once, before any TLS work;
//! at the total the accept loop waits; a handshake over its source's cap waits for a slot (within
//! the handshake time-out), so a burst of devices behind one address queues rather than fails. At
//! start `serve` raises its soft limit on open files to the hard limit.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};

pub use crate::admission::ConnectionLimits;
use crate::admission::{self, Decision, SourceLoad, TotalLoad};
use crate::rate_limit::source_group;

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

/// A connection still in its handshake: when it started, and how to close it for room.
#[derive(Debug)]
struct Unfinished {
    id: u64,
    since: Instant,
    evict: oneshot::Sender<()>,
}

/// One source's connections (an address or IPv6 /64; a trusted proxy's own address), its
/// handshake slots, and those of its connections still in their handshake, oldest first.
#[derive(Debug)]
struct SourceState {
    open: usize,
    /// Connections told to close for room whose tasks have not dropped them yet.
    closing: Vec<u64>,
    trusted: bool,
    handshakes: Option<Arc<Semaphore>>,
    unfinished: VecDeque<Unfinished>,
}

impl SourceState {
    fn load(&self, now: Instant) -> SourceLoad {
        SourceLoad {
            staying: self.open - self.closing.len(),
            oldest_handshake: self
                .unfinished
                .front()
                .map(|oldest| now.duration_since(oldest.since)),
            trusted: self.trusted,
        }
    }
}

/// Every source, and the connections open in all.
#[derive(Debug, Default)]
struct State {
    sources: HashMap<IpAddr, SourceState>,
    open: usize,
    closing: usize,
}

/// Open connections and handshakes in progress, by source and in all.
#[derive(Debug)]
pub struct Sources {
    limits: ConnectionLimits,
    trusted: Vec<ipnet::IpNet>,
    state: Mutex<State>,
    next_id: std::sync::atomic::AtomicU64,
    closed: Notify,
}

/// Why a connection was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The source holds as many connections as it may (or, at the total, at least half an even
    /// share of it): close it.
    TooManyConnections,
    /// Every connection the server may hold is in use and none can be closed yet: ask again
    /// once one closes ([`Sources::closed`]), or a moment later.
    Full,
}

/// A connection counted against its source and the total; uncounted when dropped.
#[derive(Debug)]
pub struct Admitted {
    sources: Arc<Sources>,
    key: IpAddr,
    id: u64,
    handshakes: Option<Arc<Semaphore>>,
    evicted: Option<oneshot::Receiver<()>>,
    handshake_timeout: Duration,
    made_room_at_total: bool,
}

impl Sources {
    /// Counters under `limits` (its total already lowered to the file limit), exempting
    /// `trusted` proxies from the per-source caps.
    pub fn new(limits: ConnectionLimits, trusted: Vec<ipnet::IpNet>) -> Arc<Self> {
        Arc::new(Self {
            limits,
            trusted,
            state: Mutex::new(State::default()),
            next_id: std::sync::atomic::AtomicU64::new(0),
            closed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits a connection from `address`, or says why not, as [`admission::decide`] rules: the
    /// connection it names to give way (the oldest still in its handshake of its own source, or
    /// of the busiest source at the total) is told to close, and uncounted when its task drops
    /// it, a moment later.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Admitted, Refused> {
        let address = address.to_canonical();
        let trusted = self.trusted.iter().any(|net| net.contains(&address));
        // A trusted proxy is one source of its own, held to the total only.
        let key = if trusted {
            address
        } else {
            source_group(address)
        };
        let now = Instant::now();
        let mut guard = self.lock();
        let state = &mut *guard;
        let (handshake_timeout, made_room_at_total) = loop {
            let load = state.sources.get(&key).map_or(
                SourceLoad {
                    trusted,
                    ..SourceLoad::default()
                },
                |source| source.load(now),
            );
            let total = TotalLoad {
                open: state.open,
                closing: state.closing,
                sources: state.sources.len(),
            };
            let busiest = || {
                admission::busiest_stalled(
                    state
                        .sources
                        .iter()
                        .map(|(key, source)| (*key, source.load(now))),
                    self.limits.evict_after,
                )
            };
            match admission::decide(&self.limits, key, load, total, busiest) {
                Decision::Refuse => return Err(Refused::TooManyConnections),
                Decision::Wait => return Err(Refused::Full),
                Decision::Admit {
                    evict: None,
                    handshake_timeout,
                } => break (handshake_timeout, false),
                Decision::Admit {
                    evict: Some(victim),
                    handshake_timeout,
                } => {
                    // The rule names only a source with a stalled handshake.
                    let Some(oldest) = state
                        .sources
                        .get_mut(&victim)
                        .and_then(|source| source.unfinished.pop_front())
                    else {
                        return Err(Refused::Full);
                    };
                    // A connection whose signal is gone is leaving its handshake anyway: the
                    // rule is asked again without it.
                    if oldest.evict.send(()).is_ok()
                        && let Some(source) = state.sources.get_mut(&victim)
                    {
                        source.closing.push(oldest.id);
                        state.closing += 1;
                        let at_total =
                            total.open.saturating_sub(total.closing) >= self.limits.total;
                        break (handshake_timeout, at_total);
                    }
                }
            }
        };
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let handshakes = self
            .limits
            .handshakes_per_source
            .min(Semaphore::MAX_PERMITS);
        let source = state.sources.entry(key).or_insert_with(|| SourceState {
            open: 0,
            closing: Vec::new(),
            trusted,
            handshakes: (!trusted).then(|| Arc::new(Semaphore::new(handshakes))),
            unfinished: VecDeque::new(),
        });
        source.open += 1;
        state.open += 1;
        let (evict, evicted) = oneshot::channel();
        source.unfinished.push_back(Unfinished {
            id,
            since: now,
            evict,
        });
        Ok(Admitted {
            sources: self.clone(),
            key,
            id,
            handshakes: source.handshakes.clone(),
            evicted: Some(evicted),
            handshake_timeout,
            made_room_at_total,
        })
    }

    /// Completes once a connection closes after this is called (or one closed since the last
    /// call): the moment to ask again after [`Refused::Full`].
    pub async fn closed(&self) {
        self.closed.notified().await;
    }

    /// Connections open in all, those told to close included.
    pub fn open(&self) -> usize {
        self.lock().open
    }

    #[cfg(test)]
    fn open_from(&self, address: IpAddr) -> usize {
        self.lock()
            .sources
            .get(&source_group(address))
            .map_or(0, |state| state.open)
    }
}

impl Admitted {
    /// The signal that closes this connection to make room for a newer one (while it is still in
    /// its handshake): completes then.
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

    /// How long its handshake may take, the wait for a handshake slot included: shorter the
    /// fuller the server was when it was let in.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// Whether it was let in at the total by closing another connection's stalled handshake.
    pub fn made_room_at_total(&self) -> bool {
        self.made_room_at_total
    }

    /// The handshake is over: the connection can no longer be closed to make room.
    pub fn handshake_done(&mut self) {
        if let Some(state) = self.sources.lock().sources.get_mut(&self.key) {
            state
                .unfinished
                .retain(|unfinished| unfinished.id != self.id);
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
        {
            let mut guard = self.sources.lock();
            let state = &mut *guard;
            state.open = state.open.saturating_sub(1);
            if let Some(source) = state.sources.get_mut(&self.key) {
                source
                    .unfinished
                    .retain(|unfinished| unfinished.id != self.id);
                if let Some(at) = source.closing.iter().position(|id| *id == self.id) {
                    source.closing.swap_remove(at);
                    state.closing = state.closing.saturating_sub(1);
                }
                source.open = source.open.saturating_sub(1);
                if source.open == 0 {
                    state.sources.remove(&self.key);
                }
            }
        }
        self.sources.closed.notify_one();
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
        assert_eq!(sources.open_from(a), 3);
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
        assert_eq!(sources.open_from(a), 2);
        assert!(sources.admit(a).is_ok());
        drop(second);
        drop(third);
        assert_eq!(sources.open_from(a), 0);
        assert!(!sources.lock().sources.contains_key(&a));
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
    async fn at_the_total_the_busiest_sources_stalled_handshake_makes_room() {
        // A total of 32: a source holds at most 2; the trusted proxy holds 12.
        let sources = Sources::new(
            ConnectionLimits {
                total: 32,
                per_source: 256,
                handshakes_per_source: 64,
                evict_after: Duration::from_millis(100),
            },
            vec!["10.0.0.1/32".parse().unwrap()],
        );
        let mut proxied: Vec<_> = (0..12)
            .map(|_| sources.admit(ip("10.0.0.1")).unwrap())
            .collect();
        let mut flood: Vec<_> = (1..=10)
            .flat_map(|n| [ip(&format!("192.0.2.{n}")), ip(&format!("192.0.2.{n}"))])
            .map(|address| sources.admit(address).unwrap())
            .collect();
        assert_eq!(
            sources.admit(ip("192.0.2.1")).unwrap_err(),
            Refused::TooManyConnections
        );
        assert_eq!(sources.open(), 32);
        let proxied_closed: Vec<_> = proxied.iter_mut().map(Admitted::eviction).collect();
        let flood_closed: Vec<_> = flood.iter_mut().map(Admitted::eviction).collect();
        // At the total with every handshake young (a device's in progress), a newcomer waits.
        assert_eq!(
            sources.admit(ip("198.51.100.7")).unwrap_err(),
            Refused::Full
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        // Now it gets in: the busiest source (the proxy) gives up its oldest handshake.
        let device = sources.admit(ip("198.51.100.7")).unwrap();
        assert!(device.handshake_timeout() < crate::admission::HANDSHAKE_TIMEOUT);
        let mut proxied_closed = proxied_closed.into_iter();
        tokio::time::timeout(Duration::from_secs(1), proxied_closed.next().unwrap())
            .await
            .expect("the proxy's oldest handshake is closed");
        // The closed one holds its descriptor until dropped (33 open); the next newcomer closes
        // the proxy's next oldest.
        assert_eq!(sources.open(), 33);
        let next = sources.admit(ip("198.51.100.8")).unwrap();
        tokio::time::timeout(Duration::from_secs(1), proxied_closed.next().unwrap())
            .await
            .expect("and then its next oldest");
        let untouched = futures_none(proxied_closed.chain(flood_closed)).await;
        assert!(untouched, "no other connection is closed");
        // Dropped, the closed ones are uncounted and wake a waiting accept loop.
        let closed = sources.closed();
        drop(proxied.remove(0));
        closed.await;
        drop(proxied.remove(0));
        assert_eq!(sources.open(), 32);
        drop((device, next, proxied, flood));
        assert_eq!(sources.open(), 0);
        assert!(sources.lock().sources.is_empty());
    }

    /// Whether none of `signals` completes within 50 ms.
    async fn futures_none(
        signals: impl Iterator<Item = impl std::future::Future<Output = ()> + Send + 'static>,
    ) -> bool {
        let mut set = tokio::task::JoinSet::new();
        for signal in signals {
            set.spawn(signal);
        }
        tokio::time::timeout(Duration::from_millis(50), set.join_next())
            .await
            .is_err()
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
