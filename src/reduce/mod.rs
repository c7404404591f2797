//! The reducer: a pure state machine that folds T-Server events into call resources (call-resource.md).
//!
//! [`Reducer::apply_admitted`] takes one event and appends the notifications it produces. It knows
//! nothing of clocks, sockets or threads: time comes from the events (and the arrival time its caller
//! passes), so `fold` and `serve` give the same resources and the same notifications, byte for byte, for
//! the same input. [`Fold`] puts a [`Sequencer`] (duplicates, times) in front of one reducer, as `fold`
//! runs it; `serve` runs one sequencer in front of several reducers.

mod call;
mod capabilities;
mod device;
mod notify;
pub mod queue;
mod sequence;
mod table;

pub use call::{Call, CallState, Changes, RecordingState};
pub use capabilities::{Capabilities, Capability, CapabilityInputs, ConsultRole, capabilities};
pub use device::{AgentState, DeviceDoc, DeviceState, Monitoring};
pub use notify::{CallView, Notification, NotificationType, Notifications, Topic};
pub use queue::Queue;
pub use sequence::{Admission, RESTART_GAP, SequenceCheck, SequenceTracker, Sequencer};
pub use table::MAX_SLOTS;

use crate::enrich::PhoneBook;
use crate::event::{CallType, ConnId, DecodeError, Decoded, Event, EventKind, Micros, decode_line};
use hashbrown::{Equivalent, HashMap};
use std::sync::Arc;

/// The base URL used when none is configured.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:8080";
/// How many resources (live and released) the reducer holds at most by default.
pub const DEFAULT_MAX_CALLS: usize = 1_000_000;
/// How many devices with a state of their own (gws.md) the reducer holds at most by default.
pub const DEFAULT_MAX_DEVICES: usize = 1_000_000;
/// How many queues and routing points the reducer holds at most; an EventQueued at one more is not
/// counted in any queue (the call itself is unaffected).
pub const MAX_QUEUES: usize = 10_000;
/// `--service-level-secs` by default (api.md).
pub const DEFAULT_SERVICE_LEVEL_SECS: u64 = 20;
/// How many distinct T-Servers the reducer tracks at most.
pub const MAX_SERVERS: usize = 1024;

/// Settings of a reducer.
#[derive(Debug, Clone)]
pub struct ReducerConfig {
    /// The gateway's public base URL, for `uri`, `deviceUri` and `parentCallUri`.
    pub base_url: String,
    /// The most resources held at once (at most [`MAX_SLOTS`]); an event that would create one more is
    /// ignored.
    pub max_calls: usize,
    /// The most devices held at once; a device event that would add one more is ignored (a device with
    /// calls is held by its calls, within `max_calls`).
    pub max_devices: usize,
    /// A queued call diverted within this long counts as answered within the service level (µs).
    pub service_level: Micros,
}

impl Default for ReducerConfig {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            max_calls: DEFAULT_MAX_CALLS,
            max_devices: DEFAULT_MAX_DEVICES,
            service_level: DEFAULT_SERVICE_LEVEL_SECS as Micros * 1_000_000,
        }
    }
}

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Taken by the reducer (it may or may not have changed a resource).
    Applied,
    /// Skipped: its EventSequenceNumber was applied already.
    Duplicate,
    /// EventReleased or EventAbandoned for a call no resource knows.
    Orphan,
    /// Not taken, for the reason given.
    Ignored(IgnoreReason),
}

impl Disposition {
    /// The outcome's name in `callgate_events_total{outcome=...}` (and in docs). An event refused at
    /// `max_calls` is `dropped`, not `ignored`: the gateway is full, the event was fine.
    pub fn label(self) -> &'static str {
        match self {
            Disposition::Applied => "applied",
            Disposition::Duplicate => "duplicate",
            Disposition::Orphan => "orphan",
            Disposition::Ignored(IgnoreReason::AtCapacity) => "dropped",
            Disposition::Ignored(_) => "ignored",
        }
    }
}

/// Why an event was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoreReason {
    /// An event outside the events.md table.
    UnknownEvent,
    /// It is addressed to a resource that is already Released (final).
    Released,
    /// It would create a resource, but the reducer holds `max_calls` calls (or `max_devices` devices)
    /// already.
    AtCapacity,
    /// It comes from a T-Server beyond the first [`MAX_SERVERS`].
    TooManyServers,
}

/// Counts of events by disposition: the `fold` summary and the ingest acknowledgements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Lines read (blank lines excepted).
    pub read: u64,
    /// Events applied.
    pub applied: u64,
    /// Duplicates skipped.
    pub duplicates: u64,
    /// Orphan releases.
    pub orphans: u64,
    /// Events ignored.
    pub ignored: u64,
    /// Lines rejected.
    pub rejected: u64,
}

impl Counts {
    /// Counts one line's outcome.
    pub fn record(&mut self, outcome: &Result<Disposition, DecodeError>) {
        self.read += 1;
        match outcome {
            Ok(Disposition::Applied) => self.applied += 1,
            Ok(Disposition::Duplicate) => self.duplicates += 1,
            Ok(Disposition::Orphan) => self.orphans += 1,
            Ok(Disposition::Ignored(_)) => self.ignored += 1,
            Err(_) => self.rejected += 1,
        }
    }
}

