//! The MQTT ↔ hub bridge, above both: `[[mqtt.bridge]]` entries matched against what the
//! daemon's link receives (`in`), and hub channels published to MQTT (`out`). Neither the hub
//! nor MQTT knows of the other; this module holds both ends.
//!
//! - `in`: MQTT hands messages on the entries' filters to an [`Inbox`]; one task carries them
//!   into the hub in arrival order.
//! - `out`: a subscriber of the committed-op stream publishes each message committed on this
//!   appliance to its channel's topic, after the commit and off the poster's path, so a stalled
//!   broker never slows a chat ack.
//!
//! Loop-free by construction: what the bridge publishes carries `bridged_from`, and `in`
//! entries skip such payloads; messages that came in from MQTT have an `mqtt:` sender, which
//! `out` never publishes, and messages pulled from another appliance were bridged there.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::config::{BridgeDelivery, BridgeDirection, BridgeEntry};
use crate::hub::Hub;
use crate::hub::channels::Channel;
use crate::metrics::{MqttMetrics, WhyLabel};
use crate::mqtt::{Inbox, MqttHandle, envelope};
use crate::oplog::message::POST;
use crate::store::Subscription;

/// The payload field that marks a message the bridge published.
pub const BRIDGED_FROM: &str = "bridged_from";
/// The sender prefix of messages the bridge carried in from MQTT.
const MQTT_SENDER: &str = "mqtt:";
/// MQTT messages waiting to be carried into the hub; past it they are dropped and counted.
const INBOX_DEPTH: usize = 4096;

/// Starts both directions for `entries`: the `out` subscriber of `stream`, and the `in` task;
/// returns the inbox MQTT hands the `in` messages to. The tasks end when the store and MQTT do.
pub fn start(
    entries: &[BridgeEntry],
    hub: &Hub,
    mqtt: &MqttHandle,
    stream: Subscription,
    node_id: &str,
    tasks: &mut tokio::task::JoinSet<()>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Inbox {
    let (ins, outs) = split(entries);
    if !outs.is_empty() {
        tasks.spawn(carry_out(
            outs,
            hub.clone(),
            mqtt.clone(),
            stream,
            node_id.to_string(),
            stop.clone(),
        ));
    }
    let (tx, mut rx) = mpsc::channel::<(String, Vec<u8>)>(INBOX_DEPTH);
    let filters: Vec<String> = ins.iter().map(Inbound::filter).collect();
    let ins = Arc::new(ins);
    let matcher = ins.clone();
    let (hub, metrics) = (hub.clone(), mqtt.metrics().clone());
    let mut stopping = stop;
    tasks.spawn(async move {
        loop {
            let (path, payload) = tokio::select! {
                _ = stopping.changed() => return,
                next = rx.recv() => match next {
                    Some(next) => next,
                    None => return,
                },
            };
            carry_in(&ins, &hub, &metrics, &path, &payload).await;
        }
    });
    Inbox {
        filters,
        takes: Arc::new(move |path| matcher.iter().any(|b| b.channel_for(path).is_some())),
        tx,
    }
}

/// Publishes every message committed on this appliance in an `out` channel to its topics.
async fn carry_out(
    outs: Vec<(String, String)>,
    hub: Hub,
    mqtt: MqttHandle,
    mut stream: Subscription,
    node_id: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        // MQTT has stopped by the time `stop` turns: nothing left to publish to.
        let next = tokio::select! {
            _ = stop.changed() => return,
            next = stream.next() => match next {
                Some(next) => next,
                None => return,
            },
        };
        let Ok(ops) = next else {
            // Read back on the next call; the messages stay in the hub's history either way.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            continue;
        };
        for committed in ops.iter() {
            let op = &committed.op;
            let channel = op.body["channel"].as_str().unwrap_or_default();
            let sender = op.body["sender"].as_str().unwrap_or_default();
            if op.kind != POST
                || op.origin != node_id
                || sender.starts_with(MQTT_SENDER)
                || !outs.iter().any(|(c, _)| c == channel)
            {
                continue;
            }
            let message = match hub.message(&op.entity_id).await {
                Ok(Some(message)) => message,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot load a message to bridge out");
                    continue;
                }
            };
            let payload = envelope(json!({
                "channel": message.channel,
                "seq": message.seq,
                "message_id": message.message_id,
                "sender": message.sender,
                "content": message.content,
                BRIDGED_FROM: message.channel,
            }));
            for (_, path) in outs.iter().filter(|(c, _)| *c == message.channel) {
                mqtt.publish(path, payload.clone()).await;
                mqtt.metrics()
                    .bridged
                    .get_or_create(&WhyLabel { reason: "out" })
                    .inc();
            }
        }
    }
}

