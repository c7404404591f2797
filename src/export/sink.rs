//! Where records go: standard output, or the crash-safe file sink (analytics.md: it appends, syncs every
//! second, and when started again on the same file cuts a torn last line, finds the last `position` and
//! goes on after it).
//!
//! A crash can stop the file anywhere: in the middle of a line (cut at open), or between two records of
//! one event or tick (the ids already written at the last position are kept in [`Resume`], and the
//! recorder writes only the others). So the file holds every record once, except records written but
//! not yet synced when the *machine* failed: those are lost with the page cache and written again
//! after the restart, under the same ids.

use super::{Resume, record_id, record_position};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often written records are synced to disk.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// The file sink could not be opened, repaired or written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct SinkError {
    /// The file (`-`: standard output).
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

/// The output of an export or of `--analytics-out`.
pub enum Output {
    /// Standard output (`-`): written and flushed batch by batch, never resumed.
    Stdout(std::io::Stdout),
    /// An NDJSON file.
    File(FileSink),
    /// Nowhere (a gateway whose records only feed `GET /callgate/feed`).
    Nowhere,
    /// A reader in the gateway (the live feed's catch-up from the journal), batch by batch; written
    /// from a blocking thread.
    Channel(tokio::sync::mpsc::Sender<bytes::Bytes>),
}

impl Output {
    /// `-` for standard output, else the file at `path` (repaired; see [`FileSink::open`]).
    pub fn open(path: &Path) -> Result<Output, SinkError> {
        if path == Path::new("-") {
            return Ok(Output::Stdout(std::io::stdout()));
        }
        FileSink::open(path).map(Output::File)
    }

    /// Where a resumed file was left (nothing for standard output).
    pub fn resume(&self) -> Resume {
        match self {
            Output::Stdout(_) | Output::Channel(_) | Output::Nowhere => Resume::default(),
            Output::File(file) => file.resume.clone(),
        }
    }

    /// Writes whole lines.
    pub fn write(&mut self, lines: &str) -> Result<(), SinkError> {
        match self {
            Output::Stdout(stdout) => {
                let mut stdout = stdout.lock();
                stdout
                    .write_all(lines.as_bytes())
                    .and_then(|()| stdout.flush())
                    .map_err(|source| SinkError {
                        path: PathBuf::from("-"),
                        source,
                    })
            }
            Output::File(file) => file.write(lines),
            Output::Nowhere => Ok(()),
            Output::Channel(_) if lines.is_empty() => Ok(()),
            Output::Channel(reader) => reader
                .blocking_send(bytes::Bytes::copy_from_slice(lines.as_bytes()))
                .map_err(|_| SinkError {
                    path: PathBuf::from("(feed)"),
                    source: std::io::Error::new(
                        std::io::ErrorKind::BrokenPipe,
                        "the feed's reader has gone",
                    ),
                }),
        }
    }

    /// Syncs what is written when the last sync is [`SYNC_EVERY`] old.
    pub fn sync_if_due(&mut self) -> Result<(), SinkError> {
        match self {
            Output::Stdout(_) | Output::Channel(_) | Output::Nowhere => Ok(()),
            Output::File(file) => file.sync_if_due(),
        }
    }

    /// Syncs everything written (at the end).
    pub fn sync(&mut self) -> Result<(), SinkError> {
        match self {
            Output::Stdout(_) | Output::Channel(_) | Output::Nowhere => Ok(()),
            Output::File(file) => file.sync(),
        }
    }
}

/// An NDJSON file that is appended to and synced every second.
pub struct FileSink {
    path: PathBuf,
    file: File,
    resume: Resume,
    /// Written since the last sync.
    unsynced: bool,
    last_sync: Instant,
    /// Bytes cut from a torn last line at open.
    cut: u64,
}

