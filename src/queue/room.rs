//! Room on the spool for new mail (Postfix's `queue_minfree`, and more): the file
//! system's free space, looked up at most once a second and lowered by every
//! message written since, less what messages being received have reserved — the
//! size a client declared with MAIL, else what has been read of its message so
//! far. So concurrent large messages are refused with `452` at MAIL or DATA, not
//! by a write that fails once their data is in.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::spool::Spool;
use crate::memory::{Budget, Reservation};

/// How long one look at the file system's free space is believed.
const LOOK_AGAIN: Duration = Duration::from_secs(1);

pub struct SpoolRoom {
    spool: Arc<Spool>,
    /// The last look: when, and the bytes free then (less what was written since).
    looked: Mutex<Option<(Instant, u64)>>,
    /// Bytes reserved by messages being received.
    reserved: AtomicU64,
}

/// Why there is no room: the figures, for the log line.
#[derive(Debug)]
pub struct NoRoom {
    pub free: u64,
    pub reserved: u64,
    pub wanted: u64,
    pub minimum: u64,
}

impl std::fmt::Display for NoRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes free on the spool, {} reserved by messages being received, {} wanted; min_free_space = {}",
            self.free, self.reserved, self.wanted, self.minimum
        )
    }
}

impl SpoolRoom {
    pub fn new(spool: Arc<Spool>) -> SpoolRoom {
        SpoolRoom {
            spool,
            looked: Mutex::new(None),
            reserved: AtomicU64::new(0),
        }
    }

    /// Bytes free on the spool's file system (a statvfs per MAIL FROM would cost
    /// little; one a second costs less), lowered by every message written since,
    /// so a burst cannot outrun it.
    pub fn free(&self) -> io::Result<u64> {
        let mut looked = self.looked.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, free)) = *looked
            && at.elapsed() < LOOK_AGAIN
        {
            return Ok(free);
        }
        let free = self.spool.free_space()?;
        *looked = Some((Instant::now(), free));
        Ok(free)
    }

    /// A message of `bytes` was written.
    pub fn written(&self, bytes: u64) {
        if let Some((_, free)) = self
            .looked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            *free = free.saturating_sub(bytes);
        }
    }

    /// A reservation for one message, which may take bytes only while
    /// `minimum` stays free beyond all reservations; it starts with `declared`
    /// (the SIZE given with MAIL). Refused when even that does not fit.
    pub fn reserve(self: &Arc<Self>, minimum: u64, declared: u64) -> Result<Reservation, NoRoom> {
        let budget: Arc<dyn Budget> = Arc::new(Above {
            room: self.clone(),
            minimum,
        });
        let mut reservation = Reservation::new(budget);
        if self.fits(minimum, declared) && reservation.grow_to(declared) {
            return Ok(reservation);
        }
        Err(self.no_room(minimum, declared))
    }

    /// Whether `wanted` more bytes leave `minimum` free beyond every reservation.
    pub fn fits(&self, minimum: u64, wanted: u64) -> bool {
        let Ok(free) = self.free() else {
            return false;
        };
        free >= minimum
            .saturating_add(self.reserved.load(Ordering::Acquire))
            .saturating_add(wanted)
    }

    /// The figures of a refusal.
    pub fn no_room(&self, minimum: u64, wanted: u64) -> NoRoom {
        NoRoom {
            free: self.free().unwrap_or(0),
            reserved: self.reserved.load(Ordering::Acquire),
            wanted,
            minimum,
        }
    }
}

/// The spool's room above a minimum, as a budget reservations take from.
#[derive(Debug)]
struct Above {
    room: Arc<SpoolRoom>,
    minimum: u64,
}

impl std::fmt::Debug for SpoolRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolRoom")
            .field("reserved", &self.reserved.load(Ordering::Relaxed))
            .finish()
    }
}

impl Budget for Above {
    fn take(&self, bytes: u64) -> bool {
        let Ok(free) = self.room.free() else {
            return false;
        };
        self.room
            .reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |reserved| {
                let after = reserved.saturating_add(bytes);
                (free >= self.minimum.saturating_add(after)).then_some(after)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: u64) {
        self.room.reserved.fetch_sub(bytes, Ordering::AcqRel);
    }

    fn force(&self, bytes: u64) {
        self.room.reserved.fetch_add(bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> (tempfile::TempDir, Arc<SpoolRoom>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let room = Arc::new(SpoolRoom::new(Arc::new(spool)));
        let free = room.free().unwrap();
        (dir, room, free)
    }

    #[test]
    fn what_one_message_reserves_the_next_cannot_have() {
        let (_dir, room, free) = room();
        // Leave 10 MiB above the minimum.
        let minimum = free - 10 * 1024 * 1024;
        let mut first = room.reserve(minimum, 6 * 1024 * 1024).expect("room");
        assert!(
            room.reserve(minimum, 6 * 1024 * 1024).is_err(),
            "a second declared 6 MiB does not fit beside the first"
        );
        let mut second = room.reserve(minimum, 0).expect("undeclared: room so far");
        assert!(second.grow_to(3 * 1024 * 1024), "read so far: 3 MiB fits");
        assert!(!second.grow_to(5 * 1024 * 1024), "5 MiB would not");
        assert!(!first.grow_to(8 * 1024 * 1024));
        drop(first);
        assert!(second.grow_to(5 * 1024 * 1024), "the first is gone");
        drop(second);
        assert!(room.reserve(minimum, 10 * 1024 * 1024 - 1).is_ok());
    }
}
