//! Next hops: how many deliveries each may have at once, and whether it answers —
//! Postfix's destination concurrency with its feedback, so a hop that hangs holds
//! only its own share of the delivery workers.
//!
//! A hop that answers gets up to its window of deliveries at once; the window
//! starts at one and grows by one with each delivery that works, up to
//! `[queue] destination_concurrency`. A timeout or a lost connection at any stage
//! is a failure, and so is a reply to the end of data later than the command
//! timeout (the attempt itself waits on): the hop is then not answering, and gets
//! one new delivery (a probe) every `probe_interval`; the rest of its mail
//! waits, listed here, without connecting. A probe that hangs does not stop the
//! next one, so a hop cannot hide its return behind a hung connection; when the
//! hop has no connection left to give, the oldest hung attempt (a stalled one,
//! or a probe older than the interval) is given up to make room. The first
//! delivery that works makes the hop answer again: its other attempts (hung
//! probes) are abandoned and tried again at once, and the mail that waited for
//! it is due now.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;

use super::scheduler::Scheduler;

/// Whether a next hop answers, as far as delivery knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answering {
    /// Nothing tried since start.
    Unknown,
    Yes,
    /// Its last delivery failed or hung, and none has worked since.
    No {
        why: String,
        since: SystemTime,
    },
}

/// What an attempt in flight shares with the hop's bookkeeping.
#[derive(Debug, Default)]
struct Flight {
    /// Its reply is later than the command timeout.
    stalled: AtomicBool,
    abandoned: AtomicBool,
    abandon: Notify,
}

impl Flight {
    fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
        self.abandon.notify_waiters();
    }
}

#[derive(Debug)]
struct InFlight {
    started: Instant,
    probe: bool,
    flight: Arc<Flight>,
}

#[derive(Debug)]
struct Hop {
    answering: Answering,
    /// Deliveries at once while it answers.
    window: usize,
    /// Deliveries it may take now although it is not known to answer: one to
    /// start with, then one per `probe_interval` while it fails.
    probes: usize,
    /// A probe is due as soon as the attempts in flight allow one.
    probe_owed: bool,
    in_flight: HashMap<u64, InFlight>,
    /// Messages waiting for this hop: for a delivery slot, or for it to answer.
    waiting: VecDeque<String>,
    listed: HashSet<String>,
    /// A task gives it probes while it fails.
    prober: bool,
}

impl Hop {
    fn new() -> Hop {
        Hop {
            answering: Answering::Unknown,
            window: 1,
            probes: 1,
            probe_owed: false,
            in_flight: HashMap::new(),
            waiting: VecDeque::new(),
            listed: HashSet::new(),
            prober: false,
        }
    }

    /// The next waiting message that is still there to deliver.
    fn wake_one(&mut self, scheduler: &Scheduler) -> bool {
        while let Some(id) = self.waiting.pop_front() {
            self.listed.remove(&id);
            if scheduler.make_due(&id) {
                return true;
            }
        }
        false
    }

    fn wake_all(&mut self, scheduler: &Scheduler) {
        self.listed.clear();
        for id in self.waiting.drain(..) {
            scheduler.make_due(&id);
        }
    }

    /// Gives the hop its owed probe when it has a connection to give, and wakes a
    /// message to take it.
    fn grant_probe(&mut self, scheduler: &Scheduler, limit: usize) {
        if self.answering == Answering::Yes
            || !self.probe_owed
            || self.probes > 0
            || self.in_flight.len() >= limit
        {
            return;
        }
        self.probe_owed = false;
        self.probes = 1;
        self.wake_one(scheduler);
    }

    /// A probe is due while the hop does not answer; at the connection limit,
    /// the oldest attempt that hangs (stalled, or a probe older than
    /// `interval`) is given up to make room (the probe goes when it is gone).
    fn probe_due(&mut self, scheduler: &Scheduler, limit: usize, interval: Duration) {
        self.probe_owed = true;
        let live = self
            .in_flight
            .values()
            .filter(|f| !f.flight.abandoned.load(Ordering::Acquire))
            .count();
        if live >= limit {
            let oldest = self
                .in_flight
                .values()
                .filter(|f| {
                    let flight = &f.flight;
                    !flight.abandoned.load(Ordering::Acquire)
                        && (flight.stalled.load(Ordering::Acquire)
                            || (f.probe && f.started.elapsed() >= interval))
                })
                .min_by_key(|f| f.started);
            if let Some(oldest) = oldest {
                oldest.flight.abandon();
            }
        }
        self.grant_probe(scheduler, limit);
    }
}

/// What delivery may do about a hop now.
#[derive(Debug)]
pub enum Admission {
    /// Deliver; the slot is the hop's until dropped.
    Go(Slot),
    /// Every slot of the hop is taken: wait for one (the message is listed and
    /// made due when one frees).
    Busy,
    /// The hop does not answer (why): defer; the message is made due when it
    /// answers again.
    Failing(String),
}

pub struct NextHops {
    hops: Mutex<HashMap<String, Hop>>,
    scheduler: Arc<Scheduler>,
    settings: Mutex<Settings>,
    /// Told whenever a slot frees or a hop changes state.
    freed: Notify,
    next_flight: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    concurrency: usize,
    probe_interval: Duration,
}

