//! Litestream-compatible replication of the appliance database to S3, and restore
//! (`docs/operations.md`, `research/litestream-ltx.md`).
//!
//! - [`shipper`]: committed WAL frames → staged LTX files (level 0, one TXID per sync), full
//!   copies when continuity is lost, level-9 snapshots; checkpoints only after staging.
//! - here: the timer, the uploader (staged files → S3 in TXID order, with backoff; retention
//!   after each snapshot), status, and `venued restore`.

mod shipper;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sync_agent::replica::layout::{FileInfo, SNAPSHOT_LEVEL};
use sync_agent::replica::plan::Target;
use sync_agent::replica::restore::{RestoreError, Restored, restore as restore_from};
use sync_agent::replica::store::{DirStore, ReplicaStore, S3Location, S3Store, UrlError};

use crate::config::ReplicaConfig;
use crate::store::{AfterCommit, Store};
use shipper::{Progress, Shipper, parse_staged};

/// What `/api/v1/status` and `/metrics` show.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReplicaStatus {
    /// Bucket and path.
    pub target: String,
    /// Highest TXID staged locally.
    pub staged_txid: u64,
    /// Highest TXID in the bucket.
    pub uploaded_txid: u64,
    /// TXIDs staged and not yet uploaded.
    pub lag_txids: u64,
    /// Age of the oldest staged file not yet uploaded (0 when none).
    pub lag_secs: f64,
    /// Bytes waiting to be uploaded.
    pub staged_bytes: u64,
    /// Failed uploads since start.
    pub upload_errors: u64,
    /// The last upload error, if the last attempt failed.
    pub last_error: Option<String>,
}

/// A running replica.
#[derive(Clone)]
pub struct Replica {
    shipper: Arc<Mutex<Shipper>>,
    progress: Arc<Progress>,
    status: Arc<Mutex<ReplicaStatus>>,
    staged_dir: PathBuf,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The S3 location of `[replica]`.
pub fn location(config: &ReplicaConfig) -> S3Location {
    S3Location {
        bucket: config.bucket.clone(),
        path: config.path.trim_matches('/').to_string(),
        endpoint: config.endpoint.clone(),
        region: config.region.clone(),
        force_path_style: config.force_path_style,
    }
}

/// An S3 store for `[replica]` (static keys when configured, else the AWS credential chain).
pub async fn s3(config: &ReplicaConfig, loc: S3Location) -> S3Store {
    match config.access_key_id.is_empty() {
        true => S3Store::connect(loc).await,
        false => {
            S3Store::connect_with_keys(loc, &config.access_key_id, &config.secret_access_key).await
        }
    }
}

impl Replica {
    /// Prepares the replica for the database in `data_dir`; returns it and the hook the store's
    /// writer must run after each commit.
    pub fn prepare(
        config: &ReplicaConfig,
        data_dir: &Path,
    ) -> std::io::Result<(Replica, AfterCommit)> {
        let progress = Arc::new(Progress::default());
        let dir = data_dir.join("replica");
        let shipper = Shipper::new(
            &data_dir.join(crate::store::DB_FILE),
            &dir,
            config.checkpoint_pages,
            config.max_staged_bytes,
            progress.clone(),
        )?;
        let shipper = Arc::new(Mutex::new(shipper));
        let hook_shipper = shipper.clone();
        let hook: AfterCommit = Arc::new(move |conn| lock(&hook_shipper).after_commit(conn));
        let status = ReplicaStatus {
            target: format!("s3://{}/{}", config.bucket, config.path.trim_matches('/')),
            ..ReplicaStatus::default()
        };
        Ok((
            Replica {
                shipper,
                progress,
                status: Arc::new(Mutex::new(status)),
                staged_dir: dir.join("staged"),
            },
            hook,
        ))
    }

