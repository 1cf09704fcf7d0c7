//! A warning that goes out at most once per interval, however often its cause repeats: under
//! load a per-event warning would flood the journal, and the counters carry the totals.

use std::sync::atomic::{AtomicU64, Ordering};

/// Lets one caller through per `interval_ms`; the others are told to stay quiet.
pub(crate) struct LogLimit {
    interval_ms: u64,
    last_ms: AtomicU64,
}

impl LogLimit {
    /// At most once per `interval_ms` milliseconds.
    pub(crate) const fn new(interval_ms: u64) -> Self {
        Self {
            interval_ms,
            last_ms: AtomicU64::new(0),
        }
    }

    /// Whether this caller may log now (wall-clock milliseconds `now_ms`); at most one caller
    /// per interval is told yes, even when several ask at once.
    pub(crate) fn allow(&self, now_ms: u64) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        now_ms.saturating_sub(last) >= self.interval_ms
            && self
                .last_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::LogLimit;

    #[test]
    fn one_caller_per_interval() {
        let limit = LogLimit::new(1000);
        assert!(limit.allow(5_000));
        assert!(!limit.allow(5_999));
        assert!(limit.allow(6_000));
        assert!(!limit.allow(6_001));
    }
}
