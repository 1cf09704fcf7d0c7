//! Tests of a real `venued` process: crash safety, idempotency, the systemd protocol, the unit
//! file, the README's defaults, and bad input. One test binary, one module per concern.

#![allow(
    clippy::unwrap_used,
    reason = "a test should fail loudly on any unexpected error"
)]

mod appliance;
mod bad_input;
mod bluez;
mod browser;
mod crash;
mod defaults;
mod full_disk;
mod hub;
mod hub_frames;
mod hub_limits;
mod hub_social;
mod idempotency;
mod journal;
mod lan;
mod mdns;
mod mqtt;
mod mqtt_loss;
mod page_bench;
mod pages;
mod presence;
mod printing;
mod relay_api;
mod replica;
mod soak;
mod sync;
mod systemd;
