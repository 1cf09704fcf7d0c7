//! Chat and announcement messages: append-only facts. Each appliance numbers the messages of a
//! channel in the order it learns of them (`seq`, local); the op id makes a message unique
//! everywhere, so a message synced back to its origin is not stored twice.

use super::BodyError;
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

/// The string `field` of the op's body, 1 to `max` bytes.
fn text(op: &Op, field: &'static str, max: usize) -> Result<String, BodyError> {
    match op.body.get(field) {
        Some(serde_json::Value::String(s)) if !s.is_empty() && s.len() <= max => Ok(s.clone()),
        other => Err(BodyError::expected(
            field,
            format!("a string of 1-{max} bytes"),
            other,
        )),
    }
}

pub(super) fn parse(op: &Op) -> Result<Body, BodyError> {
    let text = |field: &'static str, max: usize| text(op, field, max);
    Ok(Body {
        channel: text("channel", 200)?,
        sender: text("sender", 128)?,
        content: text("content", MAX_CONTENT_BYTES)?,
        reply_to: match op.body.get("reply_to") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) if s.len() <= 128 => Some(s.clone()),
            other => return Err(BodyError::expected("reply_to", "a message id", other)),
        },
    })
}

/// Stores the message under the channel's next local sequence number, with its mentions, and
/// applies edits or a delete that arrived before it.
pub(super) fn apply(conn: &Connection, op: &Op, body: &Body) -> Result<(), ApplyError> {
    let inserted = conn.prepare_cached(
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
    if inserted == 0 {
        return Ok(());
    }
    let mentioned = mentions(&body.content);
    if !mentioned.is_empty() {
        let seq: i64 = conn
            .prepare_cached("SELECT seq FROM messages WHERE message_id = ?1")?
            .query_row([&op.entity_id], |r| r.get(0))?;
        for user in mentioned.iter().filter(|u| **u != body.sender) {
            conn.prepare_cached(
                "INSERT INTO mentions (event_id, channel, user_id, seq) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![op.scope, body.channel, user, seq])?;
        }
    }
    replay_changes(conn, &op.entity_id)
}

/// Op kind: a message's content replaced by its sender (last-writer-wins by HLC).
pub const EDIT: &str = "message.edit";
/// Op kind: a message deleted by its sender or staff (final: a delete beats every edit).
pub const DELETE: &str = "message.delete";
/// Op kind: a reaction added or removed (an observed-remove set per message, emoji and user).
pub const REACT: &str = "message.react";
/// Longest reaction, bytes (an emoji with modifiers, or a short code like `:tada:`).
pub const MAX_EMOJI_BYTES: usize = 32;
/// Most mentions counted per message (badges are per mentioned user).
pub const MAX_MENTIONS: usize = 20;

/// A parsed `message.edit`, `message.delete` or `message.react`.
#[derive(Debug)]
pub(super) enum Change {
    Edit {
        content: String,
    },
    Delete,
    React {
        emoji: String,
        user: String,
        add: bool,
        tags: Vec<String>,
    },
}

pub(super) fn parse_change(op: &Op) -> Result<Change, BodyError> {
    let text = |field: &'static str, max: usize| text(op, field, max);
    match op.kind.as_str() {
        EDIT => Ok(Change::Edit {
            content: text("content", MAX_CONTENT_BYTES)?,
        }),
        DELETE => Ok(Change::Delete),
        _ => {
            let emoji = text("emoji", MAX_EMOJI_BYTES)?;
            if emoji.chars().any(char::is_whitespace) {
                let found = op.body.get("emoji");
                return Err(BodyError::expected(
                    "emoji",
                    "an emoji without spaces",
                    found,
                ));
            }
            let action = op.body.get("action");
            let add = match action.and_then(|a| a.as_str()) {
                Some("add") => true,
                Some("remove") => false,
                _ => return Err(BodyError::expected("action", "add or remove", action)),
            };
            let tags = match op.body.get("tags") {
                None | Some(serde_json::Value::Null) if add => Vec::new(),
                Some(serde_json::Value::Array(tags)) if !add && tags.len() <= 1000 => tags
                    .iter()
                    .map(|t| t.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        BodyError::expected("tags", "a list of op ids", op.body.get("tags"))
                    })?,
                other => {
                    return Err(BodyError::expected(
                        "tags",
                        "the removed reactions' op ids (removes only)",
                        other,
                    ));
                }
            };
            Ok(Change::React {
                emoji,
                user: text("user", 128)?,
                add,
                tags,
            })
        }
    }
}

/// Applies an edit, delete or reaction. An edit or delete of a message not here yet is kept
/// in the op log and applied when the message arrives ([`replay_changes`]).
pub(super) fn apply_change(conn: &Connection, op: &Op, change: &Change) -> Result<(), ApplyError> {
    let hlc = (op.hlc.wall_ms as i64, op.hlc.counter, op.hlc.node.as_str());
    match change {
        Change::Edit { content } => {
            conn.prepare_cached(
                "UPDATE messages SET content = ?2, edit_wall = ?3, edit_counter = ?4, edit_node = ?5,
                                     edited_ms = ?3
                 WHERE message_id = ?1 AND deleted = 0
                   AND (edit_wall IS NULL OR (?3, ?4, ?5) > (edit_wall, edit_counter, edit_node))",
            )?
            .execute(params![op.entity_id, content, hlc.0, hlc.1, hlc.2])?;
        }
        Change::Delete => {
            // The edit bookkeeping goes with the content, and the earliest delete's time is
            // kept, so any order of edits and deletes leaves the same row.
            conn.prepare_cached(
                "UPDATE messages SET deleted = 1, content = '', edit_wall = NULL,
                        edit_counter = NULL, edit_node = NULL,
                        edited_ms = CASE WHEN deleted = 1 THEN min(edited_ms, ?2) ELSE ?2 END
                 WHERE message_id = ?1",
            )?
            .execute(params![op.entity_id, hlc.0])?;
        }
        Change::React {
            emoji,
            user,
            add: true,
            ..
        } => {
            // Added unless a remove that saw this tag arrived first.
            conn.prepare_cached(
                "INSERT INTO reactions (tag, message_id, emoji, user_id)
                 SELECT ?1, ?2, ?3, ?4 WHERE NOT EXISTS (SELECT 1 FROM removed_tags WHERE tag = ?1)
                 ON CONFLICT (tag) DO NOTHING",
            )?
            .execute(params![op.id.to_string(), op.entity_id, emoji, user])?;
        }
        Change::React { tags, .. } => remove_tags(conn, tags, "reactions")?,
    }
    Ok(())
}

/// Marks observed tags removed (so a late add stays out) and drops them from `table`.
pub(super) fn remove_tags(
    conn: &Connection,
    tags: &[String],
    table: &str,
) -> Result<(), ApplyError> {
    // `table` is a literal of this crate, never input.
    let delete = format!("DELETE FROM {table} WHERE tag = ?1");
    for tag in tags {
        conn.prepare_cached("INSERT INTO removed_tags (tag) VALUES (?1) ON CONFLICT DO NOTHING")?
            .execute([tag])?;
        conn.prepare_cached(&delete)?.execute([tag])?;
    }
    Ok(())
}

/// Applies edits and deletes that arrived before their message.
fn replay_changes(conn: &Connection, message_id: &str) -> Result<(), ApplyError> {
    for (_, op) in super::message_changes(conn, message_id)? {
        if let Ok(change) = parse_change(&op) {
            apply_change(conn, &op, &change)?;
        }
    }
    Ok(())
}

/// `@name` mentions of attendee ids in `content`, at most [`MAX_MENTIONS`], each once.
pub fn mentions(content: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for word in content.split('@').skip(1) {
        let id: String = word
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .collect();
        let id = id.trim_end_matches('.').to_string();
        if !id.is_empty() && id.len() <= 128 && !found.contains(&id) {
            found.push(id);
            if found.len() == MAX_MENTIONS {
                break;
            }
        }
    }
    found
}
