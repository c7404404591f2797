//! Identity and access (access.md), black-box: the real binary with an access file, asked as agent
//! desktops, supervisors' wallboards and browsers ask it, with tokens made by a real JWT library.

mod support;

use futures_util::SinkExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{Gateway, header, http_request, ingest, next_json};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "a-test-secret-of-at-least-32-bytes-long";
const WAIT: Duration = Duration::from_secs(5);

fn hash(password: &str) -> String {
    callgate::access::password::hash(password.as_bytes()).expect("hash")
}

/// Users: two agents (7001 in team billing, 7002 in team sales), a billing supervisor, a supervisor
/// without a team, an admin. DN 7003 belongs to nobody.
fn access_file(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("jwt.secret"), format!("{SECRET}\n")).expect("secret");
    let text = format!(
        r#"
[[user]]
username = "agent1"
password = "{agent1}"
roles = ["agent"]
devices = ["7001"]
team = "billing"
first_name = "Ann"

[[user]]
username = "agent2"
roles = ["agent"]
devices = ["7002"]
team = "sales"

[[user]]
username = "boss"
roles = ["supervisor"]
team = "billing"

[[user]]
username = "chief"
roles = ["supervisor"]

[[user]]
username = "root"
roles = ["admin"]

[jwt]
hs256_secret_file = "jwt.secret"
audience = "callgate"
"#,
        agent1 = hash("agent1-password"),
    );
    let path = dir.join("access.toml");
    std::fs::write(&path, text).expect("access file");
    path
}

fn token_with(claims: serde_json::Value, key: &[u8]) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(key),
    )
    .expect("token")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn token(user: &str) -> String {
    token_with(
        serde_json::json!({"sub": user, "aud": "callgate", "exp": now() + 600}),
        SECRET.as_bytes(),
    )
}

/// One established call at each of DNs 7001, 7002 and 7003.
fn three_calls() -> Vec<u8> {
    let mut lines = String::new();
    for (n, dn) in [(1, "7001"), (2, "7002"), (3, "7003")] {
        lines.push_str(&format!(
            "{{\"event\":\"EventEstablished\",\"ConnID\":\"00000000000000{n:02x}\",\"ThisDN\":\"{dn}\",\"OtherDN\":\"+14155550100\"}}\n"
        ));
    }
    lines.into_bytes()
}

fn started(dir: &Path) -> Gateway {
    let access = access_file(dir);
    Gateway::start(&["--access", access.to_str().expect("path")])
}

fn get(gateway: &Gateway, path: &str, headers: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let (status, _, body) = http_request(&gateway.http, "GET", path, headers);
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// The DNs of the calls `/api/v2/calls` shows `user`.
fn visible_dns(gateway: &Gateway, user: &str) -> Vec<String> {
    let bearer = format!("Bearer {}", token(user));
    let (status, body) = get(gateway, "/api/v2/calls", &[("Authorization", &bearer)]);
    assert_eq!(status, 200, "{user}: {body}");
    let mut dns: Vec<String> = body["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .filter_map(|call| {
            let uri = call["deviceUri"].as_str()?;
            ["7001", "7002", "7003"]
                .into_iter()
                .find(|dn| uri.ends_with(&callgate::reduce::device_id("", dn)))
                .map(str::to_owned)
        })
        .collect();
    dns.sort();
    dns
}

