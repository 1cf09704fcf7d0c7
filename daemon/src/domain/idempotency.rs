//! Idempotency keys: the stored result of a request made under a key, per principal.
//!
//! The lookup, the change and the stored result share one transaction, so a crash can never leave
//! a change without its key (a retry would duplicate it) or a key without its change.

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use super::DomainError;

/// Longest accepted key.
pub const MAX_KEY_BYTES: usize = 255;

/// A stored result.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Digest of the request the key was first used with.
    pub request_hash: String,
    /// The status of the original answer.
    pub status: u16,
    /// The original answer's body.
    pub response: serde_json::Value,
}

/// Checks a client-supplied key: 1–255 visible ASCII characters.
pub fn validate_key(key: &str) -> Result<(), DomainError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(DomainError::Invalid(format!(
            "Idempotency-Key must be 1-{MAX_KEY_BYTES} visible ASCII characters (a UUID is ideal)"
        )));
    }
    Ok(())
}

/// A digest of a request body, independent of key order and whitespace.
pub fn request_hash(body: &serde_json::Value) -> String {
    // serde_json's map is ordered by key, so equal values serialise identically.
    hex::encode(Sha256::digest(body.to_string().as_bytes()))
}

/// The result stored for `(principal, key)`, if any.
pub fn get(conn: &Connection, principal: &str, key: &str) -> Result<Option<Stored>, DomainError> {
    let row: Option<(String, i64, String)> = conn
        .prepare_cached(
            "SELECT request_hash, status, response FROM idempotency WHERE principal = ?1 AND key = ?2",
        )?
        .query_row(params![principal, key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    Ok(row.map(|(request_hash, status, response)| Stored {
        request_hash,
        status: u16::try_from(status).unwrap_or(200),
        response: serde_json::from_str(&response).unwrap_or(serde_json::Value::Null),
    }))
}

/// Stores the result of a request made under `(principal, key)`.
pub fn put(
    conn: &Connection,
    principal: &str,
    key: &str,
    stored: &Stored,
    now_ms: u64,
) -> Result<(), DomainError> {
    conn.prepare_cached(
        "INSERT INTO idempotency (principal, key, request_hash, status, response, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        principal,
        key,
        stored.request_hash,
        stored.status,
        stored.response.to_string(),
        now_ms as i64
    ])?;
    Ok(())
}

/// Forgets keys older than `retention_ms`; returns how many.
pub fn purge(conn: &Connection, now_ms: u64, retention_ms: u64) -> Result<usize, DomainError> {
    let cutoff = now_ms.saturating_sub(retention_ms) as i64;
    Ok(conn.execute(
        "DELETE FROM idempotency WHERE created_ms < ?1",
        params![cutoff],
    )?)
}
