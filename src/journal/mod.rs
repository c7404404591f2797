//! The journal (analytics.md): every accepted event line, in the order the sequencer admitted it, kept in
//! segment files so that an ingest ack can promise the event survives a crash of the gateway, and a
//! restart can replay it through the reducer.
//!
//! This module is storage only, synchronous and free of the pipeline: [`open`] repairs a torn tail and
//! returns the [`Writer`]; a [`Reader`] reads entries from any position. Positions count entries from 1
//! across segments and are never given twice to entries that reached the disk. Besides events, the
//! journal holds the pipeline's clock ticks ([`Record::Tick`]), so that time-driven changes (a released
//! call forgotten, a stale call released) replay at the same place in the stream. docs/journal.md has the
//! design and the promises.

pub mod entry;
pub mod live;
pub mod retention;
pub mod segment;
mod writer;

pub use entry::Record;
pub use writer::Writer;

use entry::EntryError;
use segment::{Broken, Entries, Segment};
use std::path::{Path, PathBuf};

/// An entry's number: 1, 2, 3, ... across segments.
pub type Position = u64;

/// Segments are closed at this size (analytics.md: 64 MiB).
pub const ROTATE_AT: u64 = 64 * 1024 * 1024;

/// Why the journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A file operation failed.
    #[error("journal {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A segment that does not start as one.
    #[error("journal {0}: not a callgate journal segment")]
    NotAJournal(PathBuf),
    /// An entry that is not whole where a whole one must be (not the torn tail a crash leaves).
    #[error(
        "journal {path}: the entry at byte {offset} is damaged ({why}); entries after it cannot be read"
    )]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// Where the entry starts.
        offset: u64,
        /// What is wrong with it.
        why: EntryError,
    },
    /// A segment that does not begin where the one before it ends.
    #[error("journal {path}: expected to begin at position {expected}, it begins at {found}")]
    Gap {
        /// The segment.
        path: PathBuf,
        /// The position after the previous segment's last entry.
        expected: Position,
        /// The segment's first position.
        found: Position,
    },
}

impl JournalError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        JournalError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// Whether the disk (or the file size limit) is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, JournalError::Io { source, .. }
            if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EFBIG) | Some(libc::EDQUOT)))
    }
}

/// What [`open`] cut off the end of the journal: a torn last entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    /// The segment.
    pub path: PathBuf,
    /// Where the cut was made (the segment's new length).
    pub offset: u64,
    /// How many bytes were cut.
    pub cut: u64,
    /// What was wrong with the first entry cut.
    pub why: EntryError,
}

/// The journal, opened for appending.
pub struct Opened {
    /// Appends after the last whole entry.
    pub writer: Writer,
    /// The oldest position still held (the first to replay).
    pub first: Position,
    /// What was cut off the end, when anything was.
    pub repaired: Option<Repair>,
}

/// Opens the journal in `dir` (made when missing): cuts a torn last entry off its last segment, and
/// continues after the last whole entry, closing segments at `rotate_at` bytes.
pub fn open(dir: &Path, rotate_at: u64) -> Result<Opened, JournalError> {
    std::fs::create_dir_all(dir).map_err(|source| JournalError::io(dir, source))?;
    let mut segments = segment::list(dir)?;
    // A segment created by a crashed run before its magic reached the disk holds no entry.
    while let Some(last) = segments.last() {
        let length = file_length(&last.path)?;
        if length >= segment::MAGIC.len() as u64 {
            break;
        }
        std::fs::remove_file(&last.path).map_err(|source| JournalError::io(&last.path, source))?;
        writer::sync_dir(dir)?;
        segments.pop();
    }
    let Some(last) = segments.last() else {
        let writer = Writer::create(dir, 1, rotate_at)?;
        return Ok(Opened {
            writer,
            first: 1,
            repaired: None,
        });
    };
    let scanned = segment::scan(&last.path)?;
    let repaired = match scanned.broken {
        None => None,
        Some((offset, why)) => Some(cut_tail(&last.path, offset, why)?),
    };
    let next = last.first + scanned.entries;
    let writer = Writer::resume(dir, &last.path, last.first, scanned.whole, next, rotate_at)?;
    Ok(Opened {
        writer,
        first: segments.first().map_or(1, |segment| segment.first),
        repaired,
    })
}

/// Cuts the segment at `path` to `offset` bytes, durably. Only a torn tail is cut: every entry after the
/// first broken one was written after it, so none of them was covered by a completed sync (an ack).
fn cut_tail(path: &Path, offset: u64, why: EntryError) -> Result<Repair, JournalError> {
    let length = file_length(path)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|source| JournalError::io(path, source))?;
    file.set_len(offset)
        .and_then(|()| file.sync_all())
        .map_err(|source| JournalError::io(path, source))?;
    Ok(Repair {
        path: path.to_owned(),
        offset,
        cut: length.saturating_sub(offset),
        why,
    })
}

