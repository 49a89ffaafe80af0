//! Outside scanners asked about every message at the end of DATA, before the
//! 250: clamd for viruses, rspamd for a spam score, both at once. What they say
//! is a fact for the rules (`when.virus`, `when.min_spam_score`,
//! `when.spam_action`, `when.spam_symbol`); when no rule decides, the defaults
//! here do (`[antivirus] on_virus`, rspamd's action).

pub mod clamd;
pub mod rspamd;

use std::time::Duration;

use crate::config::{AntivirusConfig, Config, OnScanError, OnVirus, SpamConfig};
use crate::mime::edit::HeaderEdit;
use crate::reply::Reply;
use crate::verdict::{DecidedBy, Decision, Outcome, Peer};

/// What the scanners found about one message.
#[derive(Debug, Clone, Default)]
pub struct ScanFacts {
    /// The virus clamd named.
    pub virus: Option<String>,
    /// Why there is no virus verdict, when clamd was asked and gave none.
    pub virus_error: Option<String>,
    pub spam: Option<rspamd::Score>,
    /// Why there is no score, when rspamd was asked and gave none.
    pub spam_error: Option<String>,
}

impl ScanFacts {
    /// The symbols rspamd found, for `when.spam_symbol`.
    pub fn spam_symbols(&self) -> impl Iterator<Item = &str> {
        self.spam
            .iter()
            .flat_map(|s| s.symbols.keys().map(String::as_str))
    }
}

pub struct Scanners {
    clamd: Option<(clamd::Address, AntivirusConfig)>,
    rspamd: Option<(rspamd::Endpoint, SpamConfig)>,
}

impl Scanners {
    /// None when no scanner is configured.
    pub fn new(config: &Config) -> Option<Scanners> {
        let clamd = config.antivirus.clamd.as_deref().and_then(|text| {
            clamd::Address::parse(text).map(|address| (address, config.antivirus.clone()))
        });
        let rspamd = config.spam.rspamd.as_deref().and_then(|text| {
            rspamd::Endpoint::parse(text).map(|endpoint| (endpoint, config.spam.clone()))
        });
        (clamd.is_some() || rspamd.is_some()).then_some(Scanners { clamd, rspamd })
    }

    /// Asks every scanner at once, each within its timeout.
    pub async fn scan(
        &self,
        peer: &Peer,
        sender: &str,
        recipients: &[String],
        queue_id: &str,
        message: &[u8],
    ) -> ScanFacts {
        let virus = async {
            let (address, config) = self.clamd.as_ref()?;
            Some(within(config.timeout, "clamd", clamd::scan(address, message)).await)
        };
        let spam = async {
            let (endpoint, config) = self.rspamd.as_ref()?;
            let request = rspamd::CheckRequest {
                ip: peer.ip,
                helo: peer.helo(),
                sender,
                recipients,
                login: peer.login.as_deref(),
                queue_id,
            };
            Some(
                within(
                    config.timeout,
                    "rspamd",
                    rspamd::check(endpoint, &request, message),
                )
                .await,
            )
        };
        let (virus, spam) = tokio::join!(virus, spam);
        let mut facts = ScanFacts::default();
        match virus {
            Some(Ok(clamd::Answer::Virus(name))) => facts.virus = Some(name),
            Some(Ok(clamd::Answer::Clean)) | None => {}
            Some(Err(why)) => facts.virus_error = Some(why),
        }
        match spam {
            Some(Ok(score)) => facts.spam = Some(score),
            None => {}
            Some(Err(why)) => facts.spam_error = Some(why),
        }
        facts
    }

    /// A scanner that gave no answer, when its `on_error` is `tempfail`: the
    /// client tries again later, and nothing passes unscanned.
    pub fn unanswered(&self, facts: &ScanFacts) -> Result<(), Decision> {
        let tempfail = |check: &str, why: &str| {
            Decision::refuse(
                check,
                Reply::new(
                    451,
                    "4.3.0",
                    "Message could not be scanned; try again later",
                ),
                why.to_string(),
            )
        };
        if let (Some(why), Some((_, config))) = (&facts.virus_error, &self.clamd)
            && config.on_error == OnScanError::Tempfail
        {
            return Err(tempfail("antivirus", why));
        }
        if let (Some(why), Some((_, config))) = (&facts.spam_error, &self.rspamd)
            && config.on_error == OnScanError::Tempfail
        {
            return Err(tempfail("spam", why));
        }
        Ok(())
    }

