//! Accepted mail reaches the backend intact, waits out a dead backend, and failures
//! are bounced to the sender — never to the null sender.

use crate::support::*;

const UNTRUSTED_ONLY: &str = "trusted_networks = [\"127.0.0.2/32\"]";

#[tokio::test]
async fn accepted_mail_reaches_the_backend_byte_identical_below_received() {
    let backend = Backend::start(DataEnd::Strict).await;
    let proxy = Proxy::start(backend.addr, UNTRUSTED_ONLY, "").await;
    let message = sample_message("intact");
    let mut client = proxy.client().await;
    let reply = client
        .send_mail("sender@remote.test", &["alice@example.test"], &message)
        .await;
    assert_eq!(reply.codes(), "250 2.0.0", "{reply:?}");
    let id = reply
        .text
        .trim_end()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    assert!(reply.text.contains(&format!("queued as {id}")), "{reply:?}");

    let received = backend.wait_for(1).await;
    assert_eq!(received[0].mail_from, "<sender@remote.test>");
    assert_eq!(received[0].rcpt_to, vec!["alice@example.test"]);
    let (trace, rest) = strip_received(&received[0].data);
    assert_eq!(rest, &message[..], "message changed on its way");
    assert!(
        trace.starts_with("Received: from client.test ([127.0.0.1])"),
        "{trace}"
    );
    assert!(
        trace.contains(&format!("by mx.example.test with ESMTP id {id}")),
        "{trace}"
    );
    assert!(trace.contains("for <alice@example.test>"), "{trace}");

    // Delivered mail leaves the queue.
    eventually("queue empty", || proxy.queue_files("active").is_empty()).await;
    assert!(proxy.queue_files("deferred").is_empty());
}

#[tokio::test]
async fn eight_bit_and_smtputf8_parameters_are_passed_on() {
    let backend = Backend::start(DataEnd::Strict).await;
    let proxy = Proxy::start(backend.addr, UNTRUSTED_ONLY, "").await;
    let mut client = proxy.client().await;
    client
        .expect(
            "MAIL FROM:<sender@remote.test> BODY=8BITMIME SMTPUTF8",
            "250 2.1.0",
        )
        .await;
    client
        .expect("RCPT TO:<alice@example.test>", "250 2.1.5")
        .await;
    client.expect("DATA", "354").await;
    client
        .send(b"Subject: utf8\r\n\r\nh\xc3\xa9\r\n.\r\n")
        .await;
    assert_eq!(client.reply().await.codes(), "250 2.0.0");
    let received = backend.wait_for(1).await;
    assert_eq!(
        received[0].mail_from,
        "<sender@remote.test> BODY=8BITMIME SMTPUTF8"
    );
    let (trace, _) = strip_received(&received[0].data);
    assert!(trace.contains("with UTF8SMTP id"), "{trace}");
}

#[tokio::test]
async fn dead_backend_queues_mail_and_delivers_each_message_once_when_it_returns() {
    let backend_addr = unused_addr().await;
    let proxy = Proxy::start(backend_addr, UNTRUSTED_ONLY, "").await;
    let mut client = proxy.client().await;
    for n in 0..3 {
        let reply = client
            .send_mail(
                "sender@remote.test",
                &["bob@example.test"],
                &sample_message(&format!("wait{n}")),
            )
            .await;
        // The sender never sees the outage.
        assert_eq!(reply.codes(), "250 2.0.0", "{reply:?}");
    }
    eventually("three messages deferred", || {
        proxy.queue_files("deferred").len() == 6
    })
    .await;

    let backend = Backend::start_on(backend_addr, DataEnd::Strict).await;
    let received = backend.wait_for(3).await;
    // Delivered and gone from the queue: nothing is left that could come twice.
    proxy.wait_idle().await;
    eventually("queue empty", || {
        proxy.queue_files("active").is_empty() && proxy.queue_files("deferred").is_empty()
    })
    .await;
    let received_later = backend.messages();
    assert_eq!(received_later.len(), 3, "duplicates delivered");
    let mut subjects: Vec<String> = received
        .iter()
        .map(|m| {
            let text = String::from_utf8_lossy(&m.data).to_string();
            text.lines()
                .find(|l| l.starts_with("Subject: "))
                .unwrap()
                .to_string()
        })
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        vec!["Subject: wait0", "Subject: wait1", "Subject: wait2"]
    );
    eventually("queue empty", || proxy.queue_files("deferred").is_empty()).await;
}

