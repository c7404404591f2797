//! One call being recorded: its ConnIDs, its parties' legs and the timeline they leave. The rules are
//! analytics.md's, read as docs/cdr-interpretations.md says (the numbers below are its items).

use super::CdrConfig;
use super::record::{AgentRow, Cdr, Link, LinkKind, QueueVisit, Segment, SegmentKind, ms};
use crate::event::{CallType, ConnId, Event, EventKind, Micros, Role};
use smol_str::SmolStr;
use std::collections::HashMap;
use std::sync::Arc;

/// TLib call-state codes the record reads (events.md).
mod call_state {
    pub const TRANSFERRED: u32 = 1;
    pub const CONFERENCED: u32 = 2;
    pub const REMOTE_RELEASE: u32 = 5;
    pub const BUSY: u32 = 6;
    pub const NO_ANSWER: u32 = 7;
    pub const ABANDONED: u32 = 21;
    pub const REDIRECTED: u32 = 22;
    pub const FORWARDED: u32 = 23;
}

/// Bounds on what one call holds (its events grow them): ConnIDs (and links), legs, parties, queues,
/// and timeline segments. Past one, the call keeps what it has ([`Call::room`]).
const MAX_CONNS: usize = 64;
const MAX_LEGS: usize = 256;
const MAX_PARTIES: usize = 128;
const MAX_QUEUES: usize = 64;
const MAX_SEGMENTS: usize = 2048;

/// The time of an event that has none yet: it takes its call's next timed event's (item 27).
pub(super) const UNTIMED: Micros = Micros::MIN;

/// Where the call is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// A party is in it, or its record is not due yet.
    Open,
    /// Its record went out; it waits for late changes.
    Emitted,
}

/// One DN's presence on one ConnID of the call.
struct Leg {
    dn: SmolStr,
    conn: ConnId,
    /// The state it is in, and since when.
    open: Option<(SegmentKind, Micros)>,
    live: bool,
}

/// A DN that is not a queue and has events of its own (item 11).
struct Party {
    dn: SmolStr,
    agent_id: Option<SmolStr>,
    first_alert: Option<Micros>,
    last_alert: Option<Micros>,
    answer: Option<Micros>,
    end: Option<Micros>,
    last_state: Option<u32>,
    connected: bool,
    alerted: bool,
    wrap_up_ms: Option<i64>,
}

/// The last release of the call (item 18).
struct Release {
    this_dn: SmolStr,
    other_dn: Option<SmolStr>,
    state: Option<u32>,
}

/// E.164 forms of calling numbers, cached: parsing a number is most of a record's cost. Bounded: at
/// [`E164Cache::CAPACITY`] entries it starts again empty.
#[derive(Default)]
pub(super) struct E164Cache(HashMap<Box<str>, Option<String>, foldhash::fast::RandomState>);

impl E164Cache {
    const CAPACITY: usize = 16_384;

    fn get(&mut self, number: &str) -> Option<String> {
        if let Some(known) = self.0.get(number) {
            return known.clone();
        }
        if self.0.len() >= Self::CAPACITY {
            self.0.clear();
        }
        let e164 = crate::enrich::phone::e164(number);
        self.0.insert(number.into(), e164.clone());
        e164
    }
}

/// A call being recorded.
pub(super) struct Call {
    server: SmolStr,
    server_no: u32,
    run: u32,
    first_sequence: Option<u64>,
    root: ConnId,
    /// Every ConnID with its type (Consult once any event says so) and the order of its first event.
    conns: Vec<(ConnId, Option<CallType>, u64)>,
    links: Vec<Link>,
    call_type: Option<CallType>,
    ani: Option<SmolStr>,
    dnis: Option<SmolStr>,
    call_uuid: Option<SmolStr>,
    first_kind: EventKind,
    originator: Option<SmolStr>,
    start: Micros,
    answer: Option<Micros>,
    ring_ms: Option<i64>,
    end: Micros,
    queues: Vec<QueueVisit>,
    queue_dns: Vec<SmolStr>,
    legs: Vec<Leg>,
    parties: Vec<Party>,
    segments: Vec<Segment>,
    transfer_count: u32,
    last_transfer: Option<Micros>,
    conference: Vec<SmolStr>,
    last_conference: Option<Micros>,
    monitored: bool,
    recorded: bool,
    abandon: Option<(Option<&'static str>, Micros)>,
    busy: bool,
    no_answer: bool,
    redirected: bool,
    last_release: Option<Release>,
    user_data: Option<Arc<str>>,
    /// The order of the event that carried `user_data` (merges keep the later).
    user_data_order: u64,
    /// Some time of the call is still [`UNTIMED`].
    untimed: bool,
    /// The last event ended a party's leg.
    party_released: bool,
    /// The time of the call's latest timed event (for the idle bound).
    last_seen: Micros,
    /// Growth refused at a per-call bound (see [`Call::room`]).
    truncated: bool,
    stage: Stage,
    version: u32,
    reemit: bool,
    due: Option<Micros>,
}

impl Call {
    /// A call begun by `event` on `conn`.
    pub(super) fn new(
        event: &Event<'_>,
        server_no: u32,
        run: u32,
        time: Micros,
        conn: ConnId,
        order: u64,
    ) -> Self {
        Self {
            server: event.server.as_ref().into(),
            server_no,
            run,
            first_sequence: event.sequence,
            root: conn,
            conns: vec![(conn, None, order)],
            links: Vec::new(),
            call_type: None,
            ani: None,
            dnis: None,
            call_uuid: None,
            first_kind: event.kind,
            originator: None,
            start: time,
            answer: None,
            ring_ms: None,
            end: time,
            queues: Vec::new(),
            queue_dns: Vec::new(),
            legs: Vec::new(),
            parties: Vec::new(),
            segments: Vec::new(),
            transfer_count: 0,
            last_transfer: None,
            conference: Vec::new(),
            last_conference: None,
            monitored: false,
            recorded: false,
            abandon: None,
            busy: false,
            no_answer: false,
            redirected: false,
            last_release: None,
            user_data: None,
            user_data_order: 0,
            untimed: time == UNTIMED,
            party_released: false,
            last_seen: time,
            truncated: false,
            stage: Stage::Open,
            version: 0,
            reemit: false,
            due: None,
        }
    }

