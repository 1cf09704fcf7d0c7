//! Local MQTT for kiosks, signage and BLE gateways: the embedded rumqttd, the front that
//! authenticates and authorises every connection, the daemon's link (check-ins, statuses,
//! alerts, gateway adverts in; results and state out), and the retained state kept in SQLite.
//!
//! rumqttd keeps nothing across restarts, so every retained message the daemon publishes is
//! written to `mqtt_retained` first and re-published before the listeners accept anyone.
//! docs/protocol/mqtt-topics.md is the device-facing reference.

mod broker;
pub mod front;
mod ingest;
pub mod keepalive;
mod log_limit;
pub mod losses;
pub mod packet;
pub mod topics;

use std::net::SocketAddr;
use std::sync::Arc;

use ble_scanner::Advertisement;
use rumqttd::protocol::{Packet, Publish};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::appliance::SystemInfo;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::domain::{DomainError, retained, rfc3339};
use crate::health::Subsystems;
use crate::metrics::MqttMetrics;
use crate::store::Store;
pub use broker::BrokerError;
use front::Front;
use topics::Tree;

/// The daemon's client id on its own broker, and the `src` of what it publishes. Devices
/// cannot take it: device ids are checked against the registry, which refuses it.
pub const DAEMON_CLIENT_ID: &str = "venued";
/// Version of the payload envelope `{v, id, ts, src, ...}`.
pub const ENVELOPE_VERSION: u64 = 1;
/// Messages waiting for the publisher thread before publishers wait.
const PUBLISH_QUEUE: usize = 4096;
/// Most alerts listed in `alerts/active` (newest first).
const MAX_ACTIVE_ALERTS: usize = 100;

/// Why MQTT could not start.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The embedded broker.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// A listener could not be bound.
    #[error(
        "cannot listen for MQTT on {addr}: {source}; is another broker running? set the mqtt.listen* keys, or \"\" to turn one off"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS certificate or key.
    #[error("mqtt.listen_tls: {0}")]
    Tls(#[from] front::TlsError),
    /// Reading the retained state.
    #[error("cannot load the retained MQTT state: {0}")]
    Store(#[from] DomainError),
}

/// Why the daemon's own link could not subscribe.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SubscribeError {
    /// The embedded broker refused it.
    #[error("the broker refused the subscription: {0}")]
    Refused(Box<rumqttd::local::LinkError>),
    /// The publisher thread has stopped (the broker is shutting down or failed).
    #[error("the MQTT publisher thread is gone")]
    PublisherGone,
}

pub(crate) enum Outgoing {
    Publish {
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    },
    /// A subscription of the daemon's link.
    Subscribe(String, oneshot::Sender<Result<(), SubscribeError>>),
    /// Answered once everything queued before it is in the broker's queue.
    Flush(oneshot::Sender<()>),
}

/// Publishes into the embedded broker; cheap to clone.
#[derive(Clone)]
pub struct MqttHandle {
    tx: mpsc::Sender<Outgoing>,
    sessions: Arc<front::Sessions>,
    tree: Arc<Tree>,
    store: Store,
    metrics: MqttMetrics,
}

impl MqttHandle {
    /// The event's topic tree.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// Publishes a non-retained message on `path` (under the tree). Delivered at each
    /// subscription's QoS.
    pub async fn publish(&self, path: &str, payload: Vec<u8>) {
        self.send(self.tree.topic(path), payload, false).await;
    }

    /// Sets the retained state of `path`: committed to the store, then published. An empty
    /// payload is refused here, because the broker would take it as deletion.
    pub async fn set_retained(&self, path: &str, payload: Vec<u8>) -> Result<(), DomainError> {
        if payload.is_empty() {
            return Err(DomainError::Invalid(format!(
                "refusing an empty retained payload on `{path}`: it would delete the topic's state"
            )));
        }
        let topic = self.tree.topic(path);
        self.store_retained(topic.clone(), payload.clone()).await?;
        self.send(topic, payload, true).await;
        Ok(())
    }

    /// Writes a retained payload to `mqtt_retained` without publishing it (for state the
    /// broker already retains, such as a device's own status).
    async fn store_retained(&self, topic: String, payload: Vec<u8>) -> Result<(), DomainError> {
        self.store
            .write(move |ctx| retained::set(ctx.conn(), &topic, &payload, ctx.now_ms()))
            .await
    }

