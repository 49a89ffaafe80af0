//! Sender authentication from outside: a name server on loopback publishes SPF,
//! DKIM and DMARC records; messages signed with real keys (mail-auth's signer, and
//! Debian's dkimpy for a second implementation) go through the proxy; the backend
//! reads the Authentication-Results header, the rules see the verdicts, DMARC
//! enforcement refuses or quarantines, and what mailmoat signs or seals verifies.

use std::path::{Path, PathBuf};

use mail_auth::arc::ArcSealer;
use mail_auth::common::crypto::Ed25519Key;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use mail_auth::{AuthenticatedMessage, AuthenticationResults, DkimResult, MessageAuthenticator};
use mailmoat::sender_auth::keys::{Algorithm, generate};

use crate::support::*;

/// 127.0.0.1 is an outside client; 127.0.0.2 is trusted (its mail is signed).
const RELAY: &str = "trusted_networks = [\"127.0.0.2/32\"]";

/// A key published at `selector._domainkey.domain`, its PEM kept in `dir`.
struct Key {
    domain: String,
    selector: String,
    pem: String,
    path: PathBuf,
}

impl Key {
    fn new(dns: &DnsServer, dir: &Path, domain: &str, selector: &str, algorithm: Algorithm) -> Key {
        let made = generate(algorithm).unwrap();
        dns.txt(&format!("{selector}._domainkey.{domain}"), &made.record);
        let path = dir.join(format!("{selector}.{domain}.pem"));
        std::fs::write(&path, &made.private_pem).unwrap();
        Key {
            domain: domain.into(),
            selector: selector.into(),
            pem: made.private_pem,
            path,
        }
    }

    fn ed25519(&self) -> Ed25519Key {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject;
        let PrivateKeyDer::Pkcs8(der) = PrivateKeyDer::from_pem_slice(self.pem.as_bytes()).unwrap()
        else {
            panic!("not PKCS#8")
        };
        Ed25519Key::from_pkcs8_maybe_unchecked_der(der.secret_pkcs8_der()).unwrap()
    }

    fn signer(&self) -> DkimSigner<Ed25519Key, Done> {
        DkimSigner::from_key(self.ed25519())
            .domain(self.domain.clone())
            .selector(self.selector.clone())
            .headers(["From", "To", "Subject", "Message-ID"])
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed)
    }

    /// The message with this key's DKIM-Signature on top.
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.sign_with(self.signer(), message)
    }

    fn sign_with(&self, signer: DkimSigner<Ed25519Key, Done>, message: &[u8]) -> Vec<u8> {
        let mut out = signer.sign(message).unwrap().to_header().into_bytes();
        out.extend_from_slice(message);
        out
    }
}

fn message(from: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: alice@example.test\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@test>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// The proxy with sender authentication on, its names looked up at `dns`.
async fn start(backend: &Backend, dns: &DnsServer, auth: &str, rules: &str) -> Proxy {
    start_with(backend, dns, auth, rules, "").await
}

/// As [`start`], with `extra` configuration at the end.
async fn start_with(
    backend: &Backend,
    dns: &DnsServer,
    auth: &str,
    rules: &str,
    extra: &str,
) -> Proxy {
    let text = dns
        .serving(&base_config(backend.addr, RELAY, extra))
        .replace(
            "[sender_auth]\nspf = false\ndkim = false\ndmarc = false\narc = false\n",
            &format!("[sender_auth]\n{auth}\n"),
        );
    assert!(text.contains(&dns.addr.to_string()) && !text.contains("arc = false"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients.txt"), RECIPIENTS).unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/50-test.toml"), rules).unwrap();
    Proxy::start_in(dir, &text).await
}

/// Sends one message from 127.0.0.1; the reply to MAIL, and to the end of DATA
/// when MAIL was accepted.
async fn send(proxy: &Proxy, sender: &str, message: &[u8]) -> (String, Option<String>) {
    send_from("127.0.0.1", proxy, sender, message).await
}

async fn send_from(
    ip: &str,
    proxy: &Proxy,
    sender: &str,
    message: &[u8],
) -> (String, Option<String>) {
    let mut client = Client::connect_from(ip.parse().unwrap(), proxy.addr).await;
    assert_eq!(client.reply().await.code, 220);
    client.expect("EHLO client.remote.test", "250").await;
    let mail = client.command(&format!("MAIL FROM:<{sender}>")).await;
    if mail.code != 250 {
        return (mail.text.trim_end().to_string(), None);
    }
    client.expect("RCPT TO:<alice@example.test>", "250").await;
    client.expect("DATA", "354").await;
    client.send(&stuff(message)).await;
    client.send(b".\r\n").await;
    let end = client.reply().await;
    (mail.codes(), Some(end.text.trim_end().to_string()))
}

/// The Authentication-Results fields of a message, unfolded, in order.
fn results_fields(data: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(data);
    let head = text.split("\r\n\r\n").next().unwrap();
    let mut fields: Vec<String> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            let last = fields.last_mut().unwrap();
            last.push(' ');
            last.push_str(line.trim());
        } else {
            fields.push(line.to_string());
        }
    }
    fields
        .into_iter()
        .filter(|f| {
            f.to_ascii_lowercase()
                .starts_with("authentication-results:")
        })
        .collect()
}

