//! `callgate serve` settings: command-line flags, `CALLGATE_*` environment variables, an optional TOML
//! file, and defaults, in that order of precedence.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The flags of `callgate serve` (each also `CALLGATE_<NAME>`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// HTTP and WebSocket address [default: 127.0.0.1:8080].
    #[arg(long, env = "CALLGATE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Ingest socket address [default: 127.0.0.1:7000].
    #[arg(long, env = "CALLGATE_INGEST")]
    pub ingest: Option<SocketAddr>,
    /// Public base URL [default: http:// + the bound listen address].
    #[arg(long, env = "CALLGATE_BASE_URL")]
    pub base_url: Option<String>,
    /// Seconds a Released call stays readable [default: 30].
    #[arg(long, env = "CALLGATE_RELEASED_LINGER")]
    pub released_linger: Option<f64>,
    /// Notifications held for resuming [default: 100000].
    #[arg(long, env = "CALLGATE_HISTORY")]
    pub history: Option<usize>,
    /// Feed the gateway from the built-in simulator.
    #[arg(long, env = "CALLGATE_DEMO")]
    pub demo: bool,
    /// Log format [default: text].
    #[arg(long, env = "CALLGATE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Reducer shards (threads) [default: the number of CPUs].
    #[arg(long, env = "CALLGATE_SHARDS")]
    pub shards: Option<usize>,
    /// WebSocket connections allowed at once [default: 20000].
    #[arg(long, env = "CALLGATE_MAX_WS_CONNECTIONS")]
    pub max_ws_connections: Option<usize>,
    /// Ingest connections allowed at once [default: 256].
    #[arg(long, env = "CALLGATE_MAX_INGEST_CONNECTIONS")]
    pub max_ingest_connections: Option<usize>,
    /// Call resources held at once [default: 1000000].
    #[arg(long, env = "CALLGATE_MAX_CALLS")]
    pub max_calls: Option<usize>,
    /// Seconds without an event after which a live call is released [default: 43200; 0: never].
    #[arg(long, env = "CALLGATE_STALE_CALL_AFTER")]
    pub stale_call_after: Option<f64>,
    /// Seconds within which a queued call diverted to an agent counts towards a queue's service level
    /// [default: 20].
    #[arg(long, env = "CALLGATE_SERVICE_LEVEL_SECS")]
    pub service_level_secs: Option<u64>,
    /// HTTP and WebSocket connections served at once; more wait in the kernel's backlog
    /// [default: 10000].
    #[arg(long, env = "CALLGATE_MAX_HTTP_CONNECTIONS")]
    pub max_http_connections: Option<usize>,
    /// Frames queued for one WebSocket before it keeps only the newest version of each call
    /// [default: 1024]. The connection is closed with 4008 past 16,384 frames or 32 MiB whatever this is.
    #[arg(long, env = "CALLGATE_COALESCE_AFTER")]
    pub coalesce_after: Option<usize>,
    /// Pack the frames the store and the resume history hold, in the background [default: true]:
    /// ~1.3 KB to ~150 bytes each, for CPU the gateway does not otherwise use.
    #[arg(long, env = "CALLGATE_PACK_FRAMES", action = clap::ArgAction::Set)]
    pub pack_frames: Option<bool>,
    /// The access file: users, roles, devices, tokens, ingest sources (access.md). Without one the
    /// gateway runs open, which is refused on a non-loopback address without --insecure-open.
    #[arg(long, env = "CALLGATE_ACCESS")]
    pub access: Option<PathBuf>,
    /// The session cookie's name [default: JSESSIONID].
    #[arg(long, env = "CALLGATE_SESSION_COOKIE")]
    pub session_cookie: Option<String>,
    /// Run open (no access file), or take events from any source, on non-loopback addresses.
    #[arg(long, env = "CALLGATE_INSECURE_OPEN")]
    pub insecure_open: bool,
    /// Serve HTTP and WebSocket over TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "CALLGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "CALLGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve the ingest socket over TLS with this certificate chain (PEM); needs --ingest-tls-key.
    #[arg(long, env = "CALLGATE_INGEST_TLS_CERT", requires = "ingest_tls_key")]
    pub ingest_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --ingest-tls-cert.
    #[arg(long, env = "CALLGATE_INGEST_TLS_KEY", requires = "ingest_tls_cert")]
    pub ingest_tls_key: Option<PathBuf>,
    /// Require ingest clients to present a certificate signed by this CA (PEM); needs ingest TLS.
    #[arg(long, env = "CALLGATE_INGEST_CLIENT_CA", requires = "ingest_tls_cert")]
    pub ingest_client_ca: Option<PathBuf>,
    /// Browser origins allowed besides the --base-url's own, comma-separated (scheme://host[:port]).
    #[arg(long, env = "CALLGATE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Keep every accepted event in a journal in this folder: acks then mean "in the journal", and a
    /// restart replays it (analytics.md, docs/journal.md). Without it the gateway runs in memory.
    #[arg(long, env = "CALLGATE_JOURNAL")]
    pub journal: Option<PathBuf>,
    /// When the journal is synced to disk before events are acked: `always`, `batch` (at most every
    /// 100 ms) or `never` (written to the OS only) [default: batch].
    #[arg(long, env = "CALLGATE_JOURNAL_FSYNC", value_enum)]
    pub journal_fsync: Option<crate::journal::live::Fsync>,
    /// Seconds a closed journal segment is kept; it goes after that once no live call or logged-in
    /// device needs it (0: kept forever) [default: 86400].
    #[arg(long, env = "CALLGATE_JOURNAL_RETENTION")]
    pub journal_retention: Option<f64>,
    /// The most bytes the journal's segments hold; past it new events are refused like on a full disk
    /// (0: no bound) [default: 0].
    #[arg(long, env = "CALLGATE_JOURNAL_MAX_BYTES")]
    pub journal_max_bytes: Option<u64>,
    /// Bytes at which a journal segment is closed and the next begun [default: 67108864, 64 MiB].
    #[arg(long, env = "CALLGATE_JOURNAL_SEGMENT_BYTES")]
    pub journal_segment_bytes: Option<u64>,
    /// Keep every accepted event in NATS JetStream at this URL (`nats://host:port`), one stream per
    /// T-Server: acks then mean "stored by JetStream", and a restart without `--journal` reads the
    /// streams back (analytics.md, docs/jetstream.md).
    #[arg(long, env = "CALLGATE_NATS")]
    pub nats: Option<String>,
    /// Replicas of each event stream when callgate creates it [default: 1; 3 on a production cluster].
    #[arg(long, env = "CALLGATE_NATS_REPLICAS")]
    pub nats_replicas: Option<usize>,
    /// Seconds an event stream keeps an event [default: 604800, 7 days].
    #[arg(long, env = "CALLGATE_NATS_MAX_AGE")]
    pub nats_max_age: Option<f64>,
    /// The most bytes an event stream holds; past it new events are refused, old ones never dropped
    /// [default: 0, no bound].
    #[arg(long, env = "CALLGATE_NATS_MAX_BYTES")]
    pub nats_max_bytes: Option<u64>,
    /// Seconds a stream remembers a message id, so a resend is stored once [default: 120].
    #[arg(long, env = "CALLGATE_NATS_DUPLICATE_WINDOW")]
    pub nats_duplicate_window: Option<f64>,
    /// Seconds a publish waits for JetStream's ack before the ingest connection is closed [default: 5].
    #[arg(long, env = "CALLGATE_NATS_ACK_TIMEOUT")]
    pub nats_ack_timeout: Option<f64>,
    /// Write the live analytics records (CloudEvents NDJSON, analytics.md) to this file (`-`: standard
    /// output). The file is appended to, synced every second, and resumed after a crash.
    #[arg(long, env = "CALLGATE_ANALYTICS_OUT")]
    pub analytics_out: Option<PathBuf>,
    /// The records --analytics-out writes: `event`, `notification`, `cdr`, comma-separated
    /// [default: notification,cdr].
    #[arg(long, env = "CALLGATE_TYPES")]
    pub types: Option<String>,
    /// Bytes of the newest records held for `GET /callgate/feed`, which needs --journal (0: no feed;
    /// 67108864, 64 MiB, is several seconds at 20,000 events/s) [default: 0]. The feed renders every
    /// record of every event: it costs CPU (docs/benchmarks.md).
    #[arg(long, env = "CALLGATE_FEED_BUFFER_BYTES")]
    pub feed_buffer_bytes: Option<usize>,
    /// This gateway's name in the records' `source` [default: the host name].
    #[arg(long, env = "CALLGATE_NODE")]
    pub node: Option<String>,
    /// Seconds after a call's end within which a change of its attached data re-emits its CDR
    /// [default: 3600].
    #[arg(long, env = "CALLGATE_CDR_LATE_WINDOW")]
    pub cdr_late_window: Option<f64>,
    /// The UserData key whose final value is a CDR's `disposition` [default: DispositionCode].
    #[arg(long, env = "CALLGATE_CDR_DISPOSITION_KEY")]
    pub cdr_disposition_key: Option<String>,
    /// A TOML file with any of these settings (keys as the flags: `listen`, `released-linger`, ...).
    #[arg(long, env = "CALLGATE_CONFIG")]
    pub config: Option<PathBuf>,
}

