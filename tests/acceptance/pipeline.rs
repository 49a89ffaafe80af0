//! The judging pipeline's records: what a refusal is logged as and what the
//! archive keeps of it are read from one decision, so they say the same thing —
//! above all for the temporary refusals (451, 450) that a client retries.

use crate::support::*;

/// 127.0.0.1 is untrusted here.
const UNTRUSTED: &str = "trusted_networks = [\"127.0.0.9/32\"]";

/// The log line of the refusal of `sender`, and the archive's line about it.
async fn logged_and_archived(proxy: &Proxy, sender: &str) -> (serde_json::Value, String) {
    let line = wait_for_logged(sender, |v| v["sender"] == sender && v["result"] != "queued").await;
    let archived = archive_list(proxy, Some(sender)).await;
    (line, archived)
}

fn assert_tempfailed_by(line: &serde_json::Value, archived: &str, check: &str, reply: &str) {
    assert_eq!(line["result"], "tempfailed", "{line}");
    assert_eq!(line["check"], check, "{line}");
    assert!(line["reply"].as_str().unwrap().starts_with(reply), "{line}");
    let item = archived
        .lines()
        .find(|l| l.contains(check))
        .unwrap_or_else(|| panic!("no archive item by {check}: {archived}"));
    assert!(item.contains(" tempfailed "), "{item}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_bomb_451_is_logged_and_archived_as_tempfailed_by_its_limit() {
    capture_logs();
    let backend = Backend::start(DataEnd::Strict).await;
    let proxy = Proxy::start(
        backend.addr,
        UNTRUSTED,
        "[mailbomb]\nmessages_per_sender_per_hour = 1\n",
    )
    .await;
    let sender = "bomber@pipeline-limit.test";
    let mut client = proxy.client().await;
    client.expect(&format!("MAIL FROM:<{sender}>"), "250").await;
    client.expect("RSET", "250").await;
    client
        .expect(&format!("MAIL FROM:<{sender}>"), "451 4.7.1")
        .await;
    let (line, archived) = logged_and_archived(&proxy, sender).await;
    assert_tempfailed_by(&line, &archived, "mailbomb.sender", "451 4.7.1");
    assert_eq!(line["stage"], "MAIL", "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_domain_450_is_logged_and_archived_as_tempfailed_by_its_check() {
    capture_logs();
    let backend = Backend::start(DataEnd::Strict).await;
    let dns = DnsServer::start().await;
    dns.servfail("dns-down.test");
    let text = dns
        .serving(&base_config(backend.addr, UNTRUSTED, ""))
        .replace(
            "sender_domain_exists = false",
            "sender_domain_exists = true",
        );
    let proxy = Proxy::start_with_text(&text).await;
    let sender = "someone@dns-down.test";
    let mut client = proxy.client().await;
    client
        .expect(&format!("MAIL FROM:<{sender}>"), "450 4.1.8")
        .await;
    let (line, archived) = logged_and_archived(&proxy, sender).await;
    assert_tempfailed_by(&line, &archived, "sender_domain", "450 4.1.8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_callout_451_is_logged_and_archived_as_tempfailed_by_its_check() {
    capture_logs();
    let nobody = unused_addr().await;
    let text = base_config(nobody, UNTRUSTED, "").replace(
        "[recipients.domains.\"example.test\"]\nfile = \"recipients.txt\"",
        "[recipients.domains.\"example.test\"]\ncallout = true\n[recipients]\ncallout_timeout = \"2s\"",
    );
    let proxy = Proxy::start_with_text(&text).await;
    let sender = "writer@pipeline-callout.test";
    let mut client = proxy.client().await;
    client.expect(&format!("MAIL FROM:<{sender}>"), "250").await;
    client
        .expect("RCPT TO:<alice@example.test>", "451 4.4.3")
        .await;
    let (line, archived) = logged_and_archived(&proxy, sender).await;
    assert_tempfailed_by(&line, &archived, "recipients.callout", "451 4.4.3");
    assert_eq!(line["recipients"], "alice@example.test", "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_that_fails_is_logged_as_the_451_the_client_gets() {
    capture_logs();
    let backend = Backend::start(DataEnd::Strict).await;
    let proxy = Proxy::start_with_rules(
        backend.addr,
        UNTRUSTED,
        "[[rule]]\nname = \"hold\"\nwhen.subject = \"hold me\"\naction = \"quarantine\"\n",
    )
    .await;
    let folder = proxy.dir.path().join("quarantine");
    std::fs::remove_dir_all(&folder).unwrap();
    std::fs::write(&folder, b"not a folder").unwrap();
    let sender = "held@pipeline-archive.test";
    let mut client = proxy.client().await;
    let reply = client
        .send_mail(
            sender,
            &["alice@example.test"],
            b"Subject: hold me\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(reply.codes(), "451 4.3.0");
    let line = wait_for_logged(sender, |v| v["sender"] == sender).await;
    assert_eq!(line["result"], "tempfailed", "{line}");
    assert_eq!(line["check"], "archive", "{line}");
    assert!(
        line["reason"].as_str().unwrap().contains("rule:hold"),
        "{line}"
    );
}