impl NextHops {
    pub fn new(scheduler: Arc<Scheduler>) -> NextHops {
        NextHops {
            hops: Mutex::new(HashMap::new()),
            scheduler,
            settings: Mutex::new(Settings {
                concurrency: 8,
                probe_interval: Duration::from_secs(5),
            }),
            freed: Notify::new(),
            next_flight: AtomicU64::new(0),
        }
    }

    /// `[queue] destination_concurrency` and `[backend] probe_interval`.
    pub fn configure(&self, concurrency: usize, probe_interval: Duration) {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = Settings {
            concurrency: concurrency.max(1),
            probe_interval,
        };
    }

    fn settings(&self) -> Settings {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Hop>> {
        self.hops.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot at `address`, waiting up to `patience` for one to free.
    pub async fn slot(self: &Arc<Self>, address: &str, patience: Duration) -> Admission {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.admit(address) {
                Admission::Busy if tokio::time::Instant::now() < deadline => {
                    let _ = tokio::time::timeout_at(deadline, freed).await;
                }
                admission => return admission,
            }
        }
    }

    fn admit(self: &Arc<Self>, address: &str) -> Admission {
        let limit = self.settings().concurrency;
        let mut hops = self.lock();
        let hop = hops.entry(address.to_string()).or_insert_with(Hop::new);
        let probe = match &hop.answering {
            Answering::Yes if hop.in_flight.len() < hop.window.min(limit) => false,
            Answering::Yes => return Admission::Busy,
            _ if hop.probes > 0 && hop.in_flight.len() < limit => {
                hop.probes -= 1;
                true
            }
            Answering::No { why, .. } => return Admission::Failing(why.clone()),
            _ => return Admission::Busy,
        };
        let id = self.next_flight.fetch_add(1, Ordering::Relaxed);
        let flight = Arc::new(Flight::default());
        hop.in_flight.insert(
            id,
            InFlight {
                started: Instant::now(),
                probe,
                flight: flight.clone(),
            },
        );
        Admission::Go(Slot {
            hops: self.clone(),
            address: address.to_string(),
            id,
            flight,
        })
    }

    /// `id` waits for `address`: made due when a slot frees or the hop answers.
    pub fn wait_for(&self, address: &str, id: &str) {
        let mut hops = self.lock();
        let hop = hops.entry(address.to_string()).or_insert_with(Hop::new);
        if hop.listed.insert(id.to_string()) {
            hop.waiting.push_back(id.to_string());
        }
    }

    /// A delivery to the hop of `slot` worked (whatever the replies said: it
    /// answered).
    fn succeeded(&self, slot: &Slot) {
        let limit = self.settings().concurrency;
        let mut hops = self.lock();
        let Some(hop) = hops.get_mut(&slot.address) else {
            return;
        };
        let was = std::mem::replace(&mut hop.answering, Answering::Yes);
        hop.window = (hop.window + 1).min(limit);
        hop.probe_owed = false;
        if was != Answering::Yes {
            if matches!(was, Answering::No { .. }) {
                tracing::info!(
                    relay = %slot.address,
                    waiting = hop.waiting.len(),
                    "next hop answers again; delivering what waited"
                );
            }
            // What else is in flight there are probes that hung: tried again now.
            for (id, other) in &hop.in_flight {
                if *id != slot.id {
                    other.flight.abandon();
                }
            }
            hop.wake_all(&self.scheduler);
        }
        drop(hops);
        self.freed.notify_waiters();
    }

    /// A delivery to the hop of `slot` failed (`why`): from now on the hop gets
    /// probes only. `going_on`: the attempt still waits (a reply is late, not
    /// yet given up on).
    fn failed(self: &Arc<Self>, slot: &Slot, why: &str, going_on: bool) {
        let mut hops = self.lock();
        let Some(hop) = hops.get_mut(&slot.address) else {
            return;
        };
        if !matches!(hop.answering, Answering::No { .. }) {
            tracing::warn!(
                relay = %slot.address,
                error = why,
                in_flight = hop.in_flight.len(),
                "next hop not answering; one probe every probe_interval until it does"
            );
        }
        let since = match &hop.answering {
            Answering::No { since, .. } => *since,
            _ => SystemTime::now(),
        };
        hop.answering = Answering::No {
            why: why.to_string(),
            since,
        };
        hop.window = 1;
        hop.probes = 0;
        let start = !hop.prober;
        hop.prober = true;
        drop(hops);
        if start {
            self.start_prober(&slot.address);
        }
        if !going_on {
            self.freed.notify_waiters();
        }
    }

    /// While the hop fails: every `probe_interval`, a probe, after giving up
    /// a probe that still waits before its data.
    fn start_prober(self: &Arc<Self>, address: &str) {
        let hops = self.clone();
        let address = address.to_string();
        tokio::spawn(async move {
            loop {
                let settings = hops.settings();
                tokio::time::sleep(settings.probe_interval).await;
                let mut all = hops.lock();
                let Some(hop) = all.get_mut(&address) else {
                    break;
                };
                if hop.answering == Answering::Yes {
                    hop.prober = false;
                    break;
                }
                hop.probe_due(
                    &hops.scheduler,
                    settings.concurrency,
                    settings.probe_interval,
                );
            }
        });
    }

    fn release(&self, slot: &Slot) {
        let limit = self.settings().concurrency;
        let mut hops = self.lock();
        if let Some(hop) = hops.get_mut(&slot.address) {
            hop.in_flight.remove(&slot.id);
            if hop.answering == Answering::Yes {
                hop.wake_one(&self.scheduler);
            } else {
                hop.grant_probe(&self.scheduler, limit);
            }
        }
        drop(hops);
        self.freed.notify_waiters();
    }

    /// The administrator says try now (`queue flush`): every hop not known to
    /// answer has its attempts in flight given up and one probe at once.
    pub fn retry_now(&self) {
        for hop in self.lock().values_mut() {
            if hop.answering == Answering::Yes {
                continue;
            }
            for attempt in hop.in_flight.values() {
                attempt.flight.abandon();
            }
            hop.probes = 1;
            hop.probe_owed = false;
        }
        self.freed.notify_waiters();
    }

    /// Whether `address` answers (for metrics and `status`).
    pub fn answering(&self, address: &str) -> Answering {
        self.lock()
            .get(address)
            .map_or(Answering::Unknown, |hop| hop.answering.clone())
    }

    /// Deliveries to `address` in flight now.
    pub fn in_flight(&self, address: &str) -> usize {
        self.lock()
            .get(address)
            .map_or(0, |hop| hop.in_flight.len())
    }
}

/// One delivery's place at a next hop; given back when dropped.
pub struct Slot {
    hops: Arc<NextHops>,
    address: String,
    id: u64,
    flight: Arc<Flight>,
}

impl Slot {
    /// Resolves when the attempt is given up (the hop answered another
    /// delivery, or the administrator flushed the queue).
    pub async fn abandoned(&self) {
        loop {
            let notified = self.flight.abandon.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.flight.abandoned.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// The hop took part in a whole conversation.
    pub fn succeeded(&self) {
        self.hops.succeeded(self);
    }

    /// The conversation failed (`why`): a timeout or a lost connection.
    pub fn failed(&self, why: &str) {
        self.hops.failed(self, why, false);
    }

    /// A reply is late enough to call the hop not answering, though this
    /// attempt waits on.
    pub fn stalled(&self, why: &str) {
        self.flight.stalled.store(true, Ordering::Release);
        self.hops.failed(self, why, true);
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Slot({} #{})", self.address, self.id)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.hops.release(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hops(concurrency: usize) -> Arc<NextHops> {
        let hops = Arc::new(NextHops::new(Arc::new(Scheduler::default())));
        hops.configure(concurrency, Duration::from_secs(3600));
        hops
    }

    fn go(admission: Admission) -> Slot {
        match admission {
            Admission::Go(slot) => slot,
            other => panic!("expected a slot, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn one_probe_then_a_window_that_grows_to_the_limit() {
        let hops = hops(3);
        let first = go(hops.admit("b:25"));
        assert!(
            matches!(hops.admit("b:25"), Admission::Busy),
            "one at a time"
        );
        first.succeeded();
        drop(first);
        assert_eq!(hops.answering("b:25"), Answering::Yes);
        let a = go(hops.admit("b:25"));
        let b = go(hops.admit("b:25"));
        assert!(
            matches!(hops.admit("b:25"), Admission::Busy),
            "window of two"
        );
        a.succeeded();
        let c = go(hops.admit("b:25"));
        b.succeeded();
        c.succeeded();
        drop((a, b, c));
        let _held: Vec<Slot> = (0..3).map(|_| go(hops.admit("b:25"))).collect();
        assert!(
            matches!(hops.admit("b:25"), Admission::Busy),
            "never past destination_concurrency"
        );
        assert!(
            matches!(hops.admit("other:25"), Admission::Go(_)),
            "another hop has its own share"
        );
    }

    #[tokio::test]
    async fn a_failure_leaves_probes_only_and_a_success_abandons_the_hung() {
        let hops = hops(4);
        let first = go(hops.admit("b:25"));
        first.succeeded();
        drop(first);
        let hung = go(hops.admit("b:25"));
        let failing = go(hops.admit("b:25"));
        failing.failed("no answer to the end of data within 1s");
        drop(failing);
        assert!(matches!(
            hops.answering("b:25"),
            Answering::No { ref why, .. } if why.contains("end of data")
        ));
        assert!(
            matches!(hops.admit("b:25"), Admission::Failing(_)),
            "no connection until a probe is due"
        );
        hops.retry_now();
        assert!(
            hung.flight.abandoned.load(Ordering::Acquire),
            "queue flush gives up what hangs"
        );
        let probe = go(hops.admit("b:25"));
        assert!(matches!(hops.admit("b:25"), Admission::Failing(_)));
        probe.succeeded();
        assert_eq!(hops.answering("b:25"), Answering::Yes);
    }
}
