//! Does a recipient in a hosted domain exist? Answered at RCPT time — from a list file
//! or by asking the backend — so unknown users get `550 5.1.1` in the dialogue and
//! nobody is sent a bounce for mail they never wrote (no backscatter).

use anyhow::Context;

use crate::config::Setting;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::address::Mailbox;
use crate::config::{AD_RECIPIENT_FILTER, CalloutUnreachable, Config};
use crate::directory::cache::AnswerCache;
use crate::directory::{Directory, Unavailable};
use crate::reply::Reply;
use crate::shared_state::SharedState;
use crate::smtp_client::{Client, Target};
use crate::verdict::Decision;

/// The addresses of a recipients file.
#[derive(Debug, Default)]
pub struct RecipientList {
    /// Lower-case `local@domain`.
    addresses: HashSet<String>,
    /// Lower-case domains written as `@domain`: every local part exists.
    catch_all: HashSet<String>,
}

impl RecipientList {
    /// Reads a list: one address per line, `@domain` for a catch-all, `#` comments.
    /// Errors name the file and line.
    pub fn load(path: &Path) -> anyhow::Result<RecipientList> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!("{}: cannot read the recipients file: {e}", path.display())
        })?;
        RecipientList::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> anyhow::Result<RecipientList> {
        let mut list = RecipientList::default();
        for (n, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            if let Some(domain) = entry.strip_prefix('@') {
                match Mailbox::parse(&format!("x@{domain}")) {
                    Ok(m) if m.domain_name().is_some() => {
                        list.catch_all.insert(m.domain.to_string());
                        continue;
                    }
                    _ => {}
                }
            } else if let Ok(m) = Mailbox::parse(entry) {
                list.addresses.insert(m.lookup_key());
                continue;
            }
            anyhow::bail!(
                "{}:{}: '{entry}' is not an address; write user@example.com, or @example.com \
                 to accept every user of a domain",
                path.display(),
                n + 1
            );
        }
        Ok(list)
    }

    pub fn contains(&self, mailbox: &Mailbox) -> bool {
        self.addresses.contains(&mailbox.lookup_key())
            || self.catch_all.contains(&mailbox.domain.to_string())
    }
}

/// How one hosted domain's recipients are checked.
enum Source {
    List(ReloadingList),
    Callout,
    /// A search of the directory; `filter` holds `%s` for the address.
    Directory {
        base: String,
        filter: String,
    },
}

/// A recipients file, read again when it changes (an administrator adds a user
/// and the next RCPT sees it). A file with an error keeps the list in force.
struct ReloadingList {
    path: std::path::PathBuf,
    loaded: std::sync::Mutex<(Option<std::time::SystemTime>, Arc<RecipientList>)>,
}

impl ReloadingList {
    fn load(path: &Path) -> anyhow::Result<ReloadingList> {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        Ok(ReloadingList {
            path: path.to_path_buf(),
            loaded: std::sync::Mutex::new((modified, Arc::new(RecipientList::load(path)?))),
        })
    }

    fn current(&self) -> Arc<RecipientList> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.0 != modified {
            loaded.0 = modified;
            match RecipientList::load(&self.path) {
                Ok(list) => {
                    tracing::info!(file = %self.path.display(), "recipients file reloaded");
                    loaded.1 = Arc::new(list);
                }
                Err(e) => {
                    tracing::error!(error = %e, "recipients file not reloaded; the list in force stays")
                }
            }
        }
        loaded.1.clone()
    }
}

/// A remembered answer of the backend.
#[derive(Debug, Serialize, Deserialize)]
struct CachedAnswer {
    exists: bool,
    /// Unix seconds after which the backend is asked again.
    expires: u64,
    /// The backend's reply, for the log.
    reply: String,
}

/// The directory's answer about one recipient.
struct DirectoryAnswer {
    /// The entry's name, when there is one.
    found: Option<String>,
    /// Set when the answer was remembered rather than searched for now.
    remembered: Option<crate::directory::cache::Answer>,
}

impl DirectoryAnswer {
    fn remembered(answer: crate::directory::cache::Answer) -> DirectoryAnswer {
        DirectoryAnswer {
            found: answer.found.clone(),
            remembered: Some(answer),
        }
    }
}

