//! Storage behind one trait, with two backends: SQLite (one instance, the default) and PostgreSQL
//! (several stateless instances; `LISTEN/NOTIFY` wakes long-polls on every instance). Both pass
//! the same conformance suite (`tests/conformance.rs`).
//!
//! The log's sequence is global and gap-tolerant; the one property every backend must keep is
//! that **a reader never sees seq N committed while a smaller seq is still to come**, or a pull
//! could move its cursor past an op. SQLite has one writer; PostgreSQL allocates seqs under a row
//! lock held to commit.

pub mod migrations;
pub mod postgres;
pub mod sqlite;

use std::future::Future;

use serde::Serialize;
use sync_agent::wire::{
    ConflictReport, Op, PullResponse, PushResponse, Rejection, Report, TokenKey,
};
use tokio::sync::watch;

/// An authenticated appliance.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Appliance {
    /// Relay-assigned id, e.g. `ap-3f2a…`.
    pub id: String,
    /// The organisation (tenant) it belongs to.
    pub org: String,
    /// The events it may push and pull.
    pub events: Vec<String>,
    /// A name for operators.
    pub name: String,
    /// The node id of the appliance's database, bound on its first push (`None` before). Ops it
    /// pushes must name this node as origin: a token cannot pass its writes off as another
    /// appliance's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// What [`RelayStore::bind_node`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeBinding {
    /// The appliance is bound to this node (now, or since an earlier push).
    Bound(String),
    /// Another appliance is bound to the node asked for.
    Taken,
}

/// Who a bearer token belongs to.
#[derive(Clone, Debug, PartialEq)]
pub enum Principal {
    /// An appliance: the sync API.
    Appliance(Appliance),
    /// An operator: the operator API, for one org or (None) all of them.
    Operator {
        /// The org it may see; `None` for the relay's own operators.
        org: Option<String>,
    },
}

/// An appliance as operators see it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ApplianceInfo {
    /// Identity and scope.
    #[serde(flatten)]
    pub appliance: Appliance,
    /// When it was added (ms since the epoch).
    pub created_ms: u64,
    /// When its token was revoked.
    pub revoked_ms: Option<u64>,
    /// Its last authenticated call.
    pub last_seen_ms: Option<u64>,
    /// Its last report (version, backlog, lag, parked).
    pub report: Option<Report>,
}

/// An op the relay refused, kept for operators.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ParkedOp {
    /// Who pushed it.
    pub appliance: String,
    /// The org.
    pub org: String,
    /// The op's own scope, as sent.
    pub event: String,
    /// Why.
    pub rejection: Rejection,
    /// The op as received.
    pub op: serde_json::Value,
    /// When.
    pub parked_ms: u64,
}

/// One op of the log as operators see it: whose it is and who brought it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LogEntry {
    /// The relay's sequence.
    pub seq: u64,
    /// The op id.
    pub op_id: String,
    /// Its event.
    pub event: String,
    /// Its kind.
    pub kind: String,
    /// The node that made it.
    pub origin: String,
    /// The appliance that pushed it first (the only push that stored it).
    pub carrier: String,
    /// That appliance's bound node; differs from `origin` for an op carried from a peer.
    pub carrier_node: Option<String>,
    /// When the relay stored it.
    pub received_ms: u64,
}

impl LogEntry {
    /// Builds an entry from a log row; `op` is the stored op JSON.
    pub(crate) fn from_row(
        seq: i64,
        op_id: String,
        event: String,
        carrier: String,
        carrier_node: Option<String>,
        op: &str,
        received_ms: i64,
    ) -> Self {
        let op: serde_json::Value = serde_json::from_str(op).unwrap_or_default();
        let text = |k: &str| op[k].as_str().unwrap_or_default().to_string();
        Self {
            seq: seq as u64,
            op_id,
            event,
            kind: text("kind"),
            origin: text("origin"),
            carrier,
            carrier_node,
            received_ms: received_ms as u64,
        }
    }
}

/// A conflict an appliance reported.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConflictRecord {
    /// The appliance that resolved it.
    pub appliance: String,
    /// The org.
    pub org: String,
    /// What it reported.
    #[serde(flatten)]
    pub conflict: ConflictReport,
}

