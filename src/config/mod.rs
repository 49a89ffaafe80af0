//! The configuration file: TOML, every key defaulted, validated with errors that name
//! the file, the line of the key and what to write. `packaging/mailmoat.toml`
//! documents every key. One file per group of sections; this one holds the whole
//! and its checks.

mod archive;
mod checks;
mod delivery;
mod mime;
mod scanning;
mod sender_auth;
mod server;
mod shared;
mod types;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use archive::*;
pub use checks::*;
pub use delivery::*;
pub use mime::*;
pub use scanning::*;
pub use sender_auth::*;
pub use server::*;
pub use shared::*;
pub use types::*;

use crate::file_error::{FileError, Spans};

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
    pub mime: MimeConfig,
    pub archive: ArchiveConfig,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    pub dns: DnsConfig,
    pub checks: ChecksConfig,
    pub mailbomb: MailBombConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub sender_auth: SenderAuthConfig,
    pub greylist: GreylistConfig,
    pub antivirus: AntivirusConfig,
    pub spam: SpamConfig,
    /// State shared by several instances (Redis).
    pub shared: SharedConfig,
    /// Keys that sign the mail of trusted and logged-in clients, by From domain.
    pub dkim_sign: Vec<SigningKey>,
    /// The file it was read from (for reloading it).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// A configuration error, worded for the administrator: file, line of the key,
/// what to write.
pub type ConfigError = FileError;

/// A validation problem: the keys it is about (the first names the line; the
/// others are named in the message), and what to write.
struct Invalid {
    keys: Vec<Vec<String>>,
    message: String,
}

fn invalid(keys: &[&[&str]], message: impl Into<String>) -> Invalid {
    Invalid {
        keys: keys
            .iter()
            .map(|k| k.iter().map(|s| s.to_string()).collect())
            .collect(),
        message: message.into(),
    }
}

/// The setting an error is about, attached as context to an error found while
/// loading what the setting names (a certificate, a list file): the error is then
/// reported at the line of that key (see `Config::locate`).
#[derive(Debug, Clone)]
pub struct Setting(pub Vec<String>);

impl Setting {
    pub fn new<S: AsRef<str>>(path: &[S]) -> Setting {
        Setting(path.iter().map(|s| s.as_ref().to_string()).collect())
    }
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let quoted: Vec<String> = self
            .0
            .iter()
            .map(|s| {
                if s.contains('.') {
                    format!("\"{s}\"")
                } else {
                    s.clone()
                }
            })
            .collect();
        f.write_str(&quoted.join("."))
    }
}

/// `host:port` as the SMTP client connects to it: a name or an address (IPv6 in
/// brackets) and a port number.
fn is_host_and_port(value: &str) -> bool {
    if value.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return false;
    };
    port.parse::<u16>().is_ok_and(|p| p > 0)
        && !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Configuration problems that do not stop the server but that an administrator
/// should know about (printed by `mailmoat check` and logged at start).
pub type Warnings = Vec<String>;

