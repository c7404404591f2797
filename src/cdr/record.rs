//! A call detail record as analytics.md lists it, and its JSON: members in the spec's order, written by
//! hand so that the offline `callgate cdr` and the live gateway print the same bytes.

use crate::event::{ConnId, Micros};
use crate::json::write_json_str;
use smol_str::SmolStr;
use std::sync::Arc;

/// How a ConnID joined the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// A consultation that was never merged (cancelled, or abandoned).
    Consult,
    /// A consultation completed as a transfer.
    Transfer,
    /// A consultation completed as a conference.
    Conference,
}

impl LinkKind {
    fn as_str(self) -> &'static str {
        match self {
            LinkKind::Consult => "consult",
            LinkKind::Transfer => "transfer",
            LinkKind::Conference => "conference",
        }
    }
}

/// One edge of the call's tree of ConnIDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The ConnID that joined.
    pub conn_id: ConnId,
    /// The ConnID it was made from.
    pub previous: ConnId,
    /// What it became.
    pub kind: LinkKind,
}

/// One visit to a queue or routing point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueVisit {
    /// The queue's DN.
    pub dn: SmolStr,
    /// EventQueued.
    pub enter: Micros,
    /// EventDiverted, EventAbandoned or EventReleased at the queue.
    pub exit: Option<Micros>,
    /// `diverted`, `abandoned` or `released`; `None` while waiting.
    pub outcome: Option<&'static str>,
}

/// The kind of a timeline segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentKind {
    /// Waiting in a queue.
    Queue,
    /// Ringing at a DN.
    Alert,
    /// A DN placing the call.
    Dialing,
    /// Connected, not held.
    Interact,
    /// On hold.
    Hold,
    /// After-call work.
    Wrapup,
}

impl SegmentKind {
    fn as_str(self) -> &'static str {
        match self {
            SegmentKind::Queue => "queue",
            SegmentKind::Alert => "alert",
            SegmentKind::Dialing => "dialing",
            SegmentKind::Interact => "interact",
            SegmentKind::Hold => "hold",
            SegmentKind::Wrapup => "wrapup",
        }
    }
}

/// One state of one party: the timeline every duration follows from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The party's DN.
    pub dn: SmolStr,
    /// Its state.
    pub kind: SegmentKind,
    /// When it began.
    pub start: Micros,
    /// When it ended.
    pub end: Micros,
}

impl Segment {
    /// Its length in milliseconds.
    pub fn millis(&self) -> i64 {
        ms(self.end) - ms(self.start)
    }
}

/// One handling party's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRow {
    /// Its DN.
    pub dn: SmolStr,
    /// The agent logged in there, if known.
    pub agent_id: Option<SmolStr>,
    /// Its first EventRinging.
    pub first_alert: Option<Micros>,
    /// Its first EventEstablished.
    pub answer: Option<Micros>,
    /// Its last EventReleased.
    pub end: Option<Micros>,
    /// Sum of its alert segments (`None`: it never rang).
    pub ring_ms: Option<i64>,
    /// Sum of its interact segments.
    pub talk_ms: i64,
    /// Sum of its hold segments.
    pub hold_ms: i64,
    /// Its hold segments.
    pub hold_count: u32,
    /// Its after-call work right after the call (`None`: unknown).
    pub wrap_up_ms: Option<i64>,
    /// How its part ended.
    pub result: &'static str,
}

