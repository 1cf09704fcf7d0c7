//! Last-writer-wins per field, by HLC then op id, for the entities that are field records.
//!
//! Table and column names come only from the static [`ENTITIES`] list, never from input, so the
//! SQL built here from them is safe.

use super::BodyError;
use std::collections::HashMap;
use std::sync::LazyLock;

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params};
use sync_agent::Op;

use super::{ApplyError, OrderKey};

/// The type and bounds of one field.
#[derive(Debug, Clone, Copy)]
pub enum FieldType {
    /// A string of at most this many bytes; `null` is not allowed.
    Text(usize),
    /// A string of at most this many bytes, or `null`.
    OptText(usize),
    /// A non-negative integer, or `null`.
    OptCount,
    /// `true` or `false`.
    Bool,
    /// One of these strings.
    OneOf(&'static [&'static str]),
}

/// A field record kind: its op kind, table and fields.
#[derive(Debug)]
pub struct Entity {
    /// The op kind that upserts it, e.g. `attendee.upsert`.
    pub kind: &'static str,
    /// The name used in `field_versions` and errors, e.g. `attendee`.
    pub name: &'static str,
    /// Its table.
    pub table: &'static str,
    /// Its fields (besides `id` and `event_id`).
    pub fields: &'static [(&'static str, FieldType)],
}

impl Entity {
    /// The field names, comma-separated, for error messages that list what is allowed.
    pub fn field_names(&self) -> String {
        let names: Vec<&str> = self.fields.iter().map(|(name, _)| *name).collect();
        names.join(", ")
    }
}

const SHORT: usize = 256;
const LONG: usize = 16 * 1024;

/// Attendee privacy settings, least to most private (DESIGN invariant 7).
pub const PRIVACY_LEVELS: &[&str] = &["precise", "zone", "venue", "hidden"];

/// Every field record kind.
pub static ENTITIES: &[Entity] = &[
    Entity {
        kind: "event.upsert",
        name: "event",
        table: "events",
        fields: &[
            ("name", FieldType::Text(SHORT)),
            ("starts_at", FieldType::OptText(64)),
            ("ends_at", FieldType::OptText(64)),
            ("timezone", FieldType::OptText(64)),
            ("deleted", FieldType::Bool),
        ],
    },
    Entity {
        kind: "zone.upsert",
        name: "zone",
        table: "zones",
        fields: &[
            ("name", FieldType::Text(SHORT)),
            ("capacity", FieldType::OptCount),
            ("deleted", FieldType::Bool),
        ],
    },
    Entity {
        kind: "beacon.upsert",
        name: "beacon",
        table: "beacons",
        fields: &[
            ("kind", FieldType::OneOf(&["badge", "venue"])),
            ("zone_id", FieldType::OptText(64)),
            ("label", FieldType::Text(SHORT)),
            ("deleted", FieldType::Bool),
        ],
    },
    Entity {
        kind: "attendee.upsert",
        name: "attendee",
        table: "attendees",
        fields: &[
            ("name", FieldType::Text(SHORT)),
            ("email", FieldType::OptText(SHORT)),
            ("company", FieldType::OptText(SHORT)),
            ("role", FieldType::OptText(SHORT)),
            ("ticket_code", FieldType::OptText(128)),
            ("badge_beacon_id", FieldType::OptText(128)),
            ("privacy", FieldType::OneOf(PRIVACY_LEVELS)),
            ("deleted", FieldType::Bool),
        ],
    },
    Entity {
        kind: "session.upsert",
        name: "session",
        table: "sessions",
        fields: &[
            ("title", FieldType::Text(SHORT)),
            ("zone_id", FieldType::OptText(64)),
            ("starts_at", FieldType::OptText(64)),
            ("ends_at", FieldType::OptText(64)),
            ("speakers", FieldType::OptText(LONG)),
            ("description", FieldType::OptText(LONG)),
            ("deleted", FieldType::Bool),
        ],
    },
];

/// Why a field value does not fit its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// A string over its limit.
    #[error("`{name}` is {len} bytes, at most {max} allowed")]
    TooLong {
        /// The field.
        name: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A string with control characters other than newline and tab.
    #[error("`{name}` contains control characters")]
    ControlCharacters {
        /// The field.
        name: String,
    },
    /// A count that is negative, fractional or too large.
    #[error("`{name}` must be a whole number ≥ 0, found {found}")]
    NotACount {
        /// The field.
        name: String,
        /// What was given.
        found: String,
    },
    /// A value outside the field's list.
    #[error("`{name}` must be one of {allowed}, found {found}")]
    NotOneOf {
        /// The field.
        name: String,
        /// The allowed values, comma-separated.
        allowed: String,
        /// What was given.
        found: String,
    },
    /// A value of the wrong JSON type.
    #[error("`{name}` must be {expected}, found {found}")]
    WrongType {
        /// The field.
        name: String,
        /// What the field takes.
        expected: &'static str,
        /// What was given.
        found: String,
    },
}

