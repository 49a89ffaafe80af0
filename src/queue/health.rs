//! Whether a next hop answers, learnt from delivery (Postfix's destination
//! concurrency feedback, simply): a server that takes TCP but never speaks must not
//! hold every delivery worker for its timeouts.
//!
//! A next hop not known to work yet, or failing, gets one new connection at a time
//! (a probe); while it fails, a background probe tries it every `probe_interval`,
//! and mail for it is deferred without connecting. The first conversation that
//! works makes it healthy: full concurrency at once, and the mail that waited is
//! made due now.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::scheduler::Scheduler;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HopState {
    /// Never tried since start: one connection at a time until one works.
    Unknown,
    Healthy,
    Failing,
}

#[derive(Debug)]
struct Hop {
    state: HopState,
    /// A new connection to it is being made now (outside the healthy state).
    probing: bool,
    /// A background probe is running for it.
    prober: bool,
}

/// What delivery may do about a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Connect.
    Connect,
    /// Connect, as the one probe; report how it went.
    Probe,
    /// Another delivery is probing the hop now: wait for how that goes
    /// ([`NextHops::changed`]), then ask again.
    AwaitProbe,
    /// Do not connect: defer the mail; it goes when the hop answers again.
    Wait,
}

pub struct NextHops {
    hops: Mutex<HashMap<String, Hop>>,
    scheduler: Arc<Scheduler>,
    /// Told whenever a probe ends, well or badly.
    changed: tokio::sync::Notify,
}

impl NextHops {
    pub fn new(scheduler: Arc<Scheduler>) -> NextHops {
        NextHops {
            hops: Mutex::new(HashMap::new()),
            scheduler,
            changed: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Hop>> {
        self.hops.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May a new connection to `address` be made now?
    pub fn admit(&self, address: &str) -> Admission {
        let mut hops = self.lock();
        let hop = hops.entry(address.to_string()).or_insert(Hop {
            state: HopState::Unknown,
            probing: false,
            prober: false,
        });
        match (hop.state, hop.probing) {
            (HopState::Healthy, _) => Admission::Connect,
            (HopState::Unknown, false) => {
                hop.probing = true;
                Admission::Probe
            }
            (HopState::Unknown, true) => Admission::AwaitProbe,
            // Failing: the background probe is the one connection.
            (HopState::Failing, _) => Admission::Wait,
        }
    }

    /// A conversation with `address` worked. Returns whether that is news (it was
    /// failing or unknown): then the mail that waited for it is due now.
    pub fn succeeded(&self, address: &str) -> bool {
        let was = {
            let mut hops = self.lock();
            let hop = hops.entry(address.to_string()).or_insert(Hop {
                state: HopState::Unknown,
                probing: false,
                prober: false,
            });
            let was = hop.state;
            hop.state = HopState::Healthy;
            hop.probing = false;
            was
        };
        self.changed.notify_waiters();
        if was != HopState::Healthy {
            if was == HopState::Failing {
                tracing::info!(
                    relay = address,
                    "next hop answers again; delivering what waited"
                );
            }
            self.scheduler.flush();
            return true;
        }
        false
    }

    /// A connection to `address` failed or stalled. Returns whether a background
    /// probe should start (none is running for it yet).
    pub fn failed(&self, address: &str, why: &str) -> bool {
        let mut hops = self.lock();
        let hop = hops.entry(address.to_string()).or_insert(Hop {
            state: HopState::Unknown,
            probing: false,
            prober: false,
        });
        let news = hop.state != HopState::Failing;
        hop.state = HopState::Failing;
        hop.probing = false;
        if news {
            tracing::warn!(
                relay = address,
                error = why,
                "next hop failing; probing it alone until it answers"
            );
        }
        let start = !hop.prober;
        hop.prober = true;
        drop(hops);
        self.changed.notify_waiters();
        start
    }

    /// Resolves when a probe ends (or at once is fine: callers ask again).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// The background probe of `address` has ended.
    pub fn prober_ended(&self, address: &str) {
        if let Some(hop) = self.lock().get_mut(address) {
            hop.prober = false;
        }
    }

    /// The administrator says try now (`queue flush`): every failing hop gets one
    /// connection again at once instead of waiting for its background probe.
    pub fn retry_now(&self) {
        for hop in self.lock().values_mut() {
            if hop.state == HopState::Failing {
                hop.state = HopState::Unknown;
                hop.probing = false;
            }
        }
    }

    /// Whether `address` is known to answer (for metrics and `status`).
    pub fn is_healthy(&self, address: &str) -> Option<bool> {
        self.lock().get(address).and_then(|hop| match hop.state {
            HopState::Healthy => Some(true),
            HopState::Failing => Some(false),
            HopState::Unknown => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_probe_until_a_hop_answers_then_everyone() {
        let health = NextHops::new(Arc::new(Scheduler::default()));
        assert_eq!(health.admit("b:25"), Admission::Probe);
        assert_eq!(
            health.admit("b:25"),
            Admission::AwaitProbe,
            "one at a time; the others wait for it"
        );
        assert!(health.failed("b:25", "no greeting"));
        assert_eq!(
            health.admit("b:25"),
            Admission::Wait,
            "failing: no one connects"
        );
        assert!(health.succeeded("b:25"), "news: it answers again");
        assert_eq!(health.admit("b:25"), Admission::Connect);
        assert_eq!(health.admit("b:25"), Admission::Connect);
        assert!(!health.succeeded("b:25"));
        assert_eq!(health.is_healthy("b:25"), Some(true));
        // Failing again, then the administrator flushes: one probe at once.
        assert!(!health.failed("b:25", "refused"), "its prober runs on");
        assert_eq!(health.admit("b:25"), Admission::Wait);
        health.retry_now();
        assert_eq!(health.admit("b:25"), Admission::Probe);
    }
}
