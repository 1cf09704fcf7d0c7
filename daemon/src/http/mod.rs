//! The HTTP API (axum): health and metrics, kiosk endpoints, admin endpoints.
//!
//! [`router`] builds the whole app from an [`AppState`], so tests can drive it in-process as well
//! as through a real listener. Every route has a body size limit and a timeout; nothing but
//! health, readiness, metrics and status answers without credentials.

mod admin;
mod attendee;
mod console;
pub mod error;
pub(crate) mod extract;
pub mod hub_fallbacks;
mod kiosk;
pub mod listener;
mod ops;
pub mod pages;
mod peer;
mod print;
mod signage;
pub mod ws;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};

use crate::auth::Authenticator;
use crate::config::Config;
use crate::health::Subsystems;
use crate::metrics::{HttpLabels, Metrics};
use crate::store::Store;

/// Everything a request handler may touch.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// Metrics.
    pub metrics: Metrics,
    /// Credential checks.
    pub auth: Arc<Authenticator>,
    /// The running configuration.
    pub config: Arc<Config>,
    /// Subsystem states.
    pub subsystems: Subsystems,
    /// When the daemon started.
    pub started: Instant,
    /// Anonymous zone occupancy from BLE presence.
    pub occupancy: crate::presence::OccupancyView,
    /// Beacon health (last seen, battery) from BLE presence.
    pub beacon_health: crate::presence::HealthView,
    /// Each BLE scanner's traffic, from BLE presence.
    pub scanners: crate::presence::ScannerView,
    /// Publishing into the embedded MQTT broker, when it runs.
    pub mqtt: Option<crate::mqtt::MqttHandle>,
    /// Where MQTT listens.
    pub mqtt_bound: crate::mqtt::Bound,
    /// The attendee hub.
    pub hub: crate::hub::Hub,
    /// The sync agent, when `[sync]` names a relay.
    pub sync: Option<sync_agent::agent::AgentHandle>,
    /// Peer sync's serving side, when `[peers]` has a venue key.
    pub peers: Option<Arc<crate::peers::PeerServer>>,
    /// Peer sync's pull loops, one per listed or found peer.
    pub peer_list: crate::peers::PeerList,
    /// The S3 replica, when `[replica]` is enabled.
    pub replica: Option<crate::replica::Replica>,
    /// Badge printing: the queue's signal and printer health.
    pub print: crate::print::Printing,
    /// What the appliance image says about this system (slot, image version, a refused
    /// provisioning file).
    pub system: Arc<crate::appliance::SystemInfo>,
}

impl AppState {
    /// The event this appliance serves.
    pub fn event_id(&self) -> &str {
        &self.config.event.id
    }
}

