//! STARTTLS, implicit TLS and SMTP AUTH: logged-in users relay, nobody else does,
//! and guessing passwords gets an address locked out.

use std::process::Command;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_mailmoat");
const UNTRUSTED: &str = "trusted_networks = []";

struct Setup {
    proxy: Proxy,
    ca: Vec<u8>,
    backend: Backend,
}

/// A proxy with a certificate and an `[auth]` table; `users` are added with
/// `mailmoat passwd add`, as an administrator would.
async fn setup(auth: &str, users: &[(&str, &str)], extra_server: &str) -> Setup {
    let backend = Backend::start(DataEnd::Strict).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients.txt"), RECIPIENTS).unwrap();
    let (cert, key) = test_certificate();
    std::fs::write(dir.path().join("cert.pem"), &cert).unwrap();
    std::fs::write(dir.path().join("key.pem"), &key).unwrap();
    let extra =
        format!("[tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\n\n[auth]\n{auth}\n");
    let text = base_config(backend.addr, UNTRUSTED, &extra)
        .replace("shutdown_grace", &format!("{extra_server}shutdown_grace"));
    let config = dir.path().join("mailmoat.toml");
    std::fs::write(&config, &text).unwrap();
    std::fs::write(dir.path().join("users.txt"), "# users of SMTP AUTH\n").unwrap();
    for (user, password) in users {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .args(["passwd", "add", user])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        assert!(child.wait().unwrap().success());
    }
    let proxy = Proxy::start_in(dir, &text).await;
    Setup {
        proxy,
        ca: cert.into_bytes(),
        backend,
    }
}

const USERS: &str = "source = \"users\"\nusers_file = \"users.txt\"\nfailure_delay = \"10ms\"\n";

