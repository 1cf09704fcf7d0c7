//! Exponential backoff with full jitter ("Exponential Backoff And Jitter", AWS Architecture Blog):
//! the wait is uniform in `[0, min(cap, base * 2^attempt))`, so a fleet of appliances that lost
//! the relay together does not come back in lockstep.

use std::time::Duration;

use rand::Rng;

/// Backoff state of one loop.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `base`, never waits longer than `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The ceiling of the next wait (before jitter).
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(30)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The next wait: uniform in `[0, ceiling)`; the ceiling then doubles up to the cap.
    pub fn next_wait(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let ms = ceiling.as_millis() as u64;
        Duration::from_millis(match ms {
            0 => 0,
            _ => rand::thread_rng().gen_range(0..ms),
        })
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.attempt
    }

    /// After a success: start again from `base`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_the_cap_and_stay_under_it() {
        let mut b = Backoff::new(Duration::from_millis(250), Duration::from_secs(60));
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            ceilings.push(b.ceiling());
            assert!(b.next_wait() < b.ceiling().max(Duration::from_millis(1)));
        }
        assert_eq!(ceilings[0], Duration::from_millis(250));
        assert_eq!(ceilings[3], Duration::from_secs(2));
        assert_eq!(*ceilings.last().expect("some"), Duration::from_secs(60));
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(250));
        assert_eq!(b.failures(), 0);
    }

    #[test]
    fn jitter_spreads_the_waits() {
        let mut waits = std::collections::HashSet::new();
        for _ in 0..50 {
            let mut b = Backoff::new(Duration::from_secs(8), Duration::from_secs(60));
            waits.insert(b.next_wait());
        }
        assert!(waits.len() > 10, "{waits:?}");
    }

    #[test]
    fn many_failures_never_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..1000 {
            assert!(b.next_wait() <= Duration::from_secs(60));
        }
    }
}
