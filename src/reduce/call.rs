//! One call resource (one call as one device sees it) and the rules that change it, field by field.

use super::capabilities::Capabilities;
use crate::enrich::{Participant, PhoneBook};
use crate::event::{CallType, ConnId, Event, EventKind, KvList, Micros, RecordDirective, Role};
use std::sync::Arc;

/// The most parties a call keeps; EventPartyAdded beyond this is not shown (a TLib conference has at most a
/// few dozen parties, so only bad input reaches it).
pub const MAX_PARTICIPANTS: usize = 64;
/// The most observers tracked on a call; further ones are not tracked.
pub const MAX_OBSERVERS: usize = 16;

/// A call's state as GWS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallState {
    /// Alerting at the device.
    Ringing,
    /// The device is placing the call.
    Dialing,
    /// Connected.
    Established,
    /// On hold at the device.
    Held,
    /// The device left the call (final).
    Released,
}

impl CallState {
    /// Every state.
    pub const ALL: [CallState; 5] = [
        CallState::Ringing,
        CallState::Dialing,
        CallState::Established,
        CallState::Held,
        CallState::Released,
    ];

    /// The name in call resources.
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Ringing => "Ringing",
            CallState::Dialing => "Dialing",
            CallState::Established => "Established",
            CallState::Held => "Held",
            CallState::Released => "Released",
        }
    }

    /// The state an event of `kind` leads to, or `None` when it leaves the state as it is.
    pub fn after(kind: EventKind) -> Option<CallState> {
        use EventKind::*;
        match kind {
            Ringing => Some(CallState::Ringing),
            Dialing | NetworkReached => Some(CallState::Dialing),
            Established | Retrieved => Some(CallState::Established),
            Held => Some(CallState::Held),
            Released | Abandoned => Some(CallState::Released),
            _ => None,
        }
    }

    /// The state of a resource that an event of `kind` creates, or `None` when it creates none.
    pub fn created_by(kind: EventKind) -> Option<CallState> {
        match kind {
            EventKind::PartyChanged => Some(CallState::Established),
            EventKind::Released | EventKind::Abandoned => None,
            other => CallState::after(other),
        }
    }
}

/// Whether the call is being recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordingState {
    /// Recording.
    Recording,
    /// Recording paused.
    Paused,
    /// Not recording (the default).
    #[default]
    Stopped,
}

impl RecordingState {
    /// The name in call resources.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingState::Recording => "Recording",
            RecordingState::Paused => "Paused",
            RecordingState::Stopped => "Stopped",
        }
    }

    fn from_directive(directive: RecordDirective) -> Option<Self> {
        match directive {
            RecordDirective::Record => Some(RecordingState::Recording),
            RecordDirective::Pause => Some(RecordingState::Paused),
            RecordDirective::Stop => Some(RecordingState::Stopped),
            RecordDirective::Unrecognised => None,
        }
    }
}

/// What an event changed in a resource, one bit per notification type of call-resource.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Changes(u8);

impl Changes {
    /// Created, or the state changed.
    pub const STATUS: Changes = Changes(1);
    /// Participants changed.
    pub const PARTICIPANTS: Changes = Changes(2);
    /// userData changed.
    pub const USER_DATA: Changes = Changes(4);
    /// recordingState changed.
    pub const RECORDING: Changes = Changes(8);
    /// monitoredUserMuted changed.
    pub const MONITORED_MUTED: Changes = Changes(16);
    /// Any other field (mute, connId, callUuid, dnis, callType, capabilities, parent link, ...).
    pub const OTHER: Changes = Changes(32);

    /// Adds `other`.
    pub fn insert(&mut self, other: Changes) {
        self.0 |= other.0;
    }

    /// Whether any bit of `other` is set.
    pub fn contains(self, other: Changes) -> bool {
        self.0 & other.0 != 0
    }
}

/// Sets `*field` to `value` and records `change` when that is a change.
fn set<T: PartialEq>(field: &mut T, value: T, changes: &mut Changes, change: Changes) {
    if *field != value {
        *field = value;
        changes.insert(change);
    }
}