/// What the backend said about one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    Exists,
    Unknown(Reply),
    /// The backend could not be asked, or answered with a temporary failure.
    Unavailable(String),
}

pub struct RecipientValidator {
    config: Arc<Config>,
    /// Keyed by the hosted domain the entry was configured for.
    sources: HashMap<String, Source>,
    backend: Target,
    cache: Option<sled::Tree>,
    /// Answers shared with other instances, asked before `cache`.
    shared: Arc<SharedState>,
    /// `[ldap]`, when configured, with its remembered answers.
    directory: Option<(Arc<Directory>, AnswerCache)>,
}

impl RecipientValidator {
    /// Loads every configured recipients file; `cache` stores callout answers.
    pub fn new(
        config: Arc<Config>,
        backend: Target,
        cache: Option<sled::Tree>,
        shared: Arc<SharedState>,
        directory: Option<Arc<Directory>>,
    ) -> anyhow::Result<Self> {
        let mut sources = HashMap::new();
        for (domain, how) in &config.recipients.domains {
            let source = match &how.file {
                Some(file) => Source::List(ReloadingList::load(file).context(Setting::new(&[
                    "recipients",
                    "domains",
                    domain,
                    "file",
                ]))?),
                None if how.ldap => Source::Directory {
                    base: how.base.clone().unwrap_or_else(|| config.ldap.base.clone()),
                    filter: how
                        .filter
                        .clone()
                        .unwrap_or_else(|| AD_RECIPIENT_FILTER.to_string()),
                },
                None => Source::Callout,
            };
            sources.insert(domain.to_lowercase(), source);
        }
        let directory = directory.map(|d| {
            let cache = AnswerCache::new(&config.ldap, shared.clone());
            (d, cache)
        });
        Ok(RecipientValidator {
            config,
            sources,
            backend,
            cache,
            shared,
            directory,
        })
    }

    /// The directory, when `[ldap]` is configured.
    pub fn directory(&self) -> Option<&Arc<Directory>> {
        self.directory.as_ref().map(|(d, _)| d)
    }

    /// The entry for a domain, or for the nearest hosted parent (hosted_subdomains).
    fn source_for(&self, domain: &str) -> Option<&Source> {
        let mut candidate = domain;
        loop {
            if let Some(source) = self.sources.get(candidate) {
                return Some(source);
            }
            candidate = candidate.split_once('.')?.1;
        }
    }

    /// Checks a recipient of a hosted domain.
    pub async fn check(&self, mailbox: &Mailbox) -> Result<(), Decision> {
        let Some(domain) = mailbox.domain_name() else {
            return Ok(());
        };
        match self.source_for(domain) {
            None => Ok(()),
            Some(Source::List(list)) => {
                if list.current().contains(mailbox) {
                    Ok(())
                } else {
                    Err(unknown(mailbox, "not in the recipients file".into()))
                }
            }
            Some(Source::Directory { base, filter }) => {
                match self.in_directory(mailbox, base, filter).await {
                    Ok(DirectoryAnswer { found: Some(_), .. }) => Ok(()),
                    Ok(DirectoryAnswer { found: None, .. }) => {
                        Err(unknown(mailbox, "not in the directory".into()))
                    }
                    Err(why) => Err(unavailable("recipients.ldap", mailbox, why.0)),
                }
            }
            Some(Source::Callout) => match self.verify(mailbox).await {
                Verified::Exists => Ok(()),
                Verified::Unknown(reply) => {
                    Err(unknown(mailbox, format!("backend answered: {reply}")))
                }
                Verified::Unavailable(why) => match self.config.recipients.callout_unreachable {
                    CalloutUnreachable::Accept => Ok(()),
                    CalloutUnreachable::Tempfail => {
                        Err(unavailable("recipients.callout", mailbox, why))
                    }
                },
            },
        }
    }

