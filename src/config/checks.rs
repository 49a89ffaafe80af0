//! `[dns]`, `[checks]`, `[mailbomb]`, `[tls]` and `[auth]`: the defences and who
//! may log in.

use super::{Invalid, invalid};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Network;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Name servers, `ip:port`. Empty: the system's (/etc/resolv.conf). A local
    /// caching resolver (Unbound on the gateway) is what the deployment guide
    /// asks for.
    pub servers: Vec<SocketAddr>,
    /// The budget of one lookup: past it, a temporary failure.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long one attempt waits before the next goes to the next server (the
    /// earlier may still answer).
    #[serde(with = "humantime_serde")]
    pub attempt_timeout: Duration,
    /// How long an answer with records is kept at least, whatever its TTL says
    /// (unbound's cache-min-ttl): a zone publishing TTL 0 would otherwise make
    /// every message ask again. Zero follows the TTLs exactly.
    #[serde(with = "humantime_serde")]
    pub positive_ttl_min: Duration,
    /// How long a negative answer (no such name, no such record) is kept when
    /// its SOA says less or nothing; and at most.
    #[serde(with = "humantime_serde")]
    pub negative_ttl_min: Duration,
    #[serde(with = "humantime_serde")]
    pub negative_ttl_max: Duration,
    /// Answers kept at most.
    pub cache_entries: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            servers: Vec::new(),
            timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_millis(400),
            positive_ttl_min: Duration::from_secs(10),
            negative_ttl_min: Duration::from_secs(60),
            negative_ttl_max: Duration::from_secs(3600),
            cache_entries: 100_000,
        }
    }
}

/// One DNS blocklist.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Dnsbl {
    /// The list's zone, e.g. "zen.spamhaus.org".
    pub zone: String,
    /// Points a listing adds to the client's score.
    #[serde(default = "one")]
    pub weight: u32,
    /// Only these answers count (e.g. ["127.0.0.2", "127.0.0.4"]); empty: any
    /// 127.0.0.0/8 answer.
    #[serde(default)]
    pub answers: Vec<Ipv4Addr>,
}

fn one() -> u32 {
    1
}

/// Where the DNSBL verdict is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsblAt {
    /// `554` instead of the banner; the client never gets to MAIL.
    Connect,
    /// `554 5.7.1` to each recipient but postmaster.
    Rcpt,
}

/// Connection and sender checks. Trusted networks and logged-in clients skip
/// them; see README, "Precedence".
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChecksConfig {
    pub dnsbl: Vec<Dnsbl>,
    /// Score at which a client is refused.
    pub dnsbl_threshold: u32,
    pub dnsbl_at: DnsblAt,
    /// The sender's domain must have MX or address records (450 4.1.8 while DNS
    /// fails, 550 5.1.8 when it does not exist).
    pub sender_domain_exists: bool,
    /// Refuse a HELO that gives this server's own name or address.
    pub helo_not_ours: bool,
    /// Look up the client's reverse name (for rules and lists).
    pub reverse_dns: bool,
    /// Wait this long before the banner; a client that talks first is refused
    /// (postscreen's pregreet test). 0: no wait.
    #[serde(with = "humantime_serde")]
    pub greet_delay: Duration,
    /// Files with one entry per line, `#` comments; reloaded when they change.
    /// Clients (address or CIDR) always let in, and refused at connect.
    pub client_allow_file: Option<PathBuf>,
    pub client_deny_file: Option<PathBuf>,
    /// Reverse-DNS domains refused at connect (`example.net` covers its subdomains).
    pub client_name_deny_file: Option<PathBuf>,
    /// Sender domains refused at MAIL FROM.
    pub sender_deny_file: Option<PathBuf>,
}

impl Default for ChecksConfig {
    fn default() -> Self {
        ChecksConfig {
            dnsbl: Vec::new(),
            dnsbl_threshold: 1,
            dnsbl_at: DnsblAt::Rcpt,
            sender_domain_exists: true,
            helo_not_ours: true,
            reverse_dns: false,
            greet_delay: Duration::ZERO,
            client_allow_file: None,
            client_deny_file: None,
            client_name_deny_file: None,
            sender_deny_file: None,
        }
    }
}

/// Mail-bomb limits: counts per client (IPv4 /24, IPv6 /64), per sender, per
/// recipient and per message body, over sliding windows. Each answers 4.7.x.
/// 0 turns a limit off.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailBombConfig {
    /// New connections per client network per minute.
    pub connections_per_minute: u32,
    /// Messages and recipients per client network per hour.
    pub messages_per_hour: u32,
    pub recipients_per_hour: u32,
    /// Messages per sender address per hour.
    pub messages_per_sender_per_hour: u32,
    /// Messages to one recipient per `recipient_window`, from anyone.
    pub messages_per_recipient: u32,
    #[serde(with = "humantime_serde")]
    pub recipient_window: Duration,
    /// Copies of the same body per `body_window`.
    pub identical_bodies: u32,
    #[serde(with = "humantime_serde")]
    pub body_window: Duration,
    /// Keys tracked per counter at most; beyond it the quietest are forgotten,
    /// so a flood of addresses cannot exhaust memory.
    pub max_tracked: usize,
    /// Trusted networks and logged-in clients are not counted.
    pub exempt_trusted: bool,
}

