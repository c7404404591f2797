//! `serve --nats` against a real `nats-server` 2.9 with JetStream (analytics.md "JetStream",
//! docs/jetstream.md): an acked event survives `kill -9` of the gateway (the restart reads the streams
//! back) and of the NATS server (the ingest connection is closed, the T-Server resends, nothing is lost or
//! doubled), and a second gateway writing the same T-Server's stream is refused.

mod support;

use async_nats::jetstream;
use serde_json::Value;
use std::time::{Duration, Instant};
use support::durable::{
    BASE_URL, LINGER, NatsServer, TServer, after, an_hour, calls, reference, same_stream,
    survives_kill_9, whole_stream,
};
use support::{Gateway, temp_dir};

fn start(nats: &NatsServer) -> Gateway {
    start_with(nats, &["--nats-ack-timeout", "2"])
}

/// A gateway writing to `nats`, with `extra` flags.
fn start_with(nats: &NatsServer, extra: &[&str]) -> Gateway {
    let url = nats.url();
    let mut args = vec![
        "--base-url",
        BASE_URL,
        "--released-linger",
        LINGER,
        "--nats",
        &url,
    ];
    args.extend_from_slice(extra);
    Gateway::start(&args)
}

/// The messages in `server`'s event stream.
async fn stored(nats: &NatsServer, server: &str) -> u64 {
    let client = async_nats::connect(nats.url()).await.expect("NATS");
    let context = jetstream::new(client);
    let mut stream = context
        .get_stream(callgate::jetstream::stream_name(server))
        .await
        .expect("the stream exists");
    stream.info().await.expect("info").state.messages
}

fn server_of(lines: &[(u64, String)]) -> String {
    let first: Value = serde_json::from_str(&lines[0].1).expect("JSON");
    // The simulator's events carry no Server: their stream is `CG_EV__`.
    first["Server"].as_str().unwrap_or_default().to_owned()
}

