//! NATS JetStream as the durable record of accepted events (`serve --nats URL`, analytics.md "JetStream").
//!
//! One stream per T-Server, `CG_EV_<token>` on subject `cg.ev.<token>`, each message an event line as
//! received. Every message carries `Nats-Msg-Id` = `<Server>:<run>:<EventSequenceNumber>`, so a resend
//! within the stream's duplicate window is stored once, and the id of the message before it in
//! `Nats-Expected-Last-Msg-Id`, so that a publish after a lost one, or a second gateway writing the same
//! stream, is refused and the stream stays a gap-free prefix of what the T-Server sent. An event reaches
//! the reducer only once its publish is acknowledged, and an ingest ack covers only events whose publish
//! acks came back with all earlier ones ([`writer`]). A restart reads the streams back ([`recover`]).
//!
//! The crate is `async-nats`; what a JetStream ack does and does not survive is in the README
//! ("Durability") and docs/jetstream.md.

pub mod cdr;
pub mod read;
pub mod recover;
pub mod writer;

use async_nats::jetstream;
use std::time::Duration;

/// Prefix of the event streams' names.
pub const STREAM_PREFIX: &str = "CG_EV_";
/// Prefix of the event streams' subjects.
pub const SUBJECT_PREFIX: &str = "cg.ev.";
/// The stream that keeps the gateway's epoch when no journal does.
pub const GATEWAY_STREAM: &str = "CG_GATEWAY";
/// The subject of the epoch in [`GATEWAY_STREAM`].
pub const EPOCH_SUBJECT: &str = "cg.gateway.epoch";
/// The stream that keeps the settings of the last gateway started (`callgate export --nats` folds with
/// them), beside [`GATEWAY_STREAM`] rather than in it: a stream made by an earlier version has only the
/// epoch's subject.
pub const SETTINGS_STREAM: &str = "CG_SETTINGS";
/// The subject of the settings in [`SETTINGS_STREAM`].
pub const SETTINGS_SUBJECT: &str = "cg.gateway.settings";
/// The header with an event's arrival at the gateway (µs since the Unix epoch).
pub const ARRIVAL_HEADER: &str = "Cg-Arrival";

/// The JetStream settings of `serve` (analytics.md: the stream settings are options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The NATS server(s), as `nats://host:port` (several separated by commas).
    pub url: String,
    /// Replicas of each stream (3 in a production cluster; 1 on a single server).
    pub replicas: usize,
    /// How long a stream keeps an event.
    pub max_age: Duration,
    /// The most bytes a stream holds; past it new events are refused (`DiscardNew`), never old ones
    /// dropped. 0: no bound.
    pub max_bytes: u64,
    /// How long a message id is remembered, so that a resend is stored once.
    pub duplicate_window: Duration,
    /// How long a publish waits for its acknowledgement before the ingest connection is closed.
    pub ack_timeout: Duration,
}

impl Settings {
    /// The defaults documented in the README, for `url`.
    pub fn new(url: String) -> Self {
        Self {
            url,
            replicas: 1,
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 0,
            duplicate_window: Duration::from_secs(120),
            ack_timeout: Duration::from_secs(5),
        }
    }

    /// The configuration of `server`'s event stream.
    pub fn stream_config(&self, server: &str) -> jetstream::stream::Config {
        jetstream::stream::Config {
            name: stream_name(server),
            subjects: vec![subject(server)],
            max_age: self.max_age,
            max_bytes: i64::try_from(self.max_bytes)
                .ok()
                .filter(|&bytes| bytes > 0)
                .unwrap_or(-1),
            discard: jetstream::stream::DiscardPolicy::New,
            num_replicas: self.replicas.max(1),
            duplicate_window: self.duplicate_window,
            storage: jetstream::stream::StorageType::File,
            description: Some(format!("callgate: the events of T-Server {server}")),
            ..Default::default()
        }
    }
}

/// Why JetStream could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The NATS server could not be reached at start.
    #[error("NATS at {url}: {reason}")]
    Connect {
        /// The URL given.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A JetStream request (stream or bucket management, reading a stream) failed.
    #[error("JetStream {what}: {reason}")]
    Request {
        /// What was asked, naming the stream or bucket.
        what: String,
        /// What went wrong.
        reason: String,
    },
}

