//! The SQLite backend: one file, one writer connection (WAL, `synchronous=FULL`, so an answer to
//! a push means fsynced), a few reader connections for pulls. One relay instance only: a second
//! process on the same file would not wake the first one's long-polls.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use sync_agent::wire::{
    ConflictReport, Op, PullResponse, PushResponse, Rejection, Report, TokenKey,
};
use tokio::sync::watch;

use super::{
    Appliance, ApplianceInfo, ConflictRecord, LogEntry, NewAppliance, NodeBinding, ParkedOp,
    Principal, RelayStore, StoreError, now_ms, split_repeats,
};

const READERS: usize = 4;

/// The SQLite backend.
#[derive(Clone)]
pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: Arc<std::sync::atomic::AtomicUsize>,
    changes: watch::Sender<u64>,
}

fn lock(m: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SqliteStore {
    /// Opens (creating) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let writer = Connection::open(path)?;
        writer.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))?;
        writer.execute_batch("PRAGMA synchronous = FULL;")?;
        writer.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut writer = writer;
        super::migrations::migrate_sqlite(&mut writer)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r = Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            r.busy_timeout(std::time::Duration::from_secs(5))?;
            readers.push(Mutex::new(r));
        }
        let head: i64 =
            writer.query_row("SELECT coalesce(max(seq), 0) FROM log", [], |r| r.get(0))?;
        let (changes, _) = watch::channel(head as u64);
        Ok(Self {
            writer: Arc::new(Mutex::new(writer)),
            readers: Arc::new(readers),
            next_reader: Arc::default(),
            changes,
        })
    }

    async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&writer)))
            .await
            .map_err(|e| StoreError::Corrupt(format!("storage task failed: {e}")))?
    }

    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let readers = self.readers.clone();
        let next = self.next_reader.clone();
        tokio::task::spawn_blocking(move || {
            // The first free reader, else queue on the next in turn.
            for r in readers.iter() {
                if let Ok(mut conn) = r.try_lock() {
                    return f(&mut conn);
                }
            }
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % readers.len();
            f(&mut lock(&readers[i]))
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("storage task failed: {e}")))?
    }
}

/// Relays made before node binding lack the column; it is added in place (the index keeps one
/// node to one appliance).
fn parse_events(text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("appliance events: {e}")))
}

