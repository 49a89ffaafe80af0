//! The SMTP dialogue: pipelining, strict DATA framing against smuggling, limits, and
//! clear answers to bad commands with the session going on.

use crate::support::*;

const UNTRUSTED: &str = "trusted_networks = [\"127.0.0.2/32\"]";

#[tokio::test]
async fn greeting_and_ehlo_announce_the_extensions_and_no_version() {
    let backend = Backend::start(DataEnd::Strict).await;
    let proxy = Proxy::start(backend.addr, UNTRUSTED, "").await;
    let mut client = Client::connect(proxy.addr).await;
    assert_eq!(client.reply().await.text, "220 mx.example.test ESMTP\r\n");
    let ehlo = client.command("EHLO client.test").await;
    assert_eq!(
        ehlo.text,
        "250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 10485760\r\n250-8BITMIME\r\n\
         250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n"
    );
    client.expect("HELP", "214 2.0.0").await;
    client.expect("VRFY alice", "252 2.5.0").await;
    client.expect("NOOP", "250 2.0.0").await;
    client.expect("QUIT", "221 2.0.0").await;
    assert!(client.closed().await);
}

#[tokio::test]
async fn a_whole_transaction_in_one_write_gets_every_reply_in_order() {
    let backend = Backend::start(DataEnd::Strict).await;
    let proxy = Proxy::start(backend.addr, UNTRUSTED, "").await;
    let mut client = Client::connect(proxy.addr).await;
    assert_eq!(client.reply().await.code, 220);
    let mut batch = b"EHLO client.test\r\n\
        MAIL FROM:<sender@remote.test>\r\n\
        RCPT TO:<alice@example.test>\r\n\
        RCPT TO:<user@remote.test>\r\n\
        RCPT TO:<nobody@example.test>\r\n\
        RCPT TO:<bob@example.test>\r\n\
        DATA\r\n"
        .to_vec();
    batch.extend_from_slice(b"Subject: pipelined\r\n\r\n..dot\r\n.\r\n");
    batch.extend_from_slice(b"MAIL FROM:<sender@remote.test>\r\nRCPT TO:<carol@example.test>\r\nDATA\r\nSubject: second\r\n\r\nx\r\n.\r\nQUIT\r\n");
    client.send(&batch).await;
    let expected = [
        "250",
        "250 2.1.0",
        "250 2.1.5",
        "550 5.7.1",
        "550 5.1.1",
        "250 2.1.5",
        "354",
        "250 2.0.0",
        "250 2.1.0",
        "250 2.1.5",
        "354",
        "250 2.0.0",
        "221 2.0.0",
    ];
    for want in expected {
        let reply = client.reply().await;
        let last = reply.text.lines().last().unwrap().to_string();
        assert!(
            last.starts_with(want),
            "expected {want}, got {:?}",
            reply.text
        );
    }
    assert!(client.closed().await);
    let received = backend.wait_for(2).await;
    let first = received.iter().find(|m| m.rcpt_to.len() == 2).unwrap();
    assert_eq!(
        first.rcpt_to,
        vec!["alice@example.test", "bob@example.test"]
    );
    assert!(strip_received(&first.data).1.ends_with(b"\r\n.dot\r\n"));
}

/// End-of-data look-alikes that some servers honour. The proxy must treat all of them
/// as data, so what follows (a second transaction) can never become a message.
const FAKE_ENDS: &[&[u8]] = &[
    b"\n.\n",
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r.\n",
    b"\r\n\x00.\r\n",
    b"\r\n.\n",
    b"\n.\r",
    b"\r\n.\x00\r\n",
];

async fn smuggle_through(proxy: &Proxy, fake_end: &[u8]) -> Reply {
    let mut client = proxy.client().await;
    client.expect("MAIL FROM:<sender@remote.test>", "250").await;
    client.expect("RCPT TO:<alice@example.test>", "250").await;
    client.expect("DATA", "354").await;
    let mut data = b"Subject: cover\r\n\r\ncover text".to_vec();
    data.extend_from_slice(fake_end);
    data.extend_from_slice(
        b"MAIL FROM:<ceo@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n\
          Subject: SMUGGLED\r\n\r\nwire the money\r\n.\r\n",
    );
    client.send(&data).await;
    let reply = client.reply().await;
    // The session goes on: a clean message afterwards is accepted.
    let ok = client
        .send_mail(
            "sender@remote.test",
            &["carol@example.test"],
            b"Subject: after\r\n\r\nfine\r\n",
        )
        .await;
    assert_eq!(ok.codes(), "250 2.0.0", "{fake_end:?}");
    reply
}

