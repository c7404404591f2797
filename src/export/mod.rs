//! The analytics feed (analytics.md, "The export"): every accepted event, every notification and every
//! call detail record, as CloudEvents NDJSON, in the gateway's order.
//!
//! One [`Recorder`] turns what the pipeline took and made into records, whichever way the facts come: a
//! live gateway's publisher hands it each admitted event and tick with the notifications they made
//! (`serve --analytics-out`), and `callgate export` replays a journal through the same pipeline and the
//! same recorder. The call detail records come from a [`CdrFold`] the recorder runs beside, fed the
//! same events and ticks; so the export of a journal is the records its gateway wrote, byte for byte.
//!
//! ```text
//! admitter ──facts──▶ publisher ──facts + notifications (seq)──▶ stage: Recorder (+ CdrFold) ──▶ Output
//! ```

pub mod cloudevent;
pub mod feed;
pub mod settings;
pub mod sink;
pub mod stage;

use crate::cdr::record::Cdr;
use crate::cdr::{CdrConfig, CdrFold};
use crate::event::{Decoded, Event, Micros, decode_line};
use crate::journal::Position;
use crate::reduce::{MAX_SERVERS, SequenceCheck, SequenceTracker};
use bytes::Bytes;
use cloudevent::{EventRecord, NotificationRecord, Origin, Place};
use std::sync::Arc;

/// 10000-01-01T00:00:00Z in µs: a record's `time` must come before it.
const YEAR_10000: Micros = 253_402_300_800_000_000;

/// Which records to write (`--types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Types {
    /// `event`: the T-Server events as received.
    pub event: bool,
    /// `notification`: call and device notifications.
    pub notification: bool,
    /// `cdr`: call detail records.
    pub cdr: bool,
}

impl Types {
    /// Every type.
    pub const ALL: Types = Types {
        event: true,
        notification: true,
        cdr: true,
    };

    /// No record (an output that takes none: the live feed alone).
    pub const NONE: Types = Types {
        event: false,
        notification: false,
        cdr: false,
    };

    /// `notification,cdr`: what `serve --analytics-out` writes unless told otherwise.
    pub const LIVE_DEFAULT: Types = Types {
        event: false,
        notification: true,
        cdr: true,
    };
}

impl std::str::FromStr for Types {
    type Err = String;

    /// A comma-separated list of `event`, `notification`, `cdr` (at least one).
    fn from_str(text: &str) -> Result<Types, String> {
        let mut types = Types {
            event: false,
            notification: false,
            cdr: false,
        };
        for name in text
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            match name {
                "event" | "events" => types.event = true,
                "notification" | "notifications" => types.notification = true,
                "cdr" | "cdrs" => types.cdr = true,
                other => {
                    return Err(format!(
                        "unknown record type {other:?}: give event, notification or cdr, comma-separated"
                    ));
                }
            }
        }
        if !(types.event || types.notification || types.cdr) {
            return Err("no record type given: event, notification or cdr".to_owned());
        }
        Ok(types)
    }
}

/// One admitted event or tick, as the journal has it.
#[derive(Debug, Clone)]
pub enum Fact {
    /// An event line the gateway took (duplicates included: the journal has them too).
    Event {
        /// Its journal or stream position (0: none).
        position: Position,
        /// When it reached the gateway.
        arrival: Micros,
        /// The line as received (empty when no event record is rendered and `decoded` is given).
        line: Bytes,
        /// The line decoded, when the gateway has decoded it already (else the recorder decodes `line`):
        /// decoding was a third of the live CDR builder's cost.
        decoded: Option<Arc<Event<'static>>>,
    },
    /// The gateway's clock.
    Tick {
        /// Its journal position (0: none).
        position: Position,
        /// What the clock read.
        wall: Micros,
    },
}

impl Fact {
    /// Its journal or stream position (0: none).
    pub fn position(&self) -> Position {
        match self {
            Fact::Event { position, .. } | Fact::Tick { position, .. } => *position,
        }
    }

    /// The gateway's clock when it was taken.
    pub fn wall(&self) -> Micros {
        match self {
            Fact::Event { arrival, .. } => *arrival,
            Fact::Tick { wall, .. } => *wall,
        }
    }
}

/// One published notification, as the recorder needs it.
#[derive(Debug, Clone)]
pub struct Note {
    /// Its `seq`.
    pub seq: u64,
    /// Whose: a call's, a device's or a queue's.
    pub topic: crate::reduce::Topic,
    /// The call id, device id or queue id.
    pub subject: Arc<str>,
    /// Its members (`"channel":...,"data":{...}`).
    pub members: String,
}

