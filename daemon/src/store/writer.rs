//! The one writer: a thread that owns the read-write connection and commits in groups.
//!
//! Callers send a job and await its result. The thread takes every job already queued (up to
//! `max_group`), runs each inside its own savepoint in one transaction, commits once (one fsync
//! under `synchronous=FULL`), and only then answers each caller. A job that fails rolls back its
//! savepoint alone, so one bad request never takes the rest of the group with it, and never
//! leaves a partial write.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use rusqlite::Connection;
use sync_agent::{Hlc, HlcClock, Op};
use tokio::sync::{mpsc, oneshot};

use super::committed::{Committed, MAX_BATCH_OPS, Publisher};
use super::{StoreError, now_ms};
use crate::metrics::StoreMetrics;
use crate::oplog::{self, Applied, ApplyError};

/// Told to a finished job once its group's transaction has committed (`None`) or failed.
pub(crate) type Completion = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// A unit of work for the writer thread.
pub(crate) trait Job: Send {
    /// Runs the job inside the open transaction; returns whether it failed (so its savepoint is
    /// rolled back) and what to tell the caller after the commit.
    fn run(self: Box<Self>, ctx: &mut WriteCtx<'_>) -> (bool, Completion);
    /// Tells the caller the job never ran.
    fn abort(self: Box<Self>, error: StoreError);
}

/// A typed job: a closure and the channel its caller waits on.
pub(crate) struct TypedJob<F, R, E> {
    pub(crate) work: F,
    pub(crate) reply: oneshot::Sender<Result<R, E>>,
}

impl<F, R, E> Job for TypedJob<F, R, E>
where
    F: FnOnce(&mut WriteCtx<'_>) -> Result<R, E> + Send + 'static,
    R: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    fn run(self: Box<Self>, ctx: &mut WriteCtx<'_>) -> (bool, Completion) {
        let Self { work, reply } = *self;
        // A panic in one job must not kill the writer (and with it the whole store).
        let result = match catch_unwind(AssertUnwindSafe(|| work(ctx))) {
            Ok(result) => result,
            Err(_) => Err(E::from(StoreError::JobPanicked)),
        };
        let failed = result.is_err();
        let completion: Completion = Box::new(move |commit_error| {
            let outcome = match (result, commit_error) {
                (Ok(value), None) => Ok(value),
                (Ok(_), Some(e)) => Err(E::from(e.for_caller())),
                (Err(e), _) => Err(e),
            };
            // The caller may have gone away (client disconnected); the write stands regardless.
            let _ = reply.send(outcome);
        });
        (failed, completion)
    }

    fn abort(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(E::from(error)));
    }
}

/// What a job sees: the connection inside the group's transaction, and the node's clock.
pub struct WriteCtx<'a> {
    conn: &'a Connection,
    clock: &'a mut HlcClock,
    now_ms: u64,
    appended: u64,
    /// The ops this group appended, for the committed-op stream (at most `MAX_BATCH_OPS`).
    committed: Vec<Committed>,
    /// More than `MAX_BATCH_OPS` were appended: the stream announces a gap instead.
    overflowed: bool,
    /// The seq of the last op this group appended: the end of the gap when it overflowed.
    last_seq: Option<i64>,
}

