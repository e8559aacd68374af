//! The preparation pool: bounded concurrency with priorities, single flight per code hash, and
//! a memory of failures (deterministic ones are returned at once; non-deterministic ones may be
//! retried after a cooldown, a bounded number of times).
//!
//! A "preparation job" is [`ValidationHost::runnable`]: load and verify the stored artifact or,
//! when there is none (or it is bad), compile the code. Store loads go through the pool too, so
//! a burst of requests after a restart cannot start more jobs than the pool has slots.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;
use tokio::sync::watch;
use tracing::Instrument;

use crate::error::{FailureClass, ServiceError, ValidationError};
use crate::host::{CacheStatus, Runnable, ValidationHost};
use crate::store::CodeHash;
use crate::worker::protocol::Purpose;

use super::gate::{Gate, GateError};
use super::metrics::Metrics;
use super::{PreparationPriority, ServiceConfig};

/// What a preparation job yields; on failure, also which path it took.
pub(crate) type Prepared = Result<Runnable, (CacheStatus, ValidationError)>;

/// One preparation in flight: its (raisable) priority and where its result appears.
#[derive(Clone)]
struct Flight {
    priority: Arc<AtomicU8>,
    done: watch::Receiver<Option<Prepared>>,
    with_code: bool,
}

/// A remembered failed preparation.
struct Failure {
    error: ValidationError,
    attempts: u32,
    at: Instant,
}

/// A preparation's identity: the code and what it is for (a pre-check compiles under other
/// limits, and its failures mean something else).
type Key = (CodeHash, Purpose);

/// See the module documentation.
pub(crate) struct Preparer {
    host: Arc<ValidationHost>,
    metrics: Arc<Metrics>,
    pub(crate) gate: Arc<Gate>,
    flights: Mutex<HashMap<Key, Flight>>,
    failures: Mutex<LruCache<Key, Failure>>,
    timeout: Duration,
    cooldown: Duration,
    attempts: u32,
}