#[tokio::test]
async fn one_refused_recipient_is_bounced_and_the_other_delivered() {
    let backend = Backend::start(DataEnd::Strict).await;
    backend.reply_to_rcpt(
        "carol@example.test",
        "550 5.1.1 <carol@example.test>: mailbox closed",
    );
    let proxy = Proxy::start(backend.addr, UNTRUSTED_ONLY, "").await;
    let mut client = proxy.client().await;
    let reply = client
        .send_mail(
            "sender@remote.test",
            &["alice@example.test", "carol@example.test"],
            &sample_message("partial"),
        )
        .await;
    assert_eq!(reply.codes(), "250 2.0.0");

    let received = backend.wait_for(2).await;
    let original = received
        .iter()
        .find(|m| m.mail_from == "<sender@remote.test>")
        .unwrap();
    assert_eq!(original.rcpt_to, vec!["alice@example.test"]);
    let bounce = received
        .iter()
        .find(|m| m.mail_from == "<>")
        .expect("a DSN");
    assert_eq!(bounce.rcpt_to, vec!["sender@remote.test"]);
    let dsn = String::from_utf8_lossy(&bounce.data);
    assert!(dsn.contains("report-type=delivery-status"), "{dsn}");
    assert!(
        dsn.contains("Final-Recipient: rfc822; carol@example.test\r\n"),
        "{dsn}"
    );
    assert!(dsn.contains("Status: 5.1.1\r\n"), "{dsn}");
    assert!(dsn.contains("mailbox closed"), "{dsn}");
    assert!(
        !dsn.contains("Final-Recipient: rfc822; alice@example.test"),
        "{dsn}"
    );
    assert!(
        dsn.contains("Subject: partial\r\n"),
        "original headers attached"
    );
    eventually("queue empty", || {
        proxy.queue_files("active").is_empty() && proxy.queue_files("deferred").is_empty()
    })
    .await;
}

#[tokio::test]
async fn no_bounce_is_ever_sent_to_the_null_sender() {
    let backend = Backend::start(DataEnd::Strict).await;
    backend.reply_to_rcpt("carol@example.test", "550 5.1.1 no such user");
    let proxy = Proxy::start(backend.addr, UNTRUSTED_ONLY, "").await;
    let mut client = proxy.client().await;
    let reply = client
        .send_mail(
            "",
            &["alice@example.test", "carol@example.test"],
            &sample_message("from-null"),
        )
        .await;
    assert_eq!(reply.codes(), "250 2.0.0");
    backend.wait_for(1).await;
    eventually("queue empty", || {
        proxy.queue_files("active").is_empty() && proxy.queue_files("deferred").is_empty()
    })
    .await;
    proxy.wait_idle().await;
    let received = backend.messages();
    assert_eq!(received.len(), 1, "a bounce was sent: {received:?}");
    assert_eq!(received[0].mail_from, "<>");
}

#[tokio::test]
async fn mail_that_cannot_be_delivered_in_time_is_bounced_via_the_relayhost() {
    // The backend is down for good; bounces to a remote sender go to the relay host.
    let relayhost = Backend::start(DataEnd::Strict).await;
    let dead_backend = unused_addr().await;
    let text = base_config(dead_backend, UNTRUSTED_ONLY, "")
        .replace(
            "max_backoff = \"2s\"",
            "max_backoff = \"2s\"\nmax_lifetime = \"2s\"",
        )
        .replace(
            "route = \"backend\"",
            &format!("route = \"relayhost\"\nrelayhost = \"{}\"", relayhost.addr),
        );
    let proxy = Proxy::start_with_text(&text).await;
    let mut client = proxy.client().await;
    let reply = client
        .send_mail(
            "sender@remote.test",
            &["alice@example.test"],
            &sample_message("expire"),
        )
        .await;
    assert_eq!(reply.codes(), "250 2.0.0");
    let received = relayhost.wait_for(1).await;
    assert_eq!(received[0].mail_from, "<>");
    assert_eq!(received[0].rcpt_to, vec!["sender@remote.test"]);
    let dsn = String::from_utf8_lossy(&received[0].data);
    assert!(dsn.contains("Status: 4.4.7\r\n"), "{dsn}");
    assert!(
        dsn.contains("Final-Recipient: rfc822; alice@example.test"),
        "{dsn}"
    );
    eventually("queue empty", || {
        proxy.queue_files("active").is_empty() && proxy.queue_files("deferred").is_empty()
    })
    .await;
}
