//! Deterministic limits, each as an `_obeyed` / `_violated` pair against a real guest: the
//! violated case is an `invalid` verdict naming the limit, the same on every run.

use pvf_host::{ExecuteError, LimitKind, ValidationError, ValidationParams, Verdict};

use crate::common::*;

fn limit_of(outcome: pvf_host::Outcome) -> LimitKind {
    match outcome.verdict {
        Verdict::Invalid(ValidationError::Execute(ExecuteError::ResourceLimit {
            kind, ..
        })) => kind,
        other => panic!("expected a resource limit, got {other:?}"),
    }
}

fn assert_valid_verdict(outcome: pvf_host::Outcome) -> Vec<u8> {
    match outcome.verdict {
        Verdict::Valid(r) => r.head_data,
        other => panic!("expected valid, got {other:?}"),
    }
}

fn alloc_params(bytes: u64) -> ValidationParams {
    ValidationParams::new(vec![], bytes.to_le_bytes().to_vec(), 1)
}

const MEMORY_LIMIT: usize = 64 << 20;

#[test]
fn memory_limit_obeyed() {
    let dir = store_dir();
    let host = host_with(dir.path(), test_config().max_memory_bytes(MEMORY_LIMIT));
    // Just under: 56 MiB of heap next to the guest's stack and data.
    let head = assert_valid_verdict(host.validate(&guest("alloc"), &alloc_params(56 << 20)));
    assert_eq!(&head[..8], &(56u64 << 20).to_le_bytes());
}

#[test]
fn memory_limit_violated() {
    let dir = store_dir();
    let host = host_with(dir.path(), test_config().max_memory_bytes(MEMORY_LIMIT));
    // Just over: the allocation alone is the whole limit.
    for _ in 0..2 {
        assert_eq!(
            limit_of(host.validate(&guest("alloc"), &alloc_params(MEMORY_LIMIT as u64))),
            LimitKind::Memory
        );
    }
    assert_eq!(
        limit_of(host.validate(&guest("memory_bomb"), &alloc_params(0))),
        LimitKind::Memory
    );
}

fn depth_params(depth: u32) -> ValidationParams {
    ValidationParams::new(vec![], depth.to_le_bytes().to_vec(), 1)
}

#[test]
fn stack_limit_obeyed() {
    let dir = store_dir();
    let host = host(dir.path());
    assert_valid_verdict(host.validate(&guest("stack_bomb"), &depth_params(1_000)));
}

#[test]
fn stack_limit_violated() {
    let dir = store_dir();
    let host = host(dir.path());
    for _ in 0..2 {
        assert_eq!(
            limit_of(host.validate(&guest("stack_bomb"), &depth_params(u32::MAX))),
            LimitKind::Stack
        );
    }
}

#[test]
fn fuel_limit_obeyed() {
    let dir = store_dir();
    let host = host_with(dir.path(), test_config().fuel(50_000_000));
    assert_valid_verdict(host.validate(&guest("undying"), &undying_params(1_000)));
}

#[test]
fn fuel_limit_violated() {
    let dir = store_dir();
    let host = host_with(dir.path(), test_config().fuel(50_000_000));
    for _ in 0..2 {
        assert_eq!(
            limit_of(host.validate(&guest("undying"), &undying_params(10_000_000))),
            LimitKind::Fuel
        );
    }
    // An infinite loop ends by fuel, deterministically, when the deadline is far away.
    let patient = host_with(dir.path(), crate::common::config().fuel(50_000_000));
    assert_eq!(
        limit_of(patient.validate(&guest("halt"), &undying_params(0))),
        LimitKind::Fuel
    );
}

#[test]
fn fuel_boundary_is_exact() {
    // The budget that just suffices for a candidate suffices on every run; one unit less never.
    let dir = store_dir();
    let code = guest("undying");
    let params = undying_params(100);
    let runs = |fuel: u64| {
        host_with(dir.path(), test_config().fuel(fuel))
            .validate(&code, &params)
            .verdict
            .as_str()
    };
    let (mut lo, mut hi) = (1u64, 50_000_000u64);
    assert_eq!(runs(hi), "valid");
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if runs(mid) == "valid" {
            hi = mid
        } else {
            lo = mid
        }
    }
    for _ in 0..3 {
        assert_eq!(runs(hi), "valid");
        assert_eq!(runs(hi - 1), "invalid");
    }
}

#[test]
fn table_limit_obeyed_and_violated() {
    let dir = store_dir();
    let code = guest("adder");
    assert_valid_verdict(host(dir.path()).validate(&code, &adder_params(1, 1)));
    // The guest's function table has more than 4 elements. On demand, the resource limiter
    // stops the instantiation; with the pooling allocator (slots sized by the same limit), the
    // preparation already rejects it. Both are `invalid`.
    let tight = host_with(
        dir.path(),
        test_config().max_table_elements(4).pooling(false),
    );
    assert_eq!(
        limit_of(tight.validate(&code, &adder_params(1, 1))),
        LimitKind::Table
    );
    let pooled = host_with(dir.path(), test_config().max_table_elements(4));
    assert_invalid_mentioning(pooled.validate(&code, &adder_params(1, 1)), "table");
}

fn assert_invalid_mentioning(outcome: pvf_host::Outcome, needle: &str) {
    match outcome.verdict {
        Verdict::Invalid(e) => assert!(e.to_string().contains(needle), "{e}"),
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn instance_limit_obeyed_and_violated() {
    let dir = store_dir();
    let code = guest("adder");
    assert_valid_verdict(
        host_with(dir.path(), test_config().max_instances(64)).validate(&code, &adder_params(1, 1)),
    );
    // A wasip2 component instantiates several core instances (the program and its adapters).
    let tight = host_with(dir.path(), test_config().max_instances(1).pooling(false));
    assert_eq!(
        limit_of(tight.validate(&code, &adder_params(1, 1))),
        LimitKind::Instances
    );
    let pooled = host_with(dir.path(), test_config().max_instances(1));
    assert_invalid_mentioning(pooled.validate(&code, &adder_params(1, 1)), "instances");
}
