//! The administrator's queue commands (`mailmoat queue list|show|hold|release|delete|
//! flush`), like Postfix's postqueue and postsuper.
//!
//! The same code runs in two places: in the CLI on the spool of a stopped server
//! (holding the spool lock), and inside a running server, which the CLI reaches over
//! the control socket in the spool folder — so a running server's schedule and its
//! files never disagree.

use std::fmt::Write as _;
use std::io;

use serde::{Deserialize, Serialize};

use super::scheduler::{Scheduler, now_millis};
use super::spool::{QueueState, Spool, valid_id};
use crate::local_time::local;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", content = "id", rename_all = "lowercase")]
pub enum AdminCommand {
    List,
    Show(String),
    Delete(String),
    Hold(String),
    Release(String),
    Flush,
    /// Wait (at most `seconds`) until nothing is being delivered or due; with
    /// `deferred`, until nothing waits in the queue at all (every message
    /// delivered or bounced; held ones aside).
    Wait {
        seconds: u64,
        deferred: bool,
    },
    /// The age distribution of waiting mail by recipient domain (Postfix's
    /// qshape).
    Shape,
    /// Take over the mail of another instance's spool folder (an absolute path).
    Import(String),
}

/// The answer to a command: text for the administrator, and whether it worked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminReply {
    pub ok: bool,
    pub text: String,
}

fn failed(text: impl Into<String>) -> AdminReply {
    AdminReply {
        ok: false,
        text: text.into(),
    }
}

fn done(text: impl Into<String>) -> AdminReply {
    AdminReply {
        ok: true,
        text: text.into(),
    }
}

/// Runs a command on the spool. `scheduler` is the running server's schedule, or
/// `None` offline.
pub fn execute(spool: &Spool, scheduler: Option<&Scheduler>, command: &AdminCommand) -> AdminReply {
    let result = match command {
        AdminCommand::List => list(spool, scheduler),
        AdminCommand::Shape => shape(spool, super::scheduler::now_millis() / 1000),
        // A running server waits in the control socket's handler; offline nothing
        // is ever being delivered.
        AdminCommand::Wait { .. } => Ok(done("no server is running: nothing is being delivered")),
        AdminCommand::Show(id) => with_message(spool, id, |state| show(spool, state, id)),
        AdminCommand::Delete(id) => with_message(spool, id, |state| {
            if let Some(s) = scheduler
                && !s.unschedule(id)
            {
                return Ok(busy(id));
            }
            spool.remove(state, id)?;
            tracing::info!(queue_id = %id, "deleted by the administrator");
            Ok(done(format!("{id}: deleted")))
        }),
        AdminCommand::Hold(id) => with_message(spool, id, |state| {
            if state == QueueState::Hold {
                return Ok(failed(format!("{id}: already on hold")));
            }
            if let Some(s) = scheduler
                && !s.unschedule(id)
            {
                return Ok(busy(id));
            }
            spool.move_message(id, state, QueueState::Hold)?;
            tracing::info!(queue_id = %id, "put on hold by the administrator");
            Ok(done(format!("{id}: placed on hold")))
        }),
        AdminCommand::Release(id) => with_message(spool, id, |state| {
            if state != QueueState::Hold {
                return Ok(failed(format!("{id}: not on hold (it is {state})")));
            }
            let mut envelope = spool.read_envelope(QueueState::Hold, id)?;
            envelope.next_attempt = 0;
            spool.update_envelope(QueueState::Hold, &envelope)?;
            spool.move_message(id, QueueState::Hold, QueueState::Active)?;
            if let Some(s) = scheduler {
                s.schedule(id, QueueState::Active, now_millis());
            }
            tracing::info!(queue_id = %id, "released from hold by the administrator");
            Ok(done(format!("{id}: released")))
        }),
        AdminCommand::Flush => flush(spool, scheduler),
        AdminCommand::Import(folder) => import(spool, scheduler, std::path::Path::new(folder)),
    };
    result.unwrap_or_else(|e| failed(format!("error: {e}")))
}

