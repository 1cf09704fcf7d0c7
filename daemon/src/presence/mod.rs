//! Zone presence in the daemon: adverts from a source go through the beacon parsers and the
//! presence engine (`ble-scanner`), then through each attendee's privacy setting, and come out
//! as anonymous occupancy and, where allowed, zone transitions in the op log.
//!
//! Invariant 7 (privacy before publish): nothing about a person leaves this module except
//! through [`transition_for`]. Unknown badges are counted in occupancy and never stored.
//! Invariant 6 (ephemeral stays ephemeral): raw sightings never reach the store; only
//! transitions do, and they are purged after `ble.transition_retention_hours`.

mod health;
pub mod outputs;
pub mod record;
mod scanners;
pub mod source;

pub use health::{BeaconHealth, HealthView};
pub use scanners::{ScannerStats, ScannerView};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ble_scanner::presence::{
    PresenceConfig, PresenceEngine, PresenceEvent, Rejected, ScannerConfig, Sighting,
};
use ble_scanner::{Advertisement, Frame, parse};
use serde::Serialize;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::config::BleConfig;
use crate::domain::DomainError;
use crate::health::{SubsystemState, Subsystems};
use crate::metrics::PresenceMetrics;
use crate::oplog::presence::{TRANSITION, purge_before};
use crate::store::Store;

/// Adverts that may wait for the engine; a source that outruns it drops the newest, counted.
pub const ADVERT_QUEUE: usize = 16_384;
/// How often expired transitions are purged.
const PURGE_INTERVAL_SECS: u64 = 600;

/// Anonymous occupancy, as served over HTTP.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Occupancy {
    /// Badges present per zone, known and unknown alike.
    pub zones: BTreeMap<String, usize>,
    /// Badges tracked (present, or still being confirmed).
    pub tracked: usize,
    /// When this was computed, ms since the epoch.
    pub updated_ms: u64,
}

/// The zones whose count in `zones` differs from what was `sent`, with their new count; a zone
/// sent as occupied that is no longer in `zones` has emptied (0). Shared by the hub's zone
/// channels and the MQTT `presence/{zone}` topics, which each remember what they sent.
pub fn occupancy_changes(
    sent: &BTreeMap<String, usize>,
    zones: &BTreeMap<String, usize>,
) -> Vec<(String, usize)> {
    let mut moved: Vec<(String, usize)> = zones
        .iter()
        .filter(|(zone, n)| sent.get(*zone) != Some(n))
        .map(|(zone, n)| (zone.clone(), *n))
        .collect();
    moved.extend(
        sent.iter()
            .filter(|(zone, n)| **n > 0 && !zones.contains_key(*zone))
            .map(|(zone, _)| (zone.clone(), 0)),
    );
    moved
}

/// The shared occupancy snapshot, and a signal for whoever follows it (the hub's zone
/// channels), raised only when a zone's count or the tracked total changed.
#[derive(Clone)]
pub struct OccupancyView(Arc<watch::Sender<Occupancy>>);

impl Default for OccupancyView {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(Occupancy::default())))
    }
}

impl OccupancyView {
    /// A copy of the current snapshot.
    pub fn get(&self) -> Occupancy {
        self.0.borrow().clone()
    }

    /// Follows the snapshot: `changed()` resolves when the counts moved.
    pub fn follow(&self) -> watch::Receiver<Occupancy> {
        self.0.subscribe()
    }

    fn set(&self, occupancy: Occupancy) {
        self.0.send_if_modified(|current| {
            let moved = current.zones != occupancy.zones || current.tracked != occupancy.tracked;
            *current = occupancy;
            moved
        });
    }
}

/// What an attendee lets the appliance keep about where they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privacy {
    /// Zone-level transitions (precise positions are not computed yet).
    Precise,
    /// Zone-level transitions.
    Zone,
    /// Only arriving at and leaving the venue.
    Venue,
    /// Nothing.
    Hidden,
}

impl Privacy {
    fn parse(s: &str) -> Self {
        match s {
            "precise" => Self::Precise,
            "zone" => Self::Zone,
            "venue" => Self::Venue,
            // Unknown values fail closed.
            _ => Self::Hidden,
        }
    }
}

