//! What a new subscription receives before live notifications: its snapshot, in chunks, or the
//! notifications its resume missed. Both are [`Backlog`]s, rendered a chunk at a time (by the
//! [`crate::delivery::Renderer`]) from a view taken at the subscription's `seq`, outside the stream's
//! lock.

use super::history::Missed;
use crate::delivery::{Backlog, Frame};
use crate::json::write_json_str;
use crate::reduce::Topic;
use crate::store::{
    CallKey, DeviceMeta, Lookup, StoreView, StoredCall, StoredDevice, StoredQueue, push_documents,
};
use crate::subscriptions::Matcher;
use std::sync::Arc;

/// Call resources per snapshot frame (api.md).
pub const SNAPSHOT_CHUNK: usize = 1000;
/// Missed notifications rendered per turn of the writer.
const RESUME_FRAMES_PER_TURN: usize = 512;

/// A snapshot: `subscribed` with the first resources, then `snapshot` frames until `"more":false`. Each
/// frame holds at most [`SNAPSHOT_CHUNK`] resources: the subscription's calls (`"calls"`, when calls are
/// among its topics), then its devices (`"devices"`, when devices are), then every queue (`"queues"`).
pub struct SnapshotBacklog {
    /// The `subscribed` frame up to its resources (`{"type":"subscribed",...,"resumed":false`), until it
    /// is sent.
    head: Option<String>,
    /// The subscription's name as a JSON string.
    sub_json: String,
    view: StoreView,
    matcher: Arc<Matcher>,
    plan: Option<Plan>,
    /// Every matching call has been gathered (or calls are not among the topics).
    calls_done: bool,
    /// Devices in their default state, listed before the stored ones (those the view holds by then are
    /// left out: their stored version follows).
    defaults: std::vec::IntoIter<PlainDevice>,
    /// The last device looked at.
    devices_after: Option<Arc<str>>,
    /// Every device has been gathered (or devices are not among the topics).
    devices_done: bool,
    /// The last queue looked at.
    queues_after: Option<Arc<str>>,
    /// A resource found past the last chunk, proving there is more; it opens the next chunk.
    carry: Option<Item>,
}

/// A device resource in its default state, rendered by the door that asked for the snapshot: the store
/// keeps only devices with a state of their own, but a snapshot lists every device its subscriber may
/// know of (an owner's, or one with calls), as `GET /api/v2/devices` does.
#[derive(Debug, Clone)]
pub struct PlainDevice {
    /// Its id.
    pub id: Arc<str>,
    /// Its DN.
    pub dn: Arc<str>,
    /// The resource, compact JSON.
    pub json: String,
}

/// One resource of a snapshot.
enum Item {
    Plain(PlainDevice),
    Call(StoredCall),
    Device(StoredDevice),
    Queue(StoredQueue),
}

/// How the matching calls are found: by the matcher's index, or by walking every call.
enum Plan {
    Keys { keys: Vec<CallKey>, next: usize },
    Walk { after: Option<CallKey> },
}

impl SnapshotBacklog {
    /// A snapshot of `view` for `matcher`, opening with `head`, its devices preceded by `defaults`.
    pub fn new(
        head: String,
        sub: &str,
        view: StoreView,
        matcher: Arc<Matcher>,
        defaults: Vec<PlainDevice>,
    ) -> Self {
        let mut sub_json = String::new();
        write_json_str(&mut sub_json, sub);
        Self {
            head: Some(head),
            sub_json,
            calls_done: !matcher.topics().contains(Topic::Calls),
            devices_done: !matcher.topics().contains(Topic::Devices),
            view,
            matcher,
            plan: None,
            defaults: defaults.into_iter(),
            devices_after: None,
            queues_after: None,
            carry: None,
        }
    }

    /// Appends matching resources to `items` until it holds `want`: calls first, then devices.
    fn gather(&mut self, want: usize, items: &mut Vec<Item>) {
        if !self.calls_done {
            self.gather_calls(want, items);
            self.calls_done = items.len() < want;
        }
        if items.len() < want && !self.devices_done {
            while items.len() < want {
                let Some(device) = self.defaults.next() else {
                    break;
                };
                let meta = DeviceMeta {
                    key: CallKey::device(0, 0),
                    dn: Arc::clone(&device.dn),
                    device_id: Arc::clone(&device.id),
                    kept: false,
                };
                if self.view.device(&device.id).is_none() && self.matcher.matches_device(&meta) {
                    items.push(Item::Plain(device));
                }
            }
            if items.len() >= want {
                return;
            }
            let mut after = self.devices_after.take();
            for device in self.view.devices_after(after.clone()) {
                after = Some(Arc::clone(&device.meta.device_id));
                if self.matcher.matches_device(&device.meta) {
                    items.push(Item::Device(device.clone()));
                    if items.len() >= want {
                        break;
                    }
                }
            }
            self.devices_after = after;
            self.devices_done = items.len() < want;
        }
        if items.len() < want && self.matcher.topics().contains(Topic::Queues) {
            let mut after = self.queues_after.take();
            for queue in self.view.queues_after(after.clone()) {
                after = Some(Arc::clone(&queue.meta.queue_id));
                items.push(Item::Queue(queue.clone()));
                if items.len() >= want {
                    break;
                }
            }
            self.queues_after = after;
        }
    }

