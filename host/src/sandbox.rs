//! The guest's WASI context: capability-less and deterministic.
//!
//! Every honest node must compute the same verdict, so nothing a guest can observe through WASI
//! may differ between nodes, runs or processes:
//!
//! | WASI interface | what the guest sees |
//! |---|---|
//! | filesystem | no preopened directories: every open fails with an error |
//! | sockets, name lookup | denied: every attempt fails with an error |
//! | environment, arguments, cwd | none |
//! | stdin | empty (closed) |
//! | stdout, stderr | accepted and discarded past [`OUTPUT_CAPTURE_BYTES`] per stream per call; the kept part goes to the host's log (target `pvf::guest`) |
//! | wall clock | frozen at [`WALL_CLOCK_SECS`] (2020-01-01T00:00:00Z) |
//! | monotonic clock | starts at 0 and advances [`MONOTONIC_STEP_NANOS`] per read |
//! | random, insecure random, insecure seed | deterministic streams derived from the code hash and the params |

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx};

use crate::store::CodeHash;
use crate::types::ValidationParams;

/// The wall clock every guest sees, in seconds since the Unix epoch: 2020-01-01T00:00:00Z.
pub const WALL_CLOCK_SECS: u64 = 1_577_836_800;
/// How far the guest's monotonic clock advances on each read, in nanoseconds. Advancing (rather
/// than frozen) keeps "wait until" loops finite: they end by fuel, deterministically.
pub const MONOTONIC_STEP_NANOS: u64 = 1_000;
/// How much of each of stdout and stderr is kept per call (the rest is accepted and dropped).
pub const OUTPUT_CAPTURE_BYTES: usize = 64 * 1024;

/// The guest's WASI context for one call, and handles on what it writes.
pub(crate) struct GuestWasi {
    pub(crate) ctx: WasiCtx,
    pub(crate) stdout: CappedOutput,
    pub(crate) stderr: CappedOutput,
}

/// Builds the deterministic context for running `code_hash` on `params`.
///
/// Per call this hashes only the params (the seed) and derives the 16-byte insecure seed; the
/// blake3 key derivations of the purpose strings are done once per process ([`Purposes`]), and
/// the two random streams are derived from the seed on the guest's first read ([`XofRng`]).
/// What the guest observes is exactly `blake3::derive_key`-style output of the same inputs,
/// whenever it is computed.
pub(crate) fn guest_wasi(code_hash: &CodeHash, params: &ValidationParams) -> GuestWasi {
    let purposes = Purposes::get();
    let seed = randomness_seed(&purposes.seed, code_hash, params);
    let mut insecure_seed = [0u8; 16];
    stream(&purposes.insecure_seed, &seed).fill(&mut insecure_seed);
    let stdout = CappedOutput::new(OUTPUT_CAPTURE_BYTES);
    let stderr = CappedOutput::new(OUTPUT_CAPTURE_BYTES);
    let ctx = WasiCtx::builder()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .wall_clock(FrozenWallClock)
        .monotonic_clock(SteppingMonotonicClock::default())
        .secure_random(XofRng::new(&purposes.secure_random, seed))
        .insecure_random(XofRng::new(&purposes.insecure_random, seed))
        .insecure_random_seed(u128::from_le_bytes(insecure_seed))
        .build();
    GuestWasi {
        ctx,
        stdout,
        stderr,
    }
}

/// The blake3 hashers in key-derivation mode for each purpose (the context strings are part of
/// the determinism contract: changing one changes what guests observe). Made once per process;
/// a clone continues exactly as `blake3::Hasher::new_derive_key(purpose)` would.
struct Purposes {
    seed: blake3::Hasher,
    insecure_seed: blake3::Hasher,
    secure_random: blake3::Hasher,
    insecure_random: blake3::Hasher,
}

