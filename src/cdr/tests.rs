//! The fold's life-cycle rules: when a record is due, late versions, wrap-up, duplicates and runs,
//! and the bound on calls held. What each record says is checked against the hand-derived fixtures
//! (tests/cdr_cli.rs).

use super::*;
use crate::event::{Decoded, decode_line};

const SECOND: Micros = 1_000_000;

/// Folds `lines` (JSON events) and returns the records that fell due, as JSON values.
fn fold_lines(fold: &mut CdrFold, lines: &[String]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for line in lines {
        let Ok(Decoded::Event(event)) = decode_line(line.as_bytes()) else {
            panic!("not an event: {line}");
        };
        fold.apply(&event, None, &mut out);
    }
    json(out)
}

fn json(records: Vec<Cdr>) -> Vec<serde_json::Value> {
    records
        .into_iter()
        .map(|record| {
            let mut text = String::new();
            record.write_json(&mut text);
            serde_json::from_str(&text).expect("a record is JSON")
        })
        .collect()
}

/// A call answered at 7001 at `at` seconds and released 10 s later, numbered from `sequence`.
fn answered(conn: &str, at: i64, sequence: u64, extra: &str) -> Vec<String> {
    [
        ("EventRinging", at, 0),
        ("EventEstablished", at + 1, 1),
        ("EventReleased", at + 10, 2),
    ]
    .iter()
    .map(|(kind, time, n)| {
        format!(
            r#"{{"event":"{kind}","EventSequenceNumber":{},"TimeinSecs":{time},"ConnID":"{conn}","CallType":"Inbound","ThisDN":"7001","OtherDN":"+14155550100","ANI":"+14155550100"{extra}}}"#,
            sequence + n
        )
    })
    .collect()
}

fn data_changed(conn: &str, at: i64, sequence: u64, data: &str) -> String {
    format!(
        r#"{{"event":"EventAttachedDataChanged","EventSequenceNumber":{sequence},"TimeinSecs":{at},"ConnID":"{conn}","ThisDN":"7001","UserData":{data}}}"#
    )
}

#[test]
fn a_record_is_due_once_the_linger_has_passed_in_event_time() {
    let mut fold = CdrFold::new(CdrConfig::default());
    assert!(fold_lines(&mut fold, &answered("a1", 1_000, 1, "")).is_empty());
    // 29 s after the release: not yet.
    let second = answered("b2", 1_039, 10, "");
    assert!(fold_lines(&mut fold, &second[..1]).is_empty());
    // 31 s after: due, before the event that showed it is applied.
    let records = fold_lines(&mut fold, &answered("c3", 1_041, 20, ""));
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["rootConnId"], "00000000000000a1");
    assert_eq!(records[0]["version"], 1);
    // The live clock alone makes a record due too: c3 ended at 1051; b2 is still ringing.
    let mut out = Vec::new();
    fold.advance(1_080 * SECOND, &mut out);
    assert!(out.is_empty());
    fold.advance(1_081 * SECOND, &mut out);
    let due = json(out);
    assert_eq!(due.len(), 1);
    assert_eq!(due[0]["rootConnId"], "00000000000000c3");
}

