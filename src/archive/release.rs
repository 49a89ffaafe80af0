//! What the archive does for a release: finds the item and its message, checks
//! that it can be released (to whom, not twice), and marks it released. Judging
//! the message again and queueing it is the pipeline's (`pipeline/release.rs`):
//! a release takes the same path as new mail.

use super::{Archive, Record, Released, unix_now};

/// An item that may be released, with what to release.
pub struct Releasable {
    pub record: Record,
    /// Those it goes to: all its recipients, or the ones asked for.
    pub recipients: Vec<String>,
    /// The message as the client sent it.
    pub message: Vec<u8>,
}

impl Archive {
    /// Archive item `id`, to release to its recipients or only to `only`; or why
    /// it cannot be.
    pub fn releasable(&self, id: &str, only: &[String]) -> Result<Releasable, String> {
        let record = self
            .record(id)
            .ok_or_else(|| format!("{id}: no such item in the archive"))?;
        if let Some(done) = &record.released {
            return Err(format!(
                "{id}: already released {} by {} (queued as {}); not delivering twice",
                super::report::time_text(done.time),
                done.by,
                done.queue_id
            ));
        }
        if !record.has_message {
            return Err(format!(
                "{id}: a refusal during the SMTP dialogue, so there is no message to release"
            ));
        }
        if record.decided_by.check_name() == "framing" {
            return Err(format!(
                "{id}: refused for how its data was framed (bare line ends); delivering it as \
                 sent would carry the smuggling to the backend"
            ));
        }
        for wanted in only {
            if !record
                .recipients
                .iter()
                .any(|r| r.eq_ignore_ascii_case(wanted))
            {
                return Err(format!(
                    "{id}: {wanted} is not a recipient of this message (its recipients: {})",
                    record.recipients.join(", ")
                ));
            }
        }
        let recipients = if only.is_empty() {
            record.recipients.clone()
        } else {
            only.to_vec()
        };
        let message = self
            .message(id)
            .map_err(|e| format!("{id}: cannot read the archived message: {e}"))?;
        Ok(Releasable {
            record,
            recipients,
            message,
        })
    }

    /// Marks an item released before it is queued: a crash in between loses the
    /// release (the administrator releases again, `quarantine show` telling
    /// why), never delivers twice.
    pub fn mark_released(
        &self,
        record: &mut Record,
        by: &str,
        recipients: &[String],
        queue_id: &str,
    ) -> Result<(), String> {
        record.released = Some(Released {
            time: unix_now(),
            by: by.to_string(),
            recipients: recipients.to_vec(),
            queue_id: queue_id.to_string(),
        });
        self.update(record)
            .map_err(|e| format!("{}: cannot update the archive: {e}", record.id))
    }

    /// Takes the mark back: the message could not be queued after all.
    pub fn unmark_released(&self, record: &mut Record) {
        record.released = None;
        let _ = self.update(record);
    }
}
