//! What the appliance image tells `venued` (its release, the root slot booted, a provisioning
//! file it refused) reaches every view an operator has of the box: `/api/v1/status`,
//! `daemon/status` over MQTT, and the relay's fleet view. The image sets these variables from its
//! `venued.service` drop-in; here the test sets them, and `tests/image.rs` checks the real boot.

use std::time::Duration;

use hw_tests::mqtt::{self, Options};
use hw_tests::relay::{self, Relay};
use hw_tests::{Admin, VenuedBuilder};
use rumqttc::QoS;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slot_release_and_a_refused_provisioning_file_show_in_every_view() {
    let dir = tempfile::tempdir().unwrap();
    let db = relay::sqlite_database(dir.path());
    let (_, token) = relay::add_appliance(&db, "org1", &["ev1"]).await.unwrap();
    let (_, plain_token) = relay::add_appliance(&db, "org1", &["ev1"]).await.unwrap();
    let relay = Relay::start(
        &db,
        relay::free_port().unwrap(),
        &dir.path().join("relay.log"),
    )
    .await
    .unwrap();
    let refused = dir.path().join("provisioning-error");
    std::fs::write(
        &refused,
        "The provisioning file venue-edge.toml was NOT applied.\r\n  - `event.id`: bad\r\n",
    )
    .unwrap();
    let venued = VenuedBuilder::new(&dir.path().join("a"))
        .env("VENUED_EVENT_ID", "ev1")
        .env("VENUED_SYNC_RELAY_URL", &relay.url(""))
        .env("VENUED_SYNC_TOKEN", &token)
        .env("VENUE_EDGE_IMAGE_VERSION", "1.4.2")
        .env("VENUE_EDGE_SLOT", "B")
        .env(
            "VENUE_EDGE_PROVISIONING_ERROR_FILE",
            refused.to_str().unwrap(),
        )
        .spawn()
        .await
        .unwrap();
    // A plain install (a NUC with the Debian package): none of it, and nothing made up.
    let plain = VenuedBuilder::new(&dir.path().join("b"))
        .env("VENUED_EVENT_ID", "ev1")
        .env("VENUED_MQTT_ENABLED", "false")
        .env("VENUED_SYNC_RELAY_URL", &relay.url(""))
        .env("VENUED_SYNC_TOKEN", &plain_token)
        .spawn()
        .await
        .unwrap();

    let status_of = |url: String| async move {
        hw_tests::wait_for_json(&url, None, "the status", WAIT, |_| true)
            .await
            .unwrap()
    };
    let status = status_of(venued.url("/api/v1/status")).await;
    assert_eq!(
        status["system"],
        json!({
            "image_version": "1.4.2",
            "slot": "B",
            "provisioning_error": "The provisioning file venue-edge.toml was NOT applied.\n  - `event.id`: bad",
        }),
        "{status}"
    );
    let plain_status = hw_tests::wait_for_json(
        &plain.url("/api/v1/status"),
        None,
        "the status",
        WAIT,
        |_| true,
    )
    .await
    .unwrap();
    assert_eq!(
        plain_status["system"],
        json!({"image_version": null, "slot": null, "provisioning_error": null})
    );

    // daemon/status, retained, as a display reads it.
    let password = Admin::new(&venued).device("wall", "signage").await.unwrap();
    let mut wall = mqtt::connect(
        venued.mqtt_addr("tcp").await.unwrap(),
        Options::device("wall", &password),
    )
    .await
    .unwrap();
    wall.client
        .subscribe("venue/ev1/daemon/status", QoS::AtLeastOnce)
        .await
        .unwrap();
    let (online, retained) = wall
        .message_on("venue/ev1/daemon/status", WAIT)
        .await
        .unwrap();
    assert!(retained);
    assert_eq!(
        (&online["state"], &online["image_version"], &online["slot"]),
        (&json!("online"), &json!("1.4.2"), &json!("B")),
        "{online}"
    );

    // The relay's fleet view, from the appliances' reports.
    let operator = relay::cli(&db, &["operator", "add"]).await.unwrap();
    let nodes = [
        status["node_id"].as_str().unwrap().to_string(),
        plain_status["node_id"].as_str().unwrap().to_string(),
    ];
    let fleet = hw_tests::wait_for_json(
        &relay.url("/v1/admin/appliances"),
        Some(operator.trim()),
        "both appliances' reports at the relay",
        Duration::from_secs(30),
        |list| {
            list["appliances"].as_array().is_some_and(|l| {
                nodes.iter().all(|n| {
                    l.iter()
                        .any(|a| a["node"] == n.as_str() && a["report"].is_object())
                })
            })
        },
    )
    .await
    .unwrap();
    let report = |node: &str| {
        fleet["appliances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["node"] == node)
            .unwrap()["report"]
            .clone()
    };
    let imaged = report(&nodes[0]);
    assert_eq!(
        (&imaged["image_version"], &imaged["slot"]),
        (&json!("1.4.2"), &json!("B")),
        "{imaged}"
    );
    let bare = report(&nodes[1]);
    assert!(
        bare.get("image_version").is_none() && bare.get("slot").is_none(),
        "{bare}"
    );
    assert_eq!(bare["version"], imaged["version"]);
}
