//! The guest's WASI context: capability-less, deterministic, and never blocking.
//!
//! Every honest node must compute the same verdict, so nothing a guest can observe through WASI
//! may differ between nodes, runs or processes; and no host call a guest makes may block or do
//! unpriced work, so a guest cannot hold the host's thread:
//!
//! | WASI interface | what the guest sees |
//! |---|---|
//! | filesystem | no preopened directories: every open fails with an error |
//! | sockets, name lookup | denied: every attempt fails at once with an error |
//! | environment, arguments, cwd | none |
//! | stdin | empty (closed) |
//! | stdout, stderr | accepted and discarded past [`OUTPUT_CAPTURE_BYTES`] per stream per call; the kept part goes to the host's log (target `pvf::guest`) |
//! | wall clock | frozen at [`WALL_CLOCK_SECS`] (2020-01-01T00:00:00Z) |
//! | monotonic clock | virtual: starts at 0 and advances [`MONOTONIC_STEP_NANOS`] per read |
//! | sleeping (`subscribe-instant`, `subscribe-duration`, then `pollable.block` or `poll`) | virtual: no real time passes; the call returns at once with the virtual clock moved forward to the earliest deadline waited for (`poll` returns the pollables whose deadlines have then come) |
//! | random, insecure random | deterministic streams derived from the code hash and the params; at most [`MAX_RANDOM_BYTES_PER_CALL`] per call, one fuel unit per byte |
//! | insecure seed | derived from the code hash and the params |
//!
//! **A wait for a time that never comes** (an instant of `u64::MAX`, or a duration that reaches
//! past it) ends at once like any other: the virtual clock jumps to its last instant,
//! `u64::MAX`, and stays there (it saturates; it never wraps). A guest that keeps waiting in a
//! loop runs out of fuel, which is `invalid` on every node.
//!
//! **Host work is bounded and priced in fuel.** Every call from the guest into the host costs
//! [`HOST_CALL_FUEL`] (charged by the store's call hook, see `execute.rs`), so that a loop of
//! cheap host calls runs out of fuel about as fast as a loop of wasm instructions (a loop
//! reading the clock took 26 s to spend the default budget before, 13 times the backing
//! timeout: an `indeterminate` on every node). The calls whose host work grows with the guest's
//! data also cost one fuel unit per byte: random bytes (capped at [`MAX_RANDOM_BYTES_PER_CALL`]
//! per call) and output written to stdout or stderr (the data crossing one call is bounded by
//! the store's hostcall budget). Asking for more than a cap is a deterministic resource limit
//! ([`LimitKind::HostCall`](crate::LimitKind::HostCall)): `invalid`.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use wasmtime::component::{Linker, Resource};
use wasmtime::{StoreContextMut, Trap};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamError, subscribe};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiView};

use crate::store::CodeHash;
use crate::types::ValidationParams;

/// The wall clock every guest sees, in seconds since the Unix epoch: 2020-01-01T00:00:00Z.
pub const WALL_CLOCK_SECS: u64 = 1_577_836_800;
/// How far the guest's monotonic clock advances on each read, in nanoseconds. Advancing (rather
/// than frozen) keeps "wait until" loops finite: they end by fuel, deterministically.
pub const MONOTONIC_STEP_NANOS: u64 = 1_000;
/// How much of each of stdout and stderr is kept per call (the rest is accepted and dropped).
pub const OUTPUT_CAPTURE_BYTES: usize = 64 * 1024;
/// The most bytes one `get-random-bytes` (or `get-insecure-random-bytes`) call may ask for:
/// 1 MiB, about half a millisecond of host work. Rust's standard library asks for 16 bytes at a
/// time, wasi-libc for at most 256. Asking for more is a deterministic resource limit.
pub const MAX_RANDOM_BYTES_PER_CALL: u64 = 1 << 20;
/// The fuel every call from the guest into the host costs (WASI calls, and wasmtime's own
/// fallible calls out of compiled code such as `memory.grow`), on top of the instructions that
/// make it. Measured here (dev build): unpriced, a loop of clock reads spent the default 2e9
/// fuel in 26 s and a loop of 64 KiB writes ran past 60 s, far past the 2 s backing timeout;
/// priced at 1 000 per call (and a unit per byte written), the slowest such loop, 1-byte
/// writes, spends it in 0.65 s. The bundled JavaScript guest makes a handful of host calls
/// (about 8 000 fuel of its ~810 000), the Rust guests none inside `validate-block`.
pub const HOST_CALL_FUEL: u64 = 1_000;

