//! The live pipeline between ingest and the stream: one sequencer, reducer shards as tasks spread over the
//! runtime's cores, and a publisher that puts the shards' notifications back into ingest order.
//!
//! ```text
//! ingest connections ──submit──▶ admitter (sequencer; one lock) ──jobs, ticks──▶ shard 0..N (reducers)
//!  sweeper ──tick──▶                  │ tickets (which shard, in order)                 │ outputs
//!                                     └───────────────────▶ publisher ◀─────────────────┘
//!                                                              │ seq, store, history, outboxes
//! ```
//!
//! A device's calls live in one shard (the spec's state is per device), so shards never talk to each other.
//! The publisher takes outputs in ticket order, so the notification stream is the one `fold` produces for
//! the same input, and per-call order always holds. Every channel is bounded: when reducers fall behind,
//! `submit` waits, the ingest connections stop reading their sockets, and TCP pushes back on T-Servers.
//!
//! Messages flow one way only: admitter → shards → publisher, and admitter → publisher. Nothing downstream
//! ever waits on something upstream, so no cycle of full queues can form. (An earlier design had the
//! publisher send "forget these calls" back to the shards; with a shard's queue full and the shard waiting
//! for room in its output queue, which only the publisher drains, both waited forever.) Time reaches the
//! shards the same way events do: the sweeper submits a tick through the admitter, and each shard answers
//! it with the calls it released as stale and the lingering calls it forgot, in stream order.

pub mod needs;

use crate::event::{Event, EventKind, Micros};
use crate::export::{Fact, Note, Tapped};
use crate::journal::live::{Failed, Journal, Progress};
use crate::journal::{Position, Record};
use crate::reduce::{
    Admission, CallState, Disposition, IgnoreReason, NotificationType, Notifications, Reducer,
    ReducerConfig, Sequencer, Topic,
};
use crate::store::{CallKey, CallMeta, DeviceMeta, Meta, QueueMeta};
use crate::stream::{Published, Stream};
use crate::supervise::Supervisor;
use bytes::Bytes;
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, mpsc, oneshot};

/// Messages queued per shard and per shard's output (each up to one socket read of events).
pub const SHARD_QUEUE: usize = 64;
/// How often the shards are told the time (linger and staleness are checked then).
pub const TICK_EVERY: Duration = Duration::from_millis(250);
/// How often a shard looks for stale calls (a scan of its calls).
const STALE_SCAN_EVERY: Duration = Duration::from_secs(1);
/// At most one log line per shard this often about events refused at `--max-calls`.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Per-connection counters, shared by the ingest connection, the sequencer and the shards.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// The connection's number in this run of the gateway (from 1; 0 for the gateway's own sources).
    pub connection: u64,
    /// Highest EventSequenceNumber taken by the reducer, plus one (0: none yet).
    highest_plus_one: AtomicU64,
    /// Lines taken that were not duplicates (including orphans and ignored events).
    pub applied: AtomicU64,
    /// Duplicates skipped.
    pub duplicates: AtomicU64,
    /// Lines rejected.
    pub rejected: AtomicU64,
    /// Events refused because the gateway holds `--max-calls` calls (each would have created one).
    pub dropped: AtomicU64,
    /// Events handed to the pipeline.
    pub submitted: AtomicU64,
    /// Events the pipeline has finished with.
    pub taken: AtomicU64,
}

/// What became of an event the pipeline has finished with, as the ingest acknowledgement counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taken {
    Applied,
    Duplicate,
    Dropped,
}

impl ConnStats {
    /// The counters of connection number `connection`.
    pub fn new(connection: u64) -> Self {
        Self {
            connection,
            ..Self::default()
        }
    }

    /// The highest EventSequenceNumber taken so far.
    pub fn highest(&self) -> Option<u64> {
        self.highest_plus_one.load(Ordering::Acquire).checked_sub(1)
    }

    fn take(&self, sequence: Option<u64>, taken: Taken) {
        if let Some(number) = sequence {
            self.highest_plus_one
                .fetch_max(number.saturating_add(1), Ordering::AcqRel);
        }
        let counter = match taken {
            Taken::Applied => &self.applied,
            Taken::Duplicate => &self.duplicates,
            Taken::Dropped => &self.dropped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.taken.fetch_add(1, Ordering::Release);
    }

    /// Whether everything submitted has been taken.
    pub fn settled(&self) -> bool {
        self.taken.load(Ordering::Acquire) >= self.submitted.load(Ordering::Acquire)
    }
}

/// One decoded event on its way in.
pub struct Submission {
    /// The event (shared: an `Event` is ~400 bytes and a submission is moved several times on its way,
    /// and an analytics tap takes the decoded event too rather than decode the line again).
    pub event: Arc<Event<'static>>,
    /// The line it was decoded from, as received: what the journal keeps.
    pub line: Bytes,
    /// Its connection's counters.
    pub stats: Arc<ConnStats>,
    /// When it was read.
    pub ingested: Instant,
    /// When it arrived, when that is already known (a replay of the journal); otherwise the gateway's
    /// wall clock at admission.
    pub arrival: Option<Micros>,
    /// Its journal position, when it is replayed from the journal (0: none yet; an attached journal gives
    /// one at admission).
    pub position: Position,
}

struct Job {
    /// Its journal position (0: not journaled).
    position: Position,
    sequence: Option<u64>,
    event: Arc<Event<'static>>,
    time: Option<Micros>,
    arrived: Micros,
    stats: Arc<ConnStats>,
    ingested: Instant,
}

/// The shards whose next outputs the publisher takes, in stream order; and whom to tell once they are
/// published.
struct Ticket {
    order: Vec<u16>,
    done: Option<oneshot::Sender<()>>,
    /// With an analytics tap: every fact of the ticket in order, and whether it has an output in
    /// `order` (an event that went to a shard; a tick has one from every shard).
    facts: Vec<(Fact, bool)>,
}

/// The gateway's clock, as the sweeper read it.
#[derive(Debug, Clone, Copy)]
struct Tick {
    now: Instant,
    wall: Micros,
    /// Its journal position (0: not journaled).
    position: Position,
}

enum ShardInput {
    Jobs(Vec<Job>),
    Tick(Tick),
    /// Write out these resources' current notifications (after a replay).
    Write(Vec<CallKey>, oneshot::Sender<Vec<Written>>),
}

/// A resource's notification written from its current state: its key, members and document's place.
pub type Written = (CallKey, String, std::ops::Range<usize>);

/// How many times `--history` entries at the end of a replayed journal have their notifications written
/// out: an event makes one or two notifications in a busy center, so twice the history's length in
/// entries fills the history with room to spare. Where it does not (a journal of mostly ticks or ignored
/// events), the history after the restart holds fewer than `--history` and resuming from before it gets
/// a snapshot (docs/journal.md).
const WRITTEN_TAIL: u64 = 2;

/// What a shard made of one job or tick, handed to the publisher in ticket order.
struct ShardOutput {
    published: Vec<Published>,
    /// Released calls whose linger is over: the store drops them.
    forgotten: Vec<CallKey>,
    /// The job's connection, EventSequenceNumber and outcome (none for a tick).
    taken: Option<(Arc<ConnStats>, Option<u64>, Taken)>,
}

struct Admitter {
    sequencer: Sequencer,
    shards: Vec<mpsc::Sender<ShardInput>>,
    tickets: mpsc::Sender<Ticket>,
    /// With `--journal`: every admitted event and tick, written before the shards see it.
    journal: Option<Journal>,
    /// Whether the publisher hands facts to an analytics tap.
    tapped: bool,
    /// Whether the tap takes the lines too.
    tap_lines: bool,
}

/// Settings of the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Reducer shards (tasks).
    pub shards: usize,
    /// The reducers' settings.
    pub reducer: ReducerConfig,
    /// How long Released calls stay readable.
    pub released_linger: Duration,
    /// A live call that has had no event for this long is released (`None`: never).
    pub stale_call_after: Option<Duration>,
    /// Messages queued per shard and per shard's output.
    pub queue_depth: usize,
    /// Where the publisher hands every fact and its notifications, in stream order (analytics).
    pub tap: Option<Tap>,
}

