//! One SMTP session: the RFC 5321 state machine. The session speaks SMTP; the
//! judging pipeline decides, stage by stage, and keeps what it refuses; the queue
//! keeps what is accepted. A `250` after DATA is sent only once the queue has the
//! message on stable storage.
//!
//! This file holds the session's state, its command loop and dispatch; each verb
//! is answered in its own file under `session/`.

mod auth;
mod data;
mod hello;
mod mail;
mod rcpt;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::admission::{ConnectionLimits, Phase};
use super::command::{self, Command};
use super::connection::{Connection, Line, ReadError};
use crate::config::Config;
use crate::memory::MemoryBudget;
use crate::pipeline::{Greeting, Kept, Pipeline, Transaction};
use crate::reply::Reply;
use crate::rules::{RuleSet, RulesHandle};
use crate::verdict::{Decision, Peer, Stage};

/// What every session shares.
pub struct Shared {
    pub config: Arc<Config>,
    /// Judges every stage; keeps what it refuses and what is accepted.
    pub pipeline: Arc<Pipeline>,
    /// The rules in force; each session takes the set current when it starts.
    pub rules: Arc<RulesHandle>,
    /// For STARTTLS and implicit TLS: the certificate in force (replaced on
    /// reload); none without `[tls]`.
    pub tls: Arc<super::tls::Certificates>,
    /// For AUTH; None when AUTH is off.
    pub auth: Option<Arc<crate::policy::auth::Authenticator>>,
    /// Where the server is in its life (running, draining, closing).
    pub shutdown: watch::Receiver<Phase>,
    /// The open connections: above a share of them, timeouts shorten.
    pub connections: Arc<ConnectionLimits>,
    /// The memory all sessions may hold for message data.
    pub memory: Arc<MemoryBudget>,
}

impl Shared {
    /// The server's metrics.
    pub fn metrics(&self) -> Option<&crate::metrics::Metrics> {
        self.pipeline.metrics().map(Arc::as_ref)
    }
}

struct Session {
    conn: Connection,
    shared: Arc<Shared>,
    /// When the session must end, however it goes (`limits.session_timeout`).
    ends: Instant,
    /// What the checks know of the client.
    peer: Peer,
    /// EHLO, not HELO.
    esmtp: bool,
    /// The rules in force when the session began; it keeps them to its end.
    rules: Arc<RuleSet>,
    /// The mail transaction between MAIL and the end of DATA.
    transaction: Option<Transaction>,
    errors: usize,
    junk: usize,
    accepted: usize,
    refused: usize,
}

/// Whether the session goes on after a command.
enum Flow {
    Continue,
    Close,
}

impl Greeting for Connection {
    fn talks_first(&mut self, wait: Duration) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(self.wait_input(wait))
    }
}

/// Runs a session to its end and logs one line about it.
pub async fn run(conn: Connection, shared: Arc<Shared>) {
    let started = Instant::now();
    let peer = shared
        .pipeline
        .peer(conn.peer.ip(), conn.local.ip(), conn.tls, None)
        .await;
    let mut conn = conn;
    conn.watch_stress(crate::smtp::connection::Stress {
        signal: shared.connections.stress_signal(),
        timeout: shared.config.limits.stress_timeout,
    });
    let mut session = Session {
        ends: Instant::now() + shared.config.limits.session_timeout,
        rules: shared.rules.current(),
        peer,
        conn,
        shared,
        esmtp: false,
        transaction: None,
        errors: 0,
        junk: 0,
        accepted: 0,
        refused: 0,
    };
    let end = session.serve().await;
    session.conn.close().await;
    tracing::info!(
        client = %session.peer.ip,
        helo = session.peer.helo(),
        accepted = session.accepted,
        refused = session.refused,
        errors = session.errors,
        duration_ms = started.elapsed().as_millis() as u64,
        end,
        "disconnect"
    );
}

impl Session {
    fn config(&self) -> &Config {
        &self.shared.config
    }

    fn pipeline(&self) -> Arc<Pipeline> {
        self.shared.pipeline.clone()
    }

    /// How long to wait for a command or a line of data: `normal`, or the
    /// stress timeout while most connections are in use.
    fn patience(&self, normal: Duration) -> Duration {
        let limits = &self.config().limits;
        if self.shared.connections.under_stress() {
            normal.min(limits.stress_timeout)
        } else {
            normal
        }
    }

    /// By when the next command line must have arrived, whole.
    fn command_deadline(&self) -> Instant {
        (Instant::now() + self.patience(self.config().limits.command_timeout)).min(self.ends)
    }

    /// `421 4.4.2` for a client too slow (or a session too long).
    fn timed_out(&mut self) {
        let text = if Instant::now() >= self.ends {
            "Error: session lasted too long"
        } else {
            "Error: timeout exceeded"
        };
        let hostname = self.config().server.hostname.clone();
        self.reply(421, "4.4.2", format!("{hostname} {text}"));
    }

    /// A command that moves no mail along, counted against the junk limit.
    fn junk(&mut self, code: u16, status: &str, text: &str) {
        self.junk += 1;
        self.reply(code, status, text);
    }

    fn reply(&mut self, code: u16, status: &str, text: impl Into<String>) {
        self.conn.reply(&Reply::new(code, status, text));
    }

    /// A bad command: answered, and counted against the error limit.
    fn error(&mut self, code: u16, status: &str, text: impl Into<String>) {
        self.errors += 1;
        self.reply(code, status, text);
    }

