//! `callgate sim`: seeded contact-center traffic to standard output, a file, or an ingest socket, paced in
//! real time, at a multiple of it, or as fast as possible.

use crate::sim::{SimConfig, Simulator};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The options of `callgate sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Seed; the same seed and options give the same events.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Number of agents (DNs 7001...).
    #[arg(long, default_value_t = 50)]
    pub agents: u32,
    /// Number of ACD queues (DNs 8001...).
    #[arg(long, default_value_t = 4)]
    pub queues: u32,
    /// Number of supervisors (DNs 7901...).
    #[arg(long, default_value_t = 3)]
    pub supervisors: u32,
    /// Mean call arrivals per second of simulated time.
    #[arg(long, default_value_t = 0.2)]
    pub calls_per_second: f64,
    /// Mean talk time in seconds.
    #[arg(long, default_value_t = 180.0)]
    pub talk_secs: f64,
    /// Stop after this many calls (calls in progress finish).
    #[arg(long)]
    pub calls: Option<u64>,
    /// Stop creating calls after this many seconds of simulated time.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Stop after this many events.
    #[arg(long)]
    pub events: Option<u64>,
    /// Pace: 1 is real time, 10 ten times faster, 0 as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub speed: f64,
    /// Write to this file instead of standard output.
    #[arg(long, conflicts_with = "connect")]
    pub out: Option<PathBuf>,
    /// Send to a gateway's ingest socket (HOST:PORT) instead of standard output; its last acknowledgement
    /// is printed on standard error.
    #[arg(long)]
    pub connect: Option<String>,
}

/// Why `sim` failed (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// No end was given, so the simulation would never stop.
    #[error("give --calls, --duration or --events")]
    Endless,
    /// `--speed` is negative or not a number.
    #[error("--speed must be 0 (as fast as possible) or more")]
    BadSpeed,
    /// The output failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Runs the simulation to its end.
pub fn run(args: &SimArgs) -> Result<(), SimError> {
    if args.calls.is_none() && args.duration.is_none() && args.events.is_none() {
        return Err(SimError::Endless);
    }
    if args.speed.is_nan() || args.speed < 0.0 || args.speed.is_infinite() {
        return Err(SimError::BadSpeed);
    }
    let config = SimConfig {
        seed: args.seed,
        agents: args.agents,
        queues: args.queues,
        supervisors: args.supervisors,
        calls_per_second: args.calls_per_second,
        talk_secs: args.talk_secs,
        max_calls: args.calls,
        duration_secs: args.duration,
        ..SimConfig::default()
    };
    let limit = usize::try_from(args.events.unwrap_or(u64::MAX)).unwrap_or(usize::MAX);
    let events = Simulator::new(config).take(limit);
    match &args.connect {
        Some(address) => {
            let stream = TcpStream::connect(address)?;
            stream.set_nodelay(true)?;
            // Read acknowledgements as they come, so the gateway never blocks writing them.
            let reader = BufReader::new(stream.try_clone()?);
            let acks = std::thread::spawn(move || reader.lines().map_while(Result::ok).last());
            let mut writer = BufWriter::new(stream.try_clone()?);
            emit(events, &mut writer, args.speed)?;
            writer.flush()?;
            stream.shutdown(Shutdown::Write)?;
            if let Ok(Some(last)) = acks.join() {
                eprintln!("{last}");
            }
            Ok(())
        }
        None => match &args.out {
            Some(path) => emit(
                events,
                &mut BufWriter::new(std::fs::File::create(path)?),
                args.speed,
            ),
            None => emit(events, &mut BufWriter::new(io::stdout().lock()), args.speed),
        },
    }
}

/// Writes each event as a line, waiting for its simulated time scaled by `speed` (0: no waiting).
fn emit(
    events: impl Iterator<Item = crate::sim::SimEvent>,
    out: &mut impl Write,
    speed: f64,
) -> Result<(), SimError> {
    let started = Instant::now();
    let mut first = None;
    for event in events {
        if speed > 0.0 {
            let origin = *first.get_or_insert(event.time);
            let offset = Duration::from_secs_f64((event.time - origin).max(0) as f64 / 1e6 / speed);
            let due = started + offset;
            let now = Instant::now();
            if due > now {
                // Let the events so far go out before sleeping.
                out.flush()?;
                std::thread::sleep(due - now);
            }
        }
        out.write_all(event.line.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
