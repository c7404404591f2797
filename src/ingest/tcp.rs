//! The ingest socket (api.md): T-Servers connect over TCP and write event lines; the gateway answers with
//! acknowledgements and error lines.
//!
//! Each connection is one ordered stream. A bad line gets an error line and reading goes on. Lines are
//! decoded here, on the connection's task (so decoding spreads over the runtime's threads), and handed to
//! the pipeline one socket read at a time; while the pipeline is full the connection stops reading, so a
//! fast T-Server is slowed by TCP rather than buffered without bound.
//!
//! With `[[ingest]]` sources in the access file (access.md, "Ingest"), a connection's first line is
//! `{"auth":"<token>"}`, answered `{"authenticated":"<name>"}` or `{"error":"unauthorized"}` and a
//! close; after it, an event of a Server the source may not write is rejected like a bad line, so one
//! source can neither write nor advance the sequence numbers of another's T-Server.

use super::framing::{Frame, LineFramer, MAX_LINE_BYTES};
use super::intake::Intake;
use super::lines::{Line, decode_frame};
use crate::access::{Gate, IngestSource};
use crate::journal::Position;
use crate::journal::live::Progress;
use crate::json::write_json_str;
use crate::pipeline::{ConnStats, Submission};
use crate::reduce::{Disposition, IgnoreReason};
use bytes::BytesMut;
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often acknowledgements are written while events flow (api.md: at most every 100 ms).
const ACK_INTERVAL: Duration = Duration::from_millis(100);
/// How much is read from a socket at once.
const READ_CHUNK: usize = 64 * 1024;
/// How long a closing connection waits for the pipeline to take its last events.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a reply may wait for the client to read before the connection is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest auth line taken: `{"auth":"<token>"}` with a token of a few hundred bytes at most. Read a
/// byte at a time (nothing after it may be consumed), so the bound is kept small.
const MAX_AUTH_LINE: usize = 4096;
/// How long a connection that must authenticate has to send its auth line.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle time before the first keepalive probe, the time between probes, and probes before giving up.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 3;

/// Accepts ingest connections until `cancel`; each runs on `tracker`.
pub async fn serve(
    listener: TcpListener,
    intake: Arc<Intake>,
    max_connections: usize,
    gate: Arc<Gate>,
    tls: Option<Arc<crate::tls::Tls>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(max_connections));
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
        // Refused with a word rather than left in the backlog: a T-Server told why can alert.
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::warn!(%peer, "ingest connection refused: {max_connections} connections open");
            metrics::counter!("callgate_ingest_refused_total").increment(1);
            let refusal = b"{\"error\":\"too many ingest connections\",\"line\":0}\n";
            let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(refusal)).await;
            continue;
        };
        configure(&stream);
        metrics::gauge!("callgate_ingest_connections").increment(1.0);
        let intake = Arc::clone(&intake);
        let cancel = cancel.clone();
        let gate = Arc::clone(&gate);
        let tls = tls.clone();
        tracker.spawn(async move {
            let _permit = permit;
            tracing::info!(%peer, "ingest connection opened");
            let socket = stream.as_raw_fd();
            let ended = match tls {
                None => serve_stream(stream, socket, peer, &gate, intake, cancel).await,
                Some(tls) => match tls.accept(stream).await {
                    Ok(stream) => serve_stream(stream, socket, peer, &gate, intake, cancel).await,
                    Err(err) => Err(err),
                },
            };
            match ended {
                Err(err) => tracing::info!(%peer, "ingest connection ended: {err}"),
                Ok(()) => tracing::info!(%peer, "ingest connection closed"),
            }
            metrics::gauge!("callgate_ingest_connections").decrement(1.0);
        });
    }
}

/// No Nagle delay on acknowledgements, and TCP keepalive so that a T-Server host that vanished (power
/// loss, a dropped NAT entry) frees its slot within about a minute instead of never.
fn configure(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    if let Err(err) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!("cannot set TCP keepalive: {err}");
    }
}

/// Writes acknowledgement or error lines, giving up on a client that has not read them for
/// [`WRITE_TIMEOUT`]: its connection is closed and its slot freed.
async fn write_replies<W: AsyncWrite + Unpin>(writer: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(bytes)).await {
        Ok(result) => result,
        Err(_) => {
            metrics::counter!("callgate_ingest_write_timeouts_total").increment(1);
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client read no reply for {WRITE_TIMEOUT:?}"),
            ))
        }
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

/// Batches of one connection waiting for the journal to be durable, at most (then they merge).
const MAX_PENDING_BATCHES: usize = 1024;

/// With `--journal`: the connection's batches whose journal position is not durable yet, and the highest
/// EventSequenceNumber of those that are. An event is acked once taken by the reducer *and* durable.
struct Durability {
    progress: Progress,
    /// Per submitted batch: the journal position it waits for, and its highest EventSequenceNumber.
    pending: VecDeque<(Position, Option<u64>)>,
    highest: Option<u64>,
}

