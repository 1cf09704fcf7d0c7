//! Configuration: the raw TOML shape, environment overrides, and the validated [`Config`].
//!
//! Two stages (Vector, ripgrep): the raw serde structs accept what TOML can say; [`load`] then
//! checks every key and value and reports every problem at once, so an operator fixes a file in
//! one pass instead of one error per restart. Every key has a default, so an empty file (or none)
//! is a working configuration.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Default HTTP listen address: every interface, so phones and kiosks on the venue LAN reach it.
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:8080";
/// Default cap on an ordinary request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Default cap on an attendee import body (JSON or CSV).
pub const DEFAULT_MAX_IMPORT_BYTES: usize = 16 * 1024 * 1024;
/// Default time a request may take before the server answers 408.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 30;
/// Default time SIGTERM waits for in-flight requests before the daemon stops anyway.
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 8;
/// Default number of read-only SQLite connections.
pub const DEFAULT_STORE_READERS: usize = 4;
/// Default cap on writes committed in one transaction (one fsync).
pub const DEFAULT_MAX_GROUP_WRITES: usize = 512;
/// Default depth of the writer's queue; callers wait (backpressure) when it is full.
pub const DEFAULT_WRITE_QUEUE_DEPTH: usize = 8192;
/// Default time an idempotency key is remembered (at least the 24 h DESIGN §3 asks for).
pub const DEFAULT_IDEMPOTENCY_RETENTION_HOURS: u64 = 48;
/// Default data directory when neither config nor systemd's `STATE_DIRECTORY` names one.
pub const DEFAULT_DATA_DIR: &str = "./venued-data";
/// Default event id; one appliance usually serves one event.
pub const DEFAULT_EVENT_ID: &str = "default";
/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "VENUED_";

/// The configuration file as written. Every field is defaulted; unknown keys are reported.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct RawConfig {
    data_dir: String,
    http: HttpConfig,
    store: StoreConfig,
    event: EventConfig,
    log: LogConfig,
    ble: BleConfig,
    mqtt: MqttConfig,
    sync: SyncConfig,
    replica: ReplicaConfig,
}

/// `[replica]`: Litestream-compatible replication of the database to S3. Off by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicaConfig {
    /// Replicate. Default false.
    pub enabled: bool,
    /// Bucket.
    pub bucket: String,
    /// Key prefix inside the bucket (no leading or trailing slash), e.g. `venues/hall-a`.
    pub path: String,
    /// Endpoint of an S3-compatible store; AWS when empty.
    pub endpoint: String,
    /// Region; `us-east-1` when empty and an endpoint is set.
    pub region: String,
    /// Path-style addressing (needed by most S3-compatible stores). Default true.
    pub force_path_style: bool,
    /// Access key; empty = the AWS credential chain (environment, profile, instance role).
    pub access_key_id: String,
    /// Secret for `access_key_id`.
    pub secret_access_key: String,
    /// Milliseconds between syncs (one TXID each when something committed). Default 1000.
    pub sync_interval_ms: u64,
    /// Seconds between level-9 snapshots. Default 86400 (24 h).
    pub snapshot_interval_secs: u64,
    /// Seconds snapshots are kept (the newest always is). Default 86400.
    pub snapshot_retention_secs: u64,
    /// WAL pages that trigger a checkpoint (after staging). Default 1000.
    pub checkpoint_pages: u64,
    /// Staged bytes kept while the bucket is unreachable; past it, increments are dropped and a
    /// full copy follows. Default 256 MiB.
    pub max_staged_bytes: u64,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            bucket: String::new(),
            path: String::new(),
            endpoint: String::new(),
            region: String::new(),
            force_path_style: true,
            access_key_id: String::new(),
            secret_access_key: String::new(),
            sync_interval_ms: 1000,
            snapshot_interval_secs: 86_400,
            snapshot_retention_secs: 86_400,
            checkpoint_pages: 1000,
            max_staged_bytes: 256 * 1024 * 1024,
        }
    }
}

/// `[sync]`: the relay this appliance syncs through. Off until `relay_url` is set: the venue works
/// without it, and sync starts as soon as it is configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncConfig {
    /// The relay's base URL, e.g. `https://relay.example.com`. Default empty (no sync).
    pub relay_url: String,
    /// The appliance token `venue-relay appliance add` printed. Prefer `token_file`, or
    /// `VENUED_SYNC_TOKEN` from a credentials file, over writing it here.
    pub token: String,
    /// A file holding the token (e.g. on the provisioning partition). Read at start.
    pub token_file: String,
    /// Seconds a pull waits at the relay for new ops. Default 25.
    pub pull_wait_secs: u64,
    /// Seconds between reports to the relay when there is nothing to push. Default 30.
    pub heartbeat_secs: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            relay_url: String::new(),
            token: String::new(),
            token_file: String::new(),
            pull_wait_secs: 25,
            heartbeat_secs: 30,
        }
    }
}

/// `[http]`: the HTTP API listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Address and port to listen on. Default `0.0.0.0:8080`.
    pub listen: String,
    /// Largest accepted request body in bytes, except imports. Default 64 KiB.
    pub max_body_bytes: usize,
    /// Largest accepted attendee import body in bytes. Default 16 MiB.
    pub max_import_bytes: usize,
    /// Seconds a request may take before it is answered with 408. Default 30.
    pub request_timeout_secs: u64,
    /// Seconds SIGTERM waits for in-flight requests to finish. Default 8 (systemd's stop timeout
    /// is longer, so the daemon always exits on its own).
    pub shutdown_timeout_secs: u64,
    /// Most open HTTP/WebSocket connections; past it new ones are closed at once (logged and
    /// counted). Default 0: the open-file limit less 512 descriptors for everything else.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_HTTP_LISTEN.into(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_import_bytes: DEFAULT_MAX_IMPORT_BYTES,
            request_timeout_secs: DEFAULT_REQUEST_TIMEOUT_SECS,
            shutdown_timeout_secs: DEFAULT_SHUTDOWN_TIMEOUT_SECS,
            max_connections: 0,
        }
    }
}