/// The TOML file's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    listen: Option<SocketAddr>,
    ingest: Option<SocketAddr>,
    base_url: Option<String>,
    released_linger: Option<f64>,
    history: Option<usize>,
    demo: Option<bool>,
    log_format: Option<LogFormat>,
    shards: Option<usize>,
    max_ws_connections: Option<usize>,
    max_ingest_connections: Option<usize>,
    max_calls: Option<usize>,
    coalesce_after: Option<usize>,
    stale_call_after: Option<f64>,
    service_level_secs: Option<u64>,
    max_http_connections: Option<usize>,
    pack_frames: Option<bool>,
    access: Option<PathBuf>,
    session_cookie: Option<String>,
    insecure_open: Option<bool>,
    allowed_origins: Option<Vec<String>>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    ingest_tls_cert: Option<PathBuf>,
    ingest_tls_key: Option<PathBuf>,
    ingest_client_ca: Option<PathBuf>,
    journal: Option<PathBuf>,
    journal_fsync: Option<crate::journal::live::Fsync>,
    journal_retention: Option<f64>,
    journal_max_bytes: Option<u64>,
    journal_segment_bytes: Option<u64>,
    nats: Option<String>,
    nats_replicas: Option<usize>,
    nats_max_age: Option<f64>,
    nats_max_bytes: Option<u64>,
    nats_duplicate_window: Option<f64>,
    nats_ack_timeout: Option<f64>,
    analytics_out: Option<PathBuf>,
    feed_buffer_bytes: Option<usize>,
    types: Option<String>,
    node: Option<String>,
    cdr_late_window: Option<f64>,
    cdr_disposition_key: Option<String>,
}

