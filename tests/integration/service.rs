//! The async service: priorities, backpressure, cancellation, single flight, remembered
//! failures, retries, shutdown and the metrics endpoint — with real guests and a real store.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pvf_host::{
    CacheStatus, CodeHash, ExecutionPriority, PreparationPriority, RetryClass, RetryPolicy,
    ServiceConfig, ServiceError, ValidationError, ValidationService, Verdict,
};

use crate::common::{adder_params, assert_valid, guest, store_dir, test_config, undying_params};

/// Every test's overall bound: nothing here may hang CI.
const TEST_BOUND: Duration = Duration::from_secs(300);

/// A service over `dir`: test limits (300 ms backing timeout), the in-memory cache on, no
/// retries unless a test asks.
pub fn service_with(dir: &Path, config: ServiceConfig) -> ValidationService {
    let dir = cap_std::fs::Dir::open_ambient_dir(dir, cap_std::ambient_authority())
        .expect("open store dir");
    ValidationService::new(dir, config).expect("open service")
}

pub fn base_config() -> ServiceConfig {
    ServiceConfig::new()
        .host(test_config().memory_cache_bytes(1 << 30))
        .approval_timeout(Duration::from_secs(2))
        .retry(RetryPolicy::none())
}

/// A service over `dir` with `adder` and `halt` prepared (in memory); returns adder's code.
async fn with_adder_and_halt(dir: &Path, config: ServiceConfig) -> (ValidationService, Vec<u8>) {
    let service = service_with(dir, config);
    let adder = guest("adder");
    for code in [adder.clone(), guest("halt")] {
        service
            .prepare(code, PreparationPriority::Normal)
            .await
            .expect("prepare");
    }
    (service, adder)
}

/// Occupies an execution slot with `halt` at dispute priority: it times out after 2 s (the
/// approval/dispute timeout of [`base_config`]), long enough to queue work behind it on a loaded
/// machine.
async fn block_a_slot(service: &ValidationService) -> tokio::task::JoinHandle<pvf_host::Outcome> {
    let busy = service.queue_depths().execute_busy;
    let blocker = tokio::spawn({
        let service = service.clone();
        async move {
            service
                .validate(
                    guest("halt"),
                    adder_params(1, 1),
                    ExecutionPriority::Dispute,
                )
                .await
        }
    });
    until("halt runs", || {
        service.queue_depths().execute_busy == busy + 1
    })
    .await;
    blocker
}

/// Polls `cond` every 5 ms for at most 30 s.
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..6000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// The value of the metric line `name` (with labels, exactly as rendered), or 0 if absent.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == name).then(|| value.parse().expect("a number"))
        })
        .unwrap_or(0.0)
}

/// `GET path` from `addr` over HTTP/1.1; the whole response (status line, headers, body).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("set a read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    response
}

