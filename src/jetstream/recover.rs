//! Reading the event streams back at start: where each stream stands (its writer goes on from there) and,
//! without a journal, every event replayed through the pipeline before the doors serve.
//!
//! The streams are merged as [`super::read`] says: by each event's recorded arrival, with the
//! sweeper's ticks at every 250 ms step of it.

use super::read::{Merged, Streams};
use super::writer::{Last, Tail};
use super::{MessageId, NatsError, STREAM_PREFIX};
use crate::pipeline::{Pipeline, Replay, Replayed};
use async_nats::jetstream;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

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
    let mut found = Vec::with_capacity(names.len());
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
        recovered.tails.insert(server.into(), tail);
        found.push((name, state.last_sequence, state.messages));
    }
    if let Some(pipeline) = replay_into {
        // Read to the tails just taken: the writers go on from exactly there.
        recovered.replayed = replay(pipeline, Streams::recover(context, found).await?).await?;
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

/// Replays the streams' events merged by arrival, with the sweeper's ticks between them.
async fn replay(pipeline: &Pipeline, mut streams: Streams) -> Result<Replayed, NatsError> {
    let mut replay = Replay::new(pipeline);
    // Not following: the merge ends by itself.
    let stop = AtomicBool::new(false);
    loop {
        match streams.next(&stop).await? {
            // The live gateway numbers nothing without a journal: neither does its replay.
            Merged::Event { arrival, line, .. } => replay.event(0, arrival, &line).await,
            Merged::Tick { wall, .. } => replay.tick(0, wall).await,
            Merged::Idle => {}
            Merged::End => break,
        }
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
