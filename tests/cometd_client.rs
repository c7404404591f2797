//! The official CometD JavaScript client (npm `cometd` in Node, `tests/cometd-client/harness.mjs`) against
//! `callgate serve`, exactly as GWS 8.5 applications use it: Basic login on `/api/v2/me`, the cookie riding
//! along, long-polling, `/v2/me/*` subscribed at every handshake. The same harness runs against the
//! reference server `cometd-nodejs-server` to show that the harness speaks Bayeux as it expects.
//!
//! Needs `node` and `npm ci` in `tests/cometd-client` (scripts/test-all.sh runs it): without them these
//! tests fail, naming what is missing.

mod support;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::{Gateway, http_request_with_body, ingest, temp_dir};

const WAIT: Duration = Duration::from_secs(15);

/// The folder of the Node test tools, checked to be installed.
fn client_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cometd-client");
    assert!(
        dir.join("node_modules/cometd").is_dir(),
        "the CometD client is not installed: run `npm ci` in {} (scripts/test-all.sh does)",
        dir.display()
    );
    dir
}

/// A Node script of `tests/cometd-client`, fed commands and read as JSON lines.
struct Node {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<Value>,
}

impl Node {
    fn start(script: &str) -> Node {
        let dir = client_dir();
        let mut child = Command::new("node")
            .arg(dir.join(script))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("node must be installed to run {script}: {error}"));
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(value) => {
                        if tx.send(value).is_err() {
                            return;
                        }
                    }
                    // The client's own log (COMETD_LOG=debug), for a failing test's output.
                    Err(_) => eprintln!("node: {line}"),
                }
            }
        });
        Node {
            child,
            stdin,
            lines,
        }
    }

    fn send(&mut self, command: Value) {
        writeln!(self.stdin, "{command}").expect("command sent");
    }

    /// The next line, within [`WAIT`].
    fn next(&self) -> Value {
        self.lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no output from node within {WAIT:?}"))
    }

    /// The next line that is an `event` other than those in `skip`.
    fn expect(&self, event: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no {event:?} event within {WAIT:?}"));
            if line["event"] == event {
                return line;
            }
            assert_ne!(line["event"], "error", "{line}");
        }
    }

    /// The next `count` messages received.
    fn messages(&self, count: usize) -> Vec<Value> {
        (0..count).map(|_| self.expect("message")).collect()
    }

    /// Fails when anything but connect noise arrives within `quiet`.
    fn quiet(&self, quiet: Duration) {
        if let Ok(line) = self.lines.recv_timeout(quiet) {
            panic!("nothing more expected, got {line}");
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// agent1 (7001, billing), agent2 (7002, sales), boss (supervisor of billing); password "pw".
fn access_file(dir: &Path) -> PathBuf {
    support::two_agents_and_a_boss(dir, "sales")
}

/// What a test checks of a message: its channel, and the call's state or the device's agent state.
fn brief(message: &Value) -> String {
    let data = &message["data"];
    let what = if data["call"].is_object() {
        format!(
            "{} {}",
            data["messageType"].as_str().unwrap_or("?"),
            data["call"]["state"].as_str().unwrap_or("?")
        )
    } else {
        format!(
            "{} {}",
            data["messageType"].as_str().unwrap_or("?"),
            data["devices"][0]["userState"]["state"]
                .as_str()
                .unwrap_or("?")
        )
    };
    format!("{} {what}", message["channel"].as_str().unwrap_or("?"))
}

/// A harness logged in as `user` with Basic on `/api/v2/me` (its cookie then rides along), started on
/// `channels` with the ack extension.
fn logged_in(gateway: &Gateway, user: &str, channels: &[&str]) -> (Node, Value) {
    let mut node = Node::start("harness.mjs");
    node.send(json!({"cmd":"login","url":format!("http://{}/api/v2/me", gateway.http),"user":user,"password":"pw"}));
    let login = node.expect("login");
    assert_eq!(login["status"], 200, "{login}");
    assert_eq!(login["user"], user);
    assert_eq!(login["cookie"], true, "a session cookie");
    node.send(
        json!({"cmd":"start","url":format!("http://{}/api/v2/notifications", gateway.http),
        "transport":"long-polling","ack":true,"channels":channels}),
    );
    let handshake = node.expect("handshake");
    assert_eq!(handshake["successful"], true, "{handshake}");
    assert_eq!(handshake["ack"], true, "the ack extension negotiated");
    assert_eq!(handshake["transport"], "long-polling");
    (node, handshake)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gws_style_client_follows_its_calls_and_agent_state_over_long_polling() {
    let dir = temp_dir("cometd-client");
    let access = access_file(&dir);
    let gateway = Gateway::start(&["--access", access.to_str().expect("path")]);

    let (ann, handshake) = logged_in(&gateway, "agent1", &["/v2/me/*"]);
    let ann_client = handshake["clientId"].as_str().expect("clientId").to_owned();
    assert_eq!(ann.expect("subscribed")["successful"], true);
    let (bob, _) = logged_in(&gateway, "agent2", &["/v2/me/*", "/callgate/calls"]);
    let mut refused = [bob.expect("subscribed"), bob.expect("subscribed")];
    refused.sort_by_key(|r| r["channel"].to_string());
    assert_eq!(refused[0]["channel"], "/callgate/calls");
    assert_eq!(refused[0]["successful"], false);
    assert_eq!(
        refused[0]["error"], "403::subscribe_denied",
        "an agent reads only its own"
    );
    assert_eq!(refused[1]["successful"], true);
    // The supervisor sends its credentials in the handshake, as a Node client must over WebSocket.
    let mut boss = Node::start("harness.mjs");
    boss.send(
        json!({"cmd":"start","url":format!("http://{}/api/v2/notifications", gateway.http),
        "transport":"long-polling","ack":false,"channels":["/callgate/calls","/callgate/devices"],
        "ext":{"authentication":{"user":"boss","password":"pw"}}}),
    );
    assert_eq!(boss.expect("handshake")["successful"], true);
    assert_eq!(boss.expect("subscribed")["successful"], true);
    assert_eq!(boss.expect("subscribed")["successful"], true);

    ingest(
        &gateway,
        br#"{"event":"EventAgentLogin","ThisDN":"7001","AgentID":"a1","AgentWorkMode":"AgentManualIn"}
{"event":"EventRinging","ConnID":"1","ThisDN":"7001","OtherDN":"+14155550100"}
{"event":"EventEstablished","ConnID":"1","ThisDN":"7001","OtherDN":"+14155550100"}
{"event":"EventRinging","ConnID":"2","ThisDN":"7002"}
"#
        .to_vec(),
    )
    .await;
    let mine: Vec<String> = ann.messages(3).iter().map(brief).collect();
    assert_eq!(
        mine,
        [
            "/v2/me/devices DeviceStateChangeMessage Ready",
            "/v2/me/calls CallStateChangeMessage Ringing",
            "/v2/me/calls CallStateChangeMessage Established"
        ]
    );
    let team = boss.messages(3);
    assert_eq!(
        team.iter().map(brief).collect::<Vec<_>>(),
        [
            "/callgate/devices DeviceStateChangeMessage Ready",
            "/callgate/calls CallStateChangeMessage Ringing",
            "/callgate/calls CallStateChangeMessage Established"
        ],
        "billing's only"
    );
    let agent1 = callgate::api::gws::user_id("agent1");
    assert!(team.iter().all(|m| m["data"]["userId"] == agent1.as_str()));
    let theirs: Vec<String> = bob.messages(1).iter().map(brief).collect();
    assert_eq!(theirs, ["/v2/me/calls CallStateChangeMessage Ringing"]);
    bob.quiet(Duration::from_millis(500));

    // The session ends on the server (here a disconnect of its clientId from elsewhere): the client is
    // told 402::session_unknown, handshakes again, subscribes again, and goes on.
    let (status, _, body) = http_request_with_body(
        &gateway.http,
        "POST",
        "/api/v2/notifications/disconnect",
        &[("Content-Type", "application/json")],
        &json!([{"channel":"/meta/disconnect","clientId":ann_client}]).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let failed = ann.expect("connect");
    assert_eq!(failed["error"], "402::session_unknown");
    assert_eq!(
        ann.expect("handshake")["successful"],
        true,
        "handshaken again"
    );
    assert_eq!(
        ann.expect("subscribed")["successful"],
        true,
        "subscribed again"
    );
    ingest(
        &gateway,
        br#"{"event":"EventReleased","ConnID":"1","ThisDN":"7001"}
"#
        .to_vec(),
    )
    .await;
    let after: Vec<String> = ann.messages(1).iter().map(brief).collect();
    assert_eq!(after, ["/v2/me/calls CallStateChangeMessage Released"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_harness_speaks_bayeux_as_the_reference_server_expects() {
    let mut oracle = Node::start("oracle.mjs");
    let url = oracle.next()["url"]
        .as_str()
        .expect("oracle URL")
        .to_owned();
    let mut client = Node::start("harness.mjs");
    client.send(json!({"cmd":"start","url":url,"transport":"long-polling","ack":true,"channels":["/v2/me/*"]}));
    let handshake = client.expect("handshake");
    assert_eq!(handshake["successful"], true, "{handshake}");
    assert_eq!(handshake["ack"], true);
    assert_eq!(client.expect("subscribed")["successful"], true);
    // Two more channels in one batch: one request.
    client.send(json!({"cmd":"subscribe","channels":["/callgate/calls","/callgate/devices"]}));
    assert_eq!(client.expect("subscribed")["successful"], true);
    assert_eq!(client.expect("subscribed")["successful"], true);
    for (channel, data) in [
        (
            "/v2/me/devices",
            json!({"messageType":"DeviceStateChangeMessage","devices":[{"userState":{"state":"Ready"}}]}),
        ),
        (
            "/v2/me/calls",
            json!({"messageType":"CallStateChangeMessage","call":{"state":"Ringing"}}),
        ),
        (
            "/v2/me/calls",
            json!({"messageType":"CallStateChangeMessage","call":{"state":"Established"}}),
        ),
    ] {
        oracle.send(json!({"cmd":"publish","channel":channel,"data":data}));
        assert_eq!(oracle.next()["event"], "published");
    }
    let got: Vec<String> = client.messages(3).iter().map(brief).collect();
    assert_eq!(
        got,
        [
            "/v2/me/devices DeviceStateChangeMessage Ready",
            "/v2/me/calls CallStateChangeMessage Ringing",
            "/v2/me/calls CallStateChangeMessage Established"
        ]
    );
    client.quiet(Duration::from_millis(500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_over_websocket_with_credentials_in_the_handshake() {
    let dir = temp_dir("cometd-client-ws");
    let access = access_file(&dir);
    let gateway = Gateway::start(&["--access", access.to_str().expect("path")]);
    let mut ann = Node::start("harness.mjs");
    ann.send(
        json!({"cmd":"start","url":format!("http://{}/api/v2/notifications", gateway.http),
        "transport":"websocket","ack":true,"channels":["/v2/me/*"],
        "ext":{"authentication":{"user":"agent1","password":"pw"}}}),
    );
    let handshake = ann.expect("handshake");
    assert_eq!(handshake["successful"], true, "{handshake}");
    assert_eq!(handshake["transport"], "websocket");
    assert_eq!(handshake["ack"], true);
    assert_eq!(ann.expect("subscribed")["successful"], true);
    let mut boss = Node::start("harness.mjs");
    boss.send(
        json!({"cmd":"start","url":format!("http://{}/api/v2/notifications", gateway.http),
        "transport":"websocket","ack":false,"channels":["/callgate/calls"],
        "ext":{"authentication":{"user":"boss","password":"pw"}}}),
    );
    assert_eq!(boss.expect("handshake")["transport"], "websocket");
    assert_eq!(boss.expect("subscribed")["successful"], true);
    let mut wrong = Node::start("harness.mjs");
    wrong.send(
        json!({"cmd":"start","url":format!("http://{}/api/v2/notifications", gateway.http),
        "transport":"websocket","channels":["/v2/me/*"],
        "ext":{"authentication":{"user":"agent1","password":"wrong"}}}),
    );
    let refused = wrong.expect("handshake");
    assert_eq!(refused["successful"], false);
    assert_eq!(refused["error"], "403::handshake_denied");

    ingest(
        &gateway,
        br#"{"event":"EventAgentLogin","ThisDN":"7001","AgentID":"a1","AgentWorkMode":"AgentManualIn"}
{"event":"EventRinging","ConnID":"1","ThisDN":"7001","OtherDN":"+14155550100"}
{"event":"EventEstablished","ConnID":"1","ThisDN":"7001","OtherDN":"+14155550100"}
{"event":"EventRinging","ConnID":"2","ThisDN":"7002"}
"#
        .to_vec(),
    )
    .await;
    let mine: Vec<String> = ann.messages(3).iter().map(brief).collect();
    assert_eq!(
        mine,
        [
            "/v2/me/devices DeviceStateChangeMessage Ready",
            "/v2/me/calls CallStateChangeMessage Ringing",
            "/v2/me/calls CallStateChangeMessage Established"
        ]
    );
    ann.quiet(Duration::from_millis(500));
    let team: Vec<String> = boss.messages(2).iter().map(brief).collect();
    assert_eq!(
        team,
        [
            "/callgate/calls CallStateChangeMessage Ringing",
            "/callgate/calls CallStateChangeMessage Established"
        ]
    );
    boss.quiet(Duration::from_millis(500));
    let _ = std::fs::remove_dir_all(&dir);
}
