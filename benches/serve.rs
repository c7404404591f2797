//! Live gateway benchmarks against the real `callgate serve` binary on loopback, and the same fanout
//! workloads delivered by nats-server's WebSocket listener (issue 4). Client and server share this
//! machine's two cores; the client's own cost is part of every figure, and is reported next to it.
//!
//! Run: `cargo bench --bench serve` (the issue-4 suite: `ingest`, `latency-matrix`, `compare`,
//! `live-calls-memory`, `idle-memory`), `cargo bench --bench serve -- all` (the suite and the
//! diagnostic scenarios), or `cargo bench --bench serve -- NAME...` for any of:
//! - `ingest`: ingest throughput over 4 connections, each its own T-Server, no WebSocket client;
//! - `latency-matrix`: ingest→WebSocket latency at 1k/10k/20k events/s × 100/1,000/10,000 agent clients
//!   (+ 10 all-calls clients);
//! - `saturation`, `fanout-p99`: callgate's fanout; `nats-saturation`, `nats-fanout-p99`: nats-server's;
//!   `compare`: both back to back with identical parameters, and their ratios;
//! - `live-calls-memory`: resident memory per live call at 100,000 live calls;
//! - `idle-memory`: resident memory per idle subscribed WebSocket at 10,000 connections;
//! - `rest-lookup`, `snapshot-under-load`, `login-storm`: issues 10's and 11's targets (see each function);
//! - `scope-cost`: the latency matrix and saturation runs in open mode and with a 10,000-user access file;
//! - `cometd-compare`: CometD long-polling to 1,000 sessions, callgate against `cometd-nodejs-server`;
//! - `cometd-idle-memory`: resident memory per idle CometD long-polling session at 10,000 sessions;
//! - `journal-ingest`, `journal-recovery`: issue 13's (ingest with `--journal` against in memory, and
//!   the replay of a 1,000,000-event journal at restart); `nats-ingest`: ingest and latency with `--nats`
//!   against in memory;
//! - `analytics`: issue 14's (the live CDR builder's CPU, the export, the PostgreSQL sink), or each part
//!   alone: `analytics-live`, `analytics-export`, `analytics-sink` (these two on the journal that
//!   `BENCH_ANALYTICS_JOURNAL=DIR` names: made and kept there the first time, reused after);
//! - diagnostics: `latency` (one 10 s cell), `light`, `agents-only`, `pipeline-only`.
//!
//! `BENCH_QUICK=1` shrinks every count and duration (about a tenth) to check that the scenarios work;
//! its figures mean nothing. `BENCH_SHARDS=N` sets the gateway's reducer shards; `BENCH_GATEWAY_ARGS`
//! adds flags to every gateway started (e.g. `"--history 1000"`). `BENCH_KEEP_JOURNAL=DIR` keeps a copy of
//! `journal-recovery`'s journal in DIR, to profile a restart by hand.
//!
//! Latency is counted at the client from a timestamp: the load generator stamps every event with
//! `Extensions.SentAt` (wall-clock microseconds) as it writes it to the ingest socket, the gateway passes
//! the event's Extensions into its notifications, and each client subtracts. The nats-server peer
//! publishes the notifications the library's reducer makes of the same events, framed exactly as the
//! gateway frames them, and stamps `SentAt` in them as it writes them.

#[path = "support/nats.rs"]
mod nats;

use futures_util::{SinkExt, StreamExt};
use std::io::{BufRead, BufReader, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

#[path = "support/wsclient.rs"]
mod wsclient;

#[path = "support/bare.rs"]
mod bare;

#[path = "support/bayeux.rs"]
mod bayeux;

#[path = "../tests/support/postgres.rs"]
#[allow(dead_code)]
mod postgres;

/// Whether `BENCH_QUICK` asks for a smoke run.
fn quick() -> bool {
    std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `full`, or `small` in a smoke run.
fn sized<T>(full: T, small: T) -> T {
    if quick() { small } else { full }
}

/// A `callgate serve` process on free loopback ports, killed on drop.
struct Gateway {
    child: Child,
    http: String,
    ingest: String,
}

impl Gateway {
    /// Starts the gateway with default settings.
    fn start() -> Gateway {
        Gateway::start_with(&[])
    }

    /// Starts the gateway on free loopback ports with `extra` flags and waits for its ready line.
    fn start_with(extra: &[&str]) -> Gateway {
        let mut child = Command::new(env!("CARGO_BIN_EXE_callgate"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--ingest",
                "127.0.0.1:0",
                "--released-linger",
                "5",
            ])
            .args(extra)
            // Extra flags for every gateway this bench starts, to try a setting without editing code.
            .args(
                std::env::var("BENCH_GATEWAY_ARGS")
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .env("RUST_LOG", "warn")
            .envs(
                std::env::var("BENCH_SHARDS")
                    .ok()
                    .map(|s| ("CALLGATE_SHARDS", s)),
            )
            .stdout(Stdio::piped())
            .spawn()
            .expect("gateway starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("ready line");
        let ready: serde_json::Value = serde_json::from_str(&line).expect("ready JSON");
        Gateway {
            child,
            http: ready["listening"].as_str().expect("listening").to_owned(),
            ingest: ready["ingest"].as_str().expect("ingest").to_owned(),
        }
    }

    /// CPU time (user + system) the gateway process has used so far.
    fn cpu_seconds(&self) -> f64 {
        cpu_seconds_of(&self.child.id().to_string())
    }

    /// The gateway's resident set (VmRSS).
    fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// The gateway's `/metrics` text.
    fn metrics(&self) -> String {
        let Ok(mut stream) = std::net::TcpStream::connect(&self.http) else {
            return String::new();
        };
        let _ = write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stream, &mut text);
        text
    }

    /// The value of an unlabelled metric.
    fn metric(&self, name: &str) -> Option<f64> {
        self.metrics().lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
    }
}

/// CPU seconds (user + system) of process `pid` (`self` for this one).
fn cpu_seconds_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails early, with the fix, when this process may not open `needed` files: thousands of clients would
/// otherwise fail one by one in the middle of a run. The gateway and nats-server inherit the same limit.
fn check_open_files(needed: u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse::<u64>().ok());
    if let Some(soft) = soft {
        assert!(
            soft >= needed,
            "this run needs about {needed} open files but the limit is {soft}: raise it (`ulimit -n {needed}`) and run again"
        );
    }
}

/// The wall clock in microseconds, the unit of `SentAt`.
fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The simulated center of `agents` agents whose traffic the benches replay: calls only (no agent-state
/// events), so that the figures compare with those measured before the simulator had agent states, and a
/// 10,000-agent center's first events are not 10,000 logins.
fn center(agents: u32, seed: u64) -> callgate::ingest::sim::SimConfig {
    callgate::ingest::sim::SimConfig {
        seed,
        agents,
        queues: 8,
        supervisors: 10,
        calls_per_second: f64::from(agents) / 200.0,
        agent_states: false,
        ..callgate::ingest::sim::SimConfig::default()
    }
}

/// Simulated traffic for `agents` agents (see [`center`]), time-compressed by the pacing below.
fn traffic(agents: u32, events: usize, seed: u64) -> Vec<String> {
    callgate::ingest::sim::Simulator::new(center(agents, seed))
        .take(events)
        .map(|e| e.line)
        .collect()
}

/// The line with `Extensions.SentAt` set to now.
fn stamp(line: &str) -> String {
    stamp_with(line, now_micros())
}

/// The line with `Extensions.SentAt` set to `sent`.
fn stamp_with(line: &str, sent: u64) -> String {
    if let Some(at) = line.find("\"Extensions\":{") {
        let at = at + "\"Extensions\":{".len();
        format!("{}\"SentAt\":{sent},{}", &line[..at], &line[at..])
    } else {
        format!(
            "{},\"Extensions\":{{\"SentAt\":{sent}}}}}\n",
            &line[..line.len() - 1]
        )
    }
}

/// A `SentAt` of 16 digits, as wide as the wall clock in microseconds (until the year 2286), so the
/// publisher can overwrite it in place.
const PLACEHOLDER_STAMP: u64 = 1_000_000_000_000_000;

/// What callgate's WebSocket clients receive for `lines`, per event: the library's reducer folds the
/// events (stamped with a placeholder `SentAt`) and each notification is framed as the gateway frames it
/// (`{"type":"notification","epoch":...,"seq":N,` + the notification's members + `}`), with an epoch and
/// a base URL of the gateway's lengths. So the nats-server peer carries the same bytes, within a few.
fn notification_frames(lines: &[String]) -> Vec<Vec<nats::Payload>> {
    let mut reducer = callgate::reduce::Fold::new(callgate::reduce::ReducerConfig {
        base_url: "http://127.0.0.1:40000".to_owned(),
        ..callgate::reduce::ReducerConfig::default()
    });
    let epoch = format!(
        "{:x}-{:x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        std::process::id()
    );
    let mut notifications = callgate::reduce::Notifications::default();
    let mut seq = 0u64;
    lines
        .iter()
        .map(|line| {
            let stamped = stamp_with(line, PLACEHOLDER_STAMP);
            let _ = reducer.apply_line(stamped.trim_end().as_bytes(), &mut notifications);
            let frames = notifications
                .iter()
                .map(|n| {
                    seq += 1;
                    let frame = format!(
                        "{{\"type\":\"notification\",\"epoch\":\"{epoch}\",\"seq\":{seq},{}}}",
                        n.members
                    );
                    let stamp_at = frame
                        .find(&format!("\"SentAt\":{PLACEHOLDER_STAMP}"))
                        .map(|at| at + "\"SentAt\":".len());
                    nats::Payload {
                        bytes: frame.into_bytes(),
                        stamp_at,
                    }
                })
                .collect();
            notifications.clear();
            frames
        })
        .collect()
}

/// Writes `lines` to the ingest socket at `rate` events per second (0: as fast as possible).
async fn feed(ingest: &str, lines: &[String], rate: u64) -> Duration {
    let mut stream = tokio::net::TcpStream::connect(ingest)
        .await
        .expect("ingest connects");
    let (mut reader, mut writer) = stream.split();
    let drain = async {
        let mut sink = tokio::io::sink();
        let _ = tokio::io::copy(&mut reader, &mut sink).await;
    };
    let send = async {
        let pacer = Pacer::new(rate);
        let mut buf = String::new();
        for (i, chunk) in lines.chunks(pacer.per_tick).enumerate() {
            pacer.wait(i).await;
            buf.clear();
            for line in chunk {
                buf.push_str(&stamp(line));
                if !buf.ends_with('\n') {
                    buf.push('\n');
                }
            }
            writer
                .write_all(buf.as_bytes())
                .await
                .expect("write events");
        }
        let elapsed = pacer.started.elapsed();
        writer.shutdown().await.expect("half-close");
        elapsed
    };
    let (elapsed, ()) = tokio::join!(send, drain);
    elapsed
}

/// Writes `bytes` (event lines) to a new ingest connection as fast as possible, half-closes, and reads
/// until the gateway closes: returns the last acknowledgement line, which the gateway writes once it has
/// taken every event.
async fn feed_until_acked(ingest: String, bytes: Arc<Vec<u8>>) -> serde_json::Value {
    let mut stream = tokio::net::TcpStream::connect(&ingest)
        .await
        .expect("ingest connects");
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.split();
    let send = async {
        writer.write_all(&bytes).await.expect("write events");
        writer.shutdown().await.expect("half-close");
    };
    let mut replies = Vec::new();
    let receive = reader.read_to_end(&mut replies);
    let ((), read) = tokio::join!(send, receive);
    read.expect("read acknowledgements");
    let text = String::from_utf8_lossy(&replies);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|_| panic!("final ack, got {last:?}"))
}

/// A client as a browser would be: small read buffer (tungstenite's default 128 KiB buffer is zero-filled
/// on every read, which would make the client, not the gateway, the bottleneck).
async fn connect(
    url: &str,
) -> (
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::handshake::client::Response,
) {
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(8 * 1024);
    tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .expect("WebSocket connects")
}

/// What one client saw; the same for callgate's and nats-server's clients.
#[derive(Default)]
struct ClientStats {
    latencies_us: Vec<u64>,
    /// When each measured notification's event was sent (wall-clock microseconds), for the timeline.
    sent_us: Vec<u64>,
    frames: u64,
    /// Payload bytes of those frames, to show both servers carried the same sizes.
    bytes: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl ClientStats {
    /// Records the latency of a notification from its `SentAt` stamp, if it has one.
    fn record_stamp(&mut self, payload: &[u8]) {
        const KEY: &[u8] = b"\"SentAt\":";
        let Some(at) = memchr::memmem::find(payload, KEY) else {
            return;
        };
        let digits = &payload[at + KEY.len()..];
        let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
        if let Some(sent) = std::str::from_utf8(&digits[..len])
            .ok()
            .and_then(|d| d.parse::<u64>().ok())
        {
            self.latencies_us.push(now_micros().saturating_sub(sent));
            self.sent_us.push(sent);
        }
    }
}

/// `HOST:PORT` of a `ws://HOST:PORT/path` URL.
fn authority(url: &str) -> &str {
    let rest = url.trim_start_matches("ws://");
    rest.split('/').next().unwrap_or(rest)
}

/// One WebSocket client of a run: its filter, and the Bearer token it sends as its first frame when the
/// gateway has an access file.
struct Subscriber {
    filter: serde_json::Value,
    token: Option<String>,
}

impl Subscriber {
    /// A client of a gateway in open mode.
    fn open(filter: serde_json::Value) -> Subscriber {
        Subscriber {
            filter,
            token: None,
        }
    }
}

/// Opens a WebSocket, authenticates when it has a token, subscribes with its filter, then records every
/// notification until `stop`.
async fn client(
    url: String,
    subscriber: Subscriber,
    ready: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    stop: tokio_util::sync::CancellationToken,
) -> ClientStats {
    let mut ws = wsclient::connect(authority(&url), "/api/v2/ws")
        .await
        .expect("WebSocket connects");
    // Replies to skip before notifications: `authenticated`, then `subscribed`.
    let mut replies = 1;
    if let Some(token) = &subscriber.token {
        let auth = serde_json::json!({"type": "auth", "token": token});
        ws.send_text(&auth.to_string()).await.expect("auth");
        replies += 1;
    }
    let request = serde_json::json!({"type":"subscribe","sub":"s","filter":subscriber.filter});
    ws.send_text(&request.to_string()).await.expect("subscribe");
    let mut stats = ClientStats::default();
    // Made once: a new `cancelled()` per frame would register with the token every time, and every client
    // shares it.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let frame = tokio::select! {
            frame = ws.next_frame() => frame,
            () = &mut stopped => break,
        };
        let Ok(Some((op, payload))) = frame else {
            break;
        };
        if op != wsclient::opcode::TEXT {
            continue;
        }
        if replies > 0 {
            replies -= 1;
            if replies == 0 {
                ready.fetch_add(1, Ordering::AcqRel);
            }
            continue;
        }
        let now = Instant::now();
        stats.frames += 1;
        stats.bytes += payload.len() as u64;
        received.fetch_add(1, Ordering::Relaxed);
        stats.first.get_or_insert(now);
        stats.last = Some(now);
        stats.record_stamp(payload);
    }
    stats
}

/// Waits until every `expected` delivery has arrived or deliveries stopped: none for 1 s after the first
/// (or after 5 s without any). A fixed wait would either cut a slow run short or idle a fast one.
async fn settle(received: &AtomicU64, expected: Option<u64>) {
    const QUIET: Duration = Duration::from_secs(1);
    let started = Instant::now();
    let mut last = received.load(Ordering::Relaxed);
    let mut changed = Instant::now();
    while started.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = received.load(Ordering::Relaxed);
        if expected.is_some_and(|e| now >= e) {
            break;
        }
        if now != last {
            last = now;
            changed = Instant::now();
        } else if changed.elapsed() >= QUIET && (now > 0 || started.elapsed() >= QUIET * 5) {
            break;
        }
    }
}

