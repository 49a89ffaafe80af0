//! The configuration file: TOML, every key defaulted, validated with errors that name
//! the file, the line of the key and what to write. `packaging/mailmoat.toml`
//! documents every key. One file per group of sections; this one holds the whole
//! and its checks.

mod archive;
mod checks;
mod delivery;
mod directory;
mod mime;
mod scanning;
mod sender_auth;
mod server;
mod shared;
mod types;
mod web;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use archive::*;
pub use checks::*;
pub use delivery::*;
pub use directory::*;
pub use mime::*;
pub use scanning::*;
pub use sender_auth::*;
pub use server::*;
pub use shared::*;
pub use types::*;
pub use web::*;

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
    /// The directory (LDAP, Active Directory): recipients and logins.
    pub ldap: LdapConfig,
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
    /// The recipients' quarantine: web page and digests.
    pub web: WebConfig,
    pub digest: DigestConfig,
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

/// A key that must be at least 1.
fn at_least_one(key: [&str; 2], value: usize) -> Result<(), Invalid> {
    if value == 0 {
        return Err(invalid(
            &[&key],
            format!("{} = 0: it must be at least 1", key.join(".")),
        ));
    }
    Ok(())
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
/// A `host:port` key's value, or the error that says how to write one.
fn host_and_port(key: [&str; 2], value: &str) -> Result<(), Invalid> {
    if is_host_and_port(value) {
        return Ok(());
    }
    let [section, name] = key;
    Err(invalid(
        &[&key],
        format!(
            "{section}.{name} = \"{value}\" is not host:port; write one such as \"10.0.0.5:25\", \"exchange.corp.example:25\" or \"[2001:db8::5]:25\""
        ),
    ))
}

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
            &mut self.ldap.ca_file,
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
        self.server.validate()?;
        self.limits.validate()?;
        self.shared.validate()?;
        self.dns.validate()?;
        self.queue.validate()?;
        self.backend.validate()?;
        self.outbound.validate()?;
        self.archive.validate()?;
        self.tls.validate(&self.server)?;
        self.auth.validate()?;
        self.ldap.validate()?;
        if self.auth.source == AuthSource::Ldap && !self.ldap.enabled() {
            return Err(invalid(
                &[&["auth", "source"], &["ldap", "url"]],
                "auth.source = \"ldap\" needs the directory: give ldap.url and ldap.base",
            ));
        }
        self.recipients
            .validate(&|domain| self.is_hosted(domain), self.ldap.enabled())?;
        self.greylist.validate()?;
        self.web.validate(self.tls.cert_file.is_some())?;
        if self.web.enabled() && !self.archive.enabled {
            return Err(invalid(
                &[&["web", "listen"], &["archive", "enabled"]],
                "web.listen shows the archive's items: it needs archive.enabled = true",
            ));
        }
        self.digest.validate(&self.web)?;
        self.antivirus.validate()?;
        self.spam.validate()
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
        if !self.checks.dnsbl.is_empty() && !self.dns.has_local_resolver() {
            warnings.push(
                "checks.dnsbl is set but no name server is on this host (dns.servers, or \
                 /etc/resolv.conf): blocklists refuse queries that come through public \
                 resolvers, and a shared resolver drops queries under load; run a local \
                 caching resolver such as Unbound (the deployment guide says how)"
                    .to_string(),
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

    /// Every size key of the default configuration read back written either way
    /// (`"10MB"` or a number of bytes), and every duration written as humantime.
    #[test]
    fn sizes_are_written_either_way_and_durations_as_humantime() {
        fn leaves(
            value: &toml::Value,
            path: &mut Vec<String>,
            out: &mut Vec<(Vec<String>, toml::Value)>,
        ) {
            match value {
                toml::Value::Table(table) => {
                    for (key, value) in table {
                        path.push(key.clone());
                        leaves(value, path, out);
                        path.pop();
                    }
                }
                leaf => out.push((path.clone(), leaf.clone())),
            }
        }
        fn with(path: &[String], value: toml::Value) -> String {
            let (key, tables) = path.split_last().unwrap();
            let mut text = String::new();
            if !tables.is_empty() {
                text.push_str(&format!("[{}]\n", tables.join(".")));
            }
            text.push_str(&format!("{key} = {value}\n"));
            text
        }
        let defaults: toml::Value = toml::from_str(&Config::default().to_toml()).unwrap();
        let mut all = Vec::new();
        leaves(&defaults, &mut Vec::new(), &mut all);
        let (mut sizes, mut durations) = (0, 0);
        for (path, value) in &all {
            let toml::Value::String(text) = value else {
                continue;
            };
            let name = path.join(".");
            if let Some(size) = ByteSize::parse(text).filter(|_| text.ends_with('B')) {
                let number = toml::Value::Integer(size.bytes() as i64);
                for written in [number, value.clone()] {
                    let config = parse(&with(path, written.clone()))
                        .unwrap_or_else(|e| panic!("{name} = {written}: {e}"));
                    let back: toml::Value = toml::from_str(&config.to_toml()).unwrap();
                    let mut read = &back;
                    for part in path {
                        read = &read[part.as_str()];
                    }
                    assert_eq!(read, value, "{name} = {written}");
                }
                sizes += 1;
            } else if let Ok(duration) = humantime::parse_duration(text) {
                // The same wait in other units: humantime reads any.
                let other = format!("{}ms", duration.as_millis());
                parse(&with(path, toml::Value::String(other.clone())))
                    .unwrap_or_else(|e| panic!("{name} = \"{other}\": {e}"));
                durations += 1;
            }
        }
        assert!(sizes >= 4, "{sizes} size keys found");
        assert!(durations >= 30, "{durations} duration keys found");
        // Sizes whose defaults are no whole number of kilobytes print as numbers;
        // they take units all the same.
        for (key, text) in [
            (
                "limits.message_size_limit",
                "[limits]\nmessage_size_limit = \"10MB\"\n",
            ),
            (
                "limits.line_length_limit",
                "[limits]\nline_length_limit = \"1KB\"\n",
            ),
            ("archive.max_size", "[archive]\nmax_size = \"2GB\"\n"),
        ] {
            parse(text).unwrap_or_else(|e| panic!("{key}: {e}"));
        }
        assert_eq!(
            parse("[limits]\nmessage_size_limit = \"10MB\"\n")
                .unwrap()
                .limits
                .message_size_limit,
            10 << 20
        );
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
        let (depth, bytes, _) = config.rules.container_limits();
        assert_eq!((depth, bytes), (2, 1 << 20));
        let warnings = config.warnings();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("rules.zip_depth is now rules.container_depth")),
            "{warnings:?}"
        );
        let config = parse("[rules]\ncontainer_depth = 4\ncontainer_bytes = 1000\n").unwrap();
        let (depth, bytes, _) = config.rules.container_limits();
        assert_eq!((depth, bytes), (4, 1000));
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