/// Settings after merging every source.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// HTTP and WebSocket address.
    pub listen: SocketAddr,
    /// Ingest address.
    pub ingest: SocketAddr,
    /// Public base URL, when given (else derived from the bound address).
    pub base_url: Option<String>,
    /// Linger of Released calls.
    pub released_linger: Duration,
    /// Resume history length.
    pub history: usize,
    /// Feed from the simulator.
    pub demo: bool,
    /// Log format.
    pub log_format: LogFormat,
    /// Reducer shards.
    pub shards: usize,
    /// WebSocket connection limit.
    pub max_ws_connections: usize,
    /// Ingest connection limit.
    pub max_ingest_connections: usize,
    /// Call resource limit.
    pub max_calls: usize,
    /// Frames queued for one WebSocket before coalescing starts.
    pub coalesce_after: usize,
    /// Silence after which a live call is released (`None`: never).
    pub stale_call_after: Option<Duration>,
    /// `--service-level-secs`.
    pub service_level_secs: u64,
    /// HTTP connections served at once.
    pub max_http_connections: usize,
    /// Whether frames at rest are packed.
    pub pack_frames: bool,
    /// The access file (none: open mode).
    pub access: Option<PathBuf>,
    /// The session cookie's name.
    pub session_cookie: String,
    /// Open mode, and ingest without sources, allowed on non-loopback addresses.
    pub insecure_open: bool,
    /// Browser origins allowed besides the base URL's.
    pub allowed_origins: Vec<String>,
    /// TLS of the HTTP/WebSocket listener.
    pub tls: Option<crate::tls::TlsFiles>,
    /// TLS of the ingest socket.
    pub ingest_tls: Option<crate::tls::TlsFiles>,
    /// The journal's folder (none: in memory).
    pub journal: Option<PathBuf>,
    /// When the journal is synced.
    pub journal_fsync: crate::journal::live::Fsync,
    /// How long closed journal segments are kept at least (`None`: forever).
    pub journal_retention: Option<Duration>,
    /// The journal's bound in bytes (`None`: none).
    pub journal_max_bytes: Option<u64>,
    /// Where journal segments are closed.
    pub journal_segment_bytes: u64,
    /// JetStream (none: not used).
    pub nats: Option<crate::jetstream::Settings>,
    /// Where the live analytics records go (none: nowhere).
    pub analytics_out: Option<PathBuf>,
    /// Which records go there.
    pub types: crate::export::Types,
    /// Bytes of records held for the live feed (0: no feed; it needs the journal).
    pub feed_buffer_bytes: usize,
    /// This gateway's name in the records.
    pub node: String,
    /// The CDR fold's settings (its linger is `released_linger`).
    pub cdr: crate::cdr::CdrConfig,
}

