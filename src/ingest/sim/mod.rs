//! A seeded T-Server simulator: a contact center's call traffic as the events its T-Server would send.
//!
//! Calls arrive as a Poisson process. Each call is scripted in full when it arrives (queue wait, ringing,
//! talk, hold, recording, supervision, transfer or conference, release), using agents that are free for the
//! whole time they are needed, so an agent is never in two places at once. An inbound caller waits in the
//! queue until an agent is free, unless they hang up first (the abandon-queue share, or a wait longer than
//! their patience); such a call never reaches an agent. Every party that T-Server monitors (agents, queues,
//! supervisors) gets its own copy of each event, and the copies are released in time order with
//! increasing EventSequenceNumbers. docs/simulator.md describes the scenarios and distributions.

mod rng;

pub use rng::Rng;

use crate::event::Micros;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;
use std::sync::Arc;

/// How often each kind of call and each feature occurs (probabilities in 0..=1).
#[derive(Debug, Clone)]
pub struct Mix {
    /// Share of calls that are outbound (agent dials a customer).
    pub outbound: f64,
    /// Share of calls that are internal (agent to agent).
    pub internal: f64,
    /// Inbound: the caller hangs up while waiting in the queue, before any agent rings (on top of the
    /// callers who run out of patience because no agent is free).
    pub abandon_queue: f64,
    /// Inbound: the caller hangs up while the agent's phone rings.
    pub abandon_ringing: f64,
    /// Inbound: the agent holds and retrieves the call.
    pub hold: f64,
    /// Inbound: the agent attaches more data to the call.
    pub user_data_update: f64,
    /// Inbound: recording controlled through Extensions `record` (start, pause, resume).
    pub recording_extensions: f64,
    /// Inbound: recording controlled through UserData `GSIP_RECORD`.
    pub recording_gsip: f64,
    /// Inbound: a supervisor listens in (and may mute the agent).
    pub supervisor: f64,
    /// Inbound: ends in a two-step transfer to another agent.
    pub two_step_transfer: f64,
    /// Inbound: a consultation that is cancelled (the agent retrieves the customer).
    pub consult_cancelled: f64,
    /// Inbound: ends in a single-step transfer.
    pub single_step_transfer: f64,
    /// Inbound: a conference with another agent, who stays after the first leaves.
    pub conference: f64,
    /// Outbound: the customer's line is busy.
    pub outbound_busy: f64,
    /// Outbound: nobody answers.
    pub outbound_no_answer: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            outbound: 0.15,
            internal: 0.05,
            abandon_queue: 0.03,
            abandon_ringing: 0.03,
            hold: 0.2,
            user_data_update: 0.3,
            recording_extensions: 0.15,
            recording_gsip: 0.1,
            supervisor: 0.05,
            two_step_transfer: 0.08,
            consult_cancelled: 0.03,
            single_step_transfer: 0.05,
            conference: 0.03,
            outbound_busy: 0.15,
            outbound_no_answer: 0.15,
        }
    }
}

/// One field of [`Mix`] as the command line names it.
#[derive(Debug, Clone, Copy)]
pub struct MixField {
    /// Kebab-case name (`two-step-transfer`).
    pub name: &'static str,
    /// What the probability is the probability of.
    pub about: &'static str,
    /// The field itself, to read or set it by name.
    pub slot: fn(&mut Mix) -> &mut f64,
}

/// Every field of [`Mix`], in declaration order. `--mix` and its help text are built on this one list so
/// that neither can forget a new field; tests check that --help and docs/simulator.md list them all.
pub const MIX_FIELDS: [MixField; 15] = [
    MixField {
        name: "outbound",
        about: "share of calls that are outbound (an agent dials a customer)",
        slot: |m| &mut m.outbound,
    },
    MixField {
        name: "internal",
        about: "share of calls that are internal (agent to agent); the rest are inbound",
        slot: |m| &mut m.internal,
    },
    MixField {
        name: "abandon-queue",
        about: "inbound: the caller hangs up in the queue before any agent rings",
        slot: |m| &mut m.abandon_queue,
    },
    MixField {
        name: "abandon-ringing",
        about: "inbound: the caller hangs up while the agent's phone rings",
        slot: |m| &mut m.abandon_ringing,
    },
    MixField {
        name: "hold",
        about: "inbound: the agent holds and retrieves the call",
        slot: |m| &mut m.hold,
    },
    MixField {
        name: "user-data-update",
        about: "inbound: the agent attaches a disposition to the call",
        slot: |m| &mut m.user_data_update,
    },
    MixField {
        name: "recording-extensions",
        about: "inbound: recording started, paused, resumed through Extensions `record`",
        slot: |m| &mut m.recording_extensions,
    },
    MixField {
        name: "recording-gsip",
        about: "inbound, when not recorded through Extensions: recording through UserData GSIP_RECORD",
        slot: |m| &mut m.recording_gsip,
    },
    MixField {
        name: "supervisor",
        about: "inbound: a supervisor listens in (and may mute the agent a while)",
        slot: |m| &mut m.supervisor,
    },
    MixField {
        name: "two-step-transfer",
        about: "inbound ending: consultation with a second agent, then transfer",
        slot: |m| &mut m.two_step_transfer,
    },
    MixField {
        name: "consult-cancelled",
        about: "inbound ending: consultation, then the agent takes the customer back",
        slot: |m| &mut m.consult_cancelled,
    },
    MixField {
        name: "single-step-transfer",
        about: "inbound ending: single-step transfer to a second agent",
        slot: |m| &mut m.single_step_transfer,
    },
    MixField {
        name: "conference",
        about: "inbound ending: consultation, then a conference the second agent stays in",
        slot: |m| &mut m.conference,
    },
    MixField {
        name: "outbound-busy",
        about: "outbound: the customer's line is busy",
        slot: |m| &mut m.outbound_busy,
    },
    MixField {
        name: "outbound-no-answer",
        about: "outbound: nobody answers",
        slot: |m| &mut m.outbound_no_answer,
    },
];

