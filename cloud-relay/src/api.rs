//! The relay's HTTP API: the sync API for appliances (`/v1/ops`, `/v1/keys`), the operator API
//! (`/v1/admin/…`), `/metrics` and `/healthz`. `docs/protocol/sync.md` documents every route.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde::Deserialize;
use sync_agent::codec::{self, CodecError, Encoding};
use sync_agent::wire::{
    self, ErrorBody, ErrorDetail, KeysResponse, MAX_BATCH_BYTES, MAX_BATCH_OPS, MAX_PULL_LIMIT,
    MAX_WAIT_SECS, PROTOCOL_VERSION, PushRequest, VERSION_HEADER,
};

use crate::auth::{FailureLimiter, failure_limiter, hash_token};
use crate::metrics::Metrics;
use crate::store::{Appliance, NodeBinding, Principal, RelayStore, StoreError};

/// Long-polls one appliance may hold open at once.
const MAX_POLLS_PER_APPLIANCE: u32 = 4;
/// Most rows an operator listing returns.
const MAX_LISTING: u32 = 1000;

/// Shared by every handler.
pub struct AppState<S> {
    store: S,
    metrics: Arc<Metrics>,
    failures: FailureLimiter,
    polls: Mutex<HashMap<String, u32>>,
}

/// An error answer: a status and `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "relay storage failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "the relay's storage failed; retry later",
        )
    }
}

impl From<CodecError> for ApiError {
    fn from(e: CodecError) -> Self {
        let (status, code) = match e {
            CodecError::Unsupported(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_encoding")
            }
            CodecError::Corrupt { .. } => (StatusCode::BAD_REQUEST, "corrupt_body"),
            CodecError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large"),
        };
        Self::new(status, code, e.to_string())
    }
}

/// The whole app.
pub fn router<S: RelayStore>(store: S, metrics: Arc<Metrics>) -> Router {
    let state = Arc::new(AppState {
        store,
        metrics,
        failures: failure_limiter(10),
        polls: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/v1/ops", get(pull::<S>).post(push::<S>))
        .route("/v1/keys", get(keys::<S>))
        .route("/v1/admin/appliances", get(appliances::<S>))
        .route("/v1/admin/appliances/{id}", delete(revoke::<S>))
        .route("/v1/admin/parked", get(parked::<S>))
        .route("/v1/admin/conflicts", get(conflicts::<S>))
        .route("/v1/admin/log", get(log::<S>))
        .route("/metrics", get(metrics_text::<S>))
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; docs/protocol/sync.md lists them",
            )
        })
        .layer(
            tower_http::compression::CompressionLayer::new()
                .zstd(true)
                .gzip(true)
                .no_br()
                .no_deflate(),
        )
        .with_state(state)
}

async fn principal<S: RelayStore>(
    state: &AppState<S>,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Principal, ApiError> {
    let ip = peer.ip();
    if state.failures.check(ip).is_err() {
        state.metrics.auth_failures.inc();
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_failures",
            "too many failed authentications from this address; wait a minute",
        ));
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = token.filter(|t| !t.is_empty() && t.len() <= 256) else {
        state.failures.failed(ip);
        state.metrics.auth_failures.inc();
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send `Authorization: Bearer <token>`; `venue-relay appliance add` prints an appliance's token",
        ));
    };
    match state.store.authenticate(hash_token(token)).await? {
        Some(p) => Ok(p),
        None => {
            state.failures.failed(ip);
            state.metrics.auth_failures.inc();
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "unknown or revoked token; ask the relay operator for a new one",
            ))
        }
    }
}

async fn appliance<S: RelayStore>(
    state: &AppState<S>,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Appliance, ApiError> {
    if let Some(v) = headers.get(VERSION_HEADER) {
        let supported = v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok())
            .is_some_and(|v| v == PROTOCOL_VERSION);
        if !supported {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_version",
                format!("this relay speaks sync protocol {PROTOCOL_VERSION}; upgrade the relay"),
            ));
        }
    }
    match principal(state, headers, peer).await? {
        Principal::Appliance(a) => Ok(a),
        Principal::Operator { .. } => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_an_appliance",
            "operator tokens cannot sync; use an appliance token",
        )),
    }
}

async fn operator<S: RelayStore>(
    state: &AppState<S>,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Option<String>, ApiError> {
    match principal(state, headers, peer).await? {
        Principal::Operator { org } => Ok(org),
        Principal::Appliance(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_an_operator",
            "appliance tokens cannot use the operator API; `venue-relay operator add` makes an operator token",
        )),
    }
}

/// `POST /v1/ops`: a batch of ops; all of it is stored or none of it.
async fn push<S: RelayStore>(
    State(state): State<Arc<AppState<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let appliance = appliance(&state, &headers, peer).await?;
    let result = push_batch(&state, appliance, &headers, body).await;
    let status = match &result {
        Ok(_) => "200".to_string(),
        Err(e) => e.status.as_u16().to_string(),
    };
    state.metrics.push(&status, started.elapsed());
    result.map(|r| Json(r).into_response())
}

