//! A seeded T-Server simulator: a contact center's call traffic as the events its T-Server would send.
//!
//! Calls arrive as a Poisson process. Each call is scripted in full when it arrives (queue wait, ringing,
//! talk, hold, recording, supervision, transfer or conference, release), using agents that are free for the
//! whole time they are needed, so an agent is never in two places at once. An inbound caller waits in the
//! queue until an agent is free, unless they hang up first (the abandon-queue share, or a wait longer than
//! their patience); such a call never reaches an agent. Every party that T-Server monitors (agents, queues,
//! supervisors) gets its own copy of each event, and the copies are released in time order with
//! increasing EventSequenceNumbers. docs/simulator.md describes the scenarios and distributions.

mod agents;
mod mix;
mod numbering;
mod plan;
mod render;
mod rng;
mod scenarios;
mod tlib_event;
mod user_data;

pub use mix::{MIX_EXCLUSIVE, MIX_FIELDS, Mix, MixField};
pub use plan::{CallPlan, PartyPlan, QueuePlan};
pub use rng::Rng;

use crate::event::Micros;
use agents::{AGENT_STREAM, AgentEv};
use numbering::NumberPlan;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use tlib_event::Ev;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed: the same seed and settings give the same events.
    pub seed: u64,
    /// Agents (DNs 7001, 7002, ...; 70001, ... when there are more than 899).
    pub agents: u32,
    /// ACD queues (DNs 8001, 8002, ...).
    pub queues: u32,
    /// Supervisors (DNs 7901, 7902, ...; 79001, ... beside five-digit agents).
    pub supervisors: u32,
    /// Mean call arrivals per second.
    pub calls_per_second: f64,
    /// Stop creating calls after this many (calls in progress still finish).
    pub max_calls: Option<u64>,
    /// Stop creating calls after this much simulated time, in seconds.
    pub duration_secs: Option<f64>,
    /// Mean talk time in seconds.
    pub talk_secs: f64,
    /// Agent wrap-up time after a call, in seconds (the mean of the drawn times when `agent_states`).
    pub wrap_up_secs: f64,
    /// Mean patience of a caller waiting in a queue, in seconds: a caller still waiting then hangs up.
    pub patience_secs: f64,
    /// Start of the simulated clock (the first call arrives one inter-arrival gap later).
    pub start: Micros,
    /// `Server` attribute on every event (`None`: the default T-Server).
    pub server: Option<String>,
    /// Scenario mix.
    pub mix: Mix,
    /// Agent-state events (gws.md): each agent logs in in the 30 s before `start`, goes not ready for after-call
    /// work after each call for a drawn time, sometimes takes a break, and logs out once arrivals have
    /// stopped. Drawn from a random stream of their own: without them (`false`) the traffic is exactly
    /// what it was before the simulator had agent states.
    pub agent_states: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            agents: 50,
            queues: 4,
            supervisors: 3,
            calls_per_second: 0.2,
            max_calls: None,
            duration_secs: None,
            talk_secs: 180.0,
            wrap_up_secs: 10.0,
            patience_secs: 120.0,
            start: 1_763_900_000_000_000,
            server: None,
            mix: Mix::default(),
            agent_states: true,
        }
    }
}

impl SimConfig {
    /// The agents' DNs, agent 1 first: what a test or an access file needs to name the simulated staff.
    pub fn agent_dns(&self) -> Vec<String> {
        let plan = self.plan();
        (1..=self.agents.max(1))
            .map(|i| plan.agent(i).to_string())
            .collect()
    }

    /// The supervisors' DNs, supervisor 1 first.
    pub fn supervisor_dns(&self) -> Vec<String> {
        let plan = self.plan();
        (1..=self.supervisors)
            .map(|i| plan.supervisor(i).to_string())
            .collect()
    }

    /// The ACD queues' DNs, queue 1 first.
    pub fn queue_dns(&self) -> Vec<String> {
        let plan = self.plan();
        (1..=self.queues.max(1))
            .map(|i| plan.queue(i).to_string())
            .collect()
    }

