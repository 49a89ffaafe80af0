//! HELO and EHLO (RFC 5321 4.1.1.1), and STARTTLS (RFC 3207), which starts the
//! greeting over.

use super::{Flow, Session};
use crate::reply::Reply;
use crate::verdict::Stage;

impl Session {
    pub(super) async fn hello(&mut self, name: String, esmtp: bool) {
        let previous = self.peer.helo.replace(name);
        let judged = self.pipeline().helo(&self.peer, &self.rules).await;
        if let Err(decision) = judged.result {
            self.peer.helo = previous;
            return self.refuse(Stage::Helo, decision, &[]).await;
        }
        self.transaction = None;
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
        if self.shared.tls.get().is_some() && !self.conn.tls {
            lines.push("STARTTLS".into());
        }
        if self.auth_offered() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        self.conn.reply(&Reply::plain(250, lines));
    }

    /// STARTTLS (RFC 3207): the handshake, then a fresh session that forgets
    /// everything said in plain text.
    pub(super) async fn start_tls(&mut self) -> Flow {
        let Some(acceptor) = self.shared.tls.get() else {
            self.error(502, "5.5.1", "Error: command not implemented");
            return Flow::Continue;
        };
        if self.conn.tls {
            self.error(503, "5.5.1", "Error: TLS already active");
            return Flow::Continue;
        }
        self.reply(220, "2.0.0", "Ready to start TLS");
        let timeout = self.config().limits.command_timeout;
        match self.conn.start_tls(&acceptor, timeout).await {
            Ok(discarded) => {
                if let Some(metrics) = self.shared.metrics() {
                    metrics.tls_session();
                }
                if discarded > 0 {
                    tracing::warn!(client = %self.peer.ip, bytes = discarded, "plain text pipelined after STARTTLS thrown away");
                }
                self.peer.helo = None;
                self.peer.tls = true;
                self.esmtp = false;
                self.transaction = None;
                Flow::Continue
            }
            Err(e) => {
                tracing::info!(client = %self.peer.ip, error = %e, "TLS handshake failed");
                Flow::Close
            }
        }
    }
}
