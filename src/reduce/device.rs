//! Device resources (gws.md, "Device resources"): what device events say about one DN (agent state,
//! do-not-disturb, forwarding, supervisor monitoring, service) and its JSON form.
//!
//! The state is a plain value folded from events; [`DeviceDoc`] writes it with the DN's identity. REST
//! renders a device that has had no device event (a user's DN, a DN with calls) from the default state
//! with the same writer, so every door shows one document for one state.

use crate::event::{AgentWorkMode, Event, EventKind, MonitorScope};
use crate::json::{push_json_escaped, write_json_str};

/// The agent's state at a device (`userState.state`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AgentState {
    /// No agent logged in (the default; EventAgentLogout).
    #[default]
    LoggedOut,
    /// Ready for calls.
    Ready,
    /// Logged in but not taking calls: the work mode and the reason the event gave.
    NotReady {
        /// `AgentWorkMode` of the event (`Unknown` when absent).
        mode: AgentWorkMode,
        /// `ReasonCode` of the event's `Reasons` (or `Extensions`).
        reason: Option<Box<str>>,
    },
}

/// A supervisor's monitoring of an agent (`supervisorMonitoringState`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Monitoring {
    /// One call or all calls.
    pub scope: MonitorScope,
    /// The monitored DN (OtherDN of EventMonitoringNextCall), on the supervisor's T-Server.
    pub target_dn: Option<Box<str>>,
}

/// Every field of a device resource that events change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceState {
    /// Between EventDNOutOfService and EventDNBackInService.
    pub out_of_service: bool,
    /// The agent's state.
    pub agent: AgentState,
    /// AgentID of the last EventAgentLogin, while logged in.
    pub agent_id: Option<Box<str>>,
    /// Do-not-disturb.
    pub dnd: bool,
    /// Where calls are forwarded (EventForwardSet's OtherDN).
    pub forward_to: Option<Box<str>>,
    /// Whether a supervisor works at the device: it has started monitoring once (events carry no role, so
    /// the device's own behaviour is what tells).
    pub supervisor: bool,
    /// The monitoring in force.
    pub monitoring: Option<Monitoring>,
}

impl DeviceState {
    /// Applies a device event (one for which [`EventKind::is_device_event`] holds); returns whether any
    /// field changed. Other events change nothing.
    pub fn apply(&mut self, event: &Event<'_>) -> bool {
        let other = || event.other_dn.as_deref().map(Box::from);
        match event.kind {
            EventKind::AgentLogin => {
                let agent = match event.work_mode {
                    Some(AgentWorkMode::ManualIn | AgentWorkMode::AutoIn) => AgentState::Ready,
                    mode => AgentState::NotReady {
                        mode: mode.unwrap_or(AgentWorkMode::Unknown),
                        reason: event.reason.clone(),
                    },
                };
                let agent_id = event.agent_id.as_deref().map(Box::from);
                set(&mut self.agent, agent) | set(&mut self.agent_id, agent_id)
            }
            EventKind::AgentLogout => {
                set(&mut self.agent, AgentState::LoggedOut) | set(&mut self.agent_id, None)
            }
            EventKind::AgentReady => set(&mut self.agent, AgentState::Ready),
            EventKind::AgentNotReady => set(
                &mut self.agent,
                AgentState::NotReady {
                    mode: event.work_mode.unwrap_or(AgentWorkMode::Unknown),
                    reason: event.reason.clone(),
                },
            ),
            EventKind::DndOn => set(&mut self.dnd, true),
            EventKind::DndOff => set(&mut self.dnd, false),
            EventKind::ForwardSet => set(&mut self.forward_to, other()),
            EventKind::ForwardCancel => set(&mut self.forward_to, None),
            EventKind::MonitoringNextCall => {
                let monitoring = Monitoring {
                    scope: event.monitor_scope.unwrap_or(MonitorScope::OneCall),
                    target_dn: other(),
                };
                set(&mut self.supervisor, true) | set(&mut self.monitoring, Some(monitoring))
            }
            EventKind::MonitoringCancelled => set(&mut self.monitoring, None),
            EventKind::DnOutOfService => set(&mut self.out_of_service, true),
            EventKind::DnBackInService => set(&mut self.out_of_service, false),
            _ => false,
        }
    }

    /// Whether nothing distinguishes the device from one never heard of.
    pub fn is_default(&self) -> bool {
        *self == DeviceState::default()
    }
}

