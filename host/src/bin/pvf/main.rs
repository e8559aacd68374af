//! `pvf`: prepare, pre-check and validate PVFs, and inspect the artifact store.
//!
//! See CONTRACT.md §2 for the interface scripts rely on: `--json` prints exactly one JSON object
//! on stdout; exit codes are 0 valid/success, 1 invalid, 2 indeterminate, 64 usage/input error.

mod cache;
mod doctor;
mod output;
mod params;
mod serve;

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use cap_std::ambient_authority;
use cap_std::fs::Dir;
use clap::{Parser, Subcommand};
use pvf_host::{
    Config, ExecutionPriority, FailureClass, Isolation, Outcome, PreparationPriority,
    ServiceConfig, ValidationError, ValidationResult, ValidationService, Verdict,
};
use serde_json::{Value, json};

use output::{
    EXIT_INDETERMINATE, EXIT_INVALID, EXIT_OK, EXIT_USAGE, Hex, Output, escape_controls, hex0x,
};

/// Prepare, pre-check and validate PVFs (WebAssembly components targeting
/// pvf:validation/validation-function), keeping compiled artifacts in a persistent store.
///
/// Exit codes: 0 valid/success, 1 invalid, 2 indeterminate (this node cannot tell),
/// 64 usage or input error.
#[derive(Parser)]
#[command(name = "pvf", version)]
struct Cli {
    /// The artifact store directory (created on first use).
    #[arg(long, global = true, value_name = "DIR", default_value = "artifacts")]
    cache_dir: PathBuf,
    /// Print exactly one JSON object on stdout; human text goes to stderr.
    #[arg(long, global = true)]
    json: bool,
    /// Wall-clock limit of one execution, in milliseconds (every priority).
    #[arg(long, global = true, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// Fuel budget of one execution (about one unit per wasm instruction; running out is invalid).
    #[arg(long, global = true, value_name = "N")]
    fuel: Option<u64>,
    /// Where strangers' code is compiled and run: `workers` (a confined child process per
    /// preparation, with CPU, wall-clock and memory limits, and long-lived confined execution
    /// workers), `per-job` (as `workers`, and every execution in a fresh child of its worker with
    /// its own namespaces) or `in-process` (no limits; for benchmarks). Given twice, the last wins.
    #[arg(
        long,
        global = true,
        value_name = "MODE",
        default_value = "workers",
        overrides_with = "isolation"
    )]
    isolation: IsolationArg,
    /// Secure mode: refuse to prepare unless every confinement layer of the worker is active.
    #[arg(long, global = true)]
    require_confinement: bool,
    /// Turn off the `pvf:crypto@0.1.0` host extension (native hashes and signature checks for
    /// guests, on by default). A guest that imports it then fails preparation, naming the
    /// missing interface. Which extensions are on is part of the execution-environment id.
    #[arg(long, global = true)]
    no_crypto: bool,
    #[command(subcommand)]
    command: Command,
}

/// The `--isolation` values.
#[derive(Clone, Copy, clap::ValueEnum)]
enum IsolationArg {
    /// A confined child process per preparation; executions in long-lived confined execution
    /// workers.
    Workers,
    /// As `workers`, and every execution in a fresh child of its worker, with its own
    /// namespaces.
    PerJob,
    /// Compiled and executed in the `pvf` process itself.
    InProcess,
}

