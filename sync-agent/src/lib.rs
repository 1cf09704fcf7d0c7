//! The sync side of the appliance: the wire protocol that `cloud-relay` serves, and the agent loop
//! that pushes the outbox and pulls other appliances' ops.
//!
//! # Layout
//! - [`hlc`]: the hybrid logical clock that orders ops across appliances.
//! - [`wire`]: the op and the request and answer bodies of the sync API.
//! - [`codec`]: push body compression, bounded on decode.
//! - [`backoff`]: full-jitter exponential backoff.
//! - [`limit`]: the failed-authentication budget per address both ends of the sync API keep.
//! - [`agent`]: the push and pull loops, behind the [`agent::SyncStore`] trait.
//! - [`peer`]: peer sync on the venue LAN: its authentication, and (with `agent`) the pull loop.
//! - [`replica`]: the Litestream-compatible replica: the LTX codec, the S3 layout, restore.
//!
//! Features: `agent` and `replica` (both default). The relay builds with neither: it needs the
//! wire types, the clock and the codec, not an HTTP client or S3.
//!
//! Boundary: this crate knows nothing of axum, rumqttd, BLE or the appliance's SQLite schema. It
//! reaches the store only through [`agent::SyncStore`], which the daemon implements.

#[cfg(feature = "agent")]
pub mod agent;
pub mod backoff;
pub mod codec;
pub mod hlc;
pub mod limit;
pub mod peer;
#[cfg(feature = "replica")]
pub mod replica;
pub mod wire;

pub use hlc::{ClockAhead, Hlc, HlcClock, MAX_CLOCK_AHEAD_MS};
pub use wire::{OP_SCHEMA_VERSION, Op};

/// An error and all its sources, `: `-separated: SDK and HTTP errors put the useful part (refused,
/// timed out, no such bucket) in a source, not in their own message. The daemon's printer client
/// uses it too.
#[cfg(any(feature = "agent", feature = "replica"))]
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
