//! The queue in front of one WebSocket connection, bounded, with newest-version coalescing.
//!
//! Policy at the bounds (api.md): up to `soft` frames queue as they come. Past `soft`, a new version of a call
//! replaces the older version still queued for it (older versions of a call are worthless once a newer
//! exists), so the queue holds at most one frame per call plus control frames, and the newest version of
//! every call is always delivered. Past `hard` frames or `hard_bytes` (a client that cannot keep up even with
//! one frame per call), the connection is marked overflowed and its writer closes it with code 4008.

use crate::store::CallKey;
use bytes::Bytes;
use hashbrown::HashMap;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::Notify;

/// Bounds of one outbox.
#[derive(Debug, Clone, Copy)]
pub struct OutboxLimits {
    /// Frames queued before coalescing starts.
    pub soft: usize,
    /// Frames queued (after coalescing) before the connection is closed.
    pub hard: usize,
    /// Bytes queued before the connection is closed.
    pub hard_bytes: usize,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        Self {
            soft: 1024,
            hard: 16_384,
            hard_bytes: 32 * 1024 * 1024,
        }
    }
}

/// One frame for the writer to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame: a JSON message.
    Text(Bytes),
    /// The answer to a client's ping, with its payload.
    Pong(Bytes),
}

enum Slot {
    Control(Frame),
    Notification(CallKey, Bytes),
    /// A notification replaced by a newer version of its call.
    Dropped,
}

#[derive(Default)]
struct State {
    slots: VecDeque<Slot>,
    /// Index in `slots` of the queued frame of each call. Built only when the queue first reaches the soft
    /// bound and dropped when it drains: a client that keeps up never pays for it, and a map sized for a
    /// past backlog is not kept alive by an idle connection.
    latest: Option<HashMap<CallKey, usize>>,
    live: usize,
    bytes: usize,
    overflowed: bool,
    closed: bool,
}

impl State {
    /// The coalescing index, built from the queue on first use.
    fn latest(&mut self) -> &mut HashMap<CallKey, usize> {
        let slots = &self.slots;
        self.latest.get_or_insert_with(|| {
            let mut latest = HashMap::with_capacity(slots.len());
            for (index, slot) in slots.iter().enumerate() {
                if let Slot::Notification(call, _) = slot {
                    latest.insert(*call, index);
                }
            }
            latest
        })
    }
}

/// One connection's outbound queue.
pub struct Outbox {
    limits: OutboxLimits,
    state: Mutex<State>,
    ready: Notify,
}

/// What a push did, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// Queued, replacing an older version of the same call.
    Coalesced,
    /// The outbox is over its hard bound or closed: nothing queued.
    Refused,
}

