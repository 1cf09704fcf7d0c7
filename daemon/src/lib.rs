//! `venued`, the venue edge appliance daemon, as a library: everything but process ownership
//! (logging setup, signals, exit codes), which lives in the `venued` binary.
//!
//! # Layout
//! - [`config`]: TOML configuration, environment overrides, validation.
//! - [`store`]: SQLite with one group-committing writer thread and read-only readers.
//! - [`oplog`]: applying ops (local or remote) with the DESIGN §5 merge rules.
//! - [`metrics`]: the Prometheus registry.

pub mod config;
pub mod metrics;
pub mod oplog;
pub mod store;
