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
mod evaluate;
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
use pattern::{FieldPatterns, PatternId};

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
    /// `true` or `false`: whether the engine could look into all of it.
    AttachmentUnscannable,
    /// `true` or `false`: whether it holds Office macros.
    AttachmentMacros,
    /// The virus clamd named.
    Virus,
    /// rspamd's action.
    SpamAction,
    /// A symbol rspamd found.
    SpamSymbol,
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
    /// rspamd's score is at least this.
    MinSpamScore(f64),
    /// A sender authentication result is one of these.
    Auth(AuthCheck, Vec<crate::sender_auth::AuthResult>),
    /// One of these domains signed with a passing DKIM signature.
    DkimDomain(Vec<String>),
    DmarcPolicy(Vec<crate::sender_auth::DmarcPolicy>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthCheck {
    Spf,
    Dkim,
    Dmarc,
    Arc,
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
    /// SPF (from MAIL on), DKIM, DMARC, ARC (at DATA).
    pub auth: crate::sender_auth::AuthFacts,
    /// What clamd and rspamd said (at DATA, when they were asked).
    pub scan: Option<&'a crate::scanners::ScanFacts>,
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
            auth: Default::default(),
            scan: None,
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
    /// The message rewritten to one reading (`[mime] ambiguous = "normalize"`):
    /// what was judged, and what the edits apply to.
    pub normalized: Option<Vec<u8>>,
    /// What sender authentication found (inbound mail), for the
    /// Authentication-Results header and an ARC seal.
    pub authentication: Option<crate::sender_auth::Authentication>,
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
            normalized: None,
            authentication: None,
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
        !self.header_edits.is_empty() || !self.removals.is_empty() || self.normalized.is_some()
    }

    /// The message as it is to be delivered: `raw` (or its normalized form) with
    /// the rules' edits.
    pub fn apply(&self, raw: &[u8]) -> Vec<u8> {
        let raw = self.normalized.as_deref().unwrap_or(raw);
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
        summary(&self.matched)
    }
}

/// The log's `rules` field: `name(action)` for each rule that matched,
/// `name(shadow:action)` for a shadow rule.
pub fn summary(matched: &[Matched]) -> String {
    crate::logging::list(matched.iter().map(|m| {
        if m.shadow {
            format!("{}(shadow:{})", m.rule, m.action)
        } else {
            format!("{}({})", m.rule, m.action)
        }
    }))
}

/// An early refusal at MAIL or RCPT: the decision, and the shadow rules that
/// matched on the way (they are logged too).
#[derive(Debug, Clone)]
pub struct Refused {
    pub decision: Decision,
    pub matched: Vec<Matched>,
}

/// A compiled set of rules.
pub struct RuleSet {
    rules: Vec<Rule>,
    fields: Vec<(FieldKey, FieldPatterns)>,
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
