//! Rule actions over real SMTP: what the client is told, and what the backend gets
//! (or does not get).

use crate::support::*;

const UNTRUSTED: &str = "trusted_networks = [\"127.0.0.2/32\"]";

fn subject_of(data: &[u8]) -> String {
    String::from_utf8_lossy(data)
        .lines()
        .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
        .unwrap_or_default()
}

const ACTIONS: &str = r#"
[[rule]]
name = "allow-partner"
when.sender_domain = "partner.test"
action = "accept"

[[rule]]
name = "block-domain"
when.sender_domain = "blocked.test"
action = "reject"
reply = "550 5.7.1 Not from you"

[[rule]]
name = "busy-mailbox"
when.recipient = "carol@example.test"
action = "tempfail"
reply = "451 4.2.1 Mailbox busy, try later"

[[rule]]
name = "retired"
when.recipient = "bob@example.test"
action = "redirect"
to = ["alice@example.test"]

[[rule]]
name = "audit"
when.subject = "audit me"
action = "copy_to"
to = ["postmaster@example.test"]

[[rule]]
name = "tag-external"
when.subject = "tag me"
action = "tag"
add_header = { "X-External" = "yes" }
subject_prefix = "[EXT]"

[[rule]]
name = "rewrite"
when.subject = "rewrite me"
action = "rewrite"
sender = [{ from = "/^(.*)@old\\.test$/", to = "$1@new.test" }]
remove_header = ["X-Internal"]
set_header = { "X-Rewritten" = "1" }

[[rule]]
name = "drop-silently"
when.subject = "discard me"
action = "discard"

[[rule]]
name = "hold-for-review"
when.subject = "quarantine me"
action = "quarantine"

[[rule]]
name = "refuse-content"
when.body = "forbidden phrase"
action = "reject"
"#;

async fn send(
    proxy: &Proxy,
    from: &str,
    to: &[&str],
    subject: &str,
    extra_header: &str,
    body: &str,
) -> Reply {
    let mut client = proxy.client().await;
    let message = format!("From: <{from}>\r\nSubject: {subject}\r\n{extra_header}\r\n{body}\r\n");
    client.send_mail(from, to, message.as_bytes()).await
}

