//! From rule files to a [`RuleSet`]: checks every rule and compiles all patterns of
//! a field together. Errors name the file, the line, the rule and what to write.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use toml::Spanned;

use super::file::{Conditions, Mode, OneOrMany, RuleFile, RuleSpec};
use super::pattern::{self, FieldPatternsBuilder, PatternId, Plain};
use super::{Action, AuthCheck, Cond, CondSet, FieldKey, Rewrite, Rule, RuleSet, Stage};
use crate::reply::Reply;
use crate::sender_auth::{AuthResult, DmarcPolicy};

/// A rule file error, with where it is and what to do.
pub type RuleError = crate::file_error::FileError;

/// Collects rules from files, then builds the set.
#[derive(Default)]
pub struct Compiler {
    rules: Vec<Rule>,
    fields: HashMap<FieldKey, FieldPatternsBuilder>,
    next_id: PatternId,
    /// For each pattern, the rules whose `when` uses it.
    gates: Vec<Vec<u32>>,
}

/// Where in which file the compiler is, for errors.
struct Place<'a> {
    file: &'a str,
    text: &'a str,
    rule: &'a str,
}

impl Place<'_> {
    fn error(&self, offset: usize, message: impl Into<String>) -> RuleError {
        RuleError::new(
            std::path::Path::new(self.file),
            Some(crate::file_error::line_of(self.text, offset)),
            format!("rule '{}': {}", self.rule, message.into()),
        )
    }
}

impl Compiler {
    /// Adds the rules of one file (`file` names it in errors).
    pub fn add_file(&mut self, file: &Path, text: &str) -> Result<(), RuleError> {
        let name = file.display().to_string();
        let parsed: RuleFile =
            toml::from_str(text).map_err(|e| RuleError::from_toml(file, text, &e))?;
        for spanned in parsed.rule {
            let start = spanned.span().start;
            let spec = spanned.into_inner();
            let rule_name = spec.name.clone();
            let place = Place {
                file: &name,
                text,
                rule: &rule_name,
            };
            if spec.name.trim().is_empty() {
                return Err(place.error(start, "give the rule a name"));
            }
            if let Some(other) = self.rules.iter().find(|r| r.name == spec.name) {
                return Err(place.error(
                    start,
                    format!(
                        "the name is already used in {}:{}; names must be unique",
                        other.file, other.line
                    ),
                ));
            }
            self.add_rule(spec, &place, start)?;
        }
        Ok(())
    }

    fn add_rule(
        &mut self,
        spec: RuleSpec,
        place: &Place<'_>,
        start: usize,
    ) -> Result<(), RuleError> {
        let index = self.rules.len() as u32;
        let action = action(&spec, place)?;
        let when = self.conditions(&spec.when, place, Some(index))?;
        let unless = self.conditions(&spec.unless, place, None)?;
        if spec.unless.any.is_some() {
            return Err(place.error(start, "unless.any means nothing; remove it"));
        }
        let uses_attachments = !when.attachment.is_empty();
        if matches!(action, Action::StripAttachments) && !uses_attachments {
            return Err(place.error(
                spec.action.span().start,
                "strip_attachments needs when.attachment_name, attachment_extension, attachment_type, attachment_magic, attachment_unscannable or attachment_macros to say which attachments",
            ));
        }
        let conditionless = when.simple.is_empty()
            && when.recipient.is_empty()
            && when.attachment.is_empty()
            && !when.data_only
            && unless.simple.is_empty()
            && unless.recipient.is_empty()
            && unless.attachment.is_empty()
            && !unless.data_only;
        if conditionless && spec.when.any != Some(true) {
            return Err(place.error(
                start,
                "no when. conditions, so it would apply to every message; give conditions, \
                 or write when.any = true if every message is meant",
            ));
        }
        let stage = when.stage().max(unless.stage());
        let line = place.text[..start.min(place.text.len())]
            .matches('\n')
            .count()
            + 1;
        self.rules.push(Rule {
            name: spec.name.clone(),
            description: spec.description.clone(),
            shadow: spec.mode == Mode::Shadow,
            archive: spec.archive.unwrap_or(true),
            stage,
            gated: when.uses_patterns(),
            when,
            unless,
            action,
            file: place.file.to_string(),
            line,
        });
        Ok(())
    }