    /// The directory's answer for a recipient: remembered, or searched for.
    async fn in_directory(
        &self,
        mailbox: &Mailbox,
        base: &str,
        filter: &str,
    ) -> Result<DirectoryAnswer, Unavailable> {
        let Some((directory, cache)) = &self.directory else {
            return Err(Unavailable("no directory configured ([ldap] url)".into()));
        };
        let key = mailbox.lookup_key();
        if let Some(answer) = cache.get(&key).await {
            directory.count_lookup(true);
            return Ok(DirectoryAnswer::remembered(answer));
        }
        // One search per address at a time: sessions asking about the same
        // address meanwhile wait for it and take its answer from the cache.
        let _searching = cache.searching(&key).await;
        let remembered = cache.get(&key).await;
        directory.count_lookup(remembered.is_some());
        if let Some(answer) = remembered {
            return Ok(DirectoryAnswer::remembered(answer));
        }
        let found = directory
            .find(base, &crate::directory::fill(filter, &key))
            .await?
            .map(|entry| entry.dn);
        cache.put(&key, found.clone()).await;
        Ok(DirectoryAnswer {
            found,
            remembered: None,
        })
    }

    /// `mailmoat recipients lookup`: what RCPT would be told, and why.
    pub async fn explain(&self, address: &str) -> Result<String, String> {
        let mailbox =
            Mailbox::parse(address).map_err(|e| format!("{address}: not an address ({e})"))?;
        let Some(domain) = mailbox.domain_name() else {
            return Err(format!("{address}: not an address at a domain"));
        };
        if !self.config.is_hosted(domain) {
            return Ok(format!(
                "{mailbox}: not a hosted domain; only trusted or logged-in clients may send to it"
            ));
        }
        Ok(match self.source_for(domain) {
            None => format!("{mailbox}: accepted (no recipient validation for {domain})"),
            Some(Source::List(list)) if list.current().contains(&mailbox) => {
                format!("{mailbox}: accepted (in the recipients file)")
            }
            Some(Source::List(_)) => {
                format!("{mailbox}: 550 5.1.1 user unknown (not in the recipients file)")
            }
            Some(Source::Callout) => match self.verify(&mailbox).await {
                Verified::Exists => format!("{mailbox}: accepted (the backend knows it)"),
                Verified::Unknown(reply) => {
                    format!("{mailbox}: 550 5.1.1 user unknown (the backend answered {reply})")
                }
                Verified::Unavailable(why) => {
                    format!("{mailbox}: 451 4.4.3 cannot be checked now: {why}")
                }
            },
            Some(Source::Directory { base, filter }) => {
                match self.in_directory(&mailbox, base, filter).await {
                    Ok(answer) => {
                        let whence = match &answer.remembered {
                            Some(cached) => format!(
                                "remembered, asked again in {}",
                                humantime::format_duration(std::time::Duration::from_secs(
                                    cached.left().as_secs()
                                ))
                            ),
                            None => format!(
                                "searched under {base} with {}",
                                crate::directory::fill(filter, &mailbox.lookup_key())
                            ),
                        };
                        match answer.found {
                            Some(dn) => format!("{mailbox}: accepted: {dn} ({whence})"),
                            None => {
                                format!("{mailbox}: 550 5.1.1 user unknown: no entry ({whence})")
                            }
                        }
                    }
                    Err(why) => format!("{mailbox}: 451 4.4.3 cannot be checked now: {why}"),
                }
            }
        })
    }

    /// `mailmoat recipients flush-cache`: the directory is asked again about
    /// every address; how many answers this instance held.
    pub async fn flush_directory_cache(&self) -> Option<usize> {
        let (_, cache) = self.directory.as_ref()?;
        Some(cache.flush().await)
    }

    /// Asks the backend, or the cache of its earlier answers.
    pub async fn verify(&self, mailbox: &Mailbox) -> Verified {
        let key = mailbox.lookup_key();
        let now = unix_now();
        if let Some(answer) = self.cached(&key).await.filter(|a| a.expires > now) {
            tracing::debug!(recipient = %mailbox, exists = answer.exists, "callout cache hit");
            return if answer.exists {
                Verified::Exists
            } else {
                Verified::Unknown(Reply::new(550, "5.1.1", answer.reply))
            };
        }
        let verified = self.probe(mailbox).await;
        let ttl = match &verified {
            Verified::Exists => self.config.recipients.callout_positive_ttl,
            Verified::Unknown(_) => self.config.recipients.callout_negative_ttl,
            Verified::Unavailable(_) => return verified,
        };
        let answer = CachedAnswer {
            exists: verified == Verified::Exists,
            expires: now + ttl.as_secs(),
            reply: match &verified {
                Verified::Unknown(reply) => reply.text(),
                _ => String::new(),
            },
        };
        if let Ok(bytes) = serde_json::to_vec(&answer) {
            let shared_key = self.shared.key("callout", &key);
            let kept = self.shared.put(&shared_key, &bytes, Some(ttl)).await;
            if let (None, Some(cache)) = (kept, &self.cache) {
                let _ = cache.insert(key.as_bytes(), bytes);
            }
        }
        verified
    }

