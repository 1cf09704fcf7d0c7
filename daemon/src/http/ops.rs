//! Operational endpoints: liveness, readiness, metrics, status.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use crate::health::SubsystemState;
use crate::oplog::outbox;

/// How long `/readyz` waits for the store's writer before calling it failed.
const READY_STORE_TIMEOUT_SECS: u64 = 2;
/// Free space on the data directory's file system below which the store is reported degraded:
/// writes still work, but venue IT should make room before they stop.
const LOW_FREE_SPACE_BYTES: u64 = 256 * 1024 * 1024;

/// `GET /healthz`: the process answers.
pub(super) async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when the store takes a real write and no subsystem has failed; else 503
/// naming what failed. Low free space shows as `store` degraded, still ready.
pub(super) async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let mut checks = serde_json::Map::new();
    let mut failing = Vec::new();
    let ping = tokio::time::timeout(
        Duration::from_secs(READY_STORE_TIMEOUT_SECS),
        state.store.ping(),
    )
    .await;
    let store = match ping {
        Ok(Ok(())) => match state.store.free_bytes() {
            Ok(free) if free < LOW_FREE_SPACE_BYTES => SubsystemState::Degraded(format!(
                "only {} MiB free on the data directory's file system; writes stop when it is full: make room",
                free / (1024 * 1024)
            )),
            _ => SubsystemState::Ok,
        },
        Ok(Err(e)) => SubsystemState::Failed(format!("store not writable: {e}")),
        Err(_) => SubsystemState::Failed(format!(
            "store writer did not answer within {READY_STORE_TIMEOUT_SECS} s"
        )),
    };
    let mut all = state.subsystems.snapshot();
    all.insert("store", store);
    for (name, s) in all {
        if matches!(s, SubsystemState::Failed(_)) {
            failing.push(name);
        }
        checks.insert(name.into(), serde_json::to_value(&s).unwrap_or_default());
    }
    let status = if failing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "ready": failing.is_empty(), "failing": failing, "checks": checks })),
    )
}

/// `GET /metrics`: Prometheus text.
pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Ok(backlog) = outbox::backlog(&state.store).await {
        state.metrics.outbox_backlog.set(backlog.ops as i64);
        state
            .metrics
            .sync
            .oldest_unsent_age
            .set(backlog.oldest_unsent_age_secs.unwrap_or(0) as i64);
    }
    if let Some(agent) = &state.sync {
        state.metrics.sync.observe(&agent.status());
    }
    if let Some(replica) = &state.replica {
        state.metrics.replica.observe(&replica.status());
    }
    for peer in state.peer_list.statuses() {
        state.metrics.peers.observe(&peer);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

/// `GET /api/v1/status`: what this appliance is and how it is doing.
pub(super) async fn status(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(status_of(&state).await?))
}

/// The body of `GET /api/v1/status` (the console's overview carries it too).
pub(super) async fn status_of(state: &AppState) -> Result<serde_json::Value, ApiError> {
    let backlog = outbox::backlog(&state.store).await?;
    Ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "node_id": state.store.node_id(),
        "event_id": state.event_id(),
        "schema_version": crate::store::SCHEMA_VERSION,
        "uptime_secs": state.started.elapsed().as_secs(),
        "outbox": backlog,
        "subsystems": state.subsystems.snapshot(),
        "mqtt": state.mqtt_bound,
        "hub": {"epoch": state.hub.epoch(), "long_polls_waiting": state.hub.long_polls_waiting()},
        "print": {
            "printers": state.print.health.snapshot(),
            "jobs": crate::domain::print_jobs::counts(&state.store).await.unwrap_or_default()
                .into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        },
        "replica": match &state.replica {
            Some(r) => json!({"enabled": true, "state": r.status()}),
            None => json!({"enabled": false}),
        },
        "sync": match &state.sync {
            Some(agent) => json!({"enabled": true, "agent": agent.status()}),
            None => json!({"enabled": false}),
        },
        "peers": peers_status(state),
        "system": *state.system,
    }))
}

/// Peer sync as `/api/v1/status` shows it: each listed peer with its lag in ops and in seconds
/// (since this box was last level with it).
fn peers_status(state: &AppState) -> serde_json::Value {
    if state.peers.is_none() {
        return json!({"enabled": false});
    }
    let now = crate::store::now_ms();
    let peers: Vec<serde_json::Value> = state
        .peer_list
        .statuses()
        .into_iter()
        .map(|s| {
            let lag_secs = s.last_caught_up_ms.map(|t| now.saturating_sub(t) / 1000);
            let mut v = serde_json::to_value(&s).unwrap_or_default();
            v["lag_secs"] = json!(lag_secs);
            v["last_contact"] = json!(s.last_contact_ms.map(|t| crate::domain::rfc3339(t as i64)));
            v
        })
        .collect();
    json!({"enabled": true, "peers": peers})
}

/// `GET /api/v1/zones/occupancy`: badges present per zone. Anonymous counts, so open like the
/// status endpoint.
pub(super) async fn occupancy(State(state): State<AppState>) -> impl IntoResponse {
    let occupancy = state.occupancy.get();
    Json(json!({
        "zones": occupancy.zones,
        "tracked": occupancy.tracked,
        "updated_at": (occupancy.updated_ms > 0).then(|| crate::domain::rfc3339(occupancy.updated_ms as i64)),
    }))
}

/// Any unknown path.
pub(super) async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; docs/http-api.md lists them",
    )
}
