//! The daemon's side of sync: [`StoreSync`] implements the agent's [`SyncStore`] over the op log,
//! and [`start`] runs the agent when `[sync] relay_url` is set.
//!
//! Durability: the outbox cursor (`meta.outbox_acked_seq`) moves in the same transaction that
//! parks what the relay refused; the pull cursor (`meta.pull_cursor`) moves in the same
//! transaction that applies the pulled ops. A crash at any point therefore re-sends or re-pulls
//! at most one batch, which op-id idempotency absorbs on both sides.

use std::sync::Arc;

use sync_agent::Op;
use sync_agent::agent::{self, Ack, AgentConfig, AgentHandle, Pending, RemoteApplied, SyncStore};
use sync_agent::wire::{Report, TokenKey};

use crate::config::Config;
use crate::domain::DomainError;
use crate::hub::Hub;
use crate::oplog::{self, outbox};
use crate::store::{Store, meta};

/// Conflicts sent with one push at most.
const CONFLICTS_PER_REPORT: u32 = 100;
/// How stale the backlog count in a report may be. Counting is a scan of the backlog, and a
/// million-op backlog drains in about a thousand pushes: counting on each would cost more than
/// the pushes themselves.
const BACKLOG_COUNT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

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
                let acked = meta::get_i64(conn, outbox::ACKED)?;
                let seqs = outbox::pending_seqs(conn, acked, max_ops)?;
                let mut ops = Vec::with_capacity(seqs.len());
                if let (Some(first), Some(last)) = (seqs.first(), seqs.last()) {
                    // One range read, then keep the pending: ops pulled from the relay
                    // interleave with them.
                    let span = (last - first + 1) as u32;
                    for (seq, op) in oplog::read_after(conn, first - 1, span)? {
                        if seqs.binary_search(&seq).is_ok() {
                            ops.push((seq, op));
                        }
                    }
                }
                let (backlog, oldest) = match cached {
                    // Nothing pending is an exact count, whatever the cache says.
                    _ if seqs.is_empty() => (0, None),
                    Some(n) => (n, outbox::oldest_pending_ms(conn, acked)?),
                    None => outbox::pending_count(conn, acked)?,
                };
                let reported = meta::get_i64(conn, outbox::CONFLICTS_REPORTED)?;
                let conflicts = outbox::conflicts_since(conn, reported, CONFLICTS_PER_REPORT)?;
                let now = crate::store::now_ms() as i64;
                Ok::<_, DomainError>(Pending {
                    ops,
                    report: Report {
                        backlog_ops: backlog,
                        oldest_unsent_age_secs: oldest.map(|t| ((now - t).max(0) / 1000) as u64),
                        parked_ops: outbox::parked_count(conn)?,
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
                if ack.up_to_seq > meta::get_i64(conn, outbox::ACKED)? {
                    meta::set(conn, outbox::ACKED, &ack.up_to_seq.to_string())?;
                }
                for (_, id, reason) in &ack.parked {
                    outbox::park_pushed(conn, &id.to_string(), reason, ctx.now_ms())?;
                }
                if let Some(ms) = ack.conflicts_reported_until_ms {
                    meta::set(conn, outbox::CONFLICTS_REPORTED, &ms.to_string())?;
                }
                Ok::<_, DomainError>(())
            })
            .await
    }

    async fn pull_cursor(&self) -> Result<u64, DomainError> {
        self.store
            .read(|conn| {
                Ok::<_, DomainError>(meta::get_i64(conn, outbox::PULL_CURSOR)?.max(0) as u64)
            })
            .await
    }

    async fn apply_remote(&self, ops: Vec<Op>, cursor: u64) -> Result<RemoteApplied, DomainError> {
        // Whatever the ops cause beyond the store (fan-out, badges, groups, the badge registry)
        // follows from the committed-op stream, exactly as for the same ops made here.
        self.store
            .write(move |ctx| {
                let done = apply_remote_batch(ctx, &ops, Source::Relay)?;
                if cursor as i64 > meta::get_i64(ctx.conn(), outbox::PULL_CURSOR)? {
                    meta::set(ctx.conn(), outbox::PULL_CURSOR, &cursor.to_string())?;
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

/// Where a batch of remote ops came from.
#[derive(Clone, Copy)]
pub(crate) enum Source<'a> {
    /// The relay: each op applied (or already known) is one the relay has, never pushed.
    Relay,
    /// A peer on the LAN, by node id: its ops are pushed to the relay like this box's own.
    Peer(&'a str),
}

/// Applies a pulled batch inside the caller's write job, each op in its own savepoint
/// (`WriteCtx::try_apply_remote`). An op that cannot be applied is parked whole, never retried
/// forever: nothing of it stays, and an upgraded build (or an operator) can apply it later.
pub(crate) fn apply_remote_batch(
    ctx: &mut crate::store::WriteCtx<'_>,
    ops: &[Op],
    source: Source<'_>,
) -> Result<RemoteApplied, DomainError> {
    let from = match source {
        Source::Relay => "the relay",
        Source::Peer(node) => node,
    };
    let mut done = RemoteApplied::default();
    for op in ops {
        let applied = ctx.try_apply_remote(op)?;
        if applied.is_ok() && matches!(source, Source::Relay) {
            // The relay has it: never pushed (an op first met from a peer too).
            outbox::mark_upstream(ctx.conn(), &op.id.to_string())?;
        }
        match applied {
            Ok(oplog::Applied::New(_)) => done.applied += 1,
            Ok(oplog::Applied::Duplicate) => done.duplicates += 1,
            Err(e) => {
                tracing::warn!(op_id = %op.id, kind = %op.kind, from, error = %e, "remote op cannot be applied here; parked");
                outbox::park_pulled(ctx.conn(), op, &e.to_string(), ctx.now_ms())?;
                done.parked += 1;
            }
        }
    }
    Ok(done)
}

/// Why sync could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `sync.token_file` cannot be read.
    #[error("cannot read sync.token_file `{path}`: {source}")]
    TokenFile {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// No token was given.
    #[error(
        "the sync token is empty; put what `venue-relay appliance add` printed in sync.token_file"
    )]
    NoToken,
    /// The agent's HTTP client could not be made.
    #[error(transparent)]
    Agent(#[from] agent::SpawnError),
}

/// Starts the agent when sync is configured; `None` when it is not.
pub fn start(
    config: &Config,
    store: &Store,
    hub: &Hub,
    system: &crate::appliance::SystemInfo,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<(AgentHandle, tokio::task::JoinHandle<()>)>, StartError> {
    let sync = &config.sync;
    if sync.relay_url.is_empty() {
        return Ok(None);
    }
    let token = match sync.token_file.is_empty() {
        true => sync.token.trim().to_string(),
        false => std::fs::read_to_string(&sync.token_file)
            .map_err(|source| StartError::TokenFile {
                path: sync.token_file.clone(),
                source,
            })?
            .trim()
            .to_string(),
    };
    if token.is_empty() {
        return Err(StartError::NoToken);
    }
    let mut agent_config = AgentConfig::new(
        &sync.relay_url,
        &token,
        env!("CARGO_PKG_VERSION"),
        store.node_id(),
    );
    agent_config.pull_wait = std::time::Duration::from_secs(sync.pull_wait_secs);
    agent_config.heartbeat = std::time::Duration::from_secs(sync.heartbeat_secs);
    agent_config.image_version = system.image_version.clone();
    agent_config.slot = system.slot.clone();
    let sync_store = Arc::new(StoreSync::new(store.clone(), hub.clone(), &config.event.id));
    let (handle, task) = agent::spawn(sync_store, agent_config, shutdown)?;
    tracing::info!(relay = %sync.relay_url, "sync agent started");
    Ok(Some((handle, task)))
}

pub use crate::oplog::outbox::ParkedView;

/// The newest parked ops.
pub async fn parked(store: &Store, limit: u32) -> Result<Vec<ParkedView>, DomainError> {
    store
        .read(move |conn| Ok(outbox::parked(conn, limit)?))
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
        let hub = Hub::start(&store, "ev", dir, Default::default())
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
        hub.settled(store.last_seq()).await;
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
        // The three ops, and A's signing key (published when A's hub started).
        assert_eq!((applied.applied, applied.parked), (4, 0));
        let pulled = received(&store_b, &hub_b, &phone_b).await;
        assert_eq!(pulled, local);
    }
}
