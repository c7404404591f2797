//! The CloudEvents 1.0 envelope of every analytics record (analytics.md, "The export"): one JSON object
//! a line, members in one fixed order, `data` last and written as it stands (an event as received, a
//! notification, a CDR), so no record is parsed or re-serialized on its way out.

use crate::cdr::record::{Cdr, write_time};
use crate::event::Micros;
use crate::journal::Position;
use crate::json::{Decimal, write_json_str};
use crate::reduce::Topic;

/// `type` of a T-Server event as received.
pub const EVENT_TYPE: &str = "callgate.tserver.event.v1";
/// `type` of a call notification.
pub const CALL_NOTIFICATION_TYPE: &str = "callgate.call.notification.v1";
/// `type` of a device notification.
pub const DEVICE_NOTIFICATION_TYPE: &str = "callgate.device.notification.v1";
/// `type` of a queue notification.
pub const QUEUE_NOTIFICATION_TYPE: &str = "callgate.queue.notification.v1";
/// `type` of a call detail record.
pub const CDR_TYPE: &str = "callgate.call.cdr.v1";

/// What every record of one gateway shares.
#[derive(Debug, Clone)]
pub struct Origin {
    /// `<node>` in `source`: the gateway's name (`--node`).
    pub node: String,
    /// The stream's epoch: a notification's `id` is `<epoch>:<seq>`.
    pub epoch: String,
}

/// Where a record comes from in the input, shared by the records one event or tick makes.
#[derive(Debug, Clone, Copy)]
pub struct Place {
    /// The journal or stream position of the event or tick (0: none, the gateway runs without one).
    pub position: Position,
    /// The event's EventSequenceNumber (`None`: a tick, or an event without one).
    pub sequence: Option<u64>,
    /// When it happened: the event's own time, else its arrival; a tick's clock.
    pub time: Micros,
}

/// One T-Server event: `id` `<Server>:<run>:<sequence>` (an event without a sequence number:
/// `<Server>:<run>:p<position>`, or `t<arrival µs>` without a position), `subject` its ConnID (else its
/// DN), `recordedtime` its arrival at the gateway, `data` the line as received.
pub struct EventRecord<'a> {
    /// The T-Server's name.
    pub server: &'a str,
    /// Restarts of that T-Server detected so far.
    pub run: u32,
    /// The ConnID in hex, else the DN, else nothing.
    pub subject: Option<&'a str>,
    /// When it reached the gateway.
    pub arrival: Micros,
    /// The line as received (a JSON object).
    pub line: &'a str,
}

/// Writes one event record and its line end.
pub fn write_event(out: &mut String, origin: &Origin, place: Place, event: &EventRecord<'_>) {
    out.push_str("{\"specversion\":\"1.0\",\"id\":\"");
    crate::json::push_json_escaped(out, event.server);
    out.push(':');
    out.push_str(Decimal::new(u64::from(event.run)).as_str());
    out.push(':');
    match (place.sequence, place.position) {
        (Some(sequence), _) => out.push_str(Decimal::new(sequence).as_str()),
        (None, position) if position > 0 => {
            out.push('p');
            out.push_str(Decimal::new(position).as_str());
        }
        (None, _) => {
            out.push('t');
            out.push_str(Decimal::new(event.arrival.max(0) as u64).as_str());
        }
    }
    out.push('"');
    write_source(out, origin, Some(event.server));
    write_head(out, EVENT_TYPE, event.subject, place);
    out.push_str(",\"recordedtime\":");
    write_time(out, Some(event.arrival));
    out.push_str(",\"data\":");
    out.push_str(event.line.trim_ascii());
    out.push_str("}\n");
}

/// One notification (call-resource.md, "Notifications"): `id` `<epoch>:<seq>`, `subject` the call's,
/// device's or queue's id, `data` the notification object.
pub struct NotificationRecord<'a> {
    /// Its `seq` in the stream.
    pub seq: u64,
    /// Whose notification: a call's, a device's or a queue's.
    pub topic: Topic,
    /// The call id, device id or queue id.
    pub subject: &'a str,
    /// The notification's members, as the reducer wrote them (`"channel":...,"data":{...}`).
    pub members: &'a str,
}

/// Writes one notification record and its line end.
pub fn write_notification(
    out: &mut String,
    origin: &Origin,
    place: Place,
    notification: &NotificationRecord<'_>,
) {
    out.push_str("{\"specversion\":\"1.0\",\"id\":\"");
    crate::json::push_json_escaped(out, &origin.epoch);
    out.push(':');
    out.push_str(Decimal::new(notification.seq).as_str());
    out.push('"');
    write_source(out, origin, None);
    let kind = match notification.topic {
        Topic::Calls => CALL_NOTIFICATION_TYPE,
        Topic::Devices => DEVICE_NOTIFICATION_TYPE,
        Topic::Queues => QUEUE_NOTIFICATION_TYPE,
    };
    write_head(out, kind, Some(notification.subject), place);
    out.push_str(",\"data\":{");
    out.push_str(notification.members);
    out.push_str("}}\n");
}

/// Writes one call detail record and its line end: `id` `<cdrId>:<version>`, `subject` the root
/// ConnID, `time` the call's end.
pub fn write_cdr(out: &mut String, origin: &Origin, place: Place, cdr: &Cdr) {
    write_cdr_head(out, origin, place, cdr);
    cdr.write_json(out);
    out.push_str("}\n");
}

/// [`write_cdr`] with the CDR's JSON (`data`) already written by [`Cdr::write_json`].
pub fn write_cdr_with(out: &mut String, origin: &Origin, place: Place, cdr: &Cdr, data: &str) {
    write_cdr_head(out, origin, place, cdr);
    out.push_str(data);
    out.push_str("}\n");
}

