//! Out-of-process preparation: strangers' code is compiled in a confined child process.
//!
//! The host side (this file) starts the worker with an empty environment, checks at the
//! handshake that it is the same build with a compatible engine, hands it one job, enforces
//! the wall-clock backstop, and turns what comes back — or how the worker died — into a
//! [`PrepareError`] for the one classification in `error.rs`. The worker side (`child`)
//! confines itself (`confine`), compiles under the job's CPU-time, memory and thread limits
//! (`alloc` is its counting allocator) and reports. Workers only compute: they never touch the
//! store and never decide a verdict class.
//!
//! One worker is kept started ahead of need (a warm spare, see [`Config::warm_worker`]); each
//! serves one job and exits, and the next job takes the spare while a new one starts.

mod alloc;
pub(crate) mod channel;
mod child;
pub mod confine;
pub mod exec;
pub(crate) mod protocol;

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{
    Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitCode, ExitStatus, Stdio,
};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub use alloc::CountingAllocator;
use protocol::{Hello, ProtocolError, Purpose, Ready, Reply};

use crate::config::{CompileLimits, Config};
use crate::error::{HostError, PrepareError};
use crate::store::MAX_ARTIFACT_BYTES;

include!(concat!(env!("OUT_DIR"), "/build_id.rs"));

/// The first argument that makes the worker executable a preparation worker.
pub const WORKER_ARG: &str = "__pvf-worker";
/// The first argument that makes the `pvf` binary a confinement probe (tests, `pvf doctor`).
pub const PROBE_ARG: &str = "__pvf-confine-probe";
/// How long a new worker may take to start, confine itself and answer the handshake.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(20);
/// How much of a failed worker's standard error is kept for the error message.
const STDERR_BYTES: usize = 2048;

/// This build's identity: a hash of the host crate's sources, lockfile, compiler and profile,
/// computed by `build.rs`. The host and its worker must agree on it.
pub fn build_id() -> &'static str {
    BUILD_ID_MARKED
        .strip_prefix("pvf-build-id:")
        .unwrap_or(BUILD_ID_MARKED)
}

/// Runs the worker or probe entry when the process was started as one (its first argument says
/// so), returning its exit code; `None` for an ordinary start. Call it first thing in `main` of
/// the binary that serves as the worker executable, whose global allocator must be `alloc`.
pub fn entry(alloc: &'static CountingAllocator) -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    let first = args.next()?;
    if first == WORKER_ARG {
        Some(child::run(alloc))
    } else if first == exec::EXEC_WORKER_ARG {
        Some(exec::child::run(alloc))
    } else if first == PROBE_ARG {
        let rest: Vec<OsString> = args.collect();
        Some(confine::probe_main(&rest))
    } else {
        None
    }
}

/// Starts a preparation worker as `config` would (finding its executable, spawning it,
/// confining it, checking its handshake), dismisses it, and returns how long that took: the
/// fixed cost of a preparation without a warm worker. For benchmarks and `pvf doctor`-style
/// checks.
pub fn start_worker_once(
    engine_config: &Config,
) -> Result<Duration, crate::error::ValidationError> {
    let engine = crate::engine::new_engine(engine_config)
        .map_err(|e| PrepareError::Worker(format!("cannot build the engine: {e:#}")))?;
    let pool = WorkerPool::new(&engine, &engine_config.clone().warm_worker(false))
        .map_err(|e| PrepareError::Worker(e.to_string()))?;
    let started = std::time::Instant::now();
    let worker = pool.launcher.start(false)?;
    let elapsed = started.elapsed();
    drop(worker);
    Ok(elapsed)
}

/// A compiled artifact from a worker whose build and engine matched at the handshake, and
/// whose bytes match the digest it sent: the only way such bytes reach `Component::deserialize`.
pub(crate) struct Compiled {
    artifact: Vec<u8>,
    /// The compiler's live-heap peak, in bytes.
    pub(crate) peak_memory: u64,
    /// The CPU time the worker used.
    pub(crate) cpu: Duration,
}

