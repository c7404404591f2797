//! Model-based property tests of the reducer.
//!
//! `Model` below is a second, deliberately plain implementation of call-resource.md (and of the choices
//! written down in docs/semantics.md where the spec is silent): resources in a `Vec`, found by linear search,
//! every derived field recomputed from scratch after every event, notifications found by comparing each
//! resource of the device before and after the event. It shares no code with `src/reduce`. Generated event
//! streams are folded by both, and after every event the two must agree on the event's disposition, on
//! which resources get a notification, in which order, of which type, and on every field of every
//! notified version; at the end, on every resource.
//!
//! Two kinds of streams feed it: events drawn at random from a small universe (so that unusual
//! combinations meet), and call flows built step by step like a contact center's (inbound calls, hold,
//! consultations of consultations, swaps, transfers and conferences completed with EventPartyChanged,
//! supervisors monitoring, mutes from every side, recording both ways, T-Server restarts and resent events).

mod support;

use callgate::reduce::{Disposition, Fold, IgnoreReason, Notifications};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

const BASE: &str = "http://127.0.0.1:8080";

// ------------------------------------------------------------------------------------------------
// The reference model
// ------------------------------------------------------------------------------------------------

const CANONICAL: [&str; 22] = [
    "Answer",
    "Hangup",
    "Hold",
    "Retrieve",
    "SwapCalls",
    "SendDtmf",
    "InitiateTransfer",
    "CompleteTransfer",
    "SingleStepTransfer",
    "InitiateConference",
    "CompleteConference",
    "SingleStepConference",
    "MuteMonitoredUser",
    "UnmuteMonitoredUser",
    "StartCallRecording",
    "PauseCallRecording",
    "ResumeCallRecording",
    "StopCallRecording",
    "AttachUserData",
    "UpdateUserData",
    "DeleteUserData",
    "DeleteUserDataPair",
];
const USER_DATA_OPS: [&str; 4] = [
    "AttachUserData",
    "UpdateUserData",
    "DeleteUserData",
    "DeleteUserDataPair",
];
const TRANSFER_CONFERENCE: [&str; 4] = [
    "InitiateTransfer",
    "SingleStepTransfer",
    "InitiateConference",
    "SingleStepConference",
];
const CONSULT_EXTRAS: [&str; 3] = ["SwapCalls", "CompleteTransfer", "CompleteConference"];

/// The events of the events.md table that the reducer knows today.
const TABLE: [&str; 22] = [
    "EventQueued",
    "EventDiverted",
    "EventAbandoned",
    "EventRinging",
    "EventDialing",
    "EventNetworkReached",
    "EventDestinationBusy",
    "EventEstablished",
    "EventReleased",
    "EventHeld",
    "EventRetrieved",
    "EventPartyChanged",
    "EventPartyAdded",
    "EventPartyDeleted",
    "EventAttachedDataChanged",
    "EventLinkDisconnected",
    "EventLinkConnected",
    "EventUserEvent",
    "EventMuteOn",
    "EventMuteOff",
    "EventPrivateInfo",
    "EventCallDataChanged",
];

/// One resource as the model keeps it.
#[derive(Debug, Clone)]
struct Res {
    server: String,
    dn: String,
    id: String,
    state: &'static str,
    call_uuid: Option<String>,
    conn: String,
    previous_conn: Option<String>,
    participants: Vec<String>,
    dnis: Option<String>,
    call_type: &'static str,
    user_data: Option<Value>,
    gsip: Option<&'static str>,
    recording: &'static str,
    muted: bool,
    observers: Vec<String>,
    monitoring: bool,
    monitored: Option<String>,
    monitored_muted: bool,
    parent_conn: Option<String>,
    started: Option<u64>,
    duration: u64,
    capabilities: Vec<&'static str>,
    /// Index of the linked parent resource.
    parent: Option<usize>,
}

/// What a version of a resource shows, `duration` apart (it alone never makes a notification).
#[derive(Debug, Clone, PartialEq)]
struct View {
    id: String,
    state: String,
    call_uuid: String,
    conn_id: String,
    previous_conn_id: Option<String>,
    device_uri: String,
    participants: Vec<String>,
    dnis: String,
    call_type: String,
    capabilities: Vec<String>,
    user_data: Option<Value>,
    mute: String,
    recording_state: String,
    supervisor_listening_in: bool,
    monitored_user_muted: bool,
    monitoring: bool,
    /// `parentCallPath`'s call id (its `parentCallUri` is checked to agree).
    parent_id: Option<String>,
}

/// A notification as the model predicts it.
#[derive(Debug, Clone)]
struct Note {
    resource: usize,
    kind: &'static str,
    view: View,
    duration: u64,
    phone_number: String,
    extensions: Option<Value>,
}

#[derive(Debug, Clone)]
enum Outcome {
    Applied(Vec<Note>),
    Duplicate,
    Orphan,
    Unknown,
    Released,
    /// EventPartyChanged moved a resource onto a ConnID that another resource of the device holds: the
    /// spec does not say which of the two later events belong to, so the comparison ends here.
    Ambiguous,
}

#[derive(Default)]
struct ServerClock {
    highest: Option<u64>,
    last_time: Option<u64>,
}

#[derive(Default)]
struct Model {
    resources: Vec<Res>,
    servers: HashMap<String, ServerClock>,
    /// (Server, DN) of every EventQueued: queues (api.md). The model judges calls only; a queue's
    /// notifications are left out of the comparison, but an abandon it takes is no orphan.
    queues: std::collections::HashSet<(String, String)>,
}

fn text<'a>(event: &'a Value, key: &str) -> Option<&'a str> {
    event
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// ConnIDs compare as 16 lower-case hex digits.
fn conn(event: &Value, key: &str) -> Option<String> {
    text(event, key).map(|c| format!("{:0>16}", c.to_ascii_lowercase()))
}

fn is_observer(role: Option<&Value>) -> bool {
    matches!(role, Some(v) if v == "RoleObserver" || v == "Observer" || v == 10)
}

fn call_type_of(value: &Value) -> Option<&'static str> {
    let name = match value {
        Value::Number(n) => match n.as_u64()? {
            0 => "Unknown",
            1 => "Internal",
            2 => "Inbound",
            3 => "Outbound",
            4 => "Consult",
            _ => return None,
        },
        Value::String(s) => match s.trim_start_matches("CallType") {
            "Unknown" => "Unknown",
            "Internal" => "Internal",
            "Inbound" => "Inbound",
            "Outbound" => "Outbound",
            "Consult" => "Consult",
            _ => return None,
        },
        _ => return None,
    };
    Some(name)
}

