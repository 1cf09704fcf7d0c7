//! Attendees: kiosk lookup and bulk import (JSON or CSV, all or nothing).

use rusqlite::{OptionalExtension, params};
use serde_json::{Map, Value as Json, json};

use super::entities::{check_fields, validate_id};
use super::{DomainError, rfc3339};
use crate::oplog::{ENTITIES, Entity, FieldType};
use crate::store::Store;

/// Parsed import rows: attendee id and the fields to set.
pub type ImportRows = Vec<(String, Map<String, Json>)>;

/// Most attendees one import may carry.
pub const MAX_IMPORT_ROWS: usize = 200_000;
/// Most problems listed in one refused import (the count of the rest is given).
const MAX_LISTED_PROBLEMS: usize = 25;
/// Most results of one lookup.
pub const MAX_LOOKUP_RESULTS: u32 = 20;

fn attendee_entity() -> &'static Entity {
    // The list is static and contains `attendee`; the fallback only keeps this total.
    ENTITIES
        .iter()
        .find(|e| e.name == "attendee")
        .unwrap_or(&ENTITIES[0])
}

/// Finds attendees by exact ticket code, or by name prefix (case-insensitive).
pub async fn lookup(store: &Store, event_id: &str, q: &str) -> Result<Json, DomainError> {
    let q = q.trim().to_string();
    if q.is_empty() || q.len() > 128 {
        return Err(DomainError::Invalid(
            "`q` must be a ticket code or the start of a name (1-128 bytes)".into(),
        ));
    }
    let event_id = event_id.to_string();
    store
        .read(move |conn| {
            let escaped = like_literal(&q);
            let mut stmt = conn.prepare_cached(
                "SELECT a.id, a.name, a.company, a.ticket_code,
                        (SELECT min(c.hlc_wall) FROM checkins c WHERE c.attendee_id = a.id)
                 FROM attendees a
                 WHERE a.event_id = ?1 AND a.deleted = 0
                   AND (a.ticket_code = ?2 OR a.name LIKE ?3 ESCAPE '\\')
                 ORDER BY (a.ticket_code = ?2) DESC, a.name COLLATE NOCASE, a.id
                 LIMIT ?4",
            )?;
            let rows = stmt
                .query_map(
                    params![event_id, q, format!("{escaped}%"), MAX_LOOKUP_RESULTS],
                    |r| {
                        let checked_in: Option<i64> = r.get(4)?;
                        Ok(json!({
                            "id": r.get::<_, String>(0)?,
                            "name": r.get::<_, String>(1)?,
                            "company": r.get::<_, Option<String>>(2)?,
                            "ticket_code": r.get::<_, Option<String>>(3)?,
                            "checked_in_at": checked_in.map(rfc3339),
                        }))
                    },
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(json!({ "attendees": rows }))
        })
        .await
}

/// `text` for a `LIKE … ESCAPE '\\'` pattern: its `%` and `_` (and the escape itself) match
/// literally instead of as wildcards.
fn like_literal(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// Parses a JSON import: an array of objects, each with `id` and attendee fields.
pub fn parse_json(body: &[u8]) -> Result<ImportRows, DomainError> {
    let value: Json = serde_json::from_slice(body)
        .map_err(|e| DomainError::Invalid(format!("import body is not valid JSON: {e}")))?;
    let Json::Array(items) = value else {
        return Err(DomainError::Invalid(
            "a JSON import is an array of attendee objects, e.g. [{\"id\":\"a1\",\"name\":\"Ada\"}]"
                .into(),
        ));
    };
    let entity = attendee_entity();
    let mut rows = Vec::with_capacity(items.len());
    let mut problems = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let at = format!("record {}: ", index + 1);
        let Json::Object(mut fields) = item else {
            problems.push(format!("{at}must be an object"));
            continue;
        };
        match fields.remove("id") {
            Some(Json::String(id)) => {
                problems.extend(check_fields(entity, &fields, &at));
                if let Err(e) = validate_id(&id) {
                    problems.push(format!("{at}{e}"));
                }
                rows.push((id, fields));
            }
            _ => problems.push(format!("{at}`id` (a string) is required")),
        }
    }
    finish(rows, problems)
}

/// Parses a CSV import: a header row naming `id` and attendee fields, then one row per attendee.
/// Empty cells of optional fields mean "no value".
pub fn parse_csv(body: &[u8]) -> Result<ImportRows, DomainError> {
    let entity = attendee_entity();
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(body);
    let headers = reader
        .headers()
        .map_err(|e| DomainError::Invalid(format!("CSV header row: {e}")))?
        .clone();
    let mut problems = Vec::new();
    let mut columns = Vec::new();
    let mut id_column = None;
    for (i, name) in headers.iter().enumerate() {
        if name == "id" {
            id_column = Some(i);
            columns.push(None);
        } else if let Some((field, ty)) = entity.fields.iter().find(|(n, _)| *n == name) {
            columns.push(Some((*field, *ty)));
        } else {
            problems.push(format!(
                "line 1: unknown column `{name}`; known: id, {}",
                entity.field_names()
            ));
            columns.push(None);
        }
    }
    let Some(id_column) = id_column else {
        return Err(DomainError::Invalid(
            "line 1: the header row must have an `id` column".into(),
        ));
    };
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                problems.push(format!("line {line}: {e}"));
                continue;
            }
        };
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let at = format!("line {line}: ");
        let id = record.get(id_column).unwrap_or_default().to_string();
        if let Err(e) = validate_id(&id) {
            problems.push(format!("{at}{e}"));
        }
        let mut fields = Map::new();
        for (cell, column) in record.iter().zip(&columns) {
            let Some((name, ty)) = column else { continue };
            let value = match (ty, cell) {
                (FieldType::OptText(_) | FieldType::OptCount, "") => Json::Null,
                (FieldType::Bool, c) => match c {
                    "true" | "1" | "yes" => Json::Bool(true),
                    "false" | "0" | "no" | "" => Json::Bool(false),
                    other => Json::String(other.to_string()),
                },
                (FieldType::OptCount, c) => c
                    .parse::<u64>()
                    .map(Json::from)
                    .unwrap_or_else(|_| Json::String(c.to_string())),
                (_, c) => Json::String(c.to_string()),
            };
            fields.insert((*name).to_string(), value);
        }
        problems.extend(check_fields(entity, &fields, &at));
        rows.push((id, fields));
    }
    finish(rows, problems)
}

