//! The directory (LDAP; Active Directory): the entry an address or a login
//! belongs to, and whether a password is right (a bind as that entry). A few
//! connections are kept open and made again when the directory restarts; every
//! operation ends within `ldap.timeout`, so a dead or slow directory costs a
//! temporary failure, never a session held open.

pub mod cache;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use tokio::time::Instant;

use crate::config::{LdapConfig, Secret};

/// The attributes holding an entry's addresses.
const ADDRESS_ATTRIBUTES: [&str; 2] = ["mail", "proxyAddresses"];

/// LDAP result codes (RFC 4511 4.1.9) that mean something here.
const SUCCESS: u32 = 0;
const SIZE_LIMIT_EXCEEDED: u32 = 4;
const INVALID_CREDENTIALS: u32 = 49;

/// An entry found in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub dn: String,
    /// Lower-case: its `mail` values and its `smtp:` proxy addresses.
    pub addresses: Vec<String>,
}

/// The directory did not answer in time, or answered with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Counts since start, for the metrics and `status`.
#[derive(Default)]
struct Counts {
    lookups: AtomicU64,
    cache_hits: AtomicU64,
    searches: AtomicU64,
    binds: AtomicU64,
    connections: AtomicU64,
    failures: AtomicU64,
}

pub struct Directory {
    config: LdapConfig,
    tls: Arc<rustls::ClientConfig>,
    /// Each connection carries many operations at once (LDAP numbers them).
    pool: Vec<tokio::sync::Mutex<Option<Ldap>>>,
    next: AtomicUsize,
    /// The server that answered last: tried first (fail-over keeps to it).
    preferred: AtomicUsize,
    counts: Counts,
}

impl Directory {
    /// None without `ldap.url`. Reads the CA file; connects to nothing yet.
    pub fn new(config: &LdapConfig) -> anyhow::Result<Option<Arc<Directory>>> {
        if !config.enabled() {
            return Ok(None);
        }
        Ok(Some(Arc::new(Directory {
            tls: tls_config(config)?,
            pool: (0..config.pool_size)
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
            preferred: AtomicUsize::new(0),
            config: config.clone(),
            counts: Counts::default(),
        })))
    }

    pub fn config(&self) -> &LdapConfig {
        &self.config
    }

    /// The entry `filter` finds under `base` (the first, if several do).
    pub async fn find(&self, base: &str, filter: &str) -> Result<Option<Entry>, Unavailable> {
        let deadline = Instant::now() + self.config.timeout;
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        loop {
            let (ldap, fresh) = self.pooled(slot, deadline).await?;
            match self.search(ldap, base, filter, deadline).await {
                Ok(found) => return Ok(found),
                // A pooled connection may have died with a directory restart,
                // however the failure shows: once more on a new connection.
                Err(why) if !fresh && remaining(deadline).is_ok() => {
                    tracing::info!(error = %why, "directory connection failed; connecting again");
                    self.discard(slot).await;
                }
                Err(why) => {
                    self.discard(slot).await;
                    return Err(self.failed(why));
                }
            }
        }
    }

    /// One search on one connection, within the deadline.
    async fn search(
        &self,
        mut ldap: Ldap,
        base: &str,
        filter: &str,
        deadline: Instant,
    ) -> Result<Option<Entry>, String> {
        self.counts.searches.fetch_add(1, Ordering::Relaxed);
        let within = remaining(deadline).map_err(|e| e.0)?;
        let search = ldap.with_timeout(within).search(
            base,
            Scope::Subtree,
            filter,
            ADDRESS_ATTRIBUTES.to_vec(),
        );
        let (entries, status) = match tokio::time::timeout(within, search).await {
            Ok(Ok(result)) => (result.0, result.1),
            Ok(Err(e)) => return Err(format!("the directory did not answer: {e}")),
            Err(_) => {
                return Err(format!(
                    "the directory did not answer within {}",
                    humantime::format_duration(self.config.timeout)
                ));
            }
        };
        if status.rc != SUCCESS && status.rc != SIZE_LIMIT_EXCEEDED {
            return Err(format!(
                "the search under {base} failed: {} (result {})",
                status.text, status.rc
            ));
        }
        Ok(entries.into_iter().next().map(|raw| {
            let entry = SearchEntry::construct(raw);
            Entry {
                addresses: addresses_of(&entry),
                dn: entry.dn,
            }
        }))
    }

    /// The entry `ldap.login_filter` finds for a login name, when `password`
    /// is its own (AUTH and the quarantine's sign-in).
    pub async fn login(&self, user: &str, password: &str) -> Result<Option<Entry>, Unavailable> {
        let filter = fill(&self.config.login_filter, user);
        let Some(entry) = self.find(&self.config.base, &filter).await? else {
            return Ok(None);
        };
        Ok(self
            .password_matches(&entry.dn, password)
            .await?
            .then_some(entry))
    }