/// An `in` entry, ready to match.
#[derive(Debug, Clone)]
pub struct Inbound {
    filter: Vec<String>,
    channel: String,
    deliver: BridgeDelivery,
}

/// The `in` entries, and the `(channel, topic path)` pairs of the `out` ones.
pub fn split(entries: &[BridgeEntry]) -> (Vec<Inbound>, Vec<(String, String)>) {
    let mut ins = Vec::new();
    let mut outs = Vec::new();
    for e in entries {
        match e.direction {
            BridgeDirection::In => ins.push(Inbound {
                filter: e.filter.split('/').map(str::to_string).collect(),
                channel: e.channel.clone(),
                deliver: e.deliver,
            }),
            BridgeDirection::Out => outs.push((e.channel.clone(), e.filter.clone())),
        }
    }
    (ins, outs)
}

impl Inbound {
    /// The filter path (relative to the tree), for the link's subscription.
    pub fn filter(&self) -> String {
        self.filter.join("/")
    }

    /// The channel for a relative topic path, if the filter matches it.
    pub fn channel_for(&self, path: &str) -> Option<String> {
        let levels: Vec<&str> = path.split('/').collect();
        let captured = matches(&self.filter, &levels)?;
        let mut channel = self.channel.clone();
        for (i, level) in captured.iter().enumerate() {
            channel = channel.replace(&format!("{{{}}}", i + 1), level);
        }
        (!channel.contains('{')).then_some(channel)
    }
}

/// MQTT filter matching; the levels `+` matched, in order.
fn matches<'a>(filter: &[String], topic: &[&'a str]) -> Option<Vec<&'a str>> {
    let mut captured = Vec::new();
    for (i, f) in filter.iter().enumerate() {
        match f.as_str() {
            "#" => return Some(captured),
            "+" => captured.push(*topic.get(i)?),
            level => {
                if topic.get(i) != Some(&level) {
                    return None;
                }
            }
        }
    }
    (filter.len() == topic.len()).then_some(captured)
}

