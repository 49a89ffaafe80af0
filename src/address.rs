//! Envelope addresses as RFC 5321 4.1.2 defines them, parsed from the raw text the
//! client sent — never from a parser that unquotes, strips routes or splits at the
//! last `@`, because the relay decision must see where the mail would really go.

use std::fmt;

/// RFC 5321 4.5.3.1: the longest path, local part and domain a server must accept.
const MAX_PATH: usize = 256;
const MAX_LOCAL_PART: usize = 64;
const MAX_DOMAIN: usize = 255;

/// What the client wrote between `<` and `>` in MAIL FROM or RCPT TO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Path {
    /// `<>`: the null reverse-path of bounces.
    Null,
    /// `<postmaster>` without a domain, which RFC 5321 4.5.1 requires a server to accept.
    Postmaster,
    Mailbox(Mailbox),
}

/// A mailbox `local@domain`, optionally with an (obsolete) source route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The local part exactly as written, quotes included: the backend gets it unchanged.
    pub local: String,
    /// The local part with quoting removed: what it means.
    pub local_unquoted: String,
    pub domain: Domain,
    /// Source-route hops (`@a,@b:`). Ignored for delivery (RFC 5321 appendix C) but
    /// kept, since they are sender-specified routing.
    pub route: Vec<String>,
}

/// The part after the `@`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Domain {
    /// A domain name, lower-cased, without a trailing dot.
    Name(String),
    /// An address literal, the text inside the brackets (`127.0.0.1`, `IPv6:::1`).
    Literal(String),
}

/// Ways a sender can ask for mail to be routed beyond the domain it is addressed to
/// (Postfix calls these "sender-specified routing").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// `@hop1,@hop2:user@domain`
    SourceRoute,
    /// `user%elsewhere@domain`
    Percent,
    /// `elsewhere!user@domain`
    Bang,
    /// `"user@elsewhere"@domain`
    QuotedAt,
}

impl Routing {
    pub fn describe(self) -> &'static str {
        match self {
            Routing::SourceRoute => "source route",
            Routing::Percent => "'%' in local part",
            Routing::Bang => "'!' in local part",
            Routing::QuotedAt => "'@' in quoted local part",
        }
    }
}

/// Why a path could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    pub reason: &'static str,
    /// The text holds more than one unquoted `@` or a similar construction that some
    /// mail systems read as a route (`user@elsewhere@domain`).
    pub looks_routed: bool,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason)
    }
}

impl std::error::Error for PathError {}

fn syntax(reason: &'static str) -> PathError {
    PathError {
        reason,
        looks_routed: false,
    }
}

impl Path {
    /// Parses the text between the angle brackets.
    pub fn parse(raw: &str) -> Result<Path, PathError> {
        if raw.is_empty() {
            return Ok(Path::Null);
        }
        if raw.len() > MAX_PATH {
            return Err(syntax("address too long"));
        }
        if raw.eq_ignore_ascii_case("postmaster") {
            return Ok(Path::Postmaster);
        }
        let (route, mailbox) = split_source_route(raw)?;
        let mut mailbox = Mailbox::parse(mailbox)?;
        mailbox.route = route;
        Ok(Path::Mailbox(mailbox))
    }

    pub fn mailbox(&self) -> Option<&Mailbox> {
        match self {
            Path::Mailbox(m) => Some(m),
            _ => None,
        }
    }
}

impl fmt::Display for Path {
    /// The address as it is forwarded: `""` for the null path, no source route.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Null => Ok(()),
            Path::Postmaster => f.write_str("postmaster"),
            Path::Mailbox(m) => m.fmt(f),
        }
    }
}

impl Mailbox {
    /// Parses `local@domain` (no route).
    pub fn parse(text: &str) -> Result<Mailbox, PathError> {
        let (local, local_unquoted, rest) = if text.starts_with('"') {
            let (quoted, content, rest) = quoted_string(text)?;
            (quoted.to_string(), content, rest)
        } else {
            let end = text.find('@').unwrap_or(text.len());
            let local = &text[..end];
            if !is_dot_string(local) {
                return Err(syntax("bad local part"));
            }
            (local.to_string(), local.to_string(), &text[end..])
        };
        if local.len() > MAX_LOCAL_PART {
            return Err(syntax("local part longer than 64 octets"));
        }
        let Some(domain_text) = rest.strip_prefix('@') else {
            return Err(syntax("address has no domain"));
        };
        let domain = parse_domain(domain_text)?;
        Ok(Mailbox {
            local,
            local_unquoted,
            domain,
            route: Vec::new(),
        })
    }

