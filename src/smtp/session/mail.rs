//! MAIL FROM (RFC 5321 4.1.1.2): the sender's syntax and the declared size here;
//! the checks of the MAIL stage in the pipeline.

use super::Session;
use crate::address::Path;
use crate::smtp::command::MailParams;
use crate::verdict::Stage;

impl Session {
    pub(super) async fn mail(&mut self, raw: &str, params: MailParams) {
        if self.peer.helo.is_none() {
            return self.error(503, "5.5.1", "Error: send HELO/EHLO first");
        }
        if self.transaction.is_some() {
            return self.error(503, "5.5.1", "Error: nested MAIL command");
        }
        let sender = match Path::parse(raw) {
            Ok(path) => path,
            Err(e) => {
                return self.error(
                    501,
                    "5.1.7",
                    format!("<{raw}>: Bad sender address syntax ({e})"),
                );
            }
        };
        if !raw.is_ascii() && !params.smtputf8 {
            return self.reply(
                553,
                "5.6.7",
                format!("<{raw}>: non-ASCII address requires SMTPUTF8"),
            );
        }
        let limit = self.config().limits.message_size_limit;
        if params.size.is_some_and(|size| size > limit) {
            return self.reply(552, "5.3.4", "Message size exceeds fixed limit");
        }
        let judged = self
            .pipeline()
            .mail(&self.peer, &self.rules, sender.clone(), params)
            .await;
        match judged.result {
            Ok(transaction) => {
                self.transaction = Some(transaction);
                self.reply(250, "2.1.0", "Ok");
            }
            Err(decision) => {
                // Kept with its sender, then forgotten: no transaction begins.
                let mut refused = crate::pipeline::Transaction::new(sender, false, false);
                refused.shadow.add(&judged.matched);
                self.transaction = Some(refused);
                self.refuse(Stage::Mail, decision, &[]).await;
                self.transaction = None;
            }
        }
    }
}
