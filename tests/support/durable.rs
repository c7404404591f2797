//! What the durability tests share (tests/journal.rs, tests/jetstream.rs): a simulated hour, a T-Server
//! that reads its acks, the whole notification stream of a gateway, and a gateway that never crashed.

use super::{Gateway, Ws, next_json};
use callgate::ingest::sim::{SimConfig, Simulator};
use futures_util::SinkExt;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

pub const BASE_URL: &str = "http://callgate.test";
/// `--released-linger` for every gateway of these tests: a run longer than the default 30 s would see a
/// restarted gateway forget Released calls that the reference, fed all at once, still shows.
pub const LINGER: &str = "3600";

/// A simulated hour of a small center: its lines and their EventSequenceNumbers.
pub fn an_hour(seed: u64) -> Vec<(u64, String)> {
    let config = SimConfig {
        seed,
        agents: 20,
        queues: 2,
        supervisors: 2,
        calls_per_second: 0.1,
        duration_secs: Some(3600.0),
        ..SimConfig::default()
    };
    Simulator::new(config)
        .map(|event| {
            let value: Value = serde_json::from_str(&event.line).expect("JSON");
            let sequence = value["EventSequenceNumber"]
                .as_u64()
                .expect("every simulated event is numbered");
            (sequence, event.line)
        })
        .collect()
}

/// Sends `lines` on one ingest connection, waits until the last one is acked, then `settle` longer: the
/// analytics tests run with a 1 s `--released-linger`, and the last calls' CDRs fall due by the
/// gateway's ticks after it.
pub fn send_acked_and_settle(gateway: &Gateway, lines: &[(u64, String)], settle: Duration) {
    let mut tserver = TServer::connect(gateway);
    tserver.send(lines);
    let last = lines.last().expect("events").0;
    assert_eq!(
        tserver.acked_up_to(last, Duration::from_secs(60)),
        Some(last)
    );
    std::thread::sleep(settle);
}

/// `callgate export --journal JOURNAL ARGS...`: its standard output (it must succeed).
pub fn export(journal: &std::path::Path, args: &[&str]) -> String {
    let journal = journal.to_str().expect("a UTF-8 path");
    callgate_export(&[&["--journal", journal], args].concat())
}

/// `callgate export ARGS...`: its standard output (it must succeed).
pub fn callgate_export(args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
        .arg("export")
        .args(args)
        .output()
        .expect("callgate export runs");
    assert!(
        output.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// Waits until the file at `path` holds `needle` (at most `wait`).
pub fn wait_for(path: &std::path::Path, needle: &str, wait: Duration) {
    let deadline = Instant::now() + wait;
    while !std::fs::read_to_string(path).is_ok_and(|text| text.contains(needle)) {
        assert!(
            Instant::now() < deadline,
            "{} never had {needle}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An ingest connection that reads its acks on a thread, as a T-Server does.
pub struct TServer {
    pub stream: TcpStream,
    pub acks: std::sync::mpsc::Receiver<Value>,
    pub last_ack: Option<u64>,
}

impl TServer {
    pub fn connect(gateway: &Gateway) -> TServer {
        Self::connect_to(&gateway.ingest)
    }

    /// An ingest connection to `address`.
    pub fn connect_to(address: &str) -> TServer {
        let stream = TcpStream::connect(address).expect("ingest connects");
        let reader = stream.try_clone().expect("clone");
        let (tx, acks) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { return };
                let Ok(reply) = serde_json::from_str::<Value>(&line) else {
                    return;
                };
                if tx.send(reply).is_err() {
                    return;
                }
            }
        });
        TServer {
            stream,
            acks,
            last_ack: None,
        }
    }

    pub fn send(&mut self, lines: &[(u64, String)]) {
        let mut bytes = Vec::new();
        for (_, line) in lines {
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        self.stream.write_all(&bytes).expect("events written");
    }

    /// Reads replies until an error line (returned) or `wait` passes; the last ack is kept.
    pub fn until_error(&mut self, wait: Duration) -> Option<Value> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = self.acks.recv_timeout(left).ok()?;
            if let Some(ack) = reply["ack"].as_u64() {
                self.last_ack = Some(ack);
            }
            if reply.get("error").is_some() {
                return Some(reply);
            }
        }
    }

    /// Reads acks until one reaches `sequence` (or `wait` passes); the last ack seen.
    pub fn acked_up_to(&mut self, sequence: u64, wait: Duration) -> Option<u64> {
        let deadline = Instant::now() + wait;
        while self.last_ack.is_none_or(|ack| ack < sequence) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(reply) = self.acks.recv_timeout(left) else {
                break;
            };
            assert!(reply.get("error").is_none(), "{reply}");
            if let Some(ack) = reply["ack"].as_u64() {
                self.last_ack = Some(ack);
            }
        }
        self.last_ack
    }
}

