//! Parser and presence-engine throughput (`cargo bench -p ble-scanner --bench pipeline`).
//!
//! A venue-sized trace: 5,000 iBeacon badges heard by 10 scanners in 5 zones, one advert per
//! badge per scanner per second, RSSI varying per badge and scanner. Criterion measures
//! adverts per second through `parse` + `PresenceEngine::sighting` on one thread; the replay
//! check feeds 60 s of that trace (3,000,000 adverts) and reports how long it took against the
//! 60 s of real time it represents; the memory check reports RSS growth per tracked beacon.

use std::hint::black_box;
use std::time::Instant;

use ble_scanner::advert::APPLE_COMPANY_ID;
use ble_scanner::presence::{PresenceConfig, PresenceEngine, ScannerConfig, Sighting};
use ble_scanner::{Advertisement, Frame, parse};
use criterion::{Criterion, Throughput};

const BADGES: u32 = 5_000;
const SCANNERS: u32 = 10;

fn config() -> PresenceConfig {
    let mut config = PresenceConfig::default();
    for s in 0..SCANNERS {
        config.scanners.insert(
            format!("scanner-{s}"),
            ScannerConfig {
                zone: format!("zone-{}", s / 2),
                rssi_offset_db: 0.0,
            },
        );
    }
    config
}

fn advert(badge: u32, scanner: u32, second: u64) -> Advertisement {
    let mut data = vec![0x02, 0x15];
    data.extend([
        0xf7, 0x82, 0x6d, 0xa6, 0x4f, 0xa2, 0x4e, 0x98, 0x80, 0x24, 0xbc, 0x5b, 0x71, 0xe0, 0x89,
        0x3e,
    ]);
    data.extend(((badge >> 16) as u16).to_be_bytes());
    data.extend((badge as u16).to_be_bytes());
    data.push(0xC5);
    let mut a = Advertisement {
        scanner: format!("scanner-{scanner}"),
        address: format!("c0:00:00:00:{:02x}:{:02x}", badge >> 8 & 0xff, badge & 0xff),
        // Each badge is nearest one scanner; the others hear it weaker.
        rssi: Some(-55 - ((badge % SCANNERS).abs_diff(scanner) as i16) * 4 - (second % 3) as i16),
        at_ms: second * 1000 + u64::from(scanner),
        ..Advertisement::default()
    };
    a.manufacturer_data.insert(APPLE_COMPANY_ID, data);
    a
}

/// The per-advert work of the pipeline: decode, then feed the engine.
fn feed(engine: &mut PresenceEngine, a: &Advertisement) -> usize {
    let mut events = 0;
    let Some(scanner) = engine.scanner(&a.scanner) else {
        return 0;
    };
    for frame in parse(a) {
        if let (
            Frame::Id {
                id,
                measured_power_1m,
            },
            Some(rssi),
        ) = (frame, a.rssi)
        {
            let s = Sighting {
                beacon: id,
                scanner,
                rssi,
                measured_power_1m,
                at_ms: a.at_ms,
            };
            events += engine.sighting(&s).map(|e| e.len()).unwrap_or(0);
        }
    }
    events
}

fn trace(seconds: std::ops::Range<u64>) -> Vec<Advertisement> {
    let mut out = Vec::new();
    for second in seconds {
        for badge in 0..BADGES {
            for scanner in 0..SCANNERS {
                out.push(advert(badge, scanner, second));
            }
        }
    }
    out
}

fn throughput(c: &mut Criterion) {
    let warm = trace(0..3);
    let batch = trace(3..4);
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.sample_size(10);
    group.bench_function("parse", |b| {
        b.iter(|| {
            batch
                .iter()
                .map(|a| parse(black_box(a)).len())
                .sum::<usize>()
        })
    });
    group.bench_function("parse_and_engine", |b| {
        b.iter_batched(
            || {
                let mut engine = PresenceEngine::new(config());
                for a in &warm {
                    feed(&mut engine, a);
                }
                engine
            },
            |mut engine| batch.iter().map(|a| feed(&mut engine, a)).sum::<usize>(),
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// 60 s of the venue trace as fast as one thread can take it, with a tick per second.
fn replay_check() {
    let mut engine = PresenceEngine::new(config());
    let mut adverts = 0u64;
    let mut busy = std::time::Duration::ZERO;
    for second in 0..60 {
        let chunk = trace(second..second + 1);
        let started = Instant::now();
        for a in &chunk {
            feed(&mut engine, a);
        }
        engine.tick(second * 1000 + 999);
        busy += started.elapsed();
        adverts += chunk.len() as u64;
    }
    eprintln!(
        "replay: {adverts} adverts ({BADGES} badges x {SCANNERS} scanners x 60 s) processed in {:.2} s of CPU on one thread = {:.0} adverts/s; {} badges tracked, occupancy {:?}",
        busy.as_secs_f64(),
        adverts as f64 / busy.as_secs_f64(),
        engine.tracked(),
        engine.occupancy(),
    );
}

/// Resident memory of this process in KiB (`/proc/self/status`).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Memory per tracked beacon: the RSS growth of an engine tracking 100,000 badges, each heard by
/// all 10 scanners often enough to fill its reading history.
fn memory_check() {
    const TRACKED: u32 = 100_000;
    let before = rss_kib();
    let mut engine = PresenceEngine::new(config());
    for second in 0..16u64 {
        for badge in 0..TRACKED {
            for scanner in 0..SCANNERS {
                feed(&mut engine, &advert(badge, scanner, second));
            }
        }
    }
    let grown = rss_kib().saturating_sub(before);
    eprintln!(
        "memory: {} beacons x {SCANNERS} scanners tracked, RSS grew {grown} KiB = {:.0} bytes per beacon ({:.0} per beacon-scanner link)",
        engine.tracked(),
        grown as f64 * 1024.0 / f64::from(TRACKED),
        grown as f64 * 1024.0 / f64::from(TRACKED * SCANNERS),
    );
    black_box(engine);
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    throughput(&mut criterion);
    criterion.final_summary();
    if std::env::args().any(|a| a == "--bench") {
        replay_check();
        memory_check();
    }
}
