//! The analytics export (analytics.md, "The export"): `serve --analytics-out` and `callgate export` of
//! the same journal write the same records, byte for byte, through a `kill -9` and a torn line; the
//! file sink resumes with no gap and no duplicate; `--follow`, `--types`, `--from` and `--since`; and
//! `callgate cdr` of an export gives the gateway's CDRs.

mod support;

use serde_json::Value;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::durable::{BASE_URL, TServer, after, an_hour, send_acked_and_settle, wait_for};
use support::{Gateway, temp_dir};

fn callgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_callgate"))
}

fn start(dir: &Path) -> Gateway {
    let journal = dir.join("journal");
    let out = dir.join("analytics.ndjson");
    Gateway::start(&[
        "--base-url",
        BASE_URL,
        "--released-linger",
        "1",
        "--node",
        "test-node",
        "--journal",
        journal.to_str().expect("path"),
        "--analytics-out",
        out.to_str().expect("path"),
        "--types",
        "event,notification,cdr",
    ])
}

/// `callgate export --journal DIR` with `args`: its standard output.
fn export(dir: &Path, args: &[&str]) -> String {
    support::durable::export(&dir.join("journal"), args)
}

/// Every line is a whole JSON object; returns them.
fn records(text: &str) -> Vec<Value> {
    assert!(text.is_empty() || text.ends_with('\n'), "a torn last line");
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect()
}

fn count(records: &[Value], kind: &str) -> usize {
    records.iter().filter(|r| r["type"] == kind).count()
}

/// The `data` member of every CDR record, as written.
fn cdr_data(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| line.contains("\"type\":\"callgate.call.cdr.v1\""))
        .map(|line| {
            let start = line.find(",\"data\":").expect("data") + 8;
            line[start..line.len() - 1].to_owned()
        })
        .collect()
}

#[test]
fn analytics_out_survives_kill_9_and_a_torn_line_and_is_the_export_of_the_journal() {
    let dir = temp_dir("export-kill");
    let out = dir.join("analytics.ndjson");
    let lines = an_hour(31);
    let last = lines.last().expect("events").0;

    let mut first = start(&dir);
    let mut tserver = TServer::connect(&first);
    let split = lines.len() / 2;
    tserver.send(&lines[..split]);
    let acked = tserver.acked_up_to(lines[split - 1].0, Duration::from_secs(60));
    assert_eq!(acked, Some(lines[split - 1].0));
    tserver.send(&lines[split..]);
    std::thread::sleep(Duration::from_millis(20));
    first.child.kill().expect("kill -9");
    first.child.wait().expect("reaped");
    let acked = tserver
        .acked_up_to(u64::MAX, Duration::from_millis(300))
        .expect("acks");
    // A crash in the middle of a write leaves the start of a line: the restart cuts it.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&out)
        .expect("the analytics file exists");
    file.write_all(b"{\"specversion\":\"1.0\",\"id\":\"torn")
        .expect("torn line");
    drop(file);

    let second = start(&dir);
    let mut resend = TServer::connect(&second);
    resend.send(&after(&lines, acked));
    assert_eq!(
        resend.acked_up_to(last, Duration::from_secs(60)),
        Some(last)
    );
    // The last calls' records fall due a second (the linger) after their release, by the ticks.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(second.terminate().success());

    let live = std::fs::read_to_string(&out).expect("analytics file");
    let exported = export(&dir, &[]);
    assert!(live == exported, "the live records differ from the export");
    let parsed = records(&live);
    let ids: HashSet<&str> = parsed
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), parsed.len(), "an id is written twice");
    let positions: Vec<u64> = parsed
        .iter()
        .map(|r| {
            r["position"]
                .as_str()
                .expect("position")
                .parse()
                .expect("digits")
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] <= w[1]),
        "positions go back"
    );
    for record in &parsed {
        assert_eq!(record["specversion"], "1.0");
        assert!(
            record["source"]
                .as_str()
                .expect("source")
                .starts_with("callgate://test-node/")
        );
    }
    // Every event of the hour once (duplicates are journaled: the first run's unacked tail came twice).
    let event_ids: HashSet<&str> = parsed
        .iter()
        .filter(|r| r["type"] == "callgate.tserver.event.v1")
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert_eq!(event_ids.len(), lines.len());
    assert!(count(&parsed, "callgate.call.notification.v1") > lines.len() / 2);
    let cdrs = count(&parsed, "callgate.call.cdr.v1");
    assert!(cdrs > 100, "{cdrs} CDRs for a simulated hour");

    // `callgate cdr` of the export: the gateway's CDRs, then those of calls whose linger had not run
    // out by the end (none here: every call of the hour had ended well before).
    let path = dir.join("export.ndjson");
    std::fs::write(&path, &exported).expect("write");
    let offline = callgate()
        .args(["cdr", "--released-linger", "1"])
        .arg(&path)
        .output()
        .expect("callgate cdr runs");
    assert!(offline.status.success());
    let offline = String::from_utf8(offline.stdout).expect("UTF-8");
    let offline: Vec<&str> = offline.lines().collect();
    assert_eq!(offline, cdr_data(&live));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A journal of a simulated half hour, written by a gateway that is then stopped.
