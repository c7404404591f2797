//! The WebSocket door (api.md, "WebSocket"): subscriptions with snapshot or resume, then notifications.
//!
//! Close codes: 1000 normal, 1001 the gateway is shutting down, 1009 a client frame over 64 KiB, 4008 the
//! client read too slowly (resume with `since`), 4010 no answer to pings for 60 s.

use super::AppState;
use super::http::error;
use crate::event::kv::write_json_str;
use crate::fanout::outbox::Outbox;
use crate::fanout::{CallFilter, Since};
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Largest client frame accepted.
pub const MAX_CLIENT_FRAME: usize = 64 * 1024;
/// Read buffer per connection.
const READ_BUFFER: usize = 4 * 1024;
/// How often the server pings.
const PING_INTERVAL: Duration = Duration::from_secs(20);
/// A connection that has sent nothing (not even a pong) for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one batch of frames may take to write before the client counts as stalled.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// `GET /api/v2/ws`.
pub async fn upgrade(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    if state.cancel.is_cancelled() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    if state.ws_open.fetch_add(1, Ordering::AcqRel) >= state.ws_max {
        state.ws_open.fetch_sub(1, Ordering::AcqRel);
        metrics::counter!("callgate_ws_refused_total").increment(1);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many WebSocket connections",
        );
    }
    let tracker = state.tracker.clone();
    let slot = Arc::clone(&state.ws_open);
    // A small read buffer: clients send little, tungstenite zero-fills the buffer's free space on every
    // read attempt, and an idle connection should cost kilobytes, not the default 128 KiB.
    ws.read_buffer_size(READ_BUFFER)
        .max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        // A handshake that fails after the slot was counted must give it back.
        .on_failed_upgrade(move |_| {
            slot.fetch_sub(1, Ordering::AcqRel);
        })
        .on_upgrade(move |socket| async move {
            // Tracked so that shutdown waits for the close frame to go out (axum does not wait for
            // upgraded connections).
            let open = Arc::clone(&state.ws_open);
            tracker
                .spawn(async move {
                    connection(socket, state).await;
                    open.fetch_sub(1, Ordering::AcqRel);
                })
                .await
                .ok();
        })
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum Request {
    Subscribe {
        sub: String,
        #[serde(default)]
        filter: Option<CallFilter>,
        #[serde(default)]
        since: Option<Since>,
    },
    Unsubscribe {
        sub: String,
    },
    Ping,
}

fn error_frame(sub: Option<&str>, code: &str, message: &str) -> Utf8Bytes {
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

fn handle_text(state: &AppState, connection: u64, outbox: &Outbox, text: &str) {
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
        Request::Subscribe { sub, filter, since } => {
            let filter = match filter.unwrap_or_default().validated() {
                Ok(filter) => filter,
                Err(err) => {
                    outbox.push_control(error_frame(Some(&sub), "bad-request", &err.to_string()));
                    return;
                }
            };
            if let Err(err) = state.fanout.subscribe(connection, &sub, filter, since) {
                outbox.push_control(error_frame(Some(&sub), err.code(), &err.to_string()));
            }
        }
        Request::Unsubscribe { sub } => {
            if let Err(err) = state.fanout.unsubscribe(connection, &sub) {
                outbox.push_control(error_frame(Some(&sub), err.code(), &err.to_string()));
            }
        }
        Request::Ping => {
            outbox.push_control(Utf8Bytes::from_static("{\"type\":\"pong\"}"));
        }
    }
}

/// Milliseconds since `origin`, for the shared last-heard clock.
fn millis_since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Reads client messages until the client closes, fails, or sends an over-long frame. Runs as its own task
/// so that delivering notifications never polls the socket for reading.
async fn read_requests(
    mut stream: futures_util::stream::SplitStream<WebSocket>,
    state: AppState,
    connection: u64,
    outbox: Arc<Outbox>,
    origin: Instant,
    last_heard: Arc<std::sync::atomic::AtomicU64>,
) -> Option<(u16, &'static str)> {
    while let Some(message) = stream.next().await {
        last_heard.store(millis_since(origin), Ordering::Relaxed);
        match message {
            Ok(Message::Text(text)) => handle_text(&state, connection, &outbox, text.as_str()),
            Ok(Message::Binary(_)) => {
                outbox.push_control(error_frame(
                    None,
                    "bad-request",
                    "binary frames are not supported",
                ));
            }
            Ok(Message::Close(_)) => return Some((1000, "")),
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Err(err) => {
                tracing::debug!("WebSocket read failed: {err}");
                let text = err.to_string().to_lowercase();
                let too_big = text.contains("space limit")
                    || text.contains("too long")
                    || text.contains("size");
                return too_big.then_some((1009, "frame too large"));
            }
        }
    }
    None
}

async fn connection(socket: WebSocket, state: AppState) {
    let (connection, outbox) = state.fanout.connect();
    metrics::gauge!("callgate_ws_connections_open").increment(1.0);
    let (mut sink, stream) = socket.split();
    let origin = Instant::now();
    let last_heard = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut reader = tokio::spawn(read_requests(
        stream,
        state.clone(),
        connection,
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
                if sink.send(Message::Ping(bytes::Bytes::new())).await.is_err() {
                    break None;
                }
                continue;
            }
            read = &mut reader => break read.ok().flatten(),
            () = &mut cancelled => break Some((1001, "server shutting down")),
        }
        frames.clear();
        if outbox.drain(&mut frames).is_err() {
            metrics::counter!("callgate_slow_consumer_closes_total").increment(1);
            break Some((4008, "slow consumer: resume with since"));
        }
        if frames.is_empty() {
            continue;
        }
        // Batch every queued frame into one flush: one write per frame caps fanout far lower.
        let write = async {
            for frame in frames.drain(..) {
                sink.feed(Message::Text(frame)).await?;
            }
            sink.flush().await
        };
        tokio::pin!(write);
        // Most batches fit the socket buffer and finish at once; only one that must wait for the client
        // pays for a timer.
        let written = match futures_util::poll!(&mut write) {
            std::task::Poll::Ready(result) => Ok(result),
            std::task::Poll::Pending => tokio::time::timeout(WRITE_TIMEOUT, write).await,
        };
        match written {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break None,
            Err(_) => {
                metrics::counter!("callgate_slow_consumer_closes_total").increment(1);
                break Some((4008, "slow consumer: resume with since"));
            }
        }
    };
    reader.abort();
    state.fanout.disconnect(connection);
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            sink.send(Message::Close(Some(frame))),
        )
        .await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
    metrics::gauge!("callgate_ws_connections_open").decrement(1.0);
}
