//! Who is signed in: the session cookie, the form tokens of pages without a
//! session, sign-in (users file or directory) and its limits.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::{Client, Fields, Web, pages};
use crate::archive::{Record, unix_now};

const COOKIE: &str = "mailmoat_session";
/// Failed sign-ins from one address within a minute before each further one
/// is refused for the rest of the minute.
const LOGIN_FAILURES: u32 = 10;
/// Who is signed in.
#[derive(Debug, Clone)]
pub(super) struct Who {
    pub(super) admin: bool,
    pub(super) name: String,
    /// The addresses whose items they see (lower case).
    pub(super) addresses: Vec<String>,
    /// The cookie's value: the form token is bound to it.
    pub(super) session: String,
}

impl Who {
    pub(super) fn label(&self) -> String {
        if self.admin {
            format!("{} (administrator)", self.name)
        } else {
            self.name.clone()
        }
    }

    /// For the record and the log.
    pub(super) fn by(&self) -> String {
        if self.admin {
            format!("admin {} (web)", self.name)
        } else {
            format!("{} (web)", self.name)
        }
    }

    /// Their addresses among the item's recipients (all of them for an
    /// administrator); none: the item is not theirs.
    pub(super) fn own(&self, record: &Record) -> Vec<String> {
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

impl Web {
    /// The signed-in user of a request, from its cookie.
    pub(super) async fn who(&self, headers: &HeaderMap) -> Option<Who> {
        let cookies = headers.get(header::COOKIE)?.to_str().ok()?;
        let session = cookies
            .split(';')
            .find_map(|c| c.trim().strip_prefix(&format!("{COOKIE}=")))?;
        let fields = self.signer.open(session, unix_now()).ok()?;
        if self.signed_out(session).await {
            return None;
        }
        let who = match fields.as_slice() {
            [kind, _id, role, name, addresses @ ..] if kind == "session" => Who {
                admin: role == "admin",
                name: name.clone(),
                addresses: addresses.to_vec(),
                session: session.to_string(),
            },
            _ => return None,
        };
        // An administrator removed from the users file (or no longer one)
        // loses the pages at once, not when the session expires.
        if who.admin && !self.is_administrator(&who.name) {
            return None;
        }
        Some(who)
    }

    fn is_administrator(&self, name: &str) -> bool {
        self.config
            .auth
            .users_file
            .as_ref()
            .and_then(|path| crate::policy::auth::read_accounts(path).ok())
            .is_some_and(|accounts| accounts.get(name).is_some_and(|(_, admin)| *admin))
    }

    /// A session cookie for a user.
    pub(super) fn session_cookie(
        &self,
        admin: bool,
        name: &str,
        addresses: &[String],
    ) -> HeaderValue {
        let expires = unix_now() + self.config.web.session_lifetime.as_secs();
        let role = if admin { "admin" } else { "user" };
        // Each session its own: signing out one never ends a later one made
        // in the same second.
        let mut id = [0u8; 12];
        rand::fill(&mut id);
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        // One field per address: a quoted local part may hold a comma.
        let mut fields = vec!["session", &id, role, name];
        fields.extend(addresses.iter().map(String::as_str));
        let token = self.signer.sign(&fields, expires);
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

    /// The signed-in user of a form post that carries its session's form
    /// token; otherwise the answer refusing it.
    pub(super) async fn poster(
        &self,
        headers: &HeaderMap,
        form: &std::collections::HashMap<String, String>,
    ) -> Result<Who, Box<Response>> {
        let Some(who) = self.who(headers).await else {
            return Err(Box::new(self.forbidden(None)));
        };
        let csrf = form.get("csrf").map_or("", String::as_str);
        if !self.signer.csrf_matches(&who.session, csrf) {
            return Err(Box::new(self.forbidden(Some(&who))));
        }
        Ok(who)
    }

    /// Where a signed-out session is remembered: a digest of the cookie, not
    /// the cookie itself.
    fn signed_out_key(&self, session: &str) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(session.as_bytes());
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        self.shared.key("web-signed-out", &hex)
    }

    /// Has this session been signed out (on any instance, with `[shared]`)?
    async fn signed_out(&self, session: &str) -> bool {
        let key = self.signed_out_key(session);
        if let Some(set) = self.shared.any_set(std::slice::from_ref(&key)).await {
            return set;
        }
        self.signed_out
            .get(key.as_bytes())
            .ok()
            .flatten()
            .is_some_and(|until| until.as_ref() > unix_now().to_be_bytes().as_slice())
    }

    /// Ends a session for good: its cookie, replayed, no longer signs anyone
    /// in. Remembered for the session's lifetime, after which it has expired
    /// anyway.
    async fn sign_out(&self, session: &str) {
        let key = self.signed_out_key(session);
        let lifetime = self.config.web.session_lifetime;
        if self.shared.put(&key, b"1", Some(lifetime)).await.is_some() {
            return;
        }
        let now = unix_now();
        let until = now + lifetime.as_secs();
        let _ = self.signed_out.insert(key.as_bytes(), &until.to_be_bytes());
        // The expired ones go as new ones come: the tree stays as small as
        // the sessions signed out within one lifetime.
        for (old, until) in self.signed_out.iter().flatten() {
            if until.as_ref() <= now.to_be_bytes().as_slice() {
                let _ = self.signed_out.remove(old);
            }
        }
    }

    /// The form token of pages without a session (sign-in, links).
    pub(super) fn anonymous_csrf(&self) -> String {
        self.signer.sign(&["form"], unix_now() + 3600)
    }

    pub(super) fn anonymous_csrf_ok(&self, given: &str) -> bool {
        matches!(self.signer.open(given, unix_now()).as_deref(), Ok([kind]) if kind == "form")
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

    /// Checks a name and password: the users file (administrators and AUTH
    /// users), then the directory. Whether the user is an administrator and
    /// the addresses they may see; `Err` when the directory cannot answer.
    async fn sign_in(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Option<(bool, Vec<String>)>, String> {
        if password.is_empty() {
            return Ok(None);
        }
        let account = self
            .config
            .auth
            .users_file
            .as_ref()
            .and_then(|path| crate::policy::auth::read_accounts(path).ok())
            .and_then(|accounts| accounts.get(user).cloned());
        let directory = self.pipeline.recipients.directory();
        if account.is_none() && directory.is_none() {
            // Refused as slowly as a wrong password.
            crate::policy::auth::verify_password(None, password.to_string()).await;
            return Ok(None);
        }
        if let Some((hash, admin)) = account {
            if !crate::policy::auth::verify_password(Some(hash), password.to_string()).await {
                return Ok(None);
            }
            let addresses = if user.contains('@') {
                vec![user.to_lowercase()]
            } else {
                Vec::new()
            };
            return Ok(Some((admin, addresses)));
        }
        let Some(directory) = directory else {
            return Ok(None);
        };
        match directory.login(user, password).await {
            Ok(entry) => Ok(entry.map(|entry| (false, entry.addresses))),
            Err(unavailable) => Err(unavailable.0),
        }
    }
}

pub(super) async fn login(
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
        // Not the user's failure: not counted, and said as it is.
        Err(why) => {
            tracing::warn!(client = %ip, user, error = %why, "web sign-in could not be checked");
            web.notice(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again in a minute",
                None,
                "Your password cannot be checked right now (the directory does not answer). \
                 Try again in a minute, or use the link of your last digest.",
            )
        }
        Ok(Some((admin, addresses))) => {
            tracing::info!(client = %ip, user, admin, "web sign-in");
            let cookie = web.session_cookie(admin, user, &addresses);
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        Ok(None) => {
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

pub(super) async fn logout(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(form): Fields,
) -> Response {
    if let Some(who) = web.who(&headers).await
        && web
            .signer
            .csrf_matches(&who.session, form.get("csrf").map_or("", String::as_str))
    {
        web.sign_out(&who.session).await;
        tracing::info!(user = %who.name, "web sign-out");
        let gone = HeaderValue::from_static(
            "mailmoat_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        );
        return ([(header::SET_COOKIE, gone)], Redirect::to("/")).into_response();
    }
    web.forbidden(None)
}
