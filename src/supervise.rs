//! Supervision of the gateway's long-lived tasks (reducer shards, publisher, sweeper, accept loops).
//!
//! Each runs until shutdown. One that ends earlier, by a panic or by returning, leaves the gateway unable
//! to do its job while it may still look healthy: the supervisor logs the cause and reports it, and
//! `serve` then stops being ready and exits non-zero so that the orchestrator restarts it. Once
//! [`Supervisor::stop`] is called, tasks ending is expected and reported nowhere.

use futures_util::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Runs critical tasks and reports the first one that dies.
#[derive(Clone, Default)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    stopping: AtomicBool,
    failed: CancellationToken,
    cause: Mutex<Option<String>>,
    tasks: TaskTracker,
}

impl Supervisor {
    /// A supervisor with no tasks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `task` (named `name` in logs) until it ends; an end before [`Supervisor::stop`] is a failure.
    pub fn spawn<F>(&self, name: impl Into<String>, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let name = name.into();
        self.inner.tasks.spawn(async move {
            let ended = AssertUnwindSafe(task).catch_unwind().await;
            if inner.stopping.load(Ordering::Acquire) {
                return;
            }
            let cause = match ended {
                Ok(()) => format!("{name} stopped unexpectedly"),
                Err(panic) => format!("{name} panicked: {}", panic_message(&*panic)),
            };
            tracing::error!("{cause}");
            let mut first = inner.cause.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert(cause);
            drop(first);
            inner.failed.cancel();
        });
    }

    /// From now on tasks are expected to end (shutdown).
    pub fn stop(&self) {
        self.inner.stopping.store(true, Ordering::Release);
        self.inner.tasks.close();
    }

    /// Completes with the cause when a task has died before [`Supervisor::stop`].
    pub async fn failed(&self) -> String {
        self.inner.failed.cancelled().await;
        self.cause().unwrap_or_default()
    }

    /// The first failure, if any.
    pub fn cause(&self) -> Option<String> {
        self.inner
            .cause
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits up to `grace` for every task to end after [`Supervisor::stop`]; false if some did not.
    pub async fn wait(&self, grace: Duration) -> bool {
        tokio::time::timeout(grace, self.inner.tasks.wait())
            .await
            .is_ok()
    }
}

/// A fault the black-box tests inject into the real binary, to see that a dying task ends the process
/// (`tests/serve_faults.rs`). Debug builds only: with `CALLGATE_INJECT_FAULT=NAME:VALUE` in the
/// environment, the point `name` panics when it meets `value`. Compiled out of release builds.
#[cfg(debug_assertions)]
pub fn fault_point(name: &str, value: &str) {
    static FAULT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let fault = FAULT.get_or_init(|| std::env::var("CALLGATE_INJECT_FAULT").ok());
    if let Some((point, at)) = fault.as_deref().and_then(|fault| fault.split_once(':'))
        && point == name
        && at == value
    {
        panic!("injected fault at {name}:{value}");
    }
}

/// Release builds: no fault is ever injected.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn fault_point(_name: &str, _value: &str) {}

/// The message a panic carried, for logs.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text
    } else {
        "(no message)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_is_reported_with_its_task_and_message() {
        let supervisor = Supervisor::new();
        supervisor.spawn("reducer shard 3", std::future::pending());
        supervisor.spawn("publisher", async { panic!("index out of range") });
        let cause = tokio::time::timeout(Duration::from_secs(5), supervisor.failed())
            .await
            .expect("a failure is reported");
        assert_eq!(cause, "publisher panicked: index out of range");
    }

    #[tokio::test]
    async fn a_task_that_returns_before_shutdown_is_a_failure() {
        let supervisor = Supervisor::new();
        supervisor.spawn("sweeper", async {});
        let cause = tokio::time::timeout(Duration::from_secs(5), supervisor.failed())
            .await
            .expect("a failure is reported");
        assert_eq!(cause, "sweeper stopped unexpectedly");
    }

    #[tokio::test]
    async fn tasks_ending_after_stop_are_expected() {
        let supervisor = Supervisor::new();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        supervisor.spawn("publisher", async move {
            let _ = released.await;
        });
        supervisor.stop();
        let _ = release.send(());
        assert!(supervisor.wait(Duration::from_secs(5)).await);
        assert_eq!(supervisor.cause(), None);
    }
}
