//! Long-polling connections served here rather than by hyper.
//!
//! An idle long-polling client always has a connect held: one HTTP request waiting up to 30 s for its
//! answer. Under hyper each such connection kept its 8 KiB read buffer, its 8 KiB header buffer, the
//! request's parsed parts and axum's boxed futures: 26 KB of resident memory per idle session, against a
//! 4 KiB target (gws.md's session bound is 20,000). This module serves the one request shape GWS
//! clients send all day (`POST /api/v2/notifications`, HTTP/1.1, a JSON body with a `Content-Length`),
//! parsing it with `httparse` and holding nothing but the session while the connect waits.
//!
//! Everything else goes to hyper, with the bytes already read put back in front of the stream
//! ([`Rewind`]): any other path (REST, WebSocket upgrades, health), another method or version, chunked
//! bodies, `Expect`, an `Origin` that is not allowed, a body over the limit, a wrong content type, a head
//! `httparse` refuses. hyper then answers exactly as it always did, errors included; a connection handed
//! over stays with hyper to its end. So this is the fast path of one route, not a second HTTP server.
//!
//! Limits, as hyper's: a request's head and body must arrive within [`HEADER_TIMEOUT`], which also
//! closes a connection idle between requests; heads are at most [`MAX_HEAD`] bytes, bodies at most
//! [`MAX_BODY`]. Added: a reply not taken by the client within [`WRITE_TIMEOUT`] closes the connection
//! (a stalled reader holds only its own connection, never a buffer past that). Bytes a client pipelines
//! while its connect is held are kept, up to one request's worth, and read after the reply.

use super::super::auth::Presented;
use super::super::server::{HEADER_TIMEOUT, MAX_BODY};
use super::AppState;
use axum::http::StatusCode;
use bytes::{Buf, Bytes};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;

/// The request line a connection must start with to be served here.
const NOTIFICATIONS: &[u8] = b"POST /api/v2/notifications";
/// The largest request head served here (larger ones go to hyper, which refuses past its own limit).
pub const MAX_HEAD: usize = 16 * 1024;
/// The most header lines served here.
const MAX_HEADERS: usize = 32;
/// How long a reply may wait for the client to take it.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How much is read at a time.
const READ_CHUNK: usize = 2048;

/// How a connection served here ended.
pub enum Outcome<I> {
    /// Closed (by either side, a timeout, or shutdown).
    Closed,
    /// A request this module does not serve: hyper takes the connection, from that request's first byte.
    Handoff(Rewind<I>),
}

/// Serves `io` while its requests are long-polling requests, and hands it over at the first that is not.
pub async fn serve<I>(
    mut io: I,
    peer: SocketAddr,
    state: &AppState,
    cancel: &CancellationToken,
) -> Outcome<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut buffered = Vec::new();
    loop {
        let mut head = match tokio::time::timeout(
            HEADER_TIMEOUT,
            read_request(&mut io, &mut buffered, cancel),
        )
        .await
        {
            Ok(Read::Request(head)) => head,
            Ok(Read::NotOurs) => return Outcome::Handoff(Rewind::new(buffered, io)),
            Ok(Read::Closed) | Err(_) => return Outcome::Closed,
        };
        if head
            .origin
            .as_deref()
            .is_some_and(|origin| !state.origins.allows(origin))
        {
            // The refusal, its log line and its metric are the CORS layer's and the route's.
            return Outcome::Handoff(Rewind::new(buffered, io));
        }
        let body_end = head.length + head.content_length;
        let parsed = super::parse_request(&buffered[head.length..body_end]);
        buffered.drain(..body_end);
        if buffered.is_empty() {
            // Nothing pipelined: the buffer is not kept while the connect is held.
            buffered = Vec::new();
        }
        let (status, body) = match parsed {
            Ok(messages) => {
                // Moved out: the credentials are dropped before a connect is held.
                let presented = Presented::new(
                    head.authorization.take(),
                    head.cookie.take(),
                    head.csrf.take(),
                    peer.ip(),
                );
                // Pinned where it is made: a future moved into a callee is stored twice.
                let answered = std::pin::pin!(super::answer(state, presented, messages));
                match hold(&mut io, &mut buffered, answered).await {
                    Some(replies) => (StatusCode::OK, replies),
                    None => return Outcome::Closed,
                }
            }
            Err(problem) => (StatusCode::BAD_REQUEST, error_body(problem)),
        };
        let response = response(status, &body, &head);
        drop(body);
        let written = tokio::time::timeout(WRITE_TIMEOUT, async {
            io.write_all(&response).await?;
            io.flush().await
        })
        .await;
        if !matches!(written, Ok(Ok(()))) || head.close || cancel.is_cancelled() {
            let _ = tokio::time::timeout(WRITE_TIMEOUT, io.shutdown()).await;
            return Outcome::Closed;
        }
    }
}