/// `kill -9` of a gateway that has `--nats` (and `--journal` when `journal`), a restart, the T-Server's
/// resend from its last ack: the same stream, calls and epoch as a gateway that never crashed, and each
/// event stored once.
async fn survives_kill_9_with_nats(seed: u64, journal: bool) {
    let lines = an_hour(seed);
    let dir = temp_dir("jetstream-kill");
    let nats = NatsServer::start(&dir);
    let journal_dir = dir.join("journal");
    let start = || {
        if !journal {
            return start(&nats);
        }
        let journal = journal_dir.to_str().expect("path");
        start_with(&nats, &["--journal", journal])
    };
    survives_kill_9(&lines, Duration::from_millis(30), start).await;
    assert_eq!(
        stored(&nats, &server_of(&lines)).await,
        lines.len() as u64,
        "each event stored once"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acked_event_survives_kill_9_and_the_restart_reads_the_stream_back() {
    survives_kill_9_with_nats(41, false).await;
}

/// With the journal as well, the restart replays the journal, and the streams' writers go on from where
/// each stream stands (events stored but not yet journaled come again from the T-Server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_journal_as_well_the_restart_replays_the_journal_and_the_streams_go_on() {
    survives_kill_9_with_nats(53, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_server_killed_and_restarted_loses_and_doubles_nothing() {
    let lines = an_hour(43);
    let last = lines.last().expect("events").0;
    let (want, want_calls) = reference(&lines).await;
    let dir = temp_dir("jetstream-nats-kill");
    let nats = std::sync::Arc::new(std::sync::Mutex::new(NatsServer::start(&dir)));
    let gateway = start(&nats.lock().expect("nats"));

    // The NATS server is killed a moment into the stream and is back 3 s later, past the gateway's
    // 2 s wait for a publish ack (a shorter outage is bridged by the NATS client's reconnect buffer).
    let killer = {
        let nats = std::sync::Arc::clone(&nats);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            nats.lock().expect("nats").kill();
            std::thread::sleep(Duration::from_secs(3));
            nats.lock().expect("nats").restart();
        })
    };
    // A T-Server that resends from its last ack whenever the gateway closes its connection.
    let mut acked = 0;
    let mut connections = 0;
    let mut refusals = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked < last {
        assert!(Instant::now() < deadline, "all acked within 2 minutes");
        connections += 1;
        let mut tserver = TServer::connect(&gateway);
        let rest = after(&lines, acked);
        let mut error = None;
        for part in rest.chunks(40) {
            tserver.send(part);
            std::thread::sleep(Duration::from_millis(10));
            if let Some(reply) = tserver.ack_or_error(u64::MAX, Duration::ZERO) {
                error = Some(reply);
                break;
            }
        }
        let error = error.or_else(|| tserver.ack_or_error(last, Duration::from_secs(10)));
        if let Some(reply) = error {
            refusals.push(reply);
        }
        acked = acked.max(tserver.last_ack.unwrap_or(0));
    }
    killer.join().expect("the NATS server restarted");
    eprintln!("{connections} connections; refusals: {refusals:?}");
    assert!(
        !refusals.is_empty(),
        "the outage closed an ingest connection with an error line"
    );
    assert!(
        refusals.iter().all(|reply| reply["error"]
            .as_str()
            .is_some_and(|e| e.contains("JetStream"))),
        "{refusals:?}"
    );
    let (_, got) = whole_stream(&gateway).await;
    same_stream(&got, &want, "");
    assert_eq!(calls(&gateway), want_calls);
    let nats = std::sync::Arc::try_unwrap(nats)
        .ok()
        .expect("the killer is done")
        .into_inner()
        .expect("nats");
    assert_eq!(
        stored(&nats, &server_of(&lines)).await,
        lines.len() as u64,
        "each event stored once"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_writing_the_same_stream_is_refused() {
    let lines = an_hour(47);
    let last = lines.last().expect("events").0;
    let dir = temp_dir("jetstream-second");
    let nats = NatsServer::start(&dir);
    let (a, b, c) = (lines.len() / 3, lines.len() / 2, lines.len() * 2 / 3);

    let first = start(&nats);
    let mut to_first = TServer::connect(&first);
    to_first.send(&lines[..a]);
    assert_eq!(
        to_first.acked_up_to(lines[a - 1].0, Duration::from_secs(60)),
        Some(lines[a - 1].0)
    );
    // A second gateway reads the stream as it stands, then the first goes on writing it.
    let second = start(&nats);
    to_first.send(&lines[a..b]);
    assert_eq!(
        to_first.acked_up_to(lines[b - 1].0, Duration::from_secs(60)),
        Some(lines[b - 1].0)
    );
    let mut to_second = TServer::connect(&second);
    to_second.send(&lines[b..c]);
    let refusal = to_second
        .until_error(Duration::from_secs(20))
        .expect("the second gateway refuses");
    let message = refusal["error"].as_str().expect("error");
    assert!(message.contains("another gateway"), "{message}");
    assert_eq!(to_second.last_ack, None, "nothing acked by the second");
    assert!(
        second
            .metric("callgate_jetstream_refused_total")
            .unwrap_or(0.0)
            > 0.0
    );
    // The first is not disturbed: it takes the rest, and the stream holds each event once.
    to_first.send(&lines[b..]);
    assert_eq!(
        to_first.acked_up_to(last, Duration::from_secs(60)),
        Some(last)
    );
    assert_eq!(stored(&nats, &server_of(&lines)).await, lines.len() as u64);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A stream the operator made keeps its settings, and the gateway says how they differ from its flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_stream_keeps_its_settings_and_the_difference_is_logged() {
    let dir = temp_dir("jetstream-settings");
    let nats = NatsServer::start(&dir);
    let client = async_nats::connect(nats.url()).await.expect("NATS");
    jetstream::new(client)
        .create_stream(jetstream::stream::Config {
            name: callgate::jetstream::stream_name(""),
            subjects: vec![callgate::jetstream::subject("")],
            max_age: Duration::from_secs(3600),
            ..Default::default()
        })
        .await
        .expect("the operator's stream");
    let url = nats.url();
    let mut gateway = Gateway::spawn(
        &["--base-url", BASE_URL, "--nats", &url],
        &[],
        std::process::Stdio::piped(),
    );
    let stderr = gateway.child.stderr.take().expect("stderr");
    let lines = an_hour(59);
    let mut tserver = TServer::connect(&gateway);
    tserver.send(&lines[..5]);
    assert_eq!(
        tserver.acked_up_to(lines[4].0, Duration::from_secs(20)),
        Some(lines[4].0)
    );
    let warning = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find(|line| line.contains("settings differ"))
    });
    drop(gateway);
    let warning = warning.join().expect("stderr read").expect("a warning");
    assert!(
        warning.contains("max age 3600s (flag 604800s)"),
        "{warning}"
    );
    assert!(warning.contains("discard Old (flag New)"), "{warning}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The messages of `CG_CDR`: (Nats-Msg-Id, Cg-Position, payload).
async fn cdr_messages(nats: &NatsServer) -> Vec<(String, u64, Value)> {
    let client = async_nats::connect(nats.url()).await.expect("NATS");
    let context = jetstream::new(client);
    let mut stream = context
        .get_stream(callgate::jetstream::cdr::STREAM)
        .await
        .expect("CG_CDR exists");
    let last = stream.info().await.expect("info").state.last_sequence;
    let mut messages = Vec::new();
    for sequence in 1..=last {
        let message = stream.get_raw_message(sequence).await.expect("message");
        let header = |name: &str| {
            message
                .headers
                .get(name)
                .map(|value| value.as_str().to_owned())
                .unwrap_or_default()
        };
        let payload: Value = serde_json::from_slice(&message.payload).expect("a CDR");
        let position = header(callgate::jetstream::cdr::POSITION_HEADER)
            .parse()
            .expect("position");
        messages.push((header("Nats-Msg-Id"), position, payload));
    }
    messages
}

/// With `--nats` every CDR goes to `CG_CDR` once, under `<cdrId>:<version>`, as the export of the
/// journal has it; a restart's replay publishes none of them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cdr_is_published_once_to_cg_cdr_and_a_restart_publishes_none_again() {
    let dir = temp_dir("jetstream-cdr");
    let nats = NatsServer::start(&dir);
    let journal = dir.join("journal");
    let journal_arg = journal.to_str().expect("path").to_owned();
    // A duplicate window of a second: the restart below is later, so only the stored position keeps
    // its replay from publishing again.
    let url = nats.url();
    let args = [
        "--base-url",
        BASE_URL,
        "--nats",
        &url,
        "--released-linger",
        "1",
        "--journal",
        &journal_arg,
        "--nats-duplicate-window",
        "1",
    ];
    let lines = an_hour(29);
    let lines = &lines[..lines.len() / 2];
    let gateway = Gateway::start(&args);
    support::durable::send_acked_and_settle(&gateway, lines, Duration::from_millis(2000));
    assert!(gateway.terminate().success());

    let exported = support::durable::export(&journal, &["--types", "cdr"]);
    let want: Vec<(String, Value)> = exported
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).expect("JSON");
            (
                record["id"].as_str().expect("id").to_owned(),
                record["data"].clone(),
            )
        })
        .collect();
    assert!(want.len() > 50, "{} CDRs", want.len());
    let got = cdr_messages(&nats).await;
    let got_pairs: Vec<(String, Value)> = got
        .iter()
        .map(|(id, _, cdr)| (id.clone(), cdr.clone()))
        .collect();
    assert_eq!(got_pairs, want);
    assert!(
        got.windows(2).all(|w| w[0].1 <= w[1].1),
        "positions in order"
    );

    // The PostgreSQL sink as a durable consumer of CG_CDR: one row per call at its highest version; run
    // again, it has nothing left (every message was acked after its COMMIT).
    let pg = support::postgres::PgServer::start(&dir);
    let sink = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
            .args([
                "sink",
                "postgres",
                "--dsn",
                &pg.dsn(),
                "--nats",
                &url,
                "--batch",
                "25",
            ])
            .env("RUST_LOG", "warn")
            .output()
            .expect("sink runs")
    };
    let first = sink();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let client = pg.client().await;
    let rows: std::collections::HashMap<String, Value> = client
        .query("SELECT cdr_id, record::text FROM call_cdr", &[])
        .await
        .expect("rows")
        .iter()
        .map(|row| {
            let record: Value = serde_json::from_str(row.get::<_, &str>(1)).expect("jsonb");
            (row.get::<_, String>(0), record)
        })
        .collect();
    let mut newest: std::collections::HashMap<String, Value> = std::collections::HashMap::new();
    for (_, cdr) in &want {
        newest.insert(
            cdr["cdrId"].as_str().expect("cdrId").to_owned(),
            cdr.clone(),
        );
    }
    assert_eq!(rows, newest);
    let again_sink = sink();
    assert!(again_sink.status.success());
    let summary = String::from_utf8_lossy(&again_sink.stderr);
    assert!(
        summary.contains(" 0 records in 0 transactions"),
        "{summary}"
    );
    drop(pg);

    // A restart replays the journal through the stage: nothing is published twice.
    let again = Gateway::start(&args);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(again.terminate().success());
    assert_eq!(cdr_messages(&nats).await.len(), got.len());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `callgate export --nats URL ARGS...`: its standard output (it must succeed).
