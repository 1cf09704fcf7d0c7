//! The cloud relay: a small multi-tenant HTTP service that many appliances sync through. It stores
//! ops idempotently in a log with a global sequence and serves each appliance the ops of its
//! events that other appliances pushed.
//!
//! # Layout
//! - [`api`]: the HTTP routes (sync API, operator API, metrics, health).
//! - [`auth`]: bearer tokens (stored as SHA-256) and the per-address failure limit.
//! - [`store`]: the storage trait and its SQLite and PostgreSQL backends.
//! - [`metrics`]: Prometheus metrics.
//!
//! Boundary: the relay knows nothing of the appliance's internals; it speaks only the wire types
//! of [`sync_agent::wire`], and checks only ops' envelopes, never their bodies.

pub mod api;
pub mod auth;
pub mod metrics;
pub mod store;

pub use sync_agent::wire::Op;

/// Conflicts stored from one report at most.
pub const MAX_REPORTED_CONFLICTS: usize = 100;
