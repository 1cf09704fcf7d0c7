//! Advert sources that need no radio: the demo simulator and recording replay. (The BlueZ source
//! and MQTT gateways feed the same channel when they land.)

use std::time::Duration;

use ble_scanner::advert::APPLE_COMPANY_ID;
use ble_scanner::beacon::ibeacon_payload;
use ble_scanner::{Advertisement, BeaconId, replay};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch};

/// Mean seconds a simulated badge stays in a zone before walking to another.
const SIM_MEAN_STAY_SECS: u32 = 180;
/// One in this many simulated badges is away (not advertising) at any time.
const SIM_AWAY_ONE_IN: u32 = 10;
/// Signal at a scanner in the badge's zone, and at the others, dBm (± noise).
const SIM_RSSI_NEAR_DBM: i16 = -62;
const SIM_RSSI_FAR_DBM: i16 = -88;
const SIM_NOISE_DB: i16 = 3;

/// Simulates badges walking between zones: each second, every present badge is heard by every
/// scanner, strongly in its own zone and weakly elsewhere; now and then a badge walks to another
/// zone or leaves and comes back. Only iBeacon badges can be simulated; others are skipped.
pub async fn simulate(
    badges: Vec<BeaconId>,
    scanners: Vec<(String, String)>,
    tx: mpsc::Sender<Advertisement>,
    mut shutdown: watch::Receiver<bool>,
) {
    let zones: Vec<String> = {
        let mut z: Vec<String> = scanners.iter().map(|(_, zone)| zone.clone()).collect();
        z.sort();
        z.dedup();
        z
    };
    if zones.is_empty() {
        return;
    }
    // StdRng, not thread_rng: the task moves between worker threads.
    let mut rng = StdRng::from_entropy();
    let mut state: Vec<(Vec<u8>, usize, bool)> = badges
        .into_iter()
        .filter_map(|id| match id {
            BeaconId::IBeacon { uuid, major, minor } => {
                Some(ibeacon_payload(uuid, major, minor, -59))
            }
            _ => None,
        })
        .map(|payload| {
            (
                payload,
                rng.gen_range(0..zones.len()),
                rng.gen_ratio(1, SIM_AWAY_ONE_IN),
            )
        })
        .collect();
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = every.tick() => {}
        }
        let now = crate::store::now_ms();
        for (n, (payload, zone, away)) in state.iter_mut().enumerate() {
            if rng.gen_ratio(1, SIM_MEAN_STAY_SECS) {
                *zone = rng.gen_range(0..zones.len());
            }
            if rng.gen_ratio(1, SIM_MEAN_STAY_SECS * 2) {
                *away = !*away;
            }
            if *away {
                continue;
            }
            for (scanner, scanner_zone) in &scanners {
                let base = if *scanner_zone == zones[*zone] {
                    SIM_RSSI_NEAR_DBM
                } else {
                    SIM_RSSI_FAR_DBM
                };
                let mut advert = Advertisement {
                    scanner: scanner.clone(),
                    address: format!("d0:00:00:00:{:02x}:{:02x}", (n >> 8) & 0xff, n & 0xff),
                    rssi: Some(base + rng.gen_range(-SIM_NOISE_DB..=SIM_NOISE_DB)),
                    at_ms: now,
                    ..Advertisement::default()
                };
                advert
                    .manufacturer_data
                    .insert(APPLE_COMPANY_ID, payload.clone());
                match tx.try_send(advert) {
                    // The engine is behind: a simulated advert is not worth waiting for.
                    Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                    // The engine is gone: nothing more to simulate for.
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
        }
    }
}

/// Plays a recording back at its recorded pace, with timestamps moved to now. Bad lines are
/// logged (rate-limited by count) and skipped.
pub async fn replay_file(
    path: std::path::PathBuf,
    tx: mpsc::Sender<Advertisement>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let file = std::io::BufReader::new(std::fs::File::open(&path)?);
    let (lines_tx, mut lines_rx) = mpsc::channel(1024);
    // File reading is blocking IO: keep it off the runtime.
    tokio::task::spawn_blocking(move || {
        for item in replay::Reader::new(file) {
            if lines_tx.blocking_send(item).is_err() {
                break;
            }
        }
    });
    let mut offset: Option<i64> = None;
    let mut bad = 0u64;
    while let Some(item) = lines_rx.recv().await {
        let mut advert = match item {
            Ok(a) => a,
            Err(e) => {
                bad += 1;
                if bad <= 10 {
                    tracing::warn!(error = %e, file = %path.display(), "skipping a bad replay line");
                }
                continue;
            }
        };
        let now = crate::store::now_ms() as i64;
        let shift = *offset.get_or_insert(now - advert.at_ms as i64);
        let due = advert.at_ms as i64 + shift;
        if due > now {
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_millis((due - now) as u64)) => {}
            }
        }
        advert.at_ms = due.max(0) as u64;
        if tx.send(advert).await.is_err() {
            break;
        }
    }
    if bad > 0 {
        tracing::warn!(bad, file = %path.display(), "replay finished with bad lines skipped");
    }
    Ok(())
}
