//! The op log: applying an op to the domain tables and appending it to `ops`, in one transaction,
//! idempotent by op id. Local ops and ops from other appliances take this one path.
//!
//! Merge rules (DESIGN §5) by kind family:
//! - `*.upsert` (events, zones, beacons, attendees, sessions): last-writer-wins per field by HLC
//!   ([`lww`]). Deletion is the field `deleted`.
//! - `checkin.record`: an append-only fact; the earliest by HLC per attendee is the check-in, the
//!   others are kept, marked `duplicate_of`, and listed in `conflicts` ([`checkin`]).
//!
//! Every rule gives the same state whatever order the ops arrive in.

mod checkin;
mod lww;

use rusqlite::{Connection, params};
use sync_agent::Op;

pub use lww::{ENTITIES, Entity, FieldType, PRIVACY_LEVELS, check_field};

/// Op kind: a check-in at a kiosk (append-only fact).
pub const CHECKIN_RECORD: &str = "checkin.record";

/// What [`apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The op was new and is now applied and logged.
    New,
    /// The op id was already in the log; nothing changed.
    Duplicate,
}

/// Why an op was refused. Nothing of a refused op is written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// No rule exists for this kind in this build.
    #[error("unknown op kind `{0}`; this venued cannot apply it (is a newer release sending it?)")]
    UnknownKind(String),
    /// The body does not fit the kind.
    #[error("invalid `{kind}` op for `{entity_id}`: {reason}")]
    InvalidBody {
        /// The op kind.
        kind: String,
        /// The entity the op names.
        entity_id: String,
        /// What was wrong.
        reason: String,
    },
    /// The entity exists in another event.
    #[error("`{entity_id}` belongs to event `{existing}`, not `{scope}`")]
    ScopeMismatch {
        /// The entity.
        entity_id: String,
        /// The event it belongs to.
        existing: String,
        /// The event the op named.
        scope: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl From<rusqlite::Error> for ApplyError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(e.into())
    }
}

/// Applies `op` and appends it to the log, or does nothing if its id is already logged.
/// Must run inside a transaction (the writer's job savepoint), so a refused op leaves no trace.
pub fn apply(conn: &Connection, op: &Op, now_ms: u64) -> Result<Applied, ApplyError> {
    let invalid = |reason: String| ApplyError::InvalidBody {
        kind: op.kind.clone(),
        entity_id: op.entity_id.clone(),
        reason,
    };
    if op.entity_id.is_empty() || op.entity_id.len() > 128 {
        return Err(invalid("entity id must be 1-128 bytes".into()));
    }
    if !crate::config::is_valid_id(&op.scope) {
        return Err(invalid(format!(
            "scope `{}` is not a valid event id",
            op.scope
        )));
    }
    // Validate before logging, so the log never holds an op its kind cannot apply.
    let rule = if op.kind == CHECKIN_RECORD {
        Rule::Checkin(checkin::parse(op).map_err(invalid)?)
    } else if let Some(entity) = ENTITIES.iter().find(|e| e.kind == op.kind) {
        Rule::Lww(entity, lww::parse(entity, op).map_err(invalid)?)
    } else {
        return Err(ApplyError::UnknownKind(op.kind.clone()));
    };

    let json = serde_json::to_string(op).map_err(|e| invalid(e.to_string()))?;
    let inserted = conn.execute(
        "INSERT INTO ops (id, hlc_wall, hlc_counter, hlc_node, origin, scope, kind, entity_id, op,
                          received_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (id) DO NOTHING",
        params![
            op.id.to_string(),
            op.hlc.wall_ms as i64,
            op.hlc.counter,
            op.hlc.node,
            op.origin,
            op.scope,
            op.kind,
            op.entity_id,
            json,
            now_ms as i64,
        ],
    )?;
    if inserted == 0 {
        return Ok(Applied::Duplicate);
    }
    match rule {
        Rule::Lww(entity, fields) => lww::apply(conn, entity, op, &fields)?,
        Rule::Checkin(body) => checkin::apply(conn, op, &body, now_ms)?,
    }
    Ok(Applied::New)
}

enum Rule {
    Lww(&'static Entity, Vec<(&'static str, rusqlite::types::Value)>),
    Checkin(checkin::Body),
}

/// The HLC and id of an op as a sortable key: the total order every merge rule uses.
fn order_key(op: &Op) -> (i64, i64, String, String) {
    (
        op.hlc.wall_ms as i64,
        i64::from(op.hlc.counter),
        op.hlc.node.clone(),
        op.id.to_string(),
    )
}

#[cfg(test)]
mod tests;
