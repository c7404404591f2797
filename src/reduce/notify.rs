//! Notifications (call-resource.md, "Notifications") and the JSON form of call resources.
//!
//! Every notification is serialized exactly once, into one buffer shared by all the notifications of an
//! event. Transports wrap the serialized members with their own (`seq`, `epoch`, `type`) without touching
//! the call document again.

use super::call::{Call, Changes};
use super::device::DeviceDoc;
use crate::json::{
    Decimal, push_conn_id, push_integer, push_json_escaped as push_escaped, write_json_str,
};
use std::ops::Range;

/// The `notificationType` of a notification, by priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotificationType {
    /// The resource was created or its state changed.
    StatusChange,
    /// Participants changed.
    ParticipantsUpdated,
    /// userData changed.
    AttachedDataChanged,
    /// recordingState changed.
    CallRecordingStateChange,
    /// monitoredUserMuted changed.
    MonitoredUserMutedStateChange,
    /// Any other field changed.
    StatePropertiesChanged,
}

impl NotificationType {
    /// The first type that applies to `changes`, or `None` when nothing changed.
    pub fn for_changes(changes: Changes) -> Option<Self> {
        const PRIORITY: [(Changes, NotificationType); 6] = [
            (Changes::STATUS, NotificationType::StatusChange),
            (Changes::PARTICIPANTS, NotificationType::ParticipantsUpdated),
            (Changes::USER_DATA, NotificationType::AttachedDataChanged),
            (
                Changes::RECORDING,
                NotificationType::CallRecordingStateChange,
            ),
            (
                Changes::MONITORED_MUTED,
                NotificationType::MonitoredUserMutedStateChange,
            ),
            (Changes::OTHER, NotificationType::StatePropertiesChanged),
        ];
        PRIORITY
            .iter()
            .find(|(bit, _)| changes.contains(*bit))
            .map(|(_, kind)| *kind)
    }

    /// The name in notifications.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationType::StatusChange => "StatusChange",
            NotificationType::ParticipantsUpdated => "ParticipantsUpdated",
            NotificationType::AttachedDataChanged => "AttachedDataChanged",
            NotificationType::CallRecordingStateChange => "CallRecordingStateChange",
            NotificationType::MonitoredUserMutedStateChange => "MonitoredUserMutedStateChange",
            NotificationType::StatePropertiesChanged => "StatePropertiesChanged",
        }
    }
}

/// What a notification is about: the `topics` of a WebSocket subscription (api.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// A call resource: CallStateChangeMessage on `/v2/me/calls`.
    Calls,
    /// A device resource: DeviceStateChangeMessage on `/v2/me/devices`.
    Devices,
    /// A queue resource: QueueStateChangeMessage on `/callgate/queues` (api.md).
    Queues,
}

impl Topic {
    /// The name clients use in `topics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Topic::Calls => "calls",
            Topic::Devices => "devices",
            Topic::Queues => "queues",
        }
    }

    /// The topic named `name` in `topics`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "calls" => Some(Topic::Calls),
            "devices" => Some(Topic::Devices),
            "queues" => Some(Topic::Queues),
            _ => None,
        }
    }
}

/// One notification produced by an event, borrowed from [`Notifications`].
#[derive(Debug, Clone)]
pub struct Notification<'a> {
    /// What it is about.
    pub topic: Topic,
    /// Its type (a device notification's is [`NotificationType::StatusChange`], and shown nowhere).
    pub kind: NotificationType,
    /// The call number of the resource it is about (see [`crate::reduce::Reducer::call`]); for
    /// [`Topic::Devices`], the device number (see [`crate::reduce::Reducer::device`]).
    pub resource: u64,
    /// The notification's JSON members without the enclosing braces:
    /// `"channel":"/v2/me/calls","data":{...}`. Wrap as `{` + your members + `,` + this + `}`.
    pub members: &'a str,
    /// The resource document inside it (the call, or the device).
    pub call: &'a str,
    /// Where `call` lies within `members`.
    pub call_in_members: Range<usize>,
}

impl Notification<'_> {
    /// Appends the notification as one line of `fold --updates`: `{"seq":N,"channel":...,"data":{...}}\n`.
    pub fn write_line_with_seq(&self, seq: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"seq\":");
        out.extend_from_slice(Decimal::new(seq).as_str().as_bytes());
        out.push(b',');
        out.extend_from_slice(self.members.as_bytes());
        out.extend_from_slice(b"}\n");
    }
}

#[derive(Debug, Clone)]
struct Entry {
    topic: Topic,
    kind: NotificationType,
    resource: u64,
    members: Range<usize>,
    call: Range<usize>,
}

/// The notifications of one or more events, in the order produced. Reused between events to avoid
/// allocating: call [`Notifications::clear`] after consuming them.
#[derive(Debug, Clone)]
pub struct Notifications {
    buf: String,
    entries: Vec<Entry>,
    /// Whether notifications are written out (see [`Notifications::skip_text`]).
    rendering: bool,
}

