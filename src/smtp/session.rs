//! One SMTP session: the RFC 5321 state machine. It drives; policy judges recipients,
//! the DATA reader judges framing, and the queue keeps what is accepted. A `250` after
//! DATA is sent only once the queue has the message on stable storage.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::command::{self, Command, MailParams, Mechanism};
use super::connection::{Connection, Line, ReadError};
use super::data::{DataOutcome, DataReader};
use crate::address::Path;
use crate::archive::{Record, Stage as ArchiveStage};
use crate::config::Config;
use crate::policy::auth::Login;
use crate::policy::recipients::{RecipientValidator, unix_now};
use crate::policy::relay::{self, Destination};
use crate::queue::Queue;
use crate::queue::envelope::Envelope;
use crate::queue::spool::new_id;
use crate::reply::{Decision, Reply};
use crate::rules::{Facts, Matched, Outcome, RuleSet, RulesHandle, Stage};

/// What every session shares.
pub struct Shared {
    pub config: Arc<Config>,
    pub queue: Arc<Queue>,
    pub recipients: Arc<RecipientValidator>,
    pub rules: Arc<RulesHandle>,
    /// Where refused mail is kept; None when the archive is off.
    pub archive: Option<Arc<crate::archive::Archive>>,
    /// Sends reports of archived mail to the backup mailbox.
    pub reporter: Option<Arc<crate::archive::report::Reporter>>,
    /// For STARTTLS; None without a certificate.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// For AUTH; None when AUTH is off.
    pub auth: Option<Arc<crate::policy::auth::Authenticator>>,
    /// Connection and sender checks (lists, DNSBL, sender domain, HELO).
    pub checks: Arc<crate::policy::checks::Checks>,
    /// Mail-bomb limits.
    pub mailbomb: Arc<crate::policy::limits::MailBomb>,
    /// Turns true when the server is shutting down.
    pub shutdown: watch::Receiver<bool>,
}

/// The mail transaction between MAIL and the end of DATA.
struct Transaction {
    sender: Path,
    params: MailParams,
    recipients: Vec<Destination>,
    /// Archive items this message asks to release (`release+ID.SIG@hostname`).
    releases: Vec<String>,
}

struct Session {
    conn: Connection,
    shared: Arc<Shared>,
    client_ip: IpAddr,
    /// The name given in HELO/EHLO.
    helo: Option<String>,
    esmtp: bool,
    /// Trusted network or logged in, and not on the never-relay list.
    may_relay: bool,
    /// In `relay.trusted_networks` (and not never-relay): for rules and precedence.
    trusted: bool,
    /// On the client allow list: skips the deny lists, DNSBLs and limits.
    allowed: bool,
    /// The client's confirmed reverse name, when looked up.
    client_name: Option<String>,
    /// The account the client logged in with.
    auth_user: Option<String>,
    /// The rules in force when the session began; it keeps them to its end.
    rules: Arc<RuleSet>,
    transaction: Option<Transaction>,
    errors: usize,
    junk: usize,
    accepted: usize,
    refused: usize,
}

/// What goes into the archive about one refusal.
struct Kept<'a> {
    stage: ArchiveStage,
    /// The queue id the client saw, for a message; a new id otherwise.
    id: Option<&'a str>,
    /// reject, tempfail, discard or quarantine.
    outcome: &'a str,
    decision: &'a Decision,
    sender: &'a str,
    recipients: Vec<String>,
    message: Option<Vec<u8>>,
}

impl<'a> Kept<'a> {
    /// A refusal during the dialogue: no message.
    fn dialogue(
        stage: ArchiveStage,
        decision: &'a Decision,
        sender: &'a str,
        recipients: Vec<String>,
    ) -> Self {
        Kept {
            stage,
            id: None,
            outcome: if decision.reply.is_transient() {
                "tempfail"
            } else {
                "reject"
            },
            decision,
            sender,
            recipients,
            message: None,
        }
    }
}

/// Whether the session goes on after a command.
enum Flow {
    Continue,
    Close,
}

