//! Connection and sender checks: allow and deny lists from files, DNS blocklists
//! with weights and a threshold, the sender domain's existence, and HELO names
//! that claim to be this server.
//!
//! Precedence (README, "Precedence"): the never-relay list beats everything;
//! trusted networks, logged-in clients and the client allow list skip the deny
//! lists, DNSBLs and mail-bomb limits; `postmaster@` is always let through DNSBLs.

use anyhow::Context;

use crate::config::Setting;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;

use crate::config::{ChecksConfig, Config};
use crate::dns::{Dns, DnsError, dnsbl_query};
use crate::reply::Reply;
use crate::verdict::Decision;

/// A list file, read again whenever it changes.
struct ListFile<T> {
    path: PathBuf,
    parse: fn(&str) -> Option<T>,
    loaded: Mutex<(Option<SystemTime>, Vec<T>)>,
}

impl<T: Clone> ListFile<T> {
    fn new(path: &Path, parse: fn(&str) -> Option<T>) -> anyhow::Result<Self> {
        let list = ListFile {
            path: path.to_path_buf(),
            parse,
            loaded: Mutex::new((None, Vec::new())),
        };
        list.read()?;
        Ok(list)
    }

    /// Reads the file; errors name the file and line.
    fn read(&self) -> anyhow::Result<Vec<T>> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.path.display()))?;
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            match (self.parse)(entry) {
                Some(value) => entries.push(value),
                None => anyhow::bail!(
                    "{}:{}: '{entry}' is not a valid entry",
                    self.path.display(),
                    n + 1
                ),
            }
        }
        Ok(entries)
    }

    fn entries(&self) -> Vec<T> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.0 != modified || modified.is_none() {
            match self.read() {
                Ok(entries) => *loaded = (modified, entries),
                Err(e) => {
                    tracing::error!(error = %e, "list not reloaded; the entries in force stay")
                }
            }
        }
        loaded.1.clone()
    }
}

