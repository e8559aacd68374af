//! The framed, versioned messages between the host and a preparation worker.
//!
//! Every message is one frame: a tag byte, a little-endian `u32` payload length, the payload.
//! Whoever reads a frame bounds its length by what that message may carry before allocating
//! (fallibly) and reading it. The host speaks first (`Hello`), the worker answers (`Ready`),
//! the host sends one `Job`, the worker answers once (`Compiled`, `Failed` or
//! `MemoryExceeded`) and exits.

use std::io::{self, Read, Write};

/// Checked in `Hello` and `Ready`: both sides speak this protocol.
const MAGIC: [u8; 4] = *b"PVFW";
/// The protocol's version; a worker of another version is refused at the handshake.
pub(crate) const VERSION: u32 = 1;
/// The longest text a worker may send (a reason, a confinement report).
pub(crate) const MAX_TEXT_BYTES: usize = 4096;

const TAG_HELLO: u8 = 1;
const TAG_READY: u8 = 2;
const TAG_JOB: u8 = 3;
const TAG_COMPILED: u8 = 4;
const TAG_FAILED: u8 = 5;
const TAG_MEMORY_EXCEEDED: u8 = 6;
const TAG_CPU_EXCEEDED: u8 = 7;

/// Why a frame could not be read or made sense of.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProtocolError {
    /// The pipe failed or ended early.
    #[error("pipe: {0}")]
    Io(#[from] io::Error),
    /// The other side closed the pipe before a frame began.
    #[error("the pipe was closed")]
    Closed,
    /// A frame that does not belong here, or does not parse.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A frame larger than its message may be.
    #[error("a message of {len} bytes is over its limit of {limit}")]
    TooLarge { len: usize, limit: usize },
    /// Memory for the frame could not be had.
    #[error("no memory for a message of {0} bytes")]
    NoMemory(usize),
}

/// What the host tells a new worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hello {
    /// The host's build (see [`super::BUILD_ID`]).
    pub(crate) build_id: String,
    /// The engine setting that varies with the host's configuration.
    pub(crate) max_wasm_stack_bytes: u64,
    /// The largest code a job may carry.
    pub(crate) max_code_bytes: u64,
    /// Secure mode: a job must not run without every confinement layer.
    pub(crate) require_confinement: bool,
    /// A spare: compile a small fixed component after the handshake, while no job waits, so
    /// the job does not pay for the compiler's first use in a fresh process.
    pub(crate) warm_up: bool,
}

/// What a worker answers: who it is, and how it is confined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ready {
    /// The worker's build.
    pub(crate) build_id: String,
    /// blake3 of the worker engine's `precompile_compatibility_hash`.
    pub(crate) engine: [u8; 32],
    /// Whether the worker's global allocator is the counting one (the memory cap needs it).
    pub(crate) counting_allocator: bool,
    /// The confinement layers: one line each, `name<TAB>active` or
    /// `name<TAB>unavailable<TAB>why`.
    pub(crate) confinement: String,
}

/// Which limits a job runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Purpose {
    /// Deciding whether new code is acceptable: strict limits, exceeding them is `invalid`.
    Precheck = 1,
    /// Preparing for execution: lenient limits, exceeding them is `indeterminate`.
    Prepare = 2,
}

/// One compilation.
#[derive(Debug)]
pub(crate) struct Job {
    /// CPU seconds the job may use (the worker sets `RLIMIT_CPU`).
    pub(crate) cpu_secs: u64,
    /// Live heap bytes the job may hold (the counting allocator's cap).
    pub(crate) memory_bytes: u64,
    /// Address space of the whole worker (`RLIMIT_AS`), a backstop for memory not on the heap.
    pub(crate) address_space_bytes: u64,
    /// Compile threads.
    pub(crate) threads: u32,
    /// The code.
    pub(crate) code: Vec<u8>,
}

/// Why a worker's compilation failed, as it reports it (the host classifies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailedKind {
    /// The code does not validate or compile.
    InvalidCode = 1,
    /// The code does not target the validation-function world.
    WrongWorld = 2,
    /// Something of the worker's own failed (an OS refusal, a missing sandbox layer).
    Host = 3,
}

/// The worker's one answer to a job.
#[derive(Debug)]
pub(crate) enum Reply {
    /// The artifact, its blake3, the heap peak and the CPU time used.
    Compiled {
        artifact: Vec<u8>,
        digest: [u8; 32],
        peak: u64,
        cpu_nanos: u64,
    },
    /// The job failed.
    Failed {
        kind: FailedKind,
        reason: String,
        peak: u64,
        cpu_nanos: u64,
    },
    /// The heap cap was hit: the cap, and the size the heap would have reached.
    MemoryExceeded { limit: u64, peak: u64 },
    /// The CPU-time limit was reached: the limit and the CPU time used, in nanoseconds.
    CpuExceeded { limit_nanos: u64, used_nanos: u64 },
}

