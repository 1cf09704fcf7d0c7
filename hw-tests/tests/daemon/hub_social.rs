//! Edits, deletes, reactions, group chats, online presence and badges through a real venued
//! with real WebSocket clients.

use serde_json::{Value, json};

use super::hub::{Socket, connect, demo, next, send, subscribe, token};
use hw_tests::Venued;

async fn attendee(venued: &Venued, id: &str, roles: &[&str]) -> Socket {
    connect(venued, &token(venued, id, roles).await).await.0
}

/// Sends a frame and returns its ack.
async fn request(socket: &mut Socket, kind: &str, id: &str, payload: Value) -> Value {
    send(socket, kind, id, payload).await;
    loop {
        let ack = next(socket, "ack").await;
        if ack["ref_id"] == id {
            return ack;
        }
    }
}

/// A channel's messages over the HTTP history, as `token`'s holder sees them.
async fn fetch_history(venued: &Venued, token: &str, channel: &str) -> Value {
    reqwest::Client::new()
        .get(venued.url(&format!("/api/v1/channels/{channel}/messages")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn edits_deletes_and_reactions_reach_the_channel_and_stay_in_history() {
    let (_dir, venued) = demo().await;
    let mut author = attendee(&venued, "a1", &["attendee"]).await;
    let mut reader = attendee(&venued, "a2", &["attendee"]).await;
    let mut staff = attendee(&venued, "s1", &["staff"]).await;
    for socket in [&mut author, &mut reader, &mut staff] {
        subscribe(socket, json!({"channels": ["zone:hall-a"]})).await;
    }
    let sent = request(
        &mut author,
        "message.send",
        "m1",
        json!({"channel": "zone:hall-a", "content": "talk at 10"}),
    )
    .await;
    let message_id = sent["message_id"].as_str().unwrap().to_string();
    next(&mut reader, "message.new").await;

    // Only the sender edits.
    let refused = request(
        &mut reader,
        "message.edit",
        "e0",
        json!({"channel": "zone:hall-a", "message_id": message_id, "content": "mine now"}),
    )
    .await;
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");
    let edited = request(
        &mut author,
        "message.edit",
        "e1",
        json!({"channel": "zone:hall-a", "message_id": message_id, "content": "talk at 11"}),
    )
    .await;
    assert_eq!(edited["status"], "ok", "{edited}");
    let updated = next(&mut reader, "message.updated").await;
    assert_eq!(
        (updated["message_id"].as_str(), updated["content"].as_str()),
        (Some(message_id.as_str()), Some("talk at 11"))
    );
    assert!(updated["edited_at"].is_string());

    // Reactions: add twice (one person counts once), then remove.
    for (id, action) in [("r1", "add"), ("r2", "add")] {
        let ack = request(
            &mut reader,
            "message.react",
            id,
            json!({"channel": "zone:hall-a", "message_id": message_id, "emoji": "🎉", "action": action}),
        )
        .await;
        assert_eq!(ack["status"], "ok", "{ack}");
    }
    let reaction = next(&mut author, "message.reaction").await;
    assert_eq!(
        (
            reaction["emoji"].clone(),
            reaction["user_id"].clone(),
            reaction["count"].clone()
        ),
        (json!("🎉"), json!("a2"), json!(1))
    );
    let reader_token = token(&venued, "a2", &["attendee"]).await;
    let history = fetch_history(&venued, &reader_token, "zone:hall-a").await;
    let stored = &history["messages"][0];
    assert_eq!(stored["content"], "talk at 11");
    assert_eq!(stored["reactions"], json!({"🎉": 1}));
    let removed = request(
        &mut reader,
        "message.react",
        "r3",
        json!({"channel": "zone:hall-a", "message_id": message_id, "emoji": "🎉", "action": "remove"}),
    )
    .await;
    assert_eq!(removed["status"], "ok");
    let mut count = json!(null);
    for _ in 0..3 {
        let r = next(&mut author, "message.reaction").await;
        if r["action"] == "remove" {
            count = r["count"].clone();
            break;
        }
    }
    assert_eq!(count, json!(0));

    // Staff may delete anyone's message; the content is gone everywhere.
    let deleted = request(
        &mut staff,
        "message.delete",
        "d1",
        json!({"channel": "zone:hall-a", "message_id": message_id}),
    )
    .await;
    assert_eq!(deleted["status"], "ok", "{deleted}");
    let gone = next(&mut reader, "message.deleted").await;
    assert_eq!(gone["message_id"], json!(message_id));
    let history = fetch_history(&venued, &reader_token, "zone:hall-a").await;
    assert_eq!(
        (
            history["messages"][0]["deleted"].clone(),
            history["messages"][0]["content"].clone()
        ),
        (json!(true), json!(""))
    );
    let again = request(
        &mut author,
        "message.edit",
        "e2",
        json!({"channel": "zone:hall-a", "message_id": message_id, "content": "back"}),
    )
    .await;
    assert_eq!(again["error"]["code"], "deleted");
    let unknown = request(
        &mut author,
        "message.edit",
        "e3",
        json!({"channel": "zone:hall-b", "message_id": message_id, "content": "x"}),
    )
    .await;
    assert_eq!(
        unknown["error"]["code"], "not_found",
        "the message is not in that channel"
    );
}

#[tokio::test]
async fn group_chats_admit_only_members_and_removal_takes_effect_at_once() {
    let (_dir, venued) = demo().await;
    let mut owner = attendee(&venued, "a1", &["attendee"]).await;
    let mut member = attendee(&venued, "a2", &["attendee"]).await;
    let mut outsider = attendee(&venued, "a3", &["attendee"]).await;
    let created = request(
        &mut owner,
        "group.create",
        "g1",
        json!({"name": "Rust folks", "members": ["a2"]}),
    )
    .await;
    assert_eq!(created["status"], "ok", "{created}");
    assert_eq!(created["members"], json!(["a1", "a2"]));
    let channel = created["channel"].as_str().unwrap().to_string();
    let group_id = created["group_id"].as_str().unwrap().to_string();
    // The new member hears of it without asking.
    let invited = next(&mut member, "group.updated").await;
    assert_eq!(invited["channel"], json!(channel));

    // To an outsider the group does not exist.
    let refused = subscribe(&mut outsider, json!({"channels": [channel]})).await;
    assert_eq!(
        refused["refused"][0]["code"], "unknown_channel",
        "{refused}"
    );
    let post = request(
        &mut outsider,
        "message.send",
        "x1",
        json!({"channel": channel, "content": "let me in"}),
    )
    .await;
    assert_eq!(post["error"]["code"], "unknown_channel");

    let joined = subscribe(&mut member, json!({"channels": [channel]})).await;
    assert_eq!(joined["channels"], json!([channel]));
    request(
        &mut owner,
        "message.send",
        "p1",
        json!({"channel": channel, "content": "hello group"}),
    )
    .await;
    assert_eq!(
        next(&mut member, "message.new").await["content"],
        "hello group"
    );

    // Only the creator removes others.
    let not_yours = request(
        &mut member,
        "group.remove",
        "rm0",
        json!({"group_id": group_id, "user_ids": ["a1"]}),
    )
    .await;
    assert_eq!(not_yours["error"]["code"], "forbidden");
    let removed = request(
        &mut owner,
        "group.remove",
        "rm1",
        json!({"group_id": group_id, "user_ids": ["a2"]}),
    )
    .await;
    assert_eq!(removed["members"], json!(["a1"]), "{removed}");
    let told = next(&mut member, "group.updated").await;
    assert_eq!(told["members"], json!(["a1"]));
    // The removed member's subscription ended with the removal: the next message does not
    // reach it (a ping's pong, queued after anything already sent, marks the end).
    request(
        &mut owner,
        "message.send",
        "p2",
        json!({"channel": channel, "content": "members only"}),
    )
    .await;
    send(&mut member, "ping", "end", json!({})).await;
    loop {
        let frame = next_any(&mut member).await;
        assert_ne!(frame["type"], "message.new", "{frame}");
        if frame["type"] == "pong" {
            break;
        }
    }
    let post = request(
        &mut member,
        "message.send",
        "x2",
        json!({"channel": channel, "content": "still here?"}),
    )
    .await;
    assert_eq!(post["error"]["code"], "unknown_channel");
    // Adding back works through the same set.
    let back = request(
        &mut owner,
        "group.add",
        "add1",
        json!({"group_id": group_id, "user_ids": ["a2", "a3"]}),
    )
    .await;
    assert_eq!(back["members"], json!(["a1", "a2", "a3"]));
}

async fn next_any(socket: &mut Socket) -> Value {
    use futures::StreamExt;
    loop {
        let message = tokio::time::timeout(super::hub::WAIT, socket.next())
            .await
            .expect("a frame")
            .expect("open")
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

#[tokio::test]
async fn presence_status_reaches_followers_unless_the_attendee_is_hidden() {
    let (_dir, venued) = demo().await;
    let admin = hw_tests::Admin::new(&venued);
    admin
        .import_csv("id,name,privacy\np-open,Olga,venue\np-hidden,Hal,hidden\n".into())
        .await
        .unwrap();
    let mut viewer = attendee(&venued, "a1", &["attendee"]).await;
    let ack = request(
        &mut viewer,
        "presence.subscribe",
        "ps",
        json!({"user_ids": ["p-open", "p-hidden"]}),
    )
    .await;
    assert_eq!(ack["status"], "ok");
    // The current status of each followed attendee whose privacy allows it.
    let now = next(&mut viewer, "presence.changed").await;
    assert_eq!(
        (now["user_id"].clone(), now["status"].clone()),
        (json!("p-open"), json!("offline"))
    );
    let mut open = attendee(&venued, "p-open", &["attendee"]).await;
    let online = next(&mut viewer, "presence.changed").await;
    assert_eq!(
        (online["user_id"].clone(), online["status"].clone()),
        (json!("p-open"), json!("online"))
    );
    let away = request(
        &mut open,
        "presence.update",
        "u1",
        json!({"status": "away"}),
    )
    .await;
    assert_eq!(away["status"], "ok");
    assert_eq!(
        next(&mut viewer, "presence.changed").await["status"],
        "away"
    );
    // A frame that does not decode gets an error frame naming the field.
    send(
        &mut open,
        "presence.update",
        "u2",
        json!({"status": "busy"}),
    )
    .await;
    let bad = next(&mut open, "error").await;
    assert_eq!(
        (bad["code"].clone(), bad["ref_id"].clone()),
        (json!("invalid"), json!("u2"))
    );
    assert!(bad["message"].as_str().unwrap().contains("busy"), "{bad}");

    // A hidden attendee comes online and changes status: nothing reaches the viewer.
    let mut hidden = attendee(&venued, "p-hidden", &["attendee"]).await;
    request(
        &mut hidden,
        "presence.update",
        "h1",
        json!({"status": "dnd"}),
    )
    .await;
    request(
        &mut open,
        "presence.update",
        "u3",
        json!({"status": "online"}),
    )
    .await;
    // p-open's change was made after p-hidden's: if anything of p-hidden's were sent, it
    // would come first.
    let first = next(&mut viewer, "presence.changed").await;
    assert_eq!(first["user_id"], "p-open", "{first}");
}

#[tokio::test]
async fn badges_count_unread_and_mentions_and_clear_on_every_phone() {
    let (_dir, venued) = demo().await;
    let mut author = attendee(&venued, "a1", &["attendee"]).await;
    for (i, content) in ["hi all", "@a2 your slides?", "@a2 @a2 ping", "bye"]
        .iter()
        .enumerate()
    {
        let ack = request(
            &mut author,
            "message.send",
            &format!("m{i}"),
            json!({"channel": "zone:hall-a", "content": content}),
        )
        .await;
        assert_eq!(ack["status"], "ok");
    }
    let a2 = token(&venued, "a2", &["attendee"]).await;
    let (mut phone, _) = connect(&venued, &a2).await;
    let (mut tablet, _) = connect(&venued, &a2).await;
    subscribe(&mut phone, json!({"channels": ["zone:hall-a"]})).await;
    let badge = next(&mut phone, "notification.badge").await;
    assert_eq!(
        badge,
        json!({"channel": "zone:hall-a", "unread": 4, "mentions": 2})
    );

    // A new mention reaches both of a2's connections, subscribed or not.
    request(
        &mut author,
        "message.send",
        "m9",
        json!({"channel": "zone:hall-a", "content": "@a2 last call"}),
    )
    .await;
    assert_eq!(next(&mut tablet, "notification.badge").await["mentions"], 3);
    // Reading on the phone clears the badge on the tablet too.
    let ack = request(
        &mut phone,
        "read.mark",
        "rm",
        json!({"channel": "zone:hall-a", "seq": 5}),
    )
    .await;
    assert_eq!(ack["seq"], 5);
    let cleared = next(&mut tablet, "notification.badge").await;
    assert_eq!(
        (cleared["unread"].clone(), cleared["mentions"].clone()),
        (json!(0), json!(0))
    );
    // Mentions in a conversation one is not part of give no badge.
    let mut a3 = attendee(&venued, "a3", &["attendee"]).await;
    request(
        &mut a3,
        "message.send",
        "dm",
        json!({"channel": "dm:a1:a3", "content": "did @a2 see this?"}),
    )
    .await;
    send(&mut tablet, "ping", "end", json!({})).await;
    loop {
        let frame = next_any(&mut tablet).await;
        assert_ne!(frame["type"], "notification.badge", "{frame}");
        if frame["type"] == "pong" {
            break;
        }
    }
}

/// An attendee changes their own privacy (the app's "You" view): followers hear the new level
/// at once, before anything else about that person, and `hidden` comes with no status after it.
#[tokio::test]
async fn an_attendees_own_privacy_change_reaches_followers_at_once() {
    let (_dir, venued) = demo().await;
    hw_tests::Admin::new(&venued)
        .import_csv("id,name,privacy\np-self,Sam,zone\n".into())
        .await
        .unwrap();
    let mut viewer = attendee(&venued, "a1", &["attendee"]).await;
    let ack = request(
        &mut viewer,
        "presence.subscribe",
        "ps",
        json!({"user_ids": ["p-self"]}),
    )
    .await;
    assert_eq!(ack["status"], "ok");
    assert_eq!(
        next(&mut viewer, "presence.changed").await["status"],
        "offline"
    );

    let own = token(&venued, "p-self", &["attendee"]).await;
    let http = reqwest::Client::new();
    let set = |level: &'static str| {
        http.put(venued.url("/api/v1/me/privacy"))
            .bearer_auth(&own)
            .json(&json!({"level": level}))
            .send()
    };
    assert_eq!(set("hidden").await.unwrap().status(), 200);
    let hidden = next(&mut viewer, "presence.changed").await;
    assert_eq!(hidden, json!({"user_id": "p-self", "visibility": "hidden"}));

    assert_eq!(set("venue").await.unwrap().status(), 200);
    let venue = next(&mut viewer, "presence.changed").await;
    assert_eq!(venue, json!({"user_id": "p-self", "visibility": "venue"}));
    assert_eq!(
        next(&mut viewer, "presence.changed").await["status"],
        "offline"
    );

    let me: Value = http
        .get(venued.url("/api/v1/me"))
        .bearer_auth(&own)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (me["id"].clone(), me["privacy"].clone()),
        (json!("p-self"), json!("venue"))
    );

    let bad = set("everyone").await.unwrap();
    assert_eq!(bad.status(), 422);
    let forget = http
        .delete(venued.url("/api/v1/me/location-history"))
        .bearer_auth(&own)
        .send()
        .await
        .unwrap();
    assert_eq!(forget.status(), 204);
    // Without a token, none of it.
    let anonymous = reqwest::Client::new()
        .get(venued.url("/api/v1/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

/// GETs `path` with `token`; the status and the JSON body.
async fn get_json(venued: &Venued, token: &str, path: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(venued.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// What the app's chat list stands on: a direct message gives the other party a badge for a
/// conversation their page has not opened; `/api/v1/me/conversations` lists one's direct
/// conversations and groups with their badges (and nobody else's); `/api/v1/people?ids=` names
/// the people behind ids seen in messages, hidden ones too, and only attendees.
#[tokio::test]
async fn conversations_are_listed_and_a_direct_message_announces_itself() {
    let (_dir, venued) = demo().await;
    let mut a1 = attendee(&venued, "a1", &["attendee"]).await;
    let a2_token = token(&venued, "a2", &["attendee"]).await;
    let (mut a2, _) = connect(&venued, &a2_token).await;
    let a3_token = token(&venued, "a3", &["attendee"]).await;

    let sent = request(
        &mut a1,
        "message.send",
        "dm-1",
        json!({"channel": "dm:a1:a2", "content": "coffee after the keynote?"}),
    )
    .await;
    assert_eq!(sent["status"], "ok", "{sent}");
    let badge = next(&mut a2, "notification.badge").await;
    assert_eq!(
        badge,
        json!({"channel": "dm:a1:a2", "unread": 1, "mentions": 0})
    );
    let group = request(
        &mut a1,
        "group.create",
        "g-1",
        json!({"name": "Rust folks", "members": ["a2", "a3"]}),
    )
    .await;
    assert_eq!(group["status"], "ok", "{group}");

    let (status, listed) = get_json(&venued, &a2_token, "/api/v1/me/conversations").await;
    assert_eq!(status, 200, "{listed}");
    let conversations = listed["conversations"].as_array().unwrap();
    assert_eq!(conversations.len(), 2, "{listed}");
    let dm = conversations
        .iter()
        .find(|c| c["kind"] == "dm")
        .expect("the direct conversation");
    assert_eq!(
        (&dm["channel"], &dm["with"], &dm["unread"], &dm["last_seq"]),
        (&json!("dm:a1:a2"), &json!("a1"), &json!(1), &json!(1))
    );
    let listed_group = conversations.iter().find(|c| c["kind"] == "group").unwrap();
    assert_eq!(listed_group["name"], "Rust folks");
    assert_eq!(listed_group["members"], json!(["a1", "a2", "a3"]));
    assert_eq!(listed_group["last_at"], Value::Null);
    // a3 is in the group but not in a1 and a2's conversation.
    let (_, theirs) = get_json(&venued, &a3_token, "/api/v1/me/conversations").await;
    let kinds: Vec<&Value> = theirs["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["kind"])
        .collect();
    assert_eq!(kinds, vec![&json!("group")], "{theirs}");
    // Reading the conversation clears it in the list too.
    subscribe(&mut a2, json!({"channels": ["dm:a1:a2"]})).await;
    let ack = request(
        &mut a2,
        "read.mark",
        "rm",
        json!({"channel": "dm:a1:a2", "seq": 1}),
    )
    .await;
    assert_eq!(ack["seq"], 1);
    let (_, listed) = get_json(&venued, &a2_token, "/api/v1/me/conversations").await;
    let dm = listed["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "dm")
        .unwrap()
        .clone();
    assert_eq!(dm["unread"], 0, "{listed}");

    // Names behind ids: a3 hides, and is still named on their messages; unknown ids are left out.
    let put = reqwest::Client::new()
        .put(venued.url("/api/v1/me/privacy"))
        .bearer_auth(&a3_token)
        .json(&json!({"level": "hidden"}))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let (status, named) = get_json(&venued, &a2_token, "/api/v1/people?ids=a1,a3,nobody").await;
    assert_eq!(status, 200, "{named}");
    let ids: Vec<&Value> = named["people"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["id"])
        .collect();
    assert_eq!(ids, vec![&json!("a1"), &json!("a3")], "{named}");
    let (_, found) = get_json(&venued, &a2_token, "/api/v1/people?q=a3").await;
    assert_eq!(
        found["people"],
        json!([]),
        "a hidden attendee is not found by name"
    );
    let too_many = (0..101)
        .map(|i| format!("p{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let (status, refused) = get_json(
        &venued,
        &a2_token,
        &format!("/api/v1/people?ids={too_many}"),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1-100"),
        "{refused}"
    );
    let (status, _) = get_json(&venued, "not-a-token", "/api/v1/me/conversations").await;
    assert_eq!(status, 401);
}
