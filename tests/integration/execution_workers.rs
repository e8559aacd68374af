//! Execution workers ([`Isolation::Workers`] and [`Isolation::PerJob`]): parity with execution in
//! process, crash containment (a worker killed, stopped, dying or sending garbage under a call is
//! `indeterminate` and replaced), no worker outliving its host, and the sandbox inside a worker
//! and a per-job child. These tests pick their modes themselves, so they run the same under
//! every `PVF_TEST_ISOLATION`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use pvf_host::{
    ExecuteError, Fault, Isolation, ValidationError, ValidationHost, ValidationParams, Verdict,
    WorkerFailure,
};
use pvf_test_guests::batches;

use crate::common::{adder_params, guest, host_with, pvf, store_dir, test_config, undying_params};

/// The modes that run executions in workers.
const WORKER_MODES: [Isolation; 2] = [Isolation::Workers, Isolation::PerJob];

/// A host in `isolation` whose workers obey test faults and probes.
fn host_in(dir: &Path, isolation: Isolation, timeout: Duration) -> ValidationHost {
    host_with(
        dir,
        test_config()
            .isolation(isolation)
            .execution_timeout(timeout)
            .memory_cache_bytes(1 << 30)
            .worker_faults(true),
    )
}

fn restarts(host: &ValidationHost, cause: WorkerFailure) -> u64 {
    host.execution_worker_restarts()
        .into_iter()
        .find(|(c, _)| *c == cause)
        .map_or(0, |(_, n)| n)
}

/// The `ExecuteError::Worker` message of an outcome that must be one.
fn worker_error(verdict: &Verdict) -> &str {
    match verdict {
        Verdict::Indeterminate(ValidationError::Execute(ExecuteError::Worker(message))) => message,
        other => panic!("expected an execution worker failure, got {other:?}"),
    }
}

fn assert_adder_valid(host: &ValidationHost, what: &str) {
    let outcome = host.validate(&guest("adder"), &adder_params(40, 2));
    match &outcome.verdict {
        Verdict::Valid(r) => assert_eq!(r.head_data, 42u64.to_le_bytes(), "{what}"),
        other => panic!("{what}: adder gave {other:?}"),
    }
}

/// Waits (at most 20 s) until a worker of `host` is busy; its pid.
fn busy_worker(host: &ValidationHost) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(w) = host
            .execution_workers()
            .into_iter()
            .find(|w| w.busy && w.pid != 0)
        {
            return w.pid;
        }
        assert!(Instant::now() < deadline, "no worker became busy");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn signal(pid: u32, signal: rustix::process::Signal, group: bool) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
    if group {
        rustix::process::kill_process_group(pid, signal).expect("signal the worker's group");
    } else {
        rustix::process::kill_process(pid, signal).expect("signal the worker");
    }
}

/// What every mode must agree on: verdict, error variant, result, fuel.
fn summary(outcome: &pvf_host::Outcome) -> String {
    let verdict = match &outcome.verdict {
        Verdict::Valid(result) => format!("valid {result:?}"),
        Verdict::Invalid(ValidationError::Execute(e)) => {
            let variant = format!("{e:?}");
            let variant = variant.split('(').next().unwrap_or_default().to_owned();
            format!("invalid {variant}: {e}")
        }
        Verdict::Invalid(e) => format!("invalid {e}"),
        Verdict::Indeterminate(ValidationError::Execute(ExecuteError::Timeout(_))) => {
            "indeterminate timeout".into()
        }
        Verdict::Indeterminate(e) => format!("indeterminate {e}"),
    };
    format!("{verdict}; fuel {:?}", outcome.fuel_consumed)
}

/// Every bundled guest the contract's tests run gives the same verdict, error variant and text,
/// result (head data byte for byte) and fuel in all three modes, the determinism probe
/// included; a second call (warm: the worker holds the component) too.
#[test]
fn every_bundled_guest_agrees_in_every_mode() {
    let batch = ValidationParams::new(vec![0; 8], batches::signed_batch(8, 3), 7);
    let cases: Vec<(&str, ValidationParams)> = vec![
        ("adder", adder_params(5, 7)),
        ("undying", undying_params(200)),
        ("reject", adder_params(1, 1)),
        ("trap", adder_params(1, 1)),
        ("halt", adder_params(0, 0)),
        ("memory_bomb", adder_params(0, 0)),
        ("stack_bomb", adder_params(0, 0)),
        ("nondeterminism_probe", adder_params(3, 4)),
        ("sandbox_escape", adder_params(0, 0)),
        ("stdout_flood", adder_params(0, 0)),
        ("composed_adder", adder_params(5, 7)),
        (
            "crypto_probe",
            ValidationParams::new(vec![0; 8], vec![5, 1, 0, 0, 0], 7),
        ),
        ("sig_verify", batch.clone()),
        ("sig_verify_wasm", batch),
    ];
    let modes = [Isolation::InProcess, Isolation::Workers, Isolation::PerJob];
    let dirs: Vec<_> = modes.iter().map(|_| store_dir()).collect();
    let hosts: Vec<ValidationHost> = modes
        .iter()
        .zip(&dirs)
        .map(|(mode, dir)| {
            host_with(
                dir.path(),
                test_config()
                    .isolation(*mode)
                    .execution_timeout(Duration::from_millis(500))
                    .fuel(200_000_000)
                    .memory_cache_bytes(1 << 30),
            )
        })
        .collect();
    for (name, params) in &cases {
        let code = guest(name);
        for round in ["cold", "warm"] {
            let summaries: Vec<String> = hosts
                .iter()
                .map(|host| summary(&host.validate(&code, params)))
                .collect();
            for (mode, s) in modes.iter().zip(&summaries).skip(1) {
                assert_eq!(
                    s,
                    &summaries[0],
                    "{name} ({round}): {} differs from in-process",
                    mode.as_str()
                );
            }
        }
    }
    for host in &hosts[1..] {
        for (cause, n) in host.execution_worker_restarts() {
            assert_eq!(n, 0, "{cause:?}: no worker may have been replaced");
        }
    }
}