    /// The domain name, if it is a name rather than an address literal.
    pub fn domain_name(&self) -> Option<&str> {
        match &self.domain {
            Domain::Name(name) => Some(name),
            Domain::Literal(_) => None,
        }
    }

    /// Every kind of sender-specified routing this address holds.
    pub fn routing(&self) -> Vec<Routing> {
        let mut found = Vec::new();
        if !self.route.is_empty() {
            found.push(Routing::SourceRoute);
        }
        if self.local_unquoted.contains('%') {
            found.push(Routing::Percent);
        }
        if self.local_unquoted.contains('!') {
            found.push(Routing::Bang);
        }
        if self.local_unquoted.contains('@') {
            found.push(Routing::QuotedAt);
        }
        found
    }

    /// Lower-cased `local@domain` with quoting removed, for lookups in recipient
    /// lists and caches (local parts are matched without regard to case, as the
    /// backends this stands in front of do).
    pub fn lookup_key(&self) -> String {
        format!("{}@{}", self.local_unquoted.to_lowercase(), self.domain)
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::Name(name) => f.write_str(name),
            Domain::Literal(literal) => write!(f, "[{literal}]"),
        }
    }
}

/// Splits `@a,@b:user@c` into (["a", "b"], "user@c").
fn split_source_route(raw: &str) -> Result<(Vec<String>, &str), PathError> {
    if !raw.starts_with('@') {
        return Ok((Vec::new(), raw));
    }
    let Some(colon) = raw.find(':') else {
        return Err(PathError {
            reason: "source route without ':'",
            looks_routed: true,
        });
    };
    let mut hops = Vec::new();
    for hop in raw[..colon].split(',') {
        let Some(name) = hop.strip_prefix('@') else {
            return Err(PathError {
                reason: "bad source route",
                looks_routed: true,
            });
        };
        match parse_domain(name) {
            Ok(domain) => hops.push(domain.to_string()),
            Err(_) => {
                return Err(PathError {
                    reason: "bad domain in source route",
                    looks_routed: true,
                });
            }
        }
    }
    Ok((hops, &raw[colon + 1..]))
}

/// RFC 5321 Quoted-string: returns (the quoted text with its quotes, the content
/// unescaped, what follows).
fn quoted_string(text: &str) -> Result<(&str, String, &str), PathError> {
    let mut content = String::new();
    let mut chars = text.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((&text[..=i], content, &text[i + 1..])),
            '\\' => match chars.next() {
                Some((_, escaped)) if (' '..='~').contains(&escaped) => content.push(escaped),
                _ => return Err(syntax("bad escape in quoted local part")),
            },
            c if is_qtext(c) => content.push(c),
            _ => return Err(syntax("bad character in quoted local part")),
        }
    }
    Err(syntax("unterminated quoted local part"))
}

fn is_qtext(c: char) -> bool {
    matches!(c, ' ' | '!' | '#'..='[' | ']'..='~') || !c.is_ascii()
}

/// RFC 5322 atext, plus UTF-8 for SMTPUTF8 (RFC 6531).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

fn is_dot_string(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

fn parse_domain(text: &str) -> Result<Domain, PathError> {
    if text.contains('@') {
        return Err(PathError {
            reason: "more than one '@' in address",
            looks_routed: true,
        });
    }
    if let Some(inner) = text.strip_prefix('[') {
        let literal = inner
            .strip_suffix(']')
            .ok_or(syntax("unterminated address literal"))?;
        return if is_address_literal(literal) {
            Ok(Domain::Literal(literal.to_string()))
        } else {
            Err(syntax("bad address literal"))
        };
    }
    // A trailing dot names the same domain in absolute form; it must not make a
    // hosted domain look foreign or the reverse.
    let name = text.strip_suffix('.').unwrap_or(text);
    if name.is_empty() || name.len() > MAX_DOMAIN {
        return Err(syntax("bad domain"));
    }
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii())
    };
    if !name.split('.').all(valid_label) {
        return Err(syntax("bad domain"));
    }
    Ok(Domain::Name(name.to_lowercase()))
}

