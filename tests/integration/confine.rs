//! The worker's OS confinement, tried for real: `pvf __pvf-confine-probe` confines itself as a
//! worker does, then attempts one forbidden thing. Each test asserts *which* layer refused it:
//! death by `SIGSYS` is seccomp's allowlist; `ENOSYS` from `openat` is seccomp's answer; `EACCES`
//! with seccomp off is landlock; `ENETUNREACH` with only namespaces is the net namespace;
//! `EAGAIN` from a thread start is `NPROC`. A layer this kernel (or container) lacks makes its
//! tests say so and pass. Every wait is bounded.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const PROBE: &str = "__pvf-confine-probe";

/// The probe, with its arguments, stdin closed.
fn probe_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pvf"));
    cmd.arg(PROBE).args(args).stdin(Stdio::null());
    cmd
}

/// Runs the probe (30 s, 1 GiB at most).
fn probe(args: &[&str]) -> Output {
    run_bounded(&mut probe_cmd(args), Duration::from_secs(30), 1 << 30).0
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}, stdout {:?}, stderr {}",
        out.status,
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Each layer's state in this environment: name → (active, detail or reason), from the probe's
/// `report` under the production policy.
fn report() -> HashMap<String, (bool, String)> {
    let out = probe(&["report"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    stdout(&out)
        .lines()
        .map(|line| {
            let mut fields = line.splitn(3, '\t');
            let name = fields.next().unwrap().to_owned();
            let active = match fields.next() {
                Some("active") => true,
                Some("unavailable") => false,
                other => panic!("bad state {other:?} in {line:?}"),
            };
            (name, (active, fields.next().unwrap_or("").to_owned()))
        })
        .collect()
}

/// Whether `layer` is active here; if not, prints why the caller's test is skipped.
fn active(layer: &str) -> bool {
    let report = report();
    match report.get(layer) {
        Some((true, _)) => true,
        Some((false, why)) => {
            eprintln!("skipped: {layer} is unavailable here: {why}");
            false
        }
        None => panic!("the report has no {layer}: {report:?}"),
    }
}

fn assert_killed_by_seccomp(args: &[&str]) {
    if !active("seccomp") {
        return;
    }
    let out = probe(args);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSYS),
        "{args:?} must be killed by the seccomp allowlist: {}",
        describe(&out)
    );
    assert_eq!(stdout(&out), "", "nothing printed after the forbidden call");
}

fn assert_denied(args: &[&str], expected: &str, layer: &str) {
    let out = probe(args);
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), expected),
        "{args:?} must be refused by {layer}: {}",
        describe(&out)
    );
}

#[test]
fn the_report_names_every_layer() {
    let report = report();
    for name in [
        "no_new_privs",
        "namespace.user",
        "namespace.mount",
        "namespace.net",
        "namespace.ipc",
        "namespace.uts",
        "namespace.pid",
        "capabilities",
        "rlimit.nofile",
        "rlimit.nproc",
        "rlimit.core",
        "rlimit.fsize",
        "landlock",
        "seccomp",
    ] {
        let (active, text) = report.get(name).unwrap_or_else(|| panic!("no {name}"));
        if !active {
            assert!(!text.is_empty(), "{name} is unavailable without a reason");
        }
    }
    assert_eq!(report.len(), 14, "{report:?}");
}

#[test]
fn socket_is_killed_by_seccomp() {
    assert_killed_by_seccomp(&["socket"]);
}

#[test]
fn connect_is_killed_by_seccomp() {
    // `socket` comes first, and kills.
    assert_killed_by_seccomp(&["connect", "9"]);
}

#[test]
fn execve_is_killed_by_seccomp() {
    assert_killed_by_seccomp(&["execve"]);
}

#[test]
fn fork_is_killed_by_seccomp() {
    assert_killed_by_seccomp(&["fork"]);
}

#[test]
fn ptrace_is_killed_by_seccomp() {
    assert_killed_by_seccomp(&["ptrace"]);
}

#[test]
fn io_uring_is_killed_by_seccomp() {
    assert_killed_by_seccomp(&["io-uring"]);
}

#[test]
fn openat_is_answered_enosys_by_seccomp() {
    if active("seccomp") {
        assert_denied(&["open-outside"], "denied errno=ENOSYS", "seccomp");
    }
}

