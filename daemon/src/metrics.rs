//! The daemon's Prometheus metrics: one registry, typed handles per subsystem.
//!
//! Handles are cheap clones sharing atomics, so the writer thread and request handlers update
//! them without locks; `/metrics` encodes the registry as Prometheus text.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Store metrics, updated by the writer thread after each group.
#[derive(Clone)]
pub struct StoreMetrics {
    commit_seconds: Histogram,
    group_size: Histogram,
    ops_appended: Counter,
    stream_resyncs: Family<SubscriberLabel, Counter>,
}

/// A `subscriber` label (of the committed-op stream).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubscriberLabel {
    /// Who subscribed.
    pub subscriber: &'static str,
}

impl StoreMetrics {
    fn new(registry: &mut Registry) -> Self {
        // 0.25 ms .. ~4 s: an fsync on an SD card can take hundreds of milliseconds.
        let commit_seconds = Histogram::new(exponential_buckets(0.000_25, 2.0, 15));
        let group_size = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        let ops_appended = Counter::default();
        registry.register(
            "venued_store_commit_seconds",
            "Time from the start of a group transaction to its durable commit",
            commit_seconds.clone(),
        );
        registry.register(
            "venued_store_group_writes",
            "Writes committed together in one transaction (one fsync)",
            group_size.clone(),
        );
        registry.register(
            "venued_ops_appended",
            "Ops appended to the op log",
            ops_appended.clone(),
        );
        let stream_resyncs = Family::<SubscriberLabel, Counter>::default();
        registry.register(
            "venued_op_stream_resyncs",
            "Times a subscriber of the committed-op stream fell behind (or met a group too large to carry) and read the missed ops back from the store",
            stream_resyncs.clone(),
        );
        Self {
            commit_seconds,
            group_size,
            ops_appended,
            stream_resyncs,
        }
    }

    /// Metrics that go nowhere, for tests and benchmarks.
    pub fn detached() -> Self {
        Self::new(&mut Registry::default())
    }

    pub(crate) fn observe_group(&self, size: usize, appended: u64, took: Duration) {
        self.commit_seconds.observe(took.as_secs_f64());
        self.group_size.observe(size as f64);
        self.ops_appended.inc_by(appended);
    }

    pub(crate) fn resynced(&self, subscriber: &'static str) {
        self.stream_resyncs
            .get_or_create(&SubscriberLabel { subscriber })
            .inc();
    }
}

/// Labels of an HTTP request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The matched route pattern, e.g. `/api/v1/checkins` (never the raw path, to bound cardinality).
    pub route: String,
    /// The HTTP method.
    pub method: String,
    /// The response status code.
    pub status: u16,
}

/// Labels naming a configured scanner.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScannerLabel {
    /// The scanner id.
    pub scanner: String,
}

/// Labels naming why something was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// A fixed, short reason.
    pub reason: String,
}

/// BLE presence metrics.
#[derive(Clone)]
pub struct PresenceMetrics {
    adverts: Family<ScannerLabel, Counter>,
    rejected: Family<ReasonLabel, Counter>,
    /// Badges tracked by the engine.
    pub tracked: Gauge,
    /// Zone transitions written to the op log.
    pub transitions: Counter,
    /// Low-battery alerts raised from beacon telemetry.
    pub low_battery: Counter,
    /// Discovery restarts by the BlueZ source's silence watchdog.
    pub watchdog_restarts: Counter,
}

impl PresenceMetrics {
    fn new(registry: &mut Registry) -> Self {
        let adverts = Family::<ScannerLabel, Counter>::default();
        let rejected = Family::<ReasonLabel, Counter>::default();
        let tracked = Gauge::default();
        let transitions = Counter::default();
        let low_battery = Counter::default();
        let watchdog_restarts = Counter::default();
        registry.register(
            "venued_ble_watchdog_restarts",
            "BLE discovery restarts after silence",
            watchdog_restarts.clone(),
        );
        registry.register(
            "venued_ble_low_battery_alerts",
            "Low-battery alerts raised from Eddystone-TLM",
            low_battery.clone(),
        );
        registry.register(
            "venued_ble_adverts",
            "BLE adverts received, by scanner",
            adverts.clone(),
        );
        registry.register(
            "venued_ble_rejected",
            "BLE adverts or sightings not used, by reason",
            rejected.clone(),
        );
        registry.register(
            "venued_ble_tracked_beacons",
            "Badges tracked by the presence engine",
            tracked.clone(),
        );
        registry.register(
            "venued_ble_zone_transitions",
            "Zone transitions written to the op log",
            transitions.clone(),
        );
        Self {
            adverts,
            rejected,
            tracked,
            transitions,
            low_battery,
            watchdog_restarts,
        }
    }