    /// The number plan of this center's size (at least one agent and one queue, as simulated).
    fn plan(&self) -> NumberPlan {
        NumberPlan::new(self.agents.max(1), self.supervisors, self.queues.max(1))
    }
}

/// What the simulator has generated so far, by kind of call and outcome.
///
/// A call is counted when it is scripted (on arrival), before all its events are out; once the iterator
/// has ended, the counts describe exactly the events it produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Calls started (every arrival, whatever became of it).
    pub calls: u64,
    /// Inbound calls, abandoned ones included.
    pub inbound: u64,
    /// Outbound calls.
    pub outbound: u64,
    /// Internal (agent to agent) calls.
    pub internal: u64,
    /// Internal calls not placed because no second agent was free.
    pub internal_skipped: u64,
    /// Inbound calls whose caller hung up in the queue: each is one EventAbandoned at the queue DN, which
    /// no call resource knows (an orphan to the reducer, per call-resource.md).
    pub abandoned_in_queue: u64,
    /// Of those, the callers who gave up because no agent became free within their patience.
    pub abandoned_waiting: u64,
    /// Inbound calls abandoned while ringing at an agent.
    pub abandoned_ringing: u64,
}

/// One event line and its time.
#[derive(Debug, Clone, PartialEq)]
pub struct SimEvent {
    /// Event time.
    pub time: Micros,
    /// The JSON line, without a line end.
    pub line: String,
}

/// An event copy waiting for its time. `order` keeps the copies due at one time in the order the script
/// wrote them.
struct Pending {
    time: Micros,
    order: u64,
    event: Scripted,
}

/// What a script wrote: a call's event copy, or an agent's state change.
enum Scripted {
    Call(Ev),
    Agent(AgentEv),
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.order) == (other.time, other.order)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.time, self.order).cmp(&(other.time, other.order))
    }
}

/// An agent or a supervisor, and when they can next take part in a call.
struct Party {
    dn: Arc<str>,
    free_at: Micros,
    /// When its last after-call work ends (a break may follow).
    wrapped_at: Micros,
}

const SECOND: f64 = 1_000_000.0;

fn micros(secs: f64) -> Micros {
    (secs * SECOND) as Micros
}

/// The time to the next call arrival: arrivals are a Poisson process.
fn arrival_gap(rng: &mut Rng, calls_per_second: f64) -> Micros {
    micros(rng.exponential(1.0 / calls_per_second.max(1e-9)))
}

/// The simulator: an iterator of event lines in time order.
pub struct Simulator {
    config: SimConfig,
    rng: Rng,
    /// Draws of agent states, apart from the calls' so that the calls stay the same without them.
    agent_rng: Rng,
    agents: Vec<Party>,
    supervisors: Vec<Party>,
    queues: Vec<Arc<str>>,
    pending: BinaryHeap<Reverse<Pending>>,
    order: u64,
    next_arrival: Micros,
    calls_started: u64,
    next_conn: u64,
    sequence: u64,
    line: String,
    /// The `Server` attribute, escaped for JSON once.
    server: Option<String>,
    stats: SimStats,
    /// Arrivals have stopped and the agents' logouts are scheduled.
    shift_over: bool,
    /// Every placed call's plan, when [`Simulator::with_plans`] asked for them.
    plans: Option<Vec<CallPlan>>,
    /// The plan of the call being scripted.
    planning: Option<CallPlan>,
}

