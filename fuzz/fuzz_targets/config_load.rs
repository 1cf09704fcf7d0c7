//! Any text as `venued.toml`: a configuration, or errors that each say what is wrong; never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = std::collections::BTreeMap::new();
    if let Err(errors) = venued::config::load_str(text, "fuzz.toml", &env, None) {
        let shown = errors.to_string();
        assert!(!shown.is_empty());
    }
});
