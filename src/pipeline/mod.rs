//! The live pipeline between ingest and fanout: one sequencer, reducer shards as tasks spread over the
//! runtime's cores, and a publisher that puts the shards' notifications back into ingest order.
//!
//! ```text
//! ingest connections ──submit──▶ sequencer (duplicates, times; one lock) ──jobs──▶ shard 0..N (reducers)
//!                                      │ tickets (which shard, in order)                │ results
//!                                      └──────────────────▶ publisher ◀─────────────────┘
//!                                                             │ seq, store, history, outboxes
//! ```
//!
//! A device's calls live in one shard (the spec's state is per device), so shards never talk to each other.
//! The publisher takes results in ticket order, so the notification stream is the one `fold` produces for
//! the same input, and per-call order always holds. Every channel is bounded: when reducers fall behind,
//! `submit` waits, the ingest connections stop reading their sockets, and TCP pushes back on T-Servers.

use crate::event::Event;
use crate::event::Micros;
use crate::fanout::{Fanout, Published};
use crate::reduce::{Admission, Disposition, Notifications, Reducer, ReducerConfig, Sequencer};
use crate::store::{CallKey, CallMeta};
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, mpsc};

/// Batches queued per shard (each up to one socket read of events).
const SHARD_QUEUE: usize = 64;

/// Per-connection counters, shared by the ingest connection, the sequencer and the shards.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Highest EventSequenceNumber taken by the reducer, plus one (0: none yet).
    highest_plus_one: AtomicU64,
    /// Lines taken that were not duplicates (including orphans and ignored events).
    pub applied: AtomicU64,
    /// Duplicates skipped.
    pub duplicates: AtomicU64,
    /// Lines rejected.
    pub rejected: AtomicU64,
    /// Events handed to the pipeline.
    pub submitted: AtomicU64,
    /// Events the pipeline has finished with.
    pub taken: AtomicU64,
}

impl ConnStats {
    /// The highest EventSequenceNumber taken so far.
    pub fn highest(&self) -> Option<u64> {
        self.highest_plus_one.load(Ordering::Acquire).checked_sub(1)
    }

    fn take(&self, sequence: Option<u64>, duplicate: bool) {
        if let Some(number) = sequence {
            self.highest_plus_one
                .fetch_max(number.saturating_add(1), Ordering::AcqRel);
        }
        if duplicate {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        } else {
            self.applied.fetch_add(1, Ordering::Relaxed);
        }
        self.taken.fetch_add(1, Ordering::Release);
    }

    /// Whether everything submitted has been taken.
    pub fn settled(&self) -> bool {
        self.taken.load(Ordering::Acquire) >= self.submitted.load(Ordering::Acquire)
    }
}

/// One decoded event on its way in.
pub struct Submission {
    /// The event.
    pub event: Event<'static>,
    /// Its connection's counters.
    pub stats: Arc<ConnStats>,
    /// When it was read.
    pub ingested: Instant,
}

struct Job {
    sequence: Option<u64>,
    event: Event<'static>,
    time: Option<Micros>,
    stats: Arc<ConnStats>,
    ingested: Instant,
}

/// What a shard made of one job, handed to the publisher.
struct JobResult {
    published: Vec<Published>,
    stats: Arc<ConnStats>,
    sequence: Option<u64>,
}

enum ShardInput {
    Jobs(Vec<Job>),
    Forget(Vec<u64>),
}

struct Admitter {
    sequencer: Sequencer,
    shards: Vec<mpsc::Sender<ShardInput>>,
    tickets: mpsc::Sender<PublisherInput>,
}

/// Settings of the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Reducer shards (threads).
    pub shards: usize,
    /// The reducers' settings.
    pub reducer: ReducerConfig,
    /// How long Released calls stay readable.
    pub released_linger: Duration,
}

/// The running pipeline.
pub struct Pipeline {
    admitter: Mutex<Admitter>,
    shard_count: usize,
}

fn wall_clock_micros() -> Micros {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| Micros::try_from(d.as_micros()).unwrap_or(Micros::MAX))
        .unwrap_or(0)
}

