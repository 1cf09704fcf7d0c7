//! The embedded MQTT broker through a real venued, with real clients: rumqttc (3.1.1),
//! mosquitto_pub/sub, and paho-mqtt (MQTT 5 and MQTT over WebSocket).

use std::time::Duration;

use hw_tests::mqtt::{self, Options, Received};
use hw_tests::{Admin, Venued, VenuedBuilder, open_db};
use reqwest::Method;
use rumqttc::QoS;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

async fn device(venued: &Venued, id: &str) -> anyhow::Result<mqtt::Client> {
    let password = std::fs::read_to_string(venued.data_dir.join(format!("{id}.password")))?;
    mqtt::connect(
        venued.mqtt_addr("tcp").await?,
        Options::device(id, password.trim()),
    )
    .await
}

/// Registers a device and keeps its password beside the data directory for later connects.
async fn register(venued: &Venued, id: &str, kind: &str) -> String {
    let password = Admin::new(venued).device(id, kind).await.unwrap();
    std::fs::write(venued.data_dir.join(format!("{id}.password")), &password).unwrap();
    password
}

/// Connects as device `id`, publishes (QoS 1) what it may not, and reports whether the
/// daemon cut the connection.
async fn cut_off(
    venued: &Venued,
    id: &str,
    topic: &str,
    retain: bool,
    payload: impl Into<Vec<u8>>,
) -> bool {
    let mut client = device(venued, id).await.unwrap();
    client
        .client
        .publish(topic, QoS::AtLeastOnce, retain, payload.into())
        .await
        .unwrap();
    client.closed(WAIT).await.is_some()
}

fn checkins_of(venued: &Venued, attendee: &str) -> i64 {
    open_db(&venued.data_dir)
        .unwrap()
        .query_row(
            "SELECT (SELECT count(*) FROM checkins WHERE attendee_id = ?1)
                  + (SELECT count(*) FROM ops WHERE kind = 'checkin.record' AND entity_id = ?1)",
            [attendee],
            |r| r.get(0),
        )
        .unwrap()
}

async fn check_in(kiosk: &mut mqtt::Client, id: &str, body: Value) -> Value {
    let mut payload = json!({"v": 1, "id": id, "ts": "2026-11-22T10:00:00Z", "src": "kiosk-1"});
    if let (Value::Object(p), Value::Object(b)) = (&mut payload, body) {
        p.extend(b);
    }
    kiosk
        .client
        .publish(
            "venue/default/kiosk/kiosk-1/checkin",
            QoS::AtLeastOnce,
            false,
            serde_json::to_vec(&payload).unwrap(),
        )
        .await
        .unwrap();
    kiosk
        .message_on("venue/default/kiosk/kiosk-1/checkin/result", WAIT)
        .await
        .unwrap()
        .0
}