impl Default for Notifications {
    fn default() -> Self {
        Self {
            buf: String::new(),
            entries: Vec::new(),
            rendering: true,
        }
    }
}

impl Notifications {
    /// From now on, with `skip` true, records each notification (its topic, type and resource) without
    /// writing its text: `members` and `call` are then empty. A recovery's replay uses it for what no one
    /// will read (docs/journal.md, "Recovery"); `false` writes them again.
    pub fn skip_text(&mut self, skip: bool) {
        self.rendering = !skip;
    }

    /// Records a notification without its text.
    fn push_unwritten(&mut self, topic: Topic, kind: NotificationType, resource: u64) {
        let at = self.buf.len();
        self.entries.push(Entry {
            topic,
            kind,
            resource,
            members: at..at,
            call: at..at,
        });
    }

    /// Forgets every notification, keeping the memory.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.entries.clear();
    }

    /// How many notifications are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The notifications in the order produced.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Notification<'_>> + '_ {
        self.entries.iter().map(|e| Notification {
            topic: e.topic,
            kind: e.kind,
            resource: e.resource,
            members: &self.buf[e.members.clone()],
            call: &self.buf[e.call.clone()],
            call_in_members: e.call.start - e.members.start..e.call.end - e.members.start,
        })
    }

    /// Appends one notification.
    pub(crate) fn push(
        &mut self,
        kind: NotificationType,
        resource: u64,
        view: &CallView<'_>,
        extensions: Option<&str>,
    ) {
        if !self.rendering {
            return self.push_unwritten(Topic::Calls, kind, resource);
        }
        let start = self.buf.len();
        self.buf
            .push_str("\"channel\":\"/v2/me/calls\",\"data\":{\"notificationType\":\"");
        self.buf.push_str(kind.as_str());
        self.buf.push_str("\",\"call\":");
        let call_start = self.buf.len();
        view.write(&mut self.buf);
        let call_end = self.buf.len();
        self.buf.push_str(",\"phoneNumber\":");
        write_json_str(&mut self.buf, view.dn);
        if let Some(extensions) = extensions {
            self.buf.push_str(",\"extensions\":");
            self.buf.push_str(extensions);
        }
        self.buf
            .push_str(",\"messageType\":\"CallStateChangeMessage\"}");
        self.entries.push(Entry {
            topic: Topic::Calls,
            kind,
            resource,
            members: start..self.buf.len(),
            call: call_start..call_end,
        });
    }
}

impl Notifications {
    /// Appends the device notification of device `number` (gws.md):
    /// `"channel":"/v2/me/devices","data":{"messageType":"DeviceStateChangeMessage","devices":[device]}`.
    pub(crate) fn push_device(&mut self, number: u32, doc: &DeviceDoc<'_>) {
        if !self.rendering {
            let kind = NotificationType::StatusChange;
            return self.push_unwritten(Topic::Devices, kind, u64::from(number));
        }
        let start = self.buf.len();
        self.buf.push_str(
            "\"channel\":\"/v2/me/devices\",\"data\":{\"messageType\":\"DeviceStateChangeMessage\",\"devices\":[",
        );
        let device_start = self.buf.len();
        doc.write(&mut self.buf);
        let device_end = self.buf.len();
        self.buf.push_str("]}");
        self.entries.push(Entry {
            topic: Topic::Devices,
            kind: NotificationType::StatusChange,
            resource: u64::from(number),
            members: start..self.buf.len(),
            call: device_start..device_end,
        });
    }
}

impl Notifications {
    /// Appends the queue notification of queue `number` (api.md), its resource written by `write`:
    /// `"channel":"/callgate/queues","data":{"messageType":"QueueStateChangeMessage","queue":{...}}`.
    pub(crate) fn push_queue(&mut self, number: u32, write: impl FnOnce(&mut String)) {
        if !self.rendering {
            let kind = NotificationType::StatusChange;
            return self.push_unwritten(Topic::Queues, kind, u64::from(number));
        }
        let start = self.buf.len();
        self.buf.push_str(
            "\"channel\":\"/callgate/queues\",\"data\":{\"messageType\":\"QueueStateChangeMessage\",\"queue\":",
        );
        let queue_start = self.buf.len();
        write(&mut self.buf);
        let queue_end = self.buf.len();
        self.buf.push('}');
        self.entries.push(Entry {
            topic: Topic::Queues,
            kind: NotificationType::StatusChange,
            resource: u64::from(number),
            members: start..self.buf.len(),
            call: queue_start..queue_end,
        });
    }
}

