//! Load: 10,000 validations from 16 concurrent tasks over five guests, while another thread
//! corrupts and deletes artifacts in the store, and — when executions run in workers — a third
//! kills (`SIGKILL`) a random execution worker every 200 ms. Every verdict must be the right one
//! or, for a call whose worker was killed under it, `indeterminate` saying so; none may be lost
//! or hang, and the metrics must add up to the requests made and to the workers killed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pvf_host::{
    ExecutionPriority, RetryPolicy, ServiceConfig, ValidationError, ValidationParams, Verdict,
};

use crate::common::{adder_params, guest, store_dir, test_config, undying_params};
use crate::service::{metric, service_with};

const TASKS: usize = 16;
const PER_TASK: usize = 625;

/// What a request must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Expect {
    /// `valid` with this head.
    Adder(u64),
    /// `valid` (head checked against a first run).
    Undying,
    /// `invalid`: the guest returns `err`.
    Reject,
    /// `invalid`: the guest traps.
    Trap,
    /// `indeterminate`: the wall-clock timeout.
    Halt,
}

/// The `n`-th request of task `task`: the guest, params, priority and expectation.
fn request(task: usize, n: usize) -> (&'static str, ValidationParams, ExecutionPriority, Expect) {
    let i = task * PER_TASK + n;
    let priority = [ExecutionPriority::Approval, ExecutionPriority::Dispute][i % 2];
    match i % 50 {
        // One in fifty is `halt`, at backing priority (the 40 ms timeout).
        0 => (
            "halt",
            adder_params(0, 0),
            ExecutionPriority::Backing,
            Expect::Halt,
        ),
        k if k % 4 == 1 => ("undying", undying_params(50), priority, Expect::Undying),
        k if k % 8 == 2 => ("reject", adder_params(1, 1), priority, Expect::Reject),
        k if k % 8 == 6 => ("trap", adder_params(1, 1), priority, Expect::Trap),
        _ => {
            let (a, b) = (i as u64, 7);
            ("adder", adder_params(a, b), priority, Expect::Adder(a + b))
        }
    }
}

