//! In-process validation (this library, warm) vs one process per call (the reference design:
//! a fresh `pvf validate` process for every candidate, artifact already stored); and the cost of
//! that one-shot `pvf validate` process against a raw one-shot wasmtime process doing the same.
//!
//! Run: `cargo bench -p pvf-host --bench process`.
//!
//! The one-shot comparison (printed first, on stdout, one line per guest; every iteration on
//! stderr): `pvf --json validate CODE --params FILE` on a warm store (the artifact stored and in
//! the page cache) next to this bench's own executable re-run in *raw mode* (environment variable
//! `PVF_BENCH_RAW_ONESHOT`), which does the least a one-shot wasmtime process can do for the same
//! answer: read an artifact precompiled with the same `wasmtime::Config` as the CLI's one-shot
//! commands (`pvf_host::wasmtime_config(&Config::new().pooling(false))`), build the engine and a
//! WASI p2 linker, deserialize, instantiate in a fresh store, call `validate-block` and print the
//! head in hex. Iterations alternate which process goes first; medians of
//! `PVF_ONESHOT_ITERATIONS` (default 31) each. Every run's output is checked. `PVF_BENCH_PVF=PATH`
//! runs another `pvf` binary (e.g. a copy of an earlier release build) instead of this build's.
#![allow(missing_docs)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use common::{Raw, median, pvf_validate_process, time};
use criterion::Criterion;
use pvf_host::{Config, ValidationHost, ValidationParams};

/// The environment variable that turns this executable into the raw one-shot process:
/// `PVF_BENCH_RAW_ONESHOT=ARTIFACT process PARENT_HEAD_HEX BLOCK_DATA_HEX`.
const RAW_ONESHOT: &str = "PVF_BENCH_RAW_ONESHOT";

/// The guests of this bench: name, params, the same params as the CLI's params file.
fn guests() -> [(&'static str, ValidationParams, &'static str); 2] {
    [
        (
            "adder",
            ValidationParams::new(5u64.to_le_bytes().to_vec(), 7u64.to_le_bytes().to_vec(), 7),
            r#"{"parent_head":"0x0500000000000000","block_data":"0x0700000000000000","relay_parent_number":7}"#,
        ),
        (
            "undying",
            ValidationParams::new(
                vec![1],
                [&1000u32.to_le_bytes()[..], b"payload"].concat(),
                7,
            ),
            r#"{"parent_head":"0x01","block_data":"0xe80300007061796c6f6164","relay_parent_number":7}"#,
        ),
    ]
}

/// The configuration of the raw one-shot process: the library's engine settings with on-demand
/// allocation (wasmtime's default, and what a one-shot process needs).
fn raw_oneshot_config() -> wasmtime::Config {
    pvf_host::wasmtime_config(&Config::new().pooling(false))
}

/// Raw mode: one validation as a raw wasmtime process; prints the head as `0x..` hex.
fn raw_oneshot(artifact: &Path) -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [parent_head, block_data] = [&args[0], &args[1]].map(|h| hex::decode(h).expect("hex"));
    let raw = Raw::with_config(&raw_oneshot_config());
    let component = raw.load(artifact);
    let params = common::wit::ValidationParams {
        parent_head,
        block_data,
        relay_parent_number: 7,
        relay_parent_storage_root: vec![0; 32],
    };
    let result = raw.run(&component, &params);
    println!("0x{}", hex::encode(&result.head_data));
    std::process::ExitCode::SUCCESS
}

