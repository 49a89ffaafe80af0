//! The rule file format, as the administrator writes it. Parsing only; checking and
//! compiling is [`super::compile`]'s job.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// One rule file: any number of `[[rule]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    #[serde(default)]
    pub rule: Vec<Spanned<RuleSpec>>,
}

/// A string or a list of strings ("any of"), with where it was written.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct OneOrMany(Spanned<toml::Value>);

impl OneOrMany {
    /// One string, as if written at `span`.
    pub fn from_string(span: std::ops::Range<usize>, value: String) -> OneOrMany {
        OneOrMany(Spanned::new(span, toml::Value::String(value)))
    }

    /// The strings, each with the place of the value (the list, for a list).
    /// Anything but strings is an error naming the place.
    pub fn strings(&self) -> Result<Vec<Spanned<String>>, (usize, String)> {
        let span = self.0.span();
        let wrong = || {
            (
                span.start,
                "expected a string or a list of strings".to_string(),
            )
        };
        match self.0.get_ref() {
            toml::Value::String(one) => Ok(vec![Spanned::new(span.clone(), one.clone())]),
            toml::Value::Array(many) => many
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(|s| Spanned::new(span.clone(), s.to_string()))
                        .ok_or_else(wrong)
                })
                .collect(),
            _ => Err(wrong()),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The rule acts.
    #[default]
    Enforce,
    /// The rule is evaluated and logged as "would have …"; nothing happens.
    Shadow,
}

/// What a rule looks at. Every condition given must hold; a list means "any of".
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// `when.any = true`: the rule applies to every message (a rule without
    /// conditions must say so: an empty `when` is refused as a slip).
    pub any: Option<bool>,
    /// Client addresses or CIDR networks.
    pub client_ip: Option<OneOrMany>,
    /// The client's reverse DNS name.
    pub client_name: Option<OneOrMany>,
    pub helo: Option<OneOrMany>,
    pub authenticated: Option<bool>,
    /// The client is in relay.trusted_networks.
    pub trusted: Option<bool>,
    pub sender: Option<OneOrMany>,
    pub sender_domain: Option<OneOrMany>,
    pub null_sender: Option<bool>,
    pub recipient: Option<OneOrMany>,
    pub recipient_domain: Option<OneOrMany>,
    pub min_recipients: Option<usize>,
    pub max_recipients: Option<usize>,
    /// Sizes in bytes, or with a unit: "10MB", "512KB".
    pub min_size: Option<Spanned<Size>>,
    pub max_size: Option<Spanned<Size>>,
    /// Header name → patterns on its decoded value.
    pub header: Option<BTreeMap<String, OneOrMany>>,
    pub subject: Option<OneOrMany>,
    pub body: Option<OneOrMany>,
    pub attachment_name: Option<OneOrMany>,
    pub attachment_extension: Option<OneOrMany>,
    pub attachment_type: Option<OneOrMany>,
    pub attachment_magic: Option<OneOrMany>,
    /// Sender authentication results: `pass`, `fail`, `softfail`, `neutral`,
    /// `none`, `temperror`, `permerror` (SPF at MAIL, the others at DATA).
    pub spf: Option<OneOrMany>,
    pub dkim: Option<OneOrMany>,
    pub dmarc: Option<OneOrMany>,
    pub arc: Option<OneOrMany>,
    /// A domain that signed with a passing DKIM signature (`"*.example.com"`
    /// for its subdomains too).
    pub dkim_domain: Option<OneOrMany>,
    /// The author domain's DMARC policy: `none`, `quarantine`, `reject`.
    pub dmarc_policy: Option<OneOrMany>,
    /// The engine could not look into all of it (encrypted, a format or method
    /// it does not read, damaged, past the container limits).
    pub attachment_unscannable: Option<Spanned<bool>>,
    /// It holds Office macros: a VBA project in an OLE or OOXML document.
    pub attachment_macros: Option<Spanned<bool>>,
    /// The virus clamd found (its signature's name), with the usual patterns.
    pub virus: Option<OneOrMany>,
    /// rspamd's score is at least this.
    pub min_spam_score: Option<f64>,
    /// rspamd's action: `reject`, `soft reject`, `rewrite subject`,
    /// `add header`, `greylist`, `no action`.
    pub spam_action: Option<OneOrMany>,
    /// A symbol rspamd found (`GTUBE`, `BAYES_SPAM`).
    pub spam_symbol: Option<OneOrMany>,
}

/// A size: a number of bytes or text such as "10MB".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub usize);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum ListOrOne {
            Number(usize),
            Text(String),
        }
        match ListOrOne::deserialize(d)? {
            ListOrOne::Number(n) => Ok(Size(n)),
            ListOrOne::Text(text) => parse_size(&text).map(Size).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "'{text}' is not a size; write bytes (10000) or \"10KB\", \"5MB\""
                ))
            }),
        }
    }
}

fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number.parse().ok()?;
    let factor = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1024,
        "M" | "MB" | "MIB" => 1024 * 1024,
        "G" | "GB" | "GIB" => 1024 * 1024 * 1024,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// One `[[rule]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub mode: Mode,
    /// Keep what this rule refuses, discards or quarantines in the archive
    /// (default true; false for floods nobody wants to keep).
    pub archive: Option<bool>,
    #[serde(default)]
    pub when: Conditions,
    /// The rule does not match if any of these holds.
    #[serde(default)]
    pub unless: Conditions,
    pub action: Spanned<String>,
    /// reject / tempfail: the reply, e.g. "550 5.7.1 We do not accept this".
    pub reply: Option<Spanned<String>>,
    /// redirect / copy_to: addresses.
    pub to: Option<OneOrMany>,
    /// tag: headers to add.
    pub add_header: Option<BTreeMap<String, String>>,
    /// tag: text put in front of the subject.
    pub subject_prefix: Option<String>,
    /// rewrite: sender address map.
    pub sender: Option<Vec<RewriteSpec>>,
    /// rewrite: recipient address map.
    pub recipient: Option<Vec<RewriteSpec>>,
    /// rewrite: headers to set (replacing any of the same name).
    pub set_header: Option<BTreeMap<String, String>>,
    /// rewrite: headers to remove.
    pub remove_header: Option<Vec<String>>,
}

/// `{ from = "old@example.com", to = "new@example.com" }`, or with a regex and
/// `$1`-style references: `{ from = "/^(.*)@old\\.example$/", to = "$1@new.example" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewriteSpec {
    pub from: Spanned<String>,
    pub to: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10MB"), Some(10 * 1024 * 1024));
        assert_eq!(parse_size("512 kb"), Some(512 * 1024));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("ten"), None);
    }
}