    /// Deletes the retained state of `path`: removed from the store, then an empty retained
    /// publish (the one place the daemon sends one, because it means deletion).
    pub async fn delete_retained(&self, path: &str) -> Result<bool, DomainError> {
        let topic = self.tree.topic(path);
        let t = topic.clone();
        let deleted = self
            .store
            .write(move |ctx| retained::delete(ctx.conn(), &t))
            .await?;
        if deleted {
            self.send(topic, Vec::new(), true).await;
        }
        Ok(deleted)
    }

    /// The retained payload stored for `path`, if any.
    pub async fn retained(&self, path: &str) -> Result<Option<Vec<u8>>, DomainError> {
        let topic = self.tree.topic(path);
        self.store
            .read(move |conn| retained::get(conn, &topic))
            .await
    }

    /// Raises an alert from the daemon on `alert/{severity}/{source}` (QoS 1 for subscribers
    /// that ask for it), once per `alert_id`, and refreshes `alerts/active`.
    pub async fn raise_alert(
        &self,
        severity: &str,
        source: &str,
        alert_id: &str,
        message: &str,
    ) -> Result<(), DomainError> {
        let (id, sev, src, text) = (
            alert_id.to_string(),
            severity.to_string(),
            source.to_string(),
            message.to_string(),
        );
        let new = self
            .store
            .write(move |ctx| {
                let now = ctx.now_ms();
                retained::raise_alert(ctx.conn(), &id, &sev, &src, &text, now)
            })
            .await?;
        if new {
            let mut payload = envelope(json!({ "message": message, "state": "raised" }));
            // The alert id is the envelope id, so receivers deduplicate redeliveries on it.
            if let Ok(mut v) = serde_json::from_slice::<Value>(&payload) {
                v["id"] = json!(alert_id);
                payload = serde_json::to_vec(&v).unwrap_or(payload);
            }
            self.publish(&format!("alert/{severity}/{source}"), payload)
                .await;
            publish_active_alerts(self).await?;
        }
        Ok(())
    }

    /// MQTT's counters (the bridge counts what it carries here).
    pub fn metrics(&self) -> &MqttMetrics {
        &self.metrics
    }

    /// Closes the MQTT connections of device `id` (after it was revoked or its password reset).
    pub fn disconnect(&self, id: &str) {
        self.sessions.close(id);
    }

    /// Waits until everything published so far has reached the broker.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Outgoing::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    async fn send(&self, topic: String, payload: Vec<u8>, retain: bool) {
        let message = Outgoing::Publish {
            topic,
            payload,
            retain,
        };
        if self.tx.send(message).await.is_ok() {
            self.metrics.publishes_out.inc();
        }
    }
}

#[cfg(test)]
impl MqttHandle {
    /// A handle on a broker that never takes anything: its publish queue holds `capacity`
    /// messages, and the receiver returned (kept, never read) is that queue.
    pub(crate) fn stalled(
        store: &Store,
        capacity: usize,
    ) -> (MqttHandle, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(capacity);
        let handle = MqttHandle {
            tx,
            sessions: Arc::new(front::Sessions::default()),
            tree: Arc::new(Tree::new("venue", "ev")),
            store: store.clone(),
            metrics: MqttMetrics::detached(),
        };
        (handle, rx)
    }
}

/// A JSON payload in the envelope every message of the tree uses: `{v, id, ts, src, ...}`.
pub fn envelope(mut fields: Value) -> Vec<u8> {
    let now = crate::store::now_ms();
    if let Value::Object(map) = &mut fields {
        map.insert("v".into(), json!(ENVELOPE_VERSION));
        map.insert("id".into(), json!(uuid::Uuid::now_v7().to_string()));
        map.insert("ts".into(), json!(rfc3339(now as i64)));
        map.insert("src".into(), json!(DAEMON_CLIENT_ID));
    }
    serde_json::to_vec(&fields).unwrap_or_default()
}

/// MQTT started and its state seeded, listeners bound but not yet accepting.
pub struct Mqtt {
    handle: MqttHandle,
    rx: rumqttd::local::LinkRx,
    front: Arc<Front>,
    stop_tx: watch::Sender<bool>,
    listeners: Vec<Listener>,
    broker_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The broker's alerts, followed once serving.
    alerts: rumqttd::alerts::AlertsLink,
    bound: Bound,
}

/// Where the daemon's link hands messages on topics that something above MQTT (the bridge to
/// the hub) asked for: MQTT itself knows nothing of what receives them.
pub struct Inbox {
    /// Topic filters under the tree the link subscribes to for it.
    pub filters: Vec<String>,
    /// Whether a topic path under the tree is one it takes.
    pub takes: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    /// Where (topic path, payload) go. Bounded: when it is full the message is dropped and
    /// counted (`venued_mqtt_dropped_total`), never waited for, because
    /// the link must keep draining.
    pub tx: mpsc::Sender<(String, Vec<u8>)>,
}

