//! `callgate serve`: wiring the ingest socket, the pipeline, the stream and the HTTP door together, and
//! taking them down gracefully.

pub mod config;

use crate::access::Gate;
use crate::api::{self, AppState};
use crate::delivery::{OutboxLimits, Renderer};
use crate::event::{Decoded, decode_line};
use crate::ingest::intake::Intake;
use crate::ingest::sim::{SimConfig, Simulator};
use crate::pipeline::{ConnStats, Pipeline, Submission};
use crate::stream::Stream;
use crate::supervise::Supervisor;
use crate::tls::Tls;
pub use config::{LogFormat, ServeArgs, ServeConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for connections to finish before exiting anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the server could not run (exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The metrics recorder could not be installed.
    #[error("metrics: {0}")]
    Metrics(String),
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    /// The rendering threads could not be started.
    #[error("cannot start the rendering threads: {0}")]
    Renderer(#[source] std::io::Error),
    /// The frame packer's thread could not be started.
    #[error("cannot start the frame packer: {0}")]
    Packer(std::io::Error),
    /// The access file is not valid.
    #[error(transparent)]
    Access(#[from] crate::access::AccessError),
    /// A certificate or key could not be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// `--allowed-origins` or `--base-url` is not an origin.
    #[error("{0}")]
    Origins(String),
    /// Open mode, or ingest without sources, on a non-loopback address without `--insecure-open`.
    #[error("{0}")]
    Insecure(String),
    /// A task the gateway cannot work without died (the cause names it).
    #[error("{0}")]
    TaskDied(String),
    /// The journal cannot be opened or replayed.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// NATS JetStream cannot be reached, set up or read.
    #[error(transparent)]
    Nats(#[from] crate::jetstream::NatsError),
    /// `--analytics-out` cannot be opened or repaired.
    #[error("analytics output: {0}")]
    Analytics(#[from] crate::export::sink::SinkError),
}

/// How long the start waits for the NATS server of `--nats`.
const NATS_CONNECT_WAIT: Duration = Duration::from_secs(30);

/// The addresses the server bound.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// HTTP and WebSocket.
    pub listen: SocketAddr,
    /// Ingest.
    pub ingest: SocketAddr,
    /// Whether the gateway runs open (no access file): everything visible to everyone.
    pub open: bool,
}

/// The gate for `config`: open without an access file, which only loopback listeners allow unless
/// `--insecure-open`; likewise an ingest socket without `[[ingest]]` sources.
fn gate(config: &ServeConfig) -> Result<Gate, ServeError> {
    let access = config
        .access
        .as_deref()
        .map(crate::access::Access::load)
        .transpose()?;
    let open_ingest = access
        .as_ref()
        .is_none_or(|access| access.ingest_sources().is_empty());
    if !config.insecure_open {
        if access.is_none() && !config.listen.ip().is_loopback() {
            return Err(ServeError::Insecure(format!(
                "refusing to run open (no --access file) on {}: everyone could read every call; give --access FILE, or --insecure-open",
                config.listen
            )));
        }
        if open_ingest && !config.ingest.ip().is_loopback() {
            return Err(ServeError::Insecure(format!(
                "refusing ingest from anyone on {}: give [[ingest]] sources in the access file, or --insecure-open",
                config.ingest
            )));
        }
    }
    match access {
        None => Ok(Gate::open()),
        Some(access) => Gate::secured(access, &config.session_cookie).map_err(ServeError::Insecure),
    }
}

/// Runs the gateway until `shutdown` completes, then shuts down gracefully. `on_ready` is called once
/// every listener is bound.
pub async fn run(
    config: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
    on_ready: impl FnOnce(Bound),
) -> Result<(), ServeError> {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ],
        )
        .map_err(|err| ServeError::Metrics(err.to_string()))?
        .install_recorder()
        .map_err(|err| ServeError::Metrics(err.to_string()))?;
    let gate = Arc::new(gate(&config)?);
    if gate.is_open() && !config.listen.ip().is_loopback() {
        tracing::warn!(
            "running open on {} (--insecure-open): no access file, everyone can see every call",
            config.listen
        );
    } else if gate.is_open() {
        tracing::info!(
            "running open on loopback: no access file, every local client sees every call"
        );
    } else {
        tracing::info!(
            "running with the access file {}",
            config
                .access
                .as_deref()
                .unwrap_or(std::path::Path::new(""))
                .display()
        );
    }
    let http = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let ingest = TcpListener::bind(config.ingest)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.ingest,
            source,
        })?;
    let bound = Bound {
        listen: http.local_addr().map_err(ServeError::Http)?,
        ingest: ingest.local_addr().map_err(ServeError::Http)?,
        open: gate.is_open(),
    };
    let http_tls = config.tls.clone().map(Tls::new).transpose()?.map(Arc::new);
    let ingest_tls = config
        .ingest_tls
        .clone()
        .map(Tls::new)
        .transpose()?
        .map(Arc::new);
    let scheme = if http_tls.is_some() { "https" } else { "http" };
    let base_url = config
        .base_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{}", bound.listen))
        .trim_end_matches('/')
        .to_owned();

    // Load the phone-number metadata and geocoding index now, not on the first event's hot path; beside
    // the recovery's start (a shard that needs them first waits for them).
    let loaded = tokio::task::spawn_blocking(|| crate::enrich::phone::build("+14155550100"));
    let nats = match &config.nats {
        Some(settings) => Some(crate::jetstream::connect(settings, NATS_CONNECT_WAIT).await?),
        None => None,
    };
    // The epoch is kept where the events are: a restart resumes the same stream (api.md).
    let epoch = match (&config.journal, &nats, &config.nats) {
        (Some(dir), Some(context), Some(settings)) => {
            let epoch = crate::journal::epoch(dir, epoch)?;
            // Kept in JetStream too, for `callgate export --nats` (when no gateway kept one there).
            let kept = crate::jetstream::epoch(context, settings, || epoch.clone()).await?;
            if kept != epoch {
                tracing::warn!(
                    "JetStream keeps the epoch {kept}, this gateway's journal {epoch}: `callgate export --nats` names notifications with the first"
                );
            }
            epoch
        }
        (Some(dir), _, _) => crate::journal::epoch(dir, epoch)?,
        (None, Some(context), Some(settings)) => {
            crate::jetstream::epoch(context, settings, epoch).await?
        }
        _ => epoch(),
    };
    let renderer = Renderer::start(render_threads()).map_err(ServeError::Renderer)?;
    let stream = Arc::new(
        Stream::new(
            &epoch,
            config.history,
            OutboxLimits {
                soft_bytes: usize::MAX,
                soft: config.coalesce_after,
                ..OutboxLimits::default()
            },
        )
        .rendering_on(renderer.clone()),
    );
    let supervisor = Supervisor::new();
    let cancel = CancellationToken::new();
    // Before the pipeline: a recovery's replay goes through the stage too (the file sink skips what it
    // holds), and the publisher would wait on a stage that is not there.
    let feed = (config.journal.is_some() && config.feed_buffer_bytes > 0).then(|| {
        Arc::new(crate::export::feed::FeedBuffer::new(
            config.feed_buffer_bytes,
        ))
    });
    let cdr_stream = match (&nats, &config.nats) {
        (Some(context), Some(settings)) => {
            Some(crate::jetstream::cdr::CdrPublisher::start(context.clone(), settings).await?)
        }
        _ => None,
    };
    let tap = if config.analytics_out.is_some() || feed.is_some() || cdr_stream.is_some() {
        let path = config.analytics_out.as_deref();
        let stage = start_analytics(path, feed.clone(), cdr_stream, &config, &epoch, &supervisor);
        Some(stage?)
    } else {
        None
    };
    // What shapes the notifications, kept where the events are for `callgate export` (docs/export.md).
    let kept = crate::export::settings::Settings::of(&config, &base_url);
    if let Some(dir) = &config.journal {
        kept.save(dir)
            .map_err(|source| ServeError::Journal(crate::journal::JournalError::io(dir, source)))?;
    }
    if let (Some(context), Some(settings)) = (&nats, &config.nats) {
        crate::jetstream::keep_settings(context, settings, &kept).await?;
    }
    let (pipeline, published_all) =
        Pipeline::start(kept.pipeline(tap), Arc::clone(&stream), &supervisor);
    // Nobody can look before the doors serve: the replay renders only what will be looked at.
    stream.defer();
    if let Some(dir) = &config.journal {
        // Past a file-size limit (`ulimit -f`) a write then fails with EFBIG, and the journal refuses the
        // events, rather than the signal killing the gateway. tokio's handler stays for the process.
        let file_size = tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ);
        if let Err(error) = tokio::signal::unix::signal(file_size) {
            tracing::warn!("SIGXFSZ cannot be caught: {error}");
        }
        recover(dir, &config, &pipeline, &supervisor, &cancel).await?;
    }
    let writer = match (nats, &config.nats) {
        (Some(context), Some(settings)) => {
            let replay = config.journal.is_none();
            Some(recover_streams(context, settings, &pipeline, replay, &supervisor).await?)
        }
        _ => None,
    };
    // The clock has moved on while the gateway was down: the calls whose linger ran out meanwhile go now,
    // as at the first tick, rather than being rendered and indexed first.
    pipeline.catch_up().await;
    pipeline.write_newest().await;
    stream.settle();
    // The gateway is not ready until the first event with a number cannot stall it: the warm-up is
    // awaited before serving, unless a recovery replayed events, which warmed what the traffic uses (the
    // rest is warmed beside the first minutes of service rather than holding up the restart).
    let started = std::time::Instant::now();
    let _ = loaded.await;
    let warm_up = tokio::task::spawn_blocking(crate::enrich::phone::warm_up);
    if stream.stats().seq == 0 {
        let regions = warm_up.await.unwrap_or(0);
        tracing::debug!(regions, "phone metadata warmed in {:?}", started.elapsed());
    } else {
        tokio::spawn(async move {
            let regions = warm_up.await.unwrap_or(0);
            tracing::debug!(regions, "phone metadata warmed in {:?}", started.elapsed());
        });
    }
    let intake = Arc::new(Intake::new(Arc::clone(&pipeline), writer));
    pipeline.start_clock(&supervisor);

    supervisor.spawn(
        "access reloader",
        reload_on_hangup(
            Arc::clone(&gate),
            config.access.clone(),
            [http_tls.clone(), ingest_tls.clone()],
            cancel.clone(),
        ),
    );
    let connections = TaskTracker::new();
    let ready = Arc::new(AtomicBool::new(false));
    let state: AppState = Arc::new(crate::api::Shared {
        stream: Arc::clone(&stream),
        base_url: base_url.clone().into(),
        metrics,
        ready: Arc::clone(&ready),
        cancel: cancel.clone(),
        tracker: connections.clone(),
        ws_permits: Arc::new(tokio::sync::Semaphore::new(config.max_ws_connections)),
        gate: Arc::clone(&gate),
        tls: http_tls.is_some(),
        origins: Arc::new(
            crate::api::origin::Origins::new(&base_url, &config.allowed_origins)
                .map_err(ServeError::Origins)?,
        ),
        cometd: Arc::new(crate::api::cometd::Sessions::new(Arc::clone(&stream))),
        feed: match (&feed, &config.journal) {
            (Some(buffer), Some(dir)) => Some(Arc::new(crate::api::feed::Feed::new(
                Arc::clone(buffer),
                dir.clone(),
            ))),
            _ => None,
        },
    });
    supervisor.spawn(
        "cometd session sweeper",
        Arc::clone(&state.cometd).sweep(cancel.clone()),
    );

    let (ingest_done_tx, ingest_done) = tokio::sync::oneshot::channel::<()>();
    let ingest_task = crate::ingest::tcp::serve(
        ingest,
        Arc::clone(&intake),
        config.max_ingest_connections,
        Arc::clone(&gate),
        ingest_tls.clone(),
        cancel.clone(),
        connections.clone(),
    );
    supervisor.spawn("ingest listener", async move {
        ingest_task.await;
        let _ = ingest_done_tx.send(());
    });
    supervisor.spawn(
        "HTTP listener",
        api::server::serve(
            http,
            state.clone(),
            api::router(state),
            config.max_http_connections,
            http_tls.clone(),
            cancel.clone(),
            connections.clone(),
        ),
    );
    if config.demo {
        connections.spawn(demo(
            Arc::clone(&intake),
            cancel.clone(),
            config.journal.clone(),
        ));
    }

    ready.store(true, Ordering::Release);
    tracing::info!(listen = %bound.listen, ingest = %bound.ingest, %epoch, "callgate serving");
    on_ready(bound);
    // After the doors open: packing a recovery's history is background work, not part of the restart.
    if config.pack_frames {
        let packed = crate::stream::packer::start(Arc::clone(&stream), cancel.clone())
            .map_err(ServeError::Packer)?;
        supervisor.spawn(
            "frame packer",
            crate::stream::packer::run_applier(Arc::clone(&stream), packed),
        );
    }

    let failure = tokio::select! {
        () = shutdown => None,
        cause = supervisor.failed() => Some(cause),
    };
    ready.store(false, Ordering::Release);
    match &failure {
        None => tracing::info!("shutting down: no new connections; draining"),
        Some(cause) => tracing::error!("shutting down, a task died: {cause}"),
    }
    supervisor.stop();
    cancel.cancel();
    let _ = ingest_done.await;
    connections.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within {SHUTDOWN_GRACE:?}");
    }
    intake.close();
    renderer.close();
    pipeline.close().await;
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, published_all).await;
    if !supervisor.wait(SHUTDOWN_GRACE).await {
        tracing::warn!("some tasks did not stop within {SHUTDOWN_GRACE:?}");
    }
    if let Some(cause) = failure {
        return Err(ServeError::TaskDied(cause));
    }
    tracing::info!("stopped");
    Ok(())
}

