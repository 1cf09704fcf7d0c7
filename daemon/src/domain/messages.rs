//! Stored messages as the hub reads them: a message with its reactions, a channel's history,
//! read watermarks, unread and mention counts. The writes are ops (`oplog::message`); these
//! are the reads and the per-attendee read marks, which are this appliance's own state.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::{DomainError, rfc3339};

/// A stored message, as clients see it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Message {
    /// Channel name.
    pub channel: String,
    /// Position in the channel on this appliance.
    pub seq: i64,
    /// Global id.
    pub message_id: String,
    /// Sender: an attendee id, or `mqtt:<device>` for bridged alerts.
    pub sender: String,
    /// Text.
    pub content: String,
    /// The message it answers.
    pub reply_to: Option<String>,
    /// When it was written (RFC 3339).
    pub created_at: String,
    /// When it was last edited or deleted (RFC 3339), if it was.
    pub edited_at: Option<String>,
    /// Deleted (the content is then empty).
    pub deleted: bool,
    /// Reactions: emoji → how many attendees (none once deleted).
    pub reactions: std::collections::BTreeMap<String, u32>,
}

/// The columns [`row`] reads, from `messages m`.
const MESSAGE_COLUMNS: &str = "m.channel, m.seq, m.message_id, m.sender, m.content, m.reply_to,
    m.created_ms, m.edited_ms, m.deleted,
    CASE WHEN m.deleted = 0 THEN (SELECT json_group_object(emoji, n) FROM
        (SELECT emoji, count(DISTINCT user_id) AS n FROM reactions r
         WHERE r.message_id = m.message_id GROUP BY emoji)) END";

/// Messages from others above a read watermark, and of those the ones mentioning the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Badge {
    /// Messages from others above the read watermark (deleted ones excluded).
    pub unread: i64,
    /// Of those, the ones mentioning the attendee.
    pub mentions: i64,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        channel: r.get(0)?,
        seq: r.get(1)?,
        message_id: r.get(2)?,
        sender: r.get(3)?,
        content: r.get(4)?,
        reply_to: r.get(5)?,
        created_at: rfc3339(r.get::<_, i64>(6)?),
        edited_at: r.get::<_, Option<i64>>(7)?.map(rfc3339),
        deleted: r.get::<_, i64>(8)? != 0,
        reactions: r
            .get::<_, Option<String>>(9)?
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default(),
    })
}

/// One message as it is now.
pub fn load(conn: &rusqlite::Connection, message_id: &str) -> Result<Option<Message>, DomainError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.message_id = ?1"
        ))?
        .query_row([message_id], row)
        .optional()?)
}

/// Messages of `channel` after `after_seq`, oldest first, at most `limit`; and whether more
/// follow.
pub fn history(
    conn: &Connection,
    event: &str,
    channel: &str,
    after_seq: i64,
    limit: usize,
) -> Result<(Vec<Message>, bool), DomainError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m
         WHERE m.event_id = ?1 AND m.channel = ?2 AND m.seq > ?3
         ORDER BY m.seq LIMIT ?4"
    ))?;
    let mut rows = stmt
        .query_map(params![event, channel, after_seq, limit as i64 + 1], row)?
        .collect::<Result<Vec<_>, _>>()?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    Ok((rows, more))
}

/// The last `n` messages of `channel` that are not deleted, oldest first.
pub fn latest(
    conn: &Connection,
    event: &str,
    channel: &str,
    n: usize,
) -> Result<Vec<Message>, DomainError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m
         WHERE m.event_id = ?1 AND m.channel = ?2 AND m.deleted = 0
         ORDER BY m.seq DESC LIMIT ?3"
    ))?;
    let mut rows = stmt
        .query_map(params![event, channel, n as i64], row)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.reverse();
    Ok(rows)
}

/// Moves `user`'s read watermark in `channel` forward to `seq` (never back, never past the
/// channel's last message); the watermark now.
pub fn mark_read(
    conn: &Connection,
    event: &str,
    channel: &str,
    user: &str,
    seq: i64,
    now_ms: u64,
) -> Result<i64, DomainError> {
    let last: i64 = conn.query_row(
        "SELECT coalesce(max(seq), 0) FROM messages WHERE event_id = ?1 AND channel = ?2",
        params![event, channel],
        |r| r.get(0),
    )?;
    let seq = seq.clamp(0, last);
    conn.execute(
        "INSERT INTO read_marks (event_id, channel, user_id, seq, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (event_id, channel, user_id)
         DO UPDATE SET seq = max(seq, ?4), updated_ms = ?5",
        params![event, channel, user, seq, now_ms as i64],
    )?;
    Ok(conn.query_row(
        "SELECT seq FROM read_marks WHERE event_id = ?1 AND channel = ?2 AND user_id = ?3",
        params![event, channel, user],
        |r| r.get(0),
    )?)
}