/// Carries one MQTT message into the hub along every `in` entry that matches. True if any did.
async fn carry_in(
    entries: &[Inbound],
    hub: &Hub,
    metrics: &MqttMetrics,
    path: &str,
    payload: &[u8],
) -> bool {
    let mut matched = false;
    let parsed: Option<Value> = serde_json::from_slice(payload).ok();
    if parsed
        .as_ref()
        .is_some_and(|v| v.get(BRIDGED_FROM).is_some())
    {
        return true; // Our own `out` publish: never carried back.
    }
    for entry in entries {
        let Some(channel) = entry.channel_for(path) else {
            continue;
        };
        matched = true;
        let count = |reason: &'static str| {
            metrics.bridged.get_or_create(&WhyLabel { reason }).inc();
        };
        match entry.deliver {
            BridgeDelivery::Frame => {
                let body = parsed
                    .clone()
                    .unwrap_or_else(|| json!(String::from_utf8_lossy(payload)));
                hub.ephemeral(
                    &channel,
                    "mqtt.message",
                    json!({"topic": path, "payload": body}),
                );
                count("in_frame");
            }
            BridgeDelivery::Message => {
                // Durable messages need the envelope id: it makes QoS 1 redelivery harmless.
                let Some(v) = &parsed else {
                    metrics
                        .invalid
                        .get_or_create(&WhyLabel {
                            reason: "bridge_not_json",
                        })
                        .inc();
                    continue;
                };
                let Some(id) = v
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|id| (1..=128).contains(&id.len()))
                else {
                    metrics
                        .invalid
                        .get_or_create(&WhyLabel {
                            reason: "bridge_no_id",
                        })
                        .inc();
                    continue;
                };
                let exists = match Channel::parse(&channel) {
                    Some(parsed) => hub.exists(&parsed, "").await.unwrap_or(false),
                    None => false,
                };
                if !exists {
                    metrics
                        .invalid
                        .get_or_create(&WhyLabel {
                            reason: "bridge_channel",
                        })
                        .inc();
                    continue;
                }
                let text = v
                    .get("content")
                    .or_else(|| v.get("message"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                let content = match v.get("state").and_then(Value::as_str) {
                    Some("cleared") => format!("cleared: {text}"),
                    _ => text,
                };
                let content: String = content.chars().take(4096).collect();
                let key = ("mqtt".to_string(), format!("{channel}:{id}"));
                let sender = format!("{MQTT_SENDER}{path}");
                match hub.post(&channel, &sender, &content, None, Some(key)).await {
                    Ok(_) => count("in_message"),
                    Err(e) => {
                        tracing::warn!(channel, error = %e, "cannot bridge an MQTT message into the hub")
                    }
                }
            }
        }
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chat message's ack waited on the bridge's MQTT publish, so a stalled broker stalled
    /// chat. The bridge now publishes from the committed-op stream: with the broker's queue full
    /// and never drained, every post is still answered.
    #[tokio::test]
    async fn regression_a_stalled_broker_never_holds_up_a_post() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::Store::open(
            dir.path(),
            &crate::store::StoreOptions::default(),
            crate::metrics::StoreMetrics::detached(),
        )
        .expect("store");
        let hub = Hub::start(&store, "ev", dir.path(), Default::default())
            .await
            .expect("hub");
        let (mqtt, stalled) = MqttHandle::stalled(&store, 1);
        let mut tasks = tokio::task::JoinSet::new();
        let (_stop, stop) = tokio::sync::watch::channel(false);
        let out = BridgeEntry {
            filter: "hub/announcements".into(),
            channel: "announcements".into(),
            direction: BridgeDirection::Out,
            deliver: BridgeDelivery::Message,
        };
        let _inbox = start(
            &[out],
            &hub,
            &mqtt,
            store.subscribe("bridge"),
            store.node_id(),
            &mut tasks,
            stop,
        );
        for i in 0..20 {
            let content = format!("notice {i}");
            let post = hub.post("announcements", "s1", &content, None, None);
            tokio::time::timeout(std::time::Duration::from_secs(10), post)
                .await
                .expect("answered although the broker takes nothing")
                .expect("posted");
        }
        // The bridge did try: the broker's queue holds its first publish, and it waits there.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while stalled.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the bridge never published"
            );
            // Polled: a full queue signals nothing to wait on.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(stalled.len(), 1);
    }

    fn entry(filter: &str, channel: &str) -> Inbound {
        split(&[BridgeEntry {
            filter: filter.into(),
            channel: channel.into(),
            direction: BridgeDirection::In,
            deliver: BridgeDelivery::Frame,
        }])
        .0
        .remove(0)
    }

    #[test]
    fn filters_match_like_mqtt_and_fill_the_channel() {
        let zone = entry("presence/+", "zone:{1}");
        assert_eq!(
            zone.channel_for("presence/hall-a").as_deref(),
            Some("zone:hall-a")
        );
        assert_eq!(zone.channel_for("presence/hall-a/x"), None);
        assert_eq!(zone.channel_for("beacon/hall-a"), None);
        let alerts = entry("alert/#", "announcements");
        assert_eq!(
            alerts.channel_for("alert/warning/k1").as_deref(),
            Some("announcements")
        );
        assert_eq!(alerts.channel_for("alerts/active"), None);
        let two = entry("a/+/b/+", "session:{2}-{1}");
        assert_eq!(two.channel_for("a/x/b/y").as_deref(), Some("session:y-x"));
        let unfilled = entry("a/#", "zone:{1}");
        assert_eq!(
            unfilled.channel_for("a/b"),
            None,
            "a placeholder with nothing to fill"
        );
    }
}
