//! The judging pipeline. Every check is a named [`Step`]; each SMTP stage is one
//! ordered list of steps ([`CONNECT`], [`HELO`], [`MAIL`], [`RCPT`], [`DATA`]); each
//! step declares whom it [`Spares`]. A stage runs its steps in order and the first
//! step that refuses decides, as Postfix's `smtpd_*_restrictions` do.
//!
//! The session asks a stage for its judgement and speaks SMTP; `test-rules` runs
//! the same stages without keeping anything ([`trial`]). What a refusal leads to —
//! log line, archive copy, report, reply — is [`Pipeline::keep`], one path whatever
//! refused; what an accepted message leads to is [`Pipeline::finish`].
//!
//! Adding a check: write it in `policy/` (or as a rule condition), add a [`Step`],
//! say whom it spares, and place it in the lists below.
//!
//! This file stays whole: it is the precedence itself — the steps, whom each
//! spares and the stage lists — read together as the README's precedence is; what
//! a step does lives in `steps.rs`, what follows a decision in `keep.rs` and
//! `finish.rs`.

mod finish;
pub mod fixtures;
mod keep;
mod release;
mod steps;
mod transaction;
pub mod trial;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use keep::Kept;
pub use transaction::{MailParams, Message, Transaction};

use crate::address::Path;
use crate::config::Config;
use crate::policy::mailbomb::MailBomb;
use crate::policy::recipients::RecipientValidator;
use crate::policy::relay::Destination;
use crate::policy::reputation::Reputation;
use crate::rules::{Matched, RuleSet, Verdict};
use crate::sender_auth::{AuthFacts, Authentication, SenderAuth, SpfCheck};
use crate::services::Services;
use crate::verdict::{Decision, Peer, Stage};

/// The order of the checks, stage by stage (README, "Precedence"). A client that
/// may relay, logs in or is allow-listed is spared what each step says it spares.
///
/// At connect: the connection rate, the address and name deny lists, the DNS
/// blocklists when judged at connect, then whether the client talks before the
/// banner.
pub const CONNECT: &[Step] = &[
    Step::ConnectionRate,
    Step::ClientDeny,
    Step::ClientNameDeny,
    Step::Dnsbl,
    Step::Pregreet,
];

/// At HELO/EHLO: a name that claims to be this server.
pub const HELO: &[Step] = &[Step::HeloNotOurs];

/// At MAIL FROM: room on the spool for a message, a logged-in client's right
/// to the sender address, the sender deny list, the sender domain's existence,
/// its SPF result, the message rates, then the rules that can judge a sender.
pub const MAIL: &[Step] = &[
    Step::SpoolSpace,
    Step::SenderLogin,
    Step::SenderDeny,
    Step::SenderDomain,
    Step::Spf,
    Step::MessageRate,
    Step::Rules,
];

/// At RCPT TO: a signed release address, the relay decision, whether the
/// recipient exists, the sender lists of the recipient, the rules that can judge a recipient, the DNS blocklists
/// when judged at RCPT, the recipient rates, then greylisting (last, so that
/// what would be refused for good is refused at once).
pub const RCPT: &[Step] = &[
    Step::ReleaseAddress,
    Step::Relay,
    Step::Recipients,
    Step::SenderLists,
    Step::Rules,
    Step::Dnsbl,
    Step::RecipientRate,
    Step::Greylist,
];

/// At the end of DATA: the flood of identical bodies, a MIME structure that
/// readers could read in more than one way, DKIM, ARC and DMARC (and its
/// enforcement), the virus scan and spam score (both at once), the rules on the
/// whole message, what the scanners decide when no rule did, then attachments
/// the engine could not look into.
pub const DATA: &[Step] = &[
    Step::BodyFlood,
    Step::MimeStructure,
    Step::SenderAuth,
    Step::Scan,
    Step::Rules,
    Step::ScanDefaults,
    Step::Unscannable,
];

