//! Bearer tokens: 32 random bytes, shown once, stored as SHA-256. A plain hash is enough here
//! (unlike passwords): a 256-bit random token cannot be guessed from its hash, and a fast lookup
//! keeps every request cheap. Failed attempts are still limited per source address.

use std::time::Duration;

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefix of every token the relay issues, so a leaked one is recognisable in logs and scanners.
pub const TOKEN_PREFIX: &str = "vr_";

/// A fresh token (shown once) and its hash (stored).
pub fn new_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let token = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = hash_token(&token);
    (token, hash)
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh appliance id.
pub fn new_appliance_id() -> String {
    let mut bytes = [0u8; 6];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("ap-{}", hex::encode(bytes))
}

/// Failed authentications per source address: more than its limit in a minute gets 429 before
/// any lookup (the budget type both ends of the sync API share).
pub use sync_agent::limit::FailureLimiter;

/// Addresses whose failures are tracked at once.
pub const MAX_TRACKED: usize = 10_000;

/// The relay's budget: `limit` failures per minute per address.
pub fn failure_limiter(limit: u32) -> FailureLimiter {
    FailureLimiter::new(limit, Duration::from_secs(60), MAX_TRACKED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn tokens_are_unique_and_hash_to_what_is_stored() {
        let (a, ha) = new_token();
        let (b, hb) = new_token();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == 3 + 43);
        assert_eq!(hash_token(&a), ha);
        assert_ne!(ha, hb);
        assert!(!ha.contains(&a[3..]));
    }

    #[test]
    fn the_limiter_blocks_after_the_budget_and_only_that_address() {
        let l = failure_limiter(3);
        let bad: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..3 {
            assert!(l.check(bad).is_ok());
            l.failed(bad);
        }
        assert!(l.check(bad).is_err());
        assert!(l.check(other).is_ok());
    }
}
