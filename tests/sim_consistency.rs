//! The simulator's traffic is valid and consistent: folding an hour of a 200-agent contact center gives no
//! rejected lines, no orphans, no duplicates, every call ends Released and every agent ends idle.

use callgate::reduce::{CallState, Counts, Notifications, Reducer};
use callgate::sim::{SimConfig, Simulator};
use std::collections::{HashMap, HashSet};

#[test]
fn an_hour_of_a_200_agent_center_folds_cleanly() {
    let config = SimConfig {
        seed: 42,
        agents: 200,
        queues: 6,
        supervisors: 8,
        // About 200 agents busy ~70% with ~4 minute handle times.
        calls_per_second: 0.6,
        duration_secs: Some(3600.0),
        ..SimConfig::default()
    };
    let mut reducer = Reducer::default();
    let mut out = Notifications::default();
    let mut counts = Counts::default();
    let mut live_per_dn: HashMap<String, i64> = HashMap::new();
    let mut most_live_per_agent = 0;
    let mut lines = 0u64;
    let mut seen = HashSet::new();
    for event in Simulator::new(config) {
        lines += 1;
        let outcome = reducer.apply_line(event.line.as_bytes(), &mut out);
        assert!(outcome.is_ok(), "{}: {outcome:?}", event.line);
        counts.record(&outcome);
        for notification in out.iter() {
            let (call, device) = reducer
                .call(notification.resource)
                .expect("notified call exists");
            // The first notification of a resource is its creation; its Released version its end.
            let mut delta = i64::from(seen.insert(notification.resource));
            if call.state == CallState::Released {
                delta -= 1;
            }
            let live = live_per_dn.entry(device.dn.to_string()).or_default();
            *live += delta;
            if device.dn.starts_with("70") {
                most_live_per_agent = most_live_per_agent.max(*live);
            }
        }
        out.clear();
    }
    assert!(lines > 10_000, "only {lines} events");
    assert_eq!(counts.rejected, 0);
    assert_eq!(counts.orphans, 0);
    assert_eq!(counts.duplicates, 0);
    assert_eq!(counts.ignored, 0);
    // An agent holds at most a customer call and a consultation at once.
    assert!(
        most_live_per_agent <= 2,
        "an agent had {most_live_per_agent} live calls"
    );
    for number in reducer.call_numbers() {
        let (call, device) = reducer.call(number).expect("call");
        assert_eq!(
            call.state,
            CallState::Released,
            "call {} at {} ended {:?}",
            call.id,
            device.dn,
            call.state
        );
    }
    assert!(live_per_dn.values().all(|&n| n == 0), "{live_per_dn:?}");
}
