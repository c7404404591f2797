//! Queue resources (api.md, "GET /api/v2/queues"): per (Server, queue or routing-point DN) seen in
//! EventQueued, the calls waiting there and today's counters, from EventQueued, EventDiverted and
//! EventAbandoned at that DN. Pure: the times are the events' own, so `fold` and `serve` agree.
//!
//! Choices the spec leaves open (docs/semantics.md, "Queues"):
//! - "answered" is what the queue sees: EventDiverted, the call handed to an agent or onwards. The
//!   agent's answer happens at another DN, and a wallboard's service level is the queue's.
//! - A call that leaves without EventDiverted or EventAbandoned (a T-Server that lost the link) leaves
//!   the waiting list when the gateway releases stale calls (`--stale-call-after`).
//! - Bounds: at most [`MAX_WAITING`] waiting calls are held per queue (later EventQueued are counted in
//!   `entered` but not listed), and a resource lists the [`LISTED`] longest-waiting of them; `waitingCount`
//!   counts every held one.

use crate::event::{ConnId, Event, EventKind, Micros};
use crate::json::{Decimal, push_conn_id, write_json_str};
use std::sync::Arc;

/// Waiting calls held per queue. Past it, a queued call is counted but not held: a queue holding this
/// many is a flood, not a queue, and each of its notifications carries its list.
pub const MAX_WAITING: usize = 10_000;
/// Waiting calls listed in a resource, longest-waiting first (`waitingCount` has them all).
pub const LISTED: usize = 200;
/// One day in µs.
const DAY: Micros = 86_400_000_000;

/// One call waiting in a queue.
#[derive(Debug, Clone)]
struct Waiting {
    /// The call's `id` as its call resources show it: its CallUUID, else its ConnID.
    call_id: Box<str>,
    conn_id: ConnId,
    /// When it entered (EventQueued's time).
    since: Micros,
    /// When that event reached the gateway (stale expiry is by the gateway's clock).
    arrived: Micros,
}

/// Today's counters (the UTC day of the event times).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Today {
    entered: u64,
    diverted: u64,
    abandoned: u64,
    answered_within: u64,
    abandoned_within: u64,
}

/// One queue or routing point.
#[derive(Debug, Clone)]
pub struct Queue {
    /// Its T-Server's number in the reducer.
    pub server: u32,
    /// Its DN.
    pub dn: Arc<str>,
    /// Its `id`: the UUID a device at that DN would have (api.md: one resource per (Server, DN)).
    pub queue_id: Arc<str>,
    waiting: Vec<Waiting>,
    /// The day `today` counts (days since 1970-01-01, UTC).
    day: i64,
    today: Today,
    /// The time of the last event that changed it: `longestWaitSecs` is as of then.
    as_of: Micros,
}

impl Queue {
    /// A queue nothing has happened in yet.
    pub fn new(server: u32, dn: Arc<str>, queue_id: Arc<str>) -> Queue {
        Queue {
            server,
            dn,
            queue_id,
            waiting: Vec::new(),
            day: i64::MIN,
            today: Today::default(),
            as_of: 0,
        }
    }

    /// Applies a call event at this queue's DN, at `time`, arrived at `arrived`; whether the resource
    /// changed. `service_level` is `--service-level-secs` in µs.
    pub fn apply(
        &mut self,
        event: &Event<'_>,
        time: Micros,
        arrived: Micros,
        service_level: Micros,
    ) -> bool {
        let Some(conn_id) = event.conn_id else {
            return false;
        };
        self.roll_to(time);
        let found = self.waiting.iter().position(|w| w.conn_id == conn_id);
        match event.kind {
            EventKind::Queued => {
                if found.is_some() {
                    return false;
                }
                self.today.entered += 1;
                if self.waiting.len() < MAX_WAITING {
                    let call_id = match (&event.call_uuid, conn_id) {
                        (Some(uuid), _) => Box::from(&**uuid),
                        (None, conn) => {
                            let mut id = String::new();
                            push_conn_id(&mut id, conn);
                            id.into_boxed_str()
                        }
                    };
                    self.waiting.push(Waiting {
                        call_id,
                        conn_id,
                        since: time,
                        arrived,
                    });
                }
            }
            EventKind::Diverted | EventKind::Abandoned => {
                let diverted = event.kind == EventKind::Diverted;
                if diverted {
                    self.today.diverted += 1;
                } else {
                    self.today.abandoned += 1;
                }
                if let Some(at) = found {
                    let left = self.waiting.remove(at);
                    let within = time.saturating_sub(left.since) <= service_level;
                    match (diverted, within) {
                        (true, true) => self.today.answered_within += 1,
                        (false, true) => self.today.abandoned_within += 1,
                        _ => {}
                    }
                }
            }
            _ => return false,
        }
        self.as_of = time;
        true
    }