/// A device: one DN of one T-Server.
#[derive(Debug)]
pub struct Device {
    /// The index of its T-Server in the reducer.
    server: u32,
    /// Its DN.
    pub dn: Arc<str>,
    /// UUIDv5 of `tserver:{Server}/{ThisDN}` in the URL namespace.
    pub device_id: Arc<str>,
    /// `deviceUri` as a JSON string literal.
    device_uri_json: Box<str>,
    /// Its live consultation calls (CallType Consult, naming the call they consult about), in creation
    /// order: the only calls of the device whose links to other calls need recomputing after an event.
    /// Usually empty, so a device with thousands of calls (a queue) costs nothing per event for them.
    consultations: Vec<u64>,
    /// How many resources (live or released) it has; the device is forgotten when none is left and its
    /// state is the default.
    held: u32,
    /// What device events made of it (gws.md).
    pub state: DeviceState,
}

impl Device {
    /// Whether the reducer may forget it: no call and nothing a device event said.
    fn forgettable(&self) -> bool {
        self.held == 0 && self.state.is_default()
    }
}

/// Borrowed form of a device key, so a lookup by `(server, &str)` allocates nothing.
#[derive(Hash)]
struct DeviceKeyRef<'a>(u32, &'a str);

impl Equivalent<(u32, Box<str>)> for DeviceKeyRef<'_> {
    fn equivalent(&self, key: &(u32, Box<str>)) -> bool {
        self.0 == key.0 && self.1 == &*key.1
    }
}

/// Lists reused from event to event so that linking calls allocates nothing.
#[derive(Default)]
struct Scratch {
    candidates: Vec<u64>,
    consultations: Vec<(u64, Option<u64>)>,
    parents: Vec<u64>,
    others: Vec<u64>,
}

struct Slot {
    device: u32,
    /// When the last event of this call arrived, by the clock of whoever applies events (`serve`: the
    /// gateway's wall clock), to release calls whose T-Server went silent.
    arrived: Micros,
    call: Call,
}

/// The reducer's state: every resource, indexed by device and ConnID.
pub struct Reducer {
    base_url: String,
    calls_uri_prefix: String,
    max_calls: usize,
    max_devices: usize,
    server_index: HashMap<Box<str>, u32>,
    server_names: Vec<Box<str>>,
    devices: HashMap<u32, Device>,
    device_index: HashMap<(u32, Box<str>), u32>,
    next_device: u32,
    /// Resources by call number (numbers sort in creation order and are never reused).
    calls: table::Table<Slot>,
    by_conn: HashMap<(u32, ConnId), u64>,
    phone_book: PhoneBook,
    scratch: Scratch,
    /// Queues and routing points; a queue's number is its place (in order of first EventQueued; never
    /// removed).
    queues: Vec<Queue>,
    queue_index: HashMap<(u32, Box<str>), u32>,
    service_level: Micros,
}

impl Default for Reducer {
    fn default() -> Self {
        Self::new(ReducerConfig::default())
    }
}

impl Reducer {
    /// An empty reducer.
    pub fn new(config: ReducerConfig) -> Self {
        let base_url = config.base_url.trim_end_matches('/').to_owned();
        let calls_uri_prefix = notify::escaped(&format!("{base_url}/api/v2/me/calls/"));
        Self {
            base_url,
            calls_uri_prefix,
            max_calls: config.max_calls.min(MAX_SLOTS),
            max_devices: config.max_devices,
            server_index: HashMap::new(),
            server_names: Vec::new(),
            devices: HashMap::new(),
            device_index: HashMap::new(),
            next_device: 0,
            calls: table::Table::default(),
            by_conn: HashMap::new(),
            phone_book: PhoneBook::default(),
            scratch: Scratch::default(),
            queues: Vec::new(),
            queue_index: HashMap::new(),
            service_level: config.service_level,
        }
    }

    /// Applies an event that a [`Sequencer`] admitted, at `time`, that arrived at `arrived`: the reducer
    /// proper, without duplicate detection. `serve` runs one sequencer in front of several reducers (one per
    /// shard of devices).
    pub fn apply_admitted(
        &mut self,
        event: &Event<'_>,
        time: Option<Micros>,
        arrived: Micros,
        out: &mut Notifications,
    ) -> Disposition {
        if !event.kind.is_call_event() && !event.kind.is_device_event() {
            return Disposition::Applied;
        }
        let Some(server_no) = self.server_number(&event.server) else {
            return Disposition::Ignored(IgnoreReason::TooManyServers);
        };
        if event.kind.is_device_event() {
            return self.apply_device_event(server_no, event, out);
        }
        let queued = self.apply_queue_event(server_no, event, time, arrived, out);
        match self.apply_call_event(server_no, event, time, arrived, out) {
            // An EventAbandoned that no call knows is the queue's, when it left one.
            Disposition::Orphan if queued => Disposition::Applied,
            disposition => disposition,
        }
    }

