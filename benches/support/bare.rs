//! A bare WebSocket broadcaster: the floor for the gateway's fanout on this machine.
//!
//! It does nothing but the fanout itself: one TCP connection brings frames as lines, a tokio `broadcast`
//! channel hands each to every client task, and each task batches whatever is waiting into one flush with
//! tokio-tungstenite. No decoding, no state, no filters, no bounds. It runs as a child process (this bench
//! binary started with `--bare-broadcaster`) so that its CPU is counted apart from the clients', exactly as
//! the gateway's and nats-server's are.

use futures_util::{SinkExt, StreamExt};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// The flag that makes this bench binary the broadcaster.
pub const FLAG: &str = "--bare-broadcaster";

/// Runs the broadcaster until killed: prints `WS_ADDR INGEST_ADDR` on stdout when ready.
pub fn serve_main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let ws = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let ingest = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!(
            "{} {}",
            ws.local_addr().expect("addr"),
            ingest.local_addr().expect("addr")
        );
        let (sender, _) = tokio::sync::broadcast::channel::<Message>(1 << 16);
        let publisher = sender.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = ingest.accept().await {
                let publisher = publisher.clone();
                tokio::spawn(async move {
                    let (reader, mut writer) = stream.into_split();
                    let mut lines = tokio::io::BufReader::new(reader).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let _ = publisher.send(Message::text(line));
                    }
                    let _ = writer.shutdown().await;
                });
            }
        });
        while let Ok((stream, _)) = ws.accept().await {
            let _ = stream.set_nodelay(true);
            let mut receiver = sender.subscribe();
            tokio::spawn(async move {
                let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                    .read_buffer_size(4 * 1024);
                let Ok(socket) =
                    tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
                else {
                    return;
                };
                let (mut sink, mut stream) = socket.split();
                // The clients are callgate's: they send a subscribe request and wait for an answer.
                let _ = stream.next().await;
                if sink
                    .send(Message::text("{\"type\":\"subscribed\"}"))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::spawn(async move { while stream.next().await.is_some() {} });
                loop {
                    let first = match receiver.recv().await {
                        Ok(message) => message,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => break,
                    };
                    if sink.feed(first).await.is_err() {
                        break;
                    }
                    while let Ok(message) = receiver.try_recv() {
                        if sink.feed(message).await.is_err() {
                            return;
                        }
                    }
                    if sink.flush().await.is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// The broadcaster process, killed on drop.
pub struct Bare {
    child: Child,
    /// Its WebSocket address.
    pub ws: String,
    /// Where frames are written, one per line.
    pub ingest: String,
}

impl Bare {
    /// Starts this bench binary as the broadcaster.
    pub fn start() -> Bare {
        let exe = std::env::current_exe().expect("bench binary path");
        let mut child = Command::new(exe)
            .arg(FLAG)
            .stdout(Stdio::piped())
            .spawn()
            .expect("broadcaster starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("ready line");
        let mut parts = line.split_whitespace();
        let ws = parts.next().expect("ws address").to_owned();
        let ingest = parts.next().expect("ingest address").to_owned();
        Bare { child, ws, ingest }
    }

    /// CPU seconds the broadcaster has used.
    pub fn cpu_seconds(&self) -> f64 {
        crate::cpu_seconds_of(&self.child.id().to_string())
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes each event's frames (stamped as they go) to the broadcaster, paced like callgate's load
/// generator. Returns the time taken to write everything.
pub async fn publish(ingest: &str, events: &[Vec<crate::nats::Payload>], rate: u64) -> Duration {
    let mut stream = tokio::net::TcpStream::connect(ingest)
        .await
        .expect("broadcaster ingest connects");
    let _ = stream.set_nodelay(true);
    let pacer = crate::Pacer::new(rate);
    let mut buf = Vec::new();
    for (i, chunk) in events.chunks(pacer.per_tick).enumerate() {
        pacer.wait(i).await;
        buf.clear();
        for payload in chunk.iter().flatten() {
            payload.append_stamped(&mut buf);
            buf.push(b'\n');
        }
        if !buf.is_empty() {
            stream.write_all(&buf).await.expect("publish");
        }
    }
    pacer.started.elapsed()
}
