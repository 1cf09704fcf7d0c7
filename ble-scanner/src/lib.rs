//! BLE scanning for the appliance: advertisement sources (btleplug on BlueZ, replay files, raw
//! adverts from BLE gateways), beacon parsers (iBeacon, AltBeacon, Eddystone) and the zone presence
//! engine that turns sightings into enter/exit events and occupancy.
//!
//! Boundary: this crate knows nothing of MQTT, SQLite, HTTP or the venue domain beyond
//! "scanner → zone". The daemon feeds it configuration and consumes its events.
//!
//! Status: the sources, parsers and engine arrive with the BLE issue; this crate is the placeholder
//! that fixes the boundary in the workspace.
