//! Out-of-process execution: strangers' code runs in long-lived, confined execution workers.
//!
//! The host side (this file) keeps up to N workers (N = [`Config::execution_workers`]), started
//! on demand and kept between calls, each with its own shared-memory channel (`channel.rs`). A
//! call takes an idle worker (or starts one, or waits for one), sends `Execute` with the code
//! hash and the params, and reads the response; a worker that does not hold the component
//! answers `NotLoaded`, and the host sends it the artifact it verified (`Load`), then `Execute`
//! again. The worker (`child.rs`) is the preparation worker's executable in another role, under
//! the same confinement (no filesystem at all), with a seccomp allowlist of its own.
//!
//! **Crash containment.** A worker that dies under a call (a signal, an abort, an exit), sends
//! something unreadable, or outlives the wall-clock backstop (twice the execution timeout) is
//! killed — its whole process group — and dropped; the call is
//! [`ExecuteError::Worker`] (`indeterminate`, retried by the service's policy), and the next call
//! starts a new worker. A worker found dead between calls is replaced before the call, which then
//! runs normally. Every cause is counted ([`WorkerFailure`]).
//!
//! **Death with the host.** A worker notices that its stdin reached end of file — the host
//! closed it, or the host died and the kernel closed it — within 50 ms (`child.rs`'s `IDLE_SLICE`) when idle,
//! and exits; its pid-namespace waiter then ends as it did. Dropping the pool kills every worker
//! and reaps it.

pub(crate) mod child;
pub(crate) mod messages;

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use messages::Fault;
use messages::{
    ExecHello, ExecReady, ExecSettings, MAGIC, MAX_HANDSHAKE_BYTES, Request, Response, VERSION,
};

use super::channel::{Channel, WaitPolicy};
use super::{describe, kill_group, stderr_tail_of, unavailable_layers};
use crate::config::Config;
use crate::error::{ExecuteError, HostError};
use crate::store::CodeHash;
use crate::types::{ValidationParams, ValidationResult};

/// The first argument that makes the worker executable an execution worker.
pub const EXEC_WORKER_ARG: &str = "__pvf-exec-worker";
/// How long a new execution worker may take to start, confine itself and answer.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(20);
/// How long the host sleeps on the channel at most before it looks whether the worker died or
/// the backstop passed: a death is noticed within this.
const HOST_SLICE: Duration = Duration::from_millis(5);
/// The least the backstop adds to the execution timeout.
const MIN_BACKSTOP_MARGIN: Duration = Duration::from_millis(500);
/// How long a `Load` may take: the time to construct the largest artifact is far below it.
const LOAD_BACKSTOP: Duration = Duration::from_secs(60);

/// Starts one execution worker as a host with `config` would (in [`Isolation::PerJob`] a per-job
/// one), dismisses it, and returns its confinement report: one `name<TAB>active[<TAB>detail]` or
/// `name<TAB>unavailable<TAB>why` line a layer. For `pvf doctor`.
///
/// [`Isolation::PerJob`]: crate::Isolation::PerJob
pub fn execution_worker_layers(config: &Config) -> Result<String, String> {
    let exe =
        super::find_executable(config.worker_executable.as_deref()).map_err(|e| e.to_string())?;
    let environment =
        crate::environment::ExecutionEnvironment::for_config(config).map_err(|e| e.to_string())?;
    let pool = ExecPool::new(
        exe,
        &config.clone().require_confinement(false),
        *environment.id().as_bytes(),
        config.isolation == crate::Isolation::PerJob,
    )
    .map_err(|e| e.to_string())?;
    pool.warm().map_err(|e| e.to_string())
}

/// Why an execution worker was replaced: the cause of a restart, counted per pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkerFailure {
    /// It died under a call: a signal (`SIGKILL`, `SIGSEGV`, ...), an abort, an exit.
    Died,
    /// It did not answer within the wall-clock backstop (hung, stopped, deadlocked): killed.
    Backstop,
    /// It sent something that is not an answer (unreadable, truncated, out of place): killed.
    Protocol,
    /// It was found dead between calls (no call was affected).
    DiedIdle,
    /// A new worker could not be started or was refused at the handshake.
    StartFailed,
}

