//! The attendee hub: channels, durable messages with a per-channel sequence, fan-out to the
//! connections of attendees' phones, online status, groups, badges and receipts.
//!
//! Protocol state only: the WebSocket and HTTP transports live in `crate::http` (`ws`,
//! `hub_fallbacks`), and the bridge to MQTT in `crate::bridge`. A message is committed (op +
//! row) before its ack and before any fan-out; the fan-out and every other after-commit effect
//! come from the committed-op stream (`effects`), for local and pulled ops alike. Each frame is
//! serialised once and its bytes shared by every recipient.

pub mod badges;
pub mod changes;
pub mod channels;
mod effects;
pub mod frames;
pub mod groups;
pub mod online;
pub mod queue;
pub mod rate;
pub mod throttle;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::auth::tokens;
use crate::domain::idempotency::{self, Stored};
pub use crate::domain::messages::Message;
use crate::domain::messages::{self, load};
use crate::domain::{DomainError, attendees, entities, rfc3339};
use crate::oplog::message::{MAX_CONTENT_BYTES, POST};
use crate::store::Store;
use channels::Channel;
use queue::{Class, Pushed, SendQueue};

pub use rate::{RATE_BURST, RATE_PER_SEC};
/// Connections one user may hold; a newer one closes the oldest.
pub const MAX_CONNECTIONS_PER_USER: usize = 5;

/// Longest an answer waits for the hub to fan its op out (`Hub::settled`).
pub const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Frames a connection may have queued before it counts as a slow consumer and is closed.
pub const SEND_QUEUE_FRAMES: usize = 1000;
/// Most missed messages returned on resume; past it the client refetches (`too_large`).
pub const MAX_RESUME: usize = 500;

/// The answer to a post.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Posted {
    /// Its sequence number.
    pub seq: i64,
    /// Its global id.
    pub message_id: String,
}

/// A refused client request: a code for programs and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Short, stable code (`invalid`, `forbidden`, `not_found`, ...).
    pub code: &'static str,
    /// What was wrong and how to fix it.
    pub message: String,
}

impl Refused {
    /// A refusal.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// An `invalid` refusal.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new("invalid", message)
    }
}

impl From<DomainError> for Refused {
    fn from(e: DomainError) -> Self {
        let code = e.code();
        if matches!(
            code,
            crate::domain::Code::Internal | crate::domain::Code::Unavailable
        ) {
            tracing::error!(error = %e, "a hub request failed in the store");
        }
        Self::new(code.as_str(), e.public_message())
    }
}

/// The internal fan-out key of viewers following one attendee's location (never a channel a
/// client can name: `Channel::parse` refuses it).
pub fn presence_channel(attendee: &str) -> String {
    format!("presence:{attendee}")
}

/// The payload of a `zone.occupancy` frame.
fn occupancy_payload(zone: &str, occupancy: usize) -> Value {
    json!({"zone": zone, "occupancy": occupancy})
}

/// A server frame `{type, id, ts, payload}`, serialised once.
pub fn frame(kind: &str, payload: Value) -> Utf8Bytes {
    let now = crate::store::now_ms();
    let frame = json!({
        "type": kind,
        "id": uuid::Uuid::now_v7().to_string(),
        "ts": rfc3339(now as i64),
        "payload": payload,
    });
    Utf8Bytes::from(frame.to_string())
}

/// A connection's place in a channel's fan-out: its queue, and the signal that closes it.
#[derive(Clone)]
pub struct Outlet {
    /// The connection id.
    pub connection: u64,
    /// Whose connection it is.
    pub user: Arc<str>,
    /// Its send queue.
    pub queue: SendQueue,
    /// Closes it as a slow consumer.
    pub kill: Arc<Notify>,
}

/// One user's open connections, oldest first: each with its eviction signal.
type OpenConnections = std::collections::VecDeque<(Outlet, Arc<Eviction>)>;

