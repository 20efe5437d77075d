//! The admission rules, pure: whether a new connection gets in, which connection still in its TLS
//! handshake is closed to make room for it, how long its handshake may take, and how many device
//! sessions one source may hold.
//!
//! [`crate::connections`] keeps the counts; for each connection the accept loop takes, it reads
//! them, calls [`decide`] and applies the answer ([`crate::serve`] closes, waits or serves). The
//! device connector asks [`session_room`] before it opens a session. Nothing else decides these.
//!
//! Why they are what they are:
//! - **No few hosts can fill the total.** A source may hold at most a [`FAIR_SHARES`]th of the
//!   total ([`per_source_cap`]), and within that, a connection that has been in its handshake for
//!   over `evict_after` (one sending nothing, say) gives way to a newer one from its source.
//! - **Many hosts cannot starve the rest either.** At the total, the oldest connection still in
//!   its handshake for over `evict_after` of whichever source holds most ([`busiest_stalled`])
//!   gives way: a device's own handshake takes milliseconds and is never cut, and a flood from
//!   twenty addresses pays for its own newcomers. When none has been at it that long, a newcomer
//!   from a source holding at least half an even share of the total is closed at once, and only
//!   one from a lighter source (a device elsewhere) waits for room: the accept loop keeps
//!   draining the listen queue, so the kernel never drops a device's connection for a full one.
//! - **Handshakes get less time as the total fills** ([`handshake_timeout`]): 10 s while half the
//!   total is free, down to 2 s at the total, so slots held by silent connections turn over faster
//!   exactly when they are scarce.
//! - **Descriptors stay bounded.** A connection told to close holds its descriptor until its task
//!   drops it, a moment later; at most [`EVICTION_SLACK`] such ones are let in over the total, and
//!   past that the accept loop waits.
//! - **Device sessions have per-source budgets too** ([`sessions_per_source`]): a host holding a
//!   mass key could otherwise enroll and connect as many units as the whole session budget.
//!   Trusted proxies (a gateway all devices come through) are held to the totals only.

use std::time::Duration;

/// File descriptors kept free for the database, its WAL, the TLS files and logging.
const RESERVED_FILES: u64 = 64;

/// Caps on connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open in all (lowered to what the file limit allows).
    pub total: usize,
    /// Connections one source may hold open (at most a sixteenth of the total:
    /// [`per_source_cap`]).
    pub per_source: usize,
    /// TLS handshakes one source may have in progress.
    pub handshakes_per_source: usize,
    /// How long a connection must have been in its handshake before a newer one (from its source,
    /// or from anywhere at the total) may close it to make room: a device's own handshake takes
    /// milliseconds and is never cut.
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

/// The fewest sources that can fill a total: a source's cap is at most this share of it.
pub const FAIR_SHARES: usize = 16;

/// Connections let in over the total while as many evicted ones are still closing; below the
/// descriptors [`crate::connections`] keeps free for the database and logs.
pub const EVICTION_SLACK: usize = 32;

/// The handshake time-out while at least half the total is free.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The handshake time-out at the total.
pub const HANDSHAKE_TIMEOUT_AT_TOTAL: Duration = Duration::from_secs(2);

/// One source as the rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SourceLoad {
    /// Its connections that stay: open, less those already told to close.
    pub staying: usize,
    /// How long the oldest of its connections still in the handshake (and not told to close yet)
    /// has been at it.
    pub oldest_handshake: Option<Duration>,
    /// A trusted proxy: held to the total only.
    pub trusted: bool,
}

/// All connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotalLoad {
    /// Connections holding a descriptor, those told to close included.
    pub open: usize,
    /// Of those, the ones told to close.
    pub closing: usize,
    /// Sources holding connections.
    pub sources: usize,
}

