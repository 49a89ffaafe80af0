//! The message trace: which archive items match what an administrator asks,
//! from `mailmoat quarantine list` and the quarantine page's search alike.

use serde::{Deserialize, Serialize};

use super::Record;

/// Every field is optional; text fields match a part of the value, in any case.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Search {
    /// The archive id, or the queue id the client was told (`queue_id` in the log).
    pub id: Option<String>,
    pub sender: Option<String>,
    /// Any one of the recipients.
    pub recipient: Option<String>,
    pub subject: Option<String>,
    /// The rule or check that decided (`rule:exe`, `antivirus`).
    pub check: Option<String>,
    /// `rejected`, `quarantined`, `discarded`, `tempfailed`.
    pub outcome: Option<String>,
    /// Unix seconds: at or after.
    pub since: Option<u64>,
    /// Unix seconds: before.
    pub until: Option<u64>,
}

impl Search {
    pub fn matches(&self, record: &Record) -> bool {
        let wanted = |field: &Option<String>, value: &str| {
            field
                .as_deref()
                .filter(|w| !w.trim().is_empty())
                .is_none_or(|w| value.to_lowercase().contains(&w.trim().to_lowercase()))
        };
        wanted(&self.id, &record.id)
            && wanted(&self.sender, &record.sender)
            && self.recipient.as_deref().is_none_or(|r| {
                r.trim().is_empty()
                    || record
                        .recipients
                        .iter()
                        .any(|x| x.to_lowercase().contains(&r.trim().to_lowercase()))
            })
            && wanted(&self.subject, record.subject.as_deref().unwrap_or(""))
            && wanted(&self.check, &record.decided_by.to_string())
            && wanted(&self.outcome, &record.outcome.to_string())
            && self.since.is_none_or(|t| record.time >= t)
            && self.until.is_none_or(|t| record.time < t)
    }
}
