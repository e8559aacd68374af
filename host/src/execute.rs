//! Execution: construct a runtime from a verified artifact, instantiate it with a capability-less
//! WASI context under limits, call `validate-block`, and classify what happened.
//!
//! Nothing here touches the filesystem.

use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::ValidationFunctionPre;
use crate::config::Config;
use crate::engine::deadline_ticks;
use crate::error::{ExecuteError, LimitKind};
use crate::sandbox::{CappedOutput, GuestWasi, guest_wasi};
use crate::store::{CodeHash, VerifiedArtifact};
use crate::types::{ValidationParams, ValidationResult};

/// The per-call state of a store: the guest's WASI context and the limits it runs under.
pub(crate) struct HostState {
    wasi: WasiCtx,
    stdout: CappedOutput,
    stderr: CappedOutput,
    table: ResourceTable,
    limits: Limits,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl HostState {
    fn new(config: &Config, code_hash: &CodeHash, params: &ValidationParams) -> Self {
        let GuestWasi {
            ctx,
            stdout,
            stderr,
        } = guest_wasi(code_hash, params);
        Self {
            wasi: ctx,
            stdout,
            stderr,
            table: ResourceTable::new(),
            limits: Limits {
                max_memory_bytes: config.max_memory_bytes,
                max_table_elements: config.max_table_elements,
                max_instances: config.max_instances,
                exceeded: None,
            },
        }
    }

    /// Forwards what the guest printed to the host's log.
    fn forward_output(&self, code_hash: &CodeHash) {
        for (stream, out) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            if !out.is_untouched() {
                let kept = out.contents();
                tracing::info!(
                    target: "pvf::guest",
                    code_hash = %code_hash,
                    stream,
                    dropped_bytes = out.dropped(),
                    "{}",
                    String::from_utf8_lossy(&kept)
                );
            }
        }
    }
}

/// Deterministic resource limits; remembers which one was exceeded, so the failure is
/// classified as a resource limit rather than a plain trap.
struct Limits {
    max_memory_bytes: usize,
    max_table_elements: usize,
    max_instances: usize,
    exceeded: Option<(LimitKind, String)>,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            let detail = format!(
                "linear memory of {desired} bytes requested (from {current}), limit {}",
                self.max_memory_bytes
            );
            self.exceeded = Some((LimitKind::Memory, detail.clone()));
            return Err(wasmtime::Error::msg(detail));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_table_elements {
            let detail = format!(
                "table of {desired} elements requested (from {current}), limit {}",
                self.max_table_elements
            );
            self.exceeded = Some((LimitKind::Table, detail.clone()));
            return Err(wasmtime::Error::msg(detail));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.max_instances
    }

    fn tables(&self) -> usize {
        self.max_instances
    }

    fn memories(&self) -> usize {
        self.max_instances
    }
}

/// Runtime construction: turns a verified artifact into a component.
pub(crate) fn construct(
    engine: &Engine,
    artifact: &VerifiedArtifact,
) -> Result<Component, ExecuteError> {
    #[allow(unsafe_code)]
    // SAFETY: `Component::deserialize` requires bytes produced by `Component::serialize` or
    // `Engine::precompile_component` of a compatible engine. A `VerifiedArtifact` exists only
    // after `ArtifactStore::load` checked its blake3 checksum, salted with this environment's
    // fingerprint (which covers wasmtime's compatibility hash, this executable and the CPU) and
    // the code hash; the checksum was written by `ArtifactStore::store` over the bytes that
    // `Component::serialize` returned in this environment. The bytes are copied by wasmtime, so
    // later changes to the file cannot affect the component.
    let component = unsafe { Component::deserialize(engine, artifact.bytes()) };
    component.map_err(|e| ExecuteError::Construction(format!("{e:#}")))
}

/// Instantiates `pre` and calls `validate-block` with `params`, under `config`'s limits.
pub(crate) fn execute(
    engine: &Engine,
    pre: &ValidationFunctionPre<HostState>,
    code_hash: &CodeHash,
    params: &ValidationParams,
    config: &Config,
) -> Result<ValidationResult, ExecuteError> {
    let mut store = new_store(engine, config, code_hash, params);
    let result = instantiate_and_call(&mut store, pre, params, config);
    store.data().forward_output(code_hash);
    result
}

