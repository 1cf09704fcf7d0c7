//! The sync side of the appliance: the wire protocol that `cloud-relay` serves and, in later
//! steps, the agent loop (push the outbox, pull remote ops) and the Litestream-compatible replica.
//!
//! # Layout
//! - [`hlc`]: the hybrid logical clock that orders ops across appliances.
//! - [`wire`]: the op as it travels between appliances and the relay.
//!
//! Boundary: this crate knows nothing of axum, rumqttd, BLE or the appliance's SQLite schema. It
//! reaches the store only through a small trait that the daemon implements (added with the agent).

pub mod hlc;
pub mod wire;

pub use hlc::{Hlc, HlcClock};
pub use wire::{OP_SCHEMA_VERSION, Op};
