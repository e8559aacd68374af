//! The `hostile` guest, one attack per mode: no guest can block the host (its sleeps are
//! virtual), make it do unpriced work or hold unbounded memory (host calls and results are
//! capped), or mislead it (every failure it causes is `invalid`, never `indeterminate`).
//!
//! Every case runs on its own thread with a deadline, so a regression that blocks the host
//! fails the test instead of hanging it.

use std::sync::Arc;
use std::time::Duration;

use pvf_host::{
    Config, DEFAULT_FUEL, ExecuteError, LimitKind, MAX_BLOCK_DATA_BYTES, MAX_HEAD_DATA_BYTES,
    MAX_HORIZONTAL_MESSAGES, MAX_UPWARD_MESSAGES, Outcome, ValidationError, ValidationHost,
    ValidationParams, Verdict,
};

use crate::common::*;

// The guest's modes (guest-components/hostile/src/lib.rs).
const SLEEP_FOREVER: u8 = 0;
const STD_SLEEP: u8 = 1;
const POLL: u8 = 2;
const SLEEP_LOOP: u8 = 3;
const RANDOM_BYTES: u8 = 4;
const LEAK_HANDLES: u8 = 5;
const BIG_HEAD: u8 = 6;
const MANY_UPWARD: u8 = 7;
const MANY_HORIZONTAL: u8 = 8;
const BIG_CODE: u8 = 9;
const EVIL_REASON: u8 = 10;
const BIG_WRITE: u8 = 11;
const MAX_RESULT: u8 = 12;
const CLOCK_LOOP: u8 = 13;
const WRITE_LOOP: u8 = 14;

/// A generous wall clock (a real 30 s sleep would still time out, and fail the test) and a fuel
/// budget small enough that endless loops end by fuel within a second or two.
pub fn hostile_config() -> Config {
    crate::common::config()
        .execution_timeout(Duration::from_secs(20))
        .fuel(100_000_000)
        .memory_cache_bytes(0)
}

/// Params selecting `mode` with argument `n`.
pub fn hostile_params(mode: u8, n: u64) -> ValidationParams {
    let mut block = vec![mode];
    block.extend(n.to_le_bytes());
    ValidationParams::new(vec![], block, 1)
}

