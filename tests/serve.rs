//! Black-box tests of `callgate serve`: the real binary on free ports, fed like a T-Server over TCP and
//! read like agent desktops and wallboards over WebSocket and HTTP.

mod support;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use support::{Gateway, Ingest, Ws, fixture, fixture_dirs, ingest, json_lines, next_json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

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

async fn subscribe(ws: &mut Ws, request: Value) -> Value {
    send(ws, request).await;
    let reply = next_json(ws, Duration::from_secs(10))
        .await
        .expect("subscribed");
    assert_eq!(reply["type"], "subscribed", "{reply}");
    reply
}

/// How long a stream must stay silent after the expected messages before a test takes it that nothing more
/// is coming.
const QUIET: Duration = Duration::from_millis(300);

/// Exactly `count` notifications, then silence: fails when fewer arrive (10 s for each), when any other
/// message comes in between, or when anything at all arrives within [`QUIET`] after the last of them.
async fn collect_notifications(ws: &mut Ws, count: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < count {
        let Some(message) = next_json(ws, Duration::from_secs(10)).await else {
            break;
        };
        assert_eq!(
            message["type"],
            "notification",
            "only notifications expected, after seqs {:?}: {message}",
            seqs(&got)
        );
        got.push(message);
    }
    assert_eq!(
        got.len(),
        count,
        "notifications expected; got seqs {:?}",
        seqs(&got)
    );
    expect_quiet(ws, &format!("after seqs {:?}", seqs(&got))).await;
    got
}

/// Fails when any message arrives within [`QUIET`].
async fn expect_quiet(ws: &mut Ws, context: &str) {
    if let Some(extra) = next_json(ws, QUIET).await {
        panic!("nothing more expected {context}, got {extra}");
    }
}

fn seqs(notifications: &[Value]) -> Vec<u64> {
    notifications
        .iter()
        .map(|n| n["seq"].as_u64().unwrap_or(0))
        .collect()
}

/// What tests check of a notification: seq, the device's DN, notification type, call id, connId, state.
type Brief = (u64, String, String, String, String, String);

/// What tests check of a call resource: device id, id, connId, state.
type CallEntry = (String, String, String, String);

/// The [`Brief`] of a notification.
fn brief(notification: &Value) -> Brief {
    let text = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let data = &notification["data"];
    (
        notification["seq"].as_u64().unwrap_or(0),
        text(&data["phoneNumber"]),
        text(&data["notificationType"]),
        text(&data["call"]["id"]),
        text(&data["call"]["connId"]),
        text(&data["call"]["state"]),
    )
}

fn briefs(notifications: &[Value]) -> Vec<Brief> {
    notifications.iter().map(brief).collect()
}

/// The expected [`brief`] of a StatusChange notification.
fn status_change(seq: u64, dn: &str, id: &str, conn_id: &str, state: &str) -> Brief {
    (
        seq,
        dn.into(),
        "StatusChange".into(),
        id.into(),
        conn_id.into(),
        state.into(),
    )
}

/// A set of call resources as (device id, id, connId, state), sorted.
fn call_set(calls: &Value) -> Vec<CallEntry> {
    let text = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let mut set: Vec<_> = calls
        .as_array()
        .unwrap_or_else(|| panic!("a list of calls: {calls}"))
        .iter()
        .map(|call| {
            let device = call["deviceUri"]
                .as_str()
                .and_then(|uri| uri.rsplit('/').next())
                .unwrap_or("?")
                .to_owned();
            (
                device,
                text(&call["id"]),
                text(&call["connId"]),
                text(&call["state"]),
            )
        })
        .collect();
    set.sort();
    set
}

/// The device id of DN `dn` on the default T-Server (call-resource.md: UUID v5 in the URL namespace of
/// `tserver:{Server}/{ThisDN}`).
fn device_of(dn: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("tserver:/{dn}").as_bytes(),
    )
    .to_string()
}

/// An expected entry of [`call_set`].
fn call(dn: &str, id: &str, conn_id: &str, state: &str) -> CallEntry {
    (device_of(dn), id.into(), conn_id.into(), state.into())
}