/// Waits until `count` clients have subscribed. A client that fails panics in its task and never counts,
/// so this gives up after two minutes rather than hang the suite.
async fn wait_ready(ready: &AtomicU64, count: u64) {
    let started = Instant::now();
    while ready.load(Ordering::Acquire) < count {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "only {} of {count} clients subscribed within 120 s",
            ready.load(Ordering::Acquire)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `p` quantile of `sorted` microseconds, in milliseconds (NaN when empty).
fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

/// One fanout run's measurements, from callgate or nats-server.
struct Run {
    clients: Vec<ClientStats>,
    /// Events written (callgate) or published events' worth of notifications (nats-server).
    sent: usize,
    /// Notifications the server had to deliver to each all-calls client (0: not counted).
    notifications: u64,
    send_time: Duration,
    /// When the first event (or frame) was sent.
    publish_started: Instant,
    /// Server CPU seconds used from the first event sent to the end of the settle time.
    server_cpu: f64,
    /// This process's (the clients' and the load generator's) CPU seconds over the same time.
    client_cpu: f64,
}

impl Run {
    /// Frames received across clients.
    fn delivered(&self) -> u64 {
        self.clients.iter().map(|c| c.frames).sum()
    }

    /// Seconds from the first event sent until every client had received its last frame: when every
    /// client holds the final version of every call, what a UI waits for. (nats-server and the bare
    /// broadcaster deliver every frame in order; callgate may coalesce, but always delivers a call's
    /// newest version, so for all three a client's last frame completes its picture.)
    fn settled(&self) -> f64 {
        self.clients
            .iter()
            .filter_map(|c| c.last)
            .max()
            .map_or(f64::NAN, |last| {
                last.saturating_duration_since(self.publish_started)
                    .as_secs_f64()
            })
    }

    /// Seconds from the first receipt to the last, across clients.
    fn span(&self) -> f64 {
        let first = self.clients.iter().filter_map(|c| c.first).min();
        let last = self.clients.iter().filter_map(|c| c.last).max();
        match (first, last) {
            (Some(a), Some(b)) => (b - a).as_secs_f64(),
            _ => f64::NAN,
        }
    }

    /// Mean payload bytes per delivery.
    fn mean_bytes(&self) -> f64 {
        self.clients.iter().map(|c| c.bytes).sum::<u64>() as f64 / self.delivered().max(1) as f64
    }

    /// Deliveries over the first-to-last receipt span.
    fn deliveries_per_second(&self) -> f64 {
        self.delivered() as f64 / self.span()
    }

    /// Every client's latency samples (µs), sorted.
    fn latencies(&self) -> Vec<u64> {
        let mut all: Vec<u64> = self
            .clients
            .iter()
            .flat_map(|c| c.latencies_us.iter().copied())
            .collect();
        all.sort_unstable();
        all
    }

    /// Server and client CPU microseconds per delivery.
    fn cpu_per_delivery(&self) -> (f64, f64) {
        let frames = self.delivered().max(1) as f64;
        (
            self.server_cpu * 1e6 / frames,
            self.client_cpu * 1e6 / frames,
        )
    }
}

/// Paces a load generator: items are written in ticks of `rate / 1000` (1,000 when `rate` is 0, as fast
/// as possible), one write a tick, a tick every millisecond of the schedule.
struct Pacer {
    started: Instant,
    rate: u64,
    /// Items per tick.
    per_tick: usize,
}

impl Pacer {
    fn new(rate: u64) -> Pacer {
        let per_tick = if rate == 0 {
            1000
        } else {
            (rate / 1000).max(1) as usize
        };
        Pacer {
            started: Instant::now(),
            rate,
            per_tick,
        }
    }

    /// Waits for the start of tick `tick` (at once when unpaced).
    async fn wait(&self, tick: usize) {
        if let Some(micros) =
            (tick as u64 * self.per_tick as u64 * 1_000_000).checked_div(self.rate)
        {
            tokio::time::sleep_until((self.started + Duration::from_micros(micros)).into()).await;
        }
    }
}

/// What [`measure`] saw.
struct Measured {
    clients: Vec<ClientStats>,
    send_time: Duration,
    publish_started: Instant,
    server_cpu: f64,
    client_cpu: f64,
}

impl Measured {
    /// The run, for `sent` events (or events' worth of frames) making `notifications` each.
    fn into_run(self, sent: usize, notifications: u64) -> Run {
        Run {
            clients: self.clients,
            sent,
            notifications,
            send_time: self.send_time,
            publish_started: self.publish_started,
            server_cpu: self.server_cpu,
            client_cpu: self.client_cpu,
        }
    }
}

/// Opens one client per item of `clients` with `spawn` (in bursts of 200, so the accept backlog holds),
/// waits until every one is subscribed, runs `publish`, waits until `expected` deliveries arrived or they
/// stopped, and measures the server's CPU (`server_cpu`) and this process's over that time. The same for
/// callgate, nats-server and the bare broadcaster.
async fn measure<C, S, P, F>(
    clients: Vec<C>,
    spawn: S,
    expected: Option<u64>,
    server_cpu: impl Fn() -> f64,
    publish: P,
) -> Measured
where
    S: Fn(
        C,
        Arc<AtomicU64>,
        Arc<AtomicU64>,
        tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<ClientStats>,
    P: FnOnce() -> F,
    F: std::future::Future<Output = Duration>,
{
    let ready = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let count = clients.len() as u64;
    let mut tasks = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        tasks.push(spawn(
            client,
            Arc::clone(&ready),
            Arc::clone(&received),
            stop.clone(),
        ));
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    wait_ready(&ready, count).await;
    let cpu_before = server_cpu();
    let client_before = cpu_seconds_of("self");
    let publish_started = Instant::now();
    let send_time = publish().await;
    settle(&received, expected).await;
    let server_cpu = server_cpu() - cpu_before;
    let client_cpu = cpu_seconds_of("self") - client_before;
    stop.cancel();
    let mut stats = Vec::new();
    for task in tasks {
        stats.push(task.await.expect("client task"));
    }
    Measured {
        clients: stats,
        send_time,
        publish_started,
        server_cpu,
        client_cpu,
    }
}

/// Opens one callgate client per subscriber, writes `lines` at `rate` events/s (0: as fast as possible)
/// and waits until deliveries stop. `notifications`, when known, is what each all-calls client should get.
async fn run_clients(
    gateway: &Gateway,
    subscribers: Vec<Subscriber>,
    lines: &[String],
    rate: u64,
    notifications: u64,
) -> Run {
    let url = format!("ws://{}/api/v2/ws", gateway.http);
    // Only all-calls clients make the expected total knowable.
    let expected = subscribers
        .iter()
        .all(|s| s.filter.as_object().is_some_and(serde_json::Map::is_empty))
        .then_some(notifications * subscribers.len() as u64)
        .filter(|&e| e > 0);
    let measured = measure(
        subscribers,
        |subscriber, ready, received, stop| {
            tokio::spawn(client(url.clone(), subscriber, ready, received, stop))
        },
        expected,
        || gateway.cpu_seconds(),
        || feed(&gateway.ingest, lines, rate),
    )
    .await;
    measured.into_run(lines.len(), notifications)
}

/// Prints a run's deliveries, CPU per delivery and latency quantiles; `server` names the server's CPU.
fn report_latency(name: &str, server: &str, run: &Run) {
    let all = run.latencies();
    let (server_us, client_us) = run.cpu_per_delivery();
    println!(
        "{name}: {} events in {:.1} s ({:.0}/s), {} deliveries ({:.0} B each), CPU per delivery: {server} {server_us:.1} us, clients {client_us:.1} us; latency ms p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
        run.sent,
        run.send_time.as_secs_f64(),
        run.sent as f64 / run.send_time.as_secs_f64(),
        run.delivered(),
        run.mean_bytes(),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        percentile(&all, 0.999),
        percentile(&all, 1.0),
    );
    if std::env::var_os("BENCH_TIMELINE").is_some() {
        print_timeline(run);
    }
}

/// With `BENCH_TIMELINE` set: the worst latency of each 100 ms of sending, where it passed 5 ms, to tell
/// a steady tail from stalls.
fn print_timeline(run: &Run) {
    let start = run
        .clients
        .iter()
        .flat_map(|c| c.sent_us.iter().copied())
        .min()
        .unwrap_or(0);
    let mut worst: std::collections::BTreeMap<u64, (u64, u64)> = Default::default();
    for client in &run.clients {
        for (sent, latency) in client.sent_us.iter().zip(&client.latencies_us) {
            let slot = worst.entry((sent - start) / 100_000).or_default();
            slot.0 = slot.0.max(*latency);
            slot.1 += u64::from(*latency > 5_000);
        }
    }
    for (slot, (max, over)) in worst {
        if max > 5_000 {
            println!(
                "  t={:.1}s worst {:.1} ms, {over} deliveries over 5 ms",
                slot as f64 / 10.0,
                max as f64 / 1000.0
            );
        }
    }
}

/// How a run's gateway knows its clients.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// No access file: every client sees everything.
    Open,
    /// An [`AccessFile`] of 10,000 agents and 100 supervisors; every client authenticates by its first frame.
    Access,
}

/// Agent users in an [`AccessFile`]; the first ones own the simulated center's agent DNs, the rest DNs
/// that carry no traffic.
const ACCESS_AGENTS: u32 = 10_000;
/// Supervisors in an [`AccessFile`]: the first [`ACCESS_TEAMS`] lead a team each, the others have no team
/// and so see every user's devices (the wallboards log in as these).
const ACCESS_SUPERVISORS: u32 = 100;
/// Teams the agents are spread over.
const ACCESS_TEAMS: u32 = 90;

/// Issue 11's scope-cost access file for one simulated center, with the HS256 secret its clients' tokens
/// are signed with; its directory is removed on drop.
struct AccessFile {
    dir: std::path::PathBuf,
    secret: &'static str,
}

impl AccessFile {
    /// Writes the file for `center`: users `a1`... own its agent DNs, `s90`... its supervisors' DNs, and one
    /// user `queues` its queue DNs, so that a supervisor without a team sees every device the traffic uses
    /// and both modes deliver the same notifications.
    fn write(center: &callgate::ingest::sim::SimConfig) -> AccessFile {
        use std::fmt::Write as _;
        static FILES: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "callgate-scope-cost-{}-{}",
            std::process::id(),
            FILES.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let secret = "a-bench-secret-of-at-least-32-bytes-long";
        std::fs::write(dir.join("jwt.secret"), secret).expect("secret");
        let agent_dns = center.agent_dns();
        let mut file = String::new();
        for i in 1..=ACCESS_AGENTS {
            let dn = agent_dns
                .get(i as usize - 1)
                .cloned()
                .unwrap_or_else(|| format!("6{i:06}"));
            let team = i % ACCESS_TEAMS;
            let _ = write!(
                file,
                "[[user]]\nusername = \"a{i}\"\nroles = [\"agent\"]\ndevices = [\"{dn}\"]\nteam = \"t{team}\"\n\n"
            );
        }
        let supervisor_dns = center.supervisor_dns();
        for k in 0..ACCESS_SUPERVISORS {
            let _ = write!(
                file,
                "[[user]]\nusername = \"s{k}\"\nroles = [\"supervisor\"]\n"
            );
            if k < ACCESS_TEAMS {
                let _ = writeln!(file, "team = \"t{k}\"");
            } else if let Some(dn) = supervisor_dns.get((k - ACCESS_TEAMS) as usize) {
                let _ = writeln!(file, "devices = [\"{dn}\"]");
            }
            file.push('\n');
        }
        let queues: Vec<String> = center
            .queue_dns()
            .iter()
            .map(|dn| format!("\"{dn}\""))
            .collect();
        let _ = write!(
            file,
            "[[user]]\nusername = \"queues\"\nroles = [\"agent\"]\ndevices = [{}]\n\n[jwt]\nhs256_secret_file = \"jwt.secret\"\n",
            queues.join(", ")
        );
        std::fs::write(dir.join("access.toml"), file).expect("access file");
        AccessFile { dir, secret }
    }

    /// The file's path, for `--access`.
    fn path(&self) -> String {
        self.dir.join("access.toml").display().to_string()
    }

    /// A token for `user` that expires long after the bench.
    fn token(&self, user: &str) -> String {
        let claims = serde_json::json!({"sub": user, "exp": 4_000_000_000u64});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(self.secret.as_bytes()),
        )
        .expect("token")
    }

    /// The token of the `n`th wallboard: the supervisors without a team, in turn.
    fn wallboard_token(&self, n: usize) -> String {
        let floor = (ACCESS_SUPERVISORS - ACCESS_TEAMS) as usize;
        self.token(&format!("s{}", ACCESS_TEAMS as usize + n % floor))
    }
}

impl Drop for AccessFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A gateway for `center` in `mode`, and its access file when it has one (kept until the gateway stops).
fn gateway_in(
    mode: Mode,
    center: &callgate::ingest::sim::SimConfig,
) -> (Gateway, Option<AccessFile>) {
    match mode {
        Mode::Open => (Gateway::start(), None),
        Mode::Access => {
            let access = AccessFile::write(center);
            (
                Gateway::start_with(&["--access", &access.path()]),
                Some(access),
            )
        }
    }
}

/// One latency cell: `agents` clients each filtered to its own DN plus `wallboards` all-calls clients,
/// `rate` events/s for `seconds`. With [`Mode::Access`] the agents log in as their DNs' users and the
/// wallboards as supervisors without a team.
async fn latency(agents: u32, wallboards: usize, rate: u64, seconds: u64, mode: Mode) -> Run {
    let center = center(agents, LATENCY_SEED);
    let (gateway, access) = gateway_in(mode, &center);
    let label = format!("latency ({mode:?})");
    latency_on(gateway, access, &label, agents, wallboards, rate, seconds).await
}

/// The simulated center of the latency cells.
const LATENCY_SEED: u64 = 11;

/// One latency cell (see [`latency`]) on `gateway`, which runs open unless `access` is given.
async fn latency_on(
    gateway: Gateway,
    access: Option<AccessFile>,
    label: &str,
    agents: u32,
    wallboards: usize,
    rate: u64,
    seconds: u64,
) -> Run {
    check_open_files(u64::from(agents) + wallboards as u64 + 256);
    let seed = LATENCY_SEED;
    let center = center(agents, seed);
    let lines = traffic(agents, (rate * seconds) as usize, seed);
    let mut subscribers: Vec<Subscriber> = center
        .agent_dns()
        .into_iter()
        .enumerate()
        .map(|(i, dn)| Subscriber {
            filter: serde_json::json!({ "dn": [dn] }),
            token: access.as_ref().map(|a| a.token(&format!("a{}", i + 1))),
        })
        .collect();
    subscribers.extend((0..wallboards).map(|n| Subscriber {
        filter: serde_json::json!({}),
        token: access.as_ref().map(|a| a.wallboard_token(n)),
    }));
    let run = run_clients(&gateway, subscribers, &lines, rate, 0).await;
    report_latency(
        &format!(
            "{label}: {agents} agent clients + {wallboards} all-calls clients at {rate} events/s"
        ),
        "gateway",
        &run,
    );
    report_gateway_histogram(&gateway);
    run
}

/// Issue 4, item 3: latency at 1k, 10k and 20k events/s × 100, 1,000 and 10,000 agent clients, each with
/// 10 all-calls clients; a fresh gateway per cell.
async fn latency_matrix() {
    let seconds = sized(5, 1);
    let agent_counts: [u32; 3] = sized([100, 1_000, 10_000], [10, 100, 1_000]);
    let mut rows = Vec::new();
    for agents in agent_counts {
        for rate in [1_000, 10_000, 20_000] {
            let run = latency(agents, 10, rate, seconds, Mode::Open).await;
            rows.push((agents, rate, run));
        }
    }
    println!("latency-matrix ({seconds} s per cell, + 10 all-calls clients each):");
    println!(
        "  {:>7} {:>8} {:>11} {:>8} {:>8} {:>8} {:>11} {:>11}",
        "agents",
        "events/s",
        "deliveries",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "gw us/del",
        "cli us/del"
    );
    for (agents, rate, run) in &rows {
        let all = run.latencies();
        let (server_us, client_us) = run.cpu_per_delivery();
        println!(
            "  {agents:>7} {rate:>8} {:>11} {:>8.2} {:>8.2} {:>8.2} {server_us:>11.1} {client_us:>11.1}",
            run.delivered(),
            percentile(&all, 0.5),
            percentile(&all, 0.99),
            percentile(&all, 0.999),
        );
    }
}

/// Issue 11's target: the latency matrix and the saturation runs in open mode and with an access file of
/// 10,000 agents and 100 supervisors, each cell back to back on fresh gateways, and a table of both.
async fn scope_cost() {
    let seconds = sized(5, 1);
    let agent_counts: [u32; 3] = sized([100, 1_000, 10_000], [10, 100, 1_000]);
    let mut cells = Vec::new();
    for agents in agent_counts {
        for rate in [1_000, 10_000, 20_000] {
            let open = latency(agents, 10, rate, seconds, Mode::Open).await;
            let access = latency(agents, 10, rate, seconds, Mode::Access).await;
            cells.push((agents, rate, open, access));
        }
    }
    let mut saturations = Vec::new();
    for (clients, events) in saturation_sizes() {
        let open = saturation(clients, events, Mode::Open).await;
        let access = saturation(clients, events, Mode::Access).await;
        saturations.push((clients, events, open, access));
    }
    println!(
        "scope-cost ({seconds} s per cell, + 10 all-calls clients each; open / access file of {ACCESS_AGENTS} agents and {ACCESS_SUPERVISORS} supervisors):"
    );
    println!(
        "  {:>7} {:>8} {:>21} {:>13} {:>13} {:>13} {:>11}",
        "agents", "events/s", "deliveries", "p50 ms", "p99 ms", "p99.9 ms", "gw us/del"
    );
    for (agents, rate, open, access) in &cells {
        let (o, a) = (open.latencies(), access.latencies());
        println!(
            "  {agents:>7} {rate:>8} {:>10}/{:<10} {:>6.2}/{:<6.2} {:>6.2}/{:<6.2} {:>6.2}/{:<6.2} {:>5.1}/{:<5.1}",
            open.delivered(),
            access.delivered(),
            percentile(&o, 0.5),
            percentile(&a, 0.5),
            percentile(&o, 0.99),
            percentile(&a, 0.99),
            percentile(&o, 0.999),
            percentile(&a, 0.999),
            open.cpu_per_delivery().0,
            access.cpu_per_delivery().0,
        );
    }
    println!(
        "  {:>7} {:>8} {:>21} {:>17} {:>13} {:>11}",
        "clients", "events", "deliveries", "deliveries/s", "final s", "gw us/del"
    );
    for (clients, events, open, access) in &saturations {
        println!(
            "  {clients:>7} {events:>8} {:>10}/{:<10} {:>8.0}/{:<8.0} {:>6.2}/{:<6.2} {:>5.2}/{:<5.2}",
            open.delivered(),
            access.delivered(),
            open.deliveries_per_second(),
            access.deliveries_per_second(),
            open.settled(),
            access.settled(),
            open.cpu_per_delivery().0,
            access.cpu_per_delivery().0,
        );
    }
}

/// The gateway's own ingest-to-publish latency with no WebSocket client at all.
async fn pipeline_only(rate: u64) {
    let gateway = Gateway::start();
    let lines = traffic(1000, (rate * 5) as usize, 14);
    let cpu_before = gateway.cpu_seconds();
    feed(&gateway.ingest, &lines, rate).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "pipeline only: {} events at {rate}/s, gateway CPU {:.1} us/event",
        lines.len(),
        (gateway.cpu_seconds() - cpu_before) * 1e6 / lines.len() as f64
    );
    report_gateway_histogram(&gateway);
}

