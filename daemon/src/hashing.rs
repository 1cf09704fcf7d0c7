//! A fixed pool of threads for argon2: verifying device passwords stored by earlier versions,
//! which hashed them with argon2 (today's are salted SHA-256, see `domain::devices`; an argon2
//! hash is replaced at the device's first successful login).
//!
//! Why not `spawn_blocking`: each argon2 run needs ~19 MiB, and glibc keeps freed memory in
//! its arenas. 300 kiosks logging in after a restart left the daemon at ~400 MiB resident. Here
//! two dedicated threads each keep one argon2 working area for good ([`verify`]), so logins
//! cost a fixed ~40 MiB however many there are.

use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::oneshot;

/// Threads in the pool.
pub const THREADS: usize = 2;

type Job = Box<dyn FnOnce() + Send>;

static POOL: OnceLock<Option<Mutex<Sender<Job>>>> = OnceLock::new();

fn start() -> Option<Mutex<Sender<Job>>> {
    let (tx, rx) = channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..THREADS {
        let rx = rx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("argon2-{i}"))
            .spawn(move || {
                loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(poisoned) => poisoned.into_inner().recv(),
                    };
                    let Ok(job) = job else { return };
                    // A panicking job must not take the thread (and its arena) with it.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a password-hashing thread");
            return None;
        }
    }
    Some(Mutex::new(tx))
}

/// Runs `work` on the pool; `None` if the pool could not start or the job panicked.
pub async fn run<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> Option<R> {
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(work());
    });
    {
        let sender = POOL.get_or_init(start).as_ref()?;
        let sender = sender
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sender.send(job).ok()?;
    }
    rx.await.ok()
}

thread_local! {
    /// This thread's argon2 working memory, reused by every verification.
    static BLOCKS: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Verifies `password` against an argon2 PHC string with this thread's reused working memory
/// (call it on the pool, through [`run`]). False for a wrong password or an unusable hash.
pub fn verify(password: &[u8], phc: &str) -> bool {
    use argon2::password_hash::{Output, PasswordHash};
    use argon2::{Algorithm, Argon2, Params, Version};
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(expected), Some(salt)) = (parsed.hash, parsed.salt) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        Algorithm::try_from(parsed.algorithm),
        Params::try_from(&parsed),
    ) else {
        return false;
    };
    let version = parsed
        .version
        .map(Version::try_from)
        .transpose()
        .ok()
        .flatten()
        .unwrap_or_default();
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let blocks_needed = params.block_count();
    let hashed = BLOCKS.with(|blocks| {
        let mut blocks = blocks.borrow_mut();
        if blocks.len() < blocks_needed {
            blocks.resize(blocks_needed, argon2::Block::default());
        }
        Argon2::new(algorithm, version, params).hash_password_into_with_memory(
            password,
            salt,
            &mut out,
            &mut blocks[..blocks_needed],
        )
    });
    // `Output` compares in constant time.
    hashed.is_ok() && Output::new(&out).is_ok_and(|computed| computed == expected)
}

/// argon2 refused to hash (a parameter or salt it cannot take: a bug, not bad input).
#[cfg(test)]
#[derive(Debug, thiserror::Error)]
#[error("argon2 could not hash: {0}")]
pub(crate) struct HashError(argon2::password_hash::Error);

#[cfg(test)]
impl From<argon2::password_hash::Error> for HashError {
    fn from(e: argon2::password_hash::Error) -> Self {
        Self(e)
    }
}

#[cfg(test)]
impl From<argon2::Error> for HashError {
    fn from(e: argon2::Error) -> Self {
        Self(e.into())
    }
}

/// Hashes `password` with argon2id (default parameters, random salt) into a PHC string, with
/// this thread's reused working memory: what earlier versions stored, which tests need to make.
#[cfg(test)]
pub(crate) fn hash(password: &[u8]) -> Result<String, HashError> {
    use argon2::password_hash::{Output, PasswordHash, SaltString, rand_core::OsRng};
    use argon2::{Algorithm, Argon2, Params, Version};
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_buf = [0u8; 64];
    let raw_salt = salt.decode_b64(&mut salt_buf)?;
    let params = Params::default();
    let mut out = vec![0u8; Params::DEFAULT_OUTPUT_LEN];
    let blocks_needed = params.block_count();
    BLOCKS.with(|blocks| {
        let mut blocks = blocks.borrow_mut();
        if blocks.len() < blocks_needed {
            blocks.resize(blocks_needed, argon2::Block::default());
        }
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
            .hash_password_into_with_memory(
                password,
                raw_salt,
                &mut out,
                &mut blocks[..blocks_needed],
            )
    })?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: (&params).try_into()?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out)?),
    };
    Ok(phc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_hashes_verify_with_the_library_and_the_reverse() {
        use argon2::{Argon2, PasswordHash, PasswordVerifier};
        let ours = hash(b"s3cret").expect("hashes");
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        let parsed = PasswordHash::new(&ours).expect("a PHC string");
        assert!(
            Argon2::default()
                .verify_password(b"s3cret", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"other", &parsed)
                .is_err()
        );
    }

    #[test]
    fn verification_with_reused_memory_agrees_with_the_library() {
        let phc = hash(b"correct horse").expect("hashes");
        assert!(verify(b"correct horse", &phc));
        assert!(!verify(b"wrong horse", &phc));
        assert!(
            verify(b"correct horse", &phc),
            "the reused memory gives the same answer again"
        );
        assert!(!verify(b"correct horse", "not a phc string"));
    }
}