#[tokio::test]
async fn each_role_sees_its_scope_on_rest_and_nothing_else_exists_for_it() {
    let _guard = support::exclusive().await;
    let gateway = started(&support::temp_dir("roles"));
    ingest(&gateway, three_calls()).await;
    assert_eq!(visible_dns(&gateway, "agent1"), ["7001"]);
    assert_eq!(visible_dns(&gateway, "agent2"), ["7002"]);
    assert_eq!(visible_dns(&gateway, "boss"), ["7001"], "the billing team");
    assert_eq!(
        visible_dns(&gateway, "chief"),
        ["7001", "7002"],
        "every user's"
    );
    assert_eq!(visible_dns(&gateway, "root"), ["7001", "7002", "7003"]);

    // Out of scope is answered exactly as unknown.
    let bearer = format!("Bearer {}", token("agent1"));
    let theirs = callgate::reduce::device_id("", "7002");
    let unknown = callgate::reduce::device_id("", "7999");
    let (out_status, out_body) = get(
        &gateway,
        &format!("/api/v2/devices/{theirs}/calls"),
        &[("Authorization", &bearer)],
    );
    let (unknown_status, unknown_body) = get(
        &gateway,
        &format!("/api/v2/devices/{unknown}/calls"),
        &[("Authorization", &bearer)],
    );
    assert_eq!((out_status, unknown_status), (404, 404));
    assert_eq!(
        out_body["statusMessage"]
            .as_str()
            .map(|m| m.replace(&theirs, "X")),
        unknown_body["statusMessage"]
            .as_str()
            .map(|m| m.replace(&unknown, "X"))
    );
    let (status, body) = get(&gateway, "/api/v2/devices", &[("Authorization", &bearer)]);
    assert_eq!(status, 200);
    assert_eq!(body["devices"].as_array().map(Vec::len), Some(1));
    assert!(
        gateway
            .metric("callgate_access_denied_total{door=\"rest\",reason=\"out_of_scope\"}")
            .is_some_and(|n| n >= 1.0)
    );
}

#[tokio::test]
async fn bad_or_missing_credentials_are_a_401_that_asks_for_a_bearer_token() {
    let _guard = support::exclusive().await;
    let gateway = started(&support::temp_dir("tokens"));
    let wrong_key = b"another-secret-that-is-also-32-bytes-long";
    let cases = [
        ("no credentials", None),
        (
            "expired",
            Some(token_with(
                serde_json::json!({"sub": "agent1", "aud": "callgate", "exp": now() - 3600}),
                SECRET.as_bytes(),
            )),
        ),
        (
            "wrong key",
            Some(token_with(
                serde_json::json!({"sub": "agent1", "aud": "callgate", "exp": now() + 600}),
                wrong_key,
            )),
        ),
        (
            "unknown user",
            Some(token_with(
                serde_json::json!({"sub": "nobody", "aud": "callgate", "exp": now() + 600}),
                SECRET.as_bytes(),
            )),
        ),
        (
            "wrong audience",
            Some(token_with(
                serde_json::json!({"sub": "agent1", "aud": "other", "exp": now() + 600}),
                SECRET.as_bytes(),
            )),
        ),
        (
            "no exp",
            Some(token_with(
                serde_json::json!({"sub": "agent1", "aud": "callgate"}),
                SECRET.as_bytes(),
            )),
        ),
        ("alg none", Some(alg_none("agent1"))),
        ("garbage", Some("not.a.token".to_owned())),
    ];
    for (case, token) in cases {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer
            .as_deref()
            .map(|b| vec![("Authorization", b)])
            .unwrap_or_default();
        let (status, head, body) = http_request(&gateway.http, "GET", "/api/v2/calls", &headers);
        assert_eq!(status, 401, "{case}");
        assert_eq!(
            header(&head, "www-authenticate"),
            Some("Bearer realm=\"callgate\""),
            "{case}"
        );
        assert_eq!(
            body, r#"{"statusCode":20,"statusMessage":"Access denied"}"#,
            "{case}"
        );
    }
    // Health and metrics stay open.
    assert_eq!(gateway.get("/healthz").0, 200);
    assert_eq!(gateway.get("/readyz").0, 200);
    assert!(
        gateway
            .metric("callgate_access_denied_total{door=\"rest\",reason=\"token\"}")
            .is_some_and(|n| n >= 5.0)
    );
}

/// A token signed with nothing, claiming `alg: none`.
fn alg_none(user: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = b64.encode(
        serde_json::json!({"sub": user, "aud": "callgate", "exp": now() + 600})
            .to_string()
            .as_bytes(),
    );
    format!("{header}.{claims}.")
}

