//! Reloading a running server (SIGHUP, `systemctl reload`, `mailmoat reload`):
//! the rules, the TLS certificate and the relay networks are read again; any
//! other changed setting is named as needing a restart.

use std::sync::Arc;

use crate::config::Config;

/// What a reload (SIGHUP, `systemctl reload`, `mailmoat reload`) does: the rules,
/// the TLS certificate and `[relay] trusted_networks` / `never_relay_networks`
/// are read again and take effect; list and recipients
/// files are read again whenever they change anyway; any other setting changed in
/// the configuration file is named as needing a restart. A file with an error
/// changes nothing: what is in force stays.
pub struct Reloader {
    /// The configuration the server runs with.
    pub running: Arc<Config>,
    pub rules: Arc<crate::rules::RulesHandle>,
    pub tls: Arc<crate::smtp::tls::Certificates>,
    pub relay: Arc<crate::policy::relay::RelayNetworks>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Reloader {
    /// Reloads; returns what it did, one line each (also logged).
    pub fn reload(&self, why: &str) -> ReloadReport {
        let mut report = ReloadReport::default();
        let reloaded = self.rules.reload();
        self.metrics.rules_reloaded(reloaded.is_ok());
        match reloaded {
            Ok(count) => {
                tracing::info!(rules = count, why, "rules reloaded");
                report.push(format!("rules: {count} loaded"));
            }
            Err(e) => {
                tracing::error!(error = %e, why, "rules not reloaded; the rules in force stay");
                report.failed(format!("rules not reloaded; the rules in force stay: {e}"));
            }
        }
        let Some(source) = &self.running.source else {
            return report;
        };
        let config = match Config::load(source) {
            Ok(config) => config,
            Err(e) => {
                tracing::error!(error = %e, why, "configuration not reloaded; the one in force stays");
                report.failed(format!(
                    "configuration not reloaded; the one in force stays: {e}"
                ));
                return report;
            }
        };
        match crate::smtp::tls::configured(&config.tls) {
            Ok(acceptor) => {
                let present = acceptor.is_some();
                self.tls.replace(acceptor);
                if present {
                    tracing::info!(why, "TLS certificate reloaded");
                    report.push("tls: certificate reloaded".into());
                }
            }
            Err(e) => {
                tracing::error!(error = %e, why, "TLS certificate not reloaded; the one in force stays");
                report.failed(format!(
                    "tls: not reloaded; the certificate in force stays: {e:#}"
                ));
            }
        }
        if self.relay.replace(&config.relay) {
            tracing::info!(why, "relay networks reloaded");
            report.push("relay: trusted_networks and never_relay_networks reloaded".into());
        }
        const RELOADED: [&str; 2] = ["relay.trusted_networks", "relay.never_relay_networks"];
        let restart: Vec<String> = self
            .running
            .changed_settings(&config)
            .into_iter()
            .filter(|key| !key.starts_with("tls.") && !RELOADED.contains(&key.as_str()))
            .collect();
        if !restart.is_empty() {
            tracing::warn!(settings = %crate::logging::list(&restart), why, "changed settings take effect only after a restart");
            report.push(format!(
                "needs a restart to take effect: {}",
                restart.join(", ")
            ));
        }
        report
    }

    /// Reloads on every SIGHUP.
    pub async fn on_hangup(self: Arc<Self>, mut hangup: tokio::signal::unix::Signal) {
        while hangup.recv().await.is_some() {
            let reloader = self.clone();
            // Compiling thousands of rules takes a while: not on an async worker.
            let _ = tokio::task::spawn_blocking(move || reloader.reload("SIGHUP")).await;
        }
    }
}

/// What a reload did, one line per part; `ok` is false when a part kept the old
/// version because the new one has an error.
#[derive(Debug)]
pub struct ReloadReport {
    pub lines: Vec<String>,
    pub ok: bool,
}

impl Default for ReloadReport {
    fn default() -> Self {
        ReloadReport {
            lines: Vec::new(),
            ok: true,
        }
    }
}

impl ReloadReport {
    fn push(&mut self, line: String) {
        self.lines.push(line);
    }

    fn failed(&mut self, line: String) {
        self.ok = false;
        self.lines.push(line);
    }
}
