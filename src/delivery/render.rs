//! The renderers: threads that render backlogs (snapshot chunks, a resume's missed notifications) off
//! the runtime, at a low CPU priority.
//!
//! A 100,000-call snapshot is ~130 MB of JSON and, with frames packed at rest, 100,000 frames to unpack:
//! a few hundred milliseconds of CPU. Rendered by the connection's writer, that CPU came out of the same
//! runtime threads that deliver live notifications, and on a two-core machine the other clients' p99
//! doubled while a snapshot was sent. On these threads, at nice 10, the kernel gives live delivery the
//! cores first and the snapshot what is left; the writer meanwhile only writes what was rendered.
//!
//! Policy at the bound: each outbox has at most one chunk being rendered and one waiting to be written
//! (the next chunk is asked for when the writer takes the previous one), so the queue of jobs holds at
//! most one job per connection, and connections are bounded by their permits. A job whose connection went
//! away meanwhile is dropped unrendered. A backlog that panics while rendering fails its connection only
//! (closed with 1011) and the thread goes on.

use super::outbox::{Backlog, Frame, Outbox};
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, Weak};

/// The nice value of the rendering threads: below delivery, above the frame packer (nice 19), so that
/// a snapshot still progresses on a machine whose spare CPU the packer would take.
const RENDER_NICE: libc::c_int = 10;

/// One chunk to render for one outbox.
struct Job {
    outbox: Weak<Outbox>,
    backlog: Box<dyn Backlog>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    more: Condvar,
}

/// A handle on the rendering threads; cloning it shares them.
#[derive(Clone, Default)]
pub struct Renderer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer").finish_non_exhaustive()
    }
}

impl Renderer {
    /// Starts `threads` rendering threads; they run until [`Renderer::close`].
    pub fn start(threads: usize) -> std::io::Result<Self> {
        let renderer = Self::default();
        for n in 0..threads.max(1) {
            let shared = Arc::clone(&renderer.shared);
            std::thread::Builder::new()
                .name(format!("callgate-render-{n}"))
                .spawn(move || {
                    lower_priority(RENDER_NICE);
                    run(&shared);
                })?;
        }
        Ok(renderer)
    }

    /// Queues the next chunk of `backlog` for `outbox`; the frames come back through
    /// [`Outbox::rendered`].
    pub(super) fn submit(&self, outbox: Weak<Outbox>, backlog: Box<dyn Backlog>) {
        let mut queue = lock(&self.shared.queue);
        if queue.closed {
            return;
        }
        queue.jobs.push_back(Job { outbox, backlog });
        drop(queue);
        self.shared.more.notify_one();
    }

    /// Stops the threads once the jobs already queued are done (a shutting-down writer may still wait
    /// for its chunk). Later submissions are dropped.
    pub fn close(&self) {
        lock(&self.shared.queue).closed = true;
        self.shared.more.notify_all();
    }
}

