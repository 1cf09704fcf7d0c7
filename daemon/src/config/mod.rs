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

mod ble;
mod devices;
mod event;
mod http;
mod log;
mod mdns;
mod mqtt;
mod peers;
mod print;
mod replica;
mod store;
mod sync;

pub use ble::*;
pub use devices::*;
pub use event::*;
pub use http::*;
pub use log::*;
pub use mdns::*;
pub use mqtt::*;
pub use peers::*;
pub use print::*;
pub use replica::*;
pub use store::*;
pub use sync::*;

/// Default data directory when neither config nor systemd's `STATE_DIRECTORY` names one.
pub const DEFAULT_DATA_DIR: &str = "./venued-data";
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
    peers: PeersConfig,
    replica: ReplicaConfig,
    mdns: MdnsConfig,
    print: PrintConfig,
    devices: Vec<DeviceConfig>,
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
    /// Peer sync on the LAN.
    pub peers: PeersConfig,
    /// Replica settings.
    pub replica: ReplicaConfig,
    /// LAN advertising (mDNS) settings.
    pub mdns: MdnsConfig,
    /// Badge printing settings.
    pub print: PrintConfig,
    /// The badge template (`print.template`, or the built-in one).
    pub print_template: crate::print::template::Template,
    /// Devices declared in the configuration (`[[devices]]`).
    pub devices: Vec<DeviceConfig>,
}

/// Keys whose values `check-config` never prints.
const SECRET_KEYS: &[&str] = &["sync.token", "peers.key", "replica.secret_access_key"];

/// A port `venued` serves to the network with its configuration (what a firewall must open).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedPort {
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    /// The port number.
    pub port: u16,
    /// What answers there, e.g. `http` or `mqtt-tls`.
    pub what: &'static str,
}

impl Config {
    /// The ports `venued` serves to other hosts with this configuration, in a fixed order:
    /// HTTP (the pages, the APIs, the WebSocket and the peer sync), each MQTT listener that is
    /// on, and mDNS. A listener bound to a loopback address serves no other host and is left out.
    pub fn served_ports(&self) -> Vec<ServedPort> {
        let tcp = |addr: Option<SocketAddr>, what| {
            addr.filter(|a| !a.ip().is_loopback()).map(|a| ServedPort {
                protocol: "tcp",
                port: a.port(),
                what,
            })
        };
        let m = &self.mqtt_listeners;
        let mut ports: Vec<ServedPort> = [
            tcp(Some(self.http_listen), "http"),
            tcp(m.tcp, "mqtt"),
            tcp(m.v5, "mqtt-v5"),
            tcp(m.ws, "mqtt-ws"),
            tcp(m.tls, "mqtt-tls"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if self.mdns.enabled {
            ports.push(ServedPort {
                protocol: "udp",
                port: 5353,
                what: "mdns",
            });
        }
        ports
    }

    /// Every effective setting, one `section.key = value` line each (TOML values), in section
    /// order: what `venued check-config` prints. Secrets show as `"<redacted>"` when set.
    pub fn effective(&self) -> String {
        let raw = RawConfig {
            data_dir: self.data_dir.display().to_string(),
            http: HttpConfig {
                listen: self.http_listen.to_string(),
                ..self.http.clone()
            },
            store: self.store.clone(),
            event: self.event.clone(),
            log: self.log.clone(),
            ble: self.ble.clone(),
            mqtt: self.mqtt.clone(),
            sync: self.sync.clone(),
            peers: self.peers.clone(),
            replica: self.replica.clone(),
            mdns: self.mdns.clone(),
            print: self.print.clone(),
            devices: self.devices.clone(),
        };
        let table = toml::Table::try_from(raw).unwrap_or_default();
        let mut lines = Vec::new();
        let mut line = |key: String, value: &toml::Value| {
            let shown = match value.as_str() {
                Some(v) if !v.is_empty() && SECRET_KEYS.contains(&key.as_str()) => {
                    toml::Value::String("<redacted>".into())
                }
                _ => value.clone(),
            };
            lines.push(format!("{key} = {shown}"));
        };
        for (key, value) in &table {
            match value.as_table() {
                Some(section) => {
                    for (sub, v) in section {
                        line(format!("{key}.{sub}"), v);
                    }
                }
                None => line(key.clone(), value),
            }
        }
        lines.join("\n")
    }
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
/// `CONFIGURATION_DIRECTORY` (from `ConfigurationDirectory=venued`, in `env`), else
/// `/etc/venued`.
pub fn default_config_path(env: &BTreeMap<String, String>) -> Option<PathBuf> {
    let dir = env
        .get("CONFIGURATION_DIRECTORY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/venued"));
    let path = dir.join("venued.toml");
    path.is_file().then_some(path)
}

/// Loads the configuration from `path` (or embedded defaults when `None`), applies `VENUED_*`
/// overrides from `env`, then `data_dir_override` (the `--data-dir` flag). `env` is the process
/// environment as the binary passes it (this library reads none itself); besides `VENUED_*`,
/// systemd's `STATE_DIRECTORY` names the data directory when nothing else does.
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
            "peers" => raw.peers = section(key, value, origin, &defaults, &mut problems),
            "replica" => raw.replica = section(key, value, origin, &defaults, &mut problems),
            "mdns" => raw.mdns = section(key, value, origin, &defaults, &mut problems),
            "print" => raw.print = section(key, value, origin, &defaults, &mut problems),
            "devices" => raw.devices = field(key, value, &mut problems).unwrap_or_default(),
            _ => problems.push(ConfigProblem::UnknownKey {
                key: key.clone(),
                source: origin.into(),
                known: defaults.keys().cloned().collect(),
            }),
        }
    }
    let config = validate(raw, env, data_dir_override, &mut problems);
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
                    reason: reason.to_string(),
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

