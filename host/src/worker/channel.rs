//! A duplex request/response channel between the host and one execution worker over shared
//! memory: a sealed memfd mapped by both processes, each side spinning briefly before it sleeps
//! on a (shared, not private) futex.
//!
//! A pipe or socket round trip costs ~50–65 µs here, more than a whole validation; a round trip
//! through shared memory while both sides spin costs well under a microsecond (see *Measured*).
//! Messages are opaque bytes (the caller serializes them).
//!
//! # Layout
//!
//! The memfd is exactly `MAP_BYTES` = 4 KiB + 2 × [`CHUNK_BYTES`] long:
//!
//! | offset       | what                                                                |
//! |--------------|---------------------------------------------------------------------|
//! | 0            | magic `u64` (`"PVFCHAN\0"`), layout version `u32`, padding to 128   |
//! | 128          | mailbox host→worker (128 bytes; its words on one cache line)        |
//! | 256          | mailbox worker→host (128 bytes)                                     |
//! | 384 … 4095   | unused                                                              |
//! | 4096         | data area host→worker, [`CHUNK_BYTES`]                              |
//! | 4096 + 64 KiB | data area worker→host, [`CHUNK_BYTES`]                             |
//!
//! A mailbox holds: `state` (`u32`: EMPTY = 0, FULL = 1; also the futex word), `reader_sleeping`
//! and `writer_sleeping` (`u32`, 0 or 1: "I am, or am about to be, asleep on `state`"), `flags`
//! (`u32`: FIRST = 1, MORE = 2), `chunk_len` and `total_len` (`u64`). Each mailbox starts on its
//! own 128-byte boundary, so the two directions never share a cache line (nor an adjacent-line
//! prefetch pair). The data areas are page aligned; only the pages a message touches use memory.
//! Every byte that is ever referenced is an atomic: the header is a `#[repr(C)]` struct of
//! atomics (padding included), the data areas are `[AtomicU64]`. Bytes are packed into words
//! little-endian, the last word of a chunk zero padded.
//!
//! # Protocol
//!
//! Each direction is a one-slot mailbox with one writer and one reader. To send a message the
//! writer cuts it into chunks of at most [`CHUNK_BYTES`] (an empty message is one empty chunk;
//! every chunk but the last is exactly [`CHUNK_BYTES`]). For each chunk it waits until `state` is
//! EMPTY, copies the chunk into the data area, writes `chunk_len`, `flags` (FIRST on the first
//! chunk, MORE on all but the last) and `total_len` (the whole message's length, read by the
//! receiver from the first chunk only), then publishes with a store of FULL and wakes the reader
//! if it sleeps. The reader waits for FULL, checks the words, copies `chunk_len` bytes out,
//! stores EMPTY and wakes the writer if it sleeps. The host sends on host→worker and receives on
//! worker→host; the worker the other way round. A fresh memfd is all zeros: both mailboxes EMPTY.
//!
//! Waiting (for FULL when receiving, for EMPTY when sending): first busy-wait for
//! [`WaitPolicy::spin`], loading `state` with Acquire; then store 1 into our sleeper word, re-load
//! `state`, and `futex::wait(state, not_ready_value, timeout = slice)`; after each wake, timeout
//! or interruption re-check `state`, then run the caller's check (an `Err` ends the wait with
//! [`ChannelError::Aborted`]); the sleeper word is cleared when the wait ends. Every loop is bounded
//! by the spin time or by the caller's check, never a pure unbounded spin.
//!
//! # Memory ordering: why no wakeup is lost
//!
//! The data and the `chunk_len`/`flags`/`total_len` words are written with Relaxed stores
//! *before* the state store, which is SeqCst (so at least Release), and read with Relaxed loads
//! *after* a load of the state that is at least Acquire: seeing FULL makes the chunk visible,
//! and seeing EMPTY makes the reader's copying-out happen before the writer's next copying-in.
//!
//! For the wakeup, the waiter does `sleeper := 1` (SeqCst) then `load state` (SeqCst), and the
//! side that changes the state does `state := new` (SeqCst) then `load sleeper` (SeqCst). In the
//! single total order of SeqCst operations one of the two stores comes first, so either the
//! waiter's load sees the new state (it does not sleep) or the changer's load sees `sleeper = 1`
//! (it calls `futex::wake`). In the second case the waiter may not yet be inside the kernel;
//! `FUTEX_WAIT` compares `state` with the expected not-ready value under the futex bucket lock
//! after queueing the waiter (with a full barrier, see the kernel's `futex/waitwake.c`), so it
//! either sees the new value and returns at once, or is queued before the wake looks for
//! waiters. The fast path — the peer is spinning and the sleeper word is 0 — makes no syscall.
//! The futex is not `FUTEX_PRIVATE`: the two sides map the memfd in different processes (or at
//! different addresses), and only a shared futex is keyed by the file page rather than by the
//! address. The `slice` timeout is a net for the caller's check, not a part of this argument.
//!
//! # A hostile peer
//!
//! The worker runs untrusted code; assume it writes any value to any word at any time. It
//! *cannot*: change the memfd's size (the host seals it against shrinking and growing before the
//! worker ever sees it, so no access of ours can fault with SIGBUS — punching a hole only reads
//! back as zeros); make us read or write outside the mapping (every length is read once, then
//! bounded: a chunk by [`CHUNK_BYTES`], a message by the receiver's `max_len` before any
//! allocation, which is fallible); make us panic (every state, flag and length is validated, an
//! invalid one gives [`ChannelError::Malformed`] or [`ChannelError::TooLarge`]); make us hang
//! (every wait ends by the caller's check); cause a data race in our process (all shared memory is
//! accessed through atomics). It *can*: send us arbitrary bytes (messages are untrusted input,
//! to be parsed as such), make a message's content change while we copy it (the result is just
//! other arbitrary bytes), withhold or garble answers (we time out or get `Malformed`), skip
//! waking us (we notice at the end of a slice), or make us issue needless `futex::wake` calls.
//! After any error the channel's state is unknown: the caller drops it (and the worker).
//!
//! # Spinning versus sleeping
//!
//! A futex wake and wait round trip costs ~40 µs (two context switches and the scheduler);
//! spinning a few tens of microseconds catches an answer that comes within that time for ~0.1–0.2
//! µs, at the price of burning a core while waiting. So a side spins for about as long as a
//! typical answer takes (a validation ~22 µs) and then sleeps, so that an idle worker or a host
//! waiting on a slow job costs nothing. `spin = 0` sleeps at once (right for a host that waits
//! for a job known to be long, or when cores are scarce).
//!
//! # Measured
//!
//! Round trip of a 64-byte message between two threads (two mappings of one memfd) on this
//! 2-vCPU VM, `cargo test --release -p pvf-host --lib channel::tests::rtt -- --ignored
//! --nocapture` (send + receive on each side, including the receivers' `Vec` allocations and
//! the timing itself), four runs on an otherwise idle machine: with `spin` = 50 µs, median
//! 0.24–0.26 µs (p99 0.30–0.36 µs, at most 2 sleeps in 50,000 round trips); with `spin` = 0,
//! median 44–51 µs (p10 30–39 µs), nearly every wait a futex sleep. While another process kept
//! both vCPUs busy the picture changed: spinning lost to preemption (median up to 55 µs, p90
//! ~108 µs = two spins that ran out), while `spin` = 0 fell to a ~4.6 µs median (no idle vCPU to
//! wake). Spinning only pays when the peer has a core of its own.

