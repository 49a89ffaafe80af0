//! `[backend]`, `[outbound]`, `[queue]` and `[store]`: where accepted mail goes
//! and how it waits for delivery.

use super::{Invalid, at_least_one, host_and_port, invalid};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ByteSize;

/// Whether to use STARTTLS towards a server mailmoat delivers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    Off,
    /// STARTTLS when the server offers it; plain text otherwise.
    Opportunistic,
    /// STARTTLS or no delivery (the message waits in the queue).
    Required,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    /// The internal mail server, `host:port`.
    pub address: String,
    pub starttls: TlsMode,
    /// Check the backend's certificate and name. Turn off only for a self-signed
    /// certificate on a network you trust.
    pub tls_verify: bool,
    /// Extra CA certificate (PEM) to trust for the backend.
    pub ca_file: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Wait for the greeting and the EHLO reply of a new connection: a server that
    /// takes TCP but never speaks is given up on after this.
    #[serde(with = "humantime_serde")]
    pub greeting_timeout: Duration,
    /// Wait for each reply of the backend to MAIL, RCPT and the other commands.
    /// A reply to the end of data later than this makes the hop count as not
    /// answering (the attempt itself waits `data_end_timeout`).
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Wait for the `354` after DATA (RFC 5321 4.5.3.2.3: 2 minutes).
    #[serde(with = "humantime_serde")]
    pub data_start_timeout: Duration,
    /// Wait for the next hop to take each block of message data (RFC 5321
    /// 4.5.3.2.4: 3 minutes).
    #[serde(with = "humantime_serde")]
    pub data_block_timeout: Duration,
    /// Wait for the reply to the end of data (RFC 5321 4.5.3.2.6: 10 minutes; a
    /// content filter may take its time, and giving up early can deliver the
    /// message twice).
    #[serde(with = "humantime_serde")]
    pub data_end_timeout: Duration,
    /// While a next hop (the backend, a relay host, an MX host) does not answer,
    /// one delivery (a probe) tries it this often; the moment one works, the
    /// mail waiting for it goes.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// How long an idle connection to the backend is kept for reuse.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            address: "127.0.0.1:2526".into(),
            starttls: TlsMode::Off,
            tls_verify: true,
            ca_file: None,
            connect_timeout: Duration::from_secs(30),
            greeting_timeout: Duration::from_secs(60),
            probe_interval: Duration::from_secs(5),
            command_timeout: Duration::from_secs(300),
            data_start_timeout: Duration::from_secs(120),
            data_block_timeout: Duration::from_secs(180),
            data_end_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// How mail for domains the proxy does not host leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboundRoute {
    /// To the domain's MX hosts, looked up in DNS.
    Mx,
    /// Through `relayhost` (a smart host).
    Relayhost,
    /// To the backend, which routes it on.
    Backend,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    pub route: OutboundRoute,
    /// The smart host, `host:port`, for route = "relayhost".
    pub relayhost: Option<String>,
    /// The port of MX hosts (25; other values are for tests and odd networks).
    pub port: u16,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            route: OutboundRoute::Mx,
            relayhost: None,
            port: 25,
        }
    }
}

/// How the spool makes accepted mail durable before the `250`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlushMode {
    /// One syncfs(2) per batch of messages received at the same time: the fastest,
    /// but it also flushes whatever else is pending on that file system, so give the
    /// spool a file system of its own.
    Syncfs,
    /// fdatasync(2) of each message and envelope file: slower under load, touches
    /// nothing else.
    Fsync,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// The spool folder: the queue itself (one folder per state).
    pub path: PathBuf,
    pub flush: FlushMode,
    /// Messages delivered at the same time.
    pub delivery_workers: usize,
    /// Deliveries at once to any one next hop (the backend, the relay host, each
    /// MX host), so one that hangs holds only its share of the workers
    /// (Postfix's `default_destination_concurrency_limit`). Unset: half of
    /// `delivery_workers`.
    pub destination_concurrency: Option<usize>,
    /// First retry after a temporary failure; each later one waits twice as long.
    #[serde(with = "humantime_serde")]
    pub min_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// After this long in the queue, undelivered recipients are bounced.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// With less than this free on the spool's file system, new mail gets
    /// `452 4.3.1` at MAIL FROM (Postfix's `queue_minfree`). Unset: four times
    /// `limits.message_size_limit`.
    pub min_free_space: Option<ByteSize>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            path: "var/queue".into(),
            flush: FlushMode::Syncfs,
            delivery_workers: 32,
            destination_concurrency: None,
            min_backoff: Duration::from_secs(300),
            max_backoff: Duration::from_secs(3600),
            max_lifetime: Duration::from_secs(5 * 24 * 3600),
            min_free_space: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The embedded store (sled) for small state: the recipient-callout cache.
    pub path: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: "var/db".into(),
        }
    }
}

impl QueueConfig {
    /// `destination_concurrency` in force.
    pub fn destination_concurrency(&self) -> usize {
        self.destination_concurrency
            .unwrap_or(self.delivery_workers / 2)
            .max(1)
    }

    pub(super) fn validate(&self) -> Result<(), Invalid> {
        at_least_one(["queue", "delivery_workers"], self.delivery_workers)?;
        if let Some(n) = self.destination_concurrency {
            at_least_one(["queue", "destination_concurrency"], n)?;
        }
        if self.min_backoff > self.max_backoff {
            return Err(invalid(
                &[&["queue", "min_backoff"], &["queue", "max_backoff"]],
                "queue.min_backoff must not be longer than queue.max_backoff",
            ));
        }
        Ok(())
    }
}

impl BackendConfig {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if self.address.trim().is_empty() {
            return Err(invalid(
                &[&["backend", "address"]],
                "backend.address is empty: give the backend as host:port, such as \"10.0.0.5:25\"",
            ));
        }
        host_and_port(["backend", "address"], &self.address)
    }
}

impl OutboundConfig {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if self.route == OutboundRoute::Relayhost
            && self
                .relayhost
                .as_deref()
                .is_none_or(|r| r.trim().is_empty())
        {
            return Err(invalid(
                &[&["outbound", "route"]],
                "outbound.route = \"relayhost\" needs outbound.relayhost = \"host:port\"",
            ));
        }
        Ok(())
    }
}
