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
//! **Where an export stops.** A T-Server's stream may be written while it is read, and a stream can
//! appear at any time (a T-Server seen for the first time). An export therefore takes only events
//! stamped at least [`GRACE`] before its last listing of the streams (by this machine's clock): a
//! batch stamped before then is in its stream by then, unless it was more than [`GRACE`] on its way or
//! the gateway's clock is more than [`GRACE`] off this one's. Without `--follow` that is where it ends;
//! with it, the streams are listed again every [`RELIST_EVERY`], and the clock ticks on [`GRACE`]
//! behind the last listing, so lingering calls are forgotten while the center is quiet. So an export
//! stopped and begun again merges the same events in the same order, and its positions resume. A
//! restart's recovery reads every message there was when it looked (no gateway writes meanwhile).

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
/// An export takes the events stamped this long before its last listing of the streams, and its clock
/// ticks this far behind it.
pub const GRACE: Duration = Duration::from_secs(2);
/// Following: how often a quiet merge looks again for messages.
const POLL_EVERY: Duration = Duration::from_millis(50);
/// Following: how often the streams are listed again for new T-Servers.
const RELIST_EVERY: Duration = Duration::from_secs(1);
/// Messages read ahead per stream (bounded: a reader waits for the merge; with many T-Servers this
/// is what a merge holds per stream).
const READ_AHEAD: usize = 64;

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
    /// The sequence of the last message read (0: none).
    read: u64,
    /// The stream's last sequence when it was last listed: until it is read, an empty queue means
    /// only that the reader is behind.
    listed: u64,
    /// No message will come any more (not following, and every one there was is read).
    done: bool,
}

impl Lane {
    fn new(name: String, last: u64, messages: u64) -> Self {
        Self {
            name,
            head: None,
            taken: 0,
            read: 0,
            // Nothing held (every message gone by age): nothing to wait for.
            listed: if messages == 0 { 0 } else { last },
            done: false,
        }
    }

    /// Every message the stream held when it was last listed has been read.
    fn caught_up(&self) -> bool {
        self.read >= self.listed
    }

    /// The stream was listed again, holding `messages` up to sequence `last`.
    fn relisted(&mut self, last: u64, messages: u64) {
        // Holding nothing (every message gone by age): nothing to read up to.
        if messages > 0 {
            self.listed = self.listed.max(last);
        }
    }

    fn read(&mut self, message: Message, follow: bool) {
        self.read = message.sequence;
        self.done = !follow && self.caught_up();
        self.head = Some(message);
    }

    /// Past where the export ends: what is left of the stream is not read.
    fn cut(&mut self) {
        self.head = None;
        self.done = true;
    }
}

/// What the merge does next.
#[derive(Debug, PartialEq, Eq)]
enum Choice {
    /// Take the head of this lane.
    Take(usize),
    /// Wait for this lane's next message (it has more from before the start).
    NeedNext(usize),
    /// This lane's head is past where the export ends (not following): the lane is done.
    Cut(usize),
    /// Following: nothing can be taken yet.
    Idle,
    /// Nothing more will come.
    End,
}