/// Opens `--analytics-out` (if any) and starts the stage that writes to it, to the live feed's `buffer`
/// and to JetStream's `CG_CDR` (each if any), under `supervisor`: the sender the publisher hands it
/// facts through.
fn start_analytics(
    path: Option<&std::path::Path>,
    buffer: Option<Arc<crate::export::feed::FeedBuffer>>,
    cdr_stream: Option<crate::jetstream::cdr::CdrPublisher>,
    config: &ServeConfig,
    epoch: &str,
    supervisor: &Supervisor,
) -> Result<crate::pipeline::Tap, ServeError> {
    use crate::export::{Recorder, RecorderConfig, cloudevent::Origin, sink::Output, stage::Stage};
    let (output, types) = match path {
        Some(path) => (Output::open(path)?, config.types),
        None => (Output::Nowhere, crate::export::Types::NONE),
    };
    let resume = output.resume();
    if let (Some(path), true) = (path, resume.position > 0) {
        tracing::info!(
            file = %path.display(),
            position = resume.position,
            "analytics output resumes after the last position it holds"
        );
    }
    let recorder = Recorder::new(RecorderConfig {
        types,
        origin: Origin {
            node: config.node.clone(),
            epoch: epoch.to_owned(),
        },
        cdr: config.cdr.clone(),
        from: 0,
        since: None,
        resume,
        feed: buffer,
        collect_cdrs: cdr_stream.is_some(),
    });
    let (sender, batches) = tokio::sync::mpsc::channel(crate::export::stage::QUEUE);
    let tap = crate::pipeline::Tap {
        sender,
        notes: recorder.needs_notes(),
        lines: recorder.needs_lines(),
    };
    let stage = match cdr_stream {
        Some(publisher) => Stage::new(recorder, output).publishing_cdrs(publisher),
        None => Stage::new(recorder, output),
    };
    let runtime = tokio::runtime::Handle::current();
    supervisor.spawn("analytics output", async move {
        match tokio::task::spawn_blocking(move || stage.run(batches, runtime)).await {
            Ok(Ok(counts)) => tracing::info!(
                events = counts.events,
                notifications = counts.notifications,
                cdrs = counts.cdrs,
                "analytics output closed"
            ),
            Ok(Err(error)) => {
                metrics::counter!("callgate_analytics_write_errors_total").increment(1);
                tracing::error!("analytics output failed: {error}");
            }
            Err(panic) => tracing::error!("analytics output panicked: {panic}"),
        }
    });
    Ok(tap)
}