fn write_frame(w: &mut impl Write, tag: u8, parts: &[&[u8]]) -> io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message over 4 GiB"))?;
    let mut header = [0u8; 5];
    header[0] = tag;
    header[1..].copy_from_slice(&len.to_le_bytes());
    w.write_all(&header)?;
    for part in parts {
        w.write_all(part)?;
    }
    w.flush()
}

/// Reads one frame whose payload may be at most `limit` bytes.
fn read_frame(r: &mut impl Read, limit: usize) -> Result<(u8, Vec<u8>), ProtocolError> {
    let mut header = [0u8; 5];
    let mut got = 0;
    while got < header.len() {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Err(ProtocolError::Closed),
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_le_bytes(header[1..].try_into().expect("4 bytes")) as usize;
    if len > limit {
        return Err(ProtocolError::TooLarge { len, limit });
    }
    let payload = read_payload(r, len).map_err(|e| match e.kind() {
        io::ErrorKind::OutOfMemory => ProtocolError::NoMemory(len),
        _ => e.into(),
    })?;
    Ok((header[0], payload))
}

/// Reads exactly `len` bytes (a length already bounded by the caller) into a buffer allocated
/// fallibly: `OutOfMemory` when it cannot be had, `UnexpectedEof` when the pipe ends first. The
/// one way both worker protocols read a frame's payload.
pub(crate) fn read_payload(r: &mut impl Read, len: usize) -> io::Result<Vec<u8>> {
    let mut payload = Vec::new();
    payload
        .try_reserve_exact(len)
        .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
    r.take(len as u64).read_to_end(&mut payload)?;
    if payload.len() != len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(payload)
}

/// A cursor over a payload that fails instead of panicking.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.0.len() < n {
            return Err(ProtocolError::Malformed("message too short".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }
    fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.array::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, ProtocolError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, ProtocolError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// A `u32`-length-prefixed UTF-8 text of at most [`MAX_TEXT_BYTES`].
    fn text(&mut self) -> Result<String, ProtocolError> {
        let len = self.u32()? as usize;
        if len > MAX_TEXT_BYTES {
            return Err(ProtocolError::TooLarge {
                len,
                limit: MAX_TEXT_BYTES,
            });
        }
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| ProtocolError::Malformed("text is not UTF-8".into()))
    }
    fn magic(&mut self) -> Result<(), ProtocolError> {
        if self.array::<4>()? != MAGIC {
            return Err(ProtocolError::Malformed(
                "not a pvf worker message (bad magic)".into(),
            ));
        }
        let version = self.u32()?;
        if version != VERSION {
            return Err(ProtocolError::Malformed(format!(
                "protocol version {version}, expected {VERSION}"
            )));
        }
        Ok(())
    }
    fn end(&self) -> Result<(), ProtocolError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::Malformed("trailing bytes".into()))
        }
    }
}

