//! Faults and floods: memory bounded by configuration whatever clients send, a
//! spool that fills up, clients that drip, a server told to stop mid-message.

use std::time::{Duration, Instant};

use crate::support::*;

const UNTRUSTED: &str = "trusted_networks = [\"127.0.0.9/32\"]";

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The base configuration with more keys in its `[limits]` table.
fn with_limits(text: String, keys: &str) -> String {
    assert!(text.contains("[limits]\n"));
    text.replacen("[limits]\n", &format!("[limits]\n{keys}"), 1)
}

/// One large message, sent whole; the reply's codes.
async fn send_large(addr: std::net::SocketAddr, n: usize, size: usize) -> String {
    let mut client = Client::connect(addr).await;
    client.hello().await;
    client.expect("MAIL FROM:<big@remote.test>", "250").await;
    client.expect("RCPT TO:<alice@example.test>", "250").await;
    client.expect("DATA", "354").await;
    let line = "y".repeat(998);
    let mut body = format!("Subject: large {n}\r\n\r\n");
    while body.len() < size {
        body.push_str(&line);
        body.push_str("\r\n");
    }
    client.send(body.as_bytes()).await;
    client.send(b".\r\n").await;
    client.reply().await.codes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_stays_within_data_memory_under_a_flood_of_large_messages() {
    let backend = Backend::start(DataEnd::Strict).await;
    let budget_mib = 32;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients.txt"), RECIPIENTS).unwrap();
    let port = unused_addr().await.port();
    let text = with_limits(
        base_config(backend.addr, UNTRUSTED, "")
            .replace("command_timeout = \"10s\"", "command_timeout = \"30s\"")
            .replace("data_timeout = \"10s\"", "data_timeout = \"30s\""),
        &format!("data_memory = \"{budget_mib}MB\"\nmessage_size_limit = 12000000\n"),
    )
    .replace(
        "listen = [\"127.0.0.1:0\"]",
        &format!("listen = [\"127.0.0.1:{port}\"]"),
    );
    let config = dir.path().join("mailmoat.toml");
    std::fs::write(&config, text).unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let daemon = crate::cli::Daemon::start(&config, addr).await;
    let pid = daemon.pid();
    let baseline = rss_kib(pid);

    // 40 sessions at once, each with a 9 MB message: 360 MB if held at once.
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
                // How often memory is sampled, not a wait for anything.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let sends: Vec<_> = (0..40)
        .map(|n| tokio::spawn(send_large(addr, n, 9 * 1024 * 1024)))
        .collect();
    let mut queued = 0;
    let mut refused = 0;
    for send in sends {
        match send.await.unwrap().as_str() {
            "250 2.0.0" => queued += 1,
            "451 4.3.1" => refused += 1,
            other => panic!("neither queued nor 451 4.3.1: {other}"),
        }
    }
    assert_eq!(queued + refused, 40);
    assert!(
        queued > 0 && refused > 0,
        "queued {queued}, refused {refused}"
    );
    backend.wait_for(queued).await;
    let wait = crate::cli::mailmoat(&config, &["queue", "wait", "--timeout", "60s"]);
    assert!(wait.status.success());
    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    let after = rss_kib(pid);
    eprintln!(
        "memory: baseline {baseline} KiB, peak {peak} KiB, after {after} KiB; {queued} queued, {refused} refused"
    );
    // The budget covers message data in sessions, in the queue and in delivery;
    // besides it: what judging derives from a message, the connection buffers of
    // 40 sessions, lettre's stuffing pieces and the runtime: 64 MiB stated.
    let overhead_mib = 64;
    assert!(
        peak < baseline + (budget_mib + overhead_mib) * 1024,
        "peak {peak} KiB over baseline {baseline} KiB + {budget_mib} MiB + {overhead_mib} MiB"
    );
    assert!(
        after < baseline + 16 * 1024,
        "after the burst {after} KiB, baseline {baseline} KiB"
    );
    daemon.terminate();
}

/// A server that takes connections and never says a word.
struct Mute {
    addr: std::net::SocketAddr,
    _task: tokio::task::JoinHandle<()>,
}

impl Mute {
    async fn start() -> Mute {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let mut buf = [0u8; 512];
                    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        Mute { addr, _task: task }
    }
}

/// Small messages queued faster than they are delivered: each kept copy counts
/// its own size against `data_memory`, not a whole step of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_messages_waiting_for_delivery_leave_data_memory_to_new_mail() {
    let mute = Mute::start().await;
    let text = with_limits(
        base_config(mute.addr, UNTRUSTED, ""),
        "data_memory = \"4MB\"\n",
    )
    .replace(
        "command_timeout = \"5s\"",
        "command_timeout = \"60s\"\ngreeting_timeout = \"60s\"",
    )
    .replace("delivery_workers = 4", "delivery_workers = 1");
    let proxy = Proxy::start_with_text(&text).await;
    // Eight clients at once: they need eight steps of the budget while the
    // queue keeps what they sent before.
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let addr = proxy.addr;
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                client.hello().await;
                let body = format!("{}\r\n", "x".repeat(900)).repeat(3);
                for n in 0..10 {
                    let reply = client
                        .send_mail(
                            "s@remote.test",
                            &["alice@example.test"],
                            format!("Subject: small {c}.{n}\r\n\r\n{body}").as_bytes(),
                        )
                        .await;
                    assert_eq!(
                        reply.codes(),
                        "250 2.0.0",
                        "message {c}.{n}: {}",
                        reply.text
                    );
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let _ = mute;
}

/// Sends `bytes` one at a time, a second apart, until the server closes; returns
/// the reply it closed with and how long the drip lasted.
async fn drip(client: &mut Client, bytes: &[u8]) -> (Reply, Duration) {
    let started = Instant::now();
    for &b in bytes {
        client.send(&[b]).await;
        if let Some(reply) = client.try_reply(Duration::from_secs(1)).await {
            return (reply, started.elapsed());
        }
    }
    panic!("the server waited out a drip of {} bytes", bytes.len());
}

#[tokio::test]
async fn a_client_dripping_a_command_is_closed_within_the_command_timeout() {
    let backend = Backend::start(DataEnd::Strict).await;
    let text = base_config(backend.addr, UNTRUSTED, "")
        .replace("command_timeout = \"10s\"", "command_timeout = \"3s\"");
    let proxy = Proxy::start_with_text(&text).await;
    let mut client = proxy.client().await;
    let (reply, took) = drip(&mut client, b"MAIL FROM:<slow@remote.test>\r\n").await;
    assert_eq!(reply.codes(), "421 4.4.2", "{reply:?}");
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    assert!(client.closed().await);
}

#[tokio::test]
async fn a_client_dripping_message_data_is_closed_within_the_data_timeout() {
    let backend = Backend::start(DataEnd::Strict).await;
    let text = base_config(backend.addr, UNTRUSTED, "")
        .replace("data_timeout = \"10s\"", "data_timeout = \"3s\"");
    let proxy = Proxy::start_with_text(&text).await;
    let mut client = proxy.client().await;
    client.expect("MAIL FROM:<slow@remote.test>", "250").await;
    client.expect("RCPT TO:<alice@example.test>", "250").await;
    client.expect("DATA", "354").await;
    client.send(b"Subject: slow\r\n\r\n").await;
    let (reply, took) = drip(&mut client, "a line that never ends in time".as_bytes()).await;
    assert_eq!(reply.codes(), "421 4.4.2", "{reply:?}");
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    proxy.wait_idle().await;
    assert!(backend.messages().is_empty());
}

#[tokio::test]
async fn a_session_ends_after_session_timeout_however_busy() {
    let backend = Backend::start(DataEnd::Strict).await;
    let text = base_config(backend.addr, UNTRUSTED, "").replace(
        "data_timeout = \"10s\"",
        "data_timeout = \"10s\"\nsession_timeout = \"2s\"\njunk_command_limit = 1000",
    );
    let proxy = Proxy::start_with_text(&text).await;
    let mut client = proxy.client().await;
    let started = Instant::now();
    loop {
        let reply = client.command("NOOP").await;
        if reply.code == 421 {
            assert_eq!(reply.codes(), "421 4.4.2");
            assert!(reply.text.contains("session lasted too long"), "{reply:?}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(6), "never ended");
        poll_pause().await;
    }
}

#[tokio::test]
async fn under_stress_every_idle_client_waits_only_the_stress_timeout() {
    let backend = Backend::start(DataEnd::Strict).await;
    let text = base_config(backend.addr, UNTRUSTED, "")
        .replace(
            "command_timeout = \"10s\"",
            "command_timeout = \"30s\"\nstress_threshold = 0.5\nstress_timeout = \"1s\"",
        )
        .replace(
            "shutdown_grace = \"2s\"",
            "shutdown_grace = \"2s\"\nmax_connections = 4\nmax_connections_per_ip = 4",
        );
    let proxy = Proxy::start_with_text(&text).await;
    // One connection: no stress, the client may think for a while.
    let mut calm = proxy.client().await;
    assert!(calm.try_reply(Duration::from_millis(1500)).await.is_none());
    // Three of four in use: over half, the server waits only a second — for
    // the newcomers, and for the calm client whose wait began before the stress.
    let second = proxy.client().await;
    let mut third = proxy.client().await;
    let started = Instant::now();
    for (name, client) in [("third", &mut third), ("calm", &mut calm)] {
        let reply = client
            .try_reply(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("{name}: not closed"));
        assert_eq!(reply.codes(), "421 4.4.2", "{name}: {reply:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{name}: closed after {:?}",
            started.elapsed()
        );
    }
    drop(second);
}

#[tokio::test]
async fn one_network_cannot_take_every_connection() {
    let backend = Backend::start(DataEnd::Strict).await;
    let text = base_config(backend.addr, UNTRUSTED, "").replace(
        "shutdown_grace = \"2s\"",
        "shutdown_grace = \"2s\"\nmax_connections = 10\nmax_connections_per_ip = 10",
    );
    let proxy = Proxy::start_with_text(&text).await;
    let mut held = Vec::new();
    for n in 0..9 {
        let ip = format!("127.0.0.{}", n + 1).parse().unwrap();
        let mut client = Client::connect_from(ip, proxy.addr).await;
        assert_eq!(client.reply().await.code, 220, "connection {n}");
        held.push(client);
    }
    // The tenth from the same /24 is refused; one from another network is not.
    let mut same = Client::connect_from("127.0.0.20".parse().unwrap(), proxy.addr).await;
    let refused = same.reply().await;
    assert_eq!(refused.codes(), "421 4.7.0", "{refused:?}");
    assert!(refused.text.contains("127.0.0.0/24"), "{refused:?}");
    let mut other = Client::connect_from("127.0.1.1".parse().unwrap(), proxy.addr).await;
    assert_eq!(other.reply().await.code, 220);
}

#[tokio::test]
async fn clients_mid_message_hear_421_when_the_grace_period_runs_out() {
    let backend = Backend::start(DataEnd::Strict).await;
    let text = base_config(backend.addr, UNTRUSTED, "")
        .replace("shutdown_grace = \"2s\"", "shutdown_grace = \"1s\"");
    let mut proxy = Proxy::start_with_text(&text).await;
    let mut client = proxy.client().await;
    client.expect("MAIL FROM:<s@remote.test>", "250").await;
    client.expect("RCPT TO:<alice@example.test>", "250").await;
    client.expect("DATA", "354").await;
    client
        .send(b"Subject: half a message\r\n\r\nfirst line\r\n")
        .await;
    let stopping = tokio::spawn(async move {
        proxy.stop().await;
        proxy
    });
    let reply = client
        .try_reply(Duration::from_secs(10))
        .await
        .expect("a reply");
    assert_eq!(reply.codes(), "421 4.3.2", "{reply:?}");
    assert!(client.closed().await);
    let proxy = stopping.await.unwrap();
    assert!(proxy.queue_files("active").is_empty(), "nothing was queued");
    assert!(backend.messages().is_empty());
}

/// A small file system of the test's own (tmpfs); None where mounting is not
/// allowed (then the test says so and checks nothing).
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap().keep();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .is_ok_and(|o| o.status.success());
        if mounted {
            Some(SmallDisk { path: dir })
        } else {
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root and mount rights)");
            None
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .output();
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_refuses_new_mail_at_mail_from_and_loses_nothing() {
    let Some(disk) = SmallDisk::mount("4m") else {
        return;
    };
    let backend = Backend::start(DataEnd::Strict).await;
    let nobody = unused_addr().await;
    // The backend is down: accepted mail stays in the spool and fills it.
    let text = base_config(nobody, UNTRUSTED, "")
        .replace(
            "path = \"queue\"",
            &format!(
                "path = \"{}\"\nmin_free_space = \"1MB\"",
                disk.path.join("queue").display()
            ),
        )
        .replace(
            "data_timeout = \"10s\"",
            "data_timeout = \"10s\"\nmessage_size_limit = 600000",
        );
    let proxy = Proxy::start_with_text(&text).await;
    let mut accepted = Vec::new();
    let mut full = false;
    for n in 0..20 {
        let line = format!("{}\r\n", "z".repeat(998));
        let body = format!("Subject: fill {n}\r\n\r\n{}", line.repeat(300));
        let mut client = proxy.client().await;
        // Declared as MTAs declare it: the spool's room for it is known at MAIL.
        let mail = client
            .command(&format!("MAIL FROM:<s@remote.test> SIZE={}", body.len()))
            .await;
        if mail.code == 452 {
            assert_eq!(mail.codes(), "452 4.3.1", "{mail:?}");
            assert!(
                mail.text.contains("Insufficient system storage"),
                "{mail:?}"
            );
            full = true;
            break;
        }
        assert_eq!(mail.codes(), "250 2.1.0");
        client.expect("RCPT TO:<alice@example.test>", "250").await;
        client.expect("DATA", "354").await;
        client.send(stuff(body.as_bytes()).as_slice()).await;
        client.send(b".\r\n").await;
        let reply = client.reply().await;
        assert_eq!(reply.code, 250, "{reply:?}");
        accepted.push(body);
    }
    assert!(full, "MAIL was never refused; {} accepted", accepted.len());
    assert!(!accepted.is_empty());
    // Nothing acknowledged is lost: the backend comes up and gets every message
    // whole at the next retry; nothing stray is left in the spool.
    let backend_up = Backend::start_on(nobody, DataEnd::Strict).await;
    let received = backend_up.wait_for(accepted.len()).await;
    proxy.wait_idle().await;
    for body in &accepted {
        assert!(
            received
                .iter()
                .any(|m| strip_received(&m.data).1 == body.as_bytes()),
            "a message arrived changed or not at all"
        );
    }
    eventually("spool empty", || {
        ["active", "deferred", "incoming"]
            .iter()
            .all(|s| list_files(&disk.path.join("queue").join(s)).is_empty())
    })
    .await;
    assert_eq!(received.len(), accepted.len(), "delivered once each");
    drop(backend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_queue_flush_every_message_for_a_returning_hop_goes_with_the_first_connection() {
    let addr = unused_addr().await;
    // Neither the retry schedule nor the background probe would move the mail
    // within the test: only the administrator's flush does.
    let text = base_config(addr, UNTRUSTED, "")
        .replace("[backend]\n", "[backend]\nprobe_interval = \"1h\"\n")
        .replace("delivery_workers = 4", "delivery_workers = 8")
        .replace("min_backoff = \"1s\"", "min_backoff = \"1h\"")
        .replace("max_backoff = \"2s\"", "max_backoff = \"2h\"");
    let proxy = Proxy::start_with_text(&text).await;
    let mut client = proxy.client().await;
    for n in 0..6 {
        let reply = client
            .send_mail(
                "s@remote.test",
                &["alice@example.test"],
                format!("Subject: waits {n}\r\n\r\nx\r\n").as_bytes(),
            )
            .await;
        assert_eq!(reply.codes(), "250 2.0.0");
    }
    eventually("all six deferred", || {
        proxy.queue_files("deferred").len() == 12
    })
    .await;
    let backend = Backend::start_on(addr, DataEnd::Strict).await;
    let flush = std::process::Command::new(env!("CARGO_BIN_EXE_mailmoat"))
        .arg("--config")
        .arg(proxy.config_path())
        .args(["queue", "flush"])
        .output()
        .unwrap();
    assert!(flush.status.success(), "{flush:?}");
    // One delivery probes the hop; the five others wait for its answer instead
    // of being deferred for another hour.
    let received = backend.wait_for(6).await;
    assert_eq!(received.len(), 6);
    proxy.wait_idle().await;
    assert!(proxy.queue_files("deferred").is_empty());
}

/// Sends `lines` whole lines of message data, each `pause` after the last,
/// then the end; returns the reply and when it came, counted from DATA. A
/// reply before the end (the server closing) ends it early.
async fn paced_data(
    client: &mut Client,
    line: &str,
    lines: usize,
    pause: Duration,
) -> (Reply, Duration) {
    client.expect("MAIL FROM:<slow@remote.test>", "250").await;
    client.expect("RCPT TO:<alice@example.test>", "250").await;
    client.expect("DATA", "354").await;
    let started = Instant::now();
    client.send(b"Subject: paced\r\n\r\n").await;
    for _ in 0..lines {
        client.send(format!("{line}\r\n").as_bytes()).await;
        if let Some(reply) = client.try_reply(pause).await {
            return (reply, started.elapsed());
        }
    }
    client.send(b".\r\n").await;
    (client.reply().await, started.elapsed())
}

/// `[limits] data_timeout` is per line: what keeps a client sending a whole
/// line every few seconds from holding the session for an hour is the minimum
/// data rate (500 bytes a second after the first data_timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_line_every_four_seconds_is_closed_at_the_minimum_data_rate() {
    let backend = Backend::start(DataEnd::Strict).await;
    let text = base_config(backend.addr, UNTRUSTED, "").replace(
        "data_timeout = \"10s\"",
        "data_timeout = \"6s\"\nmin_data_rate = 500",
    );
    let proxy = Proxy::start_with_text(&text).await;
    let mut client = proxy.client().await;
    let line = "a line of text, as any message has, sent whole and then nothing for a while";
    let (reply, took) = paced_data(&mut client, line, 10, Duration::from_secs(4)).await;
    assert_eq!(reply.codes(), "421 4.4.2", "{reply:?}");
    assert!(reply.text.contains("too slowly"), "{reply:?}");
    // Past the first data_timeout (the allowance) plus what its few lines bought.
    assert!(
        took > Duration::from_secs(6) && took < Duration::from_secs(8),
        "closed after {took:?}"
    );
    assert!(client.closed().await);
    proxy.wait_idle().await;
    assert!(backend.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_a_kilobyte_a_second_is_not_closed() {
    let backend = Backend::start(DataEnd::Strict).await;
    let text = base_config(backend.addr, UNTRUSTED, "").replace(
        "data_timeout = \"10s\"",
        "data_timeout = \"3s\"\nmin_data_rate = 500",
    );
    let proxy = Proxy::start_with_text(&text).await;
    let mut client = proxy.client().await;
    // 998 characters and CRLF a second, for well past the allowance.
    let line = "k".repeat(998);
    let (reply, took) = paced_data(&mut client, &line, 9, Duration::from_secs(1)).await;
    assert_eq!(reply.codes(), "250 2.0.0", "{reply:?}");
    assert!(took >= Duration::from_secs(9));
    backend.wait_for(1).await;
}

/// Free space on a file system, in bytes.
fn available(path: &std::path::Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df gives the free space")
}

/// Four clients at once, each with a 6 MiB message (declaring its size or
/// not), on a spool with 20 MiB free above `min_free_space`. Returns each
/// client's refusal (None when accepted) and what the spool kept.
async fn four_large_messages_at_once(declare: bool) -> Option<(Vec<Option<Reply>>, usize)> {
    let disk = SmallDisk::mount("40m")?;
    let queue = disk.path.join("queue");
    std::fs::create_dir_all(&queue).unwrap();
    let minimum = available(&disk.path) - 20 * 1024 * 1024;
    // The backend is down: what is accepted stays in the spool.
    let nobody = unused_addr().await;
    let text = base_config(nobody, UNTRUSTED, "").replace(
        "path = \"queue\"",
        &format!("path = \"{}\"\nmin_free_space = {minimum}", queue.display()),
    );
    let proxy = Proxy::start_with_text(&text).await;
    let line = format!("{}\r\n", "z".repeat(998));
    let body = format!(
        "Subject: large\r\n\r\n{}",
        line.repeat(6 * 1024 * 1024 / 1000)
    );
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let addr = proxy.addr;
            let body = body.clone();
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                client.hello().await;
                let size = if declare {
                    format!(" SIZE={}", body.len())
                } else {
                    String::new()
                };
                let mail = client
                    .command(&format!("MAIL FROM:<big@remote.test>{size}"))
                    .await;
                if mail.code != 250 {
                    return Some(("MAIL", mail));
                }
                client.expect("RCPT TO:<alice@example.test>", "250").await;
                let data = client.command("DATA").await;
                if data.code != 354 {
                    return Some(("DATA", data));
                }
                client.send(&stuff(body.as_bytes())).await;
                client.send(b".\r\n").await;
                let end = client.reply().await;
                (end.code != 250).then_some(("end of data", end))
            })
        })
        .collect();
    let mut refusals = Vec::new();
    for client in clients {
        let refused = client.await.unwrap();
        if let Some((at, reply)) = &refused {
            assert_eq!(reply.codes(), "452 4.3.1", "at {at}: {reply:?}");
            if declare {
                assert_eq!(*at, "MAIL", "refused before the data: {reply:?}");
            }
        }
        refusals.push(refused.map(|(_, reply)| reply));
    }
    proxy.wait_idle().await;
    let kept = ["active", "deferred"]
        .iter()
        .map(|state| list_files(&queue.join(state)).len())
        .sum();
    assert!(
        available(&disk.path) >= minimum,
        "the spool went below min_free_space"
    );
    drop(proxy);
    Some((refusals, kept))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_large_messages_that_declare_their_size_are_refused_at_mail_when_they_would_not_fit()
 {
    let Some((refusals, kept)) = four_large_messages_at_once(true).await else {
        return;
    };
    let accepted = refusals.iter().filter(|r| r.is_none()).count();
    assert_eq!(accepted, 3, "three of 6 MiB fit in 20: {refusals:?}");
    assert_eq!(
        kept,
        2 * accepted,
        "message and envelope of each accepted one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_large_messages_of_unknown_size_are_refused_with_452_never_a_failed_write() {
    let Some((refusals, kept)) = four_large_messages_at_once(false).await else {
        return;
    };
    let accepted = refusals.iter().filter(|r| r.is_none()).count();
    assert!(
        (2..=3).contains(&accepted),
        "as many as fit, and not four: {refusals:?}"
    );
    assert_eq!(kept, 2 * accepted);
}