// Used by the execution workers.
#![allow(dead_code)]

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};
use rustix::thread::futex;

/// Bytes of the data area of each direction (one chunk); a message longer than this is sent in
/// several chunks. 64 KiB: a validation's request and answer fit in one chunk, a 10 MiB block
/// takes 160 hand-overs of well under a microsecond each, and the whole memfd (132 KiB) stays
/// small — it counts against the host's `RLIMIT_FSIZE`, like any file it writes.
pub(crate) const CHUNK_BYTES: usize = 64 << 10;
/// The data area of one direction in 64-bit words.
const CHUNK_WORDS: usize = CHUNK_BYTES / 8;
/// Bytes before the data areas: the header page.
const HEADER_BYTES: usize = 4096;
/// The memfd's exact size.
const MAP_BYTES: usize = HEADER_BYTES + 2 * CHUNK_BYTES;
/// The first word of the header: `"PVFCHAN\0"`.
const MAGIC: u64 = u64::from_le_bytes(*b"PVFCHAN\0");
/// The layout's version, checked by the worker.
const VERSION: u32 = 1;

/// Mailbox state: no chunk in the data area; the writer may fill it.
const EMPTY: u32 = 0;
/// Mailbox state: a chunk is in the data area; the reader may take it.
const FULL: u32 = 1;
/// Chunk flag: this is the first chunk of a message (`total_len` is valid).
const FLAG_FIRST: u32 = 1;
/// Chunk flag: more chunks of this message follow.
const FLAG_MORE: u32 = 2;
/// The mailbox the host writes and the worker reads.
const TO_WORKER: usize = 0;
/// The mailbox the worker writes and the host reads.
const TO_HOST: usize = 1;
/// How many spin iterations between two looks at the clock.
const SPIN_BATCH: u32 = 32;
/// `futex::wake` count meaning "all waiters" (`INT_MAX`).
const WAKE_ALL: u32 = 0x7fff_ffff;

const _: () = assert!(CHUNK_BYTES.is_multiple_of(8));
const _: () = assert!(size_of::<Header>() <= HEADER_BYTES);
const _: () = assert!(size_of::<Mailbox>() == 128);
const _: () = assert!(std::mem::offset_of!(Header, mailboxes) == 128);

/// One direction's control words, on its own 128-byte block of the header page.
#[repr(C)]
struct Mailbox {
    /// EMPTY or FULL; the futex word both the reader and the writer wait on.
    state: AtomicU32,
    /// 1 while the reader is (about to be) asleep waiting for FULL.
    reader_sleeping: AtomicU32,
    /// 1 while the writer is (about to be) asleep waiting for EMPTY.
    writer_sleeping: AtomicU32,
    /// FLAG_FIRST and FLAG_MORE of the chunk in the data area.
    flags: AtomicU32,
    /// Bytes of the chunk in the data area.
    chunk_len: AtomicU64,
    /// Bytes of the whole message (valid in its first chunk).
    total_len: AtomicU64,
    /// Fills the block (atomics, so that every byte the view covers is one).
    _pad: [AtomicU64; 12],
}

/// The start of the header page.
#[repr(C)]
struct Header {
    /// [`MAGIC`].
    magic: AtomicU64,
    /// [`VERSION`].
    version: AtomicU32,
    /// Fills the first two cache lines (atomics, so that every byte the view covers is one).
    _pad: [AtomicU32; 29],
    /// Indexed by [`TO_WORKER`] and [`TO_HOST`].
    mailboxes: [Mailbox; 2],
}

/// How a side waits for its peer: spin first, then sleep on the futex in slices, calling the
/// caller's check between slices.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WaitPolicy {
    /// How long to busy-wait (with `std::hint::spin_loop`) before sleeping. Zero: sleep at once.
    pub(crate) spin: Duration,
    /// The longest single futex sleep; after each, the caller's check runs (e.g. is the peer
    /// alive? past the deadline?).
    pub(crate) slice: Duration,
}

