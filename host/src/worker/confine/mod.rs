//! The worker's OS confinement: what a worker process does to itself before it touches a
//! stranger's code. One file a layer; [`confine_process`] and [`restrict_syscalls`] apply them in
//! order and say which are active.
//!
//! Two phases, both called by the worker itself:
//!
//! 1. [`confine_process`], first thing in the worker, while it is single-threaded and before it
//!    reads any untrusted input: `no_new_privs`; user, mount, net, ipc, uts and pid namespaces
//!    (then every capability is dropped); landlock (no filesystem access, no TCP, no signals or
//!    abstract sockets out of the sandbox); when the pid namespace was created, one fork: the
//!    call returns in the child, pid 1 of the new namespace, which dies with its parent; the
//!    parent only waits, under a seccomp filter of its own, and then ends exactly as the child
//!    ended (exit code or signal), so the host sees one process; last, rlimits (`NOFILE`,
//!    `NPROC`, `CORE`, `FSIZE`).
//! 2. [`restrict_syscalls`], right before compiling: the seccomp allowlist on every thread of
//!    the process (see `seccomp.rs` for the list and the reason for each entry). A syscall
//!    outside it kills the whole process with `SIGSYS`.
//!
//! No layer is fatal: a kernel (or container) without one reports it
//! [`LayerState::Unavailable`] with a one-line reason, and the worker carries on with the
//! others; whether that is acceptable is the caller's decision ([`ConfineReport::all_active`]).
//!
//! `pvf __pvf-confine-probe` ([`probe_main`]) applies exactly this confinement and then tries
//! one forbidden thing; the integration tests and `pvf doctor` run it.

mod landlock;
mod namespaces;
mod probe;
mod rlimits;
mod seccomp;

use std::fmt;

pub(crate) use probe::attempt;
pub use probe::probe_main;

/// A layer of the confinement, as the policy names it (namespaces and rlimits report one
/// [`LayerStatus`] each of their parts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// `PR_SET_NO_NEW_PRIVS`: no exec can grant privileges (also required by landlock and seccomp).
    NoNewPrivs,
    /// User, mount, net, ipc, uts and pid namespaces, then every capability dropped.
    Namespaces,
    /// Resource limits: `NOFILE`, `NPROC`, `CORE` = 0, `FSIZE` = 0.
    Rlimits,
    /// Landlock: no filesystem access, no TCP bind or connect, scoped signals and abstract sockets.
    Landlock,
    /// The seccomp allowlist (phase 2).
    Seccomp,
}

impl Layer {
    /// Every layer, in the order they are applied.
    pub const ALL: [Layer; 5] = [
        Layer::NoNewPrivs,
        Layer::Namespaces,
        Layer::Rlimits,
        Layer::Landlock,
        Layer::Seccomp,
    ];

    /// The layer's name: `no_new_privs`, `namespaces`, `rlimits`, `landlock`, `seccomp`.
    pub fn name(self) -> &'static str {
        match self {
            Layer::NoNewPrivs => "no_new_privs",
            Layer::Namespaces => "namespaces",
            Layer::Rlimits => "rlimits",
            Layer::Landlock => "landlock",
            Layer::Seccomp => "seccomp",
        }
    }

    /// The layer named `name` ([`Layer::name`]).
    pub fn from_name(name: &str) -> Option<Layer> {
        Layer::ALL.into_iter().find(|l| l.name() == name)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// Which layers to apply, and the limits they set. Immutable once built; start from
/// [`ConfinePolicy::production`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfinePolicy {
    layers: u8,
    max_open_files: u64,
    max_tasks: Option<u64>,
    map_user: bool,
    syscalls: Syscalls,
    max_file_bytes: u64,
}

/// Which seccomp allowlist [`restrict_syscalls`] installs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Syscalls {
    /// A compiling worker's: compute, allocate, threads, read and write what it has, exit.
    #[default]
    Compile,
    /// An execution worker's: the compiling worker's, and `poll` (to notice the host's end).
    Execute,
    /// A per-job execution worker's: the execution worker's, and forking a child (`clone`
    /// without `CLONE_THREAD`, with exactly glibc's fork flags), its pipe (`pipe2`), waiting
    /// for it (`wait4`), and the child making its own namespaces (`unshare`) and installing its
    /// own filter.
    ExecutePerJob,
    /// A per-job child's own filter, on top of the inherited one: the execution worker's list
    /// (no fork, no unshare, no further filter).
    PerJobChild,
}

/// The default `RLIMIT_NOFILE` of a worker: stdin, stdout and stderr, and five more for what the
/// worker itself opens between the phases (a compile opens none: wasmtime, cranelift, rayon and
/// glibc need no descriptor, measured with `NOFILE` = 3).
pub const DEFAULT_MAX_OPEN_FILES: u64 = 8;

