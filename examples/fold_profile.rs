//! Folds a simulated stream in a loop, for profilers (`perf record`, `valgrind --tool=callgrind`).
//! Usage: `cargo run --release --example fold_profile -- [EVENTS] [PASSES]`.

use callgate::ingest::sim::{SimConfig, Simulator};
use callgate::reduce::{Fold, Notifications};

fn main() {
    let events: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let config = SimConfig {
        seed: 7,
        agents: 2000,
        queues: 8,
        supervisors: 20,
        calls_per_second: 8.0,
        ..SimConfig::default()
    };
    let lines: Vec<String> = Simulator::new(config)
        .take(events)
        .map(|e| e.line)
        .collect();
    let passes: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    for _ in 0..passes {
        let start = std::time::Instant::now();
        let mut reducer = Fold::default();
        let mut out = Notifications::default();
        let mut bytes = 0usize;
        for line in &lines {
            let _ = reducer.apply_line(line.as_bytes(), &mut out);
            bytes += out.iter().map(|n| n.members.len()).sum::<usize>();
            out.clear();
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{} events in {secs:.3} s: {:.0} events/s, {bytes} notification bytes",
            lines.len(),
            lines.len() as f64 / secs
        );
    }
}

/// The same allocator as the `callgate` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
