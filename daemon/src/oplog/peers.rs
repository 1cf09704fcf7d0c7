//! The op log as peers on the LAN read it, and how far this box has read each peer's.

use rusqlite::{Connection, OptionalExtension, params};
use sync_agent::Op;

use super::ApplyError;

/// How far `node`'s log was pulled (its seq); 0 for a peer never pulled.
pub fn cursor(conn: &Connection, node: &str) -> Result<u64, rusqlite::Error> {
    Ok(conn
        .query_row(
            "SELECT cursor FROM peer_cursors WHERE node = ?1",
            [node],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .unwrap_or(0)
        .max(0) as u64)
}

/// Records how far `node`'s log was pulled.
pub fn set_cursor(
    conn: &Connection,
    node: &str,
    cursor: u64,
    now_ms: u64,
) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "INSERT INTO peer_cursors (node, cursor, updated_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (node) DO UPDATE SET cursor = excluded.cursor, updated_ms = excluded.updated_ms",
    )?
    .execute(params![node, cursor as i64, now_ms as i64])?;
    Ok(())
}

/// One pull's worth of this box's log for peer `caller`.
#[derive(Debug, Default)]
pub struct Served {
    /// Ops after the asked seq, oldest first, without the caller's own.
    pub ops: Vec<Op>,
    /// The last seq looked at: the caller's next `after`.
    pub cursor: u64,
    /// Ops are left after `cursor`.
    pub has_more: bool,
    /// The newest seq of the log.
    pub head: u64,
}

/// Up to `limit` ops after `after` (and about `target_bytes` of them, at least one), skipping the
/// ones `caller` made: it has them.
pub fn serve(
    conn: &Connection,
    caller: &str,
    after: u64,
    limit: u32,
    target_bytes: usize,
) -> Result<Served, ApplyError> {
    let head: i64 = conn.query_row("SELECT coalesce(max(seq), 0) FROM ops", [], |r| r.get(0))?;
    let mut served = Served {
        cursor: after,
        head: head.max(0) as u64,
        ..Served::default()
    };
    let mut bytes = 0;
    for (seq, op) in super::read_after(conn, after as i64, limit)? {
        if bytes >= target_bytes {
            break;
        }
        served.cursor = seq as u64;
        if op.origin != caller {
            bytes += op.body.to_string().len() + 200;
            served.ops.push(op);
        }
    }
    served.has_more = served.cursor < served.head;
    Ok(served)
}