/// The steps of a stage.
pub fn steps(stage: Stage) -> &'static [Step] {
    match stage {
        Stage::Connect => CONNECT,
        Stage::Helo => HELO,
        Stage::Mail => MAIL,
        Stage::Rcpt => RCPT,
        Stage::Data => DATA,
    }
}

/// One named check. What each does is in [`steps`](self::steps) (`run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `[mailbomb] connections_per_minute` per client network.
    ConnectionRate,
    /// `[checks] client_deny_file`.
    ClientDeny,
    /// `[checks] client_name_deny_file`, on the confirmed reverse name.
    ClientNameDeny,
    /// `[checks] dnsbl`, at the stage `dnsbl_at` names; postmaster is let
    /// through at RCPT.
    Dnsbl,
    /// `[checks] greet_delay`: talking before the banner.
    Pregreet,
    /// `[checks] helo_not_ours`.
    HeloNotOurs,
    /// `[queue] min_free_space`: room on the spool for new mail.
    SpoolSpace,
    /// `[auth] restrict_senders`: a logged-in user sends as themselves.
    SenderLogin,
    /// `[checks] sender_deny_file`.
    SenderDeny,
    /// `[checks] sender_domain_exists`.
    SenderDomain,
    /// `[sender_auth] spf`: the sender's SPF result, for the rules and DMARC.
    Spf,
    /// `[greylist]`: a triplet's first attempt waits; postmaster is let through.
    Greylist,
    /// `[antivirus] clamd` and `[spam] rspamd`, asked at once; a scanner that
    /// cannot answer tempfails the message when its `on_error` says so.
    Scan,
    /// `[antivirus] on_virus` and rspamd's action, when no rule decided; the
    /// spam headers.
    ScanDefaults,
    /// `[sender_auth]` DKIM, ARC and DMARC, and `dmarc_enforce`.
    SenderAuth,
    /// `[mailbomb] messages_per_hour` and `messages_per_sender_per_hour`.
    MessageRate,
    /// `release+ID.SIG@hostname` from a client that may relay.
    ReleaseAddress,
    /// Hosted domain, or a client that may relay; routing tricks refused.
    Relay,
    /// `[recipients]`: the file, the backend callout or the directory.
    Recipients,
    /// The recipient's and the administrators' sender lists: a block refuses,
    /// an allow (for an SPF-authenticated sender) spares the DNS blocklists
    /// and greylisting for this recipient.
    SenderLists,
    /// `[mailbomb] recipients_per_hour` and `messages_per_recipient`.
    RecipientRate,
    /// `[mailbomb] identical_bodies`.
    BodyFlood,
    /// `[mime] ambiguous`: one reading of the MIME structure, or none.
    MimeStructure,
    /// `[mime] unscannable`: what the engine could not look into.
    Unscannable,
    /// The administrator's rule files, at the earliest stage each can decide.
    Rules,
}

/// Whom a step leaves alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spares {
    /// Every client meets it.
    Nobody,
    /// The client allow list, trusted networks and logged-in clients.
    Exempt,
    /// The client allow list; trusted networks and logged-in clients too unless
    /// `[mailbomb] exempt_trusted = false`.
    LimitsExempt,
}

impl Step {
    pub fn spares(self) -> Spares {
        match self {
            Step::ClientDeny
            | Step::ClientNameDeny
            | Step::Dnsbl
            | Step::Pregreet
            | Step::HeloNotOurs
            | Step::SenderDeny
            | Step::SenderDomain
            | Step::Spf
            | Step::Greylist
            | Step::SenderAuth => Spares::Exempt,
            Step::ConnectionRate | Step::MessageRate | Step::RecipientRate | Step::BodyFlood => {
                Spares::LimitsExempt
            }
            Step::SpoolSpace
            | Step::SenderLogin
            | Step::ReleaseAddress
            | Step::Relay
            | Step::Recipients
            | Step::SenderLists
            | Step::MimeStructure
            | Step::Unscannable
            | Step::Scan
            | Step::ScanDefaults
            | Step::Rules => Spares::Nobody,
        }
    }
}

