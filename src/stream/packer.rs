//! The packer: packs the frames the store and the resume history hold, in the background, so that a
//! frame costs ~150 bytes at rest instead of ~1.3 KB ([`crate::store::packing`]).
//!
//! Publication never waits for it: a frame is published plain, and the packer comes by later. It runs on
//! a thread of its own at the lowest CPU priority (nice 19), so under full load it yields the cores to
//! ingest and delivery and frames stay plain until there is CPU to spare; memory then grows as it would
//! without packing, and shrinks again when the load eases.
//!
//! It never keeps a copy of the store or the history: a copy held would make every publication copy the
//! tree nodes it changes (that cost ingest 40% of its throughput in a first version that packed from
//! copies). Instead it takes the plain frames it will pack under the stream's lock, a bounded number at a
//! time (their bytes are shared, not copied), packs them outside it, and hands them to an ordinary task
//! ([`run_applier`]) that swaps them in, a few dozen per hold of the lock, where the same version is still
//! held. The same frame held by both the store and the history is packed once and shared.

use super::Stream;
use crate::store::CallKey;
use crate::store::packing::{Kept, Packer};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often the packer looks for new frames when there were none.
const IDLE_WAIT: Duration = Duration::from_millis(250);
/// Entries looked at per hold of the stream's lock when taking frames to pack (~50 ns each).
const VISIT_PER_LOCK: usize = 256;
/// Packed frames swapped in per hold of the stream's lock (each ~0.3 µs there).
const KEEP_PER_LOCK: usize = 64;

/// A plain frame to pack: the notification at `seq`, about the call `key`.
#[derive(Debug)]
pub struct ToPack {
    /// The notification's position.
    pub seq: u64,
    /// The call it is about.
    pub key: CallKey,
    /// The frame, shared with the store or the history.
    pub frame: Bytes,
}

/// A frame packed, for the notification at `seq` about the call `key`.
#[derive(Debug)]
pub struct PackedFrame {
    /// The notification's position.
    pub seq: u64,
    /// The call it is about.
    pub key: CallKey,
    /// The packed frame.
    pub frame: Kept,
}

/// How far the packer has come.
#[derive(Debug, Default)]
pub struct PackCursor {
    /// Every notification up to here has been taken (or was no longer held).
    after: u64,
    /// Notifications the history dropped before the packer reached them (or all, with `--history 0`):
    /// their frames are looked for in the store, which is walked from `from` for the seqs in `seqs`.
    walk: Option<StoreWalk>,
}

#[derive(Debug)]
struct StoreWalk {
    from: Option<CallKey>,
    seqs: std::ops::RangeInclusive<u64>,
}

impl Stream {
    /// Up to [`VISIT_PER_LOCK`] entries' worth of plain frames published after the cursor, oldest
    /// first, taken under the lock (constant work per call); moves the cursor past them. The flag says
    /// whether the packer has caught up with the stream.
    pub fn frames_to_pack(&self, cursor: &mut PackCursor) -> (Vec<ToPack>, bool) {
        let core = self.lock();
        let mut out = Vec::new();
        let newest = core.seq;
        let covered_from = core.history.oldest().unwrap_or(newest + 1);
        // A walk under way is finished first: what is published meanwhile is after its range, and the
        // next walk (or the history) covers it. Restarting it instead would never reach the end of a
        // large store while publication goes on.
        if cursor.walk.is_none() && cursor.after + 1 < covered_from {
            // Some were dropped from the history unseen: walk the store for them.
            let last = covered_from.saturating_sub(1).min(newest);
            cursor.walk = Some(StoreWalk {
                from: None,
                seqs: cursor.after + 1..=last,
            });
            cursor.after = last;
        }
        if let Some(walk) = &mut cursor.walk {
            let mut visited = 0;
            for call in core.store.iter_after(walk.from) {
                visited += 1;
                walk.from = Some(call.meta.key);
                if let Kept::Plain(frame) = &call.frame
                    && walk.seqs.contains(&call.seq)
                {
                    out.push(ToPack {
                        seq: call.seq,
                        key: call.meta.key,
                        frame: frame.clone(),
                    });
                }
                if visited >= VISIT_PER_LOCK {
                    return (out, false);
                }
            }
            cursor.walk = None;
            return (out, false);
        }
        cursor.after = core
            .history
            .plain_after(cursor.after, VISIT_PER_LOCK, |entry, frame| {
                out.push(ToPack {
                    seq: entry.seq,
                    key: entry.meta.key(),
                    frame: frame.clone(),
                });
            });
        (out, cursor.after >= newest)
    }