/// Takes over another instance's spool (a host that will not come back, its
/// folder copied here): puts it in order as that instance would have at its
/// start — its delivered journal replayed, so nothing delivered goes out again,
/// unacknowledged leftovers removed — then commits each message into this
/// spool (held mail stays held, the rest is due now) and only then removes it
/// there. A crash in between delivers a message twice, never loses one.
fn import(
    spool: &Spool,
    scheduler: Option<&Scheduler>,
    folder: &std::path::Path,
) -> io::Result<AdminReply> {
    let other = Spool::existing(folder)?;
    let same = |a: &std::path::Path, b: &std::path::Path| {
        a.canonicalize()
            .ok()
            .is_some_and(|a| b.canonicalize().ok() == Some(a))
    };
    if same(other.root(), spool.root()) {
        return Ok(failed(format!(
            "{} is this instance's own queue",
            folder.display()
        )));
    }
    let Some(_lock) = other.try_lock()? else {
        return Ok(failed(format!(
            "{} is in use by a running mailmoat: stop it, or let it deliver its own mail",
            folder.display()
        )));
    };
    let recovery = other.recover()?;
    let mut moved = std::collections::HashMap::<QueueState, usize>::new();
    let mut damaged = 0;
    for state in QueueState::QUEUED {
        for id in other.ids(state)? {
            let envelope = other.read_envelope(state, &id);
            let message = envelope
                .as_ref()
                .map_err(|e| io::Error::new(e.kind(), e.to_string()))
                .and_then(|envelope| other.read_message_checked(state, envelope));
            let (mut envelope, message) = match (envelope, message) {
                (Ok(envelope), Ok(message)) => (envelope, message),
                _ => {
                    other.set_aside(state, &id)?;
                    damaged += 1;
                    continue;
                }
            };
            let into = match state {
                QueueState::Hold => QueueState::Hold,
                _ => QueueState::Active,
            };
            if spool.find(&envelope.id).is_some() {
                envelope.id = super::spool::new_id();
            }
            envelope.next_attempt = 0;
            spool
                .commit_batch(
                    &[(&envelope, &message, into)],
                    super::spool::FlushMode::Fsync,
                )
                .pop()
                .unwrap_or(Ok(()))?;
            other.remove(state, &id)?;
            if into == QueueState::Active
                && let Some(s) = scheduler
            {
                s.schedule(&envelope.id, QueueState::Active, now_millis());
            }
            tracing::info!(queue_id = %envelope.id, from = %folder.display(), was = %id, state = %into, "imported from another spool");
            *moved.entry(into).or_default() += 1;
        }
    }
    let total: usize = moved.values().sum();
    let mut text = format!(
        "{total} message(s) imported from {} ({} to deliver now, {} on hold)",
        folder.display(),
        moved.get(&QueueState::Active).copied().unwrap_or(0),
        moved.get(&QueueState::Hold).copied().unwrap_or(0),
    );
    if recovery.delivered_removed > 0 {
        let _ = write!(
            text,
            "; {} already delivered there, not imported",
            recovery.delivered_removed
        );
    }
    let corrupt = other.ids(QueueState::Corrupt)?.len() + damaged;
    if corrupt > 0 {
        let _ = write!(
            text,
            "; {corrupt} damaged message(s) left in {}/corrupt",
            folder.display()
        );
    } else {
        let _ = write!(text, "; {} holds no more mail", folder.display());
    }
    Ok(done(text))
}

fn busy(id: &str) -> AdminReply {
    failed(format!(
        "{id}: being delivered right now; try again in a moment"
    ))
}

fn with_message(
    spool: &Spool,
    id: &str,
    action: impl FnOnce(QueueState) -> io::Result<AdminReply>,
) -> io::Result<AdminReply> {
    if !valid_id(id) {
        return Ok(failed(format!(
            "{id}: not a queue id (ids are hexadecimal, as `queue list` shows them)"
        )));
    }
    match spool.find(id) {
        Some(state) => action(state),
        None => Ok(failed(format!("{id}: no such message in the queue"))),
    }
}

/// Like `mailq`: one block per message, pending recipients with their last error.
/// qshape's buckets: up to 5 minutes old, 5-10, 10-20, … 80-160, older.
const SHAPE_MINUTES: [u64; 6] = [5, 10, 20, 40, 80, 160];