    /// Compiles one `when` or `unless` table. `gate`: the rule to wake when one of
    /// these patterns matches (for `when` only).
    fn conditions(
        &mut self,
        c: &Conditions,
        place: &Place<'_>,
        gate: Option<u32>,
    ) -> Result<CondSet, RuleError> {
        let mut set = CondSet::default();
        if let Some(nets) = &c.client_ip {
            let mut parsed = Vec::new();
            for item in &strings(nets, place)? {
                let text = item.get_ref().trim();
                let net = text
                    .parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        place.error(
                            item.span().start,
                            format!("client_ip '{text}' is not an address or a CIDR network such as 192.0.2.0/24"),
                        )
                    })?;
                parsed.push(net);
            }
            set.simple.push(Cond::ClientIp(parsed));
        }
        let flags = [
            (c.authenticated, Cond::Authenticated as fn(bool) -> Cond),
            (c.trusted, Cond::Trusted),
            (c.null_sender, Cond::NullSender),
        ];
        for (value, make) in flags {
            if let Some(value) = value {
                set.simple.push(make(value));
            }
        }
        if let Some(n) = c.min_recipients {
            set.simple.push(Cond::MinRecipients(n));
        }
        if let Some(n) = c.max_recipients {
            set.simple.push(Cond::MaxRecipients(n));
        }
        if let Some(size) = &c.min_size {
            set.simple.push(Cond::MinSize(size.get_ref().0));
        }
        if let Some(size) = &c.max_size {
            set.simple.push(Cond::MaxSize(size.get_ref().0));
        }
        if let Some(score) = c.min_spam_score {
            set.simple.push(Cond::MinSpamScore(score));
        }
        let message_fields = [
            (&c.client_name, FieldKey::ClientName),
            (&c.helo, FieldKey::Helo),
            (&c.sender, FieldKey::Sender),
            (&c.sender_domain, FieldKey::SenderDomain),
            (&c.subject, FieldKey::Subject),
            (&c.body, FieldKey::Body),
            (&c.virus, FieldKey::Virus),
            (&c.spam_action, FieldKey::SpamAction),
            (&c.spam_symbol, FieldKey::SpamSymbol),
        ];
        for (patterns, key) in message_fields {
            if let Some(patterns) = patterns {
                let ids = self.patterns(key, patterns, place, gate)?;
                set.simple.push(Cond::Message(ids));
            }
        }
        if let Some(headers) = &c.header {
            for (name, patterns) in headers {
                let key = FieldKey::Header(name.to_lowercase());
                let ids = self.patterns(key, patterns, place, gate)?;
                set.simple.push(Cond::Message(ids));
            }
        }
        for (patterns, key) in [
            (&c.recipient, FieldKey::Recipient),
            (&c.recipient_domain, FieldKey::RecipientDomain),
        ] {
            if let Some(patterns) = patterns {
                let ids = self.patterns(key, patterns, place, gate)?;
                set.recipient.push(ids);
            }
        }
        let attachment_fields = [
            (&c.attachment_name, FieldKey::AttachmentName),
            (&c.attachment_extension, FieldKey::AttachmentExtension),
            (&c.attachment_type, FieldKey::AttachmentType),
            (&c.attachment_magic, FieldKey::AttachmentMagic),
        ];
        for (patterns, key) in attachment_fields {
            if let Some(patterns) = patterns {
                let ids = self.patterns(key, patterns, place, gate)?;
                set.attachment.push(ids);
            }
        }
        // A flag of each attachment, matched like a field whose value is
        // "true" or "false".
        for (flag, key) in [
            (&c.attachment_unscannable, FieldKey::AttachmentUnscannable),
            (&c.attachment_macros, FieldKey::AttachmentMacros),
        ] {
            if let Some(want) = flag {
                let value = OneOrMany::from_string(want.span(), want.get_ref().to_string());
                let ids = self.patterns(key, &value, place, gate)?;
                set.attachment.push(ids);
            }
        }
        let auth_checks = [
            (&c.spf, AuthCheck::Spf, "spf"),
            (&c.dkim, AuthCheck::Dkim, "dkim"),
            (&c.dmarc, AuthCheck::Dmarc, "dmarc"),
            (&c.arc, AuthCheck::Arc, "arc"),
        ];
        for (values, check, name) in auth_checks {
            let Some(values) = values else { continue };
            let mut wanted = Vec::new();
            for item in strings(values, place)? {
                let result = AuthResult::parse(item.get_ref()).ok_or_else(|| {
                    place.error(
                        item.span().start,
                        format!(
                            "{name} '{}' is not a result; write one of pass, fail, softfail, neutral, none, temperror, permerror",
                            item.get_ref()
                        ),
                    )
                })?;
                wanted.push(result);
            }
            set.simple.push(Cond::Auth(check, wanted));
        }
        if let Some(values) = &c.dkim_domain {
            let domains = strings(values, place)?
                .into_iter()
                .map(|d| {
                    d.get_ref()
                        .trim()
                        .trim_end_matches('.')
                        .to_ascii_lowercase()
                })
                .collect();
            set.simple.push(Cond::DkimDomain(domains));
        }
        if let Some(values) = &c.dmarc_policy {
            let mut wanted = Vec::new();
            for item in strings(values, place)? {
                wanted.push(DmarcPolicy::parse(item.get_ref()).ok_or_else(|| {
                    place.error(
                        item.span().start,
                        format!(
                            "dmarc_policy '{}' is not a policy; write none, quarantine or reject",
                            item.get_ref()
                        ),
                    )
                })?);
            }
            set.simple.push(Cond::DmarcPolicy(wanted));
        }
        // SPF is known at MAIL; the rest only once the message is there.
        let message_auth = c.virus.is_some()
            || c.min_spam_score.is_some()
            || c.spam_action.is_some()
            || c.spam_symbol.is_some()
            || c.dkim.is_some()
            || c.dmarc.is_some()
            || c.arc.is_some()
            || c.dkim_domain.is_some()
            || c.dmarc_policy.is_some();
        set.data_only = message_auth
            || c.min_recipients.is_some()
            || c.max_recipients.is_some()
            || c.min_size.is_some()
            || c.max_size.is_some()
            || c.header.is_some()
            || c.subject.is_some()
            || c.body.is_some()
            || !set.attachment.is_empty();
        Ok(set)
    }

    fn patterns(
        &mut self,
        key: FieldKey,
        patterns: &OneOrMany,
        place: &Place<'_>,
        gate: Option<u32>,
    ) -> Result<Vec<PatternId>, RuleError> {
        let mut ids = Vec::new();
        for item in &strings(patterns, place)? {
            let text = normalise(&key, item, place)?;
            let pattern = pattern::parse(&text, key.plain())
                .map_err(|e| place.error(item.span().start, format!("{}: {e}", key.label())))?;
            let id = self.next_id;
            self.next_id += 1;
            self.fields.entry(key.clone()).or_default().add(pattern, id);
            self.gates.push(gate.into_iter().collect());
            ids.push(id);
        }
        Ok(ids)
    }

    pub fn finish(self) -> Result<RuleSet, RuleError> {
        let mut fields = Vec::new();
        for (key, builder) in self.fields {
            let field = builder.build().map_err(|e| {
                RuleError::new(
                    std::path::Path::new("rules"),
                    None,
                    format!("{}: {e}", key.label()),
                )
            })?;
            fields.push((key, field));
        }
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        let ungated = (0..self.rules.len() as u32)
            .filter(|&i| !self.rules[i as usize].gated)
            .collect();
        Ok(RuleSet {
            needs_content: self.rules.iter().any(|r| r.stage == Stage::Data),
            rules: self.rules,
            fields,
            gates: self.gates,
            ungated,
            pattern_count: self.next_id as usize,
        })
    }
}

