//! The side-by-side table of issue #6: for each guest (`adder`, `undying` and, when it was built,
//! the 12 MB JavaScript guest `js_validate`), six measurements of `pvf_host` in one run, each as
//! a ratio to the same work done by raw wasmtime 48 with the same `wasmtime::Config`
//! ([`pvf_host::wasmtime_config`] of the default [`Config`]) or to the stated reference:
//!
//! | row | pvf | reference | target |
//! |---|---|---|---|
//! | `cold_prepare` | `prepare` into an empty store (fresh host per iteration, opened untimed) | `Engine::precompile_component` + `std::fs::write` (fresh engine per iteration) | ≤ 1.05x |
//! | `memory_hit` | `validate_hash(&hash, ..)` and `validate(&code, ..)`, component in the in-memory cache (the artifact file deleted) | raw naive: read the artifact + deserialize + link + instantiate + call; also raw keeping its `InstancePre` (instantiate + call) | ≤ 1.0x vs naive |
//! | `restart` | the first `validate` of a freshly opened host (opened untimed) with the artifact on disk | `pvf` cold prepare (also shown: raw naive) | ≤ 5 % of cold prepare |
//! | `repaired` | `validate` with a byte of the stored artifact flipped (memory cache off) | `Component::new` + link + instantiate + call | ≤ 1.15x |
//! | `process` | in-process `validate` (memory hit) | one `pvf validate` process per call (artifact stored) | ≥ 20x faster |
//! | `checksum` | `ArtifactStore::check` (read + verify the salted checksum) | `std::fs::read` + `blake3::hash` | ≥ 0.9x throughput |
//!
//! The compile-bound rows (`cold_prepare`, `repaired`) and `restart` are timed here, not by
//! criterion: pvf and raw iterations alternate (which one goes first alternates too), so both
//! sides see the same machine load, and the JavaScript guest's 15–25 s compilations need only a
//! few iterations. Their medians are of `PVF_TABLE_ITERATIONS` iterations (default 11) for the
//! small guests and `PVF_TABLE_JS_ITERATIONS` (default 3) for `js_validate`. The µs- and ms-scale
//! rows are criterion groups `table/<guest>/<row>`; the table uses their medians.
//!
//! At the end the table is printed (markdown) and written to `target/criterion/table.md`.
//!
//! Run: `cargo bench -p pvf-host --bench table` (about 10 minutes with the JavaScript guest);
//! `PVF_TABLE_GUESTS=adder,undying` restricts the guests. Every timed iteration checks its verdict
//! and cache path, so a broken setup fails the run instead of producing numbers.
#![allow(missing_docs)]

mod common;

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::{
    Guest, Raw, artifact_path, corrupt, disk_only, median, open_host, pvf_validate_process,
    raw_engine, time,
};
use criterion::{BatchSize, Criterion, SamplingMode};
use pvf_host::{CacheStatus, Config};
use tempfile::TempDir;

/// Whether cargo runs us as a benchmark (`cargo bench` passes `--bench`); otherwise (`cargo test
/// --benches`) everything runs once, as criterion does.
fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Where criterion writes its results: as criterion decides by default.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("criterion")
}

fn env_count(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a count")),
        Err(_) => default,
    }
}

/// How a ratio reads.
#[derive(Clone, Copy)]
enum Target {
    /// `pvf / reference`, at most this.
    AtMost(f64),
    /// `reference / pvf` (a speed-up or a throughput ratio), at least this.
    AtLeast(f64),
    /// `pvf / reference`, for information.
    None,
}

/// One line of the table.
struct Row {
    what: &'static str,
    guest: &'static str,
    pvf_label: &'static str,
    pvf: Option<Duration>,
    reference_label: &'static str,
    reference: Option<Duration>,
    target: Target,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        let (p, r) = (self.pvf?.as_secs_f64(), self.reference?.as_secs_f64());
        Some(match self.target {
            Target::AtLeast(_) => r / p,
            Target::AtMost(_) | Target::None => p / r,
        })
    }

    fn markdown(&self) -> String {
        let ratio = self.ratio();
        let (ratio_text, target_text, verdict) = match (self.target, ratio) {
            (_, None) => ("—".to_string(), String::new(), String::new()),
            (Target::AtMost(t), Some(x)) if t < 0.5 => (
                format!("{:.1} %", x * 100.0),
                format!("≤ {:.0} %", t * 100.0),
                met(x <= t),
            ),
            (Target::AtMost(t), Some(x)) => (format!("{x:.2}x"), format!("≤ {t:.2}x"), met(x <= t)),
            (Target::AtLeast(t), Some(x)) if x >= 10.0 => {
                (format!("{x:.0}x"), format!("≥ {t}x"), met(x >= t))
            }
            (Target::AtLeast(t), Some(x)) => (format!("{x:.2}x"), format!("≥ {t}x"), met(x >= t)),
            (Target::None, Some(x)) => (format!("{x:.2}x"), String::new(), String::new()),
        };
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            self.what,
            self.guest,
            self.pvf_label,
            fmt(self.pvf),
            self.reference_label,
            fmt(self.reference),
            ratio_text,
            target_text,
            verdict
        )
    }
}

