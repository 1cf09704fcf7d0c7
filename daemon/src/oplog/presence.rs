//! Zone transitions of attendees, and forgetting them.
//!
//! - `presence.transition` (entity: attendee): an append-only fact `{kind, zone_id, at_ms}`.
//! - `presence.forget` (entity: attendee): `{before_ms}`; every transition of the attendee at
//!   or before it is deleted, op included, and one arriving later (from an appliance that had
//!   not heard of the forget) is dropped on arrival. The result is the same in any order.
//!
//! Transitions are personal location data: they are also purged after the retention period
//! ([`purge_before`]), ops included. This is the one place where ops leave the log.

use super::BodyError;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use sync_agent::Op;

use super::ApplyError;

/// Op kind of a zone transition.
pub const TRANSITION: &str = "presence.transition";
/// Op kind of forgetting an attendee's trail.
pub const FORGET: &str = "presence.forget";

/// A checked `presence.transition` body.
#[derive(Debug)]
pub(super) struct Transition {
    kind: String,
    zone_id: Option<String>,
    at_ms: i64,
}

pub(super) fn parse_transition(op: &Op) -> Result<Transition, BodyError> {
    let kind = match op.body.get("kind").and_then(Value::as_str) {
        Some(k @ ("entered" | "moved" | "left")) => k.to_string(),
        _ => {
            let found = op.body.get("kind");
            return Err(BodyError::expected("kind", "entered, moved or left", found));
        }
    };
    let zone_id = match op.body.get("zone_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(z)) if crate::config::is_valid_id(z) => Some(z.clone()),
        other => return Err(BodyError::expected("zone_id", "a zone id or null", other)),
    };
    let at_ms = at_ms(op, "at_ms")?;
    Ok(Transition {
        kind,
        zone_id,
        at_ms,
    })
}

pub(super) fn parse_forget(op: &Op) -> Result<i64, BodyError> {
    at_ms(op, "before_ms")
}

fn at_ms(op: &Op, field: &'static str) -> Result<i64, BodyError> {
    let value = op.body.get(field);
    value
        .and_then(Value::as_i64)
        .filter(|t| *t >= 0)
        .ok_or_else(|| BodyError::expected(field, "milliseconds since the epoch", value))
}

fn forgotten_until(conn: &Connection, attendee: &str) -> Result<Option<i64>, ApplyError> {
    Ok(conn
        .prepare_cached("SELECT before_ms FROM location_forgets WHERE attendee_id = ?1")?
        .query_row(params![attendee], |r| r.get(0))
        .optional()?)
}

pub(super) fn apply_transition(
    conn: &Connection,
    op: &Op,
    t: &Transition,
) -> Result<(), ApplyError> {
    if forgotten_until(conn, &op.entity_id)?.is_some_and(|before| t.at_ms <= before) {
        // The attendee asked to forget this period: keep neither the fact nor the op.
        conn.prepare_cached("DELETE FROM ops WHERE id = ?1")?
            .execute(params![op.id.to_string()])?;
        return Ok(());
    }
    conn.prepare_cached(
        "INSERT INTO zone_transitions (op_id, event_id, attendee_id, kind, zone_id, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (op_id) DO NOTHING",
    )?
    .execute(params![
        op.id.to_string(),
        op.scope,
        op.entity_id,
        t.kind,
        t.zone_id,
        t.at_ms
    ])?;
    Ok(())
}

pub(super) fn apply_forget(conn: &Connection, op: &Op, before_ms: i64) -> Result<(), ApplyError> {
    conn.prepare_cached(
        "INSERT INTO location_forgets (attendee_id, before_ms) VALUES (?1, ?2)
         ON CONFLICT (attendee_id) DO UPDATE SET before_ms = max(before_ms, excluded.before_ms)",
    )?
    .execute(params![op.entity_id, before_ms])?;
    conn.prepare_cached(
        "DELETE FROM ops WHERE id IN (SELECT op_id FROM zone_transitions
                                      WHERE attendee_id = ?1 AND at_ms <= ?2)",
    )?
    .execute(params![op.entity_id, before_ms])?;
    conn.prepare_cached("DELETE FROM zone_transitions WHERE attendee_id = ?1 AND at_ms <= ?2")?
        .execute(params![op.entity_id, before_ms])?;
    Ok(())
}

/// Deletes transitions (and their ops) older than `cutoff_ms`; returns how many.
pub fn purge_before(conn: &Connection, cutoff_ms: i64) -> Result<usize, ApplyError> {
    conn.prepare_cached(
        "DELETE FROM ops WHERE id IN (SELECT op_id FROM zone_transitions WHERE at_ms < ?1)",
    )?
    .execute(params![cutoff_ms])?;
    Ok(conn
        .prepare_cached("DELETE FROM zone_transitions WHERE at_ms < ?1")?
        .execute(params![cutoff_ms])?)
}
