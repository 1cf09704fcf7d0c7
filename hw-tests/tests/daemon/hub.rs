//! The attendee hub's first slice through a real venued, with a real WebSocket client
//! (tokio-tungstenite) and MQTT clients: tokens, durable acked messages, idempotent retries,
//! resume after kill -9, and the MQTT bridge in both directions without loops.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hw_tests::mqtt::{self, Options};
use hw_tests::{Admin, Venued, VenuedBuilder};
use reqwest::Method;
use rumqttc::QoS;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A venued with the demo event (its zones, sessions and attendees) on a fresh data directory.
pub(crate) async fn demo() -> (tempfile::TempDir, Venued) {
    let dir = tempfile::tempdir().unwrap();
    let venued = VenuedBuilder::new(&dir.path().join("data"))
        .arg("--demo")
        .spawn()
        .await
        .unwrap();
    (dir, venued)
}

/// Sends `subscribe` with `payload`; the ack's payload.
pub(crate) async fn subscribe(socket: &mut Socket, payload: Value) -> Value {
    send(socket, "subscribe", "sub", payload).await;
    next(socket, "ack").await
}

/// A token for `attendee`, who is made an attendee first if need be (tokens of anyone else
/// open nothing).
pub(crate) async fn token(venued: &Venued, attendee: &str, roles: &[&str]) -> String {
    Admin::new(venued).ensure_attendee(attendee).await.unwrap();
    let (status, body) = Admin::new(venued)
        .call(
            Method::POST,
            "/api/v1/admin/tokens",
            Some(json!({"attendee_id": attendee, "roles": roles})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_string()
}

pub(crate) async fn connect(venued: &Venued, token: &str) -> (Socket, Value) {
    let url = format!("ws://{}/ws?token={token}", venued.addr);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let welcome = next(&mut socket, "welcome").await;
    (socket, welcome)
}

/// The next frame of `kind` (others are skipped), its payload.
pub(crate) async fn next(socket: &mut Socket, kind: &str) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .unwrap_or_else(|_| panic!("no `{kind}` frame within {WAIT:?}"))
            .expect("socket open")
            .unwrap();
        if let Message::Text(text) = message {
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["type"] == kind {
                return frame["payload"].clone();
            }
        }
    }
}

