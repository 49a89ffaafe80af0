//! What recipients and administrators do with an archived item besides
//! releasing it: delete their copy, ask for a release an administrator must
//! approve, and the record of every action (who, what, when).

use super::{Action, Archive, Record, ReleaseRequest, unix_now};

/// Checks whose items a recipient may only ask to have released: what they
/// found is dangerous whatever the recipient believes (a virus, an attachment
/// nobody could look into, a structure readers disagree on, a domain that
/// asks for its forged mail to be refused).
const ADMIN_ONLY: &[&str] = &[
    "antivirus",
    "mime.unscannable",
    "mime.ambiguous",
    "mime.partial",
    "dmarc",
];

/// May only an administrator release this item?
pub fn needs_approval(record: &Record) -> bool {
    ADMIN_ONLY.contains(&record.decided_by.check_name())
}

impl Archive {
    /// Adds an action to an item's record.
    pub fn note(&self, record: &mut Record, by: &str, what: String) -> Result<(), String> {
        tracing::info!(archive_id = %record.id, by, action = %what, "quarantine action");
        record.actions.push(Action {
            time: unix_now(),
            by: by.to_string(),
            what,
        });
        self.update(record)
            .map_err(|e| format!("{}: cannot update the archive: {e}", record.id))
    }

    /// A recipient deletes their copy; the item goes when every recipient has
    /// deleted theirs.
    pub fn delete_for(&self, id: &str, recipient: &str, by: &str) -> Result<(), String> {
        let mut record = self
            .record(id)
            .ok_or_else(|| format!("{id}: no such item"))?;
        let recipient = recipient.to_lowercase();
        if !record.deleted_for.contains(&recipient) {
            record.deleted_for.push(recipient.clone());
        }
        let everyone = record
            .recipients
            .iter()
            .all(|r| record.deleted_for.contains(&r.to_lowercase()));
        if everyone {
            tracing::info!(
                archive_id = id,
                by,
                "quarantine action: deleted by its last recipient"
            );
            self.delete(id).map_err(|e| format!("{id}: {e}"))?;
            return Ok(());
        }
        self.note(&mut record, by, format!("deleted for {recipient}"))
    }

    /// A recipient asks for the release of an item only an administrator may
    /// release.
    /// `for_recipients` ask for the item's release; a request still open
    /// gains them, so whoever else asks is released to on approval too.
    pub fn request_release(
        &self,
        id: &str,
        for_recipients: &[String],
        by: &str,
    ) -> Result<(), String> {
        let mut record = self
            .record(id)
            .ok_or_else(|| format!("{id}: no such item"))?;
        match record.request.as_mut() {
            Some(open) if open.decided.is_none() => {
                let new: Vec<String> = for_recipients
                    .iter()
                    .filter(|r| !open.recipients.contains(r))
                    .cloned()
                    .collect();
                if new.is_empty() {
                    return Ok(());
                }
                open.recipients.extend(new);
            }
            _ => {
                record.request = Some(ReleaseRequest {
                    by: by.to_string(),
                    time: unix_now(),
                    recipients: for_recipients.to_vec(),
                    decided: None,
                });
            }
        }
        let what = format!("asked for a release to {}", for_recipients.join(", "));
        self.note(&mut record, by, what)
    }

    /// An administrator approves or declines a request (approving does not
    /// release: the caller releases, then records it).
    pub fn decide_request(&self, id: &str, approve: bool, by: &str) -> Result<Record, String> {
        let mut record = self
            .record(id)
            .ok_or_else(|| format!("{id}: no such item"))?;
        let Some(request) = record.request.as_mut() else {
            return Err(format!("{id}: nobody asked for its release"));
        };
        request.decided = Some((approve, by.to_string(), unix_now()));
        let what = if approve {
            "approved the release request"
        } else {
            "declined the release request"
        };
        self.note(&mut record, by, what.into())?;
        Ok(record)
    }
}
