//! Execution: construct a runtime from a verified artifact, instantiate it with a capability-less
//! WASI context under limits, call `validate-block`, and classify what happened.
//!
//! Nothing here touches the filesystem.
//!
//! ## Which failures are the guest's
//!
//! [`classify`] turns what wasmtime reports into an [`ExecuteError`]; `ValidationError::class`
//! then maps that to a verdict class. A failure the guest causes deterministically must be a
//! deterministic error (`invalid`), and a failure of the host must never be:
//!
//! | wasmtime reports | the guest's? | error |
//! |---|---|---|
//! | a trap code (unreachable, out of bounds, ...), `exit` | yes | `Trap` / `Instantiation` |
//! | out of fuel (also when a priced host call cannot be paid) | yes | `ResourceLimit(Fuel)` |
//! | wasm stack overflow | yes | `ResourceLimit(Stack)` |
//! | our limiter refused memory, table or instance growth | yes | `ResourceLimit(Memory/Table/Instances)` |
//! | a host call refused by a cap of `guest_wasi` (random bytes) | yes | `ResourceLimit(HostCall)` |
//! | the host's resource table is full ([`MAX_HOST_RESOURCES`]) | yes | `ResourceLimit(HostCall)` |
//! | wasmtime's store handle limit ([`MAX_COMPONENT_HANDLES`]) | yes | `ResourceLimit(HostCall)` |
//! | wasmtime's hostcall data budget exhausted (see [`hostcall_budget`]) | yes | `ResourceLimit(HostCall)` |
//! | a malformed value crossing the component boundary from the guest: a result or an import's argument whose pointer is out of bounds or misaligned, a bad discriminant, invalid UTF-8, a bad `char`, a `realloc` returning garbage | yes | `Trap` / `Instantiation` |
//! | the result over the contract's limits | yes | `ResourceLimit(Result)` |
//! | the params over the contract's limits | yes (the candidate's) | `ResourceLimit(Params)` |
//! | a memory growth the limits allow that the OS refused | no | `Internal` |
//! | the epoch deadline | no | `Timeout` |
//! | anything else (instance pool exhausted, mmap failed, a bug) | no | `Internal` |
//!
//! The wasmtime messages matched below ([`WASMTIME_GUEST_LIMIT_MESSAGES`]) are constants of the
//! wasmtime version, which the environment fingerprint pins; the `hostile` guest's tests fail if
//! one of them changes.

