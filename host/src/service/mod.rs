//! The embedding API: an async validation service for tokio applications.
//!
//! [`ValidationService`] wraps a [`ValidationHost`] (the synchronous transaction: look up, verify,
//! construct, on a bad artifact evict and re-prepare, execute, classify) with what a node needs
//! around it:
//!
//! * a **preparation pool** — at most [`ServiceConfig::prepare_workers`] jobs at a time, served
//!   by [`PreparationPriority`], one job per code hash however many callers ask (single flight),
//!   failures remembered (deterministic ones returned at once, others retried after a cooldown);
//! * an **execution pool** — at most [`ServiceConfig::execute_workers`] executions at a time,
//!   served by [`ExecutionPriority`] (dispute > approval > backing), with a bounded queue: when it
//!   is full the answer is `indeterminate` ([`ServiceError::Overloaded`]), never a silent drop;
//!   dropping the future of [`ValidationService::validate`] while it waits removes it from the
//!   queue;
//! * a **retry policy** as data ([`RetryPolicy`]);
//! * **observability** — a `tracing` span per request (`code_hash`, `priority`, `cache`,
//!   `verdict`) and Prometheus metrics ([`ValidationService::metrics_text`],
//!   [`ValidationService::serve_metrics`]).
//!
//! Every method is a plain `async fn` on the service; there is no event loop. Blocking work
//! never stalls the runtime: compilation and file access run on tokio's blocking threads;
//! an execution runs in `block_in_place` on a multi-threaded runtime (its worker's other tasks
//! move to another thread; this saves a thread hop per call) and on a blocking thread
//! otherwise.

mod gate;
mod http;
mod metrics;
mod preparer;
mod retry;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use cap_std::fs::Dir;
use tracing::Instrument;

use crate::config::Config;
use crate::error::{HostError, ServiceError, StoreError, ValidationError};
use crate::host::{
    CacheStatus, Outcome, Prepared, Runnable, ValidationHost, Verdict, VerifyReport,
};
use crate::prepare::decode;
use crate::store::{CodeHash, PrunePolicy, PruneReport};
use crate::types::ValidationParams;
use crate::worker::protocol::Purpose;

use gate::{Gate, GateError};
use metrics::{Gauges, Metrics};
use preparer::Preparer;

pub use http::MetricsServer;
pub use retry::{RetryClass, RetryPolicy};

/// Code larger than this is decoded and hashed on a blocking thread rather than in the caller's
/// task.
const INLINE_HASH_LIMIT: usize = 256 << 10;

/// Priority of an execution: disputes first, then approvals, then backing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExecutionPriority {
    /// Backing a candidate (the reference: 2 s timeout, one attempt).
    Backing,
    /// Approval checking (the reference: 12 s timeout, retries).
    Approval,
    /// A dispute: served before anything else.
    Dispute,
}

impl ExecutionPriority {
    /// `"backing"`, `"approval"` or `"dispute"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backing => "backing",
            Self::Approval => "approval",
            Self::Dispute => "dispute",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The preparation priority of the code an execution needs.
    fn preparation(self) -> PreparationPriority {
        match self {
            Self::Dispute => PreparationPriority::Critical,
            Self::Approval | Self::Backing => PreparationPriority::Normal,
        }
    }
}

impl fmt::Display for ExecutionPriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ExecutionPriority {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "backing" => Ok(Self::Backing),
            "approval" => Ok(Self::Approval),
            "dispute" => Ok(Self::Dispute),
            other => Err(format!(
                "unknown priority {other:?} (expected backing, approval or dispute)"
            )),
        }
    }
}

/// Priority of a preparation: critical (a dispute needs it) > normal > background (heads-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum PreparationPriority {
    /// Ahead of need ([`ValidationService::heads_up`]).
    Background = 0,
    /// Needed by a backing or approval execution, or a pre-check.
    Normal = 1,
    /// Needed by a dispute.
    Critical = 2,
}

/// The code to validate against: its bytes, or the hash of code prepared earlier.
#[derive(Debug, Clone)]
pub enum CodeRef {
    /// The code (a component, or the same zstd-compressed).
    Bytes(Arc<[u8]>),
    /// The hash of the (decompressed) code: the fast path when the code was prepared before.
    /// Without a good stored artifact, the verdict is `indeterminate`
    /// ([`ServiceError::CodeUnknown`]).
    Hash(CodeHash),
}

