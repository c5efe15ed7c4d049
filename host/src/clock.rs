//! Wall-clock time for the host and for plugins (the `keel:platform/clock` interface).
//!
//! Everything time-based (schedules, retries, leases, token expiry, session length, sign-in
//! lockout, rate limits, audit timestamps) reads one [`Clock`] rather than the system clock,
//! so tests move time forward instead of sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch from the system clock.
pub fn system_now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The system clock (or a fixed reading) plus an offset that can only move forward.
#[derive(Debug, Default)]
pub struct Clock {
    /// `Some` for a frozen clock: time moves only when advanced.
    frozen_at: Option<i64>,
    offset_ms: AtomicI64,
}

impl Clock {
    /// A clock that stands still at `at_ms` until advanced (tests of exact time bounds).
    pub fn frozen(at_ms: i64) -> Clock {
        Clock { frozen_at: Some(at_ms), offset_ms: AtomicI64::new(0) }
    }

    pub fn now_ms(&self) -> i64 {
        self.frozen_at.unwrap_or_else(system_now_ms).saturating_add(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves time forward by `ms` (tests and the admin "advance clock" operation).
    pub fn advance(&self, ms: u64) {
        self.offset_ms.fetch_add(i64::try_from(ms).unwrap_or(i64::MAX / 2), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_now_forward_by_at_least_the_amount() {
        let clock = Clock::default();
        let before = clock.now_ms();
        clock.advance(3_600_000);
        assert!(clock.now_ms() >= before + 3_600_000);
    }

    #[test]
    fn a_frozen_clock_moves_only_when_advanced() {
        let clock = Clock::frozen(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        clock.advance(250);
        assert_eq!(clock.now_ms(), 1_250);
    }
}
