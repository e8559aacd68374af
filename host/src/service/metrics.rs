//! Prometheus metrics of the validation service (the `prometheus-client` crate), in the
//! OpenMetrics text format.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `pvf_validations_total` | counter: requests to `validate` | `priority` |
//! | `pvf_verdicts_total` | counter: verdicts returned (sums to `pvf_validations_total`) | `priority`, `verdict` |
//! | `pvf_cache_total` | counter: which path the artifact took, per validation | `status` (`hit`, `miss`, `repaired`) |
//! | `pvf_retries_total` | counter: retries made under the retry policy | `class` |
//! | `pvf_preparations_total` | counter: preparation jobs run (store loads and compilations) | `outcome` (`ok`, `failed`) |
//! | `pvf_preparation_duration_seconds` | histogram of preparation jobs | `outcome` |
//! | `pvf_execution_duration_seconds` | histogram of executions (instantiate + call) | `priority` |
//! | `pvf_queue_waiting` | gauge: requests waiting for a slot | `queue` (`prepare`, `execute`) |
//! | `pvf_queue_busy` | gauge: slots in use | `queue` |
//! | `pvf_store_artifacts` / `pvf_store_bytes` | gauges: artifacts of this environment in the store | |
//! | `pvf_memory_cache_components` / `pvf_memory_cache_bytes` | gauges: the in-memory cache | |
//! | `pvf_environment_info` | gauge, always 1: which execution environment and isolation this host runs | `environment` (the id's hex), `isolation` |
//! | `pvf_fuel_consumed_total` | counter: fuel consumed by executions that ran | |
//! | `pvf_execution_workers` | gauge: execution workers alive (they start on demand) | |
//! | `pvf_execution_worker_calls` | gauge: calls the worker now in a slot has served | `slot` |
//! | `pvf_execution_worker_rss_bytes` | gauge: resident memory of the worker in a slot | `slot` |
//! | `pvf_execution_worker_restarts` | gauge (monotonic): workers replaced since start, by cause | `cause` (`died`, `backstop`, `protocol`, `died_idle`, `start_failed`) |
//!
//! Counters and histograms change as work happens; gauges are refreshed when the text is
//! rendered (a scrape).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::host::{CacheStatus, Verdict};

use super::ExecutionPriority;
use super::retry::RetryClass;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PriorityLabel {
    priority: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    priority: &'static str,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnvironmentLabels {
    environment: String,
    isolation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: &'static str,
}

fn priority_label(priority: ExecutionPriority) -> PriorityLabel {
    PriorityLabel {
        priority: priority.as_str(),
    }
}

/// Seconds from 100 µs to ~52 s in doublings: from a warm adder call to a large compilation.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The service's metrics and their registry.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    validations: Family<PriorityLabel, Counter>,
    verdicts: Family<VerdictLabels, Counter>,
    cache: Family<StatusLabel, Counter>,
    retries: Family<ClassLabel, Counter>,
    preparations: Family<OutcomeLabel, Counter>,
    preparation_seconds: HistogramFamily<OutcomeLabel>,
    compile_peak_bytes: Histogram,
    execution_seconds: HistogramFamily<PriorityLabel>,
    waiting: Family<QueueLabel, Gauge>,
    busy: Family<QueueLabel, Gauge>,
    store_artifacts: Gauge,
    store_bytes: Gauge,
    memory_components: Gauge,
    memory_bytes: Gauge,
    fuel: Counter,
    workers: Gauge,
    worker_calls: Family<SlotLabel, Gauge>,
    worker_rss: Family<SlotLabel, Gauge>,
    worker_restarts: Family<CauseLabel, Gauge>,
}

/// An execution worker's slot.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SlotLabel {
    slot: u64,
}

/// Why an execution worker was replaced.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    cause: &'static str,
}

