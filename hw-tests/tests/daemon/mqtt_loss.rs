//! Where MQTT messages go under load: a real venued, real rumqttc clients. Every message a
//! subscriber that keeps reading does not get must be counted in `venued_mqtt_dropped_total`.

use std::collections::HashMap;
use std::time::Duration;

use hw_tests::mqtt::{self, Options, Received};
use hw_tests::{Admin, Venued, VenuedBuilder};
use rumqttc::QoS;

const PUBLISHERS: usize = 10;
const SUBSCRIBERS: usize = 10;
const PER_PUBLISHER: usize = 5_000;
/// Brings a message to the size of a gateway's advert report (about 180 bytes), so the run is
/// several times what the broker keeps per filter by default (3 MiB).
const PADDING: &str = "{\"id\":\"C0:00:00:00:00:01\",\"rssi\":-58,\"manufacturerdata\":\"4c000215f7826da64fa24e988024bc5b71e0893e00010001c5\",\"servicedata\":\"0000\"}";

/// Messages the broker dropped on their way to clients (the daemon's own link and queues are
/// another matter: its alert handler is not a subscriber here, and under load it may fall
/// behind and count its own losses).
fn dropped_for_clients(text: &str) -> f64 {
    let name = "venued_mqtt_dropped_total";
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| l.contains("reason=\"subscriber_behind\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

async fn connect(venued: &Venued, id: &str, password: &str) -> mqtt::Client {
    mqtt::connect(
        venued.mqtt_addr("tcp").await.unwrap(),
        Options {
            id,
            credentials: Some((id, password)),
            will: None,
            keep_alive: None,
        },
    )
    .await
    .unwrap()
}

/// rumqttc does not report the SUBACK: probes go out (from gateway `gw-0`) until every display
/// has seen one, so every subscription is in place before the measured run; later probes are
/// skipped by the readers.
async fn wait_subscribed(gateway: &mqtt::Client, displays: &mut [mqtt::Client]) {
    let mut ready = vec![false; displays.len()];
    for _ in 0..50 {
        gateway
            .client
            .publish(
                "venue/default/alert/info/gw-0",
                QoS::AtLeastOnce,
                false,
                "probe",
            )
            .await
            .unwrap();
        for (display, ready) in displays.iter_mut().zip(ready.iter_mut()) {
            while !*ready {
                match display.next(Duration::from_millis(200)).await {
                    Some(Received::Message(_, p, _)) => *ready = p == b"probe",
                    _ => break,
                }
            }
        }
        if ready.iter().all(|r| *r) {
            return;
        }
    }
    panic!("not every display subscribed within 50 probes");
}

/// What one subscriber got: per publisher, the sequence numbers in arrival order.
async fn collect(mut client: mqtt::Client, expected: usize) -> HashMap<String, Vec<u64>> {
    let mut got: HashMap<String, Vec<u64>> = HashMap::new();
    let mut total = 0;
    // Quiet for 3 s after the last message: everything the broker will deliver has come.
    while total < expected {
        match client.next(Duration::from_secs(3)).await {
            Some(Received::Message(_, payload, _)) if payload == b"probe" => {}
            Some(Received::Message(topic, payload, _)) => {
                let seq = std::str::from_utf8(&payload)
                    .ok()
                    .and_then(|s| s.split(' ').next()?.parse().ok())
                    .unwrap_or(u64::MAX);
                got.entry(topic).or_default().push(seq);
                total += 1;
            }
            Some(Received::Closed(why)) => panic!("a subscriber was closed: {why}"),
            None => break,
        }
    }
    got
}

/// Ten gateways publish alerts (QoS 0, as fast as they can) that ten signage displays all
/// subscribe to; the payload is a sequence number and padding, which the daemon's own alert
/// handler counts as invalid and does not store, so only the broker's fan-out is measured. Before #14 about half
/// of the 500,000 deliveries vanished with every drop counter at 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_fan_out_under_load_delivers_every_message_or_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let venued = VenuedBuilder::new(&dir.path().join("data"))
        .spawn()
        .await
        .unwrap();
    let admin = Admin::new(&venued);
    let mut gateways = Vec::new();
    for g in 0..PUBLISHERS {
        let id = format!("gw-{g}");
        let password = admin.device(&id, "gateway").await.unwrap();
        gateways.push(connect(&venued, &id, &password).await);
    }
    let mut displays = Vec::new();
    for d in 0..SUBSCRIBERS {
        let id = format!("display-{d}");
        let password = admin.device(&id, "signage").await.unwrap();
        let client = connect(&venued, &id, &password).await;
        client
            .client
            .subscribe("venue/default/alert/info/+", QoS::AtMostOnce)
            .await
            .unwrap();
        displays.push(client);
    }
    wait_subscribed(&gateways[0], &mut displays).await;
    let before = dropped_for_clients(&venued.metrics().await.unwrap());

    let expected = PUBLISHERS * PER_PUBLISHER;
    let readers: Vec<_> = displays
        .into_iter()
        .map(|d| tokio::spawn(collect(d, expected)))
        .collect();
    let writers: Vec<_> = gateways
        .into_iter()
        .enumerate()
        .map(|(g, gateway)| {
            tokio::spawn(async move {
                let topic = format!("venue/default/alert/info/gw-{g}");
                for seq in 0..PER_PUBLISHER {
                    gateway
                        .client
                        .publish(&topic, QoS::AtMostOnce, false, format!("{seq} {PADDING}"))
                        .await
                        .unwrap();
                }
                // rumqttc writes out what it queued before it sends DISCONNECT.
                gateway.client.disconnect().await.unwrap();
                gateway
            })
        })
        .collect();
    let mut keep = Vec::new();
    for w in writers {
        keep.push(w.await.unwrap());
    }
    let mut missing = 0usize;
    for r in readers {
        let got = r.await.unwrap();
        for (topic, seqs) in &got {
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "{topic}: delivered out of order"
            );
        }
        missing += expected - got.values().map(Vec::len).sum::<usize>();
    }
    let counted = dropped_for_clients(&venued.metrics().await.unwrap()) - before;
    eprintln!(
        "fan-out: {} expected, {missing} missing, {counted} counted as dropped",
        expected * SUBSCRIBERS
    );
    assert_eq!(
        missing as f64, counted,
        "every message a reading subscriber did not get is counted"
    );
    // Ten gateways disconnected normally (DISCONNECT, then the socket closed), which rumqttd
    // logged at ERROR before its patch 3; nothing here is an error.
    let log = venued.log();
    assert!(
        !log.lines().any(|l| l.contains("ERROR")),
        "routine disconnects log no error: {log}"
    );
}

