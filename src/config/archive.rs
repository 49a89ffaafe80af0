//! `[archive]`, `[rules]` and `[log]`: where refused mail is kept, where the rules
//! are, and how the proxy logs.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Secret;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// Keep refused, quarantined and discarded mail (on by default).
    pub enabled: bool,
    /// The archive folder.
    pub path: PathBuf,
    /// Records older than this are removed.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Beyond this many bytes of archived messages, the oldest are removed.
    pub max_size: u64,
    /// Reports of archived mail go to this address, through the backend.
    pub backup_address: Option<String>,
    /// … and/or to this separate mail server, `host:port`.
    pub backup_server: Option<String>,
    /// 0: one report per archived message; else one digest per interval.
    #[serde(with = "humantime_serde")]
    pub digest_interval: Duration,
    /// Secret for the signed release addresses in reports; unset: no release by
    /// mail.
    pub release_key: Option<Secret>,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            enabled: true,
            path: "quarantine".into(),
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_size: 1024 * 1024 * 1024,
            backup_address: None,
            backup_server: None,
            digest_interval: Duration::ZERO,
            release_key: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// The folder of rule files (`*.toml`, read in name order).
    pub path: PathBuf,
    /// Nested zip archives opened when looking for attachments (1: only the
    /// attached archive itself).
    pub zip_depth: usize,
    /// Bytes decompressed from one attached archive to open the archives inside
    /// it; beyond that, only their names are seen.
    pub zip_bytes: usize,
    /// Entries of one archive looked at.
    pub zip_entries: usize,
}

impl Default for RulesConfig {
    fn default() -> Self {
        let limits = crate::mime::Limits::default();
        RulesConfig {
            path: "rules".into(),
            zip_depth: limits.zip_depth,
            zip_bytes: limits.zip_bytes,
            zip_entries: limits.zip_entries,
        }
    }
}

impl RulesConfig {
    pub fn limits(&self) -> crate::mime::Limits {
        crate::mime::Limits {
            zip_depth: self.zip_depth,
            zip_bytes: self.zip_bytes,
            zip_entries: self.zip_entries,
            ..crate::mime::Limits::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter: `info`, `debug`, `mailmoat::queue=debug,info` …
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}
