//! `callgate sink postgres` against a real PostgreSQL (Debian's, started by the test as an unprivileged
//! user on a free port): one row per ended call at its highest version, the same CDRs as the export,
//! through a `kill -9` of the sink in the middle of its work; a second run stores nothing again; and the
//! analyst's questions (answered, abandoned, transferred, service level per queue) in SQL.

mod support;

use callgate::ingest::sim::{SimConfig, Simulator};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::durable::{BASE_URL, export, send_acked_and_settle};
use support::postgres::PgServer;
use support::{Gateway, temp_dir};

/// A simulated hour of a small center, with the simulator's own counts.
fn an_hour() -> (Vec<(u64, String)>, callgate::ingest::sim::SimStats) {
    let mut simulator = Simulator::new(SimConfig {
        seed: 41,
        agents: 12,
        queues: 2,
        supervisors: 1,
        calls_per_second: 0.15,
        duration_secs: Some(3600.0),
        ..SimConfig::default()
    });
    let lines = simulator
        .by_ref()
        .map(|event| {
            let value: Value = serde_json::from_str(&event.line).expect("JSON");
            let sequence = value["EventSequenceNumber"].as_u64().expect("numbered");
            (sequence, event.line)
        })
        .collect();
    (lines, simulator.stats())
}

/// A journal of the hour, written by a gateway that is then stopped.
fn journal(dir: &Path, lines: &[(u64, String)]) {
    let journal = dir.join("journal");
    let gateway = Gateway::start(&[
        "--base-url",
        BASE_URL,
        "--released-linger",
        "1",
        "--journal",
        journal.to_str().expect("path"),
    ]);
    send_acked_and_settle(&gateway, lines, Duration::from_millis(2000));
    assert!(gateway.terminate().success());
}

fn sink(dir: &Path, pg: &PgServer, batch: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_callgate"));
    command
        .args([
            "sink",
            "postgres",
            "--dsn",
            &pg.dsn(),
            "--batch",
            batch,
            "--journal",
        ])
        .arg(dir.join("journal"))
        .env("RUST_LOG", "warn");
    command
}

/// The export's CDRs: the highest version of each call.
fn exported(dir: &Path) -> HashMap<String, Value> {
    let mut newest: HashMap<String, Value> = HashMap::new();
    for line in export(&dir.join("journal"), &["--types", "cdr"]).lines() {
        let record: Value = serde_json::from_str(line).expect("JSON");
        let cdr = record["data"].clone();
        let id = cdr["cdrId"].as_str().expect("cdrId").to_owned();
        let newer = newest
            .get(&id)
            .is_none_or(|held| held["version"].as_u64() < cdr["version"].as_u64());
        if newer {
            newest.insert(id, cdr);
        }
    }
    newest
}

async fn rows(client: &tokio_postgres::Client) -> HashMap<String, Value> {
    client
        .query("SELECT cdr_id, version, record::text FROM call_cdr", &[])
        .await
        .expect("select")
        .iter()
        .map(|row| {
            let record: Value = serde_json::from_str(row.get::<_, &str>(2)).expect("jsonb");
            assert_eq!(
                record["version"].as_i64(),
                Some(i64::from(row.get::<_, i32>(1)))
            );
            (row.get::<_, String>(0), record)
        })
        .collect()
}

async fn stored_position(client: &tokio_postgres::Client) -> i64 {
    client
        .query_opt(
            "SELECT position FROM callgate_sink_progress WHERE consumer = 'callgate'",
            &[],
        )
        .await
        .ok()
        .flatten()
        .map_or(0, |row| row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_row_per_call_at_its_highest_version_through_a_kill_9_of_the_sink() {
    let dir = temp_dir("pg-sink");
    let (lines, stats) = an_hour();
    journal(&dir, &lines);
    let want = exported(&dir);
    assert!(want.len() > 300, "{} calls", want.len());
    let pg = PgServer::start(&dir);
    let client = pg.client().await;

    // Small batches, killed as soon as the first are committed.
    let mut first = sink(&dir, &pg, "7")
        .stderr(Stdio::null())
        .spawn()
        .expect("sink starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if client
            .query_opt(
                "SELECT 1 FROM pg_tables WHERE tablename = 'callgate_sink_progress'",
                &[],
            )
            .await
            .expect("query")
            .is_some()
            && stored_position(&client).await > 0
        {
            break;
        }
        assert!(Instant::now() < deadline, "the sink never committed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill().expect("kill -9");
    first.wait().expect("reaped");
    let rows_at_kill = rows(&client).await.len();
    eprintln!("killed with {rows_at_kill} of {} calls stored", want.len());

    let output = sink(&dir, &pg, "7").output().expect("sink runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let got = rows(&client).await;
    assert_eq!(got.len(), want.len(), "one row per call");
    for (id, cdr) in &want {
        assert_eq!(got.get(id), Some(cdr), "{id}");
    }

    // Again: everything is stored, nothing is sent.
    let output = sink(&dir, &pg, "1000").output().expect("sink runs");
    assert!(output.status.success());
    let summary = String::from_utf8_lossy(&output.stderr);
    assert!(
        summary.contains(" 0 records in 0 transactions"),
        "{summary}"
    );
    assert_eq!(rows(&client).await, got);

    // The analyst's questions, in SQL, against the simulator's own counts and the CDRs.
    let row = client
        .query_one(
            "SELECT count(*), \
                    count(*) FILTER (WHERE direction = 'inbound'), \
                    count(*) FILTER (WHERE abandon_phase = 'queue'), \
                    count(*) FILTER (WHERE abandon_phase = 'ringing'), \
                    count(*) FILTER (WHERE answer_time IS NOT NULL), \
                    count(*) FILTER (WHERE transferred) \
             FROM call_cdr",
            &[],
        )
        .await
        .expect("counts");
    let count = |n: usize| row.get::<_, i64>(n) as u64;
    assert_eq!(count(0), stats.calls - stats.internal_skipped);
    assert_eq!(count(1), stats.inbound);
    assert_eq!(count(2), stats.abandoned_in_queue);
    assert_eq!(count(3), stats.abandoned_ringing);
    let answered = want.values().filter(|c| !c["answerTime"].is_null()).count() as u64;
    let transferred = want.values().filter(|c| c["transferred"] == true).count() as u64;
    assert_eq!(count(4), answered);
    assert_eq!(count(5), transferred);
    assert!(transferred > 0);

    // Service level per queue: answered within 20 s of entering the queue, of those offered.
    let by_queue = client
        .query(
            "SELECT dn, count(*) AS offered, \
                    count(*) FILTER (WHERE outcome = 'diverted' AND wait_ms <= 20000) AS in_time \
             FROM call_cdr_queue GROUP BY dn ORDER BY dn",
            &[],
        )
        .await
        .expect("per queue");
    assert!(!by_queue.is_empty());
    for row in &by_queue {
        let dn: String = row.get(0);
        let visits: Vec<&Value> = want
            .values()
            .flat_map(|c| c["queues"].as_array().expect("queues").iter())
            .filter(|q| q["dn"] == dn.as_str())
            .collect();
        let in_time = visits
            .iter()
            .filter(|q| q["outcome"] == "diverted" && q["waitMs"].as_i64() <= Some(20_000))
            .count() as i64;
        assert_eq!(row.get::<_, i64>(1), visits.len() as i64, "offered at {dn}");
        assert_eq!(row.get::<_, i64>(2), in_time, "in time at {dn}");
    }
    drop(pg);
    let _ = std::fs::remove_dir_all(&dir);
}
