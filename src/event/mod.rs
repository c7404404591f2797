//! T-Server events: the vocabulary of events.md and the decoder that turns one JSON line into an [`Event`].
//!
//! Decoding borrows from the line wherever it can (no allocation per string attribute) because it runs once
//! per event on the hot path of both `fold` and `serve`.

mod decode;
pub(crate) mod kv;
mod names;

pub use decode::{DecodeError, Decoded, decode_line};
pub use kv::{KvList, RecordDirective};
pub use names::{AgentWorkMode, CallType, EventKind, MonitorScope, Role};

use std::borrow::Cow;
use std::fmt;

/// A T-Server connection id, normalised: at most 16 hex digits held as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    /// Writes the normalised form: 16 lower-case hex digits, zero-padded.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl ConnId {
    /// Parses 1 to 16 hex digits (either case). Returns `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        if text.is_empty() || text.len() > 16 {
            return None;
        }
        let mut value = 0u64;
        for byte in text.bytes() {
            let digit = match byte {
                b'0'..=b'9' => byte - b'0',
                b'a'..=b'f' => byte - b'a' + 10,
                b'A'..=b'F' => byte - b'A' + 10,
                _ => return None,
            };
            value = value << 4 | u64::from(digit);
        }
        Some(ConnId(value))
    }
}

/// An event time in microseconds since the Unix epoch.
pub type Micros = i64;

/// One decoded call-related event (any event of the events.md table).
///
/// Strings borrow from the input line unless they contained JSON escapes.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    /// Which TLib event this is.
    pub kind: EventKind,
    /// The T-Server that sent it; `""` is the default T-Server.
    pub server: Cow<'a, str>,
    /// The call's ConnID (absent only on link events and some user events).
    pub conn_id: Option<ConnId>,
    /// `PreviousConnID`.
    pub previous_conn_id: Option<ConnId>,
    /// `TransferConnID`.
    pub transfer_conn_id: Option<ConnId>,
    /// `CallUUID`, when present and not empty.
    pub call_uuid: Option<Cow<'a, str>>,
    /// `CallType`.
    pub call_type: Option<CallType>,
    /// `CallState` reason code (informational only).
    pub call_state: Option<u32>,
    /// The DN this copy of the event is for (absent only on link and user events).
    pub this_dn: Option<Cow<'a, str>>,
    /// `ThisQueue`.
    pub this_queue: Option<Cow<'a, str>>,
    /// `ThisDNRole`.
    pub this_dn_role: Option<Role>,
    /// `OtherDN`, when present and not empty.
    pub other_dn: Option<Cow<'a, str>>,
    /// `OtherDNRole`.
    pub other_dn_role: Option<Role>,
    /// `ThirdPartyDN`, when present and not empty.
    pub third_party_dn: Option<Cow<'a, str>>,
    /// `ThirdPartyDNRole`.
    pub third_party_dn_role: Option<Role>,
    /// `ANI`, when present and not empty.
    pub ani: Option<Cow<'a, str>>,
    /// `DNIS`, when present and not empty.
    pub dnis: Option<Cow<'a, str>>,
    /// `UserData`: the call's whole attached data at this event.
    pub user_data: Option<KvList>,
    /// `Extensions` of this event.
    pub extensions: Option<KvList>,
    /// `AgentID` (agent-state events), when present and not empty.
    pub agent_id: Option<Cow<'a, str>>,
    /// `AgentWorkMode`.
    pub work_mode: Option<AgentWorkMode>,
    /// `MonitorNextCallType`.
    pub monitor_scope: Option<MonitorScope>,
    /// The `ReasonCode` of `Reasons` (else of `Extensions`); read on EventAgentNotReady only.
    pub reason: Option<Box<str>>,
    /// `EventSequenceNumber`.
    pub sequence: Option<u64>,
    /// The event time (`TimeinSecs`/`TimeinuSecs`, else `Time`), if given.
    pub time: Option<Micros>,
}

