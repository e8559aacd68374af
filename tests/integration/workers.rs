//! Preparation in confined worker processes: compile bombs meet the limits (strict pre-check
//! limits are `invalid`, lenient ones `indeterminate`), a worker that is killed, stopped, aborts,
//! cannot start or is of another build is `indeterminate` and the next call works, the host's
//! memory stays flat, and the worker starts with an empty environment.
//!
//! These tests are about the workers themselves: under `PVF_TEST_ISOLATION=in-process` (the
//! run of the suite that repeats every other test in process) they skip, saying so.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pvf_host::{
    CompileLimits, Config, FailureClass, HostError, Isolation, PrepareError, ValidationError,
    ValidationHost, Verdict,
};
use pvf_test_guests::bombs;

use crate::common::*;

const MIB: u64 = 1 << 20;

/// Whether this run is about workers; prints why a test skips when it is not.
fn workers_run(test: &str) -> bool {
    if isolation().compiles_in_workers() {
        return true;
    }
    eprintln!("{test}: skipped: PVF_TEST_ISOLATION=in-process, and this test is about workers");
    false
}

/// The tests' configuration with `exe` as the worker (a name only this test uses, so it can find
/// its own worker among the processes of the parallel tests) and no warm spare.
fn config_with_worker(exe: &Path) -> Config {
    test_config()
        .isolation(Isolation::Workers)
        .worker_executable(exe)
        .warm_worker(false)
}

/// A hard link (or copy) of this build's `pvf` named `name` in `dir`: the same build, a name
/// no other test's worker has.
fn worker_named(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let pvf = Path::new(env!("CARGO_BIN_EXE_pvf"));
    if std::fs::hard_link(pvf, &path).is_err() {
        std::fs::copy(pvf, &path).expect("copy pvf");
    }
    path
}

/// The processes running `exe` as a worker (by their command line's first two arguments).
fn worker_pids(exe: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("list /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let mut args = cmdline.split(|b| *b == 0);
        if args.next() == Some(exe.as_os_str().as_encoded_bytes())
            && args.next() == Some(b"__pvf-worker".as_slice())
        {
            pids.push(pid);
        }
    }
    pids
}

/// Waits (at most 30 s) for a worker running `exe`; its pid.
fn wait_for_worker(exe: &Path) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(pid) = worker_pids(exe).into_iter().min() {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "no worker {} appeared",
            exe.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `(ppid, utime + stime in clock ticks)` of `pid`, from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let ppid = rest.get(1)?.parse().ok()?;
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// Waits (at most 30 s) until worker `pid` — or its child, when it forked into a pid
/// namespace — has used 0.2 s of CPU time: it compiles.
fn wait_until_compiling(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let compiling = std::fs::read_dir("/proc")
            .expect("list /proc")
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|p| Some((p, stat(p)?)))
            .any(|(p, (ppid, ticks))| (p == pid || ppid == pid) && ticks >= 20);
        if compiling {
            return;
        }
        assert!(Instant::now() < deadline, "worker {pid} never compiled");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid}");
}

fn prepare_error(result: Result<pvf_host::Prepared, ValidationError>) -> PrepareError {
    match result {
        Err(ValidationError::Prepare(e)) => e,
        other => panic!("expected a preparation error, got {other:?}"),
    }
}

fn assert_indeterminate_mentioning(outcome: pvf_host::Outcome, needle: &str) {
    match outcome.verdict {
        Verdict::Indeterminate(e) => assert!(e.to_string().contains(needle), "{e}"),
        other => panic!("expected indeterminate ({needle}), got {other:?}"),
    }
}

