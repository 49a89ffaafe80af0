//! The senders page: a recipient's own allow and block lists, or the
//! administrators' list for everyone.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::{Fields, Web, pages};
use crate::policy::lists::{EVERYONE, ListKind};

pub(super) async fn lists_page(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let Some(who) = web.who(&headers).await else {
        return Redirect::to("/").into_response();
    };
    let mut entries = Vec::new();
    if who.admin {
        entries = web.pipeline.lists.entries(Some(EVERYONE)).await;
    } else {
        for address in &who.addresses {
            entries.extend(web.pipeline.lists.entries(Some(address)).await);
        }
    }
    let lines: Vec<pages::ListLine> = entries
        .into_iter()
        .map(|e| pages::ListLine {
            owner: if e.owner == EVERYONE {
                "everyone".into()
            } else {
                e.owner
            },
            sender: e.sender,
            kind: e.kind.to_string(),
            added: format!(
                "{} by {}",
                crate::archive::report::time_text(e.time),
                e.added_by
            ),
        })
        .collect();
    let csrf = web.signer.csrf(&who.session);
    let explain = if who.admin {
        "Senders allowed or blocked for everyone. A block is final; an allow spares greylisting \
         and the DNS blocklists when the sender's SPF passes, never the virus or attachment checks."
    } else {
        "Senders you allow or block. Mail from a blocked sender is refused; an allowed sender \
         skips greylisting when its mail is authenticated (SPF), never the virus or attachment checks."
    };
    let body = pages::Lists {
        explain,
        lines: &lines,
        csrf: &csrf,
    }
    .render()
    .unwrap_or_default();
    web.page(StatusCode::OK, "Senders", Some(&who), body)
}

pub(super) async fn lists_act(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(form): Fields,
) -> Response {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    let who = match web.poster(&headers, &form).await {
        Ok(who) => who,
        Err(refused) => return *refused,
    };
    let owners: Vec<String> = if who.admin {
        vec![EVERYONE.to_string()]
    } else if field("owner").is_empty() {
        who.addresses.clone()
    } else if who.addresses.contains(&field("owner").to_lowercase()) {
        vec![field("owner").to_lowercase()]
    } else {
        return web.forbidden(Some(&who));
    };
    let by = who.by();
    for owner in owners {
        let lists = &web.pipeline.lists;
        let sender = field("sender");
        let result = match (field("action"), ListKind::named(field("action"))) {
            (_, Some(kind)) => lists.add(&owner, sender, kind, &by).await.map(|_| ()),
            ("remove", None) => lists.remove(&owner, sender, &by).await.map(|_| ()),
            _ => return web.forbidden(Some(&who)),
        };
        if let Err(e) = result {
            return web.notice(StatusCode::BAD_REQUEST, "Not done", Some(&who), &e);
        }
    }
    Redirect::to("/lists").into_response()
}
