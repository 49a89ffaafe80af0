//! The client side of SMTP, used to deliver to the backend or a relay host and to
//! probe the backend for recipients. Built on lettre's connection-level API, since its
//! high-level `send_raw` stops at the first refused recipient and drops ESMTP
//! parameters.

use anyhow::Context;
use std::fmt;
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
    pub command_timeout: Duration,
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
    timeout: Duration,
    /// When the last transaction finished, for the idle limit of the pool.
    pub idle_since: Instant,
    pub encrypted: bool,
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
            .map_err(|_| ClientError(format!("{}: no greeting in time", target.address)))?
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
            timeout: target.command_timeout,
            idle_since: Instant::now(),
            encrypted,
        })
    }

    /// Sends one command line (without CRLF) and returns the server's reply, positive
    /// or negative. Errors mean the connection is no longer usable.
    pub async fn command(&mut self, line: String) -> Result<Reply, ClientError> {
        let sent = self.conn.command(CommandLine(line));
        to_reply(tokio::time::timeout(self.timeout, sent).await)
    }

    /// Sends message content after a 354 and returns the final reply. `message` is the
    /// unstuffed content; lettre stuffs dots and adds the terminating `.` line.
    pub async fn data(&mut self, message: &[u8]) -> Result<Reply, ClientError> {
        // lettre writes `\r\n.\r\n` after the content, so content that already ends in
        // CRLF would gain an empty line: give it without its last CRLF.
        let content = message.strip_suffix(b"\r\n").unwrap_or(message);
        // In pieces: lettre stuffs each into a buffer of its own, so a whole message
        // given at once would be copied whole (and grown past its size) per delivery.
        let sent = self.conn.message_iter(content.chunks(STUFFING_PIECE));
        to_reply(tokio::time::timeout(self.timeout, sent).await)
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

/// lettre reports negative replies as errors; here they are replies like any other.
fn to_reply(sent: Sent) -> Result<Reply, ClientError> {
    match sent {
        Err(_) => Err(ClientError("timed out waiting for a reply".into())),
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