    pub(super) fn server_number(&self) -> u32 {
        self.server_no
    }

    pub(super) fn conn_ids(&self) -> impl Iterator<Item = &ConnId> {
        self.conns.iter().map(|(conn, _, _)| conn)
    }

    /// The call had an event at `time`.
    pub(super) fn seen_at(&mut self, time: Micros) {
        self.last_seen = self.last_seen.max(time);
    }

    /// The time of its latest timed event.
    pub(super) fn last_seen(&self) -> Micros {
        self.last_seen
    }

    /// Some time of the call is not known yet (an event without one, offline).
    pub(super) fn untimed(&self) -> bool {
        self.untimed
    }

    /// Whether the last event ended a party's leg (its agent's wrap-up may follow); asks once.
    pub(super) fn take_party_released(&mut self) -> bool {
        std::mem::take(&mut self.party_released)
    }

    pub(super) fn emitted(&self) -> bool {
        self.stage == Stage::Emitted
    }

    pub(super) fn mark_emitted(&mut self) {
        self.stage = Stage::Emitted;
        self.version = 1;
    }

    /// Whether a late change asks for a new version (and counts it).
    pub(super) fn take_reemit(&mut self) -> bool {
        if std::mem::take(&mut self.reemit) {
            self.version += 1;
            return true;
        }
        false
    }

    pub(super) fn end(&self) -> Micros {
        self.end
    }

    pub(super) fn due_at(&self) -> Option<Micros> {
        self.due
    }

    pub(super) fn set_due(&mut self, at: Micros) {
        self.due = Some(at);
    }

    pub(super) fn clear_due(&mut self) {
        self.due = None;
    }

    /// Every leg has been released (and there was one).
    pub(super) fn ended(&self) -> bool {
        !self.legs.is_empty() && self.legs.iter().all(|leg| !leg.live)
    }

    /// `conn` joined the call from `parent` (a consultation, item 5).
    pub(super) fn link(&mut self, conn: ConnId, parent: ConnId) {
        if conn != self.root
            && !self.links.iter().any(|link| link.conn_id == conn)
            && self.room(self.links.len(), MAX_CONNS)
        {
            self.links.push(Link {
                conn_id: conn,
                previous: parent,
                kind: LinkKind::Consult,
            });
        }
    }

    /// The agent logged in at `dn` when it released the call; wrap-up may follow.
    pub(super) fn expect_wrap_up(&mut self, dn: &str, agent_id: Option<SmolStr>) {
        if let Some(party) = self.parties.iter_mut().find(|party| &*party.dn == dn)
            && party.agent_id.is_none()
        {
            party.agent_id = agent_id;
        }
    }

    /// The agent at `dn` left its after-call work (or never entered it: `since` is `None`) at `time`.
    pub(super) fn wrap_up(&mut self, dn: &str, since: Option<Micros>, time: Micros) {
        let Some(party) = self.parties.iter_mut().find(|party| &*party.dn == dn) else {
            return;
        };
        party.wrap_up_ms = Some(since.map_or(0, |since| ms(time) - ms(since)));
        if let Some(since) = since {
            self.segments.push(Segment {
                dn: dn.into(),
                kind: SegmentKind::Wrapup,
                start: since,
                end: time,
            });
        }
        if self.stage == Stage::Emitted {
            self.reemit = true;
        }
    }

