//! CometD (Bayeux 1.0) at `/api/v2/notifications` (gws.md), for GWS 8.5 clients unchanged.
//!
//! Written here rather than taken from a crate: no maintained Rust Bayeux server fits axum 0.8
//! (`axum-cometd` 0.9 is built on axum 0.6, long-polling only, one message per request, and unmaintained
//! since 2023; see ../shared/notes/cometd.md).
//!
//! A session is a connection of the shared stream like a WebSocket: its channel subscriptions are stream
//! subscriptions (no snapshot: Bayeux subscriptions are live, clients read state over REST), its queue is an
//! outbox with the same coalescing, and every notification is matched and serialized once for everyone.
//! Only the envelope differs: at a connect reply each queued notification frame is cut into the Bayeux
//! message of each channel it belongs to (`/v2/me/...` for the user's own devices, `/callgate/...` with
//! the owner's `userId` for supervisors), by slicing the frame, not by parsing it.
//!
//! Long-polling: a request body is one message or an array of at most [`MAX_MESSAGES`]; every message is
//! answered in one JSON array, a `/meta/connect` last, held up to [`CONNECT_TIMEOUT`] until messages are
//! queued, a newer connect arrives, or the gateway shuts down. WebSocket ([`websocket`]): the same
//! messages and rules, a frame for a request.

mod channel;
pub mod http1;
mod session;
mod websocket;

pub use websocket::upgrade;

pub use session::{
    MAX_CHANNELS, MAX_INTERVAL, MAX_SESSIONS, MAX_SESSIONS_PER_USER, MESSAGES_PER_REPLY,
    QUEUE_LIMITS, Session, SessionError, Sessions, SubscribeRefusal,
};

use super::AppState;
use super::auth::Presented;
use crate::access::{Principal, RequestKind};
use crate::reduce::Topic;
use crate::subscriptions::{Scope, Topics};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use hashbrown::HashSet;
use memchr::memmem::Finder;
use serde_json::{Map, Value, json};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// The most messages in one request.
pub const MAX_MESSAGES: usize = 64;
/// How long a connect is held when nothing is queued.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The connection types offered, best first.
const CONNECTION_TYPES: [&str; 2] = ["websocket", "long-polling"];

type Message = Map<String, Value>;

/// `POST /api/v2/notifications` (and `/`, and any sub-path): one long-polling request, as hyper serves
/// it. Most long-polling requests never get here: [`http1`] serves them (it hands hyper what it does not).
pub async fn long_poll(State(state): State<AppState>, request: axum::extract::Request) -> Response {
    if !json_content(request.headers()) {
        return refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a Bayeux request is application/json",
        );
    }
    let presented = Presented::of(&request);
    // access.md: a browser page of another origin may not open or use a session, whatever its
    // credentials (they may be in the body).
    if super::origin::of(request.headers()).is_some_and(|origin| !state.origins.allows(origin)) {
        return super::origin::refused("cometd", presented.remote);
    }
    let body = match axum::body::to_bytes(request.into_body(), super::server::MAX_BODY).await {
        Ok(body) => body,
        Err(_) => return refused(StatusCode::BAD_REQUEST, "the body is over 64 KiB"),
    };
    let messages = match parse_request(&body) {
        Ok(messages) => messages,
        Err(problem) => return refused(StatusCode::BAD_REQUEST, problem),
    };
    drop(body);
    let replies = answer(&state, presented, messages).await;
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, REPLY_CONTENT_TYPE)],
        replies,
    )
        .into_response()
}

/// The content type of every long-polling reply.
const REPLY_CONTENT_TYPE: &str = "application/json;charset=UTF-8";

/// The messages of a long-polling request's body, or what is wrong with it (counted).
fn parse_request(body: &[u8]) -> Result<Vec<Message>, &'static str> {
    parse_messages(body).inspect_err(|_| {
        metrics::counter!("callgate_cometd_bad_requests_total").increment(1);
    })
}