/// Field-specific clean-up: extensions lose their dot, magic names are checked.
fn normalise(
    key: &FieldKey,
    item: &Spanned<String>,
    place: &Place<'_>,
) -> Result<String, RuleError> {
    let text = item.get_ref().trim();
    match key {
        FieldKey::AttachmentExtension => Ok(text.trim_start_matches('.').to_lowercase()),
        FieldKey::AttachmentMagic => {
            let name = text.to_lowercase();
            if crate::filetype::known_types().any(|known| known == name) {
                Ok(name)
            } else {
                let known: Vec<&str> = crate::filetype::known_types().collect();
                Err(place.error(
                    item.span().start,
                    format!(
                        "attachment_magic '{text}' is not a known type; known: {}",
                        known.join(", ")
                    ),
                ))
            }
        }
        _ => Ok(text.to_string()),
    }
}

fn strings(value: &OneOrMany, place: &Place<'_>) -> Result<Vec<Spanned<String>>, RuleError> {
    value
        .strings()
        .map_err(|(at, message)| place.error(at, message))
}

fn reply(
    spec: &RuleSpec,
    place: &Place<'_>,
    class: u16,
    default: Reply,
) -> Result<Reply, RuleError> {
    let Some(text) = &spec.reply else {
        return Ok(default);
    };
    let at = text.span().start;
    let mut words = text.get_ref().trim().splitn(3, ' ');
    let code: u16 = words.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    let status = words.next().unwrap_or("");
    let rest = words.next().unwrap_or("").trim();
    let status_ok = status.split('.').count() == 3
        && status
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        && status.starts_with(&(class / 100).to_string());
    if code / 100 != class / 100 || !status_ok || rest.is_empty() {
        return Err(place.error(
            at,
            format!(
                "reply must be \"{class} {}.7.1 text\": a {}xx code, an enhanced status code of the same class, and text",
                class / 100,
                class / 100
            ),
        ));
    }
    Ok(Reply::new(code, status, rest))
}

