//! `/ws`: the attendee WebSocket. The token is checked before the upgrade (401 otherwise);
//! then one task per connection reads client frames and writes queued server frames.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::AppState;
use crate::auth::tokens::Claims;
use crate::hub::changes::Request;
use crate::hub::channels::Channel;
use crate::hub::frames::{self, ClientFrame};
use crate::hub::queue::{Class, SendQueue};
use crate::hub::{Hub, MAX_RESUME, Outlet, SEND_QUEUE_FRAMES, frame as frame_bytes};

/// Largest client frame.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Initial read buffer of a connection.
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Most frames written together when a connection has a backlog.
const WRITE_BATCH_FRAMES: usize = 64;
/// Frames are gathered up to this many bytes before a write (the buffer grows only when used).
const WRITE_BUFFER_BYTES: usize = 8 * 1024;
/// How long a close frame may wait for a reader that is not reading.
const CLOSE_WAIT: Duration = Duration::from_secs(10);
/// Server pings this often.
pub const HEARTBEAT_SECS: u64 = 30;
/// A connection silent this long is closed.
const SILENCE_SECS: u64 = 90;
/// Close code for policy violations (RFC 6455), used with a reason.
const CLOSE_POLICY: u16 = 1008;
/// Close code for a text frame that is not UTF-8 (RFC 6455).
const CLOSE_INVALID_DATA: u16 = 1007;
/// Close code for a frame over the size limit (RFC 6455).
const CLOSE_TOO_BIG: u16 = 1009;

/// The token query parameter (browsers cannot set headers on a WebSocket).
#[derive(Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// `GET /ws`: verifies the token, then upgrades.
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    source: super::extract::Source,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let hub = state.hub.clone();
    let claims = match super::hub_fallbacks::attendee_claims(
        &state,
        &source,
        &headers,
        query.token.as_deref(),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    // The token is checked first, so a bad token is a 401 whatever else is wrong.
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    // tungstenite preallocates a 128 KiB read buffer per connection by default, which is
    // most of a connection's memory; frames are small and the buffer grows when one is not.
    ws.read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| connection(hub, claims, socket))
}

struct Connection {
    hub: Hub,
    claims: Claims,
    /// Its place in fan-outs; `outlet.connection` is the connection id.
    outlet: Outlet,
    /// The channels this connection subscribed to.
    channels: std::collections::HashSet<String>,
}

/// Read receipts are broadcast at most this often per user and channel (the watermark itself is
/// always stored).
const RECEIPT_INTERVAL: Duration = Duration::from_secs(1);

/// Channels one connection may subscribe to.
const MAX_CHANNELS_PER_CONNECTION: usize = 200;
/// A typing indicator lasts this long unless renewed...
const TYPING_EXPIRES_MS: u64 = 5000;
/// ...and is passed on at most once a second per user and channel.
const TYPING_INTERVAL: Duration = Duration::from_secs(1);

