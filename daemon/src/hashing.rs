//! A fixed pool of threads for argon2 (hashing device passwords, verifying logins).
//!
//! Why not `spawn_blocking`: each argon2 run takes ~19 MiB, and glibc keeps freed memory in a
//! per-thread arena. Spread over the blocking pool's many threads, 500 kiosks logging in after
//! a restart left the daemon at ~220 MiB resident. Two dedicated threads keep it to two arenas;
//! the callers' own concurrency limit already allows only two verifications at once.

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