impl WorkerFailure {
    /// Every cause, in a fixed order.
    pub const ALL: [WorkerFailure; 5] = [
        Self::Died,
        Self::Backstop,
        Self::Protocol,
        Self::DiedIdle,
        Self::StartFailed,
    ];

    /// `died`, `backstop`, `protocol`, `died_idle` or `start_failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Died => "died",
            Self::Backstop => "backstop",
            Self::Protocol => "protocol",
            Self::DiedIdle => "died_idle",
            Self::StartFailed => "start_failed",
        }
    }
}

/// One execution worker, as [`ValidationHost::execution_workers`](crate::ValidationHost::execution_workers)
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionWorkerInfo {
    /// Its slot, `0..N`: a replaced worker takes the slot of the one it replaces.
    pub slot: usize,
    /// The process id of the worker's outermost process (the host's child): killing it kills
    /// the worker.
    pub pid: u32,
    /// Calls this worker process has served.
    pub calls: u64,
    /// Resident memory of the worker's processes, in bytes (`None` when `/proc` cannot say).
    pub rss_bytes: Option<u64>,
    /// Whether it is serving a call now.
    pub busy: bool,
}

/// The pool's counters.
#[derive(Debug, Default)]
struct Stats {
    restarts: [AtomicU64; 5],
    calls: AtomicU64,
}

/// A worker being started on a thread of its own: its slot, and the thread.
type Starting = (usize, JoinHandle<Result<ExecWorker, String>>);

/// Execution workers and the calls into them.
pub(crate) struct ExecPool {
    launcher: Arc<ExecLauncher>,
    /// A worker being started ahead of need ([`Self::prestart`]): its slot and its thread.
    pending: Mutex<Option<Starting>>,
    state: Mutex<PoolState>,
    freed: Condvar,
    stats: Stats,
    proc: Option<cap_std::fs::Dir>,
}

struct PoolState {
    /// Idle workers.
    idle: Vec<ExecWorker>,
    /// Slots not held by any worker (idle or busy).
    free_slots: Vec<usize>,
    /// Busy workers: slot, pid, calls (for reports).
    busy: Vec<(usize, u32, u64)>,
    /// A fault to inject into the next call (tests only).
    fault: Option<Fault>,
}

struct ExecLauncher {
    exe: PathBuf,
    hello: ExecHello,
    environment: [u8; 32],
    require_confinement: bool,
    spin: Duration,
    max_response: usize,
}

/// A started execution worker that answered the handshake.
struct ExecWorker {
    slot: usize,
    child: Child,
    stdin: Option<ChildStdin>,
    _stdout: ChildStdout,
    stderr: Option<ChildStderr>,
    channel: Channel,
    calls: u64,
    /// Its confinement report (`name<TAB>state[<TAB>detail]` lines).
    confinement: String,
}

impl Drop for ExecWorker {
    fn drop(&mut self) {
        super::dismiss(&mut self.child, &mut self.stdin);
    }
}

/// What went wrong in a call, and what it makes of the worker.
struct CallFailure {
    cause: WorkerFailure,
    message: String,
}

