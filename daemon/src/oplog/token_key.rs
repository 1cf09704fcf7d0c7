//! `token_key.publish`: an appliance's public token-signing key, carried by sync so that a token
//! one appliance of the event signed (an attendee's on-site sign-in) opens the others too.
//!
//! A key never changes under its kid: the kid is derived from the key itself
//! (`appliance-<16 hex digits of its SHA-256>`), so a repeat is a no-op whatever order copies
//! arrive in. A key an admin installed, or the relay supplied, under the same kid is left alone.

use rusqlite::{Connection, params};
use serde_json::Value;
use sync_agent::Op;

use super::{ApplyError, BodyError};

/// Op kind: an appliance publishes its token-signing public key.
pub const PUBLISH: &str = "token_key.publish";
/// Algorithms a published key may use.
const ALGORITHMS: &[&str] = &["EdDSA", "ES256"];
/// The longest PEM accepted (a P-256 or Ed25519 public key is well under 300 bytes).
const MAX_PEM: usize = 4096;

/// A published key, checked.
pub(super) struct Body {
    alg: String,
    pem: String,
}

pub(super) fn parse(op: &Op) -> Result<Body, BodyError> {
    let body = op.body.as_object().ok_or(BodyError::NotAnObject)?;
    if !crate::config::is_valid_id(&op.entity_id) {
        return Err(BodyError::expected(
            "entity_id",
            "a key id (1-64 characters of a-z, A-Z, 0-9, `-`, `_` or `.`)",
            Some(&Value::String(op.entity_id.clone())),
        ));
    }
    let alg = match body.get("alg") {
        Some(Value::String(a)) if ALGORITHMS.contains(&a.as_str()) => a.clone(),
        other => return Err(BodyError::expected("alg", "EdDSA or ES256", other)),
    };
    let pem = match body.get("public_key_pem") {
        Some(Value::String(p))
            if p.len() <= MAX_PEM && p.starts_with("-----BEGIN PUBLIC KEY-----") =>
        {
            p.clone()
        }
        other => {
            return Err(BodyError::expected(
                "public_key_pem",
                format!("a PEM public key of at most {MAX_PEM} bytes"),
                other,
            ));
        }
    };
    Ok(Body { alg, pem })
}

pub(super) fn apply(
    conn: &Connection,
    op: &Op,
    body: &Body,
    now_ms: u64,
) -> Result<(), ApplyError> {
    conn.prepare_cached(
        "INSERT INTO token_keys (kid, alg, public_pem, added_ms, source)
         VALUES (?1, ?2, ?3, ?4, 'appliance') ON CONFLICT (kid) DO NOTHING",
    )?
    .execute(params![op.entity_id, body.alg, body.pem, now_ms as i64])?;
    Ok(())
}
