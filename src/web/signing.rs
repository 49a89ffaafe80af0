//! Signed tokens: the links in digests and mails, the session cookie, the
//! form tokens against cross-site requests. Each is its text and an
//! HMAC-SHA256 of it under `[web] secret`, base64url; nothing is stored, so
//! every instance with the same secret accepts them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Not made by us, or changed since.
    Tampered,
    /// Made by us, for a time that has passed; the fields it held.
    Expired(Vec<String>),
}

pub struct Signer {
    key: Vec<u8>,
}

impl Signer {
    pub fn new(secret: &str) -> Signer {
        Signer {
            key: secret.as_bytes().to_vec(),
        }
    }

    fn mac(&self, text: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(text.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// A token holding `fields` until `expires` (unix seconds).
    pub fn sign(&self, fields: &[&str], expires: u64) -> String {
        let fields: Vec<String> = fields.iter().map(|f| escape(f)).collect();
        let text = format!("{}|{expires}", fields.join("|"));
        format!("{}.{}", URL_SAFE_NO_PAD.encode(&text), self.mac(&text))
    }

    /// The fields of a token we made that has not expired.
    pub fn open(&self, token: &str, now: u64) -> Result<Vec<String>, Refused> {
        let (text, mac) = token.split_once('.').ok_or(Refused::Tampered)?;
        let text = URL_SAFE_NO_PAD
            .decode(text)
            .ok()
            .and_then(|t| String::from_utf8(t).ok())
            .ok_or(Refused::Tampered)?;
        if !constant_time_eq(self.mac(&text).as_bytes(), mac.as_bytes()) {
            return Err(Refused::Tampered);
        }
        let mut fields: Vec<String> = text.split('|').map(unescape).collect();
        let expires: u64 = fields
            .pop()
            .and_then(|e| e.parse().ok())
            .ok_or(Refused::Tampered)?;
        if expires <= now {
            return Err(Refused::Expired(fields));
        }
        Ok(fields)
    }

    /// The form token that goes with a session or a link: a form posted
    /// without it (from another site) is refused.
    pub fn csrf(&self, bound_to: &str) -> String {
        self.mac(&format!("csrf|{bound_to}"))
    }

    pub fn csrf_matches(&self, bound_to: &str, given: &str) -> bool {
        constant_time_eq(self.csrf(bound_to).as_bytes(), given.as_bytes())
    }
}

/// A field as it is written in a token: `|` separates fields, so a `|` in a
/// field (an address's local part may hold one) is written `%7C`, and `%` as
/// `%25`; an address can never pass for two fields.
fn escape(field: &str) -> String {
    field.replace('%', "%25").replace('|', "%7C")
}

fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = &rest[at..];
        if code.starts_with("%7C") {
            out.push('|');
        } else if code.starts_with("%25") {
            out.push('%');
        } else {
            out.push_str(&code[..1]);
            rest = &code[1..];
            continue;
        }
        rest = &code[3..];
    }
    out.push_str(rest);
    out
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_open_only_unchanged_and_in_time() {
        let signer = Signer::new("0123456789abcdef0123");
        let token = signer.sign(&["link", "alice@example.test", "all"], 100);
        assert_eq!(
            signer.open(&token, 99).unwrap(),
            ["link", "alice@example.test", "all"]
        );
        assert_eq!(
            signer.open(&token, 100),
            Err(Refused::Expired(vec![
                "link".into(),
                "alice@example.test".into(),
                "all".into()
            ]))
        );
        let forged = token.replacen('.', "x.", 1);
        assert_eq!(signer.open(&forged, 99), Err(Refused::Tampered));
        let other = Signer::new("another-secret-of-16");
        assert_eq!(other.open(&token, 99), Err(Refused::Tampered));
        // A field holding the separator stays one field.
        let token = signer.sign(&["link", "a|open@example.test", "50%|x"], 100);
        assert_eq!(
            signer.open(&token, 99).unwrap(),
            ["link", "a|open@example.test", "50%|x"]
        );
        assert!(signer.csrf_matches("s1", &signer.csrf("s1")));
        assert!(!signer.csrf_matches("s2", &signer.csrf("s1")));
    }
}
