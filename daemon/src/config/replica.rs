//! `[replica]`: Litestream-compatible replication of the database to S3.

use serde::{Deserialize, Serialize};

use super::{ConfigProblem, check_range, invalid};

/// Default time between WAL syncs to the bucket, milliseconds.
pub const DEFAULT_SYNC_INTERVAL_MS: u64 = 1000;
/// Default time between snapshots, seconds (a day).
pub const DEFAULT_SNAPSHOT_INTERVAL_SECS: u64 = 86_400;
/// Default time snapshots are kept, seconds (a day).
pub const DEFAULT_SNAPSHOT_RETENTION_SECS: u64 = 86_400;
/// Default WAL size, in pages, that triggers a checkpoint.
pub const DEFAULT_CHECKPOINT_PAGES: u64 = 1000;
/// Default cap on staged files awaiting upload, bytes (256 MiB).
pub const DEFAULT_MAX_STAGED_BYTES: u64 = 256 * 1024 * 1024;

/// `[replica]`: Litestream-compatible replication of the database to S3. Off by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicaConfig {
    /// Replicate. Default false.
    pub enabled: bool,
    /// Bucket.
    pub bucket: String,
    /// Key prefix inside the bucket (no leading or trailing slash), e.g. `venues/hall-a`.
    pub path: String,
    /// Endpoint of an S3-compatible store; AWS when empty.
    pub endpoint: String,
    /// Region; `us-east-1` when empty and an endpoint is set.
    pub region: String,
    /// Path-style addressing (needed by most S3-compatible stores). Default true.
    pub force_path_style: bool,
    /// Access key; empty = the AWS credential chain (environment, profile, instance role).
    pub access_key_id: String,
    /// Secret for `access_key_id`.
    pub secret_access_key: String,
    /// Milliseconds between syncs (one TXID each when something committed). Default 1000.
    pub sync_interval_ms: u64,
    /// Seconds between level-9 snapshots. Default 86400 (24 h).
    pub snapshot_interval_secs: u64,
    /// Seconds snapshots are kept (the newest always is). Default 86400.
    pub snapshot_retention_secs: u64,
    /// WAL pages that trigger a checkpoint (after staging). Default 1000.
    pub checkpoint_pages: u64,
    /// Staged bytes kept while the bucket is unreachable; past it, increments are dropped and a
    /// full copy follows. Default 256 MiB.
    pub max_staged_bytes: u64,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            bucket: String::new(),
            path: String::new(),
            endpoint: String::new(),
            region: String::new(),
            force_path_style: true,
            access_key_id: String::new(),
            secret_access_key: String::new(),
            sync_interval_ms: DEFAULT_SYNC_INTERVAL_MS,
            snapshot_interval_secs: DEFAULT_SNAPSHOT_INTERVAL_SECS,
            snapshot_retention_secs: DEFAULT_SNAPSHOT_RETENTION_SECS,
            checkpoint_pages: DEFAULT_CHECKPOINT_PAGES,
            max_staged_bytes: DEFAULT_MAX_STAGED_BYTES,
        }
    }
}

/// Checks `[replica]` (only when it is enabled).
pub(super) fn validate(replica: &ReplicaConfig, problems: &mut Vec<ConfigProblem>) {
    if replica.enabled {
        if replica.bucket.is_empty() || replica.path.trim_matches('/').is_empty() {
            invalid(
                problems,
                "replica.bucket",
                "replication needs `replica.bucket` and `replica.path` (e.g. \"venues/hall-a\")"
                    .into(),
            );
        }
        check_range(
            problems,
            "replica.sync_interval_ms",
            replica.sync_interval_ms,
            100,
            3_600_000,
        );
        check_range(
            problems,
            "replica.snapshot_interval_secs",
            replica.snapshot_interval_secs,
            1,
            30 * 86_400,
        );
        check_range(
            problems,
            "replica.checkpoint_pages",
            replica.checkpoint_pages,
            100,
            1_000_000,
        );
        check_range(
            problems,
            "replica.max_staged_bytes",
            replica.max_staged_bytes,
            1024 * 1024,
            1 << 40,
        );
    }
}
