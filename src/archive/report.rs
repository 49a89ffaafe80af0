//! Reports to the backup mailbox: why a message was refused, by which rule, from
//! whom, how to release it — with the original attached, unmodified. Reports go
//! straight into the queue: the rules never see them, they are never archived, and
//! they come from the null sender, so nothing bounces back into a loop.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use super::{Archive, Record};
use crate::queue::Queue;
use crate::queue::envelope::Envelope;
use crate::queue::spool::new_id;

pub fn time_text(unix: u64) -> String {
    chrono::DateTime::from_timestamp(unix as i64, 0)
        .map(|t| t.to_rfc2822())
        .unwrap_or_default()
}

/// The facts of one record, as lines of text.
fn describe(out: &mut String, record: &Record, release: Option<&str>) {
    let sender = if record.sender.is_empty() {
        "<>"
    } else {
        &record.sender
    };
    let _ = writeln!(out, "Archive id:  {}", record.id);
    let _ = writeln!(out, "Time:        {}", time_text(record.time));
    let _ = writeln!(
        out,
        "Outcome:     {} at {}",
        record.outcome,
        record.stage.name()
    );
    let _ = writeln!(out, "Rule/check:  {}", record.decided_by);
    let _ = writeln!(out, "Reason:      {}", record.reason);
    let _ = writeln!(out, "Reply sent:  {}", record.reply);
    let _ = writeln!(
        out,
        "Client:      {} ({}), HELO {}{}",
        record.client_ip,
        record.client_name.as_deref().unwrap_or("no reverse name"),
        record.helo,
        if record.authenticated {
            ", authenticated"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "Sender:      {sender}");
    let _ = writeln!(out, "Recipients:  {}", record.recipients.join(", "));
    if record.has_message {
        let _ = writeln!(
            out,
            "To release:  mailmoat quarantine release {}",
            record.id
        );
        if let Some(address) = release {
            let _ = writeln!(out, "             or send any message to {address}");
            let _ = writeln!(
                out,
                "             (from a trusted network or after logging in)"
            );
        }
    }
}

fn headers(out: &mut String, hostname: &str, to: &str, subject: &str, boundary: &str) {
    let _ = write!(
        out,
        "From: mailmoat <MAILER-DAEMON@{hostname}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\
         Date: {}\r\nMessage-ID: <{}.report@{hostname}>\r\nAuto-Submitted: auto-generated\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n\
         This is a MIME-encapsulated message.\r\n\r\n",
        chrono::Utc::now().to_rfc2822(),
        new_id()
    );
}

fn text_part(out: &mut String, boundary: &str, text: &str) {
    let _ = write!(
        out,
        "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}\r\n",
        text.replace('\n', "\r\n")
    );
}

/// A report of one archived message, the original attached as message/rfc822.
pub fn single(
    hostname: &str,
    to: &str,
    record: &Record,
    message: &[u8],
    release: Option<&str>,
) -> Vec<u8> {
    let boundary = format!("=_report_{}", record.id);
    let mut out = String::new();
    let subject = format!(
        "[mailmoat] {} by {}: {}",
        record.outcome,
        record.decided_by,
        subject_of(message)
    );
    headers(&mut out, hostname, to, &subject, &boundary);
    let mut text =
        format!("mailmoat on {hostname} kept this message instead of delivering it.\n\n");
    describe(&mut text, record, release);
    text.push_str("\nThe original message is attached, exactly as it was received.\n");
    text_part(&mut out, &boundary, &text);
    let encoding = if message.is_ascii() { "7bit" } else { "8bit" };
    let _ = write!(
        out,
        "--{boundary}\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: {encoding}\r\n\
         Content-Disposition: attachment; filename=\"{}.eml\"\r\n\r\n",
        record.id
    );
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(message);
    if !message.ends_with(b"\r\n") {
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    bytes
}

/// One report listing many archived refusals.
pub fn digest(hostname: &str, to: &str, records: &[(Record, Option<String>)]) -> Vec<u8> {
    let boundary = format!("=_digest_{}", new_id());
    let mut out = String::new();
    headers(
        &mut out,
        hostname,
        to,
        &format!("[mailmoat] {} refused message(s)", records.len()),
        &boundary,
    );
    let mut text = format!("mailmoat on {hostname} refused or kept these messages.\n");
    for (record, release) in records {
        text.push('\n');
        describe(&mut text, record, release.as_deref());
    }
    text_part(&mut out, &boundary, &text);
    let _ = write!(out, "--{boundary}--\r\n");
    out.into_bytes()
}

fn subject_of(message: &[u8]) -> String {
    let head = &message[..crate::mime::edit::header_end(message)];
    String::from_utf8_lossy(head)
        .lines()
        .find_map(|l| l.strip_prefix("Subject:").map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "(no subject)".into())
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect()
}

/// Where reports go.
#[derive(Debug, Clone)]
struct ReportTo {
    address: String,
    next_hop: Option<String>,
}

/// Sends reports of archived mail to the backup mailbox, one per message or as a
/// digest.
pub struct Reporter {
    archive: Arc<Archive>,
    queue: Arc<Queue>,
    /// Reports sent count here.
    metrics: Arc<crate::metrics::Metrics>,
    hostname: String,
    destinations: Vec<ReportTo>,
    /// Ids waiting for the next digest.
    pending: Mutex<Vec<String>>,
}

impl Reporter {
    /// None when no backup mailbox is configured.
    pub fn new(
        archive: Arc<Archive>,
        queue: Arc<Queue>,
        metrics: Arc<crate::metrics::Metrics>,
        hostname: &str,
    ) -> Option<Arc<Reporter>> {
        let config = &archive.config;
        let mut destinations = Vec::new();
        let address = config.backup_address.clone().filter(|a| !a.is_empty());
        if let Some(address) = &address {
            destinations.push(ReportTo {
                address: address.clone(),
                next_hop: None,
            });
        }
        if let Some(server) = config.backup_server.clone().filter(|s| !s.is_empty()) {
            destinations.push(ReportTo {
                address: address
                    .clone()
                    .unwrap_or_else(|| format!("quarantine@{hostname}")),
                next_hop: Some(server),
            });
        }
        if destinations.is_empty() {
            return None;
        }
        Some(Arc::new(Reporter {
            archive,
            queue,
            metrics,
            hostname: hostname.to_string(),
            destinations,
            pending: Mutex::new(Vec::new()),
        }))
    }

    /// Reports an archived record: now, or with the next digest.
    pub async fn report(&self, record: &Record, message: Option<&[u8]>) {
        if !self.archive.config.digest_interval.is_zero() {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(record.id.clone());
            return;
        }
        // Refusals during the dialogue have no message: they go in digests only.
        let Some(message) = message else { return };
        let release = self.archive.release_address(&record.id);
        for destination in &self.destinations {
            let report = single(
                &self.hostname,
                &destination.address,
                record,
                message,
                release.as_deref(),
            );
            self.send(destination, report, &record.id).await;
        }
    }

    async fn send(&self, destination: &ReportTo, report: Vec<u8>, about: &str) {
        let id = new_id();
        let envelope = Envelope {
            client_ip: "127.0.0.1".into(),
            helo: self.hostname.clone(),
            eight_bit: !report.is_ascii(),
            next_hop: destination.next_hop.clone(),
            ..Envelope::new(id.clone(), String::new(), [destination.address.clone()])
        };
        match self.queue.enqueue(envelope, report).await {
            Ok(()) => {
                self.metrics.report_sent();
                tracing::info!(queue_id = %id, archive_id = about, to = %destination.address, "report queued for the backup mailbox")
            }
            Err(e) => {
                tracing::error!(archive_id = about, error = %e, "cannot queue the report for the backup mailbox")
            }
        }
    }

    /// Sends the digest of what was archived since the last one.
    pub async fn send_digest(&self) {
        let ids = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if ids.is_empty() {
            return;
        }
        let records: Vec<(Record, Option<String>)> = ids
            .iter()
            .filter_map(|id| self.archive.record(id))
            .map(|r| {
                let release = if r.has_message {
                    self.archive.release_address(&r.id)
                } else {
                    None
                };
                (r, release)
            })
            .collect();
        for destination in &self.destinations {
            let report = digest(&self.hostname, &destination.address, &records);
            self.send(destination, report, "digest").await;
        }
    }

    /// Sends digests every `digest_interval`.
    pub async fn digest_loop(self: Arc<Self>) {
        let interval = self.archive.config.digest_interval;
        if interval.is_zero() {
            return;
        }
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.send_digest().await;
        }
    }
}
