//! `[sender_auth]` and `[[dkim_sign]]`: telling forged mail from genuine mail
//! (SPF, DKIM, DMARC, ARC) and signing what leaves.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SenderAuthConfig {
    /// SPF for the MAIL FROM identity (the HELO identity for the null sender),
    /// at MAIL.
    pub spf: bool,
    /// Every DKIM signature, at the end of DATA.
    pub dkim: bool,
    /// DMARC with alignment, from the SPF and DKIM results.
    pub dmarc: bool,
    /// The ARC chain.
    pub arc: bool,
    /// Refuse (p=reject) or quarantine (p=quarantine) mail failing DMARC.
    pub dmarc_enforce: bool,
    /// The name in our Authentication-Results headers; default server.hostname.
    pub authserv_id: Option<String>,
    /// Forwarders and mailing lists whose passing ARC seal overrides a DMARC
    /// failure.
    pub arc_trusted_sealers: Vec<String>,
    /// Seal mail the rules changed, so a backend trusting this sealer still
    /// passes DMARC.
    pub arc_seal: Option<SigningKey>,
}

impl Default for SenderAuthConfig {
    fn default() -> Self {
        SenderAuthConfig {
            spf: true,
            dkim: true,
            dmarc: true,
            arc: true,
            dmarc_enforce: false,
            authserv_id: None,
            arc_trusted_sealers: Vec::new(),
            arc_seal: None,
        }
    }
}

impl SenderAuthConfig {
    /// Whether anything is verified at all.
    pub fn verifies(&self) -> bool {
        self.spf || self.dkim || self.dmarc || self.arc
    }
}

/// A domain's signing key: `[[dkim_sign]]` entries and `arc_seal`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SigningKey {
    pub domain: String,
    pub selector: String,
    /// PEM: an RSA key (PKCS#1 or PKCS#8) or an Ed25519 key (PKCS#8), as
    /// `mailmoat dkim keygen` writes them.
    pub key_file: PathBuf,
}
