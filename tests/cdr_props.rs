//! Property tests of the call-detail-record fold (analytics.md): on any stream it never panics and its
//! bytes are a pure function of the input; every record's totals follow from its own timeline; each call
//! gets exactly one version 1; and on the simulator's traffic every call started is one record, with the
//! simulator's own counts of abandons and call types.

mod support;

use callgate::cdr::{CdrConfig, CdrFold};
use callgate::event::{Decoded, decode_line};
use callgate::ingest::sim::{SimConfig, Simulator};
use proptest::prelude::*;
use serde_json::Value;
use std::collections::HashMap;
use support::arb::arb_stream;

/// The records of `lines`, folded to the end, as printed lines.
fn fold(lines: &[String]) -> Vec<String> {
    let mut fold = CdrFold::new(CdrConfig::default());
    let mut records = Vec::new();
    for line in lines {
        if let Ok(Decoded::Event(event)) = decode_line(line.as_bytes()) {
            fold.apply(&event, None, &mut records);
        }
    }
    fold.finish(&mut records);
    records
        .iter()
        .map(|record| {
            let mut text = String::new();
            record.write_json(&mut text);
            text
        })
        .collect()
}

fn millis(record: &Value, key: &str) -> i64 {
    record[key]
        .as_i64()
        .unwrap_or_else(|| panic!("{key} in {record}"))
}

fn sum(items: &Value, key: &str) -> i64 {
    items
        .as_array()
        .map(|items| items.iter().filter_map(|item| item[key].as_i64()).sum())
        .unwrap_or(0)
}

/// The totals every record must agree with, whatever the events were.
fn check_record(record: &Value) -> Result<(), TestCaseError> {
    let segments = &record["segments"];
    let of_kind = |kind: &str| -> Vec<i64> {
        segments
            .as_array()
            .map(|all| {
                all.iter()
                    .filter(|segment| segment["type"] == kind)
                    .map(|segment| {
                        let time = |key: &str| {
                            segment[key]
                                .as_str()
                                .and_then(|text| {
                                    time::OffsetDateTime::parse(
                                        text,
                                        &time::format_description::well_known::Rfc3339,
                                    )
                                    .ok()
                                })
                                .map(|at| (at.unix_timestamp_nanos() / 1_000_000) as i64)
                                .unwrap_or(0)
                        };
                        time("end") - time("start")
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    for kind in ["queue", "alert", "dialing", "interact", "hold", "wrapup"] {
        prop_assert!(
            of_kind(kind).iter().all(|&ms| ms >= 0),
            "{kind} ends before it starts: {record}"
        );
    }
    prop_assert_eq!(
        millis(record, "talkMs"),
        of_kind("interact").iter().sum::<i64>()
    );
    prop_assert_eq!(
        millis(record, "holdMs"),
        of_kind("hold").iter().sum::<i64>()
    );
    prop_assert_eq!(
        millis(record, "longestHoldMs"),
        of_kind("hold").into_iter().max().unwrap_or(0)
    );
    prop_assert_eq!(millis(record, "talkMs"), sum(&record["agents"], "talkMs"));
    prop_assert_eq!(millis(record, "holdMs"), sum(&record["agents"], "holdMs"));
    prop_assert_eq!(
        millis(record, "queueWaitMs"),
        sum(&record["queues"], "waitMs")
    );
    prop_assert!(millis(record, "durationMs") >= 0);
    if let Some(answer) = record["timeToAnswerMs"].as_i64() {
        prop_assert!(
            (0..=millis(record, "durationMs")).contains(&answer),
            "{record}"
        );
    }
    let alerted = record["agents"]
        .as_array()
        .map(|agents| {
            agents
                .iter()
                .filter(|a| !a["firstAlertTime"].is_null())
                .count()
        })
        .unwrap_or(0);
    prop_assert_eq!(record["alerts"].as_u64(), Some(alerted as u64));
    prop_assert_eq!(
        record["transferred"].as_bool(),
        Some(millis(record, "transferCount") > 0)
    );
    prop_assert_eq!(
        record["abandoned"].as_bool(),
        Some(!record["abandonTime"].is_null())
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: support::cases(300), ..ProptestConfig::default() })]

    #[test]
    fn any_stream_gives_consistent_records_once_each_and_the_same_bytes(lines in arb_stream(60)) {
        let records = fold(&lines);
        prop_assert_eq!(&fold(&lines), &records, "not a pure function of the input");
        // Each call: version 1 once, then (a wrap-up ending after it) one higher each time.
        let mut versions: HashMap<String, u64> = HashMap::new();
        for line in &records {
            let record: Value = serde_json::from_str(line).expect("a record is JSON");
            check_record(&record)?;
            let id = record["cdrId"].as_str().unwrap_or_default().to_owned();
            let last = versions.entry(id).or_default();
            prop_assert_eq!(record["version"].as_u64(), Some(*last + 1), "{}", line);
            *last += 1;
        }
    }
}

#[test]
fn every_simulated_call_is_one_record_with_the_simulators_counts() {
    let config = SimConfig {
        seed: 7,
        agents: 12,
        calls_per_second: 0.25,
        duration_secs: Some(1_800.0),
        ..SimConfig::default()
    };
    let mut simulator = Simulator::new(config);
    let lines: Vec<String> = simulator.by_ref().map(|event| event.line).collect();
    let stats = simulator.stats();
    // The newest version of each call's record (a wrap-up that ends after version 1 makes a version 2).
    let mut newest: Vec<Value> = Vec::new();
    for line in fold(&lines) {
        let record: Value = serde_json::from_str(&line).expect("JSON");
        check_record(&record).unwrap_or_else(|error| panic!("{error}"));
        match newest
            .iter_mut()
            .find(|known| known["cdrId"] == record["cdrId"])
        {
            Some(known) => *known = record,
            None => newest.push(record),
        }
    }
    let records = newest;
    let count = |key: &str, value: &str| records.iter().filter(|r| r[key] == value).count() as u64;
    assert_eq!(
        records.len() as u64,
        stats.calls - stats.internal_skipped,
        "one record per call placed"
    );
    assert_eq!(count("direction", "inbound"), stats.inbound);
    assert_eq!(count("direction", "outbound"), stats.outbound);
    assert_eq!(
        count("direction", "internal"),
        stats.internal - stats.internal_skipped
    );
    assert_eq!(
        count("abandonPhase", "queue"),
        stats.abandoned_in_queue,
        "abandoned in the queue"
    );
    assert_eq!(count("abandonPhase", "ringing"), stats.abandoned_ringing);
}
