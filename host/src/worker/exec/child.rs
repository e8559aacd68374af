//! The execution worker's side: confine, answer the handshake, then serve requests from the
//! shared-memory channel until the host ends it. Nothing here decides a verdict class: an
//! execution's own outcome is reported as it is, and the host classifies it.
//!
//! In `workers` mode the worker runs each execution itself, on its main thread, with an epoch
//! ticker thread for the wall-clock deadline and the pooling allocator when the host uses it. In
//! `per-job` mode the worker starts no thread at all: for each execution it forks a child (the
//! component is already constructed in the worker's memory, so the child only instantiates and
//! calls), the child makes its own user, mount, ipc and uts namespaces, applies its own narrower
//! seccomp filter, runs the execution, writes the response on a pipe and exits; the worker reads
//! the answer (killing the child at the execution's deadline), waits for it, and forwards the
//! answer (or that the child died).

use std::io::{self, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags};

use super::super::alloc::CountingAllocator;
use super::super::channel::{Channel, WaitPolicy};
use super::super::confine::{self, ConfinePolicy, LayerState, Syscalls};
use super::messages::{
    self, ExecHello, ExecReady, Fault, MAGIC, MAX_HANDSHAKE_BYTES, Request, Response, VERSION,
};
use crate::bindings::ValidationFunctionPre;
use crate::config::Config;
use crate::engine::{EpochTicker, new_engine};
use crate::execute::{HostState, construct_raw, execute, instantiate_only};
use crate::memory_cache::MemoryCache;
use crate::prepare::link;
use crate::store::{CodeHash, VerifiedArtifact};

/// The descriptor the host puts the channel's memfd on before the worker starts.
pub(crate) const CHANNEL_FD: i32 = 3;
/// The worker's exit code when it could not serve (a protocol or set-up error; told on stderr).
const EXIT_WORKER_ERROR: u8 = 70;
/// The exit code of a per-job child that could not enter its namespaces.
const EXIT_NO_NAMESPACES: i32 = 72;
/// The exit code of a per-job child that could not apply its own seccomp filter.
const EXIT_NO_FILTER: i32 = 73;
/// The most components a worker keeps: each holds a few descriptors (wasmtime's memfd memory
/// images), and the worker may open at most [`MAX_OPEN_FILES`].
const MAX_COMPONENTS: usize = 256;
/// The execution worker's `RLIMIT_NOFILE`: stdio, the channel, a per-job child's pipe, and the
/// memory images of [`MAX_COMPONENTS`] components (a component has one per core module with
/// initialised memory; the bundled guests have one or two).
const MAX_OPEN_FILES: u64 = 1024;
/// How long the worker sleeps on the channel at most before it looks whether the host is gone.
const IDLE_SLICE: Duration = Duration::from_millis(50);
/// The worker's heap cap beyond the largest request and twice the largest response: the
/// engine, the linker, the in-memory cache's bookkeeping and an execution's own data structures.
/// No honest execution comes near it; the counting allocator ends the worker when it is reached
/// (the host sees a death: `indeterminate`).
const HEAP_HEADROOM: usize = 512 << 20;

