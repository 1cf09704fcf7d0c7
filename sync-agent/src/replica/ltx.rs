//! The LTX file format as Litestream 0.5.16+ reads it (ltx v0.5.2), and as 0.5.0–0.5.15 wrote it.
//! Byte layout: `research/litestream-ltx.md` §2. In short:
//!
//! ```text
//! header (100 B) | page frames | 6 zero bytes | page index (uvarints) + terminator + u64 len
//!                | post-apply checksum (u64, 0) | file checksum (u64: bit 63 | CRC-64/GO-ISO)
//! page frame: pgno u32 | flags u16 = 1 | size u32 | raw LZ4 block of one page
//! legacy frame (flags 0): pgno u32 | flags u16 = 0 | one LZ4 *frame* of one page
//! ```
//!
//! We always write `NoChecksum` files with zero database checksums: Litestream 0.5.17's restore
//! refuses checksum-tracked files (litestream#1427). The file checksum covers the decompressed
//! pages, so a corrupt page is caught even if its LZ4 block still decodes.

use std::io::{Read, Write};

/// `LTX1`.
pub const MAGIC: &[u8; 4] = b"LTX1";
/// Header length.
pub const HEADER_SIZE: usize = 100;
/// Trailer length.
pub const TRAILER_SIZE: usize = 16;
/// Header flag: no database checksums are tracked (the only kind we write).
pub const FLAG_NO_CHECKSUM: u32 = 1 << 1;
/// Page flag: a 4-byte size and a raw LZ4 block follow.
const PAGE_FLAG_SIZE: u16 = 1;
/// Bit 63 of every stored checksum.
const CHECKSUM_FLAG: u64 = 1 << 63;
/// SQLite's pending byte; the page holding it (the lock page) is never stored.
const PENDING_BYTE: u64 = 0x4000_0000;

const CRC64: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_GO_ISO);

/// The lock page of a database with `page_size` pages.
pub fn lock_pgno(page_size: u32) -> u32 {
    (PENDING_BYTE / u64::from(page_size)) as u32 + 1
}

/// Why an LTX file was refused.
#[derive(Debug, thiserror::Error)]
pub enum LtxError {
    /// Reading or writing failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The file ends early.
    #[error("truncated: {0}")]
    Truncated(String),
    /// The bytes are not a valid LTX file.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The file checksum does not match the contents.
    #[error("file checksum mismatch: stored {stored:016x}, computed {computed:016x}")]
    Checksum {
        /// In the trailer.
        stored: u64,
        /// Over the bytes read.
        computed: u64,
    },
}

fn invalid(msg: impl Into<String>) -> LtxError {
    LtxError::Invalid(msg.into())
}

/// The 100-byte header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Header flags; we write [`FLAG_NO_CHECKSUM`].
    pub flags: u32,
    /// Database page size.
    pub page_size: u32,
    /// Database size in pages after this file applies.
    pub commit: u32,
    /// First TXID covered.
    pub min_txid: u64,
    /// Last TXID covered.
    pub max_txid: u64,
    /// When it was written, ms since the epoch.
    pub timestamp_ms: i64,
    /// Database checksum before (0 with `NoChecksum`).
    pub pre_apply_checksum: u64,
    /// Litestream's WAL bookkeeping (restore ignores it); 0 here.
    pub wal_offset: i64,
    /// See `wal_offset`.
    pub wal_size: i64,
    /// See `wal_offset`.
    pub wal_salt1: u32,
    /// See `wal_offset`.
    pub wal_salt2: u32,
    /// 0 = unset.
    pub node_id: u64,
}

impl Header {
    /// A `NoChecksum` header for TXIDs `min..=max` of a `commit`-page database.
    pub fn new(
        page_size: u32,
        commit: u32,
        min_txid: u64,
        max_txid: u64,
        timestamp_ms: i64,
    ) -> Self {
        Self {
            flags: FLAG_NO_CHECKSUM,
            page_size,
            commit,
            min_txid,
            max_txid,
            timestamp_ms,
            ..Self::default()
        }
    }

    /// A snapshot holds every page (`min_txid == 1`).
    pub fn is_snapshot(&self) -> bool {
        self.min_txid == 1
    }

    fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&self.flags.to_be_bytes());
        b[8..12].copy_from_slice(&self.page_size.to_be_bytes());
        b[12..16].copy_from_slice(&self.commit.to_be_bytes());
        b[16..24].copy_from_slice(&self.min_txid.to_be_bytes());
        b[24..32].copy_from_slice(&self.max_txid.to_be_bytes());
        b[32..40].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        b[40..48].copy_from_slice(&self.pre_apply_checksum.to_be_bytes());
        b[48..56].copy_from_slice(&self.wal_offset.to_be_bytes());
        b[56..64].copy_from_slice(&self.wal_size.to_be_bytes());
        b[64..68].copy_from_slice(&self.wal_salt1.to_be_bytes());
        b[68..72].copy_from_slice(&self.wal_salt2.to_be_bytes());
        b[72..80].copy_from_slice(&self.node_id.to_be_bytes());
        b
    }

    fn decode(b: &[u8; HEADER_SIZE]) -> Result<Self, LtxError> {
        if &b[0..4] != MAGIC {
            return Err(invalid("not an LTX file (magic is not LTX1)"));
        }
        let u32_at = |o: usize| u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[o..o + 8]);
            u64::from_be_bytes(x)
        };
        let h = Self {
            flags: u32_at(4),
            page_size: u32_at(8),
            commit: u32_at(12),
            min_txid: u64_at(16),
            max_txid: u64_at(24),
            timestamp_ms: u64_at(32) as i64,
            pre_apply_checksum: u64_at(40),
            wal_offset: u64_at(48) as i64,
            wal_size: u64_at(56) as i64,
            wal_salt1: u32_at(64),
            wal_salt2: u32_at(68),
            node_id: u64_at(72),
        };
        h.validate()?;
        Ok(h)
    }

    /// The header's own consistency rules (ltx `Header.Validate`).
    pub fn validate(&self) -> Result<(), LtxError> {
        if self.flags & !FLAG_NO_CHECKSUM != 0 {
            return Err(invalid(format!("unknown header flags {:#x}", self.flags)));
        }
        if !(512..=65536).contains(&self.page_size) || !self.page_size.is_power_of_two() {
            return Err(invalid(format!(
                "page size {} is not a power of two in 512..=65536",
                self.page_size
            )));
        }
        if self.min_txid == 0 || self.max_txid < self.min_txid {
            return Err(invalid(format!(
                "TXID range {}..{} is empty or starts at 0",
                self.min_txid, self.max_txid
            )));
        }
        if self.wal_offset < 0 || self.wal_size < 0 || (self.wal_offset == 0 && self.wal_size != 0)
        {
            return Err(invalid("inconsistent WAL offset and size"));
        }
        if self.is_snapshot() && self.pre_apply_checksum != 0 {
            return Err(invalid("a snapshot carries a pre-apply checksum"));
        }
        Ok(())
    }
}

/// Writes one LTX file to `W`, streaming: pages go out as they are added.
pub struct Encoder<W: Write> {
    out: W,
    digest: crc::Digest<'static, u64>,
    header: Header,
    offset: u64,
    index: Vec<(u32, u64, u64)>,
    last_pgno: u32,
    lock: u32,
}

impl<W: Write> Encoder<W> {
    /// Starts a file with `header` (validated).
    pub fn new(mut out: W, header: Header) -> Result<Self, LtxError> {
        header.validate()?;
        if header.flags & FLAG_NO_CHECKSUM == 0 {
            return Err(invalid(
                "only NoChecksum files are written (Litestream 0.5 refuses others)",
            ));
        }
        let bytes = header.encode();
        out.write_all(&bytes)?;
        let mut digest = CRC64.digest();
        digest.update(&bytes);
        let lock = lock_pgno(header.page_size);
        Ok(Self {
            out,
            digest,
            header,
            offset: HEADER_SIZE as u64,
            index: Vec::new(),
            last_pgno: 0,
            lock,
        })
    }

    /// Adds page `pgno`: strictly after the previous one, within `commit`, never the lock page,
    /// exactly one page long.
    pub fn add_page(&mut self, pgno: u32, data: &[u8]) -> Result<(), LtxError> {
        if data.len() != self.header.page_size as usize {
            return Err(invalid(format!(
                "page {pgno} is {} bytes, not {}",
                data.len(),
                self.header.page_size
            )));
        }
        if pgno <= self.last_pgno || pgno > self.header.commit || pgno == self.lock || pgno == 0 {
            return Err(invalid(format!(
                "page {pgno} out of order, beyond commit {}, or the lock page",
                self.header.commit
            )));
        }
        if self.header.is_snapshot() {
            let expected = match self.last_pgno + 1 {
                n if n == self.lock => n + 1,
                n => n,
            };
            if pgno != expected {
                return Err(invalid(format!(
                    "snapshot skips from page {} to {pgno}",
                    self.last_pgno
                )));
            }
        }
        let block = lz4_flex::block::compress(data);
        let mut head = [0u8; 10];
        head[0..4].copy_from_slice(&pgno.to_be_bytes());
        head[4..6].copy_from_slice(&PAGE_FLAG_SIZE.to_be_bytes());
        head[6..10].copy_from_slice(&(block.len() as u32).to_be_bytes());
        self.out.write_all(&head)?;
        self.out.write_all(&block)?;
        self.digest.update(&head);
        self.digest.update(data);
        let size = 10 + block.len() as u64;
        self.index.push((pgno, self.offset, size));
        self.offset += size;
        self.last_pgno = pgno;
        Ok(())
    }

