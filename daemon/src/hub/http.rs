//! The HTTP fallbacks: realtime is optional, so every hub action has a plain HTTP path with an
//! idempotency key. `GET /api/v1/channels/{channel}/messages?after=&wait=&limit=` (long-poll)
//! and `POST /api/v1/channels/{channel}/messages` (with `Idempotency-Key`), with the attendee
//! token as `Authorization: Bearer`.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::channels::Channel;
use super::tokens::{Claims, TokenError};
use super::{MAX_RESUME, Origin};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::ApiJson;

/// Longest a long-poll waits.
pub const MAX_WAIT_SECS: u64 = 30;

fn claims(state: &AppState, headers: &HeaderMap) -> Result<Claims, ApiError> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(TokenError::Missing);
    token
        .and_then(|t| state.hub.verifier().verify(t.trim(), state.hub.event_id()))
        .map_err(|e| {
            state.metrics.auth_failures.inc();
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
        })
}

async fn channel<'a>(state: &AppState, name: &'a str) -> Result<Channel<'a>, ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_channel",
            format!(
                "no channel `{name}` in this event; use announcements, session:<id> or zone:<id>"
            ),
        )
    };
    let channel = Channel::parse(name).ok_or_else(not_found)?;
    if !state.hub.exists(&channel).await? {
        return Err(not_found());
    }
    Ok(channel)
}

/// Query of the long-poll.
#[derive(Deserialize)]
pub struct Poll {
    #[serde(default)]
    after: i64,
    #[serde(default)]
    wait: u64,
    #[serde(default)]
    limit: Option<usize>,
}

/// `GET /api/v1/channels/{channel}/messages?after=SEQ&wait=SECS&limit=N`.
pub(crate) async fn poll(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(poll): Query<Poll>,
) -> Result<Response, ApiError> {
    let claims = claims(&state, &headers)?;
    let channel = channel(&state, &name).await?;
    if !channel.may_read(&claims) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("you may not read `{name}`"),
        ));
    }
    let limit = poll.limit.unwrap_or(100).clamp(1, MAX_RESUME);
    let wait = Duration::from_secs(poll.wait.min(MAX_WAIT_SECS));
    let (messages, more) = state
        .hub
        .wait_history(&name, poll.after, limit, wait)
        .await?;
    Ok(Json(json!({"channel": name, "epoch": state.hub.epoch(), "messages": messages, "has_more": more})).into_response())
}

/// Body of a post.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    content: String,
    #[serde(default)]
    reply_to: Option<String>,
}

/// `POST /api/v1/channels/{channel}/messages` with `Idempotency-Key`: 201 new, 200 replayed.
pub(crate) async fn post(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<NewMessage>,
) -> Result<Response, ApiError> {
    let claims = claims(&state, &headers)?;
    let channel = channel(&state, &name).await?;
    if !channel.may_post(&claims) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("you may not post in `{name}`"),
        ));
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "idempotency_key_required",
                "send an `Idempotency-Key` header (a new UUID per message, reused on retries)",
            )
        })?;
    crate::domain::idempotency::validate_key(key)?;
    if let Err(retry) = state.hub.take_token(&claims.sub) {
        let secs = retry.as_secs() + 1;
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "more than {} messages a second; retry in {secs} s",
                super::RATE_PER_SEC
            ),
        )
        .into_response();
        if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
            response.headers_mut().insert("retry-after", value);
        }
        return Ok(response);
    }
    // The same key space as WebSocket frame ids: a retry may switch transports.
    let key = (format!("user:{}", claims.sub), format!("{name}:{key}"));
    let (posted, replayed) = state
        .hub
        .post(
            &name,
            &claims.sub,
            &body.content,
            body.reply_to,
            Some(key),
            Origin::Client,
        )
        .await?;
    let status = if replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut response = (status, Json(posted)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}
