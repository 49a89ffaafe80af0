//! Delivery status notifications (RFC 3464): the bounce a sender gets for recipients
//! that failed permanently or expired. Only for mail that was accepted; never to the
//! null sender (the caller checks).

use super::envelope::Envelope;

/// One recipient that could not be delivered.
#[derive(Debug, Clone)]
pub struct Failure {
    pub recipient: String,
    /// RFC 3463 status, e.g. "5.1.1".
    pub status: String,
    /// What the remote server said, or why it was given up.
    pub diagnostic: String,
    /// The server that refused it, if one did.
    pub remote: Option<String>,
}

/// Builds the complete DSN message (headers and body, CRLF line ends).
pub fn build(hostname: &str, original: &Envelope, message: &[u8], failures: &[Failure]) -> Vec<u8> {
    let boundary = format!("{}.{}/{}", original.id, failures.len(), hostname);
    let date = chrono::Utc::now().to_rfc2822();
    let arrival = chrono::DateTime::from_timestamp(original.arrived as i64, 0)
        .unwrap_or_default()
        .to_rfc2822();
    let mut out = String::new();
    let mut line = |text: &str| {
        out.push_str(text);
        out.push_str("\r\n");
    };
    line(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>"
    ));
    line(&format!("To: <{}>", original.sender));
    line("Subject: Undelivered Mail Returned to Sender");
    line(&format!("Date: {date}"));
    line(&format!("Message-ID: <{}.dsn@{hostname}>", original.id));
    line("Auto-Submitted: auto-replied");
    line("MIME-Version: 1.0");
    line(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\""
    ));
    line("Content-Transfer-Encoding: 7bit");
    line("");
    line("This is a MIME-encapsulated message.");
    line("");
    line(&format!("--{boundary}"));
    line("Content-Description: Notification");
    line("Content-Type: text/plain; charset=utf-8");
    line("");
    line(&format!("This is the mail system at host {hostname}."));
    line("");
    line("Your message could not be delivered to one or more recipients.");
    line("It is attached below.");
    line("");
    for failure in failures {
        line(&format!("<{}>: {}", failure.recipient, failure.diagnostic));
    }
    line("");
    line(&format!("--{boundary}"));
    line("Content-Description: Delivery report");
    line("Content-Type: message/delivery-status");
    line("");
    line(&format!("Reporting-MTA: dns; {hostname}"));
    line(&format!("X-Queue-ID: {}", original.id));
    line(&format!("Arrival-Date: {arrival}"));
    for failure in failures {
        line("");
        line(&format!("Final-Recipient: rfc822; {}", failure.recipient));
        line("Action: failed");
        line(&format!("Status: {}", failure.status));
        if let Some(remote) = &failure.remote {
            line(&format!("Remote-MTA: dns; {remote}"));
        }
        line(&format!("Diagnostic-Code: smtp; {}", failure.diagnostic));
    }
    line("");
    line(&format!("--{boundary}"));
    line("Content-Description: Undelivered Message Headers");
    line("Content-Type: text/rfc822-headers");
    line("");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(header_block(message));
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    bytes
}

/// The header section of a message, up to and including its last header line.
fn header_block(message: &[u8]) -> &[u8] {
    match memchr::memmem::find(message, b"\r\n\r\n") {
        Some(end) => &message[..end + 2],
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::envelope::Envelope;

    #[test]
    fn report_names_the_failed_recipient_and_carries_the_headers_only() {
        let env = Envelope {
            id: "0ABC".into(),
            arrived: 0,
            sender: "alice@example.org".into(),
            client_ip: "192.0.2.1".into(),
            helo: "h".into(),
            eight_bit: false,
            smtputf8: false,
            size: 0,
            message_crc32: String::new(),
            next_hop: None,
            attempts: 0,
            next_attempt: 0,
            recipients: vec![],
        };
        let dsn = build(
            "mx.example.test",
            &env,
            b"Subject: hi\r\nFrom: a\r\n\r\nsecret body\r\n",
            &[Failure {
                recipient: "bob@example.test".into(),
                status: "5.1.1".into(),
                diagnostic: "550 5.1.1 no such user".into(),
                remote: Some("127.0.0.1:2526".into()),
            }],
        );
        let text = String::from_utf8(dsn).unwrap();
        assert!(text.contains("Final-Recipient: rfc822; bob@example.test\r\n"));
        assert!(text.contains("Status: 5.1.1\r\n"));
        assert!(text.contains("Subject: hi\r\nFrom: a\r\n"));
        assert!(!text.contains("secret body"));
        assert!(text.contains("report-type=delivery-status"));
    }
}
