//! Which queued message is delivered next. Lives in memory only and is rebuilt from
//! the spool at start, so nothing here needs to survive a crash.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use super::spool::QueueState;

#[derive(Debug, Clone, Copy)]
struct Due {
    /// Unix milliseconds.
    due: u64,
    state: QueueState,
    /// A worker is delivering it now.
    busy: bool,
    /// Made due while busy: due again at once when its worker is done.
    again: bool,
}

#[derive(Default)]
struct Inner {
    /// (due, id) of every waiting (not busy) message.
    waiting: BTreeSet<(u64, String)>,
    entries: HashMap<String, Due>,
    stopped: bool,
}

impl Inner {
    /// Puts a message in line for `due`.
    fn wait(&mut self, id: &str, state: QueueState, due: u64) {
        let entry = Due {
            due,
            state,
            busy: false,
            again: false,
        };
        self.entries.insert(id.to_string(), entry);
        self.waiting.insert((due, id.to_string()));
    }
}

/// The delivery schedule. The lock is never held across an await.
#[derive(Default)]
pub struct Scheduler {
    inner: Mutex<Inner>,
    wake: Notify,
}

/// A snapshot of one scheduled message, for `queue list`.
#[derive(Debug, Clone)]
pub struct Scheduled {
    pub id: String,
    pub state: QueueState,
    pub due: u64,
    pub busy: bool,
}

pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Scheduler {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Schedules a message found in `state` for `due` (unix ms). A message being
    /// delivered is left to its worker.
    pub fn schedule(&self, id: &str, state: QueueState, due: u64) {
        let mut inner = self.lock();
        if let Some(old) = inner.entries.get(id).copied() {
            if old.busy {
                return;
            }
            inner.waiting.remove(&(old.due, id.to_string()));
        }
        inner.wait(id, state, due);
        drop(inner);
        self.wake.notify_waiters();
    }

    /// Takes a message off the schedule (deleted or held). Refused (false) while a
    /// worker is delivering it.
    pub fn unschedule(&self, id: &str) -> bool {
        let mut inner = self.lock();
        match inner.entries.get(id).copied() {
            Some(entry) if entry.busy => false,
            Some(entry) => {
                inner.waiting.remove(&(entry.due, id.to_string()));
                inner.entries.remove(id);
                true
            }
            None => true,
        }
    }

    pub fn is_busy(&self, id: &str) -> bool {
        self.lock().entries.get(id).is_some_and(|e| e.busy)
    }

    /// Makes every waiting message due now (`queue flush`).
    pub fn flush(&self) -> usize {
        let mut inner = self.lock();
        let now = now_millis();
        let waiting = std::mem::take(&mut inner.waiting);
        let count = waiting.len();
        for (_, id) in waiting {
            if let Some(entry) = inner.entries.get_mut(&id) {
                entry.due = now;
            }
            inner.waiting.insert((now, id));
        }
        drop(inner);
        self.wake.notify_waiters();
        count
    }

    /// Makes one message due now (its next hop has room, or answers again); one
    /// being delivered is due again at once when its worker is done. False when
    /// it is not in the schedule (delivered, deleted).
    pub fn make_due(&self, id: &str) -> bool {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get_mut(id) else {
            return false;
        };
        if entry.busy {
            entry.again = true;
            return true;
        }
        let entry = *entry;
        let now = now_millis();
        if entry.due > now {
            inner.waiting.remove(&(entry.due, id.to_string()));
            inner.wait(id, entry.state, now);
        }
        drop(inner);
        self.wake.notify_waiters();
        true
    }

    /// Waits for the next due message and marks it busy. `None` once stopped.
    pub async fn next_due(&self) -> Option<(String, QueueState)> {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait = {
                let mut inner = self.lock();
                if inner.stopped {
                    return None;
                }
                let now = now_millis();
                match inner.waiting.first().cloned() {
                    Some((due, id)) if due <= now => {
                        inner.waiting.remove(&(due, id.clone()));
                        let entry = inner.entries.get_mut(&id).expect("waiting implies entry");
                        entry.busy = true;
                        return Some((id, entry.state));
                    }
                    Some((due, _)) => Duration::from_millis(due - now),
                    None => Duration::from_secs(3600),
                }
            };
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// A worker is done with a message: `next` reschedules it, `None` forgets it.
    pub fn finish(&self, id: &str, next: Option<(QueueState, u64)>) {
        let mut inner = self.lock();
        let again = inner.entries.get(id).is_some_and(|e| e.again);
        match next {
            Some((state, due)) if again => inner.wait(id, state, due.min(now_millis())),
            Some((state, due)) => inner.wait(id, state, due),
            None => {
                inner.entries.remove(id);
            }
        }
        drop(inner);
        self.wake.notify_waiters();
    }

    /// Stops handing out work; workers waiting in [`next_due`] return `None`.
    pub fn stop(&self) {
        self.lock().stopped = true;
        self.wake.notify_waiters();
    }

    /// Nothing is being delivered and nothing is due: whatever is still queued
    /// waits for a later retry (or is held).
    pub fn is_idle(&self) -> bool {
        let inner = self.lock();
        let now = now_millis();
        inner.entries.values().all(|e| !e.busy)
            && inner.waiting.first().is_none_or(|(due, _)| *due > now)
    }

    pub fn snapshot(&self) -> Vec<Scheduled> {
        let inner = self.lock();
        inner
            .entries
            .iter()
            .map(|(id, e)| Scheduled {
                id: id.clone(),
                state: e.state,
                due: e.due,
                busy: e.busy,
            })
            .collect()
    }
}

/// The wait before retry number `attempts` (1 = first retry): doubling from `min`,
/// never more than `max`.
pub fn backoff(attempts: u32, min: Duration, max: Duration) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(30));
    min.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let min = Duration::from_secs(300);
        let max = Duration::from_secs(3600);
        let waits: Vec<u64> = (1..=6).map(|n| backoff(n, min, max).as_secs()).collect();
        assert_eq!(waits, vec![300, 600, 1200, 2400, 3600, 3600]);
        assert_eq!(backoff(1000, min, max), max);
    }

    #[tokio::test]
    async fn due_messages_come_out_in_order_and_busy_ones_stay_put() {
        let scheduler = Scheduler::default();
        let now = now_millis();
        scheduler.schedule("B", QueueState::Deferred, now - 5);
        scheduler.schedule("A", QueueState::Active, now - 10);
        scheduler.schedule("C", QueueState::Deferred, now + 3_600_000);
        assert_eq!(scheduler.next_due().await.unwrap().0, "A");
        assert!(
            !scheduler.unschedule("A"),
            "busy message cannot be taken away"
        );
        assert_eq!(scheduler.next_due().await.unwrap().0, "B");
        assert_eq!(scheduler.flush(), 1);
        assert_eq!(scheduler.next_due().await.unwrap().0, "C");
        assert!(!scheduler.is_idle(), "A and C are being delivered");
        scheduler.finish("A", None);
        scheduler.finish("C", Some((QueueState::Deferred, now + 3_600_000)));
        assert!(!scheduler.is_idle(), "B is still being delivered");
        scheduler.finish("B", None);
        assert!(scheduler.is_idle(), "only C is left, due in an hour");
        assert!(scheduler.unschedule("A"));
        scheduler.stop();
        assert!(scheduler.next_due().await.is_none());
    }
}
