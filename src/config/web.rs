//! `[web]` and `[digest]`: the recipients' quarantine — a web page and the
//! periodic digest that links to it.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Invalid, Secret, invalid};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Where the quarantine's pages are served, such as "127.0.0.1:8025".
    /// Unset: off, and nothing about the web is reachable.
    pub listen: Option<SocketAddr>,
    /// What links in mail point to, such as "https://quarantine.example.com".
    pub base_url: String,
    /// HTTPS with the `[tls]` certificate; plain HTTP only on loopback (behind a
    /// reverse proxy that adds TLS).
    pub tls: bool,
    /// Signs links, sessions and form tokens (like `archive.release_key`): at
    /// least 16 random characters.
    pub secret: Option<Secret>,
    /// How long a signed-in session lasts.
    #[serde(with = "humantime_serde")]
    pub session_lifetime: Duration,
    /// Connections at once, and the longest one request may take.
    pub max_connections: usize,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DigestConfig {
    /// One message per recipient with what was held for them since the last.
    pub enabled: bool,
    /// The local time of the daily digest, "08:00"; or `every`.
    pub at: Option<String>,
    #[serde(with = "humantime_serde::option")]
    pub every: Option<Duration>,
    /// The digest's sender (From and envelope).
    pub from: String,
    /// How long the links in a digest work.
    #[serde(with = "humantime_serde")]
    pub link_lifetime: Duration,
}

impl Default for DigestConfig {
    fn default() -> Self {
        DigestConfig {
            enabled: false,
            at: Some("08:00".into()),
            every: None,
            from: String::new(),
            link_lifetime: Duration::from_secs(72 * 3600),
        }
    }
}

impl WebConfig {
    pub fn enabled(&self) -> bool {
        self.listen.is_some()
    }

    pub(super) fn validate(&self, has_certificate: bool) -> Result<(), Invalid> {
        let Some(listen) = self.listen else {
            return Ok(());
        };
        let key = |name: &'static str| vec!["web", name];
        if self.tls && !has_certificate {
            return Err(invalid(
                &[&key("tls"), &["tls", "cert_file"]],
                "web.tls = true needs the certificate: give tls.cert_file and tls.key_file",
            ));
        }
        if !self.tls && !listen.ip().is_loopback() {
            return Err(invalid(
                &[&key("listen"), &key("tls")],
                format!(
                    "web.listen = \"{listen}\" without web.tls: plain HTTP is allowed only on \
                     loopback (behind a reverse proxy with TLS); set web.tls = true or listen \
                     on 127.0.0.1"
                ),
            ));
        }
        match self.secret.as_ref().map(Secret::expose) {
            Some(secret) if secret.len() >= 16 => {}
            _ => {
                return Err(invalid(
                    &[&key("listen"), &key("secret")],
                    "web.listen needs web.secret: at least 16 random characters (openssl rand -hex 32)",
                ));
            }
        }
        let base = self.base_url.trim_end_matches('/');
        if !(base.starts_with("https://") || base.starts_with("http://")) || base.len() < 10 {
            return Err(invalid(
                &[&key("base_url")],
                "web.base_url: give the address links in mail point to, such as \
                 \"https://quarantine.example.com\"",
            ));
        }
        Ok(())
    }
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: None,
            base_url: String::new(),
            tls: false,
            secret: None,
            session_lifetime: Duration::from_secs(8 * 3600),
            max_connections: 64,
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl DigestConfig {
    pub(super) fn validate(&self, web: &WebConfig) -> Result<(), Invalid> {
        if !self.enabled {
            return Ok(());
        }
        let key = |name: &'static str| vec!["digest", name];
        if !web.enabled() {
            return Err(invalid(
                &[&key("enabled"), &["web", "listen"]],
                "digest.enabled needs the web page its links open: set web.listen",
            ));
        }
        if !self.from.contains('@') {
            return Err(invalid(
                &[&key("from")],
                "digest.from: give the digests' sender, such as \"quarantine@example.com\"",
            ));
        }
        if self.every.is_none()
            && let Some(at) = &self.at
            && parse_clock(at).is_none()
        {
            return Err(invalid(
                &[&key("at")],
                format!("digest.at = \"{at}\": write a local time as HH:MM, such as \"08:00\""),
            ));
        }
        Ok(())
    }
}

/// "08:00" → (8, 0).
pub fn parse_clock(text: &str) -> Option<(u32, u32)> {
    let (hour, minute) = text.split_once(':')?;
    let (hour, minute) = (hour.parse().ok()?, minute.parse().ok()?);
    (hour < 24 && minute < 60).then_some((hour, minute))
}
