//! Call detail records (analytics.md, "Call detail records"): a pure fold over the same events as the
//! reducer, one record per call, where a call is the tree of ConnIDs that consultations, transfers and
//! conferences join. No I/O, no clock: time is the events' own (docs/cdr-interpretations.md), so the
//! offline `callgate cdr` and a live gateway fold the same events into the same bytes.
//!
//! A call's record is due once every party of the call is released and `linger` has passed in event
//! time with no further event on its ConnIDs (a single-step transfer leaves a moment with no party).
//! After that, a change of its attached data within `late_window` emits it again, whole, one version
//! higher.

mod call;
pub mod record;
#[cfg(test)]
mod tests;

use crate::event::{ConnId, Event, EventKind, Micros};
use crate::reduce::{SequenceCheck, SequenceTracker};
use call::Call;
use record::Cdr;
use std::collections::{BTreeSet, HashMap};

/// Settings of the fold.
#[derive(Debug, Clone)]
pub struct CdrConfig {
    /// How long after its last release a call waits for more events before its record is due.
    pub linger: Micros,
    /// How long after its end a change of attached data still emits a new version.
    pub late_window: Micros,
    /// The UserData key whose value is the record's `disposition`.
    pub disposition_key: String,
    /// The most calls held at once (live, lingering, or within the late window). At the bound the
    /// oldest ended call is let go early (its record emitted first when due); a new call is refused
    /// only when every held call is live.
    pub max_calls: usize,
}

impl Default for CdrConfig {
    fn default() -> Self {
        Self {
            linger: 30_000_000,
            late_window: 3_600_000_000,
            disposition_key: "DispositionCode".to_owned(),
            max_calls: 200_000,
        }
    }
}

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// It went into a call (or an agent's state).
    Applied,
    /// A duplicate by EventSequenceNumber.
    Duplicate,
    /// Nothing a record shows (a link event, an unknown ConnID's stray event...).
    Ignored,
    /// It would start a call while `max_calls` calls are live.
    Refused,
}

/// Per T-Server bookkeeping: duplicates and runs (call-resource.md, "Duplicates and order"), and the
/// agents at its DNs.
#[derive(Default)]
struct Server {
    agents: Map<Box<str>, Agent>,
    tracker: SequenceTracker,
    run: u32,
    /// The last event time: an event without one takes it (as the sequencer does).
    last_time: Option<Micros>,
}

/// An agent's state at a DN, for `agentId` and `wrapUpMs`.
#[derive(Default)]
struct Agent {
    agent_id: Option<Box<str>>,
    /// The call this agent last released, and since when it is in after-call work for it (`None`:
    /// not yet).
    wrapping: Option<(u64, Option<Micros>)>,
}

/// The fold's maps: foldhash with a per-process seed (the keys come from outside).
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The fold.
pub struct CdrFold {
    config: CdrConfig,
    /// T-Servers by name, numbered in order of appearance (at most [`crate::reduce::MAX_SERVERS`]).
    server_numbers: Map<Box<str>, u32>,
    servers: Vec<Server>,
    calls: Map<u64, Call>,
    by_conn: Map<(u32, ConnId), u64>,
    /// E.164 forms of the numbers seen (bounded: cleared when full), as `aniE164` needs them.
    e164: call::E164Cache,
    /// Ended calls by when they are due (linger over) or expire (late window over).
    due: BTreeSet<(Micros, u64)>,
    next_call: u64,
    /// The latest event time seen.
    clock: Micros,
    /// Events taken so far: the order of first and last events.
    order: u64,
}

impl CdrFold {
    /// An empty fold.
    pub fn new(config: CdrConfig) -> Self {
        Self {
            config,
            server_numbers: Map::default(),
            servers: Vec::new(),
            calls: Map::default(),
            by_conn: Map::default(),
            e164: call::E164Cache::default(),
            due: BTreeSet::new(),
            next_call: 1,
            clock: Micros::MIN,
            order: 0,
        }
    }

