//! The op log: applying an op to the domain tables and appending it to `ops`, in one transaction,
//! idempotent by op id. Local ops and ops from other appliances take this one path.
//!
//! Merge rules (DESIGN §5) by kind family:
//! - `*.upsert` (events, zones, beacons, attendees, sessions): last-writer-wins per field by HLC
//!   ([`lww`]). Deletion is the field `deleted`.
//! - `checkin.record`: an append-only fact; the earliest by HLC per attendee is the check-in, the
//!   others are kept, marked `duplicate_of`, and listed in `conflicts` ([`checkin`]).
//! - `presence.transition`: an append-only fact, dropped when a `presence.forget` of the same
//!   attendee covers it, whichever arrives first ([`presence`]).
//! - `message.post`: an append-only fact with a local per-channel seq; `message.edit`:
//!   last-writer-wins on the content by HLC; `message.delete`: final, beats every edit;
//!   `message.react`: an observed-remove set. Edits and deletes that arrive before their
//!   message are applied when it arrives ([`message`]).
//! - `group.create`: an append-only fact; `group.members`: an observed-remove set ([`group`]).
//!
//! Every rule gives the same state whatever order the ops arrive in.

mod body;
mod checkin;
pub mod group;
mod lww;
pub mod message;
pub mod outbox;
pub mod peers;
pub mod presence;
pub mod token_key;

use rusqlite::{Connection, params};
use sync_agent::Op;

pub use body::BodyError;

pub use lww::{ENTITIES, Entity, FieldError, FieldType, PRIVACY_LEVELS, check_field};

/// Op kind: an attendee created, changed (badge, privacy, ...) or deleted.
pub const ATTENDEE_UPSERT: &str = "attendee.upsert";

/// Op kind: a check-in at a kiosk (append-only fact).
pub const CHECKIN_RECORD: &str = "checkin.record";

/// What [`apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The op was new and is now applied and logged at this local sequence number.
    New(i64),
    /// The op id was already in the log; nothing changed.
    Duplicate,
}