impl FileSink {
    /// Opens `path` for appending (created if absent). A last line without its line end (a crash
    /// mid-write) is cut off, durably; the position of the last line and the ids written at it become
    /// [`FileSink::resume`].
    pub fn open(path: &Path) -> Result<FileSink, SinkError> {
        let error = |source| SinkError {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(error)?;
        let length = file.metadata().map_err(error)?.len();
        let whole = whole_length(&mut file, length).map_err(error)?;
        if whole < length {
            file.set_len(whole).map_err(error)?;
            file.sync_all().map_err(error)?;
            tracing::warn!(
                file = %path.display(),
                cut = length - whole,
                "a torn last line was cut off"
            );
        }
        let resume = last_records(&mut file, whole).map_err(error)?;
        Ok(FileSink {
            path: path.to_owned(),
            file,
            resume,
            unsynced: false,
            last_sync: Instant::now(),
            cut: length - whole,
        })
    }

    /// Where the file was left: its last position and the ids written there.
    pub fn resume(&self) -> &Resume {
        &self.resume
    }

    /// Bytes cut from a torn last line when it was opened.
    pub fn cut(&self) -> u64 {
        self.cut
    }

    /// Appends whole lines; syncs when the last sync is [`SYNC_EVERY`] old.
    pub fn write(&mut self, lines: &str) -> Result<(), SinkError> {
        if lines.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(lines.as_bytes())
            .map_err(|source| self.error(source))?;
        self.unsynced = true;
        self.sync_if_due()
    }

    /// Syncs when something is unsynced and the last sync is [`SYNC_EVERY`] old.
    pub fn sync_if_due(&mut self) -> Result<(), SinkError> {
        if self.unsynced && self.last_sync.elapsed() >= SYNC_EVERY {
            self.sync()?;
        }
        Ok(())
    }

    /// Syncs what is written.
    pub fn sync(&mut self) -> Result<(), SinkError> {
        if self.unsynced {
            self.file.sync_data().map_err(|source| self.error(source))?;
            self.unsynced = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    fn error(&self, source: std::io::Error) -> SinkError {
        SinkError {
            path: self.path.clone(),
            source,
        }
    }
}

/// Reads at most this much at a time from the end of the file.
const TAIL_CHUNK: u64 = 1 << 20;

/// The length of the file's whole lines: up to and including its last line end.
fn whole_length(file: &mut File, length: u64) -> std::io::Result<u64> {
    let mut end = length;
    let mut chunk = Vec::new();
    while end > 0 {
        let start = end.saturating_sub(TAIL_CHUNK);
        read_range(file, start, end, &mut chunk)?;
        if let Some(at) = chunk.iter().rposition(|&byte| byte == b'\n') {
            return Ok(start + at as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// The last line's position and the ids of every line at it, reading back from `whole` (the end of
/// the last whole line) until a line of another position (or none) comes.
fn last_records(file: &mut File, whole: u64) -> std::io::Result<Resume> {
    let mut resume = Resume::default();
    let mut end = whole;
    // Bytes of a line cut by the chunk's start, carried to the next (earlier) chunk.
    let mut carried: Vec<u8> = Vec::new();
    let mut chunk = Vec::new();
    while end > 0 {
        let start = end.saturating_sub(TAIL_CHUNK);
        read_range(file, start, end, &mut chunk)?;
        chunk.extend_from_slice(&carried);
        // The first line of the chunk may have begun in an earlier one, unless the chunk starts the file.
        let (head, lines) = match (start, chunk.iter().position(|&byte| byte == b'\n')) {
            (0, _) => (0, &chunk[..]),
            (_, Some(first_end)) => (first_end + 1, &chunk[first_end + 1..]),
            (_, None) => (chunk.len(), &chunk[chunk.len()..]),
        };
        for line in lines
            .rsplit(|&byte| byte == b'\n')
            .filter(|l| !l.is_empty())
        {
            let line = String::from_utf8_lossy(line);
            let position = record_position(&line);
            if resume.position == 0 {
                if position == 0 {
                    return Ok(resume);
                }
                resume.position = position;
            }
            if position != resume.position {
                return Ok(resume);
            }
            if let Some(id) = record_id(&line) {
                resume.ids.insert(id.to_owned());
            }
        }
        carried = chunk[..head].to_vec();
        end = start;
    }
    Ok(resume)
}

fn read_range(file: &mut File, start: u64, end: u64, into: &mut Vec<u8>) -> std::io::Result<()> {
    into.clear();
    file.seek(SeekFrom::Start(start))?;
    Read::by_ref(file).take(end - start).read_to_end(into)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder for one case (removed when the case passes).
    struct Folder(PathBuf);

    impl Folder {
        fn new(name: &str) -> Folder {
            let dir =
                std::env::temp_dir().join(format!("callgate-sink-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            Folder(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Folder {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn line(id: &str, position: u64) -> String {
        format!(
            "{{\"specversion\":\"1.0\",\"id\":\"{id}\",\"position\":\"{position:020}\",\"data\":{{\"position\":\"x\"}}}}\n"
        )
    }

    #[test]
    fn a_torn_last_line_is_cut_and_the_last_position_found() {
        let dir = Folder::new("torn");
        let path = dir.path().join("out.ndjson");
        let text = [line("a", 1), line("b", 2), line("c", 2)].concat();
        std::fs::write(
            &path,
            format!("{text}{{\"specversion\":\"1.0\",\"id\":\"d\""),
        )
        .expect("write");
        let sink = FileSink::open(&path).expect("open");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), text);
        assert_eq!(sink.resume().position, 2);
        let mut ids: Vec<&String> = sink.resume().ids.iter().collect();
        ids.sort();
        assert_eq!(ids, ["b", "c"]);
    }

    #[test]
    fn the_records_of_the_last_position_are_found_across_chunks() {
        let dir = Folder::new("chunks");
        let path = dir.path().join("out.ndjson");
        let mut text = line("first", 1);
        let many = (TAIL_CHUNK as usize / 60) * 3;
        for n in 0..many {
            text.push_str(&line(&format!("r{n}"), 7));
        }
        std::fs::write(&path, &text).expect("write");
        let sink = FileSink::open(&path).expect("open");
        assert_eq!(sink.cut(), 0);
        assert_eq!(sink.resume().position, 7);
        assert_eq!(sink.resume().ids.len(), many);
    }

    #[test]
    fn an_empty_or_unpositioned_file_resumes_nothing() {
        let dir = Folder::new("empty");
        let path = dir.path().join("out.ndjson");
        let sink = FileSink::open(&path).expect("open");
        assert_eq!(sink.resume(), &Resume::default());
        drop(sink);
        std::fs::write(&path, "{\"id\":\"x\"}\n").expect("write");
        let sink = FileSink::open(&path).expect("open");
        assert_eq!(sink.resume(), &Resume::default());
    }

    #[test]
    fn writes_append() {
        let dir = Folder::new("append");
        let path = dir.path().join("out.ndjson");
        std::fs::write(&path, line("a", 1)).expect("write");
        let mut sink = FileSink::open(&path).expect("open");
        sink.write(&line("b", 2)).expect("write");
        sink.sync().expect("sync");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            [line("a", 1), line("b", 2)].concat()
        );
    }
}
