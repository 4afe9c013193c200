//! Per-token rate limiting: a token bucket per API token, in memory on each server, so one
//! runaway script cannot starve everyone else's requests (or fill the raft log with its
//! writes). `api::access::guard` takes a permit after authenticating the caller.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use windflow_protocol::TokenId;

/// How fast one token may call the API: `per_second` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_second: 50.0,
            burst: 100,
        }
    }
}

impl RateLimit {
    /// Refuses a rate or burst that would let nothing through (or everything).
    pub fn new(per_second: f64, burst: u32) -> Result<Self, String> {
        if !per_second.is_finite() || per_second <= 0.0 {
            return Err(format!(
                "the rate must be a number of requests per second above 0, not {per_second}"
            ));
        }
        if burst == 0 {
            return Err("the burst must be at least 1".into());
        }
        Ok(RateLimit { per_second, burst })
    }

    /// How long an untouched bucket takes to fill up again: after that it is the same as
    /// a new one, so it can be forgotten.
    fn refill_time(&self) -> Duration {
        Duration::from_secs_f64(f64::from(self.burst) / self.per_second)
    }
}

/// A refused request: when to try again, and whether it is the first refusal since the
/// token was last let through (so that a flood is audited once, not once per request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
    pub first: bool,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    refusing: bool,
}

/// Sweep full buckets out every this many calls at most, whatever the map's size.
const SWEEP_EVERY: u64 = 4096;

/// The token buckets of one server. Memory stays bounded: only authenticated tokens get a
/// bucket, and buckets idle long enough to be full again are dropped, since a full bucket
/// is what a new one would be.
pub struct TokenLimiter {
    limit: RateLimit,
    state: Mutex<Buckets>,
}

#[derive(Debug, Default)]
struct Buckets {
    by_token: HashMap<TokenId, Bucket>,
    calls: u64,
}

impl TokenLimiter {
    pub fn new(limit: RateLimit) -> Self {
        TokenLimiter {
            limit,
            state: Mutex::new(Buckets::default()),
        }
    }

    /// Takes one request's permit for `token`, or says how long to wait.
    pub fn check(&self, token: TokenId) -> Result<(), Limited> {
        self.check_at(token, Instant::now())
    }

    fn check_at(&self, token: TokenId, now: Instant) -> Result<(), Limited> {
        let limit = self.limit;
        let burst = f64::from(limit.burst);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.calls += 1;
        if state.calls.is_multiple_of(SWEEP_EVERY) {
            let idle = limit.refill_time();
            state
                .by_token
                .retain(|_, b| now.saturating_duration_since(b.at) < idle);
        }
        let bucket = state.by_token.entry(token).or_insert(Bucket {
            tokens: burst,
            at: now,
            refusing: false,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * limit.per_second).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            bucket.refusing = false;
            return Ok(());
        }
        let first = !bucket.refusing;
        bucket.refusing = true;
        let wait = (1.0 - bucket.tokens) / limit.per_second;
        Err(Limited {
            retry_after: Duration::from_secs_f64(wait),
            first,
        })
    }

    /// How many buckets are held (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_token
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_refills_it() {
        let limiter = TokenLimiter::new(RateLimit::new(10.0, 3).unwrap());
        let t = TokenId(1);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check_at(t, start), Ok(()));
        }
        let refused = limiter.check_at(t, start).unwrap_err();
        assert!(refused.first);
        // One permit every 100 ms at 10/s.
        assert!(
            refused.retry_after > Duration::from_millis(90)
                && refused.retry_after <= Duration::from_millis(100),
            "{refused:?}"
        );
        let again = limiter.check_at(t, start).unwrap_err();
        assert!(!again.first, "a flood is reported once");
        // Another token has its own bucket.
        assert_eq!(limiter.check_at(TokenId(2), start), Ok(()));
        let later = start + Duration::from_millis(100);
        assert_eq!(limiter.check_at(t, later), Ok(()));
        assert!(limiter.check_at(t, later).is_err());
        // Never more than the burst, however long the token was idle.
        let much_later = later + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(limiter.check_at(t, much_later), Ok(()));
        }
        assert!(limiter.check_at(t, much_later).unwrap_err().first);
    }

    #[test]
    fn idle_buckets_are_forgotten() {
        let limiter = TokenLimiter::new(RateLimit::new(1000.0, 10).unwrap());
        let start = Instant::now();
        for i in 0..SWEEP_EVERY - 1 {
            assert_eq!(limiter.check_at(TokenId(i), start), Ok(()));
        }
        assert_eq!(limiter.len() as u64, SWEEP_EVERY - 1);
        // 10 ms later every bucket is full again: the sweep keeps only the caller's.
        let later = start + Duration::from_millis(10);
        assert_eq!(limiter.check_at(TokenId(0), later), Ok(()));
        assert_eq!(limiter.len(), 1);
    }

    #[test]
    fn a_limit_that_lets_nothing_through_is_refused() {
        assert!(RateLimit::new(0.0, 10).is_err());
        assert!(RateLimit::new(f64::NAN, 10).is_err());
        assert!(RateLimit::new(5.0, 0).is_err());
        assert!(RateLimit::new(0.5, 1).is_ok());
    }
}
