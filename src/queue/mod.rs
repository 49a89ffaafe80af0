//! The store-and-forward queue: the spool on disk, the in-memory schedule, delivery
//! workers, bounces, and the administrator's queue commands.

pub mod admin;
pub mod delivery;
pub mod dsn;
pub mod envelope;
pub mod health;
pub mod room;
pub mod scheduler;
pub mod spool;
pub mod trace;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex, mpsc};

use crate::memory::{Budget, MemoryBudget, Reservation};
use envelope::Envelope;
use scheduler::{Scheduler, now_millis};
use spool::{FlushMode, QueueState, Spool};
use tokio::sync::oneshot;

/// Work for the commit thread; each answer says whether it is on stable storage.
enum Job {
    /// A new message.
    Commit {
        envelope: Envelope,
        message: Arc<Vec<u8>>,
        state: QueueState,
        done: oneshot::Sender<io::Result<()>>,
    },
    /// A message delivered and journalled: the journal to flush, then its files
    /// to remove.
    Delivered { state: QueueState, id: String },
}

/// How long a delivered message's removal may wait for a batch of new mail
/// whose flush also makes the journal stable, before the journal is flushed on
/// its own: one flush for many deliveries instead of one each.
const JOURNAL_DELAY: std::time::Duration = std::time::Duration::from_millis(50);

/// Newly committed messages kept in memory for their first delivery attempt, so
/// the common case — accepted, then delivered at once — never reads the spool back.
#[derive(Default)]
struct Fresh {
    messages: HashMap<String, (Envelope, Arc<Vec<u8>>, Reservation)>,
    order: VecDeque<String>,
    bytes: usize,
}

/// What [`Fresh`] may hold; beyond it, the oldest are read back from disk instead.
const FRESH_BYTES: usize = 16 * 1024 * 1024;

/// Most messages one flush covers; keeps a batch's latency bounded under a flood.
const MAX_BATCH: usize = 256;

/// The queue as the rest of the program sees it: put mail in, and the schedule that
/// the delivery workers take it from.
pub struct Queue {
    pub spool: Arc<Spool>,
    pub scheduler: Arc<Scheduler>,
    /// Which next hops answer (delivery learns it; `queue flush` forgets failures).
    pub health: Arc<health::NextHops>,
    /// The metrics the queue and delivery count into (the server's, given).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// To the commit thread, which writes every new message and the journal of
    /// delivered ones (group commit: one flush for all that piled up).
    commits: mpsc::Sender<Job>,
    fresh: Mutex<Fresh>,
    /// What [`Fresh`] holds counts against the sessions' memory for message data.
    memory: Option<Arc<dyn Budget>>,
    /// Room on the spool for new mail.
    pub room: Arc<room::SpoolRoom>,
    /// Delivered messages whose files are not removed yet.
    removals_pending: Arc<std::sync::atomic::AtomicUsize>,
}

impl Queue {
    /// Starts the committer thread: all new messages go through it, so messages that
    /// arrive together share one flush, and no two threads contend for the spool's
    /// folder locks.
    pub fn new(
        spool: Spool,
        flush: FlushMode,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> io::Result<Queue> {
        let spool = Arc::new(spool);
        let (commits, inbox) = mpsc::channel::<Job>();
        let (removals, doomed) = mpsc::channel::<(QueueState, String, bool)>();
        let committer = spool.clone();
        let to_cleanup = removals;
        let counted = metrics.clone();
        std::thread::Builder::new()
            .name("spool-commit".into())
            .spawn(move || run_commit_thread(&committer, &inbox, flush, &to_cleanup, &counted))?;
        let cleaner = spool.clone();
        let removals_pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let removed = removals_pending.clone();
        std::thread::Builder::new()
            .name("spool-cleanup".into())
            .spawn(move || {
                for (state, id, journalled) in doomed {
                    if let Err(e) = cleaner.remove(state, &id) {
                        tracing::warn!(queue_id = %id, error = %e, "cannot remove a delivered message");
                    }
                    removed.fetch_sub(1, std::sync::atomic::Ordering::Release);
                    if journalled && let Err(e) = cleaner.journalled_removed() {
                        tracing::warn!(error = %e, "cannot empty the journal of delivered messages");
                    }
                }
            })?;
        let scheduler = Arc::new(Scheduler::default());
        Ok(Queue {
            room: Arc::new(room::SpoolRoom::new(spool.clone())),
            spool,
            health: Arc::new(health::NextHops::new(scheduler.clone())),
            metrics,
            scheduler,
            commits,
            fresh: Mutex::new(Fresh::default()),
            memory: None,
            removals_pending,
        })
    }

    /// Keeps new messages for their first delivery only as far as `memory` allows.
    pub fn with_memory(mut self, memory: Arc<MemoryBudget>) -> Queue {
        self.memory = Some(memory);
        self
    }

    /// Writes a message durably and schedules it. Returns once the message and its
    /// envelope are on stable storage.
    pub async fn enqueue(&self, envelope: Envelope, message: Vec<u8>) -> io::Result<()> {
        self.enqueue_in(
            envelope,
            message,
            QueueState::Active,
            Reservation::default(),
        )
        .await
    }

    /// As [`enqueue`], but into `hold`: kept for review, not delivered until
    /// released.
    pub async fn enqueue_held(&self, envelope: Envelope, message: Vec<u8>) -> io::Result<()> {
        self.enqueue_in(envelope, message, QueueState::Hold, Reservation::default())
            .await
    }

    /// Writes a message into `state`; `room` is what its session reserved of
    /// the spool's room, given back as the write is counted.
    pub async fn enqueue_in(
        &self,
        mut envelope: Envelope,
        message: Vec<u8>,
        state: QueueState,
        room: Reservation,
    ) -> io::Result<()> {
        envelope.size = message.len() as u64;
        envelope.message_crc32 = envelope::message_checksum(&message);
        self.room.written(message.len() as u64 + 4096);
        drop(room);
        let id = envelope.id.clone();
        let message = Arc::new(message);
        let (done, result) = oneshot::channel();
        let job = Job::Commit {
            envelope: envelope.clone(),
            message: message.clone(),
            state,
            done,
        };
        let stopped = || io::Error::other("the queue is shut down");
        self.commits.send(job).map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())??;
        if state != QueueState::Active {
            return Ok(());
        }
        self.remember(envelope, message);
        self.scheduler
            .schedule(&id, QueueState::Active, now_millis());
        Ok(())
    }