/// Sets `field` to `value`; whether it changed.
fn set<T: PartialEq>(field: &mut T, value: T) -> bool {
    if *field == value {
        return false;
    }
    *field = value;
    true
}

/// What it takes to write a device resource: the DN's identity, its state, and the gateway's base URL.
#[derive(Debug, Clone, Copy)]
pub struct DeviceDoc<'a> {
    /// The device's id (UUID v5 of `tserver:{Server}/{DN}`).
    pub device_id: &'a str,
    /// Its T-Server (`""`: the default one), to name a monitored DN's device.
    pub server: &'a str,
    /// Its DN.
    pub dn: &'a str,
    /// Its state.
    pub state: &'a DeviceState,
    /// The gateway's base URL without a trailing `/`.
    pub base_url: &'a str,
}

impl DeviceDoc<'_> {
    /// Writes the device resource as compact JSON, members in the order of gws.md's example.
    pub fn write(&self, out: &mut String) {
        let state = self.state;
        out.push_str("{\"id\":");
        write_json_str(out, self.device_id);
        out.push_str(if state.out_of_service {
            ",\"deviceState\":\"Inactive\",\"userState\":"
        } else {
            ",\"deviceState\":\"Active\",\"userState\":"
        });
        write_user_state(&state.agent, out);
        out.push_str(",\"phoneNumber\":");
        write_json_str(out, self.dn);
        let (e164, network) = match international_dn(self.dn) {
            Some(e164) => (e164, "Public"),
            None => (self.dn.to_owned(), "Private"),
        };
        out.push_str(",\"e164Number\":");
        write_json_str(out, &e164);
        out.push_str(",\"telephonyNetwork\":\"");
        out.push_str(network);
        out.push_str(if state.dnd {
            "\",\"doNotDisturb\":\"On\""
        } else {
            "\",\"doNotDisturb\":\"Off\""
        });
        if let Some(forward_to) = &state.forward_to {
            out.push_str(",\"forwardTo\":");
            write_json_str(out, forward_to);
        }
        out.push_str(",\"capabilities\":[");
        out.push_str(if state.dnd {
            "\"DoNotDisturbOff\""
        } else {
            "\"DoNotDisturbOn\""
        });
        out.push_str(if state.forward_to.is_some() {
            ",\"ForwardCallsOff\""
        } else {
            ",\"ForwardCallsOn\""
        });
        if state.supervisor {
            out.push_str(",\"ListenIn\",\"Coach\",\"BargeIn\",\"CancelSupervisorMonitoring\"");
        }
        out.push(']');
        if let Some(agent_id) = &state.agent_id {
            out.push_str(",\"agentId\":");
            write_json_str(out, agent_id);
        }
        if let Some(monitoring) = &state.monitoring {
            self.write_monitoring(monitoring, out);
        }
        out.push_str(",\"uri\":\"");
        push_json_escaped(out, self.base_url);
        out.push_str("/api/v2/devices/");
        push_json_escaped(out, self.device_id);
        out.push_str("\"}");
    }

    fn write_monitoring(&self, monitoring: &Monitoring, out: &mut String) {
        out.push_str(",\"supervisorMonitoringState\":{\"state\":\"ListenIn\",\"mode\":\"");
        out.push_str(match monitoring.scope {
            MonitorScope::OneCall => "NextCall",
            MonitorScope::AllCalls => "AllCalls",
        });
        out.push_str("\",\"scope\":\"Call\"");
        if let Some(target) = &monitoring.target_dn {
            out.push_str(",\"targetDeviceUri\":\"");
            push_json_escaped(out, self.base_url);
            out.push_str("/api/v2/devices/");
            push_json_escaped(out, &super::device_id(self.server, target));
            out.push('"');
        }
        out.push('}');
    }

    /// The device resource as a string.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(384);
        self.write(&mut out);
        out
    }
}