/// events.md, Recording: the words of `record` and `GSIP_RECORD`.
fn directive(word: &str) -> Option<&'static str> {
    match word.to_ascii_lowercase().as_str() {
        "start" | "started" | "on" | "resume" | "resumed" => Some("Recording"),
        "pause" | "paused" => Some("Paused"),
        "stop" | "stopped" | "off" => Some("Stopped"),
        _ => None,
    }
}

fn event_time(event: &Value) -> Option<u64> {
    let secs = event.get("TimeinSecs")?.as_u64()?;
    let micros = event
        .get("TimeinuSecs")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Some(secs * 1_000_000 + micros)
}

fn device_uri(server: &str, dn: &str) -> String {
    let id = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("tserver:{server}/{dn}").as_bytes(),
    );
    format!("{BASE}/api/v2/devices/{id}")
}

impl Res {
    fn live(&self) -> bool {
        self.state != "Released"
    }

    fn view(&self, all: &[Res]) -> View {
        View {
            id: self.id.clone(),
            state: self.state.to_owned(),
            call_uuid: self.call_uuid.clone().unwrap_or_default(),
            conn_id: self.conn.clone(),
            previous_conn_id: self.previous_conn.clone(),
            device_uri: device_uri(&self.server, &self.dn),
            participants: self.participants.clone(),
            dnis: self.dnis.clone().unwrap_or_default(),
            call_type: self.call_type.to_owned(),
            capabilities: self.capabilities.iter().map(|c| (*c).to_owned()).collect(),
            user_data: self.user_data.clone(),
            mute: if self.muted { "On" } else { "Off" }.to_owned(),
            recording_state: self.recording.to_owned(),
            supervisor_listening_in: !self.observers.is_empty(),
            monitored_user_muted: self.monitored_muted,
            monitoring: self.monitoring,
            parent_id: self.parent.map(|p| all[p].id.clone()),
        }
    }

    fn new(server: &str, dn: &str, event: &Value, conn: String, time: Option<u64>) -> Res {
        Res {
            server: server.to_owned(),
            dn: dn.to_owned(),
            id: text(event, "CallUUID").map_or_else(|| conn.clone(), str::to_owned),
            state: "Established",
            call_uuid: None,
            conn,
            previous_conn: None,
            participants: Vec::new(),
            dnis: None,
            call_type: "Unknown",
            user_data: None,
            gsip: None,
            recording: "Stopped",
            muted: false,
            observers: Vec::new(),
            monitoring: false,
            monitored: None,
            monitored_muted: false,
            parent_conn: None,
            started: time,
            duration: 0,
            capabilities: Vec::new(),
            parent: None,
        }
    }

    fn add_participant(&mut self, number: &str) {
        if number != self.dn && !self.participants.iter().any(|p| p == number) {
            self.participants.push(number.to_owned());
        }
    }

    fn replace_participants(&mut self, number: &str) {
        self.participants.clear();
        self.add_participant(number);
    }

    /// Participant rules 1–5 (call-resource.md) and the observers of EventPartyAdded/Deleted.
    fn apply_parties(&mut self, kind: &str, event: &Value) {
        let other = text(event, "OtherDN");
        let third = match text(event, "ThirdPartyDN") {
            Some(dn) => Some((dn, is_observer(event.get("ThirdPartyDNRole")))),
            None => other.map(|dn| (dn, is_observer(event.get("OtherDNRole")))),
        };
        match kind {
            "EventRinging" | "EventDialing" => {
                if let Some(number) = other.or(text(event, "ANI")) {
                    self.replace_participants(number);
                }
            }
            "EventEstablished" => {
                if let Some(number) = other {
                    self.add_participant(number);
                }
            }
            "EventPartyChanged" => {
                if let Some(number) = other {
                    self.replace_participants(number);
                }
            }
            "EventPartyAdded" => match third {
                Some((dn, true)) if !self.observers.iter().any(|o| o == dn) => {
                    self.observers.push(dn.to_owned());
                }
                Some((_, true)) => {}
                Some((dn, false)) => self.add_participant(dn),
                None => {}
            },
            "EventPartyDeleted" => {
                if let Some((dn, _)) = third {
                    self.participants.retain(|p| p != dn);
                    self.observers.retain(|o| o != dn);
                }
            }
            _ => {}
        }
    }

    /// `monitoring`, then `mute` / `monitoredUserMuted` (events.md, Mute; docs/semantics.md).
    fn apply_monitoring(&mut self, kind: &str, event: &Value) {
        if !self.monitoring && is_observer(event.get("ThisDNRole")) {
            self.monitoring = true;
            self.monitored = text(event, "OtherDN").map(str::to_owned);
        }
        let muted = match kind {
            "EventMuteOn" => true,
            "EventMuteOff" => false,
            _ => return,
        };
        match text(event, "OtherDN") {
            None => self.muted = muted,
            Some(dn) if dn == self.dn => self.muted = muted,
            Some(dn) if self.monitoring && self.monitored.as_deref() == Some(dn) => {
                self.monitored_muted = muted;
            }
            Some(_) => {}
        }
    }

    fn apply_recording(&mut self, event: &Value) {
        if let Some(Value::Object(data)) = event.get("UserData") {
            self.user_data = (!data.is_empty()).then(|| Value::Object(data.clone()));
            let gsip = data
                .get("GSIP_RECORD")
                .and_then(Value::as_str)
                .map(|w| directive(w).unwrap_or("?"));
            if gsip != self.gsip {
                self.gsip = gsip;
                if let Some(state) = gsip.filter(|s| *s != "?") {
                    self.recording = state;
                }
            }
        }
        if let Some(state) = event
            .get("Extensions")
            .and_then(|e| e.get("record"))
            .and_then(Value::as_str)
            .and_then(directive)
        {
            self.recording = state;
        }
    }
}

/// The capabilities table of call-resource.md, with the consultation and monitoring rules.
fn capabilities(res: &Res, is_consultation: bool, is_parent: bool) -> Vec<&'static str> {
    let mut caps: Vec<&'static str> = match res.state {
        "Released" => return Vec::new(),
        "Established" if res.monitoring => {
            let mute = if res.monitored_muted {
                "UnmuteMonitoredUser"
            } else {
                "MuteMonitoredUser"
            };
            let mut caps = vec!["Hangup", mute];
            caps.extend(USER_DATA_OPS);
            return caps;
        }
        "Ringing" => vec!["Answer", "Hangup"],
        "Dialing" => vec!["Hangup", "SendDtmf"],
        "Established" => {
            let mut caps = vec!["Hangup", "Hold", "SendDtmf"];
            caps.extend(TRANSFER_CONFERENCE);
            caps.extend(match res.recording {
                "Recording" => &["PauseCallRecording", "StopCallRecording"][..],
                "Paused" => &["ResumeCallRecording", "StopCallRecording"][..],
                _ => &["StartCallRecording"][..],
            });
            caps
        }
        _ => {
            let mut caps = vec!["Hangup", "Retrieve"];
            caps.extend(TRANSFER_CONFERENCE);
            caps
        }
    };
    caps.extend(USER_DATA_OPS);
    // Both roles can hold at once in a consultation of a consultation: each rule applies.
    if is_parent && res.state == "Held" {
        caps.retain(|c| *c != "Retrieve");
        caps.extend(CONSULT_EXTRAS);
    }
    if is_consultation && matches!(res.state, "Dialing" | "Established") {
        caps.extend(CONSULT_EXTRAS);
    }
    CANONICAL
        .iter()
        .copied()
        .filter(|c| caps.contains(c))
        .collect()
}

