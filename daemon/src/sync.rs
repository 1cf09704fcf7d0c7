//! The daemon's side of sync: [`StoreSync`] implements the agent's [`SyncStore`] over the op log,
//! and [`start`] runs the agent when `[sync] relay_url` is set.
//!
//! Durability: the outbox cursor (`meta.outbox_acked_seq`) moves in the same transaction that
//! parks what the relay refused; the pull cursor (`meta.pull_cursor`) moves in the same
//! transaction that applies the pulled ops. A crash at any point therefore re-sends or re-pulls
//! at most one batch, which op-id idempotency absorbs on both sides.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};
use sync_agent::Op;
use sync_agent::agent::{self, Ack, AgentConfig, AgentHandle, Pending, RemoteApplied, SyncStore};
use sync_agent::wire::{ConflictReport, Report, TokenKey};

use crate::config::Config;
use crate::domain::DomainError;
use crate::hub::Hub;
use crate::oplog;
use crate::store::Store;

const ACKED: &str = "outbox_acked_seq";
const PULL_CURSOR: &str = "pull_cursor";
const CONFLICTS_REPORTED: &str = "conflicts_reported_ms";
/// Conflicts sent with one push at most.
const CONFLICTS_PER_REPORT: u32 = 100;
/// How stale the backlog count in a report may be. Counting is a scan of the backlog, and a
/// million-op backlog drains in about a thousand pushes: counting on each would cost more than
/// the pushes themselves.
const BACKLOG_COUNT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads an integer from `meta` (0 when absent).
pub(crate) fn meta_i64(conn: &Connection, key: &str) -> Result<i64, rusqlite::Error> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
            r.get::<_, String>(0)
        })
        .optional()?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

fn set_meta(conn: &Connection, key: &str, value: i64) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value.to_string()])?;
    Ok(())
}

/// The op log as the sync agent sees it.
pub struct StoreSync {
    store: Store,
    hub: Hub,
    event_id: String,
    /// The last backlog count and when it was taken.
    counted: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
}

impl StoreSync {
    /// Over `store`; relay keys are installed in `hub`'s verifier.
    pub fn new(store: Store, hub: Hub, event_id: &str) -> Self {
        Self {
            store,
            hub,
            event_id: event_id.to_string(),
            counted: std::sync::Mutex::new(None),
        }
    }
}

impl SyncStore for StoreSync {
    type Error = DomainError;