/// Recipients still to be delivered (active and deferred mail) by domain and
/// age, most first, with a TOTAL line; ages from `now` (seconds).
fn shape(spool: &Spool, now: u64) -> io::Result<AdminReply> {
    let mut domains: std::collections::BTreeMap<String, [usize; 7]> = Default::default();
    for state in [QueueState::Active, QueueState::Deferred] {
        for id in spool.ids(state)? {
            let Ok(envelope) = spool.read_envelope(state, &id) else {
                continue;
            };
            let minutes = now.saturating_sub(envelope.arrived) / 60;
            let bucket = SHAPE_MINUTES
                .iter()
                .position(|&limit| minutes < limit)
                .unwrap_or(SHAPE_MINUTES.len());
            for rcpt in envelope
                .recipients
                .iter()
                .filter(|r| r.status == super::envelope::RecipientStatus::Pending)
            {
                let domain = rcpt
                    .address
                    .rsplit_once('@')
                    .map_or("", |(_, d)| d)
                    .to_ascii_lowercase();
                domains.entry(domain).or_default()[bucket] += 1;
            }
        }
    }
    let mut rows: Vec<(String, [usize; 7])> = domains.into_iter().collect();
    rows.sort_by(|a, b| {
        let total = |r: &[usize; 7]| r.iter().sum::<usize>();
        total(&b.1).cmp(&total(&a.1)).then_with(|| a.0.cmp(&b.0))
    });
    let mut total = [0usize; 7];
    for (_, counts) in &rows {
        for (t, c) in total.iter_mut().zip(counts) {
            *t += c;
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>24} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5}",
        "", "T", "5", "10", "20", "40", "80", "160", "160+"
    );
    let line = |out: &mut String, name: &str, counts: &[usize; 7]| {
        let _ = write!(out, "{name:>24} {:>5}", counts.iter().sum::<usize>());
        for c in counts {
            let _ = write!(out, " {c:>5}");
        }
        out.push('\n');
    };
    line(&mut out, "TOTAL", &total);
    for (domain, counts) in &rows {
        line(&mut out, domain, counts);
    }
    Ok(done(out.trim_end().to_string()))
}

fn list(spool: &Spool, scheduler: Option<&Scheduler>) -> io::Result<AdminReply> {
    let busy: Vec<String> = scheduler
        .map(|s| {
            s.snapshot()
                .into_iter()
                .filter(|e| e.busy)
                .map(|e| e.id)
                .collect()
        })
        .unwrap_or_default();
    let mut out = String::new();
    let mut count = 0;
    let mut bytes = 0;
    let _ = writeln!(
        out,
        "{:<17} {:>9} {:<26} {:<10} Sender/Recipient",
        "Queue ID", "Size", "Arrival Time", "State"
    );
    for state in QueueState::QUEUED {
        for id in spool.ids(state)? {
            let envelope = match spool.read_envelope(state, &id) {
                Ok(envelope) => envelope,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    let _ = writeln!(out, "{id:<17} (unreadable envelope: {e})");
                    continue;
                }
            };
            count += 1;
            bytes += envelope.size;
            let shown = if busy.contains(&id) {
                "delivering"
            } else {
                state.folder()
            };
            let sender = if envelope.sender.is_empty() {
                "<>"
            } else {
                &envelope.sender
            };
            let _ = writeln!(
                out,
                "{:<17} {:>9} {:<26} {:<10} {}",
                id,
                envelope.size,
                local(envelope.arrived),
                shown,
                sender
            );
            const INDENT: usize = 66;
            for rcpt in envelope.pending() {
                if !rcpt.last_reply.is_empty() {
                    let _ = writeln!(out, "{:INDENT$}({})", "", rcpt.last_reply);
                }
                let _ = writeln!(out, "{:INDENT$}{}", "", rcpt.address);
            }
            if state == QueueState::Deferred && shown != "delivering" {
                let next = match envelope.next_attempt {
                    0 => "now".to_string(),
                    at => local(at),
                };
                let _ = writeln!(
                    out,
                    "{:INDENT$}(attempt {} failed; next attempt {next})",
                    "", envelope.attempts
                );
            }
        }
    }
    if count == 0 {
        return Ok(done("Mail queue is empty"));
    }
    let _ = writeln!(
        out,
        "-- {} KiB in {count} message{}.",
        bytes.div_ceil(1024),
        if count == 1 { "" } else { "s" }
    );
    Ok(done(out))
}