/// The WASI package version whose interfaces the host replaces (wasmtime-wasi 48 implements
/// `wasi:*@0.2.12`; a guest importing any `0.2.x` links to them).
const WASI_VERSION: &str = "0.2.12";

/// The guest's WASI context for one call, and handles on what it writes.
pub(crate) struct GuestWasi {
    pub(crate) ctx: WasiCtx,
    pub(crate) stdout: CappedOutput,
    pub(crate) stderr: CappedOutput,
    pub(crate) calls: GuestCalls,
}

/// The per-call state of the host calls this module implements itself: the virtual clock, the
/// random streams, and a record of a call refused for a deterministic limit.
pub(crate) struct GuestCalls {
    clock: VirtualClock,
    secure: XofRng,
    insecure: XofRng,
    refused: Option<String>,
}

impl GuestCalls {
    /// Why a host call was refused for a deterministic limit, if one was (taken once).
    pub(crate) fn take_refusal(&mut self) -> Option<String> {
        self.refused.take()
    }
}

/// A store's data that holds a guest's WASI context and [`GuestCalls`].
pub(crate) trait GuestState: WasiView + 'static {
    /// The host calls' state.
    fn calls(&mut self) -> &mut GuestCalls;
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
    let clock = VirtualClock::default();
    // The context's own clock and random sources are the same deterministic ones; the calls
    // that could block or do unbounded work are replaced in the linker ([`add_to_linker`]).
    let ctx = WasiCtx::builder()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .wall_clock(FrozenWallClock)
        .monotonic_clock(clock.clone())
        .secure_random(XofRng::new(&purposes.secure_random, seed))
        .insecure_random(XofRng::new(&purposes.insecure_random, seed))
        .insecure_random_seed(u128::from_le_bytes(insecure_seed))
        .max_random_size(MAX_RANDOM_BYTES_PER_CALL)
        .build();
    GuestWasi {
        ctx,
        stdout,
        stderr,
        calls: GuestCalls {
            clock,
            secure: XofRng::new(&purposes.secure_random, seed),
            insecure: XofRng::new(&purposes.insecure_random, seed),
            refused: None,
        },
    }
}

/// Adds WASI 0.2 to `linker`, with the monotonic clock and the random interfaces replaced by
/// this module's: virtual sleeps that never block, and capped, fuel-priced random bytes.
pub(crate) fn add_to_linker<T: GuestState>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    linker.allow_shadowing(true);
    let result = replace_clock_and_random(linker);
    linker.allow_shadowing(false);
    result
}

fn replace_clock_and_random<T: GuestState>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let mut clock = linker.instance(&format!("wasi:clocks/monotonic-clock@{WASI_VERSION}"))?;
    clock.func_wrap("now", |mut cx: StoreContextMut<'_, T>, (): ()| {
        Ok((cx.data_mut().calls().clock.read(),))
    })?;
    clock.func_wrap("resolution", |_: StoreContextMut<'_, T>, (): ()| {
        Ok((MONOTONIC_STEP_NANOS,))
    })?;
    clock.func_wrap(
        "subscribe-instant",
        |mut cx: StoreContextMut<'_, T>, (when,): (u64,)| subscribe_until(cx.data_mut(), when),
    )?;
    clock.func_wrap(
        "subscribe-duration",
        |mut cx: StoreContextMut<'_, T>, (duration,): (u64,)| {
            let state = cx.data_mut();
            let when = state.calls().clock.current().saturating_add(duration);
            subscribe_until(state, when)
        },
    )?;

    let mut random = linker.instance(&format!("wasi:random/random@{WASI_VERSION}"))?;
    random.func_wrap(
        "get-random-bytes",
        |mut cx: StoreContextMut<'_, T>, (len,): (u64,)| {
            random_bytes(&mut cx, len, "get-random-bytes", |c| &mut c.secure)
        },
    )?;
    random.func_wrap(
        "get-random-u64",
        |mut cx: StoreContextMut<'_, T>, (): ()| random_u64(&mut cx, |c| &mut c.secure),
    )?;
    let mut insecure = linker.instance(&format!("wasi:random/insecure@{WASI_VERSION}"))?;
    insecure.func_wrap(
        "get-insecure-random-bytes",
        |mut cx: StoreContextMut<'_, T>, (len,): (u64,)| {
            random_bytes(&mut cx, len, "get-insecure-random-bytes", |c| {
                &mut c.insecure
            })
        },
    )?;
    insecure.func_wrap(
        "get-insecure-random-u64",
        |mut cx: StoreContextMut<'_, T>, (): ()| random_u64(&mut cx, |c| &mut c.insecure),
    )?;
    Ok(())
}

