//! The items: the list (and the administrators' search), one item's page,
//! and what is done with an item.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::session::Who;
use super::{Fields, Web, pages};
use crate::archive::Record;
use crate::archive::actions::needs_approval;
use crate::policy::lists::{EVERYONE, ListKind};

/// The most items a list shows, newest first.
const PAGE: usize = 500;

/// The administrators' search (the message trace) as the form sends it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Search {
    /// The queue id the client was told (`queue_id` in the log).
    pub id: String,
    pub sender: String,
    pub recipient: String,
    pub subject: String,
    pub check: String,
    pub outcome: String,
    pub since: String,
    pub until: String,
}

impl Search {
    /// The archive's search, or what in the form cannot be read.
    fn read(&self) -> Result<crate::archive::search::Search, String> {
        let text = |field: &str| (!field.trim().is_empty()).then(|| field.trim().to_string());
        let time = |name: &str, field: &str, parse: fn(&str) -> Option<u64>| {
            if field.trim().is_empty() {
                return Ok(None);
            }
            parse(field).map(Some).ok_or_else(|| {
                format!("“{name}” {field:?}: write a time ago (2h, 3days) or a date (2026-12-01).")
            })
        };
        Ok(crate::archive::search::Search {
            id: text(&self.id),
            sender: text(&self.sender),
            recipient: text(&self.recipient),
            subject: text(&self.subject),
            check: text(&self.check),
            outcome: text(&self.outcome),
            since: time("since", &self.since, crate::local_time::parse_since)?,
            until: time("until", &self.until, crate::local_time::parse_until)?,
        })
    }
}

impl Web {
    pub(super) fn row(&self, record: &Record) -> pages::Row {
        let state = if let Some(request) = &record.request
            && request.decided.is_none()
        {
            "release requested".to_string()
        } else if !record.released_to().is_empty() {
            format!("released to {}", record.released_to().join(", "))
        } else if record.has_message {
            record.outcome.to_string()
        } else {
            format!("{} during the dialogue (no message kept)", record.outcome)
        };
        pages::Row {
            id: record.id.clone(),
            date: chrono::DateTime::from_timestamp(record.time as i64, 0)
                .map(|t| {
                    t.with_timezone(&chrono::Local)
                        .format("%Y-%m-%d %H:%M")
                        .to_string()
                })
                .unwrap_or_default(),
            sender: if record.sender.is_empty() {
                "<>".into()
            } else {
                record.sender.clone()
            },
            from: record.from.clone().unwrap_or_default(),
            subject: record
                .subject
                .clone()
                .unwrap_or_else(|| "(no subject)".into()),
            why: why(record),
            size: if record.size == 0 {
                "—".into()
            } else {
                format!("{} KB", record.size.div_ceil(1024))
            },
            state,
        }
    }

    /// Releases an item to `to` as `by`: judged again by every step but the
    /// one that held it, queued like new mail.
    pub(super) async fn release(
        &self,
        record: &Record,
        to: &[String],
        by: &str,
    ) -> Result<String, String> {
        self.pipeline
            .release(&self.rules.current(), &record.id, to, by)
            .await
    }
}

/// Words for why an item was held.
pub(super) fn why(record: &Record) -> String {
    let check = record.decided_by.check_name();
    let words = match check {
        "antivirus" => "a virus was found",
        "spam" => "it looks like spam",
        "mime.unscannable" => "an attachment could not be checked",
        "mime.ambiguous" | "mime.partial" => "its structure could be read two ways",
        "dmarc" => "the sender's domain says it is forged (DMARC)",
        "lists.recipient" => "the sender is on the recipient's block list",
        "lists.global" => "the sender is on the site's block list",
        "greylist" => "greylisted",
        "rule" => "",
        _ => "",
    };
    match (&record.decided_by, words) {
        (crate::verdict::DecidedBy::Rule(rule), _) => format!("rule {rule}: {}", record.reason),
        (_, "") => format!("{check}: {}", record.reason),
        (_, words) => words.to_string(),
    }
}