fn creates(kind: &str) -> Option<&'static str> {
    match kind {
        "EventRinging" => Some("Ringing"),
        "EventDialing" | "EventNetworkReached" => Some("Dialing"),
        "EventEstablished" | "EventRetrieved" | "EventPartyChanged" => Some("Established"),
        "EventHeld" => Some("Held"),
        _ => None,
    }
}

fn state_after(kind: &str) -> Option<&'static str> {
    match kind {
        "EventPartyChanged" => None,
        "EventReleased" | "EventAbandoned" => Some("Released"),
        other => creates(other),
    }
}

/// The notification type for a change from `before` to `after` (call-resource.md's priority list).
fn change_kind(before: Option<&View>, after: &View) -> Option<&'static str> {
    let Some(before) = before else {
        return Some("StatusChange");
    };
    if before == after {
        None
    } else if before.state != after.state {
        Some("StatusChange")
    } else if before.participants != after.participants {
        Some("ParticipantsUpdated")
    } else if before.user_data != after.user_data {
        Some("AttachedDataChanged")
    } else if before.recording_state != after.recording_state {
        Some("CallRecordingStateChange")
    } else if before.monitored_user_muted != after.monitored_user_muted {
        Some("MonitoredUserMutedStateChange")
    } else {
        Some("StatePropertiesChanged")
    }
}

impl Model {
    fn device(&self, server: &str, dn: &str) -> Vec<usize> {
        (0..self.resources.len())
            .filter(|&i| self.resources[i].server == server && self.resources[i].dn == dn)
            .collect()
    }

    fn find(&self, device: &[usize], conn: &str) -> Option<usize> {
        device
            .iter()
            .copied()
            .find(|&i| self.resources[i].conn == conn)
    }

    /// Duplicates by EventSequenceNumber and the time of an event without one.
    fn admit(&mut self, server: &str, event: &Value) -> Option<Option<u64>> {
        let clock = self.servers.entry(server.to_owned()).or_default();
        if let Some(number) = event.get("EventSequenceNumber").and_then(Value::as_u64) {
            match clock.highest {
                Some(highest) if number <= highest && highest - number <= 100_000 => return None,
                _ => clock.highest = Some(number),
            }
        }
        let time = event_time(event).or(clock.last_time);
        clock.last_time = time;
        Some(time)
    }

    fn apply(&mut self, event: &Value) -> Outcome {
        let kind = event["event"].as_str().unwrap_or_default();
        if !TABLE.contains(&kind) {
            return Outcome::Unknown;
        }
        let server = text(event, "Server").unwrap_or("").to_owned();
        let Some(time) = self.admit(&server, event) else {
            return Outcome::Duplicate;
        };
        if matches!(
            kind,
            "EventLinkConnected" | "EventLinkDisconnected" | "EventUserEvent"
        ) {
            return Outcome::Applied(Vec::new());
        }
        let dn = text(event, "ThisDN").unwrap_or_default().to_owned();
        if kind == "EventQueued" {
            self.queues.insert((server.clone(), dn.clone()));
        }
        let at_queue = self.queues.contains(&(server.clone(), dn.clone()));
        let conn_id = conn(event, "ConnID").unwrap_or_default();
        let device = self.device(&server, &dn);
        let found = match (kind, conn(event, "PreviousConnID")) {
            ("EventPartyChanged", Some(previous)) => self.find(&device, &previous),
            _ => None,
        }
        .or_else(|| self.find(&device, &conn_id));
        let before: Vec<(usize, View)> = device
            .iter()
            .map(|&i| (i, self.resources[i].view(&self.resources)))
            .collect();
        let target = match found {
            Some(i) if !self.resources[i].live() => return Outcome::Released,
            Some(i) => i,
            None => {
                let Some(state) = creates(kind) else {
                    return match kind {
                        "EventAbandoned" if at_queue => Outcome::Applied(Vec::new()),
                        "EventReleased" | "EventAbandoned" => Outcome::Orphan,
                        _ => Outcome::Applied(Vec::new()),
                    };
                };
                let mut res = Res::new(&server, &dn, event, conn_id.clone(), time);
                res.state = state;
                self.resources.push(res);
                self.resources.len() - 1
            }
        };
        if kind == "EventPartyChanged" && self.resources[target].conn != conn_id {
            if device
                .iter()
                .any(|&i| i != target && self.resources[i].conn == conn_id)
            {
                return Outcome::Ambiguous;
            }
            let res = &mut self.resources[target];
            res.previous_conn = Some(std::mem::replace(&mut res.conn, conn_id.clone()));
        }
        self.apply_fields(target, kind, event, time);
        let mut device = device;
        if !device.contains(&target) {
            device.push(target);
        }
        self.derive(&device, target);
        Outcome::Applied(self.notes(&device, target, &before, event, time))
    }

    fn apply_fields(&mut self, target: usize, kind: &str, event: &Value, time: Option<u64>) {
        let res = &mut self.resources[target];
        if let Some(state) = state_after(kind) {
            res.state = state;
        }
        if let Some(uuid) = text(event, "CallUUID") {
            res.call_uuid = Some(uuid.to_owned());
        }
        if let Some(call_type) = event.get("CallType").and_then(call_type_of) {
            res.call_type = call_type;
        }
        if let Some(dnis) = text(event, "DNIS") {
            res.dnis = Some(dnis.to_owned());
        }
        let previous = (kind != "EventPartyChanged")
            .then(|| conn(event, "PreviousConnID"))
            .flatten();
        if let Some(parent) = conn(event, "TransferConnID").or(previous) {
            res.parent_conn = Some(parent);
        }
        res.apply_parties(kind, event);
        res.apply_monitoring(kind, event);
        res.apply_recording(event);
        if res.started.is_none() {
            res.started = time;
        }
    }

