//! Black-box tests of `callgate serve`: the real binary on free ports, fed like a T-Server over TCP and
//! read like agent desktops and wallboards over WebSocket and HTTP.

mod support;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use support::{Gateway, Ingest, fixture, fixture_dirs, json_lines};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(gateway: &Gateway) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(gateway.ws_url())
        .await
        .expect("WebSocket connects");
    ws
}

async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string()))
        .await
        .expect("send");
}

/// The next JSON message, skipping pings; `None` on close or after `wait`.
async fn next_json(ws: &mut Ws, wait: Duration) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(wait, ws.next()).await.ok()??.ok()?;
        match message {
            Message::Text(text) => {
                return Some(serde_json::from_str(text.as_str()).expect("server sends JSON"));
            }
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

async fn subscribe(ws: &mut Ws, request: Value) -> Value {
    send(ws, request).await;
    let reply = next_json(ws, Duration::from_secs(10))
        .await
        .expect("subscribed");
    assert_eq!(reply["type"], "subscribed", "{reply}");
    reply
}

/// Feeds `bytes` on a fresh ingest connection, half-closes, and returns the gateway's reply lines.
async fn ingest(gateway: &Gateway, bytes: Vec<u8>) -> Vec<Value> {
    let mut client = Ingest::connect(gateway);
    tokio::task::spawn_blocking(move || {
        client.send(&bytes);
        client.finish()
    })
    .await
    .expect("ingest task")
}

async fn collect_notifications(ws: &mut Ws, count: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < count {
        let Some(message) = next_json(ws, Duration::from_secs(10)).await else {
            break;
        };
        if message["type"] == "notification" {
            got.push(message);
        }
    }
    got
}

fn sort_resources(mut calls: Vec<Value>) -> Vec<Value> {
    calls.sort_by_key(|c| {
        (
            c["deviceUri"].to_string(),
            c["id"].to_string(),
            c["connId"].to_string(),
        )
    });
    calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_through_the_socket_gives_folds_notifications_and_resources() {
    let _serial = support::exclusive().await;
    for dir in fixture_dirs() {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let gateway = Gateway::start(&["--base-url", "http://127.0.0.1:8080"]);
        let mut ws = ws_connect(&gateway).await;
        let subscribed = subscribe(&mut ws, json!({"type":"subscribe","sub":"all"})).await;
        assert_eq!(subscribed["calls"], json!([]), "{name}");
        let epoch = subscribed["epoch"].clone();

        let events = std::fs::read(dir.join("events.ndjson")).expect("events");
        let replies = ingest(&gateway, events.clone()).await;
        let mut want =
            json_lines(&std::fs::read_to_string(dir.join("updates.ndjson")).expect("updates"));
        let mut got = collect_notifications(&mut ws, want.len()).await;
        // events.md: an event with no time and no earlier event of its Server takes the time of arrival
        // in `serve`, while `fold` has no clock. Where a fixture starts so, durations legitimately differ.
        let untimed_start = String::from_utf8_lossy(&events)
            .lines()
            .next()
            .and_then(|l| serde_json::from_str::<Value>(l).ok())
            .is_some_and(|e| e.get("TimeinSecs").is_none() && e.get("Time").is_none());
        if untimed_start {
            for n in got.iter_mut().chain(want.iter_mut()) {
                if let Some(call) = n["data"]["call"].as_object_mut() {
                    call.remove("duration");
                }
            }
        }
        assert_eq!(got.len(), want.len(), "{name}: notification count");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g["seq"], json!(i + 1), "{name}: seq");
            assert_eq!(g["epoch"], epoch, "{name}: epoch");
            assert_eq!(g["channel"], w["channel"], "{name}: notification {}", i + 1);
            assert_eq!(g["data"], w["data"], "{name}: notification {}", i + 1);
        }

        let (status, body) = gateway.get("/api/v2/calls");
        assert_eq!(status, 200, "{name}");
        let body: Value = serde_json::from_str(&body).expect("calls JSON");
        assert_eq!(body["statusCode"], 0);
        let mut calls = body["calls"].as_array().cloned().unwrap_or_default();
        let mut want =
            json_lines(&std::fs::read_to_string(dir.join("resources.ndjson")).expect("resources"));
        if untimed_start {
            for call in calls.iter_mut().chain(want.iter_mut()) {
                if let Some(call) = call.as_object_mut() {
                    call.remove("duration");
                }
            }
        }
        assert_eq!(
            sort_resources(calls),
            sort_resources(want),
            "{name}: REST resources"
        );

        // The last reply is the final acknowledgement; rejected lines got error lines with their numbers.
        let last = replies.last().expect("final ack");
        let rejected: Vec<u64> = std::fs::read_to_string(dir.join("rejects.txt"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        assert_eq!(last["rejected"], json!(rejected.len()), "{name}: {last}");
        let error_lines: Vec<u64> = replies.iter().filter_map(|r| r["line"].as_u64()).collect();
        assert_eq!(error_lines, rejected, "{name}");
        let summary: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("summary.json")).expect("summary"),
        )
        .expect("summary");
        assert_eq!(last["duplicates"], summary["duplicates"], "{name}: {last}");
        assert_eq!(
            last["applied"].as_u64(),
            Some(
                summary["applied"].as_u64().unwrap_or(0)
                    + summary["orphans"].as_u64().unwrap_or(0)
                    + summary["ignored"].as_u64().unwrap_or(0)
            ),
            "{name}: {last}"
        );
    }
}

