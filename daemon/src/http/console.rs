//! What venue IT's console (`/console`) reads and does beyond the admin API: the overview of
//! the appliance's health in one answer, the same as a live stream, and announcements posted
//! with the admin token. All behind the admin token.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value as Json_, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{Admin, ApiJson};
use crate::domain::console;
use crate::mqtt::topics::Tree;

/// Conflicts the overview lists (the newest; the admin API has them all).
const CONFLICTS: u32 = 5;

/// How often the stream looks for a change in the overview.
const STREAM_EVERY: Duration = Duration::from_secs(1);

/// Everything the console's health view shows (docs/http-api.md).
async fn overview_of(state: &AppState) -> Result<Json_, ApiError> {
    let status = super::ops::status_of(state).await?;
    let tree = Tree::new(&state.config.mqtt.topic_root, state.event_id());
    let mut view = console::devices_and_alerts(&state.store, tree.prefix()).await?;
    let beacons = state.beacon_health.get();
    let low: Vec<_> = beacons.iter().filter(|b| b.low_battery).collect();
    let parked = crate::sync::parked(&state.store, 500).await?.len();
    view["status"] = status;
    view["disk_free_bytes"] = json!(state.store.free_bytes().ok());
    view["beacons"] = json!({"heard": beacons.len(), "low_battery": low});
    view["parked_ops"] = json!(parked);
    view["scanners"] = json!(state.scanners.get());
    view["ble_watchdog_restarts"] = json!(state.metrics.presence.watchdog_restarts.get());
    view["conflicts"] = json!(
        state
            .store
            .read(|conn| {
                crate::oplog::outbox::newest_conflicts(conn, CONFLICTS)
                    .map_err(crate::store::StoreError::from)
            })
            .await?
            .into_iter()
            .map(|c| json!({"op_id": c.op_id, "kind": c.kind, "entity_id": c.entity_id}))
            .collect::<Vec<_>>()
    );
    Ok(view)
}

/// `GET /api/v1/admin/overview`.
pub(super) async fn overview(
    State(state): State<AppState>,
    _: Admin,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(overview_of(&state).await?))
}

/// `GET /api/v1/admin/overview/stream`: Server-Sent Events, one `overview` event at once and
/// another whenever it changes (looked at every second; uptime aside). Read with `fetch`, which
/// can send the admin token as a header (an `EventSource` cannot).
pub(super) async fn overview_stream(State(state): State<AppState>, _: Admin) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let events = futures::stream::unfold((state, None::<Json_>), |(state, last)| async move {
        loop {
            if last.is_some() {
                tokio::time::sleep(STREAM_EVERY).await;
            }
            let Ok(now) = overview_of(&state).await else {
                tokio::time::sleep(STREAM_EVERY).await;
                continue;
            };
            // Uptime changes every second and says nothing new.
            let mut compared = now.clone();
            compared["status"]["uptime_secs"] = Json_::Null;
            if last.as_ref() != Some(&compared) {
                let event = Event::default().event("overview").data(now.to_string());
                return Some((
                    Ok::<_, std::convert::Infallible>(event),
                    (state, Some(compared)),
                ));
            }
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Body of an announcement from the console.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Announcement {
    content: String,
}

/// `POST /api/v1/admin/announcements` with `Idempotency-Key`: posts on the `announcements`
/// channel as `admin` (201 `{"seq", "message_id"}`; a repeat answers 200 with the same body).
pub(super) async fn announce(
    State(state): State<AppState>,
    _: Admin,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Announcement>,
) -> Result<Response, ApiError> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| (1..=255).contains(&k.len()))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "idempotency_key_required",
                "send an Idempotency-Key header (1-255 characters), the same on every retry",
            )
        })?;
    let (posted, replayed) = state
        .hub
        .post(
            "announcements",
            "admin",
            &body.content,
            None,
            Some(("admin".to_string(), key.to_string())),
        )
        .await?;
    let status = if replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(json!({"seq": posted.seq, "message_id": posted.message_id})),
    )
        .into_response())
}