/// Issue 4, item 2: `connections` ingest connections, each a T-Server of its own (`Server` differs) with
/// 1,000 agents, write `events` events each as fast as possible; no WebSocket client. The rate is every
/// event over the time until the last connection's final acknowledgement, which the gateway writes only
/// after its reducer has taken all of that connection's events.
async fn ingest_throughput(connections: usize, events: usize) -> f64 {
    ingest_throughput_with(&[], "ingest", connections, events).await
}

/// Ingest throughput of a gateway started with `extra` flags (labelled `label`): events/s.
async fn ingest_throughput_with(
    extra: &[&str],
    label: &str,
    connections: usize,
    events: usize,
) -> f64 {
    let gateway = Gateway::start_with(extra);
    let feeds: Vec<Arc<Vec<u8>>> = (0..connections)
        .map(|i| {
            let config = callgate::ingest::sim::SimConfig {
                seed: 100 + i as u64,
                agents: 1000,
                queues: 8,
                supervisors: 10,
                calls_per_second: 5.0,
                server: Some(format!("TS{}", i + 1)),
                agent_states: false,
                ..callgate::ingest::sim::SimConfig::default()
            };
            let mut bytes = Vec::with_capacity(events * 320);
            for event in callgate::ingest::sim::Simulator::new(config).take(events) {
                bytes.extend_from_slice(event.line.as_bytes());
                bytes.push(b'\n');
            }
            Arc::new(bytes)
        })
        .collect();
    let cpu_before = gateway.cpu_seconds();
    let client_before = cpu_seconds_of("self");
    let started = Instant::now();
    let tasks: Vec<_> = feeds
        .iter()
        .map(|bytes| tokio::spawn(feed_until_acked(gateway.ingest.clone(), Arc::clone(bytes))))
        .collect();
    let (mut applied, mut duplicates, mut rejected) = (0u64, 0u64, 0u64);
    for task in tasks {
        let ack = task.await.expect("ingest task");
        let count = |key: &str| ack[key].as_u64().unwrap_or(0);
        applied += count("applied");
        duplicates += count("duplicates");
        rejected += count("rejected");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let gateway_cpu = gateway.cpu_seconds() - cpu_before;
    let client_cpu = cpu_seconds_of("self") - client_before;
    let total = (connections * events) as f64;
    println!(
        "{label}: {connections} connections × {events} events, no WebSocket client: {total:.0} events in {elapsed:.2} s = {:.0} events/s; final acks: {applied} applied, {duplicates} duplicates, {rejected} rejected; CPU: gateway {gateway_cpu:.2} s ({:.2} us/event), client {client_cpu:.2} s",
        total / elapsed,
        gateway_cpu * 1e6 / total,
    );
    total / elapsed
}

/// Issue 13: ingest throughput with `--journal` (fsync batch, and always) against in memory, in one run,
/// alternating the modes so that the machine's drift touches them alike; medians and ratios.
async fn journal_ingest() {
    let (connections, events) = (4, sized(250_000, 25_000));
    let rounds = sized(3, 1);
    let mut memory = Vec::new();
    let mut batch = Vec::new();
    let mut always = Vec::new();
    for round in 0..rounds {
        memory.push(
            ingest_throughput_with(&[], "journal-ingest: in memory", connections, events).await,
        );
        for (fsync, figures) in [("batch", &mut batch), ("always", &mut always)] {
            let dir = bench_dir(&format!("journal-{fsync}-{round}"));
            let flags = [
                "--journal",
                dir.to_str().expect("path"),
                "--journal-fsync",
                fsync,
            ];
            let label = format!("journal-ingest: --journal-fsync {fsync}");
            figures.push(ingest_throughput_with(&flags, &label, connections, events).await);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let (memory, batch, always) = (median(&mut memory), median(&mut batch), median(&mut always));
    println!(
        "journal-ingest ({rounds} rounds, medians): in memory {memory:.0} events/s; --journal (fsync batch) {batch:.0} events/s = {:.2} of in memory (target >= 0.70); --journal-fsync always {always:.0} events/s = {:.2}",
        batch / memory,
        always / memory
    );
}

/// Issue 13: with `--nats` (one local nats-server with JetStream, a fresh one per run), ingest throughput
/// and the ingest→WebSocket latency at 1,000 events/s (100 agent clients + 10 all-calls clients), each
/// against in memory, alternating in one run; medians and ratios.
async fn nats_ingest() {
    let (connections, events) = (4, sized(250_000, 25_000));
    let rounds = sized(3, 1);
    let seconds = sized(10, 2);
    let (mut memory, mut nats) = (Vec::new(), Vec::new());
    let (mut memory_p99, mut nats_p99) = (Vec::new(), Vec::new());
    let p99 = |run: &Run| percentile(&run.latencies(), 0.99);
    for _ in 0..rounds {
        memory
            .push(ingest_throughput_with(&[], "nats-ingest: in memory", connections, events).await);
        let server = nats::NatsServer::start_jetstream();
        let flags = ["--nats".to_owned(), server.url()];
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        nats.push(ingest_throughput_with(&flags, "nats-ingest: --nats", connections, events).await);
        drop(server);
        let run = latency(100, 10, 1_000, seconds, Mode::Open).await;
        memory_p99.push(p99(&run));
        let server = nats::NatsServer::start_jetstream();
        let flags = ["--nats".to_owned(), server.url()];
        let gateway = Gateway::start_with(&[&flags[0], &flags[1]]);
        let run = latency_on(gateway, None, "latency (--nats)", 100, 10, 1_000, seconds).await;
        nats_p99.push(p99(&run));
        println!(
            "nats-server CPU in the latency run: {:.2} s",
            server.cpu_seconds()
        );
    }
    let (memory, nats) = (median(&mut memory), median(&mut nats));
    let (memory_p99, nats_p99) = (median(&mut memory_p99), median(&mut nats_p99));
    println!(
        "nats-ingest ({rounds} rounds, medians): ingest in memory {memory:.0} events/s, --nats {nats:.0} events/s = {:.2} of in memory; ingest→WebSocket p99 at 1,000 events/s: in memory {memory_p99:.2} ms, --nats {nats_p99:.2} ms (+{:.2} ms)",
        nats / memory,
        nats_p99 - memory_p99
    );
}

/// Issue 13: how long a restart takes to replay a journal of 1,000,000 events (4 T-Servers' traffic)
/// before it is ready.
async fn journal_recovery() {
    let (connections, events) = (4, sized(250_000, 25_000));
    let dir = bench_dir("journal-recovery");
    let flags = ["--journal", dir.to_str().expect("path")];
    ingest_throughput_with(&flags, "journal-recovery: filling", connections, events).await;
    let bytes: u64 = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.metadata().ok())
                .map(|metadata| metadata.len())
                .sum()
        })
        .unwrap_or(0);
    if let Some(keep) = std::env::var_os("BENCH_KEEP_JOURNAL") {
        // For profiling a restart by hand: `callgate serve --journal <copy>`.
        let status = Command::new("cp").arg("-r").arg(&dir).arg(&keep).status();
        println!("journal-recovery: journal copied to {keep:?}: {status:?}");
    }
    let rounds = sized(3, 1);
    let mut seconds = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        let gateway = Gateway::start_with(&flags);
        seconds.push(started.elapsed().as_secs_f64());
        let calls = gateway.metric("callgate_live_calls").unwrap_or(0.0);
        drop(gateway);
        println!(
            "journal-recovery: ready {:.2} s after start ({calls:.0} live calls back)",
            seconds.last().copied().unwrap_or(0.0)
        );
    }
    let total = (connections * events) as f64;
    let median_seconds = median(&mut seconds);
    println!(
        "journal-recovery: {total:.0} events ({:.0} MB of journal) replayed, ready in {median_seconds:.2} s (median of {rounds}) = {:.0} events/s (target >= 500,000)",
        bytes as f64 / 1e6,
        total / median_seconds
    );
    let _ = std::fs::remove_dir_all(&dir);
    journal_recovery_live_calls(sized(100_000, 10_000), rounds).await;
}

