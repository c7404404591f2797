//! The store: the current document of every call the gateway holds, indexed by key, DN, device and call
//! id, as persistent (structure-sharing) maps.
//!
//! Only the stream writes it, in notification order, under the stream's lock. Readers never read the
//! live maps: they take a [`StoreView`], a copy made in constant time that shares every node with the
//! store and stays exactly as it was while the store moves on (a write after the copy copies the few nodes
//! on its path). So a subscription's snapshot is the state at exactly its `seq`, and a REST request or a
//! 100,000-call snapshot is rendered outside the lock without stopping publication.
//!
//! Each entry keeps the notification frame that carried the call's current version, the very bytes the
//! resume history holds for it, packed once the packer has been by ([`packing`]); its metadata shares the
//! reducer's strings. Nothing of a call is copied into the store.

pub mod frame_heap;
pub mod packing;

use crate::event::ConnId;
use crate::reduce::{CallState, Topic};
use bytes::Bytes;
use imbl::{OrdMap, OrdSet};
use packing::{Kept, UnpackError};
use std::ops::{Bound, Range};
use std::sync::Arc;

/// Identifies a call resource across reducer shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey {
    /// The reducer shard that owns it.
    pub shard: u16,
    /// Its call number in that shard (sorts in creation order within the shard).
    pub number: u64,
}

impl CallKey {
    /// The key of device number `number` of reducer shard `shard`. Devices take their keys from shard
    /// numbers counted down from `u16::MAX`, which no reducer has (there are at most 64), so that an
    /// outbox coalesces calls and devices by one kind of key and never mistakes one for the other.
    pub fn device(shard: u16, number: u32) -> CallKey {
        CallKey {
            shard: u16::MAX - shard,
            number: u64::from(number),
        }
    }

    /// The key of queue number `number` of reducer shard `shard`: shard numbers counted down from
    /// `u16::MAX - 128`, below every device's, for the same reason.
    pub fn queue(shard: u16, number: u32) -> CallKey {
        CallKey {
            shard: u16::MAX - 128 - shard,
            number: u64::from(number),
        }
    }

    /// The reducer shard that owns the call, device or queue of this key (the inverse of the numbering
    /// of [`CallKey::device`] and [`CallKey::queue`]; shards are at most 64).
    pub fn owner(self) -> u16 {
        if self.shard < 128 {
            self.shard
        } else if self.shard > u16::MAX - 128 {
            u16::MAX - self.shard
        } else {
            u16::MAX - 128 - self.shard
        }
    }

    const MIN: CallKey = CallKey {
        shard: 0,
        number: 0,
    };
    const MAX: CallKey = CallKey {
        shard: u16::MAX,
        number: u64::MAX,
    };
}

/// What filters and indexes need to know about a call, without parsing its document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallMeta {
    /// The call's key.
    pub key: CallKey,
    /// The device's DN.
    pub dn: Arc<str>,
    /// The device's id (UUID).
    pub device_id: Arc<str>,
    /// The call's `id`.
    pub call_id: Arc<str>,
    /// The call's current ConnID.
    pub conn_id: ConnId,
    /// The call's state.
    pub state: CallState,
}

impl CallMeta {
    /// Whether the call is not Released.
    pub fn is_live(&self) -> bool {
        self.state != CallState::Released
    }
}

/// What filters need to know about a device resource (gws.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMeta {
    /// Its key (see [`CallKey::device`]).
    pub key: CallKey,
    /// Its DN.
    pub dn: Arc<str>,
    /// Its id (UUID).
    pub device_id: Arc<str>,
    /// Whether its state differs from a device never heard of: the store keeps only those, and shows the
    /// others from the default state when asked (a DN of an access-file user, a DN with calls).
    pub kept: bool,
}

/// What filters need to know about a queue resource (api.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMeta {
    /// Its key (see [`CallKey::queue`]).
    pub key: CallKey,
    /// Its DN.
    pub dn: Arc<str>,
    /// Its id (UUID).
    pub queue_id: Arc<str>,
}

/// What a notification is about: a call, a device or a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Meta {
    /// A call resource.
    Call(Arc<CallMeta>),
    /// A device resource.
    Device(Arc<DeviceMeta>),
    /// A queue resource.
    Queue(Arc<QueueMeta>),
}