impl Durability {
    fn submitted(&mut self, position: Position, highest: Option<u64>) {
        // Bounded whatever the disk does: past the bound the newest entry absorbs this batch (the later
        // position, the higher number), which only delays acks, never gives one early.
        if self.pending.len() >= MAX_PENDING_BATCHES
            && let Some(newest) = self.pending.back_mut()
        {
            *newest = (position, newest.1.max(highest));
            return;
        }
        self.pending.push_back((position, highest));
    }

    /// The highest EventSequenceNumber durable now.
    fn highest(&mut self) -> Option<u64> {
        let durable = self.progress.durable();
        while let Some(&(position, highest)) = self.pending.front() {
            if position > durable {
                break;
            }
            self.pending.pop_front();
            self.highest = self.highest.max(highest);
        }
        self.highest
    }

    /// The position the last batch waits for.
    fn last(&self) -> Option<Position> {
        self.pending.back().map(|&(position, _)| position)
    }
}

fn ack_state(stats: &ConnStats, durability: Option<&mut Durability>) -> AckState {
    let taken = stats.highest();
    let highest = match durability {
        None => taken,
        // `None` orders first: nothing is acked until something is both taken and durable.
        Some(durability) => taken.min(durability.highest()),
    };
    AckState {
        highest,
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
fn quick_ack(socket: RawFd) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: the connection's task owns the socket (plain or under TLS) for as long as it calls
        // this; the descriptor is only borrowed for one setsockopt.
        let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(socket) };
        let _ = socket2::SockRef::from(&socket).set_tcp_quickack(true);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// One connection, plain or under TLS: its auth line when sources are configured, then its events.
async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    mut stream: S,
    socket: RawFd,
    peer: std::net::SocketAddr,
    gate: &Gate,
    intake: Arc<Intake>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let source = if gate.ingest_needs_token() {
        match authenticate(&mut stream, gate, peer).await {
            Some(source) => Some(source),
            None => return Ok(()),
        }
    } else {
        None
    };
    connection(stream, socket, intake, source, cancel).await
}

/// Reads the auth line (line 1) byte by byte, so that nothing after it is consumed, and answers it.
/// Returns the source, or `None` once the connection has been refused and closed.
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    gate: &Gate,
    peer: std::net::SocketAddr,
) -> Option<IngestSource> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct AuthLine {
        auth: String,
    }
    let line = tokio::time::timeout(AUTH_TIMEOUT, read_line(stream, MAX_AUTH_LINE)).await;
    let source = match line {
        Ok(Ok(Some(line))) => serde_json::from_slice::<AuthLine>(&line)
            .ok()
            .and_then(|auth| gate.ingest_source(&auth.auth)),
        _ => None,
    };
    let Some(source) = source else {
        crate::access::gate::refused_at("ingest", peer.ip(), "token");
        let _ = write_replies(stream, b"{\"error\":\"unauthorized\"}\n").await;
        let _ = stream.shutdown().await;
        // Closing with the client's events unread would reset the connection, and the client could
        // lose the error line: read and drop what it still sends, for a moment, first.
        let _ = tokio::time::timeout(AUTH_TIMEOUT / 5, async {
            let mut sink = [0u8; 4096];
            while matches!(stream.read(&mut sink).await, Ok(read) if read > 0) {}
        })
        .await;
        return None;
    };
    tracing::info!(%peer, source = %source.name, "ingest source authenticated");
    let mut reply = String::from("{\"authenticated\":");
    write_json_str(&mut reply, &source.name);
    reply.push_str("}\n");
    write_replies(stream, reply.as_bytes()).await.ok()?;
    Some(source)
}

/// One line (without its end) of at most `max` bytes; `None` at end of stream or past the bound.
async fn read_line<S: AsyncRead + Unpin>(
    stream: &mut S,
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if stream.read(&mut byte).await? == 0 || line.len() > max {
            return Ok(None);
        }
        if byte[0] == b'\n' {
            return Ok(Some(line));
        }
        line.push(byte[0]);
    }
}

/// Counts a rejected line and queues its error line.
fn reject(number: u64, message: &str, stats: &ConnStats, replies: &mut Vec<u8>) {
    metrics::counter!("callgate_events_total", "outcome" => "rejected").increment(1);
    stats.rejected.fetch_add(1, Ordering::Relaxed);
    tracing::debug!("ingest line {number} rejected: {message}");
    let mut line = String::from("{\"error\":");
    write_json_str(&mut line, message);
    line.push_str(&format!(",\"line\":{number}}}\n"));
    replies.extend_from_slice(line.as_bytes());
}