impl From<Vec<u8>> for CodeRef {
    fn from(code: Vec<u8>) -> Self {
        Self::Bytes(code.into())
    }
}

impl From<Arc<[u8]>> for CodeRef {
    fn from(code: Arc<[u8]>) -> Self {
        Self::Bytes(code)
    }
}

impl From<&[u8]> for CodeRef {
    fn from(code: &[u8]) -> Self {
        Self::Bytes(code.into())
    }
}

impl From<CodeHash> for CodeRef {
    fn from(hash: CodeHash) -> Self {
        Self::Hash(hash)
    }
}

/// Configuration of a [`ValidationService`]: the host's [`Config`] plus pools, queues,
/// timeouts and the retry policy. Build it with [`ServiceConfig::new`] and the setters.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    host: Config,
    prepare_workers: usize,
    execute_workers: usize,
    execute_queue: usize,
    approval_timeout: Duration,
    prepare_timeout: Duration,
    precheck_timeout: Duration,
    prepare_cooldown: Duration,
    prepare_attempts: u32,
    remembered_failures: usize,
    retry: RetryPolicy,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl ServiceConfig {
    /// The defaults:
    ///
    /// * `host`: [`Config::new`] — its `execution_timeout` (2 s) is the *backing* timeout.
    /// * `prepare_workers`: half the cores, at least 1 — each compilation is itself parallel
    ///   (wasmtime compiles functions on all cores), so more jobs would only queue for CPU.
    /// * `execute_workers`: the number of cores — an execution uses one core. With
    ///   [`Isolation::Workers`](crate::Isolation) or `PerJob` it is also the number of execution
    ///   worker processes ([`Config::execution_workers`] is set to it).
    /// * `execute_queue`: 1024 waiting executions; one more is `indeterminate` ("overloaded").
    /// * `approval_timeout`: 12 s wall clock for approval and dispute executions (the
    ///   reference's approval timeout).
    /// * `prepare_timeout`: 360 s wall clock for a preparation job needed by an execution or a
    ///   heads-up (the reference's lenient timeout); exceeding it is `indeterminate`.
    /// * `precheck_timeout`: 300 s wall clock for the preparation of a pre-check. With
    ///   [`Isolation::Workers`](crate::Isolation) the worker's strict limits decide first (60 s of
    ///   CPU time is `invalid`; its wall-clock backstop, 4x that, is `indeterminate`), so this
    ///   timeout, which stops waiting and is `indeterminate`, must not race them: it is longer.
    /// * `prepare_cooldown`: 15 min before a preparation that failed for a non-deterministic
    ///   reason is tried again; `prepare_attempts`: 5 attempts at most (both the reference's).
    /// * `remembered_failures`: the failures of 1024 code hashes are remembered (least recently
    ///   used forgotten first).
    /// * `retry`: [`RetryPolicy::default`] — backing one attempt; approval and dispute retry
    ///   once per failure class after 3 s.
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            host: Config::new(),
            prepare_workers: (cores / 2).max(1),
            execute_workers: cores,
            execute_queue: 1024,
            approval_timeout: Duration::from_secs(12),
            prepare_timeout: Duration::from_secs(360),
            precheck_timeout: Duration::from_secs(300),
            prepare_cooldown: Duration::from_secs(15 * 60),
            prepare_attempts: 5,
            remembered_failures: 1024,
            retry: RetryPolicy::default(),
        }
    }

    /// Sets the host's configuration (limits, budgets, backing timeout, caches).
    pub fn host(mut self, config: Config) -> Self {
        self.host = config;
        self
    }

    /// Sets how many preparation jobs run at once (at least 1).
    pub fn prepare_workers(mut self, workers: usize) -> Self {
        self.prepare_workers = workers.max(1);
        self
    }

    /// Sets how many executions run at once (at least 1).
    pub fn execute_workers(mut self, workers: usize) -> Self {
        self.execute_workers = workers.max(1);
        self
    }

    /// Sets how many executions may wait for a slot before requests are turned away.
    pub fn execute_queue(mut self, capacity: usize) -> Self {
        self.execute_queue = capacity;
        self
    }

    /// Sets the wall-clock limit of approval and dispute executions (default 12 s).
    pub fn approval_timeout(mut self, timeout: Duration) -> Self {
        self.approval_timeout = timeout;
        self
    }

    /// Sets the wall-clock limit of a preparation job (default 360 s).
    pub fn prepare_timeout(mut self, timeout: Duration) -> Self {
        self.prepare_timeout = timeout;
        self
    }

    /// Sets the wall-clock limit of a pre-check's preparation (default 300 s).
    pub fn precheck_timeout(mut self, timeout: Duration) -> Self {
        self.precheck_timeout = timeout;
        self
    }

    /// Sets the wait before retrying a preparation that failed non-deterministically (default
    /// 15 min).
    pub fn prepare_cooldown(mut self, cooldown: Duration) -> Self {
        self.prepare_cooldown = cooldown;
        self
    }

    /// Sets how many times a preparation is attempted at most (default 5).
    pub fn prepare_attempts(mut self, attempts: u32) -> Self {
        self.prepare_attempts = attempts.max(1);
        self
    }

    /// Sets how many code hashes' failures are remembered (default 1024).
    pub fn remembered_failures(mut self, entries: usize) -> Self {
        self.remembered_failures = entries.max(1);
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The host's configuration.
    pub fn get_host(&self) -> &Config {
        &self.host
    }

    fn timeout_for(&self, priority: ExecutionPriority) -> Duration {
        match priority {
            ExecutionPriority::Backing => self.host.execution_timeout,
            ExecutionPriority::Approval | ExecutionPriority::Dispute => self.approval_timeout,
        }
    }
}

