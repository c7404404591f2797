//! Black-box tests of `callgate cdr` (analytics.md, "Call detail records"): the real binary over every
//! proto-fixture whose expected records were derived by hand from the spec (`cdr.json`, with the
//! arithmetic in each fixture's README and the reading of the spec in docs/cdr-interpretations.md),
//! compared field by field; and the same bytes on every run.

mod support;

use std::process::{Command, Output};

fn cdr(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_callgate"))
        .arg("cdr")
        .args(args)
        .output()
        .expect("callgate runs")
}

fn records(output: &Output) -> Vec<serde_json::Value> {
    support::json_lines(&String::from_utf8_lossy(&output.stdout))
}

#[test]
fn every_fixture_gives_its_hand_derived_records_field_by_field() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for dir in support::fixture_dirs() {
        let Ok(expected) = std::fs::read_to_string(dir.join("cdr.json")) else {
            continue;
        };
        let expected: Vec<serde_json::Value> =
            serde_json::from_str(&expected).expect("cdr.json is a JSON array");
        let events = dir.join("events.ndjson");
        let output = cdr(&[events.to_str().expect("utf-8 path")]);
        let got = records(&output);
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        if got.len() != expected.len() {
            failures.push(format!(
                "{name}: {} records, expected {}",
                got.len(),
                expected.len()
            ));
            continue;
        }
        for (index, (got, want)) in got.iter().zip(&expected).enumerate() {
            let (Some(got), Some(want)) = (got.as_object(), want.as_object()) else {
                failures.push(format!("{name}: record {index} is not an object"));
                continue;
            };
            let got_keys: Vec<&String> = got.keys().collect();
            let want_keys: Vec<&String> = want.keys().collect();
            if got_keys != want_keys {
                failures.push(format!(
                    "{name}[{index}]: members {got_keys:?}, expected {want_keys:?}"
                ));
            }
            for (key, value) in want {
                if got.get(key) != Some(value) {
                    failures.push(format!(
                        "{name}[{index}].{key}: {}, expected {value}",
                        got.get(key).map(ToString::to_string).unwrap_or_default()
                    ));
                }
            }
        }
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} fixtures have cdr.json");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_same_events_give_the_same_bytes() {
    let events = support::fixture("05-two-step-transfer").join("events.ndjson");
    let path = events.to_str().expect("utf-8 path");
    let first = cdr(&[path]);
    assert_eq!(first.status.code(), Some(0));
    assert!(!first.stdout.is_empty());
    assert_eq!(cdr(&[path]).stdout, first.stdout);
    // Members in the spec's order, as the gateway prints them.
    let text = String::from_utf8_lossy(&first.stdout);
    assert!(
        text.starts_with(r#"{"schemaVersion":1,"cdrId":":0:5001:006f02a7b8c9d501","version":1,"#),
        "{text}"
    );
}

#[test]
fn a_bad_line_is_named_and_the_rest_still_recorded() {
    let dir = support::temp_dir("cdr-bad-line");
    let path = dir.join("events.ndjson");
    let good =
        std::fs::read_to_string(support::fixture("01-inbound-via-queue").join("events.ndjson"))
            .expect("fixture");
    std::fs::write(&path, format!("{{\"event\":\"EventRinging\"}}\n{good}")).expect("write");
    let output = cdr(&[path.to_str().expect("utf-8 path")]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("events.ndjson:1:"), "{stderr}");
    assert!(stderr.contains("1 records"), "{stderr}");
    assert_eq!(records(&output).len(), 1);
}