#[test]
fn a_memory_bomb_is_invalid_at_precheck_and_indeterminate_when_preparing() {
    if !workers_run("memory bomb") {
        return;
    }
    let dir = store_dir();
    let cap = 384 * MIB;
    let config = test_config()
        .isolation(Isolation::Workers)
        .precheck_limits(CompileLimits::strict().memory_bytes(cap))
        .prepare_limits(CompileLimits::lenient().memory_bytes(cap).threads(1));
    let host = host_with(dir.path(), config.clone());
    let bomb = bombs::memory_bomb_component();

    let precheck = host.precheck(&bomb);
    match &precheck {
        Err(ValidationError::Prepare(PrepareError::MemoryExceeded {
            limit,
            peak,
            strict: true,
        })) => {
            assert_eq!(*limit, cap);
            assert!(*peak > cap, "{peak}");
        }
        other => panic!("expected the strict memory limit, got {other:?}"),
    }
    let err = precheck.unwrap_err();
    assert_eq!(err.class(), FailureClass::Deterministic);
    assert!(err.to_string().contains("pre-check memory limit"), "{err}");

    // The same limit while preparing for execution is this node's, not the code's.
    match prepare_error(host.prepare(&bomb)) {
        e @ PrepareError::MemoryExceeded { strict: false, .. } => {
            assert_eq!(
                ValidationError::from(e).class(),
                FailureClass::Indeterminate
            )
        }
        other => panic!("expected the lenient memory limit, got {other:?}"),
    }
    assert_indeterminate_mentioning(
        host.validate(&bomb, &adder_params(1, 2)),
        "preparation memory limit",
    );

    // After a restart, the pre-check's failure is remembered (no compilation); preparation for
    // execution is not refused by it.
    let restarted = host_with(dir.path(), config);
    match prepare_error(restarted.precheck(&bomb)) {
        PrepareError::Remembered { reason, .. } => {
            assert!(reason.contains("pre-check memory limit"), "{reason}")
        }
        other => panic!("expected the remembered failure, got {other:?}"),
    }
    assert!(matches!(
        prepare_error(restarted.prepare(&bomb)),
        PrepareError::MemoryExceeded { strict: false, .. }
    ));
}

#[test]
fn the_cli_host_stays_small_while_its_worker_meets_a_memory_bomb() {
    if !workers_run("cli memory bomb") {
        return;
    }
    let dir = store_dir();
    let bomb = write_file(dir.path(), "bomb.wasm", bombs::memory_bomb_component());
    let store = dir.path().join("store");
    let mut cmd = pvf(&store);
    cmd.arg("--json").arg("precheck").arg(&bomb);
    // Compiled in process, this bomb takes about 1.9 GB; the `pvf` process must stay far below.
    let (output, peak) = run_bounded(&mut cmd, Duration::from_secs(120), 300 * MIB);
    let v: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(output.status.code(), Some(1), "{v}");
    assert_eq!(v["verdict"], "invalid");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("pre-check memory limit") && reason.contains("1073741824"),
        "{reason}"
    );
    eprintln!(
        "pvf precheck of the memory bomb: host peak RSS {} MiB",
        peak / MIB
    );
}