    async fn pending(&self, max_ops: usize) -> Result<Pending, DomainError> {
        let node = self.store.node_id().to_string();
        let cached = *self
            .counted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let cached = cached
            .filter(|(at, _)| at.elapsed() < BACKLOG_COUNT_EVERY)
            .map(|(_, n)| n);
        let pending = self
            .store
            .read(move |conn| {
                let acked = meta_i64(conn, ACKED)?;
                let mut stmt = conn.prepare_cached(
                    "SELECT seq FROM ops WHERE origin = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                )?;
                let seqs = stmt
                    .query_map(params![node, acked, max_ops as i64], |r| r.get::<_, i64>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                let mut ops = Vec::with_capacity(seqs.len());
                if let (Some(first), Some(last)) = (seqs.first(), seqs.last()) {
                    // One range read, then keep ours: remote ops interleave with local ones.
                    let span = (last - first + 1) as u32;
                    for (seq, op) in oplog::read_after(conn, first - 1, span)? {
                        if op.origin == node {
                            ops.push((seq, op));
                        }
                    }
                }
                let backlog = match cached {
                    // Nothing pending is an exact count, whatever the cache says.
                    _ if seqs.is_empty() => 0,
                    Some(n) => n,
                    None => conn.query_row(
                        "SELECT count(*) FROM ops WHERE origin = ?1 AND seq > ?2",
                        params![node, acked],
                        |r| r.get::<_, i64>(0),
                    )? as u64,
                };
                // Seq order is arrival order: the first pending op is the oldest.
                let oldest: Option<i64> = conn
                    .query_row(
                        "SELECT received_ms FROM ops WHERE origin = ?1 AND seq > ?2
                         ORDER BY seq LIMIT 1",
                        params![node, acked],
                        |r| r.get(0),
                    )
                    .optional()?;
                let parked: i64 =
                    conn.query_row("SELECT count(*) FROM sync_parked", [], |r| r.get(0))?;
                let reported = meta_i64(conn, CONFLICTS_REPORTED)?;
                let conflicts = conn
                    .prepare_cached(
                        "SELECT op_id, kind, entity_id, winner_op_id, detail, recorded_ms
                         FROM conflicts WHERE recorded_ms > ?1 ORDER BY recorded_ms LIMIT ?2",
                    )?
                    .query_map(params![reported, CONFLICTS_PER_REPORT], |r| {
                        Ok(ConflictReport {
                            op_id: r.get(0)?,
                            kind: r.get(1)?,
                            entity_id: r.get(2)?,
                            winner_op_id: r.get(3)?,
                            detail: r.get(4)?,
                            recorded_ms: r.get::<_, i64>(5)? as u64,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                let now = crate::store::now_ms() as i64;
                Ok::<_, DomainError>(Pending {
                    ops,
                    report: Report {
                        backlog_ops: backlog,
                        oldest_unsent_age_secs: oldest.map(|t| ((now - t).max(0) / 1000) as u64),
                        parked_ops: parked as u64,
                        conflicts,
                        ..Report::default()
                    },
                })
            })
            .await?;
        if cached.is_none() {
            *self
                .counted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some((std::time::Instant::now(), pending.report.backlog_ops));
        }
        Ok(pending)
    }

    async fn acknowledge(&self, ack: Ack) -> Result<(), DomainError> {
        self.store
            .write(move |ctx| {
                let conn = ctx.conn();
                // Never backwards: a late answer to an older batch must not re-send newer ops.
                if ack.up_to_seq > meta_i64(conn, ACKED)? {
                    set_meta(conn, ACKED, ack.up_to_seq)?;
                }
                for (_, id, reason) in &ack.parked {
                    conn.prepare_cached(
                        "INSERT INTO sync_parked (op_id, direction, kind, reason, op, parked_ms)
                         SELECT id, 'push', kind, ?2, NULL, ?3 FROM ops WHERE id = ?1
                         ON CONFLICT DO UPDATE SET reason = excluded.reason",
                    )?
                    .execute(params![
                        id.to_string(),
                        reason,
                        ctx.now_ms() as i64
                    ])?;
                }
                if let Some(ms) = ack.conflicts_reported_until_ms {
                    set_meta(conn, CONFLICTS_REPORTED, ms as i64)?;
                }
                Ok::<_, DomainError>(())
            })
            .await
    }

    async fn pull_cursor(&self) -> Result<u64, DomainError> {
        self.store
            .read(|conn| Ok::<_, DomainError>(meta_i64(conn, PULL_CURSOR)?.max(0) as u64))
            .await
    }

    async fn apply_remote(&self, ops: Vec<Op>, cursor: u64) -> Result<RemoteApplied, DomainError> {
        // Whatever the ops cause beyond the store (fan-out, badges, groups, the badge registry)
        // follows from the committed-op stream, exactly as for the same ops made here.
        self.store
            .write(move |ctx| {
                let mut done = RemoteApplied::default();
                for op in &ops {
                    ctx.conn().execute_batch("SAVEPOINT remote_op")?;
                    match ctx.apply_remote(op) {
                        Ok(oplog::Applied::New(_)) => {
                            ctx.conn().execute_batch("RELEASE remote_op")?;
                            done.applied += 1;
                        }
                        Ok(oplog::Applied::Duplicate) => {
                            ctx.conn().execute_batch("RELEASE remote_op")?;
                            done.duplicates += 1;
                        }
                        Err(oplog::ApplyError::Store(e)) => return Err(DomainError::from(e)),
                        Err(e) => {
                            // Nothing of the op stays; the op itself is kept here, whole, so
                            // an upgraded build (or an operator) can apply it later.
                            ctx.conn()
                                .execute_batch("ROLLBACK TO remote_op; RELEASE remote_op")?;
                            tracing::warn!(op_id = %op.id, kind = %op.kind, error = %e, "remote op cannot be applied here; parked");
                            ctx.conn()
                                .prepare_cached(
                                    "INSERT INTO sync_parked (op_id, direction, kind, reason, op, parked_ms)
                                     VALUES (?1, 'pull', ?2, ?3, ?4, ?5)
                                     ON CONFLICT DO UPDATE SET reason = excluded.reason",
                                )?
                                .execute(params![
                                    op.id.to_string(),
                                    op.kind,
                                    e.to_string(),
                                    serde_json::to_string(op).unwrap_or_default(),
                                    ctx.now_ms() as i64
                                ])?;
                            done.parked += 1;
                        }
                    }
                }
                if cursor as i64 > meta_i64(ctx.conn(), PULL_CURSOR)? {
                    set_meta(ctx.conn(), PULL_CURSOR, cursor as i64)?;
                }
                Ok::<_, DomainError>(done)
            })
            .await
    }

    async fn install_keys(&self, keys: Vec<TokenKey>) -> Result<(), DomainError> {
        let ours: Vec<TokenKey> = keys
            .into_iter()
            .filter(|k| k.event == self.event_id)
            .collect();
        self.hub
            .verifier()
            .replace_relay_keys(&self.store, ours)
            .await
    }

    async fn local_change(&self) {
        self.store.ops_appended().await;
    }
}

/// Starts the agent when sync is configured; `None` when it is not.
pub fn start(
    config: &Config,
    store: &Store,
    hub: &Hub,
) -> Result<Option<(AgentHandle, tokio::task::JoinHandle<()>)>, String> {
    let sync = &config.sync;
    if sync.relay_url.is_empty() {
        return Ok(None);
    }
    let token = match sync.token_file.is_empty() {
        true => sync.token.trim().to_string(),
        false => std::fs::read_to_string(&sync.token_file)
            .map_err(|e| format!("cannot read sync.token_file `{}`: {e}", sync.token_file))?
            .trim()
            .to_string(),
    };
    if token.is_empty() {
        return Err("the sync token is empty; put what `venue-relay appliance add` printed in sync.token_file".into());
    }
    let mut agent_config = AgentConfig::new(
        &sync.relay_url,
        &token,
        env!("CARGO_PKG_VERSION"),
        store.node_id(),
    );
    agent_config.pull_wait = std::time::Duration::from_secs(sync.pull_wait_secs);
    agent_config.heartbeat = std::time::Duration::from_secs(sync.heartbeat_secs);
    let sync_store = Arc::new(StoreSync::new(store.clone(), hub.clone(), &config.event.id));
    let (handle, task) = agent::spawn(sync_store, agent_config)?;
    tracing::info!(relay = %sync.relay_url, "sync agent started");
    Ok(Some((handle, task)))
}

/// One parked op, for `GET /api/v1/admin/sync/parked`.
#[derive(Debug, serde::Serialize)]
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
pub async fn parked(store: &Store, limit: u32) -> Result<Vec<ParkedView>, DomainError> {
    store
        .read(move |conn| {
            let rows = conn
                .prepare(
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
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};
    use sync_agent::agent::SyncStore;

    use super::StoreSync;
    use crate::hub::queue::SendQueue;
    use crate::hub::{Eviction, Hub, Outlet, presence_channel};
    use crate::oplog;
    use crate::store::{Store, StoreOptions};

    /// One appliance: its store, its hub, and a phone of `a2` that reads announcements and
    /// follows `a3`.
    async fn appliance(dir: &std::path::Path) -> (Store, Hub, SendQueue) {
        let store = Store::open(
            dir,
            &StoreOptions::default(),
            crate::metrics::StoreMetrics::detached(),
        )
        .expect("store");
        let hub = Hub::start(&store, "ev", dir, false, Default::default())
            .await
            .expect("hub");
        let outlet = Outlet {
            connection: hub.connection_id(),
            user: Arc::from("a2"),
            queue: SendQueue::new(1000),
            kill: Arc::new(tokio::sync::Notify::new()),
        };
        hub.open_session("a2", &outlet, Arc::new(Eviction::default()));
        hub.subscribe("announcements", &outlet);
        hub.subscribe(&presence_channel("a3"), &outlet);
        (store, hub, outlet.queue)
    }

    /// What the phone received once the hub has applied everything committed: each frame
    /// without its own id and time.
    async fn received(store: &Store, hub: &Hub, queue: &SendQueue) -> Vec<Value> {
        let last: i64 = store
            .read(|conn| {
                conn.query_row("SELECT max(seq) FROM ops", [], |r| r.get(0))
                    .map_err(crate::store::StoreError::from)
            })
            .await
            .expect("read");
        hub.settled(last).await;
        let mut frames = Vec::new();
        while let Some(bytes) = queue.try_pop() {
            let mut frame: Value = serde_json::from_str(bytes.as_str()).expect("json");
            if let Some(map) = frame.as_object_mut() {
                map.remove("id");
                map.remove("ts");
            }
            frames.push(frame);
        }
        frames
    }

    /// The same ops, made on appliance A and pulled by appliance B through the sync path, give
    /// B's phones exactly the frames A's got: the message, the mention badge, the group frame
    /// and the followed person's move. (Before the committed-op stream, a pulled zone
    /// transition told nobody, and each kind's effects were coded twice.)
    #[tokio::test]
    async fn an_op_pulled_from_the_relay_causes_the_effects_of_the_same_op_made_locally() {
        let (dir_a, dir_b) = (
            tempfile::tempdir().expect("a"),
            tempfile::tempdir().expect("b"),
        );
        let (store_a, hub_a, phone_a) = appliance(dir_a.path()).await;
        let (store_b, hub_b, phone_b) = appliance(dir_b.path()).await;

        hub_a
            .post("announcements", "s1", "doors open, @a2", None, None)
            .await
            .expect("post");
        hub_a
            .create_group("a1", "Rust folks", vec!["a2".into()])
            .await
            .expect("group");
        store_a
            .write(|ctx| {
                let body =
                    json!({"kind": "entered", "zone_id": "hall-a", "at_ms": 1_700_000_000_000u64});
                let op = ctx.new_op("ev", oplog::presence::TRANSITION, "a3", body);
                ctx.apply(&op)
            })
            .await
            .expect("transition");
        let local = received(&store_a, &hub_a, &phone_a).await;
        let kinds: Vec<&str> = local.iter().filter_map(|f| f["type"].as_str()).collect();
        assert_eq!(
            kinds,
            [
                "message.new",
                "notification.badge",
                "group.updated",
                "presence.changed"
            ],
            "{local:#?}"
        );

        let ops = store_a
            .read(|conn| oplog::read_after(conn, 0, 100))
            .await
            .expect("A's log");
        let ops: Vec<_> = ops.into_iter().map(|(_, op)| op).collect();
        let sync_b = StoreSync::new(store_b.clone(), hub_b.clone(), "ev");
        let applied = sync_b.apply_remote(ops, 3).await.expect("pulled");
        assert_eq!((applied.applied, applied.parked), (3, 0));
        let pulled = received(&store_b, &hub_b, &phone_b).await;
        assert_eq!(pulled, local);
    }
}
