//! The live feed's buffer (`GET /callgate/feed`, analytics.md): the newest records of every type, in
//! order, numbered, bounded in bytes. Readers keep their own cursor (a record number) and read at their
//! own pace; nothing is queued per reader. A reader whose next record has been dropped from the buffer
//! was too slow: it is disconnected and resumes with `from` (never coalesced).

use super::{Kind, Types};
use crate::journal::Position;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::watch;

/// The newest records, up to a number of bytes.
pub struct FeedBuffer {
    ring: Mutex<Ring>,
    /// The number of the record after the newest.
    end: watch::Sender<u64>,
    limit: usize,
}

impl std::fmt::Debug for FeedBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedBuffer")
            .field("limit", &self.limit)
            .field("end", &self.end())
            .finish()
    }
}

struct Ring {
    entries: VecDeque<Entry>,
    bytes: usize,
    /// The number of `entries[0]`.
    first: u64,
}

struct Entry {
    position: Position,
    kind: Kind,
    line: Bytes,
}

/// A reader's next record is no longer held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    /// The oldest position still held.
    pub oldest: Position,
}

impl FeedBuffer {
    /// A buffer holding at most `limit` bytes of records (at least the newest one).
    pub fn new(limit: usize) -> FeedBuffer {
        FeedBuffer {
            ring: Mutex::new(Ring {
                entries: VecDeque::new(),
                bytes: 0,
                first: 0,
            }),
            end: watch::Sender::new(0),
            limit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        // Every change under the lock is whole before anything can panic.
        self.ring
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends a record (a whole line) made at `position`; drops the oldest past the limit.
    pub fn push(&self, kind: Kind, position: Position, line: &str) {
        let line = Bytes::copy_from_slice(line.as_bytes());
        let end = {
            let mut ring = self.lock();
            ring.bytes += line.len();
            ring.entries.push_back(Entry {
                position,
                kind,
                line,
            });
            while ring.bytes > self.limit && ring.entries.len() > 1 {
                if let Some(dropped) = ring.entries.pop_front() {
                    ring.bytes -= dropped.line.len();
                    ring.first += 1;
                }
            }
            ring.first + ring.entries.len() as u64
        };
        self.end.send_replace(end);
    }

    /// Where a reader of the records of `position` and after starts, when the buffer still holds every
    /// record of `position` (`None`: some are gone; the journal must be read).
    pub fn cursor_at(&self, position: Position) -> Option<u64> {
        let ring = self.lock();
        let covered = match ring.entries.front() {
            None => ring.first == 0,
            // The oldest position held may have lost its first records.
            Some(oldest) => position > oldest.position || ring.first == 0,
        };
        covered.then(|| {
            ring.first
                + ring
                    .entries
                    .partition_point(|entry| entry.position < position) as u64
        })
    }

    /// The number of the record after the newest: a reader from now starts there.
    pub fn end(&self) -> u64 {
        *self.end.borrow()
    }

    /// Tells when records are added.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.end.subscribe()
    }

    /// The records from `cursor` on of `types` and at `from` or after, up to about `budget` bytes (the
    /// work done under the lock is bounded by it), and the cursor after them.
    pub fn read(
        &self,
        cursor: u64,
        types: Types,
        from: Position,
        budget: usize,
    ) -> Result<(Vec<Bytes>, u64), Evicted> {
        let ring = self.lock();
        if cursor < ring.first {
            let oldest = ring.entries.front().map_or(0, |entry| entry.position);
            return Err(Evicted { oldest });
        }
        let mut lines = Vec::new();
        let mut taken = 0;
        let mut next = cursor;
        let skip = usize::try_from(cursor - ring.first).unwrap_or(usize::MAX);
        for entry in ring.entries.iter().skip(skip) {
            if taken >= budget {
                break;
            }
            next += 1;
            taken += entry.line.len();
            if entry.kind.of(types) && entry.position >= from {
                lines.push(entry.line.clone());
            }
        }
        Ok((lines, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(lines: &[Bytes]) -> Vec<&str> {
        lines
            .iter()
            .map(|line| std::str::from_utf8(line).expect("UTF-8"))
            .collect()
    }

    #[test]
    fn a_reader_gets_what_it_asked_for_in_order_and_is_told_when_it_fell_behind() {
        let feed = FeedBuffer::new(12);
        feed.push(Kind::Event, 1, "e1\n");
        feed.push(Kind::Notification, 1, "n1\n");
        feed.push(Kind::Event, 2, "e2\n");
        assert_eq!(feed.end(), 3);
        let all = Types::ALL;
        let (lines, next) = feed.read(0, all, 0, usize::MAX).expect("held");
        assert_eq!(text(&lines), ["e1\n", "n1\n", "e2\n"]);
        assert_eq!(next, 3);
        let events = Types {
            event: true,
            notification: false,
            cdr: false,
        };
        let (lines, _) = feed.read(0, events, 2, usize::MAX).expect("held");
        assert_eq!(text(&lines), ["e2\n"]);
        // 4 × 3 bytes fit; the fifth drops the first.
        feed.push(Kind::Cdr, 2, "c2\n");
        feed.push(Kind::Event, 3, "e3\n");
        assert_eq!(feed.read(0, all, 0, usize::MAX), Err(Evicted { oldest: 1 }));
        let (lines, next) = feed.read(1, all, 0, 4).expect("held");
        assert_eq!(text(&lines), ["n1\n", "e2\n"], "a budget of 4 bytes");
        assert_eq!(next, 3);
    }

    #[test]
    fn a_position_is_covered_only_while_all_its_records_are_held() {
        let feed = FeedBuffer::new(6);
        assert_eq!(
            feed.cursor_at(5),
            Some(0),
            "nothing yet: everything to come"
        );
        feed.push(Kind::Event, 1, "e1\n");
        feed.push(Kind::Notification, 1, "n1\n");
        assert_eq!(feed.cursor_at(1), Some(0));
        assert_eq!(feed.cursor_at(2), Some(2));
        feed.push(Kind::Event, 2, "e2\n");
        assert_eq!(feed.cursor_at(1), None, "e1 is gone");
        assert_eq!(feed.cursor_at(2), Some(2));
        assert_eq!(feed.cursor_at(9), Some(3));
    }
}
