//! The `meta` table: this appliance's small named values (node id, clock mark, sync cursors,
//! the hub epoch, the admin token's hash), read and written inside the caller's transaction.

use rusqlite::{Connection, OptionalExtension, params};

/// The value of `key`, if set.
pub fn get(conn: &Connection, key: &str) -> Result<Option<String>, rusqlite::Error> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()
}

/// The value of `key` as an integer (0 when absent or not a number).
pub fn get_i64(conn: &Connection, key: &str) -> Result<i64, rusqlite::Error> {
    Ok(get(conn, key)?.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Sets `key` to `value`.
pub fn set(conn: &Connection, key: &str, value: &str) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])?;
    Ok(())
}

/// Sets `key` to `value` unless it is set already; the value it has now.
pub fn set_once(conn: &Connection, key: &str, value: &str) -> Result<String, rusqlite::Error> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
    )?
    .execute(params![key, value])?;
    conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
}
