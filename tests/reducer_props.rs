//! Property tests of the reducer: whatever the order of events, duplicates or replays, it never panics,
//! Released stays final, ids never change, a device notification always shows a change, and the result is
//! a pure function of the input.

mod support;

use support::arb::arb_stream;

use callgate::reduce::{Disposition, Fold, Notifications, Topic};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::HashMap;

struct Folded {
    notifications: Vec<(Topic, u64, String)>,
    dispositions: Vec<Disposition>,
    finals: Vec<String>,
}

fn fold_lines(reducer: &mut Fold, lines: &[String]) -> Folded {
    let mut out = Notifications::default();
    let mut notifications = Vec::new();
    let mut dispositions = Vec::new();
    for line in lines {
        let disposition = reducer
            .apply_line(line.as_bytes(), &mut out)
            .expect("valid line");
        dispositions.push(disposition);
        notifications.extend(
            out.iter()
                .map(|n| (n.topic, n.resource, n.members.to_owned())),
        );
        out.clear();
    }
    Folded {
        notifications,
        dispositions,
        finals: finals(reducer),
    }
}

fn finals(reducer: &Fold) -> Vec<String> {
    reducer
        .reducer()
        .call_numbers()
        .into_iter()
        .filter_map(|n| reducer.reducer().view(n))
        .map(|view| {
            let mut json = String::new();
            view.write(&mut json);
            json
        })
        .collect()
}

fn call_of(members: &str) -> Value {
    let notification: Value =
        serde_json::from_str(&format!("{{{members}}}")).expect("notification is JSON");
    notification["data"]["call"].clone()
}

fn check_invariants(folded: &Folded) -> Result<(), TestCaseError> {
    let mut ids: HashMap<u64, Value> = HashMap::new();
    let mut released: HashMap<u64, bool> = HashMap::new();
    let mut devices: HashMap<u64, Value> = HashMap::new();
    let mut queues: HashMap<u64, Value> = HashMap::new();
    for (topic, resource, members) in &folded.notifications {
        if *topic == Topic::Queues {
            let notification: Value =
                serde_json::from_str(&format!("{{{members}}}")).expect("notification is JSON");
            prop_assert_eq!(&notification["channel"], "/callgate/queues");
            let queue = notification["data"]["queue"].clone();
            check_queue(&queue)?;
            if let Some(before) = queues.get(resource) {
                prop_assert_eq!(&before["id"], &queue["id"]);
                prop_assert_ne!(before, &queue, "a queue notification without a change");
            }
            queues.insert(*resource, queue);
            continue;
        }
        if *topic == Topic::Devices {
            let notification: Value =
                serde_json::from_str(&format!("{{{members}}}")).expect("notification is JSON");
            prop_assert_eq!(&notification["channel"], "/v2/me/devices");
            let device = notification["data"]["devices"][0].clone();
            if let Some(before) = devices.get(resource) {
                prop_assert_eq!(&before["id"], &device["id"]);
                prop_assert_ne!(before, &device, "a device notification without a change");
            }
            devices.insert(*resource, device);
            continue;
        }
        let call = call_of(members);
        prop_assert!(
            !released.get(resource).copied().unwrap_or(false),
            "notification after Released: {members}"
        );
        released.insert(*resource, call["state"] == "Released");
        let id = ids.entry(*resource).or_insert_with(|| call["id"].clone());
        prop_assert_eq!(&*id, &call["id"]);
        if call["state"] == "Released" {
            prop_assert_eq!(&call["capabilities"], &json!([]));
        }
    }
    Ok(())
}