    /// Counts an advert from a configured scanner.
    pub fn advert(&self, scanner: &str) {
        self.adverts
            .get_or_create(&ScannerLabel {
                scanner: scanner.to_string(),
            })
            .inc();
    }

    /// Counts a refusal for a fixed reason.
    pub fn rejected(&self, reason: &str) {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }
}

/// A `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WhyLabel {
    /// Why.
    pub reason: &'static str,
}

/// MQTT broker and front metrics.
#[derive(Clone)]
pub struct MqttMetrics {
    /// Client connections open now.
    pub connections: Gauge,
    /// Client connections that reached the broker and have ended since start.
    pub connections_closed: Counter,
    /// Connections refused before reaching the broker, by reason.
    pub refused: Family<WhyLabel, Counter>,
    /// Failed device logins.
    pub auth_failures: Counter,
    /// PUBLISH packets from clients that reached the broker.
    pub publishes_in: Counter,
    /// Messages the daemon published.
    pub publishes_out: Counter,
    /// Publishes and subscriptions refused by the daemon's authorisation, by reason; the
    /// connection is closed and nothing changes.
    pub rejected: Family<WhyLabel, Counter>,
    /// Messages for the daemon that were well-routed but unusable (bad JSON, unknown kiosk or
    /// attendee, ...), by reason.
    pub invalid: Family<WhyLabel, Counter>,
    /// MQTT messages not delivered, by reason (`mqtt::losses::Reason`).
    pub dropped: Family<WhyLabel, Counter>,
    /// Times the broker paused the daemon's link for a full buffer (then woken).
    pub link_unscheduled: Counter,
    /// Clients closed for silence past 1.5 × their keep-alive (stalls of venued taken out).
    pub keep_alive_expired: Counter,
    /// Check-ins applied over MQTT, by `result` (reason label).
    pub checkins: Family<WhyLabel, Counter>,
    /// Messages carried by the MQTT ↔ hub bridge, by direction and kind.
    pub bridged: Family<WhyLabel, Counter>,
}

impl MqttMetrics {
    fn new(registry: &mut Registry) -> Self {
        let m = Self {
            connections: Gauge::default(),
            connections_closed: Counter::default(),
            refused: Family::default(),
            auth_failures: Counter::default(),
            publishes_in: Counter::default(),
            publishes_out: Counter::default(),
            rejected: Family::default(),
            invalid: Family::default(),
            dropped: Family::default(),
            link_unscheduled: Counter::default(),
            keep_alive_expired: Counter::default(),
            checkins: Family::default(),
            bridged: Family::default(),
        };
        registry.register(
            "venued_mqtt_connections",
            "MQTT client connections open now",
            m.connections.clone(),
        );
        registry.register(
            "venued_mqtt_connections_closed",
            "MQTT client connections that reached the broker and ended (counted once the broker has closed its side)",
            m.connections_closed.clone(),
        );
        registry.register(
            "venued_mqtt_refused_connections",
            "MQTT connections refused before the broker, by reason",
            m.refused.clone(),
        );
        registry.register(
            "venued_mqtt_auth_failures",
            "MQTT logins refused for wrong credentials",
            m.auth_failures.clone(),
        );
        registry.register(
            "venued_mqtt_publishes_in",
            "PUBLISH packets from clients passed to the broker",
            m.publishes_in.clone(),
        );
        registry.register(
            "venued_mqtt_publishes_out",
            "Messages published by the daemon",
            m.publishes_out.clone(),
        );
        registry.register("venued_mqtt_rejected", "Publishes, wills and subscriptions refused by authorisation (connection closed), by reason", m.rejected.clone());
        registry.register(
            "venued_mqtt_invalid_messages",
            "Messages to the daemon that changed nothing because they were invalid, by reason",
            m.invalid.clone(),
        );
        registry.register(
            "venued_mqtt_keep_alive_expired",
            "MQTT clients closed for silence past 1.5 x their keep-alive, time venued was not running taken out",
            m.keep_alive_expired.clone(),
        );
        registry.register(
            "venued_mqtt_dropped",
            "MQTT messages not delivered, by reason: subscriber_behind (a subscriber fell further behind a filter's log than the broker keeps), daemon_behind (the same for the daemon's own link), daemon_queue, bridge_behind, presence_queue (the daemon's own queues were full)",
            m.dropped.clone(),
        );
        registry.register(
            "venued_mqtt_link_unscheduled",
            "Times the broker paused the daemon's link for a full buffer",
            m.link_unscheduled.clone(),
        );
        registry.register(
            "venued_mqtt_checkins",
            "Check-ins received over MQTT, by result",
            m.checkins.clone(),
        );
        registry.register(
            "venued_mqtt_bridged",
            "Messages carried by the MQTT-hub bridge (in_message, in_frame, out)",
            m.bridged.clone(),
        );
        m
    }