/// Runs the execution worker: the process was started as `<exe> __pvf-exec-worker` by the host,
/// with the channel's memfd on descriptor [`CHANNEL_FD`].
pub(crate) fn run(alloc: &'static CountingAllocator) -> ExitCode {
    #[allow(unsafe_code)]
    // SAFETY: process set-up, before anything else runs: the host's `pre_exec` placed the
    // channel's memfd on descriptor 3 (without close-on-exec) for this process, and nothing in
    // it has opened, closed or taken descriptor 3 since `exec`; this takes ownership of it
    // once. `Channel::open` checks what it is (size, seals, header) before using it.
    let channel_fd = unsafe { OwnedFd::from_raw_fd(CHANNEL_FD) };
    // Read the handshake before confining: it says whether this is a per-job worker, whose
    // user namespace must map its uid (its children make their own).
    let mut input = BufReader::new(io::stdin().lock());
    let hello: ExecHello = match messages::read_frame(&mut input, MAX_HANDSHAKE_BYTES) {
        Ok(hello) => hello,
        Err(e) => return fail(&format!("no handshake: {e}")),
    };
    let syscalls = if hello.per_job {
        Syscalls::ExecutePerJob
    } else {
        Syscalls::Execute
    };
    let policy = ConfinePolicy::production()
        .map_user(hello.per_job)
        .syscalls(syscalls)
        .max_file_bytes(hello.settings.max_memory_bytes)
        .max_open_files(MAX_OPEN_FILES);
    let report = confine::confine_process(&policy);
    match serve(alloc, &policy, &report, hello, input, channel_fd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(why: &str) -> ExitCode {
    let _ = writeln!(io::stderr(), "pvf execution worker: {why}");
    ExitCode::from(EXIT_WORKER_ERROR)
}

/// What an execution needs, built once at the handshake.
struct Worker {
    engine: wasmtime::Engine,
    linker: wasmtime::component::Linker<HostState>,
    config: Config,
    cache: MemoryCache,
    per_job: bool,
    per_job_namespaces: bool,
    /// Per-job mode: the filter each child applies to itself.
    child_filter: Option<confine::ChildFilter>,
    allow_faults: bool,
    max_response: usize,
}

fn serve(
    alloc: &'static CountingAllocator,
    policy: &ConfinePolicy,
    report: &confine::ConfineReport,
    hello: ExecHello,
    _input: BufReader<io::StdinLock<'static>>,
    channel_fd: OwnedFd,
) -> Result<(), String> {
    if hello.magic != MAGIC || hello.version != VERSION {
        return Err(format!(
            "the host speaks protocol {:?} version {}, this worker {MAGIC:?} version {VERSION}",
            hello.magic, hello.version
        ));
    }
    let mut config = hello.settings.to_config();
    if hello.per_job {
        // A fork copies the page tables of the pool's reservations: 0.7 ms without the pool
        // against 2.6 ms with it, measured here.
        config = config.pooling(false);
    }
    let engine = new_engine(&config).map_err(|e| format!("cannot build the engine: {e:#}"))?;
    let environment = crate::environment::ExecutionEnvironment::of(&engine, &config);
    let channel = Channel::open(channel_fd).map_err(|e| format!("the channel: {e}"))?;
    let mut linker = wasmtime::component::Linker::new(&engine);
    crate::guest_wasi::add_to_linker(&mut linker).map_err(|e| format!("the linker: {e:#}"))?;
    crate::extensions::link::add_to_linker(&mut linker, &config.extensions)
        .map_err(|e| format!("the extensions: {e:#}"))?;
    let mut confinement = report.to_lines();
    let per_job_namespaces = if hello.per_job {
        let (line, works) = probe_job_namespaces();
        confinement.push_str(&line);
        works
    } else {
        false
    };
    // Compiled before the allowlist is installed, applied by each per-job child.
    let child_filter = if hello.per_job && policy.applies(confine::Layer::Seccomp) {
        match confine::ChildFilter::new() {
            Ok(filter) => Some(filter),
            Err(e) if hello.require_confinement => {
                return Err(format!("the per-job children's filter: {e}"));
            }
            Err(_) => None,
        }
    } else {
        None
    };
    // The allowlist, before the handshake's answer so that the report says how it went.
    let seccomp = confine::restrict_syscalls(policy);
    if let LayerState::Unavailable(why) = &seccomp.state
        && hello.require_confinement
    {
        return Err(format!(
            "seccomp is unavailable ({why}) and every confinement layer is required"
        ));
    }
    confinement.push_str(&format!("{}\n", seccomp.to_line()));
    let mut output = io::stdout().lock();
    messages::write_frame(
        &mut output,
        &ExecReady {
            magic: MAGIC,
            version: VERSION,
            build_id: super::super::build_id().to_owned(),
            environment: *environment.id().as_bytes(),
            counting_allocator: alloc.is_installed(),
            confinement,
        },
    )
    .map_err(|e| format!("cannot answer the handshake: {e}"))?;
    drop(output);

    // wasmtime-wasi runs its stream operations (the guest's stdout and stderr) on the ambient
    // tokio runtime, or else builds a multi-threaded one of its own at the first use, which
    // would need syscalls (epoll, eventfd) the allowlist refuses. A current-thread runtime
    // without drivers makes no descriptor and no thread; entered for the worker's life (and
    // in a per-job child, which inherits the entered context).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| format!("the runtime: {e}"))?;
    let _entered = runtime.enter();
    // Workers mode: the epoch ticker enforces each execution's deadline. A per-job worker
    // starts no thread (it forks): it enforces each child's deadline itself.
    let _ticker = if hello.per_job {
        None
    } else {
        Some(EpochTicker::start(&engine).map_err(|e| format!("the epoch ticker: {e}"))?)
    };
    let max_response = messages::max_response_bytes(&config);
    alloc.set_limit(
        messages::max_request_bytes()
            .saturating_add(max_response.saturating_mul(2))
            .saturating_add(HEAP_HEADROOM),
    );
    let worker = Worker {
        cache: MemoryCache::keeping_newest(config.memory_cache_bytes, MAX_COMPONENTS),
        engine,
        linker,
        config,
        per_job: hello.per_job,
        per_job_namespaces,
        child_filter,
        allow_faults: hello.allow_faults,
        max_response,
    };
    let wait = WaitPolicy {
        spin: Duration::from_nanos(hello.spin_nanos),
        slice: IDLE_SLICE,
    };
    let stdin = io::stdin();
    let mut host_alive = || {
        if host_gone(&stdin) {
            Err("the host is gone".to_owned())
        } else {
            Ok(())
        }
    };
    loop {
        let bytes = match channel.recv(messages::max_request_bytes(), &wait, &mut host_alive) {
            Ok(bytes) => bytes,
            // The host ended: the normal way out.
            Err(super::super::channel::ChannelError::Aborted(_)) => return Ok(()),
            Err(e) => return Err(format!("receiving a request: {e}")),
        };
        let request: Request =
            messages::decode(&bytes).map_err(|e| format!("an unreadable request: {e}"))?;
        let response = match request {
            Request::Fault(fault) if worker.allow_faults => {
                misbehave(&channel, &wait, fault);
                continue;
            }
            Request::Fault(_) => Response::Refused("faults are not allowed".into()),
            Request::Probe(action) if worker.allow_faults && action == JOB_COST => {
                Response::Probed(worker.job_cost())
            }
            Request::Probe(action) if worker.allow_faults => {
                let attempt = || Response::Probed(confine::attempt(&action));
                if worker.per_job {
                    worker.in_child(attempt)
                } else {
                    attempt()
                }
            }
            Request::Probe(_) => Response::Refused("probes are not allowed".into()),
            Request::Load {
                code_hash,
                digest,
                artifact,
            } => {
                // The artifact is the message's tail: keep the message, start at the artifact.
                let start = bytes.len() - artifact.len();
                let (code_hash, digest) = (CodeHash::from_bytes(code_hash), digest);
                worker.load(code_hash, &digest, bytes, start)
            }
            Request::Execute {
                code_hash,
                params,
                timeout,
                instantiate_only,
            } => worker.execute(
                &CodeHash::from_bytes(code_hash),
                &params,
                timeout,
                instantiate_only,
            ),
        };
        let encoded = messages::encode(&response).map_err(|e| e.to_string())?;
        channel
            .send(&encoded, &wait, &mut host_alive)
            .map_err(|e| format!("sending a response: {e}"))?;
    }
}

/// Whether the host closed its end of our stdin (it died, or dismissed us).
fn host_gone(stdin: &io::Stdin) -> bool {
    let mut fds = [PollFd::new(stdin, PollFlags::IN)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match rustix::event::poll(&mut fds, Some(&zero)) {
        // The host never writes after the handshake: readable means end of file (or hang-up).
        Ok(n) => n > 0,
        Err(rustix::io::Errno::INTR) => false,
        Err(_) => true,
    }
}

impl Worker {
    /// Constructs and links a verified artifact (`message[start..]`), and keeps it.
    fn load(
        &self,
        code_hash: CodeHash,
        digest: &[u8; 32],
        message: Vec<u8>,
        start: usize,
    ) -> Response {
        if message
            .get(start..)
            .map(blake3::hash)
            .as_ref()
            .map(blake3::Hash::as_bytes)
            != Some(digest)
        {
            return Response::LoadFailed(crate::error::ExecuteError::Construction(
                "the artifact does not match the digest the host sent".into(),
            ));
        }
        let size = message.len() - start;
        let artifact = VerifiedArtifact::sent_by_host(message, start);
        // The copy-on-write images of the initial memories are made now, once, not at the first
        // instantiation: a per-job worker's children would each make their own.
        let component = match construct_raw(&self.engine, &artifact)
            .and_then(|c| c.initialize_copy_on_write_image().map(|()| c))
        {
            Ok(component) => component,
            Err(e) => {
                return Response::LoadFailed(crate::error::ExecuteError::Construction(format!(
                    "{e:#}"
                )));
            }
        };
        match link(&self.linker, &component) {
            Ok(pre) => {
                self.cache.insert(code_hash, pre, size);
                Response::Loaded
            }
            Err(e) => Response::LoadFailed(crate::error::ExecuteError::Link(e.to_string())),
        }
    }

    /// Runs one execution (or instantiation) of a loaded component.
    fn execute(
        &self,
        code_hash: &CodeHash,
        params: &crate::ValidationParams,
        timeout: Duration,
        instantiate: bool,
    ) -> Response {
        let Some(pre) = self.cache.get(code_hash) else {
            return Response::NotLoaded;
        };
        let run = || self.run(&pre, code_hash, params, timeout, instantiate);
        if self.per_job {
            self.in_child_with_deadline(run, Some(timeout))
        } else {
            run()
        }
    }

    fn run(
        &self,
        pre: &ValidationFunctionPre<HostState>,
        code_hash: &CodeHash,
        params: &crate::ValidationParams,
        timeout: Duration,
        instantiate: bool,
    ) -> Response {
        let changed;
        let config = if timeout == self.config.execution_timeout {
            &self.config
        } else {
            changed = self.config.clone().execution_timeout(timeout);
            &changed
        };
        if instantiate {
            let result = instantiate_only(&self.engine, pre, code_hash, config);
            Response::Instantiated(result)
        } else {
            let (result, fuel_consumed) = execute(&self.engine, pre, code_hash, params, config);
            Response::Executed {
                result,
                fuel_consumed,
            }
        }
    }

    /// Per-job mode: runs `job` in a fresh child with its own namespaces; its response, or that
    /// it died.
    fn in_child(&self, job: impl FnOnce() -> Response) -> Response {
        self.in_child_with_deadline(job, None)
    }

    /// [`Self::in_child`], the execution's wall-clock deadline enforced by this (parent) process:
    /// a child still running at `timeout` is killed and the execution timed out, as the epoch
    /// deadline says in process. The child then needs no ticker thread (nor any thread).
    fn in_child_with_deadline(
        &self,
        job: impl FnOnce() -> Response,
        timeout: Option<Duration>,
    ) -> Response {
        let (read_end, write_end) = match rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        {
            Ok(pipe) => pipe,
            Err(e) => return Response::ChildDied(format!("no pipe for the job's child: {e}")),
        };
        match confine::fork() {
            Err(e) => Response::ChildDied(format!("cannot fork the job's child: {e}")),
            Ok(None) => {
                // The child: its own namespaces, its own filter, the job, the answer, the end.
                drop(read_end);
                if self.per_job_namespaces && confine::enter_job_namespaces().is_err() {
                    std::process::exit(EXIT_NO_NAMESPACES);
                }
                if let Some(filter) = &self.child_filter
                    && filter.apply().is_err()
                {
                    std::process::exit(EXIT_NO_FILTER);
                }
                let response = job();
                let code = match messages::encode(&response) {
                    Ok(bytes) => {
                        let mut pipe = std::fs::File::from(write_end);
                        if pipe.write_all(&bytes).is_ok() { 0 } else { 1 }
                    }
                    Err(_) => 1,
                };
                // No destructor runs (the parent's state is not ours to tear down).
                std::process::exit(code);
            }
            Ok(Some(child)) => {
                drop(write_end);
                let deadline = timeout.map(|t| std::time::Instant::now() + t);
                let answer = read_bounded(read_end, self.max_response, deadline);
                let timed_out = matches!(&answer, Err(e) if e.kind() == io::ErrorKind::TimedOut);
                if timed_out {
                    let _ = rustix::process::kill_process(child, rustix::process::Signal::KILL);
                }
                let status = loop {
                    match rustix::process::waitpid(
                        Some(child),
                        rustix::process::WaitOptions::empty(),
                    ) {
                        Ok(Some((_, status))) => break Some(status),
                        Err(rustix::io::Errno::INTR) | Ok(None) => continue,
                        Err(_) => break None,
                    }
                };
                let clean = status.is_some_and(|s| s.exit_status() == Some(0));
                if let (true, Some(timeout)) = (timed_out, timeout) {
                    return Response::Executed {
                        result: Err(crate::error::ExecuteError::Timeout(timeout)),
                        fuel_consumed: None,
                    };
                }
                match answer {
                    Ok(bytes) if clean => match messages::decode::<Response>(&bytes) {
                        Ok(response) => response,
                        Err(e) => Response::ChildDied(format!("its answer is unreadable: {e}")),
                    },
                    Ok(_) | Err(_) => Response::ChildDied(describe_child(status)),
                }
            }
        }
    }
}

/// The probe name that asks a per-job worker what each part of a job's fixed cost takes.
pub(crate) const JOB_COST: &str = "job-cost";

impl Worker {
    /// Benchmarks only: the medians, over 50 rounds each, of a bare fork + exit + wait, the same
    /// with the child's namespaces, and with its namespaces and its seccomp filter (one line,
    /// microseconds). The rest of a per-job execution's fixed cost is the job itself and the
    /// answer's way back.
    fn job_cost(&self) -> String {
        use rustix::thread::UnshareFlags as F;
        let mut parts = Vec::new();
        for (name, namespaces, filter) in [
            ("fork+exit+wait", None, false),
            ("+user", Some(F::NEWUSER), false),
            ("+user,mount", Some(F::NEWUSER | F::NEWNS), false),
            (
                "+user,mount,ipc,uts",
                Some(F::NEWUSER | F::NEWNS | F::NEWIPC | F::NEWUTS),
                false,
            ),
            (
                "+user,mount,ipc,uts,net",
                Some(F::NEWUSER | F::NEWNS | F::NEWIPC | F::NEWUTS | F::NEWNET),
                false,
            ),
            ("+filter", Some(confine::JOB_NAMESPACES), true),
        ] {
            let mut samples = Vec::with_capacity(50);
            for _ in 0..50 {
                let started = std::time::Instant::now();
                match confine::fork() {
                    Err(e) => return format!("error: fork: {e}"),
                    Ok(None) => {
                        if let Some(flags) = namespaces
                            && confine::enter_namespaces(flags).is_err()
                        {
                            std::process::exit(EXIT_NO_NAMESPACES);
                        }
                        if filter
                            && let Some(f) = &self.child_filter
                            && f.apply().is_err()
                        {
                            std::process::exit(EXIT_NO_FILTER);
                        }
                        std::process::exit(0);
                    }
                    Ok(Some(child)) => {
                        let _ = rustix::process::waitpid(
                            Some(child),
                            rustix::process::WaitOptions::empty(),
                        );
                    }
                }
                samples.push(started.elapsed());
            }
            samples.sort();
            parts.push(format!("{name} {:.0}", samples[25].as_secs_f64() * 1e6));
        }
        parts.join("; ")
    }
}

/// Reads a pipe to its end, at most `limit` bytes (allocated as they come, fallibly), until
/// `deadline` (then `TimedOut`).
fn read_bounded(
    fd: OwnedFd,
    limit: usize,
    deadline: Option<std::time::Instant>,
) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 64 << 10];
    loop {
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            let wait = rustix::event::Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: i64::from(left.subsec_nanos()),
            };
            match rustix::event::poll(&mut fds, Some(&wait)) {
                Ok(0) => return Err(io::ErrorKind::TimedOut.into()),
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let room = (limit + 1).saturating_sub(bytes.len()).min(buf.len());
        let n = match rustix::io::read(&fd, &mut buf[..room.max(1)]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        if bytes.len() + n > limit {
            return Err(io::Error::other("the answer is over its limit"));
        }
        bytes
            .try_reserve(n)
            .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
        bytes.extend_from_slice(&buf[..n]);
    }
    Ok(bytes)
}

fn describe_child(status: Option<rustix::process::WaitStatus>) -> String {
    match status {
        None => "the job's child could not be waited for".into(),
        Some(s) => match (s.exit_status(), s.terminating_signal()) {
            (Some(EXIT_NO_NAMESPACES), _) => {
                "the job's child could not enter its namespaces".into()
            }
            (Some(EXIT_NO_FILTER), _) => {
                "the job's child could not apply its seccomp filter".into()
            }
            (Some(code), _) => {
                format!("the job's child exited with code {code} before it answered")
            }
            (None, Some(signal)) => format!(
                "the job's child was killed by signal {signal}{}",
                super::super::signal_name(signal)
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            ),
            _ => "the job's child ended without an answer".into(),
        },
    }
}

/// At the handshake of a per-job worker: forks a child that makes its own namespaces and exits;
/// the report line, and whether it worked.
fn probe_job_namespaces() -> (String, bool) {
    const NAME: &str = "namespaces.per_job";
    let result = match confine::fork() {
        Err(e) => Err(format!("fork: {e}")),
        Ok(None) => {
            let code = match confine::enter_job_namespaces() {
                Ok(()) => 0,
                Err(_) => EXIT_NO_NAMESPACES,
            };
            std::process::exit(code);
        }
        Ok(Some(child)) => loop {
            match rustix::process::waitpid(Some(child), rustix::process::WaitOptions::empty()) {
                Ok(Some((_, s))) if s.exit_status() == Some(0) => break Ok(()),
                Ok(Some((_, s))) => break Err(describe_child(Some(s))),
                Err(rustix::io::Errno::INTR) | Ok(None) => continue,
                Err(e) => break Err(format!("waitpid: {e}")),
            }
        },
    };
    match result {
        Ok(()) => (
            format!(
                "{NAME}\tactive\teach execution in a fresh child with its own user, mount, ipc and uts namespaces, no capability, and a narrower seccomp filter (no fork, no unshare)\n"
            ),
            true,
        ),
        Err(why) => (format!("{NAME}\tunavailable\t{why}\n"), false),
    }
}

/// Tests only: misbehaves as asked instead of answering.
fn misbehave(channel: &Channel, wait: &WaitPolicy, fault: Fault) {
    let mut never = || Ok(());
    match fault {
        Fault::Garbage => {
            let _ = channel.send(&[0xff; 37], wait, &mut never);
        }
        Fault::Truncated => {
            let response = Response::Executed {
                result: Ok(crate::ValidationResult {
                    head_data: vec![7; 1000],
                    new_validation_code: None,
                    upward_messages: Vec::new(),
                    horizontal_messages: Vec::new(),
                    processed_downward_messages: 0,
                    hrmp_watermark: 0,
                }),
                fuel_consumed: Some(1),
            };
            if let Ok(bytes) = messages::encode(&response) {
                let _ = channel.send(&bytes[..bytes.len() / 2], wait, &mut never);
            }
        }
        Fault::Allocate => {
            let mut hog: Vec<u8> = Vec::new();
            // The counting allocator refuses past the cap and ends the process.
            hog.resize(8 << 30, 1);
            std::hint::black_box(&hog);
        }
        Fault::Exit => std::process::exit(3),
        Fault::Abort => std::process::abort(),
        Fault::Hang => loop {
            std::thread::park();
        },
    }
}
