//! Recipients and logins from the directory: a real OpenLDAP `slapd`, started by
//! the test on a loopback port with a schema like Active Directory's
//! (`proxyAddresses` case-insensitive and multi-valued).

use std::time::{Duration, Instant};

use crate::support::*;

use crate::slapd::*;

/// A slapd of the test's own, its packages installed when missing.
async fn started() -> Slapd {
    ensure_package("test -x /usr/sbin/slapd", "slapd");
    ensure_package("command -v ldapdelete", "ldap-utils");
    Slapd::start().await
}

/// A proxy whose hosted domains example.test and branch.test are validated in
/// the directory (branch.test under its own base).
async fn proxy_with_directory(
    backend: &Backend,
    slapd: &Slapd,
    ldap_extra: &str,
    limits: &str,
) -> Proxy {
    let text = base_config(backend.addr, "trusted_networks = []", "")
        .replace("[limits]\n", &format!("[limits]\n{limits}"))
        .replace(
            "hosted_domains = [\"example.test\", \"other.test\"]",
            "hosted_domains = [\"example.test\", \"branch.test\"]",
        )
        .replace(
            "[recipients.domains.\"example.test\"]\nfile = \"recipients.txt\"\n",
            &format!(
                "[recipients.domains.\"example.test\"]\nldap = true\n\n\
                 [recipients.domains.\"branch.test\"]\nldap = true\nbase = \"ou=branch,{SUFFIX}\"\n\n{}",
                slapd.config(ldap_extra)
            ),
        );
    let dir = tempfile::tempdir().unwrap();
    Proxy::start_in(dir, &text).await
}

