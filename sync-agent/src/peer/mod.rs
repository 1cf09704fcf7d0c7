//! Peer sync: appliances of one event pulling each other's op logs on the venue LAN
//! (`docs/protocol/sync.md`, "Between appliances"), so the venue stays one system while the
//! internet is down.
//!
//! Every appliance serves `GET /peer/v1/hello` and `GET /peer/v1/ops` and pulls from each peer it
//! knows. Ops travel in the relay's wire types ([`crate::wire::PullResponse`]) and are applied by
//! op id, so an op reaches every box even through a third one, and twice is the same as once.
//!
//! Both ends prove they hold the venue key without sending it: a request carries an HMAC-SHA256
//! over a nonce the server issued, a counter, the caller's node and event and the path; the
//! answer carries one over the same nonce and counter and the body. A sniffed request cannot be
//! replayed (the counter must grow and the nonce expires), and a box without the key can neither
//! read ops nor feed them. The key is not a secret the LAN sees; the ops themselves are sent in
//! the clear (see `docs/operations.md` for where the boxes should sit).

#[cfg(feature = "agent")]
pub mod client;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The path of the unauthenticated hello (who the box is, and a fresh nonce).
pub const HELLO_PATH: &str = "/peer/v1/hello";
/// The path of the op log pull.
pub const OPS_PATH: &str = "/peer/v1/ops";
/// Request and answer header: the sender's node id.
pub const NODE_HEADER: &str = "venue-peer-node";
/// Request header: the caller's event.
pub const EVENT_HEADER: &str = "venue-peer-event";
/// Request header: the nonce the server issued.
pub const NONCE_HEADER: &str = "venue-peer-nonce";
/// Request header: the caller's counter for that nonce (it must grow).
pub const COUNT_HEADER: &str = "venue-peer-count";
/// Request and answer header: the HMAC-SHA256, lowercase hex.
pub const AUTH_HEADER: &str = "venue-peer-auth";
/// The error code of a `401` for an unknown or expired nonce: say hello again.
pub const STALE_CODE: &str = "peer_nonce_stale";
/// The shortest venue key accepted, in characters.
pub const MIN_KEY_CHARS: usize = 32;
/// How long an issued nonce may be used.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(600);
/// Most nonces a server keeps; the oldest goes first (its holder asks for a new one).
pub const MAX_NONCES: usize = 1024;
/// Largest answer a peer client reads, in bytes.
pub const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;
/// Target size of one pull answer: a peer stops adding ops past it (one op always fits).
pub const ANSWER_TARGET_BYTES: usize = 1024 * 1024;

/// `GET /peer/v1/hello` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The serving appliance's node id.
    pub node: String,
    /// The event it serves.
    pub event: String,
    /// A nonce to sign the next requests with.
    pub nonce: String,
    /// The peer protocol version.
    pub protocol: u32,
}

/// The shared secret of a venue's appliances. Its `Debug` never shows it.
#[derive(Clone)]
pub struct VenueKey(Vec<u8>);

impl std::fmt::Debug for VenueKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VenueKey(..)")
    }
}

/// Why a venue key is not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "the venue key has {0} characters; it needs at least {MIN_KEY_CHARS} random ones (e.g. `openssl rand -base64 32`), the same on every appliance of the venue"
)]
pub struct KeyTooShort(pub usize);

impl VenueKey {
    /// The key from its text (surrounding white space is not part of it).
    pub fn new(text: &str) -> Result<Self, KeyTooShort> {
        let text = text.trim();
        match text.chars().count() {
            n if n < MIN_KEY_CHARS => Err(KeyTooShort(n)),
            _ => Ok(Self(text.as_bytes().to_vec())),
        }
    }

    fn mac<P: AsRef<[u8]>>(&self, parts: &[P]) -> Hmac<Sha256> {
        // HMAC takes a key of any length; this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        for part in parts {
            mac.update(part.as_ref());
            mac.update(b"\n");
        }
        mac
    }

    /// The request MAC: what a caller sends in [`AUTH_HEADER`].
    pub fn request_mac(&self, req: &SignedRequest<'_>) -> String {
        hex::encode(self.mac(&req.parts()).finalize().into_bytes())
    }

    /// Whether `mac` (hex) is the request's MAC; constant time.
    pub fn verify_request(&self, req: &SignedRequest<'_>, mac: &str) -> bool {
        let Ok(bytes) = hex::decode(mac) else {
            return false;
        };
        self.mac(&req.parts()).verify_slice(&bytes).is_ok()
    }

    /// The answer MAC over the request's nonce and counter, the server's node and the body.
    pub fn answer_mac(&self, nonce: &str, count: u64, node: &str, body: &[u8]) -> String {
        let count = count.to_string();
        hex::encode(
            self.mac(&answer_parts(nonce, &count, node, body))
                .finalize()
                .into_bytes(),
        )
    }

    /// Whether `mac` (hex) is the answer's MAC; constant time.
    pub fn verify_answer(
        &self,
        nonce: &str,
        count: u64,
        node: &str,
        body: &[u8],
        mac: &str,
    ) -> bool {
        let Ok(bytes) = hex::decode(mac) else {
            return false;
        };
        let count = count.to_string();
        self.mac(&answer_parts(nonce, &count, node, body))
            .verify_slice(&bytes)
            .is_ok()
    }
}

/// What an answer's MAC covers, in order.
fn answer_parts<'a>(
    nonce: &'a str,
    count: &'a str,
    node: &'a str,
    body: &'a [u8],
) -> [&'a [u8]; 5] {
    [
        b"venue-peer-v1 answer",
        nonce.as_bytes(),
        count.as_bytes(),
        node.as_bytes(),
        body,
    ]
}

