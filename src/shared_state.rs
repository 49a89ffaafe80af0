//! State that judges a client, shared by several instances through Redis
//! (`[shared] redis`): the mail-bomb counters, AUTH failures and lockouts,
//! greylisting and the callout cache. Each of those keeps its own local state as
//! well and asks here first; every call answers `None` when it cannot be made
//! shared — no Redis configured, Redis unreachable or slower than
//! `shared.timeout` — and the caller then uses its local state. So a Redis
//! outage never refuses mail and never holds a session: the instance counts on
//! its own until Redis answers again (logged once each way, and the
//! `mailmoat_shared_state_up` gauge).
//!
//! Writes are single commands or Lua scripts, atomic in Redis whichever instance
//! sends them, with expiries so that nothing needs purging.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, RedisResult, Script};

use crate::config::SharedConfig;
use crate::metrics::Metrics;

/// Where shared state lives: Redis, or nowhere (each instance on its own).
pub struct SharedState {
    redis: Option<Arc<Redis>>,
}

struct Redis {
    client: redis::Client,
    manager: tokio::sync::OnceCell<ConnectionManager>,
    prefix: String,
    timeout: Duration,
    retry_interval: Duration,
    /// The address as logs may show it.
    shown: String,
    /// False from the first failed call until a probe gets an answer; calls
    /// meanwhile are answered locally at once, without waiting for Redis.
    reachable: AtomicBool,
    metrics: OnceLock<Arc<Metrics>>,
    counters: Script,
    failures: Script,
}

/// Counts one for each key in turn; stops at the first key already at its
/// limit (that one is not counted) and returns its place, 1-based; 0: all
/// counted. ARGV: per key, its limit and its window in milliseconds. A key's
/// window starts at its first count (its expiry), like the local counters.
const COUNTERS: &str = r#"
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i - 1])
  local count = tonumber(redis.call('GET', key) or '0')
  if count >= limit then return i end
  if redis.call('INCR', key) == 1 then redis.call('PEXPIRE', key, ARGV[2 * i]) end
end
return 0
"#;

/// One failed login for each (failures key, lock key) pair in KEYS. ARGV: the
/// failure window and the lockout in milliseconds, then each pair's limit.
const FAILURES: &str = r#"
for i = 1, #KEYS, 2 do
  local count = redis.call('INCR', KEYS[i])
  if count == 1 then redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
  if count >= tonumber(ARGV[2 + (i + 1) / 2]) then
    redis.call('SET', KEYS[i + 1], '1', 'PX', ARGV[2])
  end
end
return 0
"#;

