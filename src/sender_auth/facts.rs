//! What sender authentication finds, in the words of RFC 8601 and the rule
//! conditions: results, the DMARC policy, the SPF check made at MAIL, and all
//! that was verified about one message.

use mail_auth::{DkimResult, DmarcResult, SpfOutput, SpfResult};

/// A result as RFC 8601 names it; also the values of the rule conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthResult {
    Pass,
    Fail,
    SoftFail,
    Neutral,
    #[default]
    None,
    TempError,
    PermError,
}

impl AuthResult {
    pub const ALL: [AuthResult; 7] = [
        AuthResult::Pass,
        AuthResult::Fail,
        AuthResult::SoftFail,
        AuthResult::Neutral,
        AuthResult::None,
        AuthResult::TempError,
        AuthResult::PermError,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AuthResult::Pass => "pass",
            AuthResult::Fail => "fail",
            AuthResult::SoftFail => "softfail",
            AuthResult::Neutral => "neutral",
            AuthResult::None => "none",
            AuthResult::TempError => "temperror",
            AuthResult::PermError => "permerror",
        }
    }

    pub fn parse(text: &str) -> Option<AuthResult> {
        AuthResult::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(text.trim()))
    }

    pub(super) fn of_spf(result: SpfResult) -> AuthResult {
        match result {
            SpfResult::Pass => AuthResult::Pass,
            SpfResult::Fail => AuthResult::Fail,
            SpfResult::SoftFail => AuthResult::SoftFail,
            SpfResult::Neutral => AuthResult::Neutral,
            SpfResult::TempError => AuthResult::TempError,
            SpfResult::PermError => AuthResult::PermError,
            SpfResult::None => AuthResult::None,
        }
    }

    pub(super) fn of_dkim(result: &DkimResult) -> AuthResult {
        match result {
            DkimResult::Pass => AuthResult::Pass,
            DkimResult::Neutral(_) => AuthResult::Neutral,
            DkimResult::Fail(_) => AuthResult::Fail,
            DkimResult::PermError(_) => AuthResult::PermError,
            DkimResult::TempError(_) => AuthResult::TempError,
            DkimResult::None => AuthResult::None,
        }
    }

    pub(super) fn of_dmarc(result: &DmarcResult) -> AuthResult {
        match result {
            DmarcResult::Pass => AuthResult::Pass,
            DmarcResult::Fail(_) => AuthResult::Fail,
            DmarcResult::TempError(_) => AuthResult::TempError,
            DmarcResult::PermError(_) => AuthResult::PermError,
            DmarcResult::None => AuthResult::None,
        }
    }
}

/// What the author domain's DMARC record asks for a failing message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmarcPolicy {
    None,
    Quarantine,
    Reject,
}

impl DmarcPolicy {
    pub fn name(self) -> &'static str {
        match self {
            DmarcPolicy::None => "none",
            DmarcPolicy::Quarantine => "quarantine",
            DmarcPolicy::Reject => "reject",
        }
    }

    pub fn parse(text: &str) -> Option<DmarcPolicy> {
        [
            DmarcPolicy::None,
            DmarcPolicy::Quarantine,
            DmarcPolicy::Reject,
        ]
        .into_iter()
        .find(|p| p.name().eq_ignore_ascii_case(text.trim()))
    }
}

/// The SPF check made at MAIL, kept with the transaction for the rules, DMARC
/// and the Authentication-Results header.
#[derive(Debug, Clone)]
pub struct SpfCheck {
    pub result: AuthResult,
    pub(super) output: SpfOutput,
    /// The MAIL FROM address, or empty when the HELO name was checked (null
    /// sender).
    pub(super) mail_from: String,
    pub(super) helo: String,
}

impl SpfCheck {
    /// The domain whose record was checked: the MAIL FROM domain, or the HELO
    /// name for the null sender.
    pub fn domain(&self) -> &str {
        self.mail_from
            .rsplit_once('@')
            .map_or(self.helo.as_str(), |(_, d)| d)
    }
}

/// What the rules may ask about a sender's authentication. Unchecked results
/// (trusted clients, a check turned off, before the stage) read as `none`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthFacts {
    pub spf: AuthResult,
    pub dkim: AuthResult,
    pub dmarc: AuthResult,
    pub arc: AuthResult,
    /// Domains that signed with a passing DKIM signature.
    pub dkim_domains: Vec<String>,
    /// The author domain's DMARC policy, when it publishes one.
    pub dmarc_policy: Option<DmarcPolicy>,
}

impl AuthFacts {
    /// At MAIL and RCPT: only SPF is known.
    pub fn of_spf(spf: Option<&SpfCheck>) -> AuthFacts {
        AuthFacts {
            spf: spf.map_or(AuthResult::None, |s| s.result),
            ..AuthFacts::default()
        }
    }
}

/// Everything verified about one inbound message at the end of DATA.
#[derive(Debug, Clone, Default)]
pub struct Authentication {
    pub facts: AuthFacts,
    /// The domain DMARC judged (the From header's).
    pub dmarc_domain: String,
    /// The sealer of the newest ARC set, when the chain passes.
    pub arc_sealer: Option<String>,
    /// The Authentication-Results header for the message, CRLF-terminated.
    pub header: String,
}
