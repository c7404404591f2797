//! Black-box tests of `callgate sim`: the real binary, its `--mix` option, its exit statuses, and output
//! that folds cleanly (callgate::reduce, as tests/sim_consistency.rs does).

use callgate::ingest::sim::{MIX_FIELDS, Mix};
use callgate::reduce::{CallState, Counts, Disposition, Fold, Notifications};
use serde_json::Value;
use std::process::{Command, Output};

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_callgate"))
        .arg("sim")
        .args(args)
        .output()
        .expect("callgate runs")
}

/// The event lines of a successful run.
fn events(args: &[&str]) -> Vec<Value> {
    let out = sim(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// What folding `events` gave, after checking it is clean: nothing rejected, duplicated or ignored, the
/// only orphans are EventAbandoned at a queue (callers who hung up there), every call ends Released.
fn fold_cleanly(events: &[Value]) -> Counts {
    let mut reducer = Fold::default();
    let mut out = Notifications::default();
    let mut counts = Counts::default();
    for event in events {
        let line = event.to_string();
        let outcome = reducer.apply_line(line.as_bytes(), &mut out);
        counts.record(&outcome);
        if matches!(outcome, Ok(Disposition::Orphan)) {
            assert_eq!(event["event"], "EventAbandoned", "{line}");
            assert!(
                event["ThisDN"].as_str().unwrap().starts_with("80"),
                "{line}"
            );
        }
        out.clear();
    }
    assert_eq!(counts.rejected, 0);
    assert_eq!(counts.duplicates, 0);
    assert_eq!(counts.ignored, 0);
    for number in reducer.reducer().call_numbers() {
        let (call, device) = reducer.reducer().call(number).unwrap();
        assert_eq!(
            call.state,
            CallState::Released,
            "{} at {}",
            call.id,
            device.dn
        );
    }
    counts
}

fn count(events: &[Value], test: impl Fn(&Value) -> bool) -> usize {
    events.iter().filter(|e| test(e)).count()
}

fn conference_member_added(event: &Value) -> bool {
    event["event"] == "EventPartyAdded" && event["ThirdPartyDNRole"] == "RoleConferenceMember"
}

const CENTER: [&str; 10] = [
    "--agents",
    "60",
    "--calls-per-second",
    "0.2",
    "--calls",
    "150",
    "--seed",
    "11",
    "--server",
    "SIP_A",
];

#[test]
fn conference_one_makes_conferences_and_still_folds_cleanly() {
    let args: Vec<&str> = CENTER
        .iter()
        .copied()
        .chain(["--mix", "conference=1"])
        .collect();
    let events = events(&args);
    fold_cleanly(&events);
    let answered = count(&events, |e| {
        e["event"] == "EventEstablished" && e["CallType"] == "Inbound" && e["ThisDNRole"].is_null()
    });
    let conferences = count(&events, conference_member_added) / 2;
    assert!(conferences > 50, "{conferences} conferences");
    // Every conference ends the consultation as Conferenced, and no call is transferred.
    assert_eq!(
        count(&events, |e| e["CallType"] == "Consult"
            && e["CallState"] == 2),
        conferences
    );
    assert_eq!(count(&events, |e| e["CallState"] == 1), 0);
    assert!(answered > 0);
    assert!(events.iter().all(|e| e["Server"] == "SIP_A"));
}

#[test]
fn conference_zero_makes_none() {
    let args: Vec<&str> = CENTER
        .iter()
        .copied()
        .chain(["--mix", "conference=0,two-step-transfer=0.3"])
        .collect();
    let events = events(&args);
    fold_cleanly(&events);
    assert_eq!(count(&events, conference_member_added), 0);
    assert_eq!(count(&events, |e| e["CallState"] == 2), 0);
    // The transfers asked for instead are there.
    assert!(count(&events, |e| e["event"] == "EventPartyChanged") > 10);
}

#[test]
fn abandon_queue_one_loses_every_inbound_caller_in_the_queue() {
    let args: Vec<&str> = CENTER
        .iter()
        .copied()
        .chain(["--mix", "abandon-queue=1,outbound=0,internal=0"])
        .collect();
    let events = events(&args);
    let counts = fold_cleanly(&events);
    let queued = count(&events, |e| e["event"] == "EventQueued");
    let abandoned = count(&events, |e| {
        e["event"] == "EventAbandoned" && e["ThisDN"] == e["ThisQueue"] && e["CallState"] == 21
    });
    assert_eq!(queued, 150);
    assert_eq!(abandoned, queued);
    // Each is its queue's (api.md), none an orphan.
    assert_eq!(counts.orphans, 0);
    // Nobody ever rang: no agent was used.
    assert_eq!(count(&events, |e| e["event"] == "EventRinging"), 0);
    assert_eq!(count(&events, |e| e.get("ConnID").is_some()), 2 * queued);
    // The agents logged in and out, and did nothing in between.
    let agent_events = count(&events, |e| e.get("AgentID").is_some());
    assert_eq!(
        count(&events, |e| e["event"] == "EventAgentLogin") * 2,
        agent_events
    );
    assert_eq!(events.len(), 2 * queued + agent_events);
}

#[test]
fn the_default_mix_folds_cleanly_without_orphans() {
    let events = events(&CENTER);
    let counts = fold_cleanly(&events);
    assert!(
        count(&events, |e| e["event"] == "EventAbandoned"
            && e["ThisQueue"] == e["ThisDN"])
            > 0,
        "the mix abandons in queues"
    );
    // Queue abandons are their queues' (api.md): no event of the simulator is an orphan.
    assert_eq!(counts.orphans, 0);
}

#[test]
fn same_seed_and_options_give_the_same_bytes() {
    let args = [
        "--calls",
        "80",
        "--seed",
        "5",
        "--mix",
        "hold=0.5,supervisor=0.4",
    ];
    let first = sim(&args);
    let second = sim(&args);
    assert_eq!(first.status.code(), Some(0));
    assert!(!first.stdout.is_empty());
    assert_eq!(first.stdout, second.stdout);
    let other_seed = sim(&[
        "--calls",
        "80",
        "--seed",
        "6",
        "--mix",
        "hold=0.5,supervisor=0.4",
    ]);
    assert_ne!(first.stdout, other_seed.stdout);
    let other_mix = sim(&[
        "--calls",
        "80",
        "--seed",
        "5",
        "--mix",
        "hold=0,supervisor=0.4",
    ]);
    assert_ne!(first.stdout, other_mix.stdout);
}

#[test]
fn a_bad_mix_exits_2_naming_the_key_or_value() {
    for (mix, named) in [
        ("hold=0.2,confrence=0.1", "`confrence`"),
        ("hold=1.5", "hold: `1.5`"),
        ("abandon-queue=lots", "abandon-queue: `lots`"),
        ("hold", "`hold`"),
        (
            "outbound=0.7,internal=0.7",
            "outbound (0.7) + internal (0.7)",
        ),
    ] {
        let out = sim(&["--calls", "5", "--mix", mix]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{mix}: {stderr}");
        assert!(out.stdout.is_empty(), "{mix}");
        assert!(stderr.starts_with("callgate sim: --mix: "), "{stderr}");
        assert!(stderr.contains(named), "{mix}: {stderr}");
    }
}

#[test]
fn help_lists_every_mix_name_with_its_default() {
    let out = sim(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    let mut defaults = Mix::default();
    for field in &MIX_FIELDS {
        let default = *(field.slot)(&mut defaults);
        let line = help
            .lines()
            .find(|line| line.split_whitespace().next() == Some(field.name))
            .unwrap_or_else(|| panic!("{} missing from --help", field.name));
        assert_eq!(
            line.split_whitespace().nth(1),
            Some(default.to_string().as_str()),
            "{line}"
        );
    }
    for option in ["--wrap-up-secs", "--patience-secs", "--server", "--start"] {
        assert!(help.contains(option), "{option}");
    }
}

#[test]
fn docs_list_every_mix_name_with_its_default() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/simulator.md"))
        .expect("docs/simulator.md");
    let mut defaults = Mix::default();
    for field in &MIX_FIELDS {
        let default = *(field.slot)(&mut defaults);
        let row = format!("| `{}` | {default} |", field.name);
        assert!(docs.contains(&row), "docs/simulator.md lacks {row}");
    }
}