/// What to do with a new connection from source `K`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<K> {
    /// Serve it, with this handshake time-out; first close the oldest connection still in its
    /// handshake of source `evict`, if any.
    Admit {
        /// The source whose oldest unfinished handshake gives way.
        evict: Option<K>,
        /// How long its handshake (the wait for a handshake slot included) may take.
        handshake_timeout: Duration,
    },
    /// Close it at once: its source holds its cap, every one past the handshake or younger than
    /// `evict_after`; or the total is reached, nothing can be closed yet, and its source holds at
    /// least half an even share of it.
    Refuse,
    /// Keep it waiting (and those behind it in the listen queue): the total is reached and nothing
    /// can be closed yet (or too many closing connections still hold their descriptors), and its
    /// source is a light one or a trusted proxy. Ask again when a connection closes.
    Wait,
}

/// How many connections one source may hold: the configured cap, at most a [`FAIR_SHARES`]th of
/// the total (the total itself lowered to the file limit), and at least one.
pub fn per_source_cap(limits: &ConnectionLimits) -> usize {
    limits.per_source.min(limits.total / FAIR_SHARES).max(1)
}

/// Whether a connection that has been in its handshake for `age` may be closed for room.
fn stalled(age: Option<Duration>, evict_after: Duration) -> bool {
    age.is_some_and(|age| age >= evict_after)
}

/// What to do with a connection from `source` (keyed `key`), given the load of all connections.
/// `busiest` is asked, only when the total is reached, for [`busiest_stalled`] over every source.
pub fn decide<K: Copy>(
    limits: &ConnectionLimits,
    key: K,
    source: SourceLoad,
    total: TotalLoad,
    busiest: impl FnOnce() -> Option<K>,
) -> Decision<K> {
    let mut evict = None;
    if !source.trusted && source.staying >= per_source_cap(limits) {
        if !stalled(source.oldest_handshake, limits.evict_after) {
            return Decision::Refuse;
        }
        evict = Some(key);
    }
    let staying = total.open.saturating_sub(total.closing);
    // Nothing to close at the total: a crowding source's newcomer is closed, so that the accept
    // loop waits only for light sources' and flooders cannot fill the listen queue meanwhile.
    let full = || {
        let crowding = source.staying > 0
            && source
                .staying
                .saturating_mul(2)
                .saturating_mul(total.sources)
                >= staying;
        if crowding && !source.trusted {
            Decision::Refuse
        } else {
            Decision::Wait
        }
    };
    if total.open >= limits.total.saturating_add(EVICTION_SLACK) {
        return full();
    }
    let staying_after_own = staying.saturating_sub(usize::from(evict.is_some()));
    if staying_after_own >= limits.total {
        if evict.is_some() {
            // Its own source's eviction frees no room in a total already over.
            return full();
        }
        match busiest() {
            Some(busiest) => evict = Some(busiest),
            None => return full(),
        }
    }
    let after = (staying + 1).saturating_sub(usize::from(evict.is_some()));
    Decision::Admit {
        evict,
        handshake_timeout: handshake_timeout(after, limits.total),
    }
}

/// The source, among `sources`, that holds most connections and has one in its handshake for
/// over `evict_after`; of two holding as many, the one with the older handshake.
pub fn busiest_stalled<K>(
    sources: impl IntoIterator<Item = (K, SourceLoad)>,
    evict_after: Duration,
) -> Option<K> {
    sources
        .into_iter()
        .filter(|(_, load)| stalled(load.oldest_handshake, evict_after))
        .max_by_key(|(_, load)| (load.staying, load.oldest_handshake))
        .map(|(key, _)| key)
}

/// The handshake time-out of a connection let in when `open` connections (it included) stay of
/// `total`: [`HANDSHAKE_TIMEOUT`] up to half the total, then down in a straight line to
/// [`HANDSHAKE_TIMEOUT_AT_TOTAL`] at the total.
pub fn handshake_timeout(open: usize, total: usize) -> Duration {
    let half = total / 2;
    if open <= half {
        return HANDSHAKE_TIMEOUT;
    }
    let free = total.saturating_sub(open) as u128;
    let span = total.saturating_sub(half).max(1) as u128;
    let room = (HANDSHAKE_TIMEOUT - HANDSHAKE_TIMEOUT_AT_TOTAL).as_millis();
    let extra = u64::try_from(room * free / span).unwrap_or(u64::MAX);
    HANDSHAKE_TIMEOUT_AT_TOTAL + Duration::from_millis(extra)
}

