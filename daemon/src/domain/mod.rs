//! The venue domain on top of the store: check-ins, attendees, the entity registry (zones,
//! beacons, sessions), devices, and idempotency keys. Every change goes through an op
//! ([`crate::oplog`]) except device credentials, which are this appliance's own access list.

pub mod attendees;
pub mod checkins;
pub mod console;
pub mod devices;
pub mod entities;
pub mod groups;
pub mod idempotency;
pub mod messages;
pub mod print_jobs;
pub mod printers;
pub mod retained;
pub mod schedule;
pub mod signage;
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

/// The one vocabulary every transport answers a refused request in: the same code on HTTP (with
/// its status), in a WebSocket `ack`/`error` frame, and in an MQTT check-in result (which carries
/// the HTTP status too). `http::error`, `hub::Refused`, `http::ws` and `mqtt::ingest` all map
/// through [`DomainError::code`], so they cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The named thing does not exist.
    NotFound,
    /// Well-formed but wrong content.
    Invalid,
    /// In conflict with the current state.
    Conflict,
    /// An idempotency key (or a frame id) reused for a different request.
    KeyReused,
    /// The daemon is shutting down; retry (with the same key) against the next run.
    ShuttingDown,
    /// The store could not take the write (disk full or failing); nothing was written.
    Unavailable,
    /// A bug, not a condition that passes.
    Internal,
}

/// Seconds a client is asked to wait before retrying a write the store could not take.
pub const RETRY_AFTER_SECS: u64 = 5;

impl Code {
    /// The stable machine-readable code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::Invalid => "invalid",
            Self::Conflict => "conflict",
            Self::KeyReused => "idempotency_key_reused",
            Self::ShuttingDown => "shutting_down",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status (also the `status` of an MQTT check-in result).
    pub fn http_status(self) -> u16 {
        match self {
            Self::NotFound => 404,
            Self::Invalid => 422,
            Self::Conflict | Self::KeyReused => 409,
            Self::ShuttingDown | Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }

    /// How long to wait before retrying, when retrying later may succeed.
    pub fn retry_after_secs(self) -> Option<u64> {
        match self {
            Self::Unavailable => Some(RETRY_AFTER_SECS),
            _ => None,
        }
    }
}

impl DomainError {
    /// How every transport names this refusal.
    pub fn code(&self) -> Code {
        match self {
            Self::NotFound(_) => Code::NotFound,
            Self::Invalid(_) => Code::Invalid,
            Self::Conflict(_) => Code::Conflict,
            Self::KeyReused(_) => Code::KeyReused,
            Self::Apply(ApplyError::Store(s)) | Self::Store(s) => match s {
                StoreError::Closed => Code::ShuttingDown,
                // Bugs, not conditions that pass: a retry would fail the same way.
                StoreError::JobPanicked
                | StoreError::NewerSchema { .. }
                | StoreError::Migration { .. } => Code::Internal,
                // A full disk, an I/O error, a busy file: the same request may succeed later.
                _ => Code::Unavailable,
            },
            Self::Apply(_) => Code::Invalid,
        }
    }

    /// What a client is told: the error itself for its own mistakes; for the store's failures
    /// a fixed sentence saying what to do (the cause goes to the log, never to the network).
    pub fn public_message(&self) -> String {
        match self.code() {
            Code::ShuttingDown => {
                "the daemon is shutting down; retry with the same idempotency key".into()
            }
            Code::Unavailable => "the appliance could not store this (disk full or failing?); nothing was written: retry with the same idempotency key".into(),
            Code::Internal => "internal error; the daemon's log has the cause".into(),
            _ => self.to_string(),
        }
    }
}

impl From<StoreError> for Code {
    fn from(e: StoreError) -> Self {
        DomainError::Store(e).code()
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