fn file_length(path: &Path) -> Result<u64, JournalError> {
    std::fs::metadata(path)
        .map(|metadata| metadata.len())
        .map_err(|source| JournalError::io(path, source))
}

/// Reads entries in position order, across segments.
pub struct Reader {
    dir: PathBuf,
    segments: Vec<Segment>,
    /// The segment being read (an index into `segments`).
    index: usize,
    entries: Option<Entries>,
    /// The position of the next entry [`Reader::advance`] reads.
    next: Position,
    /// Entries before this one are skipped.
    from: Position,
}

impl Reader {
    /// A reader of the journal in `dir` from position `from` (or from the oldest entry held, when that is
    /// later: see [`Reader::first`]).
    pub fn open(dir: &Path, from: Position) -> Result<Reader, JournalError> {
        let segments = segment::list(dir)?;
        // The segment holding `from`: the last one that begins at or before it.
        let index = segments
            .iter()
            .rposition(|segment| segment.first <= from)
            .unwrap_or(0);
        let next = segments.get(index).map_or(1, |segment| segment.first);
        Ok(Reader {
            dir: dir.to_owned(),
            segments,
            index,
            entries: None,
            next,
            from,
        })
    }

    /// The oldest position the journal holds.
    pub fn first(&self) -> Position {
        self.segments.first().map_or(1, |segment| segment.first)
    }

    /// Moves to the next entry: its position, or `None` at the end of what is written (a torn or
    /// half-written last entry counts as not written yet).
    pub fn advance(&mut self) -> Result<Option<Position>, JournalError> {
        loop {
            let Some(segment) = self.segments.get(self.index) else {
                return Ok(None);
            };
            let entries = match &mut self.entries {
                Some(entries) => entries,
                None => {
                    if segment.first != self.next {
                        return Err(JournalError::Gap {
                            path: segment.path.clone(),
                            expected: self.next,
                            found: segment.first,
                        });
                    }
                    self.entries.insert(Entries::open(&segment.path)?)
                }
            };
            let last = self.index + 1 == self.segments.len();
            match entries.advance() {
                Ok(true) => {
                    let position = self.next;
                    self.next += 1;
                    if position >= self.from {
                        return Ok(Some(position));
                    }
                }
                Ok(false) if last => return Ok(None),
                Err(Broken::Entry(_, EntryError::Short)) if last => {
                    // Half written (or torn): read again from its start once more is written.
                    entries.rewind()?;
                    return Ok(None);
                }
                Ok(false) => {
                    self.index += 1;
                    self.entries = None;
                }
                Err(Broken::Entry(offset, why)) => {
                    return Err(JournalError::Corrupt {
                        path: segment.path.clone(),
                        offset,
                        why,
                    });
                }
                Err(Broken::Io(error)) => return Err(error),
            }
        }
    }

    /// Looks again for segments begun since the reader was opened, so that [`Reader::advance`], which
    /// returned `None` at the end of what was written, reads on from there (`callgate export
    /// --follow`). Retention may have deleted segments meanwhile; the one being read stays open.
    pub fn refresh(&mut self) -> Result<(), JournalError> {
        let reading = self.segments.get(self.index).map(|segment| segment.first);
        let segments = segment::list(&self.dir)?;
        self.index = match reading {
            Some(first) => segments
                .iter()
                .position(|segment| segment.first == first)
                .unwrap_or(0),
            None => segments
                .iter()
                .rposition(|segment| segment.first <= self.next)
                .unwrap_or(0),
        };
        self.segments = segments;
        Ok(())
    }

    /// The entry [`Reader::advance`] moved to.
    pub fn record(&self) -> Record<'_> {
        match &self.entries {
            Some(entries) => entries.record(),
            None => Record::Tick { wall: 0 },
        }
    }
}

/// The epoch kept in the journal's folder (api.md: unchanged across restarts with a journal), made with
/// `make` on first use, and made anew when retention has deleted the journal's first segments: a replay
/// from a later position cannot promise the `seq` the last run gave (docs/journal.md, "Retention").
pub fn epoch(dir: &Path, make: impl FnOnce() -> String) -> Result<String, JournalError> {
    let path = dir.join("epoch");
    let whole = retention::first_position(dir)? <= 1;
    match std::fs::read_to_string(&path) {
        Ok(text) if whole && !text.trim().is_empty() => return Ok(text.trim().to_owned()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(JournalError::io(&path, source)),
    }
    std::fs::create_dir_all(dir).map_err(|source| JournalError::io(dir, source))?;
    let epoch = make();
    let temporary = dir.join("epoch.new");
    std::fs::write(&temporary, format!("{epoch}\n"))
        .and_then(|()| std::fs::File::open(&temporary)?.sync_all())
        .map_err(|source| JournalError::io(&temporary, source))?;
    std::fs::rename(&temporary, &path).map_err(|source| JournalError::io(&path, source))?;
    writer::sync_dir(dir)?;
    Ok(epoch)
}

#[cfg(test)]
mod tests;
