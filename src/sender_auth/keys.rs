//! Signing keys: DKIM signatures on the mail of trusted and logged-in clients,
//! ARC seals on inbound mail the rules changed, and `mailmoat dkim keygen`.

use anyhow::Context;
use base64::Engine;
use mail_auth::arc::ArcSealer;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use mail_auth::{ArcOutput, AuthenticatedMessage, AuthenticationResults};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

use crate::config::{Setting, SigningKey};

/// Headers a DKIM signature covers (those present; From always).
const SIGNED: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Unsubscribe",
];

/// Headers an ARC-Message-Signature covers.
const SEALED: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "DKIM-Signature",
];

enum Key {
    Rsa(RsaKey<Sha256>),
    Ed25519(Ed25519Key),
}

/// A loaded key, ready to sign or seal for its domain.
pub struct Signer {
    domain: String,
    selector: String,
    dkim: DkimKey,
    arc: SealKey,
}

enum DkimKey {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

enum SealKey {
    Rsa(ArcSealer<RsaKey<Sha256>, Done>),
    Ed25519(ArcSealer<Ed25519Key, Done>),
}

impl Signer {
    /// Reads `key.key_file`; errors name `setting`, whose line `check` reports.
    pub fn load(key: &SigningKey, setting: &[&str]) -> anyhow::Result<Signer> {
        let pem = std::fs::read(&key.key_file)
            .map_err(|e| anyhow::anyhow!("{}: {e}", key.key_file.display()))
            .context(Setting::new(setting))?;
        // Two copies: the DKIM signer and the ARC sealer each own theirs.
        let (first, second) = (read_key(&pem), read_key(&pem));
        let (first, second) = first
            .and_then(|a| second.map(|b| (a, b)))
            .map_err(|e| anyhow::anyhow!("{}: {e}", key.key_file.display()))
            .context(Setting::new(setting))?;
        let dkim = match first {
            Key::Rsa(k) => DkimKey::Rsa(dkim_signer(DkimSigner::from_key(k), key)),
            Key::Ed25519(k) => DkimKey::Ed25519(dkim_signer(DkimSigner::from_key(k), key)),
        };
        let arc = match second {
            Key::Rsa(k) => SealKey::Rsa(arc_sealer(ArcSealer::from_key(k), key)),
            Key::Ed25519(k) => SealKey::Ed25519(arc_sealer(ArcSealer::from_key(k), key)),
        };
        Ok(Signer {
            domain: key.domain.to_lowercase(),
            selector: key.selector.clone(),
            dkim,
            arc,
        })
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// The DKIM-Signature header (CRLF-terminated) for exactly these bytes.
    pub fn sign(&self, message: &[u8]) -> mail_auth::Result<String> {
        let signature = match &self.dkim {
            DkimKey::Rsa(s) => s.sign(message)?,
            DkimKey::Ed25519(s) => s.sign(message)?,
        };
        Ok(signature.to_header())
    }

    /// The ARC set (three headers, CRLF-terminated) sealing `message` with
    /// `results` — the Authentication-Results header `results_header` goes above
    /// the message and is sealed with it — on top of the chain `arc` found.
    pub fn seal(
        &self,
        message: &[u8],
        results_header: &[u8],
        results: &AuthenticationResults<'_>,
        arc: &ArcOutput<'_>,
    ) -> mail_auth::Result<Vec<u8>> {
        let parsed = AuthenticatedMessage::parse_with_opts(message, Some(results_header), true)
            .ok_or(mail_auth::Error::ParseError)?;
        let set = match &self.arc {
            SealKey::Rsa(s) => s.seal(&parsed, results, arc)?,
            SealKey::Ed25519(s) => s.seal(&parsed, results, arc)?,
        };
        Ok(set.to_header().into_bytes())
    }
}

fn dkim_signer<T: mail_auth::common::crypto::SigningKey>(
    builder: DkimSigner<T, mail_auth::dkim::NeedDomain>,
    key: &SigningKey,
) -> DkimSigner<T, Done> {
    builder
        .domain(key.domain.to_lowercase())
        .selector(key.selector.clone())
        .headers(SIGNED.iter().copied())
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}

fn arc_sealer<T: mail_auth::common::crypto::SigningKey<Hasher = Sha256>>(
    builder: ArcSealer<T, mail_auth::dkim::NeedDomain>,
    key: &SigningKey,
) -> ArcSealer<T, Done> {
    builder
        .domain(key.domain.to_lowercase())
        .selector(key.selector.clone())
        .headers(SEALED.iter().copied())
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}

/// An RSA key (PKCS#1 or PKCS#8 PEM) or an Ed25519 key (PKCS#8 PEM).
fn read_key(pem: &[u8]) -> Result<Key, String> {
    let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
        format!("{e}: expected a PEM private key (-----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----), as mailmoat dkim keygen writes")
    })?;
    if let PrivateKeyDer::Pkcs8(pkcs8) = &der
        && let Ok(key) = Ed25519Key::from_pkcs8_maybe_unchecked_der(pkcs8.secret_pkcs8_der())
    {
        return Ok(Key::Ed25519(key));
    }
    RsaKey::<Sha256>::from_key_der(der)
        .map(Key::Rsa)
        .map_err(|e| format!("not an RSA or Ed25519 key: {e}"))
}

