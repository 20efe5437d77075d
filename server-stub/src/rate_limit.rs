//! Limits on guessing keys, per source and per unit ID.
//!
//! Only **guesses** count: an enrollment whose credentials are malformed or whose key no key has.
//! The refusals devices meet in a normal rollout (`key_used` when devices share a stick,
//! `key_inactive`, `key_bound_to_other_device`, `unit_id_conflict`) are not guesses: the device
//! holds a real key.
//!
//! A request **reserves** one guess for each key it presents before anything is looked up
//! ([`RateLimiter::admit`]), and the reservation is refunded for each key that turns out to be
//! real ([`Reservation::settle`]). So requests in flight together cannot all pass the check before
//! any of them is counted: however many arrive at once, no more keys are tested than the budget.
//! A request with more keys than the budget has left may try as many as it has left.
//!
//! Once a source or a unit ID has used up its budget in a window, its requests are **limited**
//! until the window ends: the HTTP layer then looks only at the Basic key and lets it through only
//! if it is a random one-time or device-bound key ([`passes_when_limited`]) (17 random digits: not guessable), so a site
//! behind one NAT is not locked out by a neighbour's junk. A mass-deployment key is refused like
//! any guess, with the same answer as an unknown key: its value may have been typed, and a
//! dictionary must not go on being tested against it.
//!
//! The per-source connection caps of `serve` bound how many requests one address can have in
//! flight.
//!
//! A source is an IPv4 address or an IPv6 /64 (one site's prefix). Counters live in two
//! generations of bounded maps: each failure is O(1) work, memory is bounded however many
//! addresses a flood cycles through, and a window outlives a generation swap. Time is passed in,
//! so the policy is tested without waiting.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use onboard_protocol::KeyKind;

/// Limits on guesses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Guesses one source (address, or IPv6 /64) may make per window.
    pub per_source: u32,
    /// Guesses one unit ID may see per window, from anywhere.
    pub per_unit: u32,
    /// The window.
    pub window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_source: 30,
            per_unit: 10,
            window: Duration::from_secs(60),
        }
    }
}

/// The most sources (and, apart, unit IDs) one generation holds before the older generation is
/// dropped: two generations bound the memory at about 2 × 65,536 entries of each.
pub(crate) const GENERATION: usize = 65_536;

/// The groups sources are counted by: IPv4 addresses whole, IPv6 by their /64 (an IPv4-mapped
/// IPv6 address as the IPv4 address it maps).
pub fn source_group(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let segments = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(
                    segments[0],
                    segments[1],
                    segments[2],
                    segments[3],
                    0,
                    0,
                    0,
                    0,
                ))
            }
        },
    }
}

/// One key's count in its current window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    /// When the window started.
    pub(crate) started: Instant,
    /// Guesses (or failures) counted in it.
    pub(crate) guesses: u32,
    /// Whether a request was already refused in this window (the first refusal is audited).
    pub(crate) refused: bool,
}

impl Window {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            started: now,
            guesses: 0,
            refused: false,
        }
    }
}

pub(crate) type Generations<K> = [HashMap<K, Window>; 2];

