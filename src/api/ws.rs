//! The WebSocket door (api.md, "WebSocket"): subscriptions with snapshot or resume, then notifications.
//!
//! Close codes: 1000 normal, 1001 the gateway is shutting down, 1009 a client frame over 64 KiB, 1011 an
//! internal fault, 4001 no valid credentials (access.md), 4008 the client read too slowly (resume with
//! `since`), 4010 no answer to pings for 60 s.
//!
//! Credentials (access.md): the upgrade request's `Authorization` header or session cookie, checked
//! before the upgrade (a bad one is a 401); or, when it has neither, a first frame
//! `{"type":"auth","token":"<JWT>"}` within 5 s. Every subscription carries the principal's scope.
//!
//! The two directions are handled apart. Client frames are read by tungstenite on the socket's read half,
//! in a task of their own. Server frames are written by this module straight from the shared frame bytes:
//! a server frame is only a 2- to 10-byte header before the payload, and writing the queued frames with
//! one vectored write saves copying every notification into a per-connection buffer, which is most of what
//! a fanout of one notification to thousands of connections costs in user space.

use super::AppState;
use super::http::error;
use crate::access::{Principal, RequestKind};
use crate::delivery::{DrainError, Frame, Outbox};
use crate::json::write_json_str;
use crate::stream::Since;
use crate::subscriptions::{CallFilter, Matcher, Topics};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::io::{ReadHalf, WriteHalf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// Largest client frame accepted.
pub const MAX_CLIENT_FRAME: usize = 64 * 1024;
/// Read buffer per connection.
const READ_BUFFER: usize = 4 * 1024;
/// How long a connection without credentials in its upgrade request has to send its `auth` frame.
const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the server pings.
const PING_INTERVAL: Duration = Duration::from_secs(20);
/// A connection that has sent nothing (not even a pong) for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one batch of frames may take to write before the client counts as stalled.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// A batch this large is followed by a yield to the runtime.
const LARGE_BATCH: usize = 256 * 1024;
/// Frames per vectored write (two slices each; Linux takes at most 1,024 slices per call).
const FRAMES_PER_WRITE: usize = 512;

/// `GET /api/v2/ws`: checks the opening handshake (RFC 6455, 4.2.1), answers 101, and serves the upgraded
/// connection in a tracked task.
pub async fn upgrade(
    State(state): State<AppState>,
    mut request: axum::extract::Request,
) -> Response {
    let key = match handshake_key(request.method(), request.headers()) {
        Ok(key) => key,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    let Some(on_upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return error(
            StatusCode::UPGRADE_REQUIRED,
            "connection cannot be upgraded",
        );
    };
    if state.cancel.is_cancelled() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    let presented = super::auth::Presented::of(&request);
    let remote = presented.remote;
    // Another site's page in an agent's browser must not subscribe with the agent's cookie.
    if super::origin::of(request.headers()).is_some_and(|origin| !state.origins.allows(origin)) {
        return super::origin::refused("ws", remote);
    }
    let principal = match upgrade_principal(&state, presented).await {
        Ok(principal) => principal,
        Err(refusal) => return refusal,
    };
    let Ok(permit) = Arc::clone(&state.ws_permits).try_acquire_owned() else {
        metrics::counter!("callgate_ws_refused_total").increment(1);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many WebSocket connections",
        );
    };
    let tracker = state.tracker.clone();
    // Tracked so that shutdown waits for the close frame to go out (axum does not wait for upgraded
    // connections).
    tracker.spawn(async move {
        // Held for the connection's life: its slot comes back however the task ends.
        let _permit = permit;
        match on_upgrade.await {
            Ok(upgraded) => connection(TokioIo::new(upgraded), state, remote, principal).await,
            Err(err) => tracing::debug!("WebSocket upgrade failed: {err}"),
        }
    });
    switching_protocols(&key)
}

/// The 101 answer to an opening handshake with `Sec-WebSocket-Key` `key`.
pub(super) fn switching_protocols(key: &str) -> Response {
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, HeaderValue::from_static("upgrade")),
            (header::UPGRADE, HeaderValue::from_static("websocket")),
        ],
        [(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(
                &tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()),
            )
            .unwrap_or_else(|_| HeaderValue::from_static("")),
        )],
    )
        .into_response()
}

