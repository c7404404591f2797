//! The event streams read back as one input, in the order the gateway took it: a restart's recovery
//! (to the last message there was at start) and `callgate export --nats` (the same, or on with what the
//! gateway goes on writing, `--follow`).
//!
//! The streams are merged by each event's recorded arrival (`Cg-Arrival`), which is the order the
//! pipeline took them in for any one Server; equal arrivals go in the order of the streams' names. The
//! pipeline's clock ticks are not in the streams (they are the gateway's, not a T-Server's): the merge
//! ticks at every 250 ms step of the arrival clock that an event crosses, as the live sweeper did, so
//! lingering calls are forgotten and silent calls released at the same places to within one tick
//! (docs/jetstream.md says what that can change).
//!
//! **Positions.** Each entry gets the sum, over every stream, of the sequence of the last message taken
//! from it. It grows with every event, orders the entries of all streams as the merge does, and is the
//! same in every read of the same streams (JetStream never renumbers a message), so an export's records
//! can be resumed after a `position` as a journal's are. A tick gets the position of the event before it.
//!
//! **Following.** Once a stream has given every message it had at the start, an empty stream may only
//! mean that nothing has come yet. Another stream's next event is then taken once its arrival is
//! [`GRACE`] old by this machine's clock (an event of the quiet stream stamped before it may still be on
//! its way), and the clock ticks on [`GRACE`] behind, so lingering calls are forgotten while the center
//! is quiet. New streams (a T-Server seen for the first time) are looked for every [`RELIST_EVERY`].

use super::recover::server_of;
use super::{ARRIVAL_HEADER, NatsError, STREAM_PREFIX};
use crate::event::Micros;
use crate::pipeline::TICK_EVERY;
use async_nats::jetstream::{self, consumer::pull::OrderedConfig};
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long reading a stream's backlog may wait for its next message.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Following: how old (by this machine's clock) an event's arrival must be before it is taken while
/// another stream is quiet, and how far behind the clock the ticks follow.
pub const GRACE: Duration = Duration::from_secs(2);
/// Following: how often a quiet merge looks again for messages.
const POLL_EVERY: Duration = Duration::from_millis(50);
/// Following: how often the streams are listed again for new T-Servers.
const RELIST_EVERY: Duration = Duration::from_secs(1);
/// Messages read ahead per stream (bounded: a reader waits for the merge).
const READ_AHEAD: usize = 1024;

/// One entry of the merged streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merged {
    /// An event line as received, with its arrival and merged position.
    Event {
        /// The merged position (see the module's doc).
        position: u64,
        /// When the gateway took it (µs since the Unix epoch).
        arrival: Micros,
        /// The line.
        line: Bytes,
    },
    /// The gateway's clock reached `wall`.
    Tick {
        /// The position of the event before it.
        position: u64,
        /// The clock (µs since the Unix epoch).
        wall: Micros,
    },
    /// Following: nothing can be taken now (a good moment to flush what was read).
    Idle,
    /// No more: the last message there was at the start was read, or the follower was stopped.
    End,
}

/// A message read from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Message {
    sequence: u64,
    arrival: Micros,
    line: Bytes,
}

/// What the merge knows of one stream.
#[derive(Debug)]
struct Lane {
    name: String,
    /// The next message, read but not taken.
    head: Option<Message>,
    /// The sequence of the last message taken (0: none).
    taken: u64,
    /// Every message there was at the start has been read.
    caught_up: bool,
    /// No message will come any more (not following, and caught up).
    done: bool,
    /// The last sequence there was at the start.
    last_at_start: u64,
}

impl Lane {
    fn new(name: String, last_at_start: u64, messages: u64) -> Self {
        let caught_up = last_at_start == 0 || messages == 0;
        Self {
            name,
            head: None,
            taken: 0,
            caught_up,
            done: false,
            last_at_start,
        }
    }

