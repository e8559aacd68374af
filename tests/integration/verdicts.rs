//! Verdicts from the library on the bundled guests, and preparation of bad code.

use pvf_host::{
    CacheStatus, ExecuteError, FailureClass, PrepareError, ValidationError, ValidationParams,
    Verdict,
};

use crate::common::*;

#[test]
fn adder_is_valid_and_second_call_hits() {
    let dir = store_dir();
    let host = host(dir.path());
    let code = guest("adder");
    let first = host.validate(&code, &adder_params(40, 2));
    assert_valid(&first, &42u64.to_le_bytes(), CacheStatus::Miss);
    let second = host.validate(&code, &adder_params(u64::MAX, 2));
    assert_valid(&second, &1u64.to_le_bytes(), CacheStatus::Hit);
    match second.verdict {
        Verdict::Valid(r) => assert_eq!(r.hrmp_watermark, 7),
        _ => unreachable!(),
    }
}

#[test]
fn adder_short_input_is_invalid_by_guest_err() {
    let dir = store_dir();
    let host = host(dir.path());
    let params = ValidationParams::new(vec![1, 2, 3], 2u64.to_le_bytes().to_vec(), 7);
    let outcome = host.validate(&guest("adder"), &params);
    match outcome.verdict {
        Verdict::Invalid(ValidationError::Execute(ExecuteError::GuestRejected(reason))) => {
            assert!(reason.contains("parent head is 3 bytes"), "{reason}");
        }
        other => panic!("expected guest rejection, got {other:?}"),
    }
}

#[test]
fn reject_is_invalid_with_the_guests_reason() {
    let dir = store_dir();
    let outcome = host(dir.path()).validate(&guest("reject"), &adder_params(1, 2));
    match outcome.verdict {
        Verdict::Invalid(e @ ValidationError::Execute(ExecuteError::GuestRejected(_))) => {
            assert_eq!(e.class(), FailureClass::Deterministic);
            assert!(
                e.to_string()
                    .contains("rejected: block of 8 bytes at relay parent 7"),
                "{e}"
            );
        }
        other => panic!("expected guest rejection, got {other:?}"),
    }
}

