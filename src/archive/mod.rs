//! The archive of refused mail: every message refused at the end of DATA, every
//! quarantined and every discarded one, byte-exact with its envelope and the full
//! decision; refusals during the dialogue as records without a message. Kept in the
//! archive folder (`quarantine/` by default) with an index in the embedded store,
//! reported to the backup mailbox, and released from there by the administrator.

pub mod actions;
pub mod admin;
pub mod release;
pub mod report;
pub mod search;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::config::ArchiveConfig;
use crate::verdict::{DecidedBy, Event, Outcome, Stage};

/// Who released an archived message, when, to whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    pub time: u64,
    /// `admin (user)` or `mail from 10.0.0.5`.
    pub by: String,
    pub recipients: Vec<String>,
    /// The queue id the released message got.
    pub queue_id: String,
}

/// One archived refusal, discard or quarantine: what its log line says, kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// Unix seconds.
    pub time: u64,
    pub stage: Stage,
    pub client_ip: String,
    #[serde(default)]
    pub client_name: Option<String>,
    pub helo: String,
    pub authenticated: bool,
    /// The account the client logged in with (records from before it was kept
    /// say only `authenticated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    /// Empty for the null sender.
    pub sender: String,
    pub recipients: Vec<String>,
    /// Octets of the archived message (0: no message).
    pub size: u64,
    pub outcome: Outcome,
    pub decided_by: DecidedBy,
    pub reason: String,
    /// The reply the client was given.
    pub reply: String,
    /// Whether the message itself is kept (not for dialogue-time refusals).
    pub has_message: bool,
    #[serde(default)]
    pub released: Option<Released>,
    /// The trace header the message got when it came in (the client's
    /// `Received:` line); a release delivers it with the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received: Option<String>,
    /// The message's From and Subject, decoded, for the quarantine's pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Releases to some recipients after the first (`released`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_releases: Vec<Released>,
    /// Recipients who deleted their copy: it is gone from their view.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted_for: Vec<String>,
    /// A recipient asked for a release an administrator must approve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<ReleaseRequest>,
    /// Everything anyone did with the item: who, what, when.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
}

/// A release asked for by a recipient, for an item only an administrator may
/// release (a virus, an attachment that could not be read, an ambiguous
/// structure, DMARC's reject).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRequest {
    pub by: String,
    pub time: u64,
    /// The recipients who asked (an approval releases to them only); empty
    /// in requests from before they were kept: every recipient.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// None while waiting; then whether it was approved, by whom.
    #[serde(default)]
    pub decided: Option<(bool, String, u64)>,
}

/// One thing done with an archived item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub time: u64,
    /// `alice@example.com (web)`, `admin root (web)`, `mailmoat quarantine (root)`.
    pub by: String,
    /// `released to alice@example.com as 4QxY…`, `deleted`, `asked for a release` …
    pub what: String,
}

impl Record {
    /// The record of an event that `decided_by` decided; `message` is what is
    /// kept with it, if anything.
    pub fn of(
        event: &Event<'_>,
        id: String,
        decided_by: DecidedBy,
        message: Option<&[u8]>,
        received: Option<&[u8]>,
    ) -> Record {
        Record {
            id,
            time: unix_now(),
            stage: event.stage,
            client_ip: event.peer.ip.to_string(),
            client_name: event.peer.name.clone(),
            helo: event.peer.helo().to_string(),
            authenticated: event.peer.login.is_some(),
            login: event.peer.login.clone(),
            sender: event.sender.to_string(),
            recipients: event.recipients.to_vec(),
            size: message.map_or(0, |m| m.len() as u64),
            outcome: event.outcome,
            decided_by,
            reason: event.reason.to_string(),
            reply: event.reply.to_string(),
            has_message: message.is_some(),
            released: None,
            received: received.map(|r| String::from_utf8_lossy(r).into_owned()),
            from: message.and_then(|m| header_text(m, "From")),
            subject: message.and_then(|m| header_text(m, "Subject")),
            more_releases: Vec::new(),
            deleted_for: Vec::new(),
            request: None,
            actions: Vec::new(),
        }
    }

    /// The recipients it has been released to, in all.
    pub fn released_to(&self) -> Vec<String> {
        self.released
            .iter()
            .chain(&self.more_releases)
            .flat_map(|r| r.recipients.iter().map(|a| a.to_lowercase()))
            .collect()
    }
}