    fn read(&mut self, message: Message, follow: bool) {
        if message.sequence >= self.last_at_start {
            self.caught_up = true;
            self.done = !follow;
        }
        self.head = Some(message);
    }
}

/// What the merge does next.
#[derive(Debug, PartialEq, Eq)]
enum Choice {
    /// Take the head of this lane.
    Take(usize),
    /// Wait for this lane's next message (it has more from before the start).
    NeedNext(usize),
    /// Nothing can be taken yet.
    Idle,
    /// Nothing more will come.
    End,
}

/// The lane whose head goes next, given this machine's clock `now` (µs).
fn choose(lanes: &[Lane], now: Micros, follow: bool) -> Choice {
    let grace = i64::try_from(GRACE.as_micros()).unwrap_or(i64::MAX);
    let mut best: Option<(Micros, usize)> = None;
    let mut quiet = false;
    for (index, lane) in lanes.iter().enumerate() {
        match &lane.head {
            // Lanes are in name order, so equal arrivals keep it.
            Some(head) if best.is_none_or(|(at, _)| head.arrival < at) => {
                best = Some((head.arrival, index));
            }
            Some(_) => {}
            None if lane.done => {}
            None if !lane.caught_up => return Choice::NeedNext(index),
            None => quiet = true,
        }
    }
    match best {
        Some((at, index)) if !quiet || at <= now.saturating_sub(grace) => Choice::Take(index),
        Some(_) => Choice::Idle,
        None if follow => Choice::Idle,
        None => Choice::End,
    }
}

/// The merge's running state: the position and the clock's step.
#[derive(Debug, Default)]
struct Clock {
    position: u64,
    step: Option<i64>,
}

impl Clock {
    fn tick_micros() -> i64 {
        i64::try_from(TICK_EVERY.as_micros()).unwrap_or(i64::MAX)
    }

    /// Takes `lane`'s head: a tick first when its arrival crosses a step, then the event.
    fn take(&mut self, lane: &mut Lane, out: &mut VecDeque<Merged>) {
        let Some(message) = lane.head.take() else {
            return;
        };
        let this_step = message.arrival.div_euclid(Self::tick_micros());
        if self.step.is_some_and(|step| step < this_step) {
            out.push_back(Merged::Tick {
                position: self.position,
                wall: this_step * Self::tick_micros(),
            });
        }
        self.step = Some(self.step.map_or(this_step, |step| step.max(this_step)));
        // Sequences grow within a stream, so the sum grows with every event.
        self.position += message.sequence.saturating_sub(lane.taken);
        lane.taken = message.sequence;
        out.push_back(Merged::Event {
            position: self.position,
            arrival: message.arrival,
            line: message.line,
        });
    }

    /// Following a quiet center: the tick at `watermark` (µs) when it is a step past the last one.
    fn quiet_tick(&mut self, watermark: Micros) -> Option<Merged> {
        let this_step = watermark.div_euclid(Self::tick_micros());
        let step = self.step.as_mut()?;
        if *step >= this_step {
            return None;
        }
        *step = this_step;
        Some(Merged::Tick {
            position: self.position,
            wall: this_step * Self::tick_micros(),
        })
    }
}

/// The event streams of a JetStream, merged (see the module's doc).
pub struct Streams {
    context: jetstream::Context,
    follow: bool,
    lanes: Vec<Lane>,
    /// Each lane's reader, in the lanes' order.
    readers: Vec<Reader>,
    clock: Clock,
    out: VecDeque<Merged>,
    /// `Idle` was returned and nothing was taken since.
    idle_said: bool,
    listed: Instant,
}

