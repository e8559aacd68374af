//! A vertical slice of `pvf_host` against raw wasmtime with exactly the same engine
//! configuration ([`pvf_host::wasmtime_config`] of the default [`Config`]).
//!
//! For each guest (`adder`, `undying`) four operations are measured, each as a criterion group
//! `<guest>/<operation>` with the functions `pvf` (the library) and `raw` (the same work done
//! with wasmtime directly):
//!
//! * `cold_prepare`: `ValidationHost::prepare` into an empty store, vs
//!   `Engine::precompile_component` + writing the bytes to a file.
//! * `warm_validate`: `ValidationHost::validate` with the artifact stored and the in-memory
//!   component cache off (`memory_cache_bytes(0)`: a hit from disk, as after a restart), vs
//!   reading the artifact file + `Component::deserialize` + instantiate + call.
//! * `hot_validate`: `ValidationHost::validate` with the default configuration after the code
//!   was prepared in this process (a hit from the in-memory cache), vs instantiating a component
//!   kept in memory (`InstancePre`) + call.
//! * `repaired_validate`: `ValidationHost::validate` with the stored artifact corrupted before
//!   each iteration and the in-memory cache off (checksum mismatch, evict, re-prepare, store,
//!   run), vs `Component::new` + instantiate + call.
//!
//! Three more functions are not pvf/raw pairs but `raw` plus one thing the library adds, to show
//! how much of a difference that is: `cold_prepare/raw_fsync` (durable write),
//! `warm_validate/raw_blake3` (hashing the code and the artifact) and `hot_validate/raw_blake3`
//! (hashing the code).
//!
//! Every timed iteration checks the verdict (and the cache path) it got.
//!
//! Run with `cargo bench -p pvf-host --bench slice`; see `BENCHMARKS.md` for the results.

// The raw side deserializes artifacts itself (`Component::deserialize` is unsafe).
#![allow(unsafe_code)]

use std::hint::black_box;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{BatchSize, Criterion, SamplingMode, criterion_group, criterion_main};
use pvf_host::{CacheStatus, CodeHash, Config, ValidationHost, ValidationParams, Verdict};
use tempfile::TempDir;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Host bindings of `wit/validation.wit` for the raw side, generated independently of the
/// library's own.
mod raw_bindings {
    #![allow(missing_docs)]
    wasmtime::component::bindgen!({
        world: "validation-function",
        path: "../wit",
    });
}

use raw_bindings::ValidationFunctionPre;
use raw_bindings::pvf::validation::types as wit;

/// Rounds of hashing asked of `undying` (over a 1024-byte payload).
const UNDYING_ROUNDS: u32 = 2000;

/// One guest under test: its code, valid parameters and the head they must produce.
struct Guest {
    name: &'static str,
    code: Vec<u8>,
    params: ValidationParams,
    wit_params: wit::ValidationParams,
    expected_head: Vec<u8>,
}

impl Guest {
    fn load(name: &'static str) -> Self {
        let (parent_head, block_data) = match name {
            "adder" => (1u64.to_le_bytes().to_vec(), 2u64.to_le_bytes().to_vec()),
            "undying" => {
                let mut block_data = UNDYING_ROUNDS.to_le_bytes().to_vec();
                block_data.extend((0..1024u32).map(|i| (i * 31 + 7) as u8));
                (Vec::new(), block_data)
            }
            other => panic!("no parameters for guest {other}"),
        };
        let params = ValidationParams::new(parent_head, block_data, 7);
        let wit_params = wit::ValidationParams {
            parent_head: params.parent_head.clone(),
            block_data: params.block_data.clone(),
            relay_parent_number: params.relay_parent_number,
            relay_parent_storage_root: params.relay_parent_storage_root.to_vec(),
        };
        let code = pvf_test_guests::bytes(name);
        // The expected head comes from the library, then every timed iteration of both sides is
        // checked against it, so a broken setup cannot produce silent numbers.
        let store = TempDir::new().expect("tempdir");
        let host = open_host(store.path(), Config::new());
        let outcome = host.validate(&code, &params);
        let expected_head = match outcome.verdict {
            Verdict::Valid(result) => result.head_data,
            other => panic!("{name}: expected a valid verdict, got {other:?}"),
        };
        if name == "adder" {
            assert_eq!(expected_head, 3u64.to_le_bytes(), "adder: 1 + 2");
        }
        Self {
            name,
            code,
            params,
            wit_params,
            expected_head,
        }
    }

