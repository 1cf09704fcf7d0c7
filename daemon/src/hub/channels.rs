//! Channel names and who may read and post in them.
//!
//! - `announcements`: everyone reads; staff post (and the MQTT bridge, for alerts).
//! - `session:{id}`: one per schedule session; every attendee of the event.
//! - `zone:{id}`: one per zone; every attendee of the event.

use super::tokens::Claims;

/// The announcements channel.
pub const ANNOUNCEMENTS: &str = "announcements";

/// A parsed channel name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel<'a> {
    /// `announcements`.
    Announcements,
    /// `session:{id}`.
    Session(&'a str),
    /// `zone:{id}`.
    Zone(&'a str),
}

impl<'a> Channel<'a> {
    /// Parses a channel name; `None` for anything this hub does not have.
    pub fn parse(name: &'a str) -> Option<Self> {
        let id = |s: &'a str| crate::domain::entities::validate_id(s).ok().map(|()| s);
        match name.split_once(':') {
            None if name == ANNOUNCEMENTS => Some(Self::Announcements),
            Some(("session", rest)) => id(rest).map(Self::Session),
            Some(("zone", rest)) => id(rest).map(Self::Zone),
            _ => None,
        }
    }

    /// Whether the token's holder may read it (every channel here is open to the event).
    pub fn may_read(&self, _claims: &Claims) -> bool {
        true
    }

    /// Whether the token's holder may post in it.
    pub fn may_post(&self, claims: &Claims) -> bool {
        match self {
            Self::Announcements => claims.has_role("staff"),
            Self::Session(_) | Self::Zone(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(roles: &[&str]) -> Claims {
        Claims {
            sub: "a1".into(),
            event: "e".into(),
            exp: 0,
            roles: roles.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn names_and_rights() {
        assert_eq!(
            Channel::parse("announcements"),
            Some(Channel::Announcements)
        );
        assert_eq!(Channel::parse("session:s-1"), Some(Channel::Session("s-1")));
        assert_eq!(Channel::parse("zone:hall-a"), Some(Channel::Zone("hall-a")));
        for bad in [
            "",
            "session:",
            "zone:a b",
            "dm:a:b",
            "Announcements",
            "session:a/b",
        ] {
            assert_eq!(Channel::parse(bad), None, "{bad}");
        }
        assert!(!Channel::Announcements.may_post(&claims(&["attendee"])));
        assert!(Channel::Announcements.may_post(&claims(&["staff"])));
        assert!(Channel::Session("s").may_post(&claims(&[])));
    }
}
