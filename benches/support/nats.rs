//! The peer for issue 4's comparison: nats-server's WebSocket listener delivering the same notification
//! bytes that callgate's WebSocket clients receive.
//!
//! The server runs with a config file written to a temporary directory (see [`NatsServer::start`] for
//! the settings and why). One plain TCP NATS connection publishes; M WebSocket clients subscribe to one
//! subject (the analogue of callgate's all-calls subscription) and parse the NATS protocol out of the
//! WebSocket byte stream. Clients record what callgate's clients record ([`crate::ClientStats`]), so both
//! servers' figures come out of the same arithmetic.

use crate::{ClientStats, Run, cpu_seconds_of, now_micros};

use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;

/// The subject every notification is published on; every client subscribes to it.
const SUBJECT: &str = "calls";

/// A running nats-server, killed (and its directory removed) on drop.
pub struct NatsServer {
    child: Child,
    dir: PathBuf,
    /// Plain NATS client port address.
    pub client: String,
    /// WebSocket listener address.
    pub websocket: String,
}

/// The nats-server binary: `$NATS_SERVER`, else the first found on `PATH` or in the sbin directories
/// (Debian installs it as /usr/sbin/nats-server, which is not on every user's `PATH`).
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nats-server not found on PATH or in /usr/sbin: install it with `apt-get install -y nats-server` \
                 (or set NATS_SERVER=/path/to/nats-server) to run the nats-* and compare scenarios"
            )
        })
}

/// Two distinct free loopback ports. Both listeners are held until both ports are known, so the two
/// differ; another process could still take one before nats-server binds it, which start() reports.
fn free_ports() -> (u16, u16) {
    let a = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let b = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    (
        a.local_addr().expect("port").port(),
        b.local_addr().expect("port").port(),
    )
}

impl NatsServer {
    /// Starts nats-server on free loopback ports and waits until both listeners accept.
    ///
    /// Settings beyond the ports, and why:
    /// - `max_pending: 1GB` (default 64 MB per connection): at saturation a client on this shared
    ///   2-core machine can fall behind by a whole run's traffic (5,000 clients × ~2 MB); the default
    ///   would cut it off as a slow consumer, so the run would measure disconnections, not delivery.
    ///   callgate has no such cut-off at these sizes either (it coalesces versions of a call instead).
    /// - `write_deadline: "60s"` (default 10 s): a flush that stalls because the clients share the CPU
    ///   with the server is not a dead client; the deadline would otherwise disconnect it.
    /// - `max_payload` stays at its 1 MB default: notifications are 1–4 KB.
    /// - WebSocket `no_tls: true`, `compression: false`: callgate's listener is plain and uncompressed.
    pub fn start() -> NatsServer {
        Self::launch(false)
    }

    /// Starts nats-server as [`NatsServer::start`] does, with JetStream storing in its directory (for
    /// `callgate serve --nats`; issue 13).
    pub fn start_jetstream() -> NatsServer {
        Self::launch(true)
    }

    /// The URL a NATS client connects to.
    pub fn url(&self) -> String {
        format!("nats://{}", self.client)
    }