impl From<IsolationArg> for Isolation {
    fn from(arg: IsolationArg) -> Self {
        match arg {
            IsolationArg::Workers => Isolation::Workers,
            IsolationArg::PerJob => Isolation::PerJob,
            IsolationArg::InProcess => Isolation::InProcess,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Prepare CODE (a .wasm component, or the same zstd-compressed) into the store.
    Prepare {
        /// The code file.
        code: PathBuf,
    },
    /// Prepare and instantiate CODE: a verdict on whether the code is acceptable.
    Precheck {
        /// The code file.
        code: PathBuf,
    },
    /// Run one candidate against CODE.
    Validate {
        /// The code file.
        code: PathBuf,
        /// The params file (JSON; `-` reads stdin).
        #[arg(long, value_name = "FILE")]
        params: PathBuf,
        /// Execution priority: backing (2 s timeout, one attempt), approval or dispute (12 s,
        /// indeterminate failures retried once per class).
        #[arg(long, value_name = "PRIORITY", default_value = "backing")]
        priority: ExecutionPriority,
    },
    /// Run the validation service: read requests as JSON lines on stdin, answer each with one
    /// JSON line on stdout (in completion order), optionally serve Prometheus metrics; shut down
    /// gracefully at the end of input or on SIGINT/SIGTERM. See README.md for the line format.
    Serve {
        /// Serve metrics at http://ADDR/metrics (a loopback address, e.g. 127.0.0.1:9615;
        /// port 0 picks one and the URL is printed on stderr).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        /// How long to let running work finish at shutdown, e.g. `30s`.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "30s")]
        grace: Duration,
    },
    /// Inspect and maintain the artifact store.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Check the isolation of workers on this machine: runs a confined probe and shows each
    /// layer (active or unavailable and why), the store directory and the environment
    /// fingerprint. Exit 0 when every layer the configuration requires is active (with
    /// `--require-confinement`: all of them; otherwise none is required), 2 otherwise.
    Doctor,
}

#[derive(Subcommand)]
enum CacheCommand {
    /// List stored artifacts and failure records (all fingerprints).
    List,
    /// Verify every artifact (checksum, construction) and failure record (checksum) of this
    /// environment, removing bad ones.
    Verify,
    /// Remove other environments' unused artifacts, this one's artifacts and failure records
    /// unused for too long, and the least recently used artifacts beyond a byte budget.
    /// Artifacts in use are kept.
    Prune {
        /// Keep at most this many bytes of this environment's artifacts [default: 10 GiB].
        #[arg(long, value_name = "N")]
        max_bytes: Option<u64>,
        /// Remove artifacts unused for longer than this (e.g. `24h`, `30m`, `7d`) [default: 24h].
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        older_than: Option<Duration>,
    },
}

/// Counts heap bytes, so that this binary can serve as the preparation worker with a memory cap.
#[global_allocator]
static ALLOC: pvf_host::worker::CountingAllocator = pvf_host::worker::CountingAllocator::new();

fn main() -> ExitCode {
    if let Some(code) = pvf_host::worker::entry(&ALLOC) {
        return code;
    }
    // `args_os`: an argument that is not UTF-8 is clap's to judge, not a panic.
    let json = std::env::args_os().any(|a| a == "--json");
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return ExitCode::from(usage_error(&e, json)),
    };
    init_logging();
    ExitCode::from(run(cli))
}

/// Reports a command-line error the way clap words it: first the reason on one line (the
/// contract's one-line reason: clap's message with its line breaks joined), then clap's usage
/// lines, on stderr (plain text with control characters escaped: clap quotes the arguments it
/// got); with `--json`, also the one JSON object on stdout. Help and version go to stdout with
/// exit 0; every other error is exit 64.
fn usage_error(e: &clap::Error, json: bool) -> u8 {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return EXIT_OK;
    }
    let text = e.render().to_string();
    let text = text.trim_start().strip_prefix("error: ").unwrap_or(&text);
    // clap's message, then after a blank line its tips, "Usage: ..." and "For more information".
    let (message, usage) = match text.find("\n\n") {
        Some(at) => (&text[..at], text[at..].trim()),
        None => (text, ""),
    };
    let reason: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let reason = reason.join(" ");
    if json {
        let usage_line = usage
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("Usage:"))
            .unwrap_or("");
        let full = [reason.as_str(), usage_line]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        println!("{}", json!({"error": full, "verdict": Value::Null}));
    }
    eprintln!("error: {}", escape_controls(&reason));
    if !usage.is_empty() {
        let lines: Vec<_> = usage.split('\n').map(escape_controls).collect();
        eprintln!("\n{}", lines.join("\n"));
    }
    EXIT_USAGE
}

/// Logs (`tracing`) to stderr: warnings by default, `PVF_LOG` to choose; colours only when stderr
/// is a terminal; control characters in messages and fields escaped ([`log_fields`]).
fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .fmt_fields(log_fields())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PVF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
}

/// How log messages and fields are written: like tracing's default (`message name=value ...`),
/// with control characters escaped ([`escape_controls`]): a guest's output and reasons reach the
/// log.
fn log_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(
        |w: &mut tracing_subscriber::fmt::format::Writer<'_>,
         field: &tracing::field::Field,
         value: &dyn std::fmt::Debug| {
            let text = format!("{value:?}");
            match field.name() {
                "message" => write!(w, "{}", escape_controls(&text)),
                name => write!(w, "{name}={}", escape_controls(&text)),
            }
        },
    )
    .delimited(" ")
}

