//! What a signage display asks over HTTP: its view on (re)load (`GET /api/v1/signage/{display}`)
//! and the attendee app's address as a QR code (`GET /api/v1/app-qr.svg`). Live changes reach
//! the display over MQTT over WebSocket, with its own credentials (docs/protocol/mqtt-topics.md).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::extract::SignageOrAdmin;
use crate::domain::signage;
use crate::mqtt::topics::Tree;

/// `GET /api/v1/signage/{display}`: the display's content, room, sessions and latest
/// announcements, the app's address, and where its MQTT link is (docs/http-api.md).
pub(super) async fn view(
    State(state): State<AppState>,
    who: SignageOrAdmin,
    Path(display): Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    if !crate::config::is_valid_id(&display) {
        return Err(ApiError::invalid(
            "a display id is 1-64 characters of a-z, A-Z, 0-9, `-`, `_` or `.`",
        ));
    }
    if let SignageOrAdmin::Display(own) = &who {
        if *own != display {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("device `{own}` may read only its own display, /api/v1/signage/{own}"),
            ));
        }
    }
    let tree = Tree::new(&state.config.mqtt.topic_root, state.event_id());
    let topic = tree.topic(&format!("signage/{display}/content"));
    let mut view = signage::view(&state.store, state.event_id(), &display, topic).await?;
    view["app_url"] = json!(app_url(&state, &headers));
    view["mqtt"] = match (&state.mqtt, state.mqtt_bound.ws) {
        (Some(_), Some(ws)) => json!({"ws_port": ws.port(), "topic_prefix": tree.prefix()}),
        _ => json!(null),
    };
    Ok(Json(view))
}

/// `GET /api/v1/app-qr.svg`: the attendee app's address as a QR code, for the displays (the
/// address is no secret: anyone on the venue WiFi may open it).
pub(super) async fn app_qr(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match crate::qr::svg(&app_url(&state, &headers)) {
        Some(svg) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("image/svg+xml"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            svg,
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the app's address does not fit a QR code",
        )
        .into_response(),
    }
}

/// The host and port a request reached, from `Host`, if it is a plain host name or address.
pub(super) fn request_host(headers: &HeaderMap) -> Option<(&str, Option<u16>)> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let plain = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !plain || host.is_empty() || host.len() > 255 {
        return None;
    }
    // `[::1]:8080`, `host:8080`, `host`.
    match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && !port.contains(']') => {
            Some((name, Some(port.parse().ok()?)))
        }
        _ => Some((host, None)),
    }
}

/// The attendee app's address: by the name the appliance advertises (`<hostname>.local`, on
/// the port this request came in on) when mDNS is on, else as this request reached it.
pub(super) fn app_url(state: &AppState, headers: &HeaderMap) -> String {
    let (host, port) = request_host(headers).unwrap_or(("localhost", None));
    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
    if state.config.mdns.enabled {
        format!("http://{}.local{port}/", state.config.mdns.hostname)
    } else {
        format!("http://{host}{port}/")
    }
}
