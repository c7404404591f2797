//! Live gateway benchmarks against the real `callgate serve` binary on loopback. Client and server share
//! this machine's two cores; the client's own cost is part of every figure.
//!
//! Run: `cargo bench --bench serve` (all scenarios) or `cargo bench --bench serve -- NAME` for one of
//! `latency`, `fanout-p99`, `saturation`, `idle-memory`.
//!
//! Latency is counted at the client from a timestamp: the load generator stamps every event with
//! `Extensions.SentAt` (wall-clock microseconds) as it writes it to the ingest socket, the gateway passes
//! the event's Extensions into its notifications, and each client subtracts.

use futures_util::{SinkExt, StreamExt};
use std::io::{BufRead, BufReader, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

struct Gateway {
    child: Child,
    http: String,
    ingest: String,
}

impl Gateway {
    fn start() -> Gateway {
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

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Simulated traffic for `agents` agents (DNs 7001...), time-compressed by the pacing below.
fn traffic(agents: u32, events: usize, seed: u64) -> Vec<String> {
    let config = callgate::sim::SimConfig {
        seed,
        agents,
        queues: 8,
        supervisors: 10,
        calls_per_second: f64::from(agents) / 200.0,
        ..callgate::sim::SimConfig::default()
    };
    callgate::sim::Simulator::new(config)
        .take(events)
        .map(|e| e.line)
        .collect()
}

/// The line with `Extensions.SentAt` set to now.
fn stamp(line: &str) -> String {
    let sent = now_micros();
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
        let started = Instant::now();
        let per_tick = if rate == 0 {
            1000
        } else {
            (rate / 1000).max(1) as usize
        };
        let mut buf = String::new();
        for (i, chunk) in lines.chunks(per_tick).enumerate() {
            if let Some(micros) = (i as u64 * per_tick as u64 * 1_000_000).checked_div(rate) {
                tokio::time::sleep_until((started + Duration::from_micros(micros)).into()).await;
            }
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
        let elapsed = started.elapsed();
        writer.shutdown().await.expect("half-close");
        elapsed
    };
    let (elapsed, ()) = tokio::join!(send, drain);
    elapsed
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

#[derive(Default)]
struct ClientStats {
    latencies_us: Vec<u64>,
    frames: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// Opens a WebSocket, subscribes with `filter`, then records every notification until `stop`.
async fn client(
    url: String,
    filter: serde_json::Value,
    ready: Arc<AtomicU64>,
    stop: tokio_util::sync::CancellationToken,
) -> ClientStats {
    let (mut ws, _) = connect(&url).await;
    let request = serde_json::json!({"type":"subscribe","sub":"s","filter":filter});
    ws.send(Message::text(request.to_string()))
        .await
        .expect("subscribe");
    let mut stats = ClientStats::default();
    let mut subscribed = false;
    loop {
        let message = tokio::select! {
            message = ws.next() => message,
            () = stop.cancelled() => break,
        };
        let Some(Ok(Message::Text(text))) = message else {
            if matches!(message, Some(Ok(_))) {
                continue;
            }
            break;
        };
        if !subscribed {
            subscribed = true;
            ready.fetch_add(1, Ordering::AcqRel);
            continue;
        }
        let now = Instant::now();
        stats.frames += 1;
        stats.first.get_or_insert(now);
        stats.last = Some(now);
        if let Some(at) = text.as_str().find("\"SentAt\":") {
            let digits: String = text.as_str()[at + 9..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(sent) = digits.parse::<u64>() {
                stats.latencies_us.push(now_micros().saturating_sub(sent));
            }
        }
    }
    stats
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

struct Run {
    clients: Vec<ClientStats>,
    sent: usize,
    send_time: Duration,
    /// Gateway CPU seconds used from the first event sent to the end of the settle time.
    gateway_cpu: f64,
    /// This process's (the clients' and the load generator's) CPU seconds over the same time.
    client_cpu: f64,
}

async fn run_clients(
    gateway: &Gateway,
    filters: Vec<serde_json::Value>,
    lines: &[String],
    rate: u64,
    settle: Duration,
) -> Run {
    let url = format!("ws://{}/api/v2/ws", gateway.http);
    let ready = Arc::new(AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let count = filters.len() as u64;
    let mut tasks = Vec::new();
    for (i, filter) in filters.into_iter().enumerate() {
        tasks.push(tokio::spawn(client(
            url.clone(),
            filter,
            Arc::clone(&ready),
            stop.clone(),
        )));
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    while ready.load(Ordering::Acquire) < count {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu_before = gateway.cpu_seconds();
    let client_before = cpu_seconds_of("self");
    let send_time = feed(&gateway.ingest, lines, rate).await;
    tokio::time::sleep(settle).await;
    let gateway_cpu = gateway.cpu_seconds() - cpu_before;
    let client_cpu = cpu_seconds_of("self") - client_before;
    stop.cancel();
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(task.await.expect("client task"));
    }
    Run {
        clients,
        sent: lines.len(),
        send_time,
        gateway_cpu,
        client_cpu,
    }
}

fn report_latency(name: &str, run: &Run) {
    let mut all: Vec<u64> = run
        .clients
        .iter()
        .flat_map(|c| c.latencies_us.iter().copied())
        .collect();
    all.sort_unstable();
    let frames: u64 = run.clients.iter().map(|c| c.frames).sum();
    println!(
        "{name}: {} events in {:.1} s ({:.0}/s), {} deliveries, CPU per delivery: gateway {:.1} us, clients {:.1} us; latency ms p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
        run.sent,
        run.send_time.as_secs_f64(),
        run.sent as f64 / run.send_time.as_secs_f64(),
        frames,
        run.gateway_cpu * 1e6 / frames.max(1) as f64,
        run.client_cpu * 1e6 / frames.max(1) as f64,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        percentile(&all, 0.999),
        percentile(&all, 1.0),
    );
}

async fn latency(agents: u32, wallboards: usize, rate: u64, seconds: u64) {
    let gateway = Gateway::start();
    let lines = traffic(agents, (rate * seconds) as usize, 11);
    let mut filters: Vec<serde_json::Value> = (1..=agents)
        .map(|i| serde_json::json!({"dn":[format!("{}", 7000 + i)]}))
        .collect();
    filters.extend((0..wallboards).map(|_| serde_json::json!({})));
    let run = run_clients(&gateway, filters, &lines, rate, Duration::from_secs(2)).await;
    report_latency(
        &format!(
            "latency: {agents} agent clients + {wallboards} all-calls clients at {rate} events/s"
        ),
        &run,
    );
    report_gateway_histogram(&gateway);
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

async fn fanout_p99(clients: usize, notifications_per_second: u64, seconds: u64) {
    let gateway = Gateway::start();
    // About 0.78 notifications per simulated event.
    let rate = notifications_per_second * 100 / 78;
    let lines = traffic(200, (rate * seconds) as usize, 12);
    let filters = (0..clients).map(|_| serde_json::json!({})).collect();
    let run = run_clients(&gateway, filters, &lines, rate, Duration::from_secs(2)).await;
    report_latency(
        &format!(
            "fanout: {notifications_per_second} notifications/s to {clients} all-calls clients"
        ),
        &run,
    );
    report_gateway_histogram(&gateway);
}

/// The gateway's own view: ingest to publish (into the outboxes), from its /metrics histogram.
fn report_gateway_histogram(gateway: &Gateway) {
    let Ok(mut stream) = std::net::TcpStream::connect(&gateway.http) else {
        return;
    };
    let _ = write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = std::io::Read::read_to_string(&mut stream, &mut text);
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

async fn saturation(clients: usize, events: usize) {
    let gateway = Gateway::start();
    let lines = traffic(500, events, 13);
    let filters = (0..clients).map(|_| serde_json::json!({})).collect();
    let run = run_clients(&gateway, filters, &lines, 0, Duration::from_secs(3)).await;
    let frames: u64 = run.clients.iter().map(|c| c.frames).sum();
    let first = run.clients.iter().filter_map(|c| c.first).min();
    let last = run.clients.iter().filter_map(|c| c.last).max();
    let span = match (first, last) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => f64::NAN,
    };
    println!(
        "saturation: {clients} all-calls clients, {events} events as fast as possible: {frames} deliveries in {span:.2} s = {:.0} deliveries/s",
        frames as f64 / span
    );
}

async fn idle_memory(connections: usize) {
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

fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runs = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        if runs("latency") {
            latency(1000, 10, 20_000, 10).await;
        }
        if runs("light") {
            latency(10, 1, 1_000, 5).await;
        }
        if runs("agents-only") {
            latency(1000, 0, 20_000, 10).await;
        }
        if runs("pipeline-only") {
            pipeline_only(1_000).await;
            pipeline_only(20_000).await;
        }
        if runs("fanout-p99") {
            fanout_p99(1000, 100, 10).await;
        }
        if runs("saturation") {
            saturation(100, 50_000).await;
            saturation(1000, 10_000).await;
        }
        if runs("idle-memory") {
            idle_memory(10_000).await;
        }
    });
    let _ = std::io::stdout().flush();
}