/// The whole HTTP app.
pub fn router(state: AppState) -> Router {
    let http = &state.config.http;
    let import_limit = DefaultBodyLimit::max(http.max_import_bytes);
    let api = Router::new()
        .route("/api/v1/status", get(ops::status))
        .route("/api/v1/checkins", post(kiosk::check_in))
        .route("/api/v1/attendees", get(kiosk::lookup))
        .route("/api/v1/zones/occupancy", get(ops::occupancy))
        .route("/api/v1/beacons/health", get(admin::beacon_health))
        .route(
            "/api/v1/attendees/{id}/location-history",
            delete(admin::forget_location_history),
        )
        .route(
            "/api/v1/admin/attendees/import",
            post(admin::import_attendees).layer(import_limit),
        )
        .route(
            "/api/v1/admin/devices",
            get(admin::list_devices).post(admin::create_device),
        )
        .route("/api/v1/admin/devices/{id}", delete(admin::revoke_device))
        .route(
            "/api/v1/admin/devices/{id}/password",
            post(admin::reset_device_password),
        )
        .route(
            "/api/v1/admin/devices/{id}/print",
            axum::routing::put(print::set_mode),
        )
        .route(
            "/api/v1/admin/printers",
            get(print::list).post(print::create),
        )
        .route("/api/v1/admin/printers/discover", get(print::discover))
        .route(
            "/api/v1/admin/printers/{id}",
            get(print::get_one).put(print::put).delete(print::remove),
        )
        .route("/api/v1/print/jobs", get(print::jobs).post(print::reprint))
        .route("/api/v1/print/jobs/{id}", get(print::job))
        .route("/api/v1/admin/conflicts", get(admin::conflicts))
        .route("/api/v1/admin/sync/parked", get(admin::sync_parked))
        .route("/api/v1/admin/sync/retry", post(admin::sync_retry))
        .route("/api/v1/admin/token-keys", post(admin::install_token_key))
        .route("/api/v1/admin/tokens", post(admin::mint_token))
        .route("/api/v1/attendee/session", post(attendee::sign_in))
        .route("/api/v1/schedule", get(attendee::schedule))
        .route("/api/v1/me", get(attendee::me))
        .route("/api/v1/people", get(attendee::people))
        .route("/api/v1/me/conversations", get(attendee::conversations))
        .route("/api/v1/signage/{display}", get(signage::view))
        .route("/api/v1/admin/overview", get(console::overview))
        .route(
            "/api/v1/admin/overview/stream",
            get(console::overview_stream),
        )
        .route("/api/v1/admin/announcements", post(console::announce))
        .route("/api/v1/app-qr.svg", get(signage::app_qr))
        .route(
            "/api/v1/me/privacy",
            axum::routing::put(attendee::set_privacy),
        )
        .route(
            "/api/v1/me/location-history",
            delete(attendee::forget_location_history),
        )
        .route("/ws", get(ws::upgrade))
        .route("/api/v1/stream", get(hub_fallbacks::stream))
        .route("/api/v1/poll", get(hub_fallbacks::long_poll))
        .route(
            "/api/v1/channels/{channel}/messages",
            get(hub_fallbacks::poll).post(hub_fallbacks::post),
        )
        .route(
            "/api/v1/admin/signage/{display}/content",
            get(admin::get_signage)
                .put(admin::put_signage)
                .delete(admin::delete_signage),
        )
        .route(
            "/api/v1/admin/{collection}",
            get(admin::list).post(admin::upsert),
        )
        .route(
            "/api/v1/admin/{collection}/{id}",
            get(admin::get_one)
                .put(admin::put_one)
                .delete(admin::delete_one),
        )
        .route(sync_agent::peer::HELLO_PATH, get(peer::hello))
        .route(sync_agent::peer::OPS_PATH, get(peer::ops))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .merge(pages::routes())
        .fallback(ops::not_found);
    api.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        count_requests,
    ))
    .layer(DefaultBodyLimit::max(http.max_body_bytes))
    .layer(axum::middleware::from_fn_with_state(
        state.clone(),
        time_limit,
    ))
    .layer(axum::middleware::from_fn(in_flight))
    .layer(axum::middleware::from_fn(no_password_prompt_for_scripts))
    .with_state(state)
}

/// Drops the `WWW-Authenticate: Basic` challenge from a 401 answering a page's script (a
/// `fetch` sends `Sec-Fetch-Mode` other than `navigate`): browsers answer that challenge with
/// their own password dialog, over the kiosk page that asked with credentials it holds. Devices,
/// `curl` and navigations still get the challenge.
async fn no_password_prompt_for_scripts(request: Request, next: Next) -> Response {
    let from_script = request
        .headers()
        .get("sec-fetch-mode")
        .is_some_and(|mode| mode.as_bytes() != b"navigate");
    let mut response = next.run(request).await;
    if from_script
        && response.status() == axum::http::StatusCode::UNAUTHORIZED
        && response
            .headers()
            .get(axum::http::header::WWW_AUTHENTICATE)
            .is_some_and(|v| v.as_bytes().starts_with(b"Basic"))
    {
        response
            .headers_mut()
            .remove(axum::http::header::WWW_AUTHENTICATE);
    }
    response
}

/// Marks the request in flight on its connection (`listener::Conn`) until its response is
/// ready: an unauthenticated connection is never timed out or evicted mid-request.
async fn in_flight(request: Request, next: Next) -> Response {
    let guard = request
        .extensions()
        .get::<axum::extract::ConnectInfo<listener::Peer>>()
        .map(|peer| peer.0.1.request());
    let response = next.run(request).await;
    drop(guard);
    response
}

/// Answers 408 in the API's error shape when a request (its body included) is not done within
/// `http.request_timeout_secs`. Streams (WebSocket, SSE) are past this once their headers are out.
async fn time_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let secs = state.config.http.request_timeout_secs;
    match tokio::time::timeout(Duration::from_secs(secs), next.run(request)).await {
        Ok(response) => response,
        Err(_) => error::ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request was not complete within {secs} s (a body sent too slowly?); send it again, with the same idempotency key"
            ),
        )
        .into_response(),
    }
}

/// Counts every request by matched route (never the raw path, so cardinality stays bounded).
async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().as_str().to_string();
    let response = next.run(request).await.into_response();
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            route,
            method,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
