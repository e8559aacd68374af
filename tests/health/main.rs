//! Host health under hostile load: 1,000 hostile runs in a row in one process leave the host
//! working, resident memory back near its baseline, and no leaked threads.
//!
//! A test binary of its own, so that no other test shares the process being measured.

use std::time::Duration;

use pvf_host::{Config, ValidationHost, ValidationParams, Verdict};

/// Resident set size of this process, in bytes (Linux).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .expect("rss field")
        .parse()
        .expect("number");
    pages * rustix::param::page_size() as u64
}

/// Number of threads of this process (Linux).
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("read /proc/self/task")
        .count()
}

/// The names of this process's threads.
fn thread_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .expect("read /proc/self/task")
        .flatten()
        .map(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .collect();
    names.sort();
    names
}

fn le32(n: u32) -> Vec<u8> {
    n.to_le_bytes().to_vec()
}

#[test]
fn thousand_hostile_runs_leave_the_host_healthy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store =
        cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).expect("open");
    let config = Config::new()
        .max_memory_bytes(64 << 20)
        .fuel(20_000_000)
        .execution_timeout(Duration::from_millis(200));
    let host = ValidationHost::new(store.try_clone().expect("dup"), config.clone()).expect("host");
    // Fuel far beyond the deadline, so that `halt` meets the wall clock.
    let patient = ValidationHost::new(store, config.fuel(1_000_000_000_000)).expect("host");

    let g = pvf_test_guests::bytes;
    // (guest, params, expected verdict)
    let cases: Vec<(Vec<u8>, ValidationParams, &str)> = vec![
        (
            g("memory_bomb"),
            ValidationParams::new(vec![], vec![], 1),
            "invalid",
        ),
        (
            g("alloc"),
            ValidationParams::new(vec![], (64u64 << 20).to_le_bytes().to_vec(), 1),
            "invalid",
        ),
        (
            g("stack_bomb"),
            ValidationParams::new(vec![], le32(u32::MAX), 1),
            "invalid",
        ),
        (
            g("undying"),
            ValidationParams::new(vec![], le32(u32::MAX), 1),
            "invalid",
        ),
        (
            g("trap"),
            ValidationParams::new(vec![], vec![], 1),
            "invalid",
        ),
        (
            g("reject"),
            ValidationParams::new(vec![], vec![], 1),
            "invalid",
        ),
        (
            g("stdout_flood"),
            ValidationParams::new(vec![], le32(256), 1),
            "valid",
        ),
        (
            g("sandbox_escape"),
            ValidationParams::new(vec![], vec![], 1),
            "valid",
        ),
    ];
    let halt = g("halt");
    let adder = g("adder");
    let adder_params =
        ValidationParams::new(1u64.to_le_bytes().to_vec(), 2u64.to_le_bytes().to_vec(), 1);

    let run_round = |round: usize| {
        let (code, params, expected) = &cases[round % cases.len()];
        let outcome = host.validate(code, params);
        assert_eq!(
            outcome.verdict.as_str(),
            *expected,
            "round {round}: {:?}",
            outcome.verdict
        );
    };

    // Warm up: prepare every guest (also the two checked at the end, so that no preparation —
    // and no warm worker starting after it — is under way when the threads are counted), let
    // allocators settle.
    for round in 0..2 * cases.len() {
        run_round(round);
    }
    assert!(matches!(
        host.validate(&adder, &adder_params).verdict,
        Verdict::Valid(_)
    ));
    assert_eq!(
        patient.validate(&halt, &adder_params).verdict.as_str(),
        "indeterminate"
    );
    let baseline_rss = rss_bytes();
    let baseline_threads = thread_count();
    let baseline_names = thread_names();

    for round in 0..1_000 {
        run_round(round);
        // A wall-clock timeout now and then (each costs the 200 ms deadline).
        if round % 250 == 0 {
            assert_eq!(
                patient.validate(&halt, &adder_params).verdict.as_str(),
                "indeterminate"
            );
        }
    }

    // Still working.
    match host.validate(&adder, &adder_params).verdict {
        Verdict::Valid(r) => assert_eq!(r.head_data, 3u64.to_le_bytes()),
        other => panic!("host broken after hostile runs: {other:?}"),
    }
    let rss = rss_bytes();
    let threads = thread_count();
    eprintln!(
        "rss: baseline {} KiB, after 1000 hostile runs {} KiB; threads {baseline_threads} -> {threads}",
        baseline_rss / 1024,
        rss / 1024
    );
    assert!(
        rss < baseline_rss + (32 << 20),
        "resident memory grew from {} KiB to {} KiB",
        baseline_rss / 1024,
        rss / 1024
    );
    assert_eq!(
        threads,
        baseline_threads,
        "threads leaked: {baseline_names:?} -> {:?}",
        thread_names()
    );
}