impl Config {
    /// Reads, parses and validates a configuration file. Relative paths in it are
    /// made relative to the file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            FileError::new(
                path,
                None,
                format!("cannot read the configuration file: {e}"),
            )
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = Config::parse(&text, path, base)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// An error found loading what a setting names, at the line of that setting in
    /// the configuration file: an error tagged with a `Setting` anywhere in its
    /// chain is located; others are returned as they are.
    pub fn locate(&self, error: anyhow::Error) -> anyhow::Error {
        let Some(setting) = error.downcast_ref::<Setting>().cloned() else {
            return error;
        };
        let Some(source) = &self.source else {
            return error;
        };
        let text = std::fs::read_to_string(source).unwrap_or_default();
        let path: Vec<&str> = setting.0.iter().map(String::as_str).collect();
        let line = Spans::new(&text).nearest(&path);
        anyhow::Error::new(FileError::new(source, line, format!("{error:#}")))
    }

    /// Parses configuration text; `file` names it in errors, `base` anchors relative paths.
    pub fn parse(text: &str, file: &Path, base: &Path) -> Result<Config, ConfigError> {
        let mut config: Config =
            toml::from_str(text).map_err(|e| FileError::from_toml(file, text, &e))?;
        config.resolve_paths(base);
        config.validate().map_err(|invalid| {
            let spans = Spans::new(text);
            let line = |key: &Vec<String>| {
                let path: Vec<&str> = key.iter().map(String::as_str).collect();
                spans.nearest(&path)
            };
            let mut message = invalid.message;
            let also: Vec<String> = invalid.keys[1..]
                .iter()
                .filter_map(|k| line(k).map(|l| format!("{} at line {l}", k.join("."))))
                .collect();
            if !also.is_empty() {
                message = format!("{message} ({})", also.join(", "));
            }
            FileError::new(file, invalid.keys.first().and_then(line), message)
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
        for key in self
            .dkim_sign
            .iter_mut()
            .chain(self.sender_auth.arc_seal.as_mut())
        {
            anchor(&mut key.key_file);
        }
    }

    /// The authserv-id of our Authentication-Results headers.
    pub fn authserv_id(&self) -> &str {
        self.sender_auth
            .authserv_id
            .as_deref()
            .unwrap_or(&self.server.hostname)
    }

    /// Checks that keys agree with each other.
    fn validate(&self) -> Result<(), Invalid> {
        if self.server.listen.is_empty() {
            return Err(invalid(
                &[&["server", "listen"]],
                "server.listen: give at least one address, such as [\"0.0.0.0:25\"]",
            ));
        }
        let positive = [
            (
                ["limits", "message_size_limit"],
                self.limits.message_size_limit,
            ),
            (["limits", "recipient_limit"], self.limits.recipient_limit),
            (["limits", "error_limit"], self.limits.error_limit),
            (["server", "max_connections"], self.server.max_connections),
            (
                ["server", "max_connections_per_ip"],
                self.server.max_connections_per_ip,
            ),
            (["queue", "delivery_workers"], self.queue.delivery_workers),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(
                    &[&key],
                    format!("{} = 0: it must be at least 1", key.join(".")),
                ));
            }
        }
        if !(self.limits.stress_threshold > 0.0 && self.limits.stress_threshold <= 1.0) {
            return Err(invalid(
                &[&["limits", "stress_threshold"]],
                format!(
                    "limits.stress_threshold = {}: give a share of max_connections between 0 and 1, such as 0.8",
                    self.limits.stress_threshold
                ),
            ));
        }
        if self.limits.line_length_limit < 512 {
            return Err(invalid(
                &[&["limits", "line_length_limit"]],
                format!(
                    "limits.line_length_limit = {}: it must be at least 512 (RFC 5321 \
                     4.5.3.1.4 allows command lines of 512 octets); the default is 1000",
                    self.limits.line_length_limit
                ),
            ));
        }
        if let Some(problem) = self.shared.redis.as_ref().and_then(|url| url.problem()) {
            return Err(invalid(&[&["shared", "redis"]], problem));
        }
        if self.shared.timeout.is_zero() {
            return Err(invalid(
                &[&["shared", "timeout"]],
                "shared.timeout = 0: give the longest a Redis call may take, such as \"200ms\"",
            ));
        }
        if self.server.proxy_protocol && self.server.proxy_networks.is_empty() {
            return Err(invalid(
                &[&["server", "proxy_protocol"], &["server", "proxy_networks"]],
                "server.proxy_protocol = true needs server.proxy_networks: the load balancers' \
                 addresses, such as [\"10.0.0.0/8\"]",
            ));
        }
        if self.queue.min_backoff > self.queue.max_backoff {
            return Err(invalid(
                &[&["queue", "min_backoff"], &["queue", "max_backoff"]],
                "queue.min_backoff must not be longer than queue.max_backoff",
            ));
        }
        if self.backend.address.trim().is_empty() {
            return Err(invalid(
                &[&["backend", "address"]],
                "backend.address is empty: give the backend as host:port, such as \"10.0.0.5:25\"",
            ));
        }
        let servers = [
            ("backend", "address", Some(self.backend.address.as_str())),
            (
                "archive",
                "backup_server",
                self.archive.backup_server.as_deref(),
            ),
        ];
        for (section, key, value) in servers {
            if let Some(value) = value
                && !is_host_and_port(value)
            {
                return Err(invalid(
                    &[&[section, key]],
                    format!(
                        "{section}.{key} = \"{value}\" is not host:port; write one such as \"10.0.0.5:25\", \"exchange.corp.example:25\" or \"[2001:db8::5]:25\""
                    ),
                ));
            }
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            let given: &[&str] = if self.tls.cert_file.is_some() {
                &["tls", "cert_file"]
            } else {
                &["tls", "key_file"]
            };
            return Err(invalid(
                &[given],
                "tls: give both cert_file and key_file, or neither",
            ));
        }
        if !self.server.listen_tls.is_empty() && self.tls.cert_file.is_none() {
            return Err(invalid(
                &[&["server", "listen_tls"]],
                "server.listen_tls needs [tls] cert_file and key_file",
            ));
        }
        if self.outbound.route == OutboundRoute::Relayhost
            && self
                .outbound
                .relayhost
                .as_deref()
                .is_none_or(|r| r.trim().is_empty())
        {
            return Err(invalid(
                &[&["outbound", "route"]],
                "outbound.route = \"relayhost\" needs outbound.relayhost = \"host:port\"",
            ));
        }
        if self.auth.source == AuthSource::Users && self.auth.users_file.is_none() {
            return Err(invalid(
                &[&["auth", "source"]],
                "auth.source = \"users\" needs auth.users_file = \"users.txt\" (mailmoat passwd add NAME fills it)",
            ));
        }
        if let Some(address) = self.archive.backup_address.as_deref()
            && crate::address::Mailbox::parse(address).is_err()
        {
            return Err(invalid(
                &[&["archive", "backup_address"]],
                format!(
                    "archive.backup_address '{address}' is not an address; write one such as quarantine@example.com"
                ),
            ));
        }
        if let Some(key) = self.archive.release_key.as_ref().map(Secret::expose)
            && !key.is_empty()
            && key.len() < 16
        {
            return Err(invalid(
                &[&["archive", "release_key"]],
                "archive.release_key is too short; use at least 16 random characters (openssl rand -hex 32)",
            ));
        }
        for (domain, how) in &self.recipients.domains {
            let table = format!("recipients.domains.\"{domain}\"");
            let path = |key: &'static str| -> Vec<&str> {
                let mut p = vec!["recipients", "domains", domain.as_str()];
                if !key.is_empty() {
                    p.push(key);
                }
                p
            };
            if !self.is_hosted(domain) {
                return Err(invalid(
                    &[&path("")],
                    format!(
                        "{table}: {domain} is not in relay.hosted_domains; add it there or remove this table"
                    ),
                ));
            }
            match (&how.file, how.callout) {
                (Some(_), true) => {
                    return Err(invalid(
                        &[&path("file"), &path("callout")],
                        format!("{table}: give either file or callout = true, not both"),
                    ));
                }
                (None, false) => {
                    return Err(invalid(
                        &[&path("")],
                        format!("{table}: give file = \"recipients.txt\" or callout = true"),
                    ));
                }
                _ => {}
            }
        }
        self.validate_scanning()
    }

    fn validate_scanning(&self) -> Result<(), Invalid> {
        let grey = &self.greylist;
        if grey.ipv4_prefix > 32 || grey.ipv6_prefix > 128 {
            return Err(invalid(
                &[&["greylist", "ipv4_prefix"], &["greylist", "ipv6_prefix"]],
                "greylist: ipv4_prefix is at most 32 and ipv6_prefix at most 128 (24 and 64 are usual)",
            ));
        }
        if grey.retry_window <= grey.delay {
            return Err(invalid(
                &[&["greylist", "retry_window"], &["greylist", "delay"]],
                "greylist.retry_window must be longer than delay (such as \"2d\" against \"5m\")",
            ));
        }
        if let Some(clamd) = &self.antivirus.clamd
            && crate::scanners::clamd::Address::parse(clamd).is_none()
        {
            return Err(invalid(
                &[&["antivirus", "clamd"]],
                format!(
                    "antivirus.clamd = \"{clamd}\": write \"127.0.0.1:3310\" or \"unix:/run/clamav/clamd.ctl\""
                ),
            ));
        }
        if let Some(rspamd) = &self.spam.rspamd
            && crate::scanners::rspamd::Endpoint::parse(rspamd).is_none()
        {
            return Err(invalid(
                &[&["spam", "rspamd"]],
                format!("spam.rspamd = \"{rspamd}\": write \"http://127.0.0.1:11333\""),
            ));
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

    /// The free space the spool needs to take new mail.
    pub fn min_free_space(&self) -> u64 {
        self.queue
            .min_free_space
            .map_or(4 * self.limits.message_size_limit as u64, ByteSize::bytes)
    }

    /// Things that work but that an administrator should know about.
    pub fn warnings(&self) -> Warnings {
        let mut warnings = Vec::new();
        if self.server.proxy_protocol {
            for network in &self.server.proxy_networks {
                if network.0.prefix_len() == 0 {
                    warnings.push(format!(
                        "server.proxy_networks holds {}: any client may send a PROXY header \
                         and pass for any address; list only the load balancers",
                        network.0
                    ));
                }
            }
        }
        if self.server.max_connections_per_ip >= self.server.max_connections {
            warnings.push(format!(
                "server.max_connections_per_ip ({}) is not below server.max_connections ({}): \
                 one address could take every connection; a tenth of them stays kept for \
                 other networks all the same",
                self.server.max_connections_per_ip, self.server.max_connections
            ));
        }
        if self.relay.hosted_domains.is_empty() {
            warnings.push(
                "relay.hosted_domains is empty: no inbound mail will be accepted".to_string(),
            );
        }
        for (old, new) in self.rules.deprecated_keys() {
            warnings.push(format!(
                "rules.{old} is now rules.{new} (it limits every container, not only zip \
                 archives); the old name still works: rename it"
            ));
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

    /// The `section.key` settings that differ between two configurations.
    pub fn changed_settings(&self, other: &Config) -> Vec<String> {
        let table = |c: &Config| toml::Table::try_from(c).unwrap_or_default();
        let (old, new) = (table(self), table(other));
        let mut changed = Vec::new();
        let sections: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
        for section in sections {
            let empty = toml::Table::new();
            let of = |t: &toml::Table| t.get(section).and_then(|v| v.as_table()).cloned();
            let (a, b) = (of(&old).unwrap_or(empty.clone()), of(&new).unwrap_or(empty));
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                if a.get(key) != b.get(key) {
                    changed.push(format!("{section}.{key}"));
                }
            }
        }
        // A password in the Redis address prints hidden too.
        if self.shared.redis != other.shared.redis && !changed.iter().any(|c| c == "shared.redis") {
            changed.push("shared.redis".into());
        }
        // Secrets print alike whatever their value: compared here.
        for ((name, old), (_, new)) in self.secrets().into_iter().zip(other.secrets()) {
            if old != new {
                changed.push(name.to_string());
            }
        }
        changed
    }

    /// Every secret setting, by name.
    fn secrets(&self) -> [(&'static str, Option<&Secret>); 1] {
        [("archive.release_key", self.archive.release_key.as_ref())]
    }

    /// The effective settings, as `mailmoat check` prints them.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print settings: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"), Path::new("/etc/mailmoat"))
    }

    #[test]
    fn errors_and_printed_settings_never_show_a_secret() {
        for text in [
            "[archive]\nrelease_key = 98765432109876543\n",
            "[archive]\nrelease_key = \"s3cr3t-short\"\n",
            "[archive]\nrelease_key = [\"s3cr3t-in-a-list\"]\n",
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains("release_key"), "{err}");
            for secret in ["98765432109876543", "s3cr3t"] {
                assert!(!err.contains(secret), "{err}");
            }
        }
        let config = parse("[archive]\nrelease_key = \"s3cr3t-long-enough-0123\"\n").unwrap();
        assert!(!config.to_toml().contains("s3cr3t"));
        assert!(!format!("{config:?}").contains("s3cr3t"));
        assert!(config.to_toml().contains("release_key = \"(hidden)\""));
    }

    #[test]
    fn a_changed_redis_password_is_a_changed_setting() {
        let old = parse("[shared]\nredis = \"redis://:one@10.0.0.5\"\n").unwrap();
        let new = parse("[shared]\nredis = \"redis://:two@10.0.0.5\"\n").unwrap();
        assert_eq!(old.changed_settings(&new), ["shared.redis"]);
        assert!(old.changed_settings(&old.clone()).is_empty());
    }

    #[test]
    fn the_proxy_protocol_needs_its_balancers_and_warns_of_everyone() {
        let err = parse("[server]\nproxy_protocol = true\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs server.proxy_networks"), "{err}");
        let config =
            parse("[server]\nproxy_protocol = true\nproxy_networks = [\"0.0.0.0/0\"]\n").unwrap();
        let warnings = config.warnings();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("any client may send a PROXY header")),
            "{warnings:?}"
        );
        let config =
            parse("[server]\nproxy_protocol = true\nproxy_networks = [\"10.0.0.0/8\"]\n").unwrap();
        assert!(!config.warnings().iter().any(|w| w.contains("PROXY")));
    }

    #[test]
    fn the_old_zip_limits_still_count_with_a_warning() {
        let config = parse("[rules]\nzip_depth = 2\nzip_bytes = \"1MB\"\n").unwrap();
        let limits = config.rules.limits();
        assert_eq!(
            (limits.container_depth, limits.container_bytes),
            (2, 1 << 20)
        );
        let warnings = config.warnings();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("rules.zip_depth is now rules.container_depth")),
            "{warnings:?}"
        );
        let config = parse("[rules]\ncontainer_depth = 4\ncontainer_bytes = 1000\n").unwrap();
        let limits = config.rules.limits();
        assert_eq!((limits.container_depth, limits.container_bytes), (4, 1000));
        assert!(!config.warnings().iter().any(|w| w.contains("zip_")));
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
    fn validation_errors_point_at_the_line_of_the_key() {
        let text =
            "# the backend address is below\n[backend]\n# address of Exchange\naddress = \"\"\n";
        let err = parse(text).unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
        let both = parse(
            "[relay]\nhosted_domains = [\"example.test\"]\n\n[recipients.domains.\"example.test\"]\nfile = \"r.txt\"\ncallout = true\n",
        )
        .unwrap_err();
        assert_eq!(both.line, Some(5), "{both}");
        assert!(
            both.message
                .contains("recipients.domains.example.test.callout at line 6"),
            "{both}"
        );
    }

    #[test]
    fn durations_are_human_readable() {
        let config = parse("[queue]\nmin_backoff = \"30s\"\nmax_backoff = \"2h\"\n").unwrap();
        assert_eq!(config.queue.min_backoff, Duration::from_secs(30));
        assert!(config.to_toml().contains("max_backoff = \"2h\""));
    }
}