    /// Appends matching live calls to `items` until it holds `want`.
    fn gather_calls(&mut self, want: usize, items: &mut Vec<Item>) {
        let plan = self
            .plan
            .get_or_insert_with(|| match self.matcher.lookup() {
                Lookup::All => Plan::Walk { after: None },
                lookup => Plan::Keys {
                    keys: self.view.keys(lookup),
                    next: 0,
                },
            });
        let wanted = |call: &StoredCall| call.meta.is_live() && self.matcher.matches(&call.meta);
        match plan {
            Plan::Walk { after } => {
                for call in self.view.iter_after(*after) {
                    *after = Some(call.meta.key);
                    if wanted(call) {
                        items.push(Item::Call(call.clone()));
                        if items.len() >= want {
                            break;
                        }
                    }
                }
            }
            Plan::Keys { keys, next } => {
                while *next < keys.len() && items.len() < want {
                    if let Some(call) = self.view.get(keys[*next]).filter(|call| wanted(call)) {
                        items.push(Item::Call(call.clone()));
                    }
                    *next += 1;
                }
            }
        }
    }
}

impl Backlog for SnapshotBacklog {
    fn next_frames(&mut self, out: &mut Vec<Frame>) -> bool {
        let mut items = Vec::with_capacity(SNAPSHOT_CHUNK + 1);
        items.extend(self.carry.take());
        self.gather(SNAPSHOT_CHUNK + 1, &mut items);
        let more = items.len() > SNAPSHOT_CHUNK;
        if more {
            self.carry = items.pop();
        }
        let mut calls = Vec::with_capacity(items.len());
        let mut devices = Vec::new();
        let mut plain = Vec::new();
        let mut queues = Vec::new();
        for item in items {
            match item {
                Item::Call(call) => calls.push(call),
                Item::Plain(device) => plain.push(device),
                Item::Device(device) => devices.push(device),
                Item::Queue(queue) => queues.push(queue),
            }
        }
        let size: usize = calls.iter().map(|call| call.json_len() + 1).sum::<usize>()
            + plain.iter().map(|d| d.json.len() + 1).sum::<usize>()
            + devices.iter().map(|d| d.json().len() + 1).sum::<usize>()
            + queues.iter().map(|q| q.json().len() + 1).sum::<usize>();
        let mut frame = match self.head.take() {
            Some(head) => head,
            None => {
                let mut frame = String::from("{\"type\":\"snapshot\",\"sub\":");
                frame.push_str(&self.sub_json);
                frame
            }
        };
        frame.reserve(size + 48);
        let topics = self.matcher.topics();
        if topics.contains(Topic::Calls) {
            frame.push_str(",\"calls\":[");
            push_documents(&mut frame, &calls, "snapshot");
            frame.push(']');
        }
        if topics.contains(Topic::Devices) {
            frame.push_str(",\"devices\":[");
            let docs = plain.iter().map(|device| device.json.as_str());
            push_docs(
                &mut frame,
                docs.chain(devices.iter().map(StoredDevice::json)),
            );
            frame.push(']');
        }
        if topics.contains(Topic::Queues) {
            frame.push_str(",\"queues\":[");
            push_docs(&mut frame, queues.iter().map(StoredQueue::json));
            frame.push(']');
        }
        frame.push_str(if more {
            ",\"more\":true}"
        } else {
            ",\"more\":false}"
        });
        out.push(Frame::Text(frame.into()));
        more
    }
}

/// Appends `docs` to `out`, separated by commas.
fn push_docs<'a>(out: &mut String, docs: impl Iterator<Item = &'a str>) {
    for (i, doc) in docs.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(doc);
    }
}

/// The notifications a resume missed that match the subscription, as they were published.
pub struct ResumeBacklog {
    missed: Missed,
    matcher: Arc<Matcher>,
}

impl ResumeBacklog {
    /// The missed notifications in `missed` that `matcher` matches.
    pub fn new(missed: Missed, matcher: Arc<Matcher>) -> Self {
        Self { missed, matcher }
    }
}

impl Backlog for ResumeBacklog {
    fn next_frames(&mut self, out: &mut Vec<Frame>) -> bool {
        let mut rendered = 0;
        while rendered < RESUME_FRAMES_PER_TURN {
            let Some(entry) = self.missed.next_entry() else {
                return false;
            };
            if self.matcher.matches_meta(&entry.meta) {
                match entry.frame.plain() {
                    Ok(frame) => out.push(Frame::Text(frame)),
                    // A fault of this process, logged; the resume goes on.
                    Err(error) => tracing::error!(seq = entry.seq, "resume: {error}"),
                }
                rendered += 1;
            }
        }
        !self.missed.is_empty()
    }
}