/// Checks one field value against its type; the SQLite value to store, or why not.
pub fn check_field(
    name: &str,
    ty: FieldType,
    value: &serde_json::Value,
) -> Result<Value, FieldError> {
    use serde_json::Value as J;
    match (ty, value) {
        (FieldType::Text(max) | FieldType::OptText(max), J::String(s)) => {
            if s.len() > max {
                Err(FieldError::TooLong {
                    name: name.into(),
                    len: s.len(),
                    max,
                })
            } else if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
                Err(FieldError::ControlCharacters { name: name.into() })
            } else {
                Ok(Value::Text(s.clone()))
            }
        }
        (FieldType::OptText(_) | FieldType::OptCount, J::Null) => Ok(Value::Null),
        (FieldType::OptCount, J::Number(n)) => n
            .as_u64()
            .filter(|n| *n <= i64::MAX as u64)
            .map(|n| Value::Integer(n as i64))
            .ok_or_else(|| FieldError::NotACount {
                name: name.into(),
                found: n.to_string(),
            }),
        (FieldType::Bool, J::Bool(b)) => Ok(Value::Integer(i64::from(*b))),
        (FieldType::OneOf(allowed), J::String(s)) if allowed.contains(&s.as_str()) => {
            Ok(Value::Text(s.clone()))
        }
        (FieldType::OneOf(allowed), other) => Err(FieldError::NotOneOf {
            name: name.into(),
            allowed: allowed.join(", "),
            found: other.to_string(),
        }),
        (ty, other) => Err(FieldError::WrongType {
            name: name.into(),
            expected: describe(ty),
            found: other.to_string(),
        }),
    }
}

fn describe(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Text(_) => "a string",
        FieldType::OptText(_) => "a string or null",
        FieldType::OptCount => "a whole number or null",
        FieldType::Bool => "true or false",
        FieldType::OneOf(_) => "one of the listed strings",
    }
}

/// The known fields of the op's body, checked. Unknown fields are left out (a newer node may
/// send fields this one does not store; the op log keeps them).
pub(super) fn parse(entity: &Entity, op: &Op) -> Result<Vec<(&'static str, Value)>, BodyError> {
    let body = op.body.as_object().ok_or(BodyError::NotAnObject)?;
    let mut fields = Vec::new();
    for (name, ty) in entity.fields {
        if let Some(value) = body.get(*name) {
            fields.push((*name, check_field(name, *ty, value)?));
        }
    }
    Ok(fields)
}

/// The SQL text of one entity's statements, made once: the statement cache is keyed by the text,
/// and a `format!` per op would allocate on the writer thread, the store's bottleneck.
struct EntitySql {
    select_event: String,
    insert: String,
    /// `UPDATE` of each field, by field name.
    update: HashMap<&'static str, String>,
}

static SQL: LazyLock<HashMap<&'static str, EntitySql>> = LazyLock::new(|| {
    ENTITIES
        .iter()
        .map(|e| {
            let table = e.table;
            let update = e
                .fields
                .iter()
                .map(|(f, _)| (*f, format!("UPDATE {table} SET {f} = ?1 WHERE id = ?2")))
                .collect();
            let sql = EntitySql {
                select_event: format!("SELECT event_id FROM {table} WHERE id = ?1"),
                insert: format!("INSERT INTO {table} (id, event_id) VALUES (?1, ?2)"),
                update,
            };
            (e.name, sql)
        })
        .collect()
});

pub(super) fn apply(
    conn: &Connection,
    entity: &Entity,
    op: &Op,
    key: &OrderKey<'_>,
    fields: &[(&'static str, Value)],
) -> Result<(), ApplyError> {
    let Some(sql) = SQL.get(entity.name) else {
        return Err(ApplyError::UnknownKind(op.kind.clone()));
    };
    let existing: Option<String> = conn
        .prepare_cached(&sql.select_event)?
        .query_row(params![op.entity_id], |r| r.get(0))
        .optional()?;
    match existing {
        Some(event) if event != op.scope => {
            return Err(ApplyError::ScopeMismatch {
                entity_id: op.entity_id.clone(),
                existing: event,
                scope: op.scope.clone(),
            });
        }
        Some(_) => {}
        None => {
            conn.prepare_cached(&sql.insert)?
                .execute(params![op.entity_id, op.scope])?;
        }
    }
    // One statement decides and records the winner: the version row is inserted, or replaced
    // only when this op sorts after the recorded one. A changed row means this op won the field.
    let mut claim = conn.prepare_cached(
        "INSERT INTO field_versions (entity, entity_id, field, hlc_wall, hlc_counter, hlc_node, op_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (entity, entity_id, field) DO UPDATE SET
           hlc_wall = excluded.hlc_wall, hlc_counter = excluded.hlc_counter,
           hlc_node = excluded.hlc_node, op_id = excluded.op_id
         WHERE (excluded.hlc_wall, excluded.hlc_counter, excluded.hlc_node, excluded.op_id)
             > (field_versions.hlc_wall, field_versions.hlc_counter, field_versions.hlc_node,
                field_versions.op_id)",
    )?;
    for (field, value) in fields {
        let won = claim.execute(params![
            entity.name,
            op.entity_id,
            field,
            key.wall,
            key.counter,
            key.node,
            key.id
        ])?;
        if won == 0 {
            tracing::debug!(entity = entity.name, id = %op.entity_id, field, "older write lost to a newer one");
            continue;
        }
        let Some(update) = sql.update.get(field) else {
            return Err(ApplyError::UnknownKind(op.kind.clone()));
        };
        conn.prepare_cached(update)?
            .execute(params![value, op.entity_id])?;
    }
    Ok(())
}
