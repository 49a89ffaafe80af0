//! Delivery: takes due messages off the schedule, hands each recipient to the backend
//! (hosted domains) or the outbound relay host, records per-recipient results, retries
//! with backoff, and bounces what fails for good.
//!
//! One file on purpose: an attempt — the route, the next hop's share, the SMTP
//! transaction, each recipient's result and the retry or bounce it leads to — is
//! one sequence whose order is the queue's promise; the hops' state is in
//! `health.rs`, the schedule in `scheduler.rs`, the bounce text in `dsn.rs`.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Queue;
use super::dsn::{self, Failure};
use super::envelope::{Envelope, QueuedRecipient, RecipientStatus};
use super::health::{Admission, Slot};
use super::scheduler::{backoff, now_millis};
use super::spool::{QueueState, new_id};
use crate::address::Mailbox;
use crate::config::{Config, OutboundRoute};
use crate::dns::{DnsError, MailHosts};
use crate::reply::Reply;
use crate::smtp_client::{Client, ClientError, Target};

/// Open connections to next hops, kept for the next message (one TCP and TLS setup
/// saved per message).
struct Pool {
    idle: Mutex<HashMap<String, Vec<Client>>>,
    idle_timeout: Duration,
}

impl Pool {
    fn take(&self, address: &str) -> Option<Client> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let clients = idle.get_mut(address)?;
        while let Some(client) = clients.pop() {
            if client.idle_since.elapsed() < self.idle_timeout {
                return Some(client);
            }
        }
        None
    }

    /// Closes the idle connections to a hop that failed.
    fn clear(&self, address: &str) {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(address);
    }

    fn give(&self, address: &str, mut client: Client) {
        client.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.entry(address.to_string()).or_default().push(client);
    }
}

/// The result for one recipient of one attempt.
#[derive(Debug, Clone)]
enum RecipientResult {
    Delivered(Reply),
    /// Refused for good (5xx).
    Refused(Reply),
    /// Try again later (4xx, or no conversation possible).
    Deferred(String),
    /// Not tried: the next hop had no slot free, or the attempt was given up
    /// (the hop answered another delivery, or the queue was flushed). Not an
    /// attempt: the message is due again within `.1` (sooner when woken).
    Wait(String, Duration),
}

pub struct Delivery {
    config: Arc<Config>,
    queue: Arc<Queue>,
    backend: Target,
    relayhost: Option<Target>,
    /// For MX lookups of outbound mail.
    dns: Option<Arc<crate::dns::Dns>>,
    pool: Pool,
    /// Each next hop's share of the deliveries, and whether it answers.
    pub health: Arc<super::health::NextHops>,
}

/// How long a delivery waits for a slot at a busy next hop before its message
/// steps aside for others (it is made due again when a slot frees).
const SLOT_PATIENCE: Duration = Duration::from_millis(100);

/// Where a group of recipients goes.
#[derive(Debug, Clone)]
enum Route {
    /// One server (backend, smart host, backup mail server).
    Fixed(Target),
    /// The MX hosts of a domain.
    Mx(String),
}

impl Route {
    /// Recipients with the same key share one transaction.
    fn key(&self) -> String {
        match self {
            Route::Fixed(target) => target.address.clone(),
            Route::Mx(domain) => format!("mx:{domain}"),
        }
    }
}

impl Delivery {
    pub fn new(
        config: Arc<Config>,
        queue: Arc<Queue>,
        dns: Option<Arc<crate::dns::Dns>>,
    ) -> anyhow::Result<Delivery> {
        let helo = config.server.hostname.clone();
        let backend = Target::from_backend(&config.backend, &config.backend.address, &helo)?;
        let relayhost = match &config.outbound.relayhost {
            Some(address) if !address.trim().is_empty() => {
                Some(Target::from_backend(&config.backend, address, &helo)?)
            }
            _ => None,
        };
        queue.health.configure(
            config.queue.destination_concurrency(),
            config.backend.probe_interval,
        );
        Ok(Delivery {
            pool: Pool {
                idle: Mutex::new(HashMap::new()),
                idle_timeout: config.backend.idle_timeout,
            },
            health: queue.health.clone(),
            config,
            queue,
            backend,
            relayhost,
            dns,
        })
    }

