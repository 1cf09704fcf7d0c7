//! Group chats: create, add and remove members. Each change is an op (`oplog::group`),
//! committed before the ack; then every member old and new gets `group.updated` (one frame,
//! serialised once), and connections of removed members leave the channel at once.

use serde_json::json;

use super::queue::Class;
use super::{Hub, Refused, frame};
use crate::domain::entities::validate_id;
use crate::domain::{DomainError, groups};
use crate::oplog::group::{self, CREATE, MAX_MEMBERS, MEMBERS};

/// Longest group name, bytes.
pub const MAX_NAME_BYTES: usize = 100;

pub use crate::domain::groups::Group;

fn check_users(users: &[String]) -> Result<(), Refused> {
    if users.is_empty() || users.len() > MAX_MEMBERS {
        return Err(Refused::invalid(format!(
            "`user_ids` must list 1-{MAX_MEMBERS} attendee ids"
        )));
    }
    match users.iter().find(|u| validate_id(u).is_err()) {
        Some(bad) => Err(Refused::invalid(format!(
            "`{bad}` is not an attendee id (1-64 of a-z, A-Z, 0-9, '-', '_', '.')"
        ))),
        None => Ok(()),
    }
}

impl Hub {
    /// Whether `user` is a member of group `group_id` in this event.
    pub async fn is_member(&self, group_id: &str, user: &str) -> Result<bool, DomainError> {
        let (event, group_id, user) = (
            self.0.event_id.clone(),
            group_id.to_string(),
            user.to_string(),
        );
        self.0
            .store
            .read(move |conn| {
                Ok::<_, DomainError>(
                    groups::in_event(conn, &event, &group_id)?
                        && group::is_member(conn, &group_id, &user)?,
                )
            })
            .await
    }

    /// Creates a group of `creator` and `members`.
    pub async fn create_group(
        &self,
        creator: &str,
        name: &str,
        members: Vec<String>,
    ) -> Result<Group, Refused> {
        if name.trim().is_empty() || name.len() > MAX_NAME_BYTES {
            return Err(Refused::invalid(format!(
                "`name` must be 1-{MAX_NAME_BYTES} bytes"
            )));
        }
        let mut members = members;
        members.push(creator.to_string());
        members.sort();
        members.dedup();
        check_users(&members)?;
        let (event, creator, name) = (
            self.0.event_id.clone(),
            creator.to_string(),
            name.to_string(),
        );
        let group = self
            .0
            .store
            .write(move |ctx| {
                let group_id = uuid::Uuid::now_v7().to_string();
                let body = json!({"name": name, "created_by": creator, "members": members});
                let op = ctx.new_op(&event, CREATE, &group_id, body);
                let seq = ctx.apply(&op)?.seq();
                Ok::<_, DomainError>((groups::load(ctx.conn(), &group_id)?, seq))
            })
            .await?;
        // Members hear of it from the committed-op stream (`effects`), before the answer.
        let (group, seq) = group;
        self.settled(seq).await;
        Ok(group)
    }

    /// Adds (`add`) or removes `users` by `by`. Any member may add; a member may remove
    /// themself; the creator may remove anyone.
    pub async fn change_members(
        &self,
        group_id: &str,
        by: &str,
        add: bool,
        users: Vec<String>,
    ) -> Result<Group, Refused> {
        check_users(&users)?;
        let (event, group_id_owned, by_owned) = (
            self.0.event_id.clone(),
            group_id.to_string(),
            by.to_string(),
        );
        let group = self
            .0
            .store
            .write(move |ctx| {
                let (group_id, by) = (group_id_owned, by_owned);
                let conn = ctx.conn();
                if !groups::in_event(conn, &event, &group_id)? || !group::is_member(conn, &group_id, &by)? {
                    return Ok(Err(Refused::new(
                        "unknown_channel",
                        format!("no group `{group_id}` you are a member of"),
                    )));
                }
                let current = groups::load(conn, &group_id)?;
                let body = if add {
                    let mut all = current.members.clone();
                    all.extend(users.iter().cloned());
                    all.sort();
                    all.dedup();
                    if all.len() > MAX_MEMBERS {
                        return Ok(Err(Refused::invalid(format!(
                            "a group has at most {MAX_MEMBERS} members"
                        ))));
                    }
                    json!({"action": "add", "user_ids": users, "by": by})
                } else {
                    if current.created_by != by && users.iter().any(|u| *u != by) {
                        return Ok(Err(Refused::new(
                            "forbidden",
                            "only the group's creator may remove others; members may remove themselves",
                        )));
                    }
                    // The remove names the adds it has seen (observed-remove).
                    let tags = group::member_tags(conn, &group_id, &users)?;
                    if tags.is_empty() {
                        return Ok(Ok((current, 0)));
                    }
                    json!({"action": "remove", "tags": tags, "by": by})
                };
                let op = ctx.new_op(&event, MEMBERS, &group_id, body);
                let seq = ctx.apply(&op)?.seq();
                Ok::<_, DomainError>(Ok((groups::load(ctx.conn(), &group_id)?, seq)))
            })
            .await
            .map_err(Refused::from)??;
        // Subscriptions end and members hear of it from the committed-op stream (`effects`),
        // before the answer: a removal takes effect at once.
        let (group, seq) = group;
        self.settled(seq).await;
        Ok(group)
    }

    /// The groups `user` is a member of.
    pub async fn groups_of(&self, user: &str) -> Result<Vec<Group>, DomainError> {
        let (event, user) = (self.0.event_id.clone(), user.to_string());
        self.0
            .store
            .read(move |conn| groups::of_user(conn, &event, &user))
            .await
    }

    /// After a committed group op (local or pulled): connections of attendees no longer members
    /// leave the channel, and members and those `removed` get `group.updated`.
    pub(super) async fn group_changed(&self, group_id: &str, removed: &[String]) {
        let id = group_id.to_string();
        let Ok(group) = self.0.store.read(move |conn| groups::load(conn, &id)).await else {
            return;
        };
        let removed: Vec<String> = removed
            .iter()
            .filter(|u| !group.members.contains(u))
            .cloned()
            .collect();
        self.unsubscribe_outsiders(&group);
        self.tell_members(&group, &removed);
    }

    /// Ends the group-channel subscriptions of connections whose attendee is not a member.
    fn unsubscribe_outsiders(&self, group: &Group) {
        let outsiders: Vec<u64> = {
            let channels = self.lock();
            channels
                .get(&group.channel)
                .into_iter()
                .flatten()
                .filter(|o| !group.members.iter().any(|m| **m == *o.user))
                .map(|o| o.connection)
                .collect()
        };
        for connection in outsiders {
            self.unsubscribe(Some(&group.channel), connection);
        }
    }

    /// `group.updated` to every member and to those just removed: one frame for all.
    fn tell_members(&self, group: &Group, removed: &[String]) {
        let bytes = frame(
            "group.updated",
            serde_json::to_value(group).unwrap_or_default(),
        );
        for user in group.members.iter().chain(removed) {
            self.to_user(user, Class::Essential, bytes.clone());
        }
    }
}
