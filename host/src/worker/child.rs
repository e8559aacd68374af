//! The worker side: confine, say who we are, take one job, compile it under its limits, answer,
//! exit. Nothing here decides a verdict class; the host classifies what we report.

use std::io::{self, BufReader, Write};
use std::process::ExitCode;
use std::time::Duration;

use rustix::process::{Resource, Rlimit};

use super::alloc::CountingAllocator;
use super::confine::{self, ConfinePolicy, LayerState};
use super::protocol::{FailedKind, Hello, Job, ProtocolError, Ready, Reply};
use crate::config::Config;
use crate::engine::new_engine;
use crate::error::PrepareError;

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
    Ready {
        build_id: super::build_id().to_owned(),
        engine: crate::env::engine_digest(&engine),
        counting_allocator: alloc.is_installed(),
        confinement: report.to_lines(),
    }
    .write(&mut output)?;

    if hello.warm_up {
        warm_up(&config);
    }
    // A spare worker waits here; the host closing the pipe dismisses it.
    let Some(job) = Job::read(&mut input, hello.max_code_bytes)? else {
        return Ok(());
    };
    let reply = compile_job(alloc, policy, hello.require_confinement, &engine, job);
    reply.write(&mut output)?;
    Ok(())
}

/// A small fixed component (a core module with one loop over memory), compiled by a spare
/// worker before its job arrives: the compiler's code and the allocator's arenas are then warm.
const WARM_UP_COMPONENT: [u8; 67] = [
    0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00, 0x01, 0x39, 0x00, 0x61, 0x73, 0x6d, 0x01, 0x00,
    0x00, 0x00, 0x01, 0x06, 0x01, 0x60, 0x01, 0x7f, 0x01, 0x7f, 0x03, 0x02, 0x01, 0x00, 0x05, 0x03,
    0x01, 0x00, 0x01, 0x0a, 0x1e, 0x01, 0x1c, 0x01, 0x01, 0x7f, 0x03, 0x40, 0x20, 0x01, 0x20, 0x00,
    0x28, 0x02, 0x00, 0x6a, 0x21, 0x01, 0x20, 0x00, 0x41, 0x01, 0x6b, 0x22, 0x00, 0x0d, 0x00, 0x0b,
    0x20, 0x01, 0x0b,
];

/// Compiles [`WARM_UP_COMPONENT`] with `config`'s engine settings but without the parallel
/// compilation pool (whose size the job decides). Failure is harmless and ignored.
fn warm_up(config: &Config) {
    let mut settings = crate::engine::wasmtime_config(config);
    settings.parallel_compilation(false);
    if let Ok(engine) = wasmtime::Engine::new(&settings)
        && let Ok(component) = wasmtime::component::Component::new(&engine, WARM_UP_COMPONENT)
    {
        let _ = component.serialize();
    }
}

/// Applies the job's limits and the syscall allowlist, then compiles.
fn compile_job(
    alloc: &'static CountingAllocator,
    policy: &ConfinePolicy,
    require_confinement: bool,
    engine: &wasmtime::Engine,
    job: Job,
) -> Reply {
    let failed = |kind, reason: String| Reply::Failed {
        kind,
        reason,
        peak: alloc.peak() as u64,
        cpu_nanos: cpu_nanos(),
    };
    // CPU: a watch thread reports the limit's end within a few milliseconds (see
    // `watch_cpu`); RLIMIT_CPU is the kernel's backstop a second later (it counts from the
    // process's start, so what set-up used is added, rounded up). As pid 1 of its namespace
    // the worker ignores the soft limit's SIGXCPU; the hard limit's SIGKILL a second later
    // cannot be ignored.
    let start = cpu_nanos();
    let limit_nanos = job.cpu_secs.max(1).saturating_mul(1_000_000_000);
    let soft = start
        .div_ceil(1_000_000_000)
        .saturating_add(job.cpu_secs.max(1))
        .saturating_add(1);
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
    if let Err(e) = watch_cpu(start, limit_nanos) {
        return failed(FailedKind::Host, format!("cannot start the CPU watch: {e}"));
    }
    if let LayerState::Unavailable(why) = confine::restrict_syscalls(policy).state
        && require_confinement
    {
        return failed(
            FailedKind::Host,
            format!("seccomp is unavailable ({why}) and every confinement layer is required"),
        );
    }
    alloc.reset_peak();
    alloc.set_limit(usize::try_from(job.memory_bytes).unwrap_or(usize::MAX));

    // Compile and serialize only: the host links the artifact it loads (a link failure there is
    // the same deterministic `WrongWorld`), so linking here too would only cost time.
    let compiled = crate::prepare::compile_component(engine, &job.code).and_then(|component| {
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

/// Starts the thread that ends the job when the process has used `limit_nanos` of CPU time
/// since `start`: it reports the limit (one write of a fixed frame) and exits the process. It
/// waits on a channel's timeout (a futex), which the syscall allowlist lets through.
fn watch_cpu(start: u64, limit_nanos: u64) -> io::Result<()> {
    let (keep, tick) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("pvf-cpu-watch".into())
        .spawn(move || {
            let _keep = keep;
            loop {
                let used = cpu_nanos().saturating_sub(start);
                if used >= limit_nanos {
                    super::protocol::report_cpu_exceeded(limit_nanos, used);
                    std::process::exit(i32::from(EXIT_CPU_EXCEEDED));
                }
                // Never more than the CPU time left, never less than 5 ms.
                let left = Duration::from_nanos(limit_nanos - used);
                let _ = tick.recv_timeout(left.clamp(CPU_WATCH_MIN, CPU_WATCH_MAX));
            }
        })?;
    Ok(())
}

/// How often the CPU watch looks at most: a job ends within this much of its limit (times
/// the compile threads).
const CPU_WATCH_MIN: Duration = Duration::from_millis(5);
/// How long the CPU watch sleeps at most.
const CPU_WATCH_MAX: Duration = Duration::from_millis(50);
/// The worker's exit code after its CPU watch ended the job.
const EXIT_CPU_EXCEEDED: u8 = 71;

/// CPU time this process has used, all threads.
fn cpu_nanos() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_warm_up_component_compiles() {
        let mut settings = crate::engine::wasmtime_config(&crate::Config::new().pooling(false));
        settings.parallel_compilation(false);
        let engine = wasmtime::Engine::new(&settings).unwrap();
        wasmtime::component::Component::new(&engine, super::WARM_UP_COMPONENT).unwrap();
    }
}