use wasmtime::component::{Component, ResourceTable, ResourceTableError};
use wasmtime::{CallHook, Engine, ResourceLimiter, Store, StoreContextMut, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::ValidationFunctionPre;
use crate::config::Config;
use crate::engine::deadline_ticks;
use crate::error::{ExecuteError, LimitKind};
use crate::guest_wasi::{
    CappedOutput, GuestCalls, GuestState, GuestWasi, HOST_CALL_FUEL, charge, guest_wasi,
};
use crate::limits::{
    MAX_HEAD_DATA_BYTES, MAX_HORIZONTAL_MESSAGES, MAX_MESSAGES_TOTAL_BYTES, MAX_UPWARD_MESSAGES,
};
use crate::store::{CodeHash, VerifiedArtifact};
use crate::types::{ValidationParams, ValidationResult};

/// The most entries the host's resource table of one call may hold (pollables, streams, ...):
/// a validation function needs a handful; each entry costs host memory. Exceeding it is a
/// deterministic limit.
pub const MAX_HOST_RESOURCES: usize = 10_000;
/// The most component-model handles alive at once in one call (wasmtime's store-wide handle
/// limit, default 100 000, lowered for the same reason).
pub const MAX_COMPONENT_HANDLES: usize = 10_000;
/// The longest reason a guest's `err` keeps, in bytes; a longer one is cut at a character
/// boundary and marked (deterministically, so every node reports the same text).
pub const MAX_REASON_BYTES: usize = 4 * 1024;

/// wasmtime's messages for limits that only a guest's own behaviour reaches (see the module
/// table). Each is deterministic: the same guest hits it on every node.
const WASMTIME_GUEST_LIMIT_MESSAGES: &[&str] = &[
    // The hostcall data budget (`Store::set_hostcall_fuel`).
    "fuel allocated for hostcalls has been exhausted",
    // The store's handle limit (`Store::set_max_component_handles`).
    "store handle limit exceeded",
    "too many active lends",
];

/// wasmtime's messages for a value the guest passed across the component boundary that does not
/// decode (the canonical ABI's checks when lifting a result or an import's arguments, and of the
/// guest's `realloc`): a deterministic failure of the guest, which a hand-written component can
/// cause at will. (Before these were matched, such a component made every node abstain.)
const WASMTIME_MALFORMED_VALUE_MESSAGES: &[&str] = &[
    "pointer/length out of bounds of memory",
    "fixed length list out of bounds of memory",
    "pointer out of bounds",
    "pointer not aligned",
    "pointer is not aligned",
    "realloc return: result not aligned",
    "realloc return: beyond end of memory",
    "invalid option discriminant",
    "invalid expected discriminant",
    "out of range [0..",
    "byte length too large",
    "invalid utf-8 sequence",
    "incomplete utf-8 byte sequence",
    "converted integer out of range for `char`",
];

/// The per-call state of a store: the guest's WASI context and the limits it runs under.
pub(crate) struct HostState {
    wasi: WasiCtx,
    stdout: CappedOutput,
    stderr: CappedOutput,
    table: ResourceTable,
    calls: GuestCalls,
    limits: Limits,
}

impl GuestState for HostState {
    fn calls(&mut self) -> &mut GuestCalls {
        &mut self.calls
    }
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
            calls,
        } = guest_wasi(code_hash, params);
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_HOST_RESOURCES);
        Self {
            wasi: ctx,
            stdout,
            stderr,
            table,
            calls,
            limits: Limits {
                max_memory_bytes: config.max_memory_bytes,
                max_table_elements: config.max_table_elements,
                max_instances: config.max_instances,
                exceeded: None,
                growing: None,
                host_fault: None,
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
/// classified as a resource limit rather than a plain trap, and whether the host (not the
/// guest) failed a growth the limits allowed.
struct Limits {
    max_memory_bytes: usize,
    max_table_elements: usize,
    max_instances: usize,
    exceeded: Option<(LimitKind, String)>,
    /// The last memory growth allowed: (desired bytes, the memory's declared maximum).
    growing: Option<(usize, Option<usize>)>,
    /// A growth within the limits that the host could not provide (the OS refused memory).
    host_fault: Option<String>,
}

/// wasmtime's reasons for a failed growth that are the wasm semantics (the guest sees -1, the
/// same on every node): growth past the memory's or table's declared maximum or index type.
const DETERMINISTIC_GROWTH_FAILURES: &[&str] = &[
    "memory growth exceeds memory type's limits",
    "Memory maximum size exceeded",
    "Table maximum size exceeded",
    "overflow calculating new table size",
];

fn is_deterministic_growth_failure(error: &wasmtime::Error) -> bool {
    let message = error.to_string();
    DETERMINISTIC_GROWTH_FAILURES
        .iter()
        .any(|m| message.contains(m))
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            let detail = format!(
                "linear memory of {desired} bytes requested (from {current}), limit {}",
                self.max_memory_bytes
            );
            self.exceeded = Some((LimitKind::Memory, detail.clone()));
            return Err(wasmtime::Error::msg(detail));
        }
        self.growing = Some((desired, maximum));
        Ok(true)
    }

    /// A growth failed after [`Self::memory_growing`] allowed it. Past the memory's declared
    /// maximum that is the wasm semantics (the guest sees -1, on every node); otherwise the OS
    /// refused memory the limits allow — a local fault, which must not reach the guest as a
    /// normal `-1` (its allocator would trap and the verdict would be a false `invalid`).
    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        let growing = self.growing.take();
        let past_declared_max =
            growing.is_some_and(|(desired, max)| max.is_some_and(|max| desired > max));
        if past_declared_max || is_deterministic_growth_failure(&error) {
            return Ok(());
        }
        let desired = growing.map_or(0, |(desired, _)| desired);
        self.host_fault = Some(format!(
            "the host could not provide {desired} bytes of linear memory within the limits: {error:#}"
        ));
        Err(error.context("memory growth failed in the host"))
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

    /// A table growth failed after [`Self::table_growing`] allowed it. wasmtime 48 reports only
    /// deterministic reasons here (declared maximum, size overflow: the guest sees -1); any
    /// other reason is treated as a host fault.
    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        if is_deterministic_growth_failure(&error) {
            return Ok(());
        }
        self.host_fault = Some(format!("the host could not grow a table: {error:#}"));
        Err(error.context("table growth failed in the host"))
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
    construct_raw(engine, artifact).map_err(|e| ExecuteError::Construction(format!("{e:#}")))
}

