//! Group chats: a group is created once (an append-only fact); its members are an
//! observed-remove set. An add tags each member with `{op id}/{user}`; a remove names the tags
//! it saw, so a concurrent add on another appliance survives a remove that did not see it.

use super::BodyError;
use rusqlite::{Connection, params};
use sync_agent::Op;

use super::ApplyError;
use super::message::remove_tags;

/// Op kind: a group created, with its first members; the entity id is the group id.
pub const CREATE: &str = "group.create";
/// Op kind: members added to or removed from a group; the entity id is the group id.
pub const MEMBERS: &str = "group.members";
/// Most members one op adds (and most a group has, checked where members are added).
pub const MAX_MEMBERS: usize = 500;

/// A parsed group op.
#[derive(Debug)]
pub(super) enum Body {
    Create {
        name: String,
        created_by: String,
        members: Vec<String>,
    },
    Add(Vec<String>),
    Remove(Vec<String>),
}

fn ids(op: &Op, field: &'static str, max: usize) -> Result<Vec<String>, BodyError> {
    let value = op.body.get(field);
    let list = value
        .and_then(|v| v.as_array())
        .ok_or_else(|| BodyError::expected(field, "a list of ids", value))?;
    if list.len() > max {
        return Err(BodyError::TooMany { field, max });
    }
    list.iter()
        .map(|v| match v.as_str() {
            Some(s) if !s.is_empty() && s.len() <= 200 => Ok(s.to_string()),
            _ => Err(BodyError::expected(field, "a list of ids", Some(v))),
        })
        .collect()
}

pub(super) fn parse(op: &Op) -> Result<Body, BodyError> {
    let text = |field: &'static str| match op.body.get(field) {
        Some(serde_json::Value::String(s)) if !s.is_empty() && s.len() <= 200 => Ok(s.clone()),
        other => Err(BodyError::expected(field, "a string of 1-200 bytes", other)),
    };
    if op.kind == CREATE {
        return Ok(Body::Create {
            name: text("name")?,
            created_by: text("created_by")?,
            members: ids(op, "members", MAX_MEMBERS)?,
        });
    }
    match op.body.get("action").and_then(|a| a.as_str()) {
        Some("add") => Ok(Body::Add(ids(op, "user_ids", MAX_MEMBERS)?)),
        Some("remove") => Ok(Body::Remove(ids(op, "tags", 10 * MAX_MEMBERS)?)),
        _ => Err(BodyError::expected(
            "action",
            "add or remove",
            op.body.get("action"),
        )),
    }
}

pub(super) fn apply(conn: &Connection, op: &Op, body: &Body) -> Result<(), ApplyError> {
    let add = |users: &[String]| -> Result<(), ApplyError> {
        for user in users {
            let tag = format!("{}/{user}", op.id);
            conn.prepare_cached(
                "INSERT INTO group_members (tag, group_id, user_id)
                 SELECT ?1, ?2, ?3 WHERE NOT EXISTS (SELECT 1 FROM removed_tags WHERE tag = ?1)
                 ON CONFLICT (tag) DO NOTHING",
            )?
            .execute(params![tag, op.entity_id, user])?;
        }
        Ok(())
    };
    match body {
        Body::Create {
            name,
            created_by,
            members,
        } => {
            conn.prepare_cached(
                "INSERT INTO chat_groups (group_id, event_id, name, created_by, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (group_id) DO NOTHING",
            )?
            .execute(params![
                op.entity_id,
                op.scope,
                name,
                created_by,
                op.hlc.wall_ms as i64
            ])?;
            add(members)
        }
        Body::Add(users) => add(users),
        Body::Remove(tags) => remove_tags(conn, tags, "group_members"),
    }
}

/// The tags under which `users` are members of `group` now (what a remove must name).
pub fn member_tags(
    conn: &Connection,
    group: &str,
    users: &[String],
) -> rusqlite::Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT tag FROM group_members WHERE group_id = ?1 AND user_id = ?2")?;
    let mut tags = Vec::new();
    for user in users {
        for tag in stmt.query_map(params![group, user], |r| r.get::<_, String>(0))? {
            tags.push(tag?);
        }
    }
    Ok(tags)
}

/// The members of `group`, sorted.
pub fn members(conn: &Connection, group: &str) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached(
        "SELECT DISTINCT user_id FROM group_members WHERE group_id = ?1 ORDER BY user_id",
    )?
    .query_map([group], |r| r.get(0))?
    .collect()
}

/// Whether `user` is a member of `group`.
pub fn is_member(conn: &Connection, group: &str, user: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM group_members WHERE group_id = ?1 AND user_id = ?2")?
        .exists(params![group, user])
}
