//! The sync side of the appliance: the wire protocol that `cloud-relay` serves, and the agent loop
//! that pushes the outbox and pulls other appliances' ops.
//!
//! # Layout
//! - [`hlc`]: the hybrid logical clock that orders ops across appliances.
//! - [`wire`]: the op and the request and answer bodies of the sync API.
//! - [`codec`]: push body compression, bounded on decode.
//! - [`backoff`]: full-jitter exponential backoff.
//! - [`agent`]: the push and pull loops, behind the [`agent::SyncStore`] trait.
//! - [`replica`]: the Litestream-compatible replica: the LTX codec, the S3 layout, restore.
//!
//! Boundary: this crate knows nothing of axum, rumqttd, BLE or the appliance's SQLite schema. It
//! reaches the store only through [`agent::SyncStore`], which the daemon implements.

pub mod agent;
pub mod backoff;
pub mod codec;
pub mod hlc;
pub mod replica;
pub mod wire;

pub use hlc::{Hlc, HlcClock};
pub use wire::{OP_SCHEMA_VERSION, Op};