fn met(ok: bool) -> String {
    if ok { "met" } else { "**missed**" }.to_string()
}

fn fmt(d: Option<Duration>) -> String {
    let Some(d) = d else {
        return "—".into();
    };
    let ns = d.as_secs_f64() * 1e9;
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e5 {
        format!("{:.0} µs", ns / 1e3)
    } else {
        format!("{:.1} µs", ns / 1e3)
    }
}

/// Reads criterion's median for `group`/`function`, if this run wrote it.
fn criterion_median(group: &str, function: &str, since: SystemTime) -> Option<Duration> {
    let path = criterion_dir()
        .join(group.replace('/', "_"))
        .join(function)
        .join("new")
        .join("estimates.json");
    let fresh = std::fs::metadata(&path).ok()?.modified().ok()? >= since;
    if !fresh {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    let ns = json["median"]["point_estimate"].as_f64()?;
    Some(Duration::from_secs_f64(ns / 1e9))
}

/// Runs `pvf` and `raw` `n` times each, alternating (and alternating which goes first), and
/// returns their medians. Each closure returns what it made, which is dropped untimed.
fn paired<P, R>(
    label: &str,
    n: usize,
    mut pvf: impl FnMut() -> (Duration, P),
    mut raw: impl FnMut() -> (Duration, R),
) -> (Duration, Duration) {
    let (mut p, mut r) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        if i % 2 == 0 {
            p.push(pvf().0);
            r.push(raw().0);
        } else {
            r.push(raw().0);
            p.push(pvf().0);
        }
    }
    eprintln!("{label}: pvf {p:.3?}");
    eprintln!("{label}: raw {r:.3?}");
    (median(&mut p), median(&mut r))
}

/// Runs `f` `n` times and returns the median.
fn repeated<T>(label: &str, n: usize, mut f: impl FnMut() -> (Duration, T)) -> Duration {
    let mut samples: Vec<Duration> = (0..n).map(|_| f().0).collect();
    eprintln!("{label}: {samples:.3?}");
    median(&mut samples)
}