    /// Applies a call event to the call resource at its ThisDN (call-resource.md).
    fn apply_call_event(
        &mut self,
        server_no: u32,
        event: &Event<'_>,
        time: Option<Micros>,
        arrived: Micros,
        out: &mut Notifications,
    ) -> Disposition {
        // The decoder guarantees both on call events.
        let (Some(conn_id), Some(this_dn)) = (event.conn_id, event.this_dn.as_deref()) else {
            return Disposition::Applied;
        };

        let device = self
            .device_index
            .get(&DeviceKeyRef(server_no, this_dn))
            .copied();
        let found =
            device.and_then(|device| Some((device, self.find_call(device, event, conn_id)?)));
        let (device, number, created) = match found {
            Some((device, number)) => {
                if !self
                    .calls
                    .get(number)
                    .is_some_and(|slot| slot.call.is_live())
                {
                    return Disposition::Ignored(IgnoreReason::Released);
                }
                (device, number, false)
            }
            None => {
                let Some(state) = CallState::created_by(event.kind) else {
                    return if matches!(event.kind, EventKind::Released | EventKind::Abandoned) {
                        Disposition::Orphan
                    } else {
                        Disposition::Applied
                    };
                };
                if self.calls.len() >= self.max_calls {
                    return Disposition::Ignored(IgnoreReason::AtCapacity);
                }
                let device = match device {
                    Some(device) => device,
                    None => self.add_device(server_no, this_dn),
                };
                let call = Call::new(event, conn_id, state, time);
                let Some(number) = self.add_call(device, call, arrived) else {
                    return Disposition::Ignored(IgnoreReason::AtCapacity);
                };
                (device, number, true)
            }
        };

        let Some(slot) = self.calls.get_mut(number) else {
            return Disposition::Applied;
        };
        slot.arrived = arrived;
        let old_conn_id = slot.call.conn_id;
        let mut changes = slot.call.apply(event, this_dn, &mut self.phone_book);
        if created {
            changes.insert(Changes::STATUS);
        }
        if slot.call.started.is_none() {
            slot.call.started = time;
        }
        let new_conn_id = slot.call.conn_id;
        let live = slot.call.is_live();
        if new_conn_id != old_conn_id {
            if self.by_conn.get(&(device, old_conn_id)) == Some(&number) {
                self.by_conn.remove(&(device, old_conn_id));
            }
            self.by_conn.insert((device, new_conn_id), number);
        }
        let consultation = live
            && slot.call.call_type == CallType::Consult
            && slot.call.parent_conn_id().is_some();
        if let Some(dev) = self.devices.get_mut(&device) {
            match (consultation, dev.consultations.binary_search(&number)) {
                (true, Err(at)) => dev.consultations.insert(at, number),
                (false, Ok(at)) => {
                    dev.consultations.remove(at);
                }
                _ => {}
            }
        }

        let mut others = std::mem::take(&mut self.scratch.others);
        others.clear();
        self.refresh_links(device, number, &mut changes, &mut others);
        let extensions = event.extensions.as_ref().map(|kv| &*kv.json);
        self.emit(number, changes, time, extensions, out);
        // Call numbers sort in creation order, and `refresh_links` visits candidates sorted.
        for &other in &others {
            // Only derived fields (capabilities, parent link) of the other calls changed.
            self.emit(other, Changes::OTHER, time, extensions, out);
        }
        self.scratch.others = others;
        Disposition::Applied
    }

    /// The resource an event belongs to: by PreviousConnID first for EventPartyChanged, then by ConnID.
    fn find_call(&self, device: u32, event: &Event<'_>, conn_id: ConnId) -> Option<u64> {
        if event.kind == EventKind::PartyChanged
            && let Some(previous) = event.previous_conn_id
            && let Some(&number) = self.by_conn.get(&(device, previous))
        {
            return Some(number);
        }
        self.by_conn.get(&(device, conn_id)).copied()
    }

    fn server_number(&mut self, name: &str) -> Option<u32> {
        if let Some(&number) = self.server_index.get(name) {
            return Some(number);
        }
        if self.server_names.len() >= MAX_SERVERS {
            return None;
        }
        let number = u32::try_from(self.server_names.len()).ok()?;
        self.server_index.insert(name.into(), number);
        self.server_names.push(name.into());
        Some(number)
    }

    fn add_device(&mut self, server: u32, dn: &str) -> u32 {
        let server_name = self.server_names.get(server as usize).map_or("", |s| &**s);
        let device_id = device_id(server_name, dn);
        let mut device_uri_json = String::new();
        crate::json::write_json_str(
            &mut device_uri_json,
            &format!("{}/api/v2/devices/{device_id}", self.base_url),
        );
        let number = self.next_device;
        self.next_device = self.next_device.wrapping_add(1);
        self.devices.insert(
            number,
            Device {
                server,
                dn: dn.into(),
                device_id: device_id.into(),
                device_uri_json: device_uri_json.into(),
                consultations: Vec::new(),
                held: 0,
                state: DeviceState::default(),
            },
        );
        self.device_index.insert((server, dn.into()), number);
        number
    }

