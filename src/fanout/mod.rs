//! Fanout: sequence numbers, the resume history, subscriptions, and delivery into per-connection outboxes.
//!
//! One lock (the core) orders everything that must be atomic with the stream position: publishing a batch
//! (seq, store, history, delivery) and taking a subscription's snapshot. A subscriber therefore gets the
//! state as of position `seq` and then exactly the notifications after it, never a gap or a repeat.
//! Each notification is serialized once into a frame whose bytes every recipient shares.

pub mod filter;
pub mod outbox;

use crate::json::{Decimal, write_json_str};
use crate::reduce::CallState;
use crate::store::{CallKey, CallMeta, Store, StoredCall};
use bytes::Bytes;
pub use filter::CallFilter;
use hashbrown::HashMap;
use outbox::{Outbox, OutboxLimits, Pushed};
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The most subscriptions one connection may hold.
pub const MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 64;

/// One notification ready to publish, as a reducer shard produced it.
#[derive(Debug)]
pub struct Published {
    /// The call it is about.
    pub meta: Arc<CallMeta>,
    /// The notification's members (`"channel":...,"data":{...}`), serialized once by the reducer.
    pub members: String,
    /// Where the call document lies within `members`.
    pub call: Range<usize>,
    /// When its event was read from the ingest socket.
    pub ingested: Instant,
}

/// Where a client wants to resume from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Since {
    /// The gateway run the position belongs to.
    pub epoch: String,
    /// The last seq the client saw.
    pub seq: u64,
}

/// Why a subscription request was refused (sent to the client as an `error` message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// `sub` is empty or longer than 64 characters.
    #[error("sub must be 1 to 64 characters")]
    BadName,
    /// The connection already has a subscription with this name.
    #[error("a subscription named {0:?} exists on this connection")]
    Duplicate(String),
    /// The connection holds the maximum number of subscriptions.
    #[error("at most {MAX_SUBSCRIPTIONS_PER_CONNECTION} subscriptions per connection")]
    TooMany,
    /// No subscription with this name.
    #[error("no subscription named {0:?}")]
    Unknown(String),
}

impl SubscribeError {
    /// The `code` of the error message.
    pub fn code(&self) -> &'static str {
        match self {
            SubscribeError::BadName => "bad-request",
            SubscribeError::Duplicate(_) => "duplicate-sub",
            SubscribeError::TooMany => "too-many-subscriptions",
            SubscribeError::Unknown(_) => "unknown-sub",
        }
    }
}

struct HistoryEntry {
    seq: u64,
    meta: Arc<CallMeta>,
    frame: Bytes,
}

struct Connection {
    outbox: Arc<Outbox>,
    subscriptions: HashMap<String, Arc<CallFilter>>,
    /// One of its subscriptions has an empty filter: it gets every notification.
    gets_everything: bool,
}

impl Connection {
    fn update_gets_everything(&mut self) -> bool {
        self.gets_everything = self
            .subscriptions
            .values()
            .any(|filter| **filter == CallFilter::default());
        self.gets_everything
    }
}

/// Subscriptions indexed by the most selective member of their filter, so a notification costs in
/// proportion to its recipients. Values count how many of the connection's subscriptions use the key.
#[derive(Default)]
struct Index {
    broad: HashMap<u64, usize>,
    by_dn: HashMap<String, HashMap<u64, usize>>,
    by_device: HashMap<String, HashMap<u64, usize>>,
    by_call: HashMap<String, HashMap<u64, usize>>,
}

