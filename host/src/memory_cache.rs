//! The in-memory cache of constructed components: a warm hit reads, hashes and deserializes
//! nothing. Least recently used entries are dropped beyond a byte budget (the artifact sizes,
//! which is what the compiled code occupies in memory).

use std::sync::Mutex;

use lru::LruCache;

use crate::bindings::ValidationFunctionPre;
use crate::execute::HostState;
use crate::store::CodeHash;

/// Constructed, linked components by code hash (`V`: the component, and whatever the owner keeps
/// with it).
pub(crate) struct MemoryCache<V = ValidationFunctionPre<HostState>> {
    inner: Mutex<Inner<V>>,
    max_bytes: usize,
    keep_newest: bool,
    max_entries: usize,
}

struct Inner<V> {
    entries: LruCache<CodeHash, (V, usize)>,
    bytes: usize,
}

impl<V: Clone> MemoryCache<V> {
    /// A cache holding at most `max_bytes` of artifacts (0 disables it).
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
            max_bytes,
            keep_newest: false,
            max_entries: usize::MAX,
        }
    }

    /// A cache like [`Self::new`] that always keeps the entry inserted last, whatever its size
    /// and even with a budget of 0 (an execution worker runs the component it was just sent).
    /// At most `max_entries` entries are kept.
    pub(crate) fn keeping_newest(max_bytes: usize, max_entries: usize) -> Self {
        Self {
            keep_newest: true,
            max_entries: max_entries.max(1),
            ..Self::new(max_bytes)
        }
    }

    /// The component of `hash`, if cached (and marks it most recently used).
    pub(crate) fn get(&self, hash: &CodeHash) -> Option<V> {
        if self.max_bytes == 0 && !self.keep_newest {
            return None;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.entries.get(hash).map(|(pre, _)| pre.clone())
    }

    /// Caches `pre`, whose artifact is `size` bytes, evicting the least recently used beyond the
    /// budget. An artifact larger than the whole budget is not cached.
    pub(crate) fn insert(&self, hash: CodeHash, pre: V, size: usize) {
        if size > self.max_bytes && !self.keep_newest {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, old)) = inner.entries.put(hash, (pre, size)) {
            inner.bytes -= old;
        }
        inner.bytes += size;
        while (inner.bytes > self.max_bytes || inner.entries.len() > self.max_entries)
            && !(self.keep_newest && inner.entries.len() == 1)
        {
            match inner.entries.pop_lru() {
                Some((_, (_, evicted))) => inner.bytes -= evicted,
                None => break,
            }
        }
    }

    /// How many components and artifact bytes are cached.
    pub(crate) fn usage(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (inner.entries.len(), inner.bytes)
    }
}
