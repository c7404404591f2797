//! The GWS 8.5 read side over REST (gws.md, "REST"): `/api/v2/me` and its devices and calls, the users a
//! supervisor may see, single device resources, and the read-only answer to operations.
//!
//! Every answer is `{"statusCode":N,...}` with GWS's codes (0 ok, 1 missing parameter, 3 forbidden,
//! 6 not found, 20 not authenticated). A device is listed when it has a state of its own (the store),
//! calls, or an owner in the access file; one never named by an event shows the default state, written
//! by the same writer as the reducer's.

use super::AppState;
use crate::access::{OwnedDevice, Principal, User};
use crate::json::write_json_str;
use crate::reduce::{DeviceDoc, DeviceState};
use crate::store::{StoreView, StoredCall, push_documents};
use crate::subscriptions::Scope;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;

/// GWS's status codes.
mod code {
    pub const MISSING_PARAMETER: u16 = 1;
    pub const FORBIDDEN: u16 = 3;
    pub const NOT_FOUND: u16 = 6;
    pub const NOT_AUTHENTICATED: u16 = 20;
    /// A fault of this process (a stored document that does not unpack); never input's.
    pub const INTERNAL: u16 = 500;
}

use super::http::json_response;

/// `{"statusCode":code,"statusMessage":message}` with HTTP status `status`.
fn gws_error(status: StatusCode, code: u16, message: &str) -> Response {
    let mut body = format!("{{\"statusCode\":{code},\"statusMessage\":");
    write_json_str(&mut body, message);
    body.push('}');
    json_response(status, body)
}

fn not_found(what: &str) -> Response {
    gws_error(StatusCode::NOT_FOUND, code::NOT_FOUND, what)
}

/// Why a request for a user's resources is refused.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// Open mode: there are no users.
    NoUser,
    /// An agent asked for other users.
    NotASupervisor,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::NoUser => gws_error(
                StatusCode::UNAUTHORIZED,
                code::NOT_AUTHENTICATED,
                "callgate runs open (no access file): there is no user to be",
            ),
            Refusal::NotASupervisor => gws_error(
                StatusCode::FORBIDDEN,
                code::FORBIDDEN,
                "users are for supervisors and administrators",
            ),
        }
    }
}

/// The principal's user; open mode has none, so the `me` resources do not exist there.
fn me(principal: &Principal) -> Result<&Arc<User>, Refusal> {
    principal.user.as_ref().ok_or(Refusal::NoUser)
}

/// The id of user `username`: the UUID v5, in the URL namespace, of `user:{username}`.
pub fn user_id(username: &str) -> String {
    crate::access::file::user_id(username)
}

/// One device a listing shows: its identity and, when it has a state of its own, its stored document.
struct Listed<'v> {
    id: Arc<str>,
    dn: Arc<str>,
    server: String,
    stored: Option<&'v crate::store::StoredDevice>,
}

impl Listed<'_> {
    /// The device resource.
    fn json(&self, base_url: &str) -> String {
        match self.stored {
            Some(stored) => stored.json().to_owned(),
            None => DeviceDoc {
                device_id: &self.id,
                server: &self.server,
                dn: &self.dn,
                state: &DeviceState::default(),
                base_url,
            }
            .to_json(),
        }
    }
}

/// Every device `scope` sees that the gateway knows (a state of its own, calls, or an owner), in DN
/// order (then id).
fn known_devices<'v>(
    view: &'v StoreView,
    directory: &[OwnedDevice],
    scope: &Scope,
) -> BTreeMap<(Arc<str>, Arc<str>), Listed<'v>> {
    let mut known = BTreeMap::new();
    for owned in directory {
        if scope.allows_device(&owned.id) {
            let dn: Arc<str> = owned.device.dn.as_str().into();
            known.insert(
                (Arc::clone(&dn), Arc::clone(&owned.id)),
                Listed {
                    id: Arc::clone(&owned.id),
                    dn,
                    server: owned.device.server.clone(),
                    stored: view.device(&owned.id),
                },
            );
        }
    }
    for call in view.by_device() {
        let meta = &call.meta;
        if scope.allows_device(&meta.device_id) {
            known
                .entry((Arc::clone(&meta.dn), Arc::clone(&meta.device_id)))
                .or_insert_with(|| Listed {
                    id: Arc::clone(&meta.device_id),
                    dn: Arc::clone(&meta.dn),
                    server: String::new(),
                    stored: view.device(&meta.device_id),
                });
        }
    }
    for stored in view.devices_after(None) {
        let meta = &stored.meta;
        if scope.allows_device(&meta.device_id) {
            known
                .entry((Arc::clone(&meta.dn), Arc::clone(&meta.device_id)))
                .or_insert_with(|| Listed {
                    id: Arc::clone(&meta.device_id),
                    dn: Arc::clone(&meta.dn),
                    server: String::new(),
                    stored: Some(stored),
                });
        }
    }
    known
}

