//! The host's configuration: limits and budgets, with documented defaults.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::extensions::crypto::{CRYPTO_ID, CryptoExtension};
use crate::extensions::{Extension, ExtensionSet};

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
    pub(crate) isolation: Isolation,
    pub(crate) worker_executable: Option<PathBuf>,
    pub(crate) precheck_limits: CompileLimits,
    pub(crate) prepare_limits: CompileLimits,
    pub(crate) require_confinement: bool,
    pub(crate) warm_worker: bool,
    pub(crate) extensions: ExtensionSet,
    pub(crate) execution_workers: usize,
    pub(crate) worker_spin: Duration,
    pub(crate) worker_faults: bool,
}

/// Where the code of strangers is compiled and executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isolation {
    /// Compiled and executed in this process, on the caller's thread: no limit on the
    /// compiler's memory or CPU time, a compiler or runtime crash takes the process down, and a
    /// sandbox escape is an escape into the embedder. For benchmarks and embedders who accept the
    /// risk.
    InProcess,
    /// The default. Compiled in a fresh, confined child process per preparation (CPU-time,
    /// wall-clock and memory limits; the compiler's crash or exhaustion is `indeterminate`, never
    /// the embedder's death), and executed in long-lived confined execution workers
    /// ([`Config::execution_workers`] of them), each keeping the components it ran in memory. A
    /// worker that dies, hangs or misbehaves under a call is killed and replaced, and the call
    /// is `indeterminate`.
    Workers,
    /// Like [`Isolation::Workers`], and every execution runs in a fresh child forked from the
    /// execution worker (which holds the constructed component), with its own user, mount, ipc
    /// and uts namespaces (the worker's net namespace is already empty) and a narrower seccomp
    /// filter: nothing one candidate leaves behind — even after an escape from the wasm sandbox
    /// — reaches the next. Costs a fork per execution (see BENCHMARKS.md).
    PerJob,
}

impl Isolation {
    /// `"in-process"`, `"workers"` or `"per-job"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProcess => "in-process",
            Self::Workers => "workers",
            Self::PerJob => "per-job",
        }
    }

    /// Whether strangers' code is compiled in preparation workers (every mode but in-process).
    pub fn compiles_in_workers(self) -> bool {
        self != Self::InProcess
    }
}

/// The limits of one preparation job in a worker ([`Isolation::Workers`]).
///
/// There are two sets, as in the reference system: strict ones for pre-checks (exceeding them
/// is `invalid`: new code must be cheap to compile on every node) and lenient ones for
/// preparation before execution (exceeding them is `indeterminate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileLimits {
    pub(crate) cpu_time: Duration,
    pub(crate) memory_bytes: u64,
    pub(crate) address_space_bytes: Option<u64>,
    pub(crate) wall_clock: Option<Duration>,
    pub(crate) threads: usize,
}

impl CompileLimits {
    /// The pre-check limits:
    ///
    /// * `cpu_time`: 60 s of CPU time (the reference system's pre-check timeout);
    /// * `memory_bytes`: 1 GiB of live heap in the compiler (the bundled 12 MB JavaScript guest
    ///   peaks far below; hostile components inside the code limit were measured at 2-26 GB);
    /// * `threads`: 1 compile thread, so that the heap peak — which decides an `invalid` — is
    ///   the same on every run and every machine (measured spread: see BENCHMARKS.md).
    pub fn strict() -> Self {
        Self {
            cpu_time: Duration::from_secs(60),
            memory_bytes: 1 << 30,
            address_space_bytes: None,
            wall_clock: None,
            threads: 1,
        }
    }

