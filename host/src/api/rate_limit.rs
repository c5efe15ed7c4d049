//! Rate limiting: a token bucket per key (a token id; a tenant and client address for public
//! routes), refilled continuously.
//!
//! Refill reads the platform [`Clock`], so tests move time instead of sleeping.

use crate::clock::Clock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct RateLimiter {
    per_minute: i64,
    burst: i64,
    clock: Arc<Clock>,
    /// Sixty-thousandths of a request left, and the clock reading (ms) they were counted at.
    /// Integers, so a refill is exact: `per_minute` of them come back each millisecond.
    buckets: Mutex<HashMap<String, (i64, i64)>>,
}

const MAX_BUCKETS: usize = 100_000;
/// One request, in sixty-thousandths (so a rate per minute refills whole units per ms).
const ONE: i64 = 60_000;

impl RateLimiter {
    /// `per_second == 0` turns limiting off.
    pub fn new(per_second: u32, burst: u32, clock: Arc<Clock>) -> Self {
        RateLimiter::per_minute(per_second.saturating_mul(60), burst, clock)
    }

    /// `per_minute == 0` turns limiting off.
    pub fn per_minute(per_minute: u32, burst: u32, clock: Arc<Clock>) -> Self {
        RateLimiter {
            per_minute: i64::from(per_minute),
            burst: i64::from(burst) * ONE,
            clock,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s bucket, or says how long until one is available.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            // A bucket untouched long enough to be full again is the same as none.
            let refill_ms = (self.burst / self.per_minute).max(1);
            buckets.retain(|_, (_, last)| now - *last < refill_ms);
            if buckets.len() >= MAX_BUCKETS {
                // Full of live buckets (a flood from many keys): a new key waits rather
                // than growing the map without bound.
                return Err(Duration::from_secs(1));
            }
        }
        let (tokens, last) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        // A system clock stepped backwards refills nothing (and counts on from the new
        // reading), rather than draining the bucket or stalling refills until it catches up.
        let elapsed_ms = (now - *last).max(0);
        *tokens = tokens.saturating_add(elapsed_ms.saturating_mul(self.per_minute)).min(self.burst);
        *last = now;
        if *tokens >= ONE {
            *tokens -= ONE;
            Ok(())
        } else {
            let missing = ONE - *tokens;
            Err(Duration::from_millis(((missing + self.per_minute - 1) / self.per_minute) as u64))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_then_refilled() {
        let clock = Arc::new(Clock::frozen(1_000_000));
        let limiter = RateLimiter::new(2, 3, clock.clone());
        for _ in 0..3 {
            assert!(limiter.check("t").is_ok());
        }
        assert_eq!(limiter.check("t").unwrap_err(), Duration::from_millis(500), "2/s: one more in half a second");
        assert!(limiter.check("other").is_ok(), "buckets are per key");
        clock.advance(499);
        assert!(limiter.check("t").is_err(), "not yet refilled at 499 ms");
        clock.advance(1);
        assert!(limiter.check("t").is_ok(), "one token back at 500 ms");
        assert!(limiter.check("t").is_err());
        clock.advance(3_600_000);
        for _ in 0..3 {
            assert!(limiter.check("t").is_ok(), "an idle bucket refills only up to the burst");
        }
        assert!(limiter.check("t").is_err());
    }

    #[test]
    fn a_rate_per_minute_refills_a_request_every_so_many_seconds() {
        let clock = Arc::new(Clock::frozen(0));
        let limiter = RateLimiter::per_minute(6, 2, clock.clone());
        assert!(limiter.check("ip").is_ok() && limiter.check("ip").is_ok());
        assert_eq!(limiter.check("ip").unwrap_err(), Duration::from_secs(10), "6 a minute: one each 10 s");
        clock.advance(10_000);
        assert!(limiter.check("ip").is_ok());
    }

    #[test]
    fn zero_rate_means_unlimited() {
        let limiter = RateLimiter::new(0, 0, Arc::default());
        assert!((0..10_000).all(|_| limiter.check("t").is_ok()));
    }
}
