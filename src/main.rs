//! The `callgate` command.

use callgate::cli::fold::{FoldError, FoldOptions, fold};
use callgate::cli::sim::SimArgs;
use callgate::reduce::{DEFAULT_BASE_URL, DEFAULT_MAX_CALLS};
use callgate::serve::ServeArgs;
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc: the reducer allocates small strings per event, and glibc's allocator cost ~9% of fold time.
/// Built with `no_thp`: mimalloc otherwise asks for transparent huge pages, and the first touch of each
/// 2 MiB page (zeroed by the kernel while the allocating task waits) stalled the live pipeline for
/// milliseconds at a time; 3.5% of notifications took over 5 ms from ingest to publish at 20k events/s,
/// 0.03% without huge pages.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A gateway from Genesys T-Server events to live GWS Voice API call resources.
#[derive(Parser)]
#[command(name = "callgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fold events (JSON lines) into call resources, or into notifications with --updates.
    Fold {
        /// Public base URL for uri, deviceUri and parentCallUri.
        #[arg(long, default_value = DEFAULT_BASE_URL)]
        base_url: String,
        /// Print every notification (with seq) instead of the final resources.
        #[arg(long)]
        updates: bool,
        /// The most call resources held at once; events that would create more are ignored.
        #[arg(long, default_value_t = DEFAULT_MAX_CALLS * 10)]
        max_calls: usize,
        /// Seconds within which a queued call diverted counts towards its queue's service level.
        #[arg(long, default_value_t = callgate::reduce::DEFAULT_SERVICE_LEVEL_SECS)]
        service_level_secs: u64,
        /// Event files, read in order; none or `-` reads standard input.
        files: Vec<PathBuf>,
    },
    /// Print the call detail records (JSON lines) of event files, as the live gateway emits them.
    Cdr {
        /// How long after its last release a call waits for more events before its record is due.
        #[arg(long, default_value_t = 30)]
        released_linger: u64,
        /// How long after a call's end a change of its attached data emits a new version (seconds).
        #[arg(long, default_value_t = 3600)]
        cdr_late_window: u64,
        /// The attached-data key whose value is the record's disposition.
        #[arg(long, default_value = "DispositionCode")]
        cdr_disposition_key: String,
        /// Event files, read in order; none or `-` reads standard input.
        files: Vec<PathBuf>,
    },
    /// Write the records of a journal (events, notifications, call detail records) as CloudEvents
    /// NDJSON, as the gateway that wrote the journal produced them.
    Export {
        /// The journal's folder (`serve --journal`).
        #[arg(long, required_unless_present = "nats", conflicts_with = "nats")]
        journal: Option<PathBuf>,
        /// Instead of a journal, the event streams of JetStream at this NATS server (`serve --nats`),
        /// merged by arrival; a record's `position` is then the sum of the stream sequences read.
        #[arg(long)]
        nats: Option<String>,
        /// Which records: `event`, `notification`, `cdr`, comma-separated.
        #[arg(long, default_value = "event,notification,cdr")]
        types: String,
        /// Leave out records of journal positions before this one.
        #[arg(long, default_value_t = 0, conflicts_with = "since")]
        from: u64,
        /// Leave out records of what the gateway took before this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// At the end of the journal, wait for more (until interrupted).
        #[arg(long)]
        follow: bool,
        /// The output file (appended to; resumed after a crash), or `-` for standard output.
        #[arg(long, default_value = "-")]
        out: PathBuf,
        /// The gateway's name in `source` [default: the journal's settings, else the host name].
        #[arg(long)]
        node: Option<String>,
        /// The base URL of `uri` members [default: the journal's settings].
        #[arg(long)]
        base_url: Option<String>,
        /// Reducer shards [default: the journal's settings].
        #[arg(long)]
        shards: Option<usize>,
    },
    /// Store records in other systems.
    Sink {
        #[command(subcommand)]
        command: SinkCommand,
    },
    /// Run the gateway: TCP ingest, WebSocket fanout, REST.
    Serve(Box<ServeArgs>),
    /// Generate realistic T-Server traffic (JSON lines): to stdout, a file, or an ingest socket.
    Sim(SimArgs),
    /// Read a password (one line) on standard input and print its argon2id PHC string for the access
    /// file.
    HashPassword,
    /// Ask a gateway whether it is ready (`GET /readyz`): exit 0 on 200, else 1 with the reason on
    /// standard error. The container image's HEALTHCHECK, which has no curl.
    Health {
        /// The URL [default: /readyz on the port of CALLGATE_LISTEN, asked on loopback; without it
        /// http://127.0.0.1:8080/readyz].
        #[arg(long)]
        url: Option<String>,
        /// Seconds the probe may take in all (connecting included).
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Access files.
    Access {
        #[command(subcommand)]
        command: AccessCommand,
    },
}

