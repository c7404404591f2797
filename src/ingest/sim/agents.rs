//! Agents' states (gws.md, "Device resources"): each agent logs in before the center opens, is ready,
//! goes not ready for after-call work when a call ends (for a drawn time), sometimes takes a break with a
//! reason, and logs out when the shift is over. A call is offered to an agent only once it is ready again:
//! its `free_at` is the time of its EventAgentReady.

use super::{Scripted, Simulator, micros};
use crate::event::Micros;
use std::cmp::Reverse;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// XORed into the seed for the agents' own random stream.
pub(super) const AGENT_STREAM: u64 = 0xa6e7_5ea7_0000_0001;
/// Agents log in within this many seconds before the start (the center opens with its staff in).
const LOGIN_WINDOW_SECS: f64 = 30.0;
/// The chance that an agent takes a break after a call's wrap-up.
const BREAK_CHANCE: f64 = 0.05;
/// Mean break, in seconds (at least a minute).
const BREAK_SECS: f64 = 300.0;
/// Why agents take breaks, with their weights.
const BREAKS: [(&str, f64); 4] = [
    ("Break", 0.6),
    ("Lunch", 0.15),
    ("Meeting", 0.15),
    ("Training", 0.1),
];

/// One agent-state event, before it gets its sequence number.
#[derive(Debug, Clone)]
pub(super) struct AgentEv {
    kind: &'static str,
    dn: Arc<str>,
    agent_id: Arc<str>,
    work_mode: Option<&'static str>,
    reason: Option<&'static str>,
}

impl Simulator {
    /// Logs every agent in, each at its own time in the [`LOGIN_WINDOW_SECS`] before the start, ready for
    /// calls.
    pub(super) fn start_shift(&mut self) {
        if !self.config.agent_states {
            return;
        }
        for a in 0..self.agents.len() {
            let before = micros(self.agent_rng.between(0.0, LOGIN_WINDOW_SECS));
            let at = self.config.start - before.max(1);
            self.agents[a].free_at = at;
            self.agent_event(a, at, "EventAgentLogin", Some("AgentManualIn"), None);
        }
    }

    /// Logs every agent out once arrivals have stopped, a second after its last call and its wrap-up. An
    /// agent on a break then leaves from it: the break's end, scheduled later, is dropped, so that the
    /// simulation ends with its last call rather than with the longest break.
    pub(super) fn end_shift(&mut self) {
        if !self.config.agent_states {
            return;
        }
        let pending = std::mem::take(&mut self.pending).into_vec();
        let mut last_call: HashMap<Arc<str>, Micros> = HashMap::new();
        for Reverse(p) in &pending {
            if let Scripted::Call(ev) = &p.event {
                let last = last_call.entry(Arc::clone(&ev.this_dn)).or_insert(p.time);
                *last = (*last).max(p.time);
            }
        }
        let mut logout: HashMap<Arc<str>, Micros> = HashMap::new();
        for party in &self.agents {
            let busy = last_call.get(&party.dn).copied().unwrap_or(Micros::MIN);
            let at = self.next_arrival.max(party.wrapped_at).max(busy) + micros(1.0);
            logout.insert(Arc::clone(&party.dn), at);
        }
        self.pending = pending
            .into_iter()
            .filter(|Reverse(p)| match &p.event {
                Scripted::Agent(ev) => logout.get(&ev.dn).is_none_or(|&at| p.time < at),
                Scripted::Call(_) => true,
            })
            .collect();
        for a in 0..self.agents.len() {
            if let Some(&at) = logout.get(&self.agents[a].dn) {
                self.agent_event(a, at, "EventAgentLogout", None, None);
            }
        }
    }

    /// Agent `a` is done with a call at `done`, and takes no other until wrap-up (and any break after it)
    /// is over.
    pub(super) fn wrap_up(&mut self, a: usize, done: Micros) {
        if !self.config.agent_states {
            self.agents[a].free_at = done + micros(self.config.wrap_up_secs);
            return;
        }
        let mean = self.config.wrap_up_secs;
        let wrap = if mean > 0.0 {
            micros(self.agent_rng.lognormal(mean, 0.5).max(1.0))
        } else {
            0
        };
        self.agent_event(
            a,
            done,
            "EventAgentNotReady",
            Some("AgentAfterCallWork"),
            None,
        );
        let mut ready_at = done + wrap;
        self.agents[a].wrapped_at = ready_at;
        let dn = Arc::clone(&self.agents[a].dn);
        self.plan(|p| p.wrap_up(&dn, done, ready_at));
        if self.agent_rng.chance(BREAK_CHANCE) {
            let reason = self.break_reason();
            self.agent_event(
                a,
                ready_at,
                "EventAgentNotReady",
                Some("AgentAuxWork"),
                Some(reason),
            );
            ready_at += micros(self.agent_rng.exponential(BREAK_SECS).max(60.0));
        }
        self.agent_event(a, ready_at, "EventAgentReady", None, None);
        self.agents[a].free_at = ready_at;
    }

    fn break_reason(&mut self) -> &'static str {
        let mut roll = self.agent_rng.unit();
        for (reason, weight) in BREAKS {
            if roll < weight {
                return reason;
            }
            roll -= weight;
        }
        BREAKS[0].0
    }

    fn agent_event(
        &mut self,
        a: usize,
        at: Micros,
        kind: &'static str,
        work_mode: Option<&'static str>,
        reason: Option<&'static str>,
    ) {
        let event = AgentEv {
            kind,
            dn: Arc::clone(&self.agents[a].dn),
            agent_id: format!("agent{}", a + 1).into(),
            work_mode,
            reason,
        };
        self.schedule(at, Scripted::Agent(event));
    }

    /// The line of an agent-state event at `time`, numbered with the next EventSequenceNumber.
    pub(super) fn render_agent(&mut self, time: Micros, ev: &AgentEv) -> super::SimEvent {
        self.sequence += 1;
        let line = &mut self.line;
        line.clear();
        let _ = write!(
            line,
            r#"{{"event":"{}","EventSequenceNumber":{},"TimeinSecs":{},"TimeinuSecs":{}"#,
            ev.kind,
            self.sequence,
            time.div_euclid(1_000_000),
            time.rem_euclid(1_000_000)
        );
        if let Some(server) = &self.server {
            let _ = write!(line, r#","Server":{server}"#);
        }
        let _ = write!(line, r#","ThisDN":"{}","AgentID":"{}""#, ev.dn, ev.agent_id);
        if let Some(mode) = ev.work_mode {
            let _ = write!(line, r#","AgentWorkMode":"{mode}""#);
        }
        if let Some(reason) = ev.reason {
            let _ = write!(line, r#","Reasons":{{"ReasonCode":"{reason}"}}"#);
        }
        line.push('}');
        super::SimEvent {
            time,
            line: line.clone(),
        }
    }
}
