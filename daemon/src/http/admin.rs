//! Admin endpoints (bearer token): the entity registry, attendee import, devices, conflicts.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Map, Value as Json_, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{Admin, ApiJson, body_rejection};
use crate::domain::devices::{self, DeviceKind};
use crate::domain::{attendees, entities};
use crate::oplog::Entity;

/// Largest page of a list.
const MAX_PAGE: u32 = 1000;

fn collection(name: &str) -> Result<&'static Entity, ApiError> {
    entities::by_collection(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no collection `{name}`; use events, zones, beacons, attendees or sessions"),
        )
    })
}

/// Paging of lists.
#[derive(Deserialize)]
pub(super) struct Page {
    after: Option<String>,
    limit: Option<u32>,
}

/// `GET /api/v1/admin/{collection}?after=&limit=`.
pub(super) async fn list(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let entity = collection(&name)?;
    let Query(page) = page.map_err(|e| ApiError::invalid(e.to_string()))?;
    let limit = page.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let items = entities::list(&state.store, state.event_id(), entity, page.after, limit).await?;
    let next = (items.len() as u32 == limit)
        .then(|| {
            items
                .last()
                .and_then(|i| i["id"].as_str().map(str::to_string))
        })
        .flatten();
    Ok(Json(json!({ "items": items, "next_after": next })))
}

/// `POST /api/v1/admin/{collection}` with `{"id": ..., fields...}`: create or update.
pub(super) async fn upsert(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
    ApiJson(mut fields): ApiJson<Map<String, Json_>>,
) -> Result<impl IntoResponse, ApiError> {
    let entity = collection(&name)?;
    let id = match fields.remove("id") {
        Some(Json_::String(id)) => id,
        _ => return Err(ApiError::invalid("`id` (a string) is required")),
    };
    let stored = entities::upsert(&state.store, state.event_id(), entity, id, fields).await?;
    Ok(Json(stored))
}

/// `PUT /api/v1/admin/{collection}/{id}` with the fields to set.
pub(super) async fn put_one(
    State(state): State<AppState>,
    _: Admin,
    Path((name, id)): Path<(String, String)>,
    ApiJson(fields): ApiJson<Map<String, Json_>>,
) -> Result<impl IntoResponse, ApiError> {
    let entity = collection(&name)?;
    if fields.contains_key("id") {
        return Err(ApiError::invalid(
            "the id is in the path; leave `id` out of the body",
        ));
    }
    let stored = entities::upsert(&state.store, state.event_id(), entity, id, fields).await?;
    Ok(Json(stored))
}

