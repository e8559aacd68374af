//! Seccomp: the syscall allowlist of a compiling worker (phase 2), and the smaller one of the
//! parent that waits for it (see `namespaces.rs`).
//!
//! Two filters, installed on every thread (`SECCOMP_FILTER_FLAG_TSYNC`), because a seccompiler
//! filter has one action on a match:
//!
//! 1. *answers* (default allow): `openat` and `clone3` fail with `ENOSYS`. The standard library
//!    reads cgroup files to size thread pools (`available_parallelism`) and falls back to
//!    `sched_getaffinity`; glibc tries `clone3` for a thread and falls back to `clone`, whose
//!    flags a filter can read (`clone3`'s are behind a pointer).
//! 2. *allowlist* (default: kill the process, `SIGSYS`): `x86_64::ALLOWED`, each entry with its reason.
//!    It lets `openat` and `clone3` through to the kernel's verdict of the stricter filter 1 (a
//!    kill beats an errno, an errno beats an allow); filter 1 is installed first, and if it
//!    cannot be, filter 2 is not installed either.
//!
//! Everything else kills: among others `open`, `socket`, `connect`, `execve`, `execveat`,
//! `fork`, `vfork`, `clone` without `CLONE_THREAD`, `ptrace`, `io_uring_*`, `mount`, `unshare`,
//! `setns`, `kill`, `bpf`, `perf_event_open`, `userfaultfd`, `memfd_create`, `dup*`, `ioctl`.
//!
//! The list was found by tracing (`strace -f`) `pvf __pvf-confine-probe compile` on the bundled
//! guests (`bulky` compiles on several threads) with glibc 2.41 and the standard library's
//! runtime; a new glibc that uses another syscall for the same thing shows as a `SIGSYS` in the
//! integration tests (`confine::compile_*`).

use std::collections::BTreeMap;

use rustix::process::Pid;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::LayerStatus;

/// The status name.
pub(super) const NAME: &str = "seccomp";

/// Why a filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub(super) enum SeccompError {
    /// The filter did not compile (a bug in the tables below).
    #[error("building the {0} filter: {1}")]
    Build(&'static str, seccompiler::BackendError),
    /// The kernel refused the filter (no seccomp, or a thread that cannot be synchronised).
    #[error("installing the {0} filter: {1}")]
    Install(&'static str, seccompiler::Error),
    /// The allowlist is written for x86_64 syscall numbers.
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    #[error("the allowlist is written for x86_64, not {0}")]
    Architecture(&'static str),
}

/// Installs the answers and the allowlist on every thread.
pub(super) fn install_allowlist(syscalls: super::Syscalls) -> LayerStatus {
    match try_install_allowlist(syscalls) {
        Ok(count) => LayerStatus::active(
            NAME,
            format!(
                "allowlist of {count} syscalls on every thread; anything else kills the process \
                 (SIGSYS); openat and clone3 fail with ENOSYS"
            ),
        ),
        Err(e) => LayerStatus::unavailable(NAME, e.to_string()),
    }
}

/// The allowlist of `syscalls`, compiled, for a per-job child to apply on itself after it made
/// its namespaces (an extra filter narrows what the inherited one allows).
pub(super) fn compile_allowlist(syscalls: super::Syscalls) -> Result<BpfProgram, SeccompError> {
    x86_64::allowlist(rustix::process::getpid(), syscalls).map(|(program, _)| program)
}

/// Applies `program` to the calling thread (a per-job child is single-threaded).
pub(super) fn apply(program: &BpfProgram) -> Result<(), SeccompError> {
    seccompiler::apply_filter(program).map_err(|e| SeccompError::Install("child", e))
}

/// Installs the waiting parent's filter: wait, die like the child, nothing else.
pub(super) fn install_waiter(me: Pid) -> Result<(), SeccompError> {
    let program = x86_64::waiter(me)?;
    seccompiler::apply_filter_all_threads(&program).map_err(|e| SeccompError::Install("waiter", e))
}

fn try_install_allowlist(syscalls: super::Syscalls) -> Result<usize, SeccompError> {
    let me = rustix::process::getpid();
    let answers = x86_64::answers()?;
    let (allowlist, count) = x86_64::allowlist(me, syscalls)?;
    seccompiler::apply_filter_all_threads(&answers)
        .map_err(|e| SeccompError::Install("answers", e))?;
    seccompiler::apply_filter_all_threads(&allowlist)
        .map_err(|e| SeccompError::Install("allowlist", e))?;
    Ok(count)
}

/// What a rule checks of a syscall's arguments.
#[derive(Clone, Copy)]
enum Args {
    /// Nothing: any arguments.
    Any,
    /// The first argument has all of these bits set.
    FirstHas(u64),
    /// The first argument equals this.
    FirstIs(u64),
    /// The second argument equals this.
    SecondIs(u64),
    /// `tgkill(this process, any thread, SIGABRT)`: an abort (a failed allocation, a double
    /// panic) is reported as `SIGABRT`, not as a forbidden syscall.
    OwnAbort,
    /// `tgkill(any process, any thread, SIGABRT)`: the same for a per-job worker's children,
    /// whose pids the filter cannot know (only they and their parent are in its pid namespace,
    /// and landlock scopes signals to the sandbox).
    AnyAbort,
}

fn rule(args: Args, me: Pid) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    let cond = |index, op, value| SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value);
    let conditions = match args {
        Args::Any => return Ok(Vec::new()),
        Args::FirstHas(bits) => vec![cond(0, SeccompCmpOp::MaskedEq(bits), bits)?],
        Args::FirstIs(value) => vec![cond(0, SeccompCmpOp::Eq, value)?],
        Args::SecondIs(value) => vec![cond(1, SeccompCmpOp::Eq, value)?],
        Args::OwnAbort => vec![
            cond(0, SeccompCmpOp::Eq, me.as_raw_nonzero().get() as u64)?,
            cond(2, SeccompCmpOp::Eq, libc::SIGABRT as u64)?,
        ],
        Args::AnyAbort => vec![cond(2, SeccompCmpOp::Eq, libc::SIGABRT as u64)?],
    };
    Ok(vec![SeccompRule::new(conditions)?])
}

