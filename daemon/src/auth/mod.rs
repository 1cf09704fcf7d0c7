//! Authentication of admins (bearer token) and devices (id and password).
//!
//! The admin token is 256 random bits, so its SHA-256 is enough to store it safely; device
//! passwords are 160 random bits drawn by the appliance, stored as salted SHA-256 for the same
//! reason (`domain::devices` says why argon2 is not used for them). A successful verification is
//! remembered for [`DEVICE_CACHE_TTL_SECS`] as the SHA-256 of what was presented (never the
//! password), which spares the database read on a kiosk's every request. Hashes an earlier
//! version stored with argon2 still verify, at most [`ARGON2_VERIFY_SLOTS`] at once, and are
//! replaced by the cheap form on the first success.

pub mod tokens;

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::domain::DomainError;
use crate::domain::devices::{self, DeviceKind};
use crate::store::{Store, meta};

/// The admin token's file name in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// How long a verified device credential is trusted without checking the store again.
pub const DEVICE_CACHE_TTL_SECS: u64 = 300;
/// Most device credentials remembered at once.
const DEVICE_CACHE_MAX_ENTRIES: usize = 10_000;
/// Most argon2 verifications (of hashes stored by earlier versions) running at once: the Pi 5
/// and the test machine have few cores.
pub const ARGON2_VERIFY_SLOTS: usize = 2;

/// Why a request was not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credentials, or wrong ones. Deliberately vague towards the client.
    #[error("missing or wrong credentials")]
    Denied,
    /// The store failed while checking.
    #[error(transparent)]
    Domain(#[from] DomainError),
}

/// The result of [`ensure_admin_token`].
pub struct AdminToken {
    /// SHA-256 (hex) of the token.
    pub sha256: String,
    /// Where a newly generated token was written; `None` when one existed already.
    pub written_to: Option<PathBuf>,
}

/// The `meta` key of the admin token's SHA-256.
const ADMIN_TOKEN_KEY: &str = "admin_token_sha256";

