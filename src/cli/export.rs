//! `callgate export`: the records of a journal or of JetStream's event streams as CloudEvents NDJSON
//! (analytics.md, "The export").
//!
//! The journal is folded from its first entry by the gateway's own pipeline (the reducer shards and the
//! publisher, with the journal's ticks for its clock) and the same [`Recorder`] `serve --analytics-out`
//! uses, with the settings the gateway kept beside the journal: the records are the ones the gateway
//! wrote. Only event records need no fold of notifications; then the pipeline is left out.
//!
//! With `--nats` the event streams are merged as a restart's recovery merges them
//! ([`crate::jetstream::read`], which also says what a record's `position` is there), folded with the
//! settings and epoch the gateway kept in JetStream.

use crate::event::Micros;
use crate::export::settings::Settings;
use crate::export::sink::{Output, SinkError};
use crate::export::stage::Stage;
use crate::export::{Fact, Recorder, RecorderConfig, RecorderCounts, Tapped, Types};
use crate::jetstream::NatsError;
use crate::jetstream::read::{Merged, Streams};
use crate::journal::{JournalError, Position, Reader, Record};
use crate::pipeline::{Pipeline, Replay};
use crate::stream::Stream;
use crate::supervise::Supervisor;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often `--follow` looks for more of the journal.
pub(crate) const FOLLOW_EVERY: Duration = Duration::from_millis(100);

/// Batches of 512 facts an export reads ahead of its records' rendering, when no pipeline is between:
/// the stage drains every 25 ms, so 64 still pass 1.3M facts a second, and at most ~32,000 facts wait.
const STRAIGHT_AHEAD: usize = 64;

/// How long `export --nats` waits for the NATS server.
const NATS_WAIT: Duration = Duration::from_secs(5);

/// Where the events are read.
#[derive(Debug, Clone)]
pub enum ExportSource {
    /// The journal in this folder (`serve --journal`).
    Journal(PathBuf),
    /// The event streams of JetStream at this NATS URL (`serve --nats`).
    Nats(String),
}

/// What to export, and where.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Where the events are.
    pub source: ExportSource,
    /// Which records.
    pub types: Types,
    /// Records of positions before this are left out.
    pub from: Position,
    /// Records of events and ticks taken before this (the gateway's clock) are left out.
    pub since: Option<Micros>,
    /// Go on with what the gateway writes after the end, until interrupted.
    pub follow: bool,
    /// The output (`-`: standard output).
    pub out: PathBuf,
    /// `--node`, over the journal's settings.
    pub node: Option<String>,
    /// `--base-url`, over the journal's settings.
    pub base_url: Option<String>,
    /// `--shards`, over the journal's settings.
    pub shards: Option<usize>,
}