    fn remember(&self, envelope: Envelope, message: Arc<Vec<u8>>) {
        let memory = match &self.memory {
            Some(budget) => match Reservation::exact(budget, message.len() as u64) {
                Some(memory) => memory,
                // Delivery reads it back from the spool.
                None => return,
            },
            None => Reservation::default(),
        };
        self.keep_fresh(envelope, message, memory);
    }

    /// Keeps a message in memory for its next attempt (one that stepped aside
    /// for a busy next hop goes again soon).
    pub fn keep_fresh(&self, envelope: Envelope, message: Arc<Vec<u8>>, memory: Reservation) {
        let mut fresh = self.fresh.lock().unwrap_or_else(|p| p.into_inner());
        if fresh.messages.contains_key(&envelope.id) {
            return;
        }
        fresh.bytes += message.len();
        fresh.order.push_back(envelope.id.clone());
        fresh
            .messages
            .insert(envelope.id.clone(), (envelope, message, memory));
        while fresh.bytes > FRESH_BYTES {
            let Some(oldest) = fresh.order.pop_front() else {
                break;
            };
            if let Some((_, message, _)) = fresh.messages.remove(&oldest) {
                fresh.bytes -= message.len();
            }
        }
    }

    /// The envelope and message of a newly committed message, if still in memory.
    /// Each is handed out once: later attempts read the spool.
    /// Counts a message read back from the spool against the memory budget while
    /// the returned reservation lives.
    pub fn count_memory(&self, bytes: usize) -> Reservation {
        Reservation::count(self.memory.as_ref(), bytes as u64)
    }

    /// The reservation goes with it: hold it while the message is in use.
    pub fn take_fresh(&self, id: &str) -> Option<(Envelope, Arc<Vec<u8>>, Reservation)> {
        let mut fresh = self.fresh.lock().unwrap_or_else(|p| p.into_inner());
        let taken = fresh.messages.remove(id)?;
        fresh.bytes -= taken.1.len();
        if let Some(at) = fresh.order.iter().position(|queued| queued == id) {
            fresh.order.remove(at);
        }
        Some(taken)
    }

    /// Messages and the oldest one's age (seconds) in each state a message waits
    /// in. Cheap enough for every scrape: a folder listing, and the arrival time
    /// read from the ids, which begin with it.
    pub fn census(&self) -> Vec<(&'static str, usize, Option<u64>)> {
        let now = scheduler::now_millis() / 1000;
        [QueueState::Active, QueueState::Deferred, QueueState::Hold]
            .into_iter()
            .map(|state| {
                let ids = self.spool.ids(state).unwrap_or_default();
                let oldest = ids
                    .iter()
                    .filter_map(|id| spool::arrival_of(id))
                    .min()
                    .map(|arrived| now.saturating_sub(arrived));
                (state.folder(), ids.len(), oldest)
            })
            .collect()
    }

