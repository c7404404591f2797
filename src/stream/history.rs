//! The resume history: the last `--history` notifications, as published.
//!
//! Kept as a persistent vector so that a resume takes the entries it needs in constant time under the
//! stream's lock and reads them afterwards, while publication goes on.

use crate::store::Meta;
use crate::store::packing::Kept;
use imbl::Vector;

/// One published notification.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    /// Its position in the stream.
    pub seq: u64,
    /// The call or device it is about, for filters.
    pub meta: Meta,
    /// The notification frame, as every recipient got it (packed once the packer has been by).
    pub frame: Kept,
}

/// The last `capacity` notifications.
#[derive(Debug, Clone)]
pub struct History {
    entries: Vector<HistoryEntry>,
    capacity: usize,
}

impl History {
    /// An empty history holding at most `capacity` notifications (0: none, no resume is possible).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Vector::new(),
            capacity,
        }
    }

    /// Appends the newest notification, dropping the oldest when full.
    pub fn push(&mut self, entry: HistoryEntry) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    /// The most notifications it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The position of the oldest notification held, if any.
    pub fn oldest(&self) -> Option<u64> {
        self.entries.front().map(|entry| entry.seq)
    }

    /// Every notification held, oldest first.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &HistoryEntry> {
        self.entries.iter()
    }

    /// Calls `plain` for each notification after position `after` still held plain, looking at no more
    /// than `limit` entries; returns the position of the last entry looked at (`after` when none).
    pub fn plain_after(
        &self,
        after: u64,
        limit: usize,
        mut plain: impl FnMut(&HistoryEntry, &bytes::Bytes),
    ) -> u64 {
        let Some(oldest) = self.oldest() else {
            return after;
        };
        let first =
            usize::try_from(after.saturating_add(1).saturating_sub(oldest)).unwrap_or(usize::MAX);
        let mut last = after;
        let mut focus = self.entries.focus();
        for index in first..self.entries.len().min(first.saturating_add(limit)) {
            let Some(entry) = focus.get(index) else {
                break;
            };
            if let Kept::Plain(frame) = &entry.frame {
                plain(entry, frame);
            }
            last = entry.seq;
        }
        last
    }

    /// Keeps `frame` (the packed form of the notification at `seq`) in place of the plain one, if that
    /// notification is still held.
    pub fn keep_packed(&mut self, seq: u64, frame: &Kept) -> bool {
        let Some(index) = self
            .oldest()
            .and_then(|oldest| seq.checked_sub(oldest))
            .and_then(|index| usize::try_from(index).ok())
        else {
            return false;
        };
        match self.entries.get_mut(index) {
            Some(entry) if entry.seq == seq && entry.frame.is_plain() => {
                entry.frame = frame.clone();
                true
            }
            _ => false,
        }
    }

    /// The notifications after `since`, when every one of them is held and `since` is not past
    /// `newest` (the stream's position); `None` when resuming from there would miss some.
    pub fn after(&self, since: u64, newest: u64) -> Option<Missed> {
        let oldest = self.entries.front().map_or(newest + 1, |entry| entry.seq);
        if since > newest || since.saturating_add(1) < oldest {
            return None;
        }
        let skip = usize::try_from(since + 1 - oldest).unwrap_or(usize::MAX);
        Some(Missed {
            entries: self.entries.clone(),
            next: skip.min(self.entries.len()),
        })
    }
}

/// The notifications a resume missed: a constant-time copy of the history and where to start in it.
#[derive(Debug, Clone)]
pub struct Missed {
    entries: Vector<HistoryEntry>,
    next: usize,
}

impl Missed {
    /// Whether nothing was missed.
    pub fn is_empty(&self) -> bool {
        self.next >= self.entries.len()
    }

    /// The next missed notification.
    pub fn next_entry(&mut self) -> Option<&HistoryEntry> {
        let entry = self.entries.get(self.next)?;
        self.next += 1;
        Some(entry)
    }
}
