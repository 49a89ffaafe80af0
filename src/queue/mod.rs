//! The store-and-forward queue: the spool on disk, the in-memory schedule, delivery
//! workers, bounces, and the administrator's queue commands.

pub mod admin;
pub mod delivery;
pub mod dsn;
pub mod envelope;
pub mod scheduler;
pub mod spool;

use std::io;
use std::sync::Arc;

use envelope::Envelope;
use scheduler::{Scheduler, now_millis};
use spool::{QueueState, Spool};

/// The queue as the rest of the program sees it: put mail in, and the schedule that
/// the delivery workers take it from.
pub struct Queue {
    pub spool: Arc<Spool>,
    pub scheduler: Arc<Scheduler>,
}

impl Queue {
    pub fn new(spool: Spool) -> Queue {
        Queue {
            spool: Arc::new(spool),
            scheduler: Arc::new(Scheduler::default()),
        }
    }

    /// Writes a message durably and schedules it. Returns once the message and its
    /// envelope are on stable storage.
    pub async fn enqueue(&self, envelope: Envelope, message: Vec<u8>) -> io::Result<()> {
        let spool = self.spool.clone();
        let id = envelope.id.clone();
        tokio::task::spawn_blocking(move || spool.commit(&envelope, &message))
            .await
            .map_err(io::Error::other)??;
        self.scheduler
            .schedule(&id, QueueState::Active, now_millis());
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