/// Waits for `answered` while watching the connection: `None` when the client closed it (dropping the
/// answer ends its connect at once, as hyper dropping a handler did). Bytes that arrive meanwhile are
/// pipelined requests, kept in `buffered` up to one request's worth.
async fn hold<I, F>(
    io: &mut I,
    buffered: &mut Vec<u8>,
    mut answered: Pin<&mut F>,
) -> Option<Vec<u8>>
where
    I: AsyncRead + Unpin,
    F: std::future::Future<Output = Vec<u8>>,
{
    let mut probe = [0u8; 64];
    loop {
        tokio::select! {
            replies = answered.as_mut() => return Some(replies),
            read = io.read(&mut probe), if buffered.len() < MAX_HEAD + MAX_BODY => match read {
                Ok(0) | Err(_) => return None,
                Ok(n) => buffered.extend_from_slice(&probe[..n]),
            },
        }
    }
}

/// What reading the next request gave.
enum Read {
    /// A long-polling request, head and body, at the start of the buffer.
    Request(Head),
    /// Something hyper is to serve.
    NotOurs,
    /// The connection closed, failed, or the gateway is shutting down.
    Closed,
}

/// What is kept of a long-polling request's head.
#[derive(Debug, Default)]
struct Head {
    /// The head's length in bytes; the body follows.
    length: usize,
    content_length: usize,
    authorization: Option<String>,
    cookie: Option<String>,
    csrf: Option<String>,
    origin: Option<String>,
    /// `Connection: close`: the connection closes after the reply.
    close: bool,
}

/// Reads into `buffered` until it starts with a whole long-polling request, or shows it does not.
async fn read_request<I>(io: &mut I, buffered: &mut Vec<u8>, cancel: &CancellationToken) -> Read
where
    I: AsyncRead + Unpin,
{
    let mut head: Option<Head> = None;
    loop {
        if head.is_none() {
            match parse_head(buffered) {
                Parsed::Complete(parsed) => head = Some(parsed),
                Parsed::NotOurs => return Read::NotOurs,
                Parsed::Partial => {}
            }
        }
        if let Some(parsed) = &head
            && buffered.len() >= parsed.length + parsed.content_length
        {
            return head.map_or(Read::Closed, Read::Request);
        }
        if cancel.is_cancelled() && head.is_none() && buffered.is_empty() {
            return Read::Closed;
        }
        buffered.reserve(READ_CHUNK);
        let read = tokio::select! {
            read = io.read_buf(buffered) => read,
            () = cancel.cancelled(), if head.is_none() && buffered.is_empty() => return Read::Closed,
        };
        match read {
            Ok(0) | Err(_) => return Read::Closed,
            Ok(_) => {}
        }
    }
}

/// What parsing the buffered bytes as a request head gave.
#[derive(Debug)]
enum Parsed {
    Complete(Head),
    Partial,
    NotOurs,
}

