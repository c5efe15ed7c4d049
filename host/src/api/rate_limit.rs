//! Per-token rate limiting: a token bucket per token id, refilled continuously.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Buckets untouched this long are full again and can be dropped.
const IDLE: Duration = Duration::from_secs(600);
const MAX_BUCKETS: usize = 100_000;

impl RateLimiter {
    /// `per_second == 0` turns limiting off.
    pub fn new(per_second: u32, burst: u32) -> Self {
        RateLimiter { per_second: f64::from(per_second), burst: f64::from(burst), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one request from `key`'s bucket, or says how long until one is available.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        if self.per_second == 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() >= MAX_BUCKETS {
            buckets.retain(|_, (_, last)| now.duration_since(*last) < IDLE);
        }
        let (tokens, last) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_then_refilled() {
        let limiter = RateLimiter::new(1000, 3);
        for _ in 0..3 {
            assert!(limiter.check("t").is_ok());
        }
        let wait = limiter.check("t").unwrap_err();
        assert!(wait <= Duration::from_millis(1));
        assert!(limiter.check("other").is_ok(), "buckets are per key");
        std::thread::sleep(Duration::from_millis(5));
        assert!(limiter.check("t").is_ok());
    }

    #[test]
    fn zero_rate_means_unlimited() {
        let limiter = RateLimiter::new(0, 0);
        assert!((0..10_000).all(|_| limiter.check("t").is_ok()));
    }
}
