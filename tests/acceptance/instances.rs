//! Several instances: two mailmoats behind a real HAProxy (PROXY protocol v2)
//! sharing one real redis-server. What judges a client holds across them; the
//! client is the one the balancer names; a Redis outage costs sharing, never
//! mail; each instance's spool survives its kill, and moves to another instance.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use crate::cli::{Daemon, mailmoat};
use crate::metrics::{scrape, value};
use crate::parts::{HaProxy, RedisServer};
use crate::support::*;

/// 127.0.0.5 and the others are ordinary internet clients here; only the
/// balancer's address (127.0.0.1) may send a PROXY header.
const UNTRUSTED: &str = "trusted_networks = []";

/// The text of one instance's configuration: its host name, the shared Redis
/// (if any), PROXY protocol from 127.0.0.1, and `extra` sections.
fn instance_config(
    backend: SocketAddr,
    name: &str,
    redis: Option<&RedisServer>,
    extra: &str,
) -> String {
    let shared = match redis {
        Some(redis) => format!(
            "[shared]\nredis = \"{}\"\ntimeout = \"500ms\"\nretry_interval = \"200ms\"\n",
            redis.url()
        ),
        None => String::new(),
    };
    base_config(backend, UNTRUSTED, &format!("{shared}\n{extra}")).replace(
        "hostname = \"mx.example.test\"",
        &format!(
            "hostname = \"{name}\"\nproxy_protocol = true\nproxy_networks = [\"127.0.0.1/32\"]"
        ),
    )
}

/// Two instances, mx-a and mx-b, sharing one Redis behind HAProxy and
/// delivering to one backend.
struct Pair {
    redis: RedisServer,
    backend: Backend,
    a: Proxy,
    b: Proxy,
    balancer: HaProxy,
}

impl Pair {
    /// `configure` makes each instance's configuration text what the test needs.
    async fn start(configure: impl Fn(String) -> String) -> Pair {
        let redis = RedisServer::start().await;
        let backend = Backend::start(DataEnd::Strict).await;
        let text = |name| configure(instance_config(backend.addr, name, Some(&redis), ""));
        let a = Proxy::start_with_text(&text("mx-a.example.test")).await;
        let b = Proxy::start_with_text(&text("mx-b.example.test")).await;
        let balancer = HaProxy::start(&[a.addr, b.addr]).await;
        Pair {
            redis,
            backend,
            a,
            b,
            balancer,
        }
    }
}

/// Connects through the balancer from `from`; returns the client after EHLO
/// and the host name of the instance it landed on (from the banner).
async fn through(balancer: SocketAddr, from: &str) -> (Client, String) {
    let mut client = Client::connect_from(from.parse().unwrap(), balancer).await;
    let banner = client.reply().await;
    assert_eq!(banner.code, 220, "{banner:?}");
    let instance = banner.text[4..].split(' ').next().unwrap().to_string();
    client.expect("EHLO client.test", "250").await;
    (client, instance)
}