impl Step {
    /// The check names this step decides with (what an archive record's
    /// `decided_by` says), so that a release can leave out the step that held a
    /// message. The rules decide with their own names.
    pub fn checks(self) -> &'static [&'static str] {
        match self {
            Step::ConnectionRate => &["mailbomb.connections"],
            Step::ClientDeny => &["lists.client_deny"],
            Step::ClientNameDeny => &["lists.client_name_deny"],
            Step::Dnsbl => &["dnsbl"],
            Step::Pregreet => &["pregreet"],
            Step::HeloNotOurs => &["helo"],
            Step::SpoolSpace => &["queue.free_space"],
            Step::SenderLogin => &["auth.sender_login"],
            Step::SenderDeny => &["lists.sender_deny"],
            Step::SenderDomain => &["sender_domain"],
            Step::Spf => &[],
            Step::MessageRate => &["mailbomb.messages", "mailbomb.sender"],
            Step::ReleaseAddress => &["release"],
            Step::Relay => &["relay"],
            Step::Recipients => &["recipients", "recipients.callout", "recipients.ldap"],
            Step::SenderLists => &["lists.recipient", "lists.global"],
            Step::RecipientRate => &["mailbomb.recipients", "mailbomb.mailbox"],
            Step::Greylist => &["greylist"],
            Step::BodyFlood => &["mailbomb.identical_bodies"],
            Step::MimeStructure => &["mime.ambiguous", "mime.partial"],
            Step::SenderAuth => &["dmarc"],
            Step::Scan | Step::ScanDefaults => &["antivirus", "spam"],
            Step::Unscannable => &["mime.unscannable"],
            Step::Rules => &[],
        }
    }
}

impl Spares {
    /// Does this spare the client?
    pub fn spares(self, peer: &Peer, config: &Config) -> bool {
        let own = peer.trusted || peer.login.is_some();
        match self {
            Spares::Nobody => false,
            Spares::Exempt => peer.allowed || own,
            Spares::LimitsExempt => peer.allowed || (own && config.mailbomb.exempt_trusted),
        }
    }
}

/// What the connect stage may ask of the connection itself.
pub trait Greeting: Send {
    /// Waits up to `wait` for the client to send anything before the banner;
    /// true when it did.
    fn talks_first(&mut self, wait: Duration) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
}

/// A client that waits its turn (for trials).
pub struct Patient;

impl Greeting for Patient {
    fn talks_first(&mut self, _: Duration) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async { false })
    }
}

/// A recipient that RCPT accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// Mail for it is delivered.
    Deliver(Destination),
    /// A signed release address: the archive item to release at the end of DATA.
    Release(String),
}

/// A stage's judgement: accepted with what it found, or the decision that refused;
/// and every rule that matched on the way (shadow rules included), for
/// `test-rules`.
pub struct Judgement<T> {
    pub result: Result<T, Decision>,
    pub matched: Vec<Matched>,
}

impl<T> Judgement<T> {
    /// The judgement alone, and what was found when it accepted.
    pub fn split(self) -> (Judgement<()>, Option<T>) {
        let (result, found) = match self.result {
            Ok(found) => (Ok(()), Some(found)),
            Err(decision) => (Err(decision), None),
        };
        (
            Judgement {
                result,
                matched: self.matched,
            },
            found,
        )
    }
}

/// Everything that judges, and where refusals and accepted mail go.
pub struct Pipeline {
    pub config: Arc<Config>,
    /// Who may relay, as the last reload left it.
    pub relay_networks: Arc<crate::policy::relay::RelayNetworks>,
    /// SPF, DKIM, DMARC and ARC; signing. None when all of it is off.
    pub sender_auth: Option<Arc<SenderAuth>>,
    pub reputation: Arc<Reputation>,
    pub mailbomb: Arc<MailBomb>,
    pub recipients: Arc<RecipientValidator>,
    pub greylist: Arc<crate::policy::greylist::Greylist>,
    /// The recipients' and the administrators' sender lists.
    pub lists: Arc<crate::policy::lists::SenderLists>,
    /// clamd and rspamd; None when neither is configured.
    pub scanners: Option<Arc<crate::scanners::Scanners>>,
    /// Where accepted and refused mail goes and what counts it; None in trials,
    /// which keep nothing.
    services: Option<Arc<Services>>,
}

