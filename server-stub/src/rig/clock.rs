//! The server's notion of now. A normal server reads the system clock; in test-rig mode the same
//! clock can be moved forward (key and token expiry, renewal windows, grace periods) without
//! sleeping. Every clone reads the same offset.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use time::OffsetDateTime;

/// The system clock plus an offset a rig may move forward.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Nanoseconds added to the system clock.
    offset: Arc<AtomicI64>,
}

impl Clock {
    /// The system clock, unmoved.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// Now, as this server sees it.
    pub fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + self.offset()
    }

    /// How far the clock has been moved.
    pub fn offset(&self) -> time::Duration {
        time::Duration::nanoseconds(self.offset.load(Ordering::Relaxed))
    }

    /// Moves the clock forward by `by` (a negative `by` is refused: time on a server does not run
    /// back). Returns the new offset.
    pub fn advance(&self, by: time::Duration) -> Result<time::Duration, NegativeAdvance> {
        if by.is_negative() {
            return Err(NegativeAdvance);
        }
        let by = i64::try_from(by.whole_nanoseconds()).map_err(|_| NegativeAdvance)?;
        let before = self.offset.fetch_add(by, Ordering::Relaxed);
        Ok(time::Duration::nanoseconds(before.saturating_add(by)))
    }

    /// Puts the clock back on the system clock.
    pub fn reset(&self) {
        self.offset.store(0, Ordering::Relaxed);
    }
}

/// A clock move backwards, or too far to count in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the clock only moves forward, by less than 292 years")]
pub struct NegativeAdvance;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_clock_reads_ahead_in_every_clone() {
        let clock = Clock::system();
        let other = clock.clone();
        clock.advance(time::Duration::days(400)).unwrap();
        let ahead = other.now() - OffsetDateTime::now_utc();
        assert!(ahead >= time::Duration::days(400) - time::Duration::seconds(5));
        assert!(ahead <= time::Duration::days(400) + time::Duration::seconds(5));
        assert_eq!(
            clock.advance(time::Duration::seconds(-1)),
            Err(NegativeAdvance)
        );
        clock.reset();
        assert_eq!(other.offset(), time::Duration::ZERO);
    }
}
