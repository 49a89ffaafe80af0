//! A dry run of the whole pipeline on one message, stage by stage, as the SMTP
//! dialogue would ask it: what `mailmoat test-rules` prints and the rule fixtures
//! check. It is the server's own judging code with the configuration in force;
//! only the keeping (queue, archive, reports) is left out.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use super::{Judgement, Message, Patient, Pipeline};
use crate::address::Path;
use crate::config::Config;
use crate::reply::Reply;
use crate::rules::{Final, Matched, RuleSet, Verdict};
use crate::verdict::{Decision, Outcome, Peer};

/// The message and its envelope, as a client would send them.
pub struct TrialInput<'a> {
    pub client_ip: IpAddr,
    pub helo: String,
    /// As if the client had logged in with this account.
    pub login: Option<String>,
    pub sender: String,
    pub recipients: Vec<String>,
    pub message: &'a [u8],
}

/// What each stage decided.
pub struct Trial {
    pub peer: Peer,
    pub connect: Judgement<()>,
    pub helo: Option<Judgement<()>>,
    /// `None` when the sender syntax is wrong (the reply says why).
    pub mail: Option<Judgement<()>>,
    pub mail_syntax: Option<Reply>,
    pub rcpt: Vec<(String, Judgement<super::Recipient>)>,
    /// At the end of DATA; none when an earlier stage refused everything.
    pub data: Option<Judgement<Verdict>>,
    /// The message as it would be delivered.
    pub delivered: Option<Vec<u8>>,
}

impl Pipeline {
    /// The judging parts of a server with this configuration; nothing is kept.
    pub fn for_trial(config: Arc<Config>) -> anyhow::Result<Pipeline> {
        let dns = Arc::new(crate::dns::Dns::new(&config.dns)?);
        Pipeline::build(config, dns, None, crate::shared_state::SharedState::local())
    }

    /// The same, with these sender authentication results instead of DNS
    /// lookups (`test-rules --spf … --dmarc …`, a fixture's `[auth]`).
    pub fn for_trial_assuming(
        config: Arc<Config>,
        auth: crate::sender_auth::AuthFacts,
    ) -> anyhow::Result<Pipeline> {
        let dns = Arc::new(crate::dns::Dns::new(&config.dns)?);
        let sender_auth = crate::sender_auth::SenderAuth::assuming(&config, &dns, auth)?;
        let mut pipeline =
            Pipeline::build(config, dns, None, crate::shared_state::SharedState::local())?;
        pipeline.sender_auth = Some(sender_auth);
        Ok(pipeline)
    }
}

/// Runs every stage as the server would, with the same pipeline calls as a
/// session makes.
pub async fn run(pipeline: &Pipeline, rules: &RuleSet, input: &TrialInput<'_>) -> Trial {
    let unspecified = IpAddr::from([0, 0, 0, 0]);
    let mut peer = pipeline
        .peer(input.client_ip, unspecified, false, input.login.clone())
        .await;
    let connect = pipeline.connect(&peer, rules, &mut Patient).await;
    let mut trial = Trial {
        peer: peer.clone(),
        connect,
        helo: None,
        mail: None,
        mail_syntax: None,
        rcpt: Vec::new(),
        data: None,
        delivered: None,
    };
    if trial.connect.result.is_err() {
        return trial;
    }
    peer.helo = Some(input.helo.clone());
    trial.peer = peer.clone();
    let helo = pipeline.helo(&peer, rules).await;
    let refused = helo.result.is_err();
    trial.helo = Some(helo);
    if refused {
        return trial;
    }
    let sender = match Path::parse(&input.sender) {
        Ok(path) => path,
        Err(e) => {
            trial.mail_syntax = Some(Reply::new(
                501,
                "5.1.7",
                format!("<{}>: Bad sender address syntax ({e})", input.sender),
            ));
            return trial;
        }
    };
    let (mail, transaction) = pipeline
        .mail(&peer, rules, sender, super::MailParams::default())
        .await
        .split();
    trial.mail = Some(mail);
    let Some(mut transaction) = transaction else {
        return trial;
    };
    for raw in &input.recipients {
        let judged = pipeline.rcpt(&peer, rules, &mut transaction, raw).await;
        trial.rcpt.push((raw.clone(), judged));
    }
    if !transaction.recipients.is_empty() {
        let message = Message {
            id: "trial".into(),
            bytes: input.message.to_vec(),
            trace_len: 0,
            room: Default::default(),
        };
        let data = pipeline
            .data(&peer, rules, &mut transaction, &message)
            .await;
        if let Ok(verdict) = &data.result
            && matches!(verdict.decision, Final::Deliver | Final::Quarantine)
        {
            trial.delivered = Some(verdict.apply(input.message));
        }
        trial.data = Some(data);
    }
    // A trial logs nothing: its shadow rules are in its report.
    transaction.shadow.discard();
    trial
}

impl Trial {
    /// The refusal that ended the dialogue before DATA, if one did.
    fn refusal_before_data(&self) -> Option<&Decision> {
        let early = [Some(&self.connect), self.helo.as_ref()];
        early
            .into_iter()
            .flatten()
            .find_map(|j| j.result.as_ref().err())
            .or_else(|| self.mail.as_ref().and_then(|j| j.result.as_ref().err()))
            .or_else(|| {
                self.data
                    .is_none()
                    .then(|| self.rcpt.iter().find_map(|(_, j)| j.result.as_ref().err()))
                    .flatten()
            })
    }

