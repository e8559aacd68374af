//! Resource limits: soft and hard limit set alike, so the worker cannot raise them again (that
//! needs `CAP_SYS_RESOURCE` in the initial user namespace, which a worker never has).
//!
//! - `NOFILE` ([`ConfinePolicy::max_open_files`]): descriptors `0..n`. After phase 2 no syscall
//!   that makes a descriptor is allowed anyway; this bounds the worker between the phases.
//! - `NPROC` ([`ConfinePolicy::max_tasks`]): processes *and threads*. Only set in a new user
//!   namespace: there the kernel counts the tasks of (namespace, uid), i.e. this worker's only, and
//!   even root loses the capabilities that would exempt it. Outside one the count covers every
//!   process of the real uid on the machine (other workers, the node itself), so a small limit
//!   would fail at random: it is reported unavailable instead. The kernel never enforces it on
//!   real uid 0 (the check exempts the root user itself, in any namespace): a worker started as
//!   root reports it unavailable.
//! - `CORE` = 0: a crashing worker leaves no core file with a stranger's code or the host's memory.
//! - `FSIZE` = 0 (an execution worker: the largest linear memory, for wasmtime's memfd
//!   memory images, see [`ConfinePolicy::max_file_bytes`]): no regular file can be written (writes to pipes are not affected; a worker whose
//!   stdout or stderr is a regular file dies of `SIGXFSZ` on its first write to it).
//!
//! `AS` and `CPU` are per job and set by the worker itself.

use rustix::process::{Resource, Rlimit};

use super::{ConfinePolicy, EXTRA_TASKS, LayerStatus};

/// The status names, in order.
pub(super) const NAMES: [&str; 4] = [
    "rlimit.nofile",
    "rlimit.nproc",
    "rlimit.core",
    "rlimit.fsize",
];

/// Sets the four limits.
/// `root`: the process's real uid (in the initial user namespace) is 0, which the kernel exempts
/// from `NPROC`, user namespace or not.
pub(super) fn apply(
    policy: &ConfinePolicy,
    in_user_namespace: bool,
    root: bool,
) -> Vec<LayerStatus> {
    let mut statuses = Vec::with_capacity(NAMES.len());
    statuses.push(lower(NAMES[0], Resource::Nofile, policy.max_open_files));
    let tasks = policy.max_tasks.unwrap_or_else(|| cpus() + EXTRA_TASKS);
    statuses.push(if root {
        // Set all the same (it binds if the worker ever changes uid), but it does not bind now.
        let _ = lower(NAMES[1], Resource::Nproc, tasks);
        LayerStatus::unavailable(
            NAMES[1],
            format!("set to {tasks}, but the kernel does not enforce it on uid 0 (root)"),
        )
    } else if in_user_namespace {
        lower(NAMES[1], Resource::Nproc, tasks)
    } else {
        LayerStatus::unavailable(
            NAMES[1],
            format!(
                "no user namespace: the limit would count every process of uid {} on the machine",
                rustix::process::getuid().as_raw()
            ),
        )
    });
    statuses.push(lower(NAMES[2], Resource::Core, 0));
    statuses.push(lower(NAMES[3], Resource::Fsize, policy.max_file_bytes));
    statuses
}

/// The CPUs this process may run on: rayon's compile pool starts one thread each.
fn cpus() -> u64 {
    rustix::thread::sched_getaffinity(None)
        .map(|set| u64::from(set.count()))
        .unwrap_or(1)
        .max(1)
}

/// Sets `resource`'s soft and hard limit to `n`, or to the hard limit if that is lower.
fn lower(name: &'static str, resource: Resource, n: u64) -> LayerStatus {
    let hard = rustix::process::getrlimit(resource).maximum;
    let n = hard.map_or(n, |hard| hard.min(n));
    let limit = Rlimit {
        current: Some(n),
        maximum: Some(n),
    };
    match rustix::process::setrlimit(resource, limit) {
        Ok(()) => LayerStatus::active(name, n.to_string()),
        Err(e) => LayerStatus::unavailable(name, format!("setrlimit: {e}")),
    }
}