/// What every version of a queue resource holds (api.md; docs/semantics.md, "Queues").
fn check_queue(queue: &Value) -> Result<(), TestCaseError> {
    let waiting = queue["waiting"].as_array().expect("waiting");
    let count = queue["waitingCount"].as_u64().expect("waitingCount");
    prop_assert_eq!(waiting.len() as u64, count.min(200), "{}", queue);
    let mut conns: Vec<&str> = waiting
        .iter()
        .filter_map(|w| w["connId"].as_str())
        .collect();
    conns.sort_unstable();
    conns.dedup();
    prop_assert_eq!(conns.len(), waiting.len(), "a call waits once: {}", queue);
    if count == 0 {
        prop_assert!(
            queue["longestWaitSecs"] == 0 && waiting.is_empty(),
            "{}",
            queue
        );
    }
    let today = &queue["today"];
    let number = |key: &str| today[key].as_u64().expect("a count");
    prop_assert!(
        number("answeredWithinServiceLevel") <= number("diverted"),
        "{}",
        queue
    );
    match &today["serviceLevel"] {
        Value::Null => {}
        level => {
            let level = level.as_f64().expect("a number");
            prop_assert!((0.0..=100.0).contains(&level), "{}", queue);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: support::cases(400), ..ProptestConfig::default() })]

    #[test]
    fn random_streams_keep_the_invariants(lines in arb_stream(60)) {
        let folded = fold_lines(&mut Fold::default(), &lines);
        check_invariants(&folded)?;
    }

    #[test]
    fn folding_is_deterministic(lines in arb_stream(60)) {
        let a = fold_lines(&mut Fold::default(), &lines);
        let b = fold_lines(&mut Fold::default(), &lines);
        prop_assert_eq!(a.notifications, b.notifications);
        prop_assert_eq!(a.finals, b.finals);
    }

    #[test]
    fn replaying_an_applied_prefix_changes_nothing(lines in arb_stream(60), cut in 0usize..60) {
        let numbered: Vec<String> = lines
            .iter()
            .filter(|l| l.contains("EventSequenceNumber"))
            .cloned()
            .collect();
        let mut reducer = Fold::default();
        let first = fold_lines(&mut reducer, &numbered);
        let prefix = &numbered[..cut.min(numbered.len())];
        let replay = fold_lines(&mut reducer, prefix);
        prop_assert!(replay.notifications.is_empty());
        prop_assert!(replay.dispositions.iter().all(|d| *d == Disposition::Duplicate));
        prop_assert_eq!(first.finals, replay.finals);
    }

    #[test]
    fn resent_duplicates_are_invisible(lines in arb_stream(40), resend in proptest::collection::vec(0usize..40, 0..20)) {
        let numbered: Vec<String> = lines
            .iter()
            .filter(|l| l.contains("EventSequenceNumber"))
            .cloned()
            .collect();
        prop_assume!(!numbered.is_empty());
        // Insert each resent line right after some later original, as a reconnecting T-Server would.
        let mut with_dups = Vec::new();
        for (i, line) in numbered.iter().enumerate() {
            with_dups.push(line.clone());
            for &r in &resend {
                if r % numbered.len() <= i && r % 3 == i % 3 {
                    with_dups.push(numbered[r % numbered.len()].clone());
                }
            }
        }
        let clean = fold_lines(&mut Fold::default(), &numbered);
        let dirty = fold_lines(&mut Fold::default(), &with_dups);
        prop_assert_eq!(clean.notifications, dirty.notifications);
        prop_assert_eq!(clean.finals, dirty.finals);
    }
}

fn fixture_lines() -> Vec<Vec<String>> {
    let mut scenarios = Vec::new();
    for dir in support::fixture_dirs() {
        if dir.ends_with("16-bad-input") {
            continue;
        }
        // Lines a scenario expects to be rejected are left out: the interleavings are of valid events.
        let rejected: Vec<usize> = std::fs::read_to_string(dir.join("rejects.txt"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if let Ok(text) = std::fs::read_to_string(dir.join("events.ndjson")) {
            scenarios.push(
                text.lines()
                    .enumerate()
                    .filter(|(i, l)| !l.trim().is_empty() && !rejected.contains(&(i + 1)))
                    .map(|(_, l)| l.to_owned())
                    .collect(),
            );
        }
    }
    scenarios
}

proptest! {
    #![proptest_config(ProptestConfig { cases: support::cases(200), ..ProptestConfig::default() })]

    /// The events of the real scenarios, in any order (each scenario shuffled, then all interleaved).
    #[test]
    fn any_interleaving_of_scenario_events_keeps_the_invariants(seed in any::<u64>()) {
        let scenarios = fixture_lines();
        let mut lines: Vec<String> = scenarios.into_iter().flatten().collect();
        // A deterministic shuffle from the seed (Fisher-Yates with a xorshift generator).
        let mut state = seed | 1;
        for i in (1..lines.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            lines.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let folded = fold_lines(&mut Fold::default(), &lines);
        check_invariants(&folded)?;
        let again = fold_lines(&mut Fold::default(), &lines);
        prop_assert_eq!(folded.notifications, again.notifications);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: support::cases(2000), ..ProptestConfig::default() })]

    /// Any bytes at all: a clean rejection or an event, never a panic, and the reducer takes whatever
    /// decodes.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut reducer = Fold::default();
        let mut out = Notifications::default();
        let _ = reducer.apply_line(&bytes, &mut out);
    }

    /// Real event lines with bytes flipped, cut or repeated: the decoder and the reducer stay whole.
    #[test]
    fn mangled_scenario_lines_never_panic(
        seed in any::<u64>(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let scenarios = fixture_lines();
        let lines: Vec<String> = scenarios.into_iter().flatten().collect();
        let mut line = lines[(seed as usize) % lines.len()].clone().into_bytes();
        for (at, byte) in edits {
            if !line.is_empty() {
                let at = at % line.len();
                line[at] = byte;
            }
        }
        line.truncate(cut % (line.len() + 1) + line.len() / 2);
        let mut reducer = Fold::default();
        let mut out = Notifications::default();
        for line in lines.iter().take(20) {
            let _ = reducer.apply_line(line.as_bytes(), &mut out);
        }
        let _ = reducer.apply_line(&line, &mut out);
    }
}