impl Simulator {
    /// A simulator for `config`.
    pub fn new(config: SimConfig) -> Self {
        let mut rng = Rng::new(config.seed);
        let party = |dn: String| Party {
            dn: dn.into(),
            free_at: Micros::MIN,
            wrapped_at: Micros::MIN,
        };
        let agents = config.agent_dns().into_iter().map(party).collect();
        let supervisors = config.supervisor_dns().into_iter().map(party).collect();
        let queues = config.queue_dns().into_iter().map(Arc::from).collect();
        let next_arrival = config.start + arrival_gap(&mut rng, config.calls_per_second);
        let next_conn = numbering::conn_base(&mut rng);
        // The name comes from the command line: quotes or backslashes in it must not break the JSON.
        let server = config
            .server
            .as_deref()
            .filter(|name| !name.is_empty())
            .map(|name| serde_json::Value::from(name).to_string());
        let agent_rng = Rng::new(config.seed ^ AGENT_STREAM);
        let mut simulator = Self {
            config,
            rng,
            agent_rng,
            agents,
            supervisors,
            queues,
            pending: BinaryHeap::new(),
            order: 0,
            next_arrival,
            calls_started: 0,
            next_conn,
            sequence: 0,
            line: String::new(),
            server,
            stats: SimStats::default(),
            shift_over: false,
            plans: None,
            planning: None,
        };
        simulator.start_shift();
        simulator
    }

    /// This simulator, keeping the plan of every call it places (see [`Simulator::plans`]). Off by
    /// default: an endless simulation would keep them for ever. The events are the same either way.
    pub fn with_plans(mut self) -> Self {
        self.plans = Some(Vec::new());
        self
    }

    /// The plans of the calls placed so far, in order of arrival (empty unless [`Simulator::with_plans`]).
    /// A call is planned in full when it arrives, so once the iterator has ended these are every call's
    /// plan; an internal call not placed (no second agent free) has none.
    pub fn plans(&self) -> &[CallPlan] {
        self.plans.as_deref().unwrap_or_default()
    }

    /// Takes the plans gathered so far, leaving none.
    pub fn take_plans(&mut self) -> Vec<CallPlan> {
        self.plans.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// What has been generated so far (see [`SimStats`]).
    pub fn stats(&self) -> SimStats {
        self.stats
    }

    fn arrivals_open(&self) -> bool {
        let by_count = self
            .config
            .max_calls
            .is_none_or(|max| self.calls_started < max);
        let by_time = self
            .config
            .duration_secs
            .is_none_or(|secs| self.next_arrival < self.config.start + micros(secs));
        by_count && by_time
    }

    fn push(&mut self, time: Micros, event: Ev) {
        self.schedule(time, Scripted::Call(event));
    }

    fn schedule(&mut self, time: Micros, event: Scripted) {
        self.order += 1;
        self.pending.push(Reverse(Pending {
            time,
            order: self.order,
            event,
        }));
    }
}

impl Iterator for Simulator {
    type Item = SimEvent;

    fn next(&mut self) -> Option<SimEvent> {
        loop {
            let due = self.pending.peek().map(|Reverse(p)| p.time);
            let arrivals_open = self.arrivals_open();
            if !arrivals_open && !self.shift_over {
                self.shift_over = true;
                self.end_shift();
                continue;
            }
            match due {
                Some(time) if !arrivals_open || time <= self.next_arrival => {
                    let Reverse(pending) = self.pending.pop()?;
                    return Some(match &pending.event {
                        Scripted::Call(ev) => self.render(pending.time, ev),
                        Scripted::Agent(ev) => self.render_agent(pending.time, ev),
                    });
                }
                _ if arrivals_open => {
                    let t0 = self.next_arrival;
                    self.start_call(t0);
                    let gap = arrival_gap(&mut self.rng, self.config.calls_per_second);
                    self.next_arrival = t0 + gap.max(1);
                }
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_events_and_times_never_go_back() {
        let config = SimConfig {
            max_calls: Some(300),
            calls_per_second: 2.0,
            // Enough agents for the load, so that most calls are answered rather than abandoned.
            agents: 400,
            ..SimConfig::default()
        };
        let a: Vec<SimEvent> = Simulator::new(config.clone()).collect();
        let b: Vec<SimEvent> = Simulator::new(config).collect();
        assert_eq!(a, b);
        assert!(a.len() > 300 * 4);
        assert!(a.windows(2).all(|w| w[0].time <= w[1].time));
    }
}
