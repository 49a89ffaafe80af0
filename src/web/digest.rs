//! Digests: one message per recipient with what was held or refused for them
//! since their last digest, plain text and HTML, each item with a signed link
//! (release, or open the quarantine to ask for a release); sent through the
//! queue like any mail. Also the "send me my link" message.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use askama::Template;

use super::pages;
use super::signing::Signer;
use crate::archive::actions::needs_approval;
use crate::archive::{Archive, Record, unix_now};
use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::queue::Queue;
use crate::queue::envelope::Envelope;
use crate::queue::spool::new_id;

pub struct Digests {
    config: Arc<Config>,
    archive: Arc<Archive>,
    queue: Arc<Queue>,
    signer: Signer,
    /// Recipient → what their last digest reached (`Reached`).
    sent: sled::Tree,
}

/// What a recipient's last digest reached: the time of the newest item it
/// listed and the items of that second. An item archived later in the same
/// second is still new, so none is left out of every digest.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Reached {
    time: u64,
    ids: Vec<String>,
}

impl Reached {
    /// `TIME ID ID …` as stored (a bare time from earlier versions).
    fn parse(text: &str) -> Reached {
        let mut words = text.split_whitespace();
        Reached {
            time: words.next().and_then(|t| t.parse().ok()).unwrap_or(0),
            ids: words.map(str::to_string).collect(),
        }
    }

