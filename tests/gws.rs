//! The GWS 8.5 REST read side (gws.md, "REST"), black-box: a GWS-style client logs in with Basic on
//! `/api/v2/me`, keeps the session cookie and CSRF token, and reads its user, devices and calls; the
//! supervisor reads its team; operations get the read-only answer.

mod support;

use base64::Engine;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use support::{Gateway, header, http_request, http_request_with_body, ingest, temp_dir};

fn hash(password: &str) -> String {
    callgate::access::password::hash(password.as_bytes()).expect("hash")
}

/// agent1 (7001, billing, with a name and a password), agent2 (7002, sales), a billing supervisor with a
/// password, an admin with a password.
fn access_file(dir: &Path) -> PathBuf {
    let text = format!(
        r#"
[[user]]
username = "agent1"
password = "{agent}"
roles = ["agent"]
devices = ["7001"]
team = "billing"
first_name = "Ann"
last_name = "Agent"

[[user]]
username = "agent2"
password = "{agent}"
roles = ["agent"]
devices = ["7002"]
team = "sales"

[[user]]
username = "boss"
password = "{boss}"
roles = ["supervisor"]
devices = ["7901"]
team = "billing"
"#,
        agent = hash("agent-password"),
        boss = hash("boss-password"),
    );
    let path = dir.join("access.toml");
    std::fs::write(&path, text).expect("access file");
    path
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn device_id(dn: &str) -> String {
    callgate::reduce::device_id("", dn)
}

fn user_id(name: &str) -> String {
    callgate::api::gws::user_id(name)
}

/// GET with Basic credentials: status and body.
fn get_as(gateway: &Gateway, auth: &str, path: &str) -> (u16, Value) {
    let (status, _, body) = http_request(&gateway.http, "GET", path, &[("Authorization", auth)]);
    let value = serde_json::from_str(&body).unwrap_or(Value::Null);
    (status, value)
}

fn start() -> (Gateway, PathBuf) {
    let dir = temp_dir("gws");
    let access = access_file(&dir);
    let gateway = Gateway::start(&["--access", access.to_str().expect("path")]);
    (gateway, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn me_with_subresources_shows_the_users_devices_and_live_calls() {
    let (gateway, _dir) = start();
    ingest(
        &gateway,
        br#"{"event":"EventAgentLogin","ThisDN":"7001","AgentID":"a1","AgentWorkMode":"AgentAutoIn"}
{"event":"EventRinging","ConnID":"1","CallUUID":"C1","ThisDN":"7001"}
{"event":"EventRinging","ConnID":"2","CallUUID":"C2","ThisDN":"7002"}
{"event":"EventRinging","ConnID":"3","CallUUID":"C3","ThisDN":"7001"}
{"event":"EventReleased","ConnID":"3","ThisDN":"7001"}
"#
        .to_vec(),
    )
    .await;
    let ann = basic("agent1", "agent-password");
    let (status, me) = get_as(&gateway, &ann, "/api/v2/me");
    assert_eq!(status, 200, "{me}");
    let id = user_id("agent1");
    assert_eq!(
        me,
        json!({"statusCode":0,"user":{"id":id,"userName":"agent1","firstName":"Ann","lastName":"Agent",
            "roles":["ROLE_AGENT"],"enabled":true,"changePasswordOnFirstLogin":false,
            "uri":format!("http://{}/api/v2/users/{id}", gateway.http),"path":format!("/users/{id}")}})
    );

    let (_, full) = get_as(&gateway, &ann, "/api/v2/me?subresources=*");
    let user = &full["user"];
    assert_eq!(user["devices"].as_array().map(Vec::len), Some(1));
    assert_eq!(user["devices"][0]["id"], device_id("7001"));
    assert_eq!(user["devices"][0]["userState"]["state"], "Ready");
    assert_eq!(user["devices"][0]["agentId"], "a1");
    let calls: Vec<&str> = user["calls"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(calls, ["C1"], "live calls of its own devices only");
    assert_eq!(user["features"], json!([]));
    assert_eq!(user["settings"], json!({}));
    assert_eq!(
        user["channels"],
        json!([{"name":"voice","userState":{"id":"Ready","displayName":"Ready","state":"Ready"}}])
    );
    let (_, some) = get_as(&gateway, &ann, "/api/v2/me?subresources=devices");
    assert!(some["user"].get("devices").is_some());
    assert!(some["user"].get("calls").is_none());

    let (_, uris) = get_as(&gateway, &ann, "/api/v2/me/devices");
    assert_eq!(
        uris,
        json!({"statusCode":0,"uris":[format!("http://{}/api/v2/devices/{}", gateway.http, device_id("7001"))]})
    );
    let (_, devices) = get_as(&gateway, &ann, "/api/v2/me/devices?fields=*");
    assert_eq!(devices["devices"][0]["phoneNumber"], "7001");
    let (_, calls) = get_as(&gateway, &ann, "/api/v2/me/calls");
    assert_eq!(
        calls,
        json!({"statusCode":0,"uris":[format!("http://{}/api/v2/me/calls/C1", gateway.http)]})
    );
    let (_, calls) = get_as(&gateway, &ann, "/api/v2/me/calls?fields=*");
    assert_eq!(calls["calls"][0]["id"], "C1");
    let (status, call) = get_as(&gateway, &ann, "/api/v2/me/calls/C1");
    assert_eq!((status, &call["call"]["state"]), (200, &json!("Ringing")));
    let (status, device) = get_as(
        &gateway,
        &ann,
        &format!("/api/v2/me/devices/{}", device_id("7001")),
    );
    assert_eq!(
        (status, &device["device"]["phoneNumber"]),
        (200, &json!("7001"))
    );

    // Another agent's call and device are not its own: 404, statusCode 6.
    for path in [
        "/api/v2/me/calls/C2".to_owned(),
        format!("/api/v2/me/devices/{}", device_id("7002")),
    ] {
        let (status, body) = get_as(&gateway, &ann, &path);
        assert_eq!(
            (status, &body["statusCode"]),
            (404, &json!(6)),
            "{path}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_listed_from_the_access_file_events_and_calls_within_scope() {
    let (gateway, _dir) = start();
    ingest(
        &gateway,
        br#"{"event":"EventDNDOn","ThisDN":"7002"}
{"event":"EventRinging","ConnID":"9","CallUUID":"C9","ThisDN":"7003"}
"#
        .to_vec(),
    )
    .await;
    let ann = basic("agent1", "agent-password");
    let (_, mine) = get_as(&gateway, &ann, "/api/v2/devices");
    let listed: Vec<&str> = mine["devices"]
        .as_array()
        .map(|d| d.iter().filter_map(|d| d["phoneNumber"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        listed,
        ["7001"],
        "an agent lists its own device, never heard of: {mine}"
    );
    assert_eq!(mine["devices"][0]["userState"]["state"], "LoggedOut");
    assert_eq!(mine["devices"][0]["calls"], json!([]));

    // The supervisor of billing sees billing's devices: agent1's and its own.
    let boss = basic("boss", "boss-password");
    let (_, team) = get_as(&gateway, &boss, "/api/v2/devices");
    let listed: Vec<&str> = team["devices"]
        .as_array()
        .map(|d| d.iter().filter_map(|d| d["phoneNumber"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(listed, ["7001", "7901"]);

    // A single device: in scope with its state, out of scope like unknown.
    let (status, dnd) = get_as(
        &gateway,
        &basic("agent2", "agent-password"),
        &format!("/api/v2/devices/{}", device_id("7002")),
    );
    assert_eq!(status, 200);
    assert_eq!(dnd["device"]["doNotDisturb"], "On");
    let (status, body) = get_as(
        &gateway,
        &ann,
        &format!("/api/v2/devices/{}", device_id("7002")),
    );
    assert_eq!((status, &body["statusCode"]), (404, &json!(6)));
    let (status, _) = get_as(&gateway, &ann, "/api/v2/devices/no-such-device");
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_for_supervisors_and_show_their_team() {
    let (gateway, _dir) = start();
    let (status, body) = get_as(
        &gateway,
        &basic("agent1", "agent-password"),
        "/api/v2/users",
    );
    assert_eq!((status, &body["statusCode"]), (403, &json!(3)));
    let boss = basic("boss", "boss-password");
    let (status, team) = get_as(&gateway, &boss, "/api/v2/users?subresources=devices,calls");
    assert_eq!(status, 200);
    let names: Vec<&str> = team["users"]
        .as_array()
        .map(|u| u.iter().filter_map(|u| u["userName"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["agent1", "boss"], "billing only");
    assert_eq!(team["users"][0]["devices"][0]["phoneNumber"], "7001");
    assert_eq!(team["users"][0]["calls"], json!([]));
    let (status, one) = get_as(
        &gateway,
        &boss,
        &format!("/api/v2/users/{}", user_id("agent1")),
    );
    assert_eq!((status, &one["user"]["userName"]), (200, &json!("agent1")));
    let (status, other) = get_as(
        &gateway,
        &boss,
        &format!("/api/v2/users/{}", user_id("agent2")),
    );
    assert_eq!((status, &other["statusCode"]), (404, &json!(6)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_login_then_cookie_and_csrf_guard_the_state_changing_requests() {
    let (gateway, _dir) = start();
    let (status, headers, _) = http_request(
        &gateway.http,
        "GET",
        "/api/v2/me",
        &[("Authorization", &basic("agent1", "agent-password"))],
    );
    assert_eq!(status, 200);
    let cookie = header(&headers, "set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let csrf = header(&headers, "x-csrf-token")
        .expect("a CSRF token")
        .to_owned();
    let start = r#"{"operationName":"StartContactCenterSession","channels":["voice"]}"#;
    let post = |headers: &[(&str, &str)], path: &str, body: &str| {
        let (status, _, body) = http_request_with_body(
            &gateway.http,
            "POST",
            path,
            &[&[("Content-Type", "application/json")], headers].concat(),
            body,
        );
        (
            status,
            serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
        )
    };

    // The cookie alone is not enough to change state: another site's form could send it.
    let (status, refused) = post(&[("Cookie", &cookie)], "/api/v2/me", start);
    assert_eq!(status, 403, "{refused}");
    let (status, _) = post(
        &[("Cookie", &cookie), ("X-CSRF-TOKEN", "wrong-token")],
        "/api/v2/me",
        start,
    );
    assert_eq!(status, 403);
    let with_csrf = [("Cookie", cookie.as_str()), ("X-CSRF-TOKEN", csrf.as_str())];
    let (status, started) = post(&with_csrf, "/api/v2/me", start);
    assert_eq!((status, started), (200, json!({"statusCode":0})));
    let (status, ended) = post(
        &with_csrf,
        "/api/v2/me",
        r#"{"operationName":"EndContactCenterSession"}"#,
    );
    assert_eq!((status, ended), (200, json!({"statusCode":0})));

    // Operations: callgate only watches.
    let (status, ready) = post(&with_csrf, "/api/v2/me", r#"{"operationName":"Ready"}"#);
    assert_eq!(status, 403);
    assert_eq!(
        ready,
        json!({"statusCode":3,"statusMessage":"operation Ready is not available: callgate is read-only"})
    );
    let (status, answer) = post(
        &with_csrf,
        "/api/v2/me/calls/C1",
        r#"{"operationName":"Answer"}"#,
    );
    assert_eq!((status, &answer["statusCode"]), (403, &json!(3)));
    assert_eq!(
        answer["statusMessage"],
        "operation Answer is not available: callgate is read-only"
    );
    let (status, missing) = post(&with_csrf, "/api/v2/me", "{}");
    assert_eq!((status, &missing["statusCode"]), (400, &json!(1)));
    // Bearer and Basic requests carry their credentials themselves: no CSRF token needed.
    let (status, _) = post(
        &[("Authorization", &basic("agent1", "agent-password"))],
        "/api/v2/me",
        start,
    );
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_has_no_me() {
    let gateway = Gateway::start(&[]);
    let (status, _, body) = http_request(&gateway.http, "GET", "/api/v2/me", &[]);
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_eq!((status, &body["statusCode"]), (401, &json!(20)), "{body}");
}
