//! The BLE end-to-end check against a real adapter and a real beacon. Never run in CI (no radio
//! there): build with `--features hardware` on an appliance; see hw-tests/README.md.
//!
//! Needs: bluetoothd running, adapter `$HW_ADAPTER` (default hci0) powered, and a beacon
//! advertising iBeacon or Eddystone-UID nearby whose id (the registry form, e.g.
//! `ibeacon:<uuid>:<major>:<minor>`) is in `$HW_BEACON_ID`.
#![cfg(feature = "hardware")]
#![allow(
    clippy::unwrap_used,
    reason = "a test should fail loudly on any unexpected error"
)]

use std::time::Duration;

use hw_tests::{VenuedBuilder, wait_for_json};

#[tokio::test]
async fn a_real_beacon_is_seen_through_a_real_adapter() {
    let beacon = std::env::var("HW_BEACON_ID")
        .expect("set HW_BEACON_ID to the beacon's id, e.g. ibeacon:<uuid>:<major>:<minor>");
    let adapter = std::env::var("HW_ADAPTER").unwrap_or_else(|_| "hci0".into());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("venued.toml");
    std::fs::write(
        &config,
        format!(
            "[ble]\nsource = \"bluez\"\nadapter = \"{adapter}\"\n\
             [[ble.scanners]]\nid = \"{adapter}\"\nzone = \"bench\"\n"
        ),
    )
    .unwrap();
    let venued = VenuedBuilder::new(&dir.path().join("data"))
        .arg("--config")
        .arg(config.to_str().unwrap())
        .spawn()
        .await
        .unwrap();
    wait_for_json(
        &venued.url("/api/v1/beacons/health"),
        Some(&venued.admin_token()),
        &format!("{beacon} being heard"),
        Duration::from_secs(60),
        |h| {
            h["beacons"]
                .as_array()
                .is_some_and(|all| all.iter().any(|b| b["beacon"] == beacon.as_str()))
        },
    )
    .await
    .unwrap();
    let occupancy: serde_json::Value = reqwest::get(venued.url("/api/v1/zones/occupancy"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        occupancy["zones"]["bench"].as_u64().unwrap_or(0) >= 1,
        "{occupancy}"
    );
    venued.terminate(Duration::from_secs(10)).await.unwrap();
}
