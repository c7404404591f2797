//! Publishing accepted events to their T-Server's stream, in order, before the reducer sees them.
//!
//! Each T-Server's stream has one writer task (a [`Chain`]): the ingest connections and the demo hand it
//! batches and wait for its answer, so the stream's order is the order in which the events reach the
//! pipeline, even when two connections carry the same Server. A batch's publishes go out back to back,
//! each naming the one before it (`Nats-Expected-Last-Msg-Id`); the acks are then awaited in order. The
//! events whose acks came back, up to the first failure, go on to the pipeline; the rest are refused, and
//! the connection is closed so that the T-Server resends them from its last ack. A resend of an event
//! the stream holds is not published again (its number is at most the highest stored); a resend whose
//! publish was in doubt is recognized by the server from its message id.
//!
//! Every batch's arrival (`Cg-Arrival`) is stamped strictly later than the one before, across all
//! streams, and the batches reach the pipeline in the order of their stamps ([`ArrivalOrder`]): a
//! batch whose acks come back first waits for the ones stamped before it (at most a publish round
//! trip). So merging the streams by arrival, as a restart and `callgate export --nats` do, gives the
//! order the pipeline took, across T-Servers too, and the same notification `seq`s.
//!
//! A publish refused because the stream's last message is not the one this gateway wrote last means
//! another gateway writes the stream: the chain is fenced, and every later event of that Server is
//! refused until a restart reads the stream again (two writers would interleave and fork the record).

use super::{MessageId, Settings};
use crate::event::Micros;
use crate::ingest::intake::Refused;
use crate::journal::Position;
use crate::pipeline::{Pipeline, Submission};
use crate::reduce::RESTART_GAP;
use crate::supervise::Supervisor;
use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, mpsc, oneshot};

/// Batches queued for one T-Server's writer (each connection waits for its answer, so this bounds
/// only how many connections of one Server can wait at once before `submit` waits for room).
const CHAIN_QUEUE: usize = 16;

/// What the next publish to a stream expects to find last in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Last {
    /// The message with this id (`Nats-Expected-Last-Msg-Id`).
    Id(String),
    /// The stream's last sequence, when its last message is unknown or carries no id of ours (0: empty).
    Sequence(u64),
}

/// Where a T-Server's stream stands, as read at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    /// The id of its last event (default: none yet).
    pub position: MessageId,
    /// What the next publish expects.
    pub last: Last,
}

impl Default for Tail {
    fn default() -> Self {
        Self {
            position: MessageId::default(),
            last: Last::Sequence(0),
        }
    }
}

/// What to do with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Its number is not above the highest stored: the stream holds it (or, were it a gap, the reducer
    /// skips it as a duplicate anyway). Applied without a publish.
    Stored,
    /// Publish it with this id.
    Publish(MessageId),
}

/// The step for an event numbered `sequence` after `position` (the rules of call-resource.md,
/// "Duplicates and order": a number far below the highest is a T-Server restart, a new run).
fn step(position: &MessageId, sequence: Option<u64>) -> Step {
    match (sequence, position.number) {
        (Some(number), Some(highest)) if number <= highest && highest - number <= RESTART_GAP => {
            Step::Stored
        }
        (Some(number), Some(highest)) if number <= highest => Step::Publish(MessageId {
            run: position.run + 1,
            number: Some(number),
            unnumbered: 0,
        }),
        (Some(number), _) => Step::Publish(MessageId {
            run: position.run,
            number: Some(number),
            unnumbered: 0,
        }),
        (None, _) => Step::Publish(MessageId {
            unnumbered: position.unnumbered + 1,
            ..*position
        }),
    }
}

/// Arrival stamps, strictly growing across every stream, and the turn of each stamped batch to reach
/// the pipeline (the module's doc says why).
#[derive(Default)]
pub struct ArrivalOrder {
    stamps: Mutex<Stamps>,
    turn: Notify,
}

#[derive(Default)]
struct Stamps {
    last: Micros,
    /// Batches stamped that have not reached the pipeline (or been refused) yet.
    pending: BTreeSet<Micros>,
}

/// A batch's arrival stamp; dropped once the batch reached the pipeline or was refused.
pub struct Stamp {
    order: Arc<ArrivalOrder>,
    at: Micros,
}

