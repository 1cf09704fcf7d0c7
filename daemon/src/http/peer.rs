//! `GET /peer/v1/hello` and `GET /peer/v1/ops`: this box's op log for the venue's other
//! appliances (`docs/protocol/sync.md`, "Between appliances"). Answered only when `[peers]` has
//! a venue key; a caller proves it holds the key with an HMAC over a nonce from the hello, and
//! every answer carries one over its body, so a box without the key neither reads nor feeds.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{OriginalUri, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sync_agent::peer::{
    ANSWER_TARGET_BYTES, AUTH_HEADER, COUNT_HEADER, EVENT_HEADER, Hello, NODE_HEADER, NONCE_HEADER,
    NonceError, STALE_CODE, SignedRequest,
};
use sync_agent::wire::{MAX_PULL_LIMIT, MAX_WAIT_SECS, PROTOCOL_VERSION, PullResponse};

use super::AppState;
use super::error::ApiError;
use crate::oplog;
use crate::peers::PeerServer;

fn server(state: &AppState) -> Result<&PeerServer, ApiError> {
    state.peers.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "peer_sync_off",
            "this appliance has no venue key ([peers] key_file), so it syncs with no peer",
        )
    })
}

/// `GET /peer/v1/hello`: who this box is, and a nonce to sign requests with.
pub(super) async fn hello(State(state): State<AppState>) -> Result<Json<Hello>, ApiError> {
    let server = server(&state)?;
    Ok(Json(Hello {
        node: state.store.node_id().to_string(),
        event: state.event_id().to_string(),
        nonce: server.nonces.issue(),
        protocol: PROTOCOL_VERSION,
    }))
}

#[derive(Deserialize)]
pub(super) struct OpsQuery {
    #[serde(default)]
    after: u64,
    limit: Option<u32>,
    #[serde(default)]
    wait: u64,
}

/// `GET /peer/v1/ops?after=SEQ&limit=N&wait=SECS`: ops of this box's log after `after`
/// (whoever made them, but the caller), long-polled.
pub(super) async fn ops(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    query: Result<Query<OpsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let server = server(&state)?;
    let refuse = |status, code: &'static str, message: String| {
        state.metrics.peers.refuse(code);
        tracing::warn!(code, %message, "peer request refused");
        ApiError::new(status, code, message)
    };
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let (node, event, nonce, mac) = (
        text(NODE_HEADER),
        text(EVENT_HEADER),
        text(NONCE_HEADER),
        text(AUTH_HEADER),
    );
    let count: Option<u64> = text(COUNT_HEADER).parse().ok();
    let (Some(count), false, false) = (count, node.is_empty(), mac.is_empty()) else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "no_credential",
            format!(
                "a peer request needs the {NODE_HEADER}, {EVENT_HEADER}, {NONCE_HEADER}, {COUNT_HEADER} and {AUTH_HEADER} headers; get a nonce from /peer/v1/hello"
            ),
        ));
    };
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("");
    let request = SignedRequest {
        nonce,
        count,
        node,
        event,
        path_and_query,
    };
    if !server.key.verify_request(&request, mac) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "bad_credential",
            "the request is not signed with this venue's key; give every appliance of the venue the same [peers] key".into(),
        ));
    }
    if event != state.event_id() {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "foreign_event",
            format!(
                "this appliance serves event `{}`, the caller `{}`; only appliances of one event sync",
                state.event_id(),
                event.chars().take(64).collect::<String>()
            ),
        ));
    }
    if server.revoked.iter().any(|r| r == node) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "revoked",
            format!("node `{node}` is in [peers] revoked on this appliance"),
        ));
    }
    match server.nonces.redeem(nonce, count) {
        Ok(()) => {}
        // Not a refusal: nonces expire, and a restart forgets them.
        Err(NonceError::Stale) => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                STALE_CODE,
                NonceError::Stale.to_string(),
            ));
        }
        Err(e @ NonceError::Replayed { .. }) => {
            return Err(refuse(StatusCode::FORBIDDEN, "replayed", e.to_string()));
        }
    }
    let Query(q) = query.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("{e}; use ?after=SEQ&limit=1..{MAX_PULL_LIMIT}&wait=0..{MAX_WAIT_SECS}"),
        )
    })?;
    let limit = q.limit.unwrap_or(MAX_PULL_LIMIT).clamp(1, MAX_PULL_LIMIT);
    // Under the request time limit, which would cut the answer.
    let most = state.config.http.request_timeout_secs.saturating_sub(5);
    let wait = Duration::from_secs(q.wait.min(MAX_WAIT_SECS).min(most));
    let serve = || {
        let caller = node.to_string();
        state.store.read(move |conn| {
            oplog::peers::serve(conn, &caller, q.after, limit, ANSWER_TARGET_BYTES)
                .map_err(crate::domain::DomainError::from)
        })
    };
    let mut served = serve().await?;
    // Nothing after `after` at all: wait for a commit. Subscribed before looking again, so a
    // commit between the two reads is not missed.
    if served.cursor == q.after && !wait.is_zero() {
        let mut stream = state.store.subscribe("peer_long_poll");
        served = serve().await?;
        if served.cursor == q.after {
            let mut stop = server.stop.clone();
            tokio::select! {
                _ = tokio::time::timeout(wait, stream.next()) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
            served = serve().await?;
        }
    }
    state.metrics.peers.served.inc_by(served.ops.len() as u64);
    let body = serde_json::to_vec(&PullResponse {
        ops: served.ops,
        cursor: served.cursor,
        has_more: served.has_more,
        head: served.head,
    })
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let own = state.store.node_id();
    let answer_mac = server.key.answer_mac(nonce, count, own, &body);
    let mut response = Response::new(Body::from(body));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for (name, value) in [(NODE_HEADER, own), (AUTH_HEADER, answer_mac.as_str())] {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    }
    Ok(response.into_response())
}
