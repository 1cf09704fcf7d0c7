//! The venue domain on top of the store: check-ins, attendees, the entity registry (zones,
//! beacons, sessions), devices, and idempotency keys. Every change goes through an op
//! ([`crate::oplog`]) except device credentials, which are this appliance's own access list.

pub mod attendees;
pub mod checkins;
pub mod devices;
pub mod entities;
pub mod groups;
pub mod idempotency;
pub mod messages;
pub mod retained;
pub mod token_keys;

use crate::oplog::ApplyError;
use crate::store::StoreError;

/// Why a domain request was refused. Each variant maps to one HTTP status in `http::error`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is well-formed but its content is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The request conflicts with the current state (e.g. a device id in use).
    #[error("{0}")]
    Conflict(String),
    /// An idempotency key was reused with a different request body.
    #[error(
        "idempotency key `{0}` was already used for a different request; use a new key for a new \
         request, or resend exactly the original body"
    )]
    KeyReused(String),
    /// An op was refused by its merge rule.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for DomainError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(e.into())
    }
}

/// Milliseconds since the epoch as RFC 3339 (UTC), for API responses.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