    /// Metrics that go nowhere, for tests.
    pub fn detached() -> Self {
        Self::new(&mut Registry::default())
    }
}

/// Connection and hub metrics: what the listener and the attendee hub see.
#[derive(Clone, Default)]
pub struct ConnectionMetrics {
    /// Open HTTP/WebSocket connections.
    pub open: Gauge,
    /// Connections closed at once by the listener, by reason (`limit`, `no_file_descriptors`).
    pub refused: Family<ReasonLabel, Counter>,
    /// Open attendee WebSocket connections.
    pub websockets: Gauge,
    /// Ephemeral frames dropped from a full send queue, by frame class.
    pub frames_dropped: Family<ReasonLabel, Counter>,
    /// Connections closed because they could not keep up (`slow_consumer`).
    pub slow_consumers: Counter,
}

impl ConnectionMetrics {
    fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "venued_http_connections_open",
            "Open HTTP and WebSocket connections",
            m.open.clone(),
        );
        registry.register(
            "venued_http_connections_refused",
            "Connections closed on accept, by reason: limit (http.max_connections) or no_file_descriptors (the process's open-file limit)",
            m.refused.clone(),
        );
        registry.register(
            "venued_hub_websockets_open",
            "Open attendee WebSocket connections",
            m.websockets.clone(),
        );
        registry.register(
            "venued_hub_frames_dropped",
            "Ephemeral frames (typing, presence, receipts) dropped from a full send queue, by class",
            m.frames_dropped.clone(),
        );
        registry.register(
            "venued_hub_slow_consumers_closed",
            "WebSocket connections closed with slow_consumer",
            m.slow_consumers.clone(),
        );
        m
    }

    /// Counts one refused connection.
    pub fn refuse(&self, reason: &str) {
        self.refused
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }
}

/// A `printer` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PrinterLabel {
    /// The printer's id.
    pub printer: String,
}

/// Badge printing.
#[derive(Clone)]
pub struct PrintMetrics {
    /// Print jobs that ended, by `reason` (`done`, `failed`).
    pub jobs: Family<WhyLabel, Counter>,
    /// Send attempts that did not reach the printer and will be retried.
    pub retries: Counter,
    /// 1 when the printer answers and can print, 0 when it is offline or needs attention.
    pub printer_up: Family<PrinterLabel, Gauge>,
}

impl PrintMetrics {
    fn new(registry: &mut Registry) -> Self {
        let m = Self {
            jobs: Family::default(),
            retries: Counter::default(),
            printer_up: Family::default(),
        };
        registry.register(
            "venued_print_jobs",
            "Badge print jobs that ended, by reason (done, failed)",
            m.jobs.clone(),
        );
        registry.register(
            "venued_print_retries",
            "Print job sends that did not reach the printer and wait to be retried",
            m.retries.clone(),
        );
        registry.register(
            "venued_printer_up",
            "1 when the printer answers and can print, 0 when offline or needing attention",
            m.printer_up.clone(),
        );
        m
    }
}

