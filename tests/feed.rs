//! `GET /callgate/feed` (analytics.md): the export's records, live and lossless. From a position the
//! feed's buffer no longer holds it catches up from the journal and goes on live without a gap; a
//! position the journal no longer holds gets 410 with the oldest; a reader too slow for the buffer is
//! disconnected and resumes with `from`; only administrators may read it.

mod support;

use serde_json::Value;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;
use support::durable::{BASE_URL, TServer, an_hour, send_acked_and_settle};
use support::{Gateway, temp_dir};

fn start(dir: &Path, extra: &[&str]) -> Gateway {
    let journal = dir.join("journal");
    let mut args = vec![
        "--base-url",
        BASE_URL,
        "--released-linger",
        "1",
        "--journal",
        journal.to_str().expect("path"),
    ];
    // The feed is off unless given a buffer: 64 MiB, unless the test says otherwise.
    if !extra.contains(&"--feed-buffer-bytes") {
        args.extend(["--feed-buffer-bytes", "67108864"]);
    }
    args.extend(extra);
    Gateway::start(&args)
}

/// The records `callgate export` makes of the journal now.
fn export(dir: &Path) -> Vec<String> {
    support::durable::export(&dir.join("journal"), &[])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A reader of the feed: an HTTP/1.1 request, then its chunked body line by line.
struct FeedReader {
    body: BufReader<TcpStream>,
    status: u16,
    /// Bytes of the current chunk not read yet.
    left: usize,
    partial: Vec<u8>,
}

impl FeedReader {
    fn open(gateway: &Gateway, query: &str, authorization: Option<&str>) -> FeedReader {
        // A small receive window, so that a reader that stops reading holds little in its socket.
        let address: std::net::SocketAddr = gateway.http.parse().expect("address");
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket.set_recv_buffer_size(32 * 1024).expect("SO_RCVBUF");
        socket.connect(&address.into()).expect("connects");
        let mut stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        write!(
            stream,
            "GET /callgate/feed{query} HTTP/1.1\r\nHost: callgate.test\r\nConnection: close\r\n{auth}\r\n"
        )
        .expect("request");
        let mut body = BufReader::new(stream);
        let mut line = String::new();
        body.read_line(&mut line).expect("status line");
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("status");
        loop {
            line.clear();
            body.read_line(&mut line).expect("header");
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        FeedReader {
            body,
            status,
            left: 0,
            partial: Vec::new(),
        }
    }

    /// The next whole line, `None` at the end of the body.
    fn line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.partial.drain(..=end).collect();
                return Some(
                    String::from_utf8(line)
                        .expect("UTF-8")
                        .trim_end()
                        .to_owned(),
                );
            }
            if self.left == 0 {
                let mut size = String::new();
                self.body.read_line(&mut size).ok()?;
                let size = usize::from_str_radix(size.trim(), 16).ok()?;
                if size == 0 {
                    return None;
                }
                self.left = size;
            }
            let mut chunk = vec![0; self.left.min(64 * 1024)];
            let got = self.body.read(&mut chunk).ok()?;
            if got == 0 {
                return None;
            }
            self.partial.extend_from_slice(&chunk[..got]);
            self.left -= got;
            if self.left == 0 {
                let mut crlf = [0u8; 2];
                self.body.read_exact(&mut crlf).ok()?;
            }
        }
    }

    #[track_caller]
    fn lines(&mut self, count: usize) -> Vec<String> {
        let caller = std::panic::Location::caller();
        (0..count)
            .map(|n| {
                self.line().unwrap_or_else(|| {
                    panic!("{caller}: the feed ended after {n} of {count} lines")
                })
            })
            .collect()
    }

    /// A body that is not chunked (an error's), to its end.
    fn body_text(&mut self) -> String {
        let mut text = String::new();
        let _ = self.body.read_to_string(&mut text);
        text
    }

    /// The rest of the body (the stream must end).
    fn rest(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.line()).collect()
    }
}

fn send_and_settle(gateway: &Gateway, lines: &[(u64, String)]) {
    send_acked_and_settle(gateway, lines, Duration::from_millis(1800));
}

