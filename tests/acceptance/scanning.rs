//! Greylisting, virus scanning with a real clamd and spam scoring with a real
//! rspamd (Debian's packages, started here on loopback ports with a
//! configuration of the test's own), over SMTP.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mailmoat::control::{GreylistCommand, Request};

use crate::support::*;

/// 127.0.0.2 is trusted; every other loopback address is a client from outside.
const RELAY: &str = "trusted_networks = [\"127.0.0.2/32\"]";

/// MAIL and RCPT from `ip`; the reply to RCPT.
async fn rcpt_from(proxy: &Proxy, ip: &str, sender: &str, rcpt: &str) -> String {
    let mut client = Client::connect_from(ip.parse().unwrap(), proxy.addr).await;
    assert_eq!(client.reply().await.code, 220);
    client.expect("EHLO client.remote.test", "250").await;
    client.expect(&format!("MAIL FROM:<{sender}>"), "250").await;
    client
        .command(&format!("RCPT TO:<{rcpt}>"))
        .await
        .text
        .trim_end()
        .to_string()
}

/// A whole message from `ip`; the reply to the end of DATA.
async fn send_from(proxy: &Proxy, ip: &str, sender: &str, rcpt: &str, message: &[u8]) -> String {
    let mut client = Client::connect_from(ip.parse().unwrap(), proxy.addr).await;
    assert_eq!(client.reply().await.code, 220);
    client.expect("EHLO client.remote.test", "250").await;
    client
        .send_mail(sender, &[rcpt], message)
        .await
        .text
        .trim_end()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greylisting_defers_first_attempts_and_lets_retries_and_the_exempt_through() {
    let backend = Backend::start(DataEnd::Strict).await;
    let dns = DnsServer::start().await;
    dns.txt("big.test", "v=spf1 ip4:127.0.0.0/8 -all");
    // Each loopback address its own network, so that clients can be told apart.
    let text = dns
        .serving(&base_config(
            backend.addr,
            RELAY,
            "[greylist]\nenabled = true\ndelay = \"2s\"\nretry_window = \"1h\"\n\
         auto_allow_after = 2\nipv4_prefix = 32\n",
        ))
        .replace(
            "[sender_auth]\nspf = false\n",
            "[sender_auth]\nspf = true\n",
        );
    let proxy = Proxy::start_with_text(&text).await;

    // A first attempt, and a retry too early. Greylisting counts whole seconds:
    // with a delay of 1 s, a retry a moment later that crosses into the next
    // second would already pass, so the delay is 2 s.
    let first = Instant::now();
    let reply = rcpt_from(
        &proxy,
        "127.0.0.1",
        "news@remote.test",
        "alice@example.test",
    )
    .await;
    assert_eq!(reply, "451 4.7.1 Greylisted: please try again in 2 seconds");
    let reply = rcpt_from(
        &proxy,
        "127.0.0.1",
        "news@remote.test",
        "alice@example.test",
    )
    .await;
    assert!(reply.starts_with("451 4.7.1 Greylisted"), "{reply}");
    // The retry after the delay passes, and the message is delivered.
    while first.elapsed() < Duration::from_millis(2100) {
        poll_pause().await;
    }
    let reply = send_from(
        &proxy,
        "127.0.0.1",
        "news@remote.test",
        "alice@example.test",
        &sample_message("greylisted"),
    )
    .await;
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    assert_eq!(backend.wait_for(1).await[0].rcpt_to, ["alice@example.test"]);

    // A second triplet that passes makes two: the network is let through.
    let second = Instant::now();
    let reply = rcpt_from(&proxy, "127.0.0.1", "news@remote.test", "bob@example.test").await;
    assert!(reply.starts_with("451 4.7.1"), "{reply}");
    while second.elapsed() < Duration::from_millis(2100) {
        poll_pause().await;
    }
    assert!(
        rcpt_from(&proxy, "127.0.0.1", "news@remote.test", "bob@example.test")
            .await
            .starts_with("250")
    );
    let reply = rcpt_from(
        &proxy,
        "127.0.0.1",
        "other@remote.test",
        "carol@example.test",
    )
    .await;
    assert!(reply.starts_with("250"), "auto-allowed: {reply}");

    // Never greylisted: postmaster, a trusted client, a sender whose SPF passes.
    let reply = rcpt_from(
        &proxy,
        "127.0.0.3",
        "x@remote.test",
        "postmaster@example.test",
    )
    .await;
    assert!(reply.starts_with("250"), "postmaster: {reply}");
    let reply = rcpt_from(&proxy, "127.0.0.2", "x@remote.test", "alice@example.test").await;
    assert!(reply.starts_with("250"), "trusted: {reply}");
    let reply = rcpt_from(&proxy, "127.0.0.4", "x@big.test", "alice@example.test").await;
    assert!(reply.starts_with("250"), "SPF pass: {reply}");
    // The same client otherwise is greylisted.
    let reply = rcpt_from(&proxy, "127.0.0.4", "x@remote.test", "alice@example.test").await;
    assert!(reply.starts_with("451 4.7.1"), "{reply}");

    // The administrator's view, and letting a network through by hand.
    let control = proxy.queue_dir().join("control.sock");
    let ask = |command| {
        let control = control.clone();
        async move {
            let reply = mailmoat::control::send(&control, &Request::Greylist(command))
                .await
                .unwrap();
            assert!(reply.ok, "{}", reply.text);
            reply.text
        }
    };
    let listed = ask(GreylistCommand::List).await;
    assert!(
        listed.contains("127.0.0.1/32|news@remote.test|alice@example.test  first ")
            && listed.contains("127.0.0.4/32|x@remote.test|alice@example.test  first ")
            && listed.contains("127.0.0.1/32  let through (2 passes)"),
        "{listed}"
    );
    assert_eq!(
        ask(GreylistCommand::Allow("127.0.0.4".into())).await,
        "127.0.0.4/32 is let through from now on"
    );
    let reply = rcpt_from(&proxy, "127.0.0.4", "y@remote.test", "bob@example.test").await;
    assert!(reply.starts_with("250"), "allowed by hand: {reply}");
}

/// A process the test started in a process group of its own; the whole group
/// (rspamd's workers too) is stopped when dropped.
struct Started(Child);

impl Started {
    fn spawn(command: &mut Command) -> Started {
        use std::os::unix::process::CommandExt;
        let child = command
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{command:?}: {e}"));
        Started(child)
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        // SAFETY: signals the group this test started; no memory is involved.
        unsafe {
            libc::kill(-(self.0.id() as i32), libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

/// The marker the test signature matches, and a clamd that knows it.
pub const MARKER: &str = "MAILMOAT-TEST-VIRUS-7f3a";

pub struct Clamd {
    pub addr: SocketAddr,
    process: Option<Started>,
    _dir: tempfile::TempDir,
}

impl Clamd {
    pub async fn start() -> Clamd {
        ensure_package("command -v clamd", "clamav-daemon");
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::create_dir(&db).unwrap();
        let hex: String = MARKER.bytes().map(|b| format!("{b:02x}")).collect();
        std::fs::write(db.join("test.ndb"), format!("MailmoatTest:0:*:{hex}\n")).unwrap();
        let addr = unused_addr().await;
        let conf = dir.path().join("clamd.conf");
        std::fs::write(
            &conf,
            format!(
                "Foreground yes\nTCPSocket {}\nTCPAddr 127.0.0.1\nDatabaseDirectory {}\n\
                 User root\nStreamMaxLength 1M\nLogFile {}\n",
                addr.port(),
                db.display(),
                dir.path().join("clamd.log").display()
            ),
        )
        .unwrap();
        let process = Started::spawn(Command::new("clamd").arg("-c").arg(&conf));
        let clamd = Clamd {
            addr,
            process: Some(process),
            _dir: dir,
        };
        // Ready when it answers PING (it loads its database first).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if clamd.ping().await {
                return clamd;
            }
            assert!(Instant::now() < deadline, "clamd did not start");
            poll_pause().await;
        }
    }

    async fn ping(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut stream) = tokio::net::TcpStream::connect(self.addr).await else {
            return false;
        };
        let _ = stream.write_all(b"zPING\0").await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        answer.starts_with(b"PONG")
    }

    fn stop(&mut self) {
        self.process.take();
    }
}

pub fn with_attachment(subject: &str, name: &str, content_type: &str, payload: &[u8]) -> Vec<u8> {
    format!(
        "From: sender@remote.test\r\nTo: alice@example.test\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@remote.test>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n\
         --b1\r\nContent-Type: {content_type}; name=\"{name}\"\r\n\
         Content-Disposition: attachment; filename=\"{name}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--b1--\r\n",
        base64(payload)
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clamd_finds_the_signature_anywhere_and_a_dead_clamd_tempfails() {
    let mut clamd = Clamd::start().await;
    let backend = Backend::start(DataEnd::Strict).await;
    let rules = r#"
[[rule]]
name = "virus-to-bob"
when.virus = "/^MailmoatTest/"
when.recipient = "bob@example.test"
action = "quarantine"
"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients.txt"), RECIPIENTS).unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/50-test.toml"), rules).unwrap();
    let text = base_config(
        backend.addr,
        RELAY,
        &format!(
            "[antivirus]\nclamd = \"{}\"\non_error = \"tempfail\"\ntimeout = \"5s\"\n",
            clamd.addr
        ),
    );
    let proxy = Proxy::start_in(dir, &text).await;
    let sender = "sender@remote.test";

    let plain = format!(
        "From: {sender}\r\nTo: alice@example.test\r\nSubject: plain\r\n\r\nhello {MARKER} there\r\n"
    );
    let zipped = zip_of(&[("inner.txt", format!("x {MARKER} y").as_bytes())]);
    let infected = [
        ("in the text", plain.into_bytes()),
        (
            "a base64 attachment",
            with_attachment(
                "attached",
                "file.bin",
                "application/octet-stream",
                MARKER.as_bytes(),
            ),
        ),
        (
            "inside a zip",
            with_attachment("zipped", "files.zip", "application/zip", &zipped),
        ),
    ];
    for (what, message) in &infected {
        let reply = send_from(&proxy, "127.0.0.1", sender, "alice@example.test", message).await;
        assert_eq!(
            reply, "554 5.7.1 Message rejected: virus MailmoatTest.UNOFFICIAL found",
            "{what}"
        );
    }
    // A rule on the virus decides instead of the default.
    let (_, message) = &infected[0];
    let reply = send_from(&proxy, "127.0.0.1", sender, "bob@example.test", message).await;
    assert!(reply.starts_with("250 2.0.0"), "quarantined: {reply}");
    // A clean message arrives unchanged.
    let clean = sample_message("clean");
    let reply = send_from(&proxy, "127.0.0.1", sender, "alice@example.test", &clean).await;
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    let got = backend.wait_for(1).await;
    assert_eq!(strip_received(&got[0].data).1, clean.as_slice());
    // Over clamd's stream limit (1 MB here): no answer, so 451.
    let mut big = b"From: sender@remote.test\r\nSubject: big\r\n\r\n".to_vec();
    while big.len() < 1_200_000 {
        big.extend_from_slice(&[b'a'; 998]);
        big.extend_from_slice(b"\r\n");
    }
    let reply = send_from(&proxy, "127.0.0.1", sender, "alice@example.test", &big).await;
    assert_eq!(
        reply,
        "451 4.3.0 Message could not be scanned; try again later"
    );
    // clamd stopped: 451, quickly.
    clamd.stop();
    let started = Instant::now();
    let reply = send_from(&proxy, "127.0.0.1", sender, "alice@example.test", &clean).await;
    assert_eq!(
        reply,
        "451 4.3.0 Message could not be scanned; try again later"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    proxy.wait_idle().await;
    assert_eq!(backend.messages().len(), 1, "only the clean message");
    let archived = archive_list(&proxy, Some(sender)).await;
    let lines: Vec<&str> = archived.lines().collect();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("antivirus") && l.contains(" rejected "))
            .count(),
        3,
        "{archived}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("virus-to-bob") && l.contains(" quarantined "))
            .count(),
        1,
        "{archived}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_clamd_can_be_accepted_with_a_header_saying_so() {
    let backend = Backend::start(DataEnd::Strict).await;
    let nobody = unused_addr().await;
    let proxy = Proxy::start(
        backend.addr,
        RELAY,
        &format!("[antivirus]\nclamd = \"{nobody}\"\non_error = \"accept\"\n"),
    )
    .await;
    let reply = send_from(
        &proxy,
        "127.0.0.1",
        "sender@remote.test",
        "alice@example.test",
        &sample_message("unscanned"),
    )
    .await;
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    let got = backend.wait_for(1).await;
    let text = String::from_utf8_lossy(&got[0].data);
    assert!(
        text.contains(&format!(
            "X-Mailmoat-Antivirus: not scanned (cannot connect to clamd at {nobody}: Connection refused"
        )),
        "{text}"
    );
}

/// rspamd's normal worker on a loopback port, with a configuration of the
/// test's own (no name server to wait for).
struct Rspamd {
    url: String,
    process: Option<Started>,
    _dir: tempfile::TempDir,
}

impl Rspamd {
    async fn start() -> Rspamd {
        ensure_package("command -v rspamd", "rspamd");
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf");
        let local = conf.join("local.d");
        std::fs::create_dir_all(&local).unwrap();
        for sub in ["db", "run"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let normal = unused_addr().await;
        let controller = unused_addr().await;
        let proxy = unused_addr().await;
        for (file, addr) in [
            ("worker-normal.inc", normal),
            ("worker-controller.inc", controller),
            ("worker-proxy.inc", proxy),
        ] {
            std::fs::write(local.join(file), format!("bind_socket = \"{addr}\";\n")).unwrap();
        }
        std::fs::write(
            local.join("options.inc"),
            "dns { nameserver = [\"127.0.0.1:9\"]; timeout = 0.2s; retransmits = 1; }\n",
        )
        .unwrap();
        let path = |sub: &str| format!("{}", dir.path().join(sub).display());
        let process = Started::spawn(
            Command::new("rspamd")
                .args([
                    "-f",
                    "-u",
                    "root",
                    "-g",
                    "root",
                    "-c",
                    "/etc/rspamd/rspamd.conf",
                ])
                .arg(format!("LOCAL_CONFDIR={}", conf.display()))
                .arg(format!("DBDIR={}", path("db")))
                .arg(format!("RUNDIR={}", path("run")))
                .arg(format!("LOGDIR={}", path("run"))),
        );
        let rspamd = Rspamd {
            url: format!("http://{normal}"),
            process: Some(process),
            _dir: dir,
        };
        // Ready when the normal worker answers a check (it takes ~10-30 s).
        let endpoint = mailmoat::scanners::rspamd::Endpoint::parse(&rspamd.url).unwrap();
        let request = mailmoat::scanners::rspamd::CheckRequest {
            ip: "127.0.0.9".parse().unwrap(),
            helo: "ready.test",
            sender: "",
            recipients: &[],
            login: None,
            queue_id: "ready",
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if mailmoat::scanners::rspamd::check(
                &endpoint,
                &request,
                b"Subject: ready\r\n\r\nx\r\n",
            )
            .await
            .is_ok()
            {
                return rspamd;
            }
            assert!(Instant::now() < deadline, "rspamd did not start");
            poll_pause().await;
        }
    }

    fn stop(&mut self) {
        self.process.take();
    }
}

const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rspamd_scores_every_message_and_its_action_applies_unless_a_rule_decides() {
    let mut rspamd = Rspamd::start().await;
    let backend = Backend::start(DataEnd::Strict).await;
    let rules = r#"
[[rule]]
name = "spam-to-bob"
when.min_spam_score = 10.0
when.recipient = "bob@example.test"
action = "quarantine"
"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients.txt"), RECIPIENTS).unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/50-test.toml"), rules).unwrap();
    let text = base_config(
        backend.addr,
        RELAY,
        &format!("[spam]\nrspamd = \"{}\"\ntimeout = \"5s\"\n", rspamd.url),
    );
    let proxy = Proxy::start_in(dir, &text).await;
    let sender = "sender@remote.test";
    let gtube = format!(
        "From: {sender}\r\nTo: alice@example.test\r\nSubject: offer\r\n\
         Date: Wed, 02 Dec 2026 07:00:00 +0000\r\nMessage-ID: <gtube@remote.test>\r\n\r\n{GTUBE}\r\n"
    );
    let reply = send_from(
        &proxy,
        "127.0.0.1",
        sender,
        "alice@example.test",
        gtube.as_bytes(),
    )
    .await;
    assert_eq!(reply, "550 5.7.1 Message rejected as spam");
    // A rule on the score decides instead.
    let reply = send_from(
        &proxy,
        "127.0.0.1",
        sender,
        "bob@example.test",
        gtube.as_bytes(),
    )
    .await;
    assert!(reply.starts_with("250 2.0.0"), "quarantined: {reply}");

    // A plain message is delivered with its score; a score claimed by the
    // sender is replaced.
    let plain = [
        b"X-Spam-Score: -100\r\nDate: Wed, 02 Dec 2026 07:00:00 +0000\r\n".as_slice(),
        &sample_message("plain"),
    ]
    .concat();
    let reply = send_from(&proxy, "127.0.0.1", sender, "alice@example.test", &plain).await;
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    let got = backend.wait_for(1).await;
    let text = String::from_utf8_lossy(&got[0].data).into_owned();
    assert_eq!(text.matches("X-Spam-Flag: ").count(), 1, "{text}");
    assert!(text.contains("X-Spam-Flag: NO\r\n"), "{text}");
    assert!(!text.contains("X-Spam-Score: -100"), "{text}");
    assert!(text.contains("X-Spam-Status: No, score="), "{text}");
    assert!(
        text.contains(" required=15.00 action=no action\r\n"),
        "{text}"
    );

    // rspamd stopped: delivered, saying it was not scored.
    rspamd.stop();
    let reply = send_from(
        &proxy,
        "127.0.0.1",
        sender,
        "alice@example.test",
        &sample_message("unscored"),
    )
    .await;
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    let got = backend.wait_for(2).await;
    let text = String::from_utf8_lossy(&got[1].data);
    assert!(
        text.contains("X-Mailmoat-Spam: not scored (cannot connect to rspamd at "),
        "{text}"
    );
    assert!(!text.contains("X-Spam-Flag"), "{text}");

    proxy.wait_idle().await;
    assert_eq!(backend.messages().len(), 2);
    let archived = archive_list(&proxy, Some(sender)).await;
    assert!(
        archived
            .lines()
            .any(|l| l.contains("rejected") && l.contains("spam")),
        "{archived}"
    );
    assert!(
        archived
            .lines()
            .any(|l| l.contains("quarantined") && l.contains("spam-to-bob")),
        "{archived}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scanner_that_never_answers_holds_the_session_only_for_its_timeout() {
    // Takes connections and reads, and never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let backend = Backend::start(DataEnd::Strict).await;
    let proxy = Proxy::start(
        backend.addr,
        RELAY,
        &format!(
            "[antivirus]\nclamd = \"{silent}\"\ntimeout = \"1s\"\n\n\
             [spam]\nrspamd = \"http://{silent}\"\ntimeout = \"1s\"\non_error = \"tempfail\"\n"
        ),
    )
    .await;
    let started = Instant::now();
    let reply = send_from(
        &proxy,
        "127.0.0.1",
        "sender@remote.test",
        "alice@example.test",
        &sample_message("slow"),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(
        reply,
        "451 4.3.0 Message could not be scanned; try again later"
    );
    // Both asked at once: one timeout, not two.
    assert!(took < Duration::from_millis(1900), "{took:?}");
    assert!(took >= Duration::from_secs(1), "{took:?}");
    held.abort();
}