fn finish(rows: ImportRows, mut problems: Vec<String>) -> Result<ImportRows, DomainError> {
    if rows.len() > MAX_IMPORT_ROWS {
        problems.insert(
            0,
            format!(
                "{} attendees in one import; at most {MAX_IMPORT_ROWS}: split the file",
                rows.len()
            ),
        );
    }
    let mut seen = std::collections::HashSet::new();
    for (id, _) in &rows {
        if !seen.insert(id.as_str()) {
            problems.push(format!("id `{id}` appears more than once"));
        }
    }
    if rows.is_empty() && problems.is_empty() {
        problems.push("the import holds no attendees".into());
    }
    if problems.is_empty() {
        return Ok(rows);
    }
    let total = problems.len();
    let mut message = format!("import refused, nothing was written ({total} problem(s)): ");
    message.push_str(&problems[..total.min(MAX_LISTED_PROBLEMS)].join("; "));
    if total > MAX_LISTED_PROBLEMS {
        message.push_str(&format!("; and {} more", total - MAX_LISTED_PROBLEMS));
    }
    Err(DomainError::Invalid(message))
}

/// Applies a parsed import as one transaction: every attendee or none.
pub async fn import(store: &Store, event_id: &str, rows: ImportRows) -> Result<usize, DomainError> {
    let event_id = event_id.to_string();
    let kind = attendee_entity().kind;
    store
        .write(move |ctx| {
            let count = rows.len();
            for (id, fields) in rows {
                let op = ctx.new_op(&event_id, kind, &id, Json::Object(fields));
                ctx.apply_owned(op)?;
            }
            Ok(count)
        })
        .await
}

