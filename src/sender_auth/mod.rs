//! Sender authentication: SPF at MAIL, DKIM, ARC and DMARC at the end of DATA
//! (Stalwart's mail-auth does the evaluation), the Authentication-Results header
//! every inbound message gets, DMARC enforcement, and on the way out DKIM
//! signatures and ARC seals ([`keys`]).
//!
//! Clients that may relay (trusted networks, logged-in users) are not verified:
//! their mail is ours, and it is signed instead.

mod assumed;
mod cache;
mod facts;
pub mod keys;
pub mod results;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use mail_auth::dmarc::Policy;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult, MessageAuthenticator, SpfOutput,
    SpfResult,
};

use mail_auth::spf::verify::SpfParameters;

use crate::config::{Config, SenderAuthConfig};
use crate::reply::Reply;
use crate::verdict::{DecidedBy, Decision, Outcome, Peer};

pub use assumed::AssumedAuth;
use cache::Caches;
pub use facts::{AuthFacts, AuthResult, Authentication, DmarcPolicy, SpfCheck};
use keys::Signer;

/// A message on its way into the queue, for [`SenderAuth::outgoing`].
pub struct Outgoing<'a> {
    pub peer: &'a Peer,
    pub sender: &'a str,
    pub spf: Option<&'a SpfCheck>,
    /// What was verified at the end of DATA (inbound mail).
    pub auth: Option<&'a Authentication>,
    /// As the client sent it.
    pub original: &'a [u8],
    /// As it is to be delivered (the rules' changes made).
    pub delivered: &'a [u8],
    /// Whether the rules changed it.
    pub changed: bool,
}

/// Verification and signing, as configured.
pub struct SenderAuth {
    config: SenderAuthConfig,
    authserv_id: String,
    hostname: String,
    authenticator: MessageAuthenticator,
    caches: Caches,
    /// How long one stage's lookups (SPF at MAIL; DKIM, ARC, DMARC at DATA) may take in all
    /// (`dns.timeout`): past it, temperror, so no name server holds a session longer.
    deadline: Duration,
    signers: Vec<Signer>,
    sealer: Option<Signer>,
    /// For trials (`test-rules --spf … --dmarc …`): these results instead of
    /// DNS.
    assumed: Option<AuthFacts>,
}

impl SenderAuth {
    /// For a trial: every verified message gets `facts` (the rest — who is
    /// verified, enforcement, signing — as configured).
    pub fn assuming(
        config: &Config,
        dns: &crate::dns::Dns,
        facts: AuthFacts,
    ) -> anyhow::Result<Arc<SenderAuth>> {
        let mut trial_config = config.clone();
        trial_config.sender_auth.spf = true;
        trial_config.sender_auth.dkim = true;
        trial_config.sender_auth.dmarc = true;
        trial_config.sender_auth.arc = true;
        let built = SenderAuth::new(&trial_config, dns)?.expect("verification is on");
        let mut auth = Arc::try_unwrap(built).ok().expect("not shared yet");
        auth.assumed = Some(facts);
        Ok(Arc::new(auth))
    }

    /// Loads the signing keys (errors name their setting); None when nothing is
    /// verified or signed.
    pub fn new(config: &Config, dns: &crate::dns::Dns) -> anyhow::Result<Option<Arc<SenderAuth>>> {
        let auth = &config.sender_auth;
        if !auth.verifies() && config.dkim_sign.is_empty() {
            return Ok(None);
        }
        let signers = config
            .dkim_sign
            .iter()
            .enumerate()
            .map(|(n, key)| Signer::load(key, &["dkim_sign", &n.to_string(), "key_file"]))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let sealer = auth
            .arc_seal
            .as_ref()
            .map(|key| Signer::load(key, &["sender_auth", "arc_seal", "key_file"]))
            .transpose()?;
        Ok(Some(Arc::new(SenderAuth {
            config: auth.clone(),
            authserv_id: config.authserv_id().to_string(),
            hostname: config.server.hostname.clone(),
            authenticator: MessageAuthenticator(dns.resolver()),
            caches: Caches::default(),
            deadline: config.dns.timeout,
            signers,
            sealer,
            assumed: None,
        })))
    }

