//! The messages between the host and an execution worker, and how they are framed.
//!
//! Every message is a serde value encoded with [postcard](https://docs.rs/postcard) 1.x: a
//! compact, documented and stable wire format (postcard's specification is fixed for 1.x),
//! no schema compiler, and a decoder that fails with an error — never a panic — on any byte
//! string. The decoder never allocates more than the bytes it was given can describe, and the
//! bytes are bounded before they are read: a frame on the pipe by [`MAX_HANDSHAKE_BYTES`], a
//! message on the shared-memory channel by the limit its receiver passes ([`max_request_bytes`],
//! [`max_response_bytes`]).
//!
//! The handshake ([`ExecHello`], [`ExecReady`]) travels over the worker's stdin/stdout pipes as
//! length-prefixed frames (a little-endian `u32`, then the postcard bytes). Every later message
//! ([`Request`], [`Response`]) travels over the shared-memory channel (`channel.rs`), which
//! frames messages itself. Both ends check the magic and the version in the handshake: a worker
//! of another protocol version is refused before it gets a request.
//!
//! The worker reports what happened ([`Response::Executed`] carries the execution's own
//! [`ExecuteError`]); it never decides a verdict class. The host classifies in
//! `ValidationError::class`, as for an execution in its own process, and treats a worker that
//! misbehaves — an unreadable message, a response that does not fit the request, a death — as
//! the worker's failure (`ExecuteError::Worker`), never as the guest's.

use std::io::{self, Read, Write};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::ExecuteError;
use crate::limits::{MAX_BLOCK_DATA_BYTES, MAX_HEAD_DATA_BYTES};
use crate::store::MAX_ARTIFACT_BYTES;
use crate::types::{ValidationParams, ValidationResult};

/// Checked in both handshake messages: both sides speak this protocol.
pub(crate) const MAGIC: [u8; 4] = *b"PVFX";
/// The protocol's version; a worker of another version is refused at the handshake.
pub(crate) const VERSION: u32 = 1;
/// The largest handshake frame (the confinement report is the largest part, a few hundred bytes).
pub(crate) const MAX_HANDSHAKE_BYTES: usize = 64 << 10;
/// Room for a message's fields beside its byte strings.
const ENVELOPE_BYTES: usize = 64 << 10;

/// The largest request the worker accepts: a `Load` of the largest artifact the store keeps, or
/// an `Execute` with params at the contract's limits.
pub(crate) fn max_request_bytes() -> usize {
    (MAX_ARTIFACT_BYTES as usize)
        .max(MAX_HEAD_DATA_BYTES + MAX_BLOCK_DATA_BYTES)
        .saturating_add(ENVELOPE_BYTES)
}

/// The largest response the host accepts from a worker of `config`: a result at the contract's
/// limits. Lifting a result is bounded by the same hostcall budget in the worker.
pub(crate) fn max_response_bytes(config: &Config) -> usize {
    crate::execute::hostcall_budget(config).saturating_add(ENVELOPE_BYTES)
}

/// The execution settings a worker runs with: every [`Config`] setting an execution reads. The
/// worker rebuilds a `Config` from them ([`ExecSettings::to_config`]) and reports the
/// execution-environment id it computes; the host refuses a worker whose id differs from its own,
/// so a setting that is missing here cannot go unnoticed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExecSettings {
    pub(crate) execution_timeout: Duration,
    pub(crate) max_memory_bytes: u64,
    pub(crate) max_table_elements: u64,
    pub(crate) max_instances: u64,
    pub(crate) max_wasm_stack_bytes: u64,
    pub(crate) max_code_bytes: u64,
    pub(crate) fuel: u64,
    pub(crate) pooling: bool,
    pub(crate) crypto: bool,
    pub(crate) memory_cache_bytes: u64,
}