fn compile(
    name: &'static str,
    entries: &[(i64, Args)],
    me: Pid,
    mismatch: SeccompAction,
    matched: SeccompAction,
    arch: TargetArch,
) -> Result<BpfProgram, SeccompError> {
    let build = |e| SeccompError::Build(name, e);
    let mut rules = BTreeMap::new();
    for (nr, args) in entries {
        rules.insert(*nr, rule(*args, me).map_err(build)?);
    }
    let filter = SeccompFilter::new(rules, mismatch, matched, arch).map_err(build)?;
    filter.try_into().map_err(build)
}

#[cfg(target_arch = "x86_64")]
mod x86_64 {
    use super::*;
    use libc::*;

    /// The allowlist of a compiling worker: syscall, argument check. Each line says why.
    pub(super) const ALLOWED: &[(i64, Args)] = &[
        // I/O on the descriptors the worker already has (stdin, stdout, stderr): the job in,
        // the result and logs out. No syscall that makes a descriptor is allowed.
        (SYS_read, Args::Any),
        (SYS_write, Args::Any),
        (SYS_close, Args::Any),
        // `fcntl(fd, F_GETFD)` only: the standard library's check, in builds with debug
        // assertions, that a descriptor it is about to close is open.
        (SYS_fcntl, Args::SecondIs(F_GETFD as u64)),
        // Memory: malloc (brk, mmap arenas, madvise to return memory), wasmtime's code memory
        // (mmap, mprotect to executable), thread stacks and their guard pages, realloc of large
        // buffers (mremap).
        (SYS_brk, Args::Any),
        (SYS_mmap, Args::Any),
        (SYS_munmap, Args::Any),
        (SYS_mprotect, Args::Any),
        (SYS_madvise, Args::Any),
        (SYS_mremap, Args::Any),
        // Threads: locks and condition variables (rayon's pool, std's Mutex), yielding, the
        // thread count (std's available_parallelism).
        (SYS_futex, Args::Any),
        (SYS_sched_yield, Args::Any),
        (SYS_sched_getaffinity, Args::Any),
        // A new thread, never a process: `clone` only with CLONE_THREAD (which the kernel accepts
        // only with CLONE_VM and CLONE_SIGHAND). `clone3` is answered ENOSYS by the first filter.
        (SYS_clone, Args::FirstHas(CLONE_THREAD as u64)),
        (SYS_clone3, Args::Any),
        // What glibc does on a new thread, and std naming it (PR_SET_NAME only).
        (SYS_set_robust_list, Args::Any),
        (SYS_rseq, Args::Any),
        (SYS_prctl, Args::FirstIs(PR_SET_NAME as u64)),
        // Signals: std's stack-overflow handler (an alternate stack per thread), wasmtime's trap
        // handlers, glibc blocking signals around thread creation, return from a handler.
        (SYS_sigaltstack, Args::Any),
        (SYS_rt_sigaction, Args::Any),
        (SYS_rt_sigprocmask, Args::Any),
        (SYS_rt_sigreturn, Args::Any),
        // Time (normally the vDSO's; the syscall is its fallback) and randomness (hash maps).
        (SYS_clock_gettime, Args::Any),
        (SYS_getrandom, Args::Any),
        // Who am I (glibc's abort and thread code), and dying by SIGABRT on an abort.
        (SYS_getpid, Args::Any),
        (SYS_gettid, Args::Any),
        (SYS_tgkill, Args::OwnAbort),
        // The end of a thread, and of the process.
        (SYS_exit, Args::Any),
        (SYS_exit_group, Args::Any),
        // Passed to the kernel only for the first filter to answer ENOSYS.
        (SYS_openat, Args::Any),
        (SYS_getcwd, Args::Any),
    ];

