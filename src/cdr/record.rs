//! A call detail record as analytics.md lists it, and its JSON: members in the spec's order, written by
//! hand so that the offline `callgate cdr` and the live gateway print the same bytes.

use crate::event::{ConnId, Micros};
use crate::json::write_json_str;

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
    pub dn: Box<str>,
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
    pub dn: Box<str>,
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
    pub dn: Box<str>,
    /// The agent logged in there, if known.
    pub agent_id: Option<Box<str>>,
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
    pub server: Box<str>,
    /// The root call's CallUUID.
    pub call_uuid: Option<Box<str>>,
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
    pub ani: Option<Box<str>>,
    /// The root call's DNIS.
    pub dnis: Option<Box<str>>,
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
    pub user_data: Option<Box<str>>,
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
        out.push_str(&self.version.to_string());
        out.push_str(",\"server\":");
        write_json_str(out, &self.server);
        out.push_str(",\"callUuid\":");
        opt_str(out, self.call_uuid.as_deref());
        out.push_str(",\"rootConnId\":\"");
        out.push_str(&self.root.to_string());
        out.push_str("\",\"connIds\":[");
        for (i, conn) in self.conn_ids.iter().enumerate() {
            comma(out, i);
            out.push('"');
            out.push_str(&conn.to_string());
            out.push('"');
        }
        out.push_str("],\"links\":[");
        for (i, link) in self.links.iter().enumerate() {
            comma(out, i);
            out.push_str(&format!(
                "{{\"connId\":\"{}\",\"previousConnId\":\"{}\",\"kind\":\"{}\"}}",
                link.conn_id,
                link.previous,
                link.kind.as_str()
            ));
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
            time(out, Some(segment.start));
            out.push_str(",\"end\":");
            time(out, Some(segment.end));
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
        time(out, Some(self.start));
        out.push_str(",\"answerTime\":");
        time(out, self.answer);
        out.push_str(",\"endTime\":");
        time(out, Some(self.end));
        out.push_str(",\"durationMs\":");
        out.push_str(&(ms(self.end) - ms(self.start)).to_string());
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
            time(out, Some(visit.enter));
            out.push_str(",\"exitTime\":");
            time(out, visit.exit);
            out.push_str(",\"waitMs\":");
            opt_int(out, wait);
            out.push_str(",\"outcome\":");
            opt_str(out, visit.outcome);
            out.push('}');
        }
        out.push_str("],\"queueWaitMs\":");
        out.push_str(&total.to_string());
    }

    fn write_handling(&self, out: &mut String) {
        out.push_str(",\"ringMs\":");
        opt_int(out, self.ring_ms);
        out.push_str(",\"alerts\":");
        out.push_str(&self.alerts.to_string());
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
        out.push_str(&format!(
            ",\"talkMs\":{},\"holdCount\":{},\"holdMs\":{},\"longestHoldMs\":{longest_hold}",
            sum(SegmentKind::Interact),
            self.hold_count,
            sum(SegmentKind::Hold),
        ));
    }

    fn write_flags(&self, out: &mut String) {
        out.push_str(&format!(
            ",\"transferred\":{},\"transferCount\":{},\"consultCount\":{},\"conferenced\":{},\
             \"conferenceCount\":{},\"monitored\":{},\"recorded\":{},\"abandoned\":{}",
            self.transfer_count > 0,
            self.transfer_count,
            self.consult_count,
            self.conference_count > 0,
            self.conference_count,
            self.monitored,
            self.recorded,
            self.abandon.is_some()
        ));
        out.push_str(",\"abandonPhase\":");
        opt_str(out, self.abandon.and_then(|(phase, _)| phase));
        out.push_str(",\"abandonTime\":");
        time(out, self.abandon.map(|(_, at)| at));
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
            time(out, agent.first_alert);
            out.push_str(",\"answerTime\":");
            time(out, agent.answer);
            out.push_str(",\"endTime\":");
            time(out, agent.end);
            out.push_str(",\"ringMs\":");
            opt_int(out, agent.ring_ms);
            out.push_str(&format!(
                ",\"talkMs\":{},\"holdMs\":{},\"holdCount\":{}",
                agent.talk_ms, agent.hold_ms, agent.hold_count
            ));
            out.push_str(",\"wrapUpMs\":");
            opt_int(out, agent.wrap_up_ms);
            out.push_str(",\"result\":\"");
            out.push_str(agent.result);
            out.push_str("\"}");
        }
        out.push(']');
    }
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
        Some(value) => out.push_str(&value.to_string()),
        None => out.push_str("null"),
    }
}

/// `"2025-11-23T12:13:20.100Z"` (RFC 3339, UTC, milliseconds, truncated), or `null`.
fn time(out: &mut String, micros: Option<Micros>) {
    let Some(micros) = micros else {
        out.push_str("null");
        return;
    };
    let millis = ms(micros);
    let Ok(at) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
    else {
        out.push_str("null");
        return;
    };
    out.push_str(&format!(
        "\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z\"",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        millis.rem_euclid(1000)
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_milliseconds_truncated() {
        let mut out = String::new();
        time(&mut out, Some(1_763_900_000_100_999));
        assert_eq!(out, "\"2025-11-23T12:13:20.100Z\"");
        out.clear();
        time(&mut out, Some(0));
        assert_eq!(out, "\"1970-01-01T00:00:00.000Z\"");
        out.clear();
        time(&mut out, None);
        assert_eq!(out, "null");
    }
}
