//! The event's schedule as attendees read it: the event, its rooms (zones) with their capacity,
//! and the sessions in each, in start order. Live occupancy is not here: it comes from presence
//! (`/api/v1/zones/occupancy`, and `zone.occupancy` frames on the zone channels).

use rusqlite::params;
use serde_json::{Value as Json, json};

use super::DomainError;
use crate::store::Store;

/// The schedule of `event_id`: `{"event", "rooms": [{"id", "name", "capacity", "sessions"}],
/// "elsewhere": [sessions without a known room]}`. Deleted records are left out.
pub async fn read(store: &Store, event_id: &str) -> Result<Json, DomainError> {
    let event_id = event_id.to_string();
    store
        .read(move |conn| {
            let event = conn
                .prepare_cached(
                    "SELECT name, starts_at, ends_at, timezone FROM events
                     WHERE id = ?1 AND deleted = 0",
                )?
                .query_map(params![event_id], |r| {
                    Ok(json!({
                        "id": event_id,
                        "name": r.get::<_, String>(0)?,
                        "starts_at": r.get::<_, Option<String>>(1)?,
                        "ends_at": r.get::<_, Option<String>>(2)?,
                        "timezone": r.get::<_, Option<String>>(3)?,
                    }))
                })?
                .next()
                .transpose()?
                .unwrap_or_else(|| json!({"id": event_id, "name": null}));
            let mut rooms: Vec<Json> = conn
                .prepare_cached(
                    "SELECT id, name, capacity FROM zones WHERE event_id = ?1 AND deleted = 0
                     ORDER BY name COLLATE NOCASE, id",
                )?
                .query_map(params![event_id], |r| {
                    Ok(json!({
                        "id": r.get::<_, String>(0)?,
                        "name": r.get::<_, String>(1)?,
                        "capacity": r.get::<_, Option<i64>>(2)?,
                        "sessions": [],
                    }))
                })?
                .collect::<Result<_, _>>()?;
            let mut elsewhere = Vec::new();
            let mut stmt = conn.prepare_cached(
                "SELECT id, title, zone_id, starts_at, ends_at, speakers, description
                 FROM sessions WHERE event_id = ?1 AND deleted = 0
                 ORDER BY starts_at IS NULL, starts_at, title COLLATE NOCASE, id",
            )?;
            let sessions = stmt.query_map(params![event_id], |r| {
                Ok((
                    r.get::<_, Option<String>>(2)?,
                    json!({
                        "id": r.get::<_, String>(0)?,
                        "title": r.get::<_, String>(1)?,
                        "starts_at": r.get::<_, Option<String>>(3)?,
                        "ends_at": r.get::<_, Option<String>>(4)?,
                        "speakers": r.get::<_, Option<String>>(5)?,
                        "description": r.get::<_, Option<String>>(6)?,
                    }),
                ))
            })?;
            for row in sessions {
                let (zone, session) = row?;
                let room = rooms
                    .iter_mut()
                    .find(|room| zone.as_deref().is_some_and(|z| room["id"] == z));
                match room.and_then(|room| room["sessions"].as_array_mut()) {
                    Some(list) => list.push(session),
                    None => elsewhere.push(session),
                }
            }
            Ok::<_, DomainError>(json!({"event": event, "rooms": rooms, "elsewhere": elsewhere}))
        })
        .await
}