/// A task reading one stream into a bounded queue.
struct Reader {
    messages: mpsc::Receiver<Result<Message, NatsError>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Streams {
    /// Every event stream on `context`, each from its first message; with `follow`, on past the last one
    /// there was.
    pub async fn open(context: &jetstream::Context, follow: bool) -> Result<Self, NatsError> {
        let mut streams = Self {
            context: context.clone(),
            follow,
            lanes: Vec::new(),
            readers: Vec::new(),
            clock: Clock::default(),
            out: VecDeque::new(),
            idle_said: false,
            listed: Instant::now(),
        };
        streams.list().await?;
        Ok(streams)
    }

    /// Adds a lane for each event stream not read yet.
    async fn list(&mut self) -> Result<(), NatsError> {
        self.listed = Instant::now();
        let mut listing = self.context.stream_names();
        let mut found = Vec::new();
        while let Some(name) = listing.next().await {
            let name = name.map_err(|err| NatsError::request("listing streams", err))?;
            let ours = name
                .strip_prefix(STREAM_PREFIX)
                .and_then(server_of)
                .is_some();
            if ours && !self.lanes.iter().any(|lane| lane.name == name) {
                found.push(name);
            }
        }
        for name in found {
            self.add(name).await?;
        }
        Ok(())
    }

    async fn add(&mut self, name: String) -> Result<(), NatsError> {
        let failed =
            |err: &dyn std::fmt::Display| NatsError::request(format!("stream {name}"), err);
        let mut stream = self
            .context
            .get_stream(&name)
            .await
            .map_err(|err| failed(&err))?;
        let state = stream
            .info()
            .await
            .map_err(|err| failed(&err))?
            .state
            .clone();
        if !self.follow && state.messages == 0 {
            return Ok(());
        }
        let consumer = stream
            .create_consumer(OrderedConfig::default())
            .await
            .map_err(|err| failed(&err))?;
        let messages = consumer.messages().await.map_err(|err| failed(&err))?;
        let lane = Lane::new(name.clone(), state.last_sequence, state.messages);
        let (sender, receiver) = mpsc::channel(READ_AHEAD);
        let stop_at = (!self.follow).then_some(state.last_sequence);
        let task = tokio::spawn(read(name, messages, stop_at, sender));
        let at = self.lanes.partition_point(|other| other.name < lane.name);
        self.lanes.insert(at, lane);
        let reader = Reader {
            messages: receiver,
            task,
        };
        self.readers.insert(at, reader);
        Ok(())
    }

    /// The next entry. Following, it returns [`Merged::End`] only once `stop` is set while nothing can
    /// be taken.
    pub async fn next(&mut self, stop: &AtomicBool) -> Result<Merged, NatsError> {
        loop {
            if let Some(entry) = self.out.pop_front() {
                return Ok(entry);
            }
            self.read_ready()?;
            let now = crate::pipeline::wall_clock_micros();
            match choose(&self.lanes, now, self.follow) {
                Choice::Take(index) => {
                    self.idle_said = false;
                    self.clock.take(&mut self.lanes[index], &mut self.out);
                }
                Choice::NeedNext(index) => self.wait_for(index).await?,
                Choice::End => return Ok(Merged::End),
                Choice::Idle if stop.load(Ordering::Acquire) => return Ok(Merged::End),
                Choice::Idle if !self.idle_said => {
                    self.idle_said = true;
                    return Ok(Merged::Idle);
                }
                Choice::Idle => {
                    let grace = i64::try_from(GRACE.as_micros()).unwrap_or(i64::MAX);
                    if let Some(tick) = self.clock.quiet_tick(now.saturating_sub(grace)) {
                        return Ok(tick);
                    }
                    if self.listed.elapsed() >= RELIST_EVERY {
                        self.list().await?;
                    }
                    tokio::time::sleep(POLL_EVERY).await;
                }
            }
        }
    }

    /// Moves what the readers have ready into the lanes that have no head.
    fn read_ready(&mut self) -> Result<(), NatsError> {
        for (lane, reader) in self.lanes.iter_mut().zip(&mut self.readers) {
            if lane.head.is_some() || lane.done {
                continue;
            }
            match reader.messages.try_recv() {
                Ok(message) => lane.read(message?, self.follow),
                Err(mpsc::error::TryRecvError::Empty) => {}
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    return Err(ended_early(&lane.name));
                }
            }
        }
        Ok(())
    }

