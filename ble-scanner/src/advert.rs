//! The advertisement: what every source (BlueZ, replay, gateway) produces for one received
//! advert, in the shape btleplug reports it.

use std::collections::BTreeMap;

use uuid::Uuid;

/// One received BLE advertisement.
///
/// As in btleplug, `manufacturer_data` is keyed by company id with the id already stripped from
/// the value, and `service_data` by 128-bit service UUID with the 16-bit UUID stripped.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Advertisement {
    /// The scanner that heard it: the local adapter or a gateway id.
    pub scanner: String,
    /// The advertiser's address as reported (may rotate; never an identity).
    pub address: String,
    /// Received signal strength, dBm.
    pub rssi: Option<i16>,
    /// Advertised TX power level, dBm, if the advert carried one.
    pub tx_power: Option<i16>,
    /// Manufacturer-specific data by company id.
    pub manufacturer_data: BTreeMap<u16, Vec<u8>>,
    /// Service data by service UUID.
    pub service_data: BTreeMap<Uuid, Vec<u8>>,
    /// The advertised local name, if any.
    pub local_name: Option<String>,
    /// When it was received, milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// The Eddystone service UUID (16-bit 0xFEAA on the Bluetooth base UUID).
pub const EDDYSTONE_SERVICE: Uuid = Uuid::from_u128(0x0000_feaa_0000_1000_8000_0080_5f9b_34fb);
/// Apple's company id.
pub const APPLE_COMPANY_ID: u16 = 0x004c;