    /// Runs `workers` delivery loops until the scheduler is stopped.
    pub fn spawn_workers(self: &Arc<Self>, workers: usize) -> Vec<tokio::task::JoinHandle<()>> {
        (0..workers)
            .map(|_| {
                let delivery = self.clone();
                tokio::spawn(async move {
                    while let Some((id, state)) = delivery.queue.scheduler.next_due().await {
                        let next = match delivery.attempt(&id, state).await {
                            Ok(next) => next,
                            Err(e) => {
                                tracing::error!(queue_id = %id, error = %e, "delivery attempt failed; retrying later");
                                let wait = delivery.config.queue.min_backoff.as_millis() as u64;
                                Some((state, now_millis() + wait))
                            }
                        };
                        delivery.queue.scheduler.finish(&id, next);
                    }
                })
            })
            .collect()
    }

    /// Where mail for this recipient goes: hosted domains to the backend, others
    /// as `[outbound] route` says.
    fn route_for(&self, envelope: &Envelope, address: &str) -> Route {
        if let Some(hop) = &envelope.next_hop {
            let mut target = self.backend.clone();
            target.address = hop.clone();
            return Route::Fixed(target);
        }
        let mailbox = Mailbox::parse(address).ok();
        let domain = mailbox.as_ref().map(|m| m.domain.clone());
        let hosted = mailbox
            .as_ref()
            .and_then(|m| m.domain_name().map(|d| self.config.is_hosted(d)))
            .unwrap_or(false);
        if hosted {
            return Route::Fixed(self.backend.clone());
        }
        match (self.config.outbound.route, &self.relayhost, domain) {
            (OutboundRoute::Relayhost, Some(relayhost), _) => Route::Fixed(relayhost.clone()),
            // An address literal names its host itself.
            (OutboundRoute::Mx, _, Some(crate::address::Domain::Literal(literal))) => {
                let mut target = self.backend.clone();
                let ip = literal
                    .trim_start_matches("IPv6:")
                    .trim_start_matches("ipv6:");
                target.address = format!("{}:{}", bracket(ip), self.config.outbound.port);
                Route::Fixed(target)
            }
            (OutboundRoute::Mx, _, Some(crate::address::Domain::Name(name))) => Route::Mx(name),
            _ => Route::Fixed(self.backend.clone()),
        }
    }

    /// The servers to try for a route, in order; or the outcome for everyone when
    /// DNS says there is no server.
    async fn targets(&self, route: &Route) -> Result<Vec<Target>, RecipientResult> {
        let domain = match route {
            Route::Fixed(target) => return Ok(vec![target.clone()]),
            Route::Mx(domain) => domain,
        };
        let Some(dns) = &self.dns else {
            return Err(RecipientResult::Deferred(
                "no DNS resolver for MX lookups".into(),
            ));
        };
        let hosts = match dns.mail_hosts(domain).await {
            Ok(MailHosts::Hosts(hosts)) => hosts,
            Ok(MailHosts::NullMx) => {
                return Err(RecipientResult::Refused(Reply::new(
                    556,
                    "5.1.10",
                    format!("{domain} accepts no mail (null MX, RFC 7505)"),
                )));
            }
            Err(DnsError::NotFound) => {
                return Err(RecipientResult::Refused(Reply::new(
                    550,
                    "5.1.2",
                    format!("{domain}: no such domain, or no mail server for it"),
                )));
            }
            Err(DnsError::Temporary(why)) => {
                return Err(RecipientResult::Deferred(format!(
                    "DNS lookup of {domain} failed: {why}"
                )));
            }
        };
        let mut targets = Vec::new();
        for host in hosts {
            match dns.addresses(&host).await {
                Ok(addresses) => {
                    for ip in addresses {
                        let mut target = self.backend.clone();
                        target.address =
                            format!("{}:{}", bracket(&ip.to_string()), self.config.outbound.port);
                        // Outbound: opportunistic STARTTLS, like any MTA.
                        target.starttls = crate::config::TlsMode::Opportunistic;
                        target.tls_verify = false;
                        targets.push(target);
                    }
                }
                Err(e) => tracing::info!(domain, host, error = ?e, "MX host has no address"),
            }
        }
        if targets.is_empty() {
            return Err(RecipientResult::Deferred(format!(
                "no MX host of {domain} has an address"
            )));
        }
        Ok(targets)
    }