    pub fn authserv_id(&self) -> &str {
        &self.authserv_id
    }

    /// Does this client's mail get verified (not trusted, not logged in)?
    pub fn verifies(&self, peer: &Peer) -> bool {
        self.config.verifies() && !peer.trusted && peer.login.is_none()
    }

    /// SPF at MAIL: the MAIL FROM identity, or the HELO identity for the null
    /// sender. None when SPF is off or the client is not verified.
    pub async fn spf(&self, peer: &Peer, sender: &str) -> Option<SpfCheck> {
        if !self.config.spf || !self.verifies(peer) {
            return None;
        }
        let helo = peer.helo().to_string();
        if let Some(assumed) = &self.assumed {
            let domain = sender.rsplit_once('@').map_or(&*helo, |(_, d)| d);
            let output = SpfOutput::new(domain.to_string()).with_result(match assumed.spf {
                AuthResult::Pass => SpfResult::Pass,
                AuthResult::Fail => SpfResult::Fail,
                AuthResult::SoftFail => SpfResult::SoftFail,
                AuthResult::Neutral => SpfResult::Neutral,
                AuthResult::None => SpfResult::None,
                AuthResult::TempError => SpfResult::TempError,
                AuthResult::PermError => SpfResult::PermError,
            });
            return Some(SpfCheck {
                result: assumed.spf,
                output,
                mail_from: sender.to_string(),
                helo,
            });
        }
        let params = if sender.is_empty() {
            SpfParameters::verify_ehlo(peer.ip, &helo, &self.hostname)
        } else {
            SpfParameters::verify_mail_from(peer.ip, &helo, &self.hostname, sender)
        };
        let output = tokio::time::timeout(
            self.deadline,
            self.authenticator.verify_spf(self.caches.with(params)),
        )
        .await
        .unwrap_or_else(|_| {
            SpfOutput::new(
                sender
                    .rsplit_once('@')
                    .map_or(&*helo, |(_, d)| d)
                    .to_string(),
            )
            .with_result(SpfResult::TempError)
        });
        Some(SpfCheck {
            result: AuthResult::of_spf(output.result()),
            output,
            mail_from: sender.to_string(),
            helo,
        })
    }

    /// DKIM, ARC and DMARC at the end of DATA, with the SPF check of MAIL; the
    /// Authentication-Results header that records them. None when the client is
    /// not verified.
    pub async fn verify(
        &self,
        peer: &Peer,
        sender: &str,
        spf: Option<&SpfCheck>,
        message: &[u8],
    ) -> Option<Authentication> {
        if !self.verifies(peer) {
            return None;
        }
        if let Some(assumed) = &self.assumed {
            let mut header = format!("Authentication-Results: {}", self.authserv_id);
            for (name, value) in [
                ("dkim", assumed.dkim),
                ("spf", assumed.spf),
                ("arc", assumed.arc),
                ("dmarc", assumed.dmarc),
            ] {
                header.push_str(&format!(
                    ";\r\n\t{name}={} (assumed for a trial)",
                    value.name()
                ));
            }
            header.push_str("\r\n");
            return Some(Authentication {
                facts: assumed.clone(),
                dmarc_domain: results::from_domain(message).unwrap_or_default(),
                arc_sealer: None,
                header,
            });
        }
        let judged = tokio::time::timeout(
            self.deadline,
            self.judge(peer.ip, sender, spf, message, None),
        )
        .await;
        Some(match judged {
            Ok(Some((authentication, _))) => authentication,
            // Unparseable headers: nothing could be verified.
            Ok(None) => self.unverified(spf, AuthResult::PermError),
            Err(_) => self.unverified(spf, AuthResult::TempError),
        })
    }