/// Loads the admin token's hash, or on first start generates a token, writes it to
/// `<data_dir>/admin-token` with mode 0600, and stores its hash. A `provisioned` hash
/// (`http.admin_token_sha256`, 64 hex digits, already validated) replaces the stored one instead:
/// the token was made outside and only its hash travels.
pub async fn ensure_admin_token(
    store: &Store,
    data_dir: &Path,
    provisioned: Option<&str>,
) -> Result<AdminToken, DomainError> {
    if let Some(hash) = provisioned {
        let sha256 = hash.to_ascii_lowercase();
        let stored = sha256.clone();
        store
            .write(move |ctx| {
                Ok::<_, DomainError>(meta::set(ctx.conn(), ADMIN_TOKEN_KEY, &stored)?)
            })
            .await?;
        return Ok(AdminToken {
            sha256,
            written_to: None,
        });
    }
    let existing = store
        .read(|conn| Ok::<_, DomainError>(meta::get(conn, ADMIN_TOKEN_KEY)?))
        .await?;
    if let Some(sha256) = existing {
        return Ok(AdminToken {
            sha256,
            written_to: None,
        });
    }
    let token = format!(
        "vat_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    );
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    // The file first: a crash before the hash is stored only means a new token next start.
    write_secret(&path, &token).map_err(|e| {
        DomainError::Invalid(format!(
            "cannot write the admin token to {}: {e}",
            path.display()
        ))
    })?;
    let sha256 = sha256_hex(token.as_bytes());
    let stored = sha256.clone();
    store
        .write(move |ctx| Ok::<_, DomainError>(meta::set(ctx.conn(), ADMIN_TOKEN_KEY, &stored)?))
        .await?;
    Ok(AdminToken {
        sha256,
        written_to: Some(path),
    })
}

fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` applies only when the file is created; tighten a pre-existing one too.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

struct Cached {
    presented_sha256: [u8; 32],
    kind: DeviceKind,
    verified_at: Instant,
}

/// Failed authentications a source address may make per window before it is refused.
pub const MAX_AUTH_FAILURES_PER_WINDOW: u32 = 10;
/// The failure-counting window, seconds.
pub const AUTH_FAILURE_WINDOW_SECS: u64 = 60;
/// Source addresses whose failures are tracked at once (least recently failed evicted first).
const MAX_TRACKED_SOURCES: usize = 10_000;

/// Counts failed authentications per source address: past the limit, the address is refused
/// for the rest of the window, before any credential (or argon2) work is done. The same type the
/// relay uses.
pub use sync_agent::limit::FailureLimiter;

/// The appliance's budget: [`MAX_AUTH_FAILURES_PER_WINDOW`] per [`AUTH_FAILURE_WINDOW_SECS`].
pub fn failure_limiter() -> FailureLimiter {
    FailureLimiter::new(
        MAX_AUTH_FAILURES_PER_WINDOW,
        Duration::from_secs(AUTH_FAILURE_WINDOW_SECS),
        MAX_TRACKED_SOURCES,
    )
}

/// Wrong sign-ins one ticket code may take per [`TICKET_FAILURE_WINDOW_SECS`] (from any number of
/// addresses) before it is refused: guessing the name or email of a known ticket stays slow.
pub const MAX_TICKET_FAILURES_PER_WINDOW: u32 = 5;
/// The per-ticket window, seconds.
pub const TICKET_FAILURE_WINDOW_SECS: u64 = 15 * 60;

/// Checks credentials presented with requests.
pub struct Authenticator {
    admin_sha256: String,
    devices: Mutex<HashMap<String, Cached>>,
    verify_slots: Semaphore,
    /// Bumped by every [`Authenticator::forget_device`]; a verification that overlapped one is
    /// not cached, so a revocation can never be undone by a login already in flight.
    generation: AtomicU64,
    /// Failed attempts per source address.
    pub failures: FailureLimiter,
    /// Failed attendee sign-ins per ticket code.
    pub ticket_failures: FailureLimiter<String>,
}

impl Authenticator {
    /// An authenticator for the admin token whose SHA-256 (hex) is `admin_sha256`.
    pub fn new(admin_sha256: String) -> Self {
        Self {
            admin_sha256,
            devices: Mutex::new(HashMap::new()),
            verify_slots: Semaphore::new(ARGON2_VERIFY_SLOTS),
            generation: AtomicU64::new(0),
            failures: failure_limiter(),
            ticket_failures: FailureLimiter::new(
                MAX_TICKET_FAILURES_PER_WINDOW,
                Duration::from_secs(TICKET_FAILURE_WINDOW_SECS),
                MAX_TRACKED_SOURCES,
            ),
        }
    }

    /// Whether `token` is the admin token.
    pub fn is_admin(&self, token: &str) -> bool {
        // Comparing digests, not tokens, means timing reveals nothing about the token itself.
        sha256_hex(token.trim().as_bytes()) == self.admin_sha256
    }

    /// Verifies a device's id and password; the device's kind on success.
    pub async fn device(
        &self,
        store: &Store,
        id: &str,
        password: &str,
    ) -> Result<DeviceKind, AuthError> {
        let presented: [u8; 32] = Sha256::new()
            .chain_update(id.as_bytes())
            .chain_update([0u8])
            .chain_update(password.as_bytes())
            .finalize()
            .into();
        if let Some(kind) = self.cached(id, &presented) {
            return Ok(kind);
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let Some(credential) = devices::credential(store, id.to_string()).await? else {
            return Err(AuthError::Denied);
        };
        let ok = match devices::check_password(password, &credential.password_hash) {
            devices::PasswordCheck::Match => true,
            devices::PasswordCheck::Mismatch => false,
            devices::PasswordCheck::Argon2 => {
                self.verify_argon2(store, id, password, credential.password_hash)
                    .await
            }
        };
        if !ok {
            return Err(AuthError::Denied);
        }
        if self.generation.load(Ordering::SeqCst) == generation {
            self.remember(id, presented, credential.kind);
        }
        Ok(credential.kind)
    }

    /// Verifies a hash stored by an earlier version (argon2) on the argon2 threads and, when it
    /// matches, stores the cheap form in its place, so each device pays this once.
    async fn verify_argon2(&self, store: &Store, id: &str, password: &str, stored: String) -> bool {
        let Ok(_slot) = self.verify_slots.acquire().await else {
            return false;
        };
        let (presented, phc) = (password.to_string(), stored.clone());
        let ok = crate::hashing::run(move || crate::hashing::verify(presented.as_bytes(), &phc))
            .await
            .unwrap_or(false);
        if ok {
            let new_hash = devices::hash_password(password);
            // The login stands either way; the next one tries the upgrade again.
            if let Err(e) = devices::upgrade_hash(store, id.to_string(), stored, new_hash).await {
                tracing::warn!(device = id, error = %e, "could not replace an argon2 password hash");
            }
        }
        ok
    }

    /// Forgets a device's cached verification (after revocation or a password reset).
    pub fn forget_device(&self, id: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.lock().remove(id);
    }

    fn cached(&self, id: &str, presented: &[u8; 32]) -> Option<DeviceKind> {
        let devices = self.lock();
        let entry = devices.get(id)?;
        let fresh = entry.verified_at.elapsed() < Duration::from_secs(DEVICE_CACHE_TTL_SECS);
        (fresh && entry.presented_sha256 == *presented).then_some(entry.kind)
    }

    fn remember(&self, id: &str, presented_sha256: [u8; 32], kind: DeviceKind) {
        let mut devices = self.lock();
        if devices.len() >= DEVICE_CACHE_MAX_ENTRIES {
            devices.clear();
        }
        devices.insert(
            id.to_string(),
            Cached {
                presented_sha256,
                kind,
                verified_at: Instant::now(),
            },
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.devices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn a_source_is_refused_after_its_failure_budget_and_others_are_not() {
        let limiter = failure_limiter();
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        for _ in 0..MAX_AUTH_FAILURES_PER_WINDOW {
            assert!(limiter.check(a).is_ok());
            limiter.failed(a);
        }
        let retry = limiter.check(a).expect_err("over budget");
        assert!(retry <= Duration::from_secs(AUTH_FAILURE_WINDOW_SECS));
        assert!(limiter.check(b).is_ok());
    }

    /// A provisioned hash replaces a generated token, writes no file, and a later start without
    /// it keeps the provisioned hash rather than minting a new token.
    #[tokio::test]
    async fn a_provisioned_admin_hash_replaces_the_generated_token() {
        let (dir, store) = test_store();
        let generated = ensure_admin_token(&store, dir.path(), None)
            .await
            .expect("mints");
        std::fs::remove_file(dir.path().join(ADMIN_TOKEN_FILE)).expect("written");
        let token = "vat_provisioned-from-the-image";
        let hash = sha256_hex(token.as_bytes()).to_ascii_uppercase();
        let provisioned = ensure_admin_token(&store, dir.path(), Some(&hash))
            .await
            .expect("stores");
        assert_ne!(provisioned.sha256, generated.sha256);
        assert!(provisioned.written_to.is_none());
        assert!(!dir.path().join(ADMIN_TOKEN_FILE).exists());
        let auth = Authenticator::new(provisioned.sha256);
        assert!(auth.is_admin(token));
        let again = ensure_admin_token(&store, dir.path(), None)
            .await
            .expect("reads");
        assert_eq!(again.sha256, sha256_hex(token.as_bytes()));
        assert!(again.written_to.is_none());
    }

    /// Declared devices log in with their declared password, a revoked one is reinstated at the
    /// next start, a changed hash replaces the old password, and an unchanged start writes
    /// nothing.
    #[tokio::test]
    async fn devices_declared_in_the_configuration_are_kept_as_declared() {
        let (_dir, store) = test_store();
        let declare = |password: &str| {
            vec![crate::config::DeviceConfig {
                id: "kiosk-1".into(),
                kind: "kiosk".into(),
                name: "Desk 1".into(),
                password_hash: devices::hash_password(password),
            }]
        };
        // A new authenticator per check, as each start of the daemon has: its cache of
        // verified logins is not what is under test.
        let logs_in = |password: &'static str| {
            let store = store.clone();
            async move {
                Authenticator::new(String::new())
                    .device(&store, "kiosk-1", password)
                    .await
                    .is_ok()
            }
        };
        let first = declare("first-password-of-27-chars-x");
        assert_eq!(
            devices::ensure_configured(&store, "ev", &first)
                .await
                .expect("registers"),
            1
        );
        assert!(logs_in("first-password-of-27-chars-x").await);
        assert_eq!(
            devices::ensure_configured(&store, "ev", &first)
                .await
                .expect("reads"),
            0
        );
        devices::revoke(&store, "kiosk-1".into())
            .await
            .expect("revokes");
        assert!(!logs_in("first-password-of-27-chars-x").await);
        assert_eq!(
            devices::ensure_configured(&store, "ev", &first)
                .await
                .expect("reinstates"),
            1
        );
        assert!(logs_in("first-password-of-27-chars-x").await);
        let second = declare("second-password-of-27-chars");
        devices::ensure_configured(&store, "ev", &second)
            .await
            .expect("updates");
        assert!(!logs_in("first-password-of-27-chars-x").await);
        assert!(logs_in("second-password-of-27-chars").await);
    }

    fn test_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(
            dir.path(),
            &crate::store::StoreOptions::default(),
            crate::metrics::StoreMetrics::detached(),
        )
        .expect("store");
        (dir, store)
    }

    async fn stored_hash(store: &Store, id: &str) -> String {
        devices::credential(store, id.to_string())
            .await
            .expect("reads")
            .expect("an active device")
            .password_hash
    }

    /// Device passwords are stored as salted SHA-256; an argon2 hash an earlier version stored
    /// still verifies, and is replaced by the cheap form at the first successful login only.
    #[tokio::test]
    async fn device_passwords_verify_and_earlier_argon2_hashes_are_upgraded_on_login() {
        let (_dir, store) = test_store();
        let (_, password) =
            devices::create(&store, "ev", "k1".into(), DeviceKind::Kiosk, "desk".into())
                .await
                .expect("registers");
        let current = stored_hash(&store, "k1").await;
        assert!(current.starts_with("sha256$"), "{current}");
        assert!(!current.contains(&password), "never the password itself");

        let auth = Authenticator::new(String::new());
        assert_eq!(
            auth.device(&store, "k1", &password).await.ok(),
            Some(DeviceKind::Kiosk)
        );
        assert!(auth.device(&store, "k1", "wrong").await.is_err());
        assert!(auth.device(&store, "k2", &password).await.is_err());

        // What an earlier version stored for the same password.
        let argon2 = crate::hashing::hash(password.as_bytes()).expect("hashes");
        assert!(
            devices::upgrade_hash(&store, "k1".into(), current, argon2.clone())
                .await
                .expect("writes")
        );
        let auth = Authenticator::new(String::new());
        assert!(auth.device(&store, "k1", "wrong").await.is_err());
        assert_eq!(
            stored_hash(&store, "k1").await,
            argon2,
            "a wrong password changes nothing"
        );
        assert_eq!(
            auth.device(&store, "k1", &password).await.ok(),
            Some(DeviceKind::Kiosk)
        );
        let upgraded = stored_hash(&store, "k1").await;
        assert!(upgraded.starts_with("sha256$"), "{upgraded}");
        let auth = Authenticator::new(String::new());
        assert_eq!(
            auth.device(&store, "k1", &password).await.ok(),
            Some(DeviceKind::Kiosk),
            "the upgraded hash verifies"
        );
    }

    #[test]
    fn a_malformed_stored_hash_never_matches() {
        let good = devices::hash_password("pw");
        assert_eq!(
            devices::check_password("pw", &good),
            devices::PasswordCheck::Match
        );
        assert_eq!(
            devices::check_password("pX", &good),
            devices::PasswordCheck::Mismatch
        );
        for stored in [
            "",
            "sha256$",
            "sha256$zz$00",
            "sha256$00$",
            "md5$00$00",
            &format!("{good}$x"),
        ] {
            assert_eq!(
                devices::check_password("pw", stored),
                devices::PasswordCheck::Mismatch,
                "{stored}"
            );
        }
    }
}