/// All metrics of the daemon.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Store metrics.
    pub store: StoreMetrics,
    /// HTTP requests by route, method and status.
    pub http_requests: Family<HttpLabels, Counter>,
    /// Local ops not yet acknowledged by the relay; set just before each scrape.
    pub outbox_backlog: Gauge,
    /// Failed admin or device authentications.
    pub auth_failures: Counter,
    /// BLE presence.
    pub presence: PresenceMetrics,
    /// MQTT.
    pub mqtt: MqttMetrics,
    /// Sync with the relay.
    pub sync: SyncMetrics,
    /// Peer sync on the LAN.
    pub peers: PeerMetrics,
    /// The S3 replica.
    pub replica: ReplicaMetrics,
    /// Connections and the hub.
    pub connections: ConnectionMetrics,
    /// Badge printing.
    pub print: PrintMetrics,
}

/// Replica gauges, set from its status just before each scrape.
#[derive(Clone, Default)]
pub struct ReplicaMetrics {
    lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    lag_txids: Gauge,
    staged_bytes: Gauge,
    upload_errors: Gauge,
    uploaded_txid: Gauge,
}

impl ReplicaMetrics {
    fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "venued_replica_lag_seconds",
            "Age of the oldest staged LTX file not yet in the bucket",
            m.lag_seconds.clone(),
        );
        registry.register(
            "venued_replica_lag_txids",
            "TXIDs staged and not yet in the bucket",
            m.lag_txids.clone(),
        );
        registry.register(
            "venued_replica_staged_bytes",
            "Bytes of LTX files waiting to be uploaded",
            m.staged_bytes.clone(),
        );
        registry.register(
            "venued_replica_upload_errors",
            "Failed uploads since start",
            m.upload_errors.clone(),
        );
        registry.register(
            "venued_replica_uploaded_txid",
            "Highest TXID in the bucket",
            m.uploaded_txid.clone(),
        );
        m
    }

    /// Copies the replica's status into the gauges.
    pub fn observe(&self, s: &crate::replica::ReplicaStatus) {
        self.lag_seconds.set(s.lag_secs);
        self.lag_txids.set(s.lag_txids as i64);
        self.staged_bytes.set(s.staged_bytes as i64);
        self.upload_errors.set(s.upload_errors as i64);
        self.uploaded_txid.set(s.uploaded_txid as i64);
    }
}

/// Labels naming a peer appliance (its URL as configured).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    /// The peer's base URL.
    pub peer: String,
}

/// Peer sync on the LAN: refusals either way, ops served, and each peer's state (set from the
/// peer loops' status just before each scrape).
#[derive(Clone, Default)]
pub struct PeerMetrics {
    /// Requests and answers refused, by reason (`bad_credential`, `foreign_event`, `revoked`,
    /// `replayed`, `foreign_answer`).
    pub refused: Family<ReasonLabel, Counter>,
    /// Ops served to peers.
    pub served: Counter,
    connected: Family<PeerLabel, Gauge>,
    last_contact: Family<PeerLabel, Gauge>,
    lag: Family<PeerLabel, Gauge>,
    applied: Family<PeerLabel, Gauge>,
}