    /// Starts a new day's counters when `time` is on a later UTC day than the counted one.
    fn roll_to(&mut self, time: Micros) {
        let day = time.div_euclid(DAY);
        if day > self.day {
            self.day = day;
            self.today = Today::default();
        }
    }

    /// Drops the waiting calls whose EventQueued arrived before `silent_since` (their call was released
    /// as stale: nothing will say it left), as of `now`; whether any was dropped.
    pub fn drop_stale(&mut self, silent_since: Micros, now: Micros) -> bool {
        let before = self.waiting.len();
        self.waiting.retain(|w| w.arrived >= silent_since);
        let dropped = self.waiting.len() != before;
        if dropped {
            self.as_of = self.as_of.max(now);
        }
        dropped
    }

    /// How many calls wait.
    pub fn waiting_count(&self) -> usize {
        self.waiting.len()
    }

    /// Writes the queue resource as compact JSON; `server` is its T-Server's name.
    pub fn write(&self, server: &str, out: &mut String) {
        out.push_str("{\"id\":");
        write_json_str(out, &self.queue_id);
        out.push_str(",\"phoneNumber\":");
        write_json_str(out, &self.dn);
        out.push_str(",\"server\":");
        write_json_str(out, server);
        out.push_str(",\"waiting\":[");
        for (i, waiting) in self.waiting.iter().take(LISTED).enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"callId\":");
            write_json_str(out, &waiting.call_id);
            out.push_str(",\"connId\":\"");
            push_conn_id(out, waiting.conn_id);
            out.push_str("\",\"since\":");
            crate::cdr::record::write_time(out, Some(waiting.since));
            out.push('}');
        }
        out.push_str("],\"waitingCount\":");
        out.push_str(Decimal::new(self.waiting.len() as u64).as_str());
        out.push_str(",\"longestWaitSecs\":");
        let longest = self
            .waiting
            .iter()
            .map(|w| w.since)
            .min()
            .map_or(0, |since| {
                u64::try_from(self.as_of.saturating_sub(since) / 1_000_000).unwrap_or(0)
            });
        out.push_str(Decimal::new(longest).as_str());
        let today = &self.today;
        out.push_str(",\"today\":{\"entered\":");
        out.push_str(Decimal::new(today.entered).as_str());
        out.push_str(",\"diverted\":");
        out.push_str(Decimal::new(today.diverted).as_str());
        out.push_str(",\"abandoned\":");
        out.push_str(Decimal::new(today.abandoned).as_str());
        out.push_str(",\"answeredWithinServiceLevel\":");
        out.push_str(Decimal::new(today.answered_within).as_str());
        out.push_str(",\"serviceLevel\":");
        write_service_level(out, today);
        out.push_str("}}");
    }
}

