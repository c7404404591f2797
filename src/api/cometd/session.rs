//! CometD sessions: each one a connection of the shared stream (its outbox, bounds and coalescing), the
//! channels it subscribed to, what it has sent and not had acknowledged, and the table that finds them.
//!
//! Bounds (gws.md): at most [`MAX_SESSIONS`] sessions; a user's [`MAX_SESSIONS_PER_USER`]+1st handshake
//! ends that user's least recently active session (a browser reloaded a few times keeps working, and its
//! old sessions would expire anyway); [`MAX_CHANNELS`] subscriptions a session; a session's queue is the
//! outbox with [`QUEUE_LIMITS`]: coalesced to the newest message of each call and device past 1,000
//! messages or 1 MiB, the session ended past 4,000 or 4 MiB.

use super::channel::Channel;
use crate::access::{Principal, User};
use crate::delivery::{DrainError, Frame, Outbox, OutboxLimits};
use crate::stream::Stream;
use crate::subscriptions::{CallFilter, ConnectionId, Matcher, Scope, Topics};
use bytes::Bytes;
use hashbrown::{HashMap, HashSet};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The most sessions at once.
pub const MAX_SESSIONS: usize = 20_000;
/// The most sessions of one user.
pub const MAX_SESSIONS_PER_USER: usize = 8;
/// The most channel subscriptions of one session.
pub const MAX_CHANNELS: usize = 32;
/// The most messages in one connect reply.
pub const MESSAGES_PER_REPLY: usize = 200;
/// A session's queue: coalesced past 1,000 messages or 1 MiB, ended past four times that (gws.md).
pub const QUEUE_LIMITS: OutboxLimits = OutboxLimits {
    soft: 1_000,
    soft_bytes: 1024 * 1024,
    hard: 4_000,
    hard_bytes: 4 * 1024 * 1024,
};
/// `maxInterval` of the handshake's advice: a session with no connect for this long is removed.
pub const MAX_INTERVAL: Duration = Duration::from_secs(10);

/// Why a session cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Unknown, expired, disconnected, or ended for falling too far behind.
    #[error("402::session_unknown")]
    Unknown,
    /// The gateway holds [`MAX_SESSIONS`] sessions.
    #[error("503::too_many_sessions")]
    TooMany,
    /// Its queue went past four times its bound: the session has just been ended for it.
    #[error("402::session_unknown")]
    Overflowed,
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeRefusal {
    /// Not a channel name.
    #[error("403::subscription_invalid")]
    Invalid,
    /// A channel this principal may not read.
    #[error("403::subscribe_denied")]
    Denied,
    /// The session has [`MAX_CHANNELS`] subscriptions.
    #[error("403::too_many_subscriptions")]
    TooMany,
}

/// What a session has sent in connect replies and the client has not acknowledged (the ack extension).
#[derive(Debug, Default)]
struct Acks {
    /// The last batch number given.
    batch: u64,
    /// The messages of the last batch, sent again until acknowledged.
    unacked: Vec<Bytes>,
}

#[derive(Debug)]
struct SessionState {
    /// Channel subscriptions, as the client named them.
    channels: Vec<(String, Channel)>,
    /// Messages converted from the outbox, waiting for a connect reply.
    pending: VecDeque<Bytes>,
    /// Set when the ack extension was negotiated.
    acks: Option<Acks>,
    /// The last connect or handshake, for expiry.
    last_active: Instant,
    /// Connects held right now.
    holding: usize,
    /// Ended: its next request gets `402::session_unknown`.
    ended: bool,
    /// The gate's generation the subscriptions were made under (a reload changes scopes).
    generation: u64,
}

