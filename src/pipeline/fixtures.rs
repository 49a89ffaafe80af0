//! Rule fixtures: example messages with what must happen to them, checked by
//! `mailmoat test-rules --fixtures DIR` (and by the project's tests for the shipped
//! rules). A fixture is `NAME.eml` with `NAME.toml` beside it:
//!
//! ```toml
//! from = "sender@remote.test"
//! to = ["alice@example.test", "nobody@example.test"]
//! ip = "203.0.113.9"            # the client (default 192.0.2.1)
//! expect = "queued"             # queued, quarantined, discarded, rejected, tempfailed
//! rcpt = ["250", "550 5.1.1"]   # optional: the reply to each RCPT, by its start
//! rules = ["strip-executables"] # the rules that must act, in order
//! shadow = []                   # shadow rules that must match
//! recipients = ["alice@example.test"]  # optional: where it is delivered
//! sender = "sender@remote.test"        # optional: the sender it is delivered from
//! message = "other.eml"         # optional: another fixture's message
//! ```
//!
//! Each is judged by the whole pipeline with the configuration given, exactly as
//! `test-rules` judges one message.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Pipeline;
use super::trial::{Trial, TrialInput, run};
use crate::rules::RuleSet;
use crate::verdict::Outcome;

/// What must happen to one message.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    pub from: String,
    pub to: Vec<String>,
    #[serde(default = "default_ip")]
    pub ip: IpAddr,
    #[serde(default = "default_helo")]
    pub helo: String,
    /// As if the client had logged in with this account.
    pub login: Option<String>,
    /// The message file, relative to the fixture; default: the fixture's own .eml.
    pub message: Option<PathBuf>,
    pub expect: Outcome,
    #[serde(default)]
    pub rcpt: Vec<String>,
    #[serde(default)]
    pub rules: Vec<String>,
    #[serde(default)]
    pub shadow: Vec<String>,
    pub recipients: Option<Vec<String>>,
    pub sender: Option<String>,
    /// Sender authentication results to assume instead of DNS lookups.
    pub auth: Option<crate::sender_auth::AssumedAuth>,
}

fn default_ip() -> IpAddr {
    IpAddr::from([192, 0, 2, 1])
}

fn default_helo() -> String {
    "client.example".into()
}

/// A fixture with its message, read from a folder.
pub struct LoadedFixture {
    /// The fixture file.
    pub path: PathBuf,
    pub fixture: Fixture,
    /// CRLF line ends, as on the wire.
    pub message: Vec<u8>,
}

impl LoadedFixture {
    pub fn input(&self) -> TrialInput<'_> {
        TrialInput {
            client_ip: self.fixture.ip,
            helo: self.fixture.helo.clone(),
            login: self.fixture.login.clone(),
            sender: self.fixture.from.clone(),
            recipients: self.fixture.to.clone(),
            message: &self.message,
        }
    }
}

/// Every fixture of a folder (`*.toml` with a message), in name order.
pub fn load(dir: &Path) -> anyhow::Result<Vec<LoadedFixture>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let at_line = |at: Option<std::ops::Range<usize>>| {
            at.map_or(1, |s| text[..s.start].matches('\n').count() + 1)
        };
        let fixture: Fixture = toml::from_str(&text).map_err(|e| {
            let line = at_line(e.span());
            anyhow::anyhow!("{}:{line}: {}", path.display(), e.message().trim())
        })?;
        if let Some(Err(e)) = fixture.auth.as_ref().map(|a| a.facts()) {
            let line = at_line(text.find("[auth]").map(|at| at..at));
            anyhow::bail!("{}:{line}: [auth]: {e}", path.display());
        }
        let eml = match &fixture.message {
            Some(name) => dir.join(name),
            None => path.with_extension("eml"),
        };
        let raw = std::fs::read(&eml).map_err(|e| anyhow::anyhow!("{}: {e}", eml.display()))?;
        out.push(LoadedFixture {
            path,
            fixture,
            message: crlf(&raw),
        });
    }
    Ok(out)
}

/// Message files saved on Unix end lines with LF; on the wire they are CRLF.
pub fn crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
    let mut previous = 0u8;
    for &b in raw {
        if b == b'\n' && previous != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        previous = b;
    }
    out
}

/// What differs between a trial and its fixture; empty when the fixture holds.
pub fn problems(trial: &Trial, loaded: &LoadedFixture) -> Vec<String> {
    let fixture = &loaded.fixture;
    let mut problems = Vec::new();
    if trial.outcome() != fixture.expect {
        problems.push(format!(
            "expected {}, the pipeline says {}",
            fixture.expect,
            trial.outcome()
        ));
    }
    let replies = trial.replies(&loaded.input());
    let rcpt: Vec<String> = replies
        .iter()
        .filter(|(what, _)| what.starts_with("RCPT"))
        .map(|(_, reply)| reply.to_string())
        .collect();
    if !fixture.rcpt.is_empty()
        && (rcpt.len() != fixture.rcpt.len()
            || rcpt
                .iter()
                .zip(&fixture.rcpt)
                .any(|(got, want)| !got.starts_with(want.as_str())))
    {
        problems.push(format!(
            "RCPT replies: expected {:?}, got {rcpt:?}",
            fixture.rcpt
        ));
    }
    let matched = trial.matched();
    let enforced: Vec<&str> = matched
        .iter()
        .filter(|m| !m.shadow)
        .map(|m| m.rule.as_str())
        .collect();
    let shadow: Vec<&str> = matched
        .iter()
        .filter(|m| m.shadow)
        .map(|m| m.rule.as_str())
        .collect();
    if enforced != fixture.rules {
        problems.push(format!(
            "rules: expected {:?}, matched {enforced:?}",
            fixture.rules
        ));
    }
    if shadow != fixture.shadow {
        problems.push(format!(
            "shadow rules: expected {:?}, matched {shadow:?}",
            fixture.shadow
        ));
    }
    let verdict = trial.data.as_ref().and_then(|d| d.result.as_ref().ok());
    if let Some(want) = &fixture.recipients {
        let got = verdict.map(|v| v.recipients.clone()).unwrap_or_default();
        if &got != want {
            problems.push(format!("recipients: expected {want:?}, got {got:?}"));
        }
    }
    if let Some(want) = &fixture.sender {
        let got = verdict.map(|v| v.sender.as_str()).unwrap_or_default();
        if got != want {
            problems.push(format!("sender: expected {want:?}, got {got:?}"));
        }
    }
    problems
}

/// Runs every fixture of a folder; returns one line per fixture and whether all
/// held.
pub async fn check_all(
    pipeline: &Pipeline,
    rules: &RuleSet,
    dir: &Path,
) -> anyhow::Result<(String, bool)> {
    let mut out = String::new();
    let mut ok = true;
    for loaded in load(dir)? {
        let assumed = match &loaded.fixture.auth {
            Some(auth) => Some(Pipeline::for_trial_assuming(
                pipeline.config.clone(),
                auth.facts().map_err(anyhow::Error::msg)?,
            )?),
            None => None,
        };
        let trial = run(assumed.as_ref().unwrap_or(pipeline), rules, &loaded.input()).await;
        let problems = problems(&trial, &loaded);
        let name = loaded.path.display();
        if problems.is_empty() {
            out.push_str(&format!("ok      {name}: {}\n", trial.outcome()));
        } else {
            ok = false;
            out.push_str(&format!("FAILED  {name}: {}\n", problems.join("; ")));
            for line in trial.report(&loaded.input()).lines() {
                out.push_str(&format!("          {line}\n"));
            }
        }
    }
    Ok((out, ok))
}