async fn connection(hub: Hub, claims: Claims, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let kill = Arc::new(Notify::new());
    let id = hub.connection_id();
    let queue = SendQueue::new(SEND_QUEUE_FRAMES);
    let mut conn = Connection {
        outlet: Outlet {
            connection: id,
            user: Arc::from(claims.sub.as_str()),
            queue: queue.clone(),
            kill: kill.clone(),
        },
        hub,
        claims,
        channels: Default::default(),
    };
    let evict = Arc::new(crate::hub::Eviction::default());
    conn.hub
        .open_session(&conn.claims.sub, &conn.outlet, evict.clone());
    let welcome = frame_bytes(
        "welcome",
        json!({
            "connection_id": conn.outlet.connection.to_string(),
            "user_id": conn.claims.sub,
            "epoch": conn.hub.epoch(),
            "heartbeat_secs": HEARTBEAT_SECS,
        }),
    );
    conn.send(welcome);
    conn.hub.metrics().websockets.inc();
    let mut ping = tokio::time::interval(Duration::from_secs(HEARTBEAT_SECS));
    ping.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    let mut timer_exp = conn.claims.exp;
    let token_timer = tokio::time::sleep_until(expiry(&conn.claims));
    // These futures live across loop turns (the closes fire once; the pop is renewed after
    // each frame): registering fresh waiters on every turn would cost a lock each per frame.
    let killed = kill.notified();
    let evicted = evict.wait();
    let popped = queue.pop();
    tokio::pin!(token_timer, killed, evicted, popped);
    let close = loop {
        // One timer for the token's expiry, moved only when `auth.refresh` changed it: a new
        // timer on every loop turn would cost a timer-wheel insert per frame written.
        if conn.claims.exp != timer_exp {
            timer_exp = conn.claims.exp;
            token_timer.as_mut().reset(expiry(&conn.claims));
        }
        tokio::select! {
            out = &mut popped => {
                popped.set(queue.pop());
                // Frames waiting behind this one go out in the same write (one syscall for a
                // burst); a write blocked by a reader that stopped reading still gives way to
                // the slow-consumer close.
                let write = async {
                    sink.feed(WsMessage::Text(out)).await?;
                    for _ in 1..WRITE_BATCH_FRAMES {
                        let Some(more) = queue.try_pop() else { break };
                        sink.feed(WsMessage::Text(more)).await?;
                    }
                    sink.flush().await
                };
                tokio::select! {
                    written = write => if written.is_err() { break None },
                    () = &mut killed => break Some(("slow_consumer", CLOSE_POLICY)),
                    () = &mut evicted => break Some((evict.reason(), CLOSE_POLICY)),
                }
            }
            incoming = stream.next() => {
                last_heard = tokio::time::Instant::now();
                conn.hub.heard_from(&conn.claims.sub);
                match incoming {
                    Some(Ok(WsMessage::Text(text))) => conn.handle(&text).await,
                    Some(Ok(WsMessage::Binary(_))) => conn.error("binary_not_supported", "frames are JSON text", None),
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                    Some(Ok(WsMessage::Close(_))) | None => break None,
                    Some(Err(e)) => {
                        // Read errors worth answering (RFC 6455): a frame over the limit (1009)
                        // and a text frame that is not UTF-8 (1007). Others are a broken peer.
                        break match e.to_string() {
                            e if e.contains("too long") => Some(("frame_too_large", CLOSE_TOO_BIG)),
                            e if e.contains("UTF-8") || e.contains("utf-8") => Some(("invalid_utf8", CLOSE_INVALID_DATA)),
                            _ => None,
                        };
                    }
                }
            }
            () = &mut killed => break Some(("slow_consumer", CLOSE_POLICY)),
            () = &mut evicted => break Some((evict.reason(), CLOSE_POLICY)),
            () = &mut token_timer => break Some(("token_expired", CLOSE_POLICY)),
            _ = ping.tick() => {
                if last_heard.elapsed() > Duration::from_secs(SILENCE_SECS) {
                    break Some(("silent", CLOSE_POLICY));
                }
                if sink.send(WsMessage::Ping(Default::default())).await.is_err() {
                    break None;
                }
            }
        }
    };
    conn.hub.metrics().websockets.dec();
    conn.hub.unsubscribe(None, conn.outlet.connection);
    conn.hub
        .close_session(&conn.claims.sub, conn.outlet.connection);
    if let Some((reason, code)) = close {
        // A reader that stopped reading may never take the close frame either.
        let close = sink.send(WsMessage::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        })));
        let _ = tokio::time::timeout(CLOSE_WAIT, close).await;
    }
}

/// When the connection's token expires.
fn expiry(claims: &Claims) -> tokio::time::Instant {
    let now = crate::store::now_ms() / 1000;
    tokio::time::Instant::now() + Duration::from_secs(claims.exp.saturating_sub(now))
}

impl Connection {
    /// Queues an essential frame (an ack, an error, a sync response) for this connection.
    fn send(&self, bytes: Utf8Bytes) {
        self.hub.push(&self.outlet, Class::Essential, bytes);
    }

    fn error(&self, code: &str, message: &str, ref_id: Option<&str>) {
        self.send(frame_bytes(
            "error",
            json!({"code": code, "message": message, "ref_id": ref_id}),
        ));
    }

    fn ack(&self, ref_id: &str, result: Result<Value, (String, String)>) {
        let payload = match result {
            Ok(extra) => {
                let mut p = json!({"ref_id": ref_id, "status": "ok"});
                if let (Value::Object(p), Value::Object(e)) = (&mut p, extra) {
                    p.extend(e);
                }
                p
            }
            Err((code, message)) => json!({
                "ref_id": ref_id, "status": "error", "error": {"code": code, "message": message},
            }),
        };
        self.send(frame_bytes("ack", payload));
    }

