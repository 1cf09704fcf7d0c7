//! Peer sync on the venue LAN (`[peers]`): this box serves its op log to the venue's other
//! appliances ([`PeerServer`], mounted at `/peer/v1/…` by `http::peer`) and pulls theirs
//! ([`StorePeers`] under `sync_agent::peer::client`), so a check-in, a message or a vote made on
//! one box reaches the others while the internet is down.
//!
//! Anti-entropy by per-peer cursor: each box pulls every op of each peer's log (whoever made
//! it) after the peer's seq it reached, so an op reaches every box through any path, and
//! applying by op id makes the second arrival a no-op. Ops pulled from peers are pushed to the
//! relay like this box's own (`oplog::outbox`); the relay keeps each once. Why this and not one
//! box as the venue's relay: `docs/architecture.md`, "Several boxes, one venue".

use std::sync::Arc;

use sync_agent::Op;
use sync_agent::agent::RemoteApplied;
use sync_agent::peer::client::{self, PeerConfig, PeerHandle, PeerStore};
use sync_agent::peer::{NonceBook, VenueKey};

use crate::config::Config;
use crate::domain::DomainError;
use crate::metrics::PeerMetrics;
use crate::oplog::{self, outbox};
use crate::store::Store;

/// What the HTTP side needs to serve peers.
pub struct PeerServer {
    /// The venue key.
    pub key: Arc<VenueKey>,
    /// Nonces issued to callers.
    pub nonces: NonceBook,
    /// Node ids refused even with the key.
    pub revoked: Vec<String>,
}

/// Peer sync, running.
pub struct Peers {
    /// The serving side.
    pub server: Arc<PeerServer>,
    /// One pull loop per listed peer.
    pub handles: Vec<PeerHandle>,
    /// Their tasks.
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The op log as a peer loop sees it.
pub struct StorePeers {
    store: Store,
    metrics: PeerMetrics,
}

impl PeerStore for StorePeers {
    type Error = DomainError;

    async fn peer_cursor(&self, node: &str) -> Result<u64, DomainError> {
        let node = node.to_string();
        self.store
            .read(move |conn| Ok::<_, DomainError>(oplog::peers::cursor(conn, &node)?))
            .await
    }

    async fn apply_from_peer(
        &self,
        node: &str,
        ops: Vec<Op>,
        cursor: u64,
    ) -> Result<RemoteApplied, DomainError> {
        let node = node.to_string();
        // The effects beyond the store (fan-out to phones, badges, the console) follow from the
        // committed-op stream, as for ops from the relay.
        self.store
            .write(move |ctx| {
                let mut done = RemoteApplied::default();
                for op in &ops {
                    match ctx.try_apply_remote(op)? {
                        Ok(oplog::Applied::New(_)) => done.applied += 1,
                        Ok(oplog::Applied::Duplicate) => done.duplicates += 1,
                        Err(e) => {
                            tracing::warn!(op_id = %op.id, kind = %op.kind, peer = %node, error = %e, "op from a peer cannot be applied here; parked");
                            outbox::park_pulled(ctx.conn(), op, &e.to_string(), ctx.now_ms())?;
                            done.parked += 1;
                        }
                    }
                }
                let now = ctx.now_ms();
                oplog::peers::set_cursor(ctx.conn(), &node, cursor, now)?;
                Ok::<_, DomainError>(done)
            })
            .await
    }

    fn refused(&self, reason: &'static str) {
        self.metrics.refuse(reason);
    }
}

/// Why peer sync could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `peers.key_file` cannot be read.
    #[error("cannot read peers.key_file `{path}`: {source}")]
    KeyFile {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The key is too short.
    #[error("peers.key_file `{path}`: {source}")]
    Key {
        /// Where the key came from.
        path: String,
        /// What is wrong with it.
        source: sync_agent::peer::KeyTooShort,
    },
    /// A peer loop's HTTP client could not be made.
    #[error(transparent)]
    Client(#[from] client::SpawnError),
}

/// Starts peer sync when `[peers]` has a key; `None` when it has not.
pub fn start(
    config: &Config,
    store: &Store,
    metrics: &PeerMetrics,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) -> Result<Option<Peers>, StartError> {
    let peers = &config.peers;
    if !peers.enabled() {
        return Ok(None);
    }
    let key = match peers.key_file.is_empty() {
        // The config loader checked an inline key already.
        true => VenueKey::new(&peers.key).map_err(|source| StartError::Key {
            path: "peers.key".into(),
            source,
        })?,
        false => {
            let text =
                std::fs::read_to_string(&peers.key_file).map_err(|source| StartError::KeyFile {
                    path: peers.key_file.clone(),
                    source,
                })?;
            VenueKey::new(&text).map_err(|source| StartError::Key {
                path: peers.key_file.clone(),
                source,
            })?
        }
    };
    let key = Arc::new(key);
    let sync_store = Arc::new(StorePeers {
        store: store.clone(),
        metrics: metrics.clone(),
    });
    let mut handles = Vec::new();
    let mut tasks = Vec::new();
    for url in peers.url_list() {
        let (handle, task) = client::spawn(
            sync_store.clone(),
            PeerConfig {
                url: url.clone(),
                key: key.clone(),
                node_id: store.node_id().to_string(),
                event: config.event.id.clone(),
                wait: std::time::Duration::from_secs(peers.pull_wait_secs),
                version: env!("CARGO_PKG_VERSION").to_string(),
                revoked: peers.revoked_nodes(),
            },
            shutdown.clone(),
        )?;
        handles.push(handle);
        tasks.push(task);
    }
    tracing::info!(peers = handles.len(), "peer sync started");
    Ok(Some(Peers {
        server: Arc::new(PeerServer {
            key,
            nonces: NonceBook::default(),
            revoked: peers.revoked_nodes(),
        }),
        handles,
        tasks,
    }))
}
