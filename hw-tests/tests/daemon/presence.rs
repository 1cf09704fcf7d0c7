//! BLE presence end to end through a real venued, with the replay source: a recorded walk from
//! zone A to zone B becomes zone transitions in the store (under each attendee's privacy) and
//! anonymous occupancy over HTTP.

use std::time::Duration;

use ble_scanner::advert::{APPLE_COMPANY_ID, EDDYSTONE_SERVICE};
use ble_scanner::beacon::ibeacon_payload;
use ble_scanner::{Advertisement, replay};
use hw_tests::{Admin, VenuedBuilder, open_db, wait_for_json};

const UUID: &str = "f7826da6-4fa2-4e98-8024-bc5b71e0893e";

fn badge_id(minor: u16) -> String {
    format!("ibeacon:{UUID}:9:{minor}")
}

/// Badges 1 (privacy zone), 2 (privacy hidden) and 3 (not in the registry) walk from A to B.
fn walk() -> Vec<u8> {
    let uuid = uuid_parse();
    let mut out = Vec::new();
    for second in 0..8u64 {
        let near_a = second < 2;
        for (scanner, near) in [("scanner-a", near_a), ("scanner-b", !near_a)] {
            for minor in 1..=3u16 {
                let mut a = Advertisement {
                    scanner: scanner.into(),
                    address: format!("c0:00:00:00:00:{minor:02x}"),
                    rssi: Some(if near { -60 } else { -85 }),
                    at_ms: 1_000_000 + second * 1000,
                    ..Advertisement::default()
                };
                a.manufacturer_data
                    .insert(APPLE_COMPANY_ID, ibeacon_payload(uuid, 9, minor, -59));
                replay::write(&mut out, &a).unwrap();
                if minor == 1 && second >= 3 {
                    // Badge 1 also sends Eddystone-TLM from the same address: 2100 mV, 21.5 °C.
                    let mut tlm = a.clone();
                    tlm.manufacturer_data.clear();
                    tlm.service_data.insert(
                        EDDYSTONE_SERVICE,
                        vec![0x20, 0x00, 0x08, 0x34, 0x15, 0x80, 0, 0, 0, 9, 0, 0, 0, 90],
                    );
                    replay::write(&mut out, &tlm).unwrap();
                }
            }
        }
    }
    out
}

fn uuid_parse() -> uuid::Uuid {
    uuid::Uuid::parse_str(UUID).unwrap()
}

#[tokio::test]
async fn a_recorded_walk_becomes_transitions_under_privacy_and_occupancy() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // First run: the registry (attendees with badges). BLE is off by default.
    let venued = VenuedBuilder::new(&data).spawn().await.unwrap();
    let csv = format!(
        "id,name,badge_beacon_id,privacy\np-zone,Zed,{},zone\np-hidden,Hal,{},hidden\n",
        badge_id(1),
        badge_id(2)
    );
    Admin::new(&venued).import_csv(csv).await.unwrap();
    venued.terminate(Duration::from_secs(10)).await.unwrap();

    let recording = dir.path().join("walk.jsonl");
    std::fs::write(&recording, walk()).unwrap();
    let recorded = dir.path().join("recorded.jsonl");
    let config = dir.path().join("venued.toml");
    std::fs::write(
        &config,
        format!(
            "[ble]\nsource = \"replay\"\nreplay_file = {:?}\nrecord_file = {:?}\nswitch_dwell_secs = 1\n\
             [[ble.scanners]]\nid = \"scanner-a\"\nzone = \"zone-a\"\n\
             [[ble.scanners]]\nid = \"scanner-b\"\nzone = \"zone-b\"\n",
            recording.display().to_string(),
            recorded.display().to_string(),
        ),
    )
    .unwrap();
    let venued = VenuedBuilder::new(&data)
        .arg("--config")
        .arg(config.to_str().unwrap())
        .spawn()
        .await
        .unwrap();

    // The recording lasts 8 s. Occupancy has no event stream to await until the hub and MQTT
    // outputs land, so wait on the HTTP view under a deadline.
    let occupancy = wait_for_json(
        &venued.url("/api/v1/zones/occupancy"),
        None,
        "all three badges in zone B",
        Duration::from_secs(30),
        |o| o["zones"]["zone-b"] == 3,
    )
    .await
    .unwrap();
    assert_eq!(occupancy["zones"]["zone-a"], 0, "{occupancy}");

    // Badge 1's TLM joined to its id by address: a low-battery alert, once. Its TLM frames start
    // in the recording's fourth second.
    let health = wait_for_json(
        &venued.url("/api/v1/beacons/health"),
        Some(&venued.admin_token()),
        "a low-battery alert",
        Duration::from_secs(30),
        |h| h["low_battery"] == 1,
    )
    .await
    .unwrap();
    let badge1 = health["beacons"]
        .as_array()
        .and_then(|all| all.iter().find(|b| b["beacon"] == badge_id(1)))
        .cloned()
        .unwrap_or_default();
    assert_eq!(badge1["battery_mv"], 2100, "{health}");
    assert_eq!(badge1["low_battery"], true, "{health}");
    assert_eq!(
        health["low_battery"], 1,
        "only badge 1 sent telemetry: {health}"
    );
    let metrics = venued.metrics().await.unwrap();
    assert!(
        metrics.contains("venued_ble_low_battery_alerts_total 1"),
        "one alert, not one per frame"
    );

    // Let the replay run to its end (venued reports the source as ended) before stopping, so
    // the recording can be compared with the whole input.
    wait_for_json(
        &venued.url("/readyz"),
        None,
        "the end of the replay",
        Duration::from_secs(30),
        |r| r["checks"]["ble"]["detail"] == "the advert source ended",
    )
    .await
    .unwrap();
    let exit = venued.terminate(Duration::from_secs(10)).await.unwrap();
    assert!(exit.success());

    let db = open_db(&data).unwrap();
    let rows: Vec<(String, String, Option<String>)> = db
        .prepare("SELECT attendee_id, kind, zone_id FROM zone_transitions ORDER BY at_ms, kind")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        rows,
        vec![
            (
                "p-zone".to_string(),
                "entered".to_string(),
                Some("zone-a".to_string())
            ),
            (
                "p-zone".to_string(),
                "moved".to_string(),
                Some("zone-b".to_string())
            ),
        ],
        "only the zone-privacy attendee is stored; the hidden and the unknown badge are not"
    );
    // Everything the daemon received was recorded, in order (timestamps rebased by the replay).
    let strip = |a: ble_scanner::Advertisement| ble_scanner::Advertisement { at_ms: 0, ..a };
    let read = |bytes: &[u8]| -> Vec<ble_scanner::Advertisement> {
        replay::Reader::new(bytes)
            .map(|a| strip(a.unwrap()))
            .collect()
    };
    let (got, sent) = (read(&std::fs::read(&recorded).unwrap()), read(&walk()));
    let first_difference = got.iter().zip(&sent).position(|(g, s)| g != s);
    assert_eq!(
        (got.len(), first_difference),
        (sent.len(), None),
        "recording differs from what was replayed"
    );

    let logged: i64 = db
        .query_row(
            "SELECT count(*) FROM ops WHERE kind = 'presence.transition'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(logged, 2);
}