    async fn handle(&mut self, text: &str) {
        let (id, frame) = match frames::decode(text) {
            Ok(decoded) => decoded,
            Err(e) => return self.error(e.code, &e.message, e.ref_id.as_deref()),
        };
        let id = id.unwrap_or_default();
        match frame {
            ClientFrame::Ping => self.send(frame_bytes("pong", json!({"ref_id": id}))),
            ClientFrame::Subscribe {
                channels,
                resume,
                epoch,
            } => self.subscribe(&id, channels, resume, epoch).await,
            ClientFrame::Unsubscribe { channels } => {
                for name in channels {
                    self.hub.unsubscribe(Some(&name), self.outlet.connection);
                    self.channels.remove(&name);
                }
                self.ack(&id, Ok(json!({})));
            }
            ClientFrame::MessageSend {
                channel,
                content,
                reply_to,
            } => self.message_send(&id, &channel, &content, reply_to).await,
            ClientFrame::MessageEdit {
                channel,
                message_id,
                content,
            } => {
                self.message_change(&id, &channel, &message_id, Request::Edit(content))
                    .await;
            }
            ClientFrame::MessageDelete {
                channel,
                message_id,
            } => {
                self.message_change(&id, &channel, &message_id, Request::Delete)
                    .await;
            }
            ClientFrame::MessageReact {
                channel,
                message_id,
                emoji,
                add,
            } => {
                self.message_change(&id, &channel, &message_id, Request::React { emoji, add })
                    .await;
            }
            ClientFrame::ReadMark { channel, seq } => self.read_mark(&id, channel, seq).await,
            ClientFrame::Typing { channel, typing } => self.typing(&id, channel, typing),
            ClientFrame::PresenceUpdate { status } => {
                self.hub.choose_status(&self.claims.sub, status);
                self.ack(&id, Ok(json!({"presence": status})));
            }
            ClientFrame::PresenceFollow { user_ids, follow } => {
                self.presence_follow(&id, user_ids, follow).await;
            }
            ClientFrame::SyncRequest {
                channel,
                last_seq,
                limit,
            } => {
                let limit = limit.clamp(1, MAX_RESUME as u64) as usize;
                match self.readable(&channel).await {
                    Ok(()) => self.sync(&channel, last_seq, limit).await,
                    Err((code, message)) => self.error(&code, &message, Some(&id)),
                }
            }
            ClientFrame::GroupCreate { name, members } => {
                if let Err(retry) = self.hub.take_token(&self.claims.sub) {
                    return self.rate_limited(&id, retry);
                }
                let result = self
                    .hub
                    .create_group(&self.claims.sub, &name, members)
                    .await;
                self.group_ack(&id, result);
            }
            ClientFrame::GroupMembers {
                group_id,
                user_ids,
                add,
            } => {
                if let Err(retry) = self.hub.take_token(&self.claims.sub) {
                    return self.rate_limited(&id, retry);
                }
                let result = self
                    .hub
                    .change_members(&group_id, &self.claims.sub, add, user_ids)
                    .await;
                self.group_ack(&id, result);
            }
            ClientFrame::AuthRefresh { token } => {
                match self.hub.verifier().verify(&token, self.hub.event_id()) {
                    Ok(claims) if claims.sub == self.claims.sub => {
                        self.claims = claims;
                        self.ack(&id, Ok(json!({})));
                    }
                    Ok(_) => self.ack(
                        &id,
                        Err((
                            "forbidden".into(),
                            "the new token is for another attendee".into(),
                        )),
                    ),
                    Err(e) => self.ack(&id, Err(("unauthorized".into(), e.to_string()))),
                }
            }
        }
    }

