//! Rule files: the administrator's policy. Loaded from the rules folder in name
//! order, compiled once (all patterns of a field together), evaluated as early as
//! the SMTP dialogue allows, and reloaded without dropping a connection.
//!
//! Order of evaluation, as documented in `rules/README.md`: rules run in file-name
//! order, then in order within a file. Conditions always see the message as it
//! arrived. Non-final actions (redirect, copy_to, tag, rewrite, strip_attachments)
//! add up; the first final action (reject, tempfail, discard, quarantine, accept)
//! decides and ends the evaluation. Shadow rules are evaluated and logged only.

mod compile;
pub mod file;
pub mod pattern;
mod reload;

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

pub use compile::{Compiler, RuleError};
pub use reload::RulesHandle;

use crate::mime::edit::{HeaderEdit, Removal};
use crate::mime::{Content, Limits, extension};
use crate::reply::Reply;
use crate::verdict::{DecidedBy, Decision, Outcome, Peer};
use pattern::{Field, PatternId};

/// When a rule can be decided, from what it looks at: MAIL (client and sender
/// only), RCPT (recipients too) or DATA (the message).
pub use crate::verdict::Stage;

/// What a rule does.
#[derive(Debug, Clone)]
pub enum Action {
    Reject(Reply),
    Tempfail(Reply),
    /// Accept, deliver nowhere.
    Discard,
    /// Accept, hold for review.
    Quarantine,
    /// Stop here and deliver (an allow-list).
    Accept,
    /// Replace the matched recipients.
    Redirect(Vec<String>),
    CopyTo(Vec<String>),
    Tag {
        headers: Vec<(String, String)>,
        subject_prefix: Option<String>,
    },
    Rewrite {
        sender: Vec<Rewrite>,
        recipient: Vec<Rewrite>,
        set_header: Vec<(String, String)>,
        remove_header: Vec<String>,
    },
    StripAttachments,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Reject(_) => "reject",
            Action::Tempfail(_) => "tempfail",
            Action::Discard => "discard",
            Action::Quarantine => "quarantine",
            Action::Accept => "accept",
            Action::Redirect(_) => "redirect",
            Action::CopyTo(_) => "copy_to",
            Action::Tag { .. } => "tag",
            Action::Rewrite { .. } => "rewrite",
            Action::StripAttachments => "strip_attachments",
        }
    }

    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Action::Reject(_)
                | Action::Tempfail(_)
                | Action::Discard
                | Action::Quarantine
                | Action::Accept
        )
    }
}

/// An address map entry.
#[derive(Debug, Clone)]
pub enum Rewrite {
    /// Lower-case address → replacement.
    Exact(String, String),
    /// Regex with `$1` references in the replacement.
    Regex(regex::Regex, String),
}

impl Rewrite {
    fn apply(&self, address: &str) -> Option<String> {
        match self {
            Rewrite::Exact(from, to) => address.eq_ignore_ascii_case(from).then(|| to.clone()),
            Rewrite::Regex(regex, to) => regex
                .is_match(address)
                .then(|| regex.replace(address, to.as_str()).into_owned()),
        }
    }
}

/// The fields patterns apply to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldKey {
    ClientName,
    Helo,
    Sender,
    SenderDomain,
    Subject,
    Body,
    Header(String),
    Recipient,
    RecipientDomain,
    AttachmentName,
    AttachmentExtension,
    AttachmentType,
    AttachmentMagic,
}

#[derive(Debug, Clone)]
enum Cond {
    ClientIp(Vec<IpNet>),
    Authenticated(bool),
    Trusted(bool),
    NullSender(bool),
    MinRecipients(usize),
    MaxRecipients(usize),
    MinSize(usize),
    MaxSize(usize),
    /// Any of these patterns matched a message-level field.
    Message(Vec<PatternId>),
}