/// Tasks (processes and threads) a worker may have beyond one per CPU it may run on: the main
/// thread, the waiting parent of the pid namespace, and headroom for the worker's own threads.
/// One per CPU is rayon's compile pool (wasmtime's parallel compilation).
pub const EXTRA_TASKS: u64 = 8;

impl ConfinePolicy {
    /// Every layer, with the default limits: `NOFILE` = [`DEFAULT_MAX_OPEN_FILES`], `NPROC` =
    /// the CPUs this process may run on + [`EXTRA_TASKS`].
    pub fn production() -> Self {
        Self {
            layers: Layer::ALL.iter().fold(0, |bits, l| bits | l.bit()),
            max_open_files: DEFAULT_MAX_OPEN_FILES,
            max_tasks: None,
            map_user: false,
            syscalls: Syscalls::Compile,
            max_file_bytes: 0,
        }
    }

    /// No layer at all (for tests and probes that add layers one by one with [`Self::with`]).
    pub fn none() -> Self {
        Self {
            layers: 0,
            ..Self::production()
        }
    }

    /// The same policy with `layer` applied (`on`) or not.
    pub fn with(mut self, layer: Layer, on: bool) -> Self {
        if on {
            self.layers |= layer.bit();
        } else {
            self.layers &= !layer.bit();
        }
        self
    }

    /// The same policy with `RLIMIT_NOFILE` set to `n` (descriptors `0..n` are usable).
    pub fn max_open_files(mut self, n: u64) -> Self {
        self.max_open_files = n;
        self
    }

    /// The same policy with `RLIMIT_NPROC` set to `n` tasks (processes and threads) in the
    /// worker's user namespace, instead of the CPUs + [`EXTRA_TASKS`].
    pub fn max_tasks(mut self, n: u64) -> Self {
        self.max_tasks = Some(n);
        self
    }

    /// The same policy with the worker's uid and gid mapped to themselves in its user namespace
    /// (a per-job execution worker's children need it to make their own user namespaces).
    pub fn map_user(mut self, map: bool) -> Self {
        self.map_user = map;
        self
    }

    /// The same policy with the seccomp allowlist `syscalls` (default [`Syscalls::Compile`]).
    pub fn syscalls(mut self, syscalls: Syscalls) -> Self {
        self.syscalls = syscalls;
        self
    }

    /// The same policy with `RLIMIT_FSIZE` set to `bytes` instead of 0. An execution worker
    /// writes one kind of file: wasmtime's copy-on-write images of a module's initial memory, in
    /// anonymous memfds it makes (no path, nothing anyone else can open); an image is never
    /// larger than the linear-memory limit, which is what the worker sets here.
    pub fn max_file_bytes(mut self, bytes: u64) -> Self {
        self.max_file_bytes = bytes;
        self
    }

    /// Whether `layer` is applied.
    pub fn applies(&self, layer: Layer) -> bool {
        self.layers & layer.bit() != 0
    }
}

/// Whether a layer is in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerState {
    /// In force for the rest of the process's life.
    Active,
    /// Not in force; why, in one line (the kernel lacks it, a container forbids it, the policy
    /// did not ask for it).
    Unavailable(String),
}

/// One layer's (or one part of a layer's) state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerStatus {
    /// The layer's name: `no_new_privs`, `namespace.user` (`.mount`, `.net`, `.ipc`, `.uts`,
    /// `.pid`), `capabilities`, `rlimit.nofile` (`.nproc`, `.core`, `.fsize`), `landlock`,
    /// `seccomp`.
    pub name: &'static str,
    /// Active, or unavailable and why.
    pub state: LayerState,
    /// What an active layer does exactly, in one line (e.g. landlock's ABI); may be empty.
    pub detail: String,
}

impl LayerStatus {
    /// An active layer, with what it does in one line.
    pub fn active(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            state: LayerState::Active,
            detail: detail.into(),
        }
    }

    /// An unavailable layer and why, in one line.
    pub fn unavailable(name: &'static str, why: impl Into<String>) -> Self {
        Self {
            name,
            state: LayerState::Unavailable(one_line(why.into())),
            detail: String::new(),
        }
    }

    /// The layer as one report line (no line break): `name<TAB>active[<TAB>detail]` or
    /// `name<TAB>unavailable<TAB>why`.
    pub fn to_line(&self) -> String {
        let (state, text) = match &self.state {
            LayerState::Active => ("active", self.detail.as_str()),
            LayerState::Unavailable(why) => ("unavailable", why.as_str()),
        };
        let mut out = format!("{}\t{state}", self.name);
        if !text.is_empty() {
            out.push('\t');
            out.push_str(&text.replace('\t', " "));
        }
        out
    }

    /// Whether the layer is in force.
    pub fn is_active(&self) -> bool {
        self.state == LayerState::Active
    }

    fn not_requested(name: &'static str) -> Self {
        Self::unavailable(name, "not requested by the policy")
    }
}

