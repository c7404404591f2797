//! The queue in front of one connection, bounded, with newest-version coalescing.
//!
//! Policy at the bounds (api.md): up to `soft` frames queue as they come. Past `soft`, the queue is
//! compacted to the newest version of each call (older versions of a call are worthless once a newer exists):
//! whenever it has doubled since the last compaction, and whenever the writer takes it. So a lagging client
//! holds at most about two frames per call plus control frames, and the newest version of every call is
//! always delivered. Past `hard` frames or `hard_bytes` (a client that cannot keep up even with one frame per
//! call), the connection is marked overflowed and its writer closes it with code 4008.
//!
//! A subscription's snapshot or resume enters the queue as one [`Backlog`] slot, rendered a chunk at a
//! time when the writer reaches it (outside every lock but this outbox's, and that only to take the
//! cursor and put it back), by the [`Renderer`]'s low-priority threads when the outbox has one, else by
//! the writer itself: a 100,000-call snapshot never sits in memory whole, is paced by the client's
//! reading, and every frame queued after it waits behind it, so nothing of the subscription arrives before
//! its last chunk. A backlog slot counts as one frame and no bytes against the bounds; a rendered chunk
//! waiting for the writer is at most one per connection.
//!
//! Compacting in passes rather than replacing on every push matters for fanout: a per-connection index of
//! queued calls costs a cache miss per delivery once thousands of connections lag at once, while one pass
//! over a queue uses a small map that stays in cache (a third of the gateway's CPU went to the index in a
//! 1,000-client saturation run).

use super::render::Renderer;
use crate::store::CallKey;
use bytes::Bytes;
use hashbrown::HashSet;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::Notify;

/// Frames reserved for at a drain; a longer queue just grows the vector.
const FRAMES_PER_DRAIN: usize = 4096;