impl ExecSettings {
    /// The settings of `config`. Of the extensions only the first-party crypto extension
    /// travels: a worker executable cannot have an embedder's own extensions, and the
    /// environment-id check at the handshake refuses a worker that lacks one.
    pub(crate) fn of(config: &Config) -> Self {
        let to_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        Self {
            execution_timeout: config.execution_timeout,
            max_memory_bytes: to_u64(config.max_memory_bytes),
            max_table_elements: to_u64(config.max_table_elements),
            max_instances: to_u64(config.max_instances),
            max_wasm_stack_bytes: to_u64(config.max_wasm_stack_bytes),
            max_code_bytes: to_u64(config.max_code_bytes),
            fuel: config.fuel,
            pooling: config.pooling,
            crypto: config
                .extensions
                .contains(crate::extensions::crypto::CRYPTO_ID),
            memory_cache_bytes: to_u64(config.memory_cache_bytes),
        }
    }

    /// The `Config` these settings describe (the worker's side).
    pub(crate) fn to_config(&self) -> Config {
        let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Config::new()
            .execution_timeout(self.execution_timeout)
            .max_memory_bytes(to_usize(self.max_memory_bytes))
            .max_table_elements(to_usize(self.max_table_elements))
            .max_instances(to_usize(self.max_instances))
            .max_wasm_stack_bytes(to_usize(self.max_wasm_stack_bytes))
            .max_code_bytes(to_usize(self.max_code_bytes))
            .fuel(self.fuel)
            .pooling(self.pooling)
            .crypto(self.crypto)
            .memory_cache_bytes(to_usize(self.memory_cache_bytes))
    }
}

/// What the host tells a new execution worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExecHello {
    pub(crate) magic: [u8; 4],
    pub(crate) version: u32,
    /// The host's build ([`super::super::build_id`]).
    pub(crate) build_id: String,
    /// What executions run with.
    pub(crate) settings: ExecSettings,
    /// Per-job mode: every execution in a fresh child forked from the worker, with its own
    /// namespaces.
    pub(crate) per_job: bool,
    /// Secure mode: the worker must not serve without every confinement layer.
    pub(crate) require_confinement: bool,
    /// How long either side spins before sleeping on the channel, in nanoseconds.
    pub(crate) spin_nanos: u64,
    /// Tests only: the worker obeys [`Request::Fault`].
    pub(crate) allow_faults: bool,
}

/// What an execution worker answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExecReady {
    pub(crate) magic: [u8; 4],
    pub(crate) version: u32,
    /// The worker's build.
    pub(crate) build_id: String,
    /// The execution-environment id the worker computed from its engine and settings.
    pub(crate) environment: [u8; 32],
    /// Whether the worker's global allocator is the counting one (the memory cap needs it).
    pub(crate) counting_allocator: bool,
    /// The confinement layers, one `name<TAB>active[<TAB>detail]` or
    /// `name<TAB>unavailable<TAB>why` line each, as the preparation worker reports them.
    pub(crate) confinement: String,
}

/// A misbehaviour a test asks of a worker (obeyed only when the handshake allowed faults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    /// Answer with bytes that are not a response.
    Garbage,
    /// Announce a response and stop in the middle of it, then wait.
    Truncated,
    /// Exit at once with code 3.
    Exit,
    /// Abort (`SIGABRT`).
    Abort,
    /// Never answer (sleep until killed).
    Hang,
    /// Allocate (and touch) 8 GiB on the heap outside any linear memory: past the worker's
    /// memory cap, which ends the worker.
    Allocate,
}

/// A request from the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Request<'a> {
    /// Instantiate the component of `code_hash` (which the worker must hold) in a fresh store and
    /// call it with `params` (or, with `instantiate_only`, instantiate it only: a pre-check).
    Execute {
        code_hash: [u8; 32],
        /// Borrowed by the host (no copy of the params per call), owned once decoded.
        params: std::borrow::Cow<'a, ValidationParams>,
        timeout: Duration,
        instantiate_only: bool,
    },
    /// Keep the component of `code_hash`: these are its artifact's bytes, verified by the host,
    /// whose blake3 is `digest`. Borrowed on both sides: encoded from the host's bytes, decoded
    /// in place in the received message (the last field, so it runs to the message's end).
    Load {
        code_hash: [u8; 32],
        digest: [u8; 32],
        #[serde(with = "serde_bytes", borrow)]
        artifact: &'a [u8],
    },
    /// Tests only: misbehave.
    Fault(Fault),
    /// Tests only: try one forbidden thing by its probe name (see `confine::probe`) inside the
    /// worker, or inside a per-job child, and say what happened.
    Probe(String),
}