/// The compiled `when` or `unless` of a rule.
#[derive(Debug, Clone, Default)]
struct CondSet {
    simple: Vec<Cond>,
    /// Each entry: patterns of one recipient field; a recipient matches when it
    /// matches every entry.
    recipient: Vec<Vec<PatternId>>,
    /// The same for attachments.
    attachment: Vec<Vec<PatternId>>,
    /// Looks at the message (size, headers, body, attachments, recipient count).
    data_only: bool,
}

impl CondSet {
    fn stage(&self) -> Stage {
        if self.data_only {
            Stage::Data
        } else if !self.recipient.is_empty() {
            Stage::Rcpt
        } else {
            Stage::Mail
        }
    }

    fn uses_patterns(&self) -> bool {
        !self.recipient.is_empty()
            || !self.attachment.is_empty()
            || self.simple.iter().any(|c| matches!(c, Cond::Message(_)))
    }
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub description: String,
    pub shadow: bool,
    /// What it refuses or keeps back goes to the archive.
    pub archive: bool,
    pub stage: Stage,
    pub action: Action,
    /// Where it is written.
    pub file: String,
    pub line: usize,
    when: CondSet,
    unless: CondSet,
    /// Can match only when one of its `when` patterns matched.
    gated: bool,
}

/// What the rules know about a message at a given stage.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub client_ip: IpAddr,
    pub client_name: Option<&'a str>,
    pub helo: &'a str,
    pub authenticated: bool,
    pub trusted: bool,
    /// Empty for the null sender.
    pub sender: &'a str,
    /// At RCPT: the one recipient being judged.
    pub recipients: &'a [String],
    /// Message size in octets (DATA only).
    pub size: usize,
    pub content: Option<&'a Content>,
}

impl<'a> Facts<'a> {
    /// What the rules know before the message: the client, the sender and the
    /// recipients so far.
    pub fn of(peer: &'a Peer, sender: &'a str, recipients: &'a [String]) -> Facts<'a> {
        Facts {
            client_ip: peer.ip,
            client_name: peer.name.as_deref(),
            helo: peer.helo(),
            authenticated: peer.login.is_some(),
            trusted: peer.trusted,
            sender,
            recipients,
            size: 0,
            content: None,
        }
    }
}

/// A rule that matched.
#[derive(Debug, Clone)]
pub struct Matched {
    pub rule: String,
    pub action: &'static str,
    pub shadow: bool,
    pub stage: Stage,
    /// What it did (or would have done), for logs and `test-rules`.
    pub detail: String,
}

/// What the rules decided for a whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Final {
    Deliver,
    Reject(Reply),
    Tempfail(Reply),
    Discard,
    Quarantine,
}

/// The result of evaluating the rules on a whole message.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub decision: Final,
    /// The rule that made the final decision, if one did.
    pub decided_by: Option<String>,
    /// Whether the deciding rule wants its catches archived.
    pub archive: bool,
    pub matched: Vec<Matched>,
    pub sender: String,
    pub recipients: Vec<String>,
    pub header_edits: Vec<HeaderEdit>,
    pub removals: Vec<Removal>,
}

impl Verdict {
    /// Delivery as it came: what no rule changed.
    pub fn deliver(sender: &str, recipients: Vec<String>) -> Verdict {
        Verdict {
            decision: Final::Deliver,
            decided_by: None,
            archive: true,
            matched: Vec::new(),
            sender: sender.to_string(),
            recipients,
            header_edits: Vec::new(),
            removals: Vec::new(),
        }
    }

    /// The decision in the shared vocabulary, when a final rule decided anything but
    /// plain delivery. `accepted` is the reply a discarded or quarantined message's
    /// client gets: the one any accepted message gets.
    pub fn decided(&self, accepted: &Reply) -> Option<Decision> {
        let rule = self.decided_by.as_deref().unwrap_or_default();
        let kept = |outcome: Outcome| Decision {
            reply: accepted.clone(),
            by: DecidedBy::Rule(rule.to_string()),
            reason: format!("{outcome} by rule"),
            outcome,
            archive: self.archive,
        };
        match &self.decision {
            Final::Deliver => None,
            Final::Reject(reply) | Final::Tempfail(reply) => {
                Some(Decision::refused_by_rule(rule, reply.clone(), self.archive))
            }
            Final::Discard => Some(kept(Outcome::Discarded)),
            Final::Quarantine => Some(kept(Outcome::Quarantined)),
        }
    }

