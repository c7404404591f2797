//! TLib's names and numbers for events, call types and party roles (events.md tables).

/// The events callgate understands (the events.md table), with their TLib message ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EventKind {
    /// 57: the call waits in a queue or routing point.
    Queued = 57,
    /// 58: the call left the queue or routing point.
    Diverted = 58,
    /// 59: the caller hung up before anyone answered.
    Abandoned = 59,
    /// 60: the call is alerting at ThisDN.
    Ringing = 60,
    /// 61: ThisDN is placing the call.
    Dialing = 61,
    /// 62: the outbound call reached the public network.
    NetworkReached = 62,
    /// 63: the called party is busy.
    DestinationBusy = 63,
    /// 64: ThisDN is connected.
    Established = 64,
    /// 65: ThisDN left the call.
    Released = 65,
    /// 66: ThisDN put the call on hold.
    Held = 66,
    /// 67: ThisDN took the call back from hold.
    Retrieved = 67,
    /// 68: a transfer or conference completed; the call may have a new ConnID.
    PartyChanged = 68,
    /// 69: a party joined the call.
    PartyAdded = 69,
    /// 70: a party left the call.
    PartyDeleted = 70,
    /// 73: an agent logged in at ThisDN.
    AgentLogin = 73,
    /// 74: the agent at ThisDN logged out.
    AgentLogout = 74,
    /// 75: the agent at ThisDN is ready.
    AgentReady = 75,
    /// 76: the agent at ThisDN is not ready.
    AgentNotReady = 76,
    /// 77: do-not-disturb set at ThisDN.
    DndOn = 77,
    /// 78: do-not-disturb cleared at ThisDN.
    DndOff = 78,
    /// 85: the attached data changed.
    AttachedDataChanged = 85,
    /// 88: ThisDN forwards its calls to OtherDN.
    ForwardSet = 88,
    /// 89: ThisDN's forwarding was cancelled.
    ForwardCancel = 89,
    /// 94: T-Server lost its link to the switch.
    LinkDisconnected = 94,
    /// 95: T-Server's link to the switch is back.
    LinkConnected = 95,
    /// 96: an application's event; changes no resource.
    UserEvent = 96,
    /// 141: the supervisor at ThisDN starts monitoring OtherDN.
    MonitoringNextCall = 141,
    /// 142: the supervisor at ThisDN stops monitoring OtherDN.
    MonitoringCancelled = 142,
    /// 145: a party was muted.
    MuteOn = 145,
    /// 146: a party was unmuted.
    MuteOff = 146,
    /// 147: ThisDN stopped working.
    DnOutOfService = 147,
    /// 148: ThisDN works again.
    DnBackInService = 148,
    /// 150: switch-specific information (recording control).
    PrivateInfo = 150,
    /// 161: call data changed; treated as EventAttachedDataChanged.
    CallDataChanged = 161,
}

const EVENTS: [(EventKind, &str); 34] = [
    (EventKind::Queued, "EventQueued"),
    (EventKind::Diverted, "EventDiverted"),
    (EventKind::Abandoned, "EventAbandoned"),
    (EventKind::Ringing, "EventRinging"),
    (EventKind::Dialing, "EventDialing"),
    (EventKind::NetworkReached, "EventNetworkReached"),
    (EventKind::DestinationBusy, "EventDestinationBusy"),
    (EventKind::Established, "EventEstablished"),
    (EventKind::Released, "EventReleased"),
    (EventKind::Held, "EventHeld"),
    (EventKind::Retrieved, "EventRetrieved"),
    (EventKind::PartyChanged, "EventPartyChanged"),
    (EventKind::PartyAdded, "EventPartyAdded"),
    (EventKind::PartyDeleted, "EventPartyDeleted"),
    (EventKind::AgentLogin, "EventAgentLogin"),
    (EventKind::AgentLogout, "EventAgentLogout"),
    (EventKind::AgentReady, "EventAgentReady"),
    (EventKind::AgentNotReady, "EventAgentNotReady"),
    (EventKind::DndOn, "EventDNDOn"),
    (EventKind::DndOff, "EventDNDOff"),
    (EventKind::AttachedDataChanged, "EventAttachedDataChanged"),
    (EventKind::ForwardSet, "EventForwardSet"),
    (EventKind::ForwardCancel, "EventForwardCancel"),
    (EventKind::LinkDisconnected, "EventLinkDisconnected"),
    (EventKind::LinkConnected, "EventLinkConnected"),
    (EventKind::UserEvent, "EventUserEvent"),
    (EventKind::MonitoringNextCall, "EventMonitoringNextCall"),
    (EventKind::MonitoringCancelled, "EventMonitoringCancelled"),
    (EventKind::MuteOn, "EventMuteOn"),
    (EventKind::MuteOff, "EventMuteOff"),
    (EventKind::DnOutOfService, "EventDNOutOfService"),
    (EventKind::DnBackInService, "EventDNBackInService"),
    (EventKind::PrivateInfo, "EventPrivateInfo"),
    (EventKind::CallDataChanged, "EventCallDataChanged"),
];