#[tokio::test]
async fn a_basic_login_opens_a_session_whose_cookie_works_alone() {
    use base64::Engine;
    let _guard = support::exclusive().await;
    let gateway = started(&support::temp_dir("basic"));
    ingest(&gateway, three_calls()).await;
    let basic = |user: &str, password: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    };
    let right = basic("agent1", "agent1-password");
    let (status, head, _) = http_request(
        &gateway.http,
        "GET",
        "/api/v2/calls",
        &[("Authorization", &right)],
    );
    assert_eq!(status, 200);
    let cookie = header(&head, "set-cookie").expect("a session cookie");
    assert!(cookie.starts_with("JSESSIONID="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/")
    );
    assert_eq!(header(&head, "x-csrf-header"), Some("X-CSRF-TOKEN"));
    assert_eq!(header(&head, "x-csrf-token").map(str::len), Some(32));
    let session = cookie.split(';').next().expect("name=value");
    let (status, _, body) = http_request(
        &gateway.http,
        "GET",
        "/api/v2/calls",
        &[("Cookie", session)],
    );
    assert_eq!(status, 200);
    let calls: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        calls["calls"].as_array().map(Vec::len),
        Some(1),
        "agent1's scope"
    );
    // Wrong password, unknown user, no password login: the same 401.
    for wrong in [
        basic("agent1", "nope"),
        basic("ghost", "agent1-password"),
        basic("agent2", ""),
    ] {
        let (status, head, _) = http_request(
            &gateway.http,
            "GET",
            "/api/v2/calls",
            &[("Authorization", &wrong)],
        );
        assert_eq!(status, 401);
        assert!(header(&head, "set-cookie").is_none());
    }
    let (status, _, _) = http_request(
        &gateway.http,
        "GET",
        "/api/v2/calls",
        &[("Cookie", "JSESSIONID=00000000000000000000000000000000")],
    );
    assert_eq!(status, 401, "an unknown session");
}

#[tokio::test]
async fn ten_failed_logins_in_a_minute_are_answered_429() {
    use base64::Engine;
    let _guard = support::exclusive().await;
    let gateway = started(&support::temp_dir("throttle"));
    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("agent1:wrong")
    );
    for attempt in 0..10 {
        let (status, _, _) = http_request(
            &gateway.http,
            "GET",
            "/api/v2/calls",
            &[("Authorization", &wrong)],
        );
        assert_eq!(status, 401, "attempt {attempt}");
    }
    let right = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("agent1:agent1-password")
    );
    let (status, _, _) = http_request(
        &gateway.http,
        "GET",
        "/api/v2/calls",
        &[("Authorization", &right)],
    );
    assert_eq!(
        status, 429,
        "the address is refused for the rest of the minute"
    );
}

async fn ws_connect(gateway: &Gateway, headers: &[(&str, &str)]) -> Result<support::Ws, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = gateway.ws_url().into_client_request().expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                .expect("name"),
            value.parse().expect("value"),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(other) => panic!("WebSocket connect: {other}"),
    }
}

async fn close_code(ws: &mut support::Ws) -> Option<u16> {
    use futures_util::StreamExt;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => {}
            _ => return None,
        }
    }
}

