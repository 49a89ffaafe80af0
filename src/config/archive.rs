//! `[archive]`, `[rules]` and `[log]`: where refused mail is kept, where the rules
//! are, and how the proxy logs.

use super::{Invalid, host_and_port, invalid};
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
    #[serde(with = "super::types::bytes")]
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
        RulesConfig {
            path: "rules".into(),
            container_depth: 6,
            container_bytes: ByteSize(32 << 20),
            container_entries: 1000,
            zip_depth: None,
            zip_bytes: None,
            zip_entries: None,
        }
    }
}

impl RulesConfig {
    /// The container limits in force: (depth, bytes, entries). An old `zip_`
    /// key counts unless its new name is set.
    pub fn container_limits(&self) -> (usize, usize, usize) {
        let defaults = RulesConfig::default();
        let pick = |new: usize, default: usize, old: Option<usize>| match old {
            Some(old) if new == default => old,
            _ => new,
        };
        (
            pick(
                self.container_depth,
                defaults.container_depth,
                self.zip_depth,
            ),
            pick(
                self.container_bytes.bytes() as usize,
                defaults.container_bytes.bytes() as usize,
                self.zip_bytes.map(|b| b.bytes() as usize),
            ),
            pick(
                self.container_entries,
                defaults.container_entries,
                self.zip_entries,
            ),
        )
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

impl ArchiveConfig {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if let Some(server) = self.backup_server.as_deref() {
            host_and_port(["archive", "backup_server"], server)?;
        }
        if let Some(address) = self.backup_address.as_deref()
            && crate::address::Mailbox::parse(address).is_err()
        {
            return Err(invalid(
                &[&["archive", "backup_address"]],
                format!(
                    "archive.backup_address '{address}' is not an address; write one such as quarantine@example.com"
                ),
            ));
        }
        if let Some(key) = self.release_key.as_ref().map(Secret::expose)
            && !key.is_empty()
            && key.len() < 16
        {
            return Err(invalid(
                &[&["archive", "release_key"]],
                "archive.release_key is too short; use at least 16 random characters (openssl rand -hex 32)",
            ));
        }
        Ok(())
    }
}