    /// Applies one event of the call.
    pub(super) fn apply(
        &mut self,
        event: &Event<'_>,
        time: Micros,
        order: u64,
        config: &CdrConfig,
    ) -> super::Taken {
        if self.stage == Stage::Emitted {
            return self.late(event, time, config);
        }
        let Some(conn) = event.conn_id else {
            return super::Taken::Ignored;
        };
        if time == UNTIMED {
            self.untimed = true;
        } else if self.untimed {
            self.fill_untimed(time);
        }
        self.note_conn(event, conn, order);
        if event.kind != EventKind::UserEvent
            && let Some(user_data) = &event.user_data
        {
            if self.user_data.as_deref() != Some(&*user_data.json) {
                self.user_data = Some(Arc::from(&*user_data.json));
            }
            self.user_data_order = order;
        }
        let record = crate::event::kv::RecordDirective::Record;
        let gsip = event
            .user_data
            .as_ref()
            .filter(|_| event.kind != EventKind::UserEvent)
            .and_then(|data| data.record);
        if event.extensions.as_ref().and_then(|e| e.record) == Some(record) || gsip == Some(record)
        {
            self.recorded = true;
        }
        match event.call_state {
            Some(call_state::BUSY) => self.busy = true,
            Some(call_state::NO_ANSWER) => self.no_answer = true,
            Some(call_state::REDIRECTED | call_state::FORWARDED) => self.redirected = true,
            _ => {}
        }
        if [event.this_dn_role, event.third_party_dn_role].contains(&Some(Role::Observer)) {
            self.monitored = true;
        }
        let Some(dn) = event.this_dn.as_deref() else {
            return super::Taken::Applied;
        };
        self.party_event(event, dn, conn, time);
        super::Taken::Applied
    }

    /// An event after the record went out: only a change of attached data counts (within the window).
    fn late(&mut self, event: &Event<'_>, time: Micros, config: &CdrConfig) -> super::Taken {
        let data_change = matches!(
            event.kind,
            EventKind::AttachedDataChanged | EventKind::CallDataChanged
        );
        let Some(user_data) = event.user_data.as_ref().filter(|_| data_change) else {
            return super::Taken::Ignored;
        };
        if time > self.end.saturating_add(config.late_window) {
            return super::Taken::Ignored;
        }
        if self.user_data.as_deref() != Some(&*user_data.json) {
            self.user_data = Some(Arc::from(&*user_data.json));
            self.reemit = true;
        }
        super::Taken::Applied
    }

    /// Gives every time still [`UNTIMED`] the call's first timed event's `time` (item 27).
    pub(super) fn fill_untimed(&mut self, time: Micros) {
        let fill = |at: &mut Micros| {
            if *at == UNTIMED {
                *at = time;
            }
        };
        let fill_some = |at: &mut Option<Micros>| {
            if let Some(at) = at {
                fill(at);
            }
        };
        fill(&mut self.start);
        fill(&mut self.end);
        fill_some(&mut self.answer);
        fill_some(&mut self.last_transfer);
        fill_some(&mut self.last_conference);
        if let Some((_, at)) = &mut self.abandon {
            fill(at);
        }
        for visit in &mut self.queues {
            fill(&mut visit.enter);
            fill_some(&mut visit.exit);
        }
        for leg in &mut self.legs {
            if let Some((_, at)) = &mut leg.open {
                fill(at);
            }
        }
        for party in &mut self.parties {
            fill_some(&mut party.first_alert);
            fill_some(&mut party.last_alert);
            fill_some(&mut party.answer);
            fill_some(&mut party.end);
        }
        for segment in &mut self.segments {
            fill(&mut segment.start);
            fill(&mut segment.end);
        }
        self.untimed = false;
    }

    /// Takes in `other`, a call that turned out to be part of this one: its ConnID `child` came from
    /// `parent` (a consultation recognised late, a transfer or conference completed across calls).
    pub(super) fn absorb(&mut self, other: Call, child: ConnId, parent: ConnId) {
        for (conn, call_type, order) in other.conns {
            match self.conns.iter_mut().find(|(known, _, _)| *known == conn) {
                Some(known) => {
                    known.1 = known.1.or(call_type);
                    known.2 = known.2.min(order);
                }
                None => self.conns.push((conn, call_type, order)),
            }
        }
        self.link(child, parent);
        for link in other.links {
            if !self.links.iter().any(|known| known.conn_id == link.conn_id) {
                self.links.push(link);
            }
        }
        if self.answer.is_none() || other.answer.is_some_and(|at| Some(at) < self.answer) {
            if other.answer.is_some() {
                self.ring_ms = other.ring_ms;
            }
            self.answer = other.answer.or(self.answer);
        }
        self.start = self.start.min(other.start);
        if other.end > self.end {
            self.end = other.end;
            if other.last_release.is_some() {
                self.last_release = other.last_release;
            }
        }
        self.queues.extend(other.queues);
        self.queues.sort_by_key(|visit| visit.enter);
        for queue in other.queue_dns {
            if !self.is_queue(&queue) {
                self.queue_dns.push(queue);
            }
        }
        self.legs.extend(other.legs);
        for party in other.parties {
            self.absorb_party(party);
        }
        self.segments.extend(other.segments);
        self.transfer_count += other.transfer_count;
        self.last_transfer = self.last_transfer.max(other.last_transfer);
        for party in other.conference {
            if !self.conference.contains(&party) {
                self.conference.push(party);
            }
        }
        self.last_conference = self.last_conference.max(other.last_conference);
        self.monitored |= other.monitored;
        self.recorded |= other.recorded;
        self.abandon = self.abandon.or(other.abandon);
        self.busy |= other.busy;
        self.no_answer |= other.no_answer;
        self.redirected |= other.redirected;
        if other.user_data_order > self.user_data_order {
            self.user_data = other.user_data;
            self.user_data_order = other.user_data_order;
        }
        self.untimed |= other.untimed;
        self.last_seen = self.last_seen.max(other.last_seen);
    }

