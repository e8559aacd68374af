//! What executing in a confined worker costs on a warm cache, against executing in process and
//! against raw wasmtime, measured in one run with the cases interleaved in blocks (each round
//! runs a block of consecutive calls of every case, starting with a different one: a node under
//! load calls back to back, and a worker spinning between calls answers without a wake-up; part
//! 3 measures isolated calls; per-job runs after the others, alone, because its children's
//! teardown slows whatever runs next), medians of single calls in microseconds:
//!
//! 1. **Warm validation, by mode**, for each guest (`adder`, `undying` and, when it was built,
//!    the JavaScript guest `js_validate`): the code prepared once and every case warmed up, then
//!    * `raw`: raw wasmtime with the library's engine configuration, instantiate + call on a kept
//!      `InstancePre` (a fresh `Store` per call);
//!    * `in-process`: `ValidationHost::validate_hash` with `Isolation::InProcess`;
//!    * `workers`: the same with `Isolation::Workers` (one execution worker, the default spin);
//!    * `per-job`: the same with `Isolation::PerJob` (a fresh child forked from the worker per
//!      call).
//!
//!    Each host has its own store and the default in-memory cache. Every result is checked.
//! 2. **Per-job fixed cost** (`adder`): per-job median minus in-process median, what its parts
//!    cost inside a per-job worker (a bare fork + exit + wait, with the child's namespaces, with
//!    its filter: the worker's `job-cost` probe, medians of 50), and how many times faster
//!    per-job is than one `pvf validate` process per call (30 calls, warm store; the process
//!    runs in its default `workers` mode, and in `in-process` mode for reference).
//! 3. **The spin knob** (`adder`, `Isolation::Workers`, `worker_spin` = 0, 10, 50, 200 µs, hosts
//!    interleaved): median and p90 latency; the CPU time the worker's process tree uses in an
//!    idle second after a call (`utime + stime` from `/proc/<pid>/stat`, in clock ticks, so a
//!    resolution of 1/`CLK_TCK` s; mean of 3 idle seconds); and under a back-to-back loop the CPU
//!    time per call of the worker's process tree and of the calling thread, and the wall time
//!    per call.
//!
//! Run: `cargo bench -p pvf-host --bench execution` (`PVF_EXECUTION_ITERATIONS`: iterations per
//! case for `adder`, default 2000; `undying` runs 15 % and `js_validate` 5 % of that;
//! `PVF_EXECUTION_GUESTS`, e.g. `adder,undying`, picks the guests of part 1).
#![allow(missing_docs)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Guest, Raw, median, open_host, pvf_binary, pvf_validate_process_in, time};
use pvf_host::{CacheStatus, Config, Isolation, ValidationHost};
use tempfile::TempDir;

const CASES: [&str; 4] = ["raw", "in-process", "workers", "per-job"];
const SPINS_US: [u64; 4] = [0, 10, 50, 200];

fn main() {
    let adder_iterations: usize = std::env::var("PVF_EXECUTION_ITERATIONS")
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("PVF_EXECUTION_ITERATIONS={v}: not a count"))
        })
        .unwrap_or(2000);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "warm validation by isolation; {cores} cores; one execution worker; load average before the run: {}",
        load.trim()
    );

    // 1. Warm validation, by mode.
    let mut guests = vec!["adder", "undying"];
    if pvf_test_guests::JS_GUEST_BUILT {
        guests.push(pvf_test_guests::JS_GUEST);
    }
    if let Ok(only) = std::env::var("PVF_EXECUTION_GUESTS") {
        guests.retain(|g| only.split(',').any(|o| o == *g));
    }
    let mut lines = Vec::new();
    let mut adder_medians = None;
    for name in guests {
        let (iterations, warm_up) = match name {
            "adder" => (adder_iterations, 200),
            "undying" => ((adder_iterations * 3 / 20).max(5), 30),
            _ => ((adder_iterations / 20).max(5), 10),
        };
        let (line, medians) = by_mode(name, iterations, warm_up);
        println!("{name}: {iterations} calls per case (after {warm_up} to warm up): done");
        lines.push(line);
        if name == "adder" {
            adder_medians = Some(medians);
        }
    }
    println!();
    println!("warm validate_hash by isolation, median µs per call (p90 for workers)");
    println!(
        "| guest | raw | in-process | workers | workers p90 | per-job | workers / in-process | workers / raw | per-job / in-process |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for line in &lines {
        println!("{line}");
    }

    // 2. Per-job fixed cost.
    println!();
    match adder_medians {
        Some(m) => per_job_cost(&m),
        None => println!("per-job fixed cost: skipped (adder not among PVF_EXECUTION_GUESTS)"),
    }

    // 3. The spin knob.
    println!();
    spin_knob(adder_iterations);

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!();
    println!("load average after the run: {}", load.trim());
}