fn instantiate_and_call(
    store: &mut Store<HostState>,
    pre: &ValidationFunctionPre<HostState>,
    params: &ValidationParams,
    config: &Config,
) -> Result<ValidationResult, ExecuteError> {
    let instance = match pre.instantiate(&mut *store) {
        Ok(instance) => instance,
        Err(e) => {
            return Err(classify(e, store, config, ExecuteError::Instantiation));
        }
    };
    let wit_params = params.to_wit();
    match instance
        .pvf_validation_validate()
        .call_validate_block(&mut *store, wit_params)
    {
        Ok(Ok(result)) => Ok(result.into()),
        Ok(Err(reason)) => Err(ExecuteError::GuestRejected(reason)),
        Err(e) => Err(classify(e, store, config, ExecuteError::Trap)),
    }
}

/// Instantiates `pre` once under `config`'s limits without calling it (pre-checking).
pub(crate) fn instantiate_only(
    engine: &Engine,
    pre: &ValidationFunctionPre<HostState>,
    code_hash: &CodeHash,
    config: &Config,
) -> Result<(), ExecuteError> {
    let mut store = new_store(engine, config, code_hash, &ValidationParams::default());
    match pre.instantiate(&mut store) {
        Ok(_) => Ok(()),
        Err(e) => Err(classify(e, &mut store, config, ExecuteError::Instantiation)),
    }
}

/// A fresh store with a fresh deterministic WASI context, the limiter, the fuel budget and the
/// wall-clock deadline.
fn new_store(
    engine: &Engine,
    config: &Config,
    code_hash: &CodeHash,
    params: &ValidationParams,
) -> Store<HostState> {
    let mut store = Store::new(engine, HostState::new(config, code_hash, params));
    store.limiter(|state| &mut state.limits);
    store
        .set_fuel(config.fuel)
        .expect("fuel consumption is enabled in the engine configuration");
    store.set_epoch_deadline(deadline_ticks(config.execution_timeout));
    store.epoch_deadline_trap();
    store
}

/// What the guest said on stderr (e.g. a Rust panic message), on one line, at most 400 bytes.
fn guest_stderr(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let said = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect::<Vec<_>>()
        .join(" ");
    if said.is_empty() {
        return None;
    }
    let mut end = said.len().min(400);
    while !said.is_char_boundary(end) {
        end -= 1;
    }
    Some(said[..end].to_string())
}

/// Classifies an error from instantiation or the call. `trap` wraps a deterministic trap.
fn classify(
    err: wasmtime::Error,
    store: &mut Store<HostState>,
    config: &Config,
    trap: fn(String) -> ExecuteError,
) -> ExecuteError {
    if let Some((kind, detail)) = store.data_mut().limits.exceeded.take() {
        return ExecuteError::ResourceLimit { kind, detail };
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => ExecuteError::Timeout(config.execution_timeout),
        Some(Trap::OutOfFuel) => ExecuteError::ResourceLimit {
            kind: LimitKind::Fuel,
            detail: format!("fuel budget of {} exhausted", config.fuel),
        },
        Some(Trap::StackOverflow) => ExecuteError::ResourceLimit {
            kind: LimitKind::Stack,
            detail: format!(
                "wasm stack of {} bytes exhausted",
                config.max_wasm_stack_bytes
            ),
        },
        Some(code) => {
            let stderr = store.data().stderr.contents();
            match guest_stderr(&stderr) {
                Some(said) => trap(format!("{code} (guest stderr: {said})")),
                None => trap(code.to_string()),
            }
        }
        None => match err.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) => trap(format!("guest called exit({})", exit.0)),
            // Errors that are not traps come from the host side: not evidence against the guest,
            // except resource-count limits at instantiation, which are deterministic.
            None if format!("{err:#}").contains("resource limit exceeded") => {
                ExecuteError::ResourceLimit {
                    kind: LimitKind::Instances,
                    detail: format!("{err:#}"),
                }
            }
            None => ExecuteError::Internal(format!("{err:#}")),
        },
    }
}
