//! Namespaces: a new user namespace first (it grants the right to make the others without
//! privileges), then mount, net, ipc, uts and pid; then every capability is dropped; later (after
//! landlock, see `confine_process`) the fork that makes the worker pid 1 of its pid namespace.
//!
//! The user namespace has no uid map: inside it the worker is `nobody` (65534), and it owns no
//! file. The mount namespace is left as it was copied (the filesystem is closed by landlock); the
//! net namespace has only a loopback interface, down; ipc and uts are private copies.
//!
//! `unshare(CLONE_NEWPID)` moves only the children of the caller, so the worker forks once: the
//! child (pid 1 of the new namespace) runs the worker; the parent waits for it and ends as it
//! ended. The child dies with the parent (`PR_SET_PDEATHSIG`, `SIGKILL`); a pipe whose write end
//! only the parent holds tells the child whether the parent died before that was armed.

use std::os::fd::OwnedFd;

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitOptions};
use rustix::thread::{CapabilitySet, CapabilitySets, UnshareFlags};

use super::LayerStatus;
use super::seccomp;

/// The pid namespace's status name.
pub(super) const PID: &str = "namespace.pid";
const USER: &str = "namespace.user";
const CAPABILITIES: &str = "capabilities";

/// The namespaces made after the user namespace: flag, status name, what it gives.
const OTHERS: [(UnshareFlags, &str, &str); 4] = [
    (
        UnshareFlags::NEWNS,
        "namespace.mount",
        "a private copy of the mount table (the filesystem is closed by landlock)",
    ),
    (
        UnshareFlags::NEWNET,
        "namespace.net",
        "no network: only a loopback interface, down",
    ),
    (
        UnshareFlags::NEWIPC,
        "namespace.ipc",
        "no System V IPC or POSIX message queue of the host",
    ),
    (UnshareFlags::NEWUTS, "namespace.uts", "a private host name"),
];

/// The exit code of a child whose parent died before the child could arm its death signal.
const EXIT_PARENT_GONE: i32 = 125;

/// What [`unshare_all`] did.
pub(super) struct Unshared {
    /// One status each: user, mount, net, ipc, uts, then the capabilities (the pid namespace is
    /// reported by `confine_process`, after the fork).
    pub statuses: Vec<LayerStatus>,
    /// The pid namespace's status, when it is not to be entered ([`Self::pid_unshared`] false).
    pub pid: LayerStatus,
    /// Whether the process is in a new user namespace (`NPROC` then counts only its own tasks).
    pub user: bool,
    /// Whether the next child of this process will be pid 1 of a new pid namespace.
    pub pid_unshared: bool,
}

impl Unshared {
    /// The statuses when the policy asks for no namespace.
    pub fn not_requested() -> Self {
        let mut statuses = vec![LayerStatus::not_requested(USER)];
        statuses.extend(OTHERS.iter().map(|(_, n, _)| LayerStatus::not_requested(n)));
        statuses.push(LayerStatus::not_requested(CAPABILITIES));
        Self {
            statuses,
            pid: LayerStatus::not_requested(PID),
            user: false,
            pid_unshared: false,
        }
    }
}