/// The one-shot comparison for every guest: medians and the ratio on stdout.
fn oneshot() {
    let iterations: usize = std::env::var("PVF_ONESHOT_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(31);
    for (guest, params, json) in guests() {
        let dir = tempfile::tempdir().unwrap();
        let params_file = dir.path().join("params.json");
        std::fs::write(&params_file, json).unwrap();
        let code_path = pvf_test_guests::path(guest);
        let store = dir.path().join("cli-store");
        // Warm store: the first run prepares, the second must be a hit.
        for expected in ["\"miss\"", "\"hit\""] {
            let out = pvf_validate_process(&store, &code_path, &params_file);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains(expected),
                "{stdout}"
            );
        }
        let raw = Raw::with_config(&raw_oneshot_config());
        let artifact = dir.path().join(format!("{guest}.cwasm"));
        std::fs::write(
            &artifact,
            raw.engine
                .precompile_component(&pvf_test_guests::bytes(guest))
                .expect("precompile"),
        )
        .unwrap();
        drop(raw);
        let raw_process = || {
            Command::new(std::env::current_exe().expect("this executable"))
                .env(RAW_ONESHOT, &artifact)
                .arg(hex::encode(&params.parent_head))
                .arg(hex::encode(&params.block_data))
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .expect("run the raw one-shot process")
        };
        let raw_head = String::from_utf8_lossy(&raw_process().stdout)
            .trim()
            .to_string();
        assert!(
            raw_head.starts_with("0x"),
            "raw one-shot output {raw_head:?}"
        );
        let head = format!("\"head_data\":\"{raw_head}\"");
        let (mut pvf_times, mut raw_times) = (Vec::new(), Vec::new());
        for i in 0..iterations {
            let mut pvf_run = || {
                let (t, out) = time(|| pvf_validate_process(&store, &code_path, &params_file));
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(
                    stdout.contains(&head) && stdout.contains("\"hit\""),
                    "{stdout}"
                );
                pvf_times.push(t);
                t
            };
            let mut raw_run = || {
                let (t, out) = time(raw_process);
                assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), raw_head);
                raw_times.push(t);
                t
            };
            let (p, r) = if i % 2 == 0 {
                let p = pvf_run();
                (p, raw_run())
            } else {
                let r = raw_run();
                (pvf_run(), r)
            };
            eprintln!("oneshot {guest} #{i}: pvf {} raw {}", ms(p), ms(r));
        }
        let (p, r) = (median(&mut pvf_times), median(&mut raw_times));
        println!(
            "oneshot/{guest}: pvf validate process {} | raw wasmtime process {} | ratio {:.2}x (medians of {iterations}; pvf = {})",
            ms(p),
            ms(r),
            p.as_secs_f64() / r.as_secs_f64(),
            common::pvf_binary().display()
        );
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn process_per_call(c: &mut Criterion) {
    let mut g = c.benchmark_group("process_per_call");
    g.sample_size(20);
    for (guest, params, json) in guests() {
        let code = pvf_test_guests::bytes(guest);
        let dir = tempfile::tempdir().unwrap();
        let params_file = dir.path().join("params.json");
        std::fs::write(&params_file, json).unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        let host = ValidationHost::new(
            Dir::open_ambient_dir(&store, ambient_authority()).unwrap(),
            Config::new(),
        )
        .unwrap();
        let expected = match host.validate(&code, &params).verdict {
            pvf_host::Verdict::Valid(r) => r.head_data,
            other => panic!("{guest}: {other:?}"),
        };
        g.bench_function(format!("{guest}/in_process"), |b| {
            b.iter(|| {
                let outcome = host.validate(&code, &params);
                assert_eq!(outcome.cache.as_str(), "hit");
                outcome
            })
        });
        // The CLI's own store (its fingerprint hashes the pvf binary, not this one).
        let (cli_store, code_path) = (dir.path().join("cli-store"), pvf_test_guests::path(guest));
        let cli = || pvf_validate_process(&cli_store, &code_path, &params_file);
        let first = cli();
        assert!(first.status.success());
        let head = format!("0x{}", hex::encode(&expected));
        g.bench_function(format!("{guest}/process_per_call"), |b| {
            b.iter(|| {
                let out = cli();
                assert!(String::from_utf8_lossy(&out.stdout).contains(&head));
                out
            })
        });
    }
    g.finish();
}

fn main() -> std::process::ExitCode {
    if let Some(artifact) = std::env::var_os(RAW_ONESHOT) {
        return raw_oneshot(Path::new(&artifact));
    }
    oneshot();
    let mut c = Criterion::default().configure_from_args();
    process_per_call(&mut c);
    c.final_summary();
    std::process::ExitCode::SUCCESS
}
