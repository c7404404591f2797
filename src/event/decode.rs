//! One JSON line to one [`Event`], with the checks of events.md ("Bad input").
//!
//! Attributes are first captured loosely (any JSON scalar, or the raw text of a KV list) so that an event
//! outside the table is ignored "whatever it carries"; only events of the table are then checked strictly.

use super::kv::{ExtensionsAttribute, Key, KvList, ReasonsAttribute, UserDataAttribute};
use super::names::{AgentWorkMode, CallType, EventKind, MonitorScope, Role};
use super::{ConnId, Event, Micros};
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

mod scan;

/// Why a line was rejected. The text names the attribute and the problem; callers add the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The line is not UTF-8.
    #[error("not valid UTF-8")]
    NotUtf8,
    /// The line is not a JSON object.
    #[error("not a JSON object")]
    NotObject,
    /// The JSON is malformed or an attribute could not be read.
    #[error("not valid JSON: {0}")]
    Json(String),
    /// A key appears twice (for example `ConnID` and `AttributeConnID`).
    #[error("{0}")]
    Duplicate(String),
    /// No `event` member.
    #[error("missing \"event\"")]
    MissingEvent,
    /// A call event without a required attribute.
    #[error("{event}: missing {attribute}")]
    MissingAttribute {
        /// The event's name.
        event: &'static str,
        /// The missing attribute.
        attribute: &'static str,
    },
    /// An attribute of the wrong JSON type.
    #[error("{attribute}: expected {expected}, found {found}")]
    WrongType {
        /// The attribute.
        attribute: &'static str,
        /// What events.md allows.
        expected: &'static str,
        /// What the line has.
        found: &'static str,
    },
    /// An attribute of the right type with a value outside its range.
    #[error("{attribute}: {value} is not {expected}")]
    BadValue {
        /// The attribute.
        attribute: &'static str,
        /// The value as found (JSON-quoted when a string).
        value: String,
        /// What events.md allows.
        expected: &'static str,
    },
    /// A bad UserData, Extensions or Reasons list (the text names the key path).
    #[error("{0}")]
    KvList(String),
    /// The line is longer than the 1 MiB bound.
    #[error("line longer than 1 MiB")]
    TooLong,
}

/// The outcome of decoding one line that was not rejected.
// Boxing the event would cost an allocation per line on the hot path; the enum lives on the stack only.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded<'a> {
    /// An event of the events.md table.
    Event(Event<'a>),
    /// An event outside the table (for example EventRouteRequest): counted and ignored.
    Unknown {
        /// Its name, or its numeric id as text.
        name: Cow<'a, str>,
    },
}

/// Decodes one line (without its line end).
pub fn decode_line(line: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    if line.trim_ascii_start().first() != Some(&b'{') {
        return Err(DecodeError::NotObject);
    }
    // One UTF-8 check of the whole line is cheaper than serde_json's check of every string in it.
    let text = std::str::from_utf8(line).map_err(|_| DecodeError::NotUtf8)?;
    let mut raw = RawEvent::default();
    match scan::scan(text, &mut raw) {
        Some(()) => raw.into_decoded(),
        None => decode_with_serde(text),
    }
}

/// The line read by serde_json: every line the scanner leaves, and every rejection.
fn decode_with_serde(text: &str) -> Result<Decoded<'_>, DecodeError> {
    let raw: RawEvent<'_> = serde_json::from_str(text).map_err(|err| {
        let message = err.to_string();
        if message.starts_with("duplicate field") {
            DecodeError::Duplicate(message)
        } else {
            DecodeError::Json(message)
        }
    })?;
    raw.into_decoded()
}

/// The line as captured before checking: every attribute loosely typed. JSON `null` counts as absent.
#[derive(Default)]
struct RawEvent<'a> {
    event: Option<Scalar<'a>>,
    server: Option<Scalar<'a>>,
    conn_id: Option<Scalar<'a>>,
    previous_conn_id: Option<Scalar<'a>>,
    transfer_conn_id: Option<Scalar<'a>>,
    call_uuid: Option<Scalar<'a>>,
    call_type: Option<Scalar<'a>>,
    call_state: Option<Scalar<'a>>,
    this_dn: Option<Scalar<'a>>,
    this_queue: Option<Scalar<'a>>,
    this_dn_role: Option<Scalar<'a>>,
    other_dn: Option<Scalar<'a>>,
    other_dn_role: Option<Scalar<'a>>,
    third_party_dn: Option<Scalar<'a>>,
    third_party_dn_role: Option<Scalar<'a>>,
    ani: Option<Scalar<'a>>,
    dnis: Option<Scalar<'a>>,
    user_data: Option<UserDataAttribute>,
    extensions: Option<ExtensionsAttribute>,
    reasons: Option<ReasonsAttribute>,
    agent_id: Option<Scalar<'a>>,
    work_mode: Option<Scalar<'a>>,
    monitor_scope: Option<Scalar<'a>>,
    sequence: Option<Scalar<'a>>,
    time_secs: Option<Scalar<'a>>,
    time_usecs: Option<Scalar<'a>>,
    time_text: Option<Scalar<'a>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for RawEvent<'a> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_map(RawEventVisitor(std::marker::PhantomData))
    }
}