/// The JSON array that answers a long-polling request's `messages`: every reply, a `/meta/connect` last
/// (held until it has something to say). The credentials are dropped before a connect is held.
async fn answer(state: &AppState, presented: Presented, messages: Vec<Message>) -> Vec<u8> {
    let mut replies = Vec::with_capacity(messages.len());
    let mut connect: Option<(Message, Arc<Session>)> = None;
    for message in messages {
        match dispatch(state, &presented, message).await {
            Dispatched::Reply(reply) => replies.push(reply),
            Dispatched::Connect(message, session) => {
                // Two connects in one request: the older is answered at once, as a newer one would.
                if let Some((older, older_session)) = connect.replace((message, session)) {
                    let ext = older_session.batch().map(|batch| json!({ "ack": batch }));
                    replies.push(meta_reply(older.get("id"), "/meta/connect", ext));
                }
            }
        }
    }
    drop(presented);
    if let Some((message, session)) = connect {
        replies.extend(held_connect(state, &session, message).await);
    }
    json_array(&replies)
}

/// What one message asks: a reply now, or a connect to hold.
enum Dispatched {
    Reply(Bytes),
    Connect(Message, Arc<Session>),
}

/// Answers one message, by its channel (never by the request's path); a connect is left to the caller.
async fn dispatch(state: &AppState, presented: &Presented, message: Message) -> Dispatched {
    let channel = message
        .get("channel")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let reply = match channel.as_str() {
        // Boxed: the gate's password check is a large future, and every connect's would be as large.
        "/meta/handshake" => Box::pin(handshake(state, presented, &message)).await,
        "/meta/connect" => match live_session(state, &message) {
            Ok(session) => return Dispatched::Connect(message, session),
            Err(reply) => reply,
        },
        "/meta/subscribe" => subscribe(state, &message, true),
        "/meta/unsubscribe" => subscribe(state, &message, false),
        "/meta/disconnect" => disconnect(state, &message),
        other if other.starts_with("/meta/") => failure(&message, other, "400::channel_unknown"),
        other => failure(&message, other, "403::publish_denied"),
    };
    Dispatched::Reply(reply)
}

/// Whether the request says its body is JSON.
fn json_content(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(is_json_media_type)
}

/// Whether a `Content-Type` value is `application/json` (with any parameters).
fn is_json_media_type(value: &str) -> bool {
    value
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// An HTTP refusal of the whole request.
fn refused(status: StatusCode, message: &str) -> Response {
    super::http::error(status, message)
}

/// The messages of a request body: one object, or an array of 1 to [`MAX_MESSAGES`] objects.
fn parse_messages(body: &[u8]) -> Result<Vec<Message>, &'static str> {
    let value: Value = serde_json::from_slice(body).map_err(|_| "the body is not JSON")?;
    let items = match value {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        _ => return Err("a body is one message object or an array of them"),
    };
    if items.is_empty() {
        return Err("the request holds no message");
    }
    if items.len() > MAX_MESSAGES {
        return Err("at most 64 messages a request");
    }
    items
        .into_iter()
        .map(|item| match item {
            Value::Object(message) => Ok(message),
            _ => Err("every message is a JSON object"),
        })
        .collect()
}

/// The messages, as the response's JSON array.
fn json_array(replies: &[Bytes]) -> Vec<u8> {
    let size: usize = replies.iter().map(|r| r.len() + 1).sum();
    let mut body = Vec::with_capacity(size + 2);
    body.push(b'[');
    for (i, reply) in replies.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(reply);
    }
    body.push(b']');
    body
}

/// A reply object with the request's `id` echoed, as bytes.
fn reply(message: &Message, mut fields: Map<String, Value>) -> Bytes {
    if let Some(id) = message.get("id") {
        fields.insert("id".into(), id.clone());
    }
    Bytes::from(Value::Object(fields).to_string())
}

/// `{"id","channel","successful":true}` (and `ext`). Written directly rather than through a map: it
/// answers every connect.
fn meta_reply(id: Option<&Value>, channel: &str, ext: Option<Value>) -> Bytes {
    let mut out = String::with_capacity(96);
    out.push('{');
    if let Some(id) = id {
        out.push_str("\"id\":");
        out.push_str(&id.to_string());
        out.push(',');
    }
    out.push_str("\"channel\":");
    crate::json::write_json_str(&mut out, channel);
    out.push_str(",\"successful\":true");
    if let Some(ext) = ext {
        out.push_str(",\"ext\":");
        out.push_str(&ext.to_string());
    }
    out.push('}');
    Bytes::from(out)
}

