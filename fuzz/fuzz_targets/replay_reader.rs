//! Any file as a replay recording: every line an advert or an error with its number.
#![no_main]

use ble_scanner::replay::Reader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut last_line = 0;
    for item in Reader::new(data) {
        if let Err(e) = item {
            assert!(e.line > last_line, "line numbers only grow");
            last_line = e.line;
        }
    }
});
