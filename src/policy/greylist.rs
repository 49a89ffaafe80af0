//! Greylisting (Postgrey's way): the first attempt of a (client network, sender,
//! recipient) triplet gets `451 4.7.1`; a retry after `delay` and within
//! `retry_window` passes, and the triplet stays known for `expire` after its last
//! message. A network whose triplets passed `auto_allow_after` times is let
//! through from then on. State lives in the embedded store, or in Redis when
//! state is shared (`[shared] redis`), so that a retry passes whichever instance
//! it reaches; while Redis does not answer, in the embedded store.
//!
//! Large senders retry from other addresses (Microsoft 365, Google): a sender
//! whose SPF passes is keyed by its SPF-authorised domain instead of the client
//! network, so a retry from anywhere in that set counts — or, with
//! `skip_spf_pass`, not greylisted at all.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::IpNet;

use std::sync::Arc;

use crate::config::GreylistConfig;
use crate::reply::Reply;
use crate::shared_state::SharedState;
use crate::verdict::Decision;

pub struct Greylist {
    config: GreylistConfig,
    shared: Arc<SharedState>,
    /// "network|sender|recipient" → first attempt, last pass (0: not yet), in
    /// seconds since the epoch.
    triplets: sled::Tree,
    /// network → passes so far (u64::MAX: allowed by the administrator).
    networks: sled::Tree,
    /// Said once: the store is full and new triplets go unrecorded.
    full_logged: std::sync::atomic::AtomicBool,
}

/// One triplet's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Triplet {
    first: u64,
    passed: u64,
}

