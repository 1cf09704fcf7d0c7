//! Turning committed WAL frames into staged LTX files, and deciding checkpoints.
//!
//! Two callers share one [`Shipper`] behind a mutex: a timer (every `sync_interval`) that ships
//! what has committed, and the store writer's after-commit hook, which also checkpoints. The hook
//! runs on the writer thread between groups, so when it ships "up to the end of the WAL" and then
//! checkpoints, no commit can slip in between: a frame is never checkpointed before it is staged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::Connection;
use sync_agent::replica::layout::{self, SNAPSHOT_LEVEL};
use sync_agent::replica::ltx::{Encoder, Header, lock_pgno};
use sync_agent::replica::wal::{WalCursor, read_committed};

/// What survives a restart (`<data>/replica/state.json`).
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct State {
    /// The TXID the next staged file gets.
    pub next_txid: u64,
    /// Where WAL reading resumes; `None` = from the WAL header.
    pub cursor: Option<WalCursor>,
    /// Database size in pages at the last staged TXID.
    pub commit: u32,
    /// When the last level-9 snapshot was staged.
    pub last_snapshot_ms: i64,
    /// Continuity is lost: the next file must hold every page (kept across restarts).
    #[serde(default)]
    pub full_needed: bool,
    /// Our own checkpoint backfilled the whole WAL right after everything in it was staged, up
    /// to this cursor: if our writer's next commit restarts the log, nothing was skipped. Never
    /// persisted: across a restart anyone may have written and checkpointed the file.
    #[serde(skip)]
    pub checkpointed_at: Option<WalCursor>,
}

/// Shared counters the uploader and status read.
#[derive(Default)]
pub(crate) struct Progress {
    /// Highest TXID staged.
    pub staged_txid: AtomicU64,
    /// Highest TXID uploaded.
    pub uploaded_txid: AtomicU64,
    /// Bytes waiting in the staging directory.
    pub staged_bytes: AtomicU64,
}

pub(crate) struct Shipper {
    db: PathBuf,
    wal: PathBuf,
    staged: PathBuf,
    state_path: PathBuf,
    pub(super) state: State,
    /// Continuity is lost (first start, WAL reset, dropped staging): the next file holds every page.
    pub(super) full_needed: bool,
    /// A level-9 snapshot is due at the next checkpoint.
    pub(super) snapshot_due: bool,
    checkpoint_bytes: u64,
    max_staged_bytes: u64,
    pub(super) progress: Arc<Progress>,
}

/// A staged file's name: `<level>-<min>-<max>.ltx`, so a listing sorts by level then TXID.
pub(crate) fn staged_name(level: u8, min: u64, max: u64) -> String {
    format!("{level}-{}", layout::file_name(min, max))
}

/// Parses [`staged_name`].
pub(crate) fn parse_staged(name: &str) -> Option<(u8, u64, u64)> {
    let (level, rest) = name.split_once('-')?;
    let (min, max) = layout::parse_file_name(rest)?;
    Some((level.parse().ok()?, min, max))
}

fn fsync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

impl Shipper {
    pub(super) fn new(
        db: &Path,
        dir: &Path,
        checkpoint_pages: u64,
        max_staged_bytes: u64,
        progress: Arc<Progress>,
    ) -> std::io::Result<Self> {
        let staged = dir.join("staged");
        std::fs::create_dir_all(&staged)?;
        let state_path = dir.join("state.json");
        let (state, full_needed) = match std::fs::read(&state_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<State>(&b).ok())
        {
            // While venued was down anyone could have written the file (a maintenance VACUUM,
            // a restore) and its WAL may be gone: a restart never assumes continuity.
            Some(s) if s.next_txid > 0 => (s, true),
            _ => (
                State {
                    next_txid: 1,
                    ..State::default()
                },
                true,
            ),
        };
        progress
            .staged_txid
            .store(state.next_txid.saturating_sub(1), Ordering::Relaxed);
        let mut shipper = Self {
            db: db.to_path_buf(),
            wal: PathBuf::from(format!("{}-wal", db.display())),
            staged,
            state_path,
            state,
            full_needed,
            snapshot_due: false,
            checkpoint_bytes: checkpoint_pages * 4096,
            max_staged_bytes,
            progress,
        };
        shipper.recount_staged();
        Ok(shipper)
    }

