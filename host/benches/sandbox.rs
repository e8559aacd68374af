//! The cost of determinism, measured against raw wasmtime in the same run:
//!
//! - `fuel/undying`: one `validate-block` call of `undying` (2,000 rounds over 1 KiB) on an engine
//!   with fuel metering (the host's configuration) vs the same configuration without fuel.
//! - `wasi_ctx/adder`: one instantiate + call of `adder` with the host's deterministic WASI
//!   context vs wasmtime-wasi's default (empty) context.
//!
//! Run: `cargo bench -p pvf-host --bench sandbox`.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use pvf_host::{CodeHash, Config, ValidationParams, guest_wasi_ctx, wasmtime_config};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

wasmtime::component::bindgen!({ world: "validation-function", path: "../wit" });

struct State {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

struct Raw {
    engine: Engine,
    pre: ValidationFunctionPre<State>,
    fuel: bool,
}

impl Raw {
    fn new(code: &[u8], fuel: bool) -> Self {
        let mut config = wasmtime_config(&Config::new());
        config.consume_fuel(fuel);
        let engine = Engine::new(&config).expect("engine");
        let component = Component::new(&engine, code).expect("compile");
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("wasi");
        let pre = ValidationFunctionPre::new(linker.instantiate_pre(&component).expect("link"))
            .expect("exports");
        Self { engine, pre, fuel }
    }

    fn call(&self, ctx: WasiCtx, params: &pvf::validation::types::ValidationParams) -> Vec<u8> {
        let mut store = Store::new(
            &self.engine,
            State {
                ctx,
                table: ResourceTable::new(),
            },
        );
        store.set_epoch_deadline(u64::MAX);
        if self.fuel {
            store.set_fuel(u64::MAX).expect("fuel");
        }
        let instance = self.pre.instantiate(&mut store).expect("instantiate");
        let result = instance
            .pvf_validation_validate()
            .call_validate_block(&mut store, params)
            .expect("call");
        result.expect("valid").head_data
    }
}

fn wit_params(p: &ValidationParams) -> pvf::validation::types::ValidationParams {
    pvf::validation::types::ValidationParams {
        parent_head: p.parent_head.clone(),
        block_data: p.block_data.clone(),
        relay_parent_number: p.relay_parent_number,
        relay_parent_storage_root: p.relay_parent_storage_root.to_vec(),
    }
}

fn fuel(c: &mut Criterion) {
    let code = pvf_test_guests::bytes("undying");
    let mut block = 2000u32.to_le_bytes().to_vec();
    block.extend(std::iter::repeat_n(0xab, 1024));
    let params = wit_params(&ValidationParams::new(vec![1], block, 1));
    let with = Raw::new(&code, true);
    let without = Raw::new(&code, false);
    assert_eq!(
        with.call(WasiCtx::builder().build(), &params),
        without.call(WasiCtx::builder().build(), &params)
    );
    let mut g = c.benchmark_group("fuel/undying");
    g.sample_size(20);
    g.bench_function("with_fuel", |b| {
        b.iter(|| with.call(WasiCtx::builder().build(), &params))
    });
    g.bench_function("without_fuel", |b| {
        b.iter(|| without.call(WasiCtx::builder().build(), &params))
    });
    g.finish();
}

fn wasi_ctx(c: &mut Criterion) {
    let code = pvf_test_guests::bytes("adder");
    let hash = CodeHash::of(&code);
    let params = ValidationParams::new(1u64.to_le_bytes().to_vec(), 2u64.to_le_bytes().to_vec(), 1);
    let wit = wit_params(&params);
    let raw = Raw::new(&code, true);
    let mut g = c.benchmark_group("wasi_ctx/adder");
    g.bench_function("deterministic", |b| {
        b.iter(|| raw.call(guest_wasi_ctx(&hash, &params), &wit))
    });
    g.bench_function("empty", |b| {
        b.iter(|| raw.call(WasiCtx::builder().build(), &wit))
    });
    g.finish();
}

criterion_group!(benches, fuel, wasi_ctx);
criterion_main!(benches);
