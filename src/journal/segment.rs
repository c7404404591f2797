//! Segment files: `events-<first position, 20 digits>.log`, each starting with [`MAGIC`] and then
//! entries back to back. A segment's entries run from its first position to the next segment's first
//! position less one; the last segment's, to its end.

use super::entry::{self, EntryError, FRAME_HEADER};
use super::{JournalError, Position};
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};

/// The first bytes of every segment: a file that does not start with them is not one.
pub const MAGIC: &[u8] = b"callgate journal 1\n";

/// A segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The position of its first entry.
    pub first: Position,
    /// Its path.
    pub path: PathBuf,
}

/// The file name of the segment whose first entry is at `first`.
pub fn name(first: Position) -> String {
    format!("events-{first:020}.log")
}

/// The first position a segment file name says, when it is one.
fn first_of(file_name: &str) -> Option<Position> {
    let digits = file_name.strip_prefix("events-")?.strip_suffix(".log")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The segments in `dir`, oldest first. Other files are left alone.
pub fn list(dir: &Path) -> Result<Vec<Segment>, JournalError> {
    let entries = std::fs::read_dir(dir).map_err(|source| JournalError::io(dir, source))?;
    let mut segments = Vec::new();
    for item in entries {
        let item = item.map_err(|source| JournalError::io(dir, source))?;
        let file_name = item.file_name();
        if let Some(first) = file_name.to_str().and_then(first_of) {
            segments.push(Segment {
                first,
                path: item.path(),
            });
        }
    }
    segments.sort_by_key(|segment| segment.first);
    Ok(segments)
}

/// What reading a segment's entries found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    /// Whole entries.
    pub entries: u64,
    /// Bytes up to the end of the last whole entry (the magic included).
    pub whole: u64,
    /// Where the first entry that is not whole starts, and what is wrong with it; `None` when the file
    /// ends at an entry's end.
    pub broken: Option<(u64, EntryError)>,
}

/// A segment's entries, read one at a time with one reusable buffer.
pub struct Entries {
    path: PathBuf,
    file: BufReader<File>,
    /// Bytes read so far (the offset of the next entry).
    offset: u64,
    /// The payload of the entry read last, and where its parts are.
    buffer: Vec<u8>,
    layout: Option<entry::Layout>,
}

impl Entries {
    /// Opens `path` and checks its magic.
    pub fn open(path: &Path) -> Result<Entries, JournalError> {
        let file = File::open(path).map_err(|source| JournalError::io(path, source))?;
        let mut file = BufReader::with_capacity(256 * 1024, file);
        let mut magic = [0u8; MAGIC.len()];
        match read_up_to(&mut file, &mut magic) {
            Ok(n) if n == MAGIC.len() && magic == MAGIC => {}
            Ok(_) => return Err(JournalError::NotAJournal(path.to_owned())),
            Err(source) => return Err(JournalError::io(path, source)),
        }
        Ok(Entries {
            path: path.to_owned(),
            file,
            offset: MAGIC.len() as u64,
            buffer: Vec::new(),
            layout: None,
        })
    }

    /// Goes back to the start of the entry after the last whole one (after an entry found short: the
    /// bytes read of it are read again once it is whole).
    pub fn rewind(&mut self) -> Result<(), JournalError> {
        self.layout = None;
        self.file
            .seek(std::io::SeekFrom::Start(self.offset))
            .map(drop)
            .map_err(|source| JournalError::io(&self.path, source))
    }

    /// The offset of the next entry.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the next entry: `Ok(true)` when there is a whole one ([`Entries::record`]), `Ok(false)` at
    /// the end of the file, an error at an entry that is not whole (naming where it starts; reading on is
    /// meaningless).
    pub fn advance(&mut self) -> Result<bool, Broken> {
        self.layout = None;
        let mut header = [0u8; FRAME_HEADER];
        let got = read_up_to(&mut self.file, &mut header).map_err(|e| self.io(e))?;
        if got == 0 {
            return Ok(false);
        }
        if got < FRAME_HEADER {
            return Err(self.broken(EntryError::Short));
        }
        let length = entry::payload_length(&header).map_err(|why| self.broken(why))?;
        self.buffer.resize(length, 0);
        let got = read_up_to(&mut self.file, &mut self.buffer).map_err(|e| self.io(e))?;
        if got < length {
            return Err(self.broken(EntryError::Short));
        }
        let layout = entry::Layout::of(&header, &self.buffer).map_err(|why| self.broken(why))?;
        self.layout = Some(layout);
        self.offset += (FRAME_HEADER + length) as u64;
        Ok(true)
    }

    /// The entry [`Entries::advance`] read last (a tick at time 0 before any).
    pub fn record(&self) -> entry::Record<'_> {
        match &self.layout {
            Some(layout) => layout.record(&self.buffer),
            None => entry::Record::Tick { wall: 0 },
        }
    }

    fn broken(&self, why: EntryError) -> Broken {
        Broken::Entry(self.offset, why)
    }

    fn io(&self, source: std::io::Error) -> Broken {
        Broken::Io(JournalError::io(&self.path, source))
    }
}

/// Why [`Entries::next_entry`] stopped short of the end.
#[derive(Debug)]
pub enum Broken {
    /// The entry at this offset is not whole.
    Entry(u64, EntryError),
    /// Reading failed.
    Io(JournalError),
}

/// Reads every entry of the segment at `path`.
pub fn scan(path: &Path) -> Result<Scanned, JournalError> {
    let mut entries = Entries::open(path)?;
    let mut count = 0;
    loop {
        match entries.advance() {
            Ok(true) => count += 1,
            Ok(false) => {
                return Ok(Scanned {
                    entries: count,
                    whole: entries.offset(),
                    broken: None,
                });
            }
            Err(Broken::Entry(at, why)) => {
                return Ok(Scanned {
                    entries: count,
                    whole: at,
                    broken: Some((at, why)),
                });
            }
            Err(Broken::Io(error)) => return Err(error),
        }
    }
}

/// Reads until `buf` is full or the file ends; how many bytes were read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_first_position_in_twenty_digits() {
        assert_eq!(name(1), "events-00000000000000000001.log");
        assert_eq!(first_of(&name(u64::MAX)), Some(u64::MAX));
        assert_eq!(first_of("events-1.log"), None);
        assert_eq!(first_of("events-0000000000000000000x.log"), None);
        assert_eq!(first_of("epoch"), None);
    }
}
