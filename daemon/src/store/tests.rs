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
            assert!(matches!(ctx.apply(&op)?, Applied::New(_)));
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

/// The outside probe's poison: one remote op stamped past i64::MAX (or far in the future) used
/// to move the clock, after which no local edit of an existing record won again.
#[tokio::test]
async fn regression_a_remote_op_from_the_far_future_is_refused_and_leaves_the_clock_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let first = store
        .write(|ctx| {
            let op = ctx.new_op("ev", "zone.upsert", "z1", json!({"name": "Before"}));
            ctx.apply(&op)?;
            Ok::<_, crate::oplog::ApplyError>(op.hlc)
        })
        .await
        .expect("local write");
    for wall_ms in [
        9_223_372_036_854_775_813,
        now_ms() + sync_agent::MAX_CLOCK_AHEAD_MS + 60_000,
    ] {
        let poison = sync_agent::Op {
            id: uuid::Uuid::now_v7(),
            v: 1,
            hlc: sync_agent::Hlc {
                wall_ms,
                counter: 0,
                node: "hostile".into(),
            },
            origin: "hostile".into(),
            scope: "ev".into(),
            kind: "zone.upsert".into(),
            entity_id: "z1".into(),
            body: json!({"name": "Poisoned"}),
            extra: serde_json::Map::new(),
        };
        let refused = store
            .write(move |ctx| ctx.apply_remote(&poison))
            .await
            .expect_err("a stamp past the bound is refused");
        assert!(
            matches!(refused, crate::oplog::ApplyError::ClockAhead(_)),
            "{refused}"
        );
    }
    let (name, later) = store
        .write(|ctx| {
            let op = ctx.new_op("ev", "zone.upsert", "z1", json!({"name": "After"}));
            ctx.apply(&op)?;
            let name: String =
                ctx.conn()
                    .query_row("SELECT name FROM zones WHERE id = 'z1'", [], |r| r.get(0))?;
            Ok::<_, crate::oplog::ApplyError>((name, op.hlc))
        })
        .await
        .expect("local edit");
    assert_eq!(name, "After", "a later local edit still wins");
    assert!(
        later.wall_ms < first.wall_ms + sync_agent::MAX_CLOCK_AHEAD_MS,
        "the clock was not dragged forward: {first:?} then {later:?}"
    );
}

/// The outside probe's full disk: SQLite rolls the whole transaction back on SQLITE_FULL in the
/// middle of a statement. The writer then ran the group's later jobs in autocommit, so they
/// committed while their callers were told they failed. Here a job ends the transaction the way
/// SQLite does (a raw ROLLBACK: a real full disk cannot be timed to land inside one group).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_transaction_rolled_back_by_sqlite_fails_the_whole_group_and_commits_nothing()
{
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    // Hold the writer (until `release`) so the next jobs queue up and run as one group.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (running, started) = tokio::sync::oneshot::channel::<()>();
    let blocker = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .write(move |_| {
                    let _ = running.send(());
                    let _ = held.recv();
                    Ok::<_, StoreError>(())
                })
                .await
        })
    };
    started.await.expect("the writer runs the blocker");
    let zone = |id: &'static str, lose_transaction: bool| {
        store.write(move |ctx| {
            let op = ctx.new_op("ev", "zone.upsert", id, json!({"name": id}));
            ctx.apply(&op)?;
            if lose_transaction {
                ctx.conn().execute_batch("ROLLBACK")?;
                return Err(crate::oplog::ApplyError::Store(StoreError::RolledBack));
            }
            Ok(())
        })
    };
    // join! polls in order: each write is queued by its first poll, then the writer is released.
    let (before, culprit, after, ()) = tokio::join!(
        zone("before", false),
        zone("culprit", true),
        zone("after", false),
        async { release.send(()).expect("release the writer") }
    );
    blocker.await.expect("task").expect("blocker");
    for (name, result) in [("before", before), ("culprit", culprit), ("after", after)] {
        assert!(
            result.is_err(),
            "`{name}` was in the lost group and must be told it failed"
        );
    }
    let zones: i64 = store
        .read(|c| {
            c.query_row("SELECT count(*) FROM zones", [], |r| r.get(0))
                .map_err(StoreError::from)
        })
        .await
        .expect("read");
    assert_eq!(zones, 0, "nothing of the lost group is in the file");
    store.ping().await.expect("the writer goes on");
}

/// A database poisoned before the clock bound: the mark and the ops minted after the poison
/// carry stamps past `i64::MAX`, stored negative. Reopened, the clock resumes after the newest
/// valid stamp and local edits of existing records win again.
#[tokio::test]
async fn regression_a_clock_poisoned_past_i64_max_resumes_after_the_newest_valid_stamp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let sane = store
        .write(|ctx| {
            let op = ctx.new_op("ev", "zone.upsert", "z1", json!({"name": "Before"}));
            ctx.apply(&op)?;
            Ok::<_, crate::oplog::ApplyError>(op.hlc)
        })
        .await
        .expect("write");
    store
        .write(|ctx| {
            save_hlc_high_water(ctx.conn(), (9_223_372_036_854_775_813, 3))?;
            // What the old `as i64` stored for an op stamped past i64::MAX.
            ctx.conn().execute(
                "UPDATE field_versions SET hlc_wall = -9223372036854775803",
                [],
            )?;
            Ok::<_, StoreError>(())
        })
        .await
        .expect("poison");
    store.close().await;

    let store = open(dir.path());
    let (name, stamp) = store
        .write(|ctx| {
            let op = ctx.new_op("ev", "zone.upsert", "z1", json!({"name": "After"}));
            ctx.apply(&op)?;
            let name: String =
                ctx.conn()
                    .query_row("SELECT name FROM zones WHERE id = 'z1'", [], |r| r.get(0))?;
            Ok::<_, crate::oplog::ApplyError>((name, op.hlc))
        })
        .await
        .expect("a local edit is accepted");
    assert_eq!(name, "After");
    assert!(
        stamp > sane && stamp.wall_ms < now_ms() + 60_000,
        "{stamp:?}"
    );
}

