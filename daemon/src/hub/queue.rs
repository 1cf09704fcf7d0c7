//! A connection's bounded send queue, with drop priorities.
//!
//! A phone on a weak WiFi link falls behind. Its queue holds at most
//! [`SEND_QUEUE_FRAMES`](super::SEND_QUEUE_FRAMES) frames; when it is full, the least useful
//! frame goes first: a typing indicator, then a presence change, then a read receipt (each
//! is superseded by the next one anyway). Messages, acks, errors and announcements are never
//! dropped: when only those are left, the push reports [`Pushed::Overflow`] and the
//! connection is closed with `slow_consumer`, to resume with gap-fill.
//!
//! Plain state behind a mutex, with one waiting reader: tested without sockets.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;

/// What a frame is worth when the queue is full; droppable classes first, in drop order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// `typing.indicator`: dropped first.
    Typing = 0,
    /// `presence.changed`, occupancy and bridged MQTT frames: dropped next.
    Presence = 1,
    /// `read.receipt`: dropped last.
    Receipt = 2,
    /// Messages, edits, acks, errors, announcements, badges: never dropped.
    Essential = 3,
}

impl Class {
    /// The class of a server frame type.
    pub fn of(kind: &str) -> Class {
        match kind {
            "typing.indicator" => Class::Typing,
            "presence.changed" | "zone.occupancy" | "mqtt.message" => Class::Presence,
            "read.receipt" => Class::Receipt,
            _ => Class::Essential,
        }
    }

    /// A fixed label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Class::Typing => "typing",
            Class::Presence => "presence",
            Class::Receipt => "receipt",
            Class::Essential => "essential",
        }
    }
}

/// What became of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued, nothing dropped.
    Queued,
    /// The queue was full: a frame of this class was dropped (the new one or an older one).
    Dropped(Class),
    /// The queue was full of frames that may not be dropped: close the connection.
    Overflow,
}

struct State {
    frames: VecDeque<(Class, Utf8Bytes)>,
    /// Queued frames per class, to find a victim without a scan when there is none.
    counts: [usize; 4],
    capacity: usize,
}

struct Inner {
    state: Mutex<State>,
    ready: Notify,
}

/// One connection's send queue; clones share it (the hub pushes, the connection pops).
#[derive(Clone)]
pub struct SendQueue(Arc<Inner>);

impl SendQueue {
    /// An empty queue holding at most `capacity` frames.
    pub fn new(capacity: usize) -> Self {
        SendQueue(Arc::new(Inner {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                counts: [0; 4],
                capacity: capacity.max(1),
            }),
            ready: Notify::new(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a frame, dropping the least useful one when full.
    pub fn push(&self, class: Class, bytes: Utf8Bytes) -> Pushed {
        let outcome = {
            let mut state = self.lock();
            let outcome = match state.frames.len() < state.capacity {
                true => Pushed::Queued,
                false => {
                    let lowest_queued = (0..3).find(|&c| state.counts[c] > 0);
                    match lowest_queued {
                        // The new frame is worth no more than anything droppable in the queue
                        // (or nothing queued may be dropped): the new one goes.
                        _ if class != Class::Essential
                            && lowest_queued.is_none_or(|c| class as usize <= c) =>
                        {
                            return Pushed::Dropped(class);
                        }
                        Some(c) => {
                            let at = state.frames.iter().position(|(k, _)| *k as usize == c);
                            if let Some(at) = at {
                                state.frames.remove(at);
                                state.counts[c] -= 1;
                            }
                            Pushed::Dropped(state_class(c))
                        }
                        None => return Pushed::Overflow,
                    }
                }
            };
            state.counts[class as usize] += 1;
            state.frames.push_back((class, bytes));
            outcome
        };
        self.0.ready.notify_one();
        outcome
    }

    /// The next frame, waiting for one. One reader only.
    pub async fn pop(&self) -> Utf8Bytes {
        loop {
            if let Some(bytes) = self.try_pop() {
                return bytes;
            }
            // `notify_one` keeps a permit when nobody waits, so a push between `try_pop` and
            // here is not missed.
            self.0.ready.notified().await;
        }
    }

    /// The next frame, if one is queued.
    pub fn try_pop(&self) -> Option<Utf8Bytes> {
        let mut state = self.lock();
        let (class, bytes) = state.frames.pop_front()?;
        state.counts[class as usize] -= 1;
        Some(bytes)
    }

    /// Frames queued now.
    pub fn len(&self) -> usize {
        self.lock().frames.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn state_class(c: usize) -> Class {
    match c {
        0 => Class::Typing,
        1 => Class::Presence,
        2 => Class::Receipt,
        _ => Class::Essential,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(q: &SendQueue) -> Vec<String> {
        std::iter::from_fn(|| q.try_pop().map(|b| b.as_str().to_string())).collect()
    }

    #[test]
    fn a_full_queue_drops_typing_then_presence_then_receipts_never_messages() {
        let q = SendQueue::new(4);
        assert_eq!(q.push(Class::Receipt, "r1".into()), Pushed::Queued);
        assert_eq!(q.push(Class::Typing, "t1".into()), Pushed::Queued);
        assert_eq!(q.push(Class::Presence, "p1".into()), Pushed::Queued);
        assert_eq!(q.push(Class::Essential, "m1".into()), Pushed::Queued);
        // Full. A message evicts the typing indicator first...
        assert_eq!(
            q.push(Class::Essential, "m2".into()),
            Pushed::Dropped(Class::Typing)
        );
        // ...a new typing indicator is worth less than anything queued: it goes itself...
        assert_eq!(
            q.push(Class::Typing, "t2".into()),
            Pushed::Dropped(Class::Typing)
        );
        // ...a receipt evicts the presence change, a message then the receipt.
        assert_eq!(
            q.push(Class::Receipt, "r2".into()),
            Pushed::Dropped(Class::Presence)
        );
        assert_eq!(
            q.push(Class::Essential, "m3".into()),
            Pushed::Dropped(Class::Receipt)
        );
        assert_eq!(drain(&q), ["m1", "m2", "r2", "m3"]);
    }

    #[test]
    fn only_undroppable_frames_left_means_overflow_and_nothing_is_lost_from_the_queue() {
        let q = SendQueue::new(2);
        q.push(Class::Essential, "m1".into());
        q.push(Class::Essential, "m2".into());
        assert_eq!(
            q.push(Class::Presence, "p".into()),
            Pushed::Dropped(Class::Presence)
        );
        assert_eq!(q.push(Class::Essential, "m3".into()), Pushed::Overflow);
        assert_eq!(drain(&q), ["m1", "m2"]);
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn pop_waits_for_a_push_and_misses_none() {
        let q = SendQueue::new(8);
        let reader = q.clone();
        let got = tokio::spawn(async move { (reader.pop().await, reader.pop().await) });
        q.push(Class::Essential, "a".into());
        q.push(Class::Typing, "b".into());
        let (a, b) = got.await.unwrap();
        assert_eq!((a.as_str(), b.as_str()), ("a", "b"));
    }

    #[test]
    fn classes_of_frame_types() {
        assert_eq!(Class::of("typing.indicator"), Class::Typing);
        assert_eq!(Class::of("presence.changed"), Class::Presence);
        assert_eq!(Class::of("read.receipt"), Class::Receipt);
        for kind in [
            "message.new",
            "ack",
            "error",
            "announcement",
            "notification.badge",
        ] {
            assert_eq!(Class::of(kind), Class::Essential, "{kind}");
        }
    }
}