/// Groups of [`Mix`] fields that exclude each other (one roll picks at most one of them), so their sum
/// must not exceed 1.
pub const MIX_EXCLUSIVE: [&[&str]; 3] = [
    &["outbound", "internal"],
    &[
        "two-step-transfer",
        "consult-cancelled",
        "single-step-transfer",
        "conference",
    ],
    &["outbound-busy", "outbound-no-answer"],
];

impl Mix {
    /// The field named `name` (kebab-case, as in [`MIX_FIELDS`]).
    pub fn field(&mut self, name: &str) -> Option<&mut f64> {
        MIX_FIELDS
            .iter()
            .find(|f| f.name == name)
            .map(|f| (f.slot)(self))
    }
}

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
    /// Agent wrap-up time after a call, in seconds.
    pub wrap_up_secs: f64,
    /// Mean patience of a caller waiting in a queue, in seconds: a caller still waiting then hangs up.
    pub patience_secs: f64,
    /// Start of the simulated clock (the first call arrives one inter-arrival gap later).
    pub start: Micros,
    /// `Server` attribute on every event (`None`: the default T-Server).
    pub server: Option<String>,
    /// Scenario mix.
    pub mix: Mix,
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
        }
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

/// One copy of one TLib event, before it gets its sequence number.
#[derive(Debug, Clone)]
struct Ev {
    kind: &'static str,
    this_dn: Arc<str>,
    conn: u64,
    uuid: Arc<str>,
    call_type: &'static str,
    this_role: Option<&'static str>,
    other: Option<Arc<str>>,
    other_role: Option<&'static str>,
    third: Option<Arc<str>>,
    third_role: Option<&'static str>,
    ani: Option<Arc<str>>,
    dnis: Option<Arc<str>>,
    queue: Option<Arc<str>>,
    user_data: Option<Arc<str>>,
    extensions: Option<&'static str>,
    previous_conn: Option<u64>,
    transfer_conn: Option<u64>,
    call_state: Option<u32>,
}

/// Setters for the attributes a script adds to an event copy.
impl Ev {
    fn this_role(mut self, role: &'static str) -> Self {
        self.this_role = Some(role);
        self
    }
    fn other(mut self, dn: &Arc<str>) -> Self {
        self.other = Some(Arc::clone(dn));
        self
    }
    fn other_role(mut self, role: &'static str) -> Self {
        self.other_role = Some(role);
        self
    }
    fn third(mut self, dn: &Arc<str>) -> Self {
        self.third = Some(Arc::clone(dn));
        self
    }
    fn third_role(mut self, role: &'static str) -> Self {
        self.third_role = Some(role);
        self
    }
    fn ani(mut self, number: &Arc<str>) -> Self {
        self.ani = Some(Arc::clone(number));
        self
    }
    fn dnis(mut self, number: &Arc<str>) -> Self {
        self.dnis = Some(Arc::clone(number));
        self
    }
    fn queue(mut self, dn: &Arc<str>) -> Self {
        self.queue = Some(Arc::clone(dn));
        self
    }
    fn user_data(mut self, data: Arc<str>) -> Self {
        self.user_data = Some(data);
        self
    }
    fn extensions(mut self, extensions: &'static str) -> Self {
        self.extensions = Some(extensions);
        self
    }
    fn previous_conn(mut self, conn: u64) -> Self {
        self.previous_conn = Some(conn);
        self
    }
    fn transfer_conn(mut self, conn: u64) -> Self {
        self.transfer_conn = Some(conn);
        self
    }
    fn call_state(mut self, state: u32) -> Self {
        self.call_state = Some(state);
        self
    }
}