/// The devices `scope` sees that the gateway knows but holds in their default state (an owner's device
/// never heard of, a device with calls and no device event), rendered: what a WebSocket snapshot adds
/// to the stored devices so that it lists the devices `GET /api/v2/devices` lists.
pub fn default_devices(
    view: &StoreView,
    directory: &[OwnedDevice],
    scope: &Scope,
    base_url: &str,
) -> Vec<crate::stream::PlainDevice> {
    known_devices(view, directory, scope)
        .into_values()
        .filter(|listed| listed.stored.is_none())
        .map(|listed| crate::stream::PlainDevice {
            json: listed.json(base_url),
            id: listed.id,
            dn: listed.dn,
        })
        .collect()
}

/// `user`'s own devices, in the order of its `devices`.
fn own_devices<'v>(view: &'v StoreView, user: &User) -> Vec<Listed<'v>> {
    user.devices
        .iter()
        .map(|device| {
            let id: Arc<str> = device.id().into();
            Listed {
                stored: view.device(&id),
                id,
                dn: device.dn.as_str().into(),
                server: device.server.clone(),
            }
        })
        .collect()
}

/// The live calls of `devices`, in key order per device.
fn live_calls<'v>(view: &'v StoreView, devices: &[Listed<'_>]) -> Vec<&'v StoredCall> {
    devices
        .iter()
        .flat_map(|device| view.device_calls(&device.id))
        .filter(|call| call.meta.is_live())
        .collect()
}

/// Which subresources a `?subresources=` asks for (`*` or a comma list).
#[derive(Debug, Default, Clone, Copy)]
struct Subresources {
    devices: bool,
    calls: bool,
    features: bool,
    channels: bool,
    settings: bool,
}

impl Subresources {
    fn from_query(query: Option<&str>) -> Self {
        let mut asked = Subresources::default();
        let pairs = form_urlencoded::parse(query.unwrap_or("").as_bytes());
        for (key, value) in pairs {
            if key != "subresources" {
                continue;
            }
            for name in value.split(',').map(str::trim) {
                match name {
                    "*" => {
                        asked = Subresources {
                            devices: true,
                            calls: true,
                            features: true,
                            channels: true,
                            settings: true,
                        };
                    }
                    "devices" => asked.devices = true,
                    "calls" => asked.calls = true,
                    "features" => asked.features = true,
                    "channels" => asked.channels = true,
                    "settings" => asked.settings = true,
                    _ => {}
                }
            }
        }
        asked
    }
}

/// Whether `?fields=*` asks for whole resources instead of their URIs.
fn all_fields(query: Option<&str>) -> bool {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .any(|(key, value)| key == "fields" && value == "*")
}

/// Writes a user resource, with the subresources asked for.
fn push_user(
    out: &mut String,
    state: &AppState,
    view: &StoreView,
    user: &User,
    asked: Subresources,
) {
    let id = user_id(&user.username);
    out.push_str("{\"id\":");
    write_json_str(out, &id);
    out.push_str(",\"userName\":");
    write_json_str(out, &user.username);
    out.push_str(",\"firstName\":");
    write_json_str(out, user.first_name.as_deref().unwrap_or(""));
    out.push_str(",\"lastName\":");
    write_json_str(out, user.last_name.as_deref().unwrap_or(""));
    out.push_str(",\"roles\":[");
    let roles = [
        (user.roles.agent, "\"ROLE_AGENT\""),
        (user.roles.supervisor, "\"ROLE_SUPERVISOR\""),
        (user.roles.admin, "\"ROLE_ADMIN\""),
    ];
    let names: Vec<&str> = roles
        .iter()
        .filter(|(has, _)| *has)
        .map(|(_, n)| *n)
        .collect();
    out.push_str(&names.join(","));
    out.push_str("],\"enabled\":true,\"changePasswordOnFirstLogin\":false,\"uri\":");
    write_json_str(out, &format!("{}/api/v2/users/{id}", state.base_url));
    out.push_str(",\"path\":");
    write_json_str(out, &format!("/users/{id}"));
    let devices = own_devices(view, user);
    if asked.devices {
        out.push_str(",\"devices\":[");
        push_device_docs(out, &devices, &state.base_url);
        out.push(']');
    }
    if asked.calls {
        out.push_str(",\"calls\":[");
        push_documents(out, live_calls(view, &devices), "GWS REST");
        out.push(']');
    }
    if asked.features {
        out.push_str(",\"features\":[]");
    }
    if asked.channels {
        // The voice channel's state is the user's first device's agent state (logged out without one).
        let device = devices.first().map(|d| d.json(&state.base_url));
        let user_state = device
            .as_deref()
            .and_then(|json| serde_json::from_str::<serde_json::Value>(json).ok())
            .map(|doc| doc["userState"].to_string())
            .unwrap_or_else(|| {
                r#"{"id":"LoggedOut","displayName":"Logged Out","state":"LoggedOut"}"#.to_owned()
            });
        out.push_str(",\"channels\":[{\"name\":\"voice\",\"userState\":");
        out.push_str(&user_state);
        out.push_str("}]");
    }
    if asked.settings {
        out.push_str(",\"settings\":{}");
    }
    out.push('}');
}

fn push_device_docs(out: &mut String, devices: &[Listed<'_>], base_url: &str) {
    for (i, device) in devices.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&device.json(base_url));
    }
}

