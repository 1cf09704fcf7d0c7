use super::*;

/// Deterministic noise in [-amplitude, amplitude] dB (xorshift; the same trace every run).
struct Noise(u64);

impl Noise {
    fn next(&mut self, amplitude: i16) -> i16 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % (2 * amplitude as u64 + 1)) as i16 - amplitude
    }
}

fn two_zones() -> PresenceEngine {
    two_zones_with_offset_b(0.0)
}

fn two_zones_with_offset_b(offset_b: f64) -> PresenceEngine {
    let mut config = PresenceConfig::default();
    for (scanner, zone, offset) in [("scanner-a", "A", 0.0), ("scanner-b", "B", offset_b)] {
        config.scanners.insert(
            scanner.into(),
            ScannerConfig {
                zone: zone.into(),
                rssi_offset_db: offset,
            },
        );
    }
    PresenceEngine::new(config)
}

/// Badge `n`: an iBeacon id.
fn badge(n: u16) -> BeaconId {
    BeaconId::IBeacon {
        uuid: uuid::Uuid::nil(),
        major: 1,
        minor: n,
    }
}

fn sighting(
    engine: &PresenceEngine,
    beacon: u16,
    scanner: &str,
    rssi: i16,
    at_ms: u64,
) -> Sighting {
    Sighting {
        beacon: badge(beacon),
        scanner: engine.scanner(scanner).unwrap_or(ScannerIdx(u16::MAX)),
        rssi,
        measured_power_1m: -59,
        at_ms,
    }
}

/// Drives the engine with one advert per second per scanner for `secs` seconds, the RSSI at
/// each scanner given by `rssi(second, scanner)`, plus noise; ticks once a second. Returns
/// every event.
fn run(
    engine: &mut PresenceEngine,
    start_s: u64,
    secs: u64,
    noise: &mut Noise,
    rssi: impl Fn(u64, &str) -> Option<i16>,
) -> Vec<PresenceEvent> {
    let mut events = Vec::new();
    for second in start_s..start_s + secs {
        for (i, scanner) in ["scanner-a", "scanner-b"].into_iter().enumerate() {
            // The two scanners hear the advert a few ms apart, as real ones do.
            let at = second * 1000 + i as u64 * 7;
            if let Some(base) = rssi(second, scanner) {
                let s = sighting(engine, 1, scanner, base + noise.next(4), at);
                events.extend(engine.sighting(&s).expect("accepted"));
            }
        }
        events.extend(engine.tick(second * 1000 + 500));
    }
    events
}

fn kinds(events: &[PresenceEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            PresenceEvent::Entered { zone, .. } => format!("entered {zone}"),
            PresenceEvent::Moved { from, to, .. } => format!("moved {from}->{to}"),
            PresenceEvent::Left { zone, .. } => format!("left {zone}"),
        })
        .collect()
}

#[test]
fn a_walk_from_a_to_b_and_back_yields_exactly_those_transitions() {
    let mut engine = two_zones();
    let mut noise = Noise(42);
    // 0-59 s near A, 60-119 s near B, 120-179 s near A; the far scanner hears it weakly.
    let events = run(&mut engine, 0, 180, &mut noise, |s, scanner| {
        let near_a = !(60..120).contains(&s);
        Some(match (near_a, scanner) {
            (true, "scanner-a") | (false, "scanner-b") => -60,
            _ => -80,
        })
    });
    assert_eq!(kinds(&events), ["entered A", "moved A->B", "moved B->A"]);
    // Each switch waits for the dwell (5 s) after the lead is established, not longer than ~10 s.
    for e in &events {
        if let PresenceEvent::Moved { at_ms, to, .. } = e {
            let crossing = if to == "B" { 60_000 } else { 120_000 };
            assert!(
                (crossing + 5_000..=crossing + 12_000).contains(at_ms),
                "{e:?}"
            );
        }
    }
    assert_eq!(engine.zone_of(&badge(1)), Some("A"));
    assert_eq!(engine.occupancy().get("A"), Some(&1));
    assert_eq!(engine.occupancy().get("B"), Some(&0));
}

#[test]
fn standing_on_the_boundary_does_not_flap() {
    let mut engine = two_zones();
    let mut noise = Noise(7);
    // Equal mean signal at both scanners, ±4 dB noise, for ten minutes.
    let events = run(&mut engine, 0, 600, &mut noise, |_, _| Some(-70));
    assert_eq!(kinds(&events).len(), 1, "{:?}", kinds(&events));
}

#[test]
fn enters_within_two_seconds_at_one_advert_per_second() {
    let mut engine = two_zones();
    assert_eq!(
        engine
            .sighting(&sighting(&engine, 2, "scanner-a", -60, 10_000))
            .expect("ok"),
        vec![],
        "one advert is not presence"
    );
    let events = engine
        .sighting(&sighting(&engine, 2, "scanner-a", -61, 11_000))
        .expect("ok");
    assert_eq!(
        events,
        vec![PresenceEvent::Entered {
            beacon: badge(2),
            zone: "A".into(),
            at_ms: 11_000
        }]
    );
}