    /// Writes the end of the page block, the index and the trailer; returns the writer.
    pub fn finish(mut self) -> Result<W, LtxError> {
        if self.header.is_snapshot() {
            let last = match self.header.commit {
                c if c == self.lock => c - 1,
                c => c,
            };
            if self.last_pgno != last {
                return Err(invalid(format!(
                    "snapshot ends at page {} but commit is {}",
                    self.last_pgno, self.header.commit
                )));
            }
        }
        let end = [0u8; 6];
        self.out.write_all(&end)?;
        self.digest.update(&end);
        let mut index = Vec::with_capacity(self.index.len() * 8 + 9);
        for (pgno, offset, size) in &self.index {
            uvarint(&mut index, u64::from(*pgno));
            uvarint(&mut index, *offset);
            uvarint(&mut index, *size);
        }
        uvarint(&mut index, 0);
        let len = index.len() as u64;
        index.extend_from_slice(&len.to_be_bytes());
        self.out.write_all(&index)?;
        self.digest.update(&index);
        let post = 0u64.to_be_bytes();
        self.out.write_all(&post)?;
        self.digest.update(&post);
        let checksum = CHECKSUM_FLAG | self.digest.finalize();
        self.out.write_all(&checksum.to_be_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads one LTX file from `R`, page by page; [`Decoder::finish`] verifies the checksum, so a
/// caller must not trust the pages before it returns `Ok`.
pub struct Decoder<R: Read> {
    input: R,
    digest: crc::Digest<'static, u64>,
    header: Header,
    last_pgno: u32,
    done: bool,
}

impl<R: Read> Decoder<R> {
    /// Reads and checks the header.
    pub fn new(mut input: R) -> Result<Self, LtxError> {
        let mut b = [0u8; HEADER_SIZE];
        read_exact(&mut input, &mut b, "header")?;
        let header = Header::decode(&b)?;
        let mut digest = CRC64.digest();
        digest.update(&b);
        Ok(Self {
            input,
            digest,
            header,
            last_pgno: 0,
            done: false,
        })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The next page into `buf` (one page long); `None` after the last.
    pub fn next_page(&mut self, buf: &mut [u8]) -> Result<Option<u32>, LtxError> {
        if self.done {
            return Ok(None);
        }
        let page_size = self.header.page_size as usize;
        if buf.len() != page_size {
            return Err(invalid("page buffer is not one page long"));
        }
        let mut head = [0u8; 6];
        read_exact(&mut self.input, &mut head, "page header")?;
        self.digest.update(&head);
        let pgno = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let flags = u16::from_be_bytes([head[4], head[5]]);
        if pgno == 0 {
            if flags != 0 {
                return Err(invalid("page block ends with nonzero flags"));
            }
            self.done = true;
            return Ok(None);
        }
        if pgno <= self.last_pgno || pgno > self.header.commit {
            return Err(invalid(format!(
                "page {pgno} out of order or beyond commit {}",
                self.header.commit
            )));
        }
        match flags {
            PAGE_FLAG_SIZE => {
                let mut size = [0u8; 4];
                read_exact(&mut self.input, &mut size, "page size")?;
                self.digest.update(&size);
                let size = u32::from_be_bytes(size) as usize;
                if size > lz4_flex::block::get_maximum_output_size(page_size) {
                    return Err(invalid(format!(
                        "page {pgno}: compressed size {size} is impossible"
                    )));
                }
                let mut block = vec![0u8; size];
                read_exact(&mut self.input, &mut block, "page data")?;
                let n = lz4_flex::block::decompress_into(&block, buf)
                    .map_err(|e| invalid(format!("page {pgno}: bad LZ4 block: {e}")))?;
                if n != page_size {
                    return Err(invalid(format!(
                        "page {pgno} decompresses to {n} bytes, not {page_size}"
                    )));
                }
            }
            0 => read_lz4_frame(&mut self.input, buf, pgno)?,
            other => {
                return Err(invalid(format!(
                    "page {pgno}: unknown page flags {other:#x}"
                )));
            }
        }
        self.digest.update(buf);
        self.last_pgno = pgno;
        Ok(Some(pgno))
    }

    /// Reads the rest (skipping pages not yet read), checks the index framing and the file
    /// checksum.
    pub fn finish(mut self) -> Result<Header, LtxError> {
        let mut page = vec![0u8; self.header.page_size as usize];
        while self.next_page(&mut page)?.is_some() {}
        let mut rest = Vec::new();
        self.input.read_to_end(&mut rest)?;
        if rest.len() < TRAILER_SIZE + 8 {
            return Err(LtxError::Truncated(
                "the page index and trailer are missing".into(),
            ));
        }
        let (body, stored) = rest.split_at(rest.len() - 8);
        let len_at = body.len() - 16;
        let mut len = [0u8; 8];
        len.copy_from_slice(&body[len_at..len_at + 8]);
        if u64::from_be_bytes(len) as usize != len_at {
            return Err(invalid("page index size does not match its length"));
        }
        self.digest.update(body);
        let mut s = [0u8; 8];
        s.copy_from_slice(stored);
        let stored = u64::from_be_bytes(s);
        let computed = CHECKSUM_FLAG | self.digest.finalize();
        if stored != computed {
            return Err(LtxError::Checksum { stored, computed });
        }
        Ok(self.header)
    }
}

fn read_exact(r: &mut impl Read, buf: &mut [u8], what: &str) -> Result<(), LtxError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            LtxError::Truncated(format!("file ends inside the {what}"))
        }
        _ => LtxError::Io(e),
    })
}

