//! The failed-authentication budget both ends of the sync API keep (the relay for appliance and
//! operator tokens, the appliance for its admin, device and attendee credentials): past `limit`
//! failures from one address in a window, that address is refused before any credential work.
//! The same budget keyed by something else (the appliance's attendee sign-in also budgets each
//! ticket code) is a `FailureLimiter<String>`.
//!
//! Bounded in memory and in time: at most `capacity` addresses are tracked, in least-recently-
//! failed order, so a newcomer evicts the stalest entry in O(1) (no rescans, and nothing grows
//! when every tracked address is active). An attacker with more addresses than `capacity` is not
//! slowed by a per-address limit anyway.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use lru::LruCache;

/// Failures per key (by default an address) per window.
pub struct FailureLimiter<K = IpAddr> {
    limit: u32,
    window: Duration,
    /// Key → (window start, failures in it).
    seen: Mutex<LruCache<K, (Instant, u32)>>,
}

impl<K: Hash + Eq> FailureLimiter<K> {
    /// `limit` failures per `window` per address, `capacity` addresses tracked (at least one).
    pub fn new(limit: u32, window: Duration, capacity: usize) -> Self {
        Self {
            limit,
            window,
            seen: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// `Err(retry_after)` while `key` is over its budget.
    pub fn check(&self, key: K) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    /// [`check`](Self::check) at `now`.
    pub fn check_at(&self, key: K, now: Instant) -> Result<(), Duration> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        match seen.peek(&key) {
            Some((start, failures))
                if *failures >= self.limit
                    && now.saturating_duration_since(*start) < self.window =>
            {
                Err(self
                    .window
                    .saturating_sub(now.saturating_duration_since(*start)))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed authentication from `key`.
    pub fn failed(&self, key: K) {
        self.failed_at(key, Instant::now());
    }

    /// [`failed`](Self::failed) at `now`.
    pub fn failed_at(&self, key: K, now: Instant) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = seen.get_or_insert_mut(key, || (now, 0));
        if now.saturating_duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn an_address_is_refused_after_its_budget_until_the_window_ends() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60), 100);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at(ip(1), t0).is_ok());
            limiter.failed_at(ip(1), t0);
        }
        assert_eq!(limiter.check_at(ip(1), t0), Err(Duration::from_secs(60)));
        assert!(limiter.check_at(ip(2), t0).is_ok(), "only that address");
        let later = t0 + Duration::from_secs(60);
        assert!(limiter.check_at(ip(1), later).is_ok(), "a new window");
    }

    /// The relay's limiter grew without bound once every tracked address was inside its
    /// window (it only dropped expired entries). Now the table never exceeds its capacity,
    /// however many addresses fail at once, and the newest are the ones tracked.
    #[test]
    fn regression_the_table_stays_bounded_when_every_address_is_active() {
        let limiter = FailureLimiter::new(1, Duration::from_secs(60), 1000);
        let t0 = Instant::now();
        for n in 0..5000 {
            limiter.failed_at(ip(n), t0);
        }
        assert_eq!(limiter.tracked(), 1000);
        assert!(
            limiter.check_at(ip(4999), t0).is_err(),
            "the newest is tracked"
        );
        assert!(
            limiter.check_at(ip(0), t0).is_ok(),
            "the stalest was evicted"
        );
    }
}
