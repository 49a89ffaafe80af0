//! Admission: how many connections the server holds, in all, per client address
//! and per network, and where the server is in its life. The listener admits by
//! these counts; sessions read them (shorter timeouts under stress, a shutdown
//! coming).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::reply::Reply;

/// Where the server is in its life; sessions watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Stopping: no new connections; sessions finish what they are doing (a
    /// message being received is read and queued) and close at the next command.
    Draining,
    /// The grace period is over: every session says `421 4.3.2` and closes, even
    /// in the middle of a message (which is then not queued).
    Closing,
}

/// Counts of open connections, shared by all listeners.
pub struct ConnectionLimits {
    /// One permit per connection; waiting for all of them is how shutdown knows
    /// that every session has ended.
    pub total: Arc<Semaphore>,
    pub max_total: usize,
    /// Open connections per client address, and per client network (IPv4 /24,
    /// IPv6 /64).
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    per_network: Mutex<HashMap<String, usize>>,
    max_per_ip: usize,
    /// A tenth of the connections is kept for other networks: no one network may
    /// hold more than this, whatever `max_connections_per_ip` says.
    max_per_network: usize,
    /// Above this share of `max_total` open, the server is under stress.
    stress_threshold: f64,
    /// Whether it is: sessions watch it, so waits going on when it begins are
    /// cut short too, not only those that begin later.
    stressed: tokio::sync::watch::Sender<bool>,
}

/// Holds a connection's place in the counts until the session ends.
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
    network: String,
    permit: Option<OwnedSemaphorePermit>,
}

fn decrement<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, usize>>, key: &K) {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(count) = map.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            map.remove(key);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        decrement(&self.limits.per_ip, &self.ip);
        decrement(&self.limits.per_network, &self.network);
        drop(self.permit.take());
        self.limits.note_stress();
    }
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_ip: usize, stress_threshold: f64) -> Arc<Self> {
        Arc::new(ConnectionLimits {
            stress_threshold,
            stressed: tokio::sync::watch::Sender::new(false),
            total: Arc::new(Semaphore::new(max_total)),
            max_total,
            per_ip: Mutex::new(HashMap::new()),
            per_network: Mutex::new(HashMap::new()),
            max_per_ip,
            max_per_network: (max_total - max_total / 10).max(1),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max_total - self.total.available_permits()
    }

    /// Whether more than `stress_threshold` (a share) of the connections are in use.
    pub fn under_stress(&self) -> bool {
        self.open() as f64 > self.stress_threshold * self.max_total as f64
    }

    /// Tells the sessions when the server comes under stress, or out of it.
    pub fn stress_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stressed.subscribe()
    }

    fn note_stress(&self) {
        let now = self.under_stress();
        self.stressed.send_if_modified(|was| {
            let changed = *was != now;
            *was = now;
            changed
        });
    }

    /// A place for a new connection, or the reply that refuses it.
    /// The error names the limit, for the metrics.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, (&'static str, Reply)> {
        let Ok(permit) = self.total.clone().try_acquire_owned() else {
            return Err((
                "max_connections",
                Reply::new(421, "4.7.0", "Error: too many connections; try again later"),
            ));
        };
        let network = crate::policy::mailbomb::network_of(ip);
        let mut per_network = self.per_network.lock().unwrap_or_else(|p| p.into_inner());
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if per_network.get(&network).copied().unwrap_or(0) >= self.max_per_network {
            return Err((
                "network_share",
                Reply::new(
                    421,
                    "4.7.0",
                    format!("Error: too many connections from {network}; try again later"),
                ),
            ));
        }
        if per_ip.get(&ip).copied().unwrap_or(0) >= self.max_per_ip {
            return Err((
                "max_connections_per_ip",
                Reply::new(
                    421,
                    "4.7.0",
                    format!("Error: too many connections from {ip}; try again later"),
                ),
            ));
        }
        *per_network.entry(network.clone()).or_insert(0) += 1;
        *per_ip.entry(ip).or_insert(0) += 1;
        drop((per_network, per_ip));
        self.note_stress();
        Ok(Slot {
            limits: self.clone(),
            ip,
            network,
            permit: Some(permit),
        })
    }
}