impl PeerMetrics {
    fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "venued_peer_refused",
            "Peer sync requests and answers refused, by reason",
            m.refused.clone(),
        );
        registry.register(
            "venued_peer_served_ops",
            "Ops served to peers",
            m.served.clone(),
        );
        for (name, help, family) in [
            (
                "venued_peer_connected",
                "1 when the last call to the peer succeeded",
                &m.connected,
            ),
            (
                "venued_peer_last_contact_timestamp_seconds",
                "When the peer last answered a pull",
                &m.last_contact,
            ),
            (
                "venued_peer_lag_ops",
                "Ops of the peer's log not pulled yet, as of the last pull",
                &m.lag,
            ),
            (
                "venued_peer_applied_ops",
                "New ops applied from the peer since start",
                &m.applied,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        m
    }

    /// Counts one refusal.
    pub fn refuse(&self, reason: &str) {
        self.refused
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// Copies a peer loop's status into the gauges.
    pub fn observe(&self, s: &sync_agent::peer::client::PeerStatus) {
        let label = PeerLabel {
            peer: s.url.clone(),
        };
        self.connected
            .get_or_create(&label)
            .set(i64::from(s.connected));
        self.last_contact
            .get_or_create(&label)
            .set((s.last_contact_ms.unwrap_or(0) / 1000) as i64);
        self.lag.get_or_create(&label).set(s.lag_ops as i64);
        self.applied.get_or_create(&label).set(s.applied_ops as i64);
    }
}

/// Sync gauges, set from the agent's status just before each scrape.
#[derive(Clone, Default)]
pub struct SyncMetrics {
    /// Age of the oldest unacknowledged local op.
    pub oldest_unsent_age: Gauge,
    connected: Gauge,
    last_push: Gauge,
    last_pull: Gauge,
    pull_lag: Gauge,
    pushed: Gauge,
    applied: Gauge,
    parked: Gauge,
}

impl SyncMetrics {
    fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        for (name, help, gauge) in [
            (
                "venued_sync_oldest_unsent_age_seconds",
                "Age of the oldest local op the relay has not acknowledged",
                &m.oldest_unsent_age,
            ),
            (
                "venued_sync_connected",
                "1 when the last call to the relay succeeded",
                &m.connected,
            ),
            (
                "venued_sync_last_push_timestamp_seconds",
                "When a push last succeeded",
                &m.last_push,
            ),
            (
                "venued_sync_last_pull_timestamp_seconds",
                "When a pull last succeeded",
                &m.last_pull,
            ),
            (
                "venued_sync_pull_lag_ops",
                "Relay ops of this event not yet pulled, as of the last pull",
                &m.pull_lag,
            ),
            (
                "venued_sync_pushed_ops",
                "Local ops the relay acknowledged since start",
                &m.pushed,
            ),
            (
                "venued_sync_applied_ops",
                "Remote ops applied since start",
                &m.applied,
            ),
            (
                "venued_sync_parked_ops",
                "Ops parked since start (refused by the relay, or not applicable here)",
                &m.parked,
            ),
        ] {
            registry.register(name, help, gauge.clone());
        }
        m
    }

    /// Copies the agent's status into the gauges.
    pub fn observe(&self, s: &sync_agent::agent::AgentStatus) {
        self.connected.set(i64::from(s.connected));
        self.last_push
            .set((s.last_push_ok_ms.unwrap_or(0) / 1000) as i64);
        self.last_pull
            .set((s.last_pull_ok_ms.unwrap_or(0) / 1000) as i64);
        self.pull_lag
            .set(s.pull_head.saturating_sub(s.pull_cursor) as i64);
        self.pushed.set(s.pushed_ops as i64);
        self.applied.set(s.applied_ops as i64);
        self.parked.set(s.parked_ops as i64);
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let store = StoreMetrics::new(&mut registry);
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "venued_http_requests",
            "HTTP requests by route, method and status",
            http_requests.clone(),
        );
        let outbox_backlog = Gauge::default();
        registry.register(
            "venued_outbox_backlog_ops",
            "Local ops not yet acknowledged by the relay",
            outbox_backlog.clone(),
        );
        let auth_failures = Counter::default();
        registry.register(
            "venued_auth_failures",
            "Requests refused for missing or wrong credentials",
            auth_failures.clone(),
        );
        let presence = PresenceMetrics::new(&mut registry);
        let mqtt = MqttMetrics::new(&mut registry);
        let sync = SyncMetrics::new(&mut registry);
        let peers = PeerMetrics::new(&mut registry);
        let replica = ReplicaMetrics::new(&mut registry);
        let connections = ConnectionMetrics::new(&mut registry);
        let print = PrintMetrics::new(&mut registry);
        Self {
            registry: Arc::new(registry),
            store,
            http_requests,
            outbox_backlog,
            auth_failures,
            presence,
            mqtt,
            sync,
            peers,
            replica,
            connections,
            print,
        }
    }

    /// The registry in Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