fn action(spec: &RuleSpec, place: &Place<'_>) -> Result<Action, RuleError> {
    let at = spec.action.span().start;
    let addresses = |what: &str| -> Result<Vec<String>, RuleError> {
        let Some(to) = &spec.to else {
            return Err(place.error(at, format!("{what} needs to = [\"address@example.com\"]")));
        };
        let mut out = Vec::new();
        for item in &strings(to, place)? {
            match crate::address::Mailbox::parse(item.get_ref().trim()) {
                Ok(m) => out.push(m.to_string()),
                Err(e) => {
                    return Err(place.error(
                        item.span().start,
                        format!("to: '{}' is not an address ({e})", item.get_ref()),
                    ));
                }
            }
        }
        Ok(out)
    };
    let action = match spec.action.get_ref().as_str() {
        "reject" => Action::Reject(reply(
            spec,
            place,
            550,
            Reply::new(550, "5.7.1", "Message refused by policy"),
        )?),
        "tempfail" => Action::Tempfail(reply(
            spec,
            place,
            451,
            Reply::new(451, "4.7.1", "Try again later"),
        )?),
        "discard" => Action::Discard,
        "quarantine" => Action::Quarantine,
        "accept" => Action::Accept,
        "redirect" => Action::Redirect(addresses("redirect")?),
        "copy_to" => Action::CopyTo(addresses("copy_to")?),
        "tag" => {
            let headers: Vec<(String, String)> = spec
                .add_header
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect();
            if headers.is_empty() && spec.subject_prefix.is_none() {
                return Err(place.error(at, "tag needs add_header = { \"X-Name\" = \"value\" } or subject_prefix = \"[TAG] \""));
            }
            Action::Tag {
                headers,
                subject_prefix: spec.subject_prefix.clone(),
            }
        }
        "rewrite" => {
            let rewrites =
                |list: &Option<Vec<super::file::RewriteSpec>>| -> Result<Vec<Rewrite>, RuleError> {
                    let mut out = Vec::new();
                    for item in list.iter().flatten() {
                        out.push(rewrite(item, place)?);
                    }
                    Ok(out)
                };
            let action = Action::Rewrite {
                sender: rewrites(&spec.sender)?,
                recipient: rewrites(&spec.recipient)?,
                set_header: spec
                    .set_header
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
                remove_header: spec.remove_header.clone().unwrap_or_default(),
            };
            if let Action::Rewrite {
                sender,
                recipient,
                set_header,
                remove_header,
            } = &action
                && sender.is_empty()
                && recipient.is_empty()
                && set_header.is_empty()
                && remove_header.is_empty()
            {
                return Err(place.error(at, "rewrite needs sender = [...], recipient = [...], set_header = {...} or remove_header = [...]"));
            }
            action
        }
        "strip_attachments" => Action::StripAttachments,
        other => {
            return Err(place.error(
                at,
                format!(
                    "unknown action '{other}'; use reject, tempfail, discard, quarantine, accept, redirect, copy_to, tag, rewrite or strip_attachments"
                ),
            ));
        }
    };
    // Parameters that belong to another action are mistakes worth reporting.
    let stray = [
        (
            "reply",
            spec.reply.is_some(),
            matches!(action, Action::Reject(_) | Action::Tempfail(_)),
        ),
        (
            "to",
            spec.to.is_some(),
            matches!(action, Action::Redirect(_) | Action::CopyTo(_)),
        ),
        (
            "add_header",
            spec.add_header.is_some(),
            matches!(action, Action::Tag { .. }),
        ),
        (
            "subject_prefix",
            spec.subject_prefix.is_some(),
            matches!(action, Action::Tag { .. }),
        ),
        (
            "sender",
            spec.sender.is_some(),
            matches!(action, Action::Rewrite { .. }),
        ),
        (
            "recipient",
            spec.recipient.is_some(),
            matches!(action, Action::Rewrite { .. }),
        ),
        (
            "set_header",
            spec.set_header.is_some(),
            matches!(action, Action::Rewrite { .. }),
        ),
        (
            "remove_header",
            spec.remove_header.is_some(),
            matches!(action, Action::Rewrite { .. }),
        ),
    ];
    if let Some((key, _, _)) = stray.iter().find(|(_, given, fits)| *given && !fits) {
        return Err(place.error(
            at,
            format!(
                "'{key}' does not belong to action '{}'",
                spec.action.get_ref()
            ),
        ));
    }
    Ok(action)
}