/// Runs `halt` on `host` and sends `sig` to the worker (its process group with `group`) once it
/// is busy with the call; the `ExecuteError::Worker` message the call ends with.
fn signal_under_a_call(host: &ValidationHost, sig: rustix::process::Signal, group: bool) -> String {
    let halt = guest("halt");
    std::thread::scope(|s| {
        let call = s.spawn(|| host.validate(&halt, &adder_params(0, 0)));
        signal(busy_worker(host), sig, group);
        let outcome = call.join().expect("the call");
        worker_error(&outcome.verdict).to_owned()
    })
}

/// A worker killed (`SIGKILL`) under a call: that call is `indeterminate` saying so, the worker
/// is replaced, and the next call is valid.
#[test]
fn a_worker_killed_under_a_call_is_indeterminate_and_replaced() {
    for mode in WORKER_MODES {
        let dir = store_dir();
        let host = host_in(dir.path(), mode, Duration::from_secs(5));
        assert_adder_valid(&host, "before");
        let message = signal_under_a_call(&host, rustix::process::Signal::KILL, false);
        assert!(message.contains("SIGKILL"), "{}: {message}", mode.as_str());
        assert_eq!(restarts(&host, WorkerFailure::Died), 1, "{}", mode.as_str());
        assert_adder_valid(&host, "after the kill");
    }
}

/// A worker stopped (`SIGSTOP`) under a call never answers: the host's wall-clock backstop (twice
/// the execution timeout) kills it, the call is `indeterminate`, the next call valid.
#[test]
fn a_stopped_worker_is_killed_by_the_backstop() {
    for mode in WORKER_MODES {
        let dir = store_dir();
        let timeout = Duration::from_millis(400);
        let host = host_in(dir.path(), mode, timeout);
        assert_adder_valid(&host, "before");
        let started = Instant::now();
        let message = signal_under_a_call(&host, rustix::process::Signal::STOP, true);
        assert!(message.contains("backstop"), "{}: {message}", mode.as_str());
        // Bounded, not timed: the call ended at all (no hang), after at least the backstop.
        assert!(started.elapsed() >= timeout * 2, "{:?}", started.elapsed());
        assert_eq!(restarts(&host, WorkerFailure::Backstop), 1);
        assert_adder_valid(&host, "after the backstop");
    }
}

/// A worker that answers with garbage or a truncated message, exits, aborts, hangs or allocates
/// past its memory cap: the call is `indeterminate` saying what happened, the worker is replaced,
/// the next call is valid.
#[test]
fn misbehaving_workers_are_indeterminate_and_replaced() {
    let cases = [
        (Fault::Garbage, WorkerFailure::Protocol, "unreadable"),
        (Fault::Truncated, WorkerFailure::Protocol, "unreadable"),
        (Fault::Exit, WorkerFailure::Died, "exited with code 3"),
        // As pid 1 of its pid namespace a worker ignores its own SIGABRT, so glibc's abort ends
        // in SIGSEGV; a per-job child is not pid 1 and dies of SIGABRT. Either way, a signal.
        (Fault::Abort, WorkerFailure::Died, "killed by signal"),
        (Fault::Hang, WorkerFailure::Backstop, "backstop"),
        // 8 GiB of heap outside linear memory: the worker's memory cap ends it, not the machine.
        (Fault::Allocate, WorkerFailure::Died, "killed by signal"),
    ];
    for mode in WORKER_MODES {
        let dir = store_dir();
        let host = host_in(dir.path(), mode, Duration::from_millis(300));
        assert_adder_valid(&host, "before");
        for (fault, cause, says) in cases {
            let before = restarts(&host, cause);
            host.inject_worker_fault(fault);
            let outcome = host.validate(&guest("adder"), &adder_params(1, 2));
            let message = worker_error(&outcome.verdict);
            assert!(
                message.contains(says),
                "{} {fault:?}: {message}",
                mode.as_str()
            );
            assert_eq!(restarts(&host, cause), before + 1, "{fault:?}");
            assert_adder_valid(&host, &format!("after {fault:?}"));
        }
    }
}