/// `{"id","channel","successful":false,"error"}`.
fn failure(message: &Message, channel: &str, error: &str) -> Bytes {
    let mut fields = Map::new();
    fields.insert("channel".into(), channel.into());
    fields.insert("successful".into(), false.into());
    fields.insert("error".into(), error.into());
    reply(message, fields)
}

/// The reply to a message of a session that does not exist (any more): the client re-handshakes.
fn unknown_session(message: &Message) -> Bytes {
    let channel = message.get("channel").and_then(Value::as_str).unwrap_or("");
    let mut fields = Map::new();
    fields.insert("channel".into(), channel.into());
    fields.insert("successful".into(), false.into());
    fields.insert("error".into(), SessionError::Unknown.to_string().into());
    fields.insert(
        "advice".into(),
        json!({"reconnect": "handshake", "interval": 0}),
    );
    reply(message, fields)
}

/// [`unknown_session`] for a connect known by its `id` alone.
fn connect_unknown(id: Option<&Value>) -> Bytes {
    let mut message = Message::new();
    if let Some(id) = id {
        message.insert("id".into(), id.clone());
    }
    message.insert("channel".into(), "/meta/connect".into());
    unknown_session(&message)
}

/// The session a message names by `clientId`, or the reply that says it is unknown.
fn live_session(state: &AppState, message: &Message) -> Result<Arc<Session>, Bytes> {
    message
        .get("clientId")
        .and_then(Value::as_str)
        .and_then(|id| state.cometd.get(id))
        .ok_or_else(|| unknown_session(message))
}

/// `/meta/handshake`: authenticates, opens a session.
async fn handshake(state: &AppState, presented: &Presented, message: &Message) -> Bytes {
    let Some(principal) = handshake_principal(state, presented, message).await else {
        let mut fields = Map::new();
        fields.insert("channel".into(), "/meta/handshake".into());
        fields.insert("successful".into(), false.into());
        fields.insert("error".into(), "403::handshake_denied".into());
        fields.insert("advice".into(), json!({"reconnect": "none"}));
        return reply(message, fields);
    };
    let acks = message.get("ext").and_then(|ext| ext.get("ack")) == Some(&Value::Bool(true));
    let session = match state.cometd.open(&principal, acks, state.gate.generation()) {
        Ok(session) => session,
        Err(error) => {
            let mut fields = Map::new();
            fields.insert("channel".into(), "/meta/handshake".into());
            fields.insert("successful".into(), false.into());
            fields.insert("error".into(), error.to_string().into());
            fields.insert(
                "advice".into(),
                json!({"reconnect": "handshake", "interval": 5000}),
            );
            return reply(message, fields);
        }
    };
    let asked: Option<Vec<&str>> = message
        .get("supportedConnectionTypes")
        .and_then(Value::as_array)
        .map(|types| types.iter().filter_map(Value::as_str).collect());
    let common: Vec<&str> = CONNECTION_TYPES
        .iter()
        .copied()
        .filter(|ours| asked.as_ref().is_none_or(|theirs| theirs.contains(ours)))
        .collect();
    let types = if common.is_empty() {
        CONNECTION_TYPES.to_vec()
    } else {
        common
    };
    let mut fields = Map::new();
    fields.insert("channel".into(), "/meta/handshake".into());
    fields.insert("successful".into(), true.into());
    fields.insert("version".into(), "1.0".into());
    fields.insert("minimumVersion".into(), "1.0".into());
    fields.insert("clientId".into(), (*session.id).into());
    fields.insert("supportedConnectionTypes".into(), json!(types));
    fields.insert(
        "advice".into(),
        json!({"reconnect": "retry", "interval": 0, "timeout": CONNECT_TIMEOUT.as_millis() as u64,
               "maxInterval": MAX_INTERVAL.as_millis() as u64}),
    );
    if acks {
        fields.insert("ext".into(), json!({"ack": true}));
    }
    reply(message, fields)
}

