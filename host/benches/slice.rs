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

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::{Guest, Raw, artifact_path, corrupt, disk_only, open_host, raw_engine, write_durably};
use criterion::{BatchSize, Criterion, SamplingMode, criterion_group, criterion_main};
use pvf_host::{CacheStatus, Config};
use tempfile::TempDir;
use wasmtime::component::Component;

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