/// The latest CallUUID a call has seen. Most calls' id is their first CallUUID: that one is not kept
/// twice (32 bytes a call).
#[derive(Debug, Clone, PartialEq, Eq)]
enum CallUuid {
    Unseen,
    TheId,
    Other(Box<str>),
}

/// What few calls have: a ConnID that changed, observers, a monitored agent, a call they consult about.
/// Kept apart, so that the other calls cost 80 bytes less each.
#[derive(Debug, Clone, Default)]
struct Rare {
    previous_conn_id: Option<ConnId>,
    observers: Vec<Box<str>>,
    monitored_dn: Option<Box<str>>,
    parent_conn_id: Option<ConnId>,
    parent: Option<u64>,
}

/// One call at one device.
#[derive(Debug, Clone)]
pub struct Call {
    /// The stable `id`: the CallUUID, else the ConnID, of the event that created the resource.
    pub id: Arc<str>,
    /// The latest CallUUID seen ([`Call::call_uuid`]).
    call_uuid: CallUuid,
    /// The latest ConnID.
    pub conn_id: ConnId,
    /// The state.
    pub state: CallState,
    /// The other parties, in the order they were added.
    pub participants: Vec<Arc<Participant>>,
    /// The latest non-empty DNIS.
    pub dnis: Option<Box<str>>,
    /// The latest CallType given.
    pub call_type: CallType,
    /// The latest UserData, compact JSON; `None` when never given or empty.
    pub user_data: Option<Box<str>>,
    /// The recording directive in the current UserData's GSIP_RECORD, to see when it changes.
    pub gsip_record: Option<RecordDirective>,
    /// Recording state.
    pub recording: RecordingState,
    /// Whether this device is muted.
    pub muted: bool,
    /// Whether this device is itself an observer of the call.
    pub monitoring: bool,
    /// Whether the monitored agent is muted.
    pub monitored_user_muted: bool,
    /// Time of the first event with a time.
    pub started: Option<Micros>,
    /// `duration` of the current version, in whole seconds.
    pub duration_secs: u64,
    /// Derived: the capabilities of the current version.
    pub capabilities: Capabilities,
    /// The previous ConnID, observers, monitored DN, parent ConnID and parent link, when any is set.
    rare: Option<Box<Rare>>,
}

impl Call {
    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// The ConnID before the last change of ConnID.
    pub fn previous_conn_id(&self) -> Option<ConnId> {
        self.rare.as_ref()?.previous_conn_id
    }

    /// DNs of the observers (supervisors) currently on the call.
    pub fn observers(&self) -> &[Box<str>] {
        self.rare.as_ref().map_or(&[], |rare| &rare.observers)
    }

    /// The agent this observer monitors (OtherDN of the event that made the resource monitoring).
    pub fn monitored_dn(&self) -> Option<&str> {
        self.rare.as_ref()?.monitored_dn.as_deref()
    }

    /// The ConnID of the call this one consults about (TransferConnID / PreviousConnID).
    pub fn parent_conn_id(&self) -> Option<ConnId> {
        self.rare.as_ref()?.parent_conn_id
    }

    /// Derived: the call number of the live parent call this consultation is linked to.
    pub fn parent(&self) -> Option<u64> {
        self.rare.as_ref()?.parent
    }

    /// Sets the derived parent link.
    pub fn set_parent(&mut self, parent: Option<u64>) {
        if parent.is_some() || self.rare.is_some() {
            self.rare_mut().parent = parent;
        }
    }

    /// The latest CallUUID seen, if any.
    pub fn call_uuid(&self) -> Option<&str> {
        match &self.call_uuid {
            CallUuid::Unseen => None,
            CallUuid::TheId => Some(&self.id),
            CallUuid::Other(uuid) => Some(uuid),
        }
    }

    /// A new resource for `event`'s call, in `state`, before the event's other rules are applied.
    pub fn new(event: &Event<'_>, conn_id: ConnId, state: CallState, time: Option<Micros>) -> Self {
        let id: Arc<str> = match &event.call_uuid {
            Some(uuid) => (**uuid).into(),
            None => conn_id.to_string().into(),
        };
        Call {
            id,
            call_uuid: CallUuid::Unseen,
            conn_id,
            state,
            participants: Vec::new(),
            dnis: None,
            call_type: CallType::Unknown,
            user_data: None,
            gsip_record: None,
            recording: RecordingState::Stopped,
            muted: false,
            monitoring: false,
            monitored_user_muted: false,
            started: time,
            duration_secs: 0,
            capabilities: Capabilities::NONE,
            rare: None,
        }
    }

