//! The configuration file: TOML, every key defaulted, validated with errors that name
//! the file, the line and what is allowed. `packaging/mailmoat.toml` documents every key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Everything mailmoat reads from its configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: LimitsConfig,
    pub relay: RelayConfig,
    pub recipients: RecipientsConfig,
    pub backend: BackendConfig,
    pub outbound: OutboundConfig,
    pub queue: QueueConfig,
    pub store: StoreConfig,
    pub rules: RulesConfig,
    pub archive: ArchiveConfig,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    pub dns: DnsConfig,
    pub checks: ChecksConfig,
    pub mailbomb: MailBombConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Addresses to accept SMTP on.
    pub listen: Vec<SocketAddr>,
    /// Addresses to accept SMTP over implicit TLS on (RFC 8314; port 465).
    pub listen_tls: Vec<SocketAddr>,
    /// The name this proxy gives in its banner, EHLO reply and Received: headers.
    pub hostname: String,
    /// Text after the hostname in the 220 greeting. No version, by default.
    pub banner: String,
    /// Simultaneous connections in all; more get `421 4.7.0`.
    pub max_connections: usize,
    /// Simultaneous connections from one client address; more get `421 4.7.0`.
    pub max_connections_per_ip: usize,
    /// On shutdown, how long sessions in progress get to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec!["127.0.0.1:2525".parse().expect("valid address")],
            listen_tls: Vec::new(),
            hostname: system_hostname(),
            banner: "ESMTP".into(),
            max_connections: 2000,
            max_connections_per_ip: 50,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// What to do with a bare CR or bare LF in the dialogue or the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BareLineEndings {
    /// Refuse the command or message with `500 5.5.2` (RFC 5321 2.3.8 allows neither).
    Reject,
    /// Accept the message and turn each bare CR or LF into CRLF. Only `<CRLF>.<CRLF>`
    /// still ends the data, so nothing can be smuggled.
    Normalize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest message accepted, in octets (announced with SIZE, RFC 1870).
    pub message_size_limit: usize,
    /// Longest line, CRLF included, in commands and in message text (RFC 5321 4.5.3.1.6).
    pub line_length_limit: usize,
    /// Recipients per message; more get `452 4.5.3`.
    pub recipient_limit: usize,
    /// Bad commands in one session before `421` and disconnect.
    pub error_limit: usize,
    /// NOOP, RSET, VRFY and HELP commands in one session before `421` and disconnect.
    pub junk_command_limit: usize,
    /// Wait for the next command (RFC 5321 4.5.3.2.7: at least 5 minutes).
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Wait for the next block of message data (RFC 5321 4.5.3.2.5: at least 3 minutes).
    #[serde(with = "humantime_serde")]
    pub data_timeout: Duration,
    pub bare_line_endings: BareLineEndings,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            message_size_limit: 10 * 1024 * 1024,
            line_length_limit: 1000,
            recipient_limit: 100,
            error_limit: 20,
            junk_command_limit: 100,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            bare_line_endings: BareLineEndings::Reject,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Domains this proxy receives mail for; their mail goes to the backend.
    pub hosted_domains: Vec<DomainName>,
    /// Also receive mail for every subdomain of the hosted domains.
    pub hosted_subdomains: bool,
    /// Clients that may send to any domain.
    pub trusted_networks: Vec<Network>,
    /// Clients that may never relay, even inside a trusted network or authenticated.
    pub never_relay_networks: Vec<Network>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            hosted_domains: Vec::new(),
            hosted_subdomains: false,
            trusted_networks: vec![
                Network("127.0.0.0/8".parse().expect("valid network")),
                Network("::1/128".parse().expect("valid network")),
            ],
            never_relay_networks: Vec::new(),
        }
    }
}

/// The answer to RCPT while the backend cannot be asked whether a recipient exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CalloutUnreachable {
    /// `451 4.4.3`: the client tries again later; nothing is accepted unchecked.
    Tempfail,
    /// Accept the recipient unchecked (risks bouncing later, i.e. backscatter).
    Accept,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecipientsConfig {
    /// How each hosted domain's recipients are validated. A hosted domain without an
    /// entry accepts every local part (and `mailmoat check` warns about it).
    pub domains: BTreeMap<String, DomainRecipients>,
    /// How long the backend's "this recipient exists" is remembered.
    #[serde(with = "humantime_serde")]
    pub callout_positive_ttl: Duration,
    /// How long the backend's "no such recipient" is remembered.
    #[serde(with = "humantime_serde")]
    pub callout_negative_ttl: Duration,
    /// How long to wait for the backend's answer to a probe.
    #[serde(with = "humantime_serde")]
    pub callout_timeout: Duration,
    pub callout_unreachable: CalloutUnreachable,
}

