//! Refused mail is kept, reported to the backup mailbox with the original attached,
//! and can be released — once — by the CLI or by mail.

use std::path::Path;
use std::process::Command;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_mailmoat");
const TRUSTED_2: &str = "trusted_networks = [\"127.0.0.2/32\"]";

const RULES: &str = r#"
[[rule]]
name = "no-reject-me"
when.subject = "reject me"
action = "reject"
reply = "550 5.7.1 Refused by policy"

[[rule]]
name = "hold-me"
when.subject = "hold me"
action = "quarantine"

[[rule]]
name = "strip-programs"
when.attachment_magic = "exe"
action = "strip_attachments"
"#;

/// A proxy with RULES and an `[archive]` table of the test's choosing.
async fn proxy_with_archive(backend: &Backend, archive: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients.txt"), RECIPIENTS).unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/50-test.toml"), RULES).unwrap();
    Proxy::start_in(dir, &base_config(backend.addr, TRUSTED_2, archive)).await
}

fn cli(proxy: &Proxy, args: &[&str]) -> (bool, String) {
    // As from cron or a sudo without a login shell: no $USER.
    let output = Command::new(BIN)
        .env_remove("USER")
        .arg("--config")
        .arg(proxy.config_path())
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The message/rfc822 attachment of a report, as it arrived.
fn attached_original(report: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(report).to_string();
    let start = text
        .find("Content-Type: message/rfc822")
        .expect("an attached original");
    let body = start + text[start..].find("\r\n\r\n").unwrap() + 4;
    let end = text.rfind("--=_report_").unwrap();
    text.as_bytes()[body..end].to_vec()
}

fn message(subject: &str) -> Vec<u8> {
    let exe = base64(b"MZ\x90\x00\x03\x00\x00\x00PAYLOAD-OF-THE-PROGRAM\x00\x00\x00\x00");
    format!(
        "From: <s@remote.test>\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n\
         Hello.\r\n..a dot line\r\n--B\r\nContent-Type: application/octet-stream; name=\"tool.exe\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{exe}\r\n--B--\r\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_message_reaches_the_backup_server_byte_identical() {
    let backend = Backend::start(DataEnd::Strict).await;
    let backup = Backend::start(DataEnd::Strict).await;
    let archive = format!(
        "[archive]\nbackup_server = \"{}\"\nbackup_address = \"review@backup.test\"\n",
        backup.addr
    );
    // Only the backup server: the backup address is a remote one here, so the
    // backend copy goes to the same sink the test does not read.
    let proxy = proxy_with_archive(&backend, &archive).await;
    let sent = message("reject me");
    let mut client = proxy.client().await;
    let reply = client
        .send_mail("s@remote.test", &["alice@example.test"], &sent)
        .await;
    assert_eq!(reply.text, "550 5.7.1 Refused by policy\r\n");

    let reports = backup.wait_for(1).await;
    assert_eq!(reports[0].mail_from, "<>");
    assert_eq!(reports[0].rcpt_to, vec!["review@backup.test"]);
    let text = String::from_utf8_lossy(&reports[0].data);
    assert!(text.contains("Rule/check:  rule:no-reject-me"), "{text}");
    assert!(
        text.contains("Reply sent:  550 5.7.1 Refused by policy"),
        "{text}"
    );
    assert!(text.contains("Recipients:  alice@example.test"), "{text}");
    assert!(text.contains("mailmoat quarantine release "), "{text}");
    // The original, exactly as the client sent it (dots unstuffed), .exe included.
    assert_eq!(attached_original(&reports[0].data), sent);
    // The refused message itself went nowhere.
    proxy.wait_idle().await;
    assert!(
        backend.messages().iter().all(|m| m.mail_from == "<>"),
        "only reports at the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_address_on_a_hosted_domain_gets_the_program_untouched_and_one_report() {
    let backend = Backend::start(DataEnd::Strict).await;
    let proxy = proxy_with_archive(
        &backend,
        "[archive]\nbackup_address = \"quarantine@example.test\"\n",
    )
    .await;
    let sent = message("reject me");
    let mut client = proxy.client().await;
    assert_eq!(
        client
            .send_mail("s@remote.test", &["alice@example.test"], &sent)
            .await
            .codes(),
        "550 5.7.1"
    );
    let received = backend.wait_for(1).await;
    proxy.wait_idle().await;
    assert_eq!(backend.messages().len(), 1, "exactly one report");
    assert_eq!(received[0].rcpt_to, vec!["quarantine@example.test"]);
    let (_, report) = strip_received_if_any(&received[0].data);
    assert_eq!(
        attached_original(report),
        sent,
        "the program is still in the report"
    );
    assert!(!String::from_utf8_lossy(report).contains("mailmoat removed"));
    let (ok, list) = cli(&proxy, &["quarantine", "list"]);
    assert!(ok, "{list}");
    assert!(
        list.contains("-- 1 item(s)"),
        "the report was not archived itself: {list}"
    );
}

/// Reports are queued directly: they have no Received line of their own.
fn strip_received_if_any(data: &[u8]) -> (&str, &[u8]) {
    if data.starts_with(b"Received: ") {
        strip_received(data)
    } else {
        ("", data)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_delivers_the_original_once_and_rcpt_limits_it() {
    let backend = Backend::start(DataEnd::Strict).await;
    let proxy = proxy_with_archive(&backend, "").await;
    let sent = b"From: <s@remote.test>\r\nSubject: hold me\r\n\r\nPlease review.\r\n".to_vec();
    let mut client = proxy.client().await;
    let reply = client
        .send_mail(
            "s@remote.test",
            &["alice@example.test", "bob@example.test"],
            &sent,
        )
        .await;
    assert_eq!(reply.codes(), "250 2.0.0", "quarantine looks accepted");
    let id = reply
        .text
        .trim_end()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();

    let (ok, list) = cli(
        &proxy,
        &["quarantine", "list", "--rule", "hold-me", "--since", "1h"],
    );
    assert!(
        ok && list.contains(&id) && list.contains("quarantine"),
        "{list}"
    );
    let (ok, show) = cli(&proxy, &["quarantine", "show", &id]);
    assert!(
        ok && show.contains("Subject: hold me")
            && show.contains("[decided_by]\nrule = \"hold-me\"")
            && show.contains("outcome = \"quarantined\""),
        "{show}"
    );
    let record: toml::Table = toml::from_str(show.split("# headers").next().unwrap()).unwrap();
    assert!(
        record["time"].as_datetime().is_some(),
        "the time is a local datetime: {show}"
    );

    let (ok, out) = cli(
        &proxy,
        &["quarantine", "release", &id, "--rcpt", "bob@example.test"],
    );
    assert!(ok, "{out}");
    let received = backend.wait_for(1).await;
    assert_eq!(received[0].rcpt_to, vec!["bob@example.test"]);
    let (trace, rest) = strip_received(&received[0].data);
    assert!(trace.contains("released from the archive"), "{trace}");
    // The client's own trace line, as it was written when the message came in.
    let (client_trace, original) = strip_received(rest);
    assert!(
        client_trace.starts_with("Received: from ")
            && client_trace.contains("([127.0.0.1])")
            && client_trace.contains(&format!(" with ESMTP id {id};")),
        "{client_trace}"
    );
    assert_eq!(original, &sent[..]);

    // Releasing bob's copy again delivers nothing; releasing the item now goes
    // to those it was not released to (alice), once.
    let (ok, again) = cli(
        &proxy,
        &["quarantine", "release", &id, "--rcpt", "bob@example.test"],
    );
    assert!(!ok && again.contains("already released"), "{again}");
    let (ok, rest) = cli(&proxy, &["quarantine", "release", &id]);
    assert!(ok, "{rest}");
    let received = backend.wait_for(2).await;
    assert_eq!(received[1].rcpt_to, vec!["alice@example.test"]);
    let (ok, again) = cli(&proxy, &["quarantine", "release", &id]);
    assert!(!ok, "{again}");
    assert!(
        again.contains("already released")
            && again.contains(&format!(
                "by admin ({})",
                mailmoat::control::user_name(unsafe { libc::getuid() })
            )),
        "{again}"
    );
    let (ok, wrong) = cli(
        &proxy,
        &["quarantine", "release", "0000", "--rcpt", "x@example.test"],
    );
    assert!(!ok && wrong.contains("no such item"), "{wrong}");
    proxy.wait_idle().await;
    assert_eq!(backend.messages().len(), 2, "nobody got it twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_by_mail_needs_a_trusted_client_and_the_right_signature() {
    let backend = Backend::start(DataEnd::Strict).await;
    let proxy = proxy_with_archive(
        &backend,
        "[archive]\nrelease_key = \"a-long-enough-test-secret\"\n",
    )
    .await;
    let sent = b"From: <s@remote.test>\r\nSubject: hold me\r\n\r\nRelease me by mail.\r\n".to_vec();
    let mut client = proxy.client().await;
    let reply = client
        .send_mail("s@remote.test", &["alice@example.test"], &sent)
        .await;
    let id = reply
        .text
        .trim_end()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let (_, show) = cli(&proxy, &["quarantine", "show", &id]);
    let address = show
        .lines()
        .find_map(|l| l.strip_prefix("release_address = \""))
        .map(|a| a.trim_end_matches('"').to_string())
        .expect("a release address");
    assert!(
        address.starts_with(&format!("release+{id}.")) && address.ends_with("@mx.example.test")
    );

    // Untrusted client: refused.
    let mut untrusted = proxy.client().await;
    untrusted.expect("MAIL FROM:<s@remote.test>", "250").await;
    untrusted
        .expect(&format!("RCPT TO:<{address}>"), "550 5.7.1")
        .await;
    // Trusted client, wrong signature: refused.
    let mut trusted = Client::connect_from("127.0.0.2".parse().unwrap(), proxy.addr).await;
    trusted.hello().await;
    trusted
        .expect("MAIL FROM:<reviewer@example.test>", "250")
        .await;
    let forged = format!("release+{id}.{}@mx.example.test", "0".repeat(20));
    trusted
        .expect(&format!("RCPT TO:<{forged}>"), "550 5.7.1")
        .await;
    // Trusted client, right signature: released.
    trusted.expect(&format!("RCPT TO:<{address}>"), "250").await;
    trusted.expect("DATA", "354").await;
    trusted.send(b"Subject: release\r\n\r\nok\r\n.\r\n").await;
    let done = trusted.reply().await;
    assert!(
        done.text.starts_with(&format!("250 2.0.0 Released {id}")),
        "{done:?}"
    );
    let received = backend.wait_for(1).await;
    let (_, with_client_trace) = strip_received(&received[0].data);
    assert_eq!(strip_received(with_client_trace).1, &sent[..]);
    // Twice: refused, nothing more delivered.
    trusted
        .expect("MAIL FROM:<reviewer@example.test>", "250")
        .await;
    trusted.expect(&format!("RCPT TO:<{address}>"), "250").await;
    trusted.expect("DATA", "354").await;
    trusted.send(b"Subject: release\r\n\r\nok\r\n.\r\n").await;
    assert_eq!(trusted.reply().await.codes(), "550 5.7.1");
    proxy.wait_idle().await;
    assert_eq!(backend.messages().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_that_cannot_be_written_turns_the_refusal_into_a_4xx() {
    let backend = Backend::start(DataEnd::Strict).await;
    let proxy = proxy_with_archive(&backend, "").await;
    // Not a folder any more: nothing can be written in it (root ignores modes).
    let folder = proxy.dir.path().join("quarantine");
    std::fs::remove_dir_all(&folder).unwrap();
    std::fs::write(&folder, b"not a folder").unwrap();
    let mut client = proxy.client().await;
    let reply = client
        .send_mail(
            "s@remote.test",
            &["alice@example.test"],
            &message("reject me"),
        )
        .await;
    assert_eq!(reply.codes(), "451 4.3.0", "{reply:?}");
    let held = client
        .send_mail(
            "s@remote.test",
            &["alice@example.test"],
            b"Subject: hold me\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(held.codes(), "451 4.3.0", "{held:?}");
    proxy.wait_idle().await;
    assert!(backend.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialogue_refusals_are_listed_as_records() {
    let backend = Backend::start(DataEnd::Strict).await;
    let proxy = proxy_with_archive(&backend, "").await;
    let mut client = proxy.client().await;
    client.expect("MAIL FROM:<s@remote.test>", "250").await;
    client
        .expect("RCPT TO:<nobody@example.test>", "550 5.1.1")
        .await;
    client
        .expect("RCPT TO:<user@elsewhere.test>", "550 5.7.1")
        .await;
    let (ok, list) = cli(&proxy, &["quarantine", "list", "--sender", "s@remote"]);
    assert!(ok, "{list}");
    assert!(
        list.contains("recipients") && list.contains("nobody@example.test"),
        "{list}"
    );
    assert!(
        list.contains("relay") && list.contains("user@elsewhere.test"),
        "{list}"
    );
    assert!(!list.contains("[message kept]"), "{list}");
    // The columns line up whatever the outcome and check names: every row's
    // sender starts where the header's "Sender" does.
    let rows: Vec<&str> = list.lines().filter(|l| !l.starts_with("--")).collect();
    let column = rows[0].find("Sender").unwrap();
    for row in &rows[1..] {
        assert_eq!(row.find("s@remote.test"), Some(column), "{list}");
    }
    let (ok, none) = cli(&proxy, &["quarantine", "list", "--rule", "no-such-rule"]);
    assert!(ok && none.contains("holds nothing"), "{none}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_lists_every_refusal_of_its_interval_in_one_report() {
    let backend = Backend::start(DataEnd::Strict).await;
    let backup = Backend::start(DataEnd::Strict).await;
    let archive = format!(
        "[archive]\nbackup_server = \"{}\"\ndigest_interval = \"3s\"\n",
        backup.addr
    );
    let proxy = proxy_with_archive(&backend, &archive).await;
    let mut client = proxy.client().await;
    for subject in ["reject me 1", "reject me 2"] {
        let message = format!("Subject: {subject}\r\n\r\nx\r\n");
        assert_eq!(
            client
                .send_mail("s@remote.test", &["alice@example.test"], message.as_bytes())
                .await
                .codes(),
            "550 5.7.1"
        );
    }
    client.expect("MAIL FROM:<s@remote.test>", "250").await;
    client
        .expect("RCPT TO:<nobody@example.test>", "550 5.1.1")
        .await;
    let reports = backup.wait_for(1).await;
    proxy.wait_idle().await;
    assert_eq!(
        backup.messages().len(),
        1,
        "one digest, not one report each"
    );
    let text = String::from_utf8_lossy(&reports[0].data);
    assert!(
        text.contains("Subject: [mailmoat] 3 refused message(s)"),
        "{text}"
    );
    assert_eq!(
        text.matches("Rule/check:  rule:no-reject-me").count(),
        2,
        "{text}"
    );
    assert!(text.contains("Rule/check:  recipients"), "{text}");
    assert_eq!(reports[0].rcpt_to, vec!["quarantine@mx.example.test"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_is_judged_with_the_configured_zip_limits() {
    let backend = Backend::start(DataEnd::Strict).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients.txt"), RECIPIENTS).unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("rules/50-test.toml"),
        "[[rule]]\nname = \"hold-me\"\nwhen.subject = \"hold me\"\naction = \"quarantine\"\n\n\
         [[rule]]\nname = \"no-programs\"\nwhen.attachment_magic = \"exe\"\naction = \"reject\"\n",
    )
    .unwrap();
    // A program four archives down is seen (container_depth = 5 opens five).
    let text = base_config(backend.addr, TRUSTED_2, "[rules]\ncontainer_depth = 5\n");
    let proxy = Proxy::start_in(dir, &text).await;
    let program: &[u8] = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xffPROGRAM";
    let mut nested = zip_of(&[("payload.exe", program)]);
    for level in [4, 3, 2] {
        nested = zip_of(&[(format!("level{level}.zip").as_str(), &nested)]);
    }
    let message = format!(
        "From: <s@remote.test>\r\nSubject: hold me\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n\
         See the archive.\r\n--B\r\nContent-Type: application/zip; name=\"outer.zip\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--B--\r\n",
        base64(&nested)
    );
    let mut client = proxy.client().await;
    let reply = client
        .send_mail("s@remote.test", &["alice@example.test"], message.as_bytes())
        .await;
    assert_eq!(reply.codes(), "250 2.0.0");
    let id = reply
        .text
        .trim_end()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let (ok, out) = cli(&proxy, &["quarantine", "release", &id]);
    assert!(!ok, "released although a rule catches it: {out}");
    assert!(out.contains("rule no-programs catches it as well"), "{out}");
    proxy.wait_idle().await;
    assert!(backend.messages().is_empty());
}

/// A release is judged like new mail: every DATA step but the one that held the
/// message runs — the virus scan, the unscannable check, the MIME structure —
/// and an accepted release is signed, queued and counted as new mail is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_is_judged_by_every_step_but_the_one_that_held_it() {
    use crate::scanning::{Clamd, MARKER, with_attachment};
    let clamd = Clamd::start().await;
    let backend = Backend::start(DataEnd::Strict).await;
    let metrics = unused_addr().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients.txt"), RECIPIENTS).unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("rules/50-test.toml"),
        "[[rule]]\nname = \"hold-me\"\nwhen.subject = \"hold me\"\naction = \"reject\"\n",
    )
    .unwrap();
    let key = dir.path().join("dkim.pem");
    let made = crate::cli::mailmoat(
        Path::new("/nonexistent.toml"),
        &[
            "dkim",
            "keygen",
            "--domain",
            "example.test",
            "--selector",
            "out",
            "--out",
            key.to_str().unwrap(),
        ],
    );
    assert!(made.status.success(), "{made:?}");
    let config = |ambiguous: &str| {
        base_config(
            backend.addr,
            TRUSTED_2,
            &format!(
                "[antivirus]\nclamd = \"{}\"\ntimeout = \"5s\"\n[mime]\nunscannable = \"reject\"\n\
                 ambiguous = \"{ambiguous}\"\n[metrics]\nlisten = \"{metrics}\"\n\
                 [[dkim_sign]]\ndomain = \"example.test\"\nselector = \"out\"\nkey_file = \"{}\"\n",
                clamd.addr,
                key.display()
            ),
        )
    };
    let text = config("reject");
    // Held by the rule under an older policy that normalized ambiguous mail: in
    // the archive before this server starts.
    let ambiguous = b"From: a@example.test\r\nTo: alice@example.test\r\nSubject: hold me\r\n\
        MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"a\"\r\n\
        Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--a\r\nContent-Type: text/plain\r\n\r\n\
        one\r\n--b\r\nContent-Type: text/plain\r\n\r\ntwo\r\n--a--\r\n"
        .to_vec();
    let ambiguous_id = "0AMBIGUOUS".to_string();
    {
        std::fs::write(dir.path().join("mailmoat.toml"), &text).unwrap();
        let loaded = mailmoat::config::Config::load(&dir.path().join("mailmoat.toml")).unwrap();
        let store = mailmoat::store::Store::open(&loaded.store.path).unwrap();
        let archive =
            mailmoat::archive::Archive::open(&loaded.archive, &store, "mx.example.test", false)
                .unwrap();
        let peer = mailmoat::verdict::Peer {
            helo: Some("client.test".into()),
            trusted: true,
            may_relay: true,
            ..mailmoat::verdict::Peer::unjudged("127.0.0.2".parse().unwrap())
        };
        let recipients = ["alice@example.test".to_string()];
        let reply = mailmoat::reply::Reply::new(550, "5.7.1", "Message refused by policy");
        let by = mailmoat::verdict::DecidedBy::Rule("hold-me".into());
        let event = mailmoat::verdict::Event {
            id: &ambiguous_id,
            stage: mailmoat::verdict::Stage::Data,
            peer: &peer,
            sender: "a@example.test",
            recipients: &recipients,
            size: ambiguous.len(),
            outcome: mailmoat::verdict::Outcome::Rejected,
            decided_by: Some(&by),
            reason: "refused by rule",
            reply: &reply,
            rules: "hold-me",
        };
        let record = mailmoat::archive::Record::of(
            &event,
            ambiguous_id.clone(),
            by.clone(),
            Some(&ambiguous),
            None,
        );
        archive.keep(&record, Some(&ambiguous)).unwrap();
    }
    let proxy = Proxy::start_in(dir, &text).await;
    let mut client = Client::connect_from("127.0.0.2".parse().unwrap(), proxy.addr).await;
    client.hello().await;
    let infected = with_attachment(
        "hold me",
        "notes.txt",
        "text/plain",
        format!("x {MARKER} y").as_bytes(),
    );
    let locked = with_attachment(
        "hold me",
        "files.zip",
        "application/zip",
        &crate::mime::encrypted_zip(&[("invoice.pdf", b"%PDF-1.4")]),
    );
    let plain = b"From: alice@example.test\r\nTo: alice@example.test\r\nSubject: hold me\r\n\r\nOur news.\r\n".to_vec();
    let mut ids = Vec::new();
    for (n, message) in [&infected, &locked, &plain].into_iter().enumerate() {
        // Signed only when it is what it says: alice writes from our own network.
        let sender = if n == 2 {
            "alice@example.test".to_string()
        } else {
            format!("s{n}@example.test")
        };
        let reply = client
            .send_mail(&sender, &["alice@example.test"], message)
            .await;
        assert_eq!(
            reply.codes(),
            "550 5.7.1",
            "the rule decides first: {reply:?}"
        );
        let list = archive_list(&proxy, Some(&sender)).await;
        let line = list
            .lines()
            .find(|l| l.contains(&format!("{sender} ->")))
            .unwrap_or_else(|| panic!("{list}"));
        ids.push(line.split_whitespace().next().unwrap().to_string());
    }
    for (id, step) in [
        (&ids[0], "check antivirus"),
        (&ids[1], "check mime.unscannable"),
        (&ambiguous_id, "check mime.ambiguous"),
    ] {
        let (ok, out) = cli(&proxy, &["quarantine", "release", id]);
        assert!(!ok, "{step}: released: {out}");
        assert!(
            out.contains(&format!("not released: {step} catches it as well")),
            "{step}: {out}"
        );
    }
    let before = crate::metrics::scrape(metrics).await;
    let queued = |text: &str| {
        crate::metrics::value(text, "mailmoat_messages_total{outcome=\"queued\"}").unwrap_or(0.0)
    };
    let (ok, out) = cli(&proxy, &["quarantine", "release", &ids[2]]);
    assert!(ok, "{out}");
    let got = backend.wait_for(1).await;
    proxy.wait_idle().await;
    assert_eq!(
        backend.messages().len(),
        1,
        "only the message the rule alone held"
    );
    let text = String::from_utf8_lossy(&got[0].data);
    assert!(text.contains("Our news."), "{text}");
    assert!(
        text.contains("DKIM-Signature: ")
            && text.contains("d=example.test")
            && text.contains("s=out"),
        "signed as new mail from a trusted client is:\n{text}"
    );
    let after = crate::metrics::scrape(metrics).await;
    assert_eq!(queued(&after), queued(&before) + 1.0, "{after}");
}
