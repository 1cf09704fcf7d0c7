//! A real `venued` replicating to a real S3-compatible server (moto) on loopback; the real
//! `litestream restore` 0.5.17 and `venued restore` must bring back exactly the live database
//! after every step of its life: fresh start, 10,000 transactions, restart, `kill -9` mid-write,
//! a shrinking VACUUM, snapshot and retention cycles; point-in-time by TXID; damaged files.

use std::path::Path;
use std::time::{Duration, Instant};

use hw_tests::s3::{Moto, litestream};
use hw_tests::{Admin, Venued, VenuedBuilder, binary};
use sync_agent::replica::store::{ReplicaStore, S3Location, S3Store};

const BUCKET: &str = "venue";
const PATH: &str = "edge/hall-a";

fn url(moto: &Moto) -> String {
    format!("s3://{BUCKET}/{PATH}?endpoint={}", moto.endpoint)
}

async fn start(data: &Path, moto: &Moto) -> Venued {
    VenuedBuilder::new(data)
        .env("VENUED_MQTT_ENABLED", "false")
        .env("VENUED_REPLICA_ENABLED", "true")
        .env("VENUED_REPLICA_BUCKET", BUCKET)
        .env("VENUED_REPLICA_PATH", PATH)
        .env("VENUED_REPLICA_ENDPOINT", &moto.endpoint)
        .env("VENUED_REPLICA_ACCESS_KEY_ID", "test")
        .env("VENUED_REPLICA_SECRET_ACCESS_KEY", "test")
        .env("VENUED_REPLICA_SYNC_INTERVAL_MS", "200")
        .env("VENUED_REPLICA_CHECKPOINT_PAGES", "200")
        .env("VENUED_REPLICA_SNAPSHOT_INTERVAL_SECS", "3")
        .env("VENUED_REPLICA_SNAPSHOT_RETENTION_SECS", "2")
        .spawn()
        .await
        .unwrap()
}

/// What must be equal: every attendee, every op id, and the size in pages. Read through a
/// read-only connection: a read-write one (the sqlite3 shell) may checkpoint the live WAL when it
/// closes, which the replica then has to answer with a full copy.
fn contents(db: &Path) -> String {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut out = String::new();
    for sql in [
        "SELECT id || '|' || name || '|' || deleted FROM attendees ORDER BY id",
        "SELECT count(*) || '|' || coalesce(max(seq), 0) FROM ops",
        "SELECT id FROM ops ORDER BY id",
        "PRAGMA page_count",
    ] {
        let mut stmt = conn.prepare(sql).unwrap();
        let rows = stmt
            .query_map([], |r| r.get::<_, rusqlite::types::Value>(0))
            .unwrap();
        for row in rows {
            out.push_str(&format!("{:?}\n", row.unwrap()));
        }
    }
    out
}

