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

/// A live call with no event for this long (event time) is let go, its record emitted as it stands:
/// its release was lost, and it would otherwise hold its place for ever.
pub const IDLE_AFTER: Micros = 4 * 3_600_000_000;

/// Agents tracked per T-Server (logged in, or wrapping up); a login past it is refused, counted.
pub const MAX_AGENTS: usize = 50_000;

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
    /// The last event that carried both its own time and an arrival: the Server's clock against the
    /// gateway's, for [`CdrFold::tick`].
    clock_pair: Option<(Micros, Micros)>,
}

/// An agent's state at a DN, for `agentId` and `wrapUpMs`.
#[derive(Default)]
struct Agent {
    agent_id: Option<smol_str::SmolStr>,
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
    /// Boxed: a call is most of a kilobyte, and the table stays small enough to probe in cache.
    calls: Map<u64, Box<Call>>,
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

    /// ConnIDs the fold can still find a call by: each belongs to a held call.
    pub fn conn_ids_held(&self) -> usize {
        self.by_conn.len()
    }

    /// Folds one event, in arrival order. Its time is its own, else its Server's previous event's, else
    /// `arrival` (the gateway's clock; offline none), else the latest time seen. Appends the records
    /// that became due to `out`. With an `arrival`, the clock first moves to it as by [`CdrFold::tick`]:
    /// so a fold of the events alone with their arrivals (an export) makes the records a live gateway,
    /// ticking between them, made.
    pub fn apply(
        &mut self,
        event: &Event<'_>,
        arrival: Option<Micros>,
        out: &mut Vec<Cdr>,
    ) -> Taken {
        if let Some(wall) = arrival {
            self.tick(wall, out);
        }
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
        if let (Some(own), Some(wall)) = (event.time, arrival) {
            server.clock_pair = Some((own, wall));
        }
        let time = time.unwrap_or(call::UNTIMED);
        if time != call::UNTIMED {
            self.advance(time, out);
        }
        self.order += 1;
        if event.conn_id.is_none() || event.kind.is_device_event() {
            return self.agent_event(server_no, event, time, out);
        }
        // EventUserEvent carries an application's data, link events the switch's state: no call's.
        if !event.kind.is_call_event() {
            return Taken::Ignored;
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
        // One lookup of the call per event: everything it decides is taken here.
        let open = !call.emitted();
        let reemit = !open && call.take_reemit();
        let released = call.take_party_released();
        reschedule(
            call,
            &mut self.due,
            number,
            time,
            was_ended,
            self.config.linger,
        );
        // Only an open call takes new ConnIDs: each one it holds is let go with it (drop_call).
        if open && let Some(conn) = event.conn_id {
            self.by_conn.entry((server_no, conn)).or_insert(number);
        }
        if released {
            self.track_agent(server_no, event, number);
        }
        if reemit {
            out.extend(self.record(number));
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

    /// Tells the fold that the gateway's clock reads `wall` (a live gateway's tick, or a recorded one):
    /// the time moves to what each Server's clock would read now, by its last event's time and arrival,
    /// and records due by then are appended to `out`. The Servers' own clocks, not the gateway's, make
    /// a record due: a switch clock a minute off the gateway's neither cuts nor stretches the linger.
    pub fn tick(&mut self, wall: Micros, out: &mut Vec<Cdr>) {
        let now = self
            .servers
            .iter()
            .filter_map(|server| server.clock_pair)
            .map(|(own, arrival)| own.saturating_add(wall.saturating_sub(arrival).max(0)))
            .max();
        if let Some(now) = now {
            self.advance(now, out);
        }
    }

    /// The end of the input: every ended call's record is due now, in the order they would have
    /// fallen due (live calls give none).
    pub fn finish(&mut self, out: &mut Vec<Cdr>) {
        let mut ended: Vec<(Micros, u64)> = self
            .calls
            .iter()
            .filter(|(_, call)| !call.emitted() && call.ended())
            .map(|(&number, call)| (call.due_at().unwrap_or(Micros::MAX), number))
            .collect();
        ended.sort_unstable();
        for (_, number) in ended {
            if let Some(call) = self.calls.get_mut(&number) {
                call.mark_emitted();
            }
            out.extend(self.record(number));
        }
        let numbers: Vec<u64> = self.calls.keys().copied().collect();
        for number in numbers {
            self.drop_call(number);
        }
    }

    fn expire_or_emit(&mut self, number: u64, out: &mut Vec<Cdr>) {
        let Some(call) = self.calls.get_mut(&number) else {
            return;
        };
        if call.emitted() {
            // Past its late window nothing can change it: let it go.
            self.drop_call(number);
            return;
        }
        if !call.ended() {
            let idle_until = call.last_seen().saturating_add(IDLE_AFTER);
            if idle_until > self.clock {
                call.set_due(idle_until);
                self.due.insert((idle_until, number));
                return;
            }
            metrics::counter!("callgate_cdr_idle_total").increment(1);
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
        // A call whose record went out takes no new ConnIDs and joins no other call.
        let parents = parents
            .filter(|(_, number)| self.calls.get(number).is_some_and(|call| !call.emitted()));
        match (own, parents) {
            (Some(number), Some((parent, other))) if number != other => {
                let merged = self.merge(number.min(other), number.max(other), conn, parent, time);
                return Some(merged.unwrap_or(number));
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
            Box::new(Call::new(event, server, run, time, conn, self.order)),
        );
        Some(number)
    }

    /// Joins call `absorbed` into call `kept` (the one begun first): `conn` came from `parent`, said by
    /// an event at `time`. `None` when either record went out already: the calls stay apart.
    fn merge(
        &mut self,
        kept: u64,
        absorbed: u64,
        conn: ConnId,
        parent: ConnId,
        time: Micros,
    ) -> Option<u64> {
        if self.calls.get(&kept).is_none_or(|call| call.emitted())
            || self.calls.get(&absorbed).is_none_or(|call| call.emitted())
        {
            return None;
        }
        let mut other = self.calls.remove(&absorbed)?;
        if time != call::UNTIMED {
            other.fill_untimed(time);
        }
        // An agent wrapping up after a release in the absorbed call wraps up after this one.
        for server in &mut self.servers {
            for agent in server.agents.values_mut() {
                if let Some((number, _)) = &mut agent.wrapping
                    && *number == absorbed
                {
                    *number = kept;
                }
            }
        }
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
            if time != call::UNTIMED {
                call.fill_untimed(time);
            }
            call.absorb(*other, child, from);
        }
        Some(kept)
    }

    /// Lets the ended call due first go, emitting its record now if it was not out yet (before its
    /// linger is over: counted): false when every call held is live.
    fn make_room(&mut self, out: &mut Vec<Cdr>) -> bool {
        // Live calls are in the due set too (for their idle expiry): they are not let go for room.
        let first_ended = self.due.iter().copied().find(|(_, number)| {
            self.calls
                .get(number)
                .is_some_and(|call| call.emitted() || call.ended())
        });
        let Some((due, number)) = first_ended else {
            return false;
        };
        self.due.remove(&(due, number));
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
                if agents.len() >= MAX_AGENTS && !agents.contains_key(dn) {
                    metrics::counter!("callgate_cdr_refused_total").increment(1);
                    return Taken::Refused;
                }
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
                    Some((number, None)) if after_call_work && time != call::UNTIMED => {
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
                if event.kind == EventKind::AgentLogout
                    && let Some(server) = self.servers.get_mut(server as usize)
                    && server
                        .agents
                        .get(dn)
                        .is_some_and(|agent| agent.wrapping.is_none())
                {
                    server.agents.remove(dn);
                }
                Taken::Applied
            }
            _ => Taken::Ignored,
        }
    }

    /// A party's release with after-call work following starts its wrap-up for this call.
    /// Call `number`'s event ended a party's leg: an agent there may now wrap up after it.
    fn track_agent(&mut self, server: u32, event: &Event<'_>, number: u64) {
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

/// When `call` (number `number`) is next looked at, after an event at `time`: an ended call when its
/// linger is over; a live one after [`IDLE_AFTER`] without an event (its release was lost: it is let go
/// rather than held for ever); a call with no time yet only at the end (or its next timed event). A live
/// call's idle check is not moved on each event: when it comes, it looks again from the call's last
/// event (`expire_or_emit`), so a busy call costs one reinsertion per [`IDLE_AFTER`].
fn reschedule(
    call: &mut Call,
    due: &mut BTreeSet<(Micros, u64)>,
    number: u64,
    time: Micros,
    was_ended: bool,
    linger: Micros,
) {
    if time != call::UNTIMED {
        call.seen_at(time);
    }
    if call.emitted() || (!call.ended() && !was_ended && call.due_at().is_some()) {
        return;
    }
    if let Some(at) = call.due_at() {
        due.remove(&(at, number));
        call.clear_due();
    }
    if call.untimed() || time == call::UNTIMED {
        return;
    }
    let at = if call.ended() {
        call.end().max(time).saturating_add(linger)
    } else {
        time.saturating_add(IDLE_AFTER)
    };
    call.set_due(at);
    due.insert((at, number));
}