const RINGING_7001: &str = r#"{"event":"EventRinging","EventSequenceNumber":1,"TimeinSecs":100,"ConnID":"a1","ThisDN":"7001","OtherDN":"+14155550100"}"#;
const RINGING_7002: &str = r#"{"event":"EventRinging","EventSequenceNumber":2,"TimeinSecs":101,"ConnID":"a2","ThisDN":"7002","OtherDN":"+14155550123"}"#;
const ESTABLISHED_7001: &str = r#"{"event":"EventEstablished","EventSequenceNumber":3,"TimeinSecs":104,"ConnID":"a1","ThisDN":"7001","OtherDN":"+14155550100"}"#;
const ESTABLISHED_7002: &str = r#"{"event":"EventEstablished","EventSequenceNumber":4,"TimeinSecs":105,"ConnID":"a2","ThisDN":"7002","OtherDN":"+14155550123"}"#;

/// `callgate sim ARGS` output.
fn simulate(args: &[&str]) -> Vec<u8> {
    std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
        .arg("sim")
        .args(args)
        .output()
        .expect("sim runs")
        .stdout
}

fn lines(events: &[&str]) -> Vec<u8> {
    let mut bytes = events.join("\n").into_bytes();
    bytes.push(b'\n');
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_updates_filtered_by_dn() {
    let _serial = support::exclusive().await;
    let gateway = Gateway::start(&[]);
    ingest(&gateway, lines(&[RINGING_7001, RINGING_7002])).await;
    let mut agent = ws_connect(&gateway).await;
    let snapshot = subscribe(
        &mut agent,
        json!({"type":"subscribe","sub":"me","filter":{"dn":["7002"]}}),
    )
    .await;
    assert_eq!(snapshot["seq"], 2);
    assert_eq!(snapshot["resumed"], false);
    let calls = snapshot["calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["state"], "Ringing");
    assert_eq!(calls[0]["connId"], "00000000000000a2");
    let mut wallboard = ws_connect(&gateway).await;
    let all = subscribe(
        &mut wallboard,
        json!({"type":"subscribe","sub":"all","filter":{}}),
    )
    .await;
    assert_eq!(all["calls"].as_array().map(Vec::len), Some(2));

    ingest(&gateway, lines(&[ESTABLISHED_7001, ESTABLISHED_7002])).await;
    let mine = collect_notifications(&mut agent, 1).await;
    assert_eq!(
        mine[0]["seq"], 4,
        "the agent gets only its own DN's notification"
    );
    assert_eq!(mine[0]["data"]["phoneNumber"], "7002");
    assert_eq!(mine[0]["data"]["call"]["state"], "Established");
    let everything = collect_notifications(&mut wallboard, 2).await;
    let seqs: Vec<&Value> = everything.iter().map(|n| &n["seq"]).collect();
    assert_eq!(seqs, [&json!(3), &json!(4)]);
    // The agent's queue holds nothing more: a ping is answered next.
    send(&mut agent, json!({"type":"ping"})).await;
    assert_eq!(
        next_json(&mut agent, Duration::from_secs(5)).await,
        Some(json!({"type":"pong"}))
    );

    // REST filters.
    let (status, body) = gateway.get("/api/v2/calls?dn=7001&state=Established");
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["calls"].as_array().map(Vec::len), Some(1));
    let device_id = body["calls"][0]["deviceUri"]
        .as_str()
        .and_then(|u| u.rsplit('/').next())
        .expect("device id")
        .to_owned();
    let (status, body) = gateway.get(&format!(
        "/api/v2/devices/{device_id}/calls/00000000000000a1"
    ));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON")["call"]["state"],
        "Established"
    );
    let (status, body) = gateway.get(&format!("/api/v2/devices/{device_id}/calls/nope"));
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON")["statusCode"],
        404
    );
    let (status, body) = gateway.get("/api/v2/devices");
    assert_eq!(status, 200);
    let devices: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(devices["devices"].as_array().map(Vec::len), Some(2));
    assert_eq!(devices["devices"][0]["phoneNumber"], "7001");
    assert_eq!(gateway.get("/api/v2/calls?colour=red").0, 400);
    assert_eq!(gateway.get("/healthz").0, 200);
    assert_eq!(gateway.get("/readyz").0, 200);
    let (_, metrics) = gateway.get("/metrics");
    assert!(
        metrics.contains("callgate_notifications_total 4"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_inside_the_history_and_snapshot_fallbacks() {
    let _serial = support::exclusive().await;
    let gateway = Gateway::start(&["--history", "3"]);
    let mut first = ws_connect(&gateway).await;
    let subscribed = subscribe(&mut first, json!({"type":"subscribe","sub":"all"})).await;
    let epoch = subscribed["epoch"].as_str().expect("epoch").to_owned();
    ingest(&gateway, lines(&[RINGING_7001])).await;
    let seen = collect_notifications(&mut first, 1).await;
    assert_eq!(seen[0]["seq"], 1);
    drop(first);

    // Two notifications missed while away: both still held (history 3), so the client resumes.
    ingest(&gateway, lines(&[RINGING_7002, ESTABLISHED_7001])).await;
    let mut back = ws_connect(&gateway).await;
    let resumed = subscribe(
        &mut back,
        json!({"type":"subscribe","sub":"all","since":{"epoch":epoch,"seq":1}}),
    )
    .await;
    assert_eq!(resumed["resumed"], true, "{resumed}");
    assert!(resumed.get("calls").is_none());
    let missed = collect_notifications(&mut back, 2).await;
    assert_eq!(
        missed.iter().map(|n| n["seq"].as_u64()).collect::<Vec<_>>(),
        [Some(2), Some(3)]
    );
    // A filtered resume gets only its calls.
    let mut filtered = ws_connect(&gateway).await;
    subscribe(&mut filtered, json!({"type":"subscribe","sub":"me","filter":{"dn":["7001"]},"since":{"epoch":epoch,"seq":1}})).await;
    let mine = collect_notifications(&mut filtered, 1).await;
    assert_eq!(mine[0]["seq"], 3);

    // A foreign epoch gets a snapshot.
    let mut stranger = ws_connect(&gateway).await;
    let snapshot = subscribe(
        &mut stranger,
        json!({"type":"subscribe","sub":"all","since":{"epoch":"other-run","seq":1}}),
    )
    .await;
    assert_eq!(snapshot["resumed"], false);
    assert_eq!(snapshot["calls"].as_array().map(Vec::len), Some(2));
    // A position older than the history gets a snapshot too.
    ingest(&gateway, lines(&[ESTABLISHED_7002])).await;
    let mut late = ws_connect(&gateway).await;
    let snapshot = subscribe(
        &mut late,
        json!({"type":"subscribe","sub":"all","since":{"epoch":epoch,"seq":0}}),
    )
    .await;
    assert_eq!(snapshot["resumed"], false);
    assert_eq!(snapshot["seq"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_errors_and_the_connections_stay() {
    let _serial = support::exclusive().await;
    let gateway = Gateway::start(&[]);
    let mut ws = ws_connect(&gateway).await;
    for (request, code) in [
        (Value::String("not json".into()), "bad-request"),
        (json!({"type":"subscribe","sub":""}), "bad-request"),
        (
            json!({"type":"subscribe","sub":"x","filter":{"colour":["red"]}}),
            "bad-request",
        ),
        (json!({"type":"dance"}), "bad-request"),
        (json!({"type":"unsubscribe","sub":"never"}), "unknown-sub"),
    ] {
        let text = match &request {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        ws.send(Message::text(text)).await.expect("send");
        let reply = next_json(&mut ws, Duration::from_secs(5))
            .await
            .expect("error reply");
        assert_eq!(reply["type"], "error", "{request} -> {reply}");
        assert_eq!(reply["code"], code, "{request} -> {reply}");
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    subscribe(&mut ws, json!({"type":"subscribe","sub":"a"})).await;
    send(&mut ws, json!({"type":"subscribe","sub":"a"})).await;
    let reply = next_json(&mut ws, Duration::from_secs(5))
        .await
        .expect("error");
    assert_eq!(
        (reply["code"].as_str(), reply["sub"].as_str()),
        (Some("duplicate-sub"), Some("a"))
    );
    send(&mut ws, json!({"type":"unsubscribe","sub":"a"})).await;
    send(&mut ws, json!({"type":"ping"})).await;
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(5)).await,
        Some(json!({"type":"pong"}))
    );

    // A WebSocket ping gets a pong with the same payload, between the JSON messages.
    ws.send(Message::Ping(bytes::Bytes::from_static(b"are you there")))
        .await
        .expect("ping");
    let pong = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Pong(payload)))) => break Some(payload),
            Ok(Some(Ok(_))) => {}
            _ => break None,
        }
    };
    assert_eq!(pong.as_deref(), Some(&b"are you there"[..]));

    // A plain GET of the WebSocket path is refused with a JSON error, not upgraded.
    let (status, body) = gateway.get("/api/v2/ws");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"statusCode\":400"), "{body}");

    // A frame over 64 KiB closes the connection with 1009 (message too big).
    let mut big = ws_connect(&gateway).await;
    big.send(Message::text(format!(
        "{{\"type\":\"ping\",\"pad\":\"{}\"}}",
        "x".repeat(70 * 1024)
    )))
    .await
    .expect("send");
    let mut code = None;
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(5), big.next()).await {
        match message {
            Ok(Message::Close(frame)) => {
                code = frame.map(|f| f.code);
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert_eq!(code, Some(CloseCode::Size));

    // Bad ingest lines: an error line each, the stream goes on.
    let replies = ingest(
        &gateway,
        format!("{RINGING_7001}\n{{bad\n[1]\n{RINGING_7002}\n").into_bytes(),
    )
    .await;
    let errors: Vec<&Value> = replies
        .iter()
        .filter(|r| r.get("error").is_some())
        .collect();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["line"], 2);
    assert_eq!(errors[1]["line"], 3);
    assert_eq!(errors[1]["error"], "not a JSON object");
    let last = replies.last().expect("ack");
    assert_eq!(
        last,
        &json!({"ack":2,"applied":2,"duplicates":0,"rejected":2})
    );
    assert_eq!(
        gateway
            .get("/api/v2/calls")
            .1
            .matches("\"state\":\"Ringing\"")
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tserver_that_reconnects_and_resends_from_its_last_ack_ends_as_fold() {
    let _serial = support::exclusive().await;
    let dir = fixture("05-two-step-transfer");
    let text = std::fs::read_to_string(dir.join("events.ndjson")).expect("events");
    let events: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let gateway = Gateway::start(&["--base-url", "http://127.0.0.1:8080"]);
    let first_half = lines(&events[..7]);
    let replies = ingest(&gateway, first_half).await;
    let acked = replies.last().and_then(|r| r["ack"].as_u64()).expect("ack");
    // Reconnect and resend from the acknowledged number on (inclusive): duplicates are skipped.
    let resend: Vec<&str> = events
        .iter()
        .copied()
        .filter(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|v| v["EventSequenceNumber"].as_u64())
                .is_none_or(|n| n >= acked)
        })
        .collect();
    let replies = ingest(&gateway, lines(&resend)).await;
    assert_eq!(
        replies.last().map(|r| r["duplicates"].clone()),
        Some(json!(1))
    );
    let (_, body) = gateway.get("/api/v2/calls");
    let calls = serde_json::from_str::<Value>(&body).expect("JSON")["calls"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let want =
        json_lines(&std::fs::read_to_string(dir.join("resources.ndjson")).expect("resources"));
    assert_eq!(sort_resources(calls), sort_resources(want));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_gets_the_newest_state_and_slows_no_one() {
    let _serial = support::exclusive().await;
    let gateway = Gateway::start(&[]);
    let sim = simulate(&[
        "--agents",
        "400",
        "--calls-per-second",
        "2",
        "--events",
        "30000",
        "--seed",
        "3",
    ]);
    // Through a file: writing fold's stdin while it fills its stdout pipe would deadlock.
    let input = std::env::temp_dir().join(format!("callgate-stall-{}.ndjson", std::process::id()));
    std::fs::write(&input, &sim).expect("write sim output");
    let fold = std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["fold", "--updates"])
        .arg(&input)
        .output()
        .expect("fold runs");
    let _ = std::fs::remove_file(&input);
    let total = fold.stdout.iter().filter(|&&b| b == b'\n').count();

    let mut stalled = ws_connect(&gateway).await;
    subscribe(&mut stalled, json!({"type":"subscribe","sub":"all"})).await;
    let mut fast = ws_connect(&gateway).await;
    subscribe(&mut fast, json!({"type":"subscribe","sub":"all"})).await;
    // Paced like a busy T-Server (thousands of events a second), so that a client that reads keeps up.
    let mut paced = Ingest::connect(&gateway);
    let input_lines: Vec<Vec<u8>> = sim
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    let feeding = tokio::task::spawn_blocking(move || {
        for chunk in input_lines.chunks(250) {
            paced.send(&chunk.concat());
            std::thread::sleep(Duration::from_millis(50));
        }
        paced.finish()
    });
    // The reading client does as little as a client can (no JSON parsing; this test binary is not
    // optimised), so that it is "a client that keeps up" on a loaded two-core machine.
    let reading = async {
        let mut seqs = Vec::with_capacity(total);
        while seqs.len() < total {
            let Ok(Some(Ok(message))) =
                tokio::time::timeout(Duration::from_secs(10), fast.next()).await
            else {
                break;
            };
            if let Message::Text(text) = message
                && let Some(at) = text.as_str().find("\"seq\":")
            {
                let digits: String = text.as_str()[at + 6..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                seqs.push(digits.parse::<u64>().unwrap_or(0));
            }
        }
        seqs
    };
    let (_, got) = tokio::join!(feeding, reading);
    assert_eq!(got.len(), total, "the fast client gets every notification");
    assert!(
        got.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, none missing"
    );
    assert_eq!(gateway.get("/healthz").0, 200);

    // The stalled client now reads: per call, versions arrive in order and the last one is the newest,
    // unless it was closed with 4008 (then it resumes with since).
    let (_, body) = gateway.get("/api/v2/calls");
    let current: Vec<Value> = serde_json::from_str::<Value>(&body).expect("JSON")["calls"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut last_seen: std::collections::HashMap<(String, String), Value> =
        std::collections::HashMap::new();
    let mut received = 0;
    let mut closed_4008 = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(3), stalled.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let n: Value = serde_json::from_str(text.as_str()).expect("JSON");
                if n["type"] == "notification" {
                    received += 1;
                    let call = &n["data"]["call"];
                    last_seen.insert(
                        (call["deviceUri"].to_string(), call["id"].to_string()),
                        call.clone(),
                    );
                }
            }
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                closed_4008 = frame.code == CloseCode::Library(4008);
                break;
            }
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    if !closed_4008 {
        assert!(received > 0);
        for call in &current {
            let key = (call["deviceUri"].to_string(), call["id"].to_string());
            if let Some(seen) = last_seen.get(&key) {
                assert_eq!(seen, call, "the newest version of every call arrives");
            }
        }
    }
    let (_, metrics) = gateway.get("/metrics");
    assert!(metrics.contains("callgate_deliveries_total"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_websockets_with_1001_acks_ingest_and_exits_zero() {
    let _serial = support::exclusive().await;
    let gateway = Gateway::start(&[]);
    let mut ws = ws_connect(&gateway).await;
    subscribe(&mut ws, json!({"type":"subscribe","sub":"all"})).await;
    let mut ingest_client = Ingest::connect(&gateway);
    ingest_client.send(format!("{RINGING_7001}\n").as_bytes());
    collect_notifications(&mut ws, 1).await;

    let status = tokio::task::spawn_blocking(move || gateway.terminate())
        .await
        .expect("terminate");
    assert!(status.success(), "exit status {status:?}");
    let mut close_code = None;
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        if let Ok(Message::Close(frame)) = message {
            close_code = frame.map(|f| f.code);
            break;
        }
    }
    assert_eq!(close_code, Some(CloseCode::Away));
    let replies = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(ingest_client.stream)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    })
    .await
    .expect("read acks");
    assert_eq!(
        replies.last().map(String::as_str),
        Some(r#"{"ack":1,"applied":1,"duplicates":0,"rejected":0}"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_taken_in_full_with_bounded_memory() {
    let _serial = support::exclusive().await;
    let gateway = Gateway::start(&[]);
    let sim = simulate(&[
        "--agents",
        "500",
        "--calls-per-second",
        "5",
        "--events",
        "50000",
        "--seed",
        "5",
    ]);
    let lines = sim.iter().filter(|&&b| b == b'\n').count();
    let pid = gateway.child.id();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watcher = {
        let peak = std::sync::Arc::clone(&peak);
        tokio::spawn(async move {
            loop {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let kib: u64 = status
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                peak.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // As fast as the socket takes it: the gateway reads only as fast as its reducers go.
    let replies = ingest(&gateway, sim).await;
    watcher.abort();
    let last = replies.last().expect("final ack");
    assert_eq!(
        last["applied"].as_u64().unwrap_or(0) + last["duplicates"].as_u64().unwrap_or(0),
        lines as u64,
        "{last}"
    );
    assert_eq!(last["rejected"], 0);
    let peak_mib = peak.load(std::sync::atomic::Ordering::Relaxed) / 1024;
    assert!(peak_mib < 512, "gateway RSS peaked at {peak_mib} MiB");
    assert_eq!(gateway.get("/healthz").0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_refused_and_slots_come_back() {
    let _serial = support::exclusive().await;
    let gateway = Gateway::start(&["--max-ws-connections", "2"]);
    let first = ws_connect(&gateway).await;
    let _second = ws_connect(&gateway).await;
    let refused = tokio_tungstenite::connect_async(gateway.ws_url()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("expected a 503 refusal, got {other:?}"),
    }
    // Closing one frees its slot.
    drop(first);
    let mut again = None;
    for _ in 0..50 {
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(gateway.ws_url()).await {
            again = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "a slot came back after a client left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_connect_feeds_a_gateway_at_a_multiple_of_real_time() {
    let _serial = support::exclusive().await;
    let gateway = Gateway::start(&[]);
    let ingest = gateway.ingest.clone();
    let started = std::time::Instant::now();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
            .args([
                "sim",
                "--calls",
                "10",
                "--calls-per-second",
                "5",
                "--talk-secs",
                "5",
                "--speed",
                "20",
            ])
            .args(["--connect", &ingest])
            .output()
            .expect("sim runs")
    })
    .await
    .expect("sim task");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Ten calls at 5/s take a few simulated seconds: paced at 20x, well over 50 ms of wall time.
    assert!(started.elapsed() > Duration::from_millis(50));
    let ack: Value = serde_json::from_str(String::from_utf8_lossy(&output.stderr).trim())
        .expect("final ack on stderr");
    assert!(ack["ack"].as_u64().is_some_and(|n| n > 10), "{ack}");
    assert_eq!(ack["rejected"], 0);
    let (_, body) = gateway.get("/api/v2/calls");
    let calls = serde_json::from_str::<Value>(&body).expect("JSON")["calls"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!calls.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_a_busy_center_at_once_and_keeps_it_moving() {
    let _serial = support::exclusive().await;
    let gateway = Gateway::start(&["--demo"]);
    // The README's run command: calls must be there at the first look, not after the first caller.
    let mut calls = Value::Null;
    for _ in 0..50 {
        let (status, body) = gateway.get("/api/v2/calls");
        assert_eq!(status, 200, "{body}");
        calls = serde_json::from_str(&body).expect("JSON");
        if calls["calls"].as_array().is_some_and(|c| !c.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let live = calls["calls"].as_array().map_or(0, Vec::len);
    assert!(live > 0, "no calls after 5 s: {calls}");

    // A wallboard sees the snapshot, then the center moving on in real time.
    let mut ws = ws_connect(&gateway).await;
    let subscribed = subscribe(&mut ws, json!({"type":"subscribe","sub":"all"})).await;
    assert!(
        subscribed["calls"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "{subscribed}"
    );
    let update = next_json(&mut ws, Duration::from_secs(30))
        .await
        .expect("a notification within 30 s");
    assert_eq!(update["type"], "notification", "{update}");
    assert!(update["data"]["call"]["state"].is_string(), "{update}");
}