/// How many device sessions one source may hold of a budget of `max`: a [`FAIR_SHARES`]th, at
/// least one.
pub fn sessions_per_source(max: usize) -> usize {
    (max / FAIR_SHARES).max(1)
}

/// Whether a source holding `held` sessions may open another of a budget of `max` (the budget
/// itself is checked apart).
pub fn session_room(held: usize, max: usize, trusted: bool) -> bool {
    trusted || held < sessions_per_source(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            total: 4096,
            per_source: 256,
            handshakes_per_source: 64,
            evict_after: SECOND,
        }
    }

    fn source(staying: usize, oldest_ms: Option<u64>) -> SourceLoad {
        SourceLoad {
            staying,
            oldest_handshake: oldest_ms.map(Duration::from_millis),
            trusted: false,
        }
    }

    fn total(open: usize, closing: usize) -> TotalLoad {
        TotalLoad {
            open,
            closing,
            sources: 20,
        }
    }

    #[test]
    fn the_per_source_cap_is_at_most_a_share_of_the_total() {
        let cases = [
            // (configured, total, cap)
            (256, 4096, 256),
            (1000, 4096, 256),
            (256, 960, 60),
            (10, 960, 10),
            (256, 10, 1),
            (256, 1, 1),
        ];
        for (per_source, total, cap) in cases {
            let limits = ConnectionLimits {
                per_source,
                total,
                ..limits()
            };
            assert_eq!(per_source_cap(&limits), cap, "{per_source} of {total}");
        }
    }

    #[test]
    fn who_gets_in_and_who_gives_way() {
        let ten = HANDSHAKE_TIMEOUT;
        let two = HANDSHAKE_TIMEOUT_AT_TOTAL;
        let admit = |evict, handshake_timeout| Decision::Admit {
            evict,
            handshake_timeout,
        };
        let cases = [
            // (what, the source, all, the busiest stalled source, decision)
            ("room", source(0, None), total(0, 0), None, admit(None, ten)),
            (
                "room, busiest not asked",
                source(10, Some(5_000)),
                total(100, 0),
                Some(9),
                admit(None, ten),
            ),
            (
                "source at its cap, young handshakes",
                source(256, Some(999)),
                total(300, 0),
                None,
                Decision::Refuse,
            ),
            (
                "source at its cap, all past the handshake",
                source(256, None),
                total(300, 0),
                None,
                Decision::Refuse,
            ),
            (
                "source at its cap, a stalled handshake",
                source(256, Some(1_000)),
                total(300, 0),
                None,
                admit(Some(1), ten),
            ),
            (
                "source at its cap, the total too: its own gives way",
                source(256, Some(1_500)),
                total(4096, 0),
                Some(9),
                admit(Some(1), two),
            ),
            (
                "total reached: the busiest stalled gives way",
                source(0, None),
                total(4096, 0),
                Some(9),
                admit(Some(9), two),
            ),
            (
                "total reached, nothing stalled: a new source waits",
                source(0, None),
                total(4096, 0),
                None,
                Decision::Wait,
            ),
            (
                "total reached, nothing stalled: a light source waits",
                source(102, Some(10)),
                total(4096, 0),
                None,
                Decision::Wait,
            ),
            (
                "total reached, nothing stalled: a crowding one is closed",
                source(103, Some(10)),
                total(4096, 0),
                None,
                Decision::Refuse,
            ),
            (
                "total reached, one closing makes room",
                source(0, None),
                total(4096, 1),
                Some(9),
                admit(None, two),
            ),
            (
                "closing ones hold every spare descriptor",
                source(0, None),
                total(4096 + EVICTION_SLACK, 40),
                Some(9),
                Decision::Wait,
            ),
            (
                "closing ones hold every spare descriptor, a crowding source",
                source(205, None),
                total(4096 + EVICTION_SLACK, 40),
                Some(9),
                Decision::Refuse,
            ),
            (
                "source over a total already over",
                source(256, Some(5_000)),
                total(4100, 0),
                Some(9),
                Decision::Refuse,
            ),
            (
                "three quarters full",
                source(0, None),
                total(3071, 0),
                None,
                admit(None, Duration::from_secs(6)),
            ),
        ];
        for (what, source, total, busiest, expected) in cases {
            let decision = decide(&limits(), 1, source, total, || busiest);
            assert_eq!(decision, expected, "{what}");
        }
    }

    #[test]
    fn a_trusted_proxy_is_held_to_the_total_only() {
        let proxy = SourceLoad {
            trusted: true,
            ..source(4000, None)
        };
        assert!(matches!(
            decide(&limits(), 1, proxy, total(4000, 0), || None),
            Decision::Admit { evict: None, .. }
        ));
        // At the total with nothing to close, it waits, however much of it it holds.
        assert_eq!(
            decide(&limits(), 1, proxy, total(4096, 0), || None),
            Decision::Wait
        );
        assert!(matches!(
            decide(&limits(), 1, proxy, total(4096, 0), || Some(1)),
            Decision::Admit { evict: Some(1), .. }
        ));
    }

    #[test]
    fn the_busiest_source_with_a_stalled_handshake_gives_way() {
        type Case = (&'static str, Vec<(u8, SourceLoad)>, Option<u8>);
        let cases: [Case; 6] = [
            ("nobody", vec![], None),
            (
                "only young handshakes",
                vec![(1, source(300, Some(999))), (2, source(5, Some(10)))],
                None,
            ),
            (
                "the busiest",
                vec![
                    (1, source(100, Some(2_000))),
                    (2, source(256, Some(1_000))),
                    (3, source(200, Some(9_000))),
                ],
                Some(2),
            ),
            (
                "the busiest has none stalled",
                vec![
                    (1, source(256, Some(500))),
                    (2, source(255, None)),
                    (3, source(3, Some(1_200))),
                ],
                Some(3),
            ),
            (
                "as many: the older handshake",
                vec![(1, source(256, Some(1_500))), (2, source(256, Some(4_000)))],
                Some(2),
            ),
            (
                "a lone device elsewhere",
                vec![(1, source(1, Some(1_000))), (2, source(256, Some(1_001)))],
                Some(2),
            ),
        ];
        for (what, sources, expected) in cases {
            assert_eq!(busiest_stalled(sources, SECOND), expected, "{what}");
        }
    }

    #[test]
    fn handshakes_get_less_time_as_the_total_fills() {
        let cases = [
            // (open, total, time-out in ms)
            (0, 4096, 10_000),
            (2048, 4096, 10_000),
            (2049, 4096, 9_996),
            (3072, 4096, 6_000),
            (4096, 4096, 2_000),
            (5000, 4096, 2_000),
            (0, 1, 10_000),
            (1, 1, 2_000),
            (0, 0, 10_000),
        ];
        for (open, total, ms) in cases {
            assert_eq!(
                handshake_timeout(open, total),
                Duration::from_millis(ms),
                "{open} of {total}"
            );
        }
    }

    #[test]
    fn a_source_holds_a_share_of_the_sessions() {
        let cases = [
            // (held by the source, budget, trusted, room)
            (0, 10_000, false, true),
            (624, 10_000, false, true),
            (625, 10_000, false, false),
            (9_999, 10_000, true, true),
            (0, 1, false, true),
            (1, 1, false, false),
            (1, 32, false, true),
            (2, 32, false, false),
        ];
        for (held, max, trusted, room) in cases {
            assert_eq!(
                session_room(held, max, trusted),
                room,
                "{held} of {max}, trusted {trusted}"
            );
        }
    }
}
