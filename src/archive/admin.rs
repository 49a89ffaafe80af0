//! `mailmoat quarantine list|show|release|delete|purge`: the administrator's view
//! of the archive. Runs inside a running server (through the control socket) or on
//! the archive of a stopped one.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::search::Search;
use super::{Archive, unix_now};
use crate::queue::admin::AdminReply;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum QuarantineCommand {
    List {
        #[serde(flatten)]
        search: Search,
    },
    Show {
        id: String,
    },
    Release {
        id: String,
        rcpts: Vec<String>,
        by: String,
    },
    Delete {
        id: String,
    },
    Purge {
        older_than_secs: u64,
    },
}

fn reply(ok: bool, text: impl Into<String>) -> AdminReply {
    AdminReply {
        ok,
        text: text.into(),
    }
}

/// Runs a command on the archive. A release is judged and queued by the
/// pipeline (`control::quarantine`), not here.
pub fn execute(archive: &Archive, command: &QuarantineCommand) -> AdminReply {
    match command {
        QuarantineCommand::List { search } => {
            let header = ["Archive ID", "Time", "Outcome", "Rule/check"];
            let rows: Vec<([String; 4], String)> = archive
                .records()
                .filter(|r| search.matches(r))
                .map(|record| {
                    let sender = if record.sender.is_empty() {
                        "<>"
                    } else {
                        &record.sender
                    };
                    let released = record.released_to();
                    let note = if !released.is_empty() {
                        format!("  [released to {}]", released.join(", "))
                    } else if record.has_message {
                        "  [message kept]".into()
                    } else {
                        String::new()
                    };
                    (
                        [
                            record.id.clone(),
                            crate::local_time::local(record.time),
                            record.outcome.to_string(),
                            record.decided_by.to_string(),
                        ],
                        format!("{sender} -> {}{note}", record.recipients.join(", ")),
                    )
                })
                .collect();
            if rows.is_empty() {
                return reply(true, "The archive holds nothing that matches");
            }
            // Each column as wide as its widest cell: outcomes and rule names
            // vary in length, and the columns stay lined up whatever they are.
            let widths: Vec<usize> = (0..header.len())
                .map(|i| {
                    rows.iter()
                        .map(|(cells, _)| cells[i].chars().count())
                        .chain([header[i].len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |cells: &[&str], rest: &str| -> String {
                let mut line = String::new();
                for (cell, width) in cells.iter().zip(&widths) {
                    let _ = write!(line, "{cell:<width$}  ");
                }
                line.push_str(rest);
                line
            };
            let mut out = String::new();
            let _ = writeln!(out, "{}", line(&header, "Sender -> Recipients"));
            for (cells, rest) in &rows {
                let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
                let _ = writeln!(out, "{}", line(&cells, rest));
            }
            let _ = writeln!(out, "-- {} item(s)", rows.len());
            reply(true, out)
        }
        QuarantineCommand::Show { id } => {
            let Some(record) = archive.record(id) else {
                return reply(false, format!("{id}: no such item in the archive"));
            };
            let mut out = format!("# {id}\n");
            out.push_str(&crate::local_time::with_local_times(
                &toml::to_string(&record).unwrap_or_default(),
            ));
            if let Some(address) = record
                .has_message
                .then(|| archive.release_address(id))
                .flatten()
            {
                let _ = writeln!(out, "release_address = \"{address}\"");
            }
            if record.has_message {
                match archive.message(id) {
                    Ok(message) => {
                        let content = crate::mime::Content::analyze(&message, &Default::default());
                        out.push_str("\n# headers\n");
                        out.push_str(&String::from_utf8_lossy(
                            &message[..crate::mime::edit::header_end(&message)],
                        ));
                        out.push_str("# parts\n");
                        for attachment in &content.attachments {
                            let _ = writeln!(
                                out,
                                "attachment {:?} type {} magic {}{}",
                                attachment.names,
                                attachment.declared_type,
                                attachment.sniffed.unwrap_or("-"),
                                attachment
                                    .inside
                                    .as_deref()
                                    .map(|a| format!(" inside {a}"))
                                    .unwrap_or_default()
                            );
                        }
                    }
                    Err(e) => {
                        let _ = writeln!(out, "(message file unreadable: {e})");
                    }
                }
            }
            reply(true, out)
        }
        QuarantineCommand::Release { id, .. } => {
            reply(false, format!("{id}: a release goes through the pipeline"))
        }
        QuarantineCommand::Delete { id } => match archive.delete(id) {
            Ok(true) => reply(true, format!("{id}: deleted")),
            Ok(false) => reply(false, format!("{id}: no such item in the archive")),
            Err(e) => reply(false, format!("{id}: {e}")),
        },
        QuarantineCommand::Purge { older_than_secs } => {
            let cutoff = unix_now().saturating_sub(*older_than_secs);
            let old: Vec<String> = archive
                .records()
                .filter(|r| r.time < cutoff)
                .map(|r| r.id)
                .collect();
            for id in &old {
                if let Err(e) = archive.delete(id) {
                    return reply(false, format!("{id}: {e}"));
                }
            }
            reply(true, format!("{} item(s) purged", old.len()))
        }
    }
}