fn guest_rows(c: &mut Criterion, guest: &Guest, iterations: usize, since: SystemTime) -> Vec<Row> {
    let name = guest.name;
    let large = name == pvf_test_guests::JS_GUEST;
    let (samples, measure) = if large {
        (10, Duration::from_secs(3))
    } else {
        (30, Duration::from_secs(4))
    };
    let raw = Raw::new();
    // The raw side's artifact, in a file of its own.
    let raw_dir = TempDir::new().expect("tempdir");
    let raw_artifact = raw_dir.path().join("artifact");
    std::fs::write(
        &raw_artifact,
        raw.engine
            .precompile_component(&guest.code)
            .expect("precompile"),
    )
    .expect("write artifact");
    guest.check_raw(&raw.run(&raw.load(&raw_artifact), &guest.wit_params));

    // 1. Cold prepare.
    let (cold_pvf, cold_raw) = paired(
        &format!("{name}/cold_prepare"),
        iterations,
        || {
            let dir = TempDir::new().expect("tempdir");
            let host = open_host(dir.path(), Config::new());
            let (t, prepared) = time(|| host.prepare(black_box(&guest.code)).expect("prepare"));
            assert_eq!(prepared.cache, CacheStatus::Miss);
            (t, (dir, host))
        },
        || {
            let dir = TempDir::new().expect("tempdir");
            let engine = raw_engine();
            let (t, ()) = time(|| {
                let artifact = engine
                    .precompile_component(black_box(&guest.code))
                    .expect("precompile");
                std::fs::write(dir.path().join("artifact"), &artifact).expect("write artifact");
            });
            (t, (dir, engine))
        },
    );

    // 4. Repaired: a byte of the stored artifact flipped before each pvf iteration.
    let (repaired_pvf, repaired_raw) = {
        let dir = TempDir::new().expect("tempdir");
        let host = open_host(dir.path(), disk_only());
        host.prepare(&guest.code).expect("prepare");
        let path = artifact_path(dir.path(), &host, &guest.code);
        paired(
            &format!("{name}/repaired"),
            iterations,
            || {
                corrupt(&path);
                let (t, outcome) =
                    time(|| host.validate(black_box(&guest.code), black_box(&guest.params)));
                guest.check_pvf(&outcome, CacheStatus::Repaired);
                (t, outcome)
            },
            || {
                let (t, result) = time(|| {
                    let component = raw.compile(black_box(&guest.code));
                    raw.run(&component, black_box(&guest.wit_params))
                });
                guest.check_raw(&result);
                (t, result)
            },
        )
    };

    // 3. Restart: the first validation of a freshly opened host, artifact on disk.
    let store = TempDir::new().expect("tempdir");
    open_host(store.path(), Config::new())
        .prepare(&guest.code)
        .expect("prepare");
    let restart = repeated(&format!("{name}/restart"), iterations.max(5), || {
        let host = open_host(store.path(), Config::new());
        let (t, outcome) = time(|| host.validate(black_box(&guest.code), black_box(&guest.params)));
        guest.check_pvf(&outcome, CacheStatus::Hit);
        (t, host)
    });

    // The criterion groups use one host with the artifact stored and prepared in this process.
    let host = open_host(store.path(), Config::new());
    guest.check_pvf(&host.validate(&guest.code, &guest.params), CacheStatus::Hit);

    // 6. Checksum verification (needs the stored file).
    let checksum = format!("table/{name}/checksum");
    {
        let mut g = c.benchmark_group(&checksum);
        g.sample_size(samples)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(measure);
        let path = artifact_path(store.path(), &host, &guest.code);
        let size = std::fs::metadata(&path).expect("stat artifact").len();
        eprintln!(
            "{name}: code {} bytes, stored artifact {size} bytes",
            guest.code.len()
        );
        g.bench_function("pvf_check", |b| {
            b.iter(|| {
                host.store()
                    .check(black_box(&guest.hash))
                    .expect("check")
                    .expect("present")
            })
        });
        g.bench_function("raw_read_blake3", |b| {
            b.iter(|| blake3::hash(&std::fs::read(black_box(&path)).expect("read")))
        });
        g.finish();
        // From here on, a hit can only come from the in-memory cache.
        std::fs::remove_file(&path).expect("remove artifact");
    }

    // 2. In-memory hit.
    let hit = format!("table/{name}/memory_hit");
    {
        let mut g = c.benchmark_group(&hit);
        g.sample_size(samples)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(measure);
        g.bench_function("pvf_validate_hash", |b| {
            b.iter(|| {
                let outcome = host.validate_hash(black_box(&guest.hash), black_box(&guest.params));
                guest.check_pvf(&outcome, CacheStatus::Hit);
                outcome
            })
        });
        g.bench_function("pvf_validate", |b| {
            b.iter(|| {
                let outcome = host.validate(black_box(&guest.code), black_box(&guest.params));
                guest.check_pvf(&outcome, CacheStatus::Hit);
                outcome
            })
        });
        let pre = raw.link(&raw.compile(&guest.code));
        g.bench_function("raw_instance_pre", |b| {
            b.iter(|| {
                let (result, _) = raw.run_pre(black_box(&pre), black_box(&guest.wit_params));
                guest.check_raw(&result);
                result
            })
        });
        g.bench_function("raw_naive", |b| {
            b.iter(|| {
                let component = raw.load(black_box(&raw_artifact));
                let result = raw.run(&component, black_box(&guest.wit_params));
                guest.check_raw(&result);
                result
            })
        });
        g.finish();
    }

    // 5. One `pvf validate` process per call. Its store (the CLI's fingerprint covers the pvf
    // executable, not this one) is kept in the target directory, so a later run of the same
    // binary does not compile again.
    let process = format!("table/{name}/process");
    {
        let cli_store = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pvf-table-cli-store");
        let params_file = raw_dir.path().join("params.json");
        guest.write_params_file(&params_file);
        let head = format!("\"head_data\":\"0x{}\"", hex::encode(&guest.expected_head));
        let code_path = pvf_test_guests::path(name);
        let cli = || pvf_validate_process(&cli_store, &code_path, &params_file);
        let first = cli();
        assert!(first.status.success(), "{name}: pvf validate failed");
        let mut g = c.benchmark_group(&process);
        g.sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        g.bench_function("process_per_call", |b| {
            b.iter_batched(
                || (),
                |()| {
                    let out = cli();
                    let stdout = String::from_utf8_lossy(&out.stdout);
                    assert!(
                        stdout.contains(&head) && stdout.contains("\"cache\":\"hit\""),
                        "{name}: {stdout}"
                    );
                    out
                },
                BatchSize::PerIteration,
            )
        });
        g.finish();
    }

    let crit = |group: &str, function: &str| criterion_median(group, function, since);
    let hash_hit = crit(&hit, "pvf_validate_hash");
    let code_hit = crit(&hit, "pvf_validate");
    let naive = crit(&hit, "raw_naive");
    let pre = crit(&hit, "raw_instance_pre");
    vec![
        Row {
            what: "cold prepare",
            guest: name,
            pvf_label: "`prepare`",
            pvf: Some(cold_pvf),
            reference_label: "raw precompile + write",
            reference: Some(cold_raw),
            target: Target::AtMost(1.05),
        },
        Row {
            what: "in-memory hit",
            guest: name,
            pvf_label: "`validate_hash`",
            pvf: hash_hit,
            reference_label: "raw naive: read + deserialize + instantiate + call",
            reference: naive,
            target: Target::AtMost(1.0),
        },
        Row {
            what: "in-memory hit",
            guest: name,
            pvf_label: "`validate`",
            pvf: code_hit,
            reference_label: "raw naive",
            reference: naive,
            target: Target::AtMost(1.0),
        },
        Row {
            what: "in-memory hit",
            guest: name,
            pvf_label: "`validate_hash`",
            pvf: hash_hit,
            reference_label: "raw keeping its `InstancePre`: instantiate + call",
            reference: pre,
            target: Target::None,
        },
        Row {
            what: "in-memory hit",
            guest: name,
            pvf_label: "`validate`",
            pvf: code_hit,
            reference_label: "raw keeping its `InstancePre`",
            reference: pre,
            target: Target::None,
        },
        Row {
            what: "after restart (disk)",
            guest: name,
            pvf_label: "first `validate` of a new host",
            pvf: Some(restart),
            reference_label: "pvf cold prepare",
            reference: Some(cold_pvf),
            target: Target::AtMost(0.05),
        },
        Row {
            what: "after restart (disk)",
            guest: name,
            pvf_label: "first `validate` of a new host",
            pvf: Some(restart),
            reference_label: "raw naive",
            reference: naive,
            target: Target::None,
        },
        Row {
            what: "repaired",
            guest: name,
            pvf_label: "`validate`, artifact corrupt",
            pvf: Some(repaired_pvf),
            reference_label: "raw compile + instantiate + call",
            reference: Some(repaired_raw),
            target: Target::AtMost(1.15),
        },
        Row {
            what: "in-process vs process per call",
            guest: name,
            pvf_label: "`validate` (memory hit)",
            pvf: code_hit,
            reference_label: "one `pvf validate` process",
            reference: crit(&process, "process_per_call"),
            target: Target::AtLeast(20.0),
        },
        Row {
            what: "checksum (throughput)",
            guest: name,
            pvf_label: "`ArtifactStore::check`",
            pvf: crit(&checksum, "pvf_check"),
            reference_label: "read + `blake3::hash`",
            reference: crit(&checksum, "raw_read_blake3"),
            target: Target::AtLeast(0.9),
        },
    ]
}

