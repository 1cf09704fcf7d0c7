//! Unread and mention badges: per attendee and channel, the messages of others above the
//! attendee's read watermark, and how many of them mention `@attendee`.
//!
//! Sent as `notification.badge` when a channel is subscribed, when the attendee's read mark
//! moves (to all their connections, so a second phone clears too), to each mentioned
//! attendee when a message mentions them, and to the other party of a direct message. Unread counts between those moments follow from
//! `message.new`, which the client counts itself: a badge per recipient per message would
//! serialise once per recipient, which the fan-out never does.

use serde_json::json;

use super::channels::Channel;
use super::queue::Class;
use super::{Hub, frame};
use crate::domain::DomainError;

pub use crate::domain::messages::Badge;

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
            .read(move |conn| crate::domain::messages::badge(conn, &event, &user, &channel))
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

    /// After a message in `channel` mentioning `mentioned` (or sent directly to them): each
    /// connected attendee who may read the channel gets a fresh badge (a mention in a
    /// conversation one is not part of tells them nothing). Called for every committed message
    /// (`effects`).
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
