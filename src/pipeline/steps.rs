//! What each step does: one arm per [`Step`], each calling the check that owns it
//! in `policy/` or `rules/`.
//!
//! One file on purpose: it is the index from a step of the precedence in
//! `mod.rs` to the check that does it, each arm a few lines; split by stage,
//! a step would be looked for in two places and the order read in neither.

use futures_util::FutureExt;

use super::{Judging, Next, Pipeline, Recipient, Step};
use crate::address::Path;
use crate::config::{Ambiguous, DnsblAt, Partial, Unscannable};
use crate::mime::edit::Removal;
use crate::policy::relay::{self, Destination};
use crate::reply::Reply;
use crate::rules::Facts;
use crate::rules::Final;
use crate::verdict::{DecidedBy, Outcome};
use crate::verdict::{Decision, Stage};

impl Pipeline {
    /// A step, with a bug in it (a panic) turned into a refusal: the session
    /// must not end without a reply nor take the message with it. The client
    /// hears 451 and retries, the message is archived for review, the log
    /// says where.
    pub(super) async fn guarded_step(
        &self,
        step: Step,
        j: &mut Judging<'_>,
    ) -> Result<Next, Decision> {
        let stage = j.stage;
        std::panic::AssertUnwindSafe(self.step(step, j))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(internal_error(step, stage, &panic)))
    }

    async fn step(&self, step: Step, j: &mut Judging<'_>) -> Result<Next, Decision> {
        let ip = j.peer.ip;
        match step {
            Step::ConnectionRate => self.mailbomb.connect(ip).await?,
            Step::ClientDeny => self.reputation.client_deny(ip)?,
            Step::ClientNameDeny => self
                .reputation
                .client_name_deny(ip, j.peer.name.as_deref())?,
            Step::Dnsbl => {
                let here = match self.reputation.config().dnsbl_at {
                    DnsblAt::Connect => Stage::Connect,
                    DnsblAt::Rcpt => Stage::Rcpt,
                };
                if here == j.stage && !j.allow_listed {
                    let recipient = (j.stage == Stage::Rcpt).then_some(j.recipient);
                    self.reputation.dnsbl(ip, recipient).await?;
                }
            }
            Step::Pregreet => {
                let delay = self.reputation.config().greet_delay;
                if let Some(greeting) = j.greeting.as_deref_mut()
                    && !delay.is_zero()
                    && greeting.talks_first(delay).await
                {
                    return Err(Decision::refuse(
                        "pregreet",
                        Reply::new(
                            554,
                            "5.5.1",
                            "Error: you talked before the greeting; goodbye",
                        ),
                        "client sent data before the banner",
                    ));
                }
            }
            Step::HeloNotOurs => self.reputation.helo(j.peer.helo(), j.peer.local_ip)?,
            Step::SenderLogin => {
                if let Some(user) = &j.peer.login
                    && !crate::policy::auth::owns(
                        &self.config.auth,
                        user,
                        &j.peer.login_addresses,
                        j.sender,
                        &|d| self.config.is_hosted(d),
                    )
                {
                    return Err(Decision::refuse(
                        "auth.sender_login",
                        Reply::new(
                            553,
                            "5.7.1",
                            format!("<{}>: Sender address not owned by user {user}", j.sender),
                        ),
                        format!("logged in as {user}"),
                    ));
                }
            }
            Step::SpoolSpace => j.room = Some(self.spool_space(j.declared_size)?),
            Step::SenderDeny => self.reputation.sender_deny(j.sender_domain)?,
            Step::SenderDomain => self.reputation.sender_domain(j.sender_domain).await?,
            Step::MessageRate => self.mailbomb.message(ip, j.sender).await?,
            Step::Spf => {
                if let Some(auth) = &self.sender_auth {
                    j.spf = auth
                        .spf(j.peer, j.sender)
                        .await
                        .map(std::borrow::Cow::Owned);
                }
            }
            Step::SenderAuth => {
                if let Some(auth) = &self.sender_auth {
                    let spf = j.spf.as_deref();
                    j.authentication = auth.verify(j.peer, j.sender, spf, j.message).await;
                    if let Some(found) = &j.authentication {
                        auth.enforce(found, j.id).await?;
                    }
                }
            }
            Step::ReleaseAddress => return self.release_address(j),
            Step::Relay => {
                let destination = relay::decide(&self.config, j.recipient, j.peer.may_relay)?;
                j.accepted = Some(Recipient::Deliver(destination));
            }
            Step::Recipients => {
                if let Some(Recipient::Deliver(Destination::Hosted(mailbox))) = &j.accepted {
                    self.recipients.check(mailbox).await?;
                }
            }
            Step::RecipientRate => {
                if let Some(Recipient::Deliver(destination)) = &j.accepted {
                    self.mailbomb
                        .recipient(ip, &destination.mailbox().to_string())
                        .await?;
                }
            }
            Step::SenderLists => self.sender_lists(j).await?,
            Step::Greylist => {
                if let Some((recipient, spf_domain)) = self.greylisted_recipient(j)
                    && !j.allow_listed
                {
                    let now = crate::policy::greylist::now();
                    let spf_domain = spf_domain.as_deref();
                    self.greylist
                        .check(ip, j.sender, &recipient, spf_domain, now)
                        .await?;
                }
            }
            Step::Scan => {
                if let Some(scanners) = &self.scanners {
                    let found = scanners
                        .scan(j.peer, j.sender, j.recipients, j.id, j.message)
                        .await;
                    log_scan(j.id, &found);
                    let unanswered = scanners.unanswered(&found);
                    j.scan = Some(found);
                    unanswered?;
                }
            }
            Step::ScanDefaults => {
                let spared = j.scan.as_ref().is_some_and(|s| s.spam.is_some())
                    && sender_authenticated(j)
                    && self.all_allow(j.sender, j.recipients).await;
                if let (Some(scanners), Some(found), Some(verdict)) =
                    (&self.scanners, &j.scan, j.verdict.as_mut())
                {
                    let rule_decided = verdict.decided_by.is_some();
                    let edits = scanners.defaults(found, rule_decided, spared, j.id)?;
                    verdict.header_edits.extend(edits);
                }
            }
            Step::BodyFlood => self.mailbomb.body(j.message).await?,
            Step::MimeStructure => self.mime_structure(j)?,
            Step::Rules => self.rules(j)?,
            Step::Unscannable => self.unscannable(j)?,
        }
        Ok(Next::Continue)
    }

    /// The rules that can decide at this stage: at MAIL and RCPT only a refusal
    /// that no earlier rule could overturn; at DATA the whole verdict.
    fn rules(&self, j: &mut Judging<'_>) -> Result<(), Decision> {
        if j.stage == Stage::Data {
            let needs_content =
                j.rules.needs_content() || self.config.mime.unscannable != Unscannable::Deliver;
            if needs_content {
                j.content(&crate::mime::Limits::of(&self.config.rules));
            }
            let mut facts = Facts::of(j.peer, j.sender, j.recipients);
            facts.auth = j.auth_facts();
            facts.scan = j.scan.as_ref();
            let spared_rule = match j.spared {
                Some(super::Spared::Rule(rule)) => Some(rule.as_str()),
                _ => None,
            };
            let verdict =
                j.rules
                    .judge_content(facts, j.message.len(), j.content.as_ref(), spared_rule);
            j.matched.extend(verdict.matched.iter().cloned());
            let refusal = verdict
                .decided(&Reply::new(250, "2.0.0", "Ok"))
                .filter(|d| d.outcome.is_refusal());
            j.verdict = Some(verdict);
            return refusal.map_or(Ok(()), Err);
        }
        let rcpt;
        let recipients: &[String] = match &j.accepted {
            Some(Recipient::Deliver(destination)) if j.stage == Stage::Rcpt => {
                rcpt = [destination.mailbox().to_string()];
                &rcpt
            }
            _ => &[],
        };
        let mut facts = Facts::of(j.peer, j.sender, recipients);
        facts.auth = j.auth_facts();
        match j.rules.check_early(j.stage, &facts) {
            Ok(matched) => {
                j.matched.extend(matched);
                Ok(())
            }
            Err(refused) => {
                j.matched.extend(refused.matched);
                Err(refused.decision)
            }
        }
    }

    /// The recipient being judged and the SPF-authorised sender domain, when
    /// greylisting applies to it: postmaster is always let through, and so is a
    /// release request.
    fn greylisted_recipient(&self, j: &Judging<'_>) -> Option<(String, Option<String>)> {
        if !self.config.greylist.enabled {
            return None;
        }
        let Some(Recipient::Deliver(destination)) = &j.accepted else {
            return None;
        };
        let mailbox = destination.mailbox();
        if mailbox.local_unquoted.eq_ignore_ascii_case("postmaster") {
            return None;
        }
        let spf_domain = j
            .spf
            .as_deref()
            .filter(|spf| spf.result == crate::sender_auth::AuthResult::Pass)
            .map(|spf| spf.domain().to_string());
        Some((mailbox.to_string(), spf_domain))
    }

    /// The recipient's and the administrators' lists: a block refuses; an allow
    /// counts only when the sender's SPF passes for its own domain.
    async fn sender_lists(&self, j: &mut Judging<'_>) -> Result<(), Decision> {
        let Some(Recipient::Deliver(Destination::Hosted(mailbox))) = &j.accepted else {
            return Ok(());
        };
        let recipient = mailbox.lookup_key();
        let Some(entry) = self.lists.judge(&recipient, j.sender).await else {
            return Ok(());
        };
        let global = entry.owner == crate::policy::lists::EVERYONE;
        let whose = if global {
            "the administrators' list".to_string()
        } else {
            format!("the list of {}", entry.owner)
        };
        match entry.kind {
            crate::policy::lists::ListKind::Block => Err(Decision::refuse(
                if global {
                    "lists.global"
                } else {
                    "lists.recipient"
                },
                Reply::new(
                    550,
                    "5.7.1",
                    format!(
                        "<{}>: Sender blocked by {}",
                        j.sender,
                        if global {
                            "the site's policy"
                        } else {
                            "the recipient"
                        }
                    ),
                ),
                format!("{} is blocked on {whose}", entry.sender),
            )),
            crate::policy::lists::ListKind::Allow => {
                let authenticated = j.spf.as_deref().is_some_and(|spf| {
                    spf.result == crate::sender_auth::AuthResult::Pass
                        && j.sender
                            .rsplit_once('@')
                            .is_some_and(|(_, d)| d.eq_ignore_ascii_case(spf.domain()))
                });
                tracing::info!(
                    sender = j.sender,
                    recipient = %recipient,
                    allowed = %entry.sender,
                    spared = authenticated,
                    "sender allowed on {whose}{}",
                    if authenticated { "" } else { ", but its SPF does not pass: nothing spared" }
                );
                j.allow_listed = authenticated;
                Ok(())
            }
        }
    }

    /// Does every recipient allow the sender?
    async fn all_allow(&self, sender: &str, recipients: &[String]) -> bool {
        if recipients.is_empty() {
            return false;
        }
        for recipient in recipients {
            let entry = self.lists.judge(recipient, sender).await;
            if !entry.is_some_and(|e| e.kind == crate::policy::lists::ListKind::Allow) {
                return false;
            }
        }
        true
    }

    /// `RCPT TO:<release+ID.SIG@hostname>`: a reviewer releasing an archived item
    /// from the backup mailbox. Only clients that may relay, only with the right
    /// signature; the release itself happens at the end of DATA.
    fn release_address(&self, j: &mut Judging<'_>) -> Result<Next, Decision> {
        let Some(archive) = self.archive() else {
            return Ok(Next::Continue);
        };
        let Ok(Path::Mailbox(mailbox)) = Path::parse(j.recipient) else {
            return Ok(Next::Continue);
        };
        let Some(domain) = mailbox.domain_name() else {
            return Ok(Next::Continue);
        };
        if !archive.is_release_address(&mailbox.local_unquoted, domain) {
            return Ok(Next::Continue);
        }
        let raw = j.recipient;
        if !j.peer.may_relay {
            return Err(Decision::refuse(
                "release",
                Reply::new(
                    550,
                    "5.7.1",
                    format!(
                        "<{raw}>: release requests are taken only from trusted or authenticated clients"
                    ),
                ),
                "release address from a client that may not relay",
            ));
        }
        match archive.verify_release(&mailbox.local_unquoted) {
            Some(id) => {
                j.accepted = Some(Recipient::Release(id));
                Ok(Next::Accept)
            }
            None => Err(Decision::refuse(
                "release",
                Reply::new(
                    550,
                    "5.7.1",
                    format!("<{raw}>: not a valid release address"),
                ),
                "release address with a wrong signature",
            )),
        }
    }

    /// New mail only while the spool has room for it (Postfix's
    /// `queue_minfree`) beside every message being received: refused early, at
    /// MAIL FROM, not after the whole body. The room the client declared (SIZE=)
    /// is reserved for it.
    fn spool_space(&self, declared: u64) -> Result<crate::memory::Reservation, Decision> {
        let Some(queue) = self.queue() else {
            return Ok(crate::memory::Reservation::default());
        };
        queue
            .room
            .reserve(self.config.min_free_space(), declared)
            .map_err(no_room)
    }

    /// At DATA, before the `354`: the room reserved at MAIL may have been
    /// overtaken by messages written since.
    pub fn room_for_data(&self) -> Result<(), Decision> {
        let Some(queue) = self.queue() else {
            return Ok(());
        };
        let minimum = self.config.min_free_space();
        if queue.room.fits(minimum, 0) {
            return Ok(());
        }
        Err(no_room(queue.room.no_room(minimum, 0)))
    }

    /// One reading of the MIME structure and of what is attached: a message that
    /// readers could read in more than one way is refused, quarantined, or (when
    /// only its MIME structure is at stake) rewritten to the one reading that
    /// every step after this one judges. A `message/partial` fragment is refused
    /// or quarantined: no check sees the message it makes.
    fn mime_structure(&self, j: &mut Judging<'_>) -> Result<(), Decision> {
        let reading = crate::mime::structure::read(j.message);
        if let Some(at) = reading
            .root
            .find(&|e| e.media.kind == "message" && e.media.subtype == "partial")
        {
            return Err(self.partial(j.id, &at));
        }
        let limits = crate::mime::Limits::of(&self.config.rules);
        if !reading.is_ambiguous() {
            j.content = Some(crate::mime::Content::of(j.message, &reading, &limits));
            return self.attached_ambiguities(j);
        }
        let problems: Vec<String> = reading
            .ambiguities
            .iter()
            .map(ToString::to_string)
            .collect();
        let action = self.config.mime.ambiguous;
        tracing::info!(
            queue_id = %j.id,
            problems = %problems.join("; "),
            action = ?action,
            "ambiguous MIME structure"
        );
        let reason = format!("ambiguous MIME structure: {}", problems.join("; "));
        match action {
            Ambiguous::Reject => Err(Decision::refuse(
                "mime.ambiguous",
                Reply::new(
                    554,
                    "5.6.0",
                    format!(
                        "Message refused: its MIME structure can be read in more than one way ({})",
                        printable(&problems[0])
                    ),
                ),
                reason,
            )),
            Ambiguous::Quarantine => {
                Err(kept(j.id, "mime.ambiguous", Outcome::Quarantined, reason))
            }
            Ambiguous::Normalize => {
                let rewritten = crate::mime::normalize::rewrite(&reading, j.message);
                let again = crate::mime::structure::read(&rewritten);
                if let Some(left) = again.ambiguities.first() {
                    // Found by fuzzing: a chain of forwards whose rewrite passes the
                    // depth limit. What cannot be given one reading is not delivered.
                    return Err(Decision::refuse(
                        "mime.ambiguous",
                        Reply::new(
                            554,
                            "5.6.0",
                            format!(
                                "Message refused: its MIME structure cannot be rewritten to one reading ({})",
                                printable(&left.to_string())
                            ),
                        ),
                        format!("{reason}; the rewrite is still ambiguous: {left}"),
                    ));
                }
                j.content = Some(crate::mime::Content::of(&rewritten, &again, &limits));
                j.normalized = Some(rewritten);
                self.attached_ambiguities(j)
            }
        }
    }

    /// What is attached, read two ways: a zip whose directory and local headers
    /// disagree, data after a container's end, an attached message whose own
    /// structure is ambiguous. Extractors would hand the recipient something
    /// other than what was judged. An archive cannot be rewritten to one
    /// reading, so `normalize` refuses it too.
    fn attached_ambiguities(&self, j: &Judging<'_>) -> Result<(), Decision> {
        let Some(first) = j.content.as_ref().and_then(|c| c.ambiguities.first()) else {
            return Ok(());
        };
        let all = j
            .content
            .as_ref()
            .map(|c| c.ambiguities.join("; "))
            .unwrap_or_default();
        let action = self.config.mime.ambiguous;
        tracing::info!(
            queue_id = %j.id,
            problems = %all,
            action = ?action,
            "attachment readable in more than one way"
        );
        let reason = format!("an attachment readable in more than one way: {all}");
        match action {
            Ambiguous::Quarantine => {
                Err(kept(j.id, "mime.ambiguous", Outcome::Quarantined, reason))
            }
            Ambiguous::Reject | Ambiguous::Normalize => Err(Decision::refuse(
                "mime.ambiguous",
                Reply::new(
                    554,
                    "5.6.0",
                    format!(
                        "Message refused: an attachment can be read in more than one way ({})",
                        printable(first)
                    ),
                ),
                reason,
            )),
        }
    }

    /// `[mime] partial`: what becomes of a `message/partial` fragment.
    fn partial(&self, id: &str, at: &str) -> Decision {
        let reason = format!(
            "a message/partial fragment ({at}): only the recipient's program would see the whole"
        );
        tracing::info!(queue_id = %id, at = %at, action = ?self.config.mime.partial, "message/partial fragment");
        match self.config.mime.partial {
            Partial::Reject => Decision::refuse(
                "mime.partial",
                Reply::new(
                    554,
                    "5.6.0",
                    "Message refused: message/partial fragments are not accepted; send the message whole",
                ),
                reason,
            ),
            Partial::Quarantine => kept(id, "mime.partial", Outcome::Quarantined, reason),
        }
    }

    /// Attachments the engine could not fully look into (an encrypted archive, one
    /// nested past the limits) are not taken for clean: `[mime] unscannable` says
    /// what becomes of them, unless a rule already decided (an `accept` rule
    /// lets them through; a rule that strips them has done so).
    fn unscannable(&self, j: &mut Judging<'_>) -> Result<(), Decision> {
        let action = self.config.mime.unscannable;
        let (Some(content), Some(verdict)) = (&j.content, &mut j.verdict) else {
            return Ok(());
        };
        if verdict.decision != Final::Deliver {
            return Ok(());
        }
        for attachment in content.attachments.iter().filter(|a| a.external) {
            // A part whose content is fetched from elsewhere when it is opened:
            // nothing here can judge it.
            if !verdict.removals.iter().any(|r| r.cut == attachment.cut) {
                tracing::info!(queue_id = %j.id, attachment = %attachment.path(), "message/external-body removed");
                verdict.removals.push(Removal {
                    cut: attachment.cut.clone(),
                    name: attachment.path(),
                    rule: "mime.external_body".into(),
                });
            }
        }
        if verdict.decided_by.is_some() {
            return Ok(());
        }
        for attachment in &content.attachments {
            let Some(why) = &attachment.unscannable else {
                continue;
            };
            if verdict.removals.iter().any(|r| r.cut == attachment.cut) {
                continue;
            }
            let name = attachment.path();
            tracing::info!(
                queue_id = %j.id,
                attachment = %name,
                reason = %why,
                action = ?action,
                "attachment could not be scanned"
            );
            let reason = format!("{name} could not be scanned: {why}");
            match action {
                Unscannable::Deliver => {}
                Unscannable::Strip => verdict.removals.push(Removal {
                    cut: attachment.cut.clone(),
                    name,
                    rule: "mime.unscannable".into(),
                }),
                Unscannable::Reject => {
                    return Err(Decision::refuse(
                        "mime.unscannable",
                        Reply::new(
                            554,
                            "5.7.1",
                            format!(
                                "Message refused: attachment {} could not be scanned",
                                printable(&name)
                            ),
                        ),
                        reason,
                    ));
                }
                Unscannable::Quarantine => {
                    return Err(kept(j.id, "mime.unscannable", Outcome::Quarantined, reason));
                }
            }
        }
        Ok(())
    }
}