/// [`construct`] with wasmtime's own error, for callers that classify it themselves.
pub(crate) fn construct_raw(
    engine: &Engine,
    artifact: &VerifiedArtifact,
) -> wasmtime::Result<Component> {
    #[allow(unsafe_code)]
    // SAFETY: `Component::deserialize` needs bytes from `Component::serialize` (or
    // `precompile_component`) of a compatible engine. A `VerifiedArtifact` is (a) a stored
    // artifact whose blake3 checksum, salted with this environment's fingerprint (wasmtime's
    // compatibility hash, this executable, the CPU) and the code hash, passed in
    // `ArtifactStore::load`; or (b) a worker's `Compiled`: this build (handshake), an equal
    // engine compatibility hash, bytes matching the digest of `serialize`'s output; or (c) in
    // an execution worker, the bytes of (a) or (b) sent by the host that verified them, checked
    // against the blake3 digest the host sent with them (the host is this build: handshake).
    // wasmtime copies the bytes. (A compiler subverted by the code it compiled could send any bytes;
    // the host trusts it as it would in process, until artifacts run in workers.)
    unsafe {
        Component::deserialize(engine, artifact.bytes())
    }
}

/// Instantiates `pre` and calls `validate-block` with `params`, under `config`'s limits; also
/// returns the fuel the guest consumed (instantiation, the call, priced host calls), `None`
/// when nothing ran (params over the limits).
pub(crate) fn execute(
    engine: &Engine,
    pre: &ValidationFunctionPre<HostState>,
    code_hash: &CodeHash,
    params: &ValidationParams,
    config: &Config,
) -> (Result<ValidationResult, ExecuteError>, Option<u64>) {
    if let Err(detail) = params.check_limits() {
        let limit = ExecuteError::ResourceLimit {
            kind: LimitKind::Params,
            detail,
        };
        return (Err(limit), None);
    }
    let mut store = new_store(engine, config, code_hash, params);
    let result = instantiate_and_call(&mut store, pre, params, config);
    store.data().forward_output(code_hash);
    let consumed = store
        .get_fuel()
        .ok()
        .map(|left| config.fuel.saturating_sub(left));
    let result = result.and_then(|result| {
        result
            .check_limits(config.max_code_bytes)
            .map_err(|detail| ExecuteError::ResourceLimit {
                kind: LimitKind::Result,
                detail,
            })?;
        Ok(result)
    });
    (result, consumed)
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
        Ok(Err(reason)) => Err(ExecuteError::GuestRejected(cap_reason(reason))),
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
    store.set_max_component_handles(MAX_COMPONENT_HANDLES);
    store.set_hostcall_fuel(hostcall_budget(config));
    store.call_hook(price_host_calls);
    store
        .set_fuel(config.fuel)
        .expect("fuel consumption is enabled in the engine configuration");
    store.set_epoch_deadline(deadline_ticks(config.execution_timeout));
    store.epoch_deadline_trap();
    store
}

/// The store's call hook: every call from the guest into the host costs [`HOST_CALL_FUEL`]
/// before it runs, and the output it wrote one fuel unit per byte when it returns (see
/// `guest_wasi`'s module doc). Running out is the ordinary out-of-fuel trap.
fn price_host_calls(
    mut cx: StoreContextMut<'_, HostState>,
    hook: CallHook,
) -> wasmtime::Result<()> {
    match hook {
        CallHook::CallingHost => charge(&mut cx, HOST_CALL_FUEL),
        CallHook::ReturningFromHost => {
            let state = cx.data();
            let written = state.stdout.take_unpaid() + state.stderr.take_unpaid();
            if written == 0 {
                return Ok(());
            }
            charge(&mut cx, written)
        }
        CallHook::CallingWasm | CallHook::ReturningFromWasm => Ok(()),
    }
}

