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

/// Query of the event stream and of the multi-channel long-poll.
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
    /// The long-poll's wait, in seconds (at most [`MAX_WAIT_SECS`]).
    #[serde(default)]
    wait: u64,
}

/// An attendee's subscription over plain HTTP: the hub's frames for some channels, from given
/// positions, as the event stream and the long-poll deliver them. Leaves the channels when
/// dropped.
struct Feed {
    hub: crate::hub::Hub,
    outlet: crate::hub::Outlet,
    /// The missed messages (or a `too_large` note per channel), to deliver first.
    backlog: Vec<axum::extract::ws::Utf8Bytes>,
    /// The last `seq` delivered per channel, in `Last-Event-ID`'s form once joined.
    positions: std::collections::BTreeMap<String, i64>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.hub.unsubscribe(None, self.outlet.connection);
    }
}

impl Feed {
    /// Checks the channels against the token and subscribes, then reads what was missed since
    /// `resume` (`channel=seq;channel=seq`): subscribing first, so nothing falls between.
    async fn open(
        state: &AppState,
        claims: &Claims,
        channels: &str,
        resume: Option<&str>,
    ) -> Result<Self, ApiError> {
        let names: Vec<String> = channels
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
            let channel = channel(state, name, &claims.sub).await?;
            if !channel.may_read(claims) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!("you may not read `{name}`"),
                ));
            }
        }
        let positions: std::collections::BTreeMap<String, i64> = resume
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
        for name in &names {
            hub.subscribe(name, &outlet);
        }
        let mut feed = Feed {
            hub,
            outlet,
            backlog: Vec::new(),
            positions,
        };
        for (name, after) in feed.positions.clone() {
            let (messages, more) = feed.hub.history(&name, after, MAX_RESUME).await?;
            if more {
                feed.backlog.push(crate::hub::frame(
                    "sync.response",
                    json!({"channel": name, "messages": [], "has_more": true, "too_large": true}),
                ));
            } else {
                for m in messages {
                    feed.backlog.push(crate::hub::frame(
                        "message.new",
                        serde_json::to_value(m).unwrap_or_default(),
                    ));
                }
            }
        }
        Ok(feed)
    }

    /// Notes a delivered frame's position; the frame parsed, and its type.
    fn delivered(&mut self, frame: &str) -> (serde_json::Value, Option<String>) {
        let parsed = serde_json::from_str::<serde_json::Value>(frame).unwrap_or_default();
        if parsed["type"] == "message.new" {
            if let (Some(c), Some(seq)) = (
                parsed["payload"]["channel"].as_str(),
                parsed["payload"]["seq"].as_i64(),
            ) {
                let at = self.positions.entry(c.to_string()).or_insert(0);
                *at = (*at).max(seq);
            }
        }
        let kind = parsed["type"].as_str().map(str::to_string);
        (parsed, kind)
    }

    /// Every channel's position, `announcements=12;zone:hall-a=3`.
    fn resume_id(&self) -> String {
        let id: Vec<String> = self
            .positions
            .iter()
            .map(|(c, s)| format!("{c}={s}"))
            .collect();
        id.join(";")
    }
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
    use futures::StreamExt;
    let claims = attendee_claims(&state, &source, &headers, query.token.as_deref()).await?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(query.resume.as_deref());
    let mut feed = Feed::open(&state, &claims, &query.channels, resume).await?;
    let backlog = futures::stream::iter(std::mem::take(&mut feed.backlog));
    let (queue, kill) = (feed.outlet.queue.clone(), feed.outlet.kill.clone());
    let live = futures::stream::unfold((queue, kill), |(queue, kill)| async move {
        tokio::select! {
            frame = queue.pop() => Some((frame, (queue, kill))),
            // A full queue: end the stream; the client reconnects with Last-Event-ID.
            () = kill.notified() => None,
        }
    });
    let events = backlog.chain(live).map(move |frame| {
        let mut event = Event::default().data(frame.as_str());
        let (_, kind) = feed.delivered(frame.as_str());
        if kind.as_deref() == Some("message.new") {
            event = event.id(feed.resume_id());
        }
        if let Some(kind) = kind {
            event = event.event(kind);
        }
        Ok::<_, std::convert::Infallible>(event)
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Most frames one long-poll answer carries; the rest wait for the next poll (by position).
const MAX_POLL_FRAMES: usize = 500;

/// `GET /api/v1/poll?channels=a,b&resume=a=12;b=3&wait=25`: the event stream's frames as a
/// long-poll, for networks that pass neither a WebSocket nor a stream. Answers at once with what
/// was missed since `resume`, else when the first frame comes (with any that came with it), else
/// empty after `wait` seconds: `{"epoch", "resume", "frames": [...]}`. The next poll sends the
/// answer's `resume` back, so no message falls between two polls; frames that are not messages
/// (typing, occupancy, presence) reach only a poll that is waiting.
pub(crate) async fn long_poll(
    State(state): State<AppState>,
    source: Source,
    headers: HeaderMap,
    Query(query): Query<StreamQuery>,
) -> Result<Response, ApiError> {
    let claims = attendee_claims(&state, &source, &headers, query.token.as_deref()).await?;
    let mut feed = Feed::open(&state, &claims, &query.channels, query.resume.as_deref()).await?;
    let mut frames: Vec<axum::extract::ws::Utf8Bytes> = std::mem::take(&mut feed.backlog);
    if frames.is_empty() {
        let wait = Duration::from_secs(query.wait.min(MAX_WAIT_SECS));
        if let Ok(first) = tokio::time::timeout(wait, feed.outlet.queue.pop()).await {
            frames.push(first);
        }
    }
    while frames.len() < MAX_POLL_FRAMES {
        match feed.outlet.queue.try_pop() {
            Some(frame) => frames.push(frame),
            None => break,
        }
    }
    frames.truncate(MAX_POLL_FRAMES);
    let frames: Vec<serde_json::Value> = frames
        .iter()
        .map(|frame| feed.delivered(frame.as_str()).0)
        .collect();
    Ok(Json(json!({
        "epoch": state.hub.epoch(),
        "resume": feed.resume_id(),
        "frames": frames,
    }))
    .into_response())
}
