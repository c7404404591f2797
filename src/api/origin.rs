//! Browsers (access.md, "Browsers: Origin and CORS"): a page of another site open in an agent's browser
//! must not read calls with the agent's cookie. A WebSocket handshake, or any request with credentials,
//! whose `Origin` is present and not allowed is refused with 403; CORS preflights are answered for
//! allowed origins only, with credentials allowed. Allowed: the gateway's own `--base-url` origin and
//! `--allowed-origins`.

use super::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The origins allowed, as `scheme://host[:port]` in lowercase, default ports left out.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    allowed: Vec<String>,
}

impl Origins {
    /// The origin of `base_url` and each of `extra`; fails naming a value that is not an origin.
    pub fn new(base_url: &str, extra: &[String]) -> Result<Self, String> {
        let mut allowed = Vec::with_capacity(extra.len() + 1);
        allowed.push(
            normalize(base_url).ok_or_else(|| format!("--base-url {base_url:?} has no origin"))?,
        );
        for origin in extra {
            let normal = normalize(origin).ok_or_else(|| {
                format!("--allowed-origins: {origin:?} is not scheme://host[:port]")
            })?;
            allowed.push(normal);
        }
        Ok(Self { allowed })
    }

    /// Whether the `Origin` header value `origin` is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        normalize(origin).is_some_and(|origin| self.allowed.contains(&origin))
    }
}

/// `scheme://host[:port]` of a URL or an Origin header, lowercase, without a default port or a path.
fn normalize(url: &str) -> Option<String> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?.to_ascii_lowercase();
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
    Some(format!("{scheme}://{authority}"))
}

/// The `Origin` of a request, when it has one.
pub fn of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::ORIGIN)
        .map(|value| value.to_str().unwrap_or("\u{0}"))
}

/// The 403 for an origin not allowed, logged and counted.
pub fn refused(door: &'static str, remote: std::net::IpAddr) -> Response {
    crate::access::gate::refused_at(door, remote, "origin");
    super::http::error(StatusCode::FORBIDDEN, "Origin not allowed")
}

/// Middleware of every route: answers CORS preflights, refuses credentialed requests from origins not
/// allowed, and marks the answers to allowed cross-origin requests.
pub async fn cors(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    let Some(origin) = of(request.headers()).map(str::to_owned) else {
        return next.run(request).await;
    };
    let allowed = state.origins.allows(&origin);
    let door = if request.uri().path() == "/api/v2/ws" {
        "ws"
    } else {
        "rest"
    };
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        if !allowed {
            return refused(door, super::auth::remote(&request));
        }
        let mut response = StatusCode::NO_CONTENT.into_response();
        allow(response.headers_mut(), &origin);
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Authorization, Content-Type, X-CSRF-TOKEN"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        return response;
    }
    let credentials = request.headers().contains_key(header::AUTHORIZATION)
        || request.headers().contains_key(header::COOKIE);
    if !allowed && credentials {
        return refused(door, super::auth::remote(&request));
    }
    let mut response = next.run(request).await;
    if allowed {
        allow(response.headers_mut(), &origin);
        response.headers_mut().insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("X-CSRF-HEADER, X-CSRF-TOKEN"),
        );
    }
    response
}

fn allow(headers: &mut HeaderMap, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_by_scheme_host_and_port() {
        let origins = Origins::new(
            "http://127.0.0.1:8080/base",
            &[
                "https://Wallboard.example.com".into(),
                "http://desk.example.com:8000/".into(),
            ],
        )
        .unwrap();
        for allowed in [
            "http://127.0.0.1:8080",
            "https://wallboard.example.com",
            "https://wallboard.example.com:443",
            "http://desk.example.com:8000",
        ] {
            assert!(origins.allows(allowed), "{allowed}");
        }
        for refused in [
            "http://127.0.0.1:8081",
            "https://127.0.0.1:8080",
            "http://wallboard.example.com",
            "https://evil.example.com",
            "null",
            "",
            "http://desk.example.com:8000@evil.example.com",
        ] {
            assert!(!origins.allows(refused), "{refused}");
        }
        assert!(Origins::new("http://x", &["ftp://y".into()]).is_err());
        assert!(Origins::new("not a url", &[]).is_err());
    }
}