/// A worker's answer to one request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Response {
    /// The execution ran: what it gave, and the fuel it consumed (`None` when nothing ran).
    Executed {
        result: Result<ValidationResult, ExecuteError>,
        fuel_consumed: Option<u64>,
    },
    /// The instantiation ran (a pre-check's second half).
    Instantiated(Result<(), ExecuteError>),
    /// The worker does not hold the component: send a `Load` first.
    NotLoaded,
    /// The component is loaded.
    Loaded,
    /// The artifact did not load (`Construction`) or link (`Link`).
    LoadFailed(ExecuteError),
    /// Per-job mode: the child that ran the execution died before it answered.
    ChildDied(String),
    /// The request cannot be served (e.g. a fault the handshake did not allow).
    Refused(String),
    /// What a probe's forbidden attempt gave (`allowed` or `denied errno=NAME`).
    Probed(String),
}

/// Why a message could not be encoded, decoded or framed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MessageError {
    /// The pipe failed or ended early.
    #[error("pipe: {0}")]
    Io(#[from] io::Error),
    /// A frame larger than the message may be.
    #[error("a message of {len} bytes is over its limit of {limit}")]
    TooLarge { len: usize, limit: usize },
    /// Memory for the frame could not be had.
    #[error("no memory for a message of {0} bytes")]
    NoMemory(usize),
    /// The bytes are not a message of the expected type.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Encodes `value`.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, MessageError> {
    postcard::to_allocvec(value).map_err(|e| MessageError::Malformed(format!("encoding: {e}")))
}

/// Decodes `bytes` as one `T`, all of them.
pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, MessageError> {
    let (value, rest) = postcard::take_from_bytes::<T>(bytes)
        .map_err(|e| MessageError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(MessageError::Malformed(format!(
            "{} bytes after the message",
            rest.len()
        )));
    }
    Ok(value)
}

