//! The device registry: kiosks, signage displays and BLE gateways, with argon2-hashed passwords.
//!
//! Devices are this appliance's local access list: they are not ops and do not sync, because a
//! credential hash has no business on the relay (docs/architecture.md records this exception).

use base64::Engine;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::DomainError;
use crate::store::Store;

/// What a device is; decides what it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// A check-in kiosk.
    Kiosk,
    /// A digital signage display.
    Signage,
    /// An ESP32-class BLE gateway forwarding raw adverts.
    Gateway,
}

impl DeviceKind {
    /// The name stored in the database and used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kiosk => "kiosk",
            Self::Signage => "signage",
            Self::Gateway => "gateway",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "kiosk" => Some(Self::Kiosk),
            "signage" => Some(Self::Signage),
            "gateway" => Some(Self::Gateway),
            _ => None,
        }
    }
}

/// A registered device (never its password or hash).
#[derive(Debug, Clone, Serialize)]
pub struct Device {
    /// Its id, also its MQTT client id.
    pub id: String,
    /// Its kind.
    pub kind: DeviceKind,
    /// A label for staff.
    pub name: String,
    /// When it was registered (RFC 3339).
    pub created_at: String,
    /// When it was revoked, if it was.
    pub revoked_at: Option<String>,
}

/// A device's stored credential, for authentication.
#[derive(Debug, Clone)]
pub struct Credential {
    /// The device kind.
    pub kind: DeviceKind,
    /// The argon2 PHC string.
    pub password_hash: String,
}

/// A new random device password: 160 bits, URL-safe, no padding.
pub fn generate_password() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 20]>())
}

/// Hashes a password with argon2id (default parameters). Slow by design: call off the runtime.
pub fn hash_password(password: &str) -> Result<String, DomainError> {
    crate::hashing::hash(password.as_bytes())
        .map_err(|e| DomainError::Invalid(format!("cannot hash password: {e}")))
}

/// Registers a device (or re-registers a revoked one) and returns it with its password, which
/// is shown this once and never stored in clear.
pub async fn create(
    store: &Store,
    event_id: &str,
    id: String,
    kind: DeviceKind,
    name: String,
) -> Result<(Device, String), DomainError> {
    if !crate::config::is_valid_id(&id) {
        return Err(DomainError::Invalid(format!(
            "device id `{id}` must be 1-64 characters of a-z, A-Z, 0-9, `-`, `_` or `.` (it is also the MQTT client id)"
        )));
    }
    if name.len() > 256 {
        return Err(DomainError::Invalid(
            "`name` is longer than 256 bytes".into(),
        ));
    }
    let password = generate_password();
    let hash = hashed(password.clone()).await?;
    let event_id = event_id.to_string();
    let device = store
        .write(move |ctx| {
            let active: Option<Option<i64>> = ctx
                .conn()
                .query_row(
                    "SELECT revoked_ms FROM devices WHERE id = ?1",
                    params![id],
                    |r| r.get(0),
                )
                .optional()?;
            if matches!(active, Some(None)) {
                return Err(DomainError::Conflict(format!(
                    "device `{id}` already exists; revoke it first, or reset its password"
                )));
            }
            ctx.conn().execute(
                "INSERT INTO devices (id, event_id, kind, name, password_hash, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (id) DO UPDATE SET event_id = excluded.event_id, kind = excluded.kind,
                   name = excluded.name, password_hash = excluded.password_hash,
                   created_ms = excluded.created_ms, revoked_ms = NULL",
                params![id, event_id, kind.as_str(), name, hash, ctx.now_ms() as i64],
            )?;
            Ok(Device {
                id,
                kind,
                name,
                created_at: super::rfc3339(ctx.now_ms() as i64),
                revoked_at: None,
            })
        })
        .await?;
    Ok((device, password))
}

/// Gives an active device a new password; returns it.
pub async fn reset_password(store: &Store, id: String) -> Result<String, DomainError> {
    let password = generate_password();
    let hash = hashed(password.clone()).await?;
    store
        .write(move |ctx| {
            let n = ctx.conn().execute(
                "UPDATE devices SET password_hash = ?1 WHERE id = ?2 AND revoked_ms IS NULL",
                params![hash, id],
            )?;
            if n == 0 {
                return Err(DomainError::NotFound(format!("no active device `{id}`")));
            }
            Ok(())
        })
        .await?;
    Ok(password)
}

/// Revokes a device: its credentials stop working at once.
pub async fn revoke(store: &Store, id: String) -> Result<(), DomainError> {
    store
        .write(move |ctx| {
            let n = ctx.conn().execute(
                "UPDATE devices SET revoked_ms = ?1 WHERE id = ?2 AND revoked_ms IS NULL",
                params![ctx.now_ms() as i64, id],
            )?;
            if n == 0 {
                return Err(DomainError::NotFound(format!("no active device `{id}`")));
            }
            Ok(())
        })
        .await
}

/// Every device, revoked ones included.
pub async fn list(store: &Store) -> Result<Vec<Device>, DomainError> {
    store
        .read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT id, kind, name, created_ms, revoked_ms FROM devices ORDER BY id",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    let kind: String = r.get(1)?;
                    Ok(Device {
                        id: r.get(0)?,
                        kind: DeviceKind::parse(&kind).unwrap_or(DeviceKind::Kiosk),
                        name: r.get(2)?,
                        created_at: super::rfc3339(r.get(3)?),
                        revoked_at: r.get::<_, Option<i64>>(4)?.map(super::rfc3339),
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
}

/// The active credential of `id`, if any.
pub async fn credential(store: &Store, id: String) -> Result<Option<Credential>, DomainError> {
    store
        .read(move |conn| {
            let row: Option<(String, String)> = conn
                .prepare_cached(
                    "SELECT kind, password_hash FROM devices WHERE id = ?1 AND revoked_ms IS NULL",
                )?
                .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            Ok(row.and_then(|(kind, password_hash)| {
                Some(Credential {
                    kind: DeviceKind::parse(&kind)?,
                    password_hash,
                })
            }))
        })
        .await
}

async fn hashed(password: String) -> Result<String, DomainError> {
    crate::hashing::run(move || hash_password(&password))
        .await
        .ok_or(DomainError::Store(crate::store::StoreError::JobPanicked))?
}