    /// A message whose DKIM, ARC and DMARC could not be evaluated.
    fn unverified(&self, spf: Option<&SpfCheck>, result: AuthResult) -> Authentication {
        let facts = AuthFacts {
            spf: spf.map_or(AuthResult::None, |s| s.result),
            dkim: if self.config.dkim {
                result
            } else {
                AuthResult::None
            },
            dmarc: if self.config.dmarc {
                result
            } else {
                AuthResult::None
            },
            arc: if self.config.arc {
                result
            } else {
                AuthResult::None
            },
            ..AuthFacts::default()
        };
        let mut header = format!("Authentication-Results: {}", self.authserv_id);
        if let Some(spf) = spf {
            header.push_str(&format!(";\r\n\tspf={}", spf.result.name()));
        }
        for (on, name, value) in [
            (self.config.dkim, "dkim", facts.dkim),
            (self.config.arc, "arc", facts.arc),
            (self.config.dmarc, "dmarc", facts.dmarc),
        ] {
            if on {
                header.push_str(&format!(";\r\n\t{name}={}", value.name()));
            }
        }
        header.push_str("\r\n");
        Authentication {
            facts,
            header,
            ..Authentication::default()
        }
    }

    /// The evaluation itself. With `seal_over`, also seals that message (the one
    /// the rules changed) with an ARC set recording these results.
    async fn judge(
        &self,
        ip: IpAddr,
        sender: &str,
        spf: Option<&SpfCheck>,
        message: &[u8],
        seal_over: Option<&[u8]>,
    ) -> Option<(Authentication, Option<Vec<u8>>)> {
        let parsed = AuthenticatedMessage::parse(message)?;
        let dkim = if self.config.dkim || self.config.dmarc {
            self.authenticator
                .verify_dkim(self.caches.with(&parsed))
                .await
        } else {
            Vec::new()
        };
        let arc = if self.config.arc || seal_over.is_some() {
            Some(
                self.authenticator
                    .verify_arc(self.caches.with(&parsed))
                    .await,
            )
        } else {
            None
        };
        let from_domain = parsed
            .from
            .first()
            .and_then(|f| f.rsplit_once('@'))
            .map(|(_, d)| d.to_lowercase())
            .unwrap_or_default();
        let no_spf;
        let spf_output = match spf {
            Some(spf) => &spf.output,
            None => {
                no_spf = SpfOutput::new(String::new());
                &no_spf
            }
        };
        let mail_from_domain = sender.rsplit_once('@').map_or("", |(_, d)| d);
        let dmarc = if self.config.dmarc {
            Some(
                self.authenticator
                    .verify_dmarc(self.caches.with(mail_auth::dmarc::verify::DmarcParameters {
                        message: &parsed,
                        dkim_output: &dkim,
                        dkim2_output: None,
                        rfc5321_mail_from_domain: mail_from_domain,
                        spf_output,
                    }))
                    .await,
            )
        } else {
            None
        };

        let mut results = AuthenticationResults::new(&self.authserv_id);
        // No signature, no dkim= entry (RFC 8601 leaves out what was not
        // there to check).
        if self.config.dkim {
            results = results.with_dkim_results(&dkim, &from_domain);
        }
        if let Some(spf) = spf {
            results = if spf.mail_from.is_empty() {
                results.with_spf_ehlo_result(&spf.output, ip, &spf.helo)
            } else {
                results.with_spf_mailfrom_result(&spf.output, ip, &spf.mail_from, &spf.helo)
            };
        }
        if self.config.arc
            && let Some(arc) = &arc
        {
            results = results.with_arc_result(arc, ip);
        }
        if let Some(dmarc) = &dmarc {
            results = results.with_dmarc_result(dmarc);
        }

        let passing: Vec<String> = dkim
            .iter()
            .filter(|o| o.result() == &DkimResult::Pass)
            .filter_map(|o| o.signature().map(|s| s.d.to_lowercase()))
            .collect();
        let dkim_result = if !self.config.dkim {
            AuthResult::None
        } else if !passing.is_empty() {
            AuthResult::Pass
        } else {
            // The most telling of the failures: a broken signature over an
            // unreachable key.
            [
                AuthResult::Fail,
                AuthResult::PermError,
                AuthResult::TempError,
                AuthResult::Neutral,
            ]
            .into_iter()
            .find(|r| dkim.iter().any(|o| AuthResult::of_dkim(o.result()) == *r))
            .unwrap_or(AuthResult::None)
        };
        // mail-auth drops a DKIM-Signature it cannot parse unless the fault is a
        // DKIM one (bad base64, say): it still was a signature that failed.
        let unparsed = self.config.dkim
            && parsed.has_dkim_errors
            && !dkim.iter().any(|o| o.signature().is_none());
        let dkim_result = match dkim_result {
            AuthResult::None if unparsed => AuthResult::PermError,
            other => other,
        };
        let arc_result = arc
            .as_ref()
            .filter(|_| self.config.arc)
            .map_or(AuthResult::None, |a| AuthResult::of_dkim(a.result()));
        let arc_sealer = arc
            .as_ref()
            .filter(|a| a.result() == &DkimResult::Pass)
            .and_then(|a| a.sets().last())
            .map(|set| set.seal.header.d.to_lowercase());
        let (dmarc_result, dmarc_policy, dmarc_domain) = match &dmarc {
            Some(d) => (
                AuthResult::of_dmarc(&d.result()),
                match d.policy() {
                    _ if d.dmarc_record().is_none() => None,
                    Policy::Reject => Some(DmarcPolicy::Reject),
                    Policy::Quarantine => Some(DmarcPolicy::Quarantine),
                    Policy::None | Policy::Unspecified => Some(DmarcPolicy::None),
                },
                d.domain().to_string(),
            ),
            None => (AuthResult::None, None, String::new()),
        };
        let mut header = Vec::new();
        mail_auth::common::headers::HeaderWriter::write_header(&results, &mut header);
        if unparsed && header.ends_with(b"\r\n") {
            header.truncate(header.len() - 2);
            header.extend_from_slice(b";\r\n\tdkim=permerror (malformed DKIM-Signature)\r\n");
        }
        let sealed = match (seal_over, &self.sealer, &arc) {
            (Some(changed), Some(sealer), Some(arc)) => {
                sealer.seal(changed, &header, &results, arc).ok()
            }
            _ => None,
        };
        Some((
            Authentication {
                facts: AuthFacts {
                    spf: spf.map_or(AuthResult::None, |s| s.result),
                    dkim: dkim_result,
                    dmarc: dmarc_result,
                    arc: arc_result,
                    dkim_domains: passing,
                    dmarc_policy,
                },
                dmarc_domain,
                arc_sealer,
                header: String::from_utf8_lossy(&header).into_owned(),
            },
            sealed,
        ))
    }

