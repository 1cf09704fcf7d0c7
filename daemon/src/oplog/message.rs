//! Chat and announcement messages: append-only facts. Each appliance numbers the messages of a
//! channel in the order it learns of them (`seq`, local); the op id makes a message unique
//! everywhere, so a message synced back to its origin is not stored twice.

use rusqlite::{Connection, params};
use sync_agent::Op;

use super::ApplyError;

/// Op kind: a message posted to a hub channel; the entity id is the message id.
pub const POST: &str = "message.post";
/// Longest message content, bytes (the frame limit is 64 KiB; content stays well below).
pub const MAX_CONTENT_BYTES: usize = 16 * 1024;

/// The body of a `message.post` op.
#[derive(Debug)]
pub(super) struct Body {
    channel: String,
    sender: String,
    content: String,
    reply_to: Option<String>,
}

pub(super) fn parse(op: &Op) -> Result<Body, String> {
    let text = |field: &str, max: usize| -> Result<String, String> {
        match op.body.get(field) {
            Some(serde_json::Value::String(s)) if !s.is_empty() && s.len() <= max => Ok(s.clone()),
            other => Err(format!(
                "`{field}` must be a string of 1-{max} bytes, found {other:?}"
            )),
        }
    };
    Ok(Body {
        channel: text("channel", 200)?,
        sender: text("sender", 128)?,
        content: text("content", MAX_CONTENT_BYTES)?,
        reply_to: match op.body.get("reply_to") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) if s.len() <= 128 => Some(s.clone()),
            Some(other) => return Err(format!("`reply_to` must be a message id, found {other}")),
        },
    })
}

/// Stores the message under the channel's next local sequence number.
pub(super) fn apply(conn: &Connection, op: &Op, body: &Body) -> Result<(), ApplyError> {
    conn.prepare_cached(
        "INSERT INTO messages (event_id, channel, seq, message_id, sender, content, reply_to,
                               origin, created_ms)
         VALUES (?1, ?2,
                 (SELECT coalesce(max(seq), 0) + 1 FROM messages WHERE event_id = ?1 AND channel = ?2),
                 ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (message_id) DO NOTHING",
    )?
    .execute(params![
        op.scope,
        body.channel,
        op.entity_id,
        body.sender,
        body.content,
        body.reply_to,
        op.origin,
        op.hlc.wall_ms as i64,
    ])?;
    Ok(())
}
