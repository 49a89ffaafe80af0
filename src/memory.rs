//! The memory all message data held in memory may take together (`[limits]
//! data_memory`). A session takes what its message needs as it arrives and
//! gives it back when the message is refused, or when the queue's copy kept for
//! its first delivery is delivered or dropped; when there is none left, the
//! message being received gets `451 4.3.1` instead of more memory, and the queue
//! reads the next message back from disk instead of keeping it, so a flood of
//! large messages costs a bounded amount, whatever the clients send.
//!
//! The same reservations count the spool's free space for messages being
//! received ([`Budget`] is what both are).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Memory is taken in steps of this much, so sessions rarely touch the counter.
const STEP: u64 = 256 * 1024;

/// Something shared that reservations take from and give back to: the memory
/// for message data, the spool's free space.
pub trait Budget: Send + Sync + std::fmt::Debug {
    /// Takes `bytes` when there is room for them; false otherwise.
    fn take(&self, bytes: u64) -> bool;
    fn give_back(&self, bytes: u64);
    /// Counts `bytes` held already, room or not.
    fn force(&self, bytes: u64);
}

/// The shared budget.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
}

impl MemoryBudget {
    pub fn new(limit: u64) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// Bytes held by all sessions now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

impl Budget for MemoryBudget {
    fn take(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + bytes <= self.limit).then_some(used + bytes)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    fn force(&self, bytes: u64) {
        self.used.fetch_add(bytes, Ordering::AcqRel);
    }
}

/// What one message holds of a budget; given back when dropped.
#[derive(Debug, Default)]
pub struct Reservation {
    budget: Option<Arc<dyn Budget>>,
    bytes: u64,
}

impl Reservation {
    pub fn new(budget: Arc<dyn Budget>) -> Reservation {
        Reservation {
            budget: Some(budget),
            bytes: 0,
        }
    }

    /// Makes room for `total` bytes in all; false when the budget cannot give it.
    /// Without a budget there is always room.
    pub fn grow_to(&mut self, total: u64) -> bool {
        let Some(budget) = &self.budget else {
            return true;
        };
        if total <= self.bytes {
            return true;
        }
        let wanted = (total - self.bytes).div_ceil(STEP) * STEP;
        if budget.take(wanted) {
            self.bytes += wanted;
            true
        } else {
            false
        }
    }

    /// Exactly `bytes`, when the budget has room for them (a message kept as it
    /// is: not rounded up to steps, which for small messages would cost fifty
    /// times their size).
    pub fn exact(budget: &Arc<dyn Budget>, bytes: u64) -> Option<Reservation> {
        budget.take(bytes).then(|| Reservation {
            budget: Some(budget.clone()),
            bytes,
        })
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Counts `bytes` that are held already, whether or not the budget has room:
    /// a message delivery has read back still occupies memory, and while it does,
    /// sessions get less.
    pub fn count(budget: Option<&Arc<dyn Budget>>, bytes: u64) -> Reservation {
        if let Some(budget) = budget {
            budget.force(bytes);
        }
        Reservation {
            budget: budget.cloned(),
            bytes,
        }
    }

    /// Gives everything back.
    pub fn release(&mut self) {
        if let Some(budget) = &self.budget {
            budget.give_back(self.bytes);
        }
        self.bytes = 0;
    }

    /// Moves the reservation out (the caller holds the memory now).
    pub fn take(&mut self) -> Reservation {
        Reservation {
            budget: self.budget.clone(),
            bytes: std::mem::take(&mut self.bytes),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_shared_and_given_back() {
        let budget = MemoryBudget::new(4 * STEP);
        let mut a = Reservation::new(budget.clone());
        let mut b = Reservation::new(budget.clone());
        assert!(a.grow_to(2 * STEP));
        assert!(b.grow_to(STEP + 1));
        assert_eq!(budget.used(), 4 * STEP);
        assert!(!a.grow_to(3 * STEP), "nothing left");
        drop(b);
        assert!(a.grow_to(3 * STEP));
        let held = a.take();
        drop(a);
        assert_eq!(budget.used(), 3 * STEP, "the taken reservation still holds");
        drop(held);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn memory_held_already_is_counted_even_past_the_limit() {
        let budget = MemoryBudget::new(2 * STEP);
        let shared: Arc<dyn Budget> = budget.clone();
        let read_back = Reservation::count(Some(&shared), 3 * STEP);
        assert_eq!(budget.used(), 3 * STEP);
        let mut session = Reservation::new(budget.clone());
        assert!(!session.grow_to(1), "sessions get nothing while it is held");
        drop(read_back);
        assert!(session.grow_to(1));
        assert_eq!(
            Reservation::count(None, 5).bytes,
            5,
            "no budget: nothing to count"
        );
    }
}