    fn absorb_party(&mut self, other: Party) {
        let Some(party) = self.parties.iter_mut().find(|party| party.dn == other.dn) else {
            self.parties.push(other);
            return;
        };
        let earliest = |a: Option<Micros>, b: Option<Micros>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        party.agent_id = party.agent_id.take().or(other.agent_id);
        party.first_alert = earliest(party.first_alert, other.first_alert);
        party.answer = earliest(party.answer, other.answer);
        if other.end > party.end {
            party.end = other.end;
            party.last_state = other.last_state;
        }
        party.last_alert = party.last_alert.max(other.last_alert);
        party.connected |= other.connected;
        party.alerted |= other.alerted;
        party.wrap_up_ms = party.wrap_up_ms.or(other.wrap_up_ms);
    }

    /// The root call's description and every ConnID's type (items 6, 7, 14).
    fn note_conn(&mut self, event: &Event<'_>, conn: ConnId, order: u64) {
        match self.conns.iter_mut().find(|(known, _, _)| *known == conn) {
            Some((_, call_type, _)) => {
                // Consult once any event says so (item 32).
                if call_type.is_none() || event.call_type == Some(CallType::Consult) {
                    *call_type = event.call_type.or(*call_type);
                }
            }
            None => {
                if self.room(self.conns.len(), MAX_CONNS) {
                    self.conns.push((conn, event.call_type, order));
                }
            }
        }
        if conn != self.root {
            return;
        }
        if self.call_type.is_none() {
            self.call_type = event.call_type;
        }
        if self.ani.is_none() {
            self.ani = event.ani.as_deref().map(Into::into);
        }
        if self.dnis.is_none() {
            self.dnis = event.dnis.as_deref().map(Into::into);
        }
        if self.call_uuid.is_none() {
            self.call_uuid = event
                .call_uuid
                .as_deref()
                .filter(|u| !u.is_empty())
                .map(Into::into);
        }
        if self.originator.is_none() && event.kind == EventKind::Dialing {
            self.originator = event.this_dn.as_deref().map(Into::into);
        }
    }

    fn is_queue(&self, dn: &str) -> bool {
        self.queue_dns.iter().any(|queue| &**queue == dn)
    }

    /// Whether one more entry fits under `bound` (a call's lists grow with its events; a call that
    /// outgrows one keeps what it has, marked and counted, rather than growing without end).
    fn room(&mut self, len: usize, bound: usize) -> bool {
        if len < bound {
            return true;
        }
        if !self.truncated {
            self.truncated = true;
            metrics::counter!("callgate_cdr_truncated_total").increment(1);
        }
        false
    }

    /// The party at `dn`, made if new (`None` for a queue, or past [`MAX_PARTIES`]).
    fn party(&mut self, dn: &str) -> Option<&mut Party> {
        if self.is_queue(dn) {
            return None;
        }
        let index = match self.parties.iter().position(|party| &*party.dn == dn) {
            Some(index) => index,
            None => {
                if !self.room(self.parties.len(), MAX_PARTIES) {
                    return None;
                }
                self.parties.push(Party {
                    dn: dn.into(),
                    agent_id: None,
                    first_alert: None,
                    last_alert: None,
                    answer: None,
                    end: None,
                    last_state: None,
                    connected: false,
                    alerted: false,
                    wrap_up_ms: None,
                });
                self.parties.len() - 1
            }
        };
        self.parties.get_mut(index)
    }

    /// The leg of `dn` on `conn` is over, if it was there.
    fn end_leg(&mut self, dn: &str, conn: ConnId) {
        if let Some(leg) = self
            .legs
            .iter_mut()
            .find(|leg| &*leg.dn == dn && leg.conn == conn)
        {
            leg.live = false;
        }
    }