pub(super) async fn index(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Query(search): Query<Search>,
) -> Response {
    let Some(who) = web.who(&headers).await else {
        let csrf = web.anonymous_csrf();
        let body = pages::Login {
            message: None,
            csrf: &csrf,
            address: "",
        }
        .render()
        .unwrap_or_default();
        return web.page(StatusCode::OK, "Sign in", None, body);
    };
    // Recipients see all of theirs; only administrators search.
    let (wanted, problem) = match who.admin.then(|| search.read()) {
        Some(Ok(wanted)) => (wanted, None),
        // An unreadable search finds nothing rather than everything.
        Some(Err(problem)) => (
            crate::archive::search::Search {
                until: Some(0),
                ..Default::default()
            },
            Some(problem),
        ),
        None => (Default::default(), None),
    };
    // A recipient's items come from the recipients' index; an
    // administrator's newest first, read only until the page is full.
    let mut records: Vec<Record> = if who.admin {
        web.archive
            .records_newest_first()
            .filter(|r| wanted.matches(r))
            .take(PAGE)
            .collect()
    } else {
        web.archive
            .records_for(&who.addresses)
            .into_iter()
            .filter(|r| !who.own(r).is_empty())
            .collect()
    };
    records.sort_by_key(|r| std::cmp::Reverse(r.time));
    let rows: Vec<pages::Row> = records.iter().take(PAGE).map(|r| web.row(r)).collect();
    let body = pages::Items {
        rows: &rows,
        search: who.admin.then_some(&search),
        empty: if who.admin {
            "Nothing matches."
        } else {
            "Nothing is held for you."
        },
        problem: problem.as_deref(),
    }
    .render()
    .unwrap_or_default();
    let title = if who.admin {
        "Every message held"
    } else {
        "Messages held for you"
    };
    web.page(StatusCode::OK, title, Some(&who), body)
}

pub(super) async fn item_page(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some(who) = web.who(&headers).await else {
        return Redirect::to("/").into_response();
    };
    let Some(record) = web.archive.record(&id).filter(|r| !who.own(r).is_empty()) else {
        return web.forbidden(Some(&who));
    };
    let row = web.row(&record);
    let preview = if record.has_message {
        web.archive
            .message(&id)
            .ok()
            .map(|m| text_preview(&m))
            .unwrap_or_default()
    } else {
        "Refused during the SMTP dialogue: the sender was told, and no message was kept.".into()
    };
    let open_request = record.request.as_ref().is_some_and(|r| r.decided.is_none());
    let releasable = record.has_message
        && who
            .own(&record)
            .iter()
            .any(|a| !record.released_to().contains(a));
    let csrf = web.signer.csrf(&who.session);
    let history = record
        .actions
        .iter()
        .map(|a| {
            format!(
                "{}: {} by {}",
                crate::archive::report::time_text(a.time),
                a.what,
                a.by
            )
        })
        .collect();
    let body = pages::Item {
        row: &row,
        recipients: record.recipients.join(", "),
        reply: &record.reply,
        csrf: &csrf,
        can_release: releasable && (who.admin || !needs_approval(&record)),
        must_request: releasable && !who.admin && needs_approval(&record) && !open_request,
        approvable: who.admin && open_request,
        has_sender: !record.sender.is_empty(),
        danger: &why(&record),
        preview: &preview,
        history,
    }
    .render()
    .unwrap_or_default();
    web.page(StatusCode::OK, &row.subject, Some(&who), body)
}

/// The text of a message for the preview: its plain text (or its HTML made
/// text), never its HTML itself; at most 20,000 characters.
fn text_preview(message: &[u8]) -> String {
    let Some(parsed) = mail_parser::MessageParser::new().parse(message) else {
        return String::new();
    };
    let text = parsed
        .body_text(0)
        .map(|t| t.into_owned())
        .unwrap_or_default();
    text.chars().take(20_000).collect()
}

pub(super) async fn item_act(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Fields,
) -> Response {
    let who = match web.poster(&headers, &form).await {
        Ok(who) => who,
        Err(refused) => return *refused,
    };
    let action = form.get("action").map_or("", String::as_str);
    act(&web, &who, &id, action).await
}