/// The transition an event becomes under a privacy setting: `(kind, zone)`, or nothing.
pub fn transition_for(
    privacy: Privacy,
    event: &PresenceEvent,
) -> Option<(&'static str, Option<String>)> {
    match (privacy, event) {
        (Privacy::Hidden, _) => None,
        (Privacy::Venue, PresenceEvent::Entered { .. }) => Some(("entered", None)),
        (Privacy::Venue, PresenceEvent::Moved { .. }) => None,
        (Privacy::Venue, PresenceEvent::Left { .. }) => Some(("left", None)),
        (_, PresenceEvent::Entered { zone, .. }) => Some(("entered", Some(zone.clone()))),
        (_, PresenceEvent::Moved { to, .. }) => Some(("moved", Some(to.clone()))),
        (_, PresenceEvent::Left { .. }) => Some(("left", None)),
    }
}

/// The engine parameters from `[ble]` and the scanners in use.
pub fn engine_config(ble: &BleConfig, scanners: &[(String, String, f64)]) -> PresenceConfig {
    PresenceConfig {
        scanners: scanners
            .iter()
            .map(|(id, zone, offset)| {
                (
                    id.clone(),
                    ScannerConfig {
                        zone: zone.clone(),
                        rssi_offset_db: *offset,
                    },
                )
            })
            .collect::<HashMap<_, _>>(),
        min_readings: ble.min_readings,
        switch_margin_db: ble.switch_margin_db,
        switch_dwell_ms: ble.switch_dwell_secs * 1000,
        away_timeout_ms: ble.away_timeout_secs * 1000,
        ..PresenceConfig::default()
    }
}

/// Everything the presence task needs.
pub struct PresenceTask {
    /// The store (registry reads, transition writes).
    pub store: Store,
    /// The event whose scope transitions are written in.
    pub event_id: String,
    /// The engine's configuration.
    pub engine: PresenceConfig,
    /// Hours transitions are kept.
    pub retention_hours: u64,
    /// Where occupancy is published.
    pub view: OccupancyView,
    /// Counters.
    pub metrics: PresenceMetrics,
    /// Where the `ble` subsystem state is reported.
    pub subsystems: Subsystems,
    /// Where beacon health is published.
    pub health: HealthView,
    /// Where each scanner's traffic is published (the console shows it).
    pub scanners: ScannerView,
    /// The low-battery threshold, millivolts.
    pub low_battery_mv: u16,
    /// Where every received advert is recorded, if anywhere.
    pub recorder: Option<record::Recorder>,
    /// Where occupancy and alerts are published, when MQTT runs.
    pub mqtt: Option<crate::mqtt::MqttHandle>,
}