    fn add_call(&mut self, device: u32, call: Call, arrived: Micros) -> Option<u64> {
        let conn_id = call.conn_id;
        let slot = Slot {
            device,
            arrived,
            call,
        };
        let number = self.calls.insert(slot).ok()?;
        self.by_conn.insert((device, conn_id), number);
        if let Some(dev) = self.devices.get_mut(&device) {
            dev.held += 1;
        }
        Some(number)
    }

    /// Drops a Released resource (the linger time of `serve` is over), and its device when that was the
    /// device's last resource. Live resources are never dropped: returns `false` for them and for unknown
    /// numbers.
    pub fn remove(&mut self, number: u64) -> bool {
        if self
            .calls
            .get(number)
            .is_none_or(|slot| slot.call.is_live())
        {
            return false;
        }
        let Some(slot) = self.calls.remove(number) else {
            return false;
        };
        let key = (slot.device, slot.call.conn_id);
        if self.by_conn.get(&key) == Some(&number) {
            self.by_conn.remove(&key);
        }
        if let Some(device) = self.devices.get_mut(&slot.device) {
            device.held = device.held.saturating_sub(1);
            if device.forgettable() {
                self.forget_device(slot.device);
            }
        }
        true
    }

    fn forget_device(&mut self, number: u32) {
        if let Some(device) = self.devices.remove(&number) {
            self.device_index
                .remove(&DeviceKeyRef(device.server, &device.dn));
        }
    }

    /// Applies a device event (gws.md): changes the device's state and, when a field changed, appends its
    /// device notification.
    fn apply_device_event(
        &mut self,
        server_no: u32,
        event: &Event<'_>,
        out: &mut Notifications,
    ) -> Disposition {
        // The decoder guarantees ThisDN on device events.
        let Some(this_dn) = event.this_dn.as_deref() else {
            return Disposition::Applied;
        };
        let number = match self
            .device_index
            .get(&DeviceKeyRef(server_no, this_dn))
            .copied()
        {
            Some(number) => number,
            None => {
                // An event that would change nothing of a device never heard of creates none.
                if !DeviceState::default().apply(event) {
                    return Disposition::Applied;
                }
                if self.devices.len() >= self.max_devices {
                    return Disposition::Ignored(IgnoreReason::AtCapacity);
                }
                self.add_device(server_no, this_dn)
            }
        };
        let Some(device) = self.devices.get_mut(&number) else {
            return Disposition::Applied;
        };
        if device.state.apply(event)
            && let Some(doc) = self.device_doc(number)
        {
            out.push_device(number, &doc);
        }
        Disposition::Applied
    }

    /// Applies a call event at a queue or routing point (api.md): EventQueued there creates the queue;
    /// EventQueued, EventDiverted and EventAbandoned at a queue's DN change it and append its queue
    /// notification. Whether the event was a queue's. The queues only watch: the call reducer takes
    /// every event as well, so a call resource behaves as if no queue existed (none is made at a
    /// queue, call-resource.md, and an agent's DN that once saw an EventQueued keeps its calls).
    fn apply_queue_event(
        &mut self,
        server_no: u32,
        event: &Event<'_>,
        time: Option<Micros>,
        arrived: Micros,
        out: &mut Notifications,
    ) -> bool {
        if !matches!(
            event.kind,
            EventKind::Queued | EventKind::Diverted | EventKind::Abandoned
        ) {
            return false;
        }
        let Some(this_dn) = event.this_dn.as_deref() else {
            return false;
        };
        let number = match self.queue_index.get(&DeviceKeyRef(server_no, this_dn)) {
            Some(&number) => number,
            None if event.kind == EventKind::Queued => {
                if self.queues.len() >= MAX_QUEUES {
                    // Counted, and the call is unaffected (docs/semantics.md, "Queues").
                    metrics::counter!("callgate_queues_refused_total").increment(1);
                    return false;
                }
                self.add_queue(server_no, this_dn)
            }
            // An EventAbandoned at a DN that is no queue is a party's (a caller hanging up while
            // ringing): the call reducer's alone.
            None => return false,
        };
        let service_level = self.service_level;
        let Some(queue) = self.queues.get_mut(number as usize) else {
            return false;
        };
        if queue.apply(event, time.unwrap_or(arrived), arrived, service_level) {
            self.push_queue(number, out);
        }
        true
    }

    fn add_queue(&mut self, server: u32, dn: &str) -> u32 {
        let server_name = self.server_names.get(server as usize).map_or("", |s| &**s);
        let queue_id = device_id(server_name, dn);
        // At most MAX_QUEUES, far below u32::MAX.
        let number = self.queues.len() as u32;
        self.queues
            .push(Queue::new(server, dn.into(), queue_id.into()));
        self.queue_index.insert((server, dn.into()), number);
        number
    }

    /// Appends the queue notification of queue `number`.
    pub(crate) fn push_queue(&self, number: u32, out: &mut Notifications) {
        if let Some(queue) = self.queues.get(number as usize) {
            let server = self
                .server_names
                .get(queue.server as usize)
                .map_or("", |name| name);
            out.push_queue(number, |doc| queue.write(server, doc));
        }
    }

    /// Queue `number` (as a queue notification names it).
    pub fn queue(&self, number: u32) -> Option<&Queue> {
        self.queues.get(number as usize)
    }

