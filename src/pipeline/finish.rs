//! The end of a judged message: refused, discarded or quarantined into the
//! archive by [`Pipeline::keep`]; otherwise signed and sealed, queued with the
//! rules' changes (or, a quarantine with the archive off, held in the queue), and
//! counted. One log line either way. New mail and a release from the archive end
//! here alike.

use super::{Judgement, Kept, Message, Pipeline, Transaction};
use crate::queue::envelope::Envelope;
use crate::reply::Reply;
use crate::rules::Verdict;
use crate::verdict::{DecidedBy, Event, Outcome, Peer, Stage};

/// Where an accepted message goes in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Into {
    /// Scheduled for delivery.
    Delivery,
    /// The queue's hold folder: a quarantine with the archive off.
    Hold,
}

impl Pipeline {
    /// Acts on the judgement of a message; returns the reply for the client.
    pub async fn finish(
        &self,
        peer: &Peer,
        transaction: &Transaction,
        message: Message,
        judged: Judgement<Verdict>,
    ) -> Reply {
        let id = message.id.clone();
        let sender = transaction.sender_text();
        let recipients = &transaction.recipients;
        let size = message.original().len();
        let accepted = Reply::new(250, "2.0.0", format!("Ok: queued as {id}"));
        let (decision, verdict) = match judged.result {
            Ok(verdict) => (verdict.decided(&accepted), Some(verdict)),
            Err(decision) => (Some(decision), None),
        };
        // Also when a rule refused: the rules that matched up to it.
        let summary = crate::rules::summary(&judged.matched);
        // With the archive off (or `archive = false`), a quarantined message
        // waits in the queue's hold folder instead.
        let held = match decision {
            Some(decision)
                if decision.outcome == Outcome::Quarantined
                    && !(decision.archive && self.archive().is_some()) =>
            {
                Some(decision.by)
            }
            Some(decision) => {
                return self
                    .keep(Kept {
                        stage: Stage::Data,
                        peer,
                        id: Some(&id),
                        sender: &sender,
                        recipients,
                        decision,
                        message: Some(message.original()),
                        received: Some(message.trace()),
                        size,
                        rules: &summary,
                    })
                    .await;
            }
            None => None,
        };
        let verdict = verdict.unwrap_or_else(|| Verdict::deliver(&sender, recipients.to_vec()));
        let decided_by = held
            .clone()
            .or_else(|| verdict.decided_by.clone().map(DecidedBy::Rule));
        let into = if held.is_some() {
            Into::Hold
        } else {
            Into::Delivery
        };
        let (outcome, reply, decided_by, reason) = match self
            .enqueue(peer, transaction, message, &verdict, into)
            .await
        {
            Ok(()) => (
                if held.is_some() {
                    Outcome::Held
                } else {
                    Outcome::Queued
                },
                accepted,
                decided_by,
                String::new(),
            ),
            Err(e) => {
                tracing::error!(queue_id = %id, error = %e, "cannot write the message to the queue");
                (
                    Outcome::Tempfailed,
                    Reply::new(
                        451,
                        "4.3.0",
                        "Error: queue file write error; try again later",
                    ),
                    Some(DecidedBy::check("queue")),
                    e.to_string(),
                )
            }
        };
        self.record(&Event {
            id: &id,
            stage: Stage::Data,
            peer,
            sender: &sender,
            recipients,
            size,
            outcome,
            decided_by: decided_by.as_ref(),
            reason: &reason,
            reply: &reply,
            rules: &summary,
        });
        reply
    }

    /// Writes the message, as the rules changed it, signed (DKIM) and sealed
    /// (ARC) as `[sender_auth]` says, to the queue (or its hold folder).
    pub(super) async fn enqueue(
        &self,
        peer: &Peer,
        transaction: &Transaction,
        message: Message,
        verdict: &Verdict,
        into: Into,
    ) -> std::io::Result<()> {
        let Some(queue) = self.queue() else {
            return Err(std::io::Error::other("no queue to keep the message in"));
        };
        let trace_len = message.trace_len;
        let mut bytes = message.bytes;
        let changed = verdict
            .changes_message()
            .then(|| verdict.apply(&bytes[trace_len..]));
        let authenticated = match &self.sender_auth {
            Some(auth) => {
                let sender = transaction.sender_text();
                auth.outgoing(crate::sender_auth::Outgoing {
                    peer,
                    sender: &sender,
                    spf: transaction.spf.as_ref(),
                    auth: verdict.authentication.as_ref(),
                    original: &bytes[trace_len..],
                    delivered: changed.as_deref().unwrap_or(&bytes[trace_len..]),
                    changed: changed.is_some(),
                })
                .await
            }
            None => None,
        };
        if let Some(replacement) = authenticated.or(changed) {
            bytes.truncate(trace_len);
            bytes.extend_from_slice(&replacement);
        }
        let envelope = Envelope {
            client_ip: peer.ip.to_string(),
            helo: peer.helo().to_string(),
            eight_bit: transaction.eight_bit,
            smtputf8: transaction.smtputf8,
            ..Envelope::new(
                message.id,
                verdict.sender.clone(),
                verdict.recipients.clone(),
            )
        };
        let state = match into {
            Into::Delivery => crate::queue::spool::QueueState::Active,
            Into::Hold => crate::queue::spool::QueueState::Hold,
        };
        queue.enqueue_in(envelope, bytes, state, message.room).await
    }

    /// The end of a message written to signed release addresses: each item is
    /// released through the pipeline; the reply says what happened.
    pub async fn release_by_mail(
        &self,
        peer: &Peer,
        transaction: &Transaction,
        rules: &crate::rules::RuleSet,
    ) -> Reply {
        if self.archive().is_none() || self.queue().is_none() {
            return Reply::new(550, "5.7.1", "Release by mail is not available here");
        }
        let by = format!("mail from {} <{}>", peer.ip, transaction.sender_text());
        let mut done = Vec::new();
        for item in &transaction.releases {
            match self.release(rules, item, &[], &by).await {
                Ok(queue_id) => done.push(format!("Released {item} (queued as {queue_id})")),
                Err(e) => {
                    tracing::info!(archive_id = %item, by, error = %e, "release by mail refused");
                    return Reply::new(550, "5.7.1", e);
                }
            }
        }
        Reply::new(250, "2.0.0", done.join("; "))
    }
}