/// A call detail record, ready to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cdr {
    /// `<Server>:<run>:<sequence of the first event>:<rootConnId>`.
    pub cdr_id: String,
    /// 1, then one more for each re-emission.
    pub version: u32,
    /// The T-Server.
    pub server: SmolStr,
    /// The root call's CallUUID.
    pub call_uuid: Option<SmolStr>,
    /// The ConnID of the call's first event.
    pub root: ConnId,
    /// Every ConnID, in order of first event.
    pub conn_ids: Vec<ConnId>,
    /// How the other ConnIDs joined.
    pub links: Vec<Link>,
    /// The root call's CallType name.
    pub call_type: &'static str,
    /// inbound, outbound or internal.
    pub direction: &'static str,
    /// The root call's ANI.
    pub ani: Option<SmolStr>,
    /// The root call's DNIS.
    pub dnis: Option<SmolStr>,
    /// ANI in E.164, when it is an international number.
    pub ani_e164: Option<String>,
    /// The first event.
    pub start: Micros,
    /// The first EventEstablished at a DN that is not a queue.
    pub answer: Option<Micros>,
    /// The last release.
    pub end: Micros,
    /// Queue visits.
    pub queues: Vec<QueueVisit>,
    /// Alerting to answer at the answering DN.
    pub ring_ms: Option<i64>,
    /// DNs that rang.
    pub alerts: u32,
    /// Holds over all parties.
    pub hold_count: u32,
    /// Transfers.
    pub transfer_count: u32,
    /// Consultation calls.
    pub consult_count: u32,
    /// Parties that joined by conference.
    pub conference_count: u32,
    /// A supervisor observed.
    pub monitored: bool,
    /// Recording ran.
    pub recorded: bool,
    /// `queue` or `ringing` when the caller abandoned.
    pub abandon: Option<(Option<&'static str>, Micros)>,
    /// caller, agent, system or unknown.
    pub released_by: &'static str,
    /// Completed, Abandoned, Transferred, ...
    pub outcome: &'static str,
    /// One row per handling party.
    pub agents: Vec<AgentRow>,
    /// The timeline.
    pub segments: Vec<Segment>,
    /// The disposition key's final value.
    pub disposition: Option<String>,
    /// The final attached data (compact JSON).
    pub user_data: Option<Arc<str>>,
}

/// `micros` truncated to milliseconds (docs/cdr-interpretations.md, 1).
pub fn ms(micros: Micros) -> i64 {
    micros.div_euclid(1000)
}

impl Cdr {
    /// The record as one line of compact JSON, without the newline.
    pub fn write_json(&self, out: &mut String) {
        out.push_str("{\"schemaVersion\":1,\"cdrId\":");
        write_json_str(out, &self.cdr_id);
        out.push_str(",\"version\":");
        int(out, i64::from(self.version));
        out.push_str(",\"server\":");
        write_json_str(out, &self.server);
        out.push_str(",\"callUuid\":");
        opt_str(out, self.call_uuid.as_deref());
        out.push_str(",\"rootConnId\":\"");
        crate::json::push_conn_id(out, self.root);
        out.push_str("\",\"connIds\":[");
        for (i, conn) in self.conn_ids.iter().enumerate() {
            comma(out, i);
            out.push('"');
            crate::json::push_conn_id(out, *conn);
            out.push('"');
        }
        out.push_str("],\"links\":[");
        for (i, link) in self.links.iter().enumerate() {
            comma(out, i);
            out.push_str("{\"connId\":\"");
            crate::json::push_conn_id(out, link.conn_id);
            out.push_str("\",\"previousConnId\":\"");
            crate::json::push_conn_id(out, link.previous);
            out.push_str("\",\"kind\":\"");
            out.push_str(link.kind.as_str());
            out.push_str("\"}");
        }
        out.push_str("],\"callType\":\"");
        out.push_str(self.call_type);
        out.push_str("\",\"direction\":\"");
        out.push_str(self.direction);
        out.push_str("\",\"ani\":");
        opt_str(out, self.ani.as_deref());
        out.push_str(",\"dnis\":");
        opt_str(out, self.dnis.as_deref());
        out.push_str(",\"aniE164\":");
        opt_str(out, self.ani_e164.as_deref());
        self.write_times(out);
        self.write_queues(out);
        self.write_handling(out);
        self.write_flags(out);
        self.write_agents(out);
        out.push_str(",\"segments\":[");
        for (i, segment) in self.segments.iter().enumerate() {
            comma(out, i);
            out.push_str("{\"dn\":");
            write_json_str(out, &segment.dn);
            out.push_str(",\"type\":\"");
            out.push_str(segment.kind.as_str());
            out.push_str("\",\"start\":");
            write_time(out, Some(segment.start));
            out.push_str(",\"end\":");
            write_time(out, Some(segment.end));
            out.push('}');
        }
        out.push_str("],\"disposition\":");
        opt_str(out, self.disposition.as_deref());
        out.push_str(",\"userData\":");
        out.push_str(self.user_data.as_deref().unwrap_or("null"));
        out.push('}');
    }

