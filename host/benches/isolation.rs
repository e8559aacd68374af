//! What compiling strangers' code in a confined worker costs, against compiling in process and
//! against raw wasmtime, measured in one run with the cases interleaved (each iteration runs
//! every case once, starting with a different one), medians in milliseconds:
//!
//! * `raw precompile`: `Engine::precompile_component` with the library's engine configuration
//!   (parallel compilation on every core);
//! * `in-process`: `ValidationHost::prepare` with `Isolation::InProcess` (compile, serialize,
//!   link, durable store write);
//! * `worker, warm`: the same with `Isolation::Workers` and a warm spare worker (started ahead of
//!   need: the default), compile threads = this machine's cores, as in process;
//! * `worker, per job`: no spare: each preparation starts, confines and handshakes a worker;
//! * `worker, warm, default threads`: the lenient default of half the cores.
//!
//! Then the fixed cost of starting a worker (spawn + confinement + handshake, median of 30),
//! and the cost of the counting allocator: `precompile` in this process with counting on and
//! off (this bench's global allocator is `CountingAllocator`, as the worker's is).
//!
//! Run: `cargo bench -p pvf-host --bench isolation` (`PVF_ISOLATION_ITERATIONS`, default 11;
//! `PVF_ISOLATION_GUESTS`, e.g. `adder,undying`;
//! the JavaScript guest, when built, runs a third as many).
#![allow(missing_docs)]

mod common;

use std::time::Duration;

use common::{Guest, Raw, median, open_host, time};
use pvf_host::worker::CountingAllocator;
use pvf_host::{CacheStatus, CompileLimits, Config, Isolation};
use tempfile::TempDir;

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator::new();

const CASES: [&str; 5] = [
    "raw precompile",
    "in-process",
    "worker, warm",
    "worker, per job",
    "worker, warm, default threads",
];

fn main() {
    let iterations: usize = std::env::var("PVF_ISOLATION_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(11);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "cold prepare by isolation; median of {iterations} iterations (ms); {cores} cores; default lenient threads {}",
        CompileLimits::lenient().get_threads()
    );
    println!(
        "| guest | {} | warm / in-process | per job / in-process | in-process / raw |",
        CASES.join(" | ")
    );
    println!("|---|{}---:|---:|---:|", "---:|".repeat(CASES.len()));
    // `PVF_ISOLATION_GUESTS=adder,undying` picks guests (default: all built).
    let mut guests = vec!["adder", "undying"];
    if pvf_test_guests::JS_GUEST_BUILT {
        guests.push("js_validate");
    }
    if let Ok(only) = std::env::var("PVF_ISOLATION_GUESTS") {
        guests.retain(|g| only.split(',').any(|o| o == *g));
    }
    for name in guests {
        let guest = Guest::load(name);
        let n = if name == "js_validate" {
            iterations.div_ceil(3).max(3)
        } else {
            iterations
        };
        let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); CASES.len()];
        for i in 0..n {
            for k in 0..CASES.len() {
                let case = (i + k) % CASES.len();
                samples[case].push(run_case(case, &guest, cores));
            }
        }
        let m: Vec<f64> = samples
            .iter_mut()
            .map(|s| median(s).as_secs_f64() * 1e3)
            .collect();
        let cells: Vec<String> = m.iter().map(|v| format!("{v:.2}")).collect();
        println!(
            "| {name} | {} | {:.3} | {:.3} | {:.3} |",
            cells.join(" | "),
            m[2] / m[1],
            m[3] / m[1],
            m[1] / m[0]
        );
    }

    let mut starts: Vec<Duration> = (0..30)
        .map(|_| pvf_host::worker::start_worker_once(&Config::new()).expect("start a worker"))
        .collect();
    println!(
        "worker start (spawn + confinement + handshake), median of 30: {:.2} ms",
        median(&mut starts).as_secs_f64() * 1e3
    );

    counting_cost(iterations);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average after the run: {}", load.trim());
}

fn config(case: usize, cores: usize) -> Config {
    let all_cores = CompileLimits::lenient().threads(cores);
    match case {
        1 => Config::new().isolation(Isolation::InProcess),
        2 => Config::new().prepare_limits(all_cores),
        3 => Config::new().prepare_limits(all_cores).warm_worker(false),
        _ => Config::new(),
    }
}

/// One cold preparation of `guest` by `case`, on a fresh host and an empty store.
fn run_case(case: usize, guest: &Guest, cores: usize) -> Duration {
    if case == 0 {
        let raw = Raw::new();
        return time(|| {
            let bytes = raw
                .engine
                .precompile_component(&guest.code)
                .expect("precompile");
            std::hint::black_box(bytes);
        })
        .0;
    }
    let dir = TempDir::new().expect("tempdir");
    let host = open_host(dir.path(), config(case, cores).memory_cache_bytes(0));
    if matches!(case, 2 | 4) {
        // Let the spare start, as it would have long before a preparation in a running node.
        std::thread::sleep(Duration::from_millis(300));
    }
    let (elapsed, prepared) = time(|| host.prepare(&guest.code));
    assert_eq!(prepared.expect("prepare").cache, CacheStatus::Miss);
    elapsed
}

/// `precompile` of each guest with the counting allocator counting and not, interleaved.
fn counting_cost(iterations: usize) {
    println!("| guest | precompile, counting (ms) | precompile, not counting (ms) | ratio |");
    println!("|---|---:|---:|---:|");
    let raw = Raw::new();
    for name in ["adder", "undying"] {
        let guest = Guest::load(name);
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for i in 0..iterations * 2 {
            let counting = i % 2 == 0;
            ALLOC.set_counting(counting);
            let (elapsed, bytes) = time(|| raw.engine.precompile_component(&guest.code));
            drop(bytes.expect("precompile"));
            ALLOC.set_counting(true);
            if counting { &mut on } else { &mut off }.push(elapsed);
        }
        let (on, off) = (
            median(&mut on).as_secs_f64() * 1e3,
            median(&mut off).as_secs_f64() * 1e3,
        );
        println!("| {name} | {on:.2} | {off:.2} | {:.3} |", on / off);
    }
}