fn check(expect: Expect, verdict: &Verdict, undying_head: &[u8]) -> Result<(), String> {
    let ok = match (expect, verdict) {
        (Expect::Adder(sum), Verdict::Valid(r)) => r.head_data == sum.to_le_bytes(),
        (Expect::Undying, Verdict::Valid(r)) => r.head_data == undying_head,
        (Expect::Reject, Verdict::Invalid(ValidationError::Execute(e))) => {
            matches!(e, pvf_host::ExecuteError::GuestRejected(_))
        }
        (Expect::Trap, Verdict::Invalid(ValidationError::Execute(e))) => {
            matches!(e, pvf_host::ExecuteError::Trap(_))
        }
        (Expect::Halt, Verdict::Indeterminate(ValidationError::Execute(e))) => {
            matches!(e, pvf_host::ExecuteError::Timeout(_))
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{expect:?} got {verdict:?}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_validations_under_store_corruption() {
    let dir = store_dir();
    // No in-memory cache: every request goes through the store, so corruption is met.
    let config = ServiceConfig::new()
        .host(
            test_config()
                .execution_timeout(Duration::from_millis(40))
                .memory_cache_bytes(0),
        )
        .approval_timeout(Duration::from_secs(20))
        .execute_workers(2)
        .prepare_workers(2)
        .retry(RetryPolicy::default().delay(Duration::from_millis(10)));
    let service = service_with(dir.path(), config);
    let codes: BTreeMap<&str, Arc<[u8]>> = ["adder", "undying", "reject", "trap", "halt"]
        .into_iter()
        .map(|name| (name, Arc::from(guest(name))))
        .collect();
    let undying_head = match service
        .validate(
            codes["undying"].clone(),
            undying_params(50),
            ExecutionPriority::Approval,
        )
        .await
        .verdict
    {
        Verdict::Valid(r) => r.head_data,
        other => panic!("undying: {other:?}"),
    };

    // The vandal: every 100 ms flips a byte in, truncates or deletes a random stored artifact.
    let stop = Arc::new(AtomicBool::new(false));
    let damaged = Arc::new(AtomicUsize::new(0));
    let fp_dir = dir.path().join(service.host().fingerprint().to_hex());
    let vandal = std::thread::spawn({
        let (stop, damaged) = (stop.clone(), damaged.clone());
        move || {
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            let mut next = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            // Bounded: at most 6,000 rounds (~10 minutes) even if the test never says stop.
            for _ in 0..6_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
                let Ok(entries) = std::fs::read_dir(&fp_dir) else {
                    continue;
                };
                let artifacts: Vec<_> = entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "artifact"))
                    .collect();
                if artifacts.is_empty() {
                    continue;
                }
                let path = &artifacts[next() as usize % artifacts.len()];
                let Ok(mut bytes) = std::fs::read(path) else {
                    continue;
                };
                if bytes.is_empty() {
                    continue;
                }
                let done = match next() % 3 {
                    0 => {
                        let at = next() as usize % bytes.len();
                        bytes[at] ^= 1 << (next() % 8);
                        std::fs::write(path, &bytes)
                    }
                    1 => std::fs::write(path, &bytes[..bytes.len() / 2]),
                    _ => std::fs::remove_file(path),
                };
                if done.is_ok() {
                    damaged.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });

    // The killer: every 200 ms, SIGKILL to a random execution worker (worker modes only).
    let kills = Arc::new(AtomicUsize::new(0));
    let killer = (crate::common::isolation() != pvf_host::Isolation::InProcess).then(|| {
        let (stop, kills, service) = (stop.clone(), kills.clone(), service.clone());
        std::thread::spawn(move || {
            let mut seed = 0x2545_f491_4f6c_dd1du64;
            // Bounded like the vandal.
            for _ in 0..3_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
                let workers = service.host().execution_workers();
                if workers.is_empty() {
                    continue;
                }
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let worker = &workers[seed as usize % workers.len()];
                let Some(pid) = rustix::process::Pid::from_raw(worker.pid as i32) else {
                    continue;
                };
                if rustix::process::kill_process(pid, rustix::process::Signal::KILL).is_ok() {
                    kills.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    });

    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (service, codes, undying_head) =
                (service.clone(), codes.clone(), undying_head.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
                let mut killed = Vec::new();
                for n in 0..PER_TASK {
                    let (name, params, priority, expect) = request(task, n);
                    let outcome = service
                        .validate(codes[name].clone(), params, priority)
                        .await;
                    // A call whose worker was killed under it (and, at approval or dispute, under
                    // its retry too) is indeterminate, saying so: counted, not a wrong verdict.
                    if let Verdict::Indeterminate(ValidationError::Execute(
                        pvf_host::ExecuteError::Worker(why),
                    )) = &outcome.verdict
                    {
                        killed.push((expect, why.clone()));
                        continue;
                    }
                    *counts.entry(outcome.verdict.as_str()).or_default() += 1;
                    if let Err(e) = check(expect, &outcome.verdict, &undying_head) {
                        failures.push(format!("task {task} request {n} ({name}): {e}"));
                    }
                }
                (counts, failures, killed)
            })
        })
        .collect();
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut killed = Vec::new();
    for task in tasks {
        // None may hang: each task gets at most 10 minutes (CI's whole budget is far larger).
        let (task_counts, task_failures, task_killed) =
            tokio::time::timeout(Duration::from_secs(600), task)
                .await
                .expect("a task hung")
                .expect("a task panicked");
        for (verdict, n) in task_counts {
            *counts.entry(verdict).or_default() += n;
        }
        failures.extend(task_failures);
        killed.extend(task_killed);
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    vandal.join().expect("vandal thread");
    if let Some(killer) = killer {
        killer.join().expect("killer thread");
    }
    assert!(
        failures.is_empty(),
        "{} wrong verdicts, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    let expected = |want: fn(Expect) -> bool| {
        (0..TASKS)
            .flat_map(|t| (0..PER_TASK).map(move |n| request(t, n).3))
            .filter(|e| want(*e))
            .count()
    };
    let killed_where = |want: fn(Expect) -> bool| killed.iter().filter(|(e, _)| want(*e)).count();
    let is_valid = |e: Expect| matches!(e, Expect::Adder(_) | Expect::Undying);
    let is_invalid = |e: Expect| matches!(e, Expect::Reject | Expect::Trap);
    let is_halt = |e: Expect| e == Expect::Halt;
    let valid = expected(is_valid);
    let invalid = expected(is_invalid);
    let indeterminate = expected(is_halt);
    assert_eq!(valid + invalid + indeterminate, TASKS * PER_TASK);
    assert_eq!(
        counts.get("valid").copied().unwrap_or(0),
        valid - killed_where(is_valid)
    );
    assert_eq!(
        counts.get("invalid").copied().unwrap_or(0),
        invalid - killed_where(is_invalid)
    );
    assert_eq!(
        counts.get("indeterminate").copied().unwrap_or(0),
        indeterminate - killed_where(is_halt)
    );

    // The metrics add up to the requests made (plus the first undying call).
    let text = service.metrics_text().await;
    let total = (TASKS * PER_TASK + 1) as f64;
    let sum = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(sum("pvf_validations_total{"), total, "{text}");
    assert_eq!(sum("pvf_verdicts_total{"), total, "{text}");
    assert_eq!(sum("pvf_cache_total{"), total, "{text}");
    let verdicts = |v: &str| {
        sum(&format!(
            "pvf_verdicts_total{{priority=\"backing\",verdict=\"{v}\"}}"
        )) + sum(&format!(
            "pvf_verdicts_total{{priority=\"approval\",verdict=\"{v}\"}}"
        )) + sum(&format!(
            "pvf_verdicts_total{{priority=\"dispute\",verdict=\"{v}\"}}"
        ))
    };
    assert_eq!(
        verdicts("valid"),
        (valid - killed_where(is_valid) + 1) as f64
    );
    assert_eq!(
        verdicts("invalid"),
        (invalid - killed_where(is_invalid)) as f64
    );
    assert_eq!(
        verdicts("indeterminate"),
        (indeterminate - killed_where(is_halt) + killed.len()) as f64
    );
    // Every call attempt that met a dead (or unstartable) worker is accounted for: retried
    // under the policy (approval, dispute) or answered indeterminate (backing, or a retry that
    // met a kill too). And no call is blamed on a worker nobody killed.
    let restarts: BTreeMap<&str, u64> = service
        .host()
        .execution_worker_restarts()
        .into_iter()
        .map(|(cause, n)| (cause.as_str(), n))
        .collect();
    let failed_attempts = ["died", "backstop", "protocol", "start_failed"]
        .iter()
        .map(|c| restarts.get(c).copied().unwrap_or(0))
        .sum::<u64>();
    let worker_retries = metric(&text, r#"pvf_retries_total{class="worker"}"#);
    assert_eq!(
        killed.len() as f64 + worker_retries,
        failed_attempts as f64,
        "{restarts:?} {text}"
    );
    let kills = kills.load(Ordering::Relaxed) as u64;
    let died = restarts.get("died").copied().unwrap_or(0)
        + restarts.get("died_idle").copied().unwrap_or(0);
    assert!(died <= kills, "{died} worker deaths from {kills} kills");
    for (_, why) in &killed {
        assert!(why.contains("SIGKILL"), "not a kill: {why}");
    }
    eprintln!(
        "load: {kills} workers killed; {} calls killed under a worker ({} of them retried, {} answered indeterminate); restarts {restarts:?}",
        failed_attempts,
        worker_retries,
        killed.len()
    );
    assert_eq!(metric(&text, r#"pvf_queue_waiting{queue="execute"}"#), 0.0);
    let repaired = metric(&text, r#"pvf_cache_total{status="repaired"}"#);
    let damage = damaged.load(Ordering::Relaxed);
    eprintln!(
        "load: {} validations in {elapsed:?}; {damage} artifacts damaged; cache hit {} miss {} repaired {repaired}",
        TASKS * PER_TASK,
        metric(&text, r#"pvf_cache_total{status="hit"}"#),
        metric(&text, r#"pvf_cache_total{status="miss"}"#),
    );
    assert!(damage > 0, "the vandal damaged nothing");
}