impl Compiled {
    /// The artifact bytes.
    pub(crate) fn artifact(&self) -> &[u8] {
        &self.artifact
    }

    /// The artifact bytes, owned.
    pub(crate) fn into_artifact(self) -> Vec<u8> {
        self.artifact
    }
}

/// Finds the worker executable: `explicit`, else the current executable when it is `pvf`, else
/// a `pvf` next to it or one directory up. Runs in the host's constructor.
pub(crate) fn find_executable(explicit: Option<&Path>) -> Result<PathBuf, HostError> {
    let is_file = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file());
    if let Some(path) = explicit {
        return if is_file(path) {
            Ok(path.to_path_buf())
        } else {
            Err(HostError::Worker(format!(
                "the worker executable {} is not a file",
                path.display()
            )))
        };
    }
    let exe = std::env::current_exe()
        .map_err(|e| HostError::Worker(format!("cannot tell the current executable: {e}")))?;
    if exe.file_stem().is_some_and(|s| s == "pvf") {
        return Ok(exe);
    }
    let mut looked = Vec::new();
    let dir = exe.parent();
    for candidate in [dir, dir.and_then(Path::parent)].into_iter().flatten() {
        let path = candidate.join("pvf");
        if is_file(&path) {
            return Ok(path);
        }
        looked.push(path.display().to_string());
    }
    Err(HostError::Worker(format!(
        "no worker executable: looked for {}; build the `pvf` binary or set Config::worker_executable",
        looked.join(" and ")
    )))
}

/// Starts workers and runs preparation jobs in them.
pub(crate) struct WorkerPool {
    launcher: Arc<Launcher>,
    warm: bool,
    spare: Mutex<Option<JoinHandle<Result<Worker, PrepareError>>>>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("executable", &self.launcher.exe)
            .field("warm", &self.warm)
            .finish_non_exhaustive()
    }
}

/// What starting a worker needs.
struct Launcher {
    exe: PathBuf,
    hello: Hello,
    engine: [u8; 32],
    require_confinement: bool,
    precheck: CompileLimits,
    prepare: CompileLimits,
}

/// A started worker that answered the handshake and waits for its job.
struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    stderr: Option<ChildStderr>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        dismiss(&mut self.child, &mut self.stdin);
    }
}