/// An environment variable's value that does not parse as its key's type.
#[derive(Debug, thiserror::Error)]
#[error("expected {expected}, found `{found}`")]
struct EnvValueError {
    expected: &'static str,
    found: String,
}

/// `raw` parsed as the type of the key's default.
fn parse_like(default: &toml::Value, raw: &str) -> Result<toml::Value, EnvValueError> {
    let wrong = |expected| EnvValueError {
        expected,
        found: raw.to_string(),
    };
    match default {
        toml::Value::Integer(_) => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| wrong("a whole number")),
        toml::Value::Boolean(_) => raw
            .trim()
            .parse::<bool>()
            .map(toml::Value::Boolean)
            .map_err(|_| wrong("`true` or `false`")),
        toml::Value::Float(_) => raw
            .trim()
            .parse::<f64>()
            .map(toml::Value::Float)
            .map_err(|_| wrong("a number")),
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
    env: &BTreeMap<String, String>,
    data_dir_override: Option<&Path>,
    problems: &mut Vec<ConfigProblem>,
) -> Config {
    let http_listen = http::validate(&raw.http, problems);
    store::validate(&raw.store, problems);
    event::validate(&raw.event, problems);
    log::validate(&raw.log, problems);
    ble::validate(&raw.ble, problems);
    let mqtt_listeners = mqtt::validate(&raw.mqtt, problems);
    sync::validate(&raw.sync, problems);
    peers::validate(&raw.peers, problems);
    replica::validate(&raw.replica, problems);
    mdns::validate(&raw.mdns, problems);
    let print_template = print::validate(&raw.print, problems);
    devices::validate(&raw.devices, problems);
    let data_dir = match data_dir_override {
        Some(p) => p.to_path_buf(),
        None if !raw.data_dir.is_empty() => PathBuf::from(&raw.data_dir),
        None => env
            .get("STATE_DIRECTORY")
            // systemd may pass several colon-separated directories; the first is ours.
            .and_then(|v| v.split(':').next())
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
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
        peers: raw.peers,
        replica: raw.replica,
        mdns: raw.mdns,
        print: raw.print,
        devices: raw.devices,
        print_template,
    }
}