#[test]
fn a_cpu_bomb_meets_the_cpu_limit() {
    if !workers_run("cpu bomb") {
        return;
    }
    let dir = store_dir();
    let one_second = Duration::from_secs(1);
    // Only the CPU limit may end these jobs, however busy the machine.
    let wall = Duration::from_secs(120);
    let host = host_with(
        dir.path(),
        test_config()
            .isolation(Isolation::Workers)
            .precheck_limits(
                CompileLimits::strict()
                    .cpu_time(one_second)
                    .wall_clock(wall),
            )
            .prepare_limits(
                CompileLimits::lenient()
                    .cpu_time(one_second)
                    .wall_clock(wall),
            ),
    );
    let bomb = bombs::cpu_bomb_component();
    let started = Instant::now();
    let err = prepare_error(host.precheck(&bomb));
    assert!(
        matches!(err, PrepareError::CpuTimeExceeded { strict: true, limit } if limit == one_second),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("pre-check CPU-time limit of 1 s"),
        "{err}"
    );
    let err = prepare_error(host.prepare(&bomb));
    assert!(
        matches!(err, PrepareError::CpuTimeExceeded { strict: false, .. }),
        "{err:?}"
    );
    assert_eq!(
        ValidationError::from(err).class(),
        FailureClass::Indeterminate
    );
    // The bomb needs about 10 s of CPU; both ended at the 1 s limit (bounded loosely: the
    // machine is shared).
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn a_killed_worker_is_indeterminate_and_the_next_call_prepares_again() {
    if !workers_run("kill -9") {
        return;
    }
    let dir = store_dir();
    let exe = worker_named(dir.path(), "pvf-kill9");
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let host = host_with(&store, config_with_worker(&exe));
    // A few seconds of compilation, so the kill lands mid-compile.
    let code = bombs::cpu_bomb_with(1_000);
    let outcome = std::thread::scope(|s| {
        let run = s.spawn(|| host.validate(&code, &adder_params(1, 2)));
        let pid = wait_for_worker(&exe);
        std::thread::sleep(Duration::from_millis(200));
        signal(pid, "-KILL");
        run.join().unwrap()
    });
    assert_indeterminate_mentioning(outcome, "killed by signal 9");
    // Nothing of the killed preparation is in the store.
    let left = files_in_store(&store, &host);
    assert!(left.is_empty(), "{left:?}");
    let outcome = host.validate(&code, &adder_params(1, 2));
    assert_valid(&outcome, &3u64.to_le_bytes(), pvf_host::CacheStatus::Miss);
}

#[test]
fn a_stopped_worker_meets_the_wall_clock_backstop() {
    if !workers_run("SIGSTOP") {
        return;
    }
    let dir = store_dir();
    let exe = worker_named(dir.path(), "pvf-stopped");
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    // 1 s of CPU time: the backstop is 4 s of wall clock.
    let config = config_with_worker(&exe)
        .prepare_limits(CompileLimits::lenient().cpu_time(Duration::from_secs(1)));
    let host = host_with(&store, config);
    let code = bombs::cpu_bomb_with(1_000);
    let started = Instant::now();
    let outcome = std::thread::scope(|s| {
        let run = s.spawn(|| host.validate(&code, &adder_params(1, 2)));
        // Once it compiles (its pid-namespace child has used CPU time; before that it may still
        // be in its handshake, which has its own deadline), the whole process group: the worker
        // forks into its pid namespace.
        let pid = wait_for_worker(&exe);
        wait_until_compiling(pid);
        let group = format!("-{pid}");
        let status = std::process::Command::new("kill")
            .args(["-STOP", "--", &group])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -STOP -- {group}");
        run.join().unwrap()
    });
    assert_indeterminate_mentioning(outcome, "wall-clock backstop");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(4), "{waited:?}");
    assert!(
        worker_pids(&exe).is_empty(),
        "the stopped worker was killed"
    );
    assert_valid(
        &host.validate(&guest("adder"), &adder_params(1, 2)),
        &3u64.to_le_bytes(),
        pvf_host::CacheStatus::Miss,
    );
}

#[test]
fn a_worker_that_aborts_is_indeterminate_even_in_a_precheck() {
    if !workers_run("abort") {
        return;
    }
    let dir = store_dir();
    // The heap cap is far away; the address-space backstop refuses memory first, and the
    // worker aborts (no report): an OS refusal, never a verdict on the code.
    let limits = CompileLimits::lenient()
        .memory_bytes(4 << 30)
        .address_space_bytes(700 * MIB)
        .threads(1);
    let host = host_with(
        dir.path(),
        test_config()
            .isolation(Isolation::Workers)
            .precheck_limits(limits)
            .prepare_limits(limits),
    );
    let bomb = bombs::memory_bomb_component();
    for result in [host.precheck(&bomb), host.prepare(&bomb)] {
        let err = prepare_error(result);
        // It aborts as pid 1 of its namespace, where the kernel's forced SIGSEGV after the
        // ignored SIGABRT ends it.
        assert!(matches!(err, PrepareError::Worker(_)), "{err:?}");
        assert!(err.to_string().contains("killed by signal"), "{err}");
        assert_eq!(
            ValidationError::from(err).class(),
            FailureClass::Indeterminate
        );
    }
    // Nothing was remembered against the code.
    assert!(files_in_store(dir.path(), &host).is_empty());
}