impl EventKind {
    /// Looks up an event by its TLib name (`EventRinging`); `None` for events outside the table.
    pub fn from_name(name: &str) -> Option<Self> {
        // Every line names its event: a hash lookup instead of comparing against the table in turn.
        static BY_NAME: std::sync::LazyLock<
            hashbrown::HashMap<&'static str, EventKind, foldhash::fast::FixedState>,
        > = std::sync::LazyLock::new(|| EVENTS.iter().map(|&(kind, name)| (name, kind)).collect());
        BY_NAME.get(name).copied()
    }

    /// Looks up an event by its TLib message id (60 = EventRinging).
    pub fn from_id(id: u64) -> Option<Self> {
        EVENTS
            .iter()
            .find(|(kind, _)| *kind as u64 == id)
            .map(|(kind, _)| *kind)
    }

    /// The TLib name of the event.
    pub fn name(self) -> &'static str {
        EVENTS
            .iter()
            .find(|(kind, _)| *kind == self)
            .map_or("", |(_, name)| name)
    }

    /// Whether the event concerns a call and so needs ConnID and ThisDN (57–70, 85, 145, 146, 150, 161).
    pub fn is_call_event(self) -> bool {
        !self.is_device_event()
            && !matches!(
                self,
                EventKind::LinkDisconnected | EventKind::LinkConnected | EventKind::UserEvent
            )
    }

    /// Whether the event changes a device resource (gws.md) and so needs ThisDN but no ConnID (73–78, 88,
    /// 89, 141, 142, 147, 148).
    pub fn is_device_event(self) -> bool {
        matches!(
            self,
            EventKind::AgentLogin
                | EventKind::AgentLogout
                | EventKind::AgentReady
                | EventKind::AgentNotReady
                | EventKind::DndOn
                | EventKind::DndOff
                | EventKind::ForwardSet
                | EventKind::ForwardCancel
                | EventKind::MonitoringNextCall
                | EventKind::MonitoringCancelled
                | EventKind::DnOutOfService
                | EventKind::DnBackInService
        )
    }

    /// All events of the table, for tests and generators.
    pub fn all() -> impl Iterator<Item = EventKind> {
        EVENTS.iter().map(|(kind, _)| *kind)
    }
}

/// The type of a call (TLib `CallType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CallType {
    /// 0, or never given.
    #[default]
    Unknown,
    /// 1: between two extensions of the site.
    Internal,
    /// 2: from the public network.
    Inbound,
    /// 3: to the public network.
    Outbound,
    /// 4: a consultation call about another call.
    Consult,
}

impl CallType {
    /// The name as call resources show it.
    pub fn as_str(self) -> &'static str {
        match self {
            CallType::Unknown => "Unknown",
            CallType::Internal => "Internal",
            CallType::Inbound => "Inbound",
            CallType::Outbound => "Outbound",
            CallType::Consult => "Consult",
        }
    }

    /// From TLib's number (0–4).
    pub fn from_number(n: u64) -> Option<Self> {
        Some(match n {
            0 => CallType::Unknown,
            1 => CallType::Internal,
            2 => CallType::Inbound,
            3 => CallType::Outbound,
            4 => CallType::Consult,
            _ => return None,
        })
    }

    /// From a name, with or without the `CallType` prefix.
    pub fn from_name(name: &str) -> Option<Self> {
        let bare = name.strip_prefix("CallType").unwrap_or(name);
        [
            CallType::Unknown,
            CallType::Internal,
            CallType::Inbound,
            CallType::Outbound,
            CallType::Consult,
        ]
        .into_iter()
        .find(|t| t.as_str() == bare)
    }
}