    /// Checks a `pvf` outcome: the expected cache path and a valid verdict with the right head.
    fn check_pvf(&self, outcome: &pvf_host::Outcome, cache: CacheStatus) {
        assert_eq!(outcome.cache, cache, "{}: cache status", self.name);
        match &outcome.verdict {
            Verdict::Valid(result) => {
                assert_eq!(result.head_data, self.expected_head, "{}: head", self.name)
            }
            other => panic!("{}: expected a valid verdict, got {other:?}", self.name),
        }
    }

    /// Checks a `raw` result: the right head.
    fn check_raw(&self, result: &wit::ValidationResult) {
        assert_eq!(
            result.head_data, self.expected_head,
            "{}: raw head",
            self.name
        );
    }
}

/// Opens a `ValidationHost` with `config` on the store directory `dir`.
fn open_host(dir: &Path, config: Config) -> ValidationHost {
    let dir = cap_std::fs::Dir::open_ambient_dir(dir, cap_std::ambient_authority())
        .expect("open store dir");
    ValidationHost::new(dir, config).expect("open host")
}

/// The default configuration without the in-memory component cache: every validation goes to
/// the store. (The cache is not part of the wasmtime configuration: the engine is the same.)
fn disk_only() -> Config {
    Config::new().memory_cache_bytes(0)
}

/// Where `host` keeps the artifact of `code` below the store directory `root`.
fn artifact_path(root: &Path, host: &ValidationHost, code: &[u8]) -> PathBuf {
    root.join(host.fingerprint().to_hex())
        .join(format!("{}.artifact", CodeHash::of(code)))
}

/// Flips one byte in the middle of the file at `path` (in place).
fn corrupt(path: &Path) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open artifact");
    let len = file.metadata().expect("stat artifact").len();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, len / 2)
        .expect("read artifact byte");
    byte[0] ^= 0xff;
    file.write_all_at(&byte, len / 2)
        .expect("write artifact byte");
}

/// Writes `bytes` to `dir/artifact` the way the library's store does: a temporary file, fsync,
/// rename into place, fsync of the directory.
fn write_durably(dir: &Path, bytes: &[u8]) {
    let tmp = dir.join(".tmp-artifact");
    let mut file = std::fs::File::create(&tmp).expect("create");
    file.write_all(bytes).expect("write");
    file.sync_all().expect("fsync");
    drop(file);
    std::fs::rename(&tmp, dir.join("artifact")).expect("rename");
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("fsync directory");
}

/// The per-call state of a raw store: a default WASI context.
struct RawState {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for RawState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// Raw wasmtime: an engine with the library's configuration and a WASI p2 linker.
struct Raw {
    engine: Engine,
    linker: Linker<RawState>,
}

impl Raw {
    fn new() -> Self {
        let engine = raw_engine();
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("add WASI to the linker");
        Self { engine, linker }
    }

    /// Reads a precompiled artifact from `path` and deserializes it.
    fn load(&self, path: &Path) -> Component {
        self.deserialize(&std::fs::read(path).expect("read artifact"))
    }

    /// Deserializes artifact bytes read from a file this benchmark wrote.
    fn deserialize(&self, bytes: &[u8]) -> Component {
        // SAFETY: the bytes come from a file written by this benchmark with what
        // `Engine::precompile_component` returned for an engine with the same configuration in
        // this process, and nothing else writes it.
        unsafe { Component::deserialize(&self.engine, bytes) }.expect("deserialize")
    }

    /// Links `component` against WASI and finds its `validate-block` export.
    fn link(&self, component: &Component) -> ValidationFunctionPre<RawState> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .expect("instantiate_pre");
        ValidationFunctionPre::new(pre).expect("the validation-function world")
    }

    /// Links `component`, instantiates it in a fresh store and calls `validate-block`.
    fn run(&self, component: &Component, params: &wit::ValidationParams) -> wit::ValidationResult {
        self.run_pre(&self.link(component), params).0
    }

    /// Instantiates `pre` in a fresh store and calls `validate-block`; also returns the fuel
    /// consumed (instantiation and call) when fuel consumption is enabled in the configuration.
    fn run_pre(
        &self,
        pre: &ValidationFunctionPre<RawState>,
        params: &wit::ValidationParams,
    ) -> (wit::ValidationResult, Option<u64>) {
        let mut store = Store::new(
            &self.engine,
            RawState {
                ctx: WasiCtx::builder().build(),
                table: ResourceTable::new(),
            },
        );
        // The configuration enables epoch interruption; nothing advances this engine's epoch
        // (it stays 0), so this deadline is never reached.
        store.set_epoch_deadline(u64::MAX);
        // When the configuration enables fuel, a store starts with none: give it an unlimited
        // budget (the cost of metering does not depend on the budget). `set_fuel` fails only
        // when fuel is disabled, and then there is nothing to set.
        let metered = store.set_fuel(u64::MAX).is_ok();
        let instance = pre.instantiate(&mut store).expect("instantiate");
        let result = instance
            .pvf_validation_validate()
            .call_validate_block(&mut store, params)
            .expect("call")
            .expect("the guest accepted the candidate");
        let consumed = metered.then(|| u64::MAX - store.get_fuel().expect("fuel is enabled"));
        (result, consumed)
    }
}

