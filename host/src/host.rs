//! The validation host: the transaction that turns code and a candidate into a verdict.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cap_std::fs::Dir;
use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::bindings::ValidationFunctionPre;
use crate::config::{Config, Isolation};
use crate::engine::{EpochTicker, new_engine};
use crate::env::EnvFingerprint;
use crate::environment::{EnvironmentId, ExecutionEnvironment};
use crate::error::{
    ExecuteError, FailureClass, HostError, PrepareError, ServiceError, StoreError, ValidationError,
};
use crate::execute::{HostState, construct, construct_raw, execute, instantiate_only};
use crate::inflight::InFlight;
use crate::memory_cache::MemoryCache;
use crate::prepare::{compile, compile_error, decode, link};
use crate::store::{
    ArtifactStore, CodeHash, FailureKind, FailureRecord, FileLock, StoreOptions, VerifiedArtifact,
};
use crate::types::{ValidationParams, ValidationResult};
use crate::worker::exec::{ExecPool, Executed, ExecutionWorkerInfo, Fault, WorkerFailure};
use crate::worker::protocol::Purpose;
use crate::worker::{Compiled, WorkerPool};

/// Which path the artifact took: the `cache` field of the command line's JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheStatus {
    /// A stored artifact was verified and used as is.
    Hit,
    /// No artifact was stored; the code was prepared.
    Miss,
    /// A stored artifact was bad (checksum mismatch, unreadable, construction or link failure);
    /// it was discarded and the code re-prepared.
    Repaired,
}

impl CacheStatus {
    /// `"hit"`, `"miss"` or `"repaired"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Repaired => "repaired",
        }
    }
}

/// The verdict on one candidate.
#[derive(Debug)]
pub enum Verdict {
    /// The validation function accepted the candidate.
    Valid(ValidationResult),
    /// A deterministic failure: every honest node gets the same.
    Invalid(ValidationError),
    /// This node cannot tell; it must not vote.
    Indeterminate(ValidationError),
}

impl Verdict {
    fn from_error(err: ValidationError) -> Self {
        match err.class() {
            FailureClass::Deterministic => Self::Invalid(err),
            FailureClass::Indeterminate => Self::Indeterminate(err),
        }
    }

    /// `"valid"`, `"invalid"` or `"indeterminate"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Valid(_) => "valid",
            Self::Invalid(_) => "invalid",
            Self::Indeterminate(_) => "indeterminate",
        }
    }
}

/// What [`ValidationHost::validate`] found.
#[derive(Debug)]
pub struct Outcome {
    /// The hash of the (decompressed) code, when it could be decoded.
    pub code_hash: Option<CodeHash>,
    /// Which path the artifact took.
    pub cache: CacheStatus,
    /// The verdict.
    pub verdict: Verdict,
    /// The execution environment the verdict was reached in (see [`ExecutionEnvironment`]):
    /// two nodes that disagree compare it first.
    pub environment: EnvironmentId,
    /// The fuel the guest consumed (instantiation, the call and priced host calls): the same on
    /// every node for the same code, candidate and environment. `None` when nothing ran (the
    /// code did not prepare, the params were over the limits, the service refused the call).
    pub fuel_consumed: Option<u64>,
}

/// What [`ValidationHost::prepare`] and [`ValidationHost::precheck`] report on success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    /// The hash of the (decompressed) code: the artifact's key.
    pub code_hash: CodeHash,
    /// Which path the artifact took.
    pub cache: CacheStatus,
    /// The compiler's live-heap peak, in bytes, when the code was compiled now in a worker
    /// (`None` when a compiled artifact was used, or the code was compiled in this process).
    pub peak_memory_bytes: Option<u64>,
}

/// What [`ValidationHost::verify_store`] found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// How many artifacts were checked.
    pub checked: usize,
    /// Artifacts that were bad, why, and whether they were removed.
    pub bad: Vec<(CodeHash, String, bool)>,
}