/// A message kept back by a check: the client is told it was accepted.
fn kept(id: &str, check: &str, outcome: Outcome, reason: String) -> Decision {
    Decision {
        reply: Reply::new(250, "2.0.0", format!("Ok: queued as {id}")),
        by: DecidedBy::check(check),
        reason,
        outcome,
        archive: true,
    }
}

/// Text from a message, fit for a reply line: printable ASCII, not too long.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(160)
        .collect()
}

/// One line per scanned message: what each scanner said.
fn log_scan(id: &str, found: &crate::scanners::ScanFacts) {
    let score = found.spam.as_ref();
    tracing::info!(
        queue_id = %id,
        virus = found.virus.as_deref().unwrap_or(""),
        virus_error = found.virus_error.as_deref().unwrap_or(""),
        spam_score = score.map_or(String::new(), |s| format!("{:.2}", s.score)),
        spam_action = score.map_or("", |s| s.action.as_str()),
        spam_error = found.spam_error.as_deref().unwrap_or(""),
        "scanned"
    );
}

/// The refusal for a step that panicked: `451 4.3.0`, decided by check
/// `internal`, with the step and the panic's message for the log.
fn internal_error(step: Step, stage: Stage, panic: &Box<dyn std::any::Any + Send>) -> Decision {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic");
    tracing::error!(step = ?step, stage = stage.name(), panic = %what, "internal error in a check; the client is told to try again");
    Decision::refuse(
        "internal",
        Reply::new(451, "4.3.0", "Error: internal error; try again later"),
        format!("step {step:?} failed: {what}"),
    )
}