    /// Starts the timer and the uploader; both run until `shutdown` turns true. An upload in
    /// flight is abandoned: staged files stay on disk and go out after the next start, which
    /// also takes a full copy (a restart is a break in continuity the replica cannot prove).
    pub async fn start(
        &self,
        config: &ReplicaConfig,
        store: Store,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let s3 = s3(config, location(config)).await;
        let interval = Duration::from_millis(config.sync_interval_ms);
        let snapshot_every = Duration::from_secs(config.snapshot_interval_secs);
        let retention_ms = config.snapshot_retention_secs as i64 * 1000;
        let me = self.clone();
        tokio::spawn(async move {
            let uploader = tokio::spawn(me.clone().upload_loop(s3, retention_ms, store.clone()));
            let _guard = sync_agent::agent::AbortOnDrop(uploader.abort_handle());
            // The first commit runs the hook: a full copy on first start.
            let _ = store.ping().await;
            let mut tick = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                let (needs_writer, _) = {
                    let me2 = me.clone();
                    tokio::task::spawn_blocking(move || {
                        let mut s = lock(&me2.shipper);
                        if let Err(e) = s.ship() {
                            tracing::warn!(error = %e, "replica could not stage committed frames");
                        }
                        let due = crate::store::now_ms() as i64 - s.state.last_snapshot_ms
                            >= snapshot_every.as_millis() as i64;
                        if due {
                            s.snapshot_due = true;
                        }
                        (s.full_needed || s.snapshot_due, ())
                    })
                    .await
                    .unwrap_or((false, ()))
                };
                if needs_writer {
                    // The writer's hook checkpoints and takes the copy; an empty commit runs it.
                    let _ = store.ping().await;
                }
            }
        })
    }

    /// The current figures.
    pub fn status(&self) -> ReplicaStatus {
        let mut s = lock(&self.status).clone();
        s.staged_txid = self.progress.staged_txid.load(Ordering::Relaxed);
        s.uploaded_txid = self.progress.uploaded_txid.load(Ordering::Relaxed);
        s.lag_txids = s.staged_txid.saturating_sub(s.uploaded_txid);
        s.staged_bytes = self.progress.staged_bytes.load(Ordering::Relaxed);
        s.lag_secs = oldest_staged_age(&self.staged_dir);
        s
    }

    async fn upload_loop(self, s3: S3Store, retention_ms: i64, store: Store) {
        let mut backoff =
            sync_agent::backoff::Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        // Continue numbering after what the bucket holds (another box, or a lost local state).
        loop {
            match s3.list_all().await {
                Ok(files) => {
                    let remote_max = files.iter().map(|f| f.max_txid).max().unwrap_or(0);
                    self.progress
                        .uploaded_txid
                        .store(remote_max, Ordering::Relaxed);
                    let rebased = {
                        let mut s = lock(&self.shipper);
                        let first_staged = s.staged_files().first().map(|f| f.1);
                        let behind = match first_staged {
                            Some(min) => {
                                min <= remote_max && !files.iter().any(|f| f.min_txid == min)
                            }
                            None => s.state.next_txid <= remote_max,
                        };
                        let wiped =
                            remote_max == 0 && first_staged.is_none() && s.state.next_txid > 1;
                        if behind || wiped {
                            tracing::warn!(
                                remote_max,
                                "the bucket does not continue this replica's history; starting over with a full copy after TXID {remote_max}"
                            );
                            for (_, _, _, path) in s.staged_files() {
                                let _ = std::fs::remove_file(path);
                            }
                            s.state.next_txid = remote_max + 1;
                            s.state.cursor = None;
                            s.full_needed = true;
                        }
                        behind || wiped
                    };
                    if rebased {
                        let _ = store.ping().await;
                    }
                    break;
                }
                Err(e) => {
                    self.failed(&e.to_string());
                    tokio::time::sleep(backoff.next_wait()).await;
                }
            }
        }
        loop {
            let staged = {
                let s = lock(&self.shipper);
                s.staged_files()
            };
            let mut uploaded_any = false;
            for (level, min, max, path) in staged {
                let bytes = match std::fs::read(&path) {
                    Ok(b) => b,
                    Err(_) => continue,
                };
                let len = bytes.len() as u64;
                let stamp = std::fs::metadata(&path)
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0);
                match s3.put(level, min, max, bytes, stamp).await {
                    Ok(()) => {
                        let _ = std::fs::remove_file(&path);
                        self.progress.staged_bytes.fetch_sub(
                            len.min(self.progress.staged_bytes.load(Ordering::Relaxed)),
                            Ordering::Relaxed,
                        );
                        self.progress
                            .uploaded_txid
                            .fetch_max(max, Ordering::Relaxed);
                        lock(&self.status).last_error = None;
                        backoff.reset();
                        uploaded_any = true;
                        if level == SNAPSHOT_LEVEL {
                            if let Err(e) = retention(&s3, retention_ms).await {
                                tracing::warn!(error = %e, "replica retention failed; retrying after the next snapshot");
                            }
                        }
                    }
                    Err(e) => {
                        self.failed(&e.to_string());
                        tokio::time::sleep(backoff.next_wait()).await;
                        break;
                    }
                }
            }
            if !uploaded_any {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    fn failed(&self, error: &str) {
        let mut s = lock(&self.status);
        s.upload_errors += 1;
        if s.last_error.as_deref() != Some(error) {
            tracing::warn!(%error, "replica upload failed; retrying with backoff");
        }
        s.last_error = Some(error.to_string());
    }
}

fn oldest_staged_age(dir: &Path) -> f64 {
    let now = std::time::SystemTime::now();
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| parse_staged(&e.file_name().to_string_lossy()).is_some())
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .filter_map(|t| now.duration_since(t).ok())
        .map(|d| d.as_secs_f64())
        .fold(0.0, f64::max)
}

/// Deletes snapshots older than the retention (always keeping the newest), then every level-0
/// file wholly before the oldest snapshot kept (always keeping the newest level-0 file), so every
/// kept snapshot still has its increments and "latest" never meets a gap.
async fn retention<S: ReplicaStore>(
    s3: &S,
    retention_ms: i64,
) -> Result<(), sync_agent::replica::store::StoreError> {
    let now = crate::store::now_ms() as i64;
    let mut snapshots = s3.list(SNAPSHOT_LEVEL).await?;
    snapshots.sort_by_key(|f| f.max_txid);
    let Some(newest) = snapshots.last().cloned() else {
        return Ok(());
    };
    let (old, kept): (Vec<FileInfo>, Vec<FileInfo>) = snapshots
        .into_iter()
        .partition(|f| f.max_txid != newest.max_txid && now - f.created_ms > retention_ms);
    s3.delete(&old).await?;
    let floor = kept
        .iter()
        .map(|f| f.max_txid)
        .min()
        .unwrap_or(newest.max_txid);
    let mut l0 = s3.list(0).await?;
    l0.sort_by_key(|f| f.max_txid);
    let last = l0.last().map(|f| f.max_txid).unwrap_or(0);
    let drop: Vec<FileInfo> = l0
        .into_iter()
        .filter(|f| f.max_txid < floor && f.max_txid != last)
        .collect();
    if !drop.is_empty() {
        tracing::info!(files = drop.len(), below_txid = floor, "replica retention");
    }
    s3.delete(&drop).await
}

/// A restore target that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// `--txid` is not a positive hex number.
    #[error("--txid `{0}` is not a TXID (hex, e.g. 000000000000002a)")]
    Txid(String),
    /// `--timestamp` is not RFC 3339.
    #[error("--timestamp `{value}` is not RFC 3339 (e.g. 2026-11-22T13:00:00Z): {reason}")]
    Timestamp {
        /// What was given.
        value: String,
        /// What the parser said.
        reason: String,
    },
}

