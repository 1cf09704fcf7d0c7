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

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, Source};
use crate::auth::tokens::{Claims, TokenError};
use crate::hub::MAX_RESUME;
use crate::hub::channels::Channel;

/// Longest a long-poll waits: under the default request timeout (30 s), which would cut it.
pub const MAX_WAIT_SECS: u64 = 25;

/// The attendee token of a request: `Authorization: Bearer`, else `query_token` (for clients
/// that cannot set headers: browsers' WebSocket and `EventSource`), verified; 401 otherwise.
pub(crate) async fn attendee_claims(
    state: &AppState,
    from: &Source,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Claims, ApiError> {
    let source = from.0;
    // The same per-address budget as admin and device logins: forged tokens cost a signature
    // check each, and a source that keeps failing is refused before that work.
    super::extract::check_budget(state, source)?;
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or(query_token)
        .ok_or(TokenError::Missing);
    let claims = token
        .and_then(|t| state.hub.verifier().verify(t.trim(), state.hub.event_id()))
        .map_err(|e| {
            super::extract::failed(state, source);
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
        })?;
    if !state.hub.is_attendee(&claims.sub).await {
        super::extract::failed(state, source);
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!(
                "the token's attendee `{}` is not registered for this event (removed, or not imported yet)",
                claims.sub
            ),
        ));
    }
    from.prove();
    Ok(claims)
}

async fn channel<'a>(state: &AppState, name: &'a str, user: &str) -> Result<Channel<'a>, ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_channel",
            format!(
                "no channel `{name}` in this event; use announcements, session:<id>, zone:<id>, dm:<a>:<b> or group:<id> (of a group you are in)"
            ),
        )
    };
    let channel = Channel::parse(name).ok_or_else(not_found)?;
    if !state.hub.exists(&channel, user).await? {
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
    source: Source,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(poll): Query<Poll>,
) -> Result<Response, ApiError> {
    let claims = attendee_claims(&state, &source, &headers, None).await?;
    let channel = channel(&state, &name, &claims.sub).await?;
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
    source: Source,
    headers: HeaderMap,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<NewMessage>,
) -> Result<Response, ApiError> {
    let claims = attendee_claims(&state, &source, &headers, None).await?;
    let channel = channel(&state, &name, &claims.sub).await?;
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
                crate::hub::RATE_PER_SEC
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
        .post(&name, &claims.sub, &body.content, body.reply_to, Some(key))
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

/// Query of the event stream.
#[derive(Deserialize)]
pub struct StreamQuery {
    /// Comma-separated channel names.
    channels: String,
    /// The token, for `EventSource`, which cannot set headers.
    #[serde(default)]
    token: Option<String>,
    /// Where to start, in `Last-Event-ID`'s form (`announcements=12;zone:hall-a=3`), for a
    /// client's first request: `EventSource` sends that header only on its own reconnects.
    #[serde(default)]
    resume: Option<String>,
}

/// `GET /api/v1/stream?channels=a,b`: Server-Sent Events carrying the WebSocket's server frames.
/// Each `message.new` event's id holds the position of every channel (`announcements=12;zone:hall-a=3`),
/// so `Last-Event-ID` resumes them all, with the same gap-fill and `too_large` rule as the
/// WebSocket; `?resume=` in the same form does it for a first request.
pub(crate) async fn stream(
    State(state): State<AppState>,
    source: Source,
    headers: HeaderMap,
    Query(query): Query<StreamQuery>,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let claims = attendee_claims(&state, &source, &headers, query.token.as_deref()).await?;
    let names: Vec<String> = query
        .channels
        .split(',')
        .filter(|c| !c.is_empty())
        .take(100)
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        return Err(ApiError::invalid(
            "give `channels`, e.g. ?channels=announcements,zone:hall-a",
        ));
    }
    for name in &names {
        let channel = channel(&state, name, &claims.sub).await?;
        if !channel.may_read(&claims) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("you may not read `{name}`"),
            ));
        }
    }
    // Positions from Last-Event-ID (or, on a first request, `resume`): `channel=seq;channel=seq`.
    let mut positions: std::collections::BTreeMap<String, i64> = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(query.resume.as_deref())
        .map(|id| {
            id.split(';')
                .filter_map(|p| p.rsplit_once('='))
                .filter_map(|(c, s)| Some((c.to_string(), s.parse().ok()?)))
                .filter(|(c, _)| names.contains(c))
                .collect()
        })
        .unwrap_or_default();
    let hub = state.hub.clone();
    let outlet = crate::hub::Outlet {
        connection: hub.connection_id(),
        user: std::sync::Arc::from(claims.sub.as_str()),
        queue: crate::hub::queue::SendQueue::new(crate::hub::SEND_QUEUE_FRAMES),
        kill: std::sync::Arc::new(tokio::sync::Notify::new()),
    };
    let connection = outlet.connection;
    for name in &names {
        hub.subscribe(name, &outlet);
    }
    // Gap-fill after subscribing, as on the WebSocket.
    let mut backlog = Vec::new();
    for (name, after) in positions.clone() {
        let (messages, more) = hub.history(&name, after, MAX_RESUME).await?;
        if more {
            backlog.push(crate::hub::frame(
                "sync.response",
                json!({"channel": name, "messages": [], "has_more": true, "too_large": true}),
            ));
        } else {
            for m in messages {
                backlog.push(crate::hub::frame(
                    "message.new",
                    serde_json::to_value(m).unwrap_or_default(),
                ));
            }
        }
    }
    struct Guard(crate::hub::Hub, u64);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.unsubscribe(None, self.1);
        }
    }
    let guard = Guard(hub, connection);
    let backlog = futures::stream::iter(backlog);
    let live = futures::stream::unfold(outlet, |outlet| async move {
        tokio::select! {
            frame = outlet.queue.pop() => Some((frame, outlet)),
            // A full queue: end the stream; the client reconnects with Last-Event-ID.
            () = outlet.kill.notified() => None,
        }
    });
    use futures::StreamExt;
    let events = backlog.chain(live).map(move |frame| {
        let _keep = &guard;
        let mut event = Event::default().data(frame.as_str());
        if let Ok(parsed) = serde_json::from_str::<serde_json::Value>(frame.as_str()) {
            if parsed["type"] == "message.new" {
                if let (Some(c), Some(seq)) = (
                    parsed["payload"]["channel"].as_str(),
                    parsed["payload"]["seq"].as_i64(),
                ) {
                    let at = positions.entry(c.to_string()).or_insert(0);
                    *at = (*at).max(seq);
                }
                let id: Vec<String> = positions.iter().map(|(c, s)| format!("{c}={s}")).collect();
                event = event.id(id.join(";"));
            }
            if let Some(kind) = parsed["type"].as_str() {
                event = event.event(kind);
            }
        }
        Ok::<_, std::convert::Infallible>(event)
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}