    /// Answered `ENOSYS` by the first filter: `openat` (std's cgroup read), `clone3` (glibc
    /// falls back to `clone`, whose flags the allowlist checks), `getcwd` (the panic message's
    /// path trimming, e.g. after a failed allocation: the message is printed without it, and the
    /// worker dies of the abort that follows, not of SIGSYS).
    const ANSWERED: &[(i64, Args)] = &[
        (SYS_openat, Args::Any),
        (SYS_clone3, Args::Any),
        (SYS_getcwd, Args::Any),
    ];

    /// The waiting parent: wait for the child, restore a signal's default and send it to itself,
    /// exit.
    fn waiter_list(me: Pid) -> [(i64, Args); 11] {
        [
            (SYS_wait4, Args::Any),
            (SYS_kill, Args::FirstIs(me.as_raw_nonzero().get() as u64)),
            (SYS_rt_sigaction, Args::Any),
            (SYS_rt_sigprocmask, Args::Any),
            (SYS_rt_sigreturn, Args::Any),
            (SYS_restart_syscall, Args::Any),
            (SYS_close, Args::Any),
            (SYS_fcntl, Args::SecondIs(F_GETFD as u64)),
            // The standard library frees the main thread's alternate signal stack at exit.
            (SYS_sigaltstack, Args::Any),
            (SYS_munmap, Args::Any),
            (SYS_exit_group, Args::Any),
        ]
    }

    pub(super) fn answers() -> Result<BpfProgram, SeccompError> {
        compile(
            "answers",
            ANSWERED,
            rustix::process::getpid(),
            SeccompAction::Allow,
            SeccompAction::Errno(ENOSYS as u32),
            TargetArch::x86_64,
        )
    }

    /// An execution worker's additions: noticing the host's end on its stdin; wasmtime's
    /// copy-on-write memory images (an anonymous memfd per loaded module's initial memory,
    /// sealed: no file, no name anyone can open).
    const EXECUTE: &[(i64, Args)] = &[
        (SYS_poll, Args::Any),
        (SYS_ppoll, Args::Any),
        (SYS_memfd_create, Args::Any),
        (SYS_fcntl, Args::SecondIs(F_ADD_SEALS as u64)),
    ];

    /// glibc's `fork()`: `clone(CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD, ...)`.
    const FORK_FLAGS: u64 = (CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD) as u64;

    /// A per-job execution worker's additions: fork a child (exactly glibc's fork flags), the
    /// pipe its answer comes back on, waiting for it, killing it at its deadline; in the child, its own namespaces (and
    /// dropping the capabilities they give), then the child's own, narrower filter (the
    /// execution worker's list: no fork, no unshare), which needs `no_new_privs` (already set)
    /// and `seccomp`.
    const PER_JOB: &[(i64, Args)] = &[
        (SYS_clone, Args::FirstIs(FORK_FLAGS)),
        (SYS_pipe2, Args::Any),
        (SYS_wait4, Args::Any),
        (SYS_unshare, Args::Any),
        (SYS_capset, Args::Any),
        (SYS_capget, Args::Any),
        (SYS_prctl, Args::FirstIs(PR_SET_NO_NEW_PRIVS as u64)),
        (SYS_seccomp, Args::Any),
        (SYS_tgkill, Args::AnyAbort),
        // Killing a child that outlived its execution's deadline (SIGKILL only).
        (SYS_kill, Args::SecondIs(SIGKILL as u64)),
    ];