impl NatsError {
    fn request(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self::Request {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

/// `server` made safe as a subject token and a stream name: ASCII letters, digits and `-` stay, every other
/// byte becomes `_` and two hex digits (so `_` itself is `_5F`, and two Server names never share a token);
/// the empty name (events without a `Server`) is `_`.
pub fn token(server: &str) -> String {
    // Events without a Server (a gateway fed by one T-Server) share the token `_`, which no name makes.
    if server.is_empty() {
        return "_".into();
    }
    let mut token = String::with_capacity(server.len());
    for byte in server.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            token.push(char::from(byte));
        } else {
            token.push_str(&format!("_{byte:02X}"));
        }
    }
    token
}

/// The name of `server`'s event stream.
pub fn stream_name(server: &str) -> String {
    format!("{STREAM_PREFIX}{}", token(server))
}

/// The subject of `server`'s events.
pub fn subject(server: &str) -> String {
    format!("{SUBJECT_PREFIX}{}", token(server))
}

/// Where a message stands in its T-Server's stream, as its id says: `<Server>:<run>:<number>`, where the
/// run counts the T-Server's restarts (call-resource.md: a number far below the highest), or
/// `<Server>:<run>:<number>.<k>` for the k-th event without an EventSequenceNumber after `number`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MessageId {
    /// The T-Server's restarts seen in this stream.
    pub run: u64,
    /// The highest EventSequenceNumber of the run so far (`None`: none yet).
    pub number: Option<u64>,
    /// Events without a number since it.
    pub unnumbered: u64,
}

impl MessageId {
    /// The id as `Nats-Msg-Id`.
    pub fn format(&self, server: &str) -> String {
        let number = self.number.map_or_else(String::new, |n| n.to_string());
        if self.unnumbered == 0 {
            format!("{server}:{}:{number}", self.run)
        } else {
            format!("{server}:{}:{number}.{}", self.run, self.unnumbered)
        }
    }

    /// Reads an id made by [`MessageId::format`] for `server`.
    pub fn parse(server: &str, id: &str) -> Option<Self> {
        let rest = id.strip_prefix(server)?.strip_prefix(':')?;
        let (run, position) = rest.split_once(':')?;
        let run = run.parse().ok()?;
        let (number, unnumbered) = match position.split_once('.') {
            Some((number, k)) => (number, k.parse().ok()?),
            None => (position, 0),
        };
        let number = if number.is_empty() {
            None
        } else {
            Some(number.parse().ok()?)
        };
        Some(Self {
            run,
            number,
            unnumbered,
        })
    }
}

