//! The gate: every door asks it who is asking and gets back a [`Principal`] (the user and its scope) or
//! a [`Denied`] to answer with. Credentials are taken in access.md's order (Bearer, Basic, the session
//! cookie); the first present decides, and a bad one is refused, never passed over for the next.
//! Every refusal is logged for audit (user or address, door, reason; never a secret) and counted in
//! `callgate_access_denied_total{door,reason}`.

use super::file::{Access, IngestSource, OwnedDevice, User};
use super::jwt::{JwtVerifier, TokenError};
use super::sessions::Sessions;
use super::throttle::{Checked, PasswordChecks};
use crate::subscriptions::Scope;
use base64::Engine;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// Who is asking, and what they may see.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user; none in open mode.
    pub user: Option<Arc<User>>,
    /// What the principal may see, decided by [`Access::scope`].
    pub scope: Scope,
}

impl Principal {
    /// Open mode's principal: everything visible.
    pub fn open() -> Self {
        Self {
            user: None,
            scope: Scope::All,
        }
    }

    /// The user's name, for logs ("-" in open mode).
    pub fn name(&self) -> &str {
        self.user.as_ref().map_or("-", |user| &user.username)
    }

    /// Whether it may read queue resources (api.md, gws.md): supervisors, administrators, and anyone in
    /// open mode. Queues belong to no device, so no device scope narrows them.
    pub fn sees_queues(&self) -> bool {
        self.user
            .as_ref()
            .is_none_or(|user| user.roles.supervisor || user.roles.admin)
    }
}

/// What a request is, for the rules that depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// A REST read (GET, HEAD): a Basic login creates a session.
    Read,
    /// A REST POST, PUT or DELETE under `/api/v2/`: a Basic login creates a session, and one
    /// authenticated by its cookie needs the CSRF header.
    StateChange,
    /// `/api/v2/notifications` (CometD) or the WebSocket upgrade: no session is created, no CSRF.
    Stream,
}

/// The credentials a request presents.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The door asked at, for audit and the metric ("rest", "ws", "cometd").
    pub door: &'static str,
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// The `Cookie` header.
    pub cookie: Option<&'a str>,
    /// The `X-CSRF-TOKEN` header.
    pub csrf: Option<&'a str>,
    /// The peer's address.
    pub remote: IpAddr,
    /// What the request is.
    pub kind: RequestKind,
}

/// A request let in.
#[derive(Debug, Clone)]
pub struct Granted {
    /// Who.
    pub principal: Principal,
    /// A session created by this request's Basic login: the cookie value and its CSRF token.
    pub new_session: Option<(String, String)>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No credentials at all.
    #[error("no credentials")]
    NoCredentials,
    /// An `Authorization` header callgate does not understand.
    #[error("unsupported authorization scheme")]
    Scheme,
    /// A Bearer token that is not valid.
    #[error("bad token: {0}")]
    Token(TokenError),
    /// Bearer tokens are not configured.
    #[error("bearer tokens are not accepted")]
    NoJwt,
    /// A valid token naming a user the access file does not have.
    #[error("unknown user")]
    UnknownUser,
    /// A wrong user or password (which of the two is never told).
    #[error("bad password")]
    Password,
    /// Too many failed password checks from the address this minute.
    #[error("too many failed logins")]
    Throttled,
    /// A session cookie that is unknown or expired.
    #[error("no valid session")]
    Session,
    /// A state-changing request by cookie without the session's CSRF token.
    #[error("missing or invalid CSRF token")]
    Csrf,
}

impl Denied {
    /// The reason label of `callgate_access_denied_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Denied::NoCredentials => "no_credentials",
            Denied::Scheme => "scheme",
            Denied::Token(_) | Denied::NoJwt => "token",
            Denied::UnknownUser => "unknown_user",
            Denied::Password => "password",
            Denied::Throttled => "throttled",
            Denied::Session => "session",
            Denied::Csrf => "csrf",
        }
    }

    /// The HTTP status: 429 when throttled, 403 for CSRF, else 401.
    pub fn status(&self) -> u16 {
        match self {
            Denied::Throttled => 429,
            Denied::Csrf => 403,
            _ => 401,
        }
    }
}

/// The access file in force, with its token verifier.
struct Current {
    access: Access,
    jwt: Option<JwtVerifier>,
}

/// The gate of every door.
pub struct Gate {
    /// None: open mode.
    current: Option<RwLock<Arc<Current>>>,
    sessions: Sessions,
    checks: PasswordChecks,
    cookie_name: String,
    /// Bumped at every reload, for connections to recompute their scope.
    generation: tokio::sync::watch::Sender<u64>,
}

