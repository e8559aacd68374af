//! Throughput of the async service on a warm cache: validations per second for `adder` with 1, 2
//! and 16 concurrent callers, next to a raw wasmtime loop (instantiate + call on a kept
//! `InstancePre`, a fresh `Store` per call, one OS thread per caller) measured in the same run.
//!
//! Rows per caller count:
//! * `raw`: raw wasmtime, N threads;
//! * `host.validate_hash`: the synchronous library, N threads, code named by hash;
//! * `service (hash)`: `ValidationService::validate` with `CodeRef::Hash`, N tokio tasks;
//! * `service (bytes)`: the same with the code's bytes (decoded and hashed per call).
//!
//! Each sample runs `PER_SAMPLE` validations in all; the table shows the median of `SAMPLES`
//! samples. Run: `cargo bench -p pvf-host --bench service`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Guest, Raw, median, open_host};
use pvf_host::{
    CacheStatus, CodeRef, Config, ExecutionPriority, PreparationPriority, ServiceConfig,
    ValidationService,
};

const PER_SAMPLE: usize = 20_000;
const SAMPLES: usize = 5;
const CALLERS: [usize; 3] = [1, 2, 16];

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported by this harness.
    let guest = Arc::new(Guest::load("adder"));
    let raw = Arc::new(Raw::new());
    let pre = raw.link(&raw.compile(&guest.code));
    let store = tempfile::TempDir::new().expect("tempdir");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let service = {
        let dir = cap_std::fs::Dir::open_ambient_dir(store.path(), cap_std::ambient_authority())
            .expect("open store dir");
        ValidationService::new(dir, ServiceConfig::new()).expect("open service")
    };
    let code: Arc<[u8]> = guest.code.clone().into();
    runtime
        .block_on(service.prepare(code.clone(), PreparationPriority::Normal))
        .expect("prepare adder");
    let host = Arc::new(open_host(store.path(), Config::new()));
    guest.check_pvf(&host.validate(&guest.code, &guest.params), CacheStatus::Hit);

    println!(
        "validations/s, adder, warm in-memory cache; median of {SAMPLES} samples of {PER_SAMPLE} validations; {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "| callers | raw wasmtime | host.validate_hash | service (hash) | service (bytes) | service (hash) / raw |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for callers in CALLERS {
        let per_caller = PER_SAMPLE / callers;
        let total = per_caller * callers;
        let mut rows: [Vec<Duration>; 4] = Default::default();
        for _ in 0..SAMPLES {
            // Raw: N threads, each instantiating and calling on the shared InstancePre.
            rows[0].push(timed(|| {
                std::thread::scope(|s| {
                    for _ in 0..callers {
                        let (raw, pre, guest) = (&raw, &pre, &guest);
                        s.spawn(move || {
                            for _ in 0..per_caller {
                                let (result, _) = raw.run_pre(pre, &guest.wit_params);
                                assert_eq!(result.head_data, guest.expected_head);
                            }
                        });
                    }
                })
            }));
            // The synchronous library on N threads.
            rows[1].push(timed(|| {
                std::thread::scope(|s| {
                    for _ in 0..callers {
                        let (host, guest) = (&host, &guest);
                        s.spawn(move || {
                            for _ in 0..per_caller {
                                let outcome = host.validate_hash(&guest.hash, &guest.params);
                                guest.check_pvf(&outcome, CacheStatus::Hit);
                            }
                        });
                    }
                })
            }));
            // The service, N tasks, by hash and by bytes.
            for (row, by_hash) in [(2, true), (3, false)] {
                rows[row].push(timed(|| {
                    runtime.block_on(async {
                        let tasks: Vec<_> = (0..callers)
                            .map(|_| {
                                let (service, guest, code) =
                                    (service.clone(), guest.clone(), code.clone());
                                tokio::spawn(async move {
                                    for _ in 0..per_caller {
                                        let code_ref = if by_hash {
                                            CodeRef::Hash(guest.hash)
                                        } else {
                                            CodeRef::Bytes(code.clone())
                                        };
                                        let outcome = service
                                            .validate(
                                                code_ref,
                                                guest.params.clone(),
                                                ExecutionPriority::Backing,
                                            )
                                            .await;
                                        guest.check_pvf(&outcome, CacheStatus::Hit);
                                    }
                                })
                            })
                            .collect();
                        for task in tasks {
                            task.await.expect("caller task");
                        }
                    })
                }));
            }
        }
        let rates: Vec<f64> = rows
            .iter_mut()
            .map(|samples| total as f64 / median(samples).as_secs_f64())
            .collect();
        println!(
            "| {callers} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} |",
            rates[0],
            rates[1],
            rates[2],
            rates[3],
            rates[2] / rates[0]
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average after the run: {}", load.trim());
}

fn timed(f: impl FnOnce()) -> Duration {
    let started = Instant::now();
    f();
    started.elapsed()
}