#[tokio::test]
async fn a_websocket_authenticates_by_first_frame_and_sees_its_scope_only() {
    let _guard = support::exclusive().await;
    let gateway = started(&support::temp_dir("ws"));
    ingest(&gateway, three_calls()).await;
    let mut ws = ws_connect(&gateway, &[]).await.expect("upgrade");
    let auth = serde_json::json!({"type": "auth", "token": token("agent2")});
    ws.send(Message::text(auth.to_string()))
        .await
        .expect("auth");
    let reply = next_json(&mut ws, WAIT).await.expect("authenticated");
    assert_eq!(
        reply,
        serde_json::json!({"type": "authenticated", "user": "agent2"})
    );
    // A filter naming devices out of scope matches nothing; the unfiltered snapshot is the scope.
    let subscribe = serde_json::json!({"type": "subscribe", "sub": "all"});
    ws.send(Message::text(subscribe.to_string()))
        .await
        .expect("subscribe");
    let subscribed = next_json(&mut ws, WAIT).await.expect("subscribed");
    let calls = subscribed["calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 1, "{subscribed}");
    let theirs = serde_json::json!({"type": "subscribe", "sub": "theirs", "filter": {"dn": ["7001", "7003"]}});
    ws.send(Message::text(theirs.to_string()))
        .await
        .expect("subscribe");
    let subscribed = next_json(&mut ws, WAIT).await.expect("subscribed");
    assert_eq!(
        subscribed["calls"].as_array().map(Vec::len),
        Some(0),
        "{subscribed}"
    );
    // Notifications follow the scope: a change at 7001 never arrives, one at 7002 does.
    let changes = "{\"event\":\"EventAttachedDataChanged\",\"ConnID\":\"0000000000000001\",\"ThisDN\":\"7001\",\"UserData\":{\"k\":\"1\"}}\n{\"event\":\"EventAttachedDataChanged\",\"ConnID\":\"0000000000000002\",\"ThisDN\":\"7002\",\"UserData\":{\"k\":\"2\"}}\n";
    ingest(&gateway, changes.as_bytes().to_vec()).await;
    let notification = next_json(&mut ws, WAIT).await.expect("a notification");
    assert_eq!(notification["type"], "notification");
    assert_eq!(
        notification["data"]["call"]["userData"]["k"], "2",
        "{notification}"
    );
    assert!(
        next_json(&mut ws, Duration::from_millis(500))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn a_websocket_without_credentials_is_closed_4001() {
    let _guard = support::exclusive().await;
    let gateway = started(&support::temp_dir("ws4001"));
    // Silent for 5 s.
    let mut silent = ws_connect(&gateway, &[]).await.expect("upgrade");
    assert_eq!(close_code(&mut silent).await, Some(4001));
    // Something else first.
    let mut eager = ws_connect(&gateway, &[]).await.expect("upgrade");
    eager
        .send(Message::text(r#"{"type":"subscribe","sub":"a"}"#))
        .await
        .expect("send");
    assert_eq!(close_code(&mut eager).await, Some(4001));
    // A bad token in the first frame.
    let mut forged = ws_connect(&gateway, &[]).await.expect("upgrade");
    let auth = serde_json::json!({"type": "auth", "token": alg_none("root")});
    forged
        .send(Message::text(auth.to_string()))
        .await
        .expect("send");
    assert_eq!(close_code(&mut forged).await, Some(4001));
    // A bad Authorization header on the upgrade request: refused before the upgrade.
    let refused = ws_connect(&gateway, &[("Authorization", "Bearer nonsense")]).await;
    assert_eq!(refused.err(), Some(401));
    // A good one: no auth frame needed.
    let bearer = format!("Bearer {}", token("root"));
    let mut ws = ws_connect(&gateway, &[("Authorization", &bearer)])
        .await
        .expect("upgrade");
    ws.send(Message::text(r#"{"type":"ping"}"#))
        .await
        .expect("ping");
    assert_eq!(
        next_json(&mut ws, WAIT).await,
        Some(serde_json::json!({"type": "pong"}))
    );
}

#[test]
fn open_mode_is_refused_on_a_public_address_unless_insecure_open() {
    let output = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["serve", "--listen", "0.0.0.0:0", "--ingest", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refusing to run open"), "{stderr}");
    assert!(stderr.contains("--insecure-open"), "{stderr}");

    let gateway = Gateway::start(&["--insecure-open"]);
    assert_eq!(gateway.get("/api/v2/calls").0, 200, "loopback anyway here");
    let mut child = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--ingest",
            "127.0.0.1:0",
            "--insecure-open",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("runs");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("ready line");
    let ready: serde_json::Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(ready["mode"], "open");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn access_check_names_the_user_and_the_rule() {
    let dir = support::temp_dir("check");
    let good = access_file(&dir);
    let ok = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["access", "check"])
        .arg(&good)
        .output()
        .expect("runs");
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("5 users"));

    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        r#"
[[user]]
username = "a"
roles = ["agent"]
devices = ["7001"]

[[user]]
username = "b"
roles = ["agnet"]
devices = ["7001"]
password = "plain"
"#,
    )
    .expect("write");
    let refused = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["access", "check"])
        .arg(&bad)
        .output()
        .expect("runs");
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    for expected in [
        "user \"b\": roles: \"agnet\" is not agent, supervisor or admin",
        "user \"b\": devices: \"7001\" already belongs to user \"a\"",
        "user \"b\": password: not an argon2id PHC string",
    ] {
        assert!(stderr.contains(expected), "{expected} in {stderr}");
    }
}

#[test]
fn hash_password_prints_a_hash_that_logs_in() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"s3cret\n")
        .expect("write");
    let output = child.wait_with_output().expect("exits");
    assert!(output.status.success());
    let phc = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(callgate::access::password::verify(
        phc.trim_end(),
        b"s3cret"
    ));
}

/// An access file whose only ingest source, "sip", has the token `sip-token` and writes Server SIPTS750.
fn ingest_access_file(dir: &Path) -> PathBuf {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(b"sip-token");
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join("ingest.toml");
    std::fs::write(
        &path,
        format!(
            "[[user]]\nusername = \"root\"\nroles = [\"admin\"]\n\n[[ingest]]\nname = \"sip\"\ntoken_sha256 = \"{hex}\"\nservers = [\"SIPTS750\"]\n"
        ),
    )
    .expect("access file");
    path
}

/// Writes `text` on a fresh ingest connection, half-closes, and returns every reply line.
fn ingest_lines(gateway: &Gateway, text: &str) -> Vec<serde_json::Value> {
    use std::io::{BufRead, Write};
    let mut stream = std::net::TcpStream::connect(&gateway.ingest).expect("connect ingest");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    // A refused source may be closed out before it finishes writing: what counts is what it reads.
    let _ = stream.write_all(text.as_bytes());
    let _ = stream.shutdown(std::net::Shutdown::Write);
    std::io::BufReader::new(stream)
        .lines()
        .map_while(Result::ok)
        .map(|line| serde_json::from_str(&line).expect("JSON reply"))
        .collect()
}

#[test]
fn an_ingest_source_needs_its_token_and_writes_only_its_servers() {
    let dir = support::temp_dir("ingest");
    let access = ingest_access_file(&dir);
    let gateway = Gateway::start(&["--access", access.to_str().expect("path")]);
    let event = |server: &str, conn: u32| {
        format!(
            "{{\"event\":\"EventRinging\",\"Server\":\"{server}\",\"ConnID\":\"{conn:016x}\",\"ThisDN\":\"7001\",\"EventSequenceNumber\":{conn}}}\n"
        )
    };
    let unauthorized = serde_json::json!({"error": "unauthorized"});
    assert_eq!(
        ingest_lines(&gateway, &event("SIPTS750", 1)),
        std::slice::from_ref(&unauthorized)
    );
    assert_eq!(
        ingest_lines(
            &gateway,
            &format!("{{\"auth\":\"wrong\"}}\n{}", event("SIPTS750", 1))
        ),
        [unauthorized]
    );
    let replies = ingest_lines(
        &gateway,
        &format!(
            "{{\"auth\":\"sip-token\"}}\n{}{}",
            event("SIPTS750", 1),
            event("OTHER", 2)
        ),
    );
    assert_eq!(replies[0], serde_json::json!({"authenticated": "sip"}));
    assert!(
        replies.contains(&serde_json::json!({"error": "server not allowed: OTHER", "line": 3})),
        "{replies:?}"
    );
    let last = replies.last().expect("a final ack");
    assert_eq!(
        (last["applied"].as_u64(), last["rejected"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        gateway.metric("callgate_access_denied_total{door=\"ingest\",reason=\"token\"}"),
        Some(2.0)
    );
}

#[test]
fn sim_connects_with_a_token() {
    let dir = support::temp_dir("simtoken");
    let access = ingest_access_file(&dir);
    let gateway = Gateway::start(&["--access", access.to_str().expect("path")]);
    let run = |token: &str| {
        Command::new(env!("CARGO_BIN_EXE_callgate"))
            .args([
                "sim",
                "--events",
                "200",
                "--server",
                "SIPTS750",
                "--connect",
                &gateway.ingest,
                "--token",
                token,
            ])
            .output()
            .expect("runs")
    };
    let ok = run("sip-token");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let ack: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&ok.stderr).trim()).expect("the last ack");
    assert_eq!(ack["rejected"], 0);
    assert!(ack["applied"].as_u64().is_some_and(|n| n > 0));
    let refused = run("wrong");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("refused the token"));
}

fn two_device_file(path: &Path, agent1_devices: &str, with_agent1: bool) {
    let agent1 = if with_agent1 {
        format!(
            "[[user]]\nusername = \"agent1\"\nroles = [\"agent\"]\ndevices = [{agent1_devices}]\n\n"
        )
    } else {
        String::new()
    };
    let text = format!(
        "{agent1}[[user]]\nusername = \"root\"\nroles = [\"admin\"]\n\n[jwt]\nhs256_secret_file = \"jwt.secret\"\naudience = \"callgate\"\n"
    );
    std::fs::write(path, text).expect("access file");
}

/// Waits until `/api/v2/calls` shows `user` `want` calls (the reload has taken effect).
async fn until_visible(gateway: &Gateway, user: &str, want: usize) {
    for _ in 0..100 {
        let bearer = format!("Bearer {}", token(user));
        let (status, body) = get(gateway, "/api/v2/calls", &[("Authorization", &bearer)]);
        if status == 200 && body["calls"].as_array().map(Vec::len) == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{user} never saw {want} calls");
}

#[tokio::test]
async fn a_reload_narrows_a_live_subscription_at_once_and_removes_a_user() {
    let _guard = support::exclusive().await;
    let dir = support::temp_dir("reload");
    std::fs::write(dir.join("jwt.secret"), SECRET).expect("secret");
    let path = dir.join("access.toml");
    two_device_file(&path, "\"7001\", \"7002\"", true);
    let gateway = Gateway::start(&["--access", path.to_str().expect("path")]);
    ingest(&gateway, three_calls()).await;
    let bearer = format!("Bearer {}", token("agent1"));
    let mut ws = ws_connect(&gateway, &[("Authorization", &bearer)])
        .await
        .expect("upgrade");
    let subscribe = serde_json::json!({"type": "subscribe", "sub": "mine"});
    ws.send(Message::text(subscribe.to_string()))
        .await
        .expect("subscribe");
    let subscribed = next_json(&mut ws, WAIT).await.expect("subscribed");
    assert_eq!(subscribed["calls"].as_array().map(Vec::len), Some(2));

    // A file that does not load keeps the one in force.
    std::fs::write(
        &path,
        "[[user]]\nusername = \"agent1\"\nroles = [\"nonsense\"]\n",
    )
    .expect("write");
    gateway.hangup();
    tokio::time::sleep(Duration::from_millis(300)).await;
    until_visible(&gateway, "agent1", 2).await;

    two_device_file(&path, "\"7001\"", true);
    gateway.hangup();
    until_visible(&gateway, "agent1", 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let changes = "{\"event\":\"EventAttachedDataChanged\",\"ConnID\":\"0000000000000002\",\"ThisDN\":\"7002\",\"UserData\":{\"k\":\"2\"}}\n{\"event\":\"EventAttachedDataChanged\",\"ConnID\":\"0000000000000001\",\"ThisDN\":\"7001\",\"UserData\":{\"k\":\"1\"}}\n";
    ingest(&gateway, changes.as_bytes().to_vec()).await;
    let notification = next_json(&mut ws, WAIT).await.expect("a notification");
    assert_eq!(
        notification["data"]["call"]["userData"]["k"], "1",
        "7002 is out of scope now: {notification}"
    );
    assert!(
        next_json(&mut ws, Duration::from_millis(500))
            .await
            .is_none()
    );

    two_device_file(&path, "", false);
    gateway.hangup();
    assert_eq!(close_code(&mut ws).await, Some(4001), "agent1 is gone");
    let (status, _, _) = http_request(
        &gateway.http,
        "GET",
        "/api/v2/calls",
        &[("Authorization", &bearer)],
    );
    assert_eq!(status, 401);
}

#[tokio::test]
async fn other_sites_pages_are_refused_and_allowed_ones_get_cors_answers() {
    let _guard = support::exclusive().await;
    let dir = support::temp_dir("origin");
    let access = access_file(&dir);
    let gateway = Gateway::start(&[
        "--access",
        access.to_str().expect("path"),
        "--allowed-origins",
        "https://wallboard.example.com,http://desk.example.com:8000",
    ]);
    let own = format!("http://{}", gateway.http);
    let bearer = format!("Bearer {}", token("root"));
    // The WebSocket handshake: refused from another site, with or without credentials.
    let evil = ws_connect(
        &gateway,
        &[
            ("Origin", "https://evil.example.com"),
            ("Authorization", &bearer),
        ],
    )
    .await;
    assert_eq!(evil.err(), Some(403));
    let evil = ws_connect(&gateway, &[("Origin", "https://evil.example.com")]).await;
    assert_eq!(evil.err(), Some(403));
    for origin in [own.as_str(), "https://wallboard.example.com"] {
        let ws = ws_connect(&gateway, &[("Origin", origin), ("Authorization", &bearer)]).await;
        assert!(ws.is_ok(), "{origin}");
    }
    // REST with credentials from another site: 403; from an allowed one: marked for the browser.
    let (status, _, _) = http_request(
        &gateway.http,
        "GET",
        "/api/v2/calls",
        &[
            ("Origin", "https://evil.example.com"),
            ("Authorization", &bearer),
        ],
    );
    assert_eq!(status, 403);
    let (status, head, _) = http_request(
        &gateway.http,
        "GET",
        "/api/v2/calls",
        &[
            ("Origin", "http://desk.example.com:8000"),
            ("Authorization", &bearer),
        ],
    );
    assert_eq!(status, 200);
    assert_eq!(
        header(&head, "access-control-allow-origin"),
        Some("http://desk.example.com:8000")
    );
    assert_eq!(
        header(&head, "access-control-allow-credentials"),
        Some("true")
    );
    // Preflights: answered for allowed origins only.
    let preflight = |origin: &str| {
        http_request(
            &gateway.http,
            "OPTIONS",
            "/api/v2/calls",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "GET"),
                ("Access-Control-Request-Headers", "authorization"),
            ],
        )
    };
    let (status, head, _) = preflight("https://wallboard.example.com");
    assert_eq!(status, 204);
    assert_eq!(
        header(&head, "access-control-allow-origin"),
        Some("https://wallboard.example.com")
    );
    assert!(
        header(&head, "access-control-allow-headers").is_some_and(|h| h.contains("Authorization"))
    );
    assert_eq!(preflight("https://evil.example.com").0, 403);
    assert!(
        gateway
            .metric("callgate_access_denied_total{door=\"ws\",reason=\"origin\"}")
            .is_some_and(|n| n >= 2.0)
    );
}

/// Issue 15: queues are for supervisors and administrators on every door, whole (no device scope); an
/// agent is refused by role, whether or not any queue exists.
#[tokio::test]
async fn queues_are_shown_to_supervisors_and_admins_and_refused_to_agents() {
    let _guard = support::exclusive().await;
    let gateway = started(&support::temp_dir("queues"));
    let queued = "{\"event\":\"EventQueued\",\"ConnID\":\"0000000000000011\",\"CallUUID\":\"Q1\",\"ThisDN\":\"8001\",\"TimeinSecs\":1763900000}\n";
    ingest(&gateway, queued.as_bytes().to_vec()).await;
    let queue_id = callgate::reduce::device_id("", "8001");
    for user in ["boss", "chief", "root"] {
        let bearer = format!("Bearer {}", token(user));
        let (status, body) = get(&gateway, "/api/v2/queues", &[("Authorization", &bearer)]);
        assert_eq!(status, 200, "{user}: {body}");
        let queues = body["queues"].as_array().expect("queues");
        assert_eq!(queues.len(), 1, "{user}: {body}");
        assert_eq!(queues[0]["id"], queue_id.as_str());
        assert_eq!(queues[0]["waiting"][0]["callId"], "Q1");
        let (status, one) = get(
            &gateway,
            &format!("/api/v2/queues/{queue_id}"),
            &[("Authorization", &bearer)],
        );
        assert_eq!((status, &one["queue"]), (200, &queues[0]), "{user}");
    }
    let (status, _) = get(
        &gateway,
        "/api/v2/queues/no-such-queue",
        &[("Authorization", &format!("Bearer {}", token("root")))],
    );
    assert_eq!(status, 404);
    let agent = format!("Bearer {}", token("agent1"));
    for path in [
        "/api/v2/queues".to_owned(),
        format!("/api/v2/queues/{queue_id}"),
        "/api/v2/queues/no-such-queue".to_owned(),
    ] {
        let (status, body) = get(&gateway, &path, &[("Authorization", &agent)]);
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.get("queues").is_none() && body.get("queue").is_none());
    }

    // The WebSocket: a supervisor's snapshot carries the queue and a change arrives; an agent's
    // subscription naming queues is refused, and the connection stays.
    let mut boss = ws_connect(
        &gateway,
        &[("Authorization", &format!("Bearer {}", token("boss")))],
    )
    .await
    .expect("upgrade");
    let subscribe = serde_json::json!({"type": "subscribe", "sub": "q", "topics": ["queues"]});
    boss.send(Message::text(subscribe.to_string()))
        .await
        .expect("subscribe");
    let subscribed = next_json(&mut boss, WAIT).await.expect("subscribed");
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    assert_eq!(
        subscribed["queues"][0]["id"],
        queue_id.as_str(),
        "{subscribed}"
    );
    assert!(subscribed.get("calls").is_none(), "{subscribed}");
    let diverted = "{\"event\":\"EventDiverted\",\"ConnID\":\"0000000000000011\",\"ThisDN\":\"8001\",\"TimeinSecs\":1763900005}\n";
    ingest(&gateway, diverted.as_bytes().to_vec()).await;
    let notification = next_json(&mut boss, WAIT)
        .await
        .expect("a queue notification");
    assert_eq!(
        notification["channel"], "/callgate/queues",
        "{notification}"
    );
    assert_eq!(
        notification["data"]["messageType"],
        "QueueStateChangeMessage"
    );
    assert_eq!(notification["data"]["queue"]["today"]["serviceLevel"], 100);

    let mut agent_ws = ws_connect(&gateway, &[("Authorization", &agent)])
        .await
        .expect("upgrade");
    let subscribe =
        serde_json::json!({"type": "subscribe", "sub": "q", "topics": ["calls", "queues"]});
    agent_ws
        .send(Message::text(subscribe.to_string()))
        .await
        .expect("subscribe");
    let refused = next_json(&mut agent_ws, WAIT).await.expect("an error");
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("forbidden"))
    );
    let subscribe = serde_json::json!({"type": "subscribe", "sub": "c", "topics": ["calls"]});
    agent_ws
        .send(Message::text(subscribe.to_string()))
        .await
        .expect("subscribe");
    let subscribed = next_json(&mut agent_ws, WAIT).await.expect("subscribed");
    assert_eq!(
        subscribed["type"], "subscribed",
        "the connection stays: {subscribed}"
    );
}

