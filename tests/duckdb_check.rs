//! The export reads as it is in DuckDB (docs/analytics/duckdb_check.py, the check a user would run):
//! on the export of a real gateway's journal the script's counts (calls, answered, abandoned,
//! transferred, and per queue offered, answered, abandoned and service level) are those computed here
//! from the export's CDR records; and on a hand-made export its definitions hold at their edges (the
//! highest version of a call, a repeated record, exactly 20 s, a second entry into a queue, an answer
//! before the queue).
//!
//! Needs python3 with the duckdb package (scripts/test-all.sh installs it); without them the tests
//! fail, saying so.

mod export_run;
mod support;

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use support::durable::an_hour;
use support::temp_dir;

const EVENT: &str = "callgate.tserver.event.v1";
const CDR: &str = "callgate.call.cdr.v1";
/// The service level's threshold: answered at most this long after entering the queue.
const SERVICE_LEVEL_MS: i64 = 20_000;
/// How a missing duckdb is installed (as scripts/test-all.sh does).
const INSTALL: &str = "python3 -m pip install duckdb==1.5.6";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/analytics/duckdb_check.py")
}

/// Fails the test unless `python3` runs and imports duckdb; its version.
fn require_duckdb() -> String {
    let probe = Command::new("python3")
        .args(["-c", "import duckdb; print(duckdb.__version__)"])
        .output()
        .unwrap_or_else(|err| {
            panic!("python3 cannot be run ({err}): this test needs python3 with duckdb ({INSTALL})")
        });
    assert!(
        probe.status.success(),
        "python3 has no duckdb package: install it with `{INSTALL}`\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    String::from_utf8_lossy(&probe.stdout).trim().to_owned()
}

/// What the script prints for the export at `path`.
fn run_script(path: &Path) -> Value {
    let output = Command::new("python3")
        .arg(script())
        .arg(path)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "duckdb_check.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "duckdb_check.py printed no JSON object ({err}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Milliseconds since the Unix epoch of a record's time (`2025-11-23T12:13:20.250Z`).
fn millis(text: &str) -> i64 {
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|err| panic!("{text}: {err}"));
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).expect("in range")
}

#[derive(Default)]
struct Queue {
    offered: u64,
    answered: u64,
    abandoned: u64,
    in_time: u64,
}

/// The script's counts, computed here from the export's records with serde_json.
fn counts(export: &str) -> Value {
    let mut events = 0;
    let mut last_versions: HashMap<String, Value> = HashMap::new();
    for line in export.lines() {
        let record: Value = serde_json::from_str(line).expect("a JSON record");
        match record["type"].as_str() {
            Some(EVENT) => events += 1,
            Some(CDR) => {
                let data = record["data"].clone();
                let id = data["cdrId"].as_str().expect("cdrId").to_owned();
                let version = data["version"].as_u64().expect("version");
                let newer = last_versions
                    .get(&id)
                    .is_none_or(|kept| kept["version"].as_u64() < Some(version));
                if newer {
                    last_versions.insert(id, data);
                }
            }
            _ => {}
        }
    }
    let calls: Vec<&Value> = last_versions.values().collect();
    let flagged = |member: &str| calls.iter().filter(|c| c[member] == true).count();
    let mut queues: BTreeMap<String, Queue> = BTreeMap::new();
    for call in &calls {
        let answer = call["answerTime"].as_str().map(millis);
        // Each queue once per call, from its first entry.
        let mut entries: BTreeMap<&str, i64> = BTreeMap::new();
        for visit in call["queues"].as_array().expect("queues") {
            let enter = millis(visit["enterTime"].as_str().expect("enterTime"));
            let dn = visit["dn"].as_str().expect("dn");
            entries
                .entry(dn)
                .and_modify(|first| *first = (*first).min(enter))
                .or_insert(enter);
        }
        for (dn, enter) in entries {
            let queue = queues.entry(dn.to_owned()).or_default();
            queue.offered += 1;
            if let Some(answer) = answer.filter(|answer| *answer >= enter) {
                queue.answered += 1;
                queue.in_time += u64::from(answer - enter <= SERVICE_LEVEL_MS);
            }
            queue.abandoned += u64::from(call["abandoned"] == true);
        }
    }
    let queues: serde_json::Map<String, Value> = queues
        .into_iter()
        .map(|(dn, q)| {
            let level = q.in_time as f64 / q.offered as f64;
            let counts = json!({"offered": q.offered, "answered": q.answered,
                "abandoned": q.abandoned, "answeredWithin20s": q.in_time, "serviceLevel": level});
            (dn, counts)
        })
        .collect();
    json!({
        "events": events,
        "calls": calls.len(),
        "answered": calls.iter().filter(|c| !c["answerTime"].is_null()).count(),
        "abandoned": flagged("abandoned"),
        "transferred": flagged("transferred"),
        "queues": queues,
    })
}

/// `got` is `want`: every count equal, each service level within a rounding of the same quotient.
fn assert_same_counts(got: &Value, want: &Value) {
    let levels = |counts: &Value| -> (Value, BTreeMap<String, f64>) {
        let mut counts = counts.clone();
        let mut levels = BTreeMap::new();
        if let Some(queues) = counts["queues"].as_object_mut() {
            for (dn, queue) in queues {
                let level = queue
                    .as_object_mut()
                    .and_then(|queue| queue.remove("serviceLevel"))
                    .and_then(|level| level.as_f64())
                    .unwrap_or_else(|| panic!("queue {dn}: no serviceLevel"));
                levels.insert(dn.clone(), level);
            }
        }
        (counts, levels)
    };
    let (got_counts, got_levels) = levels(got);
    let (want_counts, want_levels) = levels(want);
    assert_eq!(got_counts, want_counts, "DuckDB's counts (left) differ");
    for (dn, want) in want_levels {
        let got = got_levels[&dn];
        assert!(
            (got - want).abs() < 1e-12,
            "queue {dn}: service level {got}, not {want}"
        );
    }
}

#[test]
fn duckdb_counts_the_export_of_a_gateway_as_its_records_say() {
    let version = require_duckdb();
    eprintln!("duckdb {version}");
    let (dir, export) = export_run::export_of_a_run("duckdb-check", &an_hour(23));
    let path = dir.join("export.ndjson");
    std::fs::write(&path, &export).expect("write the export");

    let want = counts(&export);
    eprintln!("{want}");
    // The run has what the counts are about: calls of several versions, abandons, transfers, queues.
    let records = export.matches(r#""type":"callgate.call.cdr.v1""#).count() as u64;
    let calls = want["calls"].as_u64().expect("calls");
    assert!(calls > 100, "{calls} calls");
    assert!(records > calls, "no call has a second version");
    for count in ["answered", "abandoned", "transferred"] {
        assert!(want[count].as_u64() > Some(0), "no call is {count}");
    }
    let queues = want["queues"].as_object().expect("queues");
    assert!(!queues.is_empty(), "no queue");
    assert!(
        queues
            .values()
            .any(|q| q["answeredWithin20s"].as_u64() > Some(0)),
        "no call answered within 20 s"
    );
    assert!(
        queues
            .values()
            .any(|q| q["answeredWithin20s"].as_u64() < q["answered"].as_u64()),
        "no call answered after 20 s"
    );

    assert_same_counts(&run_script(&path), &want);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A CDR record of fixture 01's call, changed by `edit`.
fn cdr_record(edit: impl FnOnce(&mut Value)) -> String {
    let fixture = support::fixture("01-inbound-via-queue").join("cdr.json");
    let records: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(fixture).expect("fixture")).expect("JSON");
    let mut data = records.into_iter().next().expect("a record");
    edit(&mut data);
    let record = json!({
        "specversion": "1.0",
        "id": format!("{}:{}", data["cdrId"].as_str().expect("cdrId"), data["version"]),
        "source": "callgate://gw1/tserver/", "type": CDR, "subject": data["rootConnId"],
        "time": data["endTime"], "datacontenttype": "application/json", "data": data
    });
    record.to_string()
}

/// A call `id` that entered `queues` (dn, entry time) and was answered at `answer`.
fn call(id: &str, queues: &[(&str, &str)], answer: Option<&str>) -> impl FnOnce(&mut Value) {
    let visits: Vec<Value> = queues
        .iter()
        .map(|(dn, enter)| {
            json!({"dn": dn, "enterTime": enter, "exitTime": null, "waitMs": null, "outcome": null})
        })
        .collect();
    let id = format!(":0:{id}:006f02a7b8c9d001");
    let answer = answer.map(str::to_owned);
    move |data: &mut Value| {
        data["cdrId"] = id.into();
        data["queues"] = visits.into();
        data["answerTime"] = answer.into();
    }
}

#[test]
fn the_script_counts_by_its_definitions_at_their_edges() {
    require_duckdb();
    let (t00, t10, t20, t20_001, t25) = (
        "2025-11-23T12:00:00.000Z",
        "2025-11-23T12:00:10.000Z",
        "2025-11-23T12:00:20.000Z",
        "2025-11-23T12:00:20.001Z",
        "2025-11-23T12:00:25.000Z",
    );
    let a_version_2 = || {
        cdr_record(|data| {
            call("1", &[("8001", t00)], Some(t20))(data);
            data["version"] = 2.into();
            data["transferred"] = true.into();
        })
    };
    let lines = [
        r#"{"specversion":"1.0","id":":0:1","source":"callgate://gw1/tserver/","type":"callgate.tserver.event.v1","time":"2025-11-23T12:00:00.000Z","datacontenttype":"application/json","recordedtime":"2025-11-23T12:00:00.000Z","data":{"event":"EventUserEvent"}}"#.to_owned(),
        r#"{"specversion":"1.0","id":":0:2","source":"callgate://gw1/tserver/","type":"callgate.tserver.event.v1","time":"2025-11-23T12:00:00.000Z","datacontenttype":"application/json","recordedtime":"2025-11-23T12:00:00.000Z","data":{"event":"EventDNDOn","ThisDN":"7001"}}"#.to_owned(),
        r#"{"specversion":"1.0","id":"e:1","source":"callgate://gw1/stream","type":"callgate.device.notification.v1","subject":"d","time":"2025-11-23T12:00:00.000Z","datacontenttype":"application/json","data":{"channel":"/v2/me/devices","data":{}}}"#.to_owned(),
        // A: answered exactly 20 s after entering 8001; version 2 says transferred, and comes twice.
        cdr_record(call("1", &[("8001", t00)], Some(t20))),
        a_version_2(),
        a_version_2(),
        // B: answered 20.001 s after entering 8001.
        cdr_record(call("2", &[("8001", t00)], Some(t20_001))),
        // C: abandoned in 8002.
        cdr_record(|data| {
            call("3", &[("8002", t00)], None)(data);
            data["abandoned"] = true.into();
        }),
        // D: entered 8001 twice; answered 25 s after the first entry, 15 s after the second.
        cdr_record(call("4", &[("8001", t00), ("8001", t10)], Some(t25))),
        // E: answered, then transferred through 8002.
        cdr_record(|data| {
            call("5", &[("8002", t20)], Some(t10))(data);
            data["transferred"] = true.into();
        }),
        // F: no queue, never answered.
        cdr_record(call("6", &[], None)),
    ];
    let export = lines.join("\n") + "\n";
    let want = json!({
        "events": 2, "calls": 6, "answered": 4, "abandoned": 1, "transferred": 2,
        "queues": {
            "8001": {"offered": 3, "answered": 3, "abandoned": 0, "answeredWithin20s": 1,
                     "serviceLevel": 1.0 / 3.0},
            "8002": {"offered": 2, "answered": 0, "abandoned": 1, "answeredWithin20s": 0,
                     "serviceLevel": 0.0},
        }
    });
    assert_same_counts(&counts(&export), &want);

    let dir = temp_dir("duckdb-edges");
    let path = dir.join("export.ndjson");
    std::fs::write(&path, &export).expect("write");
    assert_same_counts(&run_script(&path), &want);
    let _ = std::fs::remove_dir_all(&dir);
}
