//! Where the time of a cold prepare goes: raw wasmtime stage by stage next to `pvf prepare`, with
//! a fresh engine (and, for pvf, a fresh host and empty store) per iteration, stages alternating
//! so that all see the same machine load. Explains the `cold_prepare` row of the `table` bench.
//!
//! Stages (each includes the previous ones):
//! 1. `precompile`: `Engine::precompile_component` (the `table` bench's raw reference, without
//!    its file write);
//! 2. `Component::new`: compile *and* load the code into executable memory (what pvf needs to
//!    run the code it just compiled);
//! 3. `+ serialize`: the artifact bytes;
//! 4. `+ link`: `instantiate_pre` against WASI and the export lookup;
//! 5. `+ durable write`: blake3 over the artifact, temporary file, fsync, rename, directory fsync.
//!
//! Run: `cargo bench -p pvf-host --bench prepare` (`PVF_PREPARE_ITERATIONS`, default 15).
#![allow(missing_docs)]

mod common;

use std::io::Write;
use std::time::Duration;

use common::{Guest, Raw, median, open_host, time};
use pvf_host::{CacheStatus, Config};
use tempfile::TempDir;

const STAGES: [&str; 6] = [
    "precompile",
    "Component::new",
    "+ serialize",
    "+ link",
    "+ durable write",
    "pvf prepare",
];

fn main() {
    let iterations: usize = std::env::var("PVF_PREPARE_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(15);
    println!("cold prepare, stage by stage; median of {iterations} iterations (ms)");
    println!(
        "| guest | {} | pvf / precompile | pvf / + durable write |",
        STAGES.join(" | ")
    );
    println!("|---|{}---:|---:|", "---:|".repeat(STAGES.len()));
    for name in ["adder", "undying"] {
        let guest = Guest::load(name);
        let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); STAGES.len()];
        for i in 0..iterations {
            // Rotate the starting stage so that no stage always runs first.
            for k in 0..STAGES.len() {
                let stage = (i + k) % STAGES.len();
                samples[stage].push(run_stage(stage, &guest));
            }
        }
        let medians: Vec<f64> = samples
            .iter_mut()
            .map(|s| median(s).as_secs_f64() * 1e3)
            .collect();
        let cells: Vec<String> = medians.iter().map(|m| format!("{m:.2}")).collect();
        println!(
            "| {name} | {} | {:.3} | {:.3} |",
            cells.join(" | "),
            medians[5] / medians[0],
            medians[5] / medians[4]
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average after the run: {}", load.trim());
}

/// Runs stage `stage` once on a fresh engine (or host) and returns its time.
fn run_stage(stage: usize, guest: &Guest) -> Duration {
    if stage == 5 {
        let dir = TempDir::new().expect("tempdir");
        let host = open_host(dir.path(), Config::new());
        let (elapsed, prepared) = time(|| host.prepare(&guest.code));
        assert_eq!(prepared.expect("prepare").cache, CacheStatus::Miss);
        return elapsed;
    }
    let raw = Raw::new();
    let dir = TempDir::new().expect("tempdir");
    time(|| {
        if stage == 0 {
            let bytes = raw
                .engine
                .precompile_component(&guest.code)
                .expect("precompile");
            std::hint::black_box(bytes);
            return;
        }
        let component = raw.compile(&guest.code);
        if stage == 1 {
            return;
        }
        let bytes = component.serialize().expect("serialize");
        if stage == 2 {
            return;
        }
        let pre = raw.link(&component);
        std::hint::black_box(&pre);
        if stage == 3 {
            return;
        }
        let checksum = blake3::hash(&bytes);
        std::hint::black_box(checksum);
        let tmp = dir.path().join(".tmp-artifact");
        let mut file = std::fs::File::create(&tmp).expect("create");
        file.write_all(&bytes).expect("write");
        file.sync_all().expect("fsync");
        drop(file);
        std::fs::rename(&tmp, dir.path().join("artifact")).expect("rename");
        std::fs::File::open(dir.path())
            .and_then(|d| d.sync_all())
            .expect("fsync directory");
    })
    .0
}
