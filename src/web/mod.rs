//! The recipients' quarantine on the web (`[web] listen`): each recipient sees
//! what was held or refused for their addresses and releases it, deletes it,
//! allows or blocks its sender; administrators see everything, search it and
//! decide release requests. Signed links open it from the digest. A GET never
//! acts (link scanners fetch every URL in a mail); every action is a POST with
//! the form token; every action is recorded in the item's record and the log.
//! Nothing here is reachable unless `[web] listen` is set.

pub mod digest;
mod items;
mod links;
pub mod pages;
mod senders;
mod session;
pub mod signing;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use askama::Template;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::archive::Archive;
use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::queue::Queue;
use crate::rules::RulesHandle;
use items::{index, item_act, item_page, requests_page};
use links::{link_act, link_page, send_link};
use senders::{lists_act, lists_page};
use session::{Who, login, logout};
use signing::Signer;

pub use items::Search;

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
    /// Sessions signed out (without `[shared]`): key → until when (unix
    /// seconds, big-endian).
    signed_out: sled::Tree,
}

/// The client's address, put in each request by the listener.
#[derive(Clone, Copy)]
struct Client(IpAddr);

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
            signed_out: store.tree("web-signed-out")?,
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

/// A client's connection, in TLS or not.
trait Connection: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Connection for T {}

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
                let stream: Box<dyn Connection> = match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => Box::new(stream),
                            _ => {
                                tracing::debug!(client = %peer, "web connection without a TLS handshake");
                                return;
                            }
                        }
                    }
                    None => Box::new(stream),
                };
                let served = builder
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!(client = %peer, error = %e, "web connection ended");
                }
            });
        }
    });
    Ok((local, task))
}