    /// Recomputes the parent link and capabilities of every live resource of the device, and of the
    /// event's own resource (its final version when the event released it). Other released resources
    /// are final and keep theirs.
    fn derive(&mut self, device: &[usize], target: usize) {
        let current: Vec<usize> = device
            .iter()
            .copied()
            .filter(|&i| i == target || self.resources[i].live())
            .collect();
        let parent_of = |i: usize, all: &[Res]| -> Option<usize> {
            let res = &all[i];
            if res.call_type != "Consult" {
                return None;
            }
            let parent_conn = res.parent_conn.as_deref()?;
            device
                .iter()
                .copied()
                .find(|&p| p != i && all[p].live() && all[p].conn == parent_conn)
        };
        let parents: Vec<(usize, Option<usize>)> = current
            .iter()
            .map(|&i| (i, parent_of(i, &self.resources)))
            .collect();
        for &(i, parent) in &parents {
            let is_parent = parents
                .iter()
                .any(|&(c, p)| p == Some(i) && self.resources[c].live());
            let caps = capabilities(&self.resources[i], parent.is_some(), is_parent);
            let res = &mut self.resources[i];
            res.parent = parent;
            res.capabilities = caps;
        }
    }

    fn notes(
        &mut self,
        device: &[usize],
        target: usize,
        before: &[(usize, View)],
        event: &Value,
        time: Option<u64>,
    ) -> Vec<Note> {
        let mut order = vec![target];
        order.extend(device.iter().copied().filter(|&i| i != target));
        let mut notes = Vec::new();
        for i in order {
            let old = before.iter().find(|(b, _)| *b == i).map(|(_, v)| v);
            let view = self.resources[i].view(&self.resources);
            let Some(kind) = change_kind(old, &view) else {
                continue;
            };
            let res = &mut self.resources[i];
            if let (Some(now), Some(started)) = (time, res.started) {
                res.duration = now.saturating_sub(started) / 1_000_000;
            }
            notes.push(Note {
                resource: i,
                kind,
                view,
                duration: res.duration,
                phone_number: res.dn.clone(),
                extensions: event.get("Extensions").cloned(),
            });
        }
        notes
    }
}

// ------------------------------------------------------------------------------------------------
// Reading the reducer's output
// ------------------------------------------------------------------------------------------------

