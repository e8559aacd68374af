//! The worker side: confine, say who we are, take one job, compile it under its limits, answer,
//! exit. Nothing here decides a verdict class; the host classifies what we report.

use std::io::{self, BufReader, Write};
use std::process::ExitCode;

use rustix::process::{Resource, Rlimit};
use wasmtime::component::Linker;

use super::alloc::CountingAllocator;
use super::confine::{self, ConfinePolicy, LayerState};
use super::protocol::{FailedKind, Hello, Job, ProtocolError, Ready, Reply};
use crate::config::Config;
use crate::engine::new_engine;
use crate::error::PrepareError;
use crate::execute::HostState;

/// The worker's exit code when it could not serve (a protocol or set-up error; told on stderr).
const EXIT_WORKER_ERROR: u8 = 70;

/// Runs the worker: the process was started as `<exe> __pvf-worker` by the host.
pub(crate) fn run(alloc: &'static CountingAllocator) -> ExitCode {
    // First, while the process is single-threaded and has read nothing untrusted.
    let policy = ConfinePolicy::production();
    let report = confine::confine_process(&policy);
    match serve(alloc, &policy, &report) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(io::stderr(), "pvf worker: {e}");
            ExitCode::from(EXIT_WORKER_ERROR)
        }
    }
}

fn report_lines(report: &confine::ConfineReport) -> String {
    let mut out = String::new();
    for layer in &report.layers {
        match &layer.state {
            LayerState::Active => out.push_str(&format!("{}\tactive\n", layer.name)),
            LayerState::Unavailable(why) => out.push_str(&format!(
                "{}\tunavailable\t{}\n",
                layer.name,
                why.replace(['\t', '\n'], " ")
            )),
        }
    }
    out
}

fn serve(
    alloc: &'static CountingAllocator,
    policy: &ConfinePolicy,
    report: &confine::ConfineReport,
) -> Result<(), ProtocolError> {
    let mut input = BufReader::new(io::stdin().lock());
    let mut output = io::stdout().lock();
    let hello = Hello::read(&mut input)?;
    let config = Config::new()
        .pooling(false)
        .max_wasm_stack_bytes(usize::try_from(hello.max_wasm_stack_bytes).unwrap_or(usize::MAX));
    let engine = new_engine(&config)
        .map_err(|e| ProtocolError::Malformed(format!("cannot build the engine: {e:#}")))?;
    let mut linker = Linker::<HostState>::new(&engine);
    crate::guest_wasi::add_to_linker(&mut linker)
        .map_err(|e| ProtocolError::Malformed(format!("cannot build the linker: {e:#}")))?;
    Ready {
        build_id: super::build_id().to_owned(),
        engine: crate::env::engine_digest(&engine),
        counting_allocator: alloc.is_installed(),
        confinement: report_lines(report),
    }
    .write(&mut output)?;

    // A spare worker waits here; the host closing the pipe dismisses it.
    let Some(job) = Job::read(&mut input, hello.max_code_bytes)? else {
        return Ok(());
    };
    let reply = compile_job(alloc, policy, &engine, &linker, job);
    reply.write(&mut output)?;
    Ok(())
}

/// Applies the job's limits and the syscall allowlist, then compiles.
fn compile_job(
    alloc: &'static CountingAllocator,
    policy: &ConfinePolicy,
    engine: &wasmtime::Engine,
    linker: &Linker<HostState>,
    job: Job,
) -> Reply {
    let failed = |kind, reason: String| Reply::Failed {
        kind,
        reason,
        peak: alloc.peak() as u64,
        cpu_nanos: cpu_nanos(),
    };
    // CPU: RLIMIT_CPU counts from the process's start; add what set-up used, rounded up. The
    // kernel sends SIGXCPU at the soft limit (which kills us) and SIGKILL a second later.
    let spent = cpu_nanos().div_ceil(1_000_000_000);
    let soft = spent.saturating_add(job.cpu_secs.max(1));
    if let Err(e) = rustix::process::setrlimit(
        Resource::Cpu,
        Rlimit {
            current: Some(soft),
            maximum: Some(soft.saturating_add(1)),
        },
    ) {
        return failed(FailedKind::Host, format!("cannot limit CPU time: {e}"));
    }
    if let Err(e) = rustix::process::setrlimit(
        Resource::As,
        Rlimit {
            current: Some(job.address_space_bytes),
            maximum: Some(job.address_space_bytes),
        },
    ) {
        return failed(FailedKind::Host, format!("cannot limit address space: {e}"));
    }
    let threads = usize::try_from(job.threads.max(1)).unwrap_or(1);
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("pvf-compile-{i}"))
        .build_global()
    {
        return failed(
            FailedKind::Host,
            format!("cannot start compile threads: {e}"),
        );
    }
    if let LayerState::Unavailable(why) = confine::restrict_syscalls(policy).state {
        tracing::debug!(%why, "seccomp unavailable");
    }
    alloc.reset_peak();
    alloc.set_limit(usize::try_from(job.memory_bytes).unwrap_or(usize::MAX));

    let compiled =
        crate::prepare::compile(engine, linker, &job.code).and_then(|(component, _pre)| {
            component
                .serialize()
                .map_err(|e| PrepareError::Host(format!("serializing the artifact: {e:#}")))
        });
    drop(job.code);
    match compiled {
        Ok(artifact) => Reply::Compiled {
            digest: *blake3::hash(&artifact).as_bytes(),
            peak: alloc.peak() as u64,
            cpu_nanos: cpu_nanos(),
            artifact,
        },
        Err(PrepareError::InvalidCode(reason)) => failed(FailedKind::InvalidCode, reason),
        Err(PrepareError::WrongWorld(reason)) => failed(FailedKind::WrongWorld, reason),
        Err(other) => failed(FailedKind::Host, other.to_string()),
    }
}

/// CPU time this process has used, all threads.
fn cpu_nanos() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}
