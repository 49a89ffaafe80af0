//! Delivery: takes due messages off the schedule, hands each recipient to the backend
//! (hosted domains) or the outbound relay host, records per-recipient results, retries
//! with backoff, and bounces what fails for good.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Queue;
use super::dsn::{self, Failure};
use super::envelope::{Envelope, QueuedRecipient, RecipientStatus};
use super::scheduler::{backoff, now_millis};
use super::spool::{QueueState, new_id};
use crate::address::Mailbox;
use crate::config::Config;
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

    fn give(&self, address: &str, mut client: Client) {
        client.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.entry(address.to_string()).or_default().push(client);
    }
}

/// The result for one recipient of one attempt.
#[derive(Debug, Clone)]
enum Outcome {
    Delivered(Reply),
    /// Refused for good (5xx).
    Refused(Reply),
    /// Try again later (4xx, or no conversation possible).
    Deferred(String),
}

pub struct Delivery {
    config: Arc<Config>,
    queue: Arc<Queue>,
    backend: Target,
    relayhost: Option<Target>,
    pool: Pool,
}

impl Delivery {
    pub fn new(config: Arc<Config>, queue: Arc<Queue>) -> anyhow::Result<Delivery> {
        let helo = config.server.hostname.clone();
        let backend = Target::from_backend(&config.backend, &config.backend.address, &helo)?;
        let relayhost = match &config.outbound.relayhost {
            Some(address) if !address.trim().is_empty() => {
                Some(Target::from_backend(&config.backend, address, &helo)?)
            }
            _ => None,
        };
        Ok(Delivery {
            pool: Pool {
                idle: Mutex::new(HashMap::new()),
                idle_timeout: config.backend.idle_timeout,
            },
            config,
            queue,
            backend,
            relayhost,
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

    /// Where mail for this recipient goes.
    fn target_for(&self, envelope: &Envelope, address: &str) -> Target {
        if let Some(hop) = &envelope.next_hop {
            let mut target = self.backend.clone();
            target.address = hop.clone();
            return target;
        }
        let hosted = Mailbox::parse(address)
            .ok()
            .and_then(|m| m.domain_name().map(|d| self.config.is_hosted(d)))
            .unwrap_or(false);
        match (&self.relayhost, hosted) {
            (Some(relayhost), false) => relayhost.clone(),
            _ => self.backend.clone(),
        }
    }

    /// One delivery attempt of one message. Returns when and where to try again, or
    /// `None` when the message is done (or gone).
    async fn attempt(&self, id: &str, state: QueueState) -> io::Result<Option<(QueueState, u64)>> {
        let (mut envelope, message) = match self.queue.take_fresh(id) {
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
                    Ok(loaded) => loaded,
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
        let mut by_target: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, rcpt) in envelope.recipients.iter().enumerate() {
            if rcpt.status == RecipientStatus::Pending {
                by_target
                    .entry(self.target_for(&envelope, &rcpt.address).address)
                    .or_default()
                    .push(i);
            }
        }
        let mut failures = Vec::new();
        for indices in by_target.values() {
            let target = self.target_for(&envelope, &envelope.recipients[indices[0]].address);
            let outcomes = self.send(&target, &envelope, indices, &message).await;
            for (&i, outcome) in indices.iter().zip(outcomes) {
                let rcpt = &mut envelope.recipients[i];
                log_outcome(&envelope.id, &rcpt.address, &target.address, &outcome);
                match outcome {
                    Outcome::Delivered(reply) => {
                        rcpt.status = RecipientStatus::Delivered;
                        rcpt.last_reply = reply.to_string();
                    }
                    Outcome::Refused(reply) => {
                        rcpt.last_reply = reply.to_string();
                        failures.push(failure(rcpt, &reply, Some(&target.address)));
                    }
                    Outcome::Deferred(why) => rcpt.last_reply = why,
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
            self.queue.remove(state, &envelope.id);
            tracing::info!(queue_id = %envelope.id, "removed");
            return Ok(None);
        }
        envelope.attempts += 1;
        let wait = backoff(
            envelope.attempts,
            self.config.queue.min_backoff,
            self.config.queue.max_backoff,
        );
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
            id: id.clone(),
            arrived: now_millis() / 1000,
            sender: String::new(),
            client_ip: "127.0.0.1".into(),
            helo: hostname.clone(),
            eight_bit: false,
            smtputf8: original.smtputf8,
            size: report.len() as u64,
            message_crc32: String::new(),
            next_hop: None,
            attempts: 0,
            next_attempt: 0,
            recipients: vec![QueuedRecipient {
                address: original.sender.clone(),
                status: RecipientStatus::Pending,
                last_reply: String::new(),
            }],
        };
        self.queue.enqueue(envelope, report).await?;
        tracing::info!(queue_id = %original.id, bounce_id = %id, to = %original.sender, "sender notified of non-delivery");
        Ok(())
    }

    /// One SMTP transaction to one next hop for the given recipients.
    async fn send(
        &self,
        target: &Target,
        envelope: &Envelope,
        indices: &[usize],
        message: &[u8],
    ) -> Vec<Outcome> {
        let rcpts: Vec<&str> = indices
            .iter()
            .map(|&i| envelope.recipients[i].address.as_str())
            .collect();
        // A pooled connection may have been closed by the server meanwhile: if the
        // first command on it fails, start over once on a new connection.
        let pooled = self.pool.take(&target.address);
        let tries = if pooled.is_some() { 2 } else { 1 };
        let mut client = pooled;
        for attempt in 1..=tries {
            let mut conn = match client.take() {
                Some(conn) => conn,
                None => match Client::connect(target).await {
                    Ok(conn) => conn,
                    Err(e) => return vec![Outcome::Deferred(e.0); rcpts.len()],
                },
            };
            match self.transaction(&mut conn, envelope, &rcpts, message).await {
                Ok(outcomes) => {
                    self.pool.give(&target.address, conn);
                    return outcomes;
                }
                Err(Stage::BeforeMail(e)) if attempt < tries => {
                    tracing::debug!(error = %e, "pooled connection failed; reconnecting");
                }
                Err(Stage::BeforeMail(e)) | Err(Stage::During(e)) => {
                    return vec![Outcome::Deferred(e.0); rcpts.len()];
                }
            }
        }
        unreachable!("the last try always returns")
    }

    async fn transaction(
        &self,
        conn: &mut Client,
        envelope: &Envelope,
        rcpts: &[&str],
        message: &[u8],
    ) -> Result<Vec<Outcome>, Stage> {
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
                return Ok(vec![Outcome::Refused(reply); rcpts.len()]);
            }
            params.push_str(" SMTPUTF8");
        }
        let mail = conn
            .command(format!("MAIL FROM:<{}>{params}", envelope.sender))
            .await
            .map_err(Stage::BeforeMail)?;
        if !mail.is_positive() {
            let _ = conn.command("RSET".into()).await;
            return Ok(vec![refused_or_deferred(mail); rcpts.len()]);
        }
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(rcpts.len());
        for rcpt in rcpts {
            let reply = conn
                .command(format!("RCPT TO:<{rcpt}>"))
                .await
                .map_err(Stage::During)?;
            outcomes.push((!reply.is_positive()).then(|| refused_or_deferred(reply)));
        }
        if outcomes.iter().all(Option::is_some) {
            let _ = conn.command("RSET".into()).await.map_err(Stage::During)?;
            return Ok(outcomes.into_iter().flatten().collect());
        }
        let data = conn.command("DATA".into()).await.map_err(Stage::During)?;
        let final_reply = if data.code == 354 {
            conn.data(message).await.map_err(Stage::During)?
        } else {
            data
        };
        let accepted = |_: ()| {
            if final_reply.is_positive() {
                Outcome::Delivered(final_reply.clone())
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
enum Stage {
    /// Before anything of this message was accepted: safe to retry on a new connection.
    BeforeMail(ClientError),
    During(ClientError),
}

fn refused_or_deferred(reply: Reply) -> Outcome {
    if reply.is_permanent() {
        Outcome::Refused(reply)
    } else {
        Outcome::Deferred(reply.to_string())
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

fn log_outcome(id: &str, to: &str, relay: &str, outcome: &Outcome) {
    match outcome {
        Outcome::Delivered(reply) => {
            tracing::info!(queue_id = %id, to, relay, status = "sent", reply = %reply, "delivered")
        }
        Outcome::Refused(reply) => {
            tracing::info!(queue_id = %id, to, relay, status = "bounced", reply = %reply, "refused by next hop")
        }
        Outcome::Deferred(why) => {
            tracing::info!(queue_id = %id, to, relay, status = "deferred", reply = %why, "will retry")
        }
    }
}
