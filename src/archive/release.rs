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
        let already = record.released_to();
        let wanted: Vec<String> = if only.is_empty() {
            record.recipients.clone()
        } else {
            only.to_vec()
        };
        if !already.is_empty() && wanted.iter().all(|w| already.contains(&w.to_lowercase())) {
            let done = record.released.as_ref().expect("released to someone");
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
        // Those not released to yet.
        let recipients: Vec<String> = wanted
            .into_iter()
            .filter(|w| !already.contains(&w.to_lowercase()))
            .collect();
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
        let release = Released {
            time: unix_now(),
            by: by.to_string(),
            recipients: recipients.to_vec(),
            queue_id: queue_id.to_string(),
        };
        record.actions.push(super::Action {
            time: release.time,
            by: by.to_string(),
            what: format!("released to {} as {queue_id}", recipients.join(", ")),
        });
        match record.released {
            None => record.released = Some(release),
            Some(_) => record.more_releases.push(release),
        }
        self.update(record)
            .map_err(|e| format!("{}: cannot update the archive: {e}", record.id))
    }

    /// Takes the mark back: the message could not be queued after all.
    pub fn unmark_released(&self, record: &mut Record) {
        record.actions.pop();
        if record.more_releases.pop().is_none() {
            record.released = None;
        }
        let _ = self.update(record);
    }
}
