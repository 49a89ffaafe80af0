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
    /// Wait (at most this many seconds) until nothing is being delivered or due.
    Wait(u64),
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
        // A running server waits in the control socket's handler; offline nothing
        // is ever being delivered.
        AdminCommand::Wait(_) => Ok(done("no server is running: nothing is being delivered")),
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
    };
    result.unwrap_or_else(|e| failed(format!("error: {e}")))
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
