//! Evaluating the rules on what is known at a stage: which patterns hit (every
//! pattern of a field in one pass), which rules could match, and what the
//! matching ones decide — early at MAIL and RCPT, in full at the end of DATA.

use super::pattern::{FieldPatterns, PatternId};
use super::*;
use crate::mime::edit::{HeaderEdit, Removal};

/// Hits of every pattern on one message.
#[derive(Debug, Default)]
struct Hits {
    message: Vec<PatternId>,
    recipients: Vec<Vec<PatternId>>,
    attachments: Vec<Vec<PatternId>>,
}

fn hit(hits: &[PatternId], ids: &[PatternId]) -> bool {
    ids.iter().any(|id| hits.binary_search(id).is_ok())
}

fn sorted(mut ids: Vec<PatternId>) -> Vec<PatternId> {
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
}

impl RuleSet {
    fn field(&self, key: &FieldKey) -> Option<&FieldPatterns> {
        self.fields
            .binary_search_by(|(k, _)| k.cmp(key))
            .ok()
            .map(|i| &self.fields[i].1)
    }

    fn hits(&self, facts: &Facts<'_>) -> Hits {
        let mut message = Vec::new();
        let single = [
            (FieldKey::ClientName, facts.client_name.unwrap_or("")),
            (FieldKey::Helo, facts.helo),
            (FieldKey::Sender, facts.sender),
            (FieldKey::SenderDomain, domain_of(facts.sender)),
        ];
        for (key, value) in single {
            if !value.is_empty()
                && let Some(field) = self.field(&key)
            {
                field.matches(value, &mut message);
            }
        }
        if let Some(scan) = facts.scan {
            let scanned = [
                (FieldKey::Virus, scan.virus.as_deref()),
                (
                    FieldKey::SpamAction,
                    scan.spam.as_ref().map(|s| s.action.as_str()),
                ),
            ];
            for (key, value) in scanned {
                if let (Some(value), Some(field)) = (value, self.field(&key)) {
                    field.matches(value, &mut message);
                }
            }
            if let Some(field) = self.field(&FieldKey::SpamSymbol) {
                for symbol in scan.spam_symbols() {
                    field.matches(symbol, &mut message);
                }
            }
        }
        let mut attachments = Vec::new();
        if let Some(content) = facts.content {
            if let Some(field) = self.field(&FieldKey::Subject) {
                field.matches(&content.subject, &mut message);
            }
            if let Some(field) = self.field(&FieldKey::Body) {
                field.matches(&content.body_text, &mut message);
            }
            for (key, field) in &self.fields {
                if let FieldKey::Header(name) = key {
                    for value in content.header(name) {
                        field.matches(value, &mut message);
                    }
                }
            }
            for attachment in &content.attachments {
                let mut ids = Vec::new();
                if let Some(field) = self.field(&FieldKey::AttachmentName) {
                    for name in &attachment.names {
                        field.matches(name, &mut ids);
                    }
                }
                if let Some(field) = self.field(&FieldKey::AttachmentExtension) {
                    for ext in attachment.extensions() {
                        field.matches(&ext, &mut ids);
                    }
                }
                if let Some(field) = self.field(&FieldKey::AttachmentType) {
                    field.matches(&attachment.declared_type, &mut ids);
                }
                if let (Some(field), Some(magic)) =
                    (self.field(&FieldKey::AttachmentMagic), attachment.sniffed)
                {
                    field.matches(magic, &mut ids);
                }
                let flags = [
                    (
                        FieldKey::AttachmentUnscannable,
                        attachment.unscannable.is_some(),
                    ),
                    (FieldKey::AttachmentMacros, attachment.macros),
                ];
                for (key, flag) in flags {
                    if let Some(field) = self.field(&key) {
                        field.matches(if flag { "true" } else { "false" }, &mut ids);
                    }
                }
                attachments.push(sorted(ids));
            }
        }
        let recipients = facts
            .recipients
            .iter()
            .map(|rcpt| {
                let mut ids = Vec::new();
                if let Some(field) = self.field(&FieldKey::Recipient) {
                    field.matches(rcpt, &mut ids);
                }
                if let Some(field) = self.field(&FieldKey::RecipientDomain) {
                    field.matches(domain_of(rcpt), &mut ids);
                }
                sorted(ids)
            })
            .collect();
        Hits {
            message: sorted(message),
            recipients,
            attachments,
        }
    }