enum IndexKeys<'f> {
    Broad,
    Dn(&'f [String]),
    Device(&'f [String]),
    Call(&'f [String]),
}

fn index_keys(filter: &CallFilter) -> IndexKeys<'_> {
    if let Some(dns) = &filter.dn {
        IndexKeys::Dn(dns)
    } else if let Some(devices) = &filter.device_id {
        IndexKeys::Device(devices)
    } else if let Some(calls) = &filter.call_id {
        IndexKeys::Call(calls)
    } else {
        IndexKeys::Broad
    }
}

impl Index {
    fn change(&mut self, connection: u64, filter: &CallFilter, add: bool) {
        fn bump(map: &mut HashMap<u64, usize>, connection: u64, add: bool) {
            let count = map.entry(connection).or_insert(0);
            if add {
                *count += 1;
            } else {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    map.remove(&connection);
                }
            }
        }
        if *filter == CallFilter::default() {
            // Kept in `Core::everything` instead, without a per-notification match.
            return;
        }
        let (table, keys) = match index_keys(filter) {
            IndexKeys::Broad => return bump(&mut self.broad, connection, add),
            IndexKeys::Dn(keys) => (&mut self.by_dn, keys),
            IndexKeys::Device(keys) => (&mut self.by_device, keys),
            IndexKeys::Call(keys) => (&mut self.by_call, keys),
        };
        let mut unique: Vec<&String> = keys.iter().collect();
        unique.sort_unstable();
        unique.dedup();
        for key in unique {
            let map = table.entry(key.clone()).or_default();
            bump(map, connection, add);
            if map.is_empty() {
                table.remove(key);
            }
        }
    }

    /// Connections with a subscription that may match `call`.
    fn candidates(&self, call: &CallMeta, out: &mut Vec<u64>) {
        out.extend(self.broad.keys());
        for (table, key) in [
            (&self.by_dn, &*call.dn),
            (&self.by_device, &*call.device_id),
            (&self.by_call, &*call.call_id),
        ] {
            if let Some(map) = table.get(key) {
                out.extend(map.keys());
            }
        }
        out.sort_unstable();
        out.dedup();
    }
}

struct Core {
    seq: u64,
    history: VecDeque<HistoryEntry>,
    history_capacity: usize,
    connections: HashMap<u64, Connection>,
    next_connection: u64,
    index: Index,
    candidates: Vec<u64>,
    /// Connections that get every notification (a subscription with an empty filter: wallboards,
    /// analytics), in connection order. Delivering to them needs no index lookup and no filter.
    everything: Vec<(u64, Arc<Outbox>)>,
    /// Outboxes that became non-empty during the batch being published: woken once it is all queued.
    to_wake: Vec<Arc<Outbox>>,
}

/// Counters the fanout keeps for /metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct FanoutStats {
    /// Connections registered.
    pub connections: usize,
    /// Subscriptions held.
    pub subscriptions: usize,
    /// Last seq assigned.
    pub seq: u64,
}

/// The fanout of one gateway run.
pub struct Fanout {
    epoch: Arc<str>,
    store: Arc<Store>,
    limits: OutboxLimits,
    core: Mutex<Core>,
}

impl Core {
    /// Puts `connection` in or out of the every-notification list after its subscriptions changed.
    fn refresh_everything(&mut self, connection: u64) {
        let member = self
            .connections
            .get_mut(&connection)
            .map(|conn| (conn.update_gets_everything(), Arc::clone(&conn.outbox)));
        let position = self
            .everything
            .binary_search_by_key(&connection, |(id, _)| *id);
        match (member, position) {
            (Some((true, outbox)), Err(at)) => self.everything.insert(at, (connection, outbox)),
            (Some((false, _)) | None, Ok(at)) => {
                self.everything.remove(at);
            }
            _ => {}
        }
    }
}