async fn connection<S: AsyncRead + AsyncWrite + Send + 'static>(
    stream: S,
    socket: RawFd,
    intake: Arc<Intake>,
    source: Option<IngestSource>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let (mut reader, mut writer) = tokio::io::split(stream);
    // Numbered for the journal's entries (api.md: a connection is one ordered stream).
    static CONNECTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let stats = Arc::new(ConnStats::new(
        CONNECTIONS.fetch_add(1, Ordering::Relaxed) + 1,
    ));
    let mut framer = LineFramer::new(MAX_LINE_BYTES);
    // The auth line, when there was one, was line 1.
    if source.is_some() {
        framer.skip_lines(1);
    }
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut replies = Vec::<u8>::new();
    let mut last_ack = AckState::default();
    let mut durability = intake.progress().map(|progress| Durability {
        progress,
        pending: VecDeque::new(),
        highest: None,
    });
    let mut ticker = tokio::time::interval(ACK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut eof = false;
    let mut refused = None;
    while !eof {
        buf.reserve(READ_CHUNK);
        let read = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            _ = ticker.tick() => {
                let now = ack_state(&stats, durability.as_mut());
                if now != last_ack {
                    write_replies(&mut writer, ack_line(now).as_bytes()).await?;
                    last_ack = now;
                }
                continue;
            }
            read = reader.read_buf(&mut buf) => read?,
        };
        quick_ack(socket);
        let mut batch = Vec::new();
        let ingested = Instant::now();
        let take = |frame: Frame, batch: &mut Vec<Submission>, replies: &mut Vec<u8>| {
            let decoded = decode_frame(&frame);
            let (number, error) = match decoded {
                (_, Line::Blank) => return,
                (number, Line::Event(event))
                    if source
                        .as_ref()
                        .is_some_and(|source| !source.servers.allows(&event.server)) =>
                {
                    let message = format!("server not allowed: {}", event.server);
                    reject(number, &message, &stats, replies);
                    return;
                }
                (_, Line::Event(event)) => {
                    let event = event.into_owned();
                    // The line's bytes are the read buffer's, not copied: what the journal keeps.
                    let line = match frame {
                        Frame::Line { bytes, .. } => bytes.freeze(),
                        Frame::TooLong { .. } => bytes::Bytes::new(),
                    };
                    batch.push(Submission {
                        event: Arc::new(event),
                        line,
                        stats: Arc::clone(&stats),
                        ingested,
                        arrival: None,
                        position: 0,
                    });
                    return;
                }
                (_, Line::Unknown) => {
                    let unknown = Disposition::Ignored(IgnoreReason::UnknownEvent);
                    metrics::counter!("callgate_events_total", "outcome" => unknown.label())
                        .increment(1);
                    stats.applied.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                (number, Line::Rejected(error)) => (number, error),
            };
            reject(number, &error.to_string(), &stats, replies);
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
            write_replies(&mut writer, &replies).await?;
            replies.clear();
        }
        let highest = batch.iter().filter_map(|s| s.event.sequence).max();
        match intake.submit(batch).await {
            Ok(Some(position)) => {
                if let Some(durability) = &mut durability {
                    durability.submitted(position, highest);
                }
            }
            Ok(None) => {}
            Err(failed) => {
                // Nothing of the batch from the refused event on was applied: the T-Server resends it
                // from its last ack, which still comes for what was taken before it.
                let mut line = String::from("{\"error\":");
                crate::json::write_json_str(&mut line, &failed.to_string());
                line.push_str(",\"line\":0}\n");
                write_replies(&mut writer, line.as_bytes()).await?;
                refused = Some(failed);
                break;
            }
        }
    }
    // Half-closed by the client, or shutting down: wait until the pipeline has taken everything read,
    // then write the last acknowledgement and close our side.
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while !stats.settled() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if let Some(durability) = &mut durability
        && let Some(last) = durability.last()
    {
        let left = deadline.saturating_duration_since(Instant::now());
        durability.progress.durable_within(last, left).await;
    }
    let last = ack_state(&stats, durability.as_mut());
    write_replies(&mut writer, ack_line(last).as_bytes()).await?;
    writer.shutdown().await?;
    match refused {
        Some(refused) => Err(std::io::Error::other(refused)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn the_auth_line_is_read_to_its_end_and_no_further_and_is_bounded() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client
            .write_all(b"{\"auth\":\"t\"}\n{\"event\":\"EventRinging\"}\n")
            .await
            .expect("write");
        let line = read_line(&mut server, MAX_AUTH_LINE).await.expect("read");
        assert_eq!(line.as_deref(), Some(&b"{\"auth\":\"t\"}"[..]));
        let mut next = [0u8; 7];
        server
            .read_exact(&mut next)
            .await
            .expect("the rest is left");
        assert_eq!(&next, b"{\"event");

        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client
            .write_all(&vec![b'x'; MAX_AUTH_LINE + 2])
            .await
            .expect("write");
        assert_eq!(
            read_line(&mut server, MAX_AUTH_LINE).await.expect("read"),
            None
        );
    }
}