/// MAIL, RCPT, DATA; the reply to the first command that was not accepted, or
/// to the end of data.
async fn try_mail(client: &mut Client, from: &str, to: &str, message: &[u8]) -> Reply {
    for command in [format!("MAIL FROM:<{from}>"), format!("RCPT TO:<{to}>")] {
        let reply = client.command(&command).await;
        if reply.code != 250 {
            return reply;
        }
    }
    client.expect("DATA", "354").await;
    client.send(&stuff(message)).await;
    client.send(b".\r\n").await;
    client.reply().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_limit_holds_once_across_two_instances_behind_haproxy() {
    let Pair {
        redis,
        backend,
        a,
        b,
        balancer,
    } = Pair::start(|text| text + "[mailbomb]\nmessages_per_hour = 5\n").await;

    let mut outcomes: HashMap<String, Vec<String>> = HashMap::new();
    for i in 0..12 {
        let (mut client, landed) = through(balancer.addr, "127.0.0.5").await;
        let message = format!("Subject: limit {i}\r\n\r\nbody {i}\r\n");
        let reply = try_mail(
            &mut client,
            "s@remote.test",
            "alice@example.test",
            message.as_bytes(),
        )
        .await;
        outcomes.entry(landed).or_default().push(reply.codes());
        client.command("QUIT").await;
    }
    let all: Vec<&String> = outcomes.values().flatten().collect();
    let accepted = all.iter().filter(|c| c.as_str() == "250 2.0.0").count();
    let limited = all.iter().filter(|c| c.as_str() == "451 4.7.1").count();
    assert_eq!((accepted, limited), (5, 7), "{outcomes:?}");
    // Both instances took mail and both refused it: the count is one.
    for host in ["mx-a.example.test", "mx-b.example.test"] {
        let mine = &outcomes[host];
        assert!(mine.iter().any(|c| c == "451 4.7.1"), "{host}: {mine:?}");
    }
    assert!(
        outcomes
            .values()
            .all(|c| c.iter().any(|c| c == "250 2.0.0")),
        "{outcomes:?}"
    );
    a.wait_idle().await;
    b.wait_idle().await;
    assert_eq!(backend.messages().len(), 5);
    assert_eq!(
        redis
            .get("mailmoat:rate:mailbomb.messages:127.0.0.0/24")
            .await
            .as_deref(),
        Some("5")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_lockout_on_one_instance_holds_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.txt");
    let hash = mailmoat::policy::auth::hash_password("right-password").unwrap();
    std::fs::write(&users, format!("dave:{hash}\n")).unwrap();
    let auth = format!(
        "[auth]\nsource = \"users\"\nusers_file = \"{}\"\nfailure_delay = \"10ms\"\n\
         max_failures_per_user = 3\nlockout = \"1h\"\nplaintext_networks = [\"127.0.0.0/8\"]\n",
        users.display()
    );
    // Every part must outlive the test: `_name`, not `..`, keeps it.
    let Pair {
        redis,
        balancer,
        backend: _backend,
        a: _a,
        b: _b,
    } = Pair::start(|text| text + &auth).await;

    let plain = |password: &str| format!("AUTH PLAIN {}", b64(&format!("\0dave\0{password}")));
    let mut guessed_on = BTreeSet::new();
    for _ in 0..3 {
        let (mut client, landed) = through(balancer.addr, "127.0.0.6").await;
        client.expect(&plain("guess"), "535 5.7.8").await;
        guessed_on.insert(landed);
    }
    assert_eq!(guessed_on.len(), 2, "the guesses went to both instances");
    // Now locked out wherever the next connection lands, the right password too.
    let mut locked_on = BTreeSet::new();
    for _ in 0..2 {
        let (mut client, landed) = through(balancer.addr, "127.0.0.7").await;
        client.expect(&plain("right-password"), "454 4.7.0").await;
        locked_on.insert(landed);
    }
    assert_eq!(locked_on.len(), 2, "both instances refused: {locked_on:?}");
    assert_eq!(redis.keys("mailmoat:auth-lock:user:dave").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_greylisted_triplet_passes_on_the_other_instance_after_the_delay() {
    let Pair {
        backend,
        a,
        b,
        balancer,
        redis: _redis,
    } = Pair::start(|text| text + "[greylist]\nenabled = true\ndelay = \"1s\"\n").await;

    let (mut first, first_on) = through(balancer.addr, "127.0.0.8").await;
    first.expect("MAIL FROM:<grey@remote.test>", "250").await;
    first
        .expect("RCPT TO:<bob@example.test>", "451 4.7.1")
        .await;
    let first_seen = std::time::Instant::now();
    // The retry must reach the other instance (round robin: the next connection).
    let (mut retry, retry_on) = loop {
        let (client, landed) = through(balancer.addr, "127.0.0.8").await;
        if landed != first_on {
            break (client, landed);
        }
    };
    assert_ne!(first_on, retry_on);
    // The delay is what is tested: the retry must come after it.
    tokio::time::sleep(std::time::Duration::from_secs(1).saturating_sub(first_seen.elapsed()))
        .await;
    let reply = retry
        .send_mail(
            "grey@remote.test",
            &["bob@example.test"],
            b"Subject: grey\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(
        reply.codes(),
        "250 2.0.0",
        "the other instance knew the triplet"
    );
    b.wait_idle().await;
    a.wait_idle().await;
    assert_eq!(backend.messages().len(), 1);
    // Either instance lists the one shared greylist, and an allowed network
    // is let through by both.
    for proxy in [&a, &b] {
        let listed = greylist_command(proxy, mailmoat::control::GreylistCommand::List).await;
        assert!(
            listed.contains("127.0.0.0/24|grey@remote.test|bob@example.test")
                && listed.contains("passed"),
            "{listed}"
        );
    }
    let allowed = greylist_command(
        &a,
        mailmoat::control::GreylistCommand::Allow("127.0.0.44".into()),
    )
    .await;
    assert!(allowed.contains("127.0.0.0/24 is let through"), "{allowed}");
    let (mut fresh, _) = through(balancer.addr, "127.0.0.44").await;
    fresh.expect("MAIL FROM:<new@remote.test>", "250").await;
    fresh.expect("RCPT TO:<carol@example.test>", "250").await;
    let (mut fresh, _) = through(balancer.addr, "127.0.0.44").await;
    fresh.expect("MAIL FROM:<newer@remote.test>", "250").await;
    fresh.expect("RCPT TO:<carol@example.test>", "250").await;
}

async fn greylist_command(proxy: &Proxy, command: mailmoat::control::GreylistCommand) -> String {
    let reply = mailmoat::control::send(
        &proxy.queue_dir().join("control.sock"),
        &mailmoat::control::Request::Greylist(command),
    )
    .await
    .unwrap();
    assert!(reply.ok, "{}", reply.text);
    reply.text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_behind_haproxy_is_the_client_in_every_record_and_check() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let deny = dir.path().join("deny.txt");
    std::fs::write(&deny, "127.0.0.9\n").unwrap();
    let deny_list = format!("[checks]\nclient_deny_file = \"{}\"\n", deny.display());
    let Pair {
        backend,
        a,
        b,
        balancer,
        redis: _redis,
    } = Pair::start(|text| text.replace("[checks]\n", &deny_list)).await;

    // Accepted: the Received header at the backend names 127.0.0.5.
    let (mut client, _) = through(balancer.addr, "127.0.0.5").await;
    let reply = client
        .send_mail(
            "seen@proxied.test",
            &["alice@example.test"],
            b"Subject: who\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(reply.codes(), "250 2.0.0");
    // Refused: an unknown recipient, logged and archived.
    client
        .expect("MAIL FROM:<refused@proxied.test>", "250")
        .await;
    client
        .expect("RCPT TO:<nobody@example.test>", "550 5.1.1")
        .await;
    client.command("QUIT").await;
    let received = backend.wait_for(1).await;
    let (trace, _) = strip_received(&received[0].data);
    assert!(trace.contains("[127.0.0.5]"), "{trace}");
    assert!(!trace.contains("127.0.0.1"), "{trace}");
    let line = wait_for_logged("the refusal", |v| v["sender"] == "refused@proxied.test").await;
    assert_eq!(line["client"], "127.0.0.5", "{line}");
    let mut archived = String::new();
    for proxy in [&a, &b] {
        archived.push_str(&archive_list(proxy, Some("refused@proxied.test")).await);
    }
    let id = archived
        .lines()
        .find(|l| l.contains("refused@proxied.test"))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("not archived: {archived}"))
        .to_string();
    let mut shown = String::new();
    for proxy in [&a, &b] {
        let reply = mailmoat::control::send(
            &proxy.queue_dir().join("control.sock"),
            &mailmoat::control::Request::Quarantine(
                mailmoat::archive::admin::QuarantineCommand::Show { id: id.clone() },
            ),
        )
        .await
        .unwrap();
        if reply.ok {
            shown = reply.text;
        }
    }
    assert!(shown.contains("client_ip = \"127.0.0.5\""), "{shown}");

    // The deny list applies to the client the balancer names.
    let mut denied = Client::connect_from("127.0.0.9".parse().unwrap(), balancer.addr).await;
    let banner = denied.reply().await;
    assert_eq!(banner.codes(), "554 5.7.1", "{banner:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_header_is_refused_from_anyone_but_the_balancer() {
    capture_logs();
    let backend = Backend::start(DataEnd::Strict).await;
    let proxy = Proxy::start_with_text(&instance_config(
        backend.addr,
        "mx-a.example.test",
        None,
        "",
    ))
    .await;

    // A client not in proxy_networks, passing itself off as another address,
    // in either version of the protocol.
    let v2 = {
        let addresses: ppp::v2::Addresses = (
            "192.0.2.77:40000".parse::<SocketAddr>().unwrap(),
            "127.0.0.1:25".parse::<SocketAddr>().unwrap(),
        )
            .into();
        ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            addresses,
        )
        .build()
        .unwrap()
    };
    for header in [b"PROXY TCP4 192.0.2.77 127.0.0.1 40000 25\r\n".to_vec(), v2] {
        let mut spoofer = Client::connect_from("127.0.0.20".parse().unwrap(), proxy.addr).await;
        spoofer.send(&header).await;
        let banner = spoofer.reply().await;
        assert_eq!(banner.code, 220);
        let refused = spoofer.reply().await;
        assert_eq!(refused.codes(), "554 5.7.0", "{refused:?}");
        assert!(spoofer.closed().await);
    }
    let line = wait_for_logged("the spoofer's refusal", |v| {
        v["check"] == "proxy_protocol" && v["client"] == "127.0.0.20"
    })
    .await;
    assert_eq!(line["result"], "rejected", "{line}");
    // Without a header, the same client is an ordinary client.
    let mut plain = Client::connect_from("127.0.0.20".parse().unwrap(), proxy.addr).await;
    plain.hello().await;
    let reply = plain
        .send_mail(
            "plain@remote.test",
            &["alice@example.test"],
            b"Subject: plain\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(reply.codes(), "250 2.0.0");
    let received = backend.wait_for(1).await;
    assert!(strip_received(&received[0].data).0.contains("[127.0.0.20]"));

    // The balancer's own address without a header: refused before any banner.
    let mut headless = Client::connect_from("127.0.0.1".parse().unwrap(), proxy.addr).await;
    headless.send(b"EHLO balancer.test\r\n").await;
    assert!(
        headless
            .try_reply(std::time::Duration::from_secs(5))
            .await
            .is_none()
    );
    wait_for_logged("the headless balancer", |v| {
        v["balancer"] == "127.0.0.1"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains("must send a PROXY header"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_redis_down_mail_keeps_flowing_on_local_counters_and_sharing_resumes() {
    capture_logs();
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    let backend = Backend::start(DataEnd::Strict).await;
    let metrics = unused_addr().await;
    let limits = format!(
        "[mailbomb]\nmessages_per_hour = 100000\nmessages_per_sender_per_hour = 100000\n\n\
         [metrics]\nlisten = \"{metrics}\"\n"
    );
    let text = instance_config(backend.addr, "mx-a.example.test", Some(&redis), &limits)
        .replace("proxy_protocol = true", "proxy_protocol = false");
    let proxy = Arc::new(Proxy::start_with_text(&text).await);

    // Load: senders in parallel, each message on its own connection.
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let refused = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = Vec::new();
    for s in 0..6 {
        let (proxy, acked, refused, sent) =
            (proxy.clone(), acked.clone(), refused.clone(), sent.clone());
        senders.push(tokio::spawn(async move {
            for i in 0..40 {
                let subject = format!("load {s}-{i}");
                let mut client = proxy.client().await;
                let reply = try_mail(
                    &mut client,
                    &format!("sender{s}@remote.test"),
                    "alice@example.test",
                    format!("Subject: {subject}\r\n\r\nbody\r\n").as_bytes(),
                )
                .await;
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if reply.code == 250 {
                    acked.lock().unwrap().push(subject);
                } else {
                    refused.lock().unwrap().push(reply.text);
                }
            }
        }));
    }
    // Redis dies under load ...
    eventually("a third of the load sent", || {
        sent.load(std::sync::atomic::Ordering::Relaxed) >= 80
    })
    .await;
    redis.stop();
    wait_for_logged("Redis unreachable", |v| {
        v["redis"] == url.as_str()
            && v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("shared state unreachable"))
    })
    .await;
    let status = mailmoat::control::send(
        &proxy.queue_dir().join("control.sock"),
        &mailmoat::control::Request::Status,
    )
    .await
    .unwrap();
    assert!(
        status
            .text
            .contains(&format!("shared state: Redis {url} NOT answering")),
        "{}",
        status.text
    );
    let during = scrape(metrics).await;
    assert_eq!(
        value(&during, "mailmoat_shared_state_up"),
        Some(0.0),
        "{during}"
    );
    assert!(
        value(&during, "mailmoat_shared_state_fallbacks_total") > Some(0.0),
        "{during}"
    );
    eventually("two thirds of the load sent", || {
        sent.load(std::sync::atomic::Ordering::Relaxed) >= 160
    })
    .await;
    // ... and comes back, empty, while mail still flows.
    redis.start_again().await;
    wait_for_logged("Redis reachable again", |v| {
        v["redis"] == url.as_str()
            && v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("shared state reachable again"))
    })
    .await;
    let after = scrape(metrics).await;
    assert_eq!(
        value(&after, "mailmoat_shared_state_up"),
        Some(1.0),
        "{after}"
    );
    for sender in senders {
        sender.await.unwrap();
    }
    assert!(
        refused.lock().unwrap().is_empty(),
        "refused: {:?}",
        refused.lock().unwrap()
    );
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), 240);
    proxy.wait_idle().await;
    let delivered = subjects(&backend);
    let lost: Vec<&String> = acked.iter().filter(|s| !delivered.contains(*s)).collect();
    assert!(lost.is_empty(), "lost: {lost:?}");
    let said = |start: &str| {
        logged(|v| {
            v["redis"] == url.as_str()
                && v["message"].as_str().is_some_and(|m| m.starts_with(start))
        })
        .len()
    };
    assert_eq!(said("shared state unreachable"), 1, "said once");
    assert_eq!(said("shared state reachable again"), 1, "said once");

    // Shared counting resumes: the empty Redis counts what comes now.
    let mut client = proxy.client().await;
    for i in 0..3 {
        let reply = client
            .send_mail(
                "after@remote.test",
                &["alice@example.test"],
                format!("Subject: after {i}\r\n\r\nx\r\n").as_bytes(),
            )
            .await;
        assert_eq!(reply.codes(), "250 2.0.0");
    }
    assert_eq!(
        redis
            .get("mailmoat:rate:mailbomb.sender:after@remote.test")
            .await
            .as_deref(),
        Some("3")
    );
}

/// One `mailmoat serve` process behind the balancer.
fn daemon_config(
    dir: &Path,
    backend: SocketAddr,
    listen: SocketAddr,
    name: &str,
    redis: &RedisServer,
) -> std::path::PathBuf {
    std::fs::write(dir.join("recipients.txt"), RECIPIENTS).unwrap();
    let text = instance_config(backend, name, Some(redis), "[queue]\n")
        .replace(
            "listen = [\"127.0.0.1:0\"]",
            &format!("listen = [\"{listen}\"]"),
        )
        .replace("[queue]\n\n", "");
    let config = dir.join("mailmoat.toml");
    std::fs::write(&config, text).unwrap();
    config
}

/// Keeps sending through the balancer until told to stop; returns the subjects
/// that were acknowledged with 250. A connection that dies (its instance was
/// killed) acknowledged nothing and is simply tried again.
async fn send_until(
    balancer: SocketAddr,
    tag: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
    acked: Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncWriteExt, BufReader};
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        n += 1;
        let subject = format!("kill {tag}-{n}");
        let attempt = async {
            let socket = tokio::net::TcpSocket::new_v4().ok()?;
            socket.bind("127.0.0.5:0".parse().unwrap()).ok()?;
            let stream = socket.connect(balancer).await.ok()?;
            let mut stream = BufReader::new(stream);
            step(&mut stream, b"", "220").await?;
            step(&mut stream, b"EHLO load.test\r\n", "250").await?;
            step(&mut stream, b"MAIL FROM:<load@remote.test>\r\n", "250").await?;
            step(&mut stream, b"RCPT TO:<alice@example.test>\r\n", "250").await?;
            step(&mut stream, b"DATA\r\n", "354").await?;
            let message = format!("Subject: {subject}\r\n\r\nbody\r\n.\r\n");
            step(&mut stream, message.as_bytes(), "250").await?;
            let _ = stream.get_mut().write_all(b"QUIT\r\n").await;
            Some(())
        };
        if tokio::time::timeout(WAIT, attempt)
            .await
            .ok()
            .flatten()
            .is_some()
        {
            acked.lock().unwrap().push(subject);
        }
    }
}

/// Sends `send` (if any) and reads one reply; None unless it starts with
/// `code` (or the connection died).
async fn step(
    stream: &mut tokio::io::BufReader<tokio::net::TcpStream>,
    send: &[u8],
    code: &str,
) -> Option<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    if !send.is_empty() {
        stream.get_mut().write_all(send).await.ok()?;
    }
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return line.starts_with(code).then_some(());
        }
    }
}

