//! The guest's WASI context: deterministic, capability-less; file and network access are errors,
//! not traps; output is capped, not fatal.

use pvf_host::{CacheStatus, MONOTONIC_STEP_NANOS, ValidationParams, Verdict, WALL_CLOCK_SECS};

use crate::common::*;

fn head(outcome: pvf_host::Outcome) -> Vec<u8> {
    match outcome.verdict {
        Verdict::Valid(r) => r.head_data,
        other => panic!("expected valid, got {other:?}"),
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

#[test]
fn nondeterminism_probe_sees_the_same_world_in_every_run_and_process() {
    let dir = store_dir();
    let code = guest("nondeterminism_probe");
    let params = ValidationParams::new(vec![1], vec![2], 3);
    let first = head(host(dir.path()).validate(&code, &params));
    // Same host, another host (fresh engine), and another process (the CLI).
    let again = host(dir.path());
    assert_eq!(head(again.validate(&code, &params)), first);
    assert_eq!(head(again.validate(&code, &params)), first);
    let params_file = write_file(
        dir.path(),
        "p.json",
        r#"{"parent_head": "01", "block_data": "02", "relay_parent_number": 3}"#,
    );
    let (code_rc, v, _) = run_json(
        pvf(&dir.path().join("cli-store"))
            .arg("validate")
            .arg(pvf_test_guests::path("nondeterminism_probe"))
            .arg("--params")
            .arg(params_file),
    );
    assert_eq!(code_rc, 0, "{v}");
    assert_eq!(
        v["result"]["head_data"],
        format!("0x{}", hex::encode(&first))
    );

    // The documented constants (layout in guest-components/nondeterminism-probe).
    assert_eq!(first.len(), 128);
    assert_eq!(u64_at(&first, 0), WALL_CLOCK_SECS, "SystemTime::now");
    assert_eq!(&first[8..12], &[0; 4], "SystemTime subsec nanos");
    assert_eq!(
        u64_at(&first, 12),
        MONOTONIC_STEP_NANOS,
        "Instant elapsed between two reads"
    );
    assert_eq!(u64_at(&first, 116), WALL_CLOCK_SECS, "wasi wall clock");
    assert_ne!(&first[28..60], &[0; 32], "random bytes are not all zero");
    assert_ne!(
        &first[28..60],
        &first[60..92],
        "secure and insecure streams differ"
    );

    // Randomness is seeded by the params: another candidate sees other random bytes, same clocks.
    let other = head(again.validate(&code, &ValidationParams::new(vec![1], vec![2, 0], 3)));
    assert_ne!(&other[28..60], &first[28..60]);
    assert_eq!(&other[..20], &first[..20]);
}

#[test]
fn sandbox_escape_gets_errors_not_traps() {
    let dir = store_dir();
    let report = head(host(dir.path()).validate(&guest("sandbox_escape"), &adder_params(0, 0)));
    let report = String::from_utf8(report).expect("utf-8 report");
    let lines: Vec<&str> = report.lines().collect();
    for probe in [
        "fs_read",
        "fs_write",
        "fs_read_dir_dot",
        "fs_read_dir_root",
        "tcp_connect",
        "udp_bind",
        "dns_lookup",
    ] {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("{probe}=")))
            .unwrap_or_else(|| panic!("{probe} missing: {report}"));
        assert!(
            line.starts_with(&format!("{probe}=err:")),
            "{probe} must fail: {report}"
        );
    }
    assert!(lines.contains(&"env_vars=count:0"), "{report}");
    assert!(lines.contains(&"args=count:0"), "{report}");
}

#[test]
fn stdout_flood_is_accepted_and_capped() {
    let dir = store_dir();
    let host = host(dir.path());
    // 8 MiB to stdout and 8 MiB to stderr: far past the 64 KiB kept per stream.
    let params = ValidationParams::new(vec![], 8192u32.to_le_bytes().to_vec(), 1);
    let outcome = host.validate(&guest("stdout_flood"), &params);
    assert_eq!(outcome.cache, CacheStatus::Miss);
    assert_eq!(head(outcome), 8192u32.to_le_bytes());
}