    async fn read_mark(&mut self, id: &str, channel: String, seq: i64) {
        if !self.channels.contains(&channel) {
            return self.ack(
                id,
                Err((
                    "not_subscribed".into(),
                    format!("subscribe to `{channel}` first"),
                )),
            );
        }
        match self.hub.mark_read(&channel, &self.claims.sub, seq).await {
            Ok(watermark) => {
                self.ack(id, Ok(json!({"seq": watermark})));
                // Every phone of this attendee clears its badge.
                self.hub.refresh_badge(&self.claims.sub, &channel).await;
                if self.hub.throttle(
                    &self.claims.sub,
                    "receipt",
                    &channel,
                    RECEIPT_INTERVAL,
                    false,
                ) {
                    let payload =
                        json!({"channel": channel, "user_id": self.claims.sub, "seq": watermark});
                    self.hub.ephemeral_except(
                        &channel,
                        "read.receipt",
                        payload,
                        Some(self.outlet.connection),
                    );
                }
            }
            Err(e) => self.ack(id, Err(refusal(e))),
        }
    }

    fn typing(&mut self, id: &str, channel: String, typing: bool) {
        if !self.channels.contains(&channel) {
            return self.error(
                "not_subscribed",
                &format!("subscribe to `{channel}` before typing in it"),
                Some(id),
            );
        }
        // Starts are thinned to one a second per attendee and channel, across all of their
        // connections; a stop always goes through.
        if !self.hub.throttle(
            &self.claims.sub,
            "typing",
            &channel,
            TYPING_INTERVAL,
            !typing,
        ) {
            return;
        }
        let payload = json!({
            "channel": channel,
            "user_id": self.claims.sub,
            "typing": typing,
            "expires_in_ms": if typing { TYPING_EXPIRES_MS } else { 0 },
        });
        self.hub.ephemeral_except(
            &channel,
            "typing.indicator",
            payload,
            Some(self.outlet.connection),
        );
    }

    async fn presence_follow(&self, id: &str, users: Vec<String>, follow: bool) {
        if users
            .iter()
            .any(|u| crate::domain::entities::validate_id(u).is_err())
        {
            return self.ack(
                id,
                Err(("invalid".into(), "`user_ids` must be attendee ids".into())),
            );
        }
        for user in &users {
            let key = crate::hub::presence_channel(user);
            match follow {
                true => self.hub.subscribe(&key, &self.outlet),
                false => self.hub.unsubscribe(Some(&key), self.outlet.connection),
            }
        }
        self.ack(id, Ok(json!({"user_ids": users})));
        if follow {
            // Where each one is now, as far as their privacy allows.
            for user in users {
                if self.hub.may_show(&user).await {
                    let status = self.hub.status_of(&user);
                    self.send(frame_bytes(
                        "presence.changed",
                        json!({"user_id": user, "status": status}),
                    ));
                }
            }
        }
    }

    fn group_ack(&self, id: &str, result: Result<crate::hub::groups::Group, crate::hub::Refused>) {
        match result {
            Ok(group) => self.ack(id, Ok(serde_json::to_value(group).unwrap_or_default())),
            Err(refused) => self.ack(id, Err((refused.code.into(), refused.message))),
        }
    }

    async fn readable(&self, name: &str) -> Result<(), (String, String)> {
        let channel = Channel::parse(name).ok_or_else(|| {
            (
                "unknown_channel".to_string(),
                format!(
                    "no channel `{name}`; use announcements, session:<id>, zone:<id>, dm:<a>:<b> or group:<id>"
                ),
            )
        })?;
        if !channel.may_read(&self.claims) {
            return Err(("forbidden".into(), format!("you may not read `{name}`")));
        }
        match self.hub.exists(&channel, &self.claims.sub).await {
            Ok(true) => Ok(()),
            Ok(false) => Err((
                "unknown_channel".into(),
                format!("no channel `{name}` in this event"),
            )),
            Err(e) => Err(refusal(e)),
        }
    }

