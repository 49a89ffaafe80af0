//! The real `mailmoat` process: crash safety under SIGKILL, the queue commands on a
//! running and a stopped server, `check`, and the README's quick start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Instant;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_mailmoat");

pub struct Daemon {
    child: Child,
}

impl Daemon {
    /// Starts `mailmoat serve` and waits until it answers.
    pub async fn start(config: &Path, addr: SocketAddr) -> Daemon {
        let log = std::fs::File::create(config.with_extension("log")).unwrap();
        let child = Command::new(BIN)
            .args(["--config", config.to_str().unwrap(), "serve"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mailmoat");
        let deadline = Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "mailmoat did not start: {}",
                read_log(config)
            );
            poll_pause().await;
        }
        Daemon { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    pub fn terminate(mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "mailmoat exited with {status}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_log(config: &Path) -> String {
    std::fs::read_to_string(config.with_extension("log")).unwrap_or_default()
}

pub fn mailmoat(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run mailmoat")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// A configuration for the real process on a fixed free port.
async fn daemon_config(
    dir: &Path,
    backend: SocketAddr,
    extra_queue: &str,
) -> (PathBuf, SocketAddr) {
    let addr = unused_addr().await;
    let text = base_config(backend, "trusted_networks = []", "")
        .replace(
            "listen = [\"127.0.0.1:0\"]",
            &format!("listen = [\"{addr}\"]"),
        )
        .replace(
            "delivery_workers = 4",
            &format!("delivery_workers = 4\n{extra_queue}"),
        );
    let path = dir.join("mailmoat.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::write(dir.join("recipients.txt"), RECIPIENTS).unwrap();
    (path, addr)
}

fn subject_of(message: &Received) -> String {
    String::from_utf8_lossy(&message.data)
        .lines()
        .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
        .unwrap_or_default()
}

#[tokio::test]
async fn every_acknowledged_message_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let backend_addr = unused_addr().await;
    let (config, addr) = daemon_config(dir.path(), backend_addr, "").await;
    let daemon = Daemon::start(&config, addr).await;

    // Four clients at once, 40 messages; keep the subject of every one acknowledged.
    let mut tasks = Vec::new();
    for worker in 0..4 {
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut client = Client::connect(addr).await;
            client.hello().await;
            for n in 0..10 {
                let subject = format!("crash-{worker}-{n}");
                let reply = client
                    .send_mail(
                        "sender@remote.test",
                        &["alice@example.test"],
                        &sample_message(&subject),
                    )
                    .await;
                assert_eq!(reply.codes(), "250 2.0.0");
                acknowledged.push(subject);
            }
            acknowledged
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    daemon.kill9();

    let backend = Backend::start_on(backend_addr, DataEnd::Strict).await;
    let daemon = Daemon::start(&config, addr).await;
    backend.wait_for(acknowledged.len()).await;
    let mut delivered: Vec<String> = backend.messages().iter().map(subject_of).collect();
    delivered.sort();
    delivered.dedup();
    acknowledged.sort();
    assert_eq!(delivered, acknowledged);
    daemon.terminate();
}

fn queue_id_of(reply: &Reply) -> String {
    reply
        .text
        .trim_end()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn queue_commands_on_a_running_and_a_stopped_server() {
    let dir = tempfile::tempdir().unwrap();
    let backend_addr = unused_addr().await;
    // Long backoff: only `flush` and `release` make the deferred mail move.
    let (config, addr) = daemon_config(dir.path(), backend_addr, "").await;
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("min_backoff = \"1s\"", "min_backoff = \"1h\"")
        .replace("max_backoff = \"2s\"", "max_backoff = \"1h\"")
        // Nor does the background probe of the failed backend: flush alone.
        .replace("[backend]\n", "[backend]\nprobe_interval = \"1h\"\n");
    std::fs::write(&config, text).unwrap();
    let daemon = Daemon::start(&config, addr).await;

    let mut client = Client::connect(addr).await;
    client.hello().await;
    let mut ids = Vec::new();
    for subject in ["held", "deleted", "flushed"] {
        let reply = client
            .send_mail(
                "sender@remote.test",
                &["bob@example.test"],
                &sample_message(subject),
            )
            .await;
        ids.push(queue_id_of(&reply));
    }
    let (held, deleted, flushed) = (&ids[0], &ids[1], &ids[2]);
    let deferred = dir.path().join("queue/deferred");
    eventually("all three deferred", || list_files(&deferred).len() == 6).await;

    // Running server: the CLI goes through the control socket.
    let list = mailmoat(&config, &["queue", "list"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let text = stdout(&list);
    for id in &ids {
        assert!(text.contains(id.as_str()), "{text}");
    }
    assert!(text.contains("deferred"), "{text}");
    assert!(text.contains("bob@example.test"), "{text}");
    assert!(
        text.contains("Connection refused") || text.contains("onnection"),
        "last error shown: {text}"
    );
    assert!(text.contains("in 3 messages"), "{text}");
    // Times in local time; each deferred message says when it is tried next.
    let envelope: toml::Table = toml::from_str(
        &std::fs::read_to_string(dir.path().join(format!("queue/deferred/{flushed}.env"))).unwrap(),
    )
    .unwrap();
    let next = envelope["next_attempt"].as_integer().unwrap() as u64;
    assert!(
        text.contains(&format!(
            "(attempt 1 failed; next attempt {})",
            mailmoat::local_time::local(next)
        )),
        "{text}"
    );

    let hold = mailmoat(&config, &["queue", "hold", held]);
    assert!(hold.status.success(), "{}", stderr(&hold));
    assert!(dir.path().join(format!("queue/hold/{held}.env")).exists());
    assert!(stdout(&mailmoat(&config, &["queue", "list"])).contains("hold"));
    let again = mailmoat(&config, &["queue", "hold", held]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("already on hold"));

    let delete = mailmoat(&config, &["queue", "delete", deleted]);
    assert!(delete.status.success(), "{}", stderr(&delete));
    assert!(!stdout(&mailmoat(&config, &["queue", "list"])).contains(deleted.as_str()));

    let show = mailmoat(&config, &["queue", "show", flushed]);
    assert!(show.status.success());
    assert!(stdout(&show).contains("sender = \"sender@remote.test\""));
    assert!(stdout(&show).contains("Subject: flushed"));
    let shown = stdout(&show);
    let record: toml::Table = toml::from_str(shown.split("# message").next().unwrap()).unwrap();
    assert!(
        record["arrived"].as_datetime().is_some() && record["next_attempt"].as_datetime().is_some(),
        "times are shown as datetimes: {shown}"
    );
    assert!(
        shown.contains(&format!("# {next}\n")),
        "the seconds stay beside them: {shown}"
    );

    let missing = mailmoat(&config, &["queue", "show", "ABCDEF"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("no such message"),
        "{}",
        stderr(&missing)
    );
    let bad = mailmoat(&config, &["queue", "show", "../../etc/passwd"]);
    assert!(stderr(&bad).contains("not a queue id"), "{}", stderr(&bad));

    // Backend back; flush delivers the deferred message now, not the held one.
    let backend = Backend::start_on(backend_addr, DataEnd::Strict).await;
    let flush = mailmoat(&config, &["queue", "flush"]);
    assert!(flush.status.success(), "{}", stderr(&flush));
    backend.wait_for(1).await;
    let wait = mailmoat(&config, &["queue", "wait", "--timeout", "20s"]);
    assert!(wait.status.success(), "{}", stderr(&wait));
    let subjects: Vec<String> = backend.messages().iter().map(subject_of).collect();
    assert_eq!(subjects, vec!["flushed"]);

    // Stopped server: the CLI works on the files directly.
    daemon.terminate();
    let list = mailmoat(&config, &["queue", "list"]);
    assert!(list.status.success(), "{}", stderr(&list));
    assert!(stdout(&list).contains(held.as_str()));
    let in_india = Command::new(BIN)
        // A POSIX zone, so that no tzdata is needed.
        .env("TZ", "IST-5:30")
        .arg("--config")
        .arg(&config)
        .args(["queue", "list"])
        .output()
        .unwrap();
    assert!(
        stdout(&in_india).contains(" +05:30 "),
        "local time of the reader's zone: {}",
        stdout(&in_india)
    );
    let release = mailmoat(&config, &["queue", "release", held]);
    assert!(release.status.success(), "{}", stderr(&release));
    assert!(dir.path().join(format!("queue/active/{held}.env")).exists());

    let daemon = Daemon::start(&config, addr).await;
    backend.wait_for(2).await;
    let subjects: Vec<String> = backend.messages().iter().map(subject_of).collect();
    assert_eq!(subjects, vec!["flushed", "held"]);
    eventually("queue empty", || {
        list_files(&dir.path().join("queue/active")).is_empty()
    })
    .await;
    let empty = mailmoat(&config, &["queue", "list"]);
    assert!(
        stdout(&empty).contains("Mail queue is empty"),
        "{}",
        stdout(&empty)
    );
    daemon.terminate();
}

#[tokio::test]
async fn a_locked_queue_without_a_server_answering_is_reported_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = daemon_config(dir.path(), unused_addr().await, "").await;
    let spool = mailmoat::queue::spool::Spool::open(&dir.path().join("queue")).unwrap();
    let _lock = spool.try_lock().unwrap().expect("lock");
    let output = mailmoat(&config, &["queue", "list"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("is locked by a running mailmoat"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn check_names_file_line_and_fix_for_a_bad_setting() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[relay]\nhosted_domains = [\"example.test\"]\ntrusted_networks = [\"10.0.0.0/33\"]\n",
    )
    .unwrap();
    let output = mailmoat(&config, &["check"]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("bad.toml:3: "), "{err}");
    assert!(err.contains("10.0.0.0/8"), "the fix is suggested: {err}");
}

/// The README's quick start: the shipped example configuration, as it is, run from a
/// copy of `packaging/` (only the ports changed, so a running proxy does not clash).
#[tokio::test]
async fn the_shipped_example_configuration_starts_a_working_proxy() {
    let check = mailmoat(&shipped("packaging/mailmoat.toml"), &["check"]);
    assert!(check.status.success(), "{}", stderr(&check));

    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::start(DataEnd::Strict).await;
    let addr = unused_addr().await;
    let text = std::fs::read_to_string(shipped("packaging/mailmoat.toml"))
        .unwrap()
        .replace("127.0.0.1:2525", &addr.to_string())
        .replace("127.0.0.1:2526", &backend.addr.to_string())
        // The copy lives elsewhere: the shipped rules by their full path, the
        // archive beside the copy.
        .replace(
            "path = \"../rules\"",
            &format!("path = \"{}\"", shipped("rules").display()),
        )
        .replace("path = \"../quarantine\"", "path = \"quarantine\"");
    let config = dir.path().join("mailmoat.toml");
    std::fs::write(&config, text).unwrap();
    std::fs::copy(
        shipped("packaging/recipients.txt"),
        dir.path().join("recipients.txt"),
    )
    .unwrap();
    let daemon = Daemon::start(&config, addr).await;

    // A real client library, as an administrator's script would use.
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(addr.port())
        .build();
    let email = Message::builder()
        .from("Sender <sender@remote.test>".parse().unwrap())
        .to("Postmaster <postmaster@example.test>".parse().unwrap())
        .subject("quick start")
        .body(String::from("It works.\r\n"))
        .unwrap();
    let response = mailer.send(email).await.expect("accepted");
    assert_eq!(response.code().to_string(), "250");
    let received = backend.wait_for(1).await;
    assert_eq!(received[0].rcpt_to, vec!["postmaster@example.test"]);
    assert!(
        dir.path().join("var/queue/active").is_dir(),
        "store under the config's folder"
    );
    daemon.terminate();
}

async fn wait_for_log(config: &Path, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let log = read_log(config);
        if log.contains(needle) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "log never said {needle:?}:\n{log}"
        );
        poll_pause().await;
    }
}

#[tokio::test]
async fn a_broken_rule_file_is_refused_on_reload_and_the_rules_in_force_stay() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::start(DataEnd::Strict).await;
    let (config, addr) = daemon_config(dir.path(), backend.addr, "").await;
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("10-block.toml"),
        "[[rule]]\nname = \"block-a\"\nwhen.sender_domain = \"a.test\"\naction = \"reject\"\n",
    )
    .unwrap();
    let daemon = Daemon::start(&config, addr).await;
    let refused = |domain: &'static str| async move {
        let mut client = Client::connect(addr).await;
        client.hello().await;
        client
            .command(&format!("MAIL FROM:<x@{domain}>"))
            .await
            .code
    };
    assert_eq!(refused("a.test").await, 550);
    assert_eq!(refused("b.test").await, 250);

    // A session that starts now keeps these rules to its end.
    let mut old_session = Client::connect(addr).await;
    old_session.hello().await;

    std::fs::write(
        rules.join("20-new.toml"),
        "[[rule]]\nname = \"block-b\"\nwhen.sender_domian = \"b.test\"\naction = \"reject\"\n",
    )
    .unwrap();
    let log = wait_for_log(&config, "rules not reloaded").await;
    assert!(
        log.contains("20-new.toml:3:"),
        "the error names file and line:\n{log}"
    );
    assert_eq!(refused("a.test").await, 550, "the old rule still blocks");
    assert_eq!(refused("b.test").await, 250);

    std::fs::write(
        rules.join("20-new.toml"),
        "[[rule]]\nname = \"block-b\"\nwhen.sender_domain = \"b.test\"\naction = \"reject\"\n",
    )
    .unwrap();
    wait_for_log(&config, "rules reloaded").await;
    assert_eq!(refused("b.test").await, 550);
    assert_eq!(refused("a.test").await, 550);
    old_session.expect("MAIL FROM:<x@b.test>", "250").await;
    daemon.terminate();
}

#[tokio::test]
async fn shadow_rule_is_logged_as_would_have() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::start(DataEnd::Strict).await;
    let (config, addr) = daemon_config(dir.path(), backend.addr, "").await;
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("rules/10-watch.toml"),
        "[[rule]]\nname = \"watch-remote\"\nmode = \"shadow\"\nwhen.subject = \"watched\"\naction = \"reject\"\n\
         [[rule]]\nname = \"watch-sender\"\nmode = \"shadow\"\nwhen.sender_domain = \"remote.test\"\naction = \"discard\"\n",
    )
    .unwrap();
    let daemon = Daemon::start(&config, addr).await;
    let mut client = Client::connect(addr).await;
    client.hello().await;
    let reply = client
        .send_mail(
            "s@remote.test",
            &["alice@example.test"],
            b"Subject: watched\r\n\r\nhi\r\n",
        )
        .await;
    assert_eq!(reply.codes(), "250 2.0.0");
    let id = queue_id_of(&reply);
    backend.wait_for(1).await;
    wait_for_log(&config, "shadow rule would have applied reject").await;
    let log = wait_for_log(&config, "shadow rule would have applied discard").await;
    // Each line, whatever stage its rule matched at, carries the message's queue id.
    for rule in ["watch-remote", "watch-sender"] {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("rule={rule}")))
            .unwrap_or_else(|| panic!("no line for {rule}:\n{log}"));
        assert!(line.contains(&format!("queue_id={id}")), "{line}");
    }
    // A transaction that ends before DATA logs NOQUEUE, as Postfix does.
    client.expect("MAIL FROM:<s@remote.test>", "250").await;
    client.expect("RSET", "250").await;
    wait_for_log(&config, "queue_id=NOQUEUE rule=watch-sender").await;
    daemon.terminate();
}

#[test]
fn test_rules_names_the_matching_rules_and_the_verdict() {
    let out = tempfile::tempdir().unwrap();
    let delivered = out.path().join("delivered.eml");
    let output = Command::new(BIN)
        .arg("--config")
        .arg(shipped("packaging/mailmoat.toml"))
        .arg("test-rules")
        .arg(shipped("rules/tests/exe-attachment.eml"))
        .args([
            "--from",
            "sender@remote.test",
            "--to",
            "alice@example.test",
            "--to",
            "former.employee@example.test",
        ])
        .arg("--output")
        .arg(&delivered)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("RCPT TO:<alice@example.test>"), "{text}");
    assert!(
        text.contains(
            "strip-executables                DATA  strip_attachments: removes invoice.pdf.exe"
        ),
        "{text}"
    );
    assert!(text.contains("redirect-retired-mailbox"), "{text}");
    assert!(text.contains("verdict: queued; sender <sender@remote.test>; recipients: alice@example.test; 1 attachment(s) removed"), "{text}");
    let written = std::fs::read_to_string(&delivered).unwrap();
    assert!(
        written.contains("[mailmoat removed the attachment \"invoice.pdf.exe\""),
        "{written}"
    );

    let spam = Command::new(BIN)
        .arg("--config")
        .arg(shipped("packaging/mailmoat.toml"))
        .arg("test-rules")
        .arg(shipped("rules/tests/known-spammer.eml"))
        .args(["--from", "x@spammer.invalid", "--to", "alice@example.test"])
        .output()
        .unwrap();
    let text = stdout(&spam);
    assert!(
        text.contains("refused by rule reject-known-spammer: 550 5.7.1"),
        "{text}"
    );
    assert!(text.contains("verdict: reject"), "{text}");
}

#[test]
fn check_refuses_a_broken_rule_file_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mailmoat.toml");
    std::fs::write(&config, "[relay]\nhosted_domains = [\"example.test\"]\n").unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("rules/10-x.toml"),
        "[[rule]]\nname = \"x\"\n\naction = \"bounce\"\n",
    )
    .unwrap();
    let output = mailmoat(&config, &["check"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("10-x.toml:4: rule 'x': unknown action 'bounce'"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn check_names_the_line_of_an_empty_backend_address_in_the_shipped_configuration() {
    let text = std::fs::read_to_string(shipped("packaging/mailmoat.toml")).unwrap();
    let key = "address = \"127.0.0.1:2526\"";
    assert_eq!(text.matches(key).count(), 1, "the backend address line");
    let broken = text.replace(key, "address = \"\"");
    let line = broken.lines().position(|l| l == "address = \"\"").unwrap() + 1;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mailmoat.toml");
    std::fs::write(&config, &broken).unwrap();
    std::fs::write(dir.path().join("recipients.txt"), RECIPIENTS).unwrap();
    let output = mailmoat(&config, &["check"]);
    assert!(!output.status.success());
    let text = stderr(&output);
    assert!(
        text.contains(&format!("mailmoat.toml:{line}: backend.address is empty")),
        "{text}"
    );
}

/// `queue wait` answers when nothing is due now; `--deferred` waits for what a
/// later retry or a probe of a failed next hop will deliver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_wait_deferred_waits_until_deferred_mail_is_delivered() {
    let addr = unused_addr().await;
    let text = base_config(addr, "trusted_networks = [\"127.0.0.9/32\"]", "")
        .replace("[backend]\n", "[backend]\nprobe_interval = \"300ms\"\n")
        .replace("min_backoff = \"1s\"", "min_backoff = \"1h\"")
        .replace("max_backoff = \"2s\"", "max_backoff = \"2h\"");
    let proxy = Proxy::start_with_text(&text).await;
    let config = proxy.config_path();
    let mut client = proxy.client().await;
    let reply = client
        .send_mail(
            "s@remote.test",
            &["alice@example.test"],
            b"Subject: later\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(reply.codes(), "250 2.0.0");
    eventually("deferred", || proxy.queue_files("deferred").len() == 2).await;
    let idle = mailmoat(&config, &["queue", "wait", "--timeout", "5s"]);
    assert!(idle.status.success(), "{}", stderr(&idle));
    assert!(stdout(&idle).contains("idle"), "{}", stdout(&idle));
    let busy = mailmoat(&config, &["queue", "wait", "--deferred", "--timeout", "1s"]);
    assert!(!busy.status.success());
    assert!(
        stderr(&busy).contains("still busy after 1s: active 0, deferred 1"),
        "{}",
        stderr(&busy)
    );
    let backend = Backend::start_on(addr, DataEnd::Strict).await;
    let empty = mailmoat(
        &config,
        &["queue", "wait", "--deferred", "--timeout", "20s"],
    );
    assert!(empty.status.success(), "{}", stderr(&empty));
    assert!(
        stdout(&empty).contains("the queue is empty"),
        "{}",
        stdout(&empty)
    );
    assert_eq!(backend.messages().len(), 1);
}

/// The man pages as `man` renders them: no warnings; mailmoat(8) names only
/// pages that exist; in mailmoat.toml(5) each key has its own description
/// directly under it, and list items keep their lines.
#[test]
fn man_pages_render_without_warnings_each_key_with_its_description_and_completions() {
    ensure_package("command -v man", "man-db");
    let dir = tempfile::tempdir().unwrap();
    let made = Command::new(BIN)
        .args(["generate", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    let render = |page: &str| -> String {
        let out = Command::new("man")
            .env("LC_ALL", "C.UTF-8")
            .env("MANWIDTH", "100")
            .args(["--warnings", "-l"])
            .arg(dir.path().join(page))
            .output()
            .unwrap();
        assert!(out.status.success(), "{page}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{page}: warnings");
        stdout(&out)
    };
    let program = render("mailmoat.8");
    for section in ["COMMANDS", "EXIT STATUS", "SIGNALS", "FILES", "SEE ALSO"] {
        assert!(
            program.contains(&format!("\n{section}\n")),
            "{section}:\n{program}"
        );
    }
    assert!(program.contains("mailmoat queue wait"), "{program}");
    let pages = ["mailmoat(8)", "mailmoat.toml(5)", "mailmoat-rules(5)"];
    for word in program.split(|c: char| c.is_whitespace() || c == ',') {
        if word.starts_with("mailmoat") && word.contains('(') {
            let name = word.trim_end_matches(['.', ';']);
            assert!(
                pages.contains(&name),
                "names a page that does not exist: {name}"
            );
        }
    }
    let config = render("mailmoat.toml.5");
    // Words as man sets them, without the spaces justification adds.
    let lines: Vec<String> = config
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for (key, description) in [
        ("message_size_limit = 10485760", "Largest message in octets"),
        ("min_data_rate = 500", "After the first data_timeout"),
        (
            "probe_interval = \"5s\"",
            "A next hop (backend, relay host, MX) that fails",
        ),
    ] {
        let at = lines
            .iter()
            .position(|l| l == key)
            .unwrap_or_else(|| panic!("{key} not on a line of its own:\n{config}"));
        assert!(
            lines[at + 1].starts_with(description),
            "{key} is followed by {:?}, not its description",
            lines[at + 1]
        );
    }
    // A list keeps its items, one per line.
    let reject = lines
        .iter()
        .position(|l| l.starts_with("\"reject\""))
        .unwrap();
    assert!(lines[reject + 1].starts_with("\"normalize\""), "{config}");
    assert!(
        !config.contains("127.0.0.1:2525 only"),
        "the page opens with its description, not the file's"
    );
    assert!(render("mailmoat-rules.5").contains("ACTIONS"));
    for script in ["mailmoat.bash", "_mailmoat", "mailmoat.fish"] {
        let text = std::fs::read_to_string(dir.path().join(script)).unwrap();
        assert!(
            text.contains("queue") && text.contains("greylist"),
            "{script}"
        );
    }
}
