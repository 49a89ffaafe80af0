//! A release from the archive takes the way of new mail: a transaction is made
//! from the archive record, the DATA stage judges the message with every step but
//! the one that held it (the virus scan, the MIME structure and unscannable
//! checks, the spam score, DMARC and the other rules all run), and an accepted
//! message is signed, sealed, queued and counted by [`Pipeline::enqueue`] like
//! any other. A release the remaining steps refuse is not queued, and the answer
//! names the step and why.

use super::finish::Into;
use super::{Message, Pipeline, Spared, Transaction};
use crate::address::Path;
use crate::queue::spool::new_id;
use crate::reply::Reply;
use crate::rules::{Final, RuleSet};
use crate::verdict::{DecidedBy, Event, Outcome, Stage};

impl Pipeline {
    /// Releases archive item `item` to its recipients, or only to `only`; `by`
    /// says who asked, for the log and the record. Returns the new queue id.
    pub async fn release(
        &self,
        rules: &RuleSet,
        item: &str,
        only: &[String],
        by: &str,
    ) -> Result<String, String> {
        let archive = self
            .archive()
            .ok_or("the archive is off ([archive] enabled = false)")?
            .clone();
        let _one_at_a_time = archive.release_guard.lock().await;
        let found = archive.releasable(item, only)?;
        let mut record = found.record;
        let client_ip = record
            .client_ip
            .parse()
            .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
        let login = record
            .login
            .clone()
            .or_else(|| record.authenticated.then(|| "(logged in)".to_string()));
        let mut peer = self
            .peer(
                client_ip,
                std::net::Ipv4Addr::UNSPECIFIED.into(),
                false,
                login,
            )
            .await;
        peer.name = record.client_name.clone().or(peer.name);
        peer.helo = Some(record.helo.clone());
        let sender = Path::parse(&record.sender).unwrap_or(Path::Null);
        let mut transaction = Transaction::new(sender, !found.message.is_ascii(), false);
        transaction.recipients = found.recipients.clone();
        // The sender's SPF result as it is now: DMARC and the rules read it.
        if let Some(auth) = &self.sender_auth {
            transaction.spf = auth.spf(&peer, &record.sender).await;
        }
        let queue_id = new_id();
        // Our release line above the client's own, as it came in: the backend
        // sees the whole way the message took.
        let mut bytes =
            crate::queue::trace::released(&self.config.server.hostname, item, &queue_id);
        match &record.received {
            Some(line) => bytes.extend_from_slice(line.as_bytes()),
            None => bytes.extend_from_slice(&crate::queue::trace::reconstructed(
                &self.config.server.hostname,
                &crate::queue::trace::Known {
                    helo: &record.helo,
                    client_name: record.client_name.as_deref(),
                    client_ip: &record.client_ip,
                    time: record.time,
                    id: &record.id,
                },
            )),
        }
        let trace_len = bytes.len();
        bytes.extend_from_slice(&found.message);
        let message = Message {
            id: queue_id.clone(),
            bytes,
            trace_len,
            room: Default::default(),
        };
        let spared = match &record.decided_by {
            DecidedBy::Rule(rule) => Spared::Rule(rule.clone()),
            DecidedBy::Check(check) => Spared::Check(check.clone()),
        };
        let judged = self
            .judge_data(&peer, rules, &transaction, &message, Some(&spared))
            .await;
        let summary = crate::rules::summary(&judged.matched);
        let refusal = match &judged.result {
            Err(decision) => Some(decision.clone()),
            Ok(verdict) => verdict
                .decided(&Reply::new(250, "2.0.0", "Ok"))
                .filter(|_| verdict.decision != Final::Deliver),
        };
        if let Some(decision) = refusal {
            let advice = match decision.by {
                DecidedBy::Rule(_) => "; change that rule, or release with it in shadow mode",
                DecidedBy::Check(_) => "",
            };
            return Err(format!(
                "{item}: not released: {} catches it as well ({}: {}; {}){advice}",
                decision.by.describe(),
                decision.outcome,
                decision.reply,
                decision.reason
            ));
        }
        let verdict = judged.result.expect("no refusal above");
        archive.mark_released(&mut record, by, &found.recipients, &queue_id)?;
        let size = message.original().len();
        let sender = transaction.sender_text();
        if let Err(e) = self
            .enqueue(&peer, &transaction, message, &verdict, Into::Delivery)
            .await
        {
            archive.unmark_released(&mut record);
            return Err(format!("{item}: cannot queue the message: {e}"));
        }
        tracing::info!(archive_id = item, queue_id = %queue_id, by, recipients = %crate::logging::list(&found.recipients), "released from the archive");
        self.record(&Event {
            id: &queue_id,
            stage: Stage::Data,
            peer: &peer,
            sender: &sender,
            recipients: &transaction.recipients,
            size,
            outcome: Outcome::Queued,
            decided_by: None,
            reason: "",
            reply: &Reply::new(250, "2.0.0", format!("Ok: queued as {queue_id}")),
            rules: &summary,
        });
        Ok(queue_id)
    }
}