/// A new appliance record (the token is already hashed).
#[derive(Clone, Debug)]
pub struct NewAppliance {
    /// Identity and scope.
    pub appliance: Appliance,
    /// SHA-256 of the bearer token, hex.
    pub token_hash: String,
}

/// Storage failures. They are the relay's fault, never the caller's: the API answers 503.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed.
    #[error("postgres: {0}")]
    Postgres(String),
    /// A stored value does not parse (hand-edited database?).
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// The database URL is not one we know.
    #[error("{0}")]
    Config(String),
    /// The database was written by a newer relay.
    #[error(
        "the relay database's schema version {found} is newer than this venue-relay supports ({supported}); run the newer release, or restore a backup made by this one"
    )]
    NewerSchema {
        /// The version the database records.
        found: u32,
        /// The newest this build knows.
        supported: u32,
    },
}

/// What every backend offers. Every write is durable (committed) when its future resolves.
pub trait RelayStore: Send + Sync + 'static {
    /// Adds an appliance.
    fn add_appliance(
        &self,
        new: NewAppliance,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Appliances, of one org or all.
    fn list_appliances(
        &self,
        org: Option<String>,
    ) -> impl Future<Output = Result<Vec<ApplianceInfo>, StoreError>> + Send;

    /// Revokes an appliance's token (limited to `org` when given); `false` when there is no such
    /// appliance (in that org).
    fn revoke_appliance(
        &self,
        id: String,
        org: Option<String>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Adds an operator token for one org or all.
    fn add_operator(
        &self,
        org: Option<String>,
        token_hash: String,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Whose token hashes to `token_hash` (revoked appliances are nobody).
    fn authenticate(
        &self,
        token_hash: String,
    ) -> impl Future<Output = Result<Option<Principal>, StoreError>> + Send;

    /// Binds appliance `id` to `node` unless it is bound already (then the earlier node stands);
    /// [`NodeBinding::Taken`] when another appliance holds `node`.
    fn bind_node(
        &self,
        id: String,
        node: String,
    ) -> impl Future<Output = Result<NodeBinding, StoreError>> + Send;

    /// Stores `ops` (deduplicated by op id), parks `rejected`, and records `report`, in one
    /// transaction. Every op of the batch ends up in exactly one list of the answer.
    fn push(
        &self,
        appliance: Appliance,
        ops: Vec<Op>,
        rejected: Vec<(Op, Rejection)>,
        report: Option<Report>,
    ) -> impl Future<Output = Result<PushResponse, StoreError>> + Send;

    /// Ops of the appliance's events after `after` from other appliances, at most `limit`; the
    /// cursor moves past the appliance's own ops. Records the appliance as seen.
    fn pull(
        &self,
        appliance: Appliance,
        after: u64,
        limit: u32,
    ) -> impl Future<Output = Result<PullResponse, StoreError>> + Send;

    /// Changes whenever the log may have grown (on any instance, for shared backends).
    fn changes(&self) -> watch::Receiver<u64>;

    /// Adds or replaces an attendee-token key of an event.
    fn add_key(&self, key: TokenKey) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The keys of these events.
    fn keys(
        &self,
        events: Vec<String>,
    ) -> impl Future<Output = Result<Vec<TokenKey>, StoreError>> + Send;

    /// Parked ops, newest first, of one org or all.
    fn parked(
        &self,
        org: Option<String>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<ParkedOp>, StoreError>> + Send;

    /// The log after `after`, oldest first, at most `limit`, of one org or all.
    fn log(
        &self,
        org: Option<String>,
        after: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<LogEntry>, StoreError>> + Send;

    /// Reported conflicts, newest first, of one org or all.
    fn conflicts(
        &self,
        org: Option<String>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<ConflictRecord>, StoreError>> + Send;
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Removes repeated op ids from a batch (the later copies are duplicates of the first).
pub(crate) fn split_repeats(ops: Vec<Op>) -> (Vec<Op>, Vec<uuid::Uuid>) {
    let mut seen = std::collections::HashSet::with_capacity(ops.len());
    let mut unique = Vec::with_capacity(ops.len());
    let mut repeats = Vec::new();
    for op in ops {
        if seen.insert(op.id) {
            unique.push(op);
        } else {
            repeats.push(op.id);
        }
    }
    (unique, repeats)
}
