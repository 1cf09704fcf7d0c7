//! Any text as a hub client frame: decoded, or an error with one of the documented codes and a
//! message, never a panic. Channel names and @mentions from the same text hold their limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use venued::hub::channels::Channel;
use venued::hub::frames::{MAX_ID_BYTES, decode};
use venued::oplog::message::{MAX_MENTIONS, mentions};

fuzz_target!(|data: &[u8]| {
    // The WebSocket layer refuses invalid UTF-8 before a frame reaches the decoder.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match decode(text) {
        Ok((id, _)) => assert!(id.is_none_or(|id| id.len() <= MAX_ID_BYTES)),
        Err(e) => {
            assert!(["malformed", "unsupported_type", "invalid"].contains(&e.code));
            assert!(!e.message.is_empty());
        }
    }
    if let Some(Channel::Direct(a, b)) = Channel::parse(text) {
        assert!(a < b, "a direct channel has one name per pair");
    }
    let found = mentions(text);
    assert!(found.len() <= MAX_MENTIONS);
    assert!(found.iter().all(|m| !m.is_empty() && m.len() <= 128));
});
