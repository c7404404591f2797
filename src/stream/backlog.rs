//! What a new subscription receives before live notifications: its snapshot, in chunks, or the
//! notifications its resume missed. Both are [`Backlog`]s, rendered a chunk at a time (by the
//! [`crate::delivery::Renderer`]) from a view taken at the subscription's `seq`, outside the stream's
//! lock.

use super::history::Missed;
use crate::delivery::{Backlog, Frame};
use crate::json::write_json_str;
use crate::store::{CallKey, Lookup, StoreView, StoredCall, push_documents};
use crate::subscriptions::Matcher;
use std::sync::Arc;

/// Call resources per snapshot frame (api.md).
pub const SNAPSHOT_CHUNK: usize = 1000;
/// Missed notifications rendered per turn of the writer.
const RESUME_FRAMES_PER_TURN: usize = 512;

/// A snapshot: `subscribed` with the first calls, then `snapshot` frames until `"more":false`.
pub struct SnapshotBacklog {
    /// The `subscribed` frame up to its calls (`{"type":"subscribed",...,"calls":[`), until it is sent.
    head: Option<String>,
    /// The subscription's name as a JSON string.
    sub_json: String,
    view: StoreView,
    matcher: Arc<Matcher>,
    plan: Option<Plan>,
    /// A call found past the last chunk, proving there is more; it opens the next chunk.
    carry: Option<StoredCall>,
}

/// How the matching calls are found: by the matcher's index, or by walking every call.
enum Plan {
    Keys { keys: Vec<CallKey>, next: usize },
    Walk { after: Option<CallKey> },
}

impl SnapshotBacklog {
    /// A snapshot of `view` for `matcher`, opening with `head`.
    pub fn new(head: String, sub: &str, view: StoreView, matcher: Arc<Matcher>) -> Self {
        let mut sub_json = String::new();
        write_json_str(&mut sub_json, sub);
        Self {
            head: Some(head),
            sub_json,
            view,
            matcher,
            plan: None,
            carry: None,
        }
    }

    /// Appends matching live calls to `calls` until it holds `want`.
    fn gather(&mut self, want: usize, calls: &mut Vec<StoredCall>) {
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
                        calls.push(call.clone());
                        if calls.len() >= want {
                            break;
                        }
                    }
                }
            }
            Plan::Keys { keys, next } => {
                while *next < keys.len() && calls.len() < want {
                    if let Some(call) = self.view.get(keys[*next]).filter(|call| wanted(call)) {
                        calls.push(call.clone());
                    }
                    *next += 1;
                }
            }
        }
    }
}

impl Backlog for SnapshotBacklog {
    fn next_frames(&mut self, out: &mut Vec<Frame>) -> bool {
        let mut calls = Vec::with_capacity(SNAPSHOT_CHUNK + 1);
        calls.extend(self.carry.take());
        self.gather(SNAPSHOT_CHUNK + 1, &mut calls);
        let more = calls.len() > SNAPSHOT_CHUNK;
        if more {
            self.carry = calls.pop();
        }
        let size: usize = calls.iter().map(|call| call.json_len() + 1).sum();
        let mut frame = match self.head.take() {
            Some(head) => head,
            None => {
                let mut frame = String::from("{\"type\":\"snapshot\",\"sub\":");
                frame.push_str(&self.sub_json);
                frame.push_str(",\"calls\":[");
                frame
            }
        };
        frame.reserve(size + 16);
        push_documents(&mut frame, &calls, "snapshot");
        frame.push_str(if more {
            "],\"more\":true}"
        } else {
            "],\"more\":false}"
        });
        out.push(Frame::Text(frame.into()));
        more
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
            if self.matcher.matches(&entry.meta) {
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