/// Expected entries of [`call_set`], sorted as it sorts them.
fn calls<const N: usize>(entries: [CallEntry; N]) -> Vec<CallEntry> {
    let mut entries = entries.to_vec();
    entries.sort();
    entries
}

/// `GET path` as JSON, expecting 200.
fn get_json(gateway: &Gateway, path: &str) -> Value {
    let (status, body) = gateway.get(path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("JSON body")
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
        let subscribed = subscribe(
            &mut ws,
            json!({"type":"subscribe","sub":"all","topics":["calls","devices","queues"]}),
        )
        .await;
        assert_eq!(subscribed["calls"], json!([]), "{name}");
        assert_eq!(subscribed["devices"], json!([]), "{name}");
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
/// The ConnIDs of the two calls above, normalised; without a CallUUID they are the calls' ids too.
const A1: &str = "00000000000000a1";
const A2: &str = "00000000000000a2";
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
    assert_eq!(
        call_set(&snapshot["calls"]),
        [call("7002", A2, A2, "Ringing")]
    );
    let mut wallboard = ws_connect(&gateway).await;
    let all = subscribe(
        &mut wallboard,
        json!({"type":"subscribe","sub":"all","filter":{}}),
    )
    .await;
    assert_eq!(
        call_set(&all["calls"]),
        calls([
            call("7001", A1, A1, "Ringing"),
            call("7002", A2, A2, "Ringing")
        ])
    );

    ingest(&gateway, lines(&[ESTABLISHED_7001, ESTABLISHED_7002])).await;
    let mine = collect_notifications(&mut agent, 1).await;
    assert_eq!(
        briefs(&mine),
        [status_change(4, "7002", A2, A2, "Established")],
        "the agent gets only its own DN's notification"
    );
    let everything = collect_notifications(&mut wallboard, 2).await;
    assert_eq!(
        briefs(&everything),
        [
            status_change(3, "7001", A1, A1, "Established"),
            status_change(4, "7002", A2, A2, "Established"),
        ]
    );
    // The agent's queue holds nothing more: a ping is answered next.
    send(&mut agent, json!({"type":"ping"})).await;
    assert_eq!(
        next_json(&mut agent, Duration::from_secs(5)).await,
        Some(json!({"type":"pong"}))
    );

    // REST filters.
    let body = get_json(&gateway, "/api/v2/calls?dn=7001&state=Established");
    assert_eq!(body["statusCode"], 0);
    assert_eq!(
        call_set(&body["calls"]),
        [call("7001", A1, A1, "Established")]
    );
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
    let mut listed: Vec<(String, String, Vec<CallEntry>)> = devices["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap_or("?").to_owned(),
                d["phoneNumber"].as_str().unwrap_or("?").to_owned(),
                call_set(&d["calls"]),
            )
        })
        .collect();
    listed.sort();
    let mut want = vec![
        (
            device_of("7001"),
            "7001".to_owned(),
            vec![call("7001", A1, A1, "Established")],
        ),
        (
            device_of("7002"),
            "7002".to_owned(),
            vec![call("7002", A2, A2, "Established")],
        ),
    ];
    want.sort();
    assert_eq!(listed, want);
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
    assert_eq!(briefs(&seen), [status_change(1, "7001", A1, A1, "Ringing")]);
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
        briefs(&missed),
        [
            status_change(2, "7002", A2, A2, "Ringing"),
            status_change(3, "7001", A1, A1, "Established"),
        ]
    );
    // A filtered resume gets only its calls.
    let mut filtered = ws_connect(&gateway).await;
    subscribe(&mut filtered, json!({"type":"subscribe","sub":"me","filter":{"dn":["7001"]},"since":{"epoch":epoch,"seq":1}})).await;
    let mine = collect_notifications(&mut filtered, 1).await;
    assert_eq!(
        briefs(&mine),
        [status_change(3, "7001", A1, A1, "Established")]
    );

    // A foreign epoch gets a snapshot.
    let mut stranger = ws_connect(&gateway).await;
    let snapshot = subscribe(
        &mut stranger,
        json!({"type":"subscribe","sub":"all","since":{"epoch":"other-run","seq":1}}),
    )
    .await;
    assert_eq!(snapshot["resumed"], false);
    assert_eq!(snapshot["seq"], 3);
    assert_eq!(
        call_set(&snapshot["calls"]),
        calls([
            call("7001", A1, A1, "Established"),
            call("7002", A2, A2, "Ringing")
        ])
    );
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
    assert_eq!(
        call_set(&snapshot["calls"]),
        calls([
            call("7001", A1, A1, "Established"),
            call("7002", A2, A2, "Established")
        ])
    );
}

