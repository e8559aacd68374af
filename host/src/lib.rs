//! A validation host for untrusted WebAssembly components (PVFs).
//!
//! Validation functions are components that target the `pvf:validation/validation-function`
//! world (see `wit/validation.wit`). The host *prepares* them (validates and compiles them ahead
//! of time into native artifacts), keeps the artifacts in a persistent [`ArtifactStore`] bound to
//! the exact environment that produced them ([`EnvFingerprint`]), and *executes* them to produce a
//! [`Verdict`].
//!
//! The one rule everything here serves: a local fault (a corrupted, stale or foreign artifact, an
//! unreadable file, a full disk) is never turned into a verdict. A stored artifact that shows any
//! sign of being bad is discarded, the code is re-prepared and the candidate is run on the fresh
//! artifact; see [`ValidationHost::validate`].
//!
//! ```no_run
//! use pvf_host::{Config, ValidationHost, ValidationParams, Verdict};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = cap_std::fs::Dir::open_ambient_dir("artifacts", cap_std::ambient_authority())?;
//! let host = ValidationHost::new(dir, Config::new())?;
//! let code = std::fs::read("adder.wasm")?;
//! let params = ValidationParams::new(1u64.to_le_bytes().to_vec(), 2u64.to_le_bytes().to_vec(), 7);
//! let outcome = host.validate(&code, &params);
//! match outcome.verdict {
//!     Verdict::Valid(result) => println!("valid, new head {:?}", result.head_data),
//!     Verdict::Invalid(why) => println!("invalid: {why}"),
//!     Verdict::Indeterminate(why) => println!("cannot tell: {why}"),
//! }
//! # Ok(()) }
//! ```

mod bindings;
mod config;
mod contract;
mod engine;
mod env;
mod environment;
mod error;
mod execute;
pub mod extensions;
mod guest_wasi;
mod host;
mod inflight;
mod limits;
mod memory_cache;
mod prepare;
mod service;
mod store;
mod types;
pub mod worker;

pub use config::{CompileLimits, Config, DEFAULT_FUEL, Isolation};
pub use engine::wasmtime_config;
pub use env::EnvFingerprint;
pub use environment::{CONTRACT_VERSION, EnvironmentId, EnvironmentPart, ExecutionEnvironment};
pub use error::{
    ExecuteError, FailureClass, HostError, LimitKind, PrepareError, ServiceError, StoreError,
    ValidationError,
};
pub use guest_wasi::{
    HOST_CALL_FUEL, MAX_RANDOM_BYTES_PER_CALL, MONOTONIC_STEP_NANOS, OUTPUT_CAPTURE_BYTES,
    WALL_CLOCK_SECS, guest_wasi_ctx,
};
pub use host::{CacheStatus, Outcome, Prepared, ValidationHost, Verdict, VerifyReport};
pub use limits::{
    MAX_BLOCK_DATA_BYTES, MAX_HEAD_DATA_BYTES, MAX_HORIZONTAL_MESSAGE_BYTES,
    MAX_HORIZONTAL_MESSAGES, MAX_MESSAGES_TOTAL_BYTES, MAX_UPWARD_MESSAGE_BYTES,
    MAX_UPWARD_MESSAGES,
};
pub use service::{
    CodeRef, ExecutionPriority, MetricsServer, PreparationPriority, QueueDepths, RetryClass,
    RetryPolicy, ServiceConfig, ShutdownReport, ValidationService,
};
pub use store::{
    ArtifactInfo, ArtifactStore, CodeHash, EntryKind, FailureInfo, FailureKind, FailureRecord,
    FailureState, FailureVerifyReport, LAST_USE_GRANULARITY, MAX_ARTIFACT_BYTES,
    MAX_FAILURE_REASON_BYTES, MAX_FAILURE_RECORD_BYTES, PrunePolicy, PruneReport, StoreOptions,
};
pub use types::{OutboundHrmpMessage, ValidationParams, ValidationResult};
pub use worker::exec::{ExecutionWorkerInfo, Fault, WorkerFailure};