/// The envelope file and the message, as stored.
fn show(spool: &Spool, state: QueueState, id: &str) -> io::Result<AdminReply> {
    let envelope = spool.read_envelope(state, id)?;
    let message = spool.read_message(state, id)?;
    let mut out = format!("# {id} ({state})\n");
    out.push_str(&crate::local_time::with_local_times(&envelope.to_toml()));
    out.push_str("\n# message\n");
    out.push_str(&String::from_utf8_lossy(&message));
    Ok(done(out))
}

/// Makes deferred mail due now. Offline, the envelopes say so, and the next start
/// delivers them at once.
fn flush(spool: &Spool, scheduler: Option<&Scheduler>) -> io::Result<AdminReply> {
    if let Some(s) = scheduler {
        let n = s.flush();
        return Ok(done(format!("{n} message(s) scheduled for delivery now")));
    }
    let mut n = 0;
    for id in spool.ids(QueueState::Deferred)? {
        let mut envelope = spool.read_envelope(QueueState::Deferred, &id)?;
        envelope.next_attempt = 0;
        spool.update_envelope(QueueState::Deferred, &envelope)?;
        n += 1;
    }
    Ok(done(format!(
        "{n} deferred message(s) will be delivered when the server starts"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::envelope::{Envelope, RecipientStatus};
    use crate::queue::spool::new_id;

    #[test]
    fn an_id_tells_when_its_message_arrived() {
        let now = crate::queue::scheduler::now_millis() / 1000;
        let arrived = crate::queue::spool::arrival_of(&new_id()).unwrap();
        assert!(arrived.abs_diff(now) <= 1, "{arrived} vs {now}");
        assert_eq!(crate::queue::spool::arrival_of("XYZ"), None);
    }

    #[test]
    fn shape_counts_waiting_recipients_by_domain_and_age() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let now = 1_800_000_000;
        let minutes_ago = |m: u64| now - m * 60;
        let queue = |arrived: u64, rcpts: &[&str], state: QueueState| {
            let mut envelope = Envelope::new(
                new_id(),
                "s@remote.test".into(),
                rcpts.iter().map(|r| r.to_string()),
            );
            envelope.arrived = arrived;
            spool.commit(&envelope, b"Subject: x\r\n\r\nx\r\n").unwrap();
            if state != QueueState::Active {
                spool
                    .move_message(&envelope.id, QueueState::Active, state)
                    .unwrap();
            }
            envelope
        };
        queue(
            minutes_ago(1),
            &["a@big.test", "b@big.test"],
            QueueState::Active,
        );
        queue(minutes_ago(30), &["c@big.test"], QueueState::Deferred);
        queue(minutes_ago(500), &["d@small.test"], QueueState::Deferred);
        queue(minutes_ago(7), &["e@small.test"], QueueState::Hold);
        // A recipient already delivered is not waiting.
        let mut partly = queue(
            minutes_ago(12),
            &["f@small.test", "g@big.test"],
            QueueState::Deferred,
        );
        partly.recipients[1].status = RecipientStatus::Delivered;
        spool
            .update_envelope(QueueState::Deferred, &partly)
            .unwrap();
        let text = shape(&spool, now).unwrap().text;
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines[0],
            ["T", "5", "10", "20", "40", "80", "160", "160+"],
            "{text}"
        );
        assert_eq!(
            lines[1],
            ["TOTAL", "5", "2", "0", "1", "1", "0", "0", "1"],
            "{text}"
        );
        assert_eq!(
            lines[2],
            ["big.test", "3", "2", "0", "0", "1", "0", "0", "0"],
            "{text}"
        );
        assert_eq!(
            lines[3],
            ["small.test", "2", "0", "0", "1", "0", "0", "0", "1"],
            "{text}"
        );
        assert_eq!(lines.len(), 4, "{text}");
    }
}
