//! Hybrid logical clock: wall-clock milliseconds, a counter, and the node id as the tie-breaker.
//!
//! Why an HLC rather than wall time: appliances' clocks drift and step (NTP after a cold boot at a
//! venue with no internet), and ops must still be ordered the same way everywhere. The clock never
//! goes backwards: when the wall clock is behind the last issued stamp, the counter advances.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// How far ahead of a receiver's own wall clock a stamp from another node may be. A stamp further
/// ahead is refused (parked), never observed: observing it would drag every later local stamp
/// past it, and one node with a wrong clock (or a hostile one) would move every node's clock of
/// the event into the future for good. Five minutes covers the drift of an appliance that booted
/// without NTP; a larger step is an operator's problem to fix at the source.
pub const MAX_CLOCK_AHEAD_MS: u64 = 5 * 60 * 1000;

/// The largest `wall_ms` any node stores: SQLite's and PostgreSQL's integers are signed 64-bit.
pub const MAX_WALL_MS: u64 = i64::MAX as u64;

/// A remote stamp that may not be observed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "hlc.wall_ms {wall_ms} is {ahead_ms} ms ahead of this node's clock ({now_ms}); at most {MAX_CLOCK_AHEAD_MS} ms is accepted: fix the clock of node `{node}`"
)]
pub struct ClockAhead {
    /// The refused stamp's wall time.
    pub wall_ms: u64,
    /// The receiver's wall time.
    pub now_ms: u64,
    /// How far ahead it was.
    pub ahead_ms: u64,
    /// The node that issued it.
    pub node: String,
}

/// Whether a stamp from another node may be observed by a node whose wall clock reads `now_ms`:
/// at most [`MAX_CLOCK_AHEAD_MS`] ahead of it (which also keeps it below [`MAX_WALL_MS`]).
pub fn check_remote(stamp: &Hlc, now_ms: u64) -> Result<(), ClockAhead> {
    let limit = now_ms.saturating_add(MAX_CLOCK_AHEAD_MS).min(MAX_WALL_MS);
    match stamp.wall_ms <= limit {
        true => Ok(()),
        false => Err(ClockAhead {
            wall_ms: stamp.wall_ms,
            now_ms,
            ahead_ms: stamp.wall_ms.saturating_sub(now_ms),
            node: stamp.node.chars().take(128).collect(),
        }),
    }
}

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
    fn a_stamp_within_the_bound_is_accepted_and_one_past_it_is_refused() {
        let now = 1_700_000_000_000;
        let at = |wall_ms| Hlc {
            wall_ms,
            counter: 0,
            node: "b".into(),
        };
        assert!(check_remote(&at(now + MAX_CLOCK_AHEAD_MS), now).is_ok());
        assert!(check_remote(&at(0), now).is_ok(), "the past is always fine");
        let refused = check_remote(&at(now + MAX_CLOCK_AHEAD_MS + 1), now).unwrap_err();
        assert_eq!(refused.ahead_ms, MAX_CLOCK_AHEAD_MS + 1);
        assert!(refused.to_string().contains("fix the clock of node `b`"));
    }

    #[test]
    fn regression_a_wall_time_past_i64_max_is_refused_whatever_the_local_clock() {
        // The probe's poison: 9223372036854775813 turned negative when stored as i64.
        let poison = Hlc {
            wall_ms: 9_223_372_036_854_775_813,
            counter: 0,
            node: "b".into(),
        };
        assert!(check_remote(&poison, 1_700_000_000_000).is_err());
        assert!(check_remote(&poison, u64::MAX).is_err());
    }

    #[test]
    fn counter_overflow_borrows_the_next_millisecond() {
        let mut clock = HlcClock::new("a", (5, u32::MAX));
        let stamp = clock.tick(5);
        assert_eq!((stamp.wall_ms, stamp.counter), (6, 0));
    }
}
