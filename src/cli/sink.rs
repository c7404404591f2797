//! `callgate sink postgres`: the call detail records of a journal into PostgreSQL (analytics.md,
//! docs/postgres.md), as a durable consumer of the journal.
//!
//! The journal is folded from its first entry (the CDRs of later positions depend on everything before
//! them) by the recorder `callgate export` uses, with the gateway's settings; records of positions the
//! consumer has stored are left out. Records go in batches, each one transaction with the position it
//! reaches, so a sink killed anywhere goes on after its last COMMIT.

use super::export::{ExportError, FOLLOW_EVERY, epoch_of, fact, journal_settings, recorder_config};
use crate::export::{Recorder, RecorderConfig, Types, record_id};
use crate::journal::{Position, Reader};
use crate::sink::postgres::{Batch, PostgresError, PostgresSink};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// Facts read with no CDR before the position is stored anyway (a restart then skips them).
const PROGRESS_EVERY: u64 = 100_000;

/// What to store, and where.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// The PostgreSQL connection string.
    pub dsn: String,
    /// The journal's folder.
    pub journal: PathBuf,
    /// The consumer's name: where it stands is kept under it.
    pub consumer: String,
    /// CDRs per transaction, at most.
    pub batch: usize,
    /// At the end of the journal, wait for more (until interrupted).
    pub follow: bool,
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
}

impl From<crate::journal::JournalError> for SinkError {
    fn from(error: crate::journal::JournalError) -> Self {
        SinkError::Journal(ExportError::Journal(error))
    }
}

/// Stores the journal's CDRs; stops at its end, or with `follow` once `stop` is set.
pub async fn postgres(options: &SinkOptions, stop: &AtomicBool) -> Result<SinkCounts, SinkError> {
    let settings = journal_settings(&options.journal)?;
    let epoch = epoch_of(&options.journal)?;
    let mut sink = PostgresSink::connect(&options.dsn, &options.consumer).await?;
    let stored = sink.position().await?;
    if stored > 0 {
        tracing::info!(position = stored, "going on after the stored position");
    }
    let mut recorder = Recorder::new(RecorderConfig {
        types: Types {
            event: false,
            notification: false,
            cdr: true,
        },
        from: stored.saturating_add(1),
        ..recorder_config(&settings, &epoch)
    });
    let mut reader = Reader::open(&options.journal, 1)?;
    let mut counts = SinkCounts {
        position: stored,
        ..SinkCounts::default()
    };
    let mut batch = Batch::default();
    let mut lines = String::new();
    let mut read = stored;
    let mut since_stored = 0u64;
    loop {
        let Some(position) = reader.advance()? else {
            if read > counts.position {
                commit(&mut sink, &mut batch, read, &mut counts).await?;
            }
            if !options.follow || stop.load(Ordering::Acquire) {
                break;
            }
            tokio::time::sleep(FOLLOW_EVERY).await;
            reader.refresh()?;
            continue;
        };
        recorder.record(&fact(position, reader.record()), &[], &mut lines);
        for line in lines.lines() {
            take(&mut batch, line);
        }
        lines.clear();
        if position <= stored {
            continue;
        }
        read = position;
        since_stored += 1;
        if batch.len() >= options.batch || since_stored >= PROGRESS_EVERY {
            commit(&mut sink, &mut batch, read, &mut counts).await?;
            since_stored = 0;
        }
    }
    Ok(counts)
}

async fn commit(
    sink: &mut PostgresSink,
    batch: &mut Batch,
    position: Position,
    counts: &mut SinkCounts,
) -> Result<(), PostgresError> {
    sink.store(batch, position).await?;
    counts.records += batch.len() as u64;
    counts.transactions += 1;
    counts.position = position;
    batch.clear();
    Ok(())
}

/// Adds the CDR of a record line to `batch`.
fn take(batch: &mut Batch, line: &str) {
    let Some((cdr_id, version)) = record_id(line).and_then(|id| id.rsplit_once(':')) else {
        return;
    };
    let (Ok(version), Some(start)) = (version.parse::<u32>(), line.find(",\"data\":")) else {
        return;
    };
    // The record ends with the CDR's closing brace and the envelope's.
    if let Some(data) = line.get(start + 8..line.len().saturating_sub(1)) {
        batch.push(cdr_id, version, data);
    }
}
