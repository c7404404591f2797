//! Fold throughput: decode + reduce + serialize every notification, on one core, over a realistic
//! simulated stream of at least one million events. Also the decode step alone, to see where time goes.
//!
//! Also `callgate cdr`'s work (issue 14: at least 500k events/s on one core): decode, the call detail
//! record fold, and every record written as its JSON line, over the same kind of stream with agent
//! states (wrap-up) on.
//!
//! Run: `cargo bench --bench fold` (`-- cdr` for the records alone). Events/s is criterion's "thrpt"
//! (elements = events).

use callgate::cdr::{CdrConfig, CdrFold};
use callgate::event::{Decoded, decode_line};
use callgate::ingest::sim::{SimConfig, Simulator};
use callgate::reduce::{Fold, Notifications};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;

/// The same allocator as the `callgate` binary, so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A day-like stream: 2,000 agents, 8 queues, 20 supervisors, the default scenario mix.
fn stream(min_events: usize) -> Vec<String> {
    // Calls only, as when the figures in docs/benchmarks.md were first measured.
    stream_with(min_events, false)
}

fn stream_with(min_events: usize, agent_states: bool) -> Vec<String> {
    let config = SimConfig {
        seed: 7,
        agents: 2000,
        queues: 8,
        supervisors: 20,
        calls_per_second: 8.0,
        agent_states,
        ..SimConfig::default()
    };
    Simulator::new(config)
        .take(min_events)
        .map(|e| e.line)
        .collect()
}

fn fold_all(lines: &[String], sink: &mut Vec<u8>) -> u64 {
    let mut reducer = Fold::default();
    let mut out = Notifications::default();
    let mut seq = 0u64;
    for line in lines {
        let _ = black_box(reducer.apply_line(line.as_bytes(), &mut out));
        // What `fold --updates` does with each notification, into memory instead of stdout.
        for notification in out.iter() {
            seq += 1;
            notification.write_line_with_seq(seq, sink);
        }
        out.clear();
        if sink.len() > 1 << 20 {
            sink.clear();
        }
    }
    seq
}

fn bench_fold(c: &mut Criterion) {
    let lines = stream(1_000_000);
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    eprintln!(
        "fold input: {} events, {:.0} bytes/event on average",
        lines.len(),
        bytes as f64 / lines.len() as f64
    );
    let mut sink = Vec::with_capacity(2 << 20);
    eprintln!("notifications per fold: {}", fold_all(&lines, &mut sink));

    let mut group = c.benchmark_group("fold");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(25));
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function("decode+reduce+serialize 1M events", |b| {
        b.iter(|| fold_all(&lines, &mut sink))
    });
    group.bench_function("decode only 1M events", |b| {
        b.iter(|| {
            for line in &lines {
                let _ = black_box(decode_line(line.as_bytes()));
            }
        })
    });
    group.finish();
}

/// What `callgate cdr` does with `lines`: records written as JSON lines into `sink`; how many.
fn cdr_all(lines: &[String], sink: &mut String) -> u64 {
    let mut fold = CdrFold::new(CdrConfig::default());
    let mut records = Vec::new();
    let mut count = 0;
    for line in lines {
        if let Ok(Decoded::Event(event)) = decode_line(line.as_bytes()) {
            fold.apply(&event, None, &mut records);
        }
        for record in records.drain(..) {
            record.write_json(sink);
            sink.push('\n');
            count += 1;
        }
        if sink.len() > 1 << 20 {
            sink.clear();
        }
    }
    fold.finish(&mut records);
    count + records.len() as u64
}

fn bench_cdr(c: &mut Criterion) {
    let lines = stream_with(1_000_000, true);
    let mut sink = String::with_capacity(2 << 20);
    eprintln!(
        "cdr input: {} events; records: {}",
        lines.len(),
        cdr_all(&lines, &mut sink)
    );
    let mut group = c.benchmark_group("cdr");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(25));
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function("decode+cdr+serialize 1M events", |b| {
        b.iter(|| cdr_all(&lines, &mut sink))
    });
    group.finish();
}

criterion_group!(benches, bench_fold, bench_cdr);
criterion_main!(benches);