/// `[store]`: the SQLite store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreConfig {
    /// Read-only connections for queries. Default 4.
    pub readers: usize,
    /// Most writes committed in one transaction. Default 512.
    pub max_group_writes: usize,
    /// Writes that may wait for the writer before callers are held back. Default 8192.
    pub write_queue_depth: usize,
    /// Hours an idempotency key is remembered. Default 48 (at least 24).
    pub idempotency_retention_hours: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            readers: DEFAULT_STORE_READERS,
            max_group_writes: DEFAULT_MAX_GROUP_WRITES,
            write_queue_depth: DEFAULT_WRITE_QUEUE_DEPTH,
            idempotency_retention_hours: DEFAULT_IDEMPOTENCY_RETENTION_HOURS,
        }
    }
}

/// `[event]`: the event this appliance serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EventConfig {
    /// Event id: the scope of every op and the unit of isolation on the relay. Default `default`.
    pub id: String,
    /// Human-readable name. Default empty.
    pub name: String,
}

impl Default for EventConfig {
    fn default() -> Self {
        Self {
            id: DEFAULT_EVENT_ID.into(),
            name: String::new(),
        }
    }
}

/// `[ble]`: BLE scanning and zone presence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BleConfig {
    /// Where adverts come from: `none`, `bluez` (the local adapter), `simulated` (badges walking
    /// between the demo zones), `replay` (a JSON-lines recording, `replay_file`), or `gateways`
    /// (only BLE gateways over MQTT). Gateways listed in `scanners` are heard with any source. Default `none`; `--demo` turns on
    /// `simulated`.
    pub source: BleSource,
    /// The recording `replay` plays back.
    pub replay_file: String,
    /// The local adapter `bluez` scans with; it is also that scanner's id in `scanners`.
    /// Default `hci0`.
    pub adapter: String,
    /// Seconds without any advert before `bluez` restarts discovery (then the session). Default 60.
    pub silence_restart_secs: u64,
    /// Scanners and the zone each covers. `--demo` adds one per demo zone when this is empty.
    pub scanners: Vec<ScannerEntry>,
    /// Readings needed before a badge counts as present. Default 2.
    pub min_readings: usize,
    /// How far (dB) another zone must lead before a badge moves. Default 6.
    pub switch_margin_db: f64,
    /// How long that lead must hold, seconds. Default 5.
    pub switch_dwell_secs: u64,
    /// Seconds without a sighting before a badge has left. Default 30.
    pub away_timeout_secs: u64,
    /// Hours zone transitions are kept before they are purged. Default 24.
    pub transition_retention_hours: u64,
    /// A beacon reporting (Eddystone-TLM) a battery below this many millivolts raises a
    /// low-battery alert. Default 2500 (a CR2032 near the end of its life).
    pub low_battery_mv: u16,
    /// Record every received advert to this file (JSON lines, the replay format), for field
    /// diagnosis and trace tests. Default empty: off.
    pub record_file: String,
    /// Stop recording when the file reaches this many MiB. Default 1024.
    pub record_max_mib: u64,
}

/// One scanner of `[[ble.scanners]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScannerEntry {
    /// The scanner id: the local adapter (`hci0`) or a gateway's id.
    pub id: String,
    /// The zone it covers (a zone id of the registry).
    pub zone: String,
    /// Calibration added to its readings, dB. Default 0.
    #[serde(default)]
    pub rssi_offset_db: f64,
}

/// Where adverts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BleSource {
    /// No BLE.
    None,
    /// The local radio through BlueZ (btleplug over D-Bus).
    Bluez,
    /// Simulated badges walking between zones (demo mode).
    Simulated,
    /// A JSON-lines recording.
    Replay,
    /// Only BLE gateways forwarding adverts over MQTT (each a scanner of `[[ble.scanners]]`).
    Gateways,
}

/// Default low-battery threshold, millivolts.
pub const DEFAULT_LOW_BATTERY_MV: u16 = 2500;

/// Default zone-transition retention, hours.
pub const DEFAULT_TRANSITION_RETENTION_HOURS: u64 = 24;

impl Default for BleConfig {
    fn default() -> Self {
        Self {
            source: BleSource::None,
            replay_file: String::new(),
            adapter: "hci0".into(),
            silence_restart_secs: ble_scanner::bluez::DEFAULT_SILENCE_RESTART_SECS,
            scanners: Vec::new(),
            min_readings: ble_scanner::presence::DEFAULT_MIN_READINGS,
            switch_margin_db: ble_scanner::presence::DEFAULT_SWITCH_MARGIN_DB,
            switch_dwell_secs: ble_scanner::presence::DEFAULT_SWITCH_DWELL_MS / 1000,
            away_timeout_secs: ble_scanner::presence::DEFAULT_AWAY_TIMEOUT_MS / 1000,
            transition_retention_hours: DEFAULT_TRANSITION_RETENTION_HOURS,
            low_battery_mv: DEFAULT_LOW_BATTERY_MV,
            record_file: String::new(),
            record_max_mib: 1024,
        }
    }
}

