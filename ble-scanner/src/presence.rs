//! The zone presence engine: a pure state machine from sightings and a clock to presence events.
//!
//! Per (beacon, scanner) it smooths RSSI with a one-dimensional Kalman filter (room-assistant's
//! tuning), adds the scanner's calibration offset, and keeps the recent reading times. A zone's
//! score for a beacon is the best fresh smoothed RSSI among that zone's scanners. The decision
//! follows what users of ESPresense, Bermuda and room-assistant asked for
//! (`shared/research/ble.md` §4.5):
//! - `Entered` only after `min_readings` within `reading_window_ms` (no ghosts from one stray
//!   advert);
//! - a switch only when another zone leads by `switch_margin_db` for `switch_dwell_ms` (no
//!   flapping between neighbouring rooms);
//! - `Left` after `away_timeout_ms` without any sighting (btleplug never reports a lost device).
//!
//! No IO and no wall clock: the caller passes time in, so traces replay deterministically.

use std::collections::{BTreeMap, HashMap, VecDeque};

/// Engine parameters. Units are in the names; defaults are named constants below.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceConfig {
    /// Scanner id → its zone and calibration.
    pub scanners: HashMap<String, ScannerConfig>,
    /// Readings needed within the window before a beacon counts as present.
    pub min_readings: usize,
    /// The window for `min_readings` and for a scanner's reading to count as fresh.
    pub reading_window_ms: u64,
    /// How far (dB) another zone must lead before a switch is considered.
    pub switch_margin_db: f64,
    /// How long the lead must hold before the switch happens.
    pub switch_dwell_ms: u64,
    /// No sighting for this long means the beacon left.
    pub away_timeout_ms: u64,
    /// Path-loss exponent for distance estimates (2 in free space, 2.5–3.5 indoors).
    pub path_loss_exponent: f64,
    /// Kalman process noise (how fast the true RSSI may drift between readings).
    pub kalman_process_noise: f64,
    /// Kalman measurement noise (how noisy a single RSSI reading is).
    pub kalman_measurement_noise: f64,
    /// Readings outside this range (dBm) are rejected as absurd.
    pub rssi_range_dbm: (i16, i16),
    /// Most beacons tracked at once; sightings of further new beacons are dropped and counted.
    pub max_beacons: usize,
}

/// Where a scanner is and how it is calibrated.
#[derive(Debug, Clone, PartialEq)]
pub struct ScannerConfig {
    /// The zone the scanner covers.
    pub zone: String,
    /// Added to every reading of this scanner, dB (antennas differ; ESPresense's `rx_adj_rssi`).
    pub rssi_offset_db: f64,
}

/// Default readings before `Entered`.
pub const DEFAULT_MIN_READINGS: usize = 2;
/// Default reading window, ms.
pub const DEFAULT_READING_WINDOW_MS: u64 = 10_000;
/// Default switch margin, dB.
pub const DEFAULT_SWITCH_MARGIN_DB: f64 = 6.0;
/// Default switch dwell, ms.
pub const DEFAULT_SWITCH_DWELL_MS: u64 = 5_000;
/// Default away timeout, ms (Bermuda's 30 s; ≥ 3 × a slow badge's interval plus scan slack).
pub const DEFAULT_AWAY_TIMEOUT_MS: u64 = 30_000;
/// Default path-loss exponent (ESPresense's absorption 2.7).
pub const DEFAULT_PATH_LOSS_EXPONENT: f64 = 2.7;
/// Default Kalman process noise (room-assistant's R = 0.8).
pub const DEFAULT_KALMAN_PROCESS_NOISE: f64 = 0.8;
/// Default Kalman measurement noise (room-assistant's Q = 15).
pub const DEFAULT_KALMAN_MEASUREMENT_NOISE: f64 = 15.0;
/// Default plausible RSSI range, dBm.
pub const DEFAULT_RSSI_RANGE_DBM: (i16, i16) = (-120, 10);
/// Default cap on tracked beacons.
pub const DEFAULT_MAX_BEACONS: usize = 100_000;
/// Reading times remembered per (beacon, scanner); `min_readings` above this is clamped.
const MAX_READING_TIMES: usize = 16;

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            scanners: HashMap::new(),
            min_readings: DEFAULT_MIN_READINGS,
            reading_window_ms: DEFAULT_READING_WINDOW_MS,
            switch_margin_db: DEFAULT_SWITCH_MARGIN_DB,
            switch_dwell_ms: DEFAULT_SWITCH_DWELL_MS,
            away_timeout_ms: DEFAULT_AWAY_TIMEOUT_MS,
            path_loss_exponent: DEFAULT_PATH_LOSS_EXPONENT,
            kalman_process_noise: DEFAULT_KALMAN_PROCESS_NOISE,
            kalman_measurement_noise: DEFAULT_KALMAN_MEASUREMENT_NOISE,
            rssi_range_dbm: DEFAULT_RSSI_RANGE_DBM,
            max_beacons: DEFAULT_MAX_BEACONS,
        }
    }
}