/// Restores with litestream until the result equals the live database (the last writes reach
/// the bucket within a sync interval or two); returns the restored file.
async fn litestream_catches_up(
    moto: &Moto,
    live: &Path,
    dir: &Path,
    step: &str,
) -> std::path::PathBuf {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    loop {
        n += 1;
        let out = dir.join(format!("{step}-{n}.db"));
        let r = litestream(&["restore", "-o", out.to_str().unwrap(), &url(moto)]).await;
        let restored_ok = r.status.success();
        if restored_ok {
            let check = std::process::Command::new("sqlite3")
                .arg(&out)
                .arg("PRAGMA integrity_check")
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&check.stdout),
                "ok\n",
                "{step}: restored file {} is damaged: {}",
                out.display(),
                String::from_utf8_lossy(&check.stderr)
            );
            if contents(&out) == contents(live) {
                return out;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{step}: litestream's restore never matched the live database; last: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn venued_restore(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(binary("venued"))
        .arg("restore")
        .args(args)
        .env("VENUED_REPLICA_ACCESS_KEY_ID", "test")
        .env("VENUED_REPLICA_SECRET_ACCESS_KEY", "test")
        .output()
        .await
        .unwrap()
}

async fn writes(v: &Venued, from: usize, n: usize) {
    let admin = Admin::new(v);
    let mut csv = String::from("id,name\n");
    for i in from..from + n {
        csv.push_str(&format!("a{i},Attendee {i}\n"));
    }
    admin.import_csv(csv).await.unwrap();
}

/// `n` separate transactions: upserts and deletes of random attendees, 16 at a time.
async fn random_transactions(v: &Venued, n: usize) {
    use futures::StreamExt;
    let admin = std::sync::Arc::new(Admin::new(v));
    futures::stream::iter(0..n)
        .map(|i| {
            let admin = admin.clone();
            async move {
                let id = format!("r{}", (i * 7919) % 3000);
                let (status, body) = match i % 5 {
                    4 => admin
                        .call(
                            reqwest::Method::DELETE,
                            &format!("/api/v1/admin/attendees/{id}"),
                            None,
                        )
                        .await
                        .unwrap(),
                    _ => admin
                        .call(
                            reqwest::Method::PUT,
                            &format!("/api/v1/admin/attendees/{id}"),
                            Some(serde_json::json!({"name": format!("n{i}")})),
                        )
                        .await
                        .unwrap(),
                };
                assert!(status < 300 || status == 404, "{status} {body}");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn litestream_restores_what_venued_replicated_through_its_whole_life() {
    let moto = Moto::start(BUCKET).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = data.join("venued.db");

    // Fresh start.
    let v = start(&data, &moto).await;
    writes(&v, 0, 100).await;
    litestream_catches_up(&moto, &db, dir.path(), "fresh").await;

    // A point to come back to, by TXID.
    let status: serde_json::Value = reqwest::get(v.url("/api/v1/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let txid = status["replica"]["state"]["uploaded_txid"]
        .as_u64()
        .unwrap();
    let at_txid = contents(&db);
    // Point in time: one more write, then the state as of `txid` comes back without it.
    writes(&v, 5000, 1).await;
    litestream_catches_up(&moto, &db, dir.path(), "after-pit").await;
    let pit = dir.path().join("pit.db");
    let r = venued_restore(&[
        "--to",
        pit.to_str().unwrap(),
        "--from",
        &url(&moto),
        "--txid",
        &format!("{txid:016x}"),
    ])
    .await;
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(contents(&pit), at_txid);
    let by_litestream = dir.path().join("pit-litestream.db");
    let r = litestream(&[
        "restore",
        "-o",
        by_litestream.to_str().unwrap(),
        "-txid",
        &format!("{txid:016x}"),
        &url(&moto),
    ])
    .await;
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(contents(&by_litestream), at_txid);

    // 10,000 transactions.
    random_transactions(&v, 10_000).await;
    litestream_catches_up(&moto, &db, dir.path(), "10k").await;

    // Restart.
    v.terminate(Duration::from_secs(20)).await.unwrap();
    let v = start(&data, &moto).await;
    writes(&v, 100, 100).await;
    litestream_catches_up(&moto, &db, dir.path(), "restart").await;

    // kill -9 in the middle of writing.
    let writer = {
        let admin = Admin::new(&v);
        tokio::spawn(async move {
            for i in 0..200 {
                if admin
                    .call(
                        reqwest::Method::PUT,
                        &format!("/api/v1/admin/attendees/k{i}"),
                        Some(serde_json::json!({"name": "k"})),
                    )
                    .await
                    .is_err()
                {
                    break;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    v.kill9().await.unwrap();
    let _ = writer.await;
    let v = start(&data, &moto).await;
    writes(&v, 200, 10).await;
    litestream_catches_up(&moto, &db, dir.path(), "kill9").await;

    // A VACUUM that shrinks the file: free pages first (a scratch table, filled, replicated,
    // dropped), then an operator's maintenance VACUUM with the daemon stopped.
    sqlite(
        &db,
        "CREATE TABLE scratch (x BLOB);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
                 INSERT INTO scratch SELECT randomblob(2000) FROM n;",
    );
    litestream_catches_up(&moto, &db, dir.path(), "grown").await;
    let before: u64 = sqlite(&db, "PRAGMA page_count").trim().parse().unwrap();
    v.terminate(Duration::from_secs(20)).await.unwrap();
    sqlite(&db, "DROP TABLE scratch; VACUUM;");
    let v = start(&data, &moto).await;
    writes(&v, 300, 5).await;
    let restored = litestream_catches_up(&moto, &db, dir.path(), "vacuum").await;
    let after = std::fs::metadata(&restored).unwrap().len() / 4096;
    assert!(
        after < before / 2,
        "the restored file follows the shrink: {before} -> {after} pages"
    );

    // Snapshots and retention have cycled meanwhile (interval 3 s, retention 2 s): several
    // snapshots were written, old ones and the increments before them are gone, and "latest"
    // still restores (the assertion above), now also through `venued restore`.
    let s3 = S3Store::connect_with_keys(S3Location::from_url(&url(&moto)).unwrap(), "test", "test")
        .await;
    let snapshots = s3.list(9).await.unwrap();
    assert!(!snapshots.is_empty(), "no level-9 snapshot");
    let l0 = s3.list(0).await.unwrap();
    assert!(
        l0.first().map(|f| f.min_txid) > Some(1),
        "retention never removed old increments: {l0:?}"
    );
    let ours = dir.path().join("venued-latest.db");
    let r = venued_restore(&["--to", ours.to_str().unwrap(), "--from", &url(&moto)]).await;
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(contents(&ours), contents(&db));

    drop(v);
}

/// A replica written by `litestream replicate` to S3 comes back through `venued restore`, and a
/// damaged file in the bucket is refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn venued_restores_litestreams_own_s3_replica_and_names_damaged_files() {
    let moto = Moto::start(BUCKET).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.db");
    sqlite(
        &live,
        "PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT);
                   WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
                   INSERT INTO t SELECT i, hex(randomblob(30)) FROM n;",
    );
    let config = dir.path().join("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "dbs:\n  - path: {}\n    replica:\n      type: s3\n      bucket: {BUCKET}\n      path: theirs\n      endpoint: {}\n      region: us-east-1\n      force-path-style: true\n      sync-interval: 100ms\n",
            live.display(),
            moto.endpoint
        ),
    )
    .unwrap();
    let mut replicate = tokio::process::Command::new(hw_tests::s3::tool("litestream"))
        .args(["replicate", "-config", config.to_str().unwrap()])
        .env_remove("AWS_CA_BUNDLE")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let from = format!("s3://{BUCKET}/theirs?endpoint={}", moto.endpoint);
    let expected = |db: &Path| {
        sqlite(
            db,
            "SELECT count(*), sum(length(body)), max(id) FROM t; PRAGMA integrity_check",
        )
    };
    // Writes land in several syncs; done when `venued restore` shows the last one.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    loop {
        sqlite(&live, &format!("INSERT INTO t (body) VALUES ('late {n}')"));
        n += 1;
        let out = dir.path().join(format!("ours-{n}.db"));
        tokio::time::sleep(Duration::from_millis(400)).await;
        let r = venued_restore(&["--to", out.to_str().unwrap(), "--from", &from]).await;
        if r.status.success() && expected(&out) == expected(&live) && n >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "venued never restored litestream's replica: {}",
            String::from_utf8_lossy(&r.stderr)
        );
    }
    replicate.kill().await.unwrap();

    // Flip a bit in every one of its files (Litestream also writes compacted levels, so any
    // single file might not be on the restore's path): the restore fails, names the damaged
    // object it met, and leaves nothing.
    let s3 = S3Store::connect_with_keys(S3Location::from_url(&from).unwrap(), "test", "test").await;
    let files = s3.list_all().await.unwrap();
    assert!(!files.is_empty());
    for f in &files {
        let mut bytes = s3.get(f).await.unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x20;
        s3.put(f.level, f.min_txid, f.max_txid, bytes, 0)
            .await
            .unwrap();
    }
    let out = dir.path().join("damaged.db");
    let r = venued_restore(&["--to", out.to_str().unwrap(), "--from", &from]).await;
    assert!(!r.status.success());
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(files.iter().any(|f| stderr.contains(&f.key)), "{stderr}");
    assert!(!out.exists(), "a damaged replica left a database behind");
}

fn sqlite(db: &Path, sql: &str) -> String {
    hw_tests::s3::sqlite3(db, sql).unwrap()
}
