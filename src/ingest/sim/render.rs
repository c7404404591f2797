//! An event copy written as its JSON line, numbered in the order the lines go out.

use super::tlib_event::Ev;
use super::{SimEvent, Simulator};
use crate::event::Micros;
use std::fmt::Write as _;

impl Simulator {
    /// The line of `ev` at `time`, numbered with the next EventSequenceNumber.
    pub(super) fn render(&mut self, time: Micros, ev: &Ev) -> SimEvent {
        self.sequence += 1;
        let line = &mut self.line;
        line.clear();
        write_identity(line, ev, self.sequence, time, self.server.as_deref());
        write_attributes(line, ev);
        line.push('}');
        SimEvent {
            time,
            line: line.clone(),
        }
    }
}

/// The attributes every event has: its name, number, time, server and call, and the DN it is for.
fn write_identity(line: &mut String, ev: &Ev, sequence: u64, time: Micros, server: Option<&str>) {
    let _ = write!(
        line,
        r#"{{"event":"{}","EventSequenceNumber":{},"TimeinSecs":{},"TimeinuSecs":{}"#,
        ev.kind,
        sequence,
        time.div_euclid(1_000_000),
        time.rem_euclid(1_000_000)
    );
    if let Some(server) = server {
        let _ = write!(line, r#","Server":{server}"#);
    }
    let _ = write!(
        line,
        r#","ConnID":"{:016x}","CallUUID":"{}","CallType":"{}","ThisDN":"{}""#,
        ev.conn, ev.uuid, ev.call_type, ev.this_dn
    );
}

/// The attributes the script set on `ev`, in a fixed order.
fn write_attributes(line: &mut String, ev: &Ev) {
    let mut text = |key: &str, value: Option<&str>| {
        if let Some(value) = value {
            let _ = write!(line, r#","{key}":"{value}""#);
        }
    };
    text("ThisDNRole", ev.this_role);
    text("OtherDN", ev.other.as_deref());
    text("OtherDNRole", ev.other_role);
    text("ThirdPartyDN", ev.third.as_deref());
    text("ThirdPartyDNRole", ev.third_role);
    text("ANI", ev.ani.as_deref());
    text("DNIS", ev.dnis.as_deref());
    text("ThisQueue", ev.queue.as_deref());
    if let Some(previous) = ev.previous_conn {
        let _ = write!(line, r#","PreviousConnID":"{previous:016x}""#);
    }
    if let Some(transfer) = ev.transfer_conn {
        let _ = write!(line, r#","TransferConnID":"{transfer:016x}""#);
    }
    if let Some(state) = ev.call_state {
        let _ = write!(line, r#","CallState":{state}"#);
    }
    if let Some(user_data) = &ev.user_data {
        let _ = write!(line, r#","UserData":{user_data}"#);
    }
    if let Some(extensions) = ev.extensions {
        let _ = write!(line, r#","Extensions":{extensions}"#);
    }
}