/// How many requests wait and run, per pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepths {
    /// Preparation jobs waiting for a slot.
    pub prepare_waiting: usize,
    /// Preparation jobs running.
    pub prepare_busy: usize,
    /// Executions waiting for a slot.
    pub execute_waiting: usize,
    /// Executions running.
    pub execute_busy: usize,
}

/// What [`ValidationService::shutdown`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Queued requests that were answered `indeterminate` (shutting down) instead of run.
    pub cancelled: usize,
    /// Whether all running work finished within the grace period.
    pub drained: bool,
}

/// The async validation service. Cheap to clone (all clones share one service).
#[derive(Clone)]
pub struct ValidationService {
    inner: Arc<Inner>,
}

struct Inner {
    host: Arc<ValidationHost>,
    config: ServiceConfig,
    preparer: Arc<Preparer>,
    execute: Arc<Gate>,
    metrics: Arc<Metrics>,
    closing: AtomicBool,
}

impl fmt::Debug for ValidationService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidationService")
            .field("host", &self.inner.host)
            .field("config", &self.inner.config)
            .field("queues", &self.queue_depths())
            .finish()
    }
}

impl ValidationService {
    /// Opens a service whose artifact store lives in `store_dir` (see [`ValidationHost::new`]).
    pub fn new(store_dir: Dir, config: ServiceConfig) -> Result<Self, HostError> {
        // One execution worker per execution slot.
        let host = ValidationHost::new(
            store_dir,
            config
                .host
                .clone()
                .execution_workers(config.execute_workers),
        )?;
        Ok(Self::with_host(host, config))
    }

    /// Wraps an opened host; `config.host` is ignored in favour of the host's own.
    pub fn with_host(host: ValidationHost, mut config: ServiceConfig) -> Self {
        config.host = host.config().clone();
        let metrics = Metrics::new(
            host.environment().id().to_hex(),
            host.config().get_isolation().as_str(),
        );
        let (host, metrics) = (Arc::new(host), Arc::new(metrics));
        Self {
            inner: Arc::new(Inner {
                preparer: Arc::new(Preparer::new(&config, host.clone(), metrics.clone())),
                execute: Gate::new(config.execute_workers, Some(config.execute_queue)),
                metrics,
                host,
                config,
                closing: AtomicBool::new(false),
            }),
        }
    }

    /// The synchronous host underneath (store, fingerprint, configuration).
    pub fn host(&self) -> &ValidationHost {
        &self.inner.host
    }