fn export_nats(url: &str, args: &[&str]) -> String {
    support::durable::callgate_export(&[&["--nats", url], args].concat())
}

/// The records of an export, each without its `position`, by type.
fn without_positions(text: &str, kind: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("a record"))
        .filter(|record| record["type"].as_str().is_some_and(|t| t.contains(kind)))
        .map(|mut record| {
            record.as_object_mut().expect("object").remove("position");
            record
        })
        .collect()
}

/// `lines` as T-Server `server`'s (the simulator's carry no Server).
fn as_server(lines: &[(u64, String)], server: &str) -> Vec<(u64, String)> {
    lines
        .iter()
        .map(|(sequence, line)| {
            let named = line.replacen('{', &format!("{{\"Server\":\"{server}\","), 1);
            (*sequence, named)
        })
        .collect()
}

/// Sends each part on its own ingest connection, all at once, until each is acked.
fn send_at_once(gateway: &Gateway, parts: &[&[(u64, String)]]) {
    std::thread::scope(|scope| {
        for part in parts {
            scope.spawn(|| {
                support::durable::send_acked_and_settle(gateway, part, Duration::ZERO);
            });
        }
    });
}

/// The export's CDRs are the reference's, in order, but for the last ones (made by ticks the streams do
/// not hold).
fn same_cdrs_but_the_last(got: &str, want: &str) {
    let (got, want) = (
        without_positions(got, "cdr"),
        without_positions(want, "cdr"),
    );
    assert!(got.len() > 20, "{} CDRs", got.len());
    assert!(got.len() <= want.len());
    for (got, want) in got.iter().zip(&want) {
        assert_eq!(got["id"], want["id"]);
        assert_eq!(got["data"], want["data"]);
    }
}

