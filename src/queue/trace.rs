//! The trace header (RFC 5321 4.4) every message gets as it enters the queue:
//! from whom, by which protocol, with which queue id, when.

use std::net::IpAddr;

use crate::verdict::Peer;

/// How the message came in: the protocol keywords of RFC 3848 and RFC 6531.
pub struct Protocol {
    /// EHLO (not HELO) was used.
    pub esmtp: bool,
    /// SMTPUTF8 was given with MAIL.
    pub smtputf8: bool,
}

/// `Received: from HELO ([IP]) by HOSTNAME with PROTOCOL id ID [for <RCPT>]; DATE`.
/// `only` names the recipient when there is just one (RFC 5321 4.4 leaves it out
/// otherwise, so a message to many does not reveal them to each).
pub fn received(
    hostname: &str,
    peer: &Peer,
    protocol: &Protocol,
    id: &str,
    only: Option<&str>,
) -> Vec<u8> {
    // RFC 3848 / 6531: S for TLS, A for a logged-in client.
    let base = match (protocol.smtputf8, protocol.esmtp) {
        (true, _) => "UTF8SMTP",
        (false, true) => "ESMTP",
        (false, false) => "SMTP",
    };
    let with = format!(
        "{base}{}{}",
        if peer.tls { "S" } else { "" },
        if peer.login.is_some() { "A" } else { "" }
    );
    let helo = peer.helo.as_deref().unwrap_or("unknown");
    let ip = match peer.ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("IPv6:{v6}"),
    };
    let mut header =
        format!("Received: from {helo} ([{ip}])\r\n\tby {hostname} with {with} id {id}");
    if let Some(rcpt) = only {
        header.push_str(&format!("\r\n\tfor <{rcpt}>"));
    }
    header.push_str(&format!("; {}\r\n", chrono::Utc::now().to_rfc2822()));
    header.into_bytes()
}

/// What is known of a message that came in before its trace header was kept
/// (an old archive record): the protocol is not among it.
pub struct Known<'a> {
    pub helo: &'a str,
    pub client_name: Option<&'a str>,
    pub client_ip: &'a str,
    /// Unix seconds.
    pub time: u64,
    pub id: &'a str,
}

/// The client's trace header, made again from what is known.
pub fn reconstructed(hostname: &str, known: &Known<'_>) -> Vec<u8> {
    let helo = if known.helo.is_empty() {
        "unknown"
    } else {
        known.helo
    };
    let ip = match known.client_ip.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("IPv6:{v6}"),
        _ => known.client_ip.to_string(),
    };
    let name = known.client_name.map_or(String::new(), |n| format!("{n} "));
    let date = chrono::DateTime::from_timestamp(known.time as i64, 0)
        .unwrap_or_default()
        .to_rfc2822();
    format!(
        "Received: from {helo} ({name}[{ip}])\r\n\tby {hostname} id {}; {date}\r\n",
        known.id
    )
    .into_bytes()
}

/// The trace header of a message released from the archive.
pub fn released(hostname: &str, item: &str, id: &str) -> Vec<u8> {
    format!(
        "Received: by {hostname} (released from the archive, item {item}) id {id};\r\n\t{}\r\n",
        chrono::Utc::now().to_rfc2822()
    )
    .into_bytes()
}