/// A fact and the notifications it made, in stream order.
#[derive(Debug, Clone)]
pub struct Tapped {
    /// The event or tick.
    pub fact: Fact,
    /// Its notifications.
    pub notes: Vec<Note>,
}

/// Where a resumed output stands: records before `position` are written, and at `position` those with
/// these ids (a crash can cut the records of one event in the middle).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resume {
    /// The last position written (0: nothing to skip).
    pub position: Position,
    /// The ids of the records written at it, as they are written (JSON-escaped).
    pub ids: std::collections::HashSet<String>,
}

/// What the recorder has written and skipped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecorderCounts {
    /// Event records written.
    pub events: u64,
    /// Notification records written.
    pub notifications: u64,
    /// CDR records written.
    pub cdrs: u64,
    /// Records not written: before `--from`/`--since`, or already in a resumed output.
    pub skipped: u64,
    /// Duplicate events (by EventSequenceNumber): no record.
    pub duplicates: u64,
    /// Recorded lines that no longer decode (not written; counted).
    pub undecodable: u64,
}

/// Settings of a [`Recorder`].
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// Which records to write.
    pub types: Types,
    /// The gateway's name and the stream's epoch.
    pub origin: Origin,
    /// The CDR fold's settings.
    pub cdr: CdrConfig,
    /// Records of positions before this are not written.
    pub from: Position,
    /// Records of facts taken before this (gateway clock) are not written.
    pub since: Option<Micros>,
    /// Where the output was left.
    pub resume: Resume,
    /// The live feed's buffer: every record of every type goes there as well, whatever the output
    /// takes (`GET /callgate/feed`).
    pub feed: Option<Arc<feed::FeedBuffer>>,
    /// Whether the CDRs are also kept apart for JetStream's `CG_CDR` ([`Recorder::take_cdr_messages`]).
    pub collect_cdrs: bool,
}

/// Turns facts and their notifications into records (pure: no I/O, no clock).
pub struct Recorder {
    config: RecorderConfig,
    /// The types written: the output's, or all of them for a feed.
    render: Types,
    /// Per T-Server: duplicates and restarts, for the `<run>` in event ids.
    runs: hashbrown::HashMap<Box<str>, (SequenceTracker, u32)>,
    cdr: Option<CdrFold>,
    cdrs: Vec<Cdr>,
    cdr_messages: Vec<crate::jetstream::cdr::CdrMessage>,
    counts: RecorderCounts,
}

impl Recorder {
    /// A recorder that has seen nothing.
    pub fn new(config: RecorderConfig) -> Recorder {
        let mut render = if config.feed.is_some() {
            Types::ALL
        } else {
            config.types
        };
        render.cdr |= config.collect_cdrs;
        let cdr = render.cdr.then(|| CdrFold::new(config.cdr.clone()));
        Recorder {
            config,
            render,
            runs: hashbrown::HashMap::default(),
            cdr,
            cdrs: Vec::new(),
            cdr_messages: Vec::new(),
            counts: RecorderCounts::default(),
        }
    }

    /// Whether it needs the notifications' text (it renders notification records).
    pub fn needs_notes(&self) -> bool {
        self.render.notification
    }

    /// Whether it needs the facts' lines as received (it renders event records); without, a fact's
    /// decoded event is enough.
    pub fn needs_lines(&self) -> bool {
        self.render.event
    }

    /// The CDRs made since the last call, for `CG_CDR` (with [`RecorderConfig::collect_cdrs`]).
    pub fn take_cdr_messages(&mut self) -> Vec<crate::jetstream::cdr::CdrMessage> {
        std::mem::take(&mut self.cdr_messages)
    }

    /// What it has written and skipped so far.
    pub fn counts(&self) -> RecorderCounts {
        self.counts
    }