struct RawEventVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for RawEventVisitor<'a> {
    type Value = RawEvent<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a T-Server event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut raw = RawEvent::default();
        // Hand-written rather than derived: keys are matched once with the `Attribute` prefix removed
        // (instead of against 48 names), most frequent first, and nothing is buffered.
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let name = key.strip_prefix("Attribute").unwrap_or(&key);
            // Scalars are read directly (null becomes absent here) rather than through serde's `Option`,
            // which adds a pass over the value's first byte for every attribute.
            macro_rules! scalar {
                ($field:ident) => {{
                    let value = match map.next_value::<Scalar<'a>>()? {
                        Scalar::Null => None,
                        other => Some(other),
                    };
                    if raw.$field.is_some() {
                        return Err(serde::de::Error::custom(format_args!(
                            "duplicate field `{name}`"
                        )));
                    }
                    raw.$field = value;
                }};
            }
            macro_rules! take {
                ($field:ident) => {{
                    let value = map.next_value()?;
                    if raw.$field.is_some() {
                        return Err(serde::de::Error::custom(format_args!(
                            "duplicate field `{name}`"
                        )));
                    }
                    raw.$field = value;
                }};
            }
            match name {
                "event" => scalar!(event),
                "EventSequenceNumber" => scalar!(sequence),
                "TimeinSecs" => scalar!(time_secs),
                "TimeinuSecs" => scalar!(time_usecs),
                "ConnID" => scalar!(conn_id),
                "CallUUID" => scalar!(call_uuid),
                "CallType" => scalar!(call_type),
                "ThisDN" => scalar!(this_dn),
                "OtherDN" => scalar!(other_dn),
                "UserData" => take!(user_data),
                "ThisDNRole" => scalar!(this_dn_role),
                "OtherDNRole" => scalar!(other_dn_role),
                "ANI" => scalar!(ani),
                "DNIS" => scalar!(dnis),
                "ThisQueue" => scalar!(this_queue),
                "ThirdPartyDN" => scalar!(third_party_dn),
                "ThirdPartyDNRole" => scalar!(third_party_dn_role),
                "PreviousConnID" => scalar!(previous_conn_id),
                "TransferConnID" => scalar!(transfer_conn_id),
                "CallState" => scalar!(call_state),
                "Extensions" => take!(extensions),
                "Reasons" => take!(reasons),
                "AgentID" => scalar!(agent_id),
                "AgentWorkMode" => scalar!(work_mode),
                "MonitorNextCallType" => scalar!(monitor_scope),
                "Server" => scalar!(server),
                "Time" => scalar!(time_text),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(raw)
    }
}

impl<'a> RawEvent<'a> {
    fn into_decoded(self) -> Result<Decoded<'a>, DecodeError> {
        let kind = match self.event {
            None => return Err(DecodeError::MissingEvent),
            Some(Scalar::Str(name)) => match EventKind::from_name(&name) {
                Some(kind) => kind,
                None => return Ok(Decoded::Unknown { name }),
            },
            Some(Scalar::UInt(id)) => match EventKind::from_id(id) {
                Some(kind) => kind,
                None => {
                    return Ok(Decoded::Unknown {
                        name: Cow::Owned(id.to_string()),
                    });
                }
            },
            Some(other) => return Err(wrong_type("event", "a name or a message id", &other)),
        };