/// Ends a worker the host is done with: closing its input dismisses a waiting worker; it is
/// killed anyway (its whole process group) and reaped, so nothing outlives the host's interest
/// in it. A worker already reaped is left alone: its process group id may be someone else's by
/// now.
fn dismiss(child: &mut Child, stdin: &mut Option<ChildStdin>) {
    drop(stdin.take());
    if matches!(child.try_wait(), Ok(None)) {
        kill_group(child.id());
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl WorkerPool {
    /// Finds the worker executable and, when `config` keeps a warm worker, starts one. With
    /// `require_confinement`, starts one worker now and fails unless every layer is active.
    pub(crate) fn new(engine: &wasmtime::Engine, config: &Config) -> Result<Self, HostError> {
        let exe = find_executable(config.worker_executable.as_deref())?;
        let launcher = Arc::new(Launcher {
            exe,
            hello: Hello {
                build_id: build_id().to_owned(),
                max_wasm_stack_bytes: config.max_wasm_stack_bytes as u64,
                max_code_bytes: config.max_code_bytes as u64,
                require_confinement: config.require_confinement,
                warm_up: false,
            },
            engine: crate::env::engine_digest(engine),
            require_confinement: config.require_confinement,
            precheck: config.precheck_limits,
            prepare: config.prepare_limits,
        });
        let pool = Self {
            launcher,
            warm: config.warm_worker,
            spare: Mutex::new(None),
        };
        if config.require_confinement {
            // Fail at start, not at the first preparation.
            let worker = pool
                .launcher
                .start(pool.warm)
                .map_err(|e| HostError::Worker(e.to_string()))?;
            *pool.spare.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(std::thread::spawn(move || Ok(worker)));
        } else if pool.warm {
            pool.start_spare();
        }
        Ok(pool)
    }

    /// The worker executable.
    pub(crate) fn executable(&self) -> &Path {
        &self.launcher.exe
    }

    /// Starts a spare worker unless one is there (or starting) already.
    fn start_spare(&self) {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.is_some() {
            return;
        }
        let launcher = self.launcher.clone();
        *spare = std::thread::Builder::new()
            .name("pvf-worker-spare".into())
            .spawn(move || launcher.start(true))
            .ok();
    }

    /// A worker for the next job: the spare if there is a good one, else a new one.
    fn take_worker(&self) -> Result<Worker, PrepareError> {
        let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner()).take();
        match spare.map(JoinHandle::join) {
            Some(Ok(Ok(worker))) => Ok(worker),
            Some(Ok(Err(e))) => {
                tracing::warn!(error = %e, "the spare preparation worker failed to start; starting another");
                self.launcher.start(false)
            }
            Some(Err(_)) | None => self.launcher.start(false),
        }
    }

    /// Compiles `code` in a worker under the limits of `purpose`.
    pub(crate) fn compile(&self, code: &[u8], purpose: Purpose) -> Result<Compiled, PrepareError> {
        let worker = self.take_worker();
        let compiled = worker.and_then(|worker| self.launcher.run(worker, code, purpose));
        // The next spare starts after the job, not beside it: on a small machine it would take
        // CPU time from the compilation it is meant to speed up.
        if self.warm {
            self.start_spare();
        }
        compiled
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = spare {
            // Dropping the joined worker dismisses it.
            let _ = handle.join();
        }
    }
}

impl Launcher {
    /// Starts a worker and checks its handshake; a spare (`warm_up`) then warms its compiler.
    fn start(&self, warm_up: bool) -> Result<Worker, PrepareError> {
        let mut child = Command::new(&self.exe)
            .arg(WORKER_ARG)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| {
                PrepareError::Worker(format!("cannot start {}: {e}", self.exe.display()))
            })?;
        let (Some(stdin), Some(stdout), stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            // All three were piped; should std ever hand one back missing, that is a local
            // fault, not a panic.
            let _ = child.kill();
            let _ = child.wait();
            return Err(PrepareError::Worker(
                "the worker's pipes are missing".into(),
            ));
        };
        let mut worker = Worker {
            child,
            stdin: Some(stdin),
            stdout,
            stderr,
        };
        // Without a watchdog nothing would bound the wait: no watchdog, no worker (the worker
        // is killed and reaped when dropped).
        let watchdog = Watchdog::start(worker.child.id(), HANDSHAKE_DEADLINE)?;
        let hello = Hello {
            warm_up,
            ..self.hello.clone()
        };
        let ready = hello
            .write(worker.stdin.as_mut().expect("not yet closed"))
            .map_err(ProtocolError::from)
            .and_then(|()| Ready::read(&mut worker.stdout));
        let fired = watchdog.disarm();
        let ready = match ready {
            Ok(ready) => ready,
            Err(e) => {
                let status = reap(&mut worker);
                let why = if fired {
                    format!("no handshake within {HANDSHAKE_DEADLINE:?}")
                } else {
                    e.to_string()
                };
                return Err(PrepareError::Worker(format!(
                    "{} did not start: {why}; it {}{}",
                    self.exe.display(),
                    describe(status),
                    stderr_tail(&mut worker)
                )));
            }
        };
        self.check(&ready)?;
        Ok(worker)
    }

    /// The handshake's checks: same build, same engine, the counting allocator in place, and
    /// (in secure mode) every confinement layer active.
    fn check(&self, ready: &Ready) -> Result<(), PrepareError> {
        let refuse = |why: String| {
            Err(PrepareError::Worker(format!(
                "refused the worker {}: {why}",
                self.exe.display()
            )))
        };
        if ready.build_id != self.hello.build_id {
            return refuse(format!(
                "it is of another build ({}, this host is {})",
                ready.build_id, self.hello.build_id
            ));
        }
        if ready.engine != self.engine {
            return refuse("its engine's artifacts would not load in this host's engine".into());
        }
        if !ready.counting_allocator {
            return refuse(
                "its global allocator is not pvf_host::worker::CountingAllocator, so the memory limit cannot hold".into(),
            );
        }
        let missing = unavailable_layers(&ready.confinement);
        if ready.confinement.trim().is_empty() {
            return refuse("it sent no confinement report".into());
        }
        if !missing.is_empty() {
            if self.require_confinement {
                return refuse(format!(
                    "confinement layers unavailable: {}",
                    missing.join(", ")
                ));
            }
            tracing::debug!(unavailable = %missing.join(", "), "preparation worker partly confined");
        }
        Ok(())
    }

    /// Runs one job in `worker` and classifies the outcome.
    fn run(
        &self,
        mut worker: Worker,
        code: &[u8],
        purpose: Purpose,
    ) -> Result<Compiled, PrepareError> {
        let (limits, strict) = match purpose {
            Purpose::Precheck => (self.precheck, true),
            Purpose::Prepare => (self.prepare, false),
        };
        let wall = limits.backstop();
        let watchdog = Watchdog::start(worker.child.id(), wall)?;
        let sent = protocol::write_job(
            worker.stdin.as_mut().expect("not yet closed"),
            purpose,
            &limits,
            code,
        );
        drop(worker.stdin.take());
        let reply = match sent {
            Ok(()) => Reply::read(&mut worker.stdout, MAX_ARTIFACT_BYTES as usize),
            Err(e) => Err(e.into()),
        };
        // Wait for the end without reaping, so the watchdog can never kill a reused process
        // group id; reap once it is disarmed.
        wait_unreaped(&worker.child);
        let fired = watchdog.disarm();
        let status = worker.child.wait().ok();
        let failed = |why: String, worker: &mut Worker| {
            PrepareError::Worker(format!(
                "{why}; it {}{}",
                describe(status),
                stderr_tail(worker)
            ))
        };
        let exited_cleanly = status.is_some_and(|s| s.success());
        match reply {
            Ok(Reply::MemoryExceeded { limit, peak }) => Err(PrepareError::MemoryExceeded {
                limit,
                peak,
                strict,
            }),
            Ok(Reply::CpuExceeded { .. }) => Err(PrepareError::CpuTimeExceeded {
                limit: Duration::from_secs(limits.cpu_secs()),
                strict,
            }),
            Ok(Reply::Compiled {
                artifact,
                digest,
                peak,
                cpu_nanos,
            }) if exited_cleanly => {
                if blake3::hash(&artifact).as_bytes() != &digest {
                    return Err(failed(
                        "the artifact does not match its digest".into(),
                        &mut worker,
                    ));
                }
                Ok(Compiled {
                    artifact,
                    peak_memory: peak,
                    cpu: Duration::from_nanos(cpu_nanos),
                })
            }
            Ok(Reply::Failed { kind, reason, .. }) if exited_cleanly => Err(match kind {
                protocol::FailedKind::InvalidCode => PrepareError::InvalidCode(reason),
                protocol::FailedKind::WrongWorld => PrepareError::WrongWorld(reason),
                protocol::FailedKind::Host => PrepareError::Worker(reason),
            }),
            _ if fired => Err(failed(
                format!("no answer within the wall-clock backstop of {wall:?}; killed"),
                &mut worker,
            )),
            _ if status.and_then(|s| s.signal())
                == Some(rustix::process::Signal::XCPU.as_raw()) =>
            {
                Err(PrepareError::CpuTimeExceeded {
                    limit: Duration::from_secs(limits.cpu_secs()),
                    strict,
                })
            }
            Ok(_) => Err(failed(
                "an answer from a worker that did not exit cleanly".into(),
                &mut worker,
            )),
            Err(e) => Err(failed(format!("no answer ({e})"), &mut worker)),
        }
    }
}

