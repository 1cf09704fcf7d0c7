//! The PostgreSQL backend, for several relay instances behind a load balancer. Instances keep no
//! state of their own: a push on one instance ends with `pg_notify`, and every instance's
//! listener wakes its long-polls.
//!
//! Sequence order: seqs are taken from the one-row `relay_head` under `FOR UPDATE`, held until
//! commit, so pushes commit in seq order and a reader never sees a seq while a smaller one is
//! still in flight (a plain `bigserial` would allow that, and a pull could skip an op forever).
//! The price is that pushes are serialised; a push of 1,000 ops holds the lock for one
//! `INSERT … SELECT FROM unnest(…)` and one commit.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::StreamExt;
use sync_agent::wire::{
    ConflictReport, Op, PullResponse, PushResponse, Rejection, Report, TokenKey,
};
use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, NoTls};

use super::{
    Appliance, ApplianceInfo, ConflictRecord, LogEntry, NewAppliance, NodeBinding, ParkedOp,
    Principal, RelayStore, StoreError, now_ms, split_repeats,
};

const CHANNEL: &str = "venue_relay_log";
/// Serialises schema creation when several instances start at once.
const SCHEMA_LOCK: i64 = 0x7665_6e75_6572_6c79;

/// Brings the database to the latest schema (the caller holds the schema lock).
async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS relay_schema (
                 id INT PRIMARY KEY CHECK (id = 1),
                 version INT NOT NULL
             );
             INSERT INTO relay_schema (id, version) VALUES (1, 0) ON CONFLICT DO NOTHING;",
        )
        .await
        .map_err(pg)?;
    let found: i32 = client
        .query_one("SELECT version FROM relay_schema WHERE id = 1", &[])
        .await
        .map_err(pg)?
        .get(0);
    let found = found.max(0) as u32;
    super::migrations::check_not_newer(found)?;
    for step in super::migrations::MIGRATIONS
        .iter()
        .filter(|m| m.version > found)
    {
        let tx = client.transaction().await.map_err(pg)?;
        tx.batch_execute(step.postgres).await.map_err(pg)?;
        tx.execute(
            "UPDATE relay_schema SET version = $1 WHERE id = 1",
            &[&(step.version as i32)],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        tracing::info!(
            version = step.version,
            step = step.name,
            "relay schema migrated"
        );
    }
    Ok(())
}

/// The PostgreSQL backend.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    changes: watch::Sender<u64>,
    /// The listener task stops once every clone of the store is gone.
    _alive: std::sync::Arc<()>,
}

fn pg(e: impl std::fmt::Display) -> StoreError {
    StoreError::Postgres(e.to_string())
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

impl PgStore {
    /// Connects to `url` (`postgres://user:pass@host/db`), creates the schema if needed, and
    /// starts the `LISTEN` task on the current runtime.
    pub async fn connect(url: &str, pool_size: usize) -> Result<Self, StoreError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Config(format!("`{url}` is not a PostgreSQL URL: {e}")))?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .build()
            .map_err(pg)?;
        {
            let mut client = pool.get().await.map_err(pg)?;
            client
                .execute("SELECT pg_advisory_lock($1)", &[&SCHEMA_LOCK])
                .await
                .map_err(pg)?;
            let created = migrate(&mut client).await;
            client
                .execute("SELECT pg_advisory_unlock($1)", &[&SCHEMA_LOCK])
                .await
                .map_err(pg)?;
            created?;
        }
        let (changes, _) = watch::channel(0);
        let alive = std::sync::Arc::new(());
        tokio::spawn(listen(
            config,
            changes.clone(),
            std::sync::Arc::downgrade(&alive),
        ));
        Ok(Self {
            pool,
            changes,
            _alive: alive,
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pg)
    }
}

/// Holds a `LISTEN` connection for as long as the store lives; reconnects with backoff, and wakes
/// every long-poll after a reconnect (a notification may have been missed meanwhile).
async fn listen(
    config: tokio_postgres::Config,
    changes: watch::Sender<u64>,
    alive: std::sync::Weak<()>,
) {
    let mut backoff =
        sync_agent::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    while alive.strong_count() > 0 {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(_)) => {
                                if tx.send(()).is_err() {
                                    break;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "PostgreSQL LISTEN connection failed");
                                break;
                            }
                        }
                    }
                });
                if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    tracing::warn!(error = %e, "PostgreSQL LISTEN failed");
                } else {
                    backoff.reset();
                    changes.send_modify(|v| *v = v.wrapping_add(1));
                    while rx.recv().await.is_some() {
                        changes.send_modify(|v| *v = v.wrapping_add(1));
                    }
                }
                driver.abort();
            }
            Err(e) => tracing::warn!(error = %e, "cannot connect the PostgreSQL listener"),
        }
        tokio::time::sleep(backoff.next_wait()).await;
    }
}