/// What one stage's steps look at, and what they find out.
struct Judging<'a> {
    stage: Stage,
    peer: &'a Peer,
    rules: &'a RuleSet,
    /// The queue id, at DATA; for log lines.
    id: &'a str,
    /// From MAIL on; empty for the null sender.
    sender: &'a str,
    /// The sender's domain name (none for the null sender or an address literal).
    sender_domain: Option<&'a str>,
    /// At RCPT: the recipient as the client wrote it.
    recipient: &'a str,
    /// At DATA: the accepted recipients and the message as the client sent it.
    recipients: &'a [String],
    message: &'a [u8],
    /// The message rewritten to one reading, when it had more.
    normalized: Option<Vec<u8>>,
    /// What the message holds, once something needed to look.
    content: Option<crate::mime::Content>,
    greeting: Option<&'a mut dyn Greeting>,
    /// Found at RCPT.
    accepted: Option<Recipient>,
    /// Found at DATA.
    verdict: Option<Verdict>,
    matched: Vec<Matched>,
    /// SPF: checked at MAIL, kept in the transaction for RCPT and DATA.
    spf: Option<std::borrow::Cow<'a, SpfCheck>>,
    /// What a release leaves out: the check or rule that held the message.
    spared: Option<&'a Spared>,
    /// DKIM, ARC, DMARC: verified at DATA.
    authentication: Option<Authentication>,
    /// What clamd and rspamd said, at DATA.
    scan: Option<crate::scanners::ScanFacts>,
    /// At MAIL: the size the client declared (SIZE=), and the room on the spool
    /// reserved for it.
    declared_size: u64,
    room: Option<crate::memory::Reservation>,
    /// At RCPT: the recipient allows this (authenticated) sender.
    allow_listed: bool,
}

impl<'a> Judging<'a> {
    /// The message as it is judged: normalized, or as it came.
    fn judged_message(&self) -> &[u8] {
        self.normalized.as_deref().unwrap_or(self.message)
    }

    /// What the message holds, analysed once.
    fn content(&mut self, limits: &crate::mime::Limits) -> &crate::mime::Content {
        if self.content.is_none() {
            self.content = Some(crate::mime::Content::analyze(self.judged_message(), limits));
        }
        self.content.as_ref().expect("analysed above")
    }

    /// What the rules may know of the sender's authentication by now.
    fn auth_facts(&self) -> AuthFacts {
        match &self.authentication {
            Some(auth) => auth.facts.clone(),
            None => AuthFacts::of_spf(self.spf.as_deref()),
        }
    }

    fn new(stage: Stage, peer: &'a Peer, rules: &'a RuleSet) -> Self {
        Judging {
            stage,
            peer,
            rules,
            id: crate::verdict::NOQUEUE,
            sender: "",
            sender_domain: None,
            recipient: "",
            recipients: &[],
            message: &[],
            normalized: None,
            content: None,
            greeting: None,
            accepted: None,
            verdict: None,
            matched: Vec::new(),
            spf: None,
            spared: None,
            authentication: None,
            scan: None,
            declared_size: 0,
            room: None,
            allow_listed: false,
        }
    }
}

/// What a release leaves out of the judging: only what held the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spared {
    /// The steps that decide with this check's name (`mime.unscannable`).
    Check(String),
    /// One rule; the other rules judge as ever.
    Rule(String),
}

/// What a step says when it does not refuse.
enum Next {
    /// On to the next step.
    Continue,
    /// Accepted: the steps after it do not run (a release address is not a
    /// recipient for the later checks to judge).
    Accept,
}

