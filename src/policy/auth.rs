//! Who may log in, and as whom they may send: SMTP AUTH credentials checked against
//! a users file (argon2id hashes) or against the backend, with failed attempts
//! limited per client address and per user name.

use anyhow::Context;

use crate::config::Setting;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

use crate::config::{AuthConfig, AuthSource};
use crate::directory::Directory;
use crate::shared_state::SharedState;
use crate::smtp_client::{Client, Target};

/// The outcome of one login attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    Accepted(Account),
    Refused,
    /// Too many failures from this address or for this name: not even checked.
    LockedOut,
    /// The credentials could not be checked now (backend unreachable).
    Unavailable(String),
}

/// Who logged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The name as given.
    pub name: String,
    /// The addresses the directory entry holds (mail, proxyAddresses): the
    /// user may send as each. Empty for other sources.
    pub addresses: Vec<String>,
}

impl Account {
    fn named(name: String) -> Account {
        Account {
            name,
            addresses: Vec::new(),
        }
    }
}

/// Where accounts and their passwords are.
enum Accounts {
    Users(UsersFile),
    Backend(Target),
    Directory(Arc<Directory>),
}

/// Failed attempts of one client address or user name.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
    locked_until: Option<Instant>,
}

/// Counts failures; bounded, so a flood of addresses cannot exhaust memory.
/// The local count, used when state is not shared or Redis does not answer.
struct Limiter {
    /// `ip` or `user`: part of the shared keys.
    kind: &'static str,
    entries: Mutex<HashMap<String, Failures>>,
    max: u32,
}

/// At most this many addresses and names are tracked at once.
const MAX_TRACKED: usize = 100_000;

impl Limiter {
    fn locked(&self, key: &str) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .and_then(|f| f.locked_until)
            .is_some_and(|until| Instant::now() < until)
    }

    fn fail(&self, key: &str, window: Duration, lockout: Duration) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_TRACKED && !entries.contains_key(key) {
            entries.retain(|_, f| {
                now.duration_since(f.since) < window || f.locked_until.is_some_and(|u| now < u)
            });
            if entries.len() >= MAX_TRACKED {
                return;
            }
        }
        let entry = entries.entry(key.to_string()).or_insert(Failures {
            count: 0,
            since: now,
            locked_until: None,
        });
        if now.duration_since(entry.since) > window {
            *entry = Failures {
                count: 0,
                since: now,
                locked_until: None,
            };
        }
        entry.count += 1;
        if entry.count >= self.max {
            entry.locked_until = Some(now + lockout);
        }
    }

    fn clear(&self, key: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// The users file: `name:$argon2id$…` per line, `#` comments. Read again when it
/// changes.
struct UsersFile {
    path: PathBuf,
    loaded: Mutex<(Option<SystemTime>, HashMap<String, String>)>,
}

impl UsersFile {
    fn hash_of(&self, user: &str) -> Option<String> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.0 != modified {
            match read_users(&self.path) {
                Ok(users) => *loaded = (modified, users),
                Err(e) => tracing::error!(error = %e, "users file not reloaded"),
            }
        }
        loaded.1.get(user).cloned()
    }
}

/// Reads a users file; errors name the file and line.
pub fn read_users(path: &Path) -> anyhow::Result<HashMap<String, String>> {
    Ok(read_accounts(path)?
        .into_iter()
        .map(|(user, (hash, _))| (user, hash))
        .collect())
}

/// Reads a users file: `name:hash`, or `name:hash:admin` for an administrator
/// of the quarantine's web page; each name with its hash and whether it is one.
pub fn read_accounts(path: &Path) -> anyhow::Result<HashMap<String, (String, bool)>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e} (add a user with: mailmoat passwd add NAME)",
            path.display()
        )
    })?;
    let mut users = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            anyhow::bail!(
                "{}:{}: write name:hash (use mailmoat passwd add NAME)",
                path.display(),
                n + 1
            );
        };
        let (hash, admin) = match hash.strip_suffix(":admin") {
            Some(hash) => (hash, true),
            None => (hash, false),
        };
        if PasswordHash::new(hash).is_err() {
            anyhow::bail!(
                "{}:{}: '{user}' has no valid password hash (use mailmoat passwd add {user})",
                path.display(),
                n + 1
            );
        }
        users.insert(user.to_string(), (hash.to_string(), admin));
    }
    Ok(users)
}