    /// Every queue, in order of first EventQueued, with its T-Server's name.
    pub fn queues(&self) -> impl Iterator<Item = (&Queue, &str)> + '_ {
        self.queues.iter().map(|queue| {
            let server = self
                .server_names
                .get(queue.server as usize)
                .map_or("", |name| name);
            (queue, server)
        })
    }

    /// Forgets device `number` if it holds no call and its state is back to the default (what a device
    /// never heard of shows), once its notification has been taken. `serve` calls it to keep only devices
    /// that say something; `fold` keeps them all (it ends anyway).
    pub fn forget_idle_device(&mut self, number: u32) {
        if self.devices.get(&number).is_some_and(Device::forgettable) {
            self.forget_device(number);
        }
    }

    /// The resource of device `number`, ready to be written.
    pub fn device_doc(&self, number: u32) -> Option<DeviceDoc<'_>> {
        let device = self.devices.get(&number)?;
        Some(DeviceDoc {
            device_id: &device.device_id,
            server: self
                .server_names
                .get(device.server as usize)
                .map_or("", |name| name),
            dn: &device.dn,
            state: &device.state,
            base_url: &self.base_url,
        })
    }

    /// Device `number` (as a device notification names it), if still held.
    pub fn device(&self, number: u32) -> Option<&Device> {
        self.devices.get(&number)
    }

    /// Releases every live call whose last event arrived before `silent_since`, as its device's
    /// EventReleased would, at `now`: a T-Server that lost its link may never send the release (api.md,
    /// `--stale-call-after`). Appends the notifications to `out`; returns how many calls were released.
    pub fn release_stale(
        &mut self,
        silent_since: Micros,
        now: Micros,
        out: &mut Notifications,
    ) -> usize {
        let mut stale: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, slot)| slot.arrived < silent_since && slot.call.is_live())
            .map(|(number, _)| number)
            .collect();
        // Creation order, so `serve` releases them in the same order whatever the slab's layout.
        stale.sort_unstable();
        let queues: Vec<u32> = self
            .queues
            .iter_mut()
            .enumerate()
            .filter_map(|(number, queue)| {
                queue.drop_stale(silent_since, now).then_some(number as u32)
            })
            .collect();
        for number in queues {
            self.push_queue(number, out);
        }
        for &number in &stale {
            let Some(slot) = self.calls.get(number) else {
                continue;
            };
            let Some(device) = self.devices.get(&slot.device) else {
                continue;
            };
            let server = self
                .server_names
                .get(device.server as usize)
                .cloned()
                .unwrap_or_default();
            let dn = Arc::clone(&device.dn);
            let event = Event::bare(EventKind::Released, &server, slot.call.conn_id, &dn);
            self.apply_admitted(&event, Some(now), now, out);
        }
        stale.len()
    }

    /// The live call of `device` with `conn_id`.
    fn live_call_by_conn(&self, device: u32, conn_id: ConnId) -> Option<u64> {
        let number = *self.by_conn.get(&(device, conn_id))?;
        self.calls
            .get(number)
            .filter(|slot| slot.call.is_live())
            .map(|_| number)
    }

    /// Recomputes the fields that depend on other calls of the device (capabilities, consultation link)
    /// for `trigger` and for every call an event on it can affect. Marks `trigger_changes`, and returns the
    /// other calls that changed.
    fn refresh_links(
        &mut self,
        device: u32,
        trigger: u64,
        trigger_changes: &mut Changes,
        others: &mut Vec<u64>,
    ) {
        let Some(dev) = self.devices.get(&device) else {
            return;
        };
        // Only consultation calls and their parents can be linked, so those (and whatever the trigger was
        // linked to before) are the only candidates: a device with many calls but no consultation costs
        // nothing for them. The lists are kept between events so that this allocates nothing.
        let mut candidates = std::mem::take(&mut self.scratch.candidates);
        let mut consultations = std::mem::take(&mut self.scratch.consultations);
        let mut parents = std::mem::take(&mut self.scratch.parents);
        candidates.clear();
        consultations.clear();
        parents.clear();
        candidates.push(trigger);
        if let Some(parent) = self.calls.get(trigger).and_then(|s| s.call.parent()) {
            candidates.push(parent);
        }
        // The trigger too, once, when it is not (or no longer) a listed consultation.
        let unlisted_trigger = dev
            .consultations
            .binary_search(&trigger)
            .is_err()
            .then_some(trigger);
        for &number in dev.consultations.iter().chain(unlisted_trigger.iter()) {
            let Some(slot) = self.calls.get(number) else {
                continue;
            };
            let call = &slot.call;
            if call.call_type != CallType::Consult {
                continue;
            }
            let Some(parent_conn) = call.parent_conn_id() else {
                continue;
            };
            let parent = self
                .live_call_by_conn(device, parent_conn)
                .filter(|&parent| parent != number);
            consultations.push((number, parent));
            candidates.push(number);
            candidates.extend(call.parent());
            candidates.extend(parent);
        }
        candidates.sort_unstable();
        candidates.dedup();
        // Sorted, so that each candidate's lookups are binary searches: linear in the consultations,
        // not quadratic, whatever their number.
        consultations.sort_unstable_by_key(|(number, _)| *number);
        parents.extend(consultations.iter().filter_map(|(n, p)| {
            p.filter(|_| self.calls.get(*n).is_some_and(|s| s.call.is_live()))
        }));
        parents.sort_unstable();

        for &number in &candidates {
            let Some(slot) = self.calls.get(number) else {
                continue;
            };
            let call = &slot.call;
            let parent = consultations
                .binary_search_by_key(&number, |(n, _)| *n)
                .ok()
                .and_then(|at| consultations[at].1);
            let is_parent_of_live_consultation = parents.binary_search(&number).is_ok();
            let consult = ConsultRole {
                parent: is_parent_of_live_consultation,
                consultation: parent.is_some(),
            };
            let caps = capabilities(CapabilityInputs {
                state: call.state,
                monitoring: call.monitoring,
                monitored_user_muted: call.monitored_user_muted,
                recording: call.recording,
                consult,
            });
            if caps == call.capabilities && parent == call.parent() {
                continue;
            }
            // The document shows the parent's id, not which resource it is: a new parent with the same
            // id (two calls of one CallUUID at the device) changes nothing a client can see.
            let parent_id =
                |parent: Option<u64>| parent.and_then(|p| self.calls.get(p)).map(|p| &p.call.id);
            let visible =
                caps != call.capabilities || parent_id(parent) != parent_id(call.parent());
            if let Some(slot) = self.calls.get_mut(number) {
                slot.call.capabilities = caps;
                slot.call.set_parent(parent);
            }
            if !visible {
                continue;
            }
            if number == trigger {
                trigger_changes.insert(Changes::OTHER);
            } else {
                others.push(number);
            }
        }
        self.scratch.candidates = candidates;
        self.scratch.consultations = consultations;
        self.scratch.parents = parents;
    }

    /// Produces the notification of a new version of call `number`, unless nothing changed.
    fn emit(
        &mut self,
        number: u64,
        changes: Changes,
        time: Option<Micros>,
        extensions: Option<&str>,
        out: &mut Notifications,
    ) {
        let Some(kind) = NotificationType::for_changes(changes) else {
            return;
        };
        let Some(slot) = self.calls.get_mut(number) else {
            return;
        };
        if let (Some(now), Some(started)) = (time, slot.call.started) {
            slot.call.duration_secs =
                u64::try_from(now.saturating_sub(started) / 1_000_000).unwrap_or(0);
        }
        if let Some(view) = self.view(number) {
            out.push(kind, number, &view, extensions);
        }
    }

    /// The current version of call `number`, ready to be written.
    pub fn view(&self, number: u64) -> Option<CallView<'_>> {
        let slot = self.calls.get(number)?;
        let device = self.devices.get(&slot.device)?;
        Some(CallView {
            call: &slot.call,
            dn: &device.dn,
            device_uri_json: &device.device_uri_json,
            calls_uri_prefix: &self.calls_uri_prefix,
            parent_id: slot
                .call
                .parent()
                .and_then(|parent| self.calls.get(parent))
                .map(|parent| &*parent.call.id),
        })
    }

    /// The call with call number `number` and its device.
    pub fn call(&self, number: u64) -> Option<(&Call, &Device)> {
        let slot = self.calls.get(number)?;
        Some((&slot.call, self.devices.get(&slot.device)?))
    }

    /// Call numbers of every resource held, in creation order.
    pub fn call_numbers(&self) -> Vec<u64> {
        self.calls.numbers()
    }

    /// How many devices have resources.
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// How many resources are held (live and released).
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no resource is held.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }
}

