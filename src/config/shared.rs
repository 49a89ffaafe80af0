//! `[shared]`: the state several instances judge clients with — mail-bomb
//! counters, AUTH failures and lockouts, greylisting, the callout cache — kept in
//! Redis (or Valkey) instead of each instance's own store.

use super::{Invalid, invalid};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SharedConfig {
    /// `redis://[:password@]host:port[/db]` or `redis+unix:///path`. Unset: each
    /// instance counts and greylists on its own, in its embedded store.
    pub redis: Option<RedisUrl>,
    /// Put before every key, so that several groups of instances (or other
    /// programs) can share one Redis.
    pub key_prefix: String,
    /// The longest one call may take; past it the instance counts locally for
    /// this call and marks Redis unreachable.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// While Redis is unreachable, how often to try it again.
    #[serde(with = "humantime_serde")]
    pub retry_interval: Duration,
}

impl Default for SharedConfig {
    fn default() -> Self {
        SharedConfig {
            redis: None,
            key_prefix: "mailmoat:".into(),
            timeout: Duration::from_millis(200),
            retry_interval: Duration::from_secs(2),
        }
    }
}

/// A Redis address. Its password, if it holds one, is never printed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct RedisUrl(String);

impl RedisUrl {
    pub fn new(url: impl Into<String>) -> RedisUrl {
        RedisUrl(url.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The address with the password hidden, for logs and `check`.
    pub fn shown(&self) -> String {
        match (self.0.find("://"), self.0.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let userinfo = &self.0[scheme + 3..at];
                let user = userinfo.split_once(':').map_or("", |(user, _)| user);
                format!(
                    "{}{user}:{}{}",
                    &self.0[..scheme + 3],
                    super::HIDDEN,
                    &self.0[at..]
                )
            }
            _ => self.0.clone(),
        }
    }

    /// Why the address cannot be used, in the administrator's words.
    pub fn problem(&self) -> Option<String> {
        let shown = self.shown();
        if self.0.starts_with("rediss://") || self.0.starts_with("valkeys://") {
            return Some(format!(
                "shared.redis: '{shown}': TLS to Redis is not built in; reach Redis over a \
                 private network or a local tunnel (stunnel) and write redis://"
            ));
        }
        match redis::Client::open(self.0.as_str()) {
            Ok(_) => None,
            Err(e) => Some(format!(
                "shared.redis: '{shown}' is not a Redis address ({}); write one such as \
                 \"redis://127.0.0.1:6379\"",
                e.detail().unwrap_or("unreadable")
            )),
        }
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

impl Serialize for RedisUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.shown())
    }
}

impl SharedConfig {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if let Some(problem) = self.redis.as_ref().and_then(|url| url.problem()) {
            return Err(invalid(&[&["shared", "redis"]], problem));
        }
        if self.timeout.is_zero() {
            return Err(invalid(
                &[&["shared", "timeout"]],
                "shared.timeout = 0: give the longest a Redis call may take, such as \"200ms\"",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_address_is_never_shown() {
        let url = RedisUrl::new("redis://:hunter2@10.0.0.5:6379/2");
        assert_eq!(url.shown(), "redis://:(hidden)@10.0.0.5:6379/2");
        assert_eq!(format!("{url:?}"), "redis://:(hidden)@10.0.0.5:6379/2");
        let url = RedisUrl::new("redis://mm:hunter2@10.0.0.5");
        assert_eq!(url.shown(), "redis://mm:(hidden)@10.0.0.5");
        assert_eq!(
            RedisUrl::new("redis://127.0.0.1:6379").shown(),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn addresses_that_cannot_work_are_named() {
        assert!(RedisUrl::new("redis://127.0.0.1:6379").problem().is_none());
        let tls = RedisUrl::new("rediss://:pw@10.0.0.5").problem().unwrap();
        assert!(tls.contains("TLS") && !tls.contains("pw@"), "{tls}");
        let bad = RedisUrl::new("127.0.0.1:6379").problem().unwrap();
        assert!(bad.contains("redis://127.0.0.1:6379"), "{bad}");
    }
}
