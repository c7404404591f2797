//! `callgate export`: the records of a journal as CloudEvents NDJSON (analytics.md, "The export").
//!
//! The journal is folded from its first entry by the gateway's own pipeline (the reducer shards and the
//! publisher, with the journal's ticks for its clock) and the same [`Recorder`] `serve --analytics-out`
//! uses, with the settings the gateway kept beside the journal: the records are the ones the gateway
//! wrote. Only event records need no fold of notifications; then the pipeline is left out.

use crate::event::Micros;
use crate::export::settings::Settings;
use crate::export::sink::{Output, SinkError};
use crate::export::stage::Stage;
use crate::export::{Fact, Recorder, RecorderConfig, RecorderCounts, Tapped, Types};
use crate::journal::{JournalError, Position, Reader, Record};
use crate::pipeline::{Pipeline, PipelineConfig, Replay};
use crate::stream::Stream;
use crate::supervise::Supervisor;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often `--follow` looks for more of the journal.
const FOLLOW_EVERY: Duration = Duration::from_millis(100);

/// What to export, and where.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The journal's folder.
    pub journal: PathBuf,
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

/// Exports the records of `options.journal`; stops at its end, or with `--follow` once `stop` is set.
pub fn export(options: &ExportOptions, stop: &AtomicBool) -> Result<RecorderCounts, ExportError> {
    let settings = settings_of(options)?;
    let epoch_path = options.journal.join("epoch");
    let epoch = std::fs::read_to_string(&epoch_path)
        .map(|text| text.trim().to_owned())
        .map_err(|source| ExportError::Settings {
            path: epoch_path,
            source,
        })?;
    let output = Output::open(&options.out)?;
    let recorder = Recorder::new(RecorderConfig {
        types: options.types,
        origin: crate::export::cloudevent::Origin {
            node: settings.node.clone(),
            epoch: epoch.clone(),
        },
        cdr: crate::cdr::CdrConfig {
            linger: secs_to_micros(settings.released_linger_secs),
            late_window: secs_to_micros(settings.cdr_late_window_secs),
            disposition_key: settings.cdr_disposition_key.clone(),
            ..crate::cdr::CdrConfig::default()
        },
        from: options.from,
        since: options.since,
        resume: output.resume(),
    });
    let stage = Stage::new(recorder, output);
    let reader = Reader::open(&options.journal, 1)?;
    if options.types.notification {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(settings.shards.clamp(1, 4))
            .enable_all()
            .build()
            .map_err(|err| ExportError::Runtime(format!("cannot start the runtime: {err}")))?;
        runtime.block_on(through_pipeline(
            stage,
            reader,
            &settings,
            &epoch,
            options.follow,
            stop,
        ))
    } else {
        events_only(stage, reader, options.follow, stop)
    }
}

/// The journal's settings (defaults when it has none), under the command line's.
fn settings_of(options: &ExportOptions) -> Result<Settings, ExportError> {
    let kept = Settings::load(&options.journal).map_err(|source| ExportError::Settings {
        path: options.journal.join(crate::export::settings::FILE),
        source,
    })?;
    let mut settings = kept.unwrap_or_else(|| Settings {
        node: crate::serve::config::host_name(),
        base_url: crate::reduce::DEFAULT_BASE_URL.to_owned(),
        shards: std::thread::available_parallelism().map_or(2, usize::from),
        released_linger_secs: 30.0,
        stale_call_after_secs: 43_200.0,
        max_calls: crate::reduce::DEFAULT_MAX_CALLS,
        cdr_late_window_secs: 3600.0,
        cdr_disposition_key: "DispositionCode".to_owned(),
    });
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
    Ok(settings)
}

fn secs_to_micros(secs: f64) -> Micros {
    (secs * 1e6) as Micros
}

/// Events and CDRs need no notifications: the journal goes straight to the recorder.
fn events_only(
    mut stage: Stage,
    mut reader: Reader,
    follow: bool,
    stop: &AtomicBool,
) -> Result<RecorderCounts, ExportError> {
    let mut batch = Vec::with_capacity(512);
    loop {
        match reader.advance()? {
            Some(position) => {
                batch.push(Tapped {
                    fact: fact(position, reader.record()),
                    notes: Vec::new(),
                });
                if batch.len() >= 512 {
                    stage.take(&batch)?;
                    batch.clear();
                    stage.sync_if_due()?;
                }
            }
            None => {
                stage.take(&batch)?;
                batch.clear();
                if !follow || stop.load(Ordering::Acquire) {
                    break;
                }
                stage.sync_if_due()?;
                std::thread::sleep(FOLLOW_EVERY);
                reader.refresh()?;
            }
        }
    }
    stage.sync()?;
    Ok(stage.counts())
}

