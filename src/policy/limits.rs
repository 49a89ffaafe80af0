//! Mail-bomb limits: how much one client network, one sender, one recipient and
//! one message body may send in a window. Built in, no external service; memory
//! is bounded however many addresses a flood comes from.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::MailBombConfig;
use crate::reply::Reply;
use crate::verdict::Decision;

/// One count over a fixed window.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    count: u32,
}

/// A counter per key (network, sender, recipient, body hash).
struct Counter {
    name: &'static str,
    max: u32,
    window: Duration,
    entries: Mutex<HashMap<String, Window>>,
    max_tracked: usize,
}

impl Counter {
    fn new(name: &'static str, max: u32, window: Duration, max_tracked: usize) -> Counter {
        Counter {
            name,
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
    pub fn new(config: &MailBombConfig) -> MailBomb {
        let hour = Duration::from_secs(3600);
        let n = config.max_tracked.max(1);
        MailBomb {
            exempt_trusted: config.exempt_trusted,
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

    fn check(counter: &Counter, key: &str, text: impl FnOnce() -> String) -> Result<(), Decision> {
        if counter.take(key) {
            Ok(())
        } else {
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

    /// A new connection from this client.
    pub fn connect(&self, ip: IpAddr) -> Result<(), Decision> {
        let network = network_of(ip);
        Self::check(&self.connections, &network, || {
            "Too many connections from your network; try again later".into()
        })
    }

    /// A new message (at MAIL FROM) from this client and sender.
    pub fn message(&self, ip: IpAddr, sender: &str) -> Result<(), Decision> {
        let network = network_of(ip);
        Self::check(&self.messages, &network, || {
            "Too many messages from your network; try again later".into()
        })?;
        if sender.is_empty() {
            return Ok(());
        }
        Self::check(&self.senders, &sender.to_lowercase(), || {
            format!("<{sender}>: Too many messages from this sender; try again later")
        })
    }

    /// One more recipient from this client, to this mailbox.
    pub fn recipient(&self, ip: IpAddr, recipient: &str) -> Result<(), Decision> {
        let network = network_of(ip);
        Self::check(&self.recipients, &network, || {
            "Too many recipients from your network; try again later".into()
        })?;
        Self::check(&self.mailbox, &recipient.to_lowercase(), || {
            format!("<{recipient}>: Too much mail for this recipient; try again later")
        })
    }

    /// A message body (the message after its headers): the same one too often is a
    /// flood, whoever sends it.
    pub fn body(&self, message: &[u8]) -> Result<(), Decision> {
        if self.bodies.max == 0 {
            return Ok(());
        }
        let start = crate::mime::edit::header_end(message);
        let hash = format!(
            "{:08x}{:08x}",
            crc32fast::hash(&message[start..]),
            message.len() - start
        );
        Self::check(&self.bodies, &hash, || {
            "Too many copies of this message; try again later".into()
        })
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

    #[test]
    fn a_limit_cuts_off_at_its_count_per_key() {
        let config = MailBombConfig {
            messages_per_recipient: 3,
            ..MailBombConfig::default()
        };
        let limits = MailBomb::new(&config);
        let ip = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(limits.recipient(ip, "Victim@example.test").is_ok());
        }
        let refused = limits.recipient(ip, "victim@example.test").unwrap_err();
        assert_eq!(
            (refused.reply.code, refused.reply.status.as_str()),
            (451, "4.7.1")
        );
        assert_eq!(refused.by.to_string(), "mailbomb.mailbox");
        assert!(limits.recipient(ip, "other@example.test").is_ok());
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_addresses() {
        let config = MailBombConfig {
            connections_per_minute: 5,
            max_tracked: 1000,
            ..MailBombConfig::default()
        };
        let limits = MailBomb::new(&config);
        for i in 0..50_000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8));
            let _ = limits.connect(IpAddr::V4(ip));
        }
        assert!(limits.tracked() <= 1000, "{}", limits.tracked());
    }

    #[test]
    fn identical_bodies_are_counted_whatever_the_headers() {
        let config = MailBombConfig {
            identical_bodies: 2,
            ..MailBombConfig::default()
        };
        let limits = MailBomb::new(&config);
        assert!(limits.body(b"To: a\r\n\r\nbuy now\r\n").is_ok());
        assert!(limits.body(b"To: b\r\nX: y\r\n\r\nbuy now\r\n").is_ok());
        assert!(limits.body(b"To: c\r\n\r\nbuy now\r\n").is_err());
        assert!(limits.body(b"To: c\r\n\r\nhello\r\n").is_ok());
    }
}
