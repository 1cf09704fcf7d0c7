//! Any file as an LTX file (what a restore reads from a bucket): every page read and the
//! trailer's checksum checked, or an error; never a panic, and page numbers only grow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sync_agent::replica::ltx::Decoder;

fuzz_target!(|data: &[u8]| {
    let Ok(mut decoder) = Decoder::new(data) else {
        return;
    };
    let page_size = decoder.header().page_size as usize;
    // Real pages are 512 B to 64 KiB; the header check has refused anything else.
    assert!((512..=65536).contains(&page_size));
    let mut page = vec![0u8; page_size];
    let mut last = 0;
    while let Ok(Some(pgno)) = decoder.next_page(&mut page) {
        assert!(pgno > last, "page {pgno} after {last}");
        last = pgno;
    }
});