    /// Calls held.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no call is held.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Folds one event, in arrival order. Its time is its own, else its Server's previous event's, else
    /// `arrival` (the gateway's clock; offline none), else the latest time seen. Appends the records
    /// that became due to `out`.
    pub fn apply(
        &mut self,
        event: &Event<'_>,
        arrival: Option<Micros>,
        out: &mut Vec<Cdr>,
    ) -> Taken {
        let Some(server_no) = self.server_number(&event.server) else {
            return Taken::Ignored;
        };
        let Some(server) = self.servers.get_mut(server_no as usize) else {
            return Taken::Ignored;
        };
        if let Some(number) = event.sequence {
            match server.tracker.check(number) {
                SequenceCheck::Duplicate => return Taken::Duplicate,
                SequenceCheck::Restarted => server.run += 1,
                SequenceCheck::Fresh => {}
            }
        }
        let run = server.run;
        // Offline, an event before any timed one of its Server has no time: it takes the next timed
        // event's of its call (item 27), UNTIMED until then.
        let time = event.time.or(server.last_time).or(arrival);
        if time.is_some() {
            server.last_time = time;
        }
        let time = time.unwrap_or(call::UNTIMED);
        if time != call::UNTIMED {
            self.advance(time, out);
        }
        self.order += 1;
        if event.conn_id.is_none() {
            return self.agent_event(server_no, event, time, out);
        }
        let Some(number) = self.call_of(server_no, event, run, time, out) else {
            let would_begin = begins_a_call(event.kind);
            let full = self.calls.len() >= self.config.max_calls;
            return if would_begin && full {
                metrics::counter!("callgate_cdr_refused_total").increment(1);
                Taken::Refused
            } else {
                Taken::Ignored
            };
        };
        let Some(call) = self.calls.get_mut(&number) else {
            return Taken::Ignored;
        };
        let was_ended = call.ended();
        let taken = call.apply(event, time, self.order, &self.config);
        if let Some(conn) = event.conn_id {
            self.by_conn.entry((server_no, conn)).or_insert(number);
        }
        self.track_agent(server_no, event, number);
        let Some(call) = self.calls.get_mut(&number) else {
            return taken;
        };
        if call.emitted() {
            if call.take_reemit() {
                out.extend(self.record(number));
            }
        } else if call.ended() {
            if let Some(due) = call.due_at() {
                self.due.remove(&(due, number));
            }
            let due = call
                .end()
                .saturating_add(self.config.linger)
                .max(time.saturating_add(self.config.linger));
            call.set_due(due);
            self.due.insert((due, number));
        } else if was_ended && let Some(due) = call.due_at() {
            self.due.remove(&(due, number));
            call.clear_due();
        }
        taken
    }

    /// Tells the fold that time is `now` (a live gateway's clock between events): records due by then
    /// are appended to `out`.
    pub fn advance(&mut self, now: Micros, out: &mut Vec<Cdr>) {
        self.clock = self.clock.max(now);
        while let Some(&(at, number)) = self.due.first() {
            if at > self.clock {
                break;
            }
            self.due.pop_first();
            self.expire_or_emit(number, out);
        }
    }

    /// The end of the input: every ended call's record is due now (live calls give none).
    pub fn finish(&mut self, out: &mut Vec<Cdr>) {
        let due: Vec<(Micros, u64)> = std::mem::take(&mut self.due).into_iter().collect();
        for (_, number) in due {
            let Some(call) = self.calls.get(&number) else {
                continue;
            };
            if !call.emitted() {
                if let Some(call) = self.calls.get_mut(&number) {
                    call.mark_emitted();
                }
                out.extend(self.record(number));
            }
            self.drop_call(number);
        }
    }

    fn expire_or_emit(&mut self, number: u64, out: &mut Vec<Cdr>) {
        let Some(call) = self.calls.get_mut(&number) else {
            return;
        };
        if call.emitted() {
            // The late window is over.
            self.drop_call(number);
            return;
        }
        call.mark_emitted();
        let expires = call.end().saturating_add(self.config.late_window);
        call.set_due(expires);
        self.due.insert((expires, number));
        out.extend(self.record(number));
    }

    fn record(&mut self, number: u64) -> Option<Cdr> {
        Some(
            self.calls
                .get(&number)?
                .record(&self.config, &mut self.e164),
        )
    }

    /// The call `event` belongs to: by its ConnID, else by the ConnID it consults about or came from,
    /// else a new one.
    fn call_of(
        &mut self,
        server: u32,
        event: &Event<'_>,
        run: u32,
        time: Micros,
        out: &mut Vec<Cdr>,
    ) -> Option<u64> {
        let conn = event.conn_id?;
        let own = self.by_conn.get(&(server, conn)).copied();
        // A consultation names the call it is about; a completed transfer or conference the ConnID the
        // party had (items 3, 32). Either joins the two calls, however late it is said.
        let parent = match event.kind {
            EventKind::PartyChanged => event.previous_conn_id,
            _ if event.call_type == Some(crate::event::CallType::Consult) => {
                event.transfer_conn_id.or(event.previous_conn_id)
            }
            _ => None,
        };
        let parents = parent.and_then(|parent| {
            let number = *self.by_conn.get(&(server, parent))?;
            Some((parent, number))
        });
        match (own, parents) {
            (Some(number), Some((parent, other))) if number != other => {
                return Some(self.merge(number.min(other), number.max(other), conn, parent));
            }
            (Some(number), _) => return Some(number),
            (None, Some((parent, number))) => {
                if let Some(call) = self.calls.get_mut(&number) {
                    call.link(conn, parent);
                }
                return Some(number);
            }
            (None, None) => {}
        }
        if !begins_a_call(event.kind) {
            return None;
        }
        if self.calls.len() >= self.config.max_calls && !self.make_room(out) {
            return None;
        }
        let number = self.next_call;
        self.next_call += 1;
        self.calls.insert(
            number,
            Call::new(event, server, run, time, conn, self.order),
        );
        Some(number)
    }

