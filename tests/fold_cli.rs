//! Black-box tests of `callgate fold`: the real binary, its output streams and exit statuses (api.md).

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn callgate(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("callgate starts");
    let mut pipe = child.stdin.take().expect("stdin");
    let input = stdin.unwrap_or_default().to_vec();
    let writer = std::thread::spawn(move || {
        // The child may exit before reading everything (usage errors); a broken pipe is fine then.
        let _ = pipe.write_all(&input);
    });
    let output = child.wait_with_output().expect("callgate finishes");
    writer.join().expect("stdin writer");
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const RINGING: &str = r#"{"event":"EventRinging","EventSequenceNumber":1,"TimeinSecs":100,"ConnID":"a1","ThisDN":"7001","OtherDN":"7002"}"#;
const RELEASED: &str = r#"{"event":"EventReleased","EventSequenceNumber":2,"TimeinSecs":105,"ConnID":"a1","ThisDN":"7001"}"#;

#[test]
fn good_input_exits_zero_with_resources_and_a_summary() {
    let path = support::fixture("01-inbound-via-queue").join("events.ndjson");
    let out = callgate(&["fold", path.to_str().expect("utf-8 path")], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let expected =
        std::fs::read_to_string(path.with_file_name("resources.ndjson")).expect("expected file");
    let got: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let want: Vec<serde_json::Value> = expected
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(got, want);
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("callgate fold: "), "{stderr}");
    assert!(stderr.contains(" 0 rejected"), "{stderr}");
}

#[test]
fn rejected_lines_are_reported_with_file_and_line_and_exit_one() {
    let dir = tempdir();
    let path = dir.join("mixed.ndjson");
    std::fs::write(
        &path,
        format!(
            "{RINGING}\nnot json\n{{\"event\":\"EventRinging\",\"ThisDN\":\"7001\"}}\n{RELEASED}\n"
        ),
    )
    .expect("write input");
    let name = path.to_str().expect("utf-8 path");
    let out = callgate(&["fold", "--updates", name], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines[0], format!("{name}:2: not a JSON object"));
    assert_eq!(lines[1], format!("{name}:3: EventRinging: missing ConnID"));
    assert_eq!(
        lines[2],
        "callgate fold: 4 read, 2 applied, 0 duplicates, 0 orphans, 0 ignored, 2 rejected"
    );
    // The good lines around the bad ones still fold: Ringing then Released, seq 1 and 2.
    let stdout = text(&out.stdout);
    let seqs: Vec<u64> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["seq"]
                .as_u64()
                .expect("seq")
        })
        .collect();
    assert_eq!(seqs, [1, 2]);
    assert!(
        stdout
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("{\"seq\":2,\"channel\":\"/v2/me/calls\""))
    );
}

#[test]
fn standard_input_by_default_and_by_dash() {
    let input = format!("{RINGING}\n{RELEASED}\n");
    for args in [&["fold"][..], &["fold", "-"][..]] {
        let out = callgate(args, Some(input.as_bytes()));
        assert_eq!(out.status.code(), Some(0));
        let resource: serde_json::Value =
            serde_json::from_str(text(&out.stdout).trim()).expect("one resource");
        assert_eq!(resource["state"], "Released");
        assert_eq!(resource["duration"], "5");
        assert_eq!(resource["id"], "00000000000000a1");
    }
}

#[test]
fn base_url_shapes_every_uri() {
    let out = callgate(
        &["fold", "--base-url", "https://gws.example:8443/"],
        Some(RINGING.as_bytes()),
    );
    let resource: serde_json::Value =
        serde_json::from_str(text(&out.stdout).trim()).expect("resource");
    assert_eq!(
        resource["uri"],
        "https://gws.example:8443/api/v2/me/calls/00000000000000a1"
    );
    assert!(
        resource["deviceUri"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://gws.example:8443/api/v2/devices/"))
    );
}

#[test]
fn usage_and_io_errors_exit_two() {
    let out = callgate(&["fold", "/no/such/file.ndjson"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("/no/such/file.ndjson"),
        "{}",
        text(&out.stderr)
    );
    let out = callgate(&["fold", "--no-such-flag"], None);
    assert_eq!(out.status.code(), Some(2));
    let out = callgate(&["unknown-command"], None);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn an_over_long_line_is_rejected_and_reading_goes_on() {
    let mut input = Vec::new();
    input.extend_from_slice(RINGING.as_bytes());
    input.extend_from_slice(b"\n{\"event\":\"EventUserEvent\",\"pad\":\"");
    input.extend(std::iter::repeat_n(b'x', 1024 * 1024 + 10));
    input.extend_from_slice(b"\"}\n");
    input.extend_from_slice(RELEASED.as_bytes());
    let out = callgate(&["fold"], Some(&input));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("-:2: line longer than 1 MiB\n"),
        "{stderr}"
    );
    assert!(stderr.contains("3 read, 2 applied"), "{stderr}");
    let resource: serde_json::Value =
        serde_json::from_str(text(&out.stdout).trim()).expect("resource");
    assert_eq!(resource["state"], "Released");
}

#[test]
fn several_files_are_one_stream() {
    let dir = tempdir();
    let a = dir.join("a.ndjson");
    let b = dir.join("b.ndjson");
    std::fs::write(&a, format!("{RINGING}\n")).expect("write a");
    // The second file resends the first event (a duplicate) and then releases the call.
    std::fs::write(&b, format!("{RINGING}\n{RELEASED}\n")).expect("write b");
    let out = callgate(
        &["fold", a.to_str().expect("path"), b.to_str().expect("path")],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("3 read, 2 applied, 1 duplicates"),
        "{}",
        text(&out.stderr)
    );
}

fn tempdir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "callgate-fold-cli-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