/// Whether `user` is a current (not deleted) attendee of `event`.
pub fn is_current(
    conn: &rusqlite::Connection,
    event: &str,
    user: &str,
) -> Result<bool, DomainError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM attendees WHERE id = ?1 AND event_id = ?2 AND deleted = 0")?
        .exists(rusqlite::params![user, event])?)
}

/// The privacy setting of current attendee `user` of `event`, as stored.
pub fn privacy(
    conn: &rusqlite::Connection,
    event: &str,
    user: &str,
) -> Result<Option<String>, DomainError> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .prepare_cached(
            "SELECT privacy FROM attendees WHERE id = ?1 AND event_id = ?2 AND deleted = 0",
        )?
        .query_row(rusqlite::params![user, event], |r| r.get(0))
        .optional()?)
}

/// Every current attendee's badge: badge beacon id → (attendee id, privacy as stored).
pub fn badges(
    conn: &rusqlite::Connection,
) -> Result<std::collections::HashMap<String, (String, String)>, DomainError> {
    let mut stmt = conn.prepare(
        "SELECT badge_beacon_id, id, privacy FROM attendees
         WHERE badge_beacon_id IS NOT NULL AND deleted = 0",
    )?;
    let badges = stmt
        .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?
        .collect::<Result<_, _>>()?;
    Ok(badges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_import_parses_and_maps_empty_cells() {
        let rows = parse_csv(b"id,name,company,privacy\na1,Ada,,zone\na2,Grace,Navy,hidden\n")
            .expect("valid");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].1["company"], Json::Null);
        assert_eq!(rows[1].1["privacy"], "hidden");
    }

    #[test]
    fn csv_problems_are_all_listed_with_line_numbers() {
        let err = parse_csv(b"id,name,shoe_size,privacy\na1,Ada,42,zone\n,Bob,1,x\na1,C,2,zone\n")
            .expect_err("invalid")
            .to_string();
        assert!(err.contains("line 1: unknown column `shoe_size`"), "{err}");
        assert!(err.contains("line 3: id ``"), "{err}");
        assert!(err.contains("line 3: `privacy` must be one of"), "{err}");
        assert!(err.contains("id `a1` appears more than once"), "{err}");
        assert!(err.contains("nothing was written"), "{err}");
    }

    #[test]
    fn csv_without_an_id_column_is_refused() {
        let err = parse_csv(b"name\nAda\n").expect_err("invalid").to_string();
        assert!(err.contains("`id` column"), "{err}");
    }

    #[test]
    fn ragged_csv_rows_are_reported() {
        let err = parse_csv(b"id,name\na1,Ada,extra\n")
            .expect_err("invalid")
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn json_import_problems_name_the_record() {
        let err =
            parse_json(br#"[{"id":"a1","name":"Ada"},{"name":"NoId"},{"id":"a3","email":7},5]"#)
                .expect_err("invalid")
                .to_string();
        assert!(err.contains("record 2: `id`"), "{err}");
        assert!(err.contains("record 3: `email` must be a string"), "{err}");
        assert!(err.contains("record 4: must be an object"), "{err}");
        assert!(
            parse_json(b"{")
                .expect_err("bad")
                .to_string()
                .contains("not valid JSON")
        );
    }
}

/// What an attendee sees of their own registration: `{"id", "name", "company", "privacy",
/// "checked_in_at"}`; `None` when `attendee_id` is not a current attendee of `event_id`.
pub async fn me(
    store: &Store,
    event_id: &str,
    attendee_id: &str,
) -> Result<Option<Json>, DomainError> {
    let (event_id, attendee_id) = (event_id.to_string(), attendee_id.to_string());
    store
        .read(move |conn| {
            use rusqlite::OptionalExtension;
            let found = conn
                .prepare_cached(
                    "SELECT a.id, a.name, a.company, a.privacy,
                            (SELECT min(c.hlc_wall) FROM checkins c WHERE c.attendee_id = a.id)
                     FROM attendees a WHERE a.id = ?1 AND a.event_id = ?2 AND a.deleted = 0",
                )?
                .query_row(params![attendee_id, event_id], |r| {
                    let checked_in: Option<i64> = r.get(4)?;
                    Ok(json!({
                        "id": r.get::<_, String>(0)?,
                        "name": r.get::<_, String>(1)?,
                        "company": r.get::<_, Option<String>>(2)?,
                        "privacy": r.get::<_, String>(3)?,
                        "checked_in_at": checked_in.map(rfc3339),
                    }))
                })
                .optional()?;
            Ok::<_, DomainError>(found)
        })
        .await
}

/// Sets `attendee_id`'s privacy level (one of [`crate::oplog::PRIVACY_LEVELS`]): an
/// `attendee.upsert` op of that one field, so every appliance of the event applies it, and the
/// committed-op stream tells presence and the hub at once.
pub async fn set_privacy(
    store: &Store,
    event_id: &str,
    attendee_id: &str,
    level: &str,
) -> Result<(), DomainError> {
    if !crate::oplog::PRIVACY_LEVELS.contains(&level) {
        return Err(DomainError::Invalid(format!(
            "`level` must be one of {}, not `{}`",
            crate::oplog::PRIVACY_LEVELS.join(", "),
            level.chars().take(32).collect::<String>()
        )));
    }
    let (event_id, attendee_id) = (event_id.to_string(), attendee_id.to_string());
    let body = json!({ "privacy": level });
    store
        .write(move |ctx| {
            if !is_current(ctx.conn(), &event_id, &attendee_id)? {
                return Err(DomainError::NotFound(format!(
                    "no attendee `{attendee_id}`"
                )));
            }
            let op = ctx.new_op(&event_id, attendee_entity().kind, &attendee_id, body);
            ctx.apply_owned(op)?;
            Ok(())
        })
        .await
}

/// Forgets every zone transition of `attendee_id` up to now, here and (through the op log,
/// `presence.forget`) on every appliance of the event.
pub async fn forget_location_history(
    store: &Store,
    event_id: &str,
    attendee_id: &str,
) -> Result<(), DomainError> {
    validate_id(attendee_id)?;
    let (event_id, attendee_id) = (event_id.to_string(), attendee_id.to_string());
    store
        .write(move |ctx| {
            let body = json!({ "before_ms": ctx.now_ms() });
            let op = ctx.new_op(
                &event_id,
                crate::oplog::presence::FORGET,
                &attendee_id,
                body,
            );
            ctx.apply_owned(op)?;
            Ok::<_, DomainError>(())
        })
        .await
}

/// Most results of one people search.
pub const MAX_PEOPLE_RESULTS: u32 = 20;

/// Attendees of `event_id` a fellow attendee may find to follow: those whose name, or a word of
/// it, starts with `q` (case-insensitive), at most [`MAX_PEOPLE_RESULTS`], as
/// `{"people": [{"id", "name", "company"}]}`. Someone whose privacy is `hidden` is not listed.
pub async fn people(store: &Store, event_id: &str, q: &str) -> Result<Json, DomainError> {
    let q = q.trim().to_string();
    if q.chars().count() < 2 || q.len() > 64 {
        return Err(DomainError::Invalid(
            "`q` must be the start of a name (2-64 bytes)".into(),
        ));
    }
    let event_id = event_id.to_string();
    store
        .read(move |conn| {
            let escaped = like_literal(&q);
            let mut stmt = conn.prepare_cached(
                "SELECT id, name, company FROM attendees
                 WHERE event_id = ?1 AND deleted = 0 AND privacy != 'hidden'
                   AND (name LIKE ?2 ESCAPE '\\' OR name LIKE ?3 ESCAPE '\\')
                 ORDER BY name COLLATE NOCASE, id
                 LIMIT ?4",
            )?;
            let rows = stmt
                .query_map(
                    params![
                        event_id,
                        format!("{escaped}%"),
                        format!("% {escaped}%"),
                        MAX_PEOPLE_RESULTS
                    ],
                    |r| {
                        Ok(json!({
                            "id": r.get::<_, String>(0)?,
                            "name": r.get::<_, String>(1)?,
                            "company": r.get::<_, Option<String>>(2)?,
                        }))
                    },
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok::<_, DomainError>(json!({ "people": rows }))
        })
        .await
}

/// Most ids one [`names`] call takes.
pub const MAX_NAME_IDS: usize = 100;

/// The names of current attendees of `event_id` among `ids`, as
/// `{"people": [{"id", "name", "company"}]}`: how the app shows who wrote a message or is in a
/// group. Unlike [`people`], this lists attendees whose privacy is `hidden` too: their id is
/// already known to whoever asks (from a message or a group), and the privacy level governs
/// status and location, not the name on one's own messages.
pub async fn names(store: &Store, event_id: &str, ids: Vec<String>) -> Result<Json, DomainError> {
    if ids.is_empty() || ids.len() > MAX_NAME_IDS {
        return Err(DomainError::Invalid(format!(
            "`ids` must name 1-{MAX_NAME_IDS} attendees, separated by commas"
        )));
    }
    for id in &ids {
        validate_id(id)?;
    }
    let event_id = event_id.to_string();
    store
        .read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, name, company FROM attendees
                 WHERE event_id = ?1 AND id = ?2 AND deleted = 0",
            )?;
            let mut rows = Vec::new();
            for id in &ids {
                let found = stmt
                    .query_row(params![event_id, id], |r| {
                        Ok(json!({
                            "id": r.get::<_, String>(0)?,
                            "name": r.get::<_, String>(1)?,
                            "company": r.get::<_, Option<String>>(2)?,
                        }))
                    })
                    .optional()?;
                rows.extend(found);
            }
            Ok::<_, DomainError>(json!({ "people": rows }))
        })
        .await
}

