//! `[mqtt]`: the embedded broker's listeners, limits, topic tree and the bridge to the hub.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{ConfigProblem, check_range, invalid, is_valid_id};

/// Default MQTT 3.1.1 listener.
pub const DEFAULT_MQTT_LISTEN: &str = "0.0.0.0:1883";
/// Default MQTT-over-WebSocket (3.1.1) listener, for browser signage.
pub const DEFAULT_MQTT_WS_LISTEN: &str = "0.0.0.0:8083";
/// Default cap on one MQTT packet: room for a signage content manifest.
pub const DEFAULT_MQTT_MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// Default topic root: the tree is `{root}/{event}/…`.
pub const DEFAULT_TOPIC_ROOT: &str = "venue";
/// Default cap on MQTT connections (kiosks, displays, gateways).
pub const DEFAULT_MQTT_MAX_CONNECTIONS: usize = 1000;
/// Default bytes per in-memory log segment per subscription filter (1 MiB).
pub const DEFAULT_SEGMENT_BYTES: usize = 1024 * 1024;
/// Default segments kept per subscription filter: 10 MiB per filter, filled only as the filter's
/// traffic fills it. Ten gateways publishing 50,000 alerts to ten displays as fast as they can
/// lost 3-52 % of the deliveries at 3 MiB and none at 10 MiB (docs/operations.md, "Sizing the
/// MQTT broker").
pub const DEFAULT_SEGMENT_COUNT: usize = 10;
/// Default time a new connection has to send CONNECT, milliseconds.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;

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
            topic_root: DEFAULT_TOPIC_ROOT.into(),
            max_connections: DEFAULT_MQTT_MAX_CONNECTIONS,
            max_payload_bytes: DEFAULT_MQTT_MAX_PAYLOAD_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            segment_count: DEFAULT_SEGMENT_COUNT,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
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

/// Checks `[mqtt]`; the parsed listener addresses.
pub(super) fn validate(mqtt: &MqttConfig, problems: &mut Vec<ConfigProblem>) -> MqttListeners {
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
            invalid(problems, &format!("mqtt.bridge[{i}]"), reason.to_string());
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

/// Why a bridge entry is refused.
#[derive(Debug, thiserror::Error)]
enum BridgeError {
    #[error("filter `{0}` is not a topic path under the event's tree")]
    NotATopicPath(String),
    #[error("filter `{0}`: `+` and `#` must be whole levels, `#` the last")]
    Wildcards(String),
    #[error(
        "an `out` entry publishes on one topic, which must start with `hub/` (no wildcards); `{0}` does not"
    )]
    OutTopic(String),
    #[error("an `out` entry names one channel, without `{{n}}`")]
    OutChannel,
}

fn check_bridge(entry: &BridgeEntry) -> Result<(), BridgeError> {
    let levels: Vec<&str> = entry.filter.split('/').collect();
    let level_ok = |l: &str| !l.is_empty() && !l.starts_with('$') && l.len() <= 64;
    if entry.filter.is_empty() || !levels.iter().all(|l| level_ok(l)) {
        return Err(BridgeError::NotATopicPath(entry.filter.clone()));
    }
    let wild = levels.iter().filter(|l| matches!(**l, "+" | "#")).count();
    if levels.iter().any(|l| l.contains(['+', '#']) && l.len() > 1)
        || levels
            .iter()
            .position(|l| *l == "#")
            .is_some_and(|p| p + 1 != levels.len())
    {
        return Err(BridgeError::Wildcards(entry.filter.clone()));
    }
    match entry.direction {
        BridgeDirection::Out if wild > 0 || !entry.filter.starts_with("hub/") => {
            Err(BridgeError::OutTopic(entry.filter.clone()))
        }
        BridgeDirection::Out if entry.channel.contains('{') => Err(BridgeError::OutChannel),
        _ => Ok(()),
    }
}