/// A CDR record up to its `data`.
fn write_cdr_head(out: &mut String, origin: &Origin, place: Place, cdr: &Cdr) {
    out.push_str("{\"specversion\":\"1.0\",\"id\":\"");
    crate::json::push_json_escaped(out, &cdr.cdr_id);
    out.push(':');
    out.push_str(Decimal::new(u64::from(cdr.version)).as_str());
    out.push('"');
    write_source(out, origin, Some(&cdr.server));
    let mut root = String::with_capacity(16);
    crate::json::push_conn_id(&mut root, cdr.root);
    let place = Place {
        time: cdr.end,
        ..place
    };
    write_head(out, CDR_TYPE, Some(&root), place);
    out.push_str(",\"data\":");
}

/// `"source"`: `callgate://<node>/tserver/<Server>`, or `callgate://<node>/stream` for notifications;
/// the names percent-encoded (a URI reference), which also leaves nothing to escape for JSON.
fn write_source(out: &mut String, origin: &Origin, server: Option<&str>) {
    out.push_str(",\"source\":\"callgate://");
    push_percent_encoded(out, &origin.node);
    match server {
        Some(server) => {
            out.push_str("/tserver/");
            push_percent_encoded(out, server);
        }
        None => out.push_str("/stream"),
    }
    out.push('"');
}

/// `text` with every byte but RFC 3986's unreserved characters percent-encoded.
fn push_percent_encoded(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
}

/// `type`, `subject`, `time`, `datacontenttype`, `sequence` and `position` (the last two only when known).
fn write_head(out: &mut String, kind: &str, subject: Option<&str>, place: Place) {
    out.push_str(",\"type\":\"");
    out.push_str(kind);
    out.push('"');
    if let Some(subject) = subject {
        out.push_str(",\"subject\":");
        write_json_str(out, subject);
    }
    out.push_str(",\"time\":");
    write_time(out, Some(place.time));
    out.push_str(",\"datacontenttype\":\"application/json\"");
    if let Some(sequence) = place.sequence {
        out.push_str(",\"sequence\":\"");
        push_padded(out, sequence);
        out.push('"');
    }
    if place.position > 0 {
        out.push_str(",\"position\":\"");
        push_padded(out, place.position);
        out.push('"');
    }
}

/// `value` in 20 digits, zero-padded (every u64 fits).
fn push_padded(out: &mut String, value: u64) {
    let digits = Decimal::new(value);
    for _ in digits.as_str().len()..20 {
        out.push('0');
    }
    out.push_str(digits.as_str());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            node: "gw1".into(),
            epoch: "e1".into(),
        }
    }

    #[test]
    fn an_event_record_is_the_spec_example() {
        let mut out = String::new();
        let place = Place {
            position: 77,
            sequence: Some(1041),
            time: 1_763_900_000_250_000,
        };
        let event = EventRecord {
            server: "SIPTS750",
            run: 7,
            subject: Some("006f02a7b8c9d001"),
            arrival: 1_763_900_000_260_000,
            line: " {\"Event\":\"EventRinging\"}",
        };
        write_event(&mut out, &origin(), place, &event);
        assert_eq!(
            out,
            concat!(
                r#"{"specversion":"1.0","id":"SIPTS750:7:1041","source":"callgate://gw1/tserver/SIPTS750","#,
                r#""type":"callgate.tserver.event.v1","subject":"006f02a7b8c9d001","time":"2025-11-23T12:13:20.250Z","#,
                r#""datacontenttype":"application/json","sequence":"00000000000000001041","position":"00000000000000000077","#,
                r#""recordedtime":"2025-11-23T12:13:20.260Z","data":{"Event":"EventRinging"}}"#,
                "\n"
            )
        );
        let parsed: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(parsed["data"]["Event"], "EventRinging");
    }

    #[test]
    fn an_event_without_a_number_is_named_by_its_position_or_arrival() {
        let event = EventRecord {
            server: "S",
            run: 0,
            subject: None,
            arrival: 5,
            line: "{}",
        };
        let mut place = Place {
            position: 9,
            sequence: None,
            time: 0,
        };
        let mut out = String::new();
        write_event(&mut out, &origin(), place, &event);
        assert!(out.contains(r#""id":"S:0:p9""#), "{out}");
        assert!(!out.contains("\"sequence\""), "{out}");
        place.position = 0;
        out.clear();
        write_event(&mut out, &origin(), place, &event);
        assert!(out.contains(r#""id":"S:0:t5""#), "{out}");
        assert!(!out.contains("\"position\""), "{out}");
    }

    #[test]
    fn names_in_the_source_are_percent_encoded() {
        let mut out = String::new();
        let origin = Origin {
            node: "gw 1".into(),
            epoch: "e".into(),
        };
        write_source(&mut out, &origin, Some("SIP TS/\"750\"é"));
        assert_eq!(
            out,
            r#","source":"callgate://gw%201/tserver/SIP%20TS%2F%22750%22%C3%A9""#
        );
    }

    #[test]
    fn a_notification_record_is_named_by_epoch_and_seq() {
        let mut out = String::new();
        let place = Place {
            position: 3,
            sequence: None,
            time: 0,
        };
        let note = NotificationRecord {
            seq: 12,
            topic: Topic::Devices,
            subject: "dev\"1",
            members: r#""channel":"/v2/me/devices","data":{}"#,
        };
        write_notification(&mut out, &origin(), place, &note);
        let parsed: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(parsed["id"], "e1:12");
        assert_eq!(parsed["type"], DEVICE_NOTIFICATION_TYPE);
        assert_eq!(parsed["subject"], "dev\"1");
        assert_eq!(parsed["source"], "callgate://gw1/stream");
        assert_eq!(parsed["data"]["channel"], "/v2/me/devices");
    }
}