/// A component ready to instantiate, and which path it took.
#[derive(Clone)]
pub(crate) struct Runnable {
    pub(crate) pre: ValidationFunctionPre<HostState>,
    /// The verified artifact's bytes, kept when executions run in workers (a worker that does
    /// not hold the component is sent them).
    pub(crate) artifact: Option<Arc<[u8]>>,
    pub(crate) cache: CacheStatus,
    /// The compiler's heap peak when the code was compiled now in a worker.
    pub(crate) peak_memory: Option<u64>,
}

impl Runnable {
    /// A stored artifact used as is, with its size.
    fn hit(loaded: Loaded, size: usize) -> (Self, usize) {
        (
            Self {
                pre: loaded.0,
                artifact: loaded.1,
                cache: CacheStatus::Hit,
                peak_memory: None,
            },
            size,
        )
    }
}

/// A constructed, linked component and, when executions run in workers, its verified artifact.
pub(crate) type Loaded = (ValidationFunctionPre<HostState>, Option<Arc<[u8]>>);

/// Prepares, stores and executes validation functions.
///
/// Opening it computes the [`EnvFingerprint`] and opens its directory in the store; everything
/// after that reaches the filesystem only through the [`Dir`] handed in.
pub struct ValidationHost {
    engine: Engine,
    linker: Linker<HostState>,
    store: ArtifactStore,
    config: Config,
    in_flight: InFlight,
    memory: MemoryCache<Loaded>,
    workers: Option<WorkerPool>,
    executors: Option<ExecPool>,
    environment: ExecutionEnvironment,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for ValidationHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidationHost")
            .field("store", &self.store)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ValidationHost {
    /// Opens a host whose artifact store lives in `store_dir`.
    pub fn new(store_dir: Dir, config: Config) -> Result<Self, HostError> {
        let engine = new_engine(&config).map_err(|e| HostError::Engine(format!("{e:#}")))?;
        let fingerprint =
            EnvFingerprint::current(&engine, &config).map_err(HostError::Fingerprint)?;
        Self::open(store_dir, config, engine, fingerprint)
    }

    /// Opens a host that files its artifacts under `fingerprint` instead of this environment's.
    ///
    /// For tools and tests that act as another environment (e.g. to produce foreign artifacts).
    /// A node must use [`ValidationHost::new`]: artifacts are only safe to load under the
    /// fingerprint of the environment that compiled them.
    pub fn with_fingerprint(
        store_dir: Dir,
        config: Config,
        fingerprint: EnvFingerprint,
    ) -> Result<Self, HostError> {
        let engine = new_engine(&config).map_err(|e| HostError::Engine(format!("{e:#}")))?;
        Self::open(store_dir, config, engine, fingerprint)
    }

    fn open(
        store_dir: Dir,
        config: Config,
        engine: Engine,
        fingerprint: EnvFingerprint,
    ) -> Result<Self, HostError> {
        config
            .extensions
            .check()
            .map_err(|e| HostError::Extension(e.to_string()))?;
        if config.isolation != Isolation::InProcess {
            workers_have_extensions(&config)?;
        }
        let mut linker = Linker::new(&engine);
        crate::guest_wasi::add_to_linker(&mut linker)
            .map_err(|e| HostError::Engine(format!("{e:#}")))?;
        crate::extensions::link::add_to_linker(&mut linker, &config.extensions)
            .map_err(|e| HostError::Extension(format!("{e:#}")))?;
        let environment = ExecutionEnvironment::of(&engine, &config);
        let options = StoreOptions::new()
            .keep_other_fingerprints(config.keep_other_fingerprints)
            .lock_wait(config.prepare_wait);
        let store = ArtifactStore::open(store_dir, fingerprint, options)?;
        let ticker = EpochTicker::start(&engine).map_err(HostError::Ticker)?;
        let memory_cache_bytes = config.memory_cache_bytes;
        let workers = match config.isolation {
            Isolation::InProcess => None,
            Isolation::Workers | Isolation::PerJob => Some(WorkerPool::new(&engine, &config)?),
        };
        let executors = match (&workers, config.isolation) {
            (Some(workers), Isolation::Workers | Isolation::PerJob) => Some(ExecPool::new(
                workers.executable().to_path_buf(),
                &config,
                *environment.id().as_bytes(),
                config.isolation == Isolation::PerJob,
            )?),
            _ => None,
        };
        Ok(Self {
            engine,
            linker,
            store,
            config,
            in_flight: InFlight::default(),
            memory: MemoryCache::new(memory_cache_bytes),
            workers,
            executors,
            environment,
            _ticker: ticker,
        })
    }

    /// The artifact store.
    pub fn store(&self) -> &ArtifactStore {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// How many constructed components, and how many bytes of their artifacts, the in-memory
    /// cache holds.
    pub fn memory_cache_usage(&self) -> (usize, usize) {
        self.memory.usage()
    }

    /// The preparation worker's executable, when code is compiled in workers.
    pub fn worker_executable(&self) -> Option<&std::path::Path> {
        self.workers.as_ref().map(WorkerPool::executable)
    }

    /// The execution workers alive now (none in [`Isolation::InProcess`], and none before the
    /// first execution: they start on demand).
    pub fn execution_workers(&self) -> Vec<ExecutionWorkerInfo> {
        self.executors
            .as_ref()
            .map(ExecPool::workers)
            .unwrap_or_default()
    }

    /// Starts an execution worker now if none runs (they otherwise start at the first
    /// execution) and returns its confinement report, one line a layer:
    /// `name<TAB>active[<TAB>detail]` or `name<TAB>unavailable<TAB>why`. `None` in process.
    pub fn start_execution_worker(&self) -> Option<Result<String, ExecuteError>> {
        self.executors.as_ref().map(ExecPool::warm)
    }

    /// Starts an execution worker in the background if none is idle or starting (and a slot is
    /// free), without waiting: the next execution takes it. For callers that know an execution
    /// is coming (the one-shot `pvf validate`), so that starting a worker overlaps reading and
    /// checking the artifact. Does nothing in process.
    pub fn prestart_execution_worker(&self) {
        if let Some(executors) = &self.executors {
            executors.prestart();
        }
    }

    /// How many execution workers were replaced, by cause, since the host opened.
    pub fn execution_worker_restarts(&self) -> Vec<(WorkerFailure, u64)> {
        self.executors
            .as_ref()
            .map(ExecPool::restarts)
            .unwrap_or_default()
    }

    /// Calls made into execution workers since the host opened (0 in-process).
    pub fn execution_worker_calls(&self) -> u64 {
        self.executors.as_ref().map(ExecPool::calls).unwrap_or(0)
    }

    /// Tests only: the next execution's worker misbehaves as `fault` says (when
    /// [`Config::worker_faults`] allowed it; otherwise the worker refuses, which is also a
    /// protocol failure).
    #[doc(hidden)]
    pub fn inject_worker_fault(&self, fault: Fault) {
        if let Some(executors) = &self.executors {
            executors.inject(fault);
        }
    }

    /// Tests only: an execution worker (with [`Config::worker_faults`]) tries the forbidden thing
    /// `action` names — a `pvf __pvf-confine-probe` action: `open-outside`, `socket`,
    /// `connect PORT`, `execve`, `fork`, `ptrace` — inside itself, or inside a per-job child in
    /// [`Isolation::PerJob`], and says what happened (`denied errno=…`, `allowed`); a worker
    /// killed by it gives the error saying how (e.g. `SIGSYS`).
    #[doc(hidden)]
    pub fn probe_execution_worker(&self, action: &str) -> Result<String, ExecuteError> {
        match &self.executors {
            Some(executors) => executors.probe(action),
            None => Err(ExecuteError::Internal("no execution workers".into())),
        }
    }

    /// The execution environment: the id every [`Outcome`] carries, and its parts.
    pub fn environment(&self) -> &ExecutionEnvironment {
        &self.environment
    }

    /// The environment fingerprint artifacts are bound to.
    pub fn fingerprint(&self) -> EnvFingerprint {
        self.store.fingerprint()
    }

    /// Prepares `code` (a component, or the same zstd-compressed) into the store, unless a good
    /// artifact is already there.
    pub fn prepare(&self, code: &[u8]) -> Result<Prepared, ValidationError> {
        let code = decode(code, self.config.max_code_bytes)?;
        let code_hash = CodeHash::of(&code);
        let runnable = self.runnable(&code_hash, &code).map_err(|(_, e)| e)?;
        Ok(Prepared {
            code_hash,
            cache: runnable.cache,
            peak_memory_bytes: runnable.peak_memory,
        })
    }

    /// Prepares `code` and instantiates it once without calling it: whether the code is
    /// acceptable as a validation function.
    ///
    /// With [`Isolation::Workers`] the code is compiled under the strict pre-check limits
    /// every time, even when an artifact is stored: the verdict must not depend on what this
    /// node happens to have compiled before (under the lenient limits). Exceeding a strict
    /// limit is `invalid`.
    pub fn precheck(&self, code: &[u8]) -> Result<Prepared, ValidationError> {
        let code = decode(code, self.config.max_code_bytes)?;
        let code_hash = CodeHash::of(&code);
        let runnable = self
            .precheck_runnable(&code_hash, &code)
            .map_err(|(_, e)| e)?;
        self.instantiate_once(&runnable, &code_hash)?;
        Ok(Prepared {
            code_hash,
            cache: runnable.cache,
            peak_memory_bytes: runnable.peak_memory,
        })
    }

    /// The pre-check's preparation: a strict compilation in a worker (when code is compiled in
    /// workers), then the artifact as [`Self::runnable`] finds it, the fresh one used when none
    /// is stored.
    pub(crate) fn precheck_runnable(
        &self,
        code_hash: &CodeHash,
        code: &[u8],
    ) -> Result<Runnable, (CacheStatus, ValidationError)> {
        let Some(workers) = &self.workers else {
            return self.runnable(code_hash, code);
        };
        if let Some(e) = self.remembered_failure(code_hash, Purpose::Precheck) {
            return Err((CacheStatus::Miss, e.into()));
        }
        let compiled = workers.compile(code, Purpose::Precheck).map_err(|e| {
            self.remember_failure(code_hash, &e);
            (CacheStatus::Miss, e.into())
        })?;
        let peak = compiled.peak_memory;
        let mut runnable = match self.cached(code_hash) {
            Some(runnable) => runnable,
            None => {
                let (runnable, size) =
                    self.runnable_from_store(code_hash, code, Purpose::Precheck, Some(compiled))?;
                self.memory.insert(
                    *code_hash,
                    (runnable.pre.clone(), runnable.artifact.clone()),
                    size,
                );
                runnable
            }
        };
        runnable.peak_memory = Some(peak);
        Ok(runnable)
    }

    /// Validates one candidate: the whole transaction, from code bytes to verdict.
    ///
    /// 1. Decode the code (zstd, size limit) and hash it.
    /// 2. Look up the stored artifact, verify its checksum, construct and link it
    ///    ([`ValidationHost::prepare`] does the same).
    /// 3. On any sign that the stored artifact is bad — checksum mismatch, unreadable file,
    ///    construction or link failure — discard it, re-prepare the code, and use the fresh
    ///    artifact (`cache: repaired`). A local fault never becomes a verdict: the fresh
    ///    artifact is compiled in this process, and only a failure of *that* is deterministic.
    /// 4. Execute once and classify the result.
    pub fn validate(&self, code: &[u8], params: &ValidationParams) -> Outcome {
        let code = match decode(code, self.config.max_code_bytes) {
            Ok(code) => code,
            Err(e) => return self.failed(None, CacheStatus::Miss, e.into()),
        };
        let code_hash = CodeHash::of(&code);
        let runnable = match self.runnable(&code_hash, &code) {
            Ok(runnable) => runnable,
            Err((cache, e)) => return self.failed(Some(code_hash), cache, e),
        };
        self.run(&runnable, &code_hash, params, self.config.execution_timeout)
    }

    /// Validates one candidate against code prepared earlier, named by its hash: the hot path
    /// for callers that keep the hash, since the code is neither decoded nor hashed again.
    ///
    /// Uses the in-memory component or the stored artifact (verified as in
    /// [`ValidationHost::validate`]). Without the code nothing can be prepared: when there is no
    /// good artifact — none stored, or a bad one, which is discarded — the verdict is
    /// `indeterminate` ([`ServiceError::CodeUnknown`], cache `miss`); call
    /// [`ValidationHost::validate`] with the code then.
    pub fn validate_hash(&self, code_hash: &CodeHash, params: &ValidationParams) -> Outcome {
        match self.runnable_by_hash(code_hash) {
            Ok(runnable) => self.run(&runnable, code_hash, params, self.config.execution_timeout),
            Err((cache, e)) => self.failed(Some(*code_hash), cache, e),
        }
    }

    /// Executes one candidate on `runnable` with the wall-clock limit `timeout`, and classifies.
    pub(crate) fn run(
        &self,
        runnable: &Runnable,
        code_hash: &CodeHash,
        params: &ValidationParams,
        timeout: Duration,
    ) -> Outcome {
        let started = Instant::now();
        let (result, fuel_consumed) = if let Some(executors) = &self.executors {
            match &runnable.artifact {
                Some(artifact) => {
                    let (result, fuel) =
                        executors.execute(code_hash, artifact, params, timeout, false);
                    let result = result.and_then(|executed| match executed {
                        Executed::Result(result) => Ok(result),
                        Executed::Instantiated => Err(ExecuteError::Internal(
                            "an instantiation where an execution was asked".into(),
                        )),
                    });
                    (result, fuel)
                }
                None => (Err(no_artifact()), None),
            }
        } else if timeout == self.config.execution_timeout {
            execute(&self.engine, &runnable.pre, code_hash, params, &self.config)
        } else {
            let config = self.config.clone().execution_timeout(timeout);
            execute(&self.engine, &runnable.pre, code_hash, params, &config)
        };
        let verdict = match result {
            Ok(result) => Verdict::Valid(result),
            Err(e) => Verdict::from_error(e.into()),
        };
        tracing::debug!(
            code_hash = %code_hash,
            cache = runnable.cache.as_str(),
            verdict = verdict.as_str(),
            elapsed = ?started.elapsed(),
            "validated"
        );
        Outcome {
            code_hash: Some(*code_hash),
            cache: runnable.cache,
            verdict,
            environment: self.environment.id(),
            fuel_consumed,
        }
    }

    /// The outcome of a validation that failed before anything ran.
    pub(crate) fn failed(
        &self,
        code_hash: Option<CodeHash>,
        cache: CacheStatus,
        err: ValidationError,
    ) -> Outcome {
        Outcome {
            code_hash,
            cache,
            verdict: Verdict::from_error(err),
            environment: self.environment.id(),
            fuel_consumed: None,
        }
    }

    /// Instantiates `runnable` once without calling it (the second half of a pre-check).
    pub(crate) fn instantiate_once(
        &self,
        runnable: &Runnable,
        code_hash: &CodeHash,
    ) -> Result<(), ValidationError> {
        if let Some(executors) = &self.executors {
            let Some(artifact) = &runnable.artifact else {
                return Err(no_artifact().into());
            };
            let (result, _) = executors.execute(
                code_hash,
                artifact,
                &ValidationParams::default(),
                self.config.execution_timeout,
                true,
            );
            result?;
            return Ok(());
        }
        instantiate_only(&self.engine, &runnable.pre, code_hash, &self.config)?;
        Ok(())
    }

    /// The component of `code_hash` if it is in the in-memory cache: nothing read or hashed.
    pub(crate) fn cached(&self, code_hash: &CodeHash) -> Option<Runnable> {
        self.memory.get(code_hash).map(|(pre, artifact)| Runnable {
            pre,
            artifact,
            cache: CacheStatus::Hit,
            peak_memory: None,
        })
    }

    /// Like [`Self::runnable`] without the code: memory, then the store; a bad stored artifact
    /// is discarded, and then, as when nothing is stored, the code is unknown.
    pub(crate) fn runnable_by_hash(
        &self,
        code_hash: &CodeHash,
    ) -> Result<Runnable, (CacheStatus, ValidationError)> {
        if let Some(runnable) = self.cached(code_hash) {
            return Ok(runnable);
        }
        match self.load_stored(code_hash, None) {
            Ok(Some((loaded, size))) => {
                self.memory.insert(*code_hash, loaded.clone(), size);
                return Ok(Runnable::hit(loaded, size).0);
            }
            Ok(None) => {}
            Err(fault) => {
                tracing::warn!(code_hash = %code_hash, %fault, "discarding a bad stored artifact; its code is not at hand");
                if let Err(e) = self.store.remove(code_hash) {
                    tracing::warn!(code_hash = %code_hash, error = %e, "could not remove the bad artifact");
                }
            }
        }
        Err((
            CacheStatus::Miss,
            ServiceError::CodeUnknown(*code_hash).into(),
        ))
    }

    /// Look up → verify → construct → link; on a bad artifact evict and re-prepare.
    ///
    /// Preparation is single-flight: within this process (`InFlight`) and across processes
    /// sharing the store (the store's per-key lock). Whoever waited looks again before preparing,
    /// and finds the artifact the other one stored.
    /// On failure, also says which path was taken (`miss` or `repaired`).
    pub(crate) fn runnable(
        &self,
        code_hash: &CodeHash,
        code: &[u8],
    ) -> Result<Runnable, (CacheStatus, ValidationError)> {
        // A component constructed earlier in this process: nothing to read, hash or deserialize.
        if let Some(runnable) = self.cached(code_hash) {
            return Ok(runnable);
        }
        let (runnable, artifact_size) =
            self.runnable_from_store(code_hash, code, Purpose::Prepare, None)?;
        self.memory.insert(
            *code_hash,
            (runnable.pre.clone(), runnable.artifact.clone()),
            artifact_size,
        );
        Ok(runnable)
    }

    /// [`Self::runnable`] below the in-memory cache; also returns the artifact's size.
    /// `compiled`: an artifact a worker just compiled for `purpose`, used instead of compiling
    /// again when none is stored.
    fn runnable_from_store(
        &self,
        code_hash: &CodeHash,
        code: &[u8],
        purpose: Purpose,
        compiled: Option<Compiled>,
    ) -> Result<(Runnable, usize), (CacheStatus, ValidationError)> {
        let mut fault = match self.load_stored(code_hash, None) {
            Ok(Some((loaded, size))) => return Ok(Runnable::hit(loaded, size)),
            Ok(None) => None,
            Err(fault) => Some(fault),
        };
        let _ticket = self.in_flight.enter(*code_hash, self.config.prepare_wait);
        let lock = self.store.lock_for_prepare(code_hash);
        if fault.is_none() {
            // Someone else may have prepared it while we waited.
            match self.load_stored(code_hash, Some(lock.as_ref())) {
                Ok(Some((loaded, size))) => return Ok(Runnable::hit(loaded, size)),
                Ok(None) => {}
                Err(f) => fault = Some(f),
            }
        }
        let cache = match fault {
            None => CacheStatus::Miss,
            Some(fault) => {
                tracing::warn!(code_hash = %code_hash, %fault, "discarding a bad stored artifact and re-preparing");
                if let Err(e) = self.store.remove(code_hash) {
                    tracing::warn!(code_hash = %code_hash, error = %e, "could not remove the bad artifact");
                }
                CacheStatus::Repaired
            }
        };
        // Code that failed deterministically before is not compiled again.
        if compiled.is_none()
            && let Some(e) = self.remembered_failure(code_hash, purpose)
        {
            if let Some(lock) = lock {
                self.store.discard_lock(code_hash, lock);
            }
            return Err((cache, e.into()));
        }
        match self.prepare_fresh(code_hash, code, purpose, compiled) {
            Ok(((pre, artifact), size, peak_memory)) => Ok((
                Runnable {
                    pre,
                    artifact,
                    cache,
                    peak_memory,
                },
                size,
            )),
            Err(e) => {
                self.remember_failure(code_hash, &e);
                // Nothing is stored for code that does not prepare; leave no lock file behind.
                if let Some(lock) = lock {
                    self.store.discard_lock(code_hash, lock);
                }
                Err((cache, e.into()))
            }
        }
    }

    /// The deterministic failure the store remembers for `code_hash` that applies to `purpose`
    /// (a strict pre-check limit applies to pre-checks only). A record that cannot be read is
    /// no record: the code is compiled.
    fn remembered_failure(&self, code_hash: &CodeHash, purpose: Purpose) -> Option<PrepareError> {
        match self.store.failure(code_hash) {
            Ok(Some(record))
                if record.kind != FailureKind::PrecheckLimit || purpose == Purpose::Precheck =>
            {
                Some(PrepareError::Remembered {
                    kind: record.kind,
                    reason: record.reason,
                })
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(code_hash = %code_hash, error = %e, "cannot read the failure record; compiling");
                None
            }
        }
    }

    /// Records a deterministic preparation failure in the store, so the code is not compiled
    /// again (here or after a restart). Other failures are not the code's and are not recorded.
    fn remember_failure(&self, code_hash: &CodeHash, error: &PrepareError) {
        let kind = match error {
            PrepareError::InvalidCode(_) => FailureKind::InvalidCode,
            PrepareError::WrongWorld(_) => FailureKind::WrongWorld,
            PrepareError::MemoryExceeded { strict: true, .. }
            | PrepareError::CpuTimeExceeded { strict: true, .. } => FailureKind::PrecheckLimit,
            _ => return,
        };
        let record = FailureRecord::new(kind, error.to_string());
        if let Err(e) = self.store.record_failure(code_hash, &record) {
            tracing::warn!(code_hash = %code_hash, error = %e, "could not record the preparation failure");
        }
    }

    /// The stored artifact of `code_hash`, verified, constructed and linked; `Ok(None)` when
    /// there is none; `Err` with the reason when there is one but it is bad.
    ///
    /// `held` is `Some` when the caller holds the key's preparation lock (the inner `None` if it
    /// could not be had); `None` when it holds nothing and the load should wait for a concurrent
    /// preparation.
    fn load_stored(
        &self,
        code_hash: &CodeHash,
        held: Option<Option<&FileLock>>,
    ) -> Result<Option<(Loaded, usize)>, String> {
        let loaded = match held {
            None => self.store.load(code_hash),
            Some(lock) => self.store.load_locked(code_hash, lock),
        };
        let artifact = match loaded {
            Ok(Some(artifact)) => artifact,
            Ok(None) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let component = construct(&self.engine, &artifact).map_err(|e| e.to_string())?;
        let pre = link(&self.linker, &component)
            .map_err(|e| ExecuteError::Link(e.to_string()).to_string())?;
        Ok(Some(((pre, self.keep(&artifact)), artifact.bytes().len())))
    }

    /// Compiles `code` — in a worker under the limits of `purpose`, or in this process — and
    /// stores the artifact; also returns the artifact's size and the compiler's heap peak (from
    /// a worker). A failure to store is logged and otherwise ignored: the store is an
    /// optimisation, the compiled component is used now.
    fn prepare_fresh(
        &self,
        code_hash: &CodeHash,
        code: &[u8],
        purpose: Purpose,
        compiled: Option<Compiled>,
    ) -> Result<(Loaded, usize, Option<u64>), PrepareError> {
        let Some(workers) = &self.workers else {
            let (pre, size) = self.compile_here(code_hash, code)?;
            return Ok(((pre, None), size, None));
        };
        let started = Instant::now();
        let compiled = match compiled {
            Some(compiled) => compiled,
            None => workers.compile(code, purpose)?,
        };
        let (peak, cpu) = (compiled.peak_memory, compiled.cpu);
        tracing::debug!(code_hash = %code_hash, elapsed = ?started.elapsed(), ?cpu, peak_memory = peak, "compiled in a worker");
        let size = compiled.artifact().len();
        let artifact = VerifiedArtifact::compiled(compiled);
        // A fresh artifact of a compatible engine that does not load fails deterministically
        // (e.g. a table larger than the pool's slots), as `Component::new` does in process; an
        // OS refusal while loading it is this host's fault. The link is the contract check
        // (the worker does not link): only code that passes it is stored.
        let component = construct_raw(&self.engine, &artifact).map_err(compile_error)?;
        let pre = link(&self.linker, &component)?;
        if let Err(e) = self.store.store(code_hash, artifact.bytes()) {
            tracing::warn!(code_hash = %code_hash, error = %e, "could not store the artifact; continuing without it");
        }
        Ok(((pre, self.keep(&artifact)), size, Some(peak)))
    }

    /// The artifact's bytes to keep beside its component: only when executions run in workers.
    fn keep(&self, artifact: &VerifiedArtifact) -> Option<Arc<[u8]>> {
        self.executors.as_ref().map(|_| Arc::from(artifact.bytes()))
    }

    /// Compiles `code` in this process ([`Isolation::InProcess`]) and stores the artifact.
    fn compile_here(
        &self,
        code_hash: &CodeHash,
        code: &[u8],
    ) -> Result<(ValidationFunctionPre<HostState>, usize), PrepareError> {
        let started = Instant::now();
        let (component, pre) = compile(&self.engine, &self.linker, code)?;
        tracing::debug!(code_hash = %code_hash, elapsed = ?started.elapsed(), "compiled");
        // Without an artifact, its size is estimated from the code for the memory budget.
        let mut size = code.len().saturating_mul(4);
        match component.serialize() {
            Ok(artifact) => {
                size = artifact.len();
                if let Err(e) = self.store.store(code_hash, &artifact) {
                    tracing::warn!(code_hash = %code_hash, error = %e, "could not store the artifact; continuing without it");
                }
            }
            Err(e) => {
                tracing::warn!(code_hash = %code_hash, error = %format!("{e:#}"), "could not serialize the artifact")
            }
        }
        Ok((pre, size))
    }

    /// Verifies every artifact of this fingerprint: checks its checksum, constructs and links
    /// it, and removes the bad ones. Every entry with an artifact's name is checked whatever it
    /// is: one that is not a regular file, or is larger than
    /// [`MAX_ARTIFACT_BYTES`](crate::MAX_ARTIFACT_BYTES), is bad (and never read) and removed
    /// (a symlink itself; a directory only when empty, else it is reported as not removed).
    pub fn verify_store(&self) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport::default();
        for hash in self.store.hashes()? {
            report.checked += 1;
            match self.load_stored(&hash, None) {
                Ok(_) => {}
                Err(reason) => {
                    let removed = self.store.remove(&hash).is_ok();
                    report.bad.push((hash, reason, removed));
                }
            }
        }
        Ok(report)
    }
}

/// A component without its artifact where executions run in workers: a bug of this host.
fn no_artifact() -> ExecuteError {
    ExecuteError::Internal("the artifact to send to the execution worker is missing".into())
}

/// Execution workers run the worker executable, which has the first-party crypto extension (as
/// built, at its own prices) and nothing an embedder registers: such a host must execute in
/// process. Said at open, not at the first execution.
fn workers_have_extensions(config: &Config) -> Result<(), HostError> {
    use crate::extensions::crypto::{CRYPTO_ID, CryptoExtension};
    let first_party = CryptoExtension::new();
    for extension in config.extensions.iter() {
        let built_in = extension.id() == CRYPTO_ID
            && extension.digest() == crate::extensions::Extension::digest(&first_party);
        if !built_in {
            return Err(HostError::Extension(format!(
                "{} is not available in execution workers: they run the worker executable, which \
                 has only the first-party {CRYPTO_ID} as built; open this host with \
                 Isolation::InProcess to run an extension of your own",
                extension.id()
            )));
        }
    }
    Ok(())
}