/// `pvf doctor`: only secure mode (`--require-confinement`) with workers requires the layers;
/// otherwise they are reported.
fn doctor_command(out: &Output, cli: &Cli) -> u8 {
    let isolation = Isolation::from(cli.isolation);
    let required = cli.require_confinement && isolation.compiles_in_workers();
    doctor::run(out, &host_config(cli), &cli.cache_dir, required)
}

/// The host configuration the global options ask for.
fn host_config(cli: &Cli) -> Config {
    let mut config = Config::new()
        .isolation(cli.isolation.into())
        .require_confinement(cli.require_confinement)
        .crypto(!cli.no_crypto);
    if let Some(ms) = cli.timeout_ms {
        config = config.execution_timeout(Duration::from_millis(ms));
    }
    if let Some(fuel) = cli.fuel {
        config = config.fuel(fuel);
    }
    config
}

fn run(cli: Cli) -> u8 {
    let out = Output { json: cli.json };
    // Needs no runtime and no store.
    if let Command::Doctor = cli.command {
        return doctor_command(&out, &cli);
    }
    // `serve` runs requests concurrently: worker threads, I/O (stdin, metrics) and signals. A
    // one-shot command runs one request: a current-thread runtime with timers (the service's
    // deadlines) is enough, and starts no threads (executions run in `spawn_blocking`).
    let runtime = if matches!(cli.command, Command::Serve { .. }) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            let reason = format!("cannot start the async runtime: {e}");
            out.emit(json!({"error": reason}), "", Some(&reason));
            return EXIT_INDETERMINATE;
        }
    };
    runtime.block_on(run_async(cli, out))
}

async fn run_async(cli: Cli, out: Output) -> u8 {
    let mut config = host_config(&cli);
    let mut service_config = ServiceConfig::new();
    if let Some(ms) = cli.timeout_ms {
        service_config = service_config.approval_timeout(Duration::from_millis(ms));
    }
    // Inputs first: an unreadable file is a usage error whatever the store's state.
    let (code, params) = match &cli.command {
        Command::Prepare { code } | Command::Precheck { code } => match read_code(code, &config) {
            Ok(c) => (Some(c), None),
            Err(e) => return out.usage_error(&format!("{e:#}")),
        },
        Command::Validate { code, params, .. } => {
            let code = match read_code(code, &config) {
                Ok(c) => c,
                Err(e) => return out.usage_error(&format!("{e:#}")),
            };
            match read_params(params) {
                Ok(p) => (Some(code), Some(p)),
                Err(e) => return out.usage_error(&format!("{e:#}")),
            }
        }
        Command::Cache(_) | Command::Serve { .. } | Command::Doctor => (None, None),
    };
    // Inspecting the store must not remove other environments' directories; pruning says so.
    if let Command::Cache(_) = cli.command {
        config = config.keep_other_fingerprints(true);
    }
    // A one-shot command runs at most a few instances: reserving and setting up the pooling
    // allocator's slots would cost more than the whole validation. `serve` keeps the pool. The
    // artifacts are the same (the pool is not part of the fingerprint; see engine.rs's tests).
    // Likewise a warm spare worker would be started for nothing.
    if !matches!(cli.command, Command::Serve { .. }) {
        config = config.pooling(false).warm_worker(false);
    }
    let service = match open_service(&cli.cache_dir, service_config.host(config)) {
        Ok(service) => service,
        Err(e) => {
            let reason = format!("{e:#}");
            out.emit(
                json!({"verdict": "indeterminate", "reason": reason, "result": Value::Null, "cache": Value::Null, "environment": Value::Null, "fuel_consumed": Value::Null}),
                "indeterminate",
                Some(&reason),
            );
            return EXIT_INDETERMINATE;
        }
    };
    let environment = service.host().environment().id().to_hex();
    // An execution is coming: start its worker now, while the host finds and checks the artifact.
    if matches!(
        cli.command,
        Command::Validate { .. } | Command::Precheck { .. }
    ) {
        service.host().prestart_execution_worker();
    }
    match cli.command {
        Command::Prepare { code: path } => {
            let code = code.unwrap_or_default();
            let spinner = Spinner::start(&out, &format!("preparing {}", path.display()));
            let result = service.prepare(code, PreparationPriority::Normal).await;
            drop(spinner);
            match result {
                Ok(p) => {
                    out.emit(
                        json!({"code_hash": p.code_hash.to_string(), "cache": p.cache.as_str(), "peak_memory_bytes": p.peak_memory_bytes, "environment": environment}),
                        &format!("prepared {} (cache: {})", p.code_hash, p.cache.as_str()),
                        None,
                    );
                    EXIT_OK
                }
                Err(e) => report_failure(&out, &e, &environment),
            }
        }
        Command::Precheck { code: path } => {
            let code = code.unwrap_or_default();
            let spinner = Spinner::start(&out, &format!("pre-checking {}", path.display()));
            let result = service.precheck(code).await;
            drop(spinner);
            match result {
                Ok(p) => {
                    out.emit(
                        json!({"verdict": "valid", "reason": Value::Null, "code_hash": p.code_hash.to_string(), "cache": p.cache.as_str(), "peak_memory_bytes": p.peak_memory_bytes, "environment": environment}),
                        &format!("valid: {} is acceptable (cache: {})", p.code_hash, p.cache.as_str()),
                        None,
                    );
                    EXIT_OK
                }
                Err(e) => report_failure(&out, &e, &environment),
            }
        }
        Command::Validate {
            code: path,
            priority,
            ..
        } => {
            let code = code.unwrap_or_default();
            let params = params.unwrap_or_default();
            let spinner = Spinner::start(&out, &format!("validating with {}", path.display()));
            let outcome = service.validate(code, params, priority).await;
            drop(spinner);
            report_outcome(&out, outcome)
        }
        Command::Serve { metrics, grace } => serve::run(&out, service, metrics, grace).await,
        Command::Cache(cmd) => cache::cache_command(&out, &service, cmd).await,
        Command::Doctor => doctor_command(&out, &cli),
    }
}