#[test]
fn late_attached_data_emits_the_whole_record_again_one_version_higher() {
    let mut fold = CdrFold::new(CdrConfig::default());
    let mut lines = answered("a1", 1_000, 1, r#","UserData":{"DispositionCode":"Open"}"#);
    lines.push(data_changed(
        "a1",
        1_020,
        4,
        r#"{"DispositionCode":"Sale"}"#,
    ));
    assert!(fold_lines(&mut fold, &lines).is_empty(), "still lingering");
    // Any event on the call starts its linger again: due 30 s after the change, not the release.
    let mut out = Vec::new();
    fold.advance(1_049 * SECOND, &mut out);
    assert!(out.is_empty());
    fold.advance(1_050 * SECOND, &mut out);
    let first = json(out);
    assert_eq!(first.len(), 1);
    assert_eq!(
        first[0]["disposition"], "Sale",
        "a change within the linger is in v1"
    );
    let late = fold_lines(
        &mut fold,
        &[data_changed(
            "a1",
            2_000,
            5,
            r#"{"DispositionCode":"Refund"}"#,
        )],
    );
    assert_eq!(late.len(), 1);
    assert_eq!(late[0]["version"], 2);
    assert_eq!(late[0]["cdrId"], first[0]["cdrId"]);
    assert_eq!(late[0]["disposition"], "Refund");
    assert_eq!(
        late[0]["userData"],
        serde_json::json!({"DispositionCode": "Refund"})
    );
    // The same data again changes nothing; past the late window nothing is taken.
    let same = data_changed("a1", 2_001, 6, r#"{"DispositionCode":"Refund"}"#);
    assert!(fold_lines(&mut fold, &[same]).is_empty());
    let too_late = data_changed("a1", 1_010 + 3_601, 7, r#"{"DispositionCode":"Void"}"#);
    assert!(fold_lines(&mut fold, &[too_late]).is_empty());
    assert!(fold.is_empty(), "the call is let go after its late window");
}

#[test]
fn wrap_up_after_the_call_is_measured_and_reissued_when_it_ends_late() {
    let mut fold = CdrFold::new(CdrConfig::default());
    let login = r#"{"event":"EventAgentLogin","TimeinSecs":900,"ThisDN":"7001","AgentID":"ann","AgentWorkMode":"ManualIn"}"#;
    let acw = r#"{"event":"EventAgentNotReady","TimeinSecs":1010,"ThisDN":"7001","AgentWorkMode":"AfterCallWork"}"#;
    let ready = r#"{"event":"EventAgentReady","TimeinSecs":1055,"ThisDN":"7001"}"#;
    let mut lines = vec![login.to_owned()];
    lines.extend(answered("a1", 1_000, 1, ""));
    lines.push(acw.to_owned());
    assert!(fold_lines(&mut fold, &lines).is_empty());
    let mut out = Vec::new();
    fold.advance(1_041 * SECOND, &mut out);
    let first = json(out);
    assert_eq!(first[0]["agents"][0]["agentId"], "ann");
    assert_eq!(
        first[0]["agents"][0]["wrapUpMs"],
        serde_json::Value::Null,
        "still in wrap-up"
    );
    let second = fold_lines(&mut fold, &[ready.to_owned()]);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0]["version"], 2);
    assert_eq!(second[0]["agents"][0]["wrapUpMs"], 45_000);
    let segments = second[0]["segments"].as_array().expect("segments");
    assert_eq!(segments.last().expect("wrap-up")["type"], "wrapup");
}

#[test]
fn duplicates_are_skipped_and_a_restart_starts_a_new_run() {
    let mut fold = CdrFold::new(CdrConfig::default());
    let call = answered("a1", 1_000, 500_000, "");
    let mut lines = call.clone();
    lines.extend(call.clone());
    lines.extend(answered("b2", 1_100, 7, ""));
    let mut records = fold_lines(&mut fold, &lines);
    let mut out = Vec::new();
    fold.finish(&mut out);
    records.extend(json(out));
    let ids: Vec<&str> = records
        .iter()
        .filter_map(|record| record["cdrId"].as_str())
        .collect();
    assert_eq!(ids, [":0:500000:00000000000000a1", ":1:7:00000000000000b2"]);
    assert_eq!(
        records[0]["talkMs"], 9_000,
        "the repeated events are not counted twice"
    );
}

#[test]
fn at_the_bound_the_oldest_ended_call_goes_first_and_live_calls_refuse_new_ones() {
    let mut fold = CdrFold::new(CdrConfig {
        max_calls: 2,
        ..CdrConfig::default()
    });
    let mut lines = answered("a1", 1_000, 1, "");
    lines.extend(answered("b2", 1_001, 10, "")[..2].to_vec());
    // A third call while a1 lingers: a1's record goes out early to make room.
    lines.extend(answered("c3", 1_002, 20, "")[..1].to_vec());
    let records = fold_lines(&mut fold, &lines);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["rootConnId"], "00000000000000a1");
    // b2 and c3 are live: a fourth call is refused.
    let fourth = answered("d4", 1_003, 30, "");
    let Ok(Decoded::Event(event)) = decode_line(fourth[0].as_bytes()) else {
        panic!("event");
    };
    assert_eq!(fold.apply(&event, None, &mut Vec::new()), Taken::Refused);
    assert_eq!(fold.len(), 2);
}

fn event(json: &str) -> String {
    json.to_owned()
}

#[test]
fn a_release_at_the_queue_is_an_abandon_in_the_queue() {
    let mut fold = CdrFold::new(CdrConfig::default());
    let lines = [
        event(
            r#"{"event":"EventQueued","EventSequenceNumber":1,"TimeinSecs":1000,"ConnID":"a1","CallType":"Inbound","ThisDN":"8001","ANI":"+14155550100"}"#,
        ),
        event(
            r#"{"event":"EventReleased","EventSequenceNumber":2,"TimeinSecs":1042,"ConnID":"a1","CallType":"Inbound","ThisDN":"8001"}"#,
        ),
    ];
    assert!(fold_lines(&mut fold, &lines).is_empty());
    let mut out = Vec::new();
    fold.finish(&mut out);
    let records = json(out);
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record["abandoned"], true);
    assert_eq!(record["abandonPhase"], "queue");
    assert_eq!(record["outcome"], "Abandoned");
    assert_eq!(record["releasedBy"], "caller");
    assert_eq!(record["durationMs"], 42_000);
    assert_eq!(record["queues"][0]["outcome"], "released");
    assert_eq!(record["agents"], serde_json::json!([]));
}