/// The demo simulation's seed and start kept in the journal's folder, or `fresh` (then kept).
fn demo_origin(dir: &std::path::Path, fresh: (u64, i64)) -> std::io::Result<(u64, i64)> {
    let path = dir.join("demo");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let mut words = text.split_whitespace();
        if let (Some(Ok(seed)), Some(Ok(start))) = (
            words.next().map(str::parse::<u64>),
            words.next().map(str::parse::<i64>),
        ) {
            return Ok((seed, start));
        }
    }
    std::fs::write(&path, format!("{} {}\n", fresh.0, fresh.1))?;
    Ok(fresh)
}

/// Reads the JetStream event streams: where each stands, and, when `replay` (no journal), every event
/// back through the pipeline. Returns the writers that go on from there.
async fn recover_streams(
    context: async_nats::jetstream::Context,
    settings: &crate::jetstream::Settings,
    pipeline: &Arc<Pipeline>,
    replay: bool,
    supervisor: &Supervisor,
) -> Result<Arc<crate::jetstream::writer::Writer>, ServeError> {
    let started = Instant::now();
    let replay_into = replay.then_some(&**pipeline);
    let recovered = crate::jetstream::recover::recover(&context, replay_into).await?;
    if recovered.replayed.undecodable > 0 {
        tracing::warn!(
            skipped = recovered.replayed.undecodable,
            "JetStream: events that no longer decode were skipped"
        );
    }
    tracing::info!(
        streams = recovered.streams,
        events = recovered.replayed.events,
        "JetStream {}: streams read in {:?}",
        settings.url,
        started.elapsed()
    );
    Ok(Arc::new(crate::jetstream::writer::Writer::new(
        context,
        settings.clone(),
        Arc::clone(pipeline),
        recovered.tails,
        supervisor.clone(),
    )))
}