/// The most data one guest-to-host transfer may carry, counted by wasmtime's hostcall fuel
/// (about one unit per byte of the host-side copy): enough for the largest result the contract
/// allows (head, new code up to the code limit, the message limits, and their list entries),
/// and no more. It bounds what lifting a result or an import's arguments can make the host
/// allocate; exceeding it is a deterministic limit.
pub(crate) fn hostcall_budget(config: &Config) -> usize {
    let upward_entries = MAX_UPWARD_MESSAGES * size_of::<Vec<u8>>();
    let horizontal_entries = MAX_HORIZONTAL_MESSAGES
        * size_of::<crate::bindings::pvf::validation::types::OutboundHrmpMessage>();
    MAX_HEAD_DATA_BYTES
        + config.max_code_bytes
        + upward_entries
        + horizontal_entries
        + 2 * MAX_MESSAGES_TOTAL_BYTES
        + 64 * 1024
}

/// `reason` cut to [`MAX_REASON_BYTES`] at a character boundary, with a marker saying how much
/// was dropped.
fn cap_reason(mut reason: String) -> String {
    if reason.len() <= MAX_REASON_BYTES {
        return reason;
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let dropped = reason.len() - end;
    reason.truncate(end);
    reason.push_str(&format!("... [{dropped} more bytes not shown]"));
    reason
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
    // The host's own failure first: whatever the guest did next (e.g. trap on a -1 it saw) is a
    // consequence.
    if let Some(fault) = store.data_mut().limits.host_fault.take() {
        return ExecuteError::Internal(fault);
    }
    if let Some((kind, detail)) = store.data_mut().limits.exceeded.take() {
        return ExecuteError::ResourceLimit { kind, detail };
    }
    if let Some(detail) = store.data_mut().calls.take_refusal() {
        return ExecuteError::ResourceLimit {
            kind: LimitKind::HostCall,
            detail,
        };
    }
    if let Some(detail) = guest_limit(&err) {
        return ExecuteError::ResourceLimit {
            kind: LimitKind::HostCall,
            detail,
        };
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
            None if malformed_value(&err) => trap(format!(
                "the guest passed a malformed value to the host: {err:#}"
            )),
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

/// Whether `err` is the canonical ABI refusing a value the guest passed (see
/// [`WASMTIME_MALFORMED_VALUE_MESSAGES`]).
fn malformed_value(err: &wasmtime::Error) -> bool {
    let message = format!("{err:#}");
    WASMTIME_MALFORMED_VALUE_MESSAGES
        .iter()
        .any(|m| message.contains(m))
}

/// Whether `err` is one of wasmtime's limits that only a guest's behaviour reaches (a full host
/// resource table, the store's handle limit, the hostcall data budget): the detail if so.
fn guest_limit(err: &wasmtime::Error) -> Option<String> {
    let table_full = err.chain().any(|e| {
        matches!(
            e.downcast_ref::<ResourceTableError>(),
            Some(ResourceTableError::Full)
        )
    });
    if table_full {
        return Some(format!(
            "the host's resource table is full ({MAX_HOST_RESOURCES} entries): {err:#}"
        ));
    }
    let message = format!("{err:#}");
    WASMTIME_GUEST_LIMIT_MESSAGES
        .iter()
        .any(|m| message.contains(m))
        .then_some(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_capped_at_a_char_boundary_with_a_marker() {
        assert_eq!(cap_reason("short".into()), "short");
        let long = "é".repeat(MAX_REASON_BYTES); // 2 bytes each
        let capped = cap_reason(long.clone());
        assert!(capped.starts_with(&long[..MAX_REASON_BYTES]));
        assert!(capped.ends_with(&format!("... [{} more bytes not shown]", MAX_REASON_BYTES)));
        let odd = format!("x{}", "é".repeat(MAX_REASON_BYTES));
        let capped = cap_reason(odd);
        assert!(capped.starts_with(&format!("x{}", "é".repeat(MAX_REASON_BYTES / 2 - 1))));
    }

    #[test]
    fn the_hostcall_budget_fits_the_largest_legal_result() {
        let config = Config::new();
        let budget = hostcall_budget(&config);
        let largest = MAX_HEAD_DATA_BYTES + config.max_code_bytes + 2 * MAX_MESSAGES_TOTAL_BYTES;
        assert!(budget > largest);
        assert!(budget < largest + (2 << 20), "{budget}");
    }
}
