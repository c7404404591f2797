//! Every call detail record validates against the JSON Schema shipped in docs/schemas (analytics.md:
//! "a JSON Schema for each record type shipped in docs/ and used by the tests"): the records of every
//! proto-fixture as the `callgate cdr` binary prints them, and those of a simulated hour with agent
//! states, transfers, conferences, abandons and outbound calls.

mod support;

use callgate::cdr::{CdrConfig, CdrFold};
use callgate::event::{Decoded, decode_line};
use callgate::ingest::sim::{SimConfig, Simulator};
use serde_json::Value;
use std::process::Command;

fn validator() -> jsonschema::Validator {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schemas/cdr.v1.schema.json");
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the schema ships"))
            .expect("JSON");
    jsonschema::draft202012::new(&schema).expect("a valid schema")
}

fn errors(validator: &jsonschema::Validator, record: &Value) -> Vec<String> {
    validator
        .iter_errors(record)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect()
}

#[test]
fn every_fixture_record_validates() {
    let validator = validator();
    let mut records = 0;
    for dir in support::fixture_dirs() {
        let output = Command::new(env!("CARGO_BIN_EXE_callgate"))
            .arg("cdr")
            .arg(dir.join("events.ndjson"))
            .output()
            .expect("callgate runs");
        for record in support::json_lines(&String::from_utf8_lossy(&output.stdout)) {
            let problems = errors(&validator, &record);
            assert!(
                problems.is_empty(),
                "{}: {problems:?}\n{record}",
                dir.display()
            );
            records += 1;
        }
    }
    assert!(records >= 20, "only {records} records");
}

#[test]
fn a_simulated_hour_validates() {
    let validator = validator();
    let simulator = Simulator::new(SimConfig {
        seed: 11,
        agents: 20,
        calls_per_second: 0.3,
        duration_secs: Some(3_600.0),
        ..SimConfig::default()
    });
    let mut fold = CdrFold::new(CdrConfig::default());
    let mut records = Vec::new();
    for event in simulator {
        if let Ok(Decoded::Event(event)) = decode_line(event.line.as_bytes()) {
            fold.apply(&event, None, &mut records);
        }
    }
    fold.finish(&mut records);
    assert!(records.len() > 500, "{} records", records.len());
    for record in records {
        let mut text = String::new();
        record.write_json(&mut text);
        let value: Value = serde_json::from_str(&text).expect("JSON");
        let problems = errors(&validator, &value);
        assert!(problems.is_empty(), "{problems:?}\n{text}");
    }
}

#[test]
fn the_schema_refuses_what_the_spec_does_not_allow() {
    // The validator is live: a record missing a member, or with a value outside its set, fails.
    let validator = validator();
    let text = std::fs::read_to_string(support::fixture("01-inbound-via-queue").join("cdr.json"))
        .expect("fixture");
    let records: Vec<Value> = serde_json::from_str(&text).expect("JSON");
    let good = records.first().expect("a record").clone();
    assert!(errors(&validator, &good).is_empty());
    let mut missing = good.clone();
    missing.as_object_mut().expect("object").remove("talkMs");
    assert!(!errors(&validator, &missing).is_empty());
    let mut wrong = good;
    wrong["releasedBy"] = "customer".into();
    assert!(!errors(&validator, &wrong).is_empty());
}