/// The lane whose head goes next. `until`: only events stamped at or before it are taken (`None`: all).
fn choose(lanes: &[Lane], until: Option<Micros>, follow: bool) -> Choice {
    let mut best: Option<(Micros, usize)> = None;
    for (index, lane) in lanes.iter().enumerate() {
        match &lane.head {
            // Lanes are in name order, so equal arrivals keep it.
            Some(head) if best.is_none_or(|(at, _)| head.arrival < at) => {
                best = Some((head.arrival, index));
            }
            Some(_) => {}
            None if lane.done || lane.caught_up() => {}
            None => return Choice::NeedNext(index),
        }
    }
    match best {
        Some((at, index)) if until.is_none_or(|until| at <= until) => Choice::Take(index),
        // Stamps grow within a stream: nothing after this head is taken either.
        Some((_, index)) if !follow => Choice::Cut(index),
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

    /// Following: the tick at `watermark` (µs) when it is a step past the last one.
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
    /// When the streams were last listed.
    listed: Instant,
    /// Exporting: the events stamped up to this are taken (`None`: a recovery takes every one).
    until: Option<Micros>,
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
    fn new(context: &jetstream::Context, follow: bool) -> Self {
        Self {
            context: context.clone(),
            follow,
            lanes: Vec::new(),
            readers: Vec::new(),
            clock: Clock::default(),
            out: VecDeque::new(),
            idle_said: false,
            listed: Instant::now(),
            until: None,
        }
    }

    /// Every event stream on `context` for an export: each from its first message to where the module's
    /// doc says it ends; with `follow`, on with what is written after.
    pub async fn export(context: &jetstream::Context, follow: bool) -> Result<Self, NatsError> {
        let mut streams = Self::new(context, follow);
        streams.list().await?;
        Ok(streams)
    }

    /// The streams named in `found` (name, last sequence, messages), each read to that last sequence:
    /// a restart's recovery, which takes every message there was.
    pub async fn recover(
        context: &jetstream::Context,
        found: Vec<(String, u64, u64)>,
    ) -> Result<Self, NatsError> {
        let mut streams = Self::new(context, false);
        for (name, last, messages) in found {
            if messages > 0 {
                let stream = streams.stream(&name).await?;
                streams.read(stream, name, last, messages).await?;
            }
        }
        Ok(streams)
    }

    /// Adds a lane for each event stream not read yet, and moves the export's end to the listing.
    async fn list(&mut self) -> Result<(), NatsError> {
        self.listed = Instant::now();
        let grace = i64::try_from(GRACE.as_micros()).unwrap_or(i64::MAX);
        let until = crate::pipeline::wall_clock_micros().saturating_sub(grace);
        let mut listing = self.context.stream_names();
        let mut found = Vec::new();
        while let Some(name) = listing.next().await {
            let name = name.map_err(|err| NatsError::request("listing streams", err))?;
            let ours = name
                .strip_prefix(STREAM_PREFIX)
                .and_then(server_of)
                .is_some();
            if ours {
                found.push(name);
            }
        }
        for name in found {
            // Looking a stream up brings its state along.
            let stream = self.stream(&name).await?;
            let state = stream.cached_info().state.clone();
            // Everything stamped before `until` is in its stream by now: it is read before the
            // stream counts as quiet (a stream holding nothing, every message gone by age, has
            // nothing to read).
            if let Some(lane) = self.lanes.iter_mut().find(|lane| lane.name == name) {
                lane.relisted(state.last_sequence, state.messages);
            } else if self.follow || state.messages > 0 {
                self.read(stream, name, state.last_sequence, state.messages)
                    .await?;
            }
        }
        // Only once every stream there was is read: a stream listed after `until` holds nothing
        // stamped before it.
        self.until = Some(self.until.map_or(until, |before| before.max(until)));
        Ok(())
    }

    async fn stream(&self, name: &str) -> Result<jetstream::stream::Stream, NatsError> {
        self.context
            .get_stream(name)
            .await
            .map_err(|err| NatsError::request(format!("stream {name}"), err))
    }

    /// Starts reading `stream` into a lane of its own.
    async fn read(
        &mut self,
        stream: jetstream::stream::Stream,
        name: String,
        last: u64,
        messages: u64,
    ) -> Result<(), NatsError> {
        let failed =
            |err: &dyn std::fmt::Display| NatsError::request(format!("stream {name}"), err);
        let consumer = stream
            .create_consumer(OrderedConfig::default())
            .await
            .map_err(|err| failed(&err))?;
        let ordered = consumer.messages().await.map_err(|err| failed(&err))?;
        let lane = Lane::new(name.clone(), last, messages);
        let (sender, receiver) = mpsc::channel(READ_AHEAD);
        let stop_at = (!self.follow).then_some(last);
        let task = tokio::spawn(read(name, ordered, stop_at, sender));
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
            if self.follow && self.listed.elapsed() >= RELIST_EVERY {
                self.list().await?;
            }
            self.read_ready()?;
            match choose(&self.lanes, self.until, self.follow) {
                Choice::Take(index) => {
                    self.idle_said = false;
                    self.clock.take(&mut self.lanes[index], &mut self.out);
                }
                Choice::NeedNext(index) => self.wait_for(index).await?,
                Choice::Cut(index) => self.lanes[index].cut(),
                Choice::End => return Ok(Merged::End),
                Choice::Idle if stop.load(Ordering::Acquire) => return Ok(Merged::End),
                Choice::Idle if !self.idle_said => {
                    self.idle_said = true;
                    return Ok(Merged::Idle);
                }
                Choice::Idle => {
                    if let Some(tick) = self.until.and_then(|until| self.clock.quiet_tick(until)) {
                        // Said again after it, so that the reader hands the tick on.
                        self.idle_said = false;
                        return Ok(tick);
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
            match choose(&lanes, None, false) {
                Choice::Take(index) => clock.take(&mut lanes[index], &mut out),
                Choice::NeedNext(index) => {
                    let next = queues[index]
                        .pop_front()
                        .expect("a message before the last");
                    lanes[index].read(next, false);
                }
                Choice::End => return out.into(),
                Choice::Idle | Choice::Cut(_) => panic!("a recovery takes every message"),
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
    fn a_stream_not_caught_up_is_waited_for_and_nothing_past_the_listing_is_taken() {
        let mut lanes = vec![
            Lane::new("CG_EV_a".into(), 5, 5),
            Lane::new("CG_EV_b".into(), 0, 0),
        ];
        lanes[1].read(message(1, 100), true);
        // `a` still has its backlog to give: its next message may be older than `b`'s.
        assert_eq!(choose(&lanes, Some(1000), true), Choice::NeedNext(0));
        lanes[0].read(message(5, 50), true);
        assert!(lanes[0].caught_up() && !lanes[0].done);
        assert_eq!(choose(&lanes, Some(1000), true), Choice::Take(0));
        let mut clock = Clock::default();
        let mut out = VecDeque::new();
        clock.take(&mut lanes[0], &mut out);
        // `b`'s event is taken once the listing's mark passes it (a stream not listed yet, or a quiet
        // one, may still hold an older one).
        assert_eq!(choose(&lanes, Some(99), true), Choice::Idle);
        assert_eq!(choose(&lanes, Some(100), true), Choice::Take(1));
        clock.take(&mut lanes[1], &mut out);
        assert_eq!(choose(&lanes, Some(100), true), Choice::Idle);
        // Listed again holding more than was read: its reader is behind, not the stream quiet.
        lanes[0].relisted(7, 3);
        lanes[1].read(message(2, 101), true);
        assert_eq!(choose(&lanes, Some(1000), true), Choice::NeedNext(0));
        lanes[0].read(message(7, 102), true);
        assert_eq!(choose(&lanes, Some(1000), true), Choice::Take(1));
        let _ = lanes[1].head.take();
        let _ = lanes[0].head.take();
        // Quiet: the clock goes on behind the mark, a step at a time.
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
        out.clear();
        lanes[0].read(message(8, TICK), true);
        clock.take(&mut lanes[0], &mut out);
        assert!(matches!(
            out.back(),
            Some(Merged::Event { position: 9, .. })
        ));
        assert_eq!(
            out.iter()
                .filter(|m| matches!(m, Merged::Tick { .. }))
                .count(),
            0
        );
    }

    #[test]
    fn an_export_not_following_ends_at_the_listings_mark() {
        let mut lanes = vec![
            Lane::new("CG_EV_a".into(), 9, 9),
            Lane::new("CG_EV_b".into(), 9, 9),
        ];
        lanes[0].read(message(1, 10), false);
        lanes[1].read(message(1, 20), false);
        let (mut clock, mut out) = (Clock::default(), VecDeque::new());
        assert_eq!(choose(&lanes, Some(15), false), Choice::Take(0));
        clock.take(&mut lanes[0], &mut out);
        lanes[0].read(message(2, 30), false);
        // Both heads are past the mark: each lane is cut in turn, and the export ends.
        assert_eq!(choose(&lanes, Some(15), false), Choice::Cut(1));
        lanes[1].cut();
        assert_eq!(choose(&lanes, Some(15), false), Choice::Cut(0));
        lanes[0].cut();
        assert_eq!(choose(&lanes, Some(15), false), Choice::End);
    }

    #[test]
    fn not_following_the_merge_ends_after_the_last_message_there_was() {
        let mut lanes = vec![Lane::new("CG_EV_a".into(), 2, 2)];
        assert_eq!(choose(&lanes, None, false), Choice::NeedNext(0));
        lanes[0].read(message(1, 1), false);
        let (mut clock, mut out) = (Clock::default(), VecDeque::new());
        clock.take(&mut lanes[0], &mut out);
        lanes[0].read(message(2, 2), false);
        assert!(lanes[0].done);
        assert_eq!(choose(&lanes, None, false), Choice::Take(0));
        clock.take(&mut lanes[0], &mut out);
        assert_eq!(choose(&lanes, None, false), Choice::End);
        // Following, the same lane is quiet instead, and stays so when every message it had is gone.
        let mut lanes = vec![Lane::new("CG_EV_a".into(), 0, 0)];
        assert_eq!(choose(&lanes, None, true), Choice::Idle);
        lanes[0].relisted(40, 0);
        assert_eq!(choose(&lanes, None, true), Choice::Idle);
        lanes[0].read(message(1, 1), true);
        assert!(!lanes[0].done);
    }
}
