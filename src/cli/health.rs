//! `callgate health`: one `GET` of the gateway's readiness, exit 0 on 200. It exists for the container
//! image's `HEALTHCHECK` (docker/Dockerfile): the runtime image is bookworm-slim, which has no curl or
//! wget, and adding one would pull in a TLS stack and a dozen libraries for one request. Plain HTTP/1.1
//! over a std `TcpStream` with timeouts is all a probe of the local listener needs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The URL probed when neither `--url` nor `CALLGATE_LISTEN` says otherwise (serve's default port).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080/readyz";

/// The most response bytes read: the status line and headers of `/readyz` are a few hundred bytes.
const MAX_RESPONSE: usize = 16 * 1024;

/// Why the gateway is not healthy, or could not be asked (exit status 1, this on one line).
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The URL is not `http://HOST[:PORT][/PATH]`.
    #[error("not an http:// URL: {0:?} (https is not spoken: probe the plain listener)")]
    Url(String),
    /// `CALLGATE_LISTEN` is not an `IP:PORT`.
    #[error("CALLGATE_LISTEN is not an IP:PORT: {0:?}")]
    Listen(String),
    /// The host did not resolve, or no address accepted the connection in time.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// `HOST:PORT` as given.
        address: String,
        /// The last connection error.
        #[source]
        source: std::io::Error,
    },
    /// Sending the request or reading the answer failed (a timeout included).
    #[error("no answer from {address}: {source}")]
    Io {
        /// `HOST:PORT` as given.
        address: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The answer is not an HTTP/1.x response head.
    #[error("not an HTTP response: {0}")]
    Response(String),
    /// The gateway answered, but not 200.
    #[error("{url} answered {status} {reason}")]
    Status {
        /// The URL probed.
        url: String,
        /// The status code.
        status: u16,
        /// The reason phrase.
        reason: String,
    },
}

/// An `http://` URL taken apart: what a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host as written (an IPv6 address without its brackets).
    pub host: String,
    /// The port (80 when the URL has none).
    pub port: u16,
    /// The path and query, at least `/`.
    pub path: String,
}

impl Target {
    /// `host:port`, with brackets around an IPv6 address.
    fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Parses `http://HOST[:PORT][/PATH]`; anything else (https included) is an error.
pub fn parse_url(url: &str) -> Result<Target, HealthError> {
    let invalid = || HealthError::Url(url.to_owned());
    let rest = url.strip_prefix("http://").ok_or_else(invalid)?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) if rest[at..].starts_with('/') => (&rest[..at], rest[at..].to_owned()),
        Some(at) => (&rest[..at], format!("/{}", &rest[at..])),
        None => (rest, "/".to_owned()),
    };
    if authority.contains('@') {
        return Err(invalid());
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or_else(invalid)?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or_else(invalid)?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(invalid());
    }
    let port = match port {
        None => 80,
        Some(port) => port.parse().map_err(|_| invalid())?,
    };
    Ok(Target {
        host: host.to_owned(),
        port,
        path,
    })
}

/// The URL to probe: `url` when given; else `/readyz` on the port of `listen` (the value of
/// `CALLGATE_LISTEN`, which the image sets and `serve` reads), asked on loopback when it is an
/// unspecified address such as `0.0.0.0`; else [`DEFAULT_URL`].
pub fn resolve_url(url: Option<&str>, listen: Option<&str>) -> Result<String, HealthError> {
    if let Some(url) = url {
        return Ok(url.to_owned());
    }
    let Some(listen) = listen.map(str::trim).filter(|listen| !listen.is_empty()) else {
        return Ok(DEFAULT_URL.to_owned());
    };
    let addr: SocketAddr = listen
        .parse()
        .map_err(|_| HealthError::Listen(listen.to_owned()))?;
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
        ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    Ok(format!(
        "http://{}/readyz",
        SocketAddr::new(ip, addr.port())
    ))
}

/// The status code and reason phrase of a response head, once `head` holds all of it; `None` while
/// more bytes are needed.
pub fn parse_status(head: &[u8]) -> Result<Option<(u16, String)>, HealthError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(err) => return Err(HealthError::Response(err.to_string())),
    }
    let status = response
        .code
        .ok_or_else(|| HealthError::Response("no status code".into()))?;
    Ok(Some((status, response.reason.unwrap_or("").to_owned())))
}

