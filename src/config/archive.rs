//! `[archive]`, `[rules]` and `[log]`: where refused mail is kept, where the rules
//! are, and how the proxy logs.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ByteSize, Secret};

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
    /// Containers opened one inside another when looking for attachments (1: only
    /// the attached archive itself); deeper ones are unscannable.
    pub container_depth: usize,
    /// Bytes decompressed from the containers of one message in all; past that,
    /// what is left is unscannable. Bounds the time and memory a bomb costs.
    pub container_bytes: ByteSize,
    /// Entries of one container looked at; past that, unscannable.
    pub container_entries: usize,
    /// The names these limits had when only zip archives were opened; still
    /// read, with a warning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zip_depth: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zip_bytes: Option<ByteSize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zip_entries: Option<usize>,
}

impl Default for RulesConfig {
    fn default() -> Self {
        let limits = crate::mime::Limits::default();
        RulesConfig {
            path: "rules".into(),
            container_depth: limits.container_depth,
            container_bytes: ByteSize(limits.container_bytes as u64),
            container_entries: limits.container_entries,
            zip_depth: None,
            zip_bytes: None,
            zip_entries: None,
        }
    }
}

impl RulesConfig {
    /// The limits in force: an old `zip_` key counts unless its new name is set.
    pub fn limits(&self) -> crate::mime::Limits {
        let defaults = crate::mime::Limits::default();
        let pick = |new: usize, default: usize, old: Option<usize>| match old {
            Some(old) if new == default => old,
            _ => new,
        };
        crate::mime::Limits {
            container_depth: pick(
                self.container_depth,
                defaults.container_depth,
                self.zip_depth,
            ),
            container_bytes: pick(
                self.container_bytes.bytes() as usize,
                defaults.container_bytes,
                self.zip_bytes.map(|b| b.bytes() as usize),
            ),
            container_entries: pick(
                self.container_entries,
                defaults.container_entries,
                self.zip_entries,
            ),
            ..defaults
        }
    }

    /// The old keys in use, each with its new name.
    pub fn deprecated_keys(&self) -> Vec<(&'static str, &'static str)> {
        let mut keys = Vec::new();
        if self.zip_depth.is_some() {
            keys.push(("zip_depth", "container_depth"));
        }
        if self.zip_bytes.is_some() {
            keys.push(("zip_bytes", "container_bytes"));
        }
        if self.zip_entries.is_some() {
            keys.push(("zip_entries", "container_entries"));
        }
        keys
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