impl Meta {
    /// The resource's key, unique across calls and devices.
    pub fn key(&self) -> CallKey {
        match self {
            Meta::Call(call) => call.key,
            Meta::Device(device) => device.key,
            Meta::Queue(queue) => queue.key,
        }
    }

    /// Its topic.
    pub fn topic(&self) -> Topic {
        match self {
            Meta::Call(_) => Topic::Calls,
            Meta::Device(_) => Topic::Devices,
            Meta::Queue(_) => Topic::Queues,
        }
    }

    /// The DN of the device it is about or belongs to, or of the queue.
    pub fn dn(&self) -> &Arc<str> {
        match self {
            Meta::Call(call) => &call.dn,
            Meta::Device(device) => &device.dn,
            Meta::Queue(queue) => &queue.dn,
        }
    }

    /// The id of that device, or of the queue.
    pub fn device_id(&self) -> &Arc<str> {
        match self {
            Meta::Call(call) => &call.device_id,
            Meta::Device(device) => &device.device_id,
            Meta::Queue(queue) => &queue.queue_id,
        }
    }
}

/// One stored device: its metadata and the notification frame that carried its current version.
pub type StoredDevice = StoredDoc<DeviceMeta>;
/// One stored queue, the same way.
pub type StoredQueue = StoredDoc<QueueMeta>;

/// One stored device or queue: its metadata and the notification frame that carried its current version.
#[derive(Debug)]
pub struct StoredDoc<M> {
    /// Metadata for filters.
    pub meta: Arc<M>,
    /// The position of the notification that carried this version.
    pub seq: u64,
    /// That notification's frame (device frames stay plain: they are few and rarely change).
    pub frame: Bytes,
    /// Where the device resource lies in the frame.
    pub doc: Range<u32>,
}

// Not derived: a derive would ask `M: Clone` of the metadata behind the `Arc`.
impl<M> Clone for StoredDoc<M> {
    fn clone(&self) -> Self {
        Self {
            meta: Arc::clone(&self.meta),
            seq: self.seq,
            frame: self.frame.clone(),
            doc: self.doc.clone(),
        }
    }
}

impl<M> StoredDoc<M> {
    /// A resource as published at `seq` in `frame`, its document at `doc`.
    pub fn new(meta: Arc<M>, seq: u64, frame: Bytes, doc: Range<usize>) -> Self {
        let doc = u32::try_from(doc.start).unwrap_or(0)..u32::try_from(doc.end).unwrap_or(0);
        Self {
            meta,
            seq,
            frame,
            doc,
        }
    }

    /// The resource, compact JSON (empty when the range is broken: a bug, never input).
    pub fn json(&self) -> &str {
        let range = self.doc.start as usize..self.doc.end as usize;
        self.frame
            .get(range)
            .and_then(|doc| std::str::from_utf8(doc).ok())
            .unwrap_or("")
    }
}

/// One stored call: its metadata and its current document.
#[derive(Debug, Clone)]
pub struct StoredCall {
    /// Metadata for filters.
    pub meta: Arc<CallMeta>,
    /// The position of the notification that carried this version.
    pub seq: u64,
    /// That notification's frame.
    pub frame: Kept,
    /// Where the call resource lies in the frame.
    pub call: Range<u32>,
}

impl StoredCall {
    /// A call as published at `seq` in `frame`, its resource at `call`.
    pub fn new(meta: Arc<CallMeta>, seq: u64, frame: Bytes, call: Range<usize>) -> Self {
        // Frames are far below 4 GiB (ingest lines are bounded); a range that did not fit would be a bug
        // and would show as an empty document.
        let call = u32::try_from(call.start).unwrap_or(0)..u32::try_from(call.end).unwrap_or(0);
        Self {
            meta,
            seq,
            frame: Kept::Plain(frame),
            call,
        }
    }

    /// The call resource, compact JSON.
    pub fn json(&self) -> Result<Bytes, UnpackError> {
        let frame = self.frame.plain()?;
        let range = self.call.start as usize..self.call.end as usize;
        if range.end > frame.len() || range.start > range.end {
            return Err(UnpackError::new("the call lies outside its frame"));
        }
        Ok(frame.slice(range))
    }

    /// The call resource's length in bytes.
    pub fn json_len(&self) -> usize {
        self.call.len()
    }
}

