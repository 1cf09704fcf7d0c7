//! Any push body, as the relay receives it: the first byte picks the content encoding, the rest
//! is decompressed within the batch limit, decoded, and every op checked (envelope, clock bound,
//! origin); never a panic, never more than the limit decompressed, and every op that decodes
//! survives a round trip unchanged (unknown fields included).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sync_agent::codec::{self, Encoding};
use sync_agent::wire::{self, MAX_BATCH_BYTES, Op, PushRequest};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let encoding = match pick % 3 {
        0 => Encoding::Identity,
        1 => Encoding::Gzip,
        _ => Encoding::Zstd,
    };
    let Ok(json) = codec::decode(body, encoding, MAX_BATCH_BYTES) else {
        return;
    };
    assert!(json.len() <= MAX_BATCH_BYTES);
    let Ok(request) = serde_json::from_slice::<PushRequest>(&json) else {
        return;
    };
    for op in &request.ops {
        let _ = wire::check_envelope(op);
        let _ = wire::check_clock(op, 1_764_400_000_000);
        let _ = wire::check_origin(op);
        let text = serde_json::to_string(op).expect("an op serialises");
        let back: Op = serde_json::from_str(&text).expect("and decodes again");
        assert_eq!(&back, op);
    }
});