impl fmt::Display for LayerStatus {
    /// `name: active (detail)` or `name: unavailable: why`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            LayerState::Active if self.detail.is_empty() => write!(f, "{}: active", self.name),
            LayerState::Active => write!(f, "{}: active ({})", self.name, self.detail),
            LayerState::Unavailable(why) => write!(f, "{}: unavailable: {why}", self.name),
        }
    }
}

/// What [`confine_process`] put in force (push [`restrict_syscalls`]'s status to complete it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfineReport {
    /// Every layer (or part), in the order applied.
    pub layers: Vec<LayerStatus>,
}

impl ConfineReport {
    /// Whether every layer reported is active.
    pub fn all_active(&self) -> bool {
        self.layers.iter().all(LayerStatus::is_active)
    }

    /// The layers that are not in force.
    pub fn unavailable(&self) -> impl Iterator<Item = &LayerStatus> {
        self.layers.iter().filter(|l| !l.is_active())
    }

    /// The report as the probe prints it: one line a layer, `name<TAB>active[<TAB>detail]` or
    /// `name<TAB>unavailable<TAB>why` (tabs and line breaks inside fields become spaces).
    pub fn to_lines(&self) -> String {
        let mut out = String::new();
        for l in &self.layers {
            out.push_str(&l.to_line());
            out.push('\n');
        }
        out
    }
}

impl fmt::Display for ConfineReport {
    /// One line a layer ([`LayerStatus`]'s `Display`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, l) in self.layers.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{l}")?;
        }
        Ok(())
    }
}

/// Phase 1: confines the calling process (see the module doc for the order). Call it first thing
/// in the worker process, while it is single-threaded (a user namespace cannot be entered by a
/// multi-threaded process), before it reads any untrusted input.
///
/// When the pid namespace is created, this returns in a forked child that runs as pid 1 of it and
/// dies with its parent (`PR_SET_PDEATHSIG`); the calling process never returns: it waits for
/// the child and ends the same way (exit code, or death by the same signal). Standard input and
/// output (and every other descriptor) are shared by both; only the child uses them.
///
/// Never panics or aborts for a missing kernel feature: each layer is reported.
pub fn confine_process(policy: &ConfinePolicy) -> ConfineReport {
    let mut layers = Vec::new();
    // Before the user namespace hides it (inside, an unmapped uid reads as 65534).
    let root = rustix::process::getuid().is_root();

    // 1. no_new_privs: first, since landlock and seccomp need it and nothing below needs privileges
    // it could gain.
    layers.push(if policy.applies(Layer::NoNewPrivs) {
        match rustix::thread::set_no_new_privs(true) {
            Ok(()) => LayerStatus::active("no_new_privs", ""),
            Err(e) => LayerStatus::unavailable("no_new_privs", format!("prctl: {e}")),
        }
    } else {
        LayerStatus::not_requested("no_new_privs")
    });

    // 2. namespaces (then every capability dropped), before the limits: unsharing needs no
    // descriptor and the user namespace decides whether NPROC means anything.
    let ns = if policy.applies(Layer::Namespaces) {
        namespaces::unshare_all(policy.map_user)
    } else {
        namespaces::Unshared::not_requested()
    };
    layers.extend(ns.statuses);

    // 3. landlock, before the fork so that the waiting parent is confined too (and stays in the
    // child's signal scope: it may signal itself and the child).
    layers.push(if policy.applies(Layer::Landlock) {
        landlock::restrict()
    } else {
        LayerStatus::not_requested("landlock")
    });

    // 4. the fork into the pid namespace: the rest runs as its pid 1.
    layers.push(if ns.pid_unshared {
        match namespaces::enter_pid_namespace(policy.applies(Layer::Seccomp)) {
            Ok(()) => LayerStatus::active(
                namespaces::PID,
                "the worker runs as pid 1 of a new pid namespace and dies with its parent, which \
                 only waits",
            ),
            Err(e) => LayerStatus::unavailable(namespaces::PID, e.to_string()),
        }
    } else {
        ns.pid
    });

    // 5. rlimits, last: landlock's ruleset and the fork's pipe need descriptors (the host may
    // have left some open beyond stdio), and only the child needs the limits (the parent's own
    // seccomp filter lets it make no descriptor, file or thread).
    if policy.applies(Layer::Rlimits) {
        layers.extend(rlimits::apply(policy, ns.user, root));
    } else {
        layers.extend(rlimits::NAMES.iter().map(|n| LayerStatus::not_requested(n)));
    }
    ConfineReport { layers }
}

