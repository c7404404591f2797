//! A lean CometD long-polling client for load generation: one keep-alive HTTP/1.1 connection per
//! session, raw Bayeux messages, responses counted and their `SentAt` stamps read without parsing the
//! JSON (as the WebSocket bench clients do). Speaks to callgate and to `cometd-nodejs-server` alike.

#![allow(dead_code)]

use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive HTTP/1.1 connection.
pub struct Http {
    stream: TcpStream,
    host: String,
    buf: Vec<u8>,
    /// The request being written, kept between requests (its allocation is reused).
    request: Vec<u8>,
    /// The cookie the server set, sent back (the reference server ties sessions to its browser cookie).
    cookie: Option<String>,
}

impl Http {
    /// Connects to `addr` (`HOST:PORT`).
    pub async fn connect(addr: &str) -> io::Result<Http> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Http {
            stream,
            host: addr.to_owned(),
            buf: Vec::with_capacity(16 * 1024),
            request: Vec::with_capacity(512),
            cookie: None,
        })
    }

    /// POSTs `body` as JSON to `path`; returns the response's status and body. Written and read without
    /// `format!` or per-request buffers: the load generator shares the cores with the server it measures.
    pub async fn post(&mut self, path: &str, body: &str) -> io::Result<(u16, Vec<u8>)> {
        let request = &mut self.request;
        request.clear();
        for part in [
            "POST ",
            path,
            " HTTP/1.1\r\nHost: ",
            &self.host,
            "\r\nContent-Type: application/json;charset=UTF-8\r\n",
        ] {
            request.extend_from_slice(part.as_bytes());
        }
        if let Some(cookie) = &self.cookie {
            for part in ["Cookie: ", cookie, "\r\n"] {
                request.extend_from_slice(part.as_bytes());
            }
        }
        request.extend_from_slice(b"Content-Length: ");
        request.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        request.extend_from_slice(b"\r\n\r\n");
        request.extend_from_slice(body.as_bytes());
        self.stream.write_all(&self.request).await?;
        self.response().await
    }

    async fn fill(&mut self) -> io::Result<()> {
        self.buf.reserve(16 * 1024);
        let n = self.stream.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        Ok(())
    }

    async fn response(&mut self) -> io::Result<(u16, Vec<u8>)> {
        let (head_end, status, length, chunked) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buf) {
                Ok(httparse::Status::Complete(head_end)) => {
                    let mut length = None;
                    let mut chunked = false;
                    for header in response.headers.iter() {
                        let value = std::str::from_utf8(header.value).unwrap_or("");
                        if header.name.eq_ignore_ascii_case("content-length") {
                            length = value.trim().parse::<usize>().ok();
                        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = value.contains("chunked");
                        } else if header.name.eq_ignore_ascii_case("set-cookie") {
                            self.cookie = Some(value.split(';').next().unwrap_or("").to_owned());
                        }
                    }
                    break (head_end, response.code.unwrap_or(0), length, chunked);
                }
                Ok(httparse::Status::Partial) => self.fill().await?,
                Err(err) => return Err(io::Error::new(io::ErrorKind::InvalidData, err)),
            }
        };
        self.buf.drain(..head_end);
        let body = match length {
            Some(length) => {
                while self.buf.len() < length {
                    self.fill().await?;
                }
                let body = self.buf[..length].to_vec();
                self.buf.drain(..length);
                body
            }
            None if chunked => self.chunked().await?,
            None => Vec::new(),
        };
        Ok((status, body))
    }

    async fn chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(at) = memchr::memmem::find(&self.buf, b"\r\n") {
                    break at;
                }
                self.fill().await?;
            };
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&self.buf[..line_end])
                    .trim()
                    .split(';')
                    .next()
                    .unwrap_or("0"),
                16,
            )
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            self.buf.drain(..line_end + 2);
            while self.buf.len() < size + 2 {
                self.fill().await?;
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
            if size == 0 {
                return Ok(body);
            }
        }
    }
}

/// A handshaken session: its connection, `clientId` and the path it posts to.
pub struct Session {
    pub http: Http,
    pub client_id: String,
    path: String,
    next_id: u64,
}

fn client_id_of(body: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"\"clientId\":\"";
    let at = memchr::memmem::find(body, KEY)? + KEY.len();
    let end = body[at..].iter().position(|&b| b == b'"')?;
    Some(String::from_utf8_lossy(&body[at..at + end]).into_owned())
}

impl Session {
    /// Handshakes at `path` of `addr`, subscribes to `channel`, and makes the first (immediate) connect.
    pub async fn open(addr: &str, path: &str, channel: &str) -> io::Result<Session> {
        let mut http = Http::connect(addr).await?;
        let (_, body) = http
            .post(
                path,
                r#"[{"id":"1","channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}]"#,
            )
            .await?;
        let client_id = client_id_of(&body).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no clientId in {}", String::from_utf8_lossy(&body)),
            )
        })?;
        let mut session = Session {
            http,
            client_id,
            path: path.to_owned(),
            next_id: 2,
        };
        let subscribe = format!(
            r#"[{{"id":"s","channel":"/meta/subscribe","clientId":"{}","subscription":"{channel}"}},{{"id":"c","channel":"/meta/connect","clientId":"{}","connectionType":"long-polling","advice":{{"timeout":0}}}}]"#,
            session.client_id, session.client_id
        );
        let (status, body) = session.http.post(path, &subscribe).await?;
        if status != 200 || memchr::memmem::find(&body, b"\"successful\":false").is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("subscribe: {status} {}", String::from_utf8_lossy(&body)),
            ));
        }
        Ok(session)
    }

    /// One held connect; the response body (messages, then the connect reply).
    pub async fn connect(&mut self) -> io::Result<Vec<u8>> {
        self.next_id += 1;
        let mut body = String::with_capacity(128);
        for part in [
            r#"[{"id":""#,
            itoa::Buffer::new().format(self.next_id),
            r#"","channel":"/meta/connect","clientId":""#,
            &self.client_id,
            r#"","connectionType":"long-polling"}]"#,
        ] {
            body.push_str(part);
        }
        let (status, body) = self.http.post(&self.path, &body).await?;
        if status != 200 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("connect: {status}"),
            ));
        }
        Ok(body)
    }
}

/// How many messages a connect response holds: its objects with a `data` member.
pub fn messages_in(body: &[u8]) -> usize {
    memchr::memmem::find_iter(body, b"\"data\":").count()
}

/// Every `SentAt` stamp in a response (microseconds).
pub fn stamps_in(body: &[u8]) -> impl Iterator<Item = u64> + '_ {
    const KEY: &[u8] = b"\"SentAt\":";
    memchr::memmem::find_iter(body, KEY).filter_map(move |at| {
        let digits = &body[at + KEY.len()..];
        let digits = digits.strip_prefix(b"\"").unwrap_or(digits);
        let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
        std::str::from_utf8(&digits[..len]).ok()?.parse().ok()
    })
}
