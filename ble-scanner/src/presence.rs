//! The zone presence engine: a pure state machine from sightings and a clock to presence events.
//!
//! Per (beacon, scanner) it smooths RSSI with a one-dimensional Kalman filter (room-assistant's
//! tuning), adds the scanner's calibration offset, and keeps the recent reading times. A zone's
//! score for a beacon is the best fresh smoothed RSSI among that zone's scanners. The decision
//! follows what users of ESPresense, Bermuda and room-assistant asked for
//! (`shared/research/ble.md` §4.5):
//! - `Entered` in the zone strongest over all fresh readings, once that zone's scanners have
//!   `min_readings` within `reading_window_ms` (no ghosts from one stray advert, and no bias
//!   towards whichever scanner reported first);
//! - a switch only when another zone leads by `switch_margin_db` for `switch_dwell_ms` (no
//!   flapping between neighbouring rooms);
//! - `Left` after `away_timeout_ms` without any sighting (btleplug never reports a lost device).
//!
//! No IO and no wall clock: the caller passes time in, so traces replay deterministically.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::beacon::BeaconId;

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

/// A scanner, resolved once by [`PresenceEngine::scanner`] so the hot path never hashes names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScannerIdx(u16);

/// One beacon heard by one scanner.
#[derive(Debug, Clone, PartialEq)]
pub struct Sighting {
    /// The beacon's payload id.
    pub beacon: BeaconId,
    /// The scanner that heard it.
    pub scanner: ScannerIdx,
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
        beacon: BeaconId,
        /// Zone.
        zone: String,
        /// When.
        at_ms: u64,
    },
    /// The beacon moved from one zone to another.
    Moved {
        /// Beacon id.
        beacon: BeaconId,
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
        beacon: BeaconId,
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
    /// The scanner index is not one this engine issued.
    UnknownScanner,
    /// RSSI outside the plausible range.
    AbsurdRssi,
    /// Older than the beacon's newest reading from that scanner.
    OutOfOrder,
    /// The tracked-beacon cap is reached.
    TooManyBeacons,
}

impl Rejected {
    /// A fixed, short name, e.g. for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownScanner => "unknown_scanner",
            Self::AbsurdRssi => "absurd_rssi",
            Self::OutOfOrder => "out_of_order",
            Self::TooManyBeacons => "too_many_beacons",
        }
    }
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
    /// Per scanner, in first-heard order; a badge is heard by a handful of scanners, so a small
    /// Vec beats a map.
    links: Vec<(ScannerIdx, Link)>,
    last_seen_ms: u64,
    /// Zone index and since when.
    zone: Option<(usize, u64)>,
    /// A zone leading the current one by the margin, and since when.
    challenger: Option<(usize, u64)>,
}

/// The engine.
#[derive(Debug, Clone)]
pub struct PresenceEngine {
    config: PresenceConfig,
    /// Scanner index → (zone index, offset).
    scanners: Vec<(usize, f64)>,
    scanner_names: HashMap<String, ScannerIdx>,
    zones: Vec<String>,
    tracks: HashMap<BeaconId, Track>,
    occupancy: Vec<usize>,
    /// Scratch space for zone scores, reused for every decision.
    scores: Vec<f64>,
}

impl PresenceEngine {
    /// An engine with `config`.
    pub fn new(config: PresenceConfig) -> Self {
        let mut zones: Vec<String> = config.scanners.values().map(|s| s.zone.clone()).collect();
        zones.sort();
        zones.dedup();
        let mut names: Vec<&String> = config.scanners.keys().collect();
        names.sort();
        let mut scanners = Vec::new();
        let mut scanner_names = HashMap::new();
        for (i, name) in names.into_iter().enumerate() {
            let sc = &config.scanners[name];
            let zone = zones.binary_search(&sc.zone).unwrap_or(0);
            scanners.push((zone, sc.rssi_offset_db));
            scanner_names.insert(name.clone(), ScannerIdx(i as u16));
        }
        Self {
            occupancy: vec![0; zones.len()],
            scores: vec![f64::NEG_INFINITY; zones.len()],
            config,
            scanners,
            scanner_names,
            zones,
            tracks: HashMap::new(),
        }
    }