/// A worker found dead between calls is replaced before the next call, which runs normally.
#[test]
fn a_worker_that_died_idle_costs_no_verdict() {
    for mode in WORKER_MODES {
        let dir = store_dir();
        let host = host_in(dir.path(), mode, Duration::from_secs(2));
        assert_adder_valid(&host, "before");
        let pid = host.execution_workers()[0].pid;
        signal(pid, rustix::process::Signal::KILL, false);
        wait_gone_or_zombie(&[pid]);
        assert_adder_valid(&host, "after an idle death");
        assert_eq!(restarts(&host, WorkerFailure::DiedIdle), 1);
        assert_eq!(restarts(&host, WorkerFailure::Died), 0);
    }
}

/// The sandbox probes, run inside an execution worker and inside a per-job child: no file, no
/// socket, no exec, no ptrace; a fork only where the per-job worker needs it (in the worker, never
/// in its children).
#[test]
fn the_sandbox_holds_inside_execution_workers_and_per_job_children() {
    for mode in WORKER_MODES {
        let dir = store_dir();
        let host = host_in(dir.path(), mode, Duration::from_secs(2));
        let probe = |action: &str| host.probe_execution_worker(action);
        let open = probe("open-outside /etc/hostname").expect("open is answered, not killed");
        assert!(
            open.starts_with("denied"),
            "{}: open: {open}",
            mode.as_str()
        );
        for action in ["socket", "execve", "ptrace", "fork"] {
            let err = probe(action).expect_err(action);
            let text = err.to_string();
            assert!(
                text.contains("SIGSYS"),
                "{}: {action} must be killed by seccomp: {text}",
                mode.as_str()
            );
        }
        // The host still validates after its workers died of the probes.
        assert_adder_valid(&host, "after the probes");
    }
}

/// Fails unless every process in `pids` is gone (or a zombie, which runs nothing), within 20 s.
fn wait_gone_or_zombie(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alive: Vec<u32> = pids.iter().copied().filter(|p| running(*p)).collect();
        if alive.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "still running: {alive:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` exists and is not a zombie.
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            !state.is_some_and(|s| s.starts_with('Z') || s.starts_with('X'))
        }
        Err(_) => false,
    }
}

/// `pid` and its descendants, from `/proc/<pid>/task/*/children`.
fn process_tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() && all.len() < 1000 {
        let p = all[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for task in tasks.flatten() {
                let children = task.path().join("children");
                if let Ok(text) = std::fs::read_to_string(children) {
                    all.extend(
                        text.split_whitespace()
                            .filter_map(|c| c.parse::<u32>().ok()),
                    );
                }
            }
        }
        i += 1;
    }
    all
}

/// Dropping the host ends every worker process (the workers' own children too).
#[test]
fn no_worker_outlives_a_dropped_host() {
    for mode in WORKER_MODES {
        let dir = store_dir();
        let host = host_in(dir.path(), mode, Duration::from_secs(2));
        assert_adder_valid(&host, "start a worker");
        let pids: Vec<u32> = host
            .execution_workers()
            .iter()
            .flat_map(|w| process_tree(w.pid))
            .collect();
        assert!(
            pids.len() >= 2,
            "a worker and its pid-namespace process: {pids:?}"
        );
        drop(host);
        wait_gone_or_zombie(&pids);
    }
}

/// A host killed with `SIGKILL` (nothing of it runs to clean up): its workers notice and end.
#[test]
fn no_worker_outlives_a_killed_host() {
    for mode in ["workers", "per-job"] {
        let dir = store_dir();
        let mut serve = pvf(dir.path())
            .args(["--isolation", mode, "serve"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pvf serve");
        let mut stdin = serve.stdin.take().unwrap();
        let request = serde_json::json!({
            "id": 1,
            "code": pvf_test_guests::path("adder"),
            "params": {"parent_head": "0x0500000000000000", "block_data": "0x0700000000000000", "relay_parent_number": 7},
        });
        writeln!(stdin, "{request}").unwrap();
        stdin.flush().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = serve.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let answer = rx.recv_timeout(Duration::from_secs(60)).expect("an answer");
        assert!(answer.contains("\"valid\""), "{mode}: {answer}");
        let pids: Vec<u32> = process_tree(serve.id()).into_iter().skip(1).collect();
        assert!(
            pids.len() >= 2,
            "{mode}: an execution worker and its pid-namespace process: {pids:?}"
        );
        serve.kill().expect("kill pvf serve");
        serve.wait().expect("reap pvf serve");
        wait_gone_or_zombie(&pids);
    }
}