impl Default for RecipientsConfig {
    fn default() -> Self {
        RecipientsConfig {
            domains: BTreeMap::new(),
            callout_positive_ttl: Duration::from_secs(24 * 3600),
            callout_negative_ttl: Duration::from_secs(600),
            callout_timeout: Duration::from_secs(30),
            callout_unreachable: CalloutUnreachable::Tempfail,
        }
    }
}

/// Recipient validation of one hosted domain: a list file or a probe of the backend.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DomainRecipients {
    /// One address per line; `@domain` accepts every local part; `#` starts a comment.
    pub file: Option<PathBuf>,
    /// Ask the backend with `RCPT TO` whether the recipient exists.
    #[serde(default)]
    pub callout: bool,
}

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
    /// Wait for each reply of the backend.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
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
            command_timeout: Duration::from_secs(300),
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
    /// First retry after a temporary failure; each later one waits twice as long.
    #[serde(with = "humantime_serde")]
    pub min_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// After this long in the queue, undelivered recipients are bounced.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            path: "var/queue".into(),
            flush: FlushMode::Syncfs,
            delivery_workers: 16,
            min_backoff: Duration::from_secs(300),
            max_backoff: Duration::from_secs(3600),
            max_lifetime: Duration::from_secs(5 * 24 * 3600),
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Name servers, `ip:port`. Empty: the system's (/etc/resolv.conf).
    pub servers: Vec<SocketAddr>,
    /// Wait for one answer.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            servers: Vec::new(),
            timeout: Duration::from_secs(5),
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// Keep refused, quarantined and discarded mail (on by default).
    pub enabled: bool,
    /// The archive folder.
    pub path: PathBuf,
    /// Records older than this are removed.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Beyond this many bytes of archived messages, the oldest are removed.
    pub max_size: u64,
    /// Reports of archived mail go to this address, through the backend.
    pub backup_address: Option<String>,
    /// … and/or to this separate mail server, `host:port`.
    pub backup_server: Option<String>,
    /// 0: one report per archived message; else one digest per interval.
    #[serde(with = "humantime_serde")]
    pub digest_interval: Duration,
    /// Secret for the signed release addresses in reports; unset: no release by
    /// mail.
    pub release_key: Option<String>,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            enabled: true,
            path: "quarantine".into(),
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_size: 1024 * 1024 * 1024,
            backup_address: None,
            backup_server: None,
            digest_interval: Duration::ZERO,
            release_key: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// The folder of rule files (`*.toml`, read in name order).
    pub path: PathBuf,
    /// Nested zip archives opened when looking for attachments (1: only the
    /// attached archive itself).
    pub zip_depth: usize,
    /// Bytes decompressed from one attached archive to open the archives inside
    /// it; beyond that, only their names are seen.
    pub zip_bytes: usize,
    /// Entries of one archive looked at.
    pub zip_entries: usize,
}

impl Default for RulesConfig {
    fn default() -> Self {
        let limits = crate::mime::Limits::default();
        RulesConfig {
            path: "rules".into(),
            zip_depth: limits.zip_depth,
            zip_bytes: limits.zip_bytes,
            zip_entries: limits.zip_entries,
        }
    }
}

impl RulesConfig {
    pub fn limits(&self) -> crate::mime::Limits {
        crate::mime::Limits {
            zip_depth: self.zip_depth,
            zip_bytes: self.zip_bytes,
            zip_entries: self.zip_entries,
            ..crate::mime::Limits::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter: `info`, `debug`, `mailmoat::queue=debug,info` …
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// A domain name as the administrator wrote it, checked and lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainName(pub String);

impl<'de> Deserialize<'de> for DomainName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match crate::address::Mailbox::parse(&format!("x@{text}")) {
            Ok(m) if m.domain_name().is_some() => {
                Ok(DomainName(m.domain_name().unwrap_or_default().to_string()))
            }
            _ => Err(serde::de::Error::custom(format!(
                "'{text}' is not a domain name; write one such as example.com"
            ))),
        }
    }
}

impl Serialize for DomainName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A client network: CIDR, or a single address meaning just that host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network(pub IpNet);

impl Network {
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.0.contains(ip)
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if let Ok(net) = text.parse::<IpNet>() {
            return Ok(Network(net));
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Network(IpNet::from(ip)));
        }
        Err(serde::de::Error::custom(format!(
            "'{text}' is not a network; write an address or a CIDR network such as 10.0.0.0/8"
        )))
    }
}

