//! `[http]`: the HTTP API listener and its limits.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{ConfigProblem, check_range, invalid};

/// Default HTTP listen address: every interface, so phones and kiosks on the venue LAN reach it.
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:8080";
/// Default cap on an ordinary request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Default cap on an attendee import body (JSON or CSV).
pub const DEFAULT_MAX_IMPORT_BYTES: usize = 16 * 1024 * 1024;
/// Default time a request may take before the server answers 408.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 30;
/// Default time SIGTERM waits for in-flight requests before the daemon stops anyway.
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 8;

/// `[http]`: the HTTP API listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Address and port to listen on. Default `0.0.0.0:8080`.
    pub listen: String,
    /// Largest accepted request body in bytes, except imports. Default 64 KiB.
    pub max_body_bytes: usize,
    /// Largest accepted attendee import body in bytes. Default 16 MiB.
    pub max_import_bytes: usize,
    /// Seconds a request may take before it is answered with 408. Default 30.
    pub request_timeout_secs: u64,
    /// Seconds SIGTERM waits for in-flight requests to finish. Default 8 (systemd's stop timeout
    /// is longer, so the daemon always exits on its own).
    pub shutdown_timeout_secs: u64,
    /// Most open HTTP/WebSocket connections; past it new ones are closed at once (logged and
    /// counted). Default 0: the open-file limit less 512 descriptors for everything else.
    pub max_connections: usize,
    /// SHA-256 (64 hex digits) of the admin token, when the token is provisioned from outside
    /// (the appliance image's provisioning file) instead of generated at first start. Set, it
    /// replaces the stored hash at every start and no token file is written. Default empty.
    pub admin_token_sha256: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_HTTP_LISTEN.into(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_import_bytes: DEFAULT_MAX_IMPORT_BYTES,
            request_timeout_secs: DEFAULT_REQUEST_TIMEOUT_SECS,
            shutdown_timeout_secs: DEFAULT_SHUTDOWN_TIMEOUT_SECS,
            max_connections: 0,
            admin_token_sha256: String::new(),
        }
    }
}

/// Checks `[http]`; the parsed listen address.
pub(super) fn validate(http: &HttpConfig, problems: &mut Vec<ConfigProblem>) -> SocketAddr {
    let http_listen = http.listen.parse::<SocketAddr>().unwrap_or_else(|_| {
        invalid(
            problems,
            "http.listen",
            format!(
                "`{}` is not an address and port; write e.g. \"0.0.0.0:8080\" or \"[::]:8080\"",
                http.listen
            ),
        );
        SocketAddr::from(([0, 0, 0, 0], 8080))
    });
    check_range(
        problems,
        "http.max_body_bytes",
        http.max_body_bytes,
        1024,
        64 * 1024 * 1024,
    );
    check_range(
        problems,
        "http.max_import_bytes",
        http.max_import_bytes,
        1024,
        1024 * 1024 * 1024,
    );
    check_range(
        problems,
        "http.request_timeout_secs",
        http.request_timeout_secs,
        1,
        3600,
    );
    check_range(
        problems,
        "http.shutdown_timeout_secs",
        http.shutdown_timeout_secs,
        1,
        60,
    );
    let hash = &http.admin_token_sha256;
    if !hash.is_empty() && (hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit())) {
        invalid(
            problems,
            "http.admin_token_sha256",
            "must be the token's SHA-256 as 64 hex digits, e.g. the output of \
             `printf %s \"$TOKEN\" | sha256sum`; leave it empty to have a token generated"
                .to_string(),
        );
    }
    http_listen
}