impl Metrics {
    /// The metrics of a service whose host runs `environment` (the id's hex) with `isolation`.
    pub(crate) fn new(environment: String, isolation: &'static str) -> Self {
        let mut registry = Registry::with_prefix("pvf");
        let validations = Family::default();
        let verdicts = Family::default();
        let cache = Family::default();
        let retries = Family::default();
        let preparations = Family::default();
        let preparation_seconds: HistogramFamily<OutcomeLabel> =
            Family::new_with_constructor(duration_histogram);
        // 1 MiB to 8 GiB in doublings: the compiler's heap peak, to size the memory limits.
        let compile_peak_bytes = Histogram::new(exponential_buckets((1u64 << 20) as f64, 2.0, 14));
        let execution_seconds: HistogramFamily<PriorityLabel> =
            Family::new_with_constructor(duration_histogram);
        let waiting = Family::default();
        let busy = Family::default();
        let (store_artifacts, store_bytes) = (Gauge::default(), Gauge::default());
        let (memory_components, memory_bytes) = (Gauge::default(), Gauge::default());
        registry.register(
            "validations",
            "Requests to validate a candidate",
            validations.clone(),
        );
        registry.register(
            "verdicts",
            "Verdicts returned (valid, invalid, indeterminate)",
            verdicts.clone(),
        );
        registry.register(
            "cache",
            "Which path the artifact took per validation (hit, miss, repaired)",
            cache.clone(),
        );
        registry.register(
            "retries",
            "Retries made under the retry policy, by failure class",
            retries.clone(),
        );
        registry.register(
            "preparations",
            "Preparation jobs run (store loads and compilations)",
            preparations.clone(),
        );
        registry.register(
            "preparation_duration_seconds",
            "Duration of preparation jobs",
            preparation_seconds.clone(),
        );
        registry.register(
            "preparation_peak_memory_bytes",
            "The compiler's live-heap peak of preparations compiled in a worker",
            compile_peak_bytes.clone(),
        );
        registry.register(
            "execution_duration_seconds",
            "Duration of executions (instantiate and call)",
            execution_seconds.clone(),
        );
        registry.register(
            "queue_waiting",
            "Requests waiting for a slot",
            waiting.clone(),
        );
        registry.register("queue_busy", "Slots in use", busy.clone());
        let info = Family::<EnvironmentLabels, Gauge>::default();
        info.get_or_create(&EnvironmentLabels {
            environment,
            isolation,
        })
        .set(1);
        registry.register(
            "environment_info",
            "The execution environment (its id) and the isolation mode of this host",
            info,
        );
        let fuel = Counter::default();
        registry.register(
            "fuel_consumed",
            "Fuel consumed by executions that ran",
            fuel.clone(),
        );
        let workers = Gauge::default();
        registry.register(
            "execution_workers",
            "Execution workers alive (started on demand)",
            workers.clone(),
        );
        let worker_calls = Family::<SlotLabel, Gauge>::default();
        registry.register(
            "execution_worker_calls",
            "Calls the execution worker now in each slot has served",
            worker_calls.clone(),
        );
        let worker_rss = Family::<SlotLabel, Gauge>::default();
        registry.register(
            "execution_worker_rss_bytes",
            "Resident memory of the execution worker in each slot",
            worker_rss.clone(),
        );
        let worker_restarts = Family::<CauseLabel, Gauge>::default();
        registry.register(
            "execution_worker_restarts",
            "Execution workers replaced since the service started, by cause (monotonic)",
            worker_restarts.clone(),
        );
        registry.register(
            "store_artifacts",
            "Artifacts of this environment in the store",
            store_artifacts.clone(),
        );
        registry.register(
            "store_bytes",
            "Bytes of this environment's artifacts in the store",
            store_bytes.clone(),
        );
        registry.register(
            "memory_cache_components",
            "Constructed components in the in-memory cache",
            memory_components.clone(),
        );
        registry.register(
            "memory_cache_bytes",
            "Artifact bytes of the components in the in-memory cache",
            memory_bytes.clone(),
        );
        Self {
            registry,
            validations,
            verdicts,
            cache,
            retries,
            preparations,
            preparation_seconds,
            compile_peak_bytes,
            execution_seconds,
            waiting,
            busy,
            store_artifacts,
            store_bytes,
            memory_components,
            memory_bytes,
            fuel,
            workers,
            worker_calls,
            worker_rss,
            worker_restarts,
        }
    }

