//! Where LTX files live in a replica. Litestream 0.5 uses two layouts (research §1.1):
//! S3 `<path>/<level %04x>/<min %016x>-<max %016x>.ltx`, and the file replica
//! `<path>/ltx/<level %d>/<min>-<max>.ltx`. Names that do not match are ignored, as Litestream
//! does.

/// The level of full snapshots.
pub const SNAPSHOT_LEVEL: u8 = 9;

/// One LTX file of a replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    /// Compaction level: 0 for increments, 9 for snapshots.
    pub level: u8,
    /// First TXID.
    pub min_txid: u64,
    /// Last TXID.
    pub max_txid: u64,
    /// Object key or file path.
    pub key: String,
    /// Bytes.
    pub size: u64,
    /// When it was written (upload time), ms since the epoch.
    pub created_ms: i64,
}

/// `<min %016x>-<max %016x>.ltx`.
pub fn file_name(min_txid: u64, max_txid: u64) -> String {
    format!("{min_txid:016x}-{max_txid:016x}.ltx")
}

/// Parses a file name (lowercase hex only, like Litestream's regex).
pub fn parse_file_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".ltx")?;
    let (min, max) = stem.split_once('-')?;
    let hex16 = |s: &str| {
        (s.len() == 16
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
    };
    let (min, max) = (hex16(min)?, hex16(max)?);
    (min >= 1 && max >= min).then_some((min, max))
}

/// The S3 key prefix of a level: `<path>/<level %04x>/`.
pub fn s3_level_prefix(path: &str, level: u8) -> String {
    format!("{}/{level:04x}/", path.trim_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        assert_eq!(file_name(1, 0x2a), "0000000000000001-000000000000002a.ltx");
        assert_eq!(parse_file_name(&file_name(7, 9)), Some((7, 9)));
        for bad in [
            "0000000000000001-000000000000002A.ltx",
            "1-2.ltx",
            "0000000000000002-0000000000000001.ltx",
            "0000000000000000-0000000000000001.ltx",
            "0000000000000001-0000000000000002.ltx.tmp",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
        assert_eq!(s3_level_prefix("/edge/app/", 9), "edge/app/0009/");
    }
}
