//! Throughput of the async service on a warm cache: validations per second for `adder` with 1, 2
//! and 16 concurrent callers, in each isolation mode (`in-process`, `workers`, `per-job`), next to
//! a raw wasmtime loop (instantiate + call on a kept `InstancePre`, a fresh `Store` per call, one
//! OS thread per caller) measured in the same run.
//!
//! Rows per isolation mode and caller count:
//! * `raw`: raw wasmtime, N threads (the same in every mode: measured again in each, interleaved
//!   with that mode's samples);
//! * `host.validate_hash`: the synchronous library, N threads, code named by hash;
//! * `service (hash)`: `ValidationService::validate` with `CodeRef::Hash`, N tokio tasks;
//! * `service (bytes)`: the same with the code's bytes (decoded and hashed per call).
//!
//! Each mode has its own store, service and host; the service and the host each have the
//! default number of execution slots (the number of cores; in worker modes also the number of
//! execution worker processes, each pool its own), the worker executable being this build's
//! `pvf`. Each sample runs `PER_SAMPLE` validations in all (`PER_SAMPLE_PER_JOB` for the
//! library and service rows in per-job mode, whose calls cost a fork each; the raw row always
//! `PER_SAMPLE`); the table shows the median of `SAMPLES` samples. Before its samples each mode
//! is warmed up (workers started, components loaded). Run:
//! `cargo bench -p pvf-host --bench service`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Guest, Raw, ValidationFunctionPre, median, open_host, pvf_binary};
use pvf_host::{
    CacheStatus, CodeRef, Config, ExecutionPriority, Isolation, PreparationPriority, ServiceConfig,
    ValidationHost, ValidationService,
};

const PER_SAMPLE: usize = 20_000;
const PER_SAMPLE_PER_JOB: usize = 2_000;
const SAMPLES: usize = 5;
const CALLERS: [usize; 3] = [1, 2, 16];
const MODES: [Isolation; 3] = [Isolation::InProcess, Isolation::Workers, Isolation::PerJob];

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported by this harness.
    let guest = Arc::new(Guest::load("adder"));
    let raw = Arc::new(Raw::new());
    let pre = raw.link(&raw.compile(&guest.code));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let code: Arc<[u8]> = guest.code.clone().into();

    println!(
        "validations/s, adder, warm in-memory cache; median of {SAMPLES} samples of {PER_SAMPLE} validations ({PER_SAMPLE_PER_JOB} for per-job's pvf rows); {} cores; {} execution slots",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        Config::new().get_execution_workers()
    );
    println!(
        "| isolation | callers | raw wasmtime | host.validate_hash | service (hash) | service (bytes) | service (hash) / raw |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for mode in MODES {
        let store = tempfile::TempDir::new().expect("tempdir");
        let config = Config::new()
            .isolation(mode)
            .worker_executable(pvf_binary());
        let service = {
            let dir =
                cap_std::fs::Dir::open_ambient_dir(store.path(), cap_std::ambient_authority())
                    .expect("open store dir");
            ValidationService::new(dir, ServiceConfig::new().host(config.clone()))
                .expect("open service")
        };
        runtime
            .block_on(service.prepare(code.clone(), PreparationPriority::Normal))
            .expect("prepare adder");
        let host = Arc::new(open_host(store.path(), config));
        guest.check_pvf(&host.validate(&guest.code, &guest.params), CacheStatus::Hit);
        let bench = Bench {
            guest: &guest,
            raw: &raw,
            pre: &pre,
            host: &host,
            service: &service,
            runtime: &runtime,
            code: &code,
        };
        let per_sample = if mode == Isolation::PerJob {
            PER_SAMPLE_PER_JOB
        } else {
            PER_SAMPLE
        };
        // Warm up: start every execution worker and load the component in each.
        for row in 1..4 {
            bench.sample(row, 16, 20);
        }
        for callers in CALLERS {
            let mut rows: [Vec<Duration>; 4] = Default::default();
            for _ in 0..SAMPLES {
                for (row, samples) in rows.iter_mut().enumerate() {
                    let n = if row == 0 { PER_SAMPLE } else { per_sample };
                    samples.push(bench.sample(row, callers, n / callers));
                }
            }
            let rates: Vec<f64> = rows
                .iter_mut()
                .enumerate()
                .map(|(row, samples)| {
                    let n = if row == 0 { PER_SAMPLE } else { per_sample };
                    let total = n / callers * callers;
                    total as f64 / median(samples).as_secs_f64()
                })
                .collect();
            println!(
                "| {} | {callers} | {:.0} | {:.0} | {:.0} | {:.0} | {:.3} |",
                mode.as_str(),
                rates[0],
                rates[1],
                rates[2],
                rates[3],
                rates[2] / rates[0]
            );
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average after the run: {}", load.trim());
}

/// What one mode's samples run on.
struct Bench<'a> {
    guest: &'a Arc<Guest>,
    raw: &'a Raw,
    pre: &'a ValidationFunctionPre<common::RawState>,
    host: &'a ValidationHost,
    service: &'a ValidationService,
    runtime: &'a tokio::runtime::Runtime,
    code: &'a Arc<[u8]>,
}

impl Bench<'_> {
    /// One sample of `row` (0 raw, 1 `host.validate_hash`, 2 service by hash, 3 service by
    /// bytes): `callers` concurrent callers, `per_caller` validations each, every result checked.
    fn sample(&self, row: usize, callers: usize, per_caller: usize) -> Duration {
        let guest = self.guest;
        match row {
            // Raw: N threads, each instantiating and calling on the shared InstancePre.
            0 => timed(|| {
                std::thread::scope(|s| {
                    for _ in 0..callers {
                        let (raw, pre) = (self.raw, self.pre);
                        s.spawn(move || {
                            for _ in 0..per_caller {
                                let (result, _) = raw.run_pre(pre, &guest.wit_params);
                                assert_eq!(result.head_data, guest.expected_head);
                            }
                        });
                    }
                })
            }),
            // The synchronous library on N threads.
            1 => timed(|| {
                std::thread::scope(|s| {
                    for _ in 0..callers {
                        let host = self.host;
                        s.spawn(move || {
                            for _ in 0..per_caller {
                                let outcome = host.validate_hash(&guest.hash, &guest.params);
                                guest.check_pvf(&outcome, CacheStatus::Hit);
                            }
                        });
                    }
                })
            }),
            // The service, N tasks, by hash or by bytes.
            _ => {
                let by_hash = row == 2;
                timed(|| {
                    self.runtime.block_on(async {
                        let tasks: Vec<_> = (0..callers)
                            .map(|_| {
                                let (service, guest, code) =
                                    (self.service.clone(), guest.clone(), self.code.clone());
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
                })
            }
        }
    }
}

fn timed(f: impl FnOnce()) -> Duration {
    let started = Instant::now();
    f();
    started.elapsed()
}
