//! CometD's `websocket` transport: `GET /api/v2/notifications` with an Upgrade; each text frame is a JSON
//! array of messages, and each answer one frame. Messages go out with a connect reply, as over
//! long-polling (CometD's "meta connect delivery only"): one rule for both transports, and the ack
//! extension's batches stay whole. A client over WebSocket sends no cookie from Node, so its credentials
//! may come in the handshake's `ext.authentication` instead of the upgrade request.
//!
//! Closing the socket does not end the session: like a long-polling client that stops connecting, it
//! expires after `maxInterval`, so a client may go on over long-polling.

use super::{Connect, Dispatched, Message, dispatch, parse_messages};
use crate::api::AppState;
use crate::api::auth::Presented;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// `GET /api/v2/notifications` (and `/`, and any sub-path) with an Upgrade: the opening handshake, then
/// the connection in a tracked task.
pub async fn upgrade(
    State(state): State<AppState>,
    mut request: axum::extract::Request,
) -> Response {
    let key = match crate::api::ws::handshake_key(request.method(), request.headers()) {
        Ok(key) => key,
        Err(reason) => return crate::api::http::error(StatusCode::BAD_REQUEST, reason),
    };
    let Some(on_upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return crate::api::http::error(
            StatusCode::UPGRADE_REQUIRED,
            "connection cannot be upgraded",
        );
    };
    if state.cancel.is_cancelled() {
        return crate::api::http::error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    let presented = Presented::of(&request);
    if crate::api::origin::of(request.headers()).is_some_and(|origin| !state.origins.allows(origin))
    {
        return crate::api::origin::refused("cometd", presented.remote);
    }
    let Ok(permit) = Arc::clone(&state.ws_permits).try_acquire_owned() else {
        metrics::counter!("callgate_ws_refused_total").increment(1);
        return crate::api::http::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many WebSocket connections",
        );
    };
    let tracker = state.tracker.clone();
    tracker.spawn(async move {
        let _permit = permit;
        match on_upgrade.await {
            Ok(upgraded) => serve(TokioIo::new(upgraded), state, presented).await,
            Err(err) => tracing::debug!("CometD WebSocket upgrade failed: {err}"),
        }
    });
    crate::api::ws::switching_protocols(&key)
}

/// A JSON array of messages as one text frame.
fn array(messages: &[bytes::Bytes]) -> Frame {
    let mut text = String::with_capacity(messages.iter().map(|m| m.len() + 1).sum::<usize>() + 2);
    text.push('[');
    for (i, message) in messages.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(std::str::from_utf8(message).unwrap_or("null"));
    }
    text.push(']');
    Frame::text(text)
}

async fn serve(io: TokioIo<hyper::upgrade::Upgraded>, state: AppState, presented: Presented) {
    // tungstenite's defaults are 128 KiB read and write buffers per connection: an idle session would
    // hold 256 KiB. Reads are small control messages; each answer is written and flushed at once.
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(crate::api::server::MAX_BODY))
        .max_frame_size(Some(crate::api::server::MAX_BODY));
    let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let (mut sink, mut stream) = socket.split();
    let mut held: Option<Connect> = None;
    let close = |code: CloseCode, reason: &'static str| {
        Frame::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    loop {
        // Registered before the held connect is asked, so that a newer connect in between still wakes it.
        let mut superseded = held
            .as_ref()
            .map(|connect| Box::pin(connect.session.superseded_owned()));
        if let Some(notified) = &mut superseded {
            notified.as_mut().enable();
        }
        if let Some(connect) = &mut held
            && let Some(replies) = connect.answer(&state)
        {
            held = None;
            if sink.send(array(&replies)).await.is_err() {
                break;
            }
            continue;
        }
        let outbox = held
            .as_ref()
            .map(|connect| Arc::clone(connect.session.outbox()));
        let ready = async move {
            match outbox {
                Some(outbox) => outbox.ready().await,
                None => std::future::pending().await,
            }
        };
        let superseded = async move {
            match superseded {
                Some(notified) => notified.await,
                None => std::future::pending().await,
            }
        };
        let deadline = held
            .as_ref()
            .map_or_else(far_future, |connect| connect.deadline);
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(Frame::Text(text))) => {
                    match on_text(&state, &presented, text.as_str(), &mut held).await {
                        Ok(replies) => {
                            if !replies.is_empty() && sink.send(array(&replies)).await.is_err() {
                                break;
                            }
                        }
                        Err(problem) => {
                            metrics::counter!("callgate_cometd_bad_requests_total").increment(1);
                            let _ = sink.send(close(CloseCode::Policy, problem)).await;
                            break;
                        }
                    }
                }
                Some(Ok(Frame::Ping(payload))) => {
                    if sink.send(Frame::Pong(payload)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Frame::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            () = ready => {}
            () = superseded => {}
            () = tokio::time::sleep_until(deadline) => {}
            () = state.cancel.cancelled() => {
                let _ = sink.send(close(CloseCode::Away, "shutting down")).await;
                break;
            }
        }
    }
}

/// A time no connect waits for.
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + std::time::Duration::from_secs(86_400)
}

/// Answers a frame of messages; a connect becomes the held one (answering the one held before at once).
/// Fails when the frame is not a Bayeux message array.
async fn on_text(
    state: &AppState,
    presented: &Presented,
    text: &str,
    held: &mut Option<Connect>,
) -> Result<Vec<bytes::Bytes>, &'static str> {
    let messages: Vec<Message> = parse_messages(text.as_bytes())?;
    let mut replies = Vec::new();
    for message in messages {
        match dispatch(state, presented, message).await {
            Dispatched::Reply(reply) => replies.push(reply),
            Dispatched::Connect(message, session) => {
                // The connect held before is answered at once, without messages (dropping it ends it).
                if let Some(older) = held.take() {
                    replies.extend(older.superseded_reply());
                }
                match Connect::begin(state, &session, &message) {
                    Ok(connect) => *held = Some(connect),
                    Err(reply) => replies.extend(reply),
                }
            }
        }
    }
    Ok(replies)
}