/// `userState`: `{"id","displayName","state"[,"workMode"[,"reason"]]}`.
fn write_user_state(agent: &AgentState, out: &mut String) {
    match agent {
        AgentState::LoggedOut => out.push_str(
            "{\"id\":\"LoggedOut\",\"displayName\":\"Logged Out\",\"state\":\"LoggedOut\"}",
        ),
        AgentState::Ready => {
            out.push_str("{\"id\":\"Ready\",\"displayName\":\"Ready\",\"state\":\"Ready\"}")
        }
        AgentState::NotReady { mode, reason } => {
            out.push_str("{\"id\":\"NotReady-");
            out.push_str(mode.as_str());
            out.push_str("\",\"displayName\":\"");
            match mode {
                AgentWorkMode::Unknown | AgentWorkMode::AuxWork => out.push_str("Not Ready"),
                mode => push_words(out, mode.as_str()),
            }
            out.push_str("\",\"state\":\"NotReady\",\"workMode\":\"");
            out.push_str(mode.as_str());
            out.push('"');
            if let Some(reason) = reason {
                out.push_str(",\"reason\":");
                write_json_str(out, reason);
            }
            out.push('}');
        }
    }
}

/// `AfterCallWork` as `After Call Work`.
fn push_words(out: &mut String, camel: &str) {
    for (i, c) in camel.char_indices() {
        if i > 0 && c.is_ascii_uppercase() {
            out.push(' ');
        }
        out.push(c);
    }
}

