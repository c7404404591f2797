//! The access file (access.md, "The access file"): parsed, checked against every rule, and turned into
//! the lookups the doors need.
//!
//! Choices where access.md is silent (docs/access.md):
//! - Unknown keys are errors, so a misspelt `devices` does not silently give a user no devices.
//! - Key files named by `[jwt]` are read with the access file (a reload re-reads them); a relative path
//!   is relative to the access file's folder.
//! - A user needs at least one role; a role grants nothing it does not name (an `agent` without
//!   devices sees nothing).

use super::password;
use crate::subscriptions::Scope;
use hashbrown::{HashMap, HashSet};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why an access file was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The file could not be read.
    #[error("cannot read the access file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML of the access file's shape.
    #[error("{path}: not a valid access file: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (it names the line and the key).
        message: String,
    },
    /// The file breaks rules; every broken rule is listed.
    #[error("{path}: {}", list(problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The broken rules.
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// One broken rule: where (`user "agent1"`, `[jwt]`, `ingest "sip"`) and which rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The entry that breaks the rule.
    pub at: String,
    /// The rule, and how it is broken.
    pub rule: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.rule)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    user: Vec<UserToml>,
    jwt: Option<JwtToml>,
    #[serde(default)]
    ingest: Vec<IngestToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserToml {
    username: String,
    password: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    devices: Vec<String>,
    team: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JwtToml {
    hs256_secret_file: Option<PathBuf>,
    public_key_file: Option<PathBuf>,
    jwks_file: Option<PathBuf>,
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    audience: String,
    #[serde(default = "default_user_claim")]
    user_claim: String,
    #[serde(default = "default_leeway")]
    leeway_secs: u64,
}

fn default_user_claim() -> String {
    "sub".to_owned()
}

fn default_leeway() -> u64 {
    30
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestToml {
    name: String,
    token_sha256: String,
    servers: Vec<String>,
}

/// A user's roles (several allowed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Roles {
    /// Sees its own devices.
    pub agent: bool,
    /// Sees its team's devices (without a team: every user's).
    pub supervisor: bool,
    /// Sees everything, including DNs that belong to nobody.
    pub admin: bool,
}

/// A device: a DN of a T-Server ("" is the default Server).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Device {
    /// The Server's name.
    pub server: String,
    /// The DN.
    pub dn: String,
}

impl Device {
    /// `"DN"` (the default Server) or `"Server/DN"`.
    fn parse(text: &str) -> Option<Self> {
        let (server, dn) = match text.split_once('/') {
            // "/DN" is neither form: the default Server is written without a slash.
            Some(("", _)) => return None,
            Some(pair) => pair,
            None => ("", text),
        };
        let valid = |part: &str| part.trim() == part && !part.contains('/');
        (!dn.is_empty() && valid(server) && valid(dn)).then(|| Self {
            server: server.to_owned(),
            dn: dn.to_owned(),
        })
    }

    /// The device id of its resources (call-resource.md, `deviceUri`).
    pub fn id(&self) -> String {
        crate::reduce::device_id(&self.server, &self.dn)
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.server.is_empty() {
            f.write_str(&self.dn)
        } else {
            write!(f, "{}/{}", self.server, self.dn)
        }
    }
}

/// The id of user `username` (GWS's `user.id`): the UUID v5, in the URL namespace, of `user:{username}`.
pub fn user_id(username: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("user:{username}").as_bytes(),
    )
    .hyphenated()
    .to_string()
}

/// A device of the access file with its owner: what device listings show for a DN no event has named.
#[derive(Debug, Clone)]
pub struct OwnedDevice {
    /// The device's id.
    pub id: Arc<str>,
    /// Its Server and DN.
    pub device: Device,
    /// The user it belongs to.
    pub owner: Arc<User>,
}

/// A user of the access file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name (and JWT `user_claim`).
    pub username: String,
    /// argon2id PHC string; none: no password login.
    pub password: Option<String>,
    /// Roles.
    pub roles: Roles,
    /// The user's own devices.
    pub devices: Vec<Device>,
    /// Team, for supervisors' scope.
    pub team: Option<String>,
    /// Shown by `/api/v2/me`.
    pub first_name: Option<String>,
    /// Shown by `/api/v2/me`.
    pub last_name: Option<String>,
}

