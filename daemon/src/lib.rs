//! `venued`, the venue edge appliance daemon, as a library: everything but process ownership
//! (logging setup, signals, exit codes, systemd notifications), which lives in the binary.
//!
//! # Layout
//! - [`config`]: TOML configuration, environment overrides, validation.
//! - [`store`]: SQLite with one group-committing writer thread, read-only readers, and the
//!   committed-op stream every after-commit effect follows.
//! - [`oplog`]: applying ops (local or remote) with the DESIGN §5 merge rules; the outbox.
//! - [`sync`]: the sync agent's view of the store, and starting the agent.
//! - [`replica`]: Litestream-compatible replication to S3, and restore.
//! - [`domain`]: check-ins, attendees, the entity registry, devices, idempotency keys, messages,
//!   groups, token keys, retained MQTT state: with `store` and `oplog`, the only SQL.
//! - [`auth`]: the admin token, device credentials and attendee tokens.
//! - [`http`]: the axum app and the hub's transports (WebSocket, SSE, long-poll).
//! - [`hub`]: the attendee hub's protocol state and its effects of committed ops.
//! - [`mqtt`]: the embedded broker, its authenticating front, and what the daemon takes in.
//! - [`bridge`]: MQTT ↔ hub, above both.
//! - [`health`]: subsystem states for readiness and status.
//! - [`metrics`]: the Prometheus registry.
//! - [`presence`]: BLE adverts → presence engine → privacy → occupancy and zone transitions.
//! - [`hashing`]: the argon2 threads for device password hashes stored by earlier versions.
//! - [`demo`]: the sample event of `--demo`.
//! - [`server`]: start-up and graceful shutdown of the whole daemon.

pub mod appliance;
pub mod assets;
pub mod auth;
pub mod bridge;
pub mod config;
pub mod demo;
pub mod domain;
pub mod hashing;
pub mod health;
pub mod http;
pub mod hub;
pub mod mdns;
pub mod metrics;
pub mod mqtt;
pub mod oplog;
pub mod peers;
pub mod presence;
pub mod print;
pub mod provision;
pub mod qr;
pub mod replica;
pub mod server;
pub mod store;
pub mod sync;