    fn text(&self) -> String {
        std::iter::once(self.time.to_string())
            .chain(self.ids.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn is_new(&self, record: &Record) -> bool {
        record.time > self.time || (record.time == self.time && !self.ids.contains(&record.id))
    }

    /// After a digest listing `records` (not empty, oldest first).
    fn after(mut self, records: &[Record]) -> Reached {
        let newest = records.last().map_or(0, |r| r.time);
        if newest > self.time {
            self = Reached {
                time: newest,
                ids: Vec::new(),
            };
        }
        let at_newest = records.iter().filter(|r| r.time == self.time);
        self.ids.extend(at_newest.map(|r| r.id.clone()));
        self
    }
}

/// What `digest send` did: each recipient with the number of items listed.
pub type Sent = Vec<(String, usize)>;

impl Digests {
    pub fn new(
        config: Arc<Config>,
        archive: Arc<Archive>,
        queue: Arc<Queue>,
        signer: Signer,
        sent: sled::Tree,
    ) -> Digests {
        Digests {
            config,
            archive,
            queue,
            signer,
            sent,
        }
    }

    fn link(&self, recipient: &str, scope: &str) -> String {
        let expires = unix_now() + self.config.digest.link_lifetime.as_secs();
        let token = self.signer.sign(&["link", recipient, scope], expires);
        format!(
            "{}/link?t={token}",
            self.config.web.base_url.trim_end_matches('/')
        )
    }

    fn from(&self) -> String {
        if self.config.digest.from.is_empty() {
            format!("postmaster@{}", self.config.server.hostname)
        } else {
            self.config.digest.from.clone()
        }
    }

    fn reached(&self, recipient: &str) -> Reached {
        self.sent
            .get(recipient.as_bytes())
            .ok()
            .flatten()
            .map(|v| Reached::parse(&String::from_utf8_lossy(&v)))
            .unwrap_or_default()
    }

    /// Sends each recipient (or only `only`) a digest of their items since
    /// their last one; nobody with nothing new gets one.
    pub async fn send(&self, only: Option<&str>) -> Result<Sent, String> {
        let only = only.map(str::to_lowercase);
        let mut held: BTreeMap<String, Vec<Record>> = BTreeMap::new();
        // Each recipient's last digest, read from the store once.
        let mut last: std::collections::HashMap<String, Reached> = Default::default();
        for record in self.archive.records() {
            let released = record.released_to();
            for recipient in &record.recipients {
                let recipient = recipient.to_lowercase();
                let hosted = recipient
                    .rsplit_once('@')
                    .is_some_and(|(_, d)| self.config.is_hosted(d));
                if !hosted
                    || only.as_ref().is_some_and(|o| o != &recipient)
                    || record.deleted_for.contains(&recipient)
                    || released.contains(&recipient)
                {
                    continue;
                }
                let reached = last
                    .entry(recipient.clone())
                    .or_insert_with(|| self.reached(&recipient));
                if !reached.is_new(&record) {
                    continue;
                }
                held.entry(recipient).or_default().push(record.clone());
            }
        }
        let mut sent = Vec::new();
        for (recipient, mut records) in held {
            records.sort_by_key(|r| r.time);
            let message = self.digest(&recipient, &records);
            self.enqueue(&recipient, message, "digest").await?;
            let reached = last.remove(&recipient).unwrap_or_default().after(&records);
            let _ = self
                .sent
                .insert(recipient.as_bytes(), reached.text().as_bytes());
            sent.push((recipient, records.len()));
        }
        let _ = self.sent.flush_async().await;
        Ok(sent)
    }

    async fn enqueue(&self, to: &str, message: Vec<u8>, what: &str) -> Result<(), String> {
        let id = new_id();
        let envelope = Envelope {
            client_ip: "127.0.0.1".into(),
            helo: self.config.server.hostname.clone(),
            eight_bit: !message.is_ascii(),
            ..Envelope::new(id.clone(), self.from(), [to.to_string()])
        };
        self.queue
            .enqueue(envelope, message)
            .await
            .map_err(|e| format!("cannot queue the {what} for {to}: {e}"))?;
        tracing::info!(queue_id = %id, to, "quarantine {what} queued");
        Ok(())
    }

    fn headers(&self, to: &str, subject: &str, boundary: &str) -> String {
        format!(
            "From: mailmoat quarantine <{}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nDate: {}\r\n\
             Message-ID: <{}.digest@{}>\r\nAuto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n",
            self.from(),
            chrono::Utc::now().to_rfc2822(),
            new_id(),
            self.config.server.hostname
        )
    }

    /// The digest of one recipient's items.
    fn digest(&self, recipient: &str, records: &[Record]) -> Vec<u8> {
        let open = self.link(recipient, "open");
        let boundary = format!("=_digest_{}", new_id());
        let lines: Vec<pages::DigestLine> = records
            .iter()
            .map(|record| {
                let (label, href) = if !record.has_message {
                    ("", String::new())
                } else if needs_approval(record) {
                    ("Ask for release", open.clone())
                } else {
                    let scope = format!("release:{}", record.id);
                    ("Release", self.link(recipient, &scope))
                };
                pages::DigestLine {
                    date: crate::archive::report::time_text(record.time),
                    sender: if record.sender.is_empty() {
                        "<>".into()
                    } else {
                        record.sender.clone()
                    },
                    subject: record
                        .subject
                        .clone()
                        .unwrap_or_else(|| "(no subject)".into()),
                    why: super::items::why(record),
                    label,
                    href,
                }
            })
            .collect();
        let mut text = format!(
            "{} message(s) addressed to {recipient} were held or refused since your last digest.\n\
             Open your quarantine: {open}\n\n",
            records.len()
        );
        for line in &lines {
            let _ = writeln!(
                text,
                "- {}  {}  \"{}\"  ({})",
                line.date, line.sender, line.subject, line.why
            );
            if !line.label.is_empty() {
                let _ = writeln!(text, "  {}: {}", line.label, line.href);
            }
        }
        text.push_str("\nA link opens a page that asks before anything is done.\n");
        let html = pages::Digest {
            recipient,
            open: &open,
            lines: &lines,
        }
        .render()
        .unwrap_or_default();
        let mut out = self.headers(
            recipient,
            &format!("Mail held for you: {} message(s)", records.len()),
            &boundary,
        );
        for (kind, body) in [("plain", text), ("html", html)] {
            let _ = write!(
                out,
                "--{boundary}\r\nContent-Type: text/{kind}; charset=utf-8\r\n\
                 Content-Transfer-Encoding: 8bit\r\n\r\n{}\r\n",
                body.replace('\n', "\r\n")
            );
        }
        let _ = write!(out, "--{boundary}--\r\n");
        out.into_bytes()
    }

    /// "Send me my link": only to a hosted address that exists.
    pub async fn send_link(&self, pipeline: &Pipeline, address: &str) {
        let Ok(mailbox) = crate::address::Mailbox::parse(address) else {
            return;
        };
        let hosted = mailbox
            .domain_name()
            .is_some_and(|d| self.config.is_hosted(d));
        if !hosted || pipeline.recipients.check(&mailbox).await.is_err() {
            tracing::info!(address, "quarantine link not sent: not a hosted recipient");
            return;
        }
        let address = mailbox.lookup_key();
        let open = self.link(&address, "open");
        let boundary = format!("=_link_{}", new_id());
        let text = format!(
            "Someone (you, we hope) asked for a link to the mail held for {address}:\n{open}\n\n\
             It works for {}. If it was not you, ignore this message.\n",
            humantime::format_duration(self.config.digest.link_lifetime)
        );
        let mut out = self.headers(&address, "Your quarantine link", &boundary);
        let _ = write!(
            out,
            "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: 8bit\r\n\r\n{}\r\n--{boundary}--\r\n",
            text.replace('\n', "\r\n")
        );
        if let Err(e) = self.enqueue(&address, out.into_bytes(), "link").await {
            tracing::error!(error = %e, "quarantine link not sent");
        }
    }

    /// Sends digests daily at `digest.at` (local time), or every `digest.every`.
    /// Sends the digests on schedule. The last scheduled run is kept in the
    /// store, so a restart neither sends early nor skips one: a run missed
    /// while the server was down is made when it starts.
    pub async fn run(self: Arc<Self>) {
        let schedule = match (self.config.digest.every, &self.config.digest.at) {
            (Some(every), _) => Schedule::Every(every),
            (None, Some(at)) => {
                let (hour, minute) = crate::config::parse_clock(at).unwrap_or((8, 0));
                Schedule::At(hour, minute)
            }
            (None, None) => return,
        };
        loop {
            let now = chrono::Local::now();
            let due = schedule.next(self.last_run(), now);
            if let Ok(wait) = (due - now).to_std() {
                tokio::time::sleep(wait).await;
            }
            // Remembered first, so a run that fails is not made again and
            // again; as the time it was due, so a timer that woke a little
            // early does not make the same run twice.
            let ran = due.timestamp().max(chrono::Local::now().timestamp());
            let _ = self.sent.insert(LAST_RUN, ran.to_string().as_bytes());
            match self.send(None).await {
                Ok(sent) => tracing::info!(digests = sent.len(), "quarantine digests sent"),
                Err(e) => tracing::error!(error = %e, "quarantine digests not sent"),
            }
        }
    }

    fn last_run(&self) -> Option<chrono::DateTime<chrono::Local>> {
        let text = self.sent.get(LAST_RUN).ok()??;
        let unix: i64 = std::str::from_utf8(&text).ok()?.parse().ok()?;
        Some(chrono::DateTime::from_timestamp(unix, 0)?.with_timezone(&chrono::Local))
    }
}

/// The key of the last scheduled run, beside the recipients' (no address
/// starts with a NUL).
const LAST_RUN: &[u8] = b"\0last-run";

/// When digests go: every day at a local time, or at an interval.
enum Schedule {
    At(u32, u32),
    Every(std::time::Duration),
}

impl Schedule {
    /// When the next run is due, given the last one (now or earlier: send
    /// at once).
    fn next<Tz: chrono::TimeZone>(
        &self,
        last: Option<chrono::DateTime<Tz>>,
        now: chrono::DateTime<Tz>,
    ) -> chrono::DateTime<Tz> {
        match self {
            Schedule::Every(every) => {
                let every = chrono::Duration::from_std(*every).unwrap_or(chrono::Duration::days(1));
                match last {
                    Some(last) => last + every,
                    None => now + every,
                }
            }
            Schedule::At(hour, minute) => {
                let zone = now.timezone();
                let at = |day: chrono::NaiveDate| {
                    day.and_hms_opt(*hour, *minute, 0)
                        .and_then(|t| zone.from_local_datetime(&t).earliest())
                };
                let today = now.date_naive();
                let passed = at(today)
                    .filter(|t| *t <= now)
                    .or_else(|| at(today.pred_opt()?));
                // The run that should have been made since the last one.
                if let (Some(passed), Some(last)) = (&passed, &last)
                    && last < passed
                {
                    return now;
                }
                // The next one strictly after the last run and now, so a
                // timer that wakes a little early does not run twice.
                let after = last.map_or(now.clone(), |l| l.max(now.clone()));
                (0..3)
                    .filter_map(|d| at(today + chrono::Duration::days(d)))
                    .find(|t| *t > after)
                    .unwrap_or(now + chrono::Duration::days(1))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::tests::record;

    #[test]
    fn an_item_archived_in_the_second_of_the_last_digest_is_still_new() {
        let first = [record("A", 100, 1), record("B", 105, 1)];
        let reached = Reached::default().after(&first);
        assert_eq!(reached, Reached::parse(&reached.text()));
        assert_eq!(reached.text(), "105 B");
        // C came in the same second as B, after the digest was made.
        let late = record("C", 105, 1);
        assert!(!reached.is_new(&first[0]) && !reached.is_new(&first[1]));
        assert!(reached.is_new(&late));
        let reached = reached.after(std::slice::from_ref(&late));
        assert_eq!(reached.text(), "105 B C");
        assert!(!reached.is_new(&late));
        assert!(reached.is_new(&record("D", 106, 1)));
        // What earlier versions stored: the time of the digest.
        assert_eq!(Reached::parse("105").ids, Vec::<String>::new());
    }

    #[test]
    fn a_daily_digest_goes_at_its_time_once_and_a_missed_one_at_start() {
        use chrono::TimeZone;
        let zone = chrono::FixedOffset::east_opt(3600).unwrap();
        let t = |d, h, m, s| zone.with_ymd_and_hms(2026, 12, d, h, m, s).unwrap();
        let daily = Schedule::At(8, 0);
        // Never run: the next 08:00.
        assert_eq!(daily.next(None, t(5, 6, 0, 0)), t(5, 8, 0, 0));
        assert_eq!(daily.next(None, t(5, 9, 0, 0)), t(6, 8, 0, 0));
        // Ran at 08:00 today; the timer woke a little early or late.
        assert_eq!(
            daily.next(Some(t(5, 8, 0, 0)), t(5, 7, 59, 59)),
            t(6, 8, 0, 0)
        );
        assert_eq!(
            daily.next(Some(t(5, 8, 0, 1)), t(5, 8, 0, 1)),
            t(6, 8, 0, 0)
        );
        // Down over yesterday's and today's 08:00: once, now.
        assert_eq!(
            daily.next(Some(t(3, 8, 0, 0)), t(5, 12, 0, 0)),
            t(5, 12, 0, 0)
        );
        // Ran yesterday, started before today's: today's 08:00.
        assert_eq!(
            daily.next(Some(t(4, 8, 0, 0)), t(5, 7, 0, 0)),
            t(5, 8, 0, 0)
        );

        let hourly = Schedule::Every(std::time::Duration::from_secs(4 * 3600));
        assert_eq!(hourly.next(None, t(5, 6, 0, 0)), t(5, 10, 0, 0));
        // A restart keeps the rhythm, and a missed run is due at once.
        assert_eq!(
            hourly.next(Some(t(5, 5, 0, 0)), t(5, 6, 0, 0)),
            t(5, 9, 0, 0)
        );
        assert!(hourly.next(Some(t(4, 5, 0, 0)), t(5, 6, 0, 0)) <= t(5, 6, 0, 0));
    }
}