/// Why a channel operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChannelError {
    /// Creating or mapping the shared memory failed (or, never in practice, a futex call).
    #[error("channel shared memory: {0}")]
    Io(#[from] std::io::Error),
    /// The peer announced a message longer than the receiver accepts.
    #[error("the peer announced a message of {len} bytes, over the limit of {limit}")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The receiver's limit.
        limit: usize,
    },
    /// Memory for the message could not be had.
    #[error("no memory for a message of {0} bytes")]
    NoMemory(usize),
    /// The shared state makes no sense (a state value, chunk length or flag out of range): a
    /// broken or hostile peer.
    #[error("malformed channel state: {0}")]
    Malformed(String),
    /// The caller's check ended the wait (its message).
    #[error("{0}")]
    Aborted(String),
}

/// Which end of the channel this process holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// Made the channel with [`Channel::create`]; sends host→worker.
    Host,
    /// Mapped it with [`Channel::open`]; sends worker→host.
    Worker,
}

/// One duplex channel over a sealed memfd: the host→worker direction and the worker→host
/// direction, each a mailbox holding one chunk.
pub(crate) struct Channel {
    /// The memfd (kept open: the host hands it to the worker; the worker may report it).
    fd: OwnedFd,
    /// Which end this is.
    side: Side,
    /// The header at offset 0 of the mapping. `'static` only in name: it never leaves `self`
    /// with a longer lifetime than `&self`, and `Drop` unmaps it last.
    header: &'static Header,
    /// The two data areas, indexed by [`TO_WORKER`] and [`TO_HOST`] (same caveat as `header`).
    areas: [&'static [AtomicU64]; 2],
    /// Keeps two threads of this process from interleaving the chunks of their messages.
    send_lock: Mutex<()>,
    /// Keeps two threads of this process from taking each other's chunks.
    recv_lock: Mutex<()>,
    /// What the waits did, for the tests.
    #[cfg(test)]
    stats: Stats,
}

/// Counters of the waits' sleeping, for the tests.
#[cfg(test)]
#[derive(Default)]
struct Stats {
    /// Futex waits entered.
    sleeps: AtomicU64,
    /// Futex waits that ended by their timeout.
    timeouts: AtomicU64,
}

/// Converts a rustix error.
fn io(errno: Errno) -> ChannelError {
    ChannelError::Io(errno.into())
}

/// Takes a process-local lock; a poisoned lock is still a lock (it guards no data).
fn lock(mutex: &Mutex<()>) -> MutexGuard<'_, ()> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `state` holds `want`; an invalid state value is the peer's fault.
fn is(state: &AtomicU32, want: u32, order: Ordering) -> Result<bool, ChannelError> {
    match state.load(order) {
        s if s == want => Ok(true),
        EMPTY | FULL => Ok(false),
        s => Err(ChannelError::Malformed(format!("mailbox state {s}"))),
    }
}

/// A futex timeout of `d`.
fn timespec(d: Duration) -> futex::Timespec {
    futex::Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

/// Maps `fd` (already known to be `MAP_BYTES` long and sealed against shrinking) shared, and
/// builds the views of the mapping.
fn map(fd: BorrowedFd<'_>) -> Result<(&'static Header, [&'static [AtomicU64]; 2]), ChannelError> {
    #[allow(unsafe_code)]
    // SAFETY: a null address hint lets the kernel place a new mapping where nothing else is
    // mapped, so no existing Rust object is aliased or replaced; the length and protection are
    // those of a plain shared read-write mapping of a file whose size is at least `MAP_BYTES`.
    let base = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            MAP_BYTES,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            fd,
            0,
        )
    }
    .map_err(io)?;
    let base = base.cast::<u8>();
    #[allow(unsafe_code)]
    // SAFETY: the mapping is `MAP_BYTES` long, read-write, page aligned, and mapped until
    // `Channel::drop`, the last use of these views (lent out only for `&self`). The header
    // (≤ 4096 bytes, align 8) is in the first page; the two data areas of `CHUNK_WORDS` words
    // follow at offset 4096 and end at `MAP_BYTES`: in bounds, aligned, disjoint. Every byte a
    // view covers is an `AtomicU32`/`AtomicU64` (padding too): any bit pattern is valid and
    // concurrent writes by the other mapping are allowed through shared references; nothing
    // touches the mapping but these atomics, never at mixed sizes. The file is sealed against
    // shrinking (checked before mapping), so no access can fault.
    let views = unsafe {
        let header = &*base.cast::<Header>();
        let data = base.add(HEADER_BYTES).cast::<AtomicU64>();
        let to_worker = std::slice::from_raw_parts(data, CHUNK_WORDS);
        let to_host = std::slice::from_raw_parts(data.add(CHUNK_WORDS), CHUNK_WORDS);
        (header, [to_worker, to_host])
    };
    Ok(views)
}

/// Copies `bytes` (at most `CHUNK_BYTES`) into the data area, word by word, little-endian, the
/// last word zero padded.
fn copy_in(area: &[AtomicU64], bytes: &[u8]) {
    let (words, tail) = bytes.as_chunks::<8>();
    for (slot, word) in area.iter().zip(words) {
        slot.store(u64::from_le_bytes(*word), Ordering::Relaxed);
    }
    if !tail.is_empty() {
        let mut last = [0u8; 8];
        last.iter_mut().zip(tail).for_each(|(d, s)| *d = *s);
        if let Some(slot) = area.get(words.len()) {
            slot.store(u64::from_le_bytes(last), Ordering::Relaxed);
        }
    }
}

/// Appends the first `len` bytes (at most `CHUNK_BYTES`) of the data area to `out`, whose
/// capacity already holds them.
fn copy_out(area: &[AtomicU64], len: usize, out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + len, 0);
    let (words, tail) = out[start..].as_chunks_mut::<8>();
    let full = words.len();
    for (word, slot) in words.iter_mut().zip(area) {
        *word = slot.load(Ordering::Relaxed).to_le_bytes();
    }
    if !tail.is_empty()
        && let Some(slot) = area.get(full)
    {
        let last = slot.load(Ordering::Relaxed).to_le_bytes();
        tail.iter_mut().zip(last).for_each(|(d, s)| *d = s);
    }
}

