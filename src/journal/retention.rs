//! Journal retention (analytics.md): a closed segment is deleted once it is older than
//! `--journal-retention` **and** every entry in it comes before the oldest position a live call or a
//! device out of its default state began at (the pipeline tracks it), so a restart can still replay each
//! of them from its start. Deletion goes oldest first and stops at the first segment that must stay, so the
//! journal is always one run of positions; the segment being written is never deleted.

use super::segment::{self, Segment};
use super::writer::sync_dir;
use super::{JournalError, Position};
use std::path::Path;
use std::time::SystemTime;

/// What [`delete_before`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// Segments deleted.
    pub segments: usize,
    /// Their bytes.
    pub bytes: u64,
    /// The first position the journal holds now (0: the journal is empty).
    pub first_kept: Position,
}

/// Deletes, oldest first, the closed segments of `dir` whose entries all come before `needed_from` and
/// whose file was last written before `written_before`.
pub fn delete_before(
    dir: &Path,
    needed_from: Position,
    written_before: SystemTime,
) -> Result<Deleted, JournalError> {
    let segments = segment::list(dir)?;
    let mut deleted = Deleted {
        first_kept: segments.first().map_or(0, |segment| segment.first),
        ..Deleted::default()
    };
    for pair in segments.windows(2) {
        let [closed, next] = pair else { break };
        // Every entry of `closed` is before `next.first`.
        if next.first > needed_from || !written_before_time(closed, written_before)? {
            break;
        }
        let bytes = std::fs::metadata(&closed.path)
            .map_err(|source| JournalError::io(&closed.path, source))?
            .len();
        std::fs::remove_file(&closed.path)
            .map_err(|source| JournalError::io(&closed.path, source))?;
        deleted.segments += 1;
        deleted.bytes += bytes;
        deleted.first_kept = next.first;
    }
    if deleted.segments > 0 {
        sync_dir(dir)?;
    }
    Ok(deleted)
}

fn written_before_time(segment: &Segment, before: SystemTime) -> Result<bool, JournalError> {
    let modified = std::fs::metadata(&segment.path)
        .and_then(|metadata| metadata.modified())
        .map_err(|source| JournalError::io(&segment.path, source))?;
    Ok(modified < before)
}

/// The bytes the journal's segments in `dir` hold.
pub fn stored_bytes(dir: &Path) -> Result<u64, JournalError> {
    let mut total = 0;
    for segment in segment::list(dir)? {
        total += std::fs::metadata(&segment.path)
            .map_err(|source| JournalError::io(&segment.path, source))?
            .len();
    }
    Ok(total)
}

/// The first position the journal in `dir` holds (1 for a journal nothing was deleted from; 0 when empty).
pub fn first_position(dir: &Path) -> Result<Position, JournalError> {
    if !dir.exists() {
        return Ok(0);
    }
    Ok(segment::list(dir)?
        .first()
        .map_or(0, |segment| segment.first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Record, open};
    use std::time::Duration;

    fn journal_of_segments(dir: &Path) -> Vec<Position> {
        let mut opened = open(dir, 256).expect("open");
        for i in 0..40 {
            opened.writer.append(&Record::Tick { wall: i });
            opened.writer.write().expect("write");
        }
        opened.writer.sync().expect("sync");
        segment::list(dir)
            .expect("list")
            .iter()
            .map(|s| s.first)
            .collect()
    }

    #[test]
    fn only_old_segments_wholly_before_the_needed_position_go() {
        let dir = std::env::temp_dir().join(format!("callgate-retention-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let firsts = journal_of_segments(&dir);
        assert!(firsts.len() >= 4, "{firsts:?}");
        let later = SystemTime::now() + Duration::from_secs(60);
        // Too new: nothing goes.
        let kept = delete_before(&dir, Position::MAX, SystemTime::UNIX_EPOCH).expect("retention");
        assert_eq!(kept.segments, 0);
        // Needed from inside the third segment: the first two go, the third stays.
        let needed = firsts[2] + 1;
        let deleted = delete_before(&dir, needed, later).expect("retention");
        assert_eq!(deleted.segments, 2);
        assert_eq!(deleted.first_kept, firsts[2]);
        assert_eq!(first_position(&dir).expect("first"), firsts[2]);
        // Nothing needed: every closed segment goes, the one being written stays.
        let deleted = delete_before(&dir, Position::MAX, later).expect("retention");
        assert_eq!(deleted.first_kept, *firsts.last().expect("segments"));
        assert_eq!(segment::list(&dir).expect("list").len(), 1);
        assert!(stored_bytes(&dir).expect("bytes") > 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