/// Who a handshake is from: its `ext.authentication` (a token, or a user and password) when it has one,
/// else the request's cookie or `Authorization`. `None` when refused (logged and counted by the gate).
async fn handshake_principal(
    state: &AppState,
    presented: &Presented,
    message: &Message,
) -> Option<Principal> {
    if state.gate.is_open() {
        return Some(Principal::open());
    }
    let authentication = message.get("ext").and_then(|ext| ext.get("authentication"));
    let Some(authentication) = authentication else {
        let request = presented.at("cometd", RequestKind::Stream);
        return state
            .gate
            .authenticate(&request)
            .await
            .ok()
            .map(|granted| granted.principal);
    };
    if let Some(token) = authentication.get("token").and_then(Value::as_str) {
        return state
            .gate
            .authenticate_token("cometd", presented.remote, token)
            .ok();
    }
    let user = authentication.get("user").and_then(Value::as_str)?;
    let password = authentication.get("password").and_then(Value::as_str)?;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    let request = crate::access::Request {
        door: "cometd",
        authorization: Some(&basic),
        cookie: None,
        csrf: None,
        remote: presented.remote,
        kind: RequestKind::Stream,
    };
    state
        .gate
        .authenticate(&request)
        .await
        .ok()
        .map(|granted| granted.principal)
}

/// The principal of a session now: its user as the access file says today (`None`: the user is gone).
fn principal_now(state: &AppState, session: &Session) -> Option<Principal> {
    match &session.user {
        None => Some(Principal::open()),
        Some(user) => state.gate.principal_of(&user.username),
    }
}

