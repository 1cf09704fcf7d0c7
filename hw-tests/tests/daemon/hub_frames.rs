//! Snapshot tests of every server frame, as a real venued sends them to a real WebSocket
//! client. Ids, times and epochs are redacted; everything else (field names, types, nesting)
//! is pinned in `snapshots/`, and docs/protocol/websocket.md shows the same shapes. A change
//! here is a protocol change: update the snapshot (`INSTA_UPDATE=always`), the docs, and say
//! so in the release notes.

use std::collections::BTreeMap;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::hub::{Socket, WAIT, connect, demo, send, token};

/// Reads frames until one of `kind` arrives, keeping the first of every type seen.
async fn until(socket: &mut Socket, kind: &str, seen: &mut BTreeMap<String, Value>) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .unwrap_or_else(|_| panic!("no `{kind}` within {WAIT:?}"))
            .expect("open")
            .unwrap();
        if let Message::Text(text) = message {
            let frame: Value = serde_json::from_str(&text).unwrap();
            let this = frame["type"].as_str().unwrap().to_string();
            let key = match (this.as_str(), frame["payload"]["status"].as_str()) {
                ("ack", Some("error")) => "ack (error)".to_string(),
                ("presence.changed", _) if frame["payload"].get("kind").is_some() => {
                    "presence.changed (location)".to_string()
                }
                _ => this.clone(),
            };
            seen.entry(key).or_insert_with(|| frame.clone());
            if this == kind {
                return frame;
            }
        }
    }
}

#[tokio::test]
async fn every_server_frame_keeps_its_documented_shape() {
    let (_dir, venued) = demo().await;
    let mut seen = BTreeMap::new();
    let (mut a1, _) = connect(&venued, &token(&venued, "a1", &["staff"]).await).await;
    let a2_token = token(&venued, "a2", &["attendee"]).await;
    let url = format!("ws://{}/ws?token={a2_token}", venued.addr);
    let (mut a2, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    until(&mut a2, "welcome", &mut seen).await;

    let subscribe = json!({"channels": ["zone:hall-a", "announcements"]});
    send(&mut a1, "subscribe", "s1", subscribe.clone()).await;
    send(&mut a2, "subscribe", "s2", subscribe).await;
    until(&mut a2, "notification.badge", &mut seen).await;
    send(
        &mut a2,
        "presence.subscribe",
        "p1",
        json!({"user_ids": ["a1"]}),
    )
    .await;
    until(&mut a2, "presence.changed", &mut seen).await;
    send(
        &mut a1,
        "message.send",
        "m1",
        json!({"channel": "zone:hall-a", "content": "hi @a2"}),
    )
    .await;
    let new = until(&mut a2, "message.new", &mut seen).await;
    let message_id = new["payload"]["message_id"].as_str().unwrap().to_string();
    send(
        &mut a1,
        "typing.start",
        "t1",
        json!({"channel": "zone:hall-a"}),
    )
    .await;
    until(&mut a2, "typing.indicator", &mut seen).await;
    send(
        &mut a1,
        "read.mark",
        "r1",
        json!({"channel": "zone:hall-a", "seq": 1}),
    )
    .await;
    until(&mut a2, "read.receipt", &mut seen).await;
    let target = json!({"channel": "zone:hall-a", "message_id": message_id});
    let mut edit = target.clone();
    edit["content"] = json!("hello @a2");
    send(&mut a1, "message.edit", "e1", edit).await;
    until(&mut a2, "message.updated", &mut seen).await;
    let mut react = target.clone();
    react["emoji"] = json!("👍");
    react["action"] = json!("add");
    send(&mut a2, "message.react", "x1", react).await;
    until(&mut a2, "message.reaction", &mut seen).await;
    send(&mut a1, "message.delete", "d1", target).await;
    until(&mut a2, "message.deleted", &mut seen).await;
    send(
        &mut a2,
        "sync.request",
        "y1",
        json!({"channel": "zone:hall-a", "last_seq": 0}),
    )
    .await;
    until(&mut a2, "sync.response", &mut seen).await;
    send(
        &mut a2,
        "group.create",
        "g1",
        json!({"name": "Rust folks", "members": ["a1"]}),
    )
    .await;
    until(&mut a2, "group.updated", &mut seen).await;
    send(
        &mut a2,
        "message.send",
        "m2",
        json!({"channel": "announcements", "content": "no"}),
    )
    .await;
    until(&mut a2, "ack", &mut seen).await;
    send(&mut a2, "teleport", "z1", json!({})).await;
    until(&mut a2, "error", &mut seen).await;
    send(&mut a2, "ping", "q1", json!({})).await;
    until(&mut a2, "pong", &mut seen).await;
    for required in [
        "ack",
        "ack (error)",
        "error",
        "group.updated",
        "message.deleted",
        "message.new",
        "message.reaction",
        "message.updated",
        "notification.badge",
        "pong",
        "presence.changed",
        "read.receipt",
        "sync.response",
        "typing.indicator",
        "welcome",
    ] {
        let frame = seen
            .get(required)
            .unwrap_or_else(|| panic!("no `{required}` frame was seen"));
        // Times and ids vary; `null` stays visible.
        let vary = |placeholder: &'static str| {
            move |value: insta::internals::Content, _: insta::internals::ContentPath<'_>| {
                match value.as_str() {
                    Some(_) => insta::internals::Content::from(placeholder),
                    None => value,
                }
            }
        };
        insta::assert_json_snapshot!(required, frame, {
            ".id" => "[uuid]",
            ".ts" => "[time]",
            ".payload.connection_id" => "[connection]",
            ".payload.epoch" => "[epoch]",
            ".payload.message_id" => "[uuid]",
            ".payload.group_id" => "[uuid]",
            ".payload.channel" => insta::dynamic_redaction(|value, _| {
                match value.as_str() {
                    Some(c) if c.starts_with("group:") => "group:[uuid]".into(),
                    _ => value,
                }
            }),
            ".payload.created_at" => insta::dynamic_redaction(vary("[time]")),
            ".payload.edited_at" => insta::dynamic_redaction(vary("[time]")),
            ".payload.deleted_at" => insta::dynamic_redaction(vary("[time]")),
            ".payload.messages[].message_id" => "[uuid]",
            ".payload.messages[].created_at" => insta::dynamic_redaction(vary("[time]")),
            ".payload.messages[].edited_at" => insta::dynamic_redaction(vary("[time]")),
        });
    }
}
