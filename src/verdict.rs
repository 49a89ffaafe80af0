//! The one vocabulary of what happened to a message or a recipient, shared by the
//! session, the judging pipeline, the logs, the archive, its reports, `test-rules`,
//! release and metrics.
//!
//! A check or rule that decides produces a [`Decision`]: the reply, who decided
//! ([`DecidedBy`]), why, and the [`Outcome`]. What is logged and what is archived are
//! both read from one [`Event`] built from that decision, so the two cannot disagree,
//! and nothing anywhere turns an outcome back from a string.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::reply::Reply;

/// Where in the dialogue something was decided. Ordered as the dialogue goes, so
/// "a rule can be decided at MAIL" is `rule.stage <= Stage::Mail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Connect,
    Helo,
    Mail,
    Rcpt,
    /// The end of DATA: the whole message is known.
    Data,
}

impl Stage {
    /// As logs, reports and `test-rules` print it.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Connect => "CONNECT",
            Stage::Helo => "HELO",
            Stage::Mail => "MAIL",
            Stage::Rcpt => "RCPT",
            Stage::Data => "DATA",
        }
    }
}

/// What happened to a message (or, during the dialogue, to a sender or recipient).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// On stable storage in the queue, for delivery. (`deliver` is the name rule
    /// fixtures written before this vocabulary use.)
    #[serde(alias = "deliver")]
    Queued,
    /// In the queue's `hold` folder, waiting for the administrator (quarantine
    /// with the archive off).
    Held,
    /// Kept in the archive for review, not delivered; the client was told 250.
    #[serde(alias = "quarantine")]
    Quarantined,
    /// Accepted and delivered nowhere (a copy in the archive when it is on).
    #[serde(alias = "discard")]
    Discarded,
    /// Refused for good: a 5xx reply.
    #[serde(alias = "reject")]
    Rejected,
    /// Refused for now: a 4xx reply; the client tries again.
    #[serde(alias = "tempfail")]
    Tempfailed,
}

impl Outcome {
    /// The outcome of a refusal: the reply code alone says which. The one place
    /// where "5xx rejects, 4xx tempfails" is written.
    pub fn of_refusal(reply: &Reply) -> Outcome {
        if reply.is_permanent() {
            Outcome::Rejected
        } else {
            Outcome::Tempfailed
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Queued => "queued",
            Outcome::Held => "held",
            Outcome::Quarantined => "quarantined",
            Outcome::Discarded => "discarded",
            Outcome::Rejected => "rejected",
            Outcome::Tempfailed => "tempfailed",
        }
    }

    /// The client was refused (and will see a 4xx or 5xx).
    pub fn is_refusal(self) -> bool {
        matches!(self, Outcome::Rejected | Outcome::Tempfailed)
    }

    pub const ALL: [Outcome; 6] = [
        Outcome::Queued,
        Outcome::Held,
        Outcome::Quarantined,
        Outcome::Discarded,
        Outcome::Rejected,
        Outcome::Tempfailed,
    ];
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who made a decision: a named built-in check, or a rule of the administrator's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecidedBy {
    /// A built-in check: `relay`, `recipients`, `mailbomb.messages`, `framing` …
    Check(String),
    /// A rule, by its name in the rule files.
    Rule(String),
}

impl DecidedBy {
    pub fn check(name: &str) -> DecidedBy {
        DecidedBy::Check(name.to_string())
    }

    /// The check's name, or `rule` for every rule: the label metrics count by.
    pub fn check_name(&self) -> &str {
        match self {
            DecidedBy::Check(name) => name,
            DecidedBy::Rule(_) => "rule",
        }
    }

    /// `rule NAME` or `check NAME`, for sentences.
    pub fn describe(&self) -> String {
        match self {
            DecidedBy::Check(name) => format!("check {name}"),
            DecidedBy::Rule(name) => format!("rule {name}"),
        }
    }

    /// The rule's name, when a rule decided.
    pub fn rule(&self) -> Option<&str> {
        match self {
            DecidedBy::Rule(name) => Some(name),
            DecidedBy::Check(_) => None,
        }
    }
}

impl fmt::Display for DecidedBy {
    /// `relay`, or `rule:NAME`: how reports and lists show it to a person.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecidedBy::Check(name) => f.write_str(name),
            DecidedBy::Rule(name) => write!(f, "rule:{name}"),
        }
    }
}

/// One decision of a check or rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What the client is told.
    pub reply: Reply,
    pub by: DecidedBy,
    /// Why, for the administrator; may say more than the reply does.
    pub reason: String,
    pub outcome: Outcome,
    /// Whether a copy goes to the archive (a rule may say `archive = false`).
    pub archive: bool,
}

impl Decision {
    /// A refusal by a built-in check: rejected or tempfailed as the reply says.
    pub fn refuse(check: &str, reply: Reply, reason: impl Into<String>) -> Decision {
        Decision {
            outcome: Outcome::of_refusal(&reply),
            reply,
            by: DecidedBy::check(check),
            reason: reason.into(),
            archive: true,
        }
    }