/// `callgate export --nats`, two T-Servers sending at once: the event streams folded as the journal's
/// export folds the journal (the same events and notifications, with the same ids, so the streams
/// merge in the order the pipeline took; and the same CDRs up to the ones the live gateway's ticks made
/// after the last event); `--follow` takes a new T-Server's stream while another keeps sending, and
/// gives what an export after it gives; the file sink resumes after a torn line by the merged positions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_nats_folds_the_streams_as_the_journal_export_resumes_and_follows() {
    let dir = temp_dir("jetstream-export");
    let nats = NatsServer::start(&dir);
    let url = nats.url();
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["export", "--nats", &url])
        .output()
        .expect("callgate export runs");
    assert_eq!(refused.status.code(), Some(2));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("no gateway has written there"), "{said}");

    let journal = dir.join("journal");
    let journal_arg = journal.to_str().expect("path").to_owned();
    let args = [
        "--base-url",
        BASE_URL,
        "--nats",
        &url,
        "--released-linger",
        "1",
        "--journal",
        &journal_arg,
    ];
    let (a, b, c) = (an_hour(31), as_server(&an_hour(32), "TS-B"), an_hour(33));
    let (a_head, a_tail) = a.split_at(a.len() / 3);
    let a_tail = &a_tail[..a_tail.len() / 4];
    let b = &b[..b.len() / 3];
    let c = as_server(&c[..c.len() / 8], "TS-C");
    let gateway = Gateway::start(&args);
    send_at_once(&gateway, &[a_head, b]);
    std::thread::sleep(Duration::from_millis(1500));
    // Past the export's mark (2 s before it lists the streams).
    std::thread::sleep(Duration::from_millis(1000));

    let from_journal = support::durable::export(&journal, &[]);
    let from_nats = export_nats(&url, &[]);
    for kind in ["event", "notification"] {
        let (got, want) = (
            without_positions(&from_nats, kind),
            without_positions(&from_journal, kind),
        );
        assert!(got.len() > 100, "{} {kind} records", got.len());
        assert!(got == want, "the {kind} records differ");
    }
    same_cdrs_but_the_last(&from_nats, &from_journal);

    // Following: a third T-Server's stream appears while the first keeps sending.
    let followed = dir.join("followed.ndjson");
    let mut follower = std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args([
            "export",
            "--follow",
            "--types",
            "event,notification",
            "--nats",
            &url,
        ])
        .arg("--out")
        .arg(&followed)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("export --follow starts");
    let last_b = b.last().expect("events").0;
    support::durable::wait_for(
        &followed,
        &format!("\"TS-B:0:{last_b}\""),
        Duration::from_secs(30),
    );
    send_at_once(&gateway, &[a_tail, &c]);
    let (last_a, last_c) = (
        a_tail.last().expect("events").0,
        c.last().expect("events").0,
    );
    support::durable::wait_for(
        &followed,
        &format!("\":0:{last_a}\""),
        Duration::from_secs(30),
    );
    support::durable::wait_for(
        &followed,
        &format!("\"TS-C:0:{last_c}\""),
        Duration::from_secs(30),
    );
    let _ = std::process::Command::new("kill")
        .args(["-INT", &follower.id().to_string()])
        .status();
    assert!(follower.wait().expect("the follower exits").success());
    assert!(gateway.terminate().success());
    std::thread::sleep(Duration::from_millis(2100));
    let after = export_nats(&url, &["--types", "event,notification"]);
    let followed = std::fs::read_to_string(&followed).expect("read");
    assert!(
        after.starts_with(&followed),
        "the followed export is not where the export after it begins"
    );

    // The file sink over three streams: a torn copy is cut and finished, nothing missing or doubled.
    let out = dir.join("resumed.ndjson");
    // Torn halfway between the third stream's first record and the end.
    let third = after.find("\"TS-C:0:").expect("the third stream's records");
    let torn = (third + after.len()) / 2;
    std::fs::write(&out, &after.as_bytes()[..torn]).expect("write");
    let out_arg = out.to_str().expect("path");
    export_nats(&url, &["--types", "event,notification", "--out", out_arg]);
    assert!(std::fs::read_to_string(&out).expect("read") == after);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A gateway with `--nats` alone: `callgate export --nats` folds with the settings and epoch it kept in