/// Why `export` could not finish (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The journal cannot be read.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The output cannot be opened or written.
    #[error(transparent)]
    Output(#[from] SinkError),
    /// JetStream cannot be reached or read.
    #[error(transparent)]
    Nats(#[from] NatsError),
    /// The journal's settings or epoch cannot be read.
    #[error("{path}: {source}")]
    Settings {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The runtime could not be started, or a part of the fold died.
    #[error("{0}")]
    Runtime(String),
}

/// Where a fold of the journal stops.
#[derive(Clone, Copy)]
pub enum Until<'a> {
    /// At the end of what is written.
    End,
    /// At the end of what is written once `stop` is set; until then it waits there for more.
    Follow(&'a AtomicBool),
    /// Before the first position `handover` takes (the live feed's buffer holds everything from it);
    /// at the end of what is written `handover` is asked about the position after it.
    Handover(&'a (dyn Fn(Position) -> bool + Sync)),
}

impl Until<'_> {
    /// Whether the fold stops before the entry at `position`.
    fn before(&self, position: Position) -> bool {
        match self {
            Until::Handover(handover) => handover(position),
            Until::End | Until::Follow(_) => false,
        }
    }

    /// Whether the fold stops at the end of what is written, the next position being `next`.
    fn at_end(&self, next: Position) -> Result<bool, ExportError> {
        match self {
            Until::End => Ok(true),
            Until::Follow(stop) => Ok(stop.load(Ordering::Acquire)),
            Until::Handover(handover) if handover(next) => Ok(true),
            Until::Handover(_) => Err(ExportError::Runtime(
                "the live records no longer hold the journal's end".to_owned(),
            )),
        }
    }
}

/// Exports the records of `options.source`; stops at its end, or with `--follow` once `stop` is set.
pub fn export(options: &ExportOptions, stop: &AtomicBool) -> Result<RecorderCounts, ExportError> {
    match &options.source {
        ExportSource::Journal(journal) => export_journal(options, journal, stop),
        ExportSource::Nats(url) => {
            let runtime = runtime(2)?;
            runtime.block_on(export_nats(options, url, stop))
        }
    }
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, ExportError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.clamp(1, 4))
        .enable_all()
        .build()
        .map_err(|err| ExportError::Runtime(format!("cannot start the runtime: {err}")))
}

fn export_journal(
    options: &ExportOptions,
    journal: &std::path::Path,
    stop: &AtomicBool,
) -> Result<RecorderCounts, ExportError> {
    let settings = overridden(journal_settings(journal)?, options);
    let epoch = epoch_of(journal)?;
    let output = Output::open(&options.out)?;
    let stage = Stage::new(
        Recorder::new(exported(options, &settings, &epoch, &output)),
        output,
    );
    let until = if options.follow {
        Until::Follow(stop)
    } else {
        Until::End
    };
    let input = Input::journal(Reader::open(journal, 1)?, until);
    runtime(settings.shards)?.block_on(fold(stage, input, &settings, &epoch))
}

/// The export of JetStream's event streams, with the settings and epoch kept there.
async fn export_nats(
    options: &ExportOptions,
    url: &str,
    stop: &AtomicBool,
) -> Result<RecorderCounts, ExportError> {
    let context =
        crate::jetstream::connect(&crate::jetstream::Settings::new(url.to_owned()), NATS_WAIT)
            .await?;
    let epoch = crate::jetstream::kept_epoch(&context).await?.ok_or_else(|| {
        ExportError::Runtime(format!(
            "JetStream at {url} has no gateway's epoch (stream {}): no gateway has written there",
            crate::jetstream::GATEWAY_STREAM
        ))
    })?;
    let kept = match crate::jetstream::kept_settings(&context).await? {
        Some(kept) => kept,
        None => {
            tracing::warn!(
                "JetStream at {url} keeps no gateway settings (stream {}: the gateway is older than \
                 this export): folding with the defaults and the flags given",
                crate::jetstream::SETTINGS_STREAM
            );
            default_settings()?
        }
    };
    let settings = overridden(kept, options);
    let output = Output::open(&options.out)?;
    let stage = Stage::new(
        Recorder::new(exported(options, &settings, &epoch, &output)),
        output,
    );
    let streams = Streams::export(&context, options.follow).await?;
    let input = Input::Streams {
        streams,
        stop,
        line: bytes::Bytes::new(),
    };
    fold(stage, input, &settings, &epoch).await
}

/// The recorder of what `options` asks for.
fn exported(
    options: &ExportOptions,
    settings: &Settings,
    epoch: &str,
    output: &Output,
) -> RecorderConfig {
    RecorderConfig {
        types: options.types,
        from: options.from,
        since: options.since,
        resume: output.resume(),
        ..recorder_config(settings, epoch)
    }
}

/// The records of `types` of the journal in `journal` from position `from` on, as the gateway made
/// them, sent to `lines` until `handover` takes a position (the live feed's catch-up). Runs on a
/// blocking thread (the fold on `runtime`).
pub fn backfill(
    journal: &std::path::Path,
    types: Types,
    from: Position,
    lines: tokio::sync::mpsc::Sender<bytes::Bytes>,
    handover: &(dyn Fn(Position) -> bool + Sync),
    runtime: &tokio::runtime::Handle,
) -> Result<RecorderCounts, ExportError> {
    let settings = journal_settings(journal)?;
    let epoch = epoch_of(journal)?;
    let recorder = Recorder::new(RecorderConfig {
        types,
        from,
        ..recorder_config(&settings, &epoch)
    });
    let stage = Stage::new(recorder, Output::Channel(lines));
    let input = Input::journal(Reader::open(journal, 1)?, Until::Handover(handover));
    runtime.block_on(fold(stage, input, &settings, &epoch))
}

/// The stream's epoch kept in the journal's folder.
pub(crate) fn epoch_of(journal: &std::path::Path) -> Result<String, ExportError> {
    let path = journal.join("epoch");
    std::fs::read_to_string(&path)
        .map(|text| text.trim().to_owned())
        .map_err(|source| ExportError::Settings { path, source })
}

/// A recorder of every type, from the start, as the gateway with `settings` and `epoch` records.
pub(crate) fn recorder_config(settings: &Settings, epoch: &str) -> RecorderConfig {
    RecorderConfig {
        types: Types::ALL,
        origin: crate::export::cloudevent::Origin {
            node: settings.node.clone(),
            epoch: epoch.to_owned(),
        },
        cdr: crate::cdr::CdrConfig {
            linger: secs_to_micros(settings.released_linger_secs),
            late_window: secs_to_micros(settings.cdr_late_window_secs),
            disposition_key: settings.cdr_disposition_key.clone(),
            ..crate::cdr::CdrConfig::default()
        },
        from: 0,
        since: None,
        resume: crate::export::Resume::default(),
        feed: None,
        collect_cdrs: false,
    }
}

/// `settings` under the command line's.
fn overridden(mut settings: Settings, options: &ExportOptions) -> Settings {
    if let Some(node) = &options.node {
        settings.node = node.clone();
    }
    if let Some(base_url) = &options.base_url {
        settings.base_url = base_url.trim_end_matches('/').to_owned();
    }
    if let Some(shards) = options.shards {
        settings.shards = shards;
    }
    settings.shards = settings.shards.clamp(1, 64);
    settings
}

/// The settings kept in the journal's folder, or the gateway's defaults.
pub(crate) fn journal_settings(journal: &std::path::Path) -> Result<Settings, ExportError> {
    let kept = Settings::load(journal).map_err(|source| ExportError::Settings {
        path: journal.join(crate::export::settings::FILE),
        source,
    })?;
    match kept {
        Some(kept) => Ok(kept),
        None => default_settings(),
    }
}

/// The settings of a gateway started with no flags.
fn default_settings() -> Result<Settings, ExportError> {
    // The defaults are `serve`'s own, so they never drift apart.
    let defaults = crate::serve::ServeArgs::default()
        .resolve()
        .map_err(|err| ExportError::Runtime(err.to_string()))?;
    Ok(Settings::of(&defaults, crate::reduce::DEFAULT_BASE_URL))
}

fn secs_to_micros(secs: f64) -> Micros {
    (secs * 1e6) as Micros
}

/// Recorded input, entry by entry: a journal, or JetStream's merged event streams.
enum Input<'a> {
    /// A journal, until `until`.
    Journal {
        /// The journal.
        reader: Reader,
        /// Where the fold stops.
        until: Until<'a>,
        /// The position after the last entry read.
        next: Position,
        /// At the end of what is written: look again after a while.
        waiting: bool,
    },
    /// JetStream's event streams, to their end (following: until `stop` is set).
    Streams {
        /// The merged streams.
        streams: Streams,
        /// Set to stop following.
        stop: &'a AtomicBool,
        /// The last event's line.
        line: bytes::Bytes,
    },
}

