//! Any payload on a gateway topic: decoded or a clear error, never a panic.
#![no_main]

use ble_scanner::gateway::{decode_espresense, decode_raw};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(advert) = decode_raw("gw", data, 0) {
        let _ = ble_scanner::parse(&advert);
    }
    let _ = decode_espresense("room", data);
});