/// Which kind of key `dkim keygen` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Rsa2048,
    Ed25519,
}

/// A new key: the PEM private key to keep, and the TXT record to publish at
/// `selector._domainkey.domain`.
pub struct NewKey {
    pub private_pem: String,
    pub record: String,
}

pub fn generate(algorithm: Algorithm) -> anyhow::Result<NewKey> {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    match algorithm {
        Algorithm::Rsa2048 => {
            let pair = mail_auth::dkim::generate::DkimKeyPair::generate_rsa(2048)
                .map_err(|e| anyhow::anyhow!("cannot make an RSA key: {e}"))?;
            Ok(NewKey {
                private_pem: pem("RSA PRIVATE KEY", pair.private_key()),
                record: format!(
                    "v=DKIM1; k=rsa; p={}",
                    b64(&rsa_subject_public_key_info(pair.public_key()))
                ),
            })
        }
        Algorithm::Ed25519 => {
            let pair = mail_auth::dkim::generate::DkimKeyPair::generate_ed25519()
                .map_err(|e| anyhow::anyhow!("cannot make an Ed25519 key: {e}"))?;
            Ok(NewKey {
                private_pem: pem("PRIVATE KEY", pair.private_key()),
                record: format!("v=DKIM1; k=ed25519; p={}", b64(pair.public_key())),
            })
        }
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The SubjectPublicKeyInfo DER of a PKCS#1 RSAPublicKey: what DKIM records
/// publish (RFC 6376 3.6.1), and what every verifier reads.
fn rsa_subject_public_key_info(pkcs1: &[u8]) -> Vec<u8> {
    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .iter()
                .copied()
                .skip_while(|b| *b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend_from_slice(&bytes);
        }
        out.extend_from_slice(content);
        out
    }
    // rsaEncryption, 1.2.840.113549.1.1.1, with NULL parameters.
    let algorithm = der(
        0x30,
        &[
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
        ],
    );
    let mut bits = vec![0u8];
    bits.extend_from_slice(pkcs1);
    let mut content = algorithm;
    content.extend(der(0x03, &bits));
    der(0x30, &content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_and_sign() {
        for algorithm in [Algorithm::Rsa2048, Algorithm::Ed25519] {
            let key = generate(algorithm).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("key.pem");
            std::fs::write(&path, &key.private_pem).unwrap();
            let signer = Signer::load(
                &SigningKey {
                    domain: "Example.TEST".into(),
                    selector: "s1".into(),
                    key_file: path,
                },
                &["dkim_sign", "0", "key_file"],
            )
            .unwrap();
            assert_eq!(signer.domain(), "example.test");
            let header = signer
                .sign(b"From: a@example.test\r\nSubject: x\r\n\r\nbody\r\n")
                .unwrap();
            assert!(header.starts_with("DKIM-Signature: "), "{header}");
            assert!(header.contains("d=example.test"), "{header}");
            assert!(key.record.starts_with("v=DKIM1; k="), "{}", key.record);
        }
    }

    #[test]
    fn a_file_that_is_no_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, "not a key\n").unwrap();
        let err = Signer::load(
            &SigningKey {
                domain: "example.test".into(),
                selector: "s1".into(),
                key_file: path,
            },
            &["dkim_sign", "0", "key_file"],
        )
        .err()
        .unwrap();
        let text = format!("{err:#}");
        assert!(
            text.contains("key.pem") && text.contains("PEM private key"),
            "{text}"
        );
    }
}
