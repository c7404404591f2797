//! The ingest socket (api.md): T-Servers connect over TCP and write event lines; the gateway answers with
//! acknowledgements and error lines.
//!
//! Each connection is one ordered stream. A bad line gets an error line and reading goes on. Lines are
//! decoded here, on the connection's task (so decoding spreads over the runtime's threads), and handed to
//! the pipeline one socket read at a time; while the pipeline is full the connection stops reading, so a
//! fast T-Server is slowed by TCP rather than buffered without bound.

use super::framing::{Frame, LineFramer, MAX_LINE_BYTES};
use crate::event::kv::write_json_str;
use crate::event::{DecodeError, Decoded, decode_line};
use crate::pipeline::{ConnStats, Pipeline, Submission};
use bytes::BytesMut;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often acknowledgements are written while events flow (api.md: at most every 100 ms).
const ACK_INTERVAL: Duration = Duration::from_millis(100);
/// How much is read from a socket at once.
const READ_CHUNK: usize = 64 * 1024;
/// How long a closing connection waits for the pipeline to take its last events.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts ingest connections until `cancel`; each runs on `tracker`.
pub async fn serve(
    listener: TcpListener,
    pipeline: Arc<Pipeline>,
    max_connections: usize,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = cancel.cancelled() => break,
        };
        let (mut stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!("ingest accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if open.load(Ordering::Acquire) >= max_connections {
            tracing::warn!(%peer, "ingest connection refused: {max_connections} connections open");
            let _ = stream
                .write_all(b"{\"error\":\"too many ingest connections\",\"line\":0}\n")
                .await;
            continue;
        }
        let _ = stream.set_nodelay(true);
        open.fetch_add(1, Ordering::AcqRel);
        metrics::gauge!("callgate_ingest_connections").increment(1.0);
        let pipeline = Arc::clone(&pipeline);
        let cancel = cancel.clone();
        let open = Arc::clone(&open);
        tracker.spawn(async move {
            tracing::info!(%peer, "ingest connection opened");
            if let Err(err) = connection(stream, pipeline, cancel).await {
                tracing::info!(%peer, "ingest connection ended: {err}");
            } else {
                tracing::info!(%peer, "ingest connection closed");
            }
            open.fetch_sub(1, Ordering::AcqRel);
            metrics::gauge!("callgate_ingest_connections").decrement(1.0);
        });
    }
}

/// The last acknowledgement written, to write a new one only when something changed.
#[derive(Default, PartialEq, Eq, Clone, Copy)]
struct AckState {
    highest: Option<u64>,
    applied: u64,
    duplicates: u64,
    rejected: u64,
    dropped: u64,
}

fn ack_state(stats: &ConnStats) -> AckState {
    AckState {
        highest: stats.highest(),
        applied: stats.applied.load(Ordering::Relaxed),
        duplicates: stats.duplicates.load(Ordering::Relaxed),
        rejected: stats.rejected.load(Ordering::Relaxed),
        dropped: stats.dropped.load(Ordering::Relaxed),
    }
}

fn ack_line(state: AckState) -> String {
    let mut line = String::with_capacity(96);
    line.push('{');
    if let Some(highest) = state.highest {
        line.push_str(&format!("\"ack\":{highest},"));
    }
    line.push_str(&format!(
        "\"applied\":{},\"duplicates\":{},\"rejected\":{}",
        state.applied, state.duplicates, state.rejected
    ));
    // Only once it happens: the member the spec's acknowledgements do not have (docs/semantics.md).
    if state.dropped > 0 {
        line.push_str(&format!(",\"dropped\":{}", state.dropped));
    }
    line.push_str("}\n");
    line
}

/// Acknowledge received data at once. A T-Server writes many small segments; with delayed ACKs (up to
/// 40 ms) its congestion window fills with unacknowledged segments and its next events wait on the wire
/// (measured: a 40 ms p99 between an event's write and its arrival, at 1,000 events/s). Linux turns quick
/// ACKs off again by itself, so it is set after every read.
fn quick_ack(reader: &tokio::net::tcp::OwnedReadHalf) {
    #[cfg(target_os = "linux")]
    {
        let stream: &TcpStream = reader.as_ref();
        let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = reader;
}

async fn connection(
    stream: TcpStream,
    pipeline: Arc<Pipeline>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let (mut reader, mut writer) = stream.into_split();
    let stats = Arc::new(ConnStats::default());
    let mut framer = LineFramer::new(MAX_LINE_BYTES);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut replies = Vec::<u8>::new();
    let mut last_ack = AckState::default();
    let mut ticker = tokio::time::interval(ACK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut eof = false;
    while !eof {
        buf.reserve(READ_CHUNK);
        let read = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            _ = ticker.tick() => {
                let now = ack_state(&stats);
                if now != last_ack {
                    writer.write_all(ack_line(now).as_bytes()).await?;
                    last_ack = now;
                }
                continue;
            }
            read = reader.read_buf(&mut buf) => read?,
        };
        quick_ack(&reader);
        let mut batch = Vec::new();
        let ingested = Instant::now();
        let take = |frame: Frame, batch: &mut Vec<Submission>, replies: &mut Vec<u8>| {
            let (number, outcome) = match frame {
                Frame::Line { number, bytes } => {
                    if bytes.iter().all(u8::is_ascii_whitespace) {
                        return;
                    }
                    match decode_line(&bytes) {
                        Ok(Decoded::Event(event)) => {
                            batch.push(Submission {
                                event: event.into_owned(),
                                stats: Arc::clone(&stats),
                                ingested,
                            });
                            return;
                        }
                        Ok(Decoded::Unknown { .. }) => {
                            metrics::counter!("callgate_events_total", "outcome" => "ignored")
                                .increment(1);
                            stats.applied.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        Err(err) => (number, err),
                    }
                }
                Frame::TooLong { number } => (number, DecodeError::TooLong),
            };
            metrics::counter!("callgate_events_total", "outcome" => "rejected").increment(1);
            stats.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("ingest line {number} rejected: {outcome}");
            let mut line = String::from("{\"error\":");
            write_json_str(&mut line, &outcome.to_string());
            line.push_str(&format!(",\"line\":{number}}}\n"));
            replies.extend_from_slice(line.as_bytes());
        };
        if read == 0 {
            eof = true;
            while let Some(frame) = framer.decode_eof(&mut buf) {
                take(frame, &mut batch, &mut replies);
            }
        } else {
            while let Some(frame) = framer.decode(&mut buf) {
                take(frame, &mut batch, &mut replies);
            }
        }
        if !replies.is_empty() {
            writer.write_all(&replies).await?;
            replies.clear();
        }
        pipeline.submit(batch).await;
    }
    // Half-closed by the client, or shutting down: wait until the pipeline has taken everything read,
    // then write the last acknowledgement and close our side.
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while !stats.settled() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    writer
        .write_all(ack_line(ack_state(&stats)).as_bytes())
        .await?;
    writer.shutdown().await
}
