//! Attendee tokens: JWTs (EdDSA or ES256) verified offline against public keys held in the
//! store. Every appliance also holds its own signing key, made at first start, for the tokens
//! of attendees who sign in on site.

use std::collections::HashMap;
use std::path::Path;
use std::sync::RwLock;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::domain::{DomainError, token_keys};
use crate::store::Store;

/// The prefix of an appliance's own key id: `appliance-<16 hex digits of the key's SHA-256>`.
/// (Before keys travelled by sync every appliance used `local`; such a key, still installed,
/// keeps verifying the tokens it signed.)
pub const APPLIANCE_KID_PREFIX: &str = "appliance-";
/// File (in the data directory) holding the local signing key, PKCS#8 DER, mode 0600.
const LOCAL_KEY_FILE: &str = "token-signing-key.pk8";
/// Clock skew tolerated on `exp`, seconds.
const LEEWAY_SECS: u64 = 30;
/// Roles a token may carry.
pub const ROLES: &[&str] = &["attendee", "staff", "speaker"];

/// The claims of an attendee token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The attendee id.
    pub sub: String,
    /// The event the token is for.
    pub event: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// `attendee`, `staff`, `speaker`.
    #[serde(default)]
    pub roles: Vec<String>,
}

impl Claims {
    /// Whether the token carries `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Why a token was refused; the message says what to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// No token in the request.
    #[error("no token: send `Authorization: Bearer <token>` or `?token=<token>`")]
    Missing,
    /// Not a JWT, or its header has no `kid`.
    #[error("the token is not a JWT with a `kid` header: {0}")]
    Malformed(String),
    /// The `kid` is not installed.
    #[error("no verification key `{0}` is installed on this appliance")]
    UnknownKey(String),
    /// Signature, algorithm or claims invalid.
    #[error("the token is invalid: {0}")]
    Invalid(String),
    /// Expired.
    #[error("the token has expired; get a new one (or send auth.refresh)")]
    Expired,
    /// Its `nbf` (not before) is still ahead.
    #[error("the token is not valid yet (its `nbf` is in the future); check this device's clock")]
    NotYetValid,
    /// For another event.
    #[error("the token is for event `{0}`, not this one")]
    WrongEvent(String),
}

/// The installed verification keys.
#[derive(Default)]
pub struct Verifier {
    keys: RwLock<HashMap<String, (Algorithm, DecodingKey)>>,
}

/// Why a verification key cannot be installed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The PEM does not hold a key of the named algorithm.
    #[error("not {expected} public key in PEM: {source}")]
    NotAKey {
        /// The kind of key the algorithm needs.
        expected: &'static str,
        /// The parser's reason.
        source: jsonwebtoken::errors::Error,
    },
    /// An algorithm other than EdDSA or ES256.
    #[error("algorithm `{0}` is not accepted; use EdDSA or ES256")]
    Algorithm(String),
}

fn decoding_key(alg: &str, pem: &str) -> Result<(Algorithm, DecodingKey), KeyError> {
    let not_a = |expected| move |source| KeyError::NotAKey { expected, source };
    match alg {
        "EdDSA" => DecodingKey::from_ed_pem(pem.as_bytes())
            .map(|k| (Algorithm::EdDSA, k))
            .map_err(not_a("an Ed25519")),
        "ES256" => DecodingKey::from_ec_pem(pem.as_bytes())
            .map(|k| (Algorithm::ES256, k))
            .map_err(not_a("a P-256")),
        other => Err(KeyError::Algorithm(other.to_string())),
    }
}

impl Verifier {
    /// Loads every installed key.
    pub async fn load(store: &Store) -> Result<Verifier, DomainError> {
        let rows = store.read(token_keys::all).await?;
        let verifier = Verifier::default();
        for (kid, alg, pem) in rows {
            match decoding_key(&alg, &pem) {
                Ok(key) => {
                    verifier.write().insert(kid, key);
                }
                Err(e) => tracing::warn!(kid, error = %e, "skipping an unusable token key"),
            }
        }
        Ok(verifier)
    }

