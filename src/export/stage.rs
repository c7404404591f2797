//! The stage that writes records as the pipeline publishes (`serve --analytics-out`, and `callgate
//! export` when it needs notifications): a blocking thread, so a slow disk never holds a runtime worker.
//!
//! At its bound (the channel from the publisher) the publisher waits: analytics output is lossless, so it
//! pushes back on ingest like the journal does, rather than dropping records. A failed write ends the
//! stage, which ends the gateway (supervised); with a journal the restart replays it and the file sink
//! goes on where the file ends.

use super::sink::{Output, SinkError};
use super::{Recorder, Tapped};
use tokio::sync::mpsc;

/// Batches queued between the publisher and the stage (one per ingest read or tick: at 20,000 events/s
/// in reads of a few events, a few hundred arrive between two drains). A batch holds its events' lines
/// (copied, at most one socket read's worth) and, when recorded, its notifications' text: at the bound,
/// while the stage is stalled, that is at most 2,048 reads' worth of events.
pub const QUEUE: usize = 2048;

/// How often the stage takes what has queued. Waking this thread for every batch cost more CPU than
/// recording the batch (measured: +46% of the gateway's CPU at 20,000 events/s, most of it wake-ups);
/// records then leave at most this much later. 25 ms rather than 5: the stage's thread took 22% less CPU
/// at 20,000 events/s (its caches are cold after each sleep, and larger batches pay that less often;
/// docs/benchmarks.md). At the bound, 2,048 batches queued in 25 ms is over 80,000 socket reads a
/// second, far beyond any ingest.
const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(25);

/// Lines are written once this much is gathered (and at the end of every batch).
const WRITE_AT: usize = 256 * 1024;

/// The recorder and its output.
pub struct Stage {
    recorder: Recorder,
    output: Output,
    lines: String,
    /// JetStream's `CG_CDR` (with `--nats`).
    cdr_stream: Option<crate::jetstream::cdr::CdrPublisher>,
}

impl Stage {
    /// A stage writing `recorder`'s records to `output`.
    pub fn new(recorder: Recorder, output: Output) -> Stage {
        Stage {
            recorder,
            output,
            lines: String::with_capacity(WRITE_AT + 64 * 1024),
            cdr_stream: None,
        }
    }

    /// Also publishes every CDR to `CG_CDR` (the recorder collects them).
    pub fn publishing_cdrs(mut self, publisher: crate::jetstream::cdr::CdrPublisher) -> Stage {
        self.cdr_stream = Some(publisher);
        self
    }

    /// Takes batches until the channel closes (the publisher is done), then syncs. Runs on a blocking
    /// thread; `runtime` is the runtime the channel belongs to.
    pub fn run(
        mut self,
        mut batches: mpsc::Receiver<Vec<Tapped>>,
        runtime: tokio::runtime::Handle,
    ) -> Result<super::RecorderCounts, SinkError> {
        loop {
            std::thread::sleep(DRAIN_EVERY);
            let mut closed = false;
            loop {
                match batches.try_recv() {
                    Ok(batch) => self.record(&batch)?,
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            self.flush()?;
            if let Some(publisher) = &mut self.cdr_stream {
                let messages = self.recorder.take_cdr_messages();
                if !messages.is_empty() {
                    runtime.block_on(publisher.publish(&messages));
                }
            }
            self.output.sync_if_due()?;
            if closed {
                break;
            }
        }
        self.output.sync()?;
        Ok(self.recorder.counts())
    }

    /// Whether its recorder needs the notifications' text (see [`Recorder::needs_notes`]).
    pub fn needs_notes(&self) -> bool {
        self.recorder.needs_notes()
    }

    /// Whether its recorder needs the events' lines as received (see [`Recorder::needs_lines`]).
    pub fn needs_lines(&self) -> bool {
        self.recorder.needs_lines()
    }

    /// Records one batch and writes it.
    pub fn take(&mut self, batch: &[Tapped]) -> Result<(), SinkError> {
        self.record(batch)?;
        self.flush()
    }

    /// Records one batch; writes only once [`WRITE_AT`] bytes are gathered.
    fn record(&mut self, batch: &[Tapped]) -> Result<(), SinkError> {
        for tapped in batch {
            self.recorder
                .record(&tapped.fact, &tapped.notes, &mut self.lines);
            if self.lines.len() >= WRITE_AT {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Writes what is gathered.
    pub fn flush(&mut self) -> Result<(), SinkError> {
        if self.lines.is_empty() {
            return Ok(());
        }
        let written = self.output.write(&self.lines);
        self.lines.clear();
        written
    }

    /// The recorder's counts so far.
    pub fn counts(&self) -> super::RecorderCounts {
        self.recorder.counts()
    }

    /// Syncs the output when due.
    pub fn sync_if_due(&mut self) -> Result<(), SinkError> {
        self.output.sync_if_due()
    }

    /// Syncs everything written.
    pub fn sync(&mut self) -> Result<(), SinkError> {
        self.output.sync()
    }
}