/// `/meta/subscribe` (`subscribe`) or `/meta/unsubscribe`: `subscription` is a name or an array of them,
/// echoed as sent.
fn subscribe(state: &AppState, message: &Message, subscribe: bool) -> Bytes {
    let channel = if subscribe {
        "/meta/subscribe"
    } else {
        "/meta/unsubscribe"
    };
    let session = match live_session(state, message) {
        Ok(session) => session,
        Err(reply) => return reply,
    };
    let Some(principal) = principal_now(state, &session) else {
        state.cometd.remove(&session, "user_removed");
        return unknown_session(message);
    };
    let subscription = message.get("subscription").cloned().unwrap_or(Value::Null);
    let names: Vec<&str> = match &subscription {
        Value::String(name) => vec![name.as_str()],
        Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    // All or nothing: a reply that says "not subscribed" must not leave some of the channels subscribed.
    let mut refusal = names.is_empty().then_some(SubscribeRefusal::Invalid);
    if subscribe && refusal.is_none() {
        refusal = state.cometd.check(&session, &principal, &names).err();
    }
    if let Some(refused) = refusal {
        metrics::counter!("callgate_cometd_subscriptions_refused_total", "error" => refused.to_string())
            .increment(1);
    } else {
        for name in names {
            if subscribe {
                if let Err(refused) = state.cometd.subscribe(&session, &principal, name) {
                    refusal.get_or_insert(refused);
                }
            } else {
                state.cometd.unsubscribe(&session, name);
            }
        }
    }
    let mut fields = Map::new();
    fields.insert("channel".into(), channel.into());
    fields.insert("successful".into(), refusal.is_none().into());
    fields.insert("subscription".into(), subscription);
    if let Some(refused) = refusal {
        fields.insert("error".into(), refused.to_string().into());
    }
    fields.insert("clientId".into(), (*session.id).into());
    reply(message, fields)
}

/// `/meta/disconnect`: ends the session.
fn disconnect(state: &AppState, message: &Message) -> Bytes {
    match live_session(state, message) {
        Ok(session) => {
            state.cometd.remove(&session, "disconnected");
            meta_reply(message.get("id"), "/meta/disconnect", None)
        }
        Err(reply) => reply,
    }
}

/// `/meta/connect`: the queued messages (at most [`MESSAGES_PER_REPLY`]) and then the connect reply. Held
/// until something is queued unless `advice.timeout` is 0 (the first connect), a newer connect arrives, the
/// gateway shuts down, or [`CONNECT_TIMEOUT`] passes.
async fn held_connect(state: &AppState, session: &Arc<Session>, message: Message) -> Vec<Bytes> {
    let begun = Connect::begin(state, session, &message);
    // The connect keeps what it echoes; the rest of the message is not held for 30 s.
    drop(message);
    let mut connect = match begun {
        Ok(connect) => connect,
        Err(reply) => return reply,
    };
    loop {
        let superseded = session.superseded();
        tokio::pin!(superseded);
        superseded.as_mut().enable();
        if let Some(replies) = connect.answer(state) {
            return replies;
        }
        // No timer and no cancellation future: the session sweeper wakes a connect held too long, and
        // every held connect at shutdown (each would cost an idle session ~200 bytes).
        tokio::select! {
            () = session.outbox().ready() => {}
            () = &mut superseded => {}
        }
    }
}

/// A `/meta/connect` being answered: held until [`Connect::answer`] has something to say. It counts as
/// held by its session until dropped, however the wait ends (a client gone mid-wait drops it too), so a
/// session whose connects all ended can expire.
struct Connect {
    /// The connect message's `id` (all its reply echoes). Not the message: a JSON map allocates a
    /// whole tree node, hundreds of bytes per idle session.
    id: Option<Value>,
    session: Arc<Session>,
    /// Its number among the session's connects: a newer one supersedes it.
    generation: u64,
    /// The first connect after a handshake (`advice.timeout` 0) is answered at once.
    immediate: bool,
    /// The batch the connect acknowledges, until the first take.
    acked: Option<u64>,
    deadline: tokio::time::Instant,
}

impl Drop for Connect {
    fn drop(&mut self) {
        self.session.end_connect();
    }
}

impl Connect {
    /// Starts answering `message` of `session`: remakes the session's subscriptions first when the access
    /// file was reloaded. Fails with the reply when the session has ended or its user is gone.
    fn begin(
        state: &AppState,
        session: &Arc<Session>,
        message: &Message,
    ) -> Result<Connect, Vec<Bytes>> {
        let Ok(generation) = session.begin_connect() else {
            return Err(vec![unknown_session(message)]);
        };
        let connect = Connect {
            immediate: message
                .get("advice")
                .and_then(|advice| advice.get("timeout"))
                .and_then(Value::as_u64)
                == Some(0),
            acked: message
                .get("ext")
                .and_then(|ext| ext.get("ack"))
                .and_then(Value::as_u64),
            id: message.get("id").cloned(),
            session: Arc::clone(session),
            generation,
            deadline: tokio::time::Instant::now() + CONNECT_TIMEOUT,
        };
        if !connect.rescope(state) {
            return Err(vec![unknown_session(message)]);
        }
        Ok(connect)
    }

    /// Remakes the session's subscriptions when the access file was reloaded since they were made; false
    /// when its user is gone (the session is then ended).
    fn rescope(&self, state: &AppState) -> bool {
        let gate_generation = state.gate.generation();
        if self.session.generation() == gate_generation {
            return true;
        }
        let Some(principal) = principal_now(state, &self.session) else {
            state.cometd.remove(&self.session, "user_removed");
            return false;
        };
        state
            .cometd
            .resubscribe(&self.session, &principal, gate_generation);
        true
    }

    /// The reply of a connect answered without its messages: a newer connect takes them.
    fn superseded_reply(&self) -> Vec<Bytes> {
        let ext = self.session.batch().map(|batch| json!({ "ack": batch }));
        vec![meta_reply(self.id.as_ref(), "/meta/connect", ext)]
    }

    /// The reply (queued messages, then the connect's own), once there are messages, the connect is
    /// immediate, superseded or timed out, or the gateway shuts down; `None` while it should wait. A
    /// superseded connect takes no message: the newer one gets them.
    fn answer(&mut self, state: &AppState) -> Option<Vec<Bytes>> {
        if self.session.is_superseded(self.generation) {
            return Some(self.superseded_reply());
        }
        if !self.rescope(state) {
            return Some(vec![connect_unknown(self.id.as_ref())]);
        }
        let own = self.session.own();
        let scope = self.session.scope();
        let gate = &state.gate;
        let mut convert = |frame: &[u8], me: Topics, callgate: Topics, out: &mut Vec<Bytes>| {
            to_messages(frame, me, callgate, (&own, &scope), gate, out);
        };
        let delivery = match self.session.take(self.acked.take(), &mut convert) {
            Ok(delivery) => delivery,
            Err(error) => {
                if error == SessionError::Overflowed {
                    state.cometd.remove(&self.session, "overflow");
                }
                return Some(vec![connect_unknown(self.id.as_ref())]);
            }
        };
        let done = !delivery.messages.is_empty()
            || self.immediate
            || state.cancel.is_cancelled()
            || tokio::time::Instant::now() >= self.deadline;
        if !done {
            return None;
        }
        let mut replies = delivery.messages;
        messages_counter().increment(replies.len() as u64);
        let ext = delivery.ack.map(|batch| json!({ "ack": batch }));
        replies.push(meta_reply(self.id.as_ref(), "/meta/connect", ext));
        Some(replies)
    }
}

/// `callgate_cometd_messages_total`, looked up once: the registry's lookup costs a hash of the name per
/// connect reply.
fn messages_counter() -> &'static metrics::Counter {
    static COUNTER: std::sync::OnceLock<metrics::Counter> = std::sync::OnceLock::new();
    COUNTER.get_or_init(|| metrics::counter!("callgate_cometd_messages_total"))
}

