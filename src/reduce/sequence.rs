//! Duplicate detection by EventSequenceNumber (call-resource.md, "Duplicates and order").

/// How far below the highest number a number must be to mean that the T-Server restarted.
pub const RESTART_GAP: u64 = 100_000;

/// The verdict on one event's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Apply the event.
    Fresh,
    /// Apply the event: the T-Server restarted and tracking starts again from it.
    Restarted,
    /// Skip the event: it was applied already.
    Duplicate,
}

/// The highest sequence number applied for one T-Server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SequenceTracker {
    highest: Option<u64>,
}

impl SequenceTracker {
    /// Judges `number` and, unless it is a duplicate, records it as applied.
    pub fn check(&mut self, number: u64) -> SequenceCheck {
        match self.highest {
            Some(highest) if number <= highest => {
                if highest - number > RESTART_GAP {
                    self.highest = Some(number);
                    SequenceCheck::Restarted
                } else {
                    SequenceCheck::Duplicate
                }
            }
            _ => {
                self.highest = Some(number);
                SequenceCheck::Fresh
            }
        }
    }

    /// The highest number applied so far.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_restarts() {
        let mut t = SequenceTracker::default();
        assert_eq!(t.check(200_000), SequenceCheck::Fresh);
        assert_eq!(t.check(200_000), SequenceCheck::Duplicate);
        assert_eq!(t.check(100_000), SequenceCheck::Duplicate);
        assert_eq!(t.check(200_002), SequenceCheck::Fresh);
        assert_eq!(t.check(200_001), SequenceCheck::Duplicate);
        assert_eq!(t.check(99_999), SequenceCheck::Restarted);
        assert_eq!(t.highest(), Some(99_999));
        assert_eq!(t.check(5), SequenceCheck::Duplicate);
        assert_eq!(t.check(100_000), SequenceCheck::Fresh);
    }
}
