//! Several processes on one store: single compilation, crash safety, no lock held forever.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use pvf_host::{CacheStatus, CodeHash, Verdict};
use serde_json::Value;

use crate::common::*;

const UNDYING_PARAMS: &str =
    r#"{"parent_head": "0x01", "block_data": "0xe8030000cafe", "relay_parent_number": 2}"#;

/// Waits for `child` at most `limit`, killing it on overrun.
fn wait_output(child: Child, limit: Duration) -> std::process::Output {
    let pid = child.id();
    let deadline = Instant::now() + limit;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(pid as i32).unwrap(),
                rustix::process::Signal::KILL,
            );
            panic!("process {pid} did not finish within {limit:?}");
        }
    }
}

#[test]
fn eight_processes_on_an_empty_store_compile_once() {
    let dir = store_dir();
    let store = dir.path().join("store");
    let params = write_file(dir.path(), "p.json", UNDYING_PARAMS);
    let children: Vec<Child> = (0..8)
        .map(|_| {
            pvf(&store)
                .args(["--json", "validate"])
                .arg(pvf_test_guests::path("undying"))
                .arg("--params")
                .arg(&params)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let mut caches = Vec::new();
    let mut heads = Vec::new();
    for child in children {
        let out = wait_output(child, Duration::from_secs(120));
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(out.status.code(), Some(0), "{v}");
        caches.push(v["cache"].as_str().unwrap().to_string());
        heads.push(v["result"]["head_data"].clone());
    }
    assert!(heads.iter().all(|h| *h == heads[0]), "{heads:?}");
    let misses = caches.iter().filter(|c| *c == "miss").count();
    assert_eq!(misses, 1, "compiled exactly once: {caches:?}");
    assert_eq!(
        caches.iter().filter(|c| *c == "hit").count(),
        7,
        "{caches:?}"
    );
}

#[test]
fn threads_of_one_process_compile_once() {
    let dir = store_dir();
    let host = host(dir.path());
    let code = guest("undying");
    let caches: Vec<CacheStatus> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| host.validate(&code, &undying_params(10))))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                let outcome = h.join().expect("no panic");
                assert_eq!(outcome.verdict.as_str(), "valid");
                outcome.cache
            })
            .collect()
    });
    assert_eq!(
        caches.iter().filter(|c| **c == CacheStatus::Miss).count(),
        1,
        "{caches:?}"
    );
}

#[test]
fn a_lock_held_by_a_stuck_process_delays_but_never_blocks() {
    let dir = store_dir();
    let code = guest("adder");
    let host = host_with(
        dir.path(),
        test_config().prepare_wait(Duration::from_millis(300)),
    );
    // Someone holds the key's lock and never lets go.
    let lock_path = dir
        .path()
        .join(host.fingerprint().to_hex())
        .join(format!("{}.lock", CodeHash::of(&code)));
    let held = std::fs::File::create(&lock_path).unwrap();
    rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let started = Instant::now();
    let outcome = host.validate(&code, &adder_params(1, 2));
    assert_eq!(outcome.verdict.as_str(), "valid", "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(30), "bounded wait");
    drop(held);
}

#[test]
fn kill_9_while_preparing_leaves_no_partial_artifact() {
    let dir = store_dir();
    let store = dir.path().join("store");
    let guest_path = pvf_test_guests::path(if pvf_test_guests::ALL.contains(&"bulky") {
        "bulky"
    } else {
        "undying"
    });
    // How long one preparation takes here, to spread the kills over it.
    let started = Instant::now();
    let out = run(pvf(&dir.path().join("probe"))
        .arg("prepare")
        .arg(&guest_path));
    assert_eq!(out.status.code(), Some(0));
    let full = started.elapsed();
    for i in 0..12u32 {
        let mut child = pvf(&store)
            .arg("prepare")
            .arg(&guest_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(full * i / 10);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // Whatever is visible is whole: every artifact verifies, and reopening removes the dead
        // writer's temporary file.
        if let Ok(fps) = std::fs::read_dir(&store) {
            let host = host(&store);
            let report = host.verify_store().expect("verify");
            assert!(report.bad.is_empty(), "kill {i}: {report:?}");
            for fp in fps {
                let fp = fp.unwrap().path();
                if fp.is_dir() {
                    for f in std::fs::read_dir(&fp).unwrap() {
                        let name = f.unwrap().file_name().to_string_lossy().into_owned();
                        assert!(
                            !name.starts_with(".tmp-"),
                            "kill {i}: {name} left after reopen"
                        );
                    }
                }
            }
        }
    }
    let outcome = host(&store).validate(
        &std::fs::read(&guest_path).unwrap(),
        &pvf_host::ValidationParams::new(vec![1], vec![1, 2, 3, 4, 5], 1),
    );
    assert!(matches!(outcome.verdict, Verdict::Valid(_)), "{outcome:?}");
}