struct Pending {
    time: Micros,
    order: u64,
    event: Ev,
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

struct Party {
    dn: Arc<str>,
    free_at: Micros,
}

/// Directory numbers: agents 7001..., supervisors 7901..., queues 8001... while they fit in four digits.
/// A larger center gets wider numbers (agents 70001..., supervisors 79001...), because an agent numbered
/// like a supervisor or a queue would be one device in two places at once.
struct NumberPlan {
    /// 10^k: agents are 7·10^k + i (i < 9·10^(k-1)), supervisors 7·10^k + 9·10^(k-1) + i (i < 10^(k-1)).
    staff: u64,
    /// 10^m: queues are 8·10^m + i (i < 10^m); a leading 8 never meets a staff number.
    queues: u64,
}

impl NumberPlan {
    fn new(agents: u32, supervisors: u32, queues: u32) -> Self {
        let mut staff = 1_000u64;
        while u64::from(agents) >= staff / 10 * 9 || u64::from(supervisors) >= staff / 10 {
            staff *= 10;
        }
        let mut queue_width = 1_000u64;
        while u64::from(queues) >= queue_width {
            queue_width *= 10;
        }
        Self {
            staff,
            queues: queue_width,
        }
    }
    fn agent(&self, i: u32) -> u64 {
        7 * self.staff + u64::from(i)
    }
    fn supervisor(&self, i: u32) -> u64 {
        7 * self.staff + self.staff / 10 * 9 + u64::from(i)
    }
    fn queue(&self, i: u32) -> u64 {
        8 * self.queues + u64::from(i)
    }
}

const SECOND: f64 = 1_000_000.0;

fn micros(secs: f64) -> Micros {
    (secs * SECOND) as Micros
}

/// The simulator: an iterator of event lines in time order.
pub struct Simulator {
    config: SimConfig,
    rng: Rng,
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
}

impl Simulator {
    /// A simulator for `config`.
    pub fn new(config: SimConfig) -> Self {
        let mut rng = Rng::new(config.seed);
        let party = |dn: String| Party {
            dn: dn.into(),
            free_at: Micros::MIN,
        };
        let plan = NumberPlan::new(
            config.agents.max(1),
            config.supervisors,
            config.queues.max(1),
        );
        let agents = (1..=config.agents.max(1))
            .map(|i| party(plan.agent(i).to_string()))
            .collect();
        let supervisors = (1..=config.supervisors)
            .map(|i| party(plan.supervisor(i).to_string()))
            .collect();
        let queues = (1..=config.queues.max(1))
            .map(|i| Arc::from(plan.queue(i).to_string()))
            .collect();
        let first_gap = rng.exponential(1.0 / config.calls_per_second.max(1e-9));
        let next_arrival = config.start + micros(first_gap);
        let next_conn = 0x006f_02a7_0000_0000 | (rng.next_u64() & 0xffff_0000);
        // The name comes from the command line: quotes or backslashes in it must not break the JSON.
        let server = config
            .server
            .as_deref()
            .filter(|name| !name.is_empty())
            .map(|name| serde_json::Value::from(name).to_string());
        Self {
            config,
            rng,
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
        }
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
        self.order += 1;
        self.pending.push(Reverse(Pending {
            time,
            order: self.order,
            event,
        }));
    }

    fn new_conn(&mut self) -> u64 {
        self.next_conn = self.next_conn.wrapping_add(1);
        self.next_conn
    }

    fn new_uuid(&mut self) -> Arc<str> {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUV";
        let mut bits = self.rng.next_u64();
        let mut more = self.rng.next_u64();
        let uuid: String = (0..32)
            .map(|i| {
                if i == 12 {
                    bits = more;
                    more = 0;
                }
                let c = ALPHABET[(bits & 31) as usize] as char;
                bits >>= 5;
                c
            })
            .collect();
        uuid.into()
    }

    fn customer_number(&mut self) -> Arc<str> {
        const US_AREAS: [u32; 7] = [415, 212, 312, 617, 206, 303, 713];
        let n = self.rng.below(100);
        let number = match self.rng.below(10) {
            0..=5 => format!(
                "+1{}5550{:03}",
                US_AREAS[self.rng.below(7) as usize],
                100 + n
            ),
            6..=7 => format!("+4420794600{n:02}"),
            8 => format!("+3314268{:04}", 5300 + n),
            _ => format!("+4930{:06}", 123_400 + n),
        };
        number.into()
    }

    fn user_data(&mut self) -> String {
        const SEGMENTS: [&str; 3] = ["Gold", "Silver", "Bronze"];
        const SERVICES: [&str; 3] = ["Sales", "Support", "Billing"];
        const LANGUAGES: [&str; 3] = ["en", "es", "fr"];
        format!(
            r#"{{"AccountNumber":"{:08}","Segment":"{}","ServiceType":"{}","Language":"{}","IVRPath":{{"Menu":"{}","Attempts":{}}}}}"#,
            self.rng.below(100_000_000),
            SEGMENTS[self.rng.below(3) as usize],
            SERVICES[self.rng.below(3) as usize],
            LANGUAGES[self.rng.below(3) as usize],
            1 + self.rng.below(4),
            1 + self.rng.below(3),
        )
    }