    /// A refusal by a rule.
    pub fn refused_by_rule(rule: &str, reply: Reply, archive: bool) -> Decision {
        Decision {
            outcome: Outcome::of_refusal(&reply),
            reply,
            by: DecidedBy::Rule(rule.to_string()),
            reason: "refused by rule".into(),
            archive,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}: {})", self.reply, self.by, self.reason)
    }
}

/// What the checks know about the client of a session: the facts they judge by,
/// owned by the session and lent to every stage.
#[derive(Debug, Clone)]
pub struct Peer {
    pub ip: IpAddr,
    /// The local address it connected to (a HELO naming it claims to be us).
    pub local_ip: IpAddr,
    /// Its confirmed reverse name, when looked up.
    pub name: Option<String>,
    /// The name given in HELO/EHLO.
    pub helo: Option<String>,
    /// The account it logged in with.
    pub login: Option<String>,
    /// The addresses the login's directory entry holds: it may send as each.
    pub login_addresses: Vec<String>,
    /// In `relay.trusted_networks` (and not in `never_relay_networks`).
    pub trusted: bool,
    /// On the client allow list.
    pub allowed: bool,
    /// May send to domains the proxy does not host: trusted or logged in, and not
    /// on the never-relay list.
    pub may_relay: bool,
    /// The connection is encrypted.
    pub tls: bool,
}

impl Peer {
    /// A client refused before anything was looked up about it (the listener's
    /// connection limits): only its address is known. Every other peer is made
    /// by `Pipeline::peer`.
    pub fn unjudged(ip: IpAddr) -> Peer {
        Peer {
            ip,
            local_ip: ip,
            name: None,
            helo: None,
            login: None,
            login_addresses: Vec::new(),
            trusted: false,
            allowed: false,
            may_relay: false,
            tls: false,
        }
    }

    pub fn helo(&self) -> &str {
        self.helo.as_deref().unwrap_or("")
    }
}

/// The queue id of an event that has none (a refusal during the dialogue), as
/// Postfix logs it.
pub const NOQUEUE: &str = "NOQUEUE";

/// What happened, with everything the log line and the archive record say about it.
pub struct Event<'a> {
    /// The queue id the client was given, or [`NOQUEUE`].
    pub id: &'a str,
    pub stage: Stage,
    pub peer: &'a Peer,
    /// Empty for the null sender.
    pub sender: &'a str,
    pub recipients: &'a [String],
    /// Octets of the message (0 before DATA).
    pub size: usize,
    pub outcome: Outcome,
    /// Who decided; `None` when nothing did (a message accepted as it came).
    pub decided_by: Option<&'a DecidedBy>,
    pub reason: &'a str,
    /// What the client was told.
    pub reply: &'a Reply,
    /// Every rule that matched, for the log (`name(action)`, comma-separated).
    pub rules: &'a str,
}

impl Event<'_> {
    /// One line per decision: the same fields whatever the stage and outcome.
    pub fn log(&self) {
        let check = self.decided_by.map_or("", DecidedBy::check_name);
        let rule = self.decided_by.and_then(DecidedBy::rule).unwrap_or("");
        tracing::info!(
            queue_id = %self.id,
            stage = self.stage.name(),
            client = %self.peer.ip,
            helo = self.peer.helo(),
            sender = self.sender,
            recipients = %self.recipients.join(","),
            size = self.size,
            result = self.outcome.name(),
            check,
            rule,
            reason = self.reason,
            rules = self.rules,
            auth_user = self.peer.login.as_deref().unwrap_or(""),
            tls = self.peer.tls,
            reply = %self.reply,
            "{}",
            match self.stage {
                Stage::Data => "message",
                Stage::Rcpt => "recipient refused",
                Stage::Mail => "sender refused",
                Stage::Helo => "helo refused",
                Stage::Connect => "connection refused",
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_code_alone_says_rejected_or_tempfailed() {
        let limit = Decision::refuse(
            "mailbomb.messages",
            Reply::new(451, "4.7.1", "slow down"),
            "x",
        );
        assert_eq!(limit.outcome, Outcome::Tempfailed);
        let relay = Decision::refuse("relay", Reply::new(550, "5.7.1", "no"), "x");
        assert_eq!(relay.outcome, Outcome::Rejected);
    }

    #[test]
    fn old_outcome_names_still_read() {
        #[derive(Deserialize)]
        struct T {
            o: Outcome,
        }
        let t: T = toml::from_str("o = \"deliver\"").unwrap();
        assert_eq!(t.o, Outcome::Queued);
        let t: T = toml::from_str("o = \"tempfailed\"").unwrap();
        assert_eq!(t.o, Outcome::Tempfailed);
    }

    #[test]
    fn a_rule_shows_as_rule_colon_name_and_counts_as_rule() {
        let by = DecidedBy::Rule("no-exe".into());
        assert_eq!(by.to_string(), "rule:no-exe");
        assert_eq!(by.check_name(), "rule");
        assert_eq!(by.rule(), Some("no-exe"));
    }
}