    /// Whether `password` is the entry's: a bind as it, on a connection of its
    /// own (a bind changes who the connection is). An empty password is never
    /// tried: LDAP takes it as an anonymous bind, which succeeds.
    pub async fn password_matches(&self, dn: &str, password: &str) -> Result<bool, Unavailable> {
        if password.is_empty() {
            return Ok(false);
        }
        let deadline = Instant::now() + self.config.timeout;
        let mut ldap = self.connect(deadline, None).await?;
        self.counts.binds.fetch_add(1, Ordering::Relaxed);
        let bind = ldap
            .with_timeout(remaining(deadline)?)
            .simple_bind(dn, password);
        let outcome = tokio::time::timeout(remaining(deadline)?, bind).await;
        let _ = ldap.unbind().await;
        match outcome {
            Ok(Ok(result)) if result.rc == SUCCESS => Ok(true),
            Ok(Ok(result)) if result.rc == INVALID_CREDENTIALS => Ok(false),
            Ok(Ok(result)) => Err(self.failed(format!(
                "the bind as {dn} failed: {} (result {})",
                result.text, result.rc
            ))),
            Ok(Err(e)) => Err(self.failed(format!("the directory did not answer: {e}"))),
            Err(_) => Err(self.failed("the directory did not answer in time".into())),
        }
    }

    /// Whether the directory answers now, and how fast: a search of the base
    /// entry itself, as the service account.
    pub async fn probe(&self) -> Result<Duration, Unavailable> {
        let started = Instant::now();
        let mut ldap = self
            .connect(started + self.config.timeout, self.service_account())
            .await?;
        let base = self.config.base.clone();
        let search = ldap.search(&base, Scope::Base, "(objectClass=*)", vec!["1.1"]);
        let outcome = tokio::time::timeout(self.config.timeout, search).await;
        let _ = ldap.unbind().await;
        match outcome {
            Ok(Ok(result)) if result.1.rc == SUCCESS => Ok(started.elapsed()),
            Ok(Ok(result)) => Err(Unavailable(format!(
                "the base {base} was not found: {} (result {})",
                result.1.text, result.1.rc
            ))),
            Ok(Err(e)) => Err(Unavailable(e.to_string())),
            Err(_) => Err(Unavailable("no answer in time".into())),
        }
    }

    /// A connection of the pool, made (and bound as the service account) when
    /// there is none or it was closed; true when it is new.
    async fn pooled(&self, slot: usize, deadline: Instant) -> Result<(Ldap, bool), Unavailable> {
        let mut held = self.pool[slot].lock().await;
        if let Some(ldap) = held.as_mut()
            && !ldap.is_closed()
        {
            return Ok((ldap.clone(), false));
        }
        let ldap = self.connect(deadline, self.service_account()).await?;
        *held = Some(ldap.clone());
        Ok((ldap, true))
    }

    async fn discard(&self, slot: usize) {
        self.pool[slot].lock().await.take();
    }

    fn service_account(&self) -> Option<(&str, &Secret)> {
        self.config
            .bind_dn
            .as_deref()
            .zip(self.config.bind_password.as_ref())
    }

    /// Connects to the first server that answers, starting with the one that
    /// answered last, and binds as `account`.
    async fn connect(
        &self,
        deadline: Instant,
        account: Option<(&str, &Secret)>,
    ) -> Result<Ldap, Unavailable> {
        let urls = &self.config.url;
        let first = self.preferred.load(Ordering::Relaxed) % urls.len();
        let mut errors = Vec::new();
        for i in 0..urls.len() {
            let at = (first + i) % urls.len();
            let url = &urls[at];
            let Ok(left) = remaining(deadline) else {
                errors.push(format!("{url}: no time left"));
                break;
            };
            self.counts.connections.fetch_add(1, Ordering::Relaxed);
            match self.connect_to(url, left, account).await {
                Ok(ldap) => {
                    self.preferred.store(at, Ordering::Relaxed);
                    return Ok(ldap);
                }
                Err(e) => errors.push(format!("{url}: {e}")),
            }
        }
        Err(self.failed(errors.join("; ")))
    }

