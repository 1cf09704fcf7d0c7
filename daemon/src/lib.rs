//! `venued`, the venue edge appliance daemon, as a library: everything but process ownership
//! (logging setup, signals, exit codes, systemd notifications), which lives in the binary.
//!
//! # Layout
//! - [`config`]: TOML configuration, environment overrides, validation.
//! - [`store`]: SQLite with one group-committing writer thread and read-only readers.
//! - [`oplog`]: applying ops (local or remote) with the DESIGN §5 merge rules.
//! - [`sync`]: the sync agent's view of the store, and starting the agent.
//! - [`replica`]: Litestream-compatible replication to S3, and restore.
//! - [`domain`]: check-ins, attendees, the entity registry, devices, idempotency keys.
//! - [`auth`]: the admin token and device credentials.
//! - [`http`]: the axum app.
//! - [`bridge`]: MQTT ↔ hub, above both.
//! - [`health`]: subsystem states for readiness and status.
//! - [`metrics`]: the Prometheus registry.
//! - [`presence`]: BLE adverts → presence engine → privacy → occupancy and zone transitions.
//! - [`demo`]: the sample event of `--demo`.
//! - [`server`]: start-up and graceful shutdown of the whole daemon.

pub mod auth;
pub mod bridge;
pub mod config;
pub mod demo;
pub mod domain;
pub mod hashing;
pub mod health;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod mqtt;
pub mod oplog;
pub mod presence;
pub mod replica;
pub mod server;
pub mod store;
pub mod sync;
