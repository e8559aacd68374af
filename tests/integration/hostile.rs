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