fn text_field(text: &str) -> Vec<u8> {
    let text = crate::error::truncate_utf8(text, MAX_TEXT_BYTES);
    let mut out = Vec::with_capacity(4 + text.len());
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

fn expect_tag(tag: u8, want: u8, what: &str) -> Result<(), ProtocolError> {
    if tag == want {
        Ok(())
    } else {
        Err(ProtocolError::Malformed(format!(
            "expected {what}, got a message tagged {tag}"
        )))
    }
}

impl Hello {
    pub(crate) fn write(&self, w: &mut impl Write) -> io::Result<()> {
        write_frame(
            w,
            TAG_HELLO,
            &[
                &MAGIC,
                &VERSION.to_le_bytes(),
                &text_field(&self.build_id),
                &self.max_wasm_stack_bytes.to_le_bytes(),
                &self.max_code_bytes.to_le_bytes(),
                &[u8::from(self.require_confinement)],
                &[u8::from(self.warm_up)],
            ],
        )
    }

    pub(crate) fn read(r: &mut impl Read) -> Result<Self, ProtocolError> {
        let (tag, payload) = read_frame(r, 64 + MAX_TEXT_BYTES)?;
        expect_tag(tag, TAG_HELLO, "hello")?;
        let mut f = Fields(&payload);
        f.magic()?;
        let hello = Self {
            build_id: f.text()?,
            max_wasm_stack_bytes: f.u64()?,
            max_code_bytes: f.u64()?,
            require_confinement: f.u8()? != 0,
            warm_up: f.u8()? != 0,
        };
        f.end()?;
        Ok(hello)
    }
}

impl Ready {
    pub(crate) fn write(&self, w: &mut impl Write) -> io::Result<()> {
        write_frame(
            w,
            TAG_READY,
            &[
                &MAGIC,
                &VERSION.to_le_bytes(),
                &text_field(&self.build_id),
                &self.engine,
                &[u8::from(self.counting_allocator)],
                &text_field(&self.confinement),
            ],
        )
    }

    pub(crate) fn read(r: &mut impl Read) -> Result<Self, ProtocolError> {
        let (tag, payload) = read_frame(r, 64 + 2 * MAX_TEXT_BYTES)?;
        expect_tag(tag, TAG_READY, "ready")?;
        let mut f = Fields(&payload);
        f.magic()?;
        let ready = Self {
            build_id: f.text()?,
            engine: f.array()?,
            counting_allocator: f.u8()? != 0,
            confinement: f.text()?,
        };
        f.end()?;
        Ok(ready)
    }
}

/// Writes a job without copying the code.
pub(crate) fn write_job(
    w: &mut impl Write,
    purpose: Purpose,
    limits: &crate::config::CompileLimits,
    code: &[u8],
) -> io::Result<()> {
    write_frame(
        w,
        TAG_JOB,
        &[
            &[purpose as u8],
            &limits.cpu_secs().to_le_bytes(),
            &limits.memory_bytes.to_le_bytes(),
            &limits.address_space().to_le_bytes(),
            &u32::try_from(limits.threads)
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
            code,
        ],
    )
}

impl Job {
    /// The job, or `None` when the host closed the pipe instead (a spare worker dismissed).
    pub(crate) fn read(
        r: &mut impl Read,
        max_code_bytes: u64,
    ) -> Result<Option<Self>, ProtocolError> {
        let limit = usize::try_from(max_code_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(29);
        let (tag, payload) = match read_frame(r, limit) {
            Ok(frame) => frame,
            Err(ProtocolError::Closed) => return Ok(None),
            Err(e) => return Err(e),
        };
        expect_tag(tag, TAG_JOB, "job")?;
        let mut f = Fields(&payload);
        // The purpose only chose the limits, which travel with the job.
        if !matches!(f.u8()?, 1 | 2) {
            return Err(ProtocolError::Malformed("unknown purpose".into()));
        }
        let cpu_secs = f.u64()?;
        let memory_bytes = f.u64()?;
        let address_space_bytes = f.u64()?;
        let threads = f.u32()?;
        let header = payload.len() - f.0.len();
        let mut code = payload;
        code.drain(..header);
        Ok(Some(Self {
            cpu_secs,
            memory_bytes,
            address_space_bytes,
            threads,
            code,
        }))
    }
}

impl Reply {
    pub(crate) fn write(&self, w: &mut impl Write) -> io::Result<()> {
        match self {
            Self::Compiled {
                artifact,
                digest,
                peak,
                cpu_nanos,
            } => write_frame(
                w,
                TAG_COMPILED,
                &[
                    digest,
                    &peak.to_le_bytes(),
                    &cpu_nanos.to_le_bytes(),
                    artifact,
                ],
            ),
            Self::Failed {
                kind,
                reason,
                peak,
                cpu_nanos,
            } => write_frame(
                w,
                TAG_FAILED,
                &[
                    &[*kind as u8],
                    &peak.to_le_bytes(),
                    &cpu_nanos.to_le_bytes(),
                    &text_field(reason),
                ],
            ),
            Self::MemoryExceeded { limit, peak } => {
                w.write_all(&fixed_frame(TAG_MEMORY_EXCEEDED, *limit, *peak))?;
                w.flush()
            }
            Self::CpuExceeded {
                limit_nanos,
                used_nanos,
            } => {
                w.write_all(&fixed_frame(TAG_CPU_EXCEEDED, *limit_nanos, *used_nanos))?;
                w.flush()
            }
        }
    }

    /// Reads the worker's answer; an artifact may be at most `max_artifact_bytes`.
    pub(crate) fn read(
        r: &mut impl Read,
        max_artifact_bytes: usize,
    ) -> Result<Self, ProtocolError> {
        let (tag, payload) = read_frame(r, max_artifact_bytes.saturating_add(48))?;
        let mut f = Fields(&payload);
        let reply = match tag {
            TAG_COMPILED => {
                let digest = f.array()?;
                let peak = f.u64()?;
                let cpu_nanos = f.u64()?;
                let mut artifact = payload;
                artifact.drain(..48);
                return Ok(Self::Compiled {
                    artifact,
                    digest,
                    peak,
                    cpu_nanos,
                });
            }
            TAG_FAILED => {
                let kind = match f.u8()? {
                    1 => FailedKind::InvalidCode,
                    2 => FailedKind::WrongWorld,
                    3 => FailedKind::Host,
                    other => {
                        return Err(ProtocolError::Malformed(format!("failure kind {other}")));
                    }
                };
                Self::Failed {
                    kind,
                    peak: f.u64()?,
                    cpu_nanos: f.u64()?,
                    reason: f.text()?,
                }
            }
            TAG_MEMORY_EXCEEDED => Self::MemoryExceeded {
                limit: f.u64()?,
                peak: f.u64()?,
            },
            TAG_CPU_EXCEEDED => Self::CpuExceeded {
                limit_nanos: f.u64()?,
                used_nanos: f.u64()?,
            },
            other => {
                return Err(ProtocolError::Malformed(format!(
                    "expected an answer to the job, got a message tagged {other}"
                )));
            }
        };
        f.end()?;
        Ok(reply)
    }
}

/// A frame of two `u64`s, built without allocating.
fn fixed_frame(tag: u8, a: u64, b: u64) -> [u8; 21] {
    let mut frame = [0u8; 21];
    frame[0] = tag;
    frame[1..5].copy_from_slice(&16u32.to_le_bytes());
    frame[5..13].copy_from_slice(&a.to_le_bytes());
    frame[13..21].copy_from_slice(&b.to_le_bytes());
    frame
}

/// Writes the `MemoryExceeded` frame to standard output with one system call and no
/// allocation (called from inside the allocator). A pipe takes a write this small whole.
pub(crate) fn report_memory_exceeded(limit: usize, peak: usize) {
    let frame = fixed_frame(TAG_MEMORY_EXCEEDED, limit as u64, peak as u64);
    let _ = rustix::io::write(rustix::stdio::stdout(), &frame);
}

/// Writes the `CpuExceeded` frame to standard output with one system call (from the worker's
/// CPU watch, while the compiler may hold any lock).
pub(crate) fn report_cpu_exceeded(limit_nanos: u64, used_nanos: u64) {
    let frame = fixed_frame(TAG_CPU_EXCEEDED, limit_nanos, used_nanos);
    let _ = rustix::io::write(rustix::stdio::stdout(), &frame);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let hello = Hello {
            build_id: "b".into(),
            max_wasm_stack_bytes: 1 << 20,
            max_code_bytes: 64 << 20,
            require_confinement: true,
            warm_up: false,
        };
        let mut buf = Vec::new();
        hello.write(&mut buf).unwrap();
        assert_eq!(Hello::read(&mut buf.as_slice()).unwrap(), hello);

        let limits = crate::config::CompileLimits::strict()
            .cpu_time(std::time::Duration::from_millis(2500))
            .memory_bytes(4)
            .address_space_bytes(5)
            .threads(6);
        let mut buf = Vec::new();
        write_job(&mut buf, Purpose::Precheck, &limits, b"\0asm code").unwrap();
        let back = Job::read(&mut buf.as_slice(), 100).unwrap().unwrap();
        assert_eq!(back.code, b"\0asm code");
        assert_eq!(
            (
                back.cpu_secs,
                back.memory_bytes,
                back.address_space_bytes,
                back.threads
            ),
            (3, 4, 5, 6)
        );
        // A closed pipe is no job; a job over the code limit is refused before it is read.
        assert!(Job::read(&mut &b""[..], 100).unwrap().is_none());
        assert!(matches!(
            Job::read(&mut buf.as_slice(), 2),
            Err(ProtocolError::TooLarge { .. })
        ));

        let mut buf = Vec::new();
        Reply::MemoryExceeded { limit: 7, peak: 9 }
            .write(&mut buf)
            .unwrap();
        assert!(matches!(
            Reply::read(&mut buf.as_slice(), 10).unwrap(),
            Reply::MemoryExceeded { limit: 7, peak: 9 }
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &b"\x04\x01\x00\x00\x00x"[..],
            b"\x05\x03\x00\x00\x00abc",
            b"\x09\x00\x00\x00\x00",
            b"\x04\xff\xff\xff\xff",
            b"\x04\x30",
        ] {
            assert!(Reply::read(&mut &bytes[..], 1 << 20).is_err(), "{bytes:?}");
        }
    }
}
