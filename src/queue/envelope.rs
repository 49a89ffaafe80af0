//! The envelope/state file kept beside each queued message: who sent it, to whom, and
//! how delivery to each recipient stands. TOML, so an administrator can read and, in
//! an emergency, repair it by hand.

use serde::{Deserialize, Serialize};

/// Where a recipient stands.
/// Starts the checksum line at the end of an envelope file.
const TRAILER: &str = "# end crc32=";

/// The CRC-32 of a message as the envelope records it.
pub fn message_checksum(message: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(message))
}

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
    /// CRC-32 of the message file (hex), checked whenever it is read back from disk.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message_crc32: String,
    /// Where to deliver, `host:port`, instead of routing by domain (reports to
    /// the backup mail server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop: Option<String>,
    /// Delivery attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// Unix seconds of the next attempt (0: now).
    #[serde(default)]
    pub next_attempt: u64,
    pub recipients: Vec<QueuedRecipient>,
}

impl Envelope {
    /// A new message's envelope: every recipient pending (each once), arrived
    /// now. The queue sets the size and checksum when it writes the message;
    /// callers fill in the client and the body flags.
    pub fn new(
        id: String,
        sender: String,
        recipients: impl IntoIterator<Item = String>,
    ) -> Envelope {
        let mut queued: Vec<QueuedRecipient> = Vec::new();
        for address in recipients {
            if queued.iter().all(|r| r.address != address) {
                queued.push(QueuedRecipient {
                    address,
                    status: RecipientStatus::Pending,
                    last_reply: String::new(),
                });
            }
        }
        Envelope {
            id,
            arrived: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            sender,
            client_ip: String::new(),
            helo: String::new(),
            eight_bit: false,
            smtputf8: false,
            size: 0,
            message_crc32: String::new(),
            next_hop: None,
            attempts: 0,
            next_attempt: 0,
            recipients: queued,
        }
    }

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

    /// The envelope file: the TOML, then a last line with the CRC-32 of that text,
    /// so an envelope torn by a crash is told from a whole one.
    pub fn to_file_text(&self) -> String {
        let text = self.to_toml();
        let crc = crc32fast::hash(text.as_bytes());
        format!("{text}{TRAILER}{crc:08x}\n")
    }

    /// Reads an envelope file. Without the last line (an administrator removed it
    /// after editing the file by hand) the TOML is taken as it is.
    pub fn from_file_text(text: &str) -> Result<Envelope, String> {
        let body = match text.rfind(TRAILER) {
            Some(at) => {
                let body = &text[..at];
                let stored = text[at + TRAILER.len()..].trim();
                let actual = format!("{:08x}", crc32fast::hash(body.as_bytes()));
                if stored != actual {
                    return Err(format!(
                        "checksum mismatch (torn by a crash, or edited by hand: after editing, \
                         delete the last line '{}…')",
                        TRAILER.trim()
                    ));
                }
                body
            }
            None => text,
        };
        toml::from_str(body).map_err(|e| e.message().to_string())
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
            message_crc32: message_checksum(b"0123456789"),
            next_hop: None,
            attempts: 2,
            next_attempt: 3,
            recipients: vec![QueuedRecipient {
                address: "a@example.test".into(),
                status: RecipientStatus::Pending,
                last_reply: "451 4.3.0 later".into(),
            }],
        };
        let text = env.to_file_text();
        assert!(text.contains("status = \"pending\""), "{text}");
        assert_eq!(Envelope::from_file_text(&text).unwrap(), env);
        // Edited by hand, trailer removed: still read.
        let edited = env.to_toml().replace("attempts = 2", "attempts = 0");
        assert_eq!(Envelope::from_file_text(&edited).unwrap().attempts, 0);
    }

    #[test]
    fn a_torn_or_edited_envelope_with_its_trailer_is_refused() {
        let env = Envelope::from_file_text(
            "id = \"A\"\narrived = 0\nsender = \"\"\nclient_ip = \"\"\nhelo = \"\"\nsize = 0\nrecipients = []\n",
        );
        let text = env.unwrap().to_file_text();
        let torn = text.replacen("size = 0", "size = 9", 1);
        let err = Envelope::from_file_text(&torn).unwrap_err();
        assert!(err.contains("delete the last line"), "{err}");
    }
}