/// Default MQTT 3.1.1 listener.
pub const DEFAULT_MQTT_LISTEN: &str = "0.0.0.0:1883";
/// Default MQTT-over-WebSocket (3.1.1) listener, for browser signage.
pub const DEFAULT_MQTT_WS_LISTEN: &str = "0.0.0.0:8083";
/// Default cap on one MQTT packet: room for a signage content manifest.
pub const DEFAULT_MQTT_MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// `[mqtt]`: the embedded broker for kiosks, signage and BLE gateways.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MqttConfig {
    /// Run the broker. Default true.
    pub enabled: bool,
    /// MQTT 3.1.1 listener. Default `0.0.0.0:1883`.
    pub listen: String,
    /// MQTT 5 listener (its own port: the broker speaks one version per port). Default empty: off.
    pub listen_v5: String,
    /// MQTT 3.1.1 over WebSocket, for browser-based signage. Default `0.0.0.0:8083`; empty: off.
    pub listen_ws: String,
    /// MQTT 3.1.1 over TLS. Needs `tls_cert` and `tls_key`. Default empty: off.
    pub listen_tls: String,
    /// PEM certificate chain for `listen_tls`.
    pub tls_cert: String,
    /// PEM private key (PKCS#8, RSA or SEC1) for `listen_tls`.
    pub tls_key: String,
    /// First topic level; the tree is `{topic_root}/{event id}/...`. Default `venue`.
    pub topic_root: String,
    /// Most simultaneous client connections. Default 1000.
    pub max_connections: usize,
    /// Largest accepted packet, bytes. Default 256 KiB.
    pub max_payload_bytes: usize,
    /// Bytes per in-memory log segment, per subscription filter. Default 1 MiB.
    pub segment_bytes: usize,
    /// Segments kept per subscription filter. Default 3 (so at most ~4 MiB per filter).
    pub segment_count: usize,
    /// Milliseconds a new connection has to send CONNECT. Default 10000.
    pub connect_timeout_ms: u64,
    /// The MQTT ↔ hub bridge, `[[mqtt.bridge]]`. Giving any entry replaces the defaults:
    /// `alert/#` → `announcements` (messages) and `announcements` → `hub/announcements`.
    /// (Zone channels get occupancy from presence directly, MQTT or not.)
    pub bridge: Vec<BridgeEntry>,
}

/// One mapping of `[[mqtt.bridge]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeEntry {
    /// A topic filter under `{topic_root}/{event}/` (`+` and `#` allowed for `in`), or for
    /// `out` the exact topic path, which must start with `hub/`.
    pub filter: String,
    /// The hub channel. For `in`, `{1}`, `{2}`, ... stand for the levels the filter's `+`
    /// wildcards matched, e.g. `presence/+` → `zone:{1}`.
    pub channel: String,
    /// `in` (MQTT → hub) or `out` (hub → MQTT).
    pub direction: BridgeDirection,
    /// For `in`: `message` (stored, acked, resumable; needs an envelope `id`, which
    /// deduplicates) or `frame` (ephemeral, `mqtt.message`). Default `message`.
    #[serde(default, rename = "as")]
    pub deliver: BridgeDelivery,
}

/// Which way a bridge entry carries messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BridgeDirection {
    /// MQTT → hub.
    In,
    /// Hub → MQTT.
    Out,
}

/// How an `in` entry delivers into the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BridgeDelivery {
    /// A durable message.
    #[default]
    Message,
    /// An ephemeral frame.
    Frame,
}

fn default_bridge() -> Vec<BridgeEntry> {
    let entry = |filter: &str, channel: &str, direction, deliver| BridgeEntry {
        filter: filter.into(),
        channel: channel.into(),
        direction,
        deliver,
    };
    vec![
        entry(
            "alert/#",
            "announcements",
            BridgeDirection::In,
            BridgeDelivery::Message,
        ),
        entry(
            "hub/announcements",
            "announcements",
            BridgeDirection::Out,
            BridgeDelivery::Message,
        ),
    ]
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: DEFAULT_MQTT_LISTEN.into(),
            listen_v5: String::new(),
            listen_ws: DEFAULT_MQTT_WS_LISTEN.into(),
            listen_tls: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            topic_root: "venue".into(),
            max_connections: 1000,
            max_payload_bytes: DEFAULT_MQTT_MAX_PAYLOAD_BYTES,
            segment_bytes: 1024 * 1024,
            segment_count: 3,
            connect_timeout_ms: 10_000,
            bridge: default_bridge(),
        }
    }
}

/// The parsed MQTT listener addresses (`None`: that listener is off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MqttListeners {
    /// MQTT 3.1.1 over TCP.
    pub tcp: Option<SocketAddr>,
    /// MQTT 5 over TCP.
    pub v5: Option<SocketAddr>,
    /// MQTT 3.1.1 over WebSocket.
    pub ws: Option<SocketAddr>,
    /// MQTT 3.1.1 over TLS.
    pub tls: Option<SocketAddr>,
}

/// `[log]`: logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// `RUST_LOG`-style filter; the `RUST_LOG` environment variable wins. Default `info`.
    pub filter: String,
    /// `auto` (journald when `JOURNAL_STREAM` is set, else stderr), `journal`, or `text`.
    pub output: LogOutput,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info,rumqttd=warn".into(),
            output: LogOutput::Auto,
        }
    }
}

