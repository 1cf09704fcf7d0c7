//! What an attendee's app asks over plain HTTP: sign-in on site (a ticket code and a last name or
//! email, checked against the registry, answered with a token minted by this appliance, so it
//! works with no internet), the schedule, and the attendee's own registration and privacy.

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, Source, check_budget, failed};
use super::hub_fallbacks::attendee_claims;
use crate::auth::tokens::Claims;
use crate::domain::{attendees, messages, schedule};

/// The verified claims of the attendee token a request carries (`Authorization: Bearer`), for
/// the endpoints an attendee's app calls; 401 (or 429 past the address's budget) otherwise.
pub(super) struct Attendee(Claims);

impl FromRequestParts<AppState> for Attendee {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let source = match Source::from_request_parts(parts, state).await {
            Ok(source) => source,
            Err(never) => match never {},
        };
        attendee_claims(state, &source, &parts.headers, None)
            .await
            .map(Attendee)
    }
}

/// How long a token from an on-site sign-in is valid: the length of a long conference.
const SIGN_IN_TTL_SECS: u64 = 7 * 24 * 3600;

/// Body of `POST /api/v1/attendee/session`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SignIn {
    ticket_code: String,
    name_or_email: String,
}

/// `POST /api/v1/attendee/session`: 201 with a token, 401 when no registration matches the
/// pair (never saying which half was wrong), 429 past the address's or the ticket code's budget.
pub(super) async fn sign_in(
    State(state): State<AppState>,
    source: Source,
    ApiJson(request): ApiJson<SignIn>,
) -> Result<impl IntoResponse, ApiError> {
    check_budget(&state, source.0)?;
    let ticket = request.ticket_code.trim();
    if ticket.is_empty() || ticket.len() > 128 {
        return Err(ApiError::invalid(
            "`ticket_code` must be the code on your ticket or badge (1-128 bytes)",
        ));
    }
    if request.name_or_email.trim().is_empty() || request.name_or_email.len() > 256 {
        return Err(ApiError::invalid(
            "`name_or_email` must be your last name or your email (1-256 bytes)",
        ));
    }
    state
        .auth
        .ticket_failures
        .check(ticket.to_string())
        .map_err(|retry| {
            ApiError::too_many_attempts(retry)
                .with_message("too many wrong sign-ins with this ticket code; wait before retrying")
        })?;
    let found = attendees::sign_in(
        &state.store,
        state.event_id(),
        ticket,
        &request.name_or_email,
    )
    .await?;
    let Some(attendee) = found else {
        failed(&state, source.0);
        state.auth.ticket_failures.failed(ticket.to_string());
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "wrong_ticket_or_name",
            "no registration matches this ticket code with this last name or email; check both",
        ));
    };
    source.prove();
    let roles = vec!["attendee".to_string()];
    let token = state
        .hub
        .signer()
        .mint(&attendee.id, state.event_id(), roles, SIGN_IN_TTL_SECS)?;
    tracing::info!(attendee = %attendee.id, "attendee signed in on site");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": token,
            "ttl_secs": SIGN_IN_TTL_SECS,
            "attendee": {"id": attendee.id, "name": attendee.name},
        })),
    ))
}

/// `GET /api/v1/schedule`: the event, its rooms with their capacity and sessions (docs/http-api.md).
pub(super) async fn schedule(
    State(state): State<AppState>,
    _: Attendee,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(schedule::read(&state.store, state.event_id()).await?))
}

/// `GET /api/v1/me`: the signed-in attendee's registration, privacy level and check-in.
pub(super) async fn me(
    State(state): State<AppState>,
    Attendee(claims): Attendee,
) -> Result<impl IntoResponse, ApiError> {
    match attendees::me(&state.store, state.event_id(), &claims.sub).await? {
        Some(me) => Ok(Json(me)),
        // Removed between the token check and the read.
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("`{}` is no longer registered for this event", claims.sub),
        )),
    }
}

/// Body of `PUT /api/v1/me/privacy`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Privacy {
    level: String,
}

/// `PUT /api/v1/me/privacy`: sets the attendee's own privacy level; in effect for everyone who
/// follows them as soon as it is answered.
pub(super) async fn set_privacy(
    State(state): State<AppState>,
    Attendee(claims): Attendee,
    ApiJson(request): ApiJson<Privacy>,
) -> Result<impl IntoResponse, ApiError> {
    attendees::set_privacy(&state.store, state.event_id(), &claims.sub, &request.level).await?;
    Ok(Json(json!({ "privacy": request.level })))
}

/// `DELETE /api/v1/me/location-history`: forgets the attendee's own zone history (204).
pub(super) async fn forget_location_history(
    State(state): State<AppState>,
    Attendee(claims): Attendee,
) -> Result<impl IntoResponse, ApiError> {
    attendees::forget_location_history(&state.store, state.event_id(), &claims.sub).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /api/v1/people`: a name's start (`q`), or attendee ids (`ids`, by commas).
#[derive(Deserialize)]
pub(super) struct PeopleQuery {
    #[serde(default)]
    q: String,
    ids: Option<String>,
}

/// `GET /api/v1/people?q=`: fellow attendees to follow, by the start of a name;
/// `GET /api/v1/people?ids=a1,a2`: the names behind ids seen in messages and groups
/// (docs/http-api.md).
pub(super) async fn people(
    State(state): State<AppState>,
    _: Attendee,
    axum::extract::Query(query): axum::extract::Query<PeopleQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let found = match query.ids {
        Some(ids) => {
            let ids = ids.split(',').map(str::trim).filter(|id| !id.is_empty());
            attendees::names(
                &state.store,
                state.event_id(),
                ids.map(String::from).collect(),
            )
            .await?
        }
        None => attendees::people(&state.store, state.event_id(), &query.q).await?,
    };
    Ok(Json(found))
}

/// `GET /api/v1/me/conversations`: the attendee's direct conversations and groups, with their
/// badges, most recently active first (docs/http-api.md).
pub(super) async fn conversations(
    State(state): State<AppState>,
    Attendee(claims): Attendee,
) -> Result<impl IntoResponse, ApiError> {
    let event = state.event_id().to_string();
    let found = state
        .store
        .read(move |conn| messages::conversations(conn, &event, &claims.sub))
        .await?;
    Ok(Json(json!({ "conversations": found })))
}