impl Pipeline {
    /// The judging parts for a configuration: checks with their lists, limits,
    /// recipient validation (`callout_cache`: where callout answers are kept).
    /// Nothing is kept until [`Pipeline::keeping`] says where.
    pub fn build(
        config: Arc<Config>,
        dns: Arc<crate::dns::Dns>,
        store: Option<&crate::store::Store>,
        shared: Arc<crate::shared_state::SharedState>,
    ) -> anyhow::Result<Pipeline> {
        // A trial keeps nothing: its greylist is a store of its own, thrown away.
        let temporary;
        let store = match store {
            Some(store) => store,
            None => {
                temporary = crate::store::Store::temporary()?;
                &temporary
            }
        };
        let callout_cache = store.tree("recipient-callouts")?;
        let lists = Arc::new(crate::policy::lists::SenderLists::new(
            store.tree("sender-lists")?,
            shared.clone(),
        ));
        let greylist =
            crate::policy::greylist::Greylist::open(&config.greylist, store, shared.clone())?;
        let backend = crate::smtp_client::Target::from_backend(
            &config.backend,
            &config.backend.address,
            &config.server.hostname,
        )?;
        Ok(Pipeline {
            sender_auth: SenderAuth::new(&config, &dns)?,
            reputation: Arc::new(Reputation::new(&config, dns)?),
            mailbomb: Arc::new(MailBomb::new(&config.mailbomb, shared.clone())),
            recipients: Arc::new(RecipientValidator::new(
                config.clone(),
                backend,
                Some(callout_cache),
                shared,
                crate::directory::Directory::new(&config.ldap)?,
            )?),
            greylist: Arc::new(greylist),
            lists,
            scanners: crate::scanners::Scanners::new(&config).map(Arc::new),
            relay_networks: Arc::new(crate::policy::relay::RelayNetworks::new(&config.relay)),
            config,
            services: None,
        })
    }

    /// Where accepted and refused mail goes, and what counts it.
    pub fn keeping(self, services: Arc<Services>) -> Pipeline {
        Pipeline {
            services: Some(services),
            ..self
        }
    }

    /// The metrics decisions count into; none in trials.
    pub fn metrics(&self) -> Option<&Arc<crate::metrics::Metrics>> {
        self.services.as_deref().map(|s| &s.metrics)
    }

    fn archive(&self) -> Option<&Arc<crate::archive::Archive>> {
        self.services.as_deref().and_then(|s| s.archive.as_ref())
    }

    fn queue(&self) -> Option<&Arc<crate::queue::Queue>> {
        self.services.as_deref().map(|s| &s.queue)
    }

    /// Runs a stage's steps in order; the first refusal ends it.
    async fn run(&self, judging: &mut Judging<'_>) -> Result<(), Decision> {
        for &step in steps(judging.stage) {
            if step.spares().spares(judging.peer, &self.config) {
                continue;
            }
            if let Some(Spared::Check(check)) = judging.spared
                && step.checks().contains(&check.as_str())
            {
                continue;
            }
            match self.guarded_step(step, judging).await? {
                Next::Continue => {}
                Next::Accept => break,
            }
        }
        Ok(())
    }