impl<'a> Event<'a> {
    /// An event with only the attributes that identify its call: what the gateway itself says about a call
    /// (a stale call released by `serve`), never read from a T-Server.
    pub fn bare(kind: EventKind, server: &'a str, conn_id: ConnId, this_dn: &'a str) -> Self {
        Event {
            kind,
            server: Cow::Borrowed(server),
            conn_id: Some(conn_id),
            previous_conn_id: None,
            transfer_conn_id: None,
            call_uuid: None,
            call_type: None,
            call_state: None,
            this_dn: Some(Cow::Borrowed(this_dn)),
            this_queue: None,
            this_dn_role: None,
            other_dn: None,
            other_dn_role: None,
            third_party_dn: None,
            third_party_dn_role: None,
            ani: None,
            dnis: None,
            user_data: None,
            extensions: None,
            agent_id: None,
            work_mode: None,
            monitor_scope: None,
            reason: None,
            sequence: None,
            time: None,
        }
    }
}

impl Event<'_> {
    /// The same event owning its strings, to send it to another thread.
    pub fn into_owned(self) -> Event<'static> {
        fn own(text: Option<Cow<'_, str>>) -> Option<Cow<'static, str>> {
            text.map(|t| Cow::Owned(t.into_owned()))
        }
        Event {
            kind: self.kind,
            server: Cow::Owned(self.server.into_owned()),
            conn_id: self.conn_id,
            previous_conn_id: self.previous_conn_id,
            transfer_conn_id: self.transfer_conn_id,
            call_uuid: own(self.call_uuid),
            call_type: self.call_type,
            call_state: self.call_state,
            this_dn: own(self.this_dn),
            this_queue: own(self.this_queue),
            this_dn_role: self.this_dn_role,
            other_dn: own(self.other_dn),
            other_dn_role: self.other_dn_role,
            third_party_dn: own(self.third_party_dn),
            third_party_dn_role: self.third_party_dn_role,
            ani: own(self.ani),
            dnis: own(self.dnis),
            user_data: self.user_data,
            extensions: self.extensions,
            agent_id: own(self.agent_id),
            work_mode: self.work_mode,
            monitor_scope: self.monitor_scope,
            reason: self.reason,
            sequence: self.sequence,
            time: self.time,
        }
    }

    /// The `ThisDN` of a call or device event; those always have one after decoding.
    pub fn this_dn(&self) -> &str {
        self.this_dn.as_deref().unwrap_or("")
    }

    /// The party an EventPartyAdded/EventPartyDeleted names: ThirdPartyDN, else OtherDN, with its role.
    pub fn third_party(&self) -> Option<(&str, Option<Role>)> {
        match &self.third_party_dn {
            Some(dn) => Some((dn, self.third_party_dn_role)),
            None => self.other_dn.as_deref().map(|dn| (dn, self.other_dn_role)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owned_event_keeps_every_attribute() {
        let line = br#"{"event":"EventPartyAdded","Server":"SIP_A","ConnID":"1","PreviousConnID":"2","TransferConnID":"3","CallUUID":"U","CallType":4,"CallState":1,"ThisDN":"7001","ThisQueue":"8001","ThisDNRole":"RoleObserver","OtherDN":"7002","OtherDNRole":1,"ThirdPartyDN":"7101","ThirdPartyDNRole":10,"ANI":"+14155550100","DNIS":"8001","UserData":{"a":"b"},"Extensions":{"record":"on"},"EventSequenceNumber":5,"TimeinSecs":7}"#;
        let Ok(crate::event::Decoded::Event(event)) = crate::event::decode_line(line) else {
            panic!("a valid event");
        };
        // Every string attribute is present, so a conversion that drops or empties one differs.
        assert_eq!(event.third_party_dn.as_deref(), Some("7101"));
        assert_eq!(event.clone().into_owned(), event);
    }

    #[test]
    fn conn_id_normalises_and_bounds() {
        assert_eq!(
            ConnId::parse("1A2b").map(|c| c.to_string()),
            Some("0000000000001a2b".into())
        );
        assert_eq!(
            ConnId::parse("006F02A7B8C9D001").map(|c| c.to_string()),
            Some("006f02a7b8c9d001".into())
        );
        assert_eq!(ConnId::parse(""), None);
        assert_eq!(ConnId::parse("00000000000000001"), None);
        assert_eq!(ConnId::parse("12g4"), None);
        assert_eq!(ConnId::parse("+12"), None);
    }
}
