//! A dry run of the rules on one message, stage by stage, as the SMTP dialogue
//! would ask them: what `mailmoat test-rules` prints and the rule fixtures check.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::{Facts, Matched, Outcome, Refusal, RuleSet, Stage, Verdict};
use crate::mime::{Content, Limits};

/// The message and its envelope, as a client would send them.
pub struct TrialInput<'a> {
    pub client_ip: IpAddr,
    pub client_name: Option<String>,
    pub helo: String,
    pub authenticated: bool,
    pub trusted: bool,
    pub sender: String,
    pub recipients: Vec<String>,
    pub message: &'a [u8],
    pub limits: Limits,
}

/// What the rules did at each stage.
pub struct Trial {
    pub mail: Result<Vec<Matched>, Refusal>,
    pub rcpt: Vec<(String, Result<Vec<Matched>, Refusal>)>,
    /// At the end of DATA; none when every recipient (or the sender) was refused.
    pub verdict: Option<Verdict>,
    /// The message as it would be delivered.
    pub delivered: Option<Vec<u8>>,
}

fn facts<'a>(input: &'a TrialInput<'_>, recipients: &'a [String]) -> Facts<'a> {
    Facts {
        client_ip: input.client_ip,
        client_name: input.client_name.as_deref(),
        helo: &input.helo,
        authenticated: input.authenticated,
        trusted: input.trusted,
        sender: &input.sender,
        recipients,
        size: 0,
        content: None,
    }
}

pub fn run(rules: &RuleSet, input: &TrialInput<'_>) -> Trial {
    let mail = rules.check_early(Stage::Mail, &facts(input, &[]));
    let mut trial = Trial {
        mail,
        rcpt: Vec::new(),
        verdict: None,
        delivered: None,
    };
    if trial.mail.is_err() {
        return trial;
    }
    let mut accepted = Vec::new();
    for rcpt in &input.recipients {
        let one = [rcpt.clone()];
        let result = rules.check_early(Stage::Rcpt, &facts(input, &one));
        if result.is_ok() {
            accepted.push(rcpt.clone());
        }
        trial.rcpt.push((rcpt.clone(), result));
    }
    if accepted.is_empty() {
        return trial;
    }
    let content = Content::analyze(input.message, &input.limits);
    let mut data = facts(input, &accepted);
    data.size = input.message.len();
    data.content = Some(&content);
    let verdict = rules.evaluate(&data);
    if matches!(verdict.outcome, Outcome::Deliver | Outcome::Quarantine) {
        trial.delivered = Some(verdict.apply(input.message));
    }
    trial.verdict = Some(verdict);
    trial
}

impl Trial {
    /// deliver, reject, tempfail, discard or quarantine.
    pub fn outcome(&self) -> &'static str {
        let refusal = |r: &Refusal| {
            if r.reply.code >= 500 {
                "reject"
            } else {
                "tempfail"
            }
        };
        if let Err(r) = &self.mail {
            return refusal(r);
        }
        match &self.verdict {
            Some(v) => match v.outcome {
                Outcome::Deliver => "deliver",
                Outcome::Reject(_) => "reject",
                Outcome::Tempfail(_) => "tempfail",
                Outcome::Discard => "discard",
                Outcome::Quarantine => "quarantine",
            },
            None => self
                .rcpt
                .iter()
                .find_map(|(_, r)| r.as_ref().err().map(refusal))
                .unwrap_or("reject"),
        }
    }

    /// Every rule that matched, at any stage.
    pub fn matched(&self) -> Vec<&Matched> {
        fn of(r: &Result<Vec<Matched>, Refusal>) -> &[Matched] {
            match r {
                Ok(m) => m,
                Err(refusal) => &refusal.matched,
            }
        }
        let mut all: Vec<&Matched> = of(&self.mail).iter().collect();
        for (_, r) in &self.rcpt {
            all.extend(of(r));
        }
        if let Some(v) = &self.verdict {
            all.extend(v.matched.iter());
        }
        all
    }

    /// The report `test-rules` prints.
    pub fn report(&self, input: &TrialInput<'_>) -> String {
        let mut out = String::new();
        let line = |out: &mut String, what: &str, r: &Result<Vec<Matched>, Refusal>| match r {
            Ok(_) => {
                let _ = writeln!(out, "{what:<40} accepted");
            }
            Err(refusal) => {
                let _ = writeln!(
                    out,
                    "{what:<40} refused by rule {}: {}",
                    refusal.rule, refusal.reply
                );
            }
        };
        line(
            &mut out,
            &format!("MAIL FROM:<{}>", input.sender),
            &self.mail,
        );
        for (rcpt, r) in &self.rcpt {
            line(&mut out, &format!("RCPT TO:<{rcpt}>"), r);
        }
        let matched = self.matched();
        if matched.is_empty() {
            let _ = writeln!(out, "rules matched: none");
        } else {
            let _ = writeln!(out, "rules matched:");
            for m in matched {
                let shadow = if m.shadow {
                    " (shadow: would have)"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "  {:<32} {:<5} {}{}{}",
                    m.rule,
                    m.stage.name(),
                    m.action,
                    shadow,
                    if m.detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", m.detail)
                    }
                );
            }
        }
        let _ = write!(out, "verdict: {}", self.outcome());
        if let Some(v) = &self.verdict {
            if let Some(rule) = &v.decided_by {
                let _ = write!(out, " (rule {rule})");
            }
            if matches!(v.outcome, Outcome::Reject(_) | Outcome::Tempfail(_)) {
                if let Outcome::Reject(reply) | Outcome::Tempfail(reply) = &v.outcome {
                    let _ = write!(out, ": {reply}");
                }
            } else {
                let _ = write!(
                    out,
                    "; sender <{}>; recipients: {}",
                    v.sender,
                    v.recipients.join(", ")
                );
                if !v.removals.is_empty() {
                    let _ = write!(out, "; {} attachment(s) removed", v.removals.len());
                }
                if !v.header_edits.is_empty() {
                    let _ = write!(out, "; {} header edit(s)", v.header_edits.len());
                }
            }
        }
        out.push('\n');
        out
    }
}