#[test]
fn the_probe_actions_are_allowed_without_confinement() {
    // The control: with no layer, the same actions succeed, so a refusal above is the layer's.
    let out = probe(&["--only", "", "open-outside", "/proc/self/status"]);
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(3), "allowed"),
        "{}",
        describe(&out)
    );
    let out = probe(&["--only", "", "execve"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let out = probe(&["--only", "", "fork"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
}

#[test]
fn landlock_alone_refuses_to_open_a_file() {
    if active("landlock") {
        assert_denied(
            &["--only", "landlock", "open-outside", "/proc/self/status"],
            "denied errno=EACCES",
            "landlock",
        );
    }
}

#[test]
fn phase_one_refuses_open_and_execve_by_landlock() {
    // Without seccomp, the syscalls reach the kernel: landlock answers EACCES.
    if active("landlock") {
        assert_denied(
            &["--phase1-only", "open-outside"],
            "denied errno=EACCES",
            "landlock",
        );
        assert_denied(
            &["--phase1-only", "execve"],
            "denied errno=EACCES",
            "landlock",
        );
    }
}

#[test]
fn landlock_refuses_tcp_connect() {
    let report = report();
    let (active, detail) = &report["landlock"];
    let abi: u32 = detail
        .split(|c: char| !c.is_ascii_digit())
        .find(|s| !s.is_empty())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if !active || abi < 4 {
        eprintln!("skipped: landlock restricts TCP from ABI 4 ({detail})");
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let out = probe(&["--only", "", "connect", &port]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "the control connects: {}",
        describe(&out)
    );
    assert_denied(
        &["--only", "landlock", "connect", &port],
        "denied errno=EACCES",
        "landlock",
    );
}

#[test]
fn the_net_namespace_has_no_route() {
    if !active("namespace.net") {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    assert_denied(
        &["--only", "namespaces", "connect", &port],
        "denied errno=ENETUNREACH",
        "the net namespace",
    );
}

#[test]
fn the_worker_is_pid_1_of_its_namespace() {
    if active("namespace.pid") {
        let out = probe(&["pid"]);
        assert_eq!(stdout(&out), "pid=1", "{}", describe(&out));
    }
}

#[test]
fn the_rlimits_are_set() {
    let out = probe(&["limits"]);
    let line = stdout(&out);
    assert!(line.starts_with("nofile=8 nproc="), "{}", describe(&out));
    assert!(line.ends_with(" core=0 fsize=0"), "{}", describe(&out));
}

#[test]
fn nproc_bounds_the_threads() {
    // As root the kernel ignores NPROC: run the probe as nobody when we can.
    let root = rustix::process::geteuid().is_root();
    let mut cmd = if root && Path::new("/usr/bin/setpriv").exists() {
        let mut cmd = Command::new("/usr/bin/setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_pvf"));
        cmd
    } else {
        Command::new(env!("CARGO_BIN_EXE_pvf"))
    };
    cmd.arg(PROBE).stdin(Stdio::null());
    let (out, _) = run_bounded(cmd.arg("report"), Duration::from_secs(30), 1 << 30);
    let nproc = stdout(&out)
        .lines()
        .find(|l| l.starts_with("rlimit.nproc\t"))
        .map(str::to_owned)
        .unwrap_or_default();
    if !nproc.starts_with("rlimit.nproc\tactive") {
        eprintln!("skipped: NPROC is not enforced here: {nproc:?}");
        return;
    }
    let threads = |n: &str| {
        let mut cmd = if root {
            let mut cmd = Command::new("/usr/bin/setpriv");
            cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(env!("CARGO_BIN_EXE_pvf"));
            cmd
        } else {
            Command::new(env!("CARGO_BIN_EXE_pvf"))
        };
        cmd.args([PROBE, "threads", n]).stdin(Stdio::null());
        run_bounded(&mut cmd, Duration::from_secs(30), 1 << 30).0
    };
    let out = threads("2");
    assert_eq!(
        stdout(&out),
        "allowed",
        "a few threads start: {}",
        describe(&out)
    );
    let out = threads("500");
    assert_eq!(
        stdout(&out),
        "denied errno=EAGAIN",
        "NPROC stops 500: {}",
        describe(&out)
    );
}

/// Compiles guest `name` in the confined probe; returns the serialized size.
fn compile_confined(name: &str, deadline: Duration) {
    let path = pvf_test_guests::path(name);
    let mut cmd = probe_cmd(&["compile"]);
    cmd.stdin(std::fs::File::open(&path).expect("open the guest"));
    let (out, _) = run_bounded(&mut cmd, deadline, 4 << 30);
    let line = stdout(&out);
    assert!(
        out.status.code() == Some(0) && line.starts_with("compiled ") && line.ends_with(" bytes"),
        "{name} compiles under the allowlist: {}",
        describe(&out)
    );
}

#[test]
fn compile_undying_under_the_allowlist() {
    compile_confined("undying", Duration::from_secs(60));
}

#[test]
fn compile_bulky_on_several_threads_under_the_allowlist() {
    compile_confined("bulky", Duration::from_secs(120));
}

#[test]
fn compile_js_validate_under_the_allowlist() {
    if !pvf_test_guests::JS_GUEST_BUILT {
        eprintln!("skipped: the JavaScript guest was not built (see the build warning)");
        return;
    }
    compile_confined(pvf_test_guests::JS_GUEST, Duration::from_secs(300));
}

/// The children of process `pid` (its main thread's), from `/proc`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Whether `pid` is gone or a zombie.
fn dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn the_worker_dies_with_its_parent_and_its_end_is_mirrored() {
    if !active("namespace.pid") {
        return;
    }
    // `compile` waits for stdin after phase 1: the confined child blocks there.
    let mut parent = probe_cmd(&["compile"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let child = loop {
        if let Some(&child) = children(parent.id()).first() {
            break child;
        }
        assert!(Instant::now() < deadline, "the probe never forked");
        std::thread::sleep(Duration::from_millis(5));
    };
    parent.kill().unwrap();
    let status = parent.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dead(child) {
        assert!(
            Instant::now() < deadline,
            "the confined child outlived its parent"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn doctor_reports_every_layer_as_json() {
    let dir = store_dir();
    let mut cmd = pvf(&dir.path().join("store"));
    let (code, value, stderr) = run_json(cmd.arg("--require-confinement").arg("doctor"));
    assert_eq!(value["isolation"], isolation().as_str());
    assert_eq!(value["probe_error"], serde_json::Value::Null, "{stderr}");
    let fingerprint = value["fingerprint"].as_str().expect("a fingerprint");
    assert_eq!(fingerprint.len(), 64);
    let layers = value["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 14, "{value}");
    // In the worker modes the execution worker's own layers are reported and required too.
    let execution = value["execution_layers"]
        .as_array()
        .expect("execution layers");
    assert_eq!(
        execution.is_empty(),
        isolation() == pvf_host::Isolation::InProcess,
        "{value}"
    );
    assert_eq!(value["execution_error"], serde_json::Value::Null, "{value}");
    let all_active = layers
        .iter()
        .chain(execution)
        .all(|l| l["state"] == "active");
    assert_eq!(value["all_active"], all_active);
    // `--require-confinement` requires the layers only where strangers' code runs in workers.
    let required = isolation().compiles_in_workers();
    assert_eq!(value["required"], required, "{value}");
    assert_eq!(
        code,
        if all_active || !required { 0 } else { 2 },
        "{value} {stderr}"
    );
    for l in layers {
        if l["state"] != "active" {
            assert!(l["reason"].as_str().is_some_and(|r| !r.is_empty()), "{l}");
        }
    }
    // The doctor opens no store.
    assert!(!dir.path().join("store").exists());
}

#[test]
fn doctor_prints_one_line_a_layer() {
    let dir = store_dir();
    let out = run(pvf(dir.path()).arg("doctor"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("isolation    {}", isolation().as_str())),
        "{text}"
    );
    assert!(text.contains("fingerprint  "), "{text}");
    for layer in ["no_new_privs", "landlock", "seccomp", "namespace.pid"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(layer)),
            "{text}"
        );
    }
    assert!(matches!(out.status.code(), Some(0 | 2)), "{out:?}");
}