/// What a request's MAC covers.
#[derive(Clone, Copy, Debug)]
pub struct SignedRequest<'a> {
    /// The server's nonce.
    pub nonce: &'a str,
    /// The caller's counter for it.
    pub count: u64,
    /// The caller's node id.
    pub node: &'a str,
    /// The caller's event.
    pub event: &'a str,
    /// The path and query, e.g. `/peer/v1/ops?after=12&limit=1000&wait=25`.
    pub path_and_query: &'a str,
}

impl SignedRequest<'_> {
    fn parts(&self) -> [Vec<u8>; 6] {
        [
            b"venue-peer-v1 request".to_vec(),
            self.nonce.as_bytes().to_vec(),
            self.count.to_string().into_bytes(),
            self.node.as_bytes().to_vec(),
            self.event.as_bytes().to_vec(),
            self.path_and_query.as_bytes().to_vec(),
        ]
    }
}

/// Why a signed request's nonce is not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NonceError {
    /// Unknown, expired or evicted: the caller should say hello again.
    #[error("the nonce is unknown or expired; get a new one from {HELLO_PATH}")]
    Stale,
    /// The counter did not grow: a replayed request.
    #[error(
        "the counter {count} is not above {last}, the last one used with this nonce (a replayed request?)"
    )]
    Replayed {
        /// The counter sent.
        count: u64,
        /// The highest one used before.
        last: u64,
    },
}

/// The nonces a server issued, each with the highest counter used with it.
#[derive(Debug, Default)]
pub struct NonceBook {
    issued: Mutex<HashMap<String, (Instant, u64)>>,
}

impl NonceBook {
    /// Issues a new nonce, forgetting expired ones (and the oldest when [`MAX_NONCES`] are kept).
    pub fn issue(&self) -> String {
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let now = Instant::now();
        let mut issued = self
            .issued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        issued.retain(|_, (at, _)| now.duration_since(*at) < NONCE_LIFETIME);
        if issued.len() >= MAX_NONCES {
            if let Some(oldest) = issued
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(n, _)| n.clone())
            {
                issued.remove(&oldest);
            }
        }
        issued.insert(nonce.clone(), (now, 0));
        nonce
    }

    /// Uses `count` with `nonce`: only a known, live nonce and a counter above any used before.
    /// Call it after the MAC checked out, so a stranger cannot use up a peer's counters.
    pub fn redeem(&self, nonce: &str, count: u64) -> Result<(), NonceError> {
        let mut issued = self
            .issued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some((at, last)) = issued.get_mut(nonce) else {
            return Err(NonceError::Stale);
        };
        if at.elapsed() >= NONCE_LIFETIME {
            issued.remove(nonce);
            return Err(NonceError::Stale);
        }
        if count <= *last {
            return Err(NonceError::Replayed { count, last: *last });
        }
        *last = count;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> VenueKey {
        VenueKey::new(s).expect("key")
    }

    const K: &str = "0123456789abcdef0123456789abcdef";

    fn request(nonce: &str) -> SignedRequest<'_> {
        SignedRequest {
            nonce,
            count: 1,
            node: "hall-a",
            event: "ev",
            path_and_query: "/peer/v1/ops?after=0",
        }
    }

    #[test]
    fn a_short_key_is_refused_with_how_to_make_one() {
        let e = VenueKey::new("  short  ").expect_err("short");
        assert_eq!(e, KeyTooShort(5));
        assert!(e.to_string().contains("openssl rand"), "{e}");
        assert!(!format!("{:?}", key(K)).contains("0123"));
    }

    #[test]
    fn a_request_checks_only_with_the_same_key_and_the_same_fields() {
        let mac = key(K).request_mac(&request("n1"));
        assert!(key(K).verify_request(&request("n1"), &mac));
        assert!(!key(&K.replace('0', "x")).verify_request(&request("n1"), &mac));
        assert!(!key(K).verify_request(&request("n2"), &mac));
        let mut other = request("n1");
        other.path_and_query = "/peer/v1/ops?after=1";
        assert!(!key(K).verify_request(&other, &mac));
        other = request("n1");
        other.event = "ev2";
        assert!(!key(K).verify_request(&other, &mac));
        assert!(!key(K).verify_request(&request("n1"), "not hex"));
    }

    #[test]
    fn an_answer_checks_only_with_its_body() {
        let mac = key(K).answer_mac("n", 3, "hall-b", b"{\"ops\":[]}");
        assert!(key(K).verify_answer("n", 3, "hall-b", b"{\"ops\":[]}", &mac));
        assert!(!key(K).verify_answer("n", 3, "hall-b", b"{\"ops\":[1]}", &mac));
        assert!(!key(K).verify_answer("n", 4, "hall-b", b"{\"ops\":[]}", &mac));
        assert!(!key(K).verify_answer("n", 3, "hall-c", b"{\"ops\":[]}", &mac));
    }

    #[test]
    fn a_nonce_takes_growing_counters_and_refuses_a_replay() {
        let book = NonceBook::default();
        let nonce = book.issue();
        assert_eq!(book.redeem(&nonce, 1), Ok(()));
        assert_eq!(book.redeem(&nonce, 5), Ok(()));
        assert_eq!(
            book.redeem(&nonce, 5),
            Err(NonceError::Replayed { count: 5, last: 5 })
        );
        assert_eq!(book.redeem("feed", 1), Err(NonceError::Stale));
    }

    #[test]
    fn the_book_keeps_at_most_its_bound_and_drops_the_oldest() {
        let book = NonceBook::default();
        let first = book.issue();
        for _ in 0..MAX_NONCES {
            book.issue();
        }
        assert_eq!(book.redeem(&first, 1), Err(NonceError::Stale));
        let len = book.issued.lock().expect("lock").len();
        assert_eq!(len, MAX_NONCES);
    }
}
