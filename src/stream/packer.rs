//! The packer: packs the frames the store and the resume history hold, in the background, so that a
//! frame costs ~150 bytes at rest instead of ~1.3 KB ([`crate::store::packing`]).
//!
//! Publication never waits for it: a frame is published plain, and the packer comes by later. It runs on
//! a thread of its own at the lowest CPU priority (nice 19), so under full load it yields the cores to
//! ingest and delivery and frames stay plain until there is CPU to spare; memory then grows as it would
//! without packing, and shrinks again when the load eases. That thread never takes the stream's lock for
//! longer than a constant-time copy of the store and the history: the packed frames are handed to an
//! ordinary task ([`run_applier`]), which swaps them in, a few dozen per hold of the lock, where the same
//! version is still held. The same frame held by both the store and the history is packed once and shared.

use super::Stream;
use super::history::History;
use crate::store::packing::{Kept, Packer};
use crate::store::{CallKey, StoreView};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often the packer looks for new frames when there were none.
const IDLE_WAIT: Duration = Duration::from_millis(250);
/// Packed frames swapped in per hold of the stream's lock (each costs ~1–2 µs there).
const PER_LOCK: usize = 64;

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

/// What the packer looks at in one round: copies taken at one position of the stream.
pub struct PackingView {
    /// The resume history.
    pub history: History,
    /// The store.
    pub store: StoreView,
    /// The newest position.
    pub newest: u64,
}

/// Packs the frames published after `after` that are still held plain, in stream order, handing them to
/// `keep` in batches; returns how many were packed. A frame held by both the history and the store is
/// packed once. The store is walked only when the history no longer holds every notification after
/// `after` (or holds none: `--history 0`).
pub fn pack_round(
    packer: &mut Packer,
    view: &PackingView,
    after: u64,
    mut keep: impl FnMut(Vec<PackedFrame>) -> bool,
) -> usize {
    let mut batch = Vec::with_capacity(PER_LOCK);
    let mut packed = 0;
    let mut flush = |batch: &mut Vec<PackedFrame>| -> bool {
        packed += batch.len();
        batch.is_empty() || keep(std::mem::replace(batch, Vec::with_capacity(PER_LOCK)))
    };
    let covered_from = view.history.oldest().unwrap_or(u64::MAX);
    if covered_from > after.saturating_add(1) {
        let missed = view
            .store
            .iter_after(None)
            .filter(|call| call.seq > after && call.seq < covered_from && call.frame.is_plain());
        for call in missed {
            if let Some(frame) = pack_kept(packer, &call.frame) {
                batch.push(PackedFrame {
                    seq: call.seq,
                    key: call.meta.key,
                    frame,
                });
                if batch.len() >= PER_LOCK && !flush(&mut batch) {
                    return packed;
                }
            }
        }
    }
    for entry in view.history.entries_after(after).iter() {
        if entry.seq > view.newest {
            break;
        }
        if let Some(frame) = pack_kept(packer, &entry.frame) {
            batch.push(PackedFrame {
                seq: entry.seq,
                key: entry.meta.key,
                frame,
            });
            if batch.len() >= PER_LOCK && !flush(&mut batch) {
                return packed;
            }
        }
    }
    flush(&mut batch);
    packed
}