impl Outbox {
    /// An empty outbox.
    pub fn new(limits: OutboxLimits) -> Self {
        Self {
            limits,
            state: Mutex::new(State::default()),
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind; keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a control message (subscribed, error, pong): never coalesced.
    pub fn push_control(&self, message: Bytes) -> Pushed {
        self.push_frame(Frame::Text(message))
    }

    /// Queues the answer to a client's ping.
    pub fn push_pong(&self, payload: Bytes) -> Pushed {
        self.push_frame(Frame::Pong(payload))
    }

    fn push_frame(&self, frame: Frame) -> Pushed {
        let mut state = self.lock();
        if state.overflowed || state.closed {
            return Pushed::Refused;
        }
        state.bytes += match &frame {
            Frame::Text(bytes) | Frame::Pong(bytes) => bytes.len(),
        };
        state.live += 1;
        state.slots.push_back(Slot::Control(frame));
        self.check_hard(&mut state);
        drop(state);
        self.ready.notify_one();
        Pushed::Queued
    }

    /// Queues a notification frame about `call` and wakes the writer if it needs waking.
    pub fn push_notification(&self, call: CallKey, frame: Bytes) -> Pushed {
        let (pushed, wake) = self.queue_notification(call, frame);
        if wake {
            self.wake();
        }
        pushed
    }

    /// Queues a notification frame about `call` without waking the writer. When the second value is true
    /// the caller must call [`Outbox::wake`] once it has queued the rest of its batch: a writer woken only
    /// then finds the whole batch and sends it in one write.
    pub fn queue_notification(&self, call: CallKey, frame: Bytes) -> (Pushed, bool) {
        let mut state = self.lock();
        if state.overflowed || state.closed {
            return (Pushed::Refused, false);
        }
        // The writer empties the whole queue each time it wakes, so only the push that makes the queue
        // non-empty needs to wake it.
        let wake = state.slots.is_empty();
        let mut result = Pushed::Queued;
        let index = state.slots.len();
        if state.live >= self.limits.soft {
            let replaced = state.latest().insert(call, index);
            if let Some(old) = replaced
                && let Some(slot) = state.slots.get_mut(old)
                && let Slot::Notification(_, old) = std::mem::replace(slot, Slot::Dropped)
            {
                state.bytes -= old.len();
                state.live -= 1;
                result = Pushed::Coalesced;
            }
        } else if let Some(latest) = &mut state.latest {
            latest.insert(call, index);
        }
        state.bytes += frame.len();
        state.live += 1;
        state.slots.push_back(Slot::Notification(call, frame));
        self.check_hard(&mut state);
        (result, wake)
    }

    /// Wakes the writer.
    pub fn wake(&self) {
        self.ready.notify_one();
    }

    fn check_hard(&self, state: &mut State) {
        if state.live > self.limits.hard || state.bytes > self.limits.hard_bytes {
            state.overflowed = true;
            state.slots = VecDeque::new();
            state.latest = None;
            state.live = 0;
            state.bytes = 0;
        }
    }

    /// Takes every queued frame, in order, into `out`. Returns `Err(Overflowed)` when the outbox overflowed.
    pub fn drain(&self, out: &mut Vec<Frame>) -> Result<(), Overflowed> {
        let mut state = self.lock();
        if state.overflowed {
            return Err(Overflowed);
        }
        out.reserve(state.live);
        for slot in state.slots.drain(..) {
            match slot {
                Slot::Control(frame) => out.push(frame),
                Slot::Notification(_, frame) => out.push(Frame::Text(frame)),
                Slot::Dropped => {}
            }
        }
        // A queue that grew far past the soft bound gives its memory back rather than keeping it for an
        // idle connection.
        if state.slots.capacity() > self.limits.soft {
            state.slots = VecDeque::new();
        }
        state.latest = None;
        state.live = 0;
        state.bytes = 0;
        Ok(())
    }

    /// Waits until something is queued (or the outbox is closed).
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Marks the outbox closed: later pushes are refused, and the writer is woken.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// Whether the outbox overflowed its hard bound.
    pub fn overflowed(&self) -> bool {
        self.lock().overflowed
    }
}

/// The outbox went past its hard bound: the connection must be closed with 4008.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflowed;

#[cfg(test)]
mod tests {
    use super::*;

    fn key(number: u64) -> CallKey {
        CallKey { shard: 0, number }
    }

    fn frames(outbox: &Outbox) -> Vec<String> {
        let mut out = Vec::new();
        outbox.drain(&mut out).unwrap();
        out.iter()
            .map(|f| match f {
                Frame::Text(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                Frame::Pong(bytes) => format!("pong:{}", String::from_utf8_lossy(bytes)),
            })
            .collect()
    }

    #[test]
    fn below_the_soft_bound_everything_is_kept_in_order() {
        let outbox = Outbox::new(OutboxLimits {
            soft: 10,
            hard: 20,
            hard_bytes: 1 << 20,
        });
        outbox.push_notification(key(1), "a1".into());
        outbox.push_notification(key(1), "a2".into());
        outbox.push_control("c".into());
        assert_eq!(frames(&outbox), ["a1", "a2", "c"]);
    }

    #[test]
    fn past_the_soft_bound_only_the_newest_version_of_each_call_is_kept() {
        let outbox = Outbox::new(OutboxLimits {
            soft: 2,
            hard: 10,
            hard_bytes: 1 << 20,
        });
        outbox.push_notification(key(1), "a1".into());
        outbox.push_notification(key(2), "b1".into());
        assert_eq!(
            outbox.push_notification(key(1), "a2".into()),
            Pushed::Coalesced
        );
        assert_eq!(
            outbox.push_notification(key(2), "b2".into()),
            Pushed::Coalesced
        );
        assert_eq!(
            outbox.push_notification(key(1), "a3".into()),
            Pushed::Coalesced
        );
        assert_eq!(frames(&outbox), ["b2", "a3"]);
        // After a drain, positions start again and nothing stale is replaced.
        outbox.push_notification(key(1), "a4".into());
        assert_eq!(frames(&outbox), ["a4"]);
    }

    #[test]
    fn every_push_into_an_empty_queue_wakes_the_writer() {
        use futures_util::FutureExt;
        let outbox = Outbox::new(OutboxLimits::default());
        assert!(outbox.ready().now_or_never().is_none());
        outbox.push_notification(key(1), "a1".into());
        outbox.push_notification(key(1), "a2".into());
        assert!(outbox.ready().now_or_never().is_some());
        assert_eq!(frames(&outbox), ["a1", "a2"]);
        // Drained: the second push of the earlier batch left no stale wake-up behind...
        assert!(outbox.ready().now_or_never().is_none());
        // ...and the next push into the empty queue wakes it again.
        outbox.push_notification(key(2), "b1".into());
        assert!(outbox.ready().now_or_never().is_some());
        assert_eq!(frames(&outbox), ["b1"]);
    }

    #[test]
    fn past_the_hard_bound_the_outbox_overflows() {
        let outbox = Outbox::new(OutboxLimits {
            soft: 2,
            hard: 3,
            hard_bytes: 1 << 20,
        });
        for n in 0..4 {
            outbox.push_notification(key(n), "x".into());
        }
        assert!(outbox.overflowed());
        assert_eq!(outbox.push_control("c".into()), Pushed::Refused);
        assert_eq!(outbox.drain(&mut Vec::new()), Err(Overflowed));
    }

    #[test]
    fn byte_bound_counts_too() {
        let outbox = Outbox::new(OutboxLimits {
            soft: 100,
            hard: 100,
            hard_bytes: 5,
        });
        outbox.push_notification(key(1), "abc".into());
        assert!(!outbox.overflowed());
        outbox.push_notification(key(2), "abc".into());
        assert!(outbox.overflowed());
    }
}
