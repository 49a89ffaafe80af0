//! Outbound delivery by MX, DNS blocklists, the sender-domain check, HELO and
//! pregreet checks, deny and allow lists, mail-bomb limits, and their precedence.
//! DNS answers come from a real DNS server on loopback.

use crate::support::*;

/// 127.0.0.1 untrusted; 127.0.0.2 trusted; 127.0.0.3 trusted but never-relay.
const RELAY: &str = "trusted_networks = [\"127.0.0.2/31\"]\nnever_relay_networks = [\"127.0.0.3\"]";

/// The base test configuration with DNS from `dns`, and `replace` pairs applied.
fn config(backend: std::net::SocketAddr, dns: &DnsServer, replace: &[(&str, &str)]) -> String {
    let mut text = dns.serving(&base_config(backend, RELAY, ""));
    for (from, to) in replace {
        assert!(text.contains(from), "{from} not in the base configuration");
        text = text.replace(from, to);
    }
    text
}

async fn trusted(proxy: &Proxy) -> Client {
    let mut client = Client::connect_from("127.0.0.2".parse().unwrap(), proxy.addr).await;
    client.hello().await;
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_mail_goes_to_the_mx_and_falls_back_to_the_second_one() {
    let backend = Backend::start(DataEnd::Strict).await;
    // The second MX listens; the first (same port, other address) refuses.
    let mx2 = Backend::start_on("127.0.0.22:0".parse().unwrap(), DataEnd::Strict).await;
    let port = mx2.addr.port().to_string();
    let dns = DnsServer::start().await;
    dns.mx("remote.test", 10, "mx1.remote.test");
    dns.mx("remote.test", 20, "mx2.remote.test");
    dns.a("mx1.remote.test", "127.0.0.21");
    dns.a("mx2.remote.test", "127.0.0.22");
    dns.mx("nomail.test", 0, ".");
    let route = format!("route = \"mx\"\nport = {port}");
    let proxy = Proxy::start_with_text(&config(
        backend.addr,
        &dns,
        &[("route = \"backend\"", &route)],
    ))
    .await;

    let mut client = trusted(&proxy).await;
    let reply = client
        .send_mail(
            "alice@example.test",
            &["friend@remote.test"],
            b"Subject: via MX\r\n\r\nhi\r\n",
        )
        .await;
    assert_eq!(reply.codes(), "250 2.0.0");
    let received = mx2.wait_for(1).await;
    assert_eq!(received[0].rcpt_to, vec!["friend@remote.test"]);
    assert!(
        backend.messages().is_empty(),
        "outbound mail does not go to the backend"
    );

    // A domain with a null MX takes no mail: the sender hears at once.
    let reply = client
        .send_mail(
            "alice@example.test",
            &["someone@nomail.test"],
            b"Subject: nowhere\r\n\r\nhi\r\n",
        )
        .await;
    assert_eq!(reply.codes(), "250 2.0.0");
    let bounces = backend.wait_for(1).await;
    let dsn = String::from_utf8_lossy(&bounces[0].data);
    assert_eq!(bounces[0].rcpt_to, vec!["alice@example.test"]);
    assert!(dsn.contains("Status: 5.1.10"), "{dsn}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_client_is_refused_except_to_postmaster_and_unknown_sender_domains_too() {
    let backend = Backend::start(DataEnd::Strict).await;
    let dns = DnsServer::start().await;
    dns.a("1.0.0.127.bl.test", "127.0.0.2");
    dns.mx("remote.test", 10, "mx.remote.test");
    dns.a("mx.remote.test", "127.0.0.30");
    dns.servfail("broken.test");
    let checks = "sender_domain_exists = true\ndnsbl_at = \"rcpt\"\n\n[[checks.dnsbl]]\nzone = \"bl.test\"\n";
    let proxy = Proxy::start_with_text(&config(
        backend.addr,
        &dns,
        &[("sender_domain_exists = false\n", checks)],
    ))
    .await;
    let mut client = proxy.client().await;
    client
        .expect("MAIL FROM:<x@nowhere.test>", "550 5.1.8")
        .await;
    client
        .expect("MAIL FROM:<x@broken.test>", "450 4.1.8")
        .await;
    client.expect("MAIL FROM:<x@remote.test>", "250").await;
    let refused = client
        .expect("RCPT TO:<alice@example.test>", "554 5.7.1")
        .await;
    assert!(refused.text.contains("bl.test"), "{refused:?}");
    client
        .expect("RCPT TO:<postmaster@example.test>", "250")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_client_can_be_refused_at_connect() {
    let backend = Backend::start(DataEnd::Strict).await;
    let dns = DnsServer::start().await;
    dns.a("1.0.0.127.a.test", "127.0.0.2");
    dns.a("1.0.0.127.b.test", "127.0.0.4");
    // Two lists with weights: one listing (weight 1) is not enough, two are.
    let checks = "dnsbl_at = \"connect\"\ndnsbl_threshold = 3\n\n[[checks.dnsbl]]\nzone = \"a.test\"\nweight = 1\n\n[[checks.dnsbl]]\nzone = \"b.test\"\nweight = 2\nanswers = [\"127.0.0.4\"]\n";
    let proxy = Proxy::start_with_text(&config(
        backend.addr,
        &dns,
        &[("sender_domain_exists = false\n", checks)],
    ))
    .await;
    let mut client = Client::connect(proxy.addr).await;
    let greeting = client.reply().await;
    assert_eq!(greeting.codes(), "554 5.7.1", "{greeting:?}");
    assert!(greeting.text.contains("a.test, b.test"), "{greeting:?}");
    assert!(client.closed().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_bomb_to_one_recipient_is_cut_off_and_others_are_unaffected() {
    let backend = Backend::start(DataEnd::Strict).await;
    let dns = DnsServer::start().await;
    let limits = "[mailbomb]\nmessages_per_recipient = 3\nrecipient_window = \"1h\"\n\n[store]";
    let proxy = Proxy::start_with_text(&config(backend.addr, &dns, &[("[store]", limits)])).await;
    // Many connections from many addresses, all to one mailbox.
    let mut answers = Vec::new();
    let mut last = None;
    for n in 0..5 {
        let mut client =
            Client::connect_from(format!("127.0.1.{}", 10 + n).parse().unwrap(), proxy.addr).await;
        client.hello().await;
        client
            .expect(&format!("MAIL FROM:<bomber{n}@remote.test>"), "250")
            .await;
        answers.push(client.command("RCPT TO:<alice@example.test>").await.codes());
        last = Some(client);
    }
    assert_eq!(
        answers,
        vec![
            "250 2.1.5",
            "250 2.1.5",
            "250 2.1.5",
            "451 4.7.1",
            "451 4.7.1"
        ]
    );
    // Another recipient, even in the same session, is not affected.
    let mut client = last.unwrap();
    client
        .expect("RCPT TO:<bob@example.test>", "250 2.1.5")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_clients_beat_lists_and_dnsbl_and_never_relay_beats_everything() {
    let backend = Backend::start(DataEnd::Strict).await;
    let dns = DnsServer::start().await;
    for client in ["1", "2", "3"] {
        dns.a(&format!("{client}.0.0.127.bl.test"), "127.0.0.2");
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients.txt"), RECIPIENTS).unwrap();
    std::fs::write(dir.path().join("deny.txt"), "# bad clients\n127.0.0.0/24\n").unwrap();
    std::fs::write(dir.path().join("allow.txt"), "127.0.0.3\n").unwrap();
    let checks = "dnsbl_at = \"connect\"\nclient_deny_file = \"deny.txt\"\nclient_allow_file = \"allow.txt\"\n\n[[checks.dnsbl]]\nzone = \"bl.test\"\n";
    let text = config(
        backend.addr,
        &dns,
        &[("sender_domain_exists = false\n", checks)],
    );
    let proxy = Proxy::start_in(dir, &text).await;

    // Untrusted, denied and listed: refused at connect.
    let mut stranger = Client::connect(proxy.addr).await;
    assert_eq!(stranger.reply().await.codes(), "554 5.7.1");
    // Trusted, though denied and listed: in, and may relay.
    let mut ours = trusted(&proxy).await;
    ours.expect("MAIL FROM:<alice@example.test>", "250").await;
    ours.expect("RCPT TO:<friend@remote.test>", "250").await;
    // Allow-listed and trusted, but never-relay: in, yet never relays.
    let mut never = Client::connect_from("127.0.0.3".parse().unwrap(), proxy.addr).await;
    never.hello().await;
    never.expect("MAIL FROM:<alice@example.test>", "250").await;
    never
        .expect("RCPT TO:<friend@remote.test>", "550 5.7.1")
        .await;
    never.expect("RCPT TO:<bob@example.test>", "250").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helo_as_us_early_talkers_and_denied_sender_domains_are_refused() {
    let backend = Backend::start(DataEnd::Strict).await;
    let dns = DnsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients.txt"), RECIPIENTS).unwrap();
    std::fs::write(dir.path().join("senders.txt"), "spam.test\n").unwrap();
    let checks = "sender_domain_exists = false\ngreet_delay = \"300ms\"\nsender_deny_file = \"senders.txt\"\n";
    let text = config(
        backend.addr,
        &dns,
        &[("sender_domain_exists = false\n", checks)],
    );
    let proxy = Proxy::start_in(dir, &text).await;

    let mut client = proxy.client().await;
    client.expect("HELO mx.example.test", "550 5.7.1").await;
    client
        .expect(&format!("EHLO [{}]", proxy.addr.ip()), "550 5.7.1")
        .await;
    client.expect("EHLO client.test", "250").await;
    client
        .expect("MAIL FROM:<x@mail.spam.test>", "550 5.7.1")
        .await;
    client.expect("MAIL FROM:<x@remote.test>", "250").await;

    let mut talker = Client::connect(proxy.addr).await;
    talker.send(b"EHLO impatient.test\r\n").await;
    let reply = talker.reply().await;
    assert_eq!(reply.codes(), "554 5.5.1", "{reply:?}");
    assert!(talker.closed().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_clients_are_counted_when_asked_to() {
    let backend = Backend::start(DataEnd::Strict).await;
    let dns = DnsServer::start().await;
    for (exempt, second) in [(true, "250 2.1.5"), (false, "451 4.7.1")] {
        let limits =
            format!("[mailbomb]\nmessages_per_recipient = 1\nexempt_trusted = {exempt}\n\n[store]");
        let proxy =
            Proxy::start_with_text(&config(backend.addr, &dns, &[("[store]", &limits)])).await;
        let mut client = trusted(&proxy).await;
        client.expect("MAIL FROM:<alice@example.test>", "250").await;
        client
            .expect("RCPT TO:<bob@example.test>", "250 2.1.5")
            .await;
        client.expect("RSET", "250").await;
        client.expect("MAIL FROM:<alice@example.test>", "250").await;
        client.expect("RCPT TO:<bob@example.test>", second).await;
    }
}
