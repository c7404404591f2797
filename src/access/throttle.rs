//! Password checks (access.md, "Credentials", 2): at most 4 at once, off the runtime's worker threads,
//! and a remote address whose checks fail 10 times in a minute is refused for the rest of that minute.
//!
//! The checks run on 4 threads of their own at nice 19: each costs ~20 ms of a core by design, and a
//! storm of logins on the runtime's blocking pool (normal priority) took the cores from live delivery
//! (the connected clients' p99 rose from ~1 ms to ~10 ms during 1,000 logins on two cores).
//!
//! Policy at the bound (100,000 remote addresses tracked): addresses whose minute is over are dropped;
//! if the table is still full, it is cleared (an attacker with that many addresses gains a fresh count
//! on each; the 4 concurrent checks still bound the CPU it can take).

use super::password;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Password checks that may run at once.
pub const CONCURRENT_CHECKS: usize = 4;
/// Failures from one address that close its minute.
pub const FAILURES_PER_MINUTE: u32 = 10;
const WINDOW: Duration = Duration::from_secs(60);
const MAX_ADDRESSES: usize = 100_000;

/// A hash no password is known to match, checked for unknown users and users without a password so
/// that every refusal costs the same time (a refusal never tells whether the user exists). Made once,
/// with the parameters of `callgate hash-password`.
fn decoy() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let mut secret = [0u8; 32];
        // Without randomness the decoy is still a valid hash; only its secret is guessable, and a
        // match on the decoy is refused anyway.
        let _ = getrandom::fill(&mut secret);
        password::hash(&secret).unwrap_or_default()
    })
}

/// How a password check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// The password matches.
    Match,
    /// It does not (or the user has no password, or does not exist).
    Mismatch,
    /// The address failed too often this minute: not checked.
    Throttled,
}

/// Bounded, throttled password checks.
pub struct PasswordChecks {
    permits: Arc<Semaphore>,
    failures: Mutex<hashbrown::HashMap<IpAddr, (Instant, u32)>>,
}

impl Default for PasswordChecks {
    fn default() -> Self {
        Self {
            permits: Arc::new(Semaphore::new(CONCURRENT_CHECKS)),
            failures: Mutex::new(hashbrown::HashMap::new()),
        }
    }
}

impl PasswordChecks {
    fn failures(&self) -> std::sync::MutexGuard<'_, hashbrown::HashMap<IpAddr, (Instant, u32)>> {
        self.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `remote` has used up this minute's failures.
    pub fn throttled(&self, remote: IpAddr, now: Instant) -> bool {
        self.failures().get(&remote).is_some_and(|(start, count)| {
            now.saturating_duration_since(*start) < WINDOW && *count >= FAILURES_PER_MINUTE
        })
    }

    fn fail(&self, remote: IpAddr, now: Instant) {
        let mut failures = self.failures();
        if failures.len() >= MAX_ADDRESSES && !failures.contains_key(&remote) {
            failures.retain(|_, (start, _)| now.saturating_duration_since(*start) < WINDOW);
            if failures.len() >= MAX_ADDRESSES {
                failures.clear();
            }
        }
        let entry = failures.entry(remote).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }

    /// Checks `password` against `phc` (none: a user without a password, or unknown) for a request
    /// from `remote`, on the password threads, at most [`CONCURRENT_CHECKS`] at once.
    pub async fn check(&self, remote: IpAddr, phc: Option<String>, password: Vec<u8>) -> Checked {
        if self.throttled(remote, Instant::now()) {
            return Checked::Throttled;
        }
        let Ok(permit) = Arc::clone(&self.permits).acquire_owned().await else {
            return Checked::Mismatch;
        };
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| decoy().to_owned());
        let matched = verify_off_runtime(phc, password).await;
        drop(permit);
        if matched && known {
            return Checked::Match;
        }
        self.fail(remote, Instant::now());
        Checked::Mismatch
    }
}

/// A check for the password threads: the hash, the password, where the answer goes.
type Job = (String, Vec<u8>, tokio::sync::oneshot::Sender<bool>);

/// The password threads' queue, started at the first check (never more than [`CONCURRENT_CHECKS`]
/// jobs in it: a permit is taken first). None when the threads could not be started.
fn password_threads() -> Option<&'static std::sync::mpsc::Sender<Job>> {
    static THREADS: std::sync::OnceLock<Option<std::sync::mpsc::Sender<Job>>> =
        std::sync::OnceLock::new();
    THREADS
        .get_or_init(|| {
            let (sender, receiver) = std::sync::mpsc::channel::<Job>();
            let receiver = Arc::new(Mutex::new(receiver));
            for n in 0..CONCURRENT_CHECKS {
                let receiver = Arc::clone(&receiver);
                let spawned = std::thread::Builder::new()
                    .name(format!("callgate-password-{n}"))
                    .spawn(move || {
                        crate::delivery::render::lower_priority(19);
                        loop {
                            let job = receiver
                                .lock()
                                .unwrap_or_else(|poisoned| poisoned.into_inner())
                                .recv();
                            let Ok((phc, password, answer)) = job else {
                                return;
                            };
                            let _ = answer.send(password::verify(&phc, &password));
                        }
                    });
                if let Err(error) = spawned {
                    tracing::error!("cannot start the password threads: {error}");
                    return None;
                }
            }
            Some(sender)
        })
        .as_ref()
}

/// `password` against `phc` on the password threads (or the blocking pool, should they be missing).
async fn verify_off_runtime(phc: String, password: Vec<u8>) -> bool {
    let (answer, answered) = tokio::sync::oneshot::channel();
    match password_threads() {
        Some(threads) => match threads.send((phc, password, answer)) {
            Ok(()) => answered.await.unwrap_or(false),
            Err(std::sync::mpsc::SendError((phc, password, _))) => {
                tokio::task::spawn_blocking(move || password::verify(&phc, &password))
                    .await
                    .unwrap_or(false)
            }
        },
        None => tokio::task::spawn_blocking(move || password::verify(&phc, &password))
            .await
            .unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decoy_is_a_valid_hash_of_the_usual_cost() {
        assert!(password::is_argon2id(decoy()));
        assert!(!password::verify(decoy(), b""));
    }

    #[tokio::test]
    async fn ten_failures_in_a_minute_close_the_address_for_that_minute() {
        let checks = PasswordChecks::default();
        let phc = password::hash(b"right").unwrap();
        let attacker: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..FAILURES_PER_MINUTE {
            let checked = checks
                .check(attacker, Some(phc.clone()), b"wrong".to_vec())
                .await;
            assert_eq!(checked, Checked::Mismatch);
        }
        // Even the right password is not checked now; another address is unaffected.
        let blocked = checks
            .check(attacker, Some(phc.clone()), b"right".to_vec())
            .await;
        assert_eq!(blocked, Checked::Throttled);
        let fine = checks
            .check(other, Some(phc.clone()), b"right".to_vec())
            .await;
        assert_eq!(fine, Checked::Match);
        // A minute later the address may try again.
        assert!(!checks.throttled(attacker, Instant::now() + WINDOW));
    }

    #[tokio::test]
    async fn an_unknown_user_is_a_mismatch_that_counts() {
        let checks = PasswordChecks::default();
        let remote: IpAddr = "192.0.2.3".parse().unwrap();
        assert_eq!(
            checks.check(remote, None, b"anything".to_vec()).await,
            Checked::Mismatch
        );
        assert_eq!(checks.failures().get(&remote).map(|e| e.1), Some(1));
    }
}
