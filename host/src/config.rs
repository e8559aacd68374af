//! The host's configuration: limits and budgets, with documented defaults.

use std::time::Duration;

/// The default fuel budget of one execution: see [`Config::new`].
pub const DEFAULT_FUEL: u64 = 2_000_000_000;

/// Limits and budgets of a [`ValidationHost`](crate::ValidationHost).
///
/// Build it with [`Config::new`] and the setters; every setting has a default that suits a
/// validator node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub(crate) execution_timeout: Duration,
    pub(crate) max_memory_bytes: usize,
    pub(crate) max_table_elements: usize,
    pub(crate) max_instances: usize,
    pub(crate) max_wasm_stack_bytes: usize,
    pub(crate) max_code_bytes: usize,
    pub(crate) fuel: u64,
    pub(crate) keep_other_fingerprints: bool,
    pub(crate) prepare_wait: Duration,
    pub(crate) memory_cache_bytes: usize,
    pub(crate) pooling: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

impl Config {
    /// The default configuration:
    ///
    /// * `execution_timeout`: 2 s wall clock — the reference system's backing timeout. Exceeding
    ///   it is *indeterminate* (a slow machine is not evidence against the candidate).
    /// * `max_memory_bytes`: 512 MiB of linear memory per instance — far above what realistic
    ///   validation functions use, small enough that a memory bomb cannot hurt the node.
    ///   Exceeding it is *invalid* (the same limit holds on every node).
    /// * `max_table_elements`: 100 000 elements per table — bounds host memory for tables.
    /// * `max_instances`: 64 core instances per component — a Rust guest needs a handful.
    /// * `max_wasm_stack_bytes`: 1 MiB of wasm stack — deep enough for recursive parsers, and well
    ///   inside the 2 MiB stack of a tokio worker thread. Exceeding it is *invalid*.
    /// * `max_code_bytes`: 64 MiB of code after decompression — rejects compression bombs.
    /// * `fuel`: [`DEFAULT_FUEL`] units (about one per executed wasm instruction) — the
    ///   deterministic execution budget: running out is *invalid*, identically on every node.
    ///   Sized to fit comfortably inside the wall-clock timeout on ordinary hardware (see
    ///   BENCHMARKS.md for the measured rate), so an honest node hits the fuel limit, not the
    ///   timeout, on a too-long candidate.
    /// * `keep_other_fingerprints`: `false` — at open, the store removes the directories of other
    ///   environments that no live process uses (their artifacts can never be loaded here).
    /// * `prepare_wait`: 6 min (the reference system's lenient preparation timeout) — how long to
    ///   wait for another thread or process preparing the same code before preparing it too.
    /// * `memory_cache_bytes`: 1 GiB — constructed components kept in memory (counted by artifact
    ///   size), least recently used dropped first; a warm hit then touches no file. 0 disables it.
    /// * `pooling`: `true` — wasmtime's pooling instance allocator: instance memories and tables
    ///   come from pre-reserved slots, reused between calls (see `engine.rs` for the pool sizes).
    pub fn new() -> Self {
        Self {
            execution_timeout: Duration::from_secs(2),
            max_memory_bytes: 512 << 20,
            max_table_elements: 100_000,
            max_instances: 64,
            max_wasm_stack_bytes: 1 << 20,
            max_code_bytes: 64 << 20,
            fuel: DEFAULT_FUEL,
            keep_other_fingerprints: false,
            prepare_wait: Duration::from_secs(360),
            memory_cache_bytes: 1 << 30,
            pooling: true,
        }
    }

    /// Sets the wall-clock limit of one execution (default 2 s).
    pub fn execution_timeout(mut self, timeout: Duration) -> Self {
        self.execution_timeout = timeout;
        self
    }

    /// Sets the linear-memory limit of one instance, in bytes (default 512 MiB).
    pub fn max_memory_bytes(mut self, bytes: usize) -> Self {
        self.max_memory_bytes = bytes;
        self
    }

    /// Sets the element limit of one table (default 100 000).
    pub fn max_table_elements(mut self, elements: usize) -> Self {
        self.max_table_elements = elements;
        self
    }

    /// Sets the limit on core instances per component (default 64).
    pub fn max_instances(mut self, instances: usize) -> Self {
        self.max_instances = instances;
        self
    }

    /// Sets the wasm stack limit, in bytes (default 1 MiB).
    pub fn max_wasm_stack_bytes(mut self, bytes: usize) -> Self {
        self.max_wasm_stack_bytes = bytes;
        self
    }

    /// Sets the limit on code size after decompression, in bytes (default 64 MiB).
    pub fn max_code_bytes(mut self, bytes: usize) -> Self {
        self.max_code_bytes = bytes;
        self
    }

    /// Sets the fuel budget of one execution (default [`DEFAULT_FUEL`]).
    pub fn fuel(mut self, fuel: u64) -> Self {
        self.fuel = fuel;
        self
    }

    /// Keep (`true`) or remove (`false`, default) other environments' unused artifacts at open.
    pub fn keep_other_fingerprints(mut self, keep: bool) -> Self {
        self.keep_other_fingerprints = keep;
        self
    }

    /// Sets how long to wait for a concurrent preparation of the same code (default 6 min).
    pub fn prepare_wait(mut self, wait: Duration) -> Self {
        self.prepare_wait = wait;
        self
    }

    /// Sets the byte budget of the in-memory component cache (default 1 GiB; 0 disables it).
    pub fn memory_cache_bytes(mut self, bytes: usize) -> Self {
        self.memory_cache_bytes = bytes;
        self
    }

    /// Uses wasmtime's pooling instance allocator (default) or allocates on demand.
    pub fn pooling(mut self, pooling: bool) -> Self {
        self.pooling = pooling;
        self
    }

    /// The wall-clock limit of one execution.
    pub fn get_execution_timeout(&self) -> Duration {
        self.execution_timeout
    }

    /// The limit on code size after decompression, in bytes.
    pub fn get_max_code_bytes(&self) -> usize {
        self.max_code_bytes
    }
}