    /// Whether the call is still live (not Released).
    pub fn is_live(&self) -> bool {
        self.state != CallState::Released
    }

    /// Applies `event` (addressed to this resource at device `this_dn`) to every field it rules directly.
    /// The fields that depend on other calls (capabilities, parent link) are left to the caller.
    pub fn apply(
        &mut self,
        event: &Event<'_>,
        this_dn: &str,
        phone_book: &mut PhoneBook,
    ) -> Changes {
        let mut changes = Changes::default();
        if let Some(state) = CallState::after(event.kind) {
            set(&mut self.state, state, &mut changes, Changes::STATUS);
        }
        if event.kind == EventKind::PartyChanged
            && let Some(conn_id) = event.conn_id
            && conn_id != self.conn_id
        {
            let previous = self.conn_id;
            self.rare_mut().previous_conn_id = Some(previous);
            self.conn_id = conn_id;
            changes.insert(Changes::OTHER);
        }
        if let Some(uuid) = &event.call_uuid
            && self.call_uuid() != Some(uuid)
        {
            self.call_uuid = if *self.id == **uuid {
                CallUuid::TheId
            } else {
                CallUuid::Other((**uuid).into())
            };
            changes.insert(Changes::OTHER);
        }
        if let Some(call_type) = event.call_type {
            set(&mut self.call_type, call_type, &mut changes, Changes::OTHER);
        }
        if let Some(dnis) = &event.dnis
            && self.dnis.as_deref() != Some(dnis)
        {
            self.dnis = Some((**dnis).into());
            changes.insert(Changes::OTHER);
        }
        if let Some(parent) = event
            .transfer_conn_id
            .or(if event.kind == EventKind::PartyChanged {
                None
            } else {
                event.previous_conn_id
            })
        {
            self.rare_mut().parent_conn_id = Some(parent);
        }
        self.apply_participants(event, this_dn, phone_book, &mut changes);
        let listening_in_before = self.supervisor_listening_in();
        self.apply_observers(event);
        if self.supervisor_listening_in() != listening_in_before {
            changes.insert(Changes::OTHER);
        }
        self.apply_monitoring(event, this_dn, &mut changes);
        self.apply_user_data(event.kind, event.user_data.as_ref(), &mut changes);
        if let Some(state) = event
            .extensions
            .as_ref()
            .and_then(|ext| ext.record)
            .and_then(RecordingState::from_directive)
        {
            set(&mut self.recording, state, &mut changes, Changes::RECORDING);
        }
        changes
    }

    /// `supervisorListeningIn`: whether any observer is on the call.
    pub fn supervisor_listening_in(&self) -> bool {
        !self.observers().is_empty()
    }

    /// Participant rules 1 to 5, in order.
    fn apply_participants(
        &mut self,
        event: &Event<'_>,
        this_dn: &str,
        phone_book: &mut PhoneBook,
        changes: &mut Changes,
    ) {
        let other = event.other_dn.as_deref();
        let is_own = |number: &str| number == this_dn;
        match event.kind {
            EventKind::Ringing | EventKind::Dialing => {
                if let Some(number) = other.or(event.ani.as_deref()) {
                    self.replace_participants(number, is_own(number), phone_book, changes);
                }
            }
            EventKind::Established => {
                if let Some(number) = other
                    && !is_own(number)
                    && self.participants.len() < MAX_PARTICIPANTS
                    && !self.has_participant(number)
                {
                    self.participants.push(phone_book.participant(number));
                    changes.insert(Changes::PARTICIPANTS);
                }
            }
            EventKind::PartyChanged => {
                if let Some(number) = other {
                    self.replace_participants(number, is_own(number), phone_book, changes);
                }
            }
            EventKind::PartyAdded => {
                if let Some((number, role)) = event.third_party()
                    && role != Some(Role::Observer)
                    && self.participants.len() < MAX_PARTICIPANTS
                    && !is_own(number)
                    && !self.has_participant(number)
                {
                    self.participants.push(phone_book.participant(number));
                    changes.insert(Changes::PARTICIPANTS);
                }
            }
            EventKind::PartyDeleted => {
                if let Some((number, _)) = event.third_party()
                    && let Some(at) = self.participants.iter().position(|p| &*p.number == number)
                {
                    self.participants.remove(at);
                    changes.insert(Changes::PARTICIPANTS);
                }
            }
            _ => {}
        }
    }

