//! Single flight within a process: one preparation per code hash at a time; the others wait for
//! it and then find its artifact. (Across processes, the store's per-key lock does the same.)

use std::collections::HashSet;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::store::CodeHash;

/// The code hashes being prepared in this process.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    busy: Mutex<HashSet<CodeHash>>,
    done: Condvar,
}

/// Marks a code hash as being prepared until dropped.
pub(crate) struct Ticket<'a> {
    owner: &'a InFlight,
    hash: Option<CodeHash>,
}

impl InFlight {
    /// Waits (at most `wait`) until no other thread prepares `hash`, then marks it ours. After the
    /// wait runs out, returns a ticket that marks nothing: the caller prepares anyway.
    pub(crate) fn enter(&self, hash: CodeHash, wait: Duration) -> Ticket<'_> {
        let deadline = Instant::now() + wait;
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        while busy.contains(&hash) {
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(code_hash = %hash, "gave up waiting for another thread's preparation");
                return Ticket {
                    owner: self,
                    hash: None,
                };
            }
            busy = self
                .done
                .wait_timeout(busy, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        busy.insert(hash);
        Ticket {
            owner: self,
            hash: Some(hash),
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let Some(hash) = self.hash.take() {
            self.owner
                .busy
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&hash);
            self.owner.done.notify_all();
        }
    }
}