/// A pollable that is ready once the virtual clock reaches `when`, pushed to the guest's table.
fn subscribe_until<T: GuestState>(
    state: &mut T,
    when: u64,
) -> wasmtime::Result<(Resource<DynPollable>,)> {
    let clock = state.calls().clock.clone();
    let table = state.ctx().table;
    let deadline = table.push(VirtualDeadline { clock, when })?;
    Ok((subscribe(table, deadline)?,))
}

/// Takes `fuel` from the guest's budget before the host works for it; running out is the
/// ordinary out-of-fuel trap (deterministic).
pub(crate) fn charge<T>(cx: &mut StoreContextMut<'_, T>, fuel: u64) -> wasmtime::Result<()> {
    let left = cx.get_fuel()?;
    match left.checked_sub(fuel) {
        Some(rest) => cx.set_fuel(rest),
        None => {
            cx.set_fuel(0)?;
            Err(Trap::OutOfFuel.into())
        }
    }
}

fn random_bytes<T: GuestState>(
    cx: &mut StoreContextMut<'_, T>,
    len: u64,
    call: &str,
    rng: fn(&mut GuestCalls) -> &mut XofRng,
) -> wasmtime::Result<(Vec<u8>,)> {
    if len > MAX_RANDOM_BYTES_PER_CALL {
        let why =
            format!("{call} asked for {len} bytes; at most {MAX_RANDOM_BYTES_PER_CALL} per call");
        cx.data_mut().calls().refused = Some(why.clone());
        return Err(wasmtime::Error::msg(why));
    }
    charge(cx, len)?;
    let len = len as usize; // at most 1 MiB: fits
    let mut bytes = Vec::new();
    // A refusal of the host's allocator is a local fault (an error, not recorded as a limit).
    bytes.try_reserve_exact(len).map_err(|e| {
        wasmtime::Error::msg(format!("host out of memory for {len} random bytes: {e}"))
    })?;
    bytes.resize(len, 0);
    rng(cx.data_mut().calls()).fill(&mut bytes);
    Ok((bytes,))
}