/// Opens the journal in `dir` (cutting a torn tail), replays it through the pipeline, and attaches it for
/// what comes next. The listeners are bound (the base URL may need their port) but accept nothing yet.
async fn recover(
    dir: &std::path::Path,
    config: &ServeConfig,
    pipeline: &Arc<Pipeline>,
    supervisor: &Supervisor,
    cancel: &CancellationToken,
) -> Result<(), ServeError> {
    let started = Instant::now();
    let opened = crate::journal::open(dir, config.journal_segment_bytes)?;
    if let Some(repair) = &opened.repaired {
        tracing::warn!(
            segment = %repair.path.display(),
            offset = repair.offset,
            cut = repair.cut,
            "journal: cut a torn last entry ({}); nothing after it had been acked",
            repair.why
        );
    }
    let end = opened.writer.next_position();
    let replayed = pipeline.replay(dir, opened.first, end).await?;
    if replayed.undecodable > 0 {
        tracing::warn!(
            skipped = replayed.undecodable,
            "journal: entries that no longer decode were skipped"
        );
    }
    tracing::info!(
        events = replayed.events,
        ticks = replayed.ticks,
        last = replayed.last,
        "journal {}: replayed in {:?}",
        dir.display(),
        started.elapsed()
    );
    let (mut journal, progress) =
        crate::journal::live::start(opened, config.journal_fsync, supervisor)?;
    let stored = Arc::new(std::sync::atomic::AtomicU64::new(
        crate::journal::retention::stored_bytes(dir)?,
    ));
    if let Some(max) = config.journal_max_bytes {
        journal.bound(max, Arc::clone(&stored));
    }
    pipeline.attach_journal(journal, progress).await;
    if let Some(retention) = config.journal_retention {
        supervisor.spawn(
            "journal retention",
            retain(
                dir.to_owned(),
                retention,
                Arc::clone(pipeline),
                stored,
                cancel.clone(),
            ),
        );
    }
    Ok(())
}

