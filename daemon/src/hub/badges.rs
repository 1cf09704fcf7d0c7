//! Unread and mention badges: per attendee and channel, the messages of others above the
//! attendee's read watermark, and how many of them mention `@attendee`.
//!
//! Sent as `notification.badge` when a channel is subscribed, when the attendee's read mark
//! moves (to all their connections, so a second phone clears too), and to each mentioned
//! attendee when a message mentions them. Unread counts between those moments follow from
//! `message.new`, which the client counts itself: a badge per recipient per message would
//! serialise once per recipient, which the fan-out never does.

use rusqlite::params;
use serde_json::json;

use super::channels::Channel;
use super::queue::Class;
use super::{Hub, frame};
use crate::domain::DomainError;

/// One badge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Badge {
    /// Messages from others above the read watermark (deleted ones excluded).
    pub unread: i64,
    /// Of those, the ones mentioning the attendee.
    pub mentions: i64,
}

impl Hub {
    /// `user`'s badge in `channel`.
    pub async fn badge(&self, user: &str, channel: &str) -> Result<Badge, DomainError> {
        let (event, user, channel) = (
            self.0.event_id.clone(),
            user.to_string(),
            channel.to_string(),
        );
        self.0
            .store
            .read(move |conn| {
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
                Ok::<_, DomainError>(Badge { unread, mentions })
            })
            .await
    }

    /// The `notification.badge` frame of `user` in `channel`.
    pub async fn badge_frame(
        &self,
        user: &str,
        channel: &str,
    ) -> Result<axum::extract::ws::Utf8Bytes, DomainError> {
        let badge = self.badge(user, channel).await?;
        Ok(frame(
            "notification.badge",
            json!({"channel": channel, "unread": badge.unread, "mentions": badge.mentions}),
        ))
    }

    /// Sends `user`'s badge in `channel` to all of `user`'s connections.
    pub async fn refresh_badge(&self, user: &str, channel: &str) {
        match self.badge_frame(user, channel).await {
            Ok(bytes) => self.to_user(user, Class::Essential, bytes),
            Err(e) => tracing::debug!(error = %e, "badge not sent"),
        }
    }

    /// After a message in `channel` mentioning `mentioned`: each connected attendee who may
    /// read the channel gets a fresh badge (a mention in a conversation one is not part of
    /// tells them nothing). Called for every committed message (`effects`).
    pub(super) async fn badges_for_mentions(
        &self,
        channel: &str,
        sender: &str,
        mentioned: Vec<String>,
    ) {
        for user in mentioned {
            if user == sender || !self.is_connected(&user) {
                continue;
            }
            let readable = match Channel::parse(channel) {
                Some(Channel::Direct(a, b)) => user == a || user == b,
                Some(Channel::Group(id)) => self.is_member(id, &user).await.unwrap_or(false),
                Some(_) => true,
                None => false,
            };
            if readable {
                self.refresh_badge(&user, channel).await;
            }
        }
    }
}