    /// The leg of `dn` on `conn` enters `kind` at `time` (item 12). A DN that is not a queue is a
    /// handling party from its first leg event on (item 11), however the call began for it; connected
    /// once it talks (item 24). A released leg is opened again only by what starts a leg anew (ringing,
    /// dialing, queueing: a call offered to the same agent twice); a late answer or hold reopens nothing.
    fn enter(&mut self, dn: &str, conn: ConnId, kind: Option<SegmentKind>, time: Micros) {
        // A queue only waits: it never rings, talks or holds (item 9), whatever a copy says.
        if self.is_queue(dn) && !matches!(kind, None | Some(SegmentKind::Queue)) {
            return;
        }
        let starts_anew = matches!(
            kind,
            Some(SegmentKind::Alert | SegmentKind::Dialing | SegmentKind::Queue)
        );
        let index = match self
            .legs
            .iter()
            .position(|leg| &*leg.dn == dn && leg.conn == conn)
        {
            Some(index) if self.legs[index].live || starts_anew || kind.is_none() => index,
            Some(_) => return,
            None if kind.is_none() => return,
            None => {
                if !self.room(self.legs.len(), MAX_LEGS) {
                    return;
                }
                self.legs.push(Leg {
                    dn: dn.into(),
                    conn,
                    open: None,
                    live: true,
                });
                self.legs.len() - 1
            }
        };
        // A leg being closed belongs to a party made when it opened: only an opening looks it up.
        if kind.is_some()
            && let Some(party) = self.party(dn)
            && kind == Some(SegmentKind::Interact)
        {
            party.connected = true;
        }
        let Some(leg) = self.legs.get_mut(index) else {
            return;
        };
        if kind.is_some() {
            leg.live = true;
        }
        if leg.open.is_some_and(|(open, _)| Some(open) == kind) {
            return;
        }
        let closed = leg.open.take();
        leg.open = kind.map(|kind| (kind, time));
        if let Some((kind, start)) = closed
            && self.room(self.segments.len(), MAX_SEGMENTS)
        {
            self.segments.push(Segment {
                dn: dn.into(),
                kind,
                start,
                end: time,
            });
        }
    }

    fn party_event(&mut self, event: &Event<'_>, dn: &str, conn: ConnId, time: Micros) {
        match event.kind {
            EventKind::Queued => {
                if !self.is_queue(dn) && self.room(self.queue_dns.len(), MAX_QUEUES) {
                    self.queue_dns.push(dn.into());
                }
                let waiting = self
                    .queues
                    .iter()
                    .any(|visit| &*visit.dn == dn && visit.exit.is_none());
                if !waiting && self.room(self.queues.len(), MAX_QUEUES) {
                    self.queues.push(QueueVisit {
                        dn: dn.into(),
                        enter: time,
                        exit: None,
                        outcome: None,
                    });
                }
                self.enter(dn, conn, Some(SegmentKind::Queue), time);
            }
            EventKind::Diverted => {
                // A routing point reports only its diversion: a queue all the same (item 9).
                if !self.is_queue(dn) && self.room(self.queue_dns.len(), MAX_QUEUES) {
                    self.queue_dns.push(dn.into());
                }
                self.leave_queue(dn, conn, "diverted", time);
            }
            EventKind::Abandoned => self.abandoned(dn, conn, time),
            EventKind::Ringing => self.ringing(dn, conn, time),
            EventKind::Dialing => self.enter(dn, conn, Some(SegmentKind::Dialing), time),
            // A late join: the state the reducer creates the leg in (item 24).
            EventKind::NetworkReached if !self.has_leg(dn, conn) => {
                self.enter(dn, conn, Some(SegmentKind::Dialing), time);
            }
            EventKind::Established => self.established(dn, conn, time),
            EventKind::Held => self.enter(dn, conn, Some(SegmentKind::Hold), time),
            EventKind::Retrieved => self.enter(dn, conn, Some(SegmentKind::Interact), time),
            EventKind::Released => self.released(event, dn, conn, time),
            EventKind::PartyChanged => self.party_changed(event, dn, conn, time),
            EventKind::PartyAdded => {
                // A device is never its own addition (item 31).
                if event.third_party_dn_role != Some(Role::Observer)
                    && let Some(third) = event.third_party_dn.as_deref()
                    && third != dn
                {
                    self.conferenced(third, time);
                }
            }
            _ => {}
        }
        if event.this_dn_role == Some(Role::NewParty) {
            self.conferenced(dn, time);
        }
    }

    fn conferenced(&mut self, dn: &str, time: Micros) {
        if !self.conference.iter().any(|party| &**party == dn)
            && self.room(self.conference.len(), MAX_PARTIES)
        {
            self.conference.push(dn.into());
            self.last_conference = Some(time);
        }
    }