impl Serialize for Network {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

/// A configuration error, worded for the administrator: file, line, key, what to do.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Configuration problems that do not stop the server but that an administrator
/// should know about (printed by `mailmoat check` and logged at start).
pub type Warnings = Vec<String>;

impl Config {
    /// Reads, parses and validates a configuration file. Relative paths in it are
    /// made relative to the file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            message: format!("cannot read the configuration file: {e}"),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, path, base)
    }

    /// Parses configuration text; `file` names it in errors, `base` anchors relative paths.
    pub fn parse(text: &str, file: &Path, base: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_path_buf(),
            line: e.span().map(|span| line_of(text, span.start)),
            message: e.message().trim().to_string(),
        })?;
        config.resolve_paths(base);
        config.validate().map_err(|(needle, message)| ConfigError {
            file: file.to_path_buf(),
            line: needle
                .and_then(|n| text.find(&n))
                .map(|at| line_of(text, at)),
            message,
        })?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let anchor = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        anchor(&mut self.queue.path);
        anchor(&mut self.store.path);
        anchor(&mut self.rules.path);
        anchor(&mut self.archive.path);
        for path in [
            &mut self.tls.cert_file,
            &mut self.tls.key_file,
            &mut self.auth.users_file,
            &mut self.backend.ca_file,
            &mut self.checks.client_allow_file,
            &mut self.checks.client_deny_file,
            &mut self.checks.client_name_deny_file,
            &mut self.checks.sender_deny_file,
        ]
        .into_iter()
        .flatten()
        {
            anchor(path);
        }
        for domain in self.recipients.domains.values_mut() {
            if let Some(file) = &mut domain.file {
                anchor(file);
            }
        }
    }

    /// Checks that keys agree with each other. Errors carry text to find the line by.
    fn validate(&self) -> Result<(), (Option<String>, String)> {
        if self.server.listen.is_empty() {
            return Err((
                Some("listen".into()),
                "server.listen: give at least one address, such as \"0.0.0.0:25\"".into(),
            ));
        }
        let positive = [
            ("limits.message_size_limit", self.limits.message_size_limit),
            ("limits.recipient_limit", self.limits.recipient_limit),
            ("limits.error_limit", self.limits.error_limit),
            ("server.max_connections", self.server.max_connections),
            (
                "server.max_connections_per_ip",
                self.server.max_connections_per_ip,
            ),
            ("queue.delivery_workers", self.queue.delivery_workers),
        ];
        for (key, value) in positive {
            if value == 0 {
                let short = key.rsplit('.').next().unwrap_or(key);
                return Err((Some(short.into()), format!("{key} must be at least 1")));
            }
        }
        if self.limits.line_length_limit < 512 {
            return Err((
                Some("line_length_limit".into()),
                "limits.line_length_limit must be at least 512 (RFC 5321 4.5.3.1.4 allows \
                 command lines of 512 octets)"
                    .into(),
            ));
        }
        if self.queue.min_backoff > self.queue.max_backoff {
            return Err((
                Some("min_backoff".into()),
                "queue.min_backoff must not be longer than queue.max_backoff".into(),
            ));
        }
        if self.backend.address.trim().is_empty() {
            return Err((
                Some("address".into()),
                "backend.address: give the backend as host:port, such as \"10.0.0.5:25\"".into(),
            ));
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err((
                Some("[tls]".into()),
                "tls: give both cert_file and key_file, or neither".into(),
            ));
        }
        if !self.server.listen_tls.is_empty() && self.tls.cert_file.is_none() {
            return Err((
                Some("listen_tls".into()),
                "server.listen_tls needs [tls] cert_file and key_file".into(),
            ));
        }
        if self.outbound.route == OutboundRoute::Relayhost
            && self
                .outbound
                .relayhost
                .as_deref()
                .is_none_or(|r| r.trim().is_empty())
        {
            return Err((
                Some("route".into()),
                "outbound.route = \"relayhost\" needs outbound.relayhost = \"host:port\"".into(),
            ));
        }
        if self.auth.source == AuthSource::Users && self.auth.users_file.is_none() {
            return Err((
                Some("source".into()),
                "auth.source = \"users\" needs auth.users_file = \"users.txt\" (mailmoat passwd add NAME fills it)".into(),
            ));
        }
        if let Some(address) = self.archive.backup_address.as_deref()
            && crate::address::Mailbox::parse(address).is_err()
        {
            return Err((
                Some("backup_address".into()),
                format!(
                    "archive.backup_address '{address}' is not an address; write one such as quarantine@example.com"
                ),
            ));
        }
        if let Some(key) = self.archive.release_key.as_deref()
            && !key.is_empty()
            && key.len() < 16
        {
            return Err((
                Some("release_key".into()),
                "archive.release_key is too short; use at least 16 random characters (openssl rand -hex 32)".into(),
            ));
        }
        for (domain, how) in &self.recipients.domains {
            let key = format!("recipients.domains.\"{domain}\"");
            if !self.is_hosted(domain) {
                return Err((
                    Some(domain.clone()),
                    format!(
                        "{key}: {domain} is not in relay.hosted_domains; add it there or remove this table"
                    ),
                ));
            }
            match (&how.file, how.callout) {
                (Some(_), true) => {
                    return Err((
                        Some(domain.clone()),
                        format!("{key}: give either file or callout = true, not both"),
                    ));
                }
                (None, false) => {
                    return Err((
                        Some(domain.clone()),
                        format!("{key}: give file = \"recipients.txt\" or callout = true"),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Is this (lower-case) domain one the proxy receives mail for?
    pub fn is_hosted(&self, domain: &str) -> bool {
        self.relay.hosted_domains.iter().any(|hosted| {
            domain == hosted.0
                || (self.relay.hosted_subdomains
                    && domain
                        .strip_suffix(hosted.0.as_str())
                        .is_some_and(|prefix| prefix.ends_with('.')))
        })
    }

    /// Things that work but that an administrator should know about.
    pub fn warnings(&self) -> Warnings {
        let mut warnings = Vec::new();
        if self.relay.hosted_domains.is_empty() {
            warnings.push(
                "relay.hosted_domains is empty: no inbound mail will be accepted".to_string(),
            );
        }
        for domain in &self.relay.hosted_domains {
            if !self.recipients.domains.contains_key(&domain.0) {
                warnings.push(format!(
                    "{}: no recipient validation (recipients.domains.\"{}\"): mail to unknown \
                     users is accepted and bounced later, which sends backscatter",
                    domain.0, domain.0
                ));
            }
        }
        warnings
    }

    /// The effective settings, as `mailmoat check` prints them.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print settings: {e}\n"))
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"), Path::new("/etc/mailmoat"))
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.limits.line_length_limit, 1000);
        assert_eq!(config.queue.path, PathBuf::from("/etc/mailmoat/var/queue"));
    }

    #[test]
    fn bad_network_names_line_and_fix() {
        let err = parse(
            "[relay]\nhosted_domains = [\"example.test\"]\ntrusted_networks = [\"10.0.0.300/8\"]\n",
        )
        .unwrap_err();
        assert_eq!(err.line, Some(3));
        assert!(err.message.contains("10.0.0.0/8"), "{err}");
        assert!(err.to_string().starts_with("test.toml:3: "), "{err}");
    }

    #[test]
    fn unknown_key_is_an_error() {
        let err = parse("[relay]\nhosted_domain = [\"example.test\"]\n").unwrap_err();
        assert_eq!(err.line, Some(2));
        assert!(err.message.contains("hosted_domain"), "{err}");
    }

    #[test]
    fn single_address_is_a_host_network() {
        let config = parse("[relay]\ntrusted_networks = [\"192.0.2.7\"]\n").unwrap();
        assert!(config.relay.trusted_networks[0].contains(&"192.0.2.7".parse().unwrap()));
        assert!(!config.relay.trusted_networks[0].contains(&"192.0.2.8".parse().unwrap()));
    }

    #[test]
    fn recipients_for_unhosted_domain_is_an_error() {
        let err = parse(
            "[relay]\nhosted_domains = [\"example.test\"]\n\n[recipients.domains.\"other.test\"]\ncallout = true\n",
        )
        .unwrap_err();
        assert_eq!(err.line, Some(4));
        assert!(err.message.contains("not in relay.hosted_domains"), "{err}");
    }

    #[test]
    fn subdomains_are_hosted_only_when_asked_and_only_on_a_dot() {
        let mut config = parse("[relay]\nhosted_domains = [\"Example.TEST\"]\n").unwrap();
        assert!(config.is_hosted("example.test"));
        assert!(!config.is_hosted("sub.example.test"));
        config.relay.hosted_subdomains = true;
        assert!(config.is_hosted("sub.example.test"));
        assert!(!config.is_hosted("badexample.test"));
    }

    #[test]
    fn durations_are_human_readable() {
        let config = parse("[queue]\nmin_backoff = \"30s\"\nmax_backoff = \"2h\"\n").unwrap();
        assert_eq!(config.queue.min_backoff, Duration::from_secs(30));
        assert!(config.to_toml().contains("max_backoff = \"2h\""));
    }
}
