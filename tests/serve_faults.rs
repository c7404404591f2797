//! Black-box tests of the bounds and faults of `callgate serve` (issue: the serving core re-founded): the
//! call bound refused visibly, stale calls released, slow or silent peers that must not hold resources.

mod support;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{Gateway, Ws, ingest, next_json};
use tokio_tungstenite::tungstenite::Message;

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
        gateway.metric("callgate_events_total{outcome=\"dropped\"}"),
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
    assert_eq!(gateway.metric("callgate_calls_expired_total"), Some(1.0));
    assert_eq!(gateway.metric("callgate_live_calls"), Some(0.0));
    assert!(
        next_json(&mut ws, Duration::from_millis(1500))
            .await
            .is_none(),
        "released once"
    );
}

/// Reads from `stream` until the gateway closes it; the time that took, or `None` if still open after
/// `wait`.
fn closed_within(stream: &mut std::net::TcpStream, wait: Duration) -> Option<Duration> {
    use std::io::Read;
    let started = std::time::Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    while started.elapsed() < wait {
        match stream.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(started.elapsed());
            }
            Err(_) => {}
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_clients_that_send_no_headers_are_closed_after_ten_seconds() {
    use std::io::Write;
    let _serial = support::exclusive().await;
    let gateway = Gateway::start(&[]);
    let http = gateway.http.clone();
    let closed = tokio::task::spawn_blocking(move || {
        let mut silent = std::net::TcpStream::connect(&http).expect("connect");
        let mut slow = std::net::TcpStream::connect(&http).expect("connect");
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: callgate\r\n")
            .expect("write");
        let slow_closed = closed_within(&mut slow, Duration::from_secs(15));
        let silent_closed = closed_within(&mut silent, Duration::from_secs(2));
        (slow_closed, silent_closed)
    })
    .await
    .expect("client thread");
    let (slow, silent) = closed;
    let slow = slow.expect("a client sending half its headers is closed");
    assert!(
        slow >= Duration::from_secs(9),
        "closed after {slow:?}, before 10 s"
    );
    assert!(silent.is_some(), "a client sending nothing is closed too");
    // The gateway still serves others.
    assert_eq!(gateway.get("/healthz").0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_past_the_limit_wait_until_one_closes() {
    use std::io::{Read, Write};
    let _serial = support::exclusive().await;
    let gateway = Gateway::start(&["--max-http-connections", "2"]);
    let http = gateway.http.clone();
    let (waited, answered) = tokio::task::spawn_blocking(move || {
        let first = std::net::TcpStream::connect(&http).expect("connect");
        let _second = std::net::TcpStream::connect(&http).expect("connect");
        std::thread::sleep(Duration::from_millis(200));
        let mut third = std::net::TcpStream::connect(&http).expect("the backlog takes it");
        third
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: callgate\r\nConnection: close\r\n\r\n")
            .expect("write");
        third
            .set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let mut buf = [0u8; 1024];
        let waited = third.read(&mut buf).is_err();
        drop(first);
        third
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut reply = Vec::new();
        let _ = third.read_to_end(&mut reply);
        (waited, String::from_utf8_lossy(&reply).into_owned())
    })
    .await
    .expect("client thread");
    assert!(
        waited,
        "the third connection is not served while two are open"
    );
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_client_that_never_reads_its_replies_loses_its_slot() {
    use std::io::Write;
    let _serial = support::exclusive().await;
    let gateway = Gateway::start(&["--max-ingest-connections", "1"]);
    // Bad lines, each answered by an error line, never read: the replies fill both sockets' buffers.
    let mut deaf = std::net::TcpStream::connect(&gateway.ingest).expect("connect");
    deaf.set_write_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let flood = std::thread::spawn(move || {
        let chunk = b"x\n".repeat(32 * 1024);
        for _ in 0..64 {
            if deaf.write_all(&chunk).is_err() {
                break;
            }
        }
        deaf
    });
    let ingest = gateway.ingest.clone();
    let started = std::time::Instant::now();
    let accepted_after = tokio::task::spawn_blocking(move || {
        let line = b"{\"event\":\"EventRinging\",\"ConnID\":\"1\",\"ThisDN\":\"7001\",\"EventSequenceNumber\":1}\n";
        while started.elapsed() < Duration::from_secs(40) {
            std::thread::sleep(Duration::from_millis(500));
            // A refused connection is closed at once (perhaps reset): only an ack counts.
            let Ok(mut stream) = std::net::TcpStream::connect(&ingest) else {
                continue;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = stream.write_all(line);
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let mut replies = String::new();
            let _ = std::io::Read::read_to_string(&mut stream, &mut replies);
            if replies.contains("\"ack\":1,") {
                return Some(started.elapsed());
            }
        }
        None
    })
    .await
    .expect("client thread");
    let _deaf = flood.join().expect("flood thread");
    let after = accepted_after.expect("the slot came back");
    assert!(
        after >= Duration::from_secs(5),
        "accepted after {after:?}: the flood held no slot?"
    );
}

/// `count` calls ringing at 500 DNs, one line each.
fn ringing_calls(count: u64) -> Vec<u8> {
    let mut lines = Vec::new();
    for n in 1..=count {
        lines.extend(
            format!(
                "{{\"event\":\"EventRinging\",\"ConnID\":\"{n:x}\",\"ThisDN\":\"{}\",\"OtherDN\":\"{}\"}}\n",
                7000 + n % 500,
                80000 + n
            )
            .bytes(),
        );
    }
    lines
}

/// Reads a snapshot to its last chunk: the calls' ids, and the frames' types and `more` flags.
async fn read_snapshot(ws: &mut Ws) -> (Vec<String>, Vec<(String, bool)>) {
    let mut ids = Vec::new();
    let mut frames = Vec::new();
    loop {
        let frame = next_json(ws, Duration::from_secs(30))
            .await
            .expect("a snapshot frame");
        let more = frame["more"].as_bool().expect("more");
        frames.push((frame["type"].as_str().unwrap_or("").to_owned(), more));
        for call in frame["calls"].as_array().expect("calls") {
            ids.push(call["id"].as_str().unwrap_or("").to_owned());
        }
        if !more {
            return (ids, frames);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_all_calls_subscriber_gets_forty_thousand_calls_in_chunks_and_a_long_resume() {
    let _serial = support::exclusive().await;
    let gateway = Gateway::start(&[]);
    // Subscribed before anything happens: its position is seq 0.
    let mut early = subscribe_all(&gateway).await;
    let replies = ingest(&gateway, ringing_calls(40_000)).await;
    assert_eq!(
        replies.last().map(|r| r["applied"].clone()),
        Some(json!(40_000))
    );

    // A snapshot of 40,000 calls: 40 frames of 1,000.
    let (mut ws, _) = tokio_tungstenite::connect_async(gateway.ws_url())
        .await
        .expect("WebSocket connects");
    ws.send(Message::text(
        json!({"type": "subscribe", "sub": "wall"}).to_string(),
    ))
    .await
    .expect("send");
    let (ids, frames) = read_snapshot(&mut ws).await;
    assert_eq!(frames.len(), 40);
    assert_eq!(frames[0], ("subscribed".to_owned(), true));
    assert!(
        frames[1..39]
            .iter()
            .all(|f| *f == ("snapshot".to_owned(), true))
    );
    assert_eq!(frames[39], ("snapshot".to_owned(), false));
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((ids.len(), unique.len()), (40_000, 40_000));

    // The early subscriber read nothing while 40,000 distinct calls were published to it: past the hard
    // bound it was closed with 4008. Resuming from its last seq (0) then brings all 40,000, paced by
    // the reader, instead of overflowing again.
    assert_eq!(close_code(&mut early).await, Some(4008));
    let epoch = frame_epoch(&gateway).await;
    let (mut resumed, _) = tokio_tungstenite::connect_async(gateway.ws_url())
        .await
        .expect("WebSocket connects");
    let request = json!({"type": "subscribe", "sub": "again", "since": {"epoch": epoch, "seq": 0}});
    resumed
        .send(Message::text(request.to_string()))
        .await
        .expect("send");
    let reply = next_json(&mut resumed, Duration::from_secs(10))
        .await
        .expect("subscribed");
    assert_eq!(reply["resumed"], true, "{reply}");
    for seq in 1..=40_000u64 {
        let frame = next_json(&mut resumed, Duration::from_secs(30))
            .await
            .expect("missed notification");
        assert_eq!(frame["seq"], seq);
    }
    // Both connections are still open and live.
    ingest(
        &gateway,
        b"{\"event\":\"EventEstablished\",\"ConnID\":\"1\",\"ThisDN\":\"7001\"}\n".to_vec(),
    )
    .await;
    for socket in [&mut ws, &mut resumed] {
        let frame = next_json(socket, Duration::from_secs(10))
            .await
            .expect("the next notification");
        assert_eq!(frame["seq"], 40_001);
    }
}

/// The run's epoch, from a fresh subscription's reply.
async fn frame_epoch(gateway: &Gateway) -> String {
    let (mut probe, _) = tokio_tungstenite::connect_async(gateway.ws_url())
        .await
        .expect("WebSocket connects");
    let request = json!({"type": "subscribe", "sub": "probe", "filter": {"dn": ["none"]}});
    probe
        .send(Message::text(request.to_string()))
        .await
        .expect("send");
    let reply = next_json(&mut probe, Duration::from_secs(10))
        .await
        .expect("subscribed");
    reply["epoch"].as_str().expect("epoch").to_owned()
}

/// The code of the close frame that ends `ws`, skipping anything before it.
async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .ok()??
        {
            Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

#[test]
fn a_reducer_shard_that_dies_takes_the_gateway_down_with_a_non_zero_exit() {
    // The orchestrator restarts a gateway that exits; one that lost a shard but stayed up and ready
    // would hold its calls' events forever. The fault is injected into the debug binary only
    // (`supervise::fault_point`): a shard panics on an event for DN 6666.
    use std::io::{Read, Write};
    let mut gateway = Gateway::spawn(
        &[],
        &[("CALLGATE_INJECT_FAULT", "shard:6666")],
        std::process::Stdio::piped(),
    );
    assert_eq!(gateway.get("/readyz").0, 200);

    let mut feeder = std::net::TcpStream::connect(&gateway.ingest).expect("ingest connects");
    feeder
        .write_all(
            b"{\"event\":\"EventRinging\",\"ConnID\":\"a1\",\"ThisDN\":\"7001\"}\n\
              {\"event\":\"EventRinging\",\"ConnID\":\"a2\",\"ThisDN\":\"6666\"}\n",
        )
        .expect("events written");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = gateway.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway stayed up without its shard"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1), "{status:?}");
    let mut stderr = String::new();
    gateway
        .child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr read");
    assert!(
        stderr.contains("reducer shard") && stderr.contains("injected fault at shard:6666"),
        "the cause is logged: {stderr}"
    );
}
