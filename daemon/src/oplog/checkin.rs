//! Check-ins: append-only facts. Two appliances that were offline may both check in the same
//! attendee; both facts are kept, the earliest by HLC is the check-in, and the others are flagged
//! for staff in `conflicts` (DESIGN §5, business conflicts).

use super::BodyError;
use rusqlite::{Connection, params};
use sync_agent::Op;

use super::{ApplyError, OrderKey};

/// The body of a `checkin.record` op; the entity id is the attendee id.
#[derive(Debug)]
pub(super) struct Body {
    device_id: Option<String>,
}

pub(super) fn parse(op: &Op) -> Result<Body, BodyError> {
    let body = op.body.as_object().ok_or(BodyError::NotAnObject)?;
    let device_id = match body.get("device_id") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if crate::config::is_valid_id(s) => Some(s.clone()),
        other => return Err(BodyError::expected("device_id", "a device id", other)),
    };
    Ok(Body { device_id })
}

pub(super) fn apply(
    conn: &Connection,
    op: &Op,
    key: &OrderKey<'_>,
    body: &Body,
    now_ms: u64,
) -> Result<(), ApplyError> {
    conn.prepare_cached(
        "INSERT INTO checkins (op_id, event_id, attendee_id, device_id, origin, hlc_wall,
                               hlc_counter, hlc_node)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        key.id,
        op.scope,
        op.entity_id,
        body.device_id,
        op.origin,
        key.wall,
        key.counter,
        key.node
    ])?;
    // The usual case, the attendee's only check-in, needs neither the sort nor the rows below.
    let facts: i64 = conn
        .prepare_cached("SELECT count(*) FROM checkins WHERE attendee_id = ?1")?
        .query_row(params![op.entity_id], |r| r.get(0))?;
    if facts == 1 {
        return Ok(());
    }
    // Recompute the winner for this attendee: the earliest fact by (HLC, op id). The result is
    // the same whichever order the facts arrived in.
    let mut stmt = conn.prepare_cached(
        "SELECT op_id, origin FROM checkins WHERE attendee_id = ?1
         ORDER BY hlc_wall, hlc_counter, hlc_node, op_id",
    )?;
    let rows: Vec<(String, String)> = stmt
        .query_map(params![op.entity_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let Some(((winner, winner_origin), rest)) = rows.split_first() else {
        return Ok(());
    };
    if rest.is_empty() {
        return Ok(());
    }
    conn.prepare_cached("UPDATE checkins SET duplicate_of = NULL WHERE op_id = ?1")?
        .execute(params![winner])?;
    conn.prepare_cached("DELETE FROM conflicts WHERE op_id = ?1")?
        .execute(params![winner])?;
    for (dup, dup_origin) in rest {
        conn.prepare_cached("UPDATE checkins SET duplicate_of = ?1 WHERE op_id = ?2")?
            .execute(params![winner, dup])?;
        let detail = serde_json::json!({
            "attendee_id": op.entity_id,
            "checkin_origin": winner_origin,
            "duplicate_origin": dup_origin,
            "message": "attendee checked in more than once; the earliest check-in counts",
        });
        conn.prepare_cached(
            "INSERT INTO conflicts (op_id, kind, entity_id, winner_op_id, detail, recorded_ms)
             VALUES (?1, 'checkin.duplicate', ?2, ?3, ?4, ?5)
             ON CONFLICT (op_id) DO UPDATE SET winner_op_id = excluded.winner_op_id,
                                               detail = excluded.detail",
        )?
        .execute(params![
            dup,
            op.entity_id,
            winner,
            detail.to_string(),
            now_ms as i64
        ])?;
    }
    Ok(())
}