/// Subscribes to calls and devices; the `subscribed` reply.
pub async fn subscribe(gateway: &Gateway, since: Option<(&str, u64)>) -> (Ws, Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(gateway.ws_url())
        .await
        .expect("WebSocket");
    let mut request = json!({"type":"subscribe","sub":"all","topics":["calls","devices","queues"]});
    if let Some((epoch, seq)) = since {
        request["since"] = json!({"epoch": epoch, "seq": seq});
    }
    ws.send(Message::text(request.to_string()))
        .await
        .expect("subscribe");
    loop {
        let reply = next_json(&mut ws, Duration::from_secs(10))
            .await
            .expect("a reply");
        if reply["type"] == "subscribed" {
            return (ws, reply);
        }
    }
}

/// Notifications from `ws` until `seq` `last`: (seq, channel, data).
pub async fn notifications_until(ws: &mut Ws, last: u64) -> Vec<(u64, Value, Value)> {
    let mut got = Vec::new();
    let mut seq = 0;
    while seq < last {
        let Some(message) = next_json(ws, Duration::from_secs(10)).await else {
            break;
        };
        if message["type"] != "notification" {
            continue;
        }
        seq = message["seq"].as_u64().expect("seq");
        got.push((seq, message["channel"].clone(), message["data"].clone()));
    }
    got
}

/// The whole stream a gateway holds (resumed from seq 0), and where it ends.
pub async fn whole_stream(gateway: &Gateway) -> (String, Vec<(u64, Value, Value)>) {
    let (_, now) = subscribe(gateway, None).await;
    let epoch = now["epoch"].as_str().expect("epoch").to_owned();
    let last = now["seq"].as_u64().expect("seq");
    let (mut ws, resumed) = subscribe(gateway, Some((&epoch, 0))).await;
    assert_eq!(resumed["resumed"], true, "{resumed}");
    let stream = notifications_until(&mut ws, last).await;
    assert_eq!(stream.len() as u64, last, "every notification is held");
    (epoch, stream)
}

/// What a gateway that never crashed makes of `lines`: its whole stream and its calls.
pub async fn reference(lines: &[(u64, String)]) -> (Vec<(u64, Value, Value)>, Value) {
    let last = lines.last().expect("events").0;
    let reference = Gateway::start(&["--base-url", BASE_URL, "--released-linger", LINGER]);
    let mut feeder = TServer::connect(&reference);
    feeder.send(lines);
    assert_eq!(
        feeder.acked_up_to(last, Duration::from_secs(60)),
        Some(last)
    );
    let (_, stream) = whole_stream(&reference).await;
    (stream, calls(&reference))
}

/// `got` is `want`, notification by notification (`context` says how to repeat the run).
pub fn same_stream(got: &[(u64, Value, Value)], want: &[(u64, Value, Value)], context: &str) {
    assert_eq!(
        got.len(),
        want.len(),
        "no notification missing or doubled {context}"
    );
    for (got, want) in got.iter().zip(want) {
        assert_eq!(got, want, "seq {} {context}", want.0);
    }
}

pub fn calls(gateway: &Gateway) -> Value {
    let (status, body) = gateway.get("/api/v2/calls");
    assert_eq!(status, 200);
    serde_json::from_str(&body).expect("JSON")
}