    /// DMARC enforcement (`dmarc_enforce`): a failing message whose domain asks
    /// for reject is refused, for quarantine is quarantined — unless a trusted
    /// sealer's passing ARC chain vouches for it (a list or a forwarder). When
    /// DNS failed where the policy would refuse: try again later.
    pub async fn enforce(&self, auth: &Authentication, id: &str) -> Result<(), Decision> {
        if !self.config.dmarc_enforce {
            return Ok(());
        }
        let facts = &auth.facts;
        let Some(policy) = facts.dmarc_policy else {
            return Ok(());
        };
        if policy == DmarcPolicy::None || facts.dmarc == AuthResult::Pass {
            return Ok(());
        }
        let domain = &auth.dmarc_domain;
        if facts.dmarc == AuthResult::TempError {
            return Err(Decision::refuse(
                "dmarc",
                Reply::new(
                    451,
                    "4.4.3",
                    format!("DMARC policy of {domain} could not be checked (DNS); try again later"),
                ),
                format!(
                    "DMARC temperror for {domain}, whose policy is {}",
                    policy.name()
                ),
            ));
        }
        if facts.dmarc != AuthResult::Fail {
            return Ok(());
        }
        if let Some(sealer) = &auth.arc_sealer
            && self
                .config
                .arc_trusted_sealers
                .iter()
                .any(|trusted| trusted.eq_ignore_ascii_case(sealer))
        {
            tracing::info!(queue_id = %id, domain = %domain, sealer = %sealer, "DMARC failure overridden by a trusted ARC sealer");
            return Ok(());
        }
        let policy = self.sampled(domain, policy).await;
        let reason = format!("fails DMARC for {domain} (p={})", policy.name());
        match policy {
            DmarcPolicy::Reject => Err(Decision::refuse(
                "dmarc",
                Reply::new(
                    550,
                    "5.7.1",
                    format!(
                        "Message rejected: it fails DMARC, and {domain} asks for such mail to be rejected"
                    ),
                ),
                reason,
            )),
            DmarcPolicy::Quarantine => Err(Decision {
                reply: Reply::new(250, "2.0.0", format!("Ok: queued as {id}")),
                by: DecidedBy::check("dmarc"),
                reason,
                outcome: Outcome::Quarantined,
                archive: true,
            }),
            DmarcPolicy::None => Ok(()),
        }
    }

