//! Resident memory per live call resource: 100,000 live calls, each an inbound call answered at its own
//! agent DN, with attached data and an international caller (the realistic worst case of a busy center).
//!
//! Run: `cargo bench --bench memory`. Reports heap bytes per live call (exact, from a counting allocator
//! around mimalloc, the binary's allocator) and the growth of the process's resident set per call.

use callgate::reduce::{Fold, Notifications};
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;

// SAFETY: forwards every call to mimalloc unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { INNER.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { INNER.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as the caller's.
        unsafe { INNER.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    const CALLS: u64 = 100_000;
    let mut reducer = Fold::default();
    let mut out = Notifications::default();
    // Warm the one-time tables (phone metadata, geocoding index) before measuring.
    let _ = reducer.apply_line(
        br#"{"event":"EventRinging","ConnID":"1","ThisDN":"1","OtherDN":"+14155550100"}"#,
        &mut out,
    );
    out.clear();
    let heap_before = LIVE_BYTES.load(Ordering::Relaxed);
    let rss_before = resident_bytes();
    let mut line = String::new();
    for i in 0..CALLS {
        let conn = 0x006f_0000_0000_0000u64 + i;
        let agent = 10_000 + i;
        let caller = format!("+1415555{:04}", i % 10_000);
        for (event, extra) in [
            (
                "EventRinging",
                format!(r#","ANI":"{caller}","DNIS":"8001","ThisQueue":"8001""#),
            ),
            ("EventEstablished", String::new()),
        ] {
            line.clear();
            line.push_str(&format!(
                r#"{{"event":"{event}","TimeinSecs":{},"ConnID":"{conn:016x}","CallUUID":"QK59HK4FS927D7FUU41G6IE4{i:08}","CallType":"Inbound","ThisDN":"{agent}","OtherDN":"{caller}"{extra},"UserData":{{"AccountNumber":"{i:08}","Segment":"Gold","ServiceType":"Support","Language":"en"}}}}"#,
                1_763_900_000 + i
            ));
            let _ = reducer.apply_line(line.as_bytes(), &mut out);
            out.clear();
        }
    }
    let heap = LIVE_BYTES.load(Ordering::Relaxed) - heap_before;
    let rss = resident_bytes().saturating_sub(rss_before);
    println!("live calls: {}", reducer.reducer().len() - 1);
    println!("heap per live call: {} bytes", heap / CALLS as isize);
    println!(
        "resident growth per live call: {} bytes",
        rss / CALLS as usize
    );
}