impl Purposes {
    fn get() -> &'static Self {
        static PURPOSES: OnceLock<Purposes> = OnceLock::new();
        PURPOSES.get_or_init(|| Self {
            seed: blake3::Hasher::new_derive_key("pvf-host guest randomness seed v1"),
            insecure_seed: blake3::Hasher::new_derive_key("pvf-host guest insecure seed v1"),
            secure_random: blake3::Hasher::new_derive_key("pvf-host guest secure random v1"),
            insecure_random: blake3::Hasher::new_derive_key("pvf-host guest insecure random v1"),
        })
    }
}

/// The output stream of `purpose` (a key-derivation hasher of [`Purposes`]) over `seed`.
fn stream(purpose: &blake3::Hasher, seed: &[u8; 32]) -> blake3::OutputReader {
    let mut h = purpose.clone();
    h.update(seed);
    h.finalize_xof()
}

/// The WASI context a guest gets for running `code_hash` on `params` (see the module table).
///
/// [`ValidationHost`](crate::ValidationHost) builds it for every call; it is public for embedders
/// that instantiate components themselves and for benchmarks.
pub fn guest_wasi_ctx(code_hash: &CodeHash, params: &ValidationParams) -> WasiCtx {
    guest_wasi(code_hash, params).ctx
}

/// 32 bytes that depend only on the code and the candidate (`purpose` is [`Purposes::seed`]).
fn randomness_seed(
    purpose: &blake3::Hasher,
    code_hash: &CodeHash,
    params: &ValidationParams,
) -> [u8; 32] {
    let mut h = purpose.clone();
    h.update(code_hash.as_bytes());
    for field in [&params.parent_head[..], &params.block_data[..]] {
        h.update(&(field.len() as u64).to_le_bytes());
        h.update(field);
    }
    h.update(&params.relay_parent_number.to_le_bytes());
    h.update(&params.relay_parent_storage_root);
    *h.finalize().as_bytes()
}

struct FrozenWallClock;

impl HostWallClock for FrozenWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }
    fn now(&self) -> Duration {
        Duration::from_secs(WALL_CLOCK_SECS)
    }
}

#[derive(Default)]
struct SteppingMonotonicClock(AtomicU64);

impl HostMonotonicClock for SteppingMonotonicClock {
    fn resolution(&self) -> u64 {
        MONOTONIC_STEP_NANOS
    }
    fn now(&self) -> u64 {
        self.0.fetch_add(MONOTONIC_STEP_NANOS, Ordering::Relaxed)
    }
}

/// A deterministic random stream: blake3's extendable output of a purpose over the seed,
/// derived on the first read (most guests never read it).
struct XofRng {
    purpose: &'static blake3::Hasher,
    seed: [u8; 32],
    reader: Option<blake3::OutputReader>,
}

impl XofRng {
    fn new(purpose: &'static blake3::Hasher, seed: [u8; 32]) -> Self {
        Self {
            purpose,
            seed,
            reader: None,
        }
    }

    fn fill(&mut self, dst: &mut [u8]) {
        let (purpose, seed) = (self.purpose, &self.seed);
        self.reader
            .get_or_insert_with(|| stream(purpose, seed))
            .fill(dst);
    }
}

impl rand_core::TryRng for XofRng {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.fill(dst);
        Ok(())
    }
}

/// An output stream that accepts everything, keeps the first `cap` bytes and counts the rest.
/// (wasmtime-wasi's `MemoryOutputPipe` traps the guest when full; a chatty guest must not get a
/// different verdict for printing.)
#[derive(Clone)]
pub(crate) struct CappedOutput(Arc<CappedInner>);

struct CappedInner {
    cap: usize,
    kept: Mutex<Vec<u8>>,
    dropped: AtomicU64,
}

impl CappedOutput {
    fn new(cap: usize) -> Self {
        Self(Arc::new(CappedInner {
            cap,
            kept: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
        }))
    }

