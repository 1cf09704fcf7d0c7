//! Restore: plan the chain, stream every file's pages into `<out>.tmp` at their offsets, check
//! every file's checksum, cut the file to the last `commit`, then rename. Any error (a missing,
//! truncated or corrupt file) removes the temporary file and names the object, so a restore never
//! leaves a silently wrong database behind.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::layout::FileInfo;
use super::ltx::{Decoder, Encoder, Header, LtxError, lock_pgno};
use super::plan::{PlanError, Target, plan};
use super::store::{ReplicaStore, StoreError};

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The replica could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No usable chain.
    #[error("cannot plan the restore: {0}")]
    Plan(#[from] PlanError),
    /// A file of the chain is damaged.
    #[error("replica file `{key}` is damaged: {source}")]
    File {
        /// The object.
        key: String,
        /// What is wrong.
        source: LtxError,
    },
    /// The files disagree on the page size.
    #[error("replica file `{key}` has page size {found}, the chain has {expected}")]
    PageSize {
        /// The object.
        key: String,
        /// Its page size.
        found: u32,
        /// The chain's.
        expected: u32,
    },
    /// The output could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The output exists.
    #[error("{0} exists; restore into a new path (venued never overwrites a database)")]
    Exists(PathBuf),
}

/// What a restore produced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Restored {
    /// The TXID the database is at.
    pub txid: u64,
    /// Files applied.
    pub files: usize,
    /// Database size in pages.
    pub pages: u32,
    /// Page size.
    pub page_size: u32,
}

/// Restores `store` into `out` (which must not exist) as of `target`.
pub async fn restore<S: ReplicaStore>(
    store: &S,
    target: Target,
    out: &Path,
) -> Result<Restored, RestoreError> {
    if out.exists() {
        return Err(RestoreError::Exists(out.to_path_buf()));
    }
    let files = store.list_all().await?;
    let chain = plan(&files, target)?;
    let tmp = PathBuf::from(format!("{}.tmp", out.display()));
    let result = apply_chain(store, &chain, &tmp).await;
    match result {
        Ok(restored) => {
            std::fs::rename(&tmp, out).map_err(|source| RestoreError::Io {
                path: out.to_path_buf(),
                source,
            })?;
            if let Some(dir) = out.parent() {
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
            }
            Ok(restored)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

async fn apply_chain<S: ReplicaStore>(
    store: &S,
    chain: &[FileInfo],
    tmp: &Path,
) -> Result<Restored, RestoreError> {
    let io = |source| RestoreError::Io {
        path: tmp.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(tmp)
        .map_err(io)?;
    let mut page_size = 0u32;
    let mut last: Option<Header> = None;
    for info in chain {
        let bytes = store.get(info).await?;
        let damaged = |source| RestoreError::File {
            key: info.key.clone(),
            source,
        };
        let mut dec = Decoder::new(&bytes[..]).map_err(damaged)?;
        let header = dec.header().clone();
        if page_size == 0 {
            page_size = header.page_size;
        } else if header.page_size != page_size {
            return Err(RestoreError::PageSize {
                key: info.key.clone(),
                found: header.page_size,
                expected: page_size,
            });
        }
        let mut page = vec![0u8; page_size as usize];
        while let Some(pgno) = dec.next_page(&mut page).map_err(damaged)? {
            file.write_all_at(&page, u64::from(pgno - 1) * u64::from(page_size))
                .map_err(io)?;
        }
        let header = dec.finish().map_err(damaged)?;
        last = Some(header);
    }
    let Some(last) = last else {
        return Err(RestoreError::Plan(PlanError::NoSnapshot(String::new())));
    };
    file.set_len(u64::from(last.commit) * u64::from(page_size))
        .map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(Restored {
        txid: last.max_txid,
        files: chain.len(),
        pages: last.commit,
        page_size,
    })
}

/// A snapshot LTX (`min_txid = 1`) of the SQLite database file at `db`, as TXID `1..=txid`. The
/// file must be quiescent (checkpointed, no writer) for the snapshot to be consistent.
pub fn snapshot_of_file(db: &Path, txid: u64, timestamp_ms: i64) -> Result<Vec<u8>, RestoreError> {
    copy_of_file(db, 1, txid, timestamp_ms).map(|(bytes, _)| bytes)
}

/// Every page of the quiescent database file at `db` as one LTX file for TXIDs
/// `min_txid..=max_txid` (a snapshot when `min_txid` is 1, else a full copy continuing a
/// history); also the database size in pages.
pub fn copy_of_file(
    db: &Path,
    min_txid: u64,
    max_txid: u64,
    timestamp_ms: i64,
) -> Result<(Vec<u8>, u32), RestoreError> {
    let io = |source| RestoreError::Io {
        path: db.to_path_buf(),
        source,
    };
    let data = std::fs::read(db).map_err(io)?;
    let bad = |m: &str| RestoreError::File {
        key: db.display().to_string(),
        source: LtxError::Invalid(m.into()),
    };
    if data.len() < 100 || &data[..16] != b"SQLite format 3\0" {
        return Err(bad("not an SQLite database"));
    }
    let page_size = match u16::from_be_bytes([data[16], data[17]]) {
        1 => 65536u32,
        n => u32::from(n),
    };
    if data.len() % page_size as usize != 0 {
        return Err(bad("file length is not a whole number of pages"));
    }
    let pages = (data.len() / page_size as usize) as u32;
    let header = Header::new(page_size, pages, min_txid, max_txid, timestamp_ms);
    let mut enc = Encoder::new(Vec::with_capacity(data.len() / 2), header).map_err(|source| {
        RestoreError::File {
            key: db.display().to_string(),
            source,
        }
    })?;
    let lock = lock_pgno(page_size);
    for pgno in 1..=pages {
        if pgno == lock {
            continue;
        }
        let at = (pgno - 1) as usize * page_size as usize;
        enc.add_page(pgno, &data[at..at + page_size as usize])
            .map_err(|source| RestoreError::File {
                key: db.display().to_string(),
                source,
            })?;
    }
    let mut out = enc.finish().map_err(|source| RestoreError::File {
        key: db.display().to_string(),
        source,
    })?;
    out.flush().map_err(io)?;
    Ok((out, pages))
}
