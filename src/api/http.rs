//! REST handlers (api.md, "HTTP"): snapshots of the store, health, metrics.

use super::AppState;
use crate::fanout::CallFilter;
use crate::json::write_json_str;
use crate::store::StoredCall;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering;

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `{"statusCode":N,"statusMessage":"..."}` with HTTP status N.
pub fn error(status: StatusCode, message: &str) -> Response {
    let mut body = format!("{{\"statusCode\":{},\"statusMessage\":", status.as_u16());
    write_json_str(&mut body, message);
    body.push('}');
    json_response(status, body)
}

fn push_calls(body: &mut String, calls: &[StoredCall]) {
    body.push('[');
    for (i, call) in calls.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(std::str::from_utf8(&call.json).unwrap_or("null"));
    }
    body.push(']');
}

/// `GET /api/v2/calls`, with the filter members as query parameters.
pub async fn calls(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let filter = match CallFilter::from_query(query.as_deref().unwrap_or("")) {
        Ok(filter) => filter,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let calls = state.store.select(|call| filter.matches(call));
    let mut body = String::from("{\"statusCode\":0,\"calls\":");
    push_calls(&mut body, &calls);
    body.push('}');
    json_response(StatusCode::OK, body)
}

/// `GET /api/v2/devices`: every device with calls, and its calls.
pub async fn devices(State(state): State<AppState>) -> Response {
    let mut calls = state.store.select(|_| true);
    calls.sort_by(|a, b| {
        (&*a.meta.dn, &*a.meta.device_id, a.meta.key).cmp(&(
            &*b.meta.dn,
            &*b.meta.device_id,
            b.meta.key,
        ))
    });
    let mut body = String::from("{\"statusCode\":0,\"devices\":[");
    let mut start = 0;
    let mut first = true;
    while start < calls.len() {
        let device_id = &calls[start].meta.device_id;
        let end = calls[start..]
            .iter()
            .position(|c| c.meta.device_id != *device_id)
            .map_or(calls.len(), |p| start + p);
        if !first {
            body.push(',');
        }
        first = false;
        body.push_str("{\"id\":");
        write_json_str(&mut body, device_id);
        body.push_str(",\"phoneNumber\":");
        write_json_str(&mut body, &calls[start].meta.dn);
        body.push_str(",\"uri\":");
        write_json_str(
            &mut body,
            &format!("{}/api/v2/devices/{device_id}", state.base_url),
        );
        body.push_str(",\"calls\":");
        push_calls(&mut body, &calls[start..end]);
        body.push('}');
        start = end;
    }
    body.push_str("]}");
    json_response(StatusCode::OK, body)
}

/// `GET /api/v2/devices/{deviceId}/calls`.
pub async fn device_calls(
    State(state): State<AppState>,
    Path(device_id): Path<String>,
) -> Response {
    let calls = state.store.select(|call| *call.device_id == *device_id);
    if calls.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no device {device_id} with calls"),
        );
    }
    let mut body = String::from("{\"statusCode\":0,\"calls\":");
    push_calls(&mut body, &calls);
    body.push('}');
    json_response(StatusCode::OK, body)
}

/// `GET /api/v2/devices/{deviceId}/calls/{id}`: `{"statusCode":0,"call":{...}}`.
pub async fn device_call(
    State(state): State<AppState>,
    Path((device_id, call_id)): Path<(String, String)>,
) -> Response {
    let calls = state
        .store
        .select(|call| *call.device_id == *device_id && *call.call_id == *call_id);
    match calls.last() {
        Some(call) => json_response(
            StatusCode::OK,
            format!(
                "{{\"statusCode\":0,\"call\":{}}}",
                std::str::from_utf8(&call.json).unwrap_or("null")
            ),
        ),
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
    let stats = state.fanout.stats();
    metrics::gauge!("callgate_calls_held").set(state.store.len() as f64);
    metrics::gauge!("callgate_live_calls").set(state.store.live() as f64);
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
