//! The device clock, injectable, and whether it can be believed; and the jitter of waits.
//!
//! Thin clients often boot with no battery-backed clock and start in 1970 until NTP answers.
//! Certificate validity periods are judged only when the clock is *plausible*: not before the
//! agent's own build time (recorded by `build.rs`, or `SOURCE_DATE_EPOCH`). Everything else
//! (signatures, the pin) is checked regardless of the clock.

use std::fmt;
use std::sync::Arc;

use time::OffsetDateTime;

/// When this agent was built (UTC): no honest clock reads earlier.
pub fn build_time() -> OffsetDateTime {
    let seconds: i64 = env!("ONBOARD_AGENT_BUILD_TIME").parse().unwrap_or(0);
    OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now, as the device believes.
    fn now(&self) -> OffsetDateTime;

    /// Whether [`Clock::now`] can be used to judge validity periods.
    fn is_plausible(&self) -> bool {
        self.now() >= build_time()
    }
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock stopped at one instant (tests; a device whose clock says 1970).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub OffsetDateTime);

impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        self.0
    }
}

/// A shared clock.
pub type SharedClock = Arc<dyn Clock>;

/// The system clock, shared.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A jitter draw in `[0, 1]` from the OS CSPRNG (`0.5` when it cannot be read), so that a fleet
/// that failed together does not retry together.
pub fn jitter() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_time_is_recorded_and_1970_is_not_plausible() {
        assert!(build_time() > OffsetDateTime::from_unix_timestamp(1_600_000_000).unwrap());
        assert!(!FixedClock(OffsetDateTime::UNIX_EPOCH).is_plausible());
        assert!(SystemClock.is_plausible());
        assert!(FixedClock(build_time()).is_plausible());
    }
}
