//! What a signage display shows, read in one go: its content manifest (set through the admin
//! API and kept as the retained `signage/{display}/content`), the room it stands at (the
//! manifest's `zone`) with that room's sessions, and the latest announcements. Live changes
//! reach the display over MQTT; this is its state on (re)load.

use serde_json::{Value as Json, json};

use super::{DomainError, messages, retained, schedule};
use crate::store::Store;

/// Announcements a display shows on load.
pub const ANNOUNCEMENTS: usize = 5;

/// The view of `display` in `event_id`; `content_topic` is the full topic of its manifest.
/// `{"display", "content": manifest | null, "event", "room": {"id", "name", "capacity",
/// "sessions"} | null, "announcements": [messages, newest last]}`.
pub async fn view(
    store: &Store,
    event_id: &str,
    display: &str,
    content_topic: String,
) -> Result<Json, DomainError> {
    let schedule = schedule::read(store, event_id).await?;
    let event = event_id.to_string();
    let (content, announcements) = store
        .read(move |conn| {
            let content = retained::get(conn, &content_topic)?
                .and_then(|payload| serde_json::from_slice::<Json>(&payload).ok())
                .map(|published| published["content"].clone());
            let announcements = messages::latest(conn, &event, "announcements", ANNOUNCEMENTS)?;
            Ok::<_, DomainError>((content, announcements))
        })
        .await?;
    let zone = content
        .as_ref()
        .and_then(|c| c.get("zone"))
        .and_then(Json::as_str);
    let room = zone.and_then(|zone| {
        schedule["rooms"]
            .as_array()?
            .iter()
            .find(|r| r["id"] == zone)
            .cloned()
    });
    Ok(json!({
        "display": display,
        "content": content,
        "event": schedule["event"],
        "room": room,
        "announcements": announcements,
    }))
}