/// Bounds of one outbox.
#[derive(Debug, Clone, Copy)]
pub struct OutboxLimits {
    /// Frames queued before coalescing starts.
    pub soft: usize,
    /// Bytes queued before coalescing starts (whichever bound comes first).
    pub soft_bytes: usize,
    /// Frames queued (after coalescing) before the connection is closed.
    pub hard: usize,
    /// Bytes queued before the connection is closed.
    pub hard_bytes: usize,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        Self {
            soft: 1024,
            soft_bytes: usize::MAX,
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

/// Frames produced on demand, in order: a snapshot's chunks, a resume's missed notifications.
pub trait Backlog: Send {
    /// Appends the next frames (a bounded number) to `out`; false once nothing is left.
    fn next_frames(&mut self, out: &mut Vec<Frame>) -> bool;
}

enum Slot {
    Control(Frame),
    Notification(CallKey, Bytes),
    /// A notification replaced by a newer version of its call.
    Dropped,
    /// Frames to render when the writer gets here.
    Backlog(Box<dyn Backlog>),
    /// The backlog whose chunk is being rendered right now; it comes back here unless finished.
    Rendering,
    /// A chunk rendered by a renderer, and the rest of its backlog unless it was the last.
    Rendered(Vec<Frame>, Option<Box<dyn Backlog>>),
}

impl Slot {
    fn bytes(&self) -> usize {
        match self {
            Slot::Control(Frame::Text(bytes) | Frame::Pong(bytes))
            | Slot::Notification(_, bytes) => bytes.len(),
            Slot::Dropped | Slot::Backlog(_) | Slot::Rendering | Slot::Rendered(..) => 0,
        }
    }
}

#[derive(Default)]
struct State {
    slots: VecDeque<Slot>,
    /// Slots queued (control, notifications, backlogs; not counting dropped slots).
    live: usize,
    bytes: usize,
    /// Compact when `live` reaches this (0: not yet set, use the soft bound).
    compact_at: usize,
    overflowed: bool,
    /// Rendering a backlog failed: the connection cannot go on in order.
    failed: bool,
    closed: bool,
}

thread_local! {
    /// Scratch set for compaction, reused so that it stays allocated and in cache.
    static SEEN: std::cell::RefCell<HashSet<CallKey>> = std::cell::RefCell::new(HashSet::new());
}

impl State {
    /// Drops every notification that has a newer version of its call later in the queue; returns how many.
    fn compact(&mut self) -> usize {
        let dropped = SEEN.with(|seen| {
            let mut seen = seen.borrow_mut();
            seen.clear();
            let mut dropped = 0;
            let mut freed = 0;
            for slot in self.slots.iter_mut().rev() {
                if let Slot::Notification(call, frame) = slot
                    && !seen.insert(*call)
                {
                    freed += frame.len();
                    *slot = Slot::Dropped;
                    dropped += 1;
                }
            }
            self.bytes -= freed;
            dropped
        });
        if dropped > 0 {
            self.slots.retain(|slot| !matches!(slot, Slot::Dropped));
            self.live -= dropped;
            metrics::counter!("callgate_coalesced_versions_total").increment(dropped as u64);
        }
        dropped
    }
}

/// One connection's outbound queue.
pub struct Outbox {
    limits: OutboxLimits,
    state: Mutex<State>,
    ready: Notify,
    /// Where backlogs are rendered, with this outbox's own handle for the answer; without one, the
    /// writer renders them itself in [`Outbox::drain`].
    renderer: Option<(Renderer, Weak<Outbox>)>,
}

/// What a push did, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
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
            renderer: None,
        }
    }

    /// An empty outbox whose backlogs `renderer` renders.
    pub fn rendered_by(limits: OutboxLimits, renderer: Renderer) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            limits,
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            renderer: Some((renderer, this.clone())),
        })
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

    /// Queues a backlog: its frames come after everything queued before it and before everything queued
    /// after it.
    pub fn push_backlog(&self, backlog: Box<dyn Backlog>) -> Pushed {
        let mut state = self.lock();
        if state.overflowed || state.closed {
            return Pushed::Refused;
        }
        state.live += 1;
        state.slots.push_back(Slot::Backlog(backlog));
        self.check_hard(&mut state);
        drop(state);
        self.ready.notify_one();
        Pushed::Queued
    }

    fn push_frame(&self, frame: Frame) -> Pushed {
        let mut state = self.lock();
        if state.overflowed || state.closed {
            return Pushed::Refused;
        }
        let slot = Slot::Control(frame);
        state.bytes += slot.bytes();
        state.live += 1;
        state.slots.push_back(slot);
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
        if state.live >= state.compact_at.max(self.limits.soft)
            || state.bytes >= self.limits.soft_bytes
        {
            state.compact();
            // Doubling: each frame is looked at a bounded number of times on average.
            state.compact_at = self.limits.soft.max(state.live * 2);
        }
        state.bytes += frame.len();
        state.live += 1;
        state.slots.push_back(Slot::Notification(call, frame));
        self.check_hard(&mut state);
        (Pushed::Queued, wake)
    }

    /// Wakes the writer.
    pub fn wake(&self) {
        self.ready.notify_one();
    }

    fn check_hard(&self, state: &mut State) {
        if state.live > self.limits.hard || state.bytes > self.limits.hard_bytes {
            state.overflowed = true;
            state.slots = VecDeque::new();
            state.live = 0;
            state.bytes = 0;
        }
    }

    /// Takes the queued frames, in order, into `out`: everything up to the first backlog, or else the
    /// backlog's next chunk. A backlog's chunk is rendered here, or, with a renderer, asked of it: the
    /// writer is woken when it is ready, and the chunk after it is asked for as this one is taken, so
    /// rendering the next overlaps writing this one. When something else can be taken the writer is
    /// woken again at once. Fails when the connection must be closed.
    pub fn drain(&self, out: &mut Vec<Frame>) -> Result<(), DrainError> {
        let mut state = self.lock();
        if state.overflowed {
            return Err(DrainError::Overflowed);
        }
        if state.failed {
            return Err(DrainError::RenderFailed);
        }
        if state.live > self.limits.soft || state.bytes > self.limits.soft_bytes {
            state.compact();
        }
        out.reserve(state.live.min(FRAMES_PER_DRAIN));
        let backlog = take_front(&mut state, out);
        drop(state);
        if let Some(cursor) = backlog {
            match &self.renderer {
                Some((renderer, this)) => renderer.submit(this.clone(), cursor),
                None => {
                    // Rendered without the lock: the publisher keeps queueing behind the placeholder.
                    let mut cursor = cursor;
                    let more = cursor.next_frames(out);
                    let mut state = self.lock();
                    if let Some(at) = state
                        .slots
                        .iter()
                        .position(|slot| matches!(slot, Slot::Rendering))
                    {
                        if more {
                            state.slots[at] = Slot::Backlog(cursor);
                        } else {
                            state.slots.remove(at);
                            state.live -= 1;
                        }
                    }
                }
            }
        }
        let mut state = self.lock();
        match state.slots.front() {
            None => {
                // A queue that grew far past the soft bound gives its memory back rather than keeping
                // it for an idle connection.
                if state.slots.capacity() > self.limits.soft {
                    state.slots = VecDeque::new();
                }
                state.live = 0;
                state.bytes = 0;
                state.compact_at = 0;
            }
            // The renderer wakes the writer when the chunk is ready.
            Some(Slot::Rendering) => {}
            Some(_) => {
                drop(state);
                self.ready.notify_one();
            }
        }
        Ok(())
    }

    /// Takes at most `max` queued frames, in order, leaving the rest queued (under the bounds and the
    /// coalescing), for a writer that sends a bounded batch at a time (a CometD connect reply). For
    /// connections without backlogs: it stops at one. Fails when the connection must be closed.
    pub fn drain_up_to(&self, max: usize, out: &mut Vec<Frame>) -> Result<(), DrainError> {
        let mut state = self.lock();
        if state.overflowed {
            return Err(DrainError::Overflowed);
        }
        if state.live > self.limits.soft || state.bytes > self.limits.soft_bytes {
            state.compact();
        }
        let mut taken = 0;
        while taken < max {
            match state.slots.front() {
                Some(Slot::Control(_) | Slot::Notification(..) | Slot::Dropped) => {}
                _ => break,
            }
            let Some(slot) = state.slots.pop_front() else {
                break;
            };
            state.bytes -= slot.bytes();
            match slot {
                Slot::Control(frame) => out.push(frame),
                Slot::Notification(_, frame) => out.push(Frame::Text(frame)),
                _ => continue,
            }
            state.live -= 1;
            taken += 1;
        }
        if state.slots.is_empty() {
            state.live = 0;
            state.bytes = 0;
            state.compact_at = 0;
        }
        Ok(())
    }

    /// A renderer's chunk for the backlog being rendered, and the rest of the backlog unless finished.
    pub(super) fn rendered(&self, frames: Vec<Frame>, rest: Option<Box<dyn Backlog>>) {
        self.put_back(frames, rest);
        self.ready.notify_one();
    }

    /// Rendering the backlog panicked: the connection is closed at the writer's next drain.
    pub(super) fn render_failed(&self) {
        self.lock().failed = true;
        self.ready.notify_one();
    }

    fn put_back(&self, frames: Vec<Frame>, rest: Option<Box<dyn Backlog>>) {
        let mut state = self.lock();
        // Gone when the outbox overflowed meanwhile: the chunk is not wanted any more.
        if let Some(slot) = state
            .slots
            .iter_mut()
            .find(|slot| matches!(slot, Slot::Rendering))
        {
            *slot = Slot::Rendered(frames, rest);
        }
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

/// Why an outbox's connection must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DrainError {
    /// The outbox went past its hard bound: close with 4008 (api.md).
    #[error("slow consumer: resume with since")]
    Overflowed,
    /// Rendering a backlog failed, so what follows it cannot be sent in order: close with 1011.
    #[error("internal error")]
    RenderFailed,
}

