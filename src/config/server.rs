//! `[server]`, `[limits]`, `[relay]` and `[recipients]`: who talks to the proxy,
//! within which limits, and for which domains and recipients it takes mail.

use super::{Invalid, at_least_one, invalid};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ByteSize, DomainName, Network};

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
    /// Behind a load balancer (HAProxy `send-proxy` or `send-proxy-v2`): a
    /// connection from `proxy_networks` must begin with a PROXY protocol header
    /// (v1 or v2), and the client it names is the client for every check,
    /// limit, log line, Received header and archive record. Others connect as
    /// themselves and may not send one.
    pub proxy_protocol: bool,
    /// The load balancers' addresses.
    pub proxy_networks: Vec<Network>,
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
            proxy_protocol: false,
            proxy_networks: Vec::new(),
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
    #[serde(with = "super::types::bytes")]
    pub message_size_limit: usize,
    /// Longest line, CRLF included, in commands and in message text (RFC 5321 4.5.3.1.6).
    #[serde(with = "super::types::bytes")]
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
    /// Wait for each line of message data (RFC 5321 4.5.3.2.5: at least 3 minutes).
    /// Both are deadlines for a whole line, not idle timers: a client that drips a
    /// byte at a time is closed all the same.
    #[serde(with = "humantime_serde")]
    pub data_timeout: Duration,
    /// After the first `data_timeout` of a message's data, it must keep coming at
    /// this many bytes a second on average (Postfix's `smtpd_min_data_rate`), so a
    /// client sending a whole line every few seconds cannot hold a session for an
    /// hour. 0 turns it off.
    pub min_data_rate: u64,
    /// How long one session may last in all.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// Above this share of `server.max_connections` in use, the server is under
    /// stress and waits only `stress_timeout` for commands and data (Postfix's
    /// stress mode).
    pub stress_threshold: f64,
    #[serde(with = "humantime_serde")]
    pub stress_timeout: Duration,
    /// Message data held in memory by all sessions together; past it, a message
    /// being received gets `451 4.3.1` instead of more memory.
    pub data_memory: ByteSize,
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
            min_data_rate: 500,
            session_timeout: Duration::from_secs(3600),
            stress_threshold: 0.8,
            stress_timeout: Duration::from_secs(10),
            data_memory: ByteSize(256 << 20),
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
    /// Look the recipient up in the directory (`[ldap]`).
    #[serde(default)]
    pub ldap: bool,
    /// The directory search for an address: `%s` the address, `%u` its local
    /// part, `%d` its domain. Default: Active Directory's mail and proxyAddresses.
    pub filter: Option<String>,
    /// Where this domain's entries are searched, instead of `ldap.base`.
    pub base: Option<String>,
}

/// `[metrics]`: Prometheus metrics and a health check over HTTP.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where `GET /metrics` and `GET /healthz` are served, such as
    /// "127.0.0.1:9187". Unset: off.
    pub listen: Option<SocketAddr>,
}

impl ServerConfig {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if self.listen.is_empty() {
            return Err(invalid(
                &[&["server", "listen"]],
                "server.listen: give at least one address, such as [\"0.0.0.0:25\"]",
            ));
        }
        at_least_one(["server", "max_connections"], self.max_connections)?;
        at_least_one(
            ["server", "max_connections_per_ip"],
            self.max_connections_per_ip,
        )?;
        if self.proxy_protocol && self.proxy_networks.is_empty() {
            return Err(invalid(
                &[&["server", "proxy_protocol"], &["server", "proxy_networks"]],
                "server.proxy_protocol = true needs server.proxy_networks: the load balancers' \
                 addresses, such as [\"10.0.0.0/8\"]",
            ));
        }
        Ok(())
    }
}

impl LimitsConfig {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        at_least_one(["limits", "message_size_limit"], self.message_size_limit)?;
        at_least_one(["limits", "recipient_limit"], self.recipient_limit)?;
        at_least_one(["limits", "error_limit"], self.error_limit)?;
        if !(self.stress_threshold > 0.0 && self.stress_threshold <= 1.0) {
            return Err(invalid(
                &[&["limits", "stress_threshold"]],
                format!(
                    "limits.stress_threshold = {}: give a share of max_connections between 0 and 1, such as 0.8",
                    self.stress_threshold
                ),
            ));
        }
        if self.line_length_limit < 512 {
            return Err(invalid(
                &[&["limits", "line_length_limit"]],
                format!(
                    "limits.line_length_limit = {}: it must be at least 512 (RFC 5321 \
                     4.5.3.1.4 allows command lines of 512 octets); the default is 1000",
                    self.line_length_limit
                ),
            ));
        }
        Ok(())
    }
}

impl RecipientsConfig {
    /// Every table names a hosted domain and one way to know its recipients.
    pub(super) fn validate(
        &self,
        is_hosted: &dyn Fn(&str) -> bool,
        directory: bool,
    ) -> Result<(), Invalid> {
        for (domain, how) in &self.domains {
            let table = format!("recipients.domains.\"{domain}\"");
            let path = |key: &'static str| -> Vec<&str> {
                let mut p = vec!["recipients", "domains", domain.as_str()];
                if !key.is_empty() {
                    p.push(key);
                }
                p
            };
            if !is_hosted(domain) {
                return Err(invalid(
                    &[&path("")],
                    format!(
                        "{table}: {domain} is not in relay.hosted_domains; add it there or remove this table"
                    ),
                ));
            }
            let ways: Vec<&str> = [
                ("file", how.file.is_some()),
                ("callout", how.callout),
                ("ldap", how.ldap),
            ]
            .into_iter()
            .filter_map(|(name, given)| given.then_some(name))
            .collect();
            match ways.as_slice() {
                [] => {
                    return Err(invalid(
                        &[&path("")],
                        format!(
                            "{table}: give file = \"recipients.txt\", callout = true or ldap = true"
                        ),
                    ));
                }
                [_] => {}
                [first, second, ..] => {
                    return Err(invalid(
                        &[&path(first), &path(second)],
                        format!(
                            "{table}: give one of file, callout and ldap, not {first} and {second}"
                        ),
                    ));
                }
            }
            if (how.filter.is_some() || how.base.is_some()) && !how.ldap {
                let key = if how.filter.is_some() {
                    "filter"
                } else {
                    "base"
                };
                return Err(invalid(
                    &[&path(key)],
                    format!("{table}: {key} is for directory lookups; add ldap = true"),
                ));
            }
            if how.ldap && !directory {
                return Err(invalid(
                    &[&path("ldap"), &["ldap", "url"]],
                    format!(
                        "{table}: ldap = true needs the directory: give ldap.url and ldap.base"
                    ),
                ));
            }
            if let Some(filter) = &how.filter {
                super::directory::check_filter(filter, &path("filter"))?;
            }
            if let Some(base) = &how.base {
                super::directory::check_dn(base, &path("base"))?;
            }
        }
        Ok(())
    }
}