    /// A per-job child's own filter: the execution worker's list, and an abort of its own.
    const PER_JOB_CHILD: &[(i64, Args)] = &[(SYS_tgkill, Args::AnyAbort)];

    /// The allowlist for `syscalls`: syscall, argument checks (one rule per check; a syscall
    /// listed twice passes when any of its rules matches).
    pub(super) fn list(syscalls: crate::worker::confine::Syscalls) -> Vec<(i64, Vec<Args>)> {
        use crate::worker::confine::Syscalls;
        let extra: &[&[(i64, Args)]] = match syscalls {
            Syscalls::Compile => &[],
            Syscalls::Execute => &[EXECUTE],
            Syscalls::ExecutePerJob => &[EXECUTE, PER_JOB],
            Syscalls::PerJobChild => &[EXECUTE, PER_JOB_CHILD],
        };
        let mut list: Vec<(i64, Vec<Args>)> = Vec::new();
        for (nr, args) in ALLOWED.iter().chain(extra.iter().flat_map(|e| e.iter())) {
            match list.iter_mut().find(|(n, _)| n == nr) {
                Some((_, rules)) => rules.push(*args),
                None => list.push((*nr, vec![*args])),
            }
        }
        list
    }

    pub(super) fn allowlist(
        me: Pid,
        syscalls: crate::worker::confine::Syscalls,
    ) -> Result<(BpfProgram, usize), SeccompError> {
        let list = list(syscalls);
        let build = |e| SeccompError::Build("allowlist", e);
        let mut rules = BTreeMap::new();
        for (nr, args) in &list {
            let mut all = Vec::new();
            for args in args {
                let rule = rule(*args, me).map_err(build)?;
                if rule.is_empty() {
                    // `Any`: no condition, every call matches.
                    all.clear();
                    break;
                }
                all.extend(rule);
            }
            rules.insert(*nr, all);
        }
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::KillProcess,
            SeccompAction::Allow,
            TargetArch::x86_64,
        )
        .map_err(build)?;
        let program: BpfProgram = filter.try_into().map_err(build)?;
        Ok((program, list.len()))
    }

    pub(super) fn waiter(me: Pid) -> Result<BpfProgram, SeccompError> {
        compile(
            "waiter",
            &waiter_list(me),
            me,
            SeccompAction::KillProcess,
            SeccompAction::Allow,
            TargetArch::x86_64,
        )
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86_64 {
    use super::*;

    fn unsupported<T>() -> Result<T, SeccompError> {
        Err(SeccompError::Architecture(std::env::consts::ARCH))
    }

    pub(super) fn answers() -> Result<BpfProgram, SeccompError> {
        unsupported()
    }

    pub(super) fn allowlist(
        _me: Pid,
        _syscalls: crate::worker::confine::Syscalls,
    ) -> Result<(BpfProgram, usize), SeccompError> {
        unsupported()
    }

    pub(super) fn waiter(_me: Pid) -> Result<BpfProgram, SeccompError> {
        unsupported()
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile() {
        let me = rustix::process::getpid();
        x86_64::answers().unwrap();
        for syscalls in [
            crate::worker::confine::Syscalls::Compile,
            crate::worker::confine::Syscalls::Execute,
            crate::worker::confine::Syscalls::ExecutePerJob,
            crate::worker::confine::Syscalls::PerJobChild,
        ] {
            x86_64::allowlist(me, syscalls).unwrap();
        }
        x86_64::waiter(me).unwrap();
    }

    #[test]
    fn escapes_are_not_on_the_list() {
        use libc::*;
        let execute = x86_64::list(crate::worker::confine::Syscalls::Execute);
        let listed = |nr| {
            x86_64::ALLOWED.iter().any(|(n, _)| *n == nr) || execute.iter().any(|(n, _)| *n == nr)
        };
        for nr in [
            SYS_open,
            SYS_socket,
            SYS_connect,
            SYS_execve,
            SYS_execveat,
            SYS_fork,
            SYS_vfork,
            SYS_ptrace,
            SYS_io_uring_setup,
            SYS_io_uring_enter,
            SYS_io_uring_register,
            SYS_mount,
            SYS_unshare,
            SYS_setns,
            SYS_kill,
            SYS_bpf,
            SYS_ioctl,
            SYS_seccomp,
        ] {
            assert!(!listed(nr), "syscall {nr} must not be allowed");
        }
    }
}