/// The analytics tap: where the publisher hands every fact, and whether with its notifications (their
/// text is copied for it).
#[derive(Debug, Clone)]
pub struct Tap {
    /// The stage's queue.
    pub sender: mpsc::Sender<Vec<Tapped>>,
    /// Whether the stage records notifications.
    pub notes: bool,
    /// Whether the stage needs the events' lines as received (it renders event records); it always
    /// gets the decoded events.
    pub lines: bool,
}

/// What [`Pipeline::replay`] went through.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Event entries.
    pub events: u64,
    /// Tick entries.
    pub ticks: u64,
    /// Event entries that no longer decode (skipped).
    pub undecodable: u64,
    /// The last position read (0: none).
    pub last: Position,
}

/// Recorded input going back through the pipeline before the gateway serves (from the journal, or from
/// JetStream): events with their recorded arrival and ticks with their recorded clock, in batches.
pub struct Replay<'p> {
    pipeline: &'p Pipeline,
    stats: Arc<ConnStats>,
    batch: Vec<Submission>,
    replayed: Replayed,
    started: Instant,
}

impl<'p> Replay<'p> {
    /// Events go back in batches of this many.
    const BATCH: usize = 512;

    /// A replay into `pipeline` (no journal attached yet, no clock running).
    pub fn new(pipeline: &'p Pipeline) -> Self {
        Self {
            pipeline,
            stats: Arc::new(ConnStats::default()),
            batch: Vec::with_capacity(Self::BATCH),
            replayed: Replayed::default(),
            started: Instant::now(),
        }
    }

    /// An event line that arrived at `arrival`, at journal position `position` (0: not from the journal).
    pub async fn event(&mut self, position: Position, arrival: Micros, line: &[u8]) {
        self.replayed.events += 1;
        match crate::event::decode_line(line) {
            Ok(crate::event::Decoded::Event(event)) => self.batch.push(Submission {
                event: Arc::new(event.into_owned()),
                // Only an analytics tap needs the line again.
                line: if self.pipeline.tap_lines {
                    Bytes::copy_from_slice(line)
                } else {
                    Bytes::new()
                },
                stats: Arc::clone(&self.stats),
                // Read from the journal, not from a socket: nothing measures its way to the stream.
                ingested: self.started,
                arrival: Some(arrival),
                position,
            }),
            // Recorded lines are events this gateway decoded once: one that no longer decodes (a newer
            // decoder, or damage a checksum missed) is skipped, and counted.
            _ => self.replayed.undecodable += 1,
        }
        if self.batch.len() >= Self::BATCH {
            self.flush().await;
        }
    }

    /// The gateway's clock read `wall`, recorded at `position` (0: none).
    pub async fn tick(&mut self, position: Position, wall: Micros) {
        self.replayed.ticks += 1;
        self.flush().await;
        self.pipeline
            .tick(Tick {
                now: Instant::now(),
                wall,
                position,
            })
            .await;
    }

    /// Hands on the events gathered so far (a follower at the end of what is written).
    pub async fn flush(&mut self) {
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(Self::BATCH));
        // Nothing is attached that could refuse a replayed batch.
        self.pipeline.submit(batch).await.ok();
    }

    /// Waits until everything replayed is published; what went back.
    pub async fn finish(mut self) -> Replayed {
        self.flush().await;
        while !self.stats.settled() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.replayed
    }
}

/// The running pipeline.
pub struct Pipeline {
    admitter: Mutex<Admitter>,
    shard_count: usize,
    /// Each shard's oldest needed journal position (see `Shard::oldest_needed`).
    oldest_needed: Vec<Arc<AtomicU64>>,
    outcomes: Arc<Outcomes>,
    /// With `--journal`: how far it is durable, for the ingest acks.
    progress: std::sync::OnceLock<Progress>,
    /// Whether an analytics tap takes the events' lines.
    tap_lines: bool,
    /// Whether an analytics tap takes every notification's text (a replay must then render them all).
    tap_notes: bool,
    /// Journal positions below this are replayed without writing their notifications out (0: every one
    /// is written; see [`Pipeline::replay`]). Shared with the shards.
    write_from: Arc<AtomicU64>,
    /// The stream the publisher publishes into.
    stream: Arc<Stream>,
}

/// A duration in microseconds, saturating.
fn micros(duration: Duration) -> Micros {
    Micros::try_from(duration.as_micros()).unwrap_or(Micros::MAX)
}

/// The wall clock in µs since the Unix epoch (0 before it).
pub fn wall_clock_micros() -> Micros {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| Micros::try_from(d.as_micros()).unwrap_or(Micros::MAX))
        .unwrap_or(0)
}