/// `GET /api/v1/admin/{collection}/{id}`.
pub(super) async fn get_one(
    State(state): State<AppState>,
    _: Admin,
    Path((name, id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let entity = collection(&name)?;
    Ok(Json(
        entities::get(&state.store, state.event_id(), entity, id).await?,
    ))
}

/// `DELETE /api/v1/admin/{collection}/{id}`: 204.
pub(super) async fn delete_one(
    State(state): State<AppState>,
    _: Admin,
    Path((name, id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let entity = collection(&name)?;
    entities::delete(&state.store, state.event_id(), entity, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/admin/attendees/import`: a JSON array or a CSV file; all or nothing.
pub(super) async fn import_attendees(
    State(state): State<AppState>,
    _: Admin,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let body = body.map_err(body_rejection)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let rows = match content_type.as_str() {
        "application/json" => attendees::parse_json(&body)?,
        "text/csv" => attendees::parse_csv(&body)?,
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("import takes `application/json` or `text/csv`, not `{other}`"),
            ));
        }
    };
    let imported = attendees::import(&state.store, state.event_id(), rows).await?;
    tracing::info!(imported, "attendees imported");
    Ok(Json(json!({ "imported": imported })))
}

/// Body of `POST /api/v1/admin/devices`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewDevice {
    id: String,
    kind: DeviceKind,
    #[serde(default)]
    name: String,
}

/// `POST /api/v1/admin/devices`: 201 with the device and its password (shown once).
pub(super) async fn create_device(
    State(state): State<AppState>,
    _: Admin,
    headers: axum::http::HeaderMap,
    ApiJson(new): ApiJson<NewDevice>,
) -> Result<impl IntoResponse, ApiError> {
    let (device, password) =
        devices::create(&state.store, state.event_id(), new.id, new.kind, new.name).await?;
    state.auth.forget_device(&device.id);
    tracing::info!(device = %device.id, kind = device.kind.as_str(), "device registered");
    let setup = setup_link(&state, &headers, &device.id, device.kind, &password)
        .map(|url| json!({"url": url, "qr_svg": crate::qr::svg(&url)}));
    Ok((
        StatusCode::CREATED,
        Json(json!({ "device": device, "password": password, "setup": setup })),
    ))
}

/// The link that sets up a kiosk or display page in one scan: the page's address with the
/// credentials in the fragment (`#id=…&password=…`), which browsers never send to a server.
/// Gateways have no page: `None`.
fn setup_link(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    id: &str,
    kind: devices::DeviceKind,
    password: &str,
) -> Option<String> {
    let base = super::signage::app_url(state, headers);
    let fragment = format!("id={}&password={}", encode(id), encode(password));
    match kind {
        devices::DeviceKind::Kiosk => Some(format!("{base}kiosk#{fragment}")),
        devices::DeviceKind::Signage => Some(format!("{base}signage/{}#{fragment}", encode(id))),
        devices::DeviceKind::Gateway => None,
    }
}

/// `text` percent-encoded but for unreserved characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET /api/v1/admin/devices`.
pub(super) async fn list_devices(
    State(state): State<AppState>,
    _: Admin,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(
        json!({ "devices": devices::list(&state.store).await? }),
    ))
}

/// `DELETE /api/v1/admin/devices/{id}`: revoke, 204.
pub(super) async fn revoke_device(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    devices::revoke(&state.store, id.clone()).await?;
    state.auth.forget_device(&id);
    if let Some(mqtt) = &state.mqtt {
        mqtt.disconnect(&id);
    }
    tracing::info!(device = %id, "device revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/admin/devices/{id}/password`: a new password, shown once.
pub(super) async fn reset_device_password(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let password = devices::reset_password(&state.store, id.clone()).await?;
    state.auth.forget_device(&id);
    if let Some(mqtt) = &state.mqtt {
        mqtt.disconnect(&id);
    }
    Ok(Json(json!({ "id": id, "password": password })))
}

/// `GET /api/v1/admin/sync/parked`: the newest 500 ops sync gave up on, with why.
pub(super) async fn sync_parked(
    State(state): State<AppState>,
    _: Admin,
) -> Result<impl IntoResponse, ApiError> {
    let parked = crate::sync::parked(&state.store, 500).await?;
    Ok(Json(json!({ "parked": parked })))
}

/// `POST /api/v1/admin/sync/retry`: retry the relay now instead of waiting out the backoff.
pub(super) async fn sync_retry(
    State(state): State<AppState>,
    _: Admin,
) -> Result<impl IntoResponse, ApiError> {
    match &state.sync {
        Some(agent) => {
            agent.kick();
            Ok(StatusCode::ACCEPTED)
        }
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            "sync_off",
            "sync is not configured; set [sync] relay_url and token_file",
        )),
    }
}

/// `GET /api/v1/admin/conflicts`: the newest 500 recorded conflicts.
pub(super) async fn conflicts(
    State(state): State<AppState>,
    _: Admin,
) -> Result<impl IntoResponse, ApiError> {
    let rows: Vec<Json_> = state
        .store
        .read(|conn| {
            crate::oplog::outbox::newest_conflicts(conn, 500)
                .map_err(crate::store::StoreError::from)
        })
        .await?
        .into_iter()
        .map(|c| {
            json!({
                "op_id": c.op_id,
                "kind": c.kind,
                "entity_id": c.entity_id,
                "winner_op_id": c.winner_op_id,
                "detail": serde_json::from_str::<Json_>(&c.detail).unwrap_or(Json_::Null),
                "recorded_at": crate::domain::rfc3339(c.recorded_ms as i64),
            })
        })
        .collect();
    Ok(Json(json!({ "conflicts": rows })))
}

/// `DELETE /api/v1/attendees/{id}/location-history`: forgets every zone transition of the
/// attendee up to now, here and (through the op log) on every appliance of the event. 204.
pub(super) async fn forget_location_history(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    attendees::forget_location_history(&state.store, state.event_id(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/beacons/health`: every beacon heard, newest first, with its last TLM battery and
/// temperature and whether its battery is low. Admin only: it lists beacon ids.
pub(super) async fn beacon_health(
    State(state): State<AppState>,
    _: Admin,
) -> Result<impl IntoResponse, ApiError> {
    let beacons = state.beacon_health.get();
    let low = beacons.iter().filter(|b| b.low_battery).count();
    Ok(Json(json!({ "beacons": beacons, "low_battery": low })))
}

fn mqtt(state: &AppState) -> Result<&crate::mqtt::MqttHandle, ApiError> {
    state.mqtt.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "mqtt_disabled",
            "signage content is delivered over MQTT, which is off (mqtt.enabled = false)",
        )
    })
}

fn display_path(display: &str) -> Result<String, ApiError> {
    if !crate::config::is_valid_id(display) {
        return Err(ApiError::invalid(format!(
            "display id `{}` must be 1-64 characters of a-z, A-Z, 0-9, `-`, `_` or `.`",
            display.chars().take(80).collect::<String>()
        )));
    }
    Ok(format!("signage/{display}/content"))
}

/// `PUT /api/v1/admin/signage/{display}/content`: sets a display's content manifest (any JSON
/// object), stored and published retained on `signage/{display}/content`.
pub(super) async fn put_signage(
    State(state): State<AppState>,
    _: Admin,
    Path(display): Path<String>,
    ApiJson(content): ApiJson<Map<String, Json_>>,
) -> Result<impl IntoResponse, ApiError> {
    let path = display_path(&display)?;
    let payload = crate::mqtt::envelope(json!({ "display": display, "content": content }));
    mqtt(&state)?.set_retained(&path, payload.clone()).await?;
    let published: Json_ = serde_json::from_slice(&payload).unwrap_or_default();
    Ok(Json(
        json!({ "topic": mqtt(&state)?.tree().topic(&path), "payload": published }),
    ))
}

/// `GET /api/v1/admin/signage/{display}/content`: what the display is shown.
pub(super) async fn get_signage(
    State(state): State<AppState>,
    _: Admin,
    Path(display): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let path = display_path(&display)?;
    match mqtt(&state)?.retained(&path).await? {
        Some(payload) => Ok(Json(
            serde_json::from_slice::<Json_>(&payload).unwrap_or_default(),
        )),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("display `{display}` has no content; PUT a manifest first"),
        )),
    }
}

/// `DELETE /api/v1/admin/signage/{display}/content`: removes it (the display's retained topic
/// is cleared).
pub(super) async fn delete_signage(
    State(state): State<AppState>,
    _: Admin,
    Path(display): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let path = display_path(&display)?;
    match mqtt(&state)?.delete_retained(&path).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("display `{display}` has no content"),
        )),
    }
}

/// Body of `POST /api/v1/admin/token-keys`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenKey {
    kid: String,
    alg: String,
    public_key_pem: String,
}

/// `POST /api/v1/admin/token-keys`: installs a public key that verifies attendee tokens.
pub(super) async fn install_token_key(
    State(state): State<AppState>,
    _: Admin,
    ApiJson(key): ApiJson<TokenKey>,
) -> Result<impl IntoResponse, ApiError> {
    state
        .hub
        .verifier()
        .install(&state.store, key.kid.clone(), key.alg, key.public_key_pem)
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"kid": key.kid}))))
}

/// Body of `POST /api/v1/admin/tokens`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenRequest {
    attendee_id: String,
    #[serde(default)]
    ttl_secs: Option<u64>,
    #[serde(default)]
    roles: Option<Vec<String>>,
}

/// `POST /api/v1/admin/tokens`: mints an attendee token with the appliance's own key.
pub(super) async fn mint_token(
    State(state): State<AppState>,
    _: Admin,
    ApiJson(request): ApiJson<TokenRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let signer = state.hub.signer();
    entities::validate_id(&request.attendee_id)?;
    let ttl = request
        .ttl_secs
        .unwrap_or(12 * 3600)
        .clamp(60, 7 * 24 * 3600);
    let roles = request.roles.unwrap_or_else(|| vec!["attendee".into()]);
    if let Some(bad) = roles
        .iter()
        .find(|r| !crate::auth::tokens::ROLES.contains(&r.as_str()))
    {
        return Err(ApiError::invalid(format!(
            "unknown role `{bad}`; use attendee, staff or speaker"
        )));
    }
    let token = signer.mint(&request.attendee_id, state.event_id(), roles, ttl)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"token": token, "ttl_secs": ttl})),
    ))
}