/// `GET /api/v2/me[?subresources=...]`.
pub async fn get_me(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Response {
    let user = match me(&principal) {
        Ok(user) => user,
        Err(refusal) => return refusal.into_response(),
    };
    user_response(&state, user, query.as_deref())
}

/// `{"statusCode":0,"user":{...}}` with the subresources `query` asks for.
fn user_response(state: &AppState, user: &User, query: Option<&str>) -> Response {
    let view = state.stream.view();
    let mut body = String::from("{\"statusCode\":0,\"user\":");
    push_user(
        &mut body,
        state,
        &view,
        user,
        Subresources::from_query(query),
    );
    body.push('}');
    json_response(StatusCode::OK, body)
}

/// `GET /api/v2/me/devices[?fields=*]`.
pub async fn my_devices(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Response {
    let user = match me(&principal) {
        Ok(user) => user,
        Err(refusal) => return refusal.into_response(),
    };
    let view = state.stream.view();
    let devices = own_devices(&view, user);
    let mut body = String::from("{\"statusCode\":0,");
    if all_fields(query.as_deref()) {
        body.push_str("\"devices\":[");
        push_device_docs(&mut body, &devices, &state.base_url);
    } else {
        body.push_str("\"uris\":[");
        for (i, device) in devices.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            write_json_str(
                &mut body,
                &format!("{}/api/v2/devices/{}", state.base_url, device.id),
            );
        }
    }
    body.push_str("]}");
    json_response(StatusCode::OK, body)
}

/// `GET /api/v2/me/devices/{id}`: one of its own devices.
pub async fn my_device(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(device_id): Path<String>,
) -> Response {
    let user = match me(&principal) {
        Ok(user) => user,
        Err(refusal) => return refusal.into_response(),
    };
    let view = state.stream.view();
    let devices = own_devices(&view, user);
    match devices.iter().find(|device| *device.id == *device_id) {
        Some(device) => json_response(
            StatusCode::OK,
            format!(
                "{{\"statusCode\":0,\"device\":{}}}",
                device.json(&state.base_url)
            ),
        ),
        None => not_found(&format!("no device {device_id} of yours")),
    }
}

/// `GET /api/v2/me/calls[?fields=*]`: the live calls of its devices.
pub async fn my_calls(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Response {
    let user = match me(&principal) {
        Ok(user) => user,
        Err(refusal) => return refusal.into_response(),
    };
    let view = state.stream.view();
    let devices = own_devices(&view, user);
    let calls = live_calls(&view, &devices);
    let mut body = String::from("{\"statusCode\":0,");
    if all_fields(query.as_deref()) {
        body.push_str("\"calls\":[");
        push_documents(&mut body, calls, "GWS REST");
    } else {
        body.push_str("\"uris\":[");
        for (i, call) in calls.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            write_json_str(
                &mut body,
                &format!("{}/api/v2/me/calls/{}", state.base_url, call.meta.call_id),
            );
        }
    }
    body.push_str("]}");
    json_response(StatusCode::OK, body)
}

/// `GET /api/v2/me/calls/{id}`: a call of its own devices (the newest with that id).
pub async fn my_call(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(call_id): Path<String>,
) -> Response {
    let user = match me(&principal) {
        Ok(user) => user,
        Err(refusal) => return refusal.into_response(),
    };
    let view = state.stream.view();
    let devices = own_devices(&view, user);
    let found = devices
        .iter()
        .flat_map(|device| view.device_calls(&device.id))
        .filter(|call| *call.meta.call_id == *call_id)
        .max_by_key(|call| call.seq);
    let Some(call) = found else {
        return not_found(&format!("no call {call_id} of yours"));
    };
    match call.json() {
        Ok(json) => json_response(
            StatusCode::OK,
            format!(
                "{{\"statusCode\":0,\"call\":{}}}",
                std::str::from_utf8(&json).unwrap_or("null")
            ),
        ),
        Err(unpack) => {
            tracing::error!(call = %call.meta.call_id, "GWS REST: {unpack}");
            gws_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                code::INTERNAL,
                "the call cannot be read",
            )
        }
    }
}