/// Reports `key` as invalid.
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

    fn ports_of(text: &str) -> Vec<(&'static str, u16, &'static str)> {
        load_str(text, "test", &BTreeMap::new(), None)
            .expect("valid")
            .served_ports()
            .into_iter()
            .map(|p| (p.protocol, p.port, p.what))
            .collect()
    }

    #[test]
    fn the_served_ports_follow_the_configuration() {
        assert_eq!(
            ports_of(""),
            [
                ("tcp", 8080, "http"),
                ("tcp", 1883, "mqtt"),
                ("tcp", 8083, "mqtt-ws"),
                ("udp", 5353, "mdns"),
            ]
        );
        assert_eq!(
            ports_of(
                "[http]\nlisten = \"0.0.0.0:80\"\n[mqtt]\nlisten = \"127.0.0.1:1883\"\n\
                 listen_v5 = \"0.0.0.0:1884\"\nlisten_ws = \"\"\n[mdns]\nenabled = false\n"
            ),
            [("tcp", 80, "http"), ("tcp", 1884, "mqtt-v5")],
            "a moved port, a loopback listener, one on, one off, mDNS off"
        );
        assert_eq!(
            ports_of("[mqtt]\nenabled = false\n"),
            [("tcp", 8080, "http"), ("udp", 5353, "mdns")]
        );
    }

    /// The all-comments `/etc/venued/venued.toml` the Debian package installs is the reference
    /// in docs/operations.md, line for line, and uncommented it is a valid configuration: a key
    /// renamed or dropped in the code fails here instead of in a venue.
    #[test]
    fn the_packaged_config_is_the_documented_reference_and_loads_uncommented() {
        let packaged = include_str!("../../debian/venued.toml");
        let docs = include_str!("../../../docs/operations.md");
        let reference = docs
            .split_once("## Configuration reference")
            .and_then(|(_, rest)| rest.split_once("```toml\n"))
            .and_then(|(_, rest)| rest.split_once("```"))
            .map(|(block, _)| block)
            .expect("a toml block under \"Configuration reference\"");
        let uncommented: String = packaged
            .lines()
            .skip_while(|l| !l.is_empty())
            .skip(1)
            .map(|l| {
                assert!(
                    l.starts_with('#'),
                    "an active line in the packaged file: {l}"
                );
                format!("{}\n", l.strip_prefix("# ").unwrap_or(""))
            })
            .collect();
        assert_eq!(uncommented, reference);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("venued.toml");
        std::fs::write(&path, &uncommented).expect("writes");
        if let Err(e) = load(Some(&path), &BTreeMap::new(), None) {
            panic!("the documented reference does not load: {e}");
        }
    }

    /// `check-config` printed 4 of the 9 sections; now every key of every section, and no
    /// secret.
    #[test]
    fn the_effective_settings_name_every_section_and_hide_secrets() {
        let env: BTreeMap<String, String> = [
            ("VENUED_SYNC_TOKEN", "s3cret-token"),
            ("VENUED_PEERS_KEY", "s3cret-venue-key-0123456789abcdefgh"),
            ("VENUED_REPLICA_SECRET_ACCESS_KEY", "s3cret-key"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let config = load_str("", "t", &env, None).expect("valid");
        let shown = config.effective();
        for section in [
            "data_dir", "http.", "store.", "event.", "log.", "ble.", "mqtt.", "sync.", "peers.",
            "replica.", "mdns.",
        ] {
            assert!(shown.contains(section), "{section} missing from:\n{shown}");
        }
        assert!(shown.contains("sync.token = \"<redacted>\""), "{shown}");
        assert!(shown.contains("peers.key = \"<redacted>\""), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn mdns_names_must_be_one_dns_label_and_interfaces_names() {
        let p = problems(
            "[mdns]\nhostname = \"Venue Edge\"\ninterfaces = \"eth0, not an interface\"",
            &[],
        );
        assert!(p.iter().any(|s| s.starts_with("`mdns.hostname`")), "{p:?}");
        assert!(
            p.iter().any(|s| s.starts_with("`mdns.interfaces`")),
            "{p:?}"
        );
        let c = load_str("", "t", &env(&[("VENUED_MDNS_ENABLED", "false")]), None).expect("valid");
        assert!(!c.mdns.enabled);
        assert!(Config::default().mdns.enabled, "on by default");
        assert_eq!(Config::default().mdns.hostname, "venue-edge");
    }

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
    fn peers_need_a_long_venue_key_and_http_urls() {
        let p = problems(
            "[peers]\nkey = \"short\"\nurls = \"http://10.0.0.2:8080, ftp://x\"\npull_wait_secs = 99",
            &[],
        );
        for key in ["`peers.key`", "`peers.urls`", "`peers.pull_wait_secs`"] {
            assert!(p.iter().any(|s| s.starts_with(key)), "{key}: {p:?}");
        }
        let p = problems("[peers]\nurls = \"http://10.0.0.2:8080\"", &[]);
        assert!(p.iter().any(|s| s.contains("no venue key")), "{p:?}");
        let c = load_str(
            "[peers]\nurls = \"http://10.0.0.2:8080/, http://10.0.0.3:8080\"\nrevoked = \"n1\"",
            "t",
            &env(&[("VENUED_PEERS_KEY", "0123456789abcdef0123456789abcdef")]),
            None,
        )
        .expect("valid");
        assert!(c.peers.enabled());
        assert_eq!(
            c.peers.url_list(),
            ["http://10.0.0.2:8080", "http://10.0.0.3:8080"]
        );
        assert_eq!(c.peers.revoked_nodes(), ["n1"]);
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