/// `452 4.3.1`: the spool has no room for the message.
fn no_room(why: crate::queue::room::NoRoom) -> Decision {
    Decision::refuse(
        "queue.free_space",
        Reply::new(452, "4.3.1", "Insufficient system storage; try again later"),
        why.to_string(),
    )
}

/// Does the sender authenticate for its own domain: SPF, a DKIM signature of
/// that domain, or DMARC? (What an allow entry needs before it spares the
/// spam score's action.)
fn sender_authenticated(j: &Judging<'_>) -> bool {
    let Some((_, domain)) = j.sender.rsplit_once('@') else {
        return false;
    };
    let facts = j.auth_facts();
    let spf_pass = j.spf.as_deref().is_some_and(|spf| {
        spf.result == crate::sender_auth::AuthResult::Pass
            && spf.domain().eq_ignore_ascii_case(domain)
    });
    spf_pass
        || facts.dmarc == crate::sender_auth::AuthResult::Pass
        || facts
            .dkim_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_step_that_panics_becomes_a_451_naming_it() {
        let step = async {
            let text = String::from("a bug");
            if !text.is_empty() {
                panic!("{text} in a check");
            }
            Ok::<Next, Decision>(Next::Continue)
        };
        let caught = std::panic::AssertUnwindSafe(step).catch_unwind().await;
        let decision = internal_error(Step::MimeStructure, Stage::Data, &caught.err().unwrap());
        assert_eq!(
            (decision.reply.code, decision.reply.status.as_str()),
            (451, "4.3.0")
        );
        assert_eq!(decision.by.to_string(), "internal");
        assert_eq!(
            decision.reason,
            "step MimeStructure failed: a bug in a check"
        );
    }
}