impl Default for MailBombConfig {
    fn default() -> Self {
        MailBombConfig {
            connections_per_minute: 0,
            messages_per_hour: 0,
            recipients_per_hour: 0,
            messages_per_sender_per_hour: 0,
            messages_per_recipient: 0,
            recipient_window: Duration::from_secs(3600),
            identical_bodies: 0,
            body_window: Duration::from_secs(3600),
            max_tracked: 100_000,
            exempt_trusted: true,
        }
    }
}

/// Certificate and key for STARTTLS and implicit TLS. Without them, no TLS.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM: the certificate, then its chain.
    pub cert_file: Option<PathBuf>,
    /// PEM private key.
    pub key_file: Option<PathBuf>,
}

/// Where SMTP AUTH checks passwords.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthSource {
    /// No AUTH offered.
    Off,
    /// `auth.users_file`, argon2id hashes (`mailmoat passwd add NAME`).
    Users,
    /// AUTH against the backend, which holds the accounts.
    Backend,
    /// The directory (`[ldap]`): the entry is found, then bound as with the password.
    Ldap,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub source: AuthSource,
    pub users_file: Option<PathBuf>,
    /// Clients that may log in without TLS (everyone else: only after STARTTLS).
    pub plaintext_networks: Vec<Network>,
    /// Failed logins from one address, then one from a name, before a lockout.
    pub max_failures_per_ip: u32,
    pub max_failures_per_user: u32,
    /// Failures older than this are forgotten.
    #[serde(with = "humantime_serde")]
    pub failure_window: Duration,
    /// How long a lockout lasts.
    #[serde(with = "humantime_serde")]
    pub lockout: Duration,
    /// The wait before answering a failed login.
    #[serde(with = "humantime_serde")]
    pub failure_delay: Duration,
    /// Logged-in users may send only as themselves (their login, or login@a hosted
    /// domain) and as `sender_logins` allows.
    pub restrict_senders: bool,
    /// Sender address (or "@domain") → the logins that may use it.
    pub sender_logins: BTreeMap<String, Vec<String>>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            source: AuthSource::Off,
            users_file: None,
            plaintext_networks: Vec::new(),
            max_failures_per_ip: 5,
            max_failures_per_user: 20,
            failure_window: Duration::from_secs(900),
            lockout: Duration::from_secs(900),
            failure_delay: Duration::from_secs(1),
            restrict_senders: true,
            sender_logins: BTreeMap::new(),
        }
    }
}

impl TlsConfig {
    pub(super) fn validate(&self, server: &super::ServerConfig) -> Result<(), Invalid> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            let given: &[&str] = if self.cert_file.is_some() {
                &["tls", "cert_file"]
            } else {
                &["tls", "key_file"]
            };
            return Err(invalid(
                &[given],
                "tls: give both cert_file and key_file, or neither",
            ));
        }
        if !server.listen_tls.is_empty() && self.cert_file.is_none() {
            return Err(invalid(
                &[&["server", "listen_tls"]],
                "server.listen_tls needs [tls] cert_file and key_file",
            ));
        }
        Ok(())
    }
}

impl AuthConfig {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if self.source == AuthSource::Users && self.users_file.is_none() {
            return Err(invalid(
                &[&["auth", "source"]],
                "auth.source = \"users\" needs auth.users_file = \"users.txt\" (mailmoat passwd add NAME fills it)",
            ));
        }
        Ok(())
    }
}

impl DnsConfig {
    /// The name servers asked: `servers`, or the system's (resolv.conf).
    pub fn servers_in_force(&self) -> Result<Vec<SocketAddr>, String> {
        if !self.servers.is_empty() {
            return Ok(self.servers.clone());
        }
        let (system, _) = hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| format!("cannot read the system's DNS configuration: {e}"))?;
        let mut found: Vec<SocketAddr> = Vec::new();
        for server in system.name_servers() {
            let address = SocketAddr::new(server.ip, 53);
            if !found.contains(&address) {
                found.push(address);
            }
        }
        Ok(found)
    }

    /// Whether a name server in force runs on this host (a local caching
    /// resolver, as the deployment guide asks for).
    pub fn has_local_resolver(&self) -> bool {
        self.servers_in_force()
            .is_ok_and(|list| list.iter().any(|s| s.ip().is_loopback()))
    }

    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if self.attempt_timeout.is_zero() || self.attempt_timeout > self.timeout {
            return Err(invalid(
                &[&["dns", "attempt_timeout"], &["dns", "timeout"]],
                format!(
                    "dns.attempt_timeout = {}: give a wait between 0 and dns.timeout ({}), such as \"400ms\"",
                    humantime::format_duration(self.attempt_timeout),
                    humantime::format_duration(self.timeout)
                ),
            ));
        }
        if self.positive_ttl_min > Duration::from_secs(3600) {
            return Err(invalid(
                &[&["dns", "positive_ttl_min"]],
                format!(
                    "dns.positive_ttl_min = {}: keep answers at most an hour past what their zone says, such as \"10s\"",
                    humantime::format_duration(self.positive_ttl_min)
                ),
            ));
        }
        if self.negative_ttl_min > self.negative_ttl_max {
            return Err(invalid(
                &[&["dns", "negative_ttl_min"], &["dns", "negative_ttl_max"]],
                "dns.negative_ttl_min must not be longer than dns.negative_ttl_max",
            ));
        }
        if self.cache_entries == 0 {
            return Err(invalid(
                &[&["dns", "cache_entries"]],
                "dns.cache_entries = 0: keep at least some answers, such as 100000",
            ));
        }
        Ok(())
    }
}