        let conn_id = conn_id("ConnID", self.conn_id)?;
        let this_dn = string("ThisDN", self.this_dn)?;
        if kind.is_call_event() {
            if conn_id.is_none() {
                return Err(missing(kind, "ConnID"));
            }
            if this_dn.is_none() {
                return Err(missing(kind, "ThisDN"));
            }
        }
        if kind.is_device_event() && this_dn.is_none() {
            return Err(missing(kind, "ThisDN"));
        }
        let time_secs = integer("TimeinSecs", self.time_secs)?;
        let time_usecs = match unsigned("TimeinuSecs", self.time_usecs)? {
            Some(us) if us >= 1_000_000 => {
                return Err(bad_value("TimeinuSecs", us, "below 1000000"));
            }
            us => us,
        };
        let time_text = string("Time", self.time_text)?;
        let time = match (time_secs, time_text) {
            (Some(secs), _) => Some(
                secs.saturating_mul(1_000_000)
                    .saturating_add(time_usecs.unwrap_or(0) as Micros),
            ),
            (None, Some(text)) => Some(parse_rfc3339(&text)?),
            (None, None) => None,
        };
        let reasons = match self.reasons {
            Some(ReasonsAttribute(Err(problem))) => return Err(DecodeError::KvList(problem)),
            Some(ReasonsAttribute(Ok(list))) => Some(list),
            None => None,
        };
        let extensions = self
            .extensions
            .map(|a| a.0)
            .transpose()
            .map_err(DecodeError::KvList)?;
        // Only an agent's not-ready state shows a reason; reading it for every event would cost a parse.
        let reason = if kind == EventKind::AgentNotReady {
            reason_code(reasons.as_ref(), extensions.as_ref())
        } else {
            None
        };

        Ok(Decoded::Event(Event {
            kind,
            server: string("Server", self.server)?.unwrap_or(Cow::Borrowed("")),
            conn_id,
            previous_conn_id: conn_id_attr("PreviousConnID", self.previous_conn_id)?,
            transfer_conn_id: conn_id_attr("TransferConnID", self.transfer_conn_id)?,
            call_uuid: non_empty(string("CallUUID", self.call_uuid)?),
            call_type: call_type(self.call_type)?,
            call_state: call_state(self.call_state)?,
            this_dn,
            this_queue: non_empty(string("ThisQueue", self.this_queue)?),
            this_dn_role: role("ThisDNRole", self.this_dn_role)?,
            other_dn: non_empty(string("OtherDN", self.other_dn)?),
            other_dn_role: role("OtherDNRole", self.other_dn_role)?,
            third_party_dn: non_empty(string("ThirdPartyDN", self.third_party_dn)?),
            third_party_dn_role: role("ThirdPartyDNRole", self.third_party_dn_role)?,
            ani: non_empty(string("ANI", self.ani)?),
            dnis: non_empty(string("DNIS", self.dnis)?),
            user_data: self
                .user_data
                .map(|a| a.0)
                .transpose()
                .map_err(DecodeError::KvList)?,
            extensions,
            agent_id: non_empty(string("AgentID", self.agent_id)?),
            work_mode: work_mode(self.work_mode)?,
            monitor_scope: monitor_scope(self.monitor_scope)?,
            reason,
            sequence: unsigned("EventSequenceNumber", self.sequence)?,
            time,
        }))
    }
}

fn missing(kind: EventKind, attribute: &'static str) -> DecodeError {
    DecodeError::MissingAttribute {
        event: kind.name(),
        attribute,
    }
}

fn wrong_type(attribute: &'static str, expected: &'static str, found: &Scalar<'_>) -> DecodeError {
    DecodeError::WrongType {
        attribute,
        expected,
        found: found.kind_name(),
    }
}

fn bad_value(
    attribute: &'static str,
    value: impl fmt::Debug,
    expected: &'static str,
) -> DecodeError {
    DecodeError::BadValue {
        attribute,
        value: format!("{value:?}"),
        expected,
    }
}

fn string<'a>(
    attribute: &'static str,
    value: Option<Scalar<'a>>,
) -> Result<Option<Cow<'a, str>>, DecodeError> {
    match value {
        None => Ok(None),
        Some(Scalar::Str(text)) => Ok(Some(text)),
        Some(other) => Err(wrong_type(attribute, "a string", &other)),
    }
}

