//! Kiosk endpoints: check-in (idempotent) and attendee lookup.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, Device, KioskOrAdmin, require_kiosk};
use crate::domain::attendees;
use crate::domain::checkins::{self, CheckinRequest};

/// The header that carries the client's idempotency key.
pub(super) const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// `POST /api/v1/checkins`: 201 new, 200 already checked in or replayed key, 404 unknown
/// attendee, 409 key reused for another body, 422 invalid.
pub(super) async fn check_in(
    State(state): State<AppState>,
    device: Device,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CheckinRequest>,
) -> Result<Response, ApiError> {
    require_kiosk(&device)?;
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "idempotency_key_required",
                "send an `Idempotency-Key` header (a new UUID per check-in, reused on retries)",
            )
        })?;
    let outcome =
        checkins::check_in(&state.store, state.event_id(), &device.id, key, request).await?;
    if outcome.badge_queued {
        state.print.wake();
    }
    let status = if outcome.replayed {
        StatusCode::OK
    } else {
        StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::OK)
    };
    let mut response = (status, Json(outcome.body)).into_response();
    if outcome.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Query of `GET /api/v1/attendees`.
#[derive(Deserialize)]
pub(super) struct LookupQuery {
    q: String,
}

/// `GET /api/v1/attendees?q=`: by exact ticket code or name prefix.
pub(super) async fn lookup(
    State(state): State<AppState>,
    _who: KioskOrAdmin,
    query: Result<Query<LookupQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::invalid(format!("{e}; use ?q=<ticket code or name>")))?;
    Ok(Json(
        attendees::lookup(&state.store, state.event_id(), &query.q).await?,
    ))
}
