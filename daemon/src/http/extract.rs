//! Extractors whose rejections use the API's error body: JSON bodies, and the credentials of
//! admins and devices.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use base64::Engine;
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;
use crate::domain::devices::DeviceKind;

/// A JSON body; malformed, ill-typed, oversized or mistyped bodies get the API's error body.
pub(crate) struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    let text = rejection.body_text();
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            status,
            "payload_too_large",
            "request body is larger than this endpoint accepts",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            status,
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`",
        ),
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::invalid(text),
        _ => ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", text),
    }
}

/// Maps a body-read failure (most often the size limit) to the API's error body.
pub(super) fn body_rejection(rejection: axum::extract::rejection::BytesRejection) -> ApiError {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            status,
            "payload_too_large",
            "request body is larger than this endpoint accepts",
        )
    } else {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_body", rejection.body_text())
    }
}

/// The peer's address (unspecified when the app runs without connection info, as in-process).
fn peer(parts: &Parts) -> IpAddr {
    let extensions = &parts.extensions;
    extensions
        .get::<ConnectInfo<super::listener::Peer>>()
        .map(|c| c.0.0.ip())
        .or_else(|| {
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip())
        })
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// The connection a request came on (none when the app runs in-process).
fn connection(parts: &Parts) -> Option<std::sync::Arc<super::listener::Conn>> {
    parts
        .extensions
        .get::<ConnectInfo<super::listener::Peer>>()
        .map(|c| c.0.1.clone())
}

/// Marks the request's connection as authenticated (see [`super::listener::Conn::prove`]).
fn prove(parts: &Parts) {
    if let Some(conn) = connection(parts) {
        conn.prove();
    }
}

/// The peer's address, for handlers that authenticate in their own way (attendee tokens), and
/// the connection to [`Source::prove`] once they have.
pub(crate) struct Source(
    pub IpAddr,
    pub Option<std::sync::Arc<super::listener::Conn>>,
);

impl Source {
    /// The request passed authentication: its connection is no longer unproven.
    pub(crate) fn prove(&self) {
        if let Some(conn) = &self.1 {
            conn.prove();
        }
    }
}

impl FromRequestParts<AppState> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Source(peer(parts), connection(parts)))
    }
}

/// Refuses a source over its failed-authentication budget, before any credential work.
pub(crate) fn check_budget(state: &AppState, source: IpAddr) -> Result<(), ApiError> {
    state
        .auth
        .failures
        .check(source)
        .map_err(ApiError::too_many_attempts)
}

pub(crate) fn failed(state: &AppState, source: IpAddr) {
    state.metrics.auth_failures.inc();
    state.auth.failures.failed(source);
}

/// Proof that the request carries the admin bearer token.
pub(super) struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let source = peer(parts);
        check_budget(state, source)?;
        let token = authorization(parts).and_then(|v| v.strip_prefix("Bearer "));
        match token {
            Some(t) if state.auth.is_admin(t) => {
                prove(parts);
                Ok(Admin)
            }
            Some(_) => {
                failed(state, source);
                tracing::warn!(path = %parts.uri.path(), "admin request with a wrong token");
                Err(ApiError::unauthorized("Bearer", "wrong admin token"))
            }
            None => {
                failed(state, source);
                Err(ApiError::unauthorized(
                    "Bearer",
                    "admin endpoints need `Authorization: Bearer <token>`; the token is in the \
                     file `admin-token` in the data directory",
                ))
            }
        }
    }
}

/// An authenticated device (HTTP Basic: device id and password).
pub(super) struct Device {
    /// The device id.
    pub id: String,
    /// Its kind.
    pub kind: DeviceKind,
}

impl FromRequestParts<AppState> for Device {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let source = peer(parts);
        check_budget(state, source)?;
        let Some((id, password)) = basic_credentials(parts) else {
            failed(state, source);
            return Err(ApiError::unauthorized(
                "Basic",
                "device endpoints need HTTP Basic credentials: the device id and its password",
            ));
        };
        match state.auth.device(&state.store, &id, &password).await {
            Ok(kind) => {
                prove(parts);
                Ok(Device { id, kind })
            }
            Err(e) => {
                failed(state, source);
                tracing::warn!(device = %id.chars().take(64).collect::<String>(), "device authentication failed");
                Err(e.into())
            }
        }
    }
}

/// The device a request authenticates as, or `None` for the admin token (`Bearer`), whichever
/// it sends: what the endpoints that serve both a device and venue IT share.
async fn device_or_admin(parts: &mut Parts, state: &AppState) -> Result<Option<Device>, ApiError> {
    if authorization(parts).is_some_and(|v| v.starts_with("Bearer ")) {
        return Admin::from_request_parts(parts, state).await.map(|_| None);
    }
    Device::from_request_parts(parts, state).await.map(Some)
}

/// A kiosk, or an admin acting for one (lookups).
pub(super) enum KioskOrAdmin {
    /// A kiosk device, by id.
    Kiosk(String),
    /// The admin token.
    Admin,
}

impl FromRequestParts<AppState> for KioskOrAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match device_or_admin(parts, state).await? {
            None => Ok(Self::Admin),
            Some(device) => require_kiosk(&device).map(|()| Self::Kiosk(device.id)),
        }
    }
}

/// The signage display a request is for: its own device (kind `signage`, id = the display), or
/// the admin token (any display). Another device gets 403: a display reads only its own view.
pub(super) enum SignageOrAdmin {
    /// The display's device.
    Display(String),
    /// The admin token.
    Admin,
}

impl FromRequestParts<AppState> for SignageOrAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match device_or_admin(parts, state).await? {
            None => Ok(Self::Admin),
            Some(device) => require_kind(&device, DeviceKind::Signage, "signage displays")
                .map(|()| Self::Display(device.id)),
        }
    }
}

/// Refuses devices other than kiosks.
pub(super) fn require_kiosk(device: &Device) -> Result<(), ApiError> {
    require_kind(device, DeviceKind::Kiosk, "kiosks")
}

/// Refuses devices other than `kind` (`plural` names them in the 403).
fn require_kind(device: &Device, kind: DeviceKind, plural: &str) -> Result<(), ApiError> {
    if device.kind == kind {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "device `{}` is a {}; only {plural} may do this",
                device.id,
                device.kind.as_str()
            ),
        ))
    }
}

fn authorization(parts: &Parts) -> Option<&str> {
    parts.headers.get(header::AUTHORIZATION)?.to_str().ok()
}

fn basic_credentials(parts: &Parts) -> Option<(String, String)> {
    let encoded = authorization(parts)?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, password) = text.split_once(':')?;
    // Bounded before any lookup or hashing work is spent on them.
    if id.is_empty() || id.len() > 64 || password.len() > 256 {
        return None;
    }
    Some((id.to_string(), password.to_string()))
}