#[tokio::test]
async fn a_check_in_over_mqtt_is_recorded_once_under_retries_and_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let venued = VenuedBuilder::new(&data).spawn().await.unwrap();
    Admin::new(&venued).import_attendees(3).await.unwrap();
    register(&venued, "kiosk-1", "kiosk").await;
    let mut kiosk = device(&venued, "kiosk-1").await.unwrap();
    kiosk
        .client
        .subscribe(
            "venue/default/kiosk/kiosk-1/checkin/result",
            QoS::AtLeastOnce,
        )
        .await
        .unwrap();

    let first = check_in(&mut kiosk, "c-1", json!({"attendee_id": "a1"})).await;
    assert_eq!(
        (first["status"].clone(), first["ref"].clone()),
        (json!(201), json!("c-1")),
        "{first}"
    );
    assert_eq!(first["replayed"], false);
    assert_eq!(first["checkin"]["attendee"]["id"], "a1");
    assert_eq!(first["src"], "venued");

    // The kiosk's retry (same id, as after a lost PUBACK) is answered from the stored result.
    let retry = check_in(&mut kiosk, "c-1", json!({"attendee_id": "a1"})).await;
    assert_eq!(
        (retry["status"].clone(), retry["replayed"].clone()),
        (json!(201), json!(true))
    );
    assert_eq!(retry["checkin"], first["checkin"]);
    // A new id for the same attendee reports the existing check-in.
    let again = check_in(&mut kiosk, "c-2", json!({"ticket_code": "T1"})).await;
    assert_eq!(again["status"], 200, "{again}");
    assert_eq!(checkins_of(&venued, "a1"), 2, "one row and one op");

    let unknown = check_in(&mut kiosk, "c-3", json!({"attendee_id": "nobody"})).await;
    assert_eq!(
        (unknown["status"].clone(), unknown["error"]["code"].clone()),
        (json!(404), json!("not_found"))
    );
    kiosk
        .client
        .publish(
            "venue/default/kiosk/kiosk-1/checkin",
            QoS::AtLeastOnce,
            false,
            "not json",
        )
        .await
        .unwrap();
    let (bad, _) = kiosk
        .message_on("venue/default/kiosk/kiosk-1/checkin/result", WAIT)
        .await
        .unwrap();
    assert_eq!(
        (bad["status"].clone(), bad["ref"].clone()),
        (json!(422), Value::Null),
        "{bad}"
    );
    assert!(
        bad["error"]["message"].as_str().unwrap().contains("\"id\""),
        "{bad}"
    );

    // kill -9 right after the publish: whether or not the check-in was committed, the kiosk's
    // retry after the restart converges to exactly one.
    kiosk
        .client
        .publish(
            "venue/default/kiosk/kiosk-1/checkin",
            QoS::AtLeastOnce,
            false,
            r#"{"v":1,"id":"c-9","attendee_id":"a2"}"#,
        )
        .await
        .unwrap();
    venued.kill9().await.unwrap();
    kiosk.vanish();
    let venued = VenuedBuilder::new(&data).spawn().await.unwrap();
    let mut kiosk = device(&venued, "kiosk-1").await.unwrap();
    kiosk
        .client
        .subscribe(
            "venue/default/kiosk/kiosk-1/checkin/result",
            QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let after = check_in(&mut kiosk, "c-9", json!({"attendee_id": "a2"})).await;
    assert_eq!(after["status"], 201, "{after}");
    assert_eq!(checkins_of(&venued, "a2"), 2, "one row and one op");
    let metrics = venued.metrics().await.unwrap();
    assert!(
        metrics.contains("venued_mqtt_checkins_total{reason=\"new\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn devices_publish_only_on_their_own_topics_and_bad_logins_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let venued = VenuedBuilder::new(&dir.path().join("data"))
        .spawn()
        .await
        .unwrap();
    Admin::new(&venued).import_attendees(2).await.unwrap();
    register(&venued, "kiosk-1", "kiosk").await;
    register(&venued, "kiosk-2", "kiosk").await;
    register(&venued, "lobby", "signage").await;
    let addr = venued.mqtt_addr("tcp").await.unwrap();

    // Another kiosk's topic, and a topic outside the signage's kind: cut off, nothing stored.
    assert!(
        cut_off(
            &venued,
            "kiosk-1",
            "venue/default/kiosk/kiosk-2/checkin",
            false,
            r#"{"v":1,"id":"x","attendee_id":"a1"}"#
        )
        .await,
        "kiosk-1 was not disconnected"
    );
    assert!(
        cut_off(
            &venued,
            "lobby",
            "venue/default/kiosk/lobby/checkin",
            false,
            r#"{"v":1,"id":"y","attendee_id":"a1"}"#
        )
        .await,
        "the display was not disconnected"
    );
    assert!(
        cut_off(
            &venued,
            "lobby",
            "venue/default/daemon/status",
            true,
            r#"{"state":"offline"}"#
        )
        .await,
        "a device may not set the daemon's status"
    );
    let mut snoop = device(&venued, "kiosk-2").await.unwrap();
    snoop.client.subscribe("#", QoS::AtMostOnce).await.unwrap();
    assert!(
        snoop.closed(WAIT).await.is_some(),
        "a subscription outside the event's tree"
    );
    assert_eq!(checkins_of(&venued, "a1"), 0);

    // Wrong password, a username that is not the client id, a bad client id, keep-alive 0:
    // each gets its CONNACK refusal, which mosquitto_sub reports.
    let wrong = mqtt::connect(addr, Options::device("kiosk-1", "nope")).await;
    assert!(format!("{:?}", wrong.err()).contains("BadUserNamePassword"));
    let port = addr.port().to_string();
    for (args, says) in [
        (
            vec!["-i", "kiosk-1", "-u", "kiosk-2", "-P", "x"],
            "bad user name or password",
        ),
        (
            vec!["-i", "bad+id", "-u", "bad+id", "-P", "x"],
            "identifier rejected",
        ),
        (vec!["-i", "anonymous"], "not authorised"),
    ] {
        let out = tokio::process::Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-t",
                "venue/default/daemon/status",
                "-C",
                "1",
                "-W",
                "5",
            ])
            .args(&args)
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(
            !out.status.success() && text.contains(says),
            "{args:?}: {text}"
        );
    }
    // Keep-alive 0 (mosquitto_sub will not send it): a raw CONNECT gets "identifier rejected".
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut connect = vec![0x10, 33, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 0];
    for field in ["kiosk-1", "kiosk-1", "wrong-password"] {
        connect.extend((field.len() as u16).to_be_bytes());
        connect.extend(field.as_bytes());
    }
    connect[1] = (connect.len() - 2) as u8;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raw.write_all(&connect).await.unwrap();
    let mut connack = [0u8; 4];
    raw.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 2]);
    // Garbage instead of CONNECT: the connection is dropped, nothing else happens.
    let mut junk = tokio::net::TcpStream::connect(addr).await.unwrap();
    junk.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert_eq!(junk.read(&mut connack).await.unwrap_or(0), 0);

    // The failures above are budgeted per address; the daemon answers and is ready.
    assert_eq!(
        reqwest::get(venued.url("/readyz")).await.unwrap().status(),
        200
    );

    // A packet over mqtt.max_payload_bytes (256 KiB) closes the connection; nothing stored.
    assert!(
        cut_off(
            &venued,
            "kiosk-1",
            "venue/default/kiosk/kiosk-1/checkin",
            false,
            vec![b'x'; 300 * 1024]
        )
        .await,
        "an oversized packet was accepted"
    );
    assert_eq!(checkins_of(&venued, "a1"), 0);

    // Revoking a device cuts its live connection.
    let mut kiosk2 = device(&venued, "kiosk-2").await.unwrap();
    let (status, _) = Admin::new(&venued)
        .call(Method::DELETE, "/api/v1/admin/devices/kiosk-2", None)
        .await
        .unwrap();
    assert_eq!(status, 204);
    assert!(
        kiosk2.closed(WAIT).await.is_some(),
        "a revoked device stays connected"
    );

    let metrics = venued.metrics().await.unwrap();
    for line in [
        "venued_mqtt_rejected_total{reason=\"not_own_topic\"} 1",
        "venued_mqtt_rejected_total{reason=\"wrong_kind\"} 2",
        "venued_mqtt_rejected_total{reason=\"filter_outside_tree\"} 1",
        "venued_mqtt_refused_connections_total{reason=\"bad_client_id\"} 1",
        "venued_mqtt_refused_connections_total{reason=\"keep_alive_zero\"} 1",
    ] {
        assert!(metrics.contains(line), "no `{line}` in\n{metrics}");
    }
}