/// The lines after `acked`.
pub fn after(lines: &[(u64, String)], acked: u64) -> Vec<(u64, String)> {
    lines.iter().filter(|(s, _)| *s > acked).cloned().collect()
}

/// `kill -9` mid-stream and a restart; `start` starts a gateway on the same durable store each time. The
/// first takes 60% of `lines` with acks, then the rest, and is killed `pause` later; the second gets the
/// T-Server's resend from its last ack. Its whole stream (`seq` by `seq`), calls and epoch are those of a
/// gateway that never crashed, and what the killed one delivered is what the stream holds under those
/// `seq`s.
pub async fn survives_kill_9(
    lines: &[(u64, String)],
    pause: Duration,
    start: impl Fn() -> Gateway,
) {
    let last = lines.last().expect("events").0;
    let (want, want_calls) = reference(lines).await;

    let mut first = start();
    let (mut live, subscribed) = subscribe(&first, None).await;
    let epoch = subscribed["epoch"].as_str().expect("epoch").to_owned();
    let split = lines.len() * 6 / 10;
    let mut tserver = TServer::connect(&first);
    tserver.send(&lines[..split]);
    let acked = tserver.acked_up_to(lines[split - 1].0, Duration::from_secs(60));
    assert_eq!(acked, Some(lines[split - 1].0));
    tserver.send(&lines[split..]);
    if !pause.is_zero() {
        tokio::time::sleep(pause).await;
    }
    first.child.kill().expect("kill -9");
    first.child.wait().expect("reaped");
    let acked = tserver
        .acked_up_to(u64::MAX, Duration::from_millis(300))
        .expect("acks");
    eprintln!(
        "acked {acked} of {last} (split at {}) before the kill",
        lines[split - 1].0
    );
    // What the live client got before the kill (it may have coalesced: each seq it has is checked).
    let seen = notifications_until(&mut live, u64::MAX).await;
    assert!(!seen.is_empty());

    let second = start();
    let mut resend = TServer::connect(&second);
    resend.send(&after(lines, acked));
    assert_eq!(
        resend.acked_up_to(last, Duration::from_secs(60)),
        Some(last)
    );
    let (epoch_after, got) = whole_stream(&second).await;
    assert_eq!(epoch_after, epoch, "the epoch is kept");
    same_stream(&got, &want, "");
    for notification in &seen {
        assert_eq!(Some(notification), want.get(notification.0 as usize - 1));
    }
    assert_eq!(calls(&second), want_calls);
}

impl TServer {
    /// Reads replies until an ack reaches `sequence`, an error line comes, the gateway closes the
    /// connection, or `wait` passes; returns the error line, if one came (the last ack is kept).
    pub fn ack_or_error(&mut self, sequence: u64, wait: Duration) -> Option<Value> {
        let deadline = Instant::now() + wait;
        while self.last_ack.is_none_or(|ack| ack < sequence) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(reply) = self.acks.recv_timeout(left) else {
                return None;
            };
            if let Some(ack) = reply["ack"].as_u64() {
                self.last_ack = Some(ack);
            }
            if reply.get("error").is_some() {
                return Some(reply);
            }
        }
        None
    }
}

/// A real `nats-server` with JetStream (Debian's package), on a free loopback port, storing in a folder;
/// killed when dropped.
pub struct NatsServer {
    child: Option<std::process::Child>,
    /// Its client port.
    pub port: u16,
    /// Its JetStream store and log.
    pub dir: std::path::PathBuf,
}

impl NatsServer {
    /// Starts one storing in `dir`; waits until it takes clients.
    pub fn start(dir: &std::path::Path) -> NatsServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut server = NatsServer {
            child: None,
            port,
            dir: dir.to_owned(),
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        let port = self.port.to_string();
        let store = self.dir.join("store");
        let log = self.dir.join("nats.log");
        let child = std::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port])
            .arg("-sd")
            .arg(&store)
            .arg("-l")
            .arg(&log)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect(
                "nats-server runs (Debian package nats-server; scripts/test-all.sh installs it)",
            );
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let mut info = String::new();
                if BufReader::new(stream).read_line(&mut info).is_ok() && info.starts_with("INFO") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not take clients on port {port}; see {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
