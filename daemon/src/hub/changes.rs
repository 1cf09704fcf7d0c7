//! Edits, deletes and reactions: each an op (merge rules in `oplog::message`), committed before
//! the ack, then fanned out to the channel as `message.updated`, `message.deleted` or
//! `message.reaction` (serialised once, never dropped from a send queue).

use serde_json::{Value, json};

use super::{Hub, Message, Refused};
use crate::domain::DomainError;
use crate::domain::messages::load;
use crate::oplog::message::{DELETE, EDIT, MAX_CONTENT_BYTES, MAX_EMOJI_BYTES, REACT};

/// What a client asks to change.
#[derive(Debug, Clone)]
pub enum Request {
    /// New content (the sender only).
    Edit(String),
    /// Delete (the sender, or staff).
    Delete,
    /// Add or remove the caller's reaction.
    React {
        /// The emoji.
        emoji: String,
        /// Add (true) or remove.
        add: bool,
    },
}

impl Hub {
    /// Applies `request` by `user` (`staff` when the token has the role) to `message_id` in
    /// `channel`; the message as it is now. Fanned out after the commit, from the committed-op
    /// stream.
    pub async fn change(
        &self,
        channel: &str,
        message_id: &str,
        user: &str,
        staff: bool,
        request: Request,
    ) -> Result<Message, Refused> {
        match &request {
            Request::Edit(content) if content.is_empty() || content.len() > MAX_CONTENT_BYTES => {
                return Err(Refused::invalid(format!(
                    "`content` must be 1-{MAX_CONTENT_BYTES} bytes"
                )));
            }
            Request::React { emoji, .. }
                if emoji.is_empty()
                    || emoji.len() > MAX_EMOJI_BYTES
                    || emoji.chars().any(char::is_whitespace) =>
            {
                return Err(Refused::invalid(format!(
                    "`emoji` must be 1-{MAX_EMOJI_BYTES} bytes without spaces"
                )));
            }
            _ => {}
        }
        let (event, channel, message_id, user) = (
            self.0.event_id.clone(),
            channel.to_string(),
            message_id.to_string(),
            user.to_string(),
        );
        let outcome = self
            .0
            .store
            .write(move |ctx| {
                let Some(message) = load(ctx.conn(), &message_id)?.filter(|m| m.channel == channel)
                else {
                    return Ok(Err(Refused::new(
                        "not_found",
                        format!("no message `{message_id}` in `{channel}`"),
                    )));
                };
                if message.deleted {
                    return Ok(Err(Refused::new(
                        "deleted",
                        format!("message `{message_id}` was deleted"),
                    )));
                }
                let (kind, body) = match &request {
                    Request::Edit(_) | Request::Delete
                        if message.sender != user
                            && !(staff && matches!(request, Request::Delete)) =>
                    {
                        return Ok(Err(Refused::new(
                            "forbidden",
                            "only its sender may edit a message; its sender or staff may delete it",
                        )));
                    }
                    Request::Edit(content) => (
                        EDIT,
                        json!({"channel": channel, "content": content, "by": user}),
                    ),
                    Request::Delete => (DELETE, json!({"channel": channel, "by": user})),
                    Request::React { emoji, add: true } => (
                        REACT,
                        json!({"channel": channel, "emoji": emoji, "user": user, "action": "add"}),
                    ),
                    Request::React { emoji, add: false } => {
                        // The remove names the adds it has seen (observed-remove).
                        let tags = crate::domain::messages::reaction_tags(
                            ctx.conn(),
                            &message_id,
                            emoji,
                            &user,
                        )?;
                        if tags.is_empty() {
                            return Ok(Ok((message, 0)));
                        }
                        (
                            REACT,
                            json!({"channel": channel, "emoji": emoji, "user": user,
                                   "action": "remove", "tags": tags}),
                        )
                    }
                };
                let op = ctx.new_op(&event, kind, &message_id, body);
                let seq = ctx.apply(&op)?.seq();
                let message = load(ctx.conn(), &message_id)?
                    .ok_or_else(|| DomainError::NotFound("the message just changed".into()))?;
                Ok::<_, DomainError>(Ok((message, seq)))
            })
            .await
            .map_err(Refused::from)??;
        // The frame follows from the committed-op stream (`effects`); answered once it is queued.
        let (message, seq) = outcome;
        self.settled(seq).await;
        Ok(message)
    }

    /// Fans out the frame for an applied edit, delete or reaction (`body` is the op's), local
    /// or from another appliance.
    pub(super) fn fan_out_change(&self, message: &Message, body: &Value) {
        self.wake_long_polls(&message.channel);
        let (kind, payload) = change_frame(message, body);
        self.ephemeral_except(&message.channel, kind, payload, None);
    }
}

/// The frame type and payload telling clients of a change to `message` made by an op `body`.
pub fn change_frame(message: &Message, body: &Value) -> (&'static str, Value) {
    let base =
        json!({"channel": message.channel, "seq": message.seq, "message_id": message.message_id});
    let mut payload = base;
    let extend = |payload: &mut Value, extra: Value| {
        if let (Value::Object(p), Value::Object(e)) = (payload, extra) {
            p.extend(e);
        }
    };
    if message.deleted {
        extend(&mut payload, json!({"deleted_at": message.edited_at}));
        return ("message.deleted", payload);
    }
    match body.get("emoji").and_then(Value::as_str) {
        Some(emoji) => {
            extend(
                &mut payload,
                json!({
                    "emoji": emoji,
                    "user_id": body["user"],
                    "action": body["action"],
                    "count": message.reactions.get(emoji).copied().unwrap_or(0),
                }),
            );
            ("message.reaction", payload)
        }
        None => {
            extend(
                &mut payload,
                json!({"content": message.content, "edited_at": message.edited_at}),
            );
            ("message.updated", payload)
        }
    }
}