    async fn connect_to(
        &self,
        url: &str,
        within: Duration,
        account: Option<(&str, &Secret)>,
    ) -> Result<Ldap, String> {
        let settings = LdapConnSettings::new()
            .set_conn_timeout(within)
            .set_starttls(self.config.starttls)
            .set_config(self.tls.clone());
        let attempt = async {
            let (connection, mut ldap) = LdapConnAsync::with_settings(settings, url)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                if let Err(e) = connection.drive().await {
                    tracing::debug!(error = %e, "directory connection ended");
                }
            });
            if let Some((dn, password)) = account {
                let result = ldap
                    .simple_bind(dn, password.expose())
                    .await
                    .map_err(|e| e.to_string())?;
                if result.rc != SUCCESS {
                    return Err(format!(
                        "the service account {dn} could not bind: {} (result {}); check \
                         ldap.bind_dn and ldap.bind_password",
                        result.text, result.rc
                    ));
                }
            }
            Ok(ldap)
        };
        tokio::time::timeout(within, attempt)
            .await
            .map_err(|_| format!("no answer within {}", humantime::format_duration(within)))?
    }

    fn failed(&self, why: String) -> Unavailable {
        self.counts.failures.fetch_add(1, Ordering::Relaxed);
        Unavailable(why)
    }

    pub(crate) fn count_lookup(&self, cache_hit: bool) {
        self.counts.lookups.fetch_add(1, Ordering::Relaxed);
        if cache_hit {
            self.counts.cache_hits.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Each count with its name, for the metrics.
    pub fn totals(&self) -> [(&'static str, u64); 6] {
        let c = &self.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("lookups", get(&c.lookups)),
            ("cache_hits", get(&c.cache_hits)),
            ("searches", get(&c.searches)),
            ("binds", get(&c.binds)),
            ("connections", get(&c.connections)),
            ("failures", get(&c.failures)),
        ]
    }
}

fn remaining(deadline: Instant) -> Result<Duration, Unavailable> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(Unavailable("the directory did not answer in time".into()))
    } else {
        Ok(left)
    }
}

/// `%s` the whole address (or login), `%u` the part before `@`, `%d` the part
/// after; each escaped (RFC 4515) so an address cannot change the filter.
pub fn fill(filter: &str, text: &str) -> String {
    let (local, domain) = text.rsplit_once('@').unwrap_or((text, ""));
    let mut out = String::with_capacity(filter.len() + 2 * text.len());
    let mut chars = filter.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('s') => out.push_str(&ldap3::ldap_escape(text)),
            Some('u') => out.push_str(&ldap3::ldap_escape(local)),
            Some('d') => out.push_str(&ldap3::ldap_escape(domain)),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// The addresses an entry holds: `mail`, and `proxyAddresses` of type `smtp:`
/// (`SMTP:` the primary one); X.500 and other types are not mail addresses.
fn addresses_of(entry: &SearchEntry) -> Vec<String> {
    let mut addresses: Vec<String> = Vec::new();
    for (attribute, values) in &entry.attrs {
        for value in values {
            let address = if attribute.eq_ignore_ascii_case("mail") {
                Some(value.as_str())
            } else if attribute.eq_ignore_ascii_case("proxyAddresses") {
                value
                    .split_once(':')
                    .filter(|(kind, _)| kind.eq_ignore_ascii_case("smtp"))
                    .map(|(_, address)| address)
            } else {
                None
            };
            if let Some(address) = address.map(str::to_lowercase)
                && !addresses.contains(&address)
            {
                addresses.push(address);
            }
        }
    }
    addresses
}

/// TLS for ldaps:// and StartTLS: the CA file when given, else the system's CAs.
fn tls_config(config: &LdapConfig) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match &config.ca_file {
        Some(path) => {
            let certificates: Vec<CertificateDer> = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect())
                .map_err(|e| {
                    anyhow::anyhow!("{}: not a PEM certificate file: {e}", path.display())
                })?;
            if certificates.is_empty() {
                anyhow::bail!("{}: no certificate in it", path.display());
            }
            for certificate in certificates {
                roots.add(certificate)?;
            }
        }
        None => {
            for certificate in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(certificate);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_fill_filters_escaped() {
        assert_eq!(
            fill("(|(mail=%s)(proxyAddresses=smtp:%s))", "alice@example.test"),
            "(|(mail=alice@example.test)(proxyAddresses=smtp:alice@example.test))"
        );
        assert_eq!(
            fill("(&(uid=%u)(dc=%d))", "a*)(x=1@example.test"),
            "(&(uid=a\\2a\\29\\28x=1)(dc=example.test))"
        );
        assert_eq!(
            fill("(sAMAccountName=%u)", "alice"),
            "(sAMAccountName=alice)"
        );
    }

    #[test]
    fn an_entry_holds_its_mail_and_smtp_proxy_addresses() {
        let entry = SearchEntry {
            dn: "cn=Alice".into(),
            attrs: [
                ("mail".to_string(), vec!["Alice@Example.test".to_string()]),
                (
                    "proxyAddresses".to_string(),
                    vec![
                        "SMTP:alice@example.test".into(),
                        "smtp:a.smith@example.test".into(),
                        "X500:/o=Org/cn=alice".into(),
                    ],
                ),
            ]
            .into_iter()
            .collect(),
            bin_attrs: Default::default(),
        };
        assert_eq!(
            addresses_of(&entry),
            vec!["alice@example.test", "a.smith@example.test"]
        );
    }
}
