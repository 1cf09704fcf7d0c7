//! The BlueZ source: btleplug over D-Bus, turning every advertisement event into an
//! [`Advertisement`].
//!
//! What btleplug on BlueZ does and does not do (`shared/research/ble.md` §1): it never reports a
//! lost device or a stopped scan, its event stream can go quiet, a service-UUID scan filter drops
//! iBeacons, and RSSI arrives as a separate event just before the data events. So this source:
//! - scans with `ScanFilter::default()`;
//! - remembers each peripheral's last RSSI from `RssiUpdate`, so adverts need no D-Bus round trip;
//! - runs a watchdog: no advert for `silence_restart_secs` restarts discovery, and a second silent
//!   period recreates the whole session (new D-Bus connection);
//! - recreates the session, with backoff, when the event stream ends (bluetoothd restarted), the
//!   adapter powers off or disappears, or any call fails; the state is reported, never fatal.

use std::collections::HashMap;
use std::time::Duration;

use btleplug::api::{Central, CentralEvent, CentralState, Manager as _, ScanFilter};
use btleplug::platform::{Manager, PeripheralId};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::advert::Advertisement;

/// Default silence before discovery is restarted, seconds.
pub const DEFAULT_SILENCE_RESTART_SECS: u64 = 60;
/// Longest wait between session attempts, seconds.
const MAX_RETRY_SECS: u64 = 30;
/// Peripherals whose last RSSI is remembered; random addresses rotate, so the map is cleared
/// when it grows past this.
const MAX_REMEMBERED_RSSI: usize = 50_000;

/// How to scan.
#[derive(Debug, Clone)]
pub struct BluezOptions {
    /// The adapter to use (`hci0`); also the scanner id stamped on adverts.
    pub adapter: String,
    /// Silence (no advert at all) after which discovery is restarted.
    pub silence_restart_secs: u64,
}

/// The source's state, for readiness and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceState {
    /// Connecting to BlueZ.
    Starting,
    /// Discovery is running; discovery restarts by the silence watchdog so far (all sessions).
    Scanning {
        /// Cumulative watchdog restarts.
        watchdog_restarts: u64,
    },
    /// Not scanning; the reason, and the source keeps retrying.
    Degraded(String),
}

enum Exit {
    Stopped,
}

