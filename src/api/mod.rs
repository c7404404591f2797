//! The HTTP door: REST snapshots, health, metrics, and the WebSocket, all on one port (axum).

pub mod auth;
pub mod cometd;
pub mod feed;
pub mod gws;
pub mod http;
pub mod origin;
pub mod server;
pub mod web;
pub mod ws;

use crate::access::Gate;
use crate::stream::Stream;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the handlers share, behind one `Arc`: axum clones the state for every request (and every
/// middleware layer), and a clone of the fields themselves (a dozen reference counts and a cancellation
/// token's tree lock) cost 8% of the gateway's CPU under CometD long-polling.
pub type AppState = Arc<Shared>;

/// The fields of [`AppState`].
pub struct Shared {
    /// The ordered stream: the calls, subscriptions and delivery.
    pub stream: Arc<Stream>,
    /// The public base URL, without a trailing slash.
    pub base_url: Arc<str>,
    /// The Prometheus recorder.
    pub metrics: PrometheusHandle,
    /// True once every listener is bound and the pipeline runs; false again while shutting down.
    pub ready: Arc<AtomicBool>,
    /// Cancelled at shutdown.
    pub cancel: CancellationToken,
    /// Tracks WebSocket tasks, which axum's graceful shutdown does not wait for.
    pub tracker: TaskTracker,
    /// One permit per WebSocket connection allowed at once (`--max-ws-connections`).
    pub ws_permits: Arc<Semaphore>,
    /// Who may see what (access.md).
    pub gate: Arc<Gate>,
    /// Whether HTTP is served over TLS (session cookies are then `Secure`).
    pub tls: bool,
    /// The browser origins allowed (access.md).
    pub origins: Arc<origin::Origins>,
    /// The CometD sessions (gws.md).
    pub cometd: Arc<cometd::Sessions>,
    /// The analytics feed (with a journal).
    pub feed: Option<Arc<feed::Feed>>,
}

/// All routes.
pub fn router(state: AppState) -> axum::Router {
    use axum::routing::{get, post};
    // Behind the gate: every route that returns call data. The WebSocket checks its own credentials
    // (they may come in its first frame); health and metrics carry no customer data.
    let rest = axum::Router::new()
        .route("/api/v2/calls", get(http::calls))
        .route("/api/v2/devices", get(gws::devices))
        .route("/api/v2/devices/{device_id}", get(gws::device))
        .route("/api/v2/queues", get(http::queues))
        .route("/api/v2/queues/{queue_id}", get(http::queue))
        .route("/api/v2/me", get(gws::get_me).post(gws::post_me))
        .route(
            "/api/v2/me/devices",
            get(gws::my_devices).post(gws::post_me_operation),
        )
        .route(
            "/api/v2/me/devices/{device_id}",
            get(gws::my_device).post(gws::post_me_operation),
        )
        .route(
            "/api/v2/me/calls",
            get(gws::my_calls).post(gws::post_me_operation),
        )
        .route(
            "/api/v2/me/calls/{call_id}",
            get(gws::my_call).post(gws::post_me_operation),
        )
        .route("/api/v2/me/{*operation}", post(gws::post_me_operation))
        .route("/api/v2/users", get(gws::users))
        .route("/api/v2/users/{user_id}", get(gws::user))
        .route("/api/v2/devices/{device_id}/calls", get(http::device_calls))
        .route("/callgate/feed", get(feed::feed))
        .route(
            "/api/v2/devices/{device_id}/calls/{call_id}",
            get(http::device_call),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::rest,
        ));
    axum::Router::new()
        .merge(rest)
        .merge(web::routes())
        .route("/api/v2/ws", get(ws::upgrade))
        // Three routes: axum's catch-all does not match an empty tail, and `/x` and `/x/` differ. The
        // handshake authenticates; a session's later requests are its `clientId`'s.
        .route(
            "/api/v2/notifications",
            post(cometd::long_poll).get(cometd::upgrade),
        )
        .route(
            "/api/v2/notifications/",
            post(cometd::long_poll).get(cometd::upgrade),
        )
        .route(
            "/api/v2/notifications/{*path}",
            post(cometd::long_poll).get(cometd::upgrade),
        )
        .route("/healthz", get(http::healthz))
        .route("/readyz", get(http::readyz))
        .route("/metrics", get(http::metrics))
        .fallback(http::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            origin::cors,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(server::MAX_BODY))
        .with_state(state)
}