    fn launch(jetstream: bool) -> NatsServer {
        let binary = binary();
        let (client_port, ws_port) = free_ports();
        let dir = std::env::temp_dir().join(format!(
            "callgate-bench-nats-{}-{client_port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create nats temp dir");
        let config = dir.join("nats.conf");
        std::fs::write(
            &config,
            format!(
                "host: 127.0.0.1\nport: {client_port}\nmax_pending: 1GB\nwrite_deadline: \"60s\"\n\
                 websocket {{\n  host: 127.0.0.1\n  port: {ws_port}\n  no_tls: true\n  compression: false\n}}\n{}",
                if jetstream {
                    format!("jetstream {{\n  store_dir: {:?}\n}}\n", dir.join("js"))
                } else {
                    String::new()
                }
            ),
        )
        .expect("write nats config");
        let log = dir.join("nats.log");
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&config)
            .arg("-l")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("starting {}: {err}", binary.display()));
        let mut server = NatsServer {
            child,
            dir,
            client: format!("127.0.0.1:{client_port}"),
            websocket: format!("127.0.0.1:{ws_port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("nats-server exited ({status}) at start:\n{}", server.log());
            }
            let up = |addr: &str| std::net::TcpStream::connect(addr).is_ok();
            if up(&server.client) && up(&server.websocket) {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not accept within 10 s:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// CPU seconds (user + system) nats-server has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds_of(&self.child.id().to_string())
    }

    /// The server's log so far.
    fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(self.dir.join("nats.log")) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// How many slow-consumer disconnections the server logged: each is a client that lost messages,
    /// so a run with any is not comparable.
    pub fn slow_consumers(&self) -> usize {
        self.log().matches("Slow Consumer").count()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One notification frame as callgate's clients receive it, and where its `SentAt` digits are.
pub struct Payload {
    /// The frame's bytes.
    pub bytes: Vec<u8>,
    /// Offset of the 16 `SentAt` digits, overwritten with the wall clock when published.
    pub stamp_at: Option<usize>,
}

impl Payload {
    /// Appends the frame to `buf`, its `SentAt` set to the wall clock now.
    pub fn append_stamped(&self, buf: &mut Vec<u8>) {
        let at = buf.len();
        buf.extend_from_slice(&self.bytes);
        if let Some(stamp) = self.stamp_at {
            let digits = format!("{:016}", now_micros());
            buf[at + stamp..at + stamp + 16].copy_from_slice(digits.as_bytes());
        }
    }
}

/// A plain TCP NATS connection that publishes.
struct Publisher {
    writer: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    pongs: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl Publisher {
    async fn connect(addr: &str) -> Publisher {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("NATS publisher connects");
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        let writer = Arc::new(tokio::sync::Mutex::new(writer));
        let (tx, pongs) = tokio::sync::mpsc::unbounded_channel();
        let answer = Arc::clone(&writer);
        // The server's INFO, PINGs (answered at once, or the server would drop us) and our PONGs.
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("PING") {
                    let _ = answer.lock().await.write_all(b"PONG\r\n").await;
                } else if line.starts_with("PONG") {
                    let _ = tx.send(());
                } else if line.starts_with("-ERR") {
                    eprintln!("nats publisher: {line}");
                }
            }
        });
        let mut publisher = Publisher { writer, pongs };
        publisher
            .write(
                b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"echo\":false}\r\n",
            )
            .await;
        publisher.flush().await;
        publisher
    }

    async fn write(&self, bytes: &[u8]) {
        self.writer
            .lock()
            .await
            .write_all(bytes)
            .await
            .expect("NATS publish");
    }

    /// Round trip: returns when the server has processed everything written before.
    async fn flush(&mut self) {
        self.write(b"PING\r\n").await;
        self.pongs.recv().await.expect("PONG from nats-server");
    }

    /// Publishes the notifications of each event in `events` as callgate's load generator writes the
    /// events themselves ([`crate::feed`]): in ticks of `rate / 1000` events (1,000 when `rate` is 0, as
    /// fast as possible), each tick one write, every payload stamped with the wall clock as it is
    /// written. Returns the time taken to write everything.
    async fn publish(&mut self, events: &[Vec<Payload>], rate: u64) -> Duration {
        let pacer = crate::Pacer::new(rate);
        let mut buf = Vec::new();
        for (i, chunk) in events.chunks(pacer.per_tick).enumerate() {
            pacer.wait(i).await;
            buf.clear();
            for payload in chunk.iter().flatten() {
                buf.extend_from_slice(
                    format!("PUB {SUBJECT} {}\r\n", payload.bytes.len()).as_bytes(),
                );
                payload.append_stamped(&mut buf);
                buf.extend_from_slice(b"\r\n");
            }
            if !buf.is_empty() {
                self.write(&buf).await;
            }
        }
        let elapsed = pacer.started.elapsed();
        self.flush().await;
        elapsed
    }
}

/// One NATS protocol operation parsed from the server's byte stream.
enum Op<'a> {
    /// A message's payload.
    Msg(&'a [u8]),
    /// The server checks we are alive: answer PONG.
    Ping,
    /// The answer to our PING.
    Pong,
    /// `-ERR '...'`.
    Err(String),
    /// INFO, +OK: nothing to do.
    Other,
}

/// Splits the server's byte stream into operations. Operations can span WebSocket frames, and one frame
/// can carry many, so bytes are buffered until an operation is complete.
#[derive(Default)]
struct Parser {
    buf: Vec<u8>,
    pos: usize,
}

impl Parser {
    /// Appends bytes received, first dropping those already parsed.
    fn extend(&mut self, bytes: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete operation, or `None` until more bytes arrive.
    fn next(&mut self) -> Option<Op<'_>> {
        let rest = &self.buf[self.pos..];
        let end = memchr::memmem::find(rest, b"\r\n")?;
        let line = &rest[..end];
        if let Some(args) = line.strip_prefix(b"MSG ") {
            // MSG <subject> <sid> [reply-to] <#bytes>: the length is the last field.
            let len: usize = std::str::from_utf8(args)
                .ok()
                .and_then(|a| a.rsplit(' ').next())
                .and_then(|n| n.parse().ok())
                .expect("MSG length");
            let start = end + 2;
            if rest.len() < start + len + 2 {
                return None;
            }
            self.pos += start + len + 2;
            return Some(Op::Msg(&rest[start..start + len]));
        }
        self.pos += end + 2;
        Some(match line {
            b"PING" => Op::Ping,
            b"PONG" => Op::Pong,
            _ if line.starts_with(b"-ERR") => Op::Err(String::from_utf8_lossy(line).into_owned()),
            _ => Op::Other,
        })
    }
}

/// A WebSocket client speaking NATS: subscribes to [`SUBJECT`], then records every message until `stop`
/// exactly as callgate's client records notifications.
async fn client(
    url: String,
    ready: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    stop: tokio_util::sync::CancellationToken,
) -> ClientStats {
    let mut ws = crate::wsclient::connect(crate::authority(&url), "/")
        .await
        .expect("WebSocket connects");
    ws.send(
        crate::wsclient::opcode::BINARY,
        format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"protocol\":1}}\r\nSUB {SUBJECT} 1\r\nPING\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("NATS subscribe");
    let mut stats = ClientStats::default();
    let mut parser = Parser::default();
    let mut subscribed = false;
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let frame = tokio::select! {
            frame = ws.next_frame() => frame,
            () = &mut stopped => break,
        };
        match frame {
            // NATS operations may span or share frames: the parser works on the byte stream.
            Ok(Some((_, payload))) => parser.extend(payload),
            _ => break,
        }
        let mut pong = false;
        while let Some(op) = parser.next() {
            match op {
                Op::Msg(payload) => {
                    let now = Instant::now();
                    stats.frames += 1;
                    stats.bytes += payload.len() as u64;
                    received.fetch_add(1, Ordering::Relaxed);
                    stats.first.get_or_insert(now);
                    stats.last = Some(now);
                    stats.record_stamp(payload);
                }
                Op::Ping => pong = true,
                Op::Pong if !subscribed => {
                    // The server answers our PING after it has taken the SUB before it.
                    subscribed = true;
                    ready.fetch_add(1, Ordering::AcqRel);
                }
                Op::Err(line) => eprintln!("nats client: {line}"),
                Op::Pong | Op::Other => {}
            }
        }
        if pong
            && ws
                .send(crate::wsclient::opcode::BINARY, b"PONG\r\n")
                .await
                .is_err()
        {
            break;
        }
    }
    stats
}

/// Opens `clients` WebSocket subscribers on `server`, publishes `events` (each event's notifications) at
/// `rate` events/s (0: as fast as possible), and waits until deliveries stop. Measured like callgate's
/// [`crate::run_clients`]: server and client CPU from the first publish to the end of the wait.
pub async fn fanout(
    server: &NatsServer,
    clients: usize,
    events: &[Vec<Payload>],
    rate: u64,
) -> Run {
    let url = format!("ws://{}/", server.websocket);
    let notifications: usize = events.iter().map(Vec::len).sum();
    let measured = crate::measure(
        vec![(); clients],
        |(), ready, received, stop| tokio::spawn(client(url.clone(), ready, received, stop)),
        Some((notifications * clients) as u64),
        || server.cpu_seconds(),
        // Connected once every subscriber is in, as callgate's load generator connects.
        || async {
            let mut publisher = Publisher::connect(&server.client).await;
            publisher.publish(events, rate).await
        },
    )
    .await;
    measured.into_run(events.len(), notifications as u64)
}