/// Ends one WebSocket connection from outside its loop, saying why.
#[derive(Default)]
pub struct Eviction {
    notify: Notify,
    removed: std::sync::atomic::AtomicBool,
}

impl Eviction {
    /// Resolves once the connection is to be closed.
    pub async fn wait(&self) {
        self.notify.notified().await;
    }

    /// The close reason: the attendee was removed, or a newer connection took the slot.
    pub fn reason(&self) -> &'static str {
        match self.removed.load(Ordering::Relaxed) {
            true => "attendee_removed",
            false => "too_many_connections",
        }
    }

    fn evict(&self, removed: bool) {
        if removed {
            self.removed.store(true, Ordering::Relaxed);
        }
        // A stored permit: an eviction before the loop waits is not lost.
        self.notify.notify_one();
    }
}

struct Inner {
    store: Store,
    event_id: String,
    epoch: String,
    channels: Mutex<HashMap<String, Vec<Outlet>>>,
    /// Long-polls waiting per channel, woken by every new message.
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
    waiting: AtomicU64,
    /// Each user's open connections, oldest first, with the signal that evicts one.
    sessions: Mutex<HashMap<String, OpenConnections>>,
    /// Online presence.
    board: Mutex<online::Board>,
    /// Per-user token buckets for posting: (tokens, last refill).
    buckets: Mutex<rate::Buckets>,
    /// Typing indicators and read receipts: at most once a second per attendee and channel.
    throttle: Mutex<throttle::Throttle>,
    next_connection: AtomicU64,
    /// The last occupancy sent on each zone channel (`effects::follow_occupancy`), for
    /// connections that subscribe later.
    occupancy: Mutex<std::collections::BTreeMap<String, usize>>,
    /// The highest op seq whose effects the hub has applied (`effects`).
    settled: tokio::sync::watch::Sender<i64>,
    /// Token verification keys.
    verifier: tokens::Verifier,
    /// The appliance's own signing key.
    signer: tokens::Signer,
    metrics: crate::metrics::ConnectionMetrics,
}

/// The hub; cheap to clone.
#[derive(Clone)]
pub struct Hub(Arc<Inner>);

impl Hub {
    /// Loads the epoch, the token keys and the appliance's own signing key (made at first start;
    /// attendees who sign in on site get tokens signed with it).
    pub async fn start(
        store: &Store,
        event_id: &str,
        data_dir: &std::path::Path,
        metrics: crate::metrics::ConnectionMetrics,
    ) -> Result<Hub, DomainError> {
        let epoch = ensure_epoch(store).await?;
        let verifier = tokens::Verifier::load(store).await?;
        let signer = tokens::Signer::ensure(store, data_dir, event_id, &verifier).await?;
        let hub = Hub(Arc::new(Inner {
            store: store.clone(),
            event_id: event_id.into(),
            epoch,
            channels: Mutex::new(HashMap::new()),
            waiters: Mutex::new(HashMap::new()),
            waiting: AtomicU64::new(0),
            buckets: Mutex::new(rate::Buckets::default()),
            throttle: Mutex::new(throttle::Throttle::default()),
            sessions: Mutex::new(HashMap::new()),
            board: Mutex::new(online::Board::default()),
            next_connection: AtomicU64::new(1),
            settled: tokio::sync::watch::Sender::new(0),
            occupancy: Mutex::new(Default::default()),
            verifier,
            signer,
            metrics,
        }));
        // Subscribed before anything else can write, so no commit's effects are missed.
        tokio::spawn(effects::run(Arc::downgrade(&hub.0), store.subscribe("hub")));
        Ok(hub)
    }