    /// Swaps packed frames in where the history and the store still hold the same notification plain.
    pub fn keep_packed(&self, packed: &[PackedFrame]) {
        let mut core = self.lock();
        for frame in packed {
            core.history.keep_packed(frame.seq, &frame.frame);
            core.store.keep_packed(frame.key, frame.seq, &frame.frame);
        }
    }
}

/// Packs `frames`; those packing cannot shrink are left out (they stay plain).
pub fn pack(packer: &mut Packer, frames: Vec<ToPack>) -> Vec<PackedFrame> {
    frames
        .into_iter()
        .filter_map(|to_pack| {
            Some(PackedFrame {
                seq: to_pack.seq,
                key: to_pack.key,
                frame: packer.pack(&to_pack.frame)?,
            })
        })
        .collect()
}

/// Starts the packer's thread; it stops when `shutdown` is cancelled. The packed frames come out of
/// the returned receiver, for [`run_applier`]. When the thread dies, the receiver ends.
pub fn start(
    stream: Arc<Stream>,
    shutdown: CancellationToken,
) -> std::io::Result<mpsc::Receiver<Vec<PackedFrame>>> {
    let (tx, rx) = mpsc::channel(4);
    std::thread::Builder::new()
        .name("callgate-packer".into())
        .spawn(move || {
            lower_priority();
            let run = std::panic::AssertUnwindSafe(|| run_packer(&stream, &shutdown, &tx));
            if let Err(panic) = std::panic::catch_unwind(run) {
                let message = crate::supervise::panic_message(&*panic);
                tracing::error!("the frame packer panicked: {message}");
            }
        })?;
    Ok(rx)
}

fn run_packer(stream: &Stream, shutdown: &CancellationToken, tx: &mpsc::Sender<Vec<PackedFrame>>) {
    let mut packer = match Packer::new() {
        Ok(packer) => packer,
        Err(error) => {
            tracing::error!("the frame packer cannot start: {error}");
            return;
        }
    };
    let mut cursor = PackCursor::default();
    let mut batch = Vec::with_capacity(KEEP_PER_LOCK);
    while !shutdown.is_cancelled() {
        let (frames, caught_up) = stream.frames_to_pack(&mut cursor);
        batch.extend(pack(&mut packer, frames));
        if batch.len() >= KEEP_PER_LOCK || (caught_up && !batch.is_empty()) {
            metrics::counter!("callgate_frames_packed_total").increment(batch.len() as u64);
            let full = std::mem::replace(&mut batch, Vec::with_capacity(KEEP_PER_LOCK));
            if tx.blocking_send(full).is_err() {
                return;
            }
        }
        if caught_up {
            std::thread::sleep(IDLE_WAIT);
        }
    }
}