    /// An earlier answer: from Redis when state is shared and it answers, else
    /// from this instance's store.
    async fn cached(&self, key: &str) -> Option<CachedAnswer> {
        let bytes = match self.shared.get(&[self.shared.key("callout", key)]).await {
            Some(mut found) => found.pop().flatten()?,
            None => self.cache.as_ref()?.get(key.as_bytes()).ok()??.to_vec(),
        };
        serde_json::from_slice(&bytes).ok()
    }

    /// `MAIL FROM:<>` and `RCPT TO:` to the backend, then QUIT.
    async fn probe(&self, mailbox: &Mailbox) -> Verified {
        let mut target = self.backend.clone();
        target.command_timeout = self.config.recipients.callout_timeout;
        target.connect_timeout = self.config.recipients.callout_timeout;
        target.greeting_timeout = self.config.recipients.callout_timeout;
        let mut client = match Client::connect(&target).await {
            Ok(client) => client,
            Err(e) => return Verified::Unavailable(e.to_string()),
        };
        let utf8 = if mailbox.to_string().is_ascii() {
            ""
        } else {
            " SMTPUTF8"
        };
        let result = async {
            let mail = client.command(format!("MAIL FROM:<>{utf8}")).await?;
            if !mail.is_positive() {
                return Ok(Verified::Unavailable(format!(
                    "backend refused MAIL FROM:<>: {mail}"
                )));
            }
            let rcpt = client.command(format!("RCPT TO:<{mailbox}>")).await?;
            Ok(if rcpt.is_positive() {
                Verified::Exists
            } else if rcpt.is_permanent() {
                Verified::Unknown(rcpt)
            } else {
                Verified::Unavailable(format!("backend answered {rcpt}"))
            })
        }
        .await
        .unwrap_or_else(|e: crate::smtp_client::ClientError| Verified::Unavailable(e.0));
        let _ = client.command("RSET".into()).await;
        client.quit().await;
        result
    }
}

/// `451 4.4.3`: whether the recipient exists cannot be known now; never a 550
/// that would bounce good mail.
fn unavailable(check: &'static str, mailbox: &Mailbox, why: String) -> Decision {
    Decision::refuse(
        check,
        Reply::new(
            451,
            "4.4.3",
            format!("<{mailbox}>: Recipient address verification unavailable; try again later"),
        ),
        why,
    )
}

fn unknown(mailbox: &Mailbox, why: String) -> Decision {
    Decision::refuse(
        "recipients",
        Reply::new(
            550,
            "5.1.1",
            format!("<{mailbox}>: Recipient address rejected: User unknown"),
        ),
        why,
    )
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(text: &str) -> Mailbox {
        Mailbox::parse(text).unwrap()
    }

    #[test]
    fn list_matches_without_case_and_supports_catch_all() {
        let list = RecipientList::parse(
            "# staff\nAlice@Example.test\n  bob@example.test # comment\n@catchall.test\n",
            Path::new("r.txt"),
        )
        .unwrap();
        assert!(list.contains(&mailbox("alice@example.test")));
        assert!(list.contains(&mailbox("BOB@EXAMPLE.TEST")));
        assert!(!list.contains(&mailbox("carol@example.test")));
        assert!(list.contains(&mailbox("anyone@catchall.test")));
    }

    #[test]
    fn bad_line_names_file_and_line() {
        let err = RecipientList::parse("alice@example.test\nnot an address\n", Path::new("r.txt"))
            .unwrap_err();
        assert!(err.to_string().starts_with("r.txt:2: "), "{err}");
    }
}