impl Pipeline {
    /// Starts the shards, the publisher and the sweeper under `supervisor`. The returned receiver
    /// completes when the publisher has published everything, after [`Pipeline::close`].
    pub fn start(
        config: PipelineConfig,
        stream: Arc<Stream>,
        supervisor: &Supervisor,
    ) -> (Arc<Pipeline>, oneshot::Receiver<()>) {
        let shard_count = config.shards.clamp(1, 64);
        let depth = config.queue_depth.max(1);
        let (tickets_tx, tickets_rx) = mpsc::channel::<Ticket>(depth * shard_count);
        let tapped = config.tap.is_some();
        let tap_lines = config.tap.as_ref().is_some_and(|tap| tap.lines);
        let tap_notes = config.tap.as_ref().is_some_and(|tap| tap.notes);
        let write_from = Arc::new(AtomicU64::new(0));
        let mut shard_txs = Vec::with_capacity(shard_count);
        let mut output_rxs = Vec::with_capacity(shard_count);
        let mut oldest_needed = Vec::with_capacity(shard_count);
        let outcomes = Arc::new(Outcomes::new());
        for id in 0..shard_count {
            let (tx, rx) = mpsc::channel::<ShardInput>(depth);
            let (output_tx, output_rx) = mpsc::channel::<Vec<ShardOutput>>(depth);
            // `max_calls` bounds the whole gateway: each shard holds its share.
            let reducer = Reducer::new(ReducerConfig {
                max_calls: config.reducer.max_calls.div_ceil(shard_count),
                ..config.reducer.clone()
            });
            let needed = Arc::new(AtomicU64::new(0));
            oldest_needed.push(Arc::clone(&needed));
            let mut shard = Shard::new(id as u16, reducer, &config, needed, Arc::clone(&outcomes));
            shard.write_from = Arc::clone(&write_from);
            // A task, not a thread: the runtime runs it right after the ingest task that fed it (on the
            // same core, no wake-up of a sleeping CPU), and spreads shards over the cores when busy
            // (measured: ingest-to-publish p99 fell from ~25 ms with threads to under 10 ms).
            supervisor.spawn(format!("reducer shard {id}"), shard.run(rx, output_tx));
            shard_txs.push(tx);
            output_rxs.push(output_rx);
        }
        let pipeline = Arc::new(Pipeline {
            admitter: Mutex::new(Admitter {
                sequencer: Sequencer::default(),
                shards: shard_txs,
                tickets: tickets_tx,
                journal: None,
                tapped,
                tap_lines,
            }),
            shard_count,
            oldest_needed,
            outcomes,
            progress: std::sync::OnceLock::new(),
            tap_lines,
            tap_notes,
            write_from,
            stream: Arc::clone(&stream),
        });
        let (done_tx, done_rx) = oneshot::channel();
        let tap = config.tap;
        supervisor.spawn("publisher", async move {
            run_publisher(tickets_rx, output_rxs, stream, tap, shard_count).await;
            let _ = done_tx.send(());
        });
        (pipeline, done_rx)
    }

    /// Starts telling the shards the time (after a replay of the journal: a tick read live in the middle
    /// of a replay would change what the replay makes).
    pub fn start_clock(self: &Arc<Self>, supervisor: &Supervisor) {
        supervisor.spawn("sweeper", Arc::clone(self).sweep());
    }

    /// Journals every admitted event and tick from now on (after a replay, before any ingest).
    pub async fn attach_journal(&self, journal: Journal, progress: Progress) {
        self.admitter.lock().await.journal = Some(journal);
        let _ = self.progress.set(progress);
    }

    /// The oldest journal position a live call or a device not in its default state began at, or past
    /// the last event the shards took when none does (`None`: no journaled event taken yet). Journal
    /// retention keeps every segment from it on.
    pub fn oldest_needed(&self) -> Option<Position> {
        let shards: Vec<Position> = self
            .oldest_needed
            .iter()
            .map(|needed| needed.load(Ordering::Acquire))
            .collect();
        // A shard that took no journaled job yet holds nothing, but another may have taken one; all
        // of them silent means nothing is known.
        shards.iter().copied().filter(|&p| p > 0).min()
    }

    /// How far the journal is durable (`None` without one).
    pub fn progress(&self) -> Option<Progress> {
        self.progress.get().cloned()
    }

    /// Tells the shards the time every [`TICK_EVERY`] until the pipeline is closed.
    async fn sweep(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(TICK_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let tick = Tick {
                now: Instant::now(),
                wall: wall_clock_micros(),
                position: 0,
            };
            if !self.tick(tick).await {
                return;
            }
        }
    }

    /// Tells the shards the time now, as the sweeper's next tick would, and waits until what it changed
    /// is published. After a replay, before the doors open: the calls whose linger ran out while the
    /// gateway was down are forgotten rather than rendered and indexed, only to go at the first tick.
    pub async fn catch_up(&self) {
        let (done, published) = oneshot::channel();
        let tick = Tick {
            now: Instant::now(),
            wall: wall_clock_micros(),
            position: 0,
        };
        if self.tick_then(tick, Some(done)).await {
            let _ = published.await;
        }
    }

    /// Queues `tick` to every shard, in stream order. False once the pipeline is closed.
    async fn tick(&self, tick: Tick) -> bool {
        self.tick_then(tick, None).await
    }

    /// [`Pipeline::tick`], then `done` once its changes are published.
    async fn tick_then(&self, mut tick: Tick, done: Option<oneshot::Sender<()>>) -> bool {
        let mut admitter = self.admitter.lock().await;
        if admitter.shards.is_empty() {
            return false;
        }
        if let Some(journal) = &mut admitter.journal {
            tick.position = journal.append(&Record::Tick { wall: tick.wall });
            if let Err(failed) = journal.write() {
                // Not journaled, so not applied: time-driven changes wait until the journal takes a tick.
                tracing::debug!("a tick skipped: {failed}");
                return true;
            }
        }
        for shard in &admitter.shards {
            if shard.send(ShardInput::Tick(tick)).await.is_err() {
                return false;
            }
        }
        let order = (0..self.shard_count as u16).collect();
        let facts = if admitter.tapped {
            let fact = Fact::Tick {
                position: tick.position,
                wall: tick.wall,
            };
            vec![(fact, true)]
        } else {
            Vec::new()
        };
        admitter
            .tickets
            .send(Ticket { order, done, facts })
            .await
            .is_ok()
    }