/// A party's role in an event (TLib `ThisDNRole`, `OtherDNRole`, `ThirdPartyDNRole`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// 0
    Unknown,
    /// 1
    Origination,
    /// 2
    Destination,
    /// 3
    ConferenceMember,
    /// 4
    NewParty,
    /// 5
    AddedBy,
    /// 6
    DeletedBy,
    /// 7
    TransferredBy,
    /// 8
    DeletedParty,
    /// 9
    ConferencedBy,
    /// 10: a supervisor who monitors the call.
    Observer,
}

const ROLES: [(Role, &str); 11] = [
    (Role::Unknown, "Unknown"),
    (Role::Origination, "Origination"),
    (Role::Destination, "Destination"),
    (Role::ConferenceMember, "ConferenceMember"),
    (Role::NewParty, "NewParty"),
    (Role::AddedBy, "AddedBy"),
    (Role::DeletedBy, "DeletedBy"),
    (Role::TransferredBy, "TransferredBy"),
    (Role::DeletedParty, "DeletedParty"),
    (Role::ConferencedBy, "ConferencedBy"),
    (Role::Observer, "Observer"),
];

impl Role {
    /// From TLib's number (0–10).
    pub fn from_number(n: u64) -> Option<Self> {
        ROLES.get(usize::try_from(n).ok()?).map(|(role, _)| *role)
    }

    /// From a name, with or without the `Role` prefix (`RoleObserver`, `Observer`).
    pub fn from_name(name: &str) -> Option<Self> {
        let bare = name.strip_prefix("Role").unwrap_or(name);
        ROLES
            .iter()
            .find(|(_, n)| *n == bare)
            .map(|(role, _)| *role)
    }
}

/// What an agent is doing (TLib `AgentWorkMode`, events.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentWorkMode {
    /// 0
    Unknown,
    /// 1: ready, answering calls by hand.
    ManualIn,
    /// 2: ready, calls delivered automatically.
    AutoIn,
    /// 3: finishing the last call's work.
    AfterCallWork,
    /// 4: other work.
    AuxWork,
    /// 5
    NoCallDisconnect,
    /// 6: away from the desk.
    WalkAway,
    /// 7
    ReturnBack,
}

const WORK_MODES: [(AgentWorkMode, &str); 8] = [
    (AgentWorkMode::Unknown, "Unknown"),
    (AgentWorkMode::ManualIn, "ManualIn"),
    (AgentWorkMode::AutoIn, "AutoIn"),
    (AgentWorkMode::AfterCallWork, "AfterCallWork"),
    (AgentWorkMode::AuxWork, "AuxWork"),
    (AgentWorkMode::NoCallDisconnect, "NoCallDisconnect"),
    (AgentWorkMode::WalkAway, "WalkAway"),
    (AgentWorkMode::ReturnBack, "ReturnBack"),
];

impl AgentWorkMode {
    /// From TLib's number (0–7).
    pub fn from_number(n: u64) -> Option<Self> {
        WORK_MODES
            .get(usize::try_from(n).ok()?)
            .map(|(mode, _)| *mode)
    }

    /// From a name, bare (`AfterCallWork`) or as TLib spells it (`AgentAfterCallWork`,
    /// `AgentWorkModeUnknown`).
    pub fn from_name(name: &str) -> Option<Self> {
        let bare = name
            .strip_prefix("AgentWorkMode")
            .or_else(|| name.strip_prefix("Agent"))
            .unwrap_or(name);
        WORK_MODES
            .iter()
            .find(|(_, n)| *n == bare)
            .map(|(mode, _)| *mode)
    }

    /// The bare name, as device resources show it (`AfterCallWork`).
    pub fn as_str(self) -> &'static str {
        WORK_MODES
            .iter()
            .find(|(mode, _)| *mode == self)
            .map_or("Unknown", |(_, name)| name)
    }
}

