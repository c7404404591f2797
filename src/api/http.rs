//! REST handlers (api.md, "HTTP"): snapshots of the store, health, metrics.

use super::AppState;
use crate::access::Principal;
use crate::json::write_json_str;
use crate::store::{StoredCall, push_documents};
use crate::subscriptions::{CallFilter, Matcher};
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering;

/// A JSON body with `status`.
pub(super) fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `{"statusCode":N,"statusMessage":"..."}` with HTTP status N.
pub fn error(status: StatusCode, message: &str) -> Response {
    let mut body = format!("{{\"statusCode\":{},\"statusMessage\":", status.as_u16());
    write_json_str(&mut body, message);
    body.push('}');
    json_response(status, body)
}

fn push_calls<'a>(body: &mut String, calls: impl IntoIterator<Item = &'a StoredCall>) {
    body.push('[');
    push_documents(body, calls, "REST");
    body.push(']');
}

/// `GET /api/v2/calls`, with the filter members as query parameters: live and lingering calls, in key
/// order. Found through the filter's most selective index, from a view taken in constant time.
pub async fn calls(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Response {
    let filter = match CallFilter::from_query(query.as_deref().unwrap_or("")) {
        Ok(filter) => filter,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let matcher = Matcher::new(filter, principal.scope);
    let view = state.stream.view();
    let mut body = String::from("{\"statusCode\":0,\"calls\":");
    push_calls(
        &mut body,
        view.select(matcher.lookup())
            .filter(|call| matcher.matches(&call.meta)),
    );
    body.push('}');
    json_response(StatusCode::OK, body)
}

/// `GET /api/v2/devices/{deviceId}/calls`.
pub async fn device_calls(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(device_id): Path<String>,
) -> Response {
    let view = state.stream.view();
    let calls = view.device_calls(&device_id);
    let in_scope = principal.scope.allows_device(&device_id);
    if !in_scope && !calls.is_empty() {
        super::auth::out_of_scope(&principal, "device");
    }
    if calls.is_empty() || !in_scope {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no device {device_id} with calls"),
        );
    }
    let mut body = String::from("{\"statusCode\":0,\"calls\":");
    push_calls(&mut body, calls);
    body.push('}');
    json_response(StatusCode::OK, body)
}

/// `GET /api/v2/devices/{deviceId}/calls/{id}`: `{"statusCode":0,"call":{...}}`. When the device has
/// two resources with the id (a CallUUID seen twice), the newest.
pub async fn device_call(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((device_id, call_id)): Path<(String, String)>,
) -> Response {
    let view = state.stream.view();
    let found = view
        .device_calls(&device_id)
        .into_iter()
        .rfind(|call| *call.meta.call_id == *call_id);
    let found = match found {
        Some(_) if !principal.scope.allows_device(&device_id) => {
            super::auth::out_of_scope(&principal, "call");
            None
        }
        found => found,
    };
    match found {
        Some(call) => match call.json() {
            Ok(json) => json_response(
                StatusCode::OK,
                format!(
                    "{{\"statusCode\":0,\"call\":{}}}",
                    std::str::from_utf8(&json).unwrap_or("null")
                ),
            ),
            Err(unpack) => {
                tracing::error!(call = %call.meta.call_id, "REST: {unpack}");
                error(StatusCode::INTERNAL_SERVER_ERROR, "the call cannot be read")
            }
        },
        None => error(
            StatusCode::NOT_FOUND,
            &format!("no call {call_id} at device {device_id}"),
        ),
    }
}

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> Response {
    json_response(
        StatusCode::OK,
        "{\"statusCode\":0,\"status\":\"alive\"}".to_owned(),
    )
}

/// `GET /readyz`: ready to serve (503 before start-up completes and while shutting down).
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        json_response(
            StatusCode::OK,
            "{\"statusCode\":0,\"status\":\"ready\"}".to_owned(),
        )
    } else {
        error(StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let stats = state.stream.stats();
    metrics::gauge!("callgate_calls_held").set(stats.calls as f64);
    metrics::gauge!("callgate_live_calls").set(stats.live_calls as f64);
    metrics::gauge!("callgate_ws_connections").set(stats.connections as f64);
    metrics::gauge!("callgate_subscriptions").set(stats.subscriptions as f64);
    metrics::gauge!("callgate_seq").set(stats.seq as f64);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// Anything else: a JSON 404.
pub async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such resource")
}

/// `GET /api/v2/queues`: every queue resource, in DN order (supervisors, administrators and open mode;
/// 403 for anyone else, whatever exists).
pub async fn queues(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Response {
    if !principal.sees_queues() {
        return queues_denied(&principal);
    }
    let view = state.stream.view();
    let mut queues: Vec<&crate::store::StoredQueue> = view.queues_after(None).collect();
    queues.sort_by(|a, b| (&a.meta.dn, &a.meta.queue_id).cmp(&(&b.meta.dn, &b.meta.queue_id)));
    let mut body = String::from("{\"statusCode\":0,\"queues\":[");
    for (i, queue) in queues.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(queue.json());
    }
    body.push_str("]}");
    json_response(StatusCode::OK, body)
}

/// `GET /api/v2/queues/{id}`: one queue resource.
pub async fn queue(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(queue_id): Path<String>,
) -> Response {
    if !principal.sees_queues() {
        return queues_denied(&principal);
    }
    let view = state.stream.view();
    match view.queue(&queue_id) {
        Some(queue) => json_response(
            StatusCode::OK,
            format!("{{\"statusCode\":0,\"queue\":{}}}", queue.json()),
        ),
        None => error(StatusCode::NOT_FOUND, &format!("no queue {queue_id}")),
    }
}

/// The answer to an agent asking for queues: forbidden by role, audited and counted.
fn queues_denied(principal: &Principal) -> Response {
    tracing::info!(target: "callgate::audit", door = "rest", user = principal.name(), "access denied: queues need a supervisor or administrator");
    metrics::counter!("callgate_access_denied_total", "door" => "rest", "reason" => "role")
        .increment(1);
    error(
        StatusCode::FORBIDDEN,
        "queues are for supervisors and administrators",
    )
}
