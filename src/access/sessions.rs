//! Cookie sessions (access.md, "Credentials", 3): created by a Basic login, expiring after 30 minutes
//! idle (refreshed by use) or 12 hours in all, each with its CSRF token.
//!
//! Policy at the bound (100,000 sessions): creating one more removes the oldest session first; its
//! user logs in again with Basic. Expired sessions are removed when looked up, and from the front of
//! the creation order when the table is full, so no pass over the whole table ever runs under the lock.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Idle expiry.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// Absolute expiry.
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 60 * 60);
/// The most sessions held.
pub const MAX_SESSIONS: usize = 100_000;

/// A session's id: 128 random bits.
pub type SessionId = [u8; 16];

struct Session {
    username: String,
    csrf: String,
    created: Instant,
    last_used: Instant,
}

#[derive(Default)]
struct Table {
    sessions: hashbrown::HashMap<SessionId, Session>,
    /// Ids in creation order; some may be gone from `sessions` already.
    order: VecDeque<(Instant, SessionId)>,
}

/// A session found valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Valid {
    /// Its user.
    pub username: String,
    /// Its CSRF token.
    pub csrf: String,
}

/// The session table.
pub struct Sessions {
    table: Mutex<Table>,
    max: usize,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::with_bound(MAX_SESSIONS)
    }
}

impl Sessions {
    /// A table of at most `max` sessions.
    pub fn with_bound(max: usize) -> Self {
        Self {
            table: Mutex::new(Table::default()),
            max: max.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates a session for `username` at `now`; returns its cookie value and CSRF token.
    pub fn create(&self, username: &str, now: Instant) -> (String, String) {
        let id: SessionId = random();
        let csrf = hex(&random::<16>());
        let mut table = self.lock();
        while table.sessions.len() >= self.max {
            let Some((_, oldest)) = table.order.pop_front() else {
                break;
            };
            table.sessions.remove(&oldest);
        }
        // Ids of sessions that expired while idle stay in the order until reached: compact now and
        // then, so the order never holds more than twice the table's bound.
        if table.order.len() >= 2 * self.max {
            let Table { sessions, order } = &mut *table;
            order.retain(|(_, id)| sessions.contains_key(id));
        }
        table.sessions.insert(
            id,
            Session {
                username: username.to_owned(),
                csrf: csrf.clone(),
                created: now,
                last_used: now,
            },
        );
        table.order.push_back((now, id));
        (hex(&id), csrf)
    }

    /// The session of the cookie value `cookie`, if valid at `now` (its idle time restarts).
    pub fn get(&self, cookie: &str, now: Instant) -> Option<Valid> {
        let id = parse_id(cookie)?;
        let mut table = self.lock();
        let session = table.sessions.get_mut(&id)?;
        let expired = now.saturating_duration_since(session.last_used) > IDLE
            || now.saturating_duration_since(session.created) > ABSOLUTE;
        if expired {
            table.sessions.remove(&id);
            return None;
        }
        session.last_used = now;
        Some(Valid {
            username: session.username.clone(),
            csrf: session.csrf.clone(),
        })
    }

    /// Ends the session of the cookie value `cookie` (a logout); whether there was one. Its id stays in
    /// the creation order until reached, as for an expired one.
    pub fn remove(&self, cookie: &str) -> bool {
        parse_id(cookie).is_some_and(|id| self.lock().sessions.remove(&id).is_some())
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The OS random source does not fail on Linux once booted; a zeroed id would still be unique
    // only by luck, so a failure is a fault worth stopping for.
    if let Err(error) = getrandom::fill(&mut bytes) {
        panic!("the operating system's random source failed: {error}");
    }
    bytes
}

/// `N` random bytes from the operating system, in hex: ids that must not be guessed (CometD's `clientId`).
pub(crate) fn random_hex<const N: usize>() -> String {
    hex(&random::<N>())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

fn parse_id(text: &str) -> Option<SessionId> {
    if text.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (byte, pair) in id.iter_mut().zip(text.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_session_is_gone() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let (cookie, _) = sessions.create("agent1", now);
        assert!(!sessions.remove("not-a-session"));
        assert!(sessions.remove(&cookie));
        assert!(sessions.get(&cookie, now).is_none());
        assert!(!sessions.remove(&cookie), "removed once");
    }

    #[test]
    fn a_session_lives_while_used_and_dies_idle_or_old() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let (cookie, csrf) = sessions.create("agent1", start);
        assert_eq!(cookie.len(), 32);
        let valid = sessions.get(&cookie, start).unwrap();
        assert_eq!((valid.username.as_str(), valid.csrf), ("agent1", csrf));
        // Used every 29 minutes: alive until the absolute expiry.
        let mut now = start;
        while now + Duration::from_secs(29 * 60) <= start + ABSOLUTE {
            now += Duration::from_secs(29 * 60);
            assert!(sessions.get(&cookie, now).is_some());
        }
        assert!(
            sessions
                .get(&cookie, start + ABSOLUTE + Duration::from_secs(1))
                .is_none()
        );
        let (idle, _) = sessions.create("agent1", start);
        assert!(
            sessions
                .get(&idle, start + IDLE + Duration::from_secs(1))
                .is_none()
        );
        assert!(sessions.get(&idle, start).is_none(), "removed once expired");
    }

    #[test]
    fn unknown_and_malformed_cookies_find_nothing() {
        let sessions = Sessions::default();
        let now = Instant::now();
        sessions.create("agent1", now);
        for cookie in ["", "zz", &"0".repeat(32), &"g".repeat(32), "é"] {
            assert!(sessions.get(cookie, now).is_none(), "{cookie:?}");
        }
    }

    #[test]
    fn at_the_bound_the_oldest_session_goes() {
        let sessions = Sessions::with_bound(3);
        let now = Instant::now();
        let cookies: Vec<String> = (0..5)
            .map(|n| sessions.create(&format!("u{n}"), now).0)
            .collect();
        assert_eq!(sessions.len(), 3);
        assert!(sessions.get(&cookies[0], now).is_none());
        assert!(sessions.get(&cookies[1], now).is_none());
        assert!(sessions.get(&cookies[4], now).is_some());
    }

    #[test]
    fn the_creation_order_stays_bounded_when_sessions_expire_idle() {
        let sessions = Sessions::with_bound(4);
        let mut now = Instant::now();
        for n in 0..100 {
            let (cookie, _) = sessions.create(&format!("u{n}"), now);
            now += IDLE + Duration::from_secs(1);
            assert!(sessions.get(&cookie, now).is_none());
        }
        assert!(sessions.lock().order.len() <= 8);
    }
}