    /// One delivery attempt of one message. Returns when and where to try again, or
    /// `None` when the message is done (or gone).
    async fn attempt(&self, id: &str, state: QueueState) -> io::Result<Option<(QueueState, u64)>> {
        let (mut envelope, message, memory) = match self.queue.take_fresh(id) {
            Some(fresh) => fresh,
            None => {
                let spool = self.queue.spool.clone();
                let owned_id = id.to_string();
                let loaded = tokio::task::spawn_blocking(move || {
                    let read = spool.read_envelope(state, &owned_id).and_then(|envelope| {
                        let message = spool.read_message_checked(state, &envelope)?;
                        Ok((envelope, Arc::new(message)))
                    });
                    if let Err(e) = &read
                        && e.kind() == io::ErrorKind::InvalidData
                    {
                        tracing::error!(queue_id = %owned_id, error = %e, "damaged queue files moved to corrupt/");
                        spool.set_aside(state, &owned_id)?;
                    }
                    read
                })
                .await
                .map_err(io::Error::other)?;
                match loaded {
                    Ok((envelope, message)) => {
                        let memory = self.queue.count_memory(message.len());
                        (envelope, message, memory)
                    }
                    // Deleted or held by the administrator in the meantime, or
                    // set aside as damaged.
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::NotFound | io::ErrorKind::InvalidData
                        ) =>
                    {
                        return Ok(None);
                    }
                    Err(e) => return Err(e),
                }
            }
        };

        // Group pending recipients by next hop: one transaction per hop.
        let mut by_route: BTreeMap<String, (Route, Vec<usize>)> = BTreeMap::new();
        for (i, rcpt) in envelope.recipients.iter().enumerate() {
            if rcpt.status == RecipientStatus::Pending {
                let route = self.route_for(&envelope, &rcpt.address);
                by_route
                    .entry(route.key())
                    .or_insert((route, Vec::new()))
                    .1
                    .push(i);
            }
        }
        let mut failures = Vec::new();
        // Recipients not tried (their hop had no slot, or the attempt was given
        // up): the soonest they go again; and whether anything was tried and
        // deferred, or changed.
        let mut waiting: Option<Duration> = None;
        let mut deferred = false;
        let mut changed = false;
        for (route, indices) in by_route.values() {
            let started = std::time::Instant::now();
            let (relay, outcomes) = match self.targets(route).await {
                Ok(targets) => {
                    self.send_to_first(&targets, &envelope, indices, &message)
                        .await
                }
                Err(outcome) => (route.key(), vec![outcome; indices.len()]),
            };
            for (&i, outcome) in indices.iter().zip(outcomes) {
                let rcpt = &mut envelope.recipients[i];
                log_outcome(&envelope.id, &rcpt.address, &relay, &outcome);
                if let RecipientResult::Wait(_, within) = outcome {
                    waiting = Some(waiting.map_or(within, |w| w.min(within)));
                    continue;
                }
                self.queue
                    .metrics
                    .delivered(outcome.name(), started.elapsed());
                match outcome {
                    RecipientResult::Delivered(reply) => {
                        rcpt.status = RecipientStatus::Delivered;
                        rcpt.last_reply = reply.to_string();
                        changed = true;
                    }
                    RecipientResult::Refused(reply) => {
                        rcpt.last_reply = reply.to_string();
                        failures.push(failure(rcpt, &reply, Some(&relay)));
                        changed = true;
                    }
                    RecipientResult::Deferred(why) => {
                        rcpt.last_reply = why;
                        deferred = true;
                    }
                    RecipientResult::Wait(..) => unreachable!("handled above"),
                }
            }
        }

