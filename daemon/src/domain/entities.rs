//! The field records managed through the admin API (events, zones, beacons, attendees,
//! sessions): validation, upsert and delete as ops, and reads as JSON.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value as Json};

use super::DomainError;
use crate::oplog::{ENTITIES, Entity, FieldType, check_field};
use crate::store::Store;

/// Looks up an entity kind by its collection name in the API (`zones`, `beacons`, ...).
pub fn by_collection(collection: &str) -> Option<&'static Entity> {
    let name = collection.strip_suffix('s')?;
    ENTITIES.iter().find(|e| e.name == name)
}

/// Entity ids: 1–128 characters of `A-Z a-z 0-9 . _ - : @`, so they are safe in URLs and
/// MQTT topics; beacon ids such as `ibeacon:<uuid>:1:2` fit.
pub fn validate_id(id: &str) -> Result<(), DomainError> {
    let ok = (1..=128).contains(&id.len())
        && !sync_agent::wire::is_path_like(id)
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(DomainError::Invalid(format!(
            "id `{}` must be 1-128 characters of A-Z, a-z, 0-9, `.`, `_`, `-`, `:` or `@`, not starting with `.` and without `..`",
            id.chars().take(140).collect::<String>()
        )))
    }
}

/// Checks a set of fields for `entity`: every key known, every value of the right type.
/// Returns every problem, prefixed by `at` (e.g. `line 4: `), so imports can report them all.
pub fn check_fields(entity: &Entity, fields: &Map<String, Json>, at: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, value) in fields {
        match entity.fields.iter().find(|(name, _)| name == key) {
            Some((name, ty)) => {
                if let Err(e) = check_field(name, *ty, value) {
                    problems.push(format!("{at}{e}"));
                }
            }
            None => problems.push(format!(
                "{at}unknown field `{key}` for a {}; known: id, {}",
                entity.name,
                entity.field_names()
            )),
        }
    }
    problems
}

/// Creates or updates `id` with `fields` (last-writer-wins per field) and returns the record.
pub async fn upsert(
    store: &Store,
    event_id: &str,
    entity: &'static Entity,
    id: String,
    fields: Map<String, Json>,
) -> Result<Json, DomainError> {
    validate_id(&id)?;
    let problems = check_fields(entity, &fields, "");
    if !problems.is_empty() {
        return Err(DomainError::Invalid(problems.join("; ")));
    }
    let event_id = event_id.to_string();
    store
        .write(move |ctx| {
            let op = ctx.new_op(&event_id, entity.kind, &id, Json::Object(fields));
            ctx.apply_owned(op)?;
            read_one(ctx.conn(), entity, &event_id, &id)?
                .ok_or_else(|| DomainError::NotFound(format!("{} `{id}` vanished", entity.name)))
        })
        .await
}

/// Marks `id` deleted (an op, so the deletion syncs like any other change).
pub async fn delete(
    store: &Store,
    event_id: &str,
    entity: &'static Entity,
    id: String,
) -> Result<(), DomainError> {
    let event_id = event_id.to_string();
    store
        .write(move |ctx| {
            if read_one(ctx.conn(), entity, &event_id, &id)?.is_none() {
                return Err(not_found(entity, &id));
            }
            let op = ctx.new_op(
                &event_id,
                entity.kind,
                &id,
                serde_json::json!({"deleted": true}),
            );
            ctx.apply_owned(op)?;
            Ok(())
        })
        .await
}

/// One record, or `NotFound`.
pub async fn get(
    store: &Store,
    event_id: &str,
    entity: &'static Entity,
    id: String,
) -> Result<Json, DomainError> {
    let event_id = event_id.to_string();
    store
        .read(move |conn| {
            read_one(conn, entity, &event_id, &id)?.ok_or_else(|| not_found(entity, &id))
        })
        .await
}

/// Records of the event that are not deleted, by id, at most `limit` after `after`.
pub async fn list(
    store: &Store,
    event_id: &str,
    entity: &'static Entity,
    after: Option<String>,
    limit: u32,
) -> Result<Vec<Json>, DomainError> {
    let event_id = event_id.to_string();
    store
        .read(move |conn| {
            let sql = format!(
                "SELECT {} FROM {} WHERE event_id = ?1 AND deleted = 0 AND id > ?2 ORDER BY id LIMIT ?3",
                columns(entity),
                entity.table
            );
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt
                .query_map(params![event_id, after.unwrap_or_default(), limit], |r| {
                    Ok(row_json(entity, r))
                })?
                .collect::<Result<Result<Vec<_>, _>, _>>()??;
            Ok(rows)
        })
        .await
}

fn not_found(entity: &Entity, id: &str) -> DomainError {
    DomainError::NotFound(format!("no {} with id `{id}`", entity.name))
}

fn columns(entity: &Entity) -> String {
    std::iter::once("id")
        .chain(entity.fields.iter().map(|(n, _)| *n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One record as JSON, deleted ones included (`deleted: true`).
pub(crate) fn read_one(
    conn: &Connection,
    entity: &Entity,
    event_id: &str,
    id: &str,
) -> Result<Option<Json>, DomainError> {
    let sql = format!(
        "SELECT {} FROM {} WHERE event_id = ?1 AND id = ?2",
        columns(entity),
        entity.table
    );
    let row = conn
        .prepare_cached(&sql)?
        .query_row(params![event_id, id], |r| Ok(row_json(entity, r)))
        .optional()?;
    row.transpose()
}

fn row_json(entity: &Entity, row: &rusqlite::Row<'_>) -> Result<Json, DomainError> {
    let mut out = Map::new();
    let id: String = row.get(0)?;
    out.insert("id".into(), Json::String(id));
    for (i, (name, ty)) in entity.fields.iter().enumerate() {
        let value: Value = row.get(i + 1)?;
        let json = match (value, ty) {
            (Value::Integer(n), FieldType::Bool) => Json::Bool(n != 0),
            (Value::Integer(n), _) => Json::from(n),
            (Value::Real(f), _) => Json::from(f),
            (Value::Text(s), _) => Json::String(s),
            (Value::Null | Value::Blob(_), _) => Json::Null,
        };
        out.insert((*name).to_string(), json);
    }
    Ok(Json::Object(out))
}

/// Whether a current (not deleted) record of `kind` (`session` or `zone`) with `id` exists in
/// `event`.
pub fn exists(
    conn: &rusqlite::Connection,
    kind: &str,
    event: &str,
    id: &str,
) -> Result<bool, DomainError> {
    let sql = match kind {
        "session" => "SELECT 1 FROM sessions WHERE id = ?1 AND event_id = ?2 AND deleted = 0",
        "zone" => "SELECT 1 FROM zones WHERE id = ?1 AND event_id = ?2 AND deleted = 0",
        other => {
            return Err(DomainError::Invalid(format!(
                "`{other}` is not a channel's kind"
            )));
        }
    };
    Ok(conn
        .prepare_cached(sql)?
        .exists(rusqlite::params![id, event])?)
}

/// The ids of `event`'s current zones, and of its badge beacons.
pub fn zones_and_badges(
    conn: &rusqlite::Connection,
    event: &str,
) -> Result<(Vec<String>, Vec<String>), DomainError> {
    let zones = conn
        .prepare("SELECT id FROM zones WHERE event_id = ?1 AND deleted = 0 ORDER BY id")?
        .query_map([event], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    let badges = conn
        .prepare("SELECT id FROM beacons WHERE event_id = ?1 AND kind = 'badge' AND deleted = 0")?
        .query_map([event], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok((zones, badges))
}
