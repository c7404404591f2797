//! Appending to the journal: entries are encoded into a buffer, written to the OS in batches, and made
//! durable by `fdatasync`, each step on the caller's say (the fsync policy lives with the caller).

use super::entry::{self, Record};
use super::segment::{self, MAGIC};
use super::{JournalError, Position};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The journal's appending end.
pub struct Writer {
    dir: PathBuf,
    file: File,
    path: PathBuf,
    /// The current segment's first position.
    first: Position,
    /// Bytes of the current segment written to the OS.
    length: u64,
    /// A segment this long or longer is closed before the next write.
    rotate_at: u64,
    /// Entries encoded and not yet written, and how many.
    pending: Vec<u8>,
    pending_entries: u64,
    /// The position the next appended entry gets.
    next: Position,
    /// The directory gained a file since its last sync.
    dir_dirty: bool,
}

impl Writer {
    /// Continues the segment at `path` (whose first entry is at `first`), `length` bytes long, holding
    /// entries up to `next` less one.
    pub(super) fn resume(
        dir: &Path,
        path: &Path,
        first: Position,
        length: u64,
        next: Position,
        rotate_at: u64,
    ) -> Result<Writer, JournalError> {
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|source| JournalError::io(path, source))?;
        Ok(Writer {
            dir: dir.to_owned(),
            file,
            path: path.to_owned(),
            first,
            length,
            rotate_at,
            pending: Vec::new(),
            pending_entries: 0,
            next,
            dir_dirty: false,
        })
    }

    /// Starts a new segment in `dir` whose first entry will be at `first`.
    pub(super) fn create(
        dir: &Path,
        first: Position,
        rotate_at: u64,
    ) -> Result<Writer, JournalError> {
        let (file, path) = new_segment(dir, first)?;
        let mut writer = Writer {
            dir: dir.to_owned(),
            file,
            path,
            first,
            length: MAGIC.len() as u64,
            rotate_at,
            pending: Vec::new(),
            pending_entries: 0,
            next: first,
            dir_dirty: true,
        };
        writer.sync()?;
        Ok(writer)
    }

    /// Encodes `record` as the next entry (not written yet); its position.
    pub fn append(&mut self, record: &Record<'_>) -> Position {
        entry::encode(record, &mut self.pending);
        self.pending_entries += 1;
        let position = self.next;
        self.next += 1;
        position
    }

    /// The position the next entry will get.
    pub fn next_position(&self) -> Position {
        self.next
    }

    /// Bytes appended and not yet written.
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Writes the appended entries to the OS, in a new segment when the current one is full. On failure
    /// the segment is cut back to its last whole entry and the entries not written are dropped (their
    /// positions will be given again): the caller must treat them as never accepted.
    pub fn write(&mut self) -> Result<(), JournalError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let written = self.write_pending();
        let entries = std::mem::take(&mut self.pending_entries);
        self.pending.clear();
        if written.is_err() {
            self.next -= entries;
        }
        written
    }

    /// Drops the appended entries without writing them (their positions will be given again).
    pub fn discard(&mut self) {
        self.next -= std::mem::take(&mut self.pending_entries);
        self.pending.clear();
    }

    fn write_pending(&mut self) -> Result<(), JournalError> {
        if self.length >= self.rotate_at {
            self.rotate()?;
        }
        if let Err(source) = self.file.write_all(&self.pending) {
            // A partial write would leave a torn entry in the middle of the journal once later writes
            // succeed: cut it now (a restart would cut it too, as a torn tail).
            let _ = self.file.set_len(self.length);
            return Err(JournalError::io(&self.path, source));
        }
        self.length += self.pending.len() as u64;
        Ok(())
    }

    /// Makes everything written durable (`fdatasync`, and the directory's entry of a new segment).
    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.file
            .sync_data()
            .map_err(|source| JournalError::io(&self.path, source))?;
        if self.dir_dirty {
            sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// Closes the current segment (made durable first: a later segment must never outlive an earlier
    /// one's tail) and opens the next.
    fn rotate(&mut self) -> Result<(), JournalError> {
        self.sync()?;
        let first = self.next - self.pending_entries;
        let (file, path) = new_segment(&self.dir, first)?;
        self.file = file;
        self.path = path;
        self.first = first;
        self.length = MAGIC.len() as u64;
        self.dir_dirty = true;
        Ok(())
    }

    /// The current segment's first position.
    pub fn segment_first(&self) -> Position {
        self.first
    }

    /// Another handle on the current segment (for a thread that syncs it while this one writes).
    pub fn file_clone(&self) -> Result<File, JournalError> {
        self.file
            .try_clone()
            .map_err(|source| JournalError::io(&self.path, source))
    }
}

/// Creates the segment file for `first` with its magic.
fn new_segment(dir: &Path, first: Position) -> Result<(File, PathBuf), JournalError> {
    let path = dir.join(segment::name(first));
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(|source| JournalError::io(&path, source))?;
    file.write_all(MAGIC)
        .map_err(|source| JournalError::io(&path, source))?;
    Ok((file, path))
}

/// `fsync` of a directory, so that a file created or removed in it is too.
pub(super) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|source| JournalError::io(dir, source))
}