/// `--txid` / `--timestamp` as a restore target.
pub fn parse_target(txid: Option<&str>, timestamp: Option<&str>) -> Result<Target, TargetError> {
    match (txid, timestamp) {
        (Some(t), _) => u64::from_str_radix(t.trim_start_matches("0x"), 16)
            .ok()
            .filter(|t| *t > 0)
            .map(Target::Txid)
            .ok_or_else(|| TargetError::Txid(t.into())),
        (None, Some(ts)) => {
            time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
                .map(|t| Target::Timestamp((t.unix_timestamp_nanos() / 1_000_000) as i64))
                .map_err(|e| TargetError::Timestamp {
                    value: ts.into(),
                    reason: e.to_string(),
                })
        }
        (None, None) => Ok(Target::Latest),
    }
}

/// Why `venued restore` could not restore.
#[derive(Debug, thiserror::Error)]
pub enum RestoreFailed {
    /// `--from` is not a usable URL.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// Neither `--from` nor `[replica]` names a replica.
    #[error("no replica: set [replica] bucket and path, or pass --from s3://BUCKET/PATH")]
    NoReplica,
    /// The restore itself failed (a gap, a damaged file, the bucket unreachable).
    #[error(transparent)]
    Restore(#[from] RestoreError),
}

/// Restores into `to` from `from` (an `s3://` or `file://` URL) or from `[replica]`.
pub async fn restore(
    config: &ReplicaConfig,
    from: Option<&str>,
    target: Target,
    to: &Path,
) -> Result<Restored, RestoreFailed> {
    match from {
        Some(url) if url.starts_with("file://") => {
            let dir = DirStore::new(url.trim_start_matches("file://"));
            Ok(restore_from(&dir, target, to).await?)
        }
        Some(url) => {
            let loc = S3Location::from_url(url)?;
            let s3 = s3(config, loc).await;
            Ok(restore_from(&s3, target, to).await?)
        }
        None => {
            if config.bucket.is_empty() || config.path.trim_matches('/').is_empty() {
                return Err(RestoreFailed::NoReplica);
            }
            let s3 = s3(config, location(config)).await;
            Ok(restore_from(&s3, target, to).await?)
        }
    }
}