/// Parses the head at the start of `buffered`: a long-polling request this module serves, not yet whole,
/// or anything else.
fn parse_head(buffered: &[u8]) -> Parsed {
    let start = buffered.len().min(NOTIFICATIONS.len());
    if buffered[..start] != NOTIFICATIONS[..start] {
        return Parsed::NotOurs;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let length = match request.parse(buffered) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buffered.len() <= MAX_HEAD => return Parsed::Partial,
        Ok(httparse::Status::Partial) | Err(_) => return Parsed::NotOurs,
    };
    let path = request.path.unwrap_or("");
    let path = path.split('?').next().unwrap_or(path);
    let ours = length <= MAX_HEAD
        && request.version == Some(1)
        && (path == "/api/v2/notifications" || path.starts_with("/api/v2/notifications/"));
    if !ours {
        return Parsed::NotOurs;
    }
    head_of(request.headers, length).map_or(Parsed::NotOurs, Parsed::Complete)
}

/// The parts of a long-polling request's headers this module needs; `None` when one of them asks for
/// what only hyper does (or refuses).
fn head_of(headers: &[httparse::Header<'_>], length: usize) -> Option<Head> {
    let mut head = Head {
        length,
        ..Head::default()
    };
    let mut content_length = None;
    let mut json = false;
    for header in headers {
        let value = std::str::from_utf8(header.value).ok()?.trim();
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            if content_length.is_some() {
                return None;
            }
            content_length = Some(value.parse::<usize>().ok()?);
        } else if name.eq_ignore_ascii_case("content-type") {
            json = super::is_json_media_type(value);
        } else if name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(str::trim) {
                if option.eq_ignore_ascii_case("close") {
                    head.close = true;
                } else if option.eq_ignore_ascii_case("upgrade") {
                    return None;
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("upgrade")
        {
            return None;
        } else if !once(name, value, &mut head)? {
            continue;
        }
    }
    head.content_length = content_length.filter(|&length| length <= MAX_BODY)?;
    json.then_some(head)
}

/// Keeps a credential or the origin; `Some(false)` for a header not needed, `None` for one of them
/// twice (hyper's path decides what that means).
fn once(name: &str, value: &str, head: &mut Head) -> Option<bool> {
    let slot = if name.eq_ignore_ascii_case("authorization") {
        &mut head.authorization
    } else if name.eq_ignore_ascii_case("cookie") {
        &mut head.cookie
    } else if name.eq_ignore_ascii_case("x-csrf-token") {
        &mut head.csrf
    } else if name.eq_ignore_ascii_case("origin") {
        &mut head.origin
    } else {
        return Some(false);
    };
    if slot.is_some() {
        return None;
    }
    *slot = Some(value.to_owned());
    Some(true)
}

/// The body of a refusal, as [`super::super::http::error`] writes it.
fn error_body(problem: &str) -> Vec<u8> {
    let mut body = String::from("{\"statusCode\":400,\"statusMessage\":");
    crate::json::write_json_str(&mut body, problem);
    body.push('}');
    body.into_bytes()
}

/// The whole response: status line, headers (those of `origin::cors` for an allowed origin), body.
/// Written without `format!`: this runs for every long-poll.
fn response(status: StatusCode, body: &[u8], head: &Head) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 256);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let content_type = if status == StatusCode::OK {
        super::REPLY_CONTENT_TYPE
    } else {
        "application/json"
    };
    header(&mut out, "content-type", content_type);
    header(
        &mut out,
        "content-length",
        itoa::Buffer::new().format(body.len()),
    );
    out.extend_from_slice(b"date: ");
    push_http_date(&mut out);
    out.extend_from_slice(b"\r\n");
    if let Some(origin) = &head.origin {
        header(&mut out, "access-control-allow-origin", origin);
        header(&mut out, "access-control-allow-credentials", "true");
        header(&mut out, "vary", "Origin");
        header(
            &mut out,
            "access-control-expose-headers",
            "X-CSRF-HEADER, X-CSRF-TOKEN",
        );
    }
    if head.close {
        header(&mut out, "connection", "close");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

fn header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends now as an HTTP date, formatted once a second per thread.
fn push_http_date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::SystemTime;
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second || cached.1.is_empty() {
            *cached = (second, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(cached.1.as_bytes());
    });
}

/// A stream with bytes already read from it put back in front: hyper reads them first.
pub struct Rewind<I> {
    prefix: Bytes,
    io: I,
}

impl<I> Rewind<I> {
    /// `io`, to be read from `prefix` on.
    pub fn new(prefix: Vec<u8>, io: I) -> Self {
        Self {
            prefix: Bytes::from(prefix),
            io,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &[u8] = b"POST /api/v2/notifications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json;charset=UTF-8\r\nCookie: c=1\r\nContent-Length: 2\r\n\r\n[]";

    fn head(bytes: &[u8]) -> Option<Head> {
        match parse_head(bytes) {
            Parsed::Complete(head) => Some(head),
            _ => None,
        }
    }

    #[test]
    fn a_long_polling_request_is_parsed_and_its_credentials_kept() {
        let parsed = head(REQUEST).expect("served here");
        assert_eq!(parsed.length, REQUEST.len() - 2);
        assert_eq!(parsed.content_length, 2);
        assert_eq!(parsed.cookie.as_deref(), Some("c=1"));
        assert!(!parsed.close);
    }

    #[test]
    fn a_partial_head_waits_for_more_and_anything_else_goes_to_hyper() {
        assert!(matches!(parse_head(b""), Parsed::Partial));
        assert!(matches!(parse_head(b"PO"), Parsed::Partial));
        assert!(matches!(parse_head(&REQUEST[..40]), Parsed::Partial));
        assert!(matches!(parse_head(b"GET /api/v2/me"), Parsed::NotOurs));
        assert!(matches!(parse_head(b"POST /api/v2/me"), Parsed::NotOurs));
        let swap = |from: &str, to: &str| {
            String::from_utf8_lossy(REQUEST)
                .replace(from, to)
                .into_bytes()
        };
        for not_ours in [
            swap("HTTP/1.1", "HTTP/1.0"),
            swap("notifications HTTP", "notificationsX HTTP"),
            swap("Content-Length: 2", "Transfer-Encoding: chunked"),
            swap("Content-Length: 2", "Content-Length: 70000"),
            swap(
                "Content-Length: 2",
                "Content-Length: 2\r\nContent-Length: 2",
            ),
            swap("Host: x", "Expect: 100-continue"),
            swap("application/json", "text/plain"),
            swap("Cookie: c=1", "Cookie: c=1\r\nCookie: d=2"),
            swap("Host: x", "Connection: Upgrade"),
        ] {
            assert!(
                matches!(parse_head(&not_ours), Parsed::NotOurs),
                "{}",
                String::from_utf8_lossy(&not_ours)
            );
        }
        assert!(head(&swap("notifications HTTP", "notifications/x?y=1 HTTP")).is_some());
        assert!(head(&swap("Host: x", "Connection: keep-alive, close")).is_some_and(|h| h.close));
    }

    #[test]
    fn a_response_has_its_length_date_and_the_allowed_origin() {
        let parsed = Head {
            origin: Some("https://desk.example".into()),
            close: true,
            ..Head::default()
        };
        let text = String::from_utf8(response(StatusCode::OK, b"[]", &parsed)).expect("UTF-8");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("content-length: 2\r\n"));
        assert!(text.contains("date: "));
        assert!(text.contains("access-control-allow-origin: https://desk.example\r\n"));
        assert!(text.contains("connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n[]"));
    }

    #[tokio::test]
    async fn rewind_reads_its_prefix_then_the_stream() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b" world").await.expect("write");
        drop(client);
        let mut rewound = Rewind::new(b"hello".to_vec(), server);
        let mut all = String::new();
        rewound.read_to_string(&mut all).await.expect("read");
        assert_eq!(all, "hello world");
    }
}