fn str_of(call: &Value, key: &str) -> String {
    call[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is a string in {call}"))
        .to_owned()
}

fn bool_of(call: &Value, key: &str) -> bool {
    call[key]
        .as_bool()
        .unwrap_or_else(|| panic!("{key} is a bool in {call}"))
}

/// The view of a call resource as the reducer wrote it; checks the members that follow from others.
fn view_of(call: &Value) -> Result<(View, u64), TestCaseError> {
    let id = str_of(call, "id");
    prop_assert_eq!(str_of(call, "uri"), format!("{BASE}/api/v2/me/calls/{id}"));
    prop_assert_eq!(str_of(call, "path"), format!("/calls/{id}"));
    let parent_id = match (call.get("parentCallUri"), call.get("parentCallPath")) {
        (None, None) => None,
        (Some(uri), Some(path)) => {
            let parent = path
                .as_str()
                .and_then(|p| p.strip_prefix("/calls/"))
                .unwrap_or_default()
                .to_owned();
            let want = format!("{BASE}/api/v2/me/calls/{parent}");
            prop_assert_eq!(uri.as_str(), Some(want.as_str()));
            Some(parent)
        }
        _ => return Err(TestCaseError::fail(format!("half a parent link: {call}"))),
    };
    let known = [
        "id",
        "state",
        "callUuid",
        "connId",
        "previousConnId",
        "deviceUri",
        "participants",
        "dnis",
        "callType",
        "capabilities",
        "userData",
        "duration",
        "mute",
        "recordingState",
        "supervisorListeningIn",
        "monitoredUserMuted",
        "monitoring",
        "parentCallUri",
        "parentCallPath",
        "uri",
        "path",
    ];
    for key in call.as_object().map(Map::keys).into_iter().flatten() {
        prop_assert!(known.contains(&key.as_str()), "unknown member {key}");
    }
    let participants = call["participants"]
        .as_array()
        .map(|list| list.iter().map(|p| str_of(p, "phoneNumber")).collect())
        .unwrap_or_default();
    let capabilities = call["capabilities"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|c| c.as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default();
    let duration = str_of(call, "duration").parse().unwrap_or(u64::MAX);
    Ok((
        View {
            id,
            state: str_of(call, "state"),
            call_uuid: str_of(call, "callUuid"),
            conn_id: str_of(call, "connId"),
            previous_conn_id: call
                .get("previousConnId")
                .map(|_| str_of(call, "previousConnId")),
            device_uri: str_of(call, "deviceUri"),
            participants,
            dnis: str_of(call, "dnis"),
            call_type: str_of(call, "callType"),
            capabilities,
            user_data: call.get("userData").cloned(),
            mute: str_of(call, "mute"),
            recording_state: str_of(call, "recordingState"),
            supervisor_listening_in: bool_of(call, "supervisorListeningIn"),
            monitored_user_muted: bool_of(call, "monitoredUserMuted"),
            monitoring: bool_of(call, "monitoring"),
            parent_id,
        },
        duration,
    ))
}

// ------------------------------------------------------------------------------------------------
// Running both and comparing
// ------------------------------------------------------------------------------------------------

/// Folds `lines` with the reducer and the model; fails at the first difference, naming the line.
fn check(lines: &[String]) -> Result<(), TestCaseError> {
    let mut reducer = Fold::default();
    let mut model = Model::default();
    let mut out = Notifications::default();
    // The reducer's call numbers of the model's resources.
    let mut numbers: Vec<u64> = Vec::new();
    for (at, line) in lines.iter().enumerate() {
        let event: Value = serde_json::from_str(line).expect("generated JSON");
        out.clear();
        let disposition = reducer
            .apply_line(line.as_bytes(), &mut out)
            .map_err(|e| TestCaseError::fail(format!("line {at} rejected: {e}: {line}")))?;
        let context = format!("line {at}: {line}");
        let expected = model.apply(&event);
        let notes = match expected {
            Outcome::Ambiguous => return Ok(()),
            Outcome::Applied(notes) => {
                prop_assert_eq!(disposition, Disposition::Applied, "{}", context);
                notes
            }
            Outcome::Duplicate => {
                prop_assert_eq!(disposition, Disposition::Duplicate, "{}", context);
                Vec::new()
            }
            Outcome::Orphan => {
                prop_assert_eq!(disposition, Disposition::Orphan, "{}", context);
                Vec::new()
            }
            Outcome::Unknown => {
                let want = Disposition::Ignored(IgnoreReason::UnknownEvent);
                prop_assert_eq!(disposition, want, "{}", context);
                Vec::new()
            }
            Outcome::Released => {
                let want = Disposition::Ignored(IgnoreReason::Released);
                prop_assert_eq!(disposition, want, "{}", context);
                Vec::new()
            }
        };
        let got: Vec<_> = out
            .iter()
            .filter(|note| note.topic != callgate::reduce::Topic::Queues)
            .collect();
        prop_assert_eq!(
            got.len(),
            notes.len(),
            "{}\nreducer: {:?}\nmodel: {:?}",
            context,
            got.iter().map(|n| n.members.to_owned()).collect::<Vec<_>>(),
            notes
        );
        for (note, want) in got.iter().zip(&notes) {
            if want.resource == numbers.len() {
                prop_assert!(
                    !numbers.contains(&note.resource),
                    "{}: a new resource reuses a call number",
                    context
                );
                numbers.push(note.resource);
            }
            prop_assert_eq!(
                note.resource,
                numbers[want.resource],
                "{}: which resource",
                context
            );
            let notification: Value = serde_json::from_str(&format!("{{{}}}", note.members))
                .map_err(|e| TestCaseError::fail(format!("{context}: notification JSON: {e}")))?;
            let data = &notification["data"];
            prop_assert_eq!(&notification["channel"], "/v2/me/calls");
            prop_assert_eq!(&data["messageType"], "CallStateChangeMessage");
            prop_assert_eq!(
                data["notificationType"].as_str(),
                Some(want.kind),
                "{}",
                context
            );
            prop_assert_eq!(
                data["phoneNumber"].as_str(),
                Some(want.phone_number.as_str())
            );
            prop_assert_eq!(
                data.get("extensions"),
                want.extensions.as_ref(),
                "{}",
                context
            );
            let (view, duration) = view_of(&data["call"])?;
            prop_assert_eq!(&view, &want.view, "{}", context);
            prop_assert_eq!(duration, want.duration, "{}: duration", context);
        }
    }
    // Every resource's last version, as the reducer holds it.
    prop_assert_eq!(reducer.reducer().len(), model.resources.len());
    for (i, &number) in numbers.iter().enumerate() {
        let Some(view) = reducer.reducer().view(number) else {
            return Err(TestCaseError::fail(format!("resource {number} vanished")));
        };
        let mut json = String::new();
        view.write(&mut json);
        let call: Value = serde_json::from_str(&json).expect("resource JSON");
        let (got, _) = view_of(&call)?;
        prop_assert_eq!(got, model.resources[i].view(&model.resources));
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Random events from a small universe
// ------------------------------------------------------------------------------------------------

fn maybe<T: Clone + std::fmt::Debug + 'static>(items: &'static [T]) -> BoxedStrategy<Option<T>> {
    prop_oneof![1 => Just(None), 1 => proptest::sample::select(items).prop_map(Some)].boxed()
}

fn maybe_value(items: Vec<Value>) -> BoxedStrategy<Option<Value>> {
    prop_oneof![1 => Just(None), 1 => proptest::sample::select(items).prop_map(Some)].boxed()
}

/// The table's events (EventLinkConnected apart: it acts as EventLinkDisconnected does), and one outside
/// the table.
fn kinds() -> Vec<&'static str> {
    let mut kinds: Vec<&str> = TABLE
        .into_iter()
        .filter(|k| *k != "EventLinkConnected")
        .collect();
    kinds.push("EventRouteRequest");
    kinds
}
const THIS_DNS: [&str; 3] = ["7001", "7002", "7101"];
const CONNS: [&str; 4] = ["a1", "a2", "A3", "00b4"];
const PARTIES: [&str; 5] = ["7001", "7002", "7101", "+14155550100", "5551234"];

fn arb_event() -> impl Strategy<Value = Value> {
    (
        (
            proptest::sample::select(kinds()),
            proptest::sample::select(&THIS_DNS[..]),
            proptest::sample::select(&CONNS[..]),
            maybe(&["SIP_B"]),
        ),
        (
            maybe(&CONNS),
            maybe(&CONNS),
            maybe(&["U1", "U2"]),
            maybe_value(vec![
                json!(1),
                json!(2),
                json!(4),
                json!("Consult"),
                json!("CallTypeInternal"),
            ]),
        ),
        (
            maybe(&PARTIES),
            maybe(&PARTIES),
            maybe(&["RoleObserver", "RoleDestination"]),
            maybe(&["RoleObserver", "RoleAddedBy"]),
            maybe_value(vec![json!("RoleObserver"), json!(10), json!("Origination")]),
        ),
        (
            maybe(&["+442079460958"]),
            maybe(&["8001", "8002"]),
            maybe(&["ON", "PAUSED", "OFF", "-"]),
            maybe(&["A", "B"]),
            maybe(&["start", "paused", "stop", "resume", "x", "-"]),
        ),
    )
        .prop_map(
            |(
                (kind, dn, conn, server),
                (previous, transfer, uuid, call_type),
                (other, third, this_role, third_role, other_role),
                (ani, dnis, gsip, segment, record),
            )| {
                let mut e = Map::new();
                e.insert("event".into(), kind.into());
                e.insert("ThisDN".into(), dn.into());
                e.insert("ConnID".into(), conn.into());
                let mut put = |key: &str, value: Option<Value>| {
                    if let Some(value) = value {
                        e.insert(key.into(), value);
                    }
                };
                put("Server", server.map(Value::from));
                put("PreviousConnID", previous.map(Value::from));
                put("TransferConnID", transfer.map(Value::from));
                put("CallUUID", uuid.map(Value::from));
                put("CallType", call_type);
                put("OtherDN", other.map(Value::from));
                put("ThirdPartyDN", third.map(Value::from));
                put("ThisDNRole", this_role.map(Value::from));
                put("ThirdPartyDNRole", third_role.map(Value::from));
                put("OtherDNRole", other_role);
                put("ANI", ani.map(Value::from));
                put("DNIS", dnis.map(Value::from));
                if gsip.is_some() || segment.is_some() {
                    let mut data = Map::new();
                    if let Some(g) = gsip.filter(|g| *g != "-") {
                        data.insert("GSIP_RECORD".into(), g.into());
                    }
                    if let Some(s) = segment {
                        data.insert("Segment".into(), s.into());
                    }
                    put("UserData", Some(Value::Object(data)));
                }
                match record {
                    Some("-") => put("Extensions", Some(json!({"BusinessCall": 1}))),
                    Some(word) => put("Extensions", Some(json!({ "record": word }))),
                    None => {}
                }
                Value::Object(e)
            },
        )
}

/// Numbers and times for a stream: mostly increasing, with resent numbers, restarts far below, events
/// without a number and events without a time.
fn number_and_time(events: Vec<(Value, u8, u8)>) -> Vec<String> {
    let mut seq = 500_000u64;
    let mut time = 1_763_900_000_000_000u64;
    let mut sent: Vec<Value> = Vec::new();
    let mut lines = Vec::new();
    for (mut event, numbering, step) in events {
        match numbering {
            0 if !sent.is_empty() => {
                // Resend an event already sent, as a reconnecting T-Server does.
                let again = sent[usize::from(step) % sent.len()].clone();
                lines.push(again.to_string());
                continue;
            }
            1 => seq = seq.saturating_sub(150_000 + u64::from(step)),
            2 => {}
            _ => {
                seq += 1;
                event["EventSequenceNumber"] = seq.into();
            }
        }
        time += u64::from(step) * 250_000;
        if step % 7 != 0 {
            event["TimeinSecs"] = (time / 1_000_000).into();
            event["TimeinuSecs"] = (time % 1_000_000).into();
        }
        sent.push(event.clone());
        lines.push(event.to_string());
    }
    lines
}

fn arb_random_stream() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(
        (
            arb_event(),
            prop_oneof![1 => Just(0u8), 1 => Just(1), 2 => Just(2), 16 => Just(3)],
            any::<u8>(),
        ),
        1..80,
    )
    .prop_map(number_and_time)
}

// ------------------------------------------------------------------------------------------------
// Call flows
// ------------------------------------------------------------------------------------------------

const AGENTS: [&str; 3] = ["7001", "7002", "7003"];
const SUPERVISOR: &str = "7101";
const CUSTOMERS: [&str; 3] = ["+14155550100", "+442079460958", "5551234"];

/// One party's side of a call in a flow.
#[derive(Clone, Debug)]
struct Leg {
    dn: String,
    state: &'static str,
    role: Option<&'static str>,
}

#[derive(Clone, Debug)]
struct FlowCall {
    conn: String,
    uuid: String,
    call_type: u8,
    parent: Option<String>,
    customer: Option<String>,
    legs: Vec<Leg>,
}

/// Builds the events of a contact center's calls, one step at a time.
#[derive(Default)]
struct Flow {
    calls: Vec<FlowCall>,
    next: u32,
    seq: u64,
    time: u64,
    lines: Vec<String>,
}

#[derive(Clone, Debug)]
enum Step {
    Inbound(u8, u8),
    Answer(u8),
    Hold(u8),
    Retrieve(u8),
    Consult(u8, u8, bool),
    CompleteTransfer(u8),
    CompleteConference(u8),
    Swap(u8),
    Hangup(u8),
    Monitor(u8),
    Mute(u8, u8, bool),
    Record(u8, u8),
    UserData(u8, u8),
    Restart,
    Resend(u8),
    Untimed,
}

fn arb_step() -> impl Strategy<Value = Step> {
    let n = || any::<u8>();
    prop_oneof![
        4 => (n(), n()).prop_map(|(a, b)| Step::Inbound(a, b)),
        4 => n().prop_map(Step::Answer),
        3 => n().prop_map(Step::Hold),
        2 => n().prop_map(Step::Retrieve),
        4 => (n(), n(), any::<bool>()).prop_map(|(a, b, t)| Step::Consult(a, b, t)),
        2 => n().prop_map(Step::CompleteTransfer),
        2 => n().prop_map(Step::CompleteConference),
        2 => n().prop_map(Step::Swap),
        2 => n().prop_map(Step::Hangup),
        2 => n().prop_map(Step::Monitor),
        3 => (n(), n(), any::<bool>()).prop_map(|(a, b, on)| Step::Mute(a, b, on)),
        2 => (n(), n()).prop_map(|(a, b)| Step::Record(a, b)),
        1 => (n(), n()).prop_map(|(a, b)| Step::UserData(a, b)),
        1 => Just(Step::Restart),
        1 => n().prop_map(Step::Resend),
        1 => Just(Step::Untimed),
    ]
}

impl Flow {
    fn pick(&self, n: u8, fit: impl Fn(&FlowCall) -> bool) -> Option<usize> {
        let fitting: Vec<usize> = (0..self.calls.len())
            .filter(|&i| fit(&self.calls[i]))
            .collect();
        (!fitting.is_empty()).then(|| fitting[usize::from(n) % fitting.len()])
    }

    fn leg_in(&self, call: usize, states: &[&str]) -> Option<usize> {
        self.calls[call]
            .legs
            .iter()
            .position(|l| states.contains(&l.state) && l.role.is_none())
    }

    /// One event of `call` at the leg `leg`, moving that leg to `state`.
    fn emit(&mut self, kind: &str, call: usize, leg: usize, extra: Value) {
        self.seq += 1;
        self.time += 1_500_000;
        let c = &self.calls[call];
        let l = &c.legs[leg];
        let mut e = json!({
            "event": kind, "EventSequenceNumber": self.seq,
            "TimeinSecs": self.time / 1_000_000, "TimeinuSecs": self.time % 1_000_000,
            "ConnID": c.conn, "CallUUID": c.uuid, "CallType": c.call_type, "ThisDN": l.dn,
        });
        if let Some(parent) = &c.parent {
            e["TransferConnID"] = parent.clone().into();
        }
        if let Some(role) = l.role {
            e["ThisDNRole"] = role.into();
        }
        let other = c
            .legs
            .iter()
            .find(|o| o.dn != l.dn && o.role.is_none() && o.state != "Released")
            .map(|o| o.dn.clone())
            .or_else(|| c.customer.clone());
        if let Some(other) = other {
            e["OtherDN"] = other.into();
        }
        if let (Value::Object(e), Value::Object(extra)) = (&mut e, extra) {
            // A null in `extra` removes the member (an untimed event, a mute copy without OtherDN).
            for (key, value) in extra {
                if value.is_null() {
                    e.remove(&key);
                } else {
                    e.insert(key, value);
                }
            }
        }
        if let Some(state) = state_after(kind) {
            self.calls[call].legs[leg].state = state;
        }
        self.lines.push(e.to_string());
    }

    fn new_call(
        &mut self,
        call_type: u8,
        customer: Option<String>,
        parent: Option<String>,
    ) -> usize {
        self.next += 1;
        self.calls.push(FlowCall {
            conn: format!("{:016x}", 0x0006_0000_0000_0000u64 + u64::from(self.next)),
            uuid: format!("UUID{:04}", self.next),
            call_type,
            parent,
            customer,
            legs: Vec::new(),
        });
        self.calls.len() - 1
    }

    fn add_leg(&mut self, call: usize, dn: &str, role: Option<&'static str>) -> usize {
        self.calls[call].legs.push(Leg {
            dn: dn.to_owned(),
            state: "None",
            role,
        });
        self.calls[call].legs.len() - 1
    }

    fn agent_free(&self, dn: &str) -> bool {
        !self
            .calls
            .iter()
            .any(|c| c.legs.iter().any(|l| l.dn == dn && l.state != "Released"))
    }

    fn step(&mut self, step: Step) {
        match step {
            Step::Inbound(a, b) => {
                let agent = AGENTS[usize::from(a) % AGENTS.len()];
                let customer = CUSTOMERS[usize::from(b) % CUSTOMERS.len()].to_owned();
                let call = self.new_call(2, Some(customer), None);
                let leg = self.add_leg(call, agent, None);
                self.emit("EventRinging", call, leg, json!({"DNIS": "8001"}));
            }
            Step::Answer(n) => {
                if let Some(call) = self.pick(n, |c| c.legs.iter().any(|l| l.state == "Ringing")) {
                    let leg = self.leg_in(call, &["Ringing"]).unwrap_or(0);
                    self.emit("EventEstablished", call, leg, json!({}));
                }
            }
            Step::Hold(n) | Step::Retrieve(n) => {
                let (from, kind) = match step {
                    Step::Hold(_) => ("Established", "EventHeld"),
                    _ => ("Held", "EventRetrieved"),
                };
                if let Some(call) = self.pick(n, |c| c.legs.iter().any(|l| l.state == from)) {
                    let leg = self.leg_in(call, &[from]).unwrap_or(0);
                    self.emit(kind, call, leg, json!({}));
                }
            }
            Step::Consult(n, t, by_transfer_conn) => self.consult(n, t, by_transfer_conn),
            Step::CompleteTransfer(n) | Step::CompleteConference(n) => {
                let conference = matches!(step, Step::CompleteConference(_));
                self.complete(n, conference);
            }
            Step::Swap(n) => {
                let held = self.pick(n, |c| c.legs.iter().any(|l| l.state == "Held"));
                if let Some(call) = held {
                    let leg = self.leg_in(call, &["Held"]).unwrap_or(0);
                    let dn = self.calls[call].legs[leg].dn.clone();
                    let other = (0..self.calls.len()).find(|&o| {
                        o != call
                            && self.calls[o]
                                .legs
                                .iter()
                                .any(|l| l.dn == dn && l.state == "Established")
                    });
                    if let Some(other) = other {
                        let other_leg = self.calls[other]
                            .legs
                            .iter()
                            .position(|l| l.dn == dn)
                            .unwrap_or(0);
                        self.emit("EventHeld", other, other_leg, json!({}));
                        self.emit("EventRetrieved", call, leg, json!({}));
                    }
                }
            }
            Step::Hangup(n) => {
                if let Some(call) = self.pick(n, |c| c.legs.iter().any(|l| l.state != "Released")) {
                    for leg in 0..self.calls[call].legs.len() {
                        if self.calls[call].legs[leg].state != "Released" {
                            self.emit("EventReleased", call, leg, json!({"CallState": 5}));
                        }
                    }
                }
            }
            Step::Monitor(n) => {
                let watched = |c: &FlowCall| {
                    c.legs
                        .iter()
                        .any(|l| l.state == "Established" && l.role.is_none())
                        && !c.legs.iter().any(|l| l.role.is_some())
                };
                if self.agent_free(SUPERVISOR)
                    && let Some(call) = self.pick(n, watched)
                {
                    let agent_leg = self.leg_in(call, &["Established"]).unwrap_or(0);
                    let agent = self.calls[call].legs[agent_leg].dn.clone();
                    let sup = self.add_leg(call, SUPERVISOR, Some("RoleObserver"));
                    self.emit("EventRinging", call, sup, json!({"OtherDN": agent}));
                    self.emit("EventEstablished", call, sup, json!({"OtherDN": agent}));
                    let added =
                        json!({"ThirdPartyDN": SUPERVISOR, "ThirdPartyDNRole": "RoleObserver"});
                    self.emit("EventPartyAdded", call, agent_leg, added);
                }
            }
            Step::Mute(n, who, on) => self.mute(n, who, on),
            Step::Record(n, how) => {
                if let Some(call) =
                    self.pick(n, |c| c.legs.iter().any(|l| l.state == "Established"))
                {
                    let words = ["start", "pause", "resumed", "stop", "ON", "PAUSED", "OFF"];
                    let word = words[usize::from(how) % words.len()];
                    for leg in 0..self.calls[call].legs.len() {
                        if self.calls[call].legs[leg].state == "Released" {
                            continue;
                        }
                        if word.chars().all(|c| c.is_ascii_uppercase()) {
                            let data =
                                json!({"UserData": {"GSIP_RECORD": word, "Segment": "Gold"}});
                            self.emit("EventAttachedDataChanged", call, leg, data);
                        } else {
                            let ext = json!({"Extensions": {"record": word}});
                            self.emit("EventPrivateInfo", call, leg, ext);
                        }
                    }
                }
            }
            Step::UserData(n, value) => {
                if let Some(call) = self.pick(n, |c| c.legs.iter().any(|l| l.state != "Released")) {
                    let leg = self.leg_in(call, &["Ringing", "Established", "Held", "Dialing"]);
                    let data = match value % 3 {
                        0 => json!({}),
                        1 => json!({"AccountNumber": "12345678"}),
                        _ => json!({"AccountNumber": "12345678", "Segment": {"Tier": 2}}),
                    };
                    self.emit(
                        "EventCallDataChanged",
                        call,
                        leg.unwrap_or(0),
                        json!({"UserData": data}),
                    );
                }
            }
            Step::Restart => self.seq = self.seq.saturating_sub(200_000),
            Step::Resend(k) => {
                let k = usize::from(k % 4) + 1;
                let from = self.lines.len().saturating_sub(k);
                let again: Vec<String> = self.lines[from..].to_vec();
                self.lines.extend(again);
            }
            Step::Untimed => {
                if let Some(call) =
                    self.pick(0, |c| c.legs.iter().any(|l| l.state == "Established"))
                {
                    let leg = self.leg_in(call, &["Established"]).unwrap_or(0);
                    self.emit(
                        "EventAttachedDataChanged",
                        call,
                        leg,
                        json!({"UserData": {"Note": "x"}, "TimeinSecs": null, "TimeinuSecs": null}),
                    );
                }
            }
        }
    }

    /// The agent on call H (held first) dials another agent on a consultation call C.
    fn consult(&mut self, n: u8, t: u8, by_transfer_conn: bool) {
        let Some(parent) = self.pick(n, |c| {
            c.legs
                .iter()
                .any(|l| matches!(l.state, "Established" | "Held") && l.role.is_none())
        }) else {
            return;
        };
        let leg = self.leg_in(parent, &["Established", "Held"]).unwrap_or(0);
        let agent = self.calls[parent].legs[leg].dn.clone();
        let target = AGENTS[usize::from(t) % AGENTS.len()];
        if target == agent || !self.agent_free(target) {
            return;
        }
        if self.calls[parent].legs[leg].state == "Established" {
            self.emit("EventHeld", parent, leg, json!({}));
        }
        let parent_conn = self.calls[parent].conn.clone();
        let customer = self.calls[parent].customer.clone();
        let call = self.new_call(4, customer, Some(parent_conn.clone()));
        if !by_transfer_conn {
            self.calls[call].parent = None;
        }
        let link = if by_transfer_conn {
            json!({})
        } else {
            json!({ "PreviousConnID": parent_conn })
        };
        let from = self.add_leg(call, &agent, None);
        let to = self.add_leg(call, target, None);
        self.emit("EventDialing", call, from, link.clone());
        self.emit("EventRinging", call, to, json!({}));
        self.emit("EventEstablished", call, to, json!({}));
        self.emit("EventEstablished", call, from, link);
    }

    /// Completes a consultation: the consulting agent leaves both calls (transfer) or stays on the main
    /// call with the target added (conference); the target's call takes the main call's ConnID.
    fn complete(&mut self, n: u8, conference: bool) {
        let Some(call) = self.pick(n, |c| {
            c.call_type == 4 && c.legs.len() >= 2 && c.legs.iter().all(|l| l.state == "Established")
        }) else {
            return;
        };
        let agent = self.calls[call].legs[0].dn.clone();
        let parent_conn = self.calls[call].parent.clone().or_else(|| {
            // Linked by PreviousConnID: the agent's held call.
            self.calls
                .iter()
                .find(|c| c.legs.iter().any(|l| l.dn == agent && l.state == "Held"))
                .map(|c| c.conn.clone())
        });
        let Some(parent) = parent_conn.and_then(|p| self.calls.iter().position(|c| c.conn == p))
        else {
            return;
        };
        let Some(parent_leg) = self.calls[parent]
            .legs
            .iter()
            .position(|l| l.dn == agent && l.state == "Held")
        else {
            return;
        };
        let target = self.calls[call].legs[1].dn.clone();
        let customer = self.calls[parent]
            .customer
            .clone()
            .unwrap_or_else(|| agent.clone());
        let consult_conn = self.calls[call].conn.clone();
        self.emit("EventReleased", call, 0, json!({"CallState": 1}));
        // The target's leg moves to the main call under its ConnID.
        self.calls[call].legs[1].state = "Released";
        self.calls[parent].legs.push(Leg {
            dn: target.clone(),
            state: "Established",
            role: None,
        });
        let moved = self.calls[parent].legs.len() - 1;
        let changed = json!({"PreviousConnID": consult_conn, "OtherDN": customer, "CallType": 2});
        if conference {
            self.emit("EventRetrieved", parent, parent_leg, json!({}));
            let added = json!({"ThirdPartyDN": target, "ThirdPartyDNRole": "RoleConferenceMember"});
            self.emit("EventPartyAdded", parent, parent_leg, added);
            self.emit("EventPartyChanged", parent, moved, changed);
        } else {
            self.emit("EventReleased", parent, parent_leg, json!({"CallState": 1}));
            self.emit("EventPartyChanged", parent, moved, changed);
        }
    }

    /// Mute or unmute one party of a call; every party's device gets its copy with OtherDN = that party.
    fn mute(&mut self, n: u8, who: u8, on: bool) {
        let Some(call) = self.pick(n, |c| c.legs.iter().any(|l| l.state == "Established")) else {
            return;
        };
        let mut parties: Vec<String> = self.calls[call]
            .legs
            .iter()
            .filter(|l| l.state != "Released")
            .map(|l| l.dn.clone())
            .collect();
        parties.extend(self.calls[call].customer.clone());
        let muted = parties[usize::from(who) % parties.len()].clone();
        let kind = if on { "EventMuteOn" } else { "EventMuteOff" };
        for leg in 0..self.calls[call].legs.len() {
            if self.calls[call].legs[leg].state != "Released" {
                let own = self.calls[call].legs[leg].dn == muted;
                // The muted party's own copy sometimes carries no OtherDN at all.
                let extra = if own && who.is_multiple_of(2) {
                    json!({"OtherDN": null})
                } else {
                    json!({ "OtherDN": muted })
                };
                self.emit(kind, call, leg, extra);
            }
        }
    }
}

fn arb_flow() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(arb_step(), 1..60).prop_map(|steps| {
        let mut flow = Flow {
            seq: 1_000_000,
            time: 1_763_900_000_000_000,
            ..Flow::default()
        };
        for step in steps {
            flow.step(step);
        }
        flow.lines
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: support::cases(600), ..ProptestConfig::default() })]

    /// Random events over three devices, four ConnIDs and two T-Servers.
    #[test]
    fn random_events_fold_as_the_model_says(lines in arb_random_stream()) {
        check(&lines)?;
    }

    /// Contact-center call flows: consultations (of consultations), swaps, transfers, conferences,
    /// monitoring, mutes, recording, restarts and resent events.
    #[test]
    fn call_flows_fold_as_the_model_says(lines in arb_flow()) {
        check(&lines)?;
    }
}

