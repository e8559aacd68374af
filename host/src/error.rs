//! The error taxonomy, one type per operation, and its mapping to verdict classes.
//!
//! Every failure is either [`FailureClass::Deterministic`] — every honest node on any hardware
//! gets the same, so it is an `invalid` verdict — or [`FailureClass::Indeterminate`] — this node
//! cannot tell, so it must not vote. [`ValidationError::class`] is the one place that decides.

use std::sync::Arc;
use std::time::Duration;

use crate::store::CodeHash;

/// Whether a failure is evidence against the code or candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// The same on every honest node: the verdict is `invalid`.
    Deterministic,
    /// This node cannot tell (local fault, timeout, bug): do not vote.
    Indeterminate,
}

/// Why preparing code failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PrepareError {
    /// The code is larger than the configured limit (after decompression). Permanent.
    #[error("code is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The code looks zstd-compressed but does not decompress. Permanent.
    #[error("code does not decompress: {0}")]
    Decompress(String),
    /// The code is not a WebAssembly component, or does not validate or compile. Permanent.
    #[error("invalid code: {0}")]
    InvalidCode(String),
    /// The component does not target the `validation-function` world (missing export, wrong
    /// signature). Permanent.
    #[error("code does not target pvf:validation/validation-function: {0}")]
    WrongWorld(String),
    /// The component imports an interface (or a function of one) that this host does not
    /// provide with that type: an extension that is not registered here, a WASI interface
    /// outside WASI 0.2's command world. Deterministic in this execution environment (the
    /// registered extensions are part of its id), so it is not remembered in the store: the same
    /// code may link once the extension is registered.
    #[error("code imports what this host does not provide: {0}")]
    MissingImports(String),
    /// Compiling failed for a reason of this host, not of the code: the operating system
    /// refused a resource (memory for code, a thread). Transient: a later attempt may succeed.
    #[error("preparation failed on this host: {0}")]
    Host(String),
    /// The compiler's live heap would have exceeded the memory limit of the preparation worker
    /// (its counting allocator ended the job). Deterministic for a pre-check's strict limit,
    /// transient for the lenient limit of preparation before execution.
    #[error(
        "compilation exceeded the {} memory limit: the compiler's heap would have reached {peak} bytes, the limit is {limit}",
        limit_name(*strict)
    )]
    MemoryExceeded {
        /// The limit, in bytes of live heap.
        limit: u64,
        /// The live heap the failed allocation would have made.
        peak: u64,
        /// Whether the limit was a pre-check's (strict) one.
        strict: bool,
    },
    /// Compiling used more CPU time than the limit (the kernel stopped the worker at its
    /// `RLIMIT_CPU`). Deterministic for a pre-check's strict limit, transient otherwise.
    #[error(
        "compilation exceeded the {} CPU-time limit of {} s",
        limit_name(*strict),
        limit.as_secs()
    )]
    CpuTimeExceeded {
        /// The limit.
        limit: Duration,
        /// Whether the limit was a pre-check's (strict) one.
        strict: bool,
    },
    /// The preparation worker failed: it could not be started, was refused at the handshake,
    /// died (signal, crash, abort), outlived the wall-clock backstop, or sent something
    /// unreadable. A local fault: transient.
    #[error("preparation worker: {0}")]
    Worker(String),
    /// The code failed preparation deterministically here before, and the store remembers it
    /// (a failure record): it is not compiled again. Permanent.
    #[error("{reason} (remembered: this code failed preparation before)")]
    Remembered {
        /// What kind of failure it was.
        kind: crate::store::FailureKind,
        /// The failure's message, as it was first reported.
        reason: String,
    },
}

fn limit_name(strict: bool) -> &'static str {
    if strict { "pre-check" } else { "preparation" }
}