/// A conversation of one attendee: a direct one (with `with`) or a group (with `name` and
/// `members`), with the attendee's badge and the channel's last `seq`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Conversation {
    /// `dm:{a}:{b}` or `group:{id}`.
    pub channel: String,
    /// `dm` or `group`.
    pub kind: &'static str,
    /// The other attendee of a direct conversation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub with: Option<String>,
    /// A group's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A group's members now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<String>>,
    /// The channel's last message (0 when it has none).
    pub last_seq: i64,
    /// Messages from others above the attendee's read watermark.
    pub unread: i64,
    /// Of those, the ones mentioning the attendee.
    pub mentions: i64,
    /// When its last message was written (RFC 3339), if it has one.
    pub last_at: Option<String>,
    #[serde(skip)]
    last_ms: i64,
}

/// Most conversations [`conversations`] returns: the hub takes 200 channels per connection.
pub const MAX_CONVERSATIONS: usize = 150;

/// `user`'s direct conversations that have a message, and the groups they are a member of,
/// the most recently active first, at most [`MAX_CONVERSATIONS`].
pub fn conversations(
    conn: &Connection,
    event: &str,
    user: &str,
) -> Result<Vec<Conversation>, DomainError> {
    let mut out = Vec::new();
    // `dm:{a}:{b}` with the user as `a` or as `b`; compared as text, so no pattern escaping.
    let direct: Vec<(String, i64, i64)> = conn
        .prepare_cached(
            "SELECT channel, max(seq), max(created_ms) FROM messages
             WHERE event_id = ?1 AND channel >= 'dm:' AND channel < 'dm;'
               AND (substr(channel, 4, length(?2) + 1) = ?2 || ':'
                    OR substr(channel, -length(?2) - 1) = ':' || ?2)
             GROUP BY channel",
        )?
        .query_map(params![event, user], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    for (channel, last_seq, last_ms) in direct {
        let Some((a, b)) = channel
            .strip_prefix("dm:")
            .and_then(|pair| pair.split_once(':'))
        else {
            continue;
        };
        let other = match (a == user, b == user) {
            (true, false) => b,
            (false, true) => a,
            _ => continue, // not a channel the hub would have made
        };
        let badge = badge(conn, event, user, &channel)?;
        out.push(Conversation {
            with: Some(other.to_string()),
            channel,
            kind: "dm",
            name: None,
            members: None,
            last_seq,
            unread: badge.unread,
            mentions: badge.mentions,
            last_at: Some(rfc3339(last_ms)),
            last_ms,
        });
    }
    for group in super::groups::of_user(conn, event, user)? {
        let (last_seq, last_ms): (i64, Option<i64>) = conn
            .prepare_cached(
                "SELECT coalesce(max(seq), 0), max(created_ms) FROM messages
                 WHERE event_id = ?1 AND channel = ?2",
            )?
            .query_row(params![event, group.channel], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        let badge = badge(conn, event, user, &group.channel)?;
        out.push(Conversation {
            channel: group.channel,
            kind: "group",
            with: None,
            name: Some(group.name),
            members: Some(group.members),
            last_seq,
            unread: badge.unread,
            mentions: badge.mentions,
            last_at: last_ms.map(rfc3339),
            last_ms: last_ms.unwrap_or(0),
        });
    }
    out.sort_by(|x, y| {
        y.last_ms
            .cmp(&x.last_ms)
            .then_with(|| x.channel.cmp(&y.channel))
    });
    out.truncate(MAX_CONVERSATIONS);
    Ok(out)
}

/// `user`'s badge in `channel`.
pub fn badge(
    conn: &Connection,
    event: &str,
    user: &str,
    channel: &str,
) -> Result<Badge, DomainError> {
    let mark: i64 = conn
        .prepare_cached(
            "SELECT coalesce(max(seq), 0) FROM read_marks
             WHERE event_id = ?1 AND channel = ?2 AND user_id = ?3",
        )?
        .query_row(params![event, channel, user], |r| r.get(0))?;
    let unread: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM messages WHERE event_id = ?1 AND channel = ?2
             AND seq > ?3 AND sender != ?4 AND deleted = 0",
        )?
        .query_row(params![event, channel, mark, user], |r| r.get(0))?;
    let mentions: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM mentions n JOIN messages m
               ON m.event_id = n.event_id AND m.channel = n.channel AND m.seq = n.seq
             WHERE n.event_id = ?1 AND n.user_id = ?2 AND n.channel = ?3
               AND n.seq > ?4 AND m.deleted = 0",
        )?
        .query_row(params![event, user, channel, mark], |r| r.get(0))?;
    Ok(Badge { unread, mentions })
}

/// The tags of `user`'s `emoji` reactions to a message (what an observed-remove names).
pub fn reaction_tags(
    conn: &Connection,
    message_id: &str,
    emoji: &str,
    user: &str,
) -> Result<Vec<String>, DomainError> {
    Ok(conn
        .prepare_cached(
            "SELECT tag FROM reactions WHERE message_id = ?1 AND emoji = ?2 AND user_id = ?3",
        )?
        .query_map(params![message_id, emoji, user], |r| r.get(0))?
        .collect::<Result<_, _>>()?)
}