/// The key that signs the Bearer tokens callgate accepts; the algorithm is pinned by it.
#[derive(Clone, PartialEq, Eq)]
pub enum JwtKey {
    /// HS256 with this secret.
    Hs256(Vec<u8>),
    /// RS256 or ES256 (by the key's type) with this PEM public key.
    PublicKeyPem(Vec<u8>),
    /// A JSON Web Key Set (its text); a token's `kid` picks the key.
    Jwks(String),
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a secret.
        f.write_str(match self {
            JwtKey::Hs256(_) => "Hs256(..)",
            JwtKey::PublicKeyPem(_) => "PublicKeyPem(..)",
            JwtKey::Jwks(_) => "Jwks(..)",
        })
    }
}

/// `[jwt]`: how Bearer tokens are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// The key, and with it the algorithm.
    pub key: JwtKey,
    /// Required `iss` (not checked when empty).
    pub issuer: String,
    /// Required `aud` (not checked when empty).
    pub audience: String,
    /// The claim naming the user.
    pub user_claim: String,
    /// Clock leeway for `exp` and `nbf`.
    pub leeway_secs: u64,
}

/// The Servers an ingest source may write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Servers {
    /// `["*"]`: any.
    Any,
    /// These names ("" is the default Server).
    Only(HashSet<String>),
}

impl Servers {
    /// Whether events of `server` may come from this source.
    pub fn allows(&self, server: &str) -> bool {
        match self {
            Servers::Any => true,
            Servers::Only(names) => names.contains(server),
        }
    }
}

/// `[[ingest]]`: a source allowed to write events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestSource {
    /// Its name, in logs and in `{"authenticated":...}`.
    pub name: String,
    /// SHA-256 of its token.
    pub token_sha256: [u8; 32],
    /// What it may write.
    pub servers: Servers,
}

/// A checked access file.
#[derive(Debug, Clone)]
pub struct Access {
    users: HashMap<String, Arc<User>>,
    /// Device ids of each team's users.
    teams: HashMap<String, Arc<hashbrown::HashSet<Arc<str>>>>,
    /// Device ids of every user.
    everyone: Arc<hashbrown::HashSet<Arc<str>>>,
    /// Every user's devices, in (DN, Server) order, with their ids and owners.
    directory: Arc<[OwnedDevice]>,
    /// The user id (`/api/v2/users/{id}`) of each device's owner, made once: CometD's `/callgate`
    /// messages carry it, one per message.
    owner_ids: HashMap<Arc<str>, Arc<str>>,
    jwt: Option<JwtSettings>,
    ingest: Vec<IngestSource>,
}

