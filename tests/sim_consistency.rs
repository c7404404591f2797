//! The simulator's traffic is valid and consistent: folding an hour of a 200-agent contact center gives no
//! rejected lines, no duplicates, nothing ignored, every call ends Released and every agent ends idle.
//!
//! No event is an orphan: the callers who hang up in a queue send their EventAbandoned to the queue DN,
//! where no call resource exists, and the queue resource takes it (api.md). So the test checks that the
//! queues counted exactly the abandons the simulator reports.

use callgate::ingest::sim::{SimConfig, Simulator};
use callgate::reduce::{CallState, Counts, Disposition, Fold, Notifications, Topic};
use std::collections::{HashMap, HashSet};

#[test]
fn an_hour_of_a_200_agent_center_folds_cleanly() {
    let queues = 6;
    let config = SimConfig {
        seed: 42,
        agents: 200,
        queues,
        supervisors: 8,
        // About 200 agents busy ~70% with ~4 minute handle times.
        calls_per_second: 0.6,
        duration_secs: Some(3600.0),
        ..SimConfig::default()
    };
    let queue_dns: HashSet<String> = (1..=queues).map(|i| (8000 + i).to_string()).collect();
    let mut simulator = Simulator::new(config);
    let mut reducer = Fold::default();
    let mut out = Notifications::default();
    let mut counts = Counts::default();
    let mut live_per_dn: HashMap<String, i64> = HashMap::new();
    let mut most_live_per_agent = 0;
    let mut lines = 0u64;
    let mut seen = HashSet::new();
    for event in simulator.by_ref() {
        lines += 1;
        let outcome = reducer.apply_line(event.line.as_bytes(), &mut out);
        assert!(outcome.is_ok(), "{}: {outcome:?}", event.line);
        counts.record(&outcome);
        assert!(
            !matches!(outcome, Ok(Disposition::Orphan)),
            "orphan {}",
            event.line
        );
        for notification in out.iter().filter(|n| n.topic == Topic::Calls) {
            let (call, device) = reducer
                .reducer()
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
    let stats = simulator.stats();
    assert!(lines > 10_000, "only {lines} events");
    assert_eq!(counts.rejected, 0);
    assert_eq!(counts.duplicates, 0);
    assert_eq!(counts.ignored, 0);
    // The queues counted every abandon in a queue, and they are the simulator's queues.
    assert!(stats.abandoned_in_queue > 0, "{stats:?}");
    assert_eq!(counts.orphans, 0);
    let (abandoned, dns) = queue_abandons(&reducer);
    assert_eq!(abandoned, stats.abandoned_in_queue, "{stats:?}");
    assert!(dns.is_subset(&queue_dns), "{dns:?}");
    // A center staffed for its load answers almost everyone: the abandon-queue share (3%) and few more.
    assert!(
        stats.abandoned_in_queue * 100 < stats.inbound * 10,
        "{stats:?}"
    );
    // An agent holds at most a customer call and a consultation at once.
    assert!(
        most_live_per_agent <= 2,
        "an agent had {most_live_per_agent} live calls"
    );
    for number in reducer.reducer().call_numbers() {
        let (call, device) = reducer.reducer().call(number).expect("call");
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

#[test]
fn an_understaffed_center_loses_callers_who_wait_too_long() {
    let config = SimConfig {
        seed: 9,
        agents: 10,
        queues: 2,
        supervisors: 1,
        // Four times the calls ten agents can take.
        calls_per_second: 0.2,
        duration_secs: Some(1800.0),
        patience_secs: 60.0,
        ..SimConfig::default()
    };
    let mut simulator = Simulator::new(config);
    let mut reducer = Fold::default();
    let mut out = Notifications::default();
    let mut counts = Counts::default();
    for event in simulator.by_ref() {
        let outcome = reducer.apply_line(event.line.as_bytes(), &mut out);
        counts.record(&outcome);
        out.clear();
    }
    let stats = simulator.stats();
    assert!(stats.abandoned_waiting * 4 > stats.inbound, "{stats:?}");
    assert_eq!(counts.orphans, 0);
    assert_eq!(
        queue_abandons(&reducer).0,
        stats.abandoned_in_queue,
        "{stats:?}"
    );
    assert_eq!(counts.rejected + counts.duplicates + counts.ignored, 0);
    for number in reducer.reducer().call_numbers() {
        let (call, _) = reducer.reducer().call(number).expect("call");
        assert_eq!(call.state, CallState::Released, "call {}", call.id);
    }
}

/// The state an agent-state event leaves its agent in, by the event's name and work mode.
fn state_after(event: &serde_json::Value) -> Option<&'static str> {
    match event["event"].as_str()? {
        "EventAgentLogin" | "EventAgentReady"
            if event["AgentWorkMode"].as_str() != Some("AgentAuxWork") =>
        {
            Some("Ready")
        }
        "EventAgentNotReady" => Some("NotReady"),
        "EventAgentLogout" => Some("LoggedOut"),
        _ => None,
    }
}

#[test]
fn agents_log_in_wrap_up_and_take_breaks_and_are_offered_calls_only_when_ready() {
    let config = SimConfig {
        seed: 7,
        agents: 30,
        queues: 3,
        supervisors: 2,
        calls_per_second: 0.1,
        duration_secs: Some(3600.0),
        ..SimConfig::default()
    };
    let agents: HashSet<String> = config.agent_dns().into_iter().collect();
    let mut state: HashMap<String, &'static str> = HashMap::new();
    let (mut offered, mut after_call, mut breaks, mut device_notifications) = (0, 0, 0, 0);
    let mut reasons = HashSet::new();
    let mut reducer = Fold::default();
    let mut out = Notifications::default();
    let mut counts = Counts::default();
    for event in Simulator::new(config) {
        let value: serde_json::Value = serde_json::from_str(&event.line).expect("JSON");
        let dn = value["ThisDN"].as_str().unwrap_or_default().to_owned();
        if let Some(next) = state_after(&value) {
            if value["AgentWorkMode"] == "AgentAfterCallWork" {
                after_call += 1;
            }
            if value["AgentWorkMode"] == "AgentAuxWork" {
                breaks += 1;
                reasons.insert(value["Reasons"]["ReasonCode"].to_string());
            }
            state.insert(dn.clone(), next);
        }
        let kind = value["event"].as_str().unwrap_or_default();
        if agents.contains(&dn) && matches!(kind, "EventRinging" | "EventDialing") {
            offered += 1;
            assert_eq!(
                state.get(&dn).copied(),
                Some("Ready"),
                "{kind} at {dn} while not ready: {}",
                event.line
            );
        }
        let outcome = reducer.apply_line(event.line.as_bytes(), &mut out);
        counts.record(&outcome);
        device_notifications += out.iter().filter(|n| n.topic == Topic::Devices).count();
        out.clear();
    }
    assert_eq!(counts.rejected + counts.duplicates + counts.ignored, 0);
    assert!(offered > 100, "{offered} calls offered");
    assert!(after_call > 100, "{after_call} after-call work periods");
    assert!(
        breaks > 0 && reasons.len() > 1,
        "{breaks} breaks, reasons {reasons:?}"
    );
    assert!(device_notifications > 2 * after_call);
    assert_eq!(state.len(), agents.len(), "every agent logged in");
    assert!(
        state.values().all(|s| *s == "LoggedOut"),
        "every agent logs out at the end of the shift: {state:?}"
    );
}

#[test]
fn without_agent_states_there_are_only_calls_and_they_fold_cleanly() {
    let config = SimConfig {
        seed: 3,
        agents: 20,
        calls_per_second: 0.2,
        max_calls: Some(200),
        agent_states: false,
        ..SimConfig::default()
    };
    let mut reducer = Fold::default();
    let mut out = Notifications::default();
    let mut counts = Counts::default();
    for event in Simulator::new(config) {
        assert!(!event.line.contains("\"EventAgent"), "{}", event.line);
        let outcome = reducer.apply_line(event.line.as_bytes(), &mut out);
        counts.record(&outcome);
        assert!(out.iter().all(|n| n.topic != Topic::Devices));
        out.clear();
    }
    assert!(counts.applied > 800, "{counts:?}");
    assert_eq!(counts.rejected + counts.duplicates + counts.ignored, 0);
}

/// The abandons every queue of `reducer` counted today, and the queues' DNs.
fn queue_abandons(reducer: &Fold) -> (u64, HashSet<String>) {
    let mut abandoned = 0;
    let mut dns = HashSet::new();
    for (queue, server) in reducer.reducer().queues() {
        let mut doc = String::new();
        queue.write(server, &mut doc);
        let doc: serde_json::Value = serde_json::from_str(&doc).expect("a queue is JSON");
        abandoned += doc["today"]["abandoned"].as_u64().expect("abandoned");
        dns.insert(doc["phoneNumber"].as_str().expect("phoneNumber").to_owned());
    }
    (abandoned, dns)
}
