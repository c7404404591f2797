//! `callgate sink postgres`: the call detail records of a journal into PostgreSQL (analytics.md,
//! docs/postgres.md), as a durable consumer of the journal.
//!
//! The journal is folded from its first entry (the CDRs of later positions depend on everything before
//! them) by the recorder `callgate export` uses, with the gateway's settings; records of positions the
//! consumer has stored are left out. Records go in batches, each one transaction with the position it
//! reaches, so a sink killed anywhere goes on after its last COMMIT.
//!
//! With `--nats` it is instead a durable pull consumer of JetStream's `CG_CDR` (the gateway publishes
//! every CDR there): each fetched batch is one transaction, and its messages are acked after the COMMIT,
//! so a sink killed anywhere gets the unacked ones again (the upsert stores each call once).

use super::export::{ExportError, FOLLOW_EVERY, epoch_of, fact, journal_settings, recorder_config};
use crate::export::{Recorder, RecorderConfig, Types};
use crate::journal::{Position, Reader};
use crate::sink::postgres::{Batch, Encoded, PostgresError, PostgresSink};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// Facts read with no CDR before the position is stored anyway (a restart then skips them).
const PROGRESS_EVERY: u64 = 100_000;

/// What to store, and where.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// The PostgreSQL connection string.
    pub dsn: String,
    /// Where the CDRs come from.
    pub source: SinkSource,
    /// The consumer's name: where it stands is kept under it.
    pub consumer: String,
    /// CDRs per transaction, at most.
    pub batch: usize,
    /// At the end of the journal, wait for more (until interrupted).
    pub follow: bool,
}

/// Where `callgate sink postgres` reads.
#[derive(Debug, Clone)]
pub enum SinkSource {
    /// A journal's folder: its events are folded into CDRs.
    Journal(PathBuf),
    /// A NATS server whose JetStream holds `CG_CDR`.
    Nats(String),
}

/// What the sink did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SinkCounts {
    /// CDRs sent (a call's versions in one batch count once).
    pub records: u64,
    /// Transactions committed.
    pub transactions: u64,
    /// The position stored last.
    pub position: Position,
}

/// Why the sink stopped (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The journal or its settings cannot be read.
    #[error(transparent)]
    Journal(#[from] ExportError),
    /// PostgreSQL failed.
    #[error(transparent)]
    Postgres(#[from] PostgresError),
    /// NATS or `CG_CDR` cannot be read.
    #[error("JetStream: {0}")]
    Nats(String),
}

impl From<crate::journal::JournalError> for SinkError {
    fn from(error: crate::journal::JournalError) -> Self {
        SinkError::Journal(ExportError::Journal(error))
    }
}

/// Stores the CDRs of the source; stops at its end, or with `follow` once `stop` is set.
pub async fn postgres(
    options: &SinkOptions,
    stop: &'static AtomicBool,
) -> Result<SinkCounts, SinkError> {
    match &options.source {
        SinkSource::Journal(journal) => from_journal(options, journal, stop).await,
        SinkSource::Nats(url) => from_cdr_stream(options, url, stop).await,
    }
}

/// How long a fetch from `CG_CDR` waits for messages.
const FETCH_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// `CG_CDR` through a durable pull consumer named after `options.consumer`.
async fn from_cdr_stream(
    options: &SinkOptions,
    url: &str,
    stop: &AtomicBool,
) -> Result<SinkCounts, SinkError> {
    use async_nats::jetstream::consumer::{AckPolicy, pull};
    use futures_util::StreamExt;
    let nats = |err: &dyn std::fmt::Display| SinkError::Nats(err.to_string());
    let mut sink = PostgresSink::connect(&options.dsn, &options.consumer).await?;
    let client = async_nats::connect(url).await.map_err(|e| nats(&e))?;
    let context = async_nats::jetstream::new(client);
    let stream = context
        .get_stream(crate::jetstream::cdr::STREAM)
        .await
        .map_err(|e| SinkError::Nats(format!("stream {}: {e}", crate::jetstream::cdr::STREAM)))?;
    let consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            &options.consumer,
            pull::Config {
                durable_name: Some(options.consumer.clone()),
                ack_policy: AckPolicy::Explicit,
                max_ack_pending: i64::try_from(options.batch * 4).unwrap_or(i64::MAX),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| nats(&e))?;
    let mut counts = SinkCounts::default();
    loop {
        let mut fetched = consumer
            .fetch()
            .max_messages(options.batch)
            .expires(FETCH_WAIT)
            .messages()
            .await
            .map_err(|e| nats(&e))?;
        let mut batch = Batch::default();
        let mut taken = Vec::new();
        let mut last = 0;
        while let Some(message) = fetched.next().await {
            let message = message.map_err(|e| nats(&e))?;
            let id = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get("Nats-Msg-Id"))
                .map(|value| value.as_str().to_owned());
            let parsed = id.as_deref().and_then(|id| id.rsplit_once(':'));
            match (parsed, std::str::from_utf8(&message.payload)) {
                (Some((cdr_id, version)), Ok(json)) => match version.parse() {
                    Ok(version) => batch.push(cdr_id, version, json),
                    Err(_) => tracing::warn!("CG_CDR: a message id without a version: {id:?}"),
                },
                _ => tracing::warn!("CG_CDR: a message that is not a CDR was passed over"),
            }
            if let Ok(info) = message.info() {
                last = info.stream_sequence;
            }
            taken.push(message);
        }
        if taken.is_empty() {
            if !options.follow || stop.load(Ordering::Acquire) {
                return Ok(counts);
            }
            continue;
        }
        // The stream position is kept too, for whoever looks; the acks are what resume.
        sink.store(&batch.encode()?, last).await?;
        for message in taken {
            message.ack().await.map_err(|e| nats(&e))?;
        }
        counts.records += batch.len() as u64;
        counts.transactions += 1;
        counts.position = last;
        // A stop asked for while records keep coming: this batch is stored and acknowledged, so stop
        // now. (Checked only on an empty fetch, a steady stream, such as a simulator's, kept the sink
        // deaf to SIGTERM until its container was killed.)
        if stop.load(Ordering::Acquire) {
            return Ok(counts);
        }
    }
}

