//! Random T-Server events for property tests: valid events over a small universe of DNs and ConnIDs,
//! so that they meet.

use callgate::event::EventKind;
use proptest::prelude::*;
use serde_json::{Value, json};

/// Every event of the table, by name.
pub fn kinds() -> Vec<&'static str> {
    EventKind::all().map(EventKind::name).collect()
}
const DNS: [&str; 4] = ["7001", "7002", "7101", "8001"];
const NUMBERS: [&str; 6] = [
    "7001",
    "7002",
    "7101",
    "+14155550100",
    "+442079460958",
    "5551234",
];
const CONN_IDS: [&str; 3] = ["00a1", "00a2", "00a3"];

fn pick<T: Clone + std::fmt::Debug + 'static>(
    items: &'static [T],
) -> impl Strategy<Value = Option<T>> {
    prop_oneof![Just(None), proptest::sample::select(items).prop_map(Some)]
}

/// One random but valid event of the table, over a small universe of DNs and calls so that events meet.
pub fn arb_event() -> impl Strategy<Value = Value> {
    (
        (proptest::sample::select(kinds()), proptest::sample::select(&DNS[..]), proptest::sample::select(&CONN_IDS[..])),
        (pick(&CONN_IDS), pick(&CONN_IDS), pick(&[0u8, 1, 2, 3, 4][..])),
        (pick(&NUMBERS), pick(&NUMBERS), pick(&["RoleObserver", "RoleDestination", "RoleOrigination"][..])),
        (pick(&["RoleObserver", "RoleAddedBy"][..]), pick(&["start", "pause", "resume", "stop", "x"][..])),
        (pick(&["ON", "PAUSED", "OFF"][..]), pick(&["A", "B"][..]), pick(&["SIP_A"][..])),
        (pick(&[0u8, 1, 2, 3, 4, 6][..]), pick(&[0u8, 1][..]), pick(&["agent-1", "agent-2"][..]), pick(&["Lunch", "Break"][..])),
    )
        .prop_map(
            |((kind, dn, conn), (prev, transfer, call_type), (other, third, this_role), (third_role, record), (gsip, data, server), (mode, monitor, agent, reason))| {
                let mut e = json!({"event": kind, "ThisDN": dn, "ConnID": conn, "CallUUID": format!("UUID-{conn}")});
                let o = e.as_object_mut().expect("object");
                let mut set = |k: &str, v: Option<Value>| {
                    if let Some(v) = v {
                        o.insert(k.to_owned(), v);
                    }
                };
                set("PreviousConnID", prev.map(Value::from));
                set("TransferConnID", transfer.map(Value::from));
                set("CallType", call_type.map(Value::from));
                set("OtherDN", other.map(Value::from));
                set("ThirdPartyDN", third.map(Value::from));
                set("ThisDNRole", this_role.map(Value::from));
                set("ThirdPartyDNRole", third_role.map(Value::from));
                set("Extensions", record.map(|r| json!({"record": r})));
                let mut user_data = serde_json::Map::new();
                if let Some(g) = gsip {
                    user_data.insert("GSIP_RECORD".into(), g.into());
                }
                if let Some(d) = data {
                    user_data.insert("Segment".into(), d.into());
                }
                if gsip.is_some() || data.is_some() {
                    set("UserData", Some(Value::Object(user_data)));
                }
                set("Server", server.map(Value::from));
                set("AgentWorkMode", mode.map(Value::from));
                set("MonitorNextCallType", monitor.map(Value::from));
                set("AgentID", agent.map(Value::from));
                set("Reasons", reason.map(|r| json!({"ReasonCode": r})));
                e
            },
        )
}

/// A list of events with increasing times and (mostly) sequence numbers.
pub fn arb_stream(max: usize) -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(
        (arb_event(), 0u64..5, proptest::bool::weighted(0.9)),
        1..max,
    )
    .prop_map(|events| {
        let mut time = 1_763_900_000u64;
        events
            .into_iter()
            .enumerate()
            .map(|(i, (mut event, step, numbered))| {
                time += step;
                event["TimeinSecs"] = time.into();
                if numbered {
                    event["EventSequenceNumber"] = (1000 + i as u64).into();
                }
                event.to_string()
            })
            .collect()
    })
}