fn journal_of_a_run(name: &str) -> PathBuf {
    let dir = temp_dir(name);
    let lines = an_hour(5);
    let lines = &lines[..lines.len() / 2];
    let gateway = start(&dir);
    send_acked_and_settle(&gateway, lines, Duration::from_millis(1500));
    assert!(gateway.terminate().success());
    dir
}

#[test]
fn the_file_sink_resumes_after_a_cut_anywhere_with_no_gap_and_no_duplicate() {
    let dir = journal_of_a_run("export-resume");
    let whole = export(&dir, &[]);
    let lines: Vec<&str> = whole.lines().collect();
    // A position with several records, cut between two of them; and cuts in the middle of lines.
    let shared = lines
        .windows(2)
        .position(|w| w[0].contains("\"position\"") && position(w[0]) == position(w[1]))
        .expect("an event with a notification");
    let mut cuts = vec![lines[..=shared].iter().map(|l| l.len() + 1).sum::<usize>()];
    cuts.extend([whole.len() / 3, whole.len() / 2 + 17, whole.len() - 5]);
    for cut in cuts {
        let out = dir.join(format!("cut-{cut}.ndjson"));
        std::fs::write(&out, &whole.as_bytes()[..cut]).expect("write");
        let printed = export(&dir, &["--out", out.to_str().expect("path")]);
        assert!(printed.is_empty());
        let resumed = std::fs::read_to_string(&out).expect("read");
        assert!(
            resumed == whole,
            "resumed after a cut at byte {cut}: not the whole export"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn position(line: &str) -> u64 {
    let value: Value = serde_json::from_str(line).expect("JSON");
    value["position"]
        .as_str()
        .expect("position")
        .parse()
        .expect("digits")
}

#[test]
fn types_from_and_since_select_records_of_the_whole_export() {
    let dir = journal_of_a_run("export-select");
    let whole = records(&export(&dir, &[]));
    let cdrs = records(&export(&dir, &["--types", "cdr"]));
    let want: Vec<&Value> = whole
        .iter()
        .filter(|r| r["type"] == "callgate.call.cdr.v1")
        .collect();
    assert_eq!(cdrs.iter().collect::<Vec<_>>(), want);
    assert!(!cdrs.is_empty());

    let middle = position_of(&whole[whole.len() / 2]);
    let from = records(&export(&dir, &["--from", &middle.to_string()]));
    let want: Vec<&Value> = whole.iter().filter(|r| position_of(r) >= middle).collect();
    assert_eq!(from.iter().collect::<Vec<_>>(), want);

    // The events of the second half arrived after the first half's: their recorded times say when.
    let since = whole
        .iter()
        .find(|r| r["type"] == "callgate.tserver.event.v1" && position_of(r) >= middle)
        .and_then(|r| r["recordedtime"].as_str())
        .expect("an event in the second half")
        .to_owned();
    let after_since = records(&export(&dir, &["--types", "event", "--since", &since]));
    assert!(!after_since.is_empty());
    assert!(
        after_since
            .iter()
            .all(|r| r["recordedtime"].as_str() >= Some(since.as_str()))
    );

    let bad = callgate()
        .args(["export", "--journal"])
        .arg(dir.join("journal"))
        .args(["--types", "calls"])
        .output()
        .expect("runs");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown record type"));
    let _ = std::fs::remove_dir_all(&dir);
}

fn position_of(record: &Value) -> u64 {
    record["position"]
        .as_str()
        .expect("position")
        .parse()
        .expect("digits")
}

#[test]
fn export_follow_writes_what_the_gateway_journals_as_it_comes() {
    let dir = temp_dir("export-follow");
    let lines = an_hour(9);
    let (head, tail) = lines.split_at(lines.len() / 4);
    let tail = &tail[..tail.len() / 4];
    let gateway = start(&dir);
    let mut tserver = TServer::connect(&gateway);
    tserver.send(head);
    let last_head = head.last().expect("events").0;
    assert_eq!(
        tserver.acked_up_to(last_head, Duration::from_secs(60)),
        Some(last_head)
    );

    let followed = dir.join("followed.ndjson");
    let mut follower = callgate()
        .args(["export", "--follow", "--journal"])
        .arg(dir.join("journal"))
        .arg("--out")
        .arg(&followed)
        .stderr(Stdio::null())
        .spawn()
        .expect("export --follow starts");
    let last = tail.last().expect("events").0;
    wait_for(
        &followed,
        &format!(":0:{last_head}\""),
        Duration::from_secs(30),
    );
    tserver.send(tail);
    assert_eq!(
        tserver.acked_up_to(last, Duration::from_secs(60)),
        Some(last)
    );
    wait_for(&followed, &format!(":0:{last}\""), Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(gateway.terminate().success());
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("kill")
        .args(["-INT", &follower.id().to_string()])
        .status();
    assert!(follower.wait().expect("follower exits").success());

    let live = std::fs::read_to_string(dir.join("analytics.ndjson")).expect("read");
    let followed = std::fs::read_to_string(&followed).expect("read");
    assert!(
        followed == live,
        "the followed export differs from the live records"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
