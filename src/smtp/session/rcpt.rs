//! RCPT TO (RFC 5321 4.1.1.3): the recipient limit and SMTPUTF8 here; the relay
//! decision, recipient validation, rules and limits in the pipeline's RCPT stage.

use super::Session;
use crate::pipeline::Recipient;
use crate::verdict::Stage;

impl Session {
    pub(super) async fn rcpt(&mut self, raw: &str) {
        let Some(transaction) = &self.transaction else {
            return self.error(503, "5.5.1", "Error: need MAIL command");
        };
        if transaction.recipients.len() >= self.config().limits.recipient_limit {
            return self.reply(452, "4.5.3", "Error: too many recipients");
        }
        if !raw.is_ascii() && !transaction.smtputf8 {
            return self.reply(
                553,
                "5.6.7",
                format!("<{raw}>: non-ASCII address requires SMTPUTF8"),
            );
        }
        let pipeline = self.pipeline();
        let Some(transaction) = self.transaction.as_mut() else {
            return;
        };
        let judged = pipeline
            .rcpt(&self.peer, &self.rules, transaction, raw)
            .await;
        match judged.result {
            Ok(Recipient::Deliver(_)) => self.reply(250, "2.1.5", "Ok"),
            Ok(Recipient::Release(_)) => self.reply(250, "2.1.5", "Ok: release request"),
            Err(decision) => self.refuse(Stage::Rcpt, decision, &[raw.to_string()]).await,
        }
    }
}