enum Listener {
    Tcp(TcpListener, u8, Option<tokio_rustls::TlsAcceptor>),
    Ws(TcpListener),
}

/// The addresses MQTT listens on (the real ports when configured with port 0).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Bound {
    /// MQTT 3.1.1.
    pub tcp: Option<SocketAddr>,
    /// MQTT 5.
    pub v5: Option<SocketAddr>,
    /// MQTT 3.1.1 over WebSocket.
    pub ws: Option<SocketAddr>,
    /// MQTT 3.1.1 over TLS.
    pub tls: Option<SocketAddr>,
}

impl Mqtt {
    /// Starts the broker, publishes the stored retained state (device statuses as `lost`:
    /// every device connection ended with the last run) and `daemon/status` online, and binds
    /// the listeners. Nobody is accepted until [`Mqtt::serve`].
    pub async fn start(
        config: &Config,
        store: &Store,
        auth: Arc<Authenticator>,
        metrics: MqttMetrics,
        demo: bool,
        subsystems: &Subsystems,
        system: &SystemInfo,
    ) -> Result<Mqtt, MqttError> {
        let mqtt = &config.mqtt;
        let addrs = config.mqtt_listeners;
        let check = (!demo).then(|| (store.clone(), auth.clone()));
        let embedded = broker::start(mqtt, addrs.v5.is_some(), check)?;
        let tree = Arc::new(Tree::new(&mqtt.topic_root, &config.event.id));
        let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
        spawn_publisher(embedded.tx, rx);
        let sessions = Arc::new(front::Sessions::default());
        let handle = MqttHandle {
            tx,
            sessions: sessions.clone(),
            tree: tree.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
        };
        seed_retained(&handle, subsystems, system).await?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let front = Arc::new(Front::new(
            tree,
            store.clone(),
            auth,
            metrics,
            mqtt,
            demo,
            (embedded.v4, embedded.v5),
            stop_rx,
            sessions,
        ));
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| MqttError::Bind { addr, source })
        };
        let mut listeners = Vec::new();
        let mut bound = Bound::default();
        if let Some(addr) = addrs.tcp {
            let l = bind(addr).await?;
            bound.tcp = l.local_addr().ok();
            listeners.push(Listener::Tcp(l, packet::LEVEL_V4, None));
        }
        if let Some(addr) = addrs.v5 {
            let l = bind(addr).await?;
            bound.v5 = l.local_addr().ok();
            listeners.push(Listener::Tcp(l, packet::LEVEL_V5, None));
        }
        if let Some(addr) = addrs.tls {
            let acceptor =
                front::tls_acceptor(&mqtt.tls_cert, &mqtt.tls_key).map_err(MqttError::Tls)?;
            let l = bind(addr).await?;
            bound.tls = l.local_addr().ok();
            listeners.push(Listener::Tcp(l, packet::LEVEL_V4, Some(acceptor)));
        }
        if let Some(addr) = addrs.ws {
            let l = bind(addr).await?;
            bound.ws = l.local_addr().ok();
            listeners.push(Listener::Ws(l));
        }
        handle.flush().await;
        Ok(Mqtt {
            handle,
            rx: embedded.rx,
            front,
            stop_tx,
            listeners,
            broker_tasks: embedded.listeners,
            alerts: embedded.alerts,
            bound,
        })
    }

    /// A publishing handle.
    pub fn handle(&self) -> MqttHandle {
        self.handle.clone()
    }

    /// Where MQTT listens.
    pub fn bound(&self) -> Bound {
        self.bound
    }

    /// Starts taking in messages for the daemon and accepting clients. Gateway adverts go to
    /// `adverts` when BLE presence runs, and messages on the `inbox`'s filters to it. Returns the handle that stops it all.
    pub fn serve(
        self,
        event_id: String,
        adverts: Option<mpsc::Sender<Advertisement>>,
        inbox: Option<Inbox>,
        badge_queued: Arc<tokio::sync::Notify>,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> MqttStop {
        let losses = Arc::new(losses::Losses::new(self.front.metrics.clone()));
        tasks.spawn(losses::follow_alerts(
            self.alerts,
            losses.clone(),
            self.front.stop.clone(),
        ));
        let ingest = Arc::new(ingest::Ingest::new(
            self.handle.clone(),
            event_id,
            self.front.metrics.clone(),
            losses,
            adverts,
            inbox,
            badge_queued,
        ));
        tasks.spawn(ingest::run(self.rx, ingest, self.front.stop.clone()));
        for listener in self.listeners {
            let front = self.front.clone();
            match listener {
                Listener::Tcp(l, level, tls) => {
                    tasks.spawn(front::serve_tcp(front, l, level, tls));
                }
                Listener::Ws(l) => {
                    tasks.spawn(front::serve_ws(front, l));
                }
            }
        }
        MqttStop {
            handle: self.handle,
            stop_tx: self.stop_tx,
            broker_tasks: self.broker_tasks,
        }
    }
}

