//! The scenario mix: how often each kind of call and each feature occurs, and the names `--mix` gives them.

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