    /// The rules that could match, in order.
    fn candidates(&self, hits: &Hits) -> Vec<u32> {
        let mut out = self.ungated.clone();
        let all = hits
            .message
            .iter()
            .chain(hits.recipients.iter().flatten())
            .chain(hits.attachments.iter().flatten());
        for &id in all {
            out.extend_from_slice(&self.gates[id as usize]);
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Does a rule match? Returns the recipients and attachments it matched.
    fn matches(
        &self,
        rule: &Rule,
        facts: &Facts<'_>,
        hits: &Hits,
    ) -> Option<(Vec<usize>, Vec<usize>)> {
        let holds = |cond: &Cond| match cond {
            Cond::ClientIp(nets) => nets.iter().any(|n| n.contains(&facts.client_ip)),
            Cond::Authenticated(want) => facts.authenticated == *want,
            Cond::Trusted(want) => facts.trusted == *want,
            Cond::NullSender(want) => facts.sender.is_empty() == *want,
            Cond::MinRecipients(n) => facts.recipients.len() >= *n,
            Cond::MaxRecipients(n) => facts.recipients.len() <= *n,
            Cond::MinSize(n) => facts.size >= *n,
            Cond::MaxSize(n) => facts.size <= *n,
            Cond::Message(ids) => hit(&hits.message, ids),
            Cond::MinSpamScore(min) => facts
                .scan
                .and_then(|s| s.spam.as_ref())
                .is_some_and(|s| s.score >= *min),
            Cond::Auth(check, wanted) => {
                let auth = &facts.auth;
                let value = match check {
                    AuthCheck::Spf => auth.spf,
                    AuthCheck::Dkim => auth.dkim,
                    AuthCheck::Dmarc => auth.dmarc,
                    AuthCheck::Arc => auth.arc,
                };
                wanted.contains(&value)
            }
            Cond::DkimDomain(domains) => facts.auth.dkim_domains.iter().any(|signed| {
                domains.iter().any(|d| match d.strip_prefix("*.") {
                    Some(parent) => signed == parent || signed.ends_with(&format!(".{parent}")),
                    None => signed == d,
                })
            }),
            Cond::DmarcPolicy(wanted) => {
                facts.auth.dmarc_policy.is_some_and(|p| wanted.contains(&p))
            }
        };
        if !rule.when.simple.iter().all(holds) {
            return None;
        }
        let all_of =
            |item: &[PatternId], groups: &[Vec<PatternId>]| groups.iter().all(|ids| hit(item, ids));
        let recipients: Vec<usize> = (0..facts.recipients.len())
            .filter(|&i| all_of(&hits.recipients[i], &rule.when.recipient))
            .collect();
        if !rule.when.recipient.is_empty() && recipients.is_empty() {
            return None;
        }
        let attachments: Vec<usize> = (0..hits.attachments.len())
            .filter(|&i| {
                !rule.when.attachment.is_empty()
                    && all_of(&hits.attachments[i], &rule.when.attachment)
            })
            .collect();
        if !rule.when.attachment.is_empty() && attachments.is_empty() {
            return None;
        }
        // `unless`: each condition on its own; any that holds stops the rule.
        let unless = &rule.unless;
        if unless.simple.iter().any(holds)
            || unless
                .recipient
                .iter()
                .any(|ids| hits.recipients.iter().any(|r| hit(r, ids)))
            || unless
                .attachment
                .iter()
                .any(|ids| hits.attachments.iter().any(|a| hit(a, ids)))
        {
            return None;
        }
        Some((recipients, attachments))
    }

    /// At MAIL (no recipients) or RCPT (one recipient): a rule that can be decided
    /// now and refuses, unless an earlier rule could still decide otherwise.
    pub fn check_early(
        &self,
        stage: Stage,
        facts: &Facts<'_>,
    ) -> Result<Vec<Matched>, Box<Refused>> {
        let hits = self.hits(facts);
        let mut matched = Vec::new();
        let candidates = self.candidates(&hits);
        // A final rule that needs later facts comes first in order: nothing after
        // it may be decided early.
        let barrier = self
            .rules
            .iter()
            .position(|r| r.stage > stage && r.action.is_final() && !r.shadow)
            .unwrap_or(self.rules.len());
        for index in candidates {
            if index as usize >= barrier {
                break;
            }
            let rule = &self.rules[index as usize];
            if rule.stage > stage || self.matches(rule, facts, &hits).is_none() {
                continue;
            }
            let entry = Matched {
                rule: rule.name.clone(),
                action: rule.action.name(),
                shadow: rule.shadow,
                stage,
                detail: String::new(),
            };
            if rule.shadow {
                matched.push(entry);
                continue;
            }
            match &rule.action {
                Action::Reject(reply) | Action::Tempfail(reply) => {
                    matched.push(entry);
                    return Err(Box::new(Refused {
                        decision: Decision::refused_by_rule(
                            &rule.name,
                            reply.clone(),
                            rule.archive,
                        ),
                        matched,
                    }));
                }
                action if action.is_final() => break,
                _ => {}
            }
        }
        Ok(matched)
    }

    /// Judges a whole message: its content is analysed (with the configured
    /// limits) when a rule looks at it, then every rule runs in order, leaving out
    /// `skip`. The server, `test-rules` and release all judge a message here.
    pub fn judge_message(
        &self,
        facts: Facts<'_>,
        message: &[u8],
        limits: &Limits,
        skip: Option<&str>,
    ) -> Verdict {
        let content = self
            .needs_content()
            .then(|| Content::analyze(message, limits));
        self.judge_content(facts, message.len(), content.as_ref(), skip)
    }

    /// As [`RuleSet::judge_message`], with the message already analysed.
    pub fn judge_content(
        &self,
        facts: Facts<'_>,
        size: usize,
        content: Option<&Content>,
        skip: Option<&str>,
    ) -> Verdict {
        let facts = Facts {
            size,
            content,
            ..facts
        };
        self.evaluate_except(&facts, skip)
    }

    /// At the end of DATA: every rule, in order, on the whole message.
    pub fn evaluate(&self, facts: &Facts<'_>) -> Verdict {
        self.evaluate_except(facts, None)
    }

    /// As [`evaluate`], with one rule left out (a message released from the
    /// archive skips the rule that caught it, and only that one).
    pub fn evaluate_except(&self, facts: &Facts<'_>, skip: Option<&str>) -> Verdict {
        let hits = self.hits(facts);
        let mut verdict = Verdict {
            decision: Final::Deliver,
            decided_by: None,
            archive: true,
            matched: Vec::new(),
            sender: facts.sender.to_string(),
            recipients: Vec::new(),
            header_edits: Vec::new(),
            removals: Vec::new(),
            normalized: None,
            authentication: None,
        };
        // Per original recipient: what it becomes (redirects replace, rewrites map).
        let mut recipients: Vec<Vec<String>> =
            facts.recipients.iter().map(|r| vec![r.clone()]).collect();
        let mut copies: Vec<String> = Vec::new();
        for index in self.candidates(&hits) {
            let rule = &self.rules[index as usize];
            if skip == Some(rule.name.as_str()) {
                continue;
            }
            let Some((matched_rcpts, matched_atts)) = self.matches(rule, facts, &hits) else {
                continue;
            };
            let detail = describe(rule, facts, &matched_rcpts, &matched_atts);
            verdict.matched.push(Matched {
                rule: rule.name.clone(),
                action: rule.action.name(),
                shadow: rule.shadow,
                stage: Stage::Data,
                detail,
            });
            if rule.shadow {
                continue;
            }
            let final_outcome = match &rule.action {
                Action::Reject(reply) => Some(Final::Reject(reply.clone())),
                Action::Tempfail(reply) => Some(Final::Tempfail(reply.clone())),
                Action::Discard => Some(Final::Discard),
                Action::Quarantine => Some(Final::Quarantine),
                Action::Accept => Some(Final::Deliver),
                Action::Redirect(to) => {
                    for &i in &matched_rcpts {
                        recipients[i] = to.clone();
                    }
                    None
                }
                Action::CopyTo(to) => {
                    copies.extend(to.iter().cloned());
                    None
                }
                Action::Tag {
                    headers,
                    subject_prefix,
                } => {
                    for (name, value) in headers {
                        verdict
                            .header_edits
                            .push(HeaderEdit::Add(name.clone(), value.clone()));
                    }
                    if let Some(prefix) = subject_prefix {
                        verdict
                            .header_edits
                            .push(HeaderEdit::SubjectPrefix(prefix.clone()));
                    }
                    None
                }
                Action::Rewrite {
                    sender,
                    recipient,
                    set_header,
                    remove_header,
                } => {
                    if let Some(new) = sender.iter().find_map(|r| r.apply(&verdict.sender)) {
                        verdict.sender = new;
                    }
                    for &i in &matched_rcpts {
                        for address in recipients[i].iter_mut() {
                            if let Some(new) = recipient.iter().find_map(|r| r.apply(address)) {
                                *address = new;
                            }
                        }
                    }
                    for name in remove_header {
                        verdict
                            .header_edits
                            .push(HeaderEdit::Remove(name.to_lowercase()));
                    }
                    for (name, value) in set_header {
                        verdict
                            .header_edits
                            .push(HeaderEdit::Set(name.clone(), value.clone()));
                    }
                    None
                }
                Action::StripAttachments => {
                    if let Some(content) = facts.content {
                        for &i in &matched_atts {
                            let attachment = &content.attachments[i];
                            let name = attachment.path();
                            // Two rules may catch the same file: one cut, one note.
                            if verdict
                                .removals
                                .iter()
                                .all(|r| r.cut != attachment.cut || r.name != name)
                            {
                                verdict.removals.push(Removal {
                                    cut: attachment.cut.clone(),
                                    name,
                                    rule: rule.name.clone(),
                                });
                            }
                        }
                    }
                    None
                }
            };
            if let Some(decision) = final_outcome {
                verdict.decision = decision;
                verdict.decided_by = Some(rule.name.clone());
                verdict.archive = rule.archive;
                break;
            }
        }
        let mut all: Vec<String> = recipients.into_iter().flatten().chain(copies).collect();
        let mut seen = std::collections::HashSet::new();
        all.retain(|r| seen.insert(r.to_lowercase()));
        verdict.recipients = all;
        verdict
    }
}

/// What a matched rule does, in words.
fn describe(rule: &Rule, facts: &Facts<'_>, rcpts: &[usize], atts: &[usize]) -> String {
    match &rule.action {
        Action::Reject(reply) | Action::Tempfail(reply) => reply.to_string(),
        Action::Redirect(to) => {
            let from: Vec<&str> = rcpts
                .iter()
                .map(|&i| facts.recipients[i].as_str())
                .collect();
            format!("{} -> {}", from.join(", "), to.join(", "))
        }
        Action::CopyTo(to) => format!("copy to {}", to.join(", ")),
        Action::StripAttachments => {
            let names: Vec<String> = atts
                .iter()
                .filter_map(|&i| facts.content?.attachments.get(i))
                .map(|a| {
                    let name = a.names.first().cloned().unwrap_or_default();
                    match &a.inside {
                        Some(archive) => format!("{archive}/{name}"),
                        None => name,
                    }
                })
                .collect();
            format!("removes {}", names.join(", "))
        }
        _ => String::new(),
    }
}