/// One beacon heard by one scanner.
#[derive(Debug, Clone, PartialEq)]
pub struct Sighting {
    /// The beacon's payload id (see [`crate::BeaconId`]'s `Display`).
    pub beacon: String,
    /// The scanner that heard it.
    pub scanner: String,
    /// Received signal strength, dBm.
    pub rssi: i16,
    /// The beacon's calibrated RSSI at 1 m, dBm.
    pub measured_power_1m: i16,
    /// When, ms since the epoch.
    pub at_ms: u64,
}

/// What changed.
#[derive(Debug, Clone, PartialEq)]
pub enum PresenceEvent {
    /// The beacon is now in `zone`.
    Entered {
        /// Beacon id.
        beacon: String,
        /// Zone.
        zone: String,
        /// When.
        at_ms: u64,
    },
    /// The beacon moved from one zone to another.
    Moved {
        /// Beacon id.
        beacon: String,
        /// Previous zone.
        from: String,
        /// New zone.
        to: String,
        /// When.
        at_ms: u64,
        /// Time spent in `from`.
        dwell_ms: u64,
    },
    /// The beacon is no longer anywhere.
    Left {
        /// Beacon id.
        beacon: String,
        /// The zone it left.
        zone: String,
        /// When (the away timeout after its last sighting).
        at_ms: u64,
        /// Time spent in the zone.
        dwell_ms: u64,
    },
}

/// Why a sighting was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// The scanner is not mapped to a zone.
    UnknownScanner,
    /// RSSI outside the plausible range.
    AbsurdRssi,
    /// Older than the beacon's newest reading from that scanner.
    OutOfOrder,
    /// The tracked-beacon cap is reached.
    TooManyBeacons,
}

#[derive(Debug, Clone)]
struct Kalman {
    estimate: f64,
    error: f64,
}

impl Kalman {
    fn update(&mut self, reading: f64, process: f64, measurement: f64) -> f64 {
        self.error += process;
        let gain = self.error / (self.error + measurement);
        self.estimate += gain * (reading - self.estimate);
        self.error *= 1.0 - gain;
        self.estimate
    }
}

#[derive(Debug, Clone)]
struct Link {
    filter: Kalman,
    measured_power_1m: i16,
    times: VecDeque<u64>,
}

#[derive(Debug, Clone, Default)]
struct Track {
    links: BTreeMap<String, Link>,
    last_seen_ms: u64,
    zone: Option<(String, u64)>,
    challenger: Option<(String, u64)>,
}

/// The engine.
#[derive(Debug, Clone)]
pub struct PresenceEngine {
    config: PresenceConfig,
    tracks: HashMap<String, Track>,
    occupancy: BTreeMap<String, usize>,
}

impl PresenceEngine {
    /// An engine with `config`.
    pub fn new(config: PresenceConfig) -> Self {
        Self {
            config,
            tracks: HashMap::new(),
            occupancy: BTreeMap::new(),
        }
    }

