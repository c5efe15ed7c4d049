//! Wall-clock time for the host and for plugins (the `keel:platform/clock` interface).
//!
//! Everything time-based reads a [`Clock`] rather than the system clock, so tests can move
//! time forward instead of sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch from the system clock.
pub fn system_now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The system clock plus an offset that can only move forward.
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    pub fn now_ms(&self) -> i64 {
        system_now_ms().saturating_add(self.offset_ms.load(Ordering::Relaxed))
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
}