    fn has_participant(&self, number: &str) -> bool {
        self.participants.iter().any(|p| &*p.number == number)
    }

    /// Participants become `[number]` (or `[]` when the number is the device's own DN).
    fn replace_participants(
        &mut self,
        number: &str,
        own: bool,
        phone_book: &mut PhoneBook,
        changes: &mut Changes,
    ) {
        let unchanged = if own {
            self.participants.is_empty()
        } else {
            self.participants.len() == 1 && &*self.participants[0].number == number
        };
        if unchanged {
            return;
        }
        self.participants.clear();
        if !own {
            self.participants.push(phone_book.participant(number));
        }
        changes.insert(Changes::PARTICIPANTS);
    }

    /// Supervisors joining (EventPartyAdded with role RoleObserver) and leaving.
    fn apply_observers(&mut self, event: &Event<'_>) {
        match (event.kind, event.third_party()) {
            (EventKind::PartyAdded, Some((dn, Some(Role::Observer))))
                if self.observers().len() < MAX_OBSERVERS
                    && !self.observers().iter().any(|o| &**o == dn) =>
            {
                self.rare_mut().observers.push(dn.into());
            }
            (EventKind::PartyDeleted, Some((dn, _))) => {
                if let Some(rare) = &mut self.rare {
                    rare.observers.retain(|o| &**o != dn);
                }
            }
            _ => {}
        }
    }

    /// `monitoring`, `mute` and `monitoredUserMuted`.
    fn apply_monitoring(&mut self, event: &Event<'_>, this_dn: &str, changes: &mut Changes) {
        if !self.monitoring && event.this_dn_role == Some(Role::Observer) {
            self.monitoring = true;
            let monitored = event.other_dn.as_deref().map(Into::into);
            if monitored.is_some() || self.rare.is_some() {
                self.rare_mut().monitored_dn = monitored;
            }
            changes.insert(Changes::OTHER);
        }
        let muted = match event.kind {
            EventKind::MuteOn => true,
            EventKind::MuteOff => false,
            _ => return,
        };
        match event.other_dn.as_deref() {
            None => set(&mut self.muted, muted, changes, Changes::OTHER),
            Some(dn) if dn == this_dn => set(&mut self.muted, muted, changes, Changes::OTHER),
            Some(dn) if self.monitoring && self.monitored_dn() == Some(dn) => set(
                &mut self.monitored_user_muted,
                muted,
                changes,
                Changes::MONITORED_MUTED,
            ),
            Some(_) => {}
        }
    }

