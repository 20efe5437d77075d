//! Limits on guessing keys, per source and per unit ID.
//!
//! Only **guesses** count: an enrollment whose credentials are malformed or whose key no key has.
//! The refusals devices meet in a normal rollout (`key_used` when devices share a stick,
//! `key_inactive`, `key_bound_to_other_device`, `unit_id_conflict`) are not guesses: the device
//! holds a real key. Once a source or a unit ID has made `max` guesses in a window, further guesses
//! from it are answered `429` with `Retry-After` until the window ends, before any write is made.
//! A request with a real key is never refused by these limits, whoever else shares its address or
//! names its unit ID: a site behind one NAT, or a device whose MAC a stranger knows, cannot be
//! locked out by someone else's junk.
//!
//! What makes guessing hopeless is the keys' 17 random digits (10^17 values); the limits keep a
//! guesser from costing the server writes and from crowding the audit log, and tell a misconfigured
//! client to back off. The per-source connection caps of `serve` bound how many guesses one address
//! can have in flight.
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
const GENERATION: usize = 65_536;

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

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    guesses: u32,
}

/// Guess counts in the current window, by key, in two bounded generations.
#[derive(Debug)]
struct Counter<K> {
    generations: Mutex<[HashMap<K, Window>; 2]>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone> Counter<K> {
    fn new(capacity: usize) -> Self {
        Self {
            generations: Mutex::new([HashMap::new(), HashMap::new()]),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [HashMap<K, Window>; 2]> {
        self.generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn blocked_for(&self, key: &K, max: u32, window: Duration, now: Instant) -> Option<Duration> {
        let generations = self.lock();
        let entry = generations[0]
            .get(key)
            .or_else(|| generations[1].get(key))?;
        let ends = entry.started + window;
        (entry.guesses >= max && now < ends).then(|| ends - now)
    }

    fn guess(&self, key: &K, window: Duration, now: Instant) {
        let mut generations = self.lock();
        let [current, previous] = &mut *generations;
        let mut entry = match current.get(key) {
            Some(entry) => *entry,
            // Carried over from the older generation so a swap does not reset a window.
            None => previous.remove(key).unwrap_or(Window {
                started: now,
                guesses: 0,
            }),
        };
        if now >= entry.started + window {
            entry = Window {
                started: now,
                guesses: 0,
            };
        }
        entry.guesses = entry.guesses.saturating_add(1);
        if !current.contains_key(key) && current.len() >= self.capacity {
            // O(1): the older generation goes, the full one becomes the older.
            *previous = std::mem::take(current);
        }
        current.insert(key.clone(), entry);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let generations = self.lock();
        generations[0].len() + generations[1].len()
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

    /// How long a guess from `source` (for `unit_id`, when known) must wait, if the source's
    /// group or the unit ID has used up its guesses now. A request is held to this only when its
    /// key turns out to be unknown: a real key always goes through.
    pub fn blocked_for(
        &self,
        source: IpAddr,
        unit_id: Option<&str>,
        now: Instant,
    ) -> Option<Duration> {
        let by_source = self.sources.blocked_for(
            &source_group(source),
            self.limits.per_source,
            self.limits.window,
            now,
        );
        let by_unit = unit_id.and_then(|unit| {
            self.units.blocked_for(
                &unit.to_owned(),
                self.limits.per_unit,
                self.limits.window,
                now,
            )
        });
        by_source.max(by_unit)
    }

    /// Counts a guess: malformed credentials, or a key no key has.
    pub fn guessed(&self, source: IpAddr, unit_id: Option<&str>, now: Instant) {
        self.sources
            .guess(&source_group(source), self.limits.window, now);
        if let Some(unit) = unit_id {
            self.units.guess(&unit.to_owned(), self.limits.window, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn blocks_a_source_after_max_guesses_until_the_window_ends() {
        let limiter = RateLimiter::new(Limits {
            per_source: 3,
            per_unit: 100,
            window: Duration::from_secs(60),
        });
        let start = Instant::now();
        for i in 0..3 {
            assert_eq!(limiter.blocked_for(A, None, start), None, "attempt {i}");
            limiter.guessed(A, Some(&format!("unit{i}")), start);
        }
        let later = start + Duration::from_secs(20);
        assert_eq!(
            limiter.blocked_for(A, Some("fresh"), later),
            Some(Duration::from_secs(40))
        );
        assert_eq!(
            limiter.blocked_for(B, None, later),
            None,
            "other sources are not slowed"
        );
        assert_eq!(
            limiter.blocked_for(A, None, start + Duration::from_secs(60)),
            None,
            "the window ended"
        );
    }

    #[test]
    fn blocks_a_unit_id_from_any_source() {
        let limiter = RateLimiter::new(Limits {
            per_source: 100,
            per_unit: 2,
            window: Duration::from_secs(10),
        });
        let now = Instant::now();
        limiter.guessed(A, Some("00E0C5540B8B"), now);
        limiter.guessed(B, Some("00E0C5540B8B"), now);
        assert!(limiter.blocked_for(B, Some("00E0C5540B8B"), now).is_some());
        assert!(limiter.blocked_for(B, Some("00E0C5540B8C"), now).is_none());
    }

    #[test]
    fn ipv6_sources_count_by_their_64_prefix() {
        let limiter = RateLimiter::new(Limits {
            per_source: 2,
            per_unit: 100,
            window: Duration::from_secs(60),
        });
        let now = Instant::now();
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_site: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_site: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        limiter.guessed(one, None, now);
        limiter.guessed(same_site, None, now);
        assert!(limiter.blocked_for(one, None, now).is_some());
        assert!(
            limiter
                .blocked_for("2001:db8:1:2::77".parse().unwrap(), None, now)
                .is_some()
        );
        assert!(limiter.blocked_for(other_site, None, now).is_none());
        // An IPv4 address mapped into IPv6 is that IPv4 address.
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        limiter.guessed(A, None, now);
        limiter.guessed(A, None, now);
        assert!(limiter.blocked_for(mapped, None, now).is_some());
    }

    #[test]
    fn memory_stays_bounded_and_a_window_survives_a_generation_swap() {
        let limiter = RateLimiter::with_capacity(
            Limits {
                per_source: 2,
                per_unit: 100,
                window: Duration::from_secs(60),
            },
            100,
        );
        let now = Instant::now();
        limiter.guessed(A, None, now);
        limiter.guessed(A, None, now);
        // A flood of sources, each guessing once: the maps never hold more than two generations.
        for n in 0..10_000u32 {
            let source = IpAddr::V4(std::net::Ipv4Addr::from(0x0A00_0000 + n));
            limiter.guessed(source, None, now);
            assert!(limiter.sources.len() <= 200, "{}", limiter.sources.len());
        }
        // A blocked source that keeps guessing stays in the newest generation, still blocked.
        let limiter = RateLimiter::with_capacity(
            Limits {
                per_source: 2,
                per_unit: 100,
                window: Duration::from_secs(60),
            },
            100,
        );
        limiter.guessed(A, None, now);
        for n in 0..10_000u32 {
            limiter.guessed(A, None, now);
            let source = IpAddr::V4(std::net::Ipv4Addr::from(0x0A00_0000 + n));
            limiter.guessed(source, None, now);
            assert!(limiter.blocked_for(A, None, now).is_some(), "round {n}");
        }
    }
}