/// The close code the server ends the connection with (frames before it are skipped).
async fn close_code(socket: &mut Socket) -> Option<u16> {
    tokio::time::timeout(WAIT, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .unwrap()
}

pub(crate) async fn send(socket: &mut Socket, kind: &str, id: &str, payload: Value) {
    let frame = json!({"type": kind, "id": id, "payload": payload});
    socket.send(Message::text(frame.to_string())).await.unwrap();
}

async fn post(socket: &mut Socket, id: &str, content: &str) -> Value {
    send(
        socket,
        "message.send",
        id,
        json!({"channel": "announcements", "content": content}),
    )
    .await;
    next(socket, "ack").await
}

#[tokio::test]
async fn announcements_are_durable_resumable_and_bridged_to_mqtt_without_loops() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let venued = VenuedBuilder::new(&data)
        .arg("--demo")
        .spawn()
        .await
        .unwrap();
    let staff = token(&venued, "s1", &["staff"]).await;
    let attendee = token(&venued, "a1", &["attendee"]).await;

    // No token, or a forged one: 401 before any upgrade.
    let refused = reqwest::get(venued.url("/ws")).await.unwrap();
    assert_eq!(refused.status(), 401);
    let forged = format!("{}x", &attendee[..attendee.len() - 1]);
    let refused =
        tokio_tungstenite::connect_async(format!("ws://{}/ws?token={forged}", venued.addr)).await;
    assert!(format!("{:?}", refused.err()).contains("401"));

    let (mut reader, welcome) = connect(&venued, &attendee).await;
    assert_eq!(welcome["user_id"], "a1");
    let epoch = welcome["epoch"].as_str().unwrap().to_string();
    assert_eq!(
        subscribe(&mut reader, json!({"channels": ["announcements"]})).await["channels"],
        json!(["announcements"])
    );
    // A zone channel carries the zone's occupancy (the demo's simulated badges fill it).
    assert_eq!(
        subscribe(&mut reader, json!({"channels": ["zone:hall-a"]})).await["channels"],
        json!(["zone:hall-a"])
    );
    // (from presence directly, not through MQTT).
    let occupancy = next(&mut reader, "zone.occupancy").await;
    assert_eq!(occupancy["zone"], "hall-a", "{occupancy}");
    assert!(occupancy["occupancy"].is_u64(), "{occupancy}");
    let (mut writer, _) = connect(&venued, &staff).await;

    // A display on MQTT sees announcements; a kiosk raises an alert.
    let wall_pw = Admin::new(&venued).device("wall", "signage").await.unwrap();
    let kiosk_pw = Admin::new(&venued)
        .device("kiosk-1", "kiosk")
        .await
        .unwrap();
    let addr = venued.mqtt_addr("tcp").await.unwrap();
    let mut wall = mqtt::connect(addr, Options::device("wall", &wall_pw))
        .await
        .unwrap();
    wall.client
        .subscribe("venue/default/hub/announcements", QoS::AtLeastOnce)
        .await
        .unwrap();
    let kiosk = mqtt::connect(addr, Options::device("kiosk-1", &kiosk_pw))
        .await
        .unwrap();

    let first = post(&mut writer, "m-1", "Keynote moves to Hall B").await;
    assert_eq!(
        (
            first["status"].clone(),
            first["seq"].clone(),
            first["replayed"].clone()
        ),
        (json!("ok"), json!(1), json!(false)),
        "{first}"
    );
    let delivered = next(&mut reader, "message.new").await;
    assert_eq!(
        (delivered["seq"].clone(), delivered["content"].clone()),
        (json!(1), json!("Keynote moves to Hall B"))
    );
    let (on_mqtt, _) = wall
        .message_on("venue/default/hub/announcements", WAIT)
        .await
        .unwrap();
    assert_eq!(on_mqtt["content"], "Keynote moves to Hall B");

    // The retry (same frame id) gets the original ack and creates nothing: the next message
    // the reader sees is seq 2.
    let retry = post(&mut writer, "m-1", "Keynote moves to Hall B").await;
    assert_eq!(
        (retry["seq"].clone(), retry["replayed"].clone()),
        (json!(1), json!(true))
    );
    // Attendees may not post announcements.
    let denied = post(&mut reader, "x-1", "hello all").await;
    assert_eq!(denied["error"]["code"], "forbidden", "{denied}");

    // MQTT alert → announcement; it is not published back to MQTT. Sent twice (a QoS 1
    // redelivery): the envelope id makes it one message (the resume below sees exactly 2, 3).
    for _ in 0..2 {
        kiosk
            .client
            .publish(
                "venue/default/alert/warning/kiosk-1",
                QoS::AtLeastOnce,
                false,
                r#"{"v":1,"id":"al-1","message":"badge printer jammed"}"#,
            )
            .await
            .unwrap();
    }
    let alert = next(&mut reader, "message.new").await;
    assert_eq!(
        (alert["seq"].clone(), alert["sender"].clone()),
        (json!(2), json!("mqtt:alert/warning/kiosk-1"))
    );
    assert!(
        alert["content"]
            .as_str()
            .unwrap()
            .contains("badge printer jammed")
    );
    post(&mut writer, "m-2", "Lunch is served").await;
    assert_eq!(next(&mut reader, "message.new").await["seq"], 3);
    let (after, _) = wall
        .message_on("venue/default/hub/announcements", WAIT)
        .await
        .unwrap();
    assert_eq!(
        after["content"], "Lunch is served",
        "the bridged alert looped back to MQTT"
    );

    // kill -9: what was acked is there; a client resuming from seq 1 gets exactly 2 and 3.
    venued.kill9().await.unwrap();
    let venued = VenuedBuilder::new(&data).spawn().await.unwrap();
    let (mut reader, welcome) = connect(&venued, &attendee).await;
    assert_eq!(welcome["epoch"], epoch.as_str());
    subscribe(
        &mut reader,
        json!({"channels": ["announcements"], "epoch": epoch, "resume": {"announcements": 1}}),
    )
    .await;
    let missed = next(&mut reader, "sync.response").await;
    let seqs: Vec<i64> = missed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [2, 3], "{missed}");
    assert_eq!(missed["too_large"], false);

    // More than 500 missed: `too_large`, and the client refetches. The 500 come in as
    // alerts through the bridge (a staff member would be rate-limited at 10/s).
    let kiosk = mqtt::connect(
        venued.mqtt_addr("tcp").await.unwrap(),
        Options::device("kiosk-1", &kiosk_pw),
    )
    .await
    .unwrap();
    for i in 0..500 {
        let alert = json!({"v": 1, "id": format!("bulk-{i}"), "message": "filler"});
        kiosk
            .client
            .publish(
                "venue/default/alert/info/kiosk-1",
                QoS::AtLeastOnce,
                false,
                alert.to_string(),
            )
            .await
            .unwrap();
    }
    while next(&mut reader, "message.new").await["seq"] != 503 {}
    send(
        &mut reader,
        "subscribe",
        "sub-3",
        json!({"channels": ["announcements"], "epoch": epoch, "resume": {"announcements": 1}}),
    )
    .await;
    let big = next(&mut reader, "sync.response").await;
    assert_eq!(
        (big["too_large"].clone(), big["has_more"].clone()),
        (json!(true), json!(true))
    );
    // Another epoch means "start fresh": no gap-fill at all.
    subscribe(
        &mut reader,
        json!({"channels": ["announcements"], "epoch": "other", "resume": {"announcements": 1}}),
    )
    .await;
    send(&mut reader, "ping", "p-1", json!({})).await;
    let pong = next(&mut reader, "pong").await;
    assert_eq!(pong["ref_id"], "p-1");

    // Posting is rate-limited per user (10/s, burst 20), over every transport.
    let (mut chatty, _) = connect(&venued, &staff).await;
    // 100 sent back to back: even at 50 ms per commit on a slow machine, the bucket (20 plus
    // 10/s) runs dry long before the last.
    for i in 0..100 {
        send(
            &mut chatty,
            "message.send",
            &format!("r-{i}"),
            json!({"channel": "announcements", "content": "spam"}),
        )
        .await;
    }
    let mut limited = None;
    for _ in 0..100 {
        let message = tokio::time::timeout(WAIT, chatty.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let frame: Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
        if frame["type"] == "error" {
            limited = Some(frame["payload"].clone());
            break;
        }
    }
    let limited = limited.expect("100 messages at once were not rate-limited");
    assert_eq!(limited["code"], "rate_limited", "{limited}");
    assert!(
        limited["retry_after_ms"].as_u64().unwrap() <= 100,
        "{limited}"
    );
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_connection_stays() {
    let (_dir, venued) = demo().await;
    Admin::new(&venued).ensure_attendee("a1").await.unwrap();
    // The token from the command line, as a newcomer would get one.
    let minted = std::process::Command::new(hw_tests::binary("venued"))
        .arg("--data-dir")
        .arg(&venued.data_dir)
        .args(["token", "--attendee", "a1"])
        .output()
        .unwrap();
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let attendee = String::from_utf8(minted.stdout).unwrap().trim().to_string();
    let (mut socket, welcome) = connect(&venued, &attendee).await;
    assert_eq!(welcome["user_id"], "a1");
    socket.send(Message::text("not json")).await.unwrap();
    assert_eq!(next(&mut socket, "error").await["code"], "malformed");
    socket.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(
        next(&mut socket, "error").await["code"],
        "binary_not_supported"
    );
    send(&mut socket, "teleport", "t-1", json!({})).await;
    assert_eq!(next(&mut socket, "error").await["code"], "unsupported_type");
    send(
        &mut socket,
        "subscribe",
        "s-1",
        json!({"channels": ["zone:nowhere", "dm:a:b"]}),
    )
    .await;
    let ack = next(&mut socket, "ack").await;
    assert_eq!(ack["refused"].as_array().unwrap().len(), 2, "{ack}");
    // A frame over 64 KiB closes the connection with 1009.
    socket
        .send(Message::text("x".repeat(70 * 1024)))
        .await
        .unwrap();
    let closed = close_code(&mut socket).await;
    assert_eq!(closed, Some(1009));
    assert_eq!(
        reqwest::get(venued.url("/readyz")).await.unwrap().status(),
        200
    );

    // A text frame that is not UTF-8 closes with 1007 (a raw frame: the client's `Message`
    // type would not carry one).
    let (mut socket, _) = connect(&venued, &attendee).await;
    let raw = tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
        vec![b'{', 0xff, 0xfe, b'}'],
        tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
            tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
        ),
        true,
    );
    socket.send(Message::Frame(raw)).await.unwrap();
    let closed = close_code(&mut socket).await;
    assert_eq!(closed, Some(1007));

    // A sixth connection of one attendee closes the oldest, with the reason.
    let (mut oldest, _) = connect(&venued, &attendee).await;
    let mut others = Vec::new();
    for _ in 0..5 {
        others.push(connect(&venued, &attendee).await.0);
    }
    let reason = tokio::time::timeout(WAIT, async {
        loop {
            match oldest.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.reason.to_string()),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(reason.as_deref(), Some("too_many_connections"));
}

#[tokio::test]
async fn http_fallbacks_post_idempotently_and_long_polls_wake_on_new_messages() {
    let (_dir, venued) = demo().await;
    let staff = token(&venued, "s1", &["staff"]).await;
    let attendee = token(&venued, "a1", &["attendee"]).await;
    let http = reqwest::Client::new();
    let url = venued.url("/api/v1/channels/announcements/messages");
    let posting = |token: &str, key: Option<&str>, content: &str| {
        let mut request = http
            .post(&url)
            .bearer_auth(token)
            .json(&json!({"content": content}));
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send()
    };

    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    let first = posting(&staff, Some("k-1"), "Doors open").await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = posting(&staff, Some("k-1"), "Doors open").await.unwrap();
    assert_eq!(again.status(), 200);
    assert!(again.headers().contains_key("idempotent-replayed"));
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_eq!(posting(&staff, None, "no key").await.unwrap().status(), 400);
    assert_eq!(
        posting(&attendee, Some("k-2"), "hi")
            .await
            .unwrap()
            .status(),
        403
    );

    // A long-poll with nothing new waits, and the next message (sent over WebSocket) wakes it.
    let poll = {
        let (http, url, attendee) = (http.clone(), url.clone(), attendee.clone());
        tokio::spawn(async move {
            http.get(format!("{url}?after=1&wait=20"))
                .bearer_auth(attendee)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    hw_tests::wait_for_json(
        &venued.url("/api/v1/status"),
        None,
        "the long-poll waiting",
        WAIT,
        |s| s["hub"]["long_polls_waiting"] == 1,
    )
    .await
    .unwrap();
    let (mut reader, _) = connect(&venued, &attendee).await;
    subscribe(&mut reader, json!({"channels": ["announcements"]})).await;
    let (mut writer, _) = connect(&venued, &staff).await;
    let ack = post(&mut writer, "w-1", "Coffee in the foyer").await;
    assert_eq!(ack["seq"], 2);
    let polled = tokio::time::timeout(WAIT, poll).await.unwrap().unwrap();
    let over_ws = next(&mut reader, "message.new").await;
    assert_eq!(
        polled["messages"],
        json!([over_ws]),
        "HTTP and WebSocket deliver the same message"
    );
    let all: Value = http
        .get(&url)
        .bearer_auth(&attendee)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let contents: Vec<&str> = all["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        ["Doors open", "Coffee in the foyer"],
        "the retried POST created nothing"
    );
}

#[tokio::test]
async fn viewers_see_location_changes_only_as_far_as_each_persons_privacy_allows() {
    const UUID: &str = "f7826da6-4fa2-4e98-8024-bc5b71e0893e";
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("venued.toml");
    std::fs::write(
        &config,
        "[ble]\nsource = \"gateways\"\n[[ble.scanners]]\nid = \"gw-a\"\nzone = \"hall-a\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    // First run: the registry. The presence task loads it at start (and every 30 s after).
    let venued = VenuedBuilder::new(&data)
        .arg("--demo")
        .spawn()
        .await
        .unwrap();
    let admin = Admin::new(&venued);
    let csv = format!(
        "id,name,badge_beacon_id,privacy\n\
         p-zone,Zia,ibeacon:{UUID}:77:1,zone\n\
         p-venue,Vic,ibeacon:{UUID}:77:2,venue\n\
         p-hidden,Hal,ibeacon:{UUID}:77:3,hidden\n"
    );
    admin.import_csv(csv).await.unwrap();
    let gw_pw = admin.device("gw-a", "gateway").await.unwrap();
    venued.terminate(WAIT).await.unwrap();
    let venued = VenuedBuilder::new(&data)
        .arg("--demo")
        .arg("--config")
        .arg(config.to_str().unwrap())
        .spawn()
        .await
        .unwrap();
    let viewer = token(&venued, "a1", &["attendee"]).await;
    let (mut socket, _) = connect(&venued, &viewer).await;
    send(
        &mut socket,
        "presence.subscribe",
        "ps-1",
        json!({"user_ids": ["p-zone", "p-venue", "p-hidden"]}),
    )
    .await;
    assert_eq!(
        next(&mut socket, "ack").await["user_ids"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let gateway = mqtt::connect(
        venued.mqtt_addr("tcp").await.unwrap(),
        Options::device("gw-a", &gw_pw),
    )
    .await
    .unwrap();
    let publisher = tokio::spawn(async move {
        for _ in 0..120 {
            for minor in 1..=3u16 {
                let data = format!("4c000215{}004d{minor:04x}c5", UUID.replace('-', ""));
                let advert = json!({"id": format!("C0:00:00:00:01:{minor:02x}"), "rssi": -60, "manufacturerdata": data});
                let topic = format!("venue/default/gateway/gw-a/BTtoMQTT/C000000001{minor:02X}");
                let _ = gateway
                    .client
                    .publish(topic, QoS::AtMostOnce, false, advert.to_string())
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let mut seen = std::collections::BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < 2 {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = tokio::time::timeout(left, next(&mut socket, "presence.changed"))
            .await
            .expect("both changes within 60 s");
        // Online status frames (`status`) come too; this test is about locations (`kind`).
        if frame.get("kind").is_some() {
            seen.insert(frame["user_id"].as_str().unwrap().to_string(), frame);
        }
    }
    // Anything for the hidden badge would have been queued with the others, before this pong.
    send(&mut socket, "ping", "p", json!({})).await;
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message {
            let frame: Value = serde_json::from_str(&text).unwrap();
            assert_ne!(
                frame["payload"]["user_id"], "p-hidden",
                "a hidden attendee's location left the engine"
            );
            if frame["type"] == "pong" {
                break;
            }
        }
    }
    publisher.abort();
    assert_eq!(
        (
            seen["p-zone"]["kind"].clone(),
            seen["p-zone"]["zone"].clone()
        ),
        (json!("entered"), json!("hall-a"))
    );
    assert_eq!(
        (
            seen["p-venue"]["kind"].clone(),
            seen["p-venue"]["zone"].clone()
        ),
        (json!("entered"), Value::Null)
    );
    assert!(!seen.contains_key("p-hidden"));
}

#[tokio::test]
async fn typing_indicators_reach_the_others_in_the_channel_at_most_once_a_second() {
    let (_dir, venued) = demo().await;
    let a1 = token(&venued, "a1", &["attendee"]).await;
    let (mut typist, _) = connect(&venued, &a1).await;
    // The same attendee on a second phone shares the once-a-second budget.
    let (mut second_phone, _) = connect(&venued, &a1).await;
    let (mut reader, _) = connect(&venued, &token(&venued, "a2", &["attendee"]).await).await;
    for socket in [&mut typist, &mut second_phone, &mut reader] {
        subscribe(socket, json!({"channels": ["zone:hall-a"]})).await;
    }
    send(
        &mut typist,
        "typing.start",
        "t1",
        json!({"channel": "zone:hall-a"}),
    )
    .await;
    send(
        &mut second_phone,
        "typing.start",
        "t2",
        json!({"channel": "zone:hall-a"}),
    )
    .await;
    // Ordered after the second phone's start: its pong comes once the start was handled.
    send(&mut second_phone, "ping", "p", json!({})).await;
    next(&mut second_phone, "pong").await;
    send(
        &mut typist,
        "typing.stop",
        "t3",
        json!({"channel": "zone:hall-a"}),
    )
    .await;
    let first = next(&mut reader, "typing.indicator").await;
    assert_eq!(
        (
            first["user_id"].clone(),
            first["typing"].clone(),
            first["expires_in_ms"].clone()
        ),
        (json!("a1"), json!(true), json!(5000))
    );
    // The second start within the second (from the other phone) was not passed on: the next
    // one is the stop.
    let second = next(&mut reader, "typing.indicator").await;
    assert_eq!(second["typing"], false, "{second}");
    // Typing where you are not subscribed is refused.
    send(
        &mut typist,
        "typing.start",
        "t4",
        json!({"channel": "zone:hall-b"}),
    )
    .await;
    assert_eq!(next(&mut typist, "error").await["code"], "not_subscribed");
}

#[tokio::test]
async fn server_sent_events_carry_the_same_frames_and_resume_with_last_event_id() {
    let (_dir, venued) = demo().await;
    let staff = token(&venued, "s1", &["staff"]).await;
    let attendee = token(&venued, "a1", &["attendee"]).await;
    let http = reqwest::Client::new();
    let url = venued.url("/api/v1/channels/announcements/messages");
    for (key, content) in [("k-1", "one"), ("k-2", "two")] {
        let r = http
            .post(&url)
            .bearer_auth(&staff)
            .header("idempotency-key", key)
            .json(&json!({"content": content}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    // Resume after seq 1: the gap (seq 2) first, then live messages.
    let mut stream = http
        .get(venued.url(&format!(
            "/api/v1/stream?channels=announcements&token={attendee}"
        )))
        .header("last-event-id", "announcements=1")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut text = String::new();
    let mut events = Vec::new();
    let mut read_event = async || -> (String, Value) {
        loop {
            if let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                let id = block
                    .lines()
                    .find_map(|l| l.strip_prefix("id: "))
                    .unwrap_or_default()
                    .to_string();
                if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                    return (id, serde_json::from_str(data).unwrap());
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, stream.chunk())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    events.push(read_event().await);
    let r = http
        .post(&url)
        .bearer_auth(&staff)
        .header("idempotency-key", "k-3")
        .json(&json!({"content": "three"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    events.push(read_event().await);
    let got: Vec<(String, i64, String)> = events
        .iter()
        .map(|(id, f)| {
            assert_eq!(f["type"], "message.new");
            (
                id.clone(),
                f["payload"]["seq"].as_i64().unwrap(),
                f["payload"]["content"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("announcements=2".to_string(), 2, "two".to_string()),
            ("announcements=3".to_string(), 3, "three".to_string())
        ]
    );
}

/// The long-poll for networks that pass neither a WebSocket nor an event stream: what was
/// missed since `resume` at once, else the next message when it comes, else an empty answer
/// after `wait`; the answer's `resume` chains the polls so nothing falls between them.
#[tokio::test]
async fn the_long_poll_answers_with_missed_then_next_messages_and_chains_by_position() {
    let (_dir, venued) = demo().await;
    let staff = token(&venued, "s1", &["staff"]).await;
    let attendee = token(&venued, "a1", &["attendee"]).await;
    let http = reqwest::Client::new();
    let url = venued.url("/api/v1/channels/announcements/messages");
    let post = async |key: &str, content: &str| {
        let r = http
            .post(&url)
            .bearer_auth(&staff)
            .header("idempotency-key", key)
            .json(&json!({"content": content}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    };
    post("k-1", "one").await;
    post("k-2", "two").await;
    let poll = async |query: &str| -> (u16, Value) {
        let r = http
            .get(venued.url(&format!("/api/v1/poll?{query}")))
            .bearer_auth(&attendee)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    };
    let contents = |answer: &Value| -> Vec<(String, i64)> {
        answer["frames"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["type"] == "message.new")
            .map(|f| {
                (
                    f["payload"]["content"].as_str().unwrap().to_string(),
                    f["payload"]["seq"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    // Missed since seq 1: answered at once, with the position to poll from next.
    let (status, missed) = poll("channels=announcements&resume=announcements=1&wait=25").await;
    assert_eq!(status, 200, "{missed}");
    assert_eq!(contents(&missed), [("two".to_string(), 2)]);
    assert_eq!(missed["resume"], "announcements=2");
    assert!(missed["epoch"].is_string());
    // Nothing new: the poll waits, and the next message answers it (posted while it waits, or
    // just before it subscribed: the position catches it either way).
    let waiting = poll("channels=announcements&resume=announcements=2&wait=25");
    let (answer, ()) = tokio::join!(waiting, post("k-3", "three"));
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert_eq!(contents(&answer.1), [("three".to_string(), 3)]);
    assert_eq!(answer.1["resume"], "announcements=3");
    // Nothing within `wait`: an empty answer, the position unchanged.
    let (_, quiet) = poll("channels=announcements&resume=announcements=3&wait=1").await;
    assert_eq!(quiet["frames"], json!([]));
    assert_eq!(quiet["resume"], "announcements=3");
    // Someone else's conversation, and no channel at all, are refused with what to do.
    let (status, refused) = poll("channels=dm:a2:a3&wait=1").await;
    assert_eq!(status, 403, "{refused}");
    let (status, refused) = poll("channels=&wait=1").await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("channels")
    );
}

#[tokio::test]
async fn read_marks_are_stored_forward_only_and_receipts_reach_the_others() {
    let (_dir, venued) = demo().await;
    let (mut a, _) = connect(&venued, &token(&venued, "a1", &["attendee"]).await).await;
    let (mut b, _) = connect(&venued, &token(&venued, "a2", &["attendee"]).await).await;
    for socket in [&mut a, &mut b] {
        subscribe(socket, json!({"channels": ["zone:hall-a"]})).await;
    }
    for i in 0..3 {
        send(
            &mut b,
            "message.send",
            &format!("m{i}"),
            json!({"channel": "zone:hall-a", "content": "hi"}),
        )
        .await;
        next(&mut b, "ack").await;
    }
    send(
        &mut a,
        "read.mark",
        "r1",
        json!({"channel": "zone:hall-a", "seq": 2}),
    )
    .await;
    assert_eq!(next(&mut a, "ack").await["seq"], 2);
    let receipt = next(&mut b, "read.receipt").await;
    assert_eq!(
        (receipt["user_id"].clone(), receipt["seq"].clone()),
        (json!("a1"), json!(2))
    );
    // Backwards is ignored, past the end is clamped.
    send(
        &mut a,
        "read.mark",
        "r2",
        json!({"channel": "zone:hall-a", "seq": 1}),
    )
    .await;
    assert_eq!(next(&mut a, "ack").await["seq"], 2);
    send(
        &mut a,
        "read.mark",
        "r3",
        json!({"channel": "zone:hall-a", "seq": 99}),
    )
    .await;
    assert_eq!(next(&mut a, "ack").await["seq"], 3);
    let stored: i64 = hw_tests::open_db(&venued.data_dir)
        .unwrap()
        .query_row("SELECT seq FROM read_marks WHERE user_id = 'a1'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(stored, 3);
}

#[tokio::test]
async fn direct_messages_reach_only_the_two_people() {
    let (_dir, venued) = demo().await;
    let (mut a, _) = connect(&venued, &token(&venued, "a1", &["attendee"]).await).await;
    let (mut b, _) = connect(&venued, &token(&venued, "a2", &["attendee"]).await).await;
    let (mut c, _) = connect(&venued, &token(&venued, "a3", &["staff"]).await).await;
    let joined = subscribe(&mut b, json!({"channels": ["dm:a1:a2"]})).await;
    assert_eq!(joined["channels"], json!(["dm:a1:a2"]));
    let refused = subscribe(&mut c, json!({"channels": ["dm:a1:a2"]})).await;
    assert_eq!(refused["refused"][0]["code"], "forbidden", "{refused}");
    send(
        &mut a,
        "message.send",
        "d1",
        json!({"channel": "dm:a1:a2", "content": "coffee?"}),
    )
    .await;
    assert_eq!(next(&mut a, "ack").await["status"], "ok");
    let got = next(&mut b, "message.new").await;
    assert_eq!(
        (got["sender"].clone(), got["content"].clone()),
        (json!("a1"), json!("coffee?"))
    );
    send(
        &mut c,
        "message.send",
        "d2",
        json!({"channel": "dm:a1:a2", "content": "me too"}),
    )
    .await;
    assert_eq!(next(&mut c, "ack").await["error"]["code"], "forbidden");
}

/// The outside probe: tokens of deleted or unknown attendees kept working (WebSocket 101,
/// posts 201). Now a token opens nothing unless it names a current attendee, and deleting an
/// attendee closes their open connections at once.
#[tokio::test]
async fn regression_tokens_of_deleted_or_unknown_attendees_open_nothing() {
    let (_dir, venued) = demo().await;
    let admin = Admin::new(&venued);
    // A token minted for someone who is not in the registry (a typo, or a test account).
    let (status, body) = admin
        .call(
            Method::POST,
            "/api/v1/admin/tokens",
            Some(json!({"attendee_id": "nobody", "roles": ["attendee"]})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let stranger = body["token"].as_str().unwrap().to_string();
    let refused = reqwest::Client::new()
        .post(venued.url("/api/v1/channels/announcements/messages"))
        .bearer_auth(&stranger)
        .header("Idempotency-Key", "from-nobody")
        .json(&json!({"content": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let refused: Value = refused.json().await.unwrap();
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not registered for this event"),
        "{refused}"
    );
    let upgrade =
        tokio_tungstenite::connect_async(format!("ws://{}/ws?token={stranger}", venued.addr)).await;
    assert!(format!("{:?}", upgrade.err()).contains("401"));

    // A current attendee connects; deleting them closes the socket and voids the token.
    let leaving = token(&venued, "leaving", &["attendee"]).await;
    let (mut socket, _) = connect(&venued, &leaving).await;
    let (status, _) = admin
        .call(Method::DELETE, "/api/v1/admin/attendees/leaving", None)
        .await
        .unwrap();
    assert_eq!(status, 204);
    let close = tokio::time::timeout(WAIT, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("the connection ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("the removed attendee's connection is closed at once")
    .expect("with a close frame");
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (1008, "attendee_removed")
    );
    let posted = reqwest::Client::new()
        .post(venued.url("/api/v1/channels/announcements/messages"))
        .bearer_auth(&leaving)
        .header("Idempotency-Key", "after-removal")
        .json(&json!({"content": "still here?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 401);
}

/// Occupancy reached zone channels only through the MQTT broker (presence → retained publish →
/// the daemon's link → the bridge), so with MQTT off a zone channel got nothing. It comes from
/// presence directly now: with `[mqtt] enabled = false` a subscriber of `zone:hall-a` gets the
/// zone's count, at once on subscribing and whenever it moves.
#[tokio::test]
async fn regression_zone_channels_get_occupancy_with_mqtt_off() {
    let dir = tempfile::tempdir().unwrap();
    let venued = VenuedBuilder::new(&dir.path().join("data"))
        .arg("--demo")
        .env("VENUED_MQTT_ENABLED", "false")
        .spawn()
        .await
        .unwrap();
    assert!(
        venued.mqtt_addr("tcp").await.is_err(),
        "MQTT is off in this test"
    );
    let attendee = token(&venued, "a1", &["attendee"]).await;
    let (mut reader, _) = connect(&venued, &attendee).await;
    subscribe(&mut reader, json!({"channels": ["zone:hall-a"]})).await;
    // The demo's simulated badges walk into hall A.
    let occupancy = next(&mut reader, "zone.occupancy").await;
    assert_eq!(occupancy["zone"], "hall-a", "{occupancy}");
    assert!(occupancy["occupancy"].is_u64(), "{occupancy}");
    // A later subscriber is told the current count at once: before its subscribe is answered.
    let (mut late, _) = connect(&venued, &attendee).await;
    send(
        &mut late,
        "subscribe",
        "s",
        json!({"channels": ["zone:hall-a"]}),
    )
    .await;
    let mut kinds = Vec::new();
    while kinds.last().is_none_or(|k| k != "ack") {
        let message = tokio::time::timeout(WAIT, late.next())
            .await
            .expect("an answer to subscribe")
            .expect("socket open")
            .unwrap();
        if let Message::Text(text) = message {
            let frame: Value = serde_json::from_str(&text).unwrap();
            kinds.push(frame["type"].as_str().unwrap_or_default().to_string());
        }
    }
    assert!(
        kinds.iter().any(|k| k == "zone.occupancy"),
        "no occupancy before the ack: {kinds:?}"
    );
}