impl Pipeline {
    /// Starts the shards and the publisher. The returned handle finishes when every sender is dropped
    /// (after shutdown) and the publisher has published everything.
    pub fn start(
        config: PipelineConfig,
        fanout: Arc<Fanout>,
    ) -> (Arc<Pipeline>, tokio::task::JoinHandle<()>) {
        let shard_count = config.shards.clamp(1, 64);
        let (tickets_tx, tickets_rx) = mpsc::channel::<PublisherInput>(SHARD_QUEUE * shard_count);
        // Weak: the sweeper must not keep the channel open once the admitter closes it at shutdown.
        let sweeper_tx = tickets_tx.downgrade();
        let mut shard_txs = Vec::with_capacity(shard_count);
        let mut result_rxs = Vec::with_capacity(shard_count);
        for shard in 0..shard_count {
            let (tx, rx) = mpsc::channel::<ShardInput>(SHARD_QUEUE);
            let (result_tx, result_rx) = mpsc::channel::<Vec<JobResult>>(SHARD_QUEUE);
            // `max_calls` bounds the whole gateway: each shard holds its share.
            let reducer = Reducer::new(ReducerConfig {
                max_calls: config.reducer.max_calls.div_ceil(shard_count),
                ..config.reducer.clone()
            });
            // A task, not a thread: the runtime runs it right after the ingest task that fed it (on the
            // same core, no wake-up of a sleeping CPU), and spreads shards over the cores when busy.
            tokio::spawn(run_shard(shard as u16, reducer, rx, result_tx));
            shard_txs.push(tx);
            result_rxs.push(result_rx);
        }
        let forget_txs = shard_txs.clone();
        let pipeline = Arc::new(Pipeline {
            admitter: Mutex::new(Admitter {
                sequencer: Sequencer::default(),
                shards: shard_txs,
                tickets: tickets_tx,
            }),
            shard_count,
        });
        // Shards and the publisher are tasks, not threads: a hand-off between tasks usually runs on the
        // same core right away (tokio's LIFO slot), while waking a parked thread of a virtual machine costs
        // up to a millisecond per hop (measured: ingest-to-publish p99 fell from ~25 ms to under 10 ms).
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let linger = config.released_linger;
        tokio::spawn(async move {
            run_publisher(tickets_rx, result_rxs, forget_txs, fanout, linger).await;
            let _ = done_tx.send(());
        });
        let publisher = tokio::spawn(async move {
            let mut sweep = tokio::time::interval(Duration::from_millis(250));
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut done = done_rx;
            loop {
                tokio::select! {
                    _ = sweep.tick() => {
                        let Some(tx) = sweeper_tx.upgrade() else { break };
                        // A full queue means the publisher is busy and will sweep soon anyway.
                        let _ = tx.try_send(PublisherInput::Sweep);
                    }
                    _ = &mut done => break,
                }
            }
        });
        (pipeline, publisher)
    }

    /// Hands a connection's events to the pipeline, in order. Waits while the shards are full.
    pub async fn submit(&self, batch: Vec<Submission>) {
        if batch.is_empty() {
            return;
        }
        let arrival = wall_clock_micros();
        let mut admitter = self.admitter.lock().await;
        let mut jobs: Vec<Vec<Job>> = (0..self.shard_count).map(|_| Vec::new()).collect();
        let mut tickets = Vec::with_capacity(batch.len());
        for Submission {
            event,
            stats,
            ingested,
        } in batch
        {
            stats.submitted.fetch_add(1, Ordering::Release);
            let sequence = event.sequence;
            match admitter.sequencer.admit(&event, Some(arrival)) {
                Admission::Duplicate => {
                    metrics::counter!("callgate_events_total", "outcome" => "duplicate")
                        .increment(1);
                    stats.take(sequence, true);
                }
                Admission::TooManyServers => {
                    metrics::counter!("callgate_events_total", "outcome" => "ignored").increment(1);
                    stats.take(sequence, false);
                }
                Admission::Admitted { .. } if !event.kind.is_call_event() => {
                    if let Some(link) = match event.kind {
                        crate::event::EventKind::LinkConnected => Some(1.0),
                        crate::event::EventKind::LinkDisconnected => Some(0.0),
                        _ => None,
                    } {
                        metrics::gauge!("callgate_tserver_link_up", "server" => event.server.to_string()).set(link);
                    }
                    metrics::counter!("callgate_events_total", "outcome" => "applied").increment(1);
                    stats.take(sequence, false);
                }
                Admission::Admitted { time } => {
                    let shard = self.shard_of(&event);
                    tickets.push(shard as u16);
                    jobs[shard].push(Job {
                        sequence,
                        event,
                        time,
                        stats,
                        ingested,
                    });
                }
            }
        }
        for (shard, jobs) in jobs.into_iter().enumerate() {
            if !jobs.is_empty()
                && admitter.shards[shard]
                    .send(ShardInput::Jobs(jobs))
                    .await
                    .is_err()
            {
                tracing::error!("reducer shard {shard} has stopped");
            }
        }
        if !tickets.is_empty()
            && admitter
                .tickets
                .send(PublisherInput::Order(tickets))
                .await
                .is_err()
        {
            tracing::error!("publisher has stopped");
        }
    }

    fn shard_of(&self, event: &Event<'_>) -> usize {
        // A fixed hasher: the same device always lands on the same shard.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        event.server.hash(&mut hasher);
        event.this_dn().hash(&mut hasher);
        (hasher.finish() % self.shard_count as u64) as usize
    }

    /// Stops taking events: closes the channels so the shards and the publisher finish what they have.
    pub async fn close(&self) {
        let mut admitter = self.admitter.lock().await;
        admitter.shards.clear();
        let (closed, _) = mpsc::channel(1);
        admitter.tickets = closed;
    }