/// An engine with exactly the library's (default) configuration.
fn raw_engine() -> Engine {
    Engine::new(&pvf_host::wasmtime_config(&Config::new())).expect("engine")
}

/// `<guest>/cold_prepare`: compile + store into an empty store.
fn cold_prepare(c: &mut Criterion, guest: &Guest) {
    let mut group = c.benchmark_group(format!("{}/cold_prepare", guest.name));
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));

    group.bench_function("pvf", |b| {
        b.iter_batched(
            || {
                let dir = TempDir::new().expect("tempdir");
                let host = open_host(dir.path(), Config::new());
                (dir, host)
            },
            |(dir, host)| {
                let prepared = host.prepare(black_box(&guest.code)).expect("prepare");
                assert_eq!(prepared.cache, CacheStatus::Miss);
                // Returned so that dropping them (removing the directory, stopping the host's
                // epoch ticker) is not timed.
                (dir, host)
            },
            BatchSize::PerIteration,
        );
    });

    group.bench_function("raw", |b| {
        b.iter_batched(
            || (TempDir::new().expect("tempdir"), raw_engine()),
            |(dir, engine)| {
                let artifact = engine
                    .precompile_component(black_box(&guest.code))
                    .expect("precompile");
                std::fs::write(dir.path().join("artifact"), &artifact).expect("write artifact");
                (dir, engine)
            },
            BatchSize::PerIteration,
        );
    });

    // Not part of the pvf/raw pair: `raw` plus the durability the store adds (temporary file,
    // fsync, rename, directory fsync), to show how much of the difference that is.
    group.bench_function("raw_fsync", |b| {
        b.iter_batched(
            || (TempDir::new().expect("tempdir"), raw_engine()),
            |(dir, engine)| {
                let artifact = engine
                    .precompile_component(black_box(&guest.code))
                    .expect("precompile");
                write_durably(dir.path(), &artifact);
                (dir, engine)
            },
            BatchSize::PerIteration,
        );
    });

    group.finish();
}

/// `<guest>/warm_validate`: the artifact is stored, the in-memory cache is off; load it, run once.
fn warm_validate(c: &mut Criterion, guest: &Guest) {
    let mut group = c.benchmark_group(format!("{}/warm_validate", guest.name));
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));

    {
        let dir = TempDir::new().expect("tempdir");
        let host = open_host(dir.path(), disk_only());
        let prepared = host.prepare(&guest.code).expect("prepare");
        assert_eq!(prepared.cache, CacheStatus::Miss);
        let stored = artifact_path(dir.path(), &host, &guest.code);
        let stored_len = std::fs::metadata(&stored).expect("stat artifact").len();
        eprintln!(
            "{}: code {} bytes, stored artifact {stored_len} bytes",
            guest.name,
            guest.code.len()
        );
        group.bench_function("pvf", |b| {
            b.iter(|| {
                let outcome = host.validate(black_box(&guest.code), black_box(&guest.params));
                guest.check_pvf(&outcome, CacheStatus::Hit);
                outcome
            });
        });
        // The host (and its epoch ticker thread) is gone before the raw side runs.
    }

    {
        // A fresh engine, as the pvf side got a fresh host.
        let raw = Raw::new();
        let dir = TempDir::new().expect("tempdir");
        let path = dir.path().join("artifact");
        let artifact = raw
            .engine
            .precompile_component(&guest.code)
            .expect("precompile");
        std::fs::write(&path, &artifact).expect("write artifact");
        group.bench_function("raw", |b| {
            b.iter(|| {
                let component = raw.load(black_box(&path));
                let result = raw.run(&component, black_box(&guest.wit_params));
                guest.check_raw(&result);
                result
            });
        });

        // Not part of the pvf/raw pair: `raw` plus the hashing the library does on a hit from
        // disk (blake3 of the code for the key, blake3 of the artifact for its checksum), to show
        // how much of the difference that is.
        group.bench_function("raw_blake3", |b| {
            b.iter(|| {
                let key = blake3::hash(black_box(&guest.code));
                let bytes = std::fs::read(black_box(&path)).expect("read artifact");
                let sum = blake3::hash(&bytes);
                black_box((key, sum));
                let component = raw.deserialize(&bytes);
                let result = raw.run(&component, black_box(&guest.wit_params));
                guest.check_raw(&result);
                result
            });
        });
    }

    group.finish();
}