/// Unshares the user namespace, then the others (all at once, or one by one when that fails so
/// that each is reported), then drops every capability.
///
/// `map_user`: map the worker's own uid and gid (one each, to themselves) in its user namespace,
/// so that its children can make user namespaces of their own (a per-job execution worker's
/// children do; the kernel refuses a new user namespace to an unmapped uid). Nothing else
/// changes: the kernel's uid of the process is the same either way, and capabilities are dropped.
pub(super) fn unshare_all(map_user: bool) -> Unshared {
    let mut statuses = Vec::with_capacity(OTHERS.len() + 2);
    let (uid, gid) = (rustix::process::geteuid(), rustix::process::getegid());
    let user = match unshare(UnshareFlags::NEWUSER) {
        Ok(()) => {
            statuses.push(if map_user {
                match map_identity(uid.as_raw(), gid.as_raw()) {
                    Ok(()) => LayerStatus::active(
                        USER,
                        "the worker's own uid and gid mapped to themselves, so that its \
                         per-job children make user namespaces of their own; no capability \
                         outside",
                    ),
                    Err(e) => LayerStatus::active(
                        USER,
                        format!("unmapped ({e}): per-job children cannot make their own"),
                    ),
                }
            } else {
                LayerStatus::active(
                    USER,
                    "unmapped: the worker is nobody inside and has no capability outside",
                )
            });
            true
        }
        Err(e) => {
            statuses.push(LayerStatus::unavailable(
                USER,
                unshare_failure("NEWUSER", e),
            ));
            false
        }
    };
    let all = OTHERS
        .iter()
        .fold(UnshareFlags::NEWPID, |flags, (f, _, _)| flags | *f);
    let (others, pid_result) = if unshare(all).is_ok() {
        (OTHERS.map(|_| Ok(())).to_vec(), Ok(()))
    } else {
        let others = OTHERS.iter().map(|(f, _, _)| unshare(*f)).collect();
        (others, unshare(UnshareFlags::NEWPID))
    };
    for ((flag, name, detail), result) in OTHERS.iter().zip(others) {
        statuses.push(match result {
            Ok(()) => LayerStatus::active(name, *detail),
            Err(e) => LayerStatus::unavailable(name, unshare_failure(flag_name(*flag), e)),
        });
    }
    statuses.push(drop_capabilities());
    let (pid, pid_unshared) = match pid_result {
        Ok(()) => (LayerStatus::active(PID, "unshared, not yet entered"), true),
        Err(e) => (
            LayerStatus::unavailable(PID, unshare_failure("NEWPID", e)),
            false,
        ),
    };
    Unshared {
        statuses,
        pid,
        user,
        pid_unshared,
    }
}

/// Maps `uid` and `gid` to themselves in the user namespace just made (`setgroups` denied first,
/// as the kernel requires of an unprivileged gid map).
fn map_identity(uid: u32, gid: u32) -> std::io::Result<()> {
    let proc = cap_std::fs::Dir::open_ambient_dir("/proc/self", cap_std::ambient_authority())?;
    proc.write("setgroups", "deny")?;
    proc.write("uid_map", format!("{uid} {uid} 1"))?;
    proc.write("gid_map", format!("{gid} {gid} 1"))?;
    Ok(())
}

/// A per-job child's own namespaces, `flags` (user first: its parent's uid must be mapped, see
/// [`unshare_all`]), made in one call; then every capability dropped.
/// Call it in a single-threaded child. The child stays in its parent's pid namespace, where the
/// only other process is that parent.
pub(super) fn enter_job_namespaces(flags: UnshareFlags) -> Result<(), String> {
    unshare(flags).map_err(|e| unshare_failure(&format!("{flags:?}"), e))?;
    let dropped = drop_capabilities();
    if dropped.is_active() {
        Ok(())
    } else {
        Err(dropped.detail)
    }
}

fn unshare(flags: UnshareFlags) -> rustix::io::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: `unshare_unsafe` is unsafe only for `CLONE_FILES`, which would give this thread a
    // descriptor table other threads do not share; no flag here touches descriptors.
    let result = unsafe { rustix::thread::unshare_unsafe(flags) };
    result
}

fn flag_name(flag: UnshareFlags) -> &'static str {
    match flag {
        f if f == UnshareFlags::NEWNS => "NEWNS",
        f if f == UnshareFlags::NEWNET => "NEWNET",
        f if f == UnshareFlags::NEWIPC => "NEWIPC",
        f if f == UnshareFlags::NEWUTS => "NEWUTS",
        _ => "?",
    }
}

/// Why `unshare(CLONE_<flag>)` failed, with the usual cause.
fn unshare_failure(flag: &str, e: Errno) -> String {
    let hint = match e {
        Errno::PERM => {
            " (no user namespace and no CAP_SYS_ADMIN, or forbidden by a sysctl, an LSM or a \
             container's seccomp profile)"
        }
        Errno::INVAL => " (is the process multi-threaded?)",
        Errno::NOSPC | Errno::USERS => " (the namespace count limit is reached)",
        Errno::NOSYS => " (not built into this kernel)",
        _ => "",
    };
    format!("unshare(CLONE_{flag}): {e}{hint}")
}

/// Clears the effective, permitted and inheritable capabilities: whatever the worker held (all of
/// them in a new user namespace, or root's), it holds none.
fn drop_capabilities() -> LayerStatus {
    let none = CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    };
    match rustix::thread::set_capabilities(None, none) {
        Ok(()) => LayerStatus::active(CAPABILITIES, "none: effective, permitted, inheritable"),
        Err(e) => LayerStatus::unavailable(CAPABILITIES, format!("capset: {e}")),
    }
}