/// An MQTT 3.1.1 subscriber on a bare socket that, after its SUBACK, reads nothing until told:
/// a display whose network stalled. Returns the socket.
async fn stalled_subscriber(
    venued: &Venued,
    id: &str,
    password: &str,
    filter: &str,
) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(venued.mqtt_addr("tcp").await.unwrap())
        .await
        .unwrap();
    let string = |s: &str| {
        let mut out = (s.len() as u16).to_be_bytes().to_vec();
        out.extend(s.as_bytes());
        out
    };
    // CONNECT: protocol "MQTT" level 4, flags username + password + clean session, keep-alive
    // 120 s (the run is far shorter, so the front does not close it for silence).
    let mut body = string("MQTT");
    body.extend([4, 0b1100_0010, 0, 120]);
    body.extend(string(id));
    body.extend(string(id));
    body.extend(string(password));
    socket.write_all(&frame(0x10, &body)).await.unwrap();
    let mut connack = [0u8; 4];
    socket.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK accepted");
    let mut body = vec![0, 1];
    body.extend(string(filter));
    body.push(0);
    socket.write_all(&frame(0x82, &body)).await.unwrap();
    let mut suback = [0u8; 5];
    socket.read_exact(&mut suback).await.unwrap();
    assert_eq!(suback, [0x90, 3, 0, 1, 0], "SUBACK with QoS 0");
    socket
}

/// A packet: fixed header byte, remaining length, body.
fn frame(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![header];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend(body);
    out
}

