//! In-process validation (this library, warm) vs one process per call (the reference design:
//! a fresh `pvf validate` process for every candidate, artifact already stored).
//!
//! Run: `cargo bench -p pvf-host --bench process`.
#![allow(missing_docs)]

mod common;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use common::pvf_validate_process;
use criterion::{Criterion, criterion_group, criterion_main};
use pvf_host::{Config, ValidationHost, ValidationParams};

fn process_per_call(c: &mut Criterion) {
    let mut g = c.benchmark_group("process_per_call");
    g.sample_size(20);
    for (guest, params, json) in [
        (
            "adder",
            ValidationParams::new(5u64.to_le_bytes().to_vec(), 7u64.to_le_bytes().to_vec(), 7),
            r#"{"parent_head":"0x0500000000000000","block_data":"0x0700000000000000","relay_parent_number":7}"#,
        ),
        (
            "undying",
            ValidationParams::new(
                vec![1],
                [&1000u32.to_le_bytes()[..], b"payload"].concat(),
                7,
            ),
            r#"{"parent_head":"0x01","block_data":"0xe80300007061796c6f6164","relay_parent_number":7}"#,
        ),
    ] {
        let code = pvf_test_guests::bytes(guest);
        let dir = tempfile::tempdir().unwrap();
        let params_file = dir.path().join("params.json");
        std::fs::write(&params_file, json).unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        let host = ValidationHost::new(
            Dir::open_ambient_dir(&store, ambient_authority()).unwrap(),
            Config::new(),
        )
        .unwrap();
        let expected = match host.validate(&code, &params).verdict {
            pvf_host::Verdict::Valid(r) => r.head_data,
            other => panic!("{guest}: {other:?}"),
        };
        g.bench_function(format!("{guest}/in_process"), |b| {
            b.iter(|| {
                let outcome = host.validate(&code, &params);
                assert_eq!(outcome.cache.as_str(), "hit");
                outcome
            })
        });
        // The CLI's own store (its fingerprint hashes the pvf binary, not this one).
        let (cli_store, code_path) = (dir.path().join("cli-store"), pvf_test_guests::path(guest));
        let cli = || pvf_validate_process(&cli_store, &code_path, &params_file);
        let first = cli();
        assert!(first.status.success());
        let head = format!("0x{}", hex::encode(&expected));
        g.bench_function(format!("{guest}/process_per_call"), |b| {
            b.iter(|| {
                let out = cli();
                assert!(String::from_utf8_lossy(&out.stdout).contains(&head));
                out
            })
        });
    }
    g.finish();
}

criterion_group!(benches, process_per_call);
criterion_main!(benches);