/// Who a sign-in found: the attendee's id and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    /// The attendee id (the token's `sub`).
    pub id: String,
    /// Their name as registered.
    pub name: String,
}

/// The current attendee of `event_id` whose ticket code is `ticket_code` and whose email, last
/// name (or last names), or full name is `name_or_email`, compared without case; `None` when no
/// registration matches the pair. Which half was wrong is never told apart.
pub async fn sign_in(
    store: &Store,
    event_id: &str,
    ticket_code: &str,
    name_or_email: &str,
) -> Result<Option<SignedIn>, DomainError> {
    let (event_id, ticket_code) = (event_id.to_string(), ticket_code.trim().to_string());
    let given = normalise(name_or_email);
    let candidates: Vec<(String, String, Option<String>)> = store
        .read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, name, email FROM attendees
                 WHERE event_id = ?1 AND ticket_code = ?2 AND deleted = 0",
            )?;
            let rows = stmt
                .query_map(params![event_id, ticket_code], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok::<_, DomainError>(rows)
        })
        .await?;
    Ok(candidates
        .into_iter()
        .find(|(_, name, email)| matches_person(&given, name, email.as_deref()))
        .map(|(id, name, _)| SignedIn { id, name }))
}

/// Lower case, words separated by single spaces.
fn normalise(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Whether `given` (normalised) is the email, the full name, or the last word(s) of the name.
fn matches_person(given: &str, name: &str, email: Option<&str>) -> bool {
    if given.chars().count() < 2 {
        return false;
    }
    if given.contains('@') {
        return email.is_some_and(|e| normalise(e) == given);
    }
    let name = normalise(name);
    // "van der Berg" is the last name of "Anna van der Berg": a match at a word boundary.
    name == given || name.ends_with(&format!(" {given}"))
}

#[cfg(test)]
mod sign_in_tests {
    use super::matches_person;

    #[test]
    fn the_last_name_full_name_or_email_matches_and_nothing_else() {
        let m = |given: &str| matches_person(given, "Anna  van der Berg", Some("Anna@Example.org"));
        assert!(m("berg"));
        assert!(m("van der berg"));
        assert!(m("anna van der berg"));
        assert!(m("anna@example.org"));
        assert!(!m("erg"), "a suffix inside a word is not a name");
        assert!(!m("anna"), "a first name alone is not enough");
        assert!(!m("b"), "one letter is not a name");
        assert!(!m("other@example.org"));
        assert!(!matches_person("x@y.z", "X", None), "no email registered");
    }
}
