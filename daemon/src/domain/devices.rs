//! The device registry: kiosks, signage displays and BLE gateways, with hashed passwords.
//!
//! Devices are this appliance's local access list: they are not ops and do not sync, because a
//! credential hash has no business on the relay (docs/architecture.md records this exception).
//!
//! A device password is never chosen by a person: the appliance draws it, 160 random bits. A
//! slow, memory-hard hash (argon2) protects guessable secrets against offline guessing; a
//! 160-bit secret cannot be guessed however fast each try is, so a salted SHA-256 protects it as
//! well, as for the admin token and API keys generally. What argon2 cost here was real: ~70 ms
//! of CPU and 19 MiB per verification, so 500 kiosks reconnecting after a restart waited up to
//! ~19 s and the daemon kept ~40 MiB of working areas for good. Hashes stored by earlier
//! versions (argon2 PHC strings) still verify, on the argon2 threads, and are replaced by the
//! new form at the device's first successful login ([`upgrade_hash`]).

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
    /// The stored hash: `sha256$<salt>$<digest>` (hex), or an earlier version's argon2 PHC
    /// string.
    pub password_hash: String,
}

/// A new random device password: 160 bits, URL-safe, no padding.
pub fn generate_password() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 20]>())
}

/// The scheme prefix of a stored device password hash.
const SHA256_SCHEME: &str = "sha256";
/// Random salt per hash, bytes.
const SALT_LEN: usize = 16;

/// Hashes a device password for storage: `sha256$<salt hex>$<digest hex>`, the digest taken
/// over the salt and the password. Cheap: see the module docs for why that is safe here.
pub fn hash_password(password: &str) -> String {
    let salt: [u8; SALT_LEN] = rand::random();
    format!(
        "{SHA256_SCHEME}${}${}",
        hex::encode(salt),
        hex::encode(salted_sha256(&salt, password))
    )
}

fn salted_sha256(salt: &[u8], password: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::new()
        .chain_update(salt)
        .chain_update(password.as_bytes())
        .finalize()
        .into()
}

/// What checking a password against a stored hash found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordCheck {
    /// The password is right.
    Match,
    /// The password is wrong, or the stored hash is unusable.
    Mismatch,
    /// The stored hash is an earlier version's argon2 PHC string: verify it with
    /// [`crate::hashing::verify`] on the argon2 threads, then [`upgrade_hash`].
    Argon2,
}

/// Checks `password` against a stored hash; argon2 hashes are left to the caller (they are
/// slow and belong on the argon2 threads).
pub fn check_password(password: &str, stored: &str) -> PasswordCheck {
    if stored.starts_with("$argon2") {
        return PasswordCheck::Argon2;
    }
    let mut parts = stored.split('$');
    let (Some(SHA256_SCHEME), Some(salt), Some(digest), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return PasswordCheck::Mismatch;
    };
    let (Ok(salt), Ok(digest)) = (hex::decode(salt), hex::decode(digest)) else {
        return PasswordCheck::Mismatch;
    };
    // Comparing digests of a salted 160-bit secret: how long the comparison takes can reveal at
    // most a prefix of the stored digest, which does not help anyone find a preimage.
    match salted_sha256(&salt, password).as_slice() == digest.as_slice() {
        true => PasswordCheck::Match,
        false => PasswordCheck::Mismatch,
    }
}

/// Replaces a device's earlier-version hash by `new_hash`, if it still holds `old_hash` (a
/// password reset or revocation meanwhile wins). Whether it was replaced.
pub async fn upgrade_hash(
    store: &Store,
    id: String,
    old_hash: String,
    new_hash: String,
) -> Result<bool, DomainError> {
    store
        .write(move |ctx| {
            let n = ctx.conn().execute(
                "UPDATE devices SET password_hash = ?1
                 WHERE id = ?2 AND password_hash = ?3 AND revoked_ms IS NULL",
                params![new_hash, id, old_hash],
            )?;
            Ok(n == 1)
        })
        .await
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
    let hash = hash_password(&password);
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

/// Makes the registry agree with the configuration's `[[devices]]`: each declared device exists,
/// active, with the declared kind, name and password hash (a revoked one is reinstated, since
/// the configuration says it belongs). Devices not declared are left alone. The declarations
/// were validated with the configuration. How many rows changed.
pub async fn ensure_configured(
    store: &Store,
    event_id: &str,
    declared: &[crate::config::DeviceConfig],
) -> Result<usize, DomainError> {
    if declared.is_empty() {
        return Ok(0);
    }
    let declared = declared.to_vec();
    let event_id = event_id.to_string();
    store
        .write(move |ctx| {
            let now = ctx.now_ms() as i64;
            let mut changed = 0;
            for d in &declared {
                changed += ctx.conn().execute(
                    "INSERT INTO devices (id, event_id, kind, name, password_hash, created_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (id) DO UPDATE SET event_id = excluded.event_id,
                       kind = excluded.kind, name = excluded.name,
                       password_hash = excluded.password_hash, revoked_ms = NULL
                     WHERE devices.event_id IS NOT excluded.event_id
                       OR devices.kind IS NOT excluded.kind OR devices.name IS NOT excluded.name
                       OR devices.password_hash IS NOT excluded.password_hash
                       OR devices.revoked_ms IS NOT NULL",
                    params![d.id, event_id, d.kind, d.name, d.password_hash, now],
                )?;
            }
            Ok(changed)
        })
        .await
}

/// Gives an active device a new password; returns it.
pub async fn reset_password(store: &Store, id: String) -> Result<String, DomainError> {
    let password = generate_password();
    let hash = hash_password(&password);
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