    /// Hands a connection's events to the pipeline, in order. Waits while the shards are full. With a
    /// journal, returns the journal's last position once the batch is in it: the connection acks the
    /// batch's events when that position is durable. Fails, taking nothing of the batch, when the journal
    /// cannot be written (the disk is full): the T-Server resends it from its last ack.
    pub async fn submit(&self, batch: Vec<Submission>) -> Result<Option<Position>, Failed> {
        if batch.is_empty() {
            return Ok(self.progress.get().map(Progress::written));
        }
        let now = wall_clock_micros();
        let mut admitter = self.admitter.lock().await;
        // Journaled before the sequencer sees the batch: a write that fails (a full disk) leaves nothing
        // changed, and the batch is refused whole. Duplicates are journaled too (a replay skips them
        // again; the export is at-least-once, analytics.md).
        let mut positions = Vec::new();
        let journaled = match &mut admitter.journal {
            Some(journal) => {
                positions.reserve(batch.len());
                for submission in &batch {
                    positions.push(journal.append(&Record::Event {
                        arrival: submission.arrival.unwrap_or(now),
                        connection: submission.stats.connection,
                        server: &submission.event.server,
                        line: &submission.line,
                    }));
                }
                if let Err(failed) = journal.write() {
                    metrics::counter!("callgate_journal_refused_total")
                        .increment(batch.len() as u64);
                    return Err(failed);
                }
                Some(journal.last())
            }
            None => None,
        };
        let mut jobs: Vec<Vec<Job>> = (0..self.shard_count).map(|_| Vec::new()).collect();
        let mut tickets = Vec::with_capacity(batch.len());
        let mut taken_now = Vec::new();
        let (tapped, tap_lines) = (admitter.tapped, admitter.tap_lines);
        let mut facts = Vec::with_capacity(if tapped { batch.len() } else { 0 });
        for (index, submission) in batch.into_iter().enumerate() {
            let Submission {
                event,
                stats,
                ingested,
                arrival,
                position,
                line,
            } = submission;
            let position = positions.get(index).copied().unwrap_or(position);
            let arrival = arrival.unwrap_or(now);
            let ticketed_before = tickets.len();
            stats.submitted.fetch_add(1, Ordering::Release);
            let sequence = event.sequence;
            let decoded = tapped.then(|| Arc::clone(&event));
            match admitter.sequencer.admit(&event, Some(arrival)) {
                Admission::Duplicate => {
                    taken_now.push((stats, sequence, Disposition::Duplicate));
                }
                Admission::TooManyServers => {
                    let ignored = Disposition::Ignored(IgnoreReason::TooManyServers);
                    taken_now.push((stats, sequence, ignored));
                }
                Admission::Admitted { .. }
                    if !event.kind.is_call_event() && !event.kind.is_device_event() =>
                {
                    record_link(&event);
                    taken_now.push((stats, sequence, Disposition::Applied));
                }
                Admission::Admitted { time } => {
                    let shard = self.shard_of(&event);
                    tickets.push(shard as u16);
                    jobs[shard].push(Job {
                        position,
                        sequence,
                        event,
                        time,
                        arrived: arrival,
                        stats,
                        ingested,
                    });
                }
            }
            if tapped {
                // A copy: the line shares its socket read's 64 KiB buffer, which a queued fact would
                // otherwise keep alive whole (2,048 of them while the stage is stalled).
                let line = if tap_lines {
                    Bytes::copy_from_slice(&line)
                } else {
                    Bytes::new()
                };
                let fact = Fact::Event {
                    position,
                    arrival,
                    line,
                    decoded,
                };
                facts.push((fact, tickets.len() > ticketed_before));
            }
        }
        for (stats, sequence, disposition) in taken_now {
            self.outcomes.count(disposition.label());
            let taken = match disposition {
                Disposition::Duplicate => Taken::Duplicate,
                _ => Taken::Applied,
            };
            stats.take(sequence, taken);
        }
        // Jobs before their tickets: the publisher never waits for a job that has not been queued.
        for (shard, jobs) in jobs.into_iter().enumerate() {
            if jobs.is_empty() {
                continue;
            }
            let Some(queue) = admitter.shards.get(shard) else {
                return Ok(journaled);
            };
            if queue.send(ShardInput::Jobs(jobs)).await.is_err() {
                tracing::error!("reducer shard {shard} has stopped");
            }
        }
        if !(tickets.is_empty() && facts.is_empty())
            && admitter
                .tickets
                .send(Ticket {
                    order: tickets,
                    done: None,
                    facts,
                })
                .await
                .is_err()
        {
            tracing::error!("publisher has stopped");
        }
        Ok(journaled)
    }

    /// Replays the journal in `dir` from position `from` up to `end` (the position after its last entry)
    /// through the pipeline (no journal attached yet, no clock running): events with their recorded
    /// arrival, ticks with their recorded clock, so the calls, notifications and `seq` are those the
    /// journal's run made. Returns how many entries were replayed once every event is published.
    ///
    /// While the stream defers, only the tail of the journal has its notifications written out: the
    /// last `2 × --history` entries, where the resume history's notifications come from. Before it, the
    /// reducers fold without writing text, and [`Pipeline::write_newest`] writes each resource's newest
    /// notification once at the end (docs/journal.md, "Recovery").
    pub async fn replay(
        &self,
        dir: &std::path::Path,
        from: Position,
        end: Position,
    ) -> Result<Replayed, crate::journal::JournalError> {
        let mut reader = crate::journal::Reader::open(dir, from)?;
        if self.stream.is_deferred() && !self.tap_notes {
            let tail = (self.stream.history_capacity() as u64).saturating_mul(WRITTEN_TAIL);
            self.write_from
                .store(end.saturating_sub(tail), Ordering::Release);
        }
        let mut replay = Replay::new(self);
        let mut last = 0;
        while let Some(position) = reader.advance()? {
            last = position;
            match reader.record() {
                Record::Event { arrival, line, .. } => {
                    replay.event(position, arrival, line).await;
                }
                Record::Tick { wall } => replay.tick(position, wall).await,
            }
        }
        let mut replayed = replay.finish().await;
        replayed.last = last;
        self.write_from.store(0, Ordering::Release);
        Ok(replayed)
    }

    /// Writes out the newest notification of every resource whose newest one a replay left unwritten
    /// ([`Pipeline::replay`]), from each shard's current state: a resource changes only with a
    /// notification, so that is the text it had (tested: the newest notification of every resource is
    /// its current render). Called once the replay and the catch-up tick are published, before
    /// [`Stream::settle`].
    pub async fn write_newest(&self) {
        let keys = self.stream.unwritten_newest();
        if keys.is_empty() {
            return;
        }
        let mut by_shard: Vec<Vec<CallKey>> = vec![Vec::new(); self.shard_count];
        for key in keys {
            if let Some(keys) = by_shard.get_mut(usize::from(key.owner())) {
                keys.push(key);
            }
        }
        // The senders are cloned so that no lock is held while a shard's queue has no room.
        let shards = self.admitter.lock().await.shards.clone();
        let mut replies = Vec::with_capacity(self.shard_count);
        for (shard, keys) in shards.iter().zip(by_shard) {
            if keys.is_empty() {
                continue;
            }
            let (reply, written) = oneshot::channel();
            if shard.send(ShardInput::Write(keys, reply)).await.is_ok() {
                replies.push(written);
            }
        }
        for written in replies {
            if let Ok(written) = written.await {
                self.stream.fill_newest(written);
            }
        }
    }

