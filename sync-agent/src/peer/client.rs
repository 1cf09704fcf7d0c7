//! The pull loop of one peer: hello (who it is, a nonce), then signed long-poll pulls of its op
//! log from this box's cursor for that node, each answer checked against the venue key before a
//! single op of it is applied.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::{
    AUTH_HEADER, COUNT_HEADER, EVENT_HEADER, HELLO_PATH, Hello, MAX_ANSWER_BYTES, NODE_HEADER,
    NONCE_HEADER, OPS_PATH, SignedRequest, VenueKey,
};
use crate::agent::{AbortOnDrop, RemoteApplied};
use crate::backoff::Backoff;
use crate::wire::{ErrorBody, MAX_PULL_LIMIT, Op, PROTOCOL_VERSION, PullResponse, VERSION_HEADER};

/// The store, as a peer loop needs it. Every method is durable when its future resolves.
pub trait PeerStore: Send + Sync + 'static {
    /// The store's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// How far this box has pulled `node`'s log (its seq), 0 at first.
    fn peer_cursor(&self, node: &str) -> impl Future<Output = Result<u64, Self::Error>> + Send;

    /// Applies ops pulled from `node` through the same path as any remote op and stores
    /// `cursor` for it, in one transaction.
    fn apply_from_peer(
        &self,
        node: &str,
        ops: Vec<Op>,
        cursor: u64,
    ) -> impl Future<Output = Result<RemoteApplied, Self::Error>> + Send;

    /// Counts one refusal by `reason` (metrics).
    fn refused(&self, reason: &'static str);
}

/// One peer to pull from.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// The peer's base URL, e.g. `http://10.0.0.12:8080`.
    pub url: String,
    /// The venue key.
    pub key: Arc<VenueKey>,
    /// This box's node id.
    pub node_id: String,
    /// This box's event.
    pub event: String,
    /// How long a pull waits at the peer for new ops.
    pub wait: Duration,
    /// This build's version, as the user agent.
    pub version: String,
    /// Node ids revoked on this box: their answers are refused like a foreign key's.
    pub revoked: Vec<String>,
}

/// What the loop knows of its peer, for `/api/v1/status` and metrics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PeerStatus {
    /// Where the peer is.
    pub url: String,
    /// The peer's node id, once it said hello.
    pub node: Option<String>,
    /// The last call reached the peer and was accepted.
    pub connected: bool,
    /// When the peer last answered a signed pull (ms since the epoch).
    pub last_contact_ms: Option<u64>,
    /// When a pull last reached the peer's head (nothing more waiting).
    pub last_caught_up_ms: Option<u64>,
    /// The peer's seq pulled up to.
    pub cursor: u64,
    /// The peer's newest seq, as of the last pull.
    pub head: u64,
    /// Ops of the peer's log not pulled yet, as of the last pull.
    pub lag_ops: u64,
    /// New ops applied from this peer since start.
    pub applied_ops: u64,
    /// Ops this box already had.
    pub duplicate_ops: u64,
    /// Ops that could not be applied here (parked).
    pub parked_ops: u64,
    /// Refusals either way: this box refused the peer's answers (not signed with the venue
    /// key, another event) or the peer refused this box.
    pub refused: u64,
    /// The last failure, with what to do about it.
    pub last_error: Option<String>,
}

/// A handle on a running peer loop.
#[derive(Clone, Debug)]
pub struct PeerHandle {
    status: Arc<Mutex<PeerStatus>>,
}

impl PeerHandle {
    /// A copy of the current status.
    pub fn status(&self) -> PeerStatus {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Why one call failed.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("peer unreachable: {0}")]
    Transport(String),
    #[error("the peer refused this box: {status} {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("{0}")]
    Foreign(String),
    /// The URL is this box's own (one list for every box of the venue).
    #[error("this box itself")]
    Itself,
    /// The nonce expired (or the peer restarted): say hello again, at once.
    #[error("the peer's nonce expired")]
    Stale,
    #[error("peer answer unreadable: {0}")]
    Decode(String),
    #[error("local store: {0}")]
    Store(String),
}

/// The nonce session with the peer.
struct Session {
    node: String,
    nonce: String,
    count: u64,
    cursor: u64,
}

