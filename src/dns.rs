//! DNS for the checks and for delivery: MX and address lookups (RFC 5321 5.1, null
//! MX of RFC 7505), reverse names, and blocklist queries. hickory-resolver, with the
//! system's name servers or those of `[dns] servers`.

use anyhow::Context;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

use crate::config::DnsConfig;

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
    resolver: TokioResolver,
    /// Where lookups are counted, once the server has metrics.
    metrics: std::sync::OnceLock<std::sync::Arc<crate::metrics::Metrics>>,
}

fn classify(e: &NetError) -> DnsError {
    if e.is_nx_domain() || e.is_no_records_found() {
        DnsError::NotFound
    } else {
        DnsError::Temporary(e.to_string())
    }
}

impl Dns {
    pub fn new(config: &DnsConfig) -> anyhow::Result<Dns> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if config.servers.is_empty() {
            TokioResolver::builder_tokio()
                .map_err(|e| anyhow::anyhow!("cannot read the system's DNS configuration: {e}"))
                .context(crate::config::Setting::new(&["dns", "servers"]))?
        } else {
            let servers = config
                .servers
                .iter()
                .map(|server: &SocketAddr| {
                    let mut ns = NameServerConfig::udp_and_tcp(server.ip());
                    for connection in &mut ns.connections {
                        connection.port = server.port();
                    }
                    ns
                })
                .collect();
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
        };
        let options = builder.options_mut();
        options.timeout = config.timeout;
        options.attempts = 2;
        options.ndots = 0;
        options.negative_max_ttl = Some(Duration::from_secs(300));
        let resolver = builder
            .build()
            .map_err(|e| anyhow::anyhow!("DNS resolver: {e}"))
            .context(crate::config::Setting::new(&["dns", "servers"]))?;
        Ok(Dns {
            resolver,
            metrics: std::sync::OnceLock::new(),
        })
    }

    /// The resolver itself, for the sender authentication (same servers and
    /// timeouts).
    /// Counts this resolver's lookups and failures from now on.
    pub fn count_into(&self, metrics: std::sync::Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// One lookup of `kind`; a failure is an error other than "no such name".
    fn counted<T>(&self, kind: &str, result: Result<T, DnsError>) -> Result<T, DnsError> {
        if let Some(metrics) = self.metrics.get() {
            metrics.dns_lookup(kind, matches!(result, Err(DnsError::Temporary(_))));
        }
        result
    }

    pub fn resolver(&self) -> TokioResolver {
        self.resolver.clone()
    }

    /// The mail hosts of a domain: its MX hosts by preference, or the domain itself
    /// when it has no MX but has addresses (RFC 5321 5.1).
    pub async fn mail_hosts(&self, domain: &str) -> Result<MailHosts, DnsError> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        let looked_up = self.resolver.mx_lookup(fqdn.as_str()).await;
        if let Some(metrics) = self.metrics.get() {
            let failed = looked_up
                .as_ref()
                .err()
                .is_some_and(|e| !e.is_nx_domain() && !e.is_no_records_found());
            metrics.dns_lookup("mx", failed);
        }
        match looked_up {
            Ok(lookup) => {
                let mut mx: Vec<(u16, String)> = lookup
                    .answers()
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
            }
            Err(e) if e.is_nx_domain() => return Err(DnsError::NotFound),
            Err(e) if e.is_no_records_found() => {}
            Err(e) => return Err(DnsError::Temporary(e.to_string())),
        }
        // No MX: the domain's own addresses, if it has any.
        self.addresses(domain).await?;
        Ok(MailHosts::Hosts(vec![
            domain.trim_end_matches('.').to_string(),
        ]))
    }

    /// A and AAAA addresses of a host.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        let lookup = self.counted(
            "address",
            self.resolver
                .lookup_ip(fqdn.as_str())
                .await
                .map_err(|e| classify(&e)),
        )?;
        let addresses: Vec<IpAddr> = lookup.iter().collect();
        if addresses.is_empty() {
            return Err(DnsError::NotFound);
        }
        Ok(addresses)
    }

    /// The A records of a name (blocklist answers are 127.0.0.x).
    pub async fn ipv4(&self, name: &str) -> Result<Vec<Ipv4Addr>, DnsError> {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        let lookup = self.counted(
            "a",
            self.resolver
                .ipv4_lookup(fqdn.as_str())
                .await
                .map_err(|e| classify(&e)),
        )?;
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect())
    }

    /// The client's name: its PTR, confirmed by an address lookup of that name
    /// (otherwise anyone could claim any name in their reverse zone).
    pub async fn confirmed_name(&self, ip: IpAddr) -> Option<String> {
        let lookup = self
            .counted(
                "ptr",
                self.resolver
                    .reverse_lookup(ip)
                    .await
                    .map_err(|e| classify(&e)),
            )
            .ok()?;
        for record in lookup.answers() {
            if let RData::PTR(ptr) = &record.data {
                let name = ptr.0.to_string().trim_end_matches('.').to_lowercase();
                if self.addresses(&name).await.is_ok_and(|a| a.contains(&ip)) {
                    return Some(name);
                }
            }
        }
        None
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