/// Connects to NATS (waiting up to `wait` for it) and returns the JetStream context.
pub async fn connect(settings: &Settings, wait: Duration) -> Result<jetstream::Context, NatsError> {
    let failed = |reason: String| NatsError::Connect {
        url: settings.url.clone(),
        reason,
    };
    let options = async_nats::ConnectOptions::new()
        .name("callgate")
        .connection_timeout(Duration::from_secs(2))
        .retry_on_initial_connect()
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => {
                    metrics::gauge!("callgate_nats_connected").set(1.0);
                    tracing::info!("NATS connected");
                }
                async_nats::Event::Disconnected => {
                    metrics::gauge!("callgate_nats_connected").set(0.0);
                    tracing::warn!("NATS disconnected; reconnecting");
                }
                other => tracing::info!("NATS: {other}"),
            }
        });
    let client = options
        .connect(settings.url.as_str())
        .await
        .map_err(|err| failed(err.to_string()))?;
    let deadline = tokio::time::Instant::now() + wait;
    while client.connection_state() != async_nats::connection::State::Connected {
        if tokio::time::Instant::now() >= deadline {
            return Err(failed(format!("not reachable within {wait:?}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    metrics::gauge!("callgate_nats_connected").set(1.0);
    // Whether JetStream is enabled shows at the first request (reading the streams back): the account
    // info request would not do, as async-nats reads it in a shape nats-server 2.9 does not send.
    Ok(jetstream::ContextBuilder::new()
        .timeout(settings.ack_timeout)
        .build(client))
}

/// The gateway's epoch kept in the `CG_GATEWAY` stream (when no journal keeps it): read, or made with
/// `make` and kept by the first gateway that gets there. (A stream rather than a key-value bucket:
/// async-nats 0.51 cannot create a bucket on nats-server 2.9.)
pub async fn epoch(
    context: &jetstream::Context,
    settings: &Settings,
    make: impl FnOnce() -> String,
) -> Result<String, NatsError> {
    let what = || format!("stream {GATEWAY_STREAM}");
    let description = "callgate: the notification stream's epoch";
    let stream = one_per_subject(
        context,
        settings,
        GATEWAY_STREAM,
        EPOCH_SUBJECT,
        description,
    )
    .await?;
    let kept = || async {
        let message = stream
            .get_last_raw_message_by_subject(EPOCH_SUBJECT)
            .await
            .ok()?;
        String::from_utf8(message.payload.to_vec()).ok()
    };
    if let Some(epoch) = kept().await {
        return Ok(epoch);
    }
    let made = make();
    // Only into an empty subject: of two gateways starting at once, one epoch is kept.
    let message = jetstream::message::PublishMessage::build()
        .payload(made.clone().into())
        .expected_last_subject_sequence(0);
    let published = context
        .send_publish(EPOCH_SUBJECT, message)
        .await
        .map_err(|err| NatsError::request(what(), err))?
        .await;
    match published {
        Ok(_) => Ok(made),
        Err(err) => kept().await.ok_or_else(|| NatsError::request(what(), err)),
    }
}

/// The stream `name` of one subject keeping only its last message (made if missing).
async fn one_per_subject(
    context: &jetstream::Context,
    settings: &Settings,
    name: &str,
    subject: &str,
    description: &str,
) -> Result<jetstream::stream::Stream, NatsError> {
    context
        .get_or_create_stream(jetstream::stream::Config {
            name: name.into(),
            subjects: vec![subject.into()],
            max_messages_per_subject: 1,
            num_replicas: settings.replicas.max(1),
            storage: jetstream::stream::StorageType::File,
            description: Some(description.into()),
            ..Default::default()
        })
        .await
        .map_err(|err| NatsError::request(format!("stream {name}"), err))
}

/// The epoch a gateway kept in the `CG_GATEWAY` stream (`None`: no gateway has kept one).
pub async fn kept_epoch(context: &jetstream::Context) -> Result<Option<String>, NatsError> {
    match last_of(context, GATEWAY_STREAM, EPOCH_SUBJECT).await? {
        Some(bytes) => String::from_utf8(bytes.to_vec()).map(Some).map_err(|_| {
            NatsError::request(
                format!("{EPOCH_SUBJECT} in {GATEWAY_STREAM}"),
                "the epoch kept there is not UTF-8",
            )
        }),
        None => Ok(None),
    }
}

/// The payload of the last message on `subject` in `stream` (`None`: no stream, or no message).
async fn last_of(
    context: &jetstream::Context,
    stream: &str,
    subject: &str,
) -> Result<Option<bytes::Bytes>, NatsError> {
    use jetstream::context::GetStreamErrorKind;
    use jetstream::stream::LastRawMessageErrorKind;
    let stream = match context.get_stream(stream).await {
        Ok(stream) => stream,
        Err(err)
            if matches!(err.kind(), GetStreamErrorKind::JetStream(ref js)
                if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            return Ok(None);
        }
        Err(err) => return Err(NatsError::request(format!("stream {stream}"), err)),
    };
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => Ok(Some(message.payload)),
        Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(err) => Err(NatsError::request(format!("{subject} in {stream:?}"), err)),
    }
}

/// Keeps `kept` (this gateway's settings) in [`SETTINGS_STREAM`], over the last gateway's.
pub async fn keep_settings(
    context: &jetstream::Context,
    settings: &Settings,
    kept: &crate::export::settings::Settings,
) -> Result<(), NatsError> {
    let what = || format!("stream {SETTINGS_STREAM}");
    let description = "callgate: the settings `callgate export --nats` folds with";
    one_per_subject(
        context,
        settings,
        SETTINGS_STREAM,
        SETTINGS_SUBJECT,
        description,
    )
    .await?;
    let text = serde_json::to_vec(kept).map_err(|err| NatsError::request(what(), err))?;
    context
        .publish(SETTINGS_SUBJECT, text.into())
        .await
        .map_err(|err| NatsError::request(what(), err))?
        .await
        .map_err(|err| NatsError::request(what(), err))?;
    Ok(())
}

/// The settings the last gateway started kept in [`SETTINGS_STREAM`] (`None`: none kept).
pub async fn kept_settings(
    context: &jetstream::Context,
) -> Result<Option<crate::export::settings::Settings>, NatsError> {
    let Some(text) = last_of(context, SETTINGS_STREAM, SETTINGS_SUBJECT).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|err| NatsError::request(format!("{SETTINGS_SUBJECT} in {SETTINGS_STREAM}"), err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_subject_safe_and_never_shared() {
        assert_eq!(token("SIPServer-1"), "SIPServer-1");
        assert_eq!(token("sip.server_1"), "sip_2Eserver_5F1");
        assert_eq!(token("a b*>"), "a_20b_2A_3E");
        assert_ne!(token("a_2E"), token("a."));
        assert_eq!(stream_name("TS"), "CG_EV_TS");
        assert_eq!(subject("TS"), "cg.ev.TS");
        assert_eq!(stream_name(""), "CG_EV__");
    }

    #[test]
    fn message_ids_round_trip() {
        for id in [
            MessageId {
                run: 0,
                number: Some(1041),
                unnumbered: 0,
            },
            MessageId {
                run: 2,
                number: Some(7),
                unnumbered: 3,
            },
            MessageId {
                run: 0,
                number: None,
                unnumbered: 1,
            },
        ] {
            let text = id.format("SIP:A");
            assert_eq!(MessageId::parse("SIP:A", &text), Some(id), "{text}");
        }
        assert_eq!(
            MessageId {
                run: 1,
                number: Some(5),
                unnumbered: 0
            }
            .format("TS"),
            "TS:1:5"
        );
        assert_eq!(MessageId::parse("TS", "other:1:5"), None);
        assert_eq!(MessageId::parse("TS", "TS:x:5"), None);
    }
}
