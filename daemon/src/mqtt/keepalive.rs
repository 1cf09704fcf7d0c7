//! Keep-alive with the time this process was not running taken out.
//!
//! A client is gone when the front has heard nothing from it for 1.5 × its keep-alive. But a
//! process that was stopped (SIGSTOP, a paused VM, a machine starved of CPU) could not hear
//! either: the client's pings wait in the kernel's socket buffer, and on resuming every timer
//! fires at once. Counting that time against the client would publish `lost` wills for kiosks
//! that never stopped pinging. So the front owns the keep-alive (rumqttd is told a very long one,
//! see [`BROKER_KEEP_ALIVE_SECS`]) and extends each deadline by the time [`StallClock`] says the
//! process was not running. Both are plain state with the time passed in.

use std::time::{Duration, Instant};

/// What rumqttd is told in the forwarded CONNECT: long enough that only the front ever times a
/// client out (about 18 hours).
pub const BROKER_KEEP_ALIVE_SECS: u16 = u16::MAX;
/// How often the stall clock ticks.
pub const TICK: Duration = Duration::from_millis(250);
/// A gap between ticks longer than the tick by this much counts as time not running.
pub const STALL_MIN: Duration = Duration::from_millis(500);

/// Accumulates the time the process was not running, from gaps between its own ticks.
#[derive(Debug, Clone)]
pub struct StallClock {
    last_tick: Instant,
    stalled: Duration,
}

impl StallClock {
    /// A clock that has seen no stall, ticking from `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            last_tick: now,
            stalled: Duration::ZERO,
        }
    }

    /// The ticker ran at `now`.
    pub fn tick(&mut self, now: Instant) {
        self.stalled += gap_stall(now.saturating_duration_since(self.last_tick));
        self.last_tick = now.max(self.last_tick);
    }

    /// Time not running up to `now`: the ticks' gaps, plus the current one if the ticker has
    /// not run yet since a stall (timers and the ticker wake in no fixed order after a resume).
    pub fn stalled(&self, now: Instant) -> Duration {
        self.stalled + gap_stall(now.saturating_duration_since(self.last_tick))
    }
}

fn gap_stall(gap: Duration) -> Duration {
    match gap > TICK + STALL_MIN {
        true => gap - TICK,
        false => Duration::ZERO,
    }
}

/// When a client that sent `keep_alive_secs` in its CONNECT is gone.
#[derive(Debug, Clone)]
pub struct KeepAlive {
    limit: Duration,
    heard: Instant,
    stalled_at_heard: Duration,
}

impl KeepAlive {
    /// For a client heard from at `now` (its CONNECT); `stalled` is [`StallClock::stalled`] then.
    pub fn new(keep_alive_secs: u16, now: Instant, stalled: Duration) -> Self {
        Self {
            limit: Duration::from_secs(u64::from(keep_alive_secs)) * 3 / 2,
            heard: now,
            stalled_at_heard: stalled,
        }
    }

    /// The client sent something at `now`.
    pub fn heard(&mut self, now: Instant, stalled: Duration) {
        self.heard = now;
        self.stalled_at_heard = stalled;
    }

    /// The deadline, given the process's stalled time so far: 1.5 × keep-alive after the client
    /// was last heard, plus the time the process was not running since.
    pub fn deadline(&self, stalled: Duration) -> Instant {
        self.heard + self.limit + stalled.saturating_sub(self.stalled_at_heard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_ticker_sees_no_stall() {
        let start = Instant::now();
        let mut clock = StallClock::new(start);
        for i in 1..=50 {
            clock.tick(start + TICK * i);
        }
        assert_eq!(clock.stalled(start + TICK * 50), Duration::ZERO);
    }

    /// The outside probe: a 5 s SIGSTOP published `lost` wills for kiosks with a 2 s
    /// keep-alive, although they pinged all along.
    #[test]
    fn regression_time_stopped_does_not_count_against_a_client() {
        let start = Instant::now();
        let mut clock = StallClock::new(start);
        let keep_alive = KeepAlive::new(2, start, clock.stalled(start));
        clock.tick(start + TICK);
        // Stopped for 5 s. On resuming, the client's deadline is checked before the ticker
        // runs, and again after: either way it has the 5 s back.
        let resumed = start + TICK + Duration::from_secs(5);
        let before_tick = keep_alive.deadline(clock.stalled(resumed));
        clock.tick(resumed);
        let after_tick = keep_alive.deadline(clock.stalled(resumed));
        for deadline in [before_tick, after_tick] {
            assert!(deadline > resumed, "{:?} past", resumed - deadline);
        }
        // A client that really went quiet is still gone 3 s (1.5 × 2 s) of running time later.
        let mut clock_later = clock.clone();
        let gone = resumed + Duration::from_secs(3);
        let mut t = resumed;
        while t < gone {
            t += TICK;
            clock_later.tick(t);
        }
        assert!(keep_alive.deadline(clock_later.stalled(gone + TICK)) <= gone + TICK);
    }

    #[test]
    fn hearing_from_the_client_moves_the_deadline() {
        let start = Instant::now();
        let clock = StallClock::new(start);
        let mut keep_alive = KeepAlive::new(10, start, clock.stalled(start));
        assert_eq!(
            keep_alive.deadline(Duration::ZERO),
            start + Duration::from_secs(15)
        );
        keep_alive.heard(start + Duration::from_secs(7), Duration::ZERO);
        assert_eq!(
            keep_alive.deadline(Duration::ZERO),
            start + Duration::from_secs(22)
        );
    }
}