    fn leave_queue(&mut self, dn: &str, conn: ConnId, outcome: &'static str, time: Micros) {
        if let Some(visit) = self
            .queues
            .iter_mut()
            .rev()
            .find(|visit| &*visit.dn == dn && visit.exit.is_none())
        {
            visit.exit = Some(time);
            visit.outcome = Some(outcome);
        }
        self.enter(dn, conn, None, time);
        self.end_leg(dn, conn);
        // Leaving a queue can be the call's last step (a diversion nothing follows): the call ends no
        // earlier than that (a property test found a record ending before its answer).
        self.end = self.end.max(time);
    }

    /// Whether `dn` is (or was) in the call on `conn`.
    fn has_leg(&self, dn: &str, conn: ConnId) -> bool {
        self.legs
            .iter()
            .any(|leg| &*leg.dn == dn && leg.conn == conn)
    }

    /// Whether `dn` is in the call on `conn` now: an end of a leg that is not open ends nothing (item 23).
    fn has_live_leg(&self, dn: &str, conn: ConnId) -> bool {
        self.legs
            .iter()
            .any(|leg| &*leg.dn == dn && leg.conn == conn && leg.live)
    }

    /// Some party other than a queue was connected (item 24: answered even without an EventEstablished).
    fn answered(&self) -> bool {
        self.answer.is_some() || self.parties.iter().any(|party| party.connected)
    }

    fn abandoned(&mut self, dn: &str, conn: ConnId, time: Micros) {
        if !self.has_live_leg(dn, conn) {
            return;
        }
        let phase = if self.queues.iter().any(|visit| visit.exit.is_none()) {
            Some("queue")
        } else if self
            .legs
            .iter()
            .any(|leg| leg.live && leg.open.is_some_and(|(kind, _)| kind == SegmentKind::Alert))
        {
            Some("ringing")
        } else {
            None
        };
        if !self.answered() {
            self.abandon = Some((phase, time));
        }
        if self.is_queue(dn) {
            self.leave_queue(dn, conn, "abandoned", time);
        } else {
            self.enter(dn, conn, None, time);
            self.end_leg(dn, conn);
            if let Some(party) = self.party(dn) {
                party.end = Some(time);
                party.last_state = Some(call_state::ABANDONED);
            }
        }
        self.end = time;
    }

    fn ringing(&mut self, dn: &str, conn: ConnId, time: Micros) {
        if let Some(party) = self.party(dn) {
            party.alerted = true;
            party.first_alert.get_or_insert(time);
            party.last_alert = Some(time);
        }
        self.enter(dn, conn, Some(SegmentKind::Alert), time);
    }

    fn established(&mut self, dn: &str, conn: ConnId, time: Micros) {
        // A queue never answers; a released leg is not answered after the fact (see `enter`).
        let released = self
            .legs
            .iter()
            .find(|leg| &*leg.dn == dn && leg.conn == conn)
            .is_some_and(|leg| !leg.live);
        if released || self.is_queue(dn) {
            return;
        }
        let mut ring = None;
        if let Some(party) = self.party(dn) {
            party.connected = true;
            party.answer.get_or_insert(time);
            ring = party.last_alert.map(|alert| ms(time) - ms(alert));
        }
        if self.answer.is_none() {
            self.answer = Some(time);
            self.ring_ms = ring;
        }
        self.enter(dn, conn, Some(SegmentKind::Interact), time);
    }

    fn released(&mut self, event: &Event<'_>, dn: &str, conn: ConnId, time: Micros) {
        if !self.has_live_leg(dn, conn) {
            return;
        }
        if self.is_queue(dn) {
            // The caller left the queue (a release there, not an abandon event): abandoned unanswered.
            if !self.answered() {
                self.abandon = Some((Some("queue"), time));
            }
            self.leave_queue(dn, conn, "released", time);
            self.end = time;
            return;
        }
        self.party_released = true;
        self.enter(dn, conn, None, time);
        self.end_leg(dn, conn);
        let consult = self
            .conns
            .iter()
            .any(|(known, call_type, _)| *known == conn && *call_type == Some(CallType::Consult));
        if event.call_state == Some(call_state::TRANSFERRED) && !consult {
            self.transfer_count += 1;
            self.last_transfer = Some(time);
        }
        if let Some(party) = self.party(dn) {
            party.end = Some(time);
            party.last_state = event.call_state;
        }
        self.last_release = Some(Release {
            this_dn: dn.into(),
            other_dn: event.other_dn.as_deref().map(Into::into),
            state: event.call_state,
        });
        self.end = time;
    }