/// Stops MQTT at shutdown.
pub struct MqttStop {
    handle: MqttHandle,
    stop_tx: watch::Sender<bool>,
    broker_tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl MqttStop {
    /// Publishes `daemon/status` offline (retained, and stored), then closes the listeners
    /// and every client connection. Clients see the offline status, then their connection
    /// close; the broker does not survive the process, so they reconnect to the next run.
    pub async fn stop(self) {
        let offline = envelope(json!({
            "state": "offline",
            "version": env!("CARGO_PKG_VERSION"),
        }));
        if let Err(e) = self.handle.set_retained("daemon/status", offline).await {
            tracing::warn!(error = %e, "cannot store the offline daemon status");
        }
        self.handle.flush().await;
        let _ = self.stop_tx.send(true);
        for task in self.broker_tasks {
            task.abort();
        }
    }
}

/// Re-publishes the stored retained state, then the fresh `daemon/status` and alert list.
async fn seed_retained(
    handle: &MqttHandle,
    subsystems: &Subsystems,
    system: &SystemInfo,
) -> Result<(), DomainError> {
    let rows: Vec<(String, Vec<u8>)> = handle.store.read(retained::all).await?;
    for (topic, payload) in rows {
        match handle.tree.parse(&topic) {
            Some(topics::Topic::Status { .. }) => {
                // Every device connection ended with the previous run; it is lost until it
                // reconnects and says otherwise.
                let mut status: Value = serde_json::from_slice(&payload).unwrap_or(json!({}));
                let before = status.get("state").cloned().unwrap_or(Value::Null);
                if let Value::Object(map) = &mut status {
                    map.insert("state".into(), json!("lost"));
                    map.insert("previous_state".into(), before);
                    map.insert("reason".into(), json!("venued restarted"));
                }
                let path = topic.trim_start_matches(handle.tree.prefix()).to_string();
                handle
                    .set_retained(&path, serde_json::to_vec(&status).unwrap_or_default())
                    .await?;
            }
            // A topic of another event or root (the configuration changed): left unpublished.
            None => {}
            Some(_) => handle.send(topic, payload, true).await,
        }
    }
    let online = envelope(json!({
        "state": "online",
        "version": env!("CARGO_PKG_VERSION"),
        "node_id": handle.store.node_id(),
        "subsystems": subsystems.snapshot(),
        "image_version": system.image_version,
        "slot": system.slot,
    }));
    handle.set_retained("daemon/status", online).await?;
    publish_active_alerts(handle).await
}

/// Publishes the retained list of active alerts.
pub(crate) async fn publish_active_alerts(handle: &MqttHandle) -> Result<(), DomainError> {
    let alerts: Vec<Value> = handle
        .store
        .read(|conn| retained::active_alerts(conn, MAX_ACTIVE_ALERTS))
        .await?;
    handle
        .set_retained("alerts/active", envelope(json!({ "alerts": alerts })))
        .await
}

/// The publisher thread: owns the broker link's sending half. Its sends block when the
/// router's queue is full, so they stay off the runtime's workers.
fn spawn_publisher(mut link: rumqttd::local::LinkTx, mut rx: mpsc::Receiver<Outgoing>) {
    let runtime = tokio::runtime::Handle::current();
    let spawned = std::thread::Builder::new()
        .name("mqtt-publisher".into())
        .spawn(move || {
            while let Some(message) = rx.blocking_recv() {
                match message {
                    Outgoing::Publish {
                        topic,
                        payload,
                        retain,
                    } => {
                        let packet =
                            Packet::Publish(Publish::new(topic.into_bytes(), payload, retain), None);
                        if let Err(e) = runtime.block_on(link.send(packet)) {
                            tracing::error!(error = %e, "the MQTT broker refused a publish; is its router gone?");
                        }
                    }
                    Outgoing::Subscribe(filter, done) => {
                        let _ = done.send(link.subscribe(filter).map(|_| ()).map_err(|e| SubscribeError::Refused(Box::new(e))));
                    }
                    Outgoing::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the MQTT publisher thread; nothing will be published");
    }
}