/// The principal of an upgrade request: from its credentials, or open mode's; `None` when it has no
/// credentials and must send them in its first frame. A bad credential is answered before the upgrade.
async fn upgrade_principal(
    state: &AppState,
    presented: super::auth::Presented,
) -> Result<Option<Principal>, Response> {
    if state.gate.is_open() {
        return Ok(Some(Principal::open()));
    }
    let request = presented.at("ws", RequestKind::Stream);
    let session_cookie = request
        .cookie
        .is_some_and(|cookie| state.gate.has_session_cookie(cookie));
    if request.authorization.is_none() && !session_cookie {
        return Ok(None);
    }
    match state.gate.authenticate(&request).await {
        Ok(granted) => Ok(Some(granted.principal)),
        Err(denied) => Err(super::auth::refusal(&denied)),
    }
}

/// The client's `Sec-WebSocket-Key`, or why the request is not a WebSocket opening handshake.
pub(super) fn handshake_key(method: &Method, headers: &HeaderMap) -> Result<String, &'static str> {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .unwrap_or("")
                .split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    };
    if method != Method::GET {
        return Err("a WebSocket handshake is a GET");
    }
    if !has(header::CONNECTION, "upgrade") || !has(header::UPGRADE, "websocket") {
        return Err("expected Connection: upgrade and Upgrade: websocket");
    }
    if !has(header::SEC_WEBSOCKET_VERSION, "13") {
        return Err("only WebSocket version 13 is supported");
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|key| key.to_str().ok())
        .map(str::to_owned)
        .ok_or("Sec-WebSocket-Key is missing")
}

/// The upgraded connection (a TCP stream under hyper's buffering).
type Io = TokioIo<hyper::upgrade::Upgraded>;

/// The read half of the socket as tungstenite's transport. tungstenite answers pings and close frames by
/// itself; those writes are dropped here, because the writer owns the write half (two writers would
/// interleave frames) and sends the pong and the close itself.
struct ReadOnly(ReadHalf<Io>);

impl AsyncRead for ReadOnly {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ReadOnly {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Frame opcodes (RFC 6455, 5.2).
mod opcode {
    pub const TEXT: u8 = 0x1;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xa;
}

/// Length of the header [`push_header`] writes for a payload of `len` bytes.
fn header_len(len: usize) -> usize {
    if len < 126 {
        2
    } else if u16::try_from(len).is_ok() {
        4
    } else {
        10
    }
}

/// Appends the header of an unmasked, final server frame.
fn push_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Writes server frames on the socket's write half.
struct FrameWriter {
    half: WriteHalf<Io>,
    headers: Vec<u8>,
}

impl FrameWriter {
    /// Writes `frames` with as few vectored writes as the socket allows.
    async fn write(&mut self, frames: &[Frame]) -> io::Result<()> {
        for batch in frames.chunks(FRAMES_PER_WRITE) {
            self.headers.clear();
            for frame in batch {
                let (op, payload) = match frame {
                    Frame::Text(payload) => (opcode::TEXT, payload),
                    Frame::Pong(payload) => (opcode::PONG, payload),
                };
                push_header(&mut self.headers, op, payload.len());
            }
            // Header lengths follow from payload lengths, so nothing per frame is kept across the write
            // (an array here would sit in every idle connection's task).
            let mut slices = Vec::with_capacity(batch.len() * 2);
            let mut start = 0;
            for frame in batch {
                let (Frame::Text(payload) | Frame::Pong(payload)) = frame;
                let end = start + header_len(payload.len());
                slices.push(IoSlice::new(&self.headers[start..end]));
                slices.push(IoSlice::new(payload));
                start = end;
            }
            let mut slices = &mut slices[..];
            while !slices.is_empty() {
                let written = self.half.write_vectored(slices).await?;
                if written == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                IoSlice::advance_slices(&mut slices, written);
            }
        }
        Ok(())
    }

    /// Writes one control frame.
    async fn control(&mut self, op: u8, payload: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(payload.len() + 2);
        push_header(&mut frame, op, payload.len());
        frame.extend_from_slice(payload);
        self.half.write_all(&frame).await
    }