        // Mail that has waited too long is given up.
        let now = now_millis() / 1000;
        let lifetime = self.config.queue.max_lifetime.as_secs();
        if now.saturating_sub(envelope.arrived) >= lifetime {
            for rcpt in envelope.recipients.iter_mut() {
                let refused = failures.iter().any(|f| f.recipient == rcpt.address);
                if rcpt.status == RecipientStatus::Pending && !refused {
                    let why = format!(
                        "message expired after {} in the queue; last error: {}",
                        humantime::format_duration(self.config.queue.max_lifetime),
                        rcpt.last_reply
                    );
                    tracing::info!(queue_id = %envelope.id, to = %rcpt.address, status = "expired", "{why}");
                    failures.push(Failure {
                        recipient: rcpt.address.clone(),
                        status: "4.4.7".into(),
                        diagnostic: why,
                        remote: None,
                    });
                }
            }
        }

        if !failures.is_empty() {
            self.bounce(&envelope, &message, &failures).await?;
            for rcpt in envelope.recipients.iter_mut() {
                if failures.iter().any(|f| f.recipient == rcpt.address) {
                    rcpt.status = RecipientStatus::Bounced;
                }
            }
        }

        let spool = self.queue.spool.clone();
        if envelope.is_done() {
            if let Err(e) = self.queue.delivered(state, &envelope.id).await {
                tracing::warn!(queue_id = %envelope.id, error = %e, "delivery not journalled; a crash now could deliver it again");
            }
            tracing::info!(queue_id = %envelope.id, "removed");
            return Ok(None);
        }
        if let Some(within) = waiting
            && !deferred
        {
            // Not an attempt: nothing was tried and deferred, so nothing counts.
            if changed {
                let (spool, written) = (spool.clone(), envelope.clone());
                tokio::task::spawn_blocking(move || spool.update_envelope(state, &written))
                    .await
                    .map_err(io::Error::other)??;
            }
            self.queue.keep_fresh(envelope, message, memory);
            return Ok(Some((state, now_millis() + within.as_millis() as u64)));
        }
        envelope.attempts += 1;
        let wait = backoff(
            envelope.attempts,
            self.config.queue.min_backoff,
            self.config.queue.max_backoff,
        );
        let wait = waiting.map_or(wait, |within| wait.min(within));
        let due_ms = now_millis() + wait.as_millis() as u64;
        envelope.next_attempt = due_ms.div_ceil(1000);
        let next_state = QueueState::Deferred;
        tokio::task::spawn_blocking(move || {
            spool.update_envelope(state, &envelope)?;
            if state != next_state {
                spool.move_message(&envelope.id, state, next_state)?;
            }
            Ok::<_, io::Error>(())
        })
        .await
        .map_err(io::Error::other)??;
        Ok(Some((next_state, due_ms)))
    }

    /// Queues a delivery status notification to the sender, unless the sender is
    /// null (a bounce is never bounced).
    async fn bounce(
        &self,
        original: &Envelope,
        message: &[u8],
        failures: &[Failure],
    ) -> io::Result<()> {
        if original.sender.is_empty() {
            tracing::info!(queue_id = %original.id, "undeliverable mail from the null sender; no bounce");
            return Ok(());
        }
        let hostname = &self.config.server.hostname;
        let report = dsn::build(hostname, original, message, failures);
        let id = new_id();
        let envelope = Envelope {
            client_ip: "127.0.0.1".into(),
            helo: hostname.clone(),
            smtputf8: original.smtputf8,
            ..Envelope::new(id.clone(), String::new(), [original.sender.clone()])
        };
        self.queue.enqueue(envelope, report).await?;
        tracing::info!(queue_id = %original.id, bounce_id = %id, to = %original.sender, "sender notified of non-delivery");
        Ok(())
    }

    /// Tries the servers in order (MX preference, then addresses) until one takes
    /// part in a conversation; returns which one, and the outcomes.
    async fn send_to_first(
        &self,
        targets: &[Target],
        envelope: &Envelope,
        indices: &[usize],
        message: &[u8],
    ) -> (String, Vec<RecipientResult>) {
        let mut last = Vec::new();
        for target in targets {
            let outcomes = self.send(target, envelope, indices, message).await;
            let unreachable = outcomes
                .iter()
                .all(|o| matches!(o, RecipientResult::Deferred(_)));
            if !unreachable || targets.len() == 1 {
                return (target.address.clone(), outcomes);
            }
            tracing::info!(queue_id = %envelope.id, relay = %target.address, "no delivery there; trying the next host");
            last = outcomes;
        }
        let tried: Vec<&str> = targets.iter().map(|t| t.address.as_str()).collect();
        (tried.join(","), last)
    }

    /// One SMTP transaction to one next hop for the given recipients, in one of
    /// the hop's delivery slots.
    async fn send(
        &self,
        target: &Target,
        envelope: &Envelope,
        indices: &[usize],
        message: &[u8],
    ) -> Vec<RecipientResult> {
        let n = indices.len();
        let address = &target.address;
        let slot = match self.health.slot(address, SLOT_PATIENCE).await {
            Admission::Go(slot) => slot,
            Admission::Busy => {
                self.health.wait_for(address, &envelope.id);
                let why = format!("{address}: every delivery slot in use");
                return vec![RecipientResult::Wait(why, self.config.backend.probe_interval); n];
            }
            Admission::Failing(why) => {
                self.health.wait_for(address, &envelope.id);
                let why =
                    format!("{address}: not answering ({why}); waiting for it to answer a probe");
                return vec![RecipientResult::Deferred(why); n];
            }
        };
        let rcpts: Vec<&str> = indices
            .iter()
            .map(|&i| envelope.recipients[i].address.as_str())
            .collect();
        tokio::select! {
            outcomes = self.converse(&slot, target, envelope, &rcpts, message) => outcomes,
            () = slot.abandoned() => {
                let why = format!("{address}: attempt given up, to be tried again at once");
                vec![RecipientResult::Wait(why, Duration::ZERO); n]
            }
        }
    }

    /// The conversation itself, on a pooled connection or a new one; tells the
    /// slot how it went.
    async fn converse(
        &self,
        slot: &Slot,
        target: &Target,
        envelope: &Envelope,
        rcpts: &[&str],
        message: &[u8],
    ) -> Vec<RecipientResult> {
        let address = &target.address;
        // A pooled connection may have been closed by the server meanwhile: if the
        // first command on it fails, start over once on a new connection.
        let pooled = self.pool.take(address);
        let tries = if pooled.is_some() { 2 } else { 1 };
        let mut client = pooled;
        let mut failure = None;
        for attempt in 1..=tries {
            let mut conn = match client.take() {
                Some(conn) => conn,
                None => match Client::connect(target).await {
                    Ok(conn) => conn,
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                },
            };
            match self
                .transaction(slot, &mut conn, envelope, rcpts, message)
                .await
            {
                Ok(outcomes) => {
                    slot.succeeded();
                    self.pool.give(address, conn);
                    return outcomes;
                }
                Err(FailedAt::BeforeMail(e)) if attempt < tries => {
                    tracing::debug!(error = %e, "pooled connection failed; reconnecting");
                }
                Err(FailedAt::BeforeMail(e)) | Err(FailedAt::During(e)) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let e = failure.expect("the last try fails or returns");
        slot.failed(&e.0);
        self.pool.clear(address);
        self.health.wait_for(address, &envelope.id);
        vec![RecipientResult::Deferred(e.0); rcpts.len()]
    }

    async fn transaction(
        &self,
        slot: &Slot,
        conn: &mut Client,
        envelope: &Envelope,
        rcpts: &[&str],
        message: &[u8],
    ) -> Result<Vec<RecipientResult>, FailedAt> {
        let mut params = String::new();
        if envelope.eight_bit && conn.supports_8bitmime() {
            params.push_str(" BODY=8BITMIME");
        }
        if envelope.smtputf8 {
            if !conn.supports_smtputf8() {
                let reply = Reply::new(
                    550,
                    "5.6.7",
                    "next hop does not support SMTPUTF8, which this message needs",
                );
                return Ok(vec![RecipientResult::Refused(reply); rcpts.len()]);
            }
            params.push_str(" SMTPUTF8");
        }
        let mail = conn
            .command(format!("MAIL FROM:<{}>{params}", envelope.sender))
            .await
            .map_err(FailedAt::BeforeMail)?;
        if !mail.is_positive() {
            let _ = conn.command("RSET".into()).await;
            return Ok(vec![refused_or_deferred(mail); rcpts.len()]);
        }
        let mut outcomes: Vec<Option<RecipientResult>> = Vec::with_capacity(rcpts.len());
        for rcpt in rcpts {
            let reply = conn
                .command(format!("RCPT TO:<{rcpt}>"))
                .await
                .map_err(FailedAt::During)?;
            outcomes.push((!reply.is_positive()).then(|| refused_or_deferred(reply)));
        }
        if outcomes.iter().all(Option::is_some) {
            let _ = conn
                .command("RSET".into())
                .await
                .map_err(FailedAt::During)?;
            return Ok(outcomes.into_iter().flatten().collect());
        }
        let data = conn
            .command("DATA".into())
            .await
            .map_err(FailedAt::During)?;
        let final_reply = if data.code == 354 {
            conn.data(message, |why| slot.stalled(why))
                .await
                .map_err(FailedAt::During)?
        } else {
            data
        };
        let accepted = |_: ()| {
            if final_reply.is_positive() {
                RecipientResult::Delivered(final_reply.clone())
            } else {
                refused_or_deferred(final_reply.clone())
            }
        };
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| accepted(())))
            .collect())
    }
}

