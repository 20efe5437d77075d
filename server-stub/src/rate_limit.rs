//! Limits on guessing keys, per source and per unit ID.
//!
//! Only **guesses** count: an enrollment whose credentials are malformed or whose key no key has.
//! The refusals devices meet in a normal rollout (`key_used` when devices share a stick,
//! `key_inactive`, `key_bound_to_other_device`, `key_expired`, `key_not_yet_valid`,
//! `key_exhausted`, `unit_id_conflict`) are not guesses: the device holds a real key.
//!
//! A request **reserves** one guess for each key it presents before anything is looked up
//! ([`RateLimiter::admit`]), and the reservation is refunded for each key that turns out to be
//! real ([`Reservation::settle`]). So requests in flight together cannot all pass the check before
//! any of them is counted: however many arrive at once, no more keys are tested than the budget.
//! A request with more keys than the budget has left may try as many as it has left.
//!
//! Once a source or a unit ID has used up its budget in a window, its requests are **limited**
//! until the window ends: then only the Basic key is looked at, and it goes through only if it is
//! a random one-time or device-bound key ([`passes_when_limited`]; 17 random digits are not
//! guessable), so a site behind one NAT is not locked out by a neighbour's junk. A mass-deployment key is refused like
//! any guess, with the same answer as an unknown key: its value may have been typed, and a
//! dictionary must not go on being tested against it.
//!
//! The per-source connection caps of `serve` bound how many requests one address can have in
//! flight.
//!
//! The budget rule is [`decide`], a pure function of the two windows; [`RateLimiter`] keeps the
//! windows and applies it. Which keys of a request are then tried, and what is answered for the
//! others, is [`crate::key_admission`].
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

/// What [`decide`] says of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// This many of its keys may be tried, the first ones (at least one): a guess reserved for
    /// each, from both budgets.
    Grant(u32),
    /// Limited: a budget has no guess left.
    Limit {
        /// Until the later of the used-up windows ends.
        wait: Duration,
        /// Whether no request was refused yet in a used-up window (the refusal to audit).
        first: bool,
        /// The source's budget is used up (its window is marked refused).
        source: bool,
        /// The unit ID's budget is used up (its window is marked refused).
        unit: bool,
    },
}

/// The rule: how many of a request's `keys` may be tried, given the windows of its source and of
/// its unit ID (when known) now. As many as both budgets have left, at most the keys, and at
/// least one for a request of none (a malformed request is a guess too); none left in either
/// budget limits the request until that window ends.
pub(crate) fn decide(
    source: &Window,
    unit: Option<&Window>,
    keys: usize,
    limits: &Limits,
    now: Instant,
) -> Verdict {
    let left = |entry: &Window, max: u32| max.saturating_sub(entry.guesses);
    let source_left = left(source, limits.per_source);
    let unit_left = unit.map(|entry| left(entry, limits.per_unit));
    let wanted = u32::try_from(keys.max(1)).unwrap_or(u32::MAX);
    let granted = source_left.min(wanted).min(unit_left.unwrap_or(u32::MAX));
    if granted > 0 {
        return Verdict::Grant(granted);
    }
    let ends = |entry: &Window| (entry.started + limits.window).saturating_duration_since(now);
    let source_spent = source_left == 0;
    let unit_spent = unit_left == Some(0);
    let mut wait = Duration::ZERO;
    let mut first = false;
    if source_spent {
        wait = wait.max(ends(source));
        first |= !source.refused;
    }
    if let (true, Some(entry)) = (unit_spent, unit) {
        wait = wait.max(ends(entry));
        first |= !entry.refused;
    }
    Verdict::Limit {
        wait,
        first,
        source: source_spent,
        unit: unit_spent,
    }
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
    /// when either has none left ([`decide`]). The check and the reservation are one step:
    /// requests in flight together never test more keys than the budget.
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
        match decide(&by_source, by_unit.as_ref(), keys, &self.limits, now) {
            Verdict::Limit {
                wait,
                first,
                source: source_spent,
                unit: unit_spent,
            } => {
                if source_spent {
                    by_source.refused = true;
                    self.sources.put(&mut sources, &group, by_source);
                }
                if let (true, Some(unit), Some(mut entry)) = (unit_spent, &unit, by_unit) {
                    entry.refused = true;
                    self.units.put(&mut units, unit, entry);
                }
                Admission::Limited { wait, first }
            }
            Verdict::Grant(granted) => {
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
        }
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
    fn the_rule_grants_what_both_budgets_have_left_or_limits_until_a_window_ends() {
        let limits = limits(5, 3, 60);
        let start = Instant::now();
        // Later than any window's start the table names.
        let now = start + Duration::from_secs(100);
        let window = |guesses: u32, refused: bool, age: u64| Window {
            started: now - Duration::from_secs(age),
            guesses,
            refused,
        };
        let grant = Verdict::Grant;
        let limit = |wait: u64, first: bool, source: bool, unit: bool| Verdict::Limit {
            wait: Duration::from_secs(wait),
            first,
            source,
            unit,
        };
        // (source window, unit window, keys) -> verdict.
        type Row = (Window, Option<Window>, usize, Verdict);
        #[rustfmt::skip]
        let table: &[Row] = &[
            // Fresh budgets: every key, the one of a malformed request (no key) counted too.
            (window(0, false, 0), None, 4, grant(4)),
            (window(0, false, 0), None, 0, grant(1)),
            (window(0, false, 0), Some(window(0, false, 0)), 8, grant(3)),
            // As many as the smaller budget has left.
            (window(3, false, 10), None, 8, grant(2)),
            (window(3, false, 10), Some(window(2, false, 10)), 8, grant(1)),
            // The source used up: limited until its window ends; its first refusal is the one
            // to audit.
            (window(5, false, 15), None, 1, limit(45, true, true, false)),
            (window(5, true, 15), None, 1, limit(45, false, true, false)),
            (window(7, true, 15), Some(window(0, false, 0)), 1, limit(45, false, true, false)),
            // The unit ID used up, from a fresh source: limited as long as the unit's window runs.
            (window(0, false, 0), Some(window(3, false, 50)), 2, limit(10, true, false, true)),
            (window(0, false, 0), Some(window(3, true, 50)), 2, limit(10, false, false, true)),
            // Both used up: the later window, first if either was not refused yet.
            (window(5, true, 55), Some(window(3, false, 30)), 1, limit(30, true, true, true)),
            (window(5, true, 5), Some(window(3, true, 30)), 1, limit(55, false, true, true)),
        ];
        for (row, (source, unit, keys, verdict)) in table.iter().enumerate() {
            assert_eq!(
                decide(source, unit.as_ref(), *keys, &limits, now),
                *verdict,
                "row {row}"
            );
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