#[tokio::test]
async fn smuggling_attempts_are_refused_and_never_reach_a_strict_or_lenient_backend() {
    for end in [DataEnd::Strict, DataEnd::Lenient] {
        let backend = Backend::start(end).await;
        let proxy = Proxy::start(backend.addr, UNTRUSTED, "").await;
        for fake_end in FAKE_ENDS {
            let reply = smuggle_through(&proxy, fake_end).await;
            assert_eq!(
                reply.codes(),
                "500 5.5.2",
                "{fake_end:?} {end:?}: {reply:?}"
            );
        }
        let received = backend.wait_for(FAKE_ENDS.len()).await;
        proxy.wait_idle().await;
        let received_all = backend.messages();
        assert_eq!(received_all.len(), FAKE_ENDS.len(), "{end:?}");
        for message in &received {
            assert_eq!(message.rcpt_to, vec!["carol@example.test"]);
            assert!(!String::from_utf8_lossy(&message.data).contains("SMUGGLED"));
        }
    }
}

#[tokio::test]
async fn normalize_mode_accepts_but_still_cannot_be_split() {
    let backend = Backend::start(DataEnd::Lenient).await;
    let extra = "";
    let text = base_config(backend.addr, UNTRUSTED, extra).replace(
        "data_timeout = \"10s\"",
        "data_timeout = \"10s\"\nbare_line_endings = \"normalize\"",
    );
    let proxy = Proxy::start_with_text(&text).await;
    let reply = smuggle_through(&proxy, b"\n.\n").await;
    assert_eq!(reply.codes(), "250 2.0.0", "{reply:?}");
    let nul = smuggle_through(&proxy, b"\r\n\x00.\r\n").await;
    assert_eq!(nul.codes(), "500 5.5.2", "NUL is never normalised");
    let received = backend.wait_for(3).await;
    proxy.wait_idle().await;
    assert_eq!(backend.messages().len(), 3);
    let cover = received
        .iter()
        .find(|m| String::from_utf8_lossy(&m.data).contains("cover text"))
        .unwrap();
    // One message to alice only: the smuggled part is text inside it, with CRLFs.
    assert_eq!(cover.rcpt_to, vec!["alice@example.test"]);
    let (_, body) = strip_received(&cover.data);
    let body = String::from_utf8_lossy(body);
    assert!(
        body.contains("cover text\r\n.\r\nMAIL FROM:<ceo@example.test>\r\n"),
        "{body:?}"
    );
}

#[tokio::test]
async fn size_limit_is_enforced_at_mail_and_at_end_of_data() {
    let backend = Backend::start(DataEnd::Strict).await;
    let text = base_config(backend.addr, UNTRUSTED, "")
        .replace("[limits]", "[limits]\nmessage_size_limit = 2000");
    let proxy = Proxy::start_with_text(&text).await;
    let mut client = proxy.client().await;
    client
        .expect("MAIL FROM:<sender@remote.test> SIZE=5000", "552 5.3.4")
        .await;
    let big = format!("Subject: big\r\n\r\n{}", "0123456789abcdef\r\n".repeat(300));
    let reply = client
        .send_mail(
            "sender@remote.test",
            &["alice@example.test"],
            big.as_bytes(),
        )
        .await;
    assert_eq!(reply.codes(), "552 5.3.4");
    // Read to the end, then refused: the session goes on.
    let ok = client
        .send_mail(
            "sender@remote.test",
            &["alice@example.test"],
            b"Subject: small\r\n\r\nok\r\n",
        )
        .await;
    assert_eq!(ok.codes(), "250 2.0.0");
    let received = backend.wait_for(1).await;
    assert!(String::from_utf8_lossy(&received[0].data).contains("Subject: small"));
}

#[tokio::test]
async fn recipient_limit_answers_452() {
    let backend = Backend::start(DataEnd::Strict).await;
    let text = base_config(backend.addr, UNTRUSTED, "")
        .replace("[limits]", "[limits]\nrecipient_limit = 2");
    let proxy = Proxy::start_with_text(&text).await;
    let mut client = proxy.client().await;
    client.expect("MAIL FROM:<sender@remote.test>", "250").await;
    client.expect("RCPT TO:<alice@example.test>", "250").await;
    client.expect("RCPT TO:<bob@example.test>", "250").await;
    client
        .expect("RCPT TO:<carol@example.test>", "452 4.5.3")
        .await;
    client.expect("DATA", "354").await;
    client.send(b"Subject: two\r\n\r\nx\r\n.\r\n").await;
    assert_eq!(client.reply().await.codes(), "250 2.0.0");
    let received = backend.wait_for(1).await;
    assert_eq!(received[0].rcpt_to.len(), 2);
}

