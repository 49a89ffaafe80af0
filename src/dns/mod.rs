//! DNS for the checks, sender authentication and delivery: MX and address
//! lookups (RFC 5321 5.1, null MX of RFC 7505), reverse names, blocklist
//! queries, and the records SPF, DKIM, DMARC and ARC read.
//!
//! Every lookup goes through one [`engine::Engine`] — one query per name at a
//! time, answers cached (negative ones per RFC 2308), short attempts inside a
//! budget — so that a resolver that drops queries under load slows nothing to
//! its timeout. mail-auth asks through a hickory resolver pointed at the engine
//! on a loopback port ([`stub`]), served by a thread of its own.

pub mod engine;
mod stub;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, RecordType};

use crate::config::DnsConfig;
use engine::{Engine, Figures, Settings};

/// Why an answer could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// The name does not exist (NXDOMAIN) or has no such records.
    NotFound,
    /// Try again later: timeout, SERVFAIL, no server reachable.
    Temporary(String),
}

/// Where mail for a domain goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailHosts {
    /// Hosts in preference order.
    Hosts(Vec<String>),
    /// "0 ." (RFC 7505): the domain accepts no mail.
    NullMx,
}

pub struct Dns {
    engine: Arc<Engine>,
    /// For mail-auth: a resolver that asks the engine on its loopback port.
    resolver: TokioResolver,
    /// Ends the thread that serves the loopback port when dropped.
    _stub: StubThread,
    /// Where lookups are counted, once the server has metrics.
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
}

impl Dns {
    pub fn new(config: &DnsConfig) -> anyhow::Result<Dns> {
        let engine = Arc::new(Engine::new(Settings {
            servers: config
                .servers_in_force()
                .map_err(|e| anyhow::anyhow!(e))
                .context(crate::config::Setting::new(&["dns", "servers"]))?,
            budget: config.timeout,
            attempt_timeout: config.attempt_timeout,
            positive_ttl_min: config.positive_ttl_min,
            negative_ttl_min: config.negative_ttl_min,
            negative_ttl_max: config.negative_ttl_max,
            cache_entries: config.cache_entries,
        }));
        let (stub, address) = StubThread::start(engine.clone())
            .context(crate::config::Setting::new(&["dns", "servers"]))?;
        let mut server = NameServerConfig::udp_and_tcp(address.ip());
        for connection in &mut server.connections {
            connection.port = address.port();
        }
        let mut builder = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(vec![server]),
            TokioRuntimeProvider::default(),
        );
        let options = builder.options_mut();
        // The engine answers within its budget, with SERVFAIL when it must:
        // this side waits that long once, asks once, and keeps nothing.
        options.timeout = config.timeout + Duration::from_millis(500);
        options.attempts = 0;
        options.ndots = 0;
        options.cache_size = 0;
        options.num_concurrent_reqs = 1;
        let resolver = builder
            .build()
            .map_err(|e| anyhow::anyhow!("DNS resolver: {e}"))
            .context(crate::config::Setting::new(&["dns", "servers"]))?;
        Ok(Dns {
            engine,
            resolver,
            _stub: stub,
            metrics: std::sync::OnceLock::new(),
        })
    }

    /// Counts this resolver's lookups and failures from now on.
    pub fn count_into(&self, metrics: Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// What the engine has done: lookups, cache hits, queries, answers, timeouts.
    pub fn figures(&self) -> Figures {
        self.engine.figures()
    }

    /// The name servers asked.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.engine.settings().servers
    }

    /// The resolver for the sender authentication (mail-auth).
    pub fn resolver(&self) -> TokioResolver {
        self.resolver.clone()
    }

    /// One lookup of `kind`, counted; a failure is an error other than "no
    /// such name".
    async fn lookup(
        &self,
        counted_as: &str,
        name: &str,
        kind: RecordType,
    ) -> Result<Arc<Message>, DnsError> {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        let result = match Name::from_ascii(&fqdn) {
            Ok(name) => self
                .engine
                .lookup(&name, kind)
                .await
                .map_err(|e| DnsError::Temporary(e.to_string())),
            Err(_) => Err(DnsError::NotFound),
        };
        if let Some(metrics) = self.metrics.get() {
            metrics.dns_lookup(counted_as, matches!(result, Err(DnsError::Temporary(_))));
        }
        result
    }

    /// The records of `kind` in an answer; NotFound for NXDOMAIN or none.
    fn records<T>(
        answer: &Message,
        pick: impl Fn(&RData) -> Option<T>,
    ) -> Result<Vec<T>, DnsError> {
        if answer.metadata.response_code == ResponseCode::NXDomain {
            return Err(DnsError::NotFound);
        }
        let found: Vec<T> = answer
            .answers
            .iter()
            .filter_map(|r| pick(&r.data))
            .collect();
        if found.is_empty() {
            return Err(DnsError::NotFound);
        }
        Ok(found)
    }

    /// The mail hosts of a domain: its MX hosts by preference, or the domain itself
    /// when it has no MX but has addresses (RFC 5321 5.1).
    pub async fn mail_hosts(&self, domain: &str) -> Result<MailHosts, DnsError> {
        let answer = self.lookup("mx", domain, RecordType::MX).await?;
        if answer.metadata.response_code == ResponseCode::NXDomain {
            return Err(DnsError::NotFound);
        }
        let mut mx: Vec<(u16, String)> = answer
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => Some((mx.preference, mx.exchange.to_string())),
                _ => None,
            })
            .collect();
        if mx.len() == 1 && (mx[0].1 == "." || mx[0].1.is_empty()) {
            return Ok(MailHosts::NullMx);
        }
        if !mx.is_empty() {
            mx.sort_by_key(|(preference, _)| *preference);
            return Ok(MailHosts::Hosts(
                mx.into_iter()
                    .map(|(_, host)| host.trim_end_matches('.').to_string())
                    .collect(),
            ));
        }
        // No MX: the domain's own addresses, if it has any.
        self.addresses(domain).await?;
        Ok(MailHosts::Hosts(vec![
            domain.trim_end_matches('.').to_string(),
        ]))
    }

    /// A and AAAA addresses of a host.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let (v4, v6) = tokio::join!(
            self.lookup("address", host, RecordType::A),
            self.lookup("address", host, RecordType::AAAA)
        );
        let mut addresses = Vec::new();
        let mut failure = None;
        for answer in [v4, v6] {
            match answer.and_then(|a| {
                Self::records(&a, |data| match data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                    _ => None,
                })
            }) {
                Ok(found) => addresses.extend(found),
                Err(DnsError::NotFound) => {}
                Err(e) => failure = Some(e),
            }
        }
        match (addresses.is_empty(), failure) {
            (false, _) => Ok(addresses),
            (true, Some(e)) => Err(e),
            (true, None) => Err(DnsError::NotFound),
        }
    }

    /// The A records of a name (blocklist answers are 127.0.0.x).
    pub async fn ipv4(&self, name: &str) -> Result<Vec<Ipv4Addr>, DnsError> {
        let answer = self.lookup("a", name, RecordType::A).await?;
        match Self::records(&answer, |data| match data {
            RData::A(a) => Some(a.0),
            _ => None,
        }) {
            Err(DnsError::NotFound) => Ok(Vec::new()),
            other => other,
        }
    }

    /// The client's name: its PTR, confirmed by an address lookup of that name
    /// (otherwise anyone could claim any name in their reverse zone).
    pub async fn confirmed_name(&self, ip: IpAddr) -> Option<String> {
        let answer = self
            .lookup("ptr", &reverse_name(ip), RecordType::PTR)
            .await
            .ok()?;
        let names = Self::records(&answer, |data| match data {
            RData::PTR(ptr) => Some(ptr.0.to_string().trim_end_matches('.').to_lowercase()),
            _ => None,
        })
        .ok()?;
        for name in names {
            if self.addresses(&name).await.is_ok_and(|a| a.contains(&ip)) {
                return Some(name);
            }
        }
        None
    }
}

