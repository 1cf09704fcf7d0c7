//! The agent loop: pushes the outbox to the relay in order, pulls other appliances' ops and hands
//! them to the store, and fetches attendee-token keys. It reaches the store only through
//! [`SyncStore`], which the daemon implements over its op log.
//!
//! Why two loops: a push backlog of a million ops must not delay pulls (other appliances' check-ins
//! matter here now), and a long-poll pull must not delay pushes.
//!
//! Failure handling, from what stalls other sync products (research/anchors.md §3.3): every failed
//! call is retried on a timer with full-jitter backoff (cap 60 s), a success of either loop wakes
//! the other at once, and an op the relay refuses is parked with the relay's reason so the rest of
//! the backlog moves on.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::backoff::Backoff;
use crate::codec::{self, Encoding};
use crate::wire::{
    ErrorBody, KeysResponse, MAX_BATCH_BYTES, MAX_BATCH_OPS, MAX_PULL_LIMIT, Op, PROTOCOL_VERSION,
    PullResponse, PushRequest, PushResponse, Report, TokenKey, VERSION_HEADER,
};

/// How often an unreachable relay is probed during a backoff wait.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Local ops waiting to be pushed, with the appliance's report.
#[derive(Debug, Default)]
pub struct Pending {
    /// `(local seq, op)`, oldest first, at most the asked number.
    pub ops: Vec<(i64, Op)>,
    /// Backlog, parked count and conflicts not yet reported (version and node are filled in by
    /// the agent).
    pub report: Report,
}

/// What a push settled, to be made durable in one transaction.
#[derive(Debug, Default)]
pub struct Ack {
    /// Every local op up to this seq is done with (accepted, duplicate or parked).
    pub up_to_seq: i64,
    /// Ops the relay refused: `(local seq, op id, reason)`.
    pub parked: Vec<(i64, Uuid, String)>,
    /// The newest conflict the relay now knows of (ms), if the push carried any.
    pub conflicts_reported_until_ms: Option<u64>,
}

/// What applying a pulled batch did.
#[derive(Debug, Default, Clone, Copy)]
pub struct RemoteApplied {
    /// New ops applied.
    pub applied: u64,
    /// Ops already known.
    pub duplicates: u64,
    /// Ops this build cannot apply, parked with the reason.
    pub parked: u64,
}

/// The store, as the agent needs it. Every method is durable when its future resolves.
pub trait SyncStore: Send + Sync + 'static {
    /// The store's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Up to `max_ops` local ops after the acknowledged cursor, and the report.
    fn pending(&self, max_ops: usize) -> impl Future<Output = Result<Pending, Self::Error>> + Send;

    /// Advances the outbox cursor and parks refused ops, in one transaction.
    fn acknowledge(&self, ack: Ack) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The relay position pulled up to.
    fn pull_cursor(&self) -> impl Future<Output = Result<u64, Self::Error>> + Send;

    /// Applies remote ops through the same path as local ones and stores `cursor`, in one
    /// transaction; an op that cannot be applied is parked with the reason, never retried
    /// forever.
    fn apply_remote(
        &self,
        ops: Vec<Op>,
        cursor: u64,
    ) -> impl Future<Output = Result<RemoteApplied, Self::Error>> + Send;

    /// Installs the relay's attendee-token keys (replacing relay-sourced keys).
    fn install_keys(
        &self,
        keys: Vec<TokenKey>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Resolves when local ops may have been appended since the last call.
    fn local_change(&self) -> impl Future<Output = ()> + Send;
}

/// Where and how to sync.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The relay's base URL, e.g. `https://relay.example.com`.
    pub relay_url: String,
    /// The appliance's bearer token (`venue-relay appliance add` printed it).
    pub token: String,
    /// This build's version, reported to the relay.
    pub version: String,
    /// This appliance's node id, reported to the relay.
    pub node_id: String,
    /// The appliance image's release, reported to the relay (`None` outside the image).
    pub image_version: Option<String>,
    /// The root slot booted, reported to the relay (`None` outside the image).
    pub slot: Option<String>,
    /// Long-poll length of pulls.
    pub pull_wait: Duration,
    /// How often keys are refetched.
    pub keys_interval: Duration,
    /// With nothing to push, how often the report is sent anyway (an empty push).
    pub heartbeat: Duration,
    /// Body compression of pushes.
    pub encoding: Encoding,
}