#[test]
fn a_single_stray_advert_never_enters_and_is_forgotten() {
    let mut engine = two_zones();
    engine
        .sighting(&sighting(&engine, 3, "scanner-b", -90, 0))
        .expect("ok");
    assert_eq!(engine.tick(29_000), vec![]);
    assert_eq!(engine.tracked(), 1);
    assert_eq!(
        engine.tick(30_000),
        vec![],
        "no Left for a beacon that never entered"
    );
    assert_eq!(engine.tracked(), 0);
}

#[test]
fn leaves_after_the_away_timeout_with_its_dwell() {
    let mut engine = two_zones();
    let mut noise = Noise(1);
    let events = run(&mut engine, 0, 20, &mut noise, |_, scanner| {
        (scanner == "scanner-a").then_some(-60)
    });
    assert_eq!(kinds(&events), ["entered A"]);
    assert_eq!(engine.tick(40_000), vec![], "19 s + 30 s have not passed");
    let left = engine.tick(49_500);
    assert_eq!(
        left,
        vec![PresenceEvent::Left {
            beacon: badge(1),
            zone: "A".into(),
            at_ms: 49_000,
            dwell_ms: 48_000,
        }]
    );
    assert!(engine.occupancy().values().all(|n| *n == 0));
}

#[test]
fn bad_sightings_are_rejected_and_change_nothing() {
    let mut engine = two_zones();
    assert_eq!(
        engine.sighting(&sighting(&engine, 2, "nowhere", -60, 0)),
        Err(Rejected::UnknownScanner)
    );
    for rssi in [-127, 20, i16::MIN, i16::MAX] {
        assert_eq!(
            engine.sighting(&sighting(&engine, 2, "scanner-a", rssi, 0)),
            Err(Rejected::AbsurdRssi)
        );
    }
    engine
        .sighting(&sighting(&engine, 2, "scanner-a", -60, 5_000))
        .expect("ok");
    assert_eq!(
        engine.sighting(&sighting(&engine, 2, "scanner-a", -60, 4_000)),
        Err(Rejected::OutOfOrder)
    );
    assert_eq!(engine.tracked(), 1);
}

#[test]
fn the_beacon_cap_is_enforced() {
    let mut engine = two_zones();
    engine.config.max_beacons = 2;
    engine
        .sighting(&sighting(&engine, 11, "scanner-a", -60, 0))
        .expect("ok");
    engine
        .sighting(&sighting(&engine, 12, "scanner-a", -60, 0))
        .expect("ok");
    assert_eq!(
        engine.sighting(&sighting(&engine, 13, "scanner-a", -60, 0)),
        Err(Rejected::TooManyBeacons)
    );
    engine
        .sighting(&sighting(&engine, 11, "scanner-a", -60, 1))
        .expect("known beacons still update");
}

#[test]
fn scanner_offsets_calibrate_a_deaf_antenna() {
    // The badge is nearer scanner-b, but b's antenna reads 10 dB low (-78 raw against a's -72).
    // Uncalibrated, A looks stronger; with b's +10 dB offset, B is (-68 against -72).
    let final_zone = |offset_b: f64| {
        let mut engine = two_zones_with_offset_b(offset_b);
        for t in (0..10_000).step_by(1_000) {
            engine
                .sighting(&sighting(&engine, 2, "scanner-a", -72, t))
                .expect("ok");
            engine
                .sighting(&sighting(&engine, 2, "scanner-b", -78, t + 5))
                .expect("ok");
        }
        engine.zone_of(&badge(2)).map(str::to_string)
    };
    assert_eq!(final_zone(0.0).as_deref(), Some("A"));
    assert_eq!(final_zone(10.0).as_deref(), Some("B"));
}

#[test]
fn entry_picks_the_strongest_zone_not_the_first_to_hear() {
    let mut engine = two_zones();
    // scanner-a hears the badge first, weakly; scanner-b right after, strongly. a reaches two
    // readings first, but b is stronger: the badge enters B once b has two readings.
    let mut feed = |scanner: &str, rssi: i16, at: u64| {
        let s = sighting(&engine, 2, scanner, rssi, at);
        engine.sighting(&s).expect("ok")
    };
    assert_eq!(feed("scanner-a", -85, 0), vec![]);
    assert_eq!(feed("scanner-b", -55, 10), vec![]);
    assert_eq!(
        feed("scanner-a", -85, 1_000),
        vec![],
        "a is not the strongest zone"
    );
    assert_eq!(
        feed("scanner-b", -56, 1_010),
        vec![PresenceEvent::Entered {
            beacon: badge(2),
            zone: "B".into(),
            at_ms: 1_010
        }]
    );
}

#[test]
fn distance_follows_the_log_distance_model() {
    let mut engine = two_zones();
    engine
        .sighting(&sighting(&engine, 2, "scanner-a", -59, 0))
        .expect("ok");
    let one_metre = engine
        .distance_m(&badge(2), engine.scanner("scanner-a").expect("configured"))
        .expect("tracked");
    assert!((one_metre - 1.0).abs() < 1e-9, "{one_metre}");
    engine
        .sighting(&sighting(&engine, 4, "scanner-a", -86, 0))
        .expect("ok");
    let ten_metres = engine
        .distance_m(&badge(4), engine.scanner("scanner-a").expect("configured"))
        .expect("tracked");
    assert!((ten_metres - 10.0).abs() < 1e-6, "{ten_metres}");
}