/// Phase 2: installs the seccomp allowlist on every thread of the process (`TSYNC`). Call it
/// after the job has been read, right before compiling untrusted code: from then on the process
/// can compute, allocate, start threads, read and write the descriptors it has, and exit; any
/// other syscall kills it with `SIGSYS` (`openat` and `clone3` fail with `ENOSYS` instead, for
/// the standard library's and glibc's fallbacks). Works whether or not compile threads exist.
///
/// Unavailable on architectures other than x86_64 (the list is written for it) and on kernels
/// without seccomp filters.
pub fn restrict_syscalls(policy: &ConfinePolicy) -> LayerStatus {
    if policy.applies(Layer::Seccomp) {
        seccomp::install_allowlist(policy.syscalls)
    } else {
        LayerStatus::not_requested(seccomp::NAME)
    }
}

/// `fork()` from a single-threaded process: `Some(child)` in the parent, `None` in the child
/// (a per-job execution worker forks each job's child with it).
pub(crate) fn fork() -> rustix::io::Result<Option<rustix::process::Pid>> {
    namespaces::fork()
}

/// A per-job child's own seccomp filter, compiled once in its parent: the execution worker's
/// allowlist ([`Syscalls::Execute`]), without the fork, the namespaces and the filter
/// installation the per-job parent needs.
pub(crate) struct ChildFilter(seccompiler::BpfProgram);

impl ChildFilter {
    /// Compiles the filter; the reason when it cannot be.
    pub(crate) fn new() -> Result<Self, String> {
        seccomp::compile_allowlist(Syscalls::PerJobChild)
            .map(Self)
            .map_err(|e| e.to_string())
    }

    /// Applies it to the calling (single-threaded) child.
    pub(crate) fn apply(&self) -> Result<(), String> {
        seccomp::apply(&self.0).map_err(|e| e.to_string())
    }
}

/// In a per-job child: makes its own user, mount, ipc and uts namespaces ([`JOB_NAMESPACES`])
/// and drops every capability; the reason when that fails.
pub(crate) fn enter_job_namespaces() -> Result<(), String> {
    namespaces::enter_job_namespaces(JOB_NAMESPACES)
}

/// The namespaces a per-job child makes: user, mount, ipc and uts. Not net: the worker's own net
/// namespace is already empty (a loopback interface, down) and no child may make a socket
/// (seccomp), so a child's own would isolate nothing more; and it is the expensive one — 360 µs
/// of `unshare` per job measured here (against ~170 µs for the other four together), plus its
/// teardown in the kernel's workers after every job, which slowed the other execution workers'
/// calls fourfold in the benchmark.
pub(crate) const JOB_NAMESPACES: rustix::thread::UnshareFlags =
    rustix::thread::UnshareFlags::NEWUSER
        .union(rustix::thread::UnshareFlags::NEWNS)
        .union(rustix::thread::UnshareFlags::NEWIPC)
        .union(rustix::thread::UnshareFlags::NEWUTS);

/// Benchmarks only: [`enter_job_namespaces`] with `flags`.
pub(crate) fn enter_namespaces(flags: rustix::thread::UnshareFlags) -> Result<(), String> {
    namespaces::enter_job_namespaces(flags)
}

/// `text` with line breaks and tabs replaced by spaces: reasons are one line.
fn one_line(text: String) -> String {
    if text.contains(['\n', '\r', '\t']) {
        text.replace(['\n', '\r', '\t'], " ")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_name_their_layers() {
        let p = ConfinePolicy::production();
        assert!(Layer::ALL.iter().all(|l| p.applies(*l)));
        let p = ConfinePolicy::none().with(Layer::Landlock, true);
        assert!(p.applies(Layer::Landlock) && !p.applies(Layer::Seccomp));
        let p = ConfinePolicy::production().with(Layer::Seccomp, false);
        assert!(!p.applies(Layer::Seccomp) && p.applies(Layer::Landlock));
        for l in Layer::ALL {
            assert_eq!(Layer::from_name(l.name()), Some(l));
        }
    }

    #[test]
    fn a_report_prints_one_line_a_layer() {
        let report = ConfineReport {
            layers: vec![
                LayerStatus::active("landlock", "ABI 7"),
                LayerStatus::unavailable("seccomp", "no\tkernel\nsupport"),
                LayerStatus::active("no_new_privs", ""),
            ],
        };
        assert!(!report.all_active());
        assert_eq!(report.unavailable().count(), 1);
        assert_eq!(
            report.to_lines(),
            "landlock\tactive\tABI 7\nseccomp\tunavailable\tno kernel support\nno_new_privs\tactive\n"
        );
        assert_eq!(
            report.to_string(),
            "landlock: active (ABI 7)\nseccomp: unavailable: no kernel support\nno_new_privs: active"
        );
    }
}