impl AgentConfig {
    /// Defaults for everything but where and who.
    pub fn new(relay_url: &str, token: &str, version: &str, node_id: &str) -> Self {
        Self {
            relay_url: relay_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            version: version.to_string(),
            node_id: node_id.to_string(),
            image_version: None,
            slot: None,
            pull_wait: Duration::from_secs(25),
            keys_interval: Duration::from_secs(600),
            heartbeat: Duration::from_secs(30),
            encoding: Encoding::Zstd,
        }
    }
}

/// What the agent is doing, for `/api/v1/status` and metrics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AgentStatus {
    /// The relay's URL.
    pub relay: String,
    /// The last call to the relay succeeded.
    pub connected: bool,
    /// When a push last succeeded (ms since the epoch).
    pub last_push_ok_ms: Option<u64>,
    /// When a pull last succeeded.
    pub last_pull_ok_ms: Option<u64>,
    /// When pulls last reached the relay's head (nothing more waiting).
    pub last_caught_up_ms: Option<u64>,
    /// The last failure, with what to do about it.
    pub last_error: Option<String>,
    /// Local ops the relay has acknowledged since start.
    pub pushed_ops: u64,
    /// Remote ops applied since start.
    pub applied_ops: u64,
    /// Ops parked since start (refused by the relay, or not applicable here).
    pub parked_ops: u64,
    /// Relay position pulled up to.
    pub pull_cursor: u64,
    /// The relay's head for our events, as of the last pull.
    pub pull_head: u64,
    /// Consecutive failed pushes.
    pub push_failures: u32,
    /// Consecutive failed pulls.
    pub pull_failures: u32,
    /// Keys installed from the relay at the last fetch.
    pub keys: usize,
}

/// A handle on a running agent.
#[derive(Clone)]
pub struct AgentHandle {
    status: Arc<Mutex<AgentStatus>>,
    wake: Arc<Notify>,
}

impl AgentHandle {
    /// A copy of the current status.
    pub fn status(&self) -> AgentStatus {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Retry now instead of waiting out the backoff (connectivity came back).
    pub fn kick(&self) {
        self.wake.notify_waiters();
    }
}

/// Why a call to the relay failed.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("relay unreachable: {0}")]
    Transport(String),
    #[error("relay answered {status} {code}: {message}")]
    Status {
        status: u16,
        code: String,
        message: String,
    },
    #[error("relay answer unreadable: {0}")]
    Decode(String),
    #[error("local store: {0}")]
    Store(String),
}

impl CallError {
    /// The relay judged the request itself bad: retrying the same bytes cannot help.
    fn is_request_refused(&self) -> bool {
        matches!(self, Self::Status { status, .. } if matches!(status, 400 | 413 | 422))
    }
}

struct Inner<S> {
    store: Arc<S>,
    config: AgentConfig,
    http: reqwest::Client,
    status: Arc<Mutex<AgentStatus>>,
    wake: Arc<Notify>,
    errors: Mutex<Errors>,
}

/// The agent's kinds of call, each with its own last error: push, pull and the key fetch fail
/// and recover independently, so one's success must not make another's known error new again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Push = 0,
    Pull = 1,
    Keys = 2,
}

/// The last error of each kind of call. Pure state: it decides what is logged.
#[derive(Debug, Default)]
struct Errors([Option<String>; 3]);

impl Errors {
    /// Records a failure; whether it is new for this call (and so worth a log line).
    fn fail(&mut self, call: Call, message: &str) -> bool {
        let slot = &mut self.0[call as usize];
        let new = slot.as_deref() != Some(message);
        *slot = Some(message.to_string());
        new
    }

    /// Records a success of `call`; whether no call is failing any more.
    fn succeed(&mut self, call: Call) -> bool {
        self.0[call as usize] = None;
        self.0.iter().all(Option::is_none)
    }
}