    /// Link state of every T-Server seen.
    pub async fn links(&self) -> Vec<(String, Option<bool>)> {
        let admitter = self.admitter.lock().await;
        admitter
            .sequencer
            .links()
            .map(|(name, up)| (name.to_owned(), up))
            .collect()
    }
}

async fn run_shard(
    shard: u16,
    mut reducer: Reducer,
    mut input: mpsc::Receiver<ShardInput>,
    results: mpsc::Sender<Vec<JobResult>>,
) {
    let mut notifications = Notifications::default();
    while let Some(message) = input.recv().await {
        let jobs = match message {
            ShardInput::Jobs(jobs) => jobs,
            ShardInput::Forget(numbers) => {
                for number in numbers {
                    reducer.remove(number);
                }
                continue;
            }
        };
        let mut batch = Vec::with_capacity(jobs.len());
        for job in jobs {
            let disposition = reducer.apply_admitted(job.event, job.time, &mut notifications);
            let outcome = match disposition {
                Disposition::Applied => "applied",
                Disposition::Duplicate => "duplicate",
                Disposition::Orphan => "orphan",
                Disposition::Ignored(_) => "ignored",
            };
            metrics::counter!("callgate_events_total", "outcome" => outcome).increment(1);
            let mut published = Vec::with_capacity(notifications.len());
            for notification in notifications.iter() {
                let Some((call, device)) = reducer.call(notification.resource) else {
                    continue;
                };
                published.push(Published {
                    meta: Arc::new(CallMeta {
                        key: CallKey {
                            shard,
                            number: notification.resource,
                        },
                        dn: Arc::clone(&device.dn),
                        device_id: Arc::clone(&device.device_id),
                        call_id: Arc::clone(&call.id),
                        conn_id: call.conn_id,
                        state: call.state,
                    }),
                    members: notification.members.to_owned(),
                    call: notification.call_in_members.clone(),
                    ingested: job.ingested,
                });
            }
            notifications.clear();
            batch.push(JobResult {
                published,
                stats: job.stats,
                sequence: job.sequence,
            });
        }
        if results.send(batch).await.is_err() {
            return;
        }
    }
}

/// What the publisher thread receives.
enum PublisherInput {
    /// The shards of the next events, in ingest order.
    Order(Vec<u16>),
    /// Time to forget calls whose linger is over.
    Sweep,
}

async fn run_publisher(
    mut tickets: mpsc::Receiver<PublisherInput>,
    mut results: Vec<mpsc::Receiver<Vec<JobResult>>>,
    shards: Vec<mpsc::Sender<ShardInput>>,
    fanout: Arc<Fanout>,
    linger: Duration,
) {
    let mut pending: Vec<VecDeque<JobResult>> = results.iter().map(|_| VecDeque::new()).collect();
    let mut lingering: VecDeque<(Instant, CallKey)> = VecDeque::new();
    while let Some(input) = tickets.recv().await {
        let order = match input {
            PublisherInput::Order(order) => order,
            PublisherInput::Sweep => {
                forget_expired(&mut lingering, &fanout, &shards).await;
                continue;
            }
        };
        let mut batch = Vec::new();
        let mut taken = Vec::with_capacity(order.len());
        for shard in order {
            let shard = shard as usize;
            while pending[shard].is_empty() {
                match results[shard].recv().await {
                    Some(result) => pending[shard].extend(result),
                    None => return,
                }
            }
            if let Some(result) = pending[shard].pop_front() {
                batch.extend(result.published);
                taken.push((result.stats, result.sequence));
            }
        }
        let released = fanout.publish(batch);
        // Acknowledged only once published: an acknowledged event is visible to REST and subscribers.
        for (stats, sequence) in taken {
            stats.take(sequence, false);
        }
        let deadline = Instant::now() + linger;
        lingering.extend(released.into_iter().map(|key| (deadline, key)));
    }
}

async fn forget_expired(
    lingering: &mut VecDeque<(Instant, CallKey)>,
    fanout: &Fanout,
    shards: &[mpsc::Sender<ShardInput>],
) {
    let now = Instant::now();
    let mut expired = Vec::new();
    while lingering
        .front()
        .is_some_and(|(deadline, _)| *deadline <= now)
    {
        if let Some((_, key)) = lingering.pop_front() {
            expired.push(key);
        }
    }
    if expired.is_empty() {
        return;
    }
    fanout.forget(&expired);
    let mut by_shard: Vec<Vec<u64>> = shards.iter().map(|_| Vec::new()).collect();
    for key in &expired {
        if let Some(numbers) = by_shard.get_mut(key.shard as usize) {
            numbers.push(key.number);
        }
    }
    for (shard, numbers) in by_shard.into_iter().enumerate() {
        if !numbers.is_empty() {
            let _ = shards[shard].send(ShardInput::Forget(numbers)).await;
        }
    }
}
