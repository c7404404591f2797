//! The journal in a running gateway.
//!
//! The pipeline's admitter owns the [`Journal`]: it appends each admitted event (and each clock tick) and
//! writes the batch to the OS before it hands the batch to the reducer shards. So every notification a
//! client can see comes from an entry already written, and a crash of the process (whose writes the OS
//! keeps) never leaves clients with notifications a restart cannot replay with the same `seq`. A write is a
//! copy into the page cache; when the disk cannot keep up, the OS slows it down, and the T-Servers with it.
//!
//! Syncing is the one slow step, so a thread of the blocking pool does it ([`start`]): with `always` as soon
//! as anything is written, with `batch` at most every [`SYNC_EVERY`]. It publishes the durable position;
//! ingest connections ack only what is durable ([`Progress`]).

use super::{JournalError, Opened, Position, Record, Writer};
use crate::supervise::Supervisor;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often `--journal-fsync batch` syncs, at most (analytics.md).
pub const SYNC_EVERY: Duration = Duration::from_millis(100);

/// When the journal is made durable (`--journal-fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// As soon as anything is written (the syncs group what arrives meanwhile).
    Always,
    /// At most every 100 ms.
    Batch,
    /// Never: durable means written to the OS (survives a crash of the process, not of the machine).
    Never,
}

/// What the admitter and the sync thread share.
struct Shared {
    /// The segment being written, for the sync thread.
    file: Mutex<File>,
    written: watch::Sender<Position>,
    durable: watch::Sender<Position>,
    /// Set when the admitter's side is gone: the thread syncs a last time and ends.
    closed: AtomicBool,
    /// Set when the journal can no longer be trusted (a failed sync, a rotated segment that cannot be
    /// reopened): the thread ends with the error, and the gateway with it.
    failed: Mutex<Option<String>>,
    /// The sync thread, to wake.
    thread: OnceLock<std::thread::Thread>,
}

impl Shared {
    fn wake(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }
}

/// How far the journal is written to the OS and durable (the last position of each).
#[derive(Clone)]
pub struct Progress {
    written: watch::Receiver<Position>,
    durable: watch::Receiver<Position>,
}

impl Progress {
    /// The last position written to the OS.
    pub fn written(&self) -> Position {
        *self.written.borrow()
    }

    /// The last position durable (by the policy's meaning).
    pub fn durable(&self) -> Position {
        *self.durable.borrow()
    }

    /// Waits until `position` is durable, at most `wait`; whether it is.
    pub async fn durable_within(&mut self, position: Position, wait: Duration) -> bool {
        let reached = self.durable.wait_for(|&durable| durable >= position);
        matches!(tokio::time::timeout(wait, reached).await, Ok(Ok(_)))
    }
}

/// The admitter's end of the journal.
pub struct Journal {
    writer: Writer,
    shared: Arc<Shared>,
    /// The segment whose file the sync thread holds.
    segment: Position,
    /// `--journal-max-bytes`, and the bytes the journal's segments hold (retention subtracts what it
    /// deletes).
    bound: Option<(u64, Arc<AtomicU64>)>,
}

/// Why the journal took nothing.
#[derive(Debug, thiserror::Error)]
#[error("the journal cannot be written: {0}")]
pub struct Failed(pub String);

impl Journal {
    /// Encodes `record` as the next entry (written by [`Journal::write`]); its position.
    pub fn append(&mut self, record: &Record<'_>) -> Position {
        self.writer.append(record)
    }

    /// The last position given (0 before any).
    pub fn last(&self) -> Position {
        self.writer.next_position() - 1
    }

    /// Refuses writes that would take the segments past `max` bytes; `stored` holds what they hold now
    /// (kept up to date by the writes and by retention).
    pub fn bound(&mut self, max: u64, stored: Arc<AtomicU64>) {
        self.bound = Some((max, stored));
    }