    /// Appends the records of `fact` and its notifications `notes` to `out`, in order: the event, its
    /// notifications, then the CDRs that fell due.
    pub fn record(&mut self, fact: &Fact, notes: &[Note], out: &mut String) {
        let position = fact.position();
        let shown = position >= self.config.from
            && self.config.since.is_none_or(|since| fact.wall() >= since);
        match fact {
            Fact::Event {
                arrival,
                line: raw,
                decoded,
                ..
            } => {
                let decoded_here;
                let event: &Event<'_> = match decoded {
                    Some(event) => event,
                    None => {
                        let Ok(Decoded::Event(event)) = decode_line(raw) else {
                            self.counts.undecodable += 1;
                            return;
                        };
                        decoded_here = event;
                        &decoded_here
                    }
                };
                // A duplicate (a T-Server's resend; the journal keeps it) is no new fact: no record.
                let run = self.run_of(&event.server, event.sequence);
                // A time no RFC 3339 year can hold (a switch clock gone wrong) gives way to the arrival.
                let place = Place {
                    position,
                    sequence: event.sequence,
                    time: event
                        .time
                        .filter(|time| (0..YEAR_10000).contains(time))
                        .unwrap_or(*arrival),
                };
                // A line that decoded is UTF-8 (the decoder checked it whole).
                if let Some(run) = run
                    && self.render.event
                    && let Ok(text) = std::str::from_utf8(raw)
                {
                    let mut conn = String::new();
                    let subject = match event.conn_id {
                        Some(conn_id) => {
                            crate::json::push_conn_id(&mut conn, conn_id);
                            Some(conn.as_str())
                        }
                        None => event.this_dn.as_deref(),
                    };
                    let record = EventRecord {
                        server: &event.server,
                        run,
                        subject,
                        arrival: *arrival,
                        line: text,
                    };
                    let start = out.len();
                    cloudevent::write_event(out, &self.config.origin, place, &record);
                    self.keep(shown, position, start, out, Kind::Event);
                }
                self.notes(shown, place, notes, out);
                if let Some(fold) = &mut self.cdr {
                    fold.apply(event, Some(*arrival), &mut self.cdrs);
                }
                self.cdrs_out(shown, place, out);
            }
            Fact::Tick { wall, .. } => {
                let place = Place {
                    position,
                    sequence: None,
                    time: *wall,
                };
                self.notes(shown, place, notes, out);
                if let Some(fold) = &mut self.cdr {
                    fold.tick(*wall, &mut self.cdrs);
                }
                self.cdrs_out(shown, place, out);
            }
        }
    }

    fn notes(&mut self, shown: bool, place: Place, notes: &[Note], out: &mut String) {
        if !self.render.notification {
            return;
        }
        for note in notes {
            let record = NotificationRecord {
                seq: note.seq,
                topic: note.topic,
                subject: &note.subject,
                members: &note.members,
            };
            let start = out.len();
            cloudevent::write_notification(out, &self.config.origin, place, &record);
            self.keep(shown, place.position, start, out, Kind::Notification);
        }
    }

    fn cdrs_out(&mut self, shown: bool, place: Place, out: &mut String) {
        let cdrs = std::mem::take(&mut self.cdrs);
        // Rendered only for a reader: the output's types, or the feed (which takes every type).
        let recorded = self.config.types.cdr || self.config.feed.is_some();
        for cdr in &cdrs {
            // For `CG_CDR` as well: the CDR's JSON is written once, for both.
            let json = self.config.collect_cdrs.then(|| {
                let mut json = String::with_capacity(4096);
                cdr.write_json(&mut json);
                json
            });
            if recorded {
                let start = out.len();
                let origin = &self.config.origin;
                match &json {
                    Some(json) => cloudevent::write_cdr_with(out, origin, place, cdr, json),
                    None => cloudevent::write_cdr(out, origin, place, cdr),
                }
                self.keep(shown, place.position, start, out, Kind::Cdr);
            }
            if let Some(json) = json {
                self.cdr_messages.push(crate::jetstream::cdr::CdrMessage {
                    position: place.position,
                    server: cdr.server.to_string(),
                    id: format!("{}:{}", cdr.cdr_id, cdr.version),
                    json,
                });
            }
        }
        self.cdrs = cdrs;
        self.cdrs.clear();
    }

    /// Keeps the record just written at `start..` or takes it back: one before `--from`/`--since`, or
    /// one a resumed output already holds.
    fn keep(
        &mut self,
        shown: bool,
        position: Position,
        start: usize,
        out: &mut String,
        kind: Kind,
    ) {
        if let Some(feed) = &self.config.feed {
            feed.push(kind, position, &out[start..]);
        }
        if !kind.of(self.config.types) {
            out.truncate(start);
            return;
        }
        let resume = &self.config.resume;
        let written_before = position > 0
            && resume.position > 0
            && (position < resume.position
                || (position == resume.position
                    && record_id(&out[start..]).is_some_and(|id| resume.ids.contains(id))));
        if !shown || written_before {
            out.truncate(start);
            self.counts.skipped += 1;
            return;
        }
        match kind {
            Kind::Event => self.counts.events += 1,
            Kind::Notification => self.counts.notifications += 1,
            Kind::Cdr => self.counts.cdrs += 1,
        }
    }

    /// The run of `server`'s events so far, after taking `sequence` (call-resource.md, "Duplicates and
    /// order"); `None` for a duplicate. Past [`MAX_SERVERS`] Servers (which the gateway refuses) every
    /// event is run 0.
    fn run_of(&mut self, server: &str, sequence: Option<u64>) -> Option<u32> {
        if self.runs.len() >= MAX_SERVERS && !self.runs.contains_key(server) {
            return Some(0);
        }
        let (tracker, run) = self
            .runs
            .entry_ref(server)
            .or_insert((SequenceTracker::default(), 0));
        match sequence.map(|number| tracker.check(number)) {
            Some(SequenceCheck::Duplicate) => {
                self.counts.duplicates += 1;
                None
            }
            Some(SequenceCheck::Restarted) => {
                *run += 1;
                Some(*run)
            }
            Some(SequenceCheck::Fresh) | None => Some(*run),
        }
    }
}