fn subjects(backend: &Backend) -> BTreeSet<String> {
    backend
        .messages()
        .iter()
        .filter_map(|m| {
            String::from_utf8_lossy(&m.data)
                .lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_instance_delivers_what_it_acknowledged_and_a_moved_spool_is_delivered_elsewhere()
{
    let redis = RedisServer::start().await;
    let backend = Backend::start(DataEnd::Strict).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (listen_a, listen_b) = (unused_addr().await, unused_addr().await);
    let config_a = daemon_config(
        dir_a.path(),
        backend.addr,
        listen_a,
        "mx-a.example.test",
        &redis,
    );
    let config_b = daemon_config(
        dir_b.path(),
        backend.addr,
        listen_b,
        "mx-b.example.test",
        &redis,
    );
    let daemon_a = Daemon::start(&config_a, listen_a).await;
    let _daemon_b = Daemon::start(&config_b, listen_b).await;
    let balancer = HaProxy::start(&[listen_a, listen_b]).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let senders: Vec<_> = (0..4)
        .map(|tag| tokio::spawn(send_until(balancer.addr, tag, stop.clone(), acked.clone())))
        .collect();
    let acked_count = || acked.lock().unwrap().len();
    eventually("load under way", || acked_count() >= 50).await;
    // The backend goes away, so acknowledged mail waits in both spools ...
    backend.stop();
    let at_stop = acked_count();
    eventually("mail queued while the backend is away", || {
        acked_count() >= at_stop + 100
    })
    .await;
    // ... and one instance is killed with mail in its spool.
    daemon_a.kill9();
    let queued_in_a: usize = ["active", "deferred"]
        .iter()
        .map(|state| {
            list_files(&dir_a.path().join("queue").join(state))
                .iter()
                .filter(|f| f.ends_with(".env"))
                .count()
        })
        .sum();
    assert!(
        queued_in_a > 0,
        "the killed instance held acknowledged mail"
    );
    let at_kill = acked_count();
    // HAProxy sends new connections to the other instance.
    eventually("mail flowing through the other instance", || {
        acked_count() >= at_kill + 100
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for sender in senders {
        sender.await.unwrap();
    }
    let returned = Backend::start_on(backend.addr, DataEnd::Strict).await;
    let daemon_a = Daemon::start(&config_a, listen_a).await;
    for config in [&config_a, &config_b] {
        let flushed = mailmoat(config, &["queue", "flush"]);
        assert!(flushed.status.success(), "{flushed:?}");
        let waited = mailmoat(config, &["queue", "wait", "--timeout", "60s"]);
        assert!(waited.status.success(), "{waited:?}");
    }
    let acked = acked.lock().unwrap().clone();
    let delivered: BTreeSet<String> = subjects(&backend)
        .union(&subjects(&returned))
        .cloned()
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|s| !delivered.contains(*s)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged ({queued_in_a} in the killed instance's spool), lost: {lost:?}",
        acked.len()
    );
    drop(daemon_a);

    // A host that never comes back: its spool folder, moved to another
    // instance, is delivered by it. Its backend was down, so mail waited.
    let dead_dir = tempfile::tempdir().unwrap();
    let dead_listen = unused_addr().await;
    let dead_backend = unused_addr().await;
    let dead_config = daemon_config(
        dead_dir.path(),
        dead_backend,
        dead_listen,
        "mx-c.example.test",
        &redis,
    )
    .to_path_buf();
    let text = std::fs::read_to_string(&dead_config)
        .unwrap()
        .replace("proxy_protocol = true", "proxy_protocol = false");
    std::fs::write(&dead_config, text).unwrap();
    let dead = Daemon::start(&dead_config, dead_listen).await;
    let mut stranded = Vec::new();
    for i in 0..5 {
        let mut client = Client::connect(dead_listen).await;
        client.hello().await;
        let subject = format!("stranded {i}");
        let reply = client
            .send_mail(
                "s@remote.test",
                &["bob@example.test"],
                format!("Subject: {subject}\r\n\r\nx\r\n").as_bytes(),
            )
            .await;
        assert_eq!(reply.codes(), "250 2.0.0");
        stranded.push(subject);
    }
    dead.kill9();
    let moved = dir_b.path().join("from-mx-c");
    std::fs::rename(dead_dir.path().join("queue"), &moved).unwrap();
    let imported = mailmoat(&config_b, &["queue", "import", moved.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&imported.stdout).to_string();
    assert!(imported.status.success(), "{imported:?}");
    assert!(said.contains("5 message(s) imported"), "{said}");
    let waited = mailmoat(&config_b, &["queue", "wait", "--timeout", "60s"]);
    assert!(waited.status.success(), "{waited:?}");
    let delivered = subjects(&returned);
    for subject in &stranded {
        assert!(delivered.contains(subject), "{subject} not delivered");
    }
    for state in ["active", "deferred", "hold"] {
        assert!(
            list_files(&moved.join(state)).is_empty(),
            "{state} not emptied"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_accepts_and_never_answers_holds_no_session() {
    capture_logs();
    // Connections are taken and kept, and nothing is ever said on them.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = silent.accept().await {
            keep.lock().unwrap().push(stream);
        }
    });
    let backend = Backend::start(DataEnd::Strict).await;
    let text = base_config(
        backend.addr,
        UNTRUSTED,
        &format!(
            "[shared]\nredis = \"redis://{addr}\"\ntimeout = \"300ms\"\nretry_interval = \"1h\"\n\n\
             [mailbomb]\nmessages_per_hour = 2\n\n[greylist]\nenabled = false\n"
        ),
    );
    let proxy = Proxy::start_with_text(&text).await;
    wait_for_logged("the silent Redis", |v| {
        v["redis"] == format!("redis://{addr}")
            && v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("shared state unreachable"))
    })
    .await;
    // The limit is counted on this instance meanwhile: 2, then 451.
    let mut codes = Vec::new();
    for i in 0..3 {
        let mut client = proxy.client().await;
        let reply = try_mail(
            &mut client,
            "silent@remote.test",
            "alice@example.test",
            format!("Subject: silent {i}\r\n\r\nx\r\n").as_bytes(),
        )
        .await;
        codes.push(reply.codes());
    }
    assert_eq!(codes, ["250 2.0.0", "250 2.0.0", "451 4.7.1"]);
    assert!(!held.lock().unwrap().is_empty(), "Redis was tried");
}