    /// Writes what was appended to the OS and wakes the sync thread. When the write fails (a full disk)
    /// the entries appended since the last write are dropped, their positions given again, and the caller
    /// must not apply them; later writes are tried again. After a failed sync every write fails: the
    /// sync thread ends the gateway (docs/journal.md).
    pub fn write(&mut self) -> Result<(), Failed> {
        if let Some(reason) = lock(&self.shared.failed).as_ref() {
            return Err(Failed(reason.clone()));
        }
        let pending = self.writer.pending_bytes() as u64;
        if pending == 0 {
            return Ok(());
        }
        if let Some((max, stored)) = &self.bound {
            let held = stored.load(Ordering::Acquire);
            if held.saturating_add(pending) > *max {
                self.writer.discard();
                return Err(Failed(format!(
                    "it holds {held} bytes, and --journal-max-bytes is {max} (segments go once they are older than --journal-retention and no live call needs them)"
                )));
            }
        }
        if let Err(error) = self.writer.write() {
            return Err(Failed(error.to_string()));
        }
        if let Some((_, stored)) = &self.bound {
            stored.fetch_add(pending, Ordering::AcqRel);
        }
        if self.writer.segment_first() != self.segment {
            // Rotated: the old segment was synced by the writer; the thread syncs the new one from now.
            match self.writer.file_clone() {
                Ok(file) => *lock(&self.shared.file) = file,
                Err(error) => {
                    let reason = error.to_string();
                    *lock(&self.shared.failed) = Some(reason.clone());
                    self.shared.wake();
                    return Err(Failed(reason));
                }
            }
            self.segment = self.writer.segment_first();
        }
        self.shared.written.send_replace(self.last());
        self.shared.wake();
        Ok(())
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts the sync thread for the journal `opened` (supervised: it ends the gateway at the first failed
/// write or sync) and returns the admitter's end and the progress ingest connections read.
pub fn start(
    opened: Opened,
    fsync: Fsync,
    supervisor: &Supervisor,
) -> Result<(Journal, Progress), JournalError> {
    let writer = opened.writer;
    let last = writer.next_position() - 1;
    let (written_tx, written_rx) = watch::channel(last);
    let (durable_tx, durable_rx) = watch::channel(last);
    let shared = Arc::new(Shared {
        file: Mutex::new(writer.file_clone()?),
        written: written_tx,
        durable: durable_tx,
        closed: AtomicBool::new(false),
        failed: Mutex::new(None),
        thread: OnceLock::new(),
    });
    let thread_shared = Arc::clone(&shared);
    supervisor.spawn("journal", async move {
        let synced = tokio::task::spawn_blocking(move || sync_loop(&thread_shared, fsync)).await;
        match synced {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!("journal: {error}"),
            Err(panic) => tracing::error!("journal sync thread panicked: {panic}"),
        }
    });
    let journal = Journal {
        segment: writer.segment_first(),
        writer,
        shared,
        bound: None,
    };
    let progress = Progress {
        written: written_rx,
        durable: durable_rx,
    };
    Ok((journal, progress))
}

/// Syncs what is written, by the policy, until the admitter's end is dropped (a last sync then) or a
/// write or sync fails.
fn sync_loop(shared: &Shared, fsync: Fsync) -> Result<(), String> {
    let _ = shared.thread.set(std::thread::current());
    let mut last_sync = Instant::now();
    loop {
        if let Some(reason) = lock(&shared.failed).clone() {
            return Err(reason);
        }
        let closed = shared.closed.load(Ordering::Acquire);
        let written = *shared.written.borrow();
        let behind = written > *shared.durable.borrow();
        if behind && fsync == Fsync::Never {
            shared.durable.send_replace(written);
        } else if behind {
            let wait = match fsync {
                Fsync::Batch if !closed => {
                    (last_sync + SYNC_EVERY).saturating_duration_since(Instant::now())
                }
                _ => Duration::ZERO,
            };
            if wait.is_zero() {
                lock(&shared.file)
                    .sync_data()
                    .map_err(|error| format!("sync failed: {error}"))?;
                last_sync = Instant::now();
                shared.durable.send_replace(written);
                continue;
            }
            std::thread::park_timeout(wait);
            continue;
        }
        if closed {
            return Ok(());
        }
        // Woken by the next write (or, now and then, to look again).
        std::thread::park_timeout(Duration::from_secs(1));
    }
}