/// A host of `isolation` with one execution worker on its own store, the `pvf` binary of this
/// build as its worker executable.
fn host(dir: &Path, isolation: Isolation, spin: Option<Duration>) -> ValidationHost {
    let mut config = Config::new()
        .isolation(isolation)
        .worker_executable(pvf_binary())
        .execution_workers(1);
    if let Some(spin) = spin {
        config = config.worker_spin(spin);
    }
    open_host(dir, config)
}

/// Prepares `guest` on `host` and checks a first validation by hash.
fn prepare(host: &ValidationHost, guest: &Guest) {
    host.prepare(&guest.code).expect("prepare");
    guest.check_pvf(
        &host.validate_hash(&guest.hash, &guest.params),
        CacheStatus::Hit,
    );
}

/// Part 1 for one guest: the markdown line and the medians of the four cases.
fn by_mode(name: &'static str, iterations: usize, warm_up: usize) -> (String, [Duration; 4]) {
    let guest = Guest::load(name);
    let raw = Raw::new();
    let pre = raw.link(&raw.compile(&guest.code));
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().expect("tempdir")).collect();
    let hosts: Vec<ValidationHost> = [Isolation::InProcess, Isolation::Workers, Isolation::PerJob]
        .into_iter()
        .zip(&dirs)
        .map(|(isolation, dir)| host(dir.path(), isolation, None))
        .collect();
    for host in &hosts {
        prepare(host, &guest);
    }
    let call = |case: usize| -> Duration {
        if case == 0 {
            let (elapsed, (result, _)) = time(|| raw.run_pre(&pre, &guest.wit_params));
            guest.check_raw(&result);
            elapsed
        } else {
            let host = &hosts[case - 1];
            let (elapsed, outcome) = time(|| host.validate_hash(&guest.hash, &guest.params));
            guest.check_pvf(&outcome, CacheStatus::Hit);
            elapsed
        }
    };
    for i in 0..warm_up {
        for k in 0..CASES.len() {
            call((i + k) % CASES.len());
        }
    }
    let block = if name == "adder" { 20 } else { 5 };
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(iterations); CASES.len()];
    // Raw, in-process and workers interleaved; per-job after them, alone: its children's
    // teardown (address spaces, namespaces) keeps the kernel busy after each block, which
    // slowed the next case's calls up to fourfold when it was interleaved too.
    const INTERLEAVED: usize = 3;
    for i in 0..iterations.div_ceil(block) {
        for k in 0..INTERLEAVED {
            let case = (i + k) % INTERLEAVED;
            for _ in 0..block {
                samples[case].push(call(case));
            }
        }
    }
    for _ in 0..iterations {
        samples[3].push(call(3));
    }
    for host in &hosts[1..] {
        let workers = host.execution_workers();
        assert_eq!(workers.len(), 1, "{name}: one execution worker");
        assert_eq!(
            host.execution_worker_restarts()
                .iter()
                .map(|(_, n)| n)
                .sum::<u64>(),
            0,
            "{name}: no worker was replaced"
        );
    }
    let workers_p90 = percentile(&mut samples[2], 0.9);
    let m: Vec<Duration> = samples.iter_mut().map(|s| median(s)).collect();
    let us: Vec<f64> = m.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    let line = format!(
        "| {name} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} |",
        fmt_us(us[0]),
        fmt_us(us[1]),
        fmt_us(us[2]),
        fmt_us(workers_p90.as_secs_f64() * 1e6),
        fmt_us(us[3]),
        us[2] / us[1],
        us[2] / us[0],
        us[3] / us[1],
    );
    (line, [m[0], m[1], m[2], m[3]])
}

