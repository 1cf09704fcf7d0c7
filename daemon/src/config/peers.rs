//! `[peers]`: the other appliances of the venue, synced with directly on the LAN.

use serde::{Deserialize, Serialize};

use super::{ConfigProblem, check_range, invalid};

/// Default time a pull waits at a peer for new ops, seconds.
pub const DEFAULT_PEER_PULL_WAIT_SECS: u64 = 25;

/// `[peers]`: peer sync. Off until a venue key is set: every appliance of the venue gets the
/// same key, and pulls from every other one listed in `urls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeersConfig {
    /// The venue key: at least 32 random characters, the same on every appliance of the venue.
    /// Prefer `key_file`, or `VENUED_PEERS_KEY` from a credentials file. Default empty (off).
    pub key: String,
    /// A file holding the venue key. Read at start.
    pub key_file: String,
    /// The other appliances' HTTP base URLs, comma-separated (e.g.
    /// `http://10.0.0.12:8080,http://10.0.0.13:8080`). This box's own may be listed too (one
    /// list for every box); it is recognised and skipped.
    pub urls: String,
    /// Node ids refused even with the key (a box taken out of service; rotate the key when one
    /// is lost), comma-separated.
    pub revoked: String,
    /// Find the venue's other boxes on the LAN by mDNS (`_venue-sync._tcp`, needs `[mdns]`
    /// on), besides `urls`. Default on.
    pub discover: bool,
    /// Seconds a pull waits at a peer for new ops. Default 25.
    pub pull_wait_secs: u64,
}

impl Default for PeersConfig {
    fn default() -> Self {
        Self {
            key: String::new(),
            key_file: String::new(),
            urls: String::new(),
            revoked: String::new(),
            discover: true,
            pull_wait_secs: DEFAULT_PEER_PULL_WAIT_SECS,
        }
    }
}

/// The non-empty entries of a comma-separated list.
fn entries(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

impl PeersConfig {
    /// Whether peer sync is on.
    pub fn enabled(&self) -> bool {
        !self.key.is_empty() || !self.key_file.is_empty()
    }

    /// The peers' base URLs, without a trailing `/`.
    pub fn url_list(&self) -> Vec<String> {
        entries(&self.urls)
            .into_iter()
            .map(|u| u.trim_end_matches('/').to_string())
            .collect()
    }

    /// The revoked node ids.
    pub fn revoked_nodes(&self) -> Vec<String> {
        entries(&self.revoked)
            .into_iter()
            .map(String::from)
            .collect()
    }
}

/// Checks `[peers]`.
pub(super) fn validate(peers: &PeersConfig, problems: &mut Vec<ConfigProblem>) {
    if !peers.key.is_empty() {
        if let Err(e) = sync_agent::peer::VenueKey::new(&peers.key) {
            invalid(problems, "peers.key", e.to_string());
        }
    }
    if !peers.enabled() && !peers.urls.trim().is_empty() {
        invalid(
            problems,
            "peers.urls",
            "peers are listed but there is no venue key: set `peers.key_file` (or `VENUED_PEERS_KEY`) to the key every appliance of the venue shares".into(),
        );
    }
    for url in entries(&peers.urls) {
        let ok = (url.starts_with("http://") || url.starts_with("https://"))
            && url.len() <= 200
            && !url.contains(char::is_whitespace);
        if !ok {
            invalid(
                problems,
                "peers.urls",
                format!("`{url}` is not an http(s) base URL; write e.g. \"http://10.0.0.12:8080\""),
            );
        }
    }
    for node in entries(&peers.revoked) {
        if node.len() > 128 {
            invalid(
                problems,
                "peers.revoked",
                "a node id is at most 128 characters; copy it from the peer's /api/v1/status"
                    .into(),
            );
        }
    }
    check_range(
        problems,
        "peers.pull_wait_secs",
        peers.pull_wait_secs,
        0,
        30,
    );
}