    /// `userData` and recording through GSIP_RECORD. EventUserEvent's UserData is not the call's.
    fn apply_user_data(
        &mut self,
        kind: EventKind,
        user_data: Option<&KvList>,
        changes: &mut Changes,
    ) {
        if kind == EventKind::UserEvent {
            return;
        }
        let Some(kv) = user_data else { return };
        let new = (!kv.is_empty()).then_some(&*kv.json);
        // Copied only when it changed: most events repeat the call's attached data.
        if self.user_data.as_deref() != new {
            self.user_data = new.map(Box::from);
            changes.insert(Changes::USER_DATA);
        }
        if kv.record != self.gsip_record {
            self.gsip_record = kv.record;
            if let Some(state) = kv.record.and_then(RecordingState::from_directive) {
                set(&mut self.recording, state, changes, Changes::RECORDING);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_without_rare_members_stays_small() {
        // 100,000 live calls each hold one of these in the reducer's slab: the rarely set members live
        // in a box of their own (232 bytes before, on x86_64).
        assert!(
            std::mem::size_of::<Call>() <= 152,
            "{} bytes",
            std::mem::size_of::<Call>()
        );
    }
    use crate::event::{Decoded, decode_line};

    /// Applies `line` (an event at 7001) to `call`.
    fn apply(call: &mut Call, book: &mut PhoneBook, line: &str) -> Changes {
        let Ok(Decoded::Event(event)) = decode_line(line.as_bytes()) else {
            panic!("a valid event: {line}");
        };
        call.apply(&event, "7001", book)
    }

    fn established() -> (Call, PhoneBook) {
        let line = r#"{"event":"EventEstablished","ConnID":"1","ThisDN":"7001"}"#;
        let Ok(Decoded::Event(event)) = decode_line(line.as_bytes()) else {
            panic!("a valid event");
        };
        let conn_id = event.conn_id.unwrap_or(ConnId(1));
        let call = Call::new(&event, conn_id, CallState::Established, None);
        (call, PhoneBook::default())
    }

    fn party(kind: &str, dn: &str, role: &str) -> String {
        format!(
            r#"{{"event":"{kind}","ConnID":"1","ThisDN":"7001","ThirdPartyDN":"{dn}","ThirdPartyDNRole":"{role}"}}"#
        )
    }

    #[test]
    fn a_call_shows_at_most_64_parties_from_either_rule() {
        let (mut call, mut book) = established();
        for n in 0..70 {
            let added = party("EventPartyAdded", &format!("+1415555{n:04}"), "RoleAddedBy");
            apply(&mut call, &mut book, &added);
        }
        assert_eq!(call.participants.len(), MAX_PARTICIPANTS);
        assert_eq!(&*call.participants[63].number, "+14155550063");
        let joined =
            r#"{"event":"EventEstablished","ConnID":"1","ThisDN":"7001","OtherDN":"+14155559999"}"#;
        let changes = apply(&mut call, &mut book, joined);
        assert_eq!(call.participants.len(), MAX_PARTICIPANTS);
        assert!(!changes.contains(Changes::PARTICIPANTS));
        // One leaves: room for the next.
        apply(
            &mut call,
            &mut book,
            &party("EventPartyDeleted", "+14155550000", "RoleDeletedBy"),
        );
        apply(&mut call, &mut book, joined);
        assert_eq!(&*call.participants[63].number, "+14155559999");
    }

    #[test]
    fn each_observer_is_tracked_until_it_leaves() {
        let (mut call, mut book) = established();
        apply(
            &mut call,
            &mut book,
            &party("EventPartyAdded", "7101", "RoleObserver"),
        );
        apply(
            &mut call,
            &mut book,
            &party("EventPartyAdded", "7101", "RoleObserver"),
        );
        apply(
            &mut call,
            &mut book,
            &party("EventPartyAdded", "7102", "RoleObserver"),
        );
        assert!(
            call.participants.is_empty(),
            "observers are not participants"
        );
        apply(
            &mut call,
            &mut book,
            &party("EventPartyDeleted", "7101", "RoleDeletedBy"),
        );
        assert!(call.supervisor_listening_in(), "7102 is still on the call");
        apply(
            &mut call,
            &mut book,
            &party("EventPartyDeleted", "7102", "RoleDeletedBy"),
        );
        assert!(!call.supervisor_listening_in());
    }

    #[test]
    fn observers_past_the_bound_are_not_tracked() {
        let (mut call, mut book) = established();
        // The same observer added again takes no second place.
        for _ in 0..3 {
            apply(
                &mut call,
                &mut book,
                &party("EventPartyAdded", "7100", "RoleObserver"),
            );
        }
        for n in 1..=MAX_OBSERVERS {
            let added = party("EventPartyAdded", &format!("71{n:02}"), "RoleObserver");
            apply(&mut call, &mut book, &added);
        }
        assert_eq!(call.observers().len(), MAX_OBSERVERS);
        // 7100 to 7115 are tracked, 7116 is not: once they leave, nobody listens in as far as we know.
        for n in 0..MAX_OBSERVERS {
            let deleted = party("EventPartyDeleted", &format!("71{n:02}"), "RoleDeletedBy");
            apply(&mut call, &mut book, &deleted);
        }
        assert!(!call.supervisor_listening_in());
    }
}
