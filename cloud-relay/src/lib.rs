//! The cloud relay: a small multi-tenant HTTP service that many appliances sync through. It stores
//! ops idempotently in a per-event log with a global sequence and serves them to the other
//! appliances of the same event.
//!
//! Boundary: the relay knows nothing of the appliance's internals; it speaks only the wire types
//! of [`sync_agent::wire`].
//!
//! Status: the HTTP API, storage backends and operator API arrive with the sync issue.

pub use sync_agent::wire::Op;
