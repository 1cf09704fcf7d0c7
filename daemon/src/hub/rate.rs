//! Per-attendee token buckets for posts and other durable changes: [`RATE_PER_SEC`] sustained,
//! [`RATE_BURST`] at once, shared by every transport so no client can go around it.
//!
//! Plain state with the time passed in, tested without sockets or sleeps.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;

/// Messages a user may send per second, sustained...
pub const RATE_PER_SEC: f64 = 10.0;
/// ...and in a burst.
pub const RATE_BURST: f64 = 20.0;
/// Users whose buckets are tracked; past it the least recently posting user's bucket is
/// forgotten (O(1), no rescans). Forgetting a bucket is lenient, never strict: that user starts
/// again from a full one. Attendees that posted in the last two seconds are far fewer.
const MAX_BUCKETS: usize = 50_000;

/// Every attendee's bucket: (tokens, last refill), least recently used first out.
pub struct Buckets(LruCache<String, (f64, Instant)>);

impl Default for Buckets {
    fn default() -> Self {
        Self::with_capacity(MAX_BUCKETS)
    }
}

impl Buckets {
    /// Buckets for at most `capacity` users at once.
    pub fn with_capacity(capacity: usize) -> Self {
        Self(LruCache::new(
            NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
        ))
    }

    /// Users tracked now.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is tracked.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Takes one token from `user`'s bucket; `Err(retry_after)` when it is empty.
    pub fn take(&mut self, user: &str, now: Instant) -> Result<(), Duration> {
        let (tokens, at) = match self.0.get_mut(user) {
            Some(bucket) => bucket,
            None => self
                .0
                .get_or_insert_mut(user.to_string(), || (RATE_BURST, now)),
        };
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

    /// With every tracked user active, each newcomer rescanned the whole map and nothing was
    /// freed. Now the table stays at its capacity and the least recent user is forgotten.
    #[test]
    fn regression_buckets_stay_bounded_when_every_user_is_active() {
        let t0 = Instant::now();
        let mut buckets = Buckets::with_capacity(100);
        for n in 0..1000 {
            let user = format!("u{n}");
            assert!(buckets.take(&user, t0).is_ok());
        }
        assert_eq!(buckets.len(), 100);
    }
}
