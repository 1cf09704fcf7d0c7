//! Per-attendee token buckets for posts and other durable changes: [`RATE_PER_SEC`] sustained,
//! [`RATE_BURST`] at once, shared by every transport so no client can go around it.
//!
//! Plain state with the time passed in, tested without sockets or sleeps.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Messages a user may send per second, sustained...
pub const RATE_PER_SEC: f64 = 10.0;
/// ...and in a burst.
pub const RATE_BURST: f64 = 20.0;
/// Users whose buckets are tracked before full (idle) ones are forgotten.
const MAX_BUCKETS: usize = 50_000;

/// Every attendee's bucket: (tokens, last refill).
#[derive(Default)]
pub struct Buckets(HashMap<String, (f64, Instant)>);

impl Buckets {
    /// Takes one token from `user`'s bucket; `Err(retry_after)` when it is empty.
    pub fn take(&mut self, user: &str, now: Instant) -> Result<(), Duration> {
        if self.0.len() >= MAX_BUCKETS && !self.0.contains_key(user) {
            // A full bucket is the same as none: forget those.
            self.0.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * RATE_PER_SEC
                    < RATE_BURST
            });
        }
        let (tokens, at) = self.0.entry(user.to_string()).or_insert((RATE_BURST, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * RATE_PER_SEC)
            .min(RATE_BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / RATE_PER_SEC))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_20_then_10_a_second_each_user_alone() {
        let t0 = Instant::now();
        let mut buckets = Buckets::default();
        for _ in 0..20 {
            assert!(buckets.take("a", t0).is_ok());
        }
        let retry = buckets.take("a", t0).err();
        assert_eq!(retry, Some(Duration::from_millis(100)));
        assert!(
            buckets.take("b", t0).is_ok(),
            "another attendee has a bucket of their own"
        );
        // 100 ms later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(100);
        assert!(buckets.take("a", t1).is_ok());
        assert!(buckets.take("a", t1).is_err());
        // A long pause refills to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!(
            (0..25).filter(|_| buckets.take("a", t2).is_ok()).count(),
            20
        );
    }
}