impl Applied {
    /// The op's local sequence number, when it was new (0 for a duplicate: nothing to wait for).
    pub fn seq(self) -> i64 {
        match self {
            Self::New(seq) => seq,
            Self::Duplicate => 0,
        }
    }
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
        reason: BodyError,
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
    /// The op's stamp is too far ahead of this node's clock to be observed.
    #[error(transparent)]
    ClockAhead(#[from] sync_agent::ClockAhead),
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
    let invalid = |reason: BodyError| ApplyError::InvalidBody {
        kind: op.kind.clone(),
        entity_id: op.entity_id.clone(),
        reason,
    };
    if op.entity_id.is_empty() || op.entity_id.len() > 128 {
        return Err(invalid(BodyError::EntityId));
    }
    if op.hlc.wall_ms > sync_agent::hlc::MAX_WALL_MS {
        // Stored as SQLite's signed integer: a larger value would turn negative and sort first.
        return Err(invalid(BodyError::WallMs(op.hlc.wall_ms)));
    }
    if !crate::config::is_valid_id(&op.scope) {
        return Err(invalid(BodyError::Scope(op.scope.clone())));
    }
    // Validate before logging, so the log never holds an op its kind cannot apply.
    let rule = if op.kind == CHECKIN_RECORD {
        Rule::Checkin(checkin::parse(op).map_err(invalid)?)
    } else if op.kind == presence::TRANSITION {
        Rule::Transition(presence::parse_transition(op).map_err(invalid)?)
    } else if op.kind == presence::FORGET {
        Rule::Forget(presence::parse_forget(op).map_err(invalid)?)
    } else if op.kind == message::POST {
        Rule::Message(message::parse(op).map_err(invalid)?)
    } else if [message::EDIT, message::DELETE, message::REACT].contains(&op.kind.as_str()) {
        Rule::MessageChange(message::parse_change(op).map_err(invalid)?)
    } else if op.kind == group::CREATE || op.kind == group::MEMBERS {
        Rule::Group(group::parse(op).map_err(invalid)?)
    } else if op.kind == token_key::PUBLISH {
        Rule::TokenKey(token_key::parse(op).map_err(invalid)?)
    } else if let Some(entity) = ENTITIES.iter().find(|e| e.kind == op.kind) {
        Rule::Lww(entity, lww::parse(entity, op).map_err(invalid)?)
    } else {
        return Err(ApplyError::UnknownKind(op.kind.clone()));
    };

    let extra = match op.extra.is_empty() {
        true => None,
        false => Some(serde_json::Value::Object(op.extra.clone()).to_string()),
    };
    let mut id_buf = [0; uuid::fmt::Hyphenated::LENGTH];
    let key = OrderKey::new(op, &mut id_buf);
    let inserted = conn.prepare_cached(
        "INSERT INTO ops (id, v, hlc_wall, hlc_counter, hlc_node, origin, scope, kind, entity_id,
                          body, extra, received_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT (id) DO NOTHING",
    )?
    .execute(params![
            key.id,
            op.v,
            op.hlc.wall_ms as i64,
            op.hlc.counter,
            op.hlc.node,
            op.origin,
            op.scope,
            op.kind,
            op.entity_id,
            op.body.to_string(),
            extra,
            now_ms as i64,
        ])?;
    if inserted == 0 {
        return Ok(Applied::Duplicate);
    }
    // Read before the rule inserts rows of its own.
    let seq = conn.last_insert_rowid();
    match rule {
        Rule::Lww(entity, fields) => lww::apply(conn, entity, op, &key, &fields)?,
        Rule::Checkin(body) => checkin::apply(conn, op, &key, &body, now_ms)?,
        Rule::Transition(t) => presence::apply_transition(conn, op, &t)?,
        Rule::Forget(before_ms) => presence::apply_forget(conn, op, before_ms)?,
        Rule::Message(body) => message::apply(conn, op, &body)?,
        Rule::MessageChange(change) => message::apply_change(conn, op, &change)?,
        Rule::Group(body) => group::apply(conn, op, &body)?,
        Rule::TokenKey(body) => token_key::apply(conn, op, &body, now_ms)?,
    }
    Ok(Applied::New(seq))
}

/// Logged ops with a local sequence above `after_seq`, oldest first, at most `limit`: what the
/// sync agent ships, and how ops are read back for tests and digests.
pub fn read_after(
    conn: &Connection,
    after_seq: i64,
    limit: u32,
) -> Result<Vec<(i64, Op)>, ApplyError> {
    let mut stmt = conn.prepare_cached(&format!(
        "{LOGGED_OP_COLUMNS} FROM ops WHERE seq > ?1 ORDER BY seq LIMIT ?2"
    ))?;
    logged_ops(&mut stmt, params![after_seq, limit])
}

/// The logged edits and deletes of one message, in log order (applied again when the message
/// itself arrives after them).
pub(crate) fn message_changes(
    conn: &Connection,
    message_id: &str,
) -> Result<Vec<(i64, Op)>, ApplyError> {
    let mut stmt = conn.prepare_cached(&format!(
        "{LOGGED_OP_COLUMNS} FROM ops WHERE entity_id = ?1 AND kind IN ('{}', '{}') ORDER BY seq",
        message::EDIT,
        message::DELETE
    ))?;
    logged_ops(&mut stmt, params![message_id])
}

const LOGGED_OP_COLUMNS: &str = "SELECT seq, id, v, hlc_wall, hlc_counter, hlc_node, origin, scope, kind, entity_id, body, extra";

/// Runs a query over [`LOGGED_OP_COLUMNS`] and rebuilds the ops.
fn logged_ops(
    stmt: &mut rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
) -> Result<Vec<(i64, Op)>, ApplyError> {
    let rows = stmt.query_map(params, |r| {
        let id: String = r.get(1)?;
        let body: String = r.get(10)?;
        let extra: Option<String> = r.get(11)?;
        Ok((
            r.get::<_, i64>(0)?,
            id,
            r.get::<_, u32>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, u32>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, String>(6)?,
            r.get::<_, String>(7)?,
            r.get::<_, String>(8)?,
            r.get::<_, String>(9)?,
            body,
            extra,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, id, v, wall, counter, node, origin, scope, kind, entity_id, body, extra) = row?;
        // These columns were written from a valid op by `apply`; a parse failure means the file
        // was edited by hand, and is reported rather than skipped.
        let corrupt = |column: &'static str| ApplyError::InvalidBody {
            kind: kind.clone(),
            entity_id: entity_id.clone(),
            reason: BodyError::Corrupt { seq, column },
        };
        let extra = match extra {
            Some(text) => match serde_json::from_str(&text) {
                Ok(serde_json::Value::Object(map)) => map,
                _ => return Err(corrupt("extra")),
            },
            None => serde_json::Map::new(),
        };
        out.push((
            seq,
            Op {
                id: id.parse().map_err(|_| corrupt("id"))?,
                v,
                hlc: sync_agent::Hlc {
                    wall_ms: wall as u64,
                    counter,
                    node,
                },
                origin,
                scope,
                kind: kind.clone(),
                entity_id: entity_id.clone(),
                body: serde_json::from_str(&body).map_err(|_| corrupt("body"))?,
                extra,
            },
        ));
    }
    Ok(out)
}

enum Rule {
    Lww(&'static Entity, Vec<(&'static str, rusqlite::types::Value)>),
    Checkin(checkin::Body),
    Transition(presence::Transition),
    Forget(i64),
    Message(message::Body),
    MessageChange(message::Change),
    Group(group::Body),
    TokenKey(token_key::Body),
}

/// The HLC and id of an op as a sortable key: the total order every merge rule uses. The id is
/// its text form encoded on the stack (the writer thread's hot path allocates nothing for it).
struct OrderKey<'a> {
    wall: i64,
    counter: i64,
    node: &'a str,
    id: &'a str,
}

impl<'a> OrderKey<'a> {
    /// The key of `op`, its id encoded into `buf`.
    fn new(op: &'a Op, buf: &'a mut [u8; uuid::fmt::Hyphenated::LENGTH]) -> Self {
        Self {
            wall: op.hlc.wall_ms as i64,
            counter: i64::from(op.hlc.counter),
            node: &op.hlc.node,
            id: op.id.hyphenated().encode_lower(buf),
        }
    }
}

#[cfg(test)]
mod tests;
