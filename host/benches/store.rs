//! The artifact store's costs:
//!
//! - `store_open/N`: opening a store directory that holds N artifacts (N = 100, 1,000, 10,000).
//! - `checksum/<guest>`: reading and verifying a stored artifact (`ArtifactStore::check`) vs
//!   reading the same file and hashing it with plain blake3.
//! - `host_open`: opening a `ValidationHost` (engine, environment fingerprint, store, epoch
//!   ticker) on a store holding one artifact, with the pooling allocator (the library's default,
//!   `pvf serve`) and with on-demand allocation (`pvf`'s one-shot commands).
//!
//! The first validation after a restart (a freshly opened host, artifact on disk) against cold
//! preparation is a row of the `table` bench, for every guest including the 12 MB JavaScript one.
//!
//! Run: `cargo bench -p pvf-host --bench store`.
#![allow(missing_docs)]

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use pvf_host::{ArtifactStore, CodeHash, Config, EnvFingerprint, StoreOptions, ValidationHost};

fn open_dir(path: &std::path::Path) -> Dir {
    Dir::open_ambient_dir(path, ambient_authority()).expect("open dir")
}

fn store_open(c: &mut Criterion) {
    let engine = wasmtime::Engine::default();
    let fp = EnvFingerprint::from_parts(&engine, b"bench", "cpu", "kernel");
    let mut g = c.benchmark_group("store_open");
    g.sample_size(20);
    for n in [100u32, 1_000, 10_000] {
        let dir = tempfile::tempdir().unwrap();
        let fp_dir = dir.path().join(fp.to_hex());
        std::fs::create_dir(&fp_dir).unwrap();
        for i in 0..n {
            let hash = CodeHash::of(&i.to_le_bytes());
            std::fs::write(fp_dir.join(format!("{hash}.artifact")), [0u8; 64]).unwrap();
            std::fs::write(fp_dir.join(format!("{hash}.lock")), []).unwrap();
        }
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                ArtifactStore::open(open_dir(dir.path()), fp, StoreOptions::new()).expect("open")
            })
        });
    }
    g.finish();
}

fn checksum(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum");
    for guest in ["undying", "bulky"] {
        let code = pvf_test_guests::bytes(guest);
        let dir = tempfile::tempdir().unwrap();
        let host = ValidationHost::new(open_dir(dir.path()), Config::new()).expect("host");
        let hash = host.prepare(&code).expect("prepare").code_hash;
        let path = dir
            .path()
            .join(host.fingerprint().to_hex())
            .join(format!("{hash}.artifact"));
        let size = std::fs::metadata(&path).unwrap().len();
        g.throughput(criterion::Throughput::Bytes(size));
        g.bench_function(BenchmarkId::new(guest, "pvf_check"), |b| {
            b.iter(|| host.store().check(&hash).expect("check").expect("present"))
        });
        g.bench_function(BenchmarkId::new(guest, "raw_read_blake3"), |b| {
            b.iter(|| blake3::hash(&std::fs::read(&path).unwrap()))
        });
    }
    g.finish();
}

fn host_open(c: &mut Criterion) {
    let mut g = c.benchmark_group("host_open");
    g.sample_size(10);
    let code = pvf_test_guests::bytes("undying");
    let dir = tempfile::tempdir().unwrap();
    ValidationHost::new(open_dir(dir.path()), Config::new())
        .unwrap()
        .prepare(&code)
        .unwrap();
    g.bench_function("undying_stored", |b| {
        b.iter(|| ValidationHost::new(open_dir(dir.path()), Config::new()).unwrap())
    });
    g.bench_function("undying_stored_on_demand", |b| {
        b.iter(|| ValidationHost::new(open_dir(dir.path()), Config::new().pooling(false)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, store_open, checksum, host_open);
criterion_main!(benches);
