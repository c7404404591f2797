//! The built-in web page (api.md, `GET /`; docs/web.md): a wallboard for supervisors and admins, an
//! agent's own device and calls for agents. Three static files from `web/`, compiled into the binary so
//! the gateway needs no web server and no build step; the page reads everything it shows over the same
//! REST and WebSocket doors as any client, behind the same login.
//!
//! Every answer carries a strict Content-Security-Policy: scripts, styles and images from the gateway
//! only (no inline script or style), connections to the gateway only (`'self'` covers its own `ws:`/`wss:`
//! origin in CSP Level 3), no framing. The files are small and change only with the binary: they are
//! revalidated on every load (`no-cache`) against an ETag computed at compile time, so an upgraded
//! gateway never serves a stale script from a browser's cache.

use super::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The page's policy: nothing from anywhere but the gateway, nothing inline.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const APP_CSS: &str = include_str!("../../web/app.css");
const FAVICON_SVG: &str = include_str!("../../web/favicon.svg");

/// FNV-1a (64 bits) of `bytes`: an ETag needs only to change when the file does, and computing it at
/// compile time costs nothing per request.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// One embedded file: its body, content type and ETag hash.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    hash: u64,
}

const INDEX: Asset = Asset {
    body: INDEX_HTML,
    content_type: "text/html; charset=utf-8",
    hash: fnv1a(INDEX_HTML.as_bytes()),
};
const SCRIPT: Asset = Asset {
    body: APP_JS,
    content_type: "text/javascript; charset=utf-8",
    hash: fnv1a(APP_JS.as_bytes()),
};
const STYLE: Asset = Asset {
    body: APP_CSS,
    content_type: "text/css; charset=utf-8",
    hash: fnv1a(APP_CSS.as_bytes()),
};
const FAVICON: Asset = Asset {
    body: FAVICON_SVG,
    content_type: "image/svg+xml",
    hash: fnv1a(FAVICON_SVG.as_bytes()),
};

/// The answer for `asset`: 304 when the browser's copy is current, else the file.
fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", asset.hash);
    let current = request
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|tag| tag.trim().trim_start_matches("W/") == etag)
        });
    let mut response = if current {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// `GET /`: the page.
pub async fn index(headers: HeaderMap) -> Response {
    serve(&INDEX, &headers)
}

/// `GET /app.js`.
pub async fn script(headers: HeaderMap) -> Response {
    serve(&SCRIPT, &headers)
}

/// `GET /app.css`.
pub async fn style(headers: HeaderMap) -> Response {
    serve(&STYLE, &headers)
}

/// `GET /favicon.svg`.
pub async fn favicon(headers: HeaderMap) -> Response {
    serve(&FAVICON, &headers)
}

/// `POST /callgate/logout`: ends the session whose cookie the request carries and tells the browser to
/// drop the cookie; 204 whether or not there was one (a logout is idempotent). It needs no CSRF token:
/// the cookie is `SameSite=Lax`, so another site's page cannot send it with a POST, and the Origin
/// check refuses a credentialed request from an origin not allowed; ending a session is all it can do.
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(cookie) = headers
        .get(header::COOKIE)
        .and_then(|value| value.to_str().ok())
    {
        state.gate.end_session(cookie);
    }
    let secure = if state.tls { "; Secure" } else { "" };
    let expired = format!(
        "{}=; Max-Age=0; HttpOnly; Path=/; SameSite=Lax{secure}",
        state.gate.cookie_name()
    );
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(value) = HeaderValue::from_str(&expired) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// The page's routes (no credentials: the files carry no data; what they read asks for a login).
pub fn routes() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/", get(index))
        .route("/app.js", get(script))
        .route("/app.css", get(style))
        .route("/favicon.svg", get(favicon))
        .route("/callgate/logout", post(logout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_inline_and_nothing_from_elsewhere() {
        // The CSP forbids inline script and style: the page must not need them.
        assert!(!INDEX_HTML.contains("<script>"));
        assert!(!INDEX_HTML.contains("style="));
        assert!(!INDEX_HTML.contains("<style"));
        for file in [INDEX_HTML, APP_JS, APP_CSS] {
            assert!(!file.contains("http://"), "an absolute URL in a web file");
            assert!(!file.contains("https://"), "an absolute URL in a web file");
            assert!(!file.contains("@import"), "an import in a web file");
        }
    }

    #[test]
    fn a_current_etag_answers_304() {
        let mut headers = HeaderMap::new();
        let first = serve(&SCRIPT, &headers);
        assert_eq!(first.status(), StatusCode::OK);
        let etag = first.headers()[header::ETAG].clone();
        headers.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(serve(&SCRIPT, &headers).status(), StatusCode::NOT_MODIFIED);
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"0\""));
        assert_eq!(serve(&SCRIPT, &headers).status(), StatusCode::OK);
    }
}
