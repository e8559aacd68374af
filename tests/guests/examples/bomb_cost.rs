//! Compiles one compile bomb of `pvf_test_guests::bombs` in-process with the host's exact engine
//! configuration (`pvf_host::wasmtime_config(&Config::new().pooling(false))`,
//! `Engine::precompile_component`) and prints its size, the peak RSS of this process (VmHWM),
//! and the CPU time (user and system, every thread) and wall time of the compilation.
//!
//! Run it under a cap: the full memory bomb takes about 2 GB.
//!
//! ```text
//! ulimit -v 8388608
//! cargo run -p pvf-test-guests --example bomb_cost -- memory            # the default sizes
//! cargo run -p pvf-test-guests --example bomb_cost -- memory 5000 5000  # locals, blocks
//! cargo run -p pvf-test-guests --example bomb_cost -- cpu 1000          # loop depth
//! RAYON_NUM_THREADS=1 cargo run -p pvf-test-guests --example bomb_cost -- cpu
//! cargo run -p pvf-test-guests --example bomb_cost -- memory 10 10 --write small.wasm --no-compile
//! ```

use std::time::Instant;

use pvf_test_guests::bombs;

const USAGE: &str = "usage: bomb_cost (adder | memory [LOCALS [BLOCKS]] | cpu [DEPTH]) \
                     [--write FILE] [--no-compile]";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The shape and its sizes come before the first `--` option.
    let positional: Vec<&String> = args.iter().take_while(|a| !a.starts_with("--")).collect();
    let num = |i: usize, default: u32| -> u32 {
        positional
            .get(i)
            .map_or(default, |a| a.parse().expect("a number"))
    };
    let shape = positional.first().map_or("", |s| s.as_str());
    let bytes = match shape {
        "adder" => pvf_test_guests::bytes("adder"),
        "memory" => bombs::memory_bomb_with(
            num(1, bombs::MEMORY_BOMB_LOCALS),
            num(2, bombs::MEMORY_BOMB_BLOCKS),
        ),
        "cpu" => bombs::cpu_bomb_with(num(1, bombs::CPU_BOMB_DEPTH)),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(64);
        }
    };
    if let Some(i) = args.iter().position(|a| a == "--write") {
        std::fs::write(&args[i + 1], &bytes).expect("write");
    }
    if args.iter().any(|a| a == "--no-compile") {
        println!("{shape}: {} bytes", bytes.len());
        return;
    }
    let config = pvf_host::wasmtime_config(&pvf_host::Config::new().pooling(false));
    let engine = wasmtime::Engine::new(&config).expect("engine");
    let (rss0, cpu0) = (peak_rss_kib(), cpu_seconds());
    let start = Instant::now();
    let result = engine.precompile_component(&bytes);
    let wall = start.elapsed().as_secs_f64();
    let cpu1 = cpu_seconds();
    println!(
        "{shape} {:?}: {} bytes, {}, peak RSS {} MiB (before {} MiB), CPU {:.2} s (user {:.2} s, system {:.2} s), wall {:.2} s",
        &positional[1..],
        bytes.len(),
        match &result {
            Ok(artifact) => format!("ok ({} byte artifact)", artifact.len()),
            Err(e) => format!("error: {e:#}"),
        },
        peak_rss_kib() / 1024,
        rss0 / 1024,
        (cpu1.0 + cpu1.1) - (cpu0.0 + cpu0.1),
        cpu1.0 - cpu0.0,
        cpu1.1 - cpu0.1,
        wall,
    );
}

/// VmHWM of this process, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// User and system CPU time of every thread of this process, in seconds.
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split(' ')
        .collect();
    let ticks = |i: usize| fields[i].parse::<u64>().expect("ticks") as f64 / 100.0;
    (ticks(11), ticks(12))
}