/// Where in the transaction a connection failed.
enum FailedAt {
    /// Before anything of this message was accepted: safe to retry on a new connection.
    BeforeMail(ClientError),
    During(ClientError),
}

fn refused_or_deferred(reply: Reply) -> RecipientResult {
    if reply.is_permanent() {
        RecipientResult::Refused(reply)
    } else {
        RecipientResult::Deferred(reply.to_string())
    }
}

fn failure(rcpt: &QueuedRecipient, reply: &Reply, remote: Option<&str>) -> Failure {
    Failure {
        recipient: rcpt.address.clone(),
        status: if reply.status.is_empty() {
            "5.0.0".into()
        } else {
            reply.status.clone()
        },
        diagnostic: reply.to_string(),
        remote: remote.map(str::to_string),
    }
}

impl RecipientResult {
    /// As logs and metrics name it.
    fn name(&self) -> &'static str {
        match self {
            RecipientResult::Delivered(_) => "sent",
            RecipientResult::Refused(_) => "bounced",
            RecipientResult::Deferred(_) | RecipientResult::Wait(..) => "deferred",
        }
    }
}

fn log_outcome(id: &str, to: &str, relay: &str, outcome: &RecipientResult) {
    match outcome {
        RecipientResult::Delivered(reply) => {
            tracing::info!(queue_id = %id, to, relay, status = "sent", reply = %reply, "delivered")
        }
        RecipientResult::Refused(reply) => {
            tracing::info!(queue_id = %id, to, relay, status = "bounced", reply = %reply, "refused by next hop")
        }
        RecipientResult::Deferred(why) => {
            tracing::info!(queue_id = %id, to, relay, status = "deferred", reply = %why, "will retry")
        }
        RecipientResult::Wait(why, _) => {
            tracing::debug!(queue_id = %id, to, relay, reason = %why, "waits for its next hop")
        }
    }
}

/// IPv6 addresses in `host:port` need brackets.
fn bracket(ip: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    }
}