/// Whether `password` is the one of an argon2id hash; tens of milliseconds of
/// CPU by design, so not on an async worker. For a name without an account
/// (`None`) the password is checked against a decoy and refused: an unknown
/// name takes as long as a wrong password, so the time of the answer does not
/// tell which names exist.
pub async fn verify_password(hash: Option<String>, password: String) -> bool {
    static DECOY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        hash_password("no account has this password").unwrap_or_default()
    });
    let known = hash.is_some();
    tokio::task::spawn_blocking(move || {
        let hash = hash.unwrap_or_else(|| DECOY.clone());
        let matches = PasswordHash::new(&hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        });
        known && matches
    })
    .await
    .unwrap_or(false)
}

/// An argon2id hash of a password, for the users file.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    let hash: PasswordHash = Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(hash.to_string())
}

/// Checks logins.
pub struct Authenticator {
    config: AuthConfig,
    shared: Arc<SharedState>,
    accounts: Accounts,
    by_ip: Limiter,
    by_user: Limiter,
}

impl Authenticator {
    /// None when AUTH is off.
    pub fn new(
        config: &AuthConfig,
        backend: &Target,
        shared: Arc<SharedState>,
        directory: Option<&Arc<Directory>>,
    ) -> anyhow::Result<Option<Authenticator>> {
        let accounts = match config.source {
            AuthSource::Off => return Ok(None),
            AuthSource::Users => {
                let path = config
                    .users_file
                    .clone()
                    .ok_or_else(|| anyhow::anyhow!("source = \"users\" needs auth.users_file"))
                    .context(Setting::new(&["auth", "source"]))?;
                read_users(&path).context(Setting::new(&["auth", "users_file"]))?;
                Accounts::Users(UsersFile {
                    path,
                    loaded: Mutex::new((None, HashMap::new())),
                })
            }
            AuthSource::Backend => Accounts::Backend(backend.clone()),
            AuthSource::Ldap => Accounts::Directory(
                directory
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("source = \"ldap\" needs [ldap] url and base"))
                    .context(Setting::new(&["auth", "source"]))?,
            ),
        };
        Ok(Some(Authenticator {
            config: config.clone(),
            shared,
            accounts,
            by_ip: Limiter {
                kind: "ip",
                entries: Mutex::new(HashMap::new()),
                max: config.max_failures_per_ip,
            },
            by_user: Limiter {
                kind: "user",
                entries: Mutex::new(HashMap::new()),
                max: config.max_failures_per_user,
            },
        }))
    }

    /// May this client log in without TLS?
    pub fn plaintext_allowed(&self, ip: IpAddr) -> bool {
        self.config
            .plaintext_networks
            .iter()
            .any(|n| n.contains(&ip))
    }

    /// One login attempt. Failures are slowed down and counted; past the limit,
    /// the address (or the name) is locked out for a while.
    pub async fn login(&self, ip: IpAddr, user: &str, password: &str) -> Login {
        let ip_key = ip.to_string();
        let user_key = user.to_lowercase();
        if self.locked(&ip_key, &user_key).await {
            return Login::LockedOut;
        }
        let result = self.check(user, password).await;
        match &result {
            Login::Accepted(_) => {
                let (failures, lock) = self.shared_keys(&self.by_ip, &ip_key);
                if self.shared.remove(&[failures, lock]).await.is_none() {
                    self.by_ip.clear(&ip_key);
                }
            }
            Login::Refused => {
                tokio::time::sleep(self.config.failure_delay).await;
                self.failed(&ip_key, &user_key).await;
            }
            _ => {}
        }
        result
    }

    /// The shared keys of one limiter's entry: its failures and its lock.
    fn shared_keys(&self, limiter: &Limiter, key: &str) -> (String, String) {
        let name = format!("{}:{key}", limiter.kind);
        (
            self.shared.key("auth-failures", &name),
            self.shared.key("auth-lock", &name),
        )
    }

    /// Whether the address or the name is locked out, on any instance.
    async fn locked(&self, ip_key: &str, user_key: &str) -> bool {
        let locks = [
            self.shared_keys(&self.by_ip, ip_key).1,
            self.shared_keys(&self.by_user, user_key).1,
        ];
        match self.shared.any_set(&locks).await {
            Some(locked) => locked,
            None => self.by_ip.locked(ip_key) || self.by_user.locked(user_key),
        }
    }

    /// Counts a failure of the address and of the name, on every instance.
    async fn failed(&self, ip_key: &str, user_key: &str) {
        let (ip_failures, ip_lock) = self.shared_keys(&self.by_ip, ip_key);
        let (user_failures, user_lock) = self.shared_keys(&self.by_user, user_key);
        let keys = [
            (ip_failures, ip_lock, self.by_ip.max),
            (user_failures, user_lock, self.by_user.max),
        ];
        let (window, lockout) = (self.config.failure_window, self.config.lockout);
        if self.shared.fail(&keys, window, lockout).await.is_none() {
            self.by_ip.fail(ip_key, window, lockout);
            self.by_user.fail(user_key, window, lockout);
        }
    }

    async fn check(&self, user: &str, password: &str) -> Login {
        match &self.accounts {
            Accounts::Users(users) => {
                if verify_password(users.hash_of(user), password.to_string()).await {
                    Login::Accepted(Account::named(user.to_string()))
                } else {
                    Login::Refused
                }
            }
            Accounts::Backend(backend) => backend_login(backend, user, password).await,
            Accounts::Directory(directory) => directory_login(directory, user, password).await,
        }
    }
}

