//! Subscriptions: who is subscribed to what, indexed so that a notification costs in proportion to its
//! recipients, not to the number of subscribers.
//!
//! Each connection (a WebSocket now; a CometD session or a feed next) has one outbox and up to
//! [`MAX_SUBSCRIPTIONS_PER_CONNECTION`] named subscriptions, each a [`Matcher`] (its filter and its
//! scope). A matcher is filed under its most selective member (DN, device, call id), else its scope's
//! devices; one that matches every call is kept in a plain list that needs no lookup at all.
//! These are plain data: the stream owns them and calls them under its lock.

pub mod filter;

use crate::delivery::Outbox;
use crate::reduce::Topic;
use crate::store::Meta;
pub use filter::{
    CallFilter, FilterError, IndexKeys, MAX_FILTER_VALUES, MAX_SCOPE_KEYS, Matcher, Scope, Topics,
};
use hashbrown::HashMap;
use std::sync::Arc;

/// The most subscriptions one connection may hold.
pub const MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 64;

/// A connection's number, unique for the gateway's run.
pub type ConnectionId = u64;

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

/// The topics, each with its place in per-topic arrays.
const TOPICS: [Topic; 3] = [Topic::Calls, Topic::Devices, Topic::Queues];

fn topic_index(topic: Topic) -> usize {
    match topic {
        Topic::Calls => 0,
        Topic::Devices => 1,
        Topic::Queues => 2,
    }
}

struct Connection {
    outbox: Arc<Outbox>,
    subscriptions: HashMap<Box<str>, Arc<Matcher>>,
    /// Per topic: one of its subscriptions matches every notification of the topic.
    gets_everything: [bool; TOPICS.len()],
}

/// Subscribers by index key; values count how many of the connection's subscriptions use the key.
type Filed = HashMap<Arc<str>, HashMap<ConnectionId, usize>>;

/// Every connection and subscription, and the indexes that find a notification's recipients.
#[derive(Default)]
pub struct Subscriptions {
    connections: HashMap<ConnectionId, Connection>,
    next_connection: ConnectionId,
    subscriptions: usize,
    /// Per topic, connections that get every notification of it (wallboards, analytics), in connection
    /// order. Delivering to them needs no lookup and no match.
    everything: [Vec<(ConnectionId, Arc<Outbox>)>; TOPICS.len()],
    broad: HashMap<ConnectionId, usize>,
    by_dn: Filed,
    by_device: Filed,
    by_call: Filed,
    candidates: Vec<ConnectionId>,
}

impl Subscriptions {
    /// Registers a connection with its outbox.
    pub fn connect(&mut self, outbox: Arc<Outbox>) -> ConnectionId {
        let id = self.next_connection;
        self.next_connection += 1;
        self.connections.insert(
            id,
            Connection {
                outbox,
                subscriptions: HashMap::new(),
                gets_everything: [false; TOPICS.len()],
            },
        );
        id
    }

    /// Unregisters a connection and its subscriptions; returns its outbox.
    pub fn disconnect(&mut self, connection: ConnectionId) -> Option<Arc<Outbox>> {
        let conn = self.connections.remove(&connection)?;
        for matcher in conn.subscriptions.values() {
            self.file(connection, matcher, false);
        }
        self.subscriptions -= conn.subscriptions.len();
        self.refresh_everything(connection);
        Some(conn.outbox)
    }

    /// Adds a subscription named `sub`; returns the connection's outbox. `None` for an unknown
    /// connection (one that has just disconnected).
    pub fn subscribe(
        &mut self,
        connection: ConnectionId,
        sub: &str,
        matcher: Arc<Matcher>,
    ) -> Result<Option<Arc<Outbox>>, SubscribeError> {
        if sub.is_empty() || sub.chars().count() > 64 {
            return Err(SubscribeError::BadName);
        }
        let Some(conn) = self.connections.get_mut(&connection) else {
            return Ok(None);
        };
        if conn.subscriptions.contains_key(sub) {
            return Err(SubscribeError::Duplicate(sub.to_owned()));
        }
        if conn.subscriptions.len() >= MAX_SUBSCRIPTIONS_PER_CONNECTION {
            return Err(SubscribeError::TooMany);
        }
        conn.subscriptions.insert(sub.into(), Arc::clone(&matcher));
        let outbox = Arc::clone(&conn.outbox);
        self.subscriptions += 1;
        self.file(connection, &matcher, true);
        self.refresh_everything(connection);
        Ok(Some(outbox))
    }