async fn push_batch<S: RelayStore>(
    state: &AppState<S>,
    appliance: Appliance,
    headers: &HeaderMap,
    body: Body,
) -> Result<wire::PushResponse, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("a push body may be at most {MAX_BATCH_BYTES} bytes; send fewer ops"),
        )
    };
    let raw = axum::body::to_bytes(body, MAX_BATCH_BYTES)
        .await
        .map_err(|_| too_large())?;
    let encoding = Encoding::from_header(
        headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok()),
    )?;
    let json = codec::decode(&raw, encoding, MAX_BATCH_BYTES)?;
    let request: PushRequest = serde_json::from_slice(&json).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_batch",
            format!("the batch is not a valid push body: {e}"),
        )
    })?;
    if request.ops.len() > MAX_BATCH_OPS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!(
                "{} ops in one push; the limit is {MAX_BATCH_OPS}",
                request.ops.len()
            ),
        ));
    }
    // Scope before anything is stored: one foreign op refuses the whole batch.
    if let Some(op) = request
        .ops
        .iter()
        .find(|op| !appliance.events.contains(&op.scope))
    {
        state.metrics.scope_refusals.inc();
        tracing::warn!(appliance = %appliance.id, org = %appliance.org, scope = %op.scope.chars().take(64).collect::<String>(), "push outside the appliance's events refused");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "scope_forbidden",
            format!(
                "op {} is for event `{}`, but this appliance may sync only {:?}; nothing was stored",
                op.id,
                op.scope.chars().take(64).collect::<String>(),
                appliance.events
            ),
        ));
    }
    // The binding refuses a token that claims another appliance's node; ops of other nodes are
    // still welcome, as carried ones (the log records the carrier).
    bind_node(state, &appliance, &request).await?;
    let now = crate::store::now_ms();
    let mut good = Vec::with_capacity(request.ops.len());
    let mut rejected = Vec::new();
    for op in request.ops {
        let checked = wire::check_envelope(&op)
            .and_then(|()| wire::check_origin(&op))
            .and_then(|()| wire::check_clock(&op, now));
        match checked {
            Ok(()) => good.push(op),
            Err(r) => {
                state.metrics.refused_op(&r.code);
                rejected.push((op, r));
            }
        }
    }
    let id = appliance.id.clone();
    let response = state
        .store
        .push(appliance, good, rejected, request.report)
        .await?;
    state.metrics.ops(&response);
    tracing::debug!(appliance = %id, accepted = response.accepted.len(), duplicates = response.duplicates.len(), rejected = response.rejected.len(), "push");
    if !response.rejected.is_empty() {
        tracing::warn!(appliance = %id, rejected = response.rejected.len(), "ops refused and parked");
    }
    Ok(response)
}

/// The node the pushing appliance is bound to: the bound one, or (on its first push) the node
/// its report names, else its first op's origin. `None` only for a push with nothing to bind.
async fn bind_node<S: RelayStore>(
    state: &AppState<S>,
    appliance: &Appliance,
    request: &PushRequest,
) -> Result<Option<String>, ApiError> {
    if let Some(node) = &appliance.node {
        return Ok(Some(node.clone()));
    }
    let claimed = request
        .report
        .as_ref()
        .map(|r| r.node_id.clone())
        .filter(|n| !n.is_empty())
        .or_else(|| request.ops.first().map(|op| op.origin.clone()));
    let Some(claimed) = claimed.filter(|n| !n.is_empty() && n.len() <= 128) else {
        return Ok(None);
    };
    match state
        .store
        .bind_node(appliance.id.clone(), claimed.clone())
        .await?
    {
        NodeBinding::Bound(node) => {
            if node == claimed {
                tracing::info!(appliance = %appliance.id, %node, "appliance bound to its node id");
            }
            Ok(Some(node))
        }
        NodeBinding::Taken => {
            state.metrics.refused_op("node_taken");
            tracing::warn!(appliance = %appliance.id, node = %claimed, "push claims a node id bound to another appliance; refused");
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "node_taken",
                format!(
                    "node `{claimed}` belongs to another appliance; each appliance database needs its own token (`venue-relay appliance add`); nothing was stored"
                ),
            ))
        }
    }
}

#[derive(Deserialize)]
struct PullQuery {
    #[serde(default)]
    after: u64,
    limit: Option<u32>,
    #[serde(default)]
    wait: u64,
}