/// Where log records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogOutput {
    /// journald when started by systemd with its stderr connected to the journal, else stderr.
    Auto,
    /// Always journald (native protocol, structured fields).
    Journal,
    /// Always human-readable text on stderr.
    Text,
}

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where the database, the admin token and other state live.
    pub data_dir: PathBuf,
    /// HTTP listener settings; `listen` is already parsed.
    pub http: HttpConfig,
    /// Parsed `http.listen`.
    pub http_listen: SocketAddr,
    /// Store settings.
    pub store: StoreConfig,
    /// The event served.
    pub event: EventConfig,
    /// Logging settings.
    pub log: LogConfig,
    /// BLE presence settings.
    pub ble: BleConfig,
    /// MQTT broker settings.
    pub mqtt: MqttConfig,
    /// Parsed MQTT listener addresses.
    pub mqtt_listeners: MqttListeners,
    /// Sync settings.
    pub sync: SyncConfig,
    /// Replica settings.
    pub replica: ReplicaConfig,
}

impl Default for Config {
    fn default() -> Self {
        load_str("", "<defaults>", &BTreeMap::new(), None)
            .unwrap_or_else(|errors| unreachable!("the embedded defaults are invalid: {errors}"))
    }
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigProblem {
    /// The file is not valid TOML.
    Syntax(String),
    /// A key that no version of this daemon knows.
    UnknownKey {
        /// Dotted key path, e.g. `http.lisen`.
        key: String,
        /// Where it came from: the file or an environment variable.
        source: String,
        /// Keys that are allowed at that level.
        known: Vec<String>,
    },
    /// A key whose value has the wrong type or is out of range.
    Invalid {
        /// Dotted key path.
        key: String,
        /// Why the value is wrong and what would be right.
        reason: String,
    },
    /// The file could not be read.
    Unreadable(String),
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax(msg) => write!(f, "not valid TOML: {msg}"),
            Self::UnknownKey { key, source, known } => {
                write!(
                    f,
                    "unknown key `{key}` ({source}); known keys here: {}",
                    known.join(", ")
                )
            }
            Self::Invalid { key, reason } => write!(f, "`{key}`: {reason}"),
            Self::Unreadable(msg) => write!(f, "{msg}"),
        }
    }
}

/// Every problem found in one configuration, in file order where possible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    /// The file (or `<defaults>`) the problems are in.
    pub origin: String,
    /// The problems; never empty.
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} problem(s) in configuration {}:",
            self.problems.len(),
            self.origin
        )?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

/// Where the configuration file is looked for when none is named: systemd's
/// `CONFIGURATION_DIRECTORY` (from `ConfigurationDirectory=venued`), else `/etc/venued`.
pub fn default_config_path() -> Option<PathBuf> {
    let dir = std::env::var_os("CONFIGURATION_DIRECTORY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/venued"));
    let path = dir.join("venued.toml");
    path.is_file().then_some(path)
}

/// Loads the configuration from `path` (or embedded defaults when `None`), applies `VENUED_*`
/// overrides from `env`, then `data_dir_override` (the `--data-dir` flag).
pub fn load(
    path: Option<&Path>,
    env: &BTreeMap<String, String>,
    data_dir_override: Option<&Path>,
) -> Result<Config, ConfigErrors> {
    let (text, origin) = match path {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(text) => (text, p.display().to_string()),
            Err(e) => {
                return Err(ConfigErrors {
                    origin: p.display().to_string(),
                    problems: vec![ConfigProblem::Unreadable(format!(
                        "cannot read {}: {e}; check the path given to --config",
                        p.display()
                    ))],
                });
            }
        },
        None => (String::new(), "<defaults>".to_string()),
    };
    load_str(&text, &origin, env, data_dir_override)
}

/// As [`load`], from TOML text.
pub fn load_str(
    text: &str,
    origin: &str,
    env: &BTreeMap<String, String>,
    data_dir_override: Option<&Path>,
) -> Result<Config, ConfigErrors> {
    let mut problems = Vec::new();
    let mut table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            return Err(ConfigErrors {
                origin: origin.into(),
                problems: vec![ConfigProblem::Syntax(e.to_string())],
            });
        }
    };
    let defaults = defaults_table();
    apply_env(&mut table, &defaults, env, &mut problems);

    let mut raw = RawConfig::default();
    for (key, value) in &table {
        match key.as_str() {
            "data_dir" => raw.data_dir = field(key, value, &mut problems).unwrap_or_default(),
            "http" => raw.http = section(key, value, origin, &defaults, &mut problems),
            "store" => raw.store = section(key, value, origin, &defaults, &mut problems),
            "event" => raw.event = section(key, value, origin, &defaults, &mut problems),
            "log" => raw.log = section(key, value, origin, &defaults, &mut problems),
            "ble" => raw.ble = section(key, value, origin, &defaults, &mut problems),
            "mqtt" => raw.mqtt = section(key, value, origin, &defaults, &mut problems),
            "sync" => raw.sync = section(key, value, origin, &defaults, &mut problems),
            "replica" => raw.replica = section(key, value, origin, &defaults, &mut problems),
            _ => problems.push(ConfigProblem::UnknownKey {
                key: key.clone(),
                source: origin.into(),
                known: defaults.keys().cloned().collect(),
            }),
        }
    }
    let config = validate(raw, data_dir_override, &mut problems);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors {
            origin: origin.into(),
            problems,
        })
    }
}

/// The defaults as a TOML table: the list of known keys, and the type each override must parse as.
fn defaults_table() -> toml::Table {
    let raw = RawConfig {
        data_dir: DEFAULT_DATA_DIR.into(),
        ..RawConfig::default()
    };
    toml::Table::try_from(raw).unwrap_or_default()
}

fn field<T: DeserializeOwned>(
    key: &str,
    value: &toml::Value,
    problems: &mut Vec<ConfigProblem>,
) -> Option<T> {
    match value.clone().try_into() {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(ConfigProblem::Invalid {
                key: key.into(),
                reason: first_line(&e.to_string()),
            });
            None
        }
    }
}