/// Kills the worker's process group (it may have forked into a new PID namespace).
fn kill_group(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// Waits until `child` has ended, leaving it unreaped (a zombie keeps its id).
fn wait_unreaped(child: &Child) {
    let Some(pid) = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    loop {
        match rustix::process::waitid(
            rustix::process::WaitId::Pid(pid),
            rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            _ => return,
        }
    }
}

/// Kills and reaps a worker that failed; its exit status.
fn reap(worker: &mut Worker) -> Option<ExitStatus> {
    kill_group(worker.child.id());
    let _ = worker.child.kill();
    worker.child.wait().ok()
}

/// How a worker ended, for error messages.
fn describe(status: Option<ExitStatus>) -> String {
    match status {
        None => "could not be waited for".into(),
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(signal)) => format!(
                "was killed by signal {signal}{}",
                signal_name(signal)
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            ),
            _ => format!("ended ({s})"),
        },
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    use rustix::process::Signal;
    Some(match Signal::from_named_raw(signal)? {
        Signal::KILL => "SIGKILL",
        Signal::ABORT => "SIGABRT",
        Signal::SEGV => "SIGSEGV",
        Signal::SYS => "SIGSYS: a system call outside the allowlist",
        Signal::XCPU => "SIGXCPU",
        Signal::BUS => "SIGBUS",
        Signal::TERM => "SIGTERM",
        _ => return None,
    })
}