/// The entry the login filter finds for the name, then a bind as it.
async fn directory_login(directory: &Directory, user: &str, password: &str) -> Login {
    match directory.login(user, password).await {
        Ok(Some(entry)) => Login::Accepted(Account {
            name: user.to_string(),
            addresses: entry.addresses,
        }),
        Ok(None) => Login::Refused,
        Err(why) => Login::Unavailable(why.0),
    }
}

/// AUTH PLAIN against the backend, which holds the accounts (Exchange).
async fn backend_login(backend: &Target, user: &str, password: &str) -> Login {
    use base64::Engine;
    let mut client = match Client::connect(backend).await {
        Ok(client) => client,
        Err(e) => return Login::Unavailable(e.0),
    };
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
    let result = match client.command(format!("AUTH PLAIN {token}")).await {
        Ok(reply) if reply.code == 235 => Login::Accepted(Account::named(user.to_string())),
        Ok(reply) if reply.is_permanent() => Login::Refused,
        Ok(reply) => Login::Unavailable(format!("backend answered {reply}")),
        Err(e) => Login::Unavailable(e.0),
    };
    client.quit().await;
    result
}

/// May `user` send as `sender`? Their own address, an address of their
/// directory entry (`addresses`), or what the sender-logins map gives them; a
/// name without a domain owns that name at the hosted domains.
pub fn owns(
    config: &AuthConfig,
    user: &str,
    addresses: &[String],
    sender: &str,
    hosted: &dyn Fn(&str) -> bool,
) -> bool {
    if !config.restrict_senders || sender.is_empty() {
        return true;
    }
    let sender = sender.to_lowercase();
    let user = user.to_lowercase();
    if sender == user || addresses.contains(&sender) {
        return true;
    }
    if let Some((local, domain)) = sender.rsplit_once('@')
        && local == user
        && hosted(domain)
    {
        return true;
    }
    config.sender_logins.iter().any(|(pattern, owners)| {
        let pattern = pattern.to_lowercase();
        let applies = pattern == sender || (pattern.starts_with('@') && sender.ends_with(&pattern));
        applies && owners.iter().any(|o| o.eq_ignore_ascii_case(&user))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_the_users_file_names_bad_lines() {
        let hash = hash_password("secret").unwrap();
        let parsed = PasswordHash::new(&hash).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"secret", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"wrong", &parsed)
                .is_err()
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, format!("# users\nalice:{hash}\nbob\n")).unwrap();
        let err = read_users(&path).unwrap_err().to_string();
        assert!(
            err.ends_with(":3: write name:hash (use mailmoat passwd add NAME)"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_name_without_an_account_is_refused_whatever_the_password() {
        let hash = hash_password("secret").unwrap();
        assert!(verify_password(Some(hash.clone()), "secret".into()).await);
        assert!(!verify_password(Some(hash), "wrong".into()).await);
        // Not even the decoy's own password opens it.
        assert!(!verify_password(None, "no account has this password".into()).await);
        assert!(!verify_password(None, "secret".into()).await);
    }

    #[test]
    fn limiter_locks_after_the_maximum_and_forgets_after_the_window() {
        let limiter = Limiter {
            kind: "ip",
            entries: Mutex::new(HashMap::new()),
            max: 3,
        };
        for _ in 0..2 {
            limiter.fail("x", Duration::from_secs(60), Duration::from_secs(60));
        }
        assert!(!limiter.locked("x"));
        limiter.fail("x", Duration::from_secs(60), Duration::from_secs(60));
        assert!(limiter.locked("x"));
        assert!(!limiter.locked("y"));
        limiter.clear("x");
        assert!(!limiter.locked("x"));
    }
}
