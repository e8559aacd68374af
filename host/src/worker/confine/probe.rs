//! The confinement probe: `pvf __pvf-confine-probe [OPTIONS] ACTION [ARG]` applies the
//! confinement exactly as a worker does (phase 1, then phase 2), then tries ACTION and prints
//! one line on stdout saying what happened. The integration tests and `pvf doctor` run it.
//!
//! Exit codes: 0 the action was refused with an error (`denied errno=NAME`), or `pid`, `limits`,
//! `report` or `compile` succeeded; 3 it was allowed (`allowed`); 1 the probe itself failed; 64
//! usage. The line is on stdout; the report and the time each phase took go to stderr. A syscall the seccomp allowlist forbids kills
//! the process with `SIGSYS` (and the line is never printed).
//!
//! Options: `--phase1-only` (every layer but seccomp), `--only LAYER[,LAYER...]` (`no_new_privs`,
//! `namespaces`, `rlimits`, `landlock`, `seccomp`), `--max-tasks N` (`NPROC`),
//! `--max-open-files N` (`NOFILE`).
//!
//! Actions:
//! - `open-outside [PATH]`: open PATH (default `/etc/hostname`) for reading.
//! - `socket`: make a TCP socket. `connect PORT`: connect to 127.0.0.1:PORT over TCP.
//! - `execve`: run `/bin/sh -c 'exit 3'` in place of this process.
//! - `fork`: fork a child (which exits at once).
//! - `ptrace`: `PTRACE_TRACEME`. `io-uring`: `io_uring_setup` (`EFAULT` means it reached io_uring).
//! - `threads N`: start N threads at once (`NPROC`).
//! - `pid`: print `pid=N` (1 in the worker's pid namespace). `limits`: print the rlimits (as
//!   they were after phase 1).
//! - `report`: print the [`ConfineReport`], one line a layer (see [`ConfineReport::to_lines`]).
//! - `compile`: read a component from stdin after phase 1 (before phase 2), compile and
//!   serialize it as the worker would: `compiled N bytes`.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::process::ExitCode;

use rustix::io::Errno;

use super::{ConfinePolicy, ConfineReport, Layer, confine_process, restrict_syscalls};

/// The action was refused with an error.
const EXIT_DENIED: u8 = 0;
/// `pid`, `limits`, `report` and `compile` succeeded.
const EXIT_OK: u8 = 0;
/// The probe itself failed.
const EXIT_FAILED: u8 = 1;
/// The action was allowed.
const EXIT_ALLOWED: u8 = 3;
/// Bad arguments.
const EXIT_USAGE: u8 = 64;

/// The largest component `compile` reads.
const MAX_COMPILE_INPUT: u64 = 256 << 20;

/// What the probe tries once confined.
enum Action {
    OpenOutside(String),
    Socket,
    Connect(u16),
    Execve,
    Fork,
    Ptrace,
    IoUring,
    Threads(usize),
    Pid,
    Limits,
    Report,
    Compile,
}