fn millis(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

impl SharedState {
    /// No shared state: every instance on its own (the default, and trials).
    pub fn local() -> Arc<SharedState> {
        Arc::new(SharedState { redis: None })
    }

    /// The shared state `config` names. Nothing is connected yet: the first
    /// call connects, so an instance starts whether Redis is up or not.
    pub fn open(config: &SharedConfig) -> anyhow::Result<Arc<SharedState>> {
        let Some(url) = &config.redis else {
            return Ok(SharedState::local());
        };
        if let Some(problem) = url.problem() {
            anyhow::bail!(problem);
        }
        let client = redis::Client::open(url.expose())?;
        Ok(Arc::new(SharedState {
            redis: Some(Arc::new(Redis {
                client,
                manager: tokio::sync::OnceCell::new(),
                prefix: config.key_prefix.clone(),
                timeout: config.timeout,
                retry_interval: config.retry_interval,
                shown: url.shown(),
                reachable: AtomicBool::new(true),
                metrics: OnceLock::new(),
                counters: Script::new(COUNTERS),
                failures: Script::new(FAILURES),
            })),
        }))
    }

    /// Whether state is shared at all (Redis configured).
    pub fn is_shared(&self) -> bool {
        self.redis.is_some()
    }

    /// Where shared state is and whether it answers, for `mailmoat status`;
    /// None when state is not shared.
    pub fn describe(&self) -> Option<String> {
        let redis = self.redis.as_ref()?;
        Some(if redis.reachable.load(Ordering::Relaxed) {
            format!("Redis {}", redis.shown)
        } else {
            format!(
                "Redis {} NOT answering (counting on this instance alone)",
                redis.shown
            )
        })
    }

    /// Reports reachability, round trips and local fallbacks into `metrics`.
    pub fn count_into(&self, metrics: Arc<Metrics>) {
        if let Some(redis) = &self.redis {
            metrics.shared_state_up(redis.reachable.load(Ordering::Relaxed));
            let _ = redis.metrics.set(metrics);
        }
    }

    /// Tries Redis once at start, so the log says at once where state is kept.
    pub async fn start(&self) {
        let Some(redis) = &self.redis else {
            return;
        };
        let answered: Option<String> = redis
            .attempt(|mut c| async move { redis::cmd("PING").query_async(&mut c).await })
            .await;
        if answered.is_some() {
            tracing::info!(redis = %redis.shown, "shared state kept in Redis");
        }
    }

    /// The key of `name` of one kind (`rate`, `auth-fail`, `grey` …), prefixed.
    pub fn key(&self, kind: &str, name: &str) -> String {
        let prefix = self.redis.as_ref().map_or("", |r| r.prefix.as_str());
        format!("{prefix}{kind}:{name}")
    }

    /// Counts one against each `(key, limit, window)` in turn, stopping at the
    /// first at its limit: `Some(Some(i))` names it, `Some(None)`: all counted.
    pub async fn count(&self, counters: &[(String, u32, Duration)]) -> Option<Option<usize>> {
        let redis = self.redis.as_ref()?;
        let mut invocation = redis.counters.prepare_invoke();
        for (key, limit, window) in counters {
            invocation.key(key).arg(*limit).arg(millis(*window));
        }
        let refused: usize = redis
            .attempt(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        Some(refused.checked_sub(1))
    }

    /// Whether any of these lock keys is set.
    pub async fn any_set(&self, keys: &[String]) -> Option<bool> {
        let redis = self.redis.as_ref()?;
        let set: u64 = redis.query(redis::cmd("EXISTS").arg(keys)).await?;
        Some(set > 0)
    }

    /// One failure for each `(failures key, lock key, limit)`: the failures
    /// count within `window`; at the limit the lock key is set for `lockout`.
    pub async fn fail(
        &self,
        keys: &[(String, String, u32)],
        window: Duration,
        lockout: Duration,
    ) -> Option<()> {
        let redis = self.redis.as_ref()?;
        let mut invocation = redis.failures.prepare_invoke();
        invocation.arg(millis(window)).arg(millis(lockout));
        for (failures, lock, limit) in keys {
            invocation.key(failures).key(lock).arg(*limit);
        }
        let _: u64 = redis
            .attempt(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        Some(())
    }

    /// Removes keys.
    pub async fn remove(&self, keys: &[String]) -> Option<()> {
        let redis = self.redis.as_ref()?;
        let _: u64 = redis.query(redis::cmd("DEL").arg(keys)).await?;
        Some(())
    }

    /// The values of keys (absent: None), in one round trip.
    pub async fn get(&self, keys: &[String]) -> Option<Vec<Option<Vec<u8>>>> {
        let redis = self.redis.as_ref()?;
        redis.query(redis::cmd("MGET").arg(keys)).await
    }

    /// Sets a key, kept for `ttl` (None: until removed).
    pub async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Option<()> {
        let redis = self.redis.as_ref()?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(millis(ttl));
        }
        redis.query::<()>(&cmd).await
    }

    /// Adds one to a counter kept for `ttl` after its last change; returns it.
    pub async fn increment(&self, key: &str, ttl: Duration) -> Option<u64> {
        let redis = self.redis.as_ref()?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .incr(key, 1)
            .cmd("PEXPIRE")
            .arg(key)
            .arg(millis(ttl))
            .ignore();
        let (count,): (u64,) = redis
            .attempt(|mut c| async move { pipe.query_async(&mut c).await })
            .await?;
        Some(count)
    }

    /// Every key of one kind with its value (`greylist list`), read in batches.
    pub async fn scan(&self, kind: &str) -> Option<Vec<(String, Vec<u8>)>> {
        let redis = self.redis.as_ref()?;
        let pattern = format!("{}{kind}:*", redis.prefix);
        let strip = pattern.len() - 1;
        let mut found = Vec::new();
        let mut cursor = 0u64;
        loop {
            let scan = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .clone();
            let (next, keys): (u64, Vec<String>) = redis.query(&scan).await?;
            if !keys.is_empty() {
                let values = self.get(&keys).await?;
                for (key, value) in keys.into_iter().zip(values) {
                    if let Some(value) = value {
                        found.push((key[strip..].to_string(), value));
                    }
                }
            }
            if next == 0 {
                return Some(found);
            }
            cursor = next;
        }
    }
}

impl Redis {
    /// One command, through [`Redis::attempt`].
    async fn query<T: FromRedisValue>(self: &Arc<Self>, cmd: &redis::Cmd) -> Option<T> {
        let cmd = cmd.clone();
        self.attempt(|mut c| async move { cmd.query_async(&mut c).await })
            .await
    }

    /// One round trip, within the timeout; None (and Redis marked unreachable)
    /// when it fails. While Redis is unreachable nothing is sent.
    async fn attempt<T, F, Fut>(self: &Arc<Self>, call: F) -> Option<T>
    where
        T: FromRedisValue,
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if !self.reachable.load(Ordering::Relaxed) {
            self.count(|m| m.shared_state_fallback());
            return None;
        }
        self.count(|m| m.shared_state_call());
        let answer = tokio::time::timeout(self.timeout, async {
            let manager = self.manager().await?;
            call(manager).await
        })
        .await;
        match answer {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                self.unreachable(e.to_string());
                None
            }
            Err(_) => {
                self.unreachable(format!(
                    "no answer within {}",
                    humantime::format_duration(self.timeout)
                ));
                None
            }
        }
    }

    async fn manager(&self) -> RedisResult<ConnectionManager> {
        self.manager
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(self.retry_interval);
                ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            })
            .await
            .cloned()
    }

    fn count(&self, what: impl FnOnce(&Metrics)) {
        if let Some(metrics) = self.metrics.get() {
            what(metrics);
        }
    }

    /// Marks Redis unreachable (logged once) and probes it until it answers.
    fn unreachable(self: &Arc<Self>, why: String) {
        self.count(|m| m.shared_state_fallback());
        if !self.reachable.swap(false, Ordering::Relaxed) {
            return;
        }
        self.count(|m| m.shared_state_up(false));
        tracing::warn!(
            redis = %self.shown,
            error = %why,
            "shared state unreachable: counting, greylisting and caching on this instance alone until it answers"
        );
        let redis = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(redis.retry_interval).await;
                let ping = tokio::time::timeout(redis.timeout, async {
                    let mut manager = redis.manager().await?;
                    redis::cmd("PING").query_async::<String>(&mut manager).await
                })
                .await;
                if matches!(ping, Ok(Ok(_))) {
                    redis.reachable.store(true, Ordering::Relaxed);
                    redis.count(|m| m.shared_state_up(true));
                    tracing::info!(redis = %redis.shown, "shared state reachable again: counting in Redis");
                    return;
                }
            }
        });
    }
}