    pub(crate) fn request(&self, priority: ExecutionPriority) {
        self.validations
            .get_or_create(&priority_label(priority))
            .inc();
    }

    pub(crate) fn outcome(
        &self,
        priority: ExecutionPriority,
        cache: CacheStatus,
        verdict: &Verdict,
        fuel_consumed: Option<u64>,
    ) {
        if let Some(fuel) = fuel_consumed {
            self.fuel.inc_by(fuel);
        }
        let label = VerdictLabels {
            priority: priority_label(priority).priority,
            verdict: verdict.as_str(),
        };
        self.verdicts.get_or_create(&label).inc();
        self.cache
            .get_or_create(&StatusLabel {
                status: cache.as_str(),
            })
            .inc();
    }

    pub(crate) fn retry(&self, class: RetryClass) {
        self.retries
            .get_or_create(&ClassLabel {
                class: class.as_str(),
            })
            .inc();
    }

    pub(crate) fn prepared(&self, ok: bool, elapsed: Duration) {
        let label = OutcomeLabel {
            outcome: if ok { "ok" } else { "failed" },
        };
        self.preparations.get_or_create(&label).inc();
        self.preparation_seconds
            .get_or_create(&label)
            .observe(elapsed.as_secs_f64());
    }

    /// A compilation in a worker peaked at `bytes` of heap.
    pub(crate) fn compile_peak(&self, bytes: u64) {
        self.compile_peak_bytes.observe(bytes as f64);
    }

    pub(crate) fn executed(&self, priority: ExecutionPriority, elapsed: Duration) {
        self.execution_seconds
            .get_or_create(&priority_label(priority))
            .observe(elapsed.as_secs_f64());
    }

    /// Sets the gauges and renders every metric as OpenMetrics text.
    pub(crate) fn render(&self, gauges: &Gauges) -> String {
        for (queue, waiting, busy) in [
            ("prepare", gauges.prepare_waiting, gauges.prepare_busy),
            ("execute", gauges.execute_waiting, gauges.execute_busy),
        ] {
            let label = QueueLabel { queue };
            self.waiting.get_or_create(&label).set(to_i64(waiting));
            self.busy.get_or_create(&label).set(to_i64(busy));
        }
        if let Some((artifacts, bytes)) = gauges.store {
            self.store_artifacts.set(to_i64(artifacts));
            self.store_bytes.set(bytes.try_into().unwrap_or(i64::MAX));
        }
        self.memory_components.set(to_i64(gauges.memory_components));
        self.memory_bytes.set(to_i64(gauges.memory_bytes));
        self.workers.set(to_i64(gauges.workers.len()));
        // Slots of workers that are gone are not reported as they were.
        self.worker_calls.clear();
        self.worker_rss.clear();
        for worker in &gauges.workers {
            let slot = SlotLabel {
                slot: worker.slot as u64,
            };
            self.worker_calls
                .get_or_create(&slot)
                .set(worker.calls.try_into().unwrap_or(i64::MAX));
            if let Some(rss) = worker.rss_bytes {
                self.worker_rss
                    .get_or_create(&slot)
                    .set(rss.try_into().unwrap_or(i64::MAX));
            }
        }
        for (cause, n) in &gauges.restarts {
            self.worker_restarts
                .get_or_create(&CauseLabel {
                    cause: cause.as_str(),
                })
                .set((*n).try_into().unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

fn to_i64(n: usize) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// Values sampled at scrape time.
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    pub(crate) prepare_waiting: usize,
    pub(crate) prepare_busy: usize,
    pub(crate) execute_waiting: usize,
    pub(crate) execute_busy: usize,
    /// Artifacts and bytes of this environment (`None` when the store could not be listed).
    pub(crate) store: Option<(usize, u64)>,
    pub(crate) memory_components: usize,
    pub(crate) memory_bytes: usize,
    /// The execution workers alive.
    pub(crate) workers: Vec<crate::ExecutionWorkerInfo>,
    /// Execution workers replaced, by cause.
    pub(crate) restarts: Vec<(crate::WorkerFailure, u64)>,
}
