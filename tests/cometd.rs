//! CometD long-polling at `/api/v2/notifications` (gws.md), black-box, with raw Bayeux messages: every
//! error row, the held and the immediate connect, scope per channel, the ack extension, limits and expiry.
//! (`tests/cometd_client.rs` runs the official JavaScript client against it.)

mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{Gateway, http_request_with_body, ingest, temp_dir};

/// agent1 (7001, billing), agent2 (7002, billing), boss (supervisor of billing); password "pw".
fn access_file(dir: &Path) -> PathBuf {
    support::two_agents_and_a_boss(dir, "billing")
}

fn start() -> (Gateway, PathBuf) {
    let dir = temp_dir("cometd");
    let access = access_file(&dir);
    (
        Gateway::start(&["--access", access.to_str().expect("path")]),
        dir,
    )
}

/// One long-polling request: HTTP status and the parsed body.
fn post(gateway: &Gateway, path: &str, body: &str) -> (u16, Value) {
    let (status, _, body) = http_request_with_body(
        &gateway.http,
        "POST",
        path,
        &[("Content-Type", "application/json;charset=UTF-8")],
        body,
    );
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Bayeux messages in one request; the reply array.
fn bayeux(gateway: &Gateway, messages: Value) -> Vec<Value> {
    let (status, body) = post(gateway, "/api/v2/notifications", &messages.to_string());
    assert_eq!(status, 200, "{body}");
    body.as_array().cloned().expect("a reply array")
}

/// A session of `user` (password "pw" in the handshake's `ext.authentication`), with or without acks.
fn handshake(gateway: &Gateway, user: &str, acks: bool) -> String {
    let mut ext = json!({"authentication": {"user": user, "password": "pw"}});
    if acks {
        ext["ack"] = true.into();
    }
    let reply = bayeux(
        gateway,
        json!([{"id":"1","channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"],"ext":ext}]),
    );
    assert_eq!(reply[0]["successful"], true, "{reply:?}");
    assert_eq!(reply[0]["id"], "1");
    assert_eq!(
        reply[0]["supportedConnectionTypes"],
        json!(["long-polling"])
    );
    assert_eq!(reply[0]["advice"]["maxInterval"], 10000);
    let client = reply[0]["clientId"].as_str().expect("clientId").to_owned();
    assert_eq!(client.len(), 32, "128 bits");
    let first = bayeux(
        gateway,
        json!([{"id":"2","channel":"/meta/connect","clientId":client,"connectionType":"long-polling","advice":{"timeout":0}}]),
    );
    assert_eq!(
        first,
        vec![json!({"id":"2","channel":"/meta/connect","successful":true})]
    );
    client
}

fn subscribe(gateway: &Gateway, client: &str, subscription: Value) -> Value {
    let reply = bayeux(
        gateway,
        json!([{"id":"s","channel":"/meta/subscribe","clientId":client,"subscription":subscription}]),
    );
    assert_eq!(reply[0]["subscription"], subscription, "echoed as sent");
    reply[0].clone()
}

/// A connect (held until messages come); the messages before its reply, and the reply.
fn connect(gateway: &Gateway, client: &str, ack: Option<u64>) -> (Vec<Value>, Value) {
    let mut message = json!({"id":"c","channel":"/meta/connect","clientId":client,"connectionType":"long-polling"});
    if let Some(ack) = ack {
        message["ext"] = json!({"ack": ack});
    }
    let mut reply = bayeux(gateway, json!([message]));
    let last = reply.pop().expect("the connect reply");
    assert_eq!(last["channel"], "/meta/connect", "{last}");
    (reply, last)
}

