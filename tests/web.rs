//! The built-in page (docs/web.md) in a real browser: Debian's chromium, headless, driven over WebDriver
//! by chromium-driver (a few JSON requests; the client below is all the test needs of the protocol).
//! The gateway runs `serve --demo` (the simulator feeds it) with an access file written here.
//!
//! A missing browser or driver fails these tests: scripts/test-all.sh installs both. Screenshots go to
//! `$CARGO_TARGET_DIR/web-artifacts/` (`target/web-artifacts/` by default).

mod support;

use base64::Engine;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{header, http_request, temp_dir};

/// The password of every user of the test's access file.
const PASSWORD: &str = "wallboard-test";

// ---- a WebDriver client: just what these tests use ----

/// A chromedriver process and one browser session in it; both ended when dropped.
struct Browser {
    driver: Child,
    addr: String,
    session: String,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless chromium with a 1920×1080 viewport.
    fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("chromedriver does not start ({error}): install chromium and chromium-driver (scripts/test-all.sh does)")
            });
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "chromedriver never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
        };
        let created = browser.call(
            "POST",
            "/session",
            &json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
                "binary": binary,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1920,1080", "--no-first-run", "--disable-extensions"]
            }}}}),
        );
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {created}"))
            .to_owned();
        // The viewport itself at 1920×1080, whatever the window's frame takes.
        browser.viewport(1920, 1080);
        browser
    }

    /// One WebDriver request; its `value`. Fails the test on a WebDriver error.
    fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        let text = if method == "GET" {
            String::new()
        } else {
            body.to_string()
        };
        let (status, reply) = webdriver_http(&self.addr, method, path, &text);
        let reply: Value = serde_json::from_str(&reply)
            .unwrap_or_else(|_| panic!("WebDriver {method} {path}: {status} {reply}"));
        assert_eq!(status, 200, "WebDriver {method} {path}: {reply}");
        reply["value"].clone()
    }

    /// A request on this browser session.
    fn command(&self, method: &str, path: &str, body: &Value) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    /// Sets the viewport's size (CSS pixels).
    fn viewport(&self, width: u32, height: u32) {
        self.command(
            "POST",
            "/goog/cdp/execute",
            &json!({"cmd": "Emulation.setDeviceMetricsOverride",
                    "params": {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}}),
        );
    }

    fn goto(&self, url: &str) {
        self.command("POST", "/url", &json!({ "url": url }));
    }

    /// Runs `script` (a function body) in the page; its return value.
    fn eval(&self, script: &str) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            &json!({"script": script, "args": []}),
        )
    }

    /// The element `css` selects (which must exist).
    fn element(&self, css: &str) -> String {
        let found = self.command(
            "POST",
            "/element",
            &json!({"using": "css selector", "value": css}),
        );
        found
            .as_object()
            .and_then(|object| object.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css);
        self.command(
            "POST",
            &format!("/element/{element}/value"),
            &json!({ "text": text }),
        );
    }

    fn click(&self, css: &str) {
        let element = self.element(css);
        self.command("POST", &format!("/element/{element}/click"), &json!({}));
    }

    /// Polls `script` until it returns true; how long that took. Fails with `what` after `limit`.
    fn wait_for(&self, script: &str, limit: Duration, what: &str) -> Duration {
        let start = Instant::now();
        loop {
            if self.eval(script) == Value::Bool(true) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "{what}: not within {limit:?}; the page shows {}",
                self.shown()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the page shows, read from its tables (the rows' data attributes) and its banner.
    fn shown(&self) -> Value {
        self.eval(
            r#"
            const rows = (id) => [...document.querySelectorAll(`#${id} tr[data-dn], #${id} tr[data-queue-id]`)];
            const visible = (id) => !document.getElementById(id).hidden;
            return {
              view: document.body.getAttribute('data-view'),
              wallboard: visible('wallboard'),
              agentView: visible('agent-view'),
              login: visible('login'),
              banner: visible('banner') ? document.getElementById('banner').textContent : null,
              calls: rows('calls-body').map((r) => [r.dataset.dn, r.dataset.callId, r.dataset.state]),
              agents: rows('agents-body').map((r) => [r.dataset.dn, r.dataset.state]),
              queues: rows('queues-body').map((r) => [r.dataset.queueId, Number(r.dataset.waiting)]),
              myDevices: rows('my-devices-body').map((r) => [r.dataset.dn, r.dataset.state]),
              myCalls: rows('my-calls-body').map((r) => [r.dataset.dn, r.dataset.callId, r.dataset.state]),
            };
            "#,
        )
    }

    /// Saves a screenshot of the viewport as `name`.png among the test artifacts; its path.
    fn screenshot(&self, name: &str) -> PathBuf {
        let data = self.command("GET", "/screenshot", &Value::Null);
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().expect("screenshot data"))
            .expect("screenshot is base64");
        let dir = artifacts();
        std::fs::create_dir_all(&dir).expect("artifacts folder");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("screenshot written");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = webdriver_http(
                &self.addr,
                "DELETE",
                &format!("/session/{}", self.session),
                "",
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One HTTP/1.1 exchange with chromedriver, which keeps connections open whatever the request says: the
/// reply's body is read by its `Content-Length`.
fn webdriver_http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect chromedriver");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("request");
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("status line");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("chromedriver answered {status_line:?}"));
    let mut length = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let mut reply = Vec::new();
    match length {
        Some(length) => {
            reply.resize(length, 0);
            reader.read_exact(&mut reply).expect("body");
        }
        None => {
            reader.read_to_end(&mut reply).expect("body");
        }
    }
    (status, String::from_utf8_lossy(&reply).into_owned())
}

/// Where screenshots go: `$CARGO_TARGET_DIR/web-artifacts`, else `target/web-artifacts`.
fn artifacts() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("web-artifacts")
}

// ---- the gateway ----

/// A `serve --demo` gateway with the test's access file on `listen`; killed when dropped.
struct Demo {
    gateway: support::Gateway,
}

impl std::ops::Deref for Demo {
    type Target = support::Gateway;

    fn deref(&self) -> &support::Gateway {
        &self.gateway
    }
}

impl Demo {
    fn start(access: &Path, listen: &str) -> Demo {
        Demo::start_with(
            listen,
            &["--access", access.to_str().expect("a UTF-8 path")],
        )
    }

    /// `serve --demo` on `listen` with `extra` flags.
    fn start_with(listen: &str, extra: &[&str]) -> Demo {
        let flags: Vec<&str> = ["--demo"]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        Demo {
            gateway: support::Gateway::start_on(listen, &flags),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.http)
    }

    /// Writes event lines to the ingest socket and waits for their acknowledgement.
    fn send(&self, lines: &[Value]) {
        let mut ingest = support::Ingest {
            stream: std::net::TcpStream::connect(&self.ingest).expect("connect ingest"),
        };
        ingest
            .stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut bytes = Vec::new();
        for line in lines {
            bytes.extend_from_slice(line.to_string().as_bytes());
            bytes.push(b'\n');
        }
        ingest.send(&bytes);
        let replies = ingest.finish();
        let last = replies.last().expect("an acknowledgement");
        assert_eq!(last["applied"], json!(lines.len()), "{replies:?}");
    }
}

/// A REST client logged in as one user (Basic once, then its session cookie, as a browser does).
struct Rest {
    addr: String,
    /// None in open mode.
    cookie: Option<String>,
}

impl Rest {
    fn login(addr: &str, username: &str) -> Rest {
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{PASSWORD}"));
        let (status, headers, body) = http_request(
            addr,
            "GET",
            "/api/v2/me",
            &[("Authorization", &format!("Basic {basic}"))],
        );
        assert_eq!(status, 200, "{username} logs in: {body}");
        let cookie = header(&headers, "set-cookie")
            .and_then(|value| value.split(';').next())
            .expect("a session cookie")
            .to_owned();
        Rest {
            addr: addr.to_owned(),
            cookie: Some(cookie),
        }
    }

    /// Open mode: no credentials.
    fn open(addr: &str) -> Rest {
        Rest {
            addr: addr.to_owned(),
            cookie: None,
        }
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let headers: Vec<(&str, &str)> = self
            .cookie
            .as_deref()
            .map(|cookie| ("Cookie", cookie))
            .into_iter()
            .collect();
        let (status, _, body) = http_request(&self.addr, "GET", path, &headers);
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// What the page should show, from REST: live calls `[dn, id, state]` and devices `[dn, state]`
    /// (the page's reading of a device: a call in progress first, then the agent state), both sorted;
    /// queues `[id, waiting]` when the gateway serves them.
    fn expected(&self) -> (Vec<Value>, Vec<Value>, Option<Vec<Value>>) {
        let (status, devices) = self.get("/api/v2/devices");
        assert_eq!(status, 200);
        let devices = devices["devices"].as_array().cloned().unwrap_or_default();
        let (status, calls) = self.get("/api/v2/calls");
        assert_eq!(status, 200);
        let calls: Vec<Value> = calls["calls"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|call| call["state"] != "Released")
            .collect();
        let dn_of = |uri: &Value| {
            devices
                .iter()
                .find(|device| device["uri"] == *uri)
                .map_or(json!(""), |device| device["phoneNumber"].clone())
        };
        let mut call_rows: Vec<Value> = calls
            .iter()
            .map(|call| json!([dn_of(&call["deviceUri"]), call["id"], call["state"]]))
            .collect();
        call_rows.sort_by_key(Value::to_string);
        let mut device_rows: Vec<Value> = devices
            .iter()
            .map(|device| {
                let mine: Vec<&Value> = calls
                    .iter()
                    .filter(|call| call["deviceUri"] == device["uri"])
                    .collect();
                let user_state = &device["userState"];
                let state = if mine.iter().any(|call| call["state"] != "Ringing") {
                    "oncall"
                } else if !mine.is_empty() {
                    "ringing"
                } else if user_state["state"] == "Ready" {
                    "ready"
                } else if user_state["state"] == "NotReady" {
                    if user_state["workMode"] == "AfterCallWork" {
                        "acw"
                    } else {
                        "notready"
                    }
                } else {
                    "loggedout"
                };
                json!([device["phoneNumber"], state])
            })
            .collect();
        device_rows.sort_by_key(Value::to_string);
        let (status, queues) = self.get("/api/v2/queues");
        let queues = (status == 200).then(|| {
            let mut rows: Vec<Value> = queues["queues"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|queue| json!([queue["id"], queue["waitingCount"]]))
                .collect();
            rows.sort_by_key(Value::to_string);
            rows
        });
        (call_rows, device_rows, queues)
    }
}

fn sorted(rows: &Value) -> Vec<Value> {
    let mut rows = rows.as_array().cloned().unwrap_or_default();
    rows.sort_by_key(Value::to_string);
    rows
}

/// Waits until the page's calls, agents (and queues, when REST serves them) are REST's, read between
/// two REST reads: the demo changes on its own, so a match with either read counts.
fn matches_rest(browser: &Browser, rest: &Rest, limit: Duration) -> Value {
    let start = Instant::now();
    loop {
        let before = rest.expected();
        let shown = browser.shown();
        let after = rest.expected();
        let page = (
            sorted(&shown["calls"]),
            sorted(&shown["agents"]),
            sorted(&shown["queues"]),
        );
        let same = |expected: &(Vec<Value>, Vec<Value>, Option<Vec<Value>>)| {
            page.0 == expected.0
                && page.1 == expected.1
                && expected.2.as_ref().is_none_or(|queues| page.2 == *queues)
        };
        if same(&before) || same(&after) {
            return shown;
        }
        assert!(
            start.elapsed() < limit,
            "the wallboard does not show what REST reports:\npage {page:?}\nREST {after:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An access file: agents 1-10 (team north) and 11-20 (team south) on the simulator's DNs 7001-7020,
/// "tester" (north) on DN 7050 that only the test writes to, and "boss", the north team's supervisor.
/// Passwords hashed by `callgate hash-password`.
fn access_file(dir: &Path) -> PathBuf {
    let mut hasher = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("hash-password runs");
    {
        use std::io::Write;
        let mut stdin = hasher.stdin.take().expect("stdin");
        writeln!(stdin, "{PASSWORD}").expect("password written");
    }
    let output = hasher.wait_with_output().expect("hash-password ends");
    assert!(output.status.success());
    let hash = String::from_utf8(output.stdout).expect("UTF-8");
    let hash = hash.trim();
    let mut text = String::new();
    for n in 1..=20 {
        let team = if n <= 10 { "north" } else { "south" };
        text.push_str(&format!(
            "[[user]]\nusername = \"agent{n}\"\npassword = \"{hash}\"\nroles = [\"agent\"]\ndevices = [\"{}\"]\nteam = \"{team}\"\n\n",
            7000 + n
        ));
    }
    text.push_str(&format!(
        "[[user]]\nusername = \"tester\"\npassword = \"{hash}\"\nroles = [\"agent\"]\ndevices = [\"7050\"]\nteam = \"north\"\n\n\
         [[user]]\nusername = \"boss\"\npassword = \"{hash}\"\nroles = [\"supervisor\"]\nteam = \"north\"\nfirst_name = \"Bo\"\nlast_name = \"Boss\"\n"
    ));
    let path = dir.join("access.toml");
    std::fs::write(&path, text).expect("access file");
    path
}

/// Accessibility checks on what the page shows now: the status banner is a live region, every table has a
/// caption and column headers with a scope, and every piece of text in the tables and the banner has a
/// contrast of at least 4.5:1 (WCAG AA) against the background it is drawn on.
fn readable(browser: &Browser) {
    let problems = browser.eval(
        r#"
        const problems = [];
        const banner = document.getElementById('banner');
        if (banner.getAttribute('role') !== 'status' || !banner.getAttribute('aria-live')) problems.push('banner is not a live status region');
        for (const table of document.querySelectorAll('table')) {
          if (!table.querySelector('caption')) problems.push(`${table.id}: no caption`);
          for (const th of table.querySelectorAll('th')) if (!th.getAttribute('scope')) problems.push(`${table.id}: a th without scope`);
        }
        const rgb = (text) => text.match(/[\d.]+/g).map(Number);
        const lum = ([r, g, b]) => {
          const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
          return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
        };
        const background = (node) => {
          for (let n = node; n; n = n.parentElement) {
            const c = rgb(getComputedStyle(n).backgroundColor);
            if (c.length < 4 || c[3] > 0) return c;
          }
          return [255, 255, 255];
        };
        const texts = document.querySelectorAll('caption, th, td, li, .banner, .who, h1, h2');
        let checked = 0;
        for (const node of texts) {
          if (!node.textContent.trim() || node.offsetParent === null) continue;
          checked += 1;
          const a = lum(rgb(getComputedStyle(node).color)), b = lum(background(node));
          const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
          if (ratio < 4.5) problems.push(`${node.tagName} "${node.textContent.trim().slice(0, 30)}": contrast ${ratio.toFixed(2)}`);
        }
        if (checked < 20) problems.push(`only ${checked} texts checked`);
        return problems;
        "#,
    );
    assert_eq!(problems, json!([]), "accessibility problems");
}

fn log_in(browser: &Browser, demo: &Demo, username: &str) {
    browser.goto(&demo.url());
    browser.wait_for(
        "return !document.getElementById('login').hidden",
        Duration::from_secs(10),
        "the login form shows",
    );
    browser.type_into("#username", username);
    browser.type_into("#password", PASSWORD);
    browser.click("#login-submit");
}

/// (a) a supervisor's wallboard is what REST reports, scoped to its team; (b) an event shows within a
/// second; (c) the banner shows while the gateway is down and the page recovers when it returns.
#[test]
fn a_supervisor_watches_the_live_wallboard_through_a_gateway_restart() {
    let started = Instant::now();
    let dir = temp_dir("web-wallboard");
    let access = access_file(&dir);
    let demo = Demo::start(&access, "127.0.0.1:0");
    let browser = Browser::start();

    log_in(&browser, &demo, "boss");
    browser.wait_for(
        "return !document.getElementById('wallboard').hidden && document.getElementById('banner').hidden \
         && document.querySelectorAll('#agents-body tr[data-dn]').length > 0",
        Duration::from_secs(10),
        "the wallboard shows",
    );
    let rest = Rest::login(&demo.http, "boss");
    let shown = matches_rest(&browser, &rest, Duration::from_secs(10));
    // Team scope: north's ten agents and the tester, none of south's.
    let dns: Vec<&str> = shown["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|row| row[0].as_str())
        .collect();
    assert_eq!(dns.len(), 11, "{dns:?}");
    assert!(
        dns.iter()
            .all(|dn| *dn == "7050" || ("7001"..="7010").contains(dn)),
        "{dns:?}"
    );
    if rest.get("/api/v2/queues").0 != 200 {
        // A gateway without queue resources refuses the topic; the page says so and goes on without it.
        let empty = browser.eval("return document.getElementById('queues-body').textContent");
        assert_eq!(empty, "This gateway does not publish queue statistics");
    }
    browser.screenshot("wallboard");
    readable(&browser);
    // On a laptop the panels stack and nothing overflows sideways.
    browser.viewport(1366, 768);
    assert_eq!(
        browser.eval("return document.documentElement.scrollWidth <= window.innerWidth"),
        json!(true),
        "no horizontal scrolling at 1366×768"
    );
    browser.screenshot("wallboard-laptop");
    browser.viewport(1920, 1080);

    // (b) An agent state and a call from the ingest socket reach the page within a second.
    demo.send(&[
        json!({"event": "EventAgentNotReady", "ThisDN": "7050", "AgentID": "tester",
                       "AgentWorkMode": "AuxWork", "Reasons": {"ReasonCode": "Coaching"}}),
    ]);
    let took = browser.wait_for(
        "const row = document.querySelector('#agents-body tr[data-dn=\"7050\"]'); \
         return !!row && row.dataset.state === 'notready' && row.querySelector('.reason').textContent === 'Coaching'",
        Duration::from_secs(1),
        "the Not Ready state with its reason shows",
    );
    eprintln!("agent state shown {took:?} after it was acknowledged");
    demo.send(&[json!({"event": "EventEstablished", "ThisDN": "7050", "ConnID": "7e57000000000001",
                       "CallUUID": "WEBTESTCALL0001", "CallType": "Inbound", "OtherDN": "+14155550100"})]);
    let took = browser.wait_for(
        "const row = document.querySelector('#calls-body tr[data-call-id=\"WEBTESTCALL0001\"]'); \
         return !!row && row.dataset.state === 'Established' \
           && document.querySelector('#agents-body tr[data-dn=\"7050\"]').dataset.state === 'oncall'",
        Duration::from_secs(1),
        "the call shows",
    );
    eprintln!("call shown {took:?} after it was acknowledged");
    // With its participant's number and location as the call resource has them.
    let (_, found) = rest.get("/api/v2/calls?callId=WEBTESTCALL0001");
    let participant = &found["calls"][0]["participants"][0];
    let location = participant["location"].as_str().expect("a location");
    let cells = browser.eval(
        "const row = document.querySelector('#calls-body tr[data-call-id=\"WEBTESTCALL0001\"]'); \
         return [row.querySelector('.participants').textContent, row.querySelector('.loc').textContent]",
    );
    assert_eq!(
        cells,
        json!([participant["formattedPhoneNumber"], location])
    );
    // Its duration ticks in the browser (no event needed).
    let duration = "return document.querySelector('#calls-body tr[data-call-id=\"WEBTESTCALL0001\"] td.num').textContent";
    let first = browser.eval(duration);
    browser.wait_for(
        &format!("{duration} !== {first}"),
        Duration::from_secs(3),
        "the call's duration ticks",
    );
    matches_rest(&browser, &rest, Duration::from_secs(10));

    // (c) The gateway stops: the banner says so. It returns on the same port: the page logs in again
    // (a restart forgets sessions), takes a fresh snapshot of the new run and the banner goes.
    let listen = demo.http.clone();
    drop(demo);
    browser.wait_for(
        "return !document.getElementById('banner').hidden && document.getElementById('banner').textContent.includes('Disconnected')",
        Duration::from_secs(5),
        "the disconnect banner shows",
    );
    browser.screenshot("disconnected");
    readable(&browser);
    let demo = Demo::start(&access, &listen);
    browser.wait_for(
        "return document.getElementById('banner').hidden && !document.getElementById('wallboard').hidden",
        Duration::from_secs(20),
        "the page recovers",
    );
    let rest = Rest::login(&demo.http, "boss");
    let shown = matches_rest(&browser, &rest, Duration::from_secs(10));
    assert!(
        !shown["calls"].to_string().contains("WEBTESTCALL0001"),
        "the new run's snapshot replaced the old one"
    );
    browser.screenshot("recovered");

    // Logout ends the session: the gateway no longer knows the page's cookie.
    browser.click("#logout");
    browser.wait_for(
        "return !document.getElementById('login').hidden",
        Duration::from_secs(5),
        "the login form shows after logout",
    );
    let status = browser.command(
        "POST",
        "/execute/async",
        &json!({"script": "const done = arguments[0]; fetch('/api/v2/me').then((r) => done(r.status), () => done(0));", "args": []}),
    );
    assert_eq!(status, json!(401), "the session ended");
    eprintln!("wallboard test took {:?}", started.elapsed());
}

/// Open mode with a journal: no login, everything shown; the epoch survives a restart, so after one
/// the page resumes from its last position (`"resumed":true`) instead of taking a snapshot, and still
/// shows what REST reports, the calls it had before included.
#[test]
fn the_open_wallboard_resumes_after_a_restart_with_a_journal() {
    let dir = temp_dir("web-resume");
    let journal = dir.join("journal");
    let flags = ["--journal", journal.to_str().expect("a UTF-8 path")];
    let demo = Demo::start_with("127.0.0.1:0", &flags);
    let browser = Browser::start();
    browser.goto(&demo.url());
    browser.wait_for(
        "return document.body.dataset.subscribed === 'snapshot' && !document.getElementById('wallboard').hidden \
         && document.getElementById('logout').hidden && document.querySelectorAll('#agents-body tr[data-dn]').length > 0",
        Duration::from_secs(10),
        "the open wallboard shows without a login",
    );
    matches_rest(&browser, &Rest::open(&demo.http), Duration::from_secs(10));
    demo.send(&[json!({"event": "EventRinging", "ThisDN": "7099", "ConnID": "7e57000000000002",
                       "CallUUID": "WEBRESUMECALL01", "CallType": "Inbound", "OtherDN": "+33142685310"})]);
    browser.wait_for(
        "return !!document.querySelector('#calls-body tr[data-call-id=\"WEBRESUMECALL01\"]')",
        Duration::from_secs(1),
        "the call shows",
    );
    let listen = demo.http.clone();
    drop(demo);
    browser.wait_for(
        "return !document.getElementById('banner').hidden",
        Duration::from_secs(5),
        "the disconnect banner shows",
    );
    let demo = Demo::start_with(&listen, &flags);
    browser.wait_for(
        "return document.getElementById('banner').hidden && document.body.dataset.subscribed === 'resumed'",
        Duration::from_secs(20),
        "the page resumes",
    );
    let shown = matches_rest(&browser, &Rest::open(&demo.http), Duration::from_secs(10));
    assert!(
        shown["calls"].to_string().contains("WEBRESUMECALL01"),
        "the call from before the restart is still shown: {shown}"
    );
    browser.screenshot("resumed");
}

/// (d) An agent sees its own device and calls only, and no wallboard.
#[test]
fn an_agent_sees_only_its_own_device() {
    let dir = temp_dir("web-agent");
    let access = access_file(&dir);
    let demo = Demo::start(&access, "127.0.0.1:0");
    let browser = Browser::start();
    log_in(&browser, &demo, "agent3");
    browser.wait_for(
        "return !document.getElementById('agent-view').hidden && document.getElementById('banner').hidden \
         && document.querySelectorAll('#my-devices-body tr[data-dn]').length > 0",
        Duration::from_secs(10),
        "the agent's view shows",
    );
    let rest = Rest::login(&demo.http, "agent3");
    let start = Instant::now();
    loop {
        let shown = browser.shown();
        assert_eq!(shown["view"], "agent");
        assert_eq!(shown["wallboard"], false);
        let devices: Vec<&str> = shown["myDevices"]
            .as_array()
            .expect("devices")
            .iter()
            .filter_map(|row| row[0].as_str())
            .collect();
        assert_eq!(devices, ["7003"], "only its own device");
        assert!(
            shown["myCalls"]
                .as_array()
                .expect("calls")
                .iter()
                .all(|row| row[0] == "7003"),
            "only its own calls: {shown}"
        );
        let (_, mine) = rest.get("/api/v2/me/calls?fields=*");
        let mut expected: Vec<Value> = mine["calls"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|call| call["state"] != "Released")
            .map(|call| json!(["7003", call["id"], call["state"]]))
            .collect();
        expected.sort_by_key(Value::to_string);
        if sorted(&shown["myCalls"]) == expected {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the agent's calls are not REST's: {shown} vs {expected:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    browser.screenshot("agent");
}

/// The page and its files: content types, caching and the CSP, without a browser.
#[test]
fn the_page_is_served_with_its_policy() {
    let demo = Demo::start(&access_file(&temp_dir("web-files")), "127.0.0.1:0");
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/app.css", "text/css; charset=utf-8"),
        ("/favicon.svg", "image/svg+xml"),
    ] {
        let (status, headers, _) = http_request(&demo.http, "GET", path, &[]);
        assert_eq!(status, 200, "{path}");
        assert_eq!(
            header(&headers, "content-type"),
            Some(content_type),
            "{path}"
        );
        assert_eq!(
            header(&headers, "cache-control"),
            Some("no-cache"),
            "{path}"
        );
        let csp = header(&headers, "content-security-policy").expect("a CSP");
        assert!(
            csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
            "{csp}"
        );
        let etag = header(&headers, "etag").expect("an ETag").to_owned();
        let (status, _, _) = http_request(&demo.http, "GET", path, &[("If-None-Match", &etag)]);
        assert_eq!(status, 304, "{path} revalidates");
    }
    // Logout ends the session and expires the cookie.
    let rest = Rest::login(&demo.http, "boss");
    let cookie = rest.cookie.clone().expect("a cookie");
    assert_eq!(rest.get("/api/v2/me").0, 200);
    let (status, headers, _) = http_request(
        &demo.http,
        "POST",
        "/callgate/logout",
        &[("Cookie", &cookie)],
    );
    assert_eq!(status, 204);
    let expired = header(&headers, "set-cookie").expect("the cookie expired");
    assert!(
        expired.starts_with("JSESSIONID=;") && expired.contains("Max-Age=0"),
        "{expired}"
    );
    assert_eq!(rest.get("/api/v2/me").0, 401, "the session is gone");
    let (status, _, _) = http_request(&demo.http, "POST", "/callgate/logout", &[]);
    assert_eq!(status, 204, "a logout without a session is no error");
}

// ---- the queues panel, against a stand-in gateway ----

/// A stand-in for the gateway in open mode: serves the page's files, answers `/api/v2/me` 401 and
/// `/api/v2/devices` with an empty list (so the page runs open), and on `/api/v2/ws` answers a
/// subscription with the snapshot `snapshot` builds for it (frames, with `more`), then sends whatever
/// frames the test queues. It stands in for what the real gateway does not serve yet (queue resources,
/// api.md) so the page's queue panel is tested against the protocol's exact shapes.
struct FakeGateway {
    addr: String,
    frames: std::sync::mpsc::Sender<String>,
    subscribes: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl FakeGateway {
    fn start(snapshot: fn(&str) -> Vec<Value>) -> FakeGateway {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address").to_string();
        let (frames, queued) = std::sync::mpsc::channel::<String>();
        let queued = std::sync::Arc::new(std::sync::Mutex::new(queued));
        let subscribes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::clone(&subscribes);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let queued = std::sync::Arc::clone(&queued);
                let seen = std::sync::Arc::clone(&seen);
                std::thread::spawn(move || serve_fake(stream, snapshot, &queued, &seen));
            }
        });
        FakeGateway {
            addr,
            frames,
            subscribes,
        }
    }
}

fn serve_fake(
    mut stream: std::net::TcpStream,
    snapshot: fn(&str) -> Vec<Value>,
    queued: &std::sync::Mutex<std::sync::mpsc::Receiver<String>>,
    seen: &std::sync::Mutex<Vec<Value>>,
) {
    use std::io::{Read, Write};
    use tokio_tungstenite::tungstenite::{self, Message};
    let mut head = [0u8; 2048];
    let Ok(n) = stream.peek(&mut head) else {
        return;
    };
    let first = String::from_utf8_lossy(&head[..n]).into_owned();
    let path = first.split_whitespace().nth(1).unwrap_or("/").to_owned();
    if path != "/api/v2/ws" {
        // One request per connection: read its head, answer, close.
        let mut request = Vec::new();
        let mut byte = [0u8; 1];
        while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
            request.push(byte[0]);
        }
        let (status, content_type, body): (&str, &str, &str) = match path.as_str() {
            "/" => ("200 OK", "text/html", include_str!("../web/index.html")),
            "/app.js" => ("200 OK", "text/javascript", include_str!("../web/app.js")),
            "/app.css" => ("200 OK", "text/css", include_str!("../web/app.css")),
            "/api/v2/devices" => (
                "200 OK",
                "application/json",
                r#"{"statusCode":0,"devices":[]}"#,
            ),
            _ => (
                "401 Unauthorized",
                "application/json",
                r#"{"statusCode":20,"statusMessage":"Access denied"}"#,
            ),
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return;
    }
    let Ok(mut ws) = tungstenite::accept(stream) else {
        return;
    };
    let _ = ws
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(20)));
    let mut subscribed = false;
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => {
                let request: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                if request["type"] == "subscribe" {
                    seen.lock().expect("lock").push(request.clone());
                    let sub = request["sub"].as_str().unwrap_or("");
                    for frame in snapshot(sub) {
                        if ws.send(Message::text(frame.to_string())).is_err() {
                            return;
                        }
                    }
                    subscribed = true;
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(error))
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
        if subscribed {
            let frames: Vec<String> = queued.lock().expect("lock").try_iter().collect();
            for frame in frames {
                if ws.send(Message::text(frame)).is_err() {
                    return;
                }
            }
        }
    }
}

/// A queue resource as api.md shapes it, with calls waiting since `waits` seconds ago.
fn queue(dn: &str, waits: &[i64], service_level: Value) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    let waiting: Vec<Value> = waits
        .iter()
        .enumerate()
        .map(|(i, secs)| {
            let at = now - secs * 1000;
            let since = time_text(at);
            json!({"callId": format!("CALL{dn}{i}"), "connId": format!("00000000000{dn}{i}"), "since": since})
        })
        .collect();
    json!({"id": format!("queue-{dn}"), "phoneNumber": dn, "server": "SIPTS",
           "waiting": waiting, "waitingCount": waits.len(),
           "longestWaitSecs": waits.iter().max().copied().unwrap_or(0),
           "today": {"entered": 12, "diverted": 9, "abandoned": 1, "answeredWithinServiceLevel": 7,
                     "serviceLevel": service_level}})
}

/// RFC 3339 UTC with milliseconds, for `ms` since the Unix epoch (civil date from days, Howard Hinnant's
/// algorithm, to need no date library).
fn time_text(ms: i64) -> String {
    let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000
    )
}

/// The queues panel: a snapshot over two frames (`more`), the longest wait ticking from the oldest
/// `since`, the service level as a percentage or `—`, and a queue notification shown within a second.
#[test]
fn the_queues_panel_follows_queue_snapshots_and_notifications() {
    let fake = FakeGateway::start(|sub| {
        vec![
            json!({"type": "subscribed", "sub": sub, "epoch": "fake", "seq": 10, "resumed": false,
                   "more": true, "calls": [], "devices": [],
                   "queues": [queue("8001", &[65, 20], json!(87.5))]}),
            json!({"type": "snapshot", "sub": sub, "calls": [], "devices": [],
                   "queues": [queue("8002", &[], Value::Null)], "more": false}),
        ]
    });
    let browser = Browser::start();
    browser.goto(&format!("http://{}/", fake.addr));
    browser.wait_for(
        "return document.querySelectorAll('#queues-body tr[data-queue-id]').length === 2",
        Duration::from_secs(10),
        "both queues of the two-frame snapshot show",
    );
    let subscribes = fake.subscribes.lock().expect("lock").clone();
    assert_eq!(
        subscribes[0]["topics"],
        json!(["calls", "devices", "queues"])
    );
    let cells = "return [...document.querySelectorAll('#queues-body tr[data-queue-id]')].map((row) => \
                 [...row.children].map((cell) => cell.textContent))";
    let shown = browser.eval(cells);
    assert_eq!(shown[0][0], "8001 (SIPTS)");
    assert_eq!(shown[0][1], "2");
    let wait = shown[0][2].as_str().expect("longest wait");
    assert!(wait == "1:05" || wait == "1:06", "{wait}");
    assert_eq!(shown[0][3], "88%");
    assert_eq!((&shown[0][4], &shown[0][5]), (&json!("12"), &json!("1")));
    assert_eq!(shown[1][1], "0");
    assert_eq!((&shown[1][2], &shown[1][3]), (&json!("—"), &json!("—")));
    // The longest wait ticks without an event.
    browser.wait_for(
        "return document.querySelector('#queues-body tr[data-queue-id=\"queue-8001\"] td:nth-of-type(2)').textContent === '1:07'",
        Duration::from_secs(4),
        "the longest wait ticks",
    );
    browser.screenshot("queues");
    // A queue notification.
    fake.frames
        .send(
            json!({"type": "notification", "epoch": "fake", "seq": 11, "channel": "/callgate/queues",
                   "data": {"messageType": "QueueStateChangeMessage",
                            "queue": queue("8002", &[3, 30], json!(50))}})
            .to_string(),
        )
        .expect("frame queued");
    browser.wait_for(
        "const row = document.querySelector('#queues-body tr[data-queue-id=\"queue-8002\"]'); \
         return row.dataset.waiting === '2' && row.children[3].textContent === '50%' \
           && ['0:30', '0:31'].includes(row.children[2].textContent)",
        Duration::from_secs(1),
        "the queue's change shows",
    );
}