/// What it takes to write a call resource: the call and the parts of the device and gateway it shows.
#[derive(Debug, Clone, Copy)]
pub struct CallView<'a> {
    /// The call.
    pub call: &'a Call,
    /// The device's DN.
    pub dn: &'a str,
    /// The device's `deviceUri`, already a JSON string literal with its quotes.
    pub device_uri_json: &'a str,
    /// The gateway's `{base}/api/v2/me/calls/`, JSON-escaped without quotes.
    pub calls_uri_prefix: &'a str,
    /// The `id` of the live parent call, when this is a linked consultation.
    pub parent_id: Option<&'a str>,
}

impl CallView<'_> {
    /// Writes the call resource as compact JSON, members in the order of docs/semantics.md.
    pub fn write(&self, out: &mut String) {
        let call = self.call;
        out.push_str("{\"id\":");
        write_json_str(out, &call.id);
        out.push_str(",\"state\":\"");
        out.push_str(call.state.as_str());
        out.push_str("\",\"callUuid\":");
        write_json_str(out, call.call_uuid().unwrap_or(""));
        out.push_str(",\"connId\":\"");
        push_conn_id(out, call.conn_id);
        if let Some(previous) = call.previous_conn_id() {
            out.push_str("\",\"previousConnId\":\"");
            push_conn_id(out, previous);
        }
        out.push('"');
        out.push_str(",\"deviceUri\":");
        out.push_str(self.device_uri_json);
        out.push_str(",\"participants\":[");
        for (i, participant) in call.participants.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&participant.json);
        }
        out.push_str("],\"dnis\":");
        write_json_str(out, call.dnis.as_deref().unwrap_or(""));
        out.push_str(",\"callType\":\"");
        out.push_str(call.call_type.as_str());
        out.push_str("\",\"capabilities\":[");
        for (i, name) in call.capabilities.names().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('"');
            out.push_str(name);
            out.push('"');
        }
        out.push(']');
        if let Some(user_data) = &call.user_data {
            out.push_str(",\"userData\":");
            out.push_str(user_data);
        }
        out.push_str(",\"duration\":\"");
        push_integer(out, call.duration_secs, false);
        out.push_str(if call.muted {
            "\",\"mute\":\"On\",\"recordingState\":\""
        } else {
            "\",\"mute\":\"Off\",\"recordingState\":\""
        });
        out.push_str(call.recording.as_str());
        out.push_str("\",\"supervisorListeningIn\":");
        out.push_str(bool_str(call.supervisor_listening_in()));
        out.push_str(",\"monitoredUserMuted\":");
        out.push_str(bool_str(call.monitored_user_muted));
        out.push_str(",\"monitoring\":");
        out.push_str(bool_str(call.monitoring));
        if let Some(parent_id) = self.parent_id {
            out.push_str(",\"parentCallUri\":\"");
            out.push_str(self.calls_uri_prefix);
            push_escaped(out, parent_id);
            out.push_str("\",\"parentCallPath\":\"/calls/");
            push_escaped(out, parent_id);
            out.push('"');
        }
        out.push_str(",\"uri\":\"");
        out.push_str(self.calls_uri_prefix);
        push_escaped(out, &call.id);
        out.push_str("\",\"path\":\"/calls/");
        push_escaped(out, &call.id);
        out.push_str("\"}");
    }
}

fn bool_str(value: bool) -> &'static str {
    if value { "true" } else { "false" }
}

/// `text` JSON-escaped without quotes.
pub(crate) fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    push_escaped(&mut out, text);
    out
}

#[cfg(test)]
mod tests {
    use crate::reduce::Notifications;

    #[test]
    fn notifications_accumulate_and_locate_their_documents() {
        let mut reducer = crate::reduce::Fold::default();
        let mut out = Notifications::default();
        assert!(out.is_empty());
        for line in [
            r#"{"event":"EventRinging","ConnID":"1","CallUUID":"A","ThisDN":"7001"}"#,
            r#"{"event":"EventRinging","ConnID":"2","CallUUID":"B","ThisDN":"7002"}"#,
            r#"{"event":"EventEstablished","ConnID":"1","ThisDN":"7001"}"#,
        ] {
            reducer
                .apply_line(line.as_bytes(), &mut out)
                .expect("valid");
        }
        assert_eq!(out.len(), 3);
        assert!(!out.is_empty());
        let ids: Vec<String> = out
            .iter()
            .map(|n| {
                // The document is where `call_in_members` says, in every notification, not only the first.
                assert_eq!(&n.members[n.call_in_members.clone()], n.call);
                let call: serde_json::Value = serde_json::from_str(n.call).expect("JSON");
                format!("{}/{}", call["id"].as_str().unwrap_or("?"), call["state"])
            })
            .collect();
        assert_eq!(ids, ["A/\"Ringing\"", "B/\"Ringing\"", "A/\"Established\""]);
        out.clear();
        assert!(out.is_empty());
        assert_eq!(out.len(), 0);
    }
}