fn states(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            let data = &m["data"];
            let what = if data["call"].is_object() {
                data["call"]["state"].as_str().unwrap_or("?").to_owned()
            } else {
                data["devices"][0]["userState"]["state"]
                    .as_str()
                    .unwrap_or("?")
                    .to_owned()
            };
            format!("{} {what}", m["channel"].as_str().unwrap_or("?"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_devices_on_v2_me_the_team_on_callgate_nothing_of_others() {
    let (gateway, _dir) = start();
    let ann = handshake(&gateway, "agent1", false);
    assert_eq!(
        subscribe(&gateway, &ann, json!("/v2/me/*"))["successful"],
        true
    );
    let bob = handshake(&gateway, "agent2", false);
    subscribe(&gateway, &bob, json!(["/v2/me/calls", "/v2/me/devices"]));
    let boss = handshake(&gateway, "boss", false);
    let team = subscribe(
        &gateway,
        &boss,
        json!(["/callgate/calls", "/callgate/devices"]),
    );
    assert_eq!(team["successful"], true, "{team}");

    ingest(
        &gateway,
        br#"{"event":"EventAgentLogin","ThisDN":"7001","AgentID":"a1","AgentWorkMode":1}
{"event":"EventRinging","ConnID":"1","ThisDN":"7001"}
{"event":"EventEstablished","ConnID":"1","ThisDN":"7001"}
"#
        .to_vec(),
    )
    .await;
    let (mine, reply) = connect(&gateway, &ann, None);
    assert_eq!(reply["successful"], true);
    assert_eq!(
        states(&mine),
        [
            "/v2/me/devices Ready",
            "/v2/me/calls Ringing",
            "/v2/me/calls Established"
        ],
        "in the order produced"
    );
    assert_eq!(mine[1]["data"]["messageType"], "CallStateChangeMessage");
    assert_eq!(mine[0]["data"]["messageType"], "DeviceStateChangeMessage");
    let (seen, _) = connect(&gateway, &boss, None);
    assert_eq!(
        states(&seen),
        [
            "/callgate/devices Ready",
            "/callgate/calls Ringing",
            "/callgate/calls Established"
        ]
    );
    let agent1 = callgate::api::gws::user_id("agent1");
    assert!(seen.iter().all(|m| m["data"]["userId"] == agent1.as_str()));
    // agent2 has nothing: its held connect comes back empty when a newer one supersedes it.
    let gateway_http = gateway.http.clone();
    let bob2 = bob.clone();
    let held = std::thread::spawn(move || {
        let (status, _, body) = http_request_with_body(
            &gateway_http,
            "POST",
            "/api/v2/notifications/connect",
            &[("Content-Type", "application/json")],
            &json!([{"id":"h","channel":"/meta/connect","clientId":bob2,"connectionType":"long-polling"}]).to_string(),
        );
        (status, body, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(500));
    let newer = bayeux(
        &gateway,
        json!([{"id":"n","channel":"/meta/connect","clientId":bob,"connectionType":"long-polling","advice":{"timeout":0}}]),
    );
    let answered = Instant::now();
    let (status, body, at) = held.join().expect("held connect");
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        body,
        json!([{"id":"h","channel":"/meta/connect","successful":true}])
    );
    assert!(
        at.duration_since(answered) < Duration::from_secs(2)
            || answered.duration_since(at) < Duration::from_secs(2)
    );
    assert_eq!(newer.len(), 1, "nothing of agent1 for agent2: {newer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_row_of_gws_md() {
    let (gateway, _dir) = start();
    let url = "/api/v2/notifications";
    // Content type, body shape, size and count.
    let (status, _, _) = http_request_with_body(
        &gateway.http,
        "POST",
        url,
        &[("Content-Type", "text/plain")],
        "[]",
    );
    assert_eq!(status, 415);
    for body in [
        "not json".to_owned(),
        "42".to_owned(),
        "[1]".to_owned(),
        "[]".to_owned(),
        format!("[{}]", vec![r#"{"channel":"/meta/connect"}"#; 65].join(",")),
        format!(
            r#"[{{"channel":"/meta/handshake","pad":"{}"}}]"#,
            "x".repeat(70_000)
        ),
    ] {
        let (status, reply) = post(&gateway, url, &body);
        assert_eq!(status, 400, "{} bytes: {reply}", body.len());
    }
    // Handshakes without valid credentials.
    for ext in [
        json!({}),
        json!({"authentication": {"user": "agent1", "password": "wrong"}}),
        json!({"authentication": {"user": "nobody", "password": "pw"}}),
        json!({"authentication": {"token": "not-a-jwt"}}),
    ] {
        let reply = bayeux(
            &gateway,
            json!([{"id":"h","channel":"/meta/handshake","version":"1.0","ext":ext}]),
        );
        assert_eq!(
            reply[0],
            json!({"id":"h","channel":"/meta/handshake","successful":false,"error":"403::handshake_denied","advice":{"reconnect":"none"}}),
            "{ext}"
        );
    }
    // Unknown sessions, publishing, channels nobody or only supervisors may read, malformed names.
    for channel in [
        "/meta/connect",
        "/meta/subscribe",
        "/meta/unsubscribe",
        "/meta/disconnect",
    ] {
        let reply = bayeux(
            &gateway,
            json!([{"id":"u","channel":channel,"clientId":"0123456789abcdef0123456789abcdef","subscription":"/v2/me/calls"}]),
        );
        assert_eq!(reply[0]["error"], "402::session_unknown", "{channel}");
        assert_eq!(
            reply[0]["advice"],
            json!({"reconnect":"handshake","interval":0})
        );
    }
    let ann = handshake(&gateway, "agent1", false);
    let published = bayeux(
        &gateway,
        json!([{"id":"p","channel":"/v2/me/calls","clientId":ann,"data":{"x":1}}]),
    );
    assert_eq!(published[0]["error"], "403::publish_denied");
    assert_eq!(
        subscribe(&gateway, &ann, json!("/callgate/calls"))["error"],
        "403::subscribe_denied",
        "an agent reads only its own"
    );
    assert_eq!(
        subscribe(&gateway, &ann, json!("/some/other"))["error"],
        "403::subscribe_denied"
    );
    assert_eq!(
        subscribe(&gateway, &ann, json!("v2/me/calls"))["error"],
        "403::subscription_invalid"
    );
    // At most 32 subscriptions a session (the same name twice counts once).
    assert_eq!(
        subscribe(&gateway, &ann, json!("/v2/me/calls"))["successful"],
        true
    );
    assert_eq!(
        subscribe(&gateway, &ann, json!("/v2/me/calls"))["successful"],
        true
    );
    let boss = handshake(&gateway, "boss", false);
    let names: Vec<String> = ["/v2/me/calls", "/v2/me/devices", "/v2/me/*", "/v2/me/**"]
        .iter()
        .chain(["/callgate/calls", "/callgate/devices"].iter())
        .map(|s| (*s).to_owned())
        .collect();
    assert_eq!(subscribe(&gateway, &boss, json!(names))["successful"], true);
    // All or nothing: a refused name in an array leaves none of it subscribed.
    let partial = handshake(&gateway, "boss", false);
    let refused = subscribe(
        &gateway,
        &partial,
        json!(["/callgate/calls", "/some/other"]),
    );
    assert_eq!(refused["successful"], false);
    ingest(
        &gateway,
        br#"{"event":"EventRinging","ConnID":"77","ThisDN":"7001"}
"#
        .to_vec(),
    )
    .await;
    let nothing = bayeux(
        &gateway,
        json!([{"id":"n","channel":"/meta/connect","clientId":partial,"connectionType":"long-polling","advice":{"timeout":0}}]),
    );
    assert_eq!(nothing.len(), 1, "nothing was subscribed: {nothing:?}");
    // Another site's page may not use CometD, whatever credentials it carries.
    let (status, _, _) = http_request_with_body(
        &gateway.http,
        "POST",
        url,
        &[
            ("Content-Type", "application/json"),
            ("Origin", "https://evil.example"),
        ],
        r#"[{"channel":"/meta/handshake","version":"1.0","ext":{"authentication":{"user":"agent1","password":"pw"}}}]"#,
    );
    assert_eq!(status, 403);
    // Disconnect ends the session.
    let bye = bayeux(
        &gateway,
        json!([{"id":"d","channel":"/meta/disconnect","clientId":ann}]),
    );
    assert_eq!(
        bye[0],
        json!({"id":"d","channel":"/meta/disconnect","successful":true})
    );
    let (_, after) = connect(&gateway, &ann, None);
    assert_eq!(after["error"], "402::session_unknown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_messages_in_one_request_and_the_ack_extension() {
    let (gateway, _dir) = start();
    let handshaken = bayeux(
        &gateway,
        json!([{"id":"1","channel":"/meta/handshake","version":"1.0","ext":{"ack":true,"authentication":{"user":"agent1","password":"pw"}}}]),
    );
    assert_eq!(handshaken[0]["ext"], json!({"ack": true}));
    let client = handshaken[0]["clientId"]
        .as_str()
        .expect("clientId")
        .to_owned();
    // Subscribe twice and connect at once, in one request: each answered, the connect last.
    let replies = bayeux(
        &gateway,
        json!([
            {"id":"a","channel":"/meta/subscribe","clientId":client,"subscription":"/v2/me/calls"},
            {"id":"b","channel":"/meta/connect","clientId":client,"connectionType":"long-polling","advice":{"timeout":0}},
            {"id":"c","channel":"/meta/subscribe","clientId":client,"subscription":"/v2/me/devices"},
        ]),
    );
    let ids: Vec<&str> = replies.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, ["a", "c", "b"]);
    assert!(
        replies.iter().all(|r| r["successful"] == true),
        "{replies:?}"
    );

    ingest(
        &gateway,
        br#"{"event":"EventRinging","ConnID":"1","ThisDN":"7001"}
"#
        .to_vec(),
    )
    .await;
    let (first, reply) = connect(&gateway, &client, Some(0));
    assert_eq!(states(&first), ["/v2/me/calls Ringing"]);
    let batch = reply["ext"]["ack"].as_u64().expect("a batch number");
    ingest(
        &gateway,
        br#"{"event":"EventEstablished","ConnID":"1","ThisDN":"7001"}
"#
        .to_vec(),
    )
    .await;
    // Not acknowledged: the batch comes again, with what came since.
    let (again, reply) = connect(&gateway, &client, Some(batch - 1));
    assert_eq!(
        states(&again),
        ["/v2/me/calls Ringing", "/v2/me/calls Established"]
    );
    let batch = reply["ext"]["ack"].as_u64().expect("a batch number");
    // Acknowledged: nothing is sent again.
    let replies = bayeux(
        &gateway,
        json!([{"id":"z","channel":"/meta/connect","clientId":client,"connectionType":"long-polling","advice":{"timeout":0},"ext":{"ack":batch}}]),
    );
    assert_eq!(replies.len(), 1, "{replies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_without_connects_and_a_users_ninth_ends_its_oldest() {
    let (gateway, _dir) = start();
    // A session whose client goes away in the middle of a held connect expires too.
    let gone = handshake(&gateway, "boss", false);
    {
        use std::io::Write;
        let mut socket = std::net::TcpStream::connect(&gateway.http).expect("connect");
        let body = json!([{"id":"g","channel":"/meta/connect","clientId":gone,"connectionType":"long-polling"}]).to_string();
        write!(
            socket,
            "POST /api/v2/notifications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("request");
        std::thread::sleep(Duration::from_millis(300));
    }
    let first = handshake(&gateway, "agent1", false);
    let others: Vec<String> = (0..8)
        .map(|_| handshake(&gateway, "agent1", false))
        .collect();
    // The ninth session of agent1 ended the least recently active one.
    let (_, reply) = connect(&gateway, &first, None);
    assert_eq!(reply["error"], "402::session_unknown");
    // The others expire 10 s (maxInterval) after their last connect.
    std::thread::sleep(Duration::from_secs(12));
    for client in others.iter().chain([&gone]) {
        let (_, reply) = connect(&gateway, client, None);
        assert_eq!(reply["error"], "402::session_unknown", "expired");
    }
    assert_eq!(gateway.metric("callgate_cometd_sessions"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_contact_center_session_sends_the_users_devices_to_its_sessions() {
    let (gateway, _dir) = start();
    let client = handshake(&gateway, "agent1", false);
    subscribe(&gateway, &client, json!("/v2/me/devices"));
    let other = handshake(&gateway, "agent2", false);
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "agent1:pw")
    );
    let (status, _, body) = http_request_with_body(
        &gateway.http,
        "POST",
        "/api/v2/me",
        &[
            ("Authorization", &basic),
            ("Content-Type", "application/json"),
        ],
        r#"{"operationName":"StartContactCenterSession","channels":["voice"]}"#,
    );
    assert_eq!((status, body.as_str()), (200, r#"{"statusCode":0}"#));
    let (messages, _) = connect(&gateway, &client, None);
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["channel"], "/v2/me/devices");
    assert_eq!(
        messages[0]["data"]["messageType"],
        "DeviceStateChangeMessage"
    );
    let devices = messages[0]["data"]["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["phoneNumber"], "7001");
    assert_eq!(devices[0]["userState"]["state"], "LoggedOut");
    let theirs = bayeux(
        &gateway,
        json!([{"id":"o","channel":"/meta/connect","clientId":other,"connectionType":"long-polling","advice":{"timeout":0}}]),
    );
    assert_eq!(
        theirs.len(),
        1,
        "another user's session gets nothing: {theirs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_falls_four_bounds_behind_is_ended_and_told_to_handshake() {
    let (gateway, _dir) = start();
    let boss = handshake(&gateway, "boss", false);
    subscribe(&gateway, &boss, json!("/callgate/calls"));
    // 4,500 calls at agent1's DN, none read: more distinct calls than coalescing can fold (4,000).
    let mut events = String::new();
    for n in 1..=4_500 {
        events.push_str(&format!(
            "{{\"event\":\"EventRinging\",\"ConnID\":\"{n:x}\",\"ThisDN\":\"7001\"}}\n"
        ));
    }
    ingest(&gateway, events.into_bytes()).await;
    let (messages, reply) = connect(&gateway, &boss, None);
    assert!(messages.is_empty());
    assert_eq!(reply["error"], "402::session_unknown", "{reply}");
    assert_eq!(reply["advice"]["reconnect"], "handshake");
    // A fresh session works: the client re-reads state over REST and goes on.
    let again = handshake(&gateway, "boss", false);
    assert_eq!(
        subscribe(&gateway, &again, json!("/callgate/calls"))["successful"],
        true
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_access_file_rescopes_a_live_session() {
    let (gateway, dir) = start();
    let boss = handshake(&gateway, "boss", false);
    subscribe(&gateway, &boss, json!("/callgate/calls"));
    // agent1 (the first user) leaves billing for sales: its DN is no longer in the boss's scope.
    let access = dir.join("access.toml");
    let text = std::fs::read_to_string(&access).expect("access file");
    std::fs::write(
        &access,
        text.replacen("team = \"billing\"", "team = \"sales\"", 1),
    )
    .expect("rewrite");
    gateway.hangup();
    std::thread::sleep(Duration::from_millis(500));
    // A connect after the reload makes the subscription anew with the new scope.
    let _ = bayeux(
        &gateway,
        json!([{"id":"r","channel":"/meta/connect","clientId":boss,"connectionType":"long-polling","advice":{"timeout":0}}]),
    );
    ingest(
        &gateway,
        br#"{"event":"EventRinging","ConnID":"1","ThisDN":"7001"}
{"event":"EventRinging","ConnID":"2","ThisDN":"7002"}
"#
        .to_vec(),
    )
    .await;
    let replies = bayeux(
        &gateway,
        json!([{"id":"q","channel":"/meta/connect","clientId":boss,"connectionType":"long-polling","advice":{"timeout":0}}]),
    );
    // agent2 is still in billing: its call comes, agent1's does not.
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(replies[0]["data"]["phoneNumber"], "7002");
    assert_eq!(
        replies[0]["data"]["userId"],
        callgate::api::gws::user_id("agent2").as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_websocket_a_frame_is_a_request_and_a_bad_one_closes_with_1008() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (gateway, _dir) = start();
    let url = format!("ws://{}/api/v2/notifications", gateway.http);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("upgrade");
    let handshake = json!([{"id":"1","channel":"/meta/handshake","version":"1.0",
        "supportedConnectionTypes":["websocket","long-polling"],
        "ext":{"authentication":{"user":"agent1","password":"pw"}}}]);
    ws.send(Message::text(handshake.to_string()))
        .await
        .expect("send");
    let reply = ws.next().await.expect("a frame").expect("ok");
    let reply: Value = serde_json::from_str(reply.to_text().expect("text")).expect("JSON");
    assert_eq!(reply[0]["successful"], true, "{reply}");
    assert_eq!(
        reply[0]["supportedConnectionTypes"],
        json!(["websocket", "long-polling"])
    );
    let client = reply[0]["clientId"].as_str().expect("clientId").to_owned();
    let connect = json!([{"id":"2","channel":"/meta/connect","clientId":client,"connectionType":"websocket","advice":{"timeout":0}}]);
    ws.send(Message::text(connect.to_string()))
        .await
        .expect("send");
    let reply = ws.next().await.expect("a frame").expect("ok");
    let reply: Value = serde_json::from_str(reply.to_text().expect("text")).expect("JSON");
    assert_eq!(
        reply,
        json!([{"id":"2","channel":"/meta/connect","successful":true}])
    );
    ws.send(Message::text("not json")).await.expect("send");
    match ws.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1008),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// A response: status, lowercase headers, body.
type Response = (u16, Vec<(String, String)>, String);

/// One keep-alive HTTP/1.1 connection, read response by response (`Content-Length` bodies).
struct KeepAlive {
    stream: std::net::TcpStream,
    unread: Vec<u8>,
}

impl KeepAlive {
    fn open(gateway: &Gateway) -> KeepAlive {
        let stream = std::net::TcpStream::connect(&gateway.http).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(40)))
            .expect("timeout");
        KeepAlive {
            stream,
            unread: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.stream.write_all(bytes).expect("request written");
    }

    /// The next response: status, lowercase headers, body. `None` at the end of the connection.
    fn response(&mut self) -> Option<Response> {
        let head_end = loop {
            if let Some(at) = self.unread.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            if self.fill() == 0 {
                return None;
            }
        };
        let head = String::from_utf8(self.unread[..head_end].to_vec()).expect("UTF-8 head");
        let mut lines = head.lines();
        let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = support::header(&headers, "content-length")?.parse().ok()?;
        while self.unread.len() < head_end + 4 + length {
            assert!(self.fill() > 0, "the body was cut short");
        }
        let body = String::from_utf8(self.unread[head_end + 4..head_end + 4 + length].to_vec())
            .expect("UTF-8 body");
        self.unread.drain(..head_end + 4 + length);
        Some((status, headers, body))
    }

    fn fill(&mut self) -> usize {
        use std::io::Read;
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).unwrap_or(0);
        self.unread.extend_from_slice(&chunk[..n]);
        n
    }
}

/// A long-polling request's bytes.
fn long_poll_request(body: &Value, extra_headers: &str) -> Vec<u8> {
    let body = body.to_string();
    format!(
        "POST /api/v2/notifications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json;charset=UTF-8\r\n{extra_headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_keep_alive_connection_carries_split_and_pipelined_requests_then_rest() {
    let gateway = Gateway::start(&[]);
    let mut connection = KeepAlive::open(&gateway);
    connection.send(&long_poll_request(
        &json!([{"id":"1","channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}]),
        "",
    ));
    let (status, headers, body) = connection.response().expect("handshake reply");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        support::header(&headers, "content-type"),
        Some("application/json;charset=UTF-8")
    );
    assert!(support::header(&headers, "date").is_some(), "{headers:?}");
    let reply: Value = serde_json::from_str(&body).expect("JSON");
    let client = reply[0]["clientId"].as_str().expect("clientId").to_owned();

    // A request that arrives in pieces: head, the rest of the head, the body.
    let first = long_poll_request(
        &json!([{"id":"2","channel":"/meta/connect","clientId":client,"connectionType":"long-polling","advice":{"timeout":0}}]),
        "",
    );
    for piece in [&first[..20], &first[20..60], &first[60..]] {
        connection.send(piece);
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, _, body) = connection.response().expect("connect reply");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON"),
        json!([{"id":"2","channel":"/meta/connect","successful":true}])
    );

    // Two requests in one write: answered in order.
    let mut pipelined = long_poll_request(
        &json!([{"id":"3","channel":"/meta/subscribe","clientId":client,"subscription":"/callgate/calls"}]),
        "",
    );
    pipelined.extend(long_poll_request(
        &json!([{"id":"4","channel":"/meta/unsubscribe","clientId":client,"subscription":"/callgate/calls"}]),
        "",
    ));
    connection.send(&pipelined);
    for id in ["3", "4"] {
        let (status, _, body) = connection.response().expect("pipelined reply");
        assert_eq!(status, 200);
        let reply: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(reply[0]["id"], id);
        assert_eq!(reply[0]["successful"], true, "{reply}");
    }

    // Another route on the same connection: hyper takes it from there, and long-polling still works.
    connection.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let (status, _, _) = connection.response().expect("health reply");
    assert_eq!(status, 200);
    connection.send(&long_poll_request(
        &json!([{"id":"5","channel":"/meta/disconnect","clientId":client}]),
        "",
    ));
    let (status, _, body) = connection.response().expect("disconnect reply");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON")[0]["successful"],
        true
    );

    // `Connection: close` is honoured: the reply says so and the connection ends.
    let mut closing = KeepAlive::open(&gateway);
    closing.send(&long_poll_request(
        &json!([{"id":"6","channel":"/meta/connect","clientId":"nobody"}]),
        "Connection: close\r\n",
    ));
    let (status, headers, body) = closing.response().expect("reply");
    assert_eq!(status, 200);
    assert!(body.contains("402::session_unknown"), "{body}");
    assert_eq!(support::header(&headers, "connection"), Some("close"));
    assert!(closing.response().is_none(), "closed after the reply");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_connect_is_answered_at_its_timeout_and_at_shutdown() {
    let gateway = Gateway::start(&[]);
    let open_session = |connection: &mut KeepAlive| {
        connection.send(&long_poll_request(
            &json!([{"channel":"/meta/handshake","version":"1.0"}]),
            "",
        ));
        let (_, _, body) = connection.response().expect("handshake reply");
        let reply: Value = serde_json::from_str(&body).expect("JSON");
        reply[0]["clientId"].as_str().expect("clientId").to_owned()
    };
    let held = |client: &str| {
        long_poll_request(
            &json!([{"id":"h","channel":"/meta/connect","clientId":client,"connectionType":"long-polling"}]),
            "",
        )
    };
    // Nothing to deliver: the connect is answered after its 30 s (the sweeper wakes it, within a second
    // or two), with an empty successful reply.
    let mut waiting = KeepAlive::open(&gateway);
    let client = open_session(&mut waiting);
    let started = Instant::now();
    waiting.send(&held(&client));
    let (status, _, body) = waiting.response().expect("connect reply");
    let waited = started.elapsed();
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON"),
        json!([{"id":"h","channel":"/meta/connect","successful":true}])
    );
    assert!(
        waited >= Duration::from_secs(29) && waited < Duration::from_secs(33),
        "held {waited:?}"
    );
    // At shutdown a held connect is answered at once and its connection closed; the gateway exits 0.
    waiting.send(&held(&client));
    std::thread::sleep(Duration::from_millis(300));
    let stopping = Instant::now();
    let status = gateway.terminate();
    assert!(status.success(), "{status:?}");
    let (code, headers, body) = waiting.response().expect("the held connect's reply");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""successful":true"#), "{body}");
    assert!(stopping.elapsed() < Duration::from_secs(5));
    assert_eq!(support::header(&headers, "connection"), None);
    assert!(waiting.response().is_none(), "closed after the reply");
}

/// Issue 15: `/callgate/queues` carries every queue notification to a supervisor (gws.md's table); an
/// agent is refused it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callgate_queues_brings_queue_notifications_to_supervisors_only() {
    let (gateway, _dir) = start();
    let ann = handshake(&gateway, "agent1", false);
    assert_eq!(
        subscribe(&gateway, &ann, json!("/callgate/queues"))["error"],
        "403::subscribe_denied"
    );
    let boss = handshake(&gateway, "boss", false);
    assert_eq!(
        subscribe(
            &gateway,
            &boss,
            json!(["/callgate/queues", "/callgate/calls"])
        )["successful"],
        true
    );
    ingest(
        &gateway,
        br#"{"event":"EventQueued","ConnID":"5","CallUUID":"Q5","ThisDN":"8001","TimeinSecs":1763900000}
{"event":"EventDiverted","ConnID":"5","ThisDN":"8001","ThirdPartyDN":"7001","TimeinSecs":1763900030}
{"event":"EventRinging","ConnID":"5","ThisDN":"7001","TimeinSecs":1763900030}
"#
        .to_vec(),
    )
    .await;
    let (seen, _) = connect(&gateway, &boss, None);
    let channels: Vec<&str> = seen.iter().filter_map(|m| m["channel"].as_str()).collect();
    assert_eq!(
        channels,
        ["/callgate/queues", "/callgate/queues", "/callgate/calls"],
        "in the order produced: {seen:?}"
    );
    assert_eq!(seen[0]["data"]["messageType"], "QueueStateChangeMessage");
    assert_eq!(seen[0]["data"]["queue"]["waiting"][0]["callId"], "Q5");
    assert!(
        seen[0]["data"].get("userId").is_none(),
        "a queue has no owner"
    );
    let today = &seen[1]["data"]["queue"]["today"];
    assert_eq!(
        (today["diverted"].as_u64(), today["serviceLevel"].as_f64()),
        (Some(1), Some(0.0)),
        "waited 30 s"
    );
}