fn indeterminate_service_error(outcome: &pvf_host::Outcome) -> &ServiceError {
    match &outcome.verdict {
        Verdict::Indeterminate(ValidationError::Service(e)) => e,
        other => panic!("expected an indeterminate service error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispute_is_served_before_queued_backing_work() {
    tokio::time::timeout(TEST_BOUND, async {
        let dir = store_dir();
        let (service, adder) =
            with_adder_and_halt(dir.path(), base_config().execute_workers(1)).await;
        let undying = guest("undying");
        service
            .prepare(undying.clone(), PreparationPriority::Normal)
            .await
            .expect("prepare undying");

        // Saturate the only slot.
        let blocker = block_a_slot(&service).await;

        // Completion order stands for service order only if each job takes much longer than
        // the few microseconds between one job's end (its slot passes on) and its task recording
        // it: the queued jobs are `undying` at 500,000 rounds (tens of ms each); the dispute is
        // `adder`, so it must finish first by a wide margin.
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        let mut submit = |name: &'static str, priority| {
            let (service, order) = (service.clone(), order.clone());
            let (code, params) = if priority == ExecutionPriority::Dispute {
                (adder.clone(), adder_params(2, 3))
            } else {
                (undying.clone(), undying_params(500_000))
            };
            tasks.push(tokio::spawn(async move {
                let outcome = service.validate(code, params, priority).await;
                assert_eq!(outcome.verdict.as_str(), "valid", "{name}: {outcome:?}");
                order.lock().unwrap().push(name);
            }));
        };
        for (i, name) in ["backing-1", "backing-2", "backing-3", "backing-4"]
            .into_iter()
            .enumerate()
        {
            submit(name, ExecutionPriority::Backing);
            until("queued", || service.queue_depths().execute_waiting == i + 1).await;
        }
        submit("approval", ExecutionPriority::Approval);
        until("approval queued", || {
            service.queue_depths().execute_waiting == 5
        })
        .await;
        submit("dispute", ExecutionPriority::Dispute);
        until("dispute queued", || {
            service.queue_depths().execute_waiting == 6
        })
        .await;

        let halted = blocker.await.unwrap();
        assert_eq!(halted.verdict.as_str(), "indeterminate", "{halted:?}");
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            [
                "dispute",
                "approval",
                "backing-1",
                "backing-2",
                "backing-3",
                "backing-4"
            ]
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_overloaded_at_once_and_queued_work_completes() {
    tokio::time::timeout(TEST_BOUND, async {
        let dir = store_dir();
        let config = base_config().execute_workers(1).execute_queue(2);
        let (service, adder) = with_adder_and_halt(dir.path(), config).await;
        let blocker = block_a_slot(&service).await;
        let queued: Vec<_> = (0..2u64)
            .map(|i| {
                let (service, adder) = (service.clone(), adder.clone());
                tokio::spawn(async move {
                    service
                        .validate(adder, adder_params(i, 1), ExecutionPriority::Backing)
                        .await
                })
            })
            .collect();
        until("two queued", || service.queue_depths().execute_waiting == 2).await;

        // Even a dispute is turned away when the waiting room is full: backpressure, not a drop.
        // (Two dispute verdicts are indeterminate at the end: this one and halt's timeout.)
        let started = std::time::Instant::now();
        let refused = service
            .validate(
                adder.clone(),
                adder_params(9, 9),
                ExecutionPriority::Dispute,
            )
            .await;
        assert!(
            started.elapsed() < Duration::from_millis(250),
            "answered before halt ended"
        );
        assert_eq!(
            *indeterminate_service_error(&refused),
            ServiceError::Overloaded {
                queue: "execute",
                capacity: 2
            }
        );
        assert!(refused.verdict.as_str() == "indeterminate");

        blocker.await.unwrap();
        for (i, task) in queued.into_iter().enumerate() {
            let outcome = task.await.unwrap();
            assert_valid(&outcome, &(i as u64 + 1).to_le_bytes(), CacheStatus::Hit);
        }
        let text = service.metrics_text().await;
        assert_eq!(
            metric(
                &text,
                r#"pvf_verdicts_total{priority="dispute",verdict="indeterminate"}"#
            ),
            2.0
        );
        assert_eq!(
            metric(
                &text,
                r#"pvf_verdicts_total{priority="backing",verdict="valid"}"#
            ),
            2.0
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_queued_request_cancels_its_execution() {
    tokio::time::timeout(TEST_BOUND, async {
        let dir = store_dir();
        let (service, adder) =
            with_adder_and_halt(dir.path(), base_config().execute_workers(1)).await;
        let blocker = block_a_slot(&service).await;

        // The caller gives up after 50 ms: its future is dropped while it waits for the slot.
        let gave_up = tokio::time::timeout(
            Duration::from_millis(50),
            service.validate(
                adder.clone(),
                adder_params(1, 2),
                ExecutionPriority::Approval,
            ),
        )
        .await;
        assert!(gave_up.is_err(), "still queued behind halt after 50 ms");
        assert_eq!(service.queue_depths().execute_waiting, 0, "left the queue");

        blocker.await.unwrap();
        until("pool idle", || service.queue_depths().execute_busy == 0).await;
        let text = service.metrics_text().await;
        // Only halt executed; the cancelled approval never ran and returned no verdict.
        assert_eq!(
            metric(
                &text,
                r#"pvf_execution_duration_seconds_count{priority="dispute"}"#
            ),
            1.0
        );
        assert_eq!(
            metric(
                &text,
                r#"pvf_execution_duration_seconds_count{priority="approval"}"#
            ),
            0.0
        );
        assert_eq!(
            metric(&text, r#"pvf_validations_total{priority="approval"}"#),
            1.0
        );
        // The slot is free again for new work.
        let outcome = service
            .validate(adder, adder_params(4, 4), ExecutionPriority::Backing)
            .await;
        assert_valid(&outcome, &8u64.to_le_bytes(), CacheStatus::Hit);
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispute_raises_a_background_preparation_past_earlier_ones() {
    tokio::time::timeout(TEST_BOUND, async {
        let dir = store_dir();
        let service = service_with(dir.path(), base_config().prepare_workers(1));
        let (bulky, adder, undying) = (guest("bulky"), guest("adder"), guest("undying"));
        // bulky compiles for over a second in the only preparation slot; meanwhile adder and
        // then undying are queued behind it at background priority.
        service.heads_up(vec![bulky.into()]).await;
        until("bulky compiles", || {
            service.queue_depths().prepare_busy == 1
        })
        .await;
        service.heads_up(vec![adder.clone().into()]).await;
        until("adder waits", || {
            service.queue_depths().prepare_waiting == 1
        })
        .await;
        service.heads_up(vec![undying.clone().into()]).await;
        until("undying waits", || {
            service.queue_depths().prepare_waiting == 2
        })
        .await;
        // A dispute needs undying: it joins undying's flight and raises it to critical.
        let dispute = tokio::spawn({
            let service = service.clone();
            async move {
                service
                    .validate(undying, undying_params(3), ExecutionPriority::Dispute)
                    .await
            }
        });
        let outcome = dispute.await.unwrap();
        assert_eq!(outcome.verdict.as_str(), "valid", "{outcome:?}");
        // Both were still queued behind bulky when the dispute came (a flight started later
        // would have made the waiting count drop), so the order in which the two artifacts were
        // written is the order the slot served them: undying first, though it came second.
        let (adder_hash, undying_hash) = (CodeHash::of(&adder), CodeHash::of(&guest("undying")));
        // Adder's artifact file appears before its preparation is counted (the job writes the
        // store, then returns): wait for the count, which comes after the write.
        let ok_preparations = r#"pvf_preparations_total{outcome="ok"}"#;
        let mut text = String::new();
        for _ in 0..6000 {
            text = service.metrics_text().await;
            if metric(&text, ok_preparations) >= 3.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(metric(&text, ok_preparations), 3.0, "{text}");
        assert!(service.host().store().contains(&adder_hash), "adder stored");
        let fp = dir.path().join(service.host().fingerprint().to_hex());
        let written = |hash: &CodeHash| {
            std::fs::metadata(fp.join(format!("{hash}.artifact")))
                .and_then(|m| m.modified())
                .expect("artifact mtime")
        };
        assert!(
            written(&undying_hash) < written(&adder_hash),
            "undying (raised to critical) was prepared before adder (background, queued first)"
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_preparation() {
    tokio::time::timeout(TEST_BOUND, async {
        let dir = store_dir();
        let service = service_with(dir.path(), base_config());
        let undying = guest("undying");
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (service, undying) = (service.clone(), undying.clone());
                tokio::spawn(async move {
                    service
                        .validate(undying, undying_params(10), ExecutionPriority::Backing)
                        .await
                })
            })
            .collect();
        let mut heads = Vec::new();
        for task in tasks {
            match task.await.unwrap().verdict {
                Verdict::Valid(r) => heads.push(r.head_data),
                other => panic!("expected valid, got {other:?}"),
            }
        }
        assert!(
            heads.windows(2).all(|w| w[0] == w[1]),
            "same head everywhere"
        );
        let text = service.metrics_text().await;
        assert_eq!(
            metric(&text, r#"pvf_preparations_total{outcome="ok"}"#),
            1.0,
            "{text}"
        );
        assert_eq!(metric(&text, "pvf_store_artifacts"), 1.0);
        // A compilation in a worker reports its heap peak; in process there is none to report.
        let peaks = if crate::common::isolation().compiles_in_workers() {
            1.0
        } else {
            0.0
        };
        assert_eq!(
            metric(&text, "pvf_preparation_peak_memory_bytes_count"),
            peaks,
            "{text}"
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deterministic_preparation_failures_are_remembered() {
    tokio::time::timeout(TEST_BOUND, async {
        let dir = store_dir();
        let service = service_with(dir.path(), base_config());
        let not_a_component = wat::parse_str("(module)").unwrap();
        for _ in 0..3 {
            let outcome = service
                .validate(
                    not_a_component.clone(),
                    adder_params(1, 2),
                    ExecutionPriority::Backing,
                )
                .await;
            match &outcome.verdict {
                Verdict::Invalid(ValidationError::Prepare(_)) => {}
                other => panic!("expected invalid code, got {other:?}"),
            }
        }
        let text = service.metrics_text().await;
        assert_eq!(
            metric(&text, r#"pvf_preparations_total{outcome="failed"}"#),
            1.0,
            "compiled once"
        );
        assert_eq!(
            metric(
                &text,
                r#"pvf_verdicts_total{priority="backing",verdict="invalid"}"#
            ),
            3.0
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_preparation_cools_down_and_is_retried() {
    tokio::time::timeout(TEST_BOUND, async {
        let dir = store_dir();
        // bulky takes over a second to compile; its stored artifact loads in milliseconds.
        let config = base_config()
            .prepare_workers(1)
            .prepare_timeout(Duration::from_millis(500))
            .prepare_cooldown(Duration::from_millis(300));
        let service = service_with(dir.path(), config);
        let bulky = guest("bulky");
        let hash = CodeHash::of(&bulky);
        let first = service
            .prepare(bulky.clone(), PreparationPriority::Normal)
            .await;
        assert!(
            matches!(
                first,
                Err(ValidationError::Service(ServiceError::PrepareTimeout(_)))
            ),
            "{first:?}"
        );
        let second = service
            .prepare(bulky.clone(), PreparationPriority::Normal)
            .await;
        assert!(
            matches!(
                second,
                Err(ValidationError::Service(ServiceError::PrepareCoolingDown {
                    retry_in: Some(_),
                    ..
                }))
            ),
            "{second:?}"
        );
        // The compilation that timed out still finishes (it keeps its slot) and stores its
        // artifact; after the cooldown the next attempt loads it.
        until("bulky stored", || service.host().store().contains(&hash)).await;
        until("pool idle", || service.queue_depths().prepare_busy == 0).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let third = service
            .prepare(bulky, PreparationPriority::Normal)
            .await
            .expect("prepared");
        assert_eq!(third.cache, CacheStatus::Hit);
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_retries_a_timeout_once_and_backing_does_not() {
    tokio::time::timeout(TEST_BOUND, async {
        let dir = store_dir();
        let config = base_config()
            .approval_timeout(Duration::from_millis(100))
            .retry(RetryPolicy::default().delay(Duration::from_millis(10)));
        let service = service_with(dir.path(), config);
        let halt = guest("halt");
        for priority in [ExecutionPriority::Backing, ExecutionPriority::Approval] {
            let outcome = service
                .validate(halt.clone(), adder_params(1, 1), priority)
                .await;
            match &outcome.verdict {
                Verdict::Indeterminate(ValidationError::Execute(
                    pvf_host::ExecuteError::Timeout(_),
                )) => {}
                other => panic!("expected a timeout, got {other:?}"),
            }
        }
        let text = service.metrics_text().await;
        assert_eq!(
            metric(&text, r#"pvf_retries_total{class="timeout"}"#),
            1.0,
            "{text}"
        );
        assert_eq!(
            metric(
                &text,
                r#"pvf_execution_duration_seconds_count{priority="approval"}"#
            ),
            2.0
        );
        assert_eq!(
            metric(
                &text,
                r#"pvf_execution_duration_seconds_count{priority="backing"}"#
            ),
            1.0
        );
        assert_eq!(
            RetryPolicy::default().retries_for(ExecutionPriority::Dispute, RetryClass::Timeout),
            1
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_up_prepares_in_the_background_and_hash_only_validation_uses_it() {
    tokio::time::timeout(TEST_BOUND, async {
        let dir = store_dir();
        let service = service_with(dir.path(), base_config());
        let unknown = CodeHash::of(b"never prepared");
        let outcome = service
            .validate(unknown, adder_params(1, 2), ExecutionPriority::Backing)
            .await;
        assert_eq!(
            *indeterminate_service_error(&outcome),
            ServiceError::CodeUnknown(unknown)
        );

        let hashes = service
            .heads_up(vec![guest("undying").into(), b"not wasm".to_vec().into()])
            .await;
        let hash = *hashes[0].as_ref().expect("undying decodes");
        assert!(
            hashes[1].is_ok(),
            "garbage is only found out by the preparation"
        );
        until("undying stored", || service.host().store().contains(&hash)).await;
        let outcome = service
            .validate(hash, undying_params(3), ExecutionPriority::Backing)
            .await;
        assert_eq!(outcome.verdict.as_str(), "valid", "{outcome:?}");
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_queued_work_and_leaves_the_store_consistent() {
    tokio::time::timeout(TEST_BOUND, async {
        let dir = store_dir();
        let (service, adder) =
            with_adder_and_halt(dir.path(), base_config().execute_workers(1)).await;
        // A compilation in flight, a running execution and a queued one.
        service.heads_up(vec![guest("bulky").into()]).await;
        let blocker = block_a_slot(&service).await;
        let queued = tokio::spawn({
            let (service, adder) = (service.clone(), adder.clone());
            async move {
                service
                    .validate(adder, adder_params(1, 1), ExecutionPriority::Backing)
                    .await
            }
        });
        until("queued", || service.queue_depths().execute_waiting == 1).await;

        let report = service.shutdown(Duration::from_secs(120)).await;
        assert!(report.drained, "{report:?}");
        assert!(report.cancelled >= 1, "{report:?}");
        let queued = queued.await.unwrap();
        assert_eq!(
            *indeterminate_service_error(&queued),
            ServiceError::ShuttingDown
        );
        blocker.await.unwrap();
        let later = service
            .validate(adder, adder_params(1, 1), ExecutionPriority::Dispute)
            .await;
        assert_eq!(
            *indeterminate_service_error(&later),
            ServiceError::ShuttingDown
        );

        // Every artifact left behind verifies, and no temporary file is left.
        let report = service.verify_store().await.unwrap();
        assert!(report.bad.is_empty(), "{:?}", report.bad);
        let fp = dir.path().join(service.host().fingerprint().to_hex());
        for entry in std::fs::read_dir(fp).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.contains(".tmp"), "temporary file left: {name}");
        }
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_over_http_on_loopback_only() {
    tokio::time::timeout(TEST_BOUND, async {
        let dir = store_dir();
        let service = service_with(dir.path(), base_config());
        let outcome = service
            .validate(
                guest("adder"),
                adder_params(1, 2),
                ExecutionPriority::Approval,
            )
            .await;
        assert_valid(&outcome, &3u64.to_le_bytes(), CacheStatus::Miss);

        let refused = service.serve_metrics("0.0.0.0:0".parse().unwrap()).await;
        assert_eq!(
            refused.unwrap_err().kind(),
            std::io::ErrorKind::InvalidInput
        );

        let server = service
            .serve_metrics("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = server.local_addr();
        let get = |path: &'static str| tokio::task::spawn_blocking(move || http_get(addr, path));
        let response = get("/metrics").await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            response.contains("application/openmetrics-text"),
            "{response}"
        );
        let body = response.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(
            metric(
                body,
                r#"pvf_verdicts_total{priority="approval",verdict="valid"}"#
            ),
            1.0,
            "{body}"
        );
        assert_eq!(metric(body, r#"pvf_cache_total{status="miss"}"#), 1.0);
        assert_eq!(metric(body, "pvf_store_artifacts"), 1.0);
        assert!(metric(body, "pvf_store_bytes") > 0.0);
        assert!(
            body.contains("pvf_preparation_duration_seconds_bucket"),
            "{body}"
        );
        assert!(body.trim_end().ends_with("# EOF"), "{body}");
        let missing = get("/").await.unwrap();
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        server.stop();
    })
    .await
    .expect("bounded");
}