impl Gate {
    /// Open mode: everyone sees everything.
    pub fn open() -> Self {
        Self {
            current: None,
            sessions: Sessions::default(),
            checks: PasswordChecks::default(),
            cookie_name: "JSESSIONID".into(),
            generation: tokio::sync::watch::Sender::new(0),
        }
    }

    /// A gate for `access`; sessions under `cookie_name`. Fails when `[jwt]`'s key is unusable.
    pub fn secured(access: Access, cookie_name: &str) -> Result<Self, String> {
        Ok(Self {
            current: Some(RwLock::new(Arc::new(current(access)?))),
            sessions: Sessions::default(),
            checks: PasswordChecks::default(),
            cookie_name: cookie_name.to_owned(),
            generation: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Puts `access` in force for every request from now on (SIGHUP). Refused in open mode.
    pub fn reload(&self, access: Access) -> Result<(), String> {
        let Some(lock) = &self.current else {
            return Err("the gateway runs open: start it with --access to reload one".into());
        };
        let fresh = Arc::new(current(access)?);
        *lock
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = fresh;
        self.generation.send_modify(|generation| *generation += 1);
        Ok(())
    }

    /// Changes at every reload: an open connection then asks [`Gate::principal_of`] for its user's
    /// scope now.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// How many times the access file has been reloaded: what a long-lived session compares with the
    /// generation it was made under.
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// Whether the gateway runs open.
    pub fn is_open(&self) -> bool {
        self.current.is_none()
    }

    /// The session cookie's name.
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    fn now_current(&self) -> Option<Arc<Current>> {
        self.current
            .as_ref()
            .map(|lock| Arc::clone(&lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())))
    }

    /// The principal `username` is now (after a reload its scope may be narrower, or it may be gone).
    pub fn principal_of(&self, username: &str) -> Option<Principal> {
        match self.now_current() {
            None => Some(Principal::open()),
            Some(current) => principal(&current, username),
        }
    }

    /// Every user's devices with their owners (none in open mode), in (DN, Server) order.
    pub fn directory(&self) -> Arc<[OwnedDevice]> {
        self.now_current().map_or_else(
            || Arc::from([]),
            |current| Arc::clone(current.access.directory()),
        )
    }

    /// The user id of the owner of device `device_id` now (none in open mode, or for a DN of nobody).
    pub fn owner_id_of(&self, device_id: &str) -> Option<Arc<str>> {
        self.now_current()
            .and_then(|current| current.access.owner_id_of(device_id).cloned())
    }

    /// Every user now, in name order (none in open mode).
    pub fn users(&self) -> Vec<Arc<User>> {
        self.now_current().map_or_else(Vec::new, |current| {
            current.access.users().into_iter().cloned().collect()
        })
    }

    /// Whether a `Cookie` header carries this gate's session cookie.
    pub fn has_session_cookie(&self, header: &str) -> bool {
        cookie_value(header, &self.cookie_name).is_some()
    }

    /// Ends the session whose cookie a `Cookie` header carries (a logout); whether there was one.
    pub fn end_session(&self, header: &str) -> bool {
        cookie_value(header, &self.cookie_name).is_some_and(|cookie| self.sessions.remove(cookie))
    }

    /// Whether ingest connections must present a source's token (the access file has `[[ingest]]`).
    pub fn ingest_needs_token(&self) -> bool {
        self.now_current()
            .is_some_and(|current| !current.access.ingest_sources().is_empty())
    }

    /// The ingest source whose token is `token`. Its SHA-256 is compared with every source's in time
    /// independent of where they differ, and with all of them, so timing tells nothing of the tokens.
    pub fn ingest_source(&self, token: &str) -> Option<IngestSource> {
        use sha2::Digest;
        let current = self.now_current()?;
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for source in current.access.ingest_sources() {
            if same(&digest, &source.token_sha256) && found.is_none() {
                found = Some(source.clone());
            }
        }
        found
    }

    /// Lets `request` in or says why not; refusals are logged and counted.
    pub async fn authenticate(&self, request: &Request<'_>) -> Result<Granted, Denied> {
        let result = self.decide(request).await;
        if let Err(denied) = &result {
            refused(request.door, request.remote, denied);
        }
        result
    }

    /// Checks a Bearer token alone (the WebSocket's first-frame `auth`); refusals are logged and counted.
    pub fn authenticate_token(
        &self,
        door: &'static str,
        remote: IpAddr,
        token: &str,
    ) -> Result<Principal, Denied> {
        let result = match self.now_current() {
            None => Ok(Principal::open()),
            Some(current) => bearer(&current, token),
        };
        if let Err(denied) = &result {
            refused(door, remote, denied);
        }
        result
    }

    async fn decide(&self, request: &Request<'_>) -> Result<Granted, Denied> {
        let Some(current) = self.now_current() else {
            return Ok(Granted {
                principal: Principal::open(),
                new_session: None,
            });
        };
        let cookie = request
            .cookie
            .and_then(|header| cookie_value(header, &self.cookie_name));
        if let Some(authorization) = request.authorization {
            let (scheme, credentials) =
                authorization.split_once(' ').unwrap_or((authorization, ""));
            if scheme.eq_ignore_ascii_case("bearer") {
                let principal = bearer(&current, credentials.trim())?;
                return Ok(Granted {
                    principal,
                    new_session: None,
                });
            }
            if scheme.eq_ignore_ascii_case("basic") {
                return self
                    .basic(&current, credentials.trim(), cookie, request)
                    .await;
            }
            return Err(Denied::Scheme);
        }
        let Some(cookie) = cookie else {
            return Err(Denied::NoCredentials);
        };
        let session = self
            .sessions
            .get(cookie, Instant::now())
            .ok_or(Denied::Session)?;
        if request.kind == RequestKind::StateChange
            && !request
                .csrf
                .is_some_and(|token| same(token.as_bytes(), session.csrf.as_bytes()))
        {
            return Err(Denied::Csrf);
        }
        let principal = principal(&current, &session.username).ok_or(Denied::Session)?;
        Ok(Granted {
            principal,
            new_session: None,
        })
    }

    async fn basic(
        &self,
        current: &Current,
        credentials: &str,
        cookie: Option<&str>,
        request: &Request<'_>,
    ) -> Result<Granted, Denied> {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .map_err(|_| Denied::Password)?;
        let text = String::from_utf8(decoded).map_err(|_| Denied::Password)?;
        let (username, password) = text.split_once(':').ok_or(Denied::Password)?;
        let phc = current
            .access
            .user(username)
            .and_then(|user| user.password.clone());
        match self
            .checks
            .check(request.remote, phc, password.as_bytes().to_vec())
            .await
        {
            Checked::Match => {}
            Checked::Mismatch => return Err(Denied::Password),
            Checked::Throttled => return Err(Denied::Throttled),
        }
        let principal = principal(current, username).ok_or(Denied::Password)?;
        let now = Instant::now();
        let has_session = cookie
            .and_then(|cookie| self.sessions.get(cookie, now))
            .is_some_and(|session| session.username == username);
        let new_session = (request.kind != RequestKind::Stream && !has_session)
            .then(|| self.sessions.create(username, now));
        Ok(Granted {
            principal,
            new_session,
        })
    }
}

fn current(access: Access) -> Result<Current, String> {
    let jwt = access.jwt().map(JwtVerifier::new).transpose()?;
    Ok(Current { access, jwt })
}

fn principal(current: &Current, username: &str) -> Option<Principal> {
    let user = current.access.user(username)?;
    Some(Principal {
        scope: current.access.scope(user),
        user: Some(Arc::clone(user)),
    })
}

fn bearer(current: &Current, token: &str) -> Result<Principal, Denied> {
    let verifier = current.jwt.as_ref().ok_or(Denied::NoJwt)?;
    let username = verifier.verify(token).map_err(Denied::Token)?;
    principal(current, &username).ok_or(Denied::UnknownUser)
}

/// The value of cookie `name` in a `Cookie` header.
fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then_some(value.trim_matches('"'))
    })
}

