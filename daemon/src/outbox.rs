//! The outbox view of the op log: local ops the relay has not acknowledged yet.
//!
//! The sync agent (a later step) advances `meta.outbox_acked_seq` as the relay acknowledges
//! batches; until then every local op counts as backlog.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use crate::store::{Store, StoreError};

/// The size and age of the backlog.
#[derive(Debug, Clone, Serialize)]
pub struct Backlog {
    /// Local ops not yet acknowledged.
    pub ops: u64,
    /// Local sequence the relay has acknowledged up to.
    pub acked_seq: i64,
    /// Age in seconds of the oldest unacknowledged op, if any.
    pub oldest_unsent_age_secs: Option<u64>,
}

/// Reads the backlog.
pub async fn backlog(store: &Store) -> Result<Backlog, StoreError> {
    let node = store.node_id().to_string();
    store
        .read(move |conn| {
            let acked: i64 = conn
                .query_row(
                    "SELECT value FROM meta WHERE key = 'outbox_acked_seq'",
                    [],
                    |r| r.get::<_, String>(0),
                )
                .optional()?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let (count, oldest): (i64, Option<i64>) = conn.query_row(
                "SELECT count(*), min(received_ms) FROM ops WHERE origin = ?1 AND seq > ?2",
                params![node, acked],
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