    fn judged<T>(
        &self,
        judging: Judging<'_>,
        result: Result<(), Decision>,
        found: impl FnOnce(&mut Judging<'_>) -> T,
    ) -> Judgement<T> {
        let mut judging = judging;
        let result = result.map(|()| found(&mut judging));
        // Within a mail transaction the session logs them when it ends (with
        // the queue id, see ShadowLog); before one, now.
        if matches!(judging.stage, Stage::Connect | Stage::Helo) {
            log_shadow(crate::verdict::NOQUEUE, &judging.matched);
        }
        if let Some(metrics) = self.metrics() {
            for matched in judging.matched.iter().filter(|m| !m.shadow) {
                metrics.rule_matched(&matched.rule);
            }
        }
        Judgement {
            result,
            matched: judging.matched,
        }
    }

    /// Logs a decision and counts it.
    fn record(&self, event: &crate::verdict::Event<'_>) {
        event.log();
        if let Some(metrics) = self.metrics() {
            metrics.decision(event);
            if let Some(limit) = event
                .decided_by
                .filter(|_| event.outcome.is_refusal())
                .and_then(|by| self.mailbomb.limit_named(by.check_name()))
            {
                metrics.mailbomb_hit(limit);
            }
        }
    }

    /// Before the banner.
    pub async fn connect(
        &self,
        peer: &Peer,
        rules: &RuleSet,
        greeting: &mut dyn Greeting,
    ) -> Judgement<()> {
        let mut judging = Judging::new(Stage::Connect, peer, rules);
        judging.greeting = Some(greeting);
        let result = self.run(&mut judging).await;
        judging.greeting = None;
        self.judged(judging, result, |_| ())
    }

    /// At HELO or EHLO (the name is in `peer.helo`).
    pub async fn helo(&self, peer: &Peer, rules: &RuleSet) -> Judgement<()> {
        let mut judging = Judging::new(Stage::Helo, peer, rules);
        let result = self.run(&mut judging).await;
        self.judged(judging, result, |_| ())
    }

    /// At MAIL FROM: begins the transaction (with the sender's SPF check, when
    /// one is made, for the later stages).
    pub async fn mail(
        &self,
        peer: &Peer,
        rules: &RuleSet,
        sender: Path,
        params: MailParams,
    ) -> Judgement<Transaction> {
        let text = sender.to_string();
        let mut judging = Judging::new(Stage::Mail, peer, rules);
        judging.sender = &text;
        judging.sender_domain = sender.mailbox().and_then(|m| m.domain_name());
        judging.declared_size = params.size.unwrap_or(0) as u64;
        let result = self.run(&mut judging).await;
        let mut transaction = Transaction::new(sender.clone(), params.eight_bit, params.smtputf8);
        transaction.spf = judging.spf.take().map(|s| s.into_owned());
        transaction.room = judging.room.take().unwrap_or_default();
        let judged = self.judged(judging, result, |_| ());
        transaction.shadow.add(&judged.matched);
        Judgement {
            result: judged.result.map(|()| transaction),
            matched: judged.matched,
        }
    }

    /// At RCPT TO; `raw` is the recipient as the client wrote it between `<>`.
    /// An accepted one joins the transaction.
    pub async fn rcpt(
        &self,
        peer: &Peer,
        rules: &RuleSet,
        transaction: &mut Transaction,
        raw: &str,
    ) -> Judgement<Recipient> {
        let sender = transaction.sender_text();
        let mut judging = Judging::new(Stage::Rcpt, peer, rules);
        judging.sender = &sender;
        judging.spf = transaction.spf.as_ref().map(std::borrow::Cow::Borrowed);
        judging.recipient = raw;
        let result = self.run(&mut judging).await;
        let result = match result {
            Ok(()) if judging.accepted.is_none() => Err(Decision::refuse(
                "relay",
                crate::reply::Reply::new(550, "5.7.1", format!("<{raw}>: Relaying denied")),
                "no step accepted the recipient",
            )),
            other => other,
        };
        let judged = self.judged(judging, result, |j| {
            j.accepted.take().expect("an accepted recipient")
        });
        transaction.shadow.add(&judged.matched);
        match &judged.result {
            Ok(Recipient::Deliver(destination)) => {
                transaction
                    .recipients
                    .push(destination.mailbox().to_string());
            }
            Ok(Recipient::Release(id)) => transaction.releases.push(id.clone()),
            Err(_) => {}
        }
        judged
    }

    /// At the end of DATA: the message of a transaction, to its accepted
    /// recipients. The verdict may still discard or quarantine; [`Pipeline::finish`]
    /// acts on it.
    pub async fn data(
        &self,
        peer: &Peer,
        rules: &RuleSet,
        transaction: &mut Transaction,
        message: &Message,
    ) -> Judgement<Verdict> {
        let judged = self
            .judge_data(peer, rules, transaction, message, None)
            .await;
        transaction.shadow.add(&judged.matched);
        judged
    }

    /// The DATA stage's steps, `spared` left out (a release).
    async fn judge_data(
        &self,
        peer: &Peer,
        rules: &RuleSet,
        transaction: &Transaction,
        message: &Message,
        spared: Option<&Spared>,
    ) -> Judgement<Verdict> {
        let sender = transaction.sender_text();
        let mut judging = Judging::new(Stage::Data, peer, rules);
        judging.id = &message.id;
        judging.sender = &sender;
        judging.spf = transaction.spf.as_ref().map(std::borrow::Cow::Borrowed);
        judging.recipients = &transaction.recipients;
        judging.message = message.original();
        judging.spared = spared;
        let result = self.run(&mut judging).await;
        self.judged(judging, result, |j| {
            let mut verdict = j
                .verdict
                .take()
                .unwrap_or_else(|| crate::rules::Verdict::deliver(j.sender, j.recipients.to_vec()));
            verdict.normalized = j.normalized.take();
            verdict.authentication = j.authentication.take();
            verdict
        })
    }
}

/// Shadow rules change nothing but this log line.
fn log_shadow(id: &str, matched: &[Matched]) {
    for m in matched.iter().filter(|m| m.shadow) {
        tracing::info!(
            queue_id = %id,
            rule = %m.rule,
            stage = m.stage.name(),
            detail = %m.detail,
            "shadow rule would have applied {}",
            m.action
        );
    }
}

/// The shadow rules that matched during one mail transaction (MAIL, RCPT, DATA),
/// logged when it ends: with the message's queue id once it has one, `NOQUEUE`
/// when it ends before (a refused sender, RSET, a lost connection).
#[derive(Default)]
pub struct ShadowLog {
    matched: Vec<Matched>,
    id: Option<String>,
}

impl ShadowLog {
    pub fn add(&mut self, matched: &[Matched]) {
        self.matched
            .extend(matched.iter().filter(|m| m.shadow).cloned());
    }

