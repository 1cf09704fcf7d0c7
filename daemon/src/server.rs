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
use crate::config::{BleSource, Config};
use crate::demo::{self, DemoInfo};
use crate::domain::{DomainError, devices, entities, idempotency};
use crate::health::{SubsystemState, Subsystems};
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::mqtt::{Mqtt, MqttError};
use crate::oplog::ENTITIES;
use crate::presence::{self, OccupancyView, PresenceTask};
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
    /// MQTT could not start.
    #[error("cannot start MQTT: {0}")]
    Mqtt(#[from] MqttError),
    /// The replica is configured but cannot start.
    #[error("cannot start the replica: {0}")]
    Replica(String),
    /// Sync is configured but cannot start.
    #[error("cannot start sync: {0}")]
    Sync(#[from] crate::sync::StartError),
    /// Peer sync is configured but cannot start.
    #[error("cannot start peer sync: {0}")]
    Peers(#[from] crate::peers::StartError),
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
    ble: Option<BlePlan>,
    mqtt: Option<Mqtt>,
    /// The bridge's subscription to the committed-op stream, taken at start.
    bridge_stream: Option<crate::store::Subscription>,
    sync_task: Option<tokio::task::JoinHandle<()>>,
    peer_spawner: Option<crate::peers::PeerSpawner>,
    replica_task: Option<tokio::task::JoinHandle<()>>,
    /// Turned true once on shutdown; every long-running task watches it.
    stop: tokio::sync::watch::Sender<bool>,
}

/// What the BLE side will run: the source, its scanners (id, zone, offset), and for the
/// simulator the badges to simulate.
struct BlePlan {
    source: BleSource,
    scanners: Vec<(String, String, f64)>,
    badges: Vec<ble_scanner::BeaconId>,
}

impl Daemon {
    /// Opens the store, performs first-start setup, seeds demo data if asked, and binds the HTTP
    /// listener.
    pub async fn start(
        config: Config,
        demo: bool,
        system: crate::appliance::SystemInfo,
    ) -> Result<Daemon, StartError> {
        let started = Instant::now();
        let metrics = Metrics::new();
        let system = Arc::new(system);
        if let Some(error) = &system.provisioning_error {
            tracing::warn!(%error, "running on the configuration applied before: the newer provisioning file was not applied");
        }
        let options = StoreOptions {
            readers: config.store.readers,
            max_group_writes: config.store.max_group_writes,
            write_queue_depth: config.store.write_queue_depth,
        };
        let (replica, hook) = match config.replica.enabled {
            true => {
                let (replica, hook) =
                    crate::replica::Replica::prepare(&config.replica, &config.data_dir).map_err(
                        |e| {
                            StartError::Replica(format!(
                                "cannot prepare the replica's staging directory: {e}"
                            ))
                        },
                    )?;
                (Some(replica), Some(hook))
            }
            false => (None, None),
        };
        let store = Store::open_with_hook(&config.data_dir, &options, metrics.store.clone(), hook)?;
        let provisioned = Some(config.http.admin_token_sha256.as_str()).filter(|h| !h.is_empty());
        let admin = auth::ensure_admin_token(&store, &config.data_dir, provisioned).await?;
        ensure_event(&store, &config).await?;
        let declared =
            devices::ensure_configured(&store, &config.event.id, &config.devices).await?;
        if declared > 0 {
            tracing::info!(
                devices = declared,
                "devices declared in the configuration registered or updated"
            );
        }
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
        let ble = plan_ble(&store, &config, demo.is_some()).await?;
        if ble.is_none() {
            subsystems.set("ble", SubsystemState::Disabled);
        }
        let auth = Arc::new(Authenticator::new(admin.sha256));
        let hub = crate::hub::Hub::start(
            &store,
            &config.event.id,
            &config.data_dir,
            metrics.connections.clone(),
        )
        .await?;
        let mqtt = match config.mqtt.enabled {
            true => {
                subsystems.set("mqtt", SubsystemState::Ok);
                let mqtt = Mqtt::start(
                    &config,
                    &store,
                    auth.clone(),
                    metrics.mqtt.clone(),
                    demo.is_some(),
                    &subsystems,
                    &system,
                )
                .await?;
                tracing::info!(listeners = ?mqtt.bound(), "MQTT broker ready");
                Some(mqtt)
            }
            false => {
                subsystems.set("mqtt", SubsystemState::Disabled);
                None
            }
        };
        let stop = tokio::sync::watch::Sender::new(false);
        let (sync, sync_task) =
            match crate::sync::start(&config, &store, &hub, &system, stop.subscribe()) {
                Ok(Some((handle, task))) => {
                    subsystems.set("sync", SubsystemState::Ok);
                    (Some(handle), Some(task))
                }
                Ok(None) => {
                    subsystems.set("sync", SubsystemState::Disabled);
                    (None, None)
                }
                Err(e) => return Err(StartError::Sync(e)),
            };
        let (peers, peer_spawner) =
            match crate::peers::start(&config, &store, &metrics.peers, &stop.subscribe()) {
                Ok(Some(p)) => {
                    subsystems.set("peers", SubsystemState::Ok);
                    (Some(p.server), Some(p.spawner))
                }
                Ok(None) => {
                    subsystems.set("peers", SubsystemState::Disabled);
                    (None, None)
                }
                Err(e) => return Err(StartError::Peers(e)),
            };
        let peer_list = peer_spawner
            .as_ref()
            .map(|s| s.list.clone())
            .unwrap_or_default();
        let replica_task = match &replica {
            Some(r) => {
                subsystems.set("replica", SubsystemState::Ok);
                Some(
                    r.start(&config.replica, store.clone(), stop.subscribe())
                        .await,
                )
            }
            None => {
                subsystems.set("replica", SubsystemState::Disabled);
                None
            }
        };
        // Subscribed now, so messages posted before `serve` are bridged out too.
        let bridge_stream = mqtt.as_ref().map(|_| store.subscribe("bridge"));
        let state = AppState {
            store,
            sync,
            peers,
            peer_list,
            replica,
            metrics,
            auth,
            mqtt: mqtt.as_ref().map(Mqtt::handle),
            mqtt_bound: mqtt.as_ref().map(Mqtt::bound).unwrap_or_default(),
            hub,
            config: Arc::new(config),
            subsystems,
            started,
            occupancy: OccupancyView::default(),
            beacon_health: presence::HealthView::default(),
            scanners: presence::ScannerView::default(),
            print: crate::print::Printing::default(),
            system,
        };
        Ok(Daemon {
            state,
            listener,
            admin_token_written: admin.written_to,
            demo,
            ble,
            mqtt,
            bridge_stream,
            sync_task,
            peer_spawner,
            replica_task,
            stop,
        })
    }

    /// Where MQTT listens, if it runs.
    pub fn mqtt_bound(&self) -> Option<crate::mqtt::Bound> {
        self.mqtt.as_ref().map(Mqtt::bound)
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
            state,
            listener,
            ble,
            mqtt,
            bridge_stream,
            sync_task,
            peer_spawner,
            replica_task,
            stop: stop_tx,
            ..
        } = self;
        let drain = Duration::from_secs(state.config.http.shutdown_timeout_secs);
        let stop_rx = stop_tx.subscribe();
        let mut background = tokio::task::JoinSet::new();
        let adverts = ble.map(|plan| start_ble(&state, plan, &mut background, stop_rx.clone()));
        background.spawn(
            state
                .hub
                .clone()
                .follow_occupancy(state.occupancy.follow(), stop_rx.clone()),
        );
        background.spawn(state.hub.clone().run_sweep(stop_rx.clone()));
        let mqtt_stop = mqtt.map(|mqtt| {
            let inbox = bridge_stream.map(|stream| {
                crate::bridge::start(
                    &state.config.mqtt.bridge,
                    &state.hub,
                    &mqtt.handle(),
                    stream,
                    state.store.node_id(),
                    &mut background,
                    stop_rx.clone(),
                )
            });
            mqtt.serve(
                state.config.event.id.clone(),
                adverts,
                inbox,
                state.print.waker(),
                &mut background,
            )
        });
        if state.config.print.enabled {
            let deps = crate::print::Deps::new(
                state.store.clone(),
                state.config.event.id.clone(),
                state.store.node_id().to_string(),
                state.config.print.clone(),
                state.config.print_template.clone(),
                state.metrics.print.clone(),
                state.mqtt.clone(),
                &state.print,
            );
            crate::print::start(deps, &mut background, stop_rx.clone());
            state.subsystems.set("print", SubsystemState::Ok);
        } else {
            state.subsystems.set("print", SubsystemState::Disabled);
        }
        let retention_ms = state.config.store.idempotency_retention_hours * 3_600_000;
        background.spawn(purge_idempotency_keys(
            state.store.clone(),
            retention_ms,
            stop_rx.clone(),
        ));
        let store = state.store.clone();
        let advertiser = advertise(&state, listener.local_addr().ok());
        if let (Some(spawner), Some(advertiser)) = (&peer_spawner, &advertiser)
            && state.config.peers.discover
        {
            match advertiser.browse_peers() {
                Ok(found) => {
                    background.spawn(crate::peers::discover(
                        spawner.clone(),
                        found,
                        stop_rx.clone(),
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look for peers on the LAN; [peers] urls only")
                }
            }
        }

        let (begun_tx, mut begun_rx) = tokio::sync::oneshot::channel::<()>();
        let graceful = async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections; finishing in-flight requests");
            on_stopping();
            if let Some(mqtt) = mqtt_stop {
                mqtt.stop().await;
            }
            let _ = stop_tx.send(true);
            let _ = begun_tx.send(());
        };
        let ceiling = http::listener::ceiling(state.config.http.max_connections);
        tracing::info!(
            ceiling,
            "accepting at most this many HTTP/WebSocket connections"
        );
        let listener = http::listener::CappedListener::new(
            listener,
            ceiling,
            state.metrics.connections.clone(),
        );
        let app = http::router(state);
        // Boxed so it can be dropped (closing connections and releasing the router's store
        // handles) before the store is closed.
        let mut serve = Box::pin(
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<http::listener::Peer>(),
            )
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
        // Off the LAN's lists at once (goodbye packets), not when the records expire.
        drop(advertiser);
        // Sync stops mid-call (see `sync_agent::agent::spawn` for why that is safe), the replica
        // between uploads. Both were started before `serve` and saw the same stop signal.
        let peer_tasks = peer_spawner
            .map(|s| s.list.take_tasks())
            .unwrap_or_default();
        for task in [sync_task, replica_task]
            .into_iter()
            .flatten()
            .chain(peer_tasks)
        {
            background.spawn(async move {
                let _ = task.await;
            });
        }
        // Background tasks saw the stop signal; give them a moment to write what they decided.
        let finish = async { while background.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(STORE_CLOSE_TIMEOUT_SECS), finish)
            .await
            .is_err()
        {
            background.abort_all();
        }
        drop(stop_rx);
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

/// Advertises the appliance on the LAN by name (`[mdns]`) once its ports are known; a failure
/// leaves the `mdns` subsystem degraded and the appliance reachable by address.
fn advertise(state: &AppState, http: Option<SocketAddr>) -> Option<crate::mdns::Advertiser> {
    let config = &state.config;
    if !config.mdns.enabled {
        state.subsystems.set("mdns", SubsystemState::Disabled);
        return None;
    }
    let announced = crate::mdns::Announced {
        http_port: http.map_or(config.http_listen.port(), |a| a.port()),
        mqtt_port: state.mqtt_bound.tcp.map(|a| a.port()),
        event: &config.event.id,
        node: state.store.node_id(),
        peer_sync: state.peers.is_some(),
    };
    match crate::mdns::advertise(&config.mdns, &announced) {
        Ok(advertiser) => {
            state.subsystems.set("mdns", SubsystemState::Ok);
            Some(advertiser)
        }
        Err(e) => {
            tracing::warn!(error = %e, "not advertised by name; reachable by address only");
            state
                .subsystems
                .set("mdns", SubsystemState::Degraded(e.to_string()));
            None
        }
    }
}

/// Decides what BLE runs: the configured source (the simulator in demo mode when none is set),
/// the configured scanners, or one simulated scanner per zone of the registry.
async fn plan_ble(
    store: &Store,
    config: &Config,
    demo: bool,
) -> Result<Option<BlePlan>, DomainError> {
    let ble = &config.ble;
    let source = match (ble.source, demo) {
        (BleSource::None, true) => BleSource::Simulated,
        (source, _) => source,
    };
    if source == BleSource::None {
        return Ok(None);
    }
    let mut scanners: Vec<(String, String, f64)> = ble
        .scanners
        .iter()
        .map(|s| (s.id.clone(), s.zone.clone(), s.rssi_offset_db))
        .collect();
    let event_id = config.event.id.clone();
    let (zones, badges) = store
        .read(move |conn| crate::domain::entities::zones_and_badges(conn, &event_id))
        .await?;
    if scanners.is_empty() && source == BleSource::Simulated {
        scanners = zones
            .iter()
            .map(|z| (format!("sim-{z}"), z.clone(), 0.0))
            .collect();
    }
    let badges = badges.iter().filter_map(|b| b.parse().ok()).collect();
    Ok(Some(BlePlan {
        source,
        scanners,
        badges,
    }))
}

/// Starts BLE presence; returns where adverts from other sources (MQTT gateways) go.
fn start_ble(
    state: &AppState,
    plan: BlePlan,
    tasks: &mut tokio::task::JoinSet<()>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::sync::mpsc::Sender<ble_scanner::Advertisement> {
    let ble = &state.config.ble;
    let (tx, rx) = tokio::sync::mpsc::channel(presence::ADVERT_QUEUE);
    // Gateways have their own queue, so the end of a replay is still seen as the local
    // source's end.
    let (gateways, gateway_rx) = tokio::sync::mpsc::channel(presence::ADVERT_QUEUE);
    let task = PresenceTask {
        store: state.store.clone(),
        event_id: state.config.event.id.clone(),
        engine: presence::engine_config(ble, &plan.scanners),
        retention_hours: ble.transition_retention_hours,
        view: state.occupancy.clone(),
        metrics: state.metrics.presence.clone(),
        subsystems: state.subsystems.clone(),
        health: state.beacon_health.clone(),
        scanners: state.scanners.clone(),
        mqtt: state.mqtt.clone(),

        low_battery_mv: ble.low_battery_mv,
        recorder: match ble.record_file.as_str() {
            "" => None,
            path => match presence::record::Recorder::start(
                PathBuf::from(path),
                ble.record_max_mib * 1024 * 1024,
            ) {
                Ok(recorder) => {
                    tracing::info!(file = path, "recording BLE adverts");
                    Some(recorder)
                }
                Err(e) => {
                    tracing::error!(file = path, error = %e, "cannot record BLE adverts; continuing without");
                    None
                }
            },
        },
    };
    tracing::info!(source = ?plan.source, scanners = plan.scanners.len(), "BLE presence started");
    tasks.spawn(task.run(rx, gateway_rx, stop.clone()));
    if let Some(mqtt) = &state.mqtt {
        tasks.spawn(presence::outputs::publish_occupancy(
            mqtt.clone(),
            state.occupancy.follow(),
            stop.clone(),
        ));
    }
    let scanners: Vec<(String, String)> = plan
        .scanners
        .into_iter()
        .map(|(id, zone, _)| (id, zone))
        .collect();
    if plan.source != BleSource::Bluez {
        // The radio reports its own state below; the other sources are up once started.
        state.subsystems.set("ble", SubsystemState::Ok);
    }
    match plan.source {
        BleSource::Simulated => {
            tasks.spawn(presence::source::simulate(plan.badges, scanners, tx, stop));
        }
        BleSource::Replay => {
            let path = PathBuf::from(&ble.replay_file);
            let subsystems = state.subsystems.clone();
            tasks.spawn(async move {
                if let Err(e) = presence::source::replay_file(path.clone(), tx, stop).await {
                    tracing::error!(error = %e, file = %path.display(), "cannot replay the BLE recording");
                    subsystems.set(
                        "ble",
                        SubsystemState::Degraded(format!("cannot read {}: {e}", path.display())),
                    );
                }
            });
        }
        BleSource::Bluez => {
            let options = ble_scanner::bluez::BluezOptions {
                adapter: ble.adapter.clone(),
                silence_restart_secs: ble.silence_restart_secs,
            };
            let (state_tx, mut state_rx) =
                tokio::sync::watch::channel(ble_scanner::bluez::SourceState::Starting);
            tasks.spawn(ble_scanner::bluez::run(options, tx, state_tx, stop));
            let subsystems = state.subsystems.clone();
            // The radio's state is the BLE subsystem's state: degraded, never failed, since
            // check-ins and messages work without it.
            let restarts_metric = state.metrics.presence.watchdog_restarts.clone();
            tasks.spawn(async move {
                let mut counted = 0u64;
                loop {
                    let now = state_rx.borrow_and_update().clone();
                    subsystems.set(
                        "ble",
                        match now {
                            ble_scanner::bluez::SourceState::Scanning { watchdog_restarts } => {
                                restarts_metric.inc_by(watchdog_restarts.saturating_sub(counted));
                                counted = counted.max(watchdog_restarts);
                                SubsystemState::Ok
                            }
                            ble_scanner::bluez::SourceState::Starting => {
                                SubsystemState::Degraded("connecting to BlueZ".into())
                            }
                            ble_scanner::bluez::SourceState::Degraded(reason) => {
                                SubsystemState::Degraded(reason)
                            }
                        },
                    );
                    if state_rx.changed().await.is_err() {
                        return;
                    }
                }
            });
        }
        BleSource::Gateways => {
            // No local source: its queue stays open (and empty) while the daemon runs.
            tasks.spawn(async move {
                let mut stop = stop;
                let _ = stop.changed().await;
                drop(tx);
            });
        }
        BleSource::None => {}
    }
    gateways
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

async fn purge_idempotency_keys(
    store: Store,
    retention_ms: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(Duration::from_secs(IDEMPOTENCY_PURGE_INTERVAL_SECS));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
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