/// The `operationName` of a request body, if it is a JSON object naming one.
fn operation_name(body: &Bytes) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get("operationName")?.as_str().map(str::to_owned)
}

/// `POST /api/v2/me`: StartContactCenterSession and EndContactCenterSession succeed (there is nothing to
/// start: callgate only watches); every other operation is refused, callgate being read-only.
pub async fn post_me(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Response {
    let user = match me(&principal) {
        Ok(user) => user,
        Err(refusal) => return refusal.into_response(),
    };
    match operation_name(&body).as_deref() {
        None => gws_error(
            StatusCode::BAD_REQUEST,
            code::MISSING_PARAMETER,
            "operationName is missing",
        ),
        Some("StartContactCenterSession") => {
            send_devices(&state, user);
            json_response(StatusCode::OK, "{\"statusCode\":0}".into())
        }
        Some("EndContactCenterSession") => {
            json_response(StatusCode::OK, "{\"statusCode\":0}".into())
        }
        Some(operation) => read_only(operation),
    }
}

/// Queues one DeviceStateChangeMessage with `user`'s devices to each of its CometD sessions (gws.md:
/// a GWS client starts its contact-center session and expects its devices' state).
fn send_devices(state: &AppState, user: &User) {
    let view = state.stream.view();
    let devices = own_devices(&view, user);
    let mut message = String::from(
        "{\"channel\":\"/v2/me/devices\",\"data\":{\"messageType\":\"DeviceStateChangeMessage\",\"devices\":[",
    );
    push_device_docs(&mut message, &devices, &state.base_url);
    message.push_str("]}}");
    let message = Bytes::from(message);
    for session in state.cometd.of_user(&user.username) {
        session.queue(message.clone());
    }
}

/// `POST /api/v2/me/...` (call and agent operations): refused, callgate being read-only. The operation
/// is named by the body's `operationName`, else by the path.
pub async fn post_me_operation(
    Extension(principal): Extension<Principal>,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response {
    if let Err(refusal) = me(&principal) {
        return refusal.into_response();
    }
    let operation = operation_name(&body).unwrap_or_else(|| uri.path().to_owned());
    read_only(&operation)
}

fn read_only(operation: &str) -> Response {
    gws_error(
        StatusCode::FORBIDDEN,
        code::FORBIDDEN,
        &format!("operation {operation} is not available: callgate is read-only"),
    )
}

/// The users `principal` may see: every user for an admin or a supervisor without a team, its team's for
/// a supervisor; none for an agent (`Err`: forbidden).
fn visible_users(state: &AppState, principal: &Principal) -> Result<Vec<Arc<User>>, Refusal> {
    let user = me(principal)?;
    if !user.roles.admin && !user.roles.supervisor {
        return Err(Refusal::NotASupervisor);
    }
    let mut users = state.gate.users();
    if !user.roles.admin
        && let Some(team) = &user.team
    {
        users.retain(|other| other.team.as_ref() == Some(team));
    }
    Ok(users)
}

/// `GET /api/v2/users[?subresources=devices,calls]`.
pub async fn users(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Response {
    let users = match visible_users(&state, &principal) {
        Ok(users) => users,
        Err(refusal) => return refusal.into_response(),
    };
    let asked = Subresources::from_query(query.as_deref());
    let view = state.stream.view();
    let mut body = String::from("{\"statusCode\":0,\"users\":[");
    for (i, user) in users.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        push_user(&mut body, &state, &view, user, asked);
    }
    body.push_str("]}");
    json_response(StatusCode::OK, body)
}

/// `GET /api/v2/users/{id}[?subresources=devices,calls]`.
pub async fn user(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let users = match visible_users(&state, &principal) {
        Ok(users) => users,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(user) = users.iter().find(|user| user_id(&user.username) == id) else {
        return not_found(&format!("no user {id}"));
    };
    user_response(&state, user, query.as_deref())
}

/// `GET /api/v2/devices`: every device in scope the gateway knows, as its resource plus `"calls"`, in DN
/// order (api.md with gws.md's device resources).
pub async fn devices(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Response {
    let view = state.stream.view();
    let directory = state.gate.directory();
    let known = known_devices(&view, &directory, &principal.scope);
    let mut body = String::from("{\"statusCode\":0,\"devices\":[");
    for (i, device) in known.values().enumerate() {
        if i > 0 {
            body.push(',');
        }
        let doc = device.json(&state.base_url);
        // The resource with its calls added as its last member.
        body.push_str(doc.strip_suffix('}').unwrap_or(&doc));
        body.push_str(",\"calls\":[");
        push_documents(&mut body, view.device_calls(&device.id), "REST");
        body.push_str("]}");
    }
    body.push_str("]}");
    json_response(StatusCode::OK, body)
}

/// `GET /api/v2/devices/{id}`: a device resource in scope (404 like an unknown one otherwise).
pub async fn device(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(device_id): Path<String>,
) -> Response {
    let view = state.stream.view();
    let found = find_device(&view, &state.gate.directory(), &device_id);
    match found {
        Some(device) if principal.scope.allows_device(&device.id) => json_response(
            StatusCode::OK,
            format!(
                "{{\"statusCode\":0,\"device\":{}}}",
                device.json(&state.base_url)
            ),
        ),
        Some(_) => {
            super::auth::out_of_scope(&principal, "device");
            not_found(&format!("no device {device_id}"))
        }
        None => not_found(&format!("no device {device_id}")),
    }
}

/// The device `device_id` if the gateway knows it: by its state, its calls or its owner.
fn find_device<'v>(
    view: &'v StoreView,
    directory: &[OwnedDevice],
    device_id: &str,
) -> Option<Listed<'v>> {
    if let Some(stored) = view.device(device_id) {
        return Some(Listed {
            id: Arc::clone(&stored.meta.device_id),
            dn: Arc::clone(&stored.meta.dn),
            server: String::new(),
            stored: Some(stored),
        });
    }
    if let Some(owned) = directory.iter().find(|owned| *owned.id == *device_id) {
        return Some(Listed {
            id: Arc::clone(&owned.id),
            dn: owned.device.dn.as_str().into(),
            server: owned.device.server.clone(),
            stored: None,
        });
    }
    view.device_calls(device_id).first().map(|call| Listed {
        id: Arc::clone(&call.meta.device_id),
        dn: Arc::clone(&call.meta.dn),
        server: String::new(),
        stored: None,
    })
}
