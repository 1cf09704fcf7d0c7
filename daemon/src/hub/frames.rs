//! Client frames: the envelope `{type, id, ts?, payload}` and every type's payload, decoded in
//! one place into [`ClientFrame`]. A frame that does not decode gets an `error` frame naming
//! what was wrong (`malformed`, `unsupported_type`, or `invalid` with the field), never a
//! panic; the `hub_frame_decode` fuzz target drives [`decode`] with arbitrary input.
//!
//! Unknown payload fields are ignored, so newer clients keep working with this hub.

use std::collections::HashMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::online::Status;

/// Longest frame `id` (clients use UUIDs; it is echoed as `ref_id`).
pub const MAX_ID_BYTES: usize = 128;
/// Most channels or user ids one frame may list.
pub const MAX_LIST: usize = 100;

/// Every frame type a client may send, for the `unsupported_type` message.
pub const CLIENT_TYPES: &[&str] = &[
    "subscribe",
    "unsubscribe",
    "message.send",
    "message.edit",
    "message.delete",
    "message.react",
    "typing.start",
    "typing.stop",
    "read.mark",
    "presence.update",
    "presence.subscribe",
    "presence.unsubscribe",
    "sync.request",
    "group.create",
    "group.add",
    "group.remove",
    "auth.refresh",
    "ping",
];

/// A decoded client frame.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    /// Join channels, with resume positions valid for `epoch`.
    Subscribe {
        /// Channel names.
        channels: Vec<String>,
        /// Last seq seen per channel.
        resume: HashMap<String, i64>,
        /// The epoch the positions belong to.
        epoch: Option<String>,
    },
    /// Leave channels.
    Unsubscribe {
        /// Channel names.
        channels: Vec<String>,
    },
    /// Post a message (idempotent on the frame id).
    MessageSend {
        /// Where.
        channel: String,
        /// Text.
        content: String,
        /// The message it answers.
        reply_to: Option<String>,
    },
    /// Replace a message's content.
    MessageEdit {
        /// Its channel.
        channel: String,
        /// Which message.
        message_id: String,
        /// New text.
        content: String,
    },
    /// Delete a message.
    MessageDelete {
        /// Its channel.
        channel: String,
        /// Which message.
        message_id: String,
    },
    /// Add or remove a reaction.
    MessageReact {
        /// Its channel.
        channel: String,
        /// Which message.
        message_id: String,
        /// The emoji.
        emoji: String,
        /// Add (true) or remove.
        add: bool,
    },
    /// Typing started (true) or stopped.
    Typing {
        /// Where.
        channel: String,
        /// Started.
        typing: bool,
    },
    /// Move the read watermark.
    ReadMark {
        /// Where.
        channel: String,
        /// Read up to here.
        seq: i64,
    },
    /// Choose a presence status.
    PresenceUpdate {
        /// The status.
        status: Status,
    },
    /// Follow (true) or unfollow other attendees' presence.
    PresenceFollow {
        /// Whom.
        user_ids: Vec<String>,
        /// Follow.
        follow: bool,
    },
    /// Fetch missed messages.
    SyncRequest {
        /// Where.
        channel: String,
        /// After this seq.
        last_seq: i64,
        /// At most this many (capped by the hub).
        limit: u64,
    },
    /// Create a group chat.
    GroupCreate {
        /// Its name.
        name: String,
        /// Its first members besides the creator.
        members: Vec<String>,
    },
    /// Add (true) or remove members.
    GroupMembers {
        /// Which group.
        group_id: String,
        /// Whom.
        user_ids: Vec<String>,
        /// Add.
        add: bool,
    },
    /// Replace the connection's token before it expires.
    AuthRefresh {
        /// The new token.
        token: String,
    },
    /// Application-level ping.
    Ping,
}

/// Why a frame was refused: answered with an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// `malformed`, `unsupported_type` or `invalid`.
    pub code: &'static str,
    /// What was wrong and how to fix it.
    pub message: String,
    /// The frame's id, when it had a usable one.
    pub ref_id: Option<String>,
}

