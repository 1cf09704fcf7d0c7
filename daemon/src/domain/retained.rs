//! This appliance's MQTT state kept in SQLite so it survives restarts: retained payloads per
//! topic (`mqtt_retained`) and raised alerts (`alerts`). Local presentation state, not ops.

use rusqlite::{Connection, OptionalExtension, params};

use super::{DomainError, rfc3339};

/// Stores `payload` as `topic`'s retained state.
pub fn set(conn: &Connection, topic: &str, payload: &[u8], now_ms: u64) -> Result<(), DomainError> {
    conn.prepare_cached(
        "INSERT INTO mqtt_retained (topic, payload, updated_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (topic) DO UPDATE SET payload = ?2, updated_ms = ?3",
    )?
    .execute(params![topic, payload, now_ms as i64])?;
    Ok(())
}

/// Deletes `topic`'s retained state; whether there was any.
pub fn delete(conn: &Connection, topic: &str) -> Result<bool, DomainError> {
    Ok(conn.execute("DELETE FROM mqtt_retained WHERE topic = ?1", [topic])? > 0)
}

/// `topic`'s retained payload, if any.
pub fn get(conn: &Connection, topic: &str) -> Result<Option<Vec<u8>>, DomainError> {
    Ok(conn
        .query_row(
            "SELECT payload FROM mqtt_retained WHERE topic = ?1",
            [topic],
            |r| r.get(0),
        )
        .optional()?)
}

/// `topic`'s retained payload and when it was stored (ms since the epoch), if any.
pub fn get_dated(conn: &Connection, topic: &str) -> Result<Option<(Vec<u8>, i64)>, DomainError> {
    Ok(conn
        .query_row(
            "SELECT payload, updated_ms FROM mqtt_retained WHERE topic = ?1",
            [topic],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// Every retained (topic, payload).
pub fn all(conn: &Connection) -> Result<Vec<(String, Vec<u8>)>, DomainError> {
    let mut stmt = conn.prepare("SELECT topic, payload FROM mqtt_retained")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Records a raised alert once per alert id; whether it was new (a redelivery is not).
pub fn raise_alert(
    conn: &Connection,
    id: &str,
    severity: &str,
    source: &str,
    message: &str,
    now_ms: u64,
) -> Result<bool, DomainError> {
    let n = conn
        .prepare_cached(
            "INSERT INTO alerts (id, severity, source, message, raised_ms)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![id, severity, source, message, now_ms as i64])?;
    Ok(n > 0)
}

/// Clears an active alert; whether it was active.
pub fn clear_alert(conn: &Connection, id: &str, now_ms: u64) -> Result<bool, DomainError> {
    let n = conn.execute(
        "UPDATE alerts SET cleared_ms = ?2 WHERE id = ?1 AND cleared_ms IS NULL",
        params![id, now_ms as i64],
    )?;
    Ok(n > 0)
}

/// The newest `limit` active alerts, as published on `alerts/active`.
pub fn active_alerts(
    conn: &Connection,
    limit: usize,
) -> Result<Vec<serde_json::Value>, DomainError> {
    let mut stmt = conn.prepare(
        "SELECT id, severity, source, message, raised_ms FROM alerts
         WHERE cleared_ms IS NULL ORDER BY raised_ms DESC LIMIT ?1",
    )?;
    let rows = stmt
        .query_map([limit as i64], |r| {
            Ok(serde_json::json!({
                "id": r.get::<_, String>(0)?,
                "severity": r.get::<_, String>(1)?,
                "source": r.get::<_, String>(2)?,
                "message": r.get::<_, String>(3)?,
                "raised_at": rfc3339(r.get::<_, i64>(4)?),
            }))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