/// One entry of the input.
enum Entry<'e> {
    /// An event line as received.
    Event {
        position: Position,
        arrival: Micros,
        line: &'e [u8],
    },
    /// The gateway's clock.
    Tick { position: Position, wall: Micros },
    /// Following: nothing more yet (a good moment to hand on what was read).
    Idle,
    /// The end.
    End,
}

impl<'a> Input<'a> {
    fn journal(reader: Reader, until: Until<'a>) -> Self {
        Input::Journal {
            next: reader.first(),
            reader,
            until,
            waiting: false,
        }
    }

    async fn next(&mut self) -> Result<Entry<'_>, ExportError> {
        match self {
            Input::Journal {
                reader,
                until,
                next,
                waiting,
            } => {
                if std::mem::take(waiting) {
                    tokio::time::sleep(FOLLOW_EVERY).await;
                    reader.refresh()?;
                }
                Ok(match reader.advance()? {
                    Some(position) if until.before(position) => Entry::End,
                    Some(position) => {
                        *next = position + 1;
                        match reader.record() {
                            Record::Event { arrival, line, .. } => Entry::Event {
                                position,
                                arrival,
                                line,
                            },
                            Record::Tick { wall } => Entry::Tick { position, wall },
                        }
                    }
                    None if until.at_end(*next)? => Entry::End,
                    None => {
                        *waiting = true;
                        Entry::Idle
                    }
                })
            }
            Input::Streams {
                streams,
                stop,
                line,
            } => Ok(match streams.next(stop).await? {
                Merged::Event {
                    position,
                    arrival,
                    line: read,
                } => {
                    *line = read;
                    Entry::Event {
                        position,
                        arrival,
                        line: &line[..],
                    }
                }
                Merged::Tick { position, wall } => Entry::Tick { position, wall },
                Merged::Idle => Entry::Idle,
                Merged::End => Entry::End,
            }),
        }
    }
}