/// Part 2: per-job minus in-process, and a `pvf validate` process per call against per-job.
fn per_job_cost(adder: &[Duration; 4]) {
    let guest = Guest::load("adder");
    let dir = TempDir::new().expect("tempdir");
    let cli_store = dir.path().join("store");
    let params_file = dir.path().join("params.json");
    guest.write_params_file(&params_file);
    let head = format!("\"head_data\":\"0x{}\"", hex::encode(&guest.expected_head));
    let code_path = pvf_test_guests::path("adder");
    let cli = |cache: &str, isolation: &str| {
        let (elapsed, out) =
            time(|| pvf_validate_process_in(isolation, &cli_store, &code_path, &params_file));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success()
                && stdout.contains(&head)
                && stdout.contains(&format!("\"cache\":\"{cache}\"")),
            "pvf validate: {stdout}"
        );
        elapsed
    };
    // The first call prepares into the store; the rest find the artifact.
    cli("miss", "workers");
    cli("hit", "workers");
    let mut process: Vec<Duration> = (0..30).map(|_| cli("hit", "workers")).collect();
    let process = median(&mut process);
    let mut in_process_cli: Vec<Duration> = (0..30).map(|_| cli("hit", "in-process")).collect();
    let in_process_cli = median(&mut in_process_cli);
    // What the parts of a per-job call cost, measured inside a per-job worker.
    let probe_dir = TempDir::new().expect("tempdir");
    let probe_host = open_host(
        probe_dir.path(),
        Config::new()
            .isolation(Isolation::PerJob)
            .worker_executable(pvf_binary())
            .execution_workers(1)
            .worker_faults(true),
    );
    let parts = probe_host
        .probe_execution_worker("job-cost")
        .unwrap_or_else(|e| format!("unavailable: {e}"));
    let (in_process, per_job) = (adder[1], adder[3]);
    println!("per-job fixed cost (adder)");
    println!(
        "| per-job − in-process (µs) | workers − in-process (µs) | `pvf validate` process per call, median of 30 (µs) | process per call / per-job |"
    );
    println!("|---:|---:|---:|---:|");
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "| {:.1} | {:.1} | {:.0} | {:.1}x |",
        us(per_job) - us(in_process),
        us(adder[2]) - us(in_process),
        us(process),
        us(process) / us(per_job)
    );
    println!(
        "per-job is {:.1}x faster than a process per call",
        us(process) / us(per_job)
    );
    println!(
        "a `pvf validate --isolation in-process` process per call: {:.0} µs ({:.1}x per-job)",
        us(in_process_cli),
        us(in_process_cli) / us(per_job)
    );
    println!("inside a per-job worker, medians of 50 (µs): {parts}");
}

