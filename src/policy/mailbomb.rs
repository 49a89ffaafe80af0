//! Mail-bomb limits: how much one client network, one sender, one recipient and
//! one message body may send in a window. Counted in Redis when state is shared
//! (`[shared] redis`), so that a limit holds across instances; else, and while
//! Redis does not answer, in this instance's memory, bounded however many
//! addresses a flood comes from.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::MailBombConfig;
use crate::reply::Reply;
use crate::shared_state::SharedState;
use crate::verdict::Decision;

/// One count over a fixed window.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    count: u32,
}

/// A counter per key (network, sender, recipient, body hash).
struct Counter {
    /// The check name its refusals carry (`mailbomb.messages`).
    name: &'static str,
    /// The limit's name, for the metrics (`messages`).
    limit: &'static str,
    max: u32,
    window: Duration,
    entries: Mutex<HashMap<String, Window>>,
    max_tracked: usize,
}

impl Counter {
    fn new(name: &'static str, max: u32, window: Duration, max_tracked: usize) -> Counter {
        Counter {
            name,
            limit: name.trim_start_matches("mailbomb."),
            max,
            window,
            entries: Mutex::new(HashMap::new()),
            max_tracked,
        }
    }

    /// Counts one more for `key`; false when that goes over the limit (the
    /// refused attempt is not counted).
    fn take(&self, key: &str) -> bool {
        if self.max == 0 {
            return true;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if !entries.contains_key(key) && entries.len() >= self.max_tracked {
            entries.retain(|_, w| now.duration_since(w.start) < self.window);
            if entries.len() >= self.max_tracked {
                // Still full of live keys: forget the quietest.
                if let Some(quietest) = entries
                    .iter()
                    .min_by_key(|(_, w)| w.count)
                    .map(|(k, _)| k.clone())
                {
                    entries.remove(&quietest);
                }
            }
        }
        let window = entries.entry(key.to_string()).or_insert(Window {
            start: now,
            count: 0,
        });
        if now.duration_since(window.start) >= self.window {
            *window = Window {
                start: now,
                count: 0,
            };
        }
        if window.count >= self.max {
            return false;
        }
        window.count += 1;
        true
    }

    fn tracked(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The client's network for counting: IPv4 /24, IPv6 /64, so a flood from
/// neighbouring addresses counts as one.
pub fn network_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

pub struct MailBomb {
    pub exempt_trusted: bool,
    shared: Arc<SharedState>,
    connections: Counter,
    messages: Counter,
    recipients: Counter,
    senders: Counter,
    mailbox: Counter,
    bodies: Counter,
}

fn slow_down(check: &str, text: String, reason: String) -> Decision {
    Decision::refuse(check, Reply::new(451, "4.7.1", text), reason)
}

impl MailBomb {
    /// The limit whose refusals carry this check name, if one of these does.
    pub fn limit_named(&self, check: &str) -> Option<&'static str> {
        [
            &self.connections,
            &self.messages,
            &self.recipients,
            &self.senders,
            &self.mailbox,
            &self.bodies,
        ]
        .into_iter()
        .find(|counter| counter.name == check)
        .map(|counter| counter.limit)
    }

    pub fn new(config: &MailBombConfig, shared: Arc<SharedState>) -> MailBomb {
        let hour = Duration::from_secs(3600);
        let n = config.max_tracked.max(1);
        MailBomb {
            exempt_trusted: config.exempt_trusted,
            shared,
            connections: Counter::new(
                "mailbomb.connections",
                config.connections_per_minute,
                Duration::from_secs(60),
                n,
            ),
            messages: Counter::new("mailbomb.messages", config.messages_per_hour, hour, n),
            recipients: Counter::new("mailbomb.recipients", config.recipients_per_hour, hour, n),
            senders: Counter::new(
                "mailbomb.sender",
                config.messages_per_sender_per_hour,
                hour,
                n,
            ),
            mailbox: Counter::new(
                "mailbomb.mailbox",
                config.messages_per_recipient,
                config.recipient_window,
                n,
            ),
            bodies: Counter::new(
                "mailbomb.identical_bodies",
                config.identical_bodies,
                config.body_window,
                n,
            ),
        }
    }

    /// Counts one against each `(counter, key)` in turn; the first over its
    /// limit refuses (and the ones after it are not counted). One round trip
    /// when state is shared.
    async fn take(
        &self,
        counts: &[(&Counter, &str, &(dyn Fn() -> String + Sync))],
    ) -> Result<(), Decision> {
        let counts: Vec<_> = counts.iter().filter(|(c, _, _)| c.max > 0).collect();
        if counts.is_empty() {
            return Ok(());
        }
        // Shared keys are built only when there is somewhere to share them.
        let shared = if self.shared.is_shared() {
            let keys: Vec<(String, u32, Duration)> = counts
                .iter()
                .map(|(c, key, _)| {
                    (
                        self.shared.key("rate", &format!("{}:{key}", c.name)),
                        c.max,
                        c.window,
                    )
                })
                .collect();
            self.shared.count(&keys).await
        } else {
            None
        };
        let refused = shared.unwrap_or_else(|| counts.iter().position(|(c, key, _)| !c.take(key)));
        match refused {
            None => Ok(()),
            Some(i) => {
                let (counter, key, text) = counts[i];
                Err(slow_down(
                    counter.name,
                    text(),
                    format!(
                        "{key}: more than {} in {}",
                        counter.max,
                        humantime::format_duration(counter.window)
                    ),
                ))
            }
        }
    }

    /// A new connection from this client.
    pub async fn connect(&self, ip: IpAddr) -> Result<(), Decision> {
        let network = network_of(ip);
        self.take(&[(&self.connections, &network, &|| {
            "Too many connections from your network; try again later".into()
        })])
        .await
    }

    /// A new message (at MAIL FROM) from this client and sender.
    pub async fn message(&self, ip: IpAddr, sender: &str) -> Result<(), Decision> {
        let network = network_of(ip);
        let too_many = || "Too many messages from your network; try again later".to_string();
        if sender.is_empty() {
            return self.take(&[(&self.messages, &network, &too_many)]).await;
        }
        let sender_key = sender.to_lowercase();
        self.take(&[
            (&self.messages, &network, &too_many),
            (&self.senders, &sender_key, &|| {
                format!("<{sender}>: Too many messages from this sender; try again later")
            }),
        ])
        .await
    }

    /// One more recipient from this client, to this mailbox.
    pub async fn recipient(&self, ip: IpAddr, recipient: &str) -> Result<(), Decision> {
        let network = network_of(ip);
        let mailbox = recipient.to_lowercase();
        self.take(&[
            (&self.recipients, &network, &|| {
                "Too many recipients from your network; try again later".into()
            }),
            (&self.mailbox, &mailbox, &|| {
                format!("<{recipient}>: Too much mail for this recipient; try again later")
            }),
        ])
        .await
    }

    /// A message body (the message after its headers): the same one too often is a
    /// flood, whoever sends it.
    pub async fn body(&self, message: &[u8]) -> Result<(), Decision> {
        if self.bodies.max == 0 {
            return Ok(());
        }
        let start = crate::mime::edit::header_end(message);
        let hash = format!(
            "{:08x}{:08x}",
            crc32fast::hash(&message[start..]),
            message.len() - start
        );
        self.take(&[(&self.bodies, &hash, &|| {
            "Too many copies of this message; try again later".into()
        })])
        .await
    }

    /// Keys tracked in all, for tests of the memory bound.
    pub fn tracked(&self) -> usize {
        [
            &self.connections,
            &self.messages,
            &self.recipients,
            &self.senders,
            &self.mailbox,
            &self.bodies,
        ]
        .iter()
        .map(|c| c.tracked())
        .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_aggregate_neighbours() {
        assert_eq!(network_of("192.0.2.77".parse().unwrap()), "192.0.2.0/24");
        assert_eq!(
            network_of("2001:db8:1:2:3::9".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
    }

    #[tokio::test]
    async fn a_limit_cuts_off_at_its_count_per_key() {
        let config = MailBombConfig {
            messages_per_recipient: 3,
            ..MailBombConfig::default()
        };
        let limits = MailBomb::new(&config, SharedState::local());
        let ip = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(limits.recipient(ip, "Victim@example.test").await.is_ok());
        }
        let refused = limits
            .recipient(ip, "victim@example.test")
            .await
            .unwrap_err();
        assert_eq!(
            (refused.reply.code, refused.reply.status.as_str()),
            (451, "4.7.1")
        );
        assert_eq!(refused.by.to_string(), "mailbomb.mailbox");
        assert!(limits.recipient(ip, "other@example.test").await.is_ok());
    }

    #[tokio::test]
    async fn memory_stays_bounded_under_a_flood_of_addresses() {
        let config = MailBombConfig {
            connections_per_minute: 5,
            max_tracked: 1000,
            ..MailBombConfig::default()
        };
        let limits = MailBomb::new(&config, SharedState::local());
        for i in 0..50_000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8));
            let _ = limits.connect(IpAddr::V4(ip)).await;
        }
        assert!(limits.tracked() <= 1000, "{}", limits.tracked());
    }

    #[tokio::test]
    async fn identical_bodies_are_counted_whatever_the_headers() {
        let config = MailBombConfig {
            identical_bodies: 2,
            ..MailBombConfig::default()
        };
        let limits = MailBomb::new(&config, SharedState::local());
        assert!(limits.body(b"To: a\r\n\r\nbuy now\r\n").await.is_ok());
        assert!(
            limits
                .body(b"To: b\r\nX: y\r\n\r\nbuy now\r\n")
                .await
                .is_ok()
        );
        assert!(limits.body(b"To: c\r\n\r\nbuy now\r\n").await.is_err());
        assert!(limits.body(b"To: c\r\n\r\nhello\r\n").await.is_ok());
    }
}
