//! The running daemon: opens the store, binds the listener, serves, and shuts down in bounded
//! time. The binary wraps this with process concerns (signals, systemd notifications, logging).
//!
//! Start-up order matters to systemd `Type=notify`: [`Daemon::start`] returns only once the store
//! is open and the listener bound, so the binary's `READY=1` after it is truthful.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::auth::{self, Authenticator};
use crate::config::Config;
use crate::demo::{self, DemoInfo};
use crate::domain::{DomainError, entities, idempotency};
use crate::health::{SubsystemState, Subsystems};
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::oplog::ENTITIES;
use crate::store::{Store, StoreError, StoreOptions};

/// How often expired idempotency keys are purged.
const IDEMPOTENCY_PURGE_INTERVAL_SECS: u64 = 3600;
/// How long shutdown waits for queued writes to commit after the server has stopped.
const STORE_CLOSE_TIMEOUT_SECS: u64 = 2;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    /// First-start setup (admin token, event, demo data) failed.
    #[error("cannot prepare the store: {0}")]
    Setup(#[from] DomainError),
    /// The HTTP listener could not be bound.
    #[error("cannot listen on {addr}: {source}; is another venued running, or set http.listen")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A started daemon, ready to serve.
pub struct Daemon {
    state: AppState,
    listener: TcpListener,
    admin_token_written: Option<PathBuf>,
    demo: Option<DemoInfo>,
}

impl Daemon {
    /// Opens the store, performs first-start setup, seeds demo data if asked, and binds the HTTP
    /// listener.
    pub async fn start(config: Config, demo: bool) -> Result<Daemon, StartError> {
        let started = Instant::now();
        let metrics = Metrics::new();
        let options = StoreOptions {
            readers: config.store.readers,
            max_group_writes: config.store.max_group_writes,
            write_queue_depth: config.store.write_queue_depth,
        };
        let store = Store::open(&config.data_dir, &options, metrics.store.clone())?;
        let admin = auth::ensure_admin_token(&store, &config.data_dir).await?;
        ensure_event(&store, &config).await?;
        let demo = match demo {
            true => Some(demo::seed(&store, &config.event.id).await?),
            false => None,
        };
        let listener = TcpListener::bind(config.http_listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.http_listen,
                source,
            })?;
        let subsystems = Subsystems::default();
        subsystems.set("store", SubsystemState::Ok);
        subsystems.set("http", SubsystemState::Ok);
        let state = AppState {
            store,
            metrics,
            auth: Arc::new(Authenticator::new(admin.sha256)),
            config: Arc::new(config),
            subsystems,
            started,
        };
        Ok(Daemon {
            state,
            listener,
            admin_token_written: admin.written_to,
            demo,
        })
    }

    /// The bound HTTP address (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.state.config.http_listen)
    }

    /// The store's node id.
    pub fn node_id(&self) -> &str {
        self.state.store.node_id()
    }

    /// Where a newly generated admin token was written, on first start.
    pub fn admin_token_written(&self) -> Option<&std::path::Path> {
        self.admin_token_written.as_deref()
    }

    /// The demo kiosk's credentials, in demo mode.
    pub fn demo(&self) -> Option<&DemoInfo> {
        self.demo.as_ref()
    }

    /// A handle for liveness checks (the systemd watchdog).
    pub fn store(&self) -> Store {
        self.state.store.clone()
    }

    /// Serves until `shutdown` resolves; then calls `on_stopping`, stops accepting, gives
    /// in-flight requests up to `http.shutdown_timeout_secs`, and lets queued writes commit.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        on_stopping: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<()> {
        let Daemon {
            state, listener, ..
        } = self;
        let drain = Duration::from_secs(state.config.http.shutdown_timeout_secs);
        let retention_ms = state.config.store.idempotency_retention_hours * 3_600_000;
        let purger = tokio::spawn(purge_idempotency_keys(state.store.clone(), retention_ms));
        let store = state.store.clone();

        let (begun_tx, mut begun_rx) = tokio::sync::oneshot::channel::<()>();
        let graceful = async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections; finishing in-flight requests");
            on_stopping();
            let _ = begun_tx.send(());
        };
        let app = http::router(state);
        // Boxed so it can be dropped (closing connections and releasing the router's store
        // handles) before the store is closed.
        let mut serve = Box::pin(
            axum::serve(listener, app)
                .with_graceful_shutdown(graceful)
                .into_future(),
        );
        let result = tokio::select! {
            biased;
            result = &mut serve => result,
            Ok(()) = &mut begun_rx => {
                match tokio::time::timeout(drain, &mut serve).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!(secs = drain.as_secs(), "in-flight requests did not finish in time; closing them");
                        Ok(())
                    }
                }
            }
        };
        drop(serve);
        purger.abort();
        let _ = purger.await;
        if tokio::time::timeout(Duration::from_secs(STORE_CLOSE_TIMEOUT_SECS), store.close())
            .await
            .is_err()
        {
            tracing::warn!(
                "store writer still busy at exit; SQLite's WAL keeps every committed write"
            );
        }
        result
    }
}

/// Makes sure the configured event exists (and carries the configured name, if one is set).
async fn ensure_event(store: &Store, config: &Config) -> Result<(), DomainError> {
    let Some(entity) = ENTITIES.iter().find(|e| e.name == "event") else {
        return Ok(());
    };
    let id = config.event.id.clone();
    let wanted = &config.event.name;
    let needs_write = match entities::get(store, &id, entity, id.clone()).await {
        Ok(record) => !wanted.is_empty() && record["name"].as_str() != Some(wanted.as_str()),
        Err(DomainError::NotFound(_)) => true,
        Err(e) => return Err(e),
    };
    if needs_write {
        let mut fields = serde_json::Map::new();
        fields.insert("name".into(), serde_json::Value::String(wanted.clone()));
        entities::upsert(store, &id, entity, id.clone(), fields).await?;
    }
    Ok(())
}

async fn purge_idempotency_keys(store: Store, retention_ms: u64) {
    let mut every = tokio::time::interval(Duration::from_secs(IDEMPOTENCY_PURGE_INTERVAL_SECS));
    loop {
        every.tick().await;
        let result = store
            .write(move |ctx| idempotency::purge(ctx.conn(), ctx.now_ms(), retention_ms))
            .await;
        match result {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "expired idempotency keys purged"),
            Err(e) => tracing::warn!(error = %e, "could not purge idempotency keys; will retry"),
        }
    }
}
