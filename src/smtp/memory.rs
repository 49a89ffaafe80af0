//! The memory all sessions together may hold for message data (`[limits]
//! data_memory`). A session takes what its message needs as it arrives and
//! gives it back when the message is queued or refused; when there is none left,
//! the message being received gets `451 4.3.1` instead of more memory, so a flood
//! of large messages costs a bounded amount, whatever the clients send.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Memory is taken in steps of this much, so sessions rarely touch the counter.
const STEP: u64 = 256 * 1024;

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
}

/// What one message holds of the budget; given back when dropped.
#[derive(Debug, Default)]
pub struct Reservation {
    budget: Option<Arc<MemoryBudget>>,
    bytes: u64,
}

impl Reservation {
    pub fn new(budget: Arc<MemoryBudget>) -> Reservation {
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
}
