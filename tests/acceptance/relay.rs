//! Never an open relay: foreign recipients and every routing trick are refused to
//! clients that may not relay, judged by where the mail would really go.

use crate::support::*;

/// 127.0.0.1 is untrusted; 127.0.0.0/29 is trusted except 127.0.0.3, never-relay.
const RELAY: &str =
    "trusted_networks = [\"127.0.0.0/29\"]\nnever_relay_networks = [\"127.0.0.3\"]\n";
const RELAY_UNTRUSTED_LOOPBACK: &str =
    "trusted_networks = [\"127.0.0.2/31\"]\nnever_relay_networks = [\"127.0.0.3\"]\n";

const TRICKS: &[&str] = &[
    "user@remote.test",
    "USER@REMOTE.TEST",
    "user@remote.test.",
    "user%remote.test@example.test",
    "USER%REMOTE.TEST@EXAMPLE.TEST",
    "\"user@remote.test\"@example.test",
    "\"user%remote.test\"@example.test",
    "@example.test:user@remote.test",
    "@remote.test:alice@example.test",
    "@example.test,@remote.test:alice@example.test",
    "user@remote.test@example.test",
    "remote.test!user@example.test",
    "user@[127.0.0.1]",
    "user@[IPv6:::1]",
    "user@example.test.remote.test",
    "user@notexample.test",
];

#[tokio::test]
async fn untrusted_client_gets_550_5_7_1_for_every_route_trick_and_nothing_reaches_the_backend() {
    let backend = Backend::start(DataEnd::Strict).await;
    let proxy = Proxy::start(backend.addr, RELAY_UNTRUSTED_LOOPBACK, "").await;
    let mut client = proxy.client().await;
    client.expect("MAIL FROM:<sender@remote.test>", "250").await;
    for trick in TRICKS {
        let reply = client.command(&format!("RCPT TO:<{trick}>")).await;
        assert_eq!(reply.codes(), "550 5.7.1", "{trick}: {reply:?}");
        assert!(reply.text.contains("Relaying denied"), "{reply:?}");
    }
    // The session goes on; a real recipient in the same transaction is the only one
    // the backend hears of.
    client
        .expect("RCPT TO:<alice@example.test>", "250 2.1.5")
        .await;
    client.expect("DATA", "354").await;
    client.send(b"Subject: tricks\r\n\r\nbody\r\n.\r\n").await;
    assert_eq!(client.reply().await.codes(), "250 2.0.0");
    let received = backend.wait_for(1).await;
    proxy.wait_idle().await;
    assert_eq!(backend.messages().len(), 1);
    assert_eq!(received[0].rcpt_to, vec!["alice@example.test"]);
    let probes: Vec<String> = backend
        .commands()
        .into_iter()
        .filter(|c| c.to_ascii_uppercase().starts_with("RCPT"))
        .collect();
    assert_eq!(probes, vec!["RCPT TO:<alice@example.test>"]);
}

#[tokio::test]
async fn hosted_recipients_in_any_case_or_with_a_trailing_dot_are_accepted() {
    let backend = Backend::start(DataEnd::Strict).await;
    let proxy = Proxy::start(backend.addr, RELAY_UNTRUSTED_LOOPBACK, "").await;
    let mut client = proxy.client().await;
    client.expect("MAIL FROM:<>", "250").await;
    client
        .expect("RCPT TO:<Alice@EXAMPLE.TEST.>", "250 2.1.5")
        .await;
    client.expect("RCPT TO:<postmaster>", "250 2.1.5").await;
    client.expect("DATA", "354").await;
    client.send(b"Subject: case\r\n\r\nbody\r\n.\r\n").await;
    assert_eq!(client.reply().await.codes(), "250 2.0.0");
    let received = backend.wait_for(1).await;
    assert_eq!(received[0].mail_from, "<>");
    assert_eq!(
        received[0].rcpt_to,
        vec!["alice@example.test", "postmaster@example.test"]
    );
}

#[tokio::test]
async fn trusted_client_may_relay_but_never_relay_beats_trusted() {
    let backend = Backend::start(DataEnd::Strict).await;
    let proxy = Proxy::start(backend.addr, RELAY, "").await;

    let mut trusted = Client::connect_from("127.0.0.2".parse().unwrap(), proxy.addr).await;
    trusted.hello().await;
    let reply = trusted
        .send_mail(
            "alice@example.test",
            &["friend@remote.test"],
            b"Subject: out\r\n\r\nhi\r\n",
        )
        .await;
    assert_eq!(reply.codes(), "250 2.0.0");
    let received = backend.wait_for(1).await;
    assert_eq!(received[0].rcpt_to, vec!["friend@remote.test"]);

    let mut never = Client::connect_from("127.0.0.3".parse().unwrap(), proxy.addr).await;
    never.hello().await;
    never.expect("MAIL FROM:<alice@example.test>", "250").await;
    never
        .expect("RCPT TO:<friend@remote.test>", "550 5.7.1")
        .await;
    never
        .expect("RCPT TO:<user%remote.test@example.test>", "550 5.7.1")
        .await;
    // Inbound mail from that host is still fine.
    never
        .expect("RCPT TO:<bob@example.test>", "250 2.1.5")
        .await;
}
