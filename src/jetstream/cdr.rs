//! Call detail records into JetStream (analytics.md, "Sinks for CDRs"): stream `CG_CDR`, subject
//! `cg.cdr.<token>` per T-Server, each message one CDR (its JSON) with `Nats-Msg-Id` =
//! `<cdrId>:<version>`, so a record published twice (a retry, a restart's replay within the duplicate
//! window) is stored once, and `Cg-Position` = the journal position that made it.
//!
//! Published by the analytics stage, after each batch, waiting for every ack: a failed publish is
//! retried every second (JetStream holds the event streams too, so while it is down ingest waits
//! anyway), which pushes back on the publisher rather than losing a record. After a restart with a
//! journal, records at or before the position of the stream's last message are not published again.

use super::{NatsError, Settings, token};
use crate::journal::Position;
use async_nats::jetstream::{self, message::PublishMessage};
use std::time::Duration;

/// The stream's name.
pub const STREAM: &str = "CG_CDR";
/// The prefix of its subjects.
pub const SUBJECT_PREFIX: &str = "cg.cdr.";
/// The header with the journal position of the event or tick that made the record.
pub const POSITION_HEADER: &str = "Cg-Position";

/// One CDR to publish.
#[derive(Debug, Clone)]
pub struct CdrMessage {
    /// The journal position that made it (0: none).
    pub position: Position,
    /// Its T-Server.
    pub server: String,
    /// `<cdrId>:<version>`.
    pub id: String,
    /// The CDR's JSON.
    pub json: String,
}

/// Publishes CDRs to `CG_CDR`.
pub struct CdrPublisher {
    context: jetstream::Context,
    /// Records made at or before it are in the stream already.
    stored: Position,
}

/// The stream's configuration.
pub fn stream_config(settings: &Settings) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: STREAM.into(),
        subjects: vec![format!("{SUBJECT_PREFIX}>")],
        max_age: settings.max_age,
        num_replicas: settings.replicas.max(1),
        duplicate_window: settings.duplicate_window,
        storage: jetstream::stream::StorageType::File,
        description: Some("callgate: call detail records".into()),
        ..Default::default()
    }
}

impl CdrPublisher {
    /// Creates the stream if absent and reads where it stands.
    pub async fn start(
        context: jetstream::Context,
        settings: &Settings,
    ) -> Result<CdrPublisher, NatsError> {
        let what = || format!("stream {STREAM}");
        let mut stream = context
            .get_or_create_stream(stream_config(settings))
            .await
            .map_err(|err| NatsError::request(what(), err))?;
        let last = stream
            .info()
            .await
            .map_err(|err| NatsError::request(what(), err))?
            .state
            .last_sequence;
        let stored = if last == 0 {
            0
        } else {
            stream
                .get_raw_message(last)
                .await
                .ok()
                .and_then(|message| {
                    let value = message.headers.get(POSITION_HEADER)?;
                    value.as_str().parse().ok()
                })
                .unwrap_or(0)
        };
        Ok(CdrPublisher { context, stored })
    }

    /// Publishes `messages` and waits for their acks; retries every second until JetStream takes them.
    pub async fn publish(&mut self, messages: &[CdrMessage]) {
        let fresh: Vec<&CdrMessage> = messages
            .iter()
            .filter(|message| message.position == 0 || message.position > self.stored)
            .collect();
        if fresh.is_empty() {
            return;
        }
        let mut attempt = 0u32;
        loop {
            match self.try_publish(&fresh).await {
                Ok(()) => {
                    metrics::counter!("callgate_cdr_published_total").increment(fresh.len() as u64);
                    return;
                }
                Err(error) => {
                    attempt += 1;
                    metrics::counter!("callgate_cdr_publish_failures_total").increment(1);
                    if attempt == 1 || attempt.is_multiple_of(60) {
                        tracing::warn!(attempt, "CG_CDR: publish failed, retrying: {error}");
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn try_publish(&self, messages: &[&CdrMessage]) -> Result<(), String> {
        let mut acks = Vec::with_capacity(messages.len());
        for message in messages {
            let publish = PublishMessage::build()
                .payload(message.json.clone().into())
                .message_id(&message.id)
                .header(POSITION_HEADER, message.position.to_string().as_str());
            let subject = format!("{SUBJECT_PREFIX}{}", token(&message.server));
            let ack = self
                .context
                .send_publish(subject, publish)
                .await
                .map_err(|err| err.to_string())?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|err| err.to_string())?;
        }
        Ok(())
    }
}