    /// The configuration.
    pub fn config(&self) -> &ServiceConfig {
        &self.inner.config
    }

    /// Prepares `code` into the store at `priority` (single flight per code hash).
    pub async fn prepare(
        &self,
        code: impl Into<Arc<[u8]>>,
        priority: PreparationPriority,
    ) -> Result<Prepared, ValidationError> {
        let (code_hash, runnable) = self
            .prepare_runnable(code.into(), priority, Purpose::Prepare)
            .await?;
        Ok(Prepared {
            code_hash,
            cache: runnable.cache,
            peak_memory_bytes: runnable.peak_memory,
        })
    }

    /// Prepares `code` and instantiates it once without calling it: whether the code is
    /// acceptable as a validation function. The preparation is bounded by the pre-check
    /// timeout (default 300 s).
    pub async fn precheck(&self, code: impl Into<Arc<[u8]>>) -> Result<Prepared, ValidationError> {
        let timeout = self.inner.config.precheck_timeout;
        let (code_hash, runnable) = tokio::time::timeout(
            timeout,
            self.prepare_runnable(code.into(), PreparationPriority::Normal, Purpose::Precheck),
        )
        .await
        .map_err(|_| ServiceError::PrepareTimeout(timeout))??;
        let host = self.inner.host.clone();
        let (cache, peak_memory_bytes) = (runnable.cache, runnable.peak_memory);
        tokio::task::spawn_blocking(move || host.instantiate_once(&runnable, &code_hash))
            .await
            .map_err(|e| ServiceError::Worker(e.to_string()))??;
        Ok(Prepared {
            code_hash,
            cache,
            peak_memory_bytes,
        })
    }

    /// Decodes, hashes and prepares `code` through the preparation pool.
    async fn prepare_runnable(
        &self,
        code: Arc<[u8]>,
        priority: PreparationPriority,
        purpose: Purpose,
    ) -> Result<(CodeHash, Runnable), ValidationError> {
        self.check_open()?;
        let (hash, code) = self.decode(code).await?;
        let runnable = self
            .inner
            .preparer
            .prepare(hash, Some(code), priority, purpose)
            .await
            .map_err(|(_, e)| e)?;
        Ok((hash, runnable))
    }

    /// Validates one candidate at `priority`: prepares the code if needed (see the module
    /// documentation), waits for an execution slot, executes, and retries indeterminate
    /// failures as the [`RetryPolicy`] allows.
    ///
    /// Dropping the returned future while it waits for a slot removes it from the queue; an
    /// execution that already runs finishes (bounded by its timeout) and its result is dropped.
    pub async fn validate(
        &self,
        code: impl Into<CodeRef>,
        params: ValidationParams,
        priority: ExecutionPriority,
    ) -> Outcome {
        let span = tracing::info_span!(
            "validate",
            priority = priority.as_str(),
            code_hash = tracing::field::Empty,
            cache = tracing::field::Empty,
            verdict = tracing::field::Empty,
            attempts = tracing::field::Empty,
        );
        let code = code.into();
        async move {
            self.inner.metrics.request(priority);
            let params = Arc::new(params);
            let mut budget = retry::RetryBudget::default();
            let mut attempts = 1u32;
            let outcome = loop {
                let outcome = self.validate_once(&code, &params, priority).await;
                let retry = match &outcome.verdict {
                    Verdict::Indeterminate(e) => budget.take(&self.inner.config.retry, priority, e),
                    _ => None,
                };
                let Some(class) = retry else { break outcome };
                if self.inner.closing.load(Ordering::Relaxed) {
                    break outcome;
                }
                tracing::info!(
                    class = class.as_str(),
                    "retrying after an indeterminate failure"
                );
                self.inner.metrics.retry(class);
                attempts += 1;
                tokio::time::sleep(self.inner.config.retry.get_delay()).await;
            };
            let span = tracing::Span::current();
            if let Some(hash) = &outcome.code_hash {
                span.record("code_hash", tracing::field::display(hash));
            }
            span.record("cache", outcome.cache.as_str());
            span.record("verdict", outcome.verdict.as_str());
            span.record("attempts", attempts);
            self.inner.metrics.outcome(
                priority,
                outcome.cache,
                &outcome.verdict,
                outcome.fuel_consumed,
            );
            outcome
        }
        .instrument(span)
        .await
    }