fn cli(proxy: &Proxy, args: &[&str]) -> (bool, String) {
    run_cli(&proxy.config_path(), args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_knows_primary_addresses_aliases_and_lists_per_domain_base() {
    let slapd = started().await;
    let backend = Backend::start(DataEnd::Strict).await;
    let proxy = proxy_with_directory(&backend, &slapd, "", "").await;
    let mut client = proxy.client().await;
    client.expect("MAIL FROM:<sender@remote.test>", "250").await;
    for (rcpt, expected) in [
        ("alice@example.test", "250 2.1.5"),
        // An alias in proxyAddresses, in another case.
        ("A.Smith@Example.TEST", "250 2.1.5"),
        // A distribution list.
        ("sales@example.test", "250 2.1.5"),
        ("nobody@example.test", "550 5.1.1"),
        // branch.test is searched under its own base only.
        ("carol@branch.test", "250 2.1.5"),
        ("dave@branch.test", "550 5.1.1"),
    ] {
        client.expect(&format!("RCPT TO:<{rcpt}>"), expected).await;
    }
    // A wildcard in an address is a character, not a pattern: unescaped,
    // (mail=*@example.test) would find everyone.
    client.expect("RCPT TO:<*@example.test>", "550 5.1.1").await;
    client.expect("DATA", "354").await;
    client
        .send(&stuff(&sample_message("to the directory's people")))
        .await;
    client.expect(".", "250").await;
    proxy.wait_idle().await;
    let received = backend.wait_for(1).await;
    // (The test backend writes recipients in lower case.)
    assert_eq!(
        received[0].rcpt_to,
        [
            "alice@example.test",
            "a.smith@example.test",
            "sales@example.test",
            "carol@branch.test"
        ]
    );

    let (ok, text) = cli(&proxy, &["recipients", "lookup", "a.smith@example.test"]);
    assert!(ok, "{text}");
    let expected = format!(
        "a.smith@example.test: accepted: cn=Alice Smith,ou=people,{SUFFIX} (remembered, asked again in 59m"
    );
    assert!(
        text.starts_with(&expected) && text.trim_end().ends_with("s)"),
        "{text}"
    );
    let (ok, text) = cli(&proxy, &["recipients", "lookup", "ghost@example.test"]);
    assert!(ok, "{text}");
    assert_eq!(
        text.trim(),
        format!(
            "ghost@example.test: 550 5.1.1 user unknown: no entry (searched under {SUFFIX} with \
             (|(mail=ghost@example.test)(proxyAddresses=smtp:ghost@example.test)))"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_frozen_directory_tempfails_within_the_timeout_and_the_cache_still_answers() {
    let mut slapd = started().await;
    let backend = Backend::start(DataEnd::Strict).await;
    let proxy = proxy_with_directory(&backend, &slapd, "", "").await;
    let mut client = proxy.client().await;
    client.expect("MAIL FROM:<sender@remote.test>", "250").await;
    client
        .expect("RCPT TO:<alice@example.test>", "250 2.1.5")
        .await;

    slapd.stop();
    let asked = Instant::now();
    client
        .expect("RCPT TO:<bob@example.test>", "451 4.4.3")
        .await;
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    // Remembered: still accepted while the directory is down.
    client
        .expect("RCPT TO:<alice@example.test>", "250 2.1.5")
        .await;

    // Back: the next lookup connects again, no restart of the proxy.
    slapd.restart().await;
    client
        .expect("RCPT TO:<bob@example.test>", "250 2.1.5")
        .await;

    // Frozen: the connection stays open and nothing answers; the timeout (1s)
    // bounds the wait.
    slapd.freeze(true).await;
    let asked = Instant::now();
    client
        .expect("RCPT TO:<user7@example.test>", "451 4.4.3")
        .await;
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    slapd.freeze(false).await;
    client
        .expect("RCPT TO:<user7@example.test>", "250 2.1.5")
        .await;

    let (_, status) = cli(&proxy, &["status"]);
    let line = status
        .lines()
        .find(|l| l.starts_with("directory "))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(
        line.starts_with(&format!("directory {}: answers (", slapd.url())),
        "{line}"
    );
    assert!(line.contains(", 2 failures"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushing_the_cache_makes_a_deleted_entry_refused() {
    let slapd = started().await;
    let backend = Backend::start(DataEnd::Strict).await;
    let proxy = proxy_with_directory(&backend, &slapd, "", "").await;
    let mut client = proxy.client().await;
    client.expect("MAIL FROM:<sender@remote.test>", "250").await;
    client
        .expect("RCPT TO:<bob@example.test>", "250 2.1.5")
        .await;
    slapd.delete(&format!("cn=Bob,ou=people,{SUFFIX}"));
    // Remembered for found_ttl (an hour by default).
    client
        .expect("RCPT TO:<bob@example.test>", "250 2.1.5")
        .await;
    assert_eq!(slapd.searches("mail=bob@example.test"), 1);
    let (ok, text) = cli(&proxy, &["recipients", "flush-cache"]);
    assert!(ok, "{text}");
    assert_eq!(
        text.trim(),
        "the directory's remembered answers are forgotten (1 held here); every address is searched for again"
    );
    client
        .expect("RCPT TO:<bob@example.test>", "550 5.1.1")
        .await;
    assert_eq!(slapd.searches("mail=bob@example.test"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_addresses_asked_ten_thousand_times_cost_a_thousand_searches() {
    let slapd = started().await;
    let backend = Backend::start(DataEnd::Strict).await;
    let metrics = unused_addr().await;
    let proxy = proxy_with_directory(
        &backend,
        &slapd,
        &format!("\n[metrics]\nlisten = \"{metrics}\""),
        "recipient_limit = 1000\n",
    )
    .await;
    let sessions: Vec<_> = (0..10)
        .map(|round| {
            let addr = proxy.addr;
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                client.hello().await;
                client.expect("MAIL FROM:<sender@remote.test>", "250").await;
                for i in 0..1000 {
                    // Each session walks the addresses from its own starting point.
                    let n = (i + round * 100) % 1000;
                    client
                        .expect(&format!("RCPT TO:<user{n}@example.test>"), "250 2.1.5")
                        .await;
                }
                client.expect("QUIT", "221").await;
            })
        })
        .collect();
    for session in sessions {
        session.await.unwrap();
    }
    assert_eq!(
        slapd.searches("(mail=user"),
        1000,
        "searches for 10,000 RCPTs of 1,000 addresses"
    );
    let (_, status) = cli(&proxy, &["status"]);
    assert!(
        status.contains("; 10000 lookups, 9000 from the cache, 0 failures"),
        "{status}"
    );
    let scraped = crate::metrics::scrape(metrics).await;
    for (event, wanted) in [
        ("lookups", 10000.0),
        ("cache_hits", 9000.0),
        ("searches", 1000.0),
        ("failures", 0.0),
    ] {
        assert_eq!(
            crate::metrics::value(
                &scraped,
                &format!("mailmoat_ldap_total{{event=\"{event}\"}}")
            ),
            Some(wanted),
            "{event}"
        );
    }
}

/// AUTH against the directory: the login filter finds the entry (by account name
/// or address), a bind as it checks the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_bind_as_the_directory_entry_and_may_send_as_its_addresses() {
    capture_logs();
    let slapd = started().await;
    let backend = Backend::start(DataEnd::Strict).await;
    let auth = "[auth]\nsource = \"ldap\"\nplaintext_networks = [\"127.0.0.0/8\"]\n\
                max_failures_per_ip = 3\nfailure_delay = \"10ms\"\n";
    let text = base_config(backend.addr, "trusted_networks = []", auth).replace(
        "[recipients.domains.\"example.test\"]\nfile = \"recipients.txt\"\n",
        &format!(
            "[recipients.domains.\"example.test\"]\nldap = true\n\n{}",
            slapd.config("")
        ),
    );
    let proxy = Proxy::start_in(tempfile::tempdir().unwrap(), &text).await;

    let mut client = proxy.client().await;
    client
        .expect(
            &format!("AUTH PLAIN {}", b64("\0alice\0alice-directory-pw")),
            "235 2.7.0",
        )
        .await;
    // Any address of the entry (here an alias in proxyAddresses) is hers.
    client
        .expect("MAIL FROM:<a.smith@example.test>", "250")
        .await;
    client
        .expect("RCPT TO:<friend@remote.test>", "250 2.1.5")
        .await;
    client.expect("DATA", "354").await;
    client
        .send(&stuff(&sample_message("sent after a directory login")))
        .await;
    client.expect(".", "250").await;
    client.expect("RSET", "250").await;
    // Another entry's address is not.
    client
        .expect("MAIL FROM:<bob@example.test>", "553 5.7.1")
        .await;
    proxy.wait_idle().await;
    let received = backend.wait_for(1).await;
    assert_eq!(received[0].mail_from, "<a.smith@example.test>");
    assert_eq!(received[0].rcpt_to, ["friend@remote.test"]);

    // A name is found as typed: bob's password does not sign in
    // "bob@elsewhere.test", which is not his account, address or UPN.
    let mut other = Client::connect_from("127.0.0.4".parse().unwrap(), proxy.addr).await;
    other.hello().await;
    other
        .expect(
            &format!("AUTH PLAIN {}", b64("\0bob@elsewhere.test\0bob-pw")),
            "535 5.7.8",
        )
        .await;
    other
        .expect(&format!("AUTH PLAIN {}", b64("\0bob\0bob-pw")), "235")
        .await;

    // Wrong passwords, an empty one (LDAP would take it as an anonymous bind),
    // an unknown name: 535; the fourth failure from one address locks it out,
    // the right password included.
    let mut guesser = Client::connect_from("127.0.0.3".parse().unwrap(), proxy.addr).await;
    guesser.hello().await;
    for credentials in [
        "\0alice@example.test\0wrong",
        "\0alice\0",
        "\0nobody\0alice-directory-pw",
    ] {
        guesser
            .expect(&format!("AUTH PLAIN {}", b64(credentials)), "535 5.7.8")
            .await;
    }
    guesser
        .expect(
            &format!("AUTH PLAIN {}", b64("\0alice\0alice-directory-pw")),
            "454 4.7.0",
        )
        .await;
    // The bind of the empty password was never tried.
    assert_eq!(
        slapd
            .log()
            .lines()
            .filter(|l| l.contains("BIND dn=\"cn=Alice Smith") && l.contains("method=128"))
            .count(),
        2,
        "the right password and the wrong one; not the empty one"
    );

    // The service account's password is never shown.
    let (ok, checked) = cli(&proxy, &["check"]);
    assert!(ok, "{checked}");
    assert!(
        checked.contains("bind_password = \"(hidden)\""),
        "{checked}"
    );
    let (_, status) = cli(&proxy, &["status"]);
    let logs = logged(|_| true);
    for (what, text) in [
        ("check", checked),
        ("status", status),
        ("the log", format!("{logs:?}")),
    ] {
        assert!(
            !text.contains(SERVICE_PASSWORD),
            "{what} shows the password"
        );
    }
}

#[tokio::test]
async fn check_names_the_line_and_the_fix_of_a_directory_setting_without_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mailmoat.toml");
    let cases = [
        (
            "url = \"http://dc1.example.test\"\nbase = \"DC=example,DC=test\"\n",
            ":5: ldap.url = \"http://dc1.example.test\": write ldap://host[:port] or ldaps://host[:port]",
        ),
        (
            "url = \"ldaps://dc1.example.test\"\nstarttls = true\nbase = \"DC=example,DC=test\"\n",
            ":6: ldap.starttls = true with ldaps://dc1.example.test",
        ),
        (
            "url = \"ldap://dc1.example.test\"\nbase = \"DC=example,DC=test\"\nbind_dn = \"CN=mailmoat,DC=example,DC=test\"\n",
            ":7: ldap.bind_dn needs ldap.bind_password",
        ),
        (
            "url = \"ldap://dc1.example.test\"\nbase = \"example.test\"\n",
            ":6: ldap.base = \"example.test\": not a distinguished name",
        ),
    ];
    for (ldap, expected) in cases {
        std::fs::write(
            &config,
            format!("[relay]\nhosted_domains = [\"example.test\"]\n\n[ldap]\n{ldap}"),
        )
        .unwrap();
        let (_, text) = run_cli(&config, &["check"]);
        assert!(text.contains(expected), "{ldap}: {text}");
    }
    // A valid table passes without a directory to ask (dc1.example.test does not exist).
    std::fs::write(
        &config,
        "[relay]\nhosted_domains = [\"example.test\"]\n\n[recipients.domains.\"example.test\"]\n\
         ldap = true\nfilter = \"(mail=%s)\"\n\n[ldap]\nurl = [\"ldap://dc1.example.test\", \
         \"ldap://dc2.example.test\"]\nbase = \"DC=example,DC=test\"\n\
         bind_dn = \"CN=mailmoat,DC=example,DC=test\"\nbind_password = \"s3cret-s3cret\"\n",
    )
    .unwrap();
    let (ok, text) = run_cli(&config, &["check"]);
    assert!(ok, "{text}");
    assert!(!text.contains("s3cret-s3cret"), "{text}");
}

/// ldaps:// and StartTLS, trusting the CA given in `ca_file`; without it the
/// self-signed certificate is not trusted and RCPT is told to try later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldaps_and_starttls_trust_the_ca_file_and_nothing_else() {
    let slapd = started().await;
    let backend = Backend::start(DataEnd::Strict).await;
    let ca = slapd.ca().display().to_string();
    let ldaps = format!("ldaps://127.0.0.1:{}", slapd.tls_port);
    for (url, extra, expected) in [
        (ldaps.clone(), format!("ca_file = \"{ca}\"\n"), "250 2.1.5"),
        (
            slapd.url(),
            format!("starttls = true\nca_file = \"{ca}\"\n"),
            "250 2.1.5",
        ),
        (ldaps.clone(), String::new(), "451 4.4.3"),
        (slapd.url(), "starttls = true\n".to_string(), "451 4.4.3"),
    ] {
        let text = base_config(backend.addr, "trusted_networks = []", "").replace(
            "[recipients.domains.\"example.test\"]\nfile = \"recipients.txt\"\n",
            &format!(
                "[recipients.domains.\"example.test\"]\nldap = true\n\n{}",
                slapd.config(&extra).replace(&slapd.url(), &url)
            ),
        );
        let mut proxy = Proxy::start_in(tempfile::tempdir().unwrap(), &text).await;
        let mut client = proxy.client().await;
        client.expect("MAIL FROM:<sender@remote.test>", "250").await;
        client
            .expect("RCPT TO:<alice@example.test>", expected)
            .await;
        proxy.stop().await;
    }
    // The encrypted ones reached slapd as TLS: its log shows the handshakes.
    let log = slapd.log();
    assert!(
        log.contains("EXT oid=1.3.6.1.4.1.1466.20037"),
        "StartTLS asked for"
    );
    assert!(log.matches("TLS established").count() >= 2, "{log}");
}

/// With `[shared]`, two instances remember one set of answers: the second asks
/// the directory nothing the first has asked, and a flush on one is a flush on
/// both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_redis_share_the_answers_and_the_flush() {
    let slapd = started().await;
    let redis = crate::parts::RedisServer::start().await;
    let backend = Backend::start(DataEnd::Strict).await;
    let shared = format!(
        "[shared]\nredis = \"{}\"\ntimeout = \"500ms\"\n",
        redis.url()
    );
    let text = base_config(backend.addr, "trusted_networks = []", &shared).replace(
        "[recipients.domains.\"example.test\"]\nfile = \"recipients.txt\"\n",
        &format!(
            "[recipients.domains.\"example.test\"]\nldap = true\n\n{}",
            slapd.config("")
        ),
    );
    let a = Proxy::start_with_text(&text).await;
    let b = Proxy::start_with_text(&text).await;
    let rcpt = async |proxy: &Proxy, address: &str, expected: &str| {
        let mut client = proxy.client().await;
        client.expect("MAIL FROM:<sender@remote.test>", "250").await;
        client
            .expect(&format!("RCPT TO:<{address}>"), expected)
            .await;
    };
    rcpt(&a, "bob@example.test", "250 2.1.5").await;
    rcpt(&a, "ghost@example.test", "550 5.1.1").await;
    rcpt(&b, "bob@example.test", "250 2.1.5").await;
    rcpt(&b, "ghost@example.test", "550 5.1.1").await;
    assert_eq!(slapd.searches("mail=bob@example.test"), 1);
    assert_eq!(slapd.searches("mail=ghost@example.test"), 1);

    slapd.delete(&format!("cn=Bob,ou=people,{SUFFIX}"));
    rcpt(&b, "bob@example.test", "250 2.1.5").await;
    let (ok, text) = cli(&a, &["recipients", "flush-cache"]);
    assert!(ok, "{text}");
    rcpt(&b, "bob@example.test", "550 5.1.1").await;
    assert_eq!(slapd.searches("mail=bob@example.test"), 2);
}

/// The quarantine's sign-in takes the directory password, and the user sees
/// the items of every address of their entry (an alias included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quarantine_signs_in_with_the_directory_password() {
    use crate::web::{SECRET, http, sign_in};
    let mut slapd = started().await;
    let backend = Backend::start(DataEnd::Strict).await;
    let web = unused_addr().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/50-test.toml"), crate::web::RULES).unwrap();
    let text = base_config(
        backend.addr,
        "trusted_networks = [\"127.0.0.1/32\"]",
        &format!(
            "[web]\nlisten = \"{web}\"\nbase_url = \"http://{web}\"\nsecret = \"{SECRET}\"\n\n\
             [auth]\nsource = \"ldap\"\nplaintext_networks = [\"127.0.0.0/8\"]\n"
        ),
    )
    .replace(
        "[recipients.domains.\"example.test\"]\nfile = \"recipients.txt\"\n",
        &format!(
            "[recipients.domains.\"example.test\"]\nldap = true\n\n{}",
            slapd.config("")
        ),
    );
    let proxy = Proxy::start_in(dir, &text).await;
    let mut client = proxy.client().await;
    let message = b"From: <x@remote.test>\r\nSubject: [hold] to the alias\r\n\r\nHi.\r\n";
    let reply = client
        .send_mail("x@remote.test", &["a.smith@example.test"], message)
        .await;
    assert_eq!(reply.codes(), "250 2.0.0");
    let mut client = proxy.client().await;
    let message = b"From: <x@remote.test>\r\nSubject: [hold] to bob\r\n\r\nHi.\r\n";
    client
        .send_mail("x@remote.test", &["bob@example.test"], message)
        .await;

    assert_eq!(sign_in(web, "alice", "bob-pw").await.status, 401);
    let signed = sign_in(web, "alice", "alice-directory-pw").await;
    assert_eq!(signed.status, 303, "{signed:?}");
    let list = http(web, "GET", "/", Some(&signed.cookie()), &[]).await;
    assert!(list.body.contains("[hold] to the alias"), "{}", list.body);
    assert!(!list.body.contains("[hold] to bob"), "{}", list.body);

    // A dead directory is not a wrong password: said as it is, and not
    // counted against the address (more than the ten failures a minute
    // allowed, and never 429).
    slapd.stop();
    for _ in 0..12 {
        let answer = sign_in(web, "alice", "alice-directory-pw").await;
        assert_eq!(answer.status, 503, "{answer:?}");
        assert!(
            answer.body.contains(
                "Your password cannot be checked right now (the directory does not answer)"
            ),
            "{}",
            answer.body
        );
    }
    // SMTP AUTH alike: 454 4.7.0, a temporary failure, not 535.
    let mut client = proxy.client().await;
    client
        .expect(
            &format!("AUTH PLAIN {}", b64("\0alice\0alice-directory-pw")),
            "454 4.7.0",
        )
        .await;
}
