//! The cost of determinism, measured against raw wasmtime in the same run:
//!
//! - `fuel/undying`: one instantiate + `validate-block` call of `undying` (2,000 rounds over
//!   1 KiB) on an engine with fuel metering (the host's configuration) vs the same configuration
//!   without fuel.
//! - `wasi_ctx/adder`: one instantiate + call of `adder` with the host's deterministic WASI
//!   context vs wasmtime-wasi's default (empty) context; `wasi_ctx_only`: building either
//!   context alone.
//!
//! Run: `cargo bench -p pvf-host --bench sandbox`.
#![allow(missing_docs)]

mod common;

use common::{Guest, Raw};
use criterion::{Criterion, criterion_group, criterion_main};
use pvf_host::{Config, guest_wasi_ctx, wasmtime_config};
use wasmtime_wasi::WasiCtx;

fn fuel(c: &mut Criterion) {
    let guest = Guest::load("undying");
    let with = Raw::new();
    let mut config = wasmtime_config(&Config::new());
    config.consume_fuel(false);
    let without = Raw::with_config(&config);
    let with_pre = with.link(&with.compile(&guest.code));
    let without_pre = without.link(&without.compile(&guest.code));
    guest.check_raw(&with.run_pre(&with_pre, &guest.wit_params).0);
    guest.check_raw(&without.run_pre(&without_pre, &guest.wit_params).0);
    let mut g = c.benchmark_group("fuel/undying");
    g.sample_size(20);
    g.bench_function("with_fuel", |b| {
        b.iter(|| with.run_pre(&with_pre, &guest.wit_params))
    });
    g.bench_function("without_fuel", |b| {
        b.iter(|| without.run_pre(&without_pre, &guest.wit_params))
    });
    g.finish();
}

fn wasi_ctx(c: &mut Criterion) {
    let guest = Guest::load("adder");
    let raw = Raw::new();
    let pre = raw.link(&raw.compile(&guest.code));
    let mut g = c.benchmark_group("wasi_ctx/adder");
    g.bench_function("deterministic", |b| {
        b.iter(|| {
            raw.run_pre_ctx(
                &pre,
                guest_wasi_ctx(&guest.hash, &guest.params),
                &guest.wit_params,
            )
        })
    });
    g.bench_function("empty", |b| {
        b.iter(|| raw.run_pre_ctx(&pre, WasiCtx::builder().build(), &guest.wit_params))
    });
    g.finish();
    // Building the context alone, without instantiating anything.
    let mut g = c.benchmark_group("wasi_ctx_only");
    g.bench_function("deterministic", |b| {
        b.iter(|| guest_wasi_ctx(&guest.hash, &guest.params))
    });
    g.bench_function("empty", |b| b.iter(|| WasiCtx::builder().build()));
    g.finish();
}

criterion_group!(benches, fuel, wasi_ctx);
criterion_main!(benches);