#[tokio::test]
async fn retained_state_is_there_right_after_a_restart_and_lost_devices_show() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The demo's simulated badges give the zones an occupancy.
    let venued = VenuedBuilder::new(&data)
        .arg("--demo")
        .spawn()
        .await
        .unwrap();
    register(&venued, "lobby", "signage").await;
    register(&venued, "wall", "signage").await;
    let manifest = json!({"playlist": [{"url": "https://example.org/a.png", "secs": 10}]});
    let (status, put) = Admin::new(&venued)
        .call(
            Method::PUT,
            "/api/v1/admin/signage/lobby/content",
            Some(manifest.clone()),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{put}");

    let mut wall = device(&venued, "wall").await.unwrap();
    for topic in [
        "signage/lobby/status",
        "daemon/status",
        "presence/hall-a",
        "signage/lobby/content",
    ] {
        wall.client
            .subscribe(format!("venue/default/{topic}"), QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    let (online, retained) = wall
        .message_on("venue/default/daemon/status", WAIT)
        .await
        .unwrap();
    assert_eq!((online["state"].clone(), retained), (json!("online"), true));
    let (content, _) = wall
        .message_on("venue/default/signage/lobby/content", WAIT)
        .await
        .unwrap();
    assert_eq!(content["content"], manifest);
    wall.message_on("venue/default/presence/hall-a", Duration::from_secs(30))
        .await
        .unwrap();

    // A display with a will: ready, then gone without a word → `lost`.
    let password = std::fs::read_to_string(data.join("lobby.password")).unwrap();
    let lobby = mqtt::connect(
        venued.mqtt_addr("tcp").await.unwrap(),
        Options {
            id: "lobby",
            credentials: Some(("lobby", &password)),
            will: Some((
                "venue/default/signage/lobby/status".into(),
                r#"{"v":1,"state":"lost"}"#.into(),
            )),
            keep_alive: None,
        },
    )
    .await
    .unwrap();
    lobby
        .client
        .publish(
            "venue/default/signage/lobby/status",
            QoS::AtLeastOnce,
            true,
            r#"{"v":1,"state":"ready"}"#,
        )
        .await
        .unwrap();
    let (ready, _) = wall
        .message_on("venue/default/signage/lobby/status", WAIT)
        .await
        .unwrap();
    assert_eq!(ready["state"], "ready");
    lobby.vanish();
    let (lost, _) = wall
        .message_on(
            "venue/default/signage/lobby/status",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(lost["state"], "lost");

    // SIGTERM: subscribers see the daemon go offline before their connection closes.
    venued.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
    let (offline, _) = wall
        .message_on("venue/default/daemon/status", WAIT)
        .await
        .unwrap();
    assert_eq!(offline["state"], "offline");
    assert!(wall.closed(WAIT).await.is_some());
    let mut venued = venued;
    assert!(
        venued
            .wait(Duration::from_secs(15))
            .await
            .unwrap()
            .success()
    );

    // The next run (no demo, no BLE) has every state retained before anyone connects: one
    // mosquitto_sub on the exact topics gets all four at once.
    let venued = VenuedBuilder::new(&data).spawn().await.unwrap();
    let port = venued.mqtt_addr("tcp").await.unwrap().port().to_string();
    let wall_password = std::fs::read_to_string(data.join("wall.password")).unwrap();
    let out = tokio::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-i",
            "wall",
            "-u",
            "wall",
            "-P",
            &wall_password,
        ])
        .args([
            "-t",
            "venue/default/signage/lobby/content",
            "-t",
            "venue/default/presence/hall-a",
        ])
        .args([
            "-t",
            "venue/default/daemon/status",
            "-t",
            "venue/default/signage/lobby/status",
        ])
        .args(["-v", "-C", "4", "-W", "5", "-q", "1"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: std::collections::BTreeMap<&str, Value> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(t, p)| (t, serde_json::from_str(p).unwrap()))
        .collect();
    assert_eq!(
        got["venue/default/signage/lobby/content"]["content"],
        manifest
    );
    assert_eq!(got["venue/default/daemon/status"]["state"], "online");
    assert!(got["venue/default/presence/hall-a"]["occupancy"].is_u64());
    let status = &got["venue/default/signage/lobby/status"];
    assert_eq!(
        (status["state"].clone(), status["reason"].clone()),
        (json!("lost"), json!("venued restarted"))
    );

    // Deleting the content clears the retained topic.
    let (status, _) = Admin::new(&venued)
        .call(Method::DELETE, "/api/v1/admin/signage/lobby/content", None)
        .await
        .unwrap();
    assert_eq!(status, 204);
    let mut wall = device(&venued, "wall").await.unwrap();
    wall.client
        .subscribe("venue/default/signage/lobby/content", QoS::AtLeastOnce)
        .await
        .unwrap();
    wall.client
        .subscribe("venue/default/daemon/status", QoS::AtLeastOnce)
        .await
        .unwrap();
    // The daemon status arrives; the deleted content does not.
    match wall.next(WAIT).await {
        Some(Received::Message(topic, _, _)) => assert_eq!(topic, "venue/default/daemon/status"),
        other => panic!("{other:?}"),
    }
}

/// paho-mqtt (Debian's python3-paho-mqtt) as an MQTT 5 kiosk and as a browser-style display
/// over WebSocket.
const PAHO: &str = r#"
import json, sys, threading
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

v5_port, ws_port, password, sign_password = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
out, done = {}, threading.Event()

k = mqtt.Client(client_id="kiosk-5", protocol=mqtt.MQTTv5)
k.username_pw_set("kiosk-5", password)
def on_connect(c, u, flags, rc, props=None):
    c.subscribe("venue/default/kiosk/kiosk-5/checkin/result", qos=1)
def on_subscribe(c, u, mid, granted, props=None):
    c.publish("venue/default/kiosk/kiosk-5/checkin", json.dumps({"v": 1, "id": "v5-1", "attendee_id": "a1"}), qos=1)
def on_message(c, u, m):
    out["v5"] = json.loads(m.payload)
    done.set()
k.on_connect, k.on_subscribe, k.on_message = on_connect, on_subscribe, on_message
k.connect("127.0.0.1", v5_port, keepalive=30)
k.loop_start()
ok = done.wait(10)
k.loop_stop()

w, seen = mqtt.Client(client_id="screen", transport="websockets"), threading.Event()
w.username_pw_set("screen", sign_password)
w.on_connect = lambda c, u, f, rc: c.subscribe("venue/default/daemon/status", qos=1)
def on_ws(c, u, m):
    out["ws"] = json.loads(m.payload)
    out["ws_retained"] = bool(m.retain)
    seen.set()
w.on_message = on_ws
w.connect("127.0.0.1", ws_port, keepalive=30)
w.loop_start()
ok = seen.wait(10) and ok
w.loop_stop()
print(json.dumps(out))
sys.exit(0 if ok else 1)
"#;

#[tokio::test]
async fn mqtt5_kiosks_websocket_displays_and_tls_clients_work() {
    let dir = tempfile::tempdir().unwrap();
    // A self-signed certificate for 127.0.0.1, as venue IT would install one.
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .args([
            "-days",
            "1",
            "-subj",
            "/CN=venued-test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let venued = VenuedBuilder::new(&dir.path().join("data"))
        .env("VENUED_MQTT_LISTEN_V5", "127.0.0.1:0")
        .env("VENUED_MQTT_LISTEN_TLS", "127.0.0.1:0")
        .env("VENUED_MQTT_TLS_CERT", cert.to_str().unwrap())
        .env("VENUED_MQTT_TLS_KEY", key.to_str().unwrap())
        .spawn()
        .await
        .unwrap();
    Admin::new(&venued).import_attendees(3).await.unwrap();
    let kiosk = register(&venued, "kiosk-5", "kiosk").await;
    let screen = register(&venued, "screen", "signage").await;
    let v5 = venued.mqtt_addr("v5").await.unwrap().port().to_string();
    let ws = venued.mqtt_addr("ws").await.unwrap().port().to_string();
    let out = tokio::process::Command::new("/usr/bin/python3")
        .args(["-c", PAHO, &v5, &ws, &kiosk, &screen])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        (got["v5"]["status"].clone(), got["v5"]["ref"].clone()),
        (json!(201), json!("v5-1")),
        "{got}"
    );
    assert_eq!(
        (got["ws"]["state"].clone(), got["ws_retained"].clone()),
        (json!("online"), json!(true)),
        "{got}"
    );

    // MQTT over TLS, verified against the certificate.
    let tls = venued.mqtt_addr("tls").await.unwrap().port().to_string();
    let out = tokio::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &tls,
            "--cafile",
            cert.to_str().unwrap(),
        ])
        .args(["-i", "screen", "-u", "screen", "-P", &screen])
        .args(["-t", "venue/default/daemon/status", "-C", "1", "-W", "5"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        serde_json::from_str::<Value>(text.trim()).unwrap()["state"],
        "online"
    );
}

#[tokio::test]
async fn gateway_adverts_over_mqtt_become_presence_and_alerts_on_mqtt() {
    const UUID: &str = "f7826da6-4fa2-4e98-8024-bc5b71e0893e";
    let dir = tempfile::tempdir().unwrap();
    let csv = format!(
        "id,name,badge_beacon_id,privacy\np1,Pia,ibeacon:{UUID}:7:1,zone\np2,Pål,ibeacon:{UUID}:7:2,hidden\n"
    );
    let venued = gateway_venued(
        dir.path(),
        csv,
        &[("gw-a", "zone-a")],
        &[("wall", "signage")],
        "",
    )
    .await;
    let mut wall = device(&venued, "wall").await.unwrap();
    wall.client
        .subscribe("venue/default/presence/zone-a", QoS::AtLeastOnce)
        .await
        .unwrap();
    wall.client
        .subscribe("venue/default/alert/warning/+", QoS::AtLeastOnce)
        .await
        .unwrap();
    wall.client
        .subscribe("venue/default/beacon/zone-a", QoS::AtMostOnce)
        .await
        .unwrap();
    let gateway = device(&venued, "gw-a").await.unwrap();
    let ibeacon = |minor: u16| format!("4c000215{}0007{minor:04x}c5", UUID.replace('-', ""));
    for _ in 0..3 {
        // Badge 1 as OpenMQTTGateway forwards it raw, badge 2 as ESPresense reports it.
        let raw = json!({"id": "C0:00:00:00:00:01", "rssi": -58, "manufacturerdata": ibeacon(1)});
        gateway
            .client
            .publish(
                "venue/default/gateway/gw-a/BTtoMQTT/C00000000001",
                QoS::AtMostOnce,
                false,
                raw.to_string(),
            )
            .await
            .unwrap();
        let esp = json!({"id": format!("iBeacon:{UUID}-7-2"), "rssi": -61, "rssi@1m": -59});
        gateway
            .client
            .publish(
                "venue/default/gateway/gw-a/espresense/badge2",
                QoS::AtMostOnce,
                false,
                esp.to_string(),
            )
            .await
            .unwrap();
    }
    // Eddystone-TLM from badge 1's address: 2100 mV, under the 2500 mV threshold.
    let tlm = json!({"id": "C0:00:00:00:00:01", "rssi": -58, "servicedatauuid": "0xfeaa",
                     "servicedata": "2000083415800000000900000090"});
    gateway
        .client
        .publish(
            "venue/default/gateway/gw-a/BTtoMQTT/C00000000001",
            QoS::AtMostOnce,
            false,
            tlm.to_string(),
        )
        .await
        .unwrap();
    gateway
        .client
        .publish(
            "venue/default/gateway/gw-a/BTtoMQTT/C00000000001",
            QoS::AtMostOnce,
            false,
            "not json",
        )
        .await
        .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (mut occupancy, mut alert, mut summary) = (None, None, None);
    while occupancy.is_none() || alert.is_none() || summary.is_none() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match wall.next(left).await {
            Some(Received::Message(topic, payload, _)) => {
                let body: Value = serde_json::from_slice(&payload).unwrap();
                if topic == "venue/default/presence/zone-a" && body["occupancy"] == 2 {
                    occupancy = Some(body);
                } else if topic.starts_with("venue/default/alert/warning/") {
                    alert = Some((topic, body));
                } else if topic == "venue/default/beacon/zone-a" {
                    summary = Some(body);
                }
            }
            other => panic!("occupancy {occupancy:?}, alert {alert:?}: {other:?}"),
        }
    }
    let summary = summary.unwrap();
    assert_eq!(summary["zone"], "zone-a", "{summary}");
    assert!(summary["present"].is_u64(), "{summary}");
    let (topic, alert) = alert.unwrap();
    assert_eq!(
        topic,
        format!("venue/default/alert/warning/ibeacon:{UUID}:7:1")
    );
    assert!(
        alert["message"].as_str().unwrap().contains("2100 mV"),
        "{alert}"
    );
    // Only counts leave: no attendee or badge in the occupancy message.
    let text = occupancy.unwrap().to_string();
    assert!(!text.contains("p1") && !text.contains(UUID), "{text}");
    let metrics = venued.metrics().await.unwrap();
    assert!(
        metrics.contains("venued_mqtt_invalid_messages_total{reason=\"bad_gateway_advert\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("venued_ble_adverts_total{scanner=\"gw-a\"}"),
        "{metrics}"
    );
}

/// The outside probe: any kiosk, display or gateway could subscribe to another kiosk's
/// `checkin/result` and read every check-in's name, company and ticket code, and anonymous demo
/// clients could subscribe to `#`. Each now reads only its own private topics.
#[tokio::test]
async fn regression_no_device_or_anonymous_client_reads_another_kiosks_checkins() {
    let dir = tempfile::tempdir().unwrap();
    let venued = VenuedBuilder::new(&dir.path().join("data"))
        .arg("--demo")
        .spawn()
        .await
        .unwrap();
    register(&venued, "kiosk-1", "kiosk").await;
    register(&venued, "kiosk-2", "kiosk").await;
    register(&venued, "lobby", "signage").await;
    let addr = venued.mqtt_addr("tcp").await.unwrap();

    // The owner reads its own results.
    let mut kiosk = device(&venued, "kiosk-1").await.unwrap();
    kiosk
        .client
        .subscribe(
            "venue/default/kiosk/kiosk-1/checkin/result",
            QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    Admin::new(&venued).import_attendees(2).await.unwrap();
    let result = check_in(&mut kiosk, "c-own", json!({"attendee_id": "a1"})).await;
    assert_eq!(result["status"], 201, "{result}");

    // Anyone else, directly or by wildcard, is cut off.
    for (who, filter) in [
        ("kiosk-2", "venue/default/kiosk/kiosk-1/checkin/result"),
        ("kiosk-2", "venue/default/kiosk/+/checkin/result"),
        ("kiosk-2", "venue/default/#"),
        ("lobby", "venue/default/kiosk/kiosk-1/#"),
    ] {
        let mut snoop = device(&venued, who).await.unwrap();
        snoop
            .client
            .subscribe(filter, QoS::AtMostOnce)
            .await
            .unwrap();
        assert!(
            snoop.closed(WAIT).await.is_some(),
            "{who} subscribed to {filter}"
        );
    }
    let anonymous = |id| Options {
        id,
        credentials: None,
        will: None,
        keep_alive: None,
    };
    let mut stranger = mqtt::connect(addr, anonymous("stranger")).await.unwrap();
    stranger
        .client
        .subscribe("venue/default/#", QoS::AtMostOnce)
        .await
        .unwrap();
    assert!(
        stranger.closed(WAIT).await.is_some(),
        "an anonymous demo client subscribed to the whole tree"
    );
    // What is shared stays readable, anonymously too: the daemon's status is retained.
    let mut viewer = mqtt::connect(addr, anonymous("viewer")).await.unwrap();
    viewer
        .client
        .subscribe("venue/default/daemon/status", QoS::AtLeastOnce)
        .await
        .unwrap();
    viewer
        .message_on("venue/default/daemon/status", WAIT)
        .await
        .unwrap();
    let metrics = venued.metrics().await.unwrap();
    assert!(
        metrics.contains("reason=\"not_own_filter\"} 5"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("not_own_filter"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A venued on `dir/data` whose presence is fed by BLE gateways over MQTT: `csv` imported, the
/// `gateways` (id, zone) and other `devices` (id, kind) registered, then restarted with
/// `[ble] source = "gateways"` (plus the `ble` lines given) and one scanner per gateway.
async fn gateway_venued(
    dir: &std::path::Path,
    csv: String,
    gateways: &[(&str, &str)],
    devices: &[(&str, &str)],
    ble: &str,
) -> Venued {
    let data = dir.join("data");
    let venued = VenuedBuilder::new(&data).spawn().await.unwrap();
    Admin::new(&venued).import_csv(csv).await.unwrap();
    for (id, _) in gateways {
        register(&venued, id, "gateway").await;
    }
    for (id, kind) in devices {
        register(&venued, id, kind).await;
    }
    venued.terminate(WAIT).await.unwrap();
    let mut config = format!("[ble]\nsource = \"gateways\"\n{ble}");
    for (id, zone) in gateways {
        config.push_str(&format!(
            "[[ble.scanners]]\nid = \"{id}\"\nzone = \"{zone}\"\n"
        ));
    }
    let path = dir.join("venued.toml");
    std::fs::write(&path, config).unwrap();
    VenuedBuilder::new(&data)
        .arg("--config")
        .arg(path.to_str().unwrap())
        .spawn()
        .await
        .unwrap()
}

/// Zone transitions of `attendee` stored so far, oldest first: `(kind, zone)`.
fn transitions(data: &std::path::Path, attendee: &str) -> Vec<(String, Option<String>)> {
    let db = hw_tests::open_db(data).unwrap();
    db.prepare("SELECT kind, zone_id FROM zone_transitions WHERE attendee_id = ?1 ORDER BY at_ms")
        .unwrap()
        .query_map([attendee], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The outside probe: after switching to `hidden`, transitions were stored and sent for 23.5 s
/// (the presence registry reloaded every 30 s). A change of privacy now applies to the very next
/// transition: here two badges walk from zone A to zone B together, and the one whose owner
/// turned `hidden` on the way leaves no trace of the move, while the other's move is stored.
#[tokio::test]
async fn regression_a_privacy_change_applies_to_the_next_transition() {
    const UUID: &str = "f7826da6-4fa2-4e98-8024-bc5b71e0893e";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let csv = format!(
        "id,name,badge_beacon_id,privacy\np1,Pia,ibeacon:{UUID}:7:1,zone\np2,Pål,ibeacon:{UUID}:7:2,zone\n"
    );
    let gateways = [("gw-a", "zone-a"), ("gw-b", "zone-b")];
    let venued = gateway_venued(dir.path(), csv, &gateways, &[], "switch_dwell_secs = 1\n").await;
    let gateways = [
        device(&venued, "gw-a").await.unwrap(),
        device(&venued, "gw-b").await.unwrap(),
    ];
    let ibeacon = |minor: u16| format!("4c000215{}0007{minor:04x}c5", UUID.replace('-', ""));
    // One round of adverts of both badges, heard at `rssi` by gw-a and gw-b (`None`: not heard).
    let round = |rssi: [Option<i32>; 2]| {
        let gateways = &gateways;
        async move {
            for (g, gateway) in gateways.iter().enumerate() {
                let Some(rssi) = rssi[g] else { continue };
                for minor in 1..=2u16 {
                    let raw = json!({"id": format!("C0:00:00:00:00:0{minor}"), "rssi": rssi,
                                     "manufacturerdata": ibeacon(minor)});
                    gateway
                        .client
                        .publish(
                            format!(
                                "venue/default/gateway/gw-{}/BTtoMQTT/C0000000000{minor}",
                                ["a", "b"][g]
                            ),
                            QoS::AtMostOnce,
                            false,
                            raw.to_string(),
                        )
                        .await
                        .unwrap();
                }
            }
        }
    };
    // Both badges enter zone A.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut every = tokio::time::interval(Duration::from_millis(200));
    while transitions(&data, "p1").is_empty() || transitions(&data, "p2").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no entry into zone A"
        );
        round([Some(-55), None]).await;
        every.tick().await;
    }
    assert_eq!(
        transitions(&data, "p1"),
        [("entered".into(), Some("zone-a".into()))]
    );

    // Pia turns hidden; then both walk to zone B.
    let (status, body) = Admin::new(&venued)
        .call(
            Method::PUT,
            "/api/v1/admin/attendees/p1",
            Some(json!({"privacy": "hidden"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while transitions(&data, "p2").len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "p2 never moved to zone B"
        );
        round([Some(-90), Some(-50)]).await;
        every.tick().await;
    }
    assert_eq!(
        transitions(&data, "p2")[1],
        ("moved".into(), Some("zone-b".into()))
    );
    assert_eq!(
        transitions(&data, "p1"),
        [("entered".into(), Some("zone-a".into()))],
        "nothing of Pia's move was stored after she turned hidden"
    );
}

/// A badge given to an attendee through the admin API was unknown to presence until a timed
/// reload of the badge map (up to 30 s), so its first visit was dropped and then stored as a lone
/// `left`. Presence now follows the committed-op stream: the badge's very first entry is stored.
#[tokio::test]
async fn regression_a_badge_registered_through_the_admin_api_is_attributed_at_once() {
    const UUID: &str = "f7826da6-4fa2-4e98-8024-bc5b71e0893e";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Pia has no badge yet; Pål's is known from the start (his entry shows adverts flow).
    let csv =
        format!("id,name,badge_beacon_id,privacy\np1,Pia,,zone\np2,Pål,ibeacon:{UUID}:7:2,zone\n");
    let gateways = [("gw-a", "zone-a")];
    let venued = gateway_venued(dir.path(), csv, &gateways, &[], "").await;
    let gateway = device(&venued, "gw-a").await.unwrap();
    let (status, body) = Admin::new(&venued)
        .call(
            Method::PUT,
            "/api/v1/admin/attendees/p1",
            Some(json!({"badge_beacon_id": format!("ibeacon:{UUID}:7:1")})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    // From the answer on, both badges are heard in zone A.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut every = tokio::time::interval(Duration::from_millis(200));
    while transitions(&data, "p1").is_empty() || transitions(&data, "p2").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no entry into zone A"
        );
        for minor in 1..=2u16 {
            let raw = json!({"id": format!("C0:00:00:00:00:0{minor}"), "rssi": -55,
                "manufacturerdata": format!("4c000215{}0007{minor:04x}c5", UUID.replace('-', ""))});
            gateway
                .client
                .publish(
                    format!("venue/default/gateway/gw-a/BTtoMQTT/C0000000000{minor}"),
                    QoS::AtMostOnce,
                    false,
                    raw.to_string(),
                )
                .await
                .unwrap();
        }
        every.tick().await;
    }
    assert_eq!(
        transitions(&data, "p1"),
        [("entered".into(), Some("zone-a".into()))],
        "the new badge's first visit is its owner's"
    );
}

/// A CONNECT (MQTT 3.1.1) with credentials, a retained QoS 1 will and `keep_alive` seconds.
fn raw_connect(id: &str, password: &str, will: (&str, &str), keep_alive: u16) -> Vec<u8> {
    let string = |s: &str| {
        let mut out = (s.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(s.as_bytes());
        out
    };
    let mut body = string("MQTT");
    body.push(4);
    body.push(0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02); // user, password, will retain, QoS 1, will, clean
    body.extend_from_slice(&keep_alive.to_be_bytes());
    body.extend(string(id));
    body.extend(string(will.0));
    body.extend(string(will.1));
    body.extend(string(id));
    body.extend(string(password));
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

/// The outside probe: a 5 s SIGSTOP of venued published `lost` wills for kiosks with short
/// keep-alives, although they pinged all along (their pings waited in the socket buffer). Here a
/// patient kiosk pings every second with a 2 s keep-alive through a 5 s stop: it stays
/// connected and no will goes out. Once it really falls silent, its will still does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_stopped_daemon_does_not_declare_pinging_kiosks_lost() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let venued = VenuedBuilder::new(&dir.path().join("data"))
        .spawn()
        .await
        .unwrap();
    let password = register(&venued, "kiosk-1", "kiosk").await;
    register(&venued, "wall", "signage").await;
    let addr = venued.mqtt_addr("tcp").await.unwrap();
    let mut wall = device(&venued, "wall").await.unwrap();
    wall.client
        .subscribe("venue/default/kiosk/kiosk-1/status", QoS::AtLeastOnce)
        .await
        .unwrap();

    let mut kiosk = tokio::net::TcpStream::connect(addr).await.unwrap();
    let status = "venue/default/kiosk/kiosk-1/status";
    kiosk
        .write_all(&raw_connect(
            "kiosk-1",
            &password,
            (status, r#"{"v":1,"state":"lost"}"#),
            2,
        ))
        .await
        .unwrap();
    let mut connack = [0u8; 4];
    kiosk.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "accepted");
    let (mut from_broker, mut to_broker) = kiosk.into_split();
    // Everything the broker sends the kiosk is read (PINGRESPs); the socket's end is noted.
    let ended = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        loop {
            if matches!(from_broker.read(&mut buf).await, Ok(0) | Err(_)) {
                return;
            }
        }
    });

    // Pinging every second: 2 s before the stop, 5 s stopped, 6 s after.
    let mut every = tokio::time::interval(Duration::from_secs(1));
    for second in 0..13 {
        every.tick().await;
        let pinged = to_broker.write_all(&[0xC0, 0x00]).await;
        assert!(pinged.is_ok(), "the kiosk's socket broke");
        if second == 2 {
            venued.signal(nix::sys::signal::Signal::SIGSTOP).unwrap();
        } else if second == 7 {
            venued.signal(nix::sys::signal::Signal::SIGCONT).unwrap();
        }
    }
    assert!(!ended.is_finished(), "the kiosk was disconnected");
    let metrics = venued.metrics().await.unwrap();
    assert!(
        metrics.contains("venued_mqtt_keep_alive_expired_total 0"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("keep_alive"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Silence for real: gone after 1.5 × 2 s, and the will reaches the wall.
    let (lost, _) = wall
        .message_on(status, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(lost["state"], "lost");
    tokio::time::timeout(Duration::from_secs(5), ended)
        .await
        .expect("the silent kiosk's connection closed")
        .unwrap();
    assert!(
        venued
            .metrics()
            .await
            .unwrap()
            .contains("venued_mqtt_keep_alive_expired_total 1")
    );
}

/// Found by the signage display, which reconnects under its own id the moment it dropped its
/// link: a connection whose link failed to start (the router had just ended the previous one)
/// left its will handler behind, and the next connection under that id panicked a broker task
/// on it (`try_send(..).unwrap()` on a closed channel). Here a display connects, disconnects and
/// reconnects at once, and takes itself over, many times: no panic, its last connection works,
/// and its will still goes out when it vanishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_device_reconnecting_at_once_under_its_id_never_panics_the_broker() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let venued = VenuedBuilder::new(&dir.path().join("data"))
        .spawn()
        .await
        .unwrap();
    let password = register(&venued, "door", "signage").await;
    let addr = venued.mqtt_addr("tcp").await.unwrap();
    let status = "venue/default/signage/door/status";
    let connect = raw_connect("door", &password, (status, r#"{"v":1,"state":"lost"}"#), 30);
    register(&venued, "wall", "signage").await;
    let mut wall = device(&venued, "wall").await.unwrap();
    wall.client
        .subscribe(status, QoS::AtLeastOnce)
        .await
        .unwrap();
    for _ in 0..100 {
        // Connect, say goodbye and connect again without waiting; and a takeover mid-way.
        let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
        first.write_all(&connect).await.unwrap();
        let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
        second.write_all(&connect).await.unwrap();
        first.write_all(&[0xe0, 0x00]).await.unwrap();
        drop(first);
        second.write_all(&[0xe0, 0x00]).await.unwrap();
        drop(second);
    }
    // A connection of the loop the broker has not handled yet would take a new one over (as
    // MQTT says a later CONNECT of the same id does): wait until the broker has closed all 200.
    await_connections_closed(&venued, 200, Duration::from_secs(30)).await;
    // No CONNACK at all is the bug this test pins.
    let last = mqtt::connect(
        addr,
        Options {
            id: "door",
            credentials: Some(("door", &password)),
            will: Some((status.into(), r#"{"v":1,"state":"lost"}"#.into())),
            keep_alive: None,
        },
    )
    .await
    .expect("the display connects once the others are handled");
    last.client
        .publish(status, QoS::AtLeastOnce, true, r#"{"v":1,"state":"ready"}"#)
        .await
        .unwrap();
    loop {
        let (message, _) = wall
            .message_on(status, Duration::from_secs(10))
            .await
            .unwrap();
        if message["state"] == "ready" {
            break;
        }
    }
    // Its will still goes out when it vanishes.
    last.vanish();
    loop {
        let (message, _) = wall
            .message_on(status, Duration::from_secs(30))
            .await
            .unwrap();
        if message["state"] == "lost" {
            break;
        }
    }
    let log = venued.log();
    assert!(!log.contains("panicked"), "the broker panicked:\n{log}");
}

/// Waits until the broker has closed at least `n` client connections since the start
/// (`venued_mqtt_connections_closed_total`, counted once the broker has closed its side).
async fn await_connections_closed(venued: &Venued, n: usize, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let closed = venued
            .metric_sum("venued_mqtt_connections_closed_total")
            .await
            .unwrap();
        if closed >= n as f64 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broker closed {closed} of {n} connections within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Drives a bare rumqttc event loop until `done` says so; an error when the connection fails or
/// `done` is not met within [`WAIT`].
async fn poll_until(
    events: &mut rumqttc::EventLoop,
    mut done: impl FnMut(&rumqttc::Event) -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.poll())
            .await
            .map_err(|_| anyhow::anyhow!("not within {WAIT:?}"))??;
        if done(&event) {
            return Ok(());
        }
    }
}

/// A display with a persistent session (clean session off) that goes away gets, when it comes
/// back, the QoS 1 messages published meanwhile, in order, and is told its session was kept.
/// Coming back with a clean session is told none was kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_gets_the_qos1_messages_it_missed_after_reconnecting() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
    const MISSED: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let venued = VenuedBuilder::new(&dir.path().join("data"))
        .spawn()
        .await
        .unwrap();
    let addr = venued.mqtt_addr("tcp").await.unwrap();
    let password = register(&venued, "hall", "signage").await;
    register(&venued, "wall", "signage").await;
    register(&venued, "gw-1", "gateway").await;
    let filter = "venue/default/alert/info/+";
    let topic = "venue/default/alert/info/gw-1";
    let session = |clean: bool| {
        let mut options = MqttOptions::new("hall", addr.ip().to_string(), addr.port());
        options.set_credentials("hall", &password);
        options.set_clean_session(clean);
        options.set_keep_alive(Duration::from_secs(15));
        options
    };
    let connected = |present: bool| move |e: &Event| matches!(e, Event::Incoming(Packet::ConnAck(a)) if a.session_present == present);

    // Subscribe in a persistent session, then leave with DISCONNECT.
    let (hall, mut events) = AsyncClient::new(session(false), 64);
    poll_until(&mut events, connected(false)).await.unwrap();
    hall.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    poll_until(&mut events, |e| {
        matches!(e, Event::Incoming(Packet::SubAck(_)))
    })
    .await
    .unwrap();
    hall.disconnect().await.unwrap();
    let _ = poll_until(&mut events, |_| false).await;
    drop(events);
    await_connections_closed(&venued, 1, WAIT).await;

    // Meanwhile: a gateway publishes; another display sees the last one, so the broker has all.
    let mut wall = device(&venued, "wall").await.unwrap();
    wall.client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .unwrap();
    let gateway = device(&venued, "gw-1").await.unwrap();
    mqtt::await_subscribed(&gateway, topic, std::slice::from_mut(&mut wall))
        .await
        .unwrap();
    for seq in 0..MISSED {
        gateway
            .client
            .publish(topic, QoS::AtLeastOnce, false, seq.to_string())
            .await
            .unwrap();
    }
    let last = (MISSED - 1).to_string();
    loop {
        match wall.next(WAIT).await {
            Some(Received::Message(_, payload, _)) if payload == last.as_bytes() => break,
            Some(Received::Message(..)) => {}
            other => panic!("the other display stopped getting messages: {other:?}"),
        }
    }

    // Back in the same session: told it was kept, and every missed message arrives, in order.
    let (_hall, mut events) = AsyncClient::new(session(false), 64);
    poll_until(&mut events, connected(true))
        .await
        .expect("the session was kept");
    let mut got = Vec::new();
    poll_until(&mut events, |e| {
        if let Event::Incoming(Packet::Publish(p)) = e
            && p.payload != mqtt::PROBE
        {
            got.push(String::from_utf8_lossy(&p.payload).into_owned());
        }
        got.len() == MISSED
    })
    .await
    .unwrap_or_else(|e| panic!("{} of {MISSED} missed messages came back: {e}", got.len()));
    let expected: Vec<String> = (0..MISSED).map(|s| s.to_string()).collect();
    assert_eq!(got, expected);
    drop(events);
    // The dropped connection is gone before the same client id connects again: what is under
    // test is the session, not a takeover racing the old connection's teardown.
    await_connections_closed(&venued, 2, WAIT).await;

    // A clean session starts empty.
    let (_hall, mut events) = AsyncClient::new(session(true), 64);
    poll_until(&mut events, connected(false))
        .await
        .expect("a clean session is never present");
}

/// #14, found by the persistent-session test in CI: a client that takes its own id over (a
/// display whose old connection the broker has not noticed is dead) must keep the new
/// connection. Each round, "hall" connects and subscribes; a second connection under the same
/// id takes it over without the first saying goodbye; the new one must still get a message
/// published after the takeover, and must not be closed by the old one's teardown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_takeover_keeps_the_new_connection() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
    let dir = tempfile::tempdir().unwrap();
    let venued = VenuedBuilder::new(&dir.path().join("data"))
        .spawn()
        .await
        .unwrap();
    let addr = venued.mqtt_addr("tcp").await.unwrap();
    let password = register(&venued, "hall", "signage").await;
    register(&venued, "gw-1", "gateway").await;
    let gateway = device(&venued, "gw-1").await.unwrap();
    let filter = "venue/default/alert/info/+";
    let topic = "venue/default/alert/info/gw-1";
    let options = || {
        let mut o = MqttOptions::new("hall", addr.ip().to_string(), addr.port());
        o.set_credentials("hall", &password);
        o.set_keep_alive(Duration::from_secs(15));
        o
    };
    let connected = |e: &Event| matches!(e, Event::Incoming(Packet::ConnAck(_)));
    for round in 0..20 {
        let (old, mut old_events) = AsyncClient::new(options(), 64);
        poll_until(&mut old_events, connected).await.unwrap();
        old.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        poll_until(&mut old_events, |e| {
            matches!(e, Event::Incoming(Packet::SubAck(_)))
        })
        .await
        .unwrap();
        // The takeover: the old connection stays open on our side until the broker closes it.
        let (new, mut new_events) = AsyncClient::new(options(), 64);
        poll_until(&mut new_events, connected).await.unwrap();
        new.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        poll_until(&mut new_events, |e| {
            matches!(e, Event::Incoming(Packet::SubAck(_)))
        })
        .await
        .unwrap_or_else(|e| panic!("round {round}: the new connection's SUBACK: {e}"));
        // The old one is closed by the broker.
        let closed = tokio::time::timeout(WAIT, async {
            loop {
                if old_events.poll().await.is_err() {
                    return;
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "round {round}: the old connection was not closed"
        );
        let payload = format!(r#"{{"v":1,"id":"r{round}","message":"round {round}"}}"#);
        gateway
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
        poll_until(
            &mut new_events,
            |e| matches!(e, Event::Incoming(Packet::Publish(p)) if p.payload == payload.as_bytes()),
        )
        .await
        .unwrap_or_else(|e| panic!("round {round}: the new connection got no message: {e}"));
        new.disconnect().await.unwrap();
        let _ = poll_until(&mut new_events, |_| false).await;
    }
}
