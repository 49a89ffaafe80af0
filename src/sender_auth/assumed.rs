//! Results given instead of looked up, for a trial: `test-rules --spf fail
//! --dmarc fail --dmarc-policy reject`, or a fixture's `[auth]` table. One
//! description serves both, so the options and the table cannot drift apart.

use serde::Deserialize;

use super::{AuthFacts, AuthResult, DmarcPolicy};

#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct AssumedAuth {
    /// Assume this SPF result (pass, fail, softfail, neutral, none, temperror,
    /// permerror) instead of looking it up; the same for --dkim, --dmarc, --arc.
    #[arg(long, value_name = "RESULT")]
    pub spf: Option<String>,
    #[arg(long, value_name = "RESULT")]
    pub dkim: Option<String>,
    #[arg(long, value_name = "RESULT")]
    pub dmarc: Option<String>,
    #[arg(long, value_name = "RESULT")]
    pub arc: Option<String>,
    /// A domain that signed with a passing DKIM signature; repeat for more.
    #[arg(long = "dkim-domain", value_name = "DOMAIN")]
    #[serde(default)]
    pub dkim_domain: Vec<String>,
    /// The author domain's DMARC policy: none, quarantine or reject.
    #[arg(long = "dmarc-policy", value_name = "POLICY")]
    pub dmarc_policy: Option<String>,
}

impl AssumedAuth {
    /// Whether anything is assumed (else the trial looks results up in DNS, as
    /// the server does).
    pub fn any(&self) -> bool {
        self.spf.is_some()
            || self.dkim.is_some()
            || self.dmarc.is_some()
            || self.arc.is_some()
            || !self.dkim_domain.is_empty()
            || self.dmarc_policy.is_some()
    }

    /// The facts the rules will see; results not given read as `none`.
    pub fn facts(&self) -> Result<AuthFacts, String> {
        let result = |name: &str, value: &Option<String>| -> Result<AuthResult, String> {
            match value {
                None => Ok(AuthResult::None),
                Some(text) => AuthResult::parse(text).ok_or_else(|| {
                    format!(
                        "{name} '{text}' is not a result; write one of pass, fail, softfail, neutral, none, temperror, permerror"
                    )
                }),
            }
        };
        let dmarc_policy = match &self.dmarc_policy {
            None => None,
            Some(text) => Some(DmarcPolicy::parse(text).ok_or_else(|| {
                format!("dmarc_policy '{text}' is not a policy; write none, quarantine or reject")
            })?),
        };
        let dkim_domains: Vec<String> = self
            .dkim_domain
            .iter()
            .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
            .collect();
        let dkim = match &self.dkim {
            // A passing signing domain implies a passing signature.
            None if !dkim_domains.is_empty() => AuthResult::Pass,
            other => result("dkim", other)?,
        };
        Ok(AuthFacts {
            spf: result("spf", &self.spf)?,
            dkim,
            dmarc: result("dmarc", &self.dmarc)?,
            arc: result("arc", &self.arc)?,
            dkim_domains,
            dmarc_policy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_fixture_tables_read_alike() {
        let table: AssumedAuth = toml::from_str(
            "spf = \"fail\"\ndkim_domain = [\"Bank.Test.\"]\ndmarc_policy = \"reject\"",
        )
        .unwrap();
        let facts = table.facts().unwrap();
        assert_eq!(facts.spf, AuthResult::Fail);
        assert_eq!(facts.dkim, AuthResult::Pass, "implied by a signing domain");
        assert_eq!(facts.dkim_domains, ["bank.test"]);
        assert_eq!(facts.dmarc_policy, Some(DmarcPolicy::Reject));
        assert_eq!(facts.dmarc, AuthResult::None);
        let wrong = AssumedAuth {
            dmarc: Some("failed".into()),
            ..AssumedAuth::default()
        };
        assert!(
            wrong
                .facts()
                .unwrap_err()
                .contains("dmarc 'failed' is not a result")
        );
        assert!(!AssumedAuth::default().any());
    }
}
