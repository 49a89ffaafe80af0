//! The accept loop: bounds connections in all and per client address, and starts a
//! session task for each connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::connection::Connection;
use super::proxy_protocol::{self, Header};
use super::session::{self, Shared};
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
}

/// Holds a connection's place in the counts until the session ends.
struct Slot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
    network: String,
    _permit: OwnedSemaphorePermit,
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
    }
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(ConnectionLimits {
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

    /// Whether more than `threshold` (a share) of the connections are in use.
    pub fn under_stress(&self, threshold: f64) -> bool {
        self.open() as f64 > threshold * self.max_total as f64
    }

    /// A place for a new connection, or the reply that refuses it.
    /// The error names the limit, for the metrics.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, (&'static str, Reply)> {
        let Ok(permit) = self.total.clone().try_acquire_owned() else {
            return Err((
                "max_connections",
                Reply::new(421, "4.7.0", "Error: too many connections; try again later"),
            ));
        };
        let network = crate::policy::limits::network_of(ip);
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
        Ok(Slot {
            limits: self.clone(),
            ip,
            network,
            _permit: permit,
        })
    }
}

/// Accepts connections until shutdown.
pub async fn accept_loop(
    listener: TcpListener,
    implicit_tls: bool,
    shared: Arc<Shared>,
    limits: Arc<ConnectionLimits>,
    mut shutdown: watch::Receiver<Phase>,
) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = Duration::from_millis(10);
                accepted
            }
            Err(e) => {
                // Out of file descriptors and the like: wait, then try again.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let balancer = crate::policy::relay::canonical(peer.ip());
        let server = &shared.config.server;
        if server.proxy_protocol && server.proxy_networks.iter().any(|n| n.contains(&balancer)) {
            // The client is whoever the balancer's header names: read it first.
            let (shared, limits) = (shared.clone(), limits.clone());
            tokio::spawn(async move {
                let mut stream = stream;
                let timeout = shared
                    .config
                    .limits
                    .command_timeout
                    .min(Duration::from_secs(30));
                match proxy_protocol::read(&mut stream, timeout).await {
                    Ok(Header::Proxied { client, local }) => {
                        start(stream, client, local, implicit_tls, &shared, &limits);
                    }
                    Ok(Header::Local) => {}
                    Err(why) => {
                        tracing::warn!(balancer = %balancer, error = %why, "connection refused: a load balancer in server.proxy_networks must send a PROXY header");
                        if let Some(metrics) = shared.metrics() {
                            metrics.connection_refused("proxy_header");
                        }
                    }
                }
            });
        } else {
            let local = stream.local_addr().unwrap_or(peer);
            start(stream, peer, local, implicit_tls, &shared, &limits);
        }
    }
}

/// Admits a client's connection (`client`, which connected to `local`) and
/// starts its session, or refuses it.
fn start(
    stream: TcpStream,
    client: SocketAddr,
    local: SocketAddr,
    implicit_tls: bool,
    shared: &Arc<Shared>,
    limits: &Arc<ConnectionLimits>,
) {
    let ip = crate::policy::relay::canonical(client.ip());
    match limits.admit(ip) {
        Ok(slot) => {
            let shared = shared.clone();
            let implicit_tls = implicit_tls.then(|| shared.tls.get()).flatten();
            tokio::spawn(async move {
                let _slot = slot;
                let metrics = shared.pipeline.metrics().cloned();
                let _open = metrics.map(crate::metrics::OpenConnection::new);
                let conn = match implicit_tls {
                    None => Connection::new(Box::new(stream), client, local),
                    // Implicit TLS (RFC 8314): the handshake comes before the banner.
                    Some(acceptor) => {
                        let timeout = shared.config.limits.command_timeout;
                        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => {
                                if let Some(metrics) = shared.metrics() {
                                    metrics.tls_session();
                                }
                                let mut conn = Connection::new(Box::new(tls), client, local);
                                conn.tls = true;
                                conn
                            }
                            _ => {
                                tracing::info!(client = %ip, "TLS handshake failed");
                                return;
                            }
                        }
                    }
                };
                session::run(conn, shared).await;
            });
        }
        Err((limit, reply)) => {
            if let Some(metrics) = shared.metrics() {
                metrics.connection_refused(limit);
            }
            let pipeline = shared.pipeline.clone();
            let kept = reply.clone();
            tokio::spawn(async move { pipeline.refuse_connection(ip, kept).await });
            tokio::spawn(refuse(stream, reply, shared.config.server.hostname.clone()));
        }
    }
}

async fn refuse(mut stream: TcpStream, reply: Reply, hostname: String) {
    let mut out = Vec::new();
    Reply {
        lines: vec![format!("{hostname} {}", reply.text())],
        ..reply
    }
    .write_to(&mut out);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