/// A settings problem (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML file is not valid.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
}

impl ServeArgs {
    /// Merges flags and environment (already in `self`) over the file over the defaults.
    pub fn resolve(self) -> Result<ServeConfig, ConfigError> {
        let file = match &self.config {
            None => FileConfig::default(),
            Some(path) => {
                let name = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: name.clone(),
                    source,
                })?;
                toml::from_str(&text).map_err(|err| ConfigError::Parse {
                    path: name,
                    message: err.to_string(),
                })?
            }
        };
        let linger = self
            .released_linger
            .or(file.released_linger)
            .unwrap_or(30.0);
        if !(0.0..=86_400.0).contains(&linger) {
            return Err(ConfigError::Invalid(format!(
                "released-linger must be 0 to 86400 seconds, not {linger}"
            )));
        }
        let stale = self
            .stale_call_after
            .or(file.stale_call_after)
            .unwrap_or(43_200.0);
        let service_level_secs = self
            .service_level_secs
            .or(file.service_level_secs)
            .unwrap_or(crate::reduce::DEFAULT_SERVICE_LEVEL_SECS);
        if service_level_secs > 86_400 {
            return Err(ConfigError::Invalid(format!(
                "service-level-secs must be 0 to 86400 seconds, not {service_level_secs}"
            )));
        }
        if !(0.0..=2_592_000.0).contains(&stale) {
            return Err(ConfigError::Invalid(format!(
                "stale-call-after must be 0 (never) to 2592000 seconds, not {stale}"
            )));
        }
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        let retention = self
            .journal_retention
            .or(file.journal_retention)
            .unwrap_or(86_400.0);
        if !(0.0..=3.2e9).contains(&retention) {
            return Err(ConfigError::Invalid(format!(
                "journal-retention must be 0 (forever) to 3200000000 seconds, not {retention}"
            )));
        }
        let segment_bytes = self
            .journal_segment_bytes
            .or(file.journal_segment_bytes)
            .unwrap_or(crate::journal::ROTATE_AT);
        if segment_bytes < 4096 {
            return Err(ConfigError::Invalid(format!(
                "journal-segment-bytes must be at least 4096, not {segment_bytes}"
            )));
        }
        let types = match self.types.as_deref().or(file.types.as_deref()) {
            None => crate::export::Types::LIVE_DEFAULT,
            Some(text) => text.parse().map_err(ConfigError::Invalid)?,
        };
        let late_window = self
            .cdr_late_window
            .or(file.cdr_late_window)
            .unwrap_or(3600.0);
        if !(0.0..=2_592_000.0).contains(&late_window) {
            return Err(ConfigError::Invalid(format!(
                "cdr-late-window must be 0 to 2592000 seconds, not {late_window}"
            )));
        }
        let cdr = crate::cdr::CdrConfig {
            linger: (linger * 1e6) as i64,
            late_window: (late_window * 1e6) as i64,
            disposition_key: self
                .cdr_disposition_key
                .clone()
                .or(file.cdr_disposition_key.clone())
                .unwrap_or_else(|| "DispositionCode".to_owned()),
            ..crate::cdr::CdrConfig::default()
        };
        let node = self
            .node
            .clone()
            .or(file.node.clone())
            .unwrap_or_else(host_name);
        let nats = match self.nats.clone().or(file.nats.clone()) {
            None => None,
            Some(url) => Some(nats_settings(url, &self, &file)?),
        };
        Ok(ServeConfig {
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            ingest: self
                .ingest
                .or(file.ingest)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7000))),
            base_url: self.base_url.or(file.base_url),
            released_linger: Duration::from_secs_f64(linger),
            history: self
                .history
                .or(file.history)
                .unwrap_or(100_000)
                .min(10_000_000),
            demo: self.demo || file.demo.unwrap_or(false),
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            shards: self.shards.or(file.shards).unwrap_or(cpus).clamp(1, 64),
            max_ws_connections: self
                .max_ws_connections
                .or(file.max_ws_connections)
                .unwrap_or(20_000),
            max_ingest_connections: self
                .max_ingest_connections
                .or(file.max_ingest_connections)
                .unwrap_or(256),
            max_calls: self
                .max_calls
                .or(file.max_calls)
                .unwrap_or(crate::reduce::DEFAULT_MAX_CALLS),
            coalesce_after: self
                .coalesce_after
                .or(file.coalesce_after)
                .unwrap_or(crate::delivery::OutboxLimits::default().soft)
                .clamp(1, crate::delivery::OutboxLimits::default().hard),
            stale_call_after: (stale > 0.0).then(|| Duration::from_secs_f64(stale)),
            service_level_secs,
            max_http_connections: self
                .max_http_connections
                .or(file.max_http_connections)
                .unwrap_or(10_000)
                .max(1),
            pack_frames: self.pack_frames.or(file.pack_frames).unwrap_or(true),
            access: self.access.or(file.access),
            session_cookie: cookie_name(self.session_cookie.or(file.session_cookie))?,
            insecure_open: self.insecure_open || file.insecure_open.unwrap_or(false),
            allowed_origins: if self.allowed_origins.is_empty() {
                file.allowed_origins.unwrap_or_default()
            } else {
                self.allowed_origins
            },
            tls: tls_files(
                "tls",
                self.tls_cert.or(file.tls_cert),
                self.tls_key.or(file.tls_key),
                None,
            )?,
            ingest_tls: tls_files(
                "ingest-tls",
                self.ingest_tls_cert.or(file.ingest_tls_cert),
                self.ingest_tls_key.or(file.ingest_tls_key),
                self.ingest_client_ca.or(file.ingest_client_ca),
            )?,
            journal: self.journal.or(file.journal),
            journal_fsync: self
                .journal_fsync
                .or(file.journal_fsync)
                .unwrap_or(crate::journal::live::Fsync::Batch),
            journal_retention: (retention > 0.0).then(|| Duration::from_secs_f64(retention)),
            journal_max_bytes: self
                .journal_max_bytes
                .or(file.journal_max_bytes)
                .filter(|&bytes| bytes > 0),
            journal_segment_bytes: segment_bytes,
            nats,
            analytics_out: self.analytics_out.or(file.analytics_out),
            feed_buffer_bytes: self
                .feed_buffer_bytes
                .or(file.feed_buffer_bytes)
                .unwrap_or(0),
            types,
            node,
            cdr,
        })
    }
}