/// Why reading or writing the artifact store failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// An I/O operation on the store failed. May be transient (full disk, permissions).
    #[error("artifact store: {op}: {source}")]
    Io {
        /// What was being done.
        op: String,
        /// The underlying error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A stored artifact is damaged, foreign or not what we wrote (bad header, wrong length,
    /// checksum mismatch). The artifact must be discarded; re-preparing repairs it.
    #[error("artifact {file} is corrupt: {reason}")]
    Corrupt {
        /// The file name inside the fingerprint directory.
        file: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl StoreError {
    pub(crate) fn io(op: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            op: op.into(),
            source: Arc::new(source),
        }
    }
}

/// A deterministic resource limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum LimitKind {
    /// Linear memory grew beyond the limit.
    Memory,
    /// A table grew beyond the limit.
    Table,
    /// Too many instances, memories or tables.
    Instances,
    /// The wasm stack overflowed.
    Stack,
    /// The fuel budget (instruction count) ran out.
    Fuel,
    /// The candidate's params exceed the contract's limits (see the crate's limits table).
    Params,
    /// The guest's result exceeds the contract's limits (head, code, messages).
    Result,
    /// A host call asked for more than the host gives any guest: too many resource handles,
    /// too much data in one call, too many random bytes at once.
    HostCall,
}

/// Why running a prepared artifact failed.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ExecuteError {
    /// The stored artifact could not be turned into a runtime (`Component::deserialize`):
    /// a sign that the artifact is not what we prepared. Re-preparing repairs it.
    #[error("runtime construction failed: {0}")]
    Construction(String),
    /// The constructed component does not link against the host or lacks the export: on a
    /// stored artifact, a sign that it is not what we prepared.
    #[error("linking failed: {0}")]
    Link(String),
    /// Instantiation trapped (e.g. in a start function). Deterministic.
    #[error("instantiation failed: {0}")]
    Instantiation(String),
    /// The guest returned `err`: the candidate is invalid. Deterministic.
    #[error("candidate rejected by the validation function: {0}")]
    GuestRejected(String),
    /// The guest trapped (panic, unreachable, out-of-bounds access, ...). Deterministic.
    #[error("guest trapped: {0}")]
    Trap(String),
    /// A deterministic resource limit was hit.
    #[error("resource limit exceeded: {kind:?}: {detail}")]
    ResourceLimit {
        /// Which limit.
        kind: LimitKind,
        /// What was asked for.
        detail: String,
    },
    /// The wall-clock deadline passed. Not deterministic: a slower node may time out where a
    /// faster one does not.
    #[error("execution timed out after {0:?}")]
    Timeout(Duration),
    /// The host failed for a reason that has nothing to do with the guest.
    #[error("internal host error: {0}")]
    Internal(String),
    /// The execution worker failed under the call: it died (a signal, an abort, an exit), did
    /// not answer within the host's wall-clock backstop, or sent something unreadable. It was
    /// killed and is replaced. A local fault: whatever the guest did, the worker's death is not
    /// evidence every node shares.
    #[error("execution worker: {0}")]
    Worker(String),
}

impl ExecuteError {
    /// Whether this error is a sign that a stored artifact is bad (and must be discarded and
    /// re-prepared) rather than a property of the code or candidate.
    pub fn is_artifact_fault(&self) -> bool {
        matches!(self, Self::Construction(_) | Self::Link(_))
    }
}