/// The start of what a dead worker wrote on standard error (never blocks: the pipe is read
/// without waiting, after the worker was reaped).
fn stderr_tail(worker: &mut Worker) -> String {
    stderr_tail_of(&mut worker.stderr)
}

/// [`stderr_tail`] of any worker's standard error (taken: it is read once).
fn stderr_tail_of(stderr: &mut Option<ChildStderr>) -> String {
    let Some(stderr) = stderr.take() else {
        return String::new();
    };
    let fd = std::os::fd::OwnedFd::from(stderr);
    if rustix::io::ioctl_fionbio(&fd, true).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = std::fs::File::from(fd)
        .take(STDERR_BYTES as u64)
        .read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!("; its stderr: {}", text.replace('\n', " | "))
    }
}

/// The layers a worker's confinement report (`name<TAB>active[<TAB>detail]` or
/// `name<TAB>unavailable<TAB>why`, a line each) says are not active, as `name (why)`.
pub(crate) fn unavailable_layers(report: &str) -> Vec<String> {
    report
        .lines()
        .filter(|l| !l.is_empty())
        .filter_map(|line| {
            let mut fields = line.splitn(3, '\t');
            let name = fields.next().unwrap_or_default();
            match fields.next() {
                Some("active") => None,
                _ => Some(format!(
                    "{name} ({})",
                    fields.next().unwrap_or("not reported")
                )),
            }
        })
        .collect()
}

/// Kills a worker's process group unless disarmed before the deadline.
struct Watchdog {
    disarm: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<bool>>,
}

impl Watchdog {
    /// Arms a watchdog over the process group of `pid`; an error when its thread cannot start.
    fn start(pid: u32, deadline: Duration) -> Result<Self, PrepareError> {
        let (disarm, disarmed) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("pvf-worker-watchdog".into())
            .spawn(move || match disarmed.recv_timeout(deadline) {
                Err(RecvTimeoutError::Timeout) => {
                    kill_group(pid);
                    true
                }
                _ => false,
            })
            .map_err(|e| {
                PrepareError::Worker(format!("cannot start the worker's watchdog: {e}"))
            })?;
        Ok(Self {
            disarm: Some(disarm),
            thread: Some(thread),
        })
    }

    /// Stops the watchdog; whether it had fired.
    fn disarm(mut self) -> bool {
        drop(self.disarm.take());
        self.thread
            .take()
            .is_some_and(|t| t.join().unwrap_or(false))
    }
}