    /// Joins call `absorbed` into call `kept` (the one begun first): `conn` came from `parent`. A call
    /// whose record went out already is not joined again; the event stays with `kept`.
    fn merge(&mut self, kept: u64, absorbed: u64, conn: ConnId, parent: ConnId) -> u64 {
        if self.calls.get(&kept).is_none_or(Call::emitted)
            || self.calls.get(&absorbed).is_none_or(Call::emitted)
        {
            return kept;
        }
        let Some(other) = self.calls.remove(&absorbed) else {
            return kept;
        };
        if let Some(due) = other.due_at() {
            self.due.remove(&(due, absorbed));
        }
        for own in other.conn_ids() {
            self.by_conn.insert((other.server_number(), *own), kept);
        }
        if let Some(call) = self.calls.get_mut(&kept) {
            if let Some(due) = call.due_at() {
                self.due.remove(&(due, kept));
                call.clear_due();
            }
            let (child, from) = if other.conn_ids().any(|own| *own == conn) {
                (conn, parent)
            } else {
                (parent, conn)
            };
            call.absorb(other, child, from);
        }
        kept
    }

    /// Lets the ended call due first go, emitting its record now if it was not out yet (before its
    /// linger is over: counted): false when every call held is live.
    fn make_room(&mut self, out: &mut Vec<Cdr>) -> bool {
        let Some((_, number)) = self.due.pop_first() else {
            return false;
        };
        if self.calls.get(&number).is_some_and(|call| !call.emitted()) {
            metrics::counter!("callgate_cdr_early_total").increment(1);
            self.expire_or_emit(number, out);
        }
        self.drop_call(number);
        true
    }

    /// The number of the T-Server `name`, numbering a new one (none past the bound).
    fn server_number(&mut self, name: &str) -> Option<u32> {
        if let Some(&number) = self.server_numbers.get(name) {
            return Some(number);
        }
        if self.servers.len() >= crate::reduce::MAX_SERVERS {
            return None;
        }
        let number = u32::try_from(self.servers.len()).ok()?;
        self.server_numbers.insert(name.into(), number);
        self.servers.push(Server::default());
        Some(number)
    }

    fn drop_call(&mut self, number: u64) {
        if let Some(call) = self.calls.remove(&number) {
            if let Some(due) = call.due_at() {
                self.due.remove(&(due, number));
            }
            for conn in call.conn_ids() {
                let key = (call.server_number(), *conn);
                if self.by_conn.get(&key) == Some(&number) {
                    self.by_conn.remove(&key);
                }
            }
        }
    }

    /// Agent-state events: who is logged in where, and after-call work.
    fn agent_event(
        &mut self,
        server: u32,
        event: &Event<'_>,
        time: Micros,
        out: &mut Vec<Cdr>,
    ) -> Taken {
        let Some(dn) = event.this_dn.as_deref() else {
            return Taken::Ignored;
        };
        let Some(agents) = self.servers.get_mut(server as usize).map(|s| &mut s.agents) else {
            return Taken::Ignored;
        };
        match event.kind {
            EventKind::AgentLogin => {
                let agent = agents.entry(dn.into()).or_default();
                agent.agent_id = event.agent_id.as_deref().map(Into::into);
                Taken::Applied
            }
            EventKind::AgentLogout | EventKind::AgentReady | EventKind::AgentNotReady => {
                let after_call_work = event.kind == EventKind::AgentNotReady
                    && event.work_mode == Some(crate::event::AgentWorkMode::AfterCallWork);
                let Some(agent) = agents.get_mut(dn) else {
                    return Taken::Ignored;
                };
                if event.kind == EventKind::AgentLogout {
                    agent.agent_id = None;
                }
                match agent.wrapping {
                    Some((number, None)) if after_call_work => {
                        agent.wrapping = Some((number, Some(time)));
                    }
                    Some(_) if after_call_work => {}
                    Some((number, since)) => {
                        agent.wrapping = None;
                        let reemit = self.calls.get_mut(&number).is_some_and(|call| {
                            call.wrap_up(dn, since, time);
                            call.emitted() && call.take_reemit()
                        });
                        if reemit {
                            out.extend(self.record(number));
                        }
                    }
                    None => {}
                }
                Taken::Applied
            }
            _ => Taken::Ignored,
        }
    }

    /// A party's release with after-call work following starts its wrap-up for this call.
    fn track_agent(&mut self, server: u32, event: &Event<'_>, number: u64) {
        if event.kind != EventKind::Released {
            return;
        }
        let Some(dn) = event.this_dn.as_deref() else {
            return;
        };
        let agent = self
            .servers
            .get_mut(server as usize)
            .and_then(|s| s.agents.get_mut(dn));
        if let Some(agent) = agent {
            agent.wrapping = Some((number, None));
            if let Some(call) = self.calls.get_mut(&number) {
                call.expect_wrap_up(dn, agent.agent_id.clone());
            }
        }
    }
}

/// Whether an event of this kind on an unknown ConnID begins a call: only one that puts a party in it.
/// A stray release or data change of a ConnID not (or no longer) held would make a record of nothing.
fn begins_a_call(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::Queued
            | EventKind::Ringing
            | EventKind::Dialing
            | EventKind::NetworkReached
            | EventKind::Established
            | EventKind::Held
            | EventKind::Retrieved
            | EventKind::PartyChanged
    )
}