/// The agent's HTTP client could not be made (TLS roots or the resolver unavailable).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the sync agent's HTTP client: {0}")]
pub struct SpawnError(#[from] reqwest::Error);

/// Starts the agent on the current runtime; it runs until `shutdown` turns true (or the
/// returned task is aborted).
///
/// Stopping cancels whatever call is in flight, which is safe at any point: a push the relay
/// never acknowledged is sent again after the next start and the relay ignores the ops it
/// already has (idempotent by op id), and a pulled batch is applied together with its cursor in
/// one store transaction, so it is either wholly applied or pulled again.
pub fn spawn<S: SyncStore>(
    store: Arc<S>,
    config: AgentConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(AgentHandle, tokio::task::JoinHandle<()>), SpawnError> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .user_agent(format!("venued/{}", config.version))
        .build()?;
    let status = Arc::new(Mutex::new(AgentStatus {
        relay: config.relay_url.clone(),
        ..AgentStatus::default()
    }));
    let wake = Arc::new(Notify::new());
    let inner = Arc::new(Inner {
        store,
        config,
        http,
        status: status.clone(),
        wake: wake.clone(),
        errors: Mutex::default(),
    });
    let task = tokio::spawn(async move {
        let push = tokio::spawn(push_loop(inner.clone()));
        let pull = tokio::spawn(pull_loop(inner.clone()));
        // Abort both when this task ends or is aborted.
        let _guards = (
            AbortOnDrop(push.abort_handle()),
            AbortOnDrop(pull.abort_handle()),
        );
        tokio::select! {
            _ = async { tokio::join!(push, pull) } => {}
            _ = shutdown.wait_for(|stop| *stop) => {
                tracing::debug!("sync agent stopped");
            }
        }
    });
    Ok((AgentHandle { status, wake }, task))
}

/// Aborts a spawned task when dropped, so a task ends with the future that owns it.
pub struct AbortOnDrop(pub tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl<S: SyncStore> Inner<S> {
    fn update(&self, f: impl FnOnce(&mut AgentStatus)) {
        f(&mut self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    fn succeeded(&self, call: Call) {
        let all_clear = self
            .errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .succeed(call);
        let was_down = {
            let mut s = self
                .status
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let was = !s.connected;
            s.connected = true;
            if all_clear {
                s.last_error = None;
            }
            was
        };
        if was_down {
            tracing::info!(relay = %self.config.relay_url, "relay reachable");
            // The other loop may be sleeping out a backoff: connectivity is back, so go now.
            self.wake.notify_waiters();
        }
    }

    fn failed(&self, call: Call, error: &CallError, what: &str) {
        let message = format!("{what}: {error}");
        let changed = self
            .errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .fail(call, &message);
        {
            let mut s = self
                .status
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            s.connected = !matches!(error, CallError::Transport(_));
            s.last_error = Some(message.clone());
        }
        // Once per distinct error, not once per retry: a day offline is one line, not 10,000.
        if changed {
            match error {
                CallError::Status {
                    status: 401 | 403, ..
                } => {
                    tracing::error!(relay = %self.config.relay_url, error = %message, "relay refuses this appliance; check [sync] token and the relay's appliance record");
                }
                _ => {
                    tracing::warn!(relay = %self.config.relay_url, error = %message, "sync call failed; retrying with backoff")
                }
            }
        }
    }

    /// Sleeps out a backoff wait, or less if connectivity returns (or someone kicks us). While
    /// the relay is unreachable, a TCP connect every [`PROBE_INTERVAL`] notices its return, so a
    /// long outage does not cost up to a minute more of backoff once it ends.
    async fn back_off(&self, backoff: &mut Backoff) {
        let wait = backoff.next_wait();
        let unreachable = !self.status().connected;
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = self.wake.notified() => {}
            () = self.probe(), if unreachable && wait > PROBE_INTERVAL => {}
        }
    }

    /// Resolves once the relay's port accepts a TCP connection.
    async fn probe(&self) {
        let Some(target) = reqwest::Url::parse(&self.config.relay_url)
            .ok()
            .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
        else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(PROBE_INTERVAL).await;
            let connect = tokio::net::TcpStream::connect(&target);
            if let Ok(Ok(_)) = tokio::time::timeout(PROBE_INTERVAL, connect).await {
                tracing::debug!(%target, "relay port answers again; retrying now");
                return;
            }
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.config.relay_url))
            .bearer_auth(&self.config.token)
            .header(VERSION_HEADER, PROTOCOL_VERSION.to_string())
    }

    async fn read<T: serde::de::DeserializeOwned>(
        response: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<T, CallError> {
        let response = response.map_err(|e| CallError::Transport(crate::error_chain(&e)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| CallError::Transport(crate::error_chain(&e)))?;
        if !status.is_success() {
            let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => (body.error.code, body.error.message),
                Err(_) => (
                    "unknown".into(),
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
                ),
            };
            return Err(CallError::Status {
                status: status.as_u16(),
                code,
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| CallError::Decode(e.to_string()))
    }

    async fn push(&self, ops: &[(i64, Op)], report: &Report) -> Result<PushResponse, CallError> {
        let body = PushRequest {
            ops: ops.iter().map(|(_, op)| op.clone()).collect(),
            report: Some(report.clone()),
        };
        let json = serde_json::to_vec(&body).map_err(|e| CallError::Decode(e.to_string()))?;
        let packed = codec::encode(&json, self.config.encoding)
            .map_err(|e| CallError::Decode(e.to_string()))?;
        let response = self
            .request(reqwest::Method::POST, "/v1/ops")
            .timeout(Duration::from_secs(60))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                reqwest::header::CONTENT_ENCODING,
                self.config.encoding.as_header(),
            )
            .body(packed)
            .send()
            .await;
        Self::read(response).await
    }
}

async fn push_loop<S: SyncStore>(inner: Arc<Inner<S>>) {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(60));
    // Halved when the relay refuses a batch as a whole, so one bad op is isolated and parked.
    let mut batch_limit = MAX_BATCH_OPS;
    let mut last_sent = tokio::time::Instant::now();
    // The relay's operators see the backlog of the last report, which counted the batch it came
    // with. After a push that moved ops, a report of what is left goes out at once, not with
    // the next heartbeat.
    let mut report_due = false;
    loop {
        let pending = match inner.store.pending(batch_limit).await {
            Ok(p) => p,
            Err(e) => {
                inner.failed(
                    Call::Push,
                    &CallError::Store(e.to_string()),
                    "reading the outbox",
                );
                inner.back_off(&mut backoff).await;
                continue;
            }
        };
        if pending.ops.is_empty()
            && pending.report.conflicts.is_empty()
            && !report_due
            && last_sent.elapsed() < inner.config.heartbeat
        {
            tokio::select! {
                () = inner.store.local_change() => {}
                () = tokio::time::sleep(inner.config.heartbeat.saturating_sub(last_sent.elapsed())) => {}
            }
            continue;
        }
        let mut ops = pending.ops;
        let mut report = pending.report;
        report.version = inner.config.version.clone();
        report.node_id = inner.config.node_id.clone();
        report.image_version = inner.config.image_version.clone();
        report.slot = inner.config.slot.clone();
        report.pull_lag_ops = {
            let s = inner.status();
            s.pull_head.saturating_sub(s.pull_cursor)
        };
        // Keep the body under the relay's limit however large the ops are.
        while ops.len() > 1 && approx_size(&ops) > MAX_BATCH_BYTES * 9 / 10 {
            ops.truncate(ops.len() / 2);
        }
        last_sent = tokio::time::Instant::now();
        match inner.push(&ops, &report).await {
            Ok(response) => {
                let ack = settle(&ops, &response, &report);
                let settled = ops.len() as u64;
                let parked = ack.parked.len() as u64;
                for (seq, id, reason) in &ack.parked {
                    tracing::warn!(seq, op_id = %id, %reason, "relay refused an op; parked");
                }
                if let Err(e) = inner.store.acknowledge(ack).await {
                    inner.failed(
                        Call::Push,
                        &CallError::Store(e.to_string()),
                        "recording the relay's ack",
                    );
                    inner.back_off(&mut backoff).await;
                    continue;
                }
                backoff.reset();
                batch_limit = MAX_BATCH_OPS;
                report_due = settled > 0;
                inner.update(|s| {
                    s.pushed_ops += settled;
                    s.parked_ops += parked;
                    s.last_push_ok_ms = Some(now_ms());
                    s.push_failures = 0;
                });
                inner.succeeded(Call::Push);
            }
            Err(e) if e.is_request_refused() && ops.len() > 1 => {
                batch_limit = (ops.len() / 2).max(1);
                tracing::debug!(batch_limit, error = %e, "relay refused a batch; splitting it");
            }
            Err(e) if e.is_request_refused() => {
                // One op the relay will never take: park it so the backlog behind it moves.
                let (seq, op) = &ops[0];
                let ack = Ack {
                    up_to_seq: *seq,
                    parked: vec![(*seq, op.id, e.to_string())],
                    conflicts_reported_until_ms: None,
                };
                tracing::warn!(seq, op_id = %op.id, error = %e, "relay refuses this op; parked");
                if let Err(e) = inner.store.acknowledge(ack).await {
                    inner.failed(
                        Call::Push,
                        &CallError::Store(e.to_string()),
                        "parking a refused op",
                    );
                    inner.back_off(&mut backoff).await;
                    continue;
                }
                inner.update(|s| s.parked_ops += 1);
                batch_limit = MAX_BATCH_OPS;
            }
            Err(e) => {
                inner.failed(Call::Push, &e, "push");
                inner.update(|s| s.push_failures = backoff.failures() + 1);
                inner.back_off(&mut backoff).await;
            }
        }
    }
}

/// Turns the relay's answer into what the outbox records.
fn settle(ops: &[(i64, Op)], response: &PushResponse, report: &Report) -> Ack {
    let up_to_seq = ops.last().map(|(seq, _)| *seq).unwrap_or(0);
    let parked = response
        .rejected
        .iter()
        .filter_map(|r| {
            ops.iter().find(|(_, op)| op.id == r.id).map(|(seq, _)| {
                (
                    *seq,
                    r.id,
                    format!("relay refused ({}): {}", r.code, r.reason),
                )
            })
        })
        .collect();
    Ack {
        up_to_seq,
        parked,
        conflicts_reported_until_ms: report.conflicts.iter().map(|c| c.recorded_ms).max(),
    }
}

fn approx_size(ops: &[(i64, Op)]) -> usize {
    ops.iter()
        .map(|(_, op)| 256 + op.body.to_string().len())
        .sum()
}

async fn pull_loop<S: SyncStore>(inner: Arc<Inner<S>>) {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(60));
    let mut keys_due = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= keys_due {
            match fetch_keys(&inner).await {
                Ok(()) => {
                    inner.succeeded(Call::Keys);
                    keys_due = tokio::time::Instant::now() + inner.config.keys_interval;
                }
                Err(e) => {
                    inner.failed(Call::Keys, &e, "fetching token keys");
                    keys_due = tokio::time::Instant::now() + Duration::from_secs(30);
                }
            }
        }
        let cursor = match inner.store.pull_cursor().await {
            Ok(c) => c,
            Err(e) => {
                inner.failed(
                    Call::Pull,
                    &CallError::Store(e.to_string()),
                    "reading the pull cursor",
                );
                inner.back_off(&mut backoff).await;
                continue;
            }
        };
        let wait = inner.config.pull_wait.as_secs();
        let response = inner
            .request(
                reqwest::Method::GET,
                &format!("/v1/ops?after={cursor}&limit={MAX_PULL_LIMIT}&wait={wait}"),
            )
            .timeout(inner.config.pull_wait + Duration::from_secs(30))
            .send()
            .await;
        match Inner::<S>::read::<PullResponse>(response).await {
            Ok(pulled) => {
                let received = pulled.ops.len();
                let outcome = if received > 0 || pulled.cursor != cursor {
                    inner.store.apply_remote(pulled.ops, pulled.cursor).await
                } else {
                    Ok(RemoteApplied::default())
                };
                match outcome {
                    Ok(done) => {
                        backoff.reset();
                        let now = now_ms();
                        inner.update(|s| {
                            s.applied_ops += done.applied;
                            s.parked_ops += done.parked;
                            s.pull_cursor = pulled.cursor;
                            s.pull_head = pulled.head;
                            s.last_pull_ok_ms = Some(now);
                            if !pulled.has_more {
                                s.last_caught_up_ms = Some(now);
                            }
                            s.pull_failures = 0;
                        });
                        if done.parked > 0 {
                            tracing::warn!(
                                parked = done.parked,
                                "pulled ops this build cannot apply were parked"
                            );
                        }
                        inner.succeeded(Call::Pull);
                    }
                    Err(e) => {
                        inner.failed(
                            Call::Pull,
                            &CallError::Store(e.to_string()),
                            "applying pulled ops",
                        );
                        inner.back_off(&mut backoff).await;
                    }
                }
            }
            Err(e) => {
                inner.failed(Call::Pull, &e, "pull");
                inner.update(|s| s.pull_failures = backoff.failures() + 1);
                inner.back_off(&mut backoff).await;
            }
        }
    }
}