/// The query string of a WebSocket filter (each member repeated for its values).
fn query_of(filter: &Value) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (member, values) in filter.as_object().expect("filter object") {
        for value in values.as_array().expect("list of values") {
            query.append_pair(member, value.as_str().expect("string value"));
        }
    }
    query.finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_id_and_device_id_filters_select_exactly_their_calls_over_websocket_and_rest() {
    let _serial = support::exclusive().await;
    let gateway = Gateway::start(&[]);
    // Two devices with two calls each: an internal call X from 7001 to 7002 (a resource at each device,
    // both with id UUID-X), and an inbound call at each (Y at 7001, Z at 7002). The ids are the CallUUIDs.
    let setup = [
        r#"{"event":"EventDialing","EventSequenceNumber":1,"TimeinSecs":100,"ConnID":"c1","CallUUID":"UUID-X","ThisDN":"7001","OtherDN":"7002"}"#,
        r#"{"event":"EventRinging","EventSequenceNumber":2,"TimeinSecs":100,"ConnID":"c1","CallUUID":"UUID-X","ThisDN":"7002","OtherDN":"7001"}"#,
        r#"{"event":"EventRinging","EventSequenceNumber":3,"TimeinSecs":101,"ConnID":"c2","CallUUID":"UUID-Y","ThisDN":"7001","OtherDN":"+14155550100"}"#,
        r#"{"event":"EventRinging","EventSequenceNumber":4,"TimeinSecs":102,"ConnID":"c3","CallUUID":"UUID-Z","ThisDN":"7002","OtherDN":"+14155550123"}"#,
    ];
    // Then each is answered, in this order: seq 5 X at 7002, 6 X at 7001, 7 Y, 8 Z.
    let answers = [
        r#"{"event":"EventEstablished","EventSequenceNumber":5,"TimeinSecs":103,"ConnID":"c1","CallUUID":"UUID-X","ThisDN":"7002","OtherDN":"7001"}"#,
        r#"{"event":"EventEstablished","EventSequenceNumber":6,"TimeinSecs":103,"ConnID":"c1","CallUUID":"UUID-X","ThisDN":"7001","OtherDN":"7002"}"#,
        r#"{"event":"EventEstablished","EventSequenceNumber":7,"TimeinSecs":104,"ConnID":"c2","CallUUID":"UUID-Y","ThisDN":"7001","OtherDN":"+14155550100"}"#,
        r#"{"event":"EventEstablished","EventSequenceNumber":8,"TimeinSecs":105,"ConnID":"c3","CallUUID":"UUID-Z","ThisDN":"7002","OtherDN":"+14155550123"}"#,
    ];
    // (dn, id, connId, state before the answers, seq of the answer)
    type Resource = (&'static str, &'static str, &'static str, &'static str, u64);
    const C1: &str = "00000000000000c1";
    const X1: Resource = ("7001", "UUID-X", C1, "Dialing", 6);
    const X2: Resource = ("7002", "UUID-X", C1, "Ringing", 5);
    const Y: Resource = ("7001", "UUID-Y", "00000000000000c2", "Ringing", 7);
    const Z: Resource = ("7002", "UUID-Z", "00000000000000c3", "Ringing", 8);
    let (d1, d2) = (device_of("7001"), device_of("7002"));
    let cases: Vec<(Value, Vec<Resource>)> = vec![
        (json!({"callId":["UUID-Y"]}), vec![Y]),
        (json!({"callId":["UUID-Z"]}), vec![Z]),
        (json!({"callId":["UUID-X"]}), vec![X1, X2]),
        (json!({"callId":["UUID-Y","UUID-Z"]}), vec![Y, Z]),
        (json!({"deviceId":[d1]}), vec![X1, Y]),
        (json!({"deviceId":[d2]}), vec![X2, Z]),
        (json!({"deviceId":[d1, d2]}), vec![X1, X2, Y, Z]),
        (json!({"deviceId":[d2],"callId":["UUID-X"]}), vec![X2]),
        (json!({"deviceId":[d1],"callId":["UUID-X"]}), vec![X1]),
        (json!({"deviceId":[d1, d2],"callId":["UUID-Z"]}), vec![Z]),
        (json!({"deviceId":[d1],"callId":["UUID-Z"]}), vec![]),
        (
            json!({"deviceId":[d2],"callId":["UUID-X"],"dn":["7002"],"connId":["C1"],
                   "state":["Ringing","Established"]}),
            vec![X2],
        ),
        (json!({"deviceId":[d2],"dn":["7001"]}), vec![]),
        // Unknown values, and values of other members, select nothing.
        (json!({"callId":["UUID-Q"]}), vec![]),
        (json!({"callId":[d1]}), vec![]),
        (json!({"callId":["00000000000000c2"]}), vec![]),
        (
            json!({"deviceId":["00000000-0000-5000-8000-000000000000"]}),
            vec![],
        ),
        (json!({"deviceId":["7001"]}), vec![]),
        (json!({"deviceId":["UUID-Y"]}), vec![]),
        (json!({"deviceId":[C1]}), vec![]),
    ];
    ingest(&gateway, lines(&setup)).await;
    let mut clients = Vec::new();
    for (filter, want) in &cases {
        let mut ws = ws_connect(&gateway).await;
        let reply = subscribe(
            &mut ws,
            json!({"type":"subscribe","sub":"f","filter":filter}),
        )
        .await;
        assert_eq!(reply["seq"], 4, "{filter}: {reply}");
        assert_eq!(reply["resumed"], false, "{filter}: {reply}");
        let mut want_calls: Vec<_> = want
            .iter()
            .map(|&(dn, id, conn, state, _)| call(dn, id, conn, state))
            .collect();
        want_calls.sort();
        assert_eq!(call_set(&reply["calls"]), want_calls, "{filter}: snapshot");
        let rest = get_json(&gateway, &format!("/api/v2/calls?{}", query_of(filter)));
        assert_eq!(call_set(&rest["calls"]), want_calls, "{filter}: REST");
        clients.push(ws);
    }
    futures_util::future::join_all(
        clients
            .iter_mut()
            .map(|ws| expect_quiet(ws, "after the snapshot")),
    )
    .await;

    ingest(&gateway, lines(&answers)).await;
    let got = futures_util::future::join_all(
        clients
            .iter_mut()
            .zip(&cases)
            .map(|(ws, (_, want))| collect_notifications(ws, want.len())),
    )
    .await;
    for ((filter, want), got) in cases.iter().zip(got) {
        let mut want_notifications: Vec<_> = want
            .iter()
            .map(|&(dn, id, conn, _, seq)| status_change(seq, dn, id, conn, "Established"))
            .collect();
        want_notifications.sort();
        assert_eq!(briefs(&got), want_notifications, "{filter}: notifications");
        let mut want_calls: Vec<_> = want
            .iter()
            .map(|&(dn, id, conn, _, _)| call(dn, id, conn, "Established"))
            .collect();
        want_calls.sort();
        let rest = get_json(&gateway, &format!("/api/v2/calls?{}", query_of(filter)));
        assert_eq!(call_set(&rest["calls"]), want_calls, "{filter}: REST");
    }

    // A device's calls, and one call of a device, by path.
    let by_device = get_json(&gateway, &format!("/api/v2/devices/{d1}/calls"));
    assert_eq!(
        call_set(&by_device["calls"]),
        calls([
            call("7001", "UUID-X", C1, "Established"),
            call("7001", "UUID-Y", "00000000000000c2", "Established")
        ])
    );
    let one = get_json(&gateway, &format!("/api/v2/devices/{d2}/calls/UUID-X"));
    assert_eq!(
        call_set(&json!([one["call"]])),
        [call("7002", "UUID-X", C1, "Established")]
    );
    assert_eq!(
        gateway.get(&format!("/api/v2/devices/{d2}/calls/UUID-Y")).0,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_at_the_edges_of_a_history_of_three() {
    let _serial = support::exclusive().await;
    let gateway = Gateway::start(&["--history", "3"]);
    const RINGING_7003: &str = r#"{"event":"EventRinging","EventSequenceNumber":5,"TimeinSecs":106,"ConnID":"a3","ThisDN":"7003","OtherDN":"+14155550199"}"#;
    const ESTABLISHED_7003: &str = r#"{"event":"EventEstablished","EventSequenceNumber":6,"TimeinSecs":107,"ConnID":"a3","ThisDN":"7003","OtherDN":"+14155550199"}"#;
    const A3: &str = "00000000000000a3";
    let mut wallboard = ws_connect(&gateway).await;
    let subscribed = subscribe(&mut wallboard, json!({"type":"subscribe","sub":"all"})).await;
    let epoch = subscribed["epoch"].as_str().expect("epoch").to_owned();
    ingest(
        &gateway,
        lines(&[
            RINGING_7001,
            RINGING_7002,
            ESTABLISHED_7001,
            ESTABLISHED_7002,
            RINGING_7003,
        ]),
    )
    .await;
    let all = [
        status_change(1, "7001", A1, A1, "Ringing"),
        status_change(2, "7002", A2, A2, "Ringing"),
        status_change(3, "7001", A1, A1, "Established"),
        status_change(4, "7002", A2, A2, "Established"),
        status_change(5, "7003", A3, A3, "Ringing"),
        status_change(6, "7003", A3, A3, "Established"),
    ];
    assert_eq!(
        briefs(&collect_notifications(&mut wallboard, 5).await),
        all[..5]
    );
    let live_at_5 = calls([
        call("7001", A1, A1, "Established"),
        call("7002", A2, A2, "Established"),
        call("7003", A3, A3, "Ringing"),
    ]);
    let resume =
        |seq: u64| json!({"type":"subscribe","sub":"all","since":{"epoch":epoch,"seq":seq}});

    // Held: 3, 4, 5. After 2 (the oldest held − 1), every notification is held: resumed with exactly them.
    let mut after_2 = ws_connect(&gateway).await;
    let reply = subscribe(&mut after_2, resume(2)).await;
    assert_eq!(reply["resumed"], true, "{reply}");
    assert_eq!(reply["seq"], 5, "{reply}");
    assert!(reply.get("calls").is_none(), "{reply}");
    assert_eq!(
        briefs(&collect_notifications(&mut after_2, 3).await),
        all[2..5]
    );
    // After 1 (the oldest held − 2), notification 2 is gone: a snapshot.
    let mut after_1 = ws_connect(&gateway).await;
    let reply = subscribe(&mut after_1, resume(1)).await;
    assert_eq!(reply["resumed"], false, "{reply}");
    assert_eq!(reply["seq"], 5, "{reply}");
    assert_eq!(call_set(&reply["calls"]), live_at_5);
    // After 5 (the newest), nothing was missed: resumed, and nothing follows until a new event.
    let mut after_5 = ws_connect(&gateway).await;
    let reply = subscribe(&mut after_5, resume(5)).await;
    assert_eq!(reply["resumed"], true, "{reply}");
    assert_eq!(reply["seq"], 5, "{reply}");
    assert!(reply.get("calls").is_none(), "{reply}");
    // After 6 (past the newest): not a position of this run's stream yet, a snapshot.
    let mut after_6 = ws_connect(&gateway).await;
    let reply = subscribe(&mut after_6, resume(6)).await;
    assert_eq!(reply["resumed"], false, "{reply}");
    assert_eq!(reply["seq"], 5, "{reply}");
    assert_eq!(call_set(&reply["calls"]), live_at_5);
    futures_util::future::join_all(
        [&mut after_1, &mut after_5, &mut after_6]
            .into_iter()
            .map(|ws| expect_quiet(ws, "after the subscribed reply")),
    )
    .await;

    // One more event: every subscriber gets exactly it.
    ingest(&gateway, lines(&[ESTABLISHED_7003])).await;
    let got = futures_util::future::join_all(
        [
            &mut wallboard,
            &mut after_2,
            &mut after_1,
            &mut after_5,
            &mut after_6,
        ]
        .into_iter()
        .map(|ws| collect_notifications(ws, 1)),
    )
    .await;
    for got in got {
        assert_eq!(briefs(&got), all[5..]);
    }

    // The window moved on (held: 4, 5, 6): 3 resumes, 2 gets a snapshot.
    let mut after_3 = ws_connect(&gateway).await;
    let reply = subscribe(&mut after_3, resume(3)).await;
    assert_eq!(reply["resumed"], true, "{reply}");
    assert_eq!(reply["seq"], 6, "{reply}");
    assert_eq!(
        briefs(&collect_notifications(&mut after_3, 3).await),
        all[3..]
    );
    let mut again_2 = ws_connect(&gateway).await;
    let reply = subscribe(&mut again_2, resume(2)).await;
    assert_eq!(reply["resumed"], false, "{reply}");
    assert_eq!(reply["seq"], 6, "{reply}");
    assert_eq!(
        call_set(&reply["calls"]),
        calls([
            call("7001", A1, A1, "Established"),
            call("7002", A2, A2, "Established"),
            call("7003", A3, A3, "Established"),
        ])
    );
    expect_quiet(&mut again_2, "after the snapshot").await;
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
        call_set(&get_json(&gateway, "/api/v2/calls")["calls"]),
        calls([
            call("7001", A1, A1, "Ringing"),
            call("7002", A2, A2, "Ringing")
        ])
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

    // Both topics: fold --updates prints device notifications too, and every seq must arrive.
    let everything = json!({"type":"subscribe","sub":"all","topics":["calls","devices","queues"]});
    let mut stalled = ws_connect(&gateway).await;
    subscribe(&mut stalled, everything.clone()).await;
    let mut fast = ws_connect(&gateway).await;
    subscribe(&mut fast, everything).await;
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
    let seen = collect_notifications(&mut ws, 1).await;
    assert_eq!(briefs(&seen), [status_change(1, "7001", A1, A1, "Ringing")]);

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

/// The next text frame, as sent (10 s at most).
async fn next_text(ws: &mut Ws) -> String {
    support::next_text(ws, Duration::from_secs(10))
        .await
        .expect("a frame within 10 s")
}

/// Polls /metrics until `name` reaches `at_least`.
async fn wait_for_metric(gateway: &Gateway, name: &str, at_least: f64) {
    for _ in 0..200 {
        if gateway.metric(name).unwrap_or(0.0) >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} did not reach {at_least}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_packed_at_rest_read_back_byte_for_byte() {
    // The store and the history keep frames packed once the packer has been by: a resume must get the
    // very bytes the live clients got, and a snapshot and REST the very call documents.
    let _serial = support::exclusive().await;
    let gateway = Gateway::start(&[]);
    let mut live = ws_connect(&gateway).await;
    let everything = json!({"type":"subscribe","sub":"all","topics":["calls","devices","queues"]});
    let subscribed = subscribe(&mut live, everything.clone()).await;
    let epoch = subscribed["epoch"].as_str().expect("epoch").to_owned();
    // Agent states too: device frames are packed and resumed like call frames.
    let events = simulate(&["--seed", "11", "--agents", "40", "--events", "600"]);
    ingest(&gateway, events).await;
    let published = gateway
        .metric("callgate_notifications_total")
        .expect("callgate_notifications_total") as usize;
    assert!(published > 100, "{published} notifications");
    let mut frames = Vec::new();
    for _ in 0..published {
        frames.push(next_text(&mut live).await);
    }
    wait_for_metric(&gateway, "callgate_frames_packed_total", published as f64).await;

    let mut back = ws_connect(&gateway).await;
    let mut resume = everything;
    resume["since"] = json!({"epoch":epoch,"seq":0});
    let resumed = subscribe(&mut back, resume).await;
    assert_eq!(resumed["resumed"], true, "{resumed}");
    for (n, frame) in frames.iter().enumerate() {
        assert_eq!(&next_text(&mut back).await, frame, "notification {}", n + 1);
    }

    // The newest document of every call resource the live client saw (each party's device has its own
    // resource with the call's id), against the snapshot and REST.
    let resource = |call: &Value| (call["deviceUri"].to_string(), call["id"].to_string());
    let mut newest = std::collections::BTreeMap::new();
    let mut device_frames = 0;
    for frame in &frames {
        let value: Value = serde_json::from_str(frame).expect("JSON");
        let call = &value["data"]["call"];
        if call.is_null() {
            device_frames += 1;
            continue;
        }
        newest.insert(resource(call), call.clone());
    }
    assert!(device_frames > 0, "agent states among the frames");
    let (status, body) = gateway.get("/api/v2/calls");
    assert_eq!(status, 200);
    let listed: Value = serde_json::from_str(&body).expect("JSON");
    let listed = listed["calls"].as_array().expect("calls");
    assert!(!listed.is_empty());
    assert_eq!(listed.len(), newest.len(), "lingering calls too");
    for call in listed {
        assert_eq!(Some(call), newest.get(&resource(call)));
    }
    let mut fresh = ws_connect(&gateway).await;
    let snapshot = subscribe(&mut fresh, json!({"type":"subscribe","sub":"all"})).await;
    let snapshot = snapshot["calls"].as_array().expect("calls");
    let live_calls = newest
        .values()
        .filter(|call| call["state"] != "Released")
        .count();
    assert_eq!(snapshot.len(), live_calls);
    for call in snapshot {
        assert_eq!(Some(call), newest.get(&resource(call)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_notifications_share_the_stream_and_reach_only_device_subscribers() {
    let _serial = support::exclusive().await;
    let gateway = Gateway::start(&[]);
    ingest(
        &gateway,
        lines(&[
            r#"{"event":"EventAgentLogin","ThisDN":"7001","AgentID":"a1","AgentWorkMode":"AgentManualIn"}"#,
            RINGING_7001,
        ]),
    )
    .await;
    let mut desktop = ws_connect(&gateway).await;
    let both = subscribe(
        &mut desktop,
        json!({"type":"subscribe","sub":"me","topics":["calls","devices"],"filter":{"dn":["7001"]}}),
    )
    .await;
    assert_eq!(both["seq"], 2, "the login and the call, one stream");
    assert_eq!(both["calls"].as_array().map(Vec::len), Some(1));
    assert_eq!(both["devices"][0]["userState"]["state"], "Ready");
    assert_eq!(both["devices"][0]["agentId"], "a1");
    assert_eq!(both["devices"][0]["id"], device_of("7001"));
    let mut calls_only = ws_connect(&gateway).await;
    let plain = subscribe(&mut calls_only, json!({"type":"subscribe","sub":"all"})).await;
    assert!(plain.get("devices").is_none(), "{plain}");
    let mut other_dn = ws_connect(&gateway).await;
    subscribe(
        &mut other_dn,
        json!({"type":"subscribe","sub":"them","topics":["devices"],"filter":{"dn":["7002"]}}),
    )
    .await;

    ingest(
        &gateway,
        lines(&[
            r#"{"event":"EventAgentNotReady","ThisDN":"7001","AgentWorkMode":3,"Reasons":{"ReasonCode":"Wrap"}}"#,
            r#"{"event":"EventAgentNotReady","ThisDN":"7001","AgentWorkMode":3,"Reasons":{"ReasonCode":"Wrap"}}"#,
            ESTABLISHED_7001,
        ]),
    )
    .await;
    let mine = collect_notifications(&mut desktop, 2).await;
    assert_eq!(seqs(&mine), [3, 4], "a repeated state changes nothing");
    assert_eq!(mine[0]["channel"], "/v2/me/devices");
    assert_eq!(mine[0]["data"]["messageType"], "DeviceStateChangeMessage");
    assert_eq!(
        mine[0]["data"]["devices"][0]["userState"],
        json!({"id":"NotReady-AfterCallWork","displayName":"After Call Work","state":"NotReady","workMode":"AfterCallWork","reason":"Wrap"})
    );
    assert_eq!(mine[1]["channel"], "/v2/me/calls");
    let calls = collect_notifications(&mut calls_only, 1).await;
    assert_eq!(
        seqs(&calls),
        [4],
        "a calls subscription gets no device notification"
    );
    expect_quiet(&mut other_dn, "for another DN's device").await;

    send(
        &mut other_dn,
        json!({"type":"subscribe","sub":"q","topics":["weather"]}),
    )
    .await;
    let refused = next_json(&mut other_dn, Duration::from_secs(10))
        .await
        .expect("an error");
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["sub"], "q");
    assert_eq!(refused["code"], "bad-request");
}