impl Channel {
    /// Host side: creates the memfd (CLOEXEC, MFD_ALLOW_SEALING), sizes it, seals it against
    /// shrinking and growing (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL — a peer that could
    /// shrink it would make our next access SIGBUS), maps it shared, and writes a header (a magic
    /// number and a layout version) the worker checks.
    pub(crate) fn create() -> Result<Channel, ChannelError> {
        let fd = rustix::fs::memfd_create(
            "pvf-channel",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(io)?;
        rustix::fs::ftruncate(&fd, MAP_BYTES as u64).map_err(io)?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .map_err(io)?;
        let channel = Channel::new(fd, Side::Host)?;
        channel.header.version.store(VERSION, Ordering::Relaxed);
        channel.header.magic.store(MAGIC, Ordering::Release);
        Ok(channel)
    }

    /// Worker side: maps an inherited memfd made by `create`, after checking (fstat) that its
    /// size is exactly the layout's and that the header matches; otherwise an error, never a
    /// panic or SIGBUS.
    pub(crate) fn open(fd: OwnedFd) -> Result<Channel, ChannelError> {
        let size = rustix::fs::fstat(&fd).map_err(io)?.st_size;
        if u64::try_from(size).ok() != Some(MAP_BYTES as u64) {
            return Err(ChannelError::Malformed(format!(
                "the channel's memfd has {size} bytes, not {MAP_BYTES}"
            )));
        }
        // Without these seals the size just checked could change under us (SIGBUS).
        let needed = SealFlags::SHRINK | SealFlags::GROW;
        let sealed = rustix::fs::fcntl_get_seals(&fd).is_ok_and(|seals| seals.contains(needed));
        if !sealed {
            return Err(ChannelError::Malformed(
                "the channel's memfd is not sealed against shrinking and growing".into(),
            ));
        }
        let channel = Channel::new(fd, Side::Worker)?;
        let magic = channel.header.magic.load(Ordering::Acquire);
        let version = channel.header.version.load(Ordering::Relaxed);
        if magic != MAGIC || version != VERSION {
            return Err(ChannelError::Malformed(format!(
                "channel header {magic:#018x} version {version}, expected {MAGIC:#018x} \
                 version {VERSION}"
            )));
        }
        Ok(channel)
    }

    /// Maps `fd` for `side`.
    fn new(fd: OwnedFd, side: Side) -> Result<Channel, ChannelError> {
        let (header, areas) = map(fd.as_fd())?;
        Ok(Channel {
            fd,
            side,
            header,
            areas,
            send_lock: Mutex::new(()),
            recv_lock: Mutex::new(()),
            #[cfg(test)]
            stats: Stats::default(),
        })
    }

    /// The memfd, for the host to hand to the worker process (the caller dup2s it in the child).
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Which side this is.
    pub(crate) fn side(&self) -> Side {
        self.side
    }

    /// The direction this side writes.
    fn outbound(&self) -> usize {
        match self.side {
            Side::Host => TO_WORKER,
            Side::Worker => TO_HOST,
        }
    }

    /// The direction this side reads.
    fn inbound(&self) -> usize {
        match self.side {
            Side::Host => TO_HOST,
            Side::Worker => TO_WORKER,
        }
    }

    /// Sends one message of any length (it may be empty) in chunks of at most CHUNK_BYTES: for
    /// each chunk, wait until our outbound mailbox is empty (the peer took the previous chunk),
    /// copy the chunk in, set its length and a "more chunks follow" flag plus the total message
    /// length in the first chunk, publish with a Release store of the state, and wake the peer
    /// only if it is asleep.
    pub(crate) fn send(
        &self,
        msg: &[u8],
        policy: &WaitPolicy,
        check: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<(), ChannelError> {
        let _guard = lock(&self.send_lock);
        let dir = self.outbound();
        let mailbox = &self.header.mailboxes[dir];
        let area = self.areas[dir];
        let mut rest = msg;
        let mut flags = FLAG_FIRST;
        loop {
            let (chunk, after) = rest.split_at(rest.len().min(CHUNK_BYTES));
            if !after.is_empty() {
                flags |= FLAG_MORE;
            }
            self.wait_for(mailbox, EMPTY, &mailbox.writer_sleeping, policy, check)?;
            copy_in(area, chunk);
            mailbox
                .chunk_len
                .store(chunk.len() as u64, Ordering::Relaxed);
            mailbox.total_len.store(msg.len() as u64, Ordering::Relaxed);
            mailbox.flags.store(flags, Ordering::Relaxed);
            Self::publish(mailbox, FULL, &mailbox.reader_sleeping)?;
            if after.is_empty() {
                return Ok(());
            }
            rest = after;
            flags = 0;
        }
    }

    /// Receives one message, refusing (TooLarge) a message whose announced total length is over
    /// `max_len` before allocating; allocates fallibly; checks that the chunks add up to the
    /// announced total exactly (else Malformed).
    pub(crate) fn recv(
        &self,
        max_len: usize,
        policy: &WaitPolicy,
        check: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<Vec<u8>, ChannelError> {
        let _guard = lock(&self.recv_lock);
        let dir = self.inbound();
        let mailbox = &self.header.mailboxes[dir];
        let area = self.areas[dir];
        let mut out = Vec::new();
        let mut total = 0usize;
        let mut first = true;
        loop {
            self.wait_for(mailbox, FULL, &mailbox.reader_sleeping, policy, check)?;
            // Each word is read once; only these snapshots are used.
            let flags = mailbox.flags.load(Ordering::Relaxed);
            let chunk_len = mailbox.chunk_len.load(Ordering::Relaxed);
            if flags & !(FLAG_FIRST | FLAG_MORE) != 0 {
                return Err(ChannelError::Malformed(format!("chunk flags {flags:#x}")));
            }
            if (flags & FLAG_FIRST != 0) != first {
                return Err(ChannelError::Malformed(if first {
                    "a message's first chunk is not marked first".into()
                } else {
                    "a message's later chunk is marked first".into()
                }));
            }
            if first {
                let announced = mailbox.total_len.load(Ordering::Relaxed);
                total = match usize::try_from(announced) {
                    Ok(len) if len <= max_len => len,
                    _ => {
                        return Err(ChannelError::TooLarge {
                            len: announced,
                            limit: max_len,
                        });
                    }
                };
                out.try_reserve_exact(total)
                    .map_err(|_| ChannelError::NoMemory(total))?;
            }
            let more = flags & FLAG_MORE != 0;
            let remaining = total - out.len();
            let len = match usize::try_from(chunk_len) {
                Ok(len) if len <= CHUNK_BYTES => len,
                _ => {
                    return Err(ChannelError::Malformed(format!(
                        "a chunk of {chunk_len} bytes, over {CHUNK_BYTES}"
                    )));
                }
            };
            if more && (len != CHUNK_BYTES || len >= remaining) {
                return Err(ChannelError::Malformed(format!(
                    "a chunk of {len} bytes followed by more, with {remaining} of {total} left"
                )));
            }
            if !more && len != remaining {
                return Err(ChannelError::Malformed(format!(
                    "a last chunk of {len} bytes, with {remaining} of {total} left"
                )));
            }
            copy_out(area, len, &mut out);
            Self::publish(mailbox, EMPTY, &mailbox.writer_sleeping)?;
            if !more {
                return Ok(out);
            }
            first = false;
        }
    }

    /// Stores the mailbox's new state and wakes the peer if its sleeper word says it sleeps.
    fn publish(
        mailbox: &Mailbox,
        state: u32,
        peer_sleeping: &AtomicU32,
    ) -> Result<(), ChannelError> {
        mailbox.state.store(state, Ordering::SeqCst);
        if peer_sleeping.load(Ordering::SeqCst) != 0 {
            futex::wake(&mailbox.state, futex::Flags::empty(), WAKE_ALL).map_err(io)?;
        }
        Ok(())
    }

    /// Waits until the mailbox's state is `want`: spins for `policy.spin`, then sleeps on the
    /// futex in slices with `sleeper` set, running `check` after each slice.
    fn wait_for(
        &self,
        mailbox: &Mailbox,
        want: u32,
        sleeper: &AtomicU32,
        policy: &WaitPolicy,
        check: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<(), ChannelError> {
        if is(&mailbox.state, want, Ordering::Acquire)? {
            return Ok(());
        }
        if !policy.spin.is_zero() {
            let start = Instant::now();
            loop {
                for _ in 0..SPIN_BATCH {
                    std::hint::spin_loop();
                    if is(&mailbox.state, want, Ordering::Acquire)? {
                        return Ok(());
                    }
                }
                if start.elapsed() >= policy.spin {
                    break;
                }
            }
        }
        sleeper.store(1, Ordering::SeqCst);
        let result = self.sleep_until(mailbox, want, policy.slice, check);
        sleeper.store(0, Ordering::Relaxed);
        result
    }

    /// The sleeping part of [`Channel::wait_for`], with the sleeper word already set.
    fn sleep_until(
        &self,
        mailbox: &Mailbox,
        want: u32,
        slice: Duration,
        check: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<(), ChannelError> {
        let not_ready = if want == FULL { EMPTY } else { FULL };
        let timeout = timespec(slice);
        loop {
            // SeqCst: ordered after our store of the sleeper word (see the module doc).
            if is(&mailbox.state, want, Ordering::SeqCst)? {
                return Ok(());
            }
            #[cfg(test)]
            self.stats.sleeps.fetch_add(1, Ordering::Relaxed);
            match futex::wait(
                &mailbox.state,
                futex::Flags::empty(),
                not_ready,
                Some(&timeout),
            ) {
                Ok(()) | Err(Errno::AGAIN | Errno::INTR) => {}
                Err(Errno::TIMEDOUT) => {
                    #[cfg(test)]
                    self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => return Err(io(e)),
            }
            if is(&mailbox.state, want, Ordering::Acquire)? {
                return Ok(());
            }
            check().map_err(ChannelError::Aborted)?;
        }
    }
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("fd", &self.fd)
            .field("side", &self.side)
            .finish_non_exhaustive()
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        let base = std::ptr::from_ref(self.header)
            .cast_mut()
            .cast::<std::ffi::c_void>();
        #[allow(unsafe_code)]
        // SAFETY: `base` is the start of the `MAP_BYTES` mapping made in `map` (the header is at
        // offset 0), unmapped exactly once, here. The views into it (`header`, `areas`) are
        // private to this `Channel` and lent out only for the lifetime of `&self`, so no
        // reference to the mapping outlives this point, and nothing uses them afterwards.
        let result = unsafe { rustix::mm::munmap(base, MAP_BYTES) };
        // munmap of a mapping we made cannot fail; if it did, the memory just stays mapped.
        let _ = result;
    }
}

#[cfg(test)]
impl Channel {
    /// A hostile writer: stores raw control words into this side's outbound mailbox, `state`
    /// last, and wakes the reader.
    fn raw_send(&self, state: u32, flags: u32, chunk_len: u64, total_len: u64) {
        let mailbox = &self.header.mailboxes[self.outbound()];
        mailbox.flags.store(flags, Ordering::Relaxed);
        mailbox.chunk_len.store(chunk_len, Ordering::Relaxed);
        mailbox.total_len.store(total_len, Ordering::Relaxed);
        Self::publish(mailbox, state, &mailbox.reader_sleeping).unwrap();
    }

    /// The state of this side's outbound mailbox.
    fn outbound_state(&self) -> u32 {
        self.header.mailboxes[self.outbound()]
            .state
            .load(Ordering::SeqCst)
    }

    /// Whether the reader of this side's outbound mailbox says it sleeps.
    fn peer_reader_sleeping(&self) -> bool {
        self.header.mailboxes[self.outbound()]
            .reader_sleeping
            .load(Ordering::SeqCst)
            != 0
    }

    /// Whether the writer of this side's inbound mailbox says it sleeps.
    fn peer_writer_sleeping(&self) -> bool {
        self.header.mailboxes[self.inbound()]
            .writer_sleeping
            .load(Ordering::SeqCst)
            != 0
    }

    /// Overwrites the header's magic and version.
    fn set_header(&self, magic: u64, version: u32) {
        self.header.magic.store(magic, Ordering::SeqCst);
        self.header.version.store(version, Ordering::SeqCst);
    }

    /// The address of this mapping.
    fn base_addr(&self) -> usize {
        std::ptr::from_ref(self.header).addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spins a little, then sleeps in short slices.
    const FAST: WaitPolicy = WaitPolicy {
        spin: Duration::from_micros(50),
        slice: Duration::from_millis(10),
    };
    /// Sleeps at once.
    const SLEEPY: WaitPolicy = WaitPolicy {
        spin: Duration::ZERO,
        slice: Duration::from_millis(10),
    };
    /// Sleeps at once, in slices so long that a lost wakeup would show as a timeout.
    const LONG: WaitPolicy = WaitPolicy {
        spin: Duration::ZERO,
        slice: Duration::from_secs(20),
    };
    /// Far beyond what any test needs.
    const DEADLINE: Duration = Duration::from_secs(60);

    /// A check that aborts after `after`.
    fn deadline(after: Duration) -> impl FnMut() -> Result<(), String> {
        let end = Instant::now() + after;
        move || {
            if Instant::now() > end {
                Err("test deadline passed".into())
            } else {
                Ok(())
            }
        }
    }

    /// A host channel and a worker channel mapping the same memfd (a dup of it).
    fn pair() -> (Channel, Channel) {
        let host = Channel::create().unwrap();
        let fd = host.fd().try_clone_to_owned().unwrap();
        let worker = Channel::open(fd).unwrap();
        assert_eq!(host.side(), Side::Host);
        assert_eq!(worker.side(), Side::Worker);
        (host, worker)
    }

    /// `len` pseudo-random bytes from `seed` (xorshift64*).
    fn pattern(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect()
    }

    /// A sealed memfd of `size` bytes holding `header` at offset 0, as `create` would not make it.
    fn memfd(size: u64, header: &[u8], seal: bool) -> OwnedFd {
        let fd = rustix::fs::memfd_create(
            "pvf-channel-test",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .unwrap();
        rustix::fs::ftruncate(&fd, size).unwrap();
        assert_eq!(rustix::io::pwrite(&fd, header, 0).unwrap(), header.len());
        if seal {
            rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW).unwrap();
        }
        fd
    }

    fn malformed<T: std::fmt::Debug>(result: Result<T, ChannelError>) -> String {
        match result {
            Err(ChannelError::Malformed(why)) => why,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn channel_is_send_and_sync() {
        fn both<T: Send + Sync>() {}
        both::<Channel>();
    }

    #[test]
    fn ping_pong_small_messages() {
        const ROUNDS: usize = 10_000;
        let (host, worker) = pair();
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut check = deadline(DEADLINE);
                for _ in 0..ROUNDS {
                    let mut msg = worker.recv(64, &FAST, &mut check).unwrap();
                    msg.iter_mut().for_each(|b| *b = b.wrapping_add(1));
                    msg.reverse();
                    worker.send(&msg, &FAST, &mut check).unwrap();
                }
            });
            let mut check = deadline(DEADLINE);
            for i in 0..ROUNDS {
                // Lengths 0..=40: empty, multiples of 8 and not.
                let msg = pattern(i as u64, i % 41);
                host.send(&msg, &FAST, &mut check).unwrap();
                let answer = host.recv(64, &FAST, &mut check).unwrap();
                let mut expected: Vec<u8> = msg.iter().map(|b| b.wrapping_add(1)).collect();
                expected.reverse();
                assert_eq!(answer, expected, "round {i}");
            }
        });
    }

    #[test]
    fn large_messages_both_ways() {
        let sizes = [CHUNK_BYTES, CHUNK_BYTES + 1, CHUNK_BYTES * 11 / 2];
        let (host, worker) = pair();
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut check = deadline(DEADLINE);
                for (i, &len) in sizes.iter().enumerate() {
                    let got = worker.recv(len, &FAST, &mut check).unwrap();
                    assert!(got == pattern(i as u64, len), "host→worker {len} bytes");
                    worker
                        .send(&pattern(100 + i as u64, len), &FAST, &mut check)
                        .unwrap();
                }
            });
            let mut check = deadline(DEADLINE);
            for (i, &len) in sizes.iter().enumerate() {
                host.send(&pattern(i as u64, len), &FAST, &mut check)
                    .unwrap();
                let got = host.recv(len, &FAST, &mut check).unwrap();
                assert!(
                    got == pattern(100 + i as u64, len),
                    "worker→host {len} bytes"
                );
            }
        });
    }