/// The model itself against a few rules stated in the spec, so that a model bug cannot hide a reducer
/// bug by agreeing with it.
#[test]
fn the_model_follows_the_spec_on_a_consultation() {
    let lines: Vec<String> = [
        json!({"event":"EventEstablished","ConnID":"1","CallUUID":"H","CallType":2,"ThisDN":"7001","OtherDN":"+14155550100","TimeinSecs":10}),
        json!({"event":"EventHeld","ConnID":"1","ThisDN":"7001","TimeinSecs":11}),
        json!({"event":"EventDialing","ConnID":"2","CallUUID":"C","CallType":4,"TransferConnID":"1","ThisDN":"7001","OtherDN":"7002","TimeinSecs":12}),
        json!({"event":"EventHeld","ConnID":"2","ThisDN":"7001","TimeinSecs":13}),
    ]
    .iter()
    .map(Value::to_string)
    .collect();
    let mut model = Model::default();
    let outcomes: Vec<Outcome> = lines
        .iter()
        .map(|l| model.apply(&serde_json::from_str(l).expect("JSON")))
        .collect();
    let Outcome::Applied(notes) = &outcomes[2] else {
        panic!("applied")
    };
    // C is created with the link, then H loses Retrieve and gains the completion operations.
    assert_eq!(notes.len(), 2);
    assert_eq!(notes[0].view.parent_id.as_deref(), Some("H"));
    assert_eq!(notes[1].kind, "StatePropertiesChanged");
    assert!(notes[1].view.capabilities.contains(&"SwapCalls".to_owned()));
    assert!(!notes[1].view.capabilities.contains(&"Retrieve".to_owned()));
    // A held consultation has the ordinary Held capabilities.
    let held = &model.resources[1];
    assert_eq!(held.state, "Held");
    assert!(held.capabilities.contains(&"Retrieve"));
    assert!(!held.capabilities.contains(&"SwapCalls"));
    check(&lines).expect("the reducer agrees");
}