/// The machine's host name (`localhost` when it has none that reads as text).
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let status = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match (status, std::str::from_utf8(&buf[..end])) {
        (0, Ok(name)) if !name.is_empty() => name.to_owned(),
        _ => "localhost".to_owned(),
    }
}

/// The JetStream settings for `url`: flags over the file over the defaults.
fn nats_settings(
    url: String,
    args: &ServeArgs,
    file: &FileConfig,
) -> Result<crate::jetstream::Settings, ConfigError> {
    let defaults = crate::jetstream::Settings::new(url);
    let seconds = |name: &str,
                   value: Option<f64>,
                   default: Duration,
                   range: std::ops::RangeInclusive<f64>| {
        match value {
            None => Ok(default),
            Some(secs) if range.contains(&secs) => Ok(Duration::from_secs_f64(secs)),
            Some(secs) => Err(ConfigError::Invalid(format!(
                "{name} must be {} to {} seconds, not {secs}",
                range.start(),
                range.end()
            ))),
        }
    };
    let replicas = args.nats_replicas.or(file.nats_replicas).unwrap_or(1);
    if !(1..=5).contains(&replicas) {
        return Err(ConfigError::Invalid(format!(
            "nats-replicas must be 1 to 5, not {replicas}"
        )));
    }
    Ok(crate::jetstream::Settings {
        replicas,
        max_age: seconds(
            "nats-max-age",
            args.nats_max_age.or(file.nats_max_age),
            defaults.max_age,
            1.0..=3.2e9,
        )?,
        max_bytes: args.nats_max_bytes.or(file.nats_max_bytes).unwrap_or(0),
        duplicate_window: seconds(
            "nats-duplicate-window",
            args.nats_duplicate_window.or(file.nats_duplicate_window),
            defaults.duplicate_window,
            1.0..=604_800.0,
        )?,
        ack_timeout: seconds(
            "nats-ack-timeout",
            args.nats_ack_timeout.or(file.nats_ack_timeout),
            defaults.ack_timeout,
            0.1..=600.0,
        )?,
        ..defaults
    })
}

