//! The worker's counting allocator: live and peak heap bytes, and a hard cap that ends the job
//! with a typed report instead of an abort deep inside the compiler.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A global allocator that counts live heap bytes, remembers the peak, and enforces a cap.
///
/// The binary that serves as the worker executable installs it as its global allocator
/// (`#[global_allocator] static ALLOC: CountingAllocator = CountingAllocator::new();`) and hands
/// it to [`entry`](super::entry). Outside a preparation job it only counts (no cap).
///
/// When an allocation would take the live total over the cap, the allocator writes a
/// memory-exceeded report (the limit and the size the heap would have reached) straight to the
/// worker's output pipe — no allocation, one `write` of a few bytes, which a pipe delivers
/// whole — and aborts the process. The host reads the report before it sees the death.
#[derive(Debug)]
pub struct CountingAllocator {
    live: AtomicUsize,
    peak: AtomicUsize,
    limit: AtomicUsize,
    used: AtomicBool,
    counting: AtomicBool,
}

impl Default for CountingAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl CountingAllocator {
    /// A counting allocator without a cap.
    pub const fn new() -> Self {
        Self {
            live: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            limit: AtomicUsize::new(usize::MAX),
            used: AtomicBool::new(false),
            counting: AtomicBool::new(true),
        }
    }

    /// Whether this allocator has served an allocation: true exactly when it is the process's
    /// global allocator (the Rust runtime allocates before `main`).
    pub fn is_installed(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }

    /// Live heap bytes now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// The most live heap bytes since the last [`Self::reset_peak`].
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Starts a new peak measurement from the live bytes now.
    pub fn reset_peak(&self) {
        self.peak.store(self.live(), Ordering::Relaxed);
    }

    /// Caps live heap bytes at `limit` (`usize::MAX`: no cap).
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Turns counting (and so the cap) off or on, to measure what counting costs. While it is
    /// off nothing is counted; after it is turned on again, the live and peak figures are
    /// approximate (frees of memory allocated while off are not subtracted).
    pub fn set_counting(&self, on: bool) {
        self.counting.store(on, Ordering::Relaxed);
    }

    /// Counts `size` more bytes; over the cap, reports and aborts.
    fn grow(&self, size: usize) {
        if !self.counting.load(Ordering::Relaxed) {
            return;
        }
        let limit = self.limit.load(Ordering::Relaxed);
        let mut live = self.live.load(Ordering::Relaxed);
        loop {
            let Some(next) = live.checked_add(size).filter(|next| *next <= limit) else {
                super::protocol::report_memory_exceeded(limit, live.saturating_add(size));
                std::process::abort();
            };
            match self
                .live
                .compare_exchange_weak(live, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.peak.fetch_max(next, Ordering::Relaxed);
                    return;
                }
                Err(now) => live = now,
            }
        }
    }

    fn shrink(&self, size: usize) {
        if !self.counting.load(Ordering::Relaxed) {
            return;
        }
        // Saturating: frees of memory allocated while counting was off are not in `live`.
        let _ = self
            .live
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |live| {
                Some(live.saturating_sub(size))
            });
    }
}

// SAFETY: every method forwards to `System` with the caller's layout and pointer unchanged, so
// `System`'s guarantees hold; the counting only reads and writes atomics and never allocates.
// Over the cap, `grow` writes a fixed-size report with one `write` system call and aborts: it
// never returns an allocation, and never unwinds through the allocator.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.used.store(true, Ordering::Relaxed);
        self.grow(layout.size());
        // SAFETY: same layout the caller gave us, per `GlobalAlloc::alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if ptr.is_null() {
            self.shrink(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.used.store(true, Ordering::Relaxed);
        self.grow(layout.size());
        // SAFETY: as in `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if ptr.is_null() {
            self.shrink(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through us) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        self.shrink(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old {
            self.grow(new_size - old);
        }
        // SAFETY: `ptr` was allocated by `System` with `layout`; `new_size` is the caller's.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if new.is_null() {
            if new_size > old {
                self.shrink(new_size - old);
            }
        } else if new_size < old {
            self.shrink(old - new_size);
        }
        new
    }
}