/// `10.2.0.192.in-addr.arpa`, `…ip6.arpa`.
fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => dnsbl_query(ip, "in-addr.arpa"),
        IpAddr::V6(_) => dnsbl_query(ip, "ip6.arpa"),
    }
}

/// The thread that serves the engine on a loopback port (its own runtime, so
/// that a configuration can be loaded where no runtime runs, as `check` does).
struct StubThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl StubThread {
    fn start(engine: Arc<Engine>) -> anyhow::Result<(StubThread, SocketAddr)> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, address) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("dns-stub".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let _ = ready.send(stub::start(engine).await);
                    let _ = stopped.await;
                });
            })?;
        let address = address
            .recv()
            .map_err(|e| anyhow::anyhow!("the DNS thread did not start: {e}"))?
            .map_err(|e| anyhow::anyhow!("cannot listen on loopback for DNS: {e}"))?;
        Ok((StubThread { stop: Some(stop) }, address))
    }
}

impl Drop for StubThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The name to query a blocklist for an address: reversed octets (IPv4) or
/// nibbles (IPv6), then the zone.
pub fn dnsbl_query(ip: IpAddr, zone: &str) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.{zone}")
        }
        IpAddr::V6(v6) => {
            let mut name = String::new();
            for byte in v6.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            format!("{name}{zone}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocklist_names() {
        assert_eq!(
            dnsbl_query("192.0.2.10".parse().unwrap(), "bl.example"),
            "10.2.0.192.bl.example"
        );
        assert!(
            dnsbl_query("2001:db8::1".parse().unwrap(), "bl.example").starts_with(
                "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.example"
            )
        );
    }
}
