//! Failed-attempt limits for enrollment, per source address and per unit ID.
//!
//! Only failures count: a device that enrolls is never slowed. Once a source or a unit ID has
//! failed `max` times within a window, further attempts from it are answered `429` with
//! `Retry-After` until the window ends. Thresholds are configurable (a test rig on loopback raises
//! them). Time is passed in, so the policy is tested without waiting.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Limits on failed attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Failures one source address may have per window.
    pub per_source: u32,
    /// Failures one unit ID may have per window.
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

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// Counts of failures in the current window, by key.
#[derive(Debug)]
struct Counter<K> {
    windows: Mutex<HashMap<K, Window>>,
}

impl<K: Eq + Hash + Clone> Counter<K> {
    fn new() -> Self {
        Self {
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn blocked_for(&self, key: &K, max: u32, window: Duration, now: Instant) -> Option<Duration> {
        let windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = windows.get(key)?;
        let ends = entry.started + window;
        (entry.failures >= max && now < ends).then(|| ends - now)
    }

    fn fail(&self, key: &K, window: Duration, now: Instant) {
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if windows.len() > 100_000 {
            // Forget finished windows so an attacker cycling addresses cannot grow the map forever.
            windows.retain(|_, entry| now < entry.started + window);
        }
        let entry = windows.entry(key.clone()).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now >= entry.started + window {
            *entry = Window {
                started: now,
                failures: 0,
            };
        }
        entry.failures = entry.failures.saturating_add(1);
    }
}

/// The failure counters of one server.
#[derive(Debug)]
pub struct RateLimiter {
    limits: Limits,
    sources: Counter<IpAddr>,
    units: Counter<String>,
}

impl RateLimiter {
    /// A limiter with `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            sources: Counter::new(),
            units: Counter::new(),
        }
    }

    /// How long the caller must wait, if the source or the unit ID is blocked now.
    pub fn blocked_for(
        &self,
        source: IpAddr,
        unit_id: Option<&str>,
        now: Instant,
    ) -> Option<Duration> {
        let by_source =
            self.sources
                .blocked_for(&source, self.limits.per_source, self.limits.window, now);
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

    /// Counts a failed attempt.
    pub fn failed(&self, source: IpAddr, unit_id: Option<&str>, now: Instant) {
        self.sources.fail(&source, self.limits.window, now);
        if let Some(unit) = unit_id {
            self.units.fail(&unit.to_owned(), self.limits.window, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn blocks_a_source_after_max_failures_until_the_window_ends() {
        let limiter = RateLimiter::new(Limits {
            per_source: 3,
            per_unit: 100,
            window: Duration::from_secs(60),
        });
        let start = Instant::now();
        for i in 0..3 {
            assert_eq!(limiter.blocked_for(A, None, start), None, "attempt {i}");
            limiter.failed(A, Some(&format!("unit{i}")), start);
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
        limiter.failed(A, Some("00E0C5540B8B"), now);
        limiter.failed(B, Some("00E0C5540B8B"), now);
        assert!(limiter.blocked_for(B, Some("00E0C5540B8B"), now).is_some());
        assert!(limiter.blocked_for(B, Some("00E0C5540B8C"), now).is_none());
    }
}