/// Deletes the journal's segments that retention lets go (docs/journal.md, "Retention"), checking every
/// quarter of `retention` (at most every minute), until `cancel`.
async fn retain(
    dir: std::path::PathBuf,
    retention: Duration,
    pipeline: Arc<Pipeline>,
    stored: Arc<std::sync::atomic::AtomicU64>,
    cancel: CancellationToken,
) {
    let every = (retention / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = cancel.cancelled() => return,
        }
        // Nothing is known to be unneeded before the shards have taken a journaled event.
        let Some(needed) = pipeline.oldest_needed() else {
            continue;
        };
        let Some(written_before) = std::time::SystemTime::now().checked_sub(retention) else {
            continue;
        };
        let folder = dir.clone();
        let deleted = tokio::task::spawn_blocking(move || {
            crate::journal::retention::delete_before(&folder, needed, written_before)
        })
        .await;
        match deleted {
            Ok(Ok(deleted)) if deleted.segments > 0 => {
                // Saturating: a new segment's header is not counted by the writes.
                let _ = stored.fetch_update(
                    std::sync::atomic::Ordering::AcqRel,
                    std::sync::atomic::Ordering::Acquire,
                    |held| Some(held.saturating_sub(deleted.bytes)),
                );
                metrics::counter!("callgate_journal_segments_deleted_total")
                    .increment(deleted.segments as u64);
                tracing::info!(
                    segments = deleted.segments,
                    bytes = deleted.bytes,
                    first_kept = deleted.first_kept,
                    "journal: deleted segments past retention that no live call or device needs"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!("journal retention: {error}"),
            Err(panic) => tracing::error!("journal retention panicked: {panic}"),
        }
    }
}

/// Rereads the access file at every SIGHUP and puts it in force; a file that does not load keeps the
/// one in force (access.md). Open connections recompute their scope from it at once.
async fn reload_on_hangup(
    gate: Arc<Gate>,
    path: Option<std::path::PathBuf>,
    tls: [Option<Arc<Tls>>; 2],
    cancel: CancellationToken,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(error) => {
            tracing::warn!(
                "SIGHUP cannot be caught, so the access file cannot be reloaded: {error}"
            );
            cancel.cancelled().await;
            return;
        }
    };
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            received = hangups.recv() => {
                if received.is_none() {
                    cancel.cancelled().await;
                    return;
                }
            }
        }
        for tls in tls.iter().flatten() {
            match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: certificates reloaded"),
                Err(error) => tracing::error!("SIGHUP: keeping the certificates in force: {error}"),
            }
        }
        let Some(path) = &path else {
            tracing::info!("SIGHUP: running open, no access file to reload");
            continue;
        };
        let loaded = crate::access::Access::load(path)
            .map_err(|error| error.to_string())
            .and_then(|access| gate.reload(access));
        match loaded {
            Ok(()) => tracing::info!("SIGHUP: access file {} reloaded", path.display()),
            Err(error) => tracing::error!("SIGHUP: keeping the access file in force: {error}"),
        }
    }
}