    /// One attempt of [`Self::validate`].
    async fn validate_once(
        &self,
        code: &CodeRef,
        params: &Arc<ValidationParams>,
        priority: ExecutionPriority,
    ) -> Outcome {
        if let Err(e) = self.check_open() {
            return self.inner.host.failed(None, CacheStatus::Miss, e);
        }
        let (hash, code) = match code {
            CodeRef::Hash(hash) => (*hash, None),
            CodeRef::Bytes(bytes) => match self.decode(bytes.clone()).await {
                Ok((hash, code)) => (hash, Some(code)),
                Err(e) => return self.inner.host.failed(None, CacheStatus::Miss, e),
            },
        };
        let host = &self.inner.host;
        let runnable = match host.cached(&hash) {
            Some(runnable) => runnable,
            None => {
                let prepared = self
                    .inner
                    .preparer
                    .prepare(hash, code, priority.preparation(), Purpose::Prepare)
                    .await;
                match prepared {
                    Ok(runnable) => runnable,
                    Err((cache, e)) => return self.inner.host.failed(Some(hash), cache, e),
                }
            }
        };
        let cache = runnable.cache;
        let slot = self
            .inner
            .execute
            .acquire(Arc::new(AtomicU8::new(priority.index() as u8)))
            .await;
        let permit = match slot {
            Ok(permit) => permit,
            Err(GateError::Full { capacity }) => {
                let e = ServiceError::Overloaded {
                    queue: "execute",
                    capacity,
                };
                return self.inner.host.failed(Some(hash), cache, e.into());
            }
            Err(GateError::Closed) => {
                return self.inner.host.failed(
                    Some(hash),
                    cache,
                    ServiceError::ShuttingDown.into(),
                );
            }
        };
        let (host, params) = (host.clone(), params.clone());
        let timeout = self.inner.config.timeout_for(priority);
        let metrics = self.inner.metrics.clone();
        let job = move || {
            let _permit = permit;
            let started = Instant::now();
            let outcome = host.run(&runnable, &hash, &params, timeout);
            metrics.executed(priority, started.elapsed());
            outcome
        };
        // On a multi-threaded runtime the execution runs right here, the worker handing its other
        // tasks to another thread (`block_in_place`): a warm `adder` call is ~22 µs, and a hop to
        // the blocking pool and back cost ~60 µs more on the benchmark machine (BENCHMARKS.md).
        if tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread
        {
            return tokio::task::block_in_place(job);
        }
        match tokio::task::spawn_blocking(job).await {
            Ok(outcome) => outcome,
            Err(e) => self.inner.host.failed(
                Some(hash),
                cache,
                ServiceError::Worker(e.to_string()).into(),
            ),
        }
    }

    /// Starts preparing each of `codes` at background priority, ahead of need, and returns
    /// their hashes (or why a code cannot be prepared) without waiting for the preparations.
    pub async fn heads_up(&self, codes: Vec<Arc<[u8]>>) -> Vec<Result<CodeHash, ValidationError>> {
        let mut hashes = Vec::with_capacity(codes.len());
        for code in codes {
            let started = async {
                self.check_open()?;
                let (hash, code) = self.decode(code).await?;
                if self.inner.host.cached(&hash).is_none() {
                    self.inner
                        .preparer
                        .start(hash, code, PreparationPriority::Background);
                }
                Ok(hash)
            };
            hashes.push(started.await);
        }
        hashes
    }

    /// Prunes the store (see [`crate::ArtifactStore::prune`]) on a blocking thread.
    pub async fn prune(&self, policy: PrunePolicy) -> Result<PruneReport, StoreError> {
        let host = self.inner.host.clone();
        tokio::task::spawn_blocking(move || host.store().prune(&policy))
            .await
            .map_err(|e| join_as_store_error("prune", e))?
    }

    /// Verifies every stored artifact (see [`ValidationHost::verify_store`]) on a blocking
    /// thread.
    pub async fn verify_store(&self) -> Result<VerifyReport, StoreError> {
        let host = self.inner.host.clone();
        tokio::task::spawn_blocking(move || host.verify_store())
            .await
            .map_err(|e| join_as_store_error("verify", e))?
    }

