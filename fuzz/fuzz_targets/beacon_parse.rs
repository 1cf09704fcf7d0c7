//! Any bytes as manufacturer data (Apple's company id and another) and as Eddystone service
//! data: the parsers must return frames or nothing, never panic.
#![no_main]

use ble_scanner::advert::{APPLE_COMPANY_ID, EDDYSTONE_SERVICE};
use ble_scanner::{Advertisement, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut advert = Advertisement::default();
    advert
        .manufacturer_data
        .insert(APPLE_COMPANY_ID, data.to_vec());
    advert.manufacturer_data.insert(0x0118, data.to_vec());
    advert.service_data.insert(EDDYSTONE_SERVICE, data.to_vec());
    for frame in parse(&advert) {
        // Ids must render and parse back (the registry relies on it).
        if let ble_scanner::Frame::Id { id, .. } = frame {
            let text = id.to_string();
            assert_eq!(text.parse::<ble_scanner::BeaconId>().ok(), Some(id));
        }
    }
});