/// The peer client could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the peer sync HTTP client: {0}")]
pub struct SpawnError(#[from] reqwest::Error);

/// Starts pulling from one peer; runs until `shutdown` turns true (or the task is aborted).
/// Stopping mid-call is safe: a batch is applied with its cursor in one transaction.
pub fn spawn<S: PeerStore>(
    store: Arc<S>,
    config: PeerConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(PeerHandle, tokio::task::JoinHandle<()>), SpawnError> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .no_proxy()
        .user_agent(format!("venued/{} (peer)", config.version))
        .build()?;
    let status = Arc::new(Mutex::new(PeerStatus {
        url: config.url.clone(),
        ..PeerStatus::default()
    }));
    let handle = PeerHandle {
        status: status.clone(),
    };
    let task = tokio::spawn(async move {
        let run = tokio::spawn(run(store, config, http, status));
        let _guard = AbortOnDrop(run.abort_handle());
        tokio::select! {
            _ = run => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    });
    Ok((handle, task))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn run<S: PeerStore>(
    store: Arc<S>,
    config: PeerConfig,
    http: reqwest::Client,
    status: Arc<Mutex<PeerStatus>>,
) {
    let update = |f: &dyn Fn(&mut PeerStatus)| {
        f(&mut status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    };
    // A short cap: a peer is on the same LAN, a call to a box that is down costs nothing, and a
    // box that comes back should be pulled from within seconds, not half a minute.
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    let mut session: Option<Session> = None;
    let mut last_logged: Option<String> = None;
    loop {
        let result = match session.as_mut() {
            None => hello(&*store, &config, &http).await.map(|s| {
                update(&|st| st.node = Some(s.node.clone()));
                session = Some(s);
                false
            }),
            Some(s) => pull(&*store, &config, &http, s, &update).await,
        };
        match result {
            Ok(caught_up) => {
                backoff.reset();
                if last_logged.take().is_some() {
                    tracing::info!(peer = %config.url, "peer reachable");
                }
                update(&|st| {
                    st.connected = true;
                    st.last_error = None;
                    if caught_up {
                        st.last_caught_up_ms = Some(now_ms());
                    }
                });
            }
            Err(CallError::Stale) => session = None,
            Err(CallError::Itself) => {
                tracing::info!(peer = %config.url, "this URL is this box's own; not pulled");
                update(&|st| {
                    st.node = Some(config.node_id.clone());
                    st.last_error = Some("this box itself: not pulled".into());
                });
                return;
            }
            Err(e) => {
                let message = e.to_string();
                if matches!(e, CallError::Refused { .. } | CallError::Foreign(_)) {
                    update(&|st| st.refused += 1);
                }
                if matches!(e, CallError::Foreign(_)) {
                    store.refused("foreign_answer");
                }
                // Every failure starts with a new hello: a fresh nonce, and the peer's node id
                // again (its database may have been replaced).
                session = None;
                update(&|st| {
                    st.connected = !matches!(e, CallError::Transport(_));
                    st.last_error = Some(message.clone());
                });
                if last_logged.as_deref() != Some(message.as_str()) {
                    match &e {
                        CallError::Refused { .. } | CallError::Foreign(_) => {
                            tracing::error!(peer = %config.url, error = %message, "peer sync refused; check [peers] key and event on both boxes")
                        }
                        _ => {
                            tracing::warn!(peer = %config.url, error = %message, "peer sync call failed; retrying with backoff")
                        }
                    }
                    last_logged = Some(message);
                }
                tokio::time::sleep(backoff.next_wait()).await;
            }
        }
    }
}

/// Says hello: the peer's node and event (checked against ours) and a nonce.
async fn hello<S: PeerStore>(
    store: &S,
    config: &PeerConfig,
    http: &reqwest::Client,
) -> Result<Session, CallError> {
    let response = http
        .get(format!("{}{HELLO_PATH}", config.url))
        .header(VERSION_HEADER, PROTOCOL_VERSION.to_string())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| CallError::Transport(crate::error_chain(&e)))?;
    let body = read_body(response).await?;
    let hello: Hello =
        serde_json::from_slice(&body.1).map_err(|e| CallError::Decode(format!("hello: {e}")))?;
    if hello.event != config.event {
        return Err(CallError::Foreign(format!(
            "the peer serves event `{}`, this box `{}`; only appliances of one event sync",
            hello.event, config.event
        )));
    }
    if hello.node == config.node_id {
        return Err(CallError::Itself);
    }
    if config.revoked.contains(&hello.node) {
        return Err(CallError::Foreign(format!(
            "the peer is node `{}`, which [peers] revoked lists; nothing is pulled from it",
            hello.node
        )));
    }
    let cursor = store
        .peer_cursor(&hello.node)
        .await
        .map_err(|e| CallError::Store(e.to_string()))?;
    Ok(Session {
        node: hello.node,
        nonce: hello.nonce,
        count: 0,
        cursor,
    })
}

/// One signed pull and its application; whether the peer's head was reached.
async fn pull<S: PeerStore>(
    store: &S,
    config: &PeerConfig,
    http: &reqwest::Client,
    session: &mut Session,
    update: &impl Fn(&dyn Fn(&mut PeerStatus)),
) -> Result<bool, CallError> {
    session.count += 1;
    let path = format!(
        "{OPS_PATH}?after={}&limit={MAX_PULL_LIMIT}&wait={}",
        session.cursor,
        config.wait.as_secs()
    );
    let request = SignedRequest {
        nonce: &session.nonce,
        count: session.count,
        node: &config.node_id,
        event: &config.event,
        path_and_query: &path,
    };
    let response = http
        .get(format!("{}{path}", config.url))
        .header(VERSION_HEADER, PROTOCOL_VERSION.to_string())
        .header(NODE_HEADER, &config.node_id)
        .header(EVENT_HEADER, &config.event)
        .header(NONCE_HEADER, &session.nonce)
        .header(COUNT_HEADER, session.count.to_string())
        .header(AUTH_HEADER, config.key.request_mac(&request))
        .timeout(config.wait + Duration::from_secs(15))
        .send()
        .await
        .map_err(|e| CallError::Transport(crate::error_chain(&e)))?;
    let (headers, body) = read_body(response).await?;
    // Nothing of an answer is used before its MAC checks: a box without the key (or a
    // man in the middle) feeds nothing.
    let signed = headers
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|mac| {
            config
                .key
                .verify_answer(&session.nonce, session.count, &session.node, &body, mac)
        });
    if !signed {
        return Err(CallError::Foreign(format!(
            "the answer of `{}` is not signed with this venue's key; nothing of it was applied",
            session.node
        )));
    }
    let answer: PullResponse =
        serde_json::from_slice(&body).map_err(|e| CallError::Decode(format!("pull: {e}")))?;
    if answer.head < session.cursor {
        // The peer's log is shorter than what was pulled from it: its database was restored
        // or replaced under the same node id. Pull all of it again; known ops are skipped.
        tracing::warn!(peer = %config.url, node = %session.node, head = answer.head, cursor = session.cursor, "peer's log went back; pulling it again from the start");
        session.cursor = 0;
        return Ok(false);
    }
    let cursor = answer.cursor.max(session.cursor);
    let applied = store
        .apply_from_peer(&session.node, answer.ops, cursor)
        .await
        .map_err(|e| CallError::Store(e.to_string()))?;
    session.cursor = cursor;
    let caught_up = !answer.has_more;
    let head = answer.head;
    update(&|st| {
        st.last_contact_ms = Some(now_ms());
        st.cursor = cursor;
        st.head = head;
        st.lag_ops = head.saturating_sub(cursor);
        st.applied_ops += applied.applied;
        st.duplicate_ops += applied.duplicates;
        st.parked_ops += applied.parked;
    });
    Ok(caught_up)
}

/// The answer's headers and body (bounded), or the peer's error.
async fn read_body(
    response: reqwest::Response,
) -> Result<(reqwest::header::HeaderMap, Vec<u8>), CallError> {
    let status = response.status();
    let headers = response.headers().clone();
    let mut response = response;
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| CallError::Transport(crate::error_chain(&e)))?
    {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(CallError::Decode(format!(
                "answer larger than {MAX_ANSWER_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) => (e.error.code, e.error.message),
            Err(_) => (
                String::new(),
                String::from_utf8_lossy(&body).chars().take(200).collect(),
            ),
        };
        return Err(match status.as_u16() {
            401 if code == super::STALE_CODE => CallError::Stale,
            401 | 403 => CallError::Refused {
                status: status.as_u16(),
                code,
                message,
            },
            s => CallError::Transport(format!("{s} {code}: {message}")),
        });
    }
    Ok((headers, body))
}