    /// Staged files, sorted by level then TXID.
    pub(super) fn staged_files(&self) -> Vec<(u8, u64, u64, PathBuf)> {
        let mut out: Vec<_> = std::fs::read_dir(&self.staged)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                parse_staged(&name).map(|(l, a, b)| (l, a, b, e.path()))
            })
            .collect();
        out.sort_by_key(|(l, a, b, _)| (*b, *l, *a));
        out
    }

    fn recount_staged(&mut self) {
        let bytes = self
            .staged_files()
            .iter()
            .filter_map(|f| std::fs::metadata(&f.3).ok())
            .map(|m| m.len())
            .sum();
        self.progress.staged_bytes.store(bytes, Ordering::Relaxed);
    }

    pub(super) fn save(&self) -> std::io::Result<()> {
        let tmp = self.state_path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(&self.state).unwrap_or_default();
        let f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut &f, &bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.state_path)?;
        if let Some(dir) = self.state_path.parent() {
            fsync_dir(dir);
        }
        Ok(())
    }

    fn stage(&mut self, level: u8, min: u64, max: u64, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.staged.join(staged_name(level, min, max));
        let tmp = path.with_extension("tmp");
        let f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut &f, bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        fsync_dir(&self.staged);
        let staged = self
            .progress
            .staged_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed)
            + bytes.len() as u64;
        if staged > self.max_staged_bytes / 10 * 8 {
            tracing::warn!(
                staged,
                bound = self.max_staged_bytes,
                "replica staging is over 80% of its bound; is the bucket reachable?"
            );
        }
        Ok(())
    }

    /// Past the staging bound (the bucket has been unreachable for long): drop what was staged
    /// and not uploaded, number the next file right after the last upload, and make it a full
    /// copy, so the replica stays contiguous and the disk stays bounded.
    fn enforce_bound(&mut self) {
        if self.progress.staged_bytes.load(Ordering::Relaxed) <= self.max_staged_bytes {
            return;
        }
        let uploaded = self.progress.uploaded_txid.load(Ordering::Relaxed);
        tracing::warn!(
            bound = self.max_staged_bytes,
            uploaded,
            "replica staging is full; dropping staged increments and sending a full copy when the bucket answers"
        );
        for (_, _, _, path) in self.staged_files() {
            let _ = std::fs::remove_file(path);
        }
        self.recount_staged();
        self.state.next_txid = uploaded + 1;
        self.progress.staged_txid.store(uploaded, Ordering::Relaxed);
        self.full_needed = true;
    }

    /// Stages what has committed since the cursor as one file at the next TXID.
    pub(super) fn ship(&mut self) -> std::io::Result<Option<u64>> {
        if self.full_needed {
            return Ok(None);
        }
        let wal = match std::fs::read(&self.wal) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut read = read_committed(&wal, self.state.cursor.as_ref());
        if let (Err(_), Some(at)) = (&read, self.state.checkpointed_at) {
            // SQLite restarted, once (salt-1 goes up by one per restart), a log we had wholly
            // staged and checkpointed: start at the new one.
            let restarted_once = wal.len() >= 20
                && u32::from_be_bytes([wal[16], wal[17], wal[18], wal[19]])
                    == at.salt1.wrapping_add(1);
            if self.state.cursor == Some(at) && restarted_once {
                read = read_committed(&wal, None);
            }
        }
        self.state.checkpointed_at = None;
        let committed = match read {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "replica lost WAL continuity; the next file will be a full copy");
                self.full_needed = true;
                self.state.full_needed = true;
                let _ = self.save();
                return Ok(None);
            }
        };
        if committed.pages.is_empty() || committed.commit == 0 {
            return Ok(None);
        }
        let txid = self.state.next_txid;
        let page_size = committed.page_size;
        let header = Header::new(
            page_size,
            committed.commit,
            txid,
            txid,
            crate::store::now_ms() as i64,
        );
        let mut pages = committed.pages;
        // A database that grew by pages not in the WAL: take them from the file (zeros past it).
        if committed.commit > self.state.commit && self.state.commit > 0 {
            let file = std::fs::File::open(&self.db)?;
            for pgno in self.state.commit + 1..=committed.commit {
                if pgno != lock_pgno(page_size) && !pages.contains_key(&pgno) {
                    let mut page = vec![0u8; page_size as usize];
                    let _ = std::os::unix::fs::FileExt::read_at(
                        &file,
                        &mut page,
                        u64::from(pgno - 1) * u64::from(page_size),
                    );
                    pages.insert(pgno, page);
                }
            }
        }
        if txid == 1 {
            // Only a file with every page may start the history.
            self.full_needed = true;
            return Ok(None);
        }
        let mut enc = Encoder::new(Vec::new(), header).map_err(std::io::Error::other)?;
        for (pgno, page) in &pages {
            if *pgno == lock_pgno(page_size) {
                continue;
            }
            enc.add_page(*pgno, page).map_err(std::io::Error::other)?;
        }
        let bytes = enc.finish().map_err(std::io::Error::other)?;
        self.stage(0, txid, txid, &bytes)?;
        self.state.next_txid = txid + 1;
        self.state.cursor = committed.cursor;
        self.state.commit = committed.commit;
        self.save()?;
        self.progress.staged_txid.store(txid, Ordering::Relaxed);
        self.enforce_bound();
        Ok(Some(txid))
    }

    /// The whole database file as one file at the next TXID (the WAL must be empty: call right
    /// after a TRUNCATE checkpoint), and a level-9 snapshot of it when one is due.
    fn full_copy(&mut self) -> std::io::Result<()> {
        let txid = self.state.next_txid;
        let now = crate::store::now_ms() as i64;
        let (bytes, pages) = copy_of_file(&self.db, txid, txid, now)?;
        self.stage(0, txid, txid, &bytes)?;
        self.state.next_txid = txid + 1;
        self.state.commit = pages;
        self.full_needed = false;
        self.state.full_needed = false;
        self.progress.staged_txid.store(txid, Ordering::Relaxed);
        if txid == 1 {
            // TXID 1 already is a snapshot; stage it at level 9 too so retention has an anchor.
            self.stage(SNAPSHOT_LEVEL, 1, 1, &bytes)?;
            self.state.last_snapshot_ms = now;
            self.snapshot_due = false;
        }
        Ok(())
    }

    fn snapshot(&mut self) -> std::io::Result<()> {
        let txid = self.state.next_txid - 1;
        let now = crate::store::now_ms() as i64;
        let (bytes, _) = copy_of_file(&self.db, 1, txid, now)?;
        self.stage(SNAPSHOT_LEVEL, 1, txid, &bytes)?;
        self.state.last_snapshot_ms = now;
        self.snapshot_due = false;
        Ok(())
    }

    /// The writer's after-commit step: ship, and checkpoint when the WAL is large, a full copy is
    /// needed, or a snapshot is due.
    pub(super) fn after_commit(&mut self, conn: &Connection) {
        // Most commits cost the writer one stat: staging is the timer's job, except right before
        // a checkpoint, where it must happen on this thread with no commit in between.
        let wal_len = std::fs::metadata(&self.wal).map(|m| m.len()).unwrap_or(0);
        if !(self.full_needed || self.snapshot_due || wal_len > self.checkpoint_bytes) {
            return;
        }
        if let Err(e) = self.ship() {
            tracing::warn!(error = %e, "replica could not stage committed frames; retrying");
            return;
        }
        match crate::store::checkpoint_truncate(conn) {
            Ok((0, _, _)) => {}
            Ok((_, log, done)) => {
                // A reader holds an old snapshot, so the log was not truncated. If every frame
                // was backfilled anyway, SQLite may restart the log on the next write; all of
                // it was staged just above, so that restart skips nothing.
                if log == done && !self.full_needed {
                    self.state.checkpointed_at = self.state.cursor;
                    let _ = self.save();
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "replica checkpoint failed; retrying after the next commit");
                return;
            }
        }
        // Every frame was staged (or a full copy follows) and the WAL is now empty.
        self.state.cursor = None;
        let result = (|| {
            if self.full_needed {
                self.full_copy()?;
            }
            if self.snapshot_due {
                self.snapshot()?;
            }
            self.save()
        })();
        if let Err(e) = result {
            tracing::warn!(error = %e, "replica could not stage a full copy; retrying");
            self.full_needed = true;
        }
    }
}

fn copy_of_file(db: &Path, min: u64, max: u64, now: i64) -> std::io::Result<(Vec<u8>, u32)> {
    sync_agent::replica::restore::copy_of_file(db, min, max, now).map_err(std::io::Error::other)
}
