//! Credentials on the HTTP door (access.md): every REST request passes the gate before its handler,
//! which gets the [`Principal`] as a request extension and answers within its scope.

use super::AppState;
use crate::access::{Denied, Principal, Request, RequestKind};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The peer's address of a request (set by the server for every connection).
pub fn remote(request: &axum::extract::Request) -> IpAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip())
}

fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// The credentials a request presents, copied out of it (the request's body is not `Sync`, so a
/// borrow of it cannot be held while the gate checks a password).
#[derive(Debug, Clone)]
pub struct Presented {
    authorization: Option<String>,
    cookie: Option<String>,
    csrf: Option<String>,
    /// The peer's address.
    pub remote: IpAddr,
}

impl Presented {
    /// What `request` presents.
    pub fn of(request: &axum::extract::Request) -> Self {
        let headers = request.headers();
        let owned = |name: &str| text(headers, name).map(str::to_owned);
        Self {
            authorization: owned(header::AUTHORIZATION.as_str()),
            cookie: owned(header::COOKIE.as_str()),
            csrf: owned("x-csrf-token"),
            remote: remote(request),
        }
    }

    /// What a request presents, from its header values and its peer's address (for requests not parsed
    /// by hyper).
    pub fn new(
        authorization: Option<String>,
        cookie: Option<String>,
        csrf: Option<String>,
        remote: IpAddr,
    ) -> Self {
        Self {
            authorization,
            cookie,
            csrf,
            remote,
        }
    }

    /// The gate's view of it, at `door`, for a request of `kind`.
    pub fn at(&self, door: &'static str, kind: RequestKind) -> Request<'_> {
        Request {
            door,
            authorization: self.authorization.as_deref(),
            cookie: self.cookie.as_deref(),
            csrf: self.csrf.as_deref(),
            remote: self.remote,
            kind,
        }
    }
}

/// Middleware of the REST routes: lets the request in with its principal, or answers the refusal.
pub async fn rest(
    State(state): State<AppState>,
    mut request: axum::extract::Request,
    next: Next,
) -> Response {
    let kind = match *request.method() {
        Method::GET | Method::HEAD | Method::OPTIONS => RequestKind::Read,
        _ => RequestKind::StateChange,
    };
    let presented = Presented::of(&request);
    let decided = state.gate.authenticate(&presented.at("rest", kind)).await;
    let granted = match decided {
        Ok(granted) => granted,
        Err(denied) => return refusal(&denied),
    };
    request.extensions_mut().insert(granted.principal);
    let mut response = next.run(request).await;
    if let Some((session, csrf)) = granted.new_session {
        set_session(
            response.headers_mut(),
            state.gate.cookie_name(),
            &session,
            &csrf,
            state.tls,
        );
    }
    response
}

/// Adds the session cookie and the CSRF headers (the GWS convention) to a response.
fn set_session(headers: &mut HeaderMap, name: &str, session: &str, csrf: &str, tls: bool) {
    let secure = if tls { "; Secure" } else { "" };
    let cookie = format!("{name}={session}; HttpOnly; Path=/; SameSite=Lax{secure}");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        headers.append(header::SET_COOKIE, value);
    }
    headers.insert("x-csrf-header", HeaderValue::from_static("X-CSRF-TOKEN"));
    if let Ok(value) = HeaderValue::from_str(csrf) {
        headers.insert("x-csrf-token", value);
    }
}

/// The answer to a refused request: 401 with `WWW-Authenticate: Bearer` (so browsers show no
/// dialog), 403 for CSRF, 429 when throttled.
pub fn refusal(denied: &Denied) -> Response {
    match denied.status() {
        429 => super::http::error(StatusCode::TOO_MANY_REQUESTS, "Too many failed logins"),
        403 => super::http::error(StatusCode::FORBIDDEN, "Missing or invalid Csrf token"),
        _ => (
            StatusCode::UNAUTHORIZED,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::WWW_AUTHENTICATE, "Bearer realm=\"callgate\""),
            ],
            r#"{"statusCode":20,"statusMessage":"Access denied"}"#,
        )
            .into_response(),
    }
}

/// Logs and counts a lookup of something out of `principal`'s scope (answered 404 like an unknown one).
pub fn out_of_scope(principal: &Principal, what: &str) {
    tracing::info!(target: "callgate::audit", door = "rest", user = principal.name(), "access denied: {what} out of scope");
    metrics::counter!("callgate_access_denied_total", "door" => "rest", "reason" => "out_of_scope")
        .increment(1);
}