    /// Waits until nothing is being delivered and nothing is due (see
    /// [`Scheduler::is_idle`]), at most `timeout`; false when it is still busy.
    /// How tests and `mailmoat queue wait` know that nothing more will arrive now.
    pub async fn wait_idle(&self, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Idle includes the files of delivered mail being gone, so that
            // `queue list` afterwards shows only what still waits.
            let removing = self
                .removals_pending
                .load(std::sync::atomic::Ordering::Acquire);
            if self.scheduler.is_idle() && removing == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Waits until nothing waits in the queue (active or deferred; held mail
    /// aside) and nothing is being delivered, at most `timeout`.
    pub async fn wait_empty(&self, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let spool = self.spool.clone();
            let waiting = tokio::task::spawn_blocking(move || {
                [QueueState::Active, QueueState::Deferred]
                    .into_iter()
                    .map(|state| spool.ids(state).map_or(0, |ids| ids.len()))
                    .sum::<usize>()
            })
            .await
            .unwrap_or(usize::MAX);
            if waiting == 0 && self.wait_idle(std::time::Duration::ZERO).await {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// A message is delivered: recorded durably (with the next group commit), so
    /// a crash from now on does not deliver it again, then removed in the
    /// background.
    pub async fn delivered(&self, state: QueueState, id: &str) -> io::Result<()> {
        // Written at once (a small append, like a log line): from here on a
        // process that dies does not deliver it again; the flush that keeps it
        // through a power loss comes with the next batch (or within
        // JOURNAL_DELAY), and only then are its files removed. Nothing waits
        // for that: the delivery is done.
        self.spool.journal_delivered(&[(state, id.to_string())])?;
        let job = Job::Delivered {
            state,
            id: id.to_string(),
        };
        self.removals_pending
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if self.commits.send(job).is_err() {
            self.removals_pending
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            // Shut down: remove it now, as before the journal.
            return self.spool.remove(state, id);
        }
        Ok(())
    }

    /// Recovers the spool after a restart and schedules everything in it.
    pub fn load(&self) -> io::Result<spool::Recovery> {
        let recovery = self.spool.recover()?;
        for id in self.spool.ids(QueueState::Active)? {
            self.scheduler
                .schedule(&id, QueueState::Active, now_millis());
        }
        for id in self.spool.ids(QueueState::Deferred)? {
            let due = match self.spool.read_envelope(QueueState::Deferred, &id) {
                Ok(env) => env.next_attempt * 1000,
                Err(e) => {
                    tracing::warn!(queue_id = %id, error = %e, "unreadable envelope; delivering now");
                    0
                }
            };
            self.scheduler.schedule(&id, QueueState::Deferred, due);
        }
        Ok(recovery)
    }
}

/// The commit thread: takes every job that has piled up — new messages and
/// delivered ones — and makes them stable as one batch (one flush). One thread,
/// so no two writers contend for the spool folders' locks.
fn run_commit_thread(
    spool: &Spool,
    inbox: &mpsc::Receiver<Job>,
    flush: FlushMode,
    cleanup: &mpsc::Sender<(QueueState, String, bool)>,
    metrics: &crate::metrics::Metrics,
) {
    // Delivered messages whose journal entry is not flushed yet, and since when.
    let mut unflushed: Vec<(QueueState, String)> = Vec::new();
    let mut waiting_since = std::time::Instant::now();
    loop {
        let first = if unflushed.is_empty() {
            match inbox.recv() {
                Ok(job) => Some(job),
                Err(_) => return,
            }
        } else {
            match inbox.recv_timeout(JOURNAL_DELAY.saturating_sub(waiting_since.elapsed())) {
                Ok(job) => Some(job),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    release(spool.sync_journal(), &mut unflushed, cleanup);
                    return;
                }
            }
        };
        let mut batch: Vec<Job> = first.into_iter().collect();
        while !batch.is_empty() && batch.len() < MAX_BATCH {
            match inbox.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut commits = Vec::new();
        for job in batch {
            match job {
                Job::Commit {
                    envelope,
                    message,
                    state,
                    done,
                } => commits.push((envelope, message, state, done)),
                Job::Delivered { state, id } => {
                    if unflushed.is_empty() {
                        waiting_since = std::time::Instant::now();
                    }
                    unflushed.push((state, id));
                }
            }
        }
        let items: Vec<(&Envelope, &[u8], QueueState)> = commits
            .iter()
            .map(|(envelope, message, state, _)| (envelope, message.as_slice(), *state))
            .collect();
        let results = if items.is_empty() {
            Vec::new()
        } else {
            let started = std::time::Instant::now();
            let results = spool.commit_batch(&items, flush);
            metrics.committed(items.len(), started.elapsed());
            results
        };
        for ((_, _, _, done), result) in commits.into_iter().zip(&results) {
            let _ = done.send(match result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
        if unflushed.is_empty() {
            continue;
        }
        // A batch flushed with syncfs made the journal stable too; else it is
        // flushed on its own once its oldest entry has waited long enough.
        let flushed_with_batch =
            flush == FlushMode::Syncfs && !results.is_empty() && results.iter().all(Result::is_ok);
        if flushed_with_batch {
            release(Ok(()), &mut unflushed, cleanup);
        } else if waiting_since.elapsed() >= JOURNAL_DELAY {
            release(spool.sync_journal(), &mut unflushed, cleanup);
        }
    }
}

/// Hands delivered messages to the cleanup thread once their journal entries
/// are stable (`journalled`), or, when the flush failed, to be removed all the
/// same but not counted as journalled.
fn release(
    journalled: io::Result<()>,
    unflushed: &mut Vec<(QueueState, String)>,
    cleanup: &mpsc::Sender<(QueueState, String, bool)>,
) {
    if let Err(e) = &journalled {
        tracing::warn!(error = %e, "journal of delivered messages not flushed; a crash now could deliver them again");
    }
    for (state, id) in unflushed.drain(..) {
        let _ = cleanup.send((state, id, journalled.is_ok()));
    }
}