/// One CometD session.
pub struct Session {
    /// The `clientId`.
    pub id: Arc<str>,
    /// Its user (none in open mode).
    pub user: Option<Arc<User>>,
    /// The ids of its user's own devices (the `/v2/me` side), as the access file says (remade at a reload).
    own: Mutex<Arc<HashSet<String>>>,
    /// Its principal's scope (the `/callgate` side), remade at a reload.
    scope: Mutex<Scope>,
    connection: ConnectionId,
    outbox: Arc<Outbox>,
    /// Bumped by every connect: a held connect answers as soon as a newer one arrives.
    connects: AtomicU64,
    superseded: Arc<Notify>,
    state: Mutex<SessionState>,
}

/// Turns a stream frame into a session's messages, given the topics of its `/v2/me` and `/callgate`
/// channels.
pub type Convert<'a> = dyn FnMut(&[u8], Topics, Topics, &mut Vec<Bytes>) + 'a;

/// The messages of one connect reply and its ack batch number (when negotiated).
#[derive(Debug, Default)]
pub struct Delivery {
    /// Messages, each a JSON object.
    pub messages: Vec<Bytes>,
    /// The batch number for `ext.ack`.
    pub ack: Option<u64>,
}

impl Session {
    fn lock(&self) -> std::sync::MutexGuard<'_, SessionState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Its principal's scope now.
    pub fn scope(&self) -> Scope {
        self.scope
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The ids of the user's own devices.
    pub fn own(&self) -> Arc<HashSet<String>> {
        Arc::clone(
            &self
                .own
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// The outbox the stream delivers to.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// The last ack batch number given, when the ack extension was negotiated: what a connect reply
    /// without messages carries.
    pub fn batch(&self) -> Option<u64> {
        self.lock().acks.as_ref().map(|acks| acks.batch)
    }

    /// Starts a connect: marks the session active and answers any connect still held. Returns the
    /// connect's generation, for [`Session::superseded`].
    pub fn begin_connect(&self) -> Result<u64, SessionError> {
        let mut state = self.lock();
        if state.ended {
            return Err(SessionError::Unknown);
        }
        state.last_active = Instant::now();
        state.holding += 1;
        drop(state);
        let generation = self.connects.fetch_add(1, Ordering::AcqRel) + 1;
        self.superseded.notify_waiters();
        Ok(generation)
    }

    /// Ends a connect begun with [`Session::begin_connect`].
    pub fn end_connect(&self) {
        let mut state = self.lock();
        state.holding = state.holding.saturating_sub(1);
        state.last_active = Instant::now();
    }

    /// Whether a newer connect than `generation` has arrived.
    pub fn is_superseded(&self, generation: u64) -> bool {
        self.connects.load(Ordering::Acquire) != generation
    }

    /// Completes when a newer connect arrives, the session ends, or it is woken ([`Session::wake`]);
    /// `enable` it before checking
    /// [`Session::is_superseded`], so that nothing slips between the check and the wait.
    pub fn superseded(&self) -> tokio::sync::futures::Notified<'_> {
        self.superseded.notified()
    }

    /// Wakes its held connects to check again whether they should answer (timed out, or shutting down).
    pub fn wake(&self) {
        self.superseded.notify_waiters();
    }

    /// [`Session::superseded`], owning what it waits on (for a future kept beside the session).
    pub fn superseded_owned(&self) -> tokio::sync::futures::OwnedNotified {
        Arc::clone(&self.superseded).notified_owned()
    }

    /// Takes up to [`MESSAGES_PER_REPLY`] messages for a connect reply: those of an unacknowledged batch
    /// first, then new ones. `acked` is the batch the connect acknowledges. `convert` turns a stream
    /// frame into the session's messages, given the topics its `/v2/me` and `/callgate` channels cover
    /// now (a subscription made while a connect is held counts at once). Fails when the session fell too
    /// far behind (it is then ended).
    pub fn take(
        &self,
        acked: Option<u64>,
        convert: &mut Convert<'_>,
    ) -> Result<Delivery, SessionError> {
        let mut state = self.lock();
        if state.ended {
            return Err(SessionError::Unknown);
        }
        let mut messages = Vec::new();
        if let Some(acks) = &mut state.acks {
            if acked.is_some_and(|batch| batch >= acks.batch) {
                acks.unacked.clear();
            }
            messages.append(&mut acks.unacked);
        }
        // Only as many frames as a reply holds leave the outbox, so the rest stay under its bounds and
        // coalescing (a frame may make two messages: they wait in `pending`, at most one reply's worth).
        if state.pending.len() < MESSAGES_PER_REPLY {
            let mut frames = Vec::new();
            let room = MESSAGES_PER_REPLY - state.pending.len();
            if let Err(DrainError::Overflowed | DrainError::RenderFailed) =
                self.outbox.drain_up_to(room, &mut frames)
            {
                return Err(SessionError::Overflowed);
            }
            let (me, callgate) = sides(&state.channels);
            let mut converted = Vec::new();
            for frame in frames {
                if let Frame::Text(bytes) = frame {
                    convert(&bytes, me, callgate, &mut converted);
                }
            }
            state.pending.extend(converted);
        }
        while messages.len() < MESSAGES_PER_REPLY {
            let Some(message) = state.pending.pop_front() else {
                break;
            };
            messages.push(message);
        }
        let ack = state.acks.as_mut().map(|acks| {
            if !messages.is_empty() {
                acks.batch += 1;
                acks.unacked = messages.clone();
            }
            acks.batch
        });
        Ok(Delivery { messages, ack })
    }

    /// Queues `message` (a Bayeux message of its own, not a stream notification) behind everything
    /// produced before it, and wakes a held connect. Refused (false) when the session is ended or its
    /// queue is past its bound (the session then ends at its next connect).
    pub fn queue(&self, message: Bytes) -> bool {
        if self.lock().ended {
            return false;
        }
        self.outbox.push_control(message) == crate::delivery::Pushed::Queued
    }

    /// The gate generation the subscriptions were made under.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }
}

/// Every session, by `clientId`.
pub struct Sessions {
    stream: Arc<Stream>,
    table: Mutex<HashMap<Arc<str>, Arc<Session>>>,
}

impl Sessions {
    /// No session yet; sessions will be connections of `stream`.
    pub fn new(stream: Arc<Stream>) -> Self {
        Self {
            stream,
            table: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<Session>>> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many sessions there are.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// A new session for `principal`, with the ack extension when `acks`, under gate generation
    /// `generation`.
    pub fn open(
        &self,
        principal: &Principal,
        acks: bool,
        generation: u64,
    ) -> Result<Arc<Session>, SessionError> {
        let (connection, outbox) = self.stream.connect_with(QUEUE_LIMITS);
        let session = Arc::new(Session {
            id: new_client_id().into(),
            own: Mutex::new(Arc::new(own_devices(principal.user.as_ref()))),
            scope: Mutex::new(principal.scope.clone()),
            user: principal.user.clone(),
            connection,
            outbox,
            connects: AtomicU64::new(0),
            superseded: Arc::new(Notify::new()),
            state: Mutex::new(SessionState {
                channels: Vec::new(),
                pending: VecDeque::new(),
                acks: acks.then(Acks::default),
                last_active: Instant::now(),
                holding: 0,
                ended: false,
                generation,
            }),
        });
        let evicted = {
            let mut table = self.lock();
            if table.len() >= MAX_SESSIONS {
                drop(table);
                self.stream.disconnect(connection);
                return Err(SessionError::TooMany);
            }
            let evicted = session
                .user
                .as_ref()
                .and_then(|user| oldest_beyond_limit(&table, &user.username));
            if let Some(old) = &evicted {
                table.remove(&old.id);
            }
            table.insert(Arc::clone(&session.id), Arc::clone(&session));
            evicted
        };
        if let Some(old) = evicted {
            self.end(&old, "user_limit");
        }
        metrics::gauge!("callgate_cometd_sessions").set(self.len() as f64);
        Ok(session)
    }

    /// The session `client_id`, if it is live.
    pub fn get(&self, client_id: &str) -> Option<Arc<Session>> {
        self.lock().get(client_id).cloned()
    }

    /// The sessions of user `username`.
    pub fn of_user(&self, username: &str) -> Vec<Arc<Session>> {
        self.lock()
            .values()
            .filter(|s| s.user.as_ref().is_some_and(|u| u.username == username))
            .cloned()
            .collect()
    }

    /// Ends a session: out of the table and the stream (`/meta/disconnect`, expiry, eviction).
    pub fn remove(&self, session: &Session, reason: &'static str) {
        self.lock().remove(&session.id);
        self.end(session, reason);
        metrics::gauge!("callgate_cometd_sessions").set(self.len() as f64);
    }

    fn end(&self, session: &Session, reason: &'static str) {
        session.lock().ended = true;
        session.superseded.notify_waiters();
        self.stream.disconnect(session.connection);
        metrics::counter!("callgate_cometd_sessions_ended_total", "reason" => reason).increment(1);
    }

    /// Whether `session` may subscribe to all of `names` for `principal`: each a channel it may read, and
    /// no more than [`MAX_CHANNELS`] in all.
    pub fn check(
        &self,
        session: &Session,
        principal: &Principal,
        names: &[&str],
    ) -> Result<(), SubscribeRefusal> {
        for name in names {
            Channel::parse(name)?.allowed(principal)?;
        }
        let state = session.lock();
        let new = names
            .iter()
            .filter(|name| !state.channels.iter().any(|(known, _)| known == *name))
            .collect::<HashSet<_>>()
            .len();
        if state.channels.len() + new > MAX_CHANNELS {
            return Err(SubscribeRefusal::TooMany);
        }
        Ok(())
    }

    /// Subscribes `session` to `name` for `principal` (its scope, its own devices).
    pub fn subscribe(
        &self,
        session: &Session,
        principal: &Principal,
        name: &str,
    ) -> Result<(), SubscribeRefusal> {
        let channel = Channel::parse(name)?;
        channel.allowed(principal)?;
        let mut state = session.lock();
        if state.channels.iter().any(|(known, _)| known == name) {
            return Ok(());
        }
        if state.channels.len() >= MAX_CHANNELS {
            return Err(SubscribeRefusal::TooMany);
        }
        let matcher = matcher(channel, principal);
        // Unique per session (checked above), so the stream refuses it only past its own bound.
        self.stream
            .subscribe_live(session.connection, name, matcher)
            .map_err(|_| SubscribeRefusal::TooMany)?;
        state.channels.push((name.to_owned(), channel));
        Ok(())
    }

    /// Unsubscribes `session` from `name`; unknown names are fine (Bayeux's unsubscribe is idempotent).
    pub fn unsubscribe(&self, session: &Session, name: &str) {
        let mut state = session.lock();
        if let Some(at) = state.channels.iter().position(|(known, _)| known == name) {
            state.channels.remove(at);
            let _ = self.stream.unsubscribe(session.connection, name);
        }
    }

    /// Remakes every subscription of `session` for `principal` (the access file was reloaded), under
    /// gate generation `generation`. A channel the principal may no longer read is dropped.
    pub fn resubscribe(&self, session: &Session, principal: &Principal, generation: u64) {
        *session
            .own
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Arc::new(own_devices(principal.user.as_ref()));
        *session
            .scope
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = principal.scope.clone();
        let mut state = session.lock();
        state.generation = generation;
        let channels = std::mem::take(&mut state.channels);
        for (name, channel) in channels {
            let _ = self.stream.unsubscribe(session.connection, &name);
            if channel.allowed(principal).is_ok()
                && self
                    .stream
                    .subscribe_live(session.connection, &name, matcher(channel, principal))
                    .is_ok()
            {
                state.channels.push((name, channel));
            }
        }
    }

    /// Removes the sessions that have had no connect for [`MAX_INTERVAL`]; returns how many.
    pub fn expire(&self) -> usize {
        let now = Instant::now();
        // A copy of the table first: a session busy in a long take must not hold up every request that
        // looks a session up.
        let all: Vec<Arc<Session>> = self.lock().values().cloned().collect();
        // A connect whose request was dropped mid-wait (the client went away) may never have ended: past
        // its timeout and `maxInterval` it counts as gone too.
        let held_too_long = super::CONNECT_TIMEOUT + MAX_INTERVAL;
        let mut stale = Vec::new();
        for session in all {
            let state = session.lock();
            let idle = now.duration_since(state.last_active);
            if (state.holding == 0 && idle > MAX_INTERVAL) || idle > held_too_long {
                drop(state);
                stale.push(session);
            } else if state.holding > 0 && idle >= super::CONNECT_TIMEOUT {
                // A held connect has no timer of its own (a timer per idle session is memory): it is
                // woken here to find it has waited long enough.
                drop(state);
                session.wake();
            }
        }
        for session in &stale {
            self.remove(session, "expired");
        }
        stale.len()
    }

    /// Removes sessions that have had no connect for [`MAX_INTERVAL`] and wakes connects held for
    /// [`super::CONNECT_TIMEOUT`], every second; at `cancel`, wakes every held connect to answer.
    pub async fn sweep(self: Arc<Self>, cancel: tokio_util::sync::CancellationToken) {
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = cancel.cancelled() => break,
            }
            self.expire();
        }
        // Held connects check for shutdown before they wait, so any that missed this saw it.
        let all: Vec<Arc<Session>> = self.lock().values().cloned().collect();
        for session in all {
            session.wake();
        }
    }
}

/// The user's least recently active session when the user already has [`MAX_SESSIONS_PER_USER`].
fn oldest_beyond_limit(
    table: &HashMap<Arc<str>, Arc<Session>>,
    username: &str,
) -> Option<Arc<Session>> {
    let mine: Vec<&Arc<Session>> = table
        .values()
        .filter(|s| s.user.as_ref().is_some_and(|u| u.username == username))
        .collect();
    if mine.len() < MAX_SESSIONS_PER_USER {
        return None;
    }
    mine.into_iter()
        .min_by_key(|s| s.lock().last_active)
        .cloned()
}

/// The stream matcher of a channel: the principal's own devices for `/v2/me`, its scope for `/callgate`.
fn matcher(channel: Channel, principal: &Principal) -> Matcher {
    let topics = channel.topics();
    if channel.is_me() {
        let own: Vec<String> = principal
            .user
            .as_ref()
            .map(|user| user.devices.iter().map(|d| d.id()).collect())
            .unwrap_or_default();
        let filter = CallFilter {
            device_id: Some(own),
            ..CallFilter::default()
        };
        Matcher::for_topics(filter, principal.scope.clone(), topics)
    } else {
        Matcher::for_topics(CallFilter::default(), principal.scope.clone(), topics)
    }
}

/// The topics `channels` cover on the `/v2/me` side and on the `/callgate` side.
pub fn sides(channels: &[(String, Channel)]) -> (Topics, Topics) {
    let mut me = None;
    let mut callgate = None;
    for (_, channel) in channels {
        let side = if channel.is_me() {
            &mut me
        } else {
            &mut callgate
        };
        *side = Some(side.map_or(channel.topics(), |t: Topics| t.with(channel.topics())));
    }
    (me.unwrap_or(Topics::NONE), callgate.unwrap_or(Topics::NONE))
}

/// The ids of `user`'s own devices.
pub fn own_devices(user: Option<&Arc<User>>) -> HashSet<String> {
    user.map(|user| user.devices.iter().map(|d| d.id()).collect())
        .unwrap_or_default()
}

/// A random `clientId`: 128 bits, hex.
fn new_client_id() -> String {
    crate::access::sessions::random_hex::<16>()
}