/// Takes frames from the front of the queue into `out`: the notifications and control frames before
/// the first backlog, or else that backlog's rendered chunk. Returns the backlog whose next chunk is to
/// be rendered now, its slot left as [`Slot::Rendering`].
fn take_front(state: &mut State, out: &mut Vec<Frame>) -> Option<Box<dyn Backlog>> {
    let mut taken = 0;
    while let Some(slot) = state.slots.front_mut() {
        match slot {
            Slot::Rendering => return None,
            Slot::Backlog(_) | Slot::Rendered(..) if taken > 0 => return None,
            Slot::Backlog(_) => {
                let Slot::Backlog(cursor) = std::mem::replace(slot, Slot::Rendering) else {
                    unreachable!("matched above");
                };
                return Some(cursor);
            }
            Slot::Rendered(..) => {
                let Slot::Rendered(frames, rest) = std::mem::replace(slot, Slot::Rendering) else {
                    unreachable!("matched above");
                };
                out.extend(frames);
                if rest.is_none() {
                    state.slots.pop_front();
                    state.live -= 1;
                }
                return rest;
            }
            Slot::Control(_) | Slot::Notification(..) | Slot::Dropped => {}
        }
        let Some(slot) = state.slots.pop_front() else {
            break;
        };
        state.bytes -= slot.bytes();
        match slot {
            Slot::Control(frame) => out.push(frame),
            Slot::Notification(_, frame) => out.push(Frame::Text(frame)),
            Slot::Dropped => continue,
            Slot::Backlog(_) | Slot::Rendering | Slot::Rendered(..) => {}
        }
        state.live -= 1;
        taken += 1;
    }
    None
}

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
            soft_bytes: usize::MAX,
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
    fn drain_up_to_takes_a_bounded_batch_in_order_and_leaves_the_rest_queued() {
        let outbox = Outbox::new(OutboxLimits {
            soft_bytes: usize::MAX,
            soft: 1_000,
            hard: 2_000,
            hard_bytes: 1 << 20,
        });
        outbox.push_notification(key(1), "a".into());
        outbox.push_control("c".into());
        outbox.push_notification(key(2), "b".into());
        let mut out = Vec::new();
        outbox.drain_up_to(2, &mut out).expect("drain");
        assert_eq!(out, [Frame::Text("a".into()), Frame::Text("c".into())]);
        out.clear();
        outbox.drain_up_to(2, &mut out).expect("drain");
        assert_eq!(out, [Frame::Text("b".into())]);
        out.clear();
        outbox.drain_up_to(2, &mut out).expect("drain");
        assert!(out.is_empty());
    }

    #[test]
    fn past_the_soft_byte_bound_too_only_the_newest_versions_are_kept() {
        let outbox = Outbox::new(OutboxLimits {
            soft_bytes: 7,
            soft: 1_000,
            hard: 2_000,
            hard_bytes: 1 << 20,
        });
        for version in 0..4 {
            outbox.push_notification(key(1), format!("a{version}").into());
            outbox.push_notification(key(2), format!("b{version}").into());
        }
        assert_eq!(
            frames(&outbox),
            ["a3", "b3"],
            "2-byte frames: 8 bytes is over 7"
        );
    }

    #[test]
    fn past_the_soft_bound_only_the_newest_version_of_each_call_is_kept() {
        let outbox = Outbox::new(OutboxLimits {
            soft_bytes: usize::MAX,
            soft: 2,
            hard: 10,
            hard_bytes: 1 << 20,
        });
        for (call, frame) in [(1, "a1"), (2, "b1"), (1, "a2"), (2, "b2"), (1, "a3")] {
            assert_eq!(
                outbox.push_notification(key(call), frame.into()),
                Pushed::Queued
            );
        }
        assert_eq!(frames(&outbox), ["b2", "a3"]);
        // After a drain, positions start again and nothing stale is replaced.
        outbox.push_notification(key(1), "a4".into());
        assert_eq!(frames(&outbox), ["a4"]);
    }

    #[test]
    fn a_lagging_queue_holds_about_two_frames_per_call_and_keeps_control_frames() {
        let outbox = Outbox::new(OutboxLimits {
            soft_bytes: usize::MAX,
            soft: 4,
            hard: 100,
            hard_bytes: 1 << 20,
        });
        outbox.push_control("c1".into());
        for round in 0..50 {
            for call in 0..3 {
                outbox.push_notification(key(call), format!("{call}.{round}").into());
            }
            assert!(outbox.lock().live <= 2 * 4 + 1, "round {round}");
        }
        outbox.push_control("c2".into());
        assert_eq!(frames(&outbox), ["c1", "0.49", "1.49", "2.49", "c2"]);
        assert!(!outbox.overflowed());
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
            soft_bytes: usize::MAX,
            soft: 2,
            hard: 3,
            hard_bytes: 1 << 20,
        });
        for n in 0..4 {
            outbox.push_notification(key(n), "x".into());
        }
        assert!(outbox.overflowed());
        assert_eq!(outbox.push_control("c".into()), Pushed::Refused);
        assert_eq!(outbox.drain(&mut Vec::new()), Err(DrainError::Overflowed));
    }

    #[test]
    fn byte_bound_counts_too() {
        let outbox = Outbox::new(OutboxLimits {
            soft_bytes: usize::MAX,
            soft: 100,
            hard: 100,
            hard_bytes: 5,
        });
        outbox.push_notification(key(1), "abc".into());
        assert!(!outbox.overflowed());
        outbox.push_notification(key(2), "abc".into());
        assert!(outbox.overflowed());
    }

    fn limits(soft: usize, hard: usize, hard_bytes: usize) -> OutboxLimits {
        OutboxLimits {
            soft_bytes: usize::MAX,
            soft,
            hard,
            hard_bytes,
        }
    }

    #[test]
    fn the_hard_bounds_hold_exactly_at_their_values() {
        // `hard` frames are allowed; one more overflows.
        let outbox = Outbox::new(limits(10, 3, 1 << 20));
        for n in 0..3 {
            outbox.push_notification(key(n), "x".into());
        }
        assert!(!outbox.overflowed());
        outbox.push_notification(key(3), "x".into());
        assert!(outbox.overflowed());
        // Bytes: `hard_bytes` are allowed; one more overflows.
        let outbox = Outbox::new(limits(10, 10, 6));
        outbox.push_notification(key(1), "abc".into());
        outbox.push_notification(key(2), "abc".into());
        assert!(!outbox.overflowed());
        outbox.push_notification(key(3), "a".into());
        assert!(outbox.overflowed());
    }

    #[test]
    fn control_frames_count_toward_both_hard_bounds() {
        let outbox = Outbox::new(limits(10, 2, 1 << 20));
        for _ in 0..3 {
            outbox.push_control("c".into());
        }
        assert!(
            outbox.overflowed(),
            "three control frames past a hard bound of two"
        );
        let outbox = Outbox::new(limits(10, 10, 5));
        outbox.push_control("abc".into());
        assert!(!outbox.overflowed());
        outbox.push_pong("abc".into());
        assert!(outbox.overflowed(), "six bytes past a bound of five");
    }

    #[test]
    fn compaction_gives_back_the_bytes_of_the_versions_it_drops() {
        // Three four-byte versions of one call: the third push finds the soft bound reached and drops the
        // first, so eight bytes are queued, under the bound of ten.
        let outbox = Outbox::new(limits(2, 10, 10));
        for frame in ["aaaa", "bbbb", "cccc"] {
            outbox.push_notification(key(1), frame.into());
        }
        assert!(
            !outbox.overflowed(),
            "bytes of dropped versions still counted"
        );
        assert_eq!(frames(&outbox), ["bbbb", "cccc"]);
    }

    #[test]
    fn at_the_soft_bound_the_writer_still_gets_every_version() {
        let outbox = Outbox::new(limits(3, 10, 1 << 20));
        outbox.push_notification(key(1), "a1".into());
        outbox.push_notification(key(1), "a2".into());
        outbox.push_notification(key(2), "b1".into());
        assert_eq!(frames(&outbox), ["a1", "a2", "b1"]);
    }

    #[test]
    fn a_closed_outbox_refuses_notifications() {
        let outbox = Outbox::new(OutboxLimits::default());
        outbox.close();
        assert_eq!(
            outbox.queue_notification(key(1), "a".into()),
            (Pushed::Refused, false)
        );
        assert_eq!(outbox.push_control("c".into()), Pushed::Refused);
    }

    #[test]
    fn a_queue_that_grew_past_the_soft_bound_gives_its_memory_back() {
        let outbox = Outbox::new(limits(4, 1000, 1 << 20));
        for n in 0..100 {
            outbox.push_notification(key(n), "x".into());
        }
        assert_eq!(frames(&outbox).len(), 100);
        assert_eq!(outbox.lock().slots.capacity(), 0);
        // A queue that stayed small keeps its allocation for the next batch.
        outbox.push_notification(key(1), "x".into());
        frames(&outbox);
        assert!(outbox.lock().slots.capacity() > 0);
    }

    /// A backlog of `total` frames named `b0`, `b1`, ..., `per_turn` at a time.
    struct Numbered {
        next: usize,
        total: usize,
        per_turn: usize,
    }

    impl Backlog for Numbered {
        fn next_frames(&mut self, out: &mut Vec<Frame>) -> bool {
            let end = (self.next + self.per_turn).min(self.total);
            for n in self.next..end {
                out.push(Frame::Text(format!("b{n}").into()));
            }
            self.next = end;
            self.next < self.total
        }
    }

    fn numbered(total: usize, per_turn: usize) -> Box<Numbered> {
        Box::new(Numbered {
            next: 0,
            total,
            per_turn,
        })
    }

    /// Every frame, draining as a writer does until nothing comes.
    fn all_frames(outbox: &Outbox) -> Vec<String> {
        let mut all = Vec::new();
        loop {
            let got = frames(outbox);
            if got.is_empty() {
                return all;
            }
            all.extend(got);
        }
    }

    #[test]
    fn a_backlog_is_rendered_in_turns_between_what_came_before_and_after_it() {
        use futures_util::FutureExt;
        let outbox = Outbox::new(limits(100, 1000, 1 << 20));
        outbox.push_control("before".into());
        outbox.push_backlog(numbered(5, 2));
        outbox.push_notification(key(1), "after".into());
        // One turn: what precedes the backlog; the writer is woken again for the rest.
        assert_eq!(frames(&outbox), ["before"]);
        assert!(outbox.ready().now_or_never().is_some());
        assert_eq!(frames(&outbox), ["b0", "b1"]);
        // Pushed while the backlog is still pending: behind it.
        outbox.push_notification(key(2), "later".into());
        assert_eq!(all_frames(&outbox), ["b2", "b3", "b4", "after", "later"]);
        let state = outbox.lock();
        assert_eq!((state.live, state.bytes), (0, 0));
    }

    #[test]
    fn notifications_behind_a_backlog_are_coalesced_and_bounded() {
        let outbox = Outbox::new(limits(4, 8, 1 << 20));
        outbox.push_backlog(numbered(3, 1));
        for round in 0..10 {
            for call in 0..3 {
                outbox.push_notification(key(call), format!("{call}.{round}").into());
            }
        }
        assert!(!outbox.overflowed(), "three calls fit after coalescing");
        assert_eq!(all_frames(&outbox), ["b0", "b1", "b2", "0.9", "1.9", "2.9"]);
        // Distinct calls cannot be coalesced: past the hard bound the outbox overflows.
        outbox.push_backlog(numbered(3, 1));
        for call in 0..8 {
            outbox.push_notification(key(call), "x".into());
        }
        assert!(outbox.overflowed());
    }

    #[test]
    fn a_closed_outbox_refuses_backlogs() {
        let outbox = Outbox::new(OutboxLimits::default());
        outbox.close();
        assert_eq!(outbox.push_backlog(numbered(1, 1)), Pushed::Refused);
    }

    #[test]
    fn a_partial_drain_gives_back_what_it_took_from_both_bounds() {
        // Frames: a control frame ahead of a backlog; the drain takes the control frame only.
        let outbox = Outbox::new(limits(10, 3, 6));
        outbox.push_control("abcd".into());
        outbox.push_backlog(numbered(1, 1));
        assert_eq!(frames(&outbox), ["abcd"]);
        // Left: the backlog (one frame, no bytes). Two more frames and five bytes fit both bounds.
        outbox.push_notification(key(1), "abc".into());
        outbox.push_notification(key(2), "ab".into());
        assert!(!outbox.overflowed(), "what the drain took is still counted");
        assert_eq!(all_frames(&outbox), ["b0", "abc", "ab"]);
    }

    #[test]
    fn a_finished_backlog_gives_back_its_frame() {
        let outbox = Outbox::new(limits(10, 3, 1 << 20));
        outbox.push_backlog(numbered(1, 1));
        outbox.push_notification(key(1), "a".into());
        assert_eq!(frames(&outbox), ["b0"]);
        // Left: one notification. Two more fit the bound of three frames.
        outbox.push_notification(key(2), "b".into());
        outbox.push_notification(key(3), "c".into());
        assert!(
            !outbox.overflowed(),
            "the finished backlog is still counted"
        );
        assert_eq!(all_frames(&outbox), ["a", "b", "c"]);
    }
}
