//! Installed attendee-token verification keys (`token_keys`): installed by an admin (`local`),
//! supplied by the relay (`relay`), which replaces its own set on every refresh, or published by
//! an appliance of the event through the op log (`appliance`, `oplog::token_key`).

use rusqlite::{Connection, params};

use super::DomainError;

/// Every installed key: (kid, algorithm, public key PEM).
pub fn all(conn: &Connection) -> Result<Vec<(String, String, String)>, DomainError> {
    let mut stmt = conn.prepare("SELECT kid, alg, public_pem FROM token_keys")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Whether a key is installed under `kid` (from any source).
pub fn installed(conn: &Connection, kid: &str) -> Result<bool, DomainError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM token_keys WHERE kid = ?1")?
        .exists(params![kid])?)
}

/// Installs (or replaces) a key an admin gave.
pub fn install_local(
    conn: &Connection,
    kid: &str,
    alg: &str,
    pem: &str,
    now_ms: u64,
) -> Result<(), DomainError> {
    conn.execute(
        "INSERT INTO token_keys (kid, alg, public_pem, added_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (kid) DO UPDATE SET alg = ?2, public_pem = ?3, added_ms = ?4,
                                          source = 'local'",
        params![kid, alg, pem, now_ms as i64],
    )?;
    Ok(())
}

/// Replaces the relay's keys with `keys` (kid, algorithm, PEM). An admin-installed key of the
/// same kid wins: it was put there on purpose.
pub fn replace_relay(
    conn: &Connection,
    keys: &[(String, String, String)],
    now_ms: u64,
) -> Result<(), DomainError> {
    conn.execute("DELETE FROM token_keys WHERE source = 'relay'", [])?;
    for (kid, alg, pem) in keys {
        conn.execute(
            "INSERT INTO token_keys (kid, alg, public_pem, added_ms, source)
             VALUES (?1, ?2, ?3, ?4, 'relay') ON CONFLICT (kid) DO NOTHING",
            params![kid, alg, pem, now_ms as i64],
        )?;
    }
    Ok(())
}