    /// Installs (or replaces) a key after checking it; stored, then used at once.
    pub async fn install(
        &self,
        store: &Store,
        kid: String,
        alg: String,
        pem: String,
    ) -> Result<(), DomainError> {
        if !crate::config::is_valid_id(&kid) {
            return Err(DomainError::Invalid(format!(
                "kid `{kid}` must be 1-64 characters of a-z, A-Z, 0-9, `-`, `_` or `.`"
            )));
        }
        let key = decoding_key(&alg, &pem).map_err(|e| DomainError::Invalid(e.to_string()))?;
        let (k, a, p) = (kid.clone(), alg, pem);
        store
            .write(move |ctx| token_keys::install_local(ctx.conn(), &k, &a, &p, ctx.now_ms()))
            .await?;
        self.write().insert(kid, key);
        Ok(())
    }

    /// Installs this appliance's own public key under `kid` and logs it as a
    /// `token_key.publish` op of `event` (once: a key already installed is not logged again).
    pub async fn publish_own(
        &self,
        store: &Store,
        event: &str,
        kid: String,
        pem: String,
    ) -> Result<(), DomainError> {
        let key = decoding_key("EdDSA", &pem).map_err(|e| DomainError::Invalid(e.to_string()))?;
        let (k, event) = (kid.clone(), event.to_string());
        store
            .write(move |ctx| {
                if token_keys::installed(ctx.conn(), &k)? {
                    return Ok(());
                }
                let body = serde_json::json!({"alg": "EdDSA", "public_key_pem": pem});
                let op = ctx.new_op(&event, crate::oplog::token_key::PUBLISH, &k, body);
                ctx.apply_owned(op)?;
                Ok::<_, DomainError>(())
            })
            .await?;
        self.write().insert(kid, key);
        Ok(())
    }

    /// Reloads the keys in use from the store (after a key arrived by sync).
    pub async fn reload(&self, store: &Store) -> Result<(), DomainError> {
        let fresh = Verifier::load(store).await?;
        let keys = std::mem::take(&mut *fresh.write());
        *self.write() = keys;
        Ok(())
    }

    /// Replaces the keys the relay supplied with `keys` (keys an admin installed stay), then
    /// reloads the set in use. A key that does not parse is skipped with a warning, not stored.
    pub async fn replace_relay_keys(
        &self,
        store: &Store,
        keys: Vec<sync_agent::wire::TokenKey>,
    ) -> Result<(), DomainError> {
        let usable: Vec<_> = keys
            .into_iter()
            .filter(|k| {
                let ok = crate::config::is_valid_id(&k.kid)
                    && decoding_key(&k.alg, &k.public_pem).is_ok();
                if !ok {
                    tracing::warn!(kid = %k.kid.chars().take(64).collect::<String>(), "the relay sent an unusable token key; skipped");
                }
                ok
            })
            .map(|k| (k.kid, k.alg, k.public_pem))
            .collect::<Vec<_>>();
        store
            .write(move |ctx| token_keys::replace_relay(ctx.conn(), &usable, ctx.now_ms()))
            .await?;
        self.reload(store).await
    }

    /// Verifies `token` for `event`.
    pub fn verify(&self, token: &str, event: &str) -> Result<Claims, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Malformed("no `kid`".into()))?;
        let keys = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (alg, key) = keys.get(&kid).ok_or(TokenError::UnknownKey(kid.clone()))?;
        let mut validation = Validation::new(*alg);
        validation.leeway = LEEWAY_SECS;
        // A token issued for later (a ticket valid from the event's first day) is not yet valid.
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
            jsonwebtoken::errors::ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            _ => TokenError::Invalid(e.to_string()),
        })?;
        let claims = data.claims;
        if claims.event != event {
            return Err(TokenError::WrongEvent(claims.event));
        }
        if crate::domain::entities::validate_id(&claims.sub).is_err() {
            return Err(TokenError::Invalid("`sub` is not an attendee id".into()));
        }
        if let Some(role) = claims.roles.iter().find(|r| !ROLES.contains(&r.as_str())) {
            return Err(TokenError::Invalid(format!("unknown role `{role}`")));
        }
        Ok(claims)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, (Algorithm, DecodingKey)>> {
        self.keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Why the local signing key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// There is none (or it cannot be read).
    #[error(
        "no local signing key at {} ({source}); start venued once on this data directory to make one",
        path.display()
    )]
    Missing {
        /// Where it was looked for.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not an Ed25519 key.
    #[error("{} is not an Ed25519 PKCS#8 key; delete it to make a new one", .0.display())]
    NotEd25519(std::path::PathBuf),
}