#[tokio::test]
async fn each_action_does_what_it_says() {
    let backend = Backend::start(DataEnd::Strict).await;
    let proxy = Proxy::start_with_rules(backend.addr, UNTRUSTED, ACTIONS).await;

    // reject at MAIL, with the rule's reply; the session goes on.
    let mut client = proxy.client().await;
    client
        .expect("MAIL FROM:<x@blocked.test>", "550 5.7.1 Not from you")
        .await;
    // tempfail at RCPT for that recipient only.
    client.expect("MAIL FROM:<x@remote.test>", "250").await;
    client
        .expect("RCPT TO:<carol@example.test>", "451 4.2.1")
        .await;
    client.expect("RCPT TO:<alice@example.test>", "250").await;
    client.expect("RSET", "250").await;
    // An earlier allow-list rule wins over the refusal.
    assert_eq!(
        send(
            &proxy,
            "x@partner.test",
            &["alice@example.test"],
            "allowed",
            "",
            "hi"
        )
        .await
        .codes(),
        "250 2.0.0"
    );
    // reject at the end of DATA, on the body.
    assert_eq!(
        send(
            &proxy,
            "x@remote.test",
            &["alice@example.test"],
            "x",
            "",
            "a forbidden phrase"
        )
        .await
        .codes(),
        "550 5.7.1"
    );

    for subject in [
        "redirect",
        "audit me",
        "tag me",
        "rewrite me",
        "discard me",
        "quarantine me",
    ] {
        let reply = send(
            &proxy,
            "dave@old.test",
            &["bob@example.test"],
            subject,
            "X-Internal: secret\r\n",
            "body",
        )
        .await;
        assert_eq!(reply.codes(), "250 2.0.0", "{subject}: {reply:?}");
    }
    backend.wait_for(5).await;
    proxy.wait_idle().await;
    let received = backend.messages();
    let by_subject = |s: &str| {
        received
            .iter()
            .find(|m| subject_of(&m.data).ends_with(s))
            .cloned()
    };
    let subjects: Vec<String> = received.iter().map(|m| subject_of(&m.data)).collect();
    assert_eq!(received.len(), 5, "{subjects:?}");

    assert_eq!(
        by_subject("allowed").unwrap().rcpt_to,
        vec!["alice@example.test"]
    );
    // redirect: bob's mail goes to alice instead.
    assert_eq!(
        by_subject("redirect").unwrap().rcpt_to,
        vec!["alice@example.test"]
    );
    // copy_to: one more recipient.
    assert_eq!(
        by_subject("audit me").unwrap().rcpt_to,
        vec!["alice@example.test", "postmaster@example.test"]
    );
    // tag: header and subject prefix, below mailmoat's Received line.
    let tagged = by_subject("tag me").unwrap();
    let (_, rest) = strip_received(&tagged.data);
    assert!(
        rest.starts_with(b"X-External: yes\r\n"),
        "{}",
        String::from_utf8_lossy(rest)
    );
    assert_eq!(subject_of(&tagged.data), "[EXT] tag me");
    // rewrite: sender and headers.
    let rewritten = by_subject("rewrite me").unwrap();
    assert_eq!(rewritten.mail_from, "<dave@new.test>");
    let text = String::from_utf8_lossy(&rewritten.data);
    assert!(
        text.contains("X-Rewritten: 1\r\n") && !text.contains("X-Internal"),
        "{text}"
    );
    // discard and quarantine: nothing at the backend; both kept in the archive,
    // with the message refused for its body, as the client sent them.
    assert!(by_subject("discard me").is_none());
    assert!(by_subject("quarantine me").is_none());
    let archived: Vec<String> = list_files(&proxy.dir.path().join("quarantine"))
        .into_iter()
        .map(|f| std::fs::read_to_string(proxy.dir.path().join("quarantine").join(f)).unwrap())
        .collect();
    assert_eq!(archived.len(), 3, "{archived:?}");
    for subject in ["discard me", "quarantine me", "Subject: x"] {
        assert!(
            archived.iter().any(|m| m.contains(subject)),
            "{subject} not archived"
        );
    }
    assert!(
        archived.iter().all(|m| m.starts_with("From: <")),
        "kept without mailmoat's Received line"
    );
    assert!(proxy.queue_files("hold").is_empty());
}

#[tokio::test]
async fn shadow_rules_change_nothing() {
    let backend = Backend::start(DataEnd::Strict).await;
    let rules = "[[rule]]\nname = \"would-block\"\nmode = \"shadow\"\nwhen.sender_domain = \"remote.test\"\naction = \"reject\"\n\
                 [[rule]]\nname = \"would-tag\"\nmode = \"shadow\"\nwhen.any = true\naction = \"tag\"\nsubject_prefix = \"[X]\"\n";
    let proxy = Proxy::start_with_rules(backend.addr, UNTRUSTED, rules).await;
    let message = sample_message("shadowed");
    let mut client = proxy.client().await;
    let reply = client
        .send_mail("a@remote.test", &["alice@example.test"], &message)
        .await;
    assert_eq!(reply.codes(), "250 2.0.0");
    let received = backend.wait_for(1).await;
    assert_eq!(strip_received(&received[0].data).1, &message[..]);
}

// ---- attachment evasions -------------------------------------------------------

const STRIP: &str = r#"
[[rule]]
name = "strip-programs"
when.attachment_extension = ["exe", "scr"]
action = "strip_attachments"

[[rule]]
name = "strip-disguised"
when.attachment_magic = "exe"
action = "strip_attachments"
"#;

