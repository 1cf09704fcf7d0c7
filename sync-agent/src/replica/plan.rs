//! Which files a restore applies, in order (Litestream's `CalcRestorePlan`, research §1.3): start
//! from a file with `min_txid = 1`, then repeatedly take, over every level, the file that extends
//! the chain furthest. Overlaps are fine; a gap is an error, because a "latest" restore that
//! silently stopped before it would hand back an old database as if it were current.

use super::layout::FileInfo;

/// Up to where to restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Everything in the replica.
    Latest,
    /// The state as of this TXID.
    Txid(u64),
    /// The state as of the last file written at or before this time (ms since the epoch).
    Timestamp(i64),
}

/// Why no plan exists.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// Nothing to start from.
    #[error("no matching backup files available (no file starts at TXID 1{0})")]
    NoSnapshot(String),
    /// A hole in the history.
    #[error(
        "non-contiguous ltx files: have up to TXID {have:016x} but the next file starts at {next:016x} ({key})"
    )]
    Gap {
        /// The chain's end.
        have: u64,
        /// Where the next file starts.
        next: u64,
        /// That file.
        key: String,
    },
    /// The TXID asked for is not in the replica.
    #[error(
        "TXID {target:016x} cannot be reached: the replica's history ends at {have:016x} on that path"
    )]
    Unreachable {
        /// Asked.
        target: u64,
        /// Reached.
        have: u64,
    },
}

/// The files to apply, oldest first.
pub fn plan(files: &[FileInfo], target: Target) -> Result<Vec<FileInfo>, PlanError> {
    let eligible: Vec<&FileInfo> = files
        .iter()
        .filter(|f| match target {
            Target::Latest => true,
            Target::Txid(t) => f.max_txid <= t,
            Target::Timestamp(ms) => f.created_ms <= ms,
        })
        .collect();
    let mut chain: Vec<FileInfo> = Vec::new();
    let mut have = 0u64;
    loop {
        let next = eligible
            .iter()
            .filter(|f| f.min_txid <= have + 1 && f.max_txid > have)
            .max_by(|a, b| {
                a.max_txid
                    .cmp(&b.max_txid)
                    .then(b.min_txid.cmp(&a.min_txid))
                    .then(a.level.cmp(&b.level))
            });
        match next {
            Some(f) => {
                have = f.max_txid;
                chain.push((*f).clone());
            }
            None => break,
        }
    }
    if chain.is_empty() {
        let why = match target {
            Target::Latest => String::new(),
            Target::Txid(t) => format!(" at or before TXID {t:016x}"),
            Target::Timestamp(_) => " written before that time".into(),
        };
        return Err(PlanError::NoSnapshot(why));
    }
    match target {
        Target::Txid(t) if have != t => Err(PlanError::Unreachable { target: t, have }),
        Target::Latest => match eligible
            .iter()
            .filter(|f| f.min_txid > have + 1)
            .min_by_key(|f| f.min_txid)
        {
            Some(f) => Err(PlanError::Gap {
                have,
                next: f.min_txid,
                key: f.key.clone(),
            }),
            None => Ok(chain),
        },
        _ => Ok(chain),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(level: u8, min: u64, max: u64) -> FileInfo {
        FileInfo {
            level,
            min_txid: min,
            max_txid: max,
            key: format!("{level}/{min}-{max}"),
            size: 1,
            created_ms: max as i64 * 1000,
        }
    }

    fn keys(p: &[FileInfo]) -> Vec<(u64, u64)> {
        p.iter().map(|f| (f.min_txid, f.max_txid)).collect()
    }

    #[test]
    fn a_snapshot_then_increments_overlaps_allowed() {
        let files = [
            f(0, 1, 1),
            f(0, 2, 2),
            f(0, 3, 3),
            f(0, 4, 4),
            f(9, 1, 3),
            f(1, 2, 4),
        ];
        assert_eq!(
            keys(&plan(&files, Target::Latest).expect("plan")),
            [(1, 3), (2, 4)]
        );
        assert_eq!(
            keys(&plan(&files, Target::Txid(2)).expect("plan")),
            [(1, 1), (2, 2)]
        );
        assert_eq!(
            keys(&plan(&files, Target::Timestamp(3500)).expect("plan")),
            [(1, 3)]
        );
    }

    #[test]
    fn a_gap_anywhere_fails_a_latest_restore_and_names_the_file() {
        let files = [f(0, 1, 1), f(0, 2, 2), f(0, 4, 4)];
        assert_eq!(
            plan(&files, Target::Latest),
            Err(PlanError::Gap {
                have: 2,
                next: 4,
                key: "0/4-4".into()
            })
        );
        assert!(plan(&files, Target::Txid(2)).is_ok());
        assert!(matches!(
            plan(&files, Target::Txid(4)),
            Err(PlanError::Unreachable { .. })
        ));
    }

    #[test]
    fn without_txid_1_there_is_nothing_to_restore() {
        assert!(matches!(
            plan(&[f(0, 2, 2)], Target::Latest),
            Err(PlanError::NoSnapshot(_))
        ));
        assert!(matches!(
            plan(&[], Target::Latest),
            Err(PlanError::NoSnapshot(_))
        ));
    }
}
