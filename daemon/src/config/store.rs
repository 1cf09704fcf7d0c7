//! `[store]`: the SQLite store's writer, readers and retention.

use serde::{Deserialize, Serialize};

use super::{ConfigProblem, check_range, invalid};

/// Default number of read-only SQLite connections.
pub const DEFAULT_STORE_READERS: usize = 4;
/// Default cap on writes committed in one transaction (one fsync).
pub const DEFAULT_MAX_GROUP_WRITES: usize = 512;
/// Default depth of the writer's queue; callers wait (backpressure) when it is full.
pub const DEFAULT_WRITE_QUEUE_DEPTH: usize = 8192;
/// Default time an idempotency key is remembered (at least the 24 h DESIGN §3 asks for).
pub const DEFAULT_IDEMPOTENCY_RETENTION_HOURS: u64 = 48;

/// `[store]`: the SQLite store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreConfig {
    /// Read-only connections for queries. Default 4.
    pub readers: usize,
    /// Most writes committed in one transaction. Default 512.
    pub max_group_writes: usize,
    /// Writes that may wait for the writer before callers are held back. Default 8192.
    pub write_queue_depth: usize,
    /// Hours an idempotency key is remembered. Default 48 (at least 24).
    pub idempotency_retention_hours: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            readers: DEFAULT_STORE_READERS,
            max_group_writes: DEFAULT_MAX_GROUP_WRITES,
            write_queue_depth: DEFAULT_WRITE_QUEUE_DEPTH,
            idempotency_retention_hours: DEFAULT_IDEMPOTENCY_RETENTION_HOURS,
        }
    }
}

/// Checks `[store]`.
pub(super) fn validate(store: &StoreConfig, problems: &mut Vec<ConfigProblem>) {
    check_range(problems, "store.readers", store.readers, 1, 64);
    check_range(
        problems,
        "store.max_group_writes",
        store.max_group_writes,
        1,
        65_536,
    );
    check_range(
        problems,
        "store.write_queue_depth",
        store.write_queue_depth,
        1,
        1_000_000,
    );
    if store.idempotency_retention_hours < 24 {
        invalid(
            problems,
            "store.idempotency_retention_hours",
            format!(
                "{} is below 24; retried requests must be recognised for at least a day",
                store.idempotency_retention_hours
            ),
        );
    }
}