    /// The limits of preparation for execution: 6x the pre-check's CPU time (360 s, the
    /// reference system's lenient timeout), 4 GiB of heap, and half this machine's cores
    /// (at least one) as compile threads, so one preparation cannot take every core.
    pub fn lenient() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            cpu_time: Duration::from_secs(360),
            memory_bytes: 4 << 30,
            address_space_bytes: None,
            wall_clock: None,
            threads: cores.div_ceil(2).max(1),
        }
    }

    /// Sets the CPU time of the job, in whole seconds (rounded up). The worker ends the job
    /// within milliseconds of it (a watch thread); the kernel's `RLIMIT_CPU` is the backstop.
    pub fn cpu_time(mut self, cpu_time: Duration) -> Self {
        self.cpu_time = cpu_time;
        self
    }

    /// Sets the cap on the compiler's live heap, in bytes.
    pub fn memory_bytes(mut self, bytes: u64) -> Self {
        self.memory_bytes = bytes;
        self
    }

    /// Sets the worker's address-space limit (`RLIMIT_AS`), the backstop for memory that is not
    /// heap (code, stacks). Default: the heap cap plus 1 GiB plus 256 MiB per compile thread.
    pub fn address_space_bytes(mut self, bytes: u64) -> Self {
        self.address_space_bytes = Some(bytes);
        self
    }

    /// Sets the wall-clock backstop, which catches a worker that does not run (stopped,
    /// starved): exceeding it is `indeterminate`. Default: four times the CPU time.
    pub fn wall_clock(mut self, wall_clock: Duration) -> Self {
        self.wall_clock = Some(wall_clock);
        self
    }

    /// Sets the number of compile threads (at least 1).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// The CPU time of the job.
    pub fn get_cpu_time(&self) -> Duration {
        self.cpu_time
    }

    /// The cap on the compiler's live heap, in bytes.
    pub fn get_memory_bytes(&self) -> u64 {
        self.memory_bytes
    }

    /// The number of compile threads.
    pub fn get_threads(&self) -> usize {
        self.threads
    }

    /// The CPU time in whole seconds, as the kernel enforces it.
    pub(crate) fn cpu_secs(&self) -> u64 {
        self.cpu_time.as_nanos().div_ceil(1_000_000_000).max(1) as u64
    }

    /// The wall-clock backstop.
    pub(crate) fn backstop(&self) -> Duration {
        self.wall_clock
            .unwrap_or_else(|| Duration::from_secs(self.cpu_secs().saturating_mul(4)))
    }

    /// The address-space limit.
    pub(crate) fn address_space(&self) -> u64 {
        self.address_space_bytes.unwrap_or_else(|| {
            self.memory_bytes
                .saturating_add(1 << 30)
                .saturating_add((256 << 20) * self.threads as u64)
        })
    }
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
    /// * `isolation`: [`Isolation::Workers`] — strangers' code is compiled in a confined child
    ///   process, never in this one.
    /// * `worker_executable`: none — found next to the current executable (see
    ///   [`Config::worker_executable`]).
    /// * `precheck_limits`: [`CompileLimits::strict`]; `prepare_limits`: [`CompileLimits::lenient`].
    /// * `require_confinement`: `false` — a confinement layer the kernel lacks is reported (in
    ///   the log and by `pvf doctor`) but does not stop the host: the wasm sandbox and the
    ///   worker's limits still hold, and a validator that refuses to start on an older kernel
    ///   stops validating altogether. Nodes that want the guarantee set it to `true`.
    /// * `warm_worker`: `true` — one confined worker is kept started ahead of need, so a
    ///   preparation does not wait for a process to start.
    /// * `execution_workers`: the number of CPUs this process may use (at least 1) — how many
    ///   execution workers run at once ([`Isolation::Workers`] and [`Isolation::PerJob`]); a
    ///   call beyond them waits for one. The validation service sets it to its execution slots.
    /// * `worker_spin`: 50 µs — how long the host and an execution worker busy-wait for each
    ///   other's message before sleeping on a futex. Spinning turns a ~40 µs wake-up into a
    ///   sub-microsecond one for calls that answer within it; it costs at most this much CPU
    ///   per message, and nothing while idle (see BENCHMARKS.md).
    /// * extensions: the first-party [`CryptoExtension`] (`pvf:crypto@0.1.0`) — hashes and
    ///   signature checks that validation functions need on every block; [`Config::crypto`]
    ///   turns it off, [`Config::extension`] adds others.
    pub fn new() -> Self {
        let mut extensions = ExtensionSet::empty();
        extensions.add(Arc::new(CryptoExtension::new()));
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
            isolation: Isolation::Workers,
            worker_executable: None,
            precheck_limits: CompileLimits::strict(),
            prepare_limits: CompileLimits::lenient(),
            require_confinement: false,
            warm_worker: true,
            extensions,
            execution_workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            worker_spin: Duration::from_micros(50),
            worker_faults: false,
        }
    }

    /// Registers a host extension (see [`extensions`](crate::extensions)); it replaces one with
    /// the same id. It is checked when the host opens, and is part of the
    /// [execution-environment id](crate::ExecutionEnvironment).
    pub fn extension(mut self, extension: impl Extension) -> Self {
        self.extensions.add(Arc::new(extension));
        self
    }

    /// Turns the first-party `pvf:crypto@0.1.0` extension on or off (default on). Without it, a
    /// guest that imports `pvf:crypto` fails preparation, naming the missing interface.
    pub fn crypto(mut self, enabled: bool) -> Self {
        if enabled {
            self.extensions.add(Arc::new(CryptoExtension::new()));
        } else {
            self.extensions.remove(CRYPTO_ID);
        }
        self
    }

    /// Removes every extension, including `pvf:crypto` (guests get WASI only).
    pub fn without_extensions(mut self) -> Self {
        self.extensions = ExtensionSet::empty();
        self
    }

    /// The registered extensions.
    pub fn get_extensions(&self) -> &ExtensionSet {
        &self.extensions
    }

    /// The fuel budget of one execution.
    pub fn get_fuel(&self) -> u64 {
        self.fuel
    }

    /// Sets how many execution workers may run at once (default: the CPUs this process may use;
    /// at least 1).
    pub fn execution_workers(mut self, workers: usize) -> Self {
        self.execution_workers = workers.max(1);
        self
    }

    /// Sets how long the host and an execution worker spin for each other's message before
    /// sleeping (default 50 µs; zero sleeps at once).
    pub fn worker_spin(mut self, spin: Duration) -> Self {
        self.worker_spin = spin;
        self
    }

    /// Tests only: lets [`ValidationHost::inject_worker_fault`](crate::ValidationHost) make an
    /// execution worker misbehave.
    #[doc(hidden)]
    pub fn worker_faults(mut self, allow: bool) -> Self {
        self.worker_faults = allow;
        self
    }

    /// The number of execution workers.
    pub fn get_execution_workers(&self) -> usize {
        self.execution_workers
    }

    /// Sets where strangers' code is compiled and executed (default [`Isolation::Workers`]).
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// Sets the worker executable: a binary that calls
    /// [`worker::entry`](crate::worker::entry) first thing in `main` with a
    /// [`CountingAllocator`](crate::worker::CountingAllocator) as its global allocator — the
    /// `pvf` binary is one. By default it is the current executable when that is `pvf`, else a
    /// `pvf` next to it (or one directory up, cargo's layout for tests and benchmarks).
    pub fn worker_executable(mut self, path: impl AsRef<Path>) -> Self {
        self.worker_executable = Some(path.as_ref().to_path_buf());
        self
    }

    /// Sets the limits of pre-check preparations (default [`CompileLimits::strict`]).
    pub fn precheck_limits(mut self, limits: CompileLimits) -> Self {
        self.precheck_limits = limits;
        self
    }

    /// Sets the limits of preparation for execution (default [`CompileLimits::lenient`]).
    pub fn prepare_limits(mut self, limits: CompileLimits) -> Self {
        self.prepare_limits = limits;
        self
    }

    /// Secure mode: when `true`, a confinement layer that is not active is an error (the host
    /// does not start; a worker that could not apply every layer is not used). Default `false`.
    pub fn require_confinement(mut self, require: bool) -> Self {
        self.require_confinement = require;
        self
    }

    /// Keeps one worker started ahead of need (default `true`); one-shot tools turn it off.
    pub fn warm_worker(mut self, warm: bool) -> Self {
        self.warm_worker = warm;
        self
    }

    /// Where strangers' code is compiled.
    pub fn get_isolation(&self) -> Isolation {
        self.isolation
    }

    /// Whether every confinement layer is required.
    pub fn get_require_confinement(&self) -> bool {
        self.require_confinement
    }

    /// The limits of pre-check preparations.
    pub fn get_precheck_limits(&self) -> CompileLimits {
        self.precheck_limits
    }

    /// The limits of preparation for execution.
    pub fn get_prepare_limits(&self) -> CompileLimits {
        self.prepare_limits
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