    /// Feeds one sighting; the events it causes.
    pub fn sighting(&mut self, s: &Sighting) -> Result<Vec<PresenceEvent>, Rejected> {
        let Some(scanner) = self.config.scanners.get(&s.scanner) else {
            return Err(Rejected::UnknownScanner);
        };
        let (lo, hi) = self.config.rssi_range_dbm;
        if !(lo..=hi).contains(&s.rssi) {
            return Err(Rejected::AbsurdRssi);
        }
        if !self.tracks.contains_key(&s.beacon) && self.tracks.len() >= self.config.max_beacons {
            return Err(Rejected::TooManyBeacons);
        }
        let offset = scanner.rssi_offset_db;
        let (process, measurement) = (
            self.config.kalman_process_noise,
            self.config.kalman_measurement_noise,
        );
        let track = self.tracks.entry(s.beacon.clone()).or_default();
        let reading = f64::from(s.rssi) + offset;
        match track.links.get_mut(&s.scanner) {
            Some(link) => {
                if link.times.back().is_some_and(|last| s.at_ms < *last) {
                    return Err(Rejected::OutOfOrder);
                }
                link.filter.update(reading, process, measurement);
                link.measured_power_1m = s.measured_power_1m;
                if link.times.len() == MAX_READING_TIMES {
                    link.times.pop_front();
                }
                link.times.push_back(s.at_ms);
            }
            None => {
                track.links.insert(
                    s.scanner.clone(),
                    Link {
                        filter: Kalman {
                            estimate: reading,
                            error: measurement,
                        },
                        measured_power_1m: s.measured_power_1m,
                        times: VecDeque::from([s.at_ms]),
                    },
                );
            }
        }
        track.last_seen_ms = track.last_seen_ms.max(s.at_ms);
        Ok(self.decide(&s.beacon, s.at_ms))
    }

    /// Advances the clock: beacons unseen for the away timeout leave, and pending switches whose
    /// dwell has passed happen.
    pub fn tick(&mut self, now_ms: u64) -> Vec<PresenceEvent> {
        let away = self.config.away_timeout_ms;
        let mut gone: Vec<String> = Vec::new();
        let mut pending: Vec<String> = Vec::new();
        for (beacon, track) in &self.tracks {
            if now_ms.saturating_sub(track.last_seen_ms) >= away {
                gone.push(beacon.clone());
            } else if track.challenger.is_some() {
                pending.push(beacon.clone());
            }
        }
        gone.sort();
        pending.sort();
        let mut events = Vec::new();
        for beacon in gone {
            if let Some(track) = self.tracks.remove(&beacon) {
                if let Some((zone, since)) = track.zone {
                    self.leave_zone(&zone);
                    let at_ms = track.last_seen_ms + away;
                    events.push(PresenceEvent::Left {
                        beacon,
                        zone,
                        at_ms,
                        dwell_ms: at_ms.saturating_sub(since),
                    });
                }
            }
        }
        for beacon in pending {
            events.extend(self.decide(&beacon, now_ms));
        }
        events
    }

    /// Beacons present per zone (zones with none are absent).
    pub fn occupancy(&self) -> &BTreeMap<String, usize> {
        &self.occupancy
    }

    /// The zone a beacon is in, if any.
    pub fn zone_of(&self, beacon: &str) -> Option<&str> {
        self.tracks
            .get(beacon)
            .and_then(|t| t.zone.as_ref())
            .map(|(z, _)| z.as_str())
    }

    /// Beacons tracked (present or still accumulating readings).
    pub fn tracked(&self) -> usize {
        self.tracks.len()
    }

    /// Estimated distance (m) of a beacon from a scanner, from its smoothed RSSI, its measured
    /// power and the path-loss exponent: `10^((P1m − rssi) / (10 n))`.
    pub fn distance_m(&self, beacon: &str, scanner: &str) -> Option<f64> {
        let link = self.tracks.get(beacon)?.links.get(scanner)?;
        let exponent = (f64::from(link.measured_power_1m) - link.filter.estimate)
            / (10.0 * self.config.path_loss_exponent);
        Some(10f64.powf(exponent))
    }