/// The program every evasion carries; its marker must never reach the backend.
fn payload() -> Vec<u8> {
    let mut bytes = b"MZ\x90\x00\x03\x00\x00\x00".to_vec();
    bytes.extend_from_slice(b"EVIL-PAYLOAD-MARKER-0123456789-EVIL-PAYLOAD-MARKER");
    bytes.extend_from_slice(&[0u8; 40]);
    bytes
}

const BENIGN_PART: &str = "--B\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nHello, the files you asked for.\r\nRegards\r\n";

fn mixed(attachment_part: &str) -> String {
    format!(
        "From: <s@remote.test>\r\nSubject: files\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"B\"\r\n\r\n\
         {BENIGN_PART}--B\r\n{attachment_part}\r\n--B--\r\n"
    )
}

fn binary_part(headers: &str, bytes: &[u8]) -> String {
    format!(
        "{headers}\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
        base64(bytes)
    )
}

fn uuencode(name: &str, bytes: &[u8]) -> String {
    let enc = |v: u8| if v == 0 { '`' } else { (v + 32) as char };
    let mut out = format!("begin 644 {name}\r\n");
    for line in bytes.chunks(45) {
        out.push(enc(line.len() as u8));
        for group in line.chunks(3) {
            let b = [
                group[0],
                *group.get(1).unwrap_or(&0),
                *group.get(2).unwrap_or(&0),
            ];
            out.push(enc(b[0] >> 2));
            out.push(enc(((b[0] & 3) << 4) | (b[1] >> 4)));
            out.push(enc(((b[1] & 15) << 2) | (b[2] >> 6)));
            out.push(enc(b[2] & 63));
        }
        out.push_str("\r\n");
    }
    out.push_str("`\r\nend\r\n");
    out
}

fn evasions() -> Vec<(&'static str, String)> {
    let exe = payload();
    // A forwarded message has its own boundary, as every mail program writes it.
    let forwarded = mixed(&binary_part(
        "Content-Type: application/octet-stream; name=\"tool.exe\"",
        &exe,
    ))
    .replace("boundary=\"B\"", "boundary=\"F\"")
    .replace("--B", "--F");
    let zip = zip_of(&[("notes.txt", b"notes"), ("tool.exe", &exe)]);
    let zip_in_zip = zip_of(&[("inner.zip", &zip_of(&[("deep.scr", &exe)]))]);
    vec![
        (
            "plain",
            mixed(&binary_part(
                "Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"tool.exe\"",
                &exe,
            )),
        ),
        (
            "rfc2231 continued name",
            mixed(&binary_part(
                "Content-Type: application/octet-stream\r\nContent-Disposition: attachment;\r\n filename*0*=utf-8''to%6Fl.; filename*1=\"exe\"",
                &exe,
            )),
        ),
        (
            "rfc2047 type name",
            mixed(&binary_part(
                "Content-Type: application/octet-stream; name=\"=?utf-8?B?dG9vbC5leGU=?=\"",
                &exe,
            )),
        ),
        (
            "upper case",
            mixed(&binary_part(
                "Content-Type: application/octet-stream; name=\"TOOL.EXE\"",
                &exe,
            )),
        ),
        (
            "double extension",
            mixed(&binary_part(
                "Content-Type: application/pdf; name=\"invoice.pdf.exe\"",
                &exe,
            )),
        ),
        (
            "trailing dots and spaces",
            mixed(&binary_part(
                "Content-Type: application/octet-stream; name=\"tool.exe. . \"",
                &exe,
            )),
        ),
        (
            "lying type",
            mixed(&binary_part(
                "Content-Type: image/jpeg; name=\"photo.jpg\"",
                &exe,
            )),
        ),
        (
            "forwarded message",
            mixed(&format!("Content-Type: message/rfc822\r\n\r\n{forwarded}")),
        ),
        (
            "encoded forwarded message",
            mixed(&binary_part(
                "Content-Type: message/rfc822",
                forwarded.as_bytes(),
            )),
        ),
        (
            "alternative in mixed",
            mixed(&format!(
                "Content-Type: multipart/alternative; boundary=\"A\"\r\n\r\n--A\r\nContent-Type: text/plain\r\n\r\nplain\r\n--A\r\n{}\r\n--A--\r\n",
                binary_part(
                    "Content-Type: application/octet-stream; name=\"tool.exe\"",
                    &exe
                )
            )),
        ),
        (
            "uuencoded in text",
            mixed(&format!(
                "Content-Type: text/plain\r\n\r\nThe tool:\r\n{}",
                uuencode("tool.exe", &exe)
            )),
        ),
        (
            "zip",
            mixed(&binary_part(
                "Content-Type: application/zip; name=\"files.zip\"",
                &zip,
            )),
        ),
        (
            "zip in zip",
            mixed(&binary_part(
                "Content-Type: application/zip; name=\"files.zip\"",
                &zip_in_zip,
            )),
        ),
    ]
}