/// `GET /v1/ops?after=&limit=&wait=`: long-poll pull.
async fn pull<S: RelayStore>(
    State(state): State<Arc<AppState<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<PullQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let appliance = appliance(&state, &headers, peer).await?;
    let Query(q) = query.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("{e}; use ?after=CURSOR&limit=1..{MAX_PULL_LIMIT}&wait=0..{MAX_WAIT_SECS}"),
        )
    })?;
    let limit = q.limit.unwrap_or(MAX_PULL_LIMIT);
    if !(1..=MAX_PULL_LIMIT).contains(&limit) || q.wait > MAX_WAIT_SECS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("limit must be 1-{MAX_PULL_LIMIT} and wait 0-{MAX_WAIT_SECS} seconds"),
        ));
    }
    state.metrics.pulls.inc();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait);
    let _slot = match q.wait {
        0 => None,
        _ => Some(PollSlot::take(&state, &appliance.id)?),
    };
    loop {
        // Subscribe before reading, so a push between the read and the wait still wakes us.
        let mut changes = state.store.changes();
        changes.borrow_and_update();
        let response = state.store.pull(appliance.clone(), q.after, limit).await?;
        if !response.ops.is_empty() || tokio::time::Instant::now() >= deadline {
            state.metrics.pulled.inc_by(response.ops.len() as u64);
            return Ok(Json(response).into_response());
        }
        let woke = tokio::time::timeout_at(deadline, changes.changed()).await;
        if woke.is_err() {
            state.metrics.pulled.inc_by(response.ops.len() as u64);
            return Ok(Json(response).into_response());
        }
    }
}

/// One of an appliance's long-poll slots, given back on drop (also when the client goes away).
struct PollSlot<'a, S> {
    state: &'a AppState<S>,
    id: String,
}

impl<'a, S> PollSlot<'a, S> {
    fn take(state: &'a AppState<S>, id: &str) -> Result<Self, ApiError> {
        let mut polls = state
            .polls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = polls.entry(id.to_string()).or_default();
        if *n >= MAX_POLLS_PER_APPLIANCE {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_polls",
                format!("at most {MAX_POLLS_PER_APPLIANCE} long-polls per appliance at once"),
            ));
        }
        *n += 1;
        state.metrics.polls_waiting.inc();
        Ok(Self {
            state,
            id: id.to_string(),
        })
    }
}

impl<S> Drop for PollSlot<'_, S> {
    fn drop(&mut self) {
        let mut polls = self
            .state
            .polls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = polls.get_mut(&self.id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                polls.remove(&self.id);
            }
        }
        self.state.metrics.polls_waiting.dec();
    }
}

/// `GET /v1/keys`: attendee-token keys of the appliance's events.
async fn keys<S: RelayStore>(
    State(state): State<Arc<AppState<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<KeysResponse>, ApiError> {
    let appliance = appliance(&state, &headers, peer).await?;
    Ok(Json(KeysResponse {
        keys: state.store.keys(appliance.events).await?,
    }))
}

#[derive(Deserialize)]
struct Listing {
    limit: Option<u32>,
}

/// `GET /v1/admin/appliances`: the operator's org's appliances.
async fn appliances<S: RelayStore>(
    State(state): State<Arc<AppState<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let org = operator(&state, &headers, peer).await?;
    let items = state.store.list_appliances(org).await?;
    Ok(Json(serde_json::json!({ "appliances": items })).into_response())
}

/// `DELETE /v1/admin/appliances/{id}`: revoke.
async fn revoke<S: RelayStore>(
    State(state): State<Arc<AppState<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let org = operator(&state, &headers, peer).await?;
    match state.store.revoke_appliance(id.clone(), org).await? {
        true => {
            tracing::info!(appliance = %id, "appliance revoked");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        false => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_such_appliance",
            format!("no appliance `{id}` in your org"),
        )),
    }
}

/// `GET /v1/admin/parked`: ops the relay refused.
async fn parked<S: RelayStore>(
    State(state): State<Arc<AppState<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<Listing>,
) -> Result<Response, ApiError> {
    let org = operator(&state, &headers, peer).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_LISTING);
    let items = state.store.parked(org, limit).await?;
    Ok(Json(serde_json::json!({ "parked": items })).into_response())
}

#[derive(Deserialize)]
struct LogQuery {
    #[serde(default)]
    after: u64,
    limit: Option<u32>,
}

/// `GET /v1/admin/log?after=&limit=`: the log, oldest first, each op with its origin and the
/// appliance that carried it upstream.
async fn log<S: RelayStore>(
    State(state): State<Arc<AppState<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let org = operator(&state, &headers, peer).await?;
    let Query(q) = query.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("{e}; use ?after=SEQ&limit=1..{MAX_LISTING}"),
        )
    })?;
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_LISTING);
    let entries = state.store.log(org, q.after, limit).await?;
    Ok(Json(serde_json::json!({ "log": entries })).into_response())
}

/// `GET /v1/admin/conflicts`: conflicts appliances resolved and reported.
async fn conflicts<S: RelayStore>(
    State(state): State<Arc<AppState<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<Listing>,
) -> Result<Response, ApiError> {
    let org = operator(&state, &headers, peer).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_LISTING);
    let items = state.store.conflicts(org, limit).await?;
    Ok(Json(serde_json::json!({ "conflicts": items })).into_response())
}

/// `GET /metrics`: Prometheus text.
async fn metrics_text<S: RelayStore>(State(state): State<Arc<AppState<S>>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
