//! The accept loop: bounds connections in all and per client address, and starts a
//! session task for each connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::admission::{ConnectionLimits, Phase};
use super::connection::Connection;
use super::proxy_protocol::{self, Header};
use super::session::{self, Shared};
use crate::reply::Reply;

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
