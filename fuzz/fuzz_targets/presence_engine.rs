//! Any sequence of sightings and ticks: the engine never panics, and occupancy always equals
//! the number of badges it places in a zone.
#![no_main]

use ble_scanner::BeaconId;
use ble_scanner::presence::{PresenceConfig, PresenceEngine, ScannerConfig, Sighting};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut config = PresenceConfig {
        max_beacons: 16,
        ..PresenceConfig::default()
    };
    for (i, zone) in ["a", "a", "b", "c"].iter().enumerate() {
        config.scanners.insert(
            format!("s{i}"),
            ScannerConfig {
                zone: (*zone).into(),
                rssi_offset_db: i as f64 - 1.0,
            },
        );
    }
    let mut engine = PresenceEngine::new(config);
    let scanners: Vec<_> = (0..4)
        .filter_map(|i| engine.scanner(&format!("s{i}")))
        .collect();
    let mut now = 0u64;
    for chunk in data.chunks_exact(4) {
        now += u64::from(chunk[3]) * 97;
        if chunk[0] == 0xff {
            engine.tick(now);
            continue;
        }
        let sighting = Sighting {
            beacon: BeaconId::Eid([chunk[1] % 24; 8]),
            scanner: scanners[usize::from(chunk[0]) % scanners.len()],
            rssi: i16::from(chunk[2] as i8) - 40,
            measured_power_1m: -59,
            at_ms: now,
        };
        let _ = engine.sighting(&sighting);
    }
    let placed = (0..24u8)
        .filter(|b| engine.zone_of(&BeaconId::Eid([*b; 8])).is_some())
        .count();
    assert_eq!(engine.occupancy().values().sum::<usize>(), placed);
});