/// The input folded into the stage's records: through the gateway's pipeline when notifications are
/// recorded, else straight to the recorder (events and CDRs need no notifications).
async fn fold(
    stage: Stage,
    input: Input<'_>,
    settings: &Settings,
    epoch: &str,
) -> Result<RecorderCounts, ExportError> {
    if stage.needs_notes() {
        through_pipeline(stage, input, settings, epoch).await
    } else {
        straight(stage, input).await
    }
}

/// The stage recording on a blocking thread of its own, fed batches of facts through a queue.
struct RecordWriter(tokio::task::JoinHandle<Result<RecorderCounts, SinkError>>);

impl RecordWriter {
    /// Starts `stage` with a queue of `capacity` batches; the sender feeds it, and dropping it ends it.
    fn start(stage: Stage, capacity: usize) -> (tokio::sync::mpsc::Sender<Vec<Tapped>>, Self) {
        let (tap, batches) = tokio::sync::mpsc::channel(capacity);
        let runtime = tokio::runtime::Handle::current();
        let writer = tokio::task::spawn_blocking(move || stage.run(batches, runtime));
        (tap, Self(writer))
    }

    /// What it wrote, once its queue's senders are gone and it has drained it.
    async fn finish(self) -> Result<Result<RecorderCounts, SinkError>, ExportError> {
        self.0
            .await
            .map_err(|err| ExportError::Runtime(format!("the record writer died: {err}")))
    }
}

