//! Prometheus metrics (`[metrics] listen`): `GET /metrics` in the text format
//! (prometheus-client does the exposition) and `GET /healthz` for a load
//! balancer or a monitor. Label values come from names in the code and the
//! configuration (outcomes, stages, checks, rules, queue states), never from
//! what clients send, so the number of series stays bounded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::verdict::{DecidedBy, Event};

type Labels = Vec<(&'static str, String)>;

fn label(name: &'static str, value: &str) -> Labels {
    vec![(name, value.to_string())]
}

/// Every metric of one server.
pub struct Metrics {
    registry: Registry,
    messages: Family<Labels, Counter>,
    refusals: Family<Labels, Counter>,
    rule_matches: Family<Labels, Counter>,
    mailbomb_hits: Family<Labels, Counter>,
    queue_messages: Family<Labels, Gauge>,
    queue_oldest: Family<Labels, Gauge>,
    deliveries: Family<Labels, Counter>,
    backend_up: Gauge,
    shared_state_up: Gauge,
    shared_state_calls: Counter,
    shared_state_fallbacks: Counter,
    connections_open: Gauge,
    connections_accepted: Counter,
    connections_refused: Family<Labels, Counter>,
    tls_sessions: Counter,
    auth_failures: Counter,
    auth_lockouts: Counter,
    archive_items: Counter,
    archive_bytes: Counter,
    reports_sent: Counter,
    rule_reloads: Family<Labels, Counter>,
    dns_lookups: Family<Labels, Counter>,
    dns_failures: Family<Labels, Counter>,
    /// The DNS engine's own counts, by event; the last values seen, to add
    /// only what is new at each scrape.
    dns_engine: Totals,
    directory: Totals,
    eod_latency: Histogram,
    batch_size: Histogram,
    flush_seconds: Histogram,
    delivery_seconds: Histogram,
    /// Refusals of the last hour (at most `RECENT` kept), for `mailmoat status`.
    recent_refusals: std::sync::Mutex<std::collections::VecDeque<(std::time::Instant, String)>>,
}

/// Most refusals remembered for `status`: a flood cannot grow it further.
const RECENT: usize = 100_000;

/// Registers a metric under `name` with its help text; returns it.
fn registered<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// A family of counters kept by another part as totals since start: each
/// scrape adds what was counted since the last one.
struct Totals {
    family: Family<Labels, Counter>,
    seen: Mutex<HashMap<&'static str, u64>>,
}

impl Totals {
    fn new(family: Family<Labels, Counter>) -> Totals {
        Totals {
            family,
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn set(&self, totals: &[(&'static str, u64)]) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for &(event, total) in totals {
            let before = seen.insert(event, total).unwrap_or(0);
            self.family
                .get_or_create(&label("event", event))
                .inc_by(total.saturating_sub(before));
        }
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("mailmoat");
        let messages = registered(
            &mut registry,
            "messages",
            "Messages judged at the end of DATA, by outcome (queued, held, quarantined, discarded, rejected, tempfailed)",
            Family::<Labels, Counter>::default(),
        );
        let refusals = registered(
            &mut registry,
            "refusals",
            "Refusals at any stage, by stage and the check that refused (rule: a rule)",
            Family::<Labels, Counter>::default(),
        );
        let rule_matches = registered(
            &mut registry,
            "rule_matches",
            "Rules that matched, by rule",
            Family::<Labels, Counter>::default(),
        );
        let mailbomb_hits = registered(
            &mut registry,
            "mailbomb_hits",
            "Mail-bomb limits reached, by limit",
            Family::<Labels, Counter>::default(),
        );
        let queue_messages = registered(
            &mut registry,
            "queue_messages",
            "Messages in the queue, by state",
            Family::<Labels, Gauge>::default(),
        );
        let queue_oldest = registered(
            &mut registry,
            "queue_oldest_seconds",
            "Age of the oldest message in each queue state",
            Family::<Labels, Gauge>::default(),
        );
        let deliveries = registered(
            &mut registry,
            "deliveries",
            "Recipients handed to a next hop, by result (sent, deferred, bounced)",
            Family::<Labels, Counter>::default(),
        );
        let backend_up = registered(
            &mut registry,
            "backend_up",
            "1 while the backend answers (last delivery or probe), else 0",
            Gauge::default(),
        );
        let shared_state_up = registered(
            &mut registry,
            "shared_state_up",
            "With [shared] redis: 1 while Redis answers, 0 while this instance counts on its own",
            Gauge::default(),
        );
        let shared_state_calls = registered(
            &mut registry,
            "shared_state_calls",
            "Round trips to Redis for shared state",
            Counter::default(),
        );
        let shared_state_fallbacks = registered(
            &mut registry,
            "shared_state_fallbacks",
            "Calls for shared state answered from this instance's own state because Redis did not answer",
            Counter::default(),
        );
        let build_info = registered(
            &mut registry,
            "build_info",
            "The running version",
            Family::<Labels, Gauge>::default(),
        );
        build_info
            .get_or_create(&label("version", env!("CARGO_PKG_VERSION")))
            .set(1);
        let connections_open = registered(
            &mut registry,
            "connections_open",
            "SMTP connections open now",
            Gauge::default(),
        );
        let connections_accepted = registered(
            &mut registry,
            "connections_accepted",
            "SMTP connections taken",
            Counter::default(),
        );
        let connections_refused = registered(
            &mut registry,
            "connections_refused",
            "SMTP connections refused at once, by reason",
            Family::<Labels, Counter>::default(),
        );
        let tls_sessions = registered(
            &mut registry,
            "tls_sessions",
            "TLS handshakes completed (STARTTLS and implicit TLS)",
            Counter::default(),
        );
        let auth_failures = registered(
            &mut registry,
            "auth_failures",
            "Failed SMTP AUTH attempts",
            Counter::default(),
        );
        let auth_lockouts = registered(
            &mut registry,
            "auth_lockouts",
            "AUTH attempts refused by a lockout",
            Counter::default(),
        );
        let archive_items = registered(
            &mut registry,
            "archive_items",
            "Items written to the archive",
            Counter::default(),
        );
        let archive_bytes = registered(
            &mut registry,
            "archive_bytes",
            "Message bytes written to the archive",
            Counter::default(),
        );
        let reports_sent = registered(
            &mut registry,
            "reports_sent",
            "Reports queued for the backup mailbox",
            Counter::default(),
        );
        let rule_reloads = registered(
            &mut registry,
            "rule_reloads",
            "Rule reloads, by result (ok, failed)",
            Family::<Labels, Counter>::default(),
        );
        let dns_lookups = registered(
            &mut registry,
            "dns_lookups",
            "DNS lookups of the checks and delivery, by kind (mx, address, a, ptr)",
            Family::<Labels, Counter>::default(),
        );
        let dns_failures = registered(
            &mut registry,
            "dns_failures",
            "DNS lookups without an answer (timeouts, SERVFAIL; not: no such name), by kind",
            Family::<Labels, Counter>::default(),
        );
        let dns_engine = registered(
            &mut registry,
            "dns_resolver",
            "The DNS engine under every lookup, by event: lookups, cache_hits, joined (waited \
             for the same lookup in flight), queries sent, answers received, timeouts of one \
             attempt, failures (no answer within the budget)",
            Family::<Labels, Counter>::default(),
        );
        let directory = registered(
            &mut registry,
            "ldap",
            "The directory (LDAP), by event: lookups of recipients, cache_hits among them, \
             searches sent (recipients and logins), binds (password checks), connections \
             made, failures (no answer within ldap.timeout, or an error)",
            Family::<Labels, Counter>::default(),
        );
        let seconds = || Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let eod_latency = registered(
            &mut registry,
            "end_of_data_seconds",
            "From the end of DATA to the reply (judging and the durable write)",
            seconds(),
        );
        let batch_size = registered(
            &mut registry,
            "commit_batch_size",
            "Messages made durable by one group commit",
            Histogram::new(exponential_buckets(1.0, 2.0, 10)),
        );
        let flush_seconds = registered(
            &mut registry,
            "commit_flush_seconds",
            "Time of one group commit's flush",
            seconds(),
        );
        let delivery_seconds = registered(
            &mut registry,
            "delivery_seconds",
            "Time of one delivery attempt to one next hop",
            seconds(),
        );
        // Series with a fixed set of values exist from the start at 0, so that
        // alerts and rates see them before the first event.
        for outcome in crate::verdict::Outcome::ALL {
            let _ = messages.get_or_create(&label("outcome", outcome.name()));
        }
        for result in ["sent", "deferred", "bounced"] {
            let _ = deliveries.get_or_create(&label("result", result));
        }
        for result in ["ok", "failed"] {
            let _ = rule_reloads.get_or_create(&label("result", result));
        }
        Metrics {
            registry,
            messages,
            refusals,
            rule_matches,
            mailbomb_hits,
            queue_messages,
            queue_oldest,
            deliveries,
            backend_up,
            shared_state_up,
            shared_state_calls,
            shared_state_fallbacks,
            connections_open,
            connections_accepted,
            connections_refused,
            tls_sessions,
            auth_failures,
            auth_lockouts,
            archive_items,
            archive_bytes,
            reports_sent,
            rule_reloads,
            dns_lookups,
            dns_failures,
            dns_engine: Totals::new(dns_engine),
            directory: Totals::new(directory),
            eod_latency,
            batch_size,
            flush_seconds,
            delivery_seconds,
            recent_refusals: Default::default(),
        }
    }

    /// SMTP connections open now.
    pub fn open_connections(&self) -> i64 {
        self.connections_open.get()
    }

    /// The checks (or `rule NAME`) that refused most in the last hour, most
    /// first, with their counts.
    pub fn top_refusals(&self, n: usize) -> Vec<(String, usize)> {
        let hour_ago = std::time::Instant::now().checked_sub(Duration::from_secs(3600));
        let recent = self
            .recent_refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut counts: std::collections::HashMap<&str, usize> = Default::default();
        for (at, what) in recent.iter() {
            if hour_ago.is_none_or(|h| *at >= h) {
                *counts.entry(what).or_default() += 1;
            }
        }
        let mut top: Vec<(String, usize)> = counts
            .into_iter()
            .map(|(w, c)| (w.to_string(), c))
            .collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(n);
        top
    }

    /// One decision, as its log line records it.
    pub fn decision(&self, event: &Event<'_>) {
        if event.stage == crate::verdict::Stage::Data {
            self.messages
                .get_or_create(&label("outcome", event.outcome.name()))
                .inc();
        }
        if event.outcome.is_refusal() {
            let check = match event.decided_by {
                Some(DecidedBy::Rule(_)) => "rule",
                Some(by) => by.check_name(),
                None => "",
            };
            self.refusals
                .get_or_create(&vec![
                    ("stage", event.stage.name().to_ascii_lowercase()),
                    ("check", check.to_string()),
                ])
                .inc();
            let what = match event.decided_by {
                Some(DecidedBy::Rule(rule)) => format!("rule {rule}"),
                _ => check.to_string(),
            };
            let mut recent = self
                .recent_refusals
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if recent.len() >= RECENT {
                recent.pop_front();
            }
            recent.push_back((std::time::Instant::now(), what));
        }
    }

    /// A mail-bomb limit refused something.
    pub fn mailbomb_hit(&self, limit: &str) {
        self.mailbomb_hits
            .get_or_create(&label("limit", limit))
            .inc();
    }

    pub fn rule_matched(&self, rule: &str) {
        self.rule_matches.get_or_create(&label("rule", rule)).inc();
    }

    pub fn delivered(&self, result: &str, took: Duration) {
        self.deliveries
            .get_or_create(&label("result", result))
            .inc();
        self.delivery_seconds.observe(took.as_secs_f64());
    }

    pub fn backend(&self, up: bool) {
        self.backend_up.set(i64::from(up));
    }

    pub fn shared_state_up(&self, up: bool) {
        self.shared_state_up.set(i64::from(up));
    }

    pub fn shared_state_call(&self) {
        self.shared_state_calls.inc();
    }

    pub fn shared_state_fallback(&self) {
        self.shared_state_fallbacks.inc();
    }

    pub fn connection_opened(&self) {
        self.connections_accepted.inc();
        self.connections_open.inc();
    }

    pub fn connection_closed(&self) {
        self.connections_open.dec();
    }

    pub fn connection_refused(&self, reason: &str) {
        self.connections_refused
            .get_or_create(&label("reason", reason))
            .inc();
    }

    pub fn tls_session(&self) {
        self.tls_sessions.inc();
    }

    pub fn auth_failed(&self, locked_out: bool) {
        if locked_out {
            self.auth_lockouts.inc();
        } else {
            self.auth_failures.inc();
        }
    }

    pub fn archived(&self, bytes: usize) {
        self.archive_items.inc();
        self.archive_bytes.inc_by(bytes as u64);
    }

    pub fn report_sent(&self) {
        self.reports_sent.inc();
    }

    pub fn rules_reloaded(&self, ok: bool) {
        self.rule_reloads
            .get_or_create(&label("result", if ok { "ok" } else { "failed" }))
            .inc();
    }

    pub fn dns_lookup(&self, kind: &str, failed: bool) {
        self.dns_lookups.get_or_create(&label("kind", kind)).inc();
        if failed {
            self.dns_failures.get_or_create(&label("kind", kind)).inc();
        }
    }

    /// The DNS engine's counts as they are now (`event`, total since start).
    pub fn dns_engine(&self, totals: &[(&'static str, u64)]) {
        self.dns_engine.set(totals);
    }

    /// The directory's counts as they are now (`event`, total since start).
    pub fn directory(&self, totals: &[(&'static str, u64)]) {
        self.directory.set(totals);
    }

    pub fn end_of_data(&self, took: Duration) {
        self.eod_latency.observe(took.as_secs_f64());
    }

    pub fn committed(&self, messages: usize, flush: Duration) {
        self.batch_size.observe(messages as f64);
        self.flush_seconds.observe(flush.as_secs_f64());
    }

    /// The queue as a scrape finds it: messages and the oldest's age by state.
    pub fn queue(&self, census: &[(&str, usize, Option<u64>)]) {
        for (state, count, oldest) in census {
            self.queue_messages
                .get_or_create(&label("state", state))
                .set(*count as i64);
            self.queue_oldest
                .get_or_create(&label("state", state))
                .set(oldest.unwrap_or(0) as i64);
        }
    }

    /// The text exposition.
    pub fn text(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// An open SMTP connection, counted while it lives.
pub struct OpenConnection(Arc<Metrics>);

impl OpenConnection {
    pub fn new(metrics: Arc<Metrics>) -> OpenConnection {
        metrics.connection_opened();
        OpenConnection(metrics)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

/// What `/healthz` checks: the listeners accept and the spool is writable.
pub trait HealthCheck: Send + Sync {
    /// None when healthy; else why not.
    fn problem(&self) -> Option<String>;
    /// Brings the queue gauges up to date before a scrape.
    fn refresh(&self, metrics: &Metrics);
}

/// Serves `/metrics` and `/healthz` on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<dyn HealthCheck>,
) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let health = health.clone();
        tokio::spawn(async move {
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            // The request line and headers; a scrape has no body.
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let line = String::from_utf8_lossy(&request);
            let path = line
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("GET "))
                .and_then(|l| l.split_whitespace().next())
                .unwrap_or("");
            let (status, kind, body) = match path {
                "/metrics" => {
                    let metrics2 = metrics.clone();
                    let health2 = health.clone();
                    let text = tokio::task::spawn_blocking(move || {
                        health2.refresh(&metrics2);
                        metrics2.text()
                    })
                    .await
                    .unwrap_or_default();
                    (
                        "200 OK",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        text,
                    )
                }
                "/healthz" => {
                    let health2 = health.clone();
                    match tokio::task::spawn_blocking(move || health2.problem())
                        .await
                        .ok()
                        .flatten()
                    {
                        None => ("200 OK", "text/plain", "ok\n".to_string()),
                        Some(why) => ("503 Service Unavailable", "text/plain", format!("{why}\n")),
                    }
                }
                _ => (
                    "404 Not Found",
                    "text/plain",
                    "GET /metrics or /healthz\n".to_string(),
                ),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}