impl Triplet {
    fn encode(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.first.to_be_bytes());
        out[8..].copy_from_slice(&self.passed.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Triplet> {
        let bytes: &[u8; 16] = bytes.try_into().ok()?;
        Some(Triplet {
            first: u64::from_be_bytes(bytes[..8].try_into().ok()?),
            passed: u64::from_be_bytes(bytes[8..].try_into().ok()?),
        })
    }
}

/// What a triplet's attempt leads to.
enum Greylisting {
    /// Its network is let through.
    LetThrough,
    /// Known, retried after the delay: passes; the record to keep.
    Pass { record: Triplet, first_pass: bool },
    /// Known, retried too early: wait this many seconds more.
    Wait(u64),
    /// Not known: greylisted; the record to keep.
    New(Triplet),
}

/// A network's passes as kept in Redis: a count, or `allowed` (administrator).
fn shared_passes(value: &[u8]) -> u64 {
    if value == ALLOWED {
        return u64::MAX;
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

const ALLOWED: &[u8] = b"allowed";

/// What the greylist knows of one triplet: for `greylist list`.
pub struct Listed {
    pub triplet: String,
    pub first: u64,
    pub passed: Option<u64>,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Greylist {
    /// `trees`: the triplets and the networks (the store's, or a temporary one
    /// for a trial).
    pub fn new(
        config: &GreylistConfig,
        triplets: sled::Tree,
        networks: sled::Tree,
        shared: Arc<SharedState>,
    ) -> Greylist {
        Greylist {
            config: config.clone(),
            shared,
            triplets,
            networks,
            full_logged: Default::default(),
        }
    }

    /// The greylist kept in `store`.
    pub fn open(
        config: &GreylistConfig,
        store: &crate::store::Store,
        shared: Arc<SharedState>,
    ) -> anyhow::Result<Greylist> {
        Ok(Greylist::new(
            config,
            store.tree("greylist")?,
            store.tree("greylist-networks")?,
            shared,
        ))
    }

    /// The client's network as greylisting keys it.
    pub fn network(&self, ip: IpAddr) -> String {
        let prefix = match ip {
            IpAddr::V4(_) => self.config.ipv4_prefix,
            IpAddr::V6(_) => self.config.ipv6_prefix,
        };
        IpNet::new(ip, prefix)
            .map(|n| n.trunc().to_string())
            .unwrap_or_else(|_| ip.to_string())
    }

    /// Judges one recipient at `now`. `spf_domain`: the sender's domain when its
    /// SPF passed.
    pub async fn check(
        &self,
        ip: IpAddr,
        sender: &str,
        recipient: &str,
        spf_domain: Option<&str>,
        now: u64,
    ) -> Result<(), Decision> {
        if !self.config.enabled {
            return Ok(());
        }
        if spf_domain.is_some() && self.config.skip_spf_pass {
            return Ok(());
        }
        let network = self.network(ip);
        let origin = match spf_domain {
            Some(domain) => format!("spf:{}", domain.to_ascii_lowercase()),
            None => network.clone(),
        };
        let key = format!(
            "{origin}|{}|{}",
            sender.to_ascii_lowercase(),
            recipient.to_ascii_lowercase()
        );
        match self.check_shared(&network, &key, now).await {
            Some(judged) => judged,
            None => self.check_local(&network, &key, now),
        }
    }

    /// What a triplet's record and its network's passes say at `now`.
    fn judge(&self, passes: u64, known: Option<Triplet>, now: u64) -> Greylisting {
        if self.let_through(passes) {
            return Greylisting::LetThrough;
        }
        let delay = self.config.delay.as_secs();
        let fresh = |entry: &Triplet| {
            if entry.passed > 0 {
                now.saturating_sub(entry.passed) <= self.config.expire.as_secs()
            } else {
                now.saturating_sub(entry.first) <= self.config.retry_window.as_secs()
            }
        };
        match known.filter(fresh) {
            Some(entry) if entry.passed > 0 || now.saturating_sub(entry.first) >= delay => {
                Greylisting::Pass {
                    record: Triplet {
                        first: entry.first,
                        passed: now,
                    },
                    first_pass: entry.passed == 0,
                }
            }
            Some(entry) => Greylisting::Wait(delay - (now - entry.first)),
            None => Greylisting::New(Triplet {
                first: now,
                passed: 0,
            }),
        }
    }

    /// Judged with the state in Redis; None when it does not answer.
    async fn check_shared(
        &self,
        network: &str,
        key: &str,
        now: u64,
    ) -> Option<Result<(), Decision>> {
        let network_key = self.shared.key("grey-network", network);
        let triplet_key = self.shared.key("grey", key);
        let found = self
            .shared
            .get(&[network_key.clone(), triplet_key.clone()])
            .await?;
        let passes = found
            .first()
            .cloned()
            .flatten()
            .map_or(0, |v| shared_passes(&v));
        let known = found
            .get(1)
            .cloned()
            .flatten()
            .and_then(|v| Triplet::decode(&v));
        Some(match self.judge(passes, known, now) {
            Greylisting::LetThrough => Ok(()),
            Greylisting::Wait(wait) => Err(self.greylisted(key, wait)),
            Greylisting::New(record) => {
                // Unrecorded (Redis gone meanwhile): the next attempt is a first again.
                let _ = self
                    .shared
                    .put(
                        &triplet_key,
                        &record.encode(),
                        Some(self.config.retry_window),
                    )
                    .await;
                Err(self.greylisted(key, self.config.delay.as_secs()))
            }
            Greylisting::Pass { record, first_pass } => {
                let _ = self
                    .shared
                    .put(&triplet_key, &record.encode(), Some(self.config.expire))
                    .await;
                if first_pass {
                    let _ = self
                        .shared
                        .increment(&network_key, self.config.expire)
                        .await;
                }
                Ok(())
            }
        })
    }

    /// Judged with the embedded store.
    fn check_local(&self, network: &str, key: &str, now: u64) -> Result<(), Decision> {
        let passes = self.local_passes(network);
        let known = self
            .triplets
            .get(key)
            .ok()
            .flatten()
            .and_then(|v| Triplet::decode(&v));
        match self.judge(passes, known, now) {
            Greylisting::LetThrough => Ok(()),
            Greylisting::Wait(wait) => Err(self.greylisted(key, wait)),
            Greylisting::New(record) => {
                if self.triplets.len() >= self.config.max_entries {
                    self.purge(now);
                }
                if self.triplets.len() >= self.config.max_entries {
                    if !self
                        .full_logged
                        .swap(true, std::sync::atomic::Ordering::Relaxed)
                    {
                        tracing::warn!(
                            max_entries = self.config.max_entries,
                            "greylist full: new triplets pass unrecorded until old ones expire"
                        );
                    }
                    return Ok(());
                }
                let _ = self.triplets.insert(key.as_bytes(), &record.encode());
                Err(self.greylisted(key, self.config.delay.as_secs()))
            }
            Greylisting::Pass { record, first_pass } => {
                if first_pass {
                    // The first pass of this triplet counts towards its network's.
                    let _ = self.networks.update_and_fetch(network.as_bytes(), |old| {
                        let count = old
                            .and_then(|v| v.try_into().ok().map(u64::from_be_bytes))
                            .unwrap_or(0);
                        Some(count.saturating_add(1).to_be_bytes().to_vec())
                    });
                }
                let _ = self.triplets.insert(key.as_bytes(), &record.encode());
                Ok(())
            }
        }
    }

    /// Passes of a network so far (u64::MAX: allowed by an administrator).
    fn local_passes(&self, network: &str) -> u64 {
        self.networks
            .get(network.as_bytes())
            .ok()
            .flatten()
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0)
    }

    /// Whether a network with this many passes is let through.
    fn let_through(&self, passes: u64) -> bool {
        passes == u64::MAX
            || (self.config.auto_allow_after > 0 && passes >= self.config.auto_allow_after)
    }

    fn greylisted(&self, key: &str, wait: u64) -> Decision {
        Decision::refuse(
            "greylist",
            Reply::new(
                451,
                "4.7.1",
                format!("Greylisted: please try again in {wait} seconds"),
            ),
            format!("greylisted {key}"),
        )
    }

    /// Removes triplets past their retry window or expiry; returns how many.
    pub fn purge(&self, now: u64) -> usize {
        let mut removed = 0;
        for (key, value) in self.triplets.iter().flatten() {
            let stale = match Triplet::decode(&value) {
                Some(e) if e.passed > 0 => {
                    now.saturating_sub(e.passed) > self.config.expire.as_secs()
                }
                Some(e) => now.saturating_sub(e.first) > self.config.retry_window.as_secs(),
                None => true,
            };
            if stale && self.triplets.remove(key).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// Purges stale triplets every hour, so the store holds what is current.
    pub async fn purge_loop(self: std::sync::Arc<Self>) {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            every.tick().await;
            if !self.config.enabled {
                continue;
            }
            let greylist = self.clone();
            if let Ok(removed) = tokio::task::spawn_blocking(move || greylist.purge(now())).await
                && removed > 0
            {
                tracing::info!(removed, "greylist: stale triplets removed");
            }
        }
    }

    /// Lets a network through from now on (`greylist allow`).
    pub async fn allow(&self, network: &str) -> Result<String, String> {
        let net = network
            .parse::<IpNet>()
            .or_else(|_| network.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| {
                format!("'{network}' is not an address or a network such as 192.0.2.0/24")
            })?;
        let key = match net.addr() {
            ip if net.prefix_len() == net.max_prefix_len() => self.network(ip),
            _ => net.trunc().to_string(),
        };
        self.networks
            .insert(key.as_bytes(), &u64::MAX.to_be_bytes())
            .map_err(|e| e.to_string())?;
        if self.shared.is_shared() {
            let shared_key = self.shared.key("grey-network", &key);
            if self.shared.put(&shared_key, ALLOWED, None).await.is_none() {
                return Err(format!(
                    "{key} is let through by this instance only: Redis did not answer; \
                     run the command again when it does"
                ));
            }
        }
        Ok(key)
    }

    /// Every triplet, and the networks let through.
    pub async fn list(&self) -> (Vec<Listed>, Vec<(String, Option<u64>)>) {
        if let Some(listed) = self.list_shared().await {
            return listed;
        }
        self.list_local()
    }

    /// The greylist kept in Redis; None when not shared or Redis does not answer.
    async fn list_shared(&self) -> Option<(Vec<Listed>, Vec<(String, Option<u64>)>)> {
        if !self.shared.is_shared() {
            return None;
        }
        let triplets = self
            .shared
            .scan("grey")
            .await?
            .into_iter()
            .filter_map(|(triplet, v)| {
                let e = Triplet::decode(&v)?;
                Some(Listed {
                    triplet,
                    first: e.first,
                    passed: (e.passed > 0).then_some(e.passed),
                })
            })
            .collect();
        let networks = self
            .shared
            .scan("grey-network")
            .await?
            .into_iter()
            .filter_map(|(network, v)| {
                let passes = shared_passes(&v);
                self.let_through(passes)
                    .then_some((network, (passes != u64::MAX).then_some(passes)))
            })
            .collect();
        Some((triplets, networks))
    }

    fn list_local(&self) -> (Vec<Listed>, Vec<(String, Option<u64>)>) {
        let triplets = self
            .triplets
            .iter()
            .flatten()
            .filter_map(|(k, v)| {
                let e = Triplet::decode(&v)?;
                Some(Listed {
                    triplet: String::from_utf8_lossy(&k).into_owned(),
                    first: e.first,
                    passed: (e.passed > 0).then_some(e.passed),
                })
            })
            .collect();
        let networks = self
            .networks
            .iter()
            .flatten()
            .filter_map(|(k, v)| {
                let passes = u64::from_be_bytes(v.as_ref().try_into().ok()?);
                self.let_through(passes).then(|| {
                    (
                        String::from_utf8_lossy(&k).into_owned(),
                        (passes != u64::MAX).then_some(passes),
                    )
                })
            })
            .collect();
        (triplets, networks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn greylist(config: GreylistConfig) -> Greylist {
        let db = sled::Config::new().temporary(true).open().unwrap();
        Greylist::new(
            &config,
            db.open_tree("t").unwrap(),
            db.open_tree("n").unwrap(),
            SharedState::local(),
        )
    }

    fn on() -> GreylistConfig {
        GreylistConfig {
            enabled: true,
            skip_spf_pass: false,
            ..GreylistConfig::default()
        }
    }

    const IP: &str = "192.0.2.10";

    #[tokio::test]
    async fn the_first_attempt_and_early_retries_wait_later_ones_pass() {
        let g = greylist(on());
        let ip = IP.parse().unwrap();
        let t0 = 1_000_000;
        let first = g
            .check(ip, "a@x.test", "b@y.test", None, t0)
            .await
            .unwrap_err();
        assert_eq!(
            first.reply.to_string(),
            "451 4.7.1 Greylisted: please try again in 300 seconds"
        );
        let early = g
            .check(ip, "a@x.test", "b@y.test", None, t0 + 100)
            .await
            .unwrap_err();
        assert_eq!(
            early.reply.to_string(),
            "451 4.7.1 Greylisted: please try again in 200 seconds"
        );
        // Another address of the same /24 is the same client.
        assert!(
            g.check(
                "192.0.2.99".parse().unwrap(),
                "a@x.test",
                "b@y.test",
                None,
                t0 + 300
            )
            .await
            .is_ok()
        );
        assert!(
            g.check(ip, "A@X.test", "b@y.test", None, t0 + 301)
                .await
                .is_ok(),
            "case"
        );
        // Another recipient is another triplet.
        assert!(
            g.check(ip, "a@x.test", "c@y.test", None, t0 + 302)
                .await
                .is_err()
        );
        // Past the retry window it starts over.
        let late = g
            .check(ip, "d@x.test", "b@y.test", None, t0)
            .await
            .unwrap_err();
        assert!(late.reply.to_string().starts_with("451"));
        let window = on().retry_window.as_secs();
        assert!(
            g.check(ip, "d@x.test", "b@y.test", None, t0 + window + 1)
                .await
                .is_err()
        );
        // Past expiry after the last pass, too.
        let expire = on().expire.as_secs();
        assert!(
            g.check(ip, "a@x.test", "b@y.test", None, t0 + 301 + expire + 1)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn networks_that_retried_enough_are_let_through() {
        let g = greylist(GreylistConfig {
            auto_allow_after: 2,
            ..on()
        });
        let ip = IP.parse().unwrap();
        for (n, rcpt) in ["r1@y.test", "r2@y.test"].iter().enumerate() {
            let t = 1_000_000 + n as u64 * 1000;
            assert!(g.check(ip, "a@x.test", rcpt, None, t).await.is_err());
            assert!(g.check(ip, "a@x.test", rcpt, None, t + 300).await.is_ok());
        }
        assert!(
            g.check(ip, "new@x.test", "r3@y.test", None, 2_000_000)
                .await
                .is_ok()
        );
        assert!(
            g.check(
                "198.51.100.1".parse().unwrap(),
                "new@x.test",
                "r3@y.test",
                None,
                2_000_000
            )
            .await
            .is_err()
        );
        assert_eq!(g.allow("198.51.100.7").await.unwrap(), "198.51.100.0/24");
        assert!(
            g.check(
                "198.51.100.1".parse().unwrap(),
                "n2@x.test",
                "r3@y.test",
                None,
                2_000_000
            )
            .await
            .is_ok()
        );
        let (_, networks) = g.list().await;
        assert_eq!(networks.len(), 2, "{:?}", networks);
    }

    #[tokio::test]
    async fn an_spf_authorised_sender_may_retry_from_another_address() {
        let g = greylist(on());
        let t0 = 1_000_000;
        assert!(
            g.check(
                "192.0.2.1".parse().unwrap(),
                "a@big.test",
                "b@y.test",
                Some("big.test"),
                t0
            )
            .await
            .is_err()
        );
        assert!(
            g.check(
                "203.0.113.5".parse().unwrap(),
                "a@big.test",
                "b@y.test",
                Some("big.test"),
                t0 + 300
            )
            .await
            .is_ok()
        );
        let skip = greylist(GreylistConfig {
            skip_spf_pass: true,
            ..on()
        });
        assert!(
            skip.check(
                "192.0.2.1".parse().unwrap(),
                "a@big.test",
                "b@y.test",
                Some("big.test"),
                t0
            )
            .await
            .is_ok()
        );
    }

    #[tokio::test]
    async fn the_store_is_bounded_and_purged() {
        let g = greylist(GreylistConfig {
            max_entries: 2,
            retry_window: Duration::from_secs(1000),
            ..on()
        });
        let ip = IP.parse().unwrap();
        assert!(g.check(ip, "a@x.test", "1@y.test", None, 10).await.is_err());
        assert!(g.check(ip, "a@x.test", "2@y.test", None, 10).await.is_err());
        assert!(
            g.check(ip, "a@x.test", "3@y.test", None, 11).await.is_ok(),
            "full: passes unrecorded"
        );
        assert_eq!(g.list().await.0.len(), 2);
        // Later, the old ones are past their window and make room.
        assert!(
            g.check(ip, "a@x.test", "4@y.test", None, 2000)
                .await
                .is_err()
        );
        assert_eq!(g.list().await.0.len(), 1);
    }
}