#[test]
fn a_worker_that_cannot_start_is_a_startup_error_or_indeterminate() {
    if !workers_run("unspawnable") {
        return;
    }
    let dir = store_dir();
    let missing = dir.path().join("no-such-worker");
    let store =
        cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).expect("open");
    match ValidationHost::new(store, config_with_worker(&missing)) {
        Err(e @ HostError::Worker(_)) => {
            assert!(e.to_string().contains("no-such-worker"), "{e}")
        }
        other => panic!("expected a startup error, got {other:?}"),
    }
    // A file that cannot be executed, and a program that is not a worker.
    let not_executable = write_file(dir.path(), "not-executable", b"#!/bin/sh\n");
    for (exe, needle) in [
        (not_executable.as_path(), "cannot start"),
        (Path::new("/bin/true"), "did not start"),
    ] {
        let host = host_with(dir.path(), config_with_worker(exe));
        assert_indeterminate_mentioning(
            host.validate(&guest("adder"), &adder_params(1, 2)),
            needle,
        );
    }
}

#[test]
fn a_worker_of_another_build_is_refused_at_the_handshake() {
    if !workers_run("other build") {
        return;
    }
    let dir = store_dir();
    let mut binary = std::fs::read(env!("CARGO_BIN_EXE_pvf")).expect("read pvf");
    let marker = b"pvf-build-id:";
    let mut patched = 0;
    let mut at = 0;
    while let Some(pos) = binary[at..]
        .windows(marker.len())
        .position(|w| w == marker)
        .map(|p| p + at)
    {
        // Change the first hex digit of the identity that follows the marker.
        let digit = &mut binary[pos + marker.len()];
        *digit = if *digit == b'0' { b'1' } else { b'0' };
        patched += 1;
        at = pos + marker.len();
    }
    assert!(patched > 0, "the build id marker is in the binary");
    let other = dir.path().join("pvf-other-build");
    std::fs::write(&other, &binary).unwrap();
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let host = host_with(&store, config_with_worker(&other));
    assert_indeterminate_mentioning(
        host.validate(&guest("adder"), &adder_params(1, 2)),
        "of another build",
    );
}

#[test]
fn the_worker_starts_with_an_empty_environment() {
    if !workers_run("environment") {
        return;
    }
    let dir = store_dir();
    let exe = worker_named(dir.path(), "pvf-env");
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    // A warm spare waits for its job: its environment can be read.
    let host = host_with(&store, config_with_worker(&exe).warm_worker(true));
    let pid = wait_for_worker(&exe);
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("read environ");
    assert!(
        environ.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&environ)
    );
    assert!(
        std::env::vars_os().next().is_some(),
        "the test itself has an environment"
    );
    drop(host);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !worker_pids(&exe).is_empty() {
        assert!(Instant::now() < deadline, "the spare outlived its host");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_preparation_reports_the_compilers_peak_memory() {
    if !workers_run("peak memory") {
        return;
    }
    let dir = store_dir();
    let host = host_with(dir.path(), test_config().isolation(Isolation::Workers));
    let prepared = host.prepare(&guest("undying")).expect("prepare");
    let peak = prepared
        .peak_memory_bytes
        .expect("a worker reports its peak");
    assert!(peak > 1_000_000, "{peak}");
    // A stored artifact is used without compiling: no peak.
    assert_eq!(
        host.prepare(&guest("undying")).unwrap().peak_memory_bytes,
        None
    );
    let store = dir.path().join("cli");
    let (code, v, _) = run_json(
        pvf(&store)
            .arg("prepare")
            .arg(pvf_test_guests::path("undying")),
    );
    assert_eq!(code, 0, "{v}");
    assert!(v["peak_memory_bytes"].as_u64().unwrap() > 1_000_000, "{v}");
}