fn non_empty(value: Option<Cow<'_, str>>) -> Option<Cow<'_, str>> {
    value.filter(|text| !text.is_empty())
}

fn unsigned(
    attribute: &'static str,
    value: Option<Scalar<'_>>,
) -> Result<Option<u64>, DecodeError> {
    match value {
        None => Ok(None),
        Some(Scalar::UInt(n)) => Ok(Some(n)),
        Some(Scalar::Int(n)) => Err(bad_value(attribute, n, "a non-negative integer")),
        Some(other) => Err(wrong_type(attribute, "a non-negative integer", &other)),
    }
}

fn integer(attribute: &'static str, value: Option<Scalar<'_>>) -> Result<Option<i64>, DecodeError> {
    match value {
        None => Ok(None),
        Some(Scalar::UInt(n)) => i64::try_from(n)
            .map(Some)
            .map_err(|_| bad_value(attribute, n, "a time in seconds")),
        Some(Scalar::Int(n)) => Ok(Some(n)),
        Some(other) => Err(wrong_type(attribute, "an integer", &other)),
    }
}

fn conn_id(
    attribute: &'static str,
    value: Option<Scalar<'_>>,
) -> Result<Option<ConnId>, DecodeError> {
    match string(attribute, value)? {
        None => Ok(None),
        Some(text) => ConnId::parse(&text)
            .map(Some)
            .ok_or_else(|| bad_value(attribute, &*text, "1 to 16 hex digits")),
    }
}

/// PreviousConnID and TransferConnID: as ConnID, but an empty string means absent (T-Servers send `""`).
fn conn_id_attr(
    attribute: &'static str,
    value: Option<Scalar<'_>>,
) -> Result<Option<ConnId>, DecodeError> {
    match value {
        Some(Scalar::Str(text)) if text.is_empty() => Ok(None),
        other => conn_id(attribute, other),
    }
}

fn call_type(value: Option<Scalar<'_>>) -> Result<Option<CallType>, DecodeError> {
    const EXPECTED: &str = "a call type (0-4 or Unknown, Internal, Inbound, Outbound, Consult)";
    match value {
        None => Ok(None),
        Some(Scalar::UInt(n)) => CallType::from_number(n)
            .map(Some)
            .ok_or_else(|| bad_value("CallType", n, EXPECTED)),
        Some(Scalar::Str(name)) => CallType::from_name(&name)
            .map(Some)
            .ok_or_else(|| bad_value("CallType", &*name, EXPECTED)),
        Some(Scalar::Int(n)) => Err(bad_value("CallType", n, EXPECTED)),
        Some(other) => Err(wrong_type("CallType", "a number or a name", &other)),
    }
}

/// CallState is informational: any non-negative number, or any name (TLib has dozens).
fn call_state(value: Option<Scalar<'_>>) -> Result<Option<u32>, DecodeError> {
    match value {
        None | Some(Scalar::Str(_)) => Ok(None),
        Some(Scalar::UInt(n)) => u32::try_from(n)
            .map(Some)
            .map_err(|_| bad_value("CallState", n, "a call state code")),
        Some(Scalar::Int(n)) => Err(bad_value("CallState", n, "a call state code")),
        Some(other) => Err(wrong_type("CallState", "a number or a name", &other)),
    }
}

/// The `ReasonCode` of `Reasons`, else of `Extensions` (events.md, EventAgentNotReady).
fn reason_code(reasons: Option<&KvList>, extensions: Option<&KvList>) -> Option<Box<str>> {
    [reasons, extensions]
        .into_iter()
        .flatten()
        .find_map(|list| list.value_text("ReasonCode"))
        .map(String::into_boxed_str)
}

fn work_mode(value: Option<Scalar<'_>>) -> Result<Option<AgentWorkMode>, DecodeError> {
    const EXPECTED: &str = "an agent work mode (0-7 or a name such as AgentAfterCallWork)";
    match value {
        None => Ok(None),
        Some(Scalar::UInt(n)) => AgentWorkMode::from_number(n)
            .map(Some)
            .ok_or_else(|| bad_value("AgentWorkMode", n, EXPECTED)),
        Some(Scalar::Str(name)) => AgentWorkMode::from_name(&name)
            .map(Some)
            .ok_or_else(|| bad_value("AgentWorkMode", &*name, EXPECTED)),
        Some(Scalar::Int(n)) => Err(bad_value("AgentWorkMode", n, EXPECTED)),
        Some(other) => Err(wrong_type("AgentWorkMode", "a number or a name", &other)),
    }
}

fn monitor_scope(value: Option<Scalar<'_>>) -> Result<Option<MonitorScope>, DecodeError> {
    const EXPECTED: &str = "0, 1, MonitorOneCall or MonitorAllCalls";
    match value {
        None => Ok(None),
        Some(Scalar::UInt(n)) => MonitorScope::from_number(n)
            .map(Some)
            .ok_or_else(|| bad_value("MonitorNextCallType", n, EXPECTED)),
        Some(Scalar::Str(name)) => MonitorScope::from_name(&name)
            .map(Some)
            .ok_or_else(|| bad_value("MonitorNextCallType", &*name, EXPECTED)),
        Some(Scalar::Int(n)) => Err(bad_value("MonitorNextCallType", n, EXPECTED)),
        Some(other) => Err(wrong_type(
            "MonitorNextCallType",
            "a number or a name",
            &other,
        )),
    }
}

fn role(attribute: &'static str, value: Option<Scalar<'_>>) -> Result<Option<Role>, DecodeError> {
    const EXPECTED: &str = "a party role (0-10 or a Role name)";
    match value {
        None => Ok(None),
        Some(Scalar::UInt(n)) => Role::from_number(n)
            .map(Some)
            .ok_or_else(|| bad_value(attribute, n, EXPECTED)),
        Some(Scalar::Str(name)) => Role::from_name(&name)
            .map(Some)
            .ok_or_else(|| bad_value(attribute, &*name, EXPECTED)),
        Some(Scalar::Int(n)) => Err(bad_value(attribute, n, EXPECTED)),
        Some(other) => Err(wrong_type(attribute, "a number or a name", &other)),
    }
}

fn parse_rfc3339(text: &str) -> Result<Micros, DecodeError> {
    let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| bad_value("Time", text, "an RFC 3339 time"))?;
    i64::try_from(parsed.unix_timestamp_nanos() / 1000)
        .map_err(|_| bad_value("Time", text, "an RFC 3339 time"))
}