fn parse_network(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

fn parse_domain(text: &str) -> Option<String> {
    let domain = text
        .trim_start_matches("*.")
        .trim_start_matches('.')
        .trim_end_matches('.')
        .to_lowercase();
    (!domain.is_empty()
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.'))
    .then_some(domain)
}

/// A domain or a subdomain of one in the list.
fn in_domains(domain: &str, list: &[String]) -> bool {
    let domain = domain.trim_end_matches('.').to_lowercase();
    list.iter()
        .any(|d| domain == *d || domain.ends_with(&format!(".{d}")))
}

fn refuse(check: &str, code: u16, status: &str, text: String, reason: String) -> Decision {
    Decision::refuse(check, Reply::new(code, status, text), reason)
}

pub struct Reputation {
    config: ChecksConfig,
    dns: Arc<Dns>,
    hostname: String,
    client_allow: Option<ListFile<IpNet>>,
    client_deny: Option<ListFile<IpNet>>,
    name_deny: Option<ListFile<String>>,
    sender_deny: Option<ListFile<String>>,
    /// DNSBL score and listings per client, for ten minutes.
    dnsbl_cache: Mutex<HashMap<IpAddr, Listing>>,
}

/// When a client was looked up, its score, and the lists that have it.
type Listing = (Instant, u32, Vec<String>);

const DNSBL_CACHE: Duration = Duration::from_secs(600);
const DNSBL_CACHE_MAX: usize = 100_000;

impl Reputation {
    pub fn new(config: &Config, dns: Arc<Dns>) -> anyhow::Result<Reputation> {
        let c = &config.checks;
        let networks = |p: &Option<PathBuf>, key: &str| {
            p.as_deref()
                .map(|p| ListFile::new(p, parse_network))
                .transpose()
                .context(Setting::new(&["checks", key]))
        };
        let domains = |p: &Option<PathBuf>, key: &str| {
            p.as_deref()
                .map(|p| ListFile::new(p, parse_domain))
                .transpose()
                .context(Setting::new(&["checks", key]))
        };
        Ok(Reputation {
            config: c.clone(),
            dns,
            hostname: config.server.hostname.to_lowercase(),
            client_allow: networks(&c.client_allow_file, "client_allow_file")?,
            client_deny: networks(&c.client_deny_file, "client_deny_file")?,
            name_deny: domains(&c.client_name_deny_file, "client_name_deny_file")?,
            sender_deny: domains(&c.sender_deny_file, "sender_deny_file")?,
            dnsbl_cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &ChecksConfig {
        &self.config
    }

    /// On the client allow list: skips the deny lists, DNSBLs and limits.
    pub fn allowed(&self, ip: IpAddr) -> bool {
        self.client_allow
            .as_ref()
            .is_some_and(|list| list.entries().iter().any(|n| n.contains(&ip)))
    }

    /// The client's confirmed reverse name, if looking it up is on.
    pub async fn client_name(&self, ip: IpAddr) -> Option<String> {
        if !self.config.reverse_dns {
            return None;
        }
        self.dns.confirmed_name(ip).await
    }

    /// The client address deny list.
    pub fn client_deny(&self, ip: IpAddr) -> Result<(), Decision> {
        if let Some(list) = &self.client_deny
            && list.entries().iter().any(|n| n.contains(&ip))
        {
            return Err(refuse(
                "lists.client_deny",
                554,
                "5.7.1",
                format!("Service unavailable; client [{ip}] is not allowed to send mail here"),
                "client address on the deny list".into(),
            ));
        }
        Ok(())
    }

    /// The reverse-name deny list (only for a client whose name was looked up).
    pub fn client_name_deny(&self, ip: IpAddr, name: Option<&str>) -> Result<(), Decision> {
        if let (Some(list), Some(name)) = (&self.name_deny, name)
            && in_domains(name, &list.entries())
        {
            return Err(refuse(
                "lists.client_name_deny",
                554,
                "5.7.1",
                format!(
                    "Service unavailable; client {name} [{ip}] is not allowed to send mail here"
                ),
                "client name on the deny list".into(),
            ));
        }
        Ok(())
    }

    /// The DNSBL verdict; at RCPT, mail to postmaster always gets through
    /// (RFC 5321 4.5.1: a listed sender must still be able to reach a human).
    pub async fn dnsbl(&self, ip: IpAddr, recipient: Option<&str>) -> Result<(), Decision> {
        if self.config.dnsbl.is_empty() {
            return Ok(());
        }
        if recipient.is_some_and(|r| r.to_lowercase().starts_with("postmaster@")) {
            return Ok(());
        }
        let (score, listed) = self.dnsbl_score(ip).await;
        if score >= self.config.dnsbl_threshold {
            return Err(refuse(
                "dnsbl",
                554,
                "5.7.1",
                format!(
                    "Service unavailable; client [{ip}] blocked using {}",
                    listed.join(", ")
                ),
                format!("score {score} of threshold {}", self.config.dnsbl_threshold),
            ));
        }
        Ok(())
    }

    async fn dnsbl_score(&self, ip: IpAddr) -> (u32, Vec<String>) {
        if let Some((at, score, listed)) = self
            .dnsbl_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ip)
            && at.elapsed() < DNSBL_CACHE
        {
            return (*score, listed.clone());
        }
        let mut score = 0;
        let mut listed = Vec::new();
        for list in &self.config.dnsbl {
            match self.dns.ipv4(&dnsbl_query(ip, &list.zone)).await {
                Ok(answers) => {
                    let counts = answers.iter().any(|a| {
                        if list.answers.is_empty() {
                            a.octets()[0] == 127
                        } else {
                            list.answers.contains(a)
                        }
                    });
                    if counts {
                        score += list.weight;
                        listed.push(list.zone.clone());
                    }
                }
                Err(DnsError::NotFound) => {}
                // A list that does not answer does not block anyone.
                Err(DnsError::Temporary(why)) => {
                    tracing::warn!(zone = %list.zone, error = %why, "DNSBL lookup failed")
                }
            }
        }
        let mut cache = self.dnsbl_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= DNSBL_CACHE_MAX {
            cache.retain(|_, (at, _, _)| at.elapsed() < DNSBL_CACHE);
            if cache.len() >= DNSBL_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(ip, (Instant::now(), score, listed.clone()));
        (score, listed)
    }

    /// HELO/EHLO must not claim to be this server (its name or its address).
    pub fn helo(&self, helo: &str, local: IpAddr) -> Result<(), Decision> {
        if !self.config.helo_not_ours {
            return Ok(());
        }
        let name = helo.trim_end_matches('.').to_lowercase();
        let literal = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_start_matches("ipv6:");
        let ours = name == self.hostname || literal.parse::<IpAddr>().is_ok_and(|ip| ip == local);
        if ours {
            return Err(refuse(
                "helo",
                550,
                "5.7.1",
                format!("<{helo}>: Helo command rejected: that is my name, not yours"),
                "HELO claims to be this server".into(),
            ));
        }
        Ok(())
    }

    /// The sender domain deny list (the null sender has no domain to judge).
    pub fn sender_deny(&self, sender_domain: Option<&str>) -> Result<(), Decision> {
        if let (Some(list), Some(domain)) = (&self.sender_deny, sender_domain)
            && in_domains(domain, &list.entries())
        {
            return Err(refuse(
                "lists.sender_deny",
                550,
                "5.7.1",
                format!("Sender domain {domain} is not accepted here"),
                "sender domain on the deny list".into(),
            ));
        }
        Ok(())
    }

    /// The sender domain must exist (MX or address records) and take mail.
    pub async fn sender_domain(&self, sender_domain: Option<&str>) -> Result<(), Decision> {
        let Some(domain) = sender_domain else {
            return Ok(());
        };
        if !self.config.sender_domain_exists {
            return Ok(());
        }
        match self.dns.mail_hosts(domain).await {
            Ok(crate::dns::MailHosts::Hosts(_)) => Ok(()),
            // RFC 7505 3.2: a domain that takes no mail sends none either.
            Ok(crate::dns::MailHosts::NullMx) => Err(refuse(
                "sender_domain",
                550,
                "5.7.27",
                format!("Sender address rejected: domain {domain} accepts no mail (null MX)"),
                "sender domain has a null MX".into(),
            )),
            Err(DnsError::NotFound) => Err(refuse(
                "sender_domain",
                550,
                "5.1.8",
                format!("Sender address rejected: domain {domain} has no MX or address record"),
                "sender domain does not exist".into(),
            )),
            Err(DnsError::Temporary(why)) => Err(refuse(
                "sender_domain",
                450,
                "4.1.8",
                format!(
                    "Sender address rejected: cannot look up domain {domain} now; try again later"
                ),
                why,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_lists_cover_subdomains_and_nothing_else() {
        let list = vec!["dynamic.test".to_string()];
        assert!(in_domains("host-1.DYNAMIC.test.", &list));
        assert!(in_domains("dynamic.test", &list));
        assert!(!in_domains("notdynamic.test", &list));
        assert_eq!(parse_domain("*.Example.NET"), Some("example.net".into()));
        assert_eq!(
            parse_network("192.0.2.7"),
            Some("192.0.2.7/32".parse().unwrap())
        );
        assert_eq!(parse_network("not a network"), None);
    }

    #[test]
    fn a_denied_reverse_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("names.txt"),
            "# dial-up pools\ndynamic.test\n",
        )
        .unwrap();
        let config = Config::parse(
            "[checks]\nclient_name_deny_file = \"names.txt\"\n[dns]\nservers = [\"127.0.0.1:9\"]\n",
            Path::new("t.toml"),
            dir.path(),
        )
        .unwrap();
        let dns = Arc::new(Dns::new(&config.dns).unwrap());
        let checks = Reputation::new(&config, dns).unwrap();
        let ip = "192.0.2.1".parse().unwrap();
        let refused = checks
            .client_name_deny(ip, Some("host-1.dynamic.test"))
            .unwrap_err();
        assert_eq!(
            (refused.reply.code, refused.by.to_string().as_str()),
            (554, "lists.client_name_deny")
        );
        assert!(
            checks
                .client_name_deny(ip, Some("mail.partner.test"))
                .is_ok()
        );
        assert!(checks.client_name_deny(ip, None).is_ok());
    }
}
