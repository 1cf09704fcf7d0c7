//! Store benchmarks (`cargo bench -p venued --bench store`).
//!
//! - `op_append/*_64_callers`: criterion, durable op appends (`synchronous=FULL`, one fsync per
//!   group) from 64 concurrent callers, for an append-only kind (check-in) and a
//!   last-writer-wins kind (attendee upsert); throughput in ops/s.
//! - `steady 1000 ops/s`: check-in ops at a fixed rate (open-loop) run printing p50/p99/max commit latency as
//!   a caller sees it (enqueue to durable ack), which criterion cannot express.
//!
//! A subscriber follows the committed-op stream throughout, as in the daemon.
//!
//! The database lives under the target directory, on the same disk as the checkout, never on a
//! tmpfs where fsync would be free.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use serde_json::json;
use venued::metrics::StoreMetrics;
use venued::oplog::ApplyError;
use venued::store::{Store, StoreOptions};

/// The allocator `venued` runs with (`daemon/src/bin/venued/main.rs`), so the bench measures the
/// writer as the daemon runs it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CALLERS: usize = 64;
const OPS_PER_CALLER: usize = 50;
const STEADY_RATE_PER_SEC: u64 = 1_000;
const STEADY_SECS: u64 = 10;

/// A runtime and a fresh store in a directory under the target dir (kept alive by the caller).
fn fixture() -> (tokio::runtime::Runtime, tempfile::TempDir, Store) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let store = Store::open(
        dir.path(),
        &StoreOptions::default(),
        StoreMetrics::detached(),
    )
    .expect("store opens");
    // The daemon always follows the committed-op stream (the hub, the bridge, presence); one
    // subscriber that reads every op stands for them. Without any, the writer itself would drop
    // each group's ops when the broadcast finds no receiver, which the daemon never does.
    let mut stream = store.subscribe("bench");
    runtime.spawn(async move { while stream.next().await.is_some() {} });
    (runtime, dir, store)
}

/// The op kinds measured: an append-only fact and a last-writer-wins field update.
#[derive(Clone, Copy)]
enum Kind {
    Checkin,
    AttendeeUpsert,
}

/// Entity ids never repeat across iterations, so every check-in is a first check-in (a repeat
/// would measure the duplicate-flagging path instead).
static NEXT_ENTITY: AtomicUsize = AtomicUsize::new(0);

async fn append(store: &Store, kind: Kind) {
    let n = NEXT_ENTITY.fetch_add(1, Ordering::Relaxed);
    store
        .write(move |ctx| {
            let entity = format!("a{n}");
            let op = match kind {
                Kind::Checkin => ctx.new_op(
                    "bench",
                    "checkin.record",
                    &entity,
                    json!({"device_id": "k1"}),
                ),
                Kind::AttendeeUpsert => ctx.new_op(
                    "bench",
                    "attendee.upsert",
                    &entity,
                    json!({"name": "Bench"}),
                ),
            };
            ctx.apply_owned(op)?;
            Ok::<_, ApplyError>(())
        })
        .await
        .expect("append");
}

fn op_append(c: &mut Criterion) {
    let (runtime, _dir, store) = fixture();
    let mut group = c.benchmark_group("op_append");
    group.throughput(Throughput::Elements((CALLERS * OPS_PER_CALLER) as u64));
    group.sample_size(20);
    for (name, kind) in [
        ("checkin_64_callers", Kind::Checkin),
        ("attendee_upsert_64_callers", Kind::AttendeeUpsert),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| {
                let store = store.clone();
                async move {
                    let mut tasks = tokio::task::JoinSet::new();
                    for _ in 0..CALLERS {
                        let store = store.clone();
                        tasks.spawn(async move {
                            for _ in 0..OPS_PER_CALLER {
                                append(&store, kind).await;
                            }
                        });
                    }
                    while tasks.join_next().await.is_some() {}
                }
            });
        });
    }
    group.finish();
}

/// Sends one append every millisecond for `STEADY_SECS`, each on its own task, and reports the
/// latency distribution from send to durable acknowledgement.
fn steady_rate() {
    let (runtime, _dir, store) = fixture();
    let latencies = runtime.block_on(async move {
        let mut every =
            tokio::time::interval(Duration::from_micros(1_000_000 / STEADY_RATE_PER_SEC));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..STEADY_RATE_PER_SEC * STEADY_SECS {
            every.tick().await;
            let store = store.clone();
            tasks.spawn(async move {
                let sent = Instant::now();
                append(&store, Kind::Checkin).await;
                sent.elapsed()
            });
        }
        let mut all = Vec::new();
        while let Some(latency) = tasks.join_next().await {
            all.push(latency.expect("task"));
        }
        all
    });
    let mut sorted = latencies;
    sorted.sort();
    let pick = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q) as usize];
    eprintln!(
        "steady {STEADY_RATE_PER_SEC} ops/s for {STEADY_SECS} s ({} ops, fsync'd): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        sorted.len(),
        pick(0.50).as_secs_f64() * 1e3,
        pick(0.99).as_secs_f64() * 1e3,
        pick(1.0).as_secs_f64() * 1e3,
    );
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    op_append(&mut criterion);
    criterion.final_summary();
    // `cargo test --benches` runs benches once in test mode; the timed run is for `cargo bench`.
    if std::env::args().any(|a| a == "--bench") {
        steady_rate();
    }
}