    fn push(&self, bytes: &[u8]) {
        let mut kept = self.0.kept.lock().unwrap_or_else(|e| e.into_inner());
        let room = self.0.cap.saturating_sub(kept.len());
        let take = room.min(bytes.len());
        kept.extend_from_slice(&bytes[..take]);
        self.0
            .dropped
            .fetch_add((bytes.len() - take) as u64, Ordering::Relaxed);
    }

    /// The kept bytes.
    pub(crate) fn contents(&self) -> Vec<u8> {
        self.0
            .kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether nothing was written (nothing kept, nothing dropped).
    pub(crate) fn is_untouched(&self) -> bool {
        self.dropped() == 0
            && self
                .0
                .kept
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
    }

    /// How many bytes were dropped past the cap.
    pub(crate) fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// How much a guest may write in one `write` call (WASI asks before every write).
const WRITE_BUDGET: usize = 64 * 1024;

impl OutputStream for CappedOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(WRITE_BUDGET)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CappedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_output_keeps_the_first_bytes_and_counts_the_rest() {
        let mut out = CappedOutput::new(10);
        OutputStream::write(&mut out, bytes::Bytes::from_static(b"0123456")).unwrap();
        OutputStream::write(&mut out, bytes::Bytes::from_static(b"789abcdef")).unwrap();
        assert_eq!(out.contents(), b"0123456789");
        assert_eq!(out.dropped(), 6);
        // Never closes: a guest may keep writing.
        assert_eq!(out.check_write().unwrap(), WRITE_BUDGET);
    }

    #[test]
    fn monotonic_clock_steps_and_wall_clock_is_frozen() {
        let clock = SteppingMonotonicClock::default();
        assert_eq!(clock.now(), 0);
        assert_eq!(clock.now(), MONOTONIC_STEP_NANOS);
        assert_eq!(FrozenWallClock.now(), Duration::from_secs(WALL_CLOCK_SECS));
    }

    #[test]
    fn streams_are_the_key_derivations_of_their_purposes() {
        // The once-per-process hashers continue exactly as fresh key derivations would, and a
        // lazily derived stream gives the same bytes as an eager one.
        let purposes = Purposes::get();
        let seed = [7u8; 32];
        for (hasher, context) in [
            (&purposes.seed, "pvf-host guest randomness seed v1"),
            (&purposes.insecure_seed, "pvf-host guest insecure seed v1"),
            (&purposes.secure_random, "pvf-host guest secure random v1"),
            (
                &purposes.insecure_random,
                "pvf-host guest insecure random v1",
            ),
        ] {
            let mut expected = [0u8; 100];
            let mut fresh = blake3::Hasher::new_derive_key(context);
            fresh.update(&seed);
            fresh.finalize_xof().fill(&mut expected);
            let mut got = [0u8; 100];
            stream(hasher, &seed).fill(&mut got);
            assert_eq!(got, expected, "{context}");
            let mut lazy = XofRng::new(hasher, seed);
            let mut first = [0u8; 40];
            let mut rest = [0u8; 60];
            lazy.fill(&mut first);
            lazy.fill(&mut rest);
            assert_eq!(
                [&first[..], &rest[..]].concat(),
                expected,
                "{context} (lazy)"
            );
        }
    }

    #[test]
    fn randomness_depends_on_code_and_params_only() {
        let seed = |code: &CodeHash, params: &ValidationParams| {
            randomness_seed(&Purposes::get().seed, code, params)
        };
        let code = CodeHash::of(b"code");
        let params = ValidationParams::new(vec![1], vec![2], 3);
        assert_eq!(seed(&code, &params), seed(&code, &params));
        assert_ne!(seed(&code, &params), seed(&CodeHash::of(b"other"), &params));
        // Field boundaries are part of the input: moving a byte between fields changes the seed.
        let moved = ValidationParams::new(vec![1, 2], vec![], 3);
        assert_ne!(seed(&code, &params), seed(&code, &moved));
    }
}
