//! The SQLite store: one writer thread with group commit, read-only readers, migrations, and the
//! node's identity (node id, HLC high-water mark).
//!
//! Invariants (DESIGN §3): `journal_mode=WAL` and `synchronous=FULL`, so a write whose future
//! resolves `Ok` is on disk; one thread owns the read-write connection; readers cannot write.

pub mod committed;
pub mod meta;
mod migrations;
mod readers;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use sync_agent::HlcClock;
use tokio::sync::{mpsc, oneshot};

pub use committed::{Committed, Ops, Polled, Subscription};
pub use migrations::LATEST as SCHEMA_VERSION;
pub use writer::WriteCtx;

use crate::metrics::StoreMetrics;
use readers::Readers;
use writer::{Job, TypedJob};

/// Prepared statements the writer keeps (every entity/field statement fits, with room to spare).
const WRITER_STATEMENT_CACHE: usize = 256;

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "venued.db";

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A migration failed; the database was left at its previous version.
    #[error("schema migration to version {version} failed: {source}")]
    Migration {
        /// The version the failed migration would have produced.
        version: u32,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The database was written by a newer daemon.
    #[error(
        "database schema version {found} is newer than this venued supports ({supported}); it was \
         written by a newer release: run that release again, or restore a backup made by this one"
    )]
    NewerSchema {
        /// `user_version` found in the file.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },
    /// The data directory or database could not be prepared.
    #[error("cannot prepare {path}: {source}")]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// SQLite did not switch to WAL mode (e.g. the file system does not support shared memory).
    #[error(
        "cannot enable WAL journal mode on {0} (got `{1}`); put the data directory on a local file system"
    )]
    NoWal(PathBuf, String),
    /// The group this write was part of failed to commit; nothing of it was written.
    #[error("commit failed, nothing was written: {0}")]
    Commit(String),
    /// SQLite rolled back the group's whole transaction by itself (it does on a full disk or an
    /// I/O error in the middle of a statement); nothing of the group was written.
    #[error(
        "the database rolled the transaction back (disk full or I/O error?); nothing was written"
    )]
    RolledBack,
    /// A write job panicked; its savepoint was rolled back.
    #[error("internal error while writing; the write was rolled back")]
    JobPanicked,
    /// The op log holds a row this build cannot read back.
    #[error("unreadable op in the log: {0}")]
    Unreadable(String),
    /// The store is shutting down.
    #[error("the store is closed")]
    Closed,
}

impl StoreError {
    /// A copy of a group-wide error for each caller of the group.
    fn for_caller(&self) -> StoreError {
        match self {
            Self::Commit(msg) => Self::Commit(msg.clone()),
            Self::Closed => Self::Closed,
            Self::RolledBack => Self::RolledBack,
            other => Self::Commit(other.to_string()),
        }
    }
}

/// Store settings (from `[store]` in the config).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Read-only connections.
    pub readers: usize,
    /// Most jobs per transaction.
    pub max_group_writes: usize,
    /// Queue depth in front of the writer.
    pub write_queue_depth: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            readers: crate::config::DEFAULT_STORE_READERS,
            max_group_writes: crate::config::DEFAULT_MAX_GROUP_WRITES,
            write_queue_depth: crate::config::DEFAULT_WRITE_QUEUE_DEPTH,
        }
    }
}

/// Run by the writer thread after each group (see [`Store::open_with_hook`]).
pub type AfterCommit = Arc<dyn Fn(&Connection) + Send + Sync>;

/// A cheap, cloneable handle to the store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: mpsc::Sender<Box<dyn Job>>,
    readers: Arc<Readers>,
    node_id: String,
    path: PathBuf,
    writer_thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    appended_ops: Arc<tokio::sync::Notify>,
    committed: Arc<committed::Publisher>,
    metrics: StoreMetrics,
}

impl Store {
    /// Opens (creating if needed) the store in `data_dir`: migrates, loads the node identity, and
    /// starts the writer thread.
    pub fn open(
        data_dir: &Path,
        options: &StoreOptions,
        metrics: StoreMetrics,
    ) -> Result<Store, StoreError> {
        Self::open_with_hook(data_dir, options, metrics, None)
    }

