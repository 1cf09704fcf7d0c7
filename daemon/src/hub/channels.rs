//! Channel names and who may read and post in them.
//!
//! - `announcements`: everyone reads; staff post (and the MQTT bridge, for alerts).
//! - `session:{id}`: one per schedule session; every attendee of the event.
//! - `zone:{id}`: one per zone; every attendee of the event.
//! - `dm:{a}:{b}`: a direct conversation between attendees `a` and `b` (`a` < `b`, so each pair
//!   has one name); only those two read and post.
//! - `group:{id}`: a group chat; only its members read and post. Membership lives in the store
//!   (an observed-remove set of ops), so the hub checks it on every frame
//!   ([`Hub::exists`](super::Hub::exists)); to anyone else the channel does not exist.

use crate::auth::tokens::Claims;

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
    /// `dm:{a}:{b}`, with `a` < `b`.
    Direct(&'a str, &'a str),
    /// `group:{id}`.
    Group(&'a str),
}

impl<'a> Channel<'a> {
    /// Parses a channel name; `None` for anything this hub does not have.
    pub fn parse(name: &'a str) -> Option<Self> {
        let id = |s: &'a str| crate::domain::entities::validate_id(s).ok().map(|()| s);
        match name.split_once(':') {
            None if name == ANNOUNCEMENTS => Some(Self::Announcements),
            Some(("session", rest)) => id(rest).map(Self::Session),
            Some(("zone", rest)) => id(rest).map(Self::Zone),
            Some(("group", rest)) => id(rest).map(Self::Group),
            Some(("dm", rest)) => {
                let (a, b) = rest.split_once(':')?;
                (id(a).is_some() && id(b).is_some() && a < b && !b.contains(':'))
                    .then_some(Self::Direct(a, b))
            }
            _ => None,
        }
    }

    /// Whether the token's holder may read it.
    pub fn may_read(&self, claims: &Claims) -> bool {
        match self {
            Self::Direct(a, b) => claims.sub == *a || claims.sub == *b,
            _ => true,
        }
    }

    /// The name of the direct channel between two attendees.
    pub fn direct(one: &str, other: &str) -> String {
        let (a, b) = if one < other {
            (one, other)
        } else {
            (other, one)
        };
        format!("dm:{a}:{b}")
    }

    /// Whether the token's holder may post in it.
    pub fn may_post(&self, claims: &Claims) -> bool {
        match self {
            Self::Announcements => claims.has_role("staff"),
            // Group membership is checked against the store by the hub.
            Self::Session(_) | Self::Zone(_) | Self::Group(_) => true,
            Self::Direct(a, b) => claims.sub == *a || claims.sub == *b,
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
        assert_eq!(Channel::parse("group:g-1"), Some(Channel::Group("g-1")));
        assert_eq!(
            Channel::parse("dm:a1:a2"),
            Some(Channel::Direct("a1", "a2"))
        );
        assert_eq!(Channel::direct("a2", "a1"), "dm:a1:a2");
        assert!(
            Channel::Direct("a1", "a2").may_read(&claims(&[])),
            "a1 is in it"
        );
        assert!(Channel::Direct("a1", "a2").may_post(&claims(&[])));
        let mut outsider = claims(&["staff"]);
        outsider.sub = "a3".into();
        assert!(
            !Channel::Direct("a1", "a2").may_read(&outsider),
            "staff do not read DMs"
        );
        assert!(!Channel::Direct("a1", "a2").may_post(&outsider));
        for bad in [
            "",
            "session:",
            "zone:a b",
            "dm:b:a",
            "dm:a",
            "dm:a:a",
            "Announcements",
            "session:a/b",
            "group:",
        ] {
            assert_eq!(Channel::parse(bad), None, "{bad}");
        }
        assert!(!Channel::Announcements.may_post(&claims(&["attendee"])));
        assert!(Channel::Announcements.may_post(&claims(&["staff"])));
        assert!(Channel::Session("s").may_post(&claims(&[])));
    }
}