/// Counts in the current window, by key, in two bounded generations.
#[derive(Debug)]
pub(crate) struct Counter<K> {
    generations: Mutex<Generations<K>>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone> Counter<K> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            generations: Mutex::new([HashMap::new(), HashMap::new()]),
            capacity,
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Generations<K>> {
        self.generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The window of `key` now, without changing anything: a new one when none runs.
    pub(crate) fn peek(
        generations: &Generations<K>,
        key: &K,
        window: Duration,
        now: Instant,
    ) -> Window {
        match generations[0].get(key).or_else(|| generations[1].get(key)) {
            Some(entry) if now < entry.started + window => *entry,
            _ => Window::new(now),
        }
    }

    /// Stores `entry` as the window of `key`, in the newest generation.
    pub(crate) fn put(&self, generations: &mut Generations<K>, key: &K, entry: Window) {
        let [current, previous] = generations;
        previous.remove(key);
        if !current.contains_key(key) && current.len() >= self.capacity {
            // O(1): the older generation goes, the full one becomes the older.
            *previous = std::mem::take(current);
        }
        current.insert(key.clone(), entry);
    }

    /// Gives back `guesses` reserved in the window that started at `started`; nothing if that
    /// window has ended since.
    pub(crate) fn refund(&self, key: &K, started: Instant, guesses: u32) {
        let mut generations = self.lock();
        for generation in generations.iter_mut() {
            if let Some(entry) = generation.get_mut(key)
                && entry.started == started
            {
                entry.guesses = entry.guesses.saturating_sub(guesses);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let generations = self.lock();
        generations[0].len() + generations[1].len()
    }
}

/// What a request may do, from [`RateLimiter::admit`].
#[derive(Debug)]
pub enum Admission {
    /// Guesses were reserved: the request may try as many of its keys, in order
    /// ([`Reservation::keys`]).
    Reserved(Reservation),
    /// The source or the unit ID has used up its guesses for this window.
    Limited {
        /// Until its window ends.
        wait: Duration,
        /// Whether this is the first request refused in that window: the one that is audited and
        /// logged, so that a flood of refusals is neither a flood of writes nor of log lines.
        first: bool,
    },
}

/// Guesses reserved for one request, to be refunded for each key that turns out to be real.
#[derive(Debug)]
#[must_use = "a reservation is refunded for the keys that are real"]
pub struct Reservation {
    keys: u32,
    source: (IpAddr, Instant),
    unit: Option<(String, Instant)>,
}

impl Reservation {
    /// How many of the request's keys may be tried: the first ones, in its order.
    pub fn keys(&self) -> usize {
        self.keys as usize
    }

    /// Settles the reservation once the request knows how many of its tried keys were
    /// `guesses` (unknown to the store): those stay counted, the rest are given back. Taken by
    /// value, so a reservation is settled once.
    pub fn settle(self, limiter: &RateLimiter, guesses: usize) {
        let guesses = u32::try_from(guesses).unwrap_or(u32::MAX);
        let real = self.keys.saturating_sub(guesses);
        if real == 0 {
            return;
        }
        limiter.sources.refund(&self.source.0, self.source.1, real);
        if let Some((unit, started)) = &self.unit {
            limiter.units.refund(unit, *started, real);
        }
    }
}

/// Whether a request that is limited may still try its (Basic) key, given the key's type (`None`:
/// no key has that value). Only a random one-time or device-bound key passes: 17 random digits
/// cannot be guessed, so a fleet behind one address is not locked out by a neighbour. A
/// mass-deployment key may have been typed, and an unknown key is a guess: both are refused alike.
pub fn passes_when_limited(kind: Option<KeyKind>) -> bool {
    matches!(kind, Some(KeyKind::OneTime | KeyKind::DeviceBound))
}

/// The guess counters of one server.
#[derive(Debug)]
pub struct RateLimiter {
    limits: Limits,
    sources: Counter<IpAddr>,
    units: Counter<String>,
}

impl RateLimiter {
    /// A limiter with `limits`.
    pub fn new(limits: Limits) -> Self {
        Self::with_capacity(limits, GENERATION)
    }

    fn with_capacity(limits: Limits, capacity: usize) -> Self {
        Self {
            limits,
            sources: Counter::new(capacity),
            units: Counter::new(capacity),
        }
    }

    /// Reserves one guess for each of a request's `keys` (at least one) from `source` (for
    /// `unit_id`, when known), as many as both budgets have left; or says the request is limited
    /// when either has none left. The check and the reservation are one step: requests in flight
    /// together never test more keys than the budget.
    pub fn admit(
        &self,
        source: IpAddr,
        unit_id: Option<&str>,
        keys: usize,
        now: Instant,
    ) -> Admission {
        let window = self.limits.window;
        let group = source_group(source);
        let unit = unit_id.map(str::to_owned);
        // Sources before units, always: one order of locks.
        let mut sources = self.sources.lock();
        let mut units = self.units.lock();
        let mut by_source = Counter::peek(&sources, &group, window, now);
        let mut by_unit = unit
            .as_ref()
            .map(|unit| Counter::peek(&units, unit, window, now));
        let left = |entry: &Window, max: u32| max.saturating_sub(entry.guesses);
        let mut granted = left(&by_source, self.limits.per_source)
            .min(u32::try_from(keys.max(1)).unwrap_or(u32::MAX));
        if let Some(entry) = &by_unit {
            granted = granted.min(left(entry, self.limits.per_unit));
        }
        if granted == 0 {
            let mut wait = Duration::ZERO;
            let mut first = false;
            if left(&by_source, self.limits.per_source) == 0 {
                wait = wait.max(by_source.started + window - now);
                first |= !by_source.refused;
                by_source.refused = true;
                self.sources.put(&mut sources, &group, by_source);
            }
            if let (Some(unit), Some(mut entry)) = (&unit, by_unit)
                && left(&entry, self.limits.per_unit) == 0
            {
                wait = wait.max(entry.started + window - now);
                first |= !entry.refused;
                entry.refused = true;
                self.units.put(&mut units, unit, entry);
            }
            return Admission::Limited { wait, first };
        }
        by_source.guesses += granted;
        self.sources.put(&mut sources, &group, by_source);
        let unit = match (unit, by_unit.as_mut()) {
            (Some(unit), Some(entry)) => {
                entry.guesses += granted;
                self.units.put(&mut units, &unit, *entry);
                Some((unit, entry.started))
            }
            _ => None,
        };
        Admission::Reserved(Reservation {
            keys: granted,
            source: (group, by_source.started),
            unit,
        })
    }

    /// Counts a guess that was not reserved: a key the store stopped knowing between the look-up
    /// and the enrollment.
    pub fn guessed(&self, source: IpAddr, unit_id: Option<&str>, now: Instant) {
        let window = self.limits.window;
        let group = source_group(source);
        let mut sources = self.sources.lock();
        let mut entry = Counter::peek(&sources, &group, window, now);
        entry.guesses = entry.guesses.saturating_add(1);
        self.sources.put(&mut sources, &group, entry);
        drop(sources);
        if let Some(unit) = unit_id.map(str::to_owned) {
            let mut units = self.units.lock();
            let mut entry = Counter::peek(&units, &unit, window, now);
            entry.guesses = entry.guesses.saturating_add(1);
            self.units.put(&mut units, &unit, entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn limits(per_source: u32, per_unit: u32, window: u64) -> Limits {
        Limits {
            per_source,
            per_unit,
            window: Duration::from_secs(window),
        }
    }

    /// How many keys `admit` lets a request of `keys` keys try; `None` when it is limited.
    fn granted(
        limiter: &RateLimiter,
        source: IpAddr,
        unit: Option<&str>,
        keys: usize,
        now: Instant,
    ) -> Option<usize> {
        match limiter.admit(source, unit, keys, now) {
            Admission::Reserved(reservation) => Some(reservation.keys()),
            Admission::Limited { .. } => None,
        }
    }

    fn limited(admission: Admission) -> (Duration, bool) {
        match admission {
            Admission::Limited { wait, first } => (wait, first),
            Admission::Reserved(reservation) => panic!("reserved {}", reservation.keys()),
        }
    }

    #[test]
    fn limits_a_source_after_max_guesses_until_the_window_ends() {
        let limiter = RateLimiter::new(limits(3, 100, 60));
        let start = Instant::now();
        for i in 0..3 {
            let unit = format!("unit{i}");
            assert_eq!(granted(&limiter, A, Some(&unit), 1, start), Some(1), "{i}");
        }
        let later = start + Duration::from_secs(20);
        let (wait, first) = limited(limiter.admit(A, Some("fresh"), 1, later));
        assert_eq!((wait, first), (Duration::from_secs(40), true));
        // Only the first refusal of the window is the one to audit.
        let (_, first) = limited(limiter.admit(A, None, 1, later));
        assert!(!first);
        assert_eq!(
            granted(&limiter, B, None, 1, later),
            Some(1),
            "other sources are not slowed"
        );
        assert_eq!(
            granted(&limiter, A, None, 1, start + Duration::from_secs(60)),
            Some(1),
            "the window ended"
        );
    }

    #[test]
    fn limits_a_unit_id_from_any_source() {
        let limiter = RateLimiter::new(limits(100, 2, 10));
        let now = Instant::now();
        assert_eq!(granted(&limiter, A, Some("00E0C5540B8B"), 1, now), Some(1));
        assert_eq!(granted(&limiter, B, Some("00E0C5540B8B"), 1, now), Some(1));
        assert_eq!(granted(&limiter, B, Some("00E0C5540B8B"), 1, now), None);
        assert_eq!(granted(&limiter, B, Some("00E0C5540B8C"), 1, now), Some(1));
    }

    #[test]
    fn a_request_reserves_one_guess_a_key_and_never_more_than_is_left() {
        // (budget of the source, budget of the unit, keys of each request in turn) -> granted.
        type Row<'a> = (u32, u32, &'a [usize], &'a [Option<usize>]);
        let table: &[Row<'_>] = &[
            (
                30,
                100,
                &[8, 8, 8, 8, 8],
                &[Some(8), Some(8), Some(8), Some(6), None],
            ),
            (30, 10, &[8, 8, 8], &[Some(8), Some(2), None]),
            (
                5,
                100,
                &[1, 1, 1, 1, 1, 1],
                &[Some(1), Some(1), Some(1), Some(1), Some(1), None],
            ),
            // A request of no keys (malformed) still spends one.
            (2, 100, &[0, 0, 0], &[Some(1), Some(1), None]),
        ];
        for (per_source, per_unit, requests, expected) in table {
            let limiter = RateLimiter::new(limits(*per_source, *per_unit, 60));
            let now = Instant::now();
            let got: Vec<Option<usize>> = requests
                .iter()
                .map(|keys| granted(&limiter, A, Some("00E0C5540B8B"), *keys, now))
                .collect();
            assert_eq!(&got, expected, "{per_source} {per_unit} {requests:?}");
        }
    }

    #[test]
    fn real_keys_are_refunded_within_their_window_only() {
        let limiter = RateLimiter::new(limits(8, 8, 60));
        let start = Instant::now();
        let Admission::Reserved(reservation) = limiter.admit(A, Some("unit"), 8, start) else {
            panic!("limited");
        };
        assert_eq!(granted(&limiter, A, None, 1, start), None);
        // Seven of the eight were real keys: seven guesses come back, to the source and the unit.
        reservation.settle(&limiter, 1);
        assert_eq!(granted(&limiter, A, Some("unit"), 8, start), Some(7));
        // A refund after the window ended gives nothing to the new window.
        let Admission::Reserved(late) = limiter.admit(B, None, 8, start) else {
            panic!("limited");
        };
        let next = start + Duration::from_secs(61);
        assert_eq!(granted(&limiter, B, None, 8, next), Some(8));
        late.settle(&limiter, 0);
        assert_eq!(granted(&limiter, B, None, 1, next), None);
    }

    #[test]
    fn only_random_keys_pass_a_limited_source() {
        let table = [
            (None, false),
            (Some(KeyKind::MassDeployment), false),
            (Some(KeyKind::OneTime), true),
            (Some(KeyKind::DeviceBound), true),
        ];
        for (kind, passes) in table {
            assert_eq!(passes_when_limited(kind), passes, "{kind:?}");
        }
    }

    #[test]
    fn ipv6_sources_count_by_their_64_prefix() {
        let limiter = RateLimiter::new(limits(2, 100, 60));
        let now = Instant::now();
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_site: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_site: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(granted(&limiter, one, None, 1, now).is_some());
        assert!(granted(&limiter, same_site, None, 1, now).is_some());
        assert_eq!(granted(&limiter, one, None, 1, now), None);
        let neighbour: IpAddr = "2001:db8:1:2::77".parse().unwrap();
        assert_eq!(granted(&limiter, neighbour, None, 1, now), None);
        assert!(granted(&limiter, other_site, None, 1, now).is_some());
        // An IPv4 address mapped into IPv6 is that IPv4 address.
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        limiter.guessed(A, None, now);
        limiter.guessed(A, None, now);
        assert_eq!(granted(&limiter, mapped, None, 1, now), None);
    }

    #[test]
    fn memory_stays_bounded_and_a_window_survives_a_generation_swap() {
        let limiter = RateLimiter::with_capacity(limits(2, 100, 60), 100);
        let now = Instant::now();
        limiter.guessed(A, None, now);
        limiter.guessed(A, None, now);
        // A flood of sources, each guessing once: the maps never hold more than two generations.
        for n in 0..10_000u32 {
            let source = IpAddr::V4(std::net::Ipv4Addr::from(0x0A00_0000 + n));
            let _ = limiter.admit(source, None, 1, now);
            assert!(limiter.sources.len() <= 200, "{}", limiter.sources.len());
        }
        // A limited source that keeps trying stays in the newest generation, still limited.
        let limiter = RateLimiter::with_capacity(limits(2, 100, 60), 100);
        limiter.guessed(A, None, now);
        for n in 0..10_000u32 {
            let _ = limiter.admit(A, None, 1, now);
            let source = IpAddr::V4(std::net::Ipv4Addr::from(0x0A00_0000 + n));
            let _ = limiter.admit(source, None, 1, now);
            assert_eq!(granted(&limiter, A, None, 1, now), None, "round {n}");
        }
    }
}