/// Any JSON value, kept only as far as the checks need it. Strings borrow from the line when they can.
enum Scalar<'a> {
    Str(Cow<'a, str>),
    UInt(u64),
    Int(i64),
    Float,
    Bool,
    Null,
    Object,
    Array,
}

impl Scalar<'_> {
    fn kind_name(&self) -> &'static str {
        match self {
            Scalar::Str(_) => "a string",
            Scalar::UInt(_) | Scalar::Int(_) => "an integer",
            Scalar::Float => "a fractional number",
            Scalar::Bool => "a boolean",
            Scalar::Null => "null",
            Scalar::Object => "an object",
            Scalar::Array => "an array",
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(ScalarVisitor(std::marker::PhantomData))
    }
}

struct ScalarVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for ScalarVisitor<'a> {
    type Value = Scalar<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::UInt(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(if v >= 0 {
            Scalar::UInt(v as u64)
        } else {
            Scalar::Int(v)
        })
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Float)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(line: &str) -> Event<'_> {
        match decode_line(line.as_bytes()) {
            Ok(Decoded::Event(event)) => event,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    fn error(line: &str) -> String {
        match decode_line(line.as_bytes()) {
            Err(err) => err.to_string(),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn decodes_the_events_md_example() {
        let e = event(
            r#"{"event":"EventRinging","EventSequenceNumber":1041,"TimeinSecs":1763900000,"TimeinuSecs":250000,
 "ConnID":"006f02a7b8c9d001","CallUUID":"QK59HK4FS927D7FUU41G6IE468000004","CallType":"Inbound",
 "ThisDN":"7001","ThisQueue":"8001","ThisDNRole":"RoleDestination","OtherDN":"+14155550100",
 "ANI":"+14155550100","DNIS":"8001","UserData":{"AccountNumber":"12345678","Segment":"Gold"}}"#,
        );
        assert_eq!(e.kind, EventKind::Ringing);
        assert_eq!(e.sequence, Some(1041));
        assert_eq!(e.time, Some(1_763_900_000_250_000));
        assert_eq!(e.conn_id, Some(ConnId(0x006f02a7b8c9d001)));
        assert_eq!(e.call_type, Some(CallType::Inbound));
        assert_eq!(e.this_dn_role, Some(Role::Destination));
        assert_eq!(e.this_dn(), "7001");
        assert_eq!(e.server, "");
        assert_eq!(
            e.user_data.map(|kv| kv.json),
            Some(r#"{"AccountNumber":"12345678","Segment":"Gold"}"#.into())
        );
    }

    #[test]
    fn accepts_attribute_prefix_numeric_ids_and_rfc3339() {
        let e = event(
            r#"{"event":64,"AttributeConnID":"1A","AttributeThisDN":"7001","CallType":4,"Time":"2025-11-23T12:13:20.5Z","ThisDNRole":10}"#,
        );
        assert_eq!(e.kind, EventKind::Established);
        assert_eq!(e.conn_id, Some(ConnId(0x1a)));
        assert_eq!(e.call_type, Some(CallType::Consult));
        assert_eq!(e.this_dn_role, Some(Role::Observer));
        assert_eq!(e.time, Some(1_763_900_000_500_000));
    }

    #[test]
    fn time_in_secs_wins_over_time() {
        let e = event(
            r#"{"event":"EventHeld","ConnID":"1","ThisDN":"1","TimeinSecs":5,"Time":"2025-01-01T00:00:00Z"}"#,
        );
        assert_eq!(e.time, Some(5_000_000));
    }

    /// An EventRinging at 7001 with `extra` members added.
    fn ringing_with(extra: &str) -> Result<Decoded<'static>, DecodeError> {
        let line = format!(r#"{{"event":"EventRinging","ConnID":"1","ThisDN":"7001",{extra}}}"#);
        decode_line(line.as_bytes()).map(|decoded| match decoded {
            Decoded::Event(event) => Decoded::Event(event.into_owned()),
            Decoded::Unknown { name } => Decoded::Unknown {
                name: Cow::Owned(name.into_owned()),
            },
        })
    }

    #[test]
    fn attributes_read_but_not_used_yet_are_still_checked() {
        // events.md: ThisQueue is a string, CallState a number or a name, Reasons a KV list.
        assert!(ringing_with(r#""ThisQueue":8001"#).is_err());
        assert!(ringing_with(r#""CallState":true"#).is_err());
        assert!(ringing_with(r#""CallState":-1"#).is_err());
        assert!(ringing_with(r#""Reasons":"busy""#).is_err());
        assert!(ringing_with(r#""Reasons":{"ReasonCode":"Lunch"}"#).is_ok());
        let Ok(Decoded::Event(event)) = ringing_with(r#""CallState":22,"ThisQueue":"8001""#) else {
            panic!("valid");
        };
        assert_eq!(event.call_state, Some(22));
        assert_eq!(event.this_queue.as_deref(), Some("8001"));
        let Ok(Decoded::Event(event)) = ringing_with(r#""CallState":"Redirected""#) else {
            panic!("valid");
        };
        assert_eq!(event.call_state, None, "names are informational");
    }

    #[test]
    fn edges_of_times_conn_ids_and_kv_values() {
        assert!(ringing_with(r#""TimeinSecs":1,"TimeinuSecs":999999"#).is_ok());
        assert!(ringing_with(r#""TimeinSecs":1,"TimeinuSecs":1000000"#).is_err());
        // An empty PreviousConnID is absent (T-Servers send ""); an empty ConnID is not a ConnID.
        let Ok(Decoded::Event(event)) = ringing_with(r#""PreviousConnID":"""#) else {
            panic!("valid");
        };
        assert_eq!(event.previous_conn_id, None);
        assert!(decode_line(br#"{"event":"EventRinging","ConnID":"","ThisDN":"7001"}"#).is_err());
        // docs/semantics.md: a bool or null inside a KV list rejects the line.
        assert!(ringing_with(r#""UserData":{"a":true}"#).is_err());
        assert!(ringing_with(r#""UserData":{"a":null}"#).is_err());
    }

    #[test]
    fn unknown_events_are_ignored_whatever_they_carry() {
        assert_eq!(
            decode_line(br#"{"event":"EventRouteRequest","ConnID":12,"UserData":7}"#),
            Ok(Decoded::Unknown {
                name: Cow::Borrowed("EventRouteRequest")
            })
        );
        assert!(matches!(
            decode_line(br#"{"event":999}"#),
            Ok(Decoded::Unknown { .. })
        ));
    }

    #[test]
    fn link_and_user_events_need_no_conn_id() {
        assert_eq!(
            event(r#"{"event":"EventLinkDisconnected","Server":"SIP_A"}"#).server,
            "SIP_A"
        );
        assert_eq!(
            event(r#"{"event":"EventUserEvent","ThisDN":"7001"}"#).conn_id,
            None
        );
    }

    #[test]
    fn rejections_name_the_attribute_and_reason() {
        assert_eq!(error("not json"), "not a JSON object");
        assert_eq!(error("[1,2]"), "not a JSON object");
        assert!(error("{\"event\":").starts_with("not valid JSON"));
        assert_eq!(error(r#"{"ConnID":"1"}"#), "missing \"event\"");
        assert_eq!(
            error(r#"{"event":"EventRinging","ThisDN":"7001"}"#),
            "EventRinging: missing ConnID"
        );
        assert_eq!(
            error(r#"{"event":"EventRinging","ConnID":"1"}"#),
            "EventRinging: missing ThisDN"
        );
        assert_eq!(
            error(r#"{"event":"EventRinging","ConnID":"xyz","ThisDN":"1"}"#),
            "ConnID: \"xyz\" is not 1 to 16 hex digits"
        );
        assert_eq!(
            error(r#"{"event":"EventRinging","ConnID":"00000000000000001","ThisDN":"1"}"#),
            "ConnID: \"00000000000000001\" is not 1 to 16 hex digits"
        );
        assert_eq!(
            error(r#"{"event":"EventRinging","ConnID":"1","ThisDN":"1","CallType":9}"#),
            "CallType: 9 is not a call type (0-4 or Unknown, Internal, Inbound, Outbound, Consult)"
        );
        assert_eq!(
            error(r#"{"event":"EventRinging","ConnID":"1","ThisDN":7001}"#),
            "ThisDN: expected a string, found an integer"
        );
        assert_eq!(
            error(r#"{"event":"EventRinging","ConnID":"1","ThisDN":"1","UserData":"x"}"#),
            "UserData: expected an object, found a string"
        );
        assert!(
            error(r#"{"event":"EventRinging","ConnID":"1","AttributeConnID":"2","ThisDN":"1"}"#)
                .starts_with("duplicate field `ConnID`")
        );
        assert_eq!(
            error(r#"{"event":"EventRinging","ConnID":"1","ThisDN":"1","EventSequenceNumber":-1}"#),
            "EventSequenceNumber: -1 is not a non-negative integer"
        );
        assert_eq!(
            decode_line(b"{\"event\":\"\xff\"}"),
            Err(DecodeError::NotUtf8)
        );
    }

    #[test]
    fn device_events_need_this_dn_but_no_conn_id_and_carry_agent_attributes() {
        let Ok(Decoded::Event(e)) = decode_line(
            br#"{"event":"EventAgentNotReady","ThisDN":"7001","AgentID":"a1","AgentWorkMode":"AgentAfterCallWork","Reasons":{"ReasonCode":"Lunch"},"Extensions":{"ReasonCode":"Other"}}"#,
        ) else {
            panic!("a valid device event");
        };
        assert_eq!(e.kind, EventKind::AgentNotReady);
        assert_eq!(e.conn_id, None);
        assert_eq!(e.agent_id.as_deref(), Some("a1"));
        assert_eq!(e.work_mode, Some(AgentWorkMode::AfterCallWork));
        assert_eq!(
            e.reason.as_deref(),
            Some("Lunch"),
            "Reasons before Extensions"
        );
        let Ok(Decoded::Event(e)) = decode_line(
            br#"{"event":76,"ThisDN":"7001","AgentWorkMode":4,"Extensions":{"ReasonCode":17}}"#,
        ) else {
            panic!("a valid device event");
        };
        assert_eq!(e.work_mode, Some(AgentWorkMode::AuxWork));
        assert_eq!(e.reason.as_deref(), Some("17"));
        let Ok(Decoded::Event(e)) = decode_line(
            br#"{"event":"EventMonitoringNextCall","ThisDN":"7901","OtherDN":"7001","MonitorNextCallType":"MonitorAllCalls"}"#,
        ) else {
            panic!("a valid device event");
        };
        assert_eq!(e.monitor_scope, Some(MonitorScope::AllCalls));
        assert_eq!(
            decode_line(br#"{"event":"EventDNDOn","AgentID":"a1"}"#).map(|_| ()),
            Err(DecodeError::MissingAttribute {
                event: "EventDNDOn",
                attribute: "ThisDN"
            })
        );
        assert!(
            decode_line(br#"{"event":"EventAgentLogin","ThisDN":"1","AgentWorkMode":9}"#).is_err()
        );
        assert!(
            decode_line(br#"{"event":"EventMonitoringNextCall","ThisDN":"1","MonitorNextCallType":"Twice"}"#)
                .is_err()
        );
    }
}

/// The scanner ([`scan`]) against serde_json alone: every line, valid or not, decodes to the same
/// outcome either way.
#[cfg(test)]
mod scan_equivalence {
    use super::*;
    use proptest::prelude::*;

    /// Lines with every attribute form the scanner reads or leaves: simulated traffic, and edge forms.
    fn bases() -> Vec<String> {
        let config = crate::ingest::sim::SimConfig {
            seed: 3,
            agents: 20,
            queues: 2,
            agent_states: true,
            ..crate::ingest::sim::SimConfig::default()
        };
        let mut lines: Vec<String> = crate::ingest::sim::Simulator::new(config)
            .take(400)
            .map(|event| event.line)
            .collect();
        lines.extend(
            [
                r#"{"event":"EventRinging","ConnID":"1","ThisDN":"7001","UserData":{"a":"b","n":-3,"o":{"x":"y"}},"Extensions":{"record":"on"},"Reasons":{"ReasonCode":"Lunch"}}"#,
                r#"{"event":"EventEstablished","ConnID":"1","ThisDN":"7001","UserData":{"GSIP_RECORD":"pause","x":{"GSIP_RECORD":"on"},"GSIP_RECORD":"resume"},"Extensions":{ "record" : "off" , "n" : 0 }}"#,
                r#"{ "event" : 64 , "AttributeConnID" : "1A" , "AttributeThisDN" : "7001" , "CallType" : 4 , "Time" : "2025-11-23T12:13:20.5Z" }"#,
                r#"{"event":"EventReleased","ConnID":"2","ThisDN":"7002","CallState":22,"Other":[1,{"a":null}],"X":1.5e3,"Y":true,"Z":null}"#,
                r#"{"event":"EventAgentNotReady","ThisDN":"7001","AgentWorkMode":"AgentAfterCallWork","Reasons":{"ReasonCode":17}}"#,
                r#"{"event":"EventPartyChanged","ConnID":"3","PreviousConnID":"","TransferConnID":"2","ThisDN":"7001","EventSequenceNumber":18446744073709551615}"#,
                r#"{"event":"EventUserEvent","ThisDN":"7001","UserData":null,"ConnID":null}"#,
                r#"{"event":"EventRouteRequest","ConnID":12,"UserData":7}"#,
                r#"{"event":"EventQueued","ConnID":"4","ThisDN":"8001","ANI":"caf\u00e9","DNIS":"\"q\"","TimeinSecs":-5}"#,
                r#"{}"#,
            ]
            .map(str::to_owned),
        );
        lines
    }

    /// Pieces whose insertion anywhere makes lines the scanner must read or leave exactly as serde_json.
    const PIECES: &[&str] = &[
        " ",
        "\n",
        "\t",
        ",",
        ":",
        "{",
        "}",
        "[",
        "]",
        "\"",
        "\\",
        "\\n",
        "\\u0041",
        "\u{1}",
        "é",
        "null",
        "true",
        "fals",
        "-",
        "-0",
        "0",
        "01",
        "1.5",
        "1e2",
        "99999999999999999999",
        r#""ConnID":"5","#,
        r#""ConnID":null,"#,
        r#""AttributeConnID":"6","#,
        r#""UserData":{"k":"v"},"#,
        r#""UserData":{"k":[1]},"#,
        r#""Extensions":"x","#,
        r#""Unknown":{"a":[{}]},"#,
        r#""Unknown":[1,2,],"#,
        r#""TimeinuSecs":1000000,"#,
        r#""event":"EventHeld","#,
        r#""GSIP_RECORD":"on","#,
        r#""record":"Stop","#,
        r#""record":1,"#,
        r#""a":{"b":{"c":"d"}},"#,
        r#""n":-12,"#,
    ];

    fn outcome(line: &[u8]) -> Result<Decoded<'_>, DecodeError> {
        decode_line(line)
    }

    fn by_serde(line: &[u8]) -> Result<Decoded<'_>, DecodeError> {
        if line.trim_ascii_start().first() != Some(&b'{') {
            return Err(DecodeError::NotObject);
        }
        let text = std::str::from_utf8(line).map_err(|_| DecodeError::NotUtf8)?;
        decode_with_serde(text)
    }

    #[test]
    fn every_base_line_decodes_as_serde_json_decodes_it() {
        let mut scanned = 0;
        let bases = bases();
        for line in &bases {
            assert_eq!(
                outcome(line.as_bytes()),
                by_serde(line.as_bytes()),
                "{line}"
            );
            scanned += usize::from(scan::scan(line, &mut RawEvent::default()).is_some());
        }
        // The fast path is the common one: every simulated line is in its form.
        assert!(scanned >= 400, "{scanned} of {} lines scanned", bases.len());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        #[test]
        fn mutated_lines_decode_as_serde_json_decodes_them(
            base in any::<prop::sample::Index>(),
            edits in proptest::collection::vec(
                (any::<prop::sample::Index>(), 0..3u8, any::<prop::sample::Index>()),
                1..4,
            ),
        ) {
            let bases = bases();
            let mut line = base.get(&bases).clone();
            for (at, kind, piece) in edits {
                // Edit at a character boundary, so the line stays UTF-8 (the check before both paths).
                let boundaries: Vec<usize> =
                    (0..=line.len()).filter(|&i| line.is_char_boundary(i)).collect();
                let at = *at.get(&boundaries);
                match kind {
                    0 => line.insert_str(at, PIECES[piece.index(PIECES.len())]),
                    1 => {
                        let end = boundaries.iter().copied().find(|&i| i > at).unwrap_or(at);
                        line.replace_range(at..end, "");
                    }
                    _ => {
                        let end = boundaries.iter().copied().find(|&i| i > at).unwrap_or(at);
                        line.replace_range(at..end, PIECES[piece.index(PIECES.len())]);
                    }
                }
            }
            prop_assert_eq!(outcome(line.as_bytes()), by_serde(line.as_bytes()), "{}", line);
        }
    }
}
