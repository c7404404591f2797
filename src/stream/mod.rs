//! The stream: the one ordered source of everything the gateway publishes. It assigns `seq` within the
//! run's `epoch`, holds the resume history and the store of current documents, and delivers each
//! notification to the outboxes of its subscribers.
//!
//! One lock orders everything that must be atomic with the stream position: publishing a batch (seq,
//! store, history, delivery) and registering a subscription with the view its snapshot or resume starts
//! from. Nothing under it costs in proportion to the number of calls or clients: a subscription takes
//! constant-time copies of the store or the history and its backlog is rendered later, by the
//! connection's writer ([`backlog`]); delivery costs in proportion to the recipients. A subscriber
//! therefore gets the state as of position `seq` and then exactly the notifications after it, never a
//! gap or a repeat. Each notification is serialized once into a frame whose bytes every recipient shares.

pub mod backlog;
pub mod history;
pub mod packer;

use crate::delivery::{Outbox, OutboxLimits, Pushed, Renderer};
use crate::json::{Decimal, write_json_str};
use crate::store::packing::Kept;
use crate::store::{CallKey, Meta, StoreView, StoredCall, StoredDevice, StoredQueue};
use crate::subscriptions::{
    CallFilter, ConnectionId, Matcher, Scope, SubscribeError, Subscriptions,
};
pub use backlog::PlainDevice;
use backlog::{ResumeBacklog, SnapshotBacklog};
use history::{History, HistoryEntry};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One notification ready to publish, as a reducer shard produced it.
#[derive(Debug)]
pub struct Published {
    /// The call or device it is about.
    pub meta: Meta,
    /// The notification's members (`"channel":...,"data":{...}`), serialized once by the reducer.
    pub members: String,
    /// Where the resource document (the call or the device) lies within `members`.
    pub call: Range<usize>,
    /// When its event was read from the ingest socket.
    pub ingested: Instant,
}

impl Published {
    /// Whether its text is written: a recovery's replay leaves most of its notifications unwritten (empty
    /// `members`), writing only those anyone will read (see `Pipeline::replay`).
    pub fn is_written(&self) -> bool {
        !self.members.is_empty()
    }
}

/// Where a client wants to resume from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Since {
    /// The gateway run the position belongs to.
    pub epoch: String,
    /// The last seq the client saw.
    pub seq: u64,
}

struct Core {
    seq: u64,
    history: History,
    store: StoreView,
    subscriptions: Subscriptions,
    /// Outboxes that became non-empty during the batch being published: woken once it is all queued.
    to_wake: Vec<Arc<Outbox>>,
    /// While a recovery replays the journal (or JetStream), before anyone can look.
    deferred: Option<Deferred>,
}

/// Notifications published during a recovery, before any client or request can see the stream: only
/// what will be looked at afterwards is rendered, at the end ([`Stream::settle`]): the newest version of
/// each resource for the store, and the last `--history` notifications for resuming. A replay of a
/// million events would otherwise render and index a million frames to keep a tenth of them.
#[derive(Default)]
struct Deferred {
    /// The newest notification of each call and device, and its seq. Keys are numbers this process
    /// gave out, not input: a fixed fast hash (SipHash was a tenth of the deferred publishing).
    latest: std::collections::HashMap<CallKey, (u64, Arc<Published>), foldhash::fast::FixedState>,
    /// The last notifications (at most the history's capacity), oldest first.
    recent: std::collections::VecDeque<(u64, Arc<Published>)>,
}

/// Counters the stream keeps for /metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct StreamStats {
    /// Connections registered.
    pub connections: usize,
    /// Subscriptions held.
    pub subscriptions: usize,
    /// Last seq assigned.
    pub seq: u64,
    /// Calls held (live and lingering).
    pub calls: usize,
    /// Calls held that are not Released.
    pub live_calls: usize,
}

