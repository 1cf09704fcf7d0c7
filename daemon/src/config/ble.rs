//! `[ble]`: BLE scanning, the scanners and their zones, and presence's tuning.

use serde::{Deserialize, Serialize};

use super::{ConfigProblem, check_range, invalid, is_valid_id};

/// Default local adapter.
pub const DEFAULT_BLE_ADAPTER: &str = "hci0";
/// Default cap on the advert recording, MiB.
pub const DEFAULT_RECORD_MAX_MIB: u64 = 1024;

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
            adapter: DEFAULT_BLE_ADAPTER.into(),
            silence_restart_secs: ble_scanner::bluez::DEFAULT_SILENCE_RESTART_SECS,
            scanners: Vec::new(),
            min_readings: ble_scanner::presence::DEFAULT_MIN_READINGS,
            switch_margin_db: ble_scanner::presence::DEFAULT_SWITCH_MARGIN_DB,
            switch_dwell_secs: ble_scanner::presence::DEFAULT_SWITCH_DWELL_MS / 1000,
            away_timeout_secs: ble_scanner::presence::DEFAULT_AWAY_TIMEOUT_MS / 1000,
            transition_retention_hours: DEFAULT_TRANSITION_RETENTION_HOURS,
            low_battery_mv: DEFAULT_LOW_BATTERY_MV,
            record_file: String::new(),
            record_max_mib: DEFAULT_RECORD_MAX_MIB,
        }
    }
}

/// Checks `[ble]`.
pub(super) fn validate(ble: &BleConfig, problems: &mut Vec<ConfigProblem>) {
    if ble.source == BleSource::Replay && ble.replay_file.is_empty() {
        invalid(
            problems,
            "ble.replay_file",
            "`ble.source = \"replay\"` needs the recording's path in `ble.replay_file`".into(),
        );
    }
    if ble.source == BleSource::Bluez && !ble.scanners.iter().any(|s| s.id == ble.adapter) {
        invalid(
            problems,
            "ble.scanners",
            format!(
                "`ble.source = \"bluez\"` needs a [[ble.scanners]] entry with id = \"{}\" saying which zone the adapter covers",
                ble.adapter
            ),
        );
    }
    if ble.source == BleSource::Gateways && ble.scanners.is_empty() {
        invalid(
            problems,
            "ble.scanners",
            "`ble.source = \"gateways\"` needs a [[ble.scanners]] entry per gateway (id = its device id, zone = the zone it covers)".into(),
        );
    }
    check_range(
        problems,
        "ble.silence_restart_secs",
        ble.silence_restart_secs,
        5,
        3600,
    );
    check_range(
        problems,
        "ble.record_max_mib",
        ble.record_max_mib,
        1,
        1024 * 1024,
    );
    let mut seen_scanners = std::collections::HashSet::new();
    for (i, scanner) in ble.scanners.iter().enumerate() {
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
    check_range(problems, "ble.min_readings", ble.min_readings, 1, 16);
    check_range(
        problems,
        "ble.switch_margin_db",
        ble.switch_margin_db,
        0.0,
        40.0,
    );
    check_range(
        problems,
        "ble.away_timeout_secs",
        ble.away_timeout_secs,
        1,
        3600,
    );
    if ble.switch_dwell_secs > 3600 {
        invalid(
            problems,
            "ble.switch_dwell_secs",
            format!("{} is above 3600", ble.switch_dwell_secs),
        );
    }
    check_range(
        problems,
        "ble.transition_retention_hours",
        ble.transition_retention_hours,
        1,
        24 * 365,
    );
}