/// The input straight to the stage, on a thread of its own as the pipeline's tap feeds it.
async fn straight(stage: Stage, mut input: Input<'_>) -> Result<RecorderCounts, ExportError> {
    // Bounded well below the tap's queue: the reader outruns the records' rendering, and what waits
    // is memory.
    let (tap, stage) = RecordWriter::start(stage, STRAIGHT_AHEAD);
    let read = async {
        let mut batch = Vec::with_capacity(512);
        loop {
            let fact = match input.next().await? {
                Entry::Event {
                    position,
                    arrival,
                    line,
                } => Fact::Event {
                    position,
                    arrival,
                    line: bytes::Bytes::copy_from_slice(line),
                    decoded: None,
                },
                Entry::Tick { position, wall } => Fact::Tick { position, wall },
                // A stage that failed (its output gone) ends a follower at once, and says why below.
                Entry::Idle if tap.is_closed() => return Ok(()),
                Entry::Idle if batch.is_empty() => continue,
                Entry::Idle => {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(512));
                    // Closed: the stage failed, and says why below.
                    if tap.send(full).await.is_err() {
                        return Ok(());
                    }
                    continue;
                }
                Entry::End => break,
            };
            batch.push(Tapped {
                fact,
                notes: Vec::new(),
            });
            if batch.len() >= 512 {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(512));
                if tap.send(full).await.is_err() {
                    return Ok(());
                }
            }
        }
        if !batch.is_empty() {
            let _ = tap.send(batch).await;
        }
        Ok::<(), ExportError>(())
    }
    .await;
    drop(tap);
    let written = stage.finish().await?;
    read?;
    Ok(written?)
}

/// The recorder's fact of the journal entry at `position`.
pub(crate) fn fact(position: Position, record: Record<'_>) -> Fact {
    match record {
        Record::Event { arrival, line, .. } => Fact::Event {
            position,
            arrival,
            line: bytes::Bytes::copy_from_slice(line),
            decoded: None,
        },
        Record::Tick { wall } => Fact::Tick { position, wall },
    }
}

/// The input through the gateway's pipeline, whose publisher hands the stage every fact with its
/// notifications.
async fn through_pipeline(
    stage: Stage,
    input: Input<'_>,
    settings: &Settings,
    epoch: &str,
) -> Result<RecorderCounts, ExportError> {
    let supervisor = Supervisor::new();
    let lines = stage.needs_lines();
    let (tap, stage) = RecordWriter::start(stage, crate::export::stage::QUEUE);
    // A stream nobody reads: deferred, it only numbers the notifications.
    let stream = Arc::new(Stream::new(
        epoch,
        0,
        crate::delivery::OutboxLimits::default(),
    ));
    stream.defer();
    let (pipeline, published_all) = Pipeline::start(
        settings.pipeline(Some(crate::pipeline::Tap {
            sender: tap,
            notes: true,
            lines,
        })),
        stream,
        &supervisor,
    );
    let read = replay(&pipeline, input).await;
    supervisor.stop();
    pipeline.close().await;
    let _ = published_all.await;
    drop(pipeline);
    let written = stage.finish().await?;
    read?;
    if let Some(cause) = supervisor.cause() {
        return Err(ExportError::Runtime(cause));
    }
    Ok(written?)
}

async fn replay(pipeline: &Pipeline, mut input: Input<'_>) -> Result<(), ExportError> {
    let mut replay = Replay::new(pipeline);
    loop {
        match input.next().await? {
            Entry::Event {
                position,
                arrival,
                line,
            } => replay.event(position, arrival, line).await,
            Entry::Tick { position, wall } => replay.tick(position, wall).await,
            Entry::Idle => replay.flush().await,
            Entry::End => break,
        }
    }
    replay.finish().await;
    Ok(())
}

/// An RFC 3339 time (`2025-11-23T12:13:20.250Z`, or with an offset) in µs since the Unix epoch.
pub fn parse_time(text: &str) -> Option<Micros> {
    let at =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Micros::try_from(at.unix_timestamp_nanos().div_euclid(1000)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_parse_to_micros() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_time("2025-11-23T12:13:20.250Z"),
            Some(1_763_900_000_250_000)
        );
        assert_eq!(
            parse_time("2025-11-23T13:13:20.25+01:00"),
            Some(1_763_900_000_250_000)
        );
        assert_eq!(
            parse_time("2000-02-29T00:00:00Z"),
            Some(951_782_400_000_000)
        );
        for bad in [
            "",
            "2025-11-23",
            "2025-13-01T00:00:00Z",
            "2025-11-23T12:13:20",
            "x025-11-23T12:13:20Z",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }
}
