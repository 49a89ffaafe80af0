//! The recipients' quarantine on the web (`[web] listen`): each recipient sees
//! what was held or refused for their addresses and releases it, deletes it,
//! allows or blocks its sender; administrators see everything, search it and
//! decide release requests. Signed links open it from the digest. A GET never
//! acts (link scanners fetch every URL in a mail); every action is a POST with
//! the form token; every action is recorded in the item's record and the log.
//! Nothing here is reachable unless `[web] listen` is set.

pub mod digest;
pub mod pages;
pub mod signing;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::archive::actions::needs_approval;
use crate::archive::{Archive, Record, unix_now};
use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::policy::lists::{EVERYONE, ListKind};
use crate::queue::Queue;
use crate::rules::RulesHandle;
use signing::{Refused, Signer};

const COOKIE: &str = "mailmoat_session";
/// Failed sign-ins from one address within a minute before each further one
/// is refused for the rest of the minute.
const LOGIN_FAILURES: u32 = 10;
/// A link is mailed to one address at most this often.
const LINK_INTERVAL: Duration = Duration::from_secs(3600);

/// What the pages need of the running server.
pub struct Web {
    config: Arc<Config>,
    signer: Signer,
    archive: Arc<Archive>,
    pipeline: Arc<Pipeline>,
    rules: Arc<RulesHandle>,
    digests: Arc<digest::Digests>,
    /// Sign-in failures and links sent are counted here for every instance
    /// when `[shared]` is set; the local maps are the fallback.
    shared: Arc<crate::shared_state::SharedState>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    links_sent: Mutex<HashMap<String, Instant>>,
}

/// The client's address, put in each request by the listener.
#[derive(Clone, Copy)]
struct Client(IpAddr);

/// Who is signed in.
#[derive(Debug, Clone)]
struct Who {
    admin: bool,
    name: String,
    /// The addresses whose items they see (lower case).
    addresses: Vec<String>,
    /// The cookie's value: the form token is bound to it.
    session: String,
}

impl Who {
    fn label(&self) -> String {
        if self.admin {
            format!("{} (administrator)", self.name)
        } else {
            self.name.clone()
        }
    }

    /// For the record and the log.
    fn by(&self) -> String {
        if self.admin {
            format!("admin {} (web)", self.name)
        } else {
            format!("{} (web)", self.name)
        }
    }

    /// Their addresses among the item's recipients (all of them for an
    /// administrator); none: the item is not theirs.
    fn own(&self, record: &Record) -> Vec<String> {
        record
            .recipients
            .iter()
            .map(|r| r.to_lowercase())
            .filter(|r| {
                self.admin || (self.addresses.contains(r) && !record.deleted_for.contains(r))
            })
            .collect()
    }
}

/// The administrators' search (the message trace).
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
}

type Fields = Form<HashMap<String, String>>;

impl Web {
    pub fn new(
        config: Arc<Config>,
        archive: Arc<Archive>,
        pipeline: Arc<Pipeline>,
        rules: Arc<RulesHandle>,
        queue: Arc<Queue>,
        store: &crate::store::Store,
        shared: Arc<crate::shared_state::SharedState>,
    ) -> anyhow::Result<Arc<Web>> {
        let secret = config
            .web
            .secret
            .as_ref()
            .map(|s| s.expose().to_string())
            .unwrap_or_default();
        let digests = Arc::new(digest::Digests::new(
            config.clone(),
            archive.clone(),
            queue,
            Signer::new(&secret),
            store.tree("digests-sent")?,
        ));
        Ok(Arc::new(Web {
            signer: Signer::new(&secret),
            config,
            archive,
            pipeline,
            rules,
            digests,
            shared,
            failures: Mutex::new(HashMap::new()),
            links_sent: Mutex::new(HashMap::new()),
        }))
    }

    pub fn digests(&self) -> Arc<digest::Digests> {
        self.digests.clone()
    }

    fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/", get(index))
            .route("/style.css", get(style))
            .route("/login", post(login))
            .route("/logout", post(logout))
            .route("/send-link", post(send_link))
            .route("/link", get(link_page).post(link_act))
            .route("/item/{id}", get(item_page).post(item_act))
            .route("/lists", get(lists_page).post(lists_act))
            .route("/requests", get(requests_page))
            .layer(axum::middleware::from_fn_with_state(self.clone(), guard))
            .with_state(self.clone())
    }

    /// The signed-in user of a request, from its cookie.
    fn who(&self, headers: &HeaderMap) -> Option<Who> {
        let cookies = headers.get(header::COOKIE)?.to_str().ok()?;
        let session = cookies
            .split(';')
            .find_map(|c| c.trim().strip_prefix(&format!("{COOKIE}=")))?;
        let fields = self.signer.open(session, unix_now()).ok()?;
        match fields.as_slice() {
            [kind, role, name, addresses] if kind == "session" => Some(Who {
                admin: role == "admin",
                name: name.clone(),
                addresses: addresses
                    .split(',')
                    .filter(|a| !a.is_empty())
                    .map(str::to_string)
                    .collect(),
                session: session.to_string(),
            }),
            _ => None,
        }
    }

    /// A session cookie for a user.
    fn session_cookie(&self, admin: bool, name: &str, addresses: &[String]) -> HeaderValue {
        let expires = unix_now() + self.config.web.session_lifetime.as_secs();
        let role = if admin { "admin" } else { "user" };
        let joined = addresses.join(",");
        let token = self.signer.sign(&["session", role, name, &joined], expires);
        let secure = if self.config.web.base_url.starts_with("https://") {
            "; Secure"
        } else {
            ""
        };
        HeaderValue::from_str(&format!(
            "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}; Max-Age={}",
            self.config.web.session_lifetime.as_secs()
        ))
        .expect("a token is a header value")
    }

    /// The form token of pages without a session (sign-in, links).
    fn anonymous_csrf(&self) -> String {
        self.signer.sign(&["form"], unix_now() + 3600)
    }

    fn anonymous_csrf_ok(&self, given: &str) -> bool {
        matches!(self.signer.open(given, unix_now()).as_deref(), Ok([kind]) if kind == "form")
    }

    fn page(&self, status: StatusCode, title: &str, who: Option<&Who>, body: String) -> Response {
        let csrf = who
            .map(|w| self.signer.csrf(&w.session))
            .unwrap_or_default();
        let label = who.map(Who::label);
        let frame = pages::Frame {
            title,
            who: label.as_deref(),
            admin: who.is_some_and(|w| w.admin),
            csrf: &csrf,
            body: &body,
        };
        (status, html(frame.render().unwrap_or_default())).into_response()
    }

    fn notice(&self, status: StatusCode, title: &str, who: Option<&Who>, text: &str) -> Response {
        let csrf = self.anonymous_csrf();
        let body = pages::Notice {
            text,
            offer_link: None,
            csrf: &csrf,
        }
        .render()
        .unwrap_or_default();
        self.page(status, title, who, body)
    }

    fn forbidden(&self, who: Option<&Who>) -> Response {
        self.notice(
            StatusCode::FORBIDDEN,
            "Not yours",
            who,
            "This is not for you, or the form expired: go back and try again.",
        )
    }

    fn row(&self, record: &Record) -> pages::Row {
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
    async fn release(&self, record: &Record, to: &[String], by: &str) -> Result<String, String> {
        self.pipeline
            .release(&self.rules.current(), &record.id, to, by)
            .await
    }

    fn login_keys(&self, ip: IpAddr) -> (String, String) {
        (
            self.shared.key("web-login-failures", &ip.to_string()),
            self.shared.key("web-login-lock", &ip.to_string()),
        )
    }

    /// May `ip` try to sign in now (fewer than `LOGIN_FAILURES` failures in
    /// the last minute, on any instance)?
    async fn login_allowed(&self, ip: IpAddr) -> bool {
        let (_, lock) = self.login_keys(ip);
        if let Some(locked) = self.shared.any_set(&[lock]).await {
            return !locked;
        }
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.get(&ip).is_none_or(|(n, since)| {
            *n < LOGIN_FAILURES || since.elapsed() > Duration::from_secs(60)
        })
    }

    async fn login_failed(&self, ip: IpAddr) {
        let (failures, lock) = self.login_keys(ip);
        let minute = Duration::from_secs(60);
        if self
            .shared
            .fail(&[(failures, lock, LOGIN_FAILURES)], minute, minute)
            .await
            .is_some()
        {
            return;
        }
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() > 100_000 {
            failures.retain(|_, (_, since)| since.elapsed() < minute);
        }
        let entry = failures.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() > minute {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

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

    /// Checks a name and password: the users file (administrators and AUTH
    /// users), then the directory. The addresses the user may see.
    async fn sign_in(&self, user: &str, password: &str) -> Option<(bool, Vec<String>)> {
        if password.is_empty() {
            return None;
        }
        if let Some(path) = &self.config.auth.users_file
            && let Ok(accounts) = crate::policy::auth::read_accounts(path)
            && let Some((hash, admin)) = accounts.get(user).cloned()
        {
            if !crate::policy::auth::verify_password(hash, password.to_string()).await {
                return None;
            }
            let addresses = if user.contains('@') {
                vec![user.to_lowercase()]
            } else {
                Vec::new()
            };
            return Some((admin, addresses));
        }
        let directory = self.pipeline.recipients.directory()?;
        let filter = crate::directory::fill(&directory.config().login_filter, user);
        let entry = directory
            .find(&directory.config().base, &filter)
            .await
            .ok()??;
        directory
            .password_matches(&entry.dn, password)
            .await
            .ok()?
            .then_some((false, entry.addresses))
    }
}

/// Words for why an item was held.
fn why(record: &Record) -> String {
    let check = record.decided_by.check_name();
    let words = match check {
        "antivirus" => "a virus was found",
        "spam" => "it looks like spam",
        "mime.unscannable" => "an attachment could not be checked",
        "mime.ambiguous" | "mime.partial" => "its structure could be read two ways",
        "dmarc" => "the sender's domain says it is forged (DMARC)",
        "lists.recipient" => "the sender is on a block list",
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

fn html(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// Every answer: within the request time limit, with headers that keep the
/// pages from running anything or being framed.
async fn guard(State(web): State<Arc<Web>>, request: Request, next: Next) -> Response {
    let limit = web.config.web.request_timeout;
    let mut response = match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "took too long").into_response(),
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css")], pages::STYLE).into_response()
}

async fn index(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Query(search): Query<Search>,
) -> Response {
    let Some(who) = web.who(&headers) else {
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
    let since = (!search.since.is_empty())
        .then(|| crate::local_time::parse_since(&search.since))
        .flatten();
    let contains = |field: &str, wanted: &str| {
        wanted.is_empty() || field.to_lowercase().contains(&wanted.to_lowercase())
    };
    let mut records: Vec<Record> = web
        .archive
        .records()
        .filter(|r| !who.own(r).is_empty())
        .filter(|r| {
            !who.admin
                || (contains(&r.id, &search.id)
                    && contains(&r.sender, &search.sender)
                    && contains(&r.recipients.join(" "), &search.recipient)
                    && contains(r.subject.as_deref().unwrap_or(""), &search.subject)
                    && contains(&r.decided_by.to_string(), &search.check)
                    && contains(&r.outcome.to_string(), &search.outcome)
                    && since.is_none_or(|s| r.time >= s))
        })
        .collect();
    records.sort_by_key(|r| std::cmp::Reverse(r.time));
    let rows: Vec<pages::Row> = records.iter().take(500).map(|r| web.row(r)).collect();
    let body = pages::Items {
        rows: &rows,
        admin: who.admin,
        search: &search,
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

async fn login(
    State(web): State<Arc<Web>>,
    axum::Extension(Client(ip)): axum::Extension<Client>,
    Form(form): Fields,
) -> Response {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    if !web.anonymous_csrf_ok(field("csrf")) {
        return web.forbidden(None);
    }
    if !web.login_allowed(ip).await {
        tracing::warn!(client = %ip, "web sign-in refused: too many failures");
        return web.notice(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts",
            None,
            "Too many failed sign-ins from your address: wait a minute.",
        );
    }
    let user = field("user").trim();
    match web.sign_in(user, field("password")).await {
        Some((admin, addresses)) => {
            tracing::info!(client = %ip, user, admin, "web sign-in");
            let cookie = web.session_cookie(admin, user, &addresses);
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        None => {
            web.login_failed(ip).await;
            tracing::info!(client = %ip, user, "web sign-in failed");
            tokio::time::sleep(web.config.auth.failure_delay).await;
            let csrf = web.anonymous_csrf();
            let body = pages::Login {
                message: Some("Wrong name or password."),
                csrf: &csrf,
                address: "",
            }
            .render()
            .unwrap_or_default();
            web.page(StatusCode::UNAUTHORIZED, "Sign in", None, body)
        }
    }
}

async fn logout(State(web): State<Arc<Web>>, headers: HeaderMap, Form(form): Fields) -> Response {
    if let Some(who) = web.who(&headers)
        && web
            .signer
            .csrf_matches(&who.session, form.get("csrf").map_or("", String::as_str))
    {
        let gone = HeaderValue::from_static(
            "mailmoat_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        );
        return ([(header::SET_COOKIE, gone)], Redirect::to("/")).into_response();
    }
    web.forbidden(None)
}

/// "Send me my link": the same answer whatever the address, a link mailed
/// only to hosted addresses that exist, once an hour at most.
async fn send_link(State(web): State<Arc<Web>>, Form(form): Fields) -> Response {
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
        &format!(
            "If {address} receives mail here, a link to its quarantine is on its way. \
             Links are sent at most once an hour."
        ),
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

/// The page a link opens: says what the button will do. Changes nothing.
async fn link_page(
    State(web): State<Arc<Web>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let token = query.get("t").map(String::as_str).unwrap_or("");
    let (recipient, scope) = match web.signer.open(token, unix_now()) {
        Ok(fields) => match link_scope(&fields) {
            Some(found) => found,
            None => return web.forbidden(None),
        },
        Err(Refused::Expired(fields)) => return expired(&web, &fields),
        Err(Refused::Tampered) => return web.forbidden(None),
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
async fn link_act(State(web): State<Arc<Web>>, Form(form): Fields) -> Response {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    let token = field("t");
    let (recipient, scope) = match web.signer.open(token, unix_now()) {
        Ok(fields) => match link_scope(&fields) {
            Some(found) => found,
            None => return web.forbidden(None),
        },
        Err(Refused::Expired(fields)) => return expired(&web, &fields),
        Err(Refused::Tampered) => return web.forbidden(None),
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

async fn item_page(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some(who) = web.who(&headers) else {
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

async fn item_act(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Fields,
) -> Response {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    let Some(who) = web.who(&headers) else {
        return web.forbidden(None);
    };
    if !web.signer.csrf_matches(&who.session, field("csrf")) {
        return web.forbidden(Some(&who));
    }
    act(&web, &who, &id, field("action")).await
}

/// One action on one item, by someone it belongs to.
async fn act(web: &Web, who: &Who, id: &str, action: &str) -> Response {
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
            let held: Vec<Record> = web
                .archive
                .records()
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
            .request_release(id, &by)
            .map(|()| "Your request was sent: an administrator decides.".into()),
        "approve" | "decline" if who.admin => {
            let approve = action == "approve";
            match web.archive.decide_request(id, approve, &by) {
                Ok(record) if approve => web
                    .release(&record, &[], &by)
                    .await
                    .map(|queue_id| format!("Approved and released as {queue_id}.")),
                Ok(_) => Ok("Declined.".into()),
                Err(e) => Err(e),
            }
        }
        "allow" | "block" => {
            let kind = if action == "allow" {
                ListKind::Allow
            } else {
                ListKind::Block
            };
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

async fn lists_page(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let Some(who) = web.who(&headers) else {
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

async fn lists_act(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(form): Fields,
) -> Response {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    let Some(who) = web.who(&headers) else {
        return web.forbidden(None);
    };
    if !web.signer.csrf_matches(&who.session, field("csrf")) {
        return web.forbidden(Some(&who));
    }
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
        let result = match field("action") {
            "allow" => web
                .pipeline
                .lists
                .add(&owner, field("sender"), ListKind::Allow, &by)
                .await
                .map(|_| ()),
            "block" => web
                .pipeline
                .lists
                .add(&owner, field("sender"), ListKind::Block, &by)
                .await
                .map(|_| ()),
            "remove" => web
                .pipeline
                .lists
                .remove(&owner, field("sender"), &by)
                .await
                .map(|_| ()),
            _ => return web.forbidden(Some(&who)),
        };
        if let Err(e) = result {
            return web.notice(StatusCode::BAD_REQUEST, "Not done", Some(&who), &e);
        }
    }
    Redirect::to("/lists").into_response()
}

async fn requests_page(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let Some(who) = web.who(&headers).filter(|w| w.admin) else {
        return web.forbidden(None);
    };
    let rows: Vec<pages::Row> = web
        .archive
        .records()
        .filter(|r| r.request.as_ref().is_some_and(|q| q.decided.is_none()))
        .map(|r| web.row(&r))
        .collect();
    let search = Search::default();
    let body = pages::Items {
        rows: &rows,
        admin: false,
        search: &search,
    }
    .render()
    .unwrap_or_default();
    web.page(StatusCode::OK, "Release requests", Some(&who), body)
}

/// Serves the pages on `[web] listen`: at most `max_connections` at once,
/// HTTPS with the `[tls]` certificate when `tls` is set.
pub async fn serve(web: Arc<Web>) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let config = &web.config.web;
    let address = config.listen.expect("web.listen is set");
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot serve the quarantine's pages on {address}: {e}"))?;
    let local = listener.local_addr()?;
    let tls = if config.tls {
        crate::smtp::tls::configured(&web.config.tls)?
    } else {
        None
    };
    let permits = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    let router = web.router();
    let timeout = config.request_timeout;
    tracing::info!(listen = %local, tls = tls.is_some(), "quarantine web pages served");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let router = router.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let service = hyper::service::service_fn(
                    move |mut request: hyper::Request<hyper::body::Incoming>| {
                        request.extensions_mut().insert(Client(peer.ip()));
                        router.clone().oneshot(request)
                    },
                );
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(timeout);
                let served = match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => builder
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await
                                .map_err(|e| e.to_string()),
                            _ => Err("no TLS handshake".into()),
                        }
                    }
                    None => builder
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await
                        .map_err(|e| e.to_string()),
                };
                if let Err(e) = served {
                    tracing::debug!(client = %peer, error = %e, "web connection ended");
                }
            });
        }
    });
    Ok((local, task))
}