fn pack_kept(packer: &mut Packer, frame: &Kept) -> Option<Kept> {
    match frame {
        Kept::Plain(bytes) => packer.pack(bytes),
        Kept::Packed { .. } => None,
    }
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
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|text| text.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
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
    let mut after = 0;
    while !shutdown.is_cancelled() {
        let view = stream.packing_view();
        if view.newest == after {
            std::thread::sleep(IDLE_WAIT);
            continue;
        }
        let packed = pack_round(&mut packer, &view, after, |batch| {
            tx.blocking_send(batch).is_ok()
        });
        if tx.is_closed() {
            return;
        }
        metrics::counter!("callgate_frames_packed_total").increment(packed as u64);
        after = view.newest;
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

/// Swaps packed frames in, a few at a time, until the packer stops.
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
    use crate::store::CallMeta;
    use crate::stream::Published;
    use std::time::Instant;

    fn published(number: u64, version: u64) -> Published {
        let document = format!(
            r#"{{"id":"call-{number}","state":"Established","version":{version},"capabilities":["Hangup","Hold","SendDtmf","InitiateTransfer","SingleStepTransfer","InitiateConference"],"duration":"0","mute":"Off","recordingState":"Stopped","supervisorListeningIn":false,"monitoredUserMuted":false,"monitoring":false}}"#
        );
        let head = r#""channel":"/v2/me/calls","data":{"notificationType":"StatusChange","call":"#;
        Published {
            meta: Arc::new(CallMeta {
                key: CallKey { shard: 0, number },
                dn: format!("{}", 7000 + number).into(),
                device_id: format!("dev-{number}").into(),
                call_id: format!("call-{number}").into(),
                conn_id: ConnId(number),
                state: CallState::Established,
            }),
            call: head.len()..head.len() + document.len(),
            members: format!(r#"{head}{document},"messageType":"CallStateChangeMessage"}}"#),
            ingested: Instant::now(),
        }
    }

    /// A frame held: its seq, whether it is plain, its bytes.
    type Held = Vec<(u64, bool, Vec<u8>)>;

    /// Every frame the history and the store hold.
    fn held(stream: &Stream) -> (Held, Held) {
        let view = stream.packing_view();
        let history = view
            .history
            .entries_after(0)
            .iter()
            .map(|entry| {
                let frame = entry.frame.plain().unwrap().to_vec();
                (entry.seq, entry.frame.is_plain(), frame)
            })
            .collect();
        let store = view
            .store
            .iter_after(None)
            .map(|call| {
                let frame = call.frame.plain().unwrap().to_vec();
                (call.seq, call.frame.is_plain(), frame)
            })
            .collect();
        (history, store)
    }

    fn pack_all(stream: &Stream, after: u64) -> usize {
        let mut packer = Packer::new().unwrap();
        let view = stream.packing_view();
        pack_round(&mut packer, &view, after, |batch| {
            stream.keep_packed(&batch);
            true
        })
    }

    #[test]
    fn packing_changes_no_byte_of_what_is_held_and_packs_a_shared_frame_once() {
        let stream = Stream::new("run", 100, OutboxLimits::default());
        stream.publish((1..=3).map(|n| published(n, 1)).collect());
        stream.publish(vec![published(2, 2)]);
        let (history, store) = held(&stream);
        // Seq 1..4 in the history; the store holds seq 1, 4 (call 2's newest) and 3.
        assert_eq!(pack_all(&stream, 0), 4, "one per frame, shared ones once");
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
        // Nothing left to pack.
        assert_eq!(pack_all(&stream, 0), 0);
    }

    #[test]
    fn a_version_superseded_while_packing_is_not_swapped_into_the_store() {
        let stream = Stream::new("run", 100, OutboxLimits::default());
        stream.publish(vec![published(1, 1)]);
        let mut packer = Packer::new().unwrap();
        let view = stream.packing_view();
        let mut batches = Vec::new();
        pack_round(&mut packer, &view, 0, |batch| {
            batches.push(batch);
            true
        });
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
        assert_eq!(pack_all(&stream, 0), 5);
        let (history, store) = held(&stream);
        assert!(history.is_empty());
        assert_eq!(store.len(), 5);
        assert!(store.iter().all(|(_, plain, _)| !plain));
        // A later round looks only at what came after.
        stream.publish(vec![published(6, 1)]);
        assert_eq!(pack_all(&stream, 5), 1);
    }

    #[test]
    fn frames_evicted_from_a_short_history_are_packed_in_the_store() {
        let stream = Stream::new("run", 2, OutboxLimits::default());
        stream.publish((1..=5).map(|n| published(n, 1)).collect());
        // The history holds seq 4 and 5; the store also 1, 2 and 3.
        assert_eq!(pack_all(&stream, 0), 5);
        let (_, store) = held(&stream);
        assert!(store.iter().all(|(_, plain, _)| !plain));
    }

    #[tokio::test]
    async fn the_thread_packs_what_is_published_and_stops_at_shutdown() {
        let stream = Arc::new(Stream::new("run", 100, OutboxLimits::default()));
        let shutdown = CancellationToken::new();
        let packed = start(Arc::clone(&stream), shutdown.clone()).unwrap();
        let applier = tokio::spawn(run_applier(Arc::clone(&stream), packed));
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
