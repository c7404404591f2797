//! Folds every scenario in `proto-fixtures/` and compares with its hand-checked expected output:
//! final resources, the notification stream, the summary counts and the rejected lines.

mod support;

use callgate::cli::fold::{FoldOptions, fold};
use callgate::reduce::{DEFAULT_BASE_URL, DEFAULT_MAX_CALLS};
use serde_json::Value;
use std::path::Path;
use support::fixture_dirs;

struct Run {
    stdout: String,
    stderr: String,
}

fn run_fold(events: &Path, updates: bool) -> Run {
    let options = FoldOptions {
        base_url: DEFAULT_BASE_URL.to_owned(),
        updates,
        inputs: vec![events.to_path_buf()],
        max_calls: DEFAULT_MAX_CALLS,
        service_level_secs: 20,
    };
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    fold(&options, &mut std::io::empty(), &mut stdout, &mut stderr).expect("fold runs");
    Run {
        stdout: String::from_utf8(stdout).expect("UTF-8 output"),
        stderr: String::from_utf8(stderr).expect("UTF-8 errors"),
    }
}

fn json_lines(text: &str, what: &str) -> Vec<Value> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).unwrap_or_else(|err| panic!("{what} line {}: {err}", i + 1))
        })
        .collect()
}

/// Paths where two JSON values differ, for a readable failure.
fn differences(path: &str, got: &Value, want: &Value, out: &mut Vec<String>) {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            for key in g.keys().chain(w.keys().filter(|k| !g.contains_key(*k))) {
                match (g.get(key), w.get(key)) {
                    (Some(gv), Some(wv)) => differences(&format!("{path}.{key}"), gv, wv, out),
                    (Some(gv), None) => out.push(format!("{path}.{key}: unexpected {gv}")),
                    (None, Some(wv)) => out.push(format!("{path}.{key}: missing, want {wv}")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(g), Value::Array(w)) if g.len() == w.len() => {
            for (i, (gv, wv)) in g.iter().zip(w).enumerate() {
                differences(&format!("{path}[{i}]"), gv, wv, out);
            }
        }
        _ if got != want => out.push(format!("{path}: got {got}, want {want}")),
        _ => {}
    }
}

fn compare(fixture: &Path, file: &str, got: &str, failures: &mut Vec<String>) {
    let name = fixture
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let expected_text = std::fs::read_to_string(fixture.join(file)).unwrap_or_default();
    let want = json_lines(&expected_text, &format!("{name}/{file}"));
    let got = json_lines(got, &format!("{name} output"));
    if got.len() != want.len() {
        failures.push(format!(
            "{name}/{file}: {} lines, want {}",
            got.len(),
            want.len()
        ));
    }
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let mut diffs = Vec::new();
        differences("", g, w, &mut diffs);
        for diff in diffs {
            failures.push(format!("{name}/{file} line {}: {diff}", i + 1));
        }
    }
}

#[test]
fn every_fixture_folds_to_its_expected_output() {
    let dirs = fixture_dirs();
    assert!(
        dirs.len() >= 14,
        "expected at least 14 fixtures, found {}",
        dirs.len()
    );
    let mut failures = Vec::new();
    for dir in &dirs {
        let events = dir.join("events.ndjson");
        let resources = run_fold(&events, false);
        compare(dir, "resources.ndjson", &resources.stdout, &mut failures);
        let updates = run_fold(&events, true);
        compare(dir, "updates.ndjson", &updates.stdout, &mut failures);

        let summary_line = updates.stderr.lines().last().unwrap_or_default().to_owned();
        if let Ok(text) = std::fs::read_to_string(dir.join("summary.json")) {
            let want: Value = serde_json::from_str(&text).expect("summary.json parses");
            let got = format!(
                "callgate fold: {} read, {} applied, {} duplicates, {} orphans, {} ignored, {} rejected",
                want["read"],
                want["applied"],
                want["duplicates"],
                want["orphans"],
                want["ignored"],
                want["rejected"]
            );
            if got != summary_line {
                failures.push(format!(
                    "{}: summary {summary_line:?}, want {got:?}",
                    dir.display()
                ));
            }
        }
        let rejected: Vec<String> = updates
            .stderr
            .lines()
            .filter(|l| !l.starts_with("callgate fold:"))
            .map(|l| l.split(':').nth(1).unwrap_or_default().to_owned())
            .collect();
        let want_rejected: Vec<String> = std::fs::read_to_string(dir.join("rejects.txt"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect();
        if rejected != want_rejected {
            failures.push(format!(
                "{}: rejected lines {rejected:?}, want {want_rejected:?}\n{}",
                dir.display(),
                updates.stderr
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn folding_is_byte_for_byte_deterministic() {
    for dir in fixture_dirs() {
        let events = dir.join("events.ndjson");
        let first = run_fold(&events, true);
        let second = run_fold(&events, true);
        assert_eq!(first.stdout, second.stdout, "{}", dir.display());
        let last_call_of_each: Vec<Value> = json_lines(&first.stdout, "updates");
        let final_resources = json_lines(&run_fold(&events, false).stdout, "resources");
        // Each final resource is the call of the last notification about it.
        for resource in &final_resources {
            let last = last_call_of_each
                .iter()
                .rev()
                .find(|n| {
                    n["data"]["call"]["id"] == resource["id"]
                        && n["data"]["call"]["deviceUri"] == resource["deviceUri"]
                })
                .map(|n| &n["data"]["call"]);
            assert_eq!(last, Some(resource), "{}", dir.display());
        }
    }
}
