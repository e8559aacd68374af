//! A priority gate: at most `slots` holders at a time; waiters are served highest priority first
//! (first come, first served within a priority); an optional bound on the number of waiters.
//!
//! Waiting is cancellable: dropping the future returned by [`Gate::acquire`] removes the waiter
//! (or, if a slot was handed to it in the meantime, hands the slot on). A waiter's priority can be
//! raised while it waits (a background preparation that a dispute now needs).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, oneshot};

/// Why [`Gate::acquire`] gave no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GateError {
    /// The waiting room is full.
    Full {
        /// How many may wait.
        capacity: usize,
    },
    /// The gate was closed (shutdown).
    Closed,
}

/// A bounded, prioritised, closable set of slots.
#[derive(Debug)]
pub(crate) struct Gate {
    state: Mutex<State>,
    slots: usize,
    capacity: Option<usize>,
    idle: Notify,
}

#[derive(Debug)]
struct State {
    free: usize,
    waiters: Vec<Waiter>,
    next_id: u64,
    closed: bool,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    priority: Arc<AtomicU8>,
    grant: oneshot::Sender<()>,
}

/// A slot of a [`Gate`]; given back when dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    gate: Arc<Gate>,
}

impl Gate {
    /// A gate with `slots` slots (at least one) and room for `capacity` waiters (`None`:
    /// unbounded, for work whose callers are already bounded).
    pub(crate) fn new(slots: usize, capacity: Option<usize>) -> Arc<Self> {
        let slots = slots.max(1);
        Arc::new(Self {
            state: Mutex::new(State {
                free: slots,
                waiters: Vec::new(),
                next_id: 0,
                closed: false,
            }),
            slots,
            capacity,
            idle: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a slot with `priority` (higher is served first; the value may be raised by
    /// whoever shares it while waiting).
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        priority: Arc<AtomicU8>,
    ) -> Result<Permit, GateError> {
        let (id, rx) = {
            let mut state = self.lock();
            if state.closed {
                return Err(GateError::Closed);
            }
            if state.free > 0 && state.waiters.is_empty() {
                state.free -= 1;
                return Ok(Permit { gate: self.clone() });
            }
            if let Some(capacity) = self.capacity
                && state.waiters.len() >= capacity
            {
                return Err(GateError::Full { capacity });
            }
            let id = state.next_id;
            state.next_id += 1;
            let (grant, rx) = oneshot::channel();
            state.waiters.push(Waiter {
                id,
                priority,
                grant,
            });
            // A slot may be free while others wait only transiently; hand it out now.
            self.hand_out(&mut state);
            (id, rx)
        };
        let mut waiting = Waiting {
            gate: self,
            id,
            rx,
            done: false,
        };
        let granted = (&mut waiting.rx).await;
        waiting.done = true;
        match granted {
            Ok(()) => Ok(Permit { gate: self.clone() }),
            Err(_) => Err(GateError::Closed),
        }
    }

    /// Gives free slots to the best waiters.
    fn hand_out(&self, state: &mut State) {
        while state.free > 0 && !state.waiters.is_empty() {
            let best = (0..state.waiters.len())
                .max_by_key(|&i| {
                    let w = &state.waiters[i];
                    (w.priority.load(Ordering::Relaxed), std::cmp::Reverse(w.id))
                })
                .expect("waiters is not empty");
            let waiter = state.waiters.swap_remove(best);
            // Keep arrival order stable for the next search (swap_remove moved the last one).
            if waiter.grant.send(()).is_ok() {
                state.free -= 1;
            }
        }
    }

    fn release(&self) {
        let mut state = self.lock();
        state.free += 1;
        self.hand_out(&mut state);
        if state.free == self.slots {
            self.idle.notify_waiters();
        }
    }

    /// How many are waiting.
    pub(crate) fn waiting(&self) -> usize {
        self.lock().waiters.len()
    }

    /// How many slots are taken.
    pub(crate) fn busy(&self) -> usize {
        self.slots - self.lock().free
    }

    /// Closes the gate: waiters and later callers get [`GateError::Closed`]; holders keep their
    /// slots. Returns how many waiters were turned away.
    pub(crate) fn close(&self) -> usize {
        let mut state = self.lock();
        state.closed = true;
        let turned_away = state.waiters.len();
        state.waiters.clear();
        turned_away
    }

    /// Waits until every slot is free (after [`Gate::close`], until running work is done).
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.lock().free == self.slots {
                return;
            }
            notified.await;
        }
    }
}

/// A queued [`Gate::acquire`]: on drop before it got its answer, leaves the queue, or passes on a
/// slot handed to it meanwhile.
struct Waiting<'a> {
    gate: &'a Arc<Gate>,
    id: u64,
    rx: oneshot::Receiver<()>,
    done: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.gate.lock();
        if let Some(i) = state.waiters.iter().position(|w| w.id == self.id) {
            state.waiters.remove(i);
            return;
        }
        // Not queued any more: either granted (a slot is ours and must be passed on) or closed.
        if self.rx.try_recv().is_ok() {
            state.free += 1;
            self.gate.hand_out(&mut state);
            if state.free == self.gate.slots {
                self.gate.idle.notify_waiters();
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gate.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn prio(p: u8) -> Arc<AtomicU8> {
        Arc::new(AtomicU8::new(p))
    }

    #[tokio::test]
    async fn serves_highest_priority_first_and_fifo_within() {
        let gate = Gate::new(1, None);
        let held = gate.acquire(prio(0)).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, p) in [("low1", 0), ("high", 2), ("low2", 0), ("mid", 1)] {
            let (gate, order) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = gate.acquire(prio(p)).await.unwrap();
                order.lock().unwrap().push(name);
            }));
            // Arrival order is the spawn order.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(gate.waiting(), 4);
        drop(held);
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .unwrap()
                .unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["high", "mid", "low1", "low2"]);
    }

    #[tokio::test]
    async fn full_waiting_room_is_an_error_and_cancelled_waiters_leave() {
        let gate = Gate::new(1, Some(1));
        let held = gate.acquire(prio(0)).await.unwrap();
        let queued = tokio::spawn({
            let gate = gate.clone();
            async move { gate.acquire(prio(0)).await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            gate.acquire(prio(9)).await.unwrap_err(),
            GateError::Full { capacity: 1 }
        );
        queued.abort();
        let _ = queued.await;
        assert_eq!(gate.waiting(), 0);
        drop(held);
        assert_eq!(gate.busy(), 0);
        let _again = gate.acquire(prio(0)).await.unwrap();
        assert_eq!(gate.busy(), 1);
    }

    #[tokio::test]
    async fn raised_priority_counts_and_close_turns_waiters_away() {
        let gate = Gate::new(1, None);
        let held = gate.acquire(prio(0)).await.unwrap();
        let raised = prio(0);
        let a = tokio::spawn({
            let gate = gate.clone();
            async move { gate.acquire(prio(1)).await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b = tokio::spawn({
            let (gate, raised) = (gate.clone(), raised.clone());
            async move {
                let p = gate.acquire(raised).await?;
                // Close while b holds the only slot: a is turned away.
                Ok::<_, GateError>(p)
            }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        raised.store(5, Ordering::Relaxed);
        drop(held);
        let b_permit = b.await.unwrap().unwrap();
        assert_eq!(gate.close(), 1);
        assert_eq!(a.await.unwrap().unwrap_err(), GateError::Closed);
        assert_eq!(gate.acquire(prio(9)).await.unwrap_err(), GateError::Closed);
        let idle = tokio::spawn({
            let gate = gate.clone();
            async move { gate.idle().await }
        });
        drop(b_permit);
        tokio::time::timeout(Duration::from_secs(5), idle)
            .await
            .unwrap()
            .unwrap();
    }
}