    fn write_times(&self, out: &mut String) {
        out.push_str(",\"startTime\":");
        write_time(out, Some(self.start));
        out.push_str(",\"answerTime\":");
        write_time(out, self.answer);
        out.push_str(",\"endTime\":");
        write_time(out, Some(self.end));
        out.push_str(",\"durationMs\":");
        int(out, ms(self.end) - ms(self.start));
        out.push_str(",\"timeToAnswerMs\":");
        opt_int(out, self.answer.map(|answer| ms(answer) - ms(self.start)));
    }

    fn write_queues(&self, out: &mut String) {
        out.push_str(",\"queues\":[");
        let mut total = 0;
        for (i, visit) in self.queues.iter().enumerate() {
            comma(out, i);
            let wait = visit.exit.map(|exit| ms(exit) - ms(visit.enter));
            total += wait.unwrap_or(0);
            out.push_str("{\"dn\":");
            write_json_str(out, &visit.dn);
            out.push_str(",\"enterTime\":");
            write_time(out, Some(visit.enter));
            out.push_str(",\"exitTime\":");
            write_time(out, visit.exit);
            out.push_str(",\"waitMs\":");
            opt_int(out, wait);
            out.push_str(",\"outcome\":");
            opt_str(out, visit.outcome);
            out.push('}');
        }
        out.push_str("],\"queueWaitMs\":");
        int(out, total);
    }

    fn write_handling(&self, out: &mut String) {
        out.push_str(",\"ringMs\":");
        opt_int(out, self.ring_ms);
        out.push_str(",\"alerts\":");
        int(out, i64::from(self.alerts));
        let sum = |kind: SegmentKind| -> i64 {
            self.segments
                .iter()
                .filter(|segment| segment.kind == kind)
                .map(Segment::millis)
                .sum()
        };
        let longest_hold = self
            .segments
            .iter()
            .filter(|segment| segment.kind == SegmentKind::Hold)
            .map(Segment::millis)
            .max()
            .unwrap_or(0);
        out.push_str(",\"talkMs\":");
        int(out, sum(SegmentKind::Interact));
        out.push_str(",\"holdCount\":");
        int(out, i64::from(self.hold_count));
        out.push_str(",\"holdMs\":");
        int(out, sum(SegmentKind::Hold));
        out.push_str(",\"longestHoldMs\":");
        int(out, longest_hold);
    }

    fn write_flags(&self, out: &mut String) {
        let members: [(&str, Result<bool, u32>); 8] = [
            ("transferred", Ok(self.transfer_count > 0)),
            ("transferCount", Err(self.transfer_count)),
            ("consultCount", Err(self.consult_count)),
            ("conferenced", Ok(self.conference_count > 0)),
            ("conferenceCount", Err(self.conference_count)),
            ("monitored", Ok(self.monitored)),
            ("recorded", Ok(self.recorded)),
            ("abandoned", Ok(self.abandon.is_some())),
        ];
        for (name, value) in members {
            out.push_str(",\"");
            out.push_str(name);
            out.push_str("\":");
            match value {
                Ok(flag) => out.push_str(if flag { "true" } else { "false" }),
                Err(count) => int(out, i64::from(count)),
            }
        }
        out.push_str(",\"abandonPhase\":");
        opt_str(out, self.abandon.and_then(|(phase, _)| phase));
        out.push_str(",\"abandonTime\":");
        write_time(out, self.abandon.map(|(_, at)| at));
        out.push_str(",\"releasedBy\":\"");
        out.push_str(self.released_by);
        out.push_str("\",\"outcome\":\"");
        out.push_str(self.outcome);
        out.push('"');
    }

