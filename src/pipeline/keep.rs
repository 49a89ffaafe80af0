//! The one refusal path: whatever refused — a check, a rule, the framing of the
//! data, a limit of the listener — the decision is kept in the archive (when it
//! is on and the decision asks for it), logged from the same event, reported to
//! the backup mailbox, and its reply returned for the client. Discards and
//! quarantines into the archive take the same path.

use super::Pipeline;
use crate::archive::Record;
use crate::queue::spool::new_id;
use crate::reply::Reply;
use crate::verdict::{Decision, Event, NOQUEUE, Peer, Stage};

/// A decision to keep, and what it was about.
pub struct Kept<'a> {
    pub stage: Stage,
    pub peer: &'a Peer,
    /// The queue id the client was given (a message); none during the dialogue.
    pub id: Option<&'a str>,
    /// Empty for the null sender.
    pub sender: &'a str,
    pub recipients: &'a [String],
    pub decision: Decision,
    /// The message as the client sent it, kept byte-exact with the record.
    pub message: Option<&'a [u8]>,
    /// Our trace header for it, kept in the record so a release carries it.
    pub received: Option<&'a [u8]>,
    /// Octets of the message as received (0 before DATA).
    pub size: usize,
    /// Every rule that matched, for the log line.
    pub rules: &'a str,
}

impl Kept<'_> {
    /// The event this decision is: what the log line and the record say.
    fn event(&self) -> Event<'_> {
        Event {
            id: self.id.unwrap_or(NOQUEUE),
            stage: self.stage,
            peer: self.peer,
            sender: self.sender,
            recipients: self.recipients,
            size: self.size,
            outcome: self.decision.outcome,
            decided_by: Some(&self.decision.by),
            reason: &self.decision.reason,
            reply: &self.decision.reply,
            rules: self.rules,
        }
    }
}

impl Pipeline {
    /// Keeps, logs and reports a decision; returns the reply for the client: the
    /// decision's own, or `451 4.3.0` when a message could not be kept, so that
    /// nothing refused is lost.
    pub async fn keep(&self, mut kept: Kept<'_>) -> Reply {
        let mut archived = None;
        if kept.decision.archive
            && let Some(archive) = self.archive().cloned()
        {
            let record = Record::of(
                &kept.event(),
                kept.id.map_or_else(new_id, str::to_string),
                kept.decision.by.clone(),
                kept.message,
                kept.received,
            );
            let copy = kept.message.map(<[u8]>::to_vec);
            let written = tokio::task::spawn_blocking(move || {
                archive
                    .keep(&record, copy.as_deref())
                    .map(|()| (record, copy))
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            match written {
                Ok(done) => {
                    if let Some(metrics) = self.metrics() {
                        metrics.archived(kept.message.map_or(0, <[u8]>::len));
                    }
                    archived = Some(done)
                }
                Err(e) if kept.message.is_some() => {
                    tracing::error!(queue_id = kept.id.unwrap_or(NOQUEUE), error = %e, "cannot keep a copy in the archive");
                    kept.decision = Decision::refuse(
                        "archive",
                        Reply::new(
                            451,
                            "4.3.0",
                            "Error: cannot keep a copy of this message; try again later",
                        ),
                        format!(
                            "cannot keep a copy of what {} decided: {e}",
                            kept.decision.by
                        ),
                    );
                }
                // A dialogue refusal stands without its record.
                Err(e) => {
                    tracing::error!(error = %e, "cannot keep a refusal record in the archive")
                }
            }
        }
        self.record(&kept.event());
        let reporter = self.services.as_deref().and_then(|s| s.reporter.as_ref());
        if let (Some((record, copy)), Some(reporter)) = (archived, reporter) {
            reporter.report(&record, copy.as_deref()).await;
        }
        kept.decision.reply
    }

    /// A refusal of the listener, before any session: too many connections.
    pub async fn refuse_connection(&self, ip: std::net::IpAddr, reply: Reply) {
        let peer = Peer::unjudged(ip);
        self.keep(Kept {
            stage: Stage::Connect,
            peer: &peer,
            id: None,
            sender: "",
            recipients: &[],
            decision: Decision::refuse("limits.connections", reply, "connection limit reached"),
            message: None,
            received: None,
            size: 0,
            rules: "",
        })
        .await;
    }
}