/// Why a host could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The wasmtime engine could not be built.
    #[error("cannot build the wasmtime engine: {0}")]
    Engine(String),
    /// The environment fingerprint could not be computed.
    #[error("cannot compute the environment fingerprint: {0}")]
    Fingerprint(#[source] std::io::Error),
    /// The artifact store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The epoch ticker thread could not be started.
    #[error("cannot start the epoch ticker: {0}")]
    Ticker(#[source] std::io::Error),
    /// The preparation worker cannot be used: its executable is missing, it is of another
    /// build, or (with `require_confinement`) a confinement layer is not available.
    #[error("preparation worker: {0}")]
    Worker(String),
    /// A registered extension is refused (bad id, an interface outside its package, a bad or
    /// clashing function name).
    #[error("extension: {0}")]
    Extension(String),
}

/// Why the validation service could not take or finish a request. Always indeterminate: none of
/// these says anything about the code or the candidate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// The execution queue is full. Transient: the node is overloaded; retry later or shed load.
    #[error("overloaded: the {queue} queue is full ({capacity} waiting)")]
    Overloaded {
        /// Which queue.
        queue: &'static str,
        /// Its capacity.
        capacity: usize,
    },
    /// The service is shutting down (or has shut down) and takes no more work. Permanent for
    /// this service.
    #[error("the validation service is shutting down")]
    ShuttingDown,
    /// Validation by code hash found nothing runnable (no good artifact stored, and the code is
    /// not at hand to prepare it). Pass the code itself.
    #[error("code {0} is not prepared here and its bytes were not given")]
    CodeUnknown(CodeHash),
    /// Preparation took longer than the service's preparation timeout. Transient: it may be
    /// retried after the cooldown.
    #[error("preparation timed out after {0:?}")]
    PrepareTimeout(Duration),
    /// An earlier preparation of this code failed for a non-deterministic reason and its
    /// cooldown has not passed (or its attempts are used up); the earlier reason is kept.
    #[error("preparation failed recently ({reason}); next attempt allowed in {retry_in:?}")]
    PrepareCoolingDown {
        /// Why the last attempt failed.
        reason: String,
        /// How long until another attempt is allowed (`None`: attempts used up).
        retry_in: Option<Duration>,
    },
    /// A worker task panicked or was lost: a bug in the host, not evidence against the code.
    #[error("a worker task failed: {0}")]
    Worker(String),
}

/// Why a validation did not produce a `valid` verdict.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ValidationError {
    /// Preparing the code failed.
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    /// Running the candidate failed.
    #[error(transparent)]
    Execute(#[from] ExecuteError),
    /// The artifact store failed in a way that stopped validation.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The validation service could not take or finish the request.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl ValidationError {
    /// The verdict class of this error — the single place where errors become verdicts.
    ///
    /// | error | class |
    /// |---|---|
    /// | code too large, undecompressable, invalid, wrong world, imports not provided | deterministic |
    /// | preparation failed for a reason of this host (an OS error while compiling) | indeterminate |
    /// | guest `err`, trap, instantiation trap, resource limit | deterministic |
    /// | construction or link failure (only reached on a *fresh* artifact) | deterministic |
    /// | wall-clock timeout, internal error, execution worker died or hung, store I/O | indeterminate |
    /// | corrupt artifact (only reached if repair itself failed) | indeterminate |
    /// | service: overloaded, shutting down, code unknown, preparation timeout, worker lost | indeterminate |
    pub fn class(&self) -> FailureClass {
        use FailureClass::*;
        match self {
            Self::Prepare(
                PrepareError::TooLarge { .. }
                | PrepareError::Decompress(_)
                | PrepareError::InvalidCode(_)
                | PrepareError::WrongWorld(_)
                | PrepareError::MissingImports(_)
                | PrepareError::Remembered { .. },
            ) => Deterministic,
            Self::Prepare(
                PrepareError::MemoryExceeded { strict, .. }
                | PrepareError::CpuTimeExceeded { strict, .. },
            ) => {
                if *strict {
                    Deterministic
                } else {
                    Indeterminate
                }
            }
            Self::Prepare(PrepareError::Host(_) | PrepareError::Worker(_)) => Indeterminate,
            Self::Execute(e) => match e {
                ExecuteError::Construction(_)
                | ExecuteError::Link(_)
                | ExecuteError::Instantiation(_)
                | ExecuteError::GuestRejected(_)
                | ExecuteError::Trap(_)
                | ExecuteError::ResourceLimit { .. } => Deterministic,
                ExecuteError::Timeout(_) | ExecuteError::Internal(_) | ExecuteError::Worker(_) => {
                    Indeterminate
                }
            },
            Self::Store(StoreError::Io { .. } | StoreError::Corrupt { .. }) => Indeterminate,
            Self::Service(_) => Indeterminate,
        }
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub(crate) fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