/// The Bayeux messages of one stream notification frame for a session: on `/v2/me/<topic>` when it is about
/// one of the user's own devices and the session reads that side, on `/callgate/<topic>` (with the owner's
/// `userId`) when the session reads that side. The frame is
/// `{"type":"notification","epoch":...,"seq":N,"channel":"/v2/me/<topic>","data":{...}}`, written by the
/// stream, so it is cut rather than parsed.
fn to_messages(
    frame: &[u8],
    me: Topics,
    callgate: Topics,
    (own, scope): (&HashSet<String>, &Scope),
    gate: &crate::access::Gate,
    out: &mut Vec<Bytes>,
) {
    // Not a stream notification (StartContactCenterSession's message): it is a message already.
    if !frame.starts_with(br#"{"type":"notification""#) {
        out.push(Bytes::copy_from_slice(frame));
        return;
    }
    // Searchers made once: building one costs more than searching a frame's envelope.
    static DATA: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(br#""data":"#));
    static DEVICES: LazyLock<Finder<'static>> =
        LazyLock::new(|| Finder::new(br#""channel":"/v2/me/devices""#));
    static QUEUES: LazyLock<Finder<'static>> =
        LazyLock::new(|| Finder::new(br#""channel":"/callgate/queues""#));
    // The envelope ends where the data begins: the channel is looked for there only, never in the data
    // (whose attached data comes from outside).
    let Some(data_at) = DATA.find(frame) else {
        return;
    };
    let data = &frame[data_at + 7..frame.len().saturating_sub(1)];
    if QUEUES.find(&frame[..data_at]).is_some() {
        // Whoever reads `/callgate/queues` sees every queue (no device scope applies).
        if callgate.contains(Topic::Queues) {
            out.push(message(&["/callgate/queues"], None, data));
        }
        return;
    }
    let (topic, name) = if DEVICES.find(&frame[..data_at]).is_some() {
        (Topic::Devices, "devices")
    } else {
        (Topic::Calls, "calls")
    };
    let Some(device) = device_of(data, topic) else {
        return;
    };
    if me.contains(topic) && own.contains(device) {
        out.push(message(&["/v2/me/", name], None, data));
    }
    // The scope is checked again: frames queued before a reload were matched under the old one.
    if callgate.contains(topic) && scope.allows_device(device) {
        let owner = gate.owner_id_of(device);
        out.push(message(&["/callgate/", name], owner.as_deref(), data));
    }
}

/// `{"channel":"<channel parts>","data":<data>}`, with `"userId"` first in the data when given. Written
/// without `format!`: this runs for every delivery.
fn message(channel: &[&str], user_id: Option<&str>, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 64);
    out.extend_from_slice(br#"{"channel":""#);
    for part in channel {
        out.extend_from_slice(part.as_bytes());
    }
    out.extend_from_slice(br#"","data":"#);
    match user_id {
        Some(user_id) => {
            out.extend_from_slice(br#"{"userId":""#);
            out.extend_from_slice(user_id.as_bytes());
            out.extend_from_slice(b"\",");
            out.extend_from_slice(data.strip_prefix(b"{").unwrap_or(data));
        }
        None => out.extend_from_slice(data),
    }
    out.push(b'}');
    Bytes::from(out)
}

/// The device id a notification's data is about: its call's `deviceUri`, or its device's `id`.
fn device_of(data: &[u8], topic: Topic) -> Option<&str> {
    static CALL: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(br#""deviceUri":""#));
    static DEVICE: LazyLock<Finder<'static>> =
        LazyLock::new(|| Finder::new(br#""devices":[{"id":""#));
    let key = match topic {
        Topic::Calls => &*CALL,
        Topic::Devices | Topic::Queues => &*DEVICE,
    };
    let start = key.find(data)? + key.needle().len();
    let value = &data[start..];
    let value = &value[..memchr::memchr(b'"', value)?];
    let value = std::str::from_utf8(value).ok()?;
    Some(value.rsplit('/').next().unwrap_or(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attached_data_that_looks_like_an_envelope_does_not_change_the_topic() {
        let gate = crate::access::Gate::open();
        let call = r#"{"type":"notification","epoch":"e","seq":7,"channel":"/v2/me/calls","data":{"call":{"id":"C","deviceUri":"http://gw/api/v2/devices/dev-1","userData":{"x":"\"channel\":\"/v2/me/devices\""}},"messageType":"CallStateChangeMessage"}}"#;
        let mut out = Vec::new();
        let own = HashSet::new();
        to_messages(
            call.as_bytes(),
            Topics::NONE,
            Topics::CALLS,
            (&own, &Scope::All),
            &gate,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        let message: Value = serde_json::from_slice(&out[0]).expect("JSON");
        assert_eq!(message["channel"], "/callgate/calls");
    }

    #[test]
    fn bodies_are_one_message_or_a_bounded_array_of_objects() {
        assert_eq!(
            parse_messages(br#"{"channel":"/meta/handshake"}"#).map(|m| m.len()),
            Ok(1)
        );
        assert_eq!(
            parse_messages(br#"[{"a":1},{"b":2}]"#).map(|m| m.len()),
            Ok(2)
        );
        assert!(parse_messages(b"not json").is_err());
        assert!(parse_messages(b"[]").is_err());
        assert!(parse_messages(b"[1]").is_err());
        assert!(parse_messages(b"\"x\"").is_err());
        let many = format!("[{}]", vec!["{}"; 65].join(","));
        assert!(parse_messages(many.as_bytes()).is_err());
        let most = format!("[{}]", vec!["{}"; 64].join(","));
        assert!(parse_messages(most.as_bytes()).is_ok());
    }

    #[test]
    fn a_frame_is_cut_into_the_messages_of_each_side() {
        let gate = crate::access::Gate::open();
        let call = r#"{"type":"notification","epoch":"e","seq":7,"channel":"/v2/me/calls","data":{"notificationType":"StatusChange","call":{"id":"C","deviceUri":"http://gw/api/v2/devices/dev-1","participants":[]},"messageType":"CallStateChangeMessage"}}"#;
        let own: HashSet<String> = ["dev-1".to_owned()].into();
        let mut out = Vec::new();
        let both = Topics::CALLS.with(Topics::DEVICES);
        to_messages(
            call.as_bytes(),
            both,
            Topics::CALLS,
            (&own, &Scope::All),
            &gate,
            &mut out,
        );
        let messages: Vec<Value> = out
            .iter()
            .map(|m| serde_json::from_slice(m).expect("JSON"))
            .collect();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0]["channel"], "/v2/me/calls");
        assert_eq!(messages[0]["data"]["call"]["id"], "C");
        assert_eq!(messages[1]["channel"], "/callgate/calls");
        assert!(
            messages[1]["data"].get("userId").is_none(),
            "open mode has no owners"
        );
        out.clear();
        let other: HashSet<String> = HashSet::new();
        to_messages(
            call.as_bytes(),
            both,
            Topics::DEVICES,
            (&other, &Scope::All),
            &gate,
            &mut out,
        );
        assert!(out.is_empty(), "not its device, and not a side it reads");
        let device = r#"{"type":"notification","epoch":"e","seq":8,"channel":"/v2/me/devices","data":{"messageType":"DeviceStateChangeMessage","devices":[{"id":"dev-1","deviceState":"Active"}]}}"#;
        to_messages(
            device.as_bytes(),
            both,
            Topics::CALLS,
            (&own, &Scope::All),
            &gate,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        let message: Value = serde_json::from_slice(&out[0]).expect("JSON");
        assert_eq!(message["channel"], "/v2/me/devices");
        assert_eq!(message["data"]["devices"][0]["id"], "dev-1");
    }
}
