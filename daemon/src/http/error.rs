//! The API's error body, `{"error": {"code", "message"}}`, and the mapping from domain errors.
//!
//! Client mistakes say what was wrong and how to fix it. Internal failures are logged with their
//! cause and answered with a generic message, so no internals leak to the network.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::AuthError;
use crate::domain::{Code, DomainError};
use crate::store::StoreError;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    challenge: Option<&'static str>,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    /// An error with this status, machine-readable code and human message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            challenge: None,
            retry_after_secs: None,
        }
    }

    /// 401 with a `WWW-Authenticate` challenge for `scheme` (`Bearer` or `Basic`).
    pub fn unauthorized(scheme: &'static str, message: impl Into<String>) -> Self {
        Self {
            challenge: Some(scheme),
            ..Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
        }
    }

    /// 429 for a source over its failed-authentication budget.
    pub fn too_many_attempts(retry_after: std::time::Duration) -> Self {
        Self {
            retry_after_secs: Some(retry_after.as_secs().max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                "too many failed authentications from this address; wait before retrying",
            )
        }
    }

    /// The same error with another human message.
    pub fn with_message(self, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            ..self
        }
    }

    /// 422 for content that is well-formed but wrong.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(scheme) = self.challenge {
            let value = format!("{scheme} realm=\"venued\"");
            if let Ok(v) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        response
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let code = e.code();
        match code {
            Code::Internal => tracing::error!(error = %e, "request failed with an internal error"),
            Code::Unavailable => {
                tracing::error!(error = %e, "write refused: the store could not commit")
            }
            _ => {}
        }
        let status =
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self {
            retry_after_secs: code.retry_after_secs(),
            ..Self::new(status, code.as_str(), e.public_message())
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        DomainError::Store(e).into()
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Denied => Self::unauthorized("Basic", "missing or wrong device credentials"),
            AuthError::Domain(d) => d.into(),
        }
    }
}