/// `fold`'s path for one stream of events: a sequencer (duplicates, event times, link state) in front of
/// one reducer. `serve` runs one sequencer in front of several reducers instead (`pipeline`), so the
/// reducer itself has none.
#[derive(Default)]
pub struct Fold {
    sequencer: Sequencer,
    reducer: Reducer,
}

impl Fold {
    /// An empty fold.
    pub fn new(config: ReducerConfig) -> Self {
        Self {
            sequencer: Sequencer::default(),
            reducer: Reducer::new(config),
        }
    }

    /// Decodes one line and applies it. Unknown events come back as `Ignored(UnknownEvent)`.
    pub fn apply_line(
        &mut self,
        line: &[u8],
        out: &mut Notifications,
    ) -> Result<Disposition, DecodeError> {
        match decode_line(line)? {
            Decoded::Event(event) => Ok(self.apply(&event, out)),
            Decoded::Unknown { .. } => Ok(Disposition::Ignored(IgnoreReason::UnknownEvent)),
        }
    }

    /// Applies one event, appending the notifications it produces to `out`.
    pub fn apply(&mut self, event: &Event<'_>, out: &mut Notifications) -> Disposition {
        match self.sequencer.admit(event, None) {
            Admission::Admitted { time } => {
                self.reducer
                    .apply_admitted(event, time, time.unwrap_or(0), out)
            }
            Admission::Duplicate => Disposition::Duplicate,
            Admission::TooManyServers => Disposition::Ignored(IgnoreReason::TooManyServers),
        }
    }