impl Preparer {
    pub(crate) fn new(
        config: &ServiceConfig,
        host: Arc<ValidationHost>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            host,
            metrics,
            gate: Gate::new(config.prepare_workers, None),
            flights: Mutex::new(HashMap::new()),
            failures: Mutex::new(LruCache::new(
                NonZeroUsize::new(config.remembered_failures.max(1)).expect("at least one"),
            )),
            timeout: config.prepare_timeout,
            cooldown: config.prepare_cooldown,
            attempts: config.prepare_attempts.max(1),
        }
    }

    /// Prepares `hash` (with `code` if given) at `priority`, sharing a preparation already in
    /// flight for the same hash (and raising its priority if ours is higher).
    pub(crate) async fn prepare(
        self: &Arc<Self>,
        hash: CodeHash,
        code: Option<Arc<[u8]>>,
        priority: PreparationPriority,
        purpose: Purpose,
    ) -> Prepared {
        let key = (hash, purpose);
        // At most two rounds: a shared flight without code that found nothing is followed by one
        // with our code.
        for _ in 0..2 {
            if let Some(error) = self.remembered(&key) {
                return Err((CacheStatus::Miss, error));
            }
            let flight = self.join_or_start(key, code.clone(), priority);
            let result = wait(flight.done).await;
            let unknown = matches!(
                result,
                Err((_, ValidationError::Service(ServiceError::CodeUnknown(_))))
            );
            if unknown && !flight.with_code && code.is_some() {
                continue;
            }
            return result;
        }
        Err((CacheStatus::Miss, ServiceError::CodeUnknown(hash).into()))
    }

    /// Starts a preparation without waiting for it (a heads-up).
    pub(crate) fn start(
        self: &Arc<Self>,
        hash: CodeHash,
        code: Arc<[u8]>,
        priority: PreparationPriority,
    ) {
        let key = (hash, Purpose::Prepare);
        if self.remembered(&key).is_none() {
            self.join_or_start(key, Some(code), priority);
        }
    }

    /// The failure to return at once instead of preparing, if any.
    fn remembered(&self, key: &Key) -> Option<ValidationError> {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let failure = failures.get(key)?;
        match failure.error.class() {
            FailureClass::Deterministic => Some(failure.error.clone()),
            FailureClass::Indeterminate => {
                let reason = failure.error.to_string();
                if failure.attempts >= self.attempts {
                    return Some(
                        ServiceError::PrepareCoolingDown {
                            reason,
                            retry_in: None,
                        }
                        .into(),
                    );
                }
                let since = failure.at.elapsed();
                (since < self.cooldown).then(|| {
                    ServiceError::PrepareCoolingDown {
                        reason,
                        retry_in: Some(self.cooldown - since),
                    }
                    .into()
                })
            }
        }
    }

    fn join_or_start(
        self: &Arc<Self>,
        key: Key,
        code: Option<Arc<[u8]>>,
        priority: PreparationPriority,
    ) -> Flight {
        let (hash, purpose) = key;
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(flight) = flights.get(&key)
            && (flight.with_code || code.is_none())
        {
            flight.priority.fetch_max(priority as u8, Ordering::Relaxed);
            return flight.clone();
        }
        let (tx, rx) = watch::channel(None);
        let flight = Flight {
            priority: Arc::new(AtomicU8::new(priority as u8)),
            done: rx,
            with_code: code.is_some(),
        };
        flights.insert(key, flight.clone());
        let this = self.clone();
        let slot_priority = flight.priority.clone();
        let span = tracing::info_span!(
            "prepare",
            code_hash = %hash,
            priority = ?priority,
            with_code = flight.with_code,
            cache = tracing::field::Empty,
        );
        tokio::spawn(
            async move {
                let result = this.run(hash, code, slot_priority.clone(), purpose).await;
                this.remember(&key, &result);
                {
                    let mut flights = this.flights.lock().unwrap_or_else(|e| e.into_inner());
                    // A later flight with code may have replaced a code-less one: remove only ours.
                    if flights
                        .get(&key)
                        .is_some_and(|f| Arc::ptr_eq(&f.priority, &slot_priority))
                    {
                        flights.remove(&key);
                    }
                }
                // Nobody may be waiting any more (all callers dropped their futures): fine.
                let _ = tx.send(Some(result));
            }
            .instrument(span),
        );
        flight
    }

    /// One preparation job: a slot, then the job on a blocking thread, under the timeout.
    async fn run(
        &self,
        hash: CodeHash,
        code: Option<Arc<[u8]>>,
        priority: Arc<AtomicU8>,
        purpose: Purpose,
    ) -> Prepared {
        let permit = match self.gate.acquire(priority).await {
            Ok(permit) => permit,
            Err(GateError::Closed | GateError::Full { .. }) => {
                return Err((CacheStatus::Miss, ServiceError::ShuttingDown.into()));
            }
        };
        let started = Instant::now();
        // The slot travels with the job: a job that outlives its timeout keeps its slot until
        // it really ends, so the pool never runs more compilations than it has slots.
        let host = self.host.clone();
        let job = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            match (code, purpose) {
                (Some(code), Purpose::Prepare) => host.runnable(&hash, &code),
                (Some(code), Purpose::Precheck) => host.precheck_runnable(&hash, &code),
                (None, _) => host.runnable_by_hash(&hash),
            }
        });
        let result = match tokio::time::timeout(self.timeout, job).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err((
                CacheStatus::Miss,
                ServiceError::Worker(e.to_string()).into(),
            )),
            Err(_) => {
                tracing::warn!(code_hash = %hash, timeout = ?self.timeout, "preparation timed out");
                Err((
                    CacheStatus::Miss,
                    ServiceError::PrepareTimeout(self.timeout).into(),
                ))
            }
        };
        self.metrics.prepared(result.is_ok(), started.elapsed());
        if let Ok(Runnable {
            peak_memory: Some(peak),
            ..
        }) = &result
        {
            self.metrics.compile_peak(*peak);
        }
        let span = tracing::Span::current();
        match &result {
            Ok(runnable) => span.record("cache", runnable.cache.as_str()),
            Err((cache, _)) => span.record("cache", cache.as_str()),
        };
        tracing::debug!(elapsed = ?started.elapsed(), ok = result.is_ok(), "preparation job done");
        result
    }

    /// Remembers a failure (or forgets one after a success). Shutdown and unknown code are not
    /// failures of the code and are not remembered.
    fn remember(&self, key: &Key, result: &Prepared) {
        let hash = &key.0;
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(_) => {
                failures.pop(key);
            }
            Err((
                _,
                ValidationError::Service(ServiceError::ShuttingDown | ServiceError::CodeUnknown(_)),
            )) => {}
            Err((_, error)) => {
                let attempts = failures.peek(key).map_or(0, |f| f.attempts) + 1;
                tracing::debug!(code_hash = %hash, attempts, %error, "preparation failed");
                failures.put(
                    *key,
                    Failure {
                        error: error.clone(),
                        attempts,
                        at: Instant::now(),
                    },
                );
            }
        }
    }
}

/// Waits for a flight's result.
async fn wait(mut done: watch::Receiver<Option<Prepared>>) -> Prepared {
    match done.wait_for(Option::is_some).await {
        Ok(result) => result.clone().expect("waited for Some"),
        // The flight task ended without a result: it panicked.
        Err(_) => Err((
            CacheStatus::Miss,
            ServiceError::Worker("the preparation task ended without a result".into()).into(),
        )),
    }
}