/// The one Authentication-Results field of ours on the n-th delivered message.
async fn our_results(backend: &Backend, n: usize) -> String {
    let got = backend.wait_for(n + 1).await;
    let ours: Vec<String> = results_fields(&got[n].data)
        .into_iter()
        .filter(|f| f.starts_with("Authentication-Results: mx.example.test;"))
        .collect();
    assert_eq!(ours.len(), 1, "{ours:?}");
    ours[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_is_checked_at_mail_and_recorded_for_every_result() {
    let backend = Backend::start(DataEnd::Strict).await;
    let dns = DnsServer::start().await;
    dns.txt("pass.test", "v=spf1 ip4:127.0.0.1 -all");
    dns.txt("fail.test", "v=spf1 ip4:192.0.2.1 -all");
    dns.txt("soft.test", "v=spf1 ~all");
    dns.txt("neutral.test", "v=spf1 ?all");
    // A redirect to a domain without SPF: a permanent error (RFC 7208 6.1).
    dns.txt("perm.test", "v=spf1 redirect=none.test");
    dns.servfail("temp.test");
    dns.exists("none.test");
    // RFC 7208 4.6.4: more than 10 mechanisms that look names up.
    let includes: Vec<String> = (1..=11).map(|n| format!("include:i{n}.test")).collect();
    dns.txt(
        "toomany.test",
        &format!("v=spf1 {} -all", includes.join(" ")),
    );
    for n in 1..=11 {
        dns.txt(&format!("i{n}.test"), "v=spf1 ip4:192.0.2.1 -all");
    }
    dns.txt("loop.test", "v=spf1 include:loop.test -all");
    // A name server that never answers for the domain.
    dns.silent("silent.test");
    let rules = r#"
[[rule]]
name = "spf-fail"
when.spf = "fail"
action = "reject"
reply = "550 5.7.23 SPF says no"
"#;
    let proxy = start(&backend, &dns, "", rules).await;

    // Refused at MAIL, before any data: the rule sees SPF there.
    let (mail, data) = send(&proxy, "x@fail.test", &message("x@fail.test", "f", "b")).await;
    assert_eq!(mail, "550 5.7.23 SPF says no");
    assert!(data.is_none());

    let cases = [
        ("pass.test", "pass"),
        ("soft.test", "softfail"),
        ("neutral.test", "neutral"),
        ("perm.test", "permerror"),
        ("temp.test", "temperror"),
        ("none.test", "none"),
        ("toomany.test", "permerror"),
        ("loop.test", "permerror"),
        ("silent.test", "temperror"),
    ];
    for (n, (domain, result)) in cases.iter().enumerate() {
        let sender = format!("x@{domain}");
        let started = std::time::Instant::now();
        let (mail, data) = send(&proxy, &sender, &message(&sender, domain, "b")).await;
        assert_eq!(mail, "250 2.1.0", "{domain}");
        assert!(data.unwrap().starts_with("250 2.0.0"), "{domain}");
        // A name server that never answers holds a session for the DNS timeout
        // (1 s here), not longer.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "{domain}: {:?}",
            started.elapsed()
        );
        let comment = match *result {
            "pass" => format!("domain of {sender} designates 127.0.0.1 as permitted sender"),
            "softfail" => format!("domain of {sender} reports soft fail for 127.0.0.1"),
            "neutral" => format!("domain of {sender} reports neutral for 127.0.0.1"),
            "permerror" => format!("unable to verify SPF record for {sender}"),
            "temperror" => format!("temporary dns error validating {sender}"),
            _ => format!("no SPF records found for {sender}"),
        };
        assert_eq!(
            our_results(&backend, n).await,
            format!(
                "Authentication-Results: mx.example.test; spf={result} (mx.example.test: {comment}) \
                 smtp.mailfrom={sender}; arc=none smtp.remote-ip=127.0.0.1; \
                 dmarc=none header.from={domain} policy.dmarc=none"
            ),
            "{domain}"
        );
    }
    // Results are cached for the record's TTL: a second message from a domain
    // asks the name server nothing new.
    let asked = dns.asked("pass.test", "TXT");
    let (_, data) = send(&proxy, "y@pass.test", &message("y@pass.test", "again", "b")).await;
    assert!(data.unwrap().starts_with("250 2.0.0"));
    assert_eq!(dns.asked("pass.test", "TXT"), asked, "looked up again");

    // The null sender: the HELO name's record is checked.
    dns.txt("client.remote.test", "v=spf1 ip4:127.0.0.1 -all");
    let (mail, _) = send(&proxy, "", &message("x@none.test", "bounce", "b")).await;
    assert_eq!(mail, "250 2.1.0");
    let header = our_results(&backend, cases.len() + 1).await;
    assert!(
        header.contains("spf=pass ") && header.contains("smtp.helo=client.remote.test"),
        "{header}"
    );
}

/// A verifier as the backend (or anyone after mailmoat) would run it, reading
/// the test's name server.
fn verifier(dns: &DnsServer) -> MessageAuthenticator {
    use hickory_resolver::config::{NameServerConfig, ResolverConfig};
    let mut server = NameServerConfig::udp_and_tcp(dns.addr.ip());
    for connection in &mut server.connections {
        connection.port = dns.addr.port();
    }
    let mut builder = hickory_resolver::TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![server]),
        hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
    );
    builder.options_mut().ndots = 0;
    MessageAuthenticator(builder.build().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_and_dmarc_verdicts_reach_the_header_and_the_rules() {
    let backend = Backend::start(DataEnd::Strict).await;
    let dns = DnsServer::start().await;
    let keys = tempfile::tempdir().unwrap();
    let bank = Key::new(&dns, keys.path(), "bank.test", "s1", Algorithm::Ed25519);
    let other = Key::new(&dns, keys.path(), "other.test", "s1", Algorithm::Ed25519);
    dns.txt("_dmarc.bank.test", "v=DMARC1; p=reject");
    dns.txt("corp.test", "v=spf1 ip4:127.0.0.1 -all");
    dns.txt("_dmarc.corp.test", "v=DMARC1; p=quarantine");
    let rules = r#"
[[rule]]
name = "signed-by-bank"
when.dkim_domain = "bank.test"
action = "tag"
add_header = { "X-Signed-By-Bank" = "yes" }

[[rule]]
name = "would-reject"
when.dmarc = "fail"
when.dmarc_policy = "reject"
action = "tag"
add_header = { "X-Dmarc-Would-Reject" = "yes" }
"#;
    let proxy = start(&backend, &dns, "", rules).await;

    let genuine = bank.sign(&message("ceo@bank.test", "genuine", "Pay the invoice."));
    let mut body_changed = genuine.clone();
    body_changed.truncate(body_changed.len() - 2);
    body_changed.extend_from_slice(b" Now.\r\n");
    let header_changed = String::from_utf8(genuine.clone())
        .unwrap()
        .replace("Subject: genuine", "Subject: changed")
        .into_bytes();
    // Signed with an expiry one second after signing; judged once it passed.
    let expiring = bank.sign_with(
        bank.signer().expiration(1),
        &message("ceo@bank.test", "expired", "b"),
    );
    let expiry: u64 = String::from_utf8_lossy(&expiring)
        .split("x=")
        .nth(1)
        .and_then(|v| v.split(';').next())
        .and_then(|v| v.trim().parse().ok())
        .expect("an x= tag");
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        <= expiry
    {
        poll_pause().await;
    }
    let malformed = [
        b"DKIM-Signature: v=1; a=rsa-sha256; d=bank.test; s=s1; h=From; bh=!!!; b=@@@\r\n"
            .as_slice(),
        &message("ceo@bank.test", "malformed", "b"),
    ]
    .concat();
    let unpublished = Key {
        selector: "gone".into(),
        ..Key::new(&dns, keys.path(), "bank.test", "unused", Algorithm::Ed25519)
    };
    let bank_spf = "spf=none (mx.example.test: no SPF records found for x@bank.test) \
                    smtp.mailfrom=x@bank.test; arc=none smtp.remote-ip=127.0.0.1";
    let fails = "dmarc=fail (policy not aligned) header.from=bank.test policy.dmarc=reject";
    // Our header: the DKIM entry (header.b names the signature by its first
    // characters), SPF and ARC, DMARC.
    let exact = |dkim: String, spf: &str, dmarc: &str| {
        format!("Authentication-Results: mx.example.test; {dkim}{spf}; {dmarc}")
    };
    let signed = |result: &str, domain: &str, selector: &str, message: &[u8]| {
        format!(
            "dkim={result} header.d={domain} header.s={selector} header.b={}; ",
            header_b(message)
        )
    };
    /// Name, envelope sender, message, our exact header, the tags it gets.
    type Case<'a> = (&'a str, &'a str, Vec<u8>, String, &'a [&'a str]);
    let other_signed = other.sign(&message("ceo@bank.test", "other", "b"));
    let unpublished_signed = unpublished.sign(&message("ceo@bank.test", "nokey", "b"));
    let cases: Vec<Case> = vec![
        (
            "genuine",
            "x@bank.test",
            genuine.clone(),
            exact(
                signed("pass", "bank.test", "s1", &genuine),
                bank_spf,
                "dmarc=pass header.from=bank.test policy.dmarc=reject",
            ),
            &["X-Signed-By-Bank: yes"],
        ),
        (
            "body changed",
            "x@bank.test",
            body_changed.clone(),
            // As OpenDKIM writes it: the signature could not be checked
            // against a body that is not the one signed.
            exact(
                signed(
                    "neutral (body hash did not verify)",
                    "bank.test",
                    "s1",
                    &body_changed,
                ),
                bank_spf,
                fails,
            ),
            &["X-Dmarc-Would-Reject: yes"],
        ),
        (
            "header changed",
            "x@bank.test",
            header_changed.clone(),
            exact(
                signed(
                    "fail (verification failed)",
                    "bank.test",
                    "s1",
                    &header_changed,
                ),
                bank_spf,
                fails,
            ),
            &["X-Dmarc-Would-Reject: yes"],
        ),
        (
            "no key published",
            "x@bank.test",
            unpublished_signed.clone(),
            exact(
                signed(
                    "permerror (dns record not found)",
                    "bank.test",
                    "gone",
                    &unpublished_signed,
                ),
                bank_spf,
                fails,
            ),
            &["X-Dmarc-Would-Reject: yes"],
        ),
        (
            "expired",
            "x@bank.test",
            expiring.clone(),
            exact(
                signed("neutral (signature error)", "bank.test", "s1", &expiring),
                bank_spf,
                fails,
            ),
            &["X-Dmarc-Would-Reject: yes"],
        ),
        (
            "malformed signature",
            "x@bank.test",
            malformed,
            exact(
                String::new(),
                bank_spf,
                &format!("{fails}; dkim=permerror (malformed DKIM-Signature)"),
            ),
            &["X-Dmarc-Would-Reject: yes"],
        ),
        (
            "aligned by SPF only",
            "x@corp.test",
            message("boss@corp.test", "spf-aligned", "b"),
            exact(
                String::new(),
                "spf=pass (mx.example.test: domain of x@corp.test designates 127.0.0.1 as \
                 permitted sender) smtp.mailfrom=x@corp.test; arc=none smtp.remote-ip=127.0.0.1",
                "dmarc=pass header.from=corp.test policy.dmarc=quarantine",
            ),
            &[],
        ),
        (
            "signed by another domain",
            "x@other.test",
            other_signed.clone(),
            exact(
                signed("pass", "other.test", "s1", &other_signed),
                "spf=none (mx.example.test: no SPF records found for x@other.test) \
                 smtp.mailfrom=x@other.test; arc=none smtp.remote-ip=127.0.0.1",
                fails,
            ),
            &["X-Dmarc-Would-Reject: yes"],
        ),
    ];
    for (n, (name, sender, message, expected, tags)) in cases.iter().enumerate() {
        let (mail, data) = send(&proxy, sender, message).await;
        assert_eq!(mail, "250 2.1.0", "{name}");
        assert!(data.unwrap().starts_with("250 2.0.0"), "{name}");
        assert_eq!(&our_results(&backend, n).await, expected, "{name}");
        let delivered = String::from_utf8_lossy(&backend.messages()[n].data).into_owned();
        for tag in ["X-Signed-By-Bank: yes", "X-Dmarc-Would-Reject: yes"] {
            assert_eq!(
                delivered.contains(tag),
                tags.contains(&tag),
                "{name}: {tag} in\n{delivered}"
            );
        }
    }
}

/// The first eight characters of a message's DKIM signature (its `b=` tag,
/// white space removed), as RFC 8601 `header.b` names it.
fn header_b(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    let signature = text.split("DKIM-Signature:").nth(1).unwrap();
    let value = signature
        .split(';')
        .map(str::trim)
        .find_map(|tag| tag.strip_prefix("b="))
        .unwrap();
    value
        .chars()
        .filter(|c| !c.is_whitespace())
        .take(8)
        .collect()
}

/// Seals `message` as the mailing list `list` would after changing its subject:
/// the list verified the original (DKIM of the author) and records it in its
/// ARC set.
async fn forwarded_by_list(dns: &DnsServer, list: &Key, original: &[u8]) -> Vec<u8> {
    let verifier = verifier(dns);
    let parsed = AuthenticatedMessage::parse(original).unwrap();
    let dkim = verifier.verify_dkim(&parsed).await;
    assert!(dkim.iter().any(|o| o.result() == &DkimResult::Pass));
    let arc = verifier.verify_arc(&parsed).await;
    let results = AuthenticationResults::new(&list.domain)
        .with_dkim_results(&dkim, "bank.test")
        .with_arc_result(&arc, "192.0.2.10".parse().unwrap());
    let changed = String::from_utf8(original.to_vec())
        .unwrap()
        .replace("Subject: ", "Subject: [list] ")
        .into_bytes();
    let sealer = ArcSealer::from_key(list.ed25519())
        .domain(list.domain.clone())
        .selector(list.selector.clone())
        .headers(["From", "To", "Subject", "DKIM-Signature"]);
    let parsed_changed = AuthenticatedMessage::parse(&changed).unwrap();
    let set = sealer.seal(&parsed_changed, &results, &arc).unwrap();
    let mut out = set.to_header().into_bytes();
    out.extend_from_slice(&changed);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmarc_enforcement_refuses_quarantines_and_trusts_only_named_arc_sealers() {
    let backend = Backend::start(DataEnd::Strict).await;
    let dns = DnsServer::start().await;
    let keys = tempfile::tempdir().unwrap();
    let bank = Key::new(&dns, keys.path(), "bank.test", "s1", Algorithm::Ed25519);
    let list = Key::new(&dns, keys.path(), "lists.test", "s1", Algorithm::Ed25519);
    let stranger = Key::new(&dns, keys.path(), "stranger.test", "s1", Algorithm::Ed25519);
    dns.txt("_dmarc.bank.test", "v=DMARC1; p=reject");
    dns.txt("_dmarc.shop.test", "v=DMARC1; p=quarantine");
    dns.txt("_dmarc.org.test", "v=DMARC1; p=none; sp=reject");
    dns.txt("_dmarc.sampled.test", "v=DMARC1; p=reject; pct=0");
    dns.txt("_dmarc.relaxed.test", "v=DMARC1; p=none");
    let proxy = start(
        &backend,
        &dns,
        "dmarc_enforce = true\narc_trusted_sealers = [\"lists.test\"]",
        "",
    )
    .await;

    let forged = |from: &str, subject: &str| message(from, subject, "Urgent: pay now.");
    // p=reject: refused, naming DMARC; the archive keeps it.
    let (_, data) = send(&proxy, "x@spammer.test", &forged("ceo@bank.test", "forged")).await;
    assert_eq!(
        data.unwrap(),
        "550 5.7.1 Message rejected: it fails DMARC, and bank.test asks for such mail to be rejected"
    );
    // p=quarantine: the client hears 250, the archive holds it, nothing delivered.
    let (_, data) = send(&proxy, "x@spammer.test", &forged("shop@shop.test", "q")).await;
    assert!(data.unwrap().starts_with("250 2.0.0"));
    // sp=reject for a subdomain of an organization that publishes p=none.
    let (_, data) = send(&proxy, "x@spammer.test", &forged("it@mail.org.test", "sub")).await;
    assert!(data.unwrap().starts_with("550 5.7.1"), "sp=reject");
    // pct=0: no failing message gets p=reject; the next weaker policy applies.
    let (_, data) = send(&proxy, "x@spammer.test", &forged("a@sampled.test", "pct")).await;
    assert!(data.unwrap().starts_with("250 2.0.0"));
    // p=none: delivered, with the failure recorded.
    let (_, data) = send(&proxy, "x@spammer.test", &forged("a@relaxed.test", "none")).await;
    assert!(data.unwrap().starts_with("250 2.0.0"));
    assert_eq!(
        our_results(&backend, 0).await,
        "Authentication-Results: mx.example.test; spf=none (mx.example.test: no SPF records \
         found for x@spammer.test) smtp.mailfrom=x@spammer.test; arc=none \
         smtp.remote-ip=127.0.0.1; dmarc=fail (policy not aligned) header.from=relaxed.test \
         policy.dmarc=none"
    );

    // A list changed the bank's signed message: DMARC fails, but the trusted
    // list's ARC seal vouches for the original.
    let original = bank.sign(&message("ceo@bank.test", "minutes", "The minutes."));
    let via_list = forwarded_by_list(&dns, &list, &original).await;
    let (_, data) = send(&proxy, "bounce@lists.test", &via_list).await;
    assert!(data.unwrap().starts_with("250 2.0.0"), "trusted sealer");
    assert_eq!(
        our_results(&backend, 1).await,
        format!(
            "Authentication-Results: mx.example.test; dkim=fail (verification failed) \
             header.d=bank.test header.s=s1 header.b={}; spf=none (mx.example.test: no SPF \
             records found for bounce@lists.test) smtp.mailfrom=bounce@lists.test; arc=pass \
             smtp.remote-ip=127.0.0.1; dmarc=fail (policy not aligned) header.from=bank.test \
             policy.dmarc=reject",
            header_b(&original)
        )
    );
    // The same from a sealer not named: refused.
    let via_stranger = forwarded_by_list(&dns, &stranger, &original).await;
    let (_, data) = send(&proxy, "bounce@stranger.test", &via_stranger).await;
    assert!(data.unwrap().starts_with("550 5.7.1"), "untrusted sealer");
    // An ARC set changed after sealing fails, and vouches for nothing.
    let broken = String::from_utf8(via_list)
        .unwrap()
        .replace("The minutes.", "The minutes, changed.")
        .into_bytes();
    let (_, data) = send(&proxy, "bounce@lists.test", &broken).await;
    assert!(data.unwrap().starts_with("550 5.7.1"), "broken chain");

    proxy.wait_idle().await;
    assert_eq!(
        backend.messages().len(),
        2,
        "only p=none and the trusted list"
    );
    let archived = archive_list(&proxy, None).await;
    let by_dmarc: Vec<&str> = archived.lines().filter(|l| l.contains("dmarc")).collect();
    assert_eq!(by_dmarc.len(), 6, "{archived}");
    assert_eq!(
        by_dmarc
            .iter()
            .filter(|l| l.contains(" quarantined "))
            .count(),
        2,
        "{archived}"
    );
    assert_eq!(
        by_dmarc.iter().filter(|l| l.contains(" rejected ")).count(),
        4,
        "{archived}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_claiming_our_name_are_removed_and_other_results_kept() {
    let backend = Backend::start(DataEnd::Strict).await;
    let dns = DnsServer::start().await;
    let proxy = start(&backend, &dns, "", "").await;
    let forged = b"Authentication-Results: mx.example.test; dkim=pass header.d=bank.test;\r\n\
                   \tdmarc=pass header.from=bank.test\r\n\
                   Authentication-Results: (looks harmless) MX.EXAMPLE.TEST ; spf=pass\r\n\
                   Authentication-Results: relay.other.example; spf=pass smtp.mailfrom=x@bank.test\r\n\
                   From: ceo@bank.test\r\nTo: alice@example.test\r\nSubject: forged pass\r\n\r\nPay.\r\n";
    let (_, data) = send(&proxy, "x@spammer.test", forged).await;
    assert!(data.unwrap().starts_with("250 2.0.0"));
    let ours = our_results(&backend, 0).await;
    assert!(!ours.contains("=pass"), "{ours}");
    let all = results_fields(&backend.messages()[0].data);
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(
        all[1],
        "Authentication-Results: relay.other.example; spf=pass smtp.mailfrom=x@bank.test"
    );
}

/// Verifies `message` with Debian's dkimpy (a second implementation), the key
/// record given; true when its signatures verify.
fn dkimpy_verifies(message: &[u8], record: &str) -> bool {
    let script = format!(
        "import sys, dkim\n\
         record = {record:?}.encode()\n\
         msg = sys.stdin.buffer.read()\n\
         sys.exit(0 if dkim.verify(msg, dnsfunc=lambda name, timeout=5: record) else 1)\n"
    );
    run_python(&script, message).status.success()
}

fn run_python(script: &str, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    ensure_package("/usr/bin/python3 -c 'import dkim'", "python3-dkim");
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with dkimpy (Debian: python3-dkim)");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_mail_is_signed_not_verified_and_signatures_interoperate_with_dkimpy() {
    let backend = Backend::start(DataEnd::Strict).await;
    let dns = DnsServer::start().await;
    let keys = tempfile::tempdir().unwrap();
    // Our key, made as the administrator makes it.
    let key_file = keys.path().join("out.pem");
    let made = crate::cli::mailmoat(
        Path::new("/nonexistent/not-needed.toml"),
        &[
            "dkim",
            "keygen",
            "--domain",
            "Example.TEST",
            "--selector",
            "out",
            "--out",
            key_file.to_str().unwrap(),
        ],
    );
    assert!(made.status.success(), "{made:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let zone_line = String::from_utf8(made.stdout).unwrap();
    assert!(
        zone_line.starts_with("out._domainkey.example.test. IN TXT ( \"v=DKIM1; k=rsa; p="),
        "{zone_line}"
    );
    let record: String = zone_line.split('"').skip(1).step_by(2).collect();
    dns.txt("out._domainkey.example.test", &record);
    let again = crate::cli::mailmoat(
        Path::new("/nonexistent/not-needed.toml"),
        &[
            "dkim",
            "keygen",
            "--domain",
            "example.test",
            "--selector",
            "out",
            "--out",
            key_file.to_str().unwrap(),
        ],
    );
    assert!(
        !again.status.success(),
        "an existing key is never overwritten"
    );
    struct Ours {
        record: String,
    }
    let ours = Ours { record };
    // A sender signing with dkimpy and an RSA key from `mailmoat dkim keygen`.
    let theirs = generate(Algorithm::Rsa2048).unwrap();
    dns.txt("py._domainkey.python.test", &theirs.record);
    let extra = format!(
        "[[dkim_sign]]\ndomain = \"example.test\"\nselector = \"out\"\nkey_file = \"{}\"\n",
        key_file.display()
    );
    let proxy = start_with(&backend, &dns, "", "", &extra).await;

    // Outbound from a trusted client: signed, no Authentication-Results of ours.
    let outbound = message("alice@example.test", "outbound", "Our news.");
    let (_, data) = send_from("127.0.0.2", &proxy, "alice@example.test", &outbound).await;
    assert!(data.unwrap().starts_with("250 2.0.0"));
    let got = backend.wait_for(1).await;
    let (_, delivered) = strip_received(&got[0].data);
    assert!(results_fields(delivered).is_empty());
    let text = String::from_utf8_lossy(delivered);
    assert!(
        text.starts_with("DKIM-Signature: ") && text.contains("d=example.test"),
        "{text}"
    );
    let parsed = AuthenticatedMessage::parse(delivered).unwrap();
    let verified = verifier(&dns).verify_dkim(&parsed).await;
    assert_eq!(verified[0].result(), &DkimResult::Pass, "mail-auth");
    assert!(dkimpy_verifies(delivered, &ours.record), "dkimpy:\n{text}");
    let mut tampered = delivered.to_vec();
    tampered.extend_from_slice(b"P.S. added later\r\n");
    assert!(
        !dkimpy_verifies(&tampered, &theirs.record),
        "dkimpy accepts anything"
    );

    // Inbound, signed by dkimpy: mailmoat verifies it.
    let script = format!(
        "import sys, dkim\n\
         key = {:?}.encode()\n\
         msg = sys.stdin.buffer.read()\n\
         sys.stdout.buffer.write(dkim.sign(msg, b'py', b'python.test', key, include_headers=[b'from', b'to', b'subject']) + msg)\n",
        theirs.private_pem
    );
    let signed = run_python(&script, &message("news@python.test", "py", "From dkimpy."));
    assert!(signed.status.success());
    let (_, data) = send(&proxy, "news@python.test", &signed.stdout).await;
    assert!(data.unwrap().starts_with("250 2.0.0"));
    let header = our_results(&backend, 1).await;
    // dkimpy signs with i=@python.test, which the result names.
    assert!(
        header.contains("dkim=pass") && header.contains("header.i=@python.test"),
        "{header}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_rules_changed_carries_an_arc_seal_that_validates() {
    let backend = Backend::start(DataEnd::Strict).await;
    let dns = DnsServer::start().await;
    let keys = tempfile::tempdir().unwrap();
    let bank = Key::new(&dns, keys.path(), "bank.test", "s1", Algorithm::Ed25519);
    let seal = Key::new(&dns, keys.path(), "example.test", "arc", Algorithm::Rsa2048);
    dns.txt("_dmarc.bank.test", "v=DMARC1; p=reject");
    let rules = r#"
[[rule]]
name = "strip-programs"
when.attachment_extension = "exe"
action = "strip_attachments"
"#;
    let auth = format!(
        "arc_seal = {{ domain = \"example.test\", selector = \"arc\", key_file = \"{}\" }}",
        seal.path.display()
    );
    let proxy = start(&backend, &dns, &auth, rules).await;
    let original = format!(
        "From: ceo@bank.test\r\nTo: alice@example.test\r\nSubject: statement\r\n\
         Message-ID: <statement@test>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain\r\n\r\nYour statement.\r\n\
         --b1\r\nContent-Type: application/octet-stream; name=\"run.exe\"\r\n\
         Content-Disposition: attachment; filename=\"run.exe\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--b1--\r\n",
        base64(b"MZ\x90\x00 a program")
    );
    let signed = bank.sign(original.as_bytes());
    let (_, data) = send(&proxy, "x@bank.test", &signed).await;
    assert!(data.unwrap().starts_with("250 2.0.0"));
    let got = backend.wait_for(1).await;
    let (_, delivered) = strip_received(&got[0].data);
    let text = String::from_utf8_lossy(delivered);
    assert!(!text.contains(&base64(b"MZ\x90\x00 a program")), "stripped");
    // Our own header records the signature as it was before the change.
    let ours = our_results(&backend, 0).await;
    assert!(
        ours.starts_with(&format!(
            "Authentication-Results: mx.example.test; dkim=pass header.d=bank.test header.s=s1 header.b={}; ",
            header_b(&signed)
        )) && ours.contains("dmarc=pass"),
        "{ours}"
    );

    // As the backend (Microsoft 365 trusting this sealer) reads it: the author's
    // signature broke, the seal holds and records that it passed here.
    let verifier = verifier(&dns);
    let parsed = AuthenticatedMessage::parse(delivered).unwrap();
    let dkim = verifier.verify_dkim(&parsed).await;
    assert_ne!(dkim[0].result(), &DkimResult::Pass, "the change broke it");
    let arc = verifier.verify_arc(&parsed).await;
    assert_eq!(arc.result(), &DkimResult::Pass, "{text}");
    let newest = arc.sets().last().unwrap();
    assert_eq!(newest.seal.header.d, "example.test");
    assert_eq!(newest.seal.header.i, 1);
    let recorded = text
        .split("\r\n")
        .find(|l| l.starts_with("ARC-Authentication-Results: i=1; mx.example.test;"))
        .unwrap_or_else(|| panic!("no ARC-Authentication-Results:\n{text}"));
    let unfolded: String = text
        .split("ARC-Authentication-Results: ")
        .nth(1)
        .unwrap()
        .split("\r\nARC-")
        .next()
        .unwrap()
        .replace("\r\n\t", " ");
    assert!(
        unfolded.contains("dkim=pass")
            && unfolded.contains("header.d=bank.test")
            && unfolded.contains("dmarc=pass"),
        "{recorded}: {unfolded}"
    );
    // A message nobody changed goes unsealed.
    let (_, data) = send(
        &proxy,
        "x@bank.test",
        &bank.sign(&message("ceo@bank.test", "plain", "b")),
    )
    .await;
    assert!(data.unwrap().starts_with("250 2.0.0"));
    let got = backend.wait_for(2).await;
    assert!(!String::from_utf8_lossy(&got[1].data).contains("ARC-Seal:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_rules_takes_results_as_options_or_from_a_fixture() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients.txt"), RECIPIENTS).unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("rules/50-auth.toml"),
        r#"
[[rule]]
name = "spf-fail-at-mail"
when.spf = "fail"
action = "reject"
reply = "550 5.7.23 SPF says no"

[[rule]]
name = "forged-bank"
when.dmarc = "fail"
when.dmarc_policy = ["quarantine", "reject"]
action = "quarantine"

[[rule]]
name = "bank-signed"
when.dkim_domain = "bank.test"
action = "tag"
subject_prefix = "[bank]"
"#,
    )
    .unwrap();
    let backend = Backend::start(DataEnd::Strict).await;
    let text = base_config(backend.addr, RELAY, "").replace(
        "[sender_auth]\nspf = false\ndkim = false\ndmarc = false\narc = false\n",
        "[sender_auth]\n",
    );
    let config = dir.path().join("mailmoat.toml");
    std::fs::write(&config, text).unwrap();
    let eml = dir.path().join("m.eml");
    std::fs::write(&eml, message("ceo@bank.test", "hello", "b")).unwrap();
    let trial = |extra: &[&str]| {
        let mut args = vec![
            "test-rules",
            eml.to_str().unwrap(),
            "--from",
            "x@bank.test",
            "--to",
            "alice@example.test",
        ];
        args.extend_from_slice(extra);
        let out = crate::cli::mailmoat(&config, &args);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let refused = trial(&["--spf", "fail"]);
    assert!(refused.contains("550 5.7.23 SPF says no"), "{refused}");
    let quarantined = trial(&["--dmarc", "fail", "--dmarc-policy", "reject"]);
    assert!(quarantined.contains("forged-bank"), "{quarantined}");
    assert!(quarantined.contains("quarantine"), "{quarantined}");
    let tagged = trial(&["--dkim-domain", "bank.test", "--dmarc", "pass"]);
    assert!(
        tagged.contains("bank-signed") && !tagged.contains("forged-bank"),
        "{tagged}"
    );
    assert!(
        tagged.contains(
            "sender authentication: spf=none dkim=pass dmarc=pass arc=none dkim_domain=bank.test"
        ),
        "{tagged}"
    );
    let wrong = trial(&["--dmarc", "failed"]);
    assert!(
        wrong.contains("dmarc 'failed' is not a result; write one of pass"),
        "{wrong}"
    );

    // The same facts from a fixture's [auth] table.
    let fixtures = dir.path().join("fixtures");
    std::fs::create_dir(&fixtures).unwrap();
    std::fs::write(
        fixtures.join("forged.eml"),
        message("ceo@bank.test", "f", "b"),
    )
    .unwrap();
    std::fs::write(
        fixtures.join("forged.toml"),
        "from = \"x@bank.test\"\nto = [\"alice@example.test\"]\nexpect = \"quarantine\"\n\
         rules = [\"forged-bank\"]\n\n[auth]\ndmarc = \"fail\"\ndmarc_policy = \"reject\"\n",
    )
    .unwrap();
    let checked = trial_fixtures(&config, &fixtures);
    assert!(checked.starts_with("ok "), "{checked}");
    std::fs::write(
        fixtures.join("forged.toml"),
        "from = \"x@bank.test\"\nto = [\"alice@example.test\"]\nexpect = \"quarantine\"\n\n[auth]\ndmarc = \"failed\"\n",
    )
    .unwrap();
    let broken = trial_fixtures(&config, &fixtures);
    assert!(
        broken.contains("forged.toml:5: [auth]: dmarc 'failed' is not a result"),
        "{broken}"
    );
}

fn trial_fixtures(config: &Path, dir: &Path) -> String {
    let out = crate::cli::mailmoat(config, &["test-rules", "--fixtures", dir.to_str().unwrap()]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .filter(|l| !l.contains(" rule(s) from "))
        .collect::<Vec<_>>()
        .join("\n")
}