#[tokio::test]
async fn every_attachment_evasion_is_stripped_and_the_text_part_arrives_intact() {
    let backend = Backend::start(DataEnd::Strict).await;
    // An encoded forward is read differently by different readers: it arrives
    // rewritten to the one reading, stripped like the rest.
    let proxy = Proxy::start_with_rules_and(
        backend.addr,
        UNTRUSTED,
        STRIP,
        "[mime]\nambiguous = \"normalize\"\n",
    )
    .await;
    let cases = evasions();
    let exe_b64 = base64(&payload());
    let marker_b64 = &exe_b64[12..60];
    for (n, (name, message)) in cases.iter().enumerate() {
        let mut client = proxy.client().await;
        let message = message.replace("Subject: files", &format!("Subject: case {n}"));
        let reply = client
            .send_mail("s@remote.test", &["alice@example.test"], message.as_bytes())
            .await;
        assert_eq!(reply.codes(), "250 2.0.0", "{name}");
    }
    let received = backend.wait_for(cases.len()).await;
    for (n, (name, _)) in cases.iter().enumerate() {
        let message = received
            .iter()
            .find(|m| subject_of(&m.data) == format!("case {n}"))
            .unwrap_or_else(|| panic!("{name}: not delivered"));
        let text = String::from_utf8_lossy(&message.data);
        assert!(
            !text.contains("EVIL-PAYLOAD-MARKER"),
            "{name}: marker arrived:\n{text}"
        );
        assert!(
            !text.contains(marker_b64),
            "{name}: encoded payload arrived:\n{text}"
        );
        assert!(
            !text.contains("begin 644 tool.exe"),
            "{name}: uuencoded payload arrived"
        );
        assert!(
            text.contains("[mailmoat removed the attachment"),
            "{name}: no note:\n{text}"
        );
        assert!(
            text.contains(BENIGN_PART),
            "{name}: the text part changed:\n{text}"
        );
    }
}

#[tokio::test]
async fn an_evasion_can_be_rejected_instead() {
    let backend = Backend::start(DataEnd::Strict).await;
    let rules = "[[rule]]\nname = \"no-programs\"\nwhen.attachment_magic = \"exe\"\naction = \"reject\"\nreply = \"550 5.7.1 Programs are not accepted\"\n";
    let proxy = Proxy::start_with_rules_and(
        backend.addr,
        UNTRUSTED,
        rules,
        "[mime]\nambiguous = \"normalize\"\n",
    )
    .await;
    for (name, message) in evasions() {
        let mut client = proxy.client().await;
        let reply = client
            .send_mail("s@remote.test", &["alice@example.test"], message.as_bytes())
            .await;
        assert_eq!(reply.codes(), "550 5.7.1", "{name}");
    }
    proxy.wait_idle().await;
    assert!(backend.messages().is_empty());
}