fn parse_op(text: &str) -> Result<Op, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("logged op: {e}")))
}

impl RelayStore for PgStore {
    async fn add_appliance(&self, new: NewAppliance) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO appliances (id, org, name, events, token_hash, created_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &new.appliance.id,
                    &new.appliance.org,
                    &new.appliance.name,
                    &new.appliance.events,
                    &new.token_hash,
                    &(now_ms() as i64),
                ],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn list_appliances(&self, org: Option<String>) -> Result<Vec<ApplianceInfo>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, org, name, events, created_ms, revoked_ms, last_seen_ms, report, node_id
                 FROM appliances WHERE $1::text IS NULL OR org = $1 ORDER BY org, id",
                &[&org],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| ApplianceInfo {
                appliance: Appliance {
                    id: r.get(0),
                    org: r.get(1),
                    name: r.get(2),
                    events: r.get(3),
                    node: r.get(8),
                },
                created_ms: r.get::<_, i64>(4) as u64,
                revoked_ms: r.get::<_, Option<i64>>(5).map(|v| v as u64),
                last_seen_ms: r.get::<_, Option<i64>>(6).map(|v| v as u64),
                report: r
                    .get::<_, Option<String>>(7)
                    .and_then(|t| serde_json::from_str(&t).ok()),
            })
            .collect())
    }

    async fn revoke_appliance(&self, id: String, org: Option<String>) -> Result<bool, StoreError> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE appliances SET revoked_ms = coalesce(revoked_ms, $1)
                 WHERE id = $2 AND ($3::text IS NULL OR org = $3)",
                &[&(now_ms() as i64), &id, &org],
            )
            .await
            .map_err(pg)?;
        Ok(n > 0)
    }

    async fn add_operator(
        &self,
        org: Option<String>,
        token_hash: String,
    ) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO operators (token_hash, org, created_ms) VALUES ($1, $2, $3)",
                &[&token_hash, &org, &(now_ms() as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn authenticate(&self, token_hash: String) -> Result<Option<Principal>, StoreError> {
        let client = self.client().await?;
        if let Some(r) = client
            .query_opt(
                "SELECT id, org, name, events, node_id FROM appliances
                 WHERE token_hash = $1 AND revoked_ms IS NULL",
                &[&token_hash],
            )
            .await
            .map_err(pg)?
        {
            return Ok(Some(Principal::Appliance(Appliance {
                id: r.get(0),
                org: r.get(1),
                name: r.get(2),
                events: r.get(3),
                node: r.get(4),
            })));
        }
        Ok(client
            .query_opt(
                "SELECT org FROM operators WHERE token_hash = $1",
                &[&token_hash],
            )
            .await
            .map_err(pg)?
            .map(|r| Principal::Operator { org: r.get(0) }))
    }

    async fn bind_node(&self, id: String, node: String) -> Result<NodeBinding, StoreError> {
        let client = self.client().await?;
        let taken = client
            .query_opt(
                "SELECT 1 FROM appliances WHERE node_id = $1 AND id != $2",
                &[&node, &id],
            )
            .await
            .map_err(pg)?
            .is_some();
        if taken {
            return Ok(NodeBinding::Taken);
        }
        // Two instances binding the same node at once: the unique index refuses the second.
        let updated = client
            .execute(
                "UPDATE appliances SET node_id = $2 WHERE id = $1 AND node_id IS NULL",
                &[&id, &node],
            )
            .await;
        if let Err(e) = updated {
            if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                return Ok(NodeBinding::Taken);
            }
            return Err(pg(e));
        }
        let bound: Option<String> = client
            .query_one("SELECT node_id FROM appliances WHERE id = $1", &[&id])
            .await
            .map_err(pg)?
            .get(0);
        Ok(bound.map_or(NodeBinding::Taken, NodeBinding::Bound))
    }

    async fn push(
        &self,
        appliance: Appliance,
        ops: Vec<Op>,
        rejected: Vec<(Op, Rejection)>,
        report: Option<Report>,
    ) -> Result<PushResponse, StoreError> {
        let (unique, repeats) = split_repeats(ops);
        let now = now_ms() as i64;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let base: i64 = tx
            .query_one("SELECT seq FROM relay_head WHERE id = 1 FOR UPDATE", &[])
            .await
            .map_err(pg)?
            .get(0);
        let seqs: Vec<i64> = (1..=unique.len() as i64).map(|i| base + i).collect();
        let ids: Vec<String> = unique.iter().map(|op| op.id.to_string()).collect();
        let events: Vec<String> = unique.iter().map(|op| op.scope.clone()).collect();
        let bodies: Vec<String> = unique.iter().map(json).collect();
        let inserted = tx
            .query(
                "INSERT INTO log (seq, op_id, event, appliance, op, received_ms)
                 SELECT s, i, e, $4, o, $6 FROM unnest($1::bigint[], $2::text[], $3::text[], $5::text[])
                     AS t(s, i, e, o)
                 ON CONFLICT (op_id) DO NOTHING RETURNING op_id",
                &[&seqs, &ids, &events, &appliance.id, &bodies, &now],
            )
            .await
            .map_err(pg)?;
        let inserted: std::collections::HashSet<String> =
            inserted.iter().map(|r| r.get::<_, String>(0)).collect();
        let head = base + unique.len() as i64;
        let mut response = PushResponse::default();
        for op in &unique {
            match inserted.contains(&op.id.to_string()) {
                true => response.accepted.push(op.id),
                false => response.duplicates.push(op.id),
            }
        }
        response.duplicates.extend(repeats);
        if !response.accepted.is_empty() {
            tx.execute("UPDATE relay_head SET seq = $1 WHERE id = 1", &[&head])
                .await
                .map_err(pg)?;
        }
        for (op, r) in &rejected {
            tx.execute(
                "INSERT INTO parked (op_id, appliance, org, event, code, reason, op, parked_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (appliance, op_id) DO UPDATE SET
                    code = excluded.code, reason = excluded.reason, parked_ms = excluded.parked_ms",
                &[
                    &op.id.to_string(),
                    &appliance.id,
                    &appliance.org,
                    &op.scope,
                    &r.code,
                    &r.reason,
                    &json(op),
                    &now,
                ],
            )
            .await
            .map_err(pg)?;
        }
        match &report {
            Some(report) => {
                let mut summary = report.clone();
                summary.conflicts.clear();
                tx.execute(
                    "UPDATE appliances SET last_seen_ms = $1, report = $2 WHERE id = $3",
                    &[&now, &json(&summary), &appliance.id],
                )
                .await
                .map_err(pg)?;
                for c in report.conflicts.iter().take(crate::MAX_REPORTED_CONFLICTS) {
                    tx.execute(
                        "INSERT INTO conflicts (appliance, org, op_id, kind, entity_id, winner_op_id,
                                                detail, recorded_ms)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                        &[
                            &appliance.id,
                            &appliance.org,
                            &c.op_id,
                            &c.kind,
                            &c.entity_id,
                            &c.winner_op_id,
                            &c.detail,
                            &(c.recorded_ms as i64),
                        ],
                    )
                    .await
                    .map_err(pg)?;
                }
            }
            None => {
                tx.execute(
                    "UPDATE appliances SET last_seen_ms = $1 WHERE id = $2",
                    &[&now, &appliance.id],
                )
                .await
                .map_err(pg)?;
            }
        }
        if !response.accepted.is_empty() {
            // Delivered to every listener at commit, never before.
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &head.to_string()])
                .await
                .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        response.cursor = match response.accepted.is_empty() {
            true => base as u64,
            false => head as u64,
        };
        response.rejected = rejected.into_iter().map(|(_, r)| r).collect();
        Ok(response)
    }

    async fn pull(
        &self,
        appliance: Appliance,
        after: u64,
        limit: u32,
    ) -> Result<PullResponse, StoreError> {
        let mut client = self.client().await?;
        client
            .execute(
                "UPDATE appliances SET last_seen_ms = $1 WHERE id = $2",
                &[&(now_ms() as i64), &appliance.id],
            )
            .await
            .map_err(pg)?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg)?;
        let rows = tx
            .query(
                "SELECT seq, op FROM log
                 WHERE seq > $1 AND appliance <> $2 AND event = ANY($3)
                 ORDER BY seq LIMIT $4",
                &[
                    &(after as i64),
                    &appliance.id,
                    &appliance.events,
                    &i64::from(limit),
                ],
            )
            .await
            .map_err(pg)?;
        let head: i64 = tx
            .query_one(
                "SELECT coalesce(max(seq), 0) FROM log WHERE event = ANY($1)",
                &[&appliance.events],
            )
            .await
            .map_err(pg)?
            .get(0);
        tx.commit().await.map_err(pg)?;
        let mut ops = Vec::with_capacity(rows.len());
        let mut last = after;
        for r in &rows {
            last = r.get::<_, i64>(0) as u64;
            ops.push(parse_op(r.get(1))?);
        }
        let head = (head as u64).max(after);
        let has_more = ops.len() as u32 == limit;
        Ok(PullResponse {
            ops,
            cursor: if has_more { last } else { head },
            has_more,
            head,
        })
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    async fn add_key(&self, key: TokenKey) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO keys (event, kid, alg, public_pem, added_ms) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (event, kid) DO UPDATE SET alg = excluded.alg, public_pem = excluded.public_pem",
                &[&key.event, &key.kid, &key.alg, &key.public_pem, &(now_ms() as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn keys(&self, events: Vec<String>) -> Result<Vec<TokenKey>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT event, kid, alg, public_pem FROM keys WHERE event = ANY($1) ORDER BY event, kid",
                &[&events],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| TokenKey {
                event: r.get(0),
                kid: r.get(1),
                alg: r.get(2),
                public_pem: r.get(3),
            })
            .collect())
    }

    async fn log(
        &self,
        org: Option<String>,
        after: u64,
        limit: u32,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT l.seq, l.op_id, l.event, l.appliance, a.node_id, l.op, l.received_ms
                 FROM log l JOIN appliances a ON a.id = l.appliance
                 WHERE ($1::text IS NULL OR a.org = $1) AND l.seq > $2 ORDER BY l.seq LIMIT $3",
                &[&org, &(after as i64), &i64::from(limit)],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| {
                LogEntry::from_row(
                    r.get(0),
                    r.get(1),
                    r.get(2),
                    r.get(3),
                    r.get(4),
                    r.get(5),
                    r.get(6),
                )
            })
            .collect())
    }

    async fn parked(&self, org: Option<String>, limit: u32) -> Result<Vec<ParkedOp>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT appliance, org, event, op_id, code, reason, op, parked_ms FROM parked
                 WHERE $1::text IS NULL OR org = $1 ORDER BY parked_ms DESC LIMIT $2",
                &[&org, &i64::from(limit)],
            )
            .await
            .map_err(pg)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: String = r.get(3);
            out.push(ParkedOp {
                appliance: r.get(0),
                org: r.get(1),
                event: r.get(2),
                rejection: Rejection {
                    id: id
                        .parse()
                        .map_err(|_| StoreError::Corrupt(format!("parked op id {id}")))?,
                    code: r.get(4),
                    reason: r.get(5),
                },
                op: serde_json::from_str(r.get(6)).unwrap_or(serde_json::Value::Null),
                parked_ms: r.get::<_, i64>(7) as u64,
            });
        }
        Ok(out)
    }

    async fn conflicts(
        &self,
        org: Option<String>,
        limit: u32,
    ) -> Result<Vec<ConflictRecord>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT appliance, org, op_id, kind, entity_id, winner_op_id, detail, recorded_ms
                 FROM conflicts WHERE $1::text IS NULL OR org = $1
                 ORDER BY recorded_ms DESC LIMIT $2",
                &[&org, &i64::from(limit)],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| ConflictRecord {
                appliance: r.get(0),
                org: r.get(1),
                conflict: ConflictReport {
                    op_id: r.get(2),
                    kind: r.get(3),
                    entity_id: r.get(4),
                    winner_op_id: r.get(5),
                    detail: r.get(6),
                    recorded_ms: r.get::<_, i64>(7) as u64,
                },
            })
            .collect())
    }
}