/// The type of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A T-Server event.
    Event,
    /// A call or device notification.
    Notification,
    /// A call detail record.
    Cdr,
}

impl Kind {
    /// Whether `types` takes it.
    pub fn of(self, types: Types) -> bool {
        match self {
            Kind::Event => types.event,
            Kind::Notification => types.notification,
            Kind::Cdr => types.cdr,
        }
    }
}

/// The `id` of a record line as written (still JSON-escaped): the text between `"id":"` and the next
/// unescaped quote.
pub fn record_id(line: &str) -> Option<&str> {
    let start = line.find("\"id\":\"")? + 6;
    let bytes = line.as_bytes();
    let mut at = start;
    while at < bytes.len() {
        match bytes[at] {
            b'\\' => at += 2,
            b'"' => return line.get(start..at),
            _ => at += 1,
        }
    }
    None
}

/// The `position` of a record line (0: none).
pub fn record_position(line: &str) -> Position {
    // The envelope's, not a member of `data` that happens to be called so.
    let envelope = line.find(",\"data\":").map_or(line, |end| &line[..end]);
    envelope
        .find("\"position\":\"")
        .and_then(|at| line.get(at + 12..at + 32))
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The records of a simulated half hour, and the CDRs kept for `CG_CDR`, from a recorder of `types`.
    fn recorded(types: Types) -> (String, Vec<crate::jetstream::cdr::CdrMessage>) {
        let config = crate::ingest::sim::SimConfig {
            seed: 5,
            agents: 12,
            queues: 2,
            supervisors: 1,
            calls_per_second: 0.2,
            duration_secs: Some(1800.0),
            ..crate::ingest::sim::SimConfig::default()
        };
        let mut recorder = Recorder::new(RecorderConfig {
            types,
            origin: Origin {
                node: "test".into(),
                epoch: "e".into(),
            },
            cdr: CdrConfig {
                linger: 1_000_000,
                ..CdrConfig::default()
            },
            from: 0,
            since: None,
            resume: Resume::default(),
            feed: None,
            collect_cdrs: true,
        });
        let mut out = String::new();
        let mut last = 0;
        for (index, event) in crate::ingest::sim::Simulator::new(config).enumerate() {
            let fact = Fact::Event {
                position: index as Position + 1,
                arrival: event.time,
                line: Bytes::from(event.line),
                decoded: None,
            };
            recorder.record(&fact, &[], &mut out);
            last = event.time;
        }
        let end = Fact::Tick {
            position: 0,
            wall: last + 3_600_000_000,
        };
        recorder.record(&end, &[], &mut out);
        (out, recorder.take_cdr_messages())
    }

    #[test]
    fn cdrs_kept_for_jetstream_are_the_data_of_the_records_written() {
        let (out, messages) = recorded(Types::ALL);
        let records: Vec<serde_json::Value> = out
            .lines()
            .map(|line| serde_json::from_str(line).expect("a record"))
            .filter(|record: &serde_json::Value| record["type"] == "callgate.call.cdr.v1")
            .collect();
        assert!(records.len() > 20, "{} CDRs", records.len());
        assert_eq!(records.len(), messages.len());
        for (record, message) in records.iter().zip(&messages) {
            let data: serde_json::Value = serde_json::from_str(&message.json).expect("JSON");
            assert_eq!(record["data"], data);
            assert_eq!(record["id"].as_str(), Some(message.id.as_str()));
        }
        // Kept for JetStream alone, they are the same, and no record is written.
        let (out, alone) = recorded(Types::NONE);
        assert!(out.is_empty());
        let json = |messages: &[crate::jetstream::cdr::CdrMessage]| {
            messages.iter().map(|m| m.json.clone()).collect::<Vec<_>>()
        };
        assert_eq!(json(&alone), json(&messages));
    }
}