#[test]
fn trap_is_invalid_and_reports_the_panic() {
    let dir = store_dir();
    let outcome = host(dir.path()).validate(&guest("trap"), &adder_params(1, 2));
    match outcome.verdict {
        Verdict::Invalid(ValidationError::Execute(ExecuteError::Trap(reason))) => {
            assert!(reason.contains("unreachable"), "{reason}");
            assert!(reason.contains("trap guest panics on purpose"), "{reason}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[test]
fn halt_times_out_as_indeterminate() {
    let dir = store_dir();
    let host = host(dir.path());
    let outcome = host.validate(&guest("halt"), &adder_params(1, 2));
    match &outcome.verdict {
        Verdict::Indeterminate(e @ ValidationError::Execute(ExecuteError::Timeout(_))) => {
            assert_eq!(e.class(), FailureClass::Indeterminate);
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    // The host still works afterwards.
    assert_valid(
        &host.validate(&guest("adder"), &adder_params(1, 2)),
        &3u64.to_le_bytes(),
        CacheStatus::Miss,
    );
}

#[test]
fn undying_is_deterministic_and_depends_on_rounds() {
    let dir = store_dir();
    let host = host(dir.path());
    let code = guest("undying");
    let head = |rounds| match host.validate(&code, &undying_params(rounds)).verdict {
        Verdict::Valid(r) => r.head_data,
        other => panic!("expected valid, got {other:?}"),
    };
    let a = head(100);
    assert_eq!(a, head(100));
    assert_ne!(a, head(101));
    assert_eq!(&a[8..], &100u32.to_le_bytes());
}

#[test]
fn zstd_compressed_code_is_accepted_and_shares_the_artifact() {
    let dir = store_dir();
    let host = host(dir.path());
    let code = guest("adder");
    let compressed = zstd::encode_all(&code[..], 3).expect("compress");
    assert_valid(
        &host.validate(&compressed, &adder_params(1, 1)),
        &2u64.to_le_bytes(),
        CacheStatus::Miss,
    );
    // The key is the hash of the decompressed code: the plain code hits the same artifact.
    assert_valid(
        &host.validate(&code, &adder_params(1, 1)),
        &2u64.to_le_bytes(),
        CacheStatus::Hit,
    );
}

#[test]
fn compression_bomb_is_rejected_without_inflating_it() {
    let dir = store_dir();
    let host = host(dir.path());
    // 200 MiB of zeros compress to a few KiB; the limit is 64 MiB.
    let mut encoder = zstd::Encoder::new(Vec::new(), 19).expect("encoder");
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..200 {
        std::io::Write::write_all(&mut encoder, &chunk).expect("compress");
    }
    let bomb = encoder.finish().expect("finish");
    assert!(bomb.len() < 1 << 20);
    match host.prepare(&bomb) {
        Err(e @ ValidationError::Prepare(PrepareError::TooLarge { .. })) => {
            assert_eq!(e.class(), FailureClass::Deterministic);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(files_in_store(dir.path(), &host).is_empty());
}

#[test]
fn bad_code_is_invalid_and_only_its_failure_is_remembered() {
    let dir = store_dir();
    let host = host(dir.path());
    let adder = guest("adder");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "not a WebAssembly binary"),
        ("text", b"hello, world".to_vec(), "not a WebAssembly binary"),
        (
            "core module",
            wat::parse_str("(module)").unwrap(),
            "core WebAssembly module",
        ),
        (
            "truncated component",
            adder[..adder.len() / 2].to_vec(),
            "invalid code",
        ),
        (
            "broken zstd",
            vec![0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3],
            "does not decompress",
        ),
        (
            "empty component",
            wat::parse_str("(component)").unwrap(),
            "does not target",
        ),
        (
            "wrong signature",
            wat::parse_str(
                r#"(component
                    (core module $m (func (export "f") (result i32) i32.const 0))
                    (core instance $i (instantiate $m))
                    (func $f (result u32) (canon lift (core func $i "f")))
                    (instance $v (export "validate-block" (func $f)))
                    (export "pvf:validation/validate@0.1.0" (instance $v)))"#,
            )
            .unwrap(),
            "does not target",
        ),
        (
            "unknown import",
            wat::parse_str(
                r#"(component (import "evil:host/escape" (instance (export "f" (func)))))"#,
            )
            .unwrap(),
            "does not target",
        ),
    ];
    let cases_len = cases.len();
    for (what, code, needle) in &cases {
        let (what, code, needle) = (*what, code.clone(), *needle);
        for result in [
            host.prepare(&code).map(|_| ()),
            host.precheck(&code).map(|_| ()),
        ] {
            let err = result.expect_err(what);
            assert_eq!(err.class(), FailureClass::Deterministic, "{what}: {err}");
            assert!(err.to_string().contains(needle), "{what}: {err}");
        }
        match host.validate(&code, &adder_params(1, 2)).verdict {
            Verdict::Invalid(_) => {}
            other => panic!("{what}: expected invalid, got {other:?}"),
        }
    }
    // Only a failure record per bad code that was hashed (all but the undecodable one): no
    // artifact, temporary file or lock.
    let hashed: Vec<_> = cases
        .iter()
        .filter(|(_, _, needle)| !needle.contains("decompress"))
        .collect();
    assert_eq!(hashed.len(), cases_len - 1);
    let left = files_in_store(dir.path(), &host);
    assert_eq!(left.len(), hashed.len(), "{left:?}");
    assert!(left.iter().all(|n| n.ends_with(".failed")), "{left:?}");
    // A new host (a restart) answers from the records without compiling.
    let again = crate::common::host(dir.path());
    for (what, code, needle) in hashed {
        let err = again.prepare(code).expect_err(what);
        assert_eq!(err.class(), FailureClass::Deterministic, "{what}: {err}");
        let text = err.to_string();
        assert!(
            text.contains(needle) && text.contains("remembered"),
            "{what}: {text}"
        );
    }
}

#[test]
fn precheck_accepts_every_bundled_guest() {
    let dir = store_dir();
    let host = host(dir.path());
    for name in pvf_test_guests::ALL {
        let first = host
            .precheck(&guest(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(first.cache, CacheStatus::Miss);
        assert_eq!(
            host.precheck(&guest(name)).expect(name).cache,
            CacheStatus::Hit
        );
    }
}

#[test]
fn a_javascript_guest_gets_the_same_verdicts_as_its_rust_twin() {
    if !pvf_test_guests::JS_GUEST_BUILT {
        eprintln!("skipped: the JavaScript guest was not built (see the build warning)");
        return;
    }
    let dir = store_dir();
    let host = host(dir.path());
    let js = guest(pvf_test_guests::JS_GUEST);
    let rust = guest("adder");
    for params in [
        adder_params(5, 7),
        adder_params(u64::MAX, 2),
        ValidationParams::new(vec![1, 2, 3], 2u64.to_le_bytes().to_vec(), 7),
    ] {
        let a = host.validate(&js, &params);
        let b = host.validate(&rust, &params);
        match (&a.verdict, &b.verdict) {
            (Verdict::Valid(x), Verdict::Valid(y)) => assert_eq!(x, y),
            (Verdict::Invalid(x), Verdict::Invalid(y)) => assert_eq!(x.to_string(), y.to_string()),
            other => panic!("verdicts differ: {other:?}"),
        }
    }
}