    /// A refusal during the dialogue (no message yet), through the one refusal
    /// path; answers the client.
    async fn refuse(&mut self, stage: Stage, decision: Decision, recipients: &[String]) {
        self.refused += 1;
        let sender = self
            .transaction
            .as_ref()
            .map(Transaction::sender_text)
            .unwrap_or_default();
        let reply = self
            .pipeline()
            .keep(Kept {
                stage,
                peer: &self.peer,
                id: None,
                sender: &sender,
                recipients,
                decision,
                message: None,
                received: None,
                size: 0,
                rules: "",
            })
            .await;
        self.conn.reply(&reply);
    }

    /// Whether the client began with a PROXY header (`line`, its first, and
    /// what came with it).
    fn sent_proxy_header(&self, line: &[u8]) -> bool {
        let mut first = line.to_vec();
        first.extend(self.conn.pending().iter().take(12));
        super::proxy_protocol::looks_like_header(&first)
    }

    /// The dialogue; returns how it ended, for the log.
    async fn serve(&mut self) -> &'static str {
        let config = self.shared.config.clone();
        let pipeline = self.pipeline();
        let admitted = pipeline
            .connect(&self.peer, &self.rules, &mut self.conn)
            .await;
        if let Err(decision) = admitted.result {
            self.refused += 1;
            let mut reply = pipeline
                .keep(Kept {
                    stage: Stage::Connect,
                    peer: &self.peer,
                    id: None,
                    sender: "",
                    recipients: &[],
                    decision,
                    message: None,
                    received: None,
                    size: 0,
                    rules: "",
                })
                .await;
            reply.lines = vec![format!("{} {}", config.server.hostname, reply.text())];
            self.conn.reply(&reply);
            // The refusal's own log line says which check refused.
            return "refused at connect";
        }
        self.conn.reply(&Reply::plain(
            220,
            vec![format!(
                "{} {}",
                config.server.hostname, config.server.banner
            )],
        ));
        let mut shutdown = self.shared.shutdown.clone();
        let mut first_line = true;
        loop {
            let phase = *shutdown.borrow();
            if phase == Phase::Closing
                || (phase == Phase::Draining && !self.conn.has_buffered_input())
            {
                self.reply(
                    421,
                    "4.3.2",
                    format!("{} Service shutting down", config.server.hostname),
                );
                return "shutdown";
            }
            // Replies go out when the client's batch is used up (RFC 2920), and before
            // the select below, so a shutdown cannot cut a reply in half.
            if !self.conn.has_complete_line() && self.conn.flush().await.is_err() {
                return "connection error";
            }
            let read = tokio::select! {
                read = self.conn.read_line(config.limits.line_length_limit, self.command_deadline()) => read,
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        return "shutdown";
                    }
                    continue;
                }
            };
            if let Ok(Line::Complete(line)) = &read
                && std::mem::take(&mut first_line)
                && config.server.proxy_protocol
                && self.sent_proxy_header(line)
            {
                let decision = Decision::refuse(
                    "proxy_protocol",
                    Reply::new(
                        554,
                        "5.7.0",
                        "Error: a PROXY header is accepted only from server.proxy_networks",
                    ),
                    "PROXY header from a client not in server.proxy_networks",
                );
                self.refuse(Stage::Connect, decision, &[]).await;
                return "PROXY header refused";
            }
            let flow = match read {
                Ok(Line::Complete(line)) => match command::parse(&line) {
                    Ok(command) => self.handle(command).await,
                    Err(malformed) => {
                        if malformed.counts_as_error {
                            self.errors += 1;
                        }
                        self.conn.reply(&malformed.reply);
                        Flow::Continue
                    }
                },
                Ok(Line::TooLong) => {
                    self.error(
                        500,
                        "5.5.2",
                        format!(
                            "Error: line longer than {} octets",
                            config.limits.line_length_limit
                        ),
                    );
                    Flow::Continue
                }
                Err(ReadError::Closed) => return "client closed",
                Err(ReadError::TimedOut | ReadError::TooSlow) => {
                    self.timed_out();
                    return "timeout";
                }
                Err(ReadError::Io(_)) => return "connection error",
            };
            if let Flow::Close = flow {
                return "quit";
            }
            if self.errors >= config.limits.error_limit {
                self.reply(
                    421,
                    "4.7.0",
                    format!("{} Error: too many errors", config.server.hostname),
                );
                return "too many errors";
            }
            if self.junk > config.limits.junk_command_limit {
                self.reply(
                    421,
                    "4.7.0",
                    format!("{} Error: too many commands", config.server.hostname),
                );
                return "too many commands";
            }
        }
    }

    async fn handle(&mut self, command: Command) -> Flow {
        match command {
            Command::Ehlo(name) => self.hello(name, true).await,
            Command::Helo(name) => self.hello(name, false).await,
            Command::Mail { path, params } => self.mail(&path, params).await,
            Command::Rcpt { path } => self.rcpt(&path).await,
            Command::Data => return self.data().await,
            Command::Rset => {
                self.transaction = None;
                self.junk(250, "2.0.0", "Ok");
            }
            Command::Noop => self.junk(250, "2.0.0", "Ok"),
            Command::Vrfy => self.junk(
                252,
                "2.5.0",
                "Cannot VRFY user; send mail and delivery will be attempted",
            ),
            Command::Expn => self.junk(502, "5.5.1", "Error: EXPN not available"),
            Command::Help => self.junk(
                214,
                "2.0.0",
                "Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP (RFC 5321)",
            ),
            Command::Quit => {
                self.reply(221, "2.0.0", "Bye");
                return Flow::Close;
            }
            Command::StartTls => return self.start_tls().await,
            Command::Auth { mechanism, initial } => self.authenticate(mechanism, initial).await,
            Command::NotImplemented(_) => {
                self.error(502, "5.5.1", "Error: command not implemented")
            }
        }
        Flow::Continue
    }
}
