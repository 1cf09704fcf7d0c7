//! BLE scanning for the appliance: advertisement sources (btleplug on BlueZ, replay files, raw
//! adverts from BLE gateways), beacon parsers (iBeacon, AltBeacon, Eddystone) and the zone presence
//! engine that turns sightings into enter/exit events and occupancy.
//!
//! Boundary: this crate knows nothing of MQTT, SQLite, HTTP or the venue domain beyond
//! "scanner → zone". The daemon feeds it configuration and consumes its events.
//!
//! # Layout
//! - [`advert`]: the advertisement every source produces.
//! - [`beacon`]: pure parsers from an advertisement to beacon frames and payload ids.
//! - [`presence`]: the pure presence state machine (smoothing, hysteresis, away timeout).
//! - [`gateway`]: decoders for adverts forwarded by BLE gateways (OpenMQTTGateway/Theengs raw
//!   adverts, ESPresense per-room sightings).
//! - [`replay`]: the JSON-lines recording format, writer and reader.
//! - [`bluez`]: the local radio through BlueZ (btleplug over D-Bus), with a scan watchdog and
//!   session recovery.

pub mod advert;
pub mod beacon;
pub mod bluez;
pub mod gateway;
pub mod presence;
pub mod replay;

pub use advert::Advertisement;
pub use beacon::{BeaconId, Frame, NotABeaconId, parse};
pub use presence::{PresenceConfig, PresenceEngine, PresenceEvent, ScannerConfig, Sighting};