    fn write_agents(&self, out: &mut String) {
        out.push_str(",\"agents\":[");
        for (i, agent) in self.agents.iter().enumerate() {
            comma(out, i);
            out.push_str("{\"dn\":");
            write_json_str(out, &agent.dn);
            out.push_str(",\"agentId\":");
            opt_str(out, agent.agent_id.as_deref());
            out.push_str(",\"firstAlertTime\":");
            write_time(out, agent.first_alert);
            out.push_str(",\"answerTime\":");
            write_time(out, agent.answer);
            out.push_str(",\"endTime\":");
            write_time(out, agent.end);
            out.push_str(",\"ringMs\":");
            opt_int(out, agent.ring_ms);
            out.push_str(",\"talkMs\":");
            int(out, agent.talk_ms);
            out.push_str(",\"holdMs\":");
            int(out, agent.hold_ms);
            out.push_str(",\"holdCount\":");
            int(out, i64::from(agent.hold_count));
            out.push_str(",\"wrapUpMs\":");
            opt_int(out, agent.wrap_up_ms);
            out.push_str(",\"result\":\"");
            out.push_str(agent.result);
            out.push_str("\"}");
        }
        out.push(']');
    }
}

/// An integer in decimal.
fn int(out: &mut String, value: i64) {
    crate::json::push_integer(out, value.unsigned_abs(), value < 0);
}

fn comma(out: &mut String, index: usize) {
    if index > 0 {
        out.push(',');
    }
}

fn opt_str(out: &mut String, value: Option<&str>) {
    match value {
        Some(value) => write_json_str(out, value),
        None => out.push_str("null"),
    }
}

fn opt_int(out: &mut String, value: Option<i64>) {
    match value {
        Some(value) => int(out, value),
        None => out.push_str("null"),
    }
}

/// `"2025-11-23T12:13:20.100Z"` (RFC 3339, UTC, milliseconds, truncated), or `null`. Written digit by
/// digit: through `time` and `format!` it was a fifth of `callgate cdr`'s work.
pub(crate) fn write_time(out: &mut String, micros: Option<Micros>) {
    let Some(micros) = micros else {
        out.push_str("null");
        return;
    };
    let millis = ms(micros);
    let (days, of_day) = (millis.div_euclid(86_400_000), millis.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        out.push_str("null");
        return;
    }
    let mut text = *b"\"0000-00-00T00:00:00.000Z\"";
    put_digits(&mut text[1..5], year);
    put_digits(&mut text[6..8], month);
    put_digits(&mut text[9..11], day);
    put_digits(&mut text[12..14], of_day / 3_600_000);
    put_digits(&mut text[15..17], of_day / 60_000 % 60);
    put_digits(&mut text[18..20], of_day / 1000 % 60);
    put_digits(&mut text[21..24], of_day % 1000);
    // ASCII digits and punctuation only.
    out.push_str(std::str::from_utf8(&text).unwrap_or("null"));
}

/// `value` (0 ≤ value < 10^len) in exactly `place.len()` digits.
fn put_digits(place: &mut [u8], mut value: i64) {
    for digit in place.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_milliseconds_truncated() {
        let mut out = String::new();
        write_time(&mut out, Some(1_763_900_000_100_999));
        assert_eq!(out, "\"2025-11-23T12:13:20.100Z\"");
        out.clear();
        write_time(&mut out, Some(0));
        assert_eq!(out, "\"1970-01-01T00:00:00.000Z\"");
        out.clear();
        write_time(&mut out, None);
        assert_eq!(out, "null");
    }

    #[test]
    fn dates_agree_with_the_time_crate_across_four_centuries() {
        // Every 7th day from 1900 to 2300, leap years and century rules included.
        for days in (-25_567..120_000).step_by(7) {
            let millis = days * 86_400_000 + 45_296_789;
            let mut ours = String::new();
            write_time(&mut ours, Some(millis * 1000));
            let at =
                time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
                    .expect("in range");
            let theirs = format!(
                "\"{:04}-{:02}-{:02}T12:34:56.789Z\"",
                at.year(),
                u8::from(at.month()),
                at.day()
            );
            assert_eq!(ours, theirs, "day {days}");
        }
    }
}
