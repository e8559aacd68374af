//! The one wasmtime configuration every artifact is compiled and run with, and the epoch ticker
//! that enforces wall-clock deadlines.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig, Strategy};

use crate::config::Config;

/// How often the epoch advances; wall-clock deadlines are counted in these ticks.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Builds the engine with [`wasmtime_config`].
pub(crate) fn new_engine(config: &Config) -> wasmtime::Result<Engine> {
    Engine::new(&wasmtime_config(config))
}

/// The one wasmtime configuration every artifact is compiled and run with. Each setting says
/// why it is set. Public so that embedders and benchmarks can compare against raw wasmtime with
/// exactly the same settings.
pub fn wasmtime_config(config: &Config) -> wasmtime::Config {
    let mut c = wasmtime::Config::new();
    // Validation functions are components targeting a WIT world.
    c.wasm_component_model(true);
    // Cranelift, optimised for speed: artifacts are compiled once and run many times.
    c.strategy(Strategy::Cranelift);
    c.cranelift_opt_level(OptLevel::Speed);
    // Determinism: NaN bit patterns differ between CPUs unless canonicalised.
    c.cranelift_nan_canonicalization(true);
    // Determinism: threads and shared memory make execution order observable. They are off by
    // construction: wasmtime is built without its `threads` feature (nor `gc`), so such code
    // fails validation.
    // Determinism: relaxed SIMD results may differ by CPU unless pinned to one behaviour.
    c.relaxed_simd_deterministic(true);
    // Speed: preparation of large code uses every core.
    c.parallel_compilation(true);
    // Determinism: fuel counts executed instructions the same way on every machine; it is the
    // verdict-bearing execution budget.
    c.consume_fuel(true);
    // Safety net: wall-clock deadlines by epoch interruption (cheap checks in loops and calls).
    c.epoch_interruption(true);
    // Deterministic limit: wasm stack depth, the same on every node running this host.
    c.max_wasm_stack(config.max_wasm_stack_bytes);
    // Speed: instance memories and tables come from pre-reserved slots reused between calls,
    // instead of an mmap/munmap per call. Each slot is at least as large as the deterministic
    // limits, so the resource limiter (an `invalid` verdict), not the pool, stops a guest.
    if config.pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_COMPONENT_INSTANCES)
            .total_core_instances(POOL_COMPONENT_INSTANCES * 8)
            .total_memories(POOL_COMPONENT_INSTANCES * 2)
            .total_tables(POOL_COMPONENT_INSTANCES * 4)
            .max_core_instances_per_component(config.max_instances as u32)
            .max_memories_per_component(config.max_instances as u32)
            .max_tables_per_component(config.max_instances as u32)
            .max_memory_size(config.max_memory_bytes)
            .table_elements(config.max_table_elements);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    c
}

/// How many component instances may be alive at once with the pooling allocator: far more than
/// the calls a node runs concurrently. Beyond it, instantiation fails with a host error
/// (`indeterminate`). Each memory slot reserves address space (not memory): 256 slots of a few
/// GiB fit easily in a 64-bit address space.
const POOL_COMPONENT_INSTANCES: u32 = 128;

/// A thread that advances the engine's epoch every [`EPOCH_TICK`] until dropped.
pub(crate) struct EpochTicker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts ticking `engine`.
    pub(crate) fn start(engine: &Engine) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let engine = engine.weak();
        let thread = std::thread::Builder::new()
            .name("pvf-epoch".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EPOCH_TICK) {
                    match engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The number of epoch ticks that covers `timeout` (at least one).
pub(crate) fn deadline_ticks(timeout: Duration) -> u64 {
    let ticks = timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos());
    u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::new_engine;
    use crate::config::Config;
    use crate::env::EnvFingerprint;

    /// The one-shot CLI commands allocate on demand while `pvf serve` and the library default
    /// pool: both must file artifacts under the same fingerprint, so the pooling allocator must
    /// not change wasmtime's compatibility hash (wasmtime: "usage of the pooling allocator does
    /// not affect compiled code").
    #[test]
    fn pooling_does_not_change_the_fingerprint() {
        let fingerprint = |config: &Config| {
            let engine = new_engine(config).unwrap();
            EnvFingerprint::from_parts(&engine, b"exe", "cpu", "kernel")
        };
        assert_eq!(
            fingerprint(&Config::new()),
            fingerprint(&Config::new().pooling(false))
        );
        // The hash does see compilation settings.
        let mut other = super::wasmtime_config(&Config::new());
        other.cranelift_nan_canonicalization(false);
        let other = wasmtime::Engine::new(&other).unwrap();
        assert_ne!(
            fingerprint(&Config::new()),
            EnvFingerprint::from_parts(&other, b"exe", "cpu", "kernel")
        );
    }
}
