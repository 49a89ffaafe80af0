//! `[greylist]`, `[antivirus]` and `[spam]`: what slows spam runs down and what
//! outside scanners (clamd, rspamd) say about a message.

use super::{Invalid, invalid};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GreylistConfig {
    pub enabled: bool,
    /// A retry passes once this long has gone by since the first attempt.
    #[serde(with = "humantime_serde")]
    pub delay: Duration,
    /// ... and only within this long of it; later, it starts over.
    #[serde(with = "humantime_serde")]
    pub retry_window: Duration,
    /// A triplet that passed stays known this long after its last message.
    #[serde(with = "humantime_serde")]
    pub expire: Duration,
    /// A client network whose triplets passed this many times is not greylisted
    /// any more (0: never).
    pub auto_allow_after: u64,
    /// A sender whose SPF passes is not greylisted.
    pub skip_spf_pass: bool,
    /// The client network a triplet is keyed by.
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Most triplets kept; past it, new ones are let through unrecorded (and
    /// logged) rather than the store growing without bound.
    pub max_entries: usize,
}

impl Default for GreylistConfig {
    fn default() -> Self {
        GreylistConfig {
            enabled: false,
            delay: Duration::from_secs(300),
            retry_window: Duration::from_secs(2 * 24 * 3600),
            expire: Duration::from_secs(35 * 24 * 3600),
            auto_allow_after: 5,
            skip_spf_pass: true,
            ipv4_prefix: 24,
            ipv6_prefix: 64,
            max_entries: 1_000_000,
        }
    }
}

/// What to do with a message a scanner found bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnVirus {
    Reject,
    Quarantine,
}

/// What to do when a scanner cannot give an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnScanError {
    /// 451 4.3.0: the sender tries again later; nothing passes unscanned.
    Tempfail,
    /// Deliver, with a header saying it was not scanned.
    Accept,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AntivirusConfig {
    /// clamd: "host:port" or "unix:/path/to/clamd.ctl"; unset: no virus scanning.
    pub clamd: Option<String>,
    pub on_virus: OnVirus,
    pub on_error: OnScanError,
    /// The whole scan of one message, connection included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for AntivirusConfig {
    fn default() -> Self {
        AntivirusConfig {
            clamd: None,
            on_virus: OnVirus::Reject,
            on_error: OnScanError::Tempfail,
            timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpamConfig {
    /// rspamd's normal worker, "http://host:port"; unset: no spam scoring.
    pub rspamd: Option<String>,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// rspamd down or slow: deliver without a score (with a header saying so),
    /// or 451 4.3.0.
    pub on_error: OnScanError,
}

impl Default for SpamConfig {
    fn default() -> Self {
        SpamConfig {
            rspamd: None,
            timeout: Duration::from_secs(15),
            on_error: OnScanError::Accept,
        }
    }
}

/// Where clamd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClamdAddress {
    Tcp(String),
    Unix(std::path::PathBuf),
}

impl ClamdAddress {
    /// "127.0.0.1:3310", "clamav.internal:3310" or "unix:/run/clamav/clamd.ctl".
    pub fn parse(text: &str) -> Option<ClamdAddress> {
        if let Some(path) = text.strip_prefix("unix:") {
            return path
                .starts_with('/')
                .then(|| ClamdAddress::Unix(std::path::PathBuf::from(path)));
        }
        let (host, port) = text.rsplit_once(':')?;
        (!host.is_empty() && port.parse::<u16>().is_ok())
            .then(|| ClamdAddress::Tcp(text.to_string()))
    }
}

/// Where rspamd's normal worker listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RspamdEndpoint {
    /// host:port
    pub address: String,
}

impl RspamdEndpoint {
    /// "http://127.0.0.1:11333" (a path after it is ignored).
    pub fn parse(text: &str) -> Option<RspamdEndpoint> {
        let rest = text.strip_prefix("http://")?;
        let authority = rest.split('/').next().unwrap_or(rest);
        let (host, port) = authority.rsplit_once(':')?;
        (!host.is_empty() && port.parse::<u16>().is_ok()).then(|| RspamdEndpoint {
            address: authority.to_string(),
        })
    }
}

impl GreylistConfig {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if self.ipv4_prefix > 32 || self.ipv6_prefix > 128 {
            return Err(invalid(
                &[&["greylist", "ipv4_prefix"], &["greylist", "ipv6_prefix"]],
                "greylist: ipv4_prefix is at most 32 and ipv6_prefix at most 128 (24 and 64 are usual)",
            ));
        }
        if self.retry_window <= self.delay {
            return Err(invalid(
                &[&["greylist", "retry_window"], &["greylist", "delay"]],
                "greylist.retry_window must be longer than delay (such as \"2d\" against \"5m\")",
            ));
        }
        Ok(())
    }
}

impl AntivirusConfig {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if let Some(clamd) = &self.clamd
            && ClamdAddress::parse(clamd).is_none()
        {
            return Err(invalid(
                &[&["antivirus", "clamd"]],
                format!(
                    "antivirus.clamd = \"{clamd}\": write \"127.0.0.1:3310\" or \"unix:/run/clamav/clamd.ctl\""
                ),
            ));
        }
        Ok(())
    }
}

impl SpamConfig {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if let Some(rspamd) = &self.rspamd
            && RspamdEndpoint::parse(rspamd).is_none()
        {
            return Err(invalid(
                &[&["spam", "rspamd"]],
                format!("spam.rspamd = \"{rspamd}\": write \"http://127.0.0.1:11333\""),
            ));
        }
        Ok(())
    }
}