impl PresenceTask {
    /// Runs until `shutdown` turns true or the source ends (a replay), feeding `adverts` (the
    /// local source) and `gateways` (adverts forwarded by BLE gateways over MQTT) through the
    /// engine.
    pub async fn run(
        mut self,
        mut adverts: mpsc::Receiver<Advertisement>,
        mut gateways: mpsc::Receiver<Advertisement>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut engine = PresenceEngine::new(self.engine.clone());
        let mut health = health::Tracker::new(self.low_battery_mv);
        let mut registry = Registry::new(&self.store);
        let mut scanner_counts = scanners::ScannerCounts::default();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut purge = tokio::time::interval(Duration::from_secs(PURGE_INTERVAL_SECS));
        let mut pending: Vec<PresenceEvent> = Vec::new();
        let outputs = self.mqtt.clone().map(outputs::MqttOutputs::new);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                advert = adverts.recv() => {
                    let Some(advert) = advert else {
                        self.subsystems.set("ble", SubsystemState::Degraded("the advert source ended".into()));
                        break;
                    };
                    if let Some(recorder) = &mut self.recorder {
                        recorder.record(&advert);
                    }
                    self.feed(&mut engine, &mut health, &mut scanner_counts, &advert, &mut pending, outputs.as_ref());
                }
                Some(advert) = gateways.recv() => {
                    if let Some(recorder) = &mut self.recorder {
                        recorder.record(&advert);
                    }
                    self.feed(&mut engine, &mut health, &mut scanner_counts, &advert, &mut pending, outputs.as_ref());
                }
                _ = tick.tick() => {
                    let now = crate::store::now_ms();
                    scanner_counts.publish(&self.scanners, std::time::Instant::now());
                    pending.extend(engine.tick(now));
                    self.publish(&engine);
                    if health.changed() {
                        self.health.set(health.snapshot());
                    }
                    if !pending.is_empty() {
                        registry.refresh().await;
                        self.record(&registry, std::mem::take(&mut pending)).await;
                    }
                }
                _ = purge.tick() => self.purge().await,
            }
        }
        // Transitions decided before the stop are still written.
        if !pending.is_empty() {
            registry.refresh().await;
            self.record(&registry, pending).await;
        }
    }

    fn feed(
        &self,
        engine: &mut PresenceEngine,
        health: &mut health::Tracker,
        scanner_counts: &mut scanners::ScannerCounts,
        advert: &Advertisement,
        events: &mut Vec<PresenceEvent>,
        outputs: Option<&outputs::MqttOutputs>,
    ) {
        let Some(scanner) = engine.scanner(&advert.scanner) else {
            // Not labelled by name: unknown names must not grow the metric without bound.
            self.metrics.rejected(Rejected::UnknownScanner.as_str());
            return;
        };
        self.metrics.advert(&advert.scanner);
        scanner_counts.advert(&advert.scanner, advert.at_ms);
        let Some(rssi) = advert.rssi else {
            self.metrics.rejected("no_rssi");
            return;
        };
        for frame in parse(advert) {
            if let Frame::Telemetry(telemetry) = &frame {
                if let Some(beacon) = health.telemetry(&advert.address, telemetry, advert.at_ms) {
                    self.metrics.low_battery.inc();
                    if let Some(outputs) = outputs {
                        outputs.low_battery(
                            beacon.to_string(),
                            telemetry.battery_mv.unwrap_or(0),
                            self.low_battery_mv,
                        );
                    }
                    tracing::warn!(
                        beacon = %beacon,
                        battery_mv = telemetry.battery_mv.unwrap_or(0),
                        threshold_mv = self.low_battery_mv,
                        "beacon battery low; replace it"
                    );
                }
            }
            if let Frame::Id {
                id,
                measured_power_1m,
            } = frame
            {
                health.seen(&id, &advert.address, advert.at_ms);
                let sighting = Sighting {
                    beacon: id,
                    scanner,
                    rssi,
                    measured_power_1m,
                    at_ms: advert.at_ms,
                };
                match engine.sighting(&sighting) {
                    Ok(new) => events.extend(new),
                    Err(reason) => self.metrics.rejected(reason.as_str()),
                }
            }
        }
    }

    fn publish(&self, engine: &PresenceEngine) {
        let occupancy = Occupancy {
            zones: engine
                .occupancy()
                .into_iter()
                .map(|(zone, n)| (zone.to_string(), n))
                .collect(),
            tracked: engine.tracked(),
            updated_ms: crate::store::now_ms(),
        };
        self.metrics.tracked.set(occupancy.tracked as i64);
        self.view.set(occupancy);
    }

    /// Writes the transitions of known attendees, each under their privacy setting, in one
    /// transaction.
    async fn record(&self, registry: &Registry, events: Vec<PresenceEvent>) {
        let mut ops = Vec::new();
        for event in &events {
            let (beacon, at_ms) = match event {
                PresenceEvent::Entered { beacon, at_ms, .. }
                | PresenceEvent::Moved { beacon, at_ms, .. }
                | PresenceEvent::Left { beacon, at_ms, .. } => (beacon, *at_ms),
            };
            let Some((attendee, privacy)) = registry.badges.get(&beacon.to_string()) else {
                continue; // An unknown badge: counted in occupancy, never stored.
            };
            if let Some((kind, zone)) = transition_for(*privacy, event) {
                ops.push((
                    attendee.clone(),
                    json!({"kind": kind, "zone_id": zone, "at_ms": at_ms}),
                ));
            }
        }
        if ops.is_empty() {
            return;
        }
        let count = ops.len() as u64;
        let event_id = self.event_id.clone();
        // Followers hear of each transition from the committed-op stream, after the commit.
        let result = self
            .store
            .write(move |ctx| {
                for (attendee, body) in ops {
                    let op = ctx.new_op(&event_id, TRANSITION, &attendee, body);
                    ctx.apply_owned(op)?;
                }
                Ok::<_, DomainError>(())
            })
            .await;
        match result {
            Ok(()) => {
                self.metrics.transitions.inc_by(count);
            }
            Err(e) => tracing::error!(error = %e, count, "zone transitions could not be written"),
        }
    }

    async fn purge(&self) {
        let retention_ms = self.retention_hours * 3_600_000;
        let result = self
            .store
            .write(move |ctx| {
                let cutoff = ctx.now_ms().saturating_sub(retention_ms) as i64;
                purge_before(ctx.conn(), cutoff)
            })
            .await;
        match result {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "zone transitions past their retention purged"),
            Err(e) => tracing::warn!(error = %e, "cannot purge old zone transitions; will retry"),
        }
    }
}