    /// As [`Store::open`], with `after_commit` run on the writer thread after every group, outside
    /// any transaction, with no other write in progress. With a hook, SQLite's automatic
    /// checkpoints are off: the hook (the replica) decides when the WAL is checkpointed, so no
    /// frame is checkpointed before it has been copied.
    pub fn open_with_hook(
        data_dir: &Path,
        options: &StoreOptions,
        metrics: StoreMetrics,
        after_commit: Option<AfterCommit>,
    ) -> Result<Store, StoreError> {
        let path = data_dir.join(DB_FILE);
        make_private(data_dir, &path)?;
        let mut conn = Connection::open(&path)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NoWal(path, mode));
        }
        conn.execute_batch(
            "PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA temp_store = MEMORY;",
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        if after_commit.is_some() {
            conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")?;
        }
        // Every entity kind and field has its own statements; keep them all prepared.
        conn.set_prepared_statement_cache_capacity(WRITER_STATEMENT_CACHE);
        migrations::migrate(&mut conn)?;
        let node_id = load_or_create_node_id(&conn)?;
        let clock = HlcClock::new(node_id.clone(), load_hlc_high_water(&conn)?);
        let readers = Readers::open(&path, options.readers)?;

        let last_seq: i64 =
            conn.query_row("SELECT coalesce(max(seq), 0) FROM ops", [], |r| r.get(0))?;
        let (tx, rx) = mpsc::channel(options.write_queue_depth);
        let max_group = options.max_group_writes;
        let appended_ops = Arc::new(tokio::sync::Notify::new());
        let committed = Arc::new(committed::Publisher::new(last_seq));
        let signals = writer::Signals {
            appended_ops: appended_ops.clone(),
            committed: committed.clone(),
        };
        let writer_metrics = metrics.clone();
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                writer::run(
                    conn,
                    rx,
                    clock,
                    max_group,
                    writer_metrics,
                    signals,
                    after_commit,
                )
            })
            .map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(Store {
            inner: Arc::new(Inner {
                jobs: tx,
                readers,
                node_id,
                path,
                writer_thread: std::sync::Mutex::new(Some(handle)),
                appended_ops,
                committed,
                metrics,
            }),
        })
    }

    /// This appliance's node id (stable across restarts).
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `work` on the writer thread inside a transaction shared with other concurrent writes.
    /// Resolves after the transaction is durably committed (or with the error that stopped it).
    /// An `Err` from `work` rolls back everything `work` did, and only that.
    pub async fn write<R, E, F>(&self, work: F) -> Result<R, E>
    where
        F: FnOnce(&mut WriteCtx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(TypedJob { work, reply });
        self.inner
            .jobs
            .send(job)
            .await
            .map_err(|_| E::from(StoreError::Closed))?;
        answer.await.map_err(|_| E::from(StoreError::Closed))?
    }

    /// Runs `query` on a read-only connection on the blocking pool.
    pub async fn read<R, E, F>(&self, query: F) -> Result<R, E>
    where
        F: FnOnce(&Connection) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.inner.readers.read(query).await
    }

    /// Resolves once a commit has appended ops since the previous call returned. Meant for one
    /// waiter (the sync agent): a commit while nobody waits is remembered for the next call.
    pub async fn ops_appended(&self) {
        self.inner.appended_ops.notified().await;
    }

    /// Proves the writer is alive and the database writable: a real write (a row changed to a
    /// new value, committed with fsync). An update to the same value writes nothing, and would
    /// pass on a full disk.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.write(|ctx| {
            ctx.conn().execute(
                "INSERT INTO meta (key, value) VALUES ('ping', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![ctx.now_ms().to_string()],
            )?;
            Ok(())
        })
        .await
    }

    /// Bytes free for this store's files on their file system (for an unprivileged process).
    pub fn free_bytes(&self) -> Result<u64, StoreError> {
        let dir = self.inner.path.parent().unwrap_or(Path::new("."));
        let stat = nix::sys::statvfs::statvfs(dir).map_err(|e| StoreError::Io {
            path: dir.to_path_buf(),
            source: e.into(),
        })?;
        Ok(stat.blocks_available().saturating_mul(stat.fragment_size()))
    }

    /// Waits for queued writes to commit and stops the writer thread. Other clones of the handle
    /// get [`StoreError::Closed`] afterwards only once they too are dropped; call this last.
    pub async fn close(self) {
        let handle = self
            .inner
            .writer_thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(self);
        if let Some(handle) = handle {
            // The writer exits when the last sender (inside the last Store clone) is dropped.
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

/// Checkpoints the WAL into the database and truncates it (`wal_checkpoint(TRUNCATE)`), on the
/// writer's connection from the after-commit hook: (busy, frames in the log, frames
/// checkpointed), as SQLite reports them.
pub fn checkpoint_truncate(conn: &Connection) -> Result<(i64, i64, i64), rusqlite::Error> {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Creates the data directory (0700) and the database file (0600) so that only venued's user can
/// read them: they hold attendees' names, tickets and messages. SQLite gives the WAL and shared
/// memory files the database file's mode. An existing directory or file is narrowed to the same
/// modes; where that is not allowed (someone else's directory), a warning says so.
fn make_private(data_dir: &Path, db: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(io(data_dir))?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(db)
        .map_err(io(db))?;
    for (path, mode) in [(data_dir, 0o700), (db, 0o600)] {
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
            tracing::warn!(path = %path.display(), error = %e, "cannot make this private to venued's user (mode {mode:o}); other users may read attendees' data");
        }
    }
    Ok(())
}

fn load_or_create_node_id(conn: &Connection) -> Result<String, StoreError> {
    let existing: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'node_id'", [], |r| {
            r.get(0)
        })
        .optional()?;
    if let Some(id) = existing {
        return Ok(id);
    }
    let id = format!("n{}", hex::encode(rand::random::<[u8; 8]>()));
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('node_id', ?1)",
        params![id],
    )?;
    tracing::info!(node_id = %id, "generated this appliance's node id");
    Ok(id)
}