#[derive(Subcommand)]
enum SinkCommand {
    /// The call detail records of a journal into PostgreSQL: table `call_cdr` (created if absent),
    /// one row per call at its highest version; resumes after the last commit.
    Postgres {
        /// The connection string (`host=127.0.0.1 port=5432 user=... dbname=...`, or a URL).
        #[arg(long, env = "CALLGATE_PG_DSN")]
        dsn: String,
        /// The journal's folder (`serve --journal`): its events are folded into CDRs.
        #[arg(long, required_unless_present = "nats", conflicts_with = "nats")]
        journal: Option<PathBuf>,
        /// Instead of a journal, JetStream's `CG_CDR` at this NATS server (`serve --nats`), read by a
        /// durable consumer named --consumer.
        #[arg(long)]
        nats: Option<String>,
        /// The name this consumer's position is kept under (and the JetStream consumer's).
        #[arg(long, default_value = "callgate")]
        consumer: String,
        /// CDRs per transaction, at most.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        batch: u32,
        /// At the end of the journal, wait for more (until interrupted).
        #[arg(long)]
        follow: bool,
    },
}

#[derive(Subcommand)]
enum AccessCommand {
    /// Validate an access file: exit 0 when valid, 1 with every broken rule named otherwise.
    Check {
        /// The access file.
        file: PathBuf,
    },
}

/// Set by SIGINT or SIGTERM: `export --follow` stops at the end of what is written.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop_signal(_signal: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::Release);
}

/// SIGINT and SIGTERM set [`STOP`] rather than end the process: a follower finishes what it has.
fn stop_on_signals() {
    let handler = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// Logs of a command other than `serve` on standard error, at `RUST_LOG` or info.
fn command_logs() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
}

fn sink_postgres(options: callgate::cli::sink::SinkOptions) -> ExitCode {
    stop_on_signals();
    command_logs();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("callgate sink postgres: cannot start the runtime: {err}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(callgate::cli::sink::postgres(&options, &STOP)) {
        Ok(counts) => {
            eprintln!(
                "callgate sink postgres: {} records in {} transactions; stored up to position {}",
                counts.records, counts.transactions, counts.position
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("callgate sink postgres: {err}");
            ExitCode::from(2)
        }
    }
}

fn health(url: Option<&str>, timeout: u64) -> ExitCode {
    use callgate::cli::health;
    let listen = std::env::var("CALLGATE_LISTEN").ok();
    let checked = health::resolve_url(url, listen.as_deref())
        .and_then(|url| health::check(&url, std::time::Duration::from_secs(timeout.max(1))));
    match checked {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("callgate health: {err}");
            ExitCode::from(1)
        }
    }
}