fn is_address_literal(literal: &str) -> bool {
    if literal.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    if let Some(v6) = literal
        .strip_prefix("IPv6:")
        .or_else(|| literal.strip_prefix("ipv6:"))
    {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    // General-address-literal: Standardized-tag ":" 1*dcontent
    match literal.split_once(':') {
        Some((tag, content)) => {
            !tag.is_empty()
                && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !content.is_empty()
                && content
                    .chars()
                    .all(|c| ('!'..='Z').contains(&c) || ('^'..='~').contains(&c))
        }
        None => false,
    }
}

/// Finds the path in the argument of MAIL or RCPT: `FROM:<path> params` or
/// `TO:<path> params`. Returns the text inside the brackets and what follows.
///
/// A `>` inside a quoted local part does not end the path.
pub fn split_path_argument(argument: &str) -> Option<(&str, &str)> {
    let argument = argument.trim_start();
    let inner_start = argument.find('<')? + 1;
    if !argument[..inner_start - 1].trim().is_empty() {
        return None;
    }
    let mut in_quote = false;
    let mut escaped = false;
    for (i, c) in argument[inner_start..].char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quote => escaped = true,
            '"' => in_quote = !in_quote,
            '>' if !in_quote => {
                let end = inner_start + i;
                return Some((&argument[inner_start..end], &argument[end + 1..]));
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(raw: &str) -> Mailbox {
        match Path::parse(raw) {
            Ok(Path::Mailbox(m)) => m,
            other => panic!("{raw}: {other:?}"),
        }
    }

    #[test]
    fn plain_address_keeps_local_part_and_normalises_domain() {
        let m = mailbox("John.Doe@Example.TEST.");
        assert_eq!(m.local, "John.Doe");
        assert_eq!(m.domain, Domain::Name("example.test".into()));
        assert_eq!(m.to_string(), "John.Doe@example.test");
        assert_eq!(m.lookup_key(), "john.doe@example.test");
        assert!(m.routing().is_empty());
    }

    #[test]
    fn null_and_postmaster_paths() {
        assert_eq!(Path::parse(""), Ok(Path::Null));
        assert_eq!(Path::parse("PostMaster"), Ok(Path::Postmaster));
    }

    #[test]
    fn routing_tricks_are_recognised() {
        assert_eq!(
            mailbox("user%ext.com@hosted").routing(),
            vec![Routing::Percent]
        );
        assert_eq!(
            mailbox("ext.com!user@hosted").routing(),
            vec![Routing::Bang]
        );
        assert_eq!(
            mailbox("\"user@ext.com\"@hosted").routing(),
            vec![Routing::QuotedAt]
        );
        let routed = mailbox("@hosted,@relay.example:user@ext.com");
        assert_eq!(routed.route, vec!["hosted", "relay.example"]);
        assert_eq!(routed.domain_name(), Some("ext.com"));
        assert_eq!(routed.routing(), vec![Routing::SourceRoute]);
    }

    #[test]
    fn double_at_is_an_error_that_looks_routed() {
        let err = Path::parse("user@ext.com@hosted").unwrap_err();
        assert!(err.looks_routed);
    }

    #[test]
    fn address_literals() {
        assert_eq!(
            mailbox("user@[127.0.0.1]").domain,
            Domain::Literal("127.0.0.1".into())
        );
        assert_eq!(
            mailbox("user@[IPv6:::1]").domain,
            Domain::Literal("IPv6:::1".into())
        );
        assert!(Path::parse("user@[1.2.3]").is_err());
    }

    #[test]
    fn quoted_local_part_keeps_quotes_for_forwarding() {
        let m = mailbox("\"john \\\"j\\\" doe\"@example.test");
        assert_eq!(m.local, "\"john \\\"j\\\" doe\"");
        assert_eq!(m.local_unquoted, "john \"j\" doe");
    }

    #[test]
    fn malformed_addresses() {
        for bad in [
            "user",
            "@",
            "user@",
            "@example.test",
            ".user@x.test",
            "us..er@x.test",
            "user@-x.test",
            "user@x..test",
            "us er@x.test",
            "\"open@x.test",
            "user@x.test>",
        ] {
            assert!(Path::parse(bad).is_err(), "{bad} should not parse");
        }
        let long = format!("{}@x.test", "a".repeat(65));
        assert!(Path::parse(&long).is_err());
    }

    #[test]
    fn utf8_addresses_parse() {
        let m = mailbox("jösé@bücher.example");
        assert_eq!(m.domain_name(), Some("bücher.example"));
    }

    #[test]
    fn path_argument_is_split_at_the_closing_bracket_outside_quotes() {
        assert_eq!(
            split_path_argument("<\"a>b\"@x.test> SIZE=10"),
            Some(("\"a>b\"@x.test", " SIZE=10"))
        );
        assert_eq!(
            split_path_argument(" <> BODY=8BITMIME"),
            Some(("", " BODY=8BITMIME"))
        );
        assert_eq!(split_path_argument("user@x.test"), None);
        assert_eq!(split_path_argument("x <user@x.test>"), None);
    }
}