/// Appends the documents of `calls` to `out`, separated by commas. A call whose packed frame does not
/// unpack (a fault of this process, never of its input) is logged, naming `reader`, and left out rather
/// than the whole reply failed.
pub fn push_documents<'a>(
    out: &mut String,
    calls: impl IntoIterator<Item = &'a StoredCall>,
    reader: &str,
) {
    let mut first = true;
    for call in calls {
        let json = match call.json() {
            Ok(json) => json,
            Err(error) => {
                tracing::error!(call = %call.meta.call_id, "{reader}: {error}");
                continue;
            }
        };
        if !first {
            out.push(',');
        }
        first = false;
        // The stored bytes are a slice of a UTF-8 frame.
        out.push_str(std::str::from_utf8(&json).unwrap_or("null"));
    }
}

/// Which index answers a query: the most selective one the query names.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'a> {
    /// Every call.
    All,
    /// The calls at these DNs.
    Dns(&'a [Arc<str>]),
    /// The calls of these devices.
    Devices(&'a [Arc<str>]),
    /// The calls with these ids.
    Calls(&'a [Arc<str>]),
}

/// The calls at one position of the stream. Cloning is constant-time; a clone never changes.
///
/// The device and call-id indexes hold a 64-bit digest of the id, not the id: an integer to compare
/// where a string was (string comparisons were the largest cost of indexing a new call), and 8 bytes an
/// entry. A lookup checks each call it finds against the id itself, so two ids with one digest cost a
/// look at a call, never a wrong answer.
#[derive(Clone, Default)]
pub struct StoreView {
    calls: OrdMap<CallKey, StoredCall>,
    /// (DN, device digest, key): DN filters, and the device listing in DN order, a device's calls
    /// together.
    by_dn: OrdSet<(Arc<str>, u64, CallKey)>,
    /// (device digest, key).
    by_device: OrdSet<(u64, CallKey)>,
    /// (call-id digest, key).
    by_call: OrdSet<(u64, CallKey)>,
    live: usize,
    /// Devices whose state is not the default, by id.
    devices: OrdMap<Arc<str>, StoredDevice>,
    /// Queues, by id (never forgotten: at most [`crate::reduce::MAX_QUEUES`] a shard).
    queues: OrdMap<Arc<str>, StoredQueue>,
}

/// A set of `entries`, inserted in order (each insert then walks the path the last one warmed).
fn sorted_set<T: Ord + Clone>(mut entries: Vec<T>) -> OrdSet<T> {
    entries.sort_unstable();
    entries.into_iter().collect()
}

/// The digest the indexes keep of an id: SipHash with fixed keys, the same in every run, so that the
/// device listing's order is too.
fn digest(id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish()
}

impl StoreView {
    /// Records the newest version of a call.
    pub fn upsert(&mut self, call: StoredCall) {
        let meta = Arc::clone(&call.meta);
        match self.calls.insert(meta.key, call) {
            Some(old) => {
                // A call's device and id never change: only the live count can.
                match (old.meta.is_live(), meta.is_live()) {
                    (true, false) => self.live -= 1,
                    (false, true) => self.live += 1,
                    _ => {}
                }
            }
            None => {
                let device = digest(&meta.device_id);
                self.by_dn.insert((Arc::clone(&meta.dn), device, meta.key));
                self.by_device.insert((device, meta.key));
                self.by_call.insert((digest(&meta.call_id), meta.key));
                if meta.is_live() {
                    self.live += 1;
                }
            }
        }
    }

    /// Adds `calls`, each with a key of its own, as [`StoreView::upsert`] of each would: a recovery hands
    /// over every call it brought back at once. Into an empty store the four indexes are built from
    /// sorted entries on two threads; upserting 177,000 calls one by one was most of a restart's settle.
    pub fn insert_all(&mut self, calls: Vec<StoredCall>) {
        if !self.calls.is_empty() || calls.len() < 1024 {
            calls.into_iter().for_each(|call| self.upsert(call));
            return;
        }
        let mut by_dn = Vec::with_capacity(calls.len());
        let mut by_device = Vec::with_capacity(calls.len());
        let mut by_call = Vec::with_capacity(calls.len());
        for call in &calls {
            let meta = &call.meta;
            let device = digest(&meta.device_id);
            by_dn.push((Arc::clone(&meta.dn), device, meta.key));
            by_device.push((device, meta.key));
            by_call.push((digest(&meta.call_id), meta.key));
            self.live += usize::from(meta.is_live());
        }
        let mut calls: Vec<(CallKey, StoredCall)> = calls
            .into_iter()
            .map(|call| (call.meta.key, call))
            .collect();
        std::thread::scope(|scope| {
            let side = scope.spawn(|| (sorted_set(by_dn), sorted_set(by_device)));
            by_call.sort_unstable();
            self.by_call = by_call.into_iter().collect();
            calls.sort_unstable_by_key(|(key, _)| *key);
            self.calls = calls.into_iter().collect();
            let (dn, device) = side
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            self.by_dn = dn;
            self.by_device = device;
        });
    }

    /// Records the newest version of a device: kept while its state is not the default, forgotten when it
    /// is (it is then what the default shows).
    pub fn upsert_device(&mut self, device: StoredDevice) {
        if device.meta.kept {
            self.devices
                .insert(Arc::clone(&device.meta.device_id), device);
        } else {
            self.devices.remove(&device.meta.device_id);
        }
    }

    /// Records the newest version of a queue.
    pub fn upsert_queue(&mut self, queue: StoredQueue) {
        self.queues.insert(Arc::clone(&queue.meta.queue_id), queue);
    }

    /// The queue with id `queue_id`.
    pub fn queue(&self, queue_id: &str) -> Option<&StoredQueue> {
        self.queues.get(queue_id)
    }

    /// Every queue, in id order, starting after `after`.
    pub fn queues_after(&self, after: Option<Arc<str>>) -> impl Iterator<Item = &StoredQueue> {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.queues
            .range((start, Bound::Unbounded))
            .map(|(_, queue)| queue)
    }

    /// The device with id `device_id`, if its state is not the default.
    pub fn device(&self, device_id: &str) -> Option<&StoredDevice> {
        self.devices.get(device_id)
    }

    /// Every device whose state is not the default, in id order, starting after `after`.
    pub fn devices_after(&self, after: Option<Arc<str>>) -> impl Iterator<Item = &StoredDevice> {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.devices
            .range((start, Bound::Unbounded))
            .map(|(_, device)| device)
    }

    /// How many devices with a state of their own are held.
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// Keeps `frame` (the packed form of the notification at `seq`) for the call with `key`, if that
    /// notification still carries its current version.
    pub fn keep_packed(&mut self, key: CallKey, seq: u64, frame: &Kept) -> bool {
        match self.calls.get_mut(&key) {
            Some(stored) if stored.seq == seq && stored.frame.is_plain() => {
                stored.frame = frame.clone();
                true
            }
            _ => false,
        }
    }

    /// Forgets a call (its linger time is over).
    pub fn remove(&mut self, key: CallKey) {
        let Some(old) = self.calls.remove(&key) else {
            return;
        };
        let meta = &old.meta;
        let device = digest(&meta.device_id);
        self.by_dn.remove(&(Arc::clone(&meta.dn), device, meta.key));
        self.by_device.remove(&(device, meta.key));
        self.by_call.remove(&(digest(&meta.call_id), meta.key));
        if meta.is_live() {
            self.live -= 1;
        }
    }

    /// How many calls are held (live and lingering).
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// How many calls held are not Released.
    pub fn live(&self) -> usize {
        self.live
    }

    /// The call with `key`.
    pub fn get(&self, key: CallKey) -> Option<&StoredCall> {
        self.calls.get(&key)
    }

    /// Every call in key order (shard, then creation), starting after `after`.
    pub fn iter_after(&self, after: Option<CallKey>) -> impl Iterator<Item = &StoredCall> {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.calls
            .range((start, Bound::Unbounded))
            .map(|(_, call)| call)
    }

    /// The keys of the calls a lookup names, sorted and without repeats. Costs in proportion to the calls
    /// found (plus a logarithm per value), whatever the store holds; [`Lookup::All`] gives every key.
    pub fn keys(&self, lookup: Lookup<'_>) -> Vec<CallKey> {
        let mut keys: Vec<CallKey> = match lookup {
            Lookup::All => return self.calls.keys().copied().collect(),
            Lookup::Dns(dns) => dns
                .iter()
                .flat_map(|dn| {
                    let low = (Arc::clone(dn), 0, CallKey::MIN);
                    let high = (Arc::clone(dn), u64::MAX, CallKey::MAX);
                    self.by_dn.range(low..=high).map(|(_, _, key)| *key)
                })
                .collect(),
            Lookup::Devices(values) => {
                self.by_digest(&self.by_device, values, |meta| &meta.device_id)
            }
            Lookup::Calls(values) => self.by_digest(&self.by_call, values, |meta| &meta.call_id),
        };
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// The keys of the calls whose id (`id` of their metadata) is one of `values`, through `index`.
    fn by_digest(
        &self,
        index: &OrdSet<(u64, CallKey)>,
        values: &[Arc<str>],
        id: impl Fn(&CallMeta) -> &Arc<str>,
    ) -> Vec<CallKey> {
        let id = &id;
        values
            .iter()
            .flat_map(|value| {
                let digest = digest(value);
                index
                    .range((digest, CallKey::MIN)..=(digest, CallKey::MAX))
                    .map(|(_, key)| *key)
                    .filter(move |key| {
                        self.calls
                            .get(key)
                            .is_some_and(|call| **id(&call.meta) == **value)
                    })
            })
            .collect()
    }

    /// The calls a lookup names, in key order: through its index, or every call for [`Lookup::All`].
    pub fn select<'s>(
        &'s self,
        lookup: Lookup<'_>,
    ) -> Box<dyn Iterator<Item = &'s StoredCall> + 's> {
        match lookup {
            Lookup::All => Box::new(self.iter_after(None)),
            lookup => Box::new(
                self.keys(lookup)
                    .into_iter()
                    .filter_map(|key| self.calls.get(&key)),
            ),
        }
    }

    /// The calls of one device, in key order.
    pub fn device_calls(&self, device_id: &str) -> Vec<&StoredCall> {
        let device: Arc<str> = device_id.into();
        self.select(Lookup::Devices(std::slice::from_ref(&device)))
            .collect()
    }

    /// Every call grouped by device, devices in DN order (devices at one DN, on different T-Servers, in
    /// the order of their digests), calls in key order.
    pub fn by_device(&self) -> impl Iterator<Item = &StoredCall> {
        self.by_dn
            .iter()
            .filter_map(|(_, _, key)| self.calls.get(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_names_the_shard_that_owns_it() {
        for shard in 0..64u16 {
            for key in [
                CallKey { shard, number: 7 },
                CallKey::device(shard, 7),
                CallKey::queue(shard, 7),
            ] {
                assert_eq!(key.owner(), shard, "{key:?}");
            }
        }
    }

    fn call(number: u64, dn: &str, id: &str, state: CallState) -> StoredCall {
        StoredCall {
            meta: Arc::new(CallMeta {
                key: CallKey { shard: 0, number },
                dn: dn.into(),
                device_id: format!("dev-{dn}").into(),
                call_id: id.into(),
                conn_id: ConnId(number),
                state,
            }),
            seq: number,
            frame: Kept::Plain(Bytes::from(format!("{{\"id\":\"{id}\",\"n\":{number}}}"))),
            call: 0..0,
        }
    }

    fn numbers(keys: Vec<CallKey>) -> Vec<u64> {
        keys.into_iter().map(|key| key.number).collect()
    }

    #[test]
    fn calls_inserted_all_at_once_are_found_as_if_upserted_one_by_one() {
        // Past the bulk threshold, in no particular order, spread over shards, DNs, devices and states.
        let calls: Vec<StoredCall> = (0..5_000u64)
            .map(|i| {
                let number = (i * 7_919) % 5_000;
                let state = if number % 3 == 0 {
                    CallState::Released
                } else {
                    CallState::Established
                };
                let mut call = call(
                    number,
                    &format!("70{}", number % 37),
                    &format!("id-{number}"),
                    state,
                );
                Arc::make_mut(&mut call.meta).key.shard = (number % 4) as u16;
                call
            })
            .collect();
        let mut one_by_one = StoreView::default();
        calls
            .iter()
            .cloned()
            .for_each(|call| one_by_one.upsert(call));
        let mut at_once = StoreView::default();
        at_once.insert_all(calls);
        assert_eq!(at_once.len(), 5_000);
        assert_eq!(at_once.live(), one_by_one.live());
        let dns: Vec<Arc<str>> = vec!["700".into(), "7036".into()];
        let devices: Vec<Arc<str>> = vec!["dev-705".into()];
        let ids: Vec<Arc<str>> = vec!["id-17".into(), "id-4999".into(), "id-none".into()];
        for lookup in [
            Lookup::All,
            Lookup::Dns(&dns),
            Lookup::Devices(&devices),
            Lookup::Calls(&ids),
        ] {
            assert_eq!(at_once.keys(lookup), one_by_one.keys(lookup), "{lookup:?}");
        }
        let listed = |view: &StoreView| -> Vec<(CallKey, u64)> {
            view.iter_after(None)
                .map(|call| (call.meta.key, call.seq))
                .collect()
        };
        assert_eq!(listed(&at_once), listed(&one_by_one));
        // A store built at once goes on like any other.
        at_once.remove(CallKey {
            shard: 1,
            number: 1,
        });
        one_by_one.remove(CallKey {
            shard: 1,
            number: 1,
        });
        assert_eq!(
            at_once.keys(Lookup::Dns(&dns)),
            one_by_one.keys(Lookup::Dns(&dns))
        );
        assert_eq!(at_once.len(), 4_999);
    }

    #[test]
    fn lookups_find_exactly_their_calls() {
        let mut store = StoreView::default();
        store.upsert(call(1, "7001", "A", CallState::Ringing));
        store.upsert(call(2, "7002", "B", CallState::Ringing));
        store.upsert(call(3, "7001", "C", CallState::Dialing));
        store.upsert(call(4, "70011", "A", CallState::Ringing));
        let dn = |d: &str| -> Arc<str> { d.into() };
        assert_eq!(numbers(store.keys(Lookup::Dns(&[dn("7001")]))), [1, 3]);
        assert_eq!(
            numbers(store.keys(Lookup::Dns(&[dn("700")]))),
            [] as [u64; 0]
        );
        assert_eq!(
            numbers(store.keys(Lookup::Dns(&[dn("70011"), dn("7002"), dn("70011")]))),
            [2, 4]
        );
        assert_eq!(numbers(store.keys(Lookup::Devices(&[dn("dev-7002")]))), [2]);
        assert_eq!(numbers(store.keys(Lookup::Calls(&[dn("A")]))), [1, 4]);
        assert_eq!(numbers(store.keys(Lookup::All)), [1, 2, 3, 4]);
        let listed: Vec<u64> = store.by_device().map(|c| c.meta.key.number).collect();
        assert_eq!(listed, [1, 3, 4, 2], "by DN, then key");
        assert_eq!(store.device_calls("dev-7001").len(), 2);
    }

    #[test]
    fn live_counts_follow_states_and_removals() {
        let mut store = StoreView::default();
        store.upsert(call(1, "7001", "A", CallState::Ringing));
        store.upsert(call(2, "7002", "B", CallState::Ringing));
        assert_eq!((store.len(), store.live()), (2, 2));
        store.upsert(call(1, "7001", "A", CallState::Released));
        assert_eq!((store.len(), store.live()), (2, 1));
        // The store counts whatever it is given, even a version that is live again.
        store.upsert(call(1, "7001", "A", CallState::Held));
        assert_eq!((store.len(), store.live()), (2, 2));
        store.upsert(call(1, "7001", "A", CallState::Released));
        assert!(!store.is_empty());
        store.remove(CallKey {
            shard: 0,
            number: 1,
        });
        store.remove(CallKey {
            shard: 0,
            number: 2,
        });
        store.remove(CallKey {
            shard: 0,
            number: 2,
        });
        assert_eq!((store.len(), store.live()), (0, 0));
        assert!(store.is_empty());
        assert!(store.keys(Lookup::Calls(&["A".into()])).is_empty());
        assert!(store.by_device().next().is_none());
    }

    #[test]
    fn a_view_stays_as_it_was_taken() {
        let mut store = StoreView::default();
        store.upsert(call(1, "7001", "A", CallState::Ringing));
        let before = store.clone();
        store.upsert(call(1, "7001", "A", CallState::Established));
        store.upsert(call(2, "7002", "B", CallState::Ringing));
        store.remove(CallKey {
            shard: 0,
            number: 1,
        });
        assert_eq!(before.len(), 1);
        let kept = before
            .get(CallKey {
                shard: 0,
                number: 1,
            })
            .expect("kept");
        assert_eq!(kept.meta.state, CallState::Ringing);
        assert_eq!(
            numbers(before.keys(Lookup::Dns(&["7002".into()]))),
            [] as [u64; 0]
        );
        let after: Vec<u64> = store.iter_after(None).map(|c| c.meta.key.number).collect();
        assert_eq!(after, [2]);
        let later: Vec<u64> = before
            .iter_after(Some(CallKey {
                shard: 0,
                number: 1,
            }))
            .map(|c| c.meta.key.number)
            .collect();
        assert!(later.is_empty());
    }
}