    /// A transfer or conference completed: the leg moves to the new ConnID, and the consultation's link
    /// says what it became (item 5).
    fn party_changed(&mut self, event: &Event<'_>, dn: &str, conn: ConnId, time: Micros) {
        let Some(previous) = event.previous_conn_id else {
            return;
        };
        let moved = self
            .legs
            .iter_mut()
            .find(|leg| &*leg.dn == dn && leg.conn == previous)
            .map(|leg| leg.conn = conn)
            .is_some();
        // A late join: the party is on the call, connected (item 24).
        if !moved && !self.has_leg(dn, conn) {
            self.enter(dn, conn, Some(SegmentKind::Interact), time);
        }
        let kind = match (event.call_state, event.third_party_dn_role) {
            (Some(call_state::CONFERENCED), _) | (_, Some(Role::ConferencedBy)) => {
                LinkKind::Conference
            }
            (Some(call_state::TRANSFERRED), _) | (_, Some(Role::TransferredBy)) => {
                LinkKind::Transfer
            }
            _ => return,
        };
        let Some(link) = self
            .links
            .iter_mut()
            .find(|link| link.conn_id == previous || link.conn_id == conn)
        else {
            // The ConnID it came from was only named, never seen: nothing is counted (item 24).
            return;
        };
        link.kind = kind;
        if kind == LinkKind::Conference {
            self.conferenced(dn, time);
        }
    }

    /// The record as of now.
    pub(super) fn record(&self, config: &CdrConfig, e164: &mut E164Cache) -> Cdr {
        let mut segments = self.segments.clone();
        // Legs still open (a record forced out early) end at the call's end.
        for leg in &self.legs {
            if let Some((kind, start)) = leg.open {
                segments.push(Segment {
                    dn: leg.dn.clone(),
                    kind,
                    start,
                    end: self.end.max(start),
                });
            }
        }
        segments.sort_by_key(|segment| segment.start);
        let agents = self
            .parties
            .iter()
            .map(|party| self.agent_row(party, &segments))
            .collect();
        Cdr {
            cdr_id: self.cdr_id(),
            version: self.version.max(1),
            server: self.server.clone(),
            call_uuid: self.call_uuid.clone(),
            root: self.root,
            conn_ids: {
                let mut conns = self.conns.clone();
                conns.sort_by_key(|(_, _, order)| *order);
                conns.into_iter().map(|(conn, _, _)| conn).collect()
            },
            links: self.links.clone(),
            call_type: self.call_type.unwrap_or_default().as_str(),
            direction: self.direction(),
            ani: self.ani.clone(),
            dnis: self.dnis.clone(),
            ani_e164: self.ani.as_deref().and_then(|ani| e164.get(ani)),
            start: self.start,
            answer: self.answer,
            end: self.end,
            queues: self.queues.clone(),
            ring_ms: self.ring_ms,
            alerts: self.parties.iter().filter(|party| party.alerted).count() as u32,
            hold_count: segments
                .iter()
                .filter(|segment| segment.kind == SegmentKind::Hold)
                .count() as u32,
            transfer_count: self.transfer_count,
            consult_count: self
                .conns
                .iter()
                .filter(|(_, call_type, _)| *call_type == Some(CallType::Consult))
                .count() as u32,
            conference_count: self.conference.len() as u32,
            monitored: self.monitored,
            recorded: self.recorded,
            // A part that was abandoned before it joined an answered call is not the call's fate.
            abandon: self.abandon.filter(|_| !self.answered()),
            released_by: self.released_by(),
            outcome: self.outcome(),
            agents,
            segments,
            disposition: self.disposition(&config.disposition_key),
            user_data: self.user_data.clone(),
        }
    }

    /// `<Server>:<run>:<sequence of the first event>:<rootConnId>`.
    fn cdr_id(&self) -> String {
        let mut id = String::with_capacity(self.server.len() + 40);
        id.push_str(&self.server);
        id.push(':');
        id.push_str(itoa::Buffer::new().format(self.run));
        id.push(':');
        if let Some(sequence) = self.first_sequence {
            id.push_str(itoa::Buffer::new().format(sequence));
        }
        id.push(':');
        crate::json::push_conn_id(&mut id, self.root);
        id
    }

    fn agent_row(&self, party: &Party, segments: &[Segment]) -> AgentRow {
        let mine = |kind: SegmentKind| {
            segments
                .iter()
                .filter(move |segment| segment.dn == party.dn && segment.kind == kind)
        };
        let result = match party.last_state {
            Some(call_state::TRANSFERRED) => "Transferred",
            Some(call_state::CONFERENCED) => "Conferenced",
            Some(call_state::BUSY) => "Busy",
            Some(call_state::NO_ANSWER) => "NoAnswer",
            Some(call_state::REDIRECTED | call_state::FORWARDED) => "Redirected",
            Some(call_state::ABANDONED) => "Abandoned",
            _ if party.connected => "Completed",
            _ if party.alerted => "NoAnswer",
            _ => "Failed",
        };
        AgentRow {
            dn: party.dn.clone(),
            agent_id: party.agent_id.clone(),
            first_alert: party.first_alert,
            answer: party.answer,
            end: party.end,
            ring_ms: party
                .alerted
                .then(|| mine(SegmentKind::Alert).map(Segment::millis).sum()),
            talk_ms: mine(SegmentKind::Interact).map(Segment::millis).sum(),
            hold_ms: mine(SegmentKind::Hold).map(Segment::millis).sum(),
            hold_count: mine(SegmentKind::Hold).count() as u32,
            wrap_up_ms: party.wrap_up_ms,
            result,
        }
    }