/// Why the worker could not be moved into its pid namespace.
#[derive(Debug, thiserror::Error)]
pub(super) enum PidNamespaceError {
    /// The pipe that tells the child its parent is alive.
    #[error("pipe: {0}")]
    Pipe(Errno),
    /// `fork` failed (e.g. `NPROC`).
    #[error("fork: {0}")]
    Fork(Errno),
    /// The child could not arm its death signal: it would outlive a killed parent.
    #[error("prctl(PR_SET_PDEATHSIG): {0}")]
    DeathSignal(Errno),
}

/// Forks into the pid namespace made by [`unshare_all`]: returns in the child (pid 1 of it); the
/// parent never returns (see [`wait_and_mirror`]). `confine_parent`: install the parent's
/// seccomp filter.
pub(super) fn enter_pid_namespace(confine_parent: bool) -> Result<(), PidNamespaceError> {
    let (alive_read, alive_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(PidNamespaceError::Pipe)?;
    match fork().map_err(PidNamespaceError::Fork)? {
        Some(child) => {
            drop(alive_read);
            wait_and_mirror(child, confine_parent, alive_write)
        }
        None => {
            drop(alive_write);
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
                .map_err(PidNamespaceError::DeathSignal)?;
            // The parent may have died before the signal was armed: then its end is closed.
            let mut fds = [PollFd::new(&alive_read, PollFlags::IN)];
            let zero = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            let parent_gone = match rustix::event::poll(&mut fds, Some(&zero)) {
                Ok(n) => n > 0,
                Err(_) => true,
            };
            if parent_gone {
                std::process::exit(EXIT_PARENT_GONE);
            }
            Ok(())
        }
    }
}

/// `fork()`: `Some(child)` in the parent, `None` in the child.
pub(crate) fn fork() -> rustix::io::Result<Option<Pid>> {
    #[allow(unsafe_code)]
    // SAFETY: the caller is single-threaded (`confine_process`'s documented precondition, the
    // probe's `fork` action runs on the probe's only thread, and a per-job execution worker
    // starts no thread: no epoch ticker, no pool), so the child is a complete copy with
    // no lock held by a thread that does not exist in it; glibc's `fork` runs its atfork handlers,
    // which leave its own locks (malloc) usable in the child.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(Errno::from_raw_os_error(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EAGAIN),
        )),
        0 => Ok(None),
        pid => Ok(Pid::from_raw(pid)),
    }
}

/// The parent's life after the fork: wait for the child, then end as it ended (its exit code, or
/// death by its signal with the default disposition, or `128 + signal` if that does not kill),
/// so that the host sees one process. Holds `alive` (the write end of the pipe) until then.
fn wait_and_mirror(child: Pid, confine: bool, alive: OwnedFd) -> ! {
    let me = rustix::process::getpid();
    if confine {
        // Best effort: the parent runs no untrusted code and is already in every other layer.
        let _ = seccomp::install_waiter(me);
    }
    let status = loop {
        match rustix::process::waitpid(Some(child), WaitOptions::empty()) {
            Ok(Some((_, status))) => break status,
            Ok(None) | Err(Errno::INTR) => continue,
            // No child to wait for: cannot happen; end as a lost worker.
            Err(_) => std::process::exit(EXIT_PARENT_GONE),
        }
    };
    // `alive` stays open until the process ends (`exit` runs no destructor).
    let _alive = alive;
    if let Some(code) = status.exit_status() {
        std::process::exit(code);
    }
    let signal = status.terminating_signal().unwrap_or(Signal::KILL.as_raw());
    mirror_signal(me, signal);
    std::process::exit(128 + signal)
}

/// Dies by `signal`: restores its default disposition (the standard library ignores `SIGPIPE`
/// and handles `SIGSEGV`/`SIGBUS`), then sends it to this process.
fn mirror_signal(me: Pid, signal: i32) {
    #[allow(unsafe_code)]
    // SAFETY: `signal(2)` with `SIG_DFL` installs no handler (no code of ours runs on delivery);
    // it only changes the disposition of a signal number the kernel just reported.
    let _previous = unsafe { libc::signal(signal, libc::SIG_DFL) };
    if let Some(sig) = Signal::from_named_raw(signal) {
        let _ = rustix::process::kill_process(me, sig);
    }
}