    async fn subscribe(
        &mut self,
        id: &str,
        names: Vec<String>,
        resume: HashMap<String, i64>,
        epoch: Option<String>,
    ) {
        if names.is_empty() {
            return self.ack(
                id,
                Err((
                    "invalid".into(),
                    "`channels` must list channel names".into(),
                )),
            );
        }
        // Resume positions count only against this hub's epoch; another epoch starts fresh.
        let resume = match epoch.as_deref() == Some(self.hub.epoch()) {
            true => resume,
            false => HashMap::new(),
        };
        let mut refused = Vec::new();
        let mut subscribed = Vec::new();
        for name in &names {
            if self.channels.len() >= MAX_CHANNELS_PER_CONNECTION && !self.channels.contains(name) {
                refused.push(json!({"channel": name, "code": "too_many_channels",
                    "message": format!("at most {MAX_CHANNELS_PER_CONNECTION} channels per connection")}));
                continue;
            }
            if let Err((code, message)) = self.readable(name).await {
                refused.push(json!({"channel": name, "code": code, "message": message}));
                continue;
            }
            // Subscribe first, then read what was missed: nothing falls in between (a message
            // may come twice; clients drop seqs they have).
            self.hub.subscribe(name, &self.outlet);
            self.channels.insert(name.clone());
            subscribed.push(name.clone());
        }
        self.ack(
            id,
            Ok(json!({"channels": subscribed, "refused": refused, "epoch": self.hub.epoch()})),
        );
        for name in subscribed {
            if let Some(after) = resume.get(&name) {
                self.sync(&name, *after, MAX_RESUME).await;
            }
            match self.hub.badge_frame(&self.claims.sub, &name).await {
                Ok(badge) => self.send(badge),
                Err(e) => tracing::debug!(error = %e, "badge not sent"),
            }
        }
    }

    async fn message_change(&self, id: &str, channel: &str, message_id: &str, request: Request) {
        if let Err(e) = self.readable(channel).await {
            return self.ack(id, Err(e));
        }
        // Changes count against the same budget as posts.
        if let Err(retry) = self.hub.take_token(&self.claims.sub) {
            return self.rate_limited(id, retry);
        }
        let staff = self.claims.has_role("staff");
        match self
            .hub
            .change(channel, message_id, &self.claims.sub, staff, request)
            .await
        {
            Ok(message) => self.ack(
                id,
                Ok(json!({"seq": message.seq, "message_id": message.message_id})),
            ),
            Err(refused) => self.ack(id, Err((refused.code.into(), refused.message))),
        }
    }

    fn rate_limited(&self, id: &str, retry: Duration) {
        let retry_ms = retry.as_millis() as u64;
        self.send(frame_bytes(
            "error",
            json!({
                "code": "rate_limited",
                "message": format!("more than {} messages a second; retry in {retry_ms} ms", crate::hub::RATE_PER_SEC),
                "ref_id": id,
                "retry_after_ms": retry_ms,
            }),
        ));
    }

    async fn sync(&self, channel: &str, after: i64, limit: usize) {
        match self.hub.history(channel, after, limit).await {
            Ok((messages, more)) => {
                let too_large = more && limit == MAX_RESUME;
                let messages = if too_large { Vec::new() } else { messages };
                self.send(frame_bytes(
                    "sync.response",
                    json!({"channel": channel, "messages": messages, "has_more": more, "too_large": too_large}),
                ));
            }
            Err(e) => {
                let (code, message) = refusal(e);
                self.error(&code, &message, None)
            }
        }
    }

    async fn message_send(&self, id: &str, name: &str, content: &str, reply_to: Option<String>) {
        if id.is_empty() {
            return self.error(
                "invalid",
                "`message.send` needs a frame `id` (reused on retry)",
                None,
            );
        }
        if let Err(e) = self.readable(name).await {
            return self.ack(id, Err(e));
        }
        if !Channel::parse(name).is_some_and(|c| c.may_post(&self.claims)) {
            return self.ack(
                id,
                Err(("forbidden".into(), format!("you may not post in `{name}`"))),
            );
        }
        if let Err(retry) = self.hub.take_token(&self.claims.sub) {
            return self.rate_limited(id, retry);
        }
        let key = (format!("user:{}", self.claims.sub), format!("{name}:{id}"));
        let result = self
            .hub
            .post(name, &self.claims.sub, content, reply_to, Some(key))
            .await;
        match result {
            Ok((posted, replayed)) => self.ack(
                id,
                Ok(json!({"seq": posted.seq, "message_id": posted.message_id, "replayed": replayed})),
            ),
            Err(e) => {
                let refused = crate::hub::Refused::from(e);
                self.ack(id, Err((refused.code.into(), refused.message)));
            }
        }
    }
}

/// A domain error as an `ack`/`error` frame's code and message (the one vocabulary,
/// `domain::Code`).
fn refusal(e: crate::domain::DomainError) -> (String, String) {
    let refused = crate::hub::Refused::from(e);
    (refused.code.into(), refused.message)
}