async fn fetch_keys<S: SyncStore>(inner: &Inner<S>) -> Result<(), CallError> {
    let response = inner
        .request(reqwest::Method::GET, "/v1/keys")
        .timeout(Duration::from_secs(30))
        .send()
        .await;
    let keys: KeysResponse = Inner::<S>::read(response).await?;
    let count = keys.keys.len();
    inner
        .store
        .install_keys(keys.keys)
        .await
        .map_err(|e| CallError::Store(e.to_string()))?;
    inner.update(|s| s.keys = count);
    Ok(())
}

impl<S> Inner<S> {
    fn status(&self) -> AgentStatus {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::{Call, Errors};

    /// The outside probe saw 15 warnings for 3 distinct errors in a 40 s outage: push, pull and
    /// the key fetch shared one last error, so each success or failure made the others' new.
    #[test]
    fn regression_each_call_logs_its_error_once_whatever_the_others_do() {
        let mut errors = Errors::default();
        let mut logged = 0;
        for _ in 0..5 {
            logged += usize::from(errors.fail(Call::Push, "push: connection refused"));
            logged += usize::from(errors.fail(Call::Pull, "pull: connection refused"));
            logged += usize::from(errors.fail(Call::Keys, "fetching token keys: timed out"));
            assert!(!errors.succeed(Call::Keys), "push and pull still fail");
        }
        assert_eq!(
            logged,
            1 + 1 + 5,
            "push and pull once each; the keys once per new failure"
        );
        assert!(!errors.succeed(Call::Push));
        assert!(
            errors.succeed(Call::Pull),
            "all clear once every call succeeded"
        );
        assert!(
            errors.fail(Call::Push, "push: connection refused"),
            "a new outage logs again"
        );
    }

    use super::*;
    use crate::hlc::Hlc;
    use crate::wire::Rejection;

    fn op(n: u64) -> (i64, Op) {
        (
            n as i64,
            Op {
                id: Uuid::now_v7(),
                v: 1,
                hlc: Hlc {
                    wall_ms: n,
                    counter: 0,
                    node: "a".into(),
                },
                origin: "a".into(),
                scope: "ev".into(),
                kind: "attendee.upsert".into(),
                entity_id: format!("a{n}"),
                body: serde_json::json!({}),
                extra: serde_json::Map::new(),
            },
        )
    }

    #[test]
    fn settling_acks_the_whole_batch_and_parks_the_refused() {
        let ops = vec![op(5), op(6), op(7)];
        let response = PushResponse {
            accepted: vec![ops[0].1.id],
            duplicates: vec![ops[2].1.id],
            rejected: vec![Rejection {
                id: ops[1].1.id,
                code: "invalid_kind".into(),
                reason: "bad".into(),
            }],
            cursor: 10,
        };
        let ack = settle(&ops, &response, &Report::default());
        assert_eq!(ack.up_to_seq, 7);
        assert_eq!(ack.parked.len(), 1);
        assert_eq!(ack.parked[0].0, 6);
        assert!(ack.parked[0].2.contains("invalid_kind"));
    }

    #[test]
    fn refusals_of_the_request_itself_are_told_apart_from_outages() {
        let status = |status| CallError::Status {
            status,
            code: "x".into(),
            message: "y".into(),
        };
        assert!(status(413).is_request_refused());
        assert!(status(400).is_request_refused());
        assert!(!status(503).is_request_refused());
        assert!(!status(403).is_request_refused());
        assert!(!CallError::Transport("refused".into()).is_request_refused());
    }
}
