//! The client side of SMTP, used to deliver to the backend or a relay host and to
//! probe the backend for recipients. Built on lettre's connection-level API, since its
//! high-level `send_raw` stops at the first refused recipient and drops ESMTP
//! parameters.

use anyhow::Context;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;

use crate::config::{BackendConfig, TlsMode};
use crate::reply::Reply;

/// How much of a message lettre dot-stuffs into one buffer at a time.
const STUFFING_PIECE: usize = 64 * 1024;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port`.
    pub address: String,
    /// Our name in EHLO.
    pub helo: String,
    pub starttls: TlsMode,
    pub tls_verify: bool,
    /// PEM of an extra CA to trust.
    pub ca_pem: Option<Vec<u8>>,
    pub connect_timeout: Duration,
    /// For the greeting and the EHLO reply of a new connection.
    pub greeting_timeout: Duration,
    /// For the reply to MAIL, RCPT and the other commands.
    pub command_timeout: Duration,
    /// For the `354` after DATA, for each block of data to be taken, and for
    /// the reply to the end of data (RFC 5321 4.5.3.2).
    pub data_start_timeout: Duration,
    pub data_block_timeout: Duration,
    pub data_end_timeout: Duration,
}

impl Target {
    /// The backend (or a relay host reached the same way) from the configuration.
    pub fn from_backend(config: &BackendConfig, address: &str, helo: &str) -> anyhow::Result<Self> {
        let ca_pem = match &config.ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
                    .context(crate::config::Setting::new(&["backend", "ca_file"]))?,
            ),
            None => None,
        };
        Ok(Target {
            address: address.to_string(),
            helo: helo.to_string(),
            starttls: config.starttls,
            tls_verify: config.tls_verify,
            ca_pem,
            connect_timeout: config.connect_timeout,
            greeting_timeout: config.greeting_timeout,
            command_timeout: config.command_timeout,
            data_start_timeout: config.data_start_timeout,
            data_block_timeout: config.data_block_timeout,
            data_end_timeout: config.data_end_timeout,
        })
    }

    fn host(&self) -> &str {
        let host = self
            .address
            .rsplit_once(':')
            .map_or(self.address.as_str(), |(host, _)| host);
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// Why a conversation with the next hop failed before it gave a reply.
#[derive(Debug, Clone)]
pub struct ClientError(pub String);

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClientError {}

/// An open SMTP session with the next hop.
pub struct Client {
    conn: AsyncSmtpConnection,
    timeouts: Timeouts,
    /// When the last transaction finished, for the idle limit of the pool.
    pub idle_since: Instant,
    pub encrypted: bool,
}

/// How long each kind of reply may take.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    command: Duration,
    data_start: Duration,
    data_block: Duration,
    data_end: Duration,
}

/// A command line as lettre sends it (any `Display`).
struct CommandLine(String);

impl fmt::Display for CommandLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\r\n", self.0)
    }
}

impl Client {
    /// Connects, reads the greeting, sends EHLO and, as configured, STARTTLS.
    pub async fn connect(target: &Target) -> Result<Client, ClientError> {
        let hello = ClientId::Domain(target.helo.clone());
        // Our own socket, for TCP_NODELAY: lettre writes the final `.` line apart from
        // the message, and with Nagle's algorithm that write waits for the server's
        // delayed ACK (~40 ms a message).
        let connect = async {
            let stream = tokio::net::TcpStream::connect(target.address.as_str()).await?;
            stream.set_nodelay(true)?;
            Ok::<_, std::io::Error>(stream)
        };
        let stream = tokio::time::timeout(target.connect_timeout, connect)
            .await
            .map_err(|_| ClientError(format!("{}: timed out connecting", target.address)))?
            .map_err(|e| ClientError(format!("{}: {e}", target.address)))?;
        let greet = AsyncSmtpConnection::connect_with_transport(Box::new(stream), &hello);
        let mut conn = tokio::time::timeout(target.greeting_timeout, greet)
            .await
            .map_err(|_| {
                ClientError(format!(
                    "{}: no greeting within {}",
                    target.address,
                    humantime::format_duration(target.greeting_timeout)
                ))
            })?
            .map_err(|e| ClientError(format!("{}: {e}", target.address)))?;
        let mut encrypted = false;
        let wants_tls = match target.starttls {
            TlsMode::Off => false,
            TlsMode::Opportunistic => conn.can_starttls(),
            TlsMode::Required => true,
        };
        if wants_tls {
            let params = tls_parameters(target)?;
            conn.starttls(params, &hello)
                .await
                .map_err(|e| ClientError(format!("{}: STARTTLS failed: {e}", target.address)))?;
            encrypted = true;
        }
        Ok(Client {
            conn,
            timeouts: Timeouts {
                command: target.command_timeout,
                data_start: target.data_start_timeout,
                data_block: target.data_block_timeout,
                data_end: target.data_end_timeout,
            },
            idle_since: Instant::now(),
            encrypted,
        })
    }

    /// Sends one command line (without CRLF) and returns the server's reply, positive
    /// or negative. Errors mean the connection is no longer usable.
    pub async fn command(&mut self, line: String) -> Result<Reply, ClientError> {
        let timeout = if line.eq_ignore_ascii_case("DATA") {
            self.timeouts.data_start
        } else {
            self.timeouts.command
        };
        let verb = verb_of(&line).to_string();
        let sent = self.conn.command(CommandLine(line));
        to_reply(tokio::time::timeout(timeout, sent).await).map_err(|e| e.after(&verb, timeout))
    }

    /// Sends message content after a 354 and returns the final reply. `message` is the
    /// unstuffed content; lettre stuffs dots and adds the terminating `.` line.
    /// Each block must be taken within the data block timeout and the reply come
    /// within the end-of-data timeout; `late` is told once when the reply has
    /// taken longer than the command timeout (the hop is then called not
    /// answering, while this attempt waits on).
    pub async fn data(
        &mut self,
        message: &[u8],
        late: impl FnOnce(&str),
    ) -> Result<Reply, ClientError> {
        // lettre writes `\r\n.\r\n` after the content, so content that already ends in
        // CRLF would gain an empty line: give it without its last CRLF.
        let content = message.strip_suffix(b"\r\n").unwrap_or(message);
        // In pieces: lettre stuffs each into a buffer of its own, so a whole message
        // given at once would be copied whole (and grown past its size) per delivery.
        // lettre asks for the next piece when the last is written: that is the
        // progress the block timeout watches.
        let progress = Arc::new(Progress::default());
        let pieces = Pieces {
            pieces: content.chunks(STUFFING_PIECE),
            progress: progress.clone(),
        };
        let sent = self.conn.message_iter(pieces);
        tokio::pin!(sent);
        let timeouts = self.timeouts;
        let mut late = Some(late);
        loop {
            let (since, ended) = progress.read();
            let limit = if ended {
                timeouts.data_end
            } else {
                timeouts.data_block
            };
            let mut until = since + limit;
            let warn_at = since + timeouts.command;
            if ended && late.is_some() && warn_at < until {
                until = warn_at;
            }
            let timed_out = tokio::select! {
                done = &mut sent => {
                    return to_reply(Ok(done)).map_err(|e| e.after("the end of data", limit));
                }
                () = progress.changed.notified() => false,
                () = tokio::time::sleep_until(until.into()) => true,
            };
            match timed_out {
                false => {}
                true if progress.read() != (since, ended) => {}
                true if ended && until == warn_at && late.is_some() => {
                    if let Some(late) = late.take() {
                        late(&format!(
                            "no answer to the end of data within {}",
                            humantime::format_duration(timeouts.command)
                        ));
                    }
                }
                true if ended => {
                    return Err(ClientError(format!(
                        "no answer to the end of data within {}",
                        humantime::format_duration(limit)
                    )));
                }
                true => {
                    return Err(ClientError(format!(
                        "the message data was not taken: no progress within {}",
                        humantime::format_duration(limit)
                    )));
                }
            }
        }
    }

    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.conn.quit()).await;
    }

    pub fn supports_8bitmime(&self) -> bool {
        self.conn
            .server_info()
            .supports_feature(lettre::transport::smtp::extension::Extension::EightBitMime)
    }

    pub fn supports_smtputf8(&self) -> bool {
        self.conn
            .server_info()
            .supports_feature(lettre::transport::smtp::extension::Extension::SmtpUtfEight)
    }
}

/// How far lettre has written the message: when it last asked for a piece, and
/// whether the pieces are all out (then it sends the end and waits).
#[derive(Debug)]
struct Progress {
    at: std::sync::Mutex<(Instant, bool)>,
    changed: tokio::sync::Notify,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            at: std::sync::Mutex::new((Instant::now(), false)),
            changed: tokio::sync::Notify::new(),
        }
    }
}

impl Progress {
    fn read(&self) -> (Instant, bool) {
        *self.at.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn moved(&self, ended: bool) {
        *self.at.lock().unwrap_or_else(|p| p.into_inner()) = (Instant::now(), ended);
        self.changed.notify_one();
    }
}

/// The message's pieces, noting each time lettre takes one.
struct Pieces<'a> {
    pieces: std::slice::Chunks<'a, u8>,
    progress: Arc<Progress>,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let piece = self.pieces.next();
        self.progress.moved(piece.is_none());
        piece
    }
}

/// What a command is called in an error: `MAIL FROM`, `RCPT TO`, `DATA` (never
/// an argument, which may be a credential).
fn verb_of(line: &str) -> &str {
    let end = line.find([':', ' ']).unwrap_or(line.len());
    let verb = &line[..end];
    match verb.to_ascii_uppercase().as_str() {
        "MAIL" => "MAIL FROM",
        "RCPT" => "RCPT TO",
        _ => verb,
    }
}

fn tls_parameters(target: &Target) -> Result<TlsParameters, ClientError> {
    let mut builder = TlsParameters::builder(target.host().to_string())
        .dangerous_accept_invalid_certs(!target.tls_verify)
        .dangerous_accept_invalid_hostnames(!target.tls_verify);
    if let Some(pem) = &target.ca_pem {
        let cert =
            Certificate::from_pem(pem).map_err(|e| ClientError(format!("backend.ca_file: {e}")))?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build_rustls()
        .map_err(|e| ClientError(format!("TLS setup: {e}")))
}

type Sent = Result<
    Result<lettre::transport::smtp::response::Response, lettre::transport::smtp::Error>,
    tokio::time::error::Elapsed,
>;

impl ClientError {
    /// Names what the failure came after: a timeout as "no answer to MAIL FROM
    /// within 5m", a lost connection as "connection lost after MAIL FROM: …".
    fn after(self, what: &str, timeout: Duration) -> ClientError {
        if self.0 == TIMED_OUT {
            ClientError(format!(
                "no answer to {what} within {}",
                humantime::format_duration(timeout)
            ))
        } else {
            ClientError(format!("connection lost after {what}: {}", self.0))
        }
    }
}

const TIMED_OUT: &str = "timed out waiting for a reply";

/// lettre reports negative replies as errors; here they are replies like any other.
fn to_reply(sent: Sent) -> Result<Reply, ClientError> {
    match sent {
        Err(_) => Err(ClientError(TIMED_OUT.into())),
        Ok(Ok(response)) => {
            let code = response.code().to_string().parse().unwrap_or(0);
            let lines: Vec<&str> = response.message().collect();
            Ok(reply_from(code, &lines))
        }
        Ok(Err(e)) => match e.status() {
            Some(code) => {
                let code = code.to_string().parse().unwrap_or(0);
                let text = std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                Ok(reply_from(code, &[text.as_str()]))
            }
            None => Err(ClientError(e.to_string())),
        },
    }
}

/// Splits a leading enhanced status code (`5.1.1 `) off the text.
fn reply_from(code: u16, lines: &[&str]) -> Reply {
    let first = lines.first().copied().unwrap_or("");
    let (status, _) = first.split_once(' ').unwrap_or((first, ""));
    let is_status = status.split('.').count() == 3
        && status
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    let strip = |line: &str| -> String {
        if is_status {
            line.strip_prefix(status)
                .map_or(line, str::trim_start)
                .to_string()
        } else {
            line.to_string()
        }
    };
    Reply {
        code,
        status: if is_status {
            status.to_string()
        } else {
            String::new()
        },
        lines: lines.iter().map(|l| strip(l)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_code_is_split_from_backend_text() {
        let reply = reply_from(550, &["5.1.1 <x@y>: User unknown"]);
        assert_eq!(reply.status, "5.1.1");
        assert_eq!(reply.to_string(), "550 5.1.1 <x@y>: User unknown");
        let plain = reply_from(250, &["ok"]);
        assert_eq!(plain.status, "");
    }
}