/// Lowers the calling thread to nice 19: packing is worth only the CPU nothing else wants.
fn lower_priority() {
    // SAFETY: setpriority with this thread's id changes only this thread's nice value (Linux).
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
    if result != 0 {
        tracing::warn!(
            "the frame packer runs at normal priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Swaps packed frames in, a batch per hold of the lock, until the packer stops.
pub async fn run_applier(stream: Arc<Stream>, mut packed: mpsc::Receiver<Vec<PackedFrame>>) {
    while let Some(batch) = packed.recv().await {
        stream.keep_packed(&batch);
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::OutboxLimits;
    use crate::event::ConnId;
    use crate::reduce::CallState;
    use crate::store::{CallMeta, Meta};
    use crate::stream::Published;
    use std::time::Instant;

    fn published(number: u64, version: u64) -> Published {
        let document = format!(
            r#"{{"id":"call-{number}","state":"Established","version":{version},"capabilities":["Hangup","Hold","SendDtmf","InitiateTransfer","SingleStepTransfer","InitiateConference"],"duration":"0","mute":"Off","recordingState":"Stopped","supervisorListeningIn":false,"monitoredUserMuted":false,"monitoring":false}}"#
        );
        let head = r#""channel":"/v2/me/calls","data":{"notificationType":"StatusChange","call":"#;
        Published {
            meta: Meta::Call(Arc::new(CallMeta {
                key: CallKey { shard: 0, number },
                dn: format!("{}", 7000 + number).into(),
                device_id: format!("dev-{number}").into(),
                call_id: format!("call-{number}").into(),
                conn_id: ConnId(number),
                state: CallState::Established,
            })),
            call: head.len()..head.len() + document.len(),
            members: format!(r#"{head}{document},"messageType":"CallStateChangeMessage"}}"#),
            ingested: Instant::now(),
        }
    }

    /// A frame held: its seq, whether it is plain, its bytes.
    type Held = Vec<(u64, bool, Vec<u8>)>;

    /// Every frame the history and the store hold.
    fn held(stream: &Stream) -> (Held, Held) {
        let core = stream.lock();
        let history = core
            .history
            .iter()
            .map(|entry| {
                let frame = entry.frame.plain().unwrap().to_vec();
                (entry.seq, entry.frame.is_plain(), frame)
            })
            .collect();
        let store = core
            .store
            .iter_after(None)
            .map(|call| {
                let frame = call.frame.plain().unwrap().to_vec();
                (call.seq, call.frame.is_plain(), frame)
            })
            .collect();
        (history, store)
    }

    /// Packs until caught up, as the thread does; returns how many frames were packed.
    fn pack_all(stream: &Stream, cursor: &mut PackCursor) -> usize {
        let mut packer = Packer::new().unwrap();
        let mut packed = 0;
        loop {
            let (frames, caught_up) = stream.frames_to_pack(cursor);
            let batch = pack(&mut packer, frames);
            packed += batch.len();
            stream.keep_packed(&batch);
            if caught_up {
                return packed;
            }
        }
    }

    #[test]
    fn packing_changes_no_byte_of_what_is_held_and_packs_a_shared_frame_once() {
        let stream = Stream::new("run", 100, OutboxLimits::default());
        stream.publish((1..=3).map(|n| published(n, 1)).collect());
        stream.publish(vec![published(2, 2)]);
        let (history, store) = held(&stream);
        // Seq 1..4 in the history; the store holds seq 1, 4 (call 2's newest) and 3.
        assert_eq!(
            pack_all(&stream, &mut PackCursor::default()),
            4,
            "one per frame, shared ones once"
        );
        let (packed_history, packed_store) = held(&stream);
        let bytes = |held: &[(u64, bool, Vec<u8>)]| -> Vec<(u64, Vec<u8>)> {
            held.iter().map(|(seq, _, b)| (*seq, b.clone())).collect()
        };
        assert_eq!(bytes(&packed_history), bytes(&history));
        assert_eq!(bytes(&packed_store), bytes(&store));
        assert!(
            packed_history
                .iter()
                .chain(&packed_store)
                .all(|(_, plain, _)| !plain)
        );
        // The store's call documents read the same.
        let view = stream.view();
        let document = view
            .get(CallKey {
                shard: 0,
                number: 2,
            })
            .unwrap()
            .json()
            .unwrap();
        let document: serde_json::Value = serde_json::from_slice(&document).unwrap();
        assert_eq!(document["version"], 2);
        // Nothing left to pack, even from the start.
        assert_eq!(pack_all(&stream, &mut PackCursor::default()), 0);
    }

    #[test]
    fn a_version_superseded_while_packing_is_not_swapped_into_the_store() {
        let stream = Stream::new("run", 100, OutboxLimits::default());
        stream.publish(vec![published(1, 1)]);
        let mut packer = Packer::new().unwrap();
        let (frames, _) = stream.frames_to_pack(&mut PackCursor::default());
        let batches = [pack(&mut packer, frames)];
        // Version 2 is published between packing and swapping in.
        stream.publish(vec![published(1, 2)]);
        for batch in &batches {
            stream.keep_packed(batch);
        }
        let (history, store) = held(&stream);
        assert_eq!(
            history.iter().map(|(s, p, _)| (*s, *p)).collect::<Vec<_>>(),
            [(1, false), (2, true)]
        );
        assert_eq!(
            store.iter().map(|(s, p, _)| (*s, *p)).collect::<Vec<_>>(),
            [(2, true)]
        );
    }

    #[test]
    fn without_a_history_the_store_is_packed_from_its_own_walk() {
        let stream = Stream::new("run", 0, OutboxLimits::default());
        stream.publish((1..=5).map(|n| published(n, 1)).collect());
        let mut cursor = PackCursor::default();
        assert_eq!(pack_all(&stream, &mut cursor), 5);
        let (history, store) = held(&stream);
        assert!(history.is_empty());
        assert_eq!(store.len(), 5);
        assert!(store.iter().all(|(_, plain, _)| !plain));
        // A later round looks only at what came after.
        stream.publish(vec![published(6, 1)]);
        assert_eq!(pack_all(&stream, &mut cursor), 1);
    }

    #[test]
    fn a_store_walk_reaches_its_end_while_publication_goes_on() {
        // Without a history the store is walked, 256 entries a turn; a publication between turns must
        // not send the walk back to the start, or a large store would never be packed.
        let stream = Stream::new("run", 0, OutboxLimits::default());
        stream.publish((1..=1_000).map(|n| published(n, 1)).collect());
        let mut cursor = PackCursor::default();
        let mut packer = Packer::new().unwrap();
        let (first, caught_up) = stream.frames_to_pack(&mut cursor);
        assert_eq!(first.len(), VISIT_PER_LOCK, "a bounded turn under the lock");
        assert!(!caught_up);
        stream.keep_packed(&pack(&mut packer, first));
        let mut version = 1;
        for _ in 0..8 {
            let (frames, _) = stream.frames_to_pack(&mut cursor);
            stream.keep_packed(&pack(&mut packer, frames));
            version += 1;
            stream.publish(vec![published(1, version)]);
        }
        let (_, store) = held(&stream);
        let plain = store.iter().filter(|(_, plain, _)| *plain).count();
        assert_eq!(
            plain, 1,
            "all but the newest version of call 1, published last"
        );
    }

    #[test]
    fn the_history_is_taken_a_bounded_turn_at_a_time() {
        let stream = Stream::new("run", 2_000, OutboxLimits::default());
        stream.publish((1..=1_000).map(|n| published(n, 1)).collect());
        let mut cursor = PackCursor::default();
        let (frames, caught_up) = stream.frames_to_pack(&mut cursor);
        assert_eq!(frames.len(), VISIT_PER_LOCK);
        assert!(!caught_up);
        assert_eq!(frames[0].seq, 1);
        let (frames, _) = stream.frames_to_pack(&mut cursor);
        assert_eq!(
            frames[0].seq,
            VISIT_PER_LOCK as u64 + 1,
            "the next turn goes on from there"
        );
        assert_eq!(pack_all(&stream, &mut cursor), 1_000 - 2 * VISIT_PER_LOCK);
    }

    #[test]
    fn frames_evicted_from_a_short_history_are_packed_in_the_store() {
        let stream = Stream::new("run", 2, OutboxLimits::default());
        stream.publish((1..=5).map(|n| published(n, 1)).collect());
        // The history holds seq 4 and 5; the store also 1, 2 and 3.
        assert_eq!(pack_all(&stream, &mut PackCursor::default()), 5);
        let (_, store) = held(&stream);
        assert!(store.iter().all(|(_, plain, _)| !plain));
    }

    #[tokio::test]
    async fn the_thread_packs_what_is_published_and_stops_at_shutdown() {
        let stream = Arc::new(Stream::new("run", 100, OutboxLimits::default()));
        let shutdown = CancellationToken::new();
        let packed = start(Arc::clone(&stream), shutdown.clone()).unwrap();
        let applier = tokio::spawn(run_applier(Arc::clone(&stream), packed));
        // The packer's thread gets to nice 19 (field 19 of its /proc stat line, counting the pid and
        // the parenthesised name as fields 1 and 2).
        let niced = async {
            loop {
                let tasks = std::fs::read_dir("/proc/self/task").unwrap();
                for task in tasks.flatten() {
                    let comm =
                        std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                    let stat =
                        std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                    let nice = stat
                        .rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().nth(16).map(str::to_owned));
                    if comm.trim() == "callgate-packer" && nice.as_deref() == Some("19") {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), niced)
            .await
            .expect("the packer's thread runs at nice 19");
        stream.publish((1..=50).map(|n| published(n, 1)).collect());
        let all_packed = async {
            loop {
                let (history, store) = held(&stream);
                if history.iter().chain(&store).all(|(_, plain, _)| !plain) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), all_packed)
            .await
            .expect("packed within 10 s");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), applier)
            .await
            .expect("the applier ends once the thread stops")
            .unwrap();
    }
}
