//! SMTP AUTH, PLAIN and LOGIN (RFC 4954): offered only under TLS or to the
//! networks allowed plain text; failures are slowed down and locked out by the
//! authenticator.

use super::Session;
use crate::policy::auth::Login;
use crate::reply::Reply;
use crate::smtp::command::Mechanism;
use crate::smtp::connection::Line;

impl Session {
    /// AUTH is offered once the connection is encrypted, or in plain text to the
    /// networks configured for it.
    pub(super) fn auth_offered(&self) -> bool {
        self.peer.login.is_none()
            && self
                .shared
                .auth
                .as_ref()
                .is_some_and(|auth| self.conn.tls || auth.plaintext_allowed(self.peer.ip))
    }

    /// AUTH PLAIN and LOGIN (RFC 4954).
    pub(super) async fn authenticate(&mut self, mechanism: Mechanism, initial: Option<String>) {
        let Some(auth) = self.shared.auth.clone() else {
            self.errors += 1;
            return self.reply(502, "5.5.1", "Error: authentication not enabled");
        };
        if self.peer.login.is_some() {
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
        match auth.login(self.peer.ip, &user, &password).await {
            Login::Accepted(account) => {
                tracing::info!(client = %self.peer.ip, auth_user = %account.name, "login");
                self.pipeline().logged_in(&mut self.peer, account);
                self.reply(235, "2.7.0", "Authentication successful");
            }
            Login::Refused => {
                self.errors += 1;
                if let Some(metrics) = self.shared.metrics() {
                    metrics.auth_failed(false);
                }
                tracing::info!(client = %self.peer.ip, auth_user = %user, "login failed");
                self.reply(535, "5.7.8", "Authentication credentials invalid");
            }
            Login::LockedOut => {
                if let Some(metrics) = self.shared.metrics() {
                    metrics.auth_failed(true);
                }
                tracing::warn!(client = %self.peer.ip, auth_user = %user, "login refused: too many failures");
                self.reply(454, "4.7.0", "Too many failed logins; try again later");
            }
            Login::Unavailable(why) => {
                tracing::warn!(client = %self.peer.ip, auth_user = %user, error = %why, "login could not be checked");
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
            .read_line(config.limits.line_length_limit, self.command_deadline())
            .await
            .ok()?;
        let Line::Complete(line) = line else {
            return Some(String::new());
        };
        let text = String::from_utf8(line).ok()?;
        let text = text.trim_end_matches(['\r', '\n']).to_string();
        (text != "*").then_some(text)
    }
}

fn decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
}