fn main() {
    let started = SystemTime::now();
    let bench = bench_mode();
    let mut guests: Vec<&'static str> = vec!["adder", "undying"];
    if pvf_test_guests::JS_GUEST_BUILT {
        guests.push(pvf_test_guests::JS_GUEST);
    } else {
        eprintln!("table: the JavaScript guest was not built; its rows are left out");
    }
    if let Ok(only) = std::env::var("PVF_TABLE_GUESTS") {
        guests.retain(|g| only.split(',').any(|o| o.trim() == *g));
    }
    let mut c = Criterion::default()
        .output_directory(&criterion_dir())
        .configure_from_args();
    let mut rows = Vec::new();
    for name in guests {
        let guest = Guest::load(name);
        let iterations = match (bench, name == pvf_test_guests::JS_GUEST) {
            (false, _) => 1,
            (true, false) => env_count("PVF_TABLE_ITERATIONS", 11),
            (true, true) => env_count("PVF_TABLE_JS_ITERATIONS", 3),
        };
        rows.extend(guest_rows(&mut c, &guest, iterations, started));
    }
    c.final_summary();

    let mut table = String::new();
    writeln!(
        table,
        "| measurement | guest | pvf | pvf median | reference | reference median | ratio | target | |"
    )
    .unwrap();
    writeln!(table, "|---|---|---|---:|---|---:|---:|---|---|").unwrap();
    for row in &rows {
        writeln!(table, "{}", row.markdown()).unwrap();
    }
    println!("\n{table}");
    // Not when profiling (`--profile-time`): criterion then writes no estimates.
    if bench && !std::env::args().any(|a| a == "--profile-time") {
        let out = criterion_dir().join("table.md");
        match std::fs::create_dir_all(criterion_dir()).and_then(|()| std::fs::write(&out, &table)) {
            Ok(()) => eprintln!("table written to {}", out.display()),
            Err(e) => eprintln!("could not write {}: {e}", out.display()),
        }
    }
}