    /// RFC 7489 6.6.4: with `pct` below 100, the policy applies to that share of
    /// failing mail; the rest gets the next weaker one. (mail-auth follows RFC
    /// 9989, which dropped `pct`; many domains still publish it.)
    async fn sampled(&self, domain: &str, policy: DmarcPolicy) -> DmarcPolicy {
        // No answer in time: the policy as published.
        let Ok(Some(pct)) = tokio::time::timeout(self.deadline, self.pct(domain)).await else {
            return policy;
        };
        if rand::random_range(0..100u32) < pct {
            return policy;
        }
        match policy {
            DmarcPolicy::Reject => DmarcPolicy::Quarantine,
            _ => DmarcPolicy::None,
        }
    }

    /// The `pct` of the DMARC record that applies to `domain` (its own, else the
    /// nearest parent's).
    async fn pct(&self, domain: &str) -> Option<u32> {
        let labels: Vec<&str> = domain.split('.').collect();
        for start in 0..labels.len().saturating_sub(1) {
            let name = format!("_dmarc.{}.", labels[start..].join("."));
            let Ok(raw) = self.authenticator.txt_raw_lookup(name.as_str()).await else {
                continue;
            };
            let text = String::from_utf8_lossy(&raw).to_string();
            if !text
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("v=dmarc1")
            {
                continue;
            }
            return text.split(';').find_map(|tag| {
                let (key, value) = tag.split_once('=')?;
                (key.trim().eq_ignore_ascii_case("pct"))
                    .then(|| value.trim().parse::<u32>().ok().map(|p| p.min(100)))
                    .flatten()
            });
        }
        None
    }

    /// The message as it goes into the queue, when sender authentication has
    /// anything to add: Authentication-Results claiming our authserv-id that came
    /// from outside are removed; a verified message gets ours (and an ARC seal
    /// when the rules `changed` it); mail of clients that may relay is DKIM
    /// signed for its From domain. None: deliver `delivered` as it is.
    pub async fn outgoing(&self, message: Outgoing<'_>) -> Option<Vec<u8>> {
        let Outgoing {
            peer,
            sender,
            spf,
            auth,
            original,
            delivered,
            changed,
        } = message;
        let stripped = results::without_forged(delivered, &self.authserv_id);
        let mut prefix = Vec::new();
        if let Some(auth) = auth {
            let sealed = if changed && self.sealer.is_some() {
                let judged = tokio::time::timeout(
                    self.deadline,
                    self.judge(peer.ip, sender, spf, original, Some(&stripped)),
                )
                .await;
                judged.ok().flatten().and_then(|(_, sealed)| sealed)
            } else {
                None
            };
            if let Some(set) = sealed {
                prefix.extend_from_slice(&set);
            }
            prefix.extend_from_slice(auth.header.as_bytes());
        } else if (peer.trusted || peer.login.is_some())
            && let Some(signature) = self.sign(&stripped)
        {
            prefix.extend_from_slice(signature.as_bytes());
        }
        if prefix.is_empty() && matches!(stripped, std::borrow::Cow::Borrowed(_)) {
            return None;
        }
        prefix.extend_from_slice(&stripped);
        Some(prefix)
    }

    /// A DKIM-Signature header for a message whose From domain has a key.
    fn sign(&self, message: &[u8]) -> Option<String> {
        let from = results::from_domain(message)?;
        let signer = self
            .signers
            .iter()
            .find(|s| s.domain().eq_ignore_ascii_case(&from))?;
        match signer.sign(message) {
            Ok(header) => Some(header),
            Err(e) => {
                tracing::warn!(domain = %from, error = %e, "cannot DKIM-sign a message");
                None
            }
        }
    }
}