    /// Each zone's score for a track: the best fresh smoothed RSSI among its scanners that have
    /// `min_readings` within the window.
    fn scores(&self, track: &Track, now_ms: u64) -> BTreeMap<String, f64> {
        let window = self.config.reading_window_ms;
        let needed = self.config.min_readings.clamp(1, MAX_READING_TIMES);
        let mut scores: BTreeMap<String, f64> = BTreeMap::new();
        for (scanner, link) in &track.links {
            let Some(config) = self.config.scanners.get(scanner) else {
                continue;
            };
            let recent = link
                .times
                .iter()
                .filter(|t| now_ms.saturating_sub(**t) <= window)
                .count();
            if recent < needed {
                continue;
            }
            let score = scores
                .entry(config.zone.clone())
                .or_insert(f64::NEG_INFINITY);
            *score = score.max(link.filter.estimate);
        }
        scores
    }

    fn decide(&mut self, beacon: &str, now_ms: u64) -> Vec<PresenceEvent> {
        let Some(track) = self.tracks.get(beacon) else {
            return Vec::new();
        };
        let scores = self.scores(track, now_ms);
        // Ties break on the zone name so the decision is deterministic.
        let best = scores
            .iter()
            .max_by(|a, b| a.1.total_cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(z, s)| (z.clone(), *s));
        let current = track.zone.clone();
        let margin = self.config.switch_margin_db;
        let dwell = self.config.switch_dwell_ms;
        let mut events = Vec::new();
        match (current, best) {
            (None, Some((zone, _))) => {
                self.enter_zone(&zone);
                if let Some(t) = self.tracks.get_mut(beacon) {
                    t.zone = Some((zone.clone(), now_ms));
                    t.challenger = None;
                }
                events.push(PresenceEvent::Entered {
                    beacon: beacon.into(),
                    zone,
                    at_ms: now_ms,
                });
            }
            (Some((zone, since)), Some((best_zone, best_score))) if best_zone != zone => {
                let current_score = scores.get(&zone).copied().unwrap_or(f64::NEG_INFINITY);
                let leads = best_score - current_score >= margin;
                let challenger = self.tracks.get(beacon).and_then(|t| t.challenger.clone());
                match (leads, challenger) {
                    (true, Some((c, started))) if c == best_zone => {
                        if now_ms.saturating_sub(started) >= dwell {
                            self.leave_zone(&zone);
                            self.enter_zone(&best_zone);
                            if let Some(t) = self.tracks.get_mut(beacon) {
                                t.zone = Some((best_zone.clone(), now_ms));
                                t.challenger = None;
                            }
                            events.push(PresenceEvent::Moved {
                                beacon: beacon.into(),
                                from: zone,
                                to: best_zone,
                                at_ms: now_ms,
                                dwell_ms: now_ms.saturating_sub(since),
                            });
                        }
                    }
                    (true, _) => {
                        if let Some(t) = self.tracks.get_mut(beacon) {
                            t.challenger = Some((best_zone, now_ms));
                        }
                    }
                    (false, _) => {
                        if let Some(t) = self.tracks.get_mut(beacon) {
                            t.challenger = None;
                        }
                    }
                }
            }
            // Still best where it is, or no zone has enough readings yet (stay; the away
            // timeout decides a departure).
            _ => {
                if let Some(t) = self.tracks.get_mut(beacon) {
                    t.challenger = None;
                }
            }
        }
        events
    }

    fn enter_zone(&mut self, zone: &str) {
        *self.occupancy.entry(zone.to_string()).or_insert(0) += 1;
    }

    fn leave_zone(&mut self, zone: &str) {
        if let Some(n) = self.occupancy.get_mut(zone) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.occupancy.remove(zone);
            }
        }
    }
}

#[cfg(test)]
mod tests;
