//! The op log as the sync outbox: ops the relay may not have (after `meta.outbox_acked_seq`,
//! and not pulled from the relay: `ops.upstream = 0`), whichever node made them — an op pulled
//! from a peer on the LAN is carried upstream by every box that has it, and the relay keeps it
//! once by id; the pull cursor, ops parked on either side, and the conflicts
//! reported to the relay. The sync agent's store (`crate::sync`) and the status endpoints read
//! and write these; the cursors move in the same transactions as what they describe.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sync_agent::Op;
use sync_agent::wire::ConflictReport;

use crate::store::{Store, StoreError, meta};

/// `meta` key: the local seq the relay has acknowledged up to.
pub const ACKED: &str = "outbox_acked_seq";
/// `meta` key: the relay's seq pulled up to.
pub const PULL_CURSOR: &str = "pull_cursor";
/// `meta` key: conflicts recorded up to this time were reported to the relay.
pub const CONFLICTS_REPORTED: &str = "conflicts_reported_ms";

/// The size and age of the backlog.
#[derive(Debug, Clone, Serialize)]
pub struct Backlog {
    /// Ops (this box's and its peers') the relay has not acknowledged.
    pub ops: u64,
    /// Local sequence the relay has acknowledged up to.
    pub acked_seq: i64,
    /// Age in seconds of the oldest unacknowledged op, if any.
    pub oldest_unsent_age_secs: Option<u64>,
}

/// Reads the backlog.
pub async fn backlog(store: &Store) -> Result<Backlog, StoreError> {
    store
        .read(move |conn| {
            let acked = meta::get_i64(conn, ACKED)?;
            let (count, oldest): (i64, Option<i64>) = conn.query_row(
                "SELECT count(*), min(received_ms) FROM ops WHERE seq > ?1 AND upstream = 0",
                params![acked],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let now = crate::store::now_ms() as i64;
            Ok(Backlog {
                ops: count as u64,
                acked_seq: acked,
                oldest_unsent_age_secs: oldest.map(|t| ((now - t).max(0) / 1000) as u64),
            })
        })
        .await
}

/// The seqs of up to `max` ops to push after `acked`, in log order.
pub fn pending_seqs(
    conn: &Connection,
    acked: i64,
    max: usize,
) -> Result<Vec<i64>, rusqlite::Error> {
    conn.prepare_cached(
        "SELECT seq FROM ops WHERE seq > ?1 AND upstream = 0 ORDER BY seq LIMIT ?2",
    )?
    .query_map(params![acked, max as i64], |r| r.get(0))?
    .collect()
}

/// How many ops to push are after `acked`, and when the oldest of them arrived.
pub fn pending_count(conn: &Connection, acked: i64) -> Result<(u64, Option<i64>), rusqlite::Error> {
    let count: i64 = conn.query_row(
        "SELECT count(*) FROM ops WHERE seq > ?1 AND upstream = 0",
        params![acked],
        |r| r.get(0),
    )?;
    Ok((count as u64, oldest_pending_ms(conn, acked)?))
}

/// When the oldest op to push after `acked` arrived here (seq order is arrival order).
pub fn oldest_pending_ms(conn: &Connection, acked: i64) -> Result<Option<i64>, rusqlite::Error> {
    conn.query_row(
        "SELECT received_ms FROM ops WHERE seq > ?1 AND upstream = 0 ORDER BY seq LIMIT 1",
        params![acked],
        |r| r.get(0),
    )
    .optional()
}

/// Marks an op as one the relay has (it came from the relay): never pushed.
pub fn mark_upstream(conn: &Connection, op_id: &str) -> Result<(), rusqlite::Error> {
    conn.prepare_cached("UPDATE ops SET upstream = 1 WHERE id = ?1 AND upstream = 0")?
        .execute([op_id])?;
    Ok(())
}

/// Ops parked on either side.
pub fn parked_count(conn: &Connection) -> Result<u64, rusqlite::Error> {
    conn.query_row("SELECT count(*) FROM sync_parked", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n as u64)
}

/// Parks a local op the relay refused (it stays in `ops`).
pub fn park_pushed(
    conn: &Connection,
    op_id: &str,
    reason: &str,
    now_ms: u64,
) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "INSERT INTO sync_parked (op_id, direction, kind, reason, op, parked_ms)
         SELECT id, 'push', kind, ?2, NULL, ?3 FROM ops WHERE id = ?1
         ON CONFLICT DO UPDATE SET reason = excluded.reason",
    )?
    .execute(params![op_id, reason, now_ms as i64])?;
    Ok(())
}