#[test]
fn from_a_position_the_buffer_lost_the_feed_catches_up_from_the_journal_and_goes_on_live() {
    let dir = temp_dir("feed-catch-up");
    let hour = an_hour(17);
    let (first, second) = hour.split_at(hour.len() / 3);
    let second = &second[..second.len() / 3];
    // A buffer of 512 KiB: the first third of the hour (about 2 MB of records) is long gone from it.
    let gateway = start(&dir, &["--feed-buffer-bytes", "524288"]);
    send_and_settle(&gateway, first);
    let before = export(&dir);
    assert!(before.len() > 1000);

    let mut reader = FeedReader::open(&gateway, "?from=1", None);
    assert_eq!(reader.status, 200);
    let got = reader.lines(before.len());
    assert!(got == before, "the catch-up is not the export");

    // Live from there on, with no gap at the hand-over, read as it comes (a reader that stops reading
    // is soon behind a buffer this small).
    let live = std::thread::spawn(move || reader.rest());
    send_and_settle(&gateway, second);
    let after = export(&dir);

    // From a position the buffer holds: straight from it, the same records.
    let last_cdr = after
        .iter()
        .rposition(|line| line.contains("\"type\":\"callgate.call.cdr.v1\""))
        .expect("a CDR");
    let recent: Value = serde_json::from_str(&after[last_cdr - 3]).expect("JSON");
    let position = recent["position"].as_str().expect("position");
    let from: u64 = position.parse().expect("digits");
    let mut recent_reader = FeedReader::open(&gateway, &format!("?from={from}&types=cdr"), None);
    let want: Vec<&String> = after
        .iter()
        .filter(|line| {
            let record: Value = serde_json::from_str(line).expect("JSON");
            record["type"] == "callgate.call.cdr.v1"
                && record["position"].as_str().expect("position") >= position
        })
        .collect();
    assert!(!want.is_empty());
    let got = recent_reader.lines(want.len());
    assert_eq!(got.iter().collect::<Vec<_>>(), want);

    assert!(gateway.terminate().success(), "shutdown ends the streams");
    let more = live.join().expect("the live reader");
    assert!(
        more == after[before.len()..],
        "the live part is not the export's"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_reader_too_slow_is_disconnected_and_resumes_with_from() {
    let dir = temp_dir("feed-slow");
    let hour = an_hour(19);
    // A buffer of 1 MiB, and the hour's records are about 9 MB.
    let gateway = start(&dir, &["--feed-buffer-bytes", "1048576"]);
    let mut slow = FeedReader::open(&gateway, "?types=event,notification,cdr", None);
    assert_eq!(slow.status, 200);
    // It reads its first record, then nothing while the hour goes in: the socket's buffers fill, then
    // the feed's buffer turns over under it.
    let ingest = gateway.ingest.clone();
    let sender = std::thread::spawn(move || {
        let mut tserver = TServer::connect_to(&ingest);
        tserver.send(&hour);
        let last = hour.last().expect("events").0;
        assert_eq!(
            tserver.acked_up_to(last, Duration::from_secs(60)),
            Some(last)
        );
    });
    let mut got = vec![slow.line().expect("a first record")];
    sender.join().expect("sent");
    std::thread::sleep(Duration::from_millis(1800));
    got.extend(slow.rest());
    let all = export(&dir);
    assert!(
        !got.is_empty() && got.len() < all.len(),
        "{} of {} records before the disconnection",
        got.len(),
        all.len()
    );
    // Resumed from the last position it has (the records of that position may come again).
    let last: Value = serde_json::from_str(got.last().expect("a line")).expect("JSON");
    let position = last["position"].as_str().expect("position");
    let from: u64 = position.parse().expect("digits");
    let mut resumed = FeedReader::open(&gateway, &format!("?from={from}"), None);
    let first_missing = all
        .iter()
        .position(|line| !got.contains(line))
        .expect("missed some");
    let tail_len = all.len()
        - all
            .iter()
            .position(|l| l.contains(&format!("\"position\":\"{position}\"")))
            .expect("position");
    let more = resumed.lines(tail_len);
    let mut ids: HashSet<String> = HashSet::new();
    for line in got.iter().chain(&more) {
        let record: Value = serde_json::from_str(line).expect("JSON");
        ids.insert(record["id"].as_str().expect("id").to_owned());
    }
    let want: HashSet<String> = all
        .iter()
        .map(|line| {
            let record: Value = serde_json::from_str(line).expect("JSON");
            record["id"].as_str().expect("id").to_owned()
        })
        .collect();
    assert_eq!(ids, want, "nothing lost (first missed: {first_missing})");
    assert!(gateway.terminate().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_position_the_journal_no_longer_holds_gets_410_with_the_oldest() {
    let dir = temp_dir("feed-gone");
    let hour = an_hour(23);
    // Small segments; the first ones are then deleted, as retention does once nothing needs them
    // (here the agents' logins would hold them for as long as they stay logged in).
    let gateway = start(&dir, &["--journal-segment-bytes", "16384"]);
    send_and_settle(&gateway, &hour[..hour.len() / 4]);
    assert!(gateway.terminate().success());
    let mut segments: Vec<_> = std::fs::read_dir(dir.join("journal"))
        .expect("journal")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.to_string_lossy().ends_with(".log"))
        .collect();
    segments.sort();
    assert!(segments.len() > 3, "{segments:?}");
    for old in &segments[..2] {
        std::fs::remove_file(old).expect("delete a segment");
    }
    let gateway = start(&dir, &["--journal-segment-bytes", "16384"]);
    let mut reader = FeedReader::open(&gateway, "?from=1", None);
    assert_eq!(reader.status, 410);
    let body: Value = serde_json::from_str(&reader.body_text()).expect("JSON");
    let oldest: u64 = body["oldest"]
        .as_str()
        .expect("oldest")
        .parse()
        .expect("digits");
    let kept = segments[2]
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_string();
    assert_eq!(format!("events-{oldest:020}.log"), kept);
    let reader = FeedReader::open(&gateway, &format!("?from={oldest}"), None);
    assert_eq!(reader.status, 200);
    drop(reader);
    assert!(gateway.terminate().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn only_administrators_read_the_feed() {
    let dir = temp_dir("feed-admin");
    let pw = callgate::access::password::hash(b"pw").expect("hash");
    let access = dir.join("access.toml");
    std::fs::write(
        &access,
        format!(
            "[[user]]\nusername = \"root\"\npassword = \"{pw}\"\nroles = [\"admin\"]\n\n\
             [[user]]\nusername = \"boss\"\npassword = \"{pw}\"\nroles = [\"supervisor\"]\n"
        ),
    )
    .expect("access file");
    let gateway = start(&dir, &["--access", access.to_str().expect("path")]);
    let basic = |user: &str| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:pw"))
        )
    };
    assert_eq!(FeedReader::open(&gateway, "", None).status, 401);
    assert_eq!(
        FeedReader::open(&gateway, "", Some(&basic("boss"))).status,
        403
    );
    assert_eq!(
        FeedReader::open(&gateway, "", Some(&basic("root"))).status,
        200
    );
    assert!(gateway.terminate().success());
    let _ = std::fs::remove_dir_all(&dir);
}