/// Scans until `stop` turns true, sending adverts to `sink` (dropping them when it is full:
/// an engine that is behind wants fresh adverts, not old ones) and reporting `state`.
pub async fn run(
    options: BluezOptions,
    sink: mpsc::Sender<Advertisement>,
    state: watch::Sender<SourceState>,
    mut stop: watch::Receiver<bool>,
) {
    let mut retry = Duration::from_secs(1);
    let mut restarts = 0u64;
    loop {
        let _ = state.send(SourceState::Starting);
        match session(&options, &sink, &state, &mut stop, &mut restarts).await {
            Ok(Exit::Stopped) => return,
            Err(reason) => {
                tracing::warn!(adapter = %options.adapter, %reason, retry_secs = retry.as_secs(), "BLE scanning interrupted");
                let _ = state.send(SourceState::Degraded(reason.to_string()));
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(Duration::from_secs(MAX_RETRY_SECS));
    }
}

/// Why a scanning session ended (the loop retries with backoff and reports it as degraded).
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot {doing}: {source}")]
    Bluez {
        doing: &'static str,
        source: btleplug::Error,
    },
    #[error("adapter {0} not found; is it plugged in?")]
    NoAdapter(String),
    #[error("the BlueZ event stream ended (bluetoothd restarted?)")]
    EventsEnded,
    #[error("adapter {0} powered off")]
    PoweredOff(String),
    #[error("no adverts for {0} s even after restarting discovery")]
    Silent(u64),
}

async fn session(
    options: &BluezOptions,
    sink: &mpsc::Sender<Advertisement>,
    state: &watch::Sender<SourceState>,
    stop: &mut watch::Receiver<bool>,
    restarts: &mut u64,
) -> Result<Exit, SessionError> {
    let bluez = |doing| move |source| SessionError::Bluez { doing, source };
    let manager = Manager::new()
        .await
        .map_err(bluez("reach BlueZ over D-Bus"))?;
    let mut adapter = None;
    for candidate in manager.adapters().await.map_err(bluez("list adapters"))? {
        let info = candidate.adapter_info().await.unwrap_or_default();
        if info.split_whitespace().next() == Some(options.adapter.as_str()) {
            adapter = Some(candidate);
            break;
        }
    }
    let adapter = adapter.ok_or_else(|| SessionError::NoAdapter(options.adapter.clone()))?;
    let mut events = adapter
        .events()
        .await
        .map_err(bluez("subscribe to events"))?;
    adapter
        .start_scan(ScanFilter::default())
        .await
        .map_err(bluez("start discovery"))?;
    let _ = state.send(SourceState::Scanning {
        watchdog_restarts: *restarts,
    });
    tracing::info!(adapter = %options.adapter, "BLE discovery started");

    let silence = Duration::from_secs(options.silence_restart_secs.max(1));
    let mut watchdog = tokio::time::interval(silence / 2);
    let mut last_advert = Instant::now();
    let mut restarted_after_silence = false;
    let mut rssi: HashMap<PeripheralId, i16> = HashMap::new();
    loop {
        tokio::select! {
            _ = stop.changed() => {
                let _ = adapter.stop_scan().await;
                return Ok(Exit::Stopped);
            }
            event = events.next() => {
                let Some(event) = event else {
                    return Err(SessionError::EventsEnded);
                };
                let advert = match event {
                    CentralEvent::RssiUpdate { id, rssi: value } => {
                        if rssi.len() >= MAX_REMEMBERED_RSSI {
                            rssi.clear();
                        }
                        rssi.insert(id, value);
                        None
                    }
                    CentralEvent::ManufacturerDataAdvertisement { id, manufacturer_data } => {
                        let mut a = advert(&options.adapter, &id, rssi.get(&id).copied());
                        a.manufacturer_data = manufacturer_data.into_iter().collect();
                        Some(a)
                    }
                    CentralEvent::ServiceDataAdvertisement { id, service_data } => {
                        let mut a = advert(&options.adapter, &id, rssi.get(&id).copied());
                        a.service_data = service_data.into_iter().collect();
                        Some(a)
                    }
                    CentralEvent::StateUpdate(CentralState::PoweredOff) => {
                        return Err(SessionError::PoweredOff(options.adapter.clone()));
                    }
                    _ => None,
                };
                if let Some(a) = advert {
                    last_advert = Instant::now();
                    restarted_after_silence = false;
                    // Full: the engine is behind; newer adverts will follow.
                    let _ = sink.try_send(a);
                }
            }
            _ = watchdog.tick() => {
                if last_advert.elapsed() < silence {
                    continue;
                }
                if restarted_after_silence {
                    return Err(SessionError::Silent(2 * silence.as_secs()));
                }
                tracing::info!(adapter = %options.adapter, secs = silence.as_secs(), "no adverts; restarting discovery");
                let _ = adapter.stop_scan().await;
                adapter
                    .start_scan(ScanFilter::default())
                    .await
                    .map_err(bluez("restart discovery"))?;
                restarted_after_silence = true;
                last_advert = Instant::now();
                *restarts += 1;
                let _ = state.send(SourceState::Scanning {
                    watchdog_restarts: *restarts,
                });
            }
        }
    }
}

fn advert(adapter: &str, id: &PeripheralId, rssi: Option<i16>) -> Advertisement {
    Advertisement {
        scanner: adapter.to_string(),
        address: address_of(&id.to_string()),
        rssi,
        at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        ..Advertisement::default()
    }
}

/// `hci0/dev_C0_FF_EE_00_00_01` → `C0:FF:EE:00:00:01` (btleplug's peripheral ids are D-Bus paths).
fn address_of(peripheral: &str) -> String {
    peripheral
        .rsplit_once("dev_")
        .map(|(_, mac)| mac.replace('_', ":"))
        .unwrap_or_else(|| peripheral.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_come_from_the_object_path() {
        assert_eq!(
            super::address_of("hci0/dev_C0_FF_EE_00_00_01"),
            "C0:FF:EE:00:00:01"
        );
        assert_eq!(
            super::address_of("/org/bluez/hci1/dev_AA_BB_CC_DD_EE_FF"),
            "AA:BB:CC:DD:EE:FF"
        );
        assert_eq!(super::address_of("odd"), "odd");
    }
}
