//! The committed-op stream: the one source of "what just changed".
//!
//! After every group commit the writer publishes the ops that group appended (local ones and
//! ones pulled from the relay alike) on a bounded broadcast, before it answers any of the
//! group's callers. Everything that reacts to a change (the hub's fan-out, badges and group
//! frames, the bridge to MQTT, presence's badge registry) subscribes here instead of being
//! called by whoever made the change, so an op causes the same effects wherever it came from.
//!
//! Lag policy: the writer never waits for a subscriber. The op log is the truth and the stream
//! only a fast path to it: a subscriber that fell more than [`CAPACITY`] groups behind, or a
//! group too large to carry ([`MAX_BATCH_OPS`], a bulk import), is told so by
//! [`Subscription::next`], which then reads the missed ops back from the store in log order.
//! A subscriber therefore sees every committed op that is still in the log, once, in order.
//! (Zone transitions deleted by the retention purge or a `forget` before it caught up are gone,
//! as intended.)

use std::sync::{Arc, Mutex, PoisonError, Weak};

use sync_agent::Op;
use tokio::sync::broadcast;

use super::{Inner, Store, StoreError};
use crate::metrics::StoreMetrics;

/// Groups the broadcast holds for its slowest subscriber before that one must resynchronise.
pub const CAPACITY: usize = 1024;
/// Ops one group carries on the stream; a larger group (an import) is announced as a gap that
/// subscribers read back from the store, so the stream's memory stays bounded.
pub const MAX_BATCH_OPS: usize = 4096;
/// Ops read back from the store per query while a subscriber catches up.
const RESYNC_CHUNK: u32 = 1000;

/// One committed op and its position in this appliance's log (`ops.seq`).
#[derive(Debug)]
pub struct Committed {
    /// The op's local sequence number.
    pub seq: i64,
    /// The op as applied.
    pub op: Op,
}

/// What one group commit sends.
#[derive(Debug)]
pub(crate) struct Batch {
    /// The group's ops in log order; empty when the group had more than [`MAX_BATCH_OPS`].
    ops: Vec<Committed>,
    /// The highest seq the group appended.
    through: i64,
}

/// A run of committed ops handed to a subscriber, in log order: the part of a broadcast batch it
/// had not seen (shared with the other subscribers, never copied), or ops read back from the
/// store. Dereferences to the slice of ops.
#[derive(Debug)]
pub struct Ops {
    batch: Arc<Batch>,
    from: usize,
}

impl std::ops::Deref for Ops {
    type Target = [Committed];

    fn deref(&self) -> &[Committed] {
        self.batch.ops.get(self.from..).unwrap_or_default()
    }
}

/// The writer's end of the stream (inside the store).
pub(crate) struct Publisher {
    tx: broadcast::Sender<Arc<Batch>>,
    /// The highest seq published; locked while publishing and subscribing, so a new subscriber
    /// starts exactly after what it will not receive.
    last: Mutex<i64>,
}

impl Publisher {
    /// A stream whose log currently ends at `last_seq`.
    pub(crate) fn new(last_seq: i64) -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
            last: Mutex::new(last_seq),
        }
    }

    /// Publishes one committed group that appended ops up to `through` (called by the writer
    /// after `COMMIT`, before answering). `ops` are all of them when `complete`; else the group
    /// was too large to carry, and subscribers read `..=through` back from the log.
    pub(crate) fn publish(&self, ops: Vec<Committed>, complete: bool, through: i64) {
        let ops = match complete {
            true => ops,
            false => Vec::new(),
        };
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        *last = (*last).max(through);
        // No receiver is not an error: nothing subscribed yet.
        let _ = self.tx.send(Arc::new(Batch { ops, through }));
    }

    fn last(&self) -> i64 {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn subscribe(&self) -> (broadcast::Receiver<Arc<Batch>>, i64) {
        let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        (self.tx.subscribe(), *last)
    }
}

/// One subscriber's view of the stream.
pub struct Subscription {
    name: &'static str,
    rx: broadcast::Receiver<Arc<Batch>>,
    /// Weak, so a subscriber never keeps the store (and its writer) alive past shutdown.
    store: Weak<Inner>,
    /// The highest seq handed out (or skipped as already seen).
    delivered: i64,
    /// The seq the subscriber must catch up to from the store, when it fell behind.
    behind: Option<i64>,
    metrics: StoreMetrics,
}