fn export(options: callgate::cli::export::ExportOptions) -> ExitCode {
    stop_on_signals();
    command_logs();
    match callgate::cli::export::export(&options, &STOP) {
        Ok(counts) => {
            eprintln!(
                "callgate export: {} events, {} notifications, {} cdrs written; {} left out",
                counts.events, counts.notifications, counts.cdrs, counts.skipped
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("callgate export: {err}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::HashPassword => {
            match callgate::cli::access::hash_password(
                &mut std::io::stdin().lock(),
                &mut std::io::stdout().lock(),
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("callgate hash-password: {err}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Access {
            command: AccessCommand::Check { file },
        } => match callgate::cli::access::check(&file, &mut std::io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("callgate access check: {err}");
                ExitCode::from(1)
            }
        },
        Command::Health { url, timeout } => health(url.as_deref(), timeout),
        Command::Sim(args) => match callgate::cli::sim::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("callgate sim: {err}");
                ExitCode::from(2)
            }
        },
        Command::Sink {
            command:
                SinkCommand::Postgres {
                    dsn,
                    journal,
                    nats,
                    consumer,
                    batch,
                    follow,
                },
        } => sink_postgres(callgate::cli::sink::SinkOptions {
            dsn,
            source: match (journal, nats) {
                (Some(journal), _) => callgate::cli::sink::SinkSource::Journal(journal),
                (None, Some(url)) => callgate::cli::sink::SinkSource::Nats(url),
                (None, None) => {
                    eprintln!("callgate sink postgres: give --journal DIR or --nats URL");
                    return ExitCode::from(2);
                }
            },
            consumer,
            batch: batch as usize,
            follow,
        }),
        Command::Export {
            journal,
            nats,
            types,
            from,
            since,
            follow,
            out,
            node,
            base_url,
            shards,
        } => export(callgate::cli::export::ExportOptions {
            source: match (journal, nats) {
                (Some(journal), _) => callgate::cli::export::ExportSource::Journal(journal),
                (None, Some(url)) => callgate::cli::export::ExportSource::Nats(url),
                (None, None) => {
                    eprintln!("callgate export: give --journal DIR or --nats URL");
                    return ExitCode::from(2);
                }
            },
            types: match types.parse() {
                Ok(types) => types,
                Err(err) => {
                    eprintln!("callgate export: --types: {err}");
                    return ExitCode::from(2);
                }
            },
            from,
            since: match since.as_deref().map(callgate::cli::export::parse_time) {
                None => None,
                Some(Some(at)) => Some(at),
                Some(None) => {
                    eprintln!("callgate export: --since: not an RFC 3339 time: {since:?}");
                    return ExitCode::from(2);
                }
            },
            follow,
            out,
            node,
            base_url,
            shards,
        }),
        Command::Cdr {
            released_linger,
            cdr_late_window,
            cdr_disposition_key,
            files,
        } => {
            let config = callgate::cdr::CdrConfig {
                linger: seconds_to_micros(released_linger),
                late_window: seconds_to_micros(cdr_late_window),
                disposition_key: cdr_disposition_key,
                ..callgate::cdr::CdrConfig::default()
            };
            let result = callgate::cli::cdr::cdr(
                config,
                &files,
                &mut std::io::stdin().lock(),
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            );
            match result {
                Ok(counts) => ExitCode::from(callgate::cli::cdr::exit_code(&counts)),
                Err(err) => {
                    eprintln!("callgate cdr: {err}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Fold {
            base_url,
            updates,
            max_calls,
            service_level_secs,
            files,
        } => {
            let options = FoldOptions {
                base_url,
                updates,
                inputs: files,
                max_calls,
                service_level_secs,
            };
            let result = fold(
                &options,
                &mut std::io::stdin().lock(),
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            );
            match result {
                Ok(counts) if counts.rejected > 0 => ExitCode::from(1),
                Ok(_) => ExitCode::SUCCESS,
                Err(FoldError::Output(err)) if err.kind() == std::io::ErrorKind::BrokenPipe => {
                    ExitCode::from(2)
                }
                Err(err) => {
                    eprintln!("callgate fold: {err}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let config = match args.resolve() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("callgate serve: {err}");
            return ExitCode::from(2);
        }
    };
    callgate::telemetry::init_logs(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(collect_freed_memory)
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("callgate serve: cannot start the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        // The handlers are installed before anything is served: a SIGTERM right after the ready line
        // must shut down gracefully, not kill the process by the signal's default action.
        let shutdown = shutdown_signal();
        callgate::serve::run(config, shutdown, |bound| {
            // The one line on standard output, once ready (api.md).
            println!(
                "{{\"listening\":\"{}\",\"ingest\":\"{}\",\"mode\":\"{}\"}}",
                bound.listen,
                bound.ingest,
                if bound.open { "open" } else { "access" }
            );
            let _ = std::io::stdout().flush();
        })
        .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("callgate serve: {err}");
            ExitCode::from(1)
        }
    }
}

unsafe extern "C" {
    /// mimalloc: frees what other threads freed into this thread's pages and returns unused pages to
    /// the system.
    fn mi_collect(force: bool);
}

/// How often an idle runtime thread gives freed memory back.
const COLLECT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Called when a runtime thread runs out of work. A frame published on one thread is often freed on
/// another (the packer swaps in its packed form; a call is forgotten), and mimalloc reclaims such frees
/// only when the owning thread allocates again or collects: a thread that then stays idle would keep
/// hundreds of megabytes resident after a burst. At most once a second per thread; it costs tens of µs.
fn collect_freed_memory() {
    use std::cell::Cell;
    use std::time::Instant;
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    if LAST
        .get()
        .is_some_and(|last| now.duration_since(last) < COLLECT_EVERY)
    {
        return;
    }
    LAST.set(Some(now));
    // SAFETY: mi_collect takes no pointers and may be called from any thread at any time.
    unsafe { mi_collect(false) };
}

/// Completes on SIGINT or SIGTERM.
/// Completes at SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled (which `serve::run` does only once it serves): a signal in between would
/// otherwise take its default action and kill the process. Call it inside the runtime.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        match (interrupt, terminate) {
            (Ok(mut interrupt), Ok(mut terminate)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            }
            (Ok(mut one), Err(_)) | (Err(_), Ok(mut one)) => {
                one.recv().await;
            }
            (Err(_), Err(_)) => std::future::pending().await,
        }
    }
}

/// Whole seconds as microseconds, saturating.
fn seconds_to_micros(seconds: u64) -> i64 {
    i64::try_from(seconds.saturating_mul(1_000_000)).unwrap_or(i64::MAX)
}
