//! Reading committed frames from a SQLite WAL file (https://sqlite.org/fileformat2.html#walformat):
//! a 32-byte header, then frames of a 24-byte header and one page. A frame counts only while its
//! salts match the header and the running checksum chains; the first frame that fails ends the
//! log. Pages count only once a commit frame (nonzero "database size") covers them, so a
//! transaction still being written is never shipped.

use std::collections::BTreeMap;

const HEADER: usize = 32;
const FRAME_HEADER: usize = 24;

/// Where reading stopped: after the last commit frame, with the checksum state there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WalCursor {
    /// The WAL header's salts (a checkpoint that restarts the log changes them).
    pub salt1: u32,
    /// See `salt1`.
    pub salt2: u32,
    /// Byte offset after the last shipped commit frame.
    pub offset: u64,
    /// Running checksum at `offset`.
    pub s0: u32,
    /// See `s0`.
    pub s1: u32,
}

/// Committed pages after a cursor.
#[derive(Debug, Default)]
pub struct Committed {
    /// The newest image of every page changed, page numbers above `commit` dropped.
    pub pages: BTreeMap<u32, Vec<u8>>,
    /// Database size in pages after the last commit (0 when nothing was committed).
    pub commit: u32,
    /// The page size.
    pub page_size: u32,
    /// Where the next read starts.
    pub cursor: Option<WalCursor>,
}

/// Why the WAL could not be read from the cursor.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WalError {
    /// The log restarted (new salts) or shrank below the cursor: frames may have been
    /// checkpointed unseen, so continuity is lost.
    #[error("the WAL was reset or truncated since offset {0}")]
    Reset(u64),
    /// The header is damaged.
    #[error("invalid WAL header: {0}")]
    Header(String),
}

fn checksum(big_endian: bool, data: &[u8], mut s0: u32, mut s1: u32) -> (u32, u32) {
    for chunk in data.chunks_exact(8) {
        let word = |b: &[u8]| match big_endian {
            true => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            false => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        };
        s0 = s0.wrapping_add(word(&chunk[0..4])).wrapping_add(s1);
        s1 = s1.wrapping_add(word(&chunk[4..8])).wrapping_add(s0);
    }
    (s0, s1)
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The committed frames of `wal` (the whole file) after `cursor`, or from the start when `None`.
/// An empty or header-only WAL gives nothing.
pub fn read_committed(wal: &[u8], cursor: Option<&WalCursor>) -> Result<Committed, WalError> {
    if wal.len() < HEADER {
        return match cursor {
            Some(c) if c.offset > HEADER as u64 => Err(WalError::Reset(c.offset)),
            _ => Ok(Committed::default()),
        };
    }
    let magic = be32(wal, 0);
    let big_endian = match magic {
        0x377f_0682 => false,
        0x377f_0683 => true,
        other => return Err(WalError::Header(format!("bad magic {other:#x}"))),
    };
    let page_size = be32(wal, 8);
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(WalError::Header(format!("page size {page_size}")));
    }
    let (salt1, salt2) = (be32(wal, 16), be32(wal, 20));
    let (h0, h1) = checksum(big_endian, &wal[..24], 0, 0);
    if (h0, h1) != (be32(wal, 24), be32(wal, 28)) {
        return Err(WalError::Header("header checksum mismatch".into()));
    }
    let (mut offset, mut s0, mut s1) = match cursor {
        Some(c) if c.salt1 != salt1 || c.salt2 != salt2 || c.offset > wal.len() as u64 => {
            return Err(WalError::Reset(c.offset));
        }
        Some(c) => (c.offset as usize, c.s0, c.s1),
        None => (HEADER, h0, h1),
    };
    let frame = FRAME_HEADER + page_size as usize;
    let mut out = Committed {
        page_size,
        cursor: cursor.copied(),
        ..Committed::default()
    };
    let mut pending: Vec<(u32, usize)> = Vec::new();
    while offset + frame <= wal.len() {
        let f = &wal[offset..offset + frame];
        if be32(f, 8) != salt1 || be32(f, 12) != salt2 {
            break;
        }
        let (a, b) = checksum(big_endian, &f[..8], s0, s1);
        let (a, b) = checksum(big_endian, &f[FRAME_HEADER..], a, b);
        if (a, b) != (be32(f, 16), be32(f, 20)) {
            break;
        }
        (s0, s1) = (a, b);
        pending.push((be32(f, 0), offset + FRAME_HEADER));
        offset += frame;
        let commit = be32(f, 4);
        if commit != 0 {
            for (pgno, at) in pending.drain(..) {
                out.pages
                    .insert(pgno, wal[at..at + page_size as usize].to_vec());
            }
            out.commit = commit;
            out.cursor = Some(WalCursor {
                salt1,
                salt2,
                offset: offset as u64,
                s0,
                s1,
            });
        }
    }
    let commit = out.commit;
    if commit > 0 {
        out.pages.retain(|pgno, _| *pgno <= commit);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(dir: &std::path::Path) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(dir.join("t.db")).expect("open");
        conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
            .expect("wal");
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (x TEXT);")
            .expect("schema");
        conn
    }

    #[test]
    fn reads_each_commit_once_and_resumes_from_the_cursor() {
        let dir = tempfile::tempdir().expect("dir");
        let conn = db(dir.path());
        let wal = || std::fs::read(dir.path().join("t.db-wal")).expect("wal");
        let first = read_committed(&wal(), None).expect("read");
        assert!(first.commit >= 2 && !first.pages.is_empty());
        let cursor = first.cursor.expect("cursor");
        let again = read_committed(&wal(), Some(&cursor)).expect("read");
        assert!(again.pages.is_empty(), "nothing new after the cursor");
        conn.execute("INSERT INTO t VALUES (?1)", [&"y".repeat(5000)])
            .expect("insert");
        let next = read_committed(&wal(), Some(&cursor)).expect("read");
        assert!(!next.pages.is_empty());
        assert!(next.cursor.expect("cursor").offset > cursor.offset);
    }

    #[test]
    fn a_torn_tail_and_an_open_transaction_are_not_shipped() {
        let dir = tempfile::tempdir().expect("dir");
        let _conn = db(dir.path());
        let mut bytes = std::fs::read(dir.path().join("t.db-wal")).expect("wal");
        let full = read_committed(&bytes, None).expect("read");
        // Cut the last frame in half: its commit (the only one) disappears.
        bytes.truncate(bytes.len() - 100);
        let torn = read_committed(&bytes, None).expect("read");
        assert!(torn.commit < full.commit || torn.pages.len() < full.pages.len());
        // A flipped byte in a page ends the log at that frame.
        let mut flipped = std::fs::read(dir.path().join("t.db-wal")).expect("wal");
        let at = flipped.len() - 10;
        flipped[at] ^= 1;
        assert_ne!(
            read_committed(&flipped, None).expect("read").cursor,
            full.cursor
        );
    }

    #[test]
    fn a_restarted_log_is_reported() {
        let dir = tempfile::tempdir().expect("dir");
        let conn = db(dir.path());
        let wal = || std::fs::read(dir.path().join("t.db-wal")).expect("wal");
        let cursor = read_committed(&wal(), None)
            .expect("read")
            .cursor
            .expect("cursor");
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); INSERT INTO t VALUES ('z');")
            .expect("restart");
        assert!(matches!(
            read_committed(&wal(), Some(&cursor)),
            Err(WalError::Reset(_))
        ));
    }
}