/// One LZ4 frame (Litestream 0.5.0–0.5.15 page encoding) holding exactly one page. Parsed by hand
/// so no byte past the frame is consumed.
fn read_lz4_frame(r: &mut impl Read, page: &mut [u8], pgno: u32) -> Result<(), LtxError> {
    let bad = |m: &str| invalid(format!("page {pgno}: legacy LZ4 frame: {m}"));
    let mut head = [0u8; 6];
    read_exact(r, &mut head, "legacy frame header")?;
    if head[0..4] != [0x04, 0x22, 0x4d, 0x18] {
        return Err(bad("bad magic"));
    }
    let flg = head[4];
    let has_block_checksum = flg & 0x10 != 0;
    let has_content_size = flg & 0x08 != 0;
    let has_content_checksum = flg & 0x04 != 0;
    let has_dict = flg & 0x01 != 0;
    let mut skip = usize::from(has_content_size) * 8 + usize::from(has_dict) * 4 + 1;
    let mut scratch = [0u8; 13];
    read_exact(r, &mut scratch[..skip], "legacy frame descriptor")?;
    let mut filled = 0usize;
    loop {
        let mut size = [0u8; 4];
        read_exact(r, &mut size, "legacy block size")?;
        let size = u32::from_le_bytes(size);
        if size == 0 {
            break;
        }
        let raw = size & 0x8000_0000 != 0;
        let len = (size & 0x7fff_ffff) as usize;
        if len > 4 * 1024 * 1024 {
            return Err(bad("block too large"));
        }
        let mut block = vec![0u8; len];
        read_exact(r, &mut block, "legacy block")?;
        let dest = page
            .get_mut(filled..)
            .ok_or_else(|| bad("more data than one page"))?;
        let n = match raw {
            true => {
                let target = dest
                    .get_mut(..len)
                    .ok_or_else(|| bad("more data than one page"))?;
                target.copy_from_slice(&block);
                len
            }
            false => {
                lz4_flex::block::decompress_into(&block, dest).map_err(|e| bad(&e.to_string()))?
            }
        };
        filled += n;
        if has_block_checksum {
            read_exact(r, &mut [0u8; 4], "legacy block checksum")?;
        }
    }
    if has_content_checksum {
        skip = 4;
        read_exact(r, &mut scratch[..skip], "legacy content checksum")?;
    }
    if filled != page.len() {
        return Err(bad(&format!("holds {filled} bytes, not one page")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(size: usize, seed: u8) -> Vec<u8> {
        (0..size)
            .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
            .collect()
    }

    fn encode(header: Header, pages: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut enc = Encoder::new(Vec::new(), header).expect("header");
        for (n, p) in pages {
            enc.add_page(*n, p).expect("page");
        }
        enc.finish().expect("finish")
    }

    #[test]
    fn round_trips_and_matches_the_documented_layout() {
        let pages: Vec<(u32, Vec<u8>)> = (1..=3).map(|n| (n, page(4096, n as u8))).collect();
        let bytes = encode(Header::new(4096, 3, 1, 1, 1_700_000_000_000), &pages);
        assert_eq!(&bytes[0..4], b"LTX1");
        assert_eq!(&bytes[4..8], &[0, 0, 0, 2], "NoChecksum");
        assert_eq!(
            bytes[bytes.len() - 8] & 0x80,
            0x80,
            "file checksum has bit 63 set"
        );
        assert_eq!(
            &bytes[bytes.len() - 16..bytes.len() - 8],
            &[0u8; 8],
            "no post-apply checksum"
        );
        let mut dec = Decoder::new(&bytes[..]).expect("header");
        let mut buf = vec![0u8; 4096];
        for (n, p) in &pages {
            assert_eq!(dec.next_page(&mut buf).expect("page"), Some(*n));
            assert_eq!(&buf, p);
        }
        assert_eq!(dec.next_page(&mut buf).expect("end"), None);
        assert_eq!(dec.finish().expect("checksum").commit, 3);
    }

    #[test]
    fn every_flipped_bit_or_cut_is_caught() {
        let pages: Vec<(u32, Vec<u8>)> = (1..=2).map(|n| (n, page(512, n as u8))).collect();
        let bytes = encode(Header::new(512, 2, 1, 1, 5), &pages);
        for i in (0..bytes.len()).step_by(7) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            let result = Decoder::new(&bad[..]).and_then(Decoder::finish);
            assert!(
                result.is_err(),
                "flip at {i} of {} went unnoticed",
                bytes.len()
            );
        }
        for cut in [10, 100, 200, bytes.len() - 1] {
            let result = Decoder::new(&bytes[..cut]).and_then(Decoder::finish);
            assert!(result.is_err(), "cut at {cut} went unnoticed");
        }
    }

    #[test]
    fn snapshots_must_hold_every_page_and_increments_must_be_ordered() {
        let mut enc = Encoder::new(Vec::new(), Header::new(512, 3, 1, 1, 5)).expect("header");
        enc.add_page(1, &page(512, 1)).expect("page 1");
        assert!(
            enc.add_page(3, &page(512, 3)).is_err(),
            "snapshot skipping page 2"
        );
        let mut enc = Encoder::new(Vec::new(), Header::new(512, 9, 2, 2, 5)).expect("header");
        enc.add_page(5, &page(512, 5)).expect("page 5");
        assert!(enc.add_page(4, &page(512, 4)).is_err(), "out of order");
        assert!(enc.add_page(10, &page(512, 4)).is_err(), "beyond commit");
        let mut header = Header::new(512, 1, 1, 1, 5);
        header.flags = 0;
        assert!(
            Encoder::new(Vec::new(), header).is_err(),
            "checksum-tracked files are not written"
        );
    }

    #[test]
    fn reads_legacy_lz4_frame_pages() {
        // A 0.5.0-0.5.15 style file: page flags 0 and one LZ4 frame per page.
        let header = Header::new(512, 1, 1, 1, 5);
        let data = page(512, 9);
        let mut bytes = header.encode().to_vec();
        let mut digest = CRC64.digest();
        digest.update(&bytes);
        let mut head = vec![0, 0, 0, 1, 0, 0];
        digest.update(&head);
        let mut frame = Vec::new();
        {
            let mut w = lz4_flex::frame::FrameEncoder::new(&mut frame);
            w.write_all(&data).expect("frame");
            w.finish().expect("frame end");
        }
        head.extend_from_slice(&frame);
        bytes.extend_from_slice(&head);
        digest.update(&data);
        let mut tail = vec![0u8; 6];
        let mut index = Vec::new();
        uvarint(&mut index, 1);
        uvarint(&mut index, 100);
        uvarint(&mut index, 6 + frame.len() as u64);
        uvarint(&mut index, 0);
        let len = index.len() as u64;
        index.extend_from_slice(&len.to_be_bytes());
        tail.extend_from_slice(&index);
        tail.extend_from_slice(&[0u8; 8]);
        digest.update(&tail);
        bytes.extend_from_slice(&tail);
        bytes.extend_from_slice(&(CHECKSUM_FLAG | digest.finalize()).to_be_bytes());
        let mut dec = Decoder::new(&bytes[..]).expect("header");
        let mut buf = vec![0u8; 512];
        assert_eq!(dec.next_page(&mut buf).expect("legacy page"), Some(1));
        assert_eq!(buf, data);
        dec.finish().expect("checksum");
    }

    #[test]
    fn the_lock_page_is_where_sqlite_puts_it() {
        assert_eq!(lock_pgno(4096), 262_145);
        assert_eq!(lock_pgno(65536), 16_385);
    }
}