impl Fanout {
    /// A fanout for the run named `epoch`, keeping `history` notifications for resuming.
    pub fn new(epoch: &str, history: usize, store: Arc<Store>, limits: OutboxLimits) -> Self {
        Self {
            epoch: epoch.into(),
            store,
            limits,
            core: Mutex::new(Core {
                seq: 0,
                history: VecDeque::with_capacity(history.min(1 << 16)),
                history_capacity: history,
                connections: HashMap::new(),
                next_connection: 0,
                index: Index::default(),
                candidates: Vec::new(),
                everything: Vec::new(),
                to_wake: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Core> {
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The run's epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Publishes notifications in order: assigns seq, updates the store and history, delivers.
    pub fn publish(&self, batch: Vec<Published>) {
        if batch.is_empty() {
            return;
        }
        let mut guard = self.lock();
        let core = &mut *guard;
        for published in batch {
            core.seq += 1;
            let seq = core.seq;
            let mut frame = String::with_capacity(published.members.len() + 64);
            frame.push_str("{\"type\":\"notification\",\"epoch\":");
            write_json_str(&mut frame, &self.epoch);
            frame.push_str(",\"seq\":");
            frame.push_str(Decimal::new(seq).as_str());
            frame.push(',');
            let offset = frame.len();
            frame.push_str(&published.members);
            frame.push('}');
            let frame = Bytes::from(frame);
            let call_json = frame.slice(offset + published.call.start..offset + published.call.end);
            self.store.upsert(StoredCall {
                meta: Arc::clone(&published.meta),
                json: call_json,
            });

            let mut delivered = 0u64;
            let mut deliver = |outbox: &Arc<Outbox>, to_wake: &mut Vec<Arc<Outbox>>| {
                let (pushed, wake) = outbox.queue_notification(published.meta.key, frame.clone());
                if wake {
                    to_wake.push(Arc::clone(outbox));
                }
                if pushed == Pushed::Queued {
                    delivered += 1;
                }
            };
            for (_, outbox) in &core.everything {
                deliver(outbox, &mut core.to_wake);
            }
            core.candidates.clear();
            core.index.candidates(&published.meta, &mut core.candidates);
            for connection in &core.candidates {
                let Some(conn) = core.connections.get(connection) else {
                    continue;
                };
                if conn.gets_everything
                    || !conn
                        .subscriptions
                        .values()
                        .any(|f| f.matches(&published.meta))
                {
                    continue;
                }
                deliver(&conn.outbox, &mut core.to_wake);
            }
            metrics::counter!("callgate_notifications_total").increment(1);
            metrics::counter!("callgate_deliveries_total").increment(delivered);
            metrics::histogram!("callgate_ingest_to_publish_seconds")
                .record(published.ingested.elapsed().as_secs_f64());

            if core.history_capacity > 0 {
                if core.history.len() >= core.history_capacity {
                    core.history.pop_front();
                }
                core.history.push_back(HistoryEntry {
                    seq,
                    meta: published.meta,
                    frame,
                });
            }
        }
        // Woken after the lock is released, so a writer on the other core does not wait for it.
        let mut to_wake = std::mem::take(&mut core.to_wake);
        drop(guard);
        for outbox in to_wake.drain(..) {
            outbox.wake();
        }
        self.lock().to_wake = to_wake;
    }

    /// Forgets calls whose linger time is over.
    pub fn forget(&self, keys: &[CallKey]) {
        let _core = self.lock();
        for key in keys {
            self.store.remove(*key);
        }
    }

    /// Registers a new WebSocket connection; returns its id and outbox.
    pub fn connect(&self) -> (u64, Arc<Outbox>) {
        let mut core = self.lock();
        let id = core.next_connection;
        core.next_connection += 1;
        let outbox = Arc::new(Outbox::new(self.limits));
        core.connections.insert(
            id,
            Connection {
                outbox: Arc::clone(&outbox),
                subscriptions: HashMap::new(),
                gets_everything: false,
            },
        );
        (id, outbox)
    }

    /// Unregisters a connection and its subscriptions.
    pub fn disconnect(&self, connection: u64) {
        let mut core = self.lock();
        if let Some(conn) = core.connections.remove(&connection) {
            for filter in conn.subscriptions.values() {
                core.index.change(connection, filter, false);
            }
            conn.outbox.close();
            core.refresh_everything(connection);
        }
    }

    /// Subscribes: queues the `subscribed` message (with the snapshot, or `resumed:true` and the missed
    /// notifications), atomically with the stream position.
    pub fn subscribe(
        &self,
        connection: u64,
        sub: &str,
        filter: CallFilter,
        since: Option<Since>,
    ) -> Result<(), SubscribeError> {
        if sub.is_empty() || sub.chars().count() > 64 {
            return Err(SubscribeError::BadName);
        }
        let mut core = self.lock();
        let core = &mut *core;
        let Some(conn) = core.connections.get_mut(&connection) else {
            return Ok(());
        };
        if conn.subscriptions.contains_key(sub) {
            return Err(SubscribeError::Duplicate(sub.to_owned()));
        }
        if conn.subscriptions.len() >= MAX_SUBSCRIPTIONS_PER_CONNECTION {
            return Err(SubscribeError::TooMany);
        }
        let filter = Arc::new(filter);
        conn.subscriptions
            .insert(sub.to_owned(), Arc::clone(&filter));
        let outbox = Arc::clone(&conn.outbox);
        core.index.change(connection, &filter, true);
        core.refresh_everything(connection);

        let mut message = String::with_capacity(256);
        message.push_str("{\"type\":\"subscribed\",\"sub\":");
        write_json_str(&mut message, sub);
        message.push_str(",\"epoch\":");
        write_json_str(&mut message, &self.epoch);
        message.push_str(",\"seq\":");
        message.push_str(Decimal::new(core.seq).as_str());

        let oldest = core.history.front().map_or(core.seq + 1, |entry| entry.seq);
        let resumable = since.as_ref().is_some_and(|since| {
            *since.epoch == *self.epoch && since.seq <= core.seq && since.seq + 1 >= oldest
        });
        if let (true, Some(since)) = (resumable, since) {
            message.push_str(",\"resumed\":true}");
            outbox.push_control(message.into());
            let skip = (since.seq + 1).saturating_sub(oldest) as usize;
            for entry in core.history.iter().skip(skip) {
                if filter.matches(&entry.meta) {
                    outbox.push_notification(entry.meta.key, entry.frame.clone());
                }
            }
            metrics::counter!("callgate_resumes_total").increment(1);
        } else {
            message.push_str(",\"resumed\":false,\"calls\":[");
            let calls = self
                .store
                .select(|call| call.state != CallState::Released && filter.matches(call));
            for (i, call) in calls.iter().enumerate() {
                if i > 0 {
                    message.push(',');
                }
                // The stored bytes are a slice of a UTF-8 frame.
                message.push_str(std::str::from_utf8(&call.json).unwrap_or("null"));
            }
            message.push_str("]}");
            outbox.push_control(message.into());
            metrics::counter!("callgate_snapshots_total").increment(1);
        }
        Ok(())
    }

    /// Removes a subscription.
    pub fn unsubscribe(&self, connection: u64, sub: &str) -> Result<(), SubscribeError> {
        let mut core = self.lock();
        let core = &mut *core;
        let filter = core
            .connections
            .get_mut(&connection)
            .and_then(|conn| conn.subscriptions.remove(sub))
            .ok_or_else(|| SubscribeError::Unknown(sub.to_owned()))?;
        core.index.change(connection, &filter, false);
        core.refresh_everything(connection);
        Ok(())
    }

    /// Connection, subscription and position counts.
    pub fn stats(&self) -> FanoutStats {
        let core = self.lock();
        FanoutStats {
            connections: core.connections.len(),
            subscriptions: core
                .connections
                .values()
                .map(|c| c.subscriptions.len())
                .sum(),
            seq: core.seq,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The resume window and delivery through the public API (api.md): `subscribed` with the snapshot as of
    //! its `seq`, or `resumed:true` and exactly the missed matching notifications when every notification
    //! after `since` is still held.

    use super::*;
    use crate::event::ConnId;
    use outbox::Frame;
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
            meta: meta(call, state),
            call: head.len()..head.len() + document.len(),
            members,
            ingested: Instant::now(),
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

    /// A fanout holding `history` notifications, with the first `published` of [`EVENTS`] published (the
    /// first two in one batch, the rest one by one).
    fn scenario(history: usize, published_count: usize) -> Fanout {
        let fanout = Fanout::new(
            EPOCH,
            history,
            Arc::new(Store::default()),
            OutboxLimits::default(),
        );
        let mut batch = Vec::new();
        for seq in 1..=published_count as u64 {
            publish_seq(&fanout, seq, &mut batch);
        }
        fanout.publish(batch);
        fanout
    }

    fn publish_seq(fanout: &Fanout, seq: u64, batch: &mut Vec<Published>) {
        let (call, state) = EVENTS[seq as usize - 1];
        batch.push(published(call, state, seq));
        if seq >= 2 {
            fanout.publish(std::mem::take(batch));
        }
    }

    /// Every frame queued, parsed.
    fn take(outbox: &Outbox) -> Vec<Value> {
        let mut frames = Vec::new();
        outbox.drain(&mut frames).expect("not overflowed");
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
        fanout: &Fanout,
        filter: CallFilter,
        since: Option<Since>,
    ) -> (u64, Arc<Outbox>, Vec<Value>) {
        let (connection, outbox) = fanout.connect();
        fanout
            .subscribe(connection, "s", filter, since)
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
            json!({"type": "subscribed", "sub": "s", "epoch": EPOCH, "seq": seq, "resumed": false, "calls": null}),
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
        let fanout = scenario(3, 7);
        // Held: 5, 6, 7. Everything after 4 is held.
        let (_, _, frames) = subscribe(&fanout, CallFilter::default(), since(4));
        let mut want = vec![resumed(7)];
        want.extend(notifications(&[5, 6, 7]));
        assert_eq!(frames, want);
    }

    #[test]
    fn two_before_the_oldest_held_gets_a_snapshot_of_the_live_calls() {
        let fanout = scenario(3, 7);
        // Notification 4 is no longer held: resuming after 3 would miss it.
        for since_seq in [3, 2, 0] {
            let (_, _, frames) = subscribe(&fanout, CallFilter::default(), since(since_seq));
            assert_eq!(frames.len(), 1, "since {since_seq}: {frames:?}");
            // A (3), D (6), C (7) are live; B was Released.
            snapshot(&frames[0], 7, &[3, 6, 7]);
        }
    }

    #[test]
    fn at_the_newest_resumes_with_nothing_missed_and_gets_what_follows() {
        let fanout = scenario(3, 6);
        let (_, outbox, frames) = subscribe(&fanout, CallFilter::default(), since(6));
        assert_eq!(frames, [resumed(6)]);
        fanout.publish(vec![published(C, CallState::Established, 7)]);
        assert_eq!(take(&outbox), notifications(&[7]));
    }

    #[test]
    fn past_the_newest_gets_a_snapshot() {
        let fanout = scenario(3, 7);
        for since_seq in [8, 9, u64::MAX] {
            let (_, _, frames) = subscribe(&fanout, CallFilter::default(), since(since_seq));
            assert_eq!(frames.len(), 1, "since {since_seq}: {frames:?}");
            snapshot(&frames[0], 7, &[3, 6, 7]);
        }
    }

    #[test]
    fn another_epoch_gets_a_snapshot() {
        let fanout = scenario(3, 7);
        for epoch in ["run-0", "", "RUN-1", "run-1 "] {
            let (_, _, frames) = subscribe(
                &fanout,
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
        let fanout = scenario(3, 7);
        for since_seq in 4..=7 {
            let (_, _, frames) = subscribe(&fanout, CallFilter::default(), since(since_seq));
            let mut want = vec![resumed(7)];
            want.extend(notifications(&(since_seq + 1..=7).collect::<Vec<_>>()));
            assert_eq!(frames, want, "since {since_seq}");
        }
    }

    #[test]
    fn a_history_not_yet_full_resumes_from_the_start() {
        let fanout = scenario(3, 2);
        let (_, _, frames) = subscribe(&fanout, CallFilter::default(), since(0));
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
        let fanout = scenario(0, 7);
        let (_, outbox, frames) = subscribe(&fanout, CallFilter::default(), since(7));
        assert_eq!(frames, [resumed(7)]);
        for since_seq in [6, 0, 8] {
            let (_, _, frames) = subscribe(&fanout, CallFilter::default(), since(since_seq));
            assert_eq!(frames.len(), 1, "since {since_seq}: {frames:?}");
            snapshot(&frames[0], 7, &[3, 6, 7]);
        }
        // The resumed subscription gets what follows, live.
        fanout.publish(vec![published(A, CallState::Held, 8)]);
        let frames = take(&outbox);
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0]["seq"], 8);
        assert_eq!(frames[0]["data"]["call"]["state"], "Held");
    }

    #[test]
    fn a_filtered_resume_gets_exactly_the_missed_matching_notifications_in_order() {
        let fanout = scenario(3, 7);
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
            let (_, _, frames) = subscribe(&fanout, filter(query), since(since_seq));
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
            let (_, _, frames) = subscribe(&fanout, filter(query), since(3));
            assert_eq!(frames.len(), 1, "{query:?}: {frames:?}");
            snapshot(&frames[0], 7, live);
        }
    }

    #[test]
    fn notifications_go_exactly_to_the_matching_subscriptions_once() {
        let fanout = scenario(100, 0);
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
                let (_, outbox, frames) = subscribe(&fanout, filter(query), None);
                assert_eq!(frames.len(), 1, "{query:?}");
                snapshot(&frames[0], 0, &[]);
                (outbox, *want)
            })
            .collect();
        // One connection with two overlapping subscriptions gets each notification once.
        let (both, both_outbox) = fanout.connect();
        fanout
            .subscribe(both, "a", filter("dn=7001"), None)
            .unwrap();
        fanout
            .subscribe(both, "b", filter("state=Ringing"), None)
            .unwrap();
        take(&both_outbox);
        let mut batch = Vec::new();
        for seq in 1..=7 {
            publish_seq(&fanout, seq, &mut batch);
        }
        for ((query, _), (outbox, want)) in queries.iter().zip(&outboxes) {
            assert_eq!(take(outbox), notifications(want), "{query:?}");
        }
        assert_eq!(take(&both_outbox), notifications(&[1, 2, 3, 4, 7]));
        // Once unsubscribed, a subscription gets nothing more.
        fanout.unsubscribe(both, "a").unwrap();
        fanout.publish(vec![published(C, CallState::Released, 8)]);
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
        let fanout = scenario(3, 0);
        let (connection, _) = fanout.connect();
        let longest = "é".repeat(64);
        assert_eq!(
            fanout.subscribe(connection, &longest, CallFilter::default(), None),
            Ok(())
        );
        for name in [String::new(), "é".repeat(65)] {
            assert_eq!(
                fanout.subscribe(connection, &name, CallFilter::default(), None),
                Err(SubscribeError::BadName),
                "{name:?}"
            );
        }
        assert_eq!(fanout.epoch(), EPOCH);
    }

    #[test]
    fn two_subscriptions_on_one_key_each_keep_the_connection_listed() {
        let fanout = scenario(100, 0);
        let (connection, outbox) = fanout.connect();
        for sub in ["a", "b"] {
            fanout
                .subscribe(connection, sub, filter("dn=7001"), None)
                .unwrap();
        }
        take(&outbox);
        let mut batch = Vec::new();
        publish_seq(&fanout, 1, &mut batch);
        publish_seq(&fanout, 2, &mut batch);
        assert_eq!(take(&outbox), notifications(&[1]));
        // With one of the two gone, the other still gets the device's notifications...
        fanout.unsubscribe(connection, "a").unwrap();
        publish_seq(&fanout, 3, &mut batch);
        assert_eq!(take(&outbox), notifications(&[3]));
        // ...and with both gone, nothing.
        fanout.unsubscribe(connection, "b").unwrap();
        publish_seq(&fanout, 4, &mut batch);
        assert_eq!(take(&outbox), Vec::<Value>::new());
    }

    #[test]
    fn dropping_the_everything_subscription_leaves_only_the_filtered_one() {
        let fanout = scenario(100, 0);
        let (connection, outbox) = fanout.connect();
        fanout
            .subscribe(connection, "all", CallFilter::default(), None)
            .unwrap();
        fanout
            .subscribe(connection, "mine", filter("dn=7002"), None)
            .unwrap();
        take(&outbox);
        let mut batch = Vec::new();
        publish_seq(&fanout, 1, &mut batch);
        publish_seq(&fanout, 2, &mut batch);
        assert_eq!(take(&outbox), notifications(&[1, 2]));
        fanout.unsubscribe(connection, "all").unwrap();
        for seq in 3..=6 {
            publish_seq(&fanout, seq, &mut batch);
        }
        assert_eq!(take(&outbox), notifications(&[5, 6]));
    }

    #[test]
    fn disconnecting_closes_the_outbox_and_frees_the_subscriptions() {
        let fanout = scenario(100, 0);
        let (gone, gone_outbox) = fanout.connect();
        let (_, stays) = fanout.connect();
        fanout
            .subscribe(gone, "a", CallFilter::default(), None)
            .unwrap();
        fanout
            .subscribe(gone, "b", filter("dn=7001"), None)
            .unwrap();
        let stats = fanout.stats();
        assert_eq!(
            (stats.connections, stats.subscriptions, stats.seq),
            (2, 2, 0)
        );
        fanout.disconnect(gone);
        let stats = fanout.stats();
        assert_eq!((stats.connections, stats.subscriptions), (1, 0));
        assert_eq!(
            gone_outbox.push_control("late".into()),
            outbox::Pushed::Refused
        );
        let mut batch = Vec::new();
        publish_seq(&fanout, 1, &mut batch);
        publish_seq(&fanout, 2, &mut batch);
        assert_eq!(fanout.stats().seq, 2);
        drop(stays);
    }

    #[test]
    fn forgotten_calls_leave_the_store() {
        let store = Arc::new(Store::default());
        let fanout = Fanout::new(EPOCH, 10, Arc::clone(&store), OutboxLimits::default());
        fanout.publish(vec![
            published(A, CallState::Ringing, 1),
            published(B, CallState::Released, 2),
        ]);
        assert_eq!(store.len(), 2);
        fanout.forget(&[meta(B, CallState::Released).key]);
        let held: Vec<CallKey> = store.select(|_| true).iter().map(|c| c.meta.key).collect();
        assert_eq!(held, [meta(A, CallState::Ringing).key]);
    }

    #[test]
    fn deliveries_are_counted_per_recipient() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let fanout = scenario(100, 0);
            let _everything = subscribe(&fanout, CallFilter::default(), None);
            let _mine = subscribe(&fanout, filter("dn=7001"), None);
            let _other = subscribe(&fanout, filter("dn=7002"), None);
            let mut batch = Vec::new();
            for seq in 1..=3 {
                publish_seq(&fanout, seq, &mut batch);
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
}