    /// Whether delivering needs a changed message.
    pub fn changes_message(&self) -> bool {
        !self.header_edits.is_empty() || !self.removals.is_empty()
    }

    /// The message as it is to be delivered.
    pub fn apply(&self, raw: &[u8]) -> Vec<u8> {
        let stripped;
        let raw = if self.removals.is_empty() {
            raw
        } else {
            stripped = crate::mime::edit::strip(raw, &self.removals);
            &stripped
        };
        if self.header_edits.is_empty() {
            raw.to_vec()
        } else {
            crate::mime::edit::edit_headers(raw, &self.header_edits)
        }
    }

    /// One line naming every rule that matched and the decision.
    pub fn summary(&self) -> String {
        let rules: Vec<String> = self
            .matched
            .iter()
            .map(|m| {
                if m.shadow {
                    format!("{}(shadow:{})", m.rule, m.action)
                } else {
                    format!("{}({})", m.rule, m.action)
                }
            })
            .collect();
        rules.join(",")
    }
}

/// An early refusal at MAIL or RCPT: the decision, and the shadow rules that
/// matched on the way (they are logged too).
#[derive(Debug, Clone)]
pub struct Refused {
    pub decision: Decision,
    pub matched: Vec<Matched>,
}

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

/// A compiled set of rules.
pub struct RuleSet {
    rules: Vec<Rule>,
    fields: Vec<(FieldKey, Field)>,
    /// Pattern → rules whose `when` uses it.
    gates: Vec<Vec<u32>>,
    /// Rules evaluated for every message (no patterns in `when`).
    ungated: Vec<u32>,
    pattern_count: usize,
    /// Some rule looks at the message itself, so it must be parsed.
    needs_content: bool,
}

impl RuleSet {
    pub fn empty() -> RuleSet {
        Compiler::default().finish().expect("no rules compile")
    }

    /// Loads every `*.toml` file of a folder, in name order. A missing folder is an
    /// empty rule set.
    pub fn load_dir(dir: &Path) -> Result<RuleSet, RuleError> {
        let mut compiler = Compiler::default();
        for path in rule_files(dir)
            .map_err(|e| RuleError::new(dir, None, format!("cannot read the rules folder: {e}")))?
        {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| RuleError::new(&path, None, format!("cannot read: {e}")))?;
            compiler.add_file(&path, &text)?;
        }
        compiler.finish()
    }

    /// Compiles rules from text (tests, benchmarks).
    pub fn from_text(name: &str, text: &str) -> Result<RuleSet, RuleError> {
        let mut compiler = Compiler::default();
        compiler.add_file(Path::new(name), text)?;
        compiler.finish()
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn needs_content(&self) -> bool {
        self.needs_content
    }

    pub fn pattern_count(&self) -> usize {
        self.pattern_count
    }

    fn field(&self, key: &FieldKey) -> Option<&Field> {
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
        let facts = Facts {
            size: message.len(),
            content: content.as_ref(),
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
                            let name = match (&attachment.inside, attachment.names.first()) {
                                (Some(archive), Some(name)) => format!("{archive}/{name}"),
                                (None, Some(name)) => name.clone(),
                                (_, None) => "unnamed attachment".into(),
                            };
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

/// The rule files of a folder, in name order.
pub fn rule_files(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut files: Vec<std::path::PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("toml") && p.is_file())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    files.sort();
    Ok(files)
}

/// Extension of an attachment name, for rules (re-exported for tests).
pub fn attachment_extension(name: &str) -> Option<String> {
    extension(name)
}

#[cfg(test)]
mod tests;