/// The appliance's own signing key: PKCS#8 Ed25519, and the key id derived from it.
pub struct Signer {
    pkcs8: Vec<u8>,
    kid: String,
}

impl Signer {
    /// Loads the local signing key from the data directory, creating it on first use, and
    /// makes sure its public half is published: installed here and logged as a
    /// `token_key.publish` op of `event`, so sync carries it to every appliance of the event
    /// and a token signed here opens them all.
    pub async fn ensure(
        store: &Store,
        data_dir: &Path,
        event: &str,
        verifier: &Verifier,
    ) -> Result<Signer, DomainError> {
        let path = data_dir.join(LOCAL_KEY_FILE);
        let pkcs8 = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(_) => {
                let rng = ring::rand::SystemRandom::new();
                let doc = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|_| DomainError::Invalid("cannot generate a signing key".into()))?;
                write_private(&path, doc.as_ref()).map_err(|e| {
                    DomainError::Invalid(format!("cannot write {}: {e}", path.display()))
                })?;
                doc.as_ref().to_vec()
            }
        };
        let (kid, pem) = public_half(&pkcs8).ok_or_else(|| {
            DomainError::Invalid(format!(
                "{} is not an Ed25519 PKCS#8 key; delete it to make a new one",
                path.display()
            ))
        })?;
        verifier.publish_own(store, event, kid.clone(), pem).await?;
        Ok(Signer { pkcs8, kid })
    }

    /// The local signing key from the data directory, if one was made (by a first start).
    pub fn from_data_dir(data_dir: &Path) -> Result<Signer, SignerError> {
        let path = data_dir.join(LOCAL_KEY_FILE);
        let pkcs8 = std::fs::read(&path).map_err(|source| SignerError::Missing {
            path: path.clone(),
            source,
        })?;
        let (kid, _) = public_half(&pkcs8).ok_or(SignerError::NotEd25519(path))?;
        Ok(Signer { pkcs8, kid })
    }

    /// The id its tokens carry in their header (`kid`).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Mints a token for `attendee` in `event`, valid for `ttl_secs`.
    pub fn mint(
        &self,
        attendee: &str,
        event: &str,
        roles: Vec<String>,
        ttl_secs: u64,
    ) -> Result<String, DomainError> {
        let claims = Claims {
            sub: attendee.into(),
            event: event.into(),
            exp: crate::store::now_ms() / 1000 + ttl_secs,
            roles,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&self.pkcs8))
            .map_err(|e| DomainError::Invalid(format!("cannot sign the token: {e}")))
    }
}

/// The key id and public key PEM of an Ed25519 PKCS#8 key; `None` if it is not one.
fn public_half(pkcs8: &[u8]) -> Option<(String, String)> {
    use base64::Engine;
    use ring::signature::KeyPair;
    use sha2::{Digest, Sha256};
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8).ok()?;
    // SubjectPublicKeyInfo for Ed25519 is a fixed 12-byte prefix and the 32-byte key.
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(pair.public_key().as_ref());
    let kid = format!(
        "{APPLIANCE_KID_PREFIX}{}",
        &hex::encode(Sha256::digest(&spki))[..16]
    );
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(&spki)
    );
    Some((kid, pem))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The outside probe: a token whose `nbf` lies in the future was accepted.
    #[tokio::test]
    async fn regression_a_token_not_yet_valid_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(
            dir.path(),
            &crate::store::StoreOptions::default(),
            crate::metrics::StoreMetrics::detached(),
        )
        .expect("store");
        let verifier = Verifier::default();
        let signer = Signer::ensure(&store, dir.path(), "ev", &verifier)
            .await
            .expect("signer");
        let now = crate::store::now_ms() / 1000;
        let sign = |nbf: u64| {
            let claims = serde_json::json!({
                "sub": "a1", "event": "ev", "exp": now + 3600, "roles": [], "nbf": nbf,
            });
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = Some(signer.kid().into());
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&signer.pkcs8))
                .expect("sign")
        };
        assert!(verifier.verify(&sign(now - 10), "ev").is_ok());
        let early = verifier.verify(&sign(now + 3600), "ev");
        assert!(matches!(early, Err(TokenError::NotYetValid)), "{early:?}");
    }
}