    fn shard_of(&self, event: &Event<'_>) -> usize {
        // A fixed hasher: the same device always lands on the same shard.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        event.server.hash(&mut hasher);
        event.this_dn().hash(&mut hasher);
        (hasher.finish() % self.shard_count as u64) as usize
    }

    /// Stops taking events: closes the channels so the shards and the publisher finish what they have, and
    /// the journal.
    pub async fn close(&self) {
        let mut admitter = self.admitter.lock().await;
        admitter.shards.clear();
        let (closed, _) = mpsc::channel(1);
        admitter.tickets = closed;
        // Dropping the journal's end lets its sync thread make a last sync and stop.
        admitter.journal = None;
    }
}

/// The `callgate_events_total` counters, looked up once (a lookup per event was a tenth of a shard's
/// work in a replay).
struct Outcomes([(&'static str, metrics::Counter); 5]);

impl Outcomes {
    fn new() -> Self {
        Self(
            ["applied", "duplicate", "orphan", "dropped", "ignored"].map(|outcome| {
                (
                    outcome,
                    metrics::counter!("callgate_events_total", "outcome" => outcome),
                )
            }),
        )
    }

    fn count(&self, outcome: &'static str) {
        match self.0.iter().find(|(label, _)| *label == outcome) {
            Some((_, counter)) => counter.increment(1),
            None => metrics::counter!("callgate_events_total", "outcome" => outcome).increment(1),
        }
    }
}

/// The link state of a T-Server, kept as a gauge (the one place it is recorded for /metrics).
fn record_link(event: &Event<'_>) {
    let up = match event.kind {
        EventKind::LinkConnected => 1.0,
        EventKind::LinkDisconnected => 0.0,
        _ => return,
    };
    metrics::gauge!("callgate_tserver_link_up", "server" => event.server.to_string()).set(up);
}

/// One reducer shard: its reducer, and the calls it has released and will forget.
struct Shard {
    id: u16,
    reducer: Reducer,
    notifications: Notifications,
    linger: Micros,
    /// Released calls and when their linger ends, in that order. One entry per Released call, so it holds
    /// at most the shard's `max_calls`. Times are the wall clock of the event or tick that released the
    /// call, never a read of the clock here: a journal replay must forget the same calls at the same place
    /// in the stream.
    lingering: VecDeque<(Micros, u64)>,
    stale_after: Option<Duration>,
    next_stale_scan: Option<Micros>,
    /// Events refused at `--max-calls` since the last log line about them.
    refused: u64,
    last_refusal_log: Option<Instant>,
    /// The journal positions its live calls and devices began at.
    needs: needs::Needs,
    /// The oldest of them, or the position after the last job when none (0: no journaled job yet), for
    /// journal retention.
    oldest_needed: Arc<AtomicU64>,
    outcomes: Arc<Outcomes>,
    /// Journal positions below this are replayed without notification text (the pipeline's).
    write_from: Arc<AtomicU64>,
}

impl Shard {
    fn new(
        id: u16,
        reducer: Reducer,
        config: &PipelineConfig,
        oldest_needed: Arc<AtomicU64>,
        outcomes: Arc<Outcomes>,
    ) -> Self {
        Self {
            needs: needs::Needs::default(),
            oldest_needed,
            outcomes,
            id,
            reducer,
            notifications: Notifications::default(),
            linger: micros(config.released_linger),
            lingering: VecDeque::new(),
            stale_after: config.stale_call_after,
            next_stale_scan: None,
            refused: 0,
            last_refusal_log: None,
            write_from: Arc::new(AtomicU64::new(0)),
        }
    }

    async fn run(
        mut self,
        mut input: mpsc::Receiver<ShardInput>,
        output: mpsc::Sender<Vec<ShardOutput>>,
    ) {
        while let Some(message) = input.recv().await {
            let outputs = match message {
                ShardInput::Jobs(jobs) => jobs.into_iter().map(|job| self.apply(job)).collect(),
                ShardInput::Tick(tick) => vec![self.tick(tick)],
                ShardInput::Write(keys, reply) => {
                    let _ = reply.send(self.write_current(&keys));
                    continue;
                }
            };
            if output.send(outputs).await.is_err() {
                return;
            }
        }
    }

    fn apply(&mut self, job: Job) -> ShardOutput {
        crate::supervise::fault_point("shard", job.event.this_dn.as_deref().unwrap_or(""));
        self.write_text_at(job.position);
        let disposition =
            self.reducer
                .apply_admitted(&job.event, job.time, job.arrived, &mut self.notifications);
        let taken = match disposition {
            Disposition::Duplicate => Taken::Duplicate,
            Disposition::Ignored(IgnoreReason::AtCapacity) => {
                self.refused_at_capacity();
                Taken::Dropped
            }
            Disposition::Applied | Disposition::Orphan | Disposition::Ignored(_) => Taken::Applied,
        };
        self.outcomes.count(disposition.label());
        let published = self.take_notifications(job.ingested, job.arrived);
        self.record_needs(&published, job.position);
        ShardOutput {
            published,
            forgotten: Vec::new(),
            taken: Some((job.stats, job.sequence, taken)),
        }
    }

    /// Holds the position of the event that began each live call and each device out of its default
    /// state; releases the rest. `position` is the journal position of the event that made `published`
    /// (0: not journaled, or a tick).
    fn record_needs(&mut self, published: &[Published], position: Position) {
        // Without a journal nothing is ever held: nothing to do.
        if position == 0 && (published.is_empty() || self.needs.is_empty()) {
            return;
        }
        for notification in published {
            let key = notification.meta.key();
            let held = match &notification.meta {
                Meta::Call(meta) => meta.is_live(),
                Meta::Device(meta) => meta.kept,
                // A queue holds no journal segment: its counters are today's, and holding from its
                // first event would keep the journal forever. A recovery counts from the oldest event
                // retention kept (docs/semantics.md, "Queues").
                Meta::Queue(_) => false,
            };
            if held {
                self.needs.hold(key, position);
            } else {
                self.needs.release(key);
            }
        }
        let oldest = match (self.needs.oldest(), position) {
            (Some(oldest), _) => oldest,
            (None, 0) => return,
            (None, position) => position.saturating_add(1),
        };
        self.oldest_needed.store(oldest, Ordering::Release);
    }

    fn refused_at_capacity(&mut self) {
        self.refused += 1;
        let now = Instant::now();
        if self
            .last_refusal_log
            .is_none_or(|last| now.duration_since(last) >= REFUSAL_LOG_EVERY)
        {
            tracing::warn!(
                shard = self.id,
                refused = self.refused,
                "at --max-calls: events that would create a call are dropped"
            );
            self.refused = 0;
            self.last_refusal_log = Some(now);
        }
    }

    /// Writes notification text for the job or tick at journal position `position` unless a replay
    /// leaves it unwritten (see [`Pipeline::replay`]).
    fn write_text_at(&mut self, position: Position) {
        let skip = position != 0 && position < self.write_from.load(Ordering::Relaxed);
        self.notifications.skip_text(skip);
    }

    /// The current notifications of the resources `keys` of this shard (those it no longer holds are
    /// left out).
    fn write_current(&self, keys: &[CallKey]) -> Vec<Written> {
        let mut scratch = Notifications::default();
        keys.iter()
            .filter_map(|&key| {
                self.render_current(key, &mut scratch)?;
                let notification = scratch.iter().next()?;
                Some((
                    key,
                    notification.members.to_owned(),
                    notification.call_in_members,
                ))
            })
            .collect()
    }

    /// Writes the notification the resource `key` of this shard would have now into `out` (cleared
    /// first), as its only one; `None` when the shard does not hold it.
    fn render_current(&self, key: CallKey, out: &mut Notifications) -> Option<()> {
        out.clear();
        let small = u32::try_from(key.number).ok();
        if key.shard == self.id {
            let view = self.reducer.view(key.number)?;
            out.push(NotificationType::StatusChange, key.number, &view, None);
        } else if let Some(number) = small
            && key == CallKey::device(self.id, number)
        {
            out.push_device(number, &self.reducer.device_doc(number)?);
        } else if let Some(number) = small
            && key == CallKey::queue(self.id, number)
        {
            self.reducer.push_queue(number, out);
        }
        (!out.is_empty()).then_some(())
    }

    /// Forgets calls whose linger is over and releases stale calls.
    fn tick(&mut self, tick: Tick) -> ShardOutput {
        self.write_text_at(tick.position);
        let mut forgotten = Vec::new();
        while let Some(&(deadline, number)) = self.lingering.front() {
            if deadline > tick.wall {
                break;
            }
            self.lingering.pop_front();
            if self.reducer.remove(number) {
                forgotten.push(CallKey {
                    shard: self.id,
                    number,
                });
            }
        }
        if let Some(stale_after) = self.stale_after
            && self.next_stale_scan.is_none_or(|at| at <= tick.wall)
        {
            self.next_stale_scan = Some(tick.wall.saturating_add(micros(STALE_SCAN_EVERY)));
            let silent_since = tick.wall.saturating_sub(micros(stale_after));
            let released =
                self.reducer
                    .release_stale(silent_since, tick.wall, &mut self.notifications);
            if released > 0 {
                metrics::counter!("callgate_calls_expired_total").increment(released as u64);
                tracing::warn!(
                    shard = self.id,
                    released,
                    "released calls that had no event for {stale_after:?}"
                );
            }
        }
        let published = self.take_notifications(tick.now, tick.wall);
        // Calls released as stale: no longer needed.
        self.record_needs(&published, 0);
        ShardOutput {
            published,
            forgotten,
            taken: None,
        }
    }

    /// The notifications of the last job or tick, ready to publish; starts the linger (from `wall`, the
    /// job's arrival or the tick's clock) of calls they release, and forgets devices back in their
    /// default state.
    fn take_notifications(&mut self, ingested: Instant, wall: Micros) -> Vec<Published> {
        let mut published = Vec::with_capacity(self.notifications.len());
        let mut idle_devices = Vec::new();
        for notification in self.notifications.iter() {
            let meta = match notification.topic {
                Topic::Calls => {
                    let Some((meta, released)) = call_meta(
                        &self.reducer,
                        self.id,
                        notification.resource,
                        notification.kind,
                    ) else {
                        continue;
                    };
                    if released {
                        self.lingering
                            .push_back((wall.saturating_add(self.linger), notification.resource));
                    }
                    meta
                }
                Topic::Devices => {
                    let Some(device) = u32::try_from(notification.resource)
                        .ok()
                        .and_then(|number| Some((number, self.reducer.device(number)?)))
                    else {
                        continue;
                    };
                    let (number, device) = device;
                    let kept = !device.state.is_default();
                    if !kept {
                        idle_devices.push(number);
                    }
                    Meta::Device(Arc::new(DeviceMeta {
                        key: CallKey::device(self.id, number),
                        dn: Arc::clone(&device.dn),
                        device_id: Arc::clone(&device.device_id),
                        kept,
                    }))
                }
                Topic::Queues => {
                    let Some((number, queue)) = u32::try_from(notification.resource)
                        .ok()
                        .and_then(|number| Some((number, self.reducer.queue(number)?)))
                    else {
                        continue;
                    };
                    Meta::Queue(Arc::new(QueueMeta {
                        key: CallKey::queue(self.id, number),
                        dn: Arc::clone(&queue.dn),
                        queue_id: Arc::clone(&queue.queue_id),
                    }))
                }
            };
            published.push(Published {
                meta,
                members: notification.members.to_owned(),
                call: notification.call_in_members.clone(),
                ingested,
            });
        }
        self.notifications.clear();
        for number in idle_devices {
            self.reducer.forget_idle_device(number);
        }
        published
    }
}

/// The metadata of a call notification of shard `shard`, and whether it releases the call.
fn call_meta(
    reducer: &Reducer,
    shard: u16,
    resource: u64,
    kind: NotificationType,
) -> Option<(Meta, bool)> {
    let (call, device) = reducer.call(resource)?;
    // A call turns Released once, by a status change; later notifications of it are not releases.
    let released = call.state == CallState::Released && kind == NotificationType::StatusChange;
    let meta = Meta::Call(Arc::new(CallMeta {
        key: CallKey {
            shard,
            number: resource,
        },
        dn: Arc::clone(&device.dn),
        device_id: Arc::clone(&device.device_id),
        call_id: Arc::clone(&call.id),
        conn_id: call.conn_id,
        state: call.state,
    }));
    Some((meta, released))
}

/// Publishes the shards' outputs in ticket order, then acknowledges their events; with a `tap`, hands
/// it every fact with the notifications it made, under their `seq`.
async fn run_publisher(
    mut tickets: mpsc::Receiver<Ticket>,
    mut outputs: Vec<mpsc::Receiver<Vec<ShardOutput>>>,
    stream: Arc<Stream>,
    tap: Option<Tap>,
    shard_count: usize,
) {
    let mut pending: Vec<VecDeque<ShardOutput>> = outputs.iter().map(|_| VecDeque::new()).collect();
    while let Some(Ticket { order, done, facts }) = tickets.recv().await {
        let mut results = Vec::with_capacity(order.len());
        for shard in order {
            let shard = shard as usize;
            let (Some(pending), Some(output)) = (pending.get_mut(shard), outputs.get_mut(shard))
            else {
                continue;
            };
            while pending.is_empty() {
                match output.recv().await {
                    Some(more) => pending.extend(more),
                    None => return,
                }
            }
            results.extend(pending.pop_front());
        }
        // Taken before the notifications move into the stream (their text is copied once, only here).
        let mut notes: Vec<Vec<Note>> = match &tap {
            Some(tap) if tap.notes => results
                .iter()
                .map(|result| notes_of(&result.published))
                .collect(),
            Some(_) | None => Vec::new(),
        };
        let mut batch = Vec::new();
        let mut forgotten = Vec::new();
        let mut taken = Vec::with_capacity(results.len());
        for result in results {
            batch.extend(result.published);
            forgotten.extend(result.forgotten);
            taken.extend(result.taken);
        }
        let published = batch.len() as u64;
        let last_seq = stream.publish(batch);
        // After the batch: a call's last notification precedes its forgetting in the stream.
        if !forgotten.is_empty() {
            stream.forget(&forgotten);
        }
        if let Some(tap) = &tap {
            let tapped = tapped(facts, &mut notes, last_seq - published, shard_count);
            if !tapped.is_empty() && tap.sender.send(tapped).await.is_err() {
                // The stage has ended (its write failed): it is supervised, and the gateway stops.
                tracing::debug!("the analytics stage is gone");
            }
        }
        // Acknowledged only once published: an acknowledged event is visible to REST and subscribers.
        for (stats, sequence, outcome) in taken {
            stats.take(sequence, outcome);
        }
        if let Some(done) = done {
            let _ = done.send(());
        }
    }
}

/// What the analytics tap needs of a shard output's notifications (their `seq` is set later).
fn notes_of(published: &[Published]) -> Vec<Note> {
    published
        .iter()
        .map(|notification| {
            let (topic, subject) = match &notification.meta {
                Meta::Call(meta) => (Topic::Calls, Arc::clone(&meta.call_id)),
                Meta::Device(meta) => (Topic::Devices, Arc::clone(&meta.device_id)),
                Meta::Queue(meta) => (Topic::Queues, Arc::clone(&meta.queue_id)),
            };
            Note {
                seq: 0,
                topic,
                subject,
                members: notification.members.clone(),
            }
        })
        .collect()
}

/// Pairs a ticket's facts with its outputs' notes in order, numbering the notes from `after + 1`: an
/// event that went to a shard has the next output, a tick one from every shard.
fn tapped(
    facts: Vec<(Fact, bool)>,
    notes: &mut [Vec<Note>],
    after: u64,
    shard_count: usize,
) -> Vec<Tapped> {
    let mut outputs = notes.iter_mut();
    let mut seq = after;
    let mut number = |mut taken: Vec<Note>| {
        for note in &mut taken {
            seq += 1;
            note.seq = seq;
        }
        taken
    };
    facts
        .into_iter()
        .map(|(fact, has_output)| {
            let outputs_of_fact = match (&fact, has_output) {
                (Fact::Tick { .. }, _) => shard_count,
                (Fact::Event { .. }, true) => 1,
                (Fact::Event { .. }, false) => 0,
            };
            let mut taken = Vec::new();
            for output in outputs.by_ref().take(outputs_of_fact) {
                taken.append(output);
            }
            Tapped {
                fact,
                notes: number(taken),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::OutboxLimits;
    use crate::event::{Decoded, decode_line};

    fn submission(line: &str, stats: &Arc<ConnStats>) -> Submission {
        let Ok(Decoded::Event(event)) = decode_line(line.as_bytes()) else {
            panic!("not an event: {line}");
        };
        Submission {
            event: Arc::new(event.into_owned()),
            line: Bytes::copy_from_slice(line.as_bytes()),
            stats: Arc::clone(stats),
            ingested: Instant::now(),
            arrival: None,
            position: 0,
        }
    }

    fn event(kind: &str, conn: u64, dn: u64, stats: &Arc<ConnStats>) -> Submission {
        submission(
            &format!(r#"{{"event":"{kind}","ConnID":"{conn:x}","ThisDN":"{dn}"}}"#),
            stats,
        )
    }

    struct Running {
        stream: Arc<Stream>,
        pipeline: Arc<Pipeline>,
        published_all: oneshot::Receiver<()>,
        supervisor: Supervisor,
    }

    fn start(config: PipelineConfig) -> Running {
        let stream = Arc::new(Stream::new("run", 100, OutboxLimits::default()));
        let supervisor = Supervisor::new();
        let (pipeline, published_all) = Pipeline::start(config, Arc::clone(&stream), &supervisor);
        pipeline.start_clock(&supervisor);
        Running {
            stream,
            pipeline,
            published_all,
            supervisor,
        }
    }

    fn config(shards: usize) -> PipelineConfig {
        PipelineConfig {
            shards,
            reducer: ReducerConfig::default(),
            released_linger: Duration::from_secs(30),
            stale_call_after: None,
            queue_depth: SHARD_QUEUE,
            tap: None,
        }
    }

    async fn settle(stats: &ConnStats) {
        let settled = tokio::time::timeout(Duration::from_secs(20), async {
            while !stats.settled() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(
            settled.is_ok(),
            "the pipeline stalled: {} of {} events taken",
            stats.taken.load(Ordering::Acquire),
            stats.submitted.load(Ordering::Acquire)
        );
    }

    async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sustained ingest of calls whose linger ends while the queues are full: every tick must forget them
    /// without waiting on a shard that waits on the publisher. The depth-1 queues make full queues the
    /// common case rather than a matter of luck (the design before this one stalled here within a second).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lingering_calls_are_forgotten_under_sustained_ingest_without_a_stall() {
        let running = start(PipelineConfig {
            released_linger: Duration::ZERO,
            queue_depth: 1,
            ..config(2)
        });
        let stats = Arc::new(ConnStats::default());
        let started = Instant::now();
        let mut next = 1;
        while started.elapsed() < Duration::from_millis(1500) {
            let mut batch = Vec::new();
            for call in next..next + 4 {
                batch.push(event("EventRinging", call, 7000 + call % 50, &stats));
                batch.push(event("EventReleased", call, 7000 + call % 50, &stats));
            }
            running
                .pipeline
                .submit(batch)
                .await
                .expect("no journal to fail");
            next += 4;
        }
        settle(&stats).await;
        // Everything released is forgotten at the next ticks.
        wait_for("the store to empty", || running.stream.stats().calls == 0).await;
        running.supervisor.stop();
        running.pipeline.close().await;
        assert!(
            tokio::time::timeout(Duration::from_secs(10), running.published_all)
                .await
                .is_ok()
        );
        assert_eq!(running.supervisor.cause(), None);
    }

    #[tokio::test]
    async fn a_silent_call_is_released_as_its_device_would() {
        let running = start(PipelineConfig {
            stale_call_after: Some(Duration::from_millis(300)),
            ..config(1)
        });
        let stats = Arc::new(ConnStats::default());
        running
            .pipeline
            .submit(vec![
                event("EventRinging", 1, 7001, &stats),
                event("EventEstablished", 1, 7001, &stats),
            ])
            .await
            .expect("no journal to fail");
        settle(&stats).await;
        assert_eq!(running.stream.stats().live_calls, 1);
        wait_for("the stale call's release", || {
            running.stream.stats().live_calls == 0
        })
        .await;
        let view = running.stream.view();
        let calls: Vec<_> = view.iter_after(None).collect();
        assert_eq!(calls.len(), 1);
        let document: serde_json::Value =
            serde_json::from_slice(&calls[0].json().unwrap()).unwrap();
        assert_eq!(document["state"], "Released");
        assert_eq!(document["capabilities"], serde_json::json!([]));
    }

    #[tokio::test]
    async fn a_call_with_events_is_not_stale() {
        let running = start(PipelineConfig {
            stale_call_after: Some(Duration::from_millis(600)),
            ..config(1)
        });
        let stats = Arc::new(ConnStats::default());
        running
            .pipeline
            .submit(vec![event("EventRinging", 1, 7001, &stats)])
            .await
            .expect("no journal to fail");
        // Events every 200 ms for 1.5 s keep it live.
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            running
                .pipeline
                .submit(vec![event("EventAttachedDataChanged", 1, 7001, &stats)])
                .await
                .expect("no journal to fail");
            settle(&stats).await;
            assert_eq!(running.stream.stats().live_calls, 1);
        }
    }

    #[tokio::test]
    async fn events_beyond_max_calls_are_counted_as_dropped() {
        let running = start(PipelineConfig {
            reducer: ReducerConfig {
                max_calls: 2,
                ..ReducerConfig::default()
            },
            ..config(1)
        });
        let stats = Arc::new(ConnStats::default());
        let batch = (1..=5)
            .map(|call| event("EventRinging", call, 7000 + call, &stats))
            .collect();
        running
            .pipeline
            .submit(batch)
            .await
            .expect("no journal to fail");
        settle(&stats).await;
        assert_eq!(running.stream.stats().live_calls, 2);
        assert_eq!(stats.applied.load(Ordering::Relaxed), 2);
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 3);
    }

    /// Drives one shard through `lines` (arrival, line), with a tick every second of arrival time and a
    /// short linger, checking that the newest notification of every resource it still holds is what
    /// rendering that resource now gives. Returns how many resources were checked.
    fn newest_equals_current(lines: impl Iterator<Item = (Micros, String)>, label: &str) -> usize {
        use std::collections::HashMap;
        let mut config = config(1);
        config.released_linger = Duration::from_secs(5);
        config.stale_call_after = Some(Duration::from_secs(600));
        let mut shard = Shard::new(
            0,
            Reducer::new(ReducerConfig::default()),
            &config,
            Arc::new(AtomicU64::new(0)),
            Arc::new(Outcomes::new()),
        );
        let mut sequencer = Sequencer::default();
        let stats = Arc::new(ConnStats::default());
        let mut newest: HashMap<CallKey, String> = HashMap::new();
        let mut next_tick = 0;
        let mut checked = 0;
        let mut scratch = Notifications::default();
        let mut check = |shard: &Shard, newest: &HashMap<CallKey, String>, at: usize| {
            for (key, doc) in newest {
                if shard.render_current(*key, &mut scratch).is_some() {
                    checked += 1;
                    let current = scratch.iter().next().map(|n| n.call.to_owned());
                    assert_eq!(current.as_ref(), Some(doc), "{label}, line {at}, {key:?}");
                }
            }
        };
        let keep = |newest: &mut HashMap<CallKey, String>, output: ShardOutput| {
            for p in output.published {
                newest.insert(p.meta.key(), p.members[p.call.clone()].to_owned());
            }
            for key in output.forgotten {
                newest.remove(&key);
            }
        };
        for (index, (arrival, line)) in lines.enumerate() {
            let Ok(Decoded::Event(event)) = decode_line(line.as_bytes()) else {
                continue;
            };
            let event = Arc::new(event.into_owned());
            if arrival >= next_tick {
                next_tick = arrival + 1_000_000;
                let tick = Tick {
                    now: Instant::now(),
                    wall: arrival,
                    position: 0,
                };
                keep(&mut newest, shard.tick(tick));
            }
            let Admission::Admitted { time } = sequencer.admit(&event, Some(arrival)) else {
                continue;
            };
            if !event.kind.is_call_event() && !event.kind.is_device_event() {
                continue;
            }
            let job = Job {
                position: 0,
                sequence: event.sequence,
                event,
                time,
                arrived: arrival,
                stats: Arc::clone(&stats),
                ingested: Instant::now(),
            };
            keep(&mut newest, shard.apply(job));
            if index % 25 == 0 {
                check(&shard, &newest, index);
            }
        }
        check(&shard, &newest, usize::MAX);
        checked
    }

    /// What lets a replay render a resource's newest notification at its end instead of every one on the
    /// way (docs/journal.md, "Recovery"): no resource changes without a notification.
    #[test]
    fn the_newest_notification_of_every_resource_is_its_current_render() {
        use crate::ingest::sim::{SimConfig, Simulator};
        for seed in 1..=4u64 {
            let sim = Simulator::new(SimConfig {
                seed,
                agents: 30,
                queues: 3,
                supervisors: 2,
                calls_per_second: 0.5,
                max_calls: Some(400),
                talk_secs: 40.0,
                ..SimConfig::default()
            });
            let lines = sim.map(|event| (event.time, event.line));
            let checked = newest_equals_current(lines, &format!("simulator seed {seed}"));
            assert!(checked > 1_000, "seed {seed}: only {checked} checked");
        }
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proto-fixtures");
        let mut dirs: Vec<_> = std::fs::read_dir(&fixtures)
            .expect("proto-fixtures")
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.join("events.ndjson").exists())
            .collect();
        dirs.sort();
        assert!(dirs.len() >= 24, "{} fixtures", dirs.len());
        for dir in dirs {
            let text = std::fs::read_to_string(dir.join("events.ndjson")).expect("events");
            // A second a line: every tick in between may forget what lingered.
            let lines = text
                .lines()
                .enumerate()
                .map(|(index, line)| (index as Micros * 1_000_000, line.to_owned()));
            newest_equals_current(lines, &dir.display().to_string());
        }
    }
}