/// Validates on another thread and fails the test if no verdict comes within 60 s.
fn validate_bounded(
    host: &Arc<ValidationHost>,
    code: &Arc<Vec<u8>>,
    params: ValidationParams,
) -> Outcome {
    let (tx, rx) = std::sync::mpsc::channel();
    let (host, code) = (Arc::clone(host), Arc::clone(code));
    std::thread::spawn(move || {
        let _ = tx.send(host.validate(&code, &params));
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the host gave no verdict within 60 s: a guest blocked it")
}

/// What a case must give.
enum Expect {
    /// Valid, and the head passes the check.
    Valid(fn(&[u8])),
    /// Invalid by this deterministic limit, the reason containing the text.
    Limit(LimitKind, &'static str),
    /// Invalid because the guest rejected the candidate; the reason passes the check.
    Rejected(fn(&str)),
}

fn u64_at(head: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(head[at..at + 8].try_into().unwrap())
}

fn check(name: &str, outcome: &Outcome, expect: &Expect) {
    match (expect, &outcome.verdict) {
        (Expect::Valid(check_head), Verdict::Valid(result)) => check_head(&result.head_data),
        (
            Expect::Limit(kind, needle),
            Verdict::Invalid(ValidationError::Execute(ExecuteError::ResourceLimit {
                kind: got,
                detail,
            })),
        ) => {
            assert_eq!(got, kind, "{name}: {detail}");
            assert!(
                detail.contains(needle),
                "{name}: {detail:?} lacks {needle:?}"
            );
        }
        (
            Expect::Rejected(check_reason),
            Verdict::Invalid(ValidationError::Execute(ExecuteError::GuestRejected(reason))),
        ) => check_reason(reason),
        (_, other) => panic!("{name}: unexpected verdict {other:?}"),
    }
}

#[test]
fn hostile_guest_modes_get_deterministic_verdicts_at_once() {
    let dir = store_dir();
    // Endless loops run on a small fuel budget, so that they end within a second or two; the
    // modes that fill hundreds of megabytes get the default budget.
    let host = Arc::new(host_with(dir.path(), hostile_config()));
    let roomy = Arc::new(host_with(dir.path(), hostile_config().fuel(DEFAULT_FUEL)));
    let code = Arc::new(guest("hostile"));
    let cases: Vec<(&str, u8, u64, Expect)> = vec![
        (
            "a sleep until the end of time returns at once, the clock at its end",
            SLEEP_FOREVER,
            0,
            Expect::Valid(|head| {
                assert_eq!(u64_at(head, 0), 0);
                assert_eq!(u64_at(head, 8), u64::MAX);
            }),
        ),
        (
            "std::thread::sleep(30 s) returns at once, 30 virtual seconds later",
            STD_SLEEP,
            30,
            Expect::Valid(|head| {
                let slept = u64_at(head, 8) - u64_at(head, 0);
                assert!((30_000_000_000..30_001_000_000).contains(&slept), "{slept}");
            }),
        ),
        (
            "poll over 5 ns, 1 h and never: only the earliest is ready, the clock at 5 ns",
            POLL,
            5,
            Expect::Valid(|head| {
                assert_eq!(head.len(), 4 + 8, "one index, then the clock: {head:?}");
                assert_eq!(&head[..4], &0u32.to_le_bytes());
                assert_eq!(u64_at(head, 4), 5);
            }),
        ),
        (
            "sleeping in a loop forever ends by fuel",
            SLEEP_LOOP,
            0,
            Expect::Limit(LimitKind::Fuel, "fuel budget"),
        ),
        (
            "reading the clock in a loop forever ends by fuel",
            CLOCK_LOOP,
            0,
            Expect::Limit(LimitKind::Fuel, "fuel budget"),
        ),
        (
            "writing 64 KiB to stdout in a loop forever ends by fuel",
            WRITE_LOOP,
            0,
            Expect::Limit(LimitKind::Fuel, "fuel budget"),
        ),
        (
            "64 MiB of random bytes in one call is over the cap",
            RANDOM_BYTES,
            64 << 20,
            Expect::Limit(LimitKind::HostCall, "asked for 67108864 bytes"),
        ),
        (
            "1 MiB of random bytes is served",
            RANDOM_BYTES,
            1 << 20,
            Expect::Valid(|head| assert_eq!(u64_at(head, 32), 1 << 20)),
        ),
        (
            "leaking clock subscriptions fills the host's resource table",
            LEAK_HANDLES,
            0,
            Expect::Limit(LimitKind::HostCall, "resource table is full"),
        ),
        (
            "a head of exactly 1 MiB is valid",
            BIG_HEAD,
            MAX_HEAD_DATA_BYTES as u64,
            Expect::Valid(|head| assert_eq!(head.len(), MAX_HEAD_DATA_BYTES)),
        ),
        (
            "a head one byte over 1 MiB is invalid",
            BIG_HEAD,
            MAX_HEAD_DATA_BYTES as u64 + 1,
            Expect::Limit(LimitKind::Result, "head data of 1048577 bytes"),
        ),
        (
            "a 200 MB head is refused while it is lifted",
            BIG_HEAD,
            200_000_000,
            Expect::Limit(LimitKind::HostCall, "hostcalls has been exhausted"),
        ),
        (
            "16 384 upward messages are valid",
            MANY_UPWARD,
            MAX_UPWARD_MESSAGES as u64,
            Expect::Valid(|_| {}),
        ),
        (
            "16 385 upward messages are invalid",
            MANY_UPWARD,
            MAX_UPWARD_MESSAGES as u64 + 1,
            Expect::Limit(LimitKind::Result, "16385 upward messages"),
        ),
        (
            "5 million empty upward messages are refused while they are lifted",
            MANY_UPWARD,
            5_000_000,
            Expect::Limit(LimitKind::HostCall, "hostcalls has been exhausted"),
        ),
        (
            "16 385 horizontal messages are invalid",
            MANY_HORIZONTAL,
            MAX_HORIZONTAL_MESSAGES as u64 + 1,
            Expect::Limit(LimitKind::Result, "16385 horizontal messages"),
        ),
        (
            "new code over the code limit is invalid",
            BIG_CODE,
            (64 << 20) + 1,
            Expect::Limit(LimitKind::Result, "exceeds the code limit"),
        ),
        (
            "a 10 MB reason is cut to 4 KiB with a marker",
            EVIL_REASON,
            10_000_000,
            Expect::Rejected(|reason| {
                assert!(
                    reason.starts_with("bad block\r\x1b[2K"),
                    "{:?}",
                    &reason[..40]
                );
                assert!(
                    reason.ends_with(" more bytes not shown]"),
                    "{}",
                    reason.len()
                );
                assert!(reason.len() < 4200, "{}", reason.len());
            }),
        ),
        (
            "a 200 MB write ignoring check-write is refused while it is lifted",
            BIG_WRITE,
            200_000_000,
            Expect::Limit(LimitKind::HostCall, "hostcalls has been exhausted"),
        ),
        (
            "the largest result the contract allows is valid",
            MAX_RESULT,
            64 << 20,
            Expect::Valid(|head| assert_eq!(head.len(), MAX_HEAD_DATA_BYTES)),
        ),
    ];
    for (name, mode, n, expect) in &cases {
        let host = if *n >= 1_000_000 { &roomy } else { &host };
        // Twice: a deterministic verdict is the same every time.
        let first = validate_bounded(host, &code, hostile_params(*mode, *n));
        check(name, &first, expect);
        let second = validate_bounded(host, &code, hostile_params(*mode, *n));
        check(name, &second, expect);
        if let (Verdict::Valid(a), Verdict::Valid(b)) = (&first.verdict, &second.verdict) {
            assert_eq!(a, b, "{name}: the same result twice");
        }
    }
}

#[test]
fn params_over_the_limits_are_invalid() {
    let dir = store_dir();
    let host = host(dir.path());
    let adder = guest("adder");
    for (params, needle) in [
        (
            ValidationParams::new(vec![0; MAX_HEAD_DATA_BYTES + 1], vec![0; 8], 1),
            "parent head of 1048577 bytes",
        ),
        (
            ValidationParams::new(vec![0; 8], vec![0; MAX_BLOCK_DATA_BYTES + 1], 1),
            "block data of 10485761 bytes",
        ),
    ] {
        match host.validate(&adder, &params).verdict {
            Verdict::Invalid(ValidationError::Execute(ExecuteError::ResourceLimit {
                kind: LimitKind::Params,
                detail,
            })) => assert!(detail.contains(needle), "{detail}"),
            other => panic!("expected invalid params, got {other:?}"),
        }
    }
}

/// Runs `pvf validate` under `ulimit -d kib` (the data segment limit, which counts the memory a
/// guest's linear memory grows into), bounded by [`run`]'s deadline.
fn validate_under_data_limit(
    dir: &std::path::Path,
    code: &std::path::Path,
    params: &std::path::Path,
    kib: u64,
) -> (i32, String) {
    let out = run(std::process::Command::new("bash").arg("-c").arg(format!(
        "ulimit -d {kib} && exec {pvf} --cache-dir {dir} --json validate {code} --params {params}",
        pvf = env!("CARGO_BIN_EXE_pvf"),
        dir = dir.display(),
        code = code.display(),
        params = params.display(),
    )));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // A process killed by a signal (an allocation the OS refused outside the guest aborts the
    // process) has no exit code: that ends, and is no verdict.
    (out.status.code().unwrap_or(-1), stdout)
}

/// When the OS refuses memory that the limits allow, the guest must not see a normal `-1` from
/// `memory.grow` (its allocator would trap, and the verdict would be a false `invalid`): the
/// verdict is `indeterminate`. Searches the data-segment limit at which `alloc` of 300 MB just
/// fits, then runs below it; no limit may give `invalid`.
#[test]
fn an_os_memory_refusal_is_indeterminate_never_invalid() {
    let dir = store_dir();
    let store = dir.path().join("store");
    let code = pvf_test_guests::path("alloc");
    let params = write_file(
        dir.path(),
        "params.json",
        format!(
            r#"{{"parent_head": "", "block_data": "0x{}", "relay_parent_number": 1}}"#,
            hex::encode((300u64 << 20).to_le_bytes())
        ),
    );
    // Prepared without a limit, so that the limited runs only load and execute.
    let out = run(pvf(&store).arg("prepare").arg(&code));
    assert!(out.status.success(), "{out:?}");
    let (mut too_small, mut enough) = (0u64, 16u64 << 20); // KiB: 0 .. 16 GiB
    let mut seen = Vec::new();
    while enough - too_small > 16 << 10 {
        let mid = (too_small + enough) / 2;
        let (code_, stdout) = validate_under_data_limit(&store, &code, &params, mid);
        assert_ne!(
            code_, 1,
            "ulimit -d {mid}: an OS refusal became invalid: {stdout}"
        );
        seen.push((mid, code_));
        if code_ == 0 {
            enough = mid;
        } else {
            too_small = mid;
        }
    }
    // 150 MB below the smallest limit that fits: the engine and the store open, the guest's
    // growth to 300 MB is refused by the OS.
    let below = enough - (150 << 10);
    let (code_, stdout) = validate_under_data_limit(&store, &code, &params, below);
    assert_eq!(
        code_, 2,
        "ulimit -d {below} (fits at {enough}, tried {seen:?}): {stdout}"
    );
    assert!(
        stdout.contains("could not provide") && stdout.contains("linear memory"),
        "{stdout}"
    );
}

/// The largest result the contract allows, printed by `pvf --json validate`, costs the process a
/// bounded amount of memory: the guest's memory and the lifted copy, with the hex text streamed
/// into stdout (measured 212 MB peak; 512 MB when the JSON was built as strings first).
#[test]
fn the_largest_legal_result_costs_bounded_host_memory() {
    let dir = store_dir();
    let store = dir.path().join("store");
    let params = write_file(
        dir.path(),
        "params.json",
        format!(
            r#"{{"parent_head": "", "block_data": "0x{}", "relay_parent_number": 1}}"#,
            hex::encode(hostile_params(MAX_RESULT, 64 << 20).block_data)
        ),
    );
    let mut child = pvf(&store)
        .arg("--json")
        .arg("validate")
        .arg(pvf_test_guests::path("hostile"))
        .arg("--params")
        .arg(&params)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn pvf");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut peak = 0;
    let status = loop {
        peak = peak.max(peak_rss(child.id()).unwrap_or(0));
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("pvf did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(status.success(), "{status}");
    assert!(peak > 0, "the peak was sampled");
    assert!(peak < 350 << 20, "peak resident memory {peak} bytes");
}

/// The WAT that gives a hand-written component the contract's exact `validate-block` export:
/// the contract's types, and `validate` of core instance `$i` lifted over the memory `mem` of
/// core instance `memory_instance` (with `$i`'s `realloc`).
fn contract_export(memory_instance: &str) -> String {
    format!(
        r#"(type $params' (record (field "parent-head" (list u8)) (field "block-data" (list u8))
    (field "relay-parent-number" u32) (field "relay-parent-storage-root" (list u8))))
  (type $msg' (record (field "recipient" u32) (field "data" (list u8))))
  (export $msg "outbound-hrmp-message" (type $msg'))
  (export $params "validation-params" (type $params'))
  (type $res' (record (field "head-data" (list u8)) (field "new-validation-code" (option (list u8)))
    (field "upward-messages" (list (list u8))) (field "horizontal-messages" (list $msg))
    (field "processed-downward-messages" u32) (field "hrmp-watermark" u32)))
  (export $res "validation-result" (type $res'))
  (func $f (param "params" $params) (result (result $res (error string)))
    (canon lift (core func $i "validate") (memory (core memory {memory_instance} "mem"))
      (realloc (core func $i "realloc"))))
  (instance $v (export "validate-block" (func $f)))
  (export "pvf:validation/validate@0.1.0" (instance $v))"#
    )
}

/// A hand-written component with the contract's exact `validate-block`, whose core function
/// ignores its arguments and returns `ret` as the pointer to its result, over a memory whose
/// first bytes are `data` (a WAT string) and which holds `extra` at offset 64.
fn malformed_result_component(data: &str, extra: &str, ret: i64) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(component
  (core module $m
    (memory (export "mem") 1)
    (data (i32.const 0) "{data}")
    (data (i32.const 64) "{extra}")
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) i32.const 1024)
    (func (export "validate") (param i32 i32 i32 i32 i32 i32 i32) (result i32) i32.const {ret}))
  (core instance $i (instantiate $m))
  {contract})"#,
        contract = contract_export("$i")
    ))
    .expect("valid WAT")
}

/// A result the canonical ABI cannot decode is the guest's doing, the same on every node:
/// `invalid`, never `indeterminate` (which would let any author make every node abstain).
#[test]
fn a_malformed_result_is_invalid_not_indeterminate() {
    let cases = [
        // `err` whose string points past the end of memory.
        (
            "string out of bounds",
            r"\01\00\00\00\00\00\ff\ff\0a\00\00\00",
            "",
            0,
        ),
        // `err` whose string is not UTF-8.
        (
            "invalid UTF-8",
            r"\01\00\00\00\40\00\00\00\02\00\00\00",
            r"\ff\fe",
            0,
        ),
        // A `result` discriminant that is neither ok nor err.
        ("bad discriminant", r"\07", "", 0),
        // The return pointer misaligned, then past the end of memory.
        ("misaligned return pointer", "", "", 1),
        ("return pointer out of bounds", "", "", 0xffff_fff0),
        // `ok` whose head data points past the end of memory.
        (
            "head out of bounds",
            r"\00\00\00\00\f0\ff\ff\ff\64\00\00\00",
            "",
            0,
        ),
    ];
    let dir = store_dir();
    let host = host(dir.path());
    for (what, data, extra, ret) in cases {
        let code = malformed_result_component(data, extra, ret);
        host.precheck(&code)
            .unwrap_or_else(|e| panic!("{what}: precheck: {e}"));
        let outcome = host.validate(&code, &adder_params(1, 2));
        match &outcome.verdict {
            Verdict::Invalid(ValidationError::Execute(ExecuteError::Trap(reason))) => {
                assert!(reason.contains("malformed value"), "{what}: {reason}");
            }
            other => panic!("{what}: expected invalid (malformed value), got {other:?}"),
        }
    }
}

/// A hand-written component that calls `pvf:crypto/signatures.ed25519-verify` with a signature
/// list pointing past the end of its memory, and otherwise returns `err("unreachable")`.
fn malformed_import_argument_component() -> Vec<u8> {
    wat::parse_str(format!(
        r#"(component
  (type $verify (func (param "signature" (list u8)) (param "message" (list u8))
    (param "public-key" (list u8)) (result bool)))
  (import "pvf:crypto/signatures@0.1.0" (instance $crypto (export "ed25519-verify" (func (type $verify)))))
  (core module $memory (memory (export "mem") 1))
  (core instance $mem (instantiate $memory))
  (core func $verify (canon lower (func $crypto "ed25519-verify") (memory (core memory $mem "mem"))))
  (core module $m
    (import "host" "mem" (memory 1))
    (import "host" "verify" (func $verify (param i32 i32 i32 i32 i32 i32) (result i32)))
    (data (i32.const 0) "\01\00\00\00\40\00\00\00\0b\00\00\00")
    (data (i32.const 64) "unreachable")
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) i32.const 1024)
    (func (export "validate") (param i32 i32 i32 i32 i32 i32 i32) (result i32)
      (drop (call $verify (i32.const 0xfffff000) (i32.const 64) (i32.const 0) (i32.const 0)
        (i32.const 0) (i32.const 32)))
      i32.const 0))
  (core instance $i (instantiate $m (with "host" (instance
    (export "mem" (memory $mem "mem")) (export "verify" (func $verify))))))
  {contract})"#,
        contract = contract_export("$mem")
    ))
    .expect("valid WAT")
}

/// The same for an extension's argument: a list the guest passes to `pvf:crypto` that points
/// past the end of its memory is `invalid` (and is refused before the body runs).
#[test]
fn a_malformed_extension_argument_is_invalid_not_indeterminate() {
    let dir = store_dir();
    let host = host(dir.path());
    let code = malformed_import_argument_component();
    let outcome = host.validate(&code, &adder_params(1, 2));
    match &outcome.verdict {
        Verdict::Invalid(ValidationError::Execute(ExecuteError::Trap(reason))) => {
            assert!(reason.contains("malformed value"), "{reason}");
            assert!(reason.contains("out of bounds"), "{reason}");
        }
        other => panic!("expected invalid (malformed value), got {other:?}"),
    }
}