    /// Waits for lane `index`'s next message.
    async fn wait_for(&mut self, index: usize) -> Result<(), NatsError> {
        let lane = &mut self.lanes[index];
        let next = tokio::time::timeout(READ_TIMEOUT, self.readers[index].messages.recv())
            .await
            .map_err(|_| {
                NatsError::request(
                    format!("reading {}", lane.name),
                    format!("no message within {READ_TIMEOUT:?}"),
                )
            })?;
        match next {
            Some(message) => lane.read(message?, self.follow),
            None => return Err(ended_early(&lane.name)),
        }
        Ok(())
    }
}

fn ended_early(name: &str) -> NatsError {
    NatsError::request(format!("reading {name}"), "the stream ended early")
}

/// Reads `messages` into `sender` until the one of sequence `stop_at` (following: for ever).
async fn read(
    name: String,
    mut messages: jetstream::consumer::pull::Ordered,
    stop_at: Option<u64>,
    sender: mpsc::Sender<Result<Message, NatsError>>,
) {
    let failed = |err: &dyn std::fmt::Display| NatsError::request(format!("reading {name}"), err);
    loop {
        let next = match messages.next().await {
            Some(Ok(message)) => decode(&message).map_err(|err| failed(&err)),
            Some(Err(err)) => Err(failed(&err)),
            None => Err(failed(&"the stream ended early")),
        };
        let last = next.as_ref().map_or(true, |message| {
            stop_at.is_some_and(|stop| message.sequence >= stop)
        });
        if sender.send(next).await.is_err() || last {
            return;
        }
    }
}