/// The outside probe found the data directory 0755 and the database 0644: every local user could
/// read attendees' names, tickets and messages.
#[tokio::test]
async fn regression_the_data_directory_and_database_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let store = open(&data);
    store.ping().await.expect("write");
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for file in [DB_FILE, "venued.db-wal", "venued.db-shm"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    store.close().await;
}

/// Appends `n` zone ops in one job; their seqs.
async fn append(store: &Store, first: usize, n: usize) -> Vec<i64> {
    store
        .write(move |ctx| {
            let mut seqs = Vec::with_capacity(n);
            for i in first..first + n {
                let op = ctx.new_op("ev", "zone.upsert", &format!("z{i}"), json!({"name": "Z"}));
                seqs.push(ctx.apply_owned(op)?.seq());
            }
            Ok::<_, crate::oplog::ApplyError>(seqs)
        })
        .await
        .expect("appended")
}

/// Everything `sub` hands out until it has seen `last`.
async fn drain(sub: &mut Subscription, last: i64) -> Vec<i64> {
    let mut seen = Vec::new();
    while seen.last().is_none_or(|s| *s < last) {
        let ops = tokio::time::timeout(std::time::Duration::from_secs(10), sub.next())
            .await
            .expect("the stream delivers")
            .expect("the store is open")
            .expect("readable");
        seen.extend(ops.iter().map(|c| c.seq));
    }
    seen
}

#[tokio::test]
async fn the_stream_hands_every_committed_op_once_in_order_and_skips_failed_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let before = append(&store, 0, 3).await;
    let mut sub = store.subscribe("test");
    // A job that fails: what it applied never reaches the stream.
    let refused = store
        .write(|ctx| {
            let op = ctx.new_op("ev", "zone.upsert", "gone", json!({"name": "Z"}));
            ctx.apply_owned(op)?;
            Err::<(), _>(crate::oplog::ApplyError::UnknownKind("refused".into()))
        })
        .await;
    assert!(refused.is_err());
    let mut expected = append(&store, 10, 2).await;
    expected.extend(append(&store, 20, 1).await);
    let seen = drain(&mut sub, *expected.last().expect("some")).await;
    assert_eq!(seen, expected, "only what was committed after subscribing");
    assert!(seen.iter().all(|s| !before.contains(s)));
    assert_eq!(store.last_seq(), *expected.last().expect("some"));
}

/// The lag policy: a subscriber more than `CAPACITY` groups behind, or a group larger than
/// `MAX_BATCH_OPS`, reads the missed ops back from the log, so it still sees each op once, in
/// order; the writer never waits for it.
#[tokio::test]
async fn a_subscriber_that_falls_behind_reads_the_missed_ops_back_from_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let mut sub = store.subscribe("test");
    let mut expected = Vec::new();
    // More groups than the broadcast holds, none read meanwhile.
    for i in 0..committed::CAPACITY + 50 {
        expected.extend(append(&store, i, 1).await);
    }
    // And one group too large to carry (an import).
    expected.extend(append(&store, 100_000, committed::MAX_BATCH_OPS + 10).await);
    let last = *expected.last().expect("some");
    let seen = drain(&mut sub, last).await;
    assert_eq!(seen.len(), expected.len(), "each op once");
    assert_eq!(seen, expected, "in log order");
}

/// Found by the LAN test (#19): a subscriber that was level when a group too large to carry
/// arrived read back only the first `MAX_BATCH_OPS` of it, because the gap named the last op
/// carried as the group's end, and `last_seq` stopped there too (peers long-polled on it).
#[tokio::test]
async fn a_level_subscriber_gets_every_op_of_a_group_too_large_to_carry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let mut sub = store.subscribe("test");
    let mut expected = append(&store, 0, 1).await;
    assert_eq!(drain(&mut sub, expected[0]).await, expected);
    let group = append(&store, 100_000, committed::MAX_BATCH_OPS + 10).await;
    assert_eq!(store.last_seq(), *group.last().expect("some"));
    expected = group;
    expected.extend(append(&store, 200_000, 1).await);
    let seen = drain(&mut sub, *expected.last().expect("some")).await;
    assert_eq!(seen.len(), expected.len(), "each op once");
    assert_eq!(seen, expected, "in log order");
}

/// `poll` tells presence, without waiting, whether anything it cares about changed.
#[tokio::test]
async fn poll_reports_matches_and_misses_without_waiting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let mut sub = store.subscribe("test");
    assert_eq!(sub.poll(|_| true), Polled::default());
    append(&store, 0, 2).await;
    let polled = sub.poll(|op| op.entity_id == "z1");
    assert_eq!(
        (polled.ops, polled.matched, polled.missed),
        (2, true, false)
    );
    append(&store, 10, committed::MAX_BATCH_OPS + 1).await;
    assert!(sub.poll(|_| false).missed, "an oversized group is a miss");
}