fn parse_op(text: &str) -> Result<Op, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("logged op: {e}")))
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// `?, ?, …` for an `IN` list of `n` values after `first` fixed parameters.
fn placeholders(first: usize, n: usize) -> String {
    (first + 1..=first + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl RelayStore for SqliteStore {
    async fn add_appliance(&self, new: NewAppliance) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO appliances (id, org, name, events, token_hash, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    new.appliance.id,
                    new.appliance.org,
                    new.appliance.name,
                    json(&new.appliance.events),
                    new.token_hash,
                    now_ms() as i64
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn list_appliances(&self, org: Option<String>) -> Result<Vec<ApplianceInfo>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT id, org, name, events, created_ms, revoked_ms, last_seen_ms, report, node_id
                 FROM appliances WHERE ?1 IS NULL OR org = ?1 ORDER BY org, id",
            )?;
            let rows = stmt.query_map(params![org], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, org, name, events, created, revoked, seen, report, node) = row?;
                out.push(ApplianceInfo {
                    appliance: Appliance {
                        id,
                        org,
                        name,
                        events: parse_events(&events)?,
                        node,
                    },
                    created_ms: created as u64,
                    revoked_ms: revoked.map(|v| v as u64),
                    last_seen_ms: seen.map(|v| v as u64),
                    report: report.and_then(|r| serde_json::from_str(&r).ok()),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn revoke_appliance(&self, id: String, org: Option<String>) -> Result<bool, StoreError> {
        self.write(move |conn| {
            let n = conn.execute(
                "UPDATE appliances SET revoked_ms = coalesce(revoked_ms, ?1)
                 WHERE id = ?2 AND (?3 IS NULL OR org = ?3)",
                params![now_ms() as i64, id, org],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn add_operator(
        &self,
        org: Option<String>,
        token_hash: String,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO operators (token_hash, org, created_ms) VALUES (?1, ?2, ?3)",
                params![token_hash, org, now_ms() as i64],
            )?;
            Ok(())
        })
        .await
    }

    async fn authenticate(&self, token_hash: String) -> Result<Option<Principal>, StoreError> {
        self.read(move |conn| {
            let appliance = conn
                .query_row(
                    "SELECT id, org, name, events, node_id FROM appliances
                     WHERE token_hash = ?1 AND revoked_ms IS NULL",
                    params![token_hash],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, Option<String>>(4)?,
                        ))
                    },
                )
                .optional()?;
            if let Some((id, org, name, events, node)) = appliance {
                return Ok(Some(Principal::Appliance(Appliance {
                    id,
                    org,
                    name,
                    events: parse_events(&events)?,
                    node,
                })));
            }
            let operator = conn
                .query_row(
                    "SELECT org FROM operators WHERE token_hash = ?1",
                    params![token_hash],
                    |r| r.get::<_, Option<String>>(0),
                )
                .optional()?;
            Ok(operator.map(|org| Principal::Operator { org }))
        })
        .await
    }

    async fn bind_node(&self, id: String, node: String) -> Result<NodeBinding, StoreError> {
        self.write(move |conn| {
            let taken = conn
                .prepare_cached("SELECT 1 FROM appliances WHERE node_id = ?1 AND id != ?2")?
                .exists(params![node, id])?;
            if taken {
                return Ok(NodeBinding::Taken);
            }
            conn.execute(
                "UPDATE appliances SET node_id = ?2 WHERE id = ?1 AND node_id IS NULL",
                params![id, node],
            )?;
            let bound: Option<String> = conn.query_row(
                "SELECT node_id FROM appliances WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )?;
            Ok(bound.map_or(NodeBinding::Taken, NodeBinding::Bound))
        })
        .await
    }

    async fn push(
        &self,
        appliance: Appliance,
        ops: Vec<Op>,
        rejected: Vec<(Op, Rejection)>,
        report: Option<Report>,
    ) -> Result<PushResponse, StoreError> {
        let (unique, repeats) = split_repeats(ops);
        let response = self
            .write(move |conn| {
                let now = now_ms() as i64;
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let mut response = PushResponse::default();
                {
                    let mut insert = tx.prepare_cached(
                        "INSERT INTO log (op_id, event, appliance, op, received_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (op_id) DO NOTHING",
                    )?;
                    for op in &unique {
                        let n = insert.execute(params![
                            op.id.to_string(),
                            op.scope,
                            appliance.id,
                            json(op),
                            now
                        ])?;
                        match n {
                            0 => response.duplicates.push(op.id),
                            _ => response.accepted.push(op.id),
                        }
                    }
                    let mut park = tx.prepare_cached(
                        "INSERT INTO parked (op_id, appliance, org, event, code, reason, op, parked_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                         ON CONFLICT (appliance, op_id) DO UPDATE SET
                            code = excluded.code, reason = excluded.reason, parked_ms = excluded.parked_ms",
                    )?;
                    for (op, rejection) in &rejected {
                        park.execute(params![
                            op.id.to_string(),
                            appliance.id,
                            appliance.org,
                            op.scope,
                            rejection.code,
                            rejection.reason,
                            json(op),
                            now
                        ])?;
                    }
                    record_report(&tx, &appliance, report.as_ref(), now)?;
                }
                response.cursor =
                    tx.query_row("SELECT coalesce(max(seq), 0) FROM log", [], |r| r.get::<_, i64>(0))?
                        as u64;
                tx.commit()?;
                response.rejected = rejected.into_iter().map(|(_, r)| r).collect();
                Ok(response)
            })
            .await?;
        let mut response = response;
        response.duplicates.extend(repeats);
        if !response.accepted.is_empty() {
            self.changes.send_replace(response.cursor);
        }
        Ok(response)
    }

    async fn pull(
        &self,
        appliance: Appliance,
        after: u64,
        limit: u32,
    ) -> Result<PullResponse, StoreError> {
        let id = appliance.id.clone();
        self.write(move |conn| {
            conn.execute(
                "UPDATE appliances SET last_seen_ms = ?1 WHERE id = ?2",
                params![now_ms() as i64, id],
            )?;
            Ok(())
        })
        .await?;
        self.read(move |conn| {
            let tx = conn.transaction()?;
            let events = placeholders(3, appliance.events.len());
            let mut values: Vec<rusqlite::types::Value> = vec![
                (after as i64).into(),
                appliance.id.clone().into(),
                i64::from(limit).into(),
            ];
            values.extend(appliance.events.iter().map(|e| e.clone().into()));
            let mut ops = Vec::new();
            let mut last = after;
            {
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT seq, op FROM log
                     WHERE seq > ?1 AND appliance != ?2 AND event IN ({events})
                     ORDER BY seq LIMIT ?3"
                ))?;
                let rows = stmt.query_map(rusqlite::params_from_iter(values.iter()), |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })?;
                for row in rows {
                    let (seq, op) = row?;
                    last = seq as u64;
                    ops.push(parse_op(&op)?);
                }
            }
            let head_values: Vec<rusqlite::types::Value> =
                appliance.events.iter().map(|e| e.clone().into()).collect();
            let head: i64 = tx.query_row(
                &format!(
                    "SELECT coalesce(max(seq), 0) FROM log WHERE event IN ({})",
                    placeholders(0, appliance.events.len())
                ),
                rusqlite::params_from_iter(head_values.iter()),
                |r| r.get(0),
            )?;
            let head = (head as u64).max(after);
            let has_more = ops.len() as u32 == limit;
            let cursor = if has_more { last } else { head };
            Ok(PullResponse {
                ops,
                cursor,
                has_more,
                head,
            })
        })
        .await
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    async fn add_key(&self, key: TokenKey) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO keys (event, kid, alg, public_pem, added_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (event, kid) DO UPDATE SET alg = excluded.alg, public_pem = excluded.public_pem",
                params![key.event, key.kid, key.alg, key.public_pem, now_ms() as i64],
            )?;
            Ok(())
        })
        .await
    }

    async fn keys(&self, events: Vec<String>) -> Result<Vec<TokenKey>, StoreError> {
        self.read(move |conn| {
            let values: Vec<rusqlite::types::Value> = events.iter().map(|e| e.clone().into()).collect();
            let mut stmt = conn.prepare(&format!(
                "SELECT event, kid, alg, public_pem FROM keys WHERE event IN ({}) ORDER BY event, kid",
                placeholders(0, events.len())
            ))?;
            let rows = stmt.query_map(rusqlite::params_from_iter(values.iter()), |r| {
                Ok(TokenKey {
                    event: r.get(0)?,
                    kid: r.get(1)?,
                    alg: r.get(2)?,
                    public_pem: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn log(
        &self,
        org: Option<String>,
        after: u64,
        limit: u32,
    ) -> Result<Vec<LogEntry>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT l.seq, l.op_id, l.event, l.appliance, a.node_id, l.op, l.received_ms
                 FROM log l JOIN appliances a ON a.id = l.appliance
                 WHERE (?1 IS NULL OR a.org = ?1) AND l.seq > ?2 ORDER BY l.seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![org, after as i64, limit], |r| {
                Ok(LogEntry::from_row(
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    &r.get::<_, String>(5)?,
                    r.get(6)?,
                ))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn parked(&self, org: Option<String>, limit: u32) -> Result<Vec<ParkedOp>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT appliance, org, event, op_id, code, reason, op, parked_ms FROM parked
                 WHERE ?1 IS NULL OR org = ?1 ORDER BY parked_ms DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![org, limit], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, i64>(7)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (appliance, org, event, id, code, reason, op, at) = row?;
                out.push(ParkedOp {
                    appliance,
                    org,
                    event,
                    rejection: Rejection {
                        id: id
                            .parse()
                            .map_err(|_| StoreError::Corrupt(format!("parked op id {id}")))?,
                        code,
                        reason,
                    },
                    op: serde_json::from_str(&op).unwrap_or(serde_json::Value::Null),
                    parked_ms: at as u64,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn conflicts(
        &self,
        org: Option<String>,
        limit: u32,
    ) -> Result<Vec<ConflictRecord>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT appliance, org, op_id, kind, entity_id, winner_op_id, detail, recorded_ms
                 FROM conflicts WHERE ?1 IS NULL OR org = ?1 ORDER BY recorded_ms DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![org, limit], |r| {
                Ok(ConflictRecord {
                    appliance: r.get(0)?,
                    org: r.get(1)?,
                    conflict: ConflictReport {
                        op_id: r.get(2)?,
                        kind: r.get(3)?,
                        entity_id: r.get(4)?,
                        winner_op_id: r.get(5)?,
                        detail: r.get(6)?,
                        recorded_ms: r.get::<_, i64>(7)? as u64,
                    },
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}

fn record_report(
    conn: &Connection,
    appliance: &Appliance,
    report: Option<&Report>,
    now: i64,
) -> Result<(), StoreError> {
    let Some(report) = report else {
        conn.execute(
            "UPDATE appliances SET last_seen_ms = ?1 WHERE id = ?2",
            params![now, appliance.id],
        )?;
        return Ok(());
    };
    let mut summary = report.clone();
    summary.conflicts.clear();
    conn.execute(
        "UPDATE appliances SET last_seen_ms = ?1, report = ?2 WHERE id = ?3",
        params![now, json(&summary), appliance.id],
    )?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO conflicts (appliance, org, op_id, kind, entity_id, winner_op_id, detail, recorded_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
    )?;
    for c in report.conflicts.iter().take(crate::MAX_REPORTED_CONFLICTS) {
        insert.execute(params![
            appliance.id,
            appliance.org,
            c.op_id,
            c.kind,
            c.entity_id,
            c.winner_op_id,
            c.detail,
            c.recorded_ms as i64
        ])?;
    }
    Ok(())
}