/// The E.164 form of a DN written internationally (`+14155550100`); `None` for a private extension.
fn international_dn(dn: &str) -> Option<String> {
    if !dn.starts_with('+') {
        return None;
    }
    let parsed = phonenumber::parse(None, dn).ok()?;
    phonenumber::is_valid(&parsed)
        .then(|| parsed.format().mode(phonenumber::Mode::E164).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Decoded, decode_line};
    use serde_json::{Value, json};

    fn fold(lines: &[&str]) -> (DeviceState, Vec<bool>) {
        let mut state = DeviceState::default();
        let changed = lines
            .iter()
            .map(|line| {
                let Ok(Decoded::Event(event)) = decode_line(line.as_bytes()) else {
                    panic!("not an event: {line}");
                };
                state.apply(&event)
            })
            .collect();
        (state, changed)
    }

    fn doc(state: &DeviceState, dn: &str) -> Value {
        let json = DeviceDoc {
            device_id: "dev-1",
            server: "",
            dn,
            state,
            base_url: "http://gw",
        }
        .to_json();
        serde_json::from_str(&json).expect("a device resource is JSON")
    }

    #[test]
    fn a_device_never_heard_of_is_active_logged_out_and_private() {
        let state = DeviceState::default();
        assert!(state.is_default());
        assert_eq!(
            doc(&state, "7001"),
            json!({"id":"dev-1","deviceState":"Active",
                   "userState":{"id":"LoggedOut","displayName":"Logged Out","state":"LoggedOut"},
                   "phoneNumber":"7001","e164Number":"7001","telephonyNetwork":"Private","doNotDisturb":"Off",
                   "capabilities":["DoNotDisturbOn","ForwardCallsOn"],"uri":"http://gw/api/v2/devices/dev-1"})
        );
        let public = doc(&state, "+14155550100");
        assert_eq!(public["e164Number"], "+14155550100");
        assert_eq!(public["telephonyNetwork"], "Public");
    }

    #[test]
    fn login_work_modes_give_ready_or_not_ready() {
        let (state, _) = fold(&[
            r#"{"event":"EventAgentLogin","ThisDN":"7001","AgentID":"a1","AgentWorkMode":"AgentManualIn"}"#,
        ]);
        let d = doc(&state, "7001");
        assert_eq!(
            d["userState"],
            json!({"id":"Ready","displayName":"Ready","state":"Ready"})
        );
        assert_eq!(d["agentId"], "a1");
        let (state, _) = fold(&[r#"{"event":73,"ThisDN":"7001","AgentID":"a1"}"#]);
        assert_eq!(
            doc(&state, "7001")["userState"],
            json!({"id":"NotReady-Unknown","displayName":"Not Ready","state":"NotReady","workMode":"Unknown"})
        );
    }

    #[test]
    fn not_ready_shows_work_mode_and_reason_and_logout_clears_the_agent() {
        let (state, changed) = fold(&[
            r#"{"event":"EventAgentLogin","ThisDN":"7001","AgentID":"a1","AgentWorkMode":2}"#,
            r#"{"event":"EventAgentNotReady","ThisDN":"7001","AgentWorkMode":3,"Reasons":{"ReasonCode":"Lunch"}}"#,
        ]);
        assert_eq!(changed, [true, true]);
        assert_eq!(
            doc(&state, "7001")["userState"],
            json!({"id":"NotReady-AfterCallWork","displayName":"After Call Work","state":"NotReady",
                   "workMode":"AfterCallWork","reason":"Lunch"})
        );
        let (state, _) = fold(&[
            r#"{"event":"EventAgentNotReady","ThisDN":"7001","AgentWorkMode":"AgentAuxWork"}"#,
        ]);
        assert_eq!(doc(&state, "7001")["userState"]["displayName"], "Not Ready");
        let (state, _) = fold(&[
            r#"{"event":"EventAgentNotReady","ThisDN":"7001","AgentWorkMode":"AgentWalkAway"}"#,
        ]);
        assert_eq!(doc(&state, "7001")["userState"]["displayName"], "Walk Away");
        let (state, changed) = fold(&[
            r#"{"event":"EventAgentLogin","ThisDN":"7001","AgentID":"a1","AgentWorkMode":1}"#,
            r#"{"event":"EventAgentReady","ThisDN":"7001"}"#,
            r#"{"event":"EventAgentLogout","ThisDN":"7001"}"#,
        ]);
        assert_eq!(changed, [true, false, true], "Ready again changes nothing");
        assert!(state.is_default());
        assert!(doc(&state, "7001").get("agentId").is_none());
    }

    #[test]
    fn dnd_forwarding_and_service_set_their_fields_and_capabilities() {
        let (state, changed) = fold(&[
            r#"{"event":"EventDNDOn","ThisDN":"7001"}"#,
            r#"{"event":"EventDNDOn","ThisDN":"7001"}"#,
            r#"{"event":"EventForwardSet","ThisDN":"7001","OtherDN":"7002"}"#,
            r#"{"event":"EventDNOutOfService","ThisDN":"7001"}"#,
        ]);
        assert_eq!(changed, [true, false, true, true]);
        let d = doc(&state, "7001");
        assert_eq!(d["deviceState"], "Inactive");
        assert_eq!(d["doNotDisturb"], "On");
        assert_eq!(d["forwardTo"], "7002");
        assert_eq!(
            d["capabilities"],
            json!(["DoNotDisturbOff", "ForwardCallsOff"])
        );
        let (state, _) = fold(&[
            r#"{"event":"EventDNDOn","ThisDN":"7001"}"#,
            r#"{"event":"EventForwardSet","ThisDN":"7001","OtherDN":"7002"}"#,
            r#"{"event":"EventDNOutOfService","ThisDN":"7001"}"#,
            r#"{"event":"EventDNDOff","ThisDN":"7001"}"#,
            r#"{"event":"EventForwardCancel","ThisDN":"7001"}"#,
            r#"{"event":"EventDNBackInService","ThisDN":"7001"}"#,
        ]);
        assert!(state.is_default());
    }

    #[test]
    fn monitoring_makes_a_supervisor_device_and_names_its_target() {
        let (state, changed) = fold(&[
            r#"{"event":"EventMonitoringNextCall","ThisDN":"7901","OtherDN":"7001","MonitorNextCallType":1}"#,
        ]);
        assert_eq!(changed, [true]);
        let d = doc(&state, "7901");
        let target = crate::reduce::device_id("", "7001");
        assert_eq!(
            d["supervisorMonitoringState"],
            json!({"state":"ListenIn","mode":"AllCalls","scope":"Call",
                   "targetDeviceUri":format!("http://gw/api/v2/devices/{target}")})
        );
        assert_eq!(
            d["capabilities"],
            json!([
                "DoNotDisturbOn",
                "ForwardCallsOn",
                "ListenIn",
                "Coach",
                "BargeIn",
                "CancelSupervisorMonitoring"
            ])
        );
        let (state, changed) = fold(&[
            r#"{"event":"EventMonitoringNextCall","ThisDN":"7901","OtherDN":"7001","MonitorNextCallType":0}"#,
            r#"{"event":"EventMonitoringCancelled","ThisDN":"7901","OtherDN":"7001"}"#,
        ]);
        assert_eq!(changed, [true, true]);
        let d = doc(&state, "7901");
        assert!(d.get("supervisorMonitoringState").is_none());
        assert_eq!(
            d["capabilities"].as_array().map(Vec::len),
            Some(6),
            "still a supervisor's"
        );
    }

    #[test]
    fn call_events_change_no_device_field() {
        let (state, changed) = fold(&[r#"{"event":"EventRinging","ConnID":"1","ThisDN":"7001"}"#]);
        assert_eq!(changed, [false]);
        assert!(state.is_default());
    }
}