    /// Marks attendees offline after their silence, sweeping every 5 s until `stop`.
    pub async fn run_sweep(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = every.tick() => {}
            }
            let changes = self.board().sweep(std::time::Instant::now());
            for change in changes {
                self.announce_status(change);
            }
        }
    }

    /// This hub database's epoch: a client holding another epoch starts fresh.
    pub fn epoch(&self) -> &str {
        &self.0.epoch
    }

    /// The token keys.
    pub fn verifier(&self) -> &tokens::Verifier {
        &self.0.verifier
    }

    /// The appliance's own signing key.
    pub fn signer(&self) -> &tokens::Signer {
        &self.0.signer
    }

    /// Registers a connection of `user`; past [`MAX_CONNECTIONS_PER_USER`] the oldest is told
    /// to close (through its `evict`). The user is online from now.
    pub fn open_session(&self, user: &str, outlet: &Outlet, evict: Arc<Eviction>) {
        {
            let mut sessions = self.sessions();
            let open = sessions.entry(user.to_string()).or_default();
            open.push_back((outlet.clone(), evict));
            while open.len() > MAX_CONNECTIONS_PER_USER {
                if let Some((_, oldest)) = open.pop_front() {
                    oldest.evict(false);
                }
            }
        }
        let change = self.board().connected(user, std::time::Instant::now());
        if let Some(change) = change {
            self.announce_status(change);
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, OpenConnections>> {
        self.0
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn board(&self) -> std::sync::MutexGuard<'_, online::Board> {
        self.0
            .board
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a frame on every open connection of `user` (badges, group invitations).
    pub fn to_user(&self, user: &str, class: Class, bytes: Utf8Bytes) {
        let outlets: Vec<Outlet> = self
            .sessions()
            .get(user)
            .map(|open| open.iter().map(|(o, _)| o.clone()).collect())
            .unwrap_or_default();
        for outlet in &outlets {
            self.push(outlet, class, bytes.clone());
        }
    }

    /// Whether `user` has a connection open.
    pub fn is_connected(&self, user: &str) -> bool {
        self.sessions().contains_key(user)
    }

    /// Something came from `user` (any frame, or a pong).
    pub fn heard_from(&self, user: &str) {
        let change = self.board().traffic(user, std::time::Instant::now());
        if let Some(change) = change {
            self.announce_status(change);
        }
    }

    /// `user` chose a status.
    pub fn choose_status(&self, user: &str, status: online::Status) {
        let change = self.board().choose(user, status, std::time::Instant::now());
        if let Some(change) = change {
            self.announce_status(change);
        }
    }

    /// What others see of `user` now.
    pub fn status_of(&self, user: &str) -> online::Status {
        self.board().status(user)
    }

    /// Tells the subscribers of `change.user` (if any), unless that attendee's privacy is
    /// `hidden`. The privacy lookup is skipped when nobody follows the user.
    fn announce_status(&self, change: online::Change) {
        let key = presence_channel(&change.user);
        if self.lock().get(&key).is_none_or(|s| s.is_empty()) {
            return;
        }
        let hub = self.clone();
        tokio::spawn(async move {
            if hub.may_show(&change.user).await {
                hub.ephemeral(
                    &key,
                    "presence.changed",
                    json!({"user_id": change.user, "status": change.status}),
                );
            }
        });
    }

    /// Closes every connection of `user` (WebSockets with `attendee_removed`; SSE streams end),
    /// after the attendee was deleted: their token no longer opens anything either.
    pub fn remove_user(&self, user: &str) {
        let removed = self.sessions().remove(user).unwrap_or_default();
        for (_, eviction) in &removed {
            eviction.evict(true);
        }
        let streams: Vec<Arc<Notify>> = self
            .lock()
            .values()
            .flatten()
            .filter(|o| &*o.user == user)
            .map(|o| o.kill.clone())
            .collect();
        for kill in streams {
            kill.notify_one();
        }
        if !removed.is_empty() {
            tracing::info!(
                attendee = user,
                connections = removed.len(),
                "closed the connections of a removed attendee"
            );
        }
    }

    /// After a committed change to attendee `user` (local or synced): if they are no longer a
    /// current attendee, their connections close.
    pub async fn attendee_changed(&self, user: &str) {
        if !self.is_attendee(user).await {
            self.remove_user(user);
        }
    }

    /// After another appliance's signing key arrived (by sync): tokens it signed open this
    /// appliance from now on. A failed reload keeps the keys in use (and is logged).
    pub async fn key_published(&self) {
        if let Err(e) = self.0.verifier.reload(&self.0.store).await {
            tracing::warn!(error = %e, "cannot reload the token keys after a key arrived");
        }
    }

    /// After a committed change of `user`'s privacy (local or synced): their followers hear the
    /// level now in force (`visibility`) and drop what it no longer lets out (all of it for
    /// `hidden`, the zone for `venue`); unless hidden, the person's current status follows.
    /// The level is read back rather than taken from the op, which may have lost to a newer one;
    /// a failed read counts as `hidden` (privacy fails closed).
    pub async fn privacy_changed(&self, user: &str) {
        let key = presence_channel(user);
        if self.lock().get(&key).is_none_or(|s| s.is_empty()) {
            return;
        }
        let level = self
            .privacy_of(user)
            .await
            .unwrap_or_else(|| "hidden".into());
        self.ephemeral(
            &key,
            "presence.changed",
            json!({"user_id": user, "visibility": level}),
        );
        if level != "hidden" {
            self.ephemeral(
                &key,
                "presence.changed",
                json!({"user_id": user, "status": self.status_of(user)}),
            );
        }
    }

    /// Whether `user` is a current (not deleted) attendee of this event: what every attendee
    /// token must name. A failed read counts as no: access fails closed.
    pub async fn is_attendee(&self, user: &str) -> bool {
        let (event, user) = (self.0.event_id.clone(), user.to_string());
        self.0
            .store
            .read(move |conn| attendees::is_current(conn, &event, &user))
            .await
            .unwrap_or(false)
    }

    /// Whether `user`'s privacy lets others see their presence: a current attendee whose setting
    /// is anything but `hidden`. A missing row, an unknown setting or a failed read shows
    /// nothing: privacy fails closed.
    pub async fn may_show(&self, user: &str) -> bool {
        matches!(self.privacy_of(user).await.as_deref(), Some(p) if p != "hidden")
    }

    /// `user`'s privacy level, if they are a current attendee with a known level; `None` for a
    /// missing row, an unknown level or a failed read (which every caller treats as hidden).
    async fn privacy_of(&self, user: &str) -> Option<String> {
        let (event, user) = (self.0.event_id.clone(), user.to_string());
        self.0
            .store
            .read(move |conn| attendees::privacy(conn, &event, &user))
            .await
            .ok()
            .flatten()
            .filter(|p| crate::oplog::PRIVACY_LEVELS.contains(&p.as_str()))
    }

    /// Forgets a closed connection.
    pub fn close_session(&self, user: &str, connection: u64) {
        {
            let mut sessions = self.sessions();
            if let Some(open) = sessions.get_mut(user) {
                open.retain(|(o, _)| o.connection != connection);
                if open.is_empty() {
                    sessions.remove(user);
                }
            }
        }
        self.board().disconnected(user);
    }

    /// Takes one post from `user`'s bucket (10/s, burst 20); `Err(retry_after)` when empty.
    /// Shared by every transport, so a client cannot go around it.
    pub fn take_token(&self, user: &str) -> Result<(), std::time::Duration> {
        self.0
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take(user, std::time::Instant::now())
    }

    /// Whether `user`'s `what` (typing, a receipt) in `channel` may go out now: at most once
    /// per `interval` across all of the user's connections; `forced` always passes and counts.
    pub fn throttle(
        &self,
        user: &str,
        what: &str,
        channel: &str,
        interval: std::time::Duration,
        forced: bool,
    ) -> bool {
        self.0
            .throttle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pass(
                user,
                &format!("{what} {channel}"),
                std::time::Instant::now(),
                interval,
                forced,
            )
    }

    /// Long-polls waiting for a message now.
    pub fn long_polls_waiting(&self) -> u64 {
        self.0.waiting.load(Ordering::Relaxed)
    }

    /// The event served.
    pub fn event_id(&self) -> &str {
        &self.0.event_id
    }

    /// Whether `channel` exists for `user` (a session or zone of the registry,
    /// `announcements`, a direct conversation, or a group `user` is a member of: to others a
    /// group does not exist).
    pub async fn exists(&self, channel: &Channel<'_>, user: &str) -> Result<bool, DomainError> {
        let (kind, id) = match channel {
            Channel::Announcements => return Ok(true),
            Channel::Session(id) => ("session", id.to_string()),
            Channel::Zone(id) => ("zone", id.to_string()),
            // A conversation exists as soon as one of its two people opens it.
            Channel::Direct(..) => return Ok(true),
            Channel::Group(id) => return self.is_member(id, user).await,
        };
        let event = self.0.event_id.clone();
        self.0
            .store
            .read(move |conn| entities::exists(conn, kind, &event, &id))
            .await
    }

    /// A new connection id.
    pub fn connection_id(&self) -> u64 {
        self.0.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds a connection to a channel's fan-out. A zone channel's subscriber gets the zone's
    /// current occupancy at once, when presence has counted it.
    pub fn subscribe(&self, channel: &str, outlet: &Outlet) {
        {
            let mut channels = self.lock();
            let subscribers = channels.entry(channel.to_string()).or_default();
            if subscribers
                .iter()
                .any(|s| s.connection == outlet.connection)
            {
                return;
            }
            subscribers.push(outlet.clone());
        }
        if let Some(zone) = channel.strip_prefix("zone:") {
            let known = self
                .0
                .occupancy
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(zone)
                .copied();
            if let Some(n) = known {
                let kind = "zone.occupancy";
                self.push(
                    outlet,
                    Class::of(kind),
                    frame(kind, occupancy_payload(zone, n)),
                );
            }
        }
    }

    /// Queues a frame for one connection: a droppable frame may be dropped (counted), and a
    /// connection that cannot take an essential one is closed as a slow consumer.
    pub fn push(&self, outlet: &Outlet, class: Class, bytes: Utf8Bytes) {
        match outlet.queue.push(class, bytes) {
            Pushed::Queued => {}
            Pushed::Dropped(dropped) => {
                self.0
                    .metrics
                    .frames_dropped
                    .get_or_create(&crate::metrics::ReasonLabel {
                        reason: dropped.label().into(),
                    })
                    .inc();
            }
            Pushed::Overflow => {
                self.0.metrics.slow_consumers.inc();
                outlet.kill.notify_one();
            }
        }
    }

    /// Connection metrics (open WebSockets).
    pub fn metrics(&self) -> &crate::metrics::ConnectionMetrics {
        &self.0.metrics
    }

    /// Removes a connection from one channel, or from all of them.
    pub fn unsubscribe(&self, channel: Option<&str>, connection: u64) {
        let mut channels = self.lock();
        channels.retain(|name, subscribers| {
            if channel.is_none_or(|c| c == name) {
                subscribers.retain(|s| s.connection != connection);
            }
            !subscribers.is_empty()
        });
    }

    /// Posts a message: committed (op, row, and the idempotency record when a key is given)
    /// in one transaction. Its fan-out, badges and bridging follow from the committed-op
    /// stream. A repeated key returns the first answer and changes nothing. `sender` is an
    /// attendee, or `mqtt:<topic>` for what the MQTT bridge carries in (never bridged back).
    pub async fn post(
        &self,
        channel: &str,
        sender: &str,
        content: &str,
        reply_to: Option<String>,
        key: Option<(String, String)>,
    ) -> Result<(Posted, bool), DomainError> {
        if content.is_empty() || content.len() > MAX_CONTENT_BYTES {
            return Err(DomainError::Invalid(format!(
                "`content` must be 1-{MAX_CONTENT_BYTES} bytes"
            )));
        }
        let body =
            json!({"channel": channel, "sender": sender, "content": content, "reply_to": reply_to});
        let hash = idempotency::request_hash(&body);
        let event = self.0.event_id.clone();
        let (posted, replayed, message, seq) = self
            .0
            .store
            .write(move |ctx| {
                if let Some((principal, key)) = &key {
                    if let Some(stored) = idempotency::get(ctx.conn(), principal, key)? {
                        if stored.request_hash != hash {
                            return Err(DomainError::KeyReused(key.clone()));
                        }
                        let posted: Posted = serde_json::from_value(stored.response)
                            .map_err(|e| DomainError::Invalid(e.to_string()))?;
                        return Ok((posted, true, None, 0));
                    }
                }
                let message_id = uuid::Uuid::now_v7().to_string();
                let op = ctx.new_op(&event, POST, &message_id, body);
                let seq = ctx.apply_owned(op)?.seq();
                let message = load(ctx.conn(), &message_id)?
                    .ok_or_else(|| DomainError::NotFound("the message just written".into()))?;
                let posted = Posted {
                    seq: message.seq,
                    message_id,
                };
                if let Some((principal, key)) = &key {
                    let stored = Stored {
                        request_hash: hash,
                        status: 200,
                        response: serde_json::to_value(&posted).unwrap_or_default(),
                    };
                    idempotency::put(ctx.conn(), principal, key, &stored, ctx.now_ms())?;
                }
                Ok((posted, false, Some(message), seq))
            })
            .await?;
        if message.is_some() {
            // The fan-out and badges follow from the committed-op stream (`effects`), as for a
            // message pulled from the relay; the ack waits for them, so the sender's other
            // phones and the people mentioned have their frames queued first.
            self.settled(seq).await;
        }
        Ok((posted, replayed))
    }

    /// Waits until the hub has applied the effects of the op at `seq` (its fan-out is queued),
    /// at most [`SETTLE_WAIT`]: an answer never hangs on the fan-out, which runs regardless.
    pub(crate) async fn settled(&self, seq: i64) {
        if seq <= 0 {
            return;
        }
        let mut settled = self.0.settled.subscribe();
        let waited = tokio::time::timeout(SETTLE_WAIT, settled.wait_for(|s| *s >= seq)).await;
        if waited.is_err() {
            tracing::debug!(seq, "answered before the hub's fan-out caught up");
        }
    }

    /// Delivers `message.new` to every subscriber of its channel: serialised once, the bytes
    /// shared. A subscriber whose queue is full is closed as a slow consumer (it resumes with
    /// gap-fill); the others are not held up.
    fn fan_out(&self, message: &Message) {
        self.wake_long_polls(&message.channel);
        self.ephemeral_except(
            &message.channel,
            "message.new",
            serde_json::to_value(message).unwrap_or_default(),
            None,
        );
    }

    /// Wakes the long-polls waiting on `channel`.
    fn wake_long_polls(&self, channel: &str) {
        if let Some(waiting) = self.waiters().get(channel) {
            waiting.notify_waiters();
        }
    }

    /// Sends an ephemeral frame (occupancy, typing, presence, receipts) to a channel's
    /// subscribers: serialised once, never stored, and dropped for a connection whose queue
    /// is full rather than closing it (see [`queue`]); only messages are worth a gap-fill.
    /// (Durable frames take the same path; their [`Class`] is never dropped.)
    pub fn ephemeral(&self, channel: &str, kind: &str, payload: Value) {
        self.ephemeral_except(channel, kind, payload, None);
    }

    /// [`Hub::ephemeral`], skipping one connection (the sender of a typing indicator).
    pub fn ephemeral_except(&self, channel: &str, kind: &str, payload: Value, except: Option<u64>) {
        let channels = self.lock();
        let Some(subscribers) = channels.get(channel) else {
            return;
        };
        let bytes = frame(kind, payload);
        let class = Class::of(kind);
        for s in subscribers.iter().filter(|s| Some(s.connection) != except) {
            self.push(s, class, bytes.clone());
        }
    }

    /// Moves `user`'s read watermark in `channel` forward to `seq` (never back, never past the
    /// channel's last message); the watermark now.
    pub async fn mark_read(&self, channel: &str, user: &str, seq: i64) -> Result<i64, DomainError> {
        let (event, channel, user) = (
            self.0.event_id.clone(),
            channel.to_string(),
            user.to_string(),
        );
        self.0
            .store
            .write(move |ctx| {
                messages::mark_read(ctx.conn(), &event, &channel, &user, seq, ctx.now_ms())
            })
            .await
    }

    /// One message as it is now.
    pub async fn message(&self, message_id: &str) -> Result<Option<Message>, DomainError> {
        let id = message_id.to_string();
        self.0.store.read(move |conn| load(conn, &id)).await
    }

    /// Messages of `channel` after `after_seq`, oldest first, at most `limit`; and whether
    /// more follow.
    pub async fn history(
        &self,
        channel: &str,
        after_seq: i64,
        limit: usize,
    ) -> Result<(Vec<Message>, bool), DomainError> {
        let (event, channel) = (self.0.event_id.clone(), channel.to_string());
        self.0
            .store
            .read(move |conn| messages::history(conn, &event, &channel, after_seq, limit))
            .await
    }

    /// Like [`Hub::history`], but when nothing is there yet waits up to `wait` for the next
    /// message (the long-poll fallback).
    pub async fn wait_history(
        &self,
        channel: &str,
        after_seq: i64,
        limit: usize,
        wait: std::time::Duration,
    ) -> Result<(Vec<Message>, bool), DomainError> {
        let notify = self
            .waiters()
            .entry(channel.to_string())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone();
        // Registered before the query, so a message committed in between still wakes us.
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let first = self.history(channel, after_seq, limit).await?;
        if !first.0.is_empty() || wait.is_zero() {
            return Ok(first);
        }
        self.0.waiting.fetch_add(1, Ordering::Relaxed);
        let woken = tokio::time::timeout(wait, notified).await;
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
        if woken.is_err() {
            return Ok(first);
        }
        self.history(channel, after_seq, limit).await
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        self.0
            .waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Outlet>>> {
        self.0
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The hub epoch, made once per database.
async fn ensure_epoch(store: &Store) -> Result<String, DomainError> {
    store
        .write(|ctx| {
            let fresh = uuid::Uuid::now_v7().to_string();
            Ok::<_, DomainError>(crate::store::meta::set_once(
                ctx.conn(),
                "hub_epoch",
                &fresh,
            )?)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the JSON shapes clients parse (docs/protocol/websocket.md shows the same).
    #[test]
    fn frames_and_messages_keep_their_documented_shape() {
        let message = Message {
            channel: "announcements".into(),
            seq: 12,
            message_id: "01a2".into(),
            sender: "s1".into(),
            content: "Keynote moves to Hall B".into(),
            reply_to: None,
            created_at: "2026-11-22T09:00:00.123Z".into(),
            edited_at: None,
            deleted: false,
            reactions: Default::default(),
        };
        let bytes = frame(
            "message.new",
            serde_json::to_value(&message).unwrap_or_default(),
        );
        let parsed: Value = serde_json::from_str(bytes.as_str()).unwrap_or_default();
        let mut keys: Vec<&str> = parsed
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        keys.sort_unstable();
        assert_eq!(keys, ["id", "payload", "ts", "type"]);
        assert_eq!(parsed["type"], "message.new");
        assert_eq!(
            parsed["payload"],
            json!({
                "channel": "announcements", "seq": 12, "message_id": "01a2", "sender": "s1",
                "content": "Keynote moves to Hall B", "reply_to": null,
                "created_at": "2026-11-22T09:00:00.123Z", "edited_at": null, "deleted": false,
                "reactions": {},
            })
        );
        let posted = serde_json::to_value(Posted {
            seq: 3,
            message_id: "m".into(),
        })
        .unwrap_or_default();
        assert_eq!(posted, json!({"seq": 3, "message_id": "m"}));
    }
}
