//! `[ldap]`: the directory (Active Directory, OpenLDAP) that knows the recipients
//! and the users' passwords. Checked here without touching the network.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::{Invalid, Secret, invalid};

/// The filter Active Directory needs: the primary address in `mail`, every
/// address (aliases included) in `proxyAddresses` as `smtp:alias@domain`.
pub const AD_RECIPIENT_FILTER: &str = "(|(mail=%s)(proxyAddresses=smtp:%s))";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LdapConfig {
    /// The directory servers, tried in this order (fail-over): `ldap://dc1:389`
    /// or `ldaps://dc1:636`. Empty: no directory.
    #[serde(deserialize_with = "one_or_many")]
    pub url: Vec<String>,
    /// Upgrade `ldap://` connections with StartTLS.
    pub starttls: bool,
    /// The CA that signed the directory's certificate (AD: the domain's CA);
    /// unset: the system's trusted CAs.
    pub ca_file: Option<PathBuf>,
    /// The read-only service account searches are made as; unset: anonymous.
    pub bind_dn: Option<String>,
    pub bind_password: Option<Secret>,
    /// Where entries are searched (subtree), unless a domain gives its own.
    pub base: String,
    /// The longest a lookup may take, connecting included; past it, RCPT gets
    /// `451 4.4.3` and AUTH `454 4.7.0`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Connections kept open to the directory (each carries many searches at once).
    pub pool_size: usize,
    /// How long "this address exists" and "no such address" are remembered.
    #[serde(with = "humantime_serde")]
    pub found_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub not_found_ttl: Duration,
    /// Answers remembered at most (the oldest are forgotten first).
    pub cache_size: usize,
    /// How a login name finds its entry for AUTH: `%s` the name as typed, `%u`
    /// its part before `@`, `%d` the part after.
    pub login_filter: String,
}

impl Default for LdapConfig {
    fn default() -> Self {
        LdapConfig {
            url: Vec::new(),
            starttls: false,
            ca_file: None,
            bind_dn: None,
            bind_password: None,
            base: String::new(),
            timeout: Duration::from_secs(5),
            pool_size: 4,
            found_ttl: Duration::from_secs(3600),
            not_found_ttl: Duration::from_secs(600),
            cache_size: 100_000,
            login_filter: "(|(sAMAccountName=%s)(userPrincipalName=%s)(mail=%s))".into(),
        }
    }
}

/// `url = "ldap://dc1"` or `url = ["ldap://dc1", "ldap://dc2"]`.
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(url) => vec![url],
        OneOrMany::Many(urls) => urls,
    })
}

impl LdapConfig {
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if !self.enabled() {
            return Ok(());
        }
        let key = |name: &'static str| -> Vec<&'static str> { vec!["ldap", name] };
        for url in &self.url {
            let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
            let host = rest.split('/').next().unwrap_or("");
            if !matches!(scheme, "ldap" | "ldaps") || host.is_empty() {
                return Err(invalid(
                    &[&key("url")],
                    format!(
                        "ldap.url = \"{url}\": write ldap://host[:port] or ldaps://host[:port], \
                         such as \"ldaps://dc1.example.com\""
                    ),
                ));
            }
            if scheme == "ldaps" && self.starttls {
                return Err(invalid(
                    &[&key("starttls"), &key("url")],
                    format!(
                        "ldap.starttls = true with {url}: ldaps:// is TLS from the start; \
                         use ldap:// with StartTLS, or remove starttls"
                    ),
                ));
            }
        }
        if let Some(path) = &self.ca_file
            && let Err(e) = std::fs::read(path)
        {
            return Err(invalid(
                &[&key("ca_file")],
                format!(
                    "ldap.ca_file = \"{}\": cannot read it ({e}); give the PEM file of the \
                     directory's CA",
                    path.display()
                ),
            ));
        }
        match (&self.bind_dn, &self.bind_password) {
            (Some(_), None) => {
                return Err(invalid(
                    &[&key("bind_dn"), &key("bind_password")],
                    "ldap.bind_dn needs ldap.bind_password (the service account's password)",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    &[&key("bind_password"), &key("bind_dn")],
                    "ldap.bind_password needs ldap.bind_dn, such as \
                     \"CN=mailmoat,OU=Service Accounts,DC=example,DC=com\"",
                ));
            }
            (Some(dn), Some(_)) => check_dn(dn, &["ldap", "bind_dn"])?,
            (None, None) => {}
        }
        if self.base.is_empty() {
            return Err(invalid(
                &[&key("url")],
                "ldap.url is set but ldap.base is not: give where entries are searched, \
                 such as \"DC=example,DC=com\"",
            ));
        }
        check_dn(&self.base, &["ldap", "base"])?;
        check_filter(&self.login_filter, &["ldap", "login_filter"])?;
        if self.timeout.is_zero() {
            return Err(invalid(
                &[&key("timeout")],
                "ldap.timeout must be more than 0, such as \"5s\"",
            ));
        }
        for (name, value) in [
            ("pool_size", self.pool_size),
            ("cache_size", self.cache_size),
        ] {
            if value == 0 {
                return Err(invalid(
                    &[&key(name)],
                    format!("ldap.{name} must be at least 1"),
                ));
            }
        }
        Ok(())
    }
}

/// A distinguished name: `attribute=value` parts separated by commas.
pub(super) fn check_dn(dn: &str, key: &[&str]) -> Result<(), Invalid> {
    let well_formed = !dn.trim().is_empty()
        && dn.split(',').all(|part| {
            part.split_once('=')
                .is_some_and(|(a, _)| !a.trim().is_empty())
        });
    if well_formed {
        Ok(())
    } else {
        Err(invalid(
            &[key],
            format!(
                "{} = \"{dn}\": not a distinguished name; write it as \"DC=example,DC=com\"",
                key.join(".")
            ),
        ))
    }
}

/// An RFC 4515 filter in parentheses, with `%s` (or `%u`) where the address goes.
pub(super) fn check_filter(filter: &str, key: &[&str]) -> Result<(), Invalid> {
    let mut depth = 0i32;
    let mut balanced = filter.starts_with('(') && filter.ends_with(')');
    for c in filter.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        balanced &= depth >= 0;
    }
    balanced &= depth == 0;
    let unknown = filter
        .match_indices('%')
        .any(|(at, _)| !matches!(filter.as_bytes().get(at + 1), Some(b's' | b'u' | b'd')));
    if !balanced || unknown || !(filter.contains("%s") || filter.contains("%u")) {
        return Err(invalid(
            &[key],
            format!(
                "{} = \"{filter}\": write an LDAP filter in parentheses with %s for the \
                 address (%u its local part, %d its domain), such as \"{AD_RECIPIENT_FILTER}\"",
                key.join(".")
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_need_balanced_parentheses_and_a_place_for_the_address() {
        let key = &["ldap", "login_filter"];
        assert!(check_filter(AD_RECIPIENT_FILTER, key).is_ok());
        assert!(check_filter("(uid=%u)", key).is_ok());
        for bad in [
            "mail=%s",
            "(mail=%s",
            "(mail=alice)",
            "(mail=%x)",
            ")(mail=%s(",
        ] {
            assert!(check_filter(bad, key).is_err(), "{bad}");
        }
        assert!(check_dn("DC=example,DC=com", key).is_ok());
        assert!(check_dn("example.com", key).is_err());
    }
}