impl WriteCtx<'_> {
    /// The connection, inside the open transaction (and the job's savepoint).
    pub fn conn(&self) -> &Connection {
        self.conn
    }

    /// Wall-clock milliseconds at the start of the group.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        self.clock.node()
    }

    /// A fresh HLC stamp, strictly after every stamp issued or observed before.
    pub fn tick(&mut self) -> Hlc {
        self.clock.tick(self.now_ms)
    }

    /// A new local op (UUIDv7, fresh HLC stamp); not yet applied.
    pub fn new_op(
        &mut self,
        scope: &str,
        kind: &str,
        entity_id: &str,
        body: serde_json::Value,
    ) -> Op {
        let hlc = self.tick();
        Op {
            id: uuid::Uuid::now_v7(),
            v: sync_agent::OP_SCHEMA_VERSION,
            origin: hlc.node.clone(),
            hlc,
            scope: scope.into(),
            kind: kind.into(),
            entity_id: entity_id.into(),
            body,
            extra: serde_json::Map::new(),
        }
    }

    /// Applies an op to the domain tables and appends it to the op log, in this transaction.
    /// Idempotent by op id. Local and remote ops take this same path; the clock observes the
    /// op's stamp only once the op is applied, so a refused op leaves no trace on it either.
    /// A new op is copied onto the committed-op stream; [`apply_owned`](Self::apply_owned)
    /// moves it there instead, for callers that do not need it afterwards.
    pub fn apply(&mut self, op: &Op) -> Result<Applied, ApplyError> {
        let applied = self.log(op)?;
        if let Applied::New(seq) = applied {
            self.stream(seq, || op.clone());
        }
        Ok(applied)
    }

    /// [`apply`](Self::apply), moving the op onto the committed-op stream (no copy on the
    /// writer thread, which is the store's bottleneck).
    pub fn apply_owned(&mut self, op: Op) -> Result<Applied, ApplyError> {
        let applied = self.log(&op)?;
        if let Applied::New(seq) = applied {
            self.stream(seq, || op);
        }
        Ok(applied)
    }

    fn log(&mut self, op: &Op) -> Result<Applied, ApplyError> {
        let applied = oplog::apply(self.conn, op, self.now_ms)?;
        self.clock.observe(&op.hlc);
        if let Applied::New(_) = applied {
            self.appended += 1;
        }
        Ok(applied)
    }

    fn stream(&mut self, seq: i64, op: impl FnOnce() -> Op) {
        self.last_seq = Some(seq);
        match self.committed.len() < MAX_BATCH_OPS {
            true => self.committed.push(Committed { seq, op: op() }),
            false => self.overflowed = true,
        }
    }

    /// [`apply`](Self::apply) for an op made by another node: refused (nothing written, the
    /// clock unmoved) when its stamp is more than [`sync_agent::MAX_CLOCK_AHEAD_MS`] ahead of
    /// this node's clock, so one node's wrong clock cannot drag this one's into the future.
    pub fn apply_remote(&mut self, op: &Op) -> Result<Applied, ApplyError> {
        sync_agent::hlc::check_remote(&op.hlc, self.now_ms)?;
        self.apply(op)
    }
}

impl WriteCtx<'_> {
    /// [`apply_remote`](Self::apply_remote) in a savepoint of its own: an op that is refused
    /// leaves nothing behind, and the rest of the job goes on. The outer error is the store's
    /// (the job must fail); the inner result is the op's.
    pub fn try_apply_remote(&mut self, op: &Op) -> Result<Result<Applied, ApplyError>, StoreError> {
        execute_cached(self.conn, "SAVEPOINT remote_op")?;
        match self.apply_remote(op) {
            Ok(applied) => {
                execute_cached(self.conn, "RELEASE remote_op")?;
                Ok(Ok(applied))
            }
            Err(ApplyError::Store(e)) => Err(e),
            Err(refused) => {
                // A refused op was never counted or streamed; only its rows need undoing.
                execute_cached(self.conn, "ROLLBACK TO remote_op")?;
                execute_cached(self.conn, "RELEASE remote_op")?;
                Ok(Err(refused))
            }
        }
    }
}

/// What the writer tells the rest of the daemon after a commit.
pub(crate) struct Signals {
    /// Woken when a commit appended ops (one waiter: the sync agent).
    pub(crate) appended_ops: Arc<tokio::sync::Notify>,
    /// The committed-op stream.
    pub(crate) committed: Arc<Publisher>,
}

