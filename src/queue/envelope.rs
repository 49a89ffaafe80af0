//! The envelope/state file kept beside each queued message: who sent it, to whom, and
//! how delivery to each recipient stands. TOML, so an administrator can read and, in
//! an emergency, repair it by hand.

use serde::{Deserialize, Serialize};

/// Where a recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientStatus {
    /// Not delivered yet; tried again later.
    Pending,
    Delivered,
    /// Refused permanently or expired; a delivery status notification was queued
    /// for the sender (unless the sender was null).
    Bounced,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedRecipient {
    /// As the client gave it (source route removed, domain lower-cased).
    pub address: String,
    pub status: RecipientStatus,
    /// The last reply or error for this recipient.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_reply: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Queue id; also the file names.
    pub id: String,
    /// Unix seconds when the message was accepted.
    pub arrived: u64,
    /// The reverse-path; empty for the null sender `<>`.
    pub sender: String,
    /// The client that sent it and the name it gave in HELO/EHLO.
    pub client_ip: String,
    pub helo: String,
    /// BODY=8BITMIME was given.
    #[serde(default)]
    pub eight_bit: bool,
    /// SMTPUTF8 was given.
    #[serde(default)]
    pub smtputf8: bool,
    /// Octets in the message file.
    pub size: u64,
    /// Delivery attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// Unix seconds of the next attempt (0: now).
    #[serde(default)]
    pub next_attempt: u64,
    pub recipients: Vec<QueuedRecipient>,
}

impl Envelope {
    pub fn pending(&self) -> impl Iterator<Item = &QueuedRecipient> {
        self.recipients
            .iter()
            .filter(|r| r.status == RecipientStatus::Pending)
    }

    pub fn is_done(&self) -> bool {
        self.pending().next().is_none()
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("an envelope always serialises")
    }

    pub fn from_toml(text: &str) -> Result<Envelope, toml::de::Error> {
        toml::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_toml() {
        let env = Envelope {
            id: "ABC".into(),
            arrived: 1,
            sender: String::new(),
            client_ip: "192.0.2.1".into(),
            helo: "client.test".into(),
            eight_bit: true,
            smtputf8: false,
            size: 10,
            attempts: 2,
            next_attempt: 3,
            recipients: vec![QueuedRecipient {
                address: "a@example.test".into(),
                status: RecipientStatus::Pending,
                last_reply: "451 4.3.0 later".into(),
            }],
        };
        let text = env.to_toml();
        assert!(text.contains("status = \"pending\""), "{text}");
        assert_eq!(Envelope::from_toml(&text).unwrap(), env);
    }
}