fn random_u64<T: GuestState>(
    cx: &mut StoreContextMut<'_, T>,
    rng: fn(&mut GuestCalls) -> &mut XofRng,
) -> wasmtime::Result<(u64,)> {
    let mut b = [0u8; 8];
    rng(cx.data_mut().calls()).fill(&mut b);
    Ok((u64::from_le_bytes(b),))
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
/// that instantiate components themselves and for benchmarks. It holds the deterministic clocks
/// and random streams, but the host's linker also replaces the monotonic clock's subscriptions
/// (virtual sleeps) and the random calls (caps and fuel prices): with wasmtime-wasi's own linker
/// functions, a guest's sleeps are real.
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

/// The guest's monotonic clock: virtual time, in nanoseconds, shared by the clock calls and the
/// pollables they make. Reads step it by [`MONOTONIC_STEP_NANOS`]; waiting moves it forward to
/// the earliest deadline waited for (see [`VirtualDeadline`]). It saturates at `u64::MAX`.
#[derive(Clone, Default)]
struct VirtualClock(Arc<Mutex<ClockState>>);

#[derive(Default)]
struct ClockState {
    /// The time now.
    now: u64,
    /// The earliest deadline that a pollable not yet ready waits for.
    earliest: Option<u64>,
    /// Counts the clock's moves to a waited-for deadline.
    round: u64,
}

impl VirtualClock {
    fn state(&self) -> std::sync::MutexGuard<'_, ClockState> {
        // Only this call's store uses the clock: never contended, never poisoned by a panic that
        // could leave it half-updated (every update is a single assignment).
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The time now, then one step later (so that "wait until" loops end by fuel).
    fn read(&self) -> u64 {
        let mut state = self.state();
        let now = state.now;
        state.now = now.saturating_add(MONOTONIC_STEP_NANOS);
        now
    }

    /// The time now, without stepping.
    fn current(&self) -> u64 {
        self.state().now
    }

    #[cfg(test)]
    fn advance_to(&self, when: u64) {
        let mut state = self.state();
        state.now = state.now.max(when);
    }
}

impl HostMonotonicClock for VirtualClock {
    fn resolution(&self) -> u64 {
        MONOTONIC_STEP_NANOS
    }
    fn now(&self) -> u64 {
        self.read()
    }
}

/// A sleep on the virtual clock, until `when`.
///
/// Waiting never blocks: a pollable whose deadline has not come registers it and yields once,
/// so that every other pollable of the same `poll` can register too; then the clock moves to
/// the earliest registered deadline, and the pollables whose deadlines have come are ready.
/// `block` on one pollable moves the clock to its deadline; `poll` over several returns those
/// with the earliest deadline (and any already passed), like a real clock would, at once. The
/// order of events depends only on what the guest does, so the time it sees is the same on
/// every node.
struct VirtualDeadline {
    clock: VirtualClock,
    when: u64,
}

#[wasmtime_wasi::async_trait]
impl Pollable for VirtualDeadline {
    async fn ready(&mut self) {
        // The clock's round in which this future registered its deadline: seeing it unchanged
        // when polled again means every pollable of this poll had its turn since.
        let mut registered: Option<u64> = None;
        loop {
            {
                let mut state = self.clock.state();
                if registered == Some(state.round) {
                    if let Some(earliest) = state.earliest.take() {
                        state.now = state.now.max(earliest);
                    }
                    state.round += 1;
                }
                if state.now >= self.when {
                    return;
                }
                state.earliest = Some(state.earliest.map_or(self.when, |e| e.min(self.when)));
                registered = Some(state.round);
            }
            YieldOnce(false).await;
        }
    }
}

/// A future that is pending once (waking itself at once), then ready.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
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
    /// Bytes written and not yet paid for in fuel (see [`CappedOutput::take_unpaid`]).
    unpaid: AtomicU64,
}

impl CappedOutput {
    fn new(cap: usize) -> Self {
        Self(Arc::new(CappedInner {
            cap,
            kept: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
            unpaid: AtomicU64::new(0),
        }))
    }

    /// The bytes written since the last call, to be charged to the guest's fuel (one unit per
    /// byte) when the host call that wrote them returns.
    pub(crate) fn take_unpaid(&self) -> u64 {
        self.0.unpaid.swap(0, Ordering::Relaxed)
    }

    fn push(&self, bytes: &[u8]) {
        self.0
            .unpaid
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
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
    fn monotonic_clock_steps_jumps_and_saturates_and_wall_clock_is_frozen() {
        let clock = VirtualClock::default();
        assert_eq!(clock.now(), 0);
        assert_eq!(clock.now(), MONOTONIC_STEP_NANOS);
        clock.advance_to(5_000_000_000);
        assert_eq!(clock.now(), 5_000_000_000);
        clock.advance_to(1); // never backward
        assert_eq!(clock.current(), 5_000_000_000 + MONOTONIC_STEP_NANOS);
        clock.advance_to(u64::MAX);
        assert_eq!(clock.now(), u64::MAX);
        assert_eq!(clock.now(), u64::MAX, "saturates, never wraps");
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