    /// What would become of the message.
    pub fn outcome(&self) -> Outcome {
        if self.mail_syntax.is_some() {
            return Outcome::Rejected;
        }
        if let Some(decision) = self.refusal_before_data() {
            return decision.outcome;
        }
        match self.data.as_ref().map(|d| &d.result) {
            Some(Ok(verdict)) => verdict
                .decided(&Reply::new(250, "2.0.0", "Ok"))
                .map_or(Outcome::Queued, |d| d.outcome),
            Some(Err(decision)) => decision.outcome,
            None => Outcome::Rejected,
        }
    }

    /// Every rule that matched, at any stage.
    pub fn matched(&self) -> Vec<&Matched> {
        let mut all: Vec<&Matched> = Vec::new();
        for judged in [Some(&self.connect), self.helo.as_ref()]
            .into_iter()
            .flatten()
        {
            all.extend(judged.matched.iter());
        }
        if let Some(mail) = &self.mail {
            all.extend(mail.matched.iter());
        }
        for (_, judged) in &self.rcpt {
            all.extend(judged.matched.iter());
        }
        if let Some(data) = &self.data {
            all.extend(data.matched.iter());
        }
        all
    }

    /// The reply the server gives at each step of the dialogue, as `test-rules`
    /// prints it and the fixtures compare it with a running server.
    pub fn replies(&self, input: &TrialInput<'_>) -> Vec<(String, Reply)> {
        let ok = |code, status: &str| Reply::new(code, status, "Ok");
        let answer = |result: Result<Reply, &Decision>| match result {
            Ok(reply) => reply,
            Err(decision) => decision.reply.clone(),
        };
        let mut out = Vec::new();
        out.push((
            format!("CONNECT [{}]", self.peer.ip),
            answer(
                self.connect
                    .result
                    .as_ref()
                    .map(|()| Reply::plain(220, vec!["banner".into()])),
            ),
        ));
        if let Some(helo) = &self.helo {
            out.push((
                format!("EHLO {}", input.helo),
                answer(helo.result.as_ref().map(|()| ok(250, ""))),
            ));
        }
        let mail = format!("MAIL FROM:<{}>", input.sender);
        if let Some(reply) = &self.mail_syntax {
            out.push((mail, reply.clone()));
        } else if let Some(judged) = &self.mail {
            out.push((
                mail,
                answer(judged.result.as_ref().map(|_| ok(250, "2.1.0"))),
            ));
        }
        for (raw, judged) in &self.rcpt {
            out.push((
                format!("RCPT TO:<{raw}>"),
                answer(judged.result.as_ref().map(|_| ok(250, "2.1.5"))),
            ));
        }
        if let Some(data) = &self.data {
            let reply = match &data.result {
                Ok(verdict) => verdict
                    .decided(&ok(250, "2.0.0"))
                    .map_or(ok(250, "2.0.0"), |d| d.reply),
                Err(decision) => decision.reply.clone(),
            };
            out.push(("end of DATA".into(), reply));
        }
        out
    }

    /// The report `test-rules` prints.
    pub fn report(&self, input: &TrialInput<'_>) -> String {
        let mut out = String::new();
        let decisions = self.decisions();
        for ((what, reply), decided) in self.replies(input).into_iter().zip(decisions) {
            match decided {
                None => {
                    let _ = writeln!(out, "{what:<40} accepted");
                }
                Some(decision) => {
                    let _ = writeln!(
                        out,
                        "{what:<40} refused by {}: {reply}",
                        decision.by.describe()
                    );
                }
            }
        }
        if let Some(auth) = self
            .data
            .as_ref()
            .and_then(|d| d.result.as_ref().ok())
            .and_then(|v| v.authentication.as_ref())
        {
            let facts = &auth.facts;
            let _ = writeln!(
                out,
                "sender authentication: spf={} dkim={} dmarc={} arc={}{}{}",
                facts.spf.name(),
                facts.dkim.name(),
                facts.dmarc.name(),
                facts.arc.name(),
                facts
                    .dmarc_policy
                    .map(|p| format!(" dmarc_policy={}", p.name()))
                    .unwrap_or_default(),
                if facts.dkim_domains.is_empty() {
                    String::new()
                } else {
                    format!(" dkim_domain={}", facts.dkim_domains.join(","))
                }
            );
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
        if let Some(Ok(v)) = self.data.as_ref().map(|d| &d.result) {
            if let Some(rule) = &v.decided_by {
                let _ = write!(out, " (rule {rule})");
            }
            if let Final::Reject(reply) | Final::Tempfail(reply) = &v.decision {
                let _ = write!(out, ": {reply}");
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
        } else if let Some(decision) = self
            .refusal_before_data()
            .or_else(|| self.data.as_ref().and_then(|d| d.result.as_ref().err()))
        {
            let _ = write!(out, " ({}): {}", decision.by.describe(), decision.reply);
        }
        out.push('\n');
        out
    }

    /// For each line of [`Trial::replies`], the decision that refused, if any.
    fn decisions(&self) -> Vec<Option<Decision>> {
        let mut out = vec![self.connect.result.as_ref().err().cloned()];
        if let Some(helo) = &self.helo {
            out.push(helo.result.as_ref().err().cloned());
        }
        if let Some(reply) = &self.mail_syntax {
            out.push(Some(Decision::refuse(
                "syntax",
                reply.clone(),
                "bad sender",
            )));
        } else if let Some(mail) = &self.mail {
            out.push(mail.result.as_ref().err().cloned());
        }
        for (_, judged) in &self.rcpt {
            out.push(judged.result.as_ref().err().cloned());
        }
        if let Some(data) = &self.data {
            out.push(match &data.result {
                Ok(verdict) => verdict
                    .decided(&Reply::new(250, "2.0.0", "Ok"))
                    .filter(|d| d.outcome.is_refusal()),
                Err(decision) => Some(decision.clone()),
            });
        }
        out
    }
}