    fn is_party(&self, dn: &str) -> bool {
        self.parties.iter().any(|party| &*party.dn == dn)
    }

    /// Item 6.
    fn direction(&self) -> &'static str {
        match self.call_type {
            Some(CallType::Inbound) => "inbound",
            Some(CallType::Outbound) => "outbound",
            Some(CallType::Internal | CallType::Consult) => "internal",
            Some(CallType::Unknown) | None => {
                let dialed_out = self.first_kind == EventKind::Dialing
                    && self
                        .dnis
                        .as_deref()
                        .is_some_and(|dnis| !self.is_party(dnis));
                if dialed_out {
                    "outbound"
                } else if self.ani.as_deref().is_some_and(|ani| !self.is_party(ani)) {
                    "inbound"
                } else {
                    "internal"
                }
            }
        }
    }

    /// Item 18.
    fn released_by(&self) -> &'static str {
        if self.abandon.is_some() {
            return "caller";
        }
        if !self.answered() {
            return "system";
        }
        let Some(release) = &self.last_release else {
            return "unknown";
        };
        let who = match release.state {
            Some(call_state::REMOTE_RELEASE) => release.other_dn.as_deref(),
            Some(0) | None => Some(&*release.this_dn),
            Some(_) => None,
        };
        match who {
            None => "unknown",
            Some(dn) if !self.is_party(dn) => "caller",
            Some(dn)
                if self.call_type == Some(CallType::Internal)
                    && self.originator.as_deref() == Some(dn) =>
            {
                "caller"
            }
            Some(_) => "agent",
        }
    }

    /// Item 19.
    fn outcome(&self) -> &'static str {
        if self.abandon.is_some() {
            return "Abandoned";
        }
        if !self.answered() {
            return if self.busy {
                "Busy"
            } else if self.no_answer {
                "NoAnswer"
            } else if self.redirected {
                "Redirected"
            } else {
                "Failed"
            };
        }
        match (self.last_transfer, self.last_conference) {
            (Some(transfer), Some(conference)) if conference > transfer => "Conferenced",
            (Some(_), _) => "Transferred",
            (None, Some(_)) => "Conferenced",
            (None, None) => "Completed",
        }
    }

    /// Item 21: the disposition key's value in the final attached data.
    fn disposition(&self, key: &str) -> Option<String> {
        disposition_in(self.user_data.as_deref()?, key)
    }
}

/// The value of top-level `key` in the compact JSON object `data`: a string as it is, another value as
/// compact JSON, `None` when absent or null (the last one when a key repeats, as a JSON map keeps it).
/// Only that value is parsed: building the whole map cost a record more than the rest of it.
fn disposition_in(data: &str, key: &str) -> Option<String> {
    use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};
    use serde_json::value::RawValue;

    struct Find<'k>(&'k str);

    impl<'de> Visitor<'de> for Find<'_> {
        type Value = Option<&'de RawValue>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if name == self.0 {
                    found = Some(map.next_value::<&'de RawValue>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }

    let mut reader = serde_json::Deserializer::from_str(data);
    let raw = reader.deserialize_map(Find(key)).ok()??;
    match serde_json::from_str::<serde_json::Value>(raw.get()).ok()? {
        serde_json::Value::String(text) => Some(text),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod disposition_tests {
    use super::disposition_in;

    /// What the record said before: the value in the whole parsed map.
    fn by_map(data: &str, key: &str) -> Option<String> {
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(data).ok()?;
        match map.get(key)? {
            serde_json::Value::String(text) => Some(text.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    #[test]
    fn the_key_is_read_as_the_whole_map_reads_it() {
        let cases = [
            r#"{"DispositionCode":"Sale","Other":1}"#,
            r#"{"Other":{"DispositionCode":"inner"},"DispositionCode":42}"#,
            r#"{"DispositionCode":null}"#,
            r#"{"DispositionCode":["a",{"b":1.5}]}"#,
            r#"{"Disposition\u0043ode":"escaped key","x":"\"q\""}"#,
            r#"{"DispositionCode":"first","DispositionCode":"last"}"#,
            r#"{"Other":"none"}"#,
            r#"{}"#,
            r#"{"DispositionCode":"caf\u00e9 \n"}"#,
        ];
        for data in cases {
            assert_eq!(
                disposition_in(data, "DispositionCode"),
                by_map(data, "DispositionCode"),
                "{data}"
            );
        }
    }
}