/// `f` of each of `items`, in order, worked out on every core: a recovery's settle renders a frame for
/// each of 100,000s of resources while nothing else runs.
fn map_on_all_cores<T: Send, U: Send>(items: Vec<T>, f: impl Fn(T) -> U + Sync) -> Vec<U> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    if cores < 2 || items.len() < 4096 {
        return items.into_iter().map(f).collect();
    }
    let per_core = items.len().div_ceil(cores);
    let mut items = items.into_iter();
    let chunks: Vec<Vec<T>> = std::iter::from_fn(|| {
        let chunk: Vec<T> = items.by_ref().take(per_core).collect();
        (!chunk.is_empty()).then_some(chunk)
    })
    .collect();
    let f = &f;
    std::thread::scope(|scope| {
        let workers: Vec<_> = chunks
            .into_iter()
            .map(|chunk| scope.spawn(move || chunk.into_iter().map(f).collect::<Vec<U>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// The stream of one gateway run.
pub struct Stream {
    epoch: Arc<str>,
    limits: OutboxLimits,
    /// Where the outboxes' backlogs are rendered; without one, each writer renders its own.
    renderer: Option<Renderer>,
    core: Mutex<Core>,
}

/// A resource rendered for the store by [`Stream::settle`].
enum Settled {
    Call(StoredCall),
    Device(StoredDevice),
    Queue(StoredQueue),
}

/// Records a published resource's newest version in the store.
fn store(store: &mut StoreView, meta: &Meta, seq: u64, frame: bytes::Bytes, call: Range<usize>) {
    match meta {
        Meta::Call(meta) => store.upsert(StoredCall::new(Arc::clone(meta), seq, frame, call)),
        Meta::Device(meta) => {
            store.upsert_device(StoredDevice::new(Arc::clone(meta), seq, frame, call));
        }
        Meta::Queue(meta) => {
            store.upsert_queue(StoredQueue::new(Arc::clone(meta), seq, frame, call));
        }
    }
}

impl Stream {
    /// A stream for the run named `epoch`, keeping `history` notifications for resuming.
    pub fn new(epoch: &str, history: usize, limits: OutboxLimits) -> Self {
        Self {
            epoch: epoch.into(),
            limits,
            renderer: None,
            core: Mutex::new(Core {
                seq: 0,
                history: History::new(history),
                store: StoreView::default(),
                subscriptions: Subscriptions::default(),
                to_wake: Vec::new(),
                deferred: None,
            }),
        }
    }

    /// This stream, its connections' backlogs rendered by `renderer`.
    #[must_use]
    pub fn rendering_on(mut self, renderer: Renderer) -> Self {
        self.renderer = Some(renderer);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Core> {
        // Every update under the lock is completed before anything can panic; the data stays usable.
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The run's epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The notification frame: `{"type":"notification","epoch":...,"seq":N,` + the members + `}`, written
    /// once into the frame heap; and where in it the call document lies.
    fn frame(&self, seq: u64, published: &Published) -> (bytes::Bytes, Range<usize>) {
        let seq = Decimal::new(seq);
        let mut head = String::with_capacity(64 + self.epoch.len());
        head.push_str("{\"type\":\"notification\",\"epoch\":");
        write_json_str(&mut head, &self.epoch);
        head.push_str(",\"seq\":");
        head.push_str(seq.as_str());
        head.push(',');
        let call = head.len() + published.call.start..head.len() + published.call.end;
        let frame = crate::store::frame_heap::frame_from(&[
            head.as_bytes(),
            published.members.as_bytes(),
            b"}",
        ]);
        (frame, call)
    }

    /// From now until [`Stream::settle`], publishes without rendering (a recovery's replay, before the
    /// doors serve): see [`Deferred`].
    pub fn defer(&self) {
        self.lock().deferred = Some(Deferred::default());
    }

    /// Whether publishing is deferred ([`Stream::defer`]).
    pub fn is_deferred(&self) -> bool {
        self.lock().deferred.is_some()
    }

    /// How many notifications the resume history holds at most (`--history`).
    pub fn history_capacity(&self) -> usize {
        self.lock().history.capacity()
    }

    /// While deferred: the resources whose newest notification is unwritten and that the store will
    /// keep (a device back in its default state leaves the store: it needs no text).
    pub fn unwritten_newest(&self) -> Vec<CallKey> {
        let core = self.lock();
        let Some(deferred) = &core.deferred else {
            return Vec::new();
        };
        deferred
            .latest
            .iter()
            .filter(|(_, (_, published))| {
                !published.is_written()
                    && !matches!(&published.meta, Meta::Device(device) if !device.kept)
            })
            .map(|(key, _)| *key)
            .collect()
    }

    /// While deferred: gives the newest notifications named by [`Stream::unwritten_newest`] their text,
    /// written from their resources' current state (same `seq`).
    pub fn fill_newest(&self, written: Vec<crate::pipeline::Written>) {
        let mut core = self.lock();
        let Some(deferred) = &mut core.deferred else {
            return;
        };
        for (key, members, call) in written {
            if let Some((_, published)) = deferred.latest.get_mut(&key) {
                *published = Arc::new(Published {
                    meta: published.meta.clone(),
                    members,
                    call,
                    ingested: published.ingested,
                });
            }
        }
    }

    /// Ends [`Stream::defer`]: renders the store's documents and the resume history as publishing them
    /// one by one would have left them. Called once nothing publishes (the replay is over): the work,
    /// proportional to the resources held, is done outside the lock, on every core.
    pub fn settle(&self) {
        let (deferred, mut built) = {
            let mut core = self.lock();
            // Still deferred meanwhile: anything published after all goes in after the settled part.
            let Some(deferred) = core.deferred.replace(Deferred::default()) else {
                return;
            };
            (deferred, std::mem::take(&mut core.store))
        };
        // Unwritten: a device back in its default state (it leaves the store), or a resource its shard no
        // longer held when asked (none is expected: counted, so it shows).
        let (latest, unwritten): (Vec<(u64, Arc<Published>)>, Vec<_>) = deferred
            .latest
            .into_values()
            .partition(|(_, published)| published.is_written());
        let lost = unwritten
            .iter()
            .filter(
                |(_, published)| !matches!(&published.meta, Meta::Device(device) if !device.kept),
            )
            .count();
        if lost > 0 {
            tracing::warn!(
                lost,
                "recovery: resources without their newest notification's text"
            );
        }
        let rendered = map_on_all_cores(latest, |(seq, published)| {
            let (frame, range) = self.frame(seq, &published);
            match &published.meta {
                Meta::Call(meta) => {
                    Settled::Call(StoredCall::new(Arc::clone(meta), seq, frame, range))
                }
                Meta::Device(meta) => {
                    Settled::Device(StoredDevice::new(Arc::clone(meta), seq, frame, range))
                }
                Meta::Queue(meta) => {
                    Settled::Queue(StoredQueue::new(Arc::clone(meta), seq, frame, range))
                }
            }
        });
        let mut calls = Vec::with_capacity(rendered.len());
        for settled in rendered {
            match settled {
                Settled::Call(call) => calls.push(call),
                Settled::Device(device) => built.upsert_device(device),
                Settled::Queue(queue) => built.upsert_queue(queue),
            }
        }
        built.insert_all(calls);
        let recent: Vec<(u64, Arc<Published>)> = deferred.recent.into();
        let history = map_on_all_cores(recent, |(seq, published)| {
            let (frame, _) = self.frame(seq, &published);
            HistoryEntry {
                seq,
                meta: published.meta.clone(),
                frame: Kept::Plain(frame),
            }
        });
        let mut guard = self.lock();
        let core = &mut *guard;
        core.store = built;
        for entry in history {
            core.history.push(entry);
        }
        let Some(late) = core.deferred.take() else {
            return;
        };
        let mut late: Vec<(u64, Arc<Published>)> =
            late.latest.into_values().chain(late.recent).collect();
        late.sort_unstable_by_key(|(seq, _)| *seq);
        late.dedup_by_key(|(seq, _)| *seq);
        for (seq, published) in late {
            let (frame, call) = self.frame(seq, &published);
            store(&mut core.store, &published.meta, seq, frame.clone(), call);
            core.history.push(HistoryEntry {
                seq,
                meta: published.meta.clone(),
                frame: Kept::Plain(frame),
            });
        }
    }

    /// Publishes notifications in order: assigns seq, updates the store and history, delivers. Returns
    /// the last `seq` assigned (the batch's are the ones before it, in order).
    pub fn publish(&self, batch: Vec<Published>) -> u64 {
        if batch.is_empty() {
            return self.lock().seq;
        }
        let mut guard = self.lock();
        let core = &mut *guard;
        if let Some(deferred) = &mut core.deferred {
            metrics::counter!("callgate_notifications_total").increment(batch.len() as u64);
            let capacity = core.history.capacity();
            for published in batch {
                core.seq += 1;
                let published = Arc::new(published);
                deferred
                    .latest
                    .insert(published.meta.key(), (core.seq, Arc::clone(&published)));
                // An unwritten notification cannot be resumed from: the history keeps the last written
                // ones. They are the last of all (a replay writes its tail), unless the tail made fewer
                // than the history holds, and then resuming from before them gets a snapshot.
                if capacity > 0 && published.is_written() {
                    if deferred.recent.len() >= capacity {
                        deferred.recent.pop_front();
                    }
                    deferred.recent.push_back((core.seq, published));
                }
            }
            return core.seq;
        }
        for published in batch {
            core.seq += 1;
            let seq = core.seq;
            let (frame, call) = self.frame(seq, &published);
            store(&mut core.store, &published.meta, seq, frame.clone(), call);
            let key = published.meta.key();
            let mut delivered = 0u64;
            let to_wake = &mut core.to_wake;
            core.subscriptions.recipients(&published.meta, |outbox| {
                let (pushed, wake) = outbox.queue_notification(key, frame.clone());
                if wake {
                    to_wake.push(Arc::clone(outbox));
                }
                if pushed == Pushed::Queued {
                    delivered += 1;
                }
            });
            metrics::counter!("callgate_notifications_total").increment(1);
            metrics::counter!("callgate_deliveries_total").increment(delivered);
            metrics::histogram!("callgate_ingest_to_publish_seconds")
                .record(published.ingested.elapsed().as_secs_f64());
            core.history.push(HistoryEntry {
                seq,
                meta: published.meta,
                frame: Kept::Plain(frame),
            });
        }
        // Woken after the lock is released, so a writer on the other core does not wait for it.
        let mut to_wake = std::mem::take(&mut core.to_wake);
        let last = core.seq;
        drop(guard);
        for outbox in to_wake.drain(..) {
            outbox.wake();
        }
        self.lock().to_wake = to_wake;
        last
    }

    /// Forgets calls whose linger time is over.
    pub fn forget(&self, keys: &[CallKey]) {
        let mut core = self.lock();
        for key in keys {
            if let Some(deferred) = &mut core.deferred {
                deferred.latest.remove(key);
            }
            core.store.remove(*key);
        }
    }

    /// Gives the subscriptions of `connection` the scope `scope` from the next notification on (the
    /// access file was reloaded). Work is bounded by the connection's subscriptions.
    pub fn rescope(&self, connection: ConnectionId, scope: &Scope) {
        self.lock().subscriptions.rescope(connection, scope);
    }

    /// Registers a new connection; returns its id and outbox.
    pub fn connect(&self) -> (ConnectionId, Arc<Outbox>) {
        let outbox = match &self.renderer {
            Some(renderer) => Outbox::rendered_by(self.limits, renderer.clone()),
            None => Arc::new(Outbox::new(self.limits)),
        };
        let id = self.lock().subscriptions.connect(Arc::clone(&outbox));
        (id, outbox)
    }

    /// Unregisters a connection and its subscriptions, and closes its outbox.
    pub fn disconnect(&self, connection: ConnectionId) {
        let outbox = self.lock().subscriptions.disconnect(connection);
        if let Some(outbox) = outbox {
            outbox.close();
        }
    }

    /// Subscribes to calls: queues the `subscribed` message with the snapshot (in chunks), or
    /// `resumed:true` and the missed notifications, atomically with the stream position. `scope` limits
    /// what it can see.
    pub fn subscribe(
        &self,
        connection: ConnectionId,
        sub: &str,
        filter: CallFilter,
        scope: Scope,
        since: Option<Since>,
    ) -> Result<(), SubscribeError> {
        self.subscribe_to(connection, sub, Matcher::new(filter, scope), since)
    }

    /// Subscribes with `matcher` (its topics, filter and scope), as [`Stream::subscribe`] does.
    pub fn subscribe_to(
        &self,
        connection: ConnectionId,
        sub: &str,
        matcher: Matcher,
        since: Option<Since>,
    ) -> Result<(), SubscribeError> {
        self.subscribe_with_defaults(connection, sub, matcher, since, Vec::new())
    }

    /// [`Stream::subscribe_to`], a snapshot listing `defaults` (devices in their default state that the
    /// subscriber may know of, rendered by its door) before the stored devices.
    pub fn subscribe_with_defaults(
        &self,
        connection: ConnectionId,
        sub: &str,
        matcher: Matcher,
        since: Option<Since>,
        defaults: Vec<PlainDevice>,
    ) -> Result<(), SubscribeError> {
        let matcher = Arc::new(matcher);
        let mut core = self.lock();
        let Some(outbox) = core
            .subscriptions
            .subscribe(connection, sub, Arc::clone(&matcher))?
        else {
            return Ok(());
        };
        let mut head = String::with_capacity(128);
        head.push_str("{\"type\":\"subscribed\",\"sub\":");
        write_json_str(&mut head, sub);
        head.push_str(",\"epoch\":");
        write_json_str(&mut head, &self.epoch);
        head.push_str(",\"seq\":");
        head.push_str(Decimal::new(core.seq).as_str());
        let missed = since
            .filter(|since| *since.epoch == *self.epoch)
            .and_then(|since| core.history.after(since.seq, core.seq));
        match missed {
            Some(missed) => {
                head.push_str(",\"resumed\":true}");
                outbox.push_control(head.into());
                if !missed.is_empty() {
                    outbox.push_backlog(Box::new(ResumeBacklog::new(missed, matcher)));
                }
                metrics::counter!("callgate_resumes_total").increment(1);
            }
            None => {
                head.push_str(",\"resumed\":false");
                let view = core.store.clone();
                outbox.push_backlog(Box::new(SnapshotBacklog::new(
                    head, sub, view, matcher, defaults,
                )));
                metrics::counter!("callgate_snapshots_total").increment(1);
            }
        }
        Ok(())
    }

    /// Subscribes with `matcher` from the next notification on, with no snapshot and no `subscribed`
    /// message: a CometD channel subscription is live only (clients read the state over REST).
    pub fn subscribe_live(
        &self,
        connection: ConnectionId,
        sub: &str,
        matcher: Matcher,
    ) -> Result<(), SubscribeError> {
        self.lock()
            .subscriptions
            .subscribe(connection, sub, Arc::new(matcher))
            .map(|_| ())
    }

    /// Connects an outbox of the caller's own limits (a CometD session's); see [`Stream::connect`].
    pub fn connect_with(&self, limits: OutboxLimits) -> (ConnectionId, Arc<Outbox>) {
        let outbox = Arc::new(Outbox::new(limits));
        let id = self.lock().subscriptions.connect(Arc::clone(&outbox));
        (id, outbox)
    }

    /// Removes a subscription.
    pub fn unsubscribe(&self, connection: ConnectionId, sub: &str) -> Result<(), SubscribeError> {
        self.lock().subscriptions.unsubscribe(connection, sub)
    }

    /// The calls as of now: a constant-time copy that REST reads without holding the lock.
    pub fn view(&self) -> StoreView {
        self.lock().store.clone()
    }

    /// Connection, subscription, position and call counts.
    pub fn stats(&self) -> StreamStats {
        let core = self.lock();
        StreamStats {
            connections: core.subscriptions.connections(),
            subscriptions: core.subscriptions.subscriptions(),
            seq: core.seq,
            calls: core.store.len(),
            live_calls: core.store.live(),
        }
    }
}

#[cfg(test)]
mod scope_props;

#[cfg(test)]
mod tests {
    //! The resume window and delivery through the public API (api.md): `subscribed` with the snapshot as of
    //! its `seq`, or `resumed:true` and exactly the missed matching notifications when every notification
    //! after `since` is still held.

    use super::*;
    use crate::delivery::Frame;
    use crate::event::ConnId;
    use crate::reduce::CallState;
    use crate::store::CallMeta;
    use serde_json::{Value, json};

    const EPOCH: &str = "run-1";

    /// One call of the scenario: dn, call id, ConnID. Device ids are `dev-{dn}`, so that no value of one
    /// member is the value of another.
    #[derive(Clone, Copy)]
    struct Call {
        number: u64,
        dn: &'static str,
        id: &'static str,
        conn: u64,
    }

    const A: Call = Call {
        number: 1,
        dn: "7001",
        id: "call-A",
        conn: 0xa1,
    };
    const B: Call = Call {
        number: 2,
        dn: "7002",
        id: "call-B",
        conn: 0xb2,
    };
    const C: Call = Call {
        number: 3,
        dn: "7001",
        id: "call-C",
        conn: 0xc3,
    };
    const D: Call = Call {
        number: 4,
        dn: "7002",
        id: "call-D",
        conn: 0xd4,
    };

    /// The scenario's notifications, seq 1 to 7. With a history of 3, seqs 5, 6 and 7 are held. At the end
    /// A and C are Established and D Dialing; B is Released (lingering, not live).
    const EVENTS: [(Call, CallState); 7] = [
        (A, CallState::Ringing),     // 1
        (B, CallState::Ringing),     // 2
        (A, CallState::Established), // 3
        (C, CallState::Ringing),     // 4
        (B, CallState::Released),    // 5
        (D, CallState::Dialing),     // 6
        (C, CallState::Established), // 7
    ];

    fn meta(call: Call, state: CallState) -> Arc<CallMeta> {
        Arc::new(CallMeta {
            key: CallKey {
                shard: 0,
                number: call.number,
            },
            dn: call.dn.into(),
            device_id: format!("dev-{}", call.dn).into(),
            call_id: call.id.into(),
            conn_id: ConnId(call.conn),
            state,
        })
    }

    /// The call document of a version, tagged with the seq it is published at so versions differ.
    fn document(call: Call, state: CallState, seq: u64) -> Value {
        json!({
            "id": call.id,
            "state": state.as_str(),
            "connId": ConnId(call.conn).to_string(),
            "version": seq,
        })
    }

    fn data(call: Call, state: CallState, seq: u64) -> Value {
        json!({
            "notificationType": "StatusChange",
            "call": document(call, state, seq),
            "phoneNumber": call.dn,
            "messageType": "CallStateChangeMessage",
        })
    }

    fn published(call: Call, state: CallState, seq: u64) -> Published {
        let document = document(call, state, seq).to_string();
        let head = r#""channel":"/v2/me/calls","data":{"notificationType":"StatusChange","call":"#;
        let members = format!(
            r#"{head}{document},"phoneNumber":"{}","messageType":"CallStateChangeMessage"}}"#,
            call.dn
        );
        Published {
            meta: Meta::Call(meta(call, state)),
            call: head.len()..head.len() + document.len(),
            members,
            ingested: Instant::now(),
        }
    }

    /// The store's calls (key, seq, document) of a stream, and its history's (seq, frame).
    type Contents = (Vec<(CallKey, u64, String)>, Vec<(u64, String)>);

    fn contents(stream: &Stream) -> Contents {
        let view = stream.view();
        let calls = view
            .iter_after(None)
            .map(|call| {
                let json = call.json().expect("document");
                (
                    call.meta.key,
                    call.seq,
                    String::from_utf8_lossy(&json).into_owned(),
                )
            })
            .collect();
        let history = stream
            .lock()
            .history
            .iter()
            .map(|entry| match &entry.frame {
                Kept::Plain(frame) => (entry.seq, String::from_utf8_lossy(frame).into_owned()),
                Kept::Packed { .. } => panic!("nothing packs here"),
            })
            .collect();
        (calls, history)
    }

    #[test]
    fn a_deferred_replay_leaves_the_store_and_history_of_publishing_one_by_one() {
        let live = Stream::new(EPOCH, 3, OutboxLimits::default());
        let replayed = Stream::new(EPOCH, 3, OutboxLimits::default());
        replayed.defer();
        for stream in [&live, &replayed] {
            for (seq, (call, state)) in EVENTS.iter().enumerate() {
                stream.publish(vec![published(*call, *state, seq as u64 + 1)]);
                if seq == 5 {
                    // B's linger is over.
                    stream.forget(&[CallKey {
                        shard: 0,
                        number: B.number,
                    }]);
                }
            }
        }
        replayed.settle();
        let (calls, history) = contents(&live);
        assert_eq!(calls.len(), 3, "A, C, D; B forgotten");
        assert_eq!(history.len(), 3);
        assert_eq!(contents(&replayed), (calls, history));
        assert_eq!(replayed.stats().seq, 7);
        assert_eq!(replayed.stats().live_calls, live.stats().live_calls);
    }

    /// Version `version` of call `number` (DN, device and id derived from it), as a shard publishes it.
    fn numbered_version(number: u64, state: CallState, version: u64) -> Published {
        let id = format!("call-{number}");
        let document = json!({"id": id, "state": state.as_str(), "version": version}).to_string();
        let head = r#""channel":"/v2/me/calls","data":{"notificationType":"StatusChange","call":"#;
        Published {
            meta: Meta::Call(Arc::new(CallMeta {
                key: CallKey {
                    shard: (number % 3) as u16,
                    number,
                },
                dn: format!("7{}", number % 41).into(),
                device_id: format!("dev-7{}", number % 41).into(),
                call_id: id.into(),
                conn_id: ConnId(number),
                state,
            })),
            call: head.len()..head.len() + document.len(),
            members: format!("{head}{document}}}"),
            ingested: Instant::now(),
        }
    }

    #[test]
    fn a_deferred_replay_of_thousands_of_calls_settles_as_publishing_one_by_one() {
        // Enough calls for the settle's work on every core and the store's build at once.
        let live = Stream::new(EPOCH, 5_000, OutboxLimits::default());
        let replayed = Stream::new(EPOCH, 5_000, OutboxLimits::default());
        replayed.defer();
        for stream in [&live, &replayed] {
            for version in 0..3u64 {
                let batch = (0..6_000u64)
                    .filter(|number| version < 2 || number % 2 == 0)
                    .map(|number| {
                        let state = if version == 2 {
                            CallState::Released
                        } else {
                            CallState::Established
                        };
                        numbered_version(number, state, version)
                    })
                    .collect();
                stream.publish(batch);
            }
            let forgotten: Vec<CallKey> = (0..6_000u64)
                .filter(|number| number % 10 == 0)
                .map(|number| CallKey {
                    shard: (number % 3) as u16,
                    number,
                })
                .collect();
            stream.forget(&forgotten);
        }
        replayed.settle();
        let (calls, history) = contents(&live);
        assert_eq!(calls.len(), 5_400);
        assert_eq!(history.len(), 5_000);
        assert_eq!(contents(&replayed), (calls, history));
        assert_eq!(replayed.stats().seq, live.stats().seq);
        assert_eq!(replayed.stats().live_calls, live.stats().live_calls);
        let dns: Vec<Arc<str>> = vec!["77".into()];
        let lookup = crate::store::Lookup::Dns(&dns);
        assert_eq!(replayed.view().keys(lookup), live.view().keys(lookup));
    }

    #[test]
    fn a_frame_carries_its_seq_and_document_at_any_length() {
        // The envelope once outgrew a fixed allowance at six-digit seqs; it is now measured, then written
        // once into an allocation of exactly its length.
        let stream = Stream::new("18ecbdc26987cb1d-7450", 10, OutboxLimits::default());
        for seq in [1, 999_999, 123_456_789_012, u64::MAX] {
            let (frame, call) = stream.frame(seq, &published(A, CallState::Established, 1));
            let parsed: Value = serde_json::from_slice(&frame).unwrap();
            assert_eq!(parsed["seq"], seq);
            assert_eq!(
                serde_json::from_slice::<Value>(&frame[call]).unwrap(),
                document(A, CallState::Established, 1)
            );
        }
    }

    /// The notification frame every recipient of `seq` must get.
    fn notification(seq: u64) -> Value {
        let (call, state) = EVENTS[seq as usize - 1];
        json!({
            "type": "notification",
            "epoch": EPOCH,
            "seq": seq,
            "channel": "/v2/me/calls",
            "data": data(call, state, seq),
        })
    }

    /// A stream holding `history` notifications, with the first `published` of [`EVENTS`] published (the
    /// first two in one batch, the rest one by one).
    fn scenario(history: usize, published_count: usize) -> Stream {
        let stream = Stream::new(EPOCH, history, OutboxLimits::default());
        let mut batch = Vec::new();
        for seq in 1..=published_count as u64 {
            publish_seq(&stream, seq, &mut batch);
        }
        stream.publish(batch);
        stream
    }

    fn publish_seq(stream: &Stream, seq: u64, batch: &mut Vec<Published>) {
        let (call, state) = EVENTS[seq as usize - 1];
        batch.push(published(call, state, seq));
        if seq >= 2 {
            stream.publish(std::mem::take(batch));
        }
    }

    /// Every frame queued, parsed.
    /// Every frame the outbox holds, backlogs rendered, as a writer would take them.
    fn take(outbox: &Outbox) -> Vec<Value> {
        let mut frames = Vec::new();
        loop {
            let before = frames.len();
            outbox.drain(&mut frames).expect("not overflowed");
            if frames.len() == before {
                break;
            }
        }
        frames
            .into_iter()
            .map(|frame| match frame {
                Frame::Text(bytes) => serde_json::from_slice(&bytes).expect("JSON frame"),
                Frame::Pong(_) => panic!("unexpected pong"),
            })
            .collect()
    }

    fn since(seq: u64) -> Option<Since> {
        Some(Since {
            epoch: EPOCH.into(),
            seq,
        })
    }

    fn filter(query: &str) -> CallFilter {
        CallFilter::from_query(query).expect("valid filter")
    }

    /// Connects, subscribes as `s`, and returns the outbox and everything it holds.
    fn subscribe(
        stream: &Stream,
        filter: CallFilter,
        since: Option<Since>,
    ) -> (u64, Arc<Outbox>, Vec<Value>) {
        let (connection, outbox) = stream.connect();
        stream
            .subscribe(connection, "s", filter, Scope::All, since)
            .expect("subscribed");
        let frames = take(&outbox);
        (connection, outbox, frames)
    }

    fn resumed(seq: u64) -> Value {
        json!({"type": "subscribed", "sub": "s", "epoch": EPOCH, "seq": seq, "resumed": true})
    }

    /// The snapshot reply as of `seq` holding the current versions of `calls` (by their last seq).
    fn snapshot(frame: &Value, seq: u64, last_seqs: &[u64]) {
        let mut frame = frame.clone();
        let mut calls = frame["calls"].take();
        let calls = calls.as_array_mut().expect("calls");
        calls.sort_by_key(|call| call["id"].as_str().map(str::to_owned));
        assert_eq!(
            frame,
            json!({"type": "subscribed", "sub": "s", "epoch": EPOCH, "seq": seq, "resumed": false, "calls": null, "more": false}),
        );
        let mut want: Vec<Value> = last_seqs
            .iter()
            .map(|&seq| {
                let (call, state) = EVENTS[seq as usize - 1];
                document(call, state, seq)
            })
            .collect();
        want.sort_by_key(|call| call["id"].as_str().map(str::to_owned));
        assert_eq!(*calls, want, "snapshot as of {seq}");
    }

    fn notifications(seqs: &[u64]) -> Vec<Value> {
        seqs.iter().map(|&seq| notification(seq)).collect()
    }

    #[test]
    fn one_before_the_oldest_held_resumes_with_exactly_the_held_ones() {
        let stream = scenario(3, 7);
        // Held: 5, 6, 7. Everything after 4 is held.
        let (_, _, frames) = subscribe(&stream, CallFilter::default(), since(4));
        let mut want = vec![resumed(7)];
        want.extend(notifications(&[5, 6, 7]));
        assert_eq!(frames, want);
    }

    #[test]
    fn two_before_the_oldest_held_gets_a_snapshot_of_the_live_calls() {
        let stream = scenario(3, 7);
        // Notification 4 is no longer held: resuming after 3 would miss it.
        for since_seq in [3, 2, 0] {
            let (_, _, frames) = subscribe(&stream, CallFilter::default(), since(since_seq));
            assert_eq!(frames.len(), 1, "since {since_seq}: {frames:?}");
            // A (3), D (6), C (7) are live; B was Released.
            snapshot(&frames[0], 7, &[3, 6, 7]);
        }
    }

    #[test]
    fn at_the_newest_resumes_with_nothing_missed_and_gets_what_follows() {
        let stream = scenario(3, 6);
        let (_, outbox, frames) = subscribe(&stream, CallFilter::default(), since(6));
        assert_eq!(frames, [resumed(6)]);
        stream.publish(vec![published(C, CallState::Established, 7)]);
        assert_eq!(take(&outbox), notifications(&[7]));
    }

    #[test]
    fn past_the_newest_gets_a_snapshot() {
        let stream = scenario(3, 7);
        for since_seq in [8, 9, u64::MAX] {
            let (_, _, frames) = subscribe(&stream, CallFilter::default(), since(since_seq));
            assert_eq!(frames.len(), 1, "since {since_seq}: {frames:?}");
            snapshot(&frames[0], 7, &[3, 6, 7]);
        }
    }

    #[test]
    fn another_epoch_gets_a_snapshot() {
        let stream = scenario(3, 7);
        for epoch in ["run-0", "", "RUN-1", "run-1 "] {
            let (_, _, frames) = subscribe(
                &stream,
                CallFilter::default(),
                Some(Since {
                    epoch: epoch.into(),
                    seq: 6,
                }),
            );
            assert_eq!(frames.len(), 1, "epoch {epoch:?}: {frames:?}");
            snapshot(&frames[0], 7, &[3, 6, 7]);
        }
    }

    #[test]
    fn every_position_inside_the_window_resumes_with_what_follows_it() {
        let stream = scenario(3, 7);
        for since_seq in 4..=7 {
            let (_, _, frames) = subscribe(&stream, CallFilter::default(), since(since_seq));
            let mut want = vec![resumed(7)];
            want.extend(notifications(&(since_seq + 1..=7).collect::<Vec<_>>()));
            assert_eq!(frames, want, "since {since_seq}");
        }
    }

    #[test]
    fn a_history_not_yet_full_resumes_from_the_start() {
        let stream = scenario(3, 2);
        let (_, _, frames) = subscribe(&stream, CallFilter::default(), since(0));
        let mut want = vec![resumed(2)];
        want.extend(notifications(&[1, 2]));
        assert_eq!(frames, want);
        // Before anything is published, position 0 is the newest.
        let empty = scenario(3, 0);
        let (_, outbox, frames) = subscribe(&empty, CallFilter::default(), since(0));
        assert_eq!(frames, [resumed(0)]);
        empty.publish(vec![published(A, CallState::Ringing, 1)]);
        assert_eq!(take(&outbox), notifications(&[1]));
        let (_, _, frames) = subscribe(&empty, CallFilter::default(), since(1));
        assert_eq!(frames, [resumed(1)]);
        let (_, _, frames) = subscribe(&empty, CallFilter::default(), since(2));
        assert_eq!(frames.len(), 1);
        snapshot(&frames[0], 1, &[1]);
    }

    #[test]
    fn with_no_history_only_the_newest_position_resumes() {
        let stream = scenario(0, 7);
        let (_, outbox, frames) = subscribe(&stream, CallFilter::default(), since(7));
        assert_eq!(frames, [resumed(7)]);
        for since_seq in [6, 0, 8] {
            let (_, _, frames) = subscribe(&stream, CallFilter::default(), since(since_seq));
            assert_eq!(frames.len(), 1, "since {since_seq}: {frames:?}");
            snapshot(&frames[0], 7, &[3, 6, 7]);
        }
        // The resumed subscription gets what follows, live.
        stream.publish(vec![published(A, CallState::Held, 8)]);
        let frames = take(&outbox);
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0]["seq"], 8);
        assert_eq!(frames[0]["data"]["call"]["state"], "Held");
    }

    #[test]
    fn a_filtered_resume_gets_exactly_the_missed_matching_notifications_in_order() {
        let stream = scenario(3, 7);
        // Held: 5 (B Released, 7002), 6 (D Dialing, 7002), 7 (C Established, 7001).
        for (query, since_seq, want) in [
            ("", 4, &[5, 6, 7][..]),
            ("dn=7001", 4, &[7]),
            ("dn=7002", 4, &[5, 6]),
            ("dn=7002", 5, &[6]),
            ("dn=7003", 4, &[]),
            ("deviceId=dev-7002", 4, &[5, 6]),
            ("deviceId=dev-7001", 4, &[7]),
            ("deviceId=7002", 4, &[]),
            ("callId=call-B", 4, &[5]),
            ("callId=call-B&callId=call-C", 4, &[5, 7]),
            ("callId=call-A", 4, &[]),
            ("connId=D4", 4, &[6]),
            ("connId=00000000000000c3", 4, &[7]),
            ("state=Released", 4, &[5]),
            ("state=Established", 4, &[7]),
            ("state=Established", 7, &[]),
            ("dn=7002&state=Dialing", 4, &[6]),
            ("deviceId=dev-7002&callId=call-C", 4, &[]),
            (
                "dn=7001&deviceId=dev-7001&callId=call-C&connId=c3&state=Established",
                4,
                &[7],
            ),
        ] {
            let (_, _, frames) = subscribe(&stream, filter(query), since(since_seq));
            let mut expected = vec![resumed(7)];
            expected.extend(notifications(want));
            assert_eq!(frames, expected, "{query:?} since {since_seq}");
        }
        // Out of the window, the same filters get snapshots of the live matching calls only.
        for (query, live) in [
            ("", &[3, 6, 7][..]),
            ("dn=7001", &[3, 7]),
            ("dn=7002", &[6]),
            ("deviceId=dev-7002", &[6]),
            ("deviceId=7002", &[]),
            ("callId=call-A", &[3]),
            ("callId=call-B", &[]),
            ("connId=C3", &[7]),
            ("state=Established", &[3, 7]),
            ("state=Dialing", &[6]),
            ("state=Released", &[]),
            ("dn=7001&state=Ringing", &[]),
            ("callId=call-A&callId=call-D&dn=7002", &[6]),
        ] {
            let (_, _, frames) = subscribe(&stream, filter(query), since(3));
            assert_eq!(frames.len(), 1, "{query:?}: {frames:?}");
            snapshot(&frames[0], 7, live);
        }
    }

    #[test]
    fn notifications_go_exactly_to_the_matching_subscriptions_once() {
        let stream = scenario(100, 0);
        let queries = [
            ("", &[1, 2, 3, 4, 5, 6, 7][..]),
            ("dn=7001", &[1, 3, 4, 7]),
            ("deviceId=dev-7002", &[2, 5, 6]),
            ("deviceId=7002", &[]),
            ("callId=call-C", &[4, 7]),
            ("callId=7001", &[]),
            ("connId=A1", &[1, 3]),
            ("state=Ringing", &[1, 2, 4]),
            ("dn=7002&state=Ringing", &[2]),
            ("deviceId=dev-7001&callId=call-A&callId=call-B", &[1, 3]),
        ];
        let outboxes: Vec<(Arc<Outbox>, &[u64])> = queries
            .iter()
            .map(|(query, want)| {
                let (_, outbox, frames) = subscribe(&stream, filter(query), None);
                assert_eq!(frames.len(), 1, "{query:?}");
                snapshot(&frames[0], 0, &[]);
                (outbox, *want)
            })
            .collect();
        // One connection with two overlapping subscriptions gets each notification once.
        let (both, both_outbox) = stream.connect();
        stream
            .subscribe(both, "a", filter("dn=7001"), Scope::All, None)
            .unwrap();
        stream
            .subscribe(both, "b", filter("state=Ringing"), Scope::All, None)
            .unwrap();
        take(&both_outbox);
        let mut batch = Vec::new();
        for seq in 1..=7 {
            publish_seq(&stream, seq, &mut batch);
        }
        for ((query, _), (outbox, want)) in queries.iter().zip(&outboxes) {
            assert_eq!(take(outbox), notifications(want), "{query:?}");
        }
        assert_eq!(take(&both_outbox), notifications(&[1, 2, 3, 4, 7]));
        // Once unsubscribed, a subscription gets nothing more.
        stream.unsubscribe(both, "a").unwrap();
        stream.publish(vec![published(C, CallState::Released, 8)]);
        assert_eq!(take(&both_outbox), Vec::<Value>::new());
    }

    #[test]
    fn refusals_carry_their_codes() {
        let codes = [
            (SubscribeError::BadName, "bad-request"),
            (SubscribeError::Duplicate("s".into()), "duplicate-sub"),
            (SubscribeError::TooMany, "too-many-subscriptions"),
            (SubscribeError::Unknown("s".into()), "unknown-sub"),
        ];
        for (error, code) in codes {
            assert_eq!(error.code(), code, "{error}");
        }
    }

    #[test]
    fn subscription_names_are_one_to_64_characters() {
        let stream = scenario(3, 0);
        let (connection, _) = stream.connect();
        let longest = "é".repeat(64);
        assert_eq!(
            stream.subscribe(
                connection,
                &longest,
                CallFilter::default(),
                Scope::All,
                None
            ),
            Ok(())
        );
        for name in [String::new(), "é".repeat(65)] {
            assert_eq!(
                stream.subscribe(connection, &name, CallFilter::default(), Scope::All, None),
                Err(SubscribeError::BadName),
                "{name:?}"
            );
        }
        assert_eq!(stream.epoch(), EPOCH);
    }

    #[test]
    fn two_subscriptions_on_one_key_each_keep_the_connection_listed() {
        let stream = scenario(100, 0);
        let (connection, outbox) = stream.connect();
        for sub in ["a", "b"] {
            stream
                .subscribe(connection, sub, filter("dn=7001"), Scope::All, None)
                .unwrap();
        }
        take(&outbox);
        let mut batch = Vec::new();
        publish_seq(&stream, 1, &mut batch);
        publish_seq(&stream, 2, &mut batch);
        assert_eq!(take(&outbox), notifications(&[1]));
        // With one of the two gone, the other still gets the device's notifications...
        assert_eq!(stream.stats().subscriptions, 2);
        stream.unsubscribe(connection, "a").unwrap();
        assert_eq!(stream.stats().subscriptions, 1);
        publish_seq(&stream, 3, &mut batch);
        assert_eq!(take(&outbox), notifications(&[3]));
        // ...and with both gone, nothing.
        stream.unsubscribe(connection, "b").unwrap();
        publish_seq(&stream, 4, &mut batch);
        assert_eq!(take(&outbox), Vec::<Value>::new());
    }

    #[test]
    fn dropping_the_everything_subscription_leaves_only_the_filtered_one() {
        let stream = scenario(100, 0);
        let (connection, outbox) = stream.connect();
        stream
            .subscribe(connection, "all", CallFilter::default(), Scope::All, None)
            .unwrap();
        stream
            .subscribe(connection, "mine", filter("dn=7002"), Scope::All, None)
            .unwrap();
        take(&outbox);
        let mut batch = Vec::new();
        publish_seq(&stream, 1, &mut batch);
        publish_seq(&stream, 2, &mut batch);
        assert_eq!(take(&outbox), notifications(&[1, 2]));
        stream.unsubscribe(connection, "all").unwrap();
        for seq in 3..=6 {
            publish_seq(&stream, seq, &mut batch);
        }
        assert_eq!(take(&outbox), notifications(&[5, 6]));
    }

    #[test]
    fn disconnecting_closes_the_outbox_and_frees_the_subscriptions() {
        let stream = scenario(100, 0);
        let (gone, gone_outbox) = stream.connect();
        let (_, stays) = stream.connect();
        stream
            .subscribe(gone, "a", CallFilter::default(), Scope::All, None)
            .unwrap();
        stream
            .subscribe(gone, "b", filter("dn=7001"), Scope::All, None)
            .unwrap();
        let stats = stream.stats();
        assert_eq!(
            (stats.connections, stats.subscriptions, stats.seq),
            (2, 2, 0)
        );
        stream.disconnect(gone);
        let stats = stream.stats();
        assert_eq!((stats.connections, stats.subscriptions), (1, 0));
        assert_eq!(gone_outbox.push_control("late".into()), Pushed::Refused);
        let mut batch = Vec::new();
        publish_seq(&stream, 1, &mut batch);
        publish_seq(&stream, 2, &mut batch);
        assert_eq!(stream.stats().seq, 2);
        drop(stays);
    }

    #[test]
    fn forgotten_calls_leave_the_store() {
        let stream = Stream::new(EPOCH, 10, OutboxLimits::default());
        stream.publish(vec![
            published(A, CallState::Ringing, 1),
            published(B, CallState::Released, 2),
        ]);
        assert_eq!((stream.stats().calls, stream.stats().live_calls), (2, 1));
        stream.forget(&[meta(B, CallState::Released).key]);
        let held: Vec<CallKey> = stream.view().iter_after(None).map(|c| c.meta.key).collect();
        assert_eq!(held, [meta(A, CallState::Ringing).key]);
    }

    #[test]
    fn deliveries_are_counted_per_recipient() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let stream = scenario(100, 0);
            let _everything = subscribe(&stream, CallFilter::default(), None);
            let _mine = subscribe(&stream, filter("dn=7001"), None);
            let _other = subscribe(&stream, filter("dn=7002"), None);
            let mut batch = Vec::new();
            for seq in 1..=3 {
                publish_seq(&stream, seq, &mut batch);
            }
        });
        let counter = |name: &str| {
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .find(|(key, ..)| key.key().name() == name)
                .map(|(.., value)| value)
        };
        // Notifications 1 (7001), 2 (7002), 3 (7001): each to the everything subscriber and one other.
        assert_eq!(
            counter("callgate_deliveries_total"),
            Some(DebugValue::Counter(6))
        );
    }

    /// Call `n` of a large scenario: at DN `70xx` (50 DNs), Ringing unless `state` says otherwise.
    fn numbered(n: u64, state: CallState, version: u64) -> Published {
        let dn = format!("{}", 7000 + n % 50);
        let id = format!("call-{n}");
        let document = json!({"id": id, "state": state.as_str(), "version": version}).to_string();
        let head = r#""channel":"/v2/me/calls","data":{"call":"#;
        Published {
            meta: Meta::Call(Arc::new(CallMeta {
                key: CallKey {
                    shard: 0,
                    number: n,
                },
                dn: dn.as_str().into(),
                device_id: format!("dev-{dn}").into(),
                call_id: id.as_str().into(),
                conn_id: crate::event::ConnId(n),
                state,
            })),
            call: head.len()..head.len() + document.len(),
            members: format!("{head}{document}}}"),
            ingested: Instant::now(),
        }
    }

    #[test]
    fn a_large_snapshot_comes_in_chunks_of_a_thousand_then_what_followed_it() {
        let stream = Stream::new(EPOCH, 100, OutboxLimits::default());
        stream.publish(
            (1..=2500)
                .map(|n| numbered(n, CallState::Ringing, 1))
                .collect(),
        );
        let (connection, outbox) = stream.connect();
        stream
            .subscribe(connection, "all", CallFilter::default(), Scope::All, None)
            .unwrap();
        // After the subscription's position: call 7 changes, call 2501 appears.
        stream.publish(vec![
            numbered(7, CallState::Established, 2),
            numbered(2501, CallState::Ringing, 1),
        ]);
        let frames = take(&outbox);
        assert_eq!(frames.len(), 5, "three chunks, then two notifications");
        let chunk_sizes: Vec<usize> = frames[..3]
            .iter()
            .map(|f| f["calls"].as_array().map_or(0, Vec::len))
            .collect();
        assert_eq!(chunk_sizes, [1000, 1000, 500]);
        assert_eq!(frames[0]["type"], "subscribed");
        assert_eq!(frames[0]["seq"], 2500);
        assert_eq!(frames[0]["more"], true);
        assert_eq!(frames[1]["type"], "snapshot");
        assert_eq!(frames[1]["sub"], "all");
        assert_eq!(frames[1]["more"], true);
        assert_eq!(frames[2]["more"], false);
        // Every call once, in creation order, as of the subscription's seq: call 7 still Ringing.
        let calls: Vec<&Value> = frames[..3]
            .iter()
            .flat_map(|f| f["calls"].as_array().into_iter().flatten())
            .collect();
        let ids: Vec<String> = calls
            .iter()
            .map(|c| c["id"].as_str().unwrap_or("").to_owned())
            .collect();
        let want: Vec<String> = (1..=2500).map(|n| format!("call-{n}")).collect();
        assert_eq!(ids, want);
        assert_eq!(calls[6]["state"], "Ringing");
        assert_eq!(frames[3]["seq"], 2501);
        assert_eq!(frames[3]["data"]["call"]["state"], "Established");
        assert_eq!(frames[4]["seq"], 2502);
    }

    #[test]
    fn a_filtered_snapshot_finds_its_calls_through_the_index_in_chunks() {
        let stream = Stream::new(EPOCH, 100, OutboxLimits::default());
        // 50 DNs: 7001 holds calls 1, 51, 101, ..., 4951 (100 calls) and 7002 as many.
        stream.publish(
            (1..=5000)
                .map(|n| numbered(n, CallState::Ringing, 1))
                .collect(),
        );
        stream.publish(vec![numbered(51, CallState::Released, 2)]);
        let (_, _, frames) = subscribe(&stream, filter("dn=7001&dn=7002"), None);
        assert_eq!(frames.len(), 1);
        let ids: Vec<&str> = frames[0]["calls"]
            .as_array()
            .expect("calls")
            .iter()
            .filter_map(|c| c["id"].as_str())
            .collect();
        assert_eq!(
            ids.len(),
            199,
            "200 calls at the two DNs, one of them Released"
        );
        assert!(!ids.contains(&"call-51"));
        assert_eq!(&ids[..3], ["call-1", "call-2", "call-52"]);
    }

    fn devices(names: &[&str]) -> Scope {
        Scope::Devices(Arc::new(names.iter().map(|&name| name.into()).collect()))
    }

    fn seqs(outbox: &Outbox) -> Vec<u64> {
        take(outbox)
            .iter()
            .filter_map(|f| f["seq"].as_u64())
            .collect()
    }

    #[test]
    fn a_changed_scope_applies_to_open_subscriptions_at_once() {
        let stream = Stream::new(EPOCH, 100, OutboxLimits::default());
        stream.publish(
            (1..=4)
                .map(|n| numbered(n, CallState::Ringing, 1))
                .collect(),
        );
        let (connection, outbox) = stream.connect();
        let both = devices(&["dev-7001", "dev-7002"]);
        stream
            .subscribe(
                connection,
                "mine",
                CallFilter::default(),
                both.clone(),
                None,
            )
            .unwrap();
        stream
            .subscribe(connection, "two", filter("dn=7002"), both, None)
            .unwrap();
        take(&outbox);
        stream.rescope(connection, &devices(&["dev-7001"]));
        stream.publish(vec![
            numbered(1, CallState::Established, 2),
            numbered(2, CallState::Established, 2),
        ]);
        assert_eq!(seqs(&outbox), [5], "7002 left the scope");
        stream.rescope(connection, &Scope::All);
        stream.publish(vec![
            numbered(2, CallState::Held, 3),
            numbered(4, CallState::Established, 2),
        ]);
        assert_eq!(seqs(&outbox), [7, 8], "everything now");
        stream.rescope(connection, &devices(&[]));
        stream.publish(vec![numbered(1, CallState::Held, 3)]);
        assert!(seqs(&outbox).is_empty());
    }

    #[test]
    fn a_scope_too_large_to_index_still_holds() {
        let stream = Stream::new(EPOCH, 100, OutboxLimits::default());
        stream.publish(
            (1..=4)
                .map(|n| numbered(n, CallState::Ringing, 1))
                .collect(),
        );
        let mut names: Vec<String> = (0..crate::subscriptions::MAX_SCOPE_KEYS + 10)
            .map(|n| format!("dev-other-{n}"))
            .collect();
        names.push("dev-7003".into());
        let large = Scope::Devices(Arc::new(names.iter().map(|n| n.as_str().into()).collect()));
        let (connection, outbox) = stream.connect();
        stream
            .subscribe(connection, "team", CallFilter::default(), large, None)
            .unwrap();
        let snapshot = take(&outbox);
        assert_eq!(snapshot[0]["calls"].as_array().map(Vec::len), Some(1));
        stream.publish(vec![
            numbered(3, CallState::Established, 2),
            numbered(4, CallState::Established, 2),
        ]);
        assert_eq!(seqs(&outbox), [5], "7003 only");
    }

    #[test]
    fn a_scope_limits_snapshots_and_notifications_and_filters_cannot_widen_it() {
        let stream = Stream::new(EPOCH, 100, OutboxLimits::default());
        stream.publish(
            (1..=100)
                .map(|n| numbered(n, CallState::Ringing, 1))
                .collect(),
        );
        let scope = || {
            Scope::Devices(Arc::new(
                ["dev-7001".into(), "dev-7002".into()].into_iter().collect(),
            ))
        };
        let (connection, outbox) = stream.connect();
        stream
            .subscribe(connection, "mine", CallFilter::default(), scope(), None)
            .unwrap();
        stream
            .subscribe(connection, "other", filter("dn=7003"), scope(), None)
            .unwrap();
        let frames = take(&outbox);
        let count = |frame: &Value| frame["calls"].as_array().map_or(0, Vec::len);
        assert_eq!((count(&frames[0]), count(&frames[1])), (4, 0));
        stream.publish(vec![
            numbered(1, CallState::Established, 2),
            numbered(3, CallState::Established, 2),
            numbered(2, CallState::Established, 2),
        ]);
        let seqs: Vec<u64> = take(&outbox)
            .iter()
            .filter_map(|f| f["seq"].as_u64())
            .collect();
        assert_eq!(
            seqs,
            [101, 103],
            "calls 1 (7001) and 2 (7002), not 3 (7003)"
        );
    }

    #[test]
    fn a_resume_of_many_missed_notifications_comes_before_what_follows() {
        let stream = Stream::new(EPOCH, 10_000, OutboxLimits::default());
        stream.publish(
            (1..=3000)
                .map(|n| numbered(n, CallState::Ringing, 1))
                .collect(),
        );
        let (connection, outbox) = stream.connect();
        let since = Since {
            epoch: EPOCH.into(),
            seq: 1000,
        };
        stream
            .subscribe(connection, "s", filter("dn=7001"), Scope::All, Some(since))
            .unwrap();
        stream.publish(vec![numbered(1, CallState::Established, 2)]);
        let frames = take(&outbox);
        assert_eq!(frames[0]["resumed"], true);
        let seqs: Vec<u64> = frames[1..]
            .iter()
            .filter_map(|f| f["seq"].as_u64())
            .collect();
        let mut want: Vec<u64> = (1001..=3000).filter(|n| n % 50 == 1).collect();
        want.push(3001);
        assert_eq!(seqs, want);
    }

    #[test]
    fn chunks_hold_a_thousand_at_their_edges_with_or_without_an_index() {
        let chunk_sizes = |stream: &Stream, filter: CallFilter| {
            let (_, _, frames) = subscribe(stream, filter, None);
            frames
                .iter()
                .map(|f| (f["calls"].as_array().map_or(0, Vec::len), f["more"] == true))
                .collect::<Vec<_>>()
        };
        let exact = Stream::new(EPOCH, 10, OutboxLimits::default());
        exact.publish(
            (1..=1000)
                .map(|n| numbered(n, CallState::Ringing, 1))
                .collect(),
        );
        assert_eq!(chunk_sizes(&exact, CallFilter::default()), [(1000, false)]);
        // 2,500 calls at one DN, found through the DN index.
        let indexed = Stream::new(EPOCH, 10, OutboxLimits::default());
        indexed.publish(
            (1..=125_000)
                .step_by(50)
                .map(|n| numbered(n, CallState::Ringing, 1))
                .collect(),
        );
        assert_eq!(
            chunk_sizes(&indexed, filter("dn=7001")),
            [(1000, true), (1000, true), (500, false)]
        );
    }
}
