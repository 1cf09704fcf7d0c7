use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::metrics::StoreMetrics;
use crate::oplog::Applied;

fn open(dir: &Path) -> Store {
    Store::open(dir, &StoreOptions::default(), StoreMetrics::detached()).expect("opens")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_all_commit_and_a_failing_one_rolls_back_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .write(move |ctx| {
                    let op =
                        ctx.new_op("ev", "zone.upsert", &format!("z{i}"), json!({"name": "Z"}));
                    ctx.apply(&op)?;
                    if i % 10 == 0 {
                        // Written, then refused: the savepoint must undo the zone and the op.
                        return Err(crate::oplog::ApplyError::UnknownKind("refused".into()));
                    }
                    Ok(())
                })
                .await
        }));
    }
    let mut failed = 0;
    for t in tasks {
        if t.await.expect("task").is_err() {
            failed += 1;
        }
    }
    assert_eq!(failed, 20);
    let (zones, ops): (i64, i64) = store
        .read(|c| {
            Ok::<_, StoreError>((
                c.query_row("SELECT count(*) FROM zones", [], |r| r.get(0))?,
                c.query_row("SELECT count(*) FROM ops", [], |r| r.get(0))?,
            ))
        })
        .await
        .expect("read");
    assert_eq!((zones, ops), (180, 180));
}

#[tokio::test]
async fn a_panicking_job_does_not_kill_the_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let result: Result<(), StoreError> = store.write(|_| panic!("boom")).await;
    assert!(matches!(result, Err(StoreError::JobPanicked)));
    store.ping().await.expect("writer still alive");
}

#[tokio::test]
async fn readers_cannot_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let result = store
        .read(|c| {
            c.execute("INSERT INTO meta (key, value) VALUES ('x', 'y')", [])
                .map_err(StoreError::from)
        })
        .await;
    assert!(result.is_err());
}

#[tokio::test]
async fn node_id_and_clock_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let node = store.node_id().to_string();
    // A clock far in the future, as if the appliance had run with a wrong date before NTP.
    let future = now_ms() + 3_600_000;
    store
        .write(move |ctx| save_hlc_high_water(ctx.conn(), (future, 5)))
        .await
        .expect("saved");
    store.close().await;

    let store = open(dir.path());
    assert_eq!(store.node_id(), node);
    let hlc = store
        .write(|ctx| Ok::<_, StoreError>(ctx.tick()))
        .await
        .expect("tick");
    assert!((hlc.wall_ms, hlc.counter) > (future, 5), "{hlc:?}");
}

#[tokio::test]
async fn a_database_from_a_newer_release_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    open(dir.path()).close().await;
    let conn = Connection::open(dir.path().join(DB_FILE)).expect("open");
    conn.execute_batch(&format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1))
        .expect("bump");
    drop(conn);
    let err = Store::open(
        dir.path(),
        &StoreOptions::default(),
        StoreMetrics::detached(),
    )
    .err()
    .expect("refused");
    assert!(matches!(err, StoreError::NewerSchema { .. }));
    assert!(err.to_string().contains("newer release"), "{err}");
}

#[tokio::test]
async fn local_ops_are_applied_once_and_logged_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open(dir.path()));
    let op = store
        .write(|ctx| {
            let op = ctx.new_op("ev", "attendee.upsert", "p1", json!({"name": "Ada"}));
            assert_eq!(ctx.apply(&op)?, Applied::New);
            Ok::<_, crate::oplog::ApplyError>(op)
        })
        .await
        .expect("applied");
    let again = op.clone();
    let second = store
        .write(move |ctx| ctx.apply(&again))
        .await
        .expect("applied");
    assert_eq!(second, Applied::Duplicate);
    assert_eq!(op.origin, store.node_id());
}
