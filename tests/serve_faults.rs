//! Black-box tests of the bounds and faults of `callgate serve` (issue: the serving core re-founded): the
//! call bound refused visibly, stale calls released, slow or silent peers that must not hold resources.

mod support;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use support::{Gateway, Ingest};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

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

async fn subscribe_all(gateway: &Gateway) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(gateway.ws_url())
        .await
        .expect("WebSocket connects");
    let request = json!({"type": "subscribe", "sub": "all"});
    ws.send(Message::text(request.to_string()))
        .await
        .expect("send");
    let reply = next_json(&mut ws, Duration::from_secs(10)).await;
    assert_eq!(reply.map(|r| r["type"].clone()), Some(json!("subscribed")));
    ws
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

/// The value of one sample of `/metrics` (name with its labels, as printed), if present.
fn metric(gateway: &Gateway, sample: &str) -> Option<f64> {
    let (status, body) = gateway.get("/metrics");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_calls_new_calls_are_refused_visibly() {
    let _serial = support::exclusive().await;
    let gateway = Gateway::start(&["--max-calls", "2", "--shards", "1"]);
    let mut lines = Vec::new();
    for n in 1..=5 {
        lines.extend(
            format!(
                "{{\"event\":\"EventRinging\",\"ConnID\":\"{n}\",\"ThisDN\":\"700{n}\",\"EventSequenceNumber\":{n}}}\n"
            )
            .bytes(),
        );
    }
    // A call already held still takes its events at the bound.
    lines.extend(
        b"{\"event\":\"EventEstablished\",\"ConnID\":\"1\",\"ThisDN\":\"7001\",\"EventSequenceNumber\":6}\n",
    );
    let replies = ingest(&gateway, lines).await;
    assert_eq!(
        replies.last(),
        Some(&json!({"ack": 6, "applied": 3, "duplicates": 0, "rejected": 0, "dropped": 3})),
        "{replies:?}"
    );
    assert_eq!(
        metric(&gateway, "callgate_events_total{outcome=\"dropped\"}"),
        Some(3.0)
    );
    let (_, body) = gateway.get("/api/v2/calls");
    let calls: Value = serde_json::from_str(&body).expect("JSON");
    let states: Vec<&str> = calls["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .filter_map(|c| c["state"].as_str())
        .collect();
    assert_eq!(states, ["Established", "Ringing"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_silent_past_stale_call_after_is_released_to_subscribers() {
    let _serial = support::exclusive().await;
    let gateway = Gateway::start(&["--stale-call-after", "1"]);
    let mut ws = subscribe_all(&gateway).await;
    let replies = ingest(
        &gateway,
        b"{\"event\":\"EventEstablished\",\"ConnID\":\"a1\",\"ThisDN\":\"7001\",\"OtherDN\":\"7002\"}\n"
            .to_vec(),
    )
    .await;
    assert_eq!(replies.last().map(|r| r["applied"].clone()), Some(json!(1)));
    let established = next_json(&mut ws, Duration::from_secs(5))
        .await
        .expect("a notification");
    assert_eq!(established["data"]["call"]["state"], "Established");
    // Released between 1 and about 2 s later (a shard looks once a second).
    let released = next_json(&mut ws, Duration::from_secs(5))
        .await
        .expect("the release");
    assert_eq!(released["seq"], 2);
    assert_eq!(released["data"]["notificationType"], "StatusChange");
    assert_eq!(released["data"]["call"]["state"], "Released");
    assert_eq!(released["data"]["call"]["capabilities"], json!([]));
    assert_eq!(metric(&gateway, "callgate_calls_expired_total"), Some(1.0));
    assert_eq!(metric(&gateway, "callgate_live_calls"), Some(0.0));
    assert!(
        next_json(&mut ws, Duration::from_millis(1500))
            .await
            .is_none(),
        "released once"
    );
}