/// A header of a message, decoded (RFC 2047), on one line.
fn header_text(message: &[u8], name: &str) -> Option<String> {
    let parsed = mail_parser::MessageParser::new().parse_headers(message)?;
    let text = match name {
        "From" => parsed.from().and_then(|from| {
            from.first().map(|a| match (a.name(), a.address()) {
                (Some(n), Some(addr)) => format!("{n} <{addr}>"),
                (None, Some(addr)) => addr.to_string(),
                (Some(n), None) => n.to_string(),
                (None, None) => String::new(),
            })
        })?,
        _ => parsed.subject()?.to_string(),
    };
    let line: String = text.chars().filter(|c| !c.is_control()).take(300).collect();
    (!line.trim().is_empty()).then_some(line)
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The archive: message files in a folder, records in the embedded store.
pub struct Archive {
    pub config: ArchiveConfig,
    dir: PathBuf,
    /// Archive id → record (JSON). Ids sort as they were made, oldest first.
    index: sled::Tree,
    /// `recipient NUL id` → nothing: a recipient's items without reading
    /// every record (the quarantine's pages). Kept only while the pages are
    /// served; otherwise emptied, and built again when they are.
    by_recipient: sled::Tree,
    indexed: bool,
    /// Whose release address is this: the proxy's host name.
    hostname: String,
    /// Releases happen one at a time, so none is delivered twice.
    pub release_guard: tokio::sync::Mutex<()>,
}

impl Archive {
    /// Opens the archive; `by_recipient`: keep the index of items by
    /// recipient (when the quarantine's pages are served).
    pub fn open(
        config: &ArchiveConfig,
        store: &crate::store::Store,
        hostname: &str,
        by_recipient: bool,
    ) -> io::Result<Archive> {
        let indexed = by_recipient;
        let index = store.tree("archive").map_err(io::Error::other)?;
        let by_recipient = store
            .tree("archive-by-recipient")
            .map_err(io::Error::other)?;
        std::fs::create_dir_all(&config.path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot create the archive folder {}: {e}",
                    config.path.display()
                ),
            )
        })?;
        let archive = Archive {
            config: config.clone(),
            dir: config.path.clone(),
            index,
            by_recipient,
            indexed,
            hostname: hostname.to_string(),
            release_guard: tokio::sync::Mutex::new(()),
        };
        if !indexed {
            // Not kept up to date from now on: emptied, so that it is built
            // anew when the pages are served again.
            archive.by_recipient.clear().map_err(io::Error::other)?;
        } else if archive.by_recipient.is_empty() && !archive.index.is_empty() {
            for record in archive.records() {
                archive.index_recipients(&record)?;
            }
        }
        Ok(archive)
    }

    fn recipient_key(recipient: &str, id: &str) -> Vec<u8> {
        let mut key = recipient.to_lowercase().into_bytes();
        key.push(0);
        key.extend_from_slice(id.as_bytes());
        key
    }

    fn index_recipients(&self, record: &Record) -> io::Result<()> {
        if !self.indexed {
            return Ok(());
        }
        for recipient in &record.recipients {
            self.by_recipient
                .insert(Self::recipient_key(recipient, &record.id), &[])
                .map_err(io::Error::other)?;
        }
        Ok(())
    }

    /// The records of items addressed to any of `addresses`, oldest first.
    pub fn records_for(&self, addresses: &[String]) -> Vec<Record> {
        if !self.indexed {
            return self
                .records()
                .filter(|r| {
                    r.recipients
                        .iter()
                        .any(|x| addresses.iter().any(|a| a.eq_ignore_ascii_case(x)))
                })
                .collect();
        }
        let mut ids: Vec<Vec<u8>> = addresses
            .iter()
            .flat_map(|address| {
                let mut prefix = address.to_lowercase().into_bytes();
                prefix.push(0);
                let skip = prefix.len();
                self.by_recipient
                    .scan_prefix(prefix)
                    .keys()
                    .filter_map(move |key| Some(key.ok()?[skip..].to_vec()))
            })
            .collect();
        ids.sort();
        ids.dedup();
        ids.iter()
            .filter_map(|id| serde_json::from_slice(&self.index.get(id).ok()??).ok())
            .collect()
    }

    fn message_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.eml"))
    }

    /// Keeps a record and, if given, the message. The message is flushed to disk
    /// before this returns Ok; the caller refuses with a 4xx instead when it fails.
    pub fn keep(&self, record: &Record, message: Option<&[u8]>) -> io::Result<()> {
        if let Some(message) = message {
            let path = self.message_path(&record.id);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?;
            file.write_all(message)?;
            file.sync_data()?;
            if let Ok(folder) = std::fs::File::open(&self.dir) {
                let _ = folder.sync_all();
            }
        }
        let bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
        self.index
            .insert(record.id.as_bytes(), bytes)
            .map_err(io::Error::other)?;
        self.index_recipients(record)?;
        // A kept message is indexed durably; records without one (a flood of
        // refused recipients, say) ride on the store's periodic flush.
        if message.is_some() {
            self.index.flush().map_err(io::Error::other)?;
        }
        Ok(())
    }

    pub fn record(&self, id: &str) -> Option<Record> {
        let bytes = self.index.get(id.as_bytes()).ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn message(&self, id: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.message_path(id))
    }

    /// Every record, oldest first.
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        self.index
            .iter()
            .values()
            .filter_map(|v| v.ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }

    /// Every record, newest first: a list of the latest stops early.
    pub fn records_newest_first(&self) -> impl Iterator<Item = Record> + '_ {
        self.index
            .iter()
            .values()
            .rev()
            .filter_map(|v| v.ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }

    pub fn update(&self, record: &Record) -> io::Result<()> {
        let bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
        self.index
            .insert(record.id.as_bytes(), bytes)
            .map_err(io::Error::other)?;
        self.index.flush().map_err(io::Error::other)?;
        Ok(())
    }

    pub fn delete(&self, id: &str) -> io::Result<bool> {
        let removed = self.index.remove(id.as_bytes()).map_err(io::Error::other)?;
        let existed = removed.is_some();
        if let Some(record) = removed.and_then(|b| serde_json::from_slice::<Record>(&b).ok()) {
            for recipient in &record.recipients {
                self.by_recipient
                    .remove(Self::recipient_key(recipient, id))
                    .map_err(io::Error::other)?;
            }
        }
        self.index.flush().map_err(io::Error::other)?;
        match std::fs::remove_file(self.message_path(id)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(existed)
    }

    /// Removes what is older than `max_age` and, oldest first, what makes the
    /// archive larger than `max_size`. Returns how many records went.
    pub fn enforce_retention(&self) -> io::Result<usize> {
        let now = unix_now();
        let max_age = self.config.max_age.as_secs();
        // Two passes rather than every record in memory at once.
        let mut total: u64 = self.records().map(|r| r.size).sum();
        let mut removed = 0;
        for record in self.records() {
            let too_old = now.saturating_sub(record.time) > max_age;
            let too_big = total > self.config.max_size;
            if !(too_old || too_big) {
                break;
            }
            self.delete(&record.id)?;
            total -= record.size;
            removed += 1;
        }
        Ok(removed)
    }

    /// `release+<id>.<signature>@<hostname>`, when release by mail is on.
    pub fn release_address(&self, id: &str) -> Option<String> {
        let signature = self.signature(id)?;
        Some(format!("release+{id}.{signature}@{}", self.hostname))
    }

    fn signature(&self, id: &str) -> Option<String> {
        let key = self
            .config
            .release_key
            .as_ref()
            .map(|k| k.expose())
            .filter(|k| !k.is_empty())?;
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).ok()?;
        mac.update(id.as_bytes());
        let tag = mac.finalize().into_bytes();
        Some(tag[..10].iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Whether an address is a release address of this proxy (right or wrong).
    pub fn is_release_address(&self, local: &str, domain: &str) -> bool {
        local.to_ascii_lowercase().starts_with("release+")
            && domain.eq_ignore_ascii_case(&self.hostname)
    }

    /// The archive id a release address names, if its signature is right.
    pub fn verify_release(&self, local: &str) -> Option<String> {
        let rest = local.get("release+".len()..)?;
        let (id, signature) = rest.split_once('.')?;
        let expected = self.signature(id)?;
        // Compare without an early exit, so timing tells nothing.
        let same = expected.len() == signature.len()
            && expected
                .bytes()
                .zip(signature.to_ascii_lowercase().bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        same.then(|| id.to_string())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Runs retention in the background, once a minute.
pub async fn retention_loop(archive: Arc<Archive>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tick.tick().await;
        let archive = archive.clone();
        match tokio::task::spawn_blocking(move || archive.enforce_retention()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(removed = n, "archive retention"),
            Ok(Err(e)) => tracing::warn!(error = %e, "archive retention failed"),
            Err(_) => {}
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