/// Which calls a supervisor monitors (TLib `MonitorNextCallType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MonitorScope {
    /// 0 `MonitorOneCall`: the agent's next call only.
    OneCall,
    /// 1 `MonitorAllCalls`: every call until cancelled.
    AllCalls,
}

impl MonitorScope {
    /// From TLib's number (0–1).
    pub fn from_number(n: u64) -> Option<Self> {
        match n {
            0 => Some(MonitorScope::OneCall),
            1 => Some(MonitorScope::AllCalls),
            _ => None,
        }
    }

    /// From TLib's name (`MonitorOneCall`, `MonitorAllCalls`), with or without the `Monitor` prefix.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.strip_prefix("Monitor").unwrap_or(name) {
            "OneCall" => Some(MonitorScope::OneCall),
            "AllCalls" => Some(MonitorScope::AllCalls),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_round_trips_by_name_and_id() {
        for kind in EventKind::all() {
            assert_eq!(EventKind::from_name(kind.name()), Some(kind));
            assert_eq!(EventKind::from_id(kind as u64), Some(kind));
        }
        assert_eq!(EventKind::from_id(60), Some(EventKind::Ringing));
        assert_eq!(EventKind::from_name("EventRouteRequest"), None);
        assert_eq!(EventKind::from_id(81), None);
    }

    #[test]
    fn all_lists_every_event_of_the_table_once() {
        // The ids of events.md's table that this build handles, written out by hand.
        let expected = [
            57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 73, 74, 75, 76, 77, 78, 85, 88,
            89, 94, 95, 96, 141, 142, 145, 146, 147, 148, 150, 161,
        ];
        let ids: Vec<u64> = EventKind::all().map(|kind| kind as u64).collect();
        assert_eq!(ids, expected);
    }

    #[test]
    fn call_types_and_roles_accept_prefixes_and_numbers() {
        assert_eq!(
            CallType::from_name("CallTypeInbound"),
            Some(CallType::Inbound)
        );
        assert_eq!(CallType::from_name("Consult"), Some(CallType::Consult));
        assert_eq!(CallType::from_name("inbound"), None);
        assert_eq!(CallType::from_number(4), Some(CallType::Consult));
        assert_eq!(CallType::from_number(9), None);
        assert_eq!(Role::from_name("RoleObserver"), Some(Role::Observer));
        assert_eq!(Role::from_name("Destination"), Some(Role::Destination));
        assert_eq!(Role::from_number(10), Some(Role::Observer));
        assert_eq!(Role::from_number(11), None);
    }

    #[test]
    fn work_modes_and_monitor_scopes_accept_tlib_spellings() {
        assert_eq!(
            AgentWorkMode::from_name("AgentAfterCallWork"),
            Some(AgentWorkMode::AfterCallWork)
        );
        assert_eq!(
            AgentWorkMode::from_name("AgentWorkModeUnknown"),
            Some(AgentWorkMode::Unknown)
        );
        assert_eq!(
            AgentWorkMode::from_name("AuxWork"),
            Some(AgentWorkMode::AuxWork)
        );
        assert_eq!(AgentWorkMode::from_number(6), Some(AgentWorkMode::WalkAway));
        assert_eq!(AgentWorkMode::from_number(8), None);
        assert_eq!(AgentWorkMode::from_name("Lunch"), None);
        assert_eq!(AgentWorkMode::ReturnBack.as_str(), "ReturnBack");
        assert_eq!(
            MonitorScope::from_name("MonitorAllCalls"),
            Some(MonitorScope::AllCalls)
        );
        assert_eq!(MonitorScope::from_number(0), Some(MonitorScope::OneCall));
        assert_eq!(MonitorScope::from_number(2), None);
    }

    #[test]
    fn device_events_are_not_call_events() {
        for kind in EventKind::all() {
            assert!(
                !(kind.is_call_event() && kind.is_device_event()),
                "{kind:?}"
            );
        }
        assert!(EventKind::AgentNotReady.is_device_event());
        assert!(!EventKind::AgentNotReady.is_call_event());
        assert!(EventKind::Ringing.is_call_event());
        assert!(!EventKind::UserEvent.is_device_event());
    }
}