/// Runs the writer until every sender is dropped, then returns (the connection closes with it).
pub(crate) fn run(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Box<dyn Job>>,
    mut clock: HlcClock,
    max_group: usize,
    metrics: StoreMetrics,
    signals: Signals,
    after_commit: Option<super::AfterCommit>,
) {
    let mut jobs: Vec<Box<dyn Job>> = Vec::with_capacity(max_group);
    while let Some(first) = rx.blocking_recv() {
        jobs.push(first);
        while jobs.len() < max_group {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let size = jobs.len();
        let appended = commit_group(&mut conn, &mut clock, &signals.committed, &mut jobs);
        metrics.observe_group(size, appended, started.elapsed());
        if appended > 0 {
            // One waiter (the sync agent); a stored permit covers a commit between its checks.
            signals.appended_ops.notify_one();
        }
        if let Some(hook) = &after_commit {
            // Outside any transaction, before the next group: nothing commits while it runs.
            if catch_unwind(AssertUnwindSafe(|| hook(&conn))).is_err() {
                tracing::error!("the after-commit hook panicked; the writer goes on");
            }
        }
    }
    tracing::debug!("store writer stopped: every handle was dropped");
}

/// Runs and commits one group; every job's caller is answered before this returns. Returns the
/// number of ops appended, or 0 when the group did not commit.
fn commit_group(
    conn: &mut Connection,
    clock: &mut HlcClock,
    stream: &Publisher,
    jobs: &mut Vec<Box<dyn Job>>,
) -> u64 {
    if let Err(e) = execute_cached(conn, "BEGIN IMMEDIATE") {
        let error = StoreError::Commit(e.to_string());
        tracing::error!(%error, "store writer could not begin a transaction");
        for job in jobs.drain(..) {
            job.abort(error.for_caller());
        }
        return 0;
    }
    let high_water_before = clock.high_water();
    let mut ctx = WriteCtx {
        conn,
        clock,
        now_ms: now_ms(),
        appended: 0,
        // Most jobs append one op.
        committed: Vec::with_capacity(jobs.len()),
        overflowed: false,
        last_seq: None,
    };
    let mut completions = Vec::with_capacity(jobs.len());
    // Set once SQLite has rolled the whole transaction back on its own (SQLITE_FULL, SQLITE_IOERR
    // and a few others do that mid-statement): from then on no job may run, or its savepoint
    // would open a transaction of its own and commit outside the group.
    let mut lost: Option<StoreError> = None;
    for job in jobs.drain(..) {
        if let Some(error) = &lost {
            job.abort(error.for_caller());
            continue;
        }
        let outcome = execute_cached(ctx.conn, "SAVEPOINT job");
        let completion = match outcome {
            Ok(()) => {
                let (appended, streamed, last_seq) =
                    (ctx.appended, ctx.committed.len(), ctx.last_seq);
                let (failed, completion) = job.run(&mut ctx);
                if failed {
                    // Rolled back below: what it appended never happened.
                    ctx.appended = appended;
                    ctx.committed.truncate(streamed);
                    ctx.last_seq = last_seq;
                }
                if ctx.conn.is_autocommit() {
                    // The savepoint went with the transaction; see `lost` above.
                    lost = Some(StoreError::RolledBack);
                    completions.push(completion);
                    continue;
                }
                let end = match failed {
                    true => execute_cached(ctx.conn, "ROLLBACK TO job")
                        .and_then(|()| execute_cached(ctx.conn, "RELEASE job")),
                    false => execute_cached(ctx.conn, "RELEASE job"),
                };
                if let Err(e) = end {
                    tracing::error!(error = %e, "store writer could not close a savepoint");
                }
                completion
            }
            Err(e) => {
                job.abort(e);
                continue;
            }
        };
        completions.push(completion);
    }
    let appended = ctx.appended;
    let (committed, complete, through) = (
        std::mem::take(&mut ctx.committed),
        !ctx.overflowed,
        ctx.last_seq,
    );
    let high_water = ctx.clock.high_water();
    let mut result = match lost {
        Some(error) => Err(error),
        None => Ok(()),
    };
    if result.is_ok() && high_water != high_water_before {
        result = super::save_hlc_high_water(conn, high_water);
    }
    if result.is_ok() {
        result = execute_cached(conn, "COMMIT");
    }
    match result {
        Ok(()) => {
            // Before any caller hears of the commit: a subscriber that looks at the stream before
            // it acts (presence, before it applies anyone's privacy) sees every change a caller
            // was told of.
            if let Some(through) = through {
                stream.publish(committed, complete, through);
            }
            for completion in completions {
                completion(None);
            }
            appended
        }
        Err(e) => {
            let error = match e {
                StoreError::RolledBack => e,
                other => StoreError::Commit(other.to_string()),
            };
            tracing::error!(%error, "store group commit failed; every write in it was refused");
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            for completion in completions {
                completion(Some(&error));
            }
            0
        }
    }
}

/// Runs a parameterless statement through the statement cache: the group's fixed statements run
/// thousands of times a second, and parsing them each time is measurable.
fn execute_cached(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}