/// The probe entry (see the module doc): `args` are the arguments after the probe's own.
pub fn probe_main(args: &[OsString]) -> ExitCode {
    let (policy, action) = match parse(args) {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "usage: pvf __pvf-confine-probe [--phase1-only | --only LAYERS] [--max-tasks N] \
                 [--max-open-files N] ACTION [ARG]: {e}"
            );
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let started = std::time::Instant::now();
    let mut report = confine_process(&policy);
    let phase1 = started.elapsed();
    // Read before phase 2: reading limits (`prlimit64`) is not on the allowlist.
    let limits_line = limits();
    let job = if let Action::Compile = action {
        let mut bytes = Vec::new();
        if let Err(e) = std::io::stdin()
            .lock()
            .take(MAX_COMPILE_INPUT)
            .read_to_end(&mut bytes)
        {
            return failed(&format!("reading the component from stdin: {e}"));
        }
        bytes
    } else {
        Vec::new()
    };
    let started = std::time::Instant::now();
    report.layers.push(restrict_syscalls(&policy));
    let phase2 = started.elapsed();
    // For whoever reads the test's output: what was in force. (Not `eprintln!`, which panics
    // when the write fails: with `FSIZE` = 0 it does if stderr is a regular file.)
    let _ = writeln!(
        std::io::stderr(),
        "{report}\nphase 1: {} µs, phase 2: {} µs",
        phase1.as_micros(),
        phase2.as_micros()
    );
    let code = match action {
        Action::OpenOutside(path) => outcome(
            // `openat`, as the standard library and cap-std open files (the legacy `open`
            // syscall is not on the allowlist either: it kills).
            rustix::fs::openat(
                rustix::fs::CWD,
                path.as_str(),
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map(drop),
        ),
        Action::Socket => outcome(
            rustix::net::socket(
                rustix::net::AddressFamily::INET,
                rustix::net::SocketType::STREAM,
                None,
            )
            .map(drop),
        ),
        Action::Connect(port) => outcome(
            std::net::TcpStream::connect(("127.0.0.1", port))
                .map(drop)
                .map_err(|e| errno_of(&e)),
        ),
        Action::Execve => {
            use std::os::unix::process::CommandExt;
            let e = std::process::Command::new("/bin/sh")
                .args(["-c", "exit 3"])
                .exec();
            outcome(Err(errno_of(&e)))
        }
        Action::Fork => fork_probe(),
        Action::Ptrace => outcome(ptrace_traceme()),
        Action::IoUring => io_uring_probe(),
        Action::Threads(n) => threads_probe(n),
        Action::Pid => say(&format!("pid={}", std::process::id()), EXIT_OK),
        Action::Limits => say(&limits_line, EXIT_OK),
        Action::Report => print_report(&report),
        Action::Compile => compile(&job),
    };
    ExitCode::from(code)
}

fn parse(args: &[OsString]) -> Result<(ConfinePolicy, Action), String> {
    let mut args = args.iter().map(|a| a.to_string_lossy().into_owned());
    let mut policy = ConfinePolicy::production();
    let mut action = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--phase1-only" => policy = policy.with(Layer::Seccomp, false),
            "--only" => {
                let list = args.next().ok_or("--only needs a list of layers")?;
                policy = ConfinePolicy::none();
                for name in list.split(',').filter(|n| !n.is_empty()) {
                    let layer = Layer::from_name(name).ok_or(format!("no layer {name:?}"))?;
                    policy = policy.with(layer, true);
                }
            }
            "--max-open-files" => {
                let n = args.next().ok_or("--max-open-files needs a number")?;
                policy =
                    policy.max_open_files(n.parse().map_err(|e| format!("--max-open-files: {e}"))?);
            }
            "--max-tasks" => {
                let n = args.next().ok_or("--max-tasks needs a number")?;
                policy = policy.max_tasks(n.parse().map_err(|e| format!("--max-tasks: {e}"))?);
            }
            name => {
                let mut next = || args.next();
                action = Some(match name {
                    "open-outside" => {
                        Action::OpenOutside(next().unwrap_or_else(|| "/etc/hostname".into()))
                    }
                    "socket" => Action::Socket,
                    "connect" => {
                        let port = next().ok_or("connect needs a port")?;
                        Action::Connect(port.parse().map_err(|e| format!("port: {e}"))?)
                    }
                    "execve" => Action::Execve,
                    "fork" => Action::Fork,
                    "ptrace" => Action::Ptrace,
                    "io-uring" => Action::IoUring,
                    "threads" => {
                        let n = next().ok_or("threads needs a count")?;
                        Action::Threads(n.parse().map_err(|e| format!("threads: {e}"))?)
                    }
                    "pid" => Action::Pid,
                    "limits" => Action::Limits,
                    "report" => Action::Report,
                    "compile" => Action::Compile,
                    other => return Err(format!("unknown action {other:?}")),
                });
                if let Some(extra) = next() {
                    return Err(format!("unexpected argument {extra:?}"));
                }
            }
        }
    }
    Ok((policy, action.ok_or("no action")?))
}

/// Prints `line` on stdout and returns `code`, or [`EXIT_FAILED`] if the line cannot be written
/// (with `FSIZE` = 0, a write to a regular file fails: stdout must be a pipe or a terminal).
fn say(line: &str, code: u8) -> u8 {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => code,
        Err(_) => EXIT_FAILED,
    }
}

fn failed(why: &str) -> ExitCode {
    ExitCode::from(say(&format!("error: {why}"), EXIT_FAILED))
}

fn outcome(result: Result<(), Errno>) -> u8 {
    match result {
        Ok(()) => say("allowed", EXIT_ALLOWED),
        Err(e) => say(&format!("denied errno={}", errno_name(e)), EXIT_DENIED),
    }
}

/// Inside an execution worker (or a per-job child), tests only: tries one forbidden thing by its
/// probe name (`open-outside`, `socket`, `connect PORT`, `execve`, `fork`, `ptrace`) and says what
/// happened, as the probe's line would: `allowed` or `denied errno=NAME`. A syscall the
/// allowlist forbids kills the process with `SIGSYS` instead (no line).
pub(crate) fn attempt(action: &str) -> String {
    let text = |result: Result<(), Errno>| match result {
        Ok(()) => "allowed".to_owned(),
        Err(e) => format!("denied errno={}", errno_name(e)),
    };
    let mut words = action.split_whitespace();
    match (words.next(), words.next()) {
        (Some("open-outside"), path) => text(
            rustix::fs::openat(
                rustix::fs::CWD,
                path.unwrap_or("/etc/hostname"),
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map(drop),
        ),
        (Some("socket"), _) => text(
            rustix::net::socket(
                rustix::net::AddressFamily::INET,
                rustix::net::SocketType::STREAM,
                None,
            )
            .map(drop),
        ),
        (Some("connect"), Some(port)) => match port.parse::<u16>() {
            Ok(port) => text(
                std::net::TcpStream::connect(("127.0.0.1", port))
                    .map(drop)
                    .map_err(|e| errno_of(&e)),
            ),
            Err(e) => format!("error: port: {e}"),
        },
        (Some("execve"), _) => {
            use std::os::unix::process::CommandExt;
            let e = std::process::Command::new("/bin/sh")
                .args(["-c", "exit 3"])
                .exec();
            text(Err(errno_of(&e)))
        }
        (Some("fork"), _) => match super::namespaces::fork() {
            Ok(None) => std::process::exit(0),
            Ok(Some(child)) => {
                let _ =
                    rustix::process::waitpid(Some(child), rustix::process::WaitOptions::empty());
                "allowed".to_owned()
            }
            Err(e) => text(Err(e)),
        },
        (Some("ptrace"), _) => text(ptrace_traceme()),
        _ => format!("error: unknown probe action {action:?}"),
    }
}

fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_raw_os_error(e.raw_os_error().unwrap_or(0))
}

