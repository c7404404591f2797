//! Property (access.md, "Roles and scope"): for random scopes, filters, subscriptions, resumes, reloads
//! and streams of notifications, no frame a connection receives (snapshot, resume or live) and no REST
//! answer (the same matcher over a store view) holds a call of a device outside the receiver's scope.

use super::*;
use crate::delivery::{Frame, OutboxLimits};
use crate::event::ConnId;
use crate::reduce::CallState;
use crate::store::{CallKey, CallMeta, DeviceMeta, Meta};
use crate::subscriptions::Topics;
use proptest::prelude::*;
use serde_json::Value;
use std::time::Instant;

const EPOCH: &str = "18ecbdc26987cb1d-7450";
const DEVICES: u64 = 8;

fn published(call: u64, device: u64, state: CallState, version: u64) -> Published {
    let dn = format!("{}", 7000 + device);
    let id = format!("call-{call}");
    let document = serde_json::json!({"id": id, "device": format!("dev-{dn}"), "state": state.as_str(), "version": version}).to_string();
    let head = r#""channel":"/v2/me/calls","data":{"call":"#;
    Published {
        meta: Meta::Call(Arc::new(CallMeta {
            key: CallKey {
                shard: 0,
                number: call,
            },
            dn: dn.as_str().into(),
            device_id: format!("dev-{dn}").into(),
            call_id: id.as_str().into(),
            conn_id: ConnId(call),
            state,
        })),
        call: head.len()..head.len() + document.len(),
        members: format!("{head}{document}}}"),
        ingested: Instant::now(),
    }
}

/// A device notification of device `device`, its state kept (not the default) or not.
fn published_device(device: u64, kept: bool, version: u64) -> Published {
    let dn = format!("{}", 7000 + device);
    let id = format!("dev-{dn}");
    let document = serde_json::json!({"id": id, "version": version}).to_string();
    let head = r#""channel":"/v2/me/devices","data":{"messageType":"DeviceStateChangeMessage","devices":["#;
    Published {
        meta: Meta::Device(Arc::new(DeviceMeta {
            key: CallKey::device(0, u32::try_from(device).unwrap_or(0)),
            dn: dn.as_str().into(),
            device_id: id.as_str().into(),
            kept,
        })),
        call: head.len()..head.len() + document.len(),
        members: format!("{head}{document}]}}"),
        ingested: Instant::now(),
    }
}

/// One step of a run.
#[derive(Debug, Clone)]
enum Step {
    /// Publish (call, device, state) notifications (a call keeps the device it first had), or, for a
    /// state of 6 and over, a notification of the device itself.
    Publish(Vec<(u64, u64, u8)>),
    /// Connection `c` subscribes to `topics` (bit 1 calls, bit 2 devices), filtered to these DNs (none:
    /// unfiltered), resuming from `since` notifications back when given.
    Subscribe {
        connection: usize,
        topics: u8,
        dns: Option<Vec<u64>>,
        resume: Option<u64>,
    },
    /// Connection `c` gets a new scope (a reload).
    Rescope { connection: usize, scope: ScopeSpec },
}

/// A scope: everything, or some of the devices, optionally padded past the size filed under devices.
#[derive(Debug, Clone)]
struct ScopeSpec {
    all: bool,
    devices: Vec<u64>,
    padded: bool,
}

impl ScopeSpec {
    fn scope(&self) -> Scope {
        if self.all {
            return Scope::All;
        }
        let mut names: Vec<Arc<str>> = self
            .devices
            .iter()
            .map(|d| format!("dev-{}", 7000 + d).into())
            .collect();
        if self.padded {
            names.extend(
                (0..crate::subscriptions::MAX_SCOPE_KEYS).map(|n| format!("dev-absent-{n}").into()),
            );
        }
        Scope::Devices(Arc::new(names.into_iter().collect()))
    }
}

fn scope_spec() -> impl Strategy<Value = ScopeSpec> {
    (
        prop::bool::weighted(0.15),
        prop::collection::vec(0..DEVICES, 0..4),
        any::<bool>(),
    )
        .prop_map(|(all, devices, padded)| ScopeSpec {
            all,
            devices,
            padded,
        })
}

fn step(connections: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => prop::collection::vec((0..30u64, 0..DEVICES, 0..8u8), 1..12).prop_map(Step::Publish),
        2 => (
            0..connections,
            1..4u8,
            prop::option::of(prop::collection::vec(0..DEVICES, 1..4)),
            prop::option::of(0..20u64),
        )
            .prop_map(|(connection, topics, dns, resume)| Step::Subscribe { connection, topics, dns, resume }),
        1 => (0..connections, scope_spec())
            .prop_map(|(connection, scope)| Step::Rescope { connection, scope }),
    ]
}