/// Answered within the service level over entered minus abandoned within it, as a percentage with one
/// decimal (api.md); `null` before any call counts.
fn write_service_level(out: &mut String, today: &Today) {
    let offered = today.entered.saturating_sub(today.abandoned_within);
    if offered == 0 {
        out.push_str("null");
        return;
    }
    // Tenths of a percent, rounded half up, in integers: the same digits on every machine.
    let tenths = (today.answered_within.min(offered) * 2000 + offered) / (2 * offered);
    out.push_str(Decimal::new(tenths / 10).as_str());
    if !tenths.is_multiple_of(10) {
        out.push('.');
        out.push(char::from(b'0' + (tenths % 10) as u8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Decoded, decode_line};

    const SL: Micros = 20_000_000;

    fn apply(queue: &mut Queue, line: &str, secs: f64) -> bool {
        let Ok(Decoded::Event(event)) = decode_line(line.as_bytes()) else {
            panic!("a valid event: {line}");
        };
        let time = (secs * 1e6) as Micros;
        queue.apply(&event, time, time, SL)
    }

    fn queued(conn: u32) -> String {
        format!(
            r#"{{"event":"EventQueued","ConnID":"{conn:016x}","CallUUID":"U{conn}","ThisDN":"8001"}}"#
        )
    }

    fn left(kind: &str, conn: u32) -> String {
        format!(r#"{{"event":"{kind}","ConnID":"{conn:016x}","ThisDN":"8001"}}"#)
    }

    fn doc(queue: &Queue) -> serde_json::Value {
        let mut out = String::new();
        queue.write("SIP", &mut out);
        serde_json::from_str(&out).expect("valid JSON")
    }

    fn queue() -> Queue {
        Queue::new(0, "8001".into(), "q-8001".into())
    }

    #[test]
    fn a_queued_call_waits_until_diverted_and_counts_within_the_service_level() {
        let day0 = 1_763_856_000.0; // 2025-11-23T00:00:00Z
        let mut queue = queue();
        assert!(apply(&mut queue, &queued(1), day0 + 10.0));
        assert!(apply(&mut queue, &queued(2), day0 + 12.5));
        let waiting = doc(&queue);
        assert_eq!(waiting["waitingCount"], 2);
        assert_eq!(waiting["longestWaitSecs"], 2, "as of the last event");
        assert_eq!(waiting["waiting"][0]["callId"], "U1");
        assert_eq!(waiting["waiting"][0]["connId"], "0000000000000001");
        assert_eq!(waiting["waiting"][0]["since"], "2025-11-23T00:00:10.000Z");
        assert_eq!(
            waiting["today"]["serviceLevel"], 0,
            "two offered, none answered yet"
        );
        // Call 1 answered after 15 s (within 20), call 2 after 30.5 s (not).
        assert!(apply(&mut queue, &left("EventDiverted", 1), day0 + 25.0));
        assert!(apply(&mut queue, &left("EventDiverted", 2), day0 + 43.0));
        let done = doc(&queue);
        assert_eq!(done["waitingCount"], 0);
        assert_eq!(done["longestWaitSecs"], 0);
        assert_eq!(
            done["today"],
            serde_json::json!({"entered":2,"diverted":2,"abandoned":0,
                "answeredWithinServiceLevel":1,"serviceLevel":50})
        );
    }

    #[test]
    fn short_abandons_leave_the_service_level_and_a_new_day_starts_at_zero() {
        let day0 = 1_763_856_000.0;
        let mut queue = queue();
        apply(&mut queue, &queued(1), day0 + 1.0);
        apply(&mut queue, &queued(2), day0 + 1.0);
        apply(&mut queue, &queued(3), day0 + 1.0);
        apply(&mut queue, &left("EventAbandoned", 1), day0 + 5.0); // within: out of the denominator
        apply(&mut queue, &left("EventAbandoned", 2), day0 + 60.0); // past it: stays in
        apply(&mut queue, &left("EventDiverted", 3), day0 + 10.0);
        let today = doc(&queue)["today"].clone();
        assert_eq!(today["abandoned"], 2);
        // 1 answered within / (3 entered - 1 short abandon) = 50%.
        assert_eq!(today["serviceLevel"], 50);
        apply(&mut queue, &queued(4), day0 + 86_400.0 + 3.0);
        let next = doc(&queue)["today"].clone();
        assert_eq!(next["entered"], 1);
        assert_eq!(next["serviceLevel"], 0, "one offered, none answered yet");
    }

    #[test]
    fn service_level_rounds_to_one_decimal() {
        let mut out = String::new();
        let today = Today {
            entered: 3,
            answered_within: 2,
            ..Today::default()
        };
        write_service_level(&mut out, &today);
        assert_eq!(out, "66.7");
        out.clear();
        write_service_level(&mut out, &Today::default());
        assert_eq!(out, "null");
    }

    #[test]
    fn repeats_and_unknown_calls_change_no_list() {
        let mut queue = queue();
        assert!(apply(&mut queue, &queued(1), 100.0));
        assert!(!apply(&mut queue, &queued(1), 101.0), "already waiting");
        // A divert of a call never seen queued (the gateway started meanwhile) is counted, not listed.
        assert!(apply(&mut queue, &left("EventDiverted", 9), 102.0));
        let doc = doc(&queue);
        assert_eq!(doc["waitingCount"], 1);
        assert_eq!(doc["today"]["diverted"], 1);
        assert_eq!(doc["today"]["answeredWithinServiceLevel"], 0);
    }

    #[test]
    fn stale_waiting_calls_are_dropped_by_arrival() {
        let mut queue = queue();
        apply(&mut queue, &queued(1), 100.0);
        apply(&mut queue, &queued(2), 200.0);
        assert!(queue.drop_stale(150_000_000, 300_000_000));
        assert_eq!(queue.waiting_count(), 1);
        assert!(!queue.drop_stale(150_000_000, 300_000_000));
    }

    #[test]
    fn the_list_is_bounded_and_the_count_is_not() {
        let mut queue = queue();
        for conn in 0..(LISTED as u32 + 5) {
            apply(&mut queue, &queued(conn + 1), 100.0);
        }
        let doc = doc(&queue);
        assert_eq!(doc["waitingCount"], LISTED + 5);
        assert_eq!(doc["waiting"].as_array().map(Vec::len), Some(LISTED));
    }
}