/// Badge id → (attendee id, privacy), from the attendee registry.
struct Registry {
    badges: HashMap<String, (String, Privacy)>,
    /// Whether `badges` matches the store as of the last stream poll.
    loaded: bool,
    store: Store,
    /// The committed-op stream: an `attendee.upsert` (local or synced) means reload.
    changes: crate::store::Subscription,
}

impl Registry {
    fn new(store: &Store) -> Self {
        Self {
            badges: HashMap::new(),
            loaded: false,
            store: store.clone(),
            changes: store.subscribe("presence_registry"),
        }
    }

    /// Reloads the map when an attendee changed since it was loaded: a new privacy setting, a
    /// badge handed to someone else or a deleted attendee applies to the very next transition,
    /// not after a timed reload. The writer publishes a commit's ops before it answers anyone,
    /// so a change the admin API has confirmed is always seen here. (Polled first, so a change
    /// during the load reloads again.)
    async fn refresh(&mut self) {
        let polled = self
            .changes
            .poll(|op| op.kind == crate::oplog::ATTENDEE_UPSERT);
        if self.loaded && !polled.matched && !polled.missed {
            return;
        }
        match Registry::load(&self.store).await {
            Ok(badges) => {
                self.badges = badges;
                self.loaded = true;
            }
            Err(e) => {
                // Privacy fails closed: with settings that may be stale, no badge is anyone's
                // (their transitions are counted as unknown, never stored or sent) until a load
                // succeeds, tried again before the next transitions.
                tracing::warn!(error = %e, "cannot reload the badge registry; badges count as unknown until it loads");
                self.badges.clear();
                self.loaded = false;
            }
        }
    }

    async fn load(store: &Store) -> Result<HashMap<String, (String, Privacy)>, DomainError> {
        let stored = store.read(crate::domain::attendees::badges).await?;
        Ok(stored
            .into_iter()
            .map(|(badge, (attendee, privacy))| (badge, (attendee, Privacy::parse(&privacy))))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ble_scanner::BeaconId;

    fn event(kind: &str) -> PresenceEvent {
        let beacon = BeaconId::Eid([1; 8]);
        match kind {
            "entered" => PresenceEvent::Entered {
                beacon,
                zone: "hall-a".into(),
                at_ms: 1,
            },
            "moved" => PresenceEvent::Moved {
                beacon,
                from: "hall-a".into(),
                to: "foyer".into(),
                at_ms: 2,
                dwell_ms: 1,
            },
            _ => PresenceEvent::Left {
                beacon,
                zone: "foyer".into(),
                at_ms: 3,
                dwell_ms: 1,
            },
        }
    }

    #[test]
    fn each_privacy_level_keeps_only_what_it_allows() {
        let cases = [
            (
                Privacy::Precise,
                [
                    Some(("entered", Some("hall-a"))),
                    Some(("moved", Some("foyer"))),
                    Some(("left", None)),
                ],
            ),
            (
                Privacy::Zone,
                [
                    Some(("entered", Some("hall-a"))),
                    Some(("moved", Some("foyer"))),
                    Some(("left", None)),
                ],
            ),
            (
                Privacy::Venue,
                [Some(("entered", None)), None, Some(("left", None))],
            ),
            (Privacy::Hidden, [None, None, None]),
        ];
        for (privacy, expected) in cases {
            for (kind, want) in ["entered", "moved", "left"].into_iter().zip(expected) {
                let got = transition_for(privacy, &event(kind));
                let got = got.as_ref().map(|(k, z)| (*k, z.as_deref()));
                assert_eq!(got, want, "{privacy:?} {kind}");
            }
        }
    }

    #[test]
    fn unknown_privacy_values_fail_closed() {
        assert_eq!(Privacy::parse("everyone"), Privacy::Hidden);
        assert_eq!(Privacy::parse(""), Privacy::Hidden);
    }
}