async fn tls_client(setup: &Setup, from: &str) -> Client {
    let mut client = Client::connect_from(from.parse().unwrap(), setup.proxy.addr).await;
    client.hello().await;
    client.expect("STARTTLS", "220 2.0.0").await;
    let mut client = client.start_tls(&setup.ca).await;
    client.expect("EHLO client.test", "250").await;
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_then_auth_plain_relays_and_auth_in_plain_text_is_refused() {
    let setup = setup(USERS, &[("alice@example.test", "correct horse")], "").await;
    let mut plain = setup.proxy.client().await;
    let ehlo = plain.command("EHLO client.test").await;
    assert!(ehlo.text.contains("STARTTLS"), "{ehlo:?}");
    assert!(
        !ehlo.text.contains("AUTH"),
        "AUTH is not offered in plain text: {ehlo:?}"
    );
    plain
        .expect(
            &format!("AUTH PLAIN {}", b64("\0alice@example.test\0correct horse")),
            "538 5.7.11",
        )
        .await;
    plain.expect("MAIL FROM:<alice@example.test>", "250").await;
    plain
        .expect("RCPT TO:<friend@remote.test>", "550 5.7.1")
        .await;

    let mut client = tls_client(&setup, "127.0.0.1").await;
    client
        .expect(
            &format!("AUTH PLAIN {}", b64("\0alice@example.test\0correct horse")),
            "235 2.7.0",
        )
        .await;
    let reply = client
        .send_mail(
            "alice@example.test",
            &["friend@remote.test"],
            b"Subject: out\r\n\r\nhi\r\n",
        )
        .await;
    assert_eq!(reply.codes(), "250 2.0.0");
    let received = setup.backend.wait_for(1).await;
    assert_eq!(received[0].rcpt_to, vec!["friend@remote.test"]);
    let (trace, _) = strip_received(&received[0].data);
    assert!(trace.contains("with ESMTPSA id"), "{trace}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_login_works_and_a_stolen_login_cannot_forge_other_senders() {
    let setup = setup(USERS, &[("bob", "hunter2hunter2")], "").await;
    let mut client = tls_client(&setup, "127.0.0.1").await;
    client.expect("AUTH LOGIN", "334 VXNlcm5hbWU6").await;
    client.expect(&b64("bob"), "334 UGFzc3dvcmQ6").await;
    client.expect(&b64("hunter2hunter2"), "235 2.7.0").await;
    client
        .expect("MAIL FROM:<ceo@example.test>", "553 5.7.1")
        .await;
    client.expect("MAIL FROM:<bob@example.test>", "250").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_pipelined_after_starttls_is_not_executed() {
    let setup = setup(USERS, &[], "").await;
    let mut client = Client::connect(setup.proxy.addr).await;
    client.hello().await;
    // The attack: commands sent with STARTTLS, before the handshake, hoping the
    // server runs them inside the encrypted session.
    client
        .send(b"STARTTLS\r\nMAIL FROM:<evil@remote.test>\r\nRCPT TO:<alice@example.test>\r\n")
        .await;
    assert_eq!(client.reply().await.codes(), "220 2.0.0");
    let mut client = client.start_tls(&setup.ca).await;
    // The first reply inside TLS is the one to EHLO: nothing injected ran.
    let ehlo = client.command("EHLO client.test").await;
    assert!(ehlo.text.starts_with("250-mx.example.test"), "{ehlo:?}");
    assert!(
        !ehlo.text.contains("STARTTLS"),
        "not offered twice: {ehlo:?}"
    );
    // And the injected MAIL did not open a transaction.
    client
        .expect("RCPT TO:<alice@example.test>", "503 5.5.1")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_listener_works() {
    let setup = setup(USERS, &[], "listen_tls = [\"127.0.0.1:0\"]\n").await;
    let tls_addr = setup.proxy.server.as_ref().unwrap().local_addrs[1];
    let mut client = Client::connect_tls(tls_addr, &setup.ca).await;
    client.hello().await;
    let reply = client
        .send_mail(
            "s@remote.test",
            &["alice@example.test"],
            b"Subject: tls\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(reply.codes(), "250 2.0.0");
    let received = setup.backend.wait_for(1).await;
    assert!(
        strip_received(&received[0].data)
            .0
            .contains("with ESMTPS id")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_verified_auth() {
    let setup = setup("source = \"backend\"\nfailure_delay = \"10ms\"\n", &[], "").await;
    setup.backend.add_account("carol", "backend-secret");
    let mut client = tls_client(&setup, "127.0.0.1").await;
    client
        .expect(
            &format!("AUTH PLAIN {}", b64("\0carol\0wrong")),
            "535 5.7.8",
        )
        .await;
    client
        .expect(
            &format!("AUTH PLAIN {}", b64("\0carol\0backend-secret")),
            "235 2.7.0",
        )
        .await;
    let reply = client
        .send_mail(
            "carol@example.test",
            &["friend@remote.test"],
            b"Subject: via backend\r\n\r\nhi\r\n",
        )
        .await;
    assert_eq!(reply.codes(), "250 2.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_bad_passwords_lock_out_the_address_not_the_user() {
    let auth = format!("{USERS}max_failures_per_ip = 3\nlockout = \"1h\"\n");
    let setup = setup(&auth, &[("dave", "right-password")], "").await;
    let mut attacker = tls_client(&setup, "127.0.0.3").await;
    for _ in 0..3 {
        attacker
            .expect(&format!("AUTH PLAIN {}", b64("\0dave\0guess")), "535 5.7.8")
            .await;
    }
    // Locked out: even the right password is not checked from there.
    attacker
        .expect(
            &format!("AUTH PLAIN {}", b64("\0dave\0right-password")),
            "454 4.7.0",
        )
        .await;
    let mut again = tls_client(&setup, "127.0.0.3").await;
    again
        .expect(
            &format!("AUTH PLAIN {}", b64("\0dave\0right-password")),
            "454 4.7.0",
        )
        .await;
    // The real user, from another address, logs in.
    let mut user = tls_client(&setup, "127.0.0.4").await;
    user.expect(
        &format!("AUTH PLAIN {}", b64("\0dave\0right-password")),
        "235 2.7.0",
    )
    .await;
}

/// The backend here is a second mailmoat with a certificate, in front of the
/// recording sink: real STARTTLS on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_to_the_backend_uses_starttls_when_told_to() {
    let inner = setup(USERS, &[], "").await;
    let ca_file = inner.proxy.dir.path().join("cert.pem");
    let backend_tls = format!(
        "command_timeout = \"5s\"\nstarttls = \"required\"\nca_file = \"{}\"",
        ca_file.display()
    );
    // Another name: the inner proxy refuses a HELO that claims to be itself.
    let text = base_config(inner.proxy.addr, "trusted_networks = []", "")
        .replacen("command_timeout = \"5s\"", &backend_tls, 1)
        .replace(
            "hostname = \"mx.example.test\"",
            "hostname = \"edge.example.test\"",
        );
    let outer = Proxy::start_with_text(&text).await;
    let mut client = outer.client().await;
    let reply = client
        .send_mail(
            "s@remote.test",
            &["alice@example.test"],
            b"Subject: over TLS\r\n\r\nhi\r\n",
        )
        .await;
    assert_eq!(reply.codes(), "250 2.0.0");
    let received = inner.backend.wait_for(1).await;
    let (trace, _) = strip_received(&received[0].data);
    assert!(
        trace.contains("with ESMTPS id"),
        "the hop into the inner proxy was encrypted: {trace}"
    );

    // Required, but the backend offers no STARTTLS: the mail waits in the queue.
    let plain = Backend::start(DataEnd::Strict).await;
    let text = base_config(plain.addr, "trusted_networks = []", "").replacen(
        "command_timeout = \"5s\"",
        "command_timeout = \"5s\"\nstarttls = \"required\"",
        1,
    );
    let strict = Proxy::start_with_text(&text).await;
    let mut client = strict.client().await;
    let reply = client
        .send_mail(
            "s@remote.test",
            &["alice@example.test"],
            b"Subject: must wait\r\n\r\nhi\r\n",
        )
        .await;
    assert_eq!(reply.codes(), "250 2.0.0");
    eventually("the message waits, deferred", || {
        strict.queue_files("deferred").len() == 2
    })
    .await;
    assert!(plain.messages().is_empty());
}