/// Reads the code file, refusing to read more than the code-size limit.
fn read_code(path: &Path, config: &Config) -> anyhow::Result<Vec<u8>> {
    let file = cap_std::fs::File::open_ambient(path, ambient_authority())
        .with_context(|| format!("cannot read code file {}", path.display()))?;
    let mut code = Vec::new();
    file.take(config.get_max_code_bytes() as u64 + 1)
        .read_to_end(&mut code)
        .with_context(|| format!("cannot read code file {}", path.display()))?;
    Ok(code)
}

/// Reads and parses the params file (`-`: stdin), at most [`params::MAX_PARAMS_BYTES`] of it.
fn read_params(path: &Path) -> anyhow::Result<pvf_host::ValidationParams> {
    let text = if path == Path::new("-") {
        params::read_bounded(std::io::stdin().lock(), params::MAX_PARAMS_BYTES)
            .context("cannot read params from stdin")?
    } else {
        let file = cap_std::fs::File::open_ambient(path, ambient_authority())
            .with_context(|| format!("cannot read params file {}", path.display()))?;
        params::read_bounded(file, params::MAX_PARAMS_BYTES)
            .with_context(|| format!("cannot read params file {}", path.display()))?
    };
    params::parse(&text)
}

/// Opens (creating if needed) the store directory: the one place the CLI grants the library
/// ambient authority.
fn open_service(cache_dir: &Path, config: ServiceConfig) -> anyhow::Result<ValidationService> {
    Dir::create_ambient_dir_all(cache_dir, ambient_authority())
        .with_context(|| format!("cannot create the artifact store {}", cache_dir.display()))?;
    let dir = Dir::open_ambient_dir(cache_dir, ambient_authority())
        .with_context(|| format!("cannot open the artifact store {}", cache_dir.display()))?;
    ValidationService::new(dir, config)
        .with_context(|| format!("cannot open the artifact store {}", cache_dir.display()))
}

/// Reports a failed prepare/precheck: exit 1 (deterministic) or 2 (indeterminate).
fn report_failure(out: &Output, err: &ValidationError, environment: &str) -> u8 {
    let reason = err.to_string();
    let (verdict, code) = match err.class() {
        FailureClass::Deterministic => ("invalid", EXIT_INVALID),
        FailureClass::Indeterminate => ("indeterminate", EXIT_INDETERMINATE),
    };
    out.emit(
        json!({"verdict": verdict, "reason": reason, "code_hash": Value::Null, "cache": Value::Null, "environment": environment}),
        verdict,
        Some(&reason),
    );
    code
}

fn report_outcome(out: &Output, outcome: Outcome) -> u8 {
    let (value, human, reason, code) = outcome_json(&outcome);
    out.emit(value, &human, reason.as_deref());
    code
}