    /// The reducer and its resources.
    pub fn reducer(&self) -> &Reducer {
        &self.reducer
    }

    /// The reducer, to drop released resources.
    pub fn reducer_mut(&mut self) -> &mut Reducer {
        &mut self.reducer
    }

    /// Link state of each T-Server seen: `Some(true)` after EventLinkConnected, `Some(false)` after
    /// EventLinkDisconnected, `None` before either.
    pub fn links(&self) -> impl Iterator<Item = (&str, Option<bool>)> {
        self.sequencer.links()
    }
}

/// The id of the device `dn` of the T-Server `server` ("" for the default Server): the UUID version 5,
/// in the URL namespace, of `tserver:{server}/{dn}` (call-resource.md, `deviceUri`).
pub fn device_id(server: &str, dn: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("tserver:{server}/{dn}").as_bytes(),
    )
    .hyphenated()
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(reducer: &mut Fold, line: &str) -> (Disposition, Vec<(u64, String)>) {
        let mut out = Notifications::default();
        let disposition = reducer
            .apply_line(line.as_bytes(), &mut out)
            .expect("valid line");
        let notes = out
            .iter()
            .map(|n| (n.resource, n.kind.as_str().to_owned()))
            .collect();
        (disposition, notes)
    }

    fn apply_at(reducer: &mut Reducer, line: &str, arrived: Micros) -> Vec<(u64, String)> {
        let Ok(Decoded::Event(event)) = decode_line(line.as_bytes()) else {
            panic!("not an event: {line}");
        };
        let mut out = Notifications::default();
        reducer.apply_admitted(&event, Some(arrived), arrived, &mut out);
        out.iter()
            .map(|n| (n.resource, n.kind.as_str().to_owned()))
            .collect()
    }

    #[test]
    fn call_uuid_is_the_latest_seen_whether_or_not_it_is_the_id() {
        let mut reducer = Fold::default();
        let line = |kind: &str, conn: &str, uuid: &str| {
            let uuid = if uuid.is_empty() {
                String::new()
            } else {
                format!(r#","CallUUID":"{uuid}""#)
            };
            format!(r#"{{"event":"{kind}","ConnID":"{conn}","ThisDN":"7001"{uuid}}}"#)
        };
        let uuid_of = |reducer: &mut Fold, number: u64| {
            let (call, _) = reducer.reducer_mut().call(number).expect("held");
            (call.id.to_string(), call.call_uuid().map(str::to_owned))
        };
        // Created with a CallUUID: the id is that UUID, and so is callUuid.
        let first = apply(&mut reducer, &line("EventRinging", "1", "U1")).1[0].0;
        assert_eq!(
            uuid_of(&mut reducer, first),
            ("U1".into(), Some("U1".into()))
        );
        // A later, different CallUUID replaces it; the id stays.
        apply(&mut reducer, &line("EventEstablished", "1", "U2"));
        assert_eq!(
            uuid_of(&mut reducer, first),
            ("U1".into(), Some("U2".into()))
        );
        // And the id's own UUID again.
        apply(&mut reducer, &line("EventHeld", "1", "U1"));
        assert_eq!(
            uuid_of(&mut reducer, first),
            ("U1".into(), Some("U1".into()))
        );
        // Created without one: the id is the ConnID, and callUuid is unseen until one comes.
        let second = apply(&mut reducer, &line("EventRinging", "2", "")).1[0].0;
        assert_eq!(uuid_of(&mut reducer, second).1, None);
        apply(&mut reducer, &line("EventEstablished", "2", "U3"));
        assert_eq!(uuid_of(&mut reducer, second).1, Some("U3".into()));
    }

    #[test]
    fn stale_calls_are_released_as_their_device_would_release_them() {
        let mut reducer = Reducer::default();
        let line = |kind: &str, conn: &str, extra: &str| {
            format!(
                r#"{{"event":"{kind}","Server":"SW","ConnID":"{conn}","ThisDN":"7001"{extra}}}"#
            )
        };
        // A held call and its consultation, both silent since 100; a call on another device heard at 200.
        let parent = apply_at(&mut reducer, &line("EventEstablished", "a", ""), 90)[0].0;
        apply_at(&mut reducer, &line("EventHeld", "a", ""), 100);
        let consult_line = line("EventDialing", "b", r#","CallType":4,"TransferConnID":"a""#);
        let consult = apply_at(&mut reducer, &consult_line, 100)[0].0;
        let other_line = r#"{"event":"EventRinging","Server":"SW","ConnID":"c","ThisDN":"7002"}"#;
        let other = apply_at(&mut reducer, other_line, 200)[0].0;
        assert!(reducer.view(consult).is_some_and(|v| v.parent_id.is_some()));

        let mut out = Notifications::default();
        assert_eq!(
            reducer.release_stale(100, 1_000, &mut out),
            0,
            "silent since 100, not before"
        );
        assert!(out.is_empty());
        assert_eq!(reducer.release_stale(150, 1_000, &mut out), 2);
        let notes: Vec<(u64, NotificationType)> =
            out.iter().map(|n| (n.resource, n.kind)).collect();
        assert_eq!(
            notes,
            [
                (parent, NotificationType::StatusChange),
                // Its parent gone, the consultation loses the transfer and conference capabilities.
                (consult, NotificationType::StatePropertiesChanged),
                (consult, NotificationType::StatusChange),
            ],
            "in creation order, as EventReleased of each would"
        );
        for number in [parent, consult] {
            let (call, _) = reducer.call(number).expect("lingers until removed");
            assert_eq!(call.state, CallState::Released);
            assert_eq!(call.capabilities.names().count(), 0);
        }
        assert_eq!(
            reducer.call(other).map(|(c, _)| c.state),
            Some(CallState::Ringing)
        );
        // The ConnID is free for a new call once the released one is forgotten.
        assert!(reducer.remove(parent));
        let again = apply_at(&mut reducer, &line("EventRinging", "a", ""), 2_000);
        assert_ne!(again[0].0, parent);
    }

    #[test]
    fn released_calls_can_be_removed_and_then_are_forgotten() {
        let mut reducer = Fold::default();
        let ringing = r#"{"event":"EventRinging","ConnID":"1","ThisDN":"7001","OtherDN":"7002"}"#;
        let (_, notes) = apply(&mut reducer, ringing);
        let number = notes[0].0;
        assert!(!reducer.reducer_mut().remove(number), "a live call stays");
        apply(
            &mut reducer,
            r#"{"event":"EventReleased","ConnID":"1","ThisDN":"7001"}"#,
        );
        assert_eq!(
            apply(&mut reducer, ringing).0,
            Disposition::Ignored(IgnoreReason::Released),
            "Released is final while the resource is held"
        );
        assert!(reducer.reducer_mut().remove(number));
        assert!(reducer.reducer().is_empty());
        assert_eq!(reducer.reducer().device_count(), 0);
        assert!(reducer.reducer().call(number).is_none());
        // Once dropped, the same ConnID at the same DN is a new call with a new number.
        let (_, notes) = apply(&mut reducer, ringing);
        assert_eq!(notes[0].1, "StatusChange");
        assert_ne!(notes[0].0, number);
    }

    #[test]
    fn removing_one_call_keeps_the_device_and_frees_the_conn_id() {
        let mut reducer = Fold::default();
        let (_, first) = apply(
            &mut reducer,
            r#"{"event":"EventRinging","ConnID":"1","ThisDN":"7001"}"#,
        );
        let (_, second) = apply(
            &mut reducer,
            r#"{"event":"EventRinging","ConnID":"2","ThisDN":"7001"}"#,
        );
        apply(
            &mut reducer,
            r#"{"event":"EventReleased","ConnID":"1","ThisDN":"7001"}"#,
        );
        assert!(reducer.reducer_mut().remove(first[0].0));
        assert_eq!(reducer.reducer().device_count(), 1, "7001 still has call 2");
        assert!(!reducer.reducer().is_empty());
        let (call, device) = reducer
            .reducer()
            .call(second[0].0)
            .expect("call 2 is still held");
        assert_eq!((&*device.dn, call.state), ("7001", CallState::Ringing));
        // Call 2 still takes its events, and ConnID 1 at 7001 is free for a new call.
        let (_, notes) = apply(
            &mut reducer,
            r#"{"event":"EventEstablished","ConnID":"2","ThisDN":"7001"}"#,
        );
        assert_eq!(notes, [(second[0].0, "StatusChange".to_owned())]);
        let (disposition, notes) = apply(
            &mut reducer,
            r#"{"event":"EventRinging","ConnID":"1","ThisDN":"7001"}"#,
        );
        assert_eq!(disposition, Disposition::Applied);
        assert_eq!(notes.len(), 1);
        assert_ne!(notes[0].0, first[0].0, "a new resource");
        assert_eq!(reducer.reducer().len(), 2);
    }

    #[test]
    fn the_call_bound_ignores_creations_but_not_updates() {
        let mut reducer = Fold::new(ReducerConfig {
            max_calls: 1,
            ..ReducerConfig::default()
        });
        apply(
            &mut reducer,
            r#"{"event":"EventRinging","ConnID":"1","ThisDN":"7001"}"#,
        );
        let (disposition, _) = apply(
            &mut reducer,
            r#"{"event":"EventRinging","ConnID":"2","ThisDN":"7001"}"#,
        );
        assert_eq!(disposition, Disposition::Ignored(IgnoreReason::AtCapacity));
        let (disposition, notes) = apply(
            &mut reducer,
            r#"{"event":"EventEstablished","ConnID":"1","ThisDN":"7001"}"#,
        );
        assert_eq!((disposition, notes.len()), (Disposition::Applied, 1));
    }

    #[test]
    fn link_events_track_each_server() {
        let mut reducer = Fold::default();
        apply(
            &mut reducer,
            r#"{"event":"EventLinkDisconnected","Server":"SIP_A"}"#,
        );
        apply(&mut reducer, r#"{"event":"EventLinkConnected"}"#);
        let links: Vec<_> = reducer.links().collect();
        assert_eq!(links, [("SIP_A", Some(false)), ("", Some(true))]);
    }
}