/// Parks a remote op this build cannot apply, whole, so an upgrade (or an operator) can.
pub fn park_pulled(
    conn: &Connection,
    op: &Op,
    reason: &str,
    now_ms: u64,
) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "INSERT INTO sync_parked (op_id, direction, kind, reason, op, parked_ms)
         VALUES (?1, 'pull', ?2, ?3, ?4, ?5)
         ON CONFLICT DO UPDATE SET reason = excluded.reason",
    )?
    .execute(params![
        op.id.to_string(),
        op.kind,
        reason,
        serde_json::to_string(op).unwrap_or_default(),
        now_ms as i64
    ])?;
    Ok(())
}

/// One parked op, for `GET /api/v1/admin/sync/parked`.
#[derive(Debug, Serialize)]
pub struct ParkedView {
    /// The op id.
    pub op_id: String,
    /// `push` (the relay refused it) or `pull` (this build cannot apply it).
    pub direction: String,
    /// The op kind.
    pub kind: String,
    /// Why.
    pub reason: String,
    /// When (RFC 3339).
    pub parked_at: String,
}

/// The newest parked ops.
pub fn parked(conn: &Connection, limit: u32) -> Result<Vec<ParkedView>, rusqlite::Error> {
    conn.prepare(
        "SELECT op_id, direction, kind, reason, parked_ms FROM sync_parked
         ORDER BY parked_ms DESC LIMIT ?1",
    )?
    .query_map([limit], |r| {
        Ok(ParkedView {
            op_id: r.get(0)?,
            direction: r.get(1)?,
            kind: r.get(2)?,
            reason: r.get(3)?,
            parked_at: crate::domain::rfc3339(r.get(4)?),
        })
    })?
    .collect()
}

/// Conflicts recorded after `after_ms`, oldest first, at most `limit` (a push's report).
pub fn conflicts_since(
    conn: &Connection,
    after_ms: i64,
    limit: u32,
) -> Result<Vec<ConflictReport>, rusqlite::Error> {
    conn.prepare_cached(
        "SELECT op_id, kind, entity_id, winner_op_id, detail, recorded_ms
         FROM conflicts WHERE recorded_ms > ?1 ORDER BY recorded_ms LIMIT ?2",
    )?
    .query_map(params![after_ms, limit], conflict)?
    .collect()
}

/// The newest `limit` conflicts, newest first.
pub fn newest_conflicts(
    conn: &Connection,
    limit: u32,
) -> Result<Vec<ConflictReport>, rusqlite::Error> {
    conn.prepare(
        "SELECT op_id, kind, entity_id, winner_op_id, detail, recorded_ms FROM conflicts
         ORDER BY recorded_ms DESC LIMIT ?1",
    )?
    .query_map([limit], conflict)?
    .collect()
}

fn conflict(r: &rusqlite::Row<'_>) -> rusqlite::Result<ConflictReport> {
    Ok(ConflictReport {
        op_id: r.get(0)?,
        kind: r.get(1)?,
        entity_id: r.get(2)?,
        winner_op_id: r.get(3)?,
        detail: r.get(4)?,
        recorded_ms: r.get::<_, i64>(5)? as u64,
    })
}
