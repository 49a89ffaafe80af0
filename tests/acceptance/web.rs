//! The recipients' quarantine: its web pages over plain HTTP (links, form
//! tokens, sessions, rate limits), the digests, and the sender lists in the
//! pipeline. The real browser's part is in `browser.rs`.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

pub const SECRET: &str = "web-secret-0123456789abcdef";
pub const ADMIN_PASSWORD: &str = "admin-password-42";

pub const RULES: &str = r#"
[[rule]]
name = "hold-for-review"
when.subject = "[hold]"
action = "quarantine"
"#;

/// A proxy with the quarantine's pages, a name server (friend.test's SPF
/// passes from loopback, stranger.test has none), greylisting for untrusted
/// clients (127.0.0.1 is trusted: the tests' mail comes in without waiting),
/// an administrator `root`, and a rule holding "[hold]" subjects.
pub struct Quarantine {
    pub proxy: Proxy,
    pub backend: Backend,
    /// Kept running for the proxy's lookups.
    pub _dns: DnsServer,
    pub web: SocketAddr,
}

impl Quarantine {
    pub async fn start(extra: &str) -> Quarantine {
        let backend = Backend::start(DataEnd::Strict).await;
        let dns = DnsServer::start().await;
        dns.txt("friend.test", "v=spf1 ip4:127.0.0.0/8 -all");
        let web = unused_addr().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("recipients.txt"), RECIPIENTS).unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        std::fs::write(dir.path().join("rules/50-test.toml"), RULES).unwrap();
        let hash = mailmoat::policy::auth::hash_password(ADMIN_PASSWORD).unwrap();
        std::fs::write(dir.path().join("users.txt"), format!("root:{hash}:admin\n")).unwrap();
        let tables = format!(
            "[web]\nlisten = \"{web}\"\nbase_url = \"http://{web}\"\nsecret = \"{SECRET}\"\n\n\
             [digest]\nenabled = true\nevery = \"1day\"\nfrom = \"quarantine@example.test\"\n\n\
             [greylist]\nenabled = true\ndelay = \"1h\"\nskip_spf_pass = false\nipv4_prefix = 32\n\n\
             [auth]\nusers_file = \"users.txt\"\nfailure_delay = \"10ms\"\n\n{extra}"
        );
        let text = dns
            .serving(&base_config(
                backend.addr,
                "trusted_networks = [\"127.0.0.1/32\"]",
                &tables,
            ))
            .replace(
                "[sender_auth]\nspf = false\n",
                "[sender_auth]\nspf = true\n",
            );
        let proxy = Proxy::start_in(dir, &text).await;
        assert_eq!(proxy.server.as_ref().unwrap().web_addr, Some(web));
        Quarantine {
            proxy,
            backend,
            _dns: dns,
            web,
        }
    }

    /// The same with a real clamd that quarantines what carries the test
    /// signature (kept running beside it).
    pub async fn with_clamd() -> (crate::scanning::Clamd, Quarantine) {
        let clamd = crate::scanning::Clamd::start().await;
        let q = Quarantine::start(&format!(
            "[antivirus]\nclamd = \"{}\"\non_virus = \"quarantine\"\ntimeout = \"5s\"\n",
            clamd.addr
        ))
        .await;
        (clamd, q)
    }

    /// Sends a message from 127.0.0.1 (trusted); the reply to the end of DATA.
    pub async fn send(&self, from: &str, to: &str, subject: &str) -> String {
        let mut client = self.proxy.client().await;
        let message = format!(
            "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{}@test>\r\n\r\nHello {to},\r\nthis is \"{subject}\".\r\n",
            subject.len()
        );
        let reply = client.send_mail(from, &[to], message.as_bytes()).await;
        format!("{} {}", reply.code, reply.text)
    }

    /// The administrator's session cookie.
    pub async fn admin(&self) -> String {
        let answer = sign_in(self.web, "root", ADMIN_PASSWORD).await;
        assert_eq!(answer.status, 303, "{answer:?}");
        answer.cookie()
    }

    /// The archive id of the item with this subject (from the administrator's list).
    pub async fn item(&self, subject: &str) -> String {
        let cookie = self.admin().await;
        let list = http(self.web, "GET", "/", Some(&cookie), &[]).await;
        let shown = subject.replace('\'', "&#39;");
        let at = list
            .body
            .find(&format!("\">{shown}</a>"))
            .unwrap_or_else(|| panic!("no item '{subject}': {}", list.body));
        let start = list.body[..at].rfind("/item/").unwrap() + "/item/".len();
        list.body[start..at].to_string()
    }

    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        run_cli(&self.proxy.config_path(), args)
    }

    /// Sends the digests now and waits until the backend has them; the
    /// digests received, by recipient.
    pub async fn digests(&self, args: &[&str]) -> Vec<Received> {
        let before = self.backend.messages().len();
        let mut command = vec!["digest", "send"];
        command.extend_from_slice(args);
        let (ok, text) = self.cli(&command);
        assert!(ok, "{text}");
        let sent = text
            .lines()
            .filter(|l| l.starts_with("digest queued"))
            .count();
        self.proxy.wait_idle().await;
        let all = self.backend.wait_for(before + sent).await;
        all[before..].to_vec()
    }
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The session cookie it sets, as a `Cookie:` value.
    pub fn cookie(&self) -> String {
        self.header("set-cookie")
            .and_then(|c| c.split(';').next())
            .unwrap_or_else(|| panic!("no cookie: {self:?}"))
            .to_string()
    }

    /// The value of a hidden field of a form on the page.
    pub fn field(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let at = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no field {name}: {}", self.body))
            + marker.len();
        self.body[at..].split('"').next().unwrap().to_string()
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One request with `Connection: close`; `form` is sent url-encoded.
pub async fn http(
    web: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: &[(&str, &str)],
) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(web).await.unwrap();
    let body: String = form
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n");
    if let Some(cookie) = cookie {
        request.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    if method == "POST" {
        request.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Signs in on the page's form (its form token taken from the page first).
pub async fn sign_in(web: SocketAddr, user: &str, password: &str) -> Answer {
    let form = http(web, "GET", "/", None, &[]).await;
    http(
        web,
        "POST",
        "/login",
        None,
        &[
            ("csrf", &form.field("csrf")),
            ("user", user),
            ("password", password),
        ],
    )
    .await
}

/// The links of a digest (or link mail), from its text part.
pub fn links(message: &Received) -> Vec<String> {
    let text = String::from_utf8_lossy(&message.data);
    text.split_whitespace()
        .filter(|w| w.starts_with("http://") && !w.contains('"'))
        .map(str::to_string)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// `http://host/link?t=…` → `/link?t=…`.
pub fn path_of(link: &str) -> String {
    let rest = link.strip_prefix("http://").unwrap();
    rest[rest.find('/').unwrap()..].to_string()
}

/// Signs in through an "open" link; the session cookie.
pub async fn signed_in(web: SocketAddr, link: &str) -> String {
    let page = http(web, "GET", &path_of(link), None, &[]).await;
    assert_eq!(page.status, 200, "{page:?}");
    let answer = http(
        web,
        "POST",
        "/link",
        None,
        &[("t", &page.field("t")), ("csrf", &page.field("csrf"))],
    )
    .await;
    assert_eq!(answer.status, 303, "{answer:?}");
    answer.cookie()
}

fn digest_subjects(message: &Received) -> Vec<String> {
    let text = String::from_utf8_lossy(&message.data);
    let mut subjects: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("- "))
        .filter_map(|l| l.split('"').nth(1).map(str::to_string))
        .collect();
    subjects.sort();
    subjects
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_recipient_gets_one_digest_of_their_own_items_and_none_without_news() {
    let q = Quarantine::start("").await;
    for (to, subject) in [
        ("alice@example.test", "[hold] one"),
        ("alice@example.test", "[hold] two"),
        ("alice@example.test", "[hold] three"),
        ("bob@example.test", "[hold] for bob"),
    ] {
        assert!(
            q.send("someone@friend.test", to, subject)
                .await
                .starts_with("250")
        );
    }
    let digests = q.digests(&[]).await;
    assert_eq!(digests.len(), 2, "one digest each");
    let to = |who: &str| {
        digests
            .iter()
            .find(|d| d.rcpt_to == [who])
            .unwrap_or_else(|| panic!("no digest for {who}"))
    };
    assert_eq!(
        digest_subjects(to("alice@example.test")),
        ["[hold] one", "[hold] three", "[hold] two"]
    );
    assert_eq!(digest_subjects(to("bob@example.test")), ["[hold] for bob"]);
    let alice = String::from_utf8_lossy(&to("alice@example.test").data).to_string();
    assert!(
        alice.contains("Content-Type: text/html"),
        "an HTML alternative"
    );
    assert!(alice.contains("Subject: Mail held for you: 3 message(s)"));
    // Nothing new: no digest.
    let (ok, text) = q.cli(&["digest", "send"]);
    assert!(ok, "{text}");
    assert_eq!(text.trim(), "nothing new is held: no digest sent");
    q.proxy.wait_idle().await;
    assert_eq!(q.backend.messages().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_act_only_by_post_with_their_token_once_and_for_their_recipient() {
    let q = Quarantine::start("").await;
    q.send(
        "someone@friend.test",
        "alice@example.test",
        "[hold] alice's",
    )
    .await;
    q.send("someone@friend.test", "bob@example.test", "[hold] bob's")
        .await;
    let digests = q.digests(&[]).await;
    let links_of = |who: &str| links(digests.iter().find(|d| d.rcpt_to == [who]).unwrap());
    let alice = links_of("alice@example.test");
    let bob = links_of("bob@example.test");
    let mut release_link = None;
    for link in &alice {
        let page = http(q.web, "GET", &path_of(link), None, &[]).await;
        assert_eq!(page.status, 200);
        if page.body.contains("Release it") {
            release_link = Some(link.clone());
        }
    }
    let release_link = release_link.expect("a release link");
    let delivered_before = q.backend.messages().len();

    // A GET (a link scanner) shows the question and changes nothing.
    let page = http(q.web, "GET", &path_of(&release_link), None, &[]).await;
    assert!(
        page.body
            .contains("Release “[hold] alice&#39;s” to alice@example.test?"),
        "{}",
        page.body
    );
    q.proxy.wait_idle().await;
    assert_eq!(q.backend.messages().len(), delivered_before);

    let token = page.field("t");
    let csrf = page.field("csrf");
    // No form token, another link's form token, a changed token: refused.
    let bob_page = http(q.web, "GET", &path_of(&bob[0]), None, &[]).await;
    for (t, c) in [
        (token.as_str(), ""),
        (token.as_str(), bob_page.field("csrf").as_str()),
        (&token[..token.len() - 2], csrf.as_str()),
    ] {
        let answer = http(q.web, "POST", "/link", None, &[("t", t), ("csrf", c)]).await;
        assert_eq!(answer.status, 403, "{answer:?}");
    }
    // An expired token (signed with the same secret, expired a second ago).
    let signer = mailmoat::web::signing::Signer::new(SECRET);
    let old = signer.sign(
        &["link", "alice@example.test", "open"],
        mailmoat::archive::unix_now() - 1,
    );
    let answer = http(q.web, "GET", &format!("/link?t={old}"), None, &[]).await;
    assert_eq!(answer.status, 410);
    let posted = http(
        q.web,
        "POST",
        "/link",
        None,
        &[("t", &old), ("csrf", &signer.csrf(&old))],
    )
    .await;
    assert_eq!(
        posted.status, 410,
        "an expired link acts on nothing, even with its form token"
    );
    assert!(
        answer.body.contains("This link has expired") && answer.body.contains("Send me a new link")
    );
    q.proxy.wait_idle().await;
    assert_eq!(
        q.backend.messages().len(),
        delivered_before,
        "nothing released so far"
    );

    // The right POST releases; the same POST again delivers nothing more.
    let answer = http(
        q.web,
        "POST",
        "/link",
        None,
        &[("t", &token), ("csrf", &csrf)],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer.body.contains("Released: delivered as"),
        "{}",
        answer.body
    );
    let again = http(
        q.web,
        "POST",
        "/link",
        None,
        &[("t", &token), ("csrf", &csrf)],
    )
    .await;
    assert_eq!(again.status, 409);
    assert!(again.body.contains("already released"), "{}", again.body);
    q.proxy.wait_idle().await;
    let delivered: Vec<Received> = q.backend.messages()[delivered_before..].to_vec();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].rcpt_to, ["alice@example.test"]);
    assert!(String::from_utf8_lossy(&delivered[0].data).contains("Subject: [hold] alice's"));

    // alice's session sees nothing of bob's: 403 to look or to act.
    let open = alice
        .iter()
        .find(|l| *l != &release_link)
        .expect("an open link");
    let cookie = signed_in(q.web, open).await;
    let bobs = q.item("[hold] bob's").await;
    let look = http(q.web, "GET", &format!("/item/{bobs}"), Some(&cookie), &[]).await;
    assert_eq!(look.status, 403);
    let list = http(q.web, "GET", "/", Some(&cookie), &[]).await;
    assert!(
        list.body.contains("alice&#39;s") && !list.body.contains("bob&#39;s"),
        "{}",
        list.body
    );
    let csrf = list.field("csrf");
    let act = http(
        q.web,
        "POST",
        &format!("/item/{bobs}"),
        Some(&cookie),
        &[("csrf", &csrf), ("action", "release")],
    )
    .await;
    assert_eq!(act.status, 403);
    // The administrator's trace by the queue id the sender was told.
    let admin = q.admin().await;
    let traced = http(q.web, "GET", &format!("/?id={bobs}"), Some(&admin), &[]).await;
    assert!(
        traced.body.contains("[hold] bob&#39;s") && !traced.body.contains("[hold] alice&#39;s"),
        "{}",
        traced.body
    );
    // The cookie is HttpOnly and SameSite=Strict.
    let set = http(q.web, "GET", &path_of(open), None, &[]).await;
    let answer = http(
        q.web,
        "POST",
        "/link",
        None,
        &[("t", &set.field("t")), ("csrf", &set.field("csrf"))],
    )
    .await;
    let cookie_header = answer.header("set-cookie").unwrap();
    assert!(
        cookie_header.contains("HttpOnly") && cookie_header.contains("SameSite=Strict"),
        "{cookie_header}"
    );
    q.proxy.wait_idle().await;
    assert_eq!(
        q.backend.messages().len(),
        delivered_before + 1,
        "nothing of bob's went out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_link_answers_alike_for_everyone_and_wrong_sign_ins_are_slowed_down() {
    let q = Quarantine::start("").await;
    let ask = async |address: &str| {
        let form = http(q.web, "GET", "/", None, &[]).await;
        http(
            q.web,
            "POST",
            "/send-link",
            None,
            &[("csrf", &form.field("csrf")), ("address", address)],
        )
        .await
    };
    let known = ask("alice@example.test").await;
    let unknown = ask("nobody@example.test").await;
    assert_eq!(known.status, unknown.status);
    assert_eq!(known.body, unknown.body);
    assert!(
        known
            .body
            .contains("a link to its quarantine is on its way")
    );
    let mut headers = [&known.headers, &unknown.headers]
        .map(|h| h.iter().filter(|(n, _)| n != "date").collect::<Vec<_>>());
    headers.iter_mut().for_each(|h| h.sort());
    assert_eq!(headers[0], headers[1]);
    // Only the existing address got mail; asking again within the hour sends nothing.
    ask("alice@example.test").await;
    let links = q.backend.wait_for(1).await;
    q.proxy.wait_idle().await;
    assert_eq!(q.backend.messages().len(), 1);
    assert_eq!(links[0].rcpt_to, ["alice@example.test"]);
    assert!(String::from_utf8_lossy(&links[0].data).contains("Subject: Your quarantine link"));

    // Twenty wrong passwords in a minute: after ten, refused without trying.
    // Half of them for a name that has no account: the same answer.
    let mut statuses = Vec::new();
    let mut bodies = std::collections::BTreeSet::new();
    for n in 0..20 {
        let user = if n % 2 == 0 { "root" } else { "nobody" };
        let answer = sign_in(q.web, user, "guess").await;
        statuses.push(answer.status);
        if answer.status == 401 {
            bodies.insert(answer.body.replace(&answer.field("csrf"), "TOKEN"));
        }
    }
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert!(bodies.first().unwrap().contains("Wrong name or password."));
    assert_eq!(&statuses[..10], [401; 10]);
    assert_eq!(&statuses[10..], [429; 10]);
    let right = sign_in(q.web, "root", ADMIN_PASSWORD).await;
    assert_eq!(
        right.status, 429,
        "even the right password waits out the minute"
    );
    // A form posted without its token is refused.
    let bare = http(
        q.web,
        "POST",
        "/login",
        None,
        &[("user", "root"), ("password", ADMIN_PASSWORD)],
    )
    .await;
    assert_eq!(bare.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_sender_is_spared_greylisting_only_when_its_spf_passes() {
    let q = Quarantine::start("").await;
    for sender in ["friend.test", "stranger.test"] {
        let (ok, text) = q.cli(&["lists", "allow", sender, "--for", "alice@example.test"]);
        assert!(ok, "{text}");
    }
    let (ok, text) = q.cli(&["lists", "block", "spam.test"]);
    assert!(ok, "{text}");
    let rcpt = async |ip: &str, from: &str, to: &str| {
        let mut client = Client::connect_from(ip.parse().unwrap(), q.proxy.addr).await;
        client.hello().await;
        client.expect(&format!("MAIL FROM:<{from}>"), "250").await;
        client.command(&format!("RCPT TO:<{to}>")).await.codes()
    };
    // SPF passes for friend.test: alice's allow spares greylisting; bob has
    // no such entry and is greylisted.
    assert_eq!(
        rcpt("127.0.0.9", "a@friend.test", "alice@example.test").await,
        "250 2.1.5"
    );
    assert!(
        rcpt("127.0.0.9", "a@friend.test", "bob@example.test")
            .await
            .starts_with("45")
    );
    // stranger.test has no SPF (and no DKIM at RCPT): allowed, spared nothing.
    assert!(
        rcpt("127.0.0.9", "a@stranger.test", "alice@example.test")
            .await
            .starts_with("45")
    );
    // The administrators' block refuses everyone's mail from spam.test.
    assert_eq!(
        rcpt("127.0.0.9", "x@spam.test", "alice@example.test").await,
        "550 5.7.1"
    );
    let (_, shown) = q.cli(&["lists", "show"]);
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 3, "{shown}");
    assert!(
        lines[0].starts_with("*") && lines[0].contains("block  @spam.test"),
        "{shown}"
    );
    assert!(
        lines[1].contains("alice@example.test  allow  @friend.test"),
        "{shown}"
    );
}

/// `tls = true` serves the pages over HTTPS with the `[tls]` certificate;
/// plain HTTP anywhere but loopback is refused by `check`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_tls_certificate_and_plain_http_only_on_loopback() {
    let backend = Backend::start(DataEnd::Strict).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = test_certificate();
    std::fs::write(dir.path().join("cert.pem"), &cert).unwrap();
    std::fs::write(dir.path().join("key.pem"), &key).unwrap();
    std::fs::write(dir.path().join("recipients.txt"), RECIPIENTS).unwrap();
    let web = unused_addr().await;
    let text = base_config(
        backend.addr,
        "trusted_networks = []",
        &format!(
            "[tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\n\n[web]\nlisten = \"{web}\"\n\
             base_url = \"https://mx.example.test:{}\"\nsecret = \"{SECRET}\"\ntls = true\n",
            web.port()
        ),
    );
    let proxy = Proxy::start_in(dir, &text).await;
    let stream = tokio::net::TcpStream::connect(web).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("mx.example.test").unwrap();
    let mut tls = tls_connector(cert.as_bytes())
        .connect(name, stream)
        .await
        .expect("a TLS handshake with the [tls] certificate");
    tls.write_all(b"GET / HTTP/1.1\r\nHost: mx.example.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("Send me my link"));
    // Plain HTTP on the TLS port gets no page.
    let mut plain = tokio::net::TcpStream::connect(web).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    drop(proxy);

    let config = tempfile::tempdir().unwrap();
    let path = config.path().join("mailmoat.toml");
    std::fs::write(
        &path,
        format!(
            "[relay]\nhosted_domains = [\"example.test\"]\n\n[web]\nlisten = \"0.0.0.0:8025\"\n\
             base_url = \"https://q.example.test\"\nsecret = \"{SECRET}\"\n"
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mailmoat"))
        .arg("--config")
        .arg(&path)
        .arg("check")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        err.contains("mailmoat.toml:5: web.listen = \"0.0.0.0:8025\" without web.tls: plain HTTP is allowed only on loopback"),
        "{err}"
    );
}

/// Two instances sharing Redis: a sender list set on one holds on the other,
/// and sign-in failures on one count on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_redis_share_the_lists_and_the_sign_in_limit() {
    let redis = crate::parts::RedisServer::start().await;
    let shared = format!(
        "[shared]\nredis = \"{}\"\ntimeout = \"500ms\"\n",
        redis.url()
    );
    let a = Quarantine::start(&shared).await;
    let b = Quarantine::start(&shared).await;
    let (ok, text) = a.cli(&["lists", "block", "spam.test", "--for", "alice@example.test"]);
    assert!(ok, "{text}");
    let mut client = b.proxy.client().await;
    client.expect("MAIL FROM:<x@spam.test>", "250").await;
    client
        .expect("RCPT TO:<alice@example.test>", "550 5.7.1")
        .await;
    client.expect("RCPT TO:<bob@example.test>", "250").await;

    // A session works on every instance; signed out on one, on none.
    let cookie = a.admin().await;
    let on_b = http(b.web, "GET", "/", Some(&cookie), &[]).await;
    assert!(on_b.body.contains("Every message held"), "{}", on_b.body);
    let out = http(
        a.web,
        "POST",
        "/logout",
        Some(&cookie),
        &[("csrf", &on_b.field("csrf"))],
    )
    .await;
    assert_eq!(out.status, 303, "{out:?}");
    let replayed = http(b.web, "GET", "/", Some(&cookie), &[]).await;
    assert!(
        !replayed.body.contains("Every message held"),
        "{}",
        replayed.body
    );

    let wrong = async |q: &Quarantine| sign_in(q.web, "root", "guess").await.status;
    for _ in 0..10 {
        assert_eq!(wrong(&a).await, 401);
    }
    assert_eq!(
        wrong(&b).await,
        429,
        "the other instance counts the failures too"
    );
}

/// The web listener's own limits: past `max_connections` a connection is
/// closed at once; an idle one is closed after `request_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_have_their_own_connection_limit_and_timeout() {
    let q = Quarantine::start("").await;
    let text = std::fs::read_to_string(q.proxy.config_path()).unwrap();
    drop(q);
    let web = unused_addr().await;
    let limited = text
        .lines()
        .map(|l| {
            if l.starts_with("listen = \"127.0.0.1:") && !l.contains("listen = [") {
                format!("listen = \"{web}\"\nmax_connections = 2\nrequest_timeout = \"1s\"")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients.txt"), RECIPIENTS).unwrap();
    let hash = mailmoat::policy::auth::hash_password(ADMIN_PASSWORD).unwrap();
    std::fs::write(dir.path().join("users.txt"), format!("root:{hash}:admin\n")).unwrap();
    let proxy = Proxy::start_in(dir, &limited).await;
    assert_eq!(proxy.server.as_ref().unwrap().web_addr, Some(web));
    let idle_a = tokio::net::TcpStream::connect(web).await.unwrap();
    let idle_b = tokio::net::TcpStream::connect(web).await.unwrap();
    // The third is closed without an answer while two are open.
    let mut third = tokio::net::TcpStream::connect(web).await.unwrap();
    let _ = third
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let _ = third.read_to_end(&mut answer).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    // The idle ones are closed after the request timeout, and room is made.
    for mut idle in [idle_a, idle_b] {
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        let _ = idle.read_to_end(&mut rest).await;
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
    let page = http(web, "GET", "/", None, &[]).await;
    assert_eq!(page.status, 200);
}

/// The items an administrator's search lists, by subject.
async fn found(q: &Quarantine, cookie: &str, query: &[(&str, &str)]) -> (Vec<String>, String) {
    let query: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    let page = http(
        q.web,
        "GET",
        &format!("/?{}", query.join("&")),
        Some(cookie),
        &[],
    )
    .await;
    assert_eq!(page.status, 200, "{page:?}");
    let mut subjects: Vec<String> = page
        .body
        .split("<a href=\"/item/")
        .skip(1)
        .filter_map(|rest| Some(rest.split_once("\">")?.1.split_once("</a>")?.0.to_string()))
        .collect();
    subjects.sort();
    (subjects, page.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_administrators_trace_finds_items_by_every_field_and_a_date_range() {
    let q = Quarantine::start("").await;
    q.send("ann@friend.test", "alice@example.test", "[hold] invoice 7")
        .await;
    q.send("ben@stranger.test", "bob@example.test", "[hold] report")
        .await;
    let (ok, text) = q.cli(&["lists", "block", "spam@stranger.test"]);
    assert!(ok, "{text}");
    // The administrators' block refuses for the site, not for the recipient.
    let mut client = q.proxy.client().await;
    client.expect("MAIL FROM:<spam@stranger.test>", "250").await;
    let refused = client
        .expect("RCPT TO:<alice@example.test>", "550 5.7.1")
        .await;
    assert!(
        refused.text.contains("Sender blocked by the site's policy"),
        "{refused:?}"
    );
    let cookie = q.admin().await;
    let invoice = q.item("[hold] invoice 7").await;
    // The local days the page shows the items on (two, if the test runs
    // across midnight): "since the first until the last" holds them all,
    // "until the day before the first" none.
    let list = http(q.web, "GET", "/", Some(&cookie), &[]).await;
    let days: std::collections::BTreeSet<chrono::NaiveDate> = list
        .body
        .split("<tr><td>")
        .skip(1)
        .filter_map(|row| chrono::NaiveDate::parse_from_str(row.get(..10)?, "%Y-%m-%d").ok())
        .collect();
    assert!((1..=2).contains(&days.len()), "{}", list.body);
    let (first, last) = (days.first().unwrap(), days.last().unwrap());
    let today = last.format("%Y-%m-%d").to_string();
    let since = first.format("%Y-%m-%d").to_string();
    let yesterday = (*first - chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let both = ["[hold] invoice 7", "[hold] report"];
    for (query, expected) in [
        (vec![("sender", "FRIEND.test")], vec!["[hold] invoice 7"]),
        (vec![("recipient", "bob@")], vec!["[hold] report"]),
        (vec![("subject", "REPORT")], vec!["[hold] report"]),
        (vec![("id", invoice.as_str())], vec!["[hold] invoice 7"]),
        (vec![("check", "hold-for-review")], both.to_vec()),
        (vec![("outcome", "quarantined")], both.to_vec()),
        // A day is the local day the pages show: today's items are in
        // "since today" and "until today", not in "until yesterday".
        (
            vec![("since", since.as_str()), ("until", today.as_str())],
            vec!["(no subject)", "[hold] invoice 7", "[hold] report"],
        ),
        (vec![("until", yesterday.as_str())], vec![]),
        (
            vec![("since", "1h"), ("subject", "invoice")],
            vec!["[hold] invoice 7"],
        ),
        (vec![("until", "1h")], vec![]),
    ] {
        let (subjects, body) = found(&q, &cookie, &query).await;
        assert_eq!(subjects, expected, "{query:?}: {body}");
    }
    // The refusal during the dialogue, found by its sender: no message kept.
    let (subjects, body) = found(&q, &cookie, &[("sender", "spam@")]).await;
    assert_eq!(subjects, ["(no subject)"], "{body}");
    assert!(
        body.contains("during the dialogue (no message kept)"),
        "{body}"
    );
    assert!(
        body.contains("the sender is on the site&#39;s block list"),
        "{body}"
    );
    // Nothing found says so; a time it cannot read says how to write it and
    // lists nothing rather than everything.
    let (subjects, body) = found(&q, &cookie, &[("sender", "nobody")]).await;
    assert!(
        subjects.is_empty() && body.contains("Nothing matches."),
        "{body}"
    );
    let (subjects, body) = found(&q, &cookie, &[("since", "last tuesday")]).await;
    assert!(subjects.is_empty(), "{body}");
    assert!(
        body.contains(
            "“since” &#34;last tuesday&#34;: write a time ago (2h, 3days) or a date (2026-12-01)."
        ),
        "{body}"
    );

    // The command line asks the same search of the same records.
    let (ok, list) = q.cli(&[
        "quarantine",
        "list",
        "--subject",
        "invoice",
        "--until",
        &today,
    ]);
    assert!(ok, "{list}");
    assert!(
        list.contains(&invoice) && list.contains("-- 1 item(s)"),
        "{list}"
    );
    let (ok, list) = q.cli(&["quarantine", "list", "--outcome", "rejected"]);
    assert!(
        ok && list.contains("spam@stranger.test -> alice@example.test")
            && list.contains("-- 1 item(s)"),
        "{list}"
    );
    let (ok, list) = q.cli(&["quarantine", "list", "--until", &yesterday]);
    assert!(
        ok && list.contains("The archive holds nothing that matches"),
        "{list}"
    );
    let (ok, error) = q.cli(&["quarantine", "list", "--until", "soon"]);
    assert!(!ok, "{error}");
    assert!(
        error.contains("--until soon: write a time ago (\"2h\") or a date (2026-11-22)"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_ends_the_session_for_good() {
    let q = Quarantine::start("").await;
    let cookie = q.admin().await;
    let page = http(q.web, "GET", "/", Some(&cookie), &[]).await;
    assert!(page.body.contains("Every message held"), "{}", page.body);
    let csrf = page.field("csrf");
    // Signing out needs the session's form token, like every other POST.
    let forged = http(q.web, "POST", "/logout", Some(&cookie), &[("csrf", "x")]).await;
    assert_eq!(forged.status, 403, "{forged:?}");
    let out = http(q.web, "POST", "/logout", Some(&cookie), &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303, "{out:?}");
    assert!(
        out.header("set-cookie")
            .is_some_and(|c| c.starts_with("mailmoat_session=;") && c.contains("Max-Age=0")),
        "{out:?}"
    );
    // The old cookie, kept by whoever copied it, no longer signs anyone in
    // nor acts with its form token.
    let replayed = http(q.web, "GET", "/", Some(&cookie), &[]).await;
    assert_eq!(replayed.status, 200);
    assert!(replayed.body.contains("Sign in"), "{}", replayed.body);
    assert!(
        !replayed.body.contains("Every message held"),
        "{}",
        replayed.body
    );
    let act = http(
        q.web,
        "POST",
        "/lists",
        Some(&cookie),
        &[
            ("csrf", &csrf),
            ("action", "block"),
            ("sender", "x@spam.test"),
        ],
    )
    .await;
    assert_eq!(act.status, 403, "{act:?}");
    let (ok, lists) = q.cli(&["lists", "show"]);
    assert!(ok && !lists.contains("x@spam.test"), "{lists}");
    // A new sign-in is a new session.
    let again = q.admin().await;
    let page = http(q.web, "GET", "/", Some(&again), &[]).await;
    assert!(page.body.contains("Every message held"), "{}", page.body);
    // An administrator removed from the users file is out at once.
    let (ok, text) = q.cli(&["passwd", "delete", "root"]);
    assert!(ok, "{text}");
    let page = http(q.web, "GET", "/", Some(&again), &[]).await;
    assert!(!page.body.contains("Every message held"), "{}", page.body);
    assert!(page.body.contains("Sign in"), "{}", page.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_request_releases_to_those_who_asked_and_bounces_are_not_allowed() {
    use crate::scanning::MARKER;
    let (_clamd, q) = Quarantine::with_clamd().await;
    // One infected message for alice and bob; a held bounce for alice.
    let mut client = q.proxy.client().await;
    let message =
        format!("From: <it@friend.test>\r\nSubject: Infected {MARKER}\r\n\r\n{MARKER}\r\n");
    let reply = client
        .send_mail(
            "it@friend.test",
            &["alice@example.test", "bob@example.test"],
            message.as_bytes(),
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let mut client = q.proxy.client().await;
    let bounce =
        b"From: <mailer-daemon@remote.test>\r\nSubject: [hold] Undeliverable\r\n\r\nSorry.\r\n";
    let reply = client.send_mail("", &["alice@example.test"], bounce).await;
    assert_eq!(reply.code, 250, "{reply:?}");

    let digests = q.digests(&[]).await;
    let mut alice = None;
    for link in links(
        digests
            .iter()
            .find(|d| d.rcpt_to == ["alice@example.test"])
            .unwrap(),
    ) {
        let page = http(q.web, "GET", &path_of(&link), None, &[]).await;
        if page.body.contains("Open my quarantine") {
            alice = Some(signed_in(q.web, &link).await);
        }
    }
    let alice = alice.expect("the digest's link to her quarantine");
    let infected = q.item(&format!("Infected {MARKER}")).await;
    let page = http(
        q.web,
        "GET",
        &format!("/item/{infected}"),
        Some(&alice),
        &[],
    )
    .await;
    assert!(page.body.contains("Ask for release"), "{}", page.body);
    let asked = http(
        q.web,
        "POST",
        &format!("/item/{infected}"),
        Some(&alice),
        &[("csrf", &page.field("csrf")), ("action", "request")],
    )
    .await;
    assert!(
        asked.body.contains("an administrator decides"),
        "{}",
        asked.body
    );

    let admin = q.admin().await;
    let page = http(
        q.web,
        "GET",
        &format!("/item/{infected}"),
        Some(&admin),
        &[],
    )
    .await;
    assert!(
        page.body
            .contains("asked for a release to alice@example.test"),
        "{}",
        page.body
    );
    let approved = http(
        q.web,
        "POST",
        &format!("/item/{infected}"),
        Some(&admin),
        &[("csrf", &page.field("csrf")), ("action", "approve")],
    )
    .await;
    assert!(
        approved.body.contains("Approved and released as"),
        "{}",
        approved.body
    );
    q.proxy.wait_idle().await;
    let delivered: Vec<Received> = q
        .backend
        .messages()
        .into_iter()
        .filter(|m| m.mail_from == "<it@friend.test>")
        .collect();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert!(String::from_utf8_lossy(&delivered[0].data).contains(MARKER));
    assert_eq!(
        delivered[0].rcpt_to,
        ["alice@example.test"],
        "bob did not ask"
    );

    // A bounce has no sender to allow: no such button, and the action is
    // refused without releasing anything.
    let undeliverable = q.item("[hold] Undeliverable").await;
    let page = http(
        q.web,
        "GET",
        &format!("/item/{undeliverable}"),
        Some(&alice),
        &[],
    )
    .await;
    assert!(page.body.contains("value=\"release\""), "{}", page.body);
    assert!(!page.body.contains("release-allow"), "{}", page.body);
    let before = q.backend.messages().len();
    let refused = http(
        q.web,
        "POST",
        &format!("/item/{undeliverable}"),
        Some(&alice),
        &[("csrf", &page.field("csrf")), ("action", "release-allow")],
    )
    .await;
    assert_eq!(refused.status, 409, "{refused:?}");
    q.proxy.wait_idle().await;
    assert_eq!(q.backend.messages().len(), before);
    let (_, lists) = q.cli(&["lists", "show", "--for", "alice@example.test"]);
    assert!(!lists.contains("<>"), "{lists}");
}