/// `<guest>/hot_validate`: the component is in memory (the library's in-memory cache, raw's
/// `InstancePre`); instantiate and run once.
fn hot_validate(c: &mut Criterion, guest: &Guest) {
    let mut group = c.benchmark_group(format!("{}/hot_validate", guest.name));
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));

    {
        let dir = TempDir::new().expect("tempdir");
        let host = open_host(dir.path(), Config::new());
        let prepared = host.prepare(&guest.code).expect("prepare");
        assert_eq!(prepared.cache, CacheStatus::Miss);
        // With the file gone, a hit can only come from the in-memory cache.
        std::fs::remove_file(artifact_path(dir.path(), &host, &guest.code))
            .expect("remove artifact");
        group.bench_function("pvf", |b| {
            b.iter(|| {
                let outcome = host.validate(black_box(&guest.code), black_box(&guest.params));
                guest.check_pvf(&outcome, CacheStatus::Hit);
                outcome
            });
        });
    }

    {
        let raw = Raw::new();
        let component = Component::new(&raw.engine, &guest.code).expect("compile");
        let pre = raw.link(&component);
        group.bench_function("raw", |b| {
            b.iter(|| {
                let (result, _) = raw.run_pre(black_box(&pre), black_box(&guest.wit_params));
                guest.check_raw(&result);
                result
            });
        });

        // Not part of the pvf/raw pair: `raw` plus hashing the code, which the library does on
        // every call to find the component.
        group.bench_function("raw_blake3", |b| {
            b.iter(|| {
                black_box(blake3::hash(black_box(&guest.code)));
                let (result, _) = raw.run_pre(black_box(&pre), black_box(&guest.wit_params));
                guest.check_raw(&result);
                result
            });
        });
    }

    group.finish();
}

/// `<guest>/repaired_validate`: the stored artifact is corrupt and the in-memory cache is off;
/// detect, re-prepare, run.
fn repaired_validate(c: &mut Criterion, guest: &Guest) {
    let mut group = c.benchmark_group(format!("{}/repaired_validate", guest.name));
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));

    {
        let dir = TempDir::new().expect("tempdir");
        let host = open_host(dir.path(), disk_only());
        host.prepare(&guest.code).expect("prepare");
        let path = artifact_path(dir.path(), &host, &guest.code);
        assert!(path.is_file(), "no artifact at {}", path.display());
        group.bench_function("pvf", |b| {
            b.iter_batched(
                // Every iteration re-stores a good artifact, so corrupt it again before each one
                // (one iteration per batch: corrupting twice would restore it).
                || corrupt(&path),
                |()| {
                    let outcome = host.validate(black_box(&guest.code), black_box(&guest.params));
                    guest.check_pvf(&outcome, CacheStatus::Repaired);
                    outcome
                },
                BatchSize::PerIteration,
            );
        });
    }

    // A fresh engine, as the pvf side got a fresh host.
    let raw = Raw::new();
    group.bench_function("raw", |b| {
        // Timed one iteration at a time like the pvf side (which needs a setup per iteration).
        b.iter_batched(
            || (),
            |()| {
                let component =
                    Component::new(&raw.engine, black_box(&guest.code)).expect("compile");
                let result = raw.run(&component, black_box(&guest.wit_params));
                guest.check_raw(&result);
                result
            },
            BatchSize::PerIteration,
        );
    });

    group.finish();
}

fn slice(c: &mut Criterion) {
    for name in ["adder", "undying"] {
        let guest = Guest::load(name);
        // A sanity check of the raw side before anything is timed.
        let raw = Raw::new();
        let component = Component::new(&raw.engine, &guest.code).expect("compile");
        let (result, fuel) = raw.run_pre(&raw.link(&component), &guest.wit_params);
        guest.check_raw(&result);
        match fuel {
            Some(fuel) => {
                eprintln!("{name}: one instantiate + validate-block consumes {fuel} fuel")
            }
            None => eprintln!("{name}: fuel consumption is disabled in the configuration"),
        }
        drop((component, raw));
        cold_prepare(c, &guest);
        warm_validate(c, &guest);
        hot_validate(c, &guest);
        repaired_validate(c, &guest);
    }
}

criterion_group!(benches, slice);
criterion_main!(benches);