/// The contract's JSON of a validation (serialized as it is written: see [`ResultJson`]), its
/// human line, its reason and its exit code.
fn outcome_json(outcome: &Outcome) -> (OutcomeJson<'_>, String, Option<String>, u8) {
    let cache = outcome.cache.as_str();
    let (reason, code) = match &outcome.verdict {
        Verdict::Valid(_) => (None, EXIT_OK),
        Verdict::Invalid(e) => (Some(e.to_string()), EXIT_INVALID),
        Verdict::Indeterminate(e) => (Some(e.to_string()), EXIT_INDETERMINATE),
    };
    let verdict = outcome.verdict.as_str();
    let human = match &outcome.verdict {
        Verdict::Valid(r) => format!("valid (cache: {cache}) head_data={}", hex0x(&r.head_data)),
        _ => format!("{verdict} (cache: {cache})"),
    };
    let json = OutcomeJson {
        cache,
        code_hash: outcome.code_hash.map(|h| h.to_string()),
        environment: outcome.environment.to_hex(),
        fuel_consumed: outcome.fuel_consumed,
        id: None,
        reason: reason.clone(),
        result: match &outcome.verdict {
            Verdict::Valid(r) => Some(ResultJson(r)),
            _ => None,
        },
        verdict,
    };
    (json, human, reason, code)
}

/// The contract's JSON object of a validation. Fields in alphabetical order, as a
/// `serde_json::Value` prints them.
#[derive(serde::Serialize)]
struct OutcomeJson<'a> {
    cache: &'static str,
    code_hash: Option<String>,
    /// The execution-environment id the verdict was reached in.
    environment: String,
    /// The fuel the guest consumed, `null` when nothing ran.
    fuel_consumed: Option<u64>,
    /// The request's `id`, in `pvf serve`'s answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
    reason: Option<String>,
    result: Option<ResultJson<'a>>,
    verdict: &'static str,
}

impl<'a> OutcomeJson<'a> {
    /// The same object with the request's `id` (for `pvf serve`).
    fn with_id(self, id: &'a Value) -> Self {
        Self {
            id: Some(id),
            ..self
        }
    }
}

/// A valid result's JSON, its bytes as `0x` hex written straight into the output ([`Hex`]):
/// the largest legal result (about 97 MiB) costs no second, doubled copy as strings.
struct ResultJson<'a>(&'a ValidationResult);

impl serde::Serialize for ResultJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        /// One horizontal message: `{"data": .., "recipient": ..}`.
        struct Horizontal<'a>(&'a pvf_host::OutboundHrmpMessage);
        impl serde::Serialize for Horizontal<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(Some(2))?;
                map.serialize_entry("data", &Hex(&self.0.data))?;
                map.serialize_entry("recipient", &self.0.recipient)?;
                map.end()
            }
        }
        /// Upward messages: a list of hex strings.
        struct Upward<'a>(&'a [Vec<u8>]);
        impl serde::Serialize for Upward<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(|m| Hex(m)))
            }
        }
        /// Horizontal messages: a list of `{"data", "recipient"}`.
        struct Horizontals<'a>(&'a [pvf_host::OutboundHrmpMessage]);
        impl serde::Serialize for Horizontals<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(Horizontal))
            }
        }
        let r = self.0;
        let mut map = serializer.serialize_map(Some(6))?;
        map.serialize_entry("head_data", &Hex(&r.head_data))?;
        map.serialize_entry("horizontal_messages", &Horizontals(&r.horizontal_messages))?;
        map.serialize_entry("hrmp_watermark", &r.hrmp_watermark)?;
        map.serialize_entry(
            "new_validation_code",
            &r.new_validation_code.as_deref().map(Hex),
        )?;
        map.serialize_entry(
            "processed_downward_messages",
            &r.processed_downward_messages,
        )?;
        map.serialize_entry("upward_messages", &Upward(&r.upward_messages))?;
        map.end()
    }
}

/// A spinner on stderr while a possibly long operation runs, only when stderr is a terminal.
struct Spinner(Option<indicatif::ProgressBar>);

impl Spinner {
    fn start(_out: &Output, message: &str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_message(escape_controls(message).into_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        Self(Some(bar))
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    /// A log destination the test can read.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn logs_escape_control_characters() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .fmt_fields(super::log_fields())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let reason = "guest\r\x1b[2Kvalid\u{202e}";
            tracing::warn!(reason = %reason, quoted = reason, "message \x1b[31m{}", "\0");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let line = text.strip_suffix('\n').expect("one line");
        assert!(!line.chars().any(crate::output::is_dangerous), "{line:?}");
        assert!(
            line.contains(r"message \u{1b}[31m\0 reason=guest\r\u{1b}[2Kvalid\u{202e} quoted="),
            "{line}"
        );
    }
}