/// Deserialises one section key by key, so every unknown key and every bad value is reported,
/// not only the first; falls back to the defaults for a section with problems.
fn section<T: DeserializeOwned + Default>(
    name: &str,
    value: &toml::Value,
    origin: &str,
    defaults: &toml::Table,
    problems: &mut Vec<ConfigProblem>,
) -> T {
    let Some(table) = value.as_table() else {
        problems.push(ConfigProblem::Invalid {
            key: name.into(),
            reason: format!("expected a table `[{name}]`, found a {}", value.type_str()),
        });
        return T::default();
    };
    let known: Vec<String> = defaults
        .get(name)
        .and_then(|v| v.as_table())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default();
    // Keys with problems are left out, so the good ones still reach validation.
    let mut good = toml::Table::new();
    for (key, v) in table {
        if !known.contains(key) {
            problems.push(ConfigProblem::UnknownKey {
                key: format!("{name}.{key}"),
                source: origin.into(),
                known: known.clone(),
            });
            continue;
        }
        let single: toml::Table = [(key.clone(), v.clone())].into_iter().collect();
        match toml::Value::Table(single).try_into::<T>() {
            Ok(_) => {
                good.insert(key.clone(), v.clone());
            }
            Err(e) => problems.push(ConfigProblem::Invalid {
                key: format!("{name}.{key}"),
                reason: first_line(&e.to_string()),
            }),
        }
    }
    toml::Value::Table(good).try_into().unwrap_or_default()
}

/// serde's messages append "in `key`" on a second line; the key is already named.
fn first_line(message: &str) -> String {
    message
        .trim()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Applies `VENUED_<SECTION>_<KEY>` (or `VENUED_<KEY>` for top-level keys) to the table. The
/// value is parsed as the type of the key's default, so `VENUED_HTTP_MAX_BODY_BYTES=1024` is a
/// number and `VENUED_EVENT_ID=2024` stays a string.
fn apply_env(
    table: &mut toml::Table,
    defaults: &toml::Table,
    env: &BTreeMap<String, String>,
    problems: &mut Vec<ConfigProblem>,
) {
    for (var, raw_value) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let target = defaults
            .iter()
            .filter_map(|(section, v)| {
                let sub = v.as_table()?;
                let key = rest.strip_prefix(&format!("{section}_"))?;
                sub.get(key)
                    .map(|d| (Some(section.clone()), key.to_string(), d.clone()))
            })
            .next()
            .or_else(|| {
                defaults
                    .get(&rest)
                    .filter(|d| !d.is_table())
                    .map(|d| (None, rest.clone(), d.clone()))
            });
        let Some((section, key, default)) = target else {
            problems.push(ConfigProblem::UnknownKey {
                key: var.clone(),
                source: "environment".into(),
                known: env_names(defaults),
            });
            continue;
        };
        let dotted = match &section {
            Some(s) => format!("{s}.{key}"),
            None => key.clone(),
        };
        let value = match parse_like(&default, raw_value) {
            Ok(v) => v,
            Err(reason) => {
                problems.push(ConfigProblem::Invalid {
                    key: format!("{dotted} (from {var})"),
                    reason,
                });
                continue;
            }
        };
        let slot = match section {
            Some(s) => {
                let entry = table
                    .entry(s)
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                match entry.as_table_mut() {
                    Some(t) => t,
                    // The file's own type error for this section is reported by `section`.
                    None => continue,
                }
            }
            None => &mut *table,
        };
        slot.insert(key, value);
    }
}

fn parse_like(default: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    match default {
        toml::Value::Integer(_) => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("expected a whole number, found `{raw}`")),
        toml::Value::Boolean(_) => raw
            .trim()
            .parse::<bool>()
            .map(toml::Value::Boolean)
            .map_err(|_| format!("expected `true` or `false`, found `{raw}`")),
        toml::Value::Float(_) => raw
            .trim()
            .parse::<f64>()
            .map(toml::Value::Float)
            .map_err(|_| format!("expected a number, found `{raw}`")),
        _ => Ok(toml::Value::String(raw.to_string())),
    }
}

fn env_names(defaults: &toml::Table) -> Vec<String> {
    let mut names = Vec::new();
    for (k, v) in defaults {
        match v.as_table() {
            Some(sub) => names.extend(
                sub.keys()
                    .map(|sk| format!("{ENV_PREFIX}{}_{}", k, sk).to_ascii_uppercase()),
            ),
            None => names.push(format!("{ENV_PREFIX}{k}").to_ascii_uppercase()),
        }
    }
    names
}

