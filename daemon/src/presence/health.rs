//! Beacon health: when each beacon was last heard, and what its Eddystone-TLM frames say.
//!
//! TLM frames carry no beacon id, so they are joined to the id frames heard from the same
//! advertiser address shortly before (the research note's rule; badges that rotate addresses
//! send TLM from the same address as their id frames within a cycle). A battery below the
//! threshold raises one alert, re-armed only once the battery reads well above it again (a new
//! battery), so a beacon hovering at the threshold does not alert every few seconds.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use ble_scanner::BeaconId;
use ble_scanner::beacon::Telemetry;
use serde::Serialize;

/// How long an address stays joined to the id last heard from it.
const ADDRESS_JOIN_MS: u64 = 60_000;
/// Millivolts above the threshold at which the alert re-arms.
const REARM_MARGIN_MV: u16 = 200;
/// Most beacons and addresses remembered; past it the ones unheard longest are dropped.
const MAX_ENTRIES: usize = 100_000;

/// What is known about one beacon's health.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BeaconHealth {
    /// The beacon's payload id.
    pub beacon: String,
    /// When it was last heard, ms since the epoch.
    pub last_seen_ms: u64,
    /// Battery from its last TLM frame, millivolts.
    pub battery_mv: Option<u16>,
    /// Temperature from its last TLM frame, °C.
    pub temperature_c: Option<f32>,
    /// Whether its battery is below the threshold.
    pub low_battery: bool,
}

/// The shared health snapshot, newest first.
#[derive(Clone, Default)]
pub struct HealthView(Arc<RwLock<Vec<BeaconHealth>>>);

impl HealthView {
    /// A copy of the snapshot.
    pub fn get(&self) -> Vec<BeaconHealth> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(super) fn set(&self, health: Vec<BeaconHealth>) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = health;
    }
}

pub(super) struct Tracker {
    threshold_mv: u16,
    beacons: HashMap<BeaconId, BeaconHealth>,
    addresses: HashMap<String, (BeaconId, u64)>,
    changed: bool,
}

impl Tracker {
    pub(super) fn new(threshold_mv: u16) -> Self {
        Self {
            threshold_mv,
            beacons: HashMap::new(),
            addresses: HashMap::new(),
            changed: false,
        }
    }

    /// An id frame from `address`.
    pub(super) fn seen(&mut self, id: &BeaconId, address: &str, at_ms: u64) {
        if self.beacons.len() >= MAX_ENTRIES && !self.beacons.contains_key(id) {
            self.forget_oldest();
        }
        // Called for every id advert: update in place, and clone or allocate only for a beacon
        // or address not seen before.
        match self.beacons.get_mut(id) {
            Some(entry) => entry.last_seen_ms = entry.last_seen_ms.max(at_ms),
            None => {
                self.beacons.insert(
                    id.clone(),
                    BeaconHealth {
                        beacon: id.to_string(),
                        last_seen_ms: at_ms,
                        battery_mv: None,
                        temperature_c: None,
                        low_battery: false,
                    },
                );
            }
        }
        match self.addresses.get_mut(address) {
            Some((joined, seen_at)) => {
                if joined != id {
                    *joined = id.clone();
                }
                *seen_at = at_ms;
            }
            None => {
                if self.addresses.len() >= MAX_ENTRIES {
                    self.addresses
                        .retain(|_, (_, t)| at_ms.saturating_sub(*t) < ADDRESS_JOIN_MS);
                }
                self.addresses
                    .insert(address.to_string(), (id.clone(), at_ms));
            }
        }
        self.changed = true;
    }

    /// A TLM frame from `address`; returns the beacon if this frame raised a low-battery alert.
    pub(super) fn telemetry(
        &mut self,
        address: &str,
        tlm: &Telemetry,
        at_ms: u64,
    ) -> Option<BeaconId> {
        let (id, joined_at) = self.addresses.get(address)?.clone();
        if at_ms.saturating_sub(joined_at) > ADDRESS_JOIN_MS {
            return None;
        }
        let threshold = self.threshold_mv;
        let entry = self.beacons.get_mut(&id)?;
        entry.battery_mv = tlm.battery_mv.or(entry.battery_mv);
        entry.temperature_c = tlm.temperature_c;
        self.changed = true;
        let battery = tlm.battery_mv?;
        if battery < threshold && !entry.low_battery {
            entry.low_battery = true;
            return Some(id);
        }
        if battery >= threshold.saturating_add(REARM_MARGIN_MV) {
            entry.low_battery = false;
        }
        None
    }

    /// Whether anything changed since the last snapshot.
    pub(super) fn changed(&self) -> bool {
        self.changed
    }

    pub(super) fn snapshot(&mut self) -> Vec<BeaconHealth> {
        self.changed = false;
        let mut all: Vec<BeaconHealth> = self.beacons.values().cloned().collect();
        all.sort_by(|a, b| {
            b.last_seen_ms
                .cmp(&a.last_seen_ms)
                .then_with(|| a.beacon.cmp(&b.beacon))
        });
        all
    }

    fn forget_oldest(&mut self) {
        let mut ages: Vec<u64> = self.beacons.values().map(|h| h.last_seen_ms).collect();
        ages.sort_unstable();
        // Drop the oldest tenth in one go, so this runs rarely.
        let cutoff = ages.get(ages.len() / 10).copied().unwrap_or(0);
        self.beacons.retain(|_, h| h.last_seen_ms > cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlm(mv: u16) -> Telemetry {
        Telemetry {
            battery_mv: Some(mv),
            temperature_c: Some(21.5),
            adv_count: 1,
            uptime_ds: 1,
        }
    }

    #[test]
    fn a_low_battery_alerts_once_and_rearms_after_a_new_battery() {
        let id = BeaconId::Eid([1; 8]);
        let mut t = Tracker::new(2500);
        assert_eq!(
            t.telemetry("aa", &tlm(2000), 0),
            None,
            "no id heard from aa yet"
        );
        t.seen(&id, "aa", 1_000);
        assert_eq!(t.telemetry("aa", &tlm(2900), 1_500), None);
        assert_eq!(t.telemetry("aa", &tlm(2400), 2_000), Some(id.clone()));
        assert_eq!(t.telemetry("aa", &tlm(2450), 3_000), None, "alerted once");
        assert_eq!(
            t.telemetry("aa", &tlm(2600), 4_000),
            None,
            "inside the re-arm margin"
        );
        assert_eq!(
            t.telemetry("aa", &tlm(2400), 5_000),
            None,
            "still the same low battery"
        );
        assert_eq!(
            t.telemetry("aa", &tlm(3000), 6_000),
            None,
            "a new battery re-arms"
        );
        assert_eq!(t.telemetry("aa", &tlm(2300), 7_000), Some(id.clone()));
        let snapshot = t.snapshot();
        assert_eq!(snapshot.len(), 1);
        assert_eq!(
            (snapshot[0].battery_mv, snapshot[0].low_battery),
            (Some(2300), true)
        );
    }

    #[test]
    fn telemetry_from_an_address_not_heard_recently_is_not_joined() {
        let id = BeaconId::Eid([2; 8]);
        let mut t = Tracker::new(2500);
        t.seen(&id, "bb", 0);
        assert_eq!(t.telemetry("bb", &tlm(2000), ADDRESS_JOIN_MS + 1), None);
        assert_eq!(t.snapshot()[0].battery_mv, None);
    }
}