/// Writes `value` as one frame on a pipe.
pub(crate) fn write_frame<T: Serialize>(w: &mut impl Write, value: &T) -> Result<(), MessageError> {
    let bytes = encode(value)?;
    let len = u32::try_from(bytes.len()).map_err(|_| MessageError::TooLarge {
        len: bytes.len(),
        limit: u32::MAX as usize,
    })?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(&bytes)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame of at most `limit` bytes from a pipe and decodes it.
pub(crate) fn read_frame<T: for<'a> Deserialize<'a>>(
    r: &mut impl Read,
    limit: usize,
) -> Result<T, MessageError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > limit {
        return Err(MessageError::TooLarge { len, limit });
    }
    let bytes = super::super::protocol::read_payload(r, len).map_err(|e| match e.kind() {
        io::ErrorKind::OutOfMemory => MessageError::NoMemory(len),
        _ => e.into(),
    })?;
    decode(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::LimitKind;
    use crate::types::OutboundHrmpMessage;

    /// Through a pipe frame and through bare bytes; compared by their `Debug` form (errors
    /// have no `PartialEq`).
    fn round_trip<T: Serialize + for<'a> Deserialize<'a> + std::fmt::Debug>(value: T) {
        let mut pipe = Vec::new();
        write_frame(&mut pipe, &value).unwrap();
        let back: T = read_frame(&mut pipe.as_slice(), MAX_HANDSHAKE_BYTES).unwrap();
        assert_eq!(format!("{back:?}"), format!("{value:?}"));
        let bare = decode::<T>(&encode(&value).unwrap()).unwrap();
        assert_eq!(format!("{bare:?}"), format!("{value:?}"));
    }

    #[test]
    fn messages_round_trip() {
        let settings = ExecSettings::of(&Config::new());
        assert_eq!(ExecSettings::of(&settings.to_config()), settings);
        round_trip(ExecHello {
            magic: MAGIC,
            version: VERSION,
            build_id: "b".into(),
            settings,
            per_job: true,
            require_confinement: false,
            spin_nanos: 50_000,
            allow_faults: false,
        });
        round_trip(ExecReady {
            magic: MAGIC,
            version: VERSION,
            build_id: "b".into(),
            environment: [7; 32],
            counting_allocator: true,
            confinement: "seccomp\tactive\n".into(),
        });
        let execute = Request::Execute {
            code_hash: [1; 32],
            params: std::borrow::Cow::Owned(ValidationParams::new(vec![1, 2], vec![3; 100], 9)),
            timeout: Duration::from_millis(1500),
            instantiate_only: false,
        };
        assert_eq!(
            decode::<Request>(&encode(&execute).unwrap()).unwrap(),
            execute
        );
        let artifact = vec![5; 1000];
        let load = Request::Load {
            code_hash: [1; 32],
            digest: [2; 32],
            artifact: &artifact,
        };
        let encoded = encode(&load).unwrap();
        assert_eq!(decode::<Request>(&encoded).unwrap(), load);
        // The artifact is the message's tail: the worker keeps the message as its bytes.
        assert!(encoded.ends_with(&artifact));
        let fault = Request::Fault(Fault::Truncated);
        assert_eq!(decode::<Request>(&encode(&fault).unwrap()).unwrap(), fault);
        round_trip(Response::Executed {
            result: Ok(ValidationResult {
                head_data: vec![1],
                new_validation_code: Some(vec![2]),
                upward_messages: vec![vec![], vec![3]],
                horizontal_messages: vec![OutboundHrmpMessage {
                    recipient: 4,
                    data: vec![5],
                }],
                processed_downward_messages: 6,
                hrmp_watermark: 7,
            }),
            fuel_consumed: Some(2265),
        });
        for error in [
            ExecuteError::Trap("unreachable".into()),
            ExecuteError::GuestRejected("no".into()),
            ExecuteError::ResourceLimit {
                kind: LimitKind::Fuel,
                detail: "all of it".into(),
            },
            ExecuteError::Timeout(Duration::from_secs(2)),
        ] {
            round_trip(Response::Executed {
                result: Err(error),
                fuel_consumed: None,
            });
        }
        round_trip(Response::ChildDied("signal 9".into()));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        // Every byte string of up to 3 bytes, and pseudo-random longer ones.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut inputs: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        for len in [2usize, 3, 8, 40, 300] {
            for _ in 0..2000 {
                let bytes = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed as u8
                    })
                    .collect();
                inputs.push(bytes);
            }
        }
        for bytes in &inputs {
            let _ = decode::<Response>(bytes);
            let _ = decode::<Request>(bytes);
            let _ = decode::<ExecReady>(bytes);
        }
        // A vector announcing more elements than bytes follow is refused, not allocated.
        let mut huge = vec![0u8]; // Response::Executed
        huge.push(0); // Ok
        huge.extend([0xff, 0xff, 0xff, 0xff, 0x0f]); // head_data: 4 Gi elements
        assert!(decode::<Response>(&huge).is_err());
    }

    #[test]
    fn frames_are_bounded_before_reading() {
        let mut pipe = Vec::new();
        write_frame(&mut pipe, &Response::NotLoaded).unwrap();
        pipe[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = read_frame::<Response>(&mut pipe.as_slice(), 100).unwrap_err();
        assert!(
            matches!(err, MessageError::TooLarge { limit: 100, .. }),
            "{err}"
        );
        let truncated = [10u8, 0, 0, 0, 1];
        let err = read_frame::<Response>(&mut truncated.as_slice(), 100).unwrap_err();
        assert!(matches!(err, MessageError::Io(_)), "{err}");
    }
}
