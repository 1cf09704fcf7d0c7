//! Online presence: online, away, dnd or offline per attendee.
//!
//! An attendee chooses online, away, dnd or offline (`presence.update`); what others see is the
//! choice while the attendee is heard from, and offline once nothing has come from any of their
//! connections for [`OFFLINE_AFTER`] (a phone answering pings counts as heard from). Ephemeral:
//! never stored, rebuilt from connections after a restart.
//!
//! Plain state with the time passed in, tested without sockets or sleeps.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Silence after which an attendee shows as offline.
pub const OFFLINE_AFTER: Duration = Duration::from_secs(90);

/// What others see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Connected and available.
    Online,
    /// Connected, stepped away.
    Away,
    /// Connected, do not disturb.
    Dnd,
    /// Not heard from lately, or chose to appear offline.
    Offline,
}

impl Status {
    /// Parses a client's choice.
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "online" => Some(Status::Online),
            "away" => Some(Status::Away),
            "dnd" => Some(Status::Dnd),
            "offline" => Some(Status::Offline),
            _ => None,
        }
    }
}

/// A change others may be told of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Whose status changed.
    pub user: String,
    /// What it is now.
    pub status: Status,
}

struct Entry {
    chosen: Status,
    shown: Status,
    heard: Instant,
    connections: usize,
}

/// Every known attendee's status.
#[derive(Default)]
pub struct Board {
    users: HashMap<String, Entry>,
}

impl Board {
    /// A connection of `user` opened.
    pub fn connected(&mut self, user: &str, now: Instant) -> Option<Change> {
        let entry = self.users.entry(user.to_string()).or_insert(Entry {
            chosen: Status::Online,
            shown: Status::Offline,
            heard: now,
            connections: 0,
        });
        entry.connections += 1;
        Self::heard_from(user, entry, now)
    }

    /// A connection of `user` closed. Nothing changes yet: offline follows the silence.
    pub fn disconnected(&mut self, user: &str) {
        if let Some(entry) = self.users.get_mut(user) {
            entry.connections = entry.connections.saturating_sub(1);
        }
    }

    /// Something came from `user`.
    pub fn traffic(&mut self, user: &str, now: Instant) -> Option<Change> {
        let entry = self.users.get_mut(user)?;
        Self::heard_from(user, entry, now)
    }

    fn heard_from(user: &str, entry: &mut Entry, now: Instant) -> Option<Change> {
        entry.heard = now;
        (entry.shown != entry.chosen).then(|| {
            entry.shown = entry.chosen;
            Change {
                user: user.to_string(),
                status: entry.shown,
            }
        })
    }

    /// `user` chose a status.
    pub fn choose(&mut self, user: &str, status: Status, now: Instant) -> Option<Change> {
        let entry = self.users.get_mut(user)?;
        entry.chosen = status;
        Self::heard_from(user, entry, now)
    }

    /// Attendees silent for [`OFFLINE_AFTER`] go offline; those offline with no connection
    /// are forgotten.
    pub fn sweep(&mut self, now: Instant) -> Vec<Change> {
        let mut changes = Vec::new();
        self.users.retain(|user, entry| {
            if entry.shown != Status::Offline && now.duration_since(entry.heard) >= OFFLINE_AFTER {
                entry.shown = Status::Offline;
                changes.push(Change {
                    user: user.clone(),
                    status: Status::Offline,
                });
            }
            entry.shown != Status::Offline || entry.connections > 0
        });
        changes
    }

    /// What others see of `user` now.
    pub fn status(&self, user: &str) -> Status {
        self.users
            .get(user)
            .map_or(Status::Offline, |entry| entry.shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(user: &str, status: Status) -> Option<Change> {
        Some(Change {
            user: user.into(),
            status,
        })
    }

    #[test]
    fn online_on_connect_offline_after_90_s_of_silence_and_back_on_traffic() {
        let t0 = Instant::now();
        let mut board = Board::default();
        assert_eq!(board.connected("a", t0), change("a", Status::Online));
        assert_eq!(
            board.connected("a", t0),
            None,
            "a second phone changes nothing"
        );
        assert_eq!(board.traffic("a", t0 + Duration::from_secs(60)), None);
        assert!(board.sweep(t0 + Duration::from_secs(149)).is_empty());
        assert_eq!(
            board.sweep(t0 + Duration::from_secs(150)),
            vec![Change {
                user: "a".into(),
                status: Status::Offline
            }]
        );
        assert_eq!(board.status("a"), Status::Offline);
        assert_eq!(
            board.traffic("a", t0 + Duration::from_secs(151)),
            change("a", Status::Online)
        );
    }

    #[test]
    fn a_chosen_status_holds_while_heard_from_and_appear_offline_stays_offline() {
        let t0 = Instant::now();
        let mut board = Board::default();
        board.connected("a", t0);
        assert_eq!(board.choose("a", Status::Dnd, t0), change("a", Status::Dnd));
        assert_eq!(board.traffic("a", t0), None);
        assert_eq!(
            board.choose("a", Status::Offline, t0),
            change("a", Status::Offline)
        );
        assert_eq!(
            board.traffic("a", t0),
            None,
            "traffic does not reveal an invisible user"
        );
        assert_eq!(board.status("a"), Status::Offline);
        assert_eq!(board.choose("nobody", Status::Away, t0), None);
    }

    #[test]
    fn disconnected_users_are_forgotten_once_offline() {
        let t0 = Instant::now();
        let mut board = Board::default();
        board.connected("a", t0);
        board.disconnected("a");
        assert_eq!(
            board.status("a"),
            Status::Online,
            "until the silence runs out"
        );
        assert_eq!(board.sweep(t0 + OFFLINE_AFTER).len(), 1);
        assert!(board.users.is_empty());
        assert_eq!(Status::parse("away"), Some(Status::Away));
        assert_eq!(Status::parse("busy"), None);
    }
}