/// The highest HLC issued or seen: the persisted mark, or the newest op if it is higher (the
/// mark is written in the same transaction as ops, so this only guards against older files).
///
/// Releases before the clock bound let one remote op stamped past `i64::MAX` drag the clock
/// there; those stamps were stored negative. Such a mark, and the negative stamps, are ignored
/// here, so the clock resumes after the newest sane stamp (docs/operations.md, "A poisoned
/// clock").
fn load_hlc_high_water(conn: &Connection) -> Result<(u64, u32), StoreError> {
    let saved: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'hlc'", [], |r| r.get(0))
        .optional()?;
    let saved = saved
        .and_then(|s| {
            let (w, c) = s.split_once(':')?;
            Some((w.parse().ok()?, c.parse().ok()?))
        })
        .unwrap_or((0, 0));
    let saved = match saved.0 > sync_agent::hlc::MAX_WALL_MS {
        true => {
            tracing::warn!(
                wall_ms = saved.0,
                "the persisted clock was past i64::MAX (poisoned by a remote op before this release); resuming after the newest valid stamp"
            );
            (0, 0)
        }
        false => saved,
    };
    let newest: Option<(i64, i64)> = conn
        .query_row(
            "SELECT hlc_wall, hlc_counter FROM ops WHERE hlc_wall >= 0
             ORDER BY hlc_wall DESC, hlc_counter DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let newest = newest.map(|(w, c)| (w as u64, c as u32)).unwrap_or((0, 0));
    let mark = saved.max(newest);
    let ahead = mark.0.saturating_sub(now_ms());
    if ahead > sync_agent::MAX_CLOCK_AHEAD_MS {
        tracing::error!(
            ahead_ms = ahead,
            "this appliance's clock is ahead of the wall clock by more than the sync bound; ops stamped in the future reached it before this release (docs/operations.md, \"A poisoned clock\")"
        );
    }
    Ok(mark)
}

fn save_hlc_high_water(conn: &Connection, mark: (u64, u32)) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('hlc', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![format!("{}:{}", mark.0, mark.1)],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests;

/// Migrates a bare connection (for other modules' unit tests).
#[cfg(test)]
pub(crate) fn migrate_for_tests(conn: &mut Connection) {
    migrations::migrate(conn).expect("migrations apply");
}
