//! Fanout: sequence numbers, the resume history, subscriptions, and delivery into per-connection outboxes.
//!
//! One lock (the core) orders everything that must be atomic with the stream position: publishing a batch
//! (seq, store, history, delivery) and taking a subscription's snapshot. A subscriber therefore gets the
//! state as of position `seq` and then exactly the notifications after it, never a gap or a repeat.
//! Each notification is serialized once into a frame whose bytes every recipient shares.

pub mod filter;
pub mod outbox;

use crate::event::kv::{Decimal, write_json_str};
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

    /// Publishes notifications in order: assigns seq, updates the store and history, delivers. Returns the
    /// keys of calls that were Released by this batch (their linger starts now).
    pub fn publish(&self, batch: Vec<Published>) -> Vec<CallKey> {
        let mut released = Vec::new();
        if batch.is_empty() {
            return released;
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
            if published.meta.state == CallState::Released {
                released.push(published.meta.key);
            }
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
        released
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