/// The symbolic name of the errors the probes meet.
fn errno_name(e: Errno) -> String {
    let name = match e {
        Errno::ACCESS => "EACCES",
        Errno::PERM => "EPERM",
        Errno::NOSYS => "ENOSYS",
        Errno::NETUNREACH => "ENETUNREACH",
        Errno::CONNREFUSED => "ECONNREFUSED",
        Errno::AGAIN => "EAGAIN",
        Errno::INVAL => "EINVAL",
        Errno::NOENT => "ENOENT",
        Errno::FAULT => "EFAULT",
        Errno::MFILE => "EMFILE",
        Errno::AFNOSUPPORT => "EAFNOSUPPORT",
        other => return format!("{}", other.raw_os_error()),
    };
    name.to_owned()
}

fn fork_probe() -> u8 {
    match super::namespaces::fork() {
        Ok(None) => std::process::exit(0),
        Ok(Some(child)) => {
            let _ = rustix::process::waitpid(Some(child), rustix::process::WaitOptions::empty());
            say("allowed", EXIT_ALLOWED)
        }
        Err(e) => outcome(Err(e)),
    }
}

#[allow(unsafe_code)]
fn ptrace_traceme() -> Result<(), Errno> {
    // SAFETY: PTRACE_TRACEME reads and writes no memory of the caller (its other arguments are
    // ignored); it only makes the parent this process's tracer.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_TRACEME,
            0,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    if r == -1 {
        Err(errno_of(&std::io::Error::last_os_error()))
    } else {
        Ok(())
    }
}

#[allow(unsafe_code)]
fn io_uring_probe() -> u8 {
    // SAFETY: `io_uring_setup(1, NULL)`: the kernel validates the null parameter pointer and
    // fails with EFAULT; no memory of ours is read or written.
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_uring_setup,
            1,
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    let e = errno_of(&std::io::Error::last_os_error());
    match (r, e) {
        // It reached io_uring (which checked the pointer): allowed.
        (-1, Errno::FAULT) | (0.., _) => say("allowed errno=EFAULT", EXIT_ALLOWED),
        (_, e) => outcome(Err(e)),
    }
}

fn threads_probe(n: usize) -> u8 {
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let stop_rx = std::sync::Arc::new(std::sync::Mutex::new(stop_rx));
    let mut handles = Vec::with_capacity(n);
    let mut refused = None;
    for _ in 0..n {
        let stop = stop_rx.clone();
        match std::thread::Builder::new().spawn(move || {
            let _ = stop.lock().map(|rx| rx.recv());
        }) {
            Ok(h) => handles.push(h),
            Err(e) => {
                refused = Some(errno_of(&e));
                break;
            }
        }
    }
    drop(stop_tx);
    for h in handles {
        let _ = h.join();
    }
    outcome(refused.map_or(Ok(()), Err))
}

fn limits() -> String {
    use rustix::process::{Resource, getrlimit};
    let show = |r| match getrlimit(r).current {
        Some(n) => n.to_string(),
        None => "unlimited".into(),
    };
    format!(
        "nofile={} nproc={} core={} fsize={}",
        show(Resource::Nofile),
        show(Resource::Nproc),
        show(Resource::Core),
        show(Resource::Fsize)
    )
}

fn print_report(report: &ConfineReport) -> u8 {
    let mut out = std::io::stdout().lock();
    match out
        .write_all(report.to_lines().as_bytes())
        .and_then(|()| out.flush())
    {
        Ok(()) => EXIT_OK,
        Err(_) => EXIT_FAILED,
    }
}

/// Compiles `code` as the worker will: the one engine configuration, without the pooling
/// allocator.
fn compile(code: &[u8]) -> u8 {
    let config = crate::engine::wasmtime_config(&crate::Config::new().pooling(false));
    let result = wasmtime::Engine::new(&config)
        .and_then(|engine| wasmtime::component::Component::new(&engine, code))
        .and_then(|component| component.serialize());
    match result {
        Ok(bytes) => say(&format!("compiled {} bytes", bytes.len()), EXIT_OK),
        Err(e) => say(&format!("error: {e:#}"), EXIT_FAILED),
    }
}