impl Access {
    /// Reads and checks the access file at `path`.
    pub fn load(path: &Path) -> Result<Self, AccessError> {
        let text = std::fs::read_to_string(path).map_err(|source| AccessError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Checks the access file `text`, read from `path` (for messages and relative key paths).
    pub fn parse(text: &str, path: &Path) -> Result<Self, AccessError> {
        let file: FileToml = toml::from_str(text).map_err(|error| AccessError::Parse {
            path: path.to_owned(),
            message: error.to_string(),
        })?;
        let mut problems = Vec::new();
        let users = check_users(file.user, &mut problems);
        let folder = path.parent().unwrap_or(Path::new("."));
        let jwt = file
            .jwt
            .and_then(|jwt| check_jwt(jwt, folder, &mut problems));
        let ingest = check_ingest(file.ingest, &mut problems);
        if !problems.is_empty() {
            return Err(AccessError::Invalid {
                path: path.to_owned(),
                problems,
            });
        }
        Ok(Self::index(users, jwt, ingest))
    }

    fn index(users: Vec<User>, jwt: Option<JwtSettings>, ingest: Vec<IngestSource>) -> Self {
        let mut teams: HashMap<String, hashbrown::HashSet<Arc<str>>> = HashMap::new();
        let mut everyone = hashbrown::HashSet::new();
        for user in &users {
            let ids: Vec<Arc<str>> = user.devices.iter().map(|d| Arc::from(d.id())).collect();
            if let Some(team) = &user.team {
                teams
                    .entry(team.clone())
                    .or_default()
                    .extend(ids.iter().cloned());
            }
            everyone.extend(ids);
        }
        let users: HashMap<String, Arc<User>> = users
            .into_iter()
            .map(|user| (user.username.clone(), Arc::new(user)))
            .collect();
        let mut directory: Vec<OwnedDevice> = users
            .values()
            .flat_map(|user| {
                user.devices.iter().map(|device| OwnedDevice {
                    id: device.id().into(),
                    device: device.clone(),
                    owner: Arc::clone(user),
                })
            })
            .collect();
        directory.sort_by(|a, b| {
            (&a.device.dn, &a.device.server).cmp(&(&b.device.dn, &b.device.server))
        });
        let owner_ids = directory
            .iter()
            .map(|owned| (Arc::clone(&owned.id), user_id(&owned.owner.username).into()))
            .collect();
        Self {
            users,
            owner_ids,
            directory: directory.into(),
            teams: teams
                .into_iter()
                .map(|(team, ids)| (team, Arc::new(ids)))
                .collect(),
            everyone: Arc::new(everyone),
            jwt,
            ingest,
        }
    }

    /// The user named `username`.
    pub fn user(&self, username: &str) -> Option<&Arc<User>> {
        self.users.get(username)
    }

    /// Every user's devices, in (DN, Server) order.
    pub fn directory(&self) -> &Arc<[OwnedDevice]> {
        &self.directory
    }

    /// The user id of the owner of device `device_id`, if anyone owns it.
    pub fn owner_id_of(&self, device_id: &str) -> Option<&Arc<str>> {
        self.owner_ids.get(device_id)
    }

    /// Every user, in name order.
    pub fn users(&self) -> Vec<&Arc<User>> {
        let mut users: Vec<&Arc<User>> = self.users.values().collect();
        users.sort_by(|a, b| a.username.cmp(&b.username));
        users
    }

    /// The number of users.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// `[jwt]`, when Bearer tokens are accepted.
    pub fn jwt(&self) -> Option<&JwtSettings> {
        self.jwt.as_ref()
    }

    /// The ingest sources; none: ingest needs no token.
    pub fn ingest_sources(&self) -> &[IngestSource] {
        &self.ingest
    }

    /// What `user` may see (access.md, "Roles and scope"). The one place scope is decided.
    pub fn scope(&self, user: &User) -> Scope {
        if user.roles.admin {
            return Scope::All;
        }
        if user.roles.supervisor {
            // The team (or everyone) includes the supervisor's own devices: they are listed with its team.
            let seen = match &user.team {
                Some(team) => self.teams.get(team).cloned().unwrap_or_default(),
                None => Arc::clone(&self.everyone),
            };
            return Scope::Devices(seen);
        }
        let own = if user.roles.agent {
            user.devices.iter().map(|d| Arc::from(d.id())).collect()
        } else {
            hashbrown::HashSet::new()
        };
        Scope::Devices(Arc::new(own))
    }
}

fn check_users(users: Vec<UserToml>, problems: &mut Vec<Problem>) -> Vec<User> {
    let mut names: HashSet<String> = HashSet::new();
    let mut owners: HashMap<Device, String> = HashMap::new();
    let mut checked = Vec::with_capacity(users.len());
    for user in users {
        let at = format!("user {:?}", user.username);
        let mut problem = |rule: String| {
            problems.push(Problem {
                at: at.clone(),
                rule,
            });
        };
        if user.username.is_empty() || user.username.trim() != user.username {
            problem("username: must be non-empty, without surrounding spaces".into());
        }
        if !names.insert(user.username.clone()) {
            problem("username: appears more than once".into());
        }
        let roles = parse_roles(&user.roles, &mut problem);
        if let Some(phc) = &user.password
            && !password::is_argon2id(phc)
        {
            problem(
                "password: not an argon2id PHC string (make one with callgate hash-password)"
                    .into(),
            );
        }
        let mut devices = Vec::with_capacity(user.devices.len());
        for text in &user.devices {
            let Some(device) = Device::parse(text) else {
                problem(format!("devices: {text:?} is not \"DN\" or \"Server/DN\""));
                continue;
            };
            match owners.get(&device) {
                Some(owner) if *owner == user.username => {
                    problem(format!("devices: {text:?} is listed twice"));
                }
                Some(owner) => {
                    problem(format!(
                        "devices: {text:?} already belongs to user {owner:?} (a DN belongs to at most one user)"
                    ));
                }
                None => {
                    owners.insert(device.clone(), user.username.clone());
                    devices.push(device);
                }
            }
        }
        if user.team.as_deref().is_some_and(str::is_empty) {
            problem("team: must not be empty (leave it out for no team)".into());
        }
        checked.push(User {
            username: user.username,
            password: user.password,
            roles,
            devices,
            team: user.team,
            first_name: user.first_name,
            last_name: user.last_name,
        });
    }
    checked
}

fn parse_roles(roles: &[String], problem: &mut impl FnMut(String)) -> Roles {
    let mut parsed = Roles::default();
    if roles.is_empty() {
        problem("roles: at least one of agent, supervisor, admin".into());
    }
    for role in roles {
        match role.as_str() {
            "agent" => parsed.agent = true,
            "supervisor" => parsed.supervisor = true,
            "admin" => parsed.admin = true,
            other => problem(format!(
                "roles: {other:?} is not agent, supervisor or admin"
            )),
        }
    }
    parsed
}

fn check_jwt(jwt: JwtToml, folder: &Path, problems: &mut Vec<Problem>) -> Option<JwtSettings> {
    let mut problem = |rule: String| {
        problems.push(Problem {
            at: "[jwt]".into(),
            rule,
        });
    };
    let read = |file: &Path, problem: &mut dyn FnMut(String)| {
        let path = folder.join(file);
        std::fs::read(&path)
            .map_err(|error| problem(format!("cannot read {}: {error}", path.display())))
            .ok()
    };
    let key = match (jwt.hs256_secret_file, jwt.public_key_file, jwt.jwks_file) {
        (Some(file), None, None) => read(&file, &mut problem).and_then(|bytes| {
            let secret = bytes.trim_ascii_end().to_vec();
            if secret.len() < 32 {
                problem("hs256_secret_file: the secret must be at least 32 bytes".into());
                return None;
            }
            Some(JwtKey::Hs256(secret))
        }),
        (None, Some(file), None) => read(&file, &mut problem).map(JwtKey::PublicKeyPem),
        (None, None, Some(file)) => read(&file, &mut problem).and_then(|bytes| {
            String::from_utf8(bytes)
                .map_err(|_| problem("jwks_file: not UTF-8 text".into()))
                .ok()
                .map(JwtKey::Jwks)
        }),
        _ => {
            problem(
                "exactly one of hs256_secret_file, public_key_file, jwks_file must be given".into(),
            );
            None
        }
    };
    if jwt.user_claim.is_empty() {
        problem("user_claim: must not be empty".into());
        return None;
    }
    let settings = key.map(|key| JwtSettings {
        key,
        issuer: jwt.issuer,
        audience: jwt.audience,
        user_claim: jwt.user_claim,
        leeway_secs: jwt.leeway_secs,
    })?;
    // The key is read as the verifier will read it, so that `access check` finds a bad key.
    match super::jwt::JwtVerifier::new(&settings) {
        Ok(_) => Some(settings),
        Err(rule) => {
            problem(rule);
            None
        }
    }
}

fn check_ingest(sources: Vec<IngestToml>, problems: &mut Vec<Problem>) -> Vec<IngestSource> {
    let mut names = HashSet::new();
    let mut checked = Vec::with_capacity(sources.len());
    for source in sources {
        let at = format!("ingest {:?}", source.name);
        let mut problem = |rule: String| {
            problems.push(Problem {
                at: at.clone(),
                rule,
            });
        };
        if source.name.is_empty() {
            problem("name: must not be empty".into());
        }
        if !names.insert(source.name.clone()) {
            problem("name: appears more than once".into());
        }
        let token = parse_sha256(&source.token_sha256);
        if token.is_none() {
            problem(
                "token_sha256: must be 64 hexadecimal digits (the SHA-256 of the token)".into(),
            );
        }
        let servers = if source.servers.iter().any(|s| s == "*") {
            if source.servers.len() > 1 {
                problem("servers: \"*\" stands alone".into());
            }
            Servers::Any
        } else {
            if source.servers.is_empty() {
                problem("servers: at least one Server name, \"\" for the default, or \"*\"".into());
            }
            Servers::Only(source.servers.iter().cloned().collect())
        };
        if let Some(token_sha256) = token {
            checked.push(IngestSource {
                name: source.name,
                token_sha256,
                servers,
            });
        }
    }
    checked
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Access, AccessError> {
        Access::parse(text, Path::new("/nonexistent/access.toml"))
    }

    fn problems(text: &str) -> Vec<String> {
        match parse(text) {
            Err(AccessError::Invalid { problems, .. }) => {
                problems.iter().map(ToString::to_string).collect()
            }
            other => panic!("expected problems, got {other:?}"),
        }
    }

    fn ids(dns: &[&str]) -> Scope {
        Scope::Devices(Arc::new(
            dns.iter()
                .map(|dn| {
                    let (server, dn) = dn.split_once('/').unwrap_or(("", dn));
                    Arc::from(crate::reduce::device_id(server, dn))
                })
                .collect(),
        ))
    }

    const TEAMS: &str = r#"
[[user]]
username = "a1"
roles = ["agent"]
devices = ["7001", "SIPTS750/7002"]
team = "billing"

[[user]]
username = "a2"
roles = ["agent"]
devices = ["7003"]
team = "sales"

[[user]]
username = "s1"
roles = ["supervisor", "agent"]
devices = ["7004"]
team = "billing"

[[user]]
username = "s2"
roles = ["supervisor"]

[[user]]
username = "root"
roles = ["admin", "agent"]
devices = ["7005"]

[[user]]
username = "nobody"
roles = ["agent"]
"#;

    #[test]
    fn each_role_gets_its_scope() {
        let access = parse(TEAMS).unwrap();
        let scope = |name: &str| access.scope(access.user(name).unwrap());
        assert_eq!(scope("a1"), ids(&["7001", "SIPTS750/7002"]));
        assert_eq!(scope("a2"), ids(&["7003"]));
        assert_eq!(scope("s1"), ids(&["7001", "SIPTS750/7002", "7004"]));
        assert_eq!(
            scope("s2"),
            ids(&["7001", "SIPTS750/7002", "7003", "7004", "7005"])
        );
        assert_eq!(scope("root"), Scope::All);
        assert_eq!(scope("nobody"), ids(&[]));
    }

    #[test]
    fn a_server_qualified_dn_is_another_device() {
        let access = parse(TEAMS).unwrap();
        let a1 = access.scope(access.user("a1").unwrap());
        assert!(a1.allows_device(&crate::reduce::device_id("SIPTS750", "7002")));
        assert!(!a1.allows_device(&crate::reduce::device_id("", "7002")));
        assert!(!a1.allows_device(&crate::reduce::device_id("SIPTS750", "7001")));
    }

    #[test]
    fn every_broken_rule_is_named_with_its_user() {
        let found = problems(
            r#"
[[user]]
username = "a"
roles = []
devices = ["7001", "7001", "/7002", "x/y/z", ""]
team = ""

[[user]]
username = "a"
roles = ["agent", "boss"]
devices = ["7009"]
password = "$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$Tf3Ls3bX3RHH0bF7mK3tJQ"

[[user]]
username = "c"
roles = ["agent"]
devices = ["7001"]

[[ingest]]
name = "sip"
token_sha256 = "abc"
servers = []

[[ingest]]
name = "sip"
token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
servers = ["*", "SIPTS750"]
"#,
        );
        let expected = [
            "user \"a\": roles: at least one of agent, supervisor, admin",
            "user \"a\": devices: \"7001\" is listed twice",
            "user \"a\": devices: \"/7002\" is not \"DN\" or \"Server/DN\"",
            "user \"a\": devices: \"x/y/z\" is not \"DN\" or \"Server/DN\"",
            "user \"a\": devices: \"\" is not \"DN\" or \"Server/DN\"",
            "user \"a\": team: must not be empty (leave it out for no team)",
            "user \"a\": username: appears more than once",
            "user \"a\": roles: \"boss\" is not agent, supervisor or admin",
            "user \"a\": password: not an argon2id PHC string (make one with callgate hash-password)",
            "user \"c\": devices: \"7001\" already belongs to user \"a\" (a DN belongs to at most one user)",
            "ingest \"sip\": token_sha256: must be 64 hexadecimal digits (the SHA-256 of the token)",
            "ingest \"sip\": servers: at least one Server name, \"\" for the default, or \"*\"",
            "ingest \"sip\": name: appears more than once",
            "ingest \"sip\": servers: \"*\" stands alone",
        ];
        for rule in expected {
            assert!(
                found.iter().any(|p| p == rule),
                "{rule:?} not in {found:#?}"
            );
        }
        assert_eq!(found.len(), expected.len(), "{found:#?}");
    }

    #[test]
    fn unknown_keys_and_bad_toml_are_refused_with_the_place() {
        let typo = parse("[[user]]\nusername = \"a\"\nroles = [\"agent\"]\ndevice = [\"7001\"]\n");
        let Err(AccessError::Parse { message, .. }) = typo else {
            panic!("{typo:?}");
        };
        assert!(message.contains("device"), "{message}");
        assert!(matches!(parse("[[user]"), Err(AccessError::Parse { .. })));
    }

    #[test]
    fn jwt_settings_need_exactly_one_readable_key() {
        let dir = std::env::temp_dir().join(format!("callgate-jwt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("short.secret"), "too short\n").unwrap();
        std::fs::write(dir.join("good.secret"), format!("{}\n\n", "k".repeat(40))).unwrap();
        let at = |text: &str| Access::parse(text, &dir.join("access.toml"));
        let good = at("[jwt]\nhs256_secret_file = \"good.secret\"\n").unwrap();
        let jwt = good.jwt().unwrap();
        assert_eq!(jwt.key, JwtKey::Hs256("k".repeat(40).into_bytes()));
        assert_eq!((jwt.user_claim.as_str(), jwt.leeway_secs), ("sub", 30));
        for (text, rule) in [
            ("[jwt]\n", "exactly one of"),
            (
                "[jwt]\nhs256_secret_file = \"good.secret\"\njwks_file = \"good.secret\"\n",
                "exactly one of",
            ),
            (
                "[jwt]\nhs256_secret_file = \"short.secret\"\n",
                "at least 32 bytes",
            ),
            ("[jwt]\nhs256_secret_file = \"missing\"\n", "cannot read"),
            (
                "[jwt]\npublic_key_file = \"good.secret\"\n",
                "not an RSA or EC",
            ),
        ] {
            let refused = at(text);
            let message = refused
                .map(|_| String::new())
                .unwrap_or_else(|e| e.to_string());
            assert!(message.contains(rule), "{text:?}: {message}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ingest_sources_keep_their_servers() {
        let access = parse(
            r#"
[[ingest]]
name = "sip"
token_sha256 = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"
servers = ["SIPTS750", ""]

[[ingest]]
name = "any"
token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
servers = ["*"]
"#,
        )
        .unwrap();
        let [sip, any] = access.ingest_sources() else {
            panic!("two sources");
        };
        assert!(sip.servers.allows("SIPTS750") && sip.servers.allows(""));
        assert!(!sip.servers.allows("OTHER"));
        assert!(any.servers.allows("OTHER"));
        assert_eq!(sip.token_sha256[0], 0x9f);
    }
}