/// One `GET url` within `timeout` in all (connecting included): `Ok` on 200.
pub fn check(url: &str, timeout: Duration) -> Result<(), HealthError> {
    let target = parse_url(url)?;
    let address = target.address();
    let deadline = Instant::now() + timeout;
    let mut stream = connect(&target, &address, timeout)?;
    let io = |source| HealthError::Io {
        address: address.clone(),
        source,
    };
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: callgate-health\r\nConnection: close\r\n\r\n",
        target.path, address
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut response = Vec::with_capacity(512);
    let mut buffer = [0u8; 1024];
    loop {
        // Each read waits at most what is left of the whole timeout: a trickling answer cannot hold the
        // probe longer than the container runtime's own --timeout.
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io(std::io::ErrorKind::TimedOut.into()));
        }
        stream.set_read_timeout(Some(left)).map_err(io)?;
        let read = stream.read(&mut buffer).map_err(io)?;
        if read == 0 {
            return Err(HealthError::Response(
                "the connection closed before the response head ended".into(),
            ));
        }
        response.extend_from_slice(&buffer[..read]);
        if let Some((status, reason)) = parse_status(&response)? {
            return if status == 200 {
                Ok(())
            } else {
                Err(HealthError::Status {
                    url: url.to_owned(),
                    status,
                    reason,
                })
            };
        }
        if response.len() > MAX_RESPONSE {
            return Err(HealthError::Response(format!(
                "no end of the response head in {MAX_RESPONSE} bytes"
            )));
        }
    }
}

/// A connection to the first of `target`'s addresses that accepts one within `timeout`.
fn connect(target: &Target, address: &str, timeout: Duration) -> Result<TcpStream, HealthError> {
    let failed = |source| HealthError::Connect {
        address: address.to_owned(),
        source,
    };
    let addrs = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(failed)?;
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(err) => last = err,
        }
    }
    Err(failed(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let target = parse_url("http://127.0.0.1:8080/readyz").expect("valid");
        assert_eq!(
            target,
            Target {
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/readyz".into()
            }
        );
        assert_eq!(target.address(), "127.0.0.1:8080");
        let target = parse_url("http://[::1]:9/readyz?x=1").expect("valid");
        assert_eq!((target.host.as_str(), target.port), ("::1", 9));
        assert_eq!(target.path, "/readyz?x=1");
        assert_eq!(target.address(), "[::1]:9");
        let target = parse_url("http://gateway").expect("valid");
        assert_eq!((target.port, target.path.as_str()), (80, "/"));
        assert_eq!(parse_url("http://h?q").expect("valid").path, "/?q");
        for bad in [
            "https://127.0.0.1/readyz",
            "127.0.0.1:8080",
            "http://",
            "http://:80/",
            "http://h:port/",
            "http://h:70000/",
            "http://[::1/",
            "http://[::1]x/",
            "http://user@h/",
        ] {
            assert!(
                matches!(parse_url(bad), Err(HealthError::Url(_))),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn the_url_follows_callgate_listen() {
        assert_eq!(resolve_url(None, None).expect("default"), DEFAULT_URL);
        assert_eq!(resolve_url(None, Some(" ")).expect("default"), DEFAULT_URL);
        assert_eq!(
            resolve_url(None, Some("0.0.0.0:9090")).expect("listen"),
            "http://127.0.0.1:9090/readyz"
        );
        assert_eq!(
            resolve_url(None, Some("[::]:9090")).expect("listen"),
            "http://[::1]:9090/readyz"
        );
        assert_eq!(
            resolve_url(None, Some("10.1.2.3:80")).expect("listen"),
            "http://10.1.2.3:80/readyz"
        );
        assert_eq!(
            resolve_url(Some("http://h/x"), Some("0.0.0.0:1")).expect("url"),
            "http://h/x"
        );
        assert!(matches!(
            resolve_url(None, Some("gateway:8080")),
            Err(HealthError::Listen(_))
        ));
    }

    #[test]
    fn status_lines() {
        assert_eq!(
            parse_status(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").expect("parsed"),
            Some((200, "OK".into()))
        );
        assert_eq!(
            parse_status(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").expect("parsed"),
            Some((503, "Service Unavailable".into()))
        );
        // A head split across reads: more bytes are needed, not an error.
        assert_eq!(
            parse_status(b"HTTP/1.1 200 OK\r\ncontent-le").expect("partial"),
            None
        );
        assert_eq!(parse_status(b"HTTP/1.").expect("partial"), None);
        assert!(matches!(
            parse_status(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(HealthError::Response(_))
        ));
    }

    /// A one-shot server answering `answer`; returns its URL.
    fn serve_once(answer: &'static [u8]) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request);
                for chunk in answer.chunks(7) {
                    let _ = stream.write_all(chunk);
                    let _ = stream.flush();
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        format!("http://{addr}/readyz")
    }

    #[test]
    fn checks() {
        let timeout = Duration::from_secs(5);
        let ok = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}");
        check(&ok, timeout).expect("200 is healthy");
        let busy = serve_once(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
        let err = check(&busy, timeout).expect_err("503 is not");
        assert!(
            err.to_string()
                .ends_with("answered 503 Service Unavailable"),
            "{err}"
        );
        let cut = serve_once(b"HTTP/1.1 200 OK\r\n");
        assert!(matches!(
            check(&cut, timeout),
            Err(HealthError::Response(_))
        ));
        // Nothing listens on a port just freed.
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port");
        let err = check(&format!("http://{free}/readyz"), timeout).expect_err("refused");
        assert!(matches!(err, HealthError::Connect { .. }), "{err}");
    }
}