/// JetStream, and makes the records the gateway wrote live (`--analytics-out`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_nats_of_a_gateway_without_a_journal_gives_its_live_records() {
    let dir = temp_dir("jetstream-export-alone");
    let nats = NatsServer::start(&dir);
    let url = nats.url();
    let live = dir.join("live.ndjson");
    let live_arg = live.to_str().expect("path").to_owned();
    let gateway = Gateway::start(&[
        "--base-url",
        BASE_URL,
        "--nats",
        &url,
        "--released-linger",
        "1",
        "--node",
        "gw-7",
        "--analytics-out",
        &live_arg,
        "--types",
        "event,notification,cdr",
    ]);
    let (a, b) = (an_hour(34), as_server(&an_hour(35), "TS-B"));
    send_at_once(&gateway, &[&a[..a.len() / 3], &b[..b.len() / 3]]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(gateway.terminate().success());
    std::thread::sleep(Duration::from_millis(2100));
    let live = std::fs::read_to_string(&live).expect("read");
    let exported = export_nats(&url, &[]);
    assert!(
        exported.contains("\"source\":\"callgate://gw-7/"),
        "the node kept"
    );
    for kind in ["event", "notification"] {
        let (got, want) = (
            without_positions(&exported, kind),
            without_positions(&live, kind),
        );
        assert!(got.len() > 100, "{} {kind} records", got.len());
        assert!(got == want, "the {kind} records differ");
    }
    same_cdrs_but_the_last(&exported, &live);
    let _ = std::fs::remove_dir_all(&dir);
}