fn validate(
    raw: RawConfig,
    data_dir_override: Option<&Path>,
    problems: &mut Vec<ConfigProblem>,
) -> Config {
    let http_listen = raw.http.listen.parse::<SocketAddr>().unwrap_or_else(|_| {
        invalid(
            problems,
            "http.listen",
            format!(
                "`{}` is not an address and port; write e.g. \"0.0.0.0:8080\" or \"[::]:8080\"",
                raw.http.listen
            ),
        );
        SocketAddr::from(([0, 0, 0, 0], 8080))
    });
    check_range(
        problems,
        "http.max_body_bytes",
        raw.http.max_body_bytes,
        1024,
        64 * 1024 * 1024,
    );
    check_range(
        problems,
        "http.max_import_bytes",
        raw.http.max_import_bytes,
        1024,
        1024 * 1024 * 1024,
    );
    check_range(
        problems,
        "http.request_timeout_secs",
        raw.http.request_timeout_secs,
        1,
        3600,
    );
    check_range(
        problems,
        "http.shutdown_timeout_secs",
        raw.http.shutdown_timeout_secs,
        1,
        60,
    );
    check_range(problems, "store.readers", raw.store.readers, 1, 64);
    check_range(
        problems,
        "store.max_group_writes",
        raw.store.max_group_writes,
        1,
        65_536,
    );
    check_range(
        problems,
        "store.write_queue_depth",
        raw.store.write_queue_depth,
        1,
        1_000_000,
    );
    if raw.store.idempotency_retention_hours < 24 {
        invalid(
            problems,
            "store.idempotency_retention_hours",
            format!(
                "{} is below 24; retried requests must be recognised for at least a day",
                raw.store.idempotency_retention_hours
            ),
        );
    }
    if !is_valid_id(&raw.event.id) {
        invalid(
            problems,
            "event.id",
            format!(
                "`{}` must be 1-64 characters of a-z, A-Z, 0-9, `-`, `_` or `.`",
                raw.event.id
            ),
        );
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&raw.log.filter) {
        invalid(
            problems,
            "log.filter",
            format!("`{}` is not a valid filter: {e}", raw.log.filter),
        );
    }
    if raw.ble.source == BleSource::Replay && raw.ble.replay_file.is_empty() {
        invalid(
            problems,
            "ble.replay_file",
            "`ble.source = \"replay\"` needs the recording's path in `ble.replay_file`".into(),
        );
    }
    if raw.ble.source == BleSource::Bluez
        && !raw.ble.scanners.iter().any(|s| s.id == raw.ble.adapter)
    {
        invalid(
            problems,
            "ble.scanners",
            format!(
                "`ble.source = \"bluez\"` needs a [[ble.scanners]] entry with id = \"{}\" saying which zone the adapter covers",
                raw.ble.adapter
            ),
        );
    }
    if raw.ble.source == BleSource::Gateways && raw.ble.scanners.is_empty() {
        invalid(
            problems,
            "ble.scanners",
            "`ble.source = \"gateways\"` needs a [[ble.scanners]] entry per gateway (id = its device id, zone = the zone it covers)".into(),
        );
    }
    check_range(
        problems,
        "ble.silence_restart_secs",
        raw.ble.silence_restart_secs,
        5,
        3600,
    );
    check_range(
        problems,
        "ble.record_max_mib",
        raw.ble.record_max_mib,
        1,
        1024 * 1024,
    );
    let mut seen_scanners = std::collections::HashSet::new();
    for (i, scanner) in raw.ble.scanners.iter().enumerate() {
        if !is_valid_id(&scanner.id) || !seen_scanners.insert(scanner.id.as_str()) {
            invalid(
                problems,
                &format!("ble.scanners[{i}].id"),
                format!(
                    "`{}` must be a unique id of a-z, A-Z, 0-9, `-`, `_` or `.`",
                    scanner.id
                ),
            );
        }
        if !is_valid_id(&scanner.zone) {
            invalid(
                problems,
                &format!("ble.scanners[{i}].zone"),
                format!("`{}` is not a zone id", scanner.zone),
            );
        }
        check_range(
            problems,
            &format!("ble.scanners[{i}].rssi_offset_db"),
            scanner.rssi_offset_db,
            -40.0,
            40.0,
        );
    }
    check_range(problems, "ble.min_readings", raw.ble.min_readings, 1, 16);
    check_range(
        problems,
        "ble.switch_margin_db",
        raw.ble.switch_margin_db,
        0.0,
        40.0,
    );
    check_range(
        problems,
        "ble.away_timeout_secs",
        raw.ble.away_timeout_secs,
        1,
        3600,
    );
    if raw.ble.switch_dwell_secs > 3600 {
        invalid(
            problems,
            "ble.switch_dwell_secs",
            format!("{} is above 3600", raw.ble.switch_dwell_secs),
        );
    }
    check_range(
        problems,
        "ble.transition_retention_hours",
        raw.ble.transition_retention_hours,
        1,
        24 * 365,
    );
    let mqtt_listeners = validate_mqtt(&raw.mqtt, problems);
    validate_sync(&raw.sync, problems);
    if raw.replica.enabled {
        if raw.replica.bucket.is_empty() || raw.replica.path.trim_matches('/').is_empty() {
            invalid(
                problems,
                "replica.bucket",
                "replication needs `replica.bucket` and `replica.path` (e.g. \"venues/hall-a\")"
                    .into(),
            );
        }
        check_range(
            problems,
            "replica.sync_interval_ms",
            raw.replica.sync_interval_ms,
            100,
            3_600_000,
        );
        check_range(
            problems,
            "replica.snapshot_interval_secs",
            raw.replica.snapshot_interval_secs,
            1,
            30 * 86_400,
        );
        check_range(
            problems,
            "replica.checkpoint_pages",
            raw.replica.checkpoint_pages,
            100,
            1_000_000,
        );
        check_range(
            problems,
            "replica.max_staged_bytes",
            raw.replica.max_staged_bytes,
            1024 * 1024,
            1 << 40,
        );
    }
    let data_dir = match data_dir_override {
        Some(p) => p.to_path_buf(),
        None if !raw.data_dir.is_empty() => PathBuf::from(&raw.data_dir),
        None => std::env::var_os("STATE_DIRECTORY")
            // systemd may pass several colon-separated directories; the first is ours.
            .and_then(|v| {
                v.to_str()
                    .and_then(|s| s.split(':').next())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
    };
    Config {
        data_dir,
        http: raw.http,
        http_listen,
        store: raw.store,
        event: raw.event,
        log: raw.log,
        ble: raw.ble,
        mqtt: raw.mqtt,
        mqtt_listeners,
        sync: raw.sync,
        replica: raw.replica,
    }
}

fn validate_sync(sync: &SyncConfig, problems: &mut Vec<ConfigProblem>) {
    if sync.relay_url.is_empty() {
        return;
    }
    if !(sync.relay_url.starts_with("https://") || sync.relay_url.starts_with("http://")) {
        invalid(
            problems,
            "sync.relay_url",
            format!(
                "`{}` is not an http(s) URL; write e.g. \"https://relay.example.com\", or \"\" to turn sync off",
                sync.relay_url
            ),
        );
    }
    if sync.token.is_empty() && sync.token_file.is_empty() {
        invalid(
            problems,
            "sync.token",
            "sync needs the appliance's token: set `sync.token_file` (or `VENUED_SYNC_TOKEN`) to what `venue-relay appliance add` printed".into(),
        );
    }
    check_range(problems, "sync.pull_wait_secs", sync.pull_wait_secs, 0, 30);
    check_range(
        problems,
        "sync.heartbeat_secs",
        sync.heartbeat_secs,
        1,
        3600,
    );
}

/// Reports `key` as invalid.
fn validate_mqtt(mqtt: &MqttConfig, problems: &mut Vec<ConfigProblem>) -> MqttListeners {
    let mut addr = |key: &str, value: &str| -> Option<SocketAddr> {
        if value.is_empty() || !mqtt.enabled {
            return None;
        }
        value.parse::<SocketAddr>().map_or_else(
            |_| {
                invalid(
                    problems,
                    key,
                    format!("`{value}` is not an address and port; write e.g. \"0.0.0.0:1883\", or \"\" to turn it off"),
                );
                None
            },
            Some,
        )
    };
    let listeners = MqttListeners {
        tcp: addr("mqtt.listen", &mqtt.listen),
        v5: addr("mqtt.listen_v5", &mqtt.listen_v5),
        ws: addr("mqtt.listen_ws", &mqtt.listen_ws),
        tls: addr("mqtt.listen_tls", &mqtt.listen_tls),
    };
    if listeners.tls.is_some() && (mqtt.tls_cert.is_empty() || mqtt.tls_key.is_empty()) {
        invalid(
            problems,
            "mqtt.listen_tls",
            "a TLS listener needs `mqtt.tls_cert` and `mqtt.tls_key` (PEM files)".into(),
        );
    }
    let root_ok = !mqtt.topic_root.is_empty()
        && mqtt.topic_root.len() <= 64
        && mqtt
            .topic_root
            .split('/')
            .all(|level| is_valid_id(level) && !level.starts_with('$'));
    if !root_ok {
        invalid(
            problems,
            "mqtt.topic_root",
            format!(
                "`{}` must be one or more `/`-separated levels of a-z, A-Z, 0-9, `-`, `_` or `.` (no wildcards, no leading `$`)",
                mqtt.topic_root
            ),
        );
    }
    check_range(
        problems,
        "mqtt.max_connections",
        mqtt.max_connections,
        1,
        100_000,
    );
    check_range(
        problems,
        "mqtt.max_payload_bytes",
        mqtt.max_payload_bytes,
        1024,
        16 * 1024 * 1024,
    );
    // The broker panics on segments below 1 KiB or a count of zero: refuse them here.
    check_range(
        problems,
        "mqtt.segment_bytes",
        mqtt.segment_bytes,
        64 * 1024,
        256 * 1024 * 1024,
    );
    check_range(problems, "mqtt.segment_count", mqtt.segment_count, 1, 64);
    for (i, entry) in mqtt.bridge.iter().enumerate() {
        if let Err(reason) = check_bridge(entry) {
            invalid(problems, &format!("mqtt.bridge[{i}]"), reason);
        }
    }
    // The broker keeps this as a u16 of milliseconds.
    check_range(
        problems,
        "mqtt.connect_timeout_ms",
        mqtt.connect_timeout_ms,
        100,
        u64::from(u16::MAX),
    );
    listeners
}

fn check_bridge(entry: &BridgeEntry) -> Result<(), String> {
    let levels: Vec<&str> = entry.filter.split('/').collect();
    let level_ok = |l: &str| !l.is_empty() && !l.starts_with('$') && l.len() <= 64;
    if entry.filter.is_empty() || !levels.iter().all(|l| level_ok(l)) {
        return Err(format!(
            "filter `{}` is not a topic path under the event's tree",
            entry.filter
        ));
    }
    let wild = levels.iter().filter(|l| matches!(**l, "+" | "#")).count();
    if levels.iter().any(|l| l.contains(['+', '#']) && l.len() > 1)
        || levels
            .iter()
            .position(|l| *l == "#")
            .is_some_and(|p| p + 1 != levels.len())
    {
        return Err(format!(
            "filter `{}`: `+` and `#` must be whole levels, `#` the last",
            entry.filter
        ));
    }
    match entry.direction {
        BridgeDirection::Out if wild > 0 || !entry.filter.starts_with("hub/") => Err(format!(
            "an `out` entry publishes on one topic, which must start with `hub/` (no wildcards); `{}` does not",
            entry.filter
        )),
        BridgeDirection::Out if entry.channel.contains('{') => {
            Err("an `out` entry names one channel, without `{n}`".into())
        }
        _ => Ok(()),
    }
}

fn invalid(problems: &mut Vec<ConfigProblem>, key: &str, reason: String) {
    problems.push(ConfigProblem::Invalid {
        key: key.into(),
        reason,
    });
}

/// Reports `key` unless `lo <= value <= hi`.
fn check_range<T: PartialOrd + Copy + fmt::Display>(
    problems: &mut Vec<ConfigProblem>,
    key: &str,
    value: T,
    lo: T,
    hi: T,
) {
    if !(lo..=hi).contains(&value) {
        invalid(problems, key, format!("{value} is outside {lo}..={hi}"));
    }
}

/// Ids of events, zones, devices and the like: short, printable, safe in MQTT topics and URLs.
pub fn is_valid_id(id: &str) -> bool {
    // The relay checks event ids by the same rule, so both sides agree on what is valid.
    sync_agent::wire::is_id(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn problems(text: &str, vars: &[(&str, &str)]) -> Vec<String> {
        match load_str(text, "test.toml", &env(vars), None) {
            Ok(_) => vec![],
            Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn empty_file_gives_the_embedded_defaults() {
        let c = load_str("", "x", &BTreeMap::new(), Some(Path::new("/tmp/d"))).expect("defaults");
        assert_eq!(c.http_listen, "0.0.0.0:8080".parse().expect("addr"));
        assert_eq!(c.store.readers, DEFAULT_STORE_READERS);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/d"));
    }

    #[test]
    fn every_problem_is_reported_at_once_naming_the_key() {
        let text = r#"
            colour = "blue"
            [http]
            lisen = "0.0.0.0:1"
            max_body_bytes = "big"
            listen = "nonsense"
            [store]
            readers = 0
        "#;
        let p = problems(text, &[]);
        assert_eq!(p.len(), 5, "{p:#?}");
        assert!(p[0].contains("unknown key `colour`"), "{p:#?}");
        assert!(
            p.iter()
                .any(|s| s.contains("unknown key `http.lisen`") && s.contains("listen"))
        );
        assert!(p.iter().any(|s| s.starts_with("`http.max_body_bytes`")));
        assert!(p.iter().any(|s| s.starts_with("`http.listen`")));
        assert!(p.iter().any(|s| s.starts_with("`store.readers`")));
    }

    #[test]
    fn syntax_errors_say_where() {
        let p = problems("[http\nlisten=1", &[]);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("line 1"), "{p:?}");
    }

    #[test]
    fn environment_overrides_are_typed_by_the_default() {
        let c = load_str(
            "[http]\nlisten = \"0.0.0.0:1\"",
            "x",
            &env(&[
                ("VENUED_HTTP_LISTEN", "127.0.0.1:9000"),
                ("VENUED_HTTP_MAX_BODY_BYTES", "2048"),
                ("VENUED_EVENT_ID", "2024"),
                ("PATH", "/bin"),
            ]),
            None,
        )
        .expect("valid");
        assert_eq!(c.http.listen, "127.0.0.1:9000");
        assert_eq!(c.http.max_body_bytes, 2048);
        assert_eq!(c.event.id, "2024");
    }

    #[test]
    fn unknown_or_ill_typed_environment_overrides_are_named() {
        let p = problems(
            "",
            &[("VENUED_HTTP_LISTN", "x"), ("VENUED_STORE_READERS", "four")],
        );
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(
            p.iter()
                .any(|s| s.contains("VENUED_HTTP_LISTN") && s.contains("VENUED_HTTP_LISTEN"))
        );
        assert!(
            p.iter()
                .any(|s| s.contains("store.readers (from VENUED_STORE_READERS)"))
        );
    }

    #[test]
    fn a_scalar_where_a_section_belongs_is_reported() {
        let p = problems("http = 5", &[]);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("expected a table `[http]`"), "{p:?}");
    }

    #[test]
    fn ble_scanners_are_checked_each_by_index() {
        let text = r#"
            [ble]
            source = "replay"
            [[ble.scanners]]
            id = "hci0"
            zone = "hall-a"
            [[ble.scanners]]
            id = "hci0"
            zone = "hall b"
            rssi_offset_db = 99.0
        "#;
        let p = problems(text, &[]);
        assert_eq!(p.len(), 4, "{p:#?}");
        for needle in [
            "`ble.replay_file`",
            "`ble.scanners[1].id`",
            "`ble.scanners[1].zone`",
            "`ble.scanners[1].rssi_offset_db`",
        ] {
            assert!(
                p.iter().any(|s| s.starts_with(needle)),
                "{needle} in {p:#?}"
            );
        }
        let ok = load_str(
            "[ble]\nsource = \"simulated\"\n[[ble.scanners]]\nid = \"gw-1\"\nzone = \"foyer\"\n",
            "x",
            &BTreeMap::new(),
            None,
        )
        .expect("valid");
        assert_eq!(ok.ble.scanners[0].zone, "foyer");
        assert_eq!(ok.ble.source, BleSource::Simulated);
    }

    #[test]
    fn ids_are_checked() {
        for (id, ok) in [
            ("ev-2026.main", true),
            ("", false),
            ("a/b", false),
            ("a b", false),
        ] {
            assert_eq!(is_valid_id(id), ok, "{id}");
        }
    }

    #[test]
    fn bridge_entries_are_checked() {
        let toml = r#"
            [[mqtt.bridge]]
            filter = "alert/#"
            channel = "announcements"
            direction = "in"
            [[mqtt.bridge]]
            filter = "a/#/b"
            channel = "announcements"
            direction = "in"
            [[mqtt.bridge]]
            filter = "kiosk/+/checkin"
            channel = "announcements"
            direction = "out"
        "#;
        let errors = load_str(toml, "t.toml", &BTreeMap::new(), None).expect_err("two bad entries");
        let text = errors.to_string();
        assert!(
            text.contains("mqtt.bridge[1]") && text.contains("`#` the last"),
            "{text}"
        );
        assert!(
            text.contains("mqtt.bridge[2]") && text.contains("must start with `hub/`"),
            "{text}"
        );
        assert!(!text.contains("mqtt.bridge[0]"), "{text}");
        let defaults = Config::default();
        assert_eq!(defaults.mqtt.bridge.len(), 2, "the default mapping");
    }
}
