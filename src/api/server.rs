//! The HTTP door's connections: accepting, limits, and graceful shutdown (api.md, "Limits").
//!
//! `axum::serve` has no connection limit and no header-read timeout, so a client that opens connections and
//! sends its headers a byte a minute (slowloris) holds them forever. This loop serves each connection with
//! hyper directly:
//! - at most `--max-http-connections` at once, as semaphore permits taken *before* `accept`: past the
//!   limit new connections wait in the kernel's backlog rather than being accepted and starved;
//! - request headers must arrive within [`HEADER_TIMEOUT`] (hyper's timer starts as soon as the connection
//!   waits for a request, so an idle keep-alive connection is closed after it too);
//! - bodies of more than [`MAX_BODY`] bytes are refused with 413;
//! - at shutdown each connection finishes its request in flight and closes; upgraded WebSocket
//!   connections leave this loop (and give their permit back) at the upgrade, and are counted by
//!   `--max-ws-connections` instead.
//!
//! A connection whose first request is a CometD long-poll is served by [`cometd::http1`] until a request
//! it does not serve, which hyper then takes with the bytes already read: a held connect costs no hyper
//! buffers.

use super::{AppState, cometd};
use axum::Router;
use axum::http::{Request, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How long a client has to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// Serves `router` (whose state is `state`) on `listener` until `cancel`; connections run on `tracker`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    router: Router,
    max_connections: usize,
    tls: Option<Arc<crate::tls::Tls>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit,
            () = cancel.cancelled() => return,
        };
        let Ok(permit) = permit else { return };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = cancel.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors, most likely: let some close before trying again.
                tracing::warn!("HTTP accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Nagle's algorithm would hold small frames back waiting for the client's delayed ACK (40 ms).
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {err}");
        }
        let router = router.clone();
        let state = state.clone();
        let cancel = cancel.clone();
        let tls = tls.clone();
        tracker.spawn(async move {
            let _permit = permit;
            match tls {
                None => first_long_polls(stream, peer, state, router, cancel).await,
                // Boxed: a TLS stream is large, and every plain connection's task would be as large.
                Some(tls) => {
                    Box::pin(async move {
                        match tls.accept(stream).await {
                            Ok(stream) => {
                                first_long_polls(stream, peer, state, router, cancel).await
                            }
                            Err(err) => tracing::debug!(%peer, "TLS handshake failed: {err}"),
                        }
                    })
                    .await
                }
            }
        });
    }
}

/// Serves `io`'s long-polling requests here, then hands it to hyper at its first other request.
async fn first_long_polls<I>(
    io: I,
    peer: std::net::SocketAddr,
    state: AppState,
    router: Router,
    cancel: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match cometd::http1::serve(io, peer, &state, &cancel).await {
        cometd::http1::Outcome::Closed => {}
        // Boxed: hyper's connection future is not kept in the tasks of long-polling connections.
        cometd::http1::Outcome::Handoff(io) => {
            Box::pin(connection(TokioIo::new(io), peer, router, cancel)).await;
        }
    }
}

async fn connection<I>(
    io: TokioIo<I>,
    peer: std::net::SocketAddr,
    router: Router,
    cancel: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let router = router.clone();
        // The peer's address, for the gate's per-address limits and the audit log.
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        async move {
            if too_large(&request) {
                // gws.md: CometD answers 400 to a body over 64 KiB; elsewhere it is 413.
                let status = if request.uri().path().starts_with("/api/v2/notifications") {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::PAYLOAD_TOO_LARGE
                };
                return Ok::<_, Infallible>(crate::api::http::error(status, "body over 64 KiB"));
            }
            router.oneshot(request).await
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = result {
        tracing::debug!("HTTP connection ended: {err}");
    }
}

fn too_large(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|length| length > MAX_BODY as u64)
}
