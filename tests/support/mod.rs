//! Helpers for black-box tests: start the real `callgate serve` on free ports and talk to it as clients do.

#![allow(dead_code)]

pub mod arb;
pub mod durable;
pub mod postgres;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running gateway; killed when dropped.
pub struct Gateway {
    pub child: Child,
    pub http: String,
    pub ingest: String,
}

impl Gateway {
    /// Starts `callgate serve` on port 0 with extra flags; waits for the ready line.
    pub fn start(extra: &[&str]) -> Gateway {
        Self::spawn(extra, &[], Stdio::inherit())
    }

    /// Starts `callgate serve` on port 0 with extra flags, extra environment and `stderr` as given;
    /// waits for the ready line.
    pub fn spawn(extra: &[&str], env: &[(&str, &str)], stderr: Stdio) -> Gateway {
        let mut command = Command::new(env!("CARGO_BIN_EXE_callgate"));
        command.envs(env.iter().copied()).stderr(stderr);
        Self::spawn_command(command, extra)
    }

    /// Starts `command` (the callgate binary, or a program that runs it, such as `prlimit ... --
    /// callgate`) with `serve` on port 0 and extra flags; waits for the ready line.
    pub fn spawn_command(command: Command, extra: &[&str]) -> Gateway {
        Self::spawn_listening(command, "127.0.0.1:0", extra)
    }

    /// Starts `callgate serve` with its HTTP door on `listen` (a restart on the port a client knows),
    /// the ingest on port 0, and extra flags; waits for the ready line.
    pub fn start_on(listen: &str, extra: &[&str]) -> Gateway {
        let command = Command::new(env!("CARGO_BIN_EXE_callgate"));
        Self::spawn_listening(command, listen, extra)
    }

    fn spawn_listening(mut command: Command, listen: &str, extra: &[&str]) -> Gateway {
        let mut child = command
            .args(["serve", "--listen", listen, "--ingest", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("callgate serve starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("ready line");
        let ready: serde_json::Value = serde_json::from_str(&line).expect("ready line is JSON");
        Gateway {
            child,
            http: ready["listening"].as_str().expect("listening").to_owned(),
            ingest: ready["ingest"].as_str().expect("ingest").to_owned(),
        }
    }

    /// `GET path`: status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.http, path)
    }

    /// The value of one sample of `/metrics` (name with its labels, as printed), if present.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200);
        body.lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGHUP (reload the access file and certificates).
    pub fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// The WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/api/v2/ws", self.http)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect HTTP");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let status: u16 = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    // Bodies may be chunked; unchunk if needed.
    let headers = response
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let body = if headers.contains("transfer-encoding: chunked") {
        unchunk(&body)
    } else {
        body
    };
    (status, body)
}

fn unchunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    out
}

/// An ingest client: writes lines, reads acknowledgement and error lines.
pub struct Ingest {
    pub stream: TcpStream,
}

impl Ingest {
    pub fn connect(gateway: &Gateway) -> Ingest {
        let stream = TcpStream::connect(&gateway.ingest).expect("connect ingest");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        Ingest { stream }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write ingest");
    }

    /// Half-closes and reads every line the gateway writes until it closes.
    pub fn finish(self) -> Vec<serde_json::Value> {
        self.stream
            .shutdown(std::net::Shutdown::Write)
            .expect("half-close");
        BufReader::new(self.stream)
            .lines()
            .map(|l| serde_json::from_str(&l.expect("line")).expect("JSON reply"))
            .collect()
    }
}

/// Every scenario folder of `proto-fixtures/` (those with an `events.ndjson`), sorted by name.
pub fn fixture_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto-fixtures");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("proto-fixtures/ exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.join("events.ndjson").is_file())
        .collect();
    dirs.sort();
    dirs
}

/// One scenario folder by name.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("proto-fixtures")
        .join(name)
}

pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// Serializes the tests that start gateways: on a two-core machine, several gateways and their clients
/// running at once would make "a client that keeps up" a matter of luck.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Cases of a property test: `default`, unless the PROPTEST_CASES environment variable says otherwise (a
/// longer exploration, or a shorter run under cargo-mutants).
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A WebSocket client connection, as the tests open them.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text message as sent, skipping pings; `None` on close or after `wait`.
pub async fn next_text(ws: &mut Ws, wait: Duration) -> Option<String> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let message = tokio::time::timeout(wait, ws.next()).await.ok()??.ok()?;
        match message {
            Message::Text(text) => return Some(text.as_str().to_owned()),
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

/// The next JSON message, skipping pings; `None` on close or after `wait`.
pub async fn next_json(ws: &mut Ws, wait: Duration) -> Option<serde_json::Value> {
    let text = next_text(ws, wait).await?;
    Some(serde_json::from_str(&text).expect("server sends JSON"))
}

/// Feeds `bytes` on a fresh ingest connection, half-closes, and returns the gateway's reply lines.
pub async fn ingest(gateway: &Gateway, bytes: Vec<u8>) -> Vec<serde_json::Value> {
    let mut client = Ingest::connect(gateway);
    tokio::task::spawn_blocking(move || {
        client.send(&bytes);
        client.finish()
    })
    .await
    .expect("ingest task")
}

/// A minimal HTTP/1.1 request with extra header lines: status, headers (lowercased names) and body.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, String) {
    http_request_with_body(addr, method, path, headers, "")
}

/// [`http_request`] with a request body (sent with its length unless the method is GET).
pub fn http_request_with_body(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut stream = TcpStream::connect(addr).expect("connect HTTP");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if method != "GET" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
    let body = if chunked {
        unchunk(body)
    } else {
        body.to_owned()
    };
    (status, headers, body)
}

/// The value of header `name` (lowercase) in `headers`.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A fresh folder under the system's temp folder, named for the test.
pub fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("callgate-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// An access file in `dir`: agent1 (7001, billing), agent2 (7002, `agent2_team`) and boss (supervisor of
/// billing), every password "pw".
pub fn two_agents_and_a_boss(dir: &Path, agent2_team: &str) -> PathBuf {
    let pw = callgate::access::password::hash(b"pw").expect("hash");
    let text = format!(
        r#"
[[user]]
username = "agent1"
password = "{pw}"
roles = ["agent"]
devices = ["7001"]
team = "billing"

[[user]]
username = "agent2"
password = "{pw}"
roles = ["agent"]
devices = ["7002"]
team = "{agent2_team}"

[[user]]
username = "boss"
password = "{pw}"
roles = ["supervisor"]
team = "billing"
"#
    );
    let path = dir.join("access.toml");
    std::fs::write(&path, text).expect("access file");
    path
}