/// A WebSocket snapshot of `devices` lists the devices `GET /api/v2/devices` lists, for each role: an
/// owner's devices never heard of and a device with only calls included, in their default state.
#[tokio::test]
async fn a_devices_snapshot_lists_what_rest_lists_for_each_role() {
    let _guard = support::exclusive().await;
    let gateway = started(&support::temp_dir("device-snapshot"));
    // A call at 7003 (nobody's DN) and a device event at 7002; 7001 is only in the access file.
    let lines = "{\"event\":\"EventEstablished\",\"ConnID\":\"0000000000000003\",\"ThisDN\":\"7003\",\"OtherDN\":\"+14155550100\"}\n{\"event\":\"EventDNDOn\",\"ThisDN\":\"7002\"}\n";
    ingest(&gateway, lines.as_bytes().to_vec()).await;
    for user in ["agent1", "boss", "chief", "root"] {
        let bearer = format!("Bearer {}", token(user));
        let (status, body) = get(&gateway, "/api/v2/devices", &[("Authorization", &bearer)]);
        assert_eq!(status, 200, "{user}: {body}");
        let mut rest: Vec<(String, serde_json::Value)> = body["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .map(|device| {
                let mut device = device.clone();
                device.as_object_mut().expect("object").remove("calls");
                (device["id"].as_str().expect("id").to_owned(), device)
            })
            .collect();
        rest.sort_by(|a, b| a.0.cmp(&b.0));
        let mut ws = ws_connect(&gateway, &[("Authorization", &bearer)])
            .await
            .expect("upgrade");
        let subscribe = serde_json::json!({"type": "subscribe", "sub": "d", "topics": ["devices"]});
        ws.send(Message::text(subscribe.to_string()))
            .await
            .expect("subscribe");
        let subscribed = next_json(&mut ws, WAIT).await.expect("subscribed");
        let mut snapshot: Vec<(String, serde_json::Value)> = subscribed["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .map(|device| {
                (
                    device["id"].as_str().expect("id").to_owned(),
                    device.clone(),
                )
            })
            .collect();
        snapshot.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(snapshot, rest, "{user}: the snapshot's devices are REST's");
    }
    // The roles see what their scopes hold: 7001 for agent1; 7001 and 7002 for the team-less chief;
    // 7003 (nobody's, with a call) for the admin only.
    let count = |user: &str| {
        let bearer = format!("Bearer {}", token(user));
        get(&gateway, "/api/v2/devices", &[("Authorization", &bearer)]).1["devices"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!((count("agent1"), count("chief"), count("root")), (1, 2, 3));
}
