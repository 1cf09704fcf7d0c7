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
use crate::oplog;
use crate::store::Store;

/// What the HTTP side needs to serve peers.
pub struct PeerServer {
    /// The venue key.
    pub key: Arc<VenueKey>,
    /// Nonces issued to callers.
    pub nonces: NonceBook,
    /// Node ids refused even with the key.
    pub revoked: Vec<String>,
    /// Turns true when the daemon stops: long-polls answer at once, so they do not hold up the
    /// drain.
    pub stop: tokio::sync::watch::Receiver<bool>,
}

/// Peer sync, running.
pub struct Peers {
    /// The serving side.
    pub server: Arc<PeerServer>,
    /// Starts pull loops: one per listed peer at start, more as mDNS finds them.
    pub spawner: PeerSpawner,
}

/// A running pull loop: its handle and its task.
type Loop = (PeerHandle, tokio::task::JoinHandle<()>);

/// The pull loops, shared between the status endpoint and whoever starts them.
#[derive(Clone, Default)]
pub struct PeerList(Arc<std::sync::Mutex<Vec<Loop>>>);

impl PeerList {
    /// A copy of each loop's status.
    pub fn statuses(&self) -> Vec<client::PeerStatus> {
        self.lock().iter().map(|(h, _)| h.status()).collect()
    }

    /// The loops' tasks, taken out (at shutdown).
    pub fn take_tasks(&self) -> Vec<tokio::task::JoinHandle<()>> {
        self.lock().drain(..).map(|(_, t)| t).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Loop>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Everything a new pull loop needs.
#[derive(Clone)]
pub struct PeerSpawner {
    store: Arc<StorePeers>,
    key: Arc<VenueKey>,
    node: String,
    event: String,
    wait: std::time::Duration,
    revoked: Vec<String>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    /// The loops started so far.
    pub list: PeerList,
}

impl PeerSpawner {
    /// Starts pulling from `url`, unless a loop pulls from it (or from `node`, when known)
    /// already; whether one was started.
    pub fn add(&self, url: &str, node: Option<&str>) -> Result<bool, client::SpawnError> {
        let mut list = self.list.lock();
        let known = list.iter().any(|(h, _)| {
            let s = h.status();
            s.url == url || (node.is_some() && s.node.as_deref() == node)
        });
        if known {
            return Ok(false);
        }
        let (handle, task) = client::spawn(
            self.store.clone(),
            PeerConfig {
                url: url.to_string(),
                key: self.key.clone(),
                node_id: self.node.clone(),
                event: self.event.clone(),
                wait: self.wait,
                version: env!("CARGO_PKG_VERSION").to_string(),
                revoked: self.revoked.clone(),
            },
            self.shutdown.clone(),
        )?;
        list.push((handle, task));
        Ok(true)
    }
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
                let done =
                    crate::sync::apply_remote_batch(ctx, &ops, crate::sync::Source::Peer(&node))?;
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
    #[error("{path}: {source}")]
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
                path: format!("peers.key_file `{}`", peers.key_file),
                source,
            })?
        }
    };
    let spawner = PeerSpawner {
        store: Arc::new(StorePeers {
            store: store.clone(),
            metrics: metrics.clone(),
        }),
        key: Arc::new(key.clone()),
        node: store.node_id().to_string(),
        event: config.event.id.clone(),
        wait: std::time::Duration::from_secs(peers.pull_wait_secs),
        revoked: peers.revoked_nodes(),
        shutdown: shutdown.clone(),
        list: PeerList::default(),
    };
    for url in peers.url_list() {
        spawner.add(&url, None)?;
    }
    tracing::info!(
        listed = peers.url_list().len(),
        discover = peers.discover,
        "peer sync started"
    );
    Ok(Some(Peers {
        server: Arc::new(PeerServer {
            key: Arc::new(key),
            nonces: NonceBook::default(),
            revoked: peers.revoked_nodes(),
            stop: shutdown.clone(),
        }),
        spawner,
    }))
}

/// Pulls from every box of this event that mDNS finds (`_venue-sync._tcp`), until `stop`.
/// A box listed in `[peers] urls` already is not pulled twice (same URL, or the same node once
/// its loop said hello).
pub async fn discover(
    spawner: PeerSpawner,
    found: mdns_sd::Receiver<mdns_sd::ServiceEvent>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let event = tokio::select! {
            e = found.recv_async() => match e {
                Ok(e) => e,
                Err(_) => return,
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        let mdns_sd::ServiceEvent::ServiceResolved(service) = event else {
            continue;
        };
        let (Some(node), Some(event)) = (
            service.get_property_val_str("node"),
            service.get_property_val_str("event"),
        ) else {
            continue;
        };
        if node == spawner.node || event != spawner.event {
            continue;
        }
        // IPv4 first: the one a venue LAN is sure to route.
        let mut addresses: Vec<std::net::IpAddr> = service
            .get_addresses()
            .iter()
            .map(|a| a.to_ip_addr())
            .collect();
        addresses.sort_by_key(|a| !a.is_ipv4());
        let Some(address) = addresses.first() else {
            continue;
        };
        let url = match address {
            std::net::IpAddr::V4(a) => format!("http://{a}:{}", service.get_port()),
            std::net::IpAddr::V6(a) => format!("http://[{a}]:{}", service.get_port()),
        };
        match spawner.add(&url, Some(node)) {
            Ok(true) => {
                tracing::info!(%url, %node, "peer found on the LAN (mDNS); pulling from it")
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(%url, error = %e, "cannot pull from a peer found on the LAN"),
        }
    }
}