/// Why a known frame type's payload is refused (the `invalid` error frame's message).
#[derive(Debug, thiserror::Error)]
enum PayloadError {
    #[error("`{kind}` payload: {source}")]
    Fields {
        kind: String,
        source: serde_json::Error,
    },
    #[error("`{kind}` lists more than {MAX_LIST} {name}")]
    TooMany { kind: String, name: &'static str },
    #[error("`status` must be online, away, dnd or offline, not `{0}`")]
    Status(String),
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    payload: Value,
}

#[derive(Deserialize)]
struct Channels {
    channels: Vec<String>,
    #[serde(default)]
    resume: HashMap<String, i64>,
    #[serde(default)]
    epoch: Option<String>,
}

#[derive(Deserialize)]
struct Send {
    channel: String,
    content: String,
    #[serde(default)]
    reply_to: Option<String>,
}

#[derive(Deserialize)]
struct Edit {
    channel: String,
    message_id: String,
    content: String,
}

#[derive(Deserialize)]
struct Delete {
    channel: String,
    message_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Action {
    Add,
    Remove,
}

#[derive(Deserialize)]
struct React {
    channel: String,
    message_id: String,
    emoji: String,
    action: Action,
}

#[derive(Deserialize)]
struct InChannel {
    channel: String,
}

#[derive(Deserialize)]
struct Mark {
    channel: String,
    seq: i64,
}

#[derive(Deserialize)]
struct Presence {
    status: String,
}

#[derive(Deserialize)]
struct Users {
    user_ids: Vec<String>,
}

#[derive(Deserialize)]
struct SyncReq {
    channel: String,
    #[serde(default)]
    last_seq: i64,
    #[serde(default = "default_limit")]
    limit: u64,
}

fn default_limit() -> u64 {
    100
}

#[derive(Deserialize)]
struct Create {
    name: String,
    #[serde(default)]
    members: Vec<String>,
}

#[derive(Deserialize)]
struct Members {
    group_id: String,
    user_ids: Vec<String>,
}

#[derive(Deserialize)]
struct Refresh {
    token: String,
}

/// Decodes one text frame: its id (for `ref_id`) and what it asks.
pub fn decode(text: &str) -> Result<(Option<String>, ClientFrame), FrameError> {
    let envelope: Envelope = serde_json::from_str(text).map_err(|e| FrameError {
        code: "malformed",
        message: format!("not a frame {{type, id, payload}}: {e}"),
        ref_id: None,
    })?;
    let id = match envelope.id {
        Some(id) if id.len() > MAX_ID_BYTES => {
            return Err(FrameError {
                code: "invalid",
                message: format!("`id` is longer than {MAX_ID_BYTES} bytes; use a UUID"),
                ref_id: None,
            });
        }
        id => id,
    };
    let kind = envelope.kind;
    let invalid = |e: PayloadError| FrameError {
        code: "invalid",
        message: e.to_string(),
        ref_id: id.clone(),
    };
    let payload = envelope.payload;
    // Payload fields of this type, with the type named in the error.
    fn fields<T: DeserializeOwned>(kind: &str, payload: Value) -> Result<T, PayloadError> {
        let payload = match payload {
            Value::Null => Value::Object(Default::default()),
            other => other,
        };
        serde_json::from_value(payload).map_err(|source| PayloadError::Fields {
            kind: kind.to_string(),
            source,
        })
    }
    let list = |name: &'static str, items: Vec<String>| match items.len() <= MAX_LIST {
        true => Ok(items),
        false => Err(PayloadError::TooMany {
            kind: kind.clone(),
            name,
        }),
    };
    let frame = match kind.as_str() {
        "ping" => Ok(ClientFrame::Ping),
        "subscribe" => fields::<Channels>(&kind, payload).and_then(|c| {
            Ok(ClientFrame::Subscribe {
                channels: list("channels", c.channels)?,
                resume: c.resume,
                epoch: c.epoch,
            })
        }),
        "unsubscribe" => fields::<Channels>(&kind, payload).and_then(|c| {
            Ok(ClientFrame::Unsubscribe {
                channels: list("channels", c.channels)?,
            })
        }),
        "message.send" => fields::<Send>(&kind, payload).map(|s| ClientFrame::MessageSend {
            channel: s.channel,
            content: s.content,
            reply_to: s.reply_to,
        }),
        "message.edit" => fields::<Edit>(&kind, payload).map(|e| ClientFrame::MessageEdit {
            channel: e.channel,
            message_id: e.message_id,
            content: e.content,
        }),
        "message.delete" => fields::<Delete>(&kind, payload).map(|d| ClientFrame::MessageDelete {
            channel: d.channel,
            message_id: d.message_id,
        }),
        "message.react" => fields::<React>(&kind, payload).map(|r| ClientFrame::MessageReact {
            channel: r.channel,
            message_id: r.message_id,
            emoji: r.emoji,
            add: matches!(r.action, Action::Add),
        }),
        "typing.start" | "typing.stop" => {
            fields::<InChannel>(&kind, payload).map(|c| ClientFrame::Typing {
                channel: c.channel,
                typing: kind == "typing.start",
            })
        }
        "read.mark" => fields::<Mark>(&kind, payload).map(|m| ClientFrame::ReadMark {
            channel: m.channel,
            seq: m.seq,
        }),
        "presence.update" => fields::<Presence>(&kind, payload).and_then(|p| {
            Status::parse(&p.status)
                .map(|status| ClientFrame::PresenceUpdate { status })
                .ok_or(PayloadError::Status(p.status))
        }),
        "presence.subscribe" | "presence.unsubscribe" => {
            fields::<Users>(&kind, payload).and_then(|u| {
                Ok(ClientFrame::PresenceFollow {
                    user_ids: list("user_ids", u.user_ids)?,
                    follow: kind == "presence.subscribe",
                })
            })
        }
        "sync.request" => fields::<SyncReq>(&kind, payload).map(|s| ClientFrame::SyncRequest {
            channel: s.channel,
            last_seq: s.last_seq,
            limit: s.limit,
        }),
        "group.create" => fields::<Create>(&kind, payload).map(|c| ClientFrame::GroupCreate {
            name: c.name,
            members: c.members,
        }),
        "group.add" | "group.remove" => {
            fields::<Members>(&kind, payload).map(|m| ClientFrame::GroupMembers {
                group_id: m.group_id,
                user_ids: m.user_ids,
                add: kind == "group.add",
            })
        }
        "auth.refresh" => {
            fields::<Refresh>(&kind, payload).map(|r| ClientFrame::AuthRefresh { token: r.token })
        }
        other => {
            return Err(FrameError {
                code: "unsupported_type",
                message: format!(
                    "`{}` is not supported by this hub; supported: {}",
                    other.chars().take(64).collect::<String>(),
                    CLIENT_TYPES.join(", ")
                ),
                ref_id: id,
            });
        }
    };
    frame.map(|frame| (id.clone(), frame)).map_err(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> ClientFrame {
        decode(text).map(|(_, f)| f).unwrap_or(ClientFrame::Ping)
    }

    fn err(text: &str) -> FrameError {
        decode(text).err().unwrap_or(FrameError {
            code: "none",
            message: String::new(),
            ref_id: None,
        })
    }

    #[test]
    fn every_client_type_decodes_from_its_documented_example() {
        let examples = [
            r#"{"type":"subscribe","id":"1","payload":{"channels":["announcements"],"epoch":"e","resume":{"announcements":4}}}"#,
            r#"{"type":"unsubscribe","id":"2","payload":{"channels":["zone:hall-a"]}}"#,
            r#"{"type":"message.send","id":"3","payload":{"channel":"zone:hall-a","content":"hi","reply_to":null}}"#,
            r#"{"type":"message.edit","id":"4","payload":{"channel":"zone:hall-a","message_id":"m","content":"hi!"}}"#,
            r#"{"type":"message.delete","id":"5","payload":{"channel":"zone:hall-a","message_id":"m"}}"#,
            r#"{"type":"message.react","id":"6","payload":{"channel":"zone:hall-a","message_id":"m","emoji":"👍","action":"add"}}"#,
            r#"{"type":"typing.start","id":"7","payload":{"channel":"zone:hall-a"}}"#,
            r#"{"type":"typing.stop","id":"8","payload":{"channel":"zone:hall-a"}}"#,
            r#"{"type":"read.mark","id":"9","payload":{"channel":"zone:hall-a","seq":12}}"#,
            r#"{"type":"presence.update","id":"10","payload":{"status":"away"}}"#,
            r#"{"type":"presence.subscribe","id":"11","payload":{"user_ids":["a2"]}}"#,
            r#"{"type":"presence.unsubscribe","id":"12","payload":{"user_ids":["a2"]}}"#,
            r#"{"type":"sync.request","id":"13","payload":{"channel":"zone:hall-a","last_seq":10,"limit":50}}"#,
            r#"{"type":"group.create","id":"14","payload":{"name":"Rust folks","members":["a2"]}}"#,
            r#"{"type":"group.add","id":"15","payload":{"group_id":"g","user_ids":["a3"]}}"#,
            r#"{"type":"group.remove","id":"16","payload":{"group_id":"g","user_ids":["a3"]}}"#,
            r#"{"type":"auth.refresh","id":"17","payload":{"token":"eyJ..."}}"#,
            r#"{"type":"ping","id":"18","ts":"2026-11-22T09:00:00Z"}"#,
        ];
        assert_eq!(examples.len(), CLIENT_TYPES.len());
        for example in examples {
            assert!(decode(example).is_ok(), "{example}: {:?}", decode(example));
        }
        assert_eq!(
            ok(examples[5]),
            ClientFrame::MessageReact {
                channel: "zone:hall-a".into(),
                message_id: "m".into(),
                emoji: "👍".into(),
                add: true
            }
        );
        assert_eq!(
            ok(r#"{"type":"sync.request","payload":{"channel":"c"}}"#),
            ClientFrame::SyncRequest {
                channel: "c".into(),
                last_seq: 0,
                limit: 100
            }
        );
    }

    #[test]
    fn bad_frames_name_what_is_wrong() {
        assert_eq!(err("not json").code, "malformed");
        assert_eq!(err(r#"{"id":"1"}"#).code, "malformed", "no type");
        assert_eq!(err(r#"{"type":7}"#).code, "malformed");
        let unknown = err(r#"{"type":"teleport","id":"t"}"#);
        assert_eq!(
            (unknown.code, unknown.ref_id.as_deref()),
            ("unsupported_type", Some("t"))
        );
        let missing = err(r#"{"type":"message.send","id":"s","payload":{"channel":"c"}}"#);
        assert_eq!(missing.code, "invalid");
        assert!(missing.message.contains("content"), "{}", missing.message);
        assert_eq!(missing.ref_id.as_deref(), Some("s"));
        let typed = err(r#"{"type":"read.mark","payload":{"channel":"c","seq":"12"}}"#);
        assert!(
            typed.message.contains("seq") || typed.message.contains("string"),
            "{}",
            typed.message
        );
        assert_eq!(
            err(r#"{"type":"presence.update","payload":{"status":"busy"}}"#).code,
            "invalid"
        );
        assert_eq!(err(r#"{"type":"message.react","payload":{"channel":"c","message_id":"m","emoji":"x","action":"toggle"}}"#).code, "invalid");
        let long_id = format!(r#"{{"type":"ping","id":"{}"}}"#, "x".repeat(200));
        assert_eq!(err(&long_id).code, "invalid");
        let many: Vec<String> = (0..101).map(|i| format!("\"c{i}\"")).collect();
        let too_many = format!(
            r#"{{"type":"subscribe","payload":{{"channels":[{}]}}}}"#,
            many.join(",")
        );
        assert_eq!(err(&too_many).code, "invalid");
        assert_eq!(err(r#"{"type":"subscribe","payload":"x"}"#).code, "invalid");
    }

    #[test]
    fn unknown_payload_fields_are_ignored() {
        assert_eq!(
            ok(r#"{"type":"typing.start","payload":{"channel":"c","future":true}}"#),
            ClientFrame::Typing {
                channel: "c".into(),
                typing: true
            }
        );
    }
}
