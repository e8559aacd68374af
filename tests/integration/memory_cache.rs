//! The in-memory cache of constructed components: warm hits touch no file; the byte budget is
//! kept, least recently used first.

use pvf_host::{CacheStatus, Verdict};

use crate::common::*;

#[test]
fn a_warm_hit_needs_no_file() {
    let dir = store_dir();
    let host = host_with(dir.path(), test_config().memory_cache_bytes(64 << 20));
    let code = guest("adder");
    assert_eq!(
        host.validate(&code, &adder_params(1, 2)).cache,
        CacheStatus::Miss
    );
    // The artifact goes away (or rots): the constructed component in memory is still good.
    std::fs::remove_file(artifact_path(dir.path(), &host, &code)).unwrap();
    let outcome = host.validate(&code, &adder_params(1, 2));
    assert_eq!(outcome.cache, CacheStatus::Hit);
    assert!(matches!(outcome.verdict, Verdict::Valid(_)));
    assert_eq!(host.memory_cache_usage().0, 1);
    // Every call gets a fresh instance: no state leaks from one candidate to the next.
    for i in 0..20u64 {
        match host.validate(&code, &adder_params(i, i)).verdict {
            Verdict::Valid(r) => assert_eq!(r.head_data, (2 * i).to_le_bytes()),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn the_byte_budget_is_kept_least_recently_used_first() {
    let dir = store_dir();
    let probe = host(dir.path());
    let adder = guest("adder");
    probe.prepare(&adder).unwrap();
    let one = std::fs::metadata(artifact_path(dir.path(), &probe, &adder))
        .unwrap()
        .len() as usize;
    // Room for two artifacts of about this size.
    let host = host_with(dir.path(), test_config().memory_cache_bytes(one * 5 / 2));
    for name in ["adder", "reject", "trap"] {
        host.validate(&guest(name), &adder_params(1, 2));
    }
    let (entries, bytes) = host.memory_cache_usage();
    assert_eq!(entries, 2);
    assert!(bytes <= one * 5 / 2);
    // adder was evicted: with its artifact gone it must be prepared again.
    std::fs::remove_file(artifact_path(dir.path(), &host, &adder)).unwrap();
    assert_eq!(
        host.validate(&adder, &adder_params(1, 2)).cache,
        CacheStatus::Miss
    );
}

#[test]
fn pooling_and_on_demand_allocation_agree() {
    let dir = store_dir();
    let pooled = host_with(dir.path(), test_config().memory_cache_bytes(64 << 20));
    let on_demand = host_with(dir.path(), test_config().pooling(false));
    for (name, params) in [
        ("adder", adder_params(3, 4)),
        ("undying", undying_params(50)),
        ("reject", adder_params(0, 0)),
        ("trap", adder_params(0, 0)),
    ] {
        let code = guest(name);
        for _ in 0..3 {
            let a = pooled.validate(&code, &params);
            let b = on_demand.validate(&code, &params);
            assert_eq!(
                format!("{:?}", a.verdict),
                format!("{:?}", b.verdict),
                "{name}"
            );
        }
    }
}