/// A listener's TLS files: a certificate and its key together, or neither.
fn tls_files(
    name: &str,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
) -> Result<Option<crate::tls::TlsFiles>, ConfigError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(crate::tls::TlsFiles {
            cert,
            key,
            client_ca,
        })),
        (None, None) if client_ca.is_none() => Ok(None),
        (None, None) => Err(ConfigError::Invalid(
            "ingest-client-ca needs ingest-tls-cert and ingest-tls-key".into(),
        )),
        _ => Err(ConfigError::Invalid(format!(
            "{name}-cert and {name}-key go together"
        ))),
    }
}

/// The session cookie's name: a cookie token (RFC 6265), JSESSIONID by default.
fn cookie_name(name: Option<String>) -> Result<String, ConfigError> {
    let name = name.unwrap_or_else(|| "JSESSIONID".to_owned());
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(ConfigError::Invalid(format!(
            "session-cookie must be a cookie name (letters, digits, !#$%&'*+-.^_`|~), not {name:?}"
        )));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = std::env::temp_dir().join(format!("callgate-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("callgate.toml");
        std::fs::write(
            &path,
            "history = 5\nreleased-linger = 2.5\nlisten = \"127.0.0.1:9000\"\ncoalesce-after = 50\n",
        )
        .unwrap();
        let config = ServeArgs {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            config: Some(path.clone()),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(config.listen.port(), 0);
        assert_eq!(config.history, 5);
        assert_eq!(config.released_linger, Duration::from_millis(2500));
        assert_eq!(config.ingest.port(), 7000);
        assert_eq!(config.coalesce_after, 50);
        assert_eq!(config.stale_call_after, Some(Duration::from_secs(43_200)));
        assert_eq!(config.max_http_connections, 10_000);
        std::fs::write(&path, "colour = \"red\"\n").unwrap();
        let err = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }
}