/// A stream's message as the merge needs it.
fn decode(message: &jetstream::Message) -> Result<Message, async_nats::Error> {
    let info = message.info()?;
    let published = info.published.unix_timestamp_nanos() / 1_000;
    let arrival = message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(ARRIVAL_HEADER))
        .and_then(|arrival| arrival.as_str().parse().ok())
        .unwrap_or_else(|| Micros::try_from(published).unwrap_or(0));
    Ok(Message {
        sequence: info.stream_sequence,
        arrival,
        line: message.payload.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: i64 = 250_000;

    fn message(sequence: u64, arrival: Micros) -> Message {
        Message {
            sequence,
            arrival,
            line: Bytes::from(format!("{sequence}@{arrival}")),
        }
    }

    /// Merges lanes whose messages are all read, as a recovery does.
    fn merge_all(mut queues: Vec<(&str, Vec<Message>)>) -> Vec<Merged> {
        queues.sort_by(|a, b| a.0.cmp(b.0));
        let mut lanes: Vec<Lane> = queues
            .iter()
            .map(|(name, messages)| {
                let last = messages.last().map_or(0, |m| m.sequence);
                Lane::new((*name).to_owned(), last, messages.len() as u64)
            })
            .collect();
        let mut queues: Vec<VecDeque<Message>> =
            queues.into_iter().map(|(_, m)| m.into()).collect();
        let mut clock = Clock::default();
        let mut out = VecDeque::new();
        loop {
            match choose(&lanes, 0, false) {
                Choice::Take(index) => clock.take(&mut lanes[index], &mut out),
                Choice::NeedNext(index) => {
                    let next = queues[index]
                        .pop_front()
                        .expect("a message before the last");
                    lanes[index].read(next, false);
                }
                Choice::End => return out.into(),
                Choice::Idle => panic!("a recovery is never idle"),
            }
        }
    }

    #[test]
    fn streams_merge_by_arrival_with_growing_positions_and_ticks_at_crossed_steps() {
        let merged = merge_all(vec![
            ("CG_EV_b", vec![message(7, 10), message(8, TICK + 5)]),
            (
                "CG_EV_a",
                vec![message(1, 10), message(2, 20), message(3, 3 * TICK)],
            ),
        ]);
        let event = |position, arrival, sequence: u64| Merged::Event {
            position,
            arrival,
            line: Bytes::from(format!("{sequence}@{arrival}")),
        };
        assert_eq!(
            merged,
            vec![
                // Equal arrivals: in the streams' name order.
                event(1, 10, 1),
                event(8, 10, 7),
                event(9, 20, 2),
                Merged::Tick {
                    position: 9,
                    wall: TICK
                },
                event(10, TICK + 5, 8),
                Merged::Tick {
                    position: 10,
                    wall: 3 * TICK
                },
                event(11, 3 * TICK, 3),
            ]
        );
    }

    #[test]
    fn a_stream_not_caught_up_is_waited_for_and_a_quiet_one_holds_back_only_recent_events() {
        let grace = GRACE.as_micros() as i64;
        let mut lanes = vec![
            Lane::new("CG_EV_a".into(), 5, 5),
            Lane::new("CG_EV_b".into(), 0, 0),
        ];
        lanes[1].read(message(1, 100), true);
        // `a` still has its backlog to give: its next message may be older than `b`'s.
        assert_eq!(choose(&lanes, 10 * grace, true), Choice::NeedNext(0));
        lanes[0].read(message(5, 50), true);
        assert!(lanes[0].caught_up && !lanes[0].done);
        assert_eq!(choose(&lanes, 10 * grace, true), Choice::Take(0));
        let mut clock = Clock::default();
        let mut out = VecDeque::new();
        clock.take(&mut lanes[0], &mut out);
        // `a` is quiet now: `b`'s event waits until it is GRACE old.
        assert_eq!(choose(&lanes, 100 + grace - 1, true), Choice::Idle);
        assert_eq!(choose(&lanes, 100 + grace, true), Choice::Take(1));
        clock.take(&mut lanes[1], &mut out);
        assert_eq!(choose(&lanes, 100 + grace, true), Choice::Idle);
        // Quiet: the clock goes on behind, a step at a time.
        assert_eq!(clock.quiet_tick(TICK - 1), None);
        assert_eq!(
            clock.quiet_tick(2 * TICK + 1),
            Some(Merged::Tick {
                position: 6,
                wall: 2 * TICK
            })
        );
        assert_eq!(clock.quiet_tick(2 * TICK + 2), None);
        // An event stamped before the last tick goes after it, with no tick going back.
        lanes[0].read(message(6, TICK), true);
        clock.take(&mut lanes[0], &mut out);
        assert!(matches!(
            out.back(),
            Some(Merged::Event { position: 7, .. })
        ));
        assert_eq!(
            out.iter()
                .filter(|m| matches!(m, Merged::Tick { .. }))
                .count(),
            0
        );
    }

    #[test]
    fn not_following_the_merge_ends_after_the_last_message_there_was() {
        let mut lanes = vec![Lane::new("CG_EV_a".into(), 2, 2)];
        assert_eq!(choose(&lanes, 0, false), Choice::NeedNext(0));
        lanes[0].read(message(1, 1), false);
        let (mut clock, mut out) = (Clock::default(), VecDeque::new());
        clock.take(&mut lanes[0], &mut out);
        lanes[0].read(message(2, 2), false);
        assert!(lanes[0].done);
        assert_eq!(choose(&lanes, 0, false), Choice::Take(0));
        clock.take(&mut lanes[0], &mut out);
        assert_eq!(choose(&lanes, 0, false), Choice::End);
        // Following, the same lane is quiet instead.
        let mut lanes = vec![Lane::new("CG_EV_a".into(), 0, 0)];
        assert_eq!(choose(&lanes, 0, true), Choice::Idle);
        lanes[0].read(message(1, 1), true);
        assert!(!lanes[0].done);
    }
}
