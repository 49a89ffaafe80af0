//! `[mime]`: what becomes of a message that readers can read in more than one
//! way, and of attachments the engine could not look into.

use serde::{Deserialize, Serialize};

/// A message whose MIME structure is ambiguous (two Content-Types, a boundary
/// that readers delimit differently, an unclosed multipart, files in the
/// preamble …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ambiguous {
    /// `554 5.6.0`, naming the problem; archived like every refusal.
    Reject,
    /// Accepted and kept in the archive for review, not delivered.
    Quarantine,
    /// Rewritten so that every reader sees the one structure mailmoat judged,
    /// then judged and delivered like any message.
    Normalize,
}

/// An attachment the engine could not fully look into: an encrypted container, a
/// format or method it does not read (RAR's compression, UDF, NTFS …), one nested
/// deeper than `rules.container_depth`, past `container_bytes` or
/// `container_entries`, a damaged one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unscannable {
    /// Removed (like `strip_attachments`), the rest delivered.
    Strip,
    /// `554 5.7.1`; archived.
    Reject,
    /// Kept in the archive for review.
    Quarantine,
    /// Delivered as it is (and logged).
    Deliver,
}

/// A `message/partial` fragment: the parts are put together by the recipient's
/// program, after every check has seen only pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Partial {
    /// `554 5.6.0`; archived.
    Reject,
    /// Kept in the archive for review.
    Quarantine,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MimeConfig {
    pub ambiguous: Ambiguous,
    pub unscannable: Unscannable,
    pub partial: Partial,
}

impl Default for MimeConfig {
    fn default() -> Self {
        MimeConfig {
            ambiguous: Ambiguous::Reject,
            unscannable: Unscannable::Strip,
            partial: Partial::Reject,
        }
    }
}