/// Reads the QoS 0 PUBLISH packets on `socket` until it has been quiet for 3 s; how many.
async fn drain_publishes(socket: &mut tokio::net::TcpStream) -> usize {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut count = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(3), socket.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend(&chunk[..n]),
            _ => return count,
        }
        // Whole packets off the front of the buffer.
        loop {
            let mut len = 0usize;
            let mut at = 1;
            let mut shift = 0;
            let complete = loop {
                let Some(byte) = buf.get(at) else { break None };
                len |= usize::from(byte & 0x7f) << shift;
                shift += 7;
                at += 1;
                if byte & 0x80 == 0 {
                    break Some(at + len);
                }
            };
            match complete {
                Some(end) if end <= buf.len() => {
                    if buf[0] & 0xf0 == 0x30 {
                        let topic_len = usize::from(u16::from_be_bytes([buf[at], buf[at + 1]]));
                        let payload = &buf[at + 2 + topic_len..end];
                        if payload != b"probe" {
                            count += 1;
                        }
                    }
                    buf.drain(..end);
                }
                _ => break,
            }
        }
    }
}

/// One display stops reading while four keep reading: every message any of them does not get
/// (the stalled one once it reads again) is counted (`subscriber_behind`), and the warning names
/// the stalled display. That the four lose nothing at all is the next step of #14: a debug build
/// of venued still falls behind them at this rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_falls_behind_and_every_lost_message_is_counted() {
    const HEALTHY: usize = 4;
    const PER: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let venued = VenuedBuilder::new(&dir.path().join("data"))
        .spawn()
        .await
        .unwrap();
    let admin = Admin::new(&venued);
    let mut gateways = Vec::new();
    for g in 0..PUBLISHERS {
        let id = format!("gw-{g}");
        let password = admin.device(&id, "gateway").await.unwrap();
        gateways.push(connect(&venued, &id, &password).await);
    }
    let filter = "venue/default/alert/info/+";
    let password = admin.device("display-stalled", "signage").await.unwrap();
    let mut stalled = stalled_subscriber(&venued, "display-stalled", &password, filter).await;
    let mut displays = Vec::new();
    for d in 0..HEALTHY {
        let id = format!("display-{d}");
        let password = admin.device(&id, "signage").await.unwrap();
        let client = connect(&venued, &id, &password).await;
        client
            .client
            .subscribe(filter, QoS::AtMostOnce)
            .await
            .unwrap();
        displays.push(client);
    }
    wait_subscribed(&gateways[0], &mut displays).await;
    let before = dropped_for_clients(&venued.metrics().await.unwrap());

    let expected = PUBLISHERS * PER;
    let readers: Vec<_> = displays
        .into_iter()
        .map(|d| tokio::spawn(collect(d, expected)))
        .collect();
    let mut writers = Vec::new();
    for (g, gateway) in gateways.into_iter().enumerate() {
        writers.push(tokio::spawn(async move {
            let topic = format!("venue/default/alert/info/gw-{g}");
            for seq in 0..PER {
                let payload = format!("{seq} {PADDING}");
                gateway
                    .client
                    .publish(&topic, QoS::AtMostOnce, false, payload)
                    .await
                    .unwrap();
            }
            gateway.client.disconnect().await.unwrap();
            gateway
        }));
    }
    let mut keep = Vec::new();
    for w in writers {
        keep.push(w.await.unwrap());
    }
    let mut healthy_missing = 0;
    for r in readers {
        let got = r.await.unwrap();
        healthy_missing += expected - got.values().map(Vec::len).sum::<usize>();
    }
    // The stalled display reads again: what everyone got plus what was counted is everything.
    let got = drain_publishes(&mut stalled).await;
    let counted = dropped_for_clients(&venued.metrics().await.unwrap()) - before;
    eprintln!(
        "stalled display: {expected} expected, {got} received; healthy displays: {healthy_missing} missing; {counted} counted"
    );
    assert!(got < expected, "the stalled display fell behind");
    assert_eq!(
        (expected - got + healthy_missing) as f64,
        counted,
        "every message a display lost is counted"
    );
    let log = venued.log();
    assert!(
        log.contains("MQTT messages dropped") && log.contains("display-stalled"),
        "the warning names the client: {log}"
    );
}
