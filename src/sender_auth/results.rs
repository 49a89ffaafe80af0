//! Authentication-Results headers that arrive from outside: one that claims our
//! authserv-id is a forgery (RFC 8601 5) and is removed before the message goes
//! on, so no sender can hand the backend a "pass" in our name.

use std::borrow::Cow;

/// The header fields of a message: (start, end) of each, folded lines included.
fn fields(message: &[u8]) -> Vec<(usize, usize)> {
    let mut fields = Vec::new();
    let mut pos = 0;
    while pos < message.len() {
        // The blank line ends the header.
        if message[pos..].starts_with(b"\r\n") || message[pos] == b'\n' {
            break;
        }
        let start = pos;
        loop {
            match memchr::memchr(b'\n', &message[pos..]) {
                Some(lf) => pos += lf + 1,
                None => {
                    pos = message.len();
                    break;
                }
            }
            if !matches!(message.get(pos), Some(b' ') | Some(b'\t')) {
                break;
            }
        }
        fields.push((start, pos));
    }
    fields
}

/// The authserv-id an Authentication-Results field claims: the first token of
/// its value, before `;` (comments and white space around it skipped).
fn authserv_id(field: &[u8]) -> Option<String> {
    let colon = memchr::memchr(b':', field)?;
    let name = &field[..colon];
    if !name
        .trim_ascii()
        .eq_ignore_ascii_case(b"Authentication-Results")
    {
        return None;
    }
    let value = String::from_utf8_lossy(&field[colon + 1..]);
    let mut text = String::new();
    let mut depth = 0u32;
    for c in value.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth > 0 => {}
            ';' => break,
            c => text.push(c),
        }
    }
    text.split_whitespace().next().map(str::to_ascii_lowercase)
}

/// `message` without the Authentication-Results fields that claim
/// `authserv_id`; borrowed, byte for byte, when there are none.
pub fn without_forged<'a>(message: &'a [u8], authserv_id_ours: &str) -> Cow<'a, [u8]> {
    let ours = authserv_id_ours.to_ascii_lowercase();
    let forged: Vec<(usize, usize)> = fields(message)
        .into_iter()
        .filter(|&(start, end)| authserv_id(&message[start..end]).as_deref() == Some(&ours))
        .collect();
    if forged.is_empty() {
        return Cow::Borrowed(message);
    }
    let mut out = Vec::with_capacity(message.len());
    let mut pos = 0;
    for (start, end) in forged {
        out.extend_from_slice(&message[pos..start]);
        pos = end;
    }
    out.extend_from_slice(&message[pos..]);
    Cow::Owned(out)
}

/// The domain of the From header's (first) address.
pub fn from_domain(message: &[u8]) -> Option<String> {
    for (start, end) in fields(message) {
        let field = &message[start..end];
        let colon = memchr::memchr(b':', field)?;
        if !field[..colon].trim_ascii().eq_ignore_ascii_case(b"From") {
            continue;
        }
        let value = String::from_utf8_lossy(&field[colon + 1..]);
        let address = match (value.rfind('<'), value.rfind('>')) {
            (Some(open), Some(close)) if open < close => value[open + 1..close].to_string(),
            _ => value.split(',').next().unwrap_or("").trim().to_string(),
        };
        return address
            .rsplit_once('@')
            .map(|(_, domain)| domain.trim().trim_end_matches('.').to_ascii_lowercase())
            .filter(|d| !d.is_empty());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_results_claiming_our_id_are_removed_byte_exactly() {
        let message = b"Received: from x\r\n\
Authentication-Results: MX.example.test;\r\n\tdkim=pass header.d=bank.example\r\n\
Authentication-Results: other.example; spf=fail\r\n\
Authentication-Results: (forged) mx.example.test ; dmarc=pass\r\n\
authentication-results:mx.example.test;spf=pass\r\n\
Subject: Authentication-Results: mx.example.test; in the subject\r\n\
\r\n\
Authentication-Results: mx.example.test; in the body stays\r\n";
        let cleaned = without_forged(message, "mx.example.test");
        assert_eq!(
            &*cleaned,
            &b"Received: from x\r\n\
Authentication-Results: other.example; spf=fail\r\n\
Subject: Authentication-Results: mx.example.test; in the subject\r\n\
\r\n\
Authentication-Results: mx.example.test; in the body stays\r\n"[..]
        );
        let clean = b"Subject: hi\r\n\r\nbody\r\n";
        assert!(matches!(
            without_forged(clean, "mx.example.test"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn the_from_domain_is_found_in_the_usual_forms() {
        for (header, domain) in [
            ("From: Alice <alice@Example.COM>\r\n", Some("example.com")),
            ("from: bob@example.org\r\n", Some("example.org")),
            (
                "From: \"x@y\" <z@sub.example.net.>\r\n",
                Some("sub.example.net"),
            ),
            ("Subject: no from\r\n", None),
        ] {
            let message = format!("{header}\r\nbody\r\n");
            assert_eq!(
                from_domain(message.as_bytes()).as_deref(),
                domain,
                "{header}"
            );
        }
    }
}