fn state(n: u8) -> CallState {
    [
        CallState::Ringing,
        CallState::Dialing,
        CallState::Established,
        CallState::Held,
        CallState::Established,
        CallState::Released,
    ][usize::from(n % 6)]
}

/// The devices of every resource in a frame: a notification's call or device, a snapshot's calls and
/// devices.
fn devices_in(frame: &Value) -> Vec<String> {
    let list = |value: &Value| -> Vec<Value> { value.as_array().cloned().unwrap_or_default() };
    let mut calls = list(&frame["calls"]);
    let mut devices = list(&frame["devices"]);
    if let Some(data) = frame.get("data") {
        calls.extend(data.get("call").cloned());
        devices.extend(list(&data["devices"]));
    }
    calls
        .iter()
        .filter_map(|call| call["device"].as_str().map(str::to_owned))
        .chain(
            devices
                .iter()
                .filter_map(|d| d["id"].as_str().map(str::to_owned)),
        )
        .collect()
}

fn drain(outbox: &Outbox) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let before = frames.len();
        if outbox.drain(&mut frames).is_err() {
            break;
        }
        if frames.len() == before {
            break;
        }
    }
    frames
        .into_iter()
        .filter_map(|frame| match frame {
            Frame::Text(bytes) => serde_json::from_slice(&bytes).ok(),
            Frame::Pong(_) => None,
        })
        .collect()
}

proptest! {

    #[test]
    fn no_call_outside_the_scope_ever_reaches_a_receiver(
        scopes in prop::collection::vec(scope_spec(), 1..4),
        steps in prop::collection::vec(step(3), 1..40),
    ) {
        let stream = Stream::new(EPOCH, 16, OutboxLimits::default());
        let mut connections: Vec<(ConnectionId, Arc<Outbox>, ScopeSpec, usize)> = scopes
            .into_iter()
            .map(|spec| {
                let (id, outbox) = stream.connect();
                (id, outbox, spec, 0)
            })
            .collect();
        let mut device_of = std::collections::HashMap::new();
        let mut version = 0;
        for step in steps {
            match step {
                Step::Publish(batch) => {
                    let batch = batch
                        .into_iter()
                        .map(|(call, device, n)| {
                            version += 1;
                            if n >= 6 {
                                return published_device(device, n == 6, version);
                            }
                            let device = *device_of.entry(call).or_insert(device);
                            published(call, device, state(n), version)
                        })
                        .collect();
                    stream.publish(batch);
                }
                Step::Subscribe { connection, topics, dns, resume } => {
                    let Some((id, _, spec, subs)) = connections.get_mut(connection) else {
                        continue;
                    };
                    *subs += 1;
                    let filter = CallFilter {
                        dn: dns.map(|dns| dns.iter().map(|d| format!("{}", 7000 + d)).collect()),
                        ..CallFilter::default()
                    };
                    let since = resume.map(|back| Since {
                        epoch: EPOCH.into(),
                        seq: stream.stats().seq.saturating_sub(back),
                    });
                    let mut wanted = Vec::new();
                    if topics & 1 != 0 {
                        wanted.push("calls");
                    }
                    if topics & 2 != 0 {
                        wanted.push("devices");
                    }
                    let topics = Topics::from_names(wanted).unwrap_or(Topics::CALLS);
                    let matcher = Matcher::for_topics(filter, spec.scope(), topics);
                    let _ = stream.subscribe_to(*id, &format!("s{subs}"), matcher, since);
                }
                Step::Rescope { connection, scope } => {
                    if let Some((id, _, spec, _)) = connections.get_mut(connection) {
                        stream.rescope(*id, &scope.scope());
                        *spec = scope;
                    }
                }
            }
            // What each connection received so far is within the scope it had when it was queued: the
            // scope changes only at a rescope, and frames are drained at every step.
            for (_, outbox, spec, _) in &connections {
                let scope = spec.scope();
                for frame in drain(outbox) {
                    for device in devices_in(&frame) {
                        prop_assert!(scope.allows_device(&device), "{device} reached a receiver scoped to {spec:?}: {frame}");
                    }
                }
                // REST: the same matcher over a view of the store.
                let matcher = Matcher::new(CallFilter::default(), scope.clone());
                let view = stream.view();
                for call in view.select(matcher.lookup()).filter(|call| matcher.matches(&call.meta)) {
                    prop_assert!(scope.allows_device(&call.meta.device_id));
                }
                let devices = Matcher::for_topics(CallFilter::default(), scope.clone(), Topics::DEVICES);
                for device in view.devices_after(None).filter(|d| devices.matches_device(&d.meta)) {
                    prop_assert!(scope.allows_device(&device.meta.device_id));
                }
            }
        }
    }
}