    pub fn queued_as(&mut self, id: &str) {
        self.id = Some(id.to_string());
    }

    /// Forgets what matched: nothing is logged (a trial reports it instead).
    pub fn discard(&mut self) {
        self.matched.clear();
    }
}

impl Drop for ShadowLog {
    fn drop(&mut self) {
        let id = self.id.as_deref().unwrap_or(crate::verdict::NOQUEUE);
        log_shadow(id, &self.matched);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(trusted: bool, login: bool, allowed: bool) -> Peer {
        Peer {
            ip: "192.0.2.1".parse().unwrap(),
            local_ip: "127.0.0.1".parse().unwrap(),
            name: None,
            helo: None,
            login: login.then(|| "alice".to_string()),
            login_addresses: Vec::new(),
            trusted,
            allowed,
            may_relay: trusted || login,
            tls: false,
        }
    }

    #[test]
    fn exemptions_follow_the_precedence_section() {
        let mut config = Config::default();
        let stranger = peer(false, false, false);
        let trusted = peer(true, false, false);
        let logged_in = peer(false, true, false);
        let allowed = peer(false, false, true);
        for step in [Step::ClientDeny, Step::Dnsbl, Step::SenderDomain] {
            let spares = step.spares();
            assert!(!spares.spares(&stranger, &config), "{step:?}");
            for p in [&trusted, &logged_in, &allowed] {
                assert!(spares.spares(p, &config), "{step:?}");
            }
        }
        // Limits spare trusted and logged-in clients only while exempt_trusted holds.
        config.mailbomb.exempt_trusted = false;
        let limits = Step::MessageRate.spares();
        assert!(!limits.spares(&trusted, &config));
        assert!(!limits.spares(&logged_in, &config));
        assert!(limits.spares(&allowed, &config));
        // The relay decision and the rules judge everyone.
        for step in [Step::Relay, Step::Recipients, Step::Rules] {
            assert!(!step.spares().spares(&allowed, &config), "{step:?}");
        }
    }

    #[test]
    fn every_step_has_its_place_once_per_stage() {
        for stage in [
            Stage::Connect,
            Stage::Helo,
            Stage::Mail,
            Stage::Rcpt,
            Stage::Data,
        ] {
            let list = steps(stage);
            for (i, step) in list.iter().enumerate() {
                assert!(!list[i + 1..].contains(step), "{step:?} twice in {stage:?}");
            }
        }
    }
}