    /// The party of `pool` free the earliest, and when it is free (never before `not_before`).
    fn earliest(
        pool: &[Party],
        not_before: Micros,
        except: Option<usize>,
    ) -> Option<(usize, Micros)> {
        pool.iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != except)
            .min_by_key(|(_, p)| p.free_at)
            .map(|(i, p)| (i, p.free_at.max(not_before)))
    }

    fn base(
        &self,
        kind: &'static str,
        this_dn: &Arc<str>,
        conn: u64,
        uuid: &Arc<str>,
        call_type: &'static str,
    ) -> Ev {
        Ev {
            kind,
            this_dn: Arc::clone(this_dn),
            conn,
            uuid: Arc::clone(uuid),
            call_type,
            this_role: None,
            other: None,
            other_role: None,
            third: None,
            third_role: None,
            ani: None,
            dnis: None,
            queue: None,
            user_data: None,
            extensions: None,
            previous_conn: None,
            transfer_conn: None,
            call_state: None,
        }
    }

    fn start_call(&mut self, t0: Micros) {
        self.calls_started += 1;
        self.stats.calls += 1;
        let roll = self.rng.unit();
        if roll < self.config.mix.outbound {
            self.stats.outbound += 1;
            self.outbound(t0);
        } else if roll < self.config.mix.outbound + self.config.mix.internal
            && self.agents.len() > 1
        {
            self.stats.internal += 1;
            self.internal(t0);
        } else {
            self.stats.inbound += 1;
            self.inbound(t0);
        }
    }

