//! Soak: the simulator's traffic at a steady rate into a real gateway while clients connect, subscribe
//! (with and without filters), resume and disconnect at random, and one client never reads. At the end the
//! gateway must still be ready, its memory flat, every client's stream in order, and its live calls
//! exactly those `fold` gives for the same events.
//!
//! CI runs a short version (defaults below). The long one (docs/testing.md):
//!
//!     SOAK_SECS=600 SOAK_RATE=2000 SOAK_CLIENTS=1000 cargo test --release --test soak -- --nocapture

mod support;

use callgate::ingest::sim::{SimConfig, Simulator};
use callgate::reduce::{Fold, ReducerConfig};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::Gateway;
use tokio_tungstenite::tungstenite::Message;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The simulator's lines for `count` events of a 300-agent center.
fn traffic(count: usize) -> Vec<String> {
    let config = SimConfig {
        seed: 11,
        agents: 300,
        queues: 4,
        supervisors: 6,
        calls_per_second: 4.0,
        ..SimConfig::default()
    };
    Simulator::new(config)
        .take(count)
        .map(|event| event.line)
        .collect()
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// What the clients saw, for the checks at the end.
#[derive(Default)]
struct Tally {
    sessions: AtomicU64,
    notifications: AtomicU64,
    resumed: AtomicU64,
    snapshots: AtomicU64,
    out_of_order: AtomicU64,
}

/// One client's life: connect, subscribe (sometimes filtered, sometimes resuming where it left off),
/// read for a while, leave; again until `stop`.
async fn client(url: String, id: u64, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let mut last: Option<(String, u64)> = None;
    let mut turn = id;
    while !stop.load(Ordering::Relaxed) {
        turn = turn
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&url).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tally.sessions.fetch_add(1, Ordering::Relaxed);
        let mut request = json!({"type": "subscribe", "sub": "s"});
        match turn >> 60 {
            0..=5 => {}
            6..=9 => request["filter"] = json!({"dn": [format!("{}", 7001 + turn % 300)]}),
            10..=11 => request["filter"] = json!({"state": ["Established", "Held"]}),
            _ => {}
        }
        let mut since = None;
        if turn & 1 == 1
            && let Some((epoch, seq)) = &last
        {
            request["since"] = json!({"epoch": epoch, "seq": seq});
            since = Some(*seq);
        }
        if ws.send(Message::text(request.to_string())).await.is_err() {
            continue;
        }
        let stay = Duration::from_millis(200 + (turn >> 20) % 2800);
        let until = Instant::now() + stay;
        let mut previous = 0u64;
        while let Ok(Some(Ok(message))) = tokio::time::timeout_at(until.into(), ws.next()).await {
            let Message::Text(text) = message else {
                continue;
            };
            let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else {
                continue;
            };
            match frame["type"].as_str() {
                Some("subscribed") => {
                    let epoch = frame["epoch"].as_str().unwrap_or("").to_owned();
                    // A resume's missed notifications follow, from just after `since`; a snapshot's
                    // notifications follow its position.
                    let resumed = frame["resumed"] == true;
                    previous = match (resumed, since) {
                        (true, Some(since)) => since,
                        _ => frame["seq"].as_u64().unwrap_or(0),
                    };
                    last = Some((epoch, previous));
                    let counter = if resumed {
                        &tally.resumed
                    } else {
                        &tally.snapshots
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Some("snapshot") => {}
                Some("notification") => {
                    let seq = frame["seq"].as_u64().unwrap_or(0);
                    if seq <= previous {
                        tally.out_of_order.fetch_add(1, Ordering::Relaxed);
                    }
                    previous = seq;
                    if let Some((_, at)) = &mut last {
                        *at = seq;
                    }
                    tally.notifications.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        let _ = ws.close(None).await;
    }
}

/// Live calls by id and device, as compact JSON: from REST, and from `fold` of the same lines.
fn live_calls(calls: impl IntoIterator<Item = Value>) -> BTreeMap<String, String> {
    calls
        .into_iter()
        .filter(|call| call["state"] != "Released")
        .map(|call| {
            let key = format!("{} {}", call["deviceUri"], call["id"]);
            (key, call.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_come_and_go_under_steady_traffic_and_the_gateway_holds() {
    let _serial = support::exclusive().await;
    let secs = setting("SOAK_SECS", 20);
    let rate = setting("SOAK_RATE", 400);
    let clients = setting("SOAK_CLIENTS", 40);
    let gateway = Gateway::start(&["--history", "5000", "--released-linger", "2"]);
    let pid = gateway.child.id();
    let lines = traffic((secs * rate) as usize);

    // The feeder: `rate` lines a second on one ingest connection, in 10 ms slices.
    let feed = {
        let ingest = gateway.ingest.clone();
        let lines = lines.clone();
        std::thread::spawn(move || {
            let mut socket = std::net::TcpStream::connect(&ingest).expect("ingest connects");
            let reader = socket.try_clone().expect("clone");
            // Acknowledgements are read (and dropped) so the gateway never waits on this client.
            let drain = std::thread::spawn(move || {
                std::io::copy(&mut std::io::BufReader::new(reader), &mut std::io::sink())
            });
            let started = Instant::now();
            let per_slice = (rate / 100).max(1) as usize;
            for (slice, chunk) in lines.chunks(per_slice).enumerate() {
                let due = started + Duration::from_millis(10 * slice as u64);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                let mut bytes = chunk.join("\n");
                bytes.push('\n');
                socket.write_all(bytes.as_bytes()).expect("ingest write");
            }
            socket
                .shutdown(std::net::Shutdown::Write)
                .expect("half-close");
            let _ = drain.join();
        })
    };

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut tasks = Vec::new();
    for id in 0..clients {
        tasks.push(tokio::spawn(client(
            gateway.ws_url(),
            id + 1,
            Arc::clone(&stop),
            Arc::clone(&tally),
        )));
    }
    // The stalled reader: subscribes to everything and never reads.
    let (mut stalled, _) = tokio_tungstenite::connect_async(gateway.ws_url())
        .await
        .expect("stalled client connects");
    stalled
        .send(Message::text(
            json!({"type": "subscribe", "sub": "all"}).to_string(),
        ))
        .await
        .expect("send");

    let mut rss = Vec::new();
    let started = Instant::now();
    while !feed.is_finished() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss.push((started.elapsed().as_secs_f64(), rss_kib(pid)));
        let (status, _) = gateway.get("/readyz");
        assert_eq!(status, 200, "the gateway stopped being ready");
    }
    feed.join().expect("feeder");
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("client task");
    }

    // Every line folded by the library, with the gateway's base URL: its live calls are REST's.
    let mut fold = Fold::new(ReducerConfig {
        base_url: format!("http://{}", gateway.http),
        ..ReducerConfig::default()
    });
    let mut notifications = callgate::reduce::Notifications::default();
    for line in &lines {
        let _ = fold.apply_line(line.as_bytes(), &mut notifications);
        notifications.clear();
    }
    let reducer = fold.reducer();
    let folded = live_calls(reducer.call_numbers().into_iter().filter_map(|n| {
        let mut json = String::new();
        reducer.view(n)?.write(&mut json);
        serde_json::from_str(&json).ok()
    }));
    // The last acknowledgement comes only after the last notification is published.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = gateway.get("/api/v2/calls");
    assert_eq!(status, 200);
    let rest: Value = serde_json::from_str(&body).expect("JSON");
    let served = live_calls(rest["calls"].as_array().cloned().unwrap_or_default());
    assert_eq!(served.len(), folded.len(), "live calls: REST against fold");
    assert!(served == folded, "REST's live calls differ from fold's");

    let sessions = tally.sessions.load(Ordering::Relaxed);
    let delivered = tally.notifications.load(Ordering::Relaxed);
    println!(
        "soak: {} lines in {:.1} s, {sessions} sessions ({} snapshots, {} resumes), {delivered} notifications, RSS {:?} KiB",
        lines.len(),
        started.elapsed().as_secs_f64(),
        tally.snapshots.load(Ordering::Relaxed),
        tally.resumed.load(Ordering::Relaxed),
        rss.iter().map(|(_, kib)| *kib).collect::<Vec<_>>()
    );
    assert_eq!(
        tally.out_of_order.load(Ordering::Relaxed),
        0,
        "seq went back"
    );
    assert!(sessions > clients, "clients came back");
    assert!(tally.resumed.load(Ordering::Relaxed) > 0, "some resumed");
    assert!(delivered > 0);

    // Flat memory: the last third of the run holds no more than the middle third, with slack for noise.
    let third = |k: usize| {
        let n = rss.len();
        rss[n * k / 3..n * (k + 1) / 3]
            .iter()
            .map(|(_, kib)| *kib)
            .max()
            .unwrap_or(0)
    };
    let (middle, last) = (third(1), third(2));
    assert!(
        last <= middle + middle / 4 + 16 * 1024,
        "memory grew: {middle} KiB in the middle third, {last} KiB in the last"
    );
    // Shutdown does not wait on the client that stopped reading.
    let stopping = Instant::now();
    assert_eq!(gateway.terminate().code(), Some(0), "a clean exit");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        stopping.elapsed()
    );
}
