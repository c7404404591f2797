//! Reading the event streams back at start: where each stream stands (its writer goes on from there) and,
//! without a journal, every event replayed through the pipeline before the doors serve.
//!
//! The streams are merged by each event's recorded arrival (`Cg-Arrival`), which is the order the
//! pipeline took them in for any one Server. The pipeline's clock ticks are not in the streams (they are
//! the gateway's, not a T-Server's): the replay ticks at every 250 ms step of the arrival clock that an
//! event crosses, as the live sweeper did, so lingering calls are forgotten and silent calls released
//! at the same places in the stream to within one tick (docs/jetstream.md says what that can change).

use super::writer::{Last, Tail};
use super::{ARRIVAL_HEADER, MessageId, NatsError, STREAM_PREFIX};
use crate::event::Micros;
use crate::pipeline::{Pipeline, Replay, Replayed, TICK_EVERY};
use async_nats::jetstream::{self, consumer::pull::OrderedConfig};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::time::Duration;

/// How long reading a stream back may wait for its next message.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What [`recover`] found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Where each Server's stream stands.
    pub tails: HashMap<Box<str>, Tail>,
    /// The event streams found.
    pub streams: usize,
    /// What was replayed (nothing when the journal does the replay).
    pub replayed: Replayed,
}

/// The Server whose token is `token` (the inverse of [`super::token`]; `None` for a name it never makes).
pub fn server_of(token: &str) -> Option<String> {
    if token == "_" {
        return Some(String::new());
    }
    let bytes = token.as_bytes();
    let mut server = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'_' {
            let hex = std::str::from_utf8(bytes.get(at + 1..at + 3)?).ok()?;
            server.push(u8::from_str_radix(hex, 16).ok()?);
            at += 3;
        } else {
            server.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(server).ok()
}

/// Reads every event stream on `context`: their tails, and, when `replay_into` is given (no journal),
/// every event through that pipeline.
pub async fn recover(
    context: &jetstream::Context,
    replay_into: Option<&Pipeline>,
) -> Result<Recovered, NatsError> {
    let mut names = Vec::new();
    let mut listing = context.stream_names();
    while let Some(name) = listing.next().await {
        let name = name.map_err(|err| NatsError::request("listing streams", err))?;
        if let Some(server) = name.strip_prefix(STREAM_PREFIX).and_then(server_of) {
            names.push((name, server));
        }
    }
    let mut recovered = Recovered {
        streams: names.len(),
        ..Recovered::default()
    };
    let mut readers = Vec::new();
    for (name, server) in names {
        let mut stream = context
            .get_stream(&name)
            .await
            .map_err(|err| NatsError::request(format!("stream {name}"), err))?;
        let state = stream
            .info()
            .await
            .map_err(|err| NatsError::request(format!("stream {name}"), err))?
            .state
            .clone();
        let tail = match state.last_sequence {
            0 => Tail::default(),
            last => tail_at(&stream, &server, last).await,
        };
        if replay_into.is_some() && state.messages > 0 {
            readers.push(Reader::open(&stream, &name, state.last_sequence).await?);
        }
        recovered.tails.insert(server.into(), tail);
    }
    if let Some(pipeline) = replay_into {
        recovered.replayed = replay(pipeline, readers).await?;
    }
    Ok(recovered)
}

/// Where `server`'s stream stands when its last message is `last`.
async fn tail_at(stream: &jetstream::stream::Stream, server: &str, last: u64) -> Tail {
    let message = match stream.get_raw_message(last).await {
        Ok(message) => message,
        // Gone (expired, removed): the next publish expects the sequence instead.
        Err(err) => {
            tracing::warn!(
                "JetStream: the last message of {server}'s stream cannot be read: {err}"
            );
            return Tail {
                position: MessageId::default(),
                last: Last::Sequence(last),
            };
        }
    };
    let id = message
        .headers
        .get("Nats-Msg-Id")
        .map(|id| id.as_str().to_owned());
    match id.as_deref().and_then(|id| MessageId::parse(server, id)) {
        Some(position) => Tail {
            position,
            last: Last::Id(id.unwrap_or_default()),
        },
        // Not written by a gateway: expect the sequence.
        None => Tail {
            position: MessageId::default(),
            last: Last::Sequence(last),
        },
    }
}

/// One stream read from its first message to the last one there was at start.
struct Reader {
    name: String,
    messages: jetstream::consumer::pull::Ordered,
    last: u64,
    head: Option<(Micros, bytes::Bytes)>,
    done: bool,
}

impl Reader {
    async fn open(
        stream: &jetstream::stream::Stream,
        name: &str,
        last: u64,
    ) -> Result<Self, NatsError> {
        let failed =
            |err: &dyn std::fmt::Display| NatsError::request(format!("reading {name}"), err);
        let consumer = stream
            .create_consumer(OrderedConfig::default())
            .await
            .map_err(|err| failed(&err))?;
        let messages = consumer.messages().await.map_err(|err| failed(&err))?;
        let mut reader = Self {
            name: name.to_owned(),
            messages,
            last,
            head: None,
            done: false,
        };
        reader.advance().await?;
        Ok(reader)
    }

    /// Reads the next message into `head` (`None` past the last one).
    async fn advance(&mut self) -> Result<(), NatsError> {
        self.head = None;
        if self.done {
            return Ok(());
        }
        let failed =
            |err: &dyn std::fmt::Display| NatsError::request(format!("reading {}", self.name), err);
        let next = tokio::time::timeout(READ_TIMEOUT, self.messages.next())
            .await
            .map_err(|_| failed(&format!("no message within {READ_TIMEOUT:?}")))?;
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(err)) => return Err(failed(&err)),
            None => return Err(failed(&"the stream ended early")),
        };
        let info = message.info().map_err(|err| failed(&err))?;
        self.done = info.stream_sequence >= self.last;
        let published = info.published.unix_timestamp_nanos() / 1_000;
        let arrival = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(ARRIVAL_HEADER))
            .and_then(|arrival| arrival.as_str().parse().ok())
            .unwrap_or_else(|| Micros::try_from(published).unwrap_or(0));
        self.head = Some((arrival, message.payload.clone()));
        Ok(())
    }
}

/// Replays the streams' events merged by arrival, with the sweeper's ticks between them.
async fn replay(pipeline: &Pipeline, mut readers: Vec<Reader>) -> Result<Replayed, NatsError> {
    let tick = i64::try_from(TICK_EVERY.as_micros()).unwrap_or(i64::MAX);
    let mut replay = Replay::new(pipeline);
    let mut step: Option<i64> = None;
    loop {
        let next = readers
            .iter()
            .enumerate()
            .filter_map(|(index, reader)| reader.head.as_ref().map(|(at, _)| (*at, index)))
            .min();
        let Some((arrival, index)) = next else { break };
        let this_step = arrival.div_euclid(tick);
        if step.is_some_and(|step| step < this_step) {
            replay.tick(0, this_step * tick).await;
        }
        step = Some(step.map_or(this_step, |step| step.max(this_step)));
        if let Some((arrival, line)) = readers[index].head.take() {
            replay.event(0, arrival, &line).await;
        }
        readers[index].advance().await?;
    }
    Ok(replay.finish().await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_back_from_their_tokens() {
        for server in ["SIPServer", "sip.server_1", "a b*>", "ünï", "x_2E", ""] {
            assert_eq!(
                server_of(&super::super::token(server)).as_deref(),
                Some(server)
            );
        }
        assert_eq!(server_of("bad_4"), None);
        assert_eq!(server_of("bad_ZZ"), None);
    }
}