    fn inbound(&mut self, t0: Micros) {
        let queue = Arc::clone(&self.queues[self.rng.below(self.queues.len() as u64) as usize]);
        let customer = self.customer_number();
        let conn = self.new_conn();
        let uuid = self.new_uuid();
        let mut data = self.user_data();
        let user_data: Arc<str> = data.clone().into();
        let mix = self.config.mix.clone();

        self.push(
            t0,
            self.base("EventQueued", &queue, conn, &uuid, "Inbound")
                .other(&customer)
                .ani(&customer)
                .dnis(&queue)
                .queue(&queue)
                .user_data(Arc::clone(&user_data)),
        );

        // Routing (announcement, strategy) takes a few seconds even when an agent is free; after that the
        // call waits, first come first served, for the agent free the earliest.
        let routed = t0 + micros(self.rng.between(1.0, 6.0));
        let Some((a, ring_at)) = Self::earliest(&self.agents, routed, None) else {
            return;
        };
        let gives_up = if self.rng.chance(mix.abandon_queue) {
            // This caller hangs up before being routed, however soon an agent would be free.
            Some((
                t0 + ((ring_at - t0) as f64 * self.rng.between(0.2, 0.95)) as Micros,
                false,
            ))
        } else {
            // Patience counts from the end of routing, so that a center with free agents loses no calls
            // beyond the abandon-queue share; a long wait for an agent does lose them.
            let patience = micros(self.rng.lognormal(self.config.patience_secs, 0.8));
            (ring_at - routed > patience).then_some((routed + patience, true))
        };
        if let Some((at, out_of_patience)) = gives_up {
            self.stats.abandoned_in_queue += 1;
            self.stats.abandoned_waiting += u64::from(out_of_patience);
            // The agent was never rung, so it stays free for the next caller.
            self.push(
                at,
                self.base("EventAbandoned", &queue, conn, &uuid, "Inbound")
                    .other(&customer)
                    .ani(&customer)
                    .dnis(&queue)
                    .queue(&queue)
                    .call_state(21),
            );
            return;
        }
        let agent = Arc::clone(&self.agents[a].dn);
        self.push(
            ring_at,
            self.base("EventDiverted", &queue, conn, &uuid, "Inbound")
                .third(&agent)
                .queue(&queue),
        );
        self.push(
            ring_at,
            self.base("EventRinging", &agent, conn, &uuid, "Inbound")
                .this_role("RoleDestination")
                .other(&customer)
                .other_role("RoleOrigination")
                .ani(&customer)
                .dnis(&queue)
                .queue(&queue)
                .user_data(Arc::clone(&user_data)),
        );

        let ring = micros(self.rng.between(2.0, 8.0));
        if self.rng.chance(mix.abandon_ringing) {
            self.stats.abandoned_ringing += 1;
            let at = ring_at + ring / 2;
            self.push(
                at,
                self.base("EventAbandoned", &agent, conn, &uuid, "Inbound")
                    .call_state(21),
            );
            self.agents[a].free_at = at + micros(1.0);
            return;
        }
        let answered = ring_at + ring;
        self.push(
            answered,
            self.base("EventEstablished", &agent, conn, &uuid, "Inbound")
                .other(&customer),
        );

        let talk = micros(self.rng.lognormal(self.config.talk_secs, 0.8).max(10.0));
        let at = |share: f64| answered + (talk as f64 * share) as Micros;

        if self.rng.chance(mix.recording_extensions) {
            for (share, directive) in [
                (0.02, r#"{"record":"start"}"#),
                (0.6, r#"{"record":"pause"}"#),
                (0.7, r#"{"record":"resume"}"#),
            ] {
                self.push(
                    at(share),
                    self.base("EventPrivateInfo", &agent, conn, &uuid, "Inbound")
                        .extensions(directive),
                );
            }
        } else if self.rng.chance(mix.recording_gsip) {
            for (share, value) in [(0.02, "ON"), (0.65, "PAUSED"), (0.75, "ON")] {
                data = with_key(&data, "GSIP_RECORD", value);
                let mut changed =
                    self.base("EventAttachedDataChanged", &agent, conn, &uuid, "Inbound");
                changed.user_data = Some(data.clone().into());
                self.push(at(share), changed);
            }
        }
        if self.rng.chance(mix.user_data_update) {
            data = with_key(
                &data,
                "Disposition",
                ["Resolved", "FollowUp", "Escalated"][self.rng.below(3) as usize],
            );
            self.push(
                at(0.15),
                self.base("EventAttachedDataChanged", &agent, conn, &uuid, "Inbound")
                    .user_data(data.clone().into()),
            );
        }
        if self.rng.chance(mix.supervisor)
            && let Some((s, free)) = Self::earliest(&self.supervisors, at(0.2), None)
            && free <= at(0.2)
        {
            self.supervise(s, &agent, conn, &uuid, at(0.2), at(0.45));
        }
        if self.rng.chance(mix.hold) {
            self.push(
                at(0.5),
                self.base("EventHeld", &agent, conn, &uuid, "Inbound"),
            );
            self.push(
                at(0.58),
                self.base("EventRetrieved", &agent, conn, &uuid, "Inbound"),
            );
        }

        let end = answered + talk;
        let ending = self.rng.unit();
        let thresholds = [
            mix.two_step_transfer,
            mix.two_step_transfer + mix.consult_cancelled,
            mix.two_step_transfer + mix.consult_cancelled + mix.single_step_transfer,
            mix.two_step_transfer
                + mix.consult_cancelled
                + mix.single_step_transfer
                + mix.conference,
        ];
        let second =
            Self::earliest(&self.agents, end, Some(a)).filter(|(b, free)| *free <= end && *b != a);
        let agent_free = match (second, thresholds.iter().position(|t| ending < *t)) {
            (Some((b, _)), Some(0)) => self.consult(
                a,
                b,
                &customer,
                conn,
                &uuid,
                &user_data,
                end,
                Ending::Transfer,
            ),
            (Some((b, _)), Some(1)) => self.consult(
                a,
                b,
                &customer,
                conn,
                &uuid,
                &user_data,
                end,
                Ending::Cancel,
            ),
            (Some((b, _)), Some(2)) => {
                self.single_step(a, b, &customer, conn, &uuid, &user_data, end)
            }
            (Some((b, _)), Some(3)) => self.consult(
                a,
                b,
                &customer,
                conn,
                &uuid,
                &user_data,
                end,
                Ending::Conference,
            ),
            _ => {
                // Either side hangs up: Ok, or RemoteRelease.
                let state = if self.rng.chance(0.5) { 0 } else { 5 };
                self.push(
                    end,
                    self.base("EventReleased", &agent, conn, &uuid, "Inbound")
                        .call_state(state),
                );
                end
            }
        };
        self.agents[a].free_at = agent_free + micros(self.config.wrap_up_secs);
    }

    /// A supervisor `s` silently monitors `agent`'s call from `from` to `until`, muting the agent a while.
    fn supervise(
        &mut self,
        s: usize,
        agent: &Arc<str>,
        conn: u64,
        uuid: &Arc<str>,
        from: Micros,
        until: Micros,
    ) {
        let supervisor = Arc::clone(&self.supervisors[s].dn);
        self.push(
            from,
            self.base("EventPartyAdded", agent, conn, uuid, "Inbound")
                .third(&supervisor)
                .third_role("RoleObserver"),
        );
        self.push(
            from,
            self.base("EventEstablished", &supervisor, conn, uuid, "Inbound")
                .this_role("RoleObserver")
                .other(agent),
        );
        if self.rng.chance(0.3) {
            let mid = from + (until - from) / 3;
            for (kind, at) in [
                ("EventMuteOn", mid),
                ("EventMuteOff", mid + (until - from) / 3),
            ] {
                for dn in [agent, &supervisor] {
                    self.push(at, self.base(kind, dn, conn, uuid, "Inbound").other(agent));
                }
            }
        }
        self.push(
            until,
            self.base("EventPartyDeleted", agent, conn, uuid, "Inbound")
                .third(&supervisor),
        );
        self.push(
            until,
            self.base("EventReleased", &supervisor, conn, uuid, "Inbound"),
        );
        self.supervisors[s].free_at = until + micros(1.0);
    }

    /// Agent `a` consults agent `b` about the customer's call `conn` at `start`, then transfers, cancels or
    /// conferences. Returns when agent `a` is done with the call.
    #[allow(clippy::too_many_arguments)]
    fn consult(
        &mut self,
        a: usize,
        b: usize,
        customer: &Arc<str>,
        conn: u64,
        uuid: &Arc<str>,
        user_data: &Arc<str>,
        start: Micros,
        ending: Ending,
    ) -> Micros {
        let agent = Arc::clone(&self.agents[a].dn);
        let other = Arc::clone(&self.agents[b].dn);
        let consult_conn = self.new_conn();
        let consult_uuid = self.new_uuid();
        self.push(start, self.base("EventHeld", &agent, conn, uuid, "Inbound"));
        let dial_at = start + micros(1.0);
        self.push(
            dial_at,
            self.base(
                "EventDialing",
                &agent,
                consult_conn,
                &consult_uuid,
                "Consult",
            )
            .this_role("RoleOrigination")
            .other(&other)
            .transfer_conn(conn)
            .user_data(Arc::clone(user_data)),
        );
        self.push(
            dial_at + micros(0.2),
            self.base(
                "EventRinging",
                &other,
                consult_conn,
                &consult_uuid,
                "Consult",
            )
            .this_role("RoleDestination")
            .other(&agent)
            .transfer_conn(conn)
            .user_data(Arc::clone(user_data)),
        );
        let answer_at = dial_at + micros(self.rng.between(2.0, 6.0));
        self.push(
            answer_at,
            self.base(
                "EventEstablished",
                &other,
                consult_conn,
                &consult_uuid,
                "Consult",
            )
            .other(&agent),
        );
        self.push(
            answer_at,
            self.base(
                "EventEstablished",
                &agent,
                consult_conn,
                &consult_uuid,
                "Consult",
            )
            .other(&other),
        );
        let done = answer_at + micros(self.rng.between(10.0, 40.0));
        let b_talk = micros(
            self.rng
                .lognormal(self.config.talk_secs * 0.6, 0.7)
                .max(10.0),
        );

        let (a_free, b_free) = match ending {
            Ending::Transfer => {
                self.push(
                    done,
                    self.base("EventReleased", &agent, conn, uuid, "Inbound")
                        .call_state(1),
                );
                self.push(
                    done,
                    self.base("EventPartyChanged", &other, conn, uuid, "Inbound")
                        .previous_conn(consult_conn)
                        .other(customer)
                        .third(&agent),
                );
                self.push(
                    done,
                    self.base(
                        "EventReleased",
                        &agent,
                        consult_conn,
                        &consult_uuid,
                        "Consult",
                    )
                    .call_state(1),
                );
                let b_end = done + b_talk;
                self.push(
                    b_end,
                    self.base("EventReleased", &other, conn, uuid, "Inbound"),
                );
                (done, b_end)
            }
            Ending::Cancel => {
                self.push(
                    done,
                    self.base(
                        "EventReleased",
                        &agent,
                        consult_conn,
                        &consult_uuid,
                        "Consult",
                    ),
                );
                self.push(
                    done,
                    self.base(
                        "EventReleased",
                        &other,
                        consult_conn,
                        &consult_uuid,
                        "Consult",
                    ),
                );
                let back = done + micros(1.0);
                self.push(
                    back,
                    self.base("EventRetrieved", &agent, conn, uuid, "Inbound"),
                );
                let end = back + micros(self.rng.between(10.0, 60.0));
                self.push(
                    end,
                    self.base("EventReleased", &agent, conn, uuid, "Inbound"),
                );
                (end, done)
            }
            Ending::Conference => {
                self.push(
                    done,
                    self.base(
                        "EventReleased",
                        &agent,
                        consult_conn,
                        &consult_uuid,
                        "Consult",
                    )
                    .call_state(2),
                );
                self.push(
                    done,
                    self.base("EventRetrieved", &agent, conn, uuid, "Inbound"),
                );
                self.push(
                    done,
                    self.base("EventPartyAdded", &agent, conn, uuid, "Inbound")
                        .third(&other)
                        .third_role("RoleConferenceMember"),
                );
                self.push(
                    done,
                    self.base("EventPartyChanged", &other, conn, uuid, "Inbound")
                        .previous_conn(consult_conn)
                        .other(customer),
                );
                self.push(
                    done,
                    self.base("EventPartyAdded", &other, conn, uuid, "Inbound")
                        .third(&agent)
                        .third_role("RoleConferenceMember"),
                );
                let a_leaves = done + micros(self.rng.between(20.0, 90.0));
                self.push(
                    a_leaves,
                    self.base("EventReleased", &agent, conn, uuid, "Inbound"),
                );
                self.push(
                    a_leaves,
                    self.base("EventPartyDeleted", &other, conn, uuid, "Inbound")
                        .third(&agent),
                );
                let b_end = a_leaves + b_talk;
                self.push(
                    b_end,
                    self.base("EventReleased", &other, conn, uuid, "Inbound"),
                );
                (a_leaves, b_end)
            }
        };
        self.agents[b].free_at = b_free + micros(self.config.wrap_up_secs);
        a_free
    }

    /// Agent `a` transfers the customer's call to agent `b` in one step at `at`.
    #[allow(clippy::too_many_arguments)]
    fn single_step(
        &mut self,
        a: usize,
        b: usize,
        customer: &Arc<str>,
        conn: u64,
        uuid: &Arc<str>,
        user_data: &Arc<str>,
        at: Micros,
    ) -> Micros {
        let agent = Arc::clone(&self.agents[a].dn);
        let other = Arc::clone(&self.agents[b].dn);
        self.push(
            at,
            self.base("EventReleased", &agent, conn, uuid, "Inbound")
                .call_state(1)
                .third(&other),
        );
        self.push(
            at + micros(0.2),
            self.base("EventRinging", &other, conn, uuid, "Inbound")
                .other(customer)
                .ani(customer)
                .user_data(Arc::clone(user_data)),
        );
        let answered = at + micros(self.rng.between(2.0, 6.0));
        self.push(
            answered,
            self.base("EventEstablished", &other, conn, uuid, "Inbound")
                .other(customer),
        );
        let end = answered
            + micros(
                self.rng
                    .lognormal(self.config.talk_secs * 0.6, 0.7)
                    .max(10.0),
            );
        self.push(
            end,
            self.base("EventReleased", &other, conn, uuid, "Inbound"),
        );
        self.agents[b].free_at = end + micros(self.config.wrap_up_secs);
        at
    }

    fn outbound(&mut self, t0: Micros) {
        let Some((a, start)) = Self::earliest(&self.agents, t0, None) else {
            return;
        };
        let agent = Arc::clone(&self.agents[a].dn);
        let customer = self.customer_number();
        let conn = self.new_conn();
        let uuid = self.new_uuid();
        self.push(
            start,
            self.base("EventDialing", &agent, conn, &uuid, "Outbound")
                .this_role("RoleOrigination")
                .other(&customer)
                .dnis(&customer),
        );
        self.push(
            start + micros(1.0),
            self.base("EventNetworkReached", &agent, conn, &uuid, "Outbound"),
        );
        let roll = self.rng.unit();
        let mix = &self.config.mix;
        let end = if roll < mix.outbound_busy {
            let at = start + micros(2.0);
            self.push(
                at,
                self.base("EventDestinationBusy", &agent, conn, &uuid, "Outbound"),
            );
            self.push(
                at + micros(1.0),
                self.base("EventReleased", &agent, conn, &uuid, "Outbound")
                    .call_state(6),
            );
            at + micros(1.0)
        } else if roll < mix.outbound_busy + mix.outbound_no_answer {
            let at = start + micros(25.0);
            self.push(
                at,
                self.base("EventReleased", &agent, conn, &uuid, "Outbound")
                    .call_state(7),
            );
            at
        } else {
            let answered = start + micros(self.rng.between(5.0, 20.0));
            self.push(
                answered,
                self.base("EventEstablished", &agent, conn, &uuid, "Outbound")
                    .other(&customer),
            );
            let end = answered
                + micros(
                    self.rng
                        .lognormal(self.config.talk_secs * 0.7, 0.8)
                        .max(5.0),
                );
            self.push(
                end,
                self.base("EventReleased", &agent, conn, &uuid, "Outbound"),
            );
            end
        };
        self.agents[a].free_at = end + micros(self.config.wrap_up_secs);
    }

    fn internal(&mut self, t0: Micros) {
        let Some((a, start)) = Self::earliest(&self.agents, t0, None) else {
            return;
        };
        let Some((b, free)) = Self::earliest(&self.agents, start, Some(a)) else {
            return;
        };
        if free > start {
            // Nobody free to call: the agent makes no internal call now.
            self.stats.internal_skipped += 1;
            return;
        }
        let caller = Arc::clone(&self.agents[a].dn);
        let callee = Arc::clone(&self.agents[b].dn);
        let conn = self.new_conn();
        let uuid = self.new_uuid();
        self.push(
            start,
            self.base("EventDialing", &caller, conn, &uuid, "Internal")
                .this_role("RoleOrigination")
                .other(&callee),
        );
        self.push(
            start + micros(0.1),
            self.base("EventRinging", &callee, conn, &uuid, "Internal")
                .this_role("RoleDestination")
                .other(&caller),
        );
        let answered = start + micros(self.rng.between(2.0, 6.0));
        for (dn, other) in [(&callee, &caller), (&caller, &callee)] {
            self.push(
                answered,
                self.base("EventEstablished", dn, conn, &uuid, "Internal")
                    .other(other),
            );
        }
        let end = answered + micros(self.rng.lognormal(60.0, 0.6).max(5.0));
        self.push(
            end,
            self.base("EventReleased", &caller, conn, &uuid, "Internal"),
        );
        self.push(
            end + micros(0.05),
            self.base("EventReleased", &callee, conn, &uuid, "Internal"),
        );
        self.agents[a].free_at = end + micros(self.config.wrap_up_secs);
        self.agents[b].free_at = end + micros(self.config.wrap_up_secs);
    }

    fn render(&mut self, time: Micros, ev: &Ev) -> SimEvent {
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
        let _ = write!(
            line,
            r#","ConnID":"{:016x}","CallUUID":"{}","CallType":"{}","ThisDN":"{}""#,
            ev.conn, ev.uuid, ev.call_type, ev.this_dn
        );
        let mut attr = |key: &str, value: Option<&str>| {
            if let Some(value) = value {
                let _ = write!(line, r#","{key}":"{value}""#);
            }
        };
        attr("ThisDNRole", ev.this_role);
        attr("OtherDN", ev.other.as_deref());
        attr("OtherDNRole", ev.other_role);
        attr("ThirdPartyDN", ev.third.as_deref());
        attr("ThirdPartyDNRole", ev.third_role);
        attr("ANI", ev.ani.as_deref());
        attr("DNIS", ev.dnis.as_deref());
        attr("ThisQueue", ev.queue.as_deref());
        if let Some(previous) = ev.previous_conn {
            let _ = write!(line, r#","PreviousConnID":"{previous:016x}""#);
        }
        if let Some(transfer) = ev.transfer_conn {
            let _ = write!(line, r#","TransferConnID":"{transfer:016x}""#);
        }
        if let Some(state) = ev.call_state {
            let _ = write!(line, r#","CallState":{state}"#);
        }
        if let Some(user_data) = &ev.user_data {
            let _ = write!(line, r#","UserData":{user_data}"#);
        }
        if let Some(extensions) = ev.extensions {
            let _ = write!(line, r#","Extensions":{extensions}"#);
        }
        line.push('}');
        SimEvent {
            time,
            line: line.clone(),
        }
    }
}

#[derive(Clone, Copy)]
enum Ending {
    Transfer,
    Cancel,
    Conference,
}

/// `data` (a flat-or-nested JSON object written by this module) with `key` set to the string `value`.
fn with_key(data: &str, key: &str, value: &str) -> String {
    let needle = format!(r#","{key}":""#);
    let body = data.strip_suffix('}').unwrap_or(data);
    let body = match body.find(&needle) {
        Some(at) => {
            let rest = &body[at + needle.len()..];
            let end = rest
                .find('"')
                .map_or(body.len(), |e| at + needle.len() + e + 1);
            format!("{}{}", &body[..at], &body[end..])
        }
        None => body.to_owned(),
    };
    format!(r#"{body},"{key}":"{value}"}}"#)
}

impl Iterator for Simulator {
    type Item = SimEvent;

    fn next(&mut self) -> Option<SimEvent> {
        loop {
            let due = self.pending.peek().map(|Reverse(p)| p.time);
            let arrivals_open = self.arrivals_open();
            match due {
                Some(time) if !arrivals_open || time <= self.next_arrival => {
                    let Reverse(pending) = self.pending.pop()?;
                    return Some(self.render(pending.time, &pending.event));
                }
                _ if arrivals_open => {
                    let t0 = self.next_arrival;
                    self.start_call(t0);
                    let gap = self
                        .rng
                        .exponential(1.0 / self.config.calls_per_second.max(1e-9));
                    self.next_arrival = t0 + micros(gap).max(1);
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
    fn numbers_stay_four_digits_while_they_fit_and_never_collide() {
        let small = NumberPlan::new(899, 99, 999);
        assert_eq!(
            (small.agent(1), small.agent(899), small.supervisor(1)),
            (7001, 7899, 7901)
        );
        assert_eq!((small.supervisor(99), small.queue(1)), (7999, 8001));
        for (agents, supervisors, queues) in [(900, 3, 4), (2000, 20, 8), (50, 100, 1000)] {
            let plan = NumberPlan::new(agents, supervisors, queues);
            let mut all: Vec<u64> = (1..=agents).map(|i| plan.agent(i)).collect();
            all.extend((1..=supervisors).map(|i| plan.supervisor(i)));
            all.extend((1..=queues).map(|i| plan.queue(i)));
            let count = all.len();
            all.sort_unstable();
            all.dedup();
            assert_eq!(all.len(), count, "{agents} {supervisors} {queues}");
            assert!(plan.agent(1).to_string().starts_with("70"));
            assert!(plan.supervisor(1).to_string().starts_with("79"));
            assert!(plan.queue(1).to_string().starts_with("80"));
        }
    }

    #[test]
    fn with_key_adds_and_replaces() {
        let data = r#"{"A":"1","N":{"x":1}}"#;
        let once = with_key(data, "GSIP_RECORD", "ON");
        assert_eq!(once, r#"{"A":"1","N":{"x":1},"GSIP_RECORD":"ON"}"#);
        assert_eq!(
            with_key(&once, "GSIP_RECORD", "OFF"),
            r#"{"A":"1","N":{"x":1},"GSIP_RECORD":"OFF"}"#
        );
    }

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