/// The journal's CDRs (its events folded).
async fn from_journal(
    options: &SinkOptions,
    journal: &std::path::Path,
    stop: &'static AtomicBool,
) -> Result<SinkCounts, SinkError> {
    let settings = journal_settings(journal)?;
    let epoch = epoch_of(journal)?;
    let mut sink = PostgresSink::connect(&options.dsn, &options.consumer).await?;
    let stored = sink.position().await?;
    if stored > 0 {
        tracing::info!(position = stored, "going on after the stored position");
    }
    // The CDRs as JetStream's `CG_CDR` takes them: their JSON alone, no record around it.
    let recorder = Recorder::new(RecorderConfig {
        types: Types::NONE,
        collect_cdrs: true,
        ..recorder_config(&settings, &epoch)
    });
    let reader = Reader::open(journal, 1)?;
    // Three stages, each waiting for the next only when two batches are ahead: the journal's fold on
    // a thread of its own, the batches' encoding into the upsert's typed columns on another, the
    // transactions here.
    let (batches, mut ready) = tokio::sync::mpsc::channel::<(Batch, Position)>(2);
    let (encoded, mut to_store) = tokio::sync::mpsc::channel::<(Encoded, Position)>(2);
    let folding = Folding {
        reader,
        recorder,
        stored,
        batch: options.batch,
        follow: options.follow,
    };
    let folder = tokio::task::spawn_blocking(move || folding.run(stop, batches));
    let encoder = tokio::task::spawn_blocking(move || -> Result<(), PostgresError> {
        while let Some((batch, position)) = ready.blocking_recv() {
            if encoded.blocking_send((batch.encode()?, position)).is_err() {
                break;
            }
        }
        Ok(())
    });
    let mut counts = SinkCounts {
        position: stored,
        ..SinkCounts::default()
    };
    while let Some((batch, position)) = to_store.recv().await {
        sink.store(&batch, position).await?;
        counts.records += batch.len() as u64;
        counts.transactions += 1;
        counts.position = position;
    }
    let joined =
        |err: tokio::task::JoinError| SinkError::Journal(ExportError::Runtime(err.to_string()));
    // A record that cannot be encoded ends the encoder (and with it the fold): its error first.
    encoder.await.map_err(joined)??;
    folder.await.map_err(joined)??;
    Ok(counts)
}

/// The journal's fold into batches of CDRs.
struct Folding {
    reader: Reader,
    recorder: Recorder,
    /// The position stored before this run.
    stored: Position,
    batch: usize,
    follow: bool,
}

impl Folding {
    /// Folds until the end of the journal (with `follow`, until `stop`), handing each batch and the
    /// position it reaches to `batches`; stops early when the receiver is gone (a failed commit).
    fn run(
        mut self,
        stop: &AtomicBool,
        batches: tokio::sync::mpsc::Sender<(Batch, Position)>,
    ) -> Result<(), SinkError> {
        let mut batch = Batch::default();
        let mut lines = String::new();
        let (mut read, mut sent) = (self.stored, self.stored);
        let mut since_sent = 0u64;
        loop {
            let Some(position) = self.reader.advance()? else {
                if read > sent {
                    if batches
                        .blocking_send((std::mem::take(&mut batch), read))
                        .is_err()
                    {
                        return Ok(());
                    }
                    sent = read;
                }
                if !self.follow || stop.load(Ordering::Acquire) {
                    return Ok(());
                }
                std::thread::sleep(FOLLOW_EVERY);
                self.reader.refresh()?;
                continue;
            };
            self.recorder
                .record(&fact(position, self.reader.record()), &[], &mut lines);
            let cdrs = self.recorder.take_cdr_messages();
            if position <= self.stored {
                continue;
            }
            for cdr in &cdrs {
                take(&mut batch, cdr);
            }
            read = position;
            since_sent += 1;
            if batch.len() >= self.batch || since_sent >= PROGRESS_EVERY {
                if batches
                    .blocking_send((std::mem::take(&mut batch), read))
                    .is_err()
                {
                    return Ok(());
                }
                sent = read;
                since_sent = 0;
            }
        }
    }
}

/// Adds a CDR (`<cdrId>:<version>` and its JSON) to `batch`.
fn take(batch: &mut Batch, cdr: &crate::jetstream::cdr::CdrMessage) {
    if let Some((cdr_id, version)) = cdr.id.rsplit_once(':')
        && let Ok(version) = version.parse::<u32>()
    {
        batch.push(cdr_id, version, &cdr.json);
    }
}
