//! `serve --journal` (analytics.md, docs/journal.md): an acked event survives `kill -9`, and a restart
//! replays the journal to the same calls, the same `epoch` and the same notification stream, `seq` by
//! `seq`, as a gateway that never crashed; the T-Server's resend from its last ack adds nothing twice.

mod support;

use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};
use support::durable::{
    BASE_URL, LINGER, TServer, after, an_hour, calls, reference, same_stream, subscribe,
    survives_kill_9, whole_stream,
};
use support::{Gateway, temp_dir};

fn start(journal: Option<&Path>) -> Gateway {
    let mut args = vec!["--base-url", BASE_URL, "--released-linger", LINGER];
    if let Some(dir) = journal {
        args.extend(["--journal", dir.to_str().expect("path")]);
    }
    Gateway::start(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acked_event_survives_kill_9_and_the_restart_goes_on_with_the_same_stream() {
    let dir = temp_dir("journal-kill");
    survives_kill_9(&an_hour(11), Duration::ZERO, || start(Some(&dir))).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Kill points: `CALLGATE_KILL_POINTS` (default 10) restarts, each `kill -9` at a random moment while
/// events flow; the seed is printed (`CALLGATE_KILL_SEED` repeats a run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_kills_at_random_points_lose_and_double_nothing() {
    let points: usize = std::env::var("CALLGATE_KILL_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("CALLGATE_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("kill points: {points}, CALLGATE_KILL_SEED={seed}");
    let mut random = seed | 1;
    let mut next = move |below: u64| {
        // xorshift64: enough to spread the kill points.
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random % below.max(1)
    };
    let lines = an_hour(23);
    let last = lines.last().expect("events").0;
    let (want, want_calls) = reference(&lines).await;

    let dir = temp_dir("journal-kills");
    let mut acked = 0;
    let mut epoch: Option<String> = None;
    for point in 0..points {
        let mut gateway = start(Some(&dir));
        let (_, subscribed) = subscribe(&gateway, None).await;
        let this_epoch = subscribed["epoch"].as_str().expect("epoch").to_owned();
        assert_eq!(epoch.get_or_insert(this_epoch.clone()), &this_epoch);
        let mut tserver = TServer::connect(&gateway);
        let rest = after(&lines, acked);
        // A random share of the rest (about twice its fair share of the points left), in chunks of
        // random size and pace; the kill comes a random moment after.
        let share = (2 * rest.len() / (points - point)).max(1) as u64;
        let sent = (1 + next(share) as usize).min(rest.len());
        let chunk = (1 + next(200) as usize).min(sent.max(1));
        for part in rest[..sent].chunks(chunk) {
            tserver.send(part);
            tokio::time::sleep(Duration::from_millis(next(5))).await;
        }
        tokio::time::sleep(Duration::from_millis(next(120))).await;
        gateway.child.kill().expect("kill -9");
        gateway.child.wait().expect("reaped");
        if let Some(ack) = tserver.acked_up_to(u64::MAX, Duration::from_millis(200)) {
            assert!(ack >= acked, "acks never go back");
            acked = ack;
        }
        eprintln!("kill point {point}: acked {acked} of {last}");
    }
    let gateway = start(Some(&dir));
    let mut tserver = TServer::connect(&gateway);
    let rest = after(&lines, acked);
    if !rest.is_empty() {
        tserver.send(&rest);
        assert_eq!(
            tserver.acked_up_to(last, Duration::from_secs(60)),
            Some(last)
        );
    }
    let (final_epoch, got) = whole_stream(&gateway).await;
    if let Some(epoch) = &epoch {
        assert_eq!(&final_epoch, epoch);
    }
    same_stream(&got, &want, &format!("CALLGATE_KILL_SEED={seed}"));
    assert_eq!(calls(&gateway), want_calls);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a gateway serves: its calls, devices and queues, where its stream is, and the notifications it
/// resumes with from `window` before its end.
async fn served(
    gateway: &Gateway,
    window: u64,
) -> (Value, Value, Value, u64, Vec<(u64, Value, Value)>) {
    let rest = |path: &str| {
        let (status, body) = gateway.get(path);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str::<Value>(&body).expect("JSON")
    };
    let (_, now) = subscribe(gateway, None).await;
    let epoch = now["epoch"].as_str().expect("epoch").to_owned();
    let last = now["seq"].as_u64().expect("seq");
    let (mut ws, resumed) = subscribe(gateway, Some((&epoch, last - window))).await;
    assert_eq!(resumed["resumed"], true, "{resumed}");
    let tail = support::durable::notifications_until(&mut ws, last).await;
    (
        rest("/api/v2/calls"),
        rest("/api/v2/devices"),
        rest("/api/v2/queues"),
        last,
        tail,
    )
}

/// A restart writes out only the notifications of the journal's tail, and each resource's newest one
/// from its state at the end (docs/journal.md, "Recovery"). With a history of 40 against an hour's
/// thousands of notifications, nearly every resource takes that path: the calls, devices and queues
/// served, and the notifications resumed from the whole history, are those of the gateway before the
/// kill; from before the history, a snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_writing_only_the_tail_serves_what_the_gateway_served_before() {
    let dir = temp_dir("journal-tail");
    let history = 40;
    let start = || {
        let journal = dir.to_str().expect("path");
        let flags = ["--base-url", BASE_URL, "--released-linger", LINGER];
        Gateway::start(&[&flags[..], &["--journal", journal, "--history", "40"]].concat())
    };
    let lines = an_hour(31);
    let last_line = lines.last().expect("events").0;
    let mut first = start();
    let mut tserver = TServer::connect(&first);
    tserver.send(&lines);
    let acked = tserver.acked_up_to(last_line, Duration::from_secs(60));
    assert_eq!(acked, Some(last_line));
    let before = served(&first, history).await;
    assert!(before.3 > 50 * history, "{} notifications", before.3);
    first.child.kill().expect("kill -9");
    first.child.wait().expect("reaped");

    let second = start();
    let after = served(&second, history).await;
    assert_eq!(after.3, before.3, "the same seq");
    assert_eq!(after.4, before.4, "the same last {history} notifications");
    assert_eq!(after.0, before.0, "the same calls");
    assert_eq!(after.1, before.1, "the same devices");
    assert_eq!(after.2, before.2, "the same queues");
    let (_, epoch) = subscribe(&second, None).await;
    let epoch = epoch["epoch"].as_str().expect("epoch").to_owned();
    let (_, older) = subscribe(&second, Some((&epoch, after.3 - history - 5))).await;
    assert_ne!(
        older["resumed"], true,
        "from before the history: a snapshot"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A full disk (here a file-size limit, `prlimit --fsize`) refuses new events with an error that names
/// the journal, keeps the gateway up, and loses nothing acked: restarted with room, the T-Server's resend
/// from its last ack gives the stream of a gateway that never ran short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_new_events_and_loses_nothing_acked() {
    let dir = temp_dir("journal-full");
    let mut limited = std::process::Command::new("prlimit");
    limited.args(["--fsize=200000", "--", env!("CARGO_BIN_EXE_callgate")]);
    let full = Gateway::spawn_command(
        limited,
        &[
            "--base-url",
            BASE_URL,
            "--journal",
            dir.to_str().expect("path"),
        ],
    );
    refuses_when_full(31, &dir, full, "File too large").await;
}

/// `--journal-max-bytes` refuses as a full disk does, and names the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_bound_refuses_new_events_and_loses_nothing_acked() {
    let dir = temp_dir("journal-bound");
    let bounded = Gateway::start(&[
        "--base-url",
        BASE_URL,
        "--journal",
        dir.to_str().expect("path"),
        "--journal-max-bytes",
        "200000",
    ]);
    refuses_when_full(37, &dir, bounded, "--journal-max-bytes is 200000").await;
}

/// Feeds a simulated hour into `full` (a gateway whose journal in `dir` runs out of room): an error
/// line that names the journal and `why`, the gateway up and refusing, and, restarted with room, the
/// T-Server's resend from its last ack gives the stream of a gateway that never ran short.
async fn refuses_when_full(seed: u64, dir: &Path, full: Gateway, why: &str) {
    let lines = an_hour(seed);
    let last = lines.last().expect("events").0;
    let (want, _) = reference(&lines).await;
    let mut tserver = TServer::connect(&full);
    tserver.send(&lines);
    let error = tserver
        .until_error(Duration::from_secs(30))
        .expect("an error line");
    let message = error["error"].as_str().expect("a message");
    assert!(
        message.contains("journal") && message.contains(why),
        "{message}"
    );
    let acked = tserver.last_ack.unwrap_or(0);
    assert!(acked < last, "the limit is reached within the hour");
    // Up, and still refusing what does not fit: the T-Server, reconnected, resends from its last ack.
    assert_eq!(full.get("/healthz").0, 200);
    let mut again = TServer::connect(&full);
    let rest = after(&lines, acked);
    again.send(&rest);
    let refused = again.until_error(Duration::from_secs(10));
    assert!(refused.is_some(), "last ack {:?}", again.last_ack);
    let acked = again.last_ack.unwrap_or(0).max(acked);
    assert!(full.metric("callgate_journal_refused_total").unwrap_or(0.0) > 0.0);
    drop(full);

    let roomy = start(Some(dir));
    let mut resend = TServer::connect(&roomy);
    let rest = after(&lines, acked);
    resend.send(&rest);
    assert_eq!(
        resend.acked_up_to(last, Duration::from_secs(60)),
        Some(last)
    );
    let (_, got) = whole_stream(&roomy).await;
    same_stream(&got, &want, "");
    let _ = std::fs::remove_dir_all(dir);
}

/// A torn last entry (a crash in the middle of a write) is cut at the restart, which then holds every
/// event acked before; a graceful stop with a journal exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_entry_is_cut_and_everything_acked_is_back() {
    let lines = an_hour(41);
    let last = lines.last().expect("events").0;
    let dir = temp_dir("journal-torn");
    let first = start(Some(&dir));
    let mut tserver = TServer::connect(&first);
    tserver.send(&lines);
    assert_eq!(
        tserver.acked_up_to(last, Duration::from_secs(60)),
        Some(last)
    );
    let (epoch, before) = whole_stream(&first).await;
    let before_calls = calls(&first);
    assert!(first.terminate().success(), "a graceful stop exits 0");

    let segments: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .expect("journal folder")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "log"))
        .collect();
    let last_segment = segments.iter().max().expect("a segment");
    let length = std::fs::metadata(last_segment).expect("segment").len();
    // A header that announces 300 bytes, and only 40 of them.
    let mut torn = std::fs::OpenOptions::new()
        .append(true)
        .open(last_segment)
        .expect("segment");
    torn.write_all(&300u32.to_le_bytes()).expect("torn");
    torn.write_all(&[0x5a; 44]).expect("torn");
    drop(torn);

    let second = start(Some(&dir));
    // Cut back to the last whole entry (the running gateway may have appended ticks since): every entry
    // reads, and the torn header is gone.
    let bytes = std::fs::read(last_segment).expect("segment");
    assert_ne!(
        bytes.get(length as usize..length as usize + 4),
        Some(&300u32.to_le_bytes()[..]),
        "the torn entry is cut"
    );
    let mut reader = callgate::journal::Reader::open(&dir, 1).expect("reader");
    while reader.advance().expect("every entry reads").is_some() {}
    let (epoch_after, after) = whole_stream(&second).await;
    assert_eq!(epoch_after, epoch);
    assert_eq!(after, before);
    assert_eq!(calls(&second), before_calls);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `serve --demo --journal`: restarted, the demo resumes the same simulated day (what the journal holds
/// comes again as duplicates), the stream goes on, and the stop is prompt. No event is an orphan (the
/// simulator's queue abandons are their queues'): a resume that took the journal's calls for another
/// run's would make some.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_resumes_its_simulated_day_after_a_restart() {
    let dir = temp_dir("journal-demo");
    let flags = ["--demo", "--journal", dir.to_str().expect("path")];
    let first = Gateway::start(&flags);
    let deadline = Instant::now() + Duration::from_secs(20);
    while first.metric("callgate_seq").unwrap_or(0.0) < 20.0 {
        assert!(Instant::now() < deadline, "the demo makes notifications");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seq_before = first.metric("callgate_seq").unwrap_or(0.0);
    let stopping = Instant::now();
    assert!(first.terminate().success());
    // The journal's sync thread ends with the pipeline (it once held the stop for its 10 s grace).
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "stopped in {:?}",
        stopping.elapsed()
    );
    let second = Gateway::start(&flags);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        second
            .metric(r#"callgate_events_total{outcome="duplicate"}"#)
            .unwrap_or(0.0)
            > 0.0,
        "what the journal holds comes again and is skipped"
    );
    assert!(second.metric("callgate_seq").unwrap_or(0.0) >= seq_before);
    let orphans = second
        .metric(r#"callgate_events_total{outcome="orphan"}"#)
        .unwrap_or(0.0);
    assert_eq!(orphans, 0.0, "no orphan after the resume");
    assert!(
        second
            .metric(r#"callgate_events_total{outcome="applied"}"#)
            .unwrap_or(0.0)
            > 0.0
    );
    assert!(second.metric("callgate_live_calls").unwrap_or(0.0) > 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Lines of calls for the retention test, numbered from `*seq` on.
fn call_lines(seq: &mut u64, events: &[(&str, &str, &str)]) -> Vec<(u64, String)> {
    events
        .iter()
        .map(|(event, conn, dn)| {
            *seq += 1;
            let line = format!(
                r#"{{"event":"{event}","EventSequenceNumber":{seq},"TimeinSecs":{},"ConnID":"{conn}","ThisDN":"{dn}","OtherDN":"+14155550100"}}"#,
                1_763_900_000 + *seq
            );
            (*seq, line)
        })
        .collect()
}

/// `count` short calls (ringing, established, released), each at its own DN.
fn short_calls(seq: &mut u64, first: usize, count: usize) -> Vec<(u64, String)> {
    let mut lines = Vec::new();
    for i in first..first + count {
        let (conn, dn) = (format!("{:x}", 0x1000 + i), format!("{}", 7100 + i));
        for event in ["EventRinging", "EventEstablished", "EventReleased"] {
            lines.extend(call_lines(seq, &[(event, &conn, &dn)]));
        }
    }
    lines
}

fn segment_firsts(dir: &Path) -> Vec<u64> {
    let mut firsts: Vec<u64> = std::fs::read_dir(dir)
        .expect("journal")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("events-")?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .collect();
    firsts.sort_unstable();
    firsts
}

/// The first line in the journal in `dir` that contains `text`.
fn first_line_of(dir: &Path, text: &str) -> Option<String> {
    let mut reader = callgate::journal::Reader::open(dir, 0).expect("journal");
    while reader.advance().expect("entry").is_some() {
        if let callgate::journal::Record::Event { line, .. } = reader.record() {
            let line = String::from_utf8_lossy(line);
            if line.contains(text) {
                return Some(line.into_owned());
            }
        }
    }
    None
}

fn live_calls(gateway: &Gateway) -> Vec<Value> {
    let mut live: Vec<Value> = calls(gateway)["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .filter(|call| call["state"] != "Released")
        .cloned()
        .collect();
    live.sort_by_key(|call| call["id"].as_str().unwrap_or_default().to_owned());
    live
}

/// Retention (analytics.md): with 4 KiB segments and a retention of 1 s, the old segments stay while a
/// live call began in them, and go once it ends; a restart after that replays what is left, has the
/// same live calls, and begins a new epoch (a replay from a later position cannot promise the old `seq`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_segments_go_only_when_no_live_call_needs_them() {
    let dir = temp_dir("journal-retention");
    let journal = dir.to_str().expect("path").to_owned();
    let flags = [
        "--base-url",
        BASE_URL,
        "--journal",
        &journal,
        "--journal-segment-bytes",
        "4096",
        "--journal-retention",
        "1",
    ];
    let gateway = Gateway::start(&flags);
    let mut seq = 0;
    let mut tserver = TServer::connect(&gateway);
    // In acked chunks of ~4 KiB: a batch (one socket read) is never split across segments.
    let send = |tserver: &mut TServer, lines: Vec<(u64, String)>| {
        for chunk in lines.chunks(30) {
            let last = chunk.last().expect("lines").0;
            tserver.send(chunk);
            assert_eq!(
                tserver.acked_up_to(last, Duration::from_secs(30)),
                Some(last)
            );
        }
    };
    // A call that stays live, then enough short calls for a dozen segments.
    let live = [
        ("EventRinging", "aaa", "7001"),
        ("EventEstablished", "aaa", "7001"),
    ];
    send(&mut tserver, call_lines(&mut seq, &live));
    send(&mut tserver, short_calls(&mut seq, 0, 150));
    assert!(segment_firsts(&dir).len() > 5, "{:?}", segment_firsts(&dir));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    send(&mut tserver, short_calls(&mut seq, 150, 10));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        segment_firsts(&dir).first(),
        Some(&1),
        "the live call began in the first segment: nothing goes"
    );

    // The call ends; a new one begins; past the retention the old segments go, not the new call's.
    send(
        &mut tserver,
        call_lines(&mut seq, &[("EventReleased", "aaa", "7001")]),
    );
    let begun = seq + 1;
    let second = [
        ("EventRinging", "bbb", "7002"),
        ("EventEstablished", "bbb", "7002"),
    ];
    send(&mut tserver, call_lines(&mut seq, &second));
    send(&mut tserver, short_calls(&mut seq, 160, 60));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    send(&mut tserver, short_calls(&mut seq, 220, 5));
    let deadline = Instant::now() + Duration::from_secs(10);
    while segment_firsts(&dir).first() == Some(&1) {
        assert!(
            Instant::now() < deadline,
            "old segments go once no live call needs them"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let firsts = segment_firsts(&dir);
    assert!(firsts[0] > 1, "{firsts:?}");
    assert_eq!(
        first_line_of(&dir, r#""ConnID":"bbb""#).as_deref(),
        Some(call_lines(&mut (begun - 1), &second[..1])[0].1.as_str()),
        "the segment where the live call began is kept: {firsts:?}"
    );
    assert!(
        gateway
            .metric("callgate_journal_segments_deleted_total")
            .unwrap_or(0.0)
            > 0.0
    );
    let (_, subscribed) = subscribe(&gateway, None).await;
    let epoch = subscribed["epoch"].as_str().expect("epoch").to_owned();
    let live_before = live_calls(&gateway);
    assert_eq!(live_before.len(), 1, "{live_before:?}");
    drop(tserver);
    assert!(gateway.terminate().success());

    let restarted = Gateway::start(&flags);
    assert_eq!(live_calls(&restarted), live_before);
    let (_, subscribed) = subscribe(&restarted, None).await;
    assert_ne!(
        subscribed["epoch"].as_str().expect("epoch"),
        epoch,
        "a replay from a later position begins a new epoch"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