fn lock(queue: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    // Plain data: a panic elsewhere while holding it leaves nothing half-done.
    queue
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn run(shared: &Shared) {
    loop {
        let job = {
            let mut queue = lock(&shared.queue);
            loop {
                if let Some(job) = queue.jobs.pop_front() {
                    break job;
                }
                if queue.closed {
                    return;
                }
                queue = shared
                    .more
                    .wait(queue)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        };
        render(job);
    }
}

fn render(job: Job) {
    let Job {
        outbox,
        mut backlog,
    } = job;
    // A connection that is gone needs nothing rendered.
    let Some(outbox) = outbox.upgrade() else {
        return;
    };
    let mut frames: Vec<Frame> = Vec::new();
    let rendering = std::panic::AssertUnwindSafe(|| backlog.next_frames(&mut frames));
    match std::panic::catch_unwind(rendering) {
        Ok(more) => outbox.rendered(frames, more.then_some(backlog)),
        Err(panic) => {
            let message = crate::supervise::panic_message(&*panic);
            tracing::error!("rendering a backlog panicked: {message}");
            metrics::counter!("callgate_render_failures_total").increment(1);
            outbox.render_failed();
        }
    }
}

/// Lowers the calling thread to nice `nice` (Linux: per thread). Work that should take only the CPU live
/// delivery leaves (rendering backlogs, checking passwords) runs on such threads.
pub fn lower_priority(nice: libc::c_int) {
    // SAFETY: setpriority with this thread's id changes only this thread's nice value (Linux).
    let result =
        unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
    if result != 0 {
        tracing::warn!(
            "a background thread runs at normal priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::{DrainError, OutboxLimits};
    use crate::store::CallKey;
    use std::time::Duration;

    /// `total` frames named `b0`, `b1`, ..., `per_turn` at a time; panics at frame `panic_at`.
    struct Numbered {
        next: usize,
        total: usize,
        per_turn: usize,
        panic_at: Option<usize>,
    }

    impl Backlog for Numbered {
        fn next_frames(&mut self, out: &mut Vec<Frame>) -> bool {
            let end = (self.next + self.per_turn).min(self.total);
            for n in self.next..end {
                assert_ne!(Some(n), self.panic_at, "a backlog that panics");
                out.push(Frame::Text(format!("b{n}").into()));
            }
            self.next = end;
            self.next < self.total
        }
    }

    fn numbered(total: usize, per_turn: usize, panic_at: Option<usize>) -> Box<Numbered> {
        Box::new(Numbered {
            next: 0,
            total,
            per_turn,
            panic_at,
        })
    }

    fn text(frame: &Frame) -> String {
        match frame {
            Frame::Text(bytes) | Frame::Pong(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        }
    }

    /// Drains as a writer does, waiting for the writer's wake-ups, until `want` frames came or it fails.
    async fn drain_until(outbox: &Outbox, want: usize) -> Result<Vec<String>, DrainError> {
        let mut all = Vec::new();
        while all.len() < want {
            tokio::time::timeout(Duration::from_secs(5), outbox.ready())
                .await
                .expect("the writer is woken");
            let mut frames = Vec::new();
            outbox.drain(&mut frames)?;
            all.extend(frames.iter().map(text));
        }
        Ok(all)
    }

    #[tokio::test]
    async fn a_rendered_backlog_comes_in_order_between_what_came_before_and_after_it() {
        let renderer = Renderer::start(2).unwrap();
        let outbox = Outbox::rendered_by(OutboxLimits::default(), renderer.clone());
        outbox.push_control("before".into());
        outbox.push_backlog(numbered(7, 2, None));
        outbox.push_notification(
            CallKey {
                shard: 0,
                number: 1,
            },
            "after".into(),
        );
        let got = drain_until(&outbox, 9).await.unwrap();
        assert_eq!(
            got,
            ["before", "b0", "b1", "b2", "b3", "b4", "b5", "b6", "after"]
        );
        let mut rest = Vec::new();
        outbox.drain(&mut rest).unwrap();
        assert!(rest.is_empty());
        renderer.close();
    }

    #[tokio::test]
    async fn a_writer_waiting_for_a_chunk_is_not_woken_in_vain() {
        use futures_util::FutureExt;
        // A renderer whose thread is not started yet: the chunk stays asked for.
        let renderer = Renderer::default();
        let outbox = Outbox::rendered_by(OutboxLimits::default(), renderer.clone());
        outbox.push_backlog(numbered(1, 1, None));
        outbox.ready().await;
        let mut frames = Vec::new();
        outbox.drain(&mut frames).unwrap();
        assert!(frames.is_empty());
        // Woken again only by the chunk: a writer that spun here would burn a core per snapshot.
        assert!(outbox.ready().now_or_never().is_none());
        let shared = Arc::clone(&renderer.shared);
        std::thread::spawn(move || run(&shared));
        assert_eq!(drain_until(&outbox, 1).await.unwrap(), ["b0"]);
        renderer.close();
    }

    #[tokio::test]
    async fn a_backlog_that_panics_fails_its_connection_only() {
        let renderer = Renderer::start(1).unwrap();
        let failing = Outbox::rendered_by(OutboxLimits::default(), renderer.clone());
        failing.push_backlog(numbered(4, 1, Some(2)));
        assert_eq!(
            drain_until(&failing, 4).await,
            Err(DrainError::RenderFailed)
        );
        let other = Outbox::rendered_by(OutboxLimits::default(), renderer.clone());
        other.push_backlog(numbered(3, 1, None));
        assert_eq!(drain_until(&other, 3).await.unwrap(), ["b0", "b1", "b2"]);
        renderer.close();
    }

    #[test]
    fn a_job_for_a_connection_that_is_gone_is_dropped_unrendered() {
        /// Records whether it was rendered.
        struct Watched(Arc<std::sync::atomic::AtomicBool>);
        impl Backlog for Watched {
            fn next_frames(&mut self, _: &mut Vec<Frame>) -> bool {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
                false
            }
        }
        let rendered = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let renderer = Renderer::default();
        let outbox = Outbox::rendered_by(OutboxLimits::default(), renderer.clone());
        outbox.push_backlog(Box::new(Watched(Arc::clone(&rendered))));
        let mut frames = Vec::new();
        outbox.drain(&mut frames).unwrap();
        drop(outbox);
        renderer.close();
        run(&renderer.shared);
        assert!(lock(&renderer.shared.queue).jobs.is_empty());
        assert!(!rendered.load(std::sync::atomic::Ordering::Relaxed));
    }

    #[test]
    fn closed_threads_stop() {
        let renderer = Renderer::start(2).unwrap();
        renderer.close();
        let outbox = Outbox::rendered_by(OutboxLimits::default(), renderer.clone());
        outbox.push_backlog(numbered(1, 1, None));
        outbox.drain(&mut Vec::new()).unwrap();
        assert!(
            lock(&renderer.shared.queue).jobs.is_empty(),
            "dropped once closed"
        );
    }
}