/// Part 3: `adder` in Workers mode with each spin of [`SPINS_US`].
fn spin_knob(iterations: usize) {
    let guest = Guest::load("adder");
    let dirs: Vec<TempDir> = SPINS_US
        .iter()
        .map(|_| TempDir::new().expect("tempdir"))
        .collect();
    let hosts: Vec<ValidationHost> = SPINS_US
        .iter()
        .zip(&dirs)
        .map(|(us, dir)| {
            host(
                dir.path(),
                Isolation::Workers,
                Some(Duration::from_micros(*us)),
            )
        })
        .collect();
    for host in &hosts {
        prepare(host, &guest);
    }
    let call = |host: &ValidationHost| {
        let (elapsed, outcome) = time(|| host.validate_hash(&guest.hash, &guest.params));
        guest.check_pvf(&outcome, CacheStatus::Hit);
        elapsed
    };
    let n = SPINS_US.len();
    for i in 0..200 {
        for k in 0..n {
            call(&hosts[(i + k) % n]);
        }
    }
    // Latency, interleaved.
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(iterations); n];
    for i in 0..iterations {
        for k in 0..n {
            let case = (i + k) % n;
            samples[case].push(call(&hosts[case]));
        }
    }
    let pids: Vec<u32> = hosts
        .iter()
        .map(|host| {
            let workers = host.execution_workers();
            assert_eq!(workers.len(), 1, "one execution worker");
            workers[0].pid
        })
        .collect();
    let hz = rustix::param::clock_ticks_per_second() as f64;

    // Idle: a call, then an idle second, 3 times per host, interleaved.
    const IDLE_ROUNDS: u64 = 3;
    let mut idle_ticks = vec![0u64; n];
    for _ in 0..IDLE_ROUNDS {
        for (k, host) in hosts.iter().enumerate() {
            call(host);
            let before = tree_ticks(pids[k]);
            std::thread::sleep(Duration::from_secs(1));
            idle_ticks[k] += tree_ticks(pids[k]) - before;
        }
    }

    // Back to back: chunks of calls, interleaved, CPU time summed over the chunks.
    let chunks = 10;
    let per_chunk = (iterations * 5 / chunks).max(1);
    let mut worker_ticks = vec![0u64; n];
    let mut thread_cpu = vec![Duration::ZERO; n];
    let mut wall = vec![Duration::ZERO; n];
    for c in 0..chunks {
        for k in 0..n {
            let case = (c + k) % n;
            let host = &hosts[case];
            let ticks = tree_ticks(pids[case]);
            let cpu = thread_cpu_time();
            let started = Instant::now();
            for _ in 0..per_chunk {
                call(host);
            }
            wall[case] += started.elapsed();
            thread_cpu[case] += thread_cpu_time() - cpu;
            worker_ticks[case] += tree_ticks(pids[case]) - ticks;
        }
    }
    let calls = (per_chunk * chunks) as f64;
    for (host, pid) in hosts.iter().zip(&pids) {
        let workers = host.execution_workers();
        assert_eq!(
            workers.iter().map(|w| w.pid).collect::<Vec<_>>(),
            vec![*pid],
            "the worker was not replaced"
        );
    }

    println!(
        "the spin knob: adder, Isolation::Workers; latency over {iterations} calls per spin (interleaved); idle = worker CPU in the second after a call (mean of {IDLE_ROUNDS}; resolution {:.0} ms); back to back = {} calls per spin",
        1e3 / hz,
        calls as usize
    );
    println!(
        "| worker_spin | median (µs) | p90 (µs) | idle worker CPU (ms per s) | back to back: worker CPU per call (µs) | host thread CPU per call (µs) | wall per call (µs) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (k, spin) in SPINS_US.iter().enumerate() {
        let p90 = percentile(&mut samples[k], 0.9);
        let m = median(&mut samples[k]);
        println!(
            "| {spin} µs | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            m.as_secs_f64() * 1e6,
            p90.as_secs_f64() * 1e6,
            idle_ticks[k] as f64 / hz * 1e3 / IDLE_ROUNDS as f64,
            worker_ticks[k] as f64 / hz * 1e6 / calls,
            thread_cpu[k].as_secs_f64() * 1e6 / calls,
            wall[k].as_secs_f64() * 1e6 / calls,
        );
    }
}

/// The `q` quantile of `samples` (sorted in place): the smallest sample with at least `q` of
/// them at or below it.
fn percentile(samples: &mut [Duration], q: f64) -> Duration {
    assert!(!samples.is_empty(), "no samples");
    samples.sort();
    let rank = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

/// Microseconds, with a decimal below 1000.
fn fmt_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.0}")
    }
}

/// The CPU time (`utime + stime`, clock ticks) of process `pid` and all its descendants alive
/// now: `/proc/<pid>/stat` fields 14 and 15, children from `/proc/<pid>/task/*/children`.
fn tree_ticks(pid: u32) -> u64 {
    ticks_of(pid).unwrap_or_else(|| panic!("/proc/{pid}/stat: unreadable"))
}

/// [`tree_ticks`], `None` when `pid` is gone (a descendant may exit while we look).
fn ticks_of(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: fields 3.. follow the
    // last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let mut ticks = field(14)? + field(15)?;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in children.split_whitespace() {
            if let Ok(child) = child.parse() {
                ticks += ticks_of(child).unwrap_or(0);
            }
        }
    }
    Some(ticks)
}

/// The CPU time this thread has used.
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}