impl ArrivalOrder {
    fn stamps(&self) -> std::sync::MutexGuard<'_, Stamps> {
        self.stamps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A stamp later than every one before it (the wall clock, or one µs past the last stamp).
    pub fn stamp(self: &Arc<Self>) -> Stamp {
        let mut stamps = self.stamps();
        let at = crate::pipeline::wall_clock_micros().max(stamps.last.saturating_add(1));
        stamps.last = at;
        stamps.pending.insert(at);
        Stamp {
            order: Arc::clone(self),
            at,
        }
    }
}

impl Stamp {
    /// The arrival it stamps (µs since the Unix epoch).
    pub fn at(&self) -> Micros {
        self.at
    }

    /// Waits until every batch stamped before this one has reached the pipeline or been refused.
    pub async fn turn(&self) {
        loop {
            let notified = self.order.turn.notified();
            tokio::pin!(notified);
            // Registered before looking, so a turn passed on in between is not missed.
            notified.as_mut().enable();
            if self.order.stamps().pending.first() == Some(&self.at) {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Stamp {
    fn drop(&mut self) {
        self.order.stamps().pending.remove(&self.at);
        self.order.turn.notify_waiters();
    }
}

struct Request {
    batch: Vec<Submission>,
    reply: oneshot::Sender<Result<Option<Position>, Refused>>,
}

/// The writers of every T-Server's stream.
pub struct Writer {
    context: jetstream::Context,
    settings: Settings,
    pipeline: Arc<Pipeline>,
    supervisor: Supervisor,
    chains: Mutex<Chains>,
    order: Arc<ArrivalOrder>,
}

#[derive(Default)]
struct Chains {
    running: HashMap<Box<str>, mpsc::Sender<Request>>,
    /// Tails read at start, taken by each Server's writer when it starts.
    tails: HashMap<Box<str>, Tail>,
    closed: bool,
}

impl Writer {
    /// Writers for the streams on `context`, which stand at `tails` (from [`super::recover`]); their
    /// tasks run under `supervisor` and hand published events to `pipeline`.
    pub fn new(
        context: jetstream::Context,
        settings: Settings,
        pipeline: Arc<Pipeline>,
        tails: HashMap<Box<str>, Tail>,
        supervisor: Supervisor,
    ) -> Self {
        Self {
            context,
            settings,
            pipeline,
            supervisor,
            chains: Mutex::new(Chains {
                tails,
                ..Chains::default()
            }),
            order: Arc::default(),
        }
    }

    /// Publishes `batch` and hands what was stored to the pipeline, Server by Server in order. Returns the
    /// journal position to wait for (with `--journal` as well), or why the batch (from the first refused
    /// event on) was not taken.
    pub async fn submit(&self, batch: Vec<Submission>) -> Result<Option<Position>, Refused> {
        let mut position = None;
        for part in by_server(batch) {
            let Some(server) = part.first().map(|s| s.event.server.clone()) else {
                continue;
            };
            let written = match self.chain(&server) {
                Some(chain) => {
                    let (reply, answer) = oneshot::channel();
                    let request = Request { batch: part, reply };
                    if chain.send(request).await.is_err() {
                        return Err(Refused::Stopping);
                    }
                    answer.await.map_err(|_| Refused::Stopping)?
                }
                // Past the Servers the reducer tracks: the pipeline ignores these events, so nothing
                // is kept of them here either.
                None => self.pipeline.submit(part).await.map_err(Refused::from),
            };
            position = position.max(written?);
        }
        Ok(position)
    }

    /// Stops the writers (they finish the batch in hand).
    pub fn close(&self) {
        let mut chains = self.chains.lock().unwrap_or_else(|p| p.into_inner());
        chains.closed = true;
        chains.running.clear();
    }

    /// The queue of `server`'s writer, started on its first event (`None` past the Servers tracked).
    fn chain(&self, server: &str) -> Option<mpsc::Sender<Request>> {
        let mut chains = self.chains.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(running) = chains.running.get(server) {
            return Some(running.clone());
        }
        if chains.closed || chains.running.len() >= crate::reduce::MAX_SERVERS {
            return None;
        }
        let tail = chains.tails.remove(server).unwrap_or_default();
        let (tx, rx) = mpsc::channel(CHAIN_QUEUE);
        chains.running.insert(server.into(), tx.clone());
        drop(chains);
        let chain = Chain {
            server: server.into(),
            stream: super::stream_name(server),
            subject: async_nats::Subject::from(super::subject(server)),
            stream_ready: false,
            tail,
            fenced: false,
            order: Arc::clone(&self.order),
        };
        self.supervisor.spawn(
            format!("JetStream writer of {server}"),
            chain.run(
                rx,
                self.context.clone(),
                self.settings.clone(),
                Arc::clone(&self.pipeline),
            ),
        );
        Some(tx)
    }
}

/// The settings callgate sets that `found` (an existing stream's) has otherwise than `wanted`, each as
/// `name found (flag wanted)`.
fn differences(
    found: &jetstream::stream::Config,
    wanted: &jetstream::stream::Config,
) -> Vec<String> {
    [
        (
            "replicas",
            found.num_replicas.to_string(),
            wanted.num_replicas.to_string(),
        ),
        (
            "max age",
            format!("{:?}", found.max_age),
            format!("{:?}", wanted.max_age),
        ),
        (
            "max bytes",
            found.max_bytes.to_string(),
            wanted.max_bytes.to_string(),
        ),
        (
            "duplicate window",
            format!("{:?}", found.duplicate_window),
            format!("{:?}", wanted.duplicate_window),
        ),
        (
            "discard",
            format!("{:?}", found.discard),
            format!("{:?}", wanted.discard),
        ),
    ]
    .into_iter()
    .filter(|(_, found, wanted)| found != wanted)
    .map(|(name, found, wanted)| format!("{name} {found} (flag {wanted})"))
    .collect()
}

/// Splits `batch` into runs of consecutive events of one Server, in order.
fn by_server(batch: Vec<Submission>) -> Vec<Vec<Submission>> {
    let mut parts: Vec<Vec<Submission>> = Vec::new();
    for submission in batch {
        match parts.last_mut() {
            Some(part) if part[0].event.server == submission.event.server => part.push(submission),
            _ => parts.push(vec![submission]),
        }
    }
    parts
}

/// One T-Server's stream writer.
struct Chain {
    server: Box<str>,
    stream: String,
    /// Made once: cloning it per publish shares its bytes.
    subject: async_nats::Subject,
    stream_ready: bool,
    tail: Tail,
    fenced: bool,
    order: Arc<ArrivalOrder>,
}

impl Chain {
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        context: jetstream::Context,
        settings: Settings,
        pipeline: Arc<Pipeline>,
    ) {
        while let Some(Request { batch, reply }) = requests.recv().await {
            let outcome = self.write(&context, &settings, &pipeline, batch).await;
            let _ = reply.send(outcome);
        }
    }

    fn refused(&self, reason: impl std::fmt::Display) -> Refused {
        Refused::Publish {
            stream: self.stream.clone(),
            reason: reason.to_string(),
        }
    }

    /// Creates the stream when it is missing (an existing stream keeps its settings: the operator's).
    async fn ready(
        &mut self,
        context: &jetstream::Context,
        settings: &Settings,
    ) -> Result<(), async_nats::jetstream::context::CreateStreamError> {
        if !self.stream_ready {
            let wanted = settings.stream_config(&self.server);
            let mut stream = context.get_or_create_stream(wanted.clone()).await?;
            if let Ok(info) = stream.info().await {
                let differences = differences(&info.config, &wanted);
                if !differences.is_empty() {
                    tracing::warn!(
                        stream = %self.stream,
                        "the stream's settings differ from this gateway's flags (the stream's are used): {}",
                        differences.join(", ")
                    );
                }
            }
            self.stream_ready = true;
        }
        Ok(())
    }

    async fn write(
        &mut self,
        context: &jetstream::Context,
        settings: &Settings,
        pipeline: &Pipeline,
        mut batch: Vec<Submission>,
    ) -> Result<Option<Position>, Refused> {
        if self.fenced {
            metrics::counter!("callgate_jetstream_refused_total").increment(batch.len() as u64);
            return Err(Refused::Fenced {
                stream: self.stream.clone(),
            });
        }
        if let Err(err) = self.ready(context, settings).await {
            metrics::counter!("callgate_jetstream_refused_total").increment(batch.len() as u64);
            return Err(self.refused(err));
        }
        let stamp = self.order.stamp();
        let arrival = stamp.at();
        // Sent back to back; `tails[i]` is where the stream stands once event i is stored.
        let mut acks = Vec::with_capacity(batch.len());
        let mut tails = Vec::with_capacity(batch.len());
        let mut tail = self.tail.clone();
        let mut failure = None;
        for submission in &mut batch {
            // The arrival the stream records is the one the pipeline uses: a replay repeats it.
            let arrival = *submission.arrival.get_or_insert(arrival);
            match step(&tail.position, submission.event.sequence) {
                Step::Stored => acks.push(None),
                Step::Publish(id) => {
                    let id_text = id.format(&self.server);
                    let message = PublishMessage::build()
                        .payload(submission.line.clone())
                        .message_id(&id_text)
                        .header(super::ARRIVAL_HEADER, arrival.to_string().as_str());
                    let message = match &tail.last {
                        Last::Id(last) => message.expected_last_message_id(last),
                        Last::Sequence(sequence) => message.expected_last_sequence(*sequence),
                    };
                    match context.send_publish(self.subject.clone(), message).await {
                        Ok(ack) => acks.push(Some(ack)),
                        Err(err) => {
                            failure = Some(err);
                            break;
                        }
                    }
                    tail = Tail {
                        position: id,
                        last: Last::Id(id_text),
                    };
                }
            }
            tails.push(tail.clone());
        }
        let mut stored = 0;
        for (ack, tail) in acks.into_iter().zip(tails) {
            if let Some(ack) = ack
                && let Err(err) = ack.await
            {
                failure = Some(err);
                break;
            }
            self.tail = tail;
            stored += 1;
        }
        let refused = batch.len() - stored;
        batch.truncate(stored);
        let waiting = std::time::Instant::now();
        stamp.turn().await;
        metrics::histogram!("callgate_jetstream_turn_wait_seconds")
            .record(waiting.elapsed().as_secs_f64());
        let position = pipeline.submit(batch).await?;
        drop(stamp);
        match failure {
            None => Ok(position),
            Some(err) => {
                metrics::counter!("callgate_jetstream_refused_total").increment(refused as u64);
                let wrong_last = matches!(
                    err.kind(),
                    PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence
                );
                if wrong_last {
                    self.fenced = true;
                    tracing::error!(
                        stream = %self.stream,
                        "another gateway writes this stream: its events are refused here until a restart"
                    );
                    return Err(Refused::Fenced {
                        stream: self.stream.clone(),
                    });
                }
                tracing::warn!(stream = %self.stream, "publish failed: {err}");
                Err(self.refused(err))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stamped_batches_take_their_turns_in_the_order_of_their_stamps() {
        let order = Arc::new(ArrivalOrder::default());
        let first = order.stamp();
        let second = order.stamp();
        let third = order.stamp();
        assert!(first.at() < second.at() && second.at() < third.at());
        // The second's acks came back first: it waits for the first.
        let waiting = tokio::spawn(async move {
            second.turn().await;
            second.at()
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(first);
        let second_at = waiting.await.expect("the second's turn");
        // A refused batch (dropped without its turn) holds nobody up.
        third.turn().await;
        assert!(second_at < third.at());
    }

    fn at(run: u64, number: Option<u64>, unnumbered: u64) -> MessageId {
        MessageId {
            run,
            number,
            unnumbered,
        }
    }

    #[test]
    fn differing_stream_settings_are_named() {
        let settings = Settings::new("nats://127.0.0.1:4222".into());
        let wanted = settings.stream_config("TS");
        assert!(differences(&wanted, &wanted).is_empty());
        let found = jetstream::stream::Config {
            max_age: std::time::Duration::from_secs(60),
            discard: jetstream::stream::DiscardPolicy::Old,
            ..wanted.clone()
        };
        assert_eq!(
            differences(&found, &wanted),
            ["max age 60s (flag 604800s)", "discard Old (flag New)"]
        );
    }

    #[test]
    fn steps_follow_the_duplicate_rules() {
        let start = MessageId::default();
        assert_eq!(step(&start, Some(5)), Step::Publish(at(0, Some(5), 0)));
        assert_eq!(step(&start, None), Step::Publish(at(0, None, 1)));
        let after = at(0, Some(200_000), 2);
        assert_eq!(step(&after, Some(200_000)), Step::Stored);
        assert_eq!(step(&after, Some(100_000)), Step::Stored);
        assert_eq!(
            step(&after, Some(200_001)),
            Step::Publish(at(0, Some(200_001), 0))
        );
        assert_eq!(step(&after, None), Step::Publish(at(0, Some(200_000), 3)));
        // More than RESTART_GAP below the highest: the T-Server restarted, a new run.
        assert_eq!(
            step(&after, Some(99_999)),
            Step::Publish(at(1, Some(99_999), 0))
        );
    }
}
