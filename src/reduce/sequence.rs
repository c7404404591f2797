//! Duplicate detection by EventSequenceNumber (call-resource.md, "Duplicates and order") and the other
//! per-Server bookkeeping that precedes the reducer.

use crate::event::{Event, EventKind, Micros};

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

/// Per-T-Server bookkeeping that comes before the reducer: duplicates, missing times, link state.
///
/// `fold` runs it inside [`crate::reduce::Fold::apply`]; `serve` runs one for all ingest connections
/// before spreading events over reducer shards, because duplicates and times are per Server, not per device.
#[derive(Debug, Default)]
pub struct Sequencer {
    index: hashbrown::HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
    servers: Vec<ServerClock>,
}

#[derive(Debug, Default)]
struct ServerClock {
    tracker: SequenceTracker,
    last_time: Option<Micros>,
    link_up: Option<bool>,
}

/// What the sequencer decided about one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go on with the event, at this time (`None`: no time known).
    Admitted {
        /// The event's time, filled in from its Server's previous event when it had none.
        time: Option<Micros>,
    },
    /// A duplicate by EventSequenceNumber: skip it.
    Duplicate,
    /// From a T-Server beyond the first [`super::MAX_SERVERS`]: ignore it.
    TooManyServers,
}

impl Sequencer {
    /// Judges `event`. `arrival` is the time to use when neither the event nor an earlier event of its
    /// Server has one (`serve` passes the clock; `fold`, which has no clock, passes `None`).
    pub fn admit(&mut self, event: &Event<'_>, arrival: Option<Micros>) -> Admission {
        let Some(server) = self.server_number(&event.server) else {
            return Admission::TooManyServers;
        };
        let clock = &mut self.servers[server];
        if let Some(number) = event.sequence
            && clock.tracker.check(number) == SequenceCheck::Duplicate
        {
            return Admission::Duplicate;
        }
        let time = event.time.or(clock.last_time).or(arrival);
        clock.last_time = time;
        match event.kind {
            EventKind::LinkConnected => clock.link_up = Some(true),
            EventKind::LinkDisconnected => clock.link_up = Some(false),
            _ => {}
        }
        Admission::Admitted { time }
    }

    fn server_number(&mut self, name: &str) -> Option<usize> {
        if let Some(&number) = self.index.get(name) {
            return Some(number as usize);
        }
        if self.names.len() >= super::MAX_SERVERS {
            return None;
        }
        let number = self.names.len();
        self.index.insert(name.into(), u32::try_from(number).ok()?);
        self.names.push(name.into());
        self.servers.push(ServerClock::default());
        Some(number)
    }

    /// Link state of each T-Server seen: `Some(true)` after EventLinkConnected, `Some(false)` after
    /// EventLinkDisconnected, `None` before either.
    pub fn links(&self) -> impl Iterator<Item = (&str, Option<bool>)> {
        self.names
            .iter()
            .zip(&self.servers)
            .map(|(name, clock)| (&**name, clock.link_up))
    }
}