    /// Removes the subscription named `sub`.
    pub fn unsubscribe(
        &mut self,
        connection: ConnectionId,
        sub: &str,
    ) -> Result<(), SubscribeError> {
        let matcher = self
            .connections
            .get_mut(&connection)
            .and_then(|conn| conn.subscriptions.remove(sub))
            .ok_or_else(|| SubscribeError::Unknown(sub.to_owned()))?;
        self.subscriptions -= 1;
        self.file(connection, &matcher, false);
        self.refresh_everything(connection);
        Ok(())
    }

    /// Gives every subscription of `connection` the scope `scope`, refiling each under its new keys.
    pub fn rescope(&mut self, connection: ConnectionId, scope: &Scope) {
        let Some(conn) = self.connections.get(&connection) else {
            return;
        };
        let old: Vec<(Box<str>, Arc<Matcher>)> = conn
            .subscriptions
            .iter()
            .map(|(sub, matcher)| (sub.clone(), Arc::clone(matcher)))
            .collect();
        for (sub, matcher) in old {
            let rescoped = Arc::new(matcher.rescoped(scope.clone()));
            self.file(connection, &matcher, false);
            self.file(connection, &rescoped, true);
            if let Some(conn) = self.connections.get_mut(&connection) {
                conn.subscriptions.insert(sub, rescoped);
            }
        }
        self.refresh_everything(connection);
    }

    /// Connections registered.
    pub fn connections(&self) -> usize {
        self.connections.len()
    }

    /// Subscriptions held.
    pub fn subscriptions(&self) -> usize {
        self.subscriptions
    }

    /// Calls `deliver` once for each connection with a subscription that matches the notification about
    /// `meta`.
    pub fn recipients(&mut self, meta: &Meta, mut deliver: impl FnMut(&Arc<Outbox>)) {
        let topic = topic_index(meta.topic());
        for (_, outbox) in &self.everything[topic] {
            deliver(outbox);
        }
        let candidates = &mut self.candidates;
        candidates.clear();
        candidates.extend(self.broad.keys());
        for (filed, key) in [
            (&self.by_dn, meta.dn()),
            (&self.by_device, meta.device_id()),
        ] {
            if let Some(connections) = filed.get(key) {
                candidates.extend(connections.keys());
            }
        }
        if let Meta::Call(call) = meta
            && let Some(connections) = self.by_call.get(&call.call_id)
        {
            candidates.extend(connections.keys());
        }
        candidates.sort_unstable();
        candidates.dedup();
        for connection in candidates.iter() {
            let Some(conn) = self.connections.get(connection) else {
                continue;
            };
            if !conn.gets_everything[topic]
                && conn.subscriptions.values().any(|m| m.matches_meta(meta))
            {
                deliver(&conn.outbox);
            }
        }
    }

    /// Files `matcher` of `connection` under its keys (`add`), or takes it out.
    fn file(&mut self, connection: ConnectionId, matcher: &Matcher, add: bool) {
        fn bump(map: &mut HashMap<ConnectionId, usize>, connection: ConnectionId, add: bool) {
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
        let (filed, keys) = match matcher.index_keys() {
            // Kept in `everything` instead (see `refresh_everything`).
            IndexKeys::Everything => return,
            IndexKeys::Broad => return bump(&mut self.broad, connection, add),
            IndexKeys::Dn(keys) => (&mut self.by_dn, keys),
            IndexKeys::Device(keys) => (&mut self.by_device, keys),
            IndexKeys::Call(keys) => (&mut self.by_call, keys),
        };
        // The keys are distinct: a matcher deduplicates its values.
        for key in keys {
            let connections = filed.entry(Arc::clone(key)).or_default();
            bump(connections, connection, add);
            if connections.is_empty() {
                filed.remove(key);
            }
        }
    }

    /// Puts `connection` in or out of each topic's every-notification list after its subscriptions
    /// changed.
    fn refresh_everything(&mut self, connection: ConnectionId) {
        for topic in TOPICS {
            let index = topic_index(topic);
            let member = self.connections.get_mut(&connection).map(|conn| {
                conn.gets_everything[index] =
                    conn.subscriptions.values().any(|m| m.everything(topic));
                (conn.gets_everything[index], Arc::clone(&conn.outbox))
            });
            let everything = &mut self.everything[index];
            let position = everything.binary_search_by_key(&connection, |(id, _)| *id);
            match (member, position) {
                (Some((true, outbox)), Err(at)) => everything.insert(at, (connection, outbox)),
                (Some((false, _)) | None, Ok(at)) => {
                    everything.remove(at);
                }
                _ => {}
            }
        }
    }
}
