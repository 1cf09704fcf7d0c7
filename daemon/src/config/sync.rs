//! `[sync]`: the relay this appliance syncs through.

use serde::{Deserialize, Serialize};

use super::{ConfigProblem, check_range, invalid};

/// Default time a pull waits at the relay for new ops, seconds.
pub const DEFAULT_PULL_WAIT_SECS: u64 = 25;
/// Default time between reports when there is nothing to push, seconds.
pub const DEFAULT_HEARTBEAT_SECS: u64 = 30;

/// `[sync]`: the relay this appliance syncs through. Off until `relay_url` is set: the venue works
/// without it, and sync starts as soon as it is configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncConfig {
    /// The relay's base URL, e.g. `https://relay.example.com`. Default empty (no sync).
    pub relay_url: String,
    /// The appliance token `venue-relay appliance add` printed. Prefer `token_file`, or
    /// `VENUED_SYNC_TOKEN` from a credentials file, over writing it here.
    pub token: String,
    /// A file holding the token (e.g. on the provisioning partition). Read at start.
    pub token_file: String,
    /// Seconds a pull waits at the relay for new ops. Default 25.
    pub pull_wait_secs: u64,
    /// Seconds between reports to the relay when there is nothing to push. Default 30.
    pub heartbeat_secs: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            relay_url: String::new(),
            token: String::new(),
            token_file: String::new(),
            pull_wait_secs: DEFAULT_PULL_WAIT_SECS,
            heartbeat_secs: DEFAULT_HEARTBEAT_SECS,
        }
    }
}

/// Checks `[sync]`.
pub(super) fn validate(sync: &SyncConfig, problems: &mut Vec<ConfigProblem>) {
    if sync.relay_url.is_empty() {
        return;
    }
    if !(sync.relay_url.starts_with("https://") || sync.relay_url.starts_with("http://")) {
        invalid(
            problems,
            "sync.relay_url",
            format!(
                "`{}` is not an http(s) URL; write e.g. \"https://relay.example.com\", or \"\" to turn sync off",
                sync.relay_url
            ),
        );
    }
    if sync.token.is_empty() && sync.token_file.is_empty() {
        invalid(
            problems,
            "sync.token",
            "sync needs the appliance's token: set `sync.token_file` (or `VENUED_SYNC_TOKEN`) to what `venue-relay appliance add` printed".into(),
        );
    }
    check_range(problems, "sync.pull_wait_secs", sync.pull_wait_secs, 0, 30);
    check_range(
        problems,
        "sync.heartbeat_secs",
        sync.heartbeat_secs,
        1,
        3600,
    );
}
