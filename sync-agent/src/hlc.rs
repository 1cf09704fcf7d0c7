//! Hybrid logical clock: wall-clock milliseconds, a counter, and the node id as the tie-breaker.
//!
//! Why an HLC rather than wall time: appliances' clocks drift and step (NTP after a cold boot at a
//! venue with no internet), and ops must still be ordered the same way everywhere. The clock never
//! goes backwards: when the wall clock is behind the last issued stamp, the counter advances.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// One timestamp of the hybrid logical clock. Ordered by `wall_ms`, then `counter`, then `node`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Hlc {
    /// Milliseconds since the Unix epoch, as the issuing node saw them (or later).
    pub wall_ms: u64,
    /// Disambiguates stamps issued within one millisecond, or while the wall clock lags.
    pub counter: u32,
    /// The id of the node that issued the stamp; breaks ties so the order is total.
    pub node: String,
}

impl Ord for Hlc {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.wall_ms, self.counter, &self.node).cmp(&(other.wall_ms, other.counter, &other.node))
    }
}

impl PartialOrd for Hlc {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The clock state of one node. Pure: the caller passes the wall time in, so tests drive it.
#[derive(Clone, Debug)]
pub struct HlcClock {
    node: String,
    last_wall_ms: u64,
    last_counter: u32,
}

impl HlcClock {
    /// A clock for `node` that will never issue a stamp at or below `high_water` (the persisted
    /// high-water mark, or `(0, 0)` for a new node).
    pub fn new(node: impl Into<String>, high_water: (u64, u32)) -> Self {
        Self {
            node: node.into(),
            last_wall_ms: high_water.0,
            last_counter: high_water.1,
        }
    }

    /// The node id stamped on every issued timestamp.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The highest `(wall_ms, counter)` issued or observed; persist it to survive restarts.
    pub fn high_water(&self) -> (u64, u32) {
        (self.last_wall_ms, self.last_counter)
    }

    /// Issues a stamp for a local event at wall time `now_ms`. Strictly greater than every stamp
    /// issued or observed before.
    pub fn tick(&mut self, now_ms: u64) -> Hlc {
        if now_ms > self.last_wall_ms {
            self.last_wall_ms = now_ms;
            self.last_counter = 0;
        } else {
            self.bump_counter();
        }
        self.stamp()
    }

    /// Folds a remote stamp into the clock so later local stamps sort after it.
    pub fn observe(&mut self, remote: &Hlc) {
        match (remote.wall_ms, remote.counter).cmp(&(self.last_wall_ms, self.last_counter)) {
            Ordering::Greater => {
                self.last_wall_ms = remote.wall_ms;
                self.last_counter = remote.counter;
            }
            Ordering::Equal | Ordering::Less => {}
        }
    }

    fn bump_counter(&mut self) {
        // A counter overflow needs 4 billion stamps in one millisecond; borrowing the next
        // millisecond keeps the order total without failing.
        match self.last_counter.checked_add(1) {
            Some(c) => self.last_counter = c,
            None => {
                self.last_wall_ms += 1;
                self.last_counter = 0;
            }
        }
    }

    fn stamp(&self) -> Hlc {
        Hlc {
            wall_ms: self.last_wall_ms,
            counter: self.last_counter,
            node: self.node.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_strictly_increase_when_the_wall_clock_steps_back() {
        let mut clock = HlcClock::new("a", (0, 0));
        let first = clock.tick(10_000);
        let second = clock.tick(4_000); // NTP stepped the clock back by six seconds.
        let third = clock.tick(4_001);
        assert!(
            first < second && second < third,
            "{first:?} {second:?} {third:?}"
        );
        assert_eq!(second.wall_ms, 10_000);
        assert_eq!(second.counter, 1);
    }

    #[test]
    fn a_persisted_high_water_mark_survives_a_restart_with_an_earlier_clock() {
        let mut before = HlcClock::new("a", (0, 0));
        let last = before.tick(50_000);
        let mut after = HlcClock::new("a", before.high_water());
        assert!(after.tick(1_000) > last);
    }

    #[test]
    fn observing_a_remote_stamp_orders_later_local_stamps_after_it() {
        let mut clock = HlcClock::new("a", (0, 0));
        let remote = Hlc {
            wall_ms: 90_000,
            counter: 7,
            node: "b".into(),
        };
        clock.observe(&remote);
        let local = clock.tick(1_000);
        assert!(local > remote);
        assert_eq!((local.wall_ms, local.counter), (90_000, 8));
    }

    #[test]
    fn ties_break_on_the_node_id() {
        let a = Hlc {
            wall_ms: 1,
            counter: 0,
            node: "a".into(),
        };
        let b = Hlc {
            node: "b".into(),
            ..a.clone()
        };
        assert!(a < b);
    }

    #[test]
    fn counter_overflow_borrows_the_next_millisecond() {
        let mut clock = HlcClock::new("a", (5, u32::MAX));
        let stamp = clock.tick(5);
        assert_eq!((stamp.wall_ms, stamp.counter), (6, 0));
    }
}