/// What [`Subscription::poll`] found without waiting.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Polled {
    /// Ops received (in log order).
    pub ops: usize,
    /// Whether any received op matched the predicate.
    pub matched: bool,
    /// Whether ops were missed (lag or an oversized group): the subscriber should rebuild
    /// whatever it derives from the store.
    pub missed: bool,
}

impl Store {
    /// Subscribes to the committed-op stream from now on; `name` labels its resyncs in metrics.
    pub fn subscribe(&self, name: &'static str) -> Subscription {
        let (rx, delivered) = self.inner.committed.subscribe();
        Subscription {
            name,
            rx,
            store: Arc::downgrade(&self.inner),
            delivered,
            behind: None,
            metrics: self.inner.metrics.clone(),
        }
    }
}

impl Store {
    /// The highest seq committed (and published on the stream) so far.
    pub fn last_seq(&self) -> i64 {
        self.inner.committed.last()
    }
}

impl Subscription {
    /// The next committed ops, in log order, each exactly once: a broadcast batch, or, after
    /// the subscriber fell behind, up to 1,000 ops read back from the store. `None`
    /// once the store has stopped.
    pub async fn next(&mut self) -> Option<Result<Ops, StoreError>> {
        loop {
            if let Some(through) = self.behind {
                return Some(self.catch_up(through).await);
            }
            match self.rx.recv().await {
                Ok(batch) => {
                    if let Some(ops) = self.take(batch) {
                        return Some(Ok(ops));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(groups)) => {
                    tracing::warn!(
                        subscriber = self.name,
                        groups,
                        "fell behind the committed-op stream; reading the missed ops from the store"
                    );
                    self.metrics.resynced(self.name);
                    // Up to wherever the log is now; the broadcast's later batches are skipped
                    // as far as they were read back.
                    self.behind = Some(i64::MAX);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Everything already on the stream, without waiting: how many ops, whether one matched
    /// `pred`, and whether any were missed. For a subscriber that only needs to know that
    /// something changed before it acts (presence's badge registry), not to see every op.
    pub fn poll(&mut self, pred: impl Fn(&Op) -> bool) -> Polled {
        let mut polled = Polled::default();
        loop {
            match self.rx.try_recv() {
                Ok(batch) => match batch.ops.is_empty() {
                    true => {
                        polled.missed = true;
                        self.delivered = self.delivered.max(batch.through);
                    }
                    false => {
                        polled.ops += batch.ops.len();
                        polled.matched |= batch.ops.iter().any(|c| pred(&c.op));
                        self.delivered = self.delivered.max(batch.through);
                    }
                },
                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                    self.metrics.resynced(self.name);
                    polled.missed = true;
                }
                Err(_) => return polled,
            }
        }
    }

    /// The part of `batch` not yet delivered; `None` when nothing of it is new.
    fn take(&mut self, batch: Arc<Batch>) -> Option<Ops> {
        if batch.through <= self.delivered {
            return None;
        }
        if batch.ops.is_empty() {
            // Too large to carry: read back from the store.
            self.behind = Some(batch.through);
            return None;
        }
        let from = batch.ops.partition_point(|c| c.seq <= self.delivered);
        self.delivered = batch.through;
        Some(Ops { batch, from })
    }

    /// Reads the next chunk after `delivered` from the store; clears `behind` once caught up.
    async fn catch_up(&mut self, through: i64) -> Result<Ops, StoreError> {
        let after = self.delivered;
        let store = Store {
            inner: self.store.upgrade().ok_or(StoreError::Closed)?,
        };
        let read = store
            .read(move |conn| {
                crate::oplog::read_after(conn, after, RESYNC_CHUNK).map_err(|e| match e {
                    crate::oplog::ApplyError::Store(e) => e,
                    other => StoreError::Unreadable(other.to_string()),
                })
            })
            .await?;
        let complete = read.len() < RESYNC_CHUNK as usize;
        let ops: Vec<Committed> = read
            .into_iter()
            .filter(|(seq, _)| *seq <= through)
            .map(|(seq, op)| Committed { seq, op })
            .collect();
        let last = ops.last().map(|c| c.seq);
        if let Some(last) = last {
            self.delivered = last;
        }
        if complete || self.delivered >= through || last.is_none() {
            self.behind = None;
        }
        Ok(Ops {
            batch: Arc::new(Batch {
                through: last.unwrap_or(self.delivered),
                ops,
            }),
            from: 0,
        })
    }
}
