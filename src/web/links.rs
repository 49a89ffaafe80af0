//! Signed links: "send me my link", a link's page (what its button will do;
//! a GET changes nothing) and its button.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::items::act;
use super::session::Who;
use super::signing::Refused;
use super::{Fields, Web, pages};
use crate::archive::unix_now;

/// A link is mailed to one address at most this often.
const LINK_INTERVAL: Duration = Duration::from_secs(3600);

impl Web {
    /// Whether a link may be mailed to `address` now (once an hour, on any
    /// instance); counts it.
    async fn link_due(&self, address: &str) -> bool {
        let key = self.shared.key("web-link", address);
        if let Some(refused) = self.shared.count(&[(key, 1, LINK_INTERVAL)]).await {
            return refused.is_none();
        }
        let mut sent = self.links_sent.lock().unwrap_or_else(|p| p.into_inner());
        if sent.len() > 100_000 {
            sent.retain(|_, at| at.elapsed() < LINK_INTERVAL);
        }
        match sent.get(address) {
            Some(at) if at.elapsed() < LINK_INTERVAL => false,
            _ => {
                sent.insert(address.to_string(), Instant::now());
                true
            }
        }
    }
}

/// "Send me my link": the same answer whatever the address, a link mailed
/// only to hosted addresses that exist, once an hour at most.
pub(super) async fn send_link(State(web): State<Arc<Web>>, Form(form): Fields) -> Response {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    if !web.anonymous_csrf_ok(field("csrf")) {
        return web.forbidden(None);
    }
    let address = field("address").trim().to_lowercase();
    let due = web.link_due(&address).await;
    if due {
        let web = web.clone();
        let address = address.clone();
        // Sent in the background: the answer must not take longer when the
        // address exists.
        tokio::spawn(async move { web.digests.send_link(&web.pipeline, &address).await });
    }
    web.notice(
        StatusCode::OK,
        "Check your mail",
        None,
        // The same bytes for every address: not even the address is echoed.
        "If this address receives mail here, a link to its quarantine is on its way. \
         Links are sent at most once an hour.",
    )
}

/// What a link may do: open the quarantine, or release (or ask to release)
/// one item, for one recipient.
enum LinkScope {
    Open,
    Release(String),
}

fn link_scope(fields: &[String]) -> Option<(String, LinkScope)> {
    match fields {
        [kind, recipient, scope] if kind == "link" => {
            let scope = match scope.split_once(':') {
                Some(("release", id)) => LinkScope::Release(id.to_string()),
                None if scope == "open" => LinkScope::Open,
                _ => return None,
            };
            Some((recipient.clone(), scope))
        }
        _ => None,
    }
}

/// The recipient and scope of a link's token, or the answer refusing it (an
/// expired one offers a new link).
fn opened(web: &Web, token: &str) -> Result<(String, LinkScope), Box<Response>> {
    match web.signer.open(token, unix_now()) {
        Ok(fields) => link_scope(&fields).ok_or_else(|| Box::new(web.forbidden(None))),
        Err(Refused::Expired(fields)) => Err(Box::new(expired(web, &fields))),
        Err(Refused::Tampered) => Err(Box::new(web.forbidden(None))),
    }
}

/// The page a link opens: says what the button will do. Changes nothing.
pub(super) async fn link_page(
    State(web): State<Arc<Web>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let token = query.get("t").map(String::as_str).unwrap_or("");
    let (recipient, scope) = match opened(&web, token) {
        Ok(opened) => opened,
        Err(refused) => return *refused,
    };
    let csrf = web.signer.csrf(token);
    let (what, button) = match &scope {
        LinkScope::Open => (
            format!("Open the mail held for {recipient}."),
            "Open my quarantine".to_string(),
        ),
        LinkScope::Release(id) => {
            let subject = web
                .archive
                .record(id)
                .and_then(|r| r.subject)
                .unwrap_or_else(|| "(no subject)".into());
            (
                format!("Release “{subject}” to {recipient}?"),
                "Release it".to_string(),
            )
        }
    };
    let body = pages::Confirm {
        what: &what,
        token,
        csrf: &csrf,
        button: &button,
    }
    .render()
    .unwrap_or_default();
    web.page(StatusCode::OK, "Confirm", None, body)
}

fn expired(web: &Web, fields: &[String]) -> Response {
    let recipient = link_scope(fields).map(|(r, _)| r);
    let csrf = web.anonymous_csrf();
    let body = pages::Notice {
        text: "This link has expired. Ask for a new one: it is mailed to you.",
        offer_link: recipient.as_deref(),
        csrf: &csrf,
    }
    .render()
    .unwrap_or_default();
    web.page(StatusCode::GONE, "Link expired", None, body)
}

/// The button of a link's page: signs the recipient in, and releases the item
/// the link names.
pub(super) async fn link_act(State(web): State<Arc<Web>>, Form(form): Fields) -> Response {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    let token = field("t");
    let (recipient, scope) = match opened(&web, token) {
        Ok(opened) => opened,
        Err(refused) => return *refused,
    };
    if !web.signer.csrf_matches(token, field("csrf")) {
        return web.forbidden(None);
    }
    let addresses = vec![recipient.clone()];
    let cookie = web.session_cookie(false, &recipient, &addresses);
    let who = Who {
        admin: false,
        name: recipient.clone(),
        addresses,
        session: String::new(),
    };
    match scope {
        LinkScope::Open => ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response(),
        LinkScope::Release(id) => {
            let response = act(&web, &who, &id, "release").await;
            ([(header::SET_COOKIE, cookie)], response).into_response()
        }
    }
}