impl ExecPool {
    /// A pool of up to `config.execution_workers` workers for `environment` (the host's
    /// execution-environment id, which every worker must compute too). Starts none yet, except
    /// one when `require_confinement` is set (to fail now, not at the first call).
    pub(crate) fn new(
        exe: PathBuf,
        config: &Config,
        environment: [u8; 32],
        per_job: bool,
    ) -> Result<Self, HostError> {
        let slots = config.execution_workers.max(1);
        let launcher = ExecLauncher {
            exe,
            hello: ExecHello {
                magic: MAGIC,
                version: VERSION,
                build_id: super::build_id().to_owned(),
                settings: ExecSettings::of(config),
                per_job,
                require_confinement: config.require_confinement,
                spin_nanos: u64::try_from(config.worker_spin.as_nanos()).unwrap_or(u64::MAX),
                allow_faults: config.worker_faults,
            },
            environment,
            require_confinement: config.require_confinement,
            spin: config.worker_spin,
            max_response: messages::max_response_bytes(config),
        };
        let proc = cap_std::fs::Dir::open_ambient_dir("/proc", cap_std::ambient_authority()).ok();
        let pool = Self {
            launcher: Arc::new(launcher),
            pending: Mutex::new(None),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                free_slots: (0..slots).rev().collect(),
                busy: Vec::new(),
                fault: None,
            }),
            freed: Condvar::new(),
            stats: Stats::default(),
            proc,
        };
        if config.require_confinement {
            let slot = pool.lock().free_slots.pop().unwrap_or(0);
            match pool.launcher.start(slot) {
                Ok(worker) => pool.lock().idle.push(worker),
                Err(e) => return Err(HostError::Worker(e)),
            }
        }
        Ok(pool)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `code_hash` with `params` in a worker (or, with `instantiate_only`, instantiates it
    /// only); `artifact` gives the verified artifact when the worker does not hold it.
    pub(crate) fn execute(
        &self,
        code_hash: &CodeHash,
        artifact: &[u8],
        params: &ValidationParams,
        timeout: Duration,
        instantiate_only: bool,
    ) -> (Result<Executed, ExecuteError>, Option<u64>) {
        let mut worker = match self.acquire(timeout) {
            Ok(worker) => worker,
            Err(e) => return (Err(e), None),
        };
        let fault = self.lock().fault.take();
        let outcome = self.call(
            &mut worker,
            code_hash,
            artifact,
            params,
            timeout,
            instantiate_only,
            fault,
        );
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(outcome) => {
                self.release(Some(worker));
                outcome
            }
            Err(failure) => (Err(self.retire(worker, failure)), None),
        }
    }

    /// Drops a worker that failed under a call (it was killed and reaped when the failure was
    /// classified), counts the cause, frees its slot; the call's error, with the start of what
    /// the worker wrote on stderr.
    fn retire(&self, mut worker: ExecWorker, failure: CallFailure) -> ExecuteError {
        self.count(failure.cause);
        let message = format!("{}{}", failure.message, stderr_tail_of(&mut worker.stderr));
        tracing::warn!(slot = worker.slot, cause = failure.cause.as_str(), %message, "execution worker replaced");
        let slot = worker.slot;
        drop(worker);
        self.release_slot(slot);
        ExecuteError::Worker(message)
    }

    /// One call on `worker`: `Execute`, and `Load` then `Execute` again when it lacks the
    /// component.
    #[allow(clippy::too_many_arguments)]
    fn call(
        &self,
        worker: &mut ExecWorker,
        code_hash: &CodeHash,
        artifact: &[u8],
        params: &ValidationParams,
        timeout: Duration,
        instantiate_only: bool,
        fault: Option<Fault>,
    ) -> Result<(Result<Executed, ExecuteError>, Option<u64>), CallFailure> {
        let backstop = timeout
            .saturating_mul(2)
            .max(timeout.saturating_add(MIN_BACKSTOP_MARGIN));
        if let Some(fault) = fault {
            let response = self
                .launcher
                .round_trip(worker, &Request::Fault(fault), backstop)?;
            return Err(CallFailure {
                cause: WorkerFailure::Protocol,
                message: format!("an answer out of place: {response:?}"),
            });
        }
        let request = Request::Execute {
            code_hash: *code_hash.as_bytes(),
            params: std::borrow::Cow::Borrowed(params),
            timeout,
            instantiate_only,
        };
        worker.calls += 1;
        let mut loaded = false;
        loop {
            let response = self.launcher.round_trip(worker, &request, backstop)?;
            let outcome = match response {
                Response::Executed {
                    result,
                    fuel_consumed,
                } if !instantiate_only => (result.map(Executed::Result), fuel_consumed),
                Response::Instantiated(result) if instantiate_only => {
                    (result.map(|()| Executed::Instantiated), None)
                }
                Response::ChildDied(why) => (
                    Err(ExecuteError::Worker(format!("per-job child: {why}"))),
                    None,
                ),
                Response::NotLoaded if !loaded => {
                    loaded = true;
                    let load = Request::Load {
                        code_hash: *code_hash.as_bytes(),
                        digest: *blake3::hash(artifact).as_bytes(),
                        artifact,
                    };
                    let started = Instant::now();
                    match self.launcher.round_trip(worker, &load, LOAD_BACKSTOP)? {
                        Response::Loaded => {
                            tracing::debug!(slot = worker.slot, bytes = artifact.len(), elapsed = ?started.elapsed(), "the execution worker loaded a component");
                            continue;
                        }
                        // The host constructed and linked these same bytes: a worker that cannot
                        // is this node's problem, never the code's.
                        Response::LoadFailed(e) => {
                            return Ok((
                                Err(ExecuteError::Worker(format!(
                                    "could not load an artifact this host loaded: {e}"
                                ))),
                                None,
                            ));
                        }
                        other => {
                            return Err(CallFailure {
                                cause: WorkerFailure::Protocol,
                                message: format!("an answer out of place for a load: {other:?}"),
                            });
                        }
                    }
                }
                other => {
                    return Err(CallFailure {
                        cause: WorkerFailure::Protocol,
                        message: format!("an answer out of place: {}", short(&other)),
                    });
                }
            };
            return Ok(outcome);
        }
    }

    /// Starts a worker in a free slot on a thread of its own, unless one is idle, starting, or
    /// no slot is free: a one-shot command's first execution then does not wait for a process to
    /// start while the host reads and checks the artifact.
    pub(crate) fn prestart(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.is_some() {
            return;
        }
        let mut state = self.lock();
        if !state.idle.is_empty() {
            return;
        }
        let Some(slot) = state.free_slots.pop() else {
            return;
        };
        drop(state);
        let launcher = self.launcher.clone();
        match std::thread::Builder::new()
            .name("pvf-exec-prestart".into())
            .spawn(move || launcher.start(slot))
        {
            Ok(thread) => *pending = Some((slot, thread)),
            Err(_) => self.lock().free_slots.push(slot),
        }
    }

    /// The worker [`Self::prestart`] started, once it answered (`None` when there is none).
    fn take_pending(&self) -> Option<Result<ExecWorker, (usize, String)>> {
        let (slot, thread) = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()?;
        Some(match thread.join() {
            Ok(Ok(worker)) => Ok(worker),
            Ok(Err(e)) => Err((slot, e)),
            Err(_) => Err((slot, "the thread starting it panicked".into())),
        })
    }

    /// An idle worker (replacing one found dead), a new one in a free slot, or — all busy — the
    /// first one freed. Waiting is bounded: every busy call ends within its backstop.
    fn acquire(&self, timeout: Duration) -> Result<ExecWorker, ExecuteError> {
        match self.take_pending() {
            Some(Ok(worker)) => {
                self.lock()
                    .busy
                    .push((worker.slot, worker.child.id(), worker.calls));
                return Ok(worker);
            }
            Some(Err((slot, e))) => {
                self.count(WorkerFailure::StartFailed);
                tracing::warn!(error = %e, "an execution worker started ahead of need failed");
                self.release_slot(slot);
            }
            None => {}
        }
        let deadline = Instant::now()
            + timeout.saturating_mul(4).max(Duration::from_secs(10))
            + HANDSHAKE_DEADLINE;
        let mut state = self.lock();
        loop {
            if let Some(mut worker) = state.idle.pop() {
                if matches!(worker.child.try_wait(), Ok(None)) {
                    state
                        .busy
                        .push((worker.slot, worker.child.id(), worker.calls));
                    return Ok(worker);
                }
                // Dead between calls: replace it before the call.
                self.count(WorkerFailure::DiedIdle);
                tracing::warn!(
                    slot = worker.slot,
                    "an idle execution worker died; replacing it"
                );
                let slot = worker.slot;
                drop(worker);
                state.free_slots.push(slot);
                continue;
            }
            if let Some(slot) = state.free_slots.pop() {
                state.busy.push((slot, 0, 0));
                drop(state);
                match self.launcher.start(slot) {
                    Ok(worker) => {
                        let mut state = self.lock();
                        if let Some(entry) = state.busy.iter_mut().find(|b| b.0 == slot) {
                            entry.1 = worker.child.id();
                        }
                        return Ok(worker);
                    }
                    Err(e) => {
                        self.count(WorkerFailure::StartFailed);
                        self.release_slot(slot);
                        return Err(ExecuteError::Worker(e));
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ExecuteError::Worker(
                    "no execution worker became free in time".into(),
                ));
            }
            state = self
                .freed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Puts a worker back after a good call.
    fn release(&self, worker: Option<ExecWorker>) {
        let mut state = self.lock();
        if let Some(worker) = worker {
            state.busy.retain(|b| b.0 != worker.slot);
            state.idle.push(worker);
        }
        drop(state);
        self.freed.notify_one();
    }

    /// Frees the slot of a worker that was dropped.
    fn release_slot(&self, slot: usize) {
        let mut state = self.lock();
        state.busy.retain(|b| b.0 != slot);
        state.free_slots.push(slot);
        drop(state);
        self.freed.notify_one();
    }

    fn count(&self, cause: WorkerFailure) {
        let index = WorkerFailure::ALL
            .iter()
            .position(|c| *c == cause)
            .unwrap_or(0);
        self.stats.restarts[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Restarts so far, by cause.
    pub(crate) fn restarts(&self) -> Vec<(WorkerFailure, u64)> {
        WorkerFailure::ALL
            .iter()
            .zip(&self.stats.restarts)
            .map(|(c, n)| (*c, n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Calls served (or failed) so far, all workers.
    pub(crate) fn calls(&self) -> u64 {
        self.stats.calls.load(Ordering::Relaxed)
    }

    /// The workers alive now.
    pub(crate) fn workers(&self) -> Vec<ExecutionWorkerInfo> {
        let state = self.lock();
        let mut infos: Vec<ExecutionWorkerInfo> = state
            .idle
            .iter()
            .map(|w| (w.slot, w.child.id(), w.calls, false))
            .chain(
                state
                    .busy
                    .iter()
                    .filter(|b| b.1 != 0)
                    .map(|b| (b.0, b.1, b.2, true)),
            )
            .map(|(slot, pid, calls, busy)| ExecutionWorkerInfo {
                slot,
                pid,
                calls,
                rss_bytes: None,
                busy,
            })
            .collect();
        drop(state);
        for info in &mut infos {
            info.rss_bytes = self.rss(info.pid);
        }
        infos.sort_by_key(|i| i.slot);
        infos
    }

    /// Tests only: a worker tries the forbidden thing `action` names (a probe action) — in a
    /// per-job child in per-job mode — and says what happened; a worker that died of it is
    /// replaced and the error says how it died.
    pub(crate) fn probe(&self, action: &str) -> Result<String, ExecuteError> {
        let mut worker = self.acquire(HANDSHAKE_DEADLINE)?;
        let outcome = self.launcher.round_trip(
            &mut worker,
            &Request::Probe(action.to_owned()),
            HANDSHAKE_DEADLINE,
        );
        match outcome {
            Ok(Response::Probed(text)) => {
                self.release(Some(worker));
                Ok(text)
            }
            Ok(Response::ChildDied(why)) => {
                self.release(Some(worker));
                Err(ExecuteError::Worker(format!("per-job child: {why}")))
            }
            Ok(other) => {
                let failure = CallFailure {
                    cause: WorkerFailure::Protocol,
                    message: format!("an answer out of place: {}", short(&other)),
                };
                Err(self.retire(worker, failure))
            }
            Err(failure) => Err(self.retire(worker, failure)),
        }
    }

    /// Makes sure one worker is started (starting it now when none is) and returns its
    /// confinement report: one `name<TAB>active[<TAB>detail]` or `name<TAB>unavailable<TAB>why`
    /// line a layer.
    pub(crate) fn warm(&self) -> Result<String, ExecuteError> {
        let worker = self.acquire(HANDSHAKE_DEADLINE)?;
        let report = worker.confinement.clone();
        self.release(Some(worker));
        Ok(report)
    }

    /// Tests only: the next call's worker misbehaves as `fault` says.
    pub(crate) fn inject(&self, fault: Fault) {
        self.lock().fault = Some(fault);
    }

    /// The resident memory of `pid` and its children (the worker proper runs as the child of
    /// its pid-namespace waiter), from `/proc`.
    fn rss(&self, pid: u32) -> Option<u64> {
        let proc = self.proc.as_ref()?;
        let page = rustix::param::page_size() as u64;
        let rss_of = |pid: &str| -> Option<u64> {
            let statm = proc.read_to_string(format!("{pid}/statm")).ok()?;
            statm
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
                .map(|p| p * page)
        };
        let mut total = rss_of(&pid.to_string())?;
        if let Ok(children) = proc.read_to_string(format!("{pid}/task/{pid}/children")) {
            for child in children.split_whitespace().take(64) {
                total += rss_of(child).unwrap_or(0);
            }
        }
        Some(total)
    }
}

impl Drop for ExecPool {
    fn drop(&mut self) {
        // A worker still starting is waited for, then dismissed (dropping it kills it).
        drop(self.take_pending());
        // Dropping each idle worker kills and reaps it; busy ones are dropped by their callers,
        // which hold a reference to the pool, so there are none here.
        self.lock().idle.clear();
    }
}

/// What a successful call gave.
pub(crate) enum Executed {
    /// The validation's result.
    Result(ValidationResult),
    /// An instantiation (pre-check) went through.
    Instantiated,
}

fn short(response: &Response) -> String {
    let text = format!("{response:?}");
    crate::error::truncate_utf8(&text, 200).to_owned()
}

impl ExecLauncher {
    /// Starts a worker in `slot` and checks its handshake.
    fn start(&self, slot: usize) -> Result<ExecWorker, String> {
        let started = Instant::now();
        let channel = Channel::create().map_err(|e| format!("cannot make the channel: {e}"))?;
        let memfd = channel.fd().as_raw_fd();
        let mut command = Command::new(&self.exe);
        command
            .arg(EXEC_WORKER_ARG)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        #[allow(unsafe_code)]
        // SAFETY: worker process set-up. The closure runs in the forked child before `exec`, where
        // only async-signal-safe calls are allowed: it calls `dup2` and `fcntl` (both are) on
        // descriptors it does not own in Rust's sense, allocates nothing and takes no lock. It
        // puts the channel's memfd on descriptor 3 without close-on-exec (the original, which
        // has close-on-exec, closes at `exec`), so the worker and only it inherits the channel.
        unsafe {
            command.pre_exec(move || {
                if memfd == child::CHANNEL_FD {
                    if libc::fcntl(memfd, libc::F_SETFD, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(memfd, child::CHANNEL_FD) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        let (Some(stdin), Some(stdout), stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the worker's pipes are missing".into());
        };
        let mut worker = ExecWorker {
            slot,
            child,
            stdin: Some(stdin),
            _stdout: stdout,
            stderr,
            channel,
            calls: 0,
            confinement: String::new(),
        };
        let watchdog = super::Watchdog::start(worker.child.id(), HANDSHAKE_DEADLINE)
            .map_err(|e| e.to_string())?;
        let ready = messages::write_frame(worker.stdin.as_mut().expect("just set"), &self.hello)
            .and_then(|()| {
                messages::read_frame::<ExecReady>(&mut worker._stdout, MAX_HANDSHAKE_BYTES)
            });
        let fired = watchdog.disarm();
        let ready = match ready {
            Ok(ready) => ready,
            Err(e) => {
                kill_group(worker.child.id());
                let _ = worker.child.kill();
                let status = worker.child.wait().ok();
                let why = if fired {
                    format!("no handshake within {HANDSHAKE_DEADLINE:?}")
                } else {
                    e.to_string()
                };
                return Err(format!(
                    "the execution worker {} did not start: {why}; it {}{}",
                    self.exe.display(),
                    describe(status),
                    stderr_tail_of(&mut worker.stderr)
                ));
            }
        };
        self.check(&ready)?;
        worker.confinement = ready.confinement;
        tracing::debug!(slot, elapsed = ?started.elapsed(), "execution worker started");
        Ok(worker)
    }

    /// The handshake's checks: protocol, build, execution environment, the counting allocator,
    /// and (in secure mode) every confinement layer.
    fn check(&self, ready: &ExecReady) -> Result<(), String> {
        let refuse = |why: String| {
            Err(format!(
                "refused the execution worker {}: {why}",
                self.exe.display()
            ))
        };
        if ready.magic != MAGIC || ready.version != VERSION {
            return refuse(format!(
                "it speaks protocol version {} (this host {VERSION})",
                ready.version
            ));
        }
        if ready.build_id != self.hello.build_id {
            return refuse(format!(
                "it is of another build ({}, this host is {})",
                ready.build_id, self.hello.build_id
            ));
        }
        if ready.environment != self.environment {
            return refuse(
                "its execution environment differs from this host's (an extension this host \
                 registers that the worker executable lacks? use Isolation::InProcess, or a \
                 worker executable that registers it)"
                    .into(),
            );
        }
        if !ready.counting_allocator {
            return refuse(
                "its global allocator is not pvf_host::worker::CountingAllocator, so the memory cap cannot hold".into(),
            );
        }
        if ready.confinement.trim().is_empty() {
            return refuse("it sent no confinement report".into());
        }
        let missing = unavailable_layers(&ready.confinement);
        if !missing.is_empty() {
            if self.require_confinement {
                return refuse(format!(
                    "confinement layers unavailable: {}",
                    missing.join(", ")
                ));
            }
            tracing::debug!(unavailable = %missing.join(", "), "execution worker partly confined");
        }
        Ok(())
    }

    /// Sends `request` and reads the response, within `backstop`; any failure is the worker's.
    fn round_trip(
        &self,
        worker: &mut ExecWorker,
        request: &Request<'_>,
        backstop: Duration,
    ) -> Result<Response, CallFailure> {
        let deadline = Instant::now() + backstop;
        let bytes = messages::encode(request).map_err(|e| CallFailure {
            cause: WorkerFailure::Protocol,
            message: format!("cannot encode the request: {e}"),
        })?;
        let wait = WaitPolicy {
            spin: self.spin,
            slice: HOST_SLICE,
        };
        let pid = worker.child.id();
        let mut check = || watch(pid, deadline, backstop);
        let received = worker
            .channel
            .send(&bytes, &wait, &mut check)
            .and_then(|()| worker.channel.recv(self.max_response, &wait, &mut check));
        let bytes = match received {
            Ok(bytes) => bytes,
            Err(e) => return Err(self.failure(worker, e.to_string(), deadline, backstop)),
        };
        messages::decode::<Response>(&bytes).map_err(|e| {
            self.failure(
                worker,
                format!("an unreadable answer: {e}"),
                deadline,
                backstop,
            )
        })
    }

    /// Classifies what went wrong with `worker`: killed by the backstop, dead, or a protocol
    /// failure; kills it in every case (dropping it then reaps it).
    fn failure(
        &self,
        worker: &mut ExecWorker,
        what: String,
        deadline: Instant,
        backstop: Duration,
    ) -> CallFailure {
        let dead = exited(worker.child.id());
        let (cause, why) = if dead {
            (WorkerFailure::Died, "died".to_owned())
        } else if Instant::now() >= deadline {
            (
                WorkerFailure::Backstop,
                format!("no answer within the wall-clock backstop of {backstop:?}; killed"),
            )
        } else {
            (WorkerFailure::Protocol, format!("{what}; killed"))
        };
        kill_group(worker.child.id());
        let _ = worker.child.kill();
        let status = worker.child.wait().ok();
        CallFailure {
            cause,
            message: format!("{why}: it {}", describe(status)),
        }
    }
}

/// The host's check while it waits on a worker: the backstop, and whether it died.
fn watch(pid: u32, deadline: Instant, backstop: Duration) -> Result<(), String> {
    if exited(pid) {
        return Err("the worker died".into());
    }
    if Instant::now() >= deadline {
        return Err(format!("no answer within {backstop:?}"));
    }
    Ok(())
}

/// Whether the process `pid` (a child of ours) has ended; it is left unreaped.
fn exited(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return true;
    };
    matches!(
        rustix::process::waitid(
            rustix::process::WaitId::Pid(pid),
            rustix::process::WaitIdOptions::EXITED
                | rustix::process::WaitIdOptions::NOWAIT
                | rustix::process::WaitIdOptions::NOHANG,
        ),
        Ok(Some(_))
    )
}