    /// Stops taking work: queued requests are answered `indeterminate` ("shutting down"), later
    /// ones too; running preparations and executions are waited for up to `grace`. Every store
    /// write is atomic, so the store is consistent whether or not they finish.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        self.inner.closing.store(true, Ordering::SeqCst);
        let cancelled = self.inner.execute.close() + self.inner.preparer.gate.close();
        let drained = tokio::time::timeout(grace, async {
            self.inner.execute.idle().await;
            self.inner.preparer.gate.idle().await;
        })
        .await
        .is_ok();
        tracing::info!(cancelled, drained, "validation service shut down");
        ShutdownReport { cancelled, drained }
    }

    /// How many requests wait and run, per pool.
    pub fn queue_depths(&self) -> QueueDepths {
        QueueDepths {
            prepare_waiting: self.inner.preparer.gate.waiting(),
            prepare_busy: self.inner.preparer.gate.busy(),
            execute_waiting: self.inner.execute.waiting(),
            execute_busy: self.inner.execute.busy(),
        }
    }

    /// Every metric in the OpenMetrics text format (what a Prometheus scrape gets); see the
    /// `metrics` module table in ARCHITECTURE.md for the names. Lists the store on a blocking
    /// thread to report its size.
    pub async fn metrics_text(&self) -> String {
        let host = self.inner.host.clone();
        let store = tokio::task::spawn_blocking(move || {
            let list = host.store().list().ok()?;
            let current = list.iter().filter(|a| a.current && a.plausible());
            Some((
                current.clone().count(),
                current.map(|a| a.size).sum::<u64>(),
            ))
        })
        .await
        .ok()
        .flatten();
        let depths = self.queue_depths();
        let (memory_components, memory_bytes) = self.inner.host.memory_cache_usage();
        let host = self.inner.host.clone();
        let (workers, restarts) = tokio::task::spawn_blocking(move || {
            (host.execution_workers(), host.execution_worker_restarts())
        })
        .await
        .unwrap_or_default();
        self.inner.metrics.render(&Gauges {
            workers,
            restarts,
            prepare_waiting: depths.prepare_waiting,
            prepare_busy: depths.prepare_busy,
            execute_waiting: depths.execute_waiting,
            execute_busy: depths.execute_busy,
            store,
            memory_components,
            memory_bytes,
        })
    }

    /// Serves [`Self::metrics_text`] over HTTP at `GET /metrics` on `addr`, which must be a
    /// loopback address (port 0 picks a free port; see [`MetricsServer::local_addr`]). The
    /// server stops when the returned handle is dropped or [`MetricsServer::stop`] is called.
    pub async fn serve_metrics(&self, addr: SocketAddr) -> std::io::Result<MetricsServer> {
        http::serve(self.clone(), addr).await
    }

    fn check_open(&self) -> Result<(), ValidationError> {
        if self.inner.closing.load(Ordering::Relaxed) {
            Err(ServiceError::ShuttingDown.into())
        } else {
            Ok(())
        }
    }

    /// Decodes (zstd, size limit) and hashes `raw`; large code on a blocking thread.
    async fn decode(&self, raw: Arc<[u8]>) -> Result<(CodeHash, Arc<[u8]>), ValidationError> {
        let limit = self.inner.config.host.max_code_bytes;
        if raw.len() <= INLINE_HASH_LIMIT {
            decode_and_hash(raw, limit)
        } else {
            tokio::task::spawn_blocking(move || decode_and_hash(raw, limit))
                .await
                .map_err(|e| ServiceError::Worker(e.to_string()))?
        }
    }
}

fn decode_and_hash(raw: Arc<[u8]>, limit: usize) -> Result<(CodeHash, Arc<[u8]>), ValidationError> {
    let code: Arc<[u8]> = match decode(&raw, limit)? {
        std::borrow::Cow::Borrowed(_) => raw.clone(),
        std::borrow::Cow::Owned(decoded) => decoded.into(),
    };
    Ok((CodeHash::of(&code), code))
}

fn join_as_store_error(op: &str, e: tokio::task::JoinError) -> StoreError {
    StoreError::io(op, std::io::Error::other(e.to_string()))
}
