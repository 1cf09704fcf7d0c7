//! The pages people open: the attendee app at `/`, the check-in desk at `/kiosk`, a room's
//! display at `/signage/{display}`, venue IT's console at `/console`, their files under `/assets/`, the service worker at `/sw.js`.
//!
//! Everything is embedded ([`crate::assets`]). Each answer carries a strong ETag (a repeat load costs a
//! 304), gzip when the browser accepts it, and the security headers of a page that holds
//! attendee tokens: a Content-Security-Policy that allows nothing inline and no other origin
//! (the venue may have no internet, and an injected script must not run), no referrer (a
//! `?token=` link must not leak), no framing.

use axum::Router;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use crate::assets::{self, Asset};

/// The policy of every page and asset. `connect-src 'self'` covers the WebSocket and the event
/// stream of the same host and port.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; manifest-src 'self'; \
     worker-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// A versioned asset URL (`?v=<etag>`) never changes content: a year, immutable.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// The page and unversioned URLs: always revalidated (a 304 while unchanged).
const REVALIDATE: &str = "no-cache";

/// The routes of the pages.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(app))
        .route("/kiosk", get(kiosk))
        .route("/console", get(console))
        .route("/signage/{display}", get(signage))
        .route("/sw.js", get(service_worker))
        .route("/assets/{name}", get(asset))
}

/// `GET /`: the attendee app.
async fn app(headers: HeaderMap) -> Response {
    serve(assets::index(), &headers, REVALIDATE)
}

/// `GET /kiosk`: the check-in desk.
async fn kiosk(headers: HeaderMap) -> Response {
    serve(assets::kiosk(), &headers, REVALIDATE)
}

/// `GET /console`: venue IT's console (it holds nothing until the admin token is given).
async fn console(headers: HeaderMap) -> Response {
    serve(assets::console(), &headers, REVALIDATE)
}

/// `GET /signage/{display}`: a room's display. Its MQTT link goes to the broker's WebSocket
/// listener, another port of this host, which `connect-src` then names (that port only).
async fn signage(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: HeaderMap,
) -> Response {
    let mut response = serve(assets::signage(), &headers, REVALIDATE);
    let host = super::signage::request_host(&headers).map(|(host, _)| host);
    if let (Some(host), Some(ws), Some(_)) = (host, state.mqtt_bound.ws, &state.mqtt) {
        let policy = CONTENT_SECURITY_POLICY.replace(
            "connect-src 'self'",
            &format!("connect-src 'self' ws://{host}:{}", ws.port()),
        );
        if let Ok(v) = HeaderValue::from_str(&policy) {
            response
                .headers_mut()
                .insert(header::CONTENT_SECURITY_POLICY, v);
        }
    }
    response
}

/// `GET /sw.js`: the service worker that keeps the app's shell for dead spots. From the root,
/// so its scope is the whole app; always revalidated, as browsers expect of a worker script.
async fn service_worker(headers: HeaderMap) -> Response {
    serve(assets::service_worker(), &headers, REVALIDATE)
}

#[derive(Deserialize)]
struct Version {
    v: Option<String>,
}

/// `GET /assets/{name}`.
async fn asset(
    Path(name): Path<String>,
    Query(version): Query<Version>,
    headers: HeaderMap,
) -> Response {
    let Some(asset) = assets::get(&name) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no asset `{}`", name.chars().take(64).collect::<String>()),
        )
        .into_response();
    };
    // An old page may ask for an old version: it gets today's file, revalidated, not cached.
    let cache = match version.v.as_deref() == Some(asset.etag.as_str()) {
        true => IMMUTABLE,
        false => REVALIDATE,
    };
    serve(asset, &headers, cache)
}

fn serve(asset: &'static Asset, request: &HeaderMap, cache: &'static str) -> Response {
    let etag = format!("\"{}\"", asset.etag);
    let mut response = match not_modified(request, &etag) {
        true => StatusCode::NOT_MODIFIED.into_response(),
        false => match (accepts_gzip(request), &asset.gzip) {
            (true, Some(gz)) => {
                let mut r = gz.as_slice().into_response();
                r.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                r
            }
            _ => asset.raw.as_slice().into_response(),
        },
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.media_type),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// Whether `If-None-Match` names this ETag (or `*`).
fn not_modified(request: &HeaderMap, etag: &str) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

/// Whether `Accept-Encoding` allows gzip (and does not refuse it with `q=0`).
fn accepts_gzip(request: &HeaderMap) -> bool {
    request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                k.clone(),
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")),
            );
        }
        h
    }

    #[test]
    fn gzip_is_used_only_when_accepted() {
        assert!(accepts_gzip(&headers(&[(
            header::ACCEPT_ENCODING,
            "gzip, deflate, br"
        )])));
        assert!(accepts_gzip(&headers(&[(
            header::ACCEPT_ENCODING,
            "br;q=1.0, gzip;q=0.8"
        )])));
        assert!(!accepts_gzip(&headers(&[(
            header::ACCEPT_ENCODING,
            "gzip;q=0, br"
        )])));
        assert!(!accepts_gzip(&headers(&[(
            header::ACCEPT_ENCODING,
            "identity"
        )])));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn if_none_match_is_compared_as_a_list() {
        let h = headers(&[(header::IF_NONE_MATCH, "\"old\", W/\"abc\"")]);
        assert!(not_modified(&h, "\"abc\""));
        assert!(!not_modified(&h, "\"def\""));
        assert!(not_modified(
            &headers(&[(header::IF_NONE_MATCH, "*")]),
            "\"x\""
        ));
    }
}
