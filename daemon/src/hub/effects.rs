//! What the hub does after a commit, driven by the committed-op stream alone: a message, an
//! edit, a delete, a reaction, a group change, a removed attendee or a zone transition causes
//! the same frames whether it was made here (WebSocket, HTTP, the MQTT bridge, presence) or
//! pulled from the relay. Whoever writes only commits; nobody calls the fan-out directly.
//!
//! One task follows the stream in log order, so the effects of two ops keep their commit order
//! (a removal from a group unsubscribes before a later message of that group fans out).

use std::collections::HashMap;
use std::sync::Weak;
use std::time::Duration;

use serde_json::json;

use super::channels::Channel;
use super::{Hub, Inner, Message, presence_channel};
use crate::domain::DomainError;
use crate::oplog::message::{DELETE, EDIT, POST, REACT, mentions};
use crate::oplog::{ATTENDEE_UPSERT, group, presence, token_key};
use crate::store::{Committed, Subscription};

/// How long the task waits after the store failed to give it the ops it missed.
const RETRY_AFTER_ERROR: Duration = Duration::from_millis(500);

/// Follows `stream` until the store stops, applying each op's effects to the hub. Holds the hub
/// only weakly, so it never keeps the daemon's state alive.
pub(super) async fn run(hub: Weak<Inner>, mut stream: Subscription) {
    while let Some(next) = stream.next().await {
        let ops = match next {
            Ok(ops) => ops,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read missed ops for the hub; retrying");
                tokio::time::sleep(RETRY_AFTER_ERROR).await;
                continue;
            }
        };
        let Some(inner) = hub.upgrade() else { break };
        let hub = Hub(inner);
        hub.after_commit(&ops).await;
        if let Some(last) = ops.last() {
            hub.0.settled.send_replace(last.seq);
        }
    }
}

impl Hub {
    /// The effects of one run of committed ops, in their order.
    async fn after_commit(&self, ops: &[Committed]) {
        let messages = match self.messages_of(ops).await {
            Ok(messages) => messages,
            Err(e) => {
                // Clients resume with gap-fill; the messages are committed either way.
                tracing::warn!(error = %e, "cannot load committed messages for fan-out");
                HashMap::new()
            }
        };
        for committed in ops {
            let op = &committed.op;
            match op.kind.as_str() {
                POST => {
                    if let Some(message) = messages.get(&op.entity_id) {
                        self.fan_out(message);
                        let mut told = mentions(&message.content);
                        if let Some(Channel::Direct(a, b)) = Channel::parse(&message.channel) {
                            // A direct message is for the other party as a mention is: their
                            // badge tells their app of a conversation it may not have open.
                            let other = if message.sender == a { b } else { a };
                            if !told.iter().any(|u| u == other) {
                                told.push(other.to_string());
                            }
                        }
                        if !told.is_empty() {
                            self.badges_for_mentions(&message.channel, &message.sender, told)
                                .await;
                        }
                    }
                }
                EDIT | DELETE | REACT => {
                    if let Some(message) = messages.get(&op.entity_id) {
                        self.fan_out_change(message, &op.body);
                    }
                }
                group::CREATE | group::MEMBERS => {
                    self.group_changed(&op.entity_id, &removed_by(&op.body))
                        .await;
                }
                ATTENDEE_UPSERT => {
                    if op.body.get("deleted").is_some() {
                        self.attendee_changed(&op.entity_id).await;
                    }
                    if op.body.get("privacy").is_some() {
                        self.privacy_changed(&op.entity_id).await;
                    }
                }
                token_key::PUBLISH => self.key_published().await,
                presence::TRANSITION => {
                    // Already filtered by the person's privacy where it was decided
                    // (`presence::transition_for`), on whichever appliance saw the badge.
                    let at = op.body["at_ms"].as_i64().unwrap_or(0);
                    self.ephemeral(
                        &presence_channel(&op.entity_id),
                        "presence.changed",
                        json!({
                            "user_id": op.entity_id,
                            "kind": op.body["kind"],
                            "zone": op.body["zone_id"],
                            "at": crate::domain::rfc3339(at),
                        }),
                    );
                }
                _ => {}
            }
        }
    }

    /// The messages the posts and changes among `ops` touched, as they are now: one read.
    async fn messages_of(
        &self,
        ops: &[Committed],
    ) -> Result<HashMap<String, Message>, DomainError> {
        let ids: Vec<String> = ops
            .iter()
            .filter(|c| [POST, EDIT, DELETE, REACT].contains(&c.op.kind.as_str()))
            .map(|c| c.op.entity_id.clone())
            .collect();
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        self.0
            .store
            .read(move |conn| {
                let mut found = HashMap::with_capacity(ids.len());
                for id in ids {
                    if let Some(message) = super::load(conn, &id)? {
                        found.insert(id, message);
                    }
                }
                Ok(found)
            })
            .await
    }
}

impl Hub {
    /// Follows zone occupancy from presence (with or without MQTT) until `stop`: each zone whose
    /// count moved gets `zone.occupancy` on its channel (a zone that emptied gets 0).
    pub async fn follow_occupancy(
        self,
        mut occupancy: tokio::sync::watch::Receiver<crate::presence::Occupancy>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let zones = occupancy.borrow_and_update().zones.clone();
            let moved: Vec<(String, usize)> = {
                let mut sent = self
                    .0
                    .occupancy
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let moved = crate::presence::occupancy_changes(&sent, &zones);
                for (zone, n) in &moved {
                    sent.insert(zone.clone(), *n);
                }
                moved
            };
            for (zone, n) in moved {
                self.ephemeral(
                    &format!("zone:{zone}"),
                    "zone.occupancy",
                    super::occupancy_payload(&zone, n),
                );
            }
            tokio::select! {
                _ = stop.changed() => return,
                changed = occupancy.changed() => if changed.is_err() { return },
            }
        }
    }
}

/// The people a `group.members` remove took out: its tags are `{add op id}/{user}`.
fn removed_by(body: &serde_json::Value) -> Vec<String> {
    if body.get("action").and_then(|a| a.as_str()) != Some("remove") {
        return Vec::new();
    }
    let mut users: Vec<String> = body["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str()?.split_once('/').map(|(_, u)| u.to_string()))
        .collect();
    users.sort();
    users.dedup();
    users
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remove_names_the_people_of_its_tags() {
        let body = json!({"action": "remove", "tags": ["01a/a2", "01b/a2", "01c/a3"], "by": "a1"});
        assert_eq!(removed_by(&body), ["a2", "a3"]);
        assert!(removed_by(&json!({"action": "add", "user_ids": ["a2"]})).is_empty());
        assert!(removed_by(&json!({"action": "remove", "tags": ["no-slash"]})).is_empty());
    }
}