/// Runs a session to its end and logs one line about it.
pub async fn run(conn: Connection, shared: Arc<Shared>) {
    let started = Instant::now();
    let client_ip = relay::canonical(conn.peer.ip());
    let may_relay = relay::may_relay(&shared.config, client_ip, false);
    let rules = shared.rules.current();
    let allowed = shared.checks.allowed(client_ip);
    let client_name = shared.checks.client_name(client_ip).await;
    let mut session = Session {
        rules,
        trusted: may_relay,
        allowed,
        client_name,
        auth_user: None,
        conn,
        shared,
        client_ip,
        helo: None,
        esmtp: false,
        may_relay,
        transaction: None,
        errors: 0,
        junk: 0,
        accepted: 0,
        refused: 0,
    };
    let end = session.serve().await;
    session.conn.close().await;
    tracing::info!(
        client = %session.client_ip,
        helo = session.helo.as_deref().unwrap_or(""),
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

    /// A command that moves no mail along, counted against the junk limit.
    fn junk(&mut self, code: u16, status: &str, text: &str) {
        self.junk += 1;
        self.reply(code, status, text);
    }

    fn reply(&mut self, code: u16, status: &str, text: impl Into<String>) {
        self.conn.reply(&Reply::new(code, status, text));
    }

    /// Trusted, logged in, or allow-listed: the deny lists, DNSBLs and mail-bomb
    /// limits do not apply (README, "Precedence").
    fn exempt(&self) -> bool {
        self.allowed || self.trusted || self.auth_user.is_some()
    }

    /// The mail-bomb limits spare the allow list, and trusted networks and
    /// logged-in clients unless `[mailbomb] exempt_trusted = false`.
    fn limits_exempt(&self) -> bool {
        self.allowed
            || ((self.trusted || self.auth_user.is_some())
                && self.shared.config.mailbomb.exempt_trusted)
    }

    /// Before the banner: deny lists, DNSBLs (if judged at connect), the
    /// connection rate, and whether the client talks before it is greeted.
    async fn admit(&mut self) -> Result<(), (Decision, &'static str)> {
        if !self.limits_exempt() {
            let limits = self.shared.mailbomb.clone();
            limits
                .connect(self.client_ip)
                .map_err(|d| (d, "connection rate"))?;
        }
        if self.exempt() {
            return Ok(());
        }
        let checks = self.shared.checks.clone();
        checks
            .connect(self.client_ip, self.client_name.as_deref())
            .await
            .map_err(|d| (d, "refused at connect"))?;
        let delay = checks.config().greet_delay;
        if !delay.is_zero() && self.conn.wait_input(delay).await {
            let decision = Decision::new(
                "pregreet",
                Reply::new(
                    554,
                    "5.5.1",
                    "Error: you talked before the greeting; goodbye",
                ),
                "client sent data before the banner",
            );
            return Err((decision, "talked before the banner"));
        }
        Ok(())
    }

    /// The dialogue; returns how it ended, for the log.
    async fn serve(&mut self) -> &'static str {
        let config = self.shared.config.clone();
        if let Err((decision, end)) = self.admit().await {
            self.refused += 1;
            self.log_refusal_of("connection", "", "", &decision);
            let _ = self
                .archive(Kept::dialogue(
                    ArchiveStage::Connect,
                    &decision,
                    "",
                    Vec::new(),
                ))
                .await;
            let mut reply = decision.reply.clone();
            reply.lines = vec![format!("{} {}", config.server.hostname, reply.text())];
            self.conn.reply(&reply);
            return end;
        }
        self.conn.reply(&Reply::plain(
            220,
            vec![format!(
                "{} {}",
                config.server.hostname, config.server.banner
            )],
        ));
        let mut shutdown = self.shared.shutdown.clone();
        loop {
            if *shutdown.borrow() && !self.conn.has_buffered_input() {
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
                read = self.conn.read_line(config.limits.line_length_limit, config.limits.command_timeout) => read,
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        return "shutdown";
                    }
                    continue;
                }
            };
            let flow = match read {
                Ok(Line::Complete(line)) => match command::parse(&line) {
                    Ok(command) => self.handle(command).await,
                    Err(refusal) => {
                        if refusal.counts_as_error {
                            self.errors += 1;
                        }
                        self.conn.reply(&refusal.reply);
                        Flow::Continue
                    }
                },
                Ok(Line::TooLong) => {
                    self.errors += 1;
                    self.reply(
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
                Err(ReadError::TimedOut) => {
                    self.reply(
                        421,
                        "4.4.2",
                        format!("{} Error: timeout exceeded", config.server.hostname),
                    );
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
            Command::Ehlo(name) => self.hello(name, true),
            Command::Helo(name) => self.hello(name, false),
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
                self.errors += 1;
                self.reply(502, "5.5.1", "Error: command not implemented");
            }
        }
        Flow::Continue
    }

    /// AUTH is offered once the connection is encrypted, or in plain text to the
    /// networks configured for it.
    fn auth_offered(&self) -> bool {
        self.auth_user.is_none()
            && self
                .shared
                .auth
                .as_ref()
                .is_some_and(|auth| self.conn.tls || auth.plaintext_allowed(self.client_ip))
    }

    /// STARTTLS (RFC 3207): the handshake, then a fresh session that forgets
    /// everything said in plain text.
    async fn start_tls(&mut self) -> Flow {
        let Some(acceptor) = self.shared.tls.clone() else {
            self.errors += 1;
            self.reply(502, "5.5.1", "Error: command not implemented");
            return Flow::Continue;
        };
        if self.conn.tls {
            self.errors += 1;
            self.reply(503, "5.5.1", "Error: TLS already active");
            return Flow::Continue;
        }
        self.reply(220, "2.0.0", "Ready to start TLS");
        let timeout = self.config().limits.command_timeout;
        match self.conn.start_tls(&acceptor, timeout).await {
            Ok(discarded) => {
                if discarded > 0 {
                    tracing::warn!(client = %self.client_ip, bytes = discarded, "plain text pipelined after STARTTLS thrown away");
                }
                self.helo = None;
                self.esmtp = false;
                self.transaction = None;
                Flow::Continue
            }
            Err(e) => {
                tracing::info!(client = %self.client_ip, error = %e, "TLS handshake failed");
                Flow::Close
            }
        }
    }

    /// AUTH PLAIN and LOGIN (RFC 4954).
    async fn authenticate(&mut self, mechanism: Mechanism, initial: Option<String>) {
        let Some(auth) = self.shared.auth.clone() else {
            self.errors += 1;
            return self.reply(502, "5.5.1", "Error: authentication not enabled");
        };
        if self.auth_user.is_some() {
            self.errors += 1;
            return self.reply(503, "5.5.1", "Error: already authenticated");
        }
        if self.transaction.is_some() {
            self.errors += 1;
            return self.reply(
                503,
                "5.5.1",
                "Error: AUTH not allowed during a mail transaction",
            );
        }
        if !self.auth_offered() {
            self.errors += 1;
            return self.reply(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            );
        }
        let credentials = match mechanism {
            Mechanism::Plain => {
                let response = match initial {
                    Some(initial) => Some(initial),
                    None => self.challenge("").await,
                };
                response
                    .map(|r| if r == "=" { String::new() } else { r })
                    .map(|r| {
                        decode(&r).and_then(|bytes| {
                            let mut parts = bytes.split(|&b| b == 0);
                            let (_authzid, user, password) =
                                (parts.next()?, parts.next()?, parts.next()?);
                            Some((
                                String::from_utf8(user.to_vec()).ok()?,
                                String::from_utf8(password.to_vec()).ok()?,
                            ))
                        })
                    })
            }
            Mechanism::Login => {
                let user = match initial {
                    Some(initial) => Some(initial),
                    None => self.challenge("VXNlcm5hbWU6").await,
                };
                match user {
                    None => None,
                    Some(user) => self.challenge("UGFzc3dvcmQ6").await.map(|password| {
                        let user = decode(&user).and_then(|u| String::from_utf8(u).ok());
                        let password = decode(&password).and_then(|p| String::from_utf8(p).ok());
                        user.zip(password)
                    }),
                }
            }
            Mechanism::Other => {
                self.errors += 1;
                return self.reply(
                    504,
                    "5.5.4",
                    "Unrecognized authentication type; use PLAIN or LOGIN",
                );
            }
        };
        let (user, password) = match credentials {
            None => {
                return self.reply(501, "5.0.0", "Authentication cancelled");
            }
            Some(None) => {
                self.errors += 1;
                return self.reply(501, "5.5.2", "Error: bad base64 or a malformed response");
            }
            Some(Some(pair)) => pair,
        };
        match auth.login(self.client_ip, &user, &password).await {
            Login::Accepted(user) => {
                tracing::info!(client = %self.client_ip, auth_user = %user, "login");
                self.may_relay = relay::may_relay(&self.shared.config, self.client_ip, true);
                self.auth_user = Some(user);
                self.reply(235, "2.7.0", "Authentication successful");
            }
            Login::Refused => {
                self.errors += 1;
                tracing::info!(client = %self.client_ip, auth_user = %user, "login failed");
                self.reply(535, "5.7.8", "Authentication credentials invalid");
            }
            Login::LockedOut => {
                tracing::warn!(client = %self.client_ip, auth_user = %user, "login refused: too many failures");
                self.reply(454, "4.7.0", "Too many failed logins; try again later");
            }
            Login::Unavailable(why) => {
                tracing::warn!(client = %self.client_ip, auth_user = %user, error = %why, "login could not be checked");
                self.reply(454, "4.7.0", "Temporary authentication failure");
            }
        }
    }

    /// A `334` challenge and the client's answer; None when it cancels with `*`
    /// or goes away.
    async fn challenge(&mut self, text: &str) -> Option<String> {
        self.conn.reply(&Reply::plain(334, vec![text.to_string()]));
        let config = self.shared.config.clone();
        let line = self
            .conn
            .read_line(
                config.limits.line_length_limit,
                config.limits.command_timeout,
            )
            .await
            .ok()?;
        let Line::Complete(line) = line else {
            return Some(String::new());
        };
        let text = String::from_utf8(line).ok()?;
        let text = text.trim_end_matches(['\r', '\n']).to_string();
        (text != "*").then_some(text)
    }

    fn hello(&mut self, name: String, esmtp: bool) {
        if !self.exempt()
            && let Err(decision) = self.shared.checks.helo(&name, self.conn.local.ip())
        {
            self.refused += 1;
            self.log_refusal_of("helo", "", "", &decision);
            return self.conn.reply(&decision.reply);
        }
        self.transaction = None;
        self.helo = Some(name);
        self.esmtp = esmtp;
        let hostname = self.config().server.hostname.clone();
        if !esmtp {
            self.conn.reply(&Reply::plain(250, vec![hostname]));
            return;
        }
        let mut lines = vec![
            hostname,
            "PIPELINING".into(),
            format!("SIZE {}", self.config().limits.message_size_limit),
            "8BITMIME".into(),
            "ENHANCEDSTATUSCODES".into(),
            "SMTPUTF8".into(),
        ];
        if self.shared.tls.is_some() && !self.conn.tls {
            lines.push("STARTTLS".into());
        }
        if self.auth_offered() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        self.conn.reply(&Reply::plain(250, lines));
    }

    async fn mail(&mut self, raw: &str, params: MailParams) {
        if self.helo.is_none() {
            self.errors += 1;
            return self.reply(503, "5.5.1", "Error: send HELO/EHLO first");
        }
        if self.transaction.is_some() {
            self.errors += 1;
            return self.reply(503, "5.5.1", "Error: nested MAIL command");
        }
        let sender = match Path::parse(raw) {
            Ok(path) => path,
            Err(e) => {
                self.errors += 1;
                return self.reply(
                    501,
                    "5.1.7",
                    format!("<{raw}>: Bad sender address syntax ({e})"),
                );
            }
        };
        if !raw.is_ascii() && !params.smtputf8 {
            return self.reply(
                553,
                "5.6.7",
                format!("<{raw}>: non-ASCII address requires SMTPUTF8"),
            );
        }
        let limit = self.config().limits.message_size_limit;
        if params.size.is_some_and(|size| size > limit) {
            return self.reply(552, "5.3.4", "Message size exceeds fixed limit");
        }
        let address = sender.to_string();
        if let (Some(user), Some(auth)) = (&self.auth_user, &self.shared.auth) {
            let config = self.shared.config.clone();
            if !auth.owns(user, &address, &|domain| config.is_hosted(domain)) {
                tracing::info!(client = %self.client_ip, auth_user = %user, sender = %address, "sender not owned by the logged-in user");
                return self.reply(
                    553,
                    "5.7.1",
                    format!("<{address}>: Sender address not owned by user {user}"),
                );
            }
        }
        let checks = self.shared.checks.clone();
        let domain = sender
            .mailbox()
            .and_then(|m| m.domain_name().map(str::to_string));
        let checked = if self.exempt() {
            Ok(())
        } else {
            checks.sender(domain.as_deref()).await
        };
        let checked = checked.and_then(|()| {
            if self.limits_exempt() {
                Ok(())
            } else {
                self.shared.mailbomb.message(self.client_ip, &address)
            }
        });
        // Checks and limits first, then the rules that can judge a sender now.
        let refused = match checked {
            Err(decision) => Some((decision, true)),
            Ok(()) => match self
                .rules
                .check_early(Stage::Mail, &self.facts(&address, &[]))
            {
                Ok(shadow) => {
                    self.log_shadow(&shadow);
                    None
                }
                Err(refusal) => {
                    self.log_shadow(&refusal.matched);
                    Some((refusal.decision("sender refused by rule"), refusal.archive))
                }
            },
        };
        if let Some((decision, archive)) = refused {
            self.refused += 1;
            self.log_refusal_of("sender", &address, "", &decision);
            if archive {
                let kept = Kept::dialogue(ArchiveStage::Mail, &decision, &address, Vec::new());
                let _ = self.archive(kept).await;
            }
            return self.conn.reply(&decision.reply);
        }
        self.transaction = Some(Transaction {
            sender,
            params,
            recipients: Vec::new(),
            releases: Vec::new(),
        });
        self.reply(250, "2.1.0", "Ok");
    }

    async fn rcpt(&mut self, raw: &str) {
        let Some(transaction) = &self.transaction else {
            self.errors += 1;
            return self.reply(503, "5.5.1", "Error: need MAIL command");
        };
        if transaction.recipients.len() >= self.config().limits.recipient_limit {
            return self.reply(452, "4.5.3", "Error: too many recipients");
        }
        if !raw.is_ascii() && !transaction.params.smtputf8 {
            return self.reply(
                553,
                "5.6.7",
                format!("<{raw}>: non-ASCII address requires SMTPUTF8"),
            );
        }
        if let Some(archive) = self.shared.archive.clone()
            && let Ok(crate::address::Path::Mailbox(mailbox)) = crate::address::Path::parse(raw)
            && let Some(domain) = mailbox.domain_name()
            && archive.is_release_address(&mailbox.local_unquoted, domain)
        {
            return self.release_request(&archive, &mailbox.local_unquoted, raw);
        }
        let decided = match relay::decide(&self.shared.config, raw, self.may_relay) {
            Ok(Destination::Hosted(mailbox)) => self
                .shared
                .recipients
                .check(&mailbox)
                .await
                .map(|()| Destination::Hosted(mailbox)),
            other => other,
        };
        let decided = decided
            .map_err(|decision| (decision, true))
            .and_then(|destination| {
                let sender = transaction.sender.to_string();
                let recipient = [destination.mailbox().to_string()];
                match self
                    .rules
                    .check_early(Stage::Rcpt, &self.facts(&sender, &recipient))
                {
                    Ok(shadow) => {
                        self.log_shadow(&shadow);
                        Ok(destination)
                    }
                    Err(refusal) => {
                        self.log_shadow(&refusal.matched);
                        Err((
                            refusal.decision("recipient refused by rule"),
                            refusal.archive,
                        ))
                    }
                }
            });
        // DNSBL (when judged at RCPT; postmaster always gets through) and the
        // recipient limits, for clients that are not exempt.
        let decided = match decided {
            Ok(destination) => {
                let recipient = destination.mailbox().to_string();
                let checks = self.shared.checks.clone();
                let dnsbl =
                    if !self.exempt() && checks.config().dnsbl_at == crate::config::DnsblAt::Rcpt {
                        checks.dnsbl(self.client_ip, Some(&recipient)).await
                    } else {
                        Ok(())
                    };
                let limited = dnsbl.and_then(|()| {
                    if self.limits_exempt() {
                        Ok(())
                    } else {
                        self.shared.mailbomb.recipient(self.client_ip, &recipient)
                    }
                });
                limited
                    .map(|()| destination)
                    .map_err(|decision| (decision, true))
            }
            Err(refused) => Err(refused),
        };
        match decided {
            Ok(destination) => {
                if let Some(transaction) = &mut self.transaction {
                    transaction.recipients.push(destination);
                }
                self.reply(250, "2.1.5", "Ok");
            }
            Err((decision, archive)) => {
                self.refused += 1;
                self.log_refusal(raw, &decision);
                if archive {
                    let sender = self
                        .transaction
                        .as_ref()
                        .map(|t| t.sender.to_string())
                        .unwrap_or_default();
                    let _ = self
                        .archive(Kept::dialogue(
                            ArchiveStage::Rcpt,
                            &decision,
                            &sender,
                            vec![raw.to_string()],
                        ))
                        .await;
                }
                self.conn.reply(&decision.reply);
            }
        }
    }

    /// `RCPT TO:<release+ID.SIG@hostname>`: a reviewer releasing an archived item
    /// from the backup mailbox. Only trusted or authenticated clients, only with
    /// the right signature; the release itself happens at the end of DATA.
    fn release_request(&mut self, archive: &crate::archive::Archive, local: &str, raw: &str) {
        if !self.may_relay {
            self.refused += 1;
            return self.reply(
                550,
                "5.7.1",
                format!(
                    "<{raw}>: release requests are taken only from trusted or authenticated clients"
                ),
            );
        }
        let Some(id) = archive.verify_release(local) else {
            self.refused += 1;
            tracing::warn!(client = %self.client_ip, recipient = raw, "release address with a wrong signature");
            return self.reply(
                550,
                "5.7.1",
                format!("<{raw}>: not a valid release address"),
            );
        };
        if let Some(transaction) = &mut self.transaction {
            transaction.releases.push(id);
        }
        self.reply(250, "2.1.5", "Ok: release request");
    }

    /// Keeps a refusal in the archive and reports it to the backup mailbox. An
    /// error means a message could not be kept: the caller answers 4xx instead.
    async fn archive(&mut self, kept: Kept<'_>) -> std::io::Result<()> {
        let Some(archive) = self.shared.archive.clone() else {
            return Ok(());
        };
        let record = Record {
            id: kept.id.map_or_else(new_id, str::to_string),
            time: unix_now(),
            stage: kept.stage,
            client_ip: self.client_ip.to_string(),
            client_name: self.client_name.clone(),
            helo: self.helo.clone().unwrap_or_default(),
            authenticated: self.auth_user.is_some(),
            sender: kept.sender.to_string(),
            recipients: kept.recipients,
            size: kept.message.as_ref().map_or(0, |m| m.len() as u64),
            outcome: kept.outcome.to_string(),
            rule: kept.decision.check.clone(),
            reason: kept.decision.reason.clone(),
            reply: kept.decision.reply.to_string(),
            has_message: kept.message.is_some(),
            released: None,
        };
        let message = kept.message;
        let writer = record.clone();
        let kept = tokio::task::spawn_blocking(move || {
            archive.keep(&writer, message.as_deref()).map(|()| message)
        })
        .await
        .map_err(std::io::Error::other)?;
        match kept {
            Ok(message) => {
                if let Some(reporter) = self.shared.reporter.clone() {
                    reporter.report(&record, message.as_deref()).await;
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(archive_id = %record.id, error = %e, "cannot keep a copy in the archive");
                Err(e)
            }
        }
    }

    fn log_refusal(&self, recipient: &str, decision: &Decision) {
        let sender = self
            .transaction
            .as_ref()
            .map(|t| t.sender.to_string())
            .unwrap_or_default();
        self.log_refusal_of("recipient", &sender, recipient, decision);
    }

    /// One line per refusal during the dialogue: what was refused, by which check.
    fn log_refusal_of(&self, what: &str, sender: &str, recipient: &str, decision: &Decision) {
        tracing::info!(
            queue_id = "NOQUEUE",
            client = %self.client_ip,
            helo = self.helo.as_deref().unwrap_or(""),
            sender,
            recipient,
            result = "reject",
            check = %decision.check,
            reason = %decision.reason,
            reply = %decision.reply,
            "{what} refused"
        );
    }

    /// Shadow rules change nothing but this log line.
    fn log_shadow(&self, matched: &[Matched]) {
        for m in matched.iter().filter(|m| m.shadow) {
            tracing::info!(
                client = %self.client_ip,
                rule = %m.rule,
                stage = m.stage.name(),
                detail = %m.detail,
                "shadow rule would have applied {}",
                m.action
            );
        }
    }

    /// What the rules see of this session.
    fn facts<'a>(&'a self, sender: &'a str, recipients: &'a [String]) -> Facts<'a> {
        Facts {
            client_ip: self.client_ip,
            client_name: self.client_name.as_deref(),
            helo: self.helo.as_deref().unwrap_or(""),
            authenticated: self.auth_user.is_some(),
            trusted: self.trusted,
            sender,
            recipients,
            size: 0,
            content: None,
        }
    }

    async fn data(&mut self) -> Flow {
        let Some(transaction) = self.transaction.take() else {
            self.errors += 1;
            self.reply(503, "5.5.1", "Error: need MAIL command");
            return Flow::Continue;
        };
        if transaction.recipients.is_empty() && transaction.releases.is_empty() {
            self.reply(554, "5.5.1", "Error: no valid recipients");
            return Flow::Continue;
        }
        let config = self.shared.config.clone();
        let id = new_id();
        let received = self.received_header(&id, &transaction);
        let received_len = received.len();
        self.reply(354, "", "End data with <CR><LF>.<CR><LF>");
        let mut reader = DataReader::new(
            config.limits.line_length_limit,
            config.limits.message_size_limit,
            config.limits.bare_line_endings,
            received,
        );
        match self
            .conn
            .read_data(&mut reader, config.limits.data_timeout)
            .await
        {
            Ok(()) => {}
            Err(ReadError::TimedOut) => {
                self.reply(
                    421,
                    "4.4.2",
                    format!("{} Error: timeout exceeded", config.server.hostname),
                );
                tracing::info!(queue_id = %id, client = %self.client_ip, result = "lost", "timeout during DATA; nothing queued");
                return Flow::Close;
            }
            Err(_) => {
                tracing::info!(queue_id = %id, client = %self.client_ip, result = "lost", "connection lost during DATA; nothing queued");
                return Flow::Close;
            }
        }
        self.conn.shrink();
        let size = reader.size();
        let message = match reader.finish() {
            DataOutcome::Message(message) => message,
            DataOutcome::Refused(reply, violations, read) => {
                self.errors += 1;
                self.refused += 1;
                tracing::debug!(queue_id = %id, ?violations, "framing violations");
                let decision = Decision::new("framing", reply, format!("{violations:?}"));
                let reply = self
                    .keep_refused(&id, "reject", &decision, &transaction, &read, received_len)
                    .await;
                self.log_message(&id, &transaction, "reject", &reply, size);
                self.conn.reply(&reply);
                return Flow::Continue;
            }
        };
        let released = release_all(self.shared.clone(), self.client_ip, &transaction).await;
        if transaction.recipients.is_empty() {
            // Only release requests: the message itself carried nothing to deliver.
            let reply = match released {
                Ok(text) => Reply::new(250, "2.0.0", text),
                Err(text) => Reply::new(550, "5.7.1", text),
            };
            self.conn.reply(&reply);
            return Flow::Continue;
        }
        self.finish_message_checked(&id, transaction, message, size, received_len)
            .await;
        Flow::Continue
    }

    /// Keeps a refused message in the archive; the reply to give: the refusal, or a
    /// temporary failure when no copy could be kept (so nothing is lost).
    async fn keep_refused(
        &mut self,
        id: &str,
        outcome: &str,
        decision: &Decision,
        transaction: &Transaction,
        message: &[u8],
        received_len: usize,
    ) -> Reply {
        // The archive keeps the message as the client sent it, without our trace line.
        let original = message
            .get(received_len..)
            .map(<[u8]>::to_vec)
            .filter(|m| !m.is_empty());
        let sender = transaction.sender.to_string();
        let kept = Kept {
            stage: ArchiveStage::Data,
            id: Some(id),
            outcome,
            decision,
            sender: &sender,
            recipients: transaction
                .recipients
                .iter()
                .map(|d| d.mailbox().to_string())
                .collect(),
            message: original,
        };
        match self.archive(kept).await {
            Ok(()) => decision.reply.clone(),
            Err(_) => Reply::new(
                451,
                "4.3.0",
                "Error: cannot keep a copy of this message; try again later",
            ),
        }
    }

    /// The end of DATA: the rules' verdict, then queue, archive, discard or refuse.
    async fn finish_message_checked(
        &mut self,
        id: &str,
        transaction: Transaction,
        message: Vec<u8>,
        size: usize,
        received_len: usize,
    ) {
        if !self.limits_exempt()
            && let Err(decision) = self.shared.mailbomb.body(&message[received_len..])
        {
            self.refused += 1;
            let reply = self
                .keep_refused(
                    id,
                    "tempfail",
                    &decision,
                    &transaction,
                    &message,
                    received_len,
                )
                .await;
            self.log_message(id, &transaction, "tempfail", &reply, size);
            tracing::info!(queue_id = %id, check = %decision.check, reason = %decision.reason, "message refused");
            return self.conn.reply(&reply);
        }
        self.finish_message(id, transaction, message, size, received_len)
            .await;
    }

    async fn finish_message(
        &mut self,
        id: &str,
        transaction: Transaction,
        message: Vec<u8>,
        size: usize,
        received_len: usize,
    ) {
        let sender = transaction.sender.to_string();
        let recipients: Vec<String> = transaction
            .recipients
            .iter()
            .map(|d| d.mailbox().to_string())
            .collect();
        let content = self
            .rules
            .needs_content()
            .then(|| crate::mime::Content::analyze(&message, &self.config().rules.limits()));
        let mut facts = self.facts(&sender, &recipients);
        facts.size = size;
        facts.content = content.as_ref();
        let verdict = self.rules.evaluate(&facts);
        drop(content);
        self.log_shadow(&verdict.matched);
        let decided_by = verdict.decided_by.clone().unwrap_or_default();
        let archived = self.shared.archive.is_some() && verdict.archive;
        let rule = format!("rule:{decided_by}");
        let queued_reply = Reply::new(250, "2.0.0", format!("Ok: queued as {id}"));
        let (result, reply) = match &verdict.outcome {
            Outcome::Reject(refusal) | Outcome::Tempfail(refusal) => {
                self.refused += 1;
                let outcome = if refusal.is_transient() {
                    "tempfail"
                } else {
                    "reject"
                };
                let decision = Decision::new(&rule, refusal.clone(), "refused by rule");
                let reply = if archived {
                    self.keep_refused(id, outcome, &decision, &transaction, &message, received_len)
                        .await
                } else {
                    refusal.clone()
                };
                (outcome, reply)
            }
            // The client is told what it would be told for any accepted message.
            Outcome::Discard | Outcome::Quarantine if archived => {
                let outcome = if verdict.outcome == Outcome::Discard {
                    "discard"
                } else {
                    "quarantine"
                };
                let decision =
                    Decision::new(&rule, queued_reply.clone(), format!("{outcome} by rule"));
                let reply = self
                    .keep_refused(id, outcome, &decision, &transaction, &message, received_len)
                    .await;
                if reply.is_positive() {
                    self.accepted += 1;
                }
                (outcome, reply)
            }
            Outcome::Discard => {
                self.accepted += 1;
                ("discard", queued_reply)
            }
            Outcome::Deliver | Outcome::Quarantine => {
                let held = verdict.outcome == Outcome::Quarantine;
                let changed = if verdict.changes_message() {
                    verdict.apply(&message)
                } else {
                    message
                };
                let envelope = Envelope {
                    client_ip: self.client_ip.to_string(),
                    helo: self.helo.clone().unwrap_or_default(),
                    eight_bit: transaction.params.eight_bit,
                    smtputf8: transaction.params.smtputf8,
                    ..Envelope::new(
                        id.to_string(),
                        verdict.sender.clone(),
                        verdict.recipients.clone(),
                    )
                };
                // Without an archive, quarantine is the queue's hold folder.
                let queued = if held {
                    self.shared.queue.enqueue_held(envelope, changed).await
                } else {
                    self.shared.queue.enqueue(envelope, changed).await
                };
                match queued {
                    Ok(()) => {
                        self.accepted += 1;
                        (if held { "quarantine" } else { "queued" }, queued_reply)
                    }
                    Err(e) => {
                        tracing::error!(queue_id = %id, error = %e, "cannot write the message to the queue");
                        (
                            "tempfail",
                            Reply::new(
                                451,
                                "4.3.0",
                                "Error: queue file write error; try again later",
                            ),
                        )
                    }
                }
            }
        };
        tracing::info!(
            queue_id = %id,
            client = %self.client_ip,
            helo = self.helo.as_deref().unwrap_or(""),
            sender = %sender,
            recipients = %recipients.join(","),
            size,
            result,
            rule = %decided_by,
            rules = %verdict.summary(),
            auth_user = self.auth_user.as_deref().unwrap_or(""),
            tls = self.conn.tls,
            reply = %reply,
            "message"
        );
        self.conn.reply(&reply);
    }

    /// One line per message decision.
    fn log_message(&self, id: &str, t: &Transaction, result: &str, reply: &Reply, size: usize) {
        let recipients: Vec<String> = t
            .recipients
            .iter()
            .map(|d| d.mailbox().to_string())
            .collect();
        tracing::info!(
            queue_id = %id,
            client = %self.client_ip,
            helo = self.helo.as_deref().unwrap_or(""),
            sender = %t.sender,
            recipients = %recipients.join(","),
            size,
            result,
            reply = %reply,
            "message"
        );
    }

    /// The trace header (RFC 5321 4.4) prepended to every accepted message.
    fn received_header(&self, id: &str, t: &Transaction) -> Vec<u8> {
        // RFC 3848 / 6531: S for TLS, A for a logged-in client.
        let base = match (t.params.smtputf8, self.esmtp) {
            (true, _) => "UTF8SMTP",
            (false, true) => "ESMTP",
            (false, false) => "SMTP",
        };
        let protocol = format!(
            "{base}{}{}",
            if self.conn.tls { "S" } else { "" },
            if self.auth_user.is_some() { "A" } else { "" }
        );
        let helo = self.helo.as_deref().unwrap_or("unknown");
        let ip = match self.client_ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("IPv6:{v6}"),
        };
        let mut header = format!(
            "Received: from {helo} ([{ip}])\r\n\tby {} with {protocol} id {id}",
            self.config().server.hostname
        );
        if let [only] = t.recipients.as_slice() {
            header.push_str(&format!("\r\n\tfor <{}>", only.mailbox()));
        }
        header.push_str(&format!("; {}\r\n", chrono::Utc::now().to_rfc2822()));
        header.into_bytes()
    }
}

/// Releases the archive items a message asked for; the text says what happened.
/// (A free function: a session holds its connection, which is not `Sync`.)
async fn release_all(
    shared: Arc<Shared>,
    client_ip: IpAddr,
    transaction: &Transaction,
) -> Result<String, String> {
    let Some(archive) = &shared.archive else {
        return Ok(String::new());
    };
    let mut done = Vec::new();
    for id in &transaction.releases {
        let by = format!("mail from {client_ip} <{}>", transaction.sender);
        let rules = shared.rules.current();
        let hostname = &shared.config.server.hostname;
        match crate::archive::release::release(
            archive,
            &rules,
            &shared.queue,
            hostname,
            id,
            &[],
            &by,
        )
        .await
        {
            Ok(queue_id) => done.push(format!("Released {id} (queued as {queue_id})")),
            Err(e) => {
                tracing::info!(client = %client_ip, archive_id = %id, error = %e, "release by mail refused");
                return Err(e);
            }
        }
    }
    Ok(done.join("; "))
}

fn decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
}