    /// Sends a close frame and then ends the stream.
    async fn close(&mut self, code: u16, reason: &str) -> io::Result<()> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        self.control(opcode::CLOSE, &payload).await?;
        self.half.shutdown().await
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum Request {
    Subscribe {
        sub: String,
        #[serde(default)]
        topics: Option<Vec<String>>,
        #[serde(default)]
        filter: Option<CallFilter>,
        #[serde(default)]
        since: Option<Since>,
    },
    Unsubscribe {
        sub: String,
    },
    Ping,
    /// Credentials after the first frame: refused (only the first frame may carry them).
    Auth {
        #[serde(rename = "token")]
        _token: String,
    },
}

/// The first frame of a connection that must authenticate: `{"type":"auth","token":"<JWT>"}`.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum FirstFrame {
    Auth { token: String },
}

fn error_frame(sub: Option<&str>, code: &str, message: &str) -> Bytes {
    let mut frame = String::from("{\"type\":\"error\"");
    if let Some(sub) = sub {
        frame.push_str(",\"sub\":");
        write_json_str(&mut frame, sub);
    }
    frame.push_str(",\"code\":");
    write_json_str(&mut frame, code);
    frame.push_str(",\"message\":");
    write_json_str(&mut frame, message);
    frame.push('}');
    frame.into()
}

fn handle_text(
    state: &AppState,
    principal: &Principal,
    connection: u64,
    outbox: &Outbox,
    text: &str,
) {
    let request: Request = match serde_json::from_str(text) {
        Ok(request) => request,
        Err(err) => {
            // Name the sub when the client gave one, so it can tell which request failed.
            let sub = serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|v| v.get("sub").and_then(|s| s.as_str()).map(str::to_owned));
            metrics::counter!("callgate_ws_bad_requests_total").increment(1);
            outbox.push_control(error_frame(sub.as_deref(), "bad-request", &err.to_string()));
            return;
        }
    };
    match request {
        Request::Subscribe {
            sub,
            topics,
            filter,
            since,
        } => {
            let matcher = match matcher(principal, topics, filter) {
                Ok(matcher) => matcher,
                Err((code, message)) => {
                    outbox.push_control(error_frame(Some(&sub), code, &message));
                    return;
                }
            };
            // A snapshot lists the devices REST lists: the stored ones, and those held in their default
            // state (computed from a view of its own, outside the stream's lock).
            let defaults = if matcher.topics().contains(crate::reduce::Topic::Devices) {
                super::gws::default_devices(
                    &state.stream.view(),
                    &state.gate.directory(),
                    &principal.scope,
                    &state.base_url,
                )
            } else {
                Vec::new()
            };
            let subscribed = state
                .stream
                .subscribe_with_defaults(connection, &sub, matcher, since, defaults);
            if let Err(err) = subscribed {
                outbox.push_control(error_frame(Some(&sub), err.code(), &err.to_string()));
            }
        }
        Request::Unsubscribe { sub } => {
            if let Err(err) = state.stream.unsubscribe(connection, &sub) {
                outbox.push_control(error_frame(Some(&sub), err.code(), &err.to_string()));
            }
        }
        Request::Ping => {
            outbox.push_control(Bytes::from_static(b"{\"type\":\"pong\"}"));
        }
        Request::Auth { .. } => {
            outbox.push_control(error_frame(None, "bad-request", "already authenticated"));
        }
    }
}

/// A subscription's matcher: its topics (default calls), its filter, and the principal's scope.
fn matcher(
    principal: &Principal,
    topics: Option<Vec<String>>,
    filter: Option<CallFilter>,
) -> Result<Matcher, (&'static str, String)> {
    let topics = match topics {
        None => Topics::CALLS,
        Some(names) if names.is_empty() => {
            return Err((
                "bad-request",
                "topics must name at least one of calls, devices, queues".into(),
            ));
        }
        Some(names) => Topics::from_names(names.iter().map(String::as_str)).map_err(|name| {
            (
                "bad-request",
                format!("unknown topic {name:?}: calls, devices or queues"),
            )
        })?,
    };
    if topics.contains(crate::reduce::Topic::Queues) && !principal.sees_queues() {
        return Err((
            "forbidden",
            "queues are for supervisors and administrators".into(),
        ));
    }
    let filter = filter
        .unwrap_or_default()
        .validated()
        .map_err(|err| ("bad-request", err.to_string()))?;
    Ok(Matcher::for_topics(filter, principal.scope.clone(), topics))
}

/// Milliseconds since `origin`, for the shared last-heard clock.
fn millis_since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Who is at the other end of a connection.
struct Client {
    connection: u64,
    remote: std::net::IpAddr,
    /// None until its first frame authenticates it.
    principal: Option<Principal>,
}

/// Waits [`AUTH_TIMEOUT`] for the `auth` frame of a connection that brought no credentials, and
/// answers it; anything else closes the connection with 4001 (or ends it, when the client left).
async fn first_frame(
    stream: &mut WebSocketStream<ReadOnly>,
    state: &AppState,
    remote: std::net::IpAddr,
    outbox: &Outbox,
) -> Result<Principal, Option<(u16, &'static str)>> {
    let first = tokio::time::timeout(AUTH_TIMEOUT, stream.next()).await;
    let text = match first {
        Ok(Some(Ok(Message::Text(text)))) => text,
        Ok(None | Some(Ok(Message::Close(_)) | Err(_))) => return Err(None),
        Ok(Some(Ok(_))) | Err(_) => {
            crate::access::gate::refused_at("ws", remote, "no_credentials");
            return Err(Some((4001, "authentication required")));
        }
    };
    let Ok(FirstFrame::Auth { token }) = serde_json::from_str::<FirstFrame>(text.as_str()) else {
        crate::access::gate::refused_at("ws", remote, "no_credentials");
        return Err(Some((4001, "authentication required")));
    };
    let principal = state
        .gate
        .authenticate_token("ws", remote, &token)
        .map_err(|_| Some((4001, "invalid credentials")))?;
    let mut reply = String::from("{\"type\":\"authenticated\",\"user\":");
    write_json_str(&mut reply, principal.name());
    reply.push('}');
    outbox.push_control(reply.into());
    Ok(principal)
}

/// After a reload of the access file: the principal's scope now, applied to the connection's
/// subscriptions at once; a user no longer in the file is closed out with 4001.
fn rescope(
    state: &AppState,
    connection: u64,
    remote: std::net::IpAddr,
    principal: &Principal,
) -> Result<Principal, (u16, &'static str)> {
    let Some(user) = &principal.user else {
        return Ok(principal.clone());
    };
    let Some(fresh) = state.gate.principal_of(&user.username) else {
        crate::access::gate::refused_at("ws", remote, "revoked");
        return Err((4001, "credentials revoked"));
    };
    state.stream.rescope(connection, &fresh.scope);
    Ok(fresh)
}

/// Reads client messages until the client closes, fails, or sends an over-long frame. Runs as its own task
/// so that delivering notifications never polls the socket for reading.
async fn read_requests(
    mut stream: WebSocketStream<ReadOnly>,
    state: AppState,
    client: Client,
    outbox: Arc<Outbox>,
    origin: Instant,
    last_heard: Arc<std::sync::atomic::AtomicU64>,
) -> Option<(u16, &'static str)> {
    let Client {
        connection,
        remote,
        principal,
    } = client;
    let mut changes = state.gate.changes();
    let mut principal = match principal {
        Some(principal) => principal,
        None => match first_frame(&mut stream, &state, remote, &outbox).await {
            Ok(principal) => principal,
            Err(close) => return close,
        },
    };
    loop {
        let message = tokio::select! {
            message = stream.next() => message,
            changed = changes.changed() => {
                if changed.is_err() {
                    return None;
                }
                match rescope(&state, connection, remote, &principal) {
                    Ok(fresh) => principal = fresh,
                    Err(close) => return Some(close),
                }
                continue;
            }
        };
        let Some(message) = message else {
            break;
        };
        last_heard.store(millis_since(origin), Ordering::Relaxed);
        match message {
            Ok(Message::Text(text)) => {
                handle_text(&state, &principal, connection, &outbox, text.as_str());
            }
            Ok(Message::Binary(_)) => {
                outbox.push_control(error_frame(
                    None,
                    "bad-request",
                    "binary frames are not supported",
                ));
            }
            Ok(Message::Close(_)) => return Some((1000, "")),
            Ok(Message::Ping(payload)) => {
                outbox.push_pong(payload);
            }
            Ok(Message::Pong(_) | Message::Frame(_)) => {}
            Err(err) => {
                tracing::debug!("WebSocket read failed: {err}");
                let too_big = matches!(err, tokio_tungstenite::tungstenite::Error::Capacity(_));
                return too_big.then_some((1009, "frame too large"));
            }
        }
    }
    None
}

async fn connection(
    io: Io,
    state: AppState,
    remote: std::net::IpAddr,
    principal: Option<Principal>,
) {
    let (read_half, write_half) = tokio::io::split(io);
    // A small read buffer: clients send little, and an idle connection should cost kilobytes.
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(MAX_CLIENT_FRAME))
        .max_frame_size(Some(MAX_CLIENT_FRAME));
    let stream =
        WebSocketStream::from_raw_socket(ReadOnly(read_half), Role::Server, Some(config)).await;
    let mut writer = FrameWriter {
        half: write_half,
        headers: Vec::new(),
    };
    let (connection, outbox) = state.stream.connect();
    metrics::gauge!("callgate_ws_connections_open").increment(1.0);
    let origin = Instant::now();
    let last_heard = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let client = Client {
        connection,
        remote,
        principal,
    };
    let mut reader = tokio::spawn(read_requests(
        stream,
        state.clone(),
        client,
        Arc::clone(&outbox),
        origin,
        Arc::clone(&last_heard),
    ));

    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.tick().await;
    // Made once: a fresh `cancelled()` future per wake-up would register with the token every time, and
    // the token is shared by every connection.
    let cancelled = state.cancel.cancelled();
    tokio::pin!(cancelled);
    let mut frames = Vec::new();
    let close: Option<(u16, &str)> = loop {
        tokio::select! {
            () = outbox.ready() => {}
            _ = ping.tick() => {
                let idle = Duration::from_millis(millis_since(origin).saturating_sub(last_heard.load(Ordering::Relaxed)));
                if idle > IDLE_TIMEOUT {
                    break Some((4010, "no answer to pings"));
                }
                match tokio::time::timeout(WRITE_TIMEOUT, writer.control(opcode::PING, &[])).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(_)) => break None,
                    Err(_) => break Some((4008, "slow consumer: resume with since")),
                }
            }
            read = &mut reader => break read.ok().flatten(),
            () = &mut cancelled => break Some((1001, "server shutting down")),
        }
        frames.clear();
        match outbox.drain(&mut frames) {
            Ok(()) => {}
            Err(DrainError::Overflowed) => {
                metrics::counter!("callgate_slow_consumer_closes_total").increment(1);
                break Some((4008, "slow consumer: resume with since"));
            }
            Err(DrainError::RenderFailed) => break Some((1011, "internal error")),
        }
        if frames.is_empty() {
            continue;
        }
        let write = writer.write(&frames);
        tokio::pin!(write);
        // Most batches fit the socket buffer and finish at once; only one that must wait for the client
        // pays for a timer.
        let written = match futures_util::poll!(&mut write) {
            Poll::Ready(result) => Ok(result),
            // A client that stopped reading must not hold up shutdown for the whole write timeout.
            Poll::Pending => tokio::select! {
                written = tokio::time::timeout(WRITE_TIMEOUT, write) => written,
                () = &mut cancelled => break Some((1001, "server shutting down")),
            },
        };
        match written {
            Ok(Ok(())) => {
                // A snapshot's chunks (a megabyte each) can follow one another without the socket ever
                // making this task wait: let the other connections on this thread run between them.
                if frames.iter().map(frame_len).sum::<usize>() >= LARGE_BATCH {
                    tokio::task::yield_now().await;
                }
            }
            Ok(Err(_)) => break None,
            Err(_) => {
                metrics::counter!("callgate_slow_consumer_closes_total").increment(1);
                break Some((4008, "slow consumer: resume with since"));
            }
        }
    };
    reader.abort();
    state.stream.disconnect(connection);
    if let Some((code, reason)) = close {
        let _ = tokio::time::timeout(Duration::from_secs(2), writer.close(code, reason)).await;
    } else {
        let _ = tokio::time::timeout(Duration::from_secs(2), writer.half.shutdown()).await;
    }
    metrics::gauge!("callgate_ws_connections_open").decrement(1.0);
}

fn frame_len(frame: &Frame) -> usize {
    match frame {
        Frame::Text(bytes) | Frame::Pong(bytes) => bytes.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths_match_the_headers_written() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 1 << 20] {
            let mut header = Vec::new();
            push_header(&mut header, opcode::TEXT, len);
            assert_eq!(header.len(), header_len(len), "payload of {len} bytes");
            assert_eq!(header[0], 0x81);
        }
    }
}