#[tokio::test]
async fn long_lines_and_bad_commands_get_5xx_and_the_session_goes_on() {
    let backend = Backend::start(DataEnd::Strict).await;
    let proxy = Proxy::start(backend.addr, UNTRUSTED, "").await;
    let mut client = Client::connect(proxy.addr).await;
    assert_eq!(client.reply().await.code, 220);
    client
        .expect("MAIL FROM:<sender@remote.test>", "503 5.5.1")
        .await;
    client.expect("EHLO client.test", "250").await;
    client
        .expect(&format!("NOOP {}", "x".repeat(1100)), "500 5.5.2")
        .await;
    client
        .expect("RCPT TO:<alice@example.test>", "503 5.5.1")
        .await;
    client.expect("DATA", "503 5.5.1").await;
    client.expect("FROBNICATE", "500 5.5.2").await;
    client.expect("STARTTLS", "502 5.5.1").await;
    client
        .expect("MAIL FROM:<not an address>", "501 5.1.7")
        .await;
    client
        .expect("MAIL FROM:<sender@remote.test> RET=HDRS", "555 5.5.4")
        .await;
    client.send(b"NOOP\n").await;
    assert_eq!(
        client.reply().await.codes(),
        "500 5.5.2",
        "bare LF in a command"
    );
    client
        .expect("MAIL FROM:<sender@remote.test>", "250 2.1.0")
        .await;
    client
        .expect("MAIL FROM:<sender@remote.test>", "503 5.5.1")
        .await;
    client.expect("RCPT TO:<alice@example.test>", "250").await;
    client
        .expect("RCPT TO:<alice@-bad-.test>", "501 5.1.3")
        .await;
    client.expect("DATA", "354").await;
    let long_line = format!("Subject: long\r\n\r\n{}\r\n.\r\n", "y".repeat(1200));
    client.send(long_line.as_bytes()).await;
    assert_eq!(client.reply().await.codes(), "500 5.5.2");
    client.expect("RSET", "250 2.0.0").await;
    let ok = client
        .send_mail(
            "sender@remote.test",
            &["alice@example.test"],
            b"Subject: fine\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(ok.codes(), "250 2.0.0");
}

#[tokio::test]
async fn too_many_errors_closes_the_session_with_421() {
    let backend = Backend::start(DataEnd::Strict).await;
    let text =
        base_config(backend.addr, UNTRUSTED, "").replace("[limits]", "[limits]\nerror_limit = 3");
    let proxy = Proxy::start_with_text(&text).await;
    let mut client = proxy.client().await;
    client.expect("BAD1", "500 5.5.2").await;
    client.expect("BAD2", "500 5.5.2").await;
    client.expect("BAD3", "500 5.5.2").await;
    let last = client.reply().await;
    assert_eq!(last.codes(), "421 4.7.0", "{last:?}");
    assert!(client.closed().await);
    // The server goes on.
    let mut next = proxy.client().await;
    next.expect("NOOP", "250").await;
}

#[tokio::test]
async fn per_ip_connection_limit_answers_421_and_spares_other_clients() {
    let backend = Backend::start(DataEnd::Strict).await;
    let text = base_config(backend.addr, UNTRUSTED, "").replace(
        "shutdown_grace",
        "max_connections_per_ip = 2\nshutdown_grace",
    );
    let proxy = Proxy::start_with_text(&text).await;
    let mut first = Client::connect(proxy.addr).await;
    assert_eq!(first.reply().await.code, 220);
    let mut second = Client::connect(proxy.addr).await;
    assert_eq!(second.reply().await.code, 220);
    let mut third = Client::connect(proxy.addr).await;
    assert_eq!(third.reply().await.codes(), "421 4.7.0");
    assert!(third.closed().await);
    let mut other = Client::connect_from("127.0.0.5".parse().unwrap(), proxy.addr).await;
    assert_eq!(other.reply().await.code, 220);
    first.expect("QUIT", "221").await;
    assert!(first.closed().await);
    // The slot frees when the session ends, a moment after the client sees EOF.
    let mut freed = false;
    for _ in 0..50 {
        let mut again = Client::connect(proxy.addr).await;
        if again.reply().await.code == 220 {
            freed = true;
            break;
        }
        poll_pause().await;
    }
    assert!(freed, "a closed connection must free its place");
    second.expect("NOOP", "250").await;
}

#[tokio::test]
async fn total_connection_limit_answers_421() {
    let backend = Backend::start(DataEnd::Strict).await;
    let text = base_config(backend.addr, UNTRUSTED, "")
        .replace("shutdown_grace", "max_connections = 2\nshutdown_grace");
    let proxy = Proxy::start_with_text(&text).await;
    let mut first = Client::connect_from("127.0.0.5".parse().unwrap(), proxy.addr).await;
    assert_eq!(first.reply().await.code, 220);
    let mut second = Client::connect_from("127.0.0.6".parse().unwrap(), proxy.addr).await;
    assert_eq!(second.reply().await.code, 220);
    let mut third = Client::connect_from("127.0.0.7".parse().unwrap(), proxy.addr).await;
    assert_eq!(third.reply().await.codes(), "421 4.7.0");
    assert!(third.closed().await);
    first.expect("NOOP", "250").await;
}

#[tokio::test]
async fn an_idle_client_is_told_421_when_the_command_timeout_expires() {
    let backend = Backend::start(DataEnd::Strict).await;
    let text = base_config(backend.addr, UNTRUSTED, "")
        .replace("command_timeout = \"10s\"", "command_timeout = \"1s\"");
    let proxy = Proxy::start_with_text(&text).await;
    let mut client = proxy.client().await;
    let started = std::time::Instant::now();
    let reply = client.reply().await;
    assert_eq!(reply.codes(), "421 4.4.2", "{reply:?}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    assert!(client.closed().await);
}