    #[test]
    fn too_large_is_refused_before_allocating() {
        let (host, worker) = pair();
        let mut check = deadline(DEADLINE);
        worker.send(&[7; 100], &FAST, &mut check).unwrap();
        match host.recv(99, &FAST, &mut check) {
            Err(ChannelError::TooLarge {
                len: 100,
                limit: 99,
            }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // An announced terabyte: refused by the limit, not by a failed allocation.
        let (host, worker) = pair();
        worker.raw_send(FULL, FLAG_FIRST | FLAG_MORE, CHUNK_BYTES as u64, 1 << 40);
        match host.recv(1 << 20, &FAST, &mut check) {
            Err(ChannelError::TooLarge {
                len: 0x100_0000_0000,
                limit: 0x10_0000,
            }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn hostile_peer_gives_errors_not_panics() {
        let mut check = deadline(DEADLINE);

        // A state out of range, seen by the receiver and by a sender.
        let (host, worker) = pair();
        worker.raw_send(7, FLAG_FIRST, 0, 0);
        assert!(malformed(host.recv(1 << 20, &FAST, &mut check)).contains("state 7"));
        host.raw_send(7, 0, 0, 0);
        malformed(host.send(b"x", &FAST, &mut check));

        // A chunk longer than the data area.
        let (host, worker) = pair();
        worker.raw_send(
            FULL,
            FLAG_FIRST,
            CHUNK_BYTES as u64 + 1,
            CHUNK_BYTES as u64 + 1,
        );
        malformed(host.recv(usize::MAX, &FAST, &mut check));
        let (host, worker) = pair();
        worker.raw_send(FULL, FLAG_FIRST, u64::MAX, 10);
        malformed(host.recv(usize::MAX, &FAST, &mut check));

        // A single chunk longer, or shorter, than the announced total.
        let (host, worker) = pair();
        worker.raw_send(FULL, FLAG_FIRST, 10, 5);
        malformed(host.recv(1 << 20, &FAST, &mut check));
        let (host, worker) = pair();
        worker.raw_send(FULL, FLAG_FIRST, 5, 10);
        malformed(host.recv(1 << 20, &FAST, &mut check));

        // Unknown flags; a first chunk not marked first; a non-final chunk that is not full.
        let (host, worker) = pair();
        worker.raw_send(FULL, FLAG_FIRST | 4, 0, 0);
        malformed(host.recv(1 << 20, &FAST, &mut check));
        let (host, worker) = pair();
        worker.raw_send(FULL, 0, 0, 0);
        malformed(host.recv(1 << 20, &FAST, &mut check));
        let (host, worker) = pair();
        worker.raw_send(FULL, FLAG_FIRST | FLAG_MORE, 8, 1 << 21);
        malformed(host.recv(1 << 22, &FAST, &mut check));

        // Two chunks whose sum exceeds the total: a full first chunk of a total of
        // CHUNK_BYTES + 10, then a "last" chunk of 100 bytes. And a later chunk marked first.
        for (second_flags, second_len) in [(0, 100), (FLAG_FIRST, 10)] {
            let (host, worker) = pair();
            std::thread::scope(|s| {
                s.spawn(|| {
                    let mut check = deadline(DEADLINE);
                    let total = CHUNK_BYTES as u64 + 10;
                    worker.raw_send(FULL, FLAG_FIRST | FLAG_MORE, CHUNK_BYTES as u64, total);
                    // The host takes the first chunk (state EMPTY), then gets the second.
                    while worker.outbound_state() != EMPTY {
                        check().unwrap();
                        std::thread::yield_now();
                    }
                    worker.raw_send(FULL, second_flags, second_len, total);
                });
                malformed(host.recv(1 << 22, &FAST, &mut check));
            });
        }

        // A total of u64::MAX: over any limit; with no limit, an allocation that fails cleanly.
        let (host, worker) = pair();
        worker.raw_send(FULL, FLAG_FIRST | FLAG_MORE, CHUNK_BYTES as u64, u64::MAX);
        match host.recv(1 << 30, &FAST, &mut check) {
            Err(ChannelError::TooLarge { len: u64::MAX, .. }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
        match host.recv(usize::MAX, &FAST, &mut check) {
            Err(ChannelError::NoMemory(_)) => {}
            other => panic!("expected NoMemory, got {other:?}"),
        }
    }

    #[test]
    fn open_refuses_foreign_memfds() {
        let header = {
            let mut h = MAGIC.to_le_bytes().to_vec();
            h.extend_from_slice(&VERSION.to_le_bytes());
            h
        };
        let size = MAP_BYTES as u64;
        // Wrong sizes (a small one would SIGBUS at the data areas if it were mapped).
        for bad in [0, 4096, size - 1, size + 1] {
            let why = malformed(Channel::open(memfd(bad, &header, true)));
            assert!(why.contains("bytes"), "{why}");
        }
        // The right size but not sealed: it could shrink under us.
        assert!(malformed(Channel::open(memfd(size, &header, false))).contains("sealed"));
        // The right size, sealed, with a valid header: accepted (the helper itself is right).
        Channel::open(memfd(size, &header, true)).unwrap();
        // A wrong magic, a wrong version, a header of zeros.
        let host = Channel::create().unwrap();
        host.set_header(MAGIC ^ 1, VERSION);
        malformed(Channel::open(host.fd().try_clone_to_owned().unwrap()));
        host.set_header(MAGIC, VERSION + 1);
        malformed(Channel::open(host.fd().try_clone_to_owned().unwrap()));
        malformed(Channel::open(memfd(size, &[], true)));
        // Not a memfd at all.
        let (read, _write) = rustix::pipe::pipe().unwrap();
        malformed(Channel::open(read));
    }

    #[test]
    fn check_aborts_an_unanswered_wait() {
        let policy = WaitPolicy {
            spin: Duration::ZERO,
            slice: Duration::from_millis(1),
        };
        let (host, _worker) = pair();
        let mut calls = 0;
        let mut check = || {
            calls += 1;
            if calls == 5 {
                Err("the worker is gone".to_string())
            } else {
                Ok(())
            }
        };
        match host.recv(1024, &policy, &mut check) {
            Err(ChannelError::Aborted(why)) => assert_eq!(why, "the worker is gone"),
            other => panic!("expected Aborted, got {other:?}"),
        }
        assert_eq!(calls, 5);
        // A sender whose mailbox nobody empties.
        let mut never = deadline(DEADLINE);
        host.send(b"first", &policy, &mut never).unwrap();
        let mut abort = || Err("enough".to_string());
        match host.send(b"second", &policy, &mut abort) {
            Err(ChannelError::Aborted(why)) => assert_eq!(why, "enough"),
            other => panic!("expected Aborted, got {other:?}"),
        }
    }

    #[test]
    fn a_sleeping_receiver_is_woken() {
        let (host, worker) = pair();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                host.send(b"wake up", &SLEEPY, &mut deadline(DEADLINE))
                    .unwrap();
            });
            let got = worker.recv(64, &SLEEPY, &mut deadline(DEADLINE)).unwrap();
            assert_eq!(got, b"wake up");
        });
    }

    /// The two ends are two mappings of the memfd at different addresses, as in two processes:
    /// a private futex (keyed by address) would never be woken, and each wait would end by its
    /// 20-second timeout instead.
    #[test]
    fn futex_wakes_across_mappings() {
        let (host, worker) = pair();
        assert_ne!(host.base_addr(), worker.base_addr());
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut check = deadline(DEADLINE);
                // The worker's receive sleeps until the host, seeing it asleep, sends.
                let got = worker.recv(64, &LONG, &mut check).unwrap();
                assert_eq!(got, b"one");
                // The host's second send sleeps on a full mailbox until the worker takes the
                // first message.
                while !worker.peer_writer_sleeping() {
                    check().unwrap();
                    std::thread::sleep(Duration::from_millis(1));
                }
                std::thread::sleep(Duration::from_millis(20));
                assert_eq!(worker.recv(64, &LONG, &mut check).unwrap(), b"two");
                assert_eq!(worker.recv(64, &LONG, &mut check).unwrap(), b"three");
                worker.send(b"done", &LONG, &mut check).unwrap();
            });
            let mut check = deadline(DEADLINE);
            while !host.peer_reader_sleeping() {
                check().unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(20));
            host.send(b"one", &LONG, &mut check).unwrap();
            host.send(b"two", &LONG, &mut check).unwrap();
            host.send(b"three", &LONG, &mut check).unwrap();
            assert_eq!(host.recv(64, &LONG, &mut check).unwrap(), b"done");
        });
        assert_eq!(host.stats.timeouts.load(Ordering::Relaxed), 0);
        assert_eq!(worker.stats.timeouts.load(Ordering::Relaxed), 0);
        assert!(host.stats.sleeps.load(Ordering::Relaxed) > 0);
        assert!(worker.stats.sleeps.load(Ordering::Relaxed) > 0);
    }

    /// Median round trip of a 64-byte message, spinning and sleeping. Run it with
    /// `cargo test --release -p pvf-host --lib channel::tests::rtt -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a test"]
    fn rtt() {
        let spinning = WaitPolicy {
            spin: Duration::from_micros(50),
            slice: Duration::from_millis(100),
        };
        let sleeping = WaitPolicy {
            spin: Duration::ZERO,
            slice: Duration::from_millis(100),
        };
        for (name, policy, rounds) in [
            ("spin 50 µs", spinning, 50_000),
            ("spin 0", sleeping, 5_000),
        ] {
            let (host, worker) = pair();
            let mut times = Vec::with_capacity(rounds);
            std::thread::scope(|s| {
                s.spawn(|| {
                    let mut check = deadline(DEADLINE);
                    for _ in 0..rounds {
                        let msg = worker.recv(64, &policy, &mut check).unwrap();
                        worker.send(&msg, &policy, &mut check).unwrap();
                    }
                });
                let mut check = deadline(DEADLINE);
                let msg = pattern(1, 64);
                for _ in 0..rounds {
                    let start = Instant::now();
                    host.send(&msg, &policy, &mut check).unwrap();
                    let back = host.recv(64, &policy, &mut check).unwrap();
                    times.push(start.elapsed());
                    assert_eq!(back.len(), 64);
                }
            });
            times.sort();
            let at = |q: usize| times[times.len() * q / 100];
            println!(
                "{name}: {rounds} round trips of 64 bytes: median {:?}, p10 {:?}, p90 {:?}, \
                 p99 {:?}; host sleeps {}",
                at(50),
                at(10),
                at(90),
                at(99),
                host.stats.sleeps.load(Ordering::Relaxed),
            );
        }
    }
}
