//! The real BlueZ source (btleplug over D-Bus) inside a real venued, against a virtual BlueZ
//! (python-dbusmock's bluez5 template on a private bus; no radio exists on a build machine).
//! Adverts emitted on the bus must come out as occupancy, a stored zone transition, an MQTT
//! message and a hub frame.

use std::time::{Duration, Instant};

use ble_scanner::beacon::ibeacon_payload;
use hw_tests::bluez::VirtualBluez;
use hw_tests::{Admin, VenuedBuilder, wait_for_json};

const UUID: &str = "f7826da6-4fa2-4e98-8024-bc5b71e0893e";
const MAC: &str = "C0:FF:EE:00:00:01";

/// Waits (bounded) on a JSON view; these views have no event stream yet (see presence.rs).
async fn wait_for(
    url: &str,
    what: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_for_json(url, None, what, Duration::from_secs(30), ready)
        .await
        .unwrap()
}

/// `venued_ble_adverts_total{scanner="hci0"}` from the metrics text.
async fn adverts_counted(venued: &hw_tests::Venued) -> u64 {
    let text = venued.metrics().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("venued_ble_adverts_total{scanner=\"hci0\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn adverts_on_a_virtual_bluez_become_presence() {
    let mut bluez = VirtualBluez::start().await.unwrap();
    bluez.ctl(&["add-adapter", "hci0"]).await.unwrap();
    bluez
        .ctl(&["add-device", "hci0", MAC, "badge-1"])
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let badge = format!("ibeacon:{UUID}:3:7");
    let venued = VenuedBuilder::new(&data).spawn().await.unwrap();
    Admin::new(&venued)
        .import_csv(format!(
            "id,name,badge_beacon_id,privacy\np1,Pat,{badge},zone\n"
        ))
        .await
        .unwrap();
    let wall_pw = Admin::new(&venued).device("wall", "signage").await.unwrap();
    venued.terminate(Duration::from_secs(10)).await.unwrap();

    let config = dir.path().join("venued.toml");
    std::fs::write(
        &config,
        // A short silence window: btleplug's event stream survives bluetoothd going away and
        // simply goes quiet, so the watchdog is what notices (shared/research/ble.md §2.3).
        "[ble]\nsource = \"bluez\"\nadapter = \"hci0\"\nsilence_restart_secs = 5\n\
         [[ble.scanners]]\nid = \"hci0\"\nzone = \"hall\"\n",
    )
    .unwrap();
    let venued = VenuedBuilder::new(&data)
        .arg("--config")
        .arg(config.to_str().unwrap())
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bluez.address)
        .spawn()
        .await
        .unwrap();
    wait_for(&venued.url("/readyz"), "BLE scanning", |r| {
        r["checks"]["ble"]["state"] == "ok"
    })
    .await;

    // A display on MQTT watching the hall, and a phone following p1 on the hub.
    let mut wall = hw_tests::mqtt::connect(
        venued.mqtt_addr("tcp").await.unwrap(),
        hw_tests::mqtt::Options::device("wall", &wall_pw),
    )
    .await
    .unwrap();
    wall.client
        .subscribe("venue/default/presence/hall", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    Admin::new(&venued).ensure_attendee("viewer").await.unwrap();
    let (_, minted) = Admin::new(&venued)
        .call(
            reqwest::Method::POST,
            "/api/v1/admin/tokens",
            Some(serde_json::json!({"attendee_id": "viewer"})),
        )
        .await
        .unwrap();
    let url = format!(
        "ws://{}/ws?token={}",
        venued.addr,
        minted["token"].as_str().unwrap()
    );
    let (mut phone, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    use futures::{SinkExt, StreamExt};
    let follow = serde_json::json!({"type": "presence.subscribe", "id": "f", "payload": {"user_ids": ["p1"]}});
    phone
        .send(tokio_tungstenite::tungstenite::Message::text(
            follow.to_string(),
        ))
        .await
        .unwrap();

    let payload: String = ibeacon_payload(uuid::Uuid::parse_str(UUID).unwrap(), 3, 7, -59)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    for _ in 0..3 {
        bluez
            .ctl(&["advert", "hci0", MAC, "-58", "004c", &payload])
            .await
            .unwrap();
    }
    wait_for(
        &venued.url("/api/v1/zones/occupancy"),
        "the badge entering the hall",
        |o| o["zones"]["hall"] == 1,
    )
    .await;
    let metrics = venued.metrics().await.unwrap();
    assert!(
        metrics.contains("venued_ble_adverts_total{scanner=\"hci0\"}"),
        "adverts counted per scanner"
    );
    // The hall's retained occupancy (0 until now) comes first; then the badge's entry.
    loop {
        let (occupancy, _) = wall
            .message_on("venue/default/presence/hall", Duration::from_secs(30))
            .await
            .unwrap();
        if occupancy["occupancy"] == 1 {
            break;
        }
    }
    let changed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) =
                phone.next().await
            {
                let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
                // Location frames (`kind`); the followed person's online status comes too.
                if frame["type"] == "presence.changed" && frame["payload"].get("kind").is_some() {
                    return frame["payload"].clone();
                }
            }
        }
    })
    .await
    .expect("a presence.changed frame");
    assert_eq!(
        (
            changed["user_id"].clone(),
            changed["kind"].clone(),
            changed["zone"].clone()
        ),
        (
            serde_json::json!("p1"),
            serde_json::json!("entered"),
            serde_json::json!("hall")
        )
    );

    // Silence with bluetoothd alive: the watchdog restarts discovery (and counts it).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !venued
        .metrics()
        .await
        .unwrap()
        .contains("venued_ble_watchdog_restarts_total 1")
    {
        assert!(
            Instant::now() < deadline,
            "the silence watchdog never restarted discovery"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        reqwest::get(venued.url("/readyz"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains(r#""ble":{"state":"ok"}"#),
        "scanning again after the restart"
    );

    // bluetoothd goes away: after the silence window the watchdog's restart of discovery fails,
    // BLE is reported degraded, and the appliance stays ready.
    bluez.stop_bluetoothd().await.unwrap();
    let ready = wait_for(&venued.url("/readyz"), "BLE degraded", |r| {
        r["checks"]["ble"]["state"] == "degraded"
    })
    .await;
    assert_eq!(ready["ready"], true, "{ready}");

    // bluetoothd comes back (with its adapter and the badge): venued reconnects by itself and
    // counts adverts again.
    bluez.start_bluetoothd().unwrap();
    bluez.ctl(&["add-adapter", "hci0"]).await.unwrap();
    bluez
        .ctl(&["add-device", "hci0", MAC, "badge-1"])
        .await
        .unwrap();
    wait_for(&venued.url("/readyz"), "BLE scanning again", |r| {
        r["checks"]["ble"]["state"] == "ok"
    })
    .await;
    let adverts_before = adverts_counted(&venued).await;
    bluez
        .ctl(&["advert", "hci0", MAC, "-58", "004c", &payload])
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while adverts_counted(&venued).await <= adverts_before {
        assert!(
            Instant::now() < deadline,
            "no advert counted after the reconnect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let exit = venued.terminate(Duration::from_secs(10)).await.unwrap();
    assert!(exit.success());
    let db = hw_tests::open_db(&data).unwrap();
    let row: (String, String, String) = db
        .query_row(
            "SELECT attendee_id, kind, zone_id FROM zone_transitions",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(row, ("p1".into(), "entered".into(), "hall".into()));
}