/// One action on one item, by someone it belongs to.
pub(super) async fn act(web: &Web, who: &Who, id: &str, action: &str) -> Response {
    let Some(record) = web.archive.record(id) else {
        return web.notice(
            StatusCode::NOT_FOUND,
            "Gone",
            Some(who),
            "That message is no longer kept.",
        );
    };
    let own = who.own(&record);
    if own.is_empty() {
        return web.forbidden(Some(who));
    }
    let by = who.by();
    let list_owners = if who.admin {
        vec![EVERYONE.to_string()]
    } else {
        own.clone()
    };
    let outcome: Result<String, String> = match action {
        "release" | "release-allow" if needs_approval(&record) && !who.admin => Err(
            "Only an administrator can release this message: ask for its release instead.".into(),
        ),
        // Allowing the null sender would release every bounce.
        "release-allow" if record.sender.is_empty() => {
            Err("A message without a sender cannot allow its sender: release it alone.".into())
        }
        "release" => {
            let to = if who.admin { Vec::new() } else { own.clone() };
            web.release(&record, &to, &by)
                .await
                .map(|queue_id| format!("Released: delivered as {queue_id}."))
        }
        "release-allow" => {
            let mut said = Vec::new();
            for owner in &list_owners {
                match web
                    .pipeline
                    .lists
                    .add(owner, &record.sender, ListKind::Allow, &by)
                    .await
                {
                    Ok(entry) => said.push(format!("{} is allowed", entry.sender)),
                    Err(e) => said.push(e),
                }
            }
            // Every message held from this sender for these recipients goes.
            let mut released = 0;
            let candidates = if who.admin {
                web.archive.records().collect()
            } else {
                web.archive.records_for(&who.addresses)
            };
            let held: Vec<Record> = candidates
                .into_iter()
                .filter(|r| r.sender.eq_ignore_ascii_case(&record.sender) && r.has_message)
                .filter(|r| !needs_approval(r))
                .collect();
            for item in held {
                let to: Vec<String> = who
                    .own(&item)
                    .into_iter()
                    .filter(|a| !item.released_to().contains(a))
                    .collect();
                if to.is_empty() {
                    continue;
                }
                let to = if who.admin { Vec::new() } else { to };
                if web.release(&item, &to, &by).await.is_ok() {
                    released += 1;
                }
            }
            Ok(format!(
                "{}; {released} message(s) released.",
                said.join("; ")
            ))
        }
        "request" => web
            .archive
            .request_release(id, &own, &by)
            .map(|()| "Your request was sent: an administrator decides.".into()),
        "approve" | "decline" if who.admin => {
            let approve = action == "approve";
            match web.archive.decide_request(id, approve, &by) {
                // To those who asked, not to every recipient of the item.
                Ok(record) if approve => {
                    let to = record
                        .request
                        .as_ref()
                        .map(|r| r.recipients.clone())
                        .unwrap_or_default();
                    web.release(&record, &to, &by)
                        .await
                        .map(|queue_id| format!("Approved and released as {queue_id}."))
                }
                Ok(_) => Ok("Declined.".into()),
                Err(e) => Err(e),
            }
        }
        "allow" | "block" => {
            let kind = ListKind::named(action).expect("allow or block");
            let mut said = Vec::new();
            for owner in &list_owners {
                match web
                    .pipeline
                    .lists
                    .add(owner, &record.sender, kind, &by)
                    .await
                {
                    Ok(entry) => said.push(format!("{} is on the {kind} list", entry.sender)),
                    Err(e) => {
                        return web.notice(StatusCode::BAD_REQUEST, "Not done", Some(who), &e);
                    }
                }
            }
            let what = format!("{kind} sender {}", record.sender);
            let mut record = record.clone();
            let _ = web.archive.note(&mut record, &by, what);
            Ok(said.join("; ") + ".")
        }
        "delete" if who.admin => {
            tracing::info!(archive_id = id, by, "quarantine action: deleted");
            web.archive
                .delete(id)
                .map(|_| "Deleted.".to_string())
                .map_err(|e| e.to_string())
        }
        "delete" => {
            let mut result = Ok("Deleted.".to_string());
            for address in &own {
                if let Err(e) = web.archive.delete_for(id, address, &by) {
                    result = Err(e);
                }
            }
            result
        }
        _ => return web.forbidden(Some(who)),
    };
    match outcome {
        Ok(text) => web.notice(StatusCode::OK, "Done", Some(who), &text),
        Err(text) => web.notice(StatusCode::CONFLICT, "Not done", Some(who), &text),
    }
}

pub(super) async fn requests_page(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let Some(who) = web.who(&headers).await.filter(|w| w.admin) else {
        return web.forbidden(None);
    };
    let rows: Vec<pages::Row> = web
        .archive
        .records()
        .filter(|r| r.request.as_ref().is_some_and(|q| q.decided.is_none()))
        .map(|r| web.row(&r))
        .collect();
    let body = pages::Items {
        rows: &rows,
        search: None,
        empty: "No release is waiting for a decision.",
        problem: None,
    }
    .render()
    .unwrap_or_default();
    web.page(StatusCode::OK, "Release requests", Some(&who), body)
}