#[test]
fn a_live_call_whose_release_was_lost_is_let_go_after_it_falls_silent() {
    let mut fold = CdrFold::new(CdrConfig::default());
    let lines = answered("a1", 1_000, 1, "");
    assert!(fold_lines(&mut fold, &lines[..2]).is_empty());
    let mut out = Vec::new();
    fold.advance(1_001 * SECOND + IDLE_AFTER - 1, &mut out);
    assert!(out.is_empty(), "silent for less than the idle bound");
    fold.advance(1_001 * SECOND + IDLE_AFTER, &mut out);
    let records = json(out);
    assert_eq!(
        records.len(),
        1,
        "let go after {IDLE_AFTER} µs without an event"
    );
    assert_eq!(
        records[0]["agents"][0]["talkMs"], 0,
        "its open leg ends where it was last seen"
    );
    let mut out = Vec::new();
    fold.advance(
        1_001 * SECOND + IDLE_AFTER + CdrConfig::default().late_window,
        &mut out,
    );
    assert!(fold.is_empty());
    assert_eq!(fold.conn_ids_held(), 0);
}

#[test]
fn a_consultation_of_a_call_already_recorded_is_a_call_of_its_own_and_leaks_nothing() {
    let mut fold = CdrFold::new(CdrConfig::default());
    assert!(fold_lines(&mut fold, &answered("a1", 1_000, 1, "")).is_empty());
    let mut out = Vec::new();
    fold.advance(1_040 * SECOND, &mut out);
    assert_eq!(json(out).len(), 1);
    let consult = [
        event(
            r#"{"event":"EventDialing","EventSequenceNumber":10,"TimeinSecs":1050,"ConnID":"b2","TransferConnID":"a1","CallType":"Consult","ThisDN":"7001","OtherDN":"7002"}"#,
        ),
        event(
            r#"{"event":"EventReleased","EventSequenceNumber":11,"TimeinSecs":1055,"ConnID":"b2","TransferConnID":"a1","CallType":"Consult","ThisDN":"7001"}"#,
        ),
    ];
    assert!(fold_lines(&mut fold, &consult).is_empty());
    let mut out = Vec::new();
    fold.finish(&mut out);
    let records = json(out);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["rootConnId"], "00000000000000b2");
    assert_eq!(records[0]["links"], serde_json::json!([]));
    assert!(fold.is_empty());
    assert_eq!(fold.conn_ids_held(), 0);
}

#[test]
fn a_released_leg_is_reopened_by_a_new_ring_but_not_by_a_late_answer() {
    let ring = |n: u64, at: i64| {
        format!(
            r#"{{"event":"EventRinging","EventSequenceNumber":{n},"TimeinSecs":{at},"ConnID":"a1","CallType":"Inbound","ThisDN":"7001"}}"#
        )
    };
    let release = |n: u64, at: i64| {
        format!(
            r#"{{"event":"EventReleased","EventSequenceNumber":{n},"TimeinSecs":{at},"ConnID":"a1","CallType":"Inbound","ThisDN":"7001","CallState":7}}"#
        )
    };
    let answer = |n: u64, at: i64| {
        format!(
            r#"{{"event":"EventEstablished","EventSequenceNumber":{n},"TimeinSecs":{at},"ConnID":"a1","CallType":"Inbound","ThisDN":"7001"}}"#
        )
    };
    // Offered twice to the same agent: one call, rung twice.
    let mut fold = CdrFold::new(CdrConfig::default());
    let lines = [
        ring(1, 1_000),
        release(2, 1_010),
        ring(3, 1_015),
        answer(4, 1_017),
        release(5, 1_030),
    ];
    assert!(fold_lines(&mut fold, &lines).is_empty());
    let mut out = Vec::new();
    fold.finish(&mut out);
    let records = json(out);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["agents"][0]["ringMs"], 12_000);
    assert_eq!(records[0]["talkMs"], 13_000);
    // A stray answer after the release reopens nothing: the call is over.
    let mut fold = CdrFold::new(CdrConfig::default());
    let lines = [ring(1, 1_000), release(2, 1_010), answer(3, 1_011)];
    assert!(fold_lines(&mut fold, &lines).is_empty());
    let mut out = Vec::new();
    fold.finish(&mut out);
    let records = json(out);
    assert_eq!(records.len(), 1, "ended, so recorded");
    assert_eq!(records[0]["outcome"], "NoAnswer");
    assert_eq!(records[0]["talkMs"], 0);
}

#[test]
fn agents_past_the_bound_are_refused() {
    let mut fold = CdrFold::new(CdrConfig::default());
    let mut out = Vec::new();
    let login = |dn: usize| {
        format!(
            r#"{{"event":"EventAgentLogin","TimeinSecs":900,"ThisDN":"{dn}","AgentID":"a{dn}"}}"#
        )
    };
    for dn in 0..MAX_AGENTS {
        let line = login(dn);
        let Ok(Decoded::Event(event)) = decode_line(line.as_bytes()) else {
            panic!("event");
        };
        assert_eq!(fold.apply(&event, None, &mut out), Taken::Applied);
    }
    let line = login(MAX_AGENTS);
    let Ok(Decoded::Event(event)) = decode_line(line.as_bytes()) else {
        panic!("event");
    };
    assert_eq!(fold.apply(&event, None, &mut out), Taken::Refused);
}