/// One rendering thread per core: snapshots of several connections render in parallel, each below
/// live delivery's priority.
fn render_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// A name for this run of the gateway, different at every start.
fn epoch() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}-{:x}", nanos as u64, std::process::id())
}

/// The center `--demo` simulates, from `seed`, opened at `start` (µs): 20 agents, 2 queues, 2 supervisors.
pub fn demo_config(seed: u64, start: i64) -> SimConfig {
    SimConfig {
        seed,
        agents: 20,
        queues: 2,
        supervisors: 2,
        calls_per_second: 0.15,
        talk_secs: 60.0,
        start,
        ..SimConfig::default()
    }
}

/// How much simulated history `--demo` has at start.
const DEMO_HISTORY_MICROS: i64 = 120_000_000;

/// `--demo`: a small contact center, simulated in real time, fed straight into the pipeline. With a
/// journal, the simulation's seed and start are kept beside it (`demo` in its folder), so a restart
/// resumes the same simulated day: the events the journal holds come again and are skipped as
/// duplicates, and the rest follow in real time. (A fresh simulation would number its events from 1
/// again, and the gateway would take them for duplicates of the last run's.)
async fn demo(intake: Arc<Intake>, cancel: CancellationToken, journal: Option<std::path::PathBuf>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(0))
        .unwrap_or(0);
    let fresh = (u64::try_from(now).unwrap_or(1), now - DEMO_HISTORY_MICROS);
    let (seed, start) = match &journal {
        Some(dir) => demo_origin(dir, fresh).unwrap_or_else(|error| {
            tracing::warn!("demo: a fresh simulation, as {}: {error}", dir.display());
            fresh
        }),
        None => fresh,
    };
    // The center opened two minutes ago: that history is fed at once, so the first look at the demo finds
    // calls in progress rather than an empty center waiting for its first caller.
    let config = demo_config(seed, start);
    let stats = Arc::new(ConnStats::default());
    let started = Instant::now();
    let simulator = Simulator::new(config);
    tracing::info!("demo: simulating 20 agents, 2 queues, 2 supervisors in real time");
    for event in simulator {
        let due = started + Duration::from_micros(u64::try_from(event.time - now).unwrap_or(0));
        tokio::select! {
            () = tokio::time::sleep_until(due.into()) => {}
            () = cancel.cancelled() => break,
        }
        if let Ok(Decoded::Event(decoded)) = decode_line(event.line.as_bytes()) {
            let submitted = intake
                .submit(vec![Submission {
                    event: Arc::new(decoded.into_owned()),
                    line: bytes::Bytes::from(event.line.clone().into_bytes()),
                    stats: Arc::clone(&stats),
                    ingested: Instant::now(),
                    arrival: None,
                    position: 0,
                }])
                .await;
            if let Err(failed) = submitted {
                tracing::error!("demo: stopped: {failed}");
                break;
            }
        }
    }
}
