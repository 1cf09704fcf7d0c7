//! "At most once a second per attendee and channel" for typing indicators and read receipts,
//! across all of the attendee's connections (five phones do not make five a second).
//!
//! Plain state with the time passed in, tested without sockets or sleeps.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;

/// Keys remembered; past it the least recently passed is forgotten (O(1)). Forgetting is
/// lenient: that key may pass once more within its second.
const MAX_KEYS: usize = 100_000;

/// When each (attendee, channel) last passed, least recent first out.
pub struct Throttle(LruCache<(String, String), Instant>);

impl Default for Throttle {
    fn default() -> Self {
        Self(LruCache::new(
            NonZeroUsize::new(MAX_KEYS).unwrap_or(NonZeroUsize::MIN),
        ))
    }
}

impl Throttle {
    /// Whether `user` may pass in `channel` now, at most once per `interval`; records it if so.
    pub fn allow(&mut self, user: &str, channel: &str, now: Instant, interval: Duration) -> bool {
        self.pass(user, channel, now, interval, false)
    }

    /// Like [`Throttle::allow`], but a `forced` pass (a typing stop) always goes through and
    /// still counts as the last one.
    pub fn pass(
        &mut self,
        user: &str,
        channel: &str,
        now: Instant,
        interval: Duration,
        forced: bool,
    ) -> bool {
        let key = (user.to_string(), channel.to_string());
        match self.0.get(&key) {
            Some(at) if !forced && now.saturating_duration_since(*at) < interval => false,
            _ => {
                self.0.put(key, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_a_second_per_user_and_channel() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut throttle = Throttle::default();
        assert!(throttle.allow("a", "c", t0, second));
        assert!(!throttle.allow("a", "c", t0 + Duration::from_millis(999), second));
        assert!(throttle.allow("a", "d", t0, second), "another channel");
        assert!(throttle.allow("b", "c", t0, second), "another attendee");
        assert!(throttle.allow("a", "c", t0 + second, second));
        // A forced pass goes through and resets the clock.
        let t1 = t0 + second + Duration::from_millis(10);
        assert!(throttle.pass("a", "c", t1, second, true));
        assert!(!throttle.allow("a", "c", t1 + Duration::from_millis(500), second));
    }
}
