//! Tests of a real `venued` process: crash safety, idempotency, the systemd protocol, the unit
//! file, the README's defaults, and bad input. One test binary, one module per concern.

mod bad_input;
mod crash;
mod defaults;
mod idempotency;
mod systemd;