/// Compares in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

fn refused(door: &'static str, remote: IpAddr, denied: &Denied) {
    tracing::info!(target: "callgate::audit", door, %remote, reason = denied.reason(), "access denied: {denied}");
    metrics::counter!("callgate_access_denied_total", "door" => door, "reason" => denied.reason())
        .increment(1);
}

/// Logs and counts a refusal a door decided itself (a WebSocket without its `auth` frame, an ingest
/// source with a bad token, an Origin not allowed): `reason` is the metric's label.
pub fn refused_at(door: &'static str, remote: IpAddr, reason: &'static str) {
    tracing::info!(target: "callgate::audit", door, %remote, reason, "access denied: {reason}");
    metrics::counter!("callgate_access_denied_total", "door" => door, "reason" => reason)
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn gate() -> Gate {
        let text = format!(
            "[[user]]\nusername = \"a1\"\npassword = \"{}\"\nroles = [\"agent\"]\ndevices = [\"7001\"]\n",
            super::super::password::hash(b"pw").unwrap()
        );
        let access = Access::parse(&text, Path::new("access.toml")).unwrap();
        Gate::secured(access, "JSESSIONID").unwrap()
    }

    fn request<'a>(
        authorization: Option<&'a str>,
        cookie: Option<&'a str>,
        csrf: Option<&'a str>,
        kind: RequestKind,
    ) -> Request<'a> {
        Request {
            door: "rest",
            authorization,
            cookie,
            csrf,
            remote: IpAddr::from([127, 0, 0, 1]),
            kind,
        }
    }

    const BASIC: &str = "Basic YTE6cHc="; // a1:pw

    #[tokio::test]
    async fn open_mode_lets_everyone_see_everything() {
        let granted = Gate::open()
            .authenticate(&request(None, None, None, RequestKind::Read))
            .await
            .unwrap();
        assert_eq!(granted.principal.scope, Scope::All);
        assert!(granted.principal.user.is_none());
    }

    #[tokio::test]
    async fn the_first_credential_decides_and_a_bad_one_is_refused() {
        let gate = gate();
        let read = |auth| request(auth, None, None, RequestKind::Read);
        assert_eq!(
            gate.authenticate(&read(None)).await.unwrap_err(),
            Denied::NoCredentials
        );
        assert_eq!(
            gate.authenticate(&read(Some("Digest x")))
                .await
                .unwrap_err(),
            Denied::Scheme
        );
        assert_eq!(
            gate.authenticate(&read(Some("Bearer x.y.z")))
                .await
                .unwrap_err(),
            Denied::NoJwt
        );
        assert_eq!(
            gate.authenticate(&read(Some("Basic !!")))
                .await
                .unwrap_err(),
            Denied::Password
        );
        // A bad Basic header is refused even with a valid session cookie beside it.
        let granted = gate.authenticate(&read(Some(BASIC))).await.unwrap();
        let (cookie, _) = granted.new_session.unwrap();
        let cookie = format!("JSESSIONID={cookie}");
        let both = request(
            Some("Basic YTE6bm8="),
            Some(&cookie),
            None,
            RequestKind::Read,
        );
        assert_eq!(
            gate.authenticate(&both).await.unwrap_err(),
            Denied::Password
        );
    }

    #[tokio::test]
    async fn a_cookie_session_needs_its_csrf_token_to_change_state() {
        let gate = gate();
        let granted = gate
            .authenticate(&request(Some(BASIC), None, None, RequestKind::Read))
            .await
            .unwrap();
        assert_eq!(granted.principal.name(), "a1");
        let (session, csrf) = granted.new_session.unwrap();
        let cookie = format!("theme=dark; JSESSIONID={session}");
        let read = request(None, Some(&cookie), None, RequestKind::Read);
        assert_eq!(
            gate.authenticate(&read).await.unwrap().principal.name(),
            "a1"
        );
        let change = request(None, Some(&cookie), None, RequestKind::StateChange);
        assert_eq!(gate.authenticate(&change).await.unwrap_err(), Denied::Csrf);
        let forged = request(None, Some(&cookie), Some("0123"), RequestKind::StateChange);
        assert_eq!(gate.authenticate(&forged).await.unwrap_err(), Denied::Csrf);
        let change = request(None, Some(&cookie), Some(&csrf), RequestKind::StateChange);
        assert!(gate.authenticate(&change).await.is_ok());
        // Basic with the session's own cookie creates no second session; a stream creates none.
        let again = request(Some(BASIC), Some(&cookie), None, RequestKind::Read);
        assert!(
            gate.authenticate(&again)
                .await
                .unwrap()
                .new_session
                .is_none()
        );
        let stream = request(Some(BASIC), None, None, RequestKind::Stream);
        assert!(
            gate.authenticate(&stream)
                .await
                .unwrap()
                .new_session
                .is_none()
        );
        assert_eq!(gate.sessions.len(), 1);
    }

    #[tokio::test]
    async fn a_reload_that_removes_a_user_ends_its_sessions() {
        let gate = gate();
        let granted = gate
            .authenticate(&request(Some(BASIC), None, None, RequestKind::Read))
            .await
            .unwrap();
        let cookie = format!("JSESSIONID={}", granted.new_session.unwrap().0);
        gate.reload(Access::parse("", Path::new("access.toml")).unwrap())
            .unwrap();
        let read = request(None, Some(&cookie), None, RequestKind::Read);
        assert_eq!(gate.authenticate(&read).await.unwrap_err(), Denied::Session);
        assert!(gate.principal_of("a1").is_none());
    }

    #[test]
    fn comparison_is_by_every_byte() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        assert_eq!(
            cookie_value("a=1; JSESSIONID=\"x\"", "JSESSIONID"),
            Some("x")
        );
        assert_eq!(cookie_value("XJSESSIONID=1", "JSESSIONID"), None);
    }
}