fn fact(position: Position, record: Record<'_>) -> Fact {
    match record {
        Record::Event { arrival, line, .. } => Fact::Event {
            position,
            arrival,
            line: bytes::Bytes::copy_from_slice(line),
        },
        Record::Tick { wall } => Fact::Tick { position, wall },
    }
}

/// The journal through the gateway's pipeline, whose publisher hands the stage every fact with its
/// notifications.
async fn through_pipeline(
    stage: Stage,
    mut reader: Reader,
    settings: &Settings,
    epoch: &str,
    follow: bool,
    stop: &AtomicBool,
) -> Result<RecorderCounts, ExportError> {
    let supervisor = Supervisor::new();
    let (tap, batches) = tokio::sync::mpsc::channel(crate::export::stage::QUEUE);
    let runtime = tokio::runtime::Handle::current();
    let stage = tokio::task::spawn_blocking(move || stage.run(batches, runtime));
    // A stream nobody reads: deferred, it only numbers the notifications.
    let stream = Arc::new(Stream::new(
        epoch,
        0,
        crate::delivery::OutboxLimits::default(),
    ));
    stream.defer();
    let (pipeline, published_all) = Pipeline::start(
        PipelineConfig {
            shards: settings.shards,
            reducer: crate::reduce::ReducerConfig {
                base_url: settings.base_url.clone(),
                max_calls: settings.max_calls,
                max_devices: crate::reduce::DEFAULT_MAX_DEVICES,
            },
            released_linger: Duration::from_secs_f64(settings.released_linger_secs.max(0.0)),
            stale_call_after: (settings.stale_call_after_secs > 0.0)
                .then(|| Duration::from_secs_f64(settings.stale_call_after_secs)),
            queue_depth: crate::pipeline::SHARD_QUEUE,
            tap: Some(tap),
        },
        stream,
        &supervisor,
    );
    let read = replay(&pipeline, &mut reader, follow, stop).await;
    supervisor.stop();
    pipeline.close().await;
    let _ = published_all.await;
    drop(pipeline);
    let written = stage
        .await
        .map_err(|err| ExportError::Runtime(format!("the record writer died: {err}")))?;
    read?;
    if let Some(cause) = supervisor.cause() {
        return Err(ExportError::Runtime(cause));
    }
    Ok(written?)
}

async fn replay(
    pipeline: &Pipeline,
    reader: &mut Reader,
    follow: bool,
    stop: &AtomicBool,
) -> Result<(), ExportError> {
    let mut replay = Replay::new(pipeline);
    loop {
        match reader.advance()? {
            Some(position) => match reader.record() {
                Record::Event { arrival, line, .. } => {
                    replay.event(position, arrival, line).await;
                }
                Record::Tick { wall } => replay.tick(position, wall).await,
            },
            None => {
                if !follow || stop.load(Ordering::Acquire) {
                    break;
                }
                replay.flush().await;
                tokio::time::sleep(FOLLOW_EVERY).await;
                reader.refresh()?;
            }
        }
    }
    replay.finish().await;
    Ok(())
}

/// An RFC 3339 time (`2025-11-23T12:13:20.250Z`, or with an offset) in µs since the Unix epoch.
pub fn parse_time(text: &str) -> Option<Micros> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = text.get(range)?;
        digits
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[13] != b':' {
        return None;
    }
    if !matches!(bytes[10], b'T' | b't' | b' ') || bytes[16] != b':' {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut at = 19;
    let mut micros = 0i64;
    if bytes.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while bytes.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        let fraction = text.get(start..at)?;
        if fraction.is_empty() {
            return None;
        }
        let six: String = fraction
            .chars()
            .chain(std::iter::repeat('0'))
            .take(6)
            .collect();
        micros = six.parse().ok()?;
    }
    let offset_minutes = match text.get(at..)? {
        "Z" | "z" => 0,
        zone if zone.len() == 6 && matches!(zone.as_bytes()[0], b'+' | b'-') => {
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let hours = number(at + 1..at + 3)?;
            let minutes = number(at + 4..at + 6)?;
            sign * (hours * 60 + minutes)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1_000_000 + micros)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
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
