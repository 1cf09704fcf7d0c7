//! Group chats as stored: a group with its current members, and the groups a person is in.
//! Membership changes are ops (`oplog::group`).

use rusqlite::Connection;

use super::DomainError;
use crate::oplog::group;

/// A group as members see it.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct Group {
    /// The group id.
    pub group_id: String,
    /// Its channel, `group:{id}`.
    pub channel: String,
    /// Its name.
    pub name: String,
    /// Who created it (and may remove others).
    pub created_by: String,
    /// Members now, sorted.
    pub members: Vec<String>,
}

/// Whether group `group_id` belongs to `event`.
pub fn in_event(conn: &Connection, event: &str, group_id: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM chat_groups WHERE group_id = ?1 AND event_id = ?2")?
        .exists([group_id, event])
}

/// A group as it is now.
pub fn load(conn: &Connection, group_id: &str) -> Result<Group, DomainError> {
    let (name, created_by): (String, String) = conn
        .prepare_cached("SELECT name, created_by FROM chat_groups WHERE group_id = ?1")?
        .query_row([group_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(Group {
        group_id: group_id.to_string(),
        channel: format!("group:{group_id}"),
        name,
        created_by,
        members: group::members(conn, group_id)?,
    })
}

/// The groups of `event` that `user` is a member of, by id.
pub fn of_user(conn: &Connection, event: &str, user: &str) -> Result<Vec<Group>, DomainError> {
    let ids: Vec<String> = conn
        .prepare_cached(
            "SELECT DISTINCT g.group_id FROM group_members m
             JOIN chat_groups g ON g.group_id = m.group_id
             WHERE m.user_id = ?1 AND g.event_id = ?2 ORDER BY g.group_id",
        )?
        .query_map(rusqlite::params![user, event], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    ids.iter().map(|id| load(conn, id)).collect()
}
