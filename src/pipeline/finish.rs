//! The end of a judged message: refused, discarded or quarantined into the
//! archive by [`Pipeline::keep`]; otherwise queued with the rules' changes (or, a
//! quarantine with the archive off, held in the queue). One log line either way.

use super::{Judgement, Kept, Pipeline};
use crate::queue::envelope::Envelope;
use crate::reply::Reply;
use crate::rules::Verdict;
use crate::verdict::{DecidedBy, Decision, Event, Outcome, Peer, Stage};

/// A message whose data has been read, with what the session knows of it.
pub struct Received<'a> {
    /// The queue id the client is told.
    pub id: &'a str,
    pub peer: &'a Peer,
    /// Empty for the null sender.
    pub sender: &'a str,
    /// The sender's SPF check at MAIL (for an ARC seal's results).
    pub spf: Option<&'a crate::sender_auth::SpfCheck>,
    pub recipients: &'a [String],
    /// BODY=8BITMIME and SMTPUTF8 were given.
    pub eight_bit: bool,
    pub smtputf8: bool,
    /// mailmoat's trace header, then the message as the client sent it.
    pub bytes: Vec<u8>,
    /// Octets of the trace header at the start of `bytes`.
    pub trace_len: usize,
}

impl Pipeline {
    /// Acts on the judgement of a message; returns the reply for the client.
    pub async fn finish(&self, message: Received<'_>, judged: Judgement<Verdict>) -> Reply {
        let (id, peer, sender, recipients) =
            (message.id, message.peer, message.sender, message.recipients);
        let size = message.bytes.len() - message.trace_len;
        let accepted = Reply::new(250, "2.0.0", format!("Ok: queued as {id}"));
        let kept = |decision: Decision, rules| Kept {
            stage: Stage::Data,
            peer,
            id: Some(id),
            sender,
            recipients,
            decision,
            message: Some(&message.bytes[message.trace_len..]),
            received: Some(&message.bytes[..message.trace_len]),
            size,
            rules,
        };
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
                    && !(decision.archive && self.archive.is_some()) =>
            {
                Some(decision.by)
            }
            Some(decision) => return self.keep(kept(decision, &summary)).await,
            None => None,
        };
        let verdict = verdict.unwrap_or_else(|| Verdict::deliver(sender, recipients.to_vec()));
        let decided_by = held
            .clone()
            .or_else(|| verdict.decided_by.clone().map(DecidedBy::Rule));
        let (outcome, reply, decided_by, reason) = match self
            .queue(message, &verdict, held.is_some())
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
            id,
            stage: Stage::Data,
            peer,
            sender,
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

    /// Writes the message, as the rules changed it, to the queue (or its hold
    /// folder).
    async fn queue(
        &self,
        message: Received<'_>,
        verdict: &Verdict,
        held: bool,
    ) -> std::io::Result<()> {
        let Some(queue) = &self.queue else {
            return Err(std::io::Error::other("no queue to keep the message in"));
        };
        let mut bytes = message.bytes;
        let changed = verdict
            .changes_message()
            .then(|| verdict.apply(&bytes[message.trace_len..]));
        let authenticated = match &self.sender_auth {
            Some(auth) => {
                auth.outgoing(crate::sender_auth::Outgoing {
                    peer: message.peer,
                    sender: message.sender,
                    spf: message.spf,
                    auth: verdict.authentication.as_ref(),
                    original: &bytes[message.trace_len..],
                    delivered: changed.as_deref().unwrap_or(&bytes[message.trace_len..]),
                    changed: changed.is_some(),
                })
                .await
            }
            None => None,
        };
        if let Some(replacement) = authenticated.or(changed) {
            bytes.truncate(message.trace_len);
            bytes.extend_from_slice(&replacement);
        }
        let envelope = Envelope {
            client_ip: message.peer.ip.to_string(),
            helo: message.peer.helo().to_string(),
            eight_bit: message.eight_bit,
            smtputf8: message.smtputf8,
            ..Envelope::new(
                message.id.to_string(),
                verdict.sender.clone(),
                verdict.recipients.clone(),
            )
        };
        if held {
            queue.enqueue_held(envelope, bytes).await
        } else {
            queue.enqueue(envelope, bytes).await
        }
    }
}

impl Pipeline {
    /// The end of a message written to signed release addresses: the items are
    /// released (judged again by `rules`); the reply says what happened.
    pub async fn release_by_mail(
        &self,
        peer: &Peer,
        sender: &str,
        ids: &[String],
        rules: &crate::rules::RuleSet,
    ) -> Reply {
        let (Some(archive), Some(queue)) = (&self.archive, &self.queue) else {
            return Reply::new(550, "5.7.1", "Release by mail is not available here");
        };
        let by = format!("mail from {} <{sender}>", peer.ip);
        match crate::archive::release::by_mail(archive, rules, queue, &self.config, ids, &by).await
        {
            Ok(text) => Reply::new(250, "2.0.0", text),
            Err(text) => Reply::new(550, "5.7.1", text),
        }
    }
}