/// Issue 13: how long a restart takes to bring back `calls` live (answered) calls from the journal.
async fn journal_recovery_live_calls(calls: u64, rounds: usize) {
    let dir = bench_dir("journal-recovery-live");
    let flags = [
        "--journal",
        dir.to_str().expect("path"),
        "--max-calls",
        "1000000",
    ];
    {
        let gateway = Gateway::start_with(&flags);
        feed_until_acked(gateway.ingest.clone(), answered_calls(0..calls)).await;
    }
    let mut seconds = Vec::new();
    let mut live = 0.0;
    for _ in 0..rounds {
        let started = Instant::now();
        let gateway = Gateway::start_with(&flags);
        seconds.push(started.elapsed().as_secs_f64());
        live = gateway.metric("callgate_live_calls").unwrap_or(f64::NAN);
    }
    println!(
        "journal-recovery: {calls} live calls ({:.0} back): ready in {:.2} s (median of {rounds})",
        live,
        median(&mut seconds)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 14: what the analytics cost and how fast they go, its three parts in turn.
async fn analytics() {
    analytics_live().await;
    let dir = bench_dir("analytics");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let journal = analytics_journal(&dir).await;
    analytics_export(&journal, &dir);
    postgres_sink(&journal, &dir, sized(3, 1)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `analytics-export` or `analytics-sink` alone, on the journal `BENCH_ANALYTICS_JOURNAL` names
/// (made there when it does not exist, and kept) or on a fresh one.
async fn analytics_part(export: bool) {
    let dir = bench_dir("analytics");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let journal = match std::env::var_os("BENCH_ANALYTICS_JOURNAL") {
        Some(kept) if std::path::Path::new(&kept).exists() => std::path::PathBuf::from(kept),
        Some(kept) => {
            let made = analytics_journal(&dir).await;
            let status = Command::new("cp").arg("-r").arg(&made).arg(&kept).status();
            println!("analytics: journal copied to {kept:?}: {status:?}");
            made
        }
        None => analytics_journal(&dir).await,
    };
    if export {
        analytics_export(&journal, &dir);
    } else {
        postgres_sink(&journal, &dir, sized(3, 1)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The live CDR builder's CPU: the gateway's CPU per event at 20,000 events/s in memory, against the
/// same with `--analytics-out FILE --types cdr` (the stage, the CDR fold, the records written),
/// alternating in one run; medians and the ratio (target: at most +10%). Also with `--journal` and the
/// live feed (every record rendered) against `--journal --feed-buffer-bytes 0`.
async fn analytics_live() {
    let rounds = sized(3, 1);
    let rate = 20_000;
    let seconds = sized(10, 2);
    let lines = traffic(1000, (rate * seconds) as usize, 14);
    let dir = bench_dir("analytics-live");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let out = dir.join("live.ndjson");
    let out_arg = out.to_str().expect("path").to_owned();
    let journal_a = dir.join("journal-feed");
    let journal_b = dir.join("journal-nofeed");
    let variants: [(&str, Vec<&str>); 4] = [
        ("in memory", vec![]),
        (
            "--analytics-out --types cdr",
            vec!["--analytics-out", &out_arg, "--types", "cdr"],
        ),
        (
            "--journal --feed-buffer-bytes 0",
            vec![
                "--journal",
                journal_b.to_str().expect("path"),
                "--feed-buffer-bytes",
                "0",
            ],
        ),
        (
            "--journal --feed-buffer-bytes 67108864 (live feed)",
            vec![
                "--journal",
                journal_a.to_str().expect("path"),
                "--feed-buffer-bytes",
                "67108864",
            ],
        ),
    ];
    let mut per_event: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for _ in 0..rounds {
        for (index, (label, flags)) in variants.iter().enumerate() {
            let _ = std::fs::remove_file(&out);
            let _ = std::fs::remove_dir_all(&journal_a);
            let _ = std::fs::remove_dir_all(&journal_b);
            let gateway = Gateway::start_with(flags);
            let cpu_before = gateway.cpu_seconds();
            feed(&gateway.ingest, &lines, rate).await;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let micros = (gateway.cpu_seconds() - cpu_before) * 1e6 / lines.len() as f64;
            println!(
                "analytics: {label}: {} events at {rate}/s, gateway CPU {micros:.2} us/event",
                lines.len()
            );
            per_event[index].push(micros);
        }
    }
    let medians: Vec<f64> = per_event.iter_mut().map(|values| median(values)).collect();
    println!(
        "analytics: gateway CPU at {rate} events/s (medians of {rounds}): in memory {:.2} us/event, with the live CDR builder {:.2} us/event = +{:.1}% (target <= +10%); --journal without the feed {:.2}, with it {:.2} us/event = +{:.1}%",
        medians[0],
        medians[1],
        (medians[1] / medians[0] - 1.0) * 100.0,
        medians[2],
        medians[3],
        (medians[3] / medians[2] - 1.0) * 100.0,
    );

    let _ = std::fs::remove_dir_all(&dir);
}

/// A journal of 1,000,000 events (4 T-Servers) in `dir`, to export and to sink.
async fn analytics_journal(dir: &std::path::Path) -> std::path::PathBuf {
    let (connections, events) = (4, sized(250_000, 25_000));
    let journal = dir.join("journal-export");
    let flags = [
        "--journal",
        journal.to_str().expect("path"),
        "--feed-buffer-bytes",
        "0",
    ];
    ingest_throughput_with(
        &flags,
        "analytics: filling the journal",
        connections,
        events,
    )
    .await;
    journal
}

/// `callgate export` of `journal` to a file: records/s (target >= 300,000), for every type (the
/// journal through the pipeline) and for events and CDRs (no pipeline).
fn analytics_export(journal: &std::path::Path, dir: &std::path::Path) {
    let rounds = sized(3, 1);
    for types in ["event,notification,cdr", "event,cdr"] {
        let mut rates = Vec::new();
        for _ in 0..rounds {
            let file = dir.join("export.ndjson");
            let _ = std::fs::remove_file(&file);
            let started = Instant::now();
            let status = Command::new(env!("CARGO_BIN_EXE_callgate"))
                .args(["export", "--types", types, "--journal"])
                .arg(journal)
                .arg("--out")
                .arg(&file)
                .stderr(Stdio::null())
                .status()
                .expect("export runs");
            let elapsed = started.elapsed().as_secs_f64();
            assert!(status.success());
            let records = std::fs::read(&file)
                .map(|bytes| bytes.iter().filter(|&&b| b == b'\n').count())
                .unwrap_or(0);
            println!(
                "analytics: export --types {types}: {records} records in {elapsed:.2} s = {:.0} records/s",
                records as f64 / elapsed
            );
            rates.push(records as f64 / elapsed);
        }
        println!(
            "analytics: export --types {types}: {:.0} records/s (median of {rounds}; target >= 300,000)",
            median(&mut rates)
        );
    }
}

/// `callgate sink postgres` of `journal` into a fresh local PostgreSQL, `rounds` times (the table
/// emptied between them).
async fn postgres_sink(journal: &std::path::Path, dir: &std::path::Path, rounds: usize) {
    let server = postgres::PgServer::start_durable(dir);
    let client = server.client().await;
    let mut rates = Vec::new();
    for _ in 0..rounds {
        let _ = client
            .batch_execute("DROP TABLE IF EXISTS call_cdr CASCADE; DROP TABLE IF EXISTS callgate_sink_progress")
            .await;
        let started = Instant::now();
        let status = Command::new(env!("CARGO_BIN_EXE_callgate"))
            .args(["sink", "postgres", "--dsn", &server.dsn(), "--journal"])
            .arg(journal)
            .env("RUST_LOG", "warn")
            .status()
            .expect("sink runs");
        let elapsed = started.elapsed().as_secs_f64();
        assert!(status.success());
        let rows: i64 = client
            .query_one("SELECT count(*) FROM call_cdr", &[])
            .await
            .expect("count")
            .get(0);
        println!(
            "analytics: sink postgres: {rows} CDRs in {elapsed:.2} s = {:.0} CDRs/s",
            rows as f64 / elapsed
        );
        rates.push(rows as f64 / elapsed);
    }
    println!(
        "analytics: sink postgres (fsync on, batches of 1,000): {:.0} CDRs/s (median of {rounds}; target >= 20,000), the journal's fold included",
        median(&mut rates)
    );
}

/// A fresh folder under the temp folder for a bench's files.
fn bench_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("callgate-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The median of `values` (sorted in place).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// The notifications/s target of the fanout-p99 runs becomes this many events/s (the simulator's traffic
/// makes about 0.78 notifications per event).
fn events_per_second_for(notifications_per_second: u64) -> u64 {
    notifications_per_second * 100 / 78
}

/// The events of a fanout-p99 run, and their rate in events/s.
fn fanout_traffic(notifications_per_second: u64, seconds: u64) -> (Vec<String>, u64) {
    let rate = events_per_second_for(notifications_per_second);
    (traffic(200, (rate * seconds) as usize, 12), rate)
}

/// Issue 4, item 4: callgate's latency at a low notification rate to many all-calls clients.
async fn fanout_p99(clients: usize, notifications_per_second: u64, seconds: u64) -> Run {
    let gateway = Gateway::start();
    let (lines, rate) = fanout_traffic(notifications_per_second, seconds);
    let notifications = count_notifications(&lines);
    let subscribers = (0..clients)
        .map(|_| Subscriber::open(serde_json::json!({})))
        .collect();
    let run = run_clients(&gateway, subscribers, &lines, rate, notifications).await;
    report_latency(
        &format!(
            "fanout: {notifications_per_second} notifications/s to {clients} all-calls clients"
        ),
        "gateway",
        &run,
    );
    report_gateway_histogram(&gateway);
    run
}

/// The same as [`fanout_p99`], delivered by nats-server.
async fn nats_fanout_p99(clients: usize, notifications_per_second: u64, seconds: u64) -> Run {
    let server = nats::NatsServer::start();
    let (lines, rate) = fanout_traffic(notifications_per_second, seconds);
    let frames = notification_frames(&lines);
    let run = nats::fanout(&server, clients, &frames, rate).await;
    report_latency(
        &format!(
            "nats fanout: {notifications_per_second} notifications/s to {clients} subscribers"
        ),
        "nats-server",
        &run,
    );
    report_slow_consumers(&server);
    run
}

/// Opens `clients` of callgate's clients on the bare broadcaster, publishes `events` at `rate` (0: as
/// fast as possible) and waits until deliveries stop; measured as the gateway and nats-server are.
async fn bare_fanout(clients: usize, events: &[Vec<nats::Payload>], rate: u64) -> Run {
    let server = bare::Bare::start();
    let url = format!("ws://{}/api/v2/ws", server.ws);
    let notifications: usize = events.iter().map(Vec::len).sum();
    let measured = measure(
        vec![(); clients],
        |(), ready, received, stop| {
            tokio::spawn(client(
                url.clone(),
                Subscriber::open(serde_json::json!({})),
                ready,
                received,
                stop,
            ))
        },
        Some((notifications * clients) as u64),
        || server.cpu_seconds(),
        || bare::publish(&server.ingest, events, rate),
    )
    .await;
    measured.into_run(events.len(), notifications as u64)
}

/// The floor: [`fanout_p99`]'s frames through the bare broadcaster.
async fn bare_fanout_p99(clients: usize, notifications_per_second: u64, seconds: u64) -> Run {
    let (lines, rate) = fanout_traffic(notifications_per_second, seconds);
    let frames = notification_frames(&lines);
    let run = bare_fanout(clients, &frames, rate).await;
    report_latency(
        &format!("bare fanout: {notifications_per_second} notifications/s to {clients} clients"),
        "broadcaster",
        &run,
    );
    run
}

/// The floor: [`saturation`]'s frames through the bare broadcaster.
async fn bare_saturation(clients: usize, events: usize) -> Run {
    check_open_files(clients as u64 + 256);
    let frames = notification_frames(&saturation_traffic(events));
    let run = bare_fanout(clients, &frames, 0).await;
    report_saturation("bare saturation", "broadcaster", clients, events, &run);
    run
}

/// How many notifications the library's reducer makes of `lines` (what each all-calls client gets).
fn count_notifications(lines: &[String]) -> u64 {
    let mut reducer = callgate::reduce::Fold::default();
    let mut out = callgate::reduce::Notifications::default();
    let mut count = 0;
    for line in lines {
        let _ = reducer.apply_line(line.as_bytes(), &mut out);
        count += out.len() as u64;
        out.clear();
    }
    count
}

/// Warns when nats-server cut clients off, which makes its run incomparable.
fn report_slow_consumers(server: &nats::NatsServer) {
    let slow = server.slow_consumers();
    if slow > 0 {
        println!(
            "  nats-server logged {slow} slow-consumer disconnections: clients lost messages, the run is not comparable"
        );
    }
}

/// The gateway's own view: ingest to publish (into the outboxes), from its /metrics histogram.
fn report_gateway_histogram(gateway: &Gateway) {
    let text = gateway.metrics();
    let buckets: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("callgate_ingest_to_publish_seconds_bucket"))
        .collect();
    println!(
        "  gateway ingest->publish histogram: {}",
        buckets
            .join(" | ")
            .replace("callgate_ingest_to_publish_seconds_bucket", "")
    );
}

/// Saturation sizes: all-calls clients and events, chosen so every run makes 3.9–7.8 M deliveries.
fn saturation_sizes() -> Vec<(usize, usize)> {
    sized(
        vec![(100, 50_000), (1_000, 10_000), (5_000, 2_000)],
        vec![(10, 5_000), (100, 1_000), (500, 200)],
    )
}

/// Agents of the center whose traffic saturation runs replay.
const SATURATION_AGENTS: u32 = 500;
/// Its simulator's seed.
const SATURATION_SEED: u64 = 13;

/// The events of a saturation run.
fn saturation_traffic(events: usize) -> Vec<String> {
    traffic(SATURATION_AGENTS, events, SATURATION_SEED)
}

/// Prints a saturation run: deliveries of expected, rate, and both processes' CPU.
fn report_saturation(name: &str, server: &str, clients: usize, events: usize, run: &Run) {
    let (server_us, client_us) = run.cpu_per_delivery();
    println!(
        "{name}: {clients} all-calls clients, {events} events ({} notifications) as fast as possible: {} of {} deliveries ({:.0} B each) in {:.2} s = {:.0} deliveries/s; every client final {:.2} s after the first event; CPU {server} {:.2} s ({server_us:.2} us/delivery), clients {:.2} s ({client_us:.2} us/delivery)",
        run.notifications,
        run.delivered(),
        run.notifications * clients as u64,
        run.mean_bytes(),
        run.span(),
        run.deliveries_per_second(),
        run.settled(),
        run.server_cpu,
        run.client_cpu,
    );
}

/// Issue 4, item 4: callgate's deliveries/s to `clients` all-calls clients, events as fast as possible;
/// with [`Mode::Access`] the clients log in as supervisors without a team.
async fn saturation(clients: usize, events: usize, mode: Mode) -> Run {
    check_open_files(clients as u64 + 256);
    let (gateway, access) = gateway_in(mode, &center(SATURATION_AGENTS, SATURATION_SEED));
    let lines = saturation_traffic(events);
    let notifications = count_notifications(&lines);
    let subscribers = (0..clients)
        .map(|n| Subscriber {
            filter: serde_json::json!({}),
            token: access.as_ref().map(|a| a.wallboard_token(n)),
        })
        .collect();
    let run = run_clients(&gateway, subscribers, &lines, 0, notifications).await;
    report_saturation(
        &format!("saturation ({mode:?})"),
        "gateway",
        clients,
        events,
        &run,
    );
    run
}

/// Issue 4, item 6: the same as [`saturation`], delivered by nats-server.
async fn nats_saturation(clients: usize, events: usize) -> Run {
    check_open_files(clients as u64 + 256);
    let server = nats::NatsServer::start();
    let frames = notification_frames(&saturation_traffic(events));
    let run = nats::fanout(&server, clients, &frames, 0).await;
    report_saturation("nats saturation", "nats-server", clients, events, &run);
    report_slow_consumers(&server);
    run
}

/// Clients, notifications/s and seconds of the fanout-p99 runs.
fn fanout_p99_sizes() -> (usize, u64, u64) {
    sized((1000, 100, 10), (100, 100, 2))
}

/// Issue 4, item 6: callgate and nats-server on identical workloads, back to back, with ratios.
async fn compare() {
    let mut rows = Vec::new();
    for (clients, events) in saturation_sizes() {
        let gateway = saturation(clients, events, Mode::Open).await;
        let nats = nats_saturation(clients, events).await;
        let bare = bare_saturation(clients, events).await;
        rows.push((clients, gateway, nats, bare));
    }
    let (clients, rate, seconds) = fanout_p99_sizes();
    let gateway_p99 = fanout_p99(clients, rate, seconds).await;
    let nats_p99 = nats_fanout_p99(clients, rate, seconds).await;
    let bare_p99 = bare_fanout_p99(clients, rate, seconds).await;
    println!(
        "compare: callgate vs nats-server 2.9 WebSocket vs a bare tokio-tungstenite broadcaster, same payloads, same clients"
    );
    println!(
        "  {:>7} {:>14} {:>12} {:>12} {:>9} {:>9} {:>22} {:>22} {:>22}",
        "clients",
        "callgate del/s",
        "nats del/s",
        "bare del/s",
        "cg/nats",
        "cg/bare",
        "all final s cg/nats/bare",
        "server cpu s cg/nats/bare",
        "client cpu s cg/nats/bare"
    );
    for (clients, gateway, nats, bare) in &rows {
        println!(
            "  {clients:>7} {:>14.0} {:>12.0} {:>12.0} {:>9.2} {:>9.2} {:>22} {:>22} {:>22}",
            gateway.deliveries_per_second(),
            nats.deliveries_per_second(),
            bare.deliveries_per_second(),
            gateway.deliveries_per_second() / nats.deliveries_per_second(),
            gateway.deliveries_per_second() / bare.deliveries_per_second(),
            format!(
                "{:.2}/{:.2}/{:.2}",
                gateway.settled(),
                nats.settled(),
                bare.settled()
            ),
            format!(
                "{:.2}/{:.2}/{:.2}",
                gateway.server_cpu, nats.server_cpu, bare.server_cpu
            ),
            format!(
                "{:.2}/{:.2}/{:.2}",
                gateway.client_cpu, nats.client_cpu, bare.client_cpu
            ),
        );
    }
    let (g, n, b) = (
        gateway_p99.latencies(),
        nats_p99.latencies(),
        bare_p99.latencies(),
    );
    println!(
        "  {rate} notifications/s × {clients} clients: p50 ms callgate {:.2} nats {:.2} bare {:.2}; p99 ms callgate {:.2} nats {:.2} bare {:.2}; nats/callgate p99 {:.2}; server CPU us/delivery callgate {:.1} nats {:.1} bare {:.1}",
        percentile(&g, 0.5),
        percentile(&n, 0.5),
        percentile(&b, 0.5),
        percentile(&g, 0.99),
        percentile(&n, 0.99),
        percentile(&b, 0.99),
        percentile(&n, 0.99) / percentile(&g, 0.99),
        gateway_p99.cpu_per_delivery().0,
        nats_p99.cpu_per_delivery().0,
        bare_p99.cpu_per_delivery().0,
    );
}

/// Issue 4, item 5a: `calls` live calls, each an inbound call answered at its own agent DN with attached
/// data and an international caller (the call shape of `benches/memory.rs`), fed to the gateway and never
/// released; reports the resident-set growth per live call over the gateway's idle baseline.
/// Inbound calls `range`, each answered at its own agent DN (10,000 + i), with attached data and an
/// international caller: EventRinging and EventEstablished lines.
fn answered_calls(range: std::ops::Range<u64>) -> Arc<Vec<u8>> {
    let mut bytes = Vec::new();
    for i in range {
        let conn = 0x006f_0000_0000_0000u64 + i;
        let agent = 10_000 + i;
        let caller = format!("+1415555{:04}", i % 10_000);
        for (event, extra) in [
            (
                "EventRinging",
                format!(r#","ANI":"{caller}","DNIS":"8001","ThisQueue":"8001""#),
            ),
            ("EventEstablished", String::new()),
        ] {
            bytes.extend_from_slice(format!(
                r#"{{"event":"{event}","TimeinSecs":{},"ConnID":"{conn:016x}","CallUUID":"QK59HK4FS927D7FUU41G6IE4{i:08}","CallType":"Inbound","ThisDN":"{agent}","OtherDN":"{caller}"{extra},"UserData":{{"AccountNumber":"{i:08}","Segment":"Gold","ServiceType":"Support","Language":"en"}}}}"#,
                1_763_900_000 + i
            ).as_bytes());
            bytes.push(b'\n');
        }
    }
    Arc::new(bytes)
}

async fn live_calls_memory(calls: u64) {
    // All at once (the worst case: every frame is allocated plain before the packer can come by), then
    // at 20,000 new calls a second (40,000 events/s), still far above any contact center's arrival rate.
    for pace in [None, Some(20_000)] {
        live_calls_memory_at(calls, pace).await;
    }
}

/// Feeds `calls` answered calls, `pace` new calls a second (`None`: as fast as the gateway takes them),
/// and reports the gateway's resident memory per live call 1 s and 6 s after the last acknowledgement.
async fn live_calls_memory_at(calls: u64, pace: Option<u64>) {
    let gateway = Gateway::start_with(&["--max-calls", "1000000"]);
    let script = answered_calls;
    // One call first, so the one-time tables (phone metadata, geocoding) are in the baseline.
    feed_until_acked(gateway.ingest.clone(), script(calls..calls + 1)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = gateway.rss_bytes();
    let ack = match pace {
        None => feed_until_acked(gateway.ingest.clone(), script(0..calls)).await,
        Some(per_second) => {
            // 100 ms of calls per connection, one connection after another.
            let step = (per_second / 10).max(1);
            let started = Instant::now();
            let mut ack = serde_json::Value::Null;
            for (n, first) in (0..calls).step_by(step as usize).enumerate() {
                let due = started + Duration::from_millis(100 * n as u64);
                tokio::time::sleep_until(due.into()).await;
                ack = feed_until_acked(
                    gateway.ingest.clone(),
                    script(first..(first + step).min(calls)),
                )
                .await;
            }
            ack
        }
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let soon = gateway.rss_bytes();
    // Read again later: the packer packs the frames at rest in the background, and memory the allocator
    // frees lazily after the burst of ingest buffers shows as the difference between the two.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = gateway.rss_bytes();
    let live = gateway.metric("callgate_live_calls").unwrap_or(f64::NAN);
    let packed = gateway
        .metric("callgate_frames_packed_total")
        .unwrap_or(f64::NAN);
    let per_call = |rss: u64| rss.saturating_sub(before) as f64 / calls as f64;
    let pace = pace.map_or("all at once".to_owned(), |pace| format!("{pace} calls/s"));
    println!(
        "live-calls memory ({pace}): {calls} live calls (gateway reports {live:.0} live, {packed:.0} frames packed; last ack {ack}): gateway RSS {} MiB idle, {} MiB 1 s after the last ack ({:.0} bytes per live call), {} MiB 6 s after ({:.0} bytes per live call)",
        before / (1 << 20),
        soon / (1 << 20),
        per_call(soon),
        after / (1 << 20),
        per_call(after),
    );
}

/// Issue 10: `GET /api/v2/devices/{deviceId}/calls/{callId}` latency with `calls` live calls: `lookups`
/// requests, one after another on one keep-alive connection, for calls spread over the store. Returns the
/// sorted latencies in microseconds.
async fn rest_lookup(calls: u64, lookups: usize) -> Vec<u64> {
    let gateway = Gateway::start_with(&["--max-calls", "1000000"]);
    feed_until_acked(gateway.ingest.clone(), answered_calls(0..calls)).await;
    // The device ids come from the gateway itself: one listing of a few devices' calls.
    let mut stream = tokio::net::TcpStream::connect(&gateway.http)
        .await
        .expect("HTTP connects");
    let _ = stream.set_nodelay(true);
    let mut targets = Vec::new();
    for k in 0..64u64 {
        let i = k * calls / 64;
        let body = http_get(&mut stream, &format!("/api/v2/calls?dn={}", 10_000 + i)).await;
        let value: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let call = &value["calls"][0];
        let device = call["deviceUri"]
            .as_str()
            .unwrap_or("")
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_owned();
        targets.push(format!(
            "/api/v2/devices/{device}/calls/{}",
            call["id"].as_str().unwrap_or("")
        ));
    }
    let mut latencies = Vec::with_capacity(lookups);
    for n in 0..lookups {
        let started = Instant::now();
        let body = http_get(&mut stream, &targets[n % targets.len()]).await;
        latencies.push(started.elapsed().as_micros() as u64);
        assert!(body.starts_with("{\"statusCode\":0,\"call\":"), "{body}");
    }
    latencies.sort_unstable();
    latencies
}

/// One GET on a keep-alive connection; the body.
async fn http_get(stream: &mut tokio::net::TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: callgate\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("request");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut chunk).await.expect("response");
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("content-length");
        if buf.len() >= end + 4 + length {
            return String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
        }
    }
}

/// The notification's `SentAt` (micros since the epoch, in the call's attached data), if any.
fn sent_at(frame: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(frame, b"\"SentAt\":\"")? + 10;
    let digits = &frame[at..at + 16.min(frame.len() - at)];
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Clients watching one agent each (subscribed to its DN) while its calls get `rate` attached-data changes a
/// second, each stamped when written; every receipt is recorded as (time, ingest→receipt latency), in µs.
struct Watchers {
    latencies: Arc<std::sync::Mutex<Vec<(u64, u64)>>>,
    stop: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Agents watched by [`Watchers`]: ConnID 2,000,000 + k at DN 2,900,000 + k, one call each.
const WATCHED: u64 = 100;

impl Watchers {
    /// Sets up the watched calls and starts the clients and the feeder. `token(k)`, when given, is the
    /// Bearer token watcher k sends as its first frame.
    async fn start(
        gateway: &Gateway,
        rate: u64,
        token: Option<&dyn Fn(u64) -> String>,
    ) -> Watchers {
        let watched: Vec<u64> = (0..WATCHED).map(|k| 2_000_000 + k).collect();
        let mut setup = Vec::new();
        for &i in &watched {
            setup.extend_from_slice(
                format!(
                    "{{\"event\":\"EventEstablished\",\"ConnID\":\"{i:x}\",\"ThisDN\":\"{}\"}}\n",
                    900_000 + i
                )
                .as_bytes(),
            );
        }
        feed_until_acked(gateway.ingest.clone(), Arc::new(setup)).await;
        let url = format!("ws://{}/api/v2/ws", gateway.http);
        let latencies = Arc::new(std::sync::Mutex::new(Vec::<(u64, u64)>::new()));
        let stop = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for (k, &i) in watched.iter().enumerate() {
            let mut ws = wsclient::connect(authority(&url), "/api/v2/ws")
                .await
                .expect("connect");
            if let Some(token) = token {
                let auth = serde_json::json!({"type": "auth", "token": token(k as u64)});
                ws.send_text(&auth.to_string()).await.expect("auth");
            }
            let request = serde_json::json!({"type":"subscribe","sub":"me","filter":{"dn":[format!("{}", 900_000 + i)]}});
            ws.send_text(&request.to_string()).await.expect("subscribe");
            let latencies = Arc::clone(&latencies);
            let stop = Arc::clone(&stop);
            tasks.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                while stop.load(Ordering::Relaxed) == 0 {
                    let frame =
                        tokio::time::timeout(Duration::from_millis(200), ws.next_frame()).await;
                    let Ok(Ok(Some((_, payload)))) = frame else {
                        continue;
                    };
                    if let Some(sent) = sent_at(payload) {
                        let now = now_micros();
                        seen.push((now, now.saturating_sub(sent)));
                    }
                }
                latencies.lock().expect("lock").extend(seen);
            }));
        }
        tasks.push(Self::feeder(
            gateway.ingest.clone(),
            rate,
            Arc::clone(&stop),
        ));
        Watchers {
            latencies,
            stop,
            tasks,
        }
    }

    /// Attached-data changes of the watched calls at `rate` a second, each stamped when written.
    fn feeder(ingest: String, rate: u64, stop: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(&ingest)
                .await
                .expect("ingest");
            let _ = stream.set_nodelay(true);
            let (mut reader, mut writer) = stream.into_split();
            tokio::spawn(async move { tokio::io::copy(&mut reader, &mut tokio::io::sink()).await });
            let per_tick = (rate / 1000).max(1);
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            let mut n = 0u64;
            while stop.load(Ordering::Relaxed) == 0 {
                tick.tick().await;
                let mut bytes = Vec::new();
                for _ in 0..per_tick {
                    let i = 2_000_000 + n % WATCHED;
                    bytes.extend_from_slice(format!("{{\"event\":\"EventAttachedDataChanged\",\"ConnID\":\"{i:x}\",\"ThisDN\":\"{}\",\"UserData\":{{\"SentAt\":\"{:016}\",\"n\":{n}}}}}\n", 900_000 + i, now_micros()).as_bytes());
                    n += 1;
                }
                writer.write_all(&bytes).await.expect("feed");
            }
        })
    }

    /// Stops the clients and the feeder; returns every receipt.
    async fn finish(self) -> Vec<(u64, u64)> {
        self.stop.store(1, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        self.latencies.lock().expect("lock").clone()
    }
}

/// The receipts whose time is in `window`, and their latencies' p99 in ms.
fn p99_within(receipts: &[(u64, u64)], window: impl Fn(u64) -> bool) -> (usize, f64) {
    let mut v: Vec<u64> = receipts
        .iter()
        .filter(|(at, _)| window(*at))
        .map(|(_, l)| *l)
        .collect();
    v.sort_unstable();
    (v.len(), percentile(&v, 0.99))
}

/// Issue 10's snapshot target: with `calls` live calls and `rate` events/s going to 100 agents (each
/// watched by its own client), one all-calls client subscribes and reads its whole snapshot. Reports how
/// long the snapshot took and the other clients' ingest→receipt p99 before and during it.
async fn snapshot_under_load(calls: u64, rate: u64) {
    let gateway = Gateway::start_with(&["--max-calls", "1000000"]);
    feed_until_acked(gateway.ingest.clone(), answered_calls(0..calls)).await;
    let watchers = Watchers::start(&gateway, rate, None).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let url = format!("ws://{}/api/v2/ws", gateway.http);
    let mut wall = wsclient::connect(authority(&url), "/api/v2/ws")
        .await
        .expect("connect");
    let asked = now_micros();
    wall.send_text(r#"{"type":"subscribe","sub":"wall"}"#)
        .await
        .expect("subscribe");
    let mut resources = 0usize;
    let mut frames = 0usize;
    loop {
        let Some((_, payload)) = wall.next_frame().await.expect("snapshot frame") else {
            panic!("closed during the snapshot");
        };
        let text = std::str::from_utf8(payload).unwrap_or("");
        if !(text.starts_with("{\"type\":\"subscribed\"")
            || text.starts_with("{\"type\":\"snapshot\""))
        {
            continue;
        }
        frames += 1;
        resources += memchr::memmem::find_iter(payload, b"\"deviceUri\"").count();
        if text.ends_with("\"more\":false}") {
            break;
        }
    }
    let done = now_micros();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = watchers.finish().await;
    let (before_n, before) = p99_within(&all, |at| at < asked);
    let (during_n, during) = p99_within(&all, |at| at >= asked && at <= done);
    println!(
        "snapshot-under-load: {calls} live calls, {rate} events/s to {WATCHED} watched agents: the all-calls snapshot took {:.0} ms ({frames} frames, {resources} resources); the watchers' ingest→receipt p99 {before:.2} ms before ({before_n} samples), {during:.2} ms during ({during_n} samples)",
        (done - asked) as f64 / 1000.0
    );
}

/// Issue 11's login target: `logins` Basic logins at once (argon2id each) while 100 authenticated
/// watchers get `rate` events/s; reports how long the logins took and the watchers' p99 before and
/// during them (target ≤ 5 ms).
async fn login_storm(logins: usize, rate: u64) {
    use base64::Engine;
    let dir = std::env::temp_dir().join(format!("callgate-login-storm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let secret = "a-bench-secret-of-at-least-32-bytes-long";
    std::fs::write(dir.join("jwt.secret"), secret).expect("secret");
    // One hash for every user: hashing a thousand passwords would take the bench 20 s, and each login
    // still costs one full check.
    let phc = callgate::access::password::hash(b"storm-password").expect("hash");
    let mut file = String::new();
    for k in 0..WATCHED {
        file.push_str(&format!(
            "[[user]]\nusername = \"w{k}\"\nroles = [\"agent\"]\ndevices = [\"{}\"]\n\n",
            900_000 + 2_000_000 + k
        ));
    }
    for n in 0..logins {
        file.push_str(&format!(
            "[[user]]\nusername = \"u{n}\"\npassword = \"{phc}\"\nroles = [\"agent\"]\n\n"
        ));
    }
    file.push_str("[jwt]\nhs256_secret_file = \"jwt.secret\"\n");
    let access = dir.join("access.toml");
    std::fs::write(&access, file).expect("access file");
    let gateway = Gateway::start_with(&["--access", access.to_str().expect("path")]);
    let token = |k: u64| {
        let claims = serde_json::json!({"sub": format!("w{k}"), "exp": 4_000_000_000u64});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("token")
    };
    let watchers = Watchers::start(&gateway, rate, Some(&token)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let asked = now_micros();
    let mut attempts = Vec::with_capacity(logins);
    for n in 0..logins {
        let http = gateway.http.clone();
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("u{n}:storm-password"));
        attempts.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(&http).await.ok()?;
            let request = format!("GET /api/v2/calls?dn=0 HTTP/1.1\r\nHost: {http}\r\nAuthorization: Basic {credentials}\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut response = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut response).await.ok()?;
            let head = String::from_utf8_lossy(&response[..response.len().min(12)]).into_owned();
            head.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok())
        }));
    }
    let mut statuses = std::collections::BTreeMap::new();
    for attempt in attempts {
        let status = attempt.await.ok().flatten().unwrap_or(0);
        *statuses.entry(status).or_insert(0usize) += 1;
    }
    let done = now_micros();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let all = watchers.finish().await;
    let (before_n, before) = p99_within(&all, |at| at < asked);
    let (during_n, during) = p99_within(&all, |at| at >= asked && at <= done);
    println!(
        "login-storm: {logins} Basic logins at once (argon2id, at most 4 at a time) while {rate} events/s go to {WATCHED} authenticated watchers: answered in {:.0} ms (status: count {statuses:?}); the watchers' ingest→receipt p99 {before:.2} ms before ({before_n} samples), {during:.2} ms during ({during_n} samples)",
        (done - asked) as f64 / 1000.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 10's REST target: the lookup at 100,000 live calls within 2x its latency at 100.
async fn rest_lookup_ratio() {
    let lookups = sized(20_000, 2_000);
    let small = rest_lookup(100, lookups).await;
    let large = rest_lookup(sized(100_000, 10_000), lookups).await;
    // Microseconds at quantile `q` (`percentile` gives milliseconds).
    let p = |v: &[u64], q: f64| percentile(v, q / 100.0) * 1000.0;
    println!(
        "rest-lookup: GET /api/v2/devices/{{id}}/calls/{{id}}, {lookups} requests on one connection: 100 live calls p50 {:.0} µs p99 {:.0} µs; {} live calls p50 {:.0} µs p99 {:.0} µs; ratio of medians {:.2}",
        p(&small, 50.0),
        p(&small, 99.0),
        sized(100_000, 10_000),
        p(&large, 50.0),
        p(&large, 99.0),
        p(&large, 50.0) / p(&small, 50.0)
    );
}

/// Issue 4, item 5b: resident memory per subscribed idle WebSocket connection.
async fn idle_memory(connections: usize) {
    check_open_files(connections as u64 + 256);
    let gateway = Gateway::start();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = gateway.rss_bytes();
    let url = format!("ws://{}/api/v2/ws", gateway.http);
    let mut sockets = Vec::with_capacity(connections);
    for i in 0..connections {
        let (mut ws, _) = connect(&url).await;
        let request = serde_json::json!({"type":"subscribe","sub":"me","filter":{"dn":[format!("{}", 10_000 + i)]}});
        ws.send(Message::text(request.to_string()))
            .await
            .expect("subscribe");
        let _ = ws.next().await;
        sockets.push(ws);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = gateway.rss_bytes();
    println!(
        "idle memory: {connections} subscribed idle WebSocket connections: gateway RSS {} -> {} MiB, {:.1} KiB per connection",
        before / (1 << 20),
        after / (1 << 20),
        (after.saturating_sub(before)) as f64 / connections as f64 / 1024.0
    );
    drop(sockets);
}

/// The reference CometD server (`tests/cometd-client/oracle.mjs`, `cometd-nodejs-server` in Node),
/// killed on drop.
struct NodeCometd {
    child: Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
    /// `HOST:PORT` and the path clients post to.
    addr: String,
    path: String,
}

impl NodeCometd {
    fn start() -> NodeCometd {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cometd-client");
        assert!(
            dir.join("node_modules/cometd-nodejs-server").is_dir(),
            "run `npm ci` in {} first",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg(dir.join("oracle.mjs"))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node runs oracle.mjs");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str(&line)
                    && tx.send(value).is_err()
                {
                    return;
                }
            }
        });
        let first: serde_json::Value = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("the oracle's URL");
        let url = first["url"].as_str().expect("url").to_owned();
        let rest = url.trim_start_matches("http://");
        let (addr, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        NodeCometd {
            child,
            stdin,
            lines,
            addr: addr.to_owned(),
            path: path.to_owned(),
        }
    }

    fn cpu_seconds(&self) -> f64 {
        cpu_seconds_of(&self.child.id().to_string())
    }

    /// Publishes `data` on `/callgate/calls`, at `rate` a second (stamped) or all at once (0); returns
    /// when the server says it is done.
    fn publish(&mut self, data: &[serde_json::Value], rate: u64) {
        let command = if rate == 0 {
            serde_json::json!({"cmd":"burst","channel":"/callgate/calls","data":data})
        } else {
            serde_json::json!({"cmd":"paced","channel":"/callgate/calls","data":data,"rate":rate})
        };
        writeln!(self.stdin, "{command}").expect("command");
        let _ = self.lines.recv_timeout(Duration::from_secs(600));
    }
}

impl Drop for NodeCometd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `data` of every call notification `lines` make: what the reference server publishes, so that both
/// servers carry the same messages.
fn notification_data(lines: &[String]) -> Vec<serde_json::Value> {
    let mut reducer = callgate::reduce::Fold::default();
    let mut out = callgate::reduce::Notifications::default();
    let mut data = Vec::new();
    for line in lines {
        let _ = reducer.apply_line(line.as_bytes(), &mut out);
        for notification in out.iter() {
            let members: serde_json::Value =
                serde_json::from_str(&format!("{{{}}}", notification.members)).expect("JSON");
            data.push(members["data"].clone());
        }
        out.clear();
    }
    data
}

/// One CometD long-polling client: a session on `/callgate/calls`, then connects until `stop`, counting
/// messages and their `SentAt` latencies.
async fn bayeux_client(
    addr: String,
    path: String,
    ready: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    stop: tokio_util::sync::CancellationToken,
) -> ClientStats {
    let mut session = bayeux::Session::open(&addr, &path, "/callgate/calls")
        .await
        .expect("CometD session");
    ready.fetch_add(1, Ordering::AcqRel);
    let mut stats = ClientStats::default();
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let body = tokio::select! {
            body = session.connect() => body,
            () = &mut stopped => break,
        };
        let Ok(body) = body else { break };
        let count = bayeux::messages_in(&body) as u64;
        if count == 0 {
            continue;
        }
        let now = Instant::now();
        stats.frames += count;
        stats.bytes += body.len() as u64;
        stats.first.get_or_insert(now);
        stats.last = Some(now);
        received.fetch_add(count, Ordering::Relaxed);
        let at = now_micros();
        for sent in bayeux::stamps_in(&body) {
            stats.latencies_us.push(at.saturating_sub(sent));
            stats.sent_us.push(sent);
        }
    }
    stats
}

/// One CometD WebSocket client: a session on `/callgate/calls` over one socket, then connects until
/// `stop`, counting messages and their `SentAt` latencies.
async fn bayeux_ws_client(
    addr: String,
    ready: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    stop: tokio_util::sync::CancellationToken,
) -> ClientStats {
    let mut ws = wsclient::connect(&addr, "/api/v2/notifications")
        .await
        .expect("CometD WebSocket");
    ws.send_text(r#"[{"id":"1","channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"]}]"#)
        .await
        .expect("handshake");
    let client_id = loop {
        let Ok(Some((op, payload))) = ws.next_frame().await else {
            panic!("no handshake reply");
        };
        if op == wsclient::opcode::TEXT {
            let reply: serde_json::Value = serde_json::from_slice(payload).expect("JSON");
            break reply[0]["clientId"].as_str().expect("clientId").to_owned();
        }
    };
    let connect = format!(
        r#"[{{"channel":"/meta/connect","clientId":"{client_id}","connectionType":"websocket"}}]"#
    );
    ws.send_text(&format!(
        r#"[{{"channel":"/meta/subscribe","clientId":"{client_id}","subscription":"/callgate/calls"}},{{"channel":"/meta/connect","clientId":"{client_id}","connectionType":"websocket","advice":{{"timeout":0}}}}]"#
    ))
    .await
    .expect("subscribe");
    let mut stats = ClientStats::default();
    let mut subscribed = false;
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let frame = tokio::select! {
            frame = ws.next_frame() => frame,
            () = &mut stopped => break,
        };
        let Ok(Some((op, payload))) = frame else {
            break;
        };
        if op != wsclient::opcode::TEXT {
            continue;
        }
        let count = bayeux::messages_in(payload) as u64;
        let has_connect = memchr::memmem::find(payload, b"\"/meta/connect\"").is_some();
        if count > 0 {
            let now = Instant::now();
            stats.frames += count;
            stats.bytes += payload.len() as u64;
            stats.first.get_or_insert(now);
            stats.last = Some(now);
            received.fetch_add(count, Ordering::Relaxed);
            let at = now_micros();
            for sent in bayeux::stamps_in(payload) {
                stats.latencies_us.push(at.saturating_sub(sent));
                stats.sent_us.push(sent);
            }
        }
        if has_connect {
            if !subscribed {
                subscribed = true;
                ready.fetch_add(1, Ordering::AcqRel);
            }
            if ws.send_text(&connect).await.is_err() {
                break;
            }
        }
    }
    stats
}

/// `sessions` CometD WebSocket clients of callgate while `lines` are written at `rate` events/s.
async fn cometd_callgate_ws(sessions: usize, lines: &[String], rate: u64) -> Run {
    check_open_files(sessions as u64 + 256);
    let gateway = Gateway::start();
    let notifications = count_notifications(lines);
    let addr = gateway.http.clone();
    let measured = measure(
        vec![(); sessions],
        |(), ready, received, stop| {
            tokio::spawn(bayeux_ws_client(addr.clone(), ready, received, stop))
        },
        (rate == 0).then_some(notifications * sessions as u64),
        || gateway.cpu_seconds(),
        || feed(&gateway.ingest, lines, rate),
    )
    .await;
    measured.into_run(lines.len(), notifications)
}

/// `sessions` CometD long-polling clients of callgate (open mode, `/callgate/calls`) while `lines` are
/// written at `rate` events/s (0: as fast as possible).
async fn cometd_callgate(sessions: usize, lines: &[String], rate: u64) -> Run {
    check_open_files(sessions as u64 + 256);
    let gateway = Gateway::start();
    let notifications = count_notifications(lines);
    let addr = gateway.http.clone();
    let measured = measure(
        vec![(); sessions],
        |(), ready, received, stop| {
            tokio::spawn(bayeux_client(
                addr.clone(),
                "/api/v2/notifications".into(),
                ready,
                received,
                stop,
            ))
        },
        (rate == 0).then_some(notifications * sessions as u64),
        || gateway.cpu_seconds(),
        || feed(&gateway.ingest, lines, rate),
    )
    .await;
    measured.into_run(lines.len(), notifications)
}

/// The same clients and messages served by `cometd-nodejs-server`, published at `rate` a second (0: at
/// once).
async fn cometd_node(sessions: usize, lines: &[String], rate: u64) -> Run {
    check_open_files(sessions as u64 + 256);
    let data = notification_data(lines);
    let notifications = data.len() as u64;
    let server = std::sync::Mutex::new(NodeCometd::start());
    let (addr, path) = {
        let server = server.lock().expect("server");
        (server.addr.clone(), server.path.clone())
    };
    let publish_rate = if rate == 0 {
        0
    } else {
        rate * notifications / lines.len().max(1) as u64
    };
    let measured = measure(
        vec![(); sessions],
        |(), ready, received, stop| {
            tokio::spawn(bayeux_client(
                addr.clone(),
                path.clone(),
                ready,
                received,
                stop,
            ))
        },
        (rate == 0).then_some(notifications * sessions as u64),
        || server.lock().map(|s| s.cpu_seconds()).unwrap_or(0.0),
        || async {
            let started = Instant::now();
            let data = data.clone();
            let server = &server;
            tokio::task::block_in_place(|| {
                if let Ok(mut server) = server.lock() {
                    server.publish(&data, publish_rate);
                }
            });
            started.elapsed()
        },
    )
    .await;
    measured.into_run(lines.len(), notifications)
}

/// Issue 12's memory target: the gateway's resident memory per idle long-polling session (subscribed to
/// `/callgate/calls`, its connect held), over `sessions` sessions.
async fn cometd_idle_memory(sessions: usize) {
    check_open_files(sessions as u64 + 256);
    let gateway = Gateway::start();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = gateway.rss_bytes();
    let opened = Arc::new(AtomicU64::new(0));
    let mut held = Vec::with_capacity(sessions);
    for n in 0..sessions {
        let addr = gateway.http.clone();
        let opened = Arc::clone(&opened);
        held.push(tokio::spawn(async move {
            let mut session =
                bayeux::Session::open(&addr, "/api/v2/notifications", "/callgate/calls")
                    .await
                    .expect("session");
            opened.fetch_add(1, Ordering::AcqRel);
            // Held by the gateway for 30 s: the session is idle meanwhile. (BENCH_COMETD_HOLD=0 closes
            // the connection instead, to tell the session's own memory from its held request's.)
            if std::env::var("BENCH_COMETD_HOLD").as_deref() != Ok("0") {
                let _ = session.connect().await;
            }
        }));
        if n % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    wait_ready(&opened, sessions as u64).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = gateway.rss_bytes();
    let counted = gateway.metric("callgate_cometd_sessions").unwrap_or(0.0);
    println!(
        "cometd-idle-memory: {sessions} long-polling sessions ({counted} counted by the gateway), each subscribed with its connect held: RSS {:.1} MB -> {:.1} MB, {:.0} B per session",
        before as f64 / 1e6,
        after as f64 / 1e6,
        after.saturating_sub(before) as f64 / sessions as f64
    );
    for task in held {
        task.abort();
    }
}

/// Issue 12's targets: CometD long-polling delivery to 1,000 sessions at saturation and p99 at 100
/// notifications/s, callgate against `cometd-nodejs-server` with the same clients and messages.
async fn cometd_compare() {
    let sessions = sized(1_000, 100);
    let saturation_lines = saturation_traffic(sized(2_000, 500));
    let callgate = cometd_callgate(sessions, &saturation_lines, 0).await;
    report_saturation(
        "cometd saturation",
        "gateway",
        sessions,
        saturation_lines.len(),
        &callgate,
    );
    let node = cometd_node(sessions, &saturation_lines, 0).await;
    report_saturation(
        "cometd saturation (node)",
        "node",
        sessions,
        saturation_lines.len(),
        &node,
    );
    let callgate_ws = cometd_callgate_ws(sessions, &saturation_lines, 0).await;
    report_saturation(
        "cometd saturation (callgate, websocket)",
        "gateway",
        sessions,
        saturation_lines.len(),
        &callgate_ws,
    );
    let seconds = sized(10, 3);
    let (paced_lines, rate) = fanout_traffic(100, seconds);
    let callgate_p99 = cometd_callgate(sessions, &paced_lines, rate).await;
    report_latency(
        &format!("cometd p99: {sessions} long-polling sessions, 100 notifications/s"),
        "gateway",
        &callgate_p99,
    );
    let node_p99 = cometd_node(sessions, &paced_lines, rate).await;
    report_latency(
        &format!("cometd p99 (node): {sessions} long-polling sessions, 100 notifications/s"),
        "node",
        &node_p99,
    );
    let ws_p99 = cometd_callgate_ws(sessions, &paced_lines, rate).await;
    report_latency(
        &format!("cometd p99 (callgate): {sessions} WebSocket sessions, 100 notifications/s"),
        "gateway",
        &ws_p99,
    );
    let p99 = |run: &Run| percentile(&run.latencies(), 0.99);
    println!(
        "cometd-compare ({sessions} long-polling sessions): deliveries/s callgate {:.0}, node {:.0}, ratio {:.2} (target >= 5); p99 at 100/s callgate {:.2} ms, node {:.2} ms, ratio {:.2} (target <= 0.33)",
        callgate.deliveries_per_second(),
        node.deliveries_per_second(),
        callgate.deliveries_per_second() / node.deliveries_per_second(),
        p99(&callgate_p99),
        p99(&node_p99),
        p99(&callgate_p99) / p99(&node_p99),
    );
    println!(
        "cometd-compare ({sessions} WebSocket sessions; node has no WebSocket transport, so against its long-polling): deliveries/s callgate {:.0}, ratio {:.2}; p99 callgate {:.2} ms, ratio {:.2}",
        callgate_ws.deliveries_per_second(),
        callgate_ws.deliveries_per_second() / node.deliveries_per_second(),
        p99(&ws_p99),
        p99(&ws_p99) / p99(&node_p99),
    );
}

/// The issue-4 suite, run when no scenario is named.
const SUITE: &[&str] = &[
    "ingest",
    "latency-matrix",
    "compare",
    "live-calls-memory",
    "idle-memory",
    "rest-lookup",
    "snapshot-under-load",
    "login-storm",
    "scope-cost",
    "cometd-compare",
    "cometd-idle-memory",
    "journal-ingest",
    "journal-recovery",
    "nats-ingest",
    "analytics",
];

/// Parts of `analytics`, run by name.
const ANALYTICS_PARTS: &[&str] = &["analytics-live", "analytics-export", "analytics-sink"];

/// Diagnostic scenarios, run by name or with `all`.
const DIAGNOSTICS: &[&str] = &[
    "latency",
    "light",
    "agents-only",
    "pipeline-only",
    "cometd-p99",
];

/// Scenarios that `compare` includes.
const IN_COMPARE: &[&str] = &[
    "saturation",
    "nats-saturation",
    "bare-saturation",
    "fanout-p99",
    "nats-fanout-p99",
    "bare-fanout-p99",
];

/// Runs the scenarios named on the command line (`cargo bench --bench serve -- NAME...`), or the suite.
fn main() {
    if std::env::args().any(|a| a == bare::FLAG) {
        bare::serve_main();
        return;
    }
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    for name in &wanted {
        let known = name == "all"
            || SUITE.contains(&name.as_str())
            || DIAGNOSTICS.contains(&name.as_str())
            || IN_COMPARE.contains(&name.as_str())
            || ANALYTICS_PARTS.contains(&name.as_str());
        if !known {
            eprintln!(
                "unknown scenario {name:?}; known: all, {}, {}, {}, {}",
                SUITE.join(", "),
                IN_COMPARE.join(", "),
                DIAGNOSTICS.join(", "),
                ANALYTICS_PARTS.join(", ")
            );
            std::process::exit(2);
        }
    }
    let all = wanted.iter().any(|w| w == "all");
    let named = |name: &str| wanted.iter().any(|w| w == name);
    let runs = |name: &str| {
        named(name)
            || ((wanted.is_empty() || all) && SUITE.contains(&name))
            || (all && DIAGNOSTICS.contains(&name))
    };
    // `compare` runs these itself; run them on their own only when named without it.
    let alone = |name: &str| named(name) && !runs("compare");
    // The clients' threads share the two cores with the server's: `BENCH_CLIENT_THREADS` sets how many.
    let client_threads = std::env::var("BENCH_CLIENT_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(client_threads)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        if runs("ingest") {
            ingest_throughput(4, sized(250_000, 10_000)).await;
        }
        if runs("latency") {
            latency(1000, 10, 20_000, sized(10, 2), Mode::Open).await;
        }
        if runs("light") {
            latency(10, 1, 1_000, sized(5, 1), Mode::Open).await;
        }
        if runs("agents-only") {
            latency(1000, 0, 20_000, sized(10, 2), Mode::Open).await;
        }
        if runs("pipeline-only") {
            pipeline_only(1_000).await;
            pipeline_only(20_000).await;
        }
        if runs("latency-matrix") {
            latency_matrix().await;
        }
        if runs("scope-cost") {
            scope_cost().await;
        }
        if runs("cometd-compare") {
            cometd_compare().await;
        }
        if runs("journal-ingest") {
            journal_ingest().await;
        }
        if runs("journal-recovery") {
            journal_recovery().await;
        }
        if runs("nats-ingest") {
            nats_ingest().await;
        }
        if runs("analytics") {
            analytics().await;
        }
        if named("analytics-live") {
            analytics_live().await;
        }
        if named("analytics-export") {
            analytics_part(true).await;
        }
        if named("analytics-sink") {
            analytics_part(false).await;
        }
        if runs("cometd-idle-memory") {
            cometd_idle_memory(sized(10_000, 1_000)).await;
        }
        if runs("cometd-p99") {
            let (lines, rate) = fanout_traffic(100, sized(10, 3));
            let run = cometd_callgate(sized(1_000, 100), &lines, rate).await;
            report_latency("cometd p99 (callgate only)", "gateway", &run);
        }
        if alone("fanout-p99") {
            let (clients, rate, seconds) = fanout_p99_sizes();
            fanout_p99(clients, rate, seconds).await;
        }
        if alone("nats-fanout-p99") {
            let (clients, rate, seconds) = fanout_p99_sizes();
            nats_fanout_p99(clients, rate, seconds).await;
        }
        if alone("bare-fanout-p99") {
            let (clients, rate, seconds) = fanout_p99_sizes();
            bare_fanout_p99(clients, rate, seconds).await;
        }
        if alone("bare-saturation") {
            for (clients, events) in saturation_sizes() {
                bare_saturation(clients, events).await;
            }
        }
        if alone("saturation") {
            for (clients, events) in saturation_sizes() {
                saturation(clients, events, Mode::Open).await;
            }
        }
        if alone("nats-saturation") {
            for (clients, events) in saturation_sizes() {
                nats_saturation(clients, events).await;
            }
        }
        if runs("compare") {
            compare().await;
        }
        if runs("live-calls-memory") {
            live_calls_memory(sized(100_000, 10_000)).await;
        }
        if runs("idle-memory") {
            idle_memory(sized(10_000, 1_000)).await;
        }
        if runs("rest-lookup") {
            rest_lookup_ratio().await;
        }
        if runs("snapshot-under-load") {
            snapshot_under_load(sized(100_000, 10_000), sized(10_000, 2_000)).await;
        }
        if runs("login-storm") {
            login_storm(sized(1_000, 100), sized(10_000, 2_000)).await;
        }
    });
    let _ = std::io::stdout().flush();
}
