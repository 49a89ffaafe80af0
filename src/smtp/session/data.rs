//! DATA (RFC 5321 4.1.1.4): the strict reader takes the message; the pipeline
//! judges it and keeps it — queued, held or archived — before the reply.

use super::{Flow, Session};
use crate::pipeline::{Kept, Message};
use crate::queue::spool::new_id;
use crate::queue::trace::{self, Protocol};
use crate::smtp::admission::Phase;
use crate::smtp::connection::{DataRate, ReadError};
use crate::smtp::data::{DataOutcome, DataReader};
use crate::verdict::{Decision, Stage};

impl Session {
    pub(super) async fn data(&mut self) -> Flow {
        let Some(mut transaction) = self.transaction.take() else {
            self.error(503, "5.5.1", "Error: need MAIL command");
            return Flow::Continue;
        };
        if transaction.recipients.is_empty() && transaction.releases.is_empty() {
            self.reply(554, "5.5.1", "Error: no valid recipients");
            return Flow::Continue;
        }
        if let Err(decision) = self.pipeline().room_for_data() {
            let recipients = transaction.recipients.clone();
            self.transaction = Some(transaction);
            self.refuse(Stage::Data, decision, &recipients).await;
            return Flow::Continue;
        }
        let config = self.shared.config.clone();
        let id = new_id();
        transaction.shadow.queued_as(&id);
        let only = match transaction.recipients.as_slice() {
            [only] => Some(only.as_str()),
            _ => None,
        };
        let protocol = Protocol {
            esmtp: self.esmtp,
            smtputf8: transaction.smtputf8,
        };
        let received = trace::received(&config.server.hostname, &self.peer, &protocol, &id, only);
        let trace_len = received.len();
        self.reply(354, "", "End data with <CR><LF>.<CR><LF>");
        let mut reader = DataReader::new(
            config.limits.line_length_limit,
            config.limits.message_size_limit,
            config.limits.bare_line_endings,
            received,
        )
        .with_budget(self.shared.memory.clone())
        .with_room(transaction.room.take());
        let patience = self.patience(config.limits.data_timeout);
        let rate = DataRate {
            allowance: config.limits.data_timeout,
            bytes_per_second: config.limits.min_data_rate,
        };
        let mut shutdown = self.shared.shutdown.clone();
        let read = tokio::select! {
            read = self.conn.read_data(&mut reader, patience, rate, self.ends) => read,
            // Past the grace period of a shutdown: the client hears why.
            _ = shutdown.wait_for(|phase| *phase == Phase::Closing) => {
                self.reply(
                    421,
                    "4.3.2",
                    format!("{} Service shutting down", config.server.hostname),
                );
                tracing::info!(queue_id = %id, client = %self.peer.ip, "shutdown during DATA; nothing queued");
                return Flow::Close;
            }
        };
        match read {
            Ok(()) => {}
            Err(ReadError::TimedOut) => {
                self.timed_out();
                tracing::info!(queue_id = %id, client = %self.peer.ip, "timeout during DATA; nothing queued");
                return Flow::Close;
            }
            Err(ReadError::TooSlow) => {
                self.reply(
                    421,
                    "4.4.2",
                    format!(
                        "{} Error: message data arrives too slowly (under {} bytes a second)",
                        config.server.hostname, config.limits.min_data_rate
                    ),
                );
                tracing::info!(queue_id = %id, client = %self.peer.ip, min_data_rate = config.limits.min_data_rate, "data too slow; nothing queued");
                return Flow::Close;
            }
            Err(_) => {
                tracing::info!(queue_id = %id, client = %self.peer.ip, "connection lost during DATA; nothing queued");
                return Flow::Close;
            }
        }
        // Held until the message is queued or refused.
        let _memory = reader.take_reservation();
        let room = reader.take_room();
        let end_of_data = std::time::Instant::now();
        self.conn.shrink();
        let sender = transaction.sender_text();
        let pipeline = self.pipeline();
        let size = reader.size();
        let bytes = match reader.finish() {
            DataOutcome::Message(bytes) => bytes,
            DataOutcome::Refused(reply, violations, read) => {
                self.errors += 1;
                self.refused += 1;
                // The archive keeps the message as the client sent it, without our
                // trace line.
                let original = read.get(trace_len..).filter(|m| !m.is_empty());
                let reply = pipeline
                    .keep(Kept {
                        stage: Stage::Data,
                        peer: &self.peer,
                        id: Some(&id),
                        sender: &sender,
                        recipients: &transaction.recipients,
                        decision: Decision::refuse(
                            violations.check(),
                            reply,
                            format!("{violations:?}"),
                        ),
                        message: original,
                        received: read.get(..trace_len),
                        size,
                        rules: "",
                    })
                    .await;
                self.conn.reply(&reply);
                return Flow::Continue;
            }
        };
        if !transaction.releases.is_empty() {
            let released = pipeline
                .release_by_mail(&self.peer, &transaction, &self.rules)
                .await;
            if transaction.recipients.is_empty() {
                // Only release requests: the message itself carried nothing to deliver.
                self.conn.reply(&released);
                return Flow::Continue;
            }
        }
        let message = Message {
            id,
            bytes,
            trace_len,
            room,
        };
        let judged = pipeline
            .data(&self.peer, &self.rules, &mut transaction, &message)
            .await;
        let reply = pipeline
            .finish(&self.peer, &transaction, message, judged)
            .await;
        if reply.is_positive() {
            self.accepted += 1;
        } else {
            self.refused += 1;
        }
        if let Some(metrics) = self.shared.metrics() {
            metrics.end_of_data(end_of_data.elapsed());
        }
        self.conn.reply(&reply);
        Flow::Continue
    }
}
