//! Getting a wrongly refused message to its recipients: the original goes through
//! the rules again without the one that caught it, then into the queue. An item is
//! released once; a second release is refused with when and by whom.

use super::{Archive, Released, unix_now};
use crate::config::Config;
use crate::queue::Queue;
use crate::queue::envelope::Envelope;
use crate::queue::spool::new_id;
use crate::rules::{Facts, Final, RuleSet};

/// Releases archive item `id` to its recipients, or only to `only`. `by` says who
/// asked, for the log and the record. Returns the new queue id.
pub async fn release(
    archive: &Archive,
    rules: &RuleSet,
    queue: &Queue,
    config: &Config,
    id: &str,
    only: &[String],
    by: &str,
) -> Result<String, String> {
    let _one_at_a_time = archive.release_guard.lock().await;
    let mut record = archive
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
    let recipients: Vec<String> = if only.is_empty() {
        record.recipients.clone()
    } else {
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
        only.to_vec()
    };
    let message = archive
        .message(id)
        .map_err(|e| format!("{id}: cannot read the archived message: {e}"))?;

    // Through the rules again — the same judging, with the configured limits —
    // leaving out only the rule that caught it.
    let client_ip = record
        .client_ip
        .parse()
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    let facts = Facts {
        client_ip,
        client_name: record.client_name.as_deref(),
        helo: &record.helo,
        authenticated: record.authenticated,
        trusted: false,
        sender: &record.sender,
        recipients: &recipients,
        size: 0,
        content: None,
        // Not kept with the record: a released message's authentication
        // conditions read as none.
        auth: Default::default(),
        // A release is the administrator's decision: not scanned again.
        scan: None,
    };
    let verdict = rules.judge_message(
        facts,
        &message,
        &config.rules.limits(),
        record.decided_by.rule(),
    );
    if verdict.decision != Final::Deliver {
        return Err(format!(
            "{id}: rule {} catches it as well ({:?}); change that rule or release it with the rule in shadow mode",
            verdict.decided_by.unwrap_or_default(),
            verdict.decision
        ));
    }
    let changed = verdict.apply(&message);
    let queue_id = new_id();
    // Our release line above the client's own, as it came in: the backend sees
    // the whole way the message took.
    let mut bytes = crate::queue::trace::released(&config.server.hostname, id, &queue_id);
    match &record.received {
        Some(line) => bytes.extend_from_slice(line.as_bytes()),
        None => bytes.extend_from_slice(&crate::queue::trace::reconstructed(
            &config.server.hostname,
            &record,
        )),
    }
    bytes.extend_from_slice(&changed);
    let envelope = Envelope {
        client_ip: record.client_ip.clone(),
        helo: record.helo.clone(),
        eight_bit: !bytes.is_ascii(),
        ..Envelope::new(
            queue_id.clone(),
            verdict.sender.clone(),
            verdict.recipients.clone(),
        )
    };
    // Marked released before it is queued: a crash in between loses the release
    // (the administrator releases again with `quarantine show` telling why), never
    // delivers twice.
    record.released = Some(Released {
        time: unix_now(),
        by: by.to_string(),
        recipients: recipients.clone(),
        queue_id: queue_id.clone(),
    });
    archive
        .update(&record)
        .map_err(|e| format!("{id}: cannot update the archive: {e}"))?;
    if let Err(e) = queue.enqueue(envelope, bytes).await {
        record.released = None;
        let _ = archive.update(&record);
        return Err(format!("{id}: cannot queue the message: {e}"));
    }
    tracing::info!(archive_id = id, queue_id = %queue_id, by, recipients = %crate::logging::list(recipients), "released from the archive");
    Ok(queue_id)
}

/// Releases the items a trusted client asked for by writing to their signed
/// release addresses; the text says what happened, for the 250 or the 550.
pub async fn by_mail(
    archive: &Archive,
    rules: &RuleSet,
    queue: &Queue,
    config: &Config,
    ids: &[String],
    by: &str,
) -> Result<String, String> {
    let mut done = Vec::new();
    for id in ids {
        match release(archive, rules, queue, config, id, &[], by).await {
            Ok(queue_id) => done.push(format!("Released {id} (queued as {queue_id})")),
            Err(e) => {
                tracing::info!(archive_id = %id, by, error = %e, "release by mail refused");
                return Err(e);
            }
        }
    }
    Ok(done.join("; "))
}