    /// What the scanners decide when no rule did: a virus is refused or
    /// quarantined; rspamd's `reject` is refused, `soft reject` deferred,
    /// `rewrite subject` rewrites it. Its `greylist` is only recorded: rspamd
    /// without its own greylist store would say it at every retry, deferring
    /// the mail until it bounces; `[greylist]` is mailmoat's, and a rule on
    /// `spam_action = "greylist"` can defer when wanted. Headers record the
    /// score (replacing any the sender wrote), and what could not be scanned.
    pub fn defaults(
        &self,
        facts: &ScanFacts,
        rule_decided: bool,
        spam_spared: bool,
        id: &str,
    ) -> Result<Vec<HeaderEdit>, Decision> {
        if !rule_decided && let (Some(name), Some((_, config))) = (&facts.virus, &self.clamd) {
            let reason = format!("virus {name} found by clamd");
            return Err(match config.on_virus {
                OnVirus::Reject => Decision::refuse(
                    "antivirus",
                    Reply::new(
                        554,
                        "5.7.1",
                        format!("Message rejected: virus {name} found"),
                    ),
                    reason,
                ),
                OnVirus::Quarantine => Decision {
                    reply: Reply::new(250, "2.0.0", format!("Ok: queued as {id}")),
                    by: DecidedBy::check("antivirus"),
                    reason,
                    outcome: Outcome::Quarantined,
                    archive: true,
                },
            });
        }
        let mut edits = Vec::new();
        if let Some(why) = &facts.virus_error {
            edits.push(HeaderEdit::Add(
                "X-Mailmoat-Antivirus".into(),
                format!("not scanned ({})", one_line(why)),
            ));
        }
        if let Some(why) = &facts.spam_error {
            edits.push(HeaderEdit::Add(
                "X-Mailmoat-Spam".into(),
                format!("not scored ({})", one_line(why)),
            ));
        }
        let Some(score) = &facts.spam else {
            return Ok(edits);
        };
        let summary = format!(
            "score={:.2} required={:.2} action={}",
            score.score, score.required_score, score.action
        );
        // An allow-listed, authenticated sender: the score is still written in
        // the headers, its action is not taken.
        if !rule_decided && !spam_spared {
            let refused = |code, status, text: &str| {
                Decision::refuse(
                    "spam",
                    Reply::new(code, status, text.to_string()),
                    format!("rspamd: {summary}"),
                )
            };
            match score.action.as_str() {
                "reject" => return Err(refused(550, "5.7.1", "Message rejected as spam")),
                "soft reject" => {
                    return Err(refused(451, "4.7.1", "Message deferred; try again later"));
                }
                "rewrite subject" => {
                    if let Some(subject) = &score.subject {
                        edits.push(HeaderEdit::Set("Subject".into(), one_line(subject)));
                    }
                }
                _ => {}
            }
        }
        let spam = matches!(score.action.as_str(), "add header" | "rewrite subject");
        edits.push(HeaderEdit::Set(
            "X-Spam-Flag".into(),
            if spam { "YES" } else { "NO" }.into(),
        ));
        edits.push(HeaderEdit::Set(
            "X-Spam-Score".into(),
            format!("{:.2}", score.score),
        ));
        edits.push(HeaderEdit::Set(
            "X-Spam-Status".into(),
            format!("{}, {summary}", if spam { "Yes" } else { "No" }),
        ));
        Ok(edits)
    }
}

/// A scanner's answer within `limit`; past it, an error naming the timeout.
async fn within<T>(
    limit: Duration,
    name: &str,
    call: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| Err(format!("{name} did not answer within {limit:?}")))
}

fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanners(on_virus: OnVirus) -> Scanners {
        let mut config = Config::default();
        config.antivirus.clamd = Some("127.0.0.1:3310".into());
        config.antivirus.on_virus = on_virus;
        config.spam.rspamd = Some("http://127.0.0.1:11333".into());
        Scanners::new(&config).unwrap()
    }

    fn scored(action: &str) -> ScanFacts {
        ScanFacts {
            spam: Some(rspamd::Score {
                score: 7.0,
                required_score: 15.0,
                action: action.into(),
                symbols: Default::default(),
                subject: Some("***SPAM*** offer".into()),
            }),
            ..ScanFacts::default()
        }
    }

    #[test]
    fn an_allowed_authenticated_sender_keeps_the_score_but_not_its_action_nor_the_virus() {
        let reject = scanners(OnVirus::Reject);
        let edits = reject
            .defaults(&scored("reject"), false, true, "Q1")
            .unwrap();
        assert!(
            edits.contains(&HeaderEdit::Set("X-Spam-Score".into(), "7.00".into())),
            "{edits:?}"
        );
        let virus = ScanFacts {
            virus: Some("Eicar".into()),
            ..scored("reject")
        };
        assert!(
            reject.defaults(&virus, false, true, "Q1").is_err(),
            "never the virus"
        );
    }

    #[test]
    fn the_scanners_decide_only_when_no_rule_did() {
        let reject = scanners(OnVirus::Reject);
        let virus = ScanFacts {
            virus: Some("Eicar".into()),
            ..ScanFacts::default()
        };
        let refused = reject.defaults(&virus, false, false, "Q1").unwrap_err();
        assert_eq!(
            refused.reply.to_string(),
            "554 5.7.1 Message rejected: virus Eicar found"
        );
        let quarantined = scanners(OnVirus::Quarantine)
            .defaults(&virus, false, false, "Q1")
            .unwrap_err();
        assert_eq!(quarantined.outcome, Outcome::Quarantined);
        assert!(
            reject.defaults(&virus, true, false, "Q1").is_ok(),
            "a rule decided"
        );

        let code = |action: &str| match reject.defaults(&scored(action), false, false, "Q1") {
            Err(d) => d.reply.to_string(),
            Ok(edits) => format!("{edits:?}"),
        };
        assert_eq!(code("reject"), "550 5.7.1 Message rejected as spam");
        assert_eq!(
            code("soft reject"),
            "451 4.7.1 Message deferred; try again later"
        );
        // rspamd's greylist is recorded only: rspamd would repeat it at every retry.
        assert!(
            code("greylist").contains("action=greylist"),
            "{}",
            code("greylist")
        );
        assert!(code("rewrite subject").contains("Set(\"Subject\", \"***SPAM*** offer\")"));
        assert!(code("add header").contains("Set(\"X-Spam-Flag\", \"YES\")"));
        assert!(code("no action").contains("Set(\"X-Spam-Flag\", \"NO\")"));
        let decided = reject
            .defaults(&scored("reject"), true, false, "Q1")
            .unwrap();
        assert!(
            format!("{decided:?}").contains("action=reject"),
            "headers still added"
        );
    }
}