fn rewrite(spec: &super::file::RewriteSpec, place: &Place<'_>) -> Result<Rewrite, RuleError> {
    let from = spec.from.get_ref().trim();
    if from.len() >= 2 && from.starts_with('/') {
        let end = from.rfind('/').unwrap_or(0);
        let flags = &from[end + 1..];
        let body = &from[1..end.max(1)];
        let source = if flags == "i" {
            format!("(?i){body}")
        } else {
            body.to_string()
        };
        if end == 0 || !(flags.is_empty() || flags == "i") {
            return Err(place.error(
                spec.from.span().start,
                format!("from '{from}': write /regex/ or /regex/i"),
            ));
        }
        let regex = regex::Regex::new(&source).map_err(|e| {
            place.error(
                spec.from.span().start,
                format!("from '{from}' is not a valid regex: {e}"),
            )
        })?;
        Ok(Rewrite::Regex(regex, spec.to.clone()))
    } else {
        Ok(Rewrite::Exact(from.to_lowercase(), spec.to.clone()))
    }
}

impl FieldKey {
    fn plain(&self) -> Plain {
        match self {
            FieldKey::Subject | FieldKey::Body | FieldKey::Header(_) => Plain::Substring,
            _ => Plain::Exact,
        }
    }

    pub fn label(&self) -> String {
        match self {
            FieldKey::ClientName => "client_name".into(),
            FieldKey::Helo => "helo".into(),
            FieldKey::Sender => "sender".into(),
            FieldKey::SenderDomain => "sender_domain".into(),
            FieldKey::Subject => "subject".into(),
            FieldKey::Body => "body".into(),
            FieldKey::Header(name) => format!("header.{name}"),
            FieldKey::Recipient => "recipient".into(),
            FieldKey::RecipientDomain => "recipient_domain".into(),
            FieldKey::AttachmentName => "attachment_name".into(),
            FieldKey::AttachmentExtension => "attachment_extension".into(),
            FieldKey::AttachmentType => "attachment_type".into(),
            FieldKey::AttachmentMagic => "attachment_magic".into(),
            FieldKey::AttachmentUnscannable => "attachment_unscannable".into(),
            FieldKey::AttachmentMacros => "attachment_macros".into(),
            FieldKey::Virus => "virus".into(),
            FieldKey::SpamAction => "spam_action".into(),
            FieldKey::SpamSymbol => "spam_symbol".into(),
        }
    }
}