    /// The index of a configured scanner, for building [`Sighting`]s.
    pub fn scanner(&self, name: &str) -> Option<ScannerIdx> {
        self.scanner_names.get(name).copied()
    }

    /// Feeds one sighting; the events it causes.
    pub fn sighting(&mut self, s: &Sighting) -> Result<Vec<PresenceEvent>, Rejected> {
        let Some(&(_, offset)) = self.scanners.get(usize::from(s.scanner.0)) else {
            return Err(Rejected::UnknownScanner);
        };
        let (lo, hi) = self.config.rssi_range_dbm;
        if !(lo..=hi).contains(&s.rssi) {
            return Err(Rejected::AbsurdRssi);
        }
        if !self.tracks.contains_key(&s.beacon) && self.tracks.len() >= self.config.max_beacons {
            return Err(Rejected::TooManyBeacons);
        }
        let (process, measurement) = (
            self.config.kalman_process_noise,
            self.config.kalman_measurement_noise,
        );
        let track = self.tracks.entry(s.beacon.clone()).or_default();
        let reading = f64::from(s.rssi) + offset;
        match track.links.iter_mut().find(|(idx, _)| *idx == s.scanner) {
            Some((_, link)) => {
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
            None => track.links.push((
                s.scanner,
                Link {
                    filter: Kalman {
                        estimate: reading,
                        error: measurement,
                    },
                    measured_power_1m: s.measured_power_1m,
                    times: VecDeque::from([s.at_ms]),
                },
            )),
        }
        track.last_seen_ms = track.last_seen_ms.max(s.at_ms);
        Ok(self.decide(&s.beacon, s.at_ms))
    }

    /// Advances the clock: beacons unseen for the away timeout leave, and pending switches whose
    /// dwell has passed happen.
    pub fn tick(&mut self, now_ms: u64) -> Vec<PresenceEvent> {
        let away = self.config.away_timeout_ms;
        let mut gone: Vec<BeaconId> = Vec::new();
        let mut pending: Vec<BeaconId> = Vec::new();
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
                    self.occupancy[zone] = self.occupancy[zone].saturating_sub(1);
                    let at_ms = track.last_seen_ms + away;
                    events.push(PresenceEvent::Left {
                        beacon,
                        zone: self.zones[zone].clone(),
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

    /// Beacons present per zone, for every configured zone.
    pub fn occupancy(&self) -> BTreeMap<&str, usize> {
        self.zones
            .iter()
            .map(String::as_str)
            .zip(self.occupancy.iter().copied())
            .collect()
    }

    /// The zone a beacon is in, if any.
    pub fn zone_of(&self, beacon: &BeaconId) -> Option<&str> {
        let (zone, _) = self.tracks.get(beacon)?.zone?;
        Some(self.zones[zone].as_str())
    }

    /// Beacons tracked (present or still accumulating readings).
    pub fn tracked(&self) -> usize {
        self.tracks.len()
    }

    /// Estimated distance (m) of a beacon from a scanner, from its smoothed RSSI, its measured
    /// power and the path-loss exponent: `10^((P1m − rssi) / (10 n))`.
    pub fn distance_m(&self, beacon: &BeaconId, scanner: ScannerIdx) -> Option<f64> {
        let (_, link) = self
            .tracks
            .get(beacon)?
            .links
            .iter()
            .find(|(idx, _)| *idx == scanner)?;
        let exponent = (f64::from(link.measured_power_1m) - link.filter.estimate)
            / (10.0 * self.config.path_loss_exponent);
        Some(10f64.powf(exponent))
    }

    /// Fills `self.scores` with each zone's best smoothed RSSI among links with at least
    /// `per_link` readings in the window; returns the readings in the window over all links.
    fn score(&mut self, beacon: &BeaconId, now_ms: u64, per_link: usize) -> usize {
        self.scores.fill(f64::NEG_INFINITY);
        let Some(track) = self.tracks.get(beacon) else {
            return 0;
        };
        let window = self.config.reading_window_ms;
        let mut total = 0;
        for (scanner, link) in &track.links {
            let recent = link
                .times
                .iter()
                .rev()
                .take_while(|t| now_ms.saturating_sub(**t) <= window)
                .count();
            total += recent;
            if recent >= per_link.max(1) {
                let zone = self.scanners[usize::from(scanner.0)].0;
                self.scores[zone] = self.scores[zone].max(link.filter.estimate);
            }
        }
        total
    }

    /// The best-scoring zone, ties broken by the lower zone index (zone names sort).
    fn best_zone(&self) -> Option<(usize, f64)> {
        let mut best: Option<(usize, f64)> = None;
        for (zone, &score) in self.scores.iter().enumerate() {
            if score > f64::NEG_INFINITY && best.is_none_or(|(_, b)| score > b) {
                best = Some((zone, score));
            }
        }
        best
    }

    fn decide(&mut self, beacon: &BeaconId, now_ms: u64) -> Vec<PresenceEvent> {
        let Some(track) = self.tracks.get(beacon) else {
            return Vec::new();
        };
        let needed = self.config.min_readings.clamp(1, MAX_READING_TIMES);
        let mut events = Vec::new();
        match track.zone {
            None => {
                // Enter the zone that is strongest over every fresh reading, once that zone's
                // own scanners have heard the badge `min_readings` times: neither the first
                // scanner to reach the count nor one stray advert decides.
                self.score(beacon, now_ms, 1);
                let strongest = self.best_zone().map(|(z, _)| z);
                self.score(beacon, now_ms, needed);
                let qualified = self.best_zone().map(|(z, _)| z);
                let Some(zone) = qualified.filter(|q| Some(*q) == strongest) else {
                    return events;
                };
                self.occupancy[zone] += 1;
                if let Some(t) = self.tracks.get_mut(beacon) {
                    t.zone = Some((zone, now_ms));
                    t.challenger = None;
                }
                events.push(PresenceEvent::Entered {
                    beacon: beacon.clone(),
                    zone: self.zones[zone].clone(),
                    at_ms: now_ms,
                });
            }
            Some((zone, since)) => {
                let challenger = track.challenger;
                // A challenger must be heard `min_readings` times: one strong stray reading
                // never starts a switch.
                self.score(beacon, now_ms, needed);
                let current = self.scores[zone];
                let leader = self
                    .best_zone()
                    .filter(|(best, score)| {
                        *best != zone && score - current >= self.config.switch_margin_db
                    })
                    .map(|(best, _)| best);
                let next = match (leader, challenger) {
                    (Some(best), Some((c, started))) if c == best => {
                        if now_ms.saturating_sub(started) >= self.config.switch_dwell_ms {
                            self.occupancy[zone] = self.occupancy[zone].saturating_sub(1);
                            self.occupancy[best] += 1;
                            events.push(PresenceEvent::Moved {
                                beacon: beacon.clone(),
                                from: self.zones[zone].clone(),
                                to: self.zones[best].clone(),
                                at_ms: now_ms,
                                dwell_ms: now_ms.saturating_sub(since),
                            });
                            if let Some(t) = self.tracks.get_mut(beacon) {
                                t.zone = Some((best, now_ms));
                            }
                            None
                        } else {
                            Some((c, started))
                        }
                    }
                    (Some(best), _) => Some((best, now_ms)),
                    (None, _) => None,
                };
                if let Some(t) = self.tracks.get_mut(beacon) {
                    t.challenger = next;
                }
            }
        }
        events
    }
}

#[cfg(test)]
mod tests;
