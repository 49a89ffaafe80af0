//! The directory's answers about recipients, remembered: "found" for
//! `ldap.found_ttl`, "not found" for `ldap.not_found_ttl`, at most
//! `ldap.cache_size` (the oldest forgotten first). With `[shared]` the answers
//! live in Redis, so every instance asks the directory once per address; a
//! flush there is a time after which older answers count for nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::LdapConfig;
use crate::shared_state::SharedState;

/// One remembered answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The entry's name when one was found.
    pub found: Option<String>,
    /// Unix milliseconds: when it was asked, and when it is asked again.
    pub asked_at: u64,
    pub expires_at: u64,
}

impl Answer {
    pub fn left(&self) -> Duration {
        Duration::from_millis(self.expires_at.saturating_sub(now_ms()))
    }
}

#[derive(Default)]
struct Local {
    answers: HashMap<String, Answer>,
    /// Keys in the order they were written, to forget the oldest first.
    order: VecDeque<String>,
}

pub struct AnswerCache {
    /// Addresses being searched for now, each with the lock its searcher holds.
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    found_ttl: Duration,
    not_found_ttl: Duration,
    size: usize,
    local: Mutex<Local>,
    shared: Arc<SharedState>,
}

impl AnswerCache {
    pub fn new(config: &LdapConfig, shared: Arc<SharedState>) -> AnswerCache {
        AnswerCache {
            in_flight: Mutex::new(HashMap::new()),
            found_ttl: config.found_ttl,
            not_found_ttl: config.not_found_ttl,
            size: config.cache_size,
            local: Mutex::new(Local::default()),
            shared,
        }
    }

    fn flushed_key(&self) -> String {
        self.shared.key("ldap-flushed", "recipients")
    }

    /// The answer for a lower-case address, if one is remembered and not expired.
    pub async fn get(&self, address: &str) -> Option<Answer> {
        let keys = [self.shared.key("ldap", address), self.flushed_key()];
        let now = now_ms();
        if let Some(mut values) = self.shared.get(&keys).await {
            let flushed: u64 = values
                .pop()
                .flatten()
                .and_then(|v| String::from_utf8(v).ok()?.parse().ok())
                .unwrap_or(0);
            let answer: Answer = serde_json::from_slice(&values.pop().flatten()?).ok()?;
            return (answer.asked_at >= flushed && answer.expires_at > now).then_some(answer);
        }
        let local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        local
            .answers
            .get(address)
            .filter(|a| a.expires_at > now)
            .cloned()
    }

    /// Remembers the directory's answer for a lower-case address.
    pub async fn put(&self, address: &str, found: Option<String>) {
        let ttl = if found.is_some() {
            self.found_ttl
        } else {
            self.not_found_ttl
        };
        let now = now_ms();
        let answer = Answer {
            found,
            asked_at: now,
            expires_at: now + ttl.as_millis() as u64,
        };
        if let Ok(bytes) = serde_json::to_vec(&answer) {
            let key = self.shared.key("ldap", address);
            if self.shared.put(&key, &bytes, Some(ttl)).await.is_some() {
                return;
            }
        }
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if local.answers.insert(address.to_string(), answer).is_none() {
            local.order.push_back(address.to_string());
        }
        while local.answers.len() > self.size {
            let Some(oldest) = local.order.pop_front() else {
                break;
            };
            local.answers.remove(&oldest);
        }
    }

    /// Waits while another task searches for `address`; held, it makes others
    /// wait. Dropped, the address is no longer in flight.
    pub async fn searching(&self, address: &str) -> Searching<'_> {
        let lock = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(address.to_string())
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        Searching {
            cache: self,
            address: address.to_string(),
            lock,
            _guard: guard,
        }
    }

    /// Forgets every answer (on every instance when shared); how many this
    /// instance held.
    pub async fn flush(&self) -> usize {
        let flushed = now_ms().to_string();
        // A flush in the same millisecond as an answer must still win.
        let _ = self
            .shared
            .put(&self.flushed_key(), flushed.as_bytes(), None)
            .await;
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        let held = local.answers.len();
        *local = Local::default();
        held
    }
}

/// A search in flight (see `AnswerCache::searching`).
pub struct Searching<'a> {
    cache: &'a AnswerCache,
    address: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for Searching<'_> {
    fn drop(&mut self) {
        let mut in_flight = self
            .cache
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // The map, this holder and its guard: nobody else waits on the lock
        // (new waiters take it from the map, under the map's lock held here).
        if Arc::strong_count(&self.lock) == 3 {
            in_flight.remove(&self.address);
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(size: usize) -> AnswerCache {
        let config = LdapConfig {
            cache_size: size,
            found_ttl: Duration::from_secs(60),
            not_found_ttl: Duration::from_millis(1),
            ..LdapConfig::default()
        };
        AnswerCache::new(&config, SharedState::local())
    }

    #[tokio::test]
    async fn found_and_not_found_keep_their_own_time_and_the_oldest_go_first() {
        let cache = cache(2);
        cache
            .put("alice@example.test", Some("cn=alice".into()))
            .await;
        cache.put("ghost@example.test", None).await;
        assert_eq!(
            cache
                .get("alice@example.test")
                .await
                .unwrap()
                .found
                .as_deref(),
            Some("cn=alice")
        );
        // "Not found" was kept a millisecond: gone once that has passed.
        let expiry = cache.local.lock().unwrap().answers["ghost@example.test"].expires_at;
        while now_ms() < expiry {
            std::hint::spin_loop();
        }
        assert_eq!(cache.get("ghost@example.test").await, None);
        cache.put("bob@example.test", Some("cn=bob".into())).await;
        cache
            .put("carol@example.test", Some("cn=carol".into()))
            .await;
        assert_eq!(
            cache.get("alice@example.test").await,
            None,
            "the oldest went first"
        );
        assert!(cache.get("carol@example.test").await.is_some());
        assert_eq!(cache.flush().await, 2);
        assert_eq!(cache.get("carol@example.test").await, None);
    }
}
