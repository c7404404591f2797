//! The store: the current version of every call the gateway holds, readable by REST and WebSocket
//! snapshots without stopping the reducers.
//!
//! Only the publisher writes it, in notification order, under the fanout lock; readers use the concurrent
//! map directly. Each entry keeps the call document as shared bytes (a slice of the notification frame
//! that carried it), so a read copies nothing until the response is assembled.

use crate::event::ConnId;
use crate::reduce::CallState;
use bytes::Bytes;
use dashmap::DashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Identifies a call resource across reducer shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey {
    /// The reducer shard that owns it.
    pub shard: u16,
    /// Its call number in that shard (sorts in creation order within the shard).
    pub number: u64,
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

/// One stored call: its metadata and its current document.
#[derive(Debug, Clone)]
pub struct StoredCall {
    /// Metadata for filters.
    pub meta: Arc<CallMeta>,
    /// The call resource, compact JSON.
    pub json: Bytes,
}

/// The live and lingering calls.
#[derive(Debug, Default)]
pub struct Store {
    calls: DashMap<CallKey, StoredCall>,
    /// Calls held that are not Released, kept as calls change so that counting them reads no call.
    live: AtomicUsize,
}

fn is_live(call: &StoredCall) -> bool {
    call.meta.state != CallState::Released
}

impl Store {
    /// Records the newest version of a call.
    pub fn upsert(&self, call: StoredCall) {
        let live = is_live(&call);
        let was_live = self
            .calls
            .insert(call.meta.key, call)
            .is_some_and(|old| is_live(&old));
        match (was_live, live) {
            (false, true) => self.live.fetch_add(1, Ordering::Relaxed),
            (true, false) => self.live.fetch_sub(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    /// Forgets a call (its linger time is over).
    pub fn remove(&self, key: CallKey) {
        if self
            .calls
            .remove(&key)
            .is_some_and(|(_, old)| is_live(&old))
        {
            self.live.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// How many calls held are not Released.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// How many calls are held.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Every call for which `keep` is true, in a stable order (shard, then creation).
    pub fn select(&self, mut keep: impl FnMut(&CallMeta) -> bool) -> Vec<StoredCall> {
        // Each guard is dropped before the next shard is read: no lock is held across iterations' work.
        let mut found: Vec<StoredCall> = self
            .calls
            .iter()
            .filter(|entry| keep(&entry.value().meta))
            .map(|entry| entry.value().clone())
            .collect();
        found.sort_unstable_by_key(|call| call.meta.key);
        found
    }
}
